//! Prometheus metrics of the server, registered once per process in their
//! own registry and rendered by `GET /metrics`.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};
use std::sync::OnceLock;

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
    /// Authentication failures by code (unauthenticated, stale_timestamp).
    pub auth_failures: IntCounterVec,
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
    /// Bumped at every HSM error, so that a cached readiness answer older
    /// than the last failure is not reused.
    pub hsm_failure_epoch: std::sync::atomic::AtomicU64,
}

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
        let body_bytes_buffered = IntGauge::new(
            "body_bytes_buffered",
            "Request body bytes buffered by requests in progress",
        )?;
        let response_bytes_queued = IntGauge::new(
            "response_bytes_queued",
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
            auth_failures,
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
            hsm_failure_epoch: std::sync::atomic::AtomicU64::new(0),
        })
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
