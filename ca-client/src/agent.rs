//! The sidecar's behaviour: one renewal (key → CSR → sign → check →
//! install → reload), `--once`, and the daemon loop that keeps the files
//! fresh.
//!
//! # One renewal ([`Agent::renew`])
//!
//! 1. make sure the CA's TLS root is known (file, or pinned first contact);
//! 2. refresh the bundles: the client's own class (kept in memory, to check
//!    the issuer) and every `trust` class (written to `trust/<class>.pem`
//!    when changed);
//! 3. a new key (or, with `rotate_key = false`, the current one), a CSR,
//!    `POST /v1/sign`;
//! 4. check the answer before touching a file: the leaf carries our public
//!    key, is currently valid, was signed by the returned intermediate,
//!    which chains to a root of the class bundle; the inclusion-proof hook;
//! 5. install the generation atomically ([`crate::store::install`]), then
//!    run the reload action (its failure is reported, the files stay).
//!
//! # Daemon ([`Agent::run`])
//!
//! Every pass inspects the files; it renews when they are unusable
//! (missing, unreadable, key mismatch, issuer no longer in the bundle),
//! expired, or past the renewal point (fraction of the lifetime minus a
//! per-certificate random jitter). Failures are retried with capped
//! exponential backoff and full jitter (slowly for permanent errors), each
//! logged once with its reason, while the current certificate stays in
//! place, also after it expired. Bundles are refreshed on every renewal and
//! at least hourly. Between passes it sleeps until the next event, at most
//! [`CHECK_INTERVAL`], and stops on the shutdown future (SIGTERM/SIGINT in
//! the binary).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ca_proto::native::{format_duration, SignRequest};
use rustls_pki_types::CertificateDer;
use tokio::time::Instant;

use crate::api::{fetch_pinned_root, ApiClient, ApiError};
use crate::config::{CaTrust, Settings};
use crate::inspect::{inspect, Installed};
use crate::keys::LocalKey;
use crate::metrics::Metrics;
use crate::pem::{chains_to, encode, encode_certs, facts, issued_by, parse_certs, CertFacts};
use crate::reload::{environment, Event};
use crate::renew::{if_needed, renewal_point, retry_delay, Backoff, Decision, FailureKind};
use crate::store::{self, Material};

/// Longest sleep between two looks at the files.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// Trust bundles are refreshed at least this often.
pub const BUNDLE_REFRESH: Duration = Duration::from_secs(3600);
/// Retry interval of a failed bundle refresh (when no renewal is due).
pub const BUNDLE_RETRY: Duration = Duration::from_secs(60);

/// A failed attempt: how to retry, a metrics label, a one-line message.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Transient or permanent.
    pub kind: FailureKind,
    /// Stable label (`connect`, `policy_denied`, `untrusted_chain`, …).
    pub reason: String,
    /// One line for people.
    pub message: String,
    /// The server's `Retry-After`.
    pub retry_after: Option<Duration>,
}

impl Failure {
    fn new(kind: FailureKind, reason: &str, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            reason: reason.to_owned(),
            message: message.into(),
            retry_after: None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Failure {
        Failure {
            kind: e.kind(),
            reason: e.reason(),
            message: e.to_string(),
            retry_after: e.retry_after(),
        }
    }
}

/// The result of a successful renewal.
#[derive(Debug, Clone)]
pub struct Renewed {
    /// Facts about the new leaf.
    pub facts: CertFacts,
    /// A trust bundle that could not be refreshed (the certificate was
    /// installed anyway).
    pub bundle_error: Option<Failure>,
    /// The reload action's failure, if any.
    pub reload_error: Option<String>,
}

/// What `--once` achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnceOutcome {
    /// One line for standard output.
    pub message: String,
    /// One line for standard error (exit status stays 0).
    pub warning: Option<String>,
}

