//! A token bucket per caller: `burst` requests at once, refilled at `per_second`. Over the
//! limit a request answers 429 with the time until the next token as `Retry-After`.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// A token bucket's parameters; `per_second == 0` turns rate limiting off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second.
    pub per_second: f64,
    /// Bucket size: requests a caller may send at once.
    pub burst: u32,
}

/// Callers tracked before idle (full) buckets are forgotten.
const MAX_CALLERS: usize = 10_000;

/// One caller's bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    /// A full bucket at `now`.
    pub fn full(limit: RateLimit, now: Instant) -> Self {
        Self { tokens: f64::from(limit.burst), updated: now }
    }

    /// Takes one token at `now`, or says how long until one is there. Requests reach it out of
    /// order (each took its `now` before authentication, which can take a while): a `now`
    /// earlier than the last refill adds nothing and moves nothing back, or that time would
    /// refill twice.
    pub fn take(&mut self, limit: RateLimit, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limit.per_second).min(f64::from(limit.burst));
        self.updated = self.updated.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / limit.per_second))
        }
    }

    fn is_full(&self, limit: RateLimit, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens + elapsed * limit.per_second >= f64::from(limit.burst)
    }
}

/// The buckets of every caller.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// A limiter; `per_second == 0` lets everything through.
    pub fn new(limit: RateLimit) -> Self {
        Self { limit, buckets: Mutex::new(HashMap::new()) }
    }

    /// Counts one request of `caller` at `now`; over the limit, the whole seconds to wait.
    pub fn check(&self, caller: &str, now: Instant) -> Result<(), u64> {
        if self.limit.per_second <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_CALLERS && !buckets.contains_key(caller) {
            buckets.retain(|_, b| !b.is_full(self.limit, now));
        }
        let bucket = buckets.entry(caller.to_owned()).or_insert_with(|| Bucket::full(self.limit, now));
        bucket.take(self.limit, now).map_err(|wait| wait.as_secs_f64().ceil().max(1.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit { per_second: 2.0, burst: 3 };

    #[test]
    fn a_burst_passes_then_the_refill_rate_holds() {
        let t0 = Instant::now();
        let mut b = Bucket::full(LIMIT, t0);
        for _ in 0..3 {
            assert_eq!(b.take(LIMIT, t0), Ok(()));
        }
        assert_eq!(b.take(LIMIT, t0), Err(Duration::from_millis(500)));
        assert_eq!(b.take(LIMIT, t0 + Duration::from_millis(250)), Err(Duration::from_millis(250)));
        assert_eq!(b.take(LIMIT, t0 + Duration::from_millis(500)), Ok(()));
        // Idle time refills up to the burst, never beyond.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(b.take(LIMIT, later), Ok(()));
        }
        assert!(b.take(LIMIT, later).is_err());
    }

    #[test]
    fn a_request_checked_late_with_an_earlier_time_refills_nothing_twice() {
        let t0 = Instant::now();
        let mut b = Bucket::full(LIMIT, t0);
        for _ in 0..3 {
            assert_eq!(b.take(LIMIT, t0), Ok(()));
        }
        let (early, late) = (t0 + Duration::from_millis(500), t0 + Duration::from_millis(1000));
        // The later request is checked first: 2 tokens refilled by then, one taken.
        assert_eq!(b.take(LIMIT, late), Ok(()));
        // The earlier one, checked after it, takes the other; the half second is not counted again.
        assert_eq!(b.take(LIMIT, early), Ok(()));
        assert_eq!(b.take(LIMIT, late), Err(Duration::from_millis(500)));
    }

    #[test]
    fn callers_have_their_own_buckets_and_retry_after_is_whole_seconds() {
        let t0 = Instant::now();
        let limiter = RateLimiter::new(RateLimit { per_second: 0.25, burst: 1 });
        assert_eq!(limiter.check("alice", t0), Ok(()));
        assert_eq!(limiter.check("alice", t0), Err(4));
        assert_eq!(limiter.check("bob", t0), Ok(()));
        assert_eq!(limiter.check("alice", t0 + Duration::from_millis(3900)), Err(1));
        assert_eq!(limiter.check("alice", t0 + Duration::from_secs(5)), Ok(()));
    }

    #[test]
    fn a_zero_rate_is_no_limit() {
        let limiter = RateLimiter::new(RateLimit { per_second: 0.0, burst: 0 });
        let t0 = Instant::now();
        assert!((0..1000).all(|_| limiter.check("anyone", t0).is_ok()));
    }
}
