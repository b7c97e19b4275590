//! Step *prove*: the CSR's self-signature is the requester's proof that it
//! holds the private key. A CSR that fails it never reaches policy.
//!
//! The signature must verify under the algorithm the SPKI names: x509-parser
//! picks the verifier from the CSR's *signature* OID (and, for ECDSA, the
//! SPKI's curve), so the key and signature algorithms are checked to agree
//! first ([`super::decode::check_key_and_signature`]); otherwise a "P-256"
//! SPKI carrying Ed25519 key bytes, signed with Ed25519, would verify. ring
//! then parses the key for the named algorithm (and rejects EC points off
//! the curve itself, a second line behind [`super::decode::curve`]).

use super::decode;
use x509_parser::certification_request::X509CertificationRequest;

/// Why a CSR is not proof that its requester holds the key.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProofError {
    /// The key bytes or the signature algorithm disagree with what the
    /// SPKI says (checked before any signature is verified).
    #[error("CSR signature does not verify with its own public key ({0})")]
    KeyMismatch(decode::DecodeError),
    /// The signature does not verify under the CSR's own key.
    #[error("CSR signature does not verify with its own public key ({0})")]
    BadSignature(x509_parser::error::X509Error),
}

pub fn proof_of_possession(csr: &X509CertificationRequest<'_>) -> Result<(), ProofError> {
    decode::check_key_and_signature(csr).map_err(ProofError::KeyMismatch)?;
    csr.verify_signature().map_err(ProofError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issue::decode::tests::*;
    use crate::issue::decode::{parse, spki};
    use rcgen::PublicKeyData;

    #[test]
    fn a_well_formed_csr_proves_possession() {
        let key = p256();
        let der = p256_csr(&key, &[]);
        assert_eq!(proof_of_possession(&parse(&der).unwrap()), Ok(()));
        let ed = ed25519();
        let der = csr(
            &ed.subject_public_key_info(),
            &[],
            &alg_id(spki::oid::ED25519),
            signer(&ed),
        );
        assert_eq!(proof_of_possession(&parse(&der).unwrap()), Ok(()));
    }

    #[test]
    fn the_signature_must_verify_under_the_algorithm_the_spki_names() {
        let ed = ed25519();
        let der = csr(
            &spki(&p256_alg(), ed.public_key_raw()),
            &[],
            &alg_id(spki::oid::ED25519),
            signer(&ed),
        );
        let csr = parse(&der).unwrap();
        assert!(
            csr.verify_signature().is_ok(),
            "x509-parser alone is fooled"
        );
        assert!(proof_of_possession(&csr).is_err());
    }
}
