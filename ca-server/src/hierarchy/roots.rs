//! Root rotation by cross-signing, in three steps an operator can spread
//! over weeks (see deploy/ROTATION.md):
//!
//! 1. `rotate root-prepare`: a new root key in the root token, a new
//!    self-signed root, and a cross certificate (the new root's name and key,
//!    signed by the old root). The bundle now publishes both roots; peers
//!    pick the new one up on their next bundle refresh.
//! 2. `rotate root-activate`: the new root becomes the class root; new
//!    intermediates are signed by it, and their chains end with the cross
//!    certificate so peers that still trust only the old root keep working.
//! 3. `rotate root-retire`: once no intermediate signed by the old root is in
//!    use, the old root leaves the bundle.

use super::create::{build_error, ca_params, key_label, sign_error, write, AdminTokens, CaShape};
use super::record::ClassState;
use super::{read_pem_cert, to_pem, HierarchyError, StateProblem};
use crate::state::StateDir;
use hsm::{HsmSigningKey, PoolSession};
use rcgen::{BasicConstraints, DistinguishedName, DnType, DnValue, IsCa, Issuer};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

/// Keep a copy of the current root under `roots/` (it may leave root.pem).
fn archive_current(
    state: &StateDir,
    class: &str,
    record: &ClassState,
) -> Result<(), HierarchyError> {
    let archived = state.root_by_label(class, &record.root_key);
    if !archived.exists() {
        let der = read_pem_cert(&state.root_cert(class))?;
        write(state, &archived, &to_pem(&der))?;
    }
    Ok(())
}

/// Rewrite `bundle.pem`: the current root, then every published root.
pub fn publish_bundle(
    state: &StateDir,
    class: &str,
    record: &ClassState,
) -> Result<(), HierarchyError> {
    let mut bundle = to_pem(&read_pem_cert(&state.root_cert(class))?);
    for label in &record.published_roots {
        bundle.push_str(&to_pem(&read_pem_cert(&state.root_by_label(class, label))?));
    }
    write(state, &state.bundle(class), &bundle)
}

pub fn prepare(
    state: &StateDir,
    class: &str,
    tokens: &AdminTokens,
    shape: &CaShape,
) -> Result<String, HierarchyError> {
    let mut record = ClassState::read(state, class)?;
    if record
        .published_roots
        .iter()
        .any(|r| r != &record.root_key && record.cross_signed_by.as_deref() != Some(r))
    {
        return Err(HierarchyError::state(
            class,
            StateProblem::RootAlreadyPrepared,
        ));
    }
    if record.cross_signed_by.is_some() {
        return Err(HierarchyError::state(
            class,
            StateProblem::PreviousRootPublished,
        ));
    }
    archive_current(state, class, &record)?;
    let now = OffsetDateTime::now_utc();
    let label = key_label(class, "root", now)?;
    let new_key = tokens.root.generate_key(&label, shape.algorithm)?;
    let old_der = read_pem_cert(&state.root_cert(class))?;
    let mut params = ca_params(class, shape, now)?;
    // The new root takes the old root's exact name: the cross certificate is
    // then self-issued (RFC 5280 §6.1: not counted against the old root's
    // path length), and peers tell the two roots apart by key identifier.
    params.distinguished_name =
        same_name(&old_der).map_err(|e| build_error(class, e.to_string()))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.not_after = now + Duration::days(i64::from(shape.root_days));

    // The new root, self-signed.
    let mut session = PoolSession::new(tokens.root.clone());
    let signer = HsmSigningKey::new(&mut session, &new_key);
    let new_root = params
        .self_signed(&signer)
        .map_err(|e| sign_error(class, &signer, e))?;
    drop(signer);

    // The same name and key, signed by the old root.
    let old_key = tokens.root.public_key(&record.root_key)?;
    let mut cross_params = params.clone();
    cross_params.use_authority_key_identifier_extension = true;
    let old_not_after = x509_parser::parse_x509_certificate(&old_der)
        .map_err(|e| build_error(class, e.to_string()))?
        .1
        .validity()
        .not_after
        .to_datetime();
    cross_params.not_after = cross_params.not_after.min(old_not_after);
    let signer = HsmSigningKey::new(&mut session, &old_key);
    let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(old_der.as_slice()), &signer)
        .map_err(|e| build_error(class, e.to_string()))?;
    let cross = cross_params
        .signed_by(&new_root_public(&new_key), &issuer)
        .map_err(|e| sign_error(class, &signer, e))?;
    drop(signer);

    write(
        state,
        &state.root_by_label(class, &label),
        &to_pem(new_root.der()),
    )?;
    write(
        state,
        &state.cross_cert(class, &label, &record.root_key),
        &to_pem(cross.der()),
    )?;
    record.published_roots.push(label.clone());
    publish_bundle(state, class, &record)?;
    record.write(state, class)?;
    Ok(label)
}

