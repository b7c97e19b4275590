//! What is on disk now, and whether it can be used: the key parses, the
//! certificate parses and carries the key's public key, the full chain and
//! combined files agree with them, the leaf was signed by the intermediate
//! in `chain.pem`, and (when the class bundle is known) the chain still
//! leads to one of its accepted roots (the bounded path builder of
//! [`crate::verify::build_path`], so a cross-signed rotation counts).
//!
//! Time is not judged here ([`crate::renew::if_needed`] does that), so an
//! expired certificate is still reported with its facts, for metrics.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::keys::LocalKey;
use crate::pem::{chains_to, facts, issued_by, parse_certs, CertFacts};
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

fn read(layout: &Layout, kind: FileKind) -> Result<Vec<u8>, String> {
    let path = layout.path(kind);
    std::fs::read(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{} is missing", show(&path)),
        _ => format!("{} is unreadable: {e}", show(&path)),
    })
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

fn certs_or_empty(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, crate::pem::PemError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    parse_certs(bytes)
}

/// Inspects the files of `layout`. `class_roots` is the current bundle of
/// the client's own class, when known. `Err` says why the files cannot be
/// used (one line).
pub fn inspect(
    layout: &Layout,
    class_roots: Option<&[CertificateDer<'static>]>,
) -> Result<Installed, String> {
    let key_pem = read(layout, FileKind::Key)?;
    let key_text = String::from_utf8(key_pem).map_err(|_| "key.pem is not PEM text".to_string())?;
    let key = LocalKey::from_pem(&key_text).map_err(|e| format!("key.pem: {e}"))?;

    let certs =
        parse_certs(&read(layout, FileKind::Cert)?).map_err(|e| format!("cert.pem: {e}"))?;
    let leaf = certs
        .into_iter()
        .next()
        .ok_or_else(|| "cert.pem holds no certificate".to_string())?;
    if !key.matches_cert(&leaf) {
        return Err("key.pem does not match cert.pem".into());
    }
    let intermediates =
        certs_or_empty(&read(layout, FileKind::Chain)?).map_err(|e| format!("chain.pem: {e}"))?;

    let full = parse_certs(&read(layout, FileKind::Fullchain)?)
        .map_err(|e| format!("fullchain.pem: {e}"))?;
    if full.first() != Some(&leaf) || full[1..] != intermediates[..] {
        return Err("fullchain.pem does not match cert.pem + chain.pem".into());
    }
    let combined = read(layout, FileKind::Combined)?;
    let combined_key = PrivateKeyDer::from_pem_slice(&combined)
        .map_err(|e| format!("combined.pem: no private key ({e})"))?;
    let key_der =
        PrivateKeyDer::from_pem_slice(key_text.as_bytes()).map_err(|e| format!("key.pem: {e}"))?;
    let combined_certs = parse_certs(&combined).map_err(|e| format!("combined.pem: {e}"))?;
    if combined_key.secret_der() != key_der.secret_der() || combined_certs != full {
        return Err("combined.pem does not match key.pem + fullchain.pem".into());
    }

    if let Some(first) = intermediates.first() {
        if !issued_by(&leaf, first) {
            return Err("cert.pem was not issued by the first certificate of chain.pem".into());
        }
    }
    if let Some(roots) = class_roots {
        if !chains_to(&leaf, &intermediates, roots) {
            return Err("the certificate's issuer is not in the class bundle any more".into());
        }
    }
    let facts = facts(&leaf).map_err(|e| format!("cert.pem: {e}"))?;
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
        Err(why) => Present::Unusable(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyAlgorithm;
    use crate::pem::{encode, encode_certs, testca::TestCa};
    use crate::store::{install, Material};

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
            cert_pem: encode("CERTIFICATE", &leaf),
            chain_pem: encode_certs([&ca.int_der]),
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
        assert!(inspect(&layout, None)
            .unwrap_err()
            .contains("key.pem is missing"));

        install(&layout, &material_for(&ca, &key)).expect("install");
        // A different key behind key.pem.
        let other = LocalKey::generate(KeyAlgorithm::EcP256).expect("other");
        let mut m = material_for(&ca, &key);
        m.key_pem = other.pem().to_owned();
        install(&layout, &m).expect("install");
        assert_eq!(
            inspect(&layout, None).unwrap_err(),
            "key.pem does not match cert.pem"
        );

        // Files replaced by hand behind the links.
        install(&layout, &material_for(&ca, &key)).expect("install");
        std::fs::remove_file(layout.path(FileKind::Fullchain)).expect("rm");
        assert!(inspect(&layout, None)
            .unwrap_err()
            .contains("fullchain.pem is missing"));
        install(&layout, &material_for(&ca, &key)).expect("install");
        std::fs::write(layout.dir.join(".current/cert.pem"), b"garbage").expect("w");
        assert!(inspect(&layout, None).unwrap_err().starts_with("cert.pem:"));
    }

    #[test]
    fn issuer_must_be_in_the_class_bundle() {
        let (_t, layout, ca, key) = setup();
        let rotated = TestCa::new("db-new-root");
        install(&layout, &material_for(&ca, &key)).expect("install");
        assert!(inspect(&layout, Some(std::slice::from_ref(&ca.root_der))).is_ok());
        let err = inspect(&layout, Some(std::slice::from_ref(&rotated.root_der))).unwrap_err();
        assert!(err.contains("not in the class bundle"), "{err}");
        assert!(inspect(&layout, None).is_ok(), "unknown bundle: not judged");

        // A chain.pem from another hierarchy.
        let mut m = material_for(&ca, &key);
        m.chain_pem = encode_certs([&rotated.int_der]);
        install(&layout, &m).expect("install");
        assert!(inspect(&layout, None)
            .unwrap_err()
            .contains("not issued by"));
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
                cert_pem: encode("CERTIFICATE", &leaf),
                chain_pem: encode_certs([&ca.int_der]),
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
