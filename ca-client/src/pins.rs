//! Pinned class roots: which roots of a class the sidecar trusts, and when
//! a bundle the CA serves may change that.
//!
//! At first contact with a class (its own and every `trust` class) the
//! sidecar pins the roots of the class bundle: those whose SHA-256 is
//! configured (`class_root_sha256`), or, with nothing configured, every root
//! the bundle holds (trust on first use). The pins live in the state file
//! [`STATE_FILE`] (`state_dir`, default `OUT/.state/`), JSON:
//!
//! ```json
//! {"version": 1, "classes": {"db": {
//!   "configured_sha256": [],
//!   "updated": "2026-01-01T00:00:00Z",
//!   "roots": [{"sha256": "…", "subject": "O=Trellis, OU=class db", "pem": "-----BEGIN …"}]
//! }}}
//! ```
//!
//! A later bundle ([`evaluate`]) is judged root by root against the pins:
//!
//! - a root with the key of a pinned root is accepted (a re-issued root);
//! - a root with a new key is accepted only when a cross certificate for it
//!   (same subject and key, `CA:TRUE` with keyCertSign, valid now) is signed
//!   by a pinned root: the rotation `ca-server rotate root-prepare/-activate`
//!   performs; the cross certificates come from the class's
//!   `GET /v1/classes/{class}/chain` (and chains), where the server appends
//!   it once issuance moved under the new root;
//! - any other root is refused and reported (error log, metric, `--once`
//!   warning), and is kept out of the trust file.
//!
//! A bundle that holds no acceptable root at all — the pinned roots replaced
//! by others — is refused as a whole: nothing is written and the pins stay.
//! The accepted roots become the pins, and they are exactly what
//! `trust/<class>.pem` holds; both are written only after the enrolment or
//! refresh that fetched them fully succeeded ([`crate::agent`]).
//!
//! Work is bounded: a bundle holds at most
//! [`crate::verify::MAX_BUNDLE_ROOTS`] roots, every signature (cross,
//! pinned root) is checked at most once.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ca_proto::pem::{encode, Label};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::pem::{parse_certs, sha256_hex};
use crate::store::{FileAttrs, StoreError};
use crate::verify::{usable_ca, MAX_BUNDLE_ROOTS};

/// The state file's name inside `state_dir`.
pub const STATE_FILE: &str = "pinned-roots.json";
/// Largest state file read.
pub const MAX_STATE_BYTES: u64 = 4 << 20;
const VERSION: u32 = 1;

/// A root as pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedRoot {
    /// SHA-256 of the DER, lowercase hex.
    pub sha256: String,
    /// Subject, for people.
    pub subject: String,
    /// The certificate, PEM.
    pub pem: String,
}

/// The pins of one class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassPins {
    /// The configured fingerprints this set started from (empty: first use).
    pub configured_sha256: Vec<String>,
    /// When the set last changed, RFC 3339.
    pub updated: String,
    /// The pinned roots.
    pub roots: Vec<PinnedRoot>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    classes: BTreeMap<String, ClassPins>,
}

/// The state file could not be used.
#[derive(Debug, Error)]
pub enum PinError {
    /// Unreadable or not in the expected shape.
    #[error("trust state {path}: {detail} (move it away to pin the class roots again on first use)", path = .path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Writing it failed.
    #[error("saving the trust state: {0}")]
    Store(#[from] StoreError),
}

/// The pinned roots of every class, as the state file holds them.
#[derive(Debug)]
pub struct PinStore {
    path: PathBuf,
    classes: BTreeMap<String, ClassPins>,
}

/// Reads a file without following a symbolic link in its last component;
/// `Ok(None)` if it does not exist.
pub fn read_no_follow(path: &Path, cap: u64) -> std::io::Result<Option<Vec<u8>>> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(std::io::Error::other(
                "is a symbolic link (not created by ca-client): not followed",
            ))
        }
        Err(e) => return Err(e),
    };
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(std::io::Error::other(format!("larger than {cap} bytes")));
    }
    Ok(Some(bytes))
}

/// Lowercase hex of configured fingerprints, sorted.
pub fn fingerprints_hex(configured: &[[u8; 32]]) -> Vec<String> {
    let mut v: Vec<String> = configured.iter().map(hex::encode).collect();
    v.sort();
    v.dedup();
    v
}

