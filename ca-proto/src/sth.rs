//! Signed tree heads of the issuance log, the log's public key, and the
//! client-side check of the log evidence a sign response carries.
//!
//! After each group commit the log signs a [`SignedTreeHead`]: its id, the
//! tree size, the RFC 6962 root hash and a timestamp. The signature is ECDSA
//! P-256 with SHA-256 (DER-encoded, as `ring`'s
//! `ECDSA_P256_SHA256_ASN1` verifies it) over these exact bytes
//! ([`SignedTreeHead::signed_bytes`]), UTF-8, each field followed by one
//! `\n`:
//!
//! ```text
//! trellis-sth-v1\n
//! {log_id}\n
//! {tree_size, decimal}\n
//! {root_hash, 64 lowercase hex digits}\n
//! {timestamp_ms, decimal, '-' if negative}\n
//! ```
//!
//! Decimal numbers have no leading zeros or `+`. A log id is 1 to
//! [`MAX_LOG_ID_LEN`] printable ASCII characters without spaces
//! ([`is_valid_log_id`]), so no field can contain the separator and the
//! encoding is unambiguous; tree heads with any other log id never verify.
//!
//! A sign response's `log` field is a [`LogEvidence`]: the entry's index, the
//! exact entry bytes, a tree head that covers it and the inclusion proof.
//! [`LogEvidence::verify`] checks all of it against the log's
//! [`LogPublicKey`] and returns the entry bytes, which the caller must still
//! compare with what it received (the certificate, serial, ...).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::signature::{
    UnparsedPublicKey, VerificationAlgorithm, ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1,
    RSA_PKCS1_2048_8192_SHA256,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::merkle::{hash_from_hex, hash_to_hex, leaf_hash, verify_inclusion, Hash};

/// The first line of the signed bytes: the format and its version.
pub const STH_CONTEXT: &str = "trellis-sth-v1";

/// The longest log id, in bytes.
pub const MAX_LOG_ID_LEN: usize = 128;

/// The longest signature of an accepted log key is RSA-8192's 1024 bytes,
/// 1368 base64 characters (a DER ECDSA P-256 signature is at most 96).
/// Anything longer is refused before decoding.
const MAX_SIGNATURE_B64_LEN: usize = 1368;

/// An inclusion proof has at most one hash per tree level.
const MAX_PROOF_LEN: usize = 64;

/// The DER prefix of a P-256 SubjectPublicKeyInfo: `SEQUENCE { SEQUENCE {
/// id-ecPublicKey, prime256v1 }, BIT STRING (0 unused bits) ... }`, followed
/// by the 65-byte uncompressed point.
const SPKI_P256_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The same for P-384, followed by the 97-byte uncompressed point.
const SPKI_P384_PREFIX: [u8; 23] = [
    0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
    0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
];

/// `AlgorithmIdentifier { rsaEncryption, NULL }`.
const RSA_ALGORITHM_ID: [u8; 15] = [
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];

/// Length of an uncompressed P-256 point: `0x04 || x || y`.
const POINT_LEN: usize = 65;

/// Length of an uncompressed P-384 point.
const P384_POINT_LEN: usize = 97;

/// An RSA public key of at most 8192 bits fits in this many DER bytes.
const MAX_RSA_KEY_DER: usize = 1100;

/// Why a tree head, key or piece of log evidence was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EvidenceError {
    /// The tree head's signature does not verify under the log key.
    #[error("tree head signature does not verify under the log key")]
    BadSignature,
    /// Not a log public key in an accepted encoding (P-256, P-384 or RSA).
    #[error("not a P-256, P-384 or RSA log public key")]
    BadKey,
    /// A field is not in its wire form; the text names it.
    #[error("malformed log evidence: {0}")]
    Malformed(&'static str),
    /// The entry and inclusion proof do not lead to the tree head's root.
    #[error("inclusion proof does not match the signed tree head")]
    ProofMismatch,
    /// The entry index is not below the tree head's size.
    #[error("entry index is outside the signed tree")]
    IndexOutOfRange,
}

/// Whether `log_id` may name a log: 1 to [`MAX_LOG_ID_LEN`] bytes, each a
/// printable ASCII character other than space (`0x21..=0x7e`).
pub fn is_valid_log_id(log_id: &str) -> bool {
    (1..=MAX_LOG_ID_LEN).contains(&log_id.len()) && log_id.bytes().all(|b| b.is_ascii_graphic())
}

/// What the log signs after each batch; see the module documentation for
/// the signed bytes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SignedTreeHead {
    /// The log's id (see [`is_valid_log_id`]).
    pub log_id: String,
    /// Number of entries in the tree.
    pub tree_size: u64,
    /// RFC 6962 root hash of the first `tree_size` entries, 64 lowercase hex
    /// digits.
    pub root_hash: String,
    /// When the head was signed, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Standard base64 (padded) of the DER ECDSA P-256 SHA-256 signature over
    /// [`signed_bytes`](Self::signed_bytes).
    pub signature: String,
}

