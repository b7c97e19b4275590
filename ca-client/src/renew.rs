//! When to renew and when to retry: pure functions of times and random
//! numbers (the caller supplies both), so the schedule can be tested.
//!
//! - **Renewal point**: `start + fraction × lifetime − jitter`, with
//!   `lifetime = not_after − start`, `fraction` 2/3 by default and `jitter`
//!   uniform in `[0, 5 % of lifetime)`, drawn once per certificate so that
//!   replicas spread out but one client's schedule stays put. `start` is
//!   the later of notBefore and the time the certificate was installed
//!   (see `inspect::Installed::start`): the CA backdates notBefore by a few
//!   minutes, which would otherwise dominate short lifetimes.
//! - **Retry after a transient failure** (network, TLS, 5xx, 429): capped
//!   exponential backoff with full jitter: the n-th consecutive failure
//!   waits `uniform(0, min(cap, base × 2ⁿ))`, base 1 s, cap 5 min, never
//!   less than [`MIN_RETRY`] so that a zero draw cannot make a tight loop.
//!   A server's `Retry-After` is honoured as a lower bound.
//! - **Retry after a permanent failure** (401/403: authentication, scope,
//!   policy; also 400/404/413, which the same request will meet again):
//!   every [`PERMANENT_RETRY`] ± 10 %, loud in the logs, not hammered; the
//!   operator may fix the key or the policy without restarting the client.
//! - **`--once --if-needed`** ([`if_needed`]): no request while the present
//!   certificate is valid and before its (jitter-free) renewal point.
//! - **CRL refresh** ([`crl_refresh_delay`]), independent of renewals:
//!   every `crl_refresh` (default [`DEFAULT_CRL_REFRESH`], 60 s, so that a
//!   revoked peer is refused within about a minute), drawn in
//!   `[80 %, 100 %]` of it so that replicas spread out yet never wait longer
//!   than configured; and in any case after at most half of the time left
//!   until the earliest nextUpdate of the installed CRLs (never below
//!   [`MIN_CRL_DELAY`]), so that a long `crl_refresh` still fetches a new
//!   CRL before the old one goes stale, and a CA that keeps serving a stale
//!   one is asked again a few times rather than every second. Failed
//!   refreshes retry with the renewal's backoff ([`retry_delay`]), capped
//!   at `crl_refresh` ([`crl_backoff`]).

use std::time::Duration;

use thiserror::Error;

/// Default fraction of the lifetime at which to renew.
pub const DEFAULT_FRACTION: f64 = 2.0 / 3.0;
/// Largest jitter, as a fraction of the lifetime.
pub const JITTER_FRACTION: f64 = 0.05;
/// First backoff step.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Largest backoff step.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// Smallest retry delay after a transient failure.
pub const MIN_RETRY: Duration = Duration::from_millis(250);
/// Retry interval after a permanent failure.
pub const PERMANENT_RETRY: Duration = Duration::from_secs(300);
/// Default interval between two CRL refreshes.
pub const DEFAULT_CRL_REFRESH: Duration = Duration::from_secs(60);
/// Shortest delay before a CRL refresh driven by a nearing nextUpdate.
pub const MIN_CRL_DELAY: Duration = Duration::from_secs(5);

/// The delay before the next CRL refresh after a successful one, at Unix
/// time `now`: `interval × (0.8 + 0.2 × unit)`, but at most half the time
/// left until `earliest_next_update` (and at least [`MIN_CRL_DELAY`]); a
/// nextUpdate already past changes nothing (asking faster would not make
/// the CA issue sooner).
pub fn crl_refresh_delay(
    now: i64,
    interval: Duration,
    earliest_next_update: Option<i64>,
    unit: f64,
) -> Duration {
    let regular = interval.mul_f64(0.8 + 0.2 * unit.clamp(0.0, 1.0));
    match earliest_next_update {
        Some(next) if next > now => {
            let half = Duration::from_secs(u64::try_from(next - now).unwrap_or(0) / 2);
            regular.min(half.max(MIN_CRL_DELAY))
        }
        _ => regular,
    }
}

/// The backoff of failed CRL refreshes: the renewal's, capped at the
/// refresh interval (a failing CA is never asked more rarely than a
/// healthy one).
pub fn crl_backoff(interval: Duration) -> Backoff {
    Backoff::new(BACKOFF_BASE, interval.clamp(BACKOFF_BASE, BACKOFF_CAP))
}

