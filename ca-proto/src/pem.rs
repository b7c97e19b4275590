//! PEM text (RFC 7468) of the DER objects Trellis exchanges: certificates,
//! certificate requests and public keys. The one PEM encoder and decoder of
//! the workspace; server, sidecar and log verifiers all use it.
//!
//! - [`encode`] / [`encode_all`]: label + DER → `-----BEGIN …-----`, 64
//!   base64 characters a line, `\n` line ends, a final newline.
//! - [`decode_all`]: every block of one label (at least one);
//!   [`decode_one`]: exactly one block of the label; [`decode_first`]: the
//!   first block, the rest not read (files Trellis wrote itself, and CSR
//!   input, where the first block has always been the one used).
//!
//! Decoding is `rustls_pki_types::pem`'s line-based reader: text outside
//! blocks and blocks of other labels are skipped, CRLF line ends and
//! whitespace inside the base64 are accepted, padding is optional. Blocks of
//! labels that reader knows (`CERTIFICATE`, `PUBLIC KEY`, `CERTIFICATE
//! REQUEST`, private keys, CRLs) are base64-decoded whatever the wanted
//! label, so a corrupt block of any of them makes the text malformed. Every
//! decode is bounded by [`Limits`]: the text's length is checked before
//! anything is read, then the number of blocks and each block's DER length.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rustls_pki_types::pem::{self as pki_pem, PemObject, SectionKind};
use thiserror::Error;

/// The PEM labels Trellis reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// `CERTIFICATE`: an X.509 certificate.
    Certificate,
    /// `CERTIFICATE REQUEST`: a PKCS#10 CSR.
    CertificateRequest,
    /// `PUBLIC KEY`: a SubjectPublicKeyInfo.
    PublicKey,
    /// `X509 CRL`: a certificate revocation list.
    Crl,
}