/// The subject of `der` as rcgen builds names (UTF8String and
/// PrintableString attributes, one per RDN, in order).
/// Why the current root's name cannot be copied onto its successor.
#[derive(Debug, thiserror::Error)]
enum NameError {
    #[error("the current root does not parse: {0}")]
    Unparseable(x509_parser::nom::Err<x509_parser::error::X509Error>),
    #[error("attribute OID too large")]
    OidTooLarge,
    #[error("attribute is not text")]
    NotText,
    #[error("not printable")]
    NotPrintable,
    #[error("root name uses an unsupported string type {0:?}")]
    UnsupportedStringType(x509_parser::der_parser::asn1_rs::Tag),
}

fn same_name(der: &[u8]) -> Result<DistinguishedName, NameError> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(NameError::Unparseable)?;
    let mut dn = DistinguishedName::new();
    for attr in cert.subject().iter_attributes() {
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or(NameError::OidTooLarge)?
            .collect();
        let text = std::str::from_utf8(attr.attr_value().data).map_err(|_| NameError::NotText)?;
        let value = match attr.attr_value().header.tag() {
            Tag::Utf8String => DnValue::Utf8String(text.to_string()),
            Tag::PrintableString => {
                DnValue::PrintableString(text.try_into().map_err(|_| NameError::NotPrintable)?)
            }
            other => return Err(NameError::UnsupportedStringType(other)),
        };
        dn.push(DnType::from_oid(&oid), value);
    }
    Ok(dn)
}

fn new_root_public(key: &hsm::KeyInfo) -> impl rcgen::PublicKeyData + '_ {
    super::create::hsm_public(key)
}

/// The prepared root becomes the class root. Returns (new, previous).
pub fn activate(state: &StateDir, class: &str) -> Result<(String, String), HierarchyError> {
    let mut record = ClassState::read(state, class)?;
    let next = record
        .published_roots
        .iter()
        .find(|r| state.cross_cert(class, r, &record.root_key).exists())
        .cloned()
        .ok_or_else(|| HierarchyError::state(class, StateProblem::NoPreparedRoot))?;
    archive_current(state, class, &record)?;
    let previous = std::mem::replace(&mut record.root_key, next.clone());
    record.published_roots.retain(|r| r != &next);
    record.published_roots.push(previous.clone());
    record.cross_signed_by = Some(previous.clone());
    let new_der = read_pem_cert(&state.root_by_label(class, &next))?;
    write(state, &state.root_cert(class), &to_pem(&new_der))?;
    publish_bundle(state, class, &record)?;
    record.write(state, class)?;
    Ok((next, previous))
}

/// Drop the previous root from the bundle once no intermediate the class
/// still tracks (active, prepared, or retired with live leaves) chains to it.
/// Returns its label.
pub fn retire(state: &StateDir, class: &str) -> Result<String, HierarchyError> {
    let mut record = ClassState::read(state, class)?;
    let previous = record
        .cross_signed_by
        .clone()
        .ok_or_else(|| HierarchyError::state(class, StateProblem::NoPreviousRoot))?;
    let old_der = read_pem_cert(&state.root_by_label(class, &previous))?;
    let (_, old) = x509_parser::parse_x509_certificate(&old_der)
        .map_err(|e| build_error(class, e.to_string()))?;
    // Retired intermediates count too: their leaves live until they expire
    // (`rotate retire` forgets them after that).
    for int in &record.intermediates {
        let der = read_pem_cert(&state.intermediate_by_label(class, &int.key))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| build_error(class, e.to_string()))?;
        if cert.verify_signature(Some(old.public_key())).is_ok() {
            return Err(HierarchyError::state(
                class,
                StateProblem::SignedByPreviousRoot {
                    key: int.key.clone(),
                    status: int.status,
                },
            ));
        }
    }
    record.published_roots.retain(|r| r != &previous);
    record.cross_signed_by = None;
    publish_bundle(state, class, &record)?;
    record.write(state, class)?;
    Ok(previous)
}
