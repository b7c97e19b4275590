//! Step *build*: the certificate's fields come from the Grant only — the
//! CSR contributes its public key and nothing else. Never a CA bit, never a
//! requested extension.

use crate::hierarchy::IssuingCa;
use crate::serial::{random_serial, SERIAL_LEN};
use policies::{ExtKeyUsage, Grant, KeyUsage};
use rcgen::{
    CertificateParams, CrlDistributionPoint, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    IsCa, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// Leaves start five minutes in the past so that a peer whose clock is a
/// little behind does not reject a certificate issued a moment ago.
pub const BACKDATE: Duration = Duration::minutes(5);

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("granted name '{0}' cannot be encoded")]
    Name(String),
    #[error("no randomness for the serial number: {0}")]
    Random(String),
}

/// Leaf parameters plus the serial they carry (kept for the response and
/// log). Made only by [`leaf_params`] from a [`Grant`]; the signer takes
/// nothing else, so it signs only what a grant allowed.
pub struct Built {
    pub(super) params: CertificateParams,
    pub(super) serial: [u8; SERIAL_LEN],
    /// The intermediate these parameters are for: what the after-signing
    /// lint checks the certificate's issuer fields against.
    pub(super) issuer: std::sync::Arc<IssuerFacts>,
    /// The CRL distribution point the leaf carries (the class policy's
    /// `crl_url` and the intermediate's key label), if any.
    pub(super) crl_distribution_point: Option<String>,
}

/// A leaf's CRL distribution point (and its CRL's issuing distribution
/// point): the class's public CRL base URL and the intermediate's key label,
/// the path `GET /v1/classes/{class}/crl/{label}` serves.
pub fn distribution_point(base: &str, key_label: &str) -> String {
    format!("{}/{key_label}", base.trim_end_matches('/'))
}

impl Built {
    pub fn serial(&self) -> &[u8; SERIAL_LEN] {
        &self.serial
    }
    pub fn not_before(&self) -> OffsetDateTime {
        self.params.not_before
    }
    pub fn not_after(&self) -> OffsetDateTime {
        self.params.not_after
    }
}

/// The issuing intermediate as the after-signing lint needs it, read once
/// when the intermediate is loaded (`hierarchy::issuing_ca`), not parsed
/// again for every certificate.
#[derive(Clone, Debug)]
pub struct IssuerFacts {
    /// The intermediate's subject, as encoded: the leaf's issuer.
    pub subject_der: Vec<u8>,
    /// Its notAfter (Unix seconds): no leaf outlives it.
    pub not_after: i64,
    /// Its subjectKeyIdentifier, or what rcgen derives when it has none
    /// (SHA-256 of its SPKI, truncated to 20 bytes): the leaf's
    /// authorityKeyIdentifier.
    pub key_id: Vec<u8>,
    /// The intermediate's key, which decides the signature algorithm.
    pub key: hsm::KeyAlgorithm,
}

impl IssuerFacts {
    pub fn read(
        cert: &x509_parser::certificate::X509Certificate<'_>,
        key: hsm::KeyAlgorithm,
    ) -> IssuerFacts {
        use sha2::{Digest, Sha256};
        use x509_parser::extensions::ParsedExtension;
        let key_id = cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            })
            .unwrap_or_else(|| Sha256::digest(cert.public_key().raw)[..20].to_vec());
        IssuerFacts {
            subject_der: cert.subject().as_raw().to_vec(),
            not_after: cert.validity().not_after.timestamp(),
            key_id,
            key,
        }
    }
}

pub(super) fn leaf_params(
    grant: &Grant,
    issuer: &IssuingCa,
    now: OffsetDateTime,
) -> Result<Built, BuildError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(cn) = grant.common_name() {
        dn.push(DnType::CommonName, cn);
    }
    params.distinguished_name = dn;
    let mut sans =
        Vec::with_capacity(grant.dns_names().len() + grant.ip_addrs().len() + grant.uris().len());
    for name in grant.dns_names() {
        sans.push(SanType::DnsName(
            name.clone()
                .try_into()
                .map_err(|_| BuildError::Name(name.clone()))?,
        ));
    }
    sans.extend(grant.ip_addrs().iter().map(|ip| SanType::IpAddress(*ip)));
    for uri in grant.uris() {
        sans.push(SanType::URI(
            uri.clone()
                .try_into()
                .map_err(|_| BuildError::Name(uri.clone()))?,
        ));
    }
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = grant.key_usages().iter().map(key_usage).collect();
    params.extended_key_usages = grant.ext_key_usages().iter().map(ext_key_usage).collect();
    params.not_before = now - BACKDATE;
    let ttl = Duration::try_from(grant.ttl()).unwrap_or(Duration::MAX);
    params.not_after = now
        .checked_add(ttl)
        .unwrap_or(issuer.not_after)
        .min(issuer.not_after);
    let serial = random_serial().map_err(|e| BuildError::Random(e.to_string()))?;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.use_authority_key_identifier_extension = true;
    let crl_distribution_point = grant
        .crl_url()
        .map(|base| distribution_point(base, &issuer.key.label));
    if let Some(url) = &crl_distribution_point {
        params.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![url.clone()],
        }];
    }
    Ok(Built {
        params,
        serial,
        crl_distribution_point,
        issuer: issuer.facts.clone(),
    })
}

fn key_usage(usage: &KeyUsage) -> KeyUsagePurpose {
    match usage {
        KeyUsage::DigitalSignature => KeyUsagePurpose::DigitalSignature,
        KeyUsage::KeyEncipherment => KeyUsagePurpose::KeyEncipherment,
        KeyUsage::KeyAgreement => KeyUsagePurpose::KeyAgreement,
        KeyUsage::ContentCommitment => KeyUsagePurpose::ContentCommitment,
        KeyUsage::DataEncipherment => KeyUsagePurpose::DataEncipherment,
    }
}

fn ext_key_usage(usage: &ExtKeyUsage) -> ExtendedKeyUsagePurpose {
    match usage {
        ExtKeyUsage::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
        ExtKeyUsage::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
        ExtKeyUsage::CodeSigning => ExtendedKeyUsagePurpose::CodeSigning,
        ExtKeyUsage::EmailProtection => ExtendedKeyUsagePurpose::EmailProtection,
    }
}
