//! Step *lint*: our own profile rules, checked on the parameters before the
//! HSM signs and again on the DER it produced. A failure here is a bug in
//! Trellis, never the requester's fault, and nothing is returned.

use super::build::{Built, IssuerFacts, BACKDATE};
use crate::hierarchy::IssuingCa;
use crate::serial::SERIAL_LEN;
use policies::{ExtKeyUsage, Grant, KeyUsage};
use rcgen::{IsCa, KeyUsagePurpose};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::error::X509Error;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    Oid, OID_PKCS1_SHA256WITHRSA, OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384,
    OID_X509_COMMON_NAME,
};
use x509_parser::x509::X509Version;

/// What the lint found wrong, named by the check that failed. The first
/// group is found on the parameters before signing, the rest on the DER
/// the HSM produced. Not `Eq`: x509-parser's errors are only `PartialEq`.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LintError {
    // before signing, on the parameters
    #[error("lint: leaf is not explicitly CA:FALSE")]
    NotExplicitlyNonCa,
    #[error("lint: leaf asks for keyCertSign/cRLSign")]
    CaKeyUsage,
    #[error("lint: serial is not 16 bytes")]
    SerialLength,
    #[error("lint: validity is empty or outlives the issuer")]
    ValidityEmptyOrOutlivesIssuer,
    #[error("lint: certificate names nobody")]
    NamesNobody,
    /// Custom extensions or name constraints in the parameters.
    #[error("lint: leaf carries extensions outside the profile")]
    ParamsOutsideProfile,

    // after signing: the certificate as a whole
    #[error("lint: unparseable: {0}")]
    Unparseable(x509_parser::nom::Err<X509Error>),
    #[error("lint: trailing bytes after the certificate")]
    TrailingBytes,
    #[error("lint: version is {0:?}, not v3")]
    Version(X509Version),
    #[error("lint: serial differs from the one chosen")]
    SerialDiffers,
    #[error("lint: signature algorithm inside and outside the TBS differ")]
    SignatureAlgorithmInnerOuter,
    /// The certificate's signature algorithm is not the one the
    /// intermediate's key makes (or its parameters are not as RFC 5758 /
    /// RFC 4055 require).
    #[error("lint: signature algorithm {oid} is not the one of the intermediate's {key} key")]
    SignatureAlgorithm {
        oid: Oid<'static>,
        key: hsm::KeyAlgorithm,
    },
    #[error("lint: issuer differs from the intermediate's subject")]
    IssuerDiffers,
    #[error("lint: validity differs from the one built")]
    ValidityDiffers,
    #[error("lint: validity is empty")]
    ValidityEmpty,
    #[error("lint: validity outlives the intermediate")]
    ValidityOutlivesIssuer,
    #[error("lint: lifetime is longer than the grant's")]
    LifetimeLongerThanGrant,
    #[error("lint: subject differs from the grant's common name")]
    SubjectDiffers,
    #[error("lint: public key differs from the CSR's")]
    PublicKeyDiffers,
    #[error("lint: certificate carries unique identifiers")]
    UniqueIdentifiers,

    // after signing: the extensions
    #[error("lint: the CRL distribution point is not the class's")]
    CrlDistributionPoint,
    #[error("lint: extension {0} appears twice")]
    DuplicateExtension(Oid<'static>),
    #[error("lint: extension {0} is outside the profile")]
    ExtensionOutsideProfile(Oid<'static>),
    #[error("lint: {extension} criticality is not {want}")]
    Criticality {
        extension: ProfileExtension,
        want: bool,
    },
    #[error("lint: {0} is missing but the grant asks for it")]
    MissingExtension(ProfileExtension),
    #[error("lint: {0} is present but the grant does not ask for it")]
    UnwantedExtension(ProfileExtension),
    #[error("lint: leaf is CA:TRUE")]
    CaTrue,
    #[error("lint: leaf has a path length constraint")]
    PathLength,
    #[error("lint: authorityKeyIdentifier is not the intermediate's key id")]
    AuthorityKeyId,
    #[error("lint: subjectKeyIdentifier is not derived from the key")]
    SubjectKeyId,
    /// A SAN entry of a kind a grant cannot hold; holds its `Debug` text
    /// (the parsed name borrows from the certificate).
    #[error("lint: SAN carries a name the grant has not: {0}")]
    SanNameKind(String),
    #[error("lint: SAN carries a malformed IP address")]
    MalformedSanIp,
    #[error("lint: DNS names differ from the grant")]
    DnsNamesDiffer,
    #[error("lint: IP addresses differ from the grant")]
    IpAddressesDiffer,
    #[error("lint: URIs differ from the grant")]
    UrisDiffer,
    #[error("lint: key usages {0} differ from the grant")]
    KeyUsagesDiffer(x509_parser::extensions::KeyUsage),
    #[error("lint: extended key usages differ from the grant")]
    ExtKeyUsagesDiffer,
}

/// The extensions a leaf of our profile carries; `Display` is the RFC 5280
/// name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileExtension {
    SubjectAltName,
    KeyUsage,
    ExtKeyUsage,
    BasicConstraints,
    AuthorityKeyIdentifier,
    SubjectKeyIdentifier,
    CrlDistributionPoints,
}

