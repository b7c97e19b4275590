//! The sidecar's CRL refresh: for its own class and every `trust` class,
//! fetch the class's CRLs (`GET /v1/classes/{class}/crl?format=pem`, with
//! `If-None-Match`), verify each against the class's CA certificates
//! ([`crate::crl`]), and install what verified:
//!
//! - a trust class's CRLs go to `trust/<class>.crl.pem`, next to its bundle,
//!   written like the bundle (atomic, the certificate files' mode and owner,
//!   only when the content changed); the caller runs the reload action when
//!   a file changed;
//! - the own class's CRLs are kept in memory (and written too when the own
//!   class is also a trust class) to learn whether the installed
//!   certificate was revoked.
//!
//! The CA certificates of a class are its pinned roots (the pins of
//! [`crate::pins`]; a class not pinned yet is skipped until the next
//! renewal or bundle refresh pins it), every certificate of
//! `GET /v1/classes/{class}/chain` that chains to one of them (fetched when
//! a CRL names an issuer not yet known, at most once per refresh, and kept
//! for the life of the process), and for the own class the intermediates of
//! the installed chain. A CRL that cannot be verified is not installed: it
//! is logged and counted (`trellis_client_crl_refused_total{class}`) and
//! the installed CRL of the same issuer stays ([`crate::crl::merge`]); a
//! class whose answer cannot be used at all (unreachable CA, malformed PEM,
//! a write error) keeps its file as it was and counts
//! `trellis_client_crl_refresh_failures_total{class}`.
//!
//! The ETag of the last answer is sent with the next request, also when a
//! CRL of it was refused: the CA re-issues its CRLs at least hourly and at
//! every revocation, and a changed set is judged afresh.
//!
//! The signers are learnt from `/chain?which=all`: every intermediate the
//! class state still names (active, prepared, retired with live leaves),
//! each accepted only when it chains to a pinned root. A CRL whose signer is
//! still unknown (a CA too old to answer `which=all`) is not installed
//! (logged at warning level, counted), and that intermediate's leaves are
//! accepted with unknown status by the library ([`crate::tls`]).

use std::collections::HashMap;

use rustls_pki_types::CertificateDer;
use thiserror::Error;

use crate::api::{ApiClient, ApiError, CrlAnswer};
use crate::config::Settings;
use crate::crl::{self, CaSet, Crl, CrlError, Refusal};
use crate::metrics::Metrics;
use crate::pins::PinStore;
use crate::renew::FailureKind;
use crate::store;

/// Why the CRLs of a class could not be refreshed. `Display` is one line.
#[derive(Debug, Clone, Error)]
pub enum CrlRefreshError {
    /// The CA could not be asked, or said no.
    #[error("CRL of class '{class}': {source}")]
    Fetch {
        /// The class.
        class: String,
        /// What the CA client reported.
        source: ApiError,
    },
    /// The answer is not CRL PEM text.
    #[error("CRL of class '{class}': {source}")]
    Malformed {
        /// The class.
        class: String,
        /// What is wrong with it.
        source: CrlError,
    },
    /// The CRL file could not be written.
    #[error("CRL of class '{class}': {detail}")]
    Write {
        /// The class.
        class: String,
        /// The store's error.
        detail: String,
    },
    /// The verification task failed.
    #[error("CRL of class '{class}': check task: {detail}")]
    Task {
        /// The class.
        class: String,
        /// What happened to it.
        detail: String,
    },
}

impl CrlRefreshError {
    /// How to retry: like the CA client's errors; a malformed answer or a
    /// failed write is transient.
    pub fn kind(&self) -> FailureKind {
        match self {
            CrlRefreshError::Fetch { source, .. } => source.kind(),
            _ => FailureKind::Transient,
        }
    }

    /// A short stable label (`connect`, `not_found`, `malformed_crl`, …).
    pub fn reason(&self) -> String {
        match self {
            CrlRefreshError::Fetch { source, .. } => source.reason(),
            CrlRefreshError::Malformed { .. } => "malformed_crl".into(),
            CrlRefreshError::Write { .. } => "write".into(),
            CrlRefreshError::Task { .. } => "internal".into(),
        }
    }