fn subject_of(der: &[u8]) -> String {
    match X509Certificate::from_der(der) {
        Ok((_, c)) => c.subject().to_string(),
        Err(_) => "?".into(),
    }
}

impl PinStore {
    /// The pins in `dir/`[`STATE_FILE`] (none if it does not exist yet).
    pub fn load(dir: &Path) -> Result<PinStore, PinError> {
        let path = dir.join(STATE_FILE);
        let bad = |detail: String| PinError::State {
            path: path.clone(),
            detail,
        };
        let classes =
            match read_no_follow(&path, MAX_STATE_BYTES).map_err(|e| bad(e.to_string()))? {
                None => BTreeMap::new(),
                Some(bytes) => {
                    let state: StateFile =
                        serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
                    if state.version != VERSION {
                        return Err(bad(format!("unknown version {}", state.version)));
                    }
                    for (class, pins) in &state.classes {
                        for root in &pins.roots {
                            let der = parse_certs(root.pem.as_bytes())
                                .map_err(|e| bad(format!("class '{class}': {e}")))?;
                            if der.len() != 1 || sha256_hex(&der[0]) != root.sha256 {
                                return Err(bad(format!(
                                    "class '{class}': root {} does not match its certificate",
                                    root.sha256
                                )));
                            }
                        }
                    }
                    state.classes
                }
            };
        Ok(PinStore { path, classes })
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pinned roots of `class`, unless none are pinned yet or they were
    /// pinned from other configured fingerprints than `configured` (then the
    /// configuration starts the class afresh).
    pub fn roots(
        &self,
        class: &str,
        configured: &[String],
    ) -> Option<Vec<CertificateDer<'static>>> {
        let pins = self.classes.get(class)?;
        if !configured.is_empty() && pins.configured_sha256 != configured {
            return None;
        }
        let mut out = Vec::new();
        for root in &pins.roots {
            out.extend(parse_certs(root.pem.as_bytes()).ok()?);
        }
        (!out.is_empty()).then_some(out)
    }

    /// Pins `roots` for `class`. Returns whether anything changed.
    pub fn update(
        &mut self,
        class: &str,
        configured: &[String],
        roots: &[CertificateDer<'_>],
    ) -> bool {
        let pinned: Vec<PinnedRoot> = roots
            .iter()
            .map(|r| PinnedRoot {
                sha256: sha256_hex(r),
                subject: subject_of(r),
                pem: encode(Label::Certificate, r),
            })
            .collect();
        let keep_configured = match self.classes.get(class) {
            Some(old) if configured.is_empty() => old.configured_sha256.clone(),
            _ => configured.to_vec(),
        };
        if let Some(old) = self.classes.get(class) {
            if old.roots == pinned && old.configured_sha256 == keep_configured {
                return false;
            }
        }
        self.classes.insert(
            class.to_owned(),
            ClassPins {
                configured_sha256: keep_configured,
                updated: crate::verify::rfc3339(crate::unix_now()),
                roots: pinned,
            },
        );
        true
    }

    /// Writes the state file atomically; its directory is created below
    /// `base` without following symbolic links ([`crate::store::ensure_dir`]).
    pub fn save(&self, base: &Path, attrs: FileAttrs) -> Result<(), PinError> {
        let state = StateFile {
            version: VERSION,
            classes: self.classes.clone(),
        };
        let mut text = serde_json::to_string_pretty(&state).map_err(|e| PinError::State {
            path: self.path.clone(),
            detail: e.to_string(),
        })?;
        text.push('\n');
        crate::store::write_atomic_in(base, &self.path, text.as_bytes(), attrs)?;
        Ok(())
    }
}

/// How the accepted roots were decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// Against the pins in the state file.
    Pinned,
    /// First contact, against configured fingerprints.
    Configured,
    /// First contact, nothing configured: every root of the bundle.
    FirstUse,
}

/// A root of the bundle that was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedRoot {
    /// SHA-256 of its DER.
    pub sha256: String,
    /// Its subject.
    pub subject: String,
    /// Why.
    pub reason: String,
}

impl std::fmt::Display for RefusedRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "root sha256:{} '{}' {}",
            &self.sha256[..self.sha256.len().min(16)],
            self.subject,
            self.reason
        )
    }
}

