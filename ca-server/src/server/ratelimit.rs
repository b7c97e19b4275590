//! Per-key token buckets: `burst` tokens, refilled at `rate_per_second`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

struct Bucket {
    tokens: f64,
    updated: Instant,
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
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
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