/// The renewal point of a certificate, Unix seconds.
///
/// `jitter_unit` is a random number in `[0, 1)`; the point moves earlier by
/// `jitter_unit × 5 %` of the lifetime. Never before `not_before`.
pub fn renewal_point(not_before: i64, not_after: i64, fraction: f64, jitter_unit: f64) -> i64 {
    let lifetime = (not_after - not_before).max(0) as f64;
    let fraction = fraction.clamp(0.0, 1.0);
    let jitter = jitter_unit.clamp(0.0, 1.0) * JITTER_FRACTION * lifetime;
    let offset = (lifetime * fraction - jitter).max(0.0);
    not_before.saturating_add(offset as i64)
}

/// How a failure should be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Network, TLS, 5xx, 429, a bad response: back off and retry.
    Transient,
    /// The server said no in a way that repeats (401/403/400/404/413):
    /// retry slowly.
    Permanent,
}

/// Capped exponential backoff with full jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(BACKOFF_BASE, BACKOFF_CAP)
    }
}

impl Backoff {
    /// A backoff from `base` doubling up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap,
            failures: 0,
        }
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The upper bound of the next delay: `min(cap, base × 2^failures)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.failures.min(31));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Records a failure and returns the delay before the next attempt:
    /// `unit × ceiling` (full jitter), at least [`MIN_RETRY`] (or the
    /// ceiling, if smaller).
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        ceiling
            .mul_f64(unit.clamp(0.0, 1.0))
            .max(MIN_RETRY.min(ceiling))
    }

    /// Forgets past failures (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// The delay before retrying after a failure of `kind`. `retry_after` is a
/// server's `Retry-After`, honoured as a lower bound (up to the cap).
pub fn retry_delay(
    kind: FailureKind,
    backoff: &mut Backoff,
    unit: f64,
    retry_after: Option<Duration>,
) -> Duration {
    match kind {
        FailureKind::Permanent => {
            // Keep counting, so that a later transient failure does not
            // start again at 1 s right after a permanent one.
            let _ = backoff.next_delay(unit);
            PERMANENT_RETRY.mul_f64(0.9 + 0.2 * unit.clamp(0.0, 1.0))
        }
        FailureKind::Transient => {
            let d = backoff.next_delay(unit);
            match retry_after {
                Some(ra) => d.max(ra.min(BACKOFF_CAP)),
                None => d,
            }
        }
    }
}

/// The state of the files on disk, as far as the decisions need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Present {
    /// A usable certificate with this validity (key matches, chain fine).
    Valid {
        /// notBefore, Unix seconds.
        not_before: i64,
        /// notAfter, Unix seconds.
        not_after: i64,
    },
    /// Missing, unreadable, mismatched, untrusted, expired: with why.
    Unusable(String),
}

/// What `--once --if-needed` (and the daemon at start) should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The present certificate is good until the renewal point: no request.
    Keep {
        /// The renewal point (jitter-free), Unix seconds.
        renew_at: i64,
    },
    /// Request a new certificate, for this reason.
    Renew(String),
}

/// Decides whether a request is needed now.
pub fn if_needed(present: &Present, now: i64, fraction: f64) -> Decision {
    match present {
        Present::Unusable(why) => Decision::Renew(why.clone()),
        Present::Valid {
            not_before,
            not_after,
        } => {
            if now >= *not_after {
                return Decision::Renew("certificate expired".into());
            }
            if now < *not_before {
                return Decision::Renew("certificate not yet valid".into());
            }
            let renew_at = renewal_point(*not_before, *not_after, fraction, 0.0);
            if now >= renew_at {
                Decision::Renew("certificate past its renewal point".into())
            } else {
                Decision::Keep { renew_at }
            }
        }
    }
}

/// Why the client is unhealthy (`/healthz`). `Display` is one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Unhealthy {
    /// The installed certificate is listed in its class's CRL (or was
    /// revoked with `ca-client revoke`) and no new one is installed yet.
    #[error("certificate revoked")]
    Revoked,
    /// No certificate is installed, or the installed one is unusable.
    #[error("no usable certificate installed")]
    NoCertificate,
    /// Past notAfter.
    #[error("certificate expired {ago} s ago")]
    Expired {
        /// Seconds since notAfter.
        ago: i64,
    },
    /// notBefore is further ahead than the accepted clock skew.
    #[error("certificate not yet valid")]
    NotYetValid,
    /// Within 10 % of its lifetime of notAfter.
    #[error("certificate expires in {remaining} s (within 10% of its lifetime)")]
    ExpiresSoon {
        /// Seconds until notAfter.
        remaining: i64,
    },
}

/// Health of a certificate: unhealthy when expired, not yet valid (by more
/// than the clock skew the client accepts at install,
/// [`crate::verify::MAX_CLOCK_SKEW`]), or within 10 % of its lifetime of
/// expiry.
pub fn health(now: i64, not_before: i64, not_after: i64) -> Result<(), Unhealthy> {
    let lifetime = (not_after - not_before).max(0);
    if now >= not_after {
        return Err(Unhealthy::Expired {
            ago: now - not_after,
        });
    }
    if now + crate::verify::MAX_CLOCK_SKEW < not_before {
        return Err(Unhealthy::NotYetValid);
    }
    let margin = lifetime / 10;
    if not_after - now <= margin {
        return Err(Unhealthy::ExpiresSoon {
            remaining: not_after - now,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_point_fraction_and_jitter_bounds() {
        let nb = 1_000_000;
        let na = nb + 3_000;
        assert_eq!(renewal_point(nb, na, DEFAULT_FRACTION, 0.0), nb + 2_000);
        assert_eq!(renewal_point(nb, na, 0.5, 0.0), nb + 1_500);
        // Jitter moves the point earlier by at most 5 % of the lifetime.
        for i in 0..=1000 {
            let u = f64::from(i) / 1000.0;
            let p = renewal_point(nb, na, DEFAULT_FRACTION, u);
            assert!(p <= nb + 2_000, "{u}: {p}");
            assert!(p >= nb + 2_000 - 150, "{u}: {p}");
        }
        assert_eq!(
            renewal_point(nb, na, DEFAULT_FRACTION, 0.999_999),
            nb + 1_850
        );
        // 24 h certificate: renew at 16 h minus up to 72 min.
        let day = 86_400;
        assert_eq!(renewal_point(0, day, DEFAULT_FRACTION, 0.0), 57_600);
        assert_eq!(renewal_point(0, day, DEFAULT_FRACTION, 1.0), 57_600 - 4_320);
        // Degenerate inputs stay sane.
        assert_eq!(renewal_point(nb, nb - 10, DEFAULT_FRACTION, 0.5), nb);
        assert_eq!(renewal_point(nb, na, 7.0, -3.0), na);
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_full_jitter() {
        let mut b = Backoff::default();
        let expected = [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300];
        for (i, secs) in expected.iter().enumerate() {
            assert_eq!(b.ceiling(), Duration::from_secs(*secs), "step {i}");
            let top = b.clone().next_delay(0.999_999);
            assert!(top <= Duration::from_secs(*secs));
            assert!(top > Duration::from_secs(*secs).mul_f64(0.99));
            let low = b.clone().next_delay(0.0);
            assert_eq!(low, MIN_RETRY);
            let _ = b.next_delay(0.5);
        }
        for _ in 0..100 {
            let _ = b.next_delay(1.0);
        }
        assert_eq!(b.ceiling(), BACKOFF_CAP);
        assert!(b.next_delay(1.0) <= BACKOFF_CAP);
        b.reset();
        assert_eq!(b.failures(), 0);
        assert_eq!(b.ceiling(), BACKOFF_BASE);
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_range() {
        let mut lo = Duration::MAX;
        let mut hi = Duration::ZERO;
        for i in 0..1000 {
            let mut b = Backoff::default();
            for _ in 0..5 {
                let _ = b.next_delay(0.5);
            }
            // ceiling is now 32 s
            let d = b.next_delay(crate::random_unit());
            lo = lo.min(d);
            hi = hi.max(d);
            assert!(d <= Duration::from_secs(32), "{i}: {d:?}");
        }
        assert!(lo < Duration::from_secs(4), "{lo:?}");
        assert!(hi > Duration::from_secs(28), "{hi:?}");
    }

    #[test]
    fn permanent_failures_retry_slowly_and_retry_after_is_a_floor() {
        let mut b = Backoff::default();
        for u in [0.0, 0.5, 1.0] {
            let d = retry_delay(FailureKind::Permanent, &mut b, u, None);
            assert!(
                d >= Duration::from_secs(270) && d <= Duration::from_secs(330),
                "{d:?}"
            );
        }
        let mut b = Backoff::default();
        let d = retry_delay(
            FailureKind::Transient,
            &mut b,
            0.0,
            Some(Duration::from_secs(20)),
        );
        assert_eq!(d, Duration::from_secs(20));
        let d = retry_delay(
            FailureKind::Transient,
            &mut b,
            0.0,
            Some(Duration::from_secs(100_000)),
        );
        assert_eq!(d, BACKOFF_CAP);
    }

    #[test]
    fn if_needed_decisions() {
        let valid = Present::Valid {
            not_before: 1_000,
            not_after: 4_000,
        };
        assert_eq!(
            if_needed(&valid, 1_500, DEFAULT_FRACTION),
            Decision::Keep { renew_at: 3_000 }
        );
        assert_eq!(
            if_needed(&valid, 2_999, DEFAULT_FRACTION),
            Decision::Keep { renew_at: 3_000 }
        );
        assert!(matches!(
            if_needed(&valid, 3_000, DEFAULT_FRACTION),
            Decision::Renew(r) if r.contains("renewal point")
        ));
        assert!(matches!(
            if_needed(&valid, 4_000, DEFAULT_FRACTION),
            Decision::Renew(r) if r.contains("expired")
        ));
        assert!(matches!(
            if_needed(&valid, 999, DEFAULT_FRACTION),
            Decision::Renew(r) if r.contains("not yet valid")
        ));
        assert_eq!(
            if_needed(
                &Present::Unusable("cert.pem missing".into()),
                1_500,
                DEFAULT_FRACTION
            ),
            Decision::Renew("cert.pem missing".into())
        );
    }

    #[test]
    fn crl_refresh_is_regular_and_before_the_next_update() {
        let minute = DEFAULT_CRL_REFRESH;
        let now = 1_000_000;
        // Regular: within [48 s, 60 s], never later than configured.
        assert_eq!(crl_refresh_delay(now, minute, None, 1.0), minute);
        assert_eq!(
            crl_refresh_delay(now, minute, None, 0.0),
            Duration::from_secs(48)
        );
        for i in 0..=100 {
            let d = crl_refresh_delay(now, minute, Some(now + 6 * 3600), f64::from(i) / 100.0);
            assert!(d >= Duration::from_secs(48) && d <= minute, "{d:?}");
        }
        // A long interval: half the time left to the earliest nextUpdate.
        let day = Duration::from_secs(86_400);
        assert_eq!(
            crl_refresh_delay(now, day, Some(now + 6 * 3600), 1.0),
            Duration::from_secs(3 * 3600)
        );
        // A CA that keeps serving the same CRL: asked at 3 h, 1.5 h, …
        // then every MIN_CRL_DELAY in the last seconds, never in a loop.
        let mut t = now;
        let next = now + 6 * 3600;
        let mut asks = 0;
        while t < next {
            t += i64::try_from(crl_refresh_delay(t, day, Some(next), 1.0).as_secs()).unwrap_or(1);
            asks += 1;
        }
        assert!(asks < 25, "{asks} refreshes before nextUpdate");
        assert_eq!(
            crl_refresh_delay(next - 2, day, Some(next), 1.0),
            MIN_CRL_DELAY
        );
        // Past nextUpdate: the regular interval.
        assert_eq!(crl_refresh_delay(now, day, Some(now - 1), 1.0), day);
    }

    #[test]
    fn crl_failures_back_off_up_to_the_interval() {
        let mut b = crl_backoff(DEFAULT_CRL_REFRESH);
        let ceilings: Vec<u64> = (0..9)
            .map(|_| {
                let c = b.ceiling().as_secs();
                let _ = retry_delay(FailureKind::Transient, &mut b, 0.5, None);
                c
            })
            .collect();
        assert_eq!(ceilings, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert!(retry_delay(FailureKind::Transient, &mut b, 1.0, None) <= DEFAULT_CRL_REFRESH);
        // A long interval is capped by the renewal's cap.
        assert_eq!(
            crl_backoff(Duration::from_secs(86_400))
                .clone()
                .next_delay(1.0),
            BACKOFF_BASE
        );
        let mut long = crl_backoff(Duration::from_secs(86_400));
        for _ in 0..20 {
            let _ = long.next_delay(0.5);
        }
        assert_eq!(long.ceiling(), BACKOFF_CAP);
        // A CA without CRLs (404) is asked every PERMANENT_RETRY.
        let d = retry_delay(FailureKind::Permanent, &mut b, 0.5, None);
        assert_eq!(d, PERMANENT_RETRY);
    }

    #[test]
    fn health_margin() {
        assert!(health(1_500, 1_000, 2_000).is_ok());
        assert!(health(1_899, 1_000, 2_000).is_ok());
        assert_eq!(
            health(1_900, 1_000, 2_000),
            Err(Unhealthy::ExpiresSoon { remaining: 100 })
        );
        assert_eq!(
            health(2_000, 1_000, 2_000),
            Err(Unhealthy::Expired { ago: 0 })
        );
        assert_eq!(health(500, 1_000, 2_000), Err(Unhealthy::NotYetValid));
    }
}
