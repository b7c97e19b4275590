//! Token buckets: `burst` tokens, refilled at `rate_per_second`; one
//! [`Bucket`], or one per key ([`RateLimiter`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// One token bucket.
pub struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    /// A full bucket of `burst` tokens.
    pub fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            updated: now,
        }
    }

    /// Take one token; false when the bucket is empty.
    pub fn take(&mut self, rate_per_second: f64, burst: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate_per_second).min(burst);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// Take one token for `key`; false when the bucket is empty.
    pub fn allow(&self, key: &str, rate_per_second: f64, burst: f64) -> bool {
        self.allow_at(key, rate_per_second, burst, Instant::now())
    }

    fn allow_at(&self, key: &str, rate: f64, burst: f64, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets
            .entry(key.to_string())
            .or_insert_with(|| Bucket::full(burst, now))
            .take(rate, burst, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        assert!((0..3).all(|_| limiter.allow_at("k", 2.0, 3.0, t0)));
        assert!(!limiter.allow_at("k", 2.0, 3.0, t0));
        assert!(
            limiter.allow_at("other", 2.0, 3.0, t0),
            "buckets are per key"
        );
        assert!(limiter.allow_at("k", 2.0, 3.0, t0 + Duration::from_millis(500)));
        assert!(!limiter.allow_at("k", 2.0, 3.0, t0 + Duration::from_millis(500)));
    }
}
