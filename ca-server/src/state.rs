//! The layout of the state directory, in one place:
//!
//! ```text
//! classes/<class>/state.toml      key labels and intermediate lifecycle
//! classes/<class>/root.pem        the class root (trust anchor)
//! classes/<class>/intermediate.pem the active intermediate
//! classes/<class>/chain.pem       active intermediate + root
//! classes/<class>/intermediates/<key-label>.pem every intermediate ever made
//! classes/<class>/roots/<key-label>.pem  every root; <new>.cross-<old>.pem cross certificates
//! classes/<class>/bundle.pem      every published root (what peers trust)
//! tls/server.pem, tls/server.key  the server's own certificate chain and key
//! log/<log_id>/                   one replica's issuance log (files: `log::LogPaths`)
//! ca-server.pid                   the pid of the server serving this directory
//! ```
//!
//! Every path into the state directory is built here; nothing else joins
//! names onto its root.

use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `classes/`: one directory per class.
    pub fn classes_dir(&self) -> PathBuf {
        self.root.join("classes")
    }
    pub fn class_dir(&self, class: &str) -> PathBuf {
        self.classes_dir().join(class)
    }
    pub fn class_state(&self, class: &str) -> PathBuf {
        self.class_dir(class).join("state.toml")
    }
    pub fn root_cert(&self, class: &str) -> PathBuf {
        self.class_dir(class).join("root.pem")
    }
    pub fn intermediate_cert(&self, class: &str) -> PathBuf {
        self.class_dir(class).join("intermediate.pem")
    }
    pub fn chain(&self, class: &str) -> PathBuf {
        self.class_dir(class).join("chain.pem")
    }
    /// Every intermediate the class ever had, one PEM file per key label.
    pub fn intermediates_dir(&self, class: &str) -> PathBuf {
        self.class_dir(class).join("intermediates")
    }
    pub fn intermediate_by_label(&self, class: &str, key_label: &str) -> PathBuf {
        self.intermediates_dir(class)
            .join(format!("{key_label}.pem"))
    }
    /// Every root of the class (and the cross certificates between them).
    pub fn roots_dir(&self, class: &str) -> PathBuf {
        self.class_dir(class).join("roots")
    }
    /// Every root of the class by key label (published or not).
    pub fn root_by_label(&self, class: &str, key_label: &str) -> PathBuf {
        self.roots_dir(class).join(format!("{key_label}.pem"))
    }
    /// `new` root cross-signed by the `old` root.
    pub fn cross_cert(&self, class: &str, new: &str, old: &str) -> PathBuf {
        self.roots_dir(class).join(format!("{new}.cross-{old}.pem"))
    }
    /// Every published root, concatenated: what peers should trust.
    pub fn bundle(&self, class: &str) -> PathBuf {
        self.class_dir(class).join("bundle.pem")
    }
    /// The server's own TLS material.
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }
    pub fn tls_chain(&self) -> PathBuf {
        self.tls_dir().join("server.pem")
    }
    pub fn tls_key(&self) -> PathBuf {
        self.tls_dir().join("server.key")
    }
    /// One replica's issuance log (`log.dat`, `nodes/`, `log-key.pem`,
    /// `lock`: see `log::LogPaths`).
    pub fn log_dir(&self, log_id: &str) -> PathBuf {
        self.root.join("log").join(log_id)
    }
    /// The pid of the server serving this state directory, written at start
    /// and removed at a clean stop; admin commands signal it (SIGHUP).
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("ca-server.pid")
    }
}

/// Write a file atomically (temp file, fsync, rename, fsync dir) with `mode`.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_lives_in_its_state_dir_path() {
        let state = StateDir::new("/var/lib/trellis");
        assert_eq!(
            crate::log::LogPaths::new(state.root(), "dev-1").dir,
            state.log_dir("dev-1")
        );
        assert_eq!(
            state.pid_file(),
            Path::new("/var/lib/trellis/ca-server.pid")
        );
        assert_eq!(
            state.intermediate_by_label("db", "k"),
            state.intermediates_dir("db").join("k.pem")
        );
    }
}
