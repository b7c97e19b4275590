//! Creating a class: root key in the root token and a self-signed root
//! certificate; intermediate key in the online token, certificate signed by
//! the root. Used by `init`, `dev` and (later) `rotate prepare`.

use super::record::{ClassState, IntermediateRecord, IntermediateStatus};
use super::{read_pem_cert, to_pem, HierarchyError};
use crate::serial::random_serial;
use crate::state::{write_atomic, StateDir};
use hsm::{HsmSigningKey, KeyAlgorithm, KeyInfo, PoolSession, Token};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyUsagePurpose,
    SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

/// The two tokens admin commands work with.
pub struct AdminTokens {
    pub root: Token,
    pub online: Token,
}

impl AdminTokens {
    /// Both tokens can generate and sign with keys of `algorithm`: checked
    /// before a ceremony creates anything, so that a token which cannot
    /// leaves no half-made class (a root key without its intermediate).
    pub fn preflight(&self, class: &str, algorithm: KeyAlgorithm) -> Result<(), HierarchyError> {
        for (token, role) in [(&self.root, "root"), (&self.online, "int")] {
            token
                .capabilities()?
                .check_generate(&format!("{class}-{role}-…"), algorithm)
                .map_err(hsm::HsmError::Unsupported)?;
        }
        Ok(())
    }
}

/// How new CA certificates are shaped.
#[derive(Clone, Debug)]
pub struct CaShape {
    pub algorithm: KeyAlgorithm,
    pub organization: String,
    pub root_days: u32,
    pub intermediate_days: u32,
}

/// Create the class's root and first intermediate unless the class exists.
/// Returns whether anything was created. `state.toml` is written last, so an
/// interrupted run leaves no half-made class behind (only unused token keys).
pub fn init_class(
    state: &StateDir,
    class: &str,
    tokens: &AdminTokens,
    shape: &CaShape,
) -> Result<bool, HierarchyError> {
    if ClassState::exists(state, class) {
        return Ok(false);
    }
    tokens.preflight(class, shape.algorithm)?;
    let now = OffsetDateTime::now_utc();
    let root_key = tokens
        .root
        .generate_key(&key_label(class, "root", now)?, shape.algorithm)?;
    let mut root_params = ca_params(class, shape, now)?;
    root_params
        .distinguished_name
        .push(DnType::CommonName, format!("Trellis {class} root CA"));
    root_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    root_params.not_after = now + Duration::days(i64::from(shape.root_days));
    let mut session = PoolSession::new(tokens.root.clone());
    let signer = HsmSigningKey::new(&mut session, &root_key);
    let root = root_params
        .self_signed(&signer)
        .map_err(|e| sign_error(class, &signer, e))?;
    let root_der = root.der().to_vec();
    drop(signer);

    let record = create_intermediate(
        state,
        class,
        tokens,
        shape,
        &root_key,
        &root_der,
        IntermediateStatus::Active,
    )?;
    write(state, &state.root_cert(class), &to_pem(&root_der))?;
    write(state, &state.bundle(class), &to_pem(&root_der))?;
    publish_active(state, class, &record.key)?;
    ClassState {
        root_key: root_key.label,
        published_roots: Vec::new(),
        cross_signed_by: None,
        intermediates: vec![record],
    }
    .write(state, class)?;
    Ok(true)
}