    /// The server's `Retry-After`.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            CrlRefreshError::Fetch { source, .. } => source.retry_after(),
            _ => None,
        }
    }

    /// Whether the CA answered 404: it publishes no CRL there (a CA
    /// without revocation support, or a class it does not know).
    pub fn not_served(&self) -> bool {
        matches!(
            self,
            CrlRefreshError::Fetch {
                source: ApiError::Status { status: 404, .. },
                ..
            }
        )
    }

    /// The class.
    pub fn class(&self) -> &str {
        match self {
            CrlRefreshError::Fetch { class, .. }
            | CrlRefreshError::Malformed { class, .. }
            | CrlRefreshError::Write { class, .. }
            | CrlRefreshError::Task { class, .. } => class,
        }
    }
}

/// What one class needs between refreshes.
#[derive(Debug, Default)]
struct ClassState {
    /// The ETag of the installed set, when all of it was installed.
    etag: Option<String>,
    /// The installed CRLs (the file's content for a trust class).
    installed: Vec<Crl>,
    /// Whether `installed` was read from the file (once per process).
    loaded: bool,
    /// The CA certificates its CRLs may be signed by.
    cas: Option<CaSet>,
}

/// The outcome of one refresh ([`CrlRefresher::refresh`]).
#[derive(Debug, Default)]
pub struct Round {
    /// Trust classes whose CRL file changed.
    pub changed: Vec<String>,
    /// Classes that could not be refreshed (their files stay).
    pub failures: Vec<CrlRefreshError>,
    /// The earliest nextUpdate of every installed CRL.
    pub earliest_next_update: Option<i64>,
    /// The CRL that lists the installed certificate, by its issuer.
    pub own_revoked_by: Option<String>,
    /// Classes skipped because no root of theirs is pinned yet.
    pub skipped: usize,
}

/// What the refresh is asked to do.
#[derive(Debug)]
pub struct Job<'a> {
    /// The own class, the trust classes (their CRL files are written), the
    /// files' layout and the configured root pins.
    pub settings: &'a Settings,
    /// The pinned roots.
    pub pins: &'a PinStore,
    /// The installed leaf and its intermediates, when there is one.
    pub own: Option<(&'a CertificateDer<'static>, &'a [CertificateDer<'static>])>,
    /// Now, Unix seconds.
    pub now: i64,
}

/// The CRL state of every class, kept between refreshes.
#[derive(Debug, Default)]
pub struct CrlRefresher {
    classes: HashMap<String, ClassState>,
}

impl CrlRefresher {
    /// Nothing known yet.
    pub fn new() -> CrlRefresher {
        CrlRefresher::default()
    }

    /// The installed CRLs of `class`.
    pub fn installed(&self, class: &str) -> &[Crl] {
        self.classes
            .get(class)
            .map_or(&[][..], |s| s.installed.as_slice())
    }

    /// Refreshes every class once (see the module documentation).
    pub async fn refresh(&mut self, api: &ApiClient, job: &Job<'_>, metrics: &Metrics) -> Round {
        let own_class = job.settings.class.as_str();
        let trust = &job.settings.trust;
        let mut classes = vec![own_class.to_owned()];
        for class in trust {
            if !classes.contains(class) {
                classes.push(class.clone());
            }
        }
        let mut round = Round::default();
        for class in classes {
            let configured = job.settings.root_pins(&class);
            let Some(roots) = job.pins.roots(&class, configured) else {
                tracing::debug!(class = %class, "no pinned roots yet: CRL refresh skipped");
                round.skipped += 1;
                continue;
            };
            let write = trust.contains(&class);
            let own_chain = if class == own_class {
                job.own.map_or(&[][..], |(_, chain)| chain)
            } else {
                &[][..]
            };
            match self
                .refresh_class(api, job, &class, roots, own_chain, write, metrics)
                .await
            {
                Ok(changed) => {
                    if changed {
                        round.changed.push(class.clone());
                    }
                }
                Err(e) => {
                    metrics.crl_refresh_failed(&class);
                    round.failures.push(e);
                }
            }
            let installed = self.installed(&class);
            if let Some(next) = crl::earliest_next_update(installed) {
                metrics.set_crl_next_update(&class, next);
                round.earliest_next_update =
                    Some(round.earliest_next_update.map_or(next, |e| e.min(next)));
            }
            if class == own_class {
                if let Some((leaf, _)) = job.own {
                    round.own_revoked_by = crl::revoking(installed, leaf).map(|c| c.issuer.clone());
                }
            }
        }
        round
    }

