//! Per-token request rate limits (token buckets kept in memory).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets by token id.
pub struct RateLimiter {
    /// (per second, burst); changed by a config reload.
    rates: Mutex<(f64, f64)>,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_sec` requests per second with bursts of `burst`.
    pub fn new(per_sec: u32, burst: u32) -> Self {
        Self { rates: Mutex::new((f64::from(per_sec), f64::from(burst))), buckets: Mutex::default() }
    }

    /// New rates from the next request on (a config reload); buckets keep their tokens, up
    /// to the new burst.
    pub fn set(&self, per_sec: u32, burst: u32) {
        *self.rates.lock().expect("rate limiter lock is never poisoned") = (f64::from(per_sec), f64::from(burst));
    }

    /// Takes one request from `key`'s bucket; `Err(wait)` when it is empty.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let (per_sec, burst) = *self.rates.lock().expect("rate limiter lock is never poisoned");
        let mut buckets = self.buckets.lock().expect("rate limiter lock is never poisoned");
        if buckets.len() > 100_000 {
            // Tokens are few; this bounds memory if ids churn.
            buckets.retain(|_, (_, t)| now.duration_since(*t) < Duration::from_secs(60));
        }
        let (tokens, last) = buckets.entry(key.to_string()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * per_sec).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let l = RateLimiter::new(10, 3);
        let t = Instant::now();
        assert!((0..3).all(|_| l.check("a", t).is_ok()));
        let wait = l.check("a", t).unwrap_err();
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO, "{wait:?}");
        assert!(l.check("b", t).is_ok(), "buckets are per token");
        assert!(l.check("a", t + Duration::from_millis(110)).is_ok());
    }
}