/// RFC 3339 text of a Unix time (for logs).
pub fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// The client's state between attempts.
pub struct Agent {
    settings: Settings,
    metrics: Arc<Metrics>,
    api: Option<(Vec<u8>, ApiClient)>,
    class_roots: Option<Vec<CertificateDer<'static>>>,
    jitter: Option<(String, f64)>,
    backoff: Backoff,
    /// Issuance-log keys by log id (pinned, or fetched once).
    log_keys: std::collections::HashMap<String, ca_proto::sth::LogPublicKey>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("class", &self.settings.class)
            .field("out", &self.settings.layout.dir)
            .finish()
    }
}

impl Agent {
    /// An agent for `settings`, reporting to `metrics`. Removes temporary
    /// files an interrupted earlier run may have left (the caller holds
    /// the directory lock, see [`store::lock`]).
    pub fn new(settings: Settings, metrics: Arc<Metrics>) -> Agent {
        store::remove_stale_temps(&settings.layout.dir);
        store::remove_stale_temps(&settings.layout.trust_dir);
        Agent {
            settings,
            metrics,
            api: None,
            class_roots: None,
            jitter: None,
            backoff: Backoff::default(),
            log_keys: std::collections::HashMap::new(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The CA's TLS root(s), from the file or by pinned first contact.
    async fn ca_roots(&self) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>), Failure> {
        let (path, pin) = match &self.settings.ca_trust {
            CaTrust::File(path) => (path.clone(), None),
            CaTrust::Pinned { sha256, save_to } => (save_to.clone(), Some(*sha256)),
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let roots = parse_certs(&bytes).map_err(|e| {
                    Failure::new(
                        FailureKind::Permanent,
                        "ca_root",
                        format!("CA root {}: {e}", path.display()),
                    )
                })?;
                let roots = match pin {
                    None => roots,
                    Some(pin) => {
                        let want = hex::encode(pin);
                        let pinned: Vec<_> = roots
                            .into_iter()
                            .filter(|r| crate::pem::sha256_hex(r) == want)
                            .collect();
                        if pinned.is_empty() {
                            return Err(Failure::new(
                                FailureKind::Permanent,
                                "pin_mismatch",
                                format!("CA root {} does not match ca_root_sha256", path.display()),
                            ));
                        }
                        pinned
                    }
                };
                Ok((bytes, roots))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && pin.is_some() => {
                let pin = pin.unwrap_or_default();
                let root = fetch_pinned_root(&self.settings.servers, &pin).await?;
                let pem = encode("CERTIFICATE", &root);
                store::write_atomic(&path, pem.as_bytes(), self.settings.layout.cert_attrs)
                    .map_err(|e| Failure::new(FailureKind::Transient, "write", e.to_string()))?;
                tracing::info!(path = %path.display(), "saved the pinned CA root");
                Ok((pem.into_bytes(), vec![root]))
            }
            Err(e) => Err(Failure::new(
                FailureKind::Transient,
                "ca_root",
                format!("reading CA root {}: {e}", path.display()),
            )),
        }
    }

    /// The API client, rebuilt when the CA root file changed.
    async fn api(&mut self) -> Result<ApiClient, Failure> {
        let (bytes, roots) = self.ca_roots().await?;
        if let Some((cached, client)) = &self.api {
            if *cached == bytes {
                return Ok(client.clone());
            }
        }
        let client = ApiClient::new(
            self.settings.servers.clone(),
            &roots,
            self.settings.key_id.clone(),
            self.settings.key_secret_file.clone(),
        )
        .map_err(|e| Failure::new(FailureKind::Permanent, "ca_root", e))?;
        self.api = Some((bytes, client.clone()));
        Ok(client)
    }

    /// Refreshes the own class bundle (memory) and the `trust` bundles
    /// (files). Returns whether a trust file changed. If the own class
    /// bundle cannot be fetched, that error is returned at once (the CA is
    /// most likely unreachable); otherwise every trust class is tried and
    /// the first failure returned.
    pub async fn refresh_bundles(&mut self) -> Result<bool, Failure> {
        let api = self.api().await?;
        match api.bundle(&self.settings.class).await {
            Ok(roots) => self.class_roots = Some(roots),
            Err(e) => {
                self.metrics.bundle_refresh_failed();
                let f = Failure::from(e);
                return Err(Failure {
                    message: format!("bundle of class '{}': {}", self.settings.class, f.message),
                    ..f
                });
            }
        }
        let mut first_error = None;
        let mut changed = false;
        for class in self.settings.trust.clone() {
            let result = match api.bundle(&class).await {
                Ok(roots) => store::write_if_changed(
                    &self.settings.layout.trust_path(&class),
                    encode_certs(&roots).as_bytes(),
                    self.settings.layout.cert_attrs,
                )
                .map_err(|e| Failure::new(FailureKind::Transient, "write", e.to_string())),
                Err(e) => Err(Failure::from(e)),
            };
            match result {
                Ok(true) => {
                    tracing::info!(class = %class, "trust bundle updated");
                    changed = true;
                }
                Ok(false) => {}
                Err(e) => {
                    let e = Failure {
                        message: format!("trust bundle of class '{class}': {}", e.message),
                        ..e
                    };
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => {
                self.metrics.bundle_refresh_failed();
                Err(e)
            }
            None => Ok(changed),
        }
    }

    /// Like [`Agent::refresh_bundles`], but an own-class failure is an
    /// error and trust-class failures are returned beside the result.
    async fn refresh_for_renewal(&mut self) -> Result<Option<Failure>, Failure> {
        let before = self.class_roots.clone();
        self.class_roots = None;
        let r = self.refresh_bundles().await;
        if self.class_roots.is_none() {
            self.class_roots = before;
            return Err(r.err().unwrap_or_else(|| {
                Failure::new(FailureKind::Transient, "bundle", "class bundle unknown")
            }));
        }
        Ok(r.err())
    }

    fn key_for_request(&self) -> Result<LocalKey, Failure> {
        let alg = self.settings.key_algorithm;
        if !self.settings.rotate_key {
            let path = self.settings.layout.path(store::FileKind::Key);
            if let Ok(pem) = std::fs::read_to_string(&path) {
                match LocalKey::from_pem(&pem) {
                    Ok(key) if key.algorithm() == alg => return Ok(key),
                    Ok(key) => tracing::info!(
                        have = %key.algorithm(),
                        want = %alg,
                        "key algorithm changed: making a new key"
                    ),
                    Err(e) => tracing::warn!(error = %e, "current key unusable: making a new key"),
                }
            }
        }
        LocalKey::generate(alg)
            .map_err(|e| Failure::new(FailureKind::Permanent, "key_generation", e.to_string()))
    }

    fn check_issued(
        &self,
        key: &LocalKey,
        leaf: &CertificateDer<'static>,
        intermediates: &[CertificateDer<'static>],
    ) -> Result<CertFacts, Failure> {
        let bad = |msg: &str| Failure::new(FailureKind::Transient, "bad_certificate", msg);
        if !key.matches_cert(leaf) {
            return Err(bad("the issued certificate does not carry our public key"));
        }
        let f = facts(leaf).map_err(|e| bad(&e.to_string()))?;
        let now = crate::unix_now();
        if now >= f.not_after {
            return Err(bad("the issued certificate is already expired"));
        }
        if let Some(first) = intermediates.first() {
            if !issued_by(leaf, first) {
                return Err(bad("the returned chain did not issue the certificate"));
            }
        }
        if let Some(roots) = &self.class_roots {
            if !chains_to(leaf, intermediates, roots) {
                return Err(Failure::new(
                    FailureKind::Transient,
                    "untrusted_chain",
                    format!(
                        "the issued certificate does not chain to a root of class '{}'",
                        self.settings.class
                    ),
                ));
            }
        }
        Ok(f)
    }

    /// One renewal attempt (see the module documentation).
    /// The issuance-log evidence of `response` must prove that `leaf` was
    /// logged (see [`crate::inclusion`]).
    async fn check_inclusion(
        &mut self,
        response: &ca_proto::native::SignResponse,
        leaf: &[u8],
    ) -> Result<(), Failure> {
        use crate::inclusion;
        let refused = |e: inclusion::InclusionError| {
            Failure::new(FailureKind::Permanent, "inclusion_proof", e.to_string())
        };
        let Some(evidence) = inclusion::evidence(response).map_err(refused)? else {
            return inclusion::missing(self.settings.require_inclusion_proof).map_err(refused);
        };
        let key = match self.log_keys.get(&evidence.log_id) {
            Some(key) => key.clone(),
            None => {
                let pem = match &self.settings.log_public_key {
                    Some(path) => std::fs::read_to_string(path).map_err(|e| {
                        Failure::new(
                            FailureKind::Permanent,
                            "config",
                            format!("log_public_key {}: {e}", path.display()),
                        )
                    })?,
                    None => self.api().await?.log_key(&evidence.log_id).await?,
                };
                let key = ca_proto::sth::LogPublicKey::from_pem(&pem).map_err(|e| {
                    refused(inclusion::InclusionError::Malformed(format!(
                        "log key of '{}': {e}",
                        evidence.log_id
                    )))
                })?;
                self.log_keys.insert(evidence.log_id.clone(), key.clone());
                key
            }
        };
        let index = inclusion::verify(&evidence, &key, leaf, &response.serial).map_err(refused)?;
        tracing::debug!(log_id = %evidence.log_id, index, tree_size = evidence.sth.tree_size, "inclusion proof verified");
        Ok(())
    }

    pub async fn renew(&mut self) -> Result<Renewed, Failure> {
        let api = self.api().await?;
        let bundle_error = self.refresh_for_renewal().await?;
        let key = self.key_for_request()?;
        let s = &self.settings;
        let csr = key
            .csr_pem(&s.names, s.common_name.as_deref())
            .map_err(|e| Failure::new(FailureKind::Permanent, "csr", e.to_string()))?;
        let request = SignRequest {
            class: s.class.clone(),
            profile: s.profile.clone(),
            csr,
            hosts: Some(s.names.hosts()),
            ttl: s.ttl.map(format_duration),
        };
        let response = api.sign(&request).await?;

        let bad = |what: &str, e: crate::pem::PemError| {
            Failure::new(
                FailureKind::Transient,
                "bad_certificate",
                format!("{what}: {e}"),
            )
        };
        let leaf = parse_certs(response.certificate.as_bytes())
            .map_err(|e| bad("certificate", e))?
            .into_iter()
            .next()
            .ok_or_else(|| Failure::new(FailureKind::Transient, "bad_certificate", "empty"))?;
        let mut intermediates =
            parse_certs(response.chain.as_bytes()).map_err(|e| bad("chain", e))?;
        if intermediates.first() == Some(&leaf) {
            intermediates.remove(0);
        }
        let facts = self.check_issued(&key, &leaf, &intermediates)?;
        self.check_inclusion(&response, &leaf).await?;

        let material = Material {
            key_pem: key.pem().to_owned(),
            cert_pem: encode("CERTIFICATE", &leaf),
            chain_pem: encode_certs(&intermediates),
        };
        store::install(&self.settings.layout, &material)
            .map_err(|e| Failure::new(FailureKind::Transient, "write", e.to_string()))?;
        let now = crate::unix_now();
        self.metrics.renewal_succeeded(now);
        self.metrics.set_certificate(Some((
            now.clamp(facts.not_before, facts.not_after),
            facts.not_after,
        )));
        tracing::info!(
            serial = %facts.serial,
            not_after = %rfc3339(facts.not_after),
            "installed a new certificate"
        );
        let reload_error = self.reload(Event::Renewed).await;
        Ok(Renewed {
            facts,
            bundle_error,
            reload_error,
        })
    }

    async fn reload(&self, event: Event) -> Option<String> {
        let reloader = self.settings.reload.as_ref()?;
        match reloader
            .run(&environment(&self.settings.layout, event))
            .await
        {
            Ok(()) => {
                tracing::info!(event = ?event, "reload action done");
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "reload action failed (files stay in place)");
                self.metrics.reload_failed(e.reason());
                Some(e.to_string())
            }
        }
    }

    /// What is on disk, judged against the class bundle when known.
    pub fn inspect(&self) -> Result<Installed, String> {
        inspect(&self.settings.layout, self.class_roots.as_deref())
    }

    fn trust_files_present(&self) -> bool {
        self.settings.trust.iter().all(|class| {
            std::fs::read(self.settings.layout.trust_path(class))
                .is_ok_and(|b| parse_certs(&b).is_ok())
        })
    }

    /// `--once`: make sure valid files are in place (see the binary's
    /// documentation). `Err` is the one-line reason.
    pub async fn run_once(&mut self, only_if_needed: bool) -> Result<OnceOutcome, String> {
        let now = crate::unix_now();
        let present = crate::inspect::present(&self.settings.layout, None);
        let decision = if_needed(&present, now, self.settings.renew_fraction);
        if only_if_needed {
            if let Decision::Keep { renew_at } = decision {
                let not_after = match present {
                    crate::renew::Present::Valid { not_after, .. } => not_after,
                    crate::renew::Present::Unusable(_) => now,
                };
                if !self.trust_files_present() {
                    let changed = self.refresh_bundles().await.map_err(|e| e.message)?;
                    if changed {
                        if let Some(e) = self.reload(Event::TrustChanged).await {
                            return Ok(OnceOutcome {
                                message: format!(
                                    "trust bundles written; certificate valid until {}",
                                    rfc3339(not_after)
                                ),
                                warning: Some(format!("warning: {e}")),
                            });
                        }
                    }
                }
                return Ok(OnceOutcome {
                    message: format!(
                        "certificate valid until {}, renewal due from {}: no request made",
                        rfc3339(not_after),
                        rfc3339(renew_at)
                    ),
                    warning: None,
                });
            }
        }
        match self.renew().await {
            Ok(r) => {
                if let Some(e) = r.bundle_error {
                    return Err(format!(
                        "certificate installed (serial {}), but {}",
                        r.facts.serial, e.message
                    ));
                }
                Ok(OnceOutcome {
                    message: format!(
                        "wrote {} (serial {}, valid until {})",
                        self.settings.layout.dir.display(),
                        r.facts.serial,
                        rfc3339(r.facts.not_after)
                    ),
                    warning: r.reload_error.map(|e| format!("warning: {e}")),
                })
            }
            Err(f) => {
                self.metrics.renewal_failed(&f.reason);
                // With --if-needed the goal is valid files: a certificate
                // that is still valid keeps the service running.
                if let (true, crate::renew::Present::Valid { not_after, .. }) =
                    (only_if_needed, &present)
                {
                    if now < *not_after && self.trust_files_present() {
                        return Ok(OnceOutcome {
                            message: format!(
                                "kept the current certificate (valid until {})",
                                rfc3339(*not_after)
                            ),
                            warning: Some(format!("warning: renewal failed: {}", f.message)),
                        });
                    }
                }
                Err(f.message)
            }
        }
    }

    fn jitter_for(&mut self, serial: &str) -> f64 {
        match &self.jitter {
            Some((s, j)) if s == serial => *j,
            _ => {
                let j = crate::random_unit();
                self.jitter = Some((serial.to_owned(), j));
                j
            }
        }
    }

    /// The daemon loop; returns when `shutdown` completes.
    pub async fn run<S: Future<Output = ()>>(&mut self, shutdown: S) {
        tokio::pin!(shutdown);
        let mut next_attempt: Option<Instant> = None;
        let mut next_bundles = Instant::now();
        let mut bundle_backoff = Backoff::new(BUNDLE_RETRY, BUNDLE_REFRESH);
        loop {
            // Standalone bundle refresh, unless renewals are failing (each
            // renewal attempt refreshes the bundles itself).
            if next_attempt.is_none() && Instant::now() >= next_bundles {
                let refreshed = tokio::select! {
                    r = self.refresh_bundles() => r,
                    () = &mut shutdown => return,
                };
                next_bundles = match refreshed {
                    Ok(changed) => {
                        bundle_backoff.reset();
                        if changed {
                            let _ = self.reload(Event::TrustChanged).await;
                        }
                        Instant::now() + BUNDLE_REFRESH
                    }
                    Err(e) => {
                        let delay = bundle_backoff.next_delay(1.0);
                        tracing::warn!(
                            reason = %e.reason,
                            retry_in_secs = delay.as_secs(),
                            "bundle refresh failed: {}", e.message
                        );
                        Instant::now() + delay
                    }
                };
            }

            let now_i = Instant::now();
            let now = crate::unix_now();
            let (why, renew_at) = match self.inspect() {
                Ok(i) => {
                    self.metrics
                        .set_certificate(Some((i.start, i.facts.not_after)));
                    let at = renewal_point(
                        i.start,
                        i.facts.not_after,
                        self.settings.renew_fraction,
                        self.jitter_for(&i.facts.serial),
                    );
                    if now >= i.facts.not_after {
                        (Some("certificate expired".to_owned()), at)
                    } else if now >= at {
                        (Some("renewal point reached".to_owned()), at)
                    } else {
                        (None, at)
                    }
                }
                Err(why) => {
                    self.metrics.set_certificate(None);
                    (Some(why), now)
                }
            };

            let wake = match why {
                None => {
                    next_attempt = None;
                    let until = Duration::from_secs(u64::try_from(renew_at - now).unwrap_or(0));
                    (now_i + until.min(CHECK_INTERVAL)).min(next_bundles)
                }
                Some(_) if next_attempt.is_some_and(|t| now_i < t) => {
                    next_attempt.unwrap_or(now_i).min(now_i + CHECK_INTERVAL)
                }
                Some(why) => {
                    // Once per streak: each failure is logged on its own.
                    if self.backoff.failures() == 0 {
                        tracing::info!(reason = %why, "renewing");
                    } else {
                        tracing::debug!(reason = %why, "renewing");
                    }
                    let result = tokio::select! {
                        r = self.renew() => r,
                        () = &mut shutdown => return,
                    };
                    match result {
                        Ok(r) => {
                            self.backoff.reset();
                            next_attempt = None;
                            next_bundles = match r.bundle_error {
                                None => {
                                    bundle_backoff.reset();
                                    Instant::now() + BUNDLE_REFRESH
                                }
                                Some(e) => {
                                    let delay = bundle_backoff.next_delay(1.0);
                                    tracing::warn!(
                                        reason = %e.reason,
                                        retry_in_secs = delay.as_secs(),
                                        "bundle refresh failed: {}", e.message
                                    );
                                    Instant::now() + delay
                                }
                            };
                            continue;
                        }
                        Err(f) => {
                            self.metrics.renewal_failed(&f.reason);
                            let ceiling = self.backoff.ceiling();
                            let delay = retry_delay(
                                f.kind,
                                &mut self.backoff,
                                crate::random_unit(),
                                f.retry_after,
                            );
                            match f.kind {
                                FailureKind::Permanent => tracing::error!(
                                    reason = %f.reason,
                                    retry_in_secs = delay.as_secs_f64(),
                                    "renewal refused: {}", f.message
                                ),
                                FailureKind::Transient => tracing::warn!(
                                    reason = %f.reason,
                                    attempt = self.backoff.failures(),
                                    retry_in_secs = delay.as_secs_f64(),
                                    backoff_ceiling_secs = ceiling.as_secs_f64(),
                                    "renewal failed: {}", f.message
                                ),
                            }
                            let at = Instant::now() + delay;
                            next_attempt = Some(at);
                            at
                        }
                    }
                }
            };
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = &mut shutdown => return,
            }
        }
    }
}
