//! Step *decode*: CSR bytes (PEM or DER, size-limited) → a parsed request and
//! the facts the policy engine decides on. Nothing here trusts the CSR yet;
//! its signature is checked by the next step.

use policies::{CsrFacts, KeyAlgorithm, SignatureAlgorithm};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateSigningRequestDer;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::*;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

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
        key: key_algorithm(&info.subject_pki),
        signature: signature_algorithm(&csr.signature_algorithm.algorithm),
        requests_ca: false,
    };
    if let Some(extensions) = csr.requested_extensions() {
        for ext in extensions {
            match ext {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        match name {
                            GeneralName::DNSName(n) => facts.dns_names.push(n.to_string()),
                            GeneralName::URI(u) => facts.uris.push(u.to_string()),
                            GeneralName::IPAddress(bytes) => {
                                facts.ip_addrs.push(ip_from_bytes(bytes)?)
                            }
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
    }
    Ok(facts)
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

pub fn key_algorithm(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> KeyAlgorithm {
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        return match curve {
            Some(c) if c == OID_EC_P256 => KeyAlgorithm::EcP256,
            Some(c) if c == OID_NIST_EC_P384 => KeyAlgorithm::EcP384,
            Some(c) => KeyAlgorithm::Other(format!("EC curve {c}")),
            None => KeyAlgorithm::Other("EC key without a named curve".into()),
        };
    }
    if *alg == OID_SIG_ED25519 {
        return KeyAlgorithm::Ed25519;
    }
    if *alg == OID_PKCS1_RSAENCRYPTION {
        return match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) if is_sane_rsa(&rsa) => KeyAlgorithm::Rsa {
                bits: u32::try_from(rsa.key_size()).unwrap_or(0),
            },
            _ => KeyAlgorithm::Other("malformed RSA public key".into()),
        };
    }
    KeyAlgorithm::Other(format!("public key algorithm {alg}"))
}

/// An RSA exponent must be odd and > 1 (RFC 8017), and modulus non-empty.
fn is_sane_rsa(rsa: &x509_parser::public_key::RSAPublicKey<'_>) -> bool {
    let exponent = rsa
        .exponent
        .iter()
        .skip_while(|&&b| b == 0)
        .collect::<Vec<_>>();
    let odd = exponent.last().is_some_and(|&&b| b & 1 == 1);
    let greater_than_one = exponent.len() > 1 || exponent.first().is_some_and(|&&b| b > 1);
    odd && greater_than_one && rsa.key_size() > 0
}

fn signature_algorithm(oid: &x509_parser::der_parser::oid::Oid<'_>) -> SignatureAlgorithm {
    let known = [
        (OID_SIG_ECDSA_WITH_SHA256, SignatureAlgorithm::EcdsaSha256),
        (OID_SIG_ECDSA_WITH_SHA384, SignatureAlgorithm::EcdsaSha384),
        (OID_SIG_ECDSA_WITH_SHA512, SignatureAlgorithm::EcdsaSha512),
        (OID_SIG_ED25519, SignatureAlgorithm::Ed25519),
        (OID_PKCS1_SHA256WITHRSA, SignatureAlgorithm::RsaPkcs1Sha256),
        (OID_PKCS1_SHA384WITHRSA, SignatureAlgorithm::RsaPkcs1Sha384),
        (OID_PKCS1_SHA512WITHRSA, SignatureAlgorithm::RsaPkcs1Sha512),
        (OID_PKCS1_RSASSAPSS, SignatureAlgorithm::RsaPssSha256),
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
