//! Step *lint*: our own profile rules, checked on the parameters before the
//! HSM signs and again on the DER it produced. A failure here is a bug in
//! Trellis, never the requester's fault, and nothing is returned.

use super::build::{Built, BACKDATE};
use crate::hierarchy::IssuingCa;
use crate::serial::SERIAL_LEN;
use policies::{ExtKeyUsage, Grant, KeyUsage};
use rcgen::{IsCa, KeyUsagePurpose};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::net::IpAddr;
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_PKCS1_SHA256WITHRSA, OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384,
    OID_X509_COMMON_NAME,
};
use x509_parser::x509::X509Version;

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

/// Re-read what the HSM signed and compare every field with what was
/// built from the grant: version, serial, signature algorithm, issuer,
/// validity, subject, public key (byte for byte the CSR's), and each
/// extension — SAN (DNS names, IPs, URIs, in order, nothing else), key
/// usages, EKUs, basicConstraints CA:FALSE without a path length, the key
/// identifiers — with the criticality RFC 5280 asks for, none twice, and
/// none the profile did not ask for.
pub fn after_signing(
    der: &[u8],
    built: &Built,
    grant: &Grant,
    spki_der: &[u8],
) -> Result<(), LintError> {
    let fail = |m: String| Err(LintError(m));
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| LintError(format!("unparseable: {e}")))?;
    if !rest.is_empty() {
        return fail("trailing bytes after the certificate".into());
    }
    let (_, issuer) = x509_parser::parse_x509_certificate(&built.issuer.cert_der)
        .map_err(|e| LintError(format!("issuer certificate unparseable: {e}")))?;
    let tbs = &cert.tbs_certificate;

    if tbs.version != X509Version::V3 {
        return fail(format!("version is {:?}, not v3", tbs.version));
    }
    if cert.raw_serial() != built.serial.as_slice() {
        return fail("serial differs from the one chosen".into());
    }
    check_signature_algorithm(&cert, built.issuer.key)?;
    if tbs.issuer.as_raw() != issuer.subject().as_raw() {
        return fail("issuer differs from the intermediate's subject".into());
    }
    check_validity(&cert, built, grant, &issuer)?;
    check_subject(&cert, grant)?;
    if cert.public_key().raw != spki_der {
        return fail("public key differs from the CSR's".into());
    }
    if tbs.issuer_uid.is_some() || tbs.subject_uid.is_some() {
        return fail("certificate carries unique identifiers".into());
    }
    check_extensions(&cert, grant, spki_der, &issuer)
}

fn check_signature_algorithm(
    cert: &X509Certificate<'_>,
    key: hsm::KeyAlgorithm,
) -> Result<(), LintError> {
    let inner = &cert.tbs_certificate.signature;
    let outer = &cert.signature_algorithm;
    if inner != outer {
        return Err(LintError(
            "signature algorithm inside and outside the TBS differ".into(),
        ));
    }
    let (oid, null_params) = match key {
        hsm::KeyAlgorithm::EcP256 => (OID_SIG_ECDSA_WITH_SHA256, false),
        hsm::KeyAlgorithm::EcP384 => (OID_SIG_ECDSA_WITH_SHA384, false),
        hsm::KeyAlgorithm::Rsa2048 | hsm::KeyAlgorithm::Rsa3072 | hsm::KeyAlgorithm::Rsa4096 => {
            (OID_PKCS1_SHA256WITHRSA, true)
        }
    };
    let params_ok = match &outer.parameters {
        None => !null_params,
        Some(p) => null_params && p.header.tag() == Tag::Null && p.data.is_empty(),
    };
    if outer.algorithm != oid || !params_ok {
        return Err(LintError(format!(
            "signature algorithm {} is not the one of the intermediate's {} key",
            outer.algorithm,
            key.as_str()
        )));
    }
    Ok(())
}