impl Label {
    /// The label as written between `BEGIN ` and the dashes.
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Certificate => "CERTIFICATE",
            Label::CertificateRequest => "CERTIFICATE REQUEST",
            Label::PublicKey => "PUBLIC KEY",
            Label::Crl => "X509 CRL",
        }
    }

    fn kind(self) -> SectionKind {
        match self {
            Label::Certificate => SectionKind::Certificate,
            Label::CertificateRequest => SectionKind::Csr,
            Label::PublicKey => SectionKind::PublicKey,
            Label::Crl => SectionKind::Crl,
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bounds of one decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted text, in bytes; checked before anything is parsed.
    pub text_bytes: usize,
    /// Most blocks of the wanted label.
    pub blocks: usize,
    /// Largest DER of one block of the wanted label, in bytes.
    pub der_bytes: usize,
}

impl Limits {
    /// Roomy enough for any trust bundle a host has (a system CA bundle is
    /// about 150 certificates, 220 KB): 16 MiB of text, 4096 blocks, 1 MiB
    /// a block. Callers that know their input tighten these.
    pub const DEFAULT: Limits = Limits {
        text_bytes: 16 << 20,
        blocks: 4096,
        der_bytes: 1 << 20,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Why PEM text was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PemError {
    /// The text is longer than [`Limits::text_bytes`].
    #[error("PEM text is {len} bytes, more than the {max} accepted")]
    TextTooLarge {
        /// Length of the text.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// No block of the wanted label.
    #[error("no {0} PEM block")]
    Missing(Label),
    /// More than one block where exactly one is wanted.
    #[error("more than one {0} PEM block")]
    MoreThanOne(Label),
    /// More blocks of the label than [`Limits::blocks`].
    #[error("more than {max} {label} PEM blocks")]
    TooManyBlocks {
        /// The wanted label.
        label: Label,
        /// The limit.
        max: usize,
    },
    /// A block's DER is longer than [`Limits::der_bytes`].
    #[error("a {label} PEM block holds {len} bytes, more than the {max} accepted")]
    BlockTooLarge {
        /// The wanted label.
        label: Label,
        /// DER length of the block.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A `BEGIN` line without its `END` line; the label as found (escaped,
    /// at most 40 characters).
    #[error("PEM block {0} has no END line")]
    Unterminated(String),
    /// A `-----BEGIN` line that does not end in five dashes.
    #[error("malformed PEM BEGIN line")]
    BadBeginLine,
    /// A block's body is not base64.
    #[error("PEM block is not valid base64")]
    Base64,
    /// Anything else the PEM reader refused.
    #[error("malformed PEM: {0}")]
    Malformed(String),
}

impl From<pki_pem::Error> for PemError {
    fn from(e: pki_pem::Error) -> Self {
        match e {
            pki_pem::Error::MissingSectionEnd { end_marker } => {
                let label: String = String::from_utf8_lossy(&end_marker)
                    .chars()
                    .take(40)
                    .collect();
                PemError::Unterminated(format!("{label:?}"))
            }
            pki_pem::Error::IllegalSectionStart { .. } => PemError::BadBeginLine,
            pki_pem::Error::Base64Decode(_) => PemError::Base64,
            other => PemError::Malformed(other.to_string()),
        }
    }
}

/// PEM of one DER object: `-----BEGIN {label}-----`, the base64 in lines of
/// 64 characters, `-----END {label}-----`, each line ending in `\n`.
pub fn encode(label: Label, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let label = label.as_str();
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 34);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    let mut rest = b64.as_str();
    while !rest.is_empty() {
        // base64 is ASCII, so every byte offset is a character boundary.
        let (line, tail) = rest.split_at(rest.len().min(64));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// PEM of several DER objects of one label, concatenated in order.
pub fn encode_all<I>(label: Label, ders: I) -> String
where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    ders.into_iter()
        .map(|der| encode(label, der.as_ref()))
        .collect()
}

/// The DER of the blocks labelled `label`, in order, each checked against
/// `limits`; stops at the first error.
fn blocks<'a>(
    text: &'a [u8],
    label: Label,
    limits: &'a Limits,
) -> Result<impl Iterator<Item = Result<Vec<u8>, PemError>> + 'a, PemError> {
    if text.len() > limits.text_bytes {
        return Err(PemError::TextTooLarge {
            len: text.len(),
            max: limits.text_bytes,
        });
    }
    let wanted = label.kind();
    let mut count = 0usize;
    Ok(
        <(SectionKind, Vec<u8>)>::pem_slice_iter(text).filter_map(move |item| {
            let (kind, der) = match item {
                Ok(section) => section,
                Err(e) => return Some(Err(e.into())),
            };
            if kind != wanted {
                return None;
            }
            count += 1;
            Some(if count > limits.blocks {
                Err(PemError::TooManyBlocks {
                    label,
                    max: limits.blocks,
                })
            } else if der.len() > limits.der_bytes {
                Err(PemError::BlockTooLarge {
                    label,
                    len: der.len(),
                    max: limits.der_bytes,
                })
            } else {
                Ok(der)
            })
        }),
    )
}

/// Every block labelled `label`, in order; at least one. The whole text is
/// read: a malformed block anywhere refuses it.
pub fn decode_all(text: &[u8], label: Label, limits: &Limits) -> Result<Vec<Vec<u8>>, PemError> {
    let out = blocks(text, label, limits)?.collect::<Result<Vec<_>, _>>()?;
    if out.is_empty() {
        return Err(PemError::Missing(label));
    }
    Ok(out)
}

/// The one block labelled `label`: none or two are refused. The whole text
/// is read.
pub fn decode_one(text: &[u8], label: Label, limits: &Limits) -> Result<Vec<u8>, PemError> {
    let mut all = decode_all(text, label, limits)?;
    if all.len() > 1 {
        return Err(PemError::MoreThanOne(label));
    }
    all.pop().ok_or(PemError::Missing(label))
}

/// The first block labelled `label`; text after it is not read.
pub fn decode_first(text: &[u8], label: Label, limits: &Limits) -> Result<Vec<u8>, PemError> {
    blocks(text, label, limits)?
        .next()
        .unwrap_or(Err(PemError::Missing(label)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn encodes_64_column_lines() {
        assert_eq!(
            encode(Label::PublicKey, &[]),
            "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n"
        );
        let pem = encode(Label::Certificate, &der(100));
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2].len(), 64);
        assert_eq!(lines[3].len(), 136 - 128);
        assert_eq!(lines[4], "-----END CERTIFICATE-----");
        assert!(pem.ends_with('\n'));
        // Exactly 48 bytes make one full line, no empty line after it.
        assert_eq!(encode(Label::Certificate, &der(48)).lines().count(), 3);
    }

    #[test]
    fn round_trips_and_skips_other_text() {
        for n in [0, 1, 2, 3, 47, 48, 49, 1000] {
            let d = der(n);
            for label in [
                Label::Certificate,
                Label::CertificateRequest,
                Label::PublicKey,
            ] {
                let pem = encode(label, &d);
                assert_eq!(
                    decode_one(pem.as_bytes(), label, &Limits::DEFAULT),
                    Ok(d.clone())
                );
            }
        }
        let text = format!(
            "# a bundle\r\n{}junk\n-----BEGIN SOMETHING ELSE-----\n!!\n-----END SOMETHING ELSE-----\n{}{}",
            encode(Label::PublicKey, &der(5)),
            encode(Label::Certificate, &der(10)).replace('\n', "\r\n"),
            encode(Label::Certificate, &der(11)),
        );
        let got = decode_all(text.as_bytes(), Label::Certificate, &Limits::DEFAULT);
        assert_eq!(got, Ok(vec![der(10), der(11)]));
        assert_eq!(
            decode_first(text.as_bytes(), Label::Certificate, &Limits::DEFAULT),
            Ok(der(10))
        );
        assert_eq!(
            decode_one(text.as_bytes(), Label::PublicKey, &Limits::DEFAULT),
            Ok(der(5))
        );
        assert_eq!(
            encode_all(Label::Certificate, [der(10), der(11)]),
            format!(
                "{}{}",
                encode(Label::Certificate, &der(10)),
                encode(Label::Certificate, &der(11))
            )
        );
    }

    #[test]
    fn refuses_what_is_wrong_and_names_it() {
        let l = &Limits::DEFAULT;
        let cert = encode(Label::Certificate, &der(30));
        assert_eq!(
            decode_all(b"", Label::Certificate, l),
            Err(PemError::Missing(Label::Certificate))
        );
        assert_eq!(
            decode_one(cert.as_bytes(), Label::PublicKey, l),
            Err(PemError::Missing(Label::PublicKey))
        );
        assert_eq!(
            decode_one(format!("{cert}{cert}").as_bytes(), Label::Certificate, l),
            Err(PemError::MoreThanOne(Label::Certificate))
        );
        assert_eq!(
            decode_all(
                cert.replace("-----END CERTIFICATE-----", "").as_bytes(),
                Label::Certificate,
                l
            ),
            Err(PemError::Unterminated("\"CERTIFICATE\"".into()))
        );
        assert_eq!(
            decode_all(b"-----BEGIN CERTIFICATE----\n", Label::Certificate, l),
            Err(PemError::BadBeginLine)
        );
        assert_eq!(
            decode_all(
                cert.replacen("-----\n", "-----\n*", 1).as_bytes(),
                Label::Certificate,
                l
            ),
            Err(PemError::Base64)
        );
        // A corrupt block of another known label refuses the whole text ...
        let bad_key = encode(Label::PublicKey, &der(9)).replacen("-----\n", "-----\n*", 1);
        assert_eq!(
            decode_all(format!("{bad_key}{cert}").as_bytes(), Label::Certificate, l),
            Err(PemError::Base64)
        );
        // ... unless it comes after the first block and only that is read.
        assert_eq!(
            decode_first(format!("{cert}{bad_key}").as_bytes(), Label::Certificate, l),
            Ok(der(30))
        );
        assert!(PemError::Missing(Label::CertificateRequest)
            .to_string()
            .contains("CERTIFICATE REQUEST"));
    }

    #[test]
    fn limits_bound_the_text_the_blocks_and_their_size() {
        let cert = encode(Label::Certificate, &der(30));
        let three = cert.repeat(3);
        let tight = |text_bytes, blocks, der_bytes| Limits {
            text_bytes,
            blocks,
            der_bytes,
        };
        assert_eq!(
            decode_all(
                three.as_bytes(),
                Label::Certificate,
                &tight(three.len() - 1, 9, 99)
            ),
            Err(PemError::TextTooLarge {
                len: three.len(),
                max: three.len() - 1
            })
        );
        assert_eq!(
            decode_all(
                three.as_bytes(),
                Label::Certificate,
                &tight(three.len(), 2, 99)
            ),
            Err(PemError::TooManyBlocks {
                label: Label::Certificate,
                max: 2
            })
        );
        assert_eq!(
            decode_all(
                three.as_bytes(),
                Label::Certificate,
                &tight(three.len(), 3, 29)
            ),
            Err(PemError::BlockTooLarge {
                label: Label::Certificate,
                len: 30,
                max: 29
            })
        );
        assert_eq!(
            decode_all(
                three.as_bytes(),
                Label::Certificate,
                &tight(three.len(), 3, 30)
            )
            .map(|v| v.len()),
            Ok(3)
        );
    }
}
