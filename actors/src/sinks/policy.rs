//! Delivery policies, as plain state machines driven by explicit time: retry backoff with full
//! jitter, the circuit breaker, and the token bucket.

use std::time::{Duration, Instant};

use vedette_config::sinks::{BreakerConfig, RateLimitConfig, RetryConfig};

/// Exponential backoff with full jitter: attempt `n` (0-based) waits `u · min(cap, base · 2^n)`
/// for a uniform `u` in `[0, 1)`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    rng: u64,
}

impl Backoff {
    /// From the sink's retry settings.
    pub fn new(c: &RetryConfig) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let seed = std::collections::hash_map::RandomState::new().build_hasher().finish() | 1;
        Self { base: c.base, cap: c.cap, rng: seed }
    }

    /// Upper bound of the wait before retry `attempt`.
    pub fn bound(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The wait before retry `attempt`.
    pub fn delay(&mut self, attempt: u32) -> Duration {
        // xorshift64*: plenty for jitter.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let u = (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
        self.bound(attempt).mul_f64(u)
    }
}

/// Breaker states (the `vedette_sink_breaker_state` gauge: 0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are held back until the open period ends.
    Open,
    /// One trial call is allowed.
    HalfOpen,
}

impl BreakerState {
    /// Gauge value.
    pub fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }

    /// Lowercase name (health output).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// Circuit breaker: `failures` consecutive failures open it for `open_for`; then one trial
/// (half-open) closes it on success or opens it again on failure.
#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    /// From the sink's breaker settings.
    pub fn new(c: &BreakerConfig) -> Self {
        Self { threshold: c.failures.max(1), open_for: c.open_for, failures: 0, open_until: None }
    }

    /// State at `now`.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.open_until {
            None => BreakerState::Closed,
            Some(t) if now < t => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// How long a call must wait at `now` (zero when closed or half-open).
    pub fn wait(&self, now: Instant) -> Duration {
        self.open_until.map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }

    /// The destination's health probe passed while open: the trial may go at `now` instead
    /// of at the end of the open period.
    pub fn probe_passed(&mut self, now: Instant) {
        if let Some(t) = self.open_until.as_mut() {
            *t = (*t).min(now);
        }
    }

    /// The open period.
    pub fn open_for(&self) -> Duration {
        self.open_for
    }

    /// A call succeeded.
    pub fn success(&mut self) {
        self.failures = 0;
        self.open_until = None;
    }

    /// A call failed at `now`.
    pub fn failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        let trial_failed = self.open_until.is_some_and(|t| now >= t);
        if trial_failed || self.failures >= self.threshold {
            self.open_until = Some(now + self.open_for);
        }
    }
}

/// Token bucket: `rate` tokens per second, at most `burst` stored.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// From the sink's rate limit, full at `now`.
    pub fn new(c: &RateLimitConfig, now: Instant) -> Self {
        let burst = c.burst.map_or(c.per_second.max(1.0), f64::from).max(1.0);
        Self { rate: c.per_second, burst, tokens: burst, at: now }
    }

    /// Takes `n` tokens if possible; otherwise returns how long until they are there. A
    /// request larger than the bucket waits for a full bucket and then takes it all.
    pub fn take(&mut self, n: usize, now: Instant) -> Result<(), Duration> {
        self.tokens = (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        let want = (n as f64).min(self.burst);
        if self.tokens >= want {
            self.tokens -= want;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((want - self.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_bounds_double_up_to_the_cap_and_jitter_stays_below() {
        let mut b = Backoff::new(&RetryConfig { base: Duration::from_millis(100), cap: Duration::from_secs(1) });
        assert_eq!(b.bound(0), Duration::from_millis(100));
        assert_eq!(b.bound(3), Duration::from_millis(800));
        assert_eq!(b.bound(4), Duration::from_secs(1));
        assert_eq!(b.bound(200), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..200).map(|_| b.delay(2)).collect();
        assert!(delays.iter().all(|d| *d < Duration::from_millis(400)));
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() > 150, "full jitter spreads the waits");
        let mean = delays.iter().sum::<Duration>() / 200;
        assert!(mean > Duration::from_millis(120) && mean < Duration::from_millis(280), "{mean:?}");
    }

    #[test]
    fn breaker_opens_after_consecutive_failures_and_half_opens_for_one_trial() {
        let t0 = Instant::now();
        let mut b = Breaker::new(&BreakerConfig { failures: 3, open_for: Duration::from_secs(10) });
        b.failure(t0);
        b.failure(t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
        b.success();
        b.failure(t0);
        b.failure(t0);
        assert_eq!(b.state(t0), BreakerState::Closed, "success reset the count");
        b.failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert_eq!(b.wait(t0 + Duration::from_secs(4)), Duration::from_secs(6));
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        assert_eq!(b.wait(t1), Duration::ZERO);
        b.failure(t1);
        assert_eq!(b.state(t1), BreakerState::Open, "a failed trial opens it again");
        let t2 = t1 + Duration::from_secs(10);
        b.success();
        assert_eq!(b.state(t2), BreakerState::Closed);
        // A passing health probe ends the open period early, and only while open.
        b.probe_passed(t2);
        assert_eq!(b.state(t2), BreakerState::Closed);
        for _ in 0..3 {
            b.failure(t2);
        }
        let t3 = t2 + Duration::from_secs(2);
        assert_eq!(b.state(t3), BreakerState::Open);
        b.probe_passed(t3);
        assert_eq!(b.state(t3), BreakerState::HalfOpen);
        assert_eq!(b.wait(t3), Duration::ZERO);
    }

    #[test]
    fn token_bucket_allows_bursts_then_the_rate() {
        let t0 = Instant::now();
        let mut tb = TokenBucket::new(&RateLimitConfig { per_second: 10.0, burst: Some(20) }, t0);
        assert!(tb.take(20, t0).is_ok());
        let wait = tb.take(5, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(tb.take(5, t0 + Duration::from_millis(500)).is_ok());
        // Larger than the bucket: waits for a full bucket, then goes.
        assert_eq!(tb.take(100, t0 + Duration::from_millis(500)).unwrap_err(), Duration::from_secs(2));
        assert!(tb.take(100, t0 + Duration::from_millis(2500)).is_ok());
    }
}
