//! The CA hierarchy of each class: a self-signed root whose key lives in the
//! root token, and intermediates (path length 0) whose keys live in the
//! online token. This module creates them (admin commands) and loads them
//! (the server), and records their lifecycle in `classes/<class>/state.toml`.

mod create;
mod record;
pub mod roots;
pub mod rotate;

#[cfg(test)]
pub(crate) use create::ca_params;
pub use create::{init_class, publish_active, AdminTokens, CaShape};
pub use record::{ClassState, IntermediateRecord, IntermediateStatus};

use crate::state::StateDir;
use ca_proto::pem;
use hsm::{KeyInfo, Token};
use std::sync::Arc;
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum HierarchyError {
    #[error("class '{class}': {problem}")]
    State {
        class: String,
        problem: StateProblem,
    },
    #[error(transparent)]
    Hsm(#[from] hsm::HsmError),
    #[error("class '{class}': building a CA certificate: {message}")]
    Build { class: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What is wrong with a class's state for the step asked for.
#[derive(Debug, thiserror::Error)]
pub enum StateProblem {
    #[error("no active intermediate (run `ca-server init`)")]
    NoActive,
    #[error("{path}: {source}")]
    Unreadable {
        path: String,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("cannot be written: {0}")]
    Unwritable(#[source] Box<toml::ser::Error>),
    #[error("a root rotation is already prepared; activate it first")]
    RootAlreadyPrepared,
    #[error("the previous root is still published; run `rotate root-retire` first")]
    PreviousRootPublished,
    #[error("no prepared root (run `rotate root-prepare` first)")]
    NoPreparedRoot,
    #[error("no previous root to retire")]
    NoPreviousRoot,
    #[error("intermediate '{key}' ({status:?}) is signed by the previous root: rotate it, and retire it once its leaves expired")]
    SignedByPreviousRoot {
        key: String,
        status: record::IntermediateStatus,
    },
    #[error("intermediate '{0}' is already prepared; activate it first")]
    AlreadyPrepared(String),
    #[error("no prepared intermediate (run `rotate prepare` first)")]
    NothingPrepared,
}

impl HierarchyError {
    pub(crate) fn state(class: &str, problem: StateProblem) -> HierarchyError {
        HierarchyError::State {
            class: class.into(),
            problem,
        }
    }
}

/// An intermediate that can issue: its certificate, its key in the online
/// token, and the issuer fields rcgen needs.
pub struct IssuingCa {
    pub key: KeyInfo,
    pub cert_der: Vec<u8>,
    pub cert_pem: String,
    /// Appended to every chain after this intermediate: the cross
    /// certificate during a root rotation, else empty.
    pub chain_extra_pem: String,
    pub not_after: OffsetDateTime,
    pub fingerprint: String,
    /// What rcgen signs under, read once (`issue::sign::issuer_fields`);
    /// `None`: read from `cert_der` on every signature.
    pub(crate) issuer_fields: Option<rcgen::CertificateParams>,
    /// What the after-signing lint checks each leaf's issuer fields
    /// against, read once.
    pub(crate) facts: std::sync::Arc<crate::issue::build::IssuerFacts>,
}

/// A class as the server holds it.
pub struct LoadedClass {
    pub name: String,
    pub root_der: Vec<u8>,
    pub root_pem: String,
    /// Every published root (current first): the trust bundle.
    pub bundle_pem: String,
    pub root_fingerprint: String,
    pub active: Arc<IssuingCa>,
    /// Certificate (PEM) of the prepared intermediate, if one is waiting.
    pub prepared_pem: Option<String>,
}

/// SHA-256 of a DER certificate, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(der))
}

/// The first certificate in a PEM file (a file Trellis wrote: a root, an
/// intermediate, a cross certificate, the server's own chain).
pub fn read_pem_cert(path: &std::path::Path) -> Result<Vec<u8>, HierarchyError> {
    let io = |source| HierarchyError::Io {
        path: path.display().to_string(),
        source,
    };
    let text = std::fs::read(path).map_err(io)?;
    pem::decode_first(&text, pem::Label::Certificate, &pem::Limits::DEFAULT)
        .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

/// The first certificate in PEM text.
pub fn pem_to_der(text: &str) -> Option<Vec<u8>> {
    pem::decode_first(
        text.as_bytes(),
        pem::Label::Certificate,
        &pem::Limits::DEFAULT,
    )
    .ok()
}

/// PEM of one DER certificate.
pub fn to_pem(der: &[u8]) -> String {
    pem::encode(pem::Label::Certificate, der)
}

/// How often a key that the class state names but the online token does not
/// show may trigger a re-initialisation of the module (see
/// [`hsm::Token::public_key_rediscovering`]): rotation made by another
/// process is then picked up within this time plus the state poll.
pub const KEY_REDISCOVERY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Load a class for issuing: its root and active intermediate from the state
/// directory, and the intermediate's public key from the online token (which
/// also proves the key is there). A key made by another process (`rotate
/// prepare`) that the module does not show yet is looked for again, with a
/// re-initialisation of the module at most every
/// [`KEY_REDISCOVERY_INTERVAL`].
pub fn load_class(
    state: &StateDir,
    class: &str,
    online: &Token,
) -> Result<LoadedClass, HierarchyError> {
    let record = ClassState::read(state, class)?;
    let active = record
        .active()
        .ok_or_else(|| HierarchyError::state(class, StateProblem::NoActive))?;
    let root_der = read_pem_cert(&state.root_cert(class))?;
    let int_der = read_pem_cert(&state.intermediate_by_label(class, &active.key))?;
    let key = online.public_key_rediscovering(&active.key, KEY_REDISCOVERY_INTERVAL)?;
    let mut issuing = issuing_ca(class, key, int_der)?;
    issuing.chain_extra_pem = cross_for(state, class, &record, &root_der, &issuing.cert_der)?;
    let mut bundle_pem = to_pem(&root_der);
    for label in &record.published_roots {
        bundle_pem.push_str(&to_pem(&read_pem_cert(&state.root_by_label(class, label))?));
    }
    let prepared_pem = match record.prepared() {
        Some(p) => {
            // Made visible now, so that activation does not wait for it;
            // the active intermediate serves on if it is not (yet) there.
            if let Err(e) = online.public_key_rediscovering(&p.key, KEY_REDISCOVERY_INTERVAL) {
                tracing::warn!(event = "prepared_key_not_visible", class, key = %p.key, "{e}");
            }
            Some(to_pem(&read_pem_cert(
                &state.intermediate_by_label(class, &p.key),
            )?))
        }
        None => None,
    };
    Ok(LoadedClass {
        bundle_pem,
        prepared_pem,
        name: class.into(),
        root_pem: to_pem(&root_der),
        root_fingerprint: fingerprint(&root_der),
        root_der,
        active: Arc::new(issuing),
    })
}

/// The cross certificate to append after `int_der`, when the class root was
/// cross-signed by a still-published previous root and signed this
/// intermediate.
fn cross_for(
    state: &StateDir,
    class: &str,
    record: &ClassState,
    root_der: &[u8],
    int_der: &[u8],
) -> Result<String, HierarchyError> {
    let Some(previous) = &record.cross_signed_by else {
        return Ok(String::new());
    };
    let signed_by_current = match (
        x509_parser::parse_x509_certificate(root_der),
        x509_parser::parse_x509_certificate(int_der),
    ) {
        (Ok((_, root)), Ok((_, int))) => int.verify_signature(Some(root.public_key())).is_ok(),
        _ => false,
    };
    if !signed_by_current {
        return Ok(String::new());
    }
    Ok(to_pem(&read_pem_cert(&state.cross_cert(
        class,
        &record.root_key,
        previous,
    ))?))
}

pub(crate) fn issuing_ca(
    class: &str,
    key: KeyInfo,
    cert_der: Vec<u8>,
) -> Result<IssuingCa, HierarchyError> {
    let build = |message: String| HierarchyError::Build {
        class: class.into(),
        message,
    };
    let (_, parsed) =
        x509_parser::parse_x509_certificate(&cert_der).map_err(|e| build(e.to_string()))?;
    if parsed.public_key().subject_public_key.data.as_ref() != key.public_key.as_slice() {
        return Err(build(format!(
            "intermediate certificate does not match key '{}' in the token",
            key.label
        )));
    }
    let not_after = parsed.validity().not_after.to_datetime();
    let facts = std::sync::Arc::new(crate::issue::build::IssuerFacts::read(
        &parsed,
        key.algorithm,
    ));
    Ok(IssuingCa {
        facts,
        key,
        issuer_fields: crate::issue::sign::issuer_fields(&cert_der),
        cert_pem: to_pem(&cert_der),
        chain_extra_pem: String::new(),
        fingerprint: fingerprint(&cert_der),
        cert_der,
        not_after,
    })
}