fn check_validity(
    cert: &X509Certificate<'_>,
    built: &Built,
    grant: &Grant,
    issuer: &X509Certificate<'_>,
) -> Result<(), LintError> {
    let fail = |m: &str| Err(LintError(m.into()));
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    if not_before != built.params.not_before.unix_timestamp()
        || not_after != built.params.not_after.unix_timestamp()
    {
        return fail("validity differs from the one built");
    }
    if not_after <= not_before {
        return fail("validity is empty");
    }
    if not_after > issuer.validity().not_after.timestamp() {
        return fail("validity outlives the intermediate");
    }
    // notBefore is backdated; both ends are truncated to whole seconds.
    let allowed = i64::try_from(grant.ttl.as_secs())
        .unwrap_or(i64::MAX)
        .saturating_add(BACKDATE.whole_seconds())
        .saturating_add(1);
    if not_after - not_before > allowed {
        return fail("lifetime is longer than the grant's");
    }
    Ok(())
}

fn check_subject(cert: &X509Certificate<'_>, grant: &Grant) -> Result<(), LintError> {
    let rdns: Vec<_> = cert.subject().iter().collect();
    let ok = match (&grant.common_name, rdns.as_slice()) {
        (None, []) => true,
        (Some(cn), [rdn]) => {
            let attrs: Vec<_> = rdn.iter().collect();
            matches!(attrs.as_slice(), [attr]
                if *attr.attr_type() == OID_X509_COMMON_NAME
                    && attr.as_str().ok() == Some(cn.as_str()))
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(LintError("subject differs from the grant's common name".into()))
    }
}

fn check_extensions(
    cert: &X509Certificate<'_>,
    grant: &Grant,
    spki_der: &[u8],
    issuer: &X509Certificate<'_>,
) -> Result<(), LintError> {
    let fail = |m: String| Err(LintError(m));
    let mut seen = BTreeSet::new();
    let (mut san, mut ku, mut eku, mut bc, mut aki, mut ski) =
        (false, false, false, false, false, false);
    for ext in cert.extensions() {
        if !seen.insert(ext.oid.as_bytes()) {
            return fail(format!("extension {} appears twice", ext.oid));
        }
        let criticality = |want: bool, name: &str| {
            if ext.critical == want {
                Ok(())
            } else {
                Err(LintError(format!("{name} criticality is not {want}")))
            }
        };
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(names) => {
                san = true;
                // RFC 5280 4.2.1.6: critical exactly when the subject is empty.
                criticality(grant.common_name.is_none(), "subjectAltName")?;
                check_names(&names.general_names, grant)?;
            }
            ParsedExtension::KeyUsage(usage) => {
                ku = true;
                criticality(true, "keyUsage")?;
                check_key_usage(usage, grant)?;
            }
            ParsedExtension::ExtendedKeyUsage(usage) => {
                eku = true;
                criticality(false, "extKeyUsage")?;
                check_ext_key_usage(usage, grant)?;
            }
            ParsedExtension::BasicConstraints(constraints) => {
                bc = true;
                criticality(true, "basicConstraints")?;
                if constraints.ca {
                    return fail("leaf is CA:TRUE".into());
                }
                if constraints.path_len_constraint.is_some() {
                    return fail("leaf has a path length constraint".into());
                }
            }
            ParsedExtension::AuthorityKeyIdentifier(id) => {
                aki = true;
                criticality(false, "authorityKeyIdentifier")?;
                let expected = issuer_key_id(issuer);
                if id.key_identifier.as_ref().map(|k| k.0) != Some(expected.as_slice())
                    || id.authority_cert_issuer.is_some()
                    || id.authority_cert_serial.is_some()
                {
                    return fail("authorityKeyIdentifier is not the intermediate's key id".into());
                }
            }
            ParsedExtension::SubjectKeyIdentifier(id) => {
                ski = true;
                criticality(false, "subjectKeyIdentifier")?;
                if id.0 != &Sha256::digest(spki_der)[..20] {
                    return fail("subjectKeyIdentifier is not derived from the key".into());
                }
            }
            _ => return fail(format!("extension {} is outside the profile", ext.oid)),
        }
    }
    let names = !(grant.dns_names.is_empty() && grant.ip_addrs.is_empty() && grant.uris.is_empty());
    let expected = [
        ("subjectAltName", san, names),
        ("keyUsage", ku, !grant.key_usages.is_empty()),
        ("extKeyUsage", eku, !grant.ext_key_usages.is_empty()),
        ("basicConstraints", bc, true),
        ("authorityKeyIdentifier", aki, true),
        ("subjectKeyIdentifier", ski, true),
    ];
    for (name, present, wanted) in expected {
        if present != wanted {
            return fail(format!(
                "{name} is {} but the grant {} it",
                if present { "present" } else { "missing" },
                if wanted { "asks for" } else { "does not ask for" }
            ));
        }
    }
    Ok(())
}

