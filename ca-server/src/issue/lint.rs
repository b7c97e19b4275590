//! Step *lint*: our own profile rules, checked on the parameters before the
//! HSM signs and again on the DER it produced. A failure here is a bug in
//! Trellis, never the requester's fault, and nothing is returned.

use super::build::Built;
use crate::hierarchy::IssuingCa;
use crate::serial::SERIAL_LEN;
use policies::Grant;
use rcgen::{IsCa, KeyUsagePurpose};
use x509_parser::extensions::{GeneralName, ParsedExtension};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("lint: {0}")]
pub struct LintError(pub String);

pub fn before_signing(built: &Built, issuer: &IssuingCa) -> Result<(), LintError> {
    let p = &built.params;
    let fail = |m: &str| Err(LintError(m.into()));
    if !matches!(p.is_ca, IsCa::ExplicitNoCa) {
        return fail("leaf is not explicitly CA:FALSE");
    }
    if p.key_usages
        .iter()
        .any(|u| matches!(u, KeyUsagePurpose::KeyCertSign | KeyUsagePurpose::CrlSign))
    {
        return fail("leaf asks for keyCertSign/cRLSign");
    }
    if p.serial_number.as_ref().map(|s| s.as_ref().len()) != Some(SERIAL_LEN) {
        return fail("serial is not 16 bytes");
    }
    if p.not_after <= p.not_before || p.not_after > issuer.not_after {
        return fail("validity is empty or outlives the issuer");
    }
    if p.subject_alt_names.is_empty() && p.distinguished_name.iter().next().is_none() {
        return fail("certificate names nobody");
    }
    if !p.custom_extensions.is_empty() || p.name_constraints.is_some() {
        return fail("leaf carries extensions outside the profile");
    }
    Ok(())
}

/// Re-read what the HSM signed: the key is the CSR's, the names are the
/// grant's, CA is false, the serial is ours.
pub fn after_signing(
    der: &[u8],
    built: &Built,
    grant: &Grant,
    spki_der: &[u8],
) -> Result<(), LintError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| LintError(format!("unparseable: {e}")))?;
    if cert.public_key().raw != spki_der {
        return Err(LintError("public key differs from the CSR's".into()));
    }
    if cert.raw_serial() != built.serial.as_slice() {
        return Err(LintError("serial differs from the one chosen".into()));
    }
    let mut dns = Vec::new();
    let mut saw_basic_constraints = false;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::BasicConstraints(bc) => {
                saw_basic_constraints = true;
                if bc.ca {
                    return Err(LintError("leaf is CA:TRUE".into()));
                }
            }
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    if let GeneralName::DNSName(n) = name {
                        dns.push(n.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    if !saw_basic_constraints {
        return Err(LintError("leaf has no basicConstraints".into()));
    }
    if dns != grant.dns_names {
        return Err(LintError("DNS names differ from the grant".into()));
    }
    Ok(())
}
