//! The sidecar's behaviour: one renewal (key → CSR → sign → check →
//! install → reload), `--once`, and the daemon loop that keeps the files
//! fresh.
//!
//! # One renewal ([`Agent::renew`])
//!
//! 1. make sure the CA's TLS root is known (file, or pinned first contact),
//!    and that no symbolic link was planted where the trust bundles and the
//!    pinned-roots state go;
//! 2. the class's profiles (`GET /v1/classes`, kept for an hour), and the
//!    bundles of the client's own class and every `trust` class, each
//!    judged against the pinned roots ([`crate::pins`]) — in memory only;
//! 3. a new key (or, with `rotate_key = false`, the current one), a CSR,
//!    `POST /v1/sign`;
//! 4. check the answer before touching a file ([`crate::verify`]): our key,
//!    a leaf (no CA bits), exactly the requested names, the profile's
//!    extended key usage, a lifetime within what was asked, a notBefore not
//!    beyond the clock skew, the response's serial and dates, a path to a
//!    pinned root of the class through valid CA certificates; then the
//!    issuance-log evidence, whose entry must match the certificate and the
//!    request ([`crate::inclusion`]);
//! 5. install the generation atomically ([`crate::store::install`]); only
//!    now are the accepted bundles written (`trust/<class>.pem`) and pinned
//!    (the state file); then the reload action runs (its failure is
//!    reported, the files stay).
//!
//! A failure anywhere before step 5 leaves every file as it was (the one
//! exception: the `ca` root fetched on first contact with only
//! `ca_root_sha256`, which the fingerprint authenticates, is saved at once).
//! A bundle that is refused (no pinned root left, [`crate::pins`]) stops the
//! attempt before anything is requested; a trust bundle that merely could
//! not be fetched does not stop the renewal and is reported beside it.
//!
//! # Daemon ([`Agent::run`])
//!
//! Every pass inspects the files; it renews when they are unusable
//! (missing, unreadable, key mismatch, issuer no longer in the bundle),
//! expired, not valid until later than the accepted clock skew (a clock
//! that jumped back), or past the renewal point (fraction of the lifetime,
//! counted from the later of install time and notBefore, minus a
//! per-certificate random jitter). The checks of an answer run on a
//! blocking thread, so `/healthz` keeps answering. Failures are retried with capped
//! exponential backoff and full jitter (slowly for permanent errors), each
//! logged once with its reason, while the current certificate stays in
//! place, also after it expired. Bundles are refreshed on every renewal and
//! at least hourly. Between passes it sleeps until the next event, at most
//! [`CHECK_INTERVAL`], and stops on the shutdown future (SIGTERM/SIGINT in
//! the binary).
//!
//! # Revocation
//!
//! Independently of renewals the daemon refreshes CRLs every `crl_refresh`
//! and before the earliest nextUpdate ([`crate::renew::crl_refresh_delay`];
//! failures back off like renewals, [`crate::renew::crl_backoff`]): the
//! trust classes' go to `trust/<class>.crl.pem`, followed by the reload
//! action (`TRELLIS_EVENT=crl-changed`) when a file changed; the own
//! class's tell whether the installed certificate was revoked
//! ([`crate::revocation`]). So does the marker `ca-client revoke` leaves
//! ([`crate::revoke`]). A revoked certificate is logged, shown in
//! `trellis_client_cert_revoked` and `/healthz`, and replaced at once by a
//! certificate for a **new** key (even with `rotate_key = false`; an RSA
//! key, which cannot be generated here, must be provisioned anew), counted
//! in `trellis_client_revoked_reenrolments_total` — unless the marker says
//! not to enrol again (`ca-client revoke --no-reenrol`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ca_proto::native::{format_duration, ProfileInfo, SignRequest};
use ca_proto::pem::{encode, encode_all, Label};
use rustls_pki_types::CertificateDer;
use thiserror::Error;
use tokio::time::Instant;