/// The judgement of one class bundle.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The class.
    pub class: String,
    /// The roots to trust (bundle order): the new pins and trust file.
    pub accepted: Vec<CertificateDer<'static>>,
    /// Roots kept out, with the reason.
    pub refused: Vec<RefusedRoot>,
    /// How it was decided.
    pub basis: Basis,
}

impl Verdict {
    /// One line about the refused roots, if any.
    pub fn warning(&self) -> Option<String> {
        (!self.refused.is_empty()).then(|| {
            format!(
                "bundle of class '{}': {} (kept out of the trusted roots)",
                self.class,
                join(&self.refused)
            )
        })
    }
}

fn join(refused: &[RefusedRoot]) -> String {
    refused
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A bundle that cannot be used at all.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TrustError {
    /// More roots than accepted, or not certificates.
    #[error("bundle of class '{class}': {detail}")]
    Malformed {
        /// The class.
        class: String,
        /// What is wrong.
        detail: String,
    },
    /// First contact: no root matches the configured fingerprints.
    #[error(
        "bundle of class '{class}': no root matches class_root_sha256 ({wanted}); it holds {held}"
    )]
    NoConfiguredRoot {
        /// The class.
        class: String,
        /// Configured fingerprints.
        wanted: String,
        /// What the bundle holds.
        held: String,
    },
    /// No root of the bundle is acceptable.
    #[error(
        "bundle of class '{class}' refused: it holds no pinned root and nothing cross-signed by \
         one ({refused}); the pinned roots stay trusted and no file was changed"
    )]
    NoPinnedRoot {
        /// The class.
        class: String,
        /// The refused roots.
        refused: String,
    },
}

struct Parsed<'a> {
    cert: X509Certificate<'a>,
    sha256: String,
}

fn parse_all<'a>(
    class: &str,
    what: &str,
    certs: &'a [CertificateDer<'_>],
) -> Result<Vec<Parsed<'a>>, TrustError> {
    certs
        .iter()
        .map(|der| match X509Certificate::from_der(der) {
            Ok(([], cert)) => Ok(Parsed {
                cert,
                sha256: sha256_hex(der),
            }),
            _ => Err(TrustError::Malformed {
                class: class.to_owned(),
                detail: format!("{what}: not an X.509 certificate"),
            }),
        })
        .collect()
}

/// Whether `bundle` holds a root whose key is not one of `anchors` (then
/// cross certificates are needed to judge it).
pub fn needs_crosses(bundle: &[CertificateDer<'_>], anchors: &[CertificateDer<'_>]) -> bool {
    let keys: Vec<Vec<u8>> = anchors
        .iter()
        .filter_map(|a| X509Certificate::from_der(a).ok())
        .map(|(_, c)| c.public_key().raw.to_vec())
        .collect();
    bundle.iter().any(|r| match X509Certificate::from_der(r) {
        Ok((_, c)) => !keys.iter().any(|k| k.as_slice() == c.public_key().raw),
        Err(_) => true,
    })
}

