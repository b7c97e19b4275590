//! Building one RFC 5280 v2 CRL, signed in the HSM by the CA that issued
//! the listed certificates (an intermediate for leaves, the class root for
//! intermediates): CRL number, thisUpdate/nextUpdate, authority key
//! identifier (the issuer's own subject key identifier), a reason code per
//! entry, and an issuing distribution point when the class has a public CRL
//! URL (then leaves carry the same URL as their CRL distribution point).
//!
//! The CRL number is thisUpdate in Unix nanoseconds (as Boulder does), so
//! replicas that sign the same intermediate's CRL need no shared counter
//! and numbers only grow.

use super::store::RevocationRecord;
use hsm::{HsmError, HsmSigningKey, KeyInfo, PoolSession};
use rcgen::{
    CertificateRevocationListParams, CrlDistributionPoint, CrlIssuingDistributionPoint, CrlScope,
    Issuer, KeyIdMethod, RevokedCertParams, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    #[error(transparent)]
    Hsm(#[from] HsmError),
    #[error("CRL could not be built: {0}")]
    Encode(String),
    #[error("issuer certificate: {0}")]
    Issuer(String),
}

/// What a CRL covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Leaves of an intermediate.
    Leaves,
    /// Intermediates of a root.
    CaCertificates,
}

/// The signed CRL and its times.
#[derive(Clone, Debug)]
pub struct SignedCrl {
    pub der: Vec<u8>,
    pub this_update: OffsetDateTime,
    pub next_update: OffsetDateTime,
    pub number: u128,
    /// Entries listed.
    pub entries: usize,
}

/// The subject key identifier of a CA certificate.
pub fn subject_key_id(cert_der: &[u8]) -> Result<Vec<u8>, CrlError> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| CrlError::Issuer(format!("not a certificate: {e}")))?;
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectKeyIdentifier(ski) = ext.parsed_extension() {
            return Ok(ski.0.to_vec());
        }
    }
    Err(CrlError::Issuer("no subject key identifier".into()))
}

/// Sign the CRL of `issuer_cert_der` (key `issuer_key`) listing every
/// record of `records` that has not expired at `this_update`.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    session: &mut PoolSession,
    issuer_cert_der: &[u8],
    issuer_key: &KeyInfo,
    records: &[&RevocationRecord],
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
    scope: Scope,
    distribution_point: Option<&str>,
) -> Result<SignedCrl, CrlError> {
    let mut revoked_certs = Vec::with_capacity(records.len());
    for r in records {
        let not_after = ca_proto::time::Rfc3339::parse(&r.not_after)
            .map(|t| t.time())
            .map_err(|e| CrlError::Encode(format!("record {}: not_after: {e}", r.serial)))?;
        if not_after < this_update {
            continue;
        }
        let serial = hex::decode(&r.serial)
            .map_err(|e| CrlError::Encode(format!("record serial {}: {e}", r.serial)))?;
        let revocation_time = ca_proto::time::Rfc3339::parse(&r.revoked_at)
            .map(|t| t.time())
            .map_err(|e| CrlError::Encode(format!("record {}: revoked_at: {e}", r.serial)))?;
        revoked_certs.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&serial),
            revocation_time,
            reason_code: Some(rcgen_reason(r.reason)),
            invalidity_date: None,
        });
    }
    let number = this_update.unix_timestamp_nanos().max(0) as u128;
    let entries = revoked_certs.len();
    let params = CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: SerialNumber::from_slice(&minimal_be(number)),
        issuing_distribution_point: distribution_point.map(|url| CrlIssuingDistributionPoint {
            distribution_point: CrlDistributionPoint {
                uris: vec![url.to_string()],
            },
            scope: Some(match scope {
                Scope::Leaves => CrlScope::UserCertsOnly,
                Scope::CaCertificates => CrlScope::CaCertsOnly,
            }),
        }),
        revoked_certs,
        key_identifier_method: KeyIdMethod::PreSpecified(subject_key_id(issuer_cert_der)?),
    };
    let signer = HsmSigningKey::new(session, issuer_key);
    let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(issuer_cert_der), &signer)
        .map_err(|e| CrlError::Issuer(e.to_string()))?;
    match params.signed_by(&issuer) {
        Ok(crl) => Ok(SignedCrl {
            der: crl.der().to_vec(),
            this_update,
            next_update,
            number,
            entries,
        }),
        Err(e) => Err(match signer.take_error() {
            Some(hsm) => CrlError::Hsm(hsm),
            None => CrlError::Encode(e.to_string()),
        }),
    }
}

/// Big-endian bytes without leading zeros (at least one byte).
fn minimal_be(n: u128) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len() - 1);
    bytes[first..].to_vec()
}

fn rcgen_reason(r: ca_proto::revocation::RevocationReason) -> rcgen::RevocationReason {
    use ca_proto::revocation::RevocationReason as R;
    match r {
        R::Unspecified => rcgen::RevocationReason::Unspecified,
        R::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
        R::CaCompromise => rcgen::RevocationReason::CaCompromise,
        R::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
        R::Superseded => rcgen::RevocationReason::Superseded,
        R::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
        R::PrivilegeWithdrawn => rcgen::RevocationReason::PrivilegeWithdrawn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_minimal_big_endian() {
        assert_eq!(minimal_be(0), vec![0]);
        assert_eq!(minimal_be(1), vec![1]);
        assert_eq!(minimal_be(0x0102), vec![1, 2]);
        let n = 1_764_979_200_000_000_000u128;
        assert_eq!(
            u128::from_be_bytes({
                let mut b = [0u8; 16];
                let m = minimal_be(n);
                b[16 - m.len()..].copy_from_slice(&m);
                b
            }),
            n
        );
    }
}