impl SignedTreeHead {
    /// The exact bytes the log signs:
    /// `"trellis-sth-v1\n{log_id}\n{tree_size}\n{hex(root)}\n{timestamp_ms}\n"`.
    ///
    /// The caller must pass a valid log id ([`is_valid_log_id`]); heads
    /// signed for any other id are refused by [`verify`](Self::verify).
    pub fn signed_bytes(log_id: &str, tree_size: u64, root: &Hash, timestamp_ms: i64) -> Vec<u8> {
        format!(
            "{STH_CONTEXT}\n{log_id}\n{tree_size}\n{}\n{timestamp_ms}\n",
            hash_to_hex(root)
        )
        .into_bytes()
    }

    /// Assemble a tree head from its fields and the DER signature over
    /// [`signed_bytes`](Self::signed_bytes).
    pub fn new(
        log_id: &str,
        tree_size: u64,
        root: &Hash,
        timestamp_ms: i64,
        signature_der: &[u8],
    ) -> Self {
        SignedTreeHead {
            log_id: log_id.to_owned(),
            tree_size,
            root_hash: hash_to_hex(root),
            timestamp_ms,
            signature: STANDARD.encode(signature_der),
        }
    }

    /// The root hash, if `root_hash` is exactly 64 lowercase hex digits.
    pub fn root(&self) -> Option<Hash> {
        hash_from_hex(&self.root_hash)
    }

    /// Check the signature under the log key. Refuses (as
    /// [`EvidenceError::Malformed`]) an invalid log id, a root hash not in
    /// its wire form and a signature that is not canonical standard base64.
    pub fn verify(&self, log_public_key: &LogPublicKey) -> Result<(), EvidenceError> {
        if !is_valid_log_id(&self.log_id) {
            return Err(EvidenceError::Malformed("log_id"));
        }
        let root = self.root().ok_or(EvidenceError::Malformed("root_hash"))?;
        if self.signature.len() > MAX_SIGNATURE_B64_LEN {
            return Err(EvidenceError::Malformed("signature"));
        }
        let signature = STANDARD
            .decode(&self.signature)
            .map_err(|_| EvidenceError::Malformed("signature"))?;
        let message = Self::signed_bytes(&self.log_id, self.tree_size, &root, self.timestamp_ms);
        UnparsedPublicKey::new(log_public_key.algorithm.ring(), &log_public_key.key)
            .verify(&message, &signature)
            .map_err(|_| EvidenceError::BadSignature)
    }
}

/// How a log key signs tree heads: the algorithm follows the key, which
/// follows what the log's token can do (`[log] key_algorithm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogKeyAlgorithm {
    /// ECDSA P-256 with SHA-256, DER signature.
    EcdsaP256Sha256,
    /// ECDSA P-384 with SHA-384, DER signature.
    EcdsaP384Sha384,
    /// RSA PKCS#1 v1.5 with SHA-256, 2048 to 8192 bits.
    RsaPkcs1Sha256,
}

impl LogKeyAlgorithm {
    fn ring(&self) -> &'static dyn VerificationAlgorithm {
        match self {
            LogKeyAlgorithm::EcdsaP256Sha256 => &ECDSA_P256_SHA256_ASN1,
            LogKeyAlgorithm::EcdsaP384Sha384 => &ECDSA_P384_SHA384_ASN1,
            LogKeyAlgorithm::RsaPkcs1Sha256 => &RSA_PKCS1_2048_8192_SHA256,
        }
    }
}

/// The log's public key: an uncompressed P-256 or P-384 point, or an RSA
/// public key (PKCS#1 `RSAPublicKey`).
///
/// Parsing checks the encoding only; a point that is not on the curve, or
/// an RSA key ring refuses, is caught when verifying, where every signature
/// then fails with [`EvidenceError::BadSignature`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogPublicKey {
    algorithm: LogKeyAlgorithm,
    /// The point, or the PKCS#1 DER.
    key: Vec<u8>,
}

impl LogPublicKey {
    /// From raw point bytes (as a PKCS#11 token's `CKA_EC_POINT` holds them,
    /// unwrapped): 65 bytes (P-256) or 97 bytes (P-384) starting with
    /// `0x04`, else [`EvidenceError::BadKey`].
    pub fn from_point(point: Vec<u8>) -> Result<Self, EvidenceError> {
        let algorithm = match point.len() {
            POINT_LEN => LogKeyAlgorithm::EcdsaP256Sha256,
            P384_POINT_LEN => LogKeyAlgorithm::EcdsaP384Sha384,
            _ => return Err(EvidenceError::BadKey),
        };
        if point[0] != 0x04 {
            return Err(EvidenceError::BadKey);
        }
        Ok(LogPublicKey {
            algorithm,
            key: point,
        })
    }

