//! Complete Merkle subtree hashes on disk, one append-only file per level
//! (`level-00` holds the leaf hashes), 32 bytes per node at offset
//! `32 × index`. Proofs read O(log² n) nodes; the newest nodes of every
//! level (what proofs for fresh entries mostly touch) are also kept in a
//! bounded in-memory tail, so answering a batch costs no system calls.
//! These files are derived data: recovery rebuilds them from the entries,
//! so they are never fsynced; but each level's new nodes are written back
//! every `crate::writeback::CHUNK` bytes (`crate::writeback::Trail`), or the kernel
//! wrote 30 seconds' worth at once (10-15 MB at 5,000 certificates a
//! second) and the log's fdatasync waited behind it.

use ca_proto::merkle::{Hash, NodeStore};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

const LEVELS: usize = 64;
/// Nodes kept in memory per level: 64 KiB per level at most.
const TAIL: usize = 2048;

/// The newest nodes of one level: `nodes[i]` is node `first + i`.
#[derive(Default, Clone)]
struct Tail {
    first: u64,
    nodes: std::collections::VecDeque<Hash>,
}

/// One level's file, and where its write-back stands.
struct Level {
    file: File,
    trail: crate::writeback::Trail,
}

pub struct NodeFiles {
    dir: PathBuf,
    files: RwLock<Vec<Option<Level>>>,
    tails: RwLock<Vec<Tail>>,
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
            tails: RwLock::new(vec![Tail::default(); LEVELS]),
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
                let file = OpenOptions::new()
                    .create(true)
                    .read(true)
                    .append(true)
                    .open(self.path(level as u32))?;
                let trail = crate::writeback::Trail::at(file.metadata()?.len());
                files[level] = Some(Level { file, trail });
            }
            if let Some(at) = files[level].as_mut() {
                at.file.write_all(buf)?;
                if at.trail.grew(buf.len() as u64) {
                    // A hint: on failure the kernel writes it back later.
                    let _ = at.trail.write_back(&at.file, false);
                }
            }
        }
        drop(files);
        let mut tails = self.tails.write().unwrap_or_else(|p| p.into_inner());
        for (level, index, hash) in nodes {
            let Some(tail) = tails.get_mut(*level as usize) else {
                continue;
            };
            if tail.first + tail.nodes.len() as u64 != *index {
                // Not contiguous (first append after a rebuild): start over here.
                tail.first = *index;
                tail.nodes.clear();
            }
            tail.nodes.push_back(*hash);
            if tail.nodes.len() > TAIL {
                tail.nodes.pop_front();
                tail.first += 1;
            }
        }
        Ok(())
    }

    /// Cut every level back to a tree of `size` leaves (after a failed batch).
    pub fn truncate_to(&self, size: u64) -> std::io::Result<()> {
        let mut tails = self.tails.write().unwrap_or_else(|p| p.into_inner());
        for (level, tail) in tails.iter_mut().enumerate() {
            let keep = (size >> level).saturating_sub(tail.first) as usize;
            tail.nodes.truncate(keep);
        }
        drop(tails);
        let mut files = self.files.write().unwrap_or_else(|p| p.into_inner());
        for (level, at) in files.iter_mut().enumerate() {
            if let Some(at) = at {
                let len = (size >> level) * 32;
                at.file.set_len(len)?;
                at.trail.truncated(len);
            }
        }
        Ok(())
    }
}

impl NodeStore for NodeFiles {
    type Error = std::io::Error;

    fn node(&self, level: u32, index: u64) -> Result<Hash, std::io::Error> {
        {
            let tails = self.tails.read().unwrap_or_else(|p| p.into_inner());
            if let Some(tail) = tails.get(level as usize) {
                if index >= tail.first {
                    if let Some(hash) = tail.nodes.get((index - tail.first) as usize) {
                        return Ok(*hash);
                    }
                }
            }
        }
        let files = self.files.read().unwrap_or_else(|p| p.into_inner());
        let file = files
            .get(level as usize)
            .and_then(Option::as_ref)
            .map(|at| &at.file)
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

#[cfg(test)]
mod tests {
    use super::*;
    use ca_proto::merkle::{inclusion_proof, leaf_hash, CompactRange, MemoryNodeStore};

    #[test]
    fn proofs_from_files_and_tail_match_memory_and_survive_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let files = NodeFiles::create_empty(dir.path()).unwrap();
        let mut memory = MemoryNodeStore::new();
        let mut range = CompactRange::new();
        // more leaves than the tail holds, so old nodes come from disk
        for i in 0..(TAIL as u64 * 2 + 37) {
            let completed = range.append(leaf_hash(&i.to_be_bytes()));
            files.append(&completed).unwrap();
            memory.add(&completed).unwrap();
        }
        let size = range.size();
        for index in [0, 1, 700, size / 2, size - 40, size - 1] {
            assert_eq!(
                inclusion_proof(&files, index, size).unwrap(),
                inclusion_proof(&memory, index, size).unwrap(),
                "index {index}"
            );
        }
        // a failed batch is cut away: the tail forgets it too
        files.truncate_to(size - 5).unwrap();
        assert!(files.node(0, size - 1).is_err());
        assert_eq!(
            files.node(0, size - 6).unwrap(),
            memory.node(0, size - 6).unwrap()
        );
    }
}
