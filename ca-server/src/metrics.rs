//! Prometheus metrics of the server, registered once per process in their
//! own registry and rendered by `GET /metrics`.
//!
//! Names follow the Prometheus conventions: the unit as a suffix in base
//! units (`_seconds`, `_bytes`), `_total` on counters, points in time as
//! `_timestamp_seconds`. `deploy/prometheus/alerts.yml` and
//! `deploy/grafana/trellis.json` use them; `tests/tests/operator_rules.rs`
//! checks that every name they use is in a live scrape. Counters whose label
//! values are known in advance start at zero, so that `rate()` sees their
//! first increment.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

/// The budgets `server::budget` refuses by (the `budget` label).
const BUDGETS: [&str; 4] = [
    "body_bytes",
    "connection_body_bytes",
    "response_bytes",
    "connection_response_bytes",
];

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub issued: IntCounterVec,
    pub denied: IntCounterVec,
    pub hsm_sign_seconds: HistogramVec,
    pub pipeline_seconds: HistogramVec,
    pub in_flight: IntGauge,
    pub hsm_errors: IntCounterVec,
    pub log_batch_entries: Histogram,
    pub log_commit_seconds: Histogram,
    /// Seconds spent in each phase of the log's batch commits (encode the
    /// entries, sign the tree head, write, fdatasync, reply with proofs).
    pub log_commit_phase_seconds: prometheus::CounterVec,
    /// Authentication failures by code (unauthenticated, stale_timestamp).
    pub auth_failures: IntCounterVec,
    /// Diagnostic lines dropped because stderr was not read (`stderr`).
    pub stderr_lines_dropped: prometheus::IntCounter,
    /// Requests refused by a key's rate limit, by key id (configured keys
    /// only, so the label set is bounded).
    pub rate_limited: IntCounterVec,
    /// Open client connections (TCP accepted, not yet closed).
    pub connections: IntGauge,
    /// Connections closed by the server, by reason (a deadline's phase,
    /// eviction at the cap, per-source limit).
    pub connections_closed: IntCounterVec,
    /// Requests refused because a memory or concurrency budget was spent.
    pub budget_refusals: IntCounterVec,
    /// Body bytes buffered for requests not yet handled to completion.
    pub body_bytes_buffered: IntGauge,
    /// Response bytes queued for clients that have not read them yet.
    pub response_bytes_queued: IntGauge,
    /// Revocations recorded by this replica, by class and RFC 5280 reason.
    pub revocations: IntCounterVec,
    /// Revoked leaves listed for a class (including expired ones).
    pub revoked_certificates: GaugeVec,
    /// thisUpdate / nextUpdate (Unix seconds) of each CRL served, by class
    /// and signing key label.
    pub crl_this_update: GaugeVec,
    pub crl_next_update: GaugeVec,
    /// CRL refreshes that failed (the previous CRL is served meanwhile).
    pub crl_failures: IntCounterVec,
    /// OCSP answers by class and status (good, revoked, unknown, or the
    /// error status sent).
    pub ocsp_responses: IntCounterVec,
    /// notAfter (Unix seconds) of every root and intermediate the class
    /// state names, by class, role, status and key label (see
    /// [`Metrics::set_ca_certificates`]).
    ca_certificate_expiry: GaugeVec,
    /// The label sets of `ca_certificate_expiry` per class, so that a
    /// certificate the state no longer names loses its series.
    ca_certificate_series: Mutex<BTreeMap<String, Vec<[String; 3]>>>,
    /// The longest leaf lifetime each class's policy allows: the alert on
    /// an active intermediate compares its expiry with twice this, as
    /// `ca-server status` does.
    pub class_max_ttl: GaugeVec,
    /// 1 when the last readiness probe (`/readyz`, also run by each scrape)
    /// passed, else 0.
    pub ready: IntGauge,
    /// 1 while the issuance log's last batch was written, else 0.
    pub log_healthy: IntGauge,
    /// 1 while a class is suspended (not issuing), else 0.
    class_suspended: IntGaugeVec,
    /// Bumped at every HSM error, so that a cached readiness answer older
    /// than the last failure is not reused.
    pub hsm_failure_epoch: std::sync::atomic::AtomicU64,
}

/// The phases of a log batch commit, in order (`log_commit_phase_seconds_total`):
/// `gather` waits for entries being signed right now (`log::writer::GATHER`),
/// `sign` runs while the entries' fdatasync does, and `sync` is what is left
/// of the fdatasync after it; `head` writes the tree head record.
pub const LOG_COMMIT_PHASES: [&str; 7] =
    ["gather", "encode", "write", "sign", "sync", "head", "reply"];

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        Metrics::new().unwrap_or_else(|e| panic!("metric definitions are static: {e}"))
    })
}

