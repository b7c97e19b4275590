//! What is on disk now, and whether it can be used: the key parses, the
//! certificate parses and carries the key's public key, the full chain and
//! combined files agree with them, the leaf was signed by the intermediate
//! in `chain.pem`, and (when the class bundle is known) the chain still
//! leads to one of its accepted roots (the bounded path builder of
//! [`crate::verify::build_path`], so a cross-signed rotation counts).
//!
//! Time is not judged here ([`crate::renew::if_needed`] does that), so an
//! expired certificate is still reported with its facts, for metrics.

use std::path::PathBuf;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

use crate::keys::{KeyError, LocalKey};
use crate::pem::{chains_to, facts, issued_by, parse_certs, CertFacts, PemError};
use crate::renew::Present;
use crate::store::{FileKind, Layout};

/// A usable certificate generation found on disk.
#[derive(Debug)]
pub struct Installed {
    /// The private key.
    pub key: LocalKey,
    /// The leaf certificate.
    pub leaf: CertificateDer<'static>,
    /// The intermediates.
    pub intermediates: Vec<CertificateDer<'static>>,
    /// Facts about the leaf.
    pub facts: CertFacts,
    /// Start of the effective lifetime: the later of notBefore and the
    /// time the generation was installed. The CA backdates notBefore (by 5
    /// minutes) against clock skew; counting the renewal fraction from
    /// notBefore would renew a short-lived certificate almost at once.
    pub start: i64,
}

impl Installed {
    /// The state for the renewal decision.
    pub fn present(&self) -> Present {
        Present::Valid {
            not_before: self.start,
            not_after: self.facts.not_after,
        }
    }
}