/// A new intermediate key in the online token and its certificate, signed by
/// the class root. The certificate is stored under its key label; the caller
/// decides its status and records it.
pub fn create_intermediate(
    state: &StateDir,
    class: &str,
    tokens: &AdminTokens,
    shape: &CaShape,
    root_key: &KeyInfo,
    root_der: &[u8],
    status: IntermediateStatus,
) -> Result<IntermediateRecord, HierarchyError> {
    let now = OffsetDateTime::now_utc();
    let label = key_label(class, "int", now)?;
    let int_key = tokens.online.generate_key(&label, shape.algorithm)?;
    let mut params = ca_params(class, shape, now)?;
    params.distinguished_name.push(
        DnType::CommonName,
        format!("Trellis {class} intermediate {}", &label[class.len() + 5..]),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages.push(KeyUsagePurpose::DigitalSignature);
    params.use_authority_key_identifier_extension = true;
    let root_not_after = x509_parser::parse_x509_certificate(root_der)
        .map_err(|e| build_error(class, e.to_string()))?
        .1
        .validity()
        .not_after
        .to_datetime();
    params.not_after =
        (now + Duration::days(i64::from(shape.intermediate_days))).min(root_not_after);
    let mut session = PoolSession::new(tokens.root.clone());
    let signer = HsmSigningKey::new(&mut session, root_key);
    let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(root_der), &signer)
        .map_err(|e| build_error(class, e.to_string()))?;
    let subject_key = hsm_public(&int_key);
    let cert = params
        .signed_by(&subject_key, &issuer)
        .map_err(|e| sign_error(class, &signer, e))?;
    write(
        state,
        &state.intermediate_by_label(class, &label),
        &to_pem(cert.der()),
    )?;
    Ok(IntermediateRecord {
        key: label,
        status,
        not_after: params
            .not_after
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| build_error(class, e.to_string()))?,
        retired_at: None,
    })
}

/// Make `key_label`'s certificate the one in `intermediate.pem` and `chain.pem`.
pub fn publish_active(
    state: &StateDir,
    class: &str,
    key_label: &str,
) -> Result<(), HierarchyError> {
    let int_der = read_pem_cert(&state.intermediate_by_label(class, key_label))?;
    let root_der = read_pem_cert(&state.root_cert(class))?;
    write(state, &state.intermediate_cert(class), &to_pem(&int_der))?;
    write(
        state,
        &state.chain(class),
        &(to_pem(&int_der) + &to_pem(&root_der)),
    )
}

pub(crate) fn ca_params(
    class: &str,
    shape: &CaShape,
    now: OffsetDateTime,
) -> Result<CertificateParams, HierarchyError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, shape.organization.clone());
    dn.push(DnType::OrganizationalUnitName, format!("class {class}"));
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - Duration::minutes(5);
    let serial = random_serial().map_err(|e| build_error(class, e.to_string()))?;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(params)
}

/// `db-int-20261128-9f3a`: readable, sortable, unique per creation.
pub(super) fn key_label(
    class: &str,
    kind: &str,
    now: OffsetDateTime,
) -> Result<String, HierarchyError> {
    let mut suffix = [0u8; 2];
    getrandom::getrandom(&mut suffix).map_err(|e| build_error(class, e.to_string()))?;
    Ok(format!(
        "{class}-{kind}-{:04}{:02}{:02}-{}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        hex::encode(suffix)
    ))
}

/// The public half of a token key as rcgen wants a subject key.
pub(super) fn hsm_public(key: &KeyInfo) -> impl rcgen::PublicKeyData + '_ {
    struct Public<'k>(&'k KeyInfo);
    impl rcgen::PublicKeyData for Public<'_> {
        fn der_bytes(&self) -> &[u8] {
            &self.0.public_key
        }
        fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
            self.0.algorithm.rcgen_algorithm()
        }
    }
    Public(key)
}

pub(super) fn write(
    _state: &StateDir,
    path: &std::path::Path,
    pem: &str,
) -> Result<(), HierarchyError> {
    write_atomic(path, pem.as_bytes(), 0o644).map_err(|source| HierarchyError::Io {
        path: path.display().to_string(),
        source,
    })
}

pub(super) fn build_error(class: &str, message: String) -> HierarchyError {
    HierarchyError::Build {
        class: class.into(),
        message,
    }
}

pub(super) fn sign_error(
    class: &str,
    signer: &HsmSigningKey<'_>,
    e: rcgen::Error,
) -> HierarchyError {
    match signer.take_error() {
        Some(hsm) => HierarchyError::Hsm(hsm),
        None => build_error(class, e.to_string()),
    }
}
