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
    pub(super) issuer: IssuerFacts,
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

/// The issuing intermediate as the after-signing lint needs it.
#[derive(Clone, Debug)]
pub struct IssuerFacts {
    /// The intermediate's certificate (its subject is the leaf's issuer,
    /// its subjectKeyIdentifier the leaf's authorityKeyIdentifier).
    pub cert_der: Vec<u8>,
    /// The intermediate's key, which decides the signature algorithm.
    pub key: hsm::KeyAlgorithm,
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
        issuer: IssuerFacts {
            cert_der: issuer.cert_der.clone(),
            key: issuer.key.algorithm,
        },
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
