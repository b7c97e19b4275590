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
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ExtensionRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension, X509Extension};
use x509_parser::oid_registry::*;
use x509_parser::prelude::FromDer;
use x509_parser::x509::AlgorithmIdentifier;

/// Larger CSRs are refused before parsing. An RSA-4096 CSR with a hundred
/// SANs is under 8 KiB.
pub const MAX_CSR_BYTES: usize = 32 * 1024;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("CSR is larger than {MAX_CSR_BYTES} bytes")]
    TooLarge,
    #[error("no CERTIFICATE REQUEST found in the PEM input")]
    NoPem,
    #[error("CSR is not valid DER: {0}")]
    Der(x509_parser::nom::Err<x509_parser::error::X509Error>),
    /// The CSR's key is well formed but not one certificates can carry.
    #[error("unsupported public key: {0}")]
    UnsupportedKey(rcgen::Error),
    #[error("CSR has trailing bytes after the request")]
    TrailingBytes,
    #[error("CSR extension request is malformed: {0}")]
    Extensions(ExtensionsError),
    #[error("CSR SAN carries a malformed IP address")]
    BadIpAddress,
    #[error("CSR public key: {0}")]
    PublicKey(#[from] spki::SpkiError),
    #[error("CSR signature algorithm: {0}")]
    SignatureAlgorithm(#[from] spki::SignatureMismatch),
    #[error(transparent)]
    Attributes(#[from] attributes::AttributeError),
}

/// Why the CSR's extensionRequest cannot be read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ExtensionsError {
    /// The extensionRequest value is not a DER sequence of extensions.
    #[error("{0}")]
    Der(x509_parser::nom::Err<x509_parser::error::X509Error>),
    /// Bytes follow the sequence of extensions.
    #[error("trailing bytes")]
    TrailingBytes,
    /// One extension Trellis reads (e.g. subjectAltName) does not parse.
    #[error("{0}")]
    Extension(x509_parser::nom::Err<x509_parser::der_parser::error::BerError>),
}

/// Accept PEM (text around the block is ignored; the first `CERTIFICATE
/// REQUEST` block is the request) or raw DER.
pub fn csr_der_from_input(input: &[u8]) -> Result<Vec<u8>, DecodeError> {
    use ca_proto::pem::{decode_first, Label, Limits};
    if input.len() > MAX_CSR_BYTES {
        return Err(DecodeError::TooLarge);
    }
    if input.first() == Some(&0x30) {
        return Ok(input.to_vec());
    }
    let limits = Limits {
        text_bytes: MAX_CSR_BYTES,
        blocks: 1,
        der_bytes: MAX_CSR_BYTES,
    };
    decode_first(input, Label::CertificateRequest, &limits).map_err(|_| DecodeError::NoPem)
}

pub fn parse(der: &[u8]) -> Result<X509CertificationRequest<'_>, DecodeError> {
    if der.len() > MAX_CSR_BYTES {
        return Err(DecodeError::TooLarge);
    }
    let (rest, csr) = X509CertificationRequest::from_der(der).map_err(DecodeError::Der)?;
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
                return Err(DecodeError::Extensions(ExtensionsError::Extension(
                    error.clone(),
                )))
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
    let (rest, request) = ExtensionRequest::from_der(der)
        .map_err(|e| DecodeError::Extensions(ExtensionsError::Der(e)))?;
    if !rest.is_empty() {
        return Err(DecodeError::Extensions(ExtensionsError::TrailingBytes));
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

/// Crafted CSRs, assembled in DER and signed with rcgen (ring) keys; also
/// used by the `prove` tests.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{KeyPair, PublicKeyData, SigningKey};

    pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let len = content.len();
        let mut out = vec![tag];
        match len {
            0..=0x7f => out.push(len as u8),
            0x80..=0xff => out.extend([0x81, len as u8]),
            _ => out.extend([0x82, (len >> 8) as u8, len as u8]),
        }
        out.extend_from_slice(content);
        out
    }

    pub(crate) fn seq(parts: &[&[u8]]) -> Vec<u8> {
        tlv(der::SEQUENCE, &parts.concat())
    }

    pub(crate) const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
    const SAN: &[u8] = &[0x55, 0x1d, 0x11];

    pub(crate) fn alg_id(oid: &[u8]) -> Vec<u8> {
        seq(&[&tlv(der::OID, oid)])
    }

    pub(crate) fn spki(alg: &[u8], key: &[u8]) -> Vec<u8> {
        seq(&[alg, &tlv(der::BIT_STRING, &[&[0u8][..], key].concat())])
    }

    pub(crate) fn p256_alg() -> Vec<u8> {
        seq(&[
            &tlv(der::OID, spki::oid::EC_PUBLIC_KEY),
            &tlv(der::OID, spki::oid::P256),
        ])
    }

    fn extension(oid: &[u8], critical: bool, value: &[u8]) -> Vec<u8> {
        let flag = if critical {
            tlv(der::BOOLEAN, &[0xff])
        } else {
            Vec::new()
        };
        seq(&[&tlv(der::OID, oid), &flag, &tlv(der::OCTET_STRING, value)])
    }

    fn ca_true() -> Vec<u8> {
        extension(BASIC_CONSTRAINTS, true, &[0x30, 0x03, 0x01, 0x01, 0xff])
    }

    fn san(name: &str) -> Vec<u8> {
        extension(SAN, false, &seq(&[&tlv(0x82, name.as_bytes())]))
    }

    pub(crate) fn ext_request(oid: &[u8], extensions: &[Vec<u8>]) -> Vec<u8> {
        seq(&[
            &tlv(der::OID, oid),
            &tlv(der::SET, &tlv(der::SEQUENCE, &extensions.concat())),
        ])
    }

    /// CertificationRequest { info, signatureAlgorithm, signature }.
    pub(crate) fn csr(
        spki: &[u8],
        attributes: &[Vec<u8>],
        signature_alg: &[u8],
        sign: impl Fn(&[u8]) -> Vec<u8>,
    ) -> Vec<u8> {
        let cn = seq(&[
            &tlv(der::OID, &[0x55, 0x04, 0x03]),
            &tlv(0x0c, b"x.db.internal"),
        ]);
        let subject = seq(&[&tlv(der::SET, &cn)]);
        let info = seq(&[
            &tlv(der::INTEGER, &[0]),
            &subject,
            spki,
            &tlv(der::CONTEXT_0, &attributes.concat()),
        ]);
        let signature = sign(&info);
        seq(&[
            &info,
            signature_alg,
            &tlv(der::BIT_STRING, &[&[0u8][..], &signature].concat()),
        ])
    }

    pub(crate) fn signer(key: &KeyPair) -> impl Fn(&[u8]) -> Vec<u8> + '_ {
        move |msg| key.sign(msg).unwrap()
    }

    pub(crate) fn p256() -> KeyPair {
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
    }

    pub(crate) fn ed25519() -> KeyPair {
        KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap()
    }

    /// A well-formed P-256 CSR with the given attributes.
    pub(crate) fn p256_csr(key: &KeyPair, attributes: &[Vec<u8>]) -> Vec<u8> {
        csr(
            &key.subject_public_key_info(),
            attributes,
            &alg_id(ECDSA_SHA256),
            signer(key),
        )
    }

    fn facts_of(der: &[u8]) -> Result<CsrFacts, DecodeError> {
        facts(&parse(der)?)
    }

    #[test]
    fn a_well_formed_crafted_csr_gives_its_facts() {
        let key = p256();
        let der = p256_csr(
            &key,
            &[ext_request(
                attributes::OID_PKCS9_EXTENSION_REQUEST,
                &[san("x.db.internal")],
            )],
        );
        let facts = facts_of(&der).unwrap();
        assert_eq!(facts.key, KeyAlgorithm::EcP256);
        assert_eq!(facts.signature, SignatureAlgorithm::EcdsaSha256);
        assert_eq!(facts.dns_names, ["x.db.internal"]);
        assert!(!facts.requests_ca);
        // and rcgen's own CSRs
        let params = rcgen::CertificateParams::new(vec!["a.db.internal".to_string()]).unwrap();
        let der = params.serialize_request(&key).unwrap().der().to_vec();
        assert_eq!(facts_of(&der).unwrap().dns_names, ["a.db.internal"]);
    }

    #[test]
    fn a_p256_spki_with_ed25519_bytes_signed_with_ed25519_is_malformed() {
        let ed = ed25519();
        let der = csr(
            &spki(&p256_alg(), ed.public_key_raw()),
            &[],
            &alg_id(spki::oid::ED25519),
            signer(&ed),
        );
        let csr = parse(&der).unwrap();
        // x509-parser alone accepts the signature: this is the confusion
        assert!(csr.verify_signature().is_ok());
        assert!(matches!(
            facts(&csr),
            Err(DecodeError::PublicKey(spki::SpkiError::EcPoint { .. }))
        ));
    }

    #[test]
    fn a_signature_algorithm_of_another_family_is_malformed() {
        let key = p256();
        let der = csr(
            &key.subject_public_key_info(),
            &[],
            &alg_id(spki::oid::ED25519),
            signer(&key),
        );
        let err = facts_of(&der).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::SignatureAlgorithm(spki::SignatureMismatch::Family { .. })
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "CSR signature algorithm: the CSR is signed with 1.3.101.112, which an EC key cannot make"
        );
        // ECDSA with NULL parameters
        let with_null = seq(&[&tlv(der::OID, ECDSA_SHA256), &[0x05, 0x00]]);
        let der = csr(
            &key.subject_public_key_info(),
            &[],
            &with_null,
            signer(&key),
        );
        assert!(matches!(
            facts_of(&der),
            Err(DecodeError::SignatureAlgorithm(
                spki::SignatureMismatch::Parameters { .. }
            ))
        ));
    }

    #[test]
    fn a_second_extension_request_is_malformed() {
        let key = p256();
        for second_oid in [
            attributes::OID_PKCS9_EXTENSION_REQUEST,
            attributes::OID_MS_EXTENSION_REQUEST,
        ] {
            for second in [ca_true(), san("evil.example")] {
                let der = p256_csr(
                    &key,
                    &[
                        ext_request(
                            attributes::OID_PKCS9_EXTENSION_REQUEST,
                            &[san("x.db.internal")],
                        ),
                        ext_request(second_oid, &[second]),
                    ],
                );
                let csr = parse(&der).unwrap();
                // what x509-parser alone shows: only the first one
                assert_eq!(csr.requested_extensions().map(|e| e.count()), Some(1));
                assert_eq!(
                    facts(&csr),
                    Err(DecodeError::Attributes(
                        attributes::AttributeError::TooManyExtensionRequests(2)
                    ))
                );
            }
        }
    }

    #[test]
    fn a_repeated_extension_is_malformed() {
        let key = p256();
        let der = p256_csr(
            &key,
            &[ext_request(
                attributes::OID_PKCS9_EXTENSION_REQUEST,
                &[san("x.db.internal"), san("evil.example")],
            )],
        );
        assert_eq!(
            facts_of(&der),
            Err(DecodeError::Attributes(
                attributes::AttributeError::RepeatedExtension("2.5.29.17".into())
            ))
        );
    }

    #[test]
    fn the_legacy_microsoft_extension_request_is_read() {
        let key = p256();
        let der = p256_csr(
            &key,
            &[ext_request(
                attributes::OID_MS_EXTENSION_REQUEST,
                &[san("x.db.internal"), ca_true()],
            )],
        );
        let facts = facts_of(&der).unwrap();
        assert!(
            facts.requests_ca,
            "CA:TRUE in the legacy attribute was missed"
        );
        assert_eq!(facts.dns_names, ["x.db.internal"]);
    }

    #[test]
    fn a_malformed_key_is_described_not_trusted() {
        let ed = ed25519();
        let bad = spki(&p256_alg(), ed.public_key_raw());
        let (_, parsed) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&bad).unwrap();
        assert!(
            matches!(key_algorithm(&parsed), KeyAlgorithm::Other(s) if s.starts_with("malformed public key"))
        );
    }
}
