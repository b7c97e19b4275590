//! OCSP (RFC 6960) wire format of the responder at `/ocsp/{class}`: pure,
//! no I/O and no clock (times are Unix seconds the caller passes in).
//!
//! - [`parse_request`]: a strict parse of a DER `OCSPRequest` (the POST
//!   body, `application/ocsp-request`) into an [`OcspRequest`];
//!   [`decode_get_path_segment`] turns the GET form's last path segment
//!   (percent-encoded base64) into that DER first;
//! - [`IssuerHashes::of_certificate`] and [`CertId::matches`]: whether a
//!   requested CertID names a given issuing CA;
//! - [`build_response`]: a successful, signed `BasicOCSPResponse` (the
//!   signature comes from a caller-supplied closure, e.g. the HSM);
//! - [`error_response`]: an `OCSPResponse` with an error status only.
//!
//! # Requests
//!
//! - at most [`MAX_REQUEST_LEN`] bytes, checked before anything is read;
//! - canonical DER only: the `tbsRequest` must re-encode to exactly the
//!   bytes received, so BER leftovers (indefinite or long-form lengths, an
//!   explicitly encoded `version v1` or `critical FALSE`, unsorted SETs,
//!   non-minimal INTEGERs) are refused, never guessed at;
//! - `version` v1 only; `requestorName` read and ignored;
//! - 1 to [`MAX_CERTS`] single requests; each CertID's `hashAlgorithm` is
//!   SHA-1 or SHA-256 with NULL or absent parameters (which of the two is
//!   kept, to echo it), both hashes have that hash's length, and the serial
//!   is a positive INTEGER of at most 20 significant bytes (plus the sign
//!   byte DER needs when the first bit is set);
//! - extensions (request and single-request): no empty list, no extension
//!   twice; the nonce (`id-pkix-ocsp-nonce`, 1.3.6.1.5.5.7.48.1.2) is kept
//!   as the raw `extnValue` content (normally an OCTET STRING wrapping the
//!   nonce, RFC 9654; some clients send the bare bytes), 1 to
//!   [`MAX_NONCE_LEN`] bytes, so it can be echoed exactly as received; other
//!   extensions are ignored unless critical, which refuses the request;
//! - `optionalSignature`: accepted when it is a well-formed `[0]` holding a
//!   SEQUENCE, and otherwise ignored (not parsed further, not verified).
//!
//! Nesting is bounded by the fixed ASN.1 types: nothing in an OCSPRequest
//! is recursive, and open values (algorithm parameters, the ignored
//! signature) are read as single TLVs without descending into them.
//!
//! # Responses
//!
//! [`build_response`] makes `OCSPResponse { successful, id-pkix-ocsp-basic }`
//! holding a `BasicOCSPResponse` whose `ResponseData` has the default
//! version (omitted), `responderID` **byKey** (SHA-1 of the responder's
//! `subjectPublicKey` bits, [`IssuerHashes::key_sha1`]), `producedAt`, one
//! `SingleResponse` per answer with the CertID echoed as requested,
//! `thisUpdate` and `nextUpdate`, and the nonce echoed (non-critical) when
//! given. No `certs`: the responder is the issuing CA itself, which the
//! client already has. Times are GeneralizedTime in whole seconds, `Z`.
//!
//! # Crates
//!
//! The ASN.1 types are RustCrypto's `x509-ocsp` over `der` (through
//! `x509-cert`, which re-exports it). They were a clean fit: the workspace
//! already locks the same `der`/`spki`/`x509-cert`/`const-oid` versions
//! (for api-service), so no second version of any crate enters the graph;
//! the default members gain seven small crates (`der_derive` is a proc
//! macro on the `syn` 2 that x509-parser already builds). `der` is strict
//! about lengths, tags and INTEGERs but accepts explicitly encoded DEFAULT
//! values and sorts SETs it reads, hence the re-encoding check above.
//! SHA-1 is `ring`'s (legacy-use) digest, SHA-256 is `sha2`.

use std::collections::BTreeSet;
use std::time::Duration;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use thiserror::Error;
use x509_cert::der::asn1::{AnyRef, BitString, GeneralizedTime, ObjectIdentifier, OctetString};
use x509_cert::der::{self, Any, Decode, Encode, Reader, SliceReader, Tag, TagNumber, Tagged};
use x509_cert::ext::pkix::CrlReason;
use x509_cert::ext::Extension;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoRef};

/// Largest accepted `OCSPRequest`, in bytes (a request for [`MAX_CERTS`]
/// SHA-256 CertIDs with a nonce is under 2 KiB).
pub const MAX_REQUEST_LEN: usize = 8 * 1024;
/// Most CertIDs one request may ask about.
pub const MAX_CERTS: usize = 16;
/// Longest accepted nonce `extnValue` content, in bytes: an OCTET STRING
/// of up to 128 bytes (RFC 9654's bound) with its two-byte header.
pub const MAX_NONCE_LEN: usize = 130;
/// Longest accepted GET path segment: the base64 of [`MAX_REQUEST_LEN`]
/// bytes with every character percent-encoded.
pub const MAX_GET_SEGMENT_LEN: usize = 3 * 4 * MAX_REQUEST_LEN.div_ceil(3);
/// Longest serial number magnitude, in bytes (RFC 5280).
pub const MAX_SERIAL_LEN: usize = 20;

const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const NONCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");

/// `[0]` constructed: the explicit tag of `version` and of
/// `optionalSignature`.
const CONTEXT_0: Tag = Tag::ContextSpecific {
    constructed: true,
    number: TagNumber::N0,
};

/// Why an OCSP request (or the issuer certificate, or a GET path segment)
/// was refused. Every variant maps to the `malformedRequest` status except
/// [`OcspError::Certificate`], which is the server's own fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OcspError {
    /// The request is longer than [`MAX_REQUEST_LEN`].
    #[error("OCSP request is {len} bytes, more than the {max} accepted")]
    TooLarge {
        /// Length of the request.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not DER of an `OCSPRequest`; what the DER reader said.
    #[error("malformed OCSP request: {0}")]
    Der(String),
    /// Well-formed, but not the canonical DER encoding (e.g. an explicitly
    /// encoded default value).
    #[error("OCSP request is not canonical DER")]
    NotCanonical,
    /// A `version` other than v1.
    #[error("unsupported OCSP request version")]
    UnsupportedVersion,
    /// An empty `requestList`.
    #[error("OCSP request asks about no certificate")]
    NoRequests,
    /// More single requests than [`MAX_CERTS`].
    #[error("OCSP request asks about {count} certificates, more than the {max} accepted")]
    TooManyRequests {
        /// Number of single requests.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A CertID hash algorithm other than SHA-1 and SHA-256 (its OID).
    #[error("unsupported CertID hash algorithm {0}")]
    UnsupportedHash(String),
    /// CertID hash algorithm parameters other than NULL.
    #[error("CertID hash algorithm parameters are neither NULL nor absent")]
    HashParameters,
    /// `issuerNameHash` or `issuerKeyHash` does not have the hash's length.
    #[error("CertID {field} is {len} bytes, its hash algorithm makes {expected}")]
    HashLength {
        /// `issuerNameHash` or `issuerKeyHash`.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The hash algorithm's output length.
        expected: usize,
    },
    /// A zero or negative serial number.
    #[error("CertID serial number is not positive")]
    SerialNotPositive,
    /// A serial number of more than [`MAX_SERIAL_LEN`] significant bytes.
    #[error("CertID serial number is longer than {MAX_SERIAL_LEN} bytes")]
    SerialTooLong,
    /// An empty extension list (`Extensions` is `SIZE (1..MAX)`).
    #[error("empty extension list")]
    EmptyExtensions,
    /// An extension appears twice in one list (its OID).
    #[error("extension {0} appears more than once")]
    DuplicateExtension(String),
    /// A critical extension this responder does not implement (its OID).
    #[error("unsupported critical extension {0}")]
    CriticalExtension(String),
    /// The nonce `extnValue` is empty or longer than [`MAX_NONCE_LEN`].
    #[error("OCSP nonce is empty or longer than {MAX_NONCE_LEN} bytes")]
    BadNonce,
    /// The GET path segment is longer than [`MAX_GET_SEGMENT_LEN`].
    #[error("GET path segment is {len} bytes, more than the {max} accepted")]
    SegmentTooLong {
        /// Length of the segment.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A `%` not followed by two hex digits in the GET path segment.
    #[error("bad percent-encoding in the GET path segment")]
    PercentEncoding,
    /// The percent-decoded GET path segment is not standard base64.
    #[error("GET path segment is not base64")]
    Base64,
    /// The issuer certificate given to [`IssuerHashes::of_certificate`] is
    /// not a DER X.509 certificate; what the DER reader said.
    #[error("issuer certificate: {0}")]
    Certificate(String),
}

fn der_error(e: der::Error) -> OcspError {
    OcspError::Der(e.to_string())
}

/// The hash algorithm of a CertID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertIdHash {
    /// SHA-1 (1.3.14.3.2.26), what most clients send.
    Sha1,
    /// SHA-256 (2.16.840.1.101.3.4.2.1).
    Sha256,
}

impl CertIdHash {
    /// Output length of the hash, in bytes.
    pub fn output_len(self) -> usize {
        match self {
            CertIdHash::Sha1 => 20,
            CertIdHash::Sha256 => 32,
        }
    }

    fn oid(self) -> ObjectIdentifier {
        match self {
            CertIdHash::Sha1 => SHA1,
            CertIdHash::Sha256 => SHA256,
        }
    }
}

/// One requested certificate (RFC 6960 `CertID`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertId {
    /// The hash algorithm of both issuer hashes.
    pub hash: CertIdHash,
    /// Whether `hashAlgorithm` carried explicit NULL parameters (`false`:
    /// absent). Kept so the response echoes the CertID byte for byte, as
    /// clients that compare whole CertIDs (BouncyCastle, Java) need.
    pub hash_params_null: bool,
    /// Hash of the issuer's subject Name DER.
    pub issuer_name_hash: Vec<u8>,
    /// Hash of the issuer's `subjectPublicKey` BIT STRING contents.
    pub issuer_key_hash: Vec<u8>,
    /// The serial number's big-endian magnitude, without a leading zero
    /// byte (1 to [`MAX_SERIAL_LEN`] bytes).
    pub serial: Vec<u8>,
}

impl CertId {
    /// Lowercase hex of the serial's magnitude ([`CertId::serial`]).
    ///
    /// Trellis stores a serial as the lowercase hex of its DER INTEGER
    /// content (16 bytes). Its serials always start with a non-zero byte
    /// below 0x80, so the DER content has no sign byte and equals the
    /// magnitude: this string is the stored key. A serial Trellis did not
    /// issue (one with a sign byte, another length) simply finds nothing.
    pub fn serial_hex(&self) -> String {
        hex::encode(&self.serial)
    }