    /// From a DER PKCS#1 `RSAPublicKey` (a SEQUENCE of two INTEGERs).
    pub fn from_rsa_public_key(der: Vec<u8>) -> Result<Self, EvidenceError> {
        let (body, rest) = der_element(&der, 0x30).ok_or(EvidenceError::BadKey)?;
        let (_modulus, after) = der_element(body, 0x02).ok_or(EvidenceError::BadKey)?;
        let (_exponent, after) = der_element(after, 0x02).ok_or(EvidenceError::BadKey)?;
        if !rest.is_empty() || !after.is_empty() || der.len() > MAX_RSA_KEY_DER {
            return Err(EvidenceError::BadKey);
        }
        Ok(LogPublicKey {
            algorithm: LogKeyAlgorithm::RsaPkcs1Sha256,
            key: der,
        })
    }

    /// From a DER SubjectPublicKeyInfo. Accepted: the fixed P-256 and P-384
    /// encodings (`id-ecPublicKey` with the named curve, then the
    /// uncompressed point) and `rsaEncryption` with a NULL parameter;
    /// anything else is [`EvidenceError::BadKey`].
    pub fn from_spki_der(der: &[u8]) -> Result<Self, EvidenceError> {
        if let Some(point) = der.strip_prefix(&SPKI_P256_PREFIX[..]) {
            return match point.len() {
                POINT_LEN => Self::from_point(point.to_vec()),
                _ => Err(EvidenceError::BadKey),
            };
        }
        if let Some(point) = der.strip_prefix(&SPKI_P384_PREFIX[..]) {
            return match point.len() {
                P384_POINT_LEN => Self::from_point(point.to_vec()),
                _ => Err(EvidenceError::BadKey),
            };
        }
        let (body, rest) = der_element(der, 0x30).ok_or(EvidenceError::BadKey)?;
        let bits = body
            .strip_prefix(&RSA_ALGORITHM_ID[..])
            .ok_or(EvidenceError::BadKey)?;
        let (bits, after) = der_element(bits, 0x03).ok_or(EvidenceError::BadKey)?;
        let key = bits.strip_prefix(&[0x00]).ok_or(EvidenceError::BadKey)?;
        if !rest.is_empty() || !after.is_empty() {
            return Err(EvidenceError::BadKey);
        }
        Self::from_rsa_public_key(key.to_vec())
    }

    /// How this key signs tree heads.
    pub fn algorithm(&self) -> LogKeyAlgorithm {
        self.algorithm
    }

    /// From text holding exactly one PEM `PUBLIC KEY` block (text around it,
    /// such as other well-formed PEM blocks of a trust bundle, is ignored;
    /// see [`crate::pem`]). A missing, repeated or unreadable block is
    /// [`EvidenceError::Malformed`]; a key that is not P-256, P-384 or RSA
    /// is [`EvidenceError::BadKey`].
    pub fn from_pem(pem: &str) -> Result<Self, EvidenceError> {
        use crate::pem::{decode_one, Label, Limits, PemError};
        // A DER SPKI of any accepted key (RSA-8192 included) is far below
        // 3 KiB; a trust bundle around it, far below 1 MiB.
        let limits = Limits {
            text_bytes: 1 << 20,
            blocks: 1,
            der_bytes: 3072,
        };
        let der = decode_one(pem.as_bytes(), Label::PublicKey, &limits).map_err(|e| {
            EvidenceError::Malformed(match e {
                PemError::Missing(_) => "no PUBLIC KEY PEM block",
                PemError::MoreThanOne(_) | PemError::TooManyBlocks { .. } => {
                    "more than one PUBLIC KEY PEM block"
                }
                PemError::Unterminated(_) => "unterminated PEM block",
                PemError::TextTooLarge { .. } | PemError::BlockTooLarge { .. } => {
                    "PUBLIC KEY PEM block too long"
                }
                PemError::Base64 => "PEM base64",
                PemError::BadBeginLine | PemError::Malformed(_) => "malformed PEM",
            })
        })?;
        Self::from_spki_der(&der)
    }

    /// The raw key: the uncompressed point, or the PKCS#1 DER.
    pub fn key_bytes(&self) -> &[u8] {
        &self.key
    }

    /// The DER SubjectPublicKeyInfo (91 bytes for P-256).
    pub fn to_spki_der(&self) -> Vec<u8> {
        match self.algorithm {
            LogKeyAlgorithm::EcdsaP256Sha256 => [&SPKI_P256_PREFIX[..], &self.key].concat(),
            LogKeyAlgorithm::EcdsaP384Sha384 => [&SPKI_P384_PREFIX[..], &self.key].concat(),
            LogKeyAlgorithm::RsaPkcs1Sha256 => {
                let mut bits = vec![0x00];
                bits.extend_from_slice(&self.key);
                let mut body = RSA_ALGORITHM_ID.to_vec();
                der_write(&mut body, 0x03, &bits);
                let mut out = Vec::with_capacity(body.len() + 4);
                der_write(&mut out, 0x30, &body);
                out
            }
        }
    }

