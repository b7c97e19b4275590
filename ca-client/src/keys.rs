//! Local key generation and the CSR: the private key is made here, on the
//! host that uses it, and never leaves it.
//!
//! Algorithms are named as in the class policies: `ec-p256` (default),
//! `ec-p384`, `ed25519`, `rsa`. The only crypto provider of the workspace
//! is ring, and **ring cannot generate RSA keys**: `rsa` works only with a
//! pre-provisioned PKCS#8 RSA key (e.g. `openssl genpkey -algorithm RSA
//! -pkeyopt rsa_keygen_bits:2048`) at the key path and `rotate_key = false`;
//! asking to generate one is an error that says so.
//!
//! The CSR carries the configured SANs and, as its CN, the first DNS name
//! (or an explicit common name, or none): the server's policy decides
//! anyway, and copies nothing from the CSR but the public key and what the
//! policy allowed.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData, SanType,
    PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519,
};
use serde::Deserialize;
use thiserror::Error;

/// Minimum RSA modulus accepted for a pre-provisioned key.
pub const RSA_MIN_BITS: usize = 2048;

/// A key algorithm, spelled as in the class policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum KeyAlgorithm {
    /// ECDSA P-256 with SHA-256 (the default).
    #[default]
    #[serde(rename = "ec-p256")]
    EcP256,
    /// ECDSA P-384 with SHA-384.
    #[serde(rename = "ec-p384")]
    EcP384,
    /// Ed25519.
    #[serde(rename = "ed25519")]
    Ed25519,
    /// RSA (2048 bits or more), PKCS#1 v1.5 with SHA-256; pre-provisioned
    /// keys only (ring cannot generate RSA keys).
    #[serde(rename = "rsa")]
    Rsa,
}

impl KeyAlgorithm {
    /// The policy name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EcP256 => "ec-p256",
            KeyAlgorithm::EcP384 => "ec-p384",
            KeyAlgorithm::Ed25519 => "ed25519",
            KeyAlgorithm::Rsa => "rsa",
        }
    }

    /// Whether keys of this algorithm can be generated here.
    pub fn can_generate(self) -> bool {
        !matches!(self, KeyAlgorithm::Rsa)
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        match s {
            "ec-p256" | "p256" | "ecdsa-p256" => Ok(KeyAlgorithm::EcP256),
            "ec-p384" | "p384" | "ecdsa-p384" => Ok(KeyAlgorithm::EcP384),
            "ed25519" => Ok(KeyAlgorithm::Ed25519),
            "rsa" | "rsa-2048" => Ok(KeyAlgorithm::Rsa),
            _ => Err(KeyError::UnknownAlgorithm(s.to_owned())),
        }
    }
}

/// Why a key or CSR could not be made or used.
#[derive(Debug, Error)]
pub enum KeyError {
    /// Not one of `ec-p256`, `ec-p384`, `ed25519`, `rsa`.
    #[error("unknown key algorithm '{0}' (use ec-p256, ec-p384, ed25519 or rsa)")]
    UnknownAlgorithm(String),
    /// RSA generation was asked for.
    #[error(
        "cannot generate RSA keys: the ring crypto provider has no RSA key generation; \
         use ec-p256, ec-p384 or ed25519, or provision a PKCS#8 RSA key (>= {RSA_MIN_BITS} bits) \
         at the key path and set rotate_key = false"
    )]
    RsaGenerationUnsupported,
    /// The key file does not hold a usable PKCS#8 key.
    #[error("unusable private key: {0}")]
    BadKey(String),
    /// An RSA key below [`RSA_MIN_BITS`].
    #[error("RSA key has {0} bits, fewer than {RSA_MIN_BITS}")]
    RsaTooSmall(usize),
    /// A name cannot go into a CSR.
    #[error("invalid name '{0}': {1}")]
    BadName(String, String),
    /// rcgen failed to build or sign the CSR.
    #[error("building the CSR: {0}")]
    Csr(String),
    /// The key could not sign a message.
    #[error("signing with the key: {0}")]
    Sign(String),
}

/// The SANs to request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// DNS names.
    pub dns: Vec<String>,
    /// IP addresses.
    pub ip: Vec<IpAddr>,
    /// URIs (e.g. SPIFFE IDs).
    pub uri: Vec<String>,
}

impl Names {
    /// Whether no name is configured.
    pub fn is_empty(&self) -> bool {
        self.dns.is_empty() && self.ip.is_empty() && self.uri.is_empty()
    }

    /// The `hosts` of the sign request: DNS names, then IPs, then URIs.
    pub fn hosts(&self) -> Vec<String> {
        self.dns
            .iter()
            .cloned()
            .chain(self.ip.iter().map(|ip| ip.to_string()))
            .chain(self.uri.iter().cloned())
            .collect()
    }
}

