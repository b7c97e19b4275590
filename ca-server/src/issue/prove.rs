//! Step *prove*: the CSR's self-signature is the requester's proof that it
//! holds the private key. A CSR that fails it never reaches policy.

use x509_parser::certification_request::X509CertificationRequest;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("CSR signature does not verify with its own public key ({0})")]
pub struct ProofError(pub String);

pub fn proof_of_possession(csr: &X509CertificationRequest<'_>) -> Result<(), ProofError> {
    csr.verify_signature()
        .map_err(|e| ProofError(e.to_string()))
}