    /// Whether this CertID names `issuer` (its name and key hashes, in the
    /// CertID's hash algorithm). The serial is not looked at.
    pub fn matches(&self, issuer: &IssuerHashes) -> bool {
        let (name, key): (&[u8], &[u8]) = match self.hash {
            CertIdHash::Sha1 => (&issuer.name_sha1, &issuer.key_sha1),
            CertIdHash::Sha256 => (&issuer.name_sha256, &issuer.key_sha256),
        };
        self.issuer_name_hash == name && self.issuer_key_hash == key
    }
}

/// A parsed OCSP request: what it asks about, and its nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspRequest {
    /// The requested certificates, in request order (1 to [`MAX_CERTS`]).
    pub certs: Vec<CertId>,
    /// The nonce extension's raw `extnValue` content (usually an OCTET
    /// STRING holding the nonce), to pass back to [`build_response`].
    pub nonce: Option<Vec<u8>>,
}

/// The hashes by which CertIDs name an issuing CA: of its subject Name DER
/// and of its `subjectPublicKey` BIT STRING contents (the key bytes without
/// the unused-bits byte), in SHA-1 and SHA-256 (RFC 6960 section 4.1.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IssuerHashes {
    /// SHA-1 of the subject Name.
    pub name_sha1: [u8; 20],
    /// SHA-1 of the public key bits; also the responderID `byKey` when this
    /// CA signs the responses ([`ResponseParams::responder_key_hash`]).
    pub key_sha1: [u8; 20],
    /// SHA-256 of the subject Name.
    pub name_sha256: [u8; 32],
    /// SHA-256 of the public key bits.
    pub key_sha256: [u8; 32],
}

impl IssuerHashes {
    /// The hashes of a DER certificate (the issuing CA's).
    pub fn of_certificate(cert_der: &[u8]) -> Result<IssuerHashes, OcspError> {
        let (name, key) =
            subject_and_key(cert_der).map_err(|e| OcspError::Certificate(e.to_string()))?;
        Ok(IssuerHashes {
            name_sha1: sha1(name),
            key_sha1: sha1(key),
            name_sha256: Sha256::digest(name).into(),
            key_sha256: Sha256::digest(key).into(),
        })
    }
}

fn sha1(bytes: &[u8]) -> [u8; 20] {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes);
    let mut out = [0u8; 20];
    // A SHA-1 digest is always 20 bytes; zip keeps this free of panics.
    for (o, d) in out.iter_mut().zip(digest.as_ref()) {
        *o = *d;
    }
    out
}

/// The next TLV, which must carry `tag`; its raw bytes.
fn expect_tlv<'a, R: Reader<'a>>(reader: &mut R, tag: Tag) -> der::Result<&'a [u8]> {
    reader.peek_tag()?.assert_eq(tag)?;
    reader.tlv_bytes()
}

/// The raw subject Name TLV and the subjectPublicKey bits of a DER
/// certificate. The Name and the SubjectPublicKeyInfo are checked to parse;
/// the hashes are over the bytes as they stand in the certificate.
fn subject_and_key(cert: &[u8]) -> der::Result<(&[u8], &[u8])> {
    let mut reader = SliceReader::new(cert)?;
    let found = reader.sequence(|certificate| {
        let found = certificate.sequence(|tbs| {
            if tbs.peek_tag()? == CONTEXT_0 {
                expect_tlv(tbs, CONTEXT_0)?; // version
            }
            expect_tlv(tbs, Tag::Integer)?; // serialNumber
            expect_tlv(tbs, Tag::Sequence)?; // signature
            expect_tlv(tbs, Tag::Sequence)?; // issuer
            expect_tlv(tbs, Tag::Sequence)?; // validity
            let subject = expect_tlv(tbs, Tag::Sequence)?;
            x509_cert::name::Name::from_der(subject)?;
            let spki = SubjectPublicKeyInfoRef::from_der(expect_tlv(tbs, Tag::Sequence)?)?;
            // issuerUniqueID, subjectUniqueID, extensions: not needed.
            while !tbs.is_finished() {
                tbs.tlv_bytes()?;
            }
            Ok((subject, spki.subject_public_key.raw_bytes()))
        })?;
        expect_tlv(certificate, Tag::Sequence)?; // signatureAlgorithm
        expect_tlv(certificate, Tag::BitString)?; // signatureValue
        Ok(found)
    })?;
    reader.finish(found)
}

/// Parses a DER `OCSPRequest` (see the module documentation for the rules).
pub fn parse_request(der: &[u8]) -> Result<OcspRequest, OcspError> {
    if der.len() > MAX_REQUEST_LEN {
        return Err(OcspError::TooLarge {
            len: der.len(),
            max: MAX_REQUEST_LEN,
        });
    }
    let tbs_der = split_request(der).map_err(der_error)?;
    check_version(tbs_der)?;
    let tbs = x509_ocsp::TbsRequest::from_der(tbs_der).map_err(der_error)?;
    if tbs.to_der().map_err(der_error)? != tbs_der {
        return Err(OcspError::NotCanonical);
    }
    let count = tbs.request_list.len();
    if count == 0 {
        return Err(OcspError::NoRequests);
    }
    if count > MAX_CERTS {
        return Err(OcspError::TooManyRequests {
            count,
            max: MAX_CERTS,
        });
    }
    let mut certs = Vec::with_capacity(count);
    for request in &tbs.request_list {
        if let Some(extensions) = &request.single_request_extensions {
            find_extension(extensions, None)?;
        }
        certs.push(cert_id(&request.req_cert)?);
    }
    let nonce = match &tbs.request_extensions {
        None => None,
        Some(extensions) => match find_extension(extensions, Some(NONCE))? {
            None => None,
            Some(nonce) => {
                let value = nonce.extn_value.as_bytes();
                if value.is_empty() || value.len() > MAX_NONCE_LEN {
                    return Err(OcspError::BadNonce);
                }
                Some(value.to_vec())
            }
        },
    };
    Ok(OcspRequest { certs, nonce })
}

/// The raw `tbsRequest` of an `OCSPRequest`, after checking that an
/// `optionalSignature` is a `[0]` holding a SEQUENCE and nothing follows.
fn split_request(der: &[u8]) -> der::Result<&[u8]> {
    let mut reader = SliceReader::new(der)?;
    let tbs = reader.sequence(|request| {
        let tbs = expect_tlv(request, Tag::Sequence)?;
        if !request.is_finished() {
            let signature = AnyRef::decode(request)?;
            signature.tag().assert_eq(CONTEXT_0)?;
            AnyRef::from_der(signature.value())?
                .tag()
                .assert_eq(Tag::Sequence)?;
        }
        Ok(tbs)
    })?;
    reader.finish(tbs)
}

/// `version` must be absent (v1 is the DEFAULT, which DER never encodes).
fn check_version(tbs: &[u8]) -> Result<(), OcspError> {
    let fields = AnyRef::from_der(tbs).map_err(der_error)?;
    let mut reader = SliceReader::new(fields.value()).map_err(der_error)?;
    if reader.is_finished() || reader.peek_tag().map_err(der_error)? != CONTEXT_0 {
        return Ok(());
    }
    let version = AnyRef::decode(&mut reader).map_err(der_error)?;
    match u8::from_der(version.value()) {
        Ok(0) => Err(OcspError::NotCanonical),
        _ => Err(OcspError::UnsupportedVersion),
    }
}

/// Checks an extension list (non-empty, no OID twice, no critical extension
/// but `known`) and returns the `known` extension if present.
fn find_extension(
    extensions: &[Extension],
    known: Option<ObjectIdentifier>,
) -> Result<Option<&Extension>, OcspError> {
    if extensions.is_empty() {
        return Err(OcspError::EmptyExtensions);
    }
    let mut seen = BTreeSet::new();
    let mut found = None;
    for extension in extensions {
        if !seen.insert(extension.extn_id) {
            return Err(OcspError::DuplicateExtension(extension.extn_id.to_string()));
        }
        if Some(extension.extn_id) == known {
            found = Some(extension);
        } else if extension.critical {
            return Err(OcspError::CriticalExtension(extension.extn_id.to_string()));
        }
    }
    Ok(found)
}

fn cert_id(id: &x509_ocsp::CertId) -> Result<CertId, OcspError> {
    let algorithm = &id.hash_algorithm;
    let hash = if algorithm.oid == SHA1 {
        CertIdHash::Sha1
    } else if algorithm.oid == SHA256 {
        CertIdHash::Sha256
    } else {
        return Err(OcspError::UnsupportedHash(algorithm.oid.to_string()));
    };
    let hash_params_null = match &algorithm.parameters {
        None => false,
        Some(p) if p.tag() == Tag::Null && p.value().is_empty() => true,
        Some(_) => return Err(OcspError::HashParameters),
    };
    for (field, value) in [
        ("issuerNameHash", &id.issuer_name_hash),
        ("issuerKeyHash", &id.issuer_key_hash),
    ] {
        if value.as_bytes().len() != hash.output_len() {
            return Err(OcspError::HashLength {
                field,
                len: value.as_bytes().len(),
                expected: hash.output_len(),
            });
        }
    }
    // The DER INTEGER content, minimal (der checked): a set first bit is a
    // negative number, a leading zero only a sign byte.
    let serial = match id.serial_number.as_bytes() {
        [] | [0x00] => return Err(OcspError::SerialNotPositive),
        [first, ..] if first & 0x80 != 0 => return Err(OcspError::SerialNotPositive),
        [0x00, magnitude @ ..] => magnitude,
        magnitude => magnitude,
    };
    if serial.len() > MAX_SERIAL_LEN {
        return Err(OcspError::SerialTooLong);
    }
    Ok(CertId {
        hash,
        hash_params_null,
        issuer_name_hash: id.issuer_name_hash.as_bytes().to_vec(),
        issuer_key_hash: id.issuer_key_hash.as_bytes().to_vec(),
        serial: serial.to_vec(),
    })
}

