//! Complete Merkle subtree hashes on disk, one append-only file per level
//! (`level-00` holds the leaf hashes), 32 bytes per node at offset
//! `32 × index`. Proofs read O(log² n) nodes with positioned reads; memory
//! holds only the compact range. These files are derived data: recovery
//! rebuilds them from the entries, so they are never fsynced.

use ca_proto::merkle::{Hash, NodeStore};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

const LEVELS: usize = 64;

pub struct NodeFiles {
    dir: PathBuf,
    files: RwLock<Vec<Option<File>>>,
}

impl NodeFiles {
    /// Open (creating) the node directory, discarding whatever is in it:
    /// callers rebuild it from the entries.
    pub fn create_empty(dir: &Path) -> std::io::Result<NodeFiles> {
        std::fs::create_dir_all(dir)?;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with("level-") {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(NodeFiles {
            dir: dir.to_path_buf(),
            files: RwLock::new((0..LEVELS).map(|_| None).collect()),
        })
    }

    fn path(&self, level: u32) -> PathBuf {
        self.dir.join(format!("level-{level:02}"))
    }

    /// Append completed nodes (they arrive in index order per level).
    pub fn append(&self, nodes: &[(u32, u64, Hash)]) -> std::io::Result<()> {
        let mut by_level: Vec<Vec<u8>> = vec![Vec::new(); LEVELS];
        for (level, _, hash) in nodes {
            if let Some(buf) = by_level.get_mut(*level as usize) {
                buf.extend_from_slice(hash);
            }
        }
        let mut files = self.files.write().unwrap_or_else(|p| p.into_inner());
        for (level, buf) in by_level.iter().enumerate() {
            if buf.is_empty() {
                continue;
            }
            if files[level].is_none() {
                files[level] = Some(
                    OpenOptions::new()
                        .create(true)
                        .read(true)
                        .append(true)
                        .open(self.path(level as u32))?,
                );
            }
            if let Some(file) = files[level].as_mut() {
                file.write_all(buf)?;
            }
        }
        Ok(())
    }

    /// Cut every level back to a tree of `size` leaves (after a failed batch).
    pub fn truncate_to(&self, size: u64) -> std::io::Result<()> {
        let files = self.files.read().unwrap_or_else(|p| p.into_inner());
        for (level, file) in files.iter().enumerate() {
            if let Some(file) = file {
                file.set_len((size >> level) * 32)?;
            }
        }
        Ok(())
    }
}

impl NodeStore for NodeFiles {
    type Error = std::io::Error;

    fn node(&self, level: u32, index: u64) -> Result<Hash, std::io::Error> {
        let files = self.files.read().unwrap_or_else(|p| p.into_inner());
        let file = files
            .get(level as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no nodes at level {level}"),
                )
            })?;
        let mut hash = [0u8; 32];
        file.read_exact_at(&mut hash, index * 32)?;
        Ok(hash)
    }
}
