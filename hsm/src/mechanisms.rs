//! What a token can do, read from its mechanism list, and the choice per
//! key algorithm of how to generate and how to sign.
//!
//! Tokens differ: SoftHSM2 offers `CKM_ECDSA` (sign a digest computed here)
//! and `CKM_SHA256_RSA_PKCS`; some tokens only hash-and-sign
//! (`CKM_ECDSA_SHA256`); opencryptoki's software token has neither EC nor
//! `CKM_SHA256_RSA_PKCS`, only `CKM_RSA_PKCS`, over which Trellis builds the
//! PKCS#1 v1.5 `DigestInfo` itself. The choice is made once per key and the
//! signature on the wire is the same whichever mechanism made it.

use crate::error::{HsmError, HsmResult};
use crate::keys::KeyAlgorithm;
use crate::raw::RawFunctions;
use cryptoki::context::Pkcs11;
use cryptoki::mechanism::{MechanismInfo, MechanismType};
use cryptoki::slot::Slot;
use cryptoki_sys::CK_MECHANISM_TYPE;
use std::fmt;

/// How a key signs. Every variant yields the signature X.509 carries for
/// the key's algorithm (ECDSA with the curve's hash, or RSA PKCS#1 v1.5
/// with SHA-256).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignMechanism {
    /// `CKM_ECDSA` over a digest computed by Trellis.
    Ecdsa,
    /// `CKM_ECDSA_SHA256` (P-256) or `CKM_ECDSA_SHA384` (P-384): the token
    /// hashes.
    EcdsaWithHash,
    /// `CKM_SHA256_RSA_PKCS`: the token hashes and pads.
    Sha256RsaPkcs,
    /// `CKM_RSA_PKCS` over a SHA-256 `DigestInfo` built by Trellis.
    RsaPkcsDigestInfo,
}

impl SignMechanism {
    /// The PKCS#11 name, for messages and `hsm check`.
    pub fn name(&self, algorithm: KeyAlgorithm) -> &'static str {
        match self {
            SignMechanism::Ecdsa => "CKM_ECDSA",
            SignMechanism::EcdsaWithHash if algorithm == KeyAlgorithm::EcP384 => "CKM_ECDSA_SHA384",
            SignMechanism::EcdsaWithHash => "CKM_ECDSA_SHA256",
            SignMechanism::Sha256RsaPkcs => "CKM_SHA256_RSA_PKCS",
            SignMechanism::RsaPkcsDigestInfo => "CKM_RSA_PKCS",
        }
    }
}

/// The mechanisms Trellis may use, by number and name.
const KNOWN: [(MechanismType, &str); 8] = [
    (MechanismType::ECC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN"),
    (MechanismType::ECDSA, "CKM_ECDSA"),
    (MechanismType::ECDSA_SHA256, "CKM_ECDSA_SHA256"),
    (MechanismType::ECDSA_SHA384, "CKM_ECDSA_SHA384"),
    (
        MechanismType::RSA_PKCS_KEY_PAIR_GEN,
        "CKM_RSA_PKCS_KEY_PAIR_GEN",
    ),
    (MechanismType::RSA_PKCS, "CKM_RSA_PKCS"),
    (MechanismType::SHA256_RSA_PKCS, "CKM_SHA256_RSA_PKCS"),
    (MechanismType::RSA_X_509, "CKM_RSA_X_509"),
];

/// What one token offers: every mechanism number it lists, and the info of
/// those Trellis may use.
#[derive(Clone, Debug)]
pub struct Capabilities {
    token: String,
    listed: Vec<CK_MECHANISM_TYPE>,
    mechanisms: Vec<(MechanismType, Option<MechanismInfo>)>,
}

/// What a token lacks for a key: names the token, the key and what is
/// missing, in one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub token: String,
    pub key: String,
    pub algorithm: KeyAlgorithm,
    pub what: String,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "token '{}' cannot hold key '{}' ({}): {}",
            self.token, self.key, self.algorithm, self.what
        )
    }
}

impl Capabilities {
    pub(crate) fn read(
        ctx: &Pkcs11,
        raw: &RawFunctions,
        slot: Slot,
        token: &str,
    ) -> HsmResult<Capabilities> {
        let listed = raw.mechanism_list(slot.id()).map_err(|rv| {
            HsmError::ModuleParams(format!(
                "listing the mechanisms of token '{token}': C_GetMechanismList returned {rv:#x}"
            ))
        })?;
        let mechanisms = KNOWN
            .iter()
            .filter(|(m, _)| listed.contains(&**m))
            .map(|(m, _)| (*m, ctx.get_mechanism_info(slot, *m).ok()))
            .collect();
        Ok(Capabilities {
            token: token.to_string(),
            listed,
            mechanisms,
        })
    }

    /// Capabilities from a given list (tests, and tools that read the list
    /// some other way).
    pub fn from_list(token: &str, mechanisms: Vec<(MechanismType, Option<MechanismInfo>)>) -> Self {
        Capabilities {
            token: token.to_string(),
            listed: mechanisms.iter().map(|(m, _)| **m).collect(),
            mechanisms,
        }
    }

    /// Every mechanism the token lists: the name of those Trellis may use,
    /// the number (hex) of the others.
    pub fn names(&self) -> Vec<String> {
        self.listed
            .iter()
            .map(|n| {
                KNOWN
                    .iter()
                    .find(|(m, _)| **m == *n)
                    .map_or_else(|| format!("{n:#x}"), |(_, name)| name.to_string())
            })
            .collect()
    }

    fn info(&self, mechanism: MechanismType) -> Option<Option<&MechanismInfo>> {
        self.mechanisms
            .iter()
            .find(|(m, _)| *m == mechanism)
            .map(|(_, info)| info.as_ref())
    }