const GET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The DER request of the GET form (`GET /ocsp/{class}/{segment}`, RFC 6960
/// appendix A.1): percent-decodes `segment` (`%2B`, `%2F`, `%3D`, either
/// case; unencoded `+`, `/` and `=` stand for themselves), then decodes
/// standard base64 with or without padding. Bounded by
/// [`MAX_GET_SEGMENT_LEN`] and [`MAX_REQUEST_LEN`]; the result still goes
/// through [`parse_request`].
///
/// Clients do not always escape `/`: the segment is everything after the
/// class's `/ocsp/{class}/` prefix, slashes included.
pub fn decode_get_path_segment(segment: &str) -> Result<Vec<u8>, OcspError> {
    if segment.len() > MAX_GET_SEGMENT_LEN {
        return Err(OcspError::SegmentTooLong {
            len: segment.len(),
            max: MAX_GET_SEGMENT_LEN,
        });
    }
    let base64 = percent_decode(segment.as_bytes())?;
    let der = GET_BASE64.decode(&base64).map_err(|_| OcspError::Base64)?;
    if der.len() > MAX_REQUEST_LEN {
        return Err(OcspError::TooLarge {
            len: der.len(),
            max: MAX_REQUEST_LEN,
        });
    }
    Ok(der)
}

fn percent_decode(mut rest: &[u8]) -> Result<Vec<u8>, OcspError> {
    fn hex_digit(c: u8) -> Option<u8> {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let mut out = Vec::with_capacity(rest.len());
    loop {
        match rest {
            [] => return Ok(out),
            [b'%', hi, lo, tail @ ..] => {
                match (hex_digit(*hi), hex_digit(*lo)) {
                    (Some(hi), Some(lo)) => out.push((hi << 4) | lo),
                    _ => return Err(OcspError::PercentEncoding),
                }
                rest = tail;
            }
            [b'%', ..] => return Err(OcspError::PercentEncoding),
            [c, tail @ ..] => {
                out.push(*c);
                rest = tail;
            }
        }
    }
}

/// The status of one requested certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertStatus {
    /// Issued by this CA and not revoked.
    Good,
    /// Revoked.
    Revoked {
        /// When, in Unix seconds.
        time: i64,
        /// RFC 5280 CRLReason code (0 unspecified, 1 keyCompromise, 2
        /// cACompromise, 3 affiliationChanged, 4 superseded, 5
        /// cessationOfOperation, 6 certificateHold, 8 removeFromCRL, 9
        /// privilegeWithdrawn, 10 aACompromise), or none.
        reason: Option<u8>,
    },
    /// Not known to this responder.
    Unknown,
}

/// The algorithm the responder's key signs with; the hsm crate's key
/// algorithms map as EC P-256 → [`SignatureAlgorithm::EcdsaSha256`], EC
/// P-384 → [`SignatureAlgorithm::EcdsaSha384`], RSA (any size) →
/// [`SignatureAlgorithm::RsaPkcs1Sha256`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    /// ecdsa-with-SHA256 (1.2.840.10045.4.3.2), no parameters; the
    /// signature is a DER `ECDSA-Sig-Value`.
    EcdsaSha256,
    /// ecdsa-with-SHA384 (1.2.840.10045.4.3.3), no parameters; the
    /// signature is a DER `ECDSA-Sig-Value`.
    EcdsaSha384,
    /// sha256WithRSAEncryption (1.2.840.113549.1.1.11), NULL parameters;
    /// the signature is the PKCS#1 v1.5 signature block.
    RsaPkcs1Sha256,
}

impl SignatureAlgorithm {
    fn algorithm_identifier(self) -> AlgorithmIdentifierOwned {
        let (oid, parameters) = match self {
            SignatureAlgorithm::EcdsaSha256 => (ECDSA_WITH_SHA256, None),
            SignatureAlgorithm::EcdsaSha384 => (ECDSA_WITH_SHA384, None),
            SignatureAlgorithm::RsaPkcs1Sha256 => (SHA256_WITH_RSA, Some(Any::null())),
        };
        AlgorithmIdentifierOwned { oid, parameters }
    }
}

/// What a successful response says; see [`build_response`].
#[derive(Debug, Clone, Copy)]
pub struct ResponseParams<'a> {
    /// The responderID `byKey`: SHA-1 of the signing CA's `subjectPublicKey`
    /// bits, [`IssuerHashes::key_sha1`] of its certificate.
    pub responder_key_hash: &'a [u8; 20],
    /// One `SingleResponse` each, in this order (at least one). The CertIDs
    /// are echoed as parsed.
    pub answers: &'a [(CertId, CertStatus)],
    /// `producedAt`, Unix seconds.
    pub produced_at: i64,
    /// `thisUpdate` of every answer, Unix seconds.
    pub this_update: i64,
    /// `nextUpdate` of every answer, Unix seconds; not before `this_update`.
    pub next_update: i64,
    /// The request's nonce ([`OcspRequest::nonce`]), echoed in a
    /// non-critical response extension.
    pub nonce: Option<&'a [u8]>,
}

/// Why [`build_response`] made no response.
#[derive(Debug, Error)]
pub enum BuildError<E> {
    /// [`ResponseParams::answers`] is empty.
    #[error("an OCSP response needs at least one answer")]
    NoAnswers,
    /// A time before 1970 or after 9999 (the Unix seconds given).
    #[error("time {0} cannot be a GeneralizedTime")]
    TimeOutOfRange(i64),
    /// `next_update` is before `this_update`.
    #[error("nextUpdate is before thisUpdate")]
    NextUpdateBeforeThisUpdate,
    /// A revocation reason that is no CRLReason code (the code).
    #[error("{0} is not a CRLReason code")]
    BadReason(u8),
    /// A CertID whose serial is zero or longer than [`MAX_SERIAL_LEN`].
    #[error("CertID serial number is zero or longer than {MAX_SERIAL_LEN} bytes")]
    BadSerial,
    /// The DER encoder refused a value.
    #[error("DER encoding failed: {0}")]
    Encode(String),
    /// The signing closure failed; its error.
    #[error("signing the OCSP response failed: {0}")]
    Sign(E),
}

impl<E> From<der::Error> for BuildError<E> {
    fn from(e: der::Error) -> Self {
        BuildError::Encode(e.to_string())
    }
}

fn generalized_time<E>(unix: i64) -> Result<x509_ocsp::OcspGeneralizedTime, BuildError<E>> {
    u64::try_from(unix)
        .ok()
        .and_then(|secs| GeneralizedTime::from_unix_duration(Duration::from_secs(secs)).ok())
        .map(x509_ocsp::OcspGeneralizedTime)
        .ok_or(BuildError::TimeOutOfRange(unix))
}

fn crl_reason<E>(code: u8) -> Result<CrlReason, BuildError<E>> {
    Ok(match code {
        0 => CrlReason::Unspecified,
        1 => CrlReason::KeyCompromise,
        2 => CrlReason::CaCompromise,
        3 => CrlReason::AffiliationChanged,
        4 => CrlReason::Superseded,
        5 => CrlReason::CessationOfOperation,
        6 => CrlReason::CertificateHold,
        8 => CrlReason::RemoveFromCRL,
        9 => CrlReason::PrivilegeWithdrawn,
        10 => CrlReason::AaCompromise,
        other => return Err(BuildError::BadReason(other)),
    })
}

/// The CertID as requested: same algorithm and parameters, same hashes,
/// the serial as the minimal positive INTEGER it was received as.
fn wire_cert_id<E>(id: &CertId) -> Result<x509_ocsp::CertId, BuildError<E>> {
    let first = id.serial.iter().position(|&b| b != 0);
    let magnitude = first.and_then(|i| id.serial.get(i..)).unwrap_or_default();
    if magnitude.is_empty() || magnitude.len() > MAX_SERIAL_LEN {
        return Err(BuildError::BadSerial);
    }
    let sign_byte = magnitude.first().is_some_and(|b| b & 0x80 != 0);
    let mut integer = vec![0x02, 0];
    if sign_byte {
        integer.push(0x00);
    }
    integer.extend_from_slice(magnitude);
    // At most 21 content bytes: the short length form.
    if let Some(len) = integer.get_mut(1) {
        *len = u8::try_from(magnitude.len() + usize::from(sign_byte)).unwrap_or(u8::MAX);
    }
    Ok(x509_ocsp::CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: id.hash.oid(),
            parameters: id.hash_params_null.then(Any::null),
        },
        issuer_name_hash: OctetString::new(id.issuer_name_hash.clone())?,
        issuer_key_hash: OctetString::new(id.issuer_key_hash.clone())?,
        serial_number: SerialNumber::from_der(&integer)?,
    })
}

/// A successful `OCSPResponse` (DER) answering `params`, signed with `alg`
/// by `sign`, which gets the DER of the `ResponseData` and returns the
/// signature as X.509 carries it (a DER `ECDSA-Sig-Value` for ECDSA, the
/// PKCS#1 v1.5 block for RSA); its error comes back as
/// [`BuildError::Sign`]. `sign` is called at most once, after every input
/// was checked.
pub fn build_response<E>(
    params: &ResponseParams<'_>,
    alg: SignatureAlgorithm,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<Vec<u8>, BuildError<E>> {
    if params.answers.is_empty() {
        return Err(BuildError::NoAnswers);
    }
    if params.next_update < params.this_update {
        return Err(BuildError::NextUpdateBeforeThisUpdate);
    }
    let produced_at = generalized_time(params.produced_at)?;
    let this_update = generalized_time(params.this_update)?;
    let next_update = generalized_time(params.next_update)?;
    let mut responses = Vec::with_capacity(params.answers.len());
    for (id, status) in params.answers {
        let cert_status = match *status {
            CertStatus::Good => x509_ocsp::CertStatus::good(),
            CertStatus::Unknown => x509_ocsp::CertStatus::unknown(),
            CertStatus::Revoked { time, reason } => {
                x509_ocsp::CertStatus::Revoked(x509_ocsp::RevokedInfo {
                    revocation_time: generalized_time(time)?,
                    revocation_reason: reason.map(crl_reason).transpose()?,
                })
            }
        };
        responses.push(x509_ocsp::SingleResponse {
            cert_id: wire_cert_id(id)?,
            cert_status,
            this_update,
            next_update: Some(next_update),
            single_extensions: None,
        });
    }
    let response_extensions = match params.nonce {
        None => None,
        Some(nonce) => Some(vec![Extension {
            extn_id: NONCE,
            critical: false,
            extn_value: OctetString::new(nonce)?,
        }]),
    };
    let tbs_response_data = x509_ocsp::ResponseData {
        version: x509_ocsp::Version::V1,
        responder_id: x509_ocsp::ResponderId::ByKey(OctetString::new(
            params.responder_key_hash.as_slice(),
        )?),
        produced_at,
        responses,
        response_extensions,
    };
    let tbs_der = tbs_response_data.to_der()?;
    let signature = sign(&tbs_der).map_err(BuildError::Sign)?;
    let basic = x509_ocsp::BasicOcspResponse {
        tbs_response_data,
        signature_algorithm: alg.algorithm_identifier(),
        signature: BitString::from_bytes(&signature)?,
        certs: None,
    };
    Ok(x509_ocsp::OcspResponse::successful(basic)?.to_der()?)
}

/// An unsuccessful `responseStatus` (the response carries nothing else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseStatus {
    /// `malformedRequest` (1): the request did not parse ([`OcspError`]).
    MalformedRequest,
    /// `internalError` (2): the responder failed (e.g. the HSM).
    InternalError,
    /// `tryLater` (3): the responder is busy or not ready.
    TryLater,
    /// `unauthorized` (6): this responder does not answer for the issuer.
    Unauthorized,
}

