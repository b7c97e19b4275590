//! Step *decode*: CSR bytes (PEM or DER, size-limited) → a parsed request and
//! the facts the policy engine decides on. Nothing here trusts the CSR yet;
//! its signature is checked by the next step. What the facts are taken
//! from is checked first, so that policy cannot be fooled: the public key
//! agrees with its algorithm identifier and with the signature algorithm
//! ([`spki`]), and there is exactly one place extensions are requested, with
//! no extension twice ([`attributes`]).

pub mod attributes;
pub mod curve;
pub mod der;
pub mod spki;

use policies::{CsrFacts, KeyAlgorithm, SignatureAlgorithm};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateSigningRequestDer;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ExtensionRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension, X509Extension};
use x509_parser::oid_registry::*;
use x509_parser::prelude::FromDer;
use x509_parser::x509::AlgorithmIdentifier;

/// Larger CSRs are refused before parsing. An RSA-4096 CSR with a hundred
/// SANs is under 8 KiB.
pub const MAX_CSR_BYTES: usize = 32 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("CSR is larger than {MAX_CSR_BYTES} bytes")]
    TooLarge,
    #[error("no CERTIFICATE REQUEST found in the PEM input")]
    NoPem,
    #[error("CSR is not valid DER: {0}")]
    Der(String),
    #[error("CSR has trailing bytes after the request")]
    TrailingBytes,
    #[error("CSR extension request is malformed: {0}")]
    Extensions(String),
    #[error("CSR SAN carries a malformed IP address")]
    BadIpAddress,
    #[error("CSR public key: {0}")]
    PublicKey(#[from] spki::SpkiError),
    #[error("CSR signature algorithm: {0}")]
    SignatureAlgorithm(#[from] spki::SignatureMismatch),
    #[error(transparent)]
    Attributes(#[from] attributes::AttributeError),
}

/// Accept PEM (text around the block is ignored) or raw DER.
pub fn csr_der_from_input(input: &[u8]) -> Result<Vec<u8>, DecodeError> {
    if input.len() > MAX_CSR_BYTES {
        return Err(DecodeError::TooLarge);
    }
    if input.first() == Some(&0x30) {
        return Ok(input.to_vec());
    }
    CertificateSigningRequestDer::from_pem_slice(input)
        .map(|der| der.as_ref().to_vec())
        .map_err(|_| DecodeError::NoPem)
}

pub fn parse(der: &[u8]) -> Result<X509CertificationRequest<'_>, DecodeError> {
    if der.len() > MAX_CSR_BYTES {
        return Err(DecodeError::TooLarge);
    }
    let (rest, csr) =
        X509CertificationRequest::from_der(der).map_err(|e| DecodeError::Der(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes);
    }
    Ok(csr)
}

/// The facts policy decides on. Only the public key and what policy grants
/// from these facts ever reach a certificate.
pub fn facts(csr: &X509CertificationRequest<'_>) -> Result<CsrFacts, DecodeError> {
    let info = &csr.certification_request_info;
    let key = check_key_and_signature(csr)?;
    let common_name = info.subject.iter_common_name().next().map(|cn| {
        cn.as_str()
            .map(str::to_string)
            .unwrap_or_else(|_| String::from("\u{fffd}"))
    });
    let mut facts = CsrFacts {
        common_name,
        dns_names: Vec::new(),
        ip_addrs: Vec::new(),
        uris: Vec::new(),
        key: key.algorithm,
        signature: signature_algorithm(&csr.signature_algorithm),
        requests_ca: false,
    };
    for ext in requested_extensions(csr)? {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(n) => facts.dns_names.push(n.to_string()),
                        GeneralName::URI(u) => facts.uris.push(u.to_string()),
                        GeneralName::IPAddress(bytes) => facts.ip_addrs.push(ip_from_bytes(bytes)?),
                        // Other name forms are never granted; policy sees them as nothing.
                        _ => {}
                    }
                }
            }
            ParsedExtension::BasicConstraints(bc) => facts.requests_ca |= bc.ca,
            ParsedExtension::UnsupportedExtension { .. } => {}
            ParsedExtension::ParseError { error } => {
                return Err(DecodeError::Extensions(error.to_string()))
            }
            _ => {}
        }
    }
    Ok(facts)
}

/// The SPKI agrees with its key bytes, and the signature algorithm with the
/// SPKI ([`spki`]).
pub fn check_key_and_signature(
    csr: &X509CertificationRequest<'_>,
) -> Result<spki::CheckedKey, DecodeError> {
    let key = spki::check_spki(csr.certification_request_info.subject_pki.raw)?;
    spki::check_signature_algorithm(
        key.family,
        csr.signature_algorithm.algorithm.as_bytes(),
        signature_params(&csr.signature_algorithm),
        csr.signature_value.unused_bits,
    )?;
    Ok(key)
}

