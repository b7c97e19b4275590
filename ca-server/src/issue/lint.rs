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

pub(super) fn before_signing(built: &Built, issuer: &IssuingCa) -> Result<(), LintError> {
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
pub(super) fn after_signing(
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
    let allowed = i64::try_from(grant.ttl().as_secs())
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
    let ok = match (grant.common_name(), rdns.as_slice()) {
        (None, []) => true,
        (Some(cn), [rdn]) => {
            let attrs: Vec<_> = rdn.iter().collect();
            matches!(attrs.as_slice(), [attr]
                if *attr.attr_type() == OID_X509_COMMON_NAME
                    && attr.as_str().ok() == Some(cn))
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(LintError(
            "subject differs from the grant's common name".into(),
        ))
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
                criticality(grant.common_name().is_none(), "subjectAltName")?;
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
    let names =
        !(grant.dns_names().is_empty() && grant.ip_addrs().is_empty() && grant.uris().is_empty());
    let expected = [
        ("subjectAltName", san, names),
        ("keyUsage", ku, !grant.key_usages().is_empty()),
        ("extKeyUsage", eku, !grant.ext_key_usages().is_empty()),
        ("basicConstraints", bc, true),
        ("authorityKeyIdentifier", aki, true),
        ("subjectKeyIdentifier", ski, true),
    ];
    for (name, present, wanted) in expected {
        if present != wanted {
            return fail(format!(
                "{name} is {} but the grant {} it",
                if present { "present" } else { "missing" },
                if wanted {
                    "asks for"
                } else {
                    "does not ask for"
                }
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
            other => {
                return Err(LintError(format!(
                    "SAN carries a name the grant has not: {other:?}"
                )))
            }
        }
    }
    if dns != grant.dns_names() {
        return Err(LintError("DNS names differ from the grant".into()));
    }
    if ips != grant.ip_addrs() {
        return Err(LintError("IP addresses differ from the grant".into()));
    }
    if uris != grant.uris() {
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
    let want = |u: KeyUsage| grant.key_usages().contains(&u);
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
        Err(LintError(format!(
            "key usages {usage} differ from the grant"
        )))
    }
}

fn check_ext_key_usage(
    usage: &x509_parser::extensions::ExtendedKeyUsage<'_>,
    grant: &Grant,
) -> Result<(), LintError> {
    let want = |u: ExtKeyUsage| grant.ext_key_usages().contains(&u);
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
        Err(LintError(
            "extended key usages differ from the grant".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issue::build::leaf_params;
    use rcgen::{
        BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose,
        Issuer, KeyPair, PublicKeyData, SanType, SerialNumber, SubjectPublicKeyInfo,
    };
    use std::time::Duration;
    use time::OffsetDateTime;

    /// One way of tampering with a value.
    type Change<T> = Box<dyn Fn(&mut T)>;

    struct Ca {
        key: KeyPair,
        issuing: IssuingCa,
    }

    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let not_after = OffsetDateTime::now_utc() + time::Duration::days(30);
        params.not_after = not_after;
        let cert = params.self_signed(&key).unwrap();
        let issuing = IssuingCa {
            key: hsm::KeyInfo {
                label: format!("{name}-key"),
                algorithm: hsm::KeyAlgorithm::EcP256,
                mechanism: hsm::SignMechanism::Ecdsa,
                public_key: key.public_key_raw().to_vec(),
            },
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            chain_extra_pem: String::new(),
            not_after: rcgen_truncated(not_after),
            fingerprint: String::new(),
        };
        Ca { key, issuing }
    }

    fn rcgen_truncated(t: OffsetDateTime) -> OffsetDateTime {
        t.replace_nanosecond(0).unwrap()
    }

    /// A grant's contents, editable: the tests change one field at a time
    /// and make a (sealed) `Grant` of the result.
    #[derive(Clone)]
    struct Spec {
        common_name: Option<String>,
        dns_names: Vec<String>,
        ip_addrs: Vec<std::net::IpAddr>,
        uris: Vec<String>,
        key_usages: Vec<KeyUsage>,
        ext_key_usages: Vec<ExtKeyUsage>,
        ttl: Duration,
    }

    impl Spec {
        fn grant(&self) -> Grant {
            let dns: Vec<&str> = self.dns_names.iter().map(String::as_str).collect();
            let uris: Vec<&str> = self.uris.iter().map(String::as_str).collect();
            Grant::for_tests(
                "db",
                "server",
                self.common_name.as_deref(),
                &dns,
                &self.ip_addrs,
                &uris,
                &self.key_usages,
                &self.ext_key_usages,
                self.ttl,
            )
        }
    }

    fn spec() -> Spec {
        Spec {
            common_name: Some("pg-0.db.internal".into()),
            dns_names: vec!["pg-0.db.internal".into(), "pg.db.internal".into()],
            ip_addrs: vec!["10.1.2.3".parse().unwrap()],
            uris: vec!["spiffe://db.internal/pg".into()],
            key_usages: vec![KeyUsage::DigitalSignature],
            ext_key_usages: vec![ExtKeyUsage::ServerAuth, ExtKeyUsage::ClientAuth],
            ttl: Duration::from_secs(24 * 3600),
        }
    }

    struct Case {
        ca: Ca,
        grant: Grant,
        built: Built,
        subject: KeyPair,
    }

    fn case() -> Case {
        let ca = ca("db intermediate");
        let grant = spec().grant();
        let built = leaf_params(&grant, &ca.issuing, OffsetDateTime::now_utc()).unwrap();
        let subject = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        Case {
            ca,
            grant,
            built,
            subject,
        }
    }

    /// Sign `params` for `subject` with `ca`, as sign.rs does.
    fn sign(params: &CertificateParams, subject: &KeyPair, ca: &Ca) -> Vec<u8> {
        let spki = SubjectPublicKeyInfo::from_der(&subject.subject_public_key_info()).unwrap();
        let issuer =
            Issuer::from_ca_cert_der(&ca.issuing.cert_der.as_slice().into(), &ca.key).unwrap();
        params.signed_by(&spki, &issuer).unwrap().der().to_vec()
    }

    fn lint(c: &Case, params: &CertificateParams) -> Result<(), LintError> {
        let der = sign(params, &c.subject, &c.ca);
        after_signing(
            &der,
            &c.built,
            &c.grant,
            &c.subject.subject_public_key_info(),
        )
    }

    #[test]
    fn what_was_built_from_the_grant_passes() {
        let c = case();
        before_signing(&c.built, &c.ca.issuing).unwrap();
        assert_eq!(lint(&c, &c.built.params), Ok(()));
        // without a CN (SAN critical), key usages or EKUs
        let mut c = case();
        let mut bare = spec();
        bare.common_name = None;
        bare.ext_key_usages.clear();
        c.grant = bare.grant();
        c.built = leaf_params(&c.grant, &c.ca.issuing, OffsetDateTime::now_utc()).unwrap();
        assert_eq!(lint(&c, &c.built.params), Ok(()));
    }

    /// Every field the lint checks, tampered with one at a time.
    #[test]
    fn every_field_that_differs_from_the_grant_fails() {
        let tamper: Vec<(&str, &str, Change<CertificateParams>)> = vec![
            (
                "extra DNS name",
                "DNS names differ",
                Box::new(|p| {
                    p.subject_alt_names
                        .push(SanType::DnsName("evil.example".try_into().unwrap()))
                }),
            ),
            (
                "reordered DNS names",
                "DNS names differ",
                Box::new(|p| p.subject_alt_names.swap(0, 1)),
            ),
            (
                "other IP",
                "IP addresses differ",
                Box::new(|p| {
                    p.subject_alt_names[2] = SanType::IpAddress("10.9.9.9".parse().unwrap())
                }),
            ),
            (
                "dropped URI",
                "URIs differ",
                Box::new(|p| {
                    p.subject_alt_names.pop();
                }),
            ),
            (
                "email SAN",
                "SAN carries a name",
                Box::new(|p| {
                    p.subject_alt_names
                        .push(SanType::Rfc822Name("a@b.example".try_into().unwrap()))
                }),
            ),
            (
                "extra key usage",
                "key usages",
                Box::new(|p| p.key_usages.push(KeyUsagePurpose::KeyEncipherment)),
            ),
            (
                "keyCertSign",
                "Key Cert Sign",
                Box::new(|p| p.key_usages.push(KeyUsagePurpose::KeyCertSign)),
            ),
            (
                "no key usage",
                "keyUsage is missing",
                Box::new(|p| p.key_usages.clear()),
            ),
            (
                "extra EKU",
                "extended key usages",
                Box::new(|p| {
                    p.extended_key_usages
                        .push(ExtendedKeyUsagePurpose::CodeSigning)
                }),
            ),
            (
                "missing EKU",
                "extended key usages",
                Box::new(|p| {
                    p.extended_key_usages.pop();
                }),
            ),
            (
                "any EKU",
                "extended key usages",
                Box::new(|p| p.extended_key_usages.push(ExtendedKeyUsagePurpose::Any)),
            ),
            (
                "CA:TRUE",
                "CA:TRUE",
                Box::new(|p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)),
            ),
            (
                "no basicConstraints",
                "basicConstraints is missing",
                Box::new(|p| p.is_ca = IsCa::NoCa),
            ),
            (
                "notAfter later",
                "validity differs",
                Box::new(|p| p.not_after += time::Duration::seconds(1)),
            ),
            (
                "notBefore earlier",
                "validity differs",
                Box::new(|p| p.not_before -= time::Duration::hours(1)),
            ),
            (
                "other serial",
                "serial differs",
                Box::new(|p| p.serial_number = Some(SerialNumber::from_slice(&[0x42; 16]))),
            ),
            (
                "other CN",
                "subject differs",
                Box::new(|p| {
                    p.distinguished_name = rcgen::DistinguishedName::new();
                    p.distinguished_name
                        .push(DnType::CommonName, "evil.example");
                }),
            ),
            (
                "extra subject attribute",
                "subject differs",
                Box::new(|p| p.distinguished_name.push(DnType::OrganizationName, "Evil")),
            ),
            (
                "custom extension",
                "outside the profile",
                Box::new(|p| {
                    p.custom_extensions.push(CustomExtension::from_oid_content(
                        &[1, 3, 6, 1, 4, 1, 99999, 1],
                        vec![0x05, 0x00],
                    ))
                }),
            ),
            (
                "repeated SAN extension",
                "appears twice",
                Box::new(|p| {
                    p.custom_extensions.push(CustomExtension::from_oid_content(
                        &[2, 5, 29, 17],
                        vec![0x30, 0x03, 0x82, 0x01, b'x'],
                    ))
                }),
            ),
            (
                "no AKI",
                "authorityKeyIdentifier is missing",
                Box::new(|p| p.use_authority_key_identifier_extension = false),
            ),
            (
                "other SKI",
                "subjectKeyIdentifier is not derived",
                Box::new(|p| {
                    p.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(vec![1; 20])
                }),
            ),
        ];
        for (what, expected, change) in tamper {
            let c = case();
            let mut params = c.built.params.clone();
            change(&mut params);
            match lint(&c, &params) {
                Err(LintError(message)) => assert!(message.contains(expected), "{what}: {message}"),
                Ok(()) => panic!("{what} passed the lint"),
            }
        }
    }

    #[test]
    fn another_key_or_issuer_fails() {
        let c = case();
        // the certificate certifies another key than the CSR's
        let other = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let der = sign(&c.built.params, &other, &c.ca);
        let err = after_signing(
            &der,
            &c.built,
            &c.grant,
            &c.subject.subject_public_key_info(),
        );
        assert_eq!(
            err,
            Err(LintError("public key differs from the CSR's".into()))
        );
        // signed by another intermediate than the one built for
        let stranger = ca("stranger");
        let der = sign(&c.built.params, &c.subject, &stranger);
        let err = after_signing(
            &der,
            &c.built,
            &c.grant,
            &c.subject.subject_public_key_info(),
        );
        assert_eq!(
            err,
            Err(LintError(
                "issuer differs from the intermediate's subject".into()
            ))
        );
        // same name, other key: the AKI gives it away
        let twin = ca("db intermediate");
        let der = sign(&c.built.params, &c.subject, &twin);
        let err = after_signing(
            &der,
            &c.built,
            &c.grant,
            &c.subject.subject_public_key_info(),
        );
        assert_eq!(
            err,
            Err(LintError(
                "authorityKeyIdentifier is not the intermediate's key id".into()
            ))
        );
        // an intermediate recorded as RSA but the certificate is ECDSA-signed
        let mut built = leaf_params(&c.grant, &c.ca.issuing, OffsetDateTime::now_utc()).unwrap();
        let der = sign(&built.params, &c.subject, &c.ca);
        built.issuer.key = hsm::KeyAlgorithm::Rsa2048;
        assert!(
            after_signing(&der, &built, &c.grant, &c.subject.subject_public_key_info()).is_err()
        );
        // trailing bytes
        let mut der = sign(&c.built.params, &c.subject, &c.ca);
        der.push(0);
        assert!(after_signing(
            &der,
            &c.built,
            &c.grant,
            &c.subject.subject_public_key_info()
        )
        .is_err());
    }

    #[test]
    fn a_grant_that_differs_from_the_certificate_fails() {
        let c = case();
        let der = sign(&c.built.params, &c.subject, &c.ca);
        let spki = c.subject.subject_public_key_info();
        let changes: Vec<(&str, Change<Spec>)> = vec![
            (
                "ttl shorter",
                Box::new(|g| g.ttl = Duration::from_secs(3600)),
            ),
            ("no CN", Box::new(|g| g.common_name = None)),
            (
                "fewer DNS names",
                Box::new(|g| {
                    g.dns_names.pop();
                }),
            ),
            ("no IPs", Box::new(|g| g.ip_addrs.clear())),
            ("no URIs", Box::new(|g| g.uris.clear())),
            (
                "key agreement",
                Box::new(|g| g.key_usages.push(KeyUsage::KeyAgreement)),
            ),
            ("no EKUs", Box::new(|g| g.ext_key_usages.clear())),
        ];
        for (what, change) in changes {
            let mut changed = spec();
            change(&mut changed);
            let grant = changed.grant();
            assert!(
                after_signing(&der, &c.built, &grant, &spki).is_err(),
                "{what}"
            );
        }
    }
}