impl ResponseStatus {
    /// The ENUMERATED value.
    pub fn code(self) -> u8 {
        match self {
            ResponseStatus::MalformedRequest => 1,
            ResponseStatus::InternalError => 2,
            ResponseStatus::TryLater => 3,
            ResponseStatus::Unauthorized => 6,
        }
    }
}

/// The DER `OCSPResponse` with just `status`:
/// `SEQUENCE { responseStatus ENUMERATED }`.
pub fn error_response(status: ResponseStatus) -> Vec<u8> {
    vec![0x30, 0x03, 0x0a, 0x01, status.code()]
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::Path;
    use std::process::{Command, Output};
    use std::time::{SystemTime, UNIX_EPOCH};

    use base64::engine::general_purpose::STANDARD;
    use ring::rand::SystemRandom;
    use ring::signature::{
        EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING,
        RSA_PKCS1_SHA256,
    };

    // Made once with OpenSSL 3.0 (`openssl req -x509 -newkey ec -pkeyopt
    // ec_paramgen_curve:P-256 -subj "/CN=Test CA/O=Trellis"`, then
    // `openssl ocsp -issuer ca.pem -cert leaf.pem -reqout req.der`, with
    // and without `-sha256`), so that these tests need no openssl.

    /// The CA certificate (DER).
    const CA_DER: &str = concat!(
        "308201ae30820153a003020102021405072ae93de3d7f131bb9b0449c813853d234218300a06082a8648ce3d04030230",
        "243110300e06035504030c07546573742043413110300e060355040a0c075472656c6c6973301e170d32363132303532",
        "33303034365a170d3237303130343233303034365a30243110300e06035504030c07546573742043413110300e060355",
        "040a0c075472656c6c69733059301306072a8648ce3d020106082a8648ce3d03010703420004b30dc41d653e500f6562",
        "a1bf5cb45b71f1fa452f1dd046d0d3d8627b830b9d9fa9ea6355b4701b38608ca89e1175f8438d826ee6e1dceada7233",
        "89d975d5be50a3633061301d0603551d0e04160414ba80bb3fbc714bcacfe006155cea682f94e68364301f0603551d23",
        "041830168014ba80bb3fbc714bcacfe006155cea682f94e68364300f0603551d130101ff040530030101ff300e060355",
        "1d0f0101ff040403020186300a06082a8648ce3d0403020349003046022100e20b5363dee1922e24679707affdaa0595",
        "517433df822f6adbd08138de3bb056022100b208061b09a23dc25e5ca15ab11c106f54f3ea6f3fc7369f4328a1e66acd",
        "7958",
    );
    /// A SHA-1 CertID request for serial 7a01…0f with a nonce.
    const SHA1_REQUEST: &str = concat!(
        "30763074304d304b3049300906052b0e03021a05000414139e43c82a36a2d9e9548c25e2fd85c9a2a086f90414ba80bb",
        "3fbc714bcacfe006155cea682f94e6836402107a0102030405060708090a0b0c0d0e0fa2233021301f06092b06010505",
        "073001020412041013e24c47edcf85b3c16533ce3395c16f",
    );
    /// The same with a SHA-256 CertID (and another nonce).
    const SHA256_REQUEST: &str = concat!(
        "308193308190306930673065300d060960864801650304020105000420d0dc5234af13478e43eca7ede33659bb96eb17",
        "d459622f2656cf66b06cfa42f4042098e2d73c7e8c2f6c638a188d4cfeb196d5693e381fb2db732e303699b4adf07302",
        "107a0102030405060708090a0b0c0d0e0fa2233021301f06092b0601050507300102041204101ccfa02dbed2b7935576",
        "6b14b252ed2c",
    );
    const FIXED_SERIAL: &str = "7a0102030405060708090a0b0c0d0e0f";

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).expect("test hex")
    }

    fn now() -> i64 {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
        i64::try_from(since.as_secs()).expect("time")
    }

    // ---- requests built with x509-ocsp's types, for the refusals ----

    fn wire_id(
        hash: ObjectIdentifier,
        params: Option<Any>,
        len: usize,
        serial: &[u8],
    ) -> x509_ocsp::CertId {
        x509_ocsp::CertId {
            hash_algorithm: AlgorithmIdentifierOwned {
                oid: hash,
                parameters: params,
            },
            issuer_name_hash: OctetString::new(vec![0x11; len]).unwrap(),
            issuer_key_hash: OctetString::new(vec![0x22; len]).unwrap(),
            serial_number: SerialNumber::from_der(serial).unwrap(),
        }
    }

    fn sha1_id() -> x509_ocsp::CertId {
        wire_id(SHA1, Some(Any::null()), 20, &[0x02, 0x02, 0x12, 0x34])
    }

    fn extension(oid: &str, critical: bool, value: &[u8]) -> Extension {
        Extension {
            extn_id: ObjectIdentifier::new(oid).unwrap(),
            critical,
            extn_value: OctetString::new(value).unwrap(),
        }
    }

    fn nonce_extension(value: &[u8]) -> Extension {
        extension("1.3.6.1.5.5.7.48.1.2", false, value)
    }

    fn request_der(
        ids: Vec<x509_ocsp::CertId>,
        single_extensions: Option<Vec<Extension>>,
        extensions: Option<Vec<Extension>>,
    ) -> Vec<u8> {
        x509_ocsp::OcspRequest {
            tbs_request: x509_ocsp::TbsRequest {
                version: x509_ocsp::Version::V1,
                requestor_name: None,
                request_list: ids
                    .into_iter()
                    .map(|req_cert| x509_ocsp::Request {
                        req_cert,
                        single_request_extensions: single_extensions.clone(),
                    })
                    .collect(),
                request_extensions: extensions,
            },
            optional_signature: None,
        }
        .to_der()
        .unwrap()
    }

    /// A DER TLV with a short or two-byte length.
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match content.len() {
            n @ 0..=0x7f => out.push(n as u8),
            n @ 0x80..=0xff => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(content);
        out
    }

    /// `der` (an OCSPRequest) with the SEQUENCE `tbs` in place of its
    /// tbsRequest and `rest` after it.
    fn with_tbs(tbs: &[u8], rest: &[u8]) -> Vec<u8> {
        tlv(0x30, &[tbs, rest].concat())
    }

    /// The tbsRequest of an OCSPRequest, and its content.
    fn tbs_of(der: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let tbs = split_request(der).unwrap().to_vec();
        let content = AnyRef::from_der(&tbs).unwrap().value().to_vec();
        (tbs, content)
    }

    #[test]
    fn parses_the_fixed_openssl_requests() {
        let hashes = IssuerHashes::of_certificate(&unhex(CA_DER)).unwrap();
        let sha1 = parse_request(&unhex(SHA1_REQUEST)).unwrap();
        assert_eq!(sha1.certs.len(), 1);
        let id = &sha1.certs[0];
        assert_eq!(id.hash, CertIdHash::Sha1);
        assert!(id.hash_params_null);
        assert_eq!(id.serial_hex(), FIXED_SERIAL);
        assert_eq!(
            hex::encode(&id.issuer_name_hash),
            "139e43c82a36a2d9e9548c25e2fd85c9a2a086f9"
        );
        assert_eq!(id.issuer_key_hash, hashes.key_sha1);
        assert!(id.matches(&hashes));
        // openssl's nonce: an OCTET STRING of 16 bytes, kept whole.
        assert_eq!(
            sha1.nonce.as_deref().map(hex::encode).as_deref(),
            Some("041013e24c47edcf85b3c16533ce3395c16f")
        );

        let sha256 = parse_request(&unhex(SHA256_REQUEST)).unwrap();
        let id = &sha256.certs[0];
        assert_eq!(id.hash, CertIdHash::Sha256);
        assert_eq!(id.serial_hex(), FIXED_SERIAL);
        assert_eq!(id.issuer_name_hash, hashes.name_sha256);
        assert_eq!(id.issuer_key_hash, hashes.key_sha256);
        assert!(id.matches(&hashes));
        assert_eq!(sha256.nonce.as_ref().map(Vec::len), Some(18));

        // Another issuer's hashes do not match, in either algorithm.
        let mut other = hashes.clone();
        other.key_sha1[0] ^= 1;
        other.name_sha256[31] ^= 1;
        assert!(!sha1.certs[0].matches(&other));
        assert!(!sha256.certs[0].matches(&other));
    }

    #[test]
    fn issuer_hashes_are_over_the_name_and_the_key_bits() {
        let cert = unhex(CA_DER);
        let hashes = IssuerHashes::of_certificate(&cert).unwrap();
        // The subject Name and the 65-byte uncompressed point, found by hand.
        // Self-signed: the subject is the second copy of the Name.
        let name_at = CA_DER.rfind("30243110300e0603550403").unwrap();
        assert_eq!(name_at % 2, 0);
        let name = unhex(&CA_DER[name_at..name_at + 2 * 0x26]);
        assert!(name.starts_with(&[0x30, 0x24, 0x31, 0x10]));
        let key_at = CA_DER.find("0004b30dc4").unwrap() + 2;
        let key = unhex(&CA_DER[key_at..key_at + 130]);
        assert_eq!(hashes.name_sha1, sha1(&name));
        assert_eq!(hashes.name_sha256, <[u8; 32]>::from(Sha256::digest(&name)));
        assert_eq!(hashes.key_sha1, sha1(&key));
        assert_eq!(hashes.key_sha256, <[u8; 32]>::from(Sha256::digest(&key)));
        // The certificate's own subjectKeyIdentifier is the same SHA-1.
        assert_eq!(
            hex::encode(hashes.key_sha1),
            "ba80bb3fbc714bcacfe006155cea682f94e68364"
        );

        for bad in [
            &cert[..cert.len() - 1],
            &[cert.as_slice(), &[0]].concat(),
            &[][..],
        ] {
            assert!(matches!(
                IssuerHashes::of_certificate(bad),
                Err(OcspError::Certificate(_))
            ));
        }
    }

    #[test]
    fn refuses_what_is_not_a_v1_der_request() {
        let good = unhex(SHA1_REQUEST);
        let (tbs, content) = tbs_of(&good);
        assert_eq!(
            parse_request(&vec![0x30; MAX_REQUEST_LEN + 1]),
            Err(OcspError::TooLarge {
                len: MAX_REQUEST_LEN + 1,
                max: MAX_REQUEST_LEN
            })
        );
        assert!(matches!(parse_request(&[]), Err(OcspError::Der(_))));
        assert!(matches!(
            parse_request(&[good.as_slice(), &[0]].concat()),
            Err(OcspError::Der(_))
        ));
        // Long-form length where the short form fits.
        let mut long = vec![0x30, 0x81, good[1]];
        long.extend_from_slice(&good[2..]);
        assert!(matches!(parse_request(&long), Err(OcspError::Der(_))));
        // An explicit `version v1` is BER, an explicit v2 unsupported.
        let v1 = [tlv(0xa0, &[0x02, 0x01, 0x00]), content.clone()].concat();
        assert_eq!(
            parse_request(&with_tbs(&tlv(0x30, &v1), &[])),
            Err(OcspError::NotCanonical)
        );
        let v2 = [tlv(0xa0, &[0x02, 0x01, 0x01]), content.clone()].concat();
        assert_eq!(
            parse_request(&with_tbs(&tlv(0x30, &v2), &[])),
            Err(OcspError::UnsupportedVersion)
        );
        // An explicit `critical FALSE` is BER too.
        let mut ext = extension("1.2.3.4", false, &[5]).to_der().unwrap();
        let after_oid = 2 + 2 + usize::from(ext[3]);
        ext.splice(after_oid..after_oid, [0x01, 0x01, 0x00]);
        ext[1] += 3;
        let tbs_false = tlv(
            0x30,
            &[
                tlv(0x30, &tlv(0x30, &sha1_id().to_der().unwrap())),
                tlv(0xa2, &tlv(0x30, &ext)),
            ]
            .concat(),
        );
        assert_eq!(
            parse_request(&with_tbs(&tbs_false, &[])),
            Err(OcspError::NotCanonical)
        );
        // An ignored optionalSignature must still be a [0] SEQUENCE.
        let signature = tlv(0xa0, &tlv(0x30, &[0x05, 0x00]));
        assert!(parse_request(&with_tbs(&tbs, &signature)).is_ok());
        for bad in [
            tlv(0xa1, &tlv(0x30, &[])),
            tlv(0xa0, &[0x05, 0x00]),
            tlv(0xa0, &[]),
        ] {
            assert!(matches!(
                parse_request(&with_tbs(&tbs, &bad)),
                Err(OcspError::Der(_))
            ));
        }
        assert!(matches!(
            parse_request(&with_tbs(&tbs, &[signature.clone(), signature].concat())),
            Err(OcspError::Der(_))
        ));
    }

    #[test]
    fn counts_the_single_requests() {
        assert_eq!(
            parse_request(&request_der(vec![], None, None)),
            Err(OcspError::NoRequests)
        );
        let sixteen = parse_request(&request_der(vec![sha1_id(); MAX_CERTS], None, None)).unwrap();
        assert_eq!(sixteen.certs.len(), MAX_CERTS);
        assert_eq!(
            parse_request(&request_der(vec![sha1_id(); MAX_CERTS + 1], None, None)),
            Err(OcspError::TooManyRequests {
                count: MAX_CERTS + 1,
                max: MAX_CERTS
            })
        );
    }

    #[test]
    fn checks_each_cert_id() {
        let parse_id = |id| parse_request(&request_der(vec![id], None, None)).map(|r| r.certs);
        let serial = [0x02, 0x02, 0x12, 0x34];
        // Parameters absent, or NULL.
        let absent = parse_id(wire_id(SHA256, None, 32, &serial)).unwrap();
        assert_eq!(absent[0].hash, CertIdHash::Sha256);
        assert!(!absent[0].hash_params_null);
        assert_eq!(absent[0].serial, vec![0x12, 0x34]);
        let md5 = ObjectIdentifier::new_unwrap("1.2.840.113549.2.5");
        assert_eq!(
            parse_id(wire_id(md5, None, 16, &serial)),
            Err(OcspError::UnsupportedHash("1.2.840.113549.2.5".into()))
        );
        let octets = Any::new(Tag::OctetString, vec![]).unwrap();
        assert_eq!(
            parse_id(wire_id(SHA1, Some(octets), 20, &serial)),
            Err(OcspError::HashParameters)
        );
        assert_eq!(
            parse_id(wire_id(SHA256, None, 20, &serial)),
            Err(OcspError::HashLength {
                field: "issuerNameHash",
                len: 20,
                expected: 32
            })
        );
        let mut short_key = sha1_id();
        short_key.issuer_key_hash = OctetString::new(vec![1; 19]).unwrap();
        assert_eq!(
            parse_id(short_key),
            Err(OcspError::HashLength {
                field: "issuerKeyHash",
                len: 19,
                expected: 20
            })
        );
        // Serials: positive, at most 20 significant bytes.
        for bad in [
            &[0x02, 0x01, 0x00][..],
            &[0x02, 0x01, 0xff],
            &[0x02, 0x02, 0x80, 0x00],
        ] {
            assert_eq!(
                parse_id(wire_id(SHA1, None, 20, bad)),
                Err(OcspError::SerialNotPositive),
                "{bad:02x?}"
            );
        }
        let twenty_high = [&[0x02, 21, 0x00][..], &[0xff; 20]].concat();
        assert_eq!(
            parse_id(wire_id(SHA1, None, 20, &twenty_high)).unwrap()[0].serial,
            vec![0xff; 20]
        );
        let twenty_one = [&[0x02, 21, 0x01][..], &[0x00; 20]].concat();
        assert_eq!(
            parse_id(wire_id(SHA1, None, 20, &twenty_one)),
            Err(OcspError::SerialTooLong)
        );
        let one = parse_id(wire_id(SHA1, None, 20, &[0x02, 0x02, 0x00, 0x80])).unwrap();
        assert_eq!(
            (one[0].serial.clone(), one[0].serial_hex()),
            (vec![0x80], "80".into())
        );
    }

    #[test]
    fn reads_the_nonce_and_judges_other_extensions() {
        let parse = |single: Option<Vec<Extension>>, request: Option<Vec<Extension>>| {
            parse_request(&request_der(vec![sha1_id()], single, request))
        };
        let nonce = [0x04, 0x02, 0xab, 0xcd];
        let unknown = extension("1.3.6.1.5.5.7.48.1.4", false, &[0x30, 0x00]);
        let critical = extension("1.3.6.1.5.5.7.48.1.4", true, &[0x30, 0x00]);
        // Non-critical unknown extensions are ignored, anywhere.
        let got = parse(
            Some(vec![unknown.clone()]),
            Some(vec![unknown.clone(), nonce_extension(&nonce)]),
        )
        .unwrap();
        assert_eq!(got.nonce, Some(nonce.to_vec()));
        assert_eq!(
            parse(None, Some(vec![unknown.clone()])).unwrap().nonce,
            None
        );
        // A bare nonce (no inner OCTET STRING) is kept as it is, and a
        // critical nonce is understood.
        let mut critical_nonce = nonce_extension(&[1, 2, 3]);
        critical_nonce.critical = true;
        assert_eq!(
            parse(None, Some(vec![critical_nonce])).unwrap().nonce,
            Some(vec![1, 2, 3])
        );
        assert_eq!(
            parse(None, Some(vec![nonce_extension(&[7; MAX_NONCE_LEN])]))
                .unwrap()
                .nonce,
            Some(vec![7; MAX_NONCE_LEN])
        );
        for bad in [&[][..], &[7; MAX_NONCE_LEN + 1]] {
            assert_eq!(
                parse(None, Some(vec![nonce_extension(bad)])),
                Err(OcspError::BadNonce)
            );
        }
        let oid = "1.3.6.1.5.5.7.48.1.4".to_string();
        assert_eq!(
            parse(None, Some(vec![critical.clone()])),
            Err(OcspError::CriticalExtension(oid.clone()))
        );
        assert_eq!(
            parse(Some(vec![critical]), None),
            Err(OcspError::CriticalExtension(oid.clone()))
        );
        // A critical nonce is still refused where no nonce belongs.
        let mut single_nonce = nonce_extension(&nonce);
        single_nonce.critical = true;
        assert_eq!(
            parse(Some(vec![single_nonce]), None),
            Err(OcspError::CriticalExtension("1.3.6.1.5.5.7.48.1.2".into()))
        );
        assert_eq!(
            parse(
                None,
                Some(vec![nonce_extension(&nonce), nonce_extension(&nonce)])
            ),
            Err(OcspError::DuplicateExtension("1.3.6.1.5.5.7.48.1.2".into()))
        );
        assert_eq!(
            parse(Some(vec![unknown.clone(), unknown]), None),
            Err(OcspError::DuplicateExtension(oid))
        );
        assert_eq!(parse(None, Some(vec![])), Err(OcspError::EmptyExtensions));
        assert_eq!(parse(Some(vec![]), None), Err(OcspError::EmptyExtensions));
    }

    #[test]
    fn decodes_the_get_form() {
        // A request whose base64 has `+`, `/` and padding.
        let der = (0..9)
            .map(|k| {
                // `+++` and `///` at some alignment, then some length.
                let mut nonce = vec![0; k % 3];
                nonce.extend([0xfb, 0xef, 0xbe, 0xff, 0xff, 0xff]);
                nonce.extend(vec![0; k / 3]);
                request_der(vec![sha1_id()], None, Some(vec![nonce_extension(&nonce)]))
            })
            .find(|der| {
                let b64 = STANDARD.encode(der);
                b64.contains('+') && b64.contains('/') && b64.ends_with('=')
            })
            .unwrap();
        let padded = STANDARD.encode(&der);
        let escaped = padded
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        for segment in [
            padded.clone(),
            padded.trim_end_matches('=').to_string(),
            escaped.clone(),
            padded.replacen('/', "%2f", 1),
        ] {
            assert_eq!(
                decode_get_path_segment(&segment).as_ref(),
                Ok(&der),
                "{segment}"
            );
        }
        assert_eq!(
            decode_get_path_segment(&escaped.replace("%2B", "%2b").replace("%3D", "%3d")).as_ref(),
            Ok(&der)
        );
        for (bad, err) in [
            ("MEIw%", OcspError::PercentEncoding),
            ("MEIw%4", OcspError::PercentEncoding),
            ("MEIw%G1", OcspError::PercentEncoding),
            ("ME%20Iw", OcspError::Base64),
            ("ME*w", OcspError::Base64),
            ("MEJ", OcspError::Base64),   // non-zero trailing bits
            ("MEIwA", OcspError::Base64), // one character too many
            ("ME==Iw", OcspError::Base64),
        ] {
            assert_eq!(decode_get_path_segment(bad), Err(err), "{bad}");
        }
        let long = "A".repeat(MAX_GET_SEGMENT_LEN + 1);
        assert_eq!(
            decode_get_path_segment(&long),
            Err(OcspError::SegmentTooLong {
                len: MAX_GET_SEGMENT_LEN + 1,
                max: MAX_GET_SEGMENT_LEN
            })
        );
        assert_eq!(
            decode_get_path_segment(&STANDARD.encode(vec![0; MAX_REQUEST_LEN + 1])),
            Err(OcspError::TooLarge {
                len: MAX_REQUEST_LEN + 1,
                max: MAX_REQUEST_LEN
            })
        );
        assert_eq!(
            decode_get_path_segment(&STANDARD.encode(vec![0; MAX_REQUEST_LEN])).map(|d| d.len()),
            Ok(MAX_REQUEST_LEN)
        );
    }

    /// A response built with a fake signer, taken apart again.
    fn build_and_read(
        params: &ResponseParams<'_>,
        alg: SignatureAlgorithm,
    ) -> (Vec<u8>, x509_ocsp::BasicOcspResponse) {
        let mut signed = Vec::new();
        let der = build_response(params, alg, |tbs| {
            signed = tbs.to_vec();
            Ok::<_, ()>(vec![0x5a; 8])
        })
        .unwrap();
        let response = x509_ocsp::OcspResponse::from_der(&der).unwrap();
        assert_eq!(
            response.response_status,
            x509_ocsp::OcspResponseStatus::Successful
        );
        let bytes = response.response_bytes.unwrap();
        assert_eq!(bytes.response_type.to_string(), "1.3.6.1.5.5.7.48.1.1");
        let basic = x509_ocsp::BasicOcspResponse::from_der(bytes.response.as_bytes()).unwrap();
        assert_eq!(basic.tbs_response_data.to_der().unwrap(), signed);
        assert_eq!(basic.signature.raw_bytes(), &[0x5a; 8]);
        (signed, basic)
    }

    #[test]
    fn builds_what_was_asked_and_echoes_cert_ids() {
        let request = unhex(SHA1_REQUEST);
        let parsed = parse_request(&request).unwrap();
        // SHA-256 without parameters, a serial with a sign byte.
        let absent_request = request_der(
            vec![wire_id(SHA256, None, 32, &[0x02, 0x02, 0x00, 0xff])],
            None,
            None,
        );
        let absent = parse_request(&absent_request).unwrap();
        let key_hash = [0x42; 20];
        let answers = [
            (parsed.certs[0].clone(), CertStatus::Good),
            (
                absent.certs[0].clone(),
                CertStatus::Revoked {
                    time: 1_700_000_000,
                    reason: Some(1),
                },
            ),
            (
                parsed.certs[0].clone(),
                CertStatus::Revoked {
                    time: 1_600_000_000,
                    reason: None,
                },
            ),
            (absent.certs[0].clone(), CertStatus::Unknown),
        ];
        let params = ResponseParams {
            responder_key_hash: &key_hash,
            answers: &answers,
            produced_at: 1_700_000_100,
            this_update: 1_700_000_000,
            next_update: 1_700_003_600,
            nonce: parsed.nonce.as_deref(),
        };
        let (tbs, basic) = build_and_read(&params, SignatureAlgorithm::EcdsaSha256);
        // version omitted: the first field is the responderID [2] byKey.
        let fields = AnyRef::from_der(&tbs).unwrap().value();
        assert_eq!(&fields[..4], &[0xa2, 0x16, 0x04, 0x14]);
        let data = &basic.tbs_response_data;
        assert_eq!(
            data.responder_id,
            x509_ocsp::ResponderId::ByKey(OctetString::new(key_hash.to_vec()).unwrap())
        );
        assert_eq!(
            data.produced_at.0.to_unix_duration().as_secs(),
            1_700_000_100
        );
        assert!(basic.certs.is_none());
        // The CertIDs are the requested ones, byte for byte.
        let ids: Vec<Vec<u8>> = data
            .responses
            .iter()
            .map(|r| r.cert_id.to_der().unwrap())
            .collect();
        let contains =
            |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
        assert!(contains(&request, &ids[0]) && ids[2] == ids[0]);
        assert!(contains(&absent_request, &ids[1]) && ids[3] == ids[1]);
        assert_eq!(ids[1][2..4], [0x30, 0x0b], "no parameters: {:02x?}", ids[1]);
        let statuses: Vec<_> = data.responses.iter().map(|r| r.cert_status).collect();
        assert_eq!(statuses[0], x509_ocsp::CertStatus::good());
        assert_eq!(statuses[3], x509_ocsp::CertStatus::unknown());
        let x509_ocsp::CertStatus::Revoked(info) = statuses[1] else {
            panic!("not revoked: {:?}", statuses[1]);
        };
        assert_eq!(
            info.revocation_time.0.to_unix_duration().as_secs(),
            1_700_000_000
        );
        assert_eq!(info.revocation_reason, Some(CrlReason::KeyCompromise));
        let x509_ocsp::CertStatus::Revoked(info) = statuses[2] else {
            panic!("not revoked: {:?}", statuses[2]);
        };
        assert_eq!(info.revocation_reason, None);
        for single in &data.responses {
            assert_eq!(
                single.this_update.0.to_unix_duration().as_secs(),
                1_700_000_000
            );
            assert_eq!(
                single.next_update.map(|t| t.0.to_unix_duration().as_secs()),
                Some(1_700_003_600)
            );
            assert!(single.single_extensions.is_none());
        }
        // The nonce is echoed exactly, not critical.
        let extensions = data.response_extensions.as_ref().unwrap();
        assert_eq!(extensions.len(), 1);
        assert_eq!(extensions[0].extn_id, NONCE);
        assert!(!extensions[0].critical);
        assert_eq!(
            Some(extensions[0].extn_value.as_bytes()),
            parsed.nonce.as_deref()
        );
        // No nonce asked, none given.
        let (_, basic) = build_and_read(
            &ResponseParams {
                nonce: None,
                ..params
            },
            SignatureAlgorithm::EcdsaSha256,
        );
        assert!(basic.tbs_response_data.response_extensions.is_none());
    }

    #[test]
    fn names_the_signature_algorithm() {
        let key_hash = [0; 20];
        let answers = [(
            parse_request(&unhex(SHA1_REQUEST)).unwrap().certs[0].clone(),
            CertStatus::Good,
        )];
        let params = ResponseParams {
            responder_key_hash: &key_hash,
            answers: &answers,
            produced_at: 0,
            this_update: 0,
            next_update: 0,
            nonce: None,
        };
        for (alg, oid, params_der) in [
            (SignatureAlgorithm::EcdsaSha256, "1.2.840.10045.4.3.2", None),
            (SignatureAlgorithm::EcdsaSha384, "1.2.840.10045.4.3.3", None),
            (
                SignatureAlgorithm::RsaPkcs1Sha256,
                "1.2.840.113549.1.1.11",
                Some(vec![0x05, 0x00]),
            ),
        ] {
            let (_, basic) = build_and_read(&params, alg);
            assert_eq!(basic.signature_algorithm.oid.to_string(), oid);
            assert_eq!(
                basic
                    .signature_algorithm
                    .parameters
                    .map(|p| p.to_der().unwrap()),
                params_der
            );
        }
    }

    #[test]
    fn refuses_to_build_from_bad_input_and_passes_the_signer_error_on() {
        let key_hash = [0; 20];
        let id = parse_request(&unhex(SHA1_REQUEST)).unwrap().certs[0].clone();
        let good = [(id.clone(), CertStatus::Good)];
        let params = ResponseParams {
            responder_key_hash: &key_hash,
            answers: &good,
            produced_at: 10,
            this_update: 10,
            next_update: 20,
            nonce: None,
        };
        let build = |params: &ResponseParams<'_>| {
            build_response(
                params,
                SignatureAlgorithm::EcdsaSha256,
                |_| -> Result<Vec<u8>, &str> { panic!("signed bad input") },
            )
        };
        assert!(matches!(
            build(&ResponseParams {
                answers: &[],
                ..params
            }),
            Err(BuildError::NoAnswers)
        ));
        assert!(matches!(
            build(&ResponseParams {
                produced_at: -1,
                ..params
            }),
            Err(BuildError::TimeOutOfRange(-1))
        ));
        assert!(matches!(
            build(&ResponseParams {
                this_update: 253_402_300_800,
                next_update: 253_402_300_800,
                ..params
            }),
            Err(BuildError::TimeOutOfRange(253_402_300_800))
        ));
        assert!(matches!(
            build(&ResponseParams {
                next_update: 9,
                ..params
            }),
            Err(BuildError::NextUpdateBeforeThisUpdate)
        ));
        for reason in [7, 11, 255] {
            let answers = [(
                id.clone(),
                CertStatus::Revoked {
                    time: 5,
                    reason: Some(reason),
                },
            )];
            assert!(
                matches!(build(&ResponseParams { answers: &answers, ..params }), Err(BuildError::BadReason(r)) if r == reason)
            );
        }
        let answers = [(
            id.clone(),
            CertStatus::Revoked {
                time: i64::MIN,
                reason: None,
            },
        )];
        assert!(matches!(
            build(&ResponseParams {
                answers: &answers,
                ..params
            }),
            Err(BuildError::TimeOutOfRange(i64::MIN))
        ));
        for serial in [vec![], vec![0, 0], vec![1; 21]] {
            let answers = [(
                CertId {
                    serial,
                    ..id.clone()
                },
                CertStatus::Good,
            )];
            assert!(matches!(
                build(&ResponseParams {
                    answers: &answers,
                    ..params
                }),
                Err(BuildError::BadSerial)
            ));
        }
        // Leading zeros in a hand-made CertId are dropped, as DER wants.
        let answers = [(
            CertId {
                serial: vec![0, 0, 0x80],
                ..id.clone()
            },
            CertStatus::Good,
        )];
        let (_, basic) = build_and_read(
            &ResponseParams {
                answers: &answers,
                ..params
            },
            SignatureAlgorithm::EcdsaSha256,
        );
        assert_eq!(
            basic.tbs_response_data.responses[0]
                .cert_id
                .serial_number
                .as_bytes(),
            &[0x00, 0x80]
        );
        // The signer's error comes back as it was.
        let err = build_response(&params, SignatureAlgorithm::EcdsaSha256, |_| {
            Err("token gone")
        });
        assert!(matches!(err, Err(BuildError::Sign("token gone"))));
        assert_eq!(
            err.unwrap_err().to_string(),
            "signing the OCSP response failed: token gone"
        );
    }

    #[test]
    fn error_responses_carry_the_status_only() {
        for (status, expected) in [
            (
                ResponseStatus::MalformedRequest,
                x509_ocsp::OcspResponse::malformed_request(),
            ),
            (
                ResponseStatus::InternalError,
                x509_ocsp::OcspResponse::internal_error(),
            ),
            (
                ResponseStatus::TryLater,
                x509_ocsp::OcspResponse::try_later(),
            ),
            (
                ResponseStatus::Unauthorized,
                x509_ocsp::OcspResponse::unauthorized(),
            ),
        ] {
            assert_eq!(error_response(status), expected.to_der().unwrap());
        }
    }

    /// Mutations of `der`: every prefix, and every byte set to a few
    /// values and to a few changes of itself.
    fn mutations(der: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
        let prefixes = (0..der.len()).map(|n| der[..n].to_vec());
        let bytes = (0..der.len()).flat_map(move |i| {
            let b = der[i];
            [
                0x00,
                0x01,
                0x02,
                0x04,
                0x05,
                0x30,
                0x7f,
                0x80,
                0x81,
                0x82,
                0xa0,
                0xff,
                b ^ 0x01,
                b ^ 0x80,
                b.wrapping_add(1),
                b.wrapping_sub(1),
            ]
            .into_iter()
            .filter(move |&v| v != b)
            .map(move |v| {
                let mut m = der.to_vec();
                m[i] = v;
                m
            })
        });
        prefixes.chain(bytes)
    }

    #[test]
    fn never_panics_on_mutated_input() {
        let signed = {
            let der = unhex(SHA1_REQUEST);
            let (tbs, _) = tbs_of(&der);
            with_tbs(
                &tbs,
                &tlv(0xa0, &tlv(0x30, &[0x30, 0x00, 0x03, 0x01, 0x00])),
            )
        };
        let extended = request_der(
            vec![sha1_id(), wire_id(SHA256, None, 32, &[0x02, 0x01, 0x7f])],
            Some(vec![extension("1.2.3.4", false, &[1])]),
            Some(vec![
                nonce_extension(&[0x04, 0x01, 0x09]),
                extension("1.2.3.5", false, &[]),
            ]),
        );
        let key_hash = [0; 20];
        let (mut ok, mut refused) = (0usize, 0usize);
        for valid in [unhex(SHA1_REQUEST), unhex(SHA256_REQUEST), signed, extended] {
            assert!(parse_request(&valid).is_ok(), "{:?}", parse_request(&valid));
            for input in mutations(&valid) {
                match parse_request(&input) {
                    Ok(request) => {
                        ok += 1;
                        // Whatever parses can be answered.
                        let answers: Vec<_> = request
                            .certs
                            .iter()
                            .map(|c| (c.clone(), CertStatus::Good))
                            .collect();
                        let params = ResponseParams {
                            responder_key_hash: &key_hash,
                            answers: &answers,
                            produced_at: 1,
                            this_update: 1,
                            next_update: 2,
                            nonce: request.nonce.as_deref(),
                        };
                        build_and_read(&params, SignatureAlgorithm::EcdsaSha256);
                    }
                    Err(_) => refused += 1,
                }
                let _ = decode_get_path_segment(&STANDARD.encode(&input));
            }
        }
        assert!(refused > 0 && ok > 0, "ok {ok}, refused {refused}");
        let cert = unhex(CA_DER);
        for input in mutations(&cert) {
            let _ = IssuerHashes::of_certificate(&input);
        }
        for input in mutations(b"MHYwdDBNMEswSTAJBgUrDgMCGgUABBQTnkPIKjai2elUjCXi%2FYXJoqCG%2BQQUuoC7P7xxS8rP4AYVXOpoL5Tmg2QCEHoBAgMEBQYHCAkKCwwNDg%2Bi%3D") {
            if let Ok(s) = std::str::from_utf8(&input) {
                let _ = decode_get_path_segment(s);
            }
        }
    }

    // ---- against the openssl binary ----

    fn openssl_missing(test: &str) -> bool {
        let found = Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            eprintln!("openssl is not on PATH: skipping {test}");
        }
        !found
    }

    fn run(dir: &Path, args: &[&str]) -> Output {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl")
    }

    /// Runs openssl, which must succeed; its stdout and stderr.
    fn openssl(dir: &Path, args: &[&str]) -> (String, String) {
        let out = run(dir, args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "openssl {args:?} failed:\n{stdout}\n{stderr}"
        );
        (stdout, stderr)
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum KeyKind {
        P256,
        P384,
        Rsa2048,
    }

    /// A root, an issuing CA (the responder) with a key of `kind`, and two
    /// leaves with Trellis-like serials, in a temporary directory.
    struct Pki {
        dir: tempfile::TempDir,
        kind: KeyKind,
    }

    const LEAF1_SERIAL: &str = "7a0102030405060708090a0b0c0d0e0f";
    const LEAF2_SERIAL: &str = "1f2e3d4c5b6a79880123456789abcdef";

    impl Pki {
        fn new(kind: KeyKind) -> Pki {
            let dir = tempfile::tempdir().unwrap();
            let pki = Pki { dir, kind };
            let ec = |curve: &'static str| vec!["-newkey", "ec", "-pkeyopt", curve];
            let ca_key = match kind {
                KeyKind::P256 => ec("ec_paramgen_curve:P-256"),
                KeyKind::P384 => ec("ec_paramgen_curve:P-384"),
                KeyKind::Rsa2048 => vec!["-newkey", "rsa:2048"],
            };
            let p256 = ec("ec_paramgen_curve:P-256");
            pki.openssl(
                &[
                    &[
                        "req",
                        "-x509",
                        "-nodes",
                        "-keyout",
                        "root.key",
                        "-out",
                        "root.pem",
                        "-days",
                        "2",
                        "-subj",
                        "/CN=Trellis Test Root",
                    ][..],
                    &p256,
                    &[
                        "-addext",
                        "basicConstraints=critical,CA:TRUE",
                        "-addext",
                        "keyUsage=critical,keyCertSign,cRLSign",
                    ],
                ]
                .concat(),
            );
            pki.openssl(
                &[
                    &[
                        "req",
                        "-new",
                        "-nodes",
                        "-keyout",
                        "ca.key",
                        "-out",
                        "ca.csr",
                        "-subj",
                        "/O=Trellis/CN=Trellis db CA",
                    ][..],
                    &ca_key,
                    &[
                        "-addext",
                        "basicConstraints=critical,CA:TRUE,pathlen:0",
                        "-addext",
                        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
                    ],
                ]
                .concat(),
            );
            pki.openssl(&[
                "x509",
                "-req",
                "-in",
                "ca.csr",
                "-CA",
                "root.pem",
                "-CAkey",
                "root.key",
                "-copy_extensions",
                "copyall",
                "-days",
                "2",
                "-set_serial",
                "0x41",
                "-out",
                "ca.pem",
            ]);
            pki.openssl(&["x509", "-in", "ca.pem", "-outform", "DER", "-out", "ca.der"]);
            pki.openssl(&[
                "pkcs8", "-topk8", "-nocrypt", "-in", "ca.key", "-outform", "DER", "-out", "ca.p8",
            ]);
            for (leaf, serial) in [("leaf1", LEAF1_SERIAL), ("leaf2", LEAF2_SERIAL)] {
                let (key, csr, pem) = (
                    format!("{leaf}.key"),
                    format!("{leaf}.csr"),
                    format!("{leaf}.pem"),
                );
                pki.openssl(
                    &[
                        &[
                            "req",
                            "-new",
                            "-nodes",
                            "-keyout",
                            &key,
                            "-out",
                            &csr,
                            "-subj",
                            &format!("/CN={leaf}"),
                        ][..],
                        &p256,
                    ]
                    .concat(),
                );
                pki.openssl(&[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-days",
                    "1",
                    "-set_serial",
                    &format!("0x{serial}"),
                    "-out",
                    &pem,
                ]);
            }
            pki
        }

        fn openssl(&self, args: &[&str]) -> (String, String) {
            openssl(self.dir.path(), args)
        }

        fn run(&self, args: &[&str]) -> Output {
            run(self.dir.path(), args)
        }

        fn read(&self, name: &str) -> Vec<u8> {
            std::fs::read(self.dir.path().join(name)).unwrap()
        }

        fn write(&self, name: &str, bytes: &[u8]) {
            std::fs::write(self.dir.path().join(name), bytes).unwrap();
        }

        fn hashes(&self) -> IssuerHashes {
            IssuerHashes::of_certificate(&self.read("ca.der")).unwrap()
        }

        fn alg(&self) -> SignatureAlgorithm {
            match self.kind {
                KeyKind::P256 => SignatureAlgorithm::EcdsaSha256,
                KeyKind::P384 => SignatureAlgorithm::EcdsaSha384,
                KeyKind::Rsa2048 => SignatureAlgorithm::RsaPkcs1Sha256,
            }
        }

        /// Signs as the HSM would: DER ECDSA, or the PKCS#1 v1.5 block.
        fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, ring::error::Unspecified> {
            let rng = SystemRandom::new();
            let pkcs8 = self.read("ca.p8");
            let ecdsa = |alg| -> Result<Vec<u8>, ring::error::Unspecified> {
                let key = EcdsaKeyPair::from_pkcs8(alg, &pkcs8, &rng)
                    .map_err(|_| ring::error::Unspecified)?;
                Ok(key.sign(&rng, tbs)?.as_ref().to_vec())
            };
            match self.kind {
                KeyKind::P256 => ecdsa(&ECDSA_P256_SHA256_ASN1_SIGNING),
                KeyKind::P384 => ecdsa(&ECDSA_P384_SHA384_ASN1_SIGNING),
                KeyKind::Rsa2048 => {
                    let key =
                        RsaKeyPair::from_pkcs8(&pkcs8).map_err(|_| ring::error::Unspecified)?;
                    let mut signature = vec![0; key.public().modulus_len()];
                    key.sign(&RSA_PKCS1_SHA256, &rng, tbs, &mut signature)?;
                    Ok(signature)
                }
            }
        }

        /// Builds, signs and writes `name`: answers for the request, as now.
        fn respond(
            &self,
            name: &str,
            answers: &[(CertId, CertStatus)],
            nonce: Option<&[u8]>,
        ) -> Vec<u8> {
            let now = now();
            let key_hash = self.hashes().key_sha1;
            let params = ResponseParams {
                responder_key_hash: &key_hash,
                answers,
                produced_at: now,
                this_update: now - 60,
                next_update: now + 3600,
                nonce,
            };
            let der = build_response(&params, self.alg(), |tbs| self.sign(tbs)).unwrap();
            self.write(name, &der);
            der
        }

        /// `openssl ocsp` reading response `resp` as a client would: it
        /// trusts the root only, and finds the responder (the issuing CA,
        /// not in the response) by its key hash among the `-issuer`
        /// certificates that `extra` names.
        fn check(&self, resp: &str, extra: &[&str]) -> Output {
            self.run(&[&["ocsp", "-respin", resp, "-CAfile", "root.pem"][..], extra].concat())
        }
    }

    fn text(out: &Output) -> (String, String) {
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[test]
    fn parses_requests_openssl_makes() {
        if openssl_missing("parses_requests_openssl_makes") {
            return;
        }
        let pki = Pki::new(KeyKind::P256);
        let hashes = pki.hashes();
        let root = IssuerHashes::of_certificate(&{
            pki.openssl(&[
                "x509", "-in", "root.pem", "-outform", "DER", "-out", "root.der",
            ]);
            pki.read("root.der")
        })
        .unwrap();
        for (flags, hash, with_nonce) in [
            (&[][..], CertIdHash::Sha1, true),
            (&["-no_nonce"][..], CertIdHash::Sha1, false),
            (&["-sha256"][..], CertIdHash::Sha256, true),
        ] {
            let (req_text, _) = pki.openssl(
                &[
                    &["ocsp"][..],
                    flags,
                    &[
                        "-issuer",
                        "ca.pem",
                        "-cert",
                        "leaf1.pem",
                        "-cert",
                        "leaf2.pem",
                        "-reqout",
                        "req.der",
                        "-req_text",
                    ][..],
                ]
                .concat(),
            );
            let der = pki.read("req.der");
            let request = parse_request(&der).unwrap();
            assert_eq!(request.certs.len(), 2, "{flags:?}");
            for (id, serial) in request.certs.iter().zip([LEAF1_SERIAL, LEAF2_SERIAL]) {
                assert_eq!(id.hash, hash);
                assert_eq!(id.serial_hex(), serial);
                assert!(id.matches(&hashes), "{flags:?}");
                assert!(!id.matches(&root), "{flags:?}");
                // openssl prints the hashes it computed itself.
                let upper = |b: &[u8]| hex::encode_upper(b);
                assert!(req_text.contains(&format!(
                    "Issuer Name Hash: {}",
                    upper(&id.issuer_name_hash)
                )));
                assert!(
                    req_text.contains(&format!("Issuer Key Hash: {}", upper(&id.issuer_key_hash)))
                );
                assert!(req_text.contains(&format!("Serial Number: {}", serial.to_uppercase())));
            }
            match &request.nonce {
                Some(nonce) => {
                    assert!(with_nonce);
                    assert!(req_text.contains(&hex::encode_upper(nonce)), "{req_text}");
                }
                None => assert!(!with_nonce && !req_text.contains("Nonce")),
            }
            // The GET form of the same request.
            let segment = STANDARD
                .encode(&der)
                .replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D");
            assert_eq!(decode_get_path_segment(&segment).as_ref(), Ok(&der));
        }
        // The serial openssl reports for the leaf is the one we read.
        let (serial, _) = pki.openssl(&["x509", "-in", "leaf1.pem", "-noout", "-serial"]);
        assert_eq!(
            serial.trim(),
            format!("serial={}", LEAF1_SERIAL.to_uppercase())
        );
    }

    /// openssl verifies responses signed by the issuing CA's key, finds
    /// good, revoked (with its reason and time) and unknown answers for the
    /// certificates, and checks the echoed nonce.
    fn openssl_verifies(kind: KeyKind) {
        let pki = Pki::new(kind);
        let hashes = pki.hashes();
        for (flags, hash) in [
            (&[][..], CertIdHash::Sha1),
            (&["-sha256"][..], CertIdHash::Sha256),
        ] {
            pki.openssl(
                &[
                    &["ocsp"][..],
                    flags,
                    &[
                        "-issuer",
                        "ca.pem",
                        "-cert",
                        "leaf1.pem",
                        "-cert",
                        "leaf2.pem",
                        "-reqout",
                        "req.der",
                    ][..],
                ]
                .concat(),
            );
            let request = parse_request(&pki.read("req.der")).unwrap();
            assert!(request
                .certs
                .iter()
                .all(|c| c.hash == hash && c.matches(&hashes)));
            let nonce = request.nonce.as_deref();
            assert!(nonce.is_some());
            let answers = [
                (request.certs[0].clone(), CertStatus::Good),
                (
                    request.certs[1].clone(),
                    CertStatus::Revoked {
                        time: 1_700_000_000,
                        reason: Some(1),
                    },
                ),
            ];
            pki.respond("resp.der", &answers, nonce);

            // Signature, responder and nonce, against the request itself.
            let out = pki.check("resp.der", &["-issuer", "ca.pem", "-reqin", "req.der"]);
            let (stdout, stderr) = text(&out);
            assert!(
                out.status.success(),
                "{kind:?} {flags:?}:\n{stdout}\n{stderr}"
            );
            assert!(stderr.contains("Response verify OK"), "{stderr}");
            assert!(!stderr.contains("WARNING"), "{stderr}");

            // The statuses, looked up by CertIDs openssl makes itself.
            let status_args = |text: bool| {
                // The digest must come before the certificates.
                let mut args = flags.to_vec();
                args.extend([
                    "-issuer",
                    "ca.pem",
                    "-cert",
                    "leaf1.pem",
                    "-cert",
                    "leaf2.pem",
                    "-no_nonce",
                ]);
                if text {
                    args.push("-resp_text");
                }
                args
            };
            let out = pki.check("resp.der", &status_args(true));
            let (stdout, stderr) = text(&out);
            assert!(
                out.status.success() && stderr.contains("Response verify OK"),
                "{stdout}\n{stderr}"
            );
            assert!(stdout.contains("leaf1.pem: good"), "{stdout}");
            assert!(stdout.contains("leaf2.pem: revoked"), "{stdout}");
            assert!(stdout.contains("Reason: keyCompromise"), "{stdout}");
            assert!(
                stdout.contains("Revocation Time: Nov 14 22:13:20 2023 GMT"),
                "{stdout}"
            );
            assert!(
                stdout.contains(&format!(
                    "Responder Id: {}",
                    hex::encode_upper(hashes.key_sha1)
                )),
                "{stdout}"
            );
            assert!(
                stdout.contains(&hex::encode_upper(nonce.unwrap())),
                "{stdout}"
            );
            assert!(
                !stdout.contains("Certificate:"),
                "no certs expected:\n{stdout}"
            );

            // Unknown.
            pki.respond(
                "unknown.der",
                &[(request.certs[0].clone(), CertStatus::Unknown)],
                None,
            );
            let out = pki.check(
                "unknown.der",
                &[
                    flags,
                    &["-issuer", "ca.pem", "-cert", "leaf1.pem", "-no_nonce"],
                ]
                .concat(),
            );
            let (stdout, stderr) = text(&out);
            assert!(
                out.status.success() && stderr.contains("Response verify OK"),
                "{stdout}\n{stderr}"
            );
            assert!(stdout.contains("leaf1.pem: unknown"), "{stdout}");
        }

        // Nonce checks: missing, and different.
        pki.openssl(&[
            "ocsp",
            "-issuer",
            "ca.pem",
            "-cert",
            "leaf1.pem",
            "-reqout",
            "req.der",
        ]);
        let request = parse_request(&pki.read("req.der")).unwrap();
        let answers = [(request.certs[0].clone(), CertStatus::Good)];
        pki.respond("no-nonce.der", &answers, None);
        let (_, stderr) =
            text(&pki.check("no-nonce.der", &["-issuer", "ca.pem", "-reqin", "req.der"]));
        assert!(stderr.contains("WARNING: no nonce in response"), "{stderr}");
        let mut other = request.nonce.clone().unwrap();
        *other.last_mut().unwrap() ^= 1;
        pki.respond("other-nonce.der", &answers, Some(&other));
        let out = pki.check(
            "other-nonce.der",
            &["-issuer", "ca.pem", "-reqin", "req.der"],
        );
        let (_, stderr) = text(&out);
        assert!(
            !out.status.success() && stderr.contains("Nonce Verify error"),
            "{stderr}"
        );

        // A response whose signature was tampered with does not verify.
        let mut der = pki.respond("good.der", &answers, request.nonce.as_deref());
        let (_, stderr) = text(&pki.check("good.der", &["-issuer", "ca.pem", "-reqin", "req.der"]));
        assert!(stderr.contains("Response verify OK"), "{stderr}");
        let last = der.len() - 3;
        der[last] ^= 0x01;
        pki.write("bad.der", &der);
        let out = pki.check("bad.der", &["-issuer", "ca.pem", "-reqin", "req.der"]);
        let (_, stderr) = text(&out);
        assert!(
            !out.status.success() && !stderr.contains("Response verify OK"),
            "{stderr}"
        );
    }

    #[test]
    fn openssl_verifies_p256_responses() {
        if !openssl_missing("openssl_verifies_p256_responses") {
            openssl_verifies(KeyKind::P256);
        }
    }

    #[test]
    fn openssl_verifies_p384_responses() {
        if !openssl_missing("openssl_verifies_p384_responses") {
            openssl_verifies(KeyKind::P384);
        }
    }

    #[test]
    fn openssl_verifies_rsa_responses() {
        if !openssl_missing("openssl_verifies_rsa_responses") {
            openssl_verifies(KeyKind::Rsa2048);
        }
    }

    #[test]
    fn openssl_reads_error_responses() {
        if openssl_missing("openssl_reads_error_responses") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        for (status, name) in [
            (ResponseStatus::MalformedRequest, "malformedrequest (1)"),
            (ResponseStatus::InternalError, "internalerror (2)"),
            (ResponseStatus::TryLater, "trylater (3)"),
            (ResponseStatus::Unauthorized, "unauthorized (6)"),
        ] {
            std::fs::write(dir.path().join("err.der"), error_response(status)).unwrap();
            let out = run(dir.path(), &["ocsp", "-respin", "err.der", "-resp_text"]);
            let (stdout, stderr) = text(&out);
            assert!(
                stdout.contains(&format!("Responder Error: {name}"))
                    || stderr.contains(&format!("Responder Error: {name}")),
                "{stdout}\n{stderr}"
            );
        }
    }
}
