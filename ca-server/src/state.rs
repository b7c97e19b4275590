//! The layout of the state directory, in one place:
//!
//! ```text
//! classes/<class>/state.toml      key labels and intermediate lifecycle
//! classes/<class>/root.pem        the class root (trust anchor)
//! classes/<class>/intermediate.pem the active intermediate
//! classes/<class>/chain.pem       active intermediate + root
//! classes/<class>/intermediates/<key-label>.pem every intermediate ever made
//! tls/server.pem, tls/server.key  the server's own certificate chain and key
//! ```

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
    pub fn class_dir(&self, class: &str) -> PathBuf {
        self.root.join("classes").join(class)
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
    pub fn intermediate_by_label(&self, class: &str, key_label: &str) -> PathBuf {
        self.class_dir(class)
            .join("intermediates")
            .join(format!("{key_label}.pem"))
    }
    /// Every root of the class by key label (published or not).
    pub fn root_by_label(&self, class: &str, key_label: &str) -> PathBuf {
        self.class_dir(class)
            .join("roots")
            .join(format!("{key_label}.pem"))
    }
    /// `new` root cross-signed by the `old` root.
    pub fn cross_cert(&self, class: &str, new: &str, old: &str) -> PathBuf {
        self.class_dir(class)
            .join("roots")
            .join(format!("{new}.cross-{old}.pem"))
    }
    /// Every published root, concatenated: what peers should trust.
    pub fn bundle(&self, class: &str) -> PathBuf {
        self.class_dir(class).join("bundle.pem")
    }
    pub fn tls_chain(&self) -> PathBuf {
        self.root.join("tls").join("server.pem")
    }
    pub fn tls_key(&self) -> PathBuf {
        self.root.join("tls").join("server.key")
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
