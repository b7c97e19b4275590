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

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("CSR signature does not verify with its own public key ({0})")]
pub struct ProofError(pub String);

pub fn proof_of_possession(csr: &X509CertificationRequest<'_>) -> Result<(), ProofError> {
    decode::check_key_and_signature(csr).map_err(|e| ProofError(e.to_string()))?;
    csr.verify_signature()
        .map_err(|e| ProofError(e.to_string()))
}
