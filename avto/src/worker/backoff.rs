//! The worker's one backoff schedule ([`Backoff`]). Registration, heartbeats, polling, result
//! delivery and the WebSocket reconnect all wait by it, each with its own bounds.
//!
//! A step doubles the last delay, at least `initial` and at most `max`: the Python SDK's
//! `_calculate_backoff`, `min(max(last * 2, initial), max)`. After a `429`, a non-zero
//! `Retry-After` is the delay (and the next step doubles it); a `429` without one waits at least
//! the rate-limit floor.

use std::time::Duration;

use super::WorkerError;

/// An exponential backoff. It starts at zero, so the first step is `initial`, unless
/// [`Backoff::primed`].
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    /// Least delay after a `429` without `Retry-After` (`RATE_LIMIT_BACKOFF_FLOOR`).
    rate_limit_floor: Duration,
    /// The last delay; zero before the first step and after [`Backoff::reset`].
    current: Duration,
}

impl Backoff {
    /// Steps from `initial` up to `max`, without a rate-limit floor.
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max, rate_limit_floor: Duration::ZERO, current: Duration::ZERO }
    }

    /// A `429` without `Retry-After` waits at least `floor`.
    pub(crate) fn rate_limit_floor(mut self, floor: Duration) -> Self {
        self.rate_limit_floor = floor;
        self
    }

    /// Starts as if `initial` had been waited once, so the first step is twice it: the SDK's
    /// registration retry starts its delay at `REGISTRATION_RETRY_INITIAL_DELAY` and steps
    /// before the first wait.
    pub(crate) fn primed(mut self) -> Self {
        self.current = self.initial;
        self
    }

    /// The last delay (zero before the first step and after a reset).
    pub(crate) fn current(&self) -> Duration {
        self.current
    }

    /// Back to the start (after a success).
    pub(crate) fn reset(&mut self) {
        self.current = Duration::ZERO;
    }

    /// The next delay, whatever went wrong.
    pub(crate) fn step(&mut self) -> Duration {
        // Saturating: a huge Retry-After followed by a plain failure stays at `max`.
        self.current = self.current.saturating_mul(2).max(self.initial).min(self.max);
        self.current
    }

    /// The next delay after `err`: a `429`'s non-zero `Retry-After` as given, any other `429` a
    /// step but at least the rate-limit floor, anything else a step.
    pub(crate) fn after_error(&mut self, err: &WorkerError) -> Duration {
        match err {
            WorkerError::RateLimited { retry_after: Some(retry_after), .. } if !retry_after.is_zero() => {
                self.current = *retry_after;
            }
            WorkerError::RateLimited { .. } => {
                let delay = self.step().max(self.rate_limit_floor);
                self.current = delay;
            }
            _ => {
                self.step();
            }
        }
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn rate_limited(retry_after: Option<Duration>) -> WorkerError {
        WorkerError::RateLimited { retry_after, message: String::new() }
    }

    fn network() -> WorkerError {
        WorkerError::Network { message: "connection refused".into(), source: None }
    }

    #[test]
    fn steps_like_the_sdk() {
        let mut backoff = Backoff::new(s(1), s(60));
        let steps: Vec<Duration> = (0..8).map(|_| backoff.step()).collect();
        assert_eq!(steps, [s(1), s(2), s(4), s(8), s(16), s(32), s(60), s(60)]);
        backoff.reset();
        assert_eq!(backoff.current(), Duration::ZERO);
        assert_eq!(backoff.step(), s(1));

        let mut backoff = Backoff::new(s(15), s(60));
        assert_eq!(backoff.step(), s(15));
        assert_eq!(backoff.step(), s(30));
        assert_eq!(backoff.step(), s(60));
    }

    #[test]
    fn primed_starts_at_twice_the_initial_delay() {
        let mut backoff = Backoff::new(s(1), s(60)).primed();
        assert_eq!(backoff.current(), s(1));
        assert_eq!(backoff.step(), s(2));
        assert_eq!(backoff.step(), s(4));
        let mut capped = Backoff::new(s(40), s(60)).primed();
        assert_eq!(capped.step(), s(60));
    }

    #[test]
    fn unbounded_doubling_for_result_retries() {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::MAX);
        let steps: Vec<Duration> = (0..4).map(|_| backoff.step()).collect();
        assert_eq!(steps, [Duration::from_millis(500), s(1), s(2), s(4)]);
        let mut zero = Backoff::new(Duration::ZERO, Duration::MAX);
        assert_eq!(zero.step(), Duration::ZERO);
        assert_eq!(zero.step(), Duration::ZERO);
    }

    #[test]
    fn retry_after_is_the_delay_and_the_next_step_doubles_it() {
        let mut backoff = Backoff::new(s(1), s(60)).rate_limit_floor(s(5));
        assert_eq!(backoff.after_error(&rate_limited(Some(s(7)))), s(7));
        assert_eq!(backoff.after_error(&network()), s(14));
        // A Retry-After above the maximum is still obeyed.
        assert_eq!(backoff.after_error(&rate_limited(Some(s(600)))), s(600));
        assert_eq!(backoff.after_error(&network()), s(60));
    }

    #[test]
    fn rate_limit_without_retry_after_waits_at_least_the_floor() {
        let mut backoff = Backoff::new(s(1), s(60)).rate_limit_floor(s(5));
        assert_eq!(backoff.after_error(&rate_limited(None)), s(5));
        assert_eq!(backoff.after_error(&rate_limited(Some(Duration::ZERO))), s(10));
        assert_eq!(backoff.after_error(&rate_limited(None)), s(20));
        // Other errors step without the floor.
        let mut backoff = Backoff::new(s(1), s(60)).rate_limit_floor(s(5));
        assert_eq!(backoff.after_error(&network()), s(1));
        assert_eq!(backoff.after_error(&rate_limited(None)), s(5));
        // A floor above the maximum wins, as in the SDK.
        let mut backoff = Backoff::new(s(1), s(3)).rate_limit_floor(s(5));
        assert_eq!(backoff.after_error(&rate_limited(None)), s(5));
        assert_eq!(backoff.after_error(&network()), s(3));
    }

    #[test]
    fn huge_delays_saturate_instead_of_overflowing() {
        let mut backoff = Backoff::new(s(1), Duration::MAX);
        backoff.after_error(&rate_limited(Some(Duration::MAX)));
        assert_eq!(backoff.step(), Duration::MAX);
    }
}
