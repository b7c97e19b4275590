//! The CSR's SubjectPublicKeyInfo, read in strict DER and checked against
//! what its algorithm identifier claims, and the CSR's signature algorithm
//! checked against the key:
//!
//! - id-ecPublicKey on P-256/P-384: the key is an uncompressed point of the
//!   curve's length that lies on the curve ([`super::curve`]); other curves
//!   are left to policy (never allowed).
//! - rsaEncryption: parameters NULL; the key is exactly a PKCS#1
//!   RSAPublicKey whose modulus is positive, odd, minimally encoded and at
//!   most [`MAX_RSA_BITS`] (its exact bit length is what policy sees) and
//!   whose exponent is odd, ≥ 3 and < 2^32.
//! - Ed25519: parameters absent, exactly 32 key bytes.
//! - The key bits have no unused bits.
//! - The signature algorithm belongs to the key's family (EC → ECDSA,
//!   RSA → PKCS#1 v1.5 or PSS, Ed25519 → Ed25519) with the parameters its
//!   RFC prescribes, so the self-signature is verified under the algorithm
//!   the SPKI names: a "P-256" SPKI carrying Ed25519 or RSA key bytes and
//!   signed with that other algorithm is refused here.

use super::curve::{self, Curve, PointError};
use super::der::{self, DerError, Reader};
use policies::KeyAlgorithm;

/// Larger RSA moduli are not keys anyone uses, and ring verifies at most
/// 8192 bits anyway.
pub const MAX_RSA_BITS: usize = 16384;

/// Public exponents must be below 2^32 (65537 is the norm; ring itself
/// refuses exponents of more than 33 bits).
pub const RSA_EXPONENT_BOUND: u64 = 1 << 32;

/// DER contents of the object identifiers this module knows.
pub mod oid {
    /// 1.2.840.10045.2.1
    pub const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    /// 1.2.840.10045.3.1.7 (prime256v1)
    pub const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    /// 1.3.132.0.34 (secp384r1)
    pub const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
    /// 1.2.840.113549.1.1.1
    pub const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    /// 1.3.101.112
    pub const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
    /// 1.2.840.10045.4 (ecdsa-with-*), a prefix
    pub const ECDSA_SIGNATURES: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    /// 1.2.840.113549.1.1 (PKCS#1), a prefix
    pub const PKCS1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    /// 1.3.14.3.2.29 (OIW sha1WithRSASignature)
    pub const OIW_SHA1_WITH_RSA: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1d];
}

/// The kind of key, which decides the signature algorithms it can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    Ec,
    Rsa,
    Ed25519,
    /// An algorithm we do not issue for; policy refuses it.
    Other,
}

impl KeyFamily {
    pub fn name(self) -> &'static str {
        match self {
            KeyFamily::Ec => "EC",
            KeyFamily::Rsa => "RSA",
            KeyFamily::Ed25519 => "Ed25519",
            KeyFamily::Other => "unknown",
        }
    }
}