/// A private key made or loaded here. The PEM is PKCS#8.
pub struct LocalKey {
    pair: KeyPair,
    algorithm: KeyAlgorithm,
    pem: String,
}

impl fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKey")
            .field("algorithm", &self.algorithm)
            .field("private", &format_args!("<redacted>"))
            .finish()
    }
}

impl LocalKey {
    /// A fresh key of `algorithm`.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<LocalKey, KeyError> {
        let alg = match algorithm {
            KeyAlgorithm::EcP256 => &PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::EcP384 => &PKCS_ECDSA_P384_SHA384,
            KeyAlgorithm::Ed25519 => &PKCS_ED25519,
            KeyAlgorithm::Rsa => return Err(KeyError::RsaGenerationUnsupported),
        };
        let mut pair = KeyPair::generate_for(alg).map_err(|e| KeyError::BadKey(e.to_string()))?;
        if algorithm == KeyAlgorithm::Ed25519 {
            pair = ed25519_as_pkcs8_v1(&pair)?;
        }
        Ok(LocalKey {
            pem: pair.serialize_pem(),
            pair,
            algorithm,
        })
    }

    /// A key from PKCS#8 PEM (`PRIVATE KEY`). RSA keys must have at least
    /// [`RSA_MIN_BITS`] bits.
    pub fn from_pem(pem: &str) -> Result<LocalKey, KeyError> {
        let pair = KeyPair::from_pem(pem).map_err(|e| KeyError::BadKey(e.to_string()))?;
        let algorithm = if pair.algorithm() == &PKCS_ECDSA_P256_SHA256 {
            KeyAlgorithm::EcP256
        } else if pair.algorithm() == &PKCS_ECDSA_P384_SHA384 {
            KeyAlgorithm::EcP384
        } else if pair.algorithm() == &PKCS_ED25519 {
            KeyAlgorithm::Ed25519
        } else {
            let bits = rsa_modulus_bits(pair.der_bytes())
                .ok_or_else(|| KeyError::BadKey("unsupported key type".into()))?;
            if bits < RSA_MIN_BITS {
                return Err(KeyError::RsaTooSmall(bits));
            }
            KeyAlgorithm::Rsa
        };
        Ok(LocalKey {
            pem: pair.serialize_pem(),
            pair,
            algorithm,
        })
    }

    /// The algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// PKCS#8 PEM of the private key.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The raw public key bits, as in a certificate's subjectPublicKey.
    pub fn public_key_bits(&self) -> &[u8] {
        self.pair.der_bytes()
    }

    /// A signature over `message` with this key, as the revocation holder
    /// proof wants it ([`ca_proto::revocation::HolderProof`]): ECDSA in DER
    /// with SHA-256 (P-256) or SHA-384 (P-384), Ed25519, or RSA PKCS#1 v1.5
    /// with SHA-256.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        use rcgen::SigningKey;
        self.pair
            .sign(message)
            .map_err(|e| KeyError::Sign(e.to_string()))
    }

    /// Whether a certificate (DER) carries this key's public key.
    pub fn matches_cert(&self, cert_der: &[u8]) -> bool {
        crate::pem::facts(cert_der).is_ok_and(|f| f.public_key == self.public_key_bits())
    }

    /// A PEM CSR for `names`, signed with this key. The CN is
    /// `common_name` if given (empty = no CN), else the first DNS name.
    pub fn csr_pem(&self, names: &Names, common_name: Option<&str>) -> Result<String, KeyError> {
        let mut params = CertificateParams::default();
        let mut sans = Vec::new();
        for dns in &names.dns {
            let ia5 = dns
                .as_str()
                .try_into()
                .map_err(|e: rcgen::Error| KeyError::BadName(dns.clone(), e.to_string()))?;
            sans.push(SanType::DnsName(ia5));
        }
        for ip in &names.ip {
            sans.push(SanType::IpAddress(*ip));
        }
        for uri in &names.uri {
            let ia5 = uri
                .as_str()
                .try_into()
                .map_err(|e: rcgen::Error| KeyError::BadName(uri.clone(), e.to_string()))?;
            sans.push(SanType::URI(ia5));
        }
        params.subject_alt_names = sans;
        let mut dn = DistinguishedName::new();
        let cn = match common_name {
            Some(cn) => (!cn.is_empty()).then(|| cn.to_owned()),
            None => names.dns.first().cloned(),
        };
        if let Some(cn) = cn {
            dn.push(DnType::CommonName, cn);
        }
        params.distinguished_name = dn;
        let csr = params
            .serialize_request(&self.pair)
            .map_err(|e| KeyError::Csr(e.to_string()))?;
        csr.pem().map_err(|e| KeyError::Csr(e.to_string()))
    }
}