    #[allow(clippy::too_many_arguments)]
    async fn refresh_class(
        &mut self,
        api: &ApiClient,
        job: &Job<'_>,
        class: &str,
        roots: Vec<CertificateDer<'static>>,
        own_chain: &[CertificateDer<'static>],
        write: bool,
        metrics: &Metrics,
    ) -> Result<bool, CrlRefreshError> {
        let layout = &job.settings.layout;
        let path = layout.crl_path(class);
        let state = self.classes.entry(class.to_owned()).or_default();
        if write && !state.loaded {
            state.loaded = true;
            // The file was verified when it was written; an unreadable one
            // is simply replaced.
            match store_read(&path) {
                Ok(Some(crls)) => state.installed = crls,
                Ok(None) => {}
                Err(e) => tracing::warn!(class, error = %e, "installed CRL file unusable"),
            }
        }
        if state
            .cas
            .as_ref()
            .is_none_or(|c| c.roots() != roots.as_slice())
        {
            state.cas = Some(CaSet::new(class, roots));
            state.etag = None;
        }
        let answer = api
            .crl_pem(class, state.etag.as_deref())
            .await
            .map_err(|source| CrlRefreshError::Fetch {
                class: class.to_owned(),
                source,
            })?;
        let (pem, etag) = match answer {
            CrlAnswer::NotModified => return Ok(false),
            CrlAnswer::Fresh { pem, etag } => (pem, etag),
        };
        let served = crl::decode_pem(&pem).map_err(|source| CrlRefreshError::Malformed {
            class: class.to_owned(),
            source,
        })?;

        let mut cas = state
            .cas
            .clone()
            .unwrap_or_else(|| CaSet::new(class, Vec::new()));
        let now = job.now;
        for ca in own_chain {
            cas.add(ca, now);
        }
        if served.iter().any(|c| !cas.knows_issuer_of(c)) {
            match api.chain_all(class).await {
                Ok(chain) => {
                    for ca in &chain {
                        cas.add(ca, now);
                    }
                }
                Err(e) => tracing::warn!(class, error = %e, "class chain not fetched"),
            }
        }
        let installed = state.installed.clone();
        let owned_class = class.to_owned();
        let (cas, merged) = tokio::task::spawn_blocking(move || {
            let verdicts: Vec<(Crl, Result<(), Refusal>)> = served
                .into_iter()
                .map(|c| {
                    let v = crl::verify(&c, &cas);
                    (c, v)
                })
                .collect();
            (cas, crl::merge(&installed, verdicts))
        })
        .await
        .map_err(|e| CrlRefreshError::Task {
            class: owned_class,
            detail: e.to_string(),
        })?;
        state.cas = Some(cas);
        for refusal in &merged.refused {
            metrics.crl_refused(class);
            match refusal {
                // An intermediate this process could not learn.
                Refusal::UnknownIssuer { .. } => {
                    tracing::warn!(class, "CRL not installed: {refusal}")
                }
                _ => tracing::error!(class, "CRL refused (not installed): {refusal}"),
            }
        }
        // The ETag is kept either way: a refused CRL is judged again when
        // the CA's set changes (at least at every re-issue), not at every
        // refresh.
        state.etag = etag;
        if merged.crls.is_empty() {
            // Everything refused and nothing installed before: nothing to
            // write (the refusals were reported).
            return Ok(false);
        }
        let changed = if write {
            store::write_if_changed_in(
                &layout.dir,
                &path,
                crl::encode_pem(&merged.crls).as_bytes(),
                layout.cert_attrs,
            )
            .map_err(|e| CrlRefreshError::Write {
                class: class.to_owned(),
                detail: e.to_string(),
            })?
        } else {
            merged.crls != state.installed
        };
        if changed {
            let listed: usize = merged.crls.iter().map(Crl::len).sum();
            tracing::info!(
                class,
                crls = merged.crls.len(),
                revoked = listed,
                "CRLs updated"
            );
            for c in merged.crls.iter().filter(|c| c.next_update <= now) {
                tracing::warn!(
                    class,
                    issuer = %c.issuer,
                    next_update = %crate::verify::rfc3339(c.next_update),
                    "the CA serves a CRL past its nextUpdate (installed anyway: it still lists what it lists)"
                );
            }
        }
        state.installed = merged.crls;
        Ok(changed && write)
    }
}

/// The CRLs of an installed file (`None`: no file).
fn store_read(path: &std::path::Path) -> Result<Option<Vec<Crl>>, String> {
    match crate::pins::read_no_follow(path, crl::MAX_CRL_PEM_BYTES as u64) {
        Ok(None) => Ok(None),
        Ok(Some(bytes)) => crl::decode_pem(&bytes).map(Some).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    //! One refresh after another against a small HTTPS server whose CRL
    //! answers the test chooses.

    use super::*;
    use crate::crl::testcrl::crl;
    use crate::pem::testca::TestCa;
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use std::sync::{Arc, Mutex};

    /// What the server answers: per class, (status, ETag, body); and every
    /// request seen (path and query, If-None-Match).
    #[derive(Default)]
    struct Script {
        crls: HashMap<String, (u16, String, Vec<u8>)>,
        chains: HashMap<String, Vec<u8>>,
        seen: Vec<(String, Option<String>)>,
    }

    async fn serve(script: Arc<Mutex<Script>>) -> (String, CertificateDer<'static>) {
        let (listener, acceptor, url, der) = crate::api::local_tls_listener().await;
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, script) = (acceptor.clone(), script.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let script = script.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(&script, &req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        (url, der)
    }

    fn answer(
        script: &Mutex<Script>,
        req: &Request<hyper::body::Incoming>,
    ) -> Response<Full<Bytes>> {
        let mut s = script.lock().unwrap_or_else(|p| p.into_inner());
        let target = req
            .uri()
            .path_and_query()
            .map_or_else(String::new, |p| p.to_string());
        let inm = req
            .headers()
            .get("if-none-match")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        s.seen.push((target.clone(), inm.clone()));
        let parts: Vec<&str> = req.uri().path().split('/').collect();
        let (status, etag, body) = match parts.as_slice() {
            ["", "v1", "classes", class, "crl"] if req.uri().query() == Some("format=pem") => {
                match s.crls.get(*class) {
                    Some((200, etag, _)) if inm.as_deref() == Some(etag.as_str()) => {
                        (304, etag.clone(), Vec::new())
                    }
                    Some((status, etag, body)) => (*status, etag.clone(), body.clone()),
                    None => (
                        404,
                        String::new(),
                        br#"{"error":{"code":"not_found","message":"no"}}"#.to_vec(),
                    ),
                }
            }
            ["", "v1", "classes", class, "chain"] if req.uri().query() == Some("which=all") => {
                match s.chains.get(*class) {
                    Some(body) => (200, String::new(), body.clone()),
                    None => (404, String::new(), Vec::new()),
                }
            }
            _ => (404, String::new(), Vec::new()),
        };
        let mut resp = Response::builder().status(status);
        if !etag.is_empty() {
            resp = resp.header("etag", etag);
        }
        resp.body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    }

    fn pem(ders: &[Vec<u8>]) -> Vec<u8> {
        let crls: Vec<Crl> = ders
            .iter()
            .map(|d| Crl::parse(d.clone(), 1).expect("crl"))
            .collect();
        crl::encode_pem(&crls).into_bytes()
    }

    fn serial(der: &[u8]) -> Vec<u8> {
        use x509_parser::prelude::{FromDer, X509Certificate};
        X509Certificate::from_der(der)
            .expect("cert")
            .1
            .raw_serial()
            .to_vec()
    }

    struct Fixture {
        _tmp: tempfile::TempDir,
        settings: Settings,
        api: ApiClient,
        script: Arc<Mutex<Script>>,
        db: TestCa,
        peer: TestCa,
        metrics: Metrics,
    }

    async fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().to_path_buf();
        let script = Arc::new(Mutex::new(Script::default()));
        let (url, root) = serve(script.clone()).await;
        std::fs::write(
            dir.join("ca.pem"),
            ca_proto::pem::encode(ca_proto::pem::Label::Certificate, &root),
        )
        .expect("root");
        let secret = dir.join("secret.hex");
        std::fs::write(&secret, "ab".repeat(32)).expect("secret");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("mode");
        let text = format!(
            "ca = [\"{url}\"]\nca_root = \"ca.pem\"\nclass = \"db\"\nkey_id = \"db\"\n\
             key_secret_file = \"secret.hex\"\ndns = [\"a.db.internal\"]\nout = \"out\"\n\
             trust = [\"api\"]\n"
        );
        let raw = crate::config::RawConfig::from_toml(&text, std::path::Path::new("t"), &dir)
            .expect("toml");
        let settings = Settings::from_raw(raw).expect("settings");
        let api = ApiClient::new(
            settings.servers.clone(),
            &[root],
            "db".into(),
            secret,
            ca_proto::secret::SecretFileMode::Strict,
        )
        .expect("client");
        let (db, peer) = (TestCa::new("db"), TestCa::new("api"));
        let mut pins = PinStore::load(&settings.state_dir).expect("pins");
        pins.update("db", &[], std::slice::from_ref(&db.root_der));
        pins.update("api", &[], std::slice::from_ref(&peer.root_der));
        pins.save(&settings.layout.dir, settings.layout.cert_attrs)
            .expect("save");
        {
            let mut s = script.lock().expect("lock");
            for (class, ca) in [("db", &db), ("api", &peer)] {
                s.chains.insert(
                    class.into(),
                    ca_proto::pem::encode_all(
                        ca_proto::pem::Label::Certificate,
                        [&ca.int_der, &ca.root_der],
                    )
                    .into_bytes(),
                );
            }
        }
        Fixture {
            _tmp: tmp,
            settings,
            api,
            script,
            db,
            peer,
            metrics: Metrics::new().expect("metrics"),
        }
    }

    impl Fixture {
        fn serve_crl(&self, class: &str, status: u16, etag: &str, body: Vec<u8>) {
            let mut s = self.script.lock().expect("lock");
            s.crls.insert(class.into(), (status, etag.into(), body));
        }

        fn seen(&self) -> Vec<(String, Option<String>)> {
            std::mem::take(&mut self.script.lock().expect("lock").seen)
        }

        async fn round(
            &self,
            refresher: &mut CrlRefresher,
            own: Option<(&CertificateDer<'static>, &[CertificateDer<'static>])>,
        ) -> Round {
            let pins = PinStore::load(&self.settings.state_dir).expect("pins");
            let job = Job {
                settings: &self.settings,
                pins: &pins,
                own,
                now: crate::unix_now(),
            };
            refresher.refresh(&self.api, &job, &self.metrics).await
        }

        fn file(&self) -> Option<String> {
            std::fs::read_to_string(self.settings.layout.crl_path("api")).ok()
        }
    }

    fn leaf(ca: &TestCa) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().expect("key");
        let now = crate::unix_now();
        ca.leaf(&key, &["a.db.internal"], now - 60, now + 3600)
    }

