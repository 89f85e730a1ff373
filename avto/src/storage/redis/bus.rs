//! The bus between instances: Redis pub/sub on `{p}bus`, and the key `{p}ui:watching` that says
//! a dashboard stream is open on some instance (see [`crate::storage::Bus::set_watching`]).
//!
//! Publishing uses the data connection. Each instance subscribes on a dedicated RESP3
//! connection whose manager resubscribes after a reconnect; a `PING` every second notices a
//! dead connection even when nothing is published.
//!
//! A queued task's wake-up goes to the bus only while another instance listens ([`Peers`]): the
//! instance that queues it wakes its own long-polls directly, so alone on the bus its wake-ups
//! came back to it for nothing (a `PUBLISH`, a delivery and a read per task).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::ConnectionManagerConfig;
use redis::{Msg, ProtocolVersion, PushKind};

use super::{to_json, RedisConn};
use crate::storage::{Bus, BusMessage, StorageError};

/// Publishes [`BusMessage`]s to every instance on the same Redis prefix.
#[derive(Debug, Clone)]
pub struct RedisBus {
    conn: RedisConn,
}

impl RedisBus {
    pub fn new(conn: RedisConn) -> Self {
        RedisBus { conn }
    }
}

impl Bus for RedisBus {
    fn publish(&self, msg: BusMessage) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            self.conn.query::<i64>(redis::cmd("PUBLISH").arg(self.conn.key("bus")).arg(to_json(&msg))).await?;
            Ok(())
        })
    }

    fn set_watching(&self, ttl: Duration) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            let ms = (ttl.as_millis() as u64).max(1);
            let cmd = redis::cmd("SET").arg(self.conn.key("ui:watching")).arg(1).arg("PX").arg(ms).to_owned();
            self.conn.query::<()>(&cmd).await
        })
    }

    fn watched(&self) -> BoxFuture<'_, Result<bool, StorageError>> {
        Box::pin(async move {
            Ok(self.conn.query::<i64>(redis::cmd("EXISTS").arg(self.conn.key("ui:watching"))).await? > 0)
        })
    }
}

/// Whether another instance may listen on this instance's bus, for the wake-ups of queued tasks
/// ([`super::RedisConn::wake_message`]). Read every second by the subscriber from
/// `PUBSUB NUMSUB` (more than this instance's own subscription: yes), and set at once by a
/// hello ([`BusMessage::Wake`] of the empty worker id, a no-op wake-up for any instance) that
/// an instance publishes whenever it (re)subscribes, so a new instance is woken from the
/// first task the others queue after it came; a hello (its own included) makes the subscriber
/// count again at once. Yes until the first reading, always without a
/// subscriber here, and while this instance's own subscription may be down (a reading would
/// not count it: no reading is taken from a connection loss until its hello is out). A reading
/// taken before a hello arrived does not undo it (`hellos`). What a wake-up missed in between
/// (a reading late by up to a second) is what a bus reconnect can miss too: a long-poll with a
/// bus looks at its queue again every second.
#[derive(Debug)]
pub(super) struct Peers {
    any: AtomicBool,
    hellos: AtomicU64,
}

impl Default for Peers {
    fn default() -> Self {
        Peers { any: AtomicBool::new(true), hellos: AtomicU64::new(0) }
    }
}

impl Peers {
    pub(super) fn any(&self) -> bool {
        self.any.load(Ordering::Relaxed)
    }

    /// Another instance (re)subscribed, or this one may have lost its subscription: yes, and
    /// a reading on its way is void.
    fn hello(&self) {
        self.hellos.fetch_add(1, Ordering::SeqCst);
        self.any.store(true, Ordering::Relaxed);
    }

    /// A `PUBSUB NUMSUB` reading of `subscribers`, taken after `hellos` had been counted.
    fn read(&self, subscribers: i64, hellos: u64) {
        if subscribers > 1 {
            self.any.store(true, Ordering::Relaxed);
        } else if self.hellos.load(Ordering::SeqCst) == hellos {
            self.any.store(false, Ordering::Relaxed);
        }
    }
}

/// Whether `msg` is a hello (see [`Peers`]).
fn is_hello(msg: &BusMessage) -> bool {
    matches!(msg, BusMessage::Wake(w) if w.is_empty())
}

/// Publishes a hello (see [`Peers`]) in the background.
fn say_hello(conn: &RedisConn) {
    let conn = conn.clone();
    tokio::spawn(async move {
        if let Err(e) = RedisBus::new(conn).publish(BusMessage::Wake(String::new())).await {
            tracing::debug!(error = %e, "could not announce this instance on the bus");
        }
    });
}

