//! The HTTP/1.1 listener, plain and TLS: a cap on open connections, a header-read timeout, an
//! idle timeout, and a graceful drain at shutdown.
//!
//! - **Connection cap** (`MAX_CONNECTIONS`): a connection beyond it is refused at once (plain
//!   HTTP: `503` with `Connection: close`; TLS: closed), so the sockets the orchestrator holds
//!   stay bounded and `/_public/status` keeps answering. The cap is lowered below the process's
//!   open-file limit when that is smaller.
//! - **Header-read timeout** (`HTTP_HEADER_READ_TIMEOUT_SECONDS`): a request head must arrive
//!   completely within this time, counted from the connection's start (after the TLS handshake)
//!   or from the first byte of a later request on a kept-alive connection (slowloris).
//! - **Idle timeout** (`HTTP_IDLE_TIMEOUT_SECONDS`): a kept-alive connection on which no request
//!   runs and no byte moves for this long is closed. A request being served (a worker's long
//!   poll, a streaming answer) is never cut by either timeout.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::ClientCertCn;

/// Refusals (a `503` written, then the socket closed) in progress at once; beyond, a refused
/// connection is closed without an answer.
const MAX_REFUSING: usize = 64;

/// Connections the kernel keeps waiting for `accept` (capped by `net.core.somaxconn`). Tokio's
/// and std's `bind` ask for 128: a burst beyond that (a client's pool opening at once, every
/// worker reconnecting after a restart) has its SYNs dropped, and each connection so dropped
/// waits for the SYN's retransmission, 1 s and then 3 s.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A TCP listener on `addr` as [`Orchestrator::serve`](super::Orchestrator::serve) makes it:
/// `SO_REUSEADDR` (as `TcpListener::bind`) and a backlog of [`LISTEN_BACKLOG`] instead of 128.
/// Bind the listener given to [`Orchestrator::listen`](super::Orchestrator::listen) with it.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The connection limits of a listener (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// How long a graceful shutdown waits for open connections (`SHUTDOWN_GRACE_SECONDS`);
    /// then the rest are closed, so no connection can keep the server up.
    pub drain_timeout: Duration,
}

impl Limits {
    /// The limits of `cfg`, the cap lowered below the open-file limit of the process.
    pub(super) fn from_config(cfg: &super::Config) -> Limits {
        let mut max_connections = cfg.max_connections;
        if let Some(files) = open_files_limit() {
            // Room for the listener, Redis and database connections, files, refusals.
            let room = files.saturating_sub((files / 8).max(64)).max(1) as usize;
            if room < max_connections {
                tracing::warn!(
                    max_connections,
                    open_files_limit = files,
                    lowered_to = room,
                    "MAX_CONNECTIONS is above what the open-file limit allows; lowering it"
                );
                max_connections = room;
            }
        }
        Limits {
            max_connections,
            header_read_timeout: cfg.http_header_read_timeout,
            idle_timeout: cfg.http_idle_timeout,
            drain_timeout: cfg.shutdown_grace,
        }
    }
}

/// The soft limit of open files of this process (Linux: `/proc/self/limits`).
fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// What turns an accepted TCP connection into the stream HTTP is served on: nothing (plain) or
/// a TLS handshake (which also yields the client certificate's CN).
pub(crate) trait Handshake: Clone + Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Plain HTTP: a refused connection gets a `503` answer.
    const PLAIN: bool;
    fn handshake(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> impl Future<Output = Option<(Self::Io, ClientCertCn)>> + Send;
}

/// Plain HTTP.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plain;

impl Handshake for Plain {
    type Io = TcpStream;
    const PLAIN: bool = true;
    async fn handshake(&self, tcp: TcpStream, _peer: SocketAddr) -> Option<(TcpStream, ClientCertCn)> {
        Some((tcp, ClientCertCn(None)))
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open connections finish
/// their requests for at most `limits.drain_timeout` (`SHUTDOWN_GRACE_SECONDS`).
pub(crate) async fn serve<H: Handshake>(
    listener: TcpListener,
    app: Router,
    handshake: H,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let service = TowerToHyperService::new(app);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Answers leave at once: without TCP_NODELAY a small write made while an earlier one
        // is unacknowledged (an event stream's next event, the rest of a streamed body) waits for
        // the peer's delayed ACK, up to 40 ms on Linux.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, max = limits.max_connections, "connection refused: MAX_CONNECTIONS reached");
            if let (true, Ok(slot)) = (H::PLAIN, refusing.clone().try_acquire_owned()) {
                tokio::spawn(refuse(tcp, slot));
            }
            continue;
        };
        let (handshake, service, stop) = (handshake.clone(), service.clone(), stop_rx.clone());
        connections.spawn(async move {
            let Some((io, cn)) = handshake.handshake(tcp, peer).await else { return };
            serve_connection(io, peer, cn, service, permit, limits, stop).await;
        });
        // Forget the connections that are done.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stop_tx.send(true);
    if tokio::time::timeout(limits.drain_timeout, async { while connections.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!(open = connections.len(), "connections still open after the drain timeout; closing them");
    }
    Ok(())
}

/// Answers a connection over the cap with `503` and closes it.
async fn refuse(mut tcp: TcpStream, _slot: OwnedSemaphorePermit) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const BODY: &str = r#"{"error":"Service Unavailable: too many open connections (MAX_CONNECTIONS)"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\nretry-after: 1\r\n\r\n{BODY}",
        BODY.len()
    );
    let mut sink = [0u8; 4096];
    // The request first (up to 1 s): an HTTP client takes an answer sent before its request for garbage.
    let _ = tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut sink)).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        tcp.write_all(answer.as_bytes()).await?;
        tcp.shutdown().await?;
        // Read what the client sent so closing does not reset the connection before it reads the answer.
        while tcp.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

