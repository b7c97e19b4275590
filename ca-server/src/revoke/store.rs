//! `classes/<class>/revocations.json`: the class's revocations, in the
//! shared state directory next to the intermediates, so that every replica
//! serving the class picks them up the way it picks up a rotation.
//!
//! The file is the list every replica publishes from (CRLs, OCSP) and
//! records into its own issuance log. It is only ever rewritten whole
//! (temp file, fsync, rename, fsync dir) under an exclusive `flock` on
//! `classes/<class>/revocations.lock`, and a revocation is checked against
//! the list read *under* that lock, so two replicas or an admin command
//! revoking at once neither lose one another's revocation nor revoke the
//! same serial twice. Records are never removed: keyCompromise records
//! keep their key blocked for good, and a CRL simply leaves out
//! certificates that expired.

use crate::state::{write_atomic, StateDir};
use ca_proto::revocation::RevocationReason;
use serde::{Deserialize, Serialize};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// The largest revocation list read (about 400,000 records).
pub const MAX_LIST_BYTES: u64 = 128 << 20;

/// One revoked certificate (a leaf, or an intermediate in `intermediates`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationRecord {
    /// Serial, lowercase hex.
    pub serial: String,
    /// SHA-256 of the certificate's SubjectPublicKeyInfo, hex.
    pub spki_sha256: String,
    /// SHA-256 fingerprint of the issuing certificate, hex.
    pub issuer: String,
    /// Key label of the issuing intermediate (for a revoked intermediate:
    /// the root's key label).
    pub issuer_key: String,
    /// The revoked certificate's notAfter, RFC 3339: CRLs list it until then.
    pub not_after: String,
    pub reason: RevocationReason,
    /// RFC 3339.
    pub revoked_at: String,
    /// Who revoked it: `admin`, an auth key id, or `holder`.
    pub by: String,
    /// For a revoked intermediate: its key label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationList {
    pub version: u32,
    /// Revoked leaves, in revocation order.
    #[serde(default)]
    pub revocations: Vec<RevocationRecord>,
    /// Revoked intermediates (listed on the root-signed CRL).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub intermediates: Vec<RevocationRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a revocation list: {message}")]
    Unreadable { path: String, message: String },
    #[error("{path}: larger than {MAX_LIST_BYTES} bytes")]
    TooLarge { path: String },
    #[error("certificate {serial} of class '{class}' is already revoked ({reason}, {revoked_at})")]
    AlreadyRevoked {
        class: String,
        serial: String,
        reason: RevocationReason,
        revoked_at: String,
    },
}

impl StoreError {
    pub fn code(&self) -> ca_proto::ErrorCode {
        match self {
            StoreError::AlreadyRevoked { .. } => ca_proto::ErrorCode::AlreadyRevoked,
            _ => ca_proto::ErrorCode::Internal,
        }
    }
}

pub fn list_path(state: &StateDir, class: &str) -> PathBuf {
    state.class_dir(class).join("revocations.json")
}

fn lock_path(state: &StateDir, class: &str) -> PathBuf {
    state.class_dir(class).join("revocations.lock")
}

/// The revocation list of a class (empty when the class has none yet).
pub fn read(state: &StateDir, class: &str) -> Result<RevocationList, StoreError> {
    let path = list_path(state, class);
    let shown = || path.display().to_string();
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(RevocationList {
                version: 1,
                ..RevocationList::default()
            })
        }
        Err(source) => {
            return Err(StoreError::Io {
                path: shown(),
                source,
            })
        }
    };
    use std::io::Read;
    let mut bytes = Vec::new();
    file.take(MAX_LIST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| StoreError::Io {
            path: shown(),
            source,
        })?;
    if bytes.len() as u64 > MAX_LIST_BYTES {
        return Err(StoreError::TooLarge { path: shown() });
    }
    let list: RevocationList =
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Unreadable {
            path: shown(),
            message: e.to_string(),
        })?;
    if list.version != 1 {
        return Err(StoreError::Unreadable {
            path: shown(),
            message: format!("version {} (this server reads version 1)", list.version),
        });
    }
    Ok(list)
}