/// Subscribes to `{p}bus` and hands every message to `on_message` until the task is aborted.
pub(super) async fn subscribe(
    conn: &RedisConn,
    on_message: impl Fn(BusMessage) + Send + Sync + 'static,
) -> Result<tokio::task::JoinHandle<()>, StorageError> {
    let info = conn.inner.client.get_connection_info().clone();
    let resp3 = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
    let client = redis::Client::open(info.set_redis_settings(resp3))
        .map_err(|e| StorageError::Unavailable(format!("Redis bus: {e}")))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(1))
        .set_push_sender(tx)
        .set_automatic_resubscription();
    let mut manager = redis::aio::ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| StorageError::Unavailable(format!("Redis bus at {}: {e}", conn.inner.shown)))?;
    let channel = conn.key("bus");
    manager
        .subscribe(&channel)
        .await
        .map_err(|e| StorageError::Unavailable(format!("Redis bus: cannot subscribe: {e}")))?;
    let bus_conn = BusConn(manager.clone());
    *conn.bus_conn().lock() = Some(bus_conn);
    conn.sent();
    say_hello(conn);
    let conn = conn.clone();
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // After a connection loss: the others may have missed wake-ups meanwhile, and this
        // instance says hello again once the manager has resubscribed.
        let mut reconnecting = false;
        let peers = &conn.inner.peers;
        loop {
            tokio::select! {
                push = rx.recv() => {
                    let Some(push) = push else { return };
                    if push.kind == PushKind::Disconnection {
                        tracing::warn!("Redis bus connection lost; reconnecting");
                        reconnecting = true;
                        peers.hello();
                        continue;
                    }
                    let Some(msg) = Msg::from_push_info(push) else { continue };
                    let Ok(payload) = msg.get_payload::<String>() else { continue };
                    match serde_json::from_str::<BusMessage>(&payload) {
                        Ok(m) if is_hello(&m) => {
                            peers.hello();
                            // Counted again at once, not a second later: this instance's own
                            // hello comes back here too, and until the next reading every task
                            // queued would publish its wake-up for nobody.
                            tick.reset_immediately();
                        }
                        Ok(m) => on_message(m),
                        Err(e) => tracing::warn!(error = %e, "ignoring a malformed bus message"),
                    }
                }
                _ = tick.tick() => {
                    // Keeps the manager reconnecting (and resubscribing) after a connection loss.
                    let mut m = manager.clone();
                    conn.sent();
                    // Answered on the subscriber's own connection: its (re)subscription is done.
                    let alive = redis::cmd("PING").query_async::<redis::Value>(&mut m).await.is_ok();
                    if !alive {
                        peers.hello();
                        continue;
                    }
                    if reconnecting {
                        reconnecting = false;
                        say_hello(&conn);
                        continue;
                    }
                    let hellos = peers.hellos.load(Ordering::SeqCst);
                    let numsub = redis::cmd("PUBSUB").arg("NUMSUB").arg(conn.key("bus")).clone();
                    match conn.query::<(String, i64)>(&numsub).await {
                        Ok((_, n)) => peers.read(n, hellos),
                        Err(e) => {
                            peers.hello();
                            tracing::debug!(error = %e, "could not count the bus's subscribers");
                        }
                    }
                }
            }
        }
    }))
}

/// The bus subscriber's connection (for `CLIENT ID` in connection-loss tests).
#[derive(Clone)]
pub(super) struct BusConn(pub(super) redis::aio::ConnectionManager);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_taken_before_a_hello_does_not_undo_it() {
        let p = Peers::default();
        assert!(p.any(), "until the first reading, others may listen");
        p.read(1, p.hellos.load(Ordering::SeqCst));
        assert!(!p.any(), "alone on the bus");
        let before = p.hellos.load(Ordering::SeqCst);
        p.hello(); // a new instance, while a reading of 1 subscriber was on its way
        p.read(1, before);
        assert!(p.any(), "the late reading must not hide the newcomer");
        p.read(1, p.hellos.load(Ordering::SeqCst));
        assert!(!p.any(), "a reading after the hello counts");
        p.read(2, p.hellos.load(Ordering::SeqCst));
        assert!(p.any());
        assert!(is_hello(&BusMessage::Wake(String::new())) && !is_hello(&BusMessage::Wake("w".into())));
    }

    /// Needs the Redis of the tests (`REDIS_URL`, default 127.0.0.1:6379), like every Redis test.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wake_ups_are_published_only_while_another_instance_listens() {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
        let prefix = format!("avto-test:peers:{}:", uuid::Uuid::new_v4().simple());
        let a = RedisConn::open(&url, &prefix).unwrap();
        let woken = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = woken.clone();
        let sub_a = subscribe(&a, move |m| seen.lock().unwrap().push(m)).await.unwrap();
        let wait_for_within = |want: bool, within: Duration| {
            let a = a.clone();
            async move {
                let deadline = tokio::time::Instant::now() + within;
                while a.wake_message("w1").is_empty() == want {
                    assert!(tokio::time::Instant::now() < deadline, "peers did not become {want} within {within:?}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        let wait_for = |want: bool| wait_for_within(want, Duration::from_secs(10));
        // Alone: nothing to publish once its own hello came back, well before the next tick of
        // the readings (a second), which is what a run of a few seconds would otherwise pay.
        wait_for_within(false, Duration::from_millis(900)).await;
        // Every hello (here, as an instance that subscribed and left at once would send) makes
        // A count again at once: alone, it is back to publishing nothing long before the next
        // tick (five times, so a tick that happened to come soon cannot pass this).
        for _ in 0..5 {
            RedisBus::new(a.clone()).publish(BusMessage::Wake(String::new())).await.unwrap();
            wait_for_within(false, Duration::from_millis(400)).await;
        }
        // A second instance subscribes: its hello (or the next reading) makes A publish again.
        let b = RedisConn::open(&url, &prefix).unwrap();
        let from_b = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen_b = from_b.clone();
        let sub_b = subscribe(&b, move |m| seen_b.lock().unwrap().push(m)).await.unwrap();
        wait_for(true).await;
        assert_eq!(a.wake_message("w1"), to_json(&BusMessage::Wake("w1".into())));
        // The hellos are the bus's own: neither instance's handler saw one.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(woken.lock().unwrap().iter().chain(from_b.lock().unwrap().iter()).all(|m| !is_hello(m)));
        // B goes away: A is alone again.
        sub_b.abort();
        let _ = sub_b.await;
        drop(b);
        wait_for(false).await;
        sub_a.abort();
    }
}