async fn serve_connection<Io>(
    io: Io,
    peer: SocketAddr,
    cn: ClientCertCn,
    service: TowerToHyperService<Router>,
    permit: OwnedSemaphorePermit,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = Tracked { inner: io, activity: activity.clone(), _permit: permit };
    let on_request = activity.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(cn.clone());
        let running = on_request.request_started();
        let answer = hyper::service::Service::call(&service, req);
        async move {
            let answer = answer.await;
            drop(running);
            answer
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    loop {
        let deadline = activity.deadline(&limits);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = stop.wait_for(|s| *s) => break,
            _ = activity.changed.notified() => {}
            _ = tokio::time::sleep_until(deadline) => {
                if activity.deadline(&limits) <= Instant::now() {
                    tracing::debug!(%peer, "connection closed: header-read or idle timeout");
                    return; // dropping the connection closes it
                }
            }
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// What a connection is doing, for its timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request head since this instant.
    Head(Instant),
    /// No request runs; waiting for the first byte of the next one.
    Idle,
    /// This many requests are being served.
    Serving(usize),
}

/// The activity of one connection: its phase and when bytes last moved.
struct Activity {
    phase: Mutex<Phase>,
    /// Milliseconds since `origin` of the last byte read or written.
    last_io_ms: AtomicU64,
    origin: Instant,
    /// Wakes the connection's watchdog when the phase changed.
    changed: Notify,
    requests: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        let origin = Instant::now();
        Activity {
            phase: Mutex::new(Phase::Head(origin)),
            last_io_ms: AtomicU64::new(0),
            origin,
            changed: Notify::new(),
            requests: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn touch(&self) {
        self.last_io_ms.store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn on_read(&self) {
        self.touch();
        let mut phase = self.lock();
        if *phase == Phase::Idle {
            *phase = Phase::Head(Instant::now());
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// A request head was read: no timeout applies until it has been answered.
    fn request_started(self: &Arc<Self>) -> Running {
        self.requests.fetch_add(1, Ordering::Relaxed);
        *self.lock() = Phase::Serving(self.requests.load(Ordering::Relaxed));
        self.changed.notify_one();
        Running(self.clone())
    }

    /// When the connection times out if nothing changes.
    fn deadline(&self, limits: &Limits) -> Instant {
        match *self.lock() {
            Phase::Head(since) => since + limits.header_read_timeout,
            Phase::Idle => {
                self.origin + Duration::from_millis(self.last_io_ms.load(Ordering::Relaxed)) + limits.idle_timeout
            }
            // Checked again when the request ends.
            Phase::Serving(_) => Instant::now() + limits.idle_timeout.max(Duration::from_secs(1)) * 60,
        }
    }
}

/// A request being served; the connection goes idle when the last one ends.
struct Running(Arc<Activity>);

impl Drop for Running {
    fn drop(&mut self) {
        let a = &self.0;
        let left = a.requests.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        a.touch();
        *a.lock() = if left == 0 { Phase::Idle } else { Phase::Serving(left) };
        a.changed.notify_one();
    }
}

/// The connection's stream, recording when bytes move, and holding its slot of the cap (so an
/// upgraded connection, a WebSocket, keeps its slot until it closes).
struct Tracked<Io> {
    inner: Io,
    activity: Arc<Activity>,
    _permit: OwnedSemaphorePermit,
}

impl<Io: AsyncRead + Unpin> AsyncRead for Tracked<Io> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_read();
        }
        res
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Tracked<Io> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain, after reporting the options of each accepted connection as `serve` hands it over.
    #[derive(Clone)]
    struct Observed(tokio::sync::mpsc::UnboundedSender<bool>);

    impl Handshake for Observed {
        type Io = TcpStream;
        const PLAIN: bool = true;
        async fn handshake(&self, tcp: TcpStream, _peer: SocketAddr) -> Option<(TcpStream, ClientCertCn)> {
            let _ = self.0.send(tcp.nodelay().unwrap_or(false));
            Some((tcp, ClientCertCn(None)))
        }
    }

    /// A burst of connections beyond the 128 that `TcpListener::bind` asks the kernel to keep:
    /// none is dropped (a dropped SYN comes back after a second), whether or not anything
    /// accepts meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_connections_is_queued_not_dropped() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let connects: Vec<_> = (0..600)
            .map(|_| {
                tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await;
                    (started.elapsed(), tcp)
                })
            })
            .collect();
        let mut slowest = Duration::ZERO;
        let mut open = Vec::new();
        for c in connects {
            let (took, tcp) = c.await.unwrap();
            open.push(tcp.expect("connected within 5 s").unwrap());
            slowest = slowest.max(took);
        }
        assert!(slowest < Duration::from_secs(1), "a connection waited {slowest:?}: its SYN was dropped");
        drop(listener);
    }

    #[tokio::test]
    async fn accepted_connections_have_tcp_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let limits = Limits {
            max_connections: 8,
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(1),
        };
        let server = tokio::spawn(serve(listener, Router::new(), Observed(tx), limits, async {
            let _ = stop_rx.await;
        }));
        let client = TcpStream::connect(addr).await.unwrap();
        let nodelay = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("accepted").unwrap();
        assert!(nodelay, "the accepted connection has TCP_NODELAY");
        let _ = stop_tx.send(());
        drop(client);
        server.await.unwrap().unwrap();
    }
}