/// Which list of the file a record goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Leaf,
    Intermediate,
}

/// Add `record` to the class's list: under the class's lock, refused when
/// the serial is already there (nothing is written then). Returns the list
/// as written.
pub fn add(
    state: &StateDir,
    class: &str,
    kind: Kind,
    record: RevocationRecord,
) -> Result<RevocationList, StoreError> {
    let _lock = ListLock::acquire(state, class)?;
    let mut list = read(state, class)?;
    let target = match kind {
        Kind::Leaf => &mut list.revocations,
        Kind::Intermediate => &mut list.intermediates,
    };
    if let Some(done) = target.iter().find(|r| r.serial == record.serial) {
        return Err(StoreError::AlreadyRevoked {
            class: class.to_string(),
            serial: done.serial.clone(),
            reason: done.reason,
            revoked_at: done.revoked_at.clone(),
        });
    }
    target.push(record);
    write(state, class, &list)?;
    Ok(list)
}

fn write(state: &StateDir, class: &str, list: &RevocationList) -> Result<(), StoreError> {
    let path = list_path(state, class);
    let bytes = serde_json::to_vec(list).map_err(|e| StoreError::Unreadable {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    write_atomic(&path, &bytes, 0o644).map_err(|source| StoreError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// The exclusive lock of a class's list; released when dropped.
struct ListLock {
    _file: std::fs::File,
}

impl ListLock {
    fn acquire(state: &StateDir, class: &str) -> Result<ListLock, StoreError> {
        let path = lock_path(state, class);
        let io = |source| StoreError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = crate::log::lock::open_lock_file(&path).map_err(io)?;
        // Blocking: a writer holds it for one read-modify-write only.
        // SAFETY: flock on a file descriptor this function owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(io(std::io::Error::last_os_error()));
        }
        Ok(ListLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(serial: &str) -> RevocationRecord {
        RevocationRecord {
            serial: serial.into(),
            spki_sha256: "ab".repeat(32),
            issuer: "cd".repeat(32),
            issuer_key: "db-int-x".into(),
            not_after: "2030-01-01T00:00:00Z".into(),
            reason: RevocationReason::KeyCompromise,
            revoked_at: "2026-12-05T00:00:00Z".into(),
            by: "admin".into(),
            key: None,
        }
    }

    #[test]
    fn adds_once_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        std::fs::create_dir_all(state.class_dir("db")).unwrap();
        assert!(read(&state, "db").unwrap().revocations.is_empty());
        add(&state, "db", Kind::Leaf, record("0a")).unwrap();
        let err = add(&state, "db", Kind::Leaf, record("0a")).unwrap_err();
        assert_eq!(err.code(), ca_proto::ErrorCode::AlreadyRevoked);
        add(&state, "db", Kind::Leaf, record("0b")).unwrap();
        add(&state, "db", Kind::Intermediate, record("0a")).unwrap();
        let list = read(&state, "db").unwrap();
        assert_eq!(list.revocations.len(), 2);
        assert_eq!(list.intermediates.len(), 1);
    }

    #[test]
    fn concurrent_adders_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        std::fs::create_dir_all(state.class_dir("db")).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let root = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    let state = StateDir::new(root);
                    for i in 0..10 {
                        add(&state, "db", Kind::Leaf, record(&format!("{t:02x}{i:02x}"))).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(read(&state, "db").unwrap().revocations.len(), 80);
    }

    #[test]
    fn refuses_garbage_and_other_versions() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        std::fs::create_dir_all(state.class_dir("db")).unwrap();
        std::fs::write(list_path(&state, "db"), b"{\"version\":2}").unwrap();
        assert!(read(&state, "db")
            .unwrap_err()
            .to_string()
            .contains("version 2"));
        std::fs::write(list_path(&state, "db"), b"nope").unwrap();
        assert!(matches!(
            read(&state, "db"),
            Err(StoreError::Unreadable { .. })
        ));
    }
}