impl ProfileExtension {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SubjectAltName => "subjectAltName",
            Self::KeyUsage => "keyUsage",
            Self::ExtKeyUsage => "extKeyUsage",
            Self::BasicConstraints => "basicConstraints",
            Self::AuthorityKeyIdentifier => "authorityKeyIdentifier",
            Self::SubjectKeyIdentifier => "subjectKeyIdentifier",
            Self::CrlDistributionPoints => "cRLDistributionPoints",
        }
    }
}

impl fmt::Display for ProfileExtension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(super) fn before_signing(built: &Built, issuer: &IssuingCa) -> Result<(), LintError> {
    let p = &built.params;
    if !matches!(p.is_ca, IsCa::ExplicitNoCa) {
        return Err(LintError::NotExplicitlyNonCa);
    }
    if p.key_usages
        .iter()
        .any(|u| matches!(u, KeyUsagePurpose::KeyCertSign | KeyUsagePurpose::CrlSign))
    {
        return Err(LintError::CaKeyUsage);
    }
    if p.serial_number.as_ref().map(|s| s.as_ref().len()) != Some(SERIAL_LEN) {
        return Err(LintError::SerialLength);
    }
    if p.not_after <= p.not_before || p.not_after > issuer.not_after {
        return Err(LintError::ValidityEmptyOrOutlivesIssuer);
    }
    if p.subject_alt_names.is_empty() && p.distinguished_name.iter().next().is_none() {
        return Err(LintError::NamesNobody);
    }
    if !p.custom_extensions.is_empty() || p.name_constraints.is_some() {
        return Err(LintError::ParamsOutsideProfile);
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
    let (rest, cert) = x509_parser::parse_x509_certificate(der).map_err(LintError::Unparseable)?;
    if !rest.is_empty() {
        return Err(LintError::TrailingBytes);
    }
    let issuer = &*built.issuer;
    let tbs = &cert.tbs_certificate;

    if tbs.version != X509Version::V3 {
        return Err(LintError::Version(tbs.version));
    }
    if cert.raw_serial() != built.serial.as_slice() {
        return Err(LintError::SerialDiffers);
    }
    check_signature_algorithm(&cert, built.issuer.key)?;
    if tbs.issuer.as_raw() != issuer.subject_der.as_slice() {
        return Err(LintError::IssuerDiffers);
    }
    check_validity(&cert, built, grant, issuer)?;
    check_subject(&cert, grant)?;
    if cert.public_key().raw != spki_der {
        return Err(LintError::PublicKeyDiffers);
    }
    if tbs.issuer_uid.is_some() || tbs.subject_uid.is_some() {
        return Err(LintError::UniqueIdentifiers);
    }
    check_extensions(
        &cert,
        grant,
        spki_der,
        issuer,
        built.crl_distribution_point.as_deref(),
    )
}

fn check_signature_algorithm(
    cert: &X509Certificate<'_>,
    key: hsm::KeyAlgorithm,
) -> Result<(), LintError> {
    let inner = &cert.tbs_certificate.signature;
    let outer = &cert.signature_algorithm;
    if inner != outer {
        return Err(LintError::SignatureAlgorithmInnerOuter);
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
        return Err(LintError::SignatureAlgorithm {
            oid: outer.algorithm.to_owned(),
            key,
        });
    }
    Ok(())
}

fn check_validity(
    cert: &X509Certificate<'_>,
    built: &Built,
    grant: &Grant,
    issuer: &IssuerFacts,
) -> Result<(), LintError> {
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    if not_before != built.params.not_before.unix_timestamp()
        || not_after != built.params.not_after.unix_timestamp()
    {
        return Err(LintError::ValidityDiffers);
    }
    if not_after <= not_before {
        return Err(LintError::ValidityEmpty);
    }
    if not_after > issuer.not_after {
        return Err(LintError::ValidityOutlivesIssuer);
    }
    // notBefore is backdated; both ends are truncated to whole seconds.
    let allowed = i64::try_from(grant.ttl().as_secs())
        .unwrap_or(i64::MAX)
        .saturating_add(BACKDATE.whole_seconds())
        .saturating_add(1);
    if not_after - not_before > allowed {
        return Err(LintError::LifetimeLongerThanGrant);
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
        Err(LintError::SubjectDiffers)
    }
}

fn check_extensions(
    cert: &X509Certificate<'_>,
    grant: &Grant,
    spki_der: &[u8],
    issuer: &IssuerFacts,
    crl_distribution_point: Option<&str>,
) -> Result<(), LintError> {
    let mut seen = BTreeSet::new();
    let (mut san, mut ku, mut eku, mut bc, mut aki, mut ski, mut cdp) =
        (false, false, false, false, false, false, false);
    for ext in cert.extensions() {
        if !seen.insert(ext.oid.as_bytes()) {
            return Err(LintError::DuplicateExtension(ext.oid.to_owned()));
        }
        let criticality = |want: bool, extension: ProfileExtension| {
            if ext.critical == want {
                Ok(())
            } else {
                Err(LintError::Criticality { extension, want })
            }
        };
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(names) => {
                san = true;
                // RFC 5280 4.2.1.6: critical exactly when the subject is empty.
                criticality(
                    grant.common_name().is_none(),
                    ProfileExtension::SubjectAltName,
                )?;
                check_names(&names.general_names, grant)?;
            }
            ParsedExtension::KeyUsage(usage) => {
                ku = true;
                criticality(true, ProfileExtension::KeyUsage)?;
                check_key_usage(usage, grant)?;
            }
            ParsedExtension::ExtendedKeyUsage(usage) => {
                eku = true;
                criticality(false, ProfileExtension::ExtKeyUsage)?;
                check_ext_key_usage(usage, grant)?;
            }
            ParsedExtension::BasicConstraints(constraints) => {
                bc = true;
                criticality(true, ProfileExtension::BasicConstraints)?;
                if constraints.ca {
                    return Err(LintError::CaTrue);
                }
                if constraints.path_len_constraint.is_some() {
                    return Err(LintError::PathLength);
                }
            }
            ParsedExtension::AuthorityKeyIdentifier(id) => {
                aki = true;
                criticality(false, ProfileExtension::AuthorityKeyIdentifier)?;
                let expected = &issuer.key_id;
                if id.key_identifier.as_ref().map(|k| k.0) != Some(expected.as_slice())
                    || id.authority_cert_issuer.is_some()
                    || id.authority_cert_serial.is_some()
                {
                    return Err(LintError::AuthorityKeyId);
                }
            }
            ParsedExtension::SubjectKeyIdentifier(id) => {
                ski = true;
                criticality(false, ProfileExtension::SubjectKeyIdentifier)?;
                if id.0 != &Sha256::digest(spki_der)[..20] {
                    return Err(LintError::SubjectKeyId);
                }
            }
            ParsedExtension::CRLDistributionPoints(points) => {
                cdp = true;
                criticality(false, ProfileExtension::CrlDistributionPoints)?;
                check_distribution_point(points, crl_distribution_point)?;
            }
            _ => return Err(LintError::ExtensionOutsideProfile(ext.oid.to_owned())),
        }
    }
    let names =
        !(grant.dns_names().is_empty() && grant.ip_addrs().is_empty() && grant.uris().is_empty());
    let expected = [
        (ProfileExtension::SubjectAltName, san, names),
        (
            ProfileExtension::KeyUsage,
            ku,
            !grant.key_usages().is_empty(),
        ),
        (
            ProfileExtension::ExtKeyUsage,
            eku,
            !grant.ext_key_usages().is_empty(),
        ),
        (ProfileExtension::BasicConstraints, bc, true),
        (ProfileExtension::AuthorityKeyIdentifier, aki, true),
        (ProfileExtension::SubjectKeyIdentifier, ski, true),
        (
            ProfileExtension::CrlDistributionPoints,
            cdp,
            crl_distribution_point.is_some(),
        ),
    ];
    for (extension, present, wanted) in expected {
        match (present, wanted) {
            (false, true) => return Err(LintError::MissingExtension(extension)),
            (true, false) => return Err(LintError::UnwantedExtension(extension)),
            _ => {}
        }
    }
    Ok(())
}