fn signature_params(alg: &AlgorithmIdentifier<'_>) -> spki::SignatureParams {
    match &alg.parameters {
        None => spki::SignatureParams::Absent,
        Some(p)
            if p.header.tag() == x509_parser::der_parser::asn1_rs::Tag::Null
                && p.data.is_empty() =>
        {
            spki::SignatureParams::Null
        }
        Some(_) => spki::SignatureParams::Other,
    }
}

/// The extensions of the CSR's single extensionRequest attribute (PKCS#9
/// or Microsoft's legacy OID), after [`attributes::extension_request`]
/// made sure there is at most one and that no extension appears twice.
pub fn requested_extensions<'a>(
    csr: &X509CertificationRequest<'a>,
) -> Result<Vec<X509Extension<'a>>, DecodeError> {
    let Some(der) = attributes::extension_request(csr.certification_request_info.raw)? else {
        return Ok(Vec::new());
    };
    let (rest, request) =
        ExtensionRequest::from_der(der).map_err(|e| DecodeError::Extensions(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Extensions("trailing bytes".into()));
    }
    Ok(request.extensions)
}

fn ip_from_bytes(bytes: &[u8]) -> Result<std::net::IpAddr, DecodeError> {
    match bytes.len() {
        4 => {
            let octets: [u8; 4] = bytes.try_into().map_err(|_| DecodeError::BadIpAddress)?;
            Ok(std::net::IpAddr::from(octets))
        }
        16 => {
            let octets: [u8; 16] = bytes.try_into().map_err(|_| DecodeError::BadIpAddress)?;
            Ok(std::net::IpAddr::from(octets))
        }
        _ => Err(DecodeError::BadIpAddress),
    }
}

/// What policy sees of a key; malformed keys are `Other` (the pipeline
/// refuses them in [`facts`] before policy runs).
pub fn key_algorithm(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> KeyAlgorithm {
    match spki::check_spki(spki.raw) {
        Ok(key) => key.algorithm,
        Err(e) => KeyAlgorithm::Other(format!("malformed public key ({e})")),
    }
}

fn signature_algorithm(alg: &AlgorithmIdentifier<'_>) -> SignatureAlgorithm {
    let oid = &alg.algorithm;
    if *oid == OID_PKCS1_RSASSAPSS {
        return pss_algorithm(alg);
    }
    let known = [
        (OID_SIG_ECDSA_WITH_SHA256, SignatureAlgorithm::EcdsaSha256),
        (OID_SIG_ECDSA_WITH_SHA384, SignatureAlgorithm::EcdsaSha384),
        (OID_SIG_ECDSA_WITH_SHA512, SignatureAlgorithm::EcdsaSha512),
        (OID_SIG_ED25519, SignatureAlgorithm::Ed25519),
        (OID_PKCS1_SHA256WITHRSA, SignatureAlgorithm::RsaPkcs1Sha256),
        (OID_PKCS1_SHA384WITHRSA, SignatureAlgorithm::RsaPkcs1Sha384),
        (OID_PKCS1_SHA512WITHRSA, SignatureAlgorithm::RsaPkcs1Sha512),
    ];
    for (known_oid, alg) in known {
        if *oid == known_oid {
            return alg;
        }
    }
    let name = if *oid == OID_PKCS1_SHA1WITHRSA {
        "sha1WithRSAEncryption".to_string()
    } else if oid.to_id_string() == "1.2.840.10045.4.1" {
        "ecdsa-with-SHA1".to_string()
    } else {
        oid.to_id_string()
    };
    SignatureAlgorithm::Other(name)
}

/// RSASSA-PSS names its hash in its parameters (SHA-1 when absent).
fn pss_algorithm(alg: &AlgorithmIdentifier<'_>) -> SignatureAlgorithm {
    use x509_parser::signature_algorithm::RsaSsaPssParams;
    let Some(params) = alg.parameters.as_ref() else {
        return SignatureAlgorithm::Other("rsassa-pss without parameters".into());
    };
    let Ok(params) = RsaSsaPssParams::try_from(params) else {
        return SignatureAlgorithm::Other("rsassa-pss with malformed parameters".into());
    };
    let hash = params.hash_algorithm_oid();
    if *hash == OID_NIST_HASH_SHA256 {
        SignatureAlgorithm::RsaPssSha256
    } else if *hash == OID_NIST_HASH_SHA384 {
        SignatureAlgorithm::RsaPssSha384
    } else if *hash == OID_NIST_HASH_SHA512 {
        SignatureAlgorithm::RsaPssSha512
    } else {
        SignatureAlgorithm::Other(format!("rsassa-pss with hash {hash}"))
    }
}
