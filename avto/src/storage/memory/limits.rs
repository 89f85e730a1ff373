//! Quotas, rate limits and replay nonces in process memory.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;

use crate::job::now_ms;
use crate::storage::{NonceStore, QuotaStore, RateLimitStore, StorageError, DEFAULT_RATE_LIMIT_MAX_KEYS};

/// Months of counts an in-memory quota keeps per token: the current and the one before (a
/// request that read the clock just before midnight still counts in its month).
const QUOTA_MONTHS_KEPT: usize = 2;

/// In-memory quotas.
#[derive(Default)]
pub struct MemoryQuotas {
    /// token -> monthly limit, and units used per month (`YYYY-MM`, at most
    /// [`QUOTA_MONTHS_KEPT`], the newest last).
    tokens: Mutex<HashMap<String, (u64, Vec<(String, u64)>)>>,
}

impl QuotaStore for MemoryQuotas {
    fn init<'a>(&'a self, token: &'a str, limit: u64) -> BoxFuture<'a, Result<(), StorageError>> {
        self.tokens.lock().entry(token.to_owned()).or_default().0 = limit;
        Box::pin(async { Ok(()) })
    }
    fn take_in<'a>(&'a self, token: &'a str, month: &'a str) -> BoxFuture<'a, Result<bool, StorageError>> {
        let ok = match self.tokens.lock().get_mut(token) {
            None => false,
            Some((limit, months)) => {
                let i = match months.binary_search_by(|(m, _)| m.as_str().cmp(month)) {
                    Ok(i) => Some(i),
                    // A month older than every one kept is over: its count is gone, nothing is granted.
                    Err(0) if months.len() >= QUOTA_MONTHS_KEPT => None,
                    Err(i) => {
                        months.insert(i, (month.to_owned(), 0));
                        if months.len() > QUOTA_MONTHS_KEPT {
                            months.remove(0);
                        }
                        months.iter().position(|(m, _)| m == month)
                    }
                };
                match i.map(|i| &mut months[i].1) {
                    Some(used) if *used < *limit => {
                        *used += 1;
                        true
                    }
                    _ => false,
                }
            }
        };
        Box::pin(async move { Ok(ok) })
    }
}

/// In-memory fixed-window rate limits: at most `max_keys` windows (the oldest go first when
/// a new key arrives at the cap), each forgotten once its period is over.
pub struct MemoryRateLimits {
    max_keys: usize,
    /// key -> (window start ms, hits, window end ms), and the windows by end time (oldest
    /// first; an entry whose key started a newer window since is skipped).
    windows: Mutex<(HashMap<String, (u64, u32, u64)>, VecDeque<(u64, String)>)>,
}

impl Default for MemoryRateLimits {
    fn default() -> Self {
        Self::new(DEFAULT_RATE_LIMIT_MAX_KEYS)
    }
}

impl MemoryRateLimits {
    /// Keeps at most `max_keys` windows (at least 1).
    pub fn new(max_keys: usize) -> Self {
        MemoryRateLimits { max_keys: max_keys.max(1), windows: Mutex::default() }
    }

    /// Windows currently kept.
    pub fn len(&self) -> usize {
        self.windows.lock().0.len()
    }

    /// Whether no window is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl RateLimitStore for MemoryRateLimits {
    fn hit<'a>(
        &'a self,
        key: &'a str,
        limit: u32,
        period: Duration,
    ) -> BoxFuture<'a, Result<Result<(), Duration>, StorageError>> {
        let now = now_ms();
        let period_ms = (period.as_millis().max(1)).min(u64::MAX as u128 / 4) as u64;
        let mut guard = self.windows.lock();
        let (map, order) = &mut *guard;
        // Forget ended windows; at the cap, the oldest ones.
        while let Some((end, k)) = order.front() {
            let end = *end;
            if map.get(k).is_none_or(|w| w.2 != end) {
                order.pop_front(); // that key started a newer window since
            } else if end <= now || (map.len() >= self.max_keys && !map.contains_key(key)) {
                let (_, k) = order.pop_front().unwrap();
                map.remove(&k);
            } else {
                break;
            }
        }
        let w = map.entry(key.to_owned()).or_insert((now, 0, 0));
        if w.1 == 0 || now >= w.2 {
            *w = (now, 0, now.saturating_add(period_ms));
            order.push_back((w.2, key.to_owned()));
        }
        w.1 = w.1.saturating_add(1);
        let res = if w.1 > limit { Err(Duration::from_millis(w.2.saturating_sub(now))) } else { Ok(()) };
        Box::pin(async move { Ok(res) })
    }
}

/// In-memory replay nonces. Each is kept as a 64-bit hash of the nonce, keyed with a random
/// per-process key (`RandomState`), not as its string: about 50 bytes a nonce instead of about
/// 260, which matters because every result keeps its nonce for up to a minute (at 15,000 jobs/s
/// that is about 900,000 nonces: 45 MiB rather than 240). A fresh nonce whose hash equals a
/// remembered one (about 1 in 2^64 / the number remembered, and not steerable without the
/// key) is refused like a replay; a replay is never let through.
#[derive(Default)]
pub struct MemoryNonces {
    hasher: std::hash::RandomState,
    /// Nonce hash -> expiry (ms), and the same in the order they were added (their expiry order
    /// for one TTL; an entry whose map expiry moved on is skipped when it reaches the front).
    seen: Mutex<(HashMap<u64, u64>, VecDeque<(u64, u64)>)>,
}

impl NonceStore for MemoryNonces {
    fn first_use<'a>(&'a self, nonce: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, StorageError>> {
        let now = now_ms();
        let key = std::hash::BuildHasher::hash_one(&self.hasher, nonce);
        let mut guard = self.seen.lock();
        let (map, order) = &mut *guard;
        while let Some((exp, _)) = order.front() {
            if *exp > now {
                break;
            }
            let (_, n) = order.pop_front().unwrap();
            if map.get(&n).is_some_and(|e| *e <= now) {
                map.remove(&n);
            }
        }
        let fresh = match map.get(&key) {
            Some(exp) if *exp > now => false,
            _ => {
                let exp = now.saturating_add(ttl.as_millis() as u64);
                map.insert(key, exp);
                order.push_back((exp, key));
                true
            }
        };
        Box::pin(async move { Ok(fresh) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #12 item 2: the rate-limit map is bounded (the oldest windows go at the cap) and
    /// forgets windows whose period ended.
    #[tokio::test]
    async fn memory_rate_limits_are_bounded_and_expire() {
        let rl = MemoryRateLimits::new(10);
        for i in 0..1000 {
            assert!(rl.hit(&format!("k{i}"), 5, Duration::from_secs(60)).await.unwrap().is_ok());
            assert!(rl.len() <= 10, "{} windows after {i} keys", rl.len());
        }
        // The newest keys are still counted: over the limit they are refused.
        for _ in 0..4 {
            assert!(rl.hit("k999", 5, Duration::from_secs(60)).await.unwrap().is_ok());
        }
        assert!(rl.hit("k999", 5, Duration::from_secs(60)).await.unwrap().is_err());
        // Windows of 1 ms are gone once they ended.
        let rl = MemoryRateLimits::new(1000);
        for i in 0..100 {
            rl.hit(&format!("short{i}"), 5, Duration::from_millis(1)).await.unwrap().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        rl.hit("other", 5, Duration::from_secs(60)).await.unwrap().unwrap();
        assert_eq!(rl.len(), 1, "ended windows are forgotten");
    }
}