    /// The PEM `PUBLIC KEY` block, 64 base64 characters a line, ending in a
    /// newline.
    pub fn to_pem(&self) -> String {
        crate::pem::encode(crate::pem::Label::PublicKey, &self.to_spki_der())
    }

    /// The key's id: lowercase hex SHA-256 of its DER SubjectPublicKeyInfo.
    pub fn key_id(&self) -> String {
        hex::encode(Sha256::digest(self.to_spki_der()))
    }
}

/// One DER element with `tag` at the start of `input` (definite length, at
/// most two length bytes): its contents and what follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        n if n < 0x80 => (n as usize, rest),
        0x81 => {
            let (&n, rest) = rest.split_first()?;
            (n as usize, rest)
        }
        0x82 => {
            let bytes = rest.get(..2)?;
            (((bytes[0] as usize) << 8) | bytes[1] as usize, &rest[2..])
        }
        _ => return None,
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// Append a DER element with `tag` and `contents` (up to 64 KiB).
fn der_write(out: &mut Vec<u8>, tag: u8, contents: &[u8]) {
    out.push(tag);
    match contents.len() {
        n if n < 0x80 => out.push(n as u8),
        n if n <= 0xff => out.extend_from_slice(&[0x81, n as u8]),
        n => out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(contents);
}

/// What a sign response carries in its `log` field: proof that the entry
/// is in the log.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LogEvidence {
    /// The log's id; must equal `sth.log_id`.
    pub log_id: String,
    /// The entry's index (sequence number) in the log.
    pub index: u64,
    /// Standard base64 of the exact entry bytes hashed as the leaf.
    pub entry: String,
    /// A signed tree head whose tree contains the entry.
    pub sth: SignedTreeHead,
    /// RFC 9162 inclusion proof of the entry in `sth`'s tree, leaf upwards,
    /// each hash 64 lowercase hex digits.
    pub inclusion_proof: Vec<String>,
}

impl LogEvidence {
    /// Assemble evidence for entry `index` with bytes `entry`, covered by
    /// `sth`, with its inclusion proof in `sth`'s tree.
    pub fn new(index: u64, entry: &[u8], sth: SignedTreeHead, proof: &[Hash]) -> Self {
        LogEvidence {
            log_id: sth.log_id.clone(),
            index,
            entry: STANDARD.encode(entry),
            inclusion_proof: proof.iter().map(hash_to_hex).collect(),
            sth,
        }
    }

