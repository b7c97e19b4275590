//! The client's own Prometheus metrics and `/healthz`, served on
//! `--metrics-listen`.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `trellis_client_cert_expiry_seconds` | gauge | seconds until notAfter (negative once expired), computed at scrape time |
//! | `trellis_client_cert_not_after_timestamp_seconds` | gauge | notAfter of the installed certificate |
//! | `trellis_client_cert_lifetime_seconds` | gauge | its total lifetime |
//! | `trellis_client_renewals_total` | counter | certificates installed |
//! | `trellis_client_renewal_failures_total{reason}` | counter | failed attempts by reason (`connect`, `policy_denied`, …) |
//! | `trellis_client_last_success_timestamp_seconds` | gauge | time of the last installed certificate |
//! | `trellis_client_reload_failures_total{reason}` | counter | failed reload actions |
//! | `trellis_client_bundle_refresh_failures_total` | counter | failed trust-bundle refreshes |
//! | `trellis_client_bundle_roots_refused_total{class}` | counter | roots of a served bundle that were neither pinned nor cross-signed by a pinned root (kept out) |
//! | `trellis_client_crl_next_update_timestamp_seconds{class}` | gauge | earliest nextUpdate of the class's installed CRLs, Unix seconds (alert when it is in the past: the CRLs are stale, see [`crate::revocation`]) |
//! | `trellis_client_crl_refresh_failures_total{class}` | counter | CRL refreshes of the class that failed (CA unreachable, malformed answer, write error) |
//! | `trellis_client_crl_refused_total{class}` | counter | CRLs served for the class that could not be verified against its CA certificates and were not installed |
//! | `trellis_client_revoked_reenrolments_total` | counter | new certificates (with new keys) installed because the previous one was revoked |
//! | `trellis_client_cert_revoked` | gauge | 1 while the installed certificate is known to be revoked, else 0 |
//!
//! `GET /healthz` answers 200 `ok` while a certificate is installed, not
//! known to be revoked, and more than 10 % of its lifetime remains, 503
//! with the reason otherwise (see [`crate::renew::health`]). `GET /metrics`
//! is the text format.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};
use tokio::net::TcpListener;

use crate::renew::Unhealthy;

