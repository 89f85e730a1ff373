//! Limits on clients and requests: monthly job-creation quotas per client token, fixed-window rate limits, and
//! replay nonces.

use std::time::Duration;

use futures::future::BoxFuture;

use super::StorageError;

/// Job creations per client token and calendar month (clients.toml `monthly_attempts`).
///
/// The count of a month is kept under that month's key (`YYYY-MM`, UTC), so a new month starts
/// at zero without anything being reset, and stores may let old months expire.
pub trait QuotaStore: Send + Sync + 'static {
    /// Sets the monthly allowance at start-up. What was used this month is kept (a restart or a
    /// second instance does not refill it); a new limit applies to it at once.
    fn init<'a>(&'a self, token: &'a str, limit: u64) -> BoxFuture<'a, Result<(), StorageError>>;
    /// Takes one unit of `month` (a [`quota_month`] key); false when that month's allowance is
    /// spent or the token has none. Exact under concurrency.
    fn take_in<'a>(&'a self, token: &'a str, month: &'a str) -> BoxFuture<'a, Result<bool, StorageError>>;
    /// Takes one unit of the current month (UTC).
    fn take<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<bool, StorageError>> {
        Box::pin(async move { self.take_in(token, &quota_month(crate::job::now_ms())).await })
    }
}

/// The quota month of an instant: `YYYY-MM` of the UTC calendar (months compare as strings).
/// An instant beyond chrono's range (year 262,143) counts in the last month it can name.
pub fn quota_month(epoch_ms: u64) -> String {
    let ms = i64::try_from(epoch_ms).unwrap_or(i64::MAX);
    let at =
        chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms).unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
    at.format("%Y-%m").to_string()
}

/// Fixed-window rate limiting.
pub trait RateLimitStore: Send + Sync + 'static {
    /// Counts a hit on `key`; `Err(retry_after)` when over `limit` in the current window.
    fn hit<'a>(
        &'a self,
        key: &'a str,
        limit: u32,
        period: Duration,
    ) -> BoxFuture<'a, Result<Result<(), Duration>, StorageError>>;
}

/// Replay protection: remembers nonces for a while.
pub trait NonceStore: Send + Sync + 'static {
    /// Records `nonce`; false if it was already seen within `ttl`.
    fn first_use<'a>(&'a self, nonce: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, StorageError>>;
}

/// Rate-limit windows kept in memory by default (`RATE_LIMIT_MAX_KEYS`).
pub const DEFAULT_RATE_LIMIT_MAX_KEYS: usize = 100_000;

#[cfg(test)]
mod tests {
    use super::quota_month;

    #[test]
    fn quota_months_follow_the_utc_calendar() {
        let ms = |s: &str| chrono_free_epoch_ms(s);
        assert_eq!(quota_month(0), "1970-01");
        assert_eq!(quota_month(ms("2026-12-31T23:59:59.999")), "2026-12");
        assert_eq!(quota_month(ms("2027-01-01T00:00:00.000")), "2027-01");
        assert_eq!(quota_month(ms("2024-02-29T12:00:00.000")), "2024-02");
        assert_eq!(quota_month(ms("2024-03-01T00:00:00.000")), "2024-03");
        assert_eq!(quota_month(ms("2000-02-29T23:59:59.999")), "2000-02");
        assert_eq!(quota_month(ms("2100-03-01T00:00:00.000")), "2100-03");
        assert!(quota_month(u64::MAX).len() >= 7);
    }

    /// Epoch ms of `YYYY-MM-DDTHH:MM:SS.mmm` (UTC), counted day by day: an independent oracle.
    fn chrono_free_epoch_ms(s: &str) -> u64 {
        let n = |r: std::ops::Range<usize>| s[r].parse::<u64>().unwrap();
        let (y, m, d) = (n(0..4), n(5..7), n(8..10));
        let leap = |y: u64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let mut days = (1970..y).map(|y| if leap(y) { 366 } else { 365 }).sum::<u64>();
        let lens = [31, if leap(y) { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        days += lens[..(m - 1) as usize].iter().sum::<u64>() + d - 1;
        ((days * 24 + n(11..13)) * 60 + n(14..16)) * 60_000 + n(17..19) * 1000 + n(20..23)
    }
}