/// Why the files on disk cannot be used. `Display` is one line.
#[derive(Debug, Error)]
pub enum Unusable {
    /// A file of the generation does not exist.
    #[error("{} is missing", .path.display())]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// A file exists but cannot be read.
    #[error("{} is unreadable: {source}", .path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The read error.
        #[source]
        source: std::io::Error,
    },
    /// `key.pem` is not UTF-8.
    #[error("key.pem is not PEM text")]
    KeyNotText,
    /// `key.pem` holds no usable key.
    #[error("key.pem: {0}")]
    Key(#[source] KeyError),
    /// `key.pem` holds no PEM private key.
    #[error("key.pem: {0}")]
    KeyPem(#[source] rustls_pki_types::pem::Error),
    /// A certificate file does not parse.
    #[error("{}: {source}", .file.file_name())]
    Certificates {
        /// Which file.
        file: FileKind,
        /// What is wrong.
        #[source]
        source: PemError,
    },
    /// `cert.pem` is empty.
    #[error("cert.pem holds no certificate")]
    NoCertificate,
    /// The key is not the certificate's.
    #[error("key.pem does not match cert.pem")]
    KeyMismatch,
    /// `fullchain.pem` is not `cert.pem` + `chain.pem`.
    #[error("fullchain.pem does not match cert.pem + chain.pem")]
    FullchainMismatch,
    /// `combined.pem` holds no PEM private key.
    #[error("combined.pem: no private key ({0})")]
    CombinedNoKey(#[source] rustls_pki_types::pem::Error),
    /// `combined.pem` is not `key.pem` + `fullchain.pem`.
    #[error("combined.pem does not match key.pem + fullchain.pem")]
    CombinedMismatch,
    /// The leaf's signature is not by the first intermediate.
    #[error("cert.pem was not issued by the first certificate of chain.pem")]
    NotIssuedByChain,
    /// No path from the leaf to a root of the current class bundle.
    #[error("the certificate's issuer is not in the class bundle any more")]
    NotInBundle,
}

fn read(layout: &Layout, kind: FileKind) -> Result<Vec<u8>, Unusable> {
    let path = layout.path(kind);
    std::fs::read(&path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => Unusable::Missing { path },
        _ => Unusable::Unreadable { path, source },
    })
}

fn certs_in(file: FileKind) -> impl FnOnce(PemError) -> Unusable {
    move |source| Unusable::Certificates { file, source }
}

fn certs_or_empty(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, crate::pem::PemError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    parse_certs(bytes)
}

/// Inspects the files of `layout`. `class_roots` is the current bundle of
/// the client's own class, when known. `Err` says why the files cannot be
/// used.
pub fn inspect(
    layout: &Layout,
    class_roots: Option<&[CertificateDer<'static>]>,
) -> Result<Installed, Unusable> {
    let key_pem = read(layout, FileKind::Key)?;
    let key_text = String::from_utf8(key_pem).map_err(|_| Unusable::KeyNotText)?;
    let key = LocalKey::from_pem(&key_text).map_err(Unusable::Key)?;

    let certs = parse_certs(&read(layout, FileKind::Cert)?).map_err(certs_in(FileKind::Cert))?;
    let leaf = certs.into_iter().next().ok_or(Unusable::NoCertificate)?;
    if !key.matches_cert(&leaf) {
        return Err(Unusable::KeyMismatch);
    }
    let intermediates =
        certs_or_empty(&read(layout, FileKind::Chain)?).map_err(certs_in(FileKind::Chain))?;

    let full =
        parse_certs(&read(layout, FileKind::Fullchain)?).map_err(certs_in(FileKind::Fullchain))?;
    if full.first() != Some(&leaf) || full[1..] != intermediates[..] {
        return Err(Unusable::FullchainMismatch);
    }
    let combined = read(layout, FileKind::Combined)?;
    let combined_key = PrivateKeyDer::from_pem_slice(&combined).map_err(Unusable::CombinedNoKey)?;
    let key_der = PrivateKeyDer::from_pem_slice(key_text.as_bytes()).map_err(Unusable::KeyPem)?;
    let combined_certs = parse_certs(&combined).map_err(certs_in(FileKind::Combined))?;
    if combined_key.secret_der() != key_der.secret_der() || combined_certs != full {
        return Err(Unusable::CombinedMismatch);
    }

    if let Some(first) = intermediates.first() {
        if !issued_by(&leaf, first) {
            return Err(Unusable::NotIssuedByChain);
        }
    }
    if let Some(roots) = class_roots {
        if !chains_to(&leaf, &intermediates, roots) {
            return Err(Unusable::NotInBundle);
        }
    }
    let facts = facts(&leaf).map_err(certs_in(FileKind::Cert))?;
    let start = crate::store::generation_time(&layout.dir).map_or(facts.not_before, |t| {
        t.clamp(facts.not_before, facts.not_after)
    });
    Ok(Installed {
        key,
        leaf,
        intermediates,
        facts,
        start,
    })
}

/// [`inspect`] reduced to the renewal decision's input.
pub fn present(layout: &Layout, class_roots: Option<&[CertificateDer<'static>]>) -> Present {
    match inspect(layout, class_roots) {
        Ok(i) => i.present(),
        Err(why) => Present::Unusable(why.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyAlgorithm;
    use crate::pem::testca::TestCa;
    use crate::store::{install, Material};
    use ca_proto::pem::{encode, encode_all, Label};

    fn setup() -> (tempfile::TempDir, Layout, TestCa, LocalKey) {
        let tmp = tempfile::tempdir().expect("tmp");
        let layout = Layout::new(tmp.path().join("out"));
        let ca = TestCa::new("db");
        let key = LocalKey::generate(KeyAlgorithm::EcP256).expect("key");
        (tmp, layout, ca, key)
    }

    fn material_for(ca: &TestCa, key: &LocalKey) -> Material {
        let pair = rcgen::KeyPair::from_pem(key.pem()).expect("pair");
        let leaf = ca.leaf(&pair, &["a.db.internal"], 1_700_000_000, 1_700_086_400);
        Material {
            key_pem: key.pem().to_owned(),
            cert_pem: encode(Label::Certificate, &leaf),
            chain_pem: encode_all(Label::Certificate, [&ca.int_der]),
        }
    }

    #[test]
    fn a_good_install_is_usable() {
        let (_t, layout, ca, key) = setup();
        install(&layout, &material_for(&ca, &key)).expect("install");
        let got = inspect(&layout, Some(std::slice::from_ref(&ca.root_der))).expect("usable");
        assert_eq!(got.facts.not_after, 1_700_086_400);
        assert_eq!(got.intermediates, vec![ca.int_der.clone()]);
        // Installed now, after the certificate's lifetime: the effective
        // start is clamped to notAfter.
        assert_eq!(
            got.present(),
            Present::Valid {
                not_before: 1_700_086_400,
                not_after: 1_700_086_400
            }
        );
    }

    #[test]
    fn missing_and_mismatched_files_are_detected() {
        let (_t, layout, ca, key) = setup();
        let err = inspect(&layout, None).unwrap_err();
        assert!(matches!(err, Unusable::Missing { .. }), "{err}");
        assert!(err.to_string().ends_with("key.pem is missing"), "{err}");

        install(&layout, &material_for(&ca, &key)).expect("install");
        // A different key behind key.pem.
        let other = LocalKey::generate(KeyAlgorithm::EcP256).expect("other");
        let mut m = material_for(&ca, &key);
        m.key_pem = other.pem().to_owned();
        install(&layout, &m).expect("install");
        let err = inspect(&layout, None).unwrap_err();
        assert!(matches!(err, Unusable::KeyMismatch), "{err}");
        assert_eq!(err.to_string(), "key.pem does not match cert.pem");

        // Files replaced by hand behind the links.
        install(&layout, &material_for(&ca, &key)).expect("install");
        std::fs::remove_file(layout.path(FileKind::Fullchain)).expect("rm");
        let err = inspect(&layout, None).unwrap_err();
        assert!(
            err.to_string().ends_with("fullchain.pem is missing"),
            "{err}"
        );
        install(&layout, &material_for(&ca, &key)).expect("install");
        std::fs::write(layout.dir.join(".current/cert.pem"), b"garbage").expect("w");
        let err = inspect(&layout, None).unwrap_err();
        assert!(
            matches!(
                err,
                Unusable::Certificates {
                    file: FileKind::Cert,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().starts_with("cert.pem:"), "{err}");
    }

    #[test]
    fn issuer_must_be_in_the_class_bundle() {
        let (_t, layout, ca, key) = setup();
        let rotated = TestCa::new("db-new-root");
        install(&layout, &material_for(&ca, &key)).expect("install");
        assert!(inspect(&layout, Some(std::slice::from_ref(&ca.root_der))).is_ok());
        let err = inspect(&layout, Some(std::slice::from_ref(&rotated.root_der))).unwrap_err();
        assert!(matches!(err, Unusable::NotInBundle), "{err}");
        assert!(err.to_string().contains("not in the class bundle"), "{err}");
        assert!(inspect(&layout, None).is_ok(), "unknown bundle: not judged");

        // A chain.pem from another hierarchy.
        let mut m = material_for(&ca, &key);
        m.chain_pem = encode_all(Label::Certificate, [&rotated.int_der]);
        install(&layout, &m).expect("install");
        let err = inspect(&layout, None).unwrap_err();
        assert!(matches!(err, Unusable::NotIssuedByChain), "{err}");
        assert!(err.to_string().contains("not issued by"), "{err}");
    }

    #[test]
    fn effective_start_is_the_install_time_for_backdated_certificates() {
        let (_t, layout, ca, key) = setup();
        let now = crate::unix_now();
        let pair = rcgen::KeyPair::from_pem(key.pem()).expect("pair");
        // Backdated by 5 minutes, 60 s to go: as the CA issues short TTLs.
        let leaf = ca.leaf(&pair, &["a.db.internal"], now - 300, now + 60);
        install(
            &layout,
            &Material {
                key_pem: key.pem().to_owned(),
                cert_pem: encode(Label::Certificate, &leaf),
                chain_pem: encode_all(Label::Certificate, [&ca.int_der]),
            },
        )
        .expect("install");
        let got = inspect(&layout, None).expect("usable");
        assert!((got.start - now).abs() <= 2, "{} vs {now}", got.start);
        assert_eq!(got.facts.not_before, now - 300);
        // Renewal at 2/3 of the remaining 60 s, not immediately.
        let decision = crate::renew::if_needed(&got.present(), now, crate::renew::DEFAULT_FRACTION);
        assert!(
            matches!(decision, crate::renew::Decision::Keep { .. }),
            "{decision:?}"
        );
    }

    #[test]
    fn present_maps_errors() {
        let (_t, layout, _ca, _key) = setup();
        assert!(matches!(present(&layout, None), Present::Unusable(_)));
    }
}
