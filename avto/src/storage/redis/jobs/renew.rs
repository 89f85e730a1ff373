//! The renewal of a store's job locks: one task for all of them.
//!
//! A lock's lease (`JOB_LOCK_LEASE_SECONDS`) is renewed while its guard lives, so a handler may
//! hold a job for as long as it needs. Most locks live for a millisecond or two (a pick-up, a
//! result), far less than a third of a lease, so a task and a timer per lock (as before) cost
//! more than the renewals they make. Here a lock is an entry in a map, added when it is taken and
//! removed when its guard is dropped; one task per store looks at the map every sixth of a lease
//! and renews, in one script call per 256 locks, those taken or last renewed a third of a lease
//! ago or more (so a lease is renewed at most half a lease after it was taken or renewed). A lock
//! its token no longer holds (the lease ran out during a stall and another instance took the
//! job) is marked lost and renewed no more: its holder's writes are refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::super::RedisConn;
use super::scripts::RENEW_ALL;

/// Locks renewed per script call.
const BATCH: usize = 256;

/// One held lock.
#[derive(Debug)]
struct Held {
    job_id: String,
    token: String,
    lost: Arc<AtomicBool>,
    /// When it is to be renewed next.
    due: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    held: HashMap<u64, Held, foldhash::fast::RandomState>,
    next: u64,
    /// The renewal task (started with the first lock; again should its runtime have ended).
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The locks of one job store whose leases are renewed (see the module docs).
#[derive(Debug)]
pub(in crate::storage::redis) struct Renewer {
    conn: RedisConn,
    lease: Duration,
    inner: Mutex<Inner>,
}

impl Renewer {
    pub(super) fn new(conn: RedisConn, lease: Duration) -> Renewer {
        Renewer { conn, lease, inner: Mutex::default() }
    }

    /// Renews the lock of `job_id` held by `token` until [`Renewer::forget`] is given the entry
    /// answered; `lost` is set should the token no longer hold it at a renewal.
    pub(super) fn hold(self: &Arc<Self>, job_id: &str, token: &str, lost: Arc<AtomicBool>) -> u64 {
        let due = Instant::now() + self.lease / 3;
        let mut inner = self.inner.lock();
        let entry = inner.next;
        inner.next += 1;
        inner.held.insert(entry, Held { job_id: job_id.to_owned(), token: token.to_owned(), lost, due });
        if inner.task.as_ref().is_none_or(|t| t.is_finished()) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                inner.task = Some(rt.spawn(run(Arc::downgrade(self), self.lease / 6)));
            }
        }
        entry
    }

    /// The lock of `entry` is released (or committed): no more renewals.
    pub(super) fn forget(&self, entry: u64) {
        self.inner.lock().held.remove(&entry);
    }

    /// Renews the leases due now; marks lost (and forgets) those whose tokens no longer hold them.
    async fn renew_due(&self) {
        let now = Instant::now();
        let due: Vec<(u64, String, String, Arc<AtomicBool>)> = {
            let mut inner = self.inner.lock();
            inner
                .held
                .iter_mut()
                .filter(|(_, h)| h.due <= now)
                .map(|(entry, h)| {
                    h.due = now + self.lease / 3;
                    (*entry, self.conn.key(&format!("lock:job:{}", h.job_id)), h.token.clone(), h.lost.clone())
                })
                .collect()
        };
        let lease_ms = self.lease.as_millis() as u64;
        for batch in due.chunks(BATCH) {
            let mut args: Vec<&dyn super::super::ArgRef> = Vec::with_capacity(1 + 2 * batch.len());
            args.push(&lease_ms);
            for (_, key, token, _) in batch {
                args.extend([key as &dyn super::super::ArgRef, token]);
            }
            let answers = match self.conn.script::<Vec<i64>>(&RENEW_ALL, false, &args).await {
                Ok(answers) => answers,
                Err(e) => {
                    tracing::warn!(locks = batch.len(), error = %e, "could not renew job locks");
                    continue;
                }
            };
            for ((entry, key, _, lost), renewed) in batch.iter().zip(answers) {
                // A lock released while its renewal was on the way is no one's concern.
                if renewed != 1 && self.inner.lock().held.remove(entry).is_some() {
                    tracing::warn!(lock = %key, "job lock lost (lease expired); the holder's changes will be refused");
                    lost.store(true, Ordering::SeqCst);
                }
            }
        }
    }
}

/// The renewal task of one store: ends with the store.
async fn run(renewer: Weak<Renewer>, every: Duration) {
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(renewer) = renewer.upgrade() else { return };
        renewer.renew_due().await;
    }
}