/// DER prefix of ring's Ed25519 PKCS#8 v2 document (RFC 5958, with the
/// public key), up to the 32-byte seed.
const ED25519_V2_PREFIX: [u8; 16] = [
    0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// DER prefix of an RFC 8410 PKCS#8 v1 Ed25519 key, up to the seed.
const ED25519_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// ring writes Ed25519 keys as PKCS#8 v2, which OpenSSL 3 refuses
/// ("unsupported"); services using OpenSSL must be able to read key.pem,
/// so the key is rewritten in the RFC 8410 v1 form (the same seed).
fn ed25519_as_pkcs8_v1(pair: &KeyPair) -> Result<KeyPair, KeyError> {
    let der = pair.serialized_der();
    let seed = der
        .strip_prefix(&ED25519_V2_PREFIX[..])
        .and_then(|rest| rest.get(..32))
        .ok_or_else(|| KeyError::BadKey("unexpected Ed25519 PKCS#8 layout".into()))?;
    let mut v1 = ED25519_V1_PREFIX.to_vec();
    v1.extend_from_slice(seed);
    KeyPair::try_from(v1).map_err(|e| KeyError::BadKey(e.to_string()))
}

/// Bit length of the modulus of a PKCS#1 `RSAPublicKey` DER, by a minimal
/// DER walk (SEQUENCE { INTEGER n, INTEGER e }).
fn rsa_modulus_bits(der: &[u8]) -> Option<usize> {
    fn read_len(b: &[u8]) -> Option<(usize, &[u8])> {
        let (&first, rest) = b.split_first()?;
        if first < 0x80 {
            return Some((usize::from(first), rest));
        }
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
        Some((len, &rest[n..]))
    }
    let rest = der.strip_prefix(&[0x30])?;
    let (_, rest) = read_len(rest)?;
    let rest = rest.strip_prefix(&[0x02])?;
    let (len, rest) = read_len(rest)?;
    let modulus = rest.get(..len)?;
    let significant: Vec<u8> = modulus.iter().copied().skip_while(|&b| b == 0).collect();
    let first = *significant.first()?;
    Some((significant.len() - 1) * 8 + (8 - first.leading_zeros() as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pem::testca::TestCa;
    use rustls_pki_types::pem::PemObject;
    use x509_parser::prelude::{FromDer, X509CertificationRequest};

    fn names() -> Names {
        Names {
            dns: vec!["a.db.internal".into(), "db.internal".into()],
            ip: vec!["10.0.0.7".parse().expect("ip")],
            uri: vec!["spiffe://trellis.internal/db/a".into()],
        }
    }

    #[test]
    fn generates_each_supported_algorithm_and_csr_verifies() {
        for alg in [
            KeyAlgorithm::EcP256,
            KeyAlgorithm::EcP384,
            KeyAlgorithm::Ed25519,
        ] {
            let key = LocalKey::generate(alg).expect("generate");
            assert_eq!(key.algorithm(), alg);
            assert!(key.pem().starts_with("-----BEGIN PRIVATE KEY-----"));
            if alg == KeyAlgorithm::Ed25519 {
                let der = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.pem().as_bytes())
                    .expect("pem");
                assert!(
                    der.secret_der().starts_with(&ED25519_V1_PREFIX),
                    "Ed25519 keys are PKCS#8 v1 (OpenSSL reads them)"
                );
            }
            let again = LocalKey::from_pem(key.pem()).expect("reload");
            assert_eq!(again.algorithm(), alg);
            assert_eq!(again.public_key_bits(), key.public_key_bits());

            let csr_pem = key.csr_pem(&names(), None).expect("csr");
            let der =
                rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
                    .expect("pem");
            let (_, csr) = X509CertificationRequest::from_der(der.as_ref()).expect("der");
            csr.verify_signature().expect("self-signature");
            assert_eq!(
                csr.certification_request_info.subject.to_string(),
                "CN=a.db.internal"
            );
            assert_eq!(
                csr.certification_request_info
                    .subject_pki
                    .subject_public_key
                    .data
                    .as_ref(),
                key.public_key_bits()
            );
            let sans: Vec<String> = csr
                .requested_extensions()
                .into_iter()
                .flatten()
                .filter_map(|e| match e {
                    x509_parser::extensions::ParsedExtension::SubjectAlternativeName(s) => Some(
                        s.general_names
                            .iter()
                            .map(|g| g.to_string())
                            .collect::<Vec<_>>(),
                    ),
                    _ => None,
                })
                .flatten()
                .collect();
            assert_eq!(sans.len(), 4, "{sans:?}");
        }
    }

    #[test]
    fn common_name_choices() {
        let key = LocalKey::generate(KeyAlgorithm::EcP256).expect("key");
        let subject = |cn: Option<&str>| {
            let pem = key.csr_pem(&names(), cn).expect("csr");
            let der =
                rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
                    .expect("pem");
            let (_, csr) = X509CertificationRequest::from_der(der.as_ref()).expect("der");
            csr.certification_request_info.subject.to_string()
        };
        assert_eq!(subject(Some("")), "");
        assert_eq!(subject(Some("db.internal")), "CN=db.internal");
    }

    #[test]
    fn rsa_generation_is_a_clear_error() {
        let err = LocalKey::generate(KeyAlgorithm::Rsa).unwrap_err();
        assert!(matches!(err, KeyError::RsaGenerationUnsupported));
        assert!(err.to_string().contains("ring"), "{err}");
        assert!(!KeyAlgorithm::Rsa.can_generate());
    }

    #[test]
    fn algorithm_names() {
        for alg in [
            KeyAlgorithm::EcP256,
            KeyAlgorithm::EcP384,
            KeyAlgorithm::Ed25519,
            KeyAlgorithm::Rsa,
        ] {
            assert_eq!(alg.as_str().parse::<KeyAlgorithm>().expect("parse"), alg);
        }
        assert!("dsa".parse::<KeyAlgorithm>().is_err());
        assert_eq!(KeyAlgorithm::default(), KeyAlgorithm::EcP256);
    }

    #[test]
    fn key_cert_match_detection() {
        let ca = TestCa::new("m");
        let key = LocalKey::generate(KeyAlgorithm::EcP256).expect("key");
        let other = LocalKey::generate(KeyAlgorithm::EcP256).expect("key");
        let leaf = ca.leaf(&key.pair, &["a.db.internal"], 1_700_000_000, 1_800_000_000);
        assert!(key.matches_cert(&leaf));
        assert!(!other.matches_cert(&leaf));
        assert!(!key.matches_cert(b"garbage"));
        let ed = LocalKey::generate(KeyAlgorithm::Ed25519).expect("ed");
        let ed_leaf = ca.leaf(&ed.pair, &["a.db.internal"], 1_700_000_000, 1_800_000_000);
        assert!(ed.matches_cert(&ed_leaf));
        assert!(!key.matches_cert(&ed_leaf));
    }

    #[test]
    fn signatures_verify_with_the_public_key() {
        use ring::signature::{
            UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1, ED25519,
        };
        let message = b"TRELLIS-REVOKE-V1\ndb\n0a\nsuperseded\n7";
        let algorithms: [(
            KeyAlgorithm,
            &'static dyn ring::signature::VerificationAlgorithm,
        ); 3] = [
            (KeyAlgorithm::EcP256, &ECDSA_P256_SHA256_ASN1),
            (KeyAlgorithm::EcP384, &ECDSA_P384_SHA384_ASN1),
            (KeyAlgorithm::Ed25519, &ED25519),
        ];
        for (alg, verifier) in algorithms {
            let key = LocalKey::generate(alg).expect("key");
            let sig = key.sign(message).expect("sign");
            let public = UnparsedPublicKey::new(verifier, key.public_key_bits());
            public.verify(message, &sig).expect("verifies");
            assert!(public.verify(b"other", &sig).is_err(), "{alg}");
            // Reloaded from PEM (as the revoke command does), same key.
            let again = LocalKey::from_pem(key.pem()).expect("pem");
            public
                .verify(message, &again.sign(message).expect("sign"))
                .expect("reloaded key verifies");
        }
    }

    #[test]
    fn bad_key_pem() {
        assert!(matches!(
            LocalKey::from_pem("not a key"),
            Err(KeyError::BadKey(_))
        ));
        assert!(
            format!("{:?}", LocalKey::generate(KeyAlgorithm::EcP256).expect("k"))
                .contains("redacted")
        );
    }

    #[test]
    fn rsa_modulus_bits_parses_der() {
        // SEQUENCE { INTEGER 0x00 0x80 (one significant byte, top bit set), INTEGER 3 }
        let der = [0x30, 0x07, 0x02, 0x02, 0x00, 0x80, 0x02, 0x01, 0x03];
        assert_eq!(rsa_modulus_bits(&der), Some(8));
        let mut long = vec![0x30, 0x82, 0x01, 0x0a, 0x02, 0x82, 0x01, 0x01, 0x00];
        long.extend(std::iter::repeat_n(0xff, 256));
        long.extend([0x02, 0x03, 0x01, 0x00, 0x01]);
        assert_eq!(rsa_modulus_bits(&long), Some(2048));
        assert_eq!(rsa_modulus_bits(&[0x30]), None);
    }
}
