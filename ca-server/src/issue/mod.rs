//! The issuing authority: the one place that turns a request into a
//! certificate, in one call that decides, builds, lints, signs and records
//! (decode → prove → decide → build → lint → sign → lint → record), one
//! module per step. Nothing outside this module can obtain a signed leaf
//! except through [`Authority::issue`] / [`Authority::issue_blocking`],
//! which append it to the issuance log first: the signed certificate lives
//! in a private type until the append succeeded, and [`Issued`] cannot be
//! made anywhere else:
//!
//! ```compile_fail
//! fn forge(der: Vec<u8>, grant: policies::Grant) -> ca_server::issue::Issued {
//!     ca_server::issue::Issued {
//!         der,
//!         pem: String::new(),
//!         chain_pem: String::new(),
//!         serial_hex: String::new(),
//!         not_before: time::OffsetDateTime::UNIX_EPOCH,
//!         not_after: time::OffsetDateTime::UNIX_EPOCH,
//!         grant,
//!         spki_sha256: String::new(),
//!         issuer_fingerprint: String::new(),
//!         logged: None,
//!     }
//! }
//! ```
//!
//! Denials the requester caused are recorded by the same call, from domain
//! reasons. The CSR work and the signature run on a signing-pool thread
//! (CSR verification and certificate building use all cores without
//! blocking the async executor, and the HSM session is at hand); the log
//! append is awaited on the caller's task. Layering: server → issue → log.

pub mod build;
pub mod decode;
pub mod lint;
pub mod prove;
mod record;
pub mod sign;

pub use record::{printable, Recorder};

use crate::hierarchy::{to_pem, IssuingCa, LoadedClass};
use crate::log::{LogError, Logged};
use ca_proto::sth::LogEvidence;
use ca_proto::ErrorCode;
use hsm::{PoolSession, SigningPool};
use policies::{ClassPolicy, CsrFacts, Decision, Grant, PolicySet, Reason, Request};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;
use time::OffsetDateTime;

/// A request as the pipeline takes it, owned so it can move to a pool thread.
#[derive(Clone, Debug)]
pub struct IssueRequest {
    pub class: String,
    pub profile: Option<String>,
    /// PEM or DER.
    pub csr: Vec<u8>,
    /// Replace the CSR's SANs (CFSSL semantics): None keeps them.
    pub hosts: Option<Vec<String>>,
    pub ttl: Option<Duration>,
}

/// A signed certificate and everything the response and the log need.
#[derive(Clone, Debug)]
pub struct Issued {
    pub der: Vec<u8>,
    pub pem: String,
    /// Leaf then intermediate.
    pub chain_pem: String,
    pub serial_hex: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub grant: Grant,
    pub spki_sha256: String,
    pub issuer_fingerprint: String,
    /// Where the certificate is in the issuance log; `None` only when the
    /// authority records nothing ([`Recorder::Nothing`]).
    pub logged: Option<Logged>,
    /// Only this module makes an `Issued`, after recording it.
    _recorded: Recorded,
}

impl Issued {
    /// The client's proof that the certificate is in the issuance log
    /// (`None` when nothing is recorded), assembled here on the caller's
    /// thread; only responses that carry it ask for it.
    pub fn evidence(&self) -> Result<Option<LogEvidence>, LogError> {
        self.logged.as_ref().map(Logged::evidence).transpose()
    }
}

/// The seal on [`Issued`] (private: see the module documentation).
#[derive(Clone, Debug)]
struct Recorded;

/// Who is asking: the auth key's id (recorded in the log) and what it may
/// request.
pub struct Caller<'a> {
    pub key_id: &'a str,
    pub scope: &'a dyn Scope,
}

/// What a caller may request.
pub trait Scope: Sync {
    fn allows(&self, class: &str, profile: &str) -> bool;
}

/// The server itself (its own TLS certificate) and the admin tools: any
/// class and profile.
pub struct Operator;

impl Scope for Operator {
    fn allows(&self, _class: &str, _profile: &str) -> bool {
        true
    }
}