use crate::api::{fetch_pinned_root, ApiClient, ApiError};
use crate::config::{CaTrust, Settings};
use crate::inspect::{inspect, Installed, Unusable};
use crate::keys::LocalKey;
use crate::metrics::Metrics;
use crate::pem::{parse_certs, CertFacts};
use crate::pins::{PinStore, TrustError, Verdict};
use crate::reload::{environment, Event};
use crate::renew::{
    crl_backoff, crl_refresh_delay, if_needed, renewal_point, retry_delay, Backoff, Decision,
    FailureKind,
};
use crate::revocation::{CrlRefreshError, CrlRefresher, Job, Round};
use crate::revoke::{read_marker, remove_marker, RevokeError, Revoked};
use crate::store::{self, Material};
use crate::verify::{CheckError, Checked, Expectation, MAX_CHAIN_CERTS, MAX_CLOCK_SKEW};

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

impl From<CheckError> for Failure {
    fn from(e: CheckError) -> Failure {
        Failure::new(FailureKind::Transient, e.reason(), e.to_string())
    }
}

impl From<TrustError> for Failure {
    fn from(e: TrustError) -> Failure {
        let kind = match e {
            TrustError::Malformed { .. } => FailureKind::Transient,
            _ => FailureKind::Permanent,
        };
        Failure::new(kind, UNTRUSTED_BUNDLE, e.to_string())
    }
}

impl From<CrlRefreshError> for Failure {
    fn from(e: CrlRefreshError) -> Failure {
        Failure {
            kind: e.kind(),
            reason: e.reason(),
            message: e.to_string(),
            retry_after: e.retry_after(),
        }
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

/// Why `--once` did not leave valid files in place. `Display` is one line.
#[derive(Debug, Clone, Error)]
pub enum OnceError {
    /// The certificate is valid, but the missing trust bundles could not be
    /// fetched.
    #[error("{0}")]
    Bundles(Failure),
    /// The certificate was installed, but a trust bundle could not be
    /// refreshed.
    #[error("certificate installed (serial {serial}), but {failure}")]
    BundleAfterInstall {
        /// The new certificate's serial.
        serial: String,
        /// Why the bundle was not refreshed.
        failure: Failure,
    },
    /// The renewal failed, and no valid certificate can stand in.
    #[error("{0}")]
    Renewal(Failure),
}

impl OnceError {
    /// The failed attempt behind this error.
    pub fn failure(&self) -> &Failure {
        match self {
            OnceError::Bundles(f) | OnceError::Renewal(f) => f,
            OnceError::BundleAfterInstall { failure, .. } => failure,
        }
    }
}

/// What `--once` achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnceOutcome {
    /// One line for standard output.
    pub message: String,
    /// One line for standard error (exit status stays 0).
    pub warning: Option<String>,
}

pub use crate::verify::rfc3339;

/// The failure label of a refused bundle.
const UNTRUSTED_BUNDLE: &str = "untrusted_bundle";

/// Bundles fetched and judged in one attempt, not yet written.
struct Judged {
    /// The client's own class (must be acceptable).
    own: Verdict,
    /// Every `trust` class, in order.
    trust: Vec<(String, Result<Verdict, Failure>)>,
}

/// Runs CPU-bound checks off the async executor (the metrics listener keeps
/// answering); they are bounded anyway ([`crate::verify`]).
async fn off_thread<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        Failure::new(
            FailureKind::Transient,
            "internal",
            format!("check task: {e}"),
        )
    })
}

/// The client's state between attempts.
pub struct Agent {
    settings: Settings,
    metrics: Arc<Metrics>,
    api: Option<(Vec<u8>, ApiClient)>,
    class_roots: Option<Vec<CertificateDer<'static>>>,
    /// The class's profiles, and when they were fetched.
    profiles: Option<(Instant, Vec<ProfileInfo>)>,
    /// Refused bundle roots seen since the last look (for `--once`).
    warnings: Vec<String>,
    jitter: Option<(String, f64)>,
    backoff: Backoff,
    /// Issuance-log keys by log id (pinned, or fetched once).
    log_keys: std::collections::HashMap<String, ca_proto::sth::LogPublicKey>,
    /// The CRLs of the own and trust classes.
    crls: CrlRefresher,
    /// The installed certificate's serial and the issuer of the CRL that
    /// lists it, from the last CRL refresh.
    crl_revoked: Option<(String, String)>,
    /// The installed certificate is revoked (its key is never used again).
    revoked: Option<RevokedCert>,
    /// A CRL refresh skipped a class that had no pinned roots yet.
    crl_pending: bool,
}