/// The anchors a bundle is judged against: the pins, else (first contact)
/// the configured roots, else every root (first use).
pub fn anchors_for(
    class: &str,
    bundle: &[CertificateDer<'static>],
    pinned: Option<&[CertificateDer<'static>]>,
    configured: &[String],
) -> Result<(Vec<CertificateDer<'static>>, Basis), TrustError> {
    if let Some(p) = pinned {
        return Ok((p.to_vec(), Basis::Pinned));
    }
    if configured.is_empty() {
        return Ok((bundle.to_vec(), Basis::FirstUse));
    }
    let matching: Vec<CertificateDer<'static>> = bundle
        .iter()
        .filter(|r| configured.contains(&sha256_hex(r)))
        .cloned()
        .collect();
    if matching.is_empty() {
        return Err(TrustError::NoConfiguredRoot {
            class: class.to_owned(),
            wanted: configured.join(", "),
            held: bundle
                .iter()
                .map(|r| sha256_hex(r.as_ref()))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok((matching, Basis::Configured))
}

/// Judges `bundle` (see the module documentation) against `anchors` (from
/// [`anchors_for`]), with `crosses` the cross-certificate candidates, at
/// `now`.
pub fn evaluate(
    class: &str,
    bundle: &[CertificateDer<'static>],
    anchors: &[CertificateDer<'static>],
    basis: Basis,
    crosses: &[CertificateDer<'_>],
    now: i64,
) -> Result<Verdict, TrustError> {
    if bundle.len() > MAX_BUNDLE_ROOTS || anchors.len() > MAX_BUNDLE_ROOTS {
        return Err(TrustError::Malformed {
            class: class.to_owned(),
            detail: format!("more than {MAX_BUNDLE_ROOTS} roots"),
        });
    }
    let roots = parse_all(class, "a root", bundle)?;
    let anchor_certs = parse_all(class, "a pinned root", anchors)?;
    let cross_certs: Vec<Parsed<'_>> = crosses
        .iter()
        .filter_map(|der| match X509Certificate::from_der(der) {
            Ok(([], cert)) => Some(Parsed {
                cert,
                sha256: sha256_hex(der),
            }),
            _ => None,
        })
        .collect();
    let mut signatures: HashMap<(usize, usize), bool> = HashMap::new();
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for (i, root) in roots.iter().enumerate() {
        let refuse = |reason: String| RefusedRoot {
            sha256: root.sha256.clone(),
            subject: root.cert.subject().to_string(),
            reason,
        };
        // A root must be a self-signed CA.
        if let Err(why) = usable_ca(&bundle[i], None) {
            refused.push(refuse(format!("is not usable as a root: {why}")));
            continue;
        }
        let self_signed = root.cert.subject().as_raw() == root.cert.issuer().as_raw()
            && root.cert.verify_signature(None).is_ok();
        if !self_signed {
            refused.push(refuse("is not a self-signed root".into()));
            continue;
        }
        let key = root.cert.public_key().raw;
        if basis == Basis::FirstUse || anchor_certs.iter().any(|a| a.cert.public_key().raw == key) {
            accepted.push(bundle[i].clone());
            continue;
        }
        let mut proven = false;
        'crosses: for (x, cross) in cross_certs.iter().enumerate() {
            if cross.cert.subject().as_raw() != root.cert.subject().as_raw()
                || cross.cert.public_key().raw != key
                || cross.sha256 == root.sha256
                || usable_ca(&crosses[x], Some(now)).is_err()
            {
                continue;
            }
            for (a, anchor) in anchor_certs.iter().enumerate() {
                if cross.cert.issuer().as_raw() != anchor.cert.subject().as_raw() {
                    continue;
                }
                let ok = *signatures.entry((x, a)).or_insert_with(|| {
                    cross
                        .cert
                        .verify_signature(Some(anchor.cert.public_key()))
                        .is_ok()
                });
                if ok {
                    tracing::info!(
                        class,
                        root = %root.sha256,
                        cross = %cross.sha256,
                        pinned = %anchor.sha256,
                        "new root of the class is cross-signed by a pinned root: accepted"
                    );
                    proven = true;
                    break 'crosses;
                }
            }
        }
        if proven {
            accepted.push(bundle[i].clone());
        } else {
            refused.push(refuse(
                "is neither pinned nor cross-signed by a pinned root".into(),
            ));
        }
    }
    if accepted.is_empty() {
        return Err(TrustError::NoPinnedRoot {
            class: class.to_owned(),
            refused: join(&refused),
        });
    }
    Ok(Verdict {
        class: class.to_owned(),
        accepted,
        refused,
        basis,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };

    struct Root {
        der: CertificateDer<'static>,
        params: CertificateParams,
        key: KeyPair,
    }

    fn root(name: &str) -> Root {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("p");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "T");
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let der = params.self_signed(&key).expect("root").der().clone();
        Root { der, params, key }
    }

    /// The rotation of `old`: a new root with its name, and the cross
    /// certificate (new name and key, signed by the old root).
    fn rotate(old: &Root) -> (Root, CertificateDer<'static>) {
        let key = KeyPair::generate().expect("key");
        let params = old.params.clone();
        let der = params.self_signed(&key).expect("new").der().clone();
        let issuer = Issuer::new(
            old.params.clone(),
            KeyPair::from_pem(&old.key.serialize_pem()).expect("k"),
        );
        let cross = params
            .signed_by(&key, &issuer)
            .expect("cross")
            .der()
            .clone();
        (Root { der, params, key }, cross)
    }

    #[test]
    fn first_use_pins_everything_and_configured_pins_select() {
        let a = root("class db");
        let b = root("class other");
        let bundle = vec![a.der.clone(), b.der.clone()];
        let (anchors, basis) = anchors_for("db", &bundle, None, &[]).expect("tofu");
        assert_eq!(basis, Basis::FirstUse);
        let v = evaluate("db", &bundle, &anchors, basis, &[], 0).expect("ok");
        assert_eq!(v.accepted.len(), 2);

        let pin = vec![sha256_hex(&a.der)];
        let (anchors, basis) = anchors_for("db", &bundle, None, &pin).expect("configured");
        assert_eq!(basis, Basis::Configured);
        let v = evaluate("db", &bundle, &anchors, basis, &[], 0).expect("ok");
        assert_eq!(v.accepted, vec![a.der.clone()]);
        assert!(v.warning().expect("warning").contains("neither pinned"));
        let err = anchors_for("db", std::slice::from_ref(&b.der), None, &pin).unwrap_err();
        assert!(err.to_string().contains("class_root_sha256"), "{err}");
    }

    #[test]
    fn a_cross_signed_rotation_is_accepted_and_an_unrelated_root_refused() {
        let old = root("class db");
        let (new, cross) = rotate(&old);
        let pinned = vec![old.der.clone()];
        let bundle = vec![old.der.clone(), new.der.clone()];
        let now = crate::unix_now();
        // without the cross certificate: the new root waits outside
        let v = evaluate("db", &bundle, &pinned, Basis::Pinned, &[], now).expect("partial");
        assert_eq!(v.accepted, vec![old.der.clone()]);
        assert_eq!(v.refused.len(), 1);
        assert!(needs_crosses(&bundle, &pinned));
        // with it: both
        let v = evaluate(
            "db",
            &bundle,
            &pinned,
            Basis::Pinned,
            std::slice::from_ref(&cross),
            now,
        )
        .expect("rotated");
        assert_eq!(v.accepted, bundle);
        // after retirement, only the new one, now pinned
        let v = evaluate(
            "db",
            std::slice::from_ref(&new.der),
            &bundle,
            Basis::Pinned,
            &[],
            now,
        )
        .expect("retired");
        assert_eq!(v.accepted, vec![new.der.clone()]);

        // an unrelated root with the same name and a "cross" it signed itself
        let evil = root("class db");
        let (evil_new, evil_cross) = rotate(&evil);
        let err = evaluate(
            "db",
            std::slice::from_ref(&evil_new.der),
            &pinned,
            Basis::Pinned,
            &[evil_cross, cross],
            now,
        )
        .unwrap_err();
        assert!(
            matches!(err, TrustError::NoPinnedRoot { .. })
                && err.to_string().contains("neither pinned nor cross-signed"),
            "{err}"
        );
        let v = evaluate(
            "db",
            &[old.der.clone(), evil.der.clone()],
            &pinned,
            Basis::Pinned,
            &[],
            now,
        )
        .expect("partial");
        assert_eq!(v.accepted, vec![old.der.clone()]);
    }

    #[test]
    fn the_state_file_round_trips_and_refuses_tampering() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join(".state");
        let a = root("class db");
        let mut store = PinStore::load(&dir).expect("empty");
        assert!(store.roots("db", &[]).is_none());
        assert!(store.update("db", &[], std::slice::from_ref(&a.der)));
        assert!(!store.update("db", &[], std::slice::from_ref(&a.der)));
        store
            .save(tmp.path(), FileAttrs::CERT_DEFAULT)
            .expect("save");
        let back = PinStore::load(&dir).expect("load");
        assert_eq!(back.roots("db", &[]), Some(vec![a.der.clone()]));
        // other configured pins start the class afresh
        assert!(back.roots("db", &["00".repeat(32)]).is_none());

        let text = std::fs::read_to_string(dir.join(STATE_FILE)).expect("read");
        let first = sha256_hex(&a.der);
        std::fs::write(dir.join(STATE_FILE), text.replace(&first, &"ab".repeat(32)))
            .expect("write");
        let err = PinStore::load(&dir).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");

        std::fs::remove_file(dir.join(STATE_FILE)).expect("rm");
        std::os::unix::fs::symlink("/etc/hostname", dir.join(STATE_FILE)).expect("ln");
        let err = PinStore::load(&dir).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
    }
}