/// A signed certificate that is not recorded yet: never leaves this module.
pub(crate) struct Pending {
    signed: sign::Signed,
    grant: Grant,
    serial_hex: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    spki_sha256: String,
    issuer: Arc<IssuingCa>,
    issuer_fingerprint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("unknown class '{0}'")]
    UnknownClass(String),
    #[error(transparent)]
    Decode(#[from] decode::DecodeError),
    #[error(transparent)]
    Proof(#[from] prove::ProofError),
    #[error("denied by policy: {}", reasons_text(.reasons))]
    Denied {
        reasons: Vec<Reason>,
        facts: Box<CsrFacts>,
    },
    #[error(transparent)]
    Build(#[from] build::BuildError),
    #[error(transparent)]
    Lint(#[from] lint::LintError),
    #[error(transparent)]
    Sign(#[from] sign::SignError),
    #[error("signing pool unavailable")]
    PoolClosed,
    /// The class state retired the loaded intermediate and its successor
    /// could not be loaded: nothing is issued from the retired one.
    #[error("class '{class}' is not issuing: {reason}")]
    Suspended { class: String, reason: String },
    #[error("key '{key_id}' may not request class '{}' profile '{}'", printable(.class), printable(.profile))]
    ForbiddenScope {
        key_id: String,
        class: String,
        profile: String,
    },
    /// Signed but not durably recorded: the certificate was discarded.
    #[error("the issuance log is unavailable; nothing was issued ({0})")]
    NotRecorded(LogError),
    /// The authority was given no [`Recorder`]: it refuses to issue.
    #[error("no issuance log attached; nothing was issued")]
    NoRecorder,
    /// The CSR's public key was revoked for key compromise (in any class):
    /// it is never certified again.
    #[error("the public key (SPKI SHA-256 {spki}) was revoked for key compromise and is never certified again")]
    KeyRevoked { spki: String },
}

fn reasons_text(reasons: &[Reason]) -> String {
    reasons
        .iter()
        .map(|r| format!("{}: {}", r.code.as_str(), r.detail))
        .collect::<Vec<_>>()
        .join("; ")
}

impl IssueError {
    pub fn code(&self) -> ErrorCode {
        match self {
            IssueError::UnknownClass(_) => ErrorCode::UnknownClass,
            IssueError::Decode(_) => ErrorCode::MalformedCsr,
            IssueError::Proof(_) => ErrorCode::BadCsrSignature,
            IssueError::Denied { .. } => ErrorCode::PolicyDenied,
            IssueError::Sign(sign::SignError::Hsm(e)) if e.is_unavailable() => {
                ErrorCode::HsmUnavailable
            }
            IssueError::PoolClosed | IssueError::Suspended { .. } => ErrorCode::HsmUnavailable,
            IssueError::ForbiddenScope { .. } => ErrorCode::ForbiddenScope,
            IssueError::KeyRevoked { .. } => ErrorCode::KeyRevoked,
            IssueError::NotRecorded(e) => e.code(),
            IssueError::NoRecorder => ErrorCode::LogUnavailable,
            IssueError::Build(_) | IssueError::Lint(_) | IssueError::Sign(_) => ErrorCode::Internal,
        }
    }
}

/// The CA as the server holds it: policies, the loaded classes, the pool,
/// and where it records.
pub struct Authority {
    policies: PolicySet,
    classes: RwLock<BTreeMap<String, Arc<LoadedClass>>>,
    /// Classes that must not issue, with why (see [`Authority::suspend_class`]).
    suspended: RwLock<BTreeMap<String, String>>,
    pool: SigningPool,
    /// Set once; issuing without it is refused.
    recorder: OnceLock<Recorder>,
    /// SPKI SHA-256 (hex) of keys revoked for keyCompromise, in any class.
    blocked_keys: RwLock<Arc<HashSet<String>>>,
}

impl Authority {
    pub fn new(policies: PolicySet, classes: Vec<LoadedClass>, pool: SigningPool) -> Authority {
        let classes = classes
            .into_iter()
            .map(|c| (c.name.clone(), Arc::new(c)))
            .collect();
        Authority {
            policies,
            classes: RwLock::new(classes),
            suspended: RwLock::new(BTreeMap::new()),
            pool,
            recorder: OnceLock::new(),
            blocked_keys: RwLock::new(Arc::new(HashSet::new())),
        }
    }

    /// The public keys (SPKI SHA-256, hex) never to certify again: those
    /// revoked for keyCompromise (`revoke::Revocations` keeps it current).
    pub fn set_blocked_keys(&self, keys: HashSet<String>) {
        *self.blocked_keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
    }

    /// Add keys to those never certified again.
    pub fn block_keys(&self, keys: impl IntoIterator<Item = String>) {
        let mut blocked = self.blocked_keys.write().unwrap_or_else(|p| p.into_inner());
        let mut next = (**blocked).clone();
        let before = next.len();
        next.extend(keys);
        if next.len() != before {
            *blocked = Arc::new(next);
        }
    }

    fn blocked_keys(&self) -> Arc<HashSet<String>> {
        self.blocked_keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Where every decision is recorded, from now on (the first call wins:
    /// a recorder is never swapped under running requests). Until one is
    /// set, issuing fails with [`IssueError::NoRecorder`].
    pub fn set_recorder(&self, recorder: Recorder) {
        let _ = self.recorder.set(recorder);
    }

    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }

    pub fn pool(&self) -> &SigningPool {
        &self.pool
    }

    pub fn class(&self, name: &str) -> Option<Arc<LoadedClass>> {
        self.classes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    pub fn classes(&self) -> Vec<Arc<LoadedClass>> {
        self.classes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Replace a class (after an intermediate rotation); requests already
    /// running keep the `Arc` they started with.
    pub fn replace_class(&self, class: LoadedClass) {
        self.suspended
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&class.name);
        self.classes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(class.name.clone(), Arc::new(class));
    }

    /// Stop issuing for a class until [`Authority::replace_class`] loads
    /// it again: the class state says its loaded intermediate is retired and
    /// the new one cannot be loaded. Requests get `hsm_unavailable`.
    pub fn suspend_class(&self, class: &str, reason: String) {
        self.suspended
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(class.to_string(), reason);
    }

    /// Classes not issuing, with why.
    pub fn suspended(&self) -> BTreeMap<String, String> {
        self.suspended
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The one place a request's profile is resolved: the named profile, or
    /// the class default when none (or an empty one) is named.
    pub fn resolve_profile(
        &self,
        class: &str,
        profile: Option<&str>,
    ) -> Result<String, IssueError> {
        let policy = self
            .policies
            .get(class)
            .ok_or_else(|| IssueError::UnknownClass(printable(class)))?;
        Ok(match profile {
            Some(p) if !p.is_empty() => p.to_string(),
            _ => policy.default_profile().to_string(),
        })
    }

    /// Decide, build, lint, sign and record. The certificate comes back only
    /// once its log entry is durable, with the evidence; a refusal the
    /// requester caused is recorded before it is returned.
    pub async fn issue(
        self: &Arc<Self>,
        mut request: IssueRequest,
        caller: &Caller<'_>,
    ) -> Result<Issued, IssueError> {
        let recorder = self.recorder.get().ok_or(IssueError::NoRecorder)?.clone();
        let step = match self.admit(&mut request, caller) {
            Ok(()) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let authority = self.clone();
                let job = request.clone();
                let key_id = caller.key_id.to_string();
                let log = recorder.log().cloned();
                // If the pool is closed the job (and with it `tx`) is
                // dropped, which reads as `PoolClosed`. A signed certificate
                // goes from the pool thread straight to the log writer, whose
                // outcome comes back here with it (one thread hop fewer).
                let _ = self.pool.execute(move |session| {
                    // The log's next batch waits (briefly) for this entry.
                    let _promise = log.as_ref().map(|log| log.promise());
                    match (authority.pipeline(session, &job), log) {
                        (Ok(pending), Some(log)) => {
                            let entry = record::issued_entry(&pending, &key_id);
                            log.append_then(entry, move |logged| {
                                let _ = tx.send(Step::Logged(pending, logged));
                            });
                        }
                        (Ok(pending), None) => {
                            let _ = tx.send(Step::Unlogged(pending));
                        }
                        (Err(e), _) => {
                            let _ = tx.send(Step::Refused(e));
                        }
                    }
                });
                rx.await.unwrap_or(Step::Refused(IssueError::PoolClosed))
            }
            Err(e) => Step::Refused(e),
        };
        match step {
            Step::Logged(pending, Ok(logged)) => Ok(pending.seal(Some(logged))),
            Step::Logged(pending, Err(e)) => Err(withheld(&pending, caller, e)),
            Step::Unlogged(pending) => Ok(pending.seal(None)),
            Step::Refused(e) => {
                if let (Some(log), Some(entry)) = (recorder.log(), denial(&request, caller, &e)) {
                    if let Err(le) = log.append(entry).await {
                        tracing::error!(event = "log_denial_failed", class = %printable(&request.class), key_id = %caller.key_id, "{le}");
                    }
                }
                Err(e)
            }
        }
    }

    /// [`Authority::issue`] for non-async callers (admin commands, tests):
    /// runs the pipeline on a pool thread and waits, then records.
    pub fn issue_blocking(
        self: &Arc<Self>,
        mut request: IssueRequest,
        caller: &Caller<'_>,
    ) -> Result<Issued, IssueError> {
        let recorder = self.recorder.get().ok_or(IssueError::NoRecorder)?.clone();
        let outcome = self.admit(&mut request, caller).and_then(|()| {
            let authority = self.clone();
            let job = request.clone();
            self.pool
                .run(move |session| authority.pipeline(session, &job))
                .map_err(|_| IssueError::PoolClosed)?
        });
        match (outcome, recorder.log()) {
            (Ok(pending), Some(log)) => {
                match log.append_blocking(record::issued_entry(&pending, caller.key_id)) {
                    Ok(logged) => Ok(pending.seal(Some(logged))),
                    Err(e) => Err(withheld(&pending, caller, e)),
                }
            }
            (Ok(pending), None) => Ok(pending.seal(None)),
            (Err(e), Some(log)) => {
                if let Some(entry) = denial(&request, caller, &e) {
                    if let Err(le) = log.append_blocking(entry) {
                        tracing::error!(event = "log_denial_failed", class = %printable(&request.class), key_id = %caller.key_id, "{le}");
                    }
                }
                Err(e)
            }
            (Err(e), None) => Err(e),
        }
    }

    /// Class known, profile resolved (written back into the request), scope.
    fn admit(&self, request: &mut IssueRequest, caller: &Caller<'_>) -> Result<(), IssueError> {
        let profile = self.resolve_profile(&request.class, request.profile.as_deref())?;
        request.profile = Some(profile.clone());
        if !caller.scope.allows(&request.class, &profile) {
            return Err(IssueError::ForbiddenScope {
                key_id: caller.key_id.to_string(),
                class: request.class.clone(),
                profile,
            });
        }
        Ok(())
    }

    /// On a pool thread: everything up to a signed, linted certificate.
    fn pipeline(
        &self,
        session: &mut PoolSession,
        request: &IssueRequest,
    ) -> Result<Pending, IssueError> {
        let class = self
            .class(&request.class)
            .ok_or_else(|| IssueError::UnknownClass(request.class.clone()))?;
        if let Some(reason) = self
            .suspended
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&request.class)
        {
            return Err(IssueError::Suspended {
                class: request.class.clone(),
                reason: reason.clone(),
            });
        }
        let policy = self
            .policies
            .get(&request.class)
            .ok_or_else(|| IssueError::UnknownClass(request.class.clone()))?;
        issue(session, &class, policy, request, &self.blocked_keys())
    }
}

/// The denial entry for a refusal, if the requester caused it.
fn denial(
    request: &IssueRequest,
    caller: &Caller<'_>,
    error: &IssueError,
) -> Option<ca_proto::logentry::LogEntry> {
    record::denial_entry(
        error,
        &request.class,
        request.profile.as_deref().unwrap_or_default(),
        caller.key_id,
        request.hosts.as_deref(),
    )
}

/// A signed certificate whose log append failed: discarded, and said so.
/// Where an admitted request stands when it comes back from the pool.
enum Step {
    /// Signed, and the log's outcome for its entry.
    Logged(Pending, Result<Logged, LogError>),
    /// Signed, with recording off.
    Unlogged(Pending),
    /// Refused (or the pool is gone): nothing was signed.
    Refused(IssueError),
}

fn withheld(pending: &Pending, caller: &Caller<'_>, e: LogError) -> IssueError {
    tracing::error!(decision = "failed", class = %pending.grant.class(), key_id = %caller.key_id, serial = %pending.serial_hex, code = e.code().as_str(), "issuance log: {e}; certificate withheld");
    IssueError::NotRecorded(e)
}

impl Pending {
    /// Recorded (or recording is off): the certificate may leave.
    fn seal(self, logged: Option<Logged>) -> Issued {
        let der = self.signed.into_der();
        let pem = to_pem(&der);
        Issued {
            chain_pem: format!(
                "{pem}{}{}",
                self.issuer.cert_pem, self.issuer.chain_extra_pem
            ),
            pem,
            der,
            serial_hex: self.serial_hex,
            not_before: self.not_before,
            not_after: self.not_after,
            spki_sha256: self.spki_sha256,
            issuer_fingerprint: self.issuer_fingerprint,
            grant: self.grant,
            logged,
            _recorded: Recorded,
        }
    }
}

/// decode → prove → decide: the CSR's facts and the policy's decision, for
/// issuing and for `ca-server policy check` alike.
fn decide<T>(
    policy: &ClassPolicy,
    csr_input: &[u8],
    profile: Option<&str>,
    hosts: Option<&[String]>,
    ttl: Option<Duration>,
    then: impl FnOnce(
        &x509_parser::certification_request::X509CertificationRequest<'_>,
        Grant,
    ) -> Result<T, IssueError>,
) -> Result<T, IssueError> {
    let der = decode::csr_der_from_input(csr_input)?;
    let csr = decode::parse(&der)?;
    let facts = decode::facts(&csr)?;
    let decision = || {
        policy.decide(&Request {
            profile,
            csr: &facts,
            hosts,
            ttl,
        })
    };
    if let Err(proof) = prove::proof_of_possession(&csr) {
        return Err(weak_crypto_denial(decision(), &facts).unwrap_or(IssueError::Proof(proof)));
    }
    match decision() {
        Decision::Grant(grant) => then(&csr, grant),
        Decision::Deny(reasons) => Err(IssueError::Denied {
            reasons,
            facts: Box::new(facts),
        }),
    }
}

/// decode → prove → decide → build → lint → sign → lint.
fn issue(
    session: &mut PoolSession,
    class: &LoadedClass,
    policy: &ClassPolicy,
    request: &IssueRequest,
    blocked_keys: &HashSet<String>,
) -> Result<Pending, IssueError> {
    decide(
        policy,
        &request.csr,
        request.profile.as_deref(),
        request.hosts.as_deref(),
        request.ttl,
        |csr, grant| {
            use sha2::{Digest, Sha256};
            let spki_der = csr.certification_request_info.subject_pki.raw;
            let spki_sha256 = hex::encode(Sha256::digest(spki_der));
            if blocked_keys.contains(&spki_sha256) {
                return Err(IssueError::KeyRevoked { spki: spki_sha256 });
            }
            let issuer = class.active.clone();
            let built = build::leaf_params(&grant, &issuer, OffsetDateTime::now_utc())?;
            lint::before_signing(&built, &issuer)?;
            let subject_key = rcgen::SubjectPublicKeyInfo::from_der(spki_der)
                .map_err(decode::DecodeError::UnsupportedKey)?;
            let signed = sign::sign_leaf(&class.name, session, &issuer, &built, &subject_key)?;
            lint::after_signing(signed.der(), &built, &grant, spki_der)?;
            Ok(Pending {
                signed,
                serial_hex: hex::encode(built.serial()),
                not_before: built.not_before(),
                not_after: built.not_after(),
                spki_sha256,
                issuer_fingerprint: issuer.fingerprint.clone(),
                issuer,
                grant,
            })
        },
    )
}

/// Our verifier refuses what policy forbids anyway (RSA-1024, P-192, SHA-1):
/// when the proof fails for such a CSR, the policy reason is the real answer.
fn weak_crypto_denial(decision: Decision, facts: &CsrFacts) -> Option<IssueError> {
    use policies::ReasonCode::{KeyAlgorithmNotAllowed, KeyTooSmall, SignatureAlgorithmNotAllowed};
    let Decision::Deny(reasons) = decision else {
        return None;
    };
    let weak: Vec<Reason> = reasons
        .into_iter()
        .filter(|r| {
            matches!(
                r.code,
                KeyAlgorithmNotAllowed | KeyTooSmall | SignatureAlgorithmNotAllowed
            )
        })
        .collect();
    (!weak.is_empty()).then(|| IssueError::Denied {
        reasons: weak,
        facts: Box::new(facts.clone()),
    })
}

/// decode → prove → decide without signing, for `ca-server policy check`:
/// the decision as text (JSON) and whether it was a grant.
pub fn explain(
    policies: &PolicySet,
    class: &str,
    profile: Option<&str>,
    csr_input: &[u8],
    hosts: Option<&[String]>,
    ttl: Option<Duration>,
) -> (String, bool) {
    let outcome = policies
        .get(class)
        .ok_or_else(|| IssueError::UnknownClass(class.to_string()))
        .and_then(|policy| {
            // Nothing is built or signed: the decision is the answer.
            decide(policy, csr_input, profile, hosts, ttl, |_, grant| Ok(grant))
        });
    let decision = match outcome {
        Ok(grant) => Ok(Decision::Grant(grant)),
        Err(IssueError::Denied { reasons, .. }) => Ok(Decision::Deny(reasons)),
        Err(e) => Err(e),
    };
    match decision {
        Ok(decision) => {
            let granted = matches!(decision, Decision::Grant(_));
            let text = serde_json::to_string_pretty(&decision).unwrap_or_else(|e| e.to_string());
            (text, granted)
        }
        Err(e) => (
            serde_json::json!({"error": {"code": e.code().as_str(), "message": e.to_string()}})
                .to_string(),
            false,
        ),
    }
}