/// Exactly one distribution point: a full name that is the one expected
/// URI, no reasons, no CRL issuer.
fn check_distribution_point(
    points: &x509_parser::extensions::CRLDistributionPoints<'_>,
    expected: Option<&str>,
) -> Result<(), LintError> {
    use x509_parser::extensions::DistributionPointName;
    let ok = match (points.points.as_slice(), expected) {
        ([point], Some(expected)) => {
            point.reasons.is_none()
                && point.crl_issuer.is_none()
                && matches!(
                    &point.distribution_point,
                    Some(DistributionPointName::FullName(names))
                        if matches!(names.as_slice(), [GeneralName::URI(uri)] if *uri == expected)
                )
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(LintError::CrlDistributionPoint)
    }
}

fn check_names(names: &[GeneralName<'_>], grant: &Grant) -> Result<(), LintError> {
    let (mut dns, mut ips, mut uris) = (Vec::new(), Vec::new(), Vec::new());
    for name in names {
        match name {
            GeneralName::DNSName(n) => dns.push(n.to_string()),
            GeneralName::URI(u) => uris.push(u.to_string()),
            GeneralName::IPAddress(bytes) => ips.push(match bytes.len() {
                4 => IpAddr::from(
                    <[u8; 4]>::try_from(*bytes).map_err(|_| LintError::MalformedSanIp)?,
                ),
                16 => IpAddr::from(
                    <[u8; 16]>::try_from(*bytes).map_err(|_| LintError::MalformedSanIp)?,
                ),
                _ => return Err(LintError::MalformedSanIp),
            }),
            other => return Err(LintError::SanNameKind(format!("{other:?}"))),
        }
    }
    if dns != grant.dns_names() {
        return Err(LintError::DnsNamesDiffer);
    }
    if ips != grant.ip_addrs() {
        return Err(LintError::IpAddressesDiffer);
    }
    if uris != grant.uris() {
        return Err(LintError::UrisDiffer);
    }
    Ok(())
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
        Err(LintError::KeyUsagesDiffer(*usage))
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
        Err(LintError::ExtKeyUsagesDiffer)
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
            issuer_fields: None,
            facts: std::sync::Arc::new(crate::issue::build::IssuerFacts::read(
                &x509_parser::parse_x509_certificate(cert.der()).unwrap().1,
                hsm::KeyAlgorithm::EcP256,
            )),
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

    fn oid(arcs: &[u64]) -> Oid<'static> {
        Oid::from(arcs).expect("a valid OID")
    }

    fn key_usage(flags: u16) -> x509_parser::extensions::KeyUsage {
        x509_parser::extensions::KeyUsage { flags }
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
        let tamper: Vec<(&str, LintError, Change<CertificateParams>)> = vec![
            (
                "extra DNS name",
                LintError::DnsNamesDiffer,
                Box::new(|p| {
                    p.subject_alt_names
                        .push(SanType::DnsName("evil.example".try_into().unwrap()))
                }),
            ),
            (
                "reordered DNS names",
                LintError::DnsNamesDiffer,
                Box::new(|p| p.subject_alt_names.swap(0, 1)),
            ),
            (
                "other IP",
                LintError::IpAddressesDiffer,
                Box::new(|p| {
                    p.subject_alt_names[2] = SanType::IpAddress("10.9.9.9".parse().unwrap())
                }),
            ),
            (
                "dropped URI",
                LintError::UrisDiffer,
                Box::new(|p| {
                    p.subject_alt_names.pop();
                }),
            ),
            (
                "email SAN",
                LintError::SanNameKind(r#"RFC822Name("a@b.example")"#.into()),
                Box::new(|p| {
                    p.subject_alt_names
                        .push(SanType::Rfc822Name("a@b.example".try_into().unwrap()))
                }),
            ),
            (
                "extra key usage",
                LintError::KeyUsagesDiffer(key_usage(0b101)), // digitalSignature, keyEncipherment
                Box::new(|p| p.key_usages.push(KeyUsagePurpose::KeyEncipherment)),
            ),
            (
                "keyCertSign",
                LintError::KeyUsagesDiffer(key_usage(0b10_0001)), // digitalSignature, keyCertSign
                Box::new(|p| p.key_usages.push(KeyUsagePurpose::KeyCertSign)),
            ),
            (
                "no key usage",
                LintError::MissingExtension(ProfileExtension::KeyUsage),
                Box::new(|p| p.key_usages.clear()),
            ),
            (
                "extra EKU",
                LintError::ExtKeyUsagesDiffer,
                Box::new(|p| {
                    p.extended_key_usages
                        .push(ExtendedKeyUsagePurpose::CodeSigning)
                }),
            ),
            (
                "missing EKU",
                LintError::ExtKeyUsagesDiffer,
                Box::new(|p| {
                    p.extended_key_usages.pop();
                }),
            ),
            (
                "any EKU",
                LintError::ExtKeyUsagesDiffer,
                Box::new(|p| p.extended_key_usages.push(ExtendedKeyUsagePurpose::Any)),
            ),
            (
                "CA:TRUE",
                LintError::CaTrue,
                Box::new(|p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)),
            ),
            (
                "no basicConstraints",
                LintError::MissingExtension(ProfileExtension::BasicConstraints),
                Box::new(|p| p.is_ca = IsCa::NoCa),
            ),
            (
                "notAfter later",
                LintError::ValidityDiffers,
                Box::new(|p| p.not_after += time::Duration::seconds(1)),
            ),
            (
                "notBefore earlier",
                LintError::ValidityDiffers,
                Box::new(|p| p.not_before -= time::Duration::hours(1)),
            ),
            (
                "other serial",
                LintError::SerialDiffers,
                Box::new(|p| p.serial_number = Some(SerialNumber::from_slice(&[0x42; 16]))),
            ),
            (
                "other CN",
                LintError::SubjectDiffers,
                Box::new(|p| {
                    p.distinguished_name = rcgen::DistinguishedName::new();
                    p.distinguished_name
                        .push(DnType::CommonName, "evil.example");
                }),
            ),
            (
                "extra subject attribute",
                LintError::SubjectDiffers,
                Box::new(|p| p.distinguished_name.push(DnType::OrganizationName, "Evil")),
            ),
            (
                "CRL distribution point the grant does not name",
                LintError::CrlDistributionPoint,
                Box::new(|p| {
                    p.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
                        uris: vec!["http://evil.example/crl".into()],
                    }]
                }),
            ),
            (
                "custom extension",
                LintError::ExtensionOutsideProfile(oid(&[1, 3, 6, 1, 4, 1, 99999, 1])),
                Box::new(|p| {
                    p.custom_extensions.push(CustomExtension::from_oid_content(
                        &[1, 3, 6, 1, 4, 1, 99999, 1],
                        vec![0x05, 0x00],
                    ))
                }),
            ),
            (
                "repeated SAN extension",
                LintError::DuplicateExtension(oid(&[2, 5, 29, 17])),
                Box::new(|p| {
                    p.custom_extensions.push(CustomExtension::from_oid_content(
                        &[2, 5, 29, 17],
                        vec![0x30, 0x03, 0x82, 0x01, b'x'],
                    ))
                }),
            ),
            (
                "no AKI",
                LintError::MissingExtension(ProfileExtension::AuthorityKeyIdentifier),
                Box::new(|p| p.use_authority_key_identifier_extension = false),
            ),
            (
                "other SKI",
                LintError::SubjectKeyId,
                Box::new(|p| {
                    p.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(vec![1; 20])
                }),
            ),
        ];
        for (what, expected, change) in tamper {
            let c = case();
            let mut params = c.built.params.clone();
            change(&mut params);
            assert_eq!(lint(&c, &params), Err(expected), "{what}");
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
        assert_eq!(err, Err(LintError::PublicKeyDiffers));
        // signed by another intermediate than the one built for
        let stranger = ca("stranger");
        let der = sign(&c.built.params, &c.subject, &stranger);
        let err = after_signing(
            &der,
            &c.built,
            &c.grant,
            &c.subject.subject_public_key_info(),
        );
        assert_eq!(err, Err(LintError::IssuerDiffers));
        // same name, other key: the AKI gives it away
        let twin = ca("db intermediate");
        let der = sign(&c.built.params, &c.subject, &twin);
        let err = after_signing(
            &der,
            &c.built,
            &c.grant,
            &c.subject.subject_public_key_info(),
        );
        assert_eq!(err, Err(LintError::AuthorityKeyId));
        // an intermediate recorded as RSA but the certificate is ECDSA-signed
        let mut built = leaf_params(&c.grant, &c.ca.issuing, OffsetDateTime::now_utc()).unwrap();
        let der = sign(&built.params, &c.subject, &c.ca);
        std::sync::Arc::make_mut(&mut built.issuer).key = hsm::KeyAlgorithm::Rsa2048;
        assert_eq!(
            after_signing(&der, &built, &c.grant, &c.subject.subject_public_key_info()),
            Err(LintError::SignatureAlgorithm {
                oid: OID_SIG_ECDSA_WITH_SHA256,
                key: hsm::KeyAlgorithm::Rsa2048,
            })
        );
        // trailing bytes
        let mut der = sign(&c.built.params, &c.subject, &c.ca);
        der.push(0);
        assert_eq!(
            after_signing(
                &der,
                &c.built,
                &c.grant,
                &c.subject.subject_public_key_info()
            ),
            Err(LintError::TrailingBytes)
        );
        // not a certificate at all
        assert!(matches!(
            after_signing(
                &[0x30, 0x00],
                &c.built,
                &c.grant,
                &c.subject.subject_public_key_info()
            ),
            Err(LintError::Unparseable(_))
        ));
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

    /// Log lines and API error bodies show these texts: they stay as they
    /// were when the error was a string.
    #[test]
    fn messages_read_as_before() {
        let cases = [
            (LintError::NotExplicitlyNonCa, "leaf is not explicitly CA:FALSE"),
            (LintError::Version(X509Version::V2), "version is X509Version(1), not v3"),
            (
                LintError::SignatureAlgorithm {
                    oid: OID_SIG_ECDSA_WITH_SHA256,
                    key: hsm::KeyAlgorithm::Rsa2048,
                },
                "signature algorithm 1.2.840.10045.4.3.2 is not the one of the intermediate's rsa-2048 key",
            ),
            (
                LintError::DuplicateExtension(oid(&[2, 5, 29, 17])),
                "extension 2.5.29.17 appears twice",
            ),
            (
                LintError::ExtensionOutsideProfile(oid(&[1, 2, 3])),
                "extension 1.2.3 is outside the profile",
            ),
            (
                LintError::Criticality {
                    extension: ProfileExtension::SubjectAltName,
                    want: true,
                },
                "subjectAltName criticality is not true",
            ),
            (
                LintError::MissingExtension(ProfileExtension::ExtKeyUsage),
                "extKeyUsage is missing but the grant asks for it",
            ),
            (
                LintError::UnwantedExtension(ProfileExtension::SubjectAltName),
                "subjectAltName is present but the grant does not ask for it",
            ),
            (
                LintError::KeyUsagesDiffer(key_usage(0b10_0001)),
                "key usages Digital Signature, Key Cert Sign differ from the grant",
            ),
            (
                LintError::Unparseable(x509_parser::nom::Err::Error(X509Error::InvalidCertificate)),
                "unparseable: Parsing Error: InvalidCertificate",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), format!("lint: {text}"));
        }
    }
}