    /// Check the evidence under the log key: the log ids agree, the tree
    /// head's signature verifies, the index lies within the tree, and the
    /// entry's leaf hash with the inclusion proof leads to the tree head's
    /// root. Returns the entry bytes, for the caller to compare with what it
    /// received.
    pub fn verify(&self, key: &LogPublicKey) -> Result<Vec<u8>, EvidenceError> {
        if self.log_id != self.sth.log_id {
            return Err(EvidenceError::Malformed(
                "log_id differs from the tree head's",
            ));
        }
        self.sth.verify(key)?;
        if self.index >= self.sth.tree_size {
            return Err(EvidenceError::IndexOutOfRange);
        }
        let root = self
            .sth
            .root()
            .ok_or(EvidenceError::Malformed("root_hash"))?;
        if self.inclusion_proof.len() > MAX_PROOF_LEN {
            return Err(EvidenceError::Malformed("inclusion_proof"));
        }
        let proof = self
            .inclusion_proof
            .iter()
            .map(|h| hash_from_hex(h))
            .collect::<Option<Vec<Hash>>>()
            .ok_or(EvidenceError::Malformed("inclusion_proof"))?;
        let entry = STANDARD
            .decode(&self.entry)
            .map_err(|_| EvidenceError::Malformed("entry"))?;
        let leaf = leaf_hash(&entry);
        if !verify_inclusion(&leaf, self.index, self.sth.tree_size, &proof, &root) {
            return Err(EvidenceError::ProofMismatch);
        }
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{inclusion_proof, root_at, CompactRange, MemoryNodeStore};
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

    struct Signer {
        pair: EcdsaKeyPair,
        rng: SystemRandom,
    }

    impl Signer {
        fn generate() -> Self {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
                    .unwrap();
            Signer { pair, rng }
        }

        fn public(&self) -> LogPublicKey {
            LogPublicKey::from_point(self.pair.public_key().as_ref().to_vec()).unwrap()
        }

        fn sth(&self, log_id: &str, size: u64, root: &Hash, ts: i64) -> SignedTreeHead {
            let msg = SignedTreeHead::signed_bytes(log_id, size, root, ts);
            let sig = self.pair.sign(&self.rng, &msg).unwrap();
            SignedTreeHead::new(log_id, size, root, ts, sig.as_ref())
        }
    }

    // A key and signature made with OpenSSL 3.0 (`openssl ecparam -name
    // prime256v1 -genkey`, `openssl ec -pubout`, `openssl dgst -sha256
    // -sign` over the signed bytes below): an independent check of the
    // encodings.
    const OPENSSL_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEV12OYWhPYLGb2SB01oqyAXSerDrQ
zIBVXJ0OmrRROCxH2QNOo6/DlLLqLNWBdvUTmP2Mst9AoczkUDsC3U0lmA==
-----END PUBLIC KEY-----
";
    const OPENSSL_SPKI_HEX: &str = "3059301306072a8648ce3d020106082a8648ce3d03010703420004575d8e61684f60b19bd92074d68ab201749eac3ad0cc80555c9d0e9ab451382c47d9034ea3afc394b2ea2cd58176f51398fd8cb2df40a1cce4503b02dd4d2598";
    const OPENSSL_SIG: &str = "MEQCIFKsk7oRpyGHU3CKE/l6FrsesiYZmauBvt+A5/GWFkjAAiBy8THJEizY6Xs3mu4hHAdUvAzxQhZ1B5ZphbudqCVE/w==";
    const CT_ROOT_8: &str = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328";

    fn openssl_sth() -> SignedTreeHead {
        SignedTreeHead {
            log_id: "ca-1.example".into(),
            tree_size: 8,
            root_hash: CT_ROOT_8.into(),
            timestamp_ms: 1_700_000_000_123,
            signature: OPENSSL_SIG.into(),
        }
    }

    #[test]
    fn signed_bytes_are_exactly_as_documented() {
        let root = hash_from_hex(CT_ROOT_8).unwrap();
        let got = SignedTreeHead::signed_bytes("ca-1.example", 8, &root, 1_700_000_000_123);
        let want = format!("trellis-sth-v1\nca-1.example\n8\n{CT_ROOT_8}\n1700000000123\n");
        assert_eq!(String::from_utf8(got).unwrap(), want);
        let got = SignedTreeHead::signed_bytes("x", 0, &[0xab; 32], -5);
        let want = format!("trellis-sth-v1\nx\n0\n{}\n-5\n", "ab".repeat(32));
        assert_eq!(got, want.into_bytes());
    }

    #[test]
    fn openssl_signature_verifies() {
        let key = LogPublicKey::from_pem(OPENSSL_PEM).unwrap();
        assert_eq!(hex::encode(key.to_spki_der()), OPENSSL_SPKI_HEX);
        assert_eq!(key.to_pem(), OPENSSL_PEM);
        assert_eq!(openssl_sth().verify(&key), Ok(()));
        let mut sth = openssl_sth();
        sth.tree_size = 9;
        assert_eq!(sth.verify(&key), Err(EvidenceError::BadSignature));
    }

    #[test]
    fn sth_verifies_and_every_tampering_fails() {
        let signer = Signer::generate();
        let key = signer.public();
        let root = [0x5a; 32];
        let sth = signer.sth("trellis-a", 41, &root, 1_700_000_000_000);
        assert_eq!(sth.root(), Some(root));
        assert_eq!(sth.verify(&key), Ok(()));

        let bad = |f: &dyn Fn(&mut SignedTreeHead)| {
            let mut s = sth.clone();
            f(&mut s);
            s.verify(&key)
        };
        let sig = Err(EvidenceError::BadSignature);
        assert_eq!(bad(&|s| s.tree_size = 42), sig);
        assert_eq!(bad(&|s| s.tree_size = 40), sig);
        assert_eq!(bad(&|s| s.root_hash = hex::encode([0x5b; 32])), sig);
        assert_eq!(bad(&|s| s.timestamp_ms += 1), sig);
        assert_eq!(bad(&|s| s.log_id = "trellis-b".into()), sig);
        // Every single-bit change of the DER signature.
        let der = STANDARD.decode(&sth.signature).unwrap();
        for i in 0..der.len() * 8 {
            let mut d = der.clone();
            d[i / 8] ^= 1 << (i % 8);
            assert_eq!(bad(&|s| s.signature = STANDARD.encode(&d)), sig, "bit {i}");
        }
        assert_eq!(bad(&|s| s.signature = String::new()), sig);
        // Another key.
        assert_eq!(sth.verify(&Signer::generate().public()), sig);

        // Not in wire form.
        let malformed = |what| Err(EvidenceError::Malformed(what));
        assert_eq!(
            bad(&|s| s.root_hash = s.root_hash.to_uppercase()),
            malformed("root_hash")
        );
        assert_eq!(
            bad(&|s| {
                s.root_hash.pop();
            }),
            malformed("root_hash")
        );
        assert_eq!(bad(&|s| s.signature.push('!')), malformed("signature"));
        assert_eq!(bad(&|s| s.signature = s.signature.replace('=', "")), {
            // Unpadded base64 is refused when the signature needs padding;
            // otherwise it is unchanged and still verifies.
            if sth.signature.contains('=') {
                malformed("signature")
            } else {
                Ok(())
            }
        });
        assert_eq!(
            bad(&|s| s.signature = "A".repeat(MAX_SIGNATURE_B64_LEN + 4)),
            malformed("signature")
        );
        for id in ["", "a b", "a\nb", "é", "x".repeat(129).as_str()] {
            assert_eq!(
                bad(&|s| s.log_id = id.into()),
                malformed("log_id"),
                "{id:?}"
            );
        }
    }

    #[test]
    fn log_id_with_newline_cannot_forge_another_head() {
        // "a\n5" with size 7 would sign the same prefix lines as "a" with
        // size 5 if newlines were allowed; the id is refused instead.
        let signer = Signer::generate();
        let sth = signer.sth("a\n5", 7, &[1; 32], 0);
        assert_eq!(
            sth.verify(&signer.public()),
            Err(EvidenceError::Malformed("log_id"))
        );
        assert!(is_valid_log_id(&"x".repeat(MAX_LOG_ID_LEN)));
        assert!(is_valid_log_id("ca-1.example:log/2"));
    }

    #[test]
    fn sth_json_shape() {
        let json = serde_json::to_value(openssl_sth()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "log_id": "ca-1.example",
                "tree_size": 8,
                "root_hash": CT_ROOT_8,
                "timestamp_ms": 1_700_000_000_123i64,
                "signature": OPENSSL_SIG,
            })
        );
        let back: SignedTreeHead = serde_json::from_value(json).unwrap();
        assert_eq!(back, openssl_sth());
    }

    #[test]
    fn public_key_encodings_round_trip() {
        let signer = Signer::generate();
        let key = signer.public();
        let der = key.to_spki_der();
        assert_eq!(der.len(), 91);
        // The SPKI, assembled from its ASN.1 parts.
        let mut want = vec![0x30, 0x59, 0x30, 0x13];
        want.extend([0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]); // id-ecPublicKey
        want.extend([0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]); // prime256v1
        want.extend([0x03, 0x42, 0x00]);
        want.extend_from_slice(key.key_bytes());
        assert_eq!(der, want);
        assert_eq!(LogPublicKey::from_spki_der(&der).unwrap(), key);

        let pem = key.to_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert!(pem.ends_with("\n-----END PUBLIC KEY-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
        assert_eq!(LogPublicKey::from_pem(&pem).unwrap(), key);
        // CRLF line ends and text around the block (a trust bundle).
        let bundle = format!(
            "# log key\r\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n{}",
            pem.replace('\n', "\r\n")
        );
        assert_eq!(LogPublicKey::from_pem(&bundle).unwrap(), key);
        assert_eq!(
            key.key_id(),
            hex::encode(Sha256::digest(&der)),
            "key id = SHA-256 of the SPKI"
        );
        assert_eq!(key.key_id().len(), 64);
        assert_ne!(key.key_id(), Signer::generate().public().key_id());
    }

    #[test]
    fn p384_and_rsa_log_keys_sign_tree_heads() {
        use ring::signature::ECDSA_P384_SHA384_ASN1_SIGNING;
        let rng = SystemRandom::new();
        let root = [7u8; 32];
        let msg = SignedTreeHead::signed_bytes("log-1", 3, &root, 1_700_000_000_000);

        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let key = LogPublicKey::from_point(pair.public_key().as_ref().to_vec()).unwrap();
        assert_eq!(key.algorithm(), LogKeyAlgorithm::EcdsaP384Sha384);
        assert_eq!(LogPublicKey::from_pem(&key.to_pem()).unwrap(), key);
        let sig = pair.sign(&rng, &msg).unwrap();
        let sth = SignedTreeHead::new("log-1", 3, &root, 1_700_000_000_000, sig.as_ref());
        assert_eq!(sth.verify(&key), Ok(()));

        // An RSA key made by OpenSSL: its SPKI must round-trip byte for byte.
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("rsa.der");
        let public = dir.path().join("rsa.pub.der");
        let ok = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .args(["-outform", "DER", "-out"])
            .arg(&private)
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl genpkey");
        let ok = std::process::Command::new("openssl")
            .args([
                "pkey", "-inform", "DER", "-pubout", "-outform", "DER", "-in",
            ])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl pkey -pubout");
        let spki = std::fs::read(&public).unwrap();
        let key = LogPublicKey::from_spki_der(&spki).unwrap();
        assert_eq!(key.algorithm(), LogKeyAlgorithm::RsaPkcs1Sha256);
        assert_eq!(key.to_spki_der(), spki);
        let message = dir.path().join("sth.bin");
        let signature = dir.path().join("sth.sig");
        std::fs::write(&message, &msg).unwrap();
        let ok = std::process::Command::new("openssl")
            .args(["dgst", "-sha256", "-keyform", "DER", "-sign"])
            .arg(&private)
            .arg("-out")
            .arg(&signature)
            .arg(&message)
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl dgst -sign");
        let sig = std::fs::read(&signature).unwrap();
        let sth = SignedTreeHead::new("log-1", 3, &root, 1_700_000_000_000, &sig);
        assert_eq!(sth.verify(&key), Ok(()));
        // A P-256 key does not verify an RSA signature, and the reverse.
        assert_eq!(
            sth.verify(&Signer::generate().public()),
            Err(EvidenceError::BadSignature)
        );
        // Truncated or padded RSA SPKIs are refused.
        assert_eq!(
            LogPublicKey::from_spki_der(&spki[..spki.len() - 1]),
            Err(EvidenceError::BadKey)
        );
        let mut longer = spki.clone();
        longer.push(0);
        assert_eq!(
            LogPublicKey::from_spki_der(&longer),
            Err(EvidenceError::BadKey)
        );
    }

    #[test]
    fn public_key_parsing_refuses_other_encodings() {
        let key = Signer::generate().public();
        let der = key.to_spki_der();
        let point = key.key_bytes().to_vec();
        // Raw points: wrong length or not uncompressed.
        assert_eq!(LogPublicKey::from_point(vec![]), Err(EvidenceError::BadKey));
        assert_eq!(
            LogPublicKey::from_point(point[..64].to_vec()),
            Err(EvidenceError::BadKey)
        );
        let mut compressed = point[..33].to_vec();
        compressed[0] = 0x02;
        assert_eq!(
            LogPublicKey::from_point(compressed),
            Err(EvidenceError::BadKey)
        );
        let mut p = point.clone();
        p[0] = 0x06;
        assert_eq!(LogPublicKey::from_point(p), Err(EvidenceError::BadKey));
        // SPKI: any changed prefix byte (e.g. the P-384 OID), truncated or
        // with trailing bytes.
        for i in 0..SPKI_P256_PREFIX.len() {
            let mut d = der.clone();
            d[i] ^= 0x01;
            assert_eq!(
                LogPublicKey::from_spki_der(&d),
                Err(EvidenceError::BadKey),
                "{i}"
            );
        }
        assert_eq!(
            LogPublicKey::from_spki_der(&der[..90]),
            Err(EvidenceError::BadKey)
        );
        let mut d = der.clone();
        d.push(0);
        assert_eq!(LogPublicKey::from_spki_der(&d), Err(EvidenceError::BadKey));
        assert_eq!(LogPublicKey::from_spki_der(&[]), Err(EvidenceError::BadKey));
        // PEM: missing, unterminated, repeated, not base64, not P-256.
        let pem = key.to_pem();
        let malformed = |r: Result<LogPublicKey, EvidenceError>| {
            assert!(matches!(r, Err(EvidenceError::Malformed(_))), "{r:?}")
        };
        malformed(LogPublicKey::from_pem(""));
        malformed(LogPublicKey::from_pem(
            &pem.replace("PUBLIC KEY", "CERTIFICATE"),
        ));
        malformed(LogPublicKey::from_pem(
            &pem.replace("-----END PUBLIC KEY-----", ""),
        ));
        malformed(LogPublicKey::from_pem(&format!("{pem}{pem}")));
        malformed(LogPublicKey::from_pem(&pem.replacen("M", "*", 1)));
        let rsa_like = crate::pem::encode(
            crate::pem::Label::PublicKey,
            &[0x30, 0x03, 0x02, 0x01, 0x00],
        );
        assert_eq!(
            LogPublicKey::from_pem(&rsa_like),
            Err(EvidenceError::BadKey)
        );
        // A point that is not on the curve parses but never verifies.
        let mut off = point.clone();
        off[64] ^= 1;
        let off = LogPublicKey::from_point(off).unwrap();
        let signer = Signer::generate();
        let sth = signer.sth("log", 1, &[0; 32], 1);
        assert_eq!(sth.verify(&off), Err(EvidenceError::BadSignature));
    }

    /// A log of 37 entries, its store and a signed head of the whole tree.
    fn log37(signer: &Signer) -> (Vec<Vec<u8>>, MemoryNodeStore, SignedTreeHead) {
        let entries: Vec<Vec<u8>> = (0..37)
            .map(|i| format!("{{\"seq\":{i},\"decision\":\"issued\"}}").into_bytes())
            .collect();
        let mut range = CompactRange::new();
        let mut store = MemoryNodeStore::new();
        for e in &entries {
            store.add(&range.append(leaf_hash(e))).unwrap();
        }
        let sth = signer.sth("trellis-test", 37, &range.root(), 1_700_000_000_000);
        (entries, store, sth)
    }

    #[test]
    fn log_evidence_verifies_for_every_entry_and_detects_tampering() {
        let signer = Signer::generate();
        let key = signer.public();
        let (entries, store, sth) = log37(&signer);
        // A later head of a longer tree, signed by the same key.
        let mut longer = store.clone();
        let mut range = CompactRange::from_store(&store, 37).unwrap();
        longer.add(&range.append(leaf_hash(b"one more"))).unwrap();
        let sth38 = signer.sth("trellis-test", 38, &range.root(), 1_700_000_000_500);
        assert_eq!(root_at(&longer, 38).unwrap(), range.root());

        for (i, entry) in entries.iter().enumerate() {
            let index = i as u64;
            let proof = inclusion_proof(&store, index, 37).unwrap();
            let ev = LogEvidence::new(index, entry, sth.clone(), &proof);
            assert_eq!(ev.log_id, "trellis-test");
            assert_eq!(ev.verify(&key).as_ref(), Ok(entry), "index {i}");

            // Survives the wire.
            let wire: LogEvidence =
                serde_json::from_str(&serde_json::to_string(&ev).unwrap()).unwrap();
            assert_eq!(wire, ev);

            let check = |f: &dyn Fn(&mut LogEvidence)| {
                let mut e = ev.clone();
                f(&mut e);
                e.verify(&key)
            };
            let mismatch = Err(EvidenceError::ProofMismatch);
            // Entry bytes: another entry, one changed byte, one more byte.
            let other = &entries[(i + 1) % entries.len()];
            assert_eq!(check(&|e| e.entry = STANDARD.encode(other)), mismatch);
            let mut changed = entry.clone();
            changed[0] ^= 1;
            assert_eq!(check(&|e| e.entry = STANDARD.encode(&changed)), mismatch);
            let mut longer_entry = entry.clone();
            longer_entry.push(b' ');
            assert_eq!(
                check(&|e| e.entry = STANDARD.encode(&longer_entry)),
                mismatch
            );
            assert_eq!(
                check(&|e| e.entry = "%%".into()),
                Err(EvidenceError::Malformed("entry"))
            );
            // Proof: each element changed, dropped; one added; not hex.
            for j in 0..proof.len() {
                let mut p = proof.clone();
                p[j][j] ^= 0x80;
                assert_eq!(
                    check(&|e| e.inclusion_proof = p.iter().map(hex::encode).collect()),
                    mismatch
                );
                assert_eq!(
                    check(&|e| {
                        e.inclusion_proof.remove(j);
                    }),
                    mismatch
                );
            }
            assert_eq!(
                check(&|e| e.inclusion_proof.push(hex::encode([0; 32]))),
                mismatch
            );
            assert_eq!(
                check(&|e| e.inclusion_proof[0] = e.inclusion_proof[0].to_uppercase()),
                Err(EvidenceError::Malformed("inclusion_proof"))
            );
            assert_eq!(
                check(&|e| e.inclusion_proof = vec![hex::encode([0; 32]); 65]),
                Err(EvidenceError::Malformed("inclusion_proof"))
            );
            // Index: every other index in the tree, and beyond it.
            for other in 0..37u64 {
                if other != index {
                    assert_eq!(check(&|e| e.index = other), mismatch, "{i} as {other}");
                }
            }
            for other in [37, 38, u64::MAX] {
                assert_eq!(
                    check(&|e| e.index = other),
                    Err(EvidenceError::IndexOutOfRange)
                );
            }
            // Tree head: altered fields break its signature; a genuine later
            // head does not match a proof made for the earlier tree.
            assert_eq!(
                check(&|e| e.sth.tree_size = 36),
                Err(EvidenceError::BadSignature)
            );
            assert_eq!(
                check(&|e| e.sth.root_hash = hex::encode([7; 32])),
                Err(EvidenceError::BadSignature)
            );
            assert_eq!(
                check(&|e| e.sth.timestamp_ms -= 1),
                Err(EvidenceError::BadSignature)
            );
            assert_eq!(check(&|e| e.sth = sth38.clone()), mismatch);
            // ...while the proof for the later tree verifies against it.
            let proof38 = inclusion_proof(&longer, index, 38).unwrap();
            let ev38 = LogEvidence::new(index, entry, sth38.clone(), &proof38);
            assert_eq!(ev38.verify(&key).as_ref(), Ok(entry));
            // Log id: the evidence's and the head's must agree.
            assert_eq!(
                check(&|e| e.log_id = "elsewhere".into()),
                Err(EvidenceError::Malformed(
                    "log_id differs from the tree head's"
                ))
            );
            // Another log's key.
            assert_eq!(
                ev.verify(&Signer::generate().public()),
                Err(EvidenceError::BadSignature)
            );
        }
    }

    #[test]
    fn empty_tree_head_covers_no_entry() {
        let signer = Signer::generate();
        let sth = signer.sth("log", 0, &crate::merkle::empty_root(), 5);
        assert_eq!(sth.verify(&signer.public()), Ok(()));
        let ev = LogEvidence::new(0, b"x", sth, &[]);
        assert_eq!(
            ev.verify(&signer.public()),
            Err(EvidenceError::IndexOutOfRange)
        );
    }
}
