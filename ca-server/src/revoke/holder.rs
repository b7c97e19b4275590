//! Self-revocation: the holder of a certificate's private key may revoke
//! it without an auth key, as in ACME. The request carries the certificate
//! and a signature with its key over `ca_proto::revocation::holder_message`
//! (class, serial, reason, timestamp); the certificate must be one that an
//! intermediate of the class signed, and the timestamp within the clock
//! skew. Every failure is the same `unauthenticated` to the caller (the
//! reason goes to the server's trace only).

use ca_proto::revocation::{holder_message, HolderProof, RevocationReason};
use ring::signature::{self, UnparsedPublicKey};
use x509_parser::prelude::*;

#[derive(Debug, thiserror::Error)]
pub enum HolderError {
    #[error("the certificate is not one PEM certificate")]
    NotPem,
    #[error("the certificate does not parse: {0}")]
    NotCertificate(String),
    #[error("the certificate's serial is not the one to revoke")]
    SerialMismatch,
    #[error("no intermediate of the class signed the certificate")]
    NotIssuedHere,
    #[error("timestamp outside the accepted clock skew")]
    Stale,
    #[error("the signature is not base64")]
    SignatureEncoding,
    #[error("unsupported key type for a holder signature")]
    UnsupportedKey,
    #[error("the signature does not verify with the certificate's key")]
    BadSignature,
}

/// Check a holder's proof; returns the SHA-256 of the certificate's SPKI.
pub fn verify(
    proof: &HolderProof,
    class: &str,
    serial: &str,
    reason: RevocationReason,
    intermediates: &[&[u8]],
    now: i64,
    max_skew_secs: i64,
) -> Result<[u8; 32], HolderError> {
    let limits = ca_proto::pem::Limits::DEFAULT;
    let der = ca_proto::pem::decode_first(
        proof.certificate.as_bytes(),
        ca_proto::pem::Label::Certificate,
        &limits,
    )
    .map_err(|_| HolderError::NotPem)?;
    let (_, cert) =
        X509Certificate::from_der(&der).map_err(|e| HolderError::NotCertificate(e.to_string()))?;
    if hex::encode(cert.raw_serial()) != serial.to_ascii_lowercase() {
        return Err(HolderError::SerialMismatch);
    }
    let issued_here = intermediates.iter().any(|int| {
        X509Certificate::from_der(int)
            .ok()
            .is_some_and(|(_, ca)| cert.verify_signature(Some(ca.public_key())).is_ok())
    });
    if !issued_here {
        return Err(HolderError::NotIssuedHere);
    }
    if (now - proof.timestamp).abs() > max_skew_secs {
        return Err(HolderError::Stale);
    }
    use base64::Engine;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(&proof.signature)
        .map_err(|_| HolderError::SignatureEncoding)?;
    let message = holder_message(class, serial, reason, proof.timestamp);
    let spki = cert.public_key();
    let key = spki.subject_public_key.data.as_ref();
    let alg: &dyn signature::VerificationAlgorithm = match spki.parsed() {
        Ok(x509_parser::public_key::PublicKey::EC(point)) => match point.key_size() {
            256 => &signature::ECDSA_P256_SHA256_ASN1,
            384 => &signature::ECDSA_P384_SHA384_ASN1,
            _ => return Err(HolderError::UnsupportedKey),
        },
        Ok(x509_parser::public_key::PublicKey::RSA(_)) => &signature::RSA_PKCS1_2048_8192_SHA256,
        _ if spki.algorithm.algorithm == x509_parser::oid_registry::OID_SIG_ED25519 => {
            &signature::ED25519
        }
        _ => return Err(HolderError::UnsupportedKey),
    };
    UnparsedPublicKey::new(alg, key)
        .verify(&message, &sig)
        .map_err(|_| HolderError::BadSignature)?;
    use sha2::{Digest, Sha256};
    Ok(Sha256::digest(spki.raw).into())
}