    #[tokio::test]
    async fn crls_are_verified_written_cached_and_refused() {
        let f = fixture().await;
        let now = crate::unix_now();
        let revoked_peer = leaf(&f.peer);
        let own = leaf(&f.db);
        let own_chain = vec![f.db.int_der.clone()];
        let good = pem(&[
            crl(
                f.peer.int_issuer(),
                &[&serial(&revoked_peer)],
                now,
                now + 600,
                1,
            ),
            crl(f.peer.root_issuer(), &[], now, now + 900, 1),
        ]);
        f.serve_crl("api", 200, "\"a1\"", good.clone());
        f.serve_crl(
            "db",
            200,
            "\"d1\"",
            pem(&[crl(f.db.int_issuer(), &[], now, now + 300, 1)]),
        );
        let mut r = CrlRefresher::new();

        // 1. Both classes fetched; the api intermediate learnt from /chain;
        //    only the trust class is written; the own certificate is fine.
        let round = f.round(&mut r, Some((&own, &own_chain))).await;
        assert!(round.failures.is_empty(), "{:?}", round.failures);
        assert_eq!(round.changed, vec!["api".to_string()]);
        assert_eq!(round.own_revoked_by, None);
        assert_eq!(round.earliest_next_update, Some(now + 300));
        assert_eq!(f.file().expect("api.crl.pem").as_bytes(), good.as_slice());
        assert!(!f.settings.layout.crl_path("db").exists());
        let seen = f.seen();
        assert!(
            seen.contains(&("/v1/classes/api/chain?which=all".into(), None)),
            "{seen:?}"
        );
        assert!(
            !seen
                .iter()
                .any(|(p, _)| p.starts_with("/v1/classes/db/chain")),
            "the own intermediate came from the installed chain: {seen:?}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(f.settings.layout.crl_path("api"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644, "the trust files' mode");
        let text = f.metrics.render(now);
        assert!(
            text.contains(&format!(
                "trellis_client_crl_next_update_timestamp_seconds{{class=\"api\"}} {}",
                now + 600
            )),
            "{text}"
        );

        // 2. Unchanged: a conditional request, a 304, nothing written.
        let round = f.round(&mut r, Some((&own, &own_chain))).await;
        assert!(round.changed.is_empty() && round.failures.is_empty());
        let seen = f.seen();
        assert!(
            seen.contains(&(
                "/v1/classes/api/crl?format=pem".into(),
                Some("\"a1\"".into())
            )),
            "{seen:?}"
        );
        assert!(!seen.iter().any(|(p, _)| p.ends_with("/chain")), "{seen:?}");

        // 3. A forged intermediate CRL (same name, other key) beside a good
        //    root CRL: refused and counted; the installed one of its issuer
        //    stays; the ETag is kept (the set is judged again when it
        //    changes).
        let forged = TestCa::shaped("api", |_| {});
        f.serve_crl(
            "api",
            200,
            "\"a2\"",
            pem(&[
                crl(forged.int_issuer(), &[], now + 5, now + 600, 9),
                crl(f.peer.root_issuer(), &[], now + 5, now + 900, 2),
            ]),
        );
        let round = f.round(&mut r, None).await;
        assert!(round.failures.is_empty(), "{:?}", round.failures);
        let installed = crl::decode_pem(f.file().expect("file").as_bytes()).expect("decode");
        assert_eq!(installed.len(), 2);
        assert!(
            installed[0].lists(&serial(&revoked_peer)),
            "the previous CRL stayed"
        );
        assert_eq!(installed[1].this_update, now + 5, "the new root CRL is in");
        assert!(f
            .metrics
            .render(now)
            .contains("trellis_client_crl_refused_total{class=\"api\"} 1"));
        f.seen();
        let round = f.round(&mut r, None).await;
        assert!(round.changed.is_empty());
        let seen = f.seen();
        assert!(
            seen.contains(&(
                "/v1/classes/api/crl?format=pem".into(),
                Some("\"a2\"".into())
            )),
            "{seen:?}"
        );

        // 4. Another class's CRL (wrong issuer) and garbage: the file stays.
        let before = f.file();
        f.serve_crl(
            "api",
            200,
            "\"a3\"",
            pem(&[crl(f.db.int_issuer(), &[], now + 9, now + 600, 5)]),
        );
        let round = f.round(&mut r, None).await;
        assert!(round.changed.is_empty());
        assert_eq!(f.file(), before);
        f.serve_crl("api", 200, "\"a4\"", b"<html>oops</html>".to_vec());
        let round = f.round(&mut r, None).await;
        assert_eq!(round.failures.len(), 1);
        assert_eq!(round.failures[0].reason(), "malformed_crl");
        assert_eq!(round.failures[0].kind(), FailureKind::Transient);
        assert_eq!(f.file(), before);
        assert!(f
            .metrics
            .render(now)
            .contains("trellis_client_crl_refresh_failures_total{class=\"api\"} 1"));

        // 5. The own class's CRL lists the installed certificate.
        f.serve_crl(
            "db",
            200,
            "\"d2\"",
            pem(&[crl(
                f.db.int_issuer(),
                &[&serial(&own)],
                now + 1,
                now + 300,
                2,
            )]),
        );
        let round = f.round(&mut r, Some((&own, &own_chain))).await;
        assert_eq!(round.own_revoked_by.as_deref(), Some("CN=db intermediate"));
        assert!(!f.settings.layout.crl_path("db").exists());

        // 6. A CA without CRLs: a 404 the caller can tell apart.
        f.script.lock().expect("lock").crls.clear();
        let round = f.round(&mut r, None).await;
        assert_eq!(round.failures.len(), 2);
        assert!(round.failures.iter().all(CrlRefreshError::not_served));
        assert_eq!(round.failures[0].kind(), FailureKind::Permanent);
        assert_eq!(f.file(), before, "kept");
    }

    #[tokio::test]
    async fn a_fresh_process_keeps_the_installed_file_and_skips_unpinned_classes() {
        let f = fixture().await;
        let now = crate::unix_now();
        let old = crl(f.peer.int_issuer(), &[&[7]], now, now + 600, 3);
        std::fs::create_dir_all(&f.settings.layout.trust_dir).expect("dir");
        std::fs::write(f.settings.layout.crl_path("api"), pem(&[old])).expect("w");
        let before = f.file();
        // The CA (a lagging replica) serves an older CRL: the file stays.
        f.serve_crl(
            "api",
            200,
            "\"x\"",
            pem(&[crl(f.peer.int_issuer(), &[], now - 60, now + 600, 2)]),
        );
        f.serve_crl("db", 404, "", Vec::new());
        let mut r = CrlRefresher::new();
        let round = f.round(&mut r, None).await;
        assert!(round.changed.is_empty(), "{:?}", round.changed);
        assert_eq!(f.file(), before);

        // A class without pinned roots is skipped (and said so).
        std::fs::remove_file(f.settings.state_dir.join(crate::pins::STATE_FILE)).expect("rm");
        let round = f.round(&mut CrlRefresher::new(), None).await;
        assert_eq!(round.skipped, 2);
        assert!(round.failures.is_empty());
    }
}