/// The intermediate's subjectKeyIdentifier, or what rcgen derives when it
/// has none (SHA-256 of its SPKI, truncated to 20 bytes).
fn issuer_key_id(issuer: &X509Certificate<'_>) -> Vec<u8> {
    issuer
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
        .unwrap_or_else(|| Sha256::digest(issuer.public_key().raw)[..20].to_vec())
}

fn check_names(names: &[GeneralName<'_>], grant: &Grant) -> Result<(), LintError> {
    let (mut dns, mut ips, mut uris) = (Vec::new(), Vec::new(), Vec::new());
    for name in names {
        match name {
            GeneralName::DNSName(n) => dns.push(n.to_string()),
            GeneralName::URI(u) => uris.push(u.to_string()),
            GeneralName::IPAddress(bytes) => ips.push(match bytes.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(*bytes).map_err(|_| bad_ip())?),
                16 => IpAddr::from(<[u8; 16]>::try_from(*bytes).map_err(|_| bad_ip())?),
                _ => return Err(bad_ip()),
            }),
            other => return Err(LintError(format!("SAN carries a name the grant has not: {other:?}"))),
        }
    }
    if dns != grant.dns_names {
        return Err(LintError("DNS names differ from the grant".into()));
    }
    if ips != grant.ip_addrs {
        return Err(LintError("IP addresses differ from the grant".into()));
    }
    if uris != grant.uris {
        return Err(LintError("URIs differ from the grant".into()));
    }
    Ok(())
}

fn bad_ip() -> LintError {
    LintError("SAN carries a malformed IP address".into())
}

fn check_key_usage(
    usage: &x509_parser::extensions::KeyUsage,
    grant: &Grant,
) -> Result<(), LintError> {
    let want = |u: KeyUsage| grant.key_usages.contains(&u);
    let same = usage.digital_signature() == want(KeyUsage::DigitalSignature)
        && usage.non_repudiation() == want(KeyUsage::ContentCommitment)
        && usage.key_encipherment() == want(KeyUsage::KeyEncipherment)
        && usage.data_encipherment() == want(KeyUsage::DataEncipherment)
        && usage.key_agreement() == want(KeyUsage::KeyAgreement)
        && !usage.key_cert_sign()
        && !usage.crl_sign()
        && !usage.encipher_only()
        && !usage.decipher_only();
    if same {
        Ok(())
    } else {
        Err(LintError(format!("key usages {usage} differ from the grant")))
    }
}

fn check_ext_key_usage(
    usage: &x509_parser::extensions::ExtendedKeyUsage<'_>,
    grant: &Grant,
) -> Result<(), LintError> {
    let want = |u: ExtKeyUsage| grant.ext_key_usages.contains(&u);
    let same = usage.server_auth == want(ExtKeyUsage::ServerAuth)
        && usage.client_auth == want(ExtKeyUsage::ClientAuth)
        && usage.code_signing == want(ExtKeyUsage::CodeSigning)
        && usage.email_protection == want(ExtKeyUsage::EmailProtection)
        && !usage.any
        && !usage.time_stamping
        && !usage.ocsp_signing
        && usage.other.is_empty();
    if same {
        Ok(())
    } else {
        Err(LintError("extended key usages differ from the grant".into()))
    }
}