impl Metrics {
    fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new_custom(Some("trellis".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by endpoint and status",
            ),
            &["endpoint", "status"],
        )?;
        let issued = IntCounterVec::new(
            Opts::new(
                "certificates_issued_total",
                "Certificates issued by class and profile",
            ),
            &["class", "profile"],
        )?;
        let denied = IntCounterVec::new(
            Opts::new("denials_total", "Requests denied, by class and reason code"),
            &["class", "reason"],
        )?;
        let hsm_sign_seconds = HistogramVec::new(
            HistogramOpts::new(
                "hsm_sign_seconds",
                "Time the HSM took to sign one certificate",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["class"],
        )?;
        let pipeline_seconds = HistogramVec::new(
            HistogramOpts::new(
                "pipeline_seconds",
                "Issuance pipeline time, request body to response",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["endpoint"],
        )?;
        let in_flight = IntGauge::new("in_flight_requests", "Requests being handled")?;
        let hsm_errors = IntCounterVec::new(
            Opts::new("hsm_errors_total", "HSM errors by kind"),
            &["kind"],
        )?;
        let log_batch_entries = Histogram::with_opts(
            HistogramOpts::new(
                "log_batch_entries",
                "Entries per issuance-log group commit (one fsync, one tree head)",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
            ]),
        )?;
        let log_commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "log_commit_seconds",
                "Time to write, sign and fsync one issuance-log batch",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let log_commit_phase_seconds = prometheus::CounterVec::new(
            Opts::new(
                "log_commit_phase_seconds_total",
                "Seconds spent in each phase of the issuance log's batch commits",
            ),
            &["phase"],
        )?;
        for phase in LOG_COMMIT_PHASES {
            log_commit_phase_seconds.with_label_values(&[phase]);
        }
        registry.register(Box::new(log_commit_phase_seconds.clone()))?;
        let stderr_lines_dropped = prometheus::IntCounter::new(
            "stderr_lines_dropped_total",
            "Diagnostic lines dropped because stderr was not read",
        )?;
        let auth_failures = IntCounterVec::new(
            Opts::new("auth_failures_total", "Authentication failures by code"),
            &["code"],
        )?;
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "rate_limited_total",
                "Requests refused by their key's rate limit",
            ),
            &["key_id"],
        )?;
        let connections = IntGauge::new("connections_open", "Open client connections")?;
        let connections_closed = IntCounterVec::new(
            Opts::new(
                "connections_closed_total",
                "Connections closed by the server, by reason",
            ),
            &["reason"],
        )?;
        let budget_refusals = IntCounterVec::new(
            Opts::new(
                "budget_refusals_total",
                "Requests refused because a memory or concurrency budget was spent",
            ),
            &["budget"],
        )?;
        for budget in BUDGETS {
            budget_refusals.with_label_values(&[budget]);
        }
        let body_bytes_buffered = IntGauge::new(
            "body_buffered_bytes",
            "Request body bytes buffered by requests in progress",
        )?;
        let response_bytes_queued = IntGauge::new(
            "response_queued_bytes",
            "Response bytes queued for clients that have not read them yet",
        )?;
        let revocations = IntCounterVec::new(
            Opts::new(
                "revocations_total",
                "Revocations recorded in this replica's log, by class and reason",
            ),
            &["class", "reason"],
        )?;
        let revoked_certificates = GaugeVec::new(
            Opts::new("revoked_certificates", "Revoked leaves listed for a class"),
            &["class"],
        )?;
        let crl_this_update = GaugeVec::new(
            Opts::new(
                "crl_this_update_timestamp_seconds",
                "thisUpdate of the CRL served, Unix seconds",
            ),
            &["class", "issuer"],
        )?;
        let crl_next_update = GaugeVec::new(
            Opts::new(
                "crl_next_update_timestamp_seconds",
                "nextUpdate of the CRL served, Unix seconds",
            ),
            &["class", "issuer"],
        )?;
        let crl_failures = IntCounterVec::new(
            Opts::new(
                "crl_refresh_failures_total",
                "CRL refreshes that failed (the previous CRL is served meanwhile)",
            ),
            &["class"],
        )?;
        let ocsp_responses = IntCounterVec::new(
            Opts::new("ocsp_responses_total", "OCSP answers by class and status"),
            &["class", "status"],
        )?;
        let ca_certificate_expiry = GaugeVec::new(
            Opts::new(
                "ca_certificate_expiry_timestamp_seconds",
                "notAfter of each class root and intermediate, Unix seconds",
            ),
            &["class", "role", "status", "key"],
        )?;
        let class_max_ttl = GaugeVec::new(
            Opts::new(
                "class_max_ttl_seconds",
                "Longest leaf lifetime the class policy allows",
            ),
            &["class"],
        )?;
        let ready = IntGauge::new(
            "ready",
            "1 when the last readiness probe (HSM, log, classes) passed",
        )?;
        let log_healthy = IntGauge::new(
            "log_healthy",
            "1 while the issuance log's last batch was written",
        )?;
        let class_suspended = IntGaugeVec::new(
            Opts::new(
                "class_suspended",
                "1 while the class is not issuing (its active intermediate cannot be loaded)",
            ),
            &["class"],
        )?;
        registry.register(Box::new(ca_certificate_expiry.clone()))?;
        registry.register(Box::new(class_max_ttl.clone()))?;
        registry.register(Box::new(ready.clone()))?;
        registry.register(Box::new(log_healthy.clone()))?;
        registry.register(Box::new(class_suspended.clone()))?;
        registry.register(Box::new(revocations.clone()))?;
        registry.register(Box::new(revoked_certificates.clone()))?;
        registry.register(Box::new(crl_this_update.clone()))?;
        registry.register(Box::new(crl_next_update.clone()))?;
        registry.register(Box::new(crl_failures.clone()))?;
        registry.register(Box::new(ocsp_responses.clone()))?;
        for c in [
            &auth_failures,
            &rate_limited,
            &connections_closed,
            &budget_refusals,
        ] {
            registry.register(Box::new(c.clone()))?;
        }
        for g in [&connections, &body_bytes_buffered, &response_bytes_queued] {
            registry.register(Box::new(g.clone()))?;
        }
        registry.register(Box::new(stderr_lines_dropped.clone()))?;
        registry.register(Box::new(log_batch_entries.clone()))?;
        registry.register(Box::new(log_commit_seconds.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(issued.clone()))?;
        registry.register(Box::new(denied.clone()))?;
        registry.register(Box::new(hsm_sign_seconds.clone()))?;
        registry.register(Box::new(pipeline_seconds.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(hsm_errors.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            issued,
            denied,
            hsm_sign_seconds,
            pipeline_seconds,
            in_flight,
            hsm_errors,
            log_batch_entries,
            log_commit_seconds,
            log_commit_phase_seconds,
            auth_failures,
            stderr_lines_dropped,
            rate_limited,
            connections,
            connections_closed,
            budget_refusals,
            body_bytes_buffered,
            response_bytes_queued,
            revocations,
            revoked_certificates,
            crl_this_update,
            crl_next_update,
            crl_failures,
            ocsp_responses,
            ca_certificate_expiry,
            ca_certificate_series: Mutex::new(BTreeMap::new()),
            class_max_ttl,
            ready,
            log_healthy,
            class_suspended,
            hsm_failure_epoch: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The CA certificates of `class` now: `([role, status, key], notAfter
    /// in Unix seconds)` each. Series of certificates no longer listed are
    /// removed.
    pub fn set_ca_certificates(&self, class: &str, certificates: &[([&str; 3], i64)]) {
        let mut series = self
            .ca_certificate_series
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now: Vec<[String; 3]> = certificates
            .iter()
            .map(|(labels, _)| labels.map(str::to_owned))
            .collect();
        for old in series.get(class).into_iter().flatten() {
            if !now.contains(old) {
                let [role, status, key] = old;
                let _ = self
                    .ca_certificate_expiry
                    .remove_label_values(&[class, role, status, key]);
            }
        }
        for ([role, status, key], not_after) in certificates {
            self.ca_certificate_expiry
                .with_label_values(&[class, role, status, key])
                .set(*not_after as f64);
        }
        series.insert(class.to_owned(), now);
    }

    /// Which of `classes` are suspended now (the keys of `suspended`).
    pub fn set_suspended<'a>(
        &self,
        classes: impl IntoIterator<Item = &'a str>,
        suspended: &BTreeMap<String, String>,
    ) {
        for class in classes {
            self.class_suspended
                .with_label_values(&[class])
                .set(i64::from(suspended.contains_key(class)));
        }
    }

    /// Register another collector (the issuance log adds its own).
    pub fn register(
        &self,
        collector: Box<dyn prometheus::core::Collector>,
    ) -> prometheus::Result<()> {
        self.registry.register(collector)
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Set the CA certificate gauges of `classes` from what `ca-server status`
/// reports ([`crate::cmd::status::report`]: the active root and every
/// intermediate of the class state), plus the other roots the class still
/// publishes (a prepared successor, a retired predecessor), and each
/// class's longest leaf lifetime. Called at start and whenever classes
/// reload. When the state cannot be read, the previous series stay and the
/// problem is traced.
pub fn export_ca_certificates<'a>(
    config: &crate::config::Config,
    policies: &policies::PolicySet,
    classes: impl IntoIterator<Item = &'a str>,
) {
    use crate::hierarchy::{read_pem_cert, ClassState, IntermediateStatus};
    let m = metrics();
    let report = match crate::cmd::status::report(config, time::OffsetDateTime::now_utc()) {
        Ok(report) => report,
        Err(e) => {
            tracing::warn!(
                event = "expiry_metrics_failed",
                "{e:#}; keeping the previous expiry metrics"
            );
            return;
        }
    };
    let state = crate::state::StateDir::new(&config.state_dir);
    let status = |s: IntermediateStatus| match s {
        IntermediateStatus::Active => "active",
        IntermediateStatus::Prepared => "prepared",
        IntermediateStatus::Retired => "retired",
    };
    for class in classes {
        if let Some(policy) = policies.get(class) {
            m.class_max_ttl
                .with_label_values(&[class])
                .set(policy.max_ttl().as_secs_f64());
        }
        let Some(hierarchy) = report
            .iter()
            .find(|r| r.class == class)
            .and_then(|r| r.hierarchy.as_ref())
        else {
            continue;
        };
        let record = match ClassState::read(&state, class) {
            Ok(record) => record,
            Err(e) => {
                tracing::warn!(event = "expiry_metrics_failed", class = %class, "{e}; keeping the previous expiry metrics");
                continue;
            }
        };
        let mut series: Vec<(&str, &str, String, i64)> = vec![(
            "root",
            "active",
            record.root_key.clone(),
            hierarchy.root_not_after.unix_timestamp(),
        )];
        for label in record
            .published_roots
            .iter()
            .filter(|l| **l != record.root_key)
        {
            let not_after = read_pem_cert(&state.root_by_label(class, label))
                .ok()
                .and_then(|der| {
                    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
                    Some(cert.validity().not_after.timestamp())
                });
            let Some(not_after) = not_after else {
                tracing::warn!(event = "expiry_metrics_failed", class = %class, root = %label, "published root unreadable");
                continue;
            };
            // The previous root stays published after activation until it
            // is retired; any other published root is the prepared successor.
            let role_status = if record.cross_signed_by.as_deref() == Some(label.as_str()) {
                "retired"
            } else {
                "prepared"
            };
            series.push(("root", role_status, label.clone(), not_after));
        }
        for int in &hierarchy.intermediates {
            series.push((
                "intermediate",
                status(int.status),
                int.key.clone(),
                int.not_after.unix_timestamp(),
            ));
        }
        let labelled: Vec<([&str; 3], i64)> = series
            .iter()
            .map(|(role, status, key, not_after)| ([*role, *status, key.as_str()], *not_after))
            .collect();
        m.set_ca_certificates(class, &labelled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(m: &Metrics, name: &str) -> Vec<String> {
        m.render()
            .lines()
            .filter(|l| l.starts_with(name))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn ca_certificates_replace_the_class_series() {
        let m = Metrics::new().expect("metrics");
        let name = "trellis_ca_certificate_expiry_timestamp_seconds";
        m.set_ca_certificates(
            "db",
            &[
                (["root", "active", "db-root-1"], 2_000_000_000),
                (["intermediate", "active", "db-int-1"], 1_800_000_000),
            ],
        );
        m.set_ca_certificates("api", &[(["root", "active", "api-root-1"], 2_100_000_000)]);
        assert_eq!(lines(&m, name).len(), 3, "{:?}", lines(&m, name));
        // A rotation: the old intermediate retired, a new one active.
        m.set_ca_certificates(
            "db",
            &[
                (["root", "active", "db-root-1"], 2_000_000_000),
                (["intermediate", "retired", "db-int-1"], 1_800_000_000),
                (["intermediate", "active", "db-int-2"], 1_900_000_000),
            ],
        );
        let now = lines(&m, name);
        assert_eq!(now.len(), 4, "{now:?}");
        assert!(now.contains(&format!(
            "{name}{{class=\"db\",key=\"db-int-1\",role=\"intermediate\",status=\"retired\"}} 1800000000"
        )));
        assert!(!now
            .iter()
            .any(|l| l.contains("db-int-1") && l.contains("active")));
        // Forgotten: gone.
        m.set_ca_certificates("db", &[(["root", "active", "db-root-1"], 2_000_000_000)]);
        assert_eq!(lines(&m, name).len(), 2);
    }

    #[test]
    fn known_labels_start_at_zero_and_suspension_is_per_class() {
        let m = Metrics::new().expect("metrics");
        for budget in BUDGETS {
            assert!(
                lines(&m, "trellis_budget_refusals_total").contains(&format!(
                    "trellis_budget_refusals_total{{budget=\"{budget}\"}} 0"
                ))
            );
        }
        let mut suspended = BTreeMap::new();
        suspended.insert("db".to_owned(), "why".to_owned());
        m.set_suspended(["db", "api"], &suspended);
        let now = lines(&m, "trellis_class_suspended");
        assert!(now.contains(&"trellis_class_suspended{class=\"db\"} 1".to_owned()));
        assert!(now.contains(&"trellis_class_suspended{class=\"api\"} 0".to_owned()));
    }
}
