//! Supervision of the background tasks (watcher, scheduler, history writer; each webhook is a
//! task of its own, whose panic ends that webhook only).
//!
//! Each runs as a child task of a supervisor. A child that panics is started again after a
//! backoff (1 s, doubling up to 60 s); after `BACKGROUND_TASK_MAX_RESTARTS` panics in a row (a
//! run of [`CALM_PERIOD`] without one starts the count again) it stays down, and
//! `GET /_public/status` answers 503 naming it, so a load balancer or an operator sees that this
//! instance no longer does all of its work. Aborting the supervisor aborts its child.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

/// A run this long without a panic starts the count of panics in a row again.
pub const CALM_PERIOD: Duration = Duration::from_secs(300);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What is known about one background task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TaskHealth {
    /// Times it panicked and was started again.
    pub restarts: u64,
    /// It panicked too often in a row and stays down.
    pub failed: bool,
    /// The message of its last panic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_panic: Option<String>,
}

/// The health of the background tasks of one orchestrator.
#[derive(Debug)]
pub struct Health {
    tasks: Mutex<BTreeMap<&'static str, TaskHealth>>,
    max_restarts: u32,
}

impl Health {
    /// A registry whose tasks are restarted at most `max_restarts` times in a row.
    pub fn new(max_restarts: u32) -> Arc<Health> {
        Arc::new(Health { tasks: Mutex::default(), max_restarts })
    }

    /// Every supervised task by name.
    pub fn tasks(&self) -> BTreeMap<&'static str, TaskHealth> {
        self.tasks.lock().clone()
    }

    /// The names of the tasks that stay down.
    pub fn failed(&self) -> Vec<&'static str> {
        self.tasks.lock().iter().filter(|(_, t)| t.failed).map(|(n, _)| *n).collect()
    }

    fn update(&self, name: &'static str, f: impl FnOnce(&mut TaskHealth)) {
        f(self.tasks.lock().entry(name).or_default());
    }
}

/// Aborts the task when dropped (so aborting a supervisor aborts its child).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => match p.downcast::<String>() {
            Ok(s) => *s,
            Err(p) => p.downcast::<&'static str>().map(|s| (*s).to_owned()).unwrap_or_else(|_| "panic".into()),
        },
        Err(e) => e.to_string(),
    }
}

/// Runs `make()` as the background task `name` on the current runtime, started again by
/// `make()` whenever it panics (see the module). The returned handle aborts it. A task that
/// returns ends for good (and is not reported failed).
pub fn supervise<F, Fut>(health: &Arc<Health>, name: &'static str, make: F) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let health = health.clone();
    health.update(name, |_| {});
    tokio::spawn(async move {
        let mut in_a_row = 0u32;
        loop {
            let started = tokio::time::Instant::now();
            let mut child = AbortOnDrop(tokio::spawn(make()));
            let error = match (&mut child.0).await {
                Ok(()) => return,
                Err(e) if e.is_cancelled() => return,
                Err(e) => panic_message(e),
            };
            in_a_row = if started.elapsed() >= CALM_PERIOD { 1 } else { in_a_row + 1 };
            if in_a_row > health.max_restarts {
                tracing::error!(task = name, error = %error, panics_in_a_row = in_a_row,
                    "background task panicked too often; it stays down and /_public/status reports it");
                health.update(name, |t| {
                    t.failed = true;
                    t.last_panic = Some(error);
                });
                return;
            }
            let backoff = FIRST_BACKOFF.saturating_mul(1 << (in_a_row - 1).min(6)).min(MAX_BACKOFF);
            tracing::error!(task = name, error = %error, ?backoff, "background task panicked; restarting it");
            health.update(name, |t| {
                t.restarts += 1;
                t.last_panic = Some(error);
            });
            tokio::time::sleep(backoff).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_restarted_then_given_up() {
        let health = Health::new(2);
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let sup = supervise(&health, "boom", move || {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                panic!("boom");
            }
        });
        sup.await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 3, "first run and two restarts");
        let t = &health.tasks()["boom"];
        assert!(t.failed && t.restarts == 2, "{t:?}");
        assert_eq!(t.last_panic.as_deref(), Some("boom"));
        assert_eq!(health.failed(), vec!["boom"]);
    }

    #[tokio::test(start_paused = true)]
    async fn aborting_the_supervisor_aborts_the_child() {
        struct Flag(Arc<AtomicU32>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(1, Ordering::SeqCst);
            }
        }
        let health = Health::new(5);
        let dropped = Arc::new(AtomicU32::new(0));
        let d = dropped.clone();
        let sup = supervise(&health, "forever", move || {
            let flag = Flag(d.clone());
            async move {
                let _flag = flag;
                std::future::pending::<()>().await
            }
        });
        tokio::task::yield_now().await;
        sup.abort();
        let _ = sup.await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        assert!(health.failed().is_empty());
    }
}