/// The installed certificate, known to be revoked.
#[derive(Debug, Clone)]
struct RevokedCert {
    serial: String,
    reenrol: bool,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("class", &self.settings.class)
            .field("out", &self.settings.layout.dir)
            .finish()
    }
}

fn write_failure(e: impl std::fmt::Display) -> Failure {
    Failure::new(FailureKind::Transient, "write", e.to_string())
}

impl Agent {
    /// An agent for `settings`, reporting to `metrics`. Removes temporary
    /// files an interrupted earlier run may have left (the caller holds
    /// the directory lock, see [`store::lock`]).
    pub fn new(settings: Settings, metrics: Arc<Metrics>) -> Agent {
        store::remove_stale_temps(&settings.layout.dir);
        for dir in [&settings.layout.trust_dir, &settings.state_dir] {
            // Only real directories: a planted link is not followed.
            if std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
                store::remove_stale_temps(dir);
            }
        }
        Agent::beside_daemon(settings, metrics)
    }

    /// An agent for a command that runs beside a daemon managing the same
    /// directory (`ca-client revoke`): it takes no lock and removes no
    /// temporary file.
    pub fn beside_daemon(settings: Settings, metrics: Arc<Metrics>) -> Agent {
        Agent {
            settings,
            metrics,
            api: None,
            class_roots: None,
            profiles: None,
            warnings: Vec::new(),
            jitter: None,
            backoff: Backoff::default(),
            log_keys: std::collections::HashMap::new(),
            crls: CrlRefresher::new(),
            crl_revoked: None,
            revoked: None,
            crl_pending: false,
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
                let pem = encode(Label::Certificate, &root);
                store::write_atomic_in(
                    &self.settings.layout.dir,
                    &path,
                    pem.as_bytes(),
                    self.settings.layout.cert_attrs,
                )
                .map_err(write_failure)?;
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
            self.settings.secret_file_mode,
        )
        .map_err(|e| Failure::new(FailureKind::Permanent, "ca_root", e.to_string()))?;
        self.api = Some((bytes, client.clone()));
        Ok(client)
    }

    /// The trust directory and the state directory, where they lie inside
    /// the output directory, must not be links someone else planted: checked
    /// before anything is requested, so that such a run changes nothing.
    fn preflight(&self) -> Result<(), Failure> {
        let base = &self.settings.layout.dir;
        for dir in [&self.settings.layout.trust_dir, &self.settings.state_dir] {
            let Ok(rel) = dir.strip_prefix(base) else {
                continue;
            };
            let mut at = base.clone();
            for part in rel.components() {
                at.push(part);
                match std::fs::symlink_metadata(&at) {
                    Ok(m) if m.file_type().is_symlink() => {
                        return Err(Failure::new(
                            FailureKind::Permanent,
                            "symlink",
                            store::StoreError::Symlink(at).to_string(),
                        ))
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        Ok(())
    }

    fn load_pins(&self) -> Result<PinStore, Failure> {
        PinStore::load(&self.settings.state_dir)
            .map_err(|e| Failure::new(FailureKind::Permanent, "trust_state", e.to_string()))
    }

    /// The profiles of the client's class (`GET /v1/classes`, kept for
    /// [`BUNDLE_REFRESH`]).
    async fn profiles(&mut self, api: &ApiClient) -> Result<Vec<ProfileInfo>, Failure> {
        if let Some((at, profiles)) = &self.profiles {
            if at.elapsed() < BUNDLE_REFRESH {
                return Ok(profiles.clone());
            }
        }
        let list = api.classes().await?;
        let class = &self.settings.class;
        let info = list
            .classes
            .into_iter()
            .find(|c| &c.name == class)
            .ok_or_else(|| {
                Failure::new(
                    FailureKind::Permanent,
                    "unknown_class",
                    format!("the CA does not list class '{class}' (GET /v1/classes)"),
                )
            })?;
        self.profiles = Some((Instant::now(), info.profiles.clone()));
        Ok(info.profiles)
    }

    /// Fetches the bundle of `class` and judges it against the pins.
    async fn judge(
        &self,
        api: &ApiClient,
        pins: &PinStore,
        class: &str,
    ) -> Result<Verdict, Failure> {
        let bundle = api.bundle(class).await?;
        let configured = self.settings.root_pins(class).to_vec();
        let pinned = pins.roots(class, &configured);
        let (anchors, basis) =
            crate::pins::anchors_for(class, &bundle, pinned.as_deref(), &configured)?;
        let crosses = if basis != crate::pins::Basis::FirstUse
            && crate::pins::needs_crosses(&bundle, &anchors)
        {
            match api.chain(class).await {
                Ok(chain) => chain,
                Err(e) => {
                    tracing::warn!(class, error = %e, "no chain to look for cross certificates in");
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        let owned_class = class.to_owned();
        let now = crate::unix_now();
        let verdict = off_thread(move || {
            crate::pins::evaluate(&owned_class, &bundle, &anchors, basis, &crosses, now)
        })
        .await??;
        for refused in &verdict.refused {
            self.metrics.root_refused(class);
            tracing::error!(
                class,
                root = %refused.sha256,
                subject = %refused.subject,
                "bundle root refused: {}", refused.reason
            );
        }
        Ok(verdict)
    }

    /// Judges the own class's bundle (an error is returned at once: the CA
    /// is most likely unreachable, or the bundle is refused) and every
    /// trust class's (their failures are kept beside).
    async fn judge_all(&mut self, api: &ApiClient, pins: &PinStore) -> Result<Judged, Failure> {
        self.warnings.clear();
        // Refusals name the class themselves; fetch failures get it here.
        let named = |what: &str, class: &str, f: Failure| {
            if f.reason == UNTRUSTED_BUNDLE {
                f
            } else {
                Failure {
                    message: format!("{what} of class '{class}': {}", f.message),
                    ..f
                }
            }
        };
        let class = self.settings.class.clone();
        let own = self
            .judge(api, pins, &class)
            .await
            .map_err(|f| named("bundle", &class, f))?;
        let mut trust = Vec::new();
        for class in self.settings.trust.clone() {
            let result = if class == self.settings.class {
                Ok(own.clone())
            } else {
                self.judge(api, pins, &class)
                    .await
                    .map_err(|f| named("trust bundle", &class, f))
            };
            // A refused bundle (not merely an unreachable one) stops the
            // run before anything is requested or written.
            if let Err(f) = &result {
                if f.reason == UNTRUSTED_BUNDLE {
                    return Err(f.clone());
                }
            }
            trust.push((class, result));
        }
        for verdict in
            std::iter::once(&own).chain(trust.iter().filter_map(|(_, r)| r.as_ref().ok()))
        {
            if let Some(w) = verdict.warning() {
                if !self.warnings.contains(&w) {
                    self.warnings.push(w);
                }
            }
        }
        Ok(Judged { own, trust })
    }

    /// After a success: pins the accepted roots (state file) and writes the
    /// trust files that changed. Returns whether a trust file changed and
    /// the first trust-class failure (judging or writing).
    fn commit(&mut self, judged: Judged) -> Result<(bool, Option<Failure>), Failure> {
        let mut pins = self.load_pins()?;
        let layout = &self.settings.layout;
        let own_class = self.settings.class.clone();
        pins.update(
            &own_class,
            self.settings.root_pins(&own_class),
            &judged.own.accepted,
        );
        for (class, verdict) in &judged.trust {
            if let Ok(v) = verdict {
                pins.update(class, self.settings.root_pins(class), &v.accepted);
            }
        }
        pins.save(&layout.dir, layout.cert_attrs)
            .map_err(write_failure)?;
        let mut changed = false;
        let mut first_error = None;
        for (class, verdict) in judged.trust {
            let written = verdict.and_then(|v| {
                store::write_if_changed_in(
                    &layout.dir,
                    &layout.trust_path(&class),
                    encode_all(Label::Certificate, &v.accepted).as_bytes(),
                    layout.cert_attrs,
                )
                .map_err(|e| Failure {
                    message: format!("trust bundle of class '{class}': {e}"),
                    ..write_failure("")
                })
            });
            match written {
                Ok(true) => {
                    tracing::info!(class = %class, "trust bundle updated");
                    changed = true;
                }
                Ok(false) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        self.class_roots = Some(judged.own.accepted);
        Ok((changed, first_error))
    }

    /// Refreshes the own class bundle (memory) and the `trust` bundles
    /// (files), each judged against the pins and written only when its
    /// bundle was acceptable. Returns whether a trust file changed. If the
    /// own class bundle cannot be fetched or is refused, that error is
    /// returned at once and nothing is written; otherwise every trust class
    /// is tried and the first failure returned.
    pub async fn refresh_bundles(&mut self) -> Result<bool, Failure> {
        let api = self.api().await?;
        self.preflight()?;
        let pins = self.load_pins()?;
        let judged = match self.judge_all(&api, &pins).await {
            Ok(j) => j,
            Err(e) => {
                self.metrics.bundle_refresh_failed();
                return Err(e);
            }
        };
        let (changed, first_error) = self.commit(judged)?;
        match first_error {
            Some(e) => {
                self.metrics.bundle_refresh_failed();
                Err(e)
            }
            None => Ok(changed),
        }
    }

    fn key_for_request(&self) -> Result<LocalKey, Failure> {
        let alg = self.settings.key_algorithm;
        if let Some(revoked) = &self.revoked {
            // Never the revoked key again, whatever rotate_key says.
            if !alg.can_generate() {
                return Err(Failure::new(
                    FailureKind::Permanent,
                    "key_generation",
                    format!(
                        "certificate {} was revoked and needs a new key, but {}",
                        revoked.serial,
                        crate::keys::KeyError::RsaGenerationUnsupported
                    ),
                ));
            }
            return LocalKey::generate(alg).map_err(|e| {
                Failure::new(FailureKind::Permanent, "key_generation", e.to_string())
            });
        }
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

    /// The issuance-log evidence of `response` must prove that `leaf` was
    /// logged, and the logged entry must say what the certificate says (see
    /// [`crate::inclusion`]).
    async fn check_inclusion(
        &mut self,
        response: &ca_proto::native::SignResponse,
        leaf: &[u8],
        checked: &Checked,
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
        let (index, entry) = inclusion::verify_entry(&evidence, &key, leaf, &checked.facts.serial)
            .map_err(refused)?;
        inclusion::check_entry(
            &entry,
            &self.settings.class,
            self.settings.profile.as_deref(),
            checked,
        )
        .map_err(refused)?;
        tracing::debug!(log_id = %evidence.log_id, index, tree_size = evidence.sth.tree_size, "inclusion proof verified");
        Ok(())
    }

    /// One renewal attempt (see the module documentation).
    pub async fn renew(&mut self) -> Result<Renewed, Failure> {
        let api = self.api().await?;
        self.preflight()?;
        let pins = self.load_pins()?;
        let profiles = self.profiles(&api).await?;
        let judged = self.judge_all(&api, &pins).await?;
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
        let expected = Expectation {
            class: s.class.clone(),
            profile: s.profile.clone(),
            names: s.names.clone(),
            common_name: s.common_name.clone(),
            ttl: s.ttl,
            profiles,
        };
        let response = api.sign(&request).await?;

        let leaf = crate::verify::parse_certs_capped(
            response.certificate.as_bytes(),
            1,
            "the issued certificate",
        )?
        .into_iter()
        .next()
        .ok_or_else(|| Failure::new(FailureKind::Transient, "bad_certificate", "empty"))?;
        let mut intermediates = crate::verify::parse_certs_capped(
            response.chain.as_bytes(),
            MAX_CHAIN_CERTS,
            "the returned chain",
        )?;
        if intermediates.first() == Some(&leaf) {
            intermediates.remove(0);
        }
        let roots = judged.own.accepted.clone();
        let public_key = key.public_key_bits().to_vec();
        let (leaf_c, ints_c) = (leaf.clone(), intermediates.clone());
        let checked = off_thread(move || {
            crate::verify::check_issued(
                &leaf_c,
                &ints_c,
                &roots,
                &public_key,
                &expected,
                crate::unix_now(),
            )
        })
        .await??;
        crate::verify::check_response_fields(&response, &checked.facts)?;
        self.check_inclusion(&response, &leaf, &checked).await?;

        let material = Material {
            key_pem: key.pem().to_owned(),
            cert_pem: encode(Label::Certificate, &leaf),
            chain_pem: encode_all(Label::Certificate, &intermediates),
        };
        store::install(&self.settings.layout, &material).map_err(write_failure)?;
        let facts = checked.facts;
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
        self.replaced(&facts.serial);
        let bundle_error = match self.commit(judged) {
            Ok((_, e)) => e,
            Err(e) => Some(e),
        };
        let reload_error = self.reload(Event::Renewed).await;
        Ok(Renewed {
            facts,
            bundle_error,
            reload_error,
        })
    }

    /// A new certificate (`serial`) is installed: a revoked one is gone, and
    /// a marker naming another certificate is stale.
    fn replaced(&mut self, serial: &str) {
        if let Some(old) = self.revoked.take() {
            self.metrics.revoked_reenrolment();
            tracing::info!(
                revoked = %old.serial,
                serial,
                "replaced the revoked certificate (new key)"
            );
        }
        self.metrics.set_revoked(false);
        self.crl_revoked = None;
        if matches!(read_marker(&self.settings.state_dir), Ok(Some(m)) if m.serial != serial) {
            if let Err(e) = remove_marker(&self.settings.state_dir) {
                tracing::warn!(error = %e, "stale revocation marker not removed");
            }
        }
    }

    /// Whether `installed` is revoked (the marker of `ca-client revoke`, or
    /// the own class's CRL), remembered with its key; `Some(reenrol)` when
    /// it is.
    fn revocation_of(&mut self, installed: &Installed) -> Option<bool> {
        let serial = &installed.facts.serial;
        let marker = match read_marker(&self.settings.state_dir) {
            Ok(m) => m.filter(|m| m.serial == *serial && m.class == self.settings.class),
            Err(e) => {
                tracing::warn!(error = %e, "revocation marker ignored");
                None
            }
        };
        let by_crl = self
            .crl_revoked
            .as_ref()
            .filter(|(s, _)| s == serial)
            .map(|(_, issuer)| issuer.clone());
        if marker.is_none() && by_crl.is_none() {
            self.revoked = None;
            self.metrics.set_revoked(false);
            return None;
        }
        let reenrol = marker.as_ref().is_none_or(|m| m.reenrol);
        let known = self
            .revoked
            .as_ref()
            .is_some_and(|r| r.serial == *serial && r.reenrol == reenrol);
        if !known {
            let how = match (&marker, &by_crl) {
                (Some(m), _) => format!("ca-client revoke ({})", m.reason),
                (None, Some(issuer)) => format!("listed in the CRL of '{issuer}'"),
                (None, None) => String::new(),
            };
            tracing::error!(
                serial = %serial,
                reenrol,
                "the installed certificate is revoked: {how}"
            );
            if !reenrol {
                tracing::error!(
                    serial = %serial,
                    "not enrolling again (ca-client revoke --no-reenrol); run ca-client --once to enrol"
                );
            }
        }
        self.metrics.set_revoked(true);
        self.revoked = Some(RevokedCert {
            serial: serial.clone(),
            reenrol,
        });
        Some(reenrol)
    }

    /// One CRL refresh of the own and trust classes (see
    /// [`crate::revocation`]); `Err` when the CA client or the pins are not
    /// usable at all.
    pub async fn refresh_crls(&mut self) -> Result<Round, Failure> {
        let api = self.api().await?;
        self.preflight()?;
        let pins = self.load_pins()?;
        let installed = self.inspect().ok();
        let job = Job {
            settings: &self.settings,
            pins: &pins,
            own: installed
                .as_ref()
                .map(|i| (&i.leaf, i.intermediates.as_slice())),
            now: crate::unix_now(),
        };
        let round = self.crls.refresh(&api, &job, &self.metrics).await;
        self.crl_pending = round.skipped > 0;
        self.crl_revoked = match (&installed, &round.own_revoked_by) {
            (Some(i), Some(issuer)) => Some((i.facts.serial.clone(), issuer.clone())),
            _ => None,
        };
        Ok(round)
    }

    /// `ca-client revoke`: revokes the installed certificate with its own
    /// key and leaves the marker for the daemon ([`crate::revoke`]).
    pub async fn revoke(
        &mut self,
        reason: ca_proto::revocation::RevocationReason,
        reenrol: bool,
    ) -> Result<Revoked, RevokeError> {
        let api = self
            .api()
            .await
            .map_err(|f| RevokeError::Client(f.message))?;
        crate::revoke::revoke_installed(&self.settings, &api, reason, reenrol).await
    }

    /// A CRL refresh for `--once`: failures become warnings (exit status
    /// 0: the certificate is in place), except a CA that publishes no CRL
    /// (404), which is only logged.
    async fn once_crls(&mut self) {
        match self.refresh_crls().await {
            Ok(round) => {
                for e in round.failures {
                    if e.not_served() {
                        tracing::debug!(error = %e, "no CRL served");
                    } else {
                        self.warnings.push(e.to_string());
                    }
                }
                if !round.changed.is_empty() {
                    if let Some(e) = self.reload(Event::CrlChanged).await {
                        self.warnings.push(e);
                    }
                }
            }
            Err(f) => self.warnings.push(format!("CRL refresh: {}", f.message)),
        }
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
    pub fn inspect(&self) -> Result<Installed, Unusable> {
        inspect(&self.settings.layout, self.class_roots.as_deref())
    }

    fn trust_files_present(&self) -> bool {
        self.settings.trust.iter().all(|class| {
            std::fs::read(self.settings.layout.trust_path(class))
                .is_ok_and(|b| parse_certs(&b).is_ok())
        })
    }

    /// `--once`: make sure valid files are in place (see the binary's
    /// documentation). `Err` says why not.
    pub async fn run_once(&mut self, only_if_needed: bool) -> Result<OnceOutcome, OnceError> {
        let mut outcome = self.once(only_if_needed).await?;
        // Refused bundle roots are said on standard error (exit status 0:
        // the pinned roots were kept and are what the files hold).
        let warnings: Vec<String> = self
            .warnings
            .drain(..)
            .map(|w| format!("warning: {w}"))
            .chain(outcome.warning.take())
            .collect();
        outcome.warning = (!warnings.is_empty()).then(|| warnings.join("; "));
        Ok(outcome)
    }

    async fn once(&mut self, only_if_needed: bool) -> Result<OnceOutcome, OnceError> {
        let now = crate::unix_now();
        let installed = crate::inspect::inspect(&self.settings.layout, None);
        let present = match &installed {
            Ok(i) => i.present(),
            Err(why) => crate::renew::Present::Unusable(why.to_string()),
        };
        let mut decision = if_needed(&present, now, self.settings.renew_fraction);
        if let Ok(i) = &installed {
            match self.revocation_of(i) {
                Some(false) if only_if_needed => {
                    return Err(OnceError::Renewal(Failure::new(
                        FailureKind::Permanent,
                        "revoked",
                        format!(
                            "certificate {} was revoked with --no-reenrol: not enrolling again \
                             (run without --if-needed to enrol)",
                            i.facts.serial
                        ),
                    )))
                }
                Some(_) => decision = Decision::Renew("certificate revoked".into()),
                None => {}
            }
        }
        if only_if_needed {
            if let Decision::Keep { renew_at } = decision {
                let not_after = match present {
                    crate::renew::Present::Valid { not_after, .. } => not_after,
                    crate::renew::Present::Unusable(_) => now,
                };
                if !self.trust_files_present() {
                    let changed = self.refresh_bundles().await.map_err(OnceError::Bundles)?;
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
                if let Some(failure) = r.bundle_error {
                    return Err(OnceError::BundleAfterInstall {
                        serial: r.facts.serial,
                        failure,
                    });
                }
                self.once_crls().await;
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
                if let (true, crate::renew::Present::Valid { not_after, .. }, None) =
                    (only_if_needed, &present, &self.revoked)
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
                Err(OnceError::Renewal(f))
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
        let mut next_crls = Instant::now();
        let mut crl_backoff = crl_backoff(self.settings.crl_refresh);
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

            // CRLs, on their own schedule.
            if Instant::now() >= next_crls {
                let round = tokio::select! {
                    r = self.refresh_crls() => r,
                    () = &mut shutdown => return,
                };
                next_crls = Instant::now() + self.after_crl_round(round, &mut crl_backoff).await;
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
                    let revoked = self.revocation_of(&i);
                    if revoked == Some(true) {
                        (Some("certificate revoked".to_owned()), now)
                    } else if revoked == Some(false) {
                        // Revoked with --no-reenrol: keep still.
                        (None, i64::MAX)
                    } else if now >= i.facts.not_after {
                        (Some("certificate expired".to_owned()), at)
                    } else if now + MAX_CLOCK_SKEW < i.facts.not_before {
                        // A clock that jumped back: never sit idle until
                        // a notBefore far ahead.
                        (Some("certificate not yet valid".to_owned()), now)
                    } else if now >= at {
                        (Some("renewal point reached".to_owned()), at)
                    } else {
                        (None, at)
                    }
                }
                Err(why) => {
                    self.metrics.set_certificate(None);
                    (Some(why.to_string()), now)
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
                            if self.crl_pending {
                                // Classes pinned just now: their CRLs too.
                                next_crls = Instant::now();
                            }
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
                () = tokio::time::sleep_until(wake.min(next_crls)) => {}
                () = &mut shutdown => return,
            }
        }
    }

    /// Logs a CRL refresh, runs the reload action when a CRL file changed,
    /// and returns the delay before the next refresh.
    async fn after_crl_round(
        &mut self,
        round: Result<Round, Failure>,
        backoff: &mut Backoff,
    ) -> Duration {
        let (round, setup) = match round {
            Ok(r) => (r, None),
            Err(f) => (Round::default(), Some(f)),
        };
        if !round.changed.is_empty() {
            let _ = self.reload(Event::CrlChanged).await;
        }
        let first = setup
            .clone()
            .or_else(|| round.failures.first().cloned().map(Failure::from));
        let Some(first) = first else {
            backoff.reset();
            return crl_refresh_delay(
                crate::unix_now(),
                self.settings.crl_refresh,
                round.earliest_next_update,
                crate::random_unit(),
            );
        };
        let delay = retry_delay(first.kind, backoff, crate::random_unit(), first.retry_after);
        for e in &round.failures {
            if e.not_served() {
                tracing::info!(
                    class = %e.class(),
                    retry_in_secs = delay.as_secs_f64(),
                    "the CA serves no CRL: {e}"
                );
            } else {
                tracing::warn!(
                    class = %e.class(),
                    reason = %e.reason(),
                    retry_in_secs = delay.as_secs_f64(),
                    "CRL refresh failed: {e}"
                );
            }
        }
        if let Some(f) = setup {
            tracing::warn!(
                reason = %f.reason,
                retry_in_secs = delay.as_secs_f64(),
                "CRL refresh failed: {}", f.message
            );
        }
        delay
    }
}