/// The metrics of one client.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    expiry: Gauge,
    not_after: Gauge,
    lifetime: Gauge,
    renewals: IntCounter,
    failures: IntCounterVec,
    last_success: Gauge,
    reload_failures: IntCounterVec,
    bundle_failures: IntCounter,
    roots_refused: IntCounterVec,
    crl_next_update: GaugeVec,
    crl_failures: IntCounterVec,
    crl_refused: IntCounterVec,
    revoked_reenrolments: IntCounter,
    cert_revoked: Gauge,
    cert: Mutex<Option<(i64, i64)>>,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| -> Result<Gauge, prometheus::Error> {
            let g = Gauge::with_opts(Opts::new(name, help))?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let expiry = gauge(
            "trellis_client_cert_expiry_seconds",
            "Seconds until the installed certificate expires (negative once expired).",
        )?;
        let not_after = gauge(
            "trellis_client_cert_not_after_timestamp_seconds",
            "notAfter of the installed certificate, Unix seconds.",
        )?;
        let lifetime = gauge(
            "trellis_client_cert_lifetime_seconds",
            "Total lifetime of the installed certificate.",
        )?;
        let last_success = gauge(
            "trellis_client_last_success_timestamp_seconds",
            "When the last certificate was installed, Unix seconds.",
        )?;
        let renewals = IntCounter::with_opts(Opts::new(
            "trellis_client_renewals_total",
            "Certificates obtained and installed.",
        ))?;
        registry.register(Box::new(renewals.clone()))?;
        let failures = IntCounterVec::new(
            Opts::new(
                "trellis_client_renewal_failures_total",
                "Failed renewal attempts, by reason.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(failures.clone()))?;
        let reload_failures = IntCounterVec::new(
            Opts::new(
                "trellis_client_reload_failures_total",
                "Failed reload actions, by reason.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(reload_failures.clone()))?;
        let bundle_failures = IntCounter::with_opts(Opts::new(
            "trellis_client_bundle_refresh_failures_total",
            "Failed trust bundle refreshes.",
        ))?;
        registry.register(Box::new(bundle_failures.clone()))?;
        let roots_refused = IntCounterVec::new(
            Opts::new(
                "trellis_client_bundle_roots_refused_total",
                "Roots of a served bundle neither pinned nor cross-signed by a pinned root.",
            ),
            &["class"],
        )?;
        registry.register(Box::new(roots_refused.clone()))?;
        let crl_next_update = GaugeVec::new(
            Opts::new(
                "trellis_client_crl_next_update_timestamp_seconds",
                "Earliest nextUpdate of the class's installed CRLs, Unix seconds.",
            ),
            &["class"],
        )?;
        registry.register(Box::new(crl_next_update.clone()))?;
        let counter_vec = |name: &str, help: &str, label: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let crl_failures = counter_vec(
            "trellis_client_crl_refresh_failures_total",
            "Failed CRL refreshes, by class.",
            "class",
        )?;
        let crl_refused = counter_vec(
            "trellis_client_crl_refused_total",
            "Served CRLs that could not be verified and were not installed, by class.",
            "class",
        )?;
        let revoked_reenrolments = IntCounter::with_opts(Opts::new(
            "trellis_client_revoked_reenrolments_total",
            "New certificates with new keys installed because the previous one was revoked.",
        ))?;
        registry.register(Box::new(revoked_reenrolments.clone()))?;
        let cert_revoked = gauge(
            "trellis_client_cert_revoked",
            "1 while the installed certificate is known to be revoked.",
        )?;
        Ok(Metrics {
            crl_next_update,
            crl_failures,
            crl_refused,
            revoked_reenrolments,
            cert_revoked,
            roots_refused,
            registry,
            expiry,
            not_after,
            lifetime,
            renewals,
            failures,
            last_success,
            reload_failures,
            bundle_failures,
            cert: Mutex::new(None),
        })
    }

    fn cert_slot(&self) -> std::sync::MutexGuard<'_, Option<(i64, i64)>> {
        // A poisoned lock only means a panic elsewhere; the value is plain data.
        self.cert.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the certificate now installed (or none).
    pub fn set_certificate(&self, validity: Option<(i64, i64)>) {
        *self.cert_slot() = validity;
        if let Some((nb, na)) = validity {
            self.not_after.set(na as f64);
            self.lifetime.set((na - nb).max(0) as f64);
        }
    }

    /// A certificate was installed at `now`.
    pub fn renewal_succeeded(&self, now: i64) {
        self.renewals.inc();
        self.last_success.set(now as f64);
    }

    /// A renewal attempt failed.
    pub fn renewal_failed(&self, reason: &str) {
        self.failures.with_label_values(&[reason]).inc();
    }

    /// A reload action failed.
    pub fn reload_failed(&self, reason: &str) {
        self.reload_failures.with_label_values(&[reason]).inc();
    }

    /// A trust bundle refresh failed.
    pub fn bundle_refresh_failed(&self) {
        self.bundle_failures.inc();
    }

    /// A root of `class`'s bundle was refused.
    pub fn root_refused(&self, class: &str) {
        self.roots_refused.with_label_values(&[class]).inc();
    }

    /// The earliest nextUpdate of `class`'s installed CRLs.
    pub fn set_crl_next_update(&self, class: &str, next_update: i64) {
        self.crl_next_update
            .with_label_values(&[class])
            .set(next_update as f64);
    }

    /// A CRL refresh of `class` failed.
    pub fn crl_refresh_failed(&self, class: &str) {
        self.crl_failures.with_label_values(&[class]).inc();
    }

    /// A CRL served for `class` was refused.
    pub fn crl_refused(&self, class: &str) {
        self.crl_refused.with_label_values(&[class]).inc();
    }

    /// Whether the installed certificate is known to be revoked.
    pub fn set_revoked(&self, revoked: bool) {
        self.cert_revoked.set(if revoked { 1.0 } else { 0.0 });
    }

    /// A new certificate replaced a revoked one.
    pub fn revoked_reenrolment(&self) {
        self.revoked_reenrolments.inc();
    }

    /// Health at `now`.
    pub fn health(&self, now: i64) -> Result<(), Unhealthy> {
        match *self.cert_slot() {
            None => Err(Unhealthy::NoCertificate),
            Some(_) if self.cert_revoked.get() > 0.0 => Err(Unhealthy::Revoked),
            Some((nb, na)) => crate::renew::health(now, nb, na),
        }
    }

    /// The text exposition at `now`.
    pub fn render(&self, now: i64) -> String {
        match *self.cert_slot() {
            Some((_, na)) => self.expiry.set((na - now) as f64),
            None => self.expiry.set(0.0),
        }
        let mut buf = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

fn respond(metrics: &Metrics, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let now = crate::unix_now();
    let (status, ctype, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics.render(now),
        ),
        (&Method::GET, "/healthz") => match metrics.health(now) {
            Ok(()) => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
            Err(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("unhealthy: {why}\n"),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

/// Binds `addr` and serves `/metrics` and `/healthz` until the task is
/// dropped. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let resp = respond(&metrics, &req);
                    async move { Ok::<_, Infallible>(resp) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc);
                let _ = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await;
            });
        }
    });
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn render_and_health() {
        let m = Metrics::new().expect("metrics");
        assert_eq!(m.health(100), Err(Unhealthy::NoCertificate));
        m.set_certificate(Some((1_000, 2_000)));
        m.renewal_succeeded(1_000);
        m.renewal_failed("connect");
        m.renewal_failed("connect");
        m.renewal_failed("policy_denied");
        let text = m.render(1_500);
        assert!(
            text.contains("trellis_client_cert_expiry_seconds 500"),
            "{text}"
        );
        assert!(text.contains("trellis_client_renewals_total 1"), "{text}");
        assert!(
            text.contains("trellis_client_renewal_failures_total{reason=\"connect\"} 2"),
            "{text}"
        );
        assert!(text.contains("trellis_client_last_success_timestamp_seconds 1000"));
        assert!(m.health(1_500).is_ok());
        assert_eq!(
            m.health(1_950),
            Err(Unhealthy::ExpiresSoon { remaining: 50 })
        );
        assert!(m.health(1_950).unwrap_err().to_string().contains("10%"));
        assert_eq!(m.health(2_001), Err(Unhealthy::Expired { ago: 1 }));
        assert_eq!(
            m.health(2_001).unwrap_err().to_string(),
            "certificate expired 1 s ago"
        );
        assert!(m
            .render(2_100)
            .contains("trellis_client_cert_expiry_seconds -100"));
    }

    #[test]
    fn revocation_metrics_and_health() {
        let m = Metrics::new().expect("metrics");
        m.set_certificate(Some((1_000, 2_000)));
        m.set_crl_next_update("api", 1_700_000_000);
        m.crl_refresh_failed("api");
        m.crl_refresh_failed("api");
        m.crl_refused("db");
        m.set_revoked(true);
        assert_eq!(m.health(1_500), Err(Unhealthy::Revoked));
        assert_eq!(
            m.health(1_500).unwrap_err().to_string(),
            "certificate revoked"
        );
        m.revoked_reenrolment();
        m.set_revoked(false);
        assert!(m.health(1_500).is_ok());
        let text = m.render(1_500);
        for line in [
            "trellis_client_crl_next_update_timestamp_seconds{class=\"api\"} 1700000000",
            "trellis_client_crl_refresh_failures_total{class=\"api\"} 2",
            "trellis_client_crl_refused_total{class=\"db\"} 1",
            "trellis_client_revoked_reenrolments_total 1",
            "trellis_client_cert_revoked 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_healthz() {
        let m = Arc::new(Metrics::new().expect("metrics"));
        let (addr, task) = serve("127.0.0.1:0".parse().expect("addr"), m.clone())
            .await
            .expect("serve");
        let h = get(addr, "/healthz").await;
        assert!(h.starts_with("HTTP/1.1 503"), "{h}");
        let now = crate::unix_now();
        m.set_certificate(Some((now - 10, now + 3600)));
        let h = get(addr, "/healthz").await;
        assert!(h.starts_with("HTTP/1.1 200") && h.ends_with("ok\n"), "{h}");
        let text = get(addr, "/metrics").await;
        assert!(
            text.contains("trellis_client_cert_expiry_seconds 36"),
            "{text}"
        );
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        task.abort();
    }
}
