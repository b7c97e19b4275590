//! The issuance pipeline, one module per step (see DESIGN.md):
//! decode → prove → decide → build → lint → sign. Recording and responding
//! belong to the server. Everything here runs on a signing-pool thread, so
//! CSR verification and certificate building use all cores without ever
//! blocking the async executor, and the HSM session is already at hand.

pub mod build;
pub mod decode;
pub mod lint;
pub mod prove;
pub mod sign;

use crate::hierarchy::{to_pem, LoadedClass};
use ca_proto::ErrorCode;
use hsm::{PoolSession, SigningPool};
use policies::{ClassPolicy, CsrFacts, Decision, Grant, PolicySet, Reason, Request};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
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
            IssueError::Build(_) | IssueError::Lint(_) | IssueError::Sign(_) => ErrorCode::Internal,
        }
    }
}

/// The CA as the server holds it: policies, the loaded classes, the pool.
pub struct Authority {
    policies: PolicySet,
    classes: RwLock<BTreeMap<String, Arc<LoadedClass>>>,
    /// Classes that must not issue, with why (see [`Authority::suspend_class`]).
    suspended: RwLock<BTreeMap<String, String>>,
    pool: SigningPool,
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
        }
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

    /// Run the pipeline on a pool thread; `reply` gets the result there.
    pub fn submit(
        self: &Arc<Self>,
        request: IssueRequest,
        reply: impl FnOnce(Result<Issued, IssueError>) + Send + 'static,
    ) {
        let authority = self.clone();
        // If the pool is closed the job (and with it `reply`) is dropped;
        // callers treat a dropped reply as `PoolClosed`.
        let _ = self
            .pool
            .execute(move |session| reply(authority.issue_with(session, &request)));
    }

    /// Run the pipeline on a pool thread and wait (admin commands, tests).
    pub fn issue_blocking(self: &Arc<Self>, request: IssueRequest) -> Result<Issued, IssueError> {
        let authority = self.clone();
        self.pool
            .run(move |session| authority.issue_with(session, &request))
            .map_err(|_| IssueError::PoolClosed)?
    }

    fn issue_with(
        &self,
        session: &mut PoolSession,
        request: &IssueRequest,
    ) -> Result<Issued, IssueError> {
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
        issue(session, &class, policy, request)
    }
}

/// decode → prove → decide → build → lint → sign → lint.
pub fn issue(
    session: &mut PoolSession,
    class: &LoadedClass,
    policy: &ClassPolicy,
    request: &IssueRequest,
) -> Result<Issued, IssueError> {
    let der = decode::csr_der_from_input(&request.csr)?;
    let csr = decode::parse(&der)?;
    let facts = decode::facts(&csr)?;
    let decide = || {
        policy.decide(&Request {
            profile: request.profile.as_deref(),
            csr: &facts,
            hosts: request.hosts.as_deref(),
            ttl: request.ttl,
        })
    };
    if let Err(proof) = prove::proof_of_possession(&csr) {
        return Err(weak_crypto_denial(decide(), &facts).unwrap_or(IssueError::Proof(proof)));
    }
    let grant = match decide() {
        Decision::Grant(grant) => grant,
        Decision::Deny(reasons) => {
            return Err(IssueError::Denied {
                reasons,
                facts: Box::new(facts),
            })
        }
    };
    let issuer = class.active.clone();
    let built = build::leaf_params(&grant, &issuer, OffsetDateTime::now_utc())?;
    lint::before_signing(&built, &issuer)?;
    let spki_der = csr.certification_request_info.subject_pki.raw;
    let subject_key = rcgen::SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|e| decode::DecodeError::Der(format!("unsupported public key: {e}")))?;
    let cert_der = sign::sign_leaf(&class.name, session, &issuer, &built.params, &subject_key)?;
    lint::after_signing(&cert_der, &built, &grant, spki_der)?;
    let pem = to_pem(&cert_der);
    use sha2::{Digest, Sha256};
    Ok(Issued {
        chain_pem: format!("{pem}{}{}", issuer.cert_pem, issuer.chain_extra_pem),
        pem,
        der: cert_der,
        serial_hex: hex::encode(built.serial),
        not_before: built.params.not_before,
        not_after: built.params.not_after,
        spki_sha256: hex::encode(Sha256::digest(spki_der)),
        issuer_fingerprint: issuer.fingerprint.clone(),
        grant,
    })
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
    let outcome = (|| -> Result<Decision, IssueError> {
        let policy = policies
            .get(class)
            .ok_or_else(|| IssueError::UnknownClass(class.to_string()))?;
        let der = decode::csr_der_from_input(csr_input)?;
        let csr = decode::parse(&der)?;
        let facts = decode::facts(&csr)?;
        let decision = policy.decide(&Request {
            profile,
            csr: &facts,
            hosts,
            ttl,
        });
        if let Err(proof) = prove::proof_of_possession(&csr) {
            return match weak_crypto_denial(decision, &facts) {
                Some(IssueError::Denied { reasons, .. }) => Ok(Decision::Deny(reasons)),
                _ => Err(IssueError::Proof(proof)),
            };
        }
        Ok(decision)
    })();
    match outcome {
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
