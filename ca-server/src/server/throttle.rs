//! Bounded tracing of refusals: a flood of bad requests must not become a
//! flood of log lines. Each category (a fixed event name, or a configured
//! key id — never a caller-chosen string) may write one line per interval;
//! the line carries how many were suppressed since the last one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One line per category and interval.
pub struct Throttle {
    interval: Duration,
    state: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(Duration::from_secs(1))
    }
}

/// More categories than this and the map is cleared (it never grows
/// without bound even if a caller passed unbounded categories by mistake).
const MAX_CATEGORIES: usize = 4096;

impl Throttle {
    pub fn new(interval: Duration) -> Throttle {
        Throttle {
            interval,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(suppressed)` when a line may be written now (with the number of
    /// lines dropped since the previous one), `None` when it must be dropped.
    pub fn allow(&self, category: &str) -> Option<u64> {
        self.allow_at(category, Instant::now())
    }

    fn allow_at(&self, category: &str, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((last, suppressed)) = state.get_mut(category) {
            if now.saturating_duration_since(*last) < self.interval {
                *suppressed += 1;
                return None;
            }
            let dropped = *suppressed;
            *last = now;
            *suppressed = 0;
            return Some(dropped);
        }
        if state.len() >= MAX_CATEGORIES {
            state.clear();
        }
        state.insert(category.to_string(), (now, 0));
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_dropped() {
        let t = Throttle::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(t.allow_at("a", t0), Some(0));
        for _ in 0..5 {
            assert_eq!(t.allow_at("a", t0 + Duration::from_millis(10)), None);
        }
        assert_eq!(t.allow_at("b", t0), Some(0), "categories are separate");
        assert_eq!(t.allow_at("a", t0 + Duration::from_secs(1)), Some(5));
        assert_eq!(t.allow_at("a", t0 + Duration::from_millis(1500)), None);
    }
}