/// A public key that passed [`check_spki`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedKey {
    /// What policy decides on.
    pub algorithm: KeyAlgorithm,
    pub family: KeyFamily,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpkiError {
    #[error("SubjectPublicKeyInfo is not DER: {0}")]
    Der(#[from] DerError),
    #[error("the public key BIT STRING is empty")]
    EmptyBitString,
    #[error("the public key BIT STRING has {0} unused bits")]
    UnusedBits(u8),
    #[error("id-ecPublicKey parameters are neither a named curve nor absent")]
    EcParameters,
    #[error("the SPKI says EC {curve} but its key is {error}")]
    EcPoint {
        curve: &'static str,
        error: PointError,
    },
    #[error("rsaEncryption parameters must be NULL")]
    RsaParameters,
    #[error("the SPKI says rsaEncryption but its key is not a PKCS#1 RSAPublicKey ({0})")]
    RsaStructure(DerError),
    #[error("RSA modulus {0}")]
    RsaModulus(&'static str),
    #[error("RSA public exponent {0}")]
    RsaExponent(&'static str),
    #[error("Ed25519 key parameters must be absent")]
    Ed25519Parameters,
    #[error("the SPKI says Ed25519 but its key is {0} bytes, not 32")]
    Ed25519Length(usize),
}

/// Check a DER SubjectPublicKeyInfo; returns what policy decides on.
pub fn check_spki(spki_der: &[u8]) -> Result<CheckedKey, SpkiError> {
    let spki = der::single(spki_der, der::SEQUENCE)?;
    let mut fields = Reader::new(spki.content);
    let algorithm = fields.expect(der::SEQUENCE)?;
    let bits = fields.expect(der::BIT_STRING)?;
    fields.finish()?;
    let mut alg = Reader::new(algorithm.content);
    let alg_oid = der::expect_oid(&mut alg)?;
    let params = if alg.is_empty() {
        None
    } else {
        Some(alg.any()?)
    };
    alg.finish()?;
    let (&unused, key) = bits
        .content
        .split_first()
        .ok_or(SpkiError::EmptyBitString)?;
    if unused != 0 {
        return Err(SpkiError::UnusedBits(unused));
    }
    match alg_oid.content {
        oid::EC_PUBLIC_KEY => Ok(CheckedKey {
            algorithm: check_ec(params, key)?,
            family: KeyFamily::Ec,
        }),
        oid::RSA_ENCRYPTION => Ok(CheckedKey {
            algorithm: check_rsa(params, key)?,
            family: KeyFamily::Rsa,
        }),
        oid::ED25519 => {
            if params.is_some() {
                return Err(SpkiError::Ed25519Parameters);
            }
            if key.len() != 32 {
                return Err(SpkiError::Ed25519Length(key.len()));
            }
            Ok(CheckedKey {
                algorithm: KeyAlgorithm::Ed25519,
                family: KeyFamily::Ed25519,
            })
        }
        other => Ok(CheckedKey {
            algorithm: KeyAlgorithm::Other(format!("public key algorithm {}", describe_oid(other))),
            family: KeyFamily::Other,
        }),
    }
}

fn check_ec(params: Option<der::Tlv<'_>>, key: &[u8]) -> Result<KeyAlgorithm, SpkiError> {
    let curve_oid = match params {
        Some(p) if p.tag == der::OID => {
            der::oid(p.content)?;
            p.content
        }
        // implicitCurve (NULL) and specifiedCurve (SEQUENCE) are forbidden
        // in PKIX (RFC 5480); policy refuses them as unknown keys.
        Some(p) if p.tag == der::NULL || p.tag == der::SEQUENCE => {
            return Ok(KeyAlgorithm::Other("EC key without a named curve".into()))
        }
        None => return Ok(KeyAlgorithm::Other("EC key without a named curve".into())),
        Some(_) => return Err(SpkiError::EcParameters),
    };
    let (curve, algorithm) = match curve_oid {
        oid::P256 => (Curve::P256, KeyAlgorithm::EcP256),
        oid::P384 => (Curve::P384, KeyAlgorithm::EcP384),
        other => {
            return Ok(KeyAlgorithm::Other(format!(
                "EC curve {}",
                describe_oid(other)
            )))
        }
    };
    curve::validate_point(curve, key).map_err(|error| SpkiError::EcPoint {
        curve: curve.name(),
        error,
    })?;
    Ok(algorithm)
}

fn check_rsa(params: Option<der::Tlv<'_>>, key: &[u8]) -> Result<KeyAlgorithm, SpkiError> {
    // rcgen re-encodes the SPKI with NULL parameters; anything else would
    // not be the key the requester signed with.
    if !matches!(params, Some(p) if p.tag == der::NULL && p.content.is_empty()) {
        return Err(SpkiError::RsaParameters);
    }
    let structure = |e| SpkiError::RsaStructure(e);
    let sequence = der::single(key, der::SEQUENCE).map_err(structure)?;
    let mut fields = Reader::new(sequence.content);
    let modulus = fields.expect(der::INTEGER).map_err(structure)?;
    let exponent = fields.expect(der::INTEGER).map_err(structure)?;
    fields.finish().map_err(structure)?;

    let (negative, n) = der::integer(modulus.content).map_err(structure)?;
    if negative {
        return Err(SpkiError::RsaModulus("is negative"));
    }
    let top = n.first().copied().unwrap_or(0);
    if top == 0 {
        return Err(SpkiError::RsaModulus("is zero"));
    }
    let bits = (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize);
    if bits > MAX_RSA_BITS {
        return Err(SpkiError::RsaModulus("has more than 16384 bits"));
    }
    if n.last().is_some_and(|&b| b & 1 == 0) {
        return Err(SpkiError::RsaModulus("is even"));
    }

    let (negative, e) = der::integer(exponent.content).map_err(structure)?;
    if negative {
        return Err(SpkiError::RsaExponent("is negative"));
    }
    if e.len() > 8 {
        return Err(SpkiError::RsaExponent("is 2^32 or larger"));
    }
    let e = e.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    if e >= RSA_EXPONENT_BOUND {
        return Err(SpkiError::RsaExponent("is 2^32 or larger"));
    }
    if e < 3 {
        return Err(SpkiError::RsaExponent("is below 3"));
    }
    if e & 1 == 0 {
        return Err(SpkiError::RsaExponent("is even"));
    }
    if bits <= 32 {
        let n = n.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        if e >= n {
            return Err(SpkiError::RsaExponent("is not below the modulus"));
        }
    }
    Ok(KeyAlgorithm::Rsa {
        bits: u32::try_from(bits).unwrap_or(u32::MAX),
    })
}

/// What a signature AlgorithmIdentifier's parameters are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureParams {
    Absent,
    Null,
    /// Anything else (RSASSA-PSS parameters are a SEQUENCE).
    Other,
}

/// The family a signature algorithm belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureFamily {
    Ecdsa,
    RsaPkcs1,
    RsaPss,
    Ed25519,
    Unknown,
}

impl SignatureFamily {
    pub fn of(oid_der: &[u8]) -> SignatureFamily {
        if let Some(rest) = oid_der.strip_prefix(oid::ECDSA_SIGNATURES) {
            if !rest.is_empty() {
                return SignatureFamily::Ecdsa;
            }
        }
        if let Some(rest) = oid_der.strip_prefix(oid::PKCS1) {
            return match rest {
                // md2, md4, md5, sha1, sha256, sha384, sha512, sha224,
                // sha512-224, sha512-256 WithRSAEncryption
                [2..=5] | [11..=16] => SignatureFamily::RsaPkcs1,
                [10] => SignatureFamily::RsaPss,
                _ => SignatureFamily::Unknown,
            };
        }
        match oid_der {
            oid::OIW_SHA1_WITH_RSA => SignatureFamily::RsaPkcs1,
            oid::ED25519 => SignatureFamily::Ed25519,
            _ => SignatureFamily::Unknown,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureMismatch {
    #[error("the CSR is signed with {signature}, which an {key} key cannot make")]
    Family {
        key: &'static str,
        signature: String,
    },
    #[error("signature algorithm {signature} must have {expected} parameters")]
    Parameters {
        signature: String,
        expected: &'static str,
    },
    #[error("the signature BIT STRING has {0} unused bits")]
    UnusedBits(u8),
}

/// The CSR's signature algorithm must be one its key's family makes, with
/// the parameters its RFC prescribes (RFC 5758 / 8410: absent for ECDSA and
/// Ed25519; RFC 4055: NULL for PKCS#1 v1.5, tolerated absent; PSS needs
/// its parameters). Keys of unknown type are left to policy.
pub fn check_signature_algorithm(
    key: KeyFamily,
    signature_oid: &[u8],
    params: SignatureParams,
    signature_unused_bits: u8,
) -> Result<(), SignatureMismatch> {
    if signature_unused_bits != 0 {
        return Err(SignatureMismatch::UnusedBits(signature_unused_bits));
    }
    if key == KeyFamily::Other {
        return Ok(());
    }
    let family = SignatureFamily::of(signature_oid);
    let agrees = matches!(
        (key, family),
        (KeyFamily::Ec, SignatureFamily::Ecdsa)
            | (
                KeyFamily::Rsa,
                SignatureFamily::RsaPkcs1 | SignatureFamily::RsaPss
            )
            | (KeyFamily::Ed25519, SignatureFamily::Ed25519)
    );
    if !agrees {
        return Err(SignatureMismatch::Family {
            key: key.name(),
            signature: describe_oid(signature_oid),
        });
    }
    let (ok, expected) = match family {
        SignatureFamily::Ecdsa | SignatureFamily::Ed25519 => {
            (params == SignatureParams::Absent, "absent")
        }
        SignatureFamily::RsaPkcs1 => (params != SignatureParams::Other, "NULL"),
        SignatureFamily::RsaPss => (params == SignatureParams::Other, "RSASSA-PSS"),
        SignatureFamily::Unknown => (true, ""),
    };
    if !ok {
        return Err(SignatureMismatch::Parameters {
            signature: describe_oid(signature_oid),
            expected,
        });
    }
    Ok(())
}

/// Dotted form of an OID's DER contents for messages (long ones shortened).
pub fn describe_oid(oid_der: &[u8]) -> String {
    if oid_der.len() > 32 {
        return format!("an OID of {} bytes", oid_der.len());
    }
    x509_parser::der_parser::oid::Oid::new(std::borrow::Cow::Borrowed(oid_der)).to_id_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DER TLV with a short or long length.
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else if len < 0x100 {
            out.extend([0x81, len as u8]);
        } else {
            out.extend([0x82, (len >> 8) as u8, len as u8]);
        }
        out.extend_from_slice(content);
        out
    }

    fn spki(alg_oid: &[u8], params: Option<&[u8]>, key: &[u8]) -> Vec<u8> {
        let mut alg = tlv(der::OID, alg_oid);
        if let Some(p) = params {
            alg.extend_from_slice(p);
        }
        let bits = [&[0u8][..], key].concat();
        tlv(
            der::SEQUENCE,
            &[tlv(der::SEQUENCE, &alg), tlv(der::BIT_STRING, &bits)].concat(),
        )
    }

    fn ec_spki(curve: &[u8], key: &[u8]) -> Vec<u8> {
        spki(oid::EC_PUBLIC_KEY, Some(&tlv(der::OID, curve)), key)
    }

    fn rsa_key(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
        tlv(
            der::SEQUENCE,
            &[tlv(der::INTEGER, modulus), tlv(der::INTEGER, exponent)].concat(),
        )
    }

    fn rsa_spki(key: &[u8]) -> Vec<u8> {
        spki(oid::RSA_ENCRYPTION, Some(&[0x05, 0x00]), key)
    }

    /// A plausible 2048-bit odd modulus (not a real key; only its form matters).
    fn modulus_2048() -> Vec<u8> {
        let mut n = vec![0x00, 0xc3];
        n.extend(std::iter::repeat_n(0x5a, 254));
        n.push(0x01);
        n
    }

    #[test]
    fn keys_made_by_rcgen_pass_with_their_algorithms() {
        for (alg, expected) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, KeyAlgorithm::EcP256),
            (&rcgen::PKCS_ECDSA_P384_SHA384, KeyAlgorithm::EcP384),
            (&rcgen::PKCS_ED25519, KeyAlgorithm::Ed25519),
        ] {
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            let checked = check_spki(&rcgen::PublicKeyData::subject_public_key_info(&key)).unwrap();
            assert_eq!(checked.algorithm, expected);
        }
    }

    #[test]
    fn rsa_keys_report_their_exact_size() {
        let checked = check_spki(&rsa_spki(&rsa_key(&modulus_2048(), &[1, 0, 1]))).unwrap();
        assert_eq!(
            checked,
            CheckedKey {
                algorithm: KeyAlgorithm::Rsa { bits: 2048 },
                family: KeyFamily::Rsa
            }
        );
        // a 2047-bit modulus is 2047 bits, not "2040" or "2048"
        let mut n = modulus_2048();
        n.remove(0);
        n[0] = 0x43;
        let checked = check_spki(&rsa_spki(&rsa_key(&n, &[3]))).unwrap();
        assert_eq!(checked.algorithm, KeyAlgorithm::Rsa { bits: 2047 });
    }

    #[test]
    fn rsa_keys_that_are_not_sane_are_refused() {
        let n = modulus_2048();
        let cases: Vec<(Vec<u8>, SpkiError)> = vec![
            (rsa_key(&n, &[1]), SpkiError::RsaExponent("is below 3")),
            (rsa_key(&n, &[0]), SpkiError::RsaExponent("is below 3")),
            (rsa_key(&n, &[1, 0, 0]), SpkiError::RsaExponent("is even")),
            (
                rsa_key(&n, &[0xff, 0x01]),
                SpkiError::RsaExponent("is negative"),
            ),
            (
                rsa_key(&n, &[0x01, 0, 0, 0, 1]),
                SpkiError::RsaExponent("is 2^32 or larger"),
            ),
            (
                rsa_key(&n, &[0x01; 9]),
                SpkiError::RsaExponent("is 2^32 or larger"),
            ),
            (
                rsa_key(&n[1..], &[1, 0, 1]),
                SpkiError::RsaModulus("is negative"),
            ),
            (rsa_key(&[0], &[1, 0, 1]), SpkiError::RsaModulus("is zero")),
            (
                rsa_key(&[&n[..n.len() - 1], &[0x02]].concat(), &[1, 0, 1]),
                SpkiError::RsaModulus("is even"),
            ),
            (
                rsa_key(&[0x00, 0x00, 0xc3, 0x01], &[1, 0, 1]),
                SpkiError::RsaStructure(DerError::NonMinimalInteger),
            ),
            (
                [rsa_key(&n, &[1, 0, 1]), vec![0]].concat(),
                SpkiError::RsaStructure(DerError::Trailing),
            ),
            (
                tlv(
                    der::SEQUENCE,
                    &[
                        tlv(der::INTEGER, &n),
                        tlv(der::INTEGER, &[1, 0, 1]),
                        vec![0x05, 0],
                    ]
                    .concat(),
                ),
                SpkiError::RsaStructure(DerError::Trailing),
            ),
        ];
        for (key, expected) in cases {
            assert_eq!(check_spki(&rsa_spki(&key)), Err(expected), "{key:02x?}");
        }
        // tiny moduli are policy's call (key_too_small), unless e ≥ n
        assert_eq!(
            check_spki(&rsa_spki(&rsa_key(&[0x7f, 0xff, 0xff, 0xff], &[3]))).map(|k| k.algorithm),
            Ok(KeyAlgorithm::Rsa { bits: 31 })
        );
        assert_eq!(
            check_spki(&rsa_spki(&rsa_key(&[0x05], &[0x07]))),
            Err(SpkiError::RsaExponent("is not below the modulus"))
        );
        // P-256 point bytes under rsaEncryption
        let point = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        assert!(matches!(
            check_spki(&rsa_spki(point.public_key_raw())),
            Err(SpkiError::RsaStructure(_))
        ));
        let mut huge = vec![0x00, 0xff];
        huge.extend(std::iter::repeat_n(0xff, 2048));
        assert_eq!(
            check_spki(&rsa_spki(&rsa_key(&huge, &[3]))),
            Err(SpkiError::RsaModulus("has more than 16384 bits"))
        );
        let key = rsa_key(&n, &[1, 0, 1]);
        for params in [None, Some(&[0x05, 0x01, 0x00][..]), Some(&[0x30, 0x00][..])] {
            assert_eq!(
                check_spki(&spki(oid::RSA_ENCRYPTION, params, &key)),
                Err(SpkiError::RsaParameters),
                "{params:02x?}"
            );
        }
    }

    #[test]
    fn a_p256_spki_must_carry_a_p256_point() {
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        // 32 bytes: refused for their first byte or their length
        assert!(matches!(
            check_spki(&ec_spki(oid::P256, ed.public_key_raw())),
            Err(SpkiError::EcPoint { curve: "P-256", .. })
        ));
        let rsa = rsa_key(&modulus_2048(), &[1, 0, 1]);
        assert!(matches!(
            check_spki(&ec_spki(oid::P256, &rsa)),
            Err(SpkiError::EcPoint {
                error: PointError::Encoding(0x30),
                ..
            })
        ));
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert!(matches!(
            check_spki(&ec_spki(oid::P256, p384.public_key_raw())),
            Err(SpkiError::EcPoint {
                error: PointError::Length { got: 97, want: 65 },
                ..
            })
        ));
        let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut off = p256.public_key_raw().to_vec();
        off[64] ^= 1;
        assert_eq!(
            check_spki(&ec_spki(oid::P256, &off)),
            Err(SpkiError::EcPoint {
                curve: "P-256",
                error: PointError::NotOnCurve
            })
        );
        // the P-256 point labelled P-384
        assert!(check_spki(&ec_spki(oid::P384, p256.public_key_raw())).is_err());
    }

    #[test]
    fn other_curves_and_algorithms_are_left_to_policy() {
        let p192 = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x01];
        assert_eq!(
            check_spki(&ec_spki(&p192, &[4; 49])).unwrap().algorithm,
            KeyAlgorithm::Other("EC curve 1.2.840.10045.3.1.1".into())
        );
        assert_eq!(
            check_spki(&spki(oid::EC_PUBLIC_KEY, None, &[4; 65]))
                .unwrap()
                .algorithm,
            KeyAlgorithm::Other("EC key without a named curve".into())
        );
        assert_eq!(
            check_spki(&spki(oid::EC_PUBLIC_KEY, Some(&[0x04, 0x00]), &[4; 65])),
            Err(SpkiError::EcParameters)
        );
        let ed448 = [0x2b, 0x65, 0x71];
        assert_eq!(
            check_spki(&spki(&ed448, None, &[0; 57])).unwrap(),
            CheckedKey {
                algorithm: KeyAlgorithm::Other("public key algorithm 1.3.101.113".into()),
                family: KeyFamily::Other
            }
        );
    }

    #[test]
    fn ed25519_keys_are_32_bytes_without_parameters() {
        assert_eq!(
            check_spki(&spki(oid::ED25519, None, &[7; 33])),
            Err(SpkiError::Ed25519Length(33))
        );
        assert_eq!(
            check_spki(&spki(oid::ED25519, None, &[7; 31])),
            Err(SpkiError::Ed25519Length(31))
        );
        assert_eq!(
            check_spki(&spki(oid::ED25519, Some(&[0x05, 0x00]), &[7; 32])),
            Err(SpkiError::Ed25519Parameters)
        );
    }

    #[test]
    fn spki_structure_is_strict() {
        let good = ec_spki(
            oid::P256,
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .unwrap()
                .public_key_raw(),
        );
        assert!(check_spki(&good).is_ok());
        assert_eq!(
            check_spki(&[good.clone(), vec![0]].concat()),
            Err(SpkiError::Der(DerError::Trailing))
        );
        let mut unused = good.clone();
        let at = unused.len() - 66; // the BIT STRING's unused-bits byte
        assert_eq!(unused[at], 0);
        unused[at] = 1;
        assert_eq!(check_spki(&unused), Err(SpkiError::UnusedBits(1)));
        assert_eq!(
            check_spki(&tlv(
                der::SEQUENCE,
                &[
                    tlv(der::SEQUENCE, &tlv(der::OID, oid::ED25519)),
                    tlv(der::BIT_STRING, &[])
                ]
                .concat()
            )),
            Err(SpkiError::EmptyBitString)
        );
        for cut in 0..good.len() {
            assert!(check_spki(&good[..cut]).is_err(), "cut at {cut}");
        }
    }

    /// SPKIs made by openssl (an independent encoder): the fuzz seeds.
    #[test]
    fn spkis_made_by_openssl() {
        macro_rules! seed {
            ($name:literal) => {
                include_bytes!(concat!("../../../../fuzz/corpus/spki_check/", $name))
            };
        }
        let ok = |der: &[u8]| check_spki(der).map(|k| k.algorithm);
        assert_eq!(ok(seed!("ec-p256.der")), Ok(KeyAlgorithm::EcP256));
        assert_eq!(ok(seed!("ec-p384.der")), Ok(KeyAlgorithm::EcP384));
        assert_eq!(ok(seed!("ed25519.der")), Ok(KeyAlgorithm::Ed25519));
        assert_eq!(
            ok(seed!("rsa-2048.der")),
            Ok(KeyAlgorithm::Rsa { bits: 2048 })
        );
        assert_eq!(
            ok(seed!("rsa-3072-e3.der")),
            Ok(KeyAlgorithm::Rsa { bits: 3072 })
        );
        assert_eq!(
            ok(seed!("ec-p192.der")),
            Ok(KeyAlgorithm::Other("EC curve 1.2.840.10045.3.1.1".into()))
        );
        assert_eq!(
            ok(seed!("rsa-pss-key.der")),
            Ok(KeyAlgorithm::Other(
                "public key algorithm 1.2.840.113549.1.1.10".into()
            ))
        );
        assert_eq!(
            check_spki(seed!("ec-p256-compressed.der")),
            Err(SpkiError::EcPoint {
                curve: "P-256",
                error: PointError::Compressed
            })
        );
        assert!(matches!(
            check_spki(seed!("p256-with-ed25519-bytes.der")),
            Err(SpkiError::EcPoint { curve: "P-256", .. })
        ));
        assert_eq!(
            check_spki(seed!("p256-with-rsa-bytes.der")),
            Err(SpkiError::EcPoint {
                curve: "P-256",
                error: PointError::Encoding(0x30)
            })
        );
    }

    const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    const SHA256_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
    const SHA1_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
    const RSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];

    #[test]
    fn the_signature_algorithm_must_belong_to_the_key() {
        use SignatureParams::{Absent, Null, Other};
        let ok = |key, sig: &[u8], params| check_signature_algorithm(key, sig, params, 0);
        assert_eq!(ok(KeyFamily::Ec, ECDSA_SHA256, Absent), Ok(()));
        assert_eq!(
            ok(KeyFamily::Ec, ECDSA_SHA1, Absent),
            Ok(()),
            "SHA-1 is policy's call"
        );
        assert_eq!(ok(KeyFamily::Rsa, SHA256_RSA, Null), Ok(()));
        assert_eq!(ok(KeyFamily::Rsa, SHA256_RSA, Absent), Ok(()));
        assert_eq!(ok(KeyFamily::Rsa, SHA1_RSA, Null), Ok(()));
        assert_eq!(ok(KeyFamily::Rsa, RSA_PSS, Other), Ok(()));
        assert_eq!(ok(KeyFamily::Ed25519, oid::ED25519, Absent), Ok(()));
        assert_eq!(ok(KeyFamily::Other, oid::ED25519, Null), Ok(()));

        for (key, sig, params) in [
            (KeyFamily::Ec, oid::ED25519, Absent),
            (KeyFamily::Ec, SHA256_RSA, Null),
            (KeyFamily::Ec, RSA_PSS, Other),
            (KeyFamily::Rsa, ECDSA_SHA256, Absent),
            (KeyFamily::Rsa, oid::ED25519, Absent),
            (KeyFamily::Ed25519, ECDSA_SHA256, Absent),
            (KeyFamily::Ed25519, SHA256_RSA, Null),
            (KeyFamily::Ec, oid::RSA_ENCRYPTION, Null),
            (KeyFamily::Ec, oid::ECDSA_SIGNATURES, Absent),
            (
                KeyFamily::Rsa,
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07],
                Absent,
            ),
        ] {
            assert!(
                matches!(ok(key, sig, params), Err(SignatureMismatch::Family { .. })),
                "{key:?} {sig:02x?}"
            );
        }
        for (key, sig, params) in [
            (KeyFamily::Ec, ECDSA_SHA256, Null),
            (KeyFamily::Ed25519, oid::ED25519, Null),
            (KeyFamily::Rsa, SHA256_RSA, Other),
            (KeyFamily::Rsa, RSA_PSS, Absent),
        ] {
            assert!(
                matches!(
                    ok(key, sig, params),
                    Err(SignatureMismatch::Parameters { .. })
                ),
                "{key:?} {sig:02x?} {params:?}"
            );
        }
        assert_eq!(
            check_signature_algorithm(KeyFamily::Ec, ECDSA_SHA256, Absent, 3),
            Err(SignatureMismatch::UnusedBits(3))
        );
        let message = ok(KeyFamily::Ec, oid::ED25519, Absent)
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "the CSR is signed with 1.3.101.112, which an EC key cannot make"
        );
    }
}