    /// Offered, with the flag asked for (a module that gives no info is
    /// taken at its word that it offers the mechanism), and, for RSA, the
    /// modulus size within the mechanism's range.
    fn offers(
        &self,
        mechanism: MechanismType,
        flag: fn(&MechanismInfo) -> bool,
        bits: Option<u64>,
    ) -> bool {
        match self.info(mechanism) {
            None => false,
            Some(None) => true,
            Some(Some(info)) => {
                let in_range = bits.is_none_or(|b| {
                    let (min, max) = (info.min_key_size() as u64, info.max_key_size() as u64);
                    // Some modules leave the range at zero: no limit stated.
                    max == 0 || (min..=max).contains(&b)
                });
                flag(info) && in_range
            }
        }
    }

    fn missing(&self, key: &str, algorithm: KeyAlgorithm, what: String) -> Missing {
        Missing {
            token: self.token.clone(),
            key: key.to_string(),
            algorithm,
            what,
        }
    }

    /// How key `key` of `algorithm` signs on this token: the first of the
    /// mechanisms Trellis knows for the algorithm that the token offers.
    pub fn sign_mechanism(
        &self,
        key: &str,
        algorithm: KeyAlgorithm,
    ) -> Result<SignMechanism, Missing> {
        let bits = algorithm.rsa_bits();
        let candidates: &[(MechanismType, SignMechanism)] = match algorithm {
            KeyAlgorithm::EcP256 => &[
                (MechanismType::ECDSA, SignMechanism::Ecdsa),
                (MechanismType::ECDSA_SHA256, SignMechanism::EcdsaWithHash),
            ],
            KeyAlgorithm::EcP384 => &[
                (MechanismType::ECDSA, SignMechanism::Ecdsa),
                (MechanismType::ECDSA_SHA384, SignMechanism::EcdsaWithHash),
            ],
            _ => &[
                (MechanismType::SHA256_RSA_PKCS, SignMechanism::Sha256RsaPkcs),
                (MechanismType::RSA_PKCS, SignMechanism::RsaPkcsDigestInfo),
            ],
        };
        candidates
            .iter()
            .find(|(m, _)| self.offers(*m, MechanismInfo::sign, bits))
            .map(|(_, s)| *s)
            .ok_or_else(|| {
                let names: Vec<&str> = candidates.iter().map(|(_, s)| s.name(algorithm)).collect();
                self.missing(
                    key,
                    algorithm,
                    format!("it signs with none of {}", names.join(", ")),
                )
            })
    }

    /// Whether this token can generate a key pair of `algorithm` and then
    /// sign with it.
    pub fn check_generate(
        &self,
        key: &str,
        algorithm: KeyAlgorithm,
    ) -> Result<SignMechanism, Missing> {
        let (mechanism, name) = match algorithm {
            KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384 => {
                (MechanismType::ECC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN")
            }
            _ => (
                MechanismType::RSA_PKCS_KEY_PAIR_GEN,
                "CKM_RSA_PKCS_KEY_PAIR_GEN",
            ),
        };
        if !self.offers(
            mechanism,
            MechanismInfo::generate_key_pair,
            algorithm.rsa_bits(),
        ) {
            return Err(self.missing(
                key,
                algorithm,
                format!("it does not offer {name} for this key size"),
            ));
        }
        self.sign_mechanism(key, algorithm)
    }
}

/// The DER `DigestInfo` prefix for SHA-256 (RFC 8017 §9.2, note 1).
pub(crate) const SHA256_DIGEST_INFO_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(list: &[MechanismType]) -> Capabilities {
        Capabilities::from_list("t", list.iter().map(|m| (*m, None)).collect())
    }

    #[test]
    fn ecdsa_over_a_local_digest_is_preferred_then_hash_and_sign() {
        let both = caps(&[MechanismType::ECDSA_SHA256, MechanismType::ECDSA]);
        assert_eq!(
            both.sign_mechanism("k", KeyAlgorithm::EcP256),
            Ok(SignMechanism::Ecdsa)
        );
        let hashing = caps(&[MechanismType::ECDSA_SHA256]);
        assert_eq!(
            hashing.sign_mechanism("k", KeyAlgorithm::EcP256),
            Ok(SignMechanism::EcdsaWithHash)
        );
        // SHA-256 hash-and-sign does not serve a P-384 key.
        let err = hashing
            .sign_mechanism("k", KeyAlgorithm::EcP384)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "token 't' cannot hold key 'k' (ec-p384): it signs with none of CKM_ECDSA, CKM_ECDSA_SHA384"
        );
    }

    #[test]
    fn rsa_falls_back_to_raw_pkcs1_and_names_what_is_missing() {
        let low = caps(&[
            MechanismType::RSA_PKCS,
            MechanismType::RSA_PKCS_KEY_PAIR_GEN,
        ]);
        assert_eq!(
            low.check_generate("k", KeyAlgorithm::Rsa2048),
            Ok(SignMechanism::RsaPkcsDigestInfo)
        );
        let err = low
            .check_generate("db-int", KeyAlgorithm::EcP256)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "token 't' cannot hold key 'db-int' (ec-p256): it does not offer CKM_EC_KEY_PAIR_GEN for this key size"
        );
    }

    #[test]
    fn the_digest_info_prefix_is_sha256s() {
        // SEQUENCE(49) { SEQUENCE(13) { OID 2.16.840.1.101.3.4.2.1, NULL }, OCTET STRING(32) }
        assert_eq!(SHA256_DIGEST_INFO_PREFIX.len() + 32, 2 + 0x31);
        assert_eq!(
            &SHA256_DIGEST_INFO_PREFIX[6..15],
            &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01]
        );
    }
}
