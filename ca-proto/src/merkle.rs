//! The issuance log's Merkle tree: RFC 6962 / RFC 9162 §2.1 hashing, a
//! compact range for O(log n) appends, and inclusion and consistency proofs.
//!
//! Hashing (RFC 9162 §2.1.1), SHA-256 throughout:
//!
//! - the empty tree: `SHA-256("")` ([`empty_root`]);
//! - a leaf: `SHA-256(0x00 || entry)` ([`leaf_hash`]);
//! - an interior node: `SHA-256(0x01 || left || right)` ([`node_hash`]);
//! - a tree of `n > 1` leaves splits at `k`, the largest power of two smaller
//!   than `n`: `MTH(D[n]) = node_hash(MTH(D[0:k]), MTH(D[k:n]))`.
//!
//! Storage model. Only *complete* (perfect) subtrees are ever stored: node
//! `(level, index)` covers leaves `[index << level, (index + 1) << level)`,
//! level 0 being the leaf hashes. Once formed, such a node never changes, so a
//! storage layer can keep one append-only file per level. [`CompactRange`]
//! holds the tree's right edge (one complete subtree per set bit of the size)
//! and, on each [`CompactRange::append`], reports every complete node newly
//! formed. Any root, inclusion proof or consistency proof of any earlier size
//! is then computed from complete nodes read through a [`NodeStore`]:
//! `O(log n)` reads for a root, `O(log² n)` for a proof.
//!
//! Verification ([`verify_inclusion`], [`verify_consistency`]) follows the
//! algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2 step by step and never
//! panics, whatever the input.

use sha2::{Digest, Sha256};
use thiserror::Error;

/// A SHA-256 hash: a leaf hash, a node hash or a tree root.
pub type Hash = [u8; 32];

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The hash of a leaf: `SHA-256(0x00 || entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(entry);
    h.finalize().into()
}

/// The hash of an interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Parse a hash written as exactly 64 lowercase hexadecimal digits (the form
/// used on the wire); anything else is `None`.
pub fn hash_from_hex(s: &str) -> Option<Hash> {
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// A hash as the wire writes it: 64 lowercase hexadecimal digits.
/// (`hex::encode` builds its string a character at a time, which showed
/// in profiles of the log writer: a proof is some twenty of these.)
pub fn hash_to_hex(hash: &Hash) -> String {
    let mut out = [0u8; 64];
    // Neither can fail: the buffer is exactly twice the hash's length, and
    // hexadecimal digits are ASCII.
    let _ = hex::encode_to_slice(hash, &mut out);
    std::str::from_utf8(&out)
        .map(str::to_owned)
        .unwrap_or_default()
}

/// Read access to the complete (perfect) subtree nodes of a log.
///
/// Level 0 holds the leaf hashes; node `(level, index)` is the root of the
/// complete subtree over leaves `[index << level, (index + 1) << level)`.
/// Only nodes that [`CompactRange::append`] has reported are ever asked for.
pub trait NodeStore {
    /// Why a node could not be read (I/O error, node not written yet, ...).
    type Error;
    /// The hash of complete node `(level, index)`.
    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// Why a [`MemoryNodeStore`] could not read or add a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum MemoryStoreError {
    /// The node has not been added.
    #[error("node (level {level}, index {index}) is not in the store")]
    Missing {
        /// The node's level.
        level: u32,
        /// The node's index within its level.
        index: u64,
    },
    /// Adding the node would leave a hole: nodes of a level must be added in
    /// index order, as [`CompactRange::append`] reports them.
    #[error("node (level {level}, index {index}) added out of order")]
    OutOfOrder {
        /// The node's level.
        level: u32,
        /// The node's index within its level.
        index: u64,
    },
    /// The node is already stored with a different hash (history rewritten).
    #[error("node (level {level}, index {index}) is already stored with another hash")]
    Conflict {
        /// The node's level.
        level: u32,
        /// The node's index within its level.
        index: u64,
    },
}

/// A [`NodeStore`] held in memory, one vector per level; for tests and
/// small logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryNodeStore {
    levels: Vec<Vec<Hash>>,
}

impl MemoryNodeStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add completed nodes `(level, index, hash)`, as returned by
    /// [`CompactRange::append`]. Within a level, nodes must come in index
    /// order; adding a node that is already stored with the same hash is a
    /// no-op. Nodes are added one by one, so on an error the nodes before the
    /// offending one are kept.
    pub fn add(&mut self, completed: &[(u32, u64, Hash)]) -> Result<(), MemoryStoreError> {
        for &(level, index, hash) in completed {
            let out_of_order = MemoryStoreError::OutOfOrder { level, index };
            if level >= 64 {
                return Err(out_of_order);
            }
            let l = level as usize;
            if self.levels.len() <= l {
                self.levels.resize_with(l + 1, Vec::new);
            }
            let nodes = &mut self.levels[l];
            let i = usize::try_from(index).map_err(|_| out_of_order)?;
            match nodes.get(i) {
                Some(existing) if *existing == hash => {}
                Some(_) => return Err(MemoryStoreError::Conflict { level, index }),
                None if i == nodes.len() => nodes.push(hash),
                None => return Err(out_of_order),
            }
        }
        Ok(())
    }

    /// The number of leaves stored (nodes at level 0).
    pub fn leaf_count(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }
}

impl NodeStore for MemoryNodeStore {
    type Error = MemoryStoreError;

    fn node(&self, level: u32, index: u64) -> Result<Hash, MemoryStoreError> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.levels.get(level as usize)?.get(i))
            .copied()
            .ok_or(MemoryStoreError::Missing { level, index })
    }
}

/// The right edge of the tree: the roots of the complete subtrees that make
/// up the first `size` leaves, one per set bit of `size`, highest level
/// (leftmost) first. `O(log n)` memory; [`append`](Self::append) is
/// `O(log n)` hashing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    peaks: Vec<Hash>,
}

impl CompactRange {
    /// The range of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append a leaf hash (see [`leaf_hash`]) as leaf number `size()`.
    ///
    /// Returns every complete node newly formed, as `(level, index, hash)`
    /// in increasing level: first the leaf itself `(0, size, leaf)`, then
    /// each parent completed by it. A storage layer appends them to its
    /// per-level files.
    ///
    /// A range already holding `u64::MAX` leaves is full: the call changes
    /// nothing and returns an empty vector.
    pub fn append(&mut self, leaf: Hash) -> Vec<(u32, u64, Hash)> {
        let Some(new_size) = self.size.checked_add(1) else {
            return Vec::new();
        };
        let mut index = self.size;
        let mut completed = vec![(0, index, leaf)];
        let mut hash = leaf;
        let mut level = 0u32;
        // Each trailing one bit of the old size is a peak, lowest last, that
        // the new node completes.
        while index & 1 == 1 {
            let Some(left) = self.peaks.pop() else {
                // Unreachable: the number of peaks is popcount(size).
                break;
            };
            hash = node_hash(&left, &hash);
            level += 1;
            index >>= 1;
            completed.push((level, index, hash));
        }
        self.peaks.push(hash);
        self.size = new_size;
        completed
    }

    /// The RFC 6962 Merkle tree hash of all leaves appended so far
    /// ([`empty_root`] for none).
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(&last) = peaks.next() else {
            return empty_root();
        };
        peaks.fold(last, |acc, left| node_hash(left, &acc))
    }

    /// The peaks, highest level (leftmost) first.
    pub fn peaks(&self) -> &[Hash] {
        &self.peaks
    }

    /// Rebuild a range from saved peaks (highest level first); `None` unless
    /// there is exactly one peak per set bit of `size`.
    pub fn from_peaks(size: u64, peaks: Vec<Hash>) -> Option<Self> {
        (peaks.len() == size.count_ones() as usize).then_some(Self { size, peaks })
    }

    /// Rebuild the range of the first `size` leaves from the complete nodes
    /// of a store (`popcount(size)` reads), e.g. after a restart.
    pub fn from_store<S: NodeStore>(store: &S, size: u64) -> Result<Self, S::Error> {
        let mut peaks = Vec::with_capacity(size.count_ones() as usize);
        let mut start = 0u64;
        for level in (0..64u32).rev() {
            if size >> level & 1 == 1 {
                peaks.push(store.node(level, start >> level)?);
                start += 1 << level;
            }
        }
        Ok(Self { size, peaks })
    }
}

/// The largest power of two strictly smaller than `n`; `n` must be at least 2.
fn split_point(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// The Merkle tree hash of leaves `[start, end)`, computed from complete
/// nodes of the store.
///
/// The ranges proofs need have a `start` that is a multiple of a power of
/// two at least as large as `end - start` (RFC 9162's recursion produces no
/// others); for those this takes at most one read per set bit of
/// `end - start`. Other ranges are still hashed correctly but may read up to
/// `end - start` leaves. `start >= end` is the empty list: [`empty_root`].
pub fn subtree_hash<S: NodeStore>(store: &S, start: u64, end: u64) -> Result<Hash, S::Error> {
    if start >= end {
        return Ok(empty_root());
    }
    range_hash(store, start, end - start)
}

/// MTH of the `n >= 1` leaves starting at `start`.
fn range_hash<S: NodeStore>(store: &S, start: u64, n: u64) -> Result<Hash, S::Error> {
    if n.is_power_of_two() && start % n == 0 {
        return store.node(n.trailing_zeros(), start >> n.trailing_zeros());
    }
    // Not one complete node (n >= 2 here, since n == 1 is always aligned).
    let k = split_point(n);
    let left = range_hash(store, start, k)?;
    let right = range_hash(store, start + k, n - k)?;
    Ok(node_hash(&left, &right))
}

/// The Merkle tree hash of the first `size` leaves (`O(log n)` reads).
pub fn root_at<S: NodeStore>(store: &S, size: u64) -> Result<Hash, S::Error> {
    subtree_hash(store, 0, size)
}

/// Why a proof could not be produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ProofError<E> {
    /// The index or sizes asked for do not describe a proof: an index not
    /// below the tree size, or an old size above the new size.
    #[error("proof parameters out of range")]
    OutOfRange,
    /// The node store failed.
    #[error("node store: {0}")]
    Store(E),
}

/// The inclusion proof of leaf `index` in the tree of the first `size`
/// leaves: RFC 9162 §2.1.3.1 `PATH(index, D[size])`, sibling hashes from the
/// leaf upwards. [`ProofError::OutOfRange`] unless `index < size`.
pub fn inclusion_proof<S: NodeStore>(
    store: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if index >= size {
        return Err(ProofError::OutOfRange);
    }
    // Walk down from the root, collecting the sibling of each subtree that
    // contains the leaf; PATH lists them bottom-up.
    let (mut lo, mut hi) = (0u64, size);
    let mut path = Vec::new();
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if index < lo + k {
            path.push(subtree_hash(store, lo + k, hi).map_err(ProofError::Store)?);
            hi = lo + k;
        } else {
            path.push(subtree_hash(store, lo, lo + k).map_err(ProofError::Store)?);
            lo += k;
        }
    }
    path.reverse();
    Ok(path)
}

/// The consistency proof between the trees of the first `old_size` and
/// `new_size` leaves: RFC 9162 §2.1.4.1 `PROOF(old_size, D[new_size])`.
///
/// Empty when `old_size` is 0 or equal to `new_size` (nothing to prove);
/// [`ProofError::OutOfRange`] when `old_size > new_size`.
pub fn consistency_proof<S: NodeStore>(
    store: &S,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if old_size > new_size {
        return Err(ProofError::OutOfRange);
    }
    if old_size == 0 || old_size == new_size {
        return Ok(Vec::new());
    }
    // SUBPROOF(m, D[lo:hi], b), unrolled: each step appends one sibling after
    // the inner subproof, so collect them and emit in reverse.
    let (mut lo, mut hi, mut m) = (0u64, new_size, old_size);
    let mut whole_old_tree = true; // RFC's `b`
    let mut siblings = Vec::new();
    let mut proof = Vec::new();
    loop {
        let n = hi - lo;
        if m == n {
            if !whole_old_tree {
                proof.push(subtree_hash(store, lo, hi).map_err(ProofError::Store)?);
            }
            break;
        }
        let k = split_point(n);
        if m <= k {
            siblings.push(subtree_hash(store, lo + k, hi).map_err(ProofError::Store)?);
            hi = lo + k;
        } else {
            siblings.push(subtree_hash(store, lo, lo + k).map_err(ProofError::Store)?);
            lo += k;
            m -= k;
            whole_old_tree = false;
        }
    }
    proof.extend(siblings.into_iter().rev());
    Ok(proof)
}

/// Verify that `leaf` (a [`leaf_hash`]) is leaf number `index` of the tree of
/// `size` leaves whose root is `root`, following RFC 9162 §2.1.3.2.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    // 1. The index must lie within the tree.
    if index >= size {
        return false;
    }
    // 2-3.
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    // 4.
    for p in proof {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    // 5.
    sn == 0 && r == *root
}

/// Verify that the tree of `new_size` leaves with root `new_root` extends the
/// tree of `old_size` leaves with root `old_root`, following RFC 9162
/// §2.1.4.2.
///
/// The cases the RFC leaves to the caller: `old_size > new_size` fails;
/// `old_size == new_size` holds iff the proof is empty and the roots are
/// equal; `old_size == 0` holds iff the proof is empty and `old_root` is
/// [`empty_root`] (every tree extends the empty one).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        return proof.is_empty() && *old_root == empty_root();
    }
    // 1. An empty proof proves nothing here.
    if proof.is_empty() {
        return false;
    }
    // 2. The old tree is a complete subtree of the new one: its root is the
    //    proof's implicit first element.
    let (first, rest) = if old_size.is_power_of_two() {
        (old_root, proof)
    } else {
        (&proof[0], &proof[1..])
    };
    // 3-4.
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    // 5.
    let (mut fr, mut sr) = (*first, *first);
    // 6.
    for c in rest {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    // 7.
    fr == *old_root && sr == *new_root && sn == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    // ── An independent reference, written straight from RFC 6962 §2.1 ──────

    fn sha256(parts: &[&[u8]]) -> Hash {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        h.finalize().into()
    }

    /// k: the largest power of two smaller than n (n > 1), by counting up.
    fn naive_k(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    /// MTH(D[n]) over the raw entries.
    fn naive_mth(d: &[Vec<u8>]) -> Hash {
        match d.len() {
            0 => sha256(&[]),
            1 => sha256(&[&[0u8], &d[0]]),
            n => {
                let k = naive_k(n);
                sha256(&[&[1u8], &naive_mth(&d[..k]), &naive_mth(&d[k..])])
            }
        }
    }

    /// PATH(m, D[n]).
    fn naive_path(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
        let n = d.len();
        if n == 1 {
            return vec![];
        }
        let k = naive_k(n);
        if m < k {
            let mut p = naive_path(m, &d[..k]);
            p.push(naive_mth(&d[k..]));
            p
        } else {
            let mut p = naive_path(m - k, &d[k..]);
            p.push(naive_mth(&d[..k]));
            p
        }
    }

    /// SUBPROOF(m, D[n], b).
    fn naive_subproof(m: usize, d: &[Vec<u8>], b: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if b { vec![] } else { vec![naive_mth(d)] };
        }
        let k = naive_k(n);
        if m <= k {
            let mut p = naive_subproof(m, &d[..k], b);
            p.push(naive_mth(&d[k..]));
            p
        } else {
            let mut p = naive_subproof(m - k, &d[k..], false);
            p.push(naive_mth(&d[..k]));
            p
        }
    }

    /// Every complete node of the tree over `d`, computed by naive hashing.
    fn naive_store(d: &[Vec<u8>]) -> MemoryNodeStore {
        let mut store = MemoryNodeStore::new();
        for level in 0..64u32 {
            let width = 1usize << level;
            if width > d.len() {
                break;
            }
            let nodes: Vec<_> = (0..d.len() / width)
                .map(|i| (level, i as u64, naive_mth(&d[i * width..(i + 1) * width])))
                .collect();
            store.add(&nodes).unwrap();
        }
        store
    }

    fn entries(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("entry {i}").into_bytes()).collect()
    }

    fn h(s: &str) -> Hash {
        hash_from_hex(s).unwrap()
    }

    // ── Known answers: the RFC 6962 test vectors used by CT implementations
    //    (e.g. transparency-dev/merkle proof/verify_test.go) ───────────────

    fn ct_entries() -> Vec<Vec<u8>> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|s| hex::decode(s).unwrap())
        .collect()
    }

    /// Roots of the trees of sizes 0..=8 over [`ct_entries`].
    const CT_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    /// (leaf index, tree size, proof); the source numbers leaves from 1.
    const CT_INCLUSION: &[(u64, u64, &[&str])] = &[
        (0, 1, &[]),
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];

    /// (old size, new size, proof).
    const CT_CONSISTENCY: &[(u64, u64, &[&str])] = &[
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            7,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];

    fn hashes(v: &[&str]) -> Vec<Hash> {
        v.iter().map(|s| h(s)).collect()
    }

    #[test]
    fn primitives_match_rfc_definitions() {
        assert_eq!(empty_root(), h(CT_ROOTS[0]));
        assert_eq!(empty_root(), sha256(&[]));
        assert_eq!(leaf_hash(b""), h(CT_ROOTS[1]));
        assert_eq!(leaf_hash(b"abc"), sha256(&[b"\x00abc"]));
        let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
        assert_eq!(node_hash(&a, &b), sha256(&[&[1], &a, &b]));
        assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
    }

    #[test]
    fn known_answer_roots() {
        let d = ct_entries();
        // The reference implementation agrees with the published vectors...
        for (n, want) in CT_ROOTS.iter().enumerate() {
            assert_eq!(hex::encode(naive_mth(&d[..n])), *want, "naive, size {n}");
        }
        // ...and so do the compact range and the store.
        let mut range = CompactRange::new();
        let mut store = MemoryNodeStore::new();
        assert_eq!(range.root(), h(CT_ROOTS[0]));
        for (i, e) in d.iter().enumerate() {
            store.add(&range.append(leaf_hash(e))).unwrap();
            assert_eq!(range.root(), h(CT_ROOTS[i + 1]), "range, size {}", i + 1);
        }
        for (n, want) in CT_ROOTS.iter().enumerate() {
            assert_eq!(
                root_at(&store, n as u64).unwrap(),
                h(want),
                "store, size {n}"
            );
        }
        assert_eq!(
            hex::encode(range.root()),
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
        );
    }

    #[test]
    fn known_answer_inclusion_proofs() {
        let d = ct_entries();
        let store = naive_store(&d);
        for &(index, size, proof) in CT_INCLUSION {
            let want = hashes(proof);
            assert_eq!(
                inclusion_proof(&store, index, size).unwrap(),
                want,
                "{index}/{size}"
            );
            let leaf = leaf_hash(&d[index as usize]);
            let root = h(CT_ROOTS[size as usize]);
            assert!(verify_inclusion(&leaf, index, size, &want, &root));
        }
    }

    #[test]
    fn known_answer_consistency_proofs() {
        let store = naive_store(&ct_entries());
        for &(m, n, proof) in CT_CONSISTENCY {
            let want = hashes(proof);
            assert_eq!(consistency_proof(&store, m, n).unwrap(), want, "{m}->{n}");
            let (r1, r2) = (h(CT_ROOTS[m as usize]), h(CT_ROOTS[n as usize]));
            assert!(verify_consistency(m, n, &r1, &r2, &want), "{m}->{n}");
        }
    }

    // ── Against the naive reference ─────────────────────────────────────────

    #[test]
    fn roots_match_naive_for_every_size() {
        let d = entries(130);
        let mut range = CompactRange::new();
        let mut store = MemoryNodeStore::new();
        for n in 0..=130usize {
            let want = naive_mth(&d[..n]);
            assert_eq!(range.size(), n as u64);
            assert_eq!(range.root(), want, "compact range, size {n}");
            assert_eq!(
                root_at(&store, n as u64).unwrap(),
                want,
                "root_at, size {n}"
            );
            assert_eq!(range.peaks().len(), n.count_ones() as usize);
            assert_eq!(CompactRange::from_store(&store, n as u64).unwrap(), range);
            if n < 130 {
                store.add(&range.append(leaf_hash(&d[n]))).unwrap();
            }
        }
        // Beyond what the store holds: a store error, not a wrong answer.
        assert_eq!(
            root_at(&store, 131),
            Err(MemoryStoreError::Missing {
                level: 0,
                index: 130
            })
        );
    }

    #[test]
    fn append_returns_exactly_the_completed_nodes() {
        let d = entries(130);
        let full = naive_store(&d);
        let mut range = CompactRange::new();
        let mut seen = MemoryNodeStore::new();
        for (i, e) in d.iter().enumerate() {
            let got = range.append(leaf_hash(e));
            // Exactly the nodes whose last leaf is leaf i: (level, index)
            // with (index + 1) << level == i + 1, in increasing level.
            let want: Vec<_> = (0..64u32)
                .take_while(|&l| (i + 1) % (1 << l) == 0)
                .map(|l| {
                    let index = ((i + 1) >> l) as u64 - 1;
                    (l, index, full.node(l, index).unwrap())
                })
                .collect();
            assert_eq!(got, want, "after leaf {i}");
            seen.add(&got).unwrap();
        }
        assert_eq!(seen, full);
    }

    #[test]
    fn subtree_hash_matches_naive_for_any_range() {
        let d = entries(40);
        let store = naive_store(&d);
        for start in 0..=40usize {
            for end in start..=40usize {
                let got = subtree_hash(&store, start as u64, end as u64).unwrap();
                assert_eq!(got, naive_mth(&d[start..end]), "[{start}, {end})");
            }
        }
        assert_eq!(subtree_hash(&store, 5, 3).unwrap(), empty_root());
    }

    #[test]
    fn from_peaks_checks_the_count() {
        let mut range = CompactRange::new();
        for e in entries(13) {
            range.append(leaf_hash(&e));
        }
        let again = CompactRange::from_peaks(13, range.peaks().to_vec()).unwrap();
        assert_eq!(again, range);
        assert!(CompactRange::from_peaks(12, range.peaks().to_vec()).is_none());
        assert!(CompactRange::from_peaks(13, range.peaks()[1..].to_vec()).is_none());
        assert_eq!(
            CompactRange::from_peaks(0, vec![]).unwrap().root(),
            empty_root()
        );
    }

    #[test]
    fn full_range_refuses_to_append() {
        let mut range = CompactRange::from_peaks(u64::MAX, vec![[7; 32]; 64]).unwrap();
        let before = range.clone();
        assert!(range.append([1; 32]).is_empty());
        assert_eq!(range, before);
        // One below full (size ends in a 0 bit): the leaf completes no
        // parent and becomes the 64th peak.
        let mut range = CompactRange::from_peaks(u64::MAX - 1, vec![[7; 32]; 63]).unwrap();
        assert_eq!(range.append([1; 32]).len(), 1);
        assert_eq!(range.size(), u64::MAX);
        assert_eq!(range.peaks().len(), 64);
    }

    /// Values near `x` (and 0), other than `x`, at most `max`: the
    /// alterations the tampering tests try.
    fn altered(x: u64, max: u64) -> Vec<u64> {
        let mut v = vec![0, x / 2, x.saturating_mul(2), x + 1, x ^ 1, x ^ 2, x ^ 4];
        v.extend(x.checked_sub(1));
        v.sort_unstable();
        v.dedup();
        v.retain(|&y| y != x && y <= max);
        v
    }

    /// Flip one bit of one byte.
    fn flipped(h: &Hash, byte: usize) -> Hash {
        let mut h = *h;
        h[byte % 32] ^= 0x10;
        h
    }

    #[test]
    fn inclusion_proofs_verify_and_detect_tampering() {
        let d = entries(140);
        let store = naive_store(&d[..70]);
        let roots: Vec<Hash> = (0..=140).map(|n| naive_mth(&d[..n])).collect();
        let mut checked = 0;
        for size in 1..=70u64 {
            let root = roots[size as usize];
            for index in 0..size {
                let leaf = leaf_hash(&d[index as usize]);
                let proof = inclusion_proof(&store, index, size).unwrap();
                assert_eq!(proof, naive_path(index as usize, &d[..size as usize]));
                assert!(verify_inclusion(&leaf, index, size, &proof, &root));

                // Altered leaf.
                assert!(!verify_inclusion(
                    &flipped(&leaf, 0),
                    index,
                    size,
                    &proof,
                    &root
                ));
                let other = leaf_hash(b"not an entry");
                assert!(!verify_inclusion(&other, index, size, &proof, &root));
                // Altered index, in and out of range.
                for other in altered(index, size + 1) {
                    assert!(!verify_inclusion(&leaf, other, size, &proof, &root));
                }
                assert!(!verify_inclusion(&leaf, u64::MAX, size, &proof, &root));
                // Altered size: against the tree head of that size, and
                // against the same root.
                for other in altered(size, 140) {
                    let r = &roots[other as usize];
                    assert!(!verify_inclusion(&leaf, index, other, &proof, r));
                }
                assert!(!verify_inclusion(&leaf, index, size * 2, &proof, &root));
                // Altered root.
                assert!(!verify_inclusion(
                    &leaf,
                    index,
                    size,
                    &proof,
                    &flipped(&root, 31)
                ));
                assert!(!verify_inclusion(&leaf, index, size, &proof, &empty_root()));
                // Altered, dropped, added proof elements.
                for i in 0..proof.len() {
                    let mut p = proof.clone();
                    p[i] = flipped(&p[i], i);
                    assert!(!verify_inclusion(&leaf, index, size, &p, &root));
                    let mut p = proof.clone();
                    p.remove(i);
                    assert!(!verify_inclusion(&leaf, index, size, &p, &root));
                }
                let mut p = proof.clone();
                p.push(root);
                assert!(!verify_inclusion(&leaf, index, size, &p, &root));
                let mut p = proof.clone();
                p.insert(0, leaf);
                assert!(!verify_inclusion(&leaf, index, size, &p, &root));
                checked += 1;
            }
        }
        assert_eq!(checked, 70 * 71 / 2);
        assert_eq!(inclusion_proof(&store, 5, 5), Err(ProofError::OutOfRange));
        assert_eq!(inclusion_proof(&store, 0, 0), Err(ProofError::OutOfRange));
        assert!(matches!(
            inclusion_proof(&store, 0, 100),
            Err(ProofError::Store(MemoryStoreError::Missing { .. }))
        ));
    }

    #[test]
    fn consistency_proofs_verify_and_detect_tampering() {
        let d = entries(140);
        let store = naive_store(&d[..70]);
        let roots: Vec<Hash> = (0..=140).map(|n| naive_mth(&d[..n])).collect();
        let mut checked = 0;
        for n in 1..=70u64 {
            for m in 1..=n {
                let (r1, r2) = (roots[m as usize], roots[n as usize]);
                let proof = consistency_proof(&store, m, n).unwrap();
                assert_eq!(
                    proof,
                    naive_subproof(m as usize, &d[..n as usize], true),
                    "{m}->{n}"
                );
                assert!(verify_consistency(m, n, &r1, &r2, &proof), "{m}->{n}");

                // Altered old size or new size, with the tree heads of the
                // altered sizes...
                for other in altered(m, 140) {
                    let r = roots[other as usize];
                    // (Size 0 with an empty proof is rightly consistent.)
                    if !(other == 0 && proof.is_empty()) {
                        assert!(!verify_consistency(other, n, &r, &r2, &proof), "{m}->{n}");
                    }
                }
                for other in altered(n, 140) {
                    let r = roots[other as usize];
                    assert!(!verify_consistency(m, other, &r1, &r, &proof), "{m}->{n}");
                }
                // ...and with the same roots.
                assert!(!verify_consistency(m, n * 2, &r1, &r2, &proof), "{m}->{n}");
                // Altered roots.
                assert!(!verify_consistency(m, n, &flipped(&r1, 3), &r2, &proof));
                assert!(!verify_consistency(m, n, &r1, &flipped(&r2, 3), &proof));
                if m != n {
                    assert!(!verify_consistency(m, n, &r2, &r1, &proof));
                }
                // Altered, dropped, added proof elements.
                for i in 0..proof.len() {
                    let mut p = proof.clone();
                    p[i] = flipped(&p[i], i);
                    assert!(!verify_consistency(m, n, &r1, &r2, &p), "{m}->{n} [{i}]");
                    let mut p = proof.clone();
                    p.remove(i);
                    assert!(!verify_consistency(m, n, &r1, &r2, &p), "{m}->{n} -[{i}]");
                }
                for extra in [r1, r2, [0; 32]] {
                    let mut p = proof.clone();
                    p.push(extra);
                    assert!(!verify_consistency(m, n, &r1, &r2, &p));
                    let mut p = proof.clone();
                    p.insert(0, extra);
                    assert!(!verify_consistency(m, n, &r1, &r2, &p));
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 70 * 71 / 2);
    }

    #[test]
    fn consistency_edge_cases() {
        let d = entries(8);
        let store = naive_store(&d);
        let (e, r3) = (empty_root(), naive_mth(&d[..3]));
        assert_eq!(consistency_proof(&store, 4, 3), Err(ProofError::OutOfRange));
        assert_eq!(consistency_proof(&store, 0, 5).unwrap(), Vec::<Hash>::new());
        assert_eq!(consistency_proof(&store, 3, 3).unwrap(), Vec::<Hash>::new());
        // Every tree extends the empty one, whose root must be empty_root.
        assert!(verify_consistency(0, 3, &e, &r3, &[]));
        assert!(verify_consistency(0, 0, &e, &e, &[]));
        assert!(!verify_consistency(0, 3, &r3, &r3, &[]));
        assert!(!verify_consistency(0, 3, &e, &r3, &[e]));
        // Equal sizes: equal roots and an empty proof.
        assert!(verify_consistency(3, 3, &r3, &r3, &[]));
        assert!(!verify_consistency(3, 3, &r3, &e, &[]));
        assert!(!verify_consistency(3, 3, &r3, &r3, &[r3]));
        // Shrinking is never consistent.
        assert!(!verify_consistency(4, 3, &r3, &r3, &[]));
        assert!(!verify_consistency(u64::MAX, 3, &r3, &r3, &[r3]));
        // Huge sizes and garbage proofs: false, no panic.
        let junk = vec![[9u8; 32]; 70];
        assert!(!verify_consistency(u64::MAX - 1, u64::MAX, &r3, &r3, &junk));
        assert!(!verify_inclusion(&r3, u64::MAX - 1, u64::MAX, &junk, &r3));
        assert!(!verify_inclusion(&r3, 0, u64::MAX, &[], &r3));
    }

    #[test]
    fn memory_store_add_rules() {
        let mut s = MemoryNodeStore::new();
        s.add(&[(0, 0, [1; 32]), (0, 1, [2; 32])]).unwrap();
        s.add(&[(0, 1, [2; 32])]).unwrap(); // idempotent
        assert_eq!(
            s.add(&[(0, 1, [3; 32])]),
            Err(MemoryStoreError::Conflict { level: 0, index: 1 })
        );
        assert_eq!(
            s.add(&[(0, 3, [3; 32])]),
            Err(MemoryStoreError::OutOfOrder { level: 0, index: 3 })
        );
        assert_eq!(
            s.add(&[(64, 0, [3; 32])]),
            Err(MemoryStoreError::OutOfOrder {
                level: 64,
                index: 0
            })
        );
        assert_eq!(s.leaf_count(), 2);
        assert_eq!(s.node(0, 1), Ok([2; 32]));
        assert_eq!(
            s.node(u32::MAX, u64::MAX),
            Err(MemoryStoreError::Missing {
                level: u32::MAX,
                index: u64::MAX
            })
        );
    }

    #[test]
    fn hash_from_hex_is_strict() {
        let s = CT_ROOTS[8];
        assert_eq!(hex::encode(hash_from_hex(s).unwrap()), s);
        assert_eq!(hash_to_hex(&hash_from_hex(s).unwrap()), s);
        for b in 0..=255u8 {
            let h: Hash = std::array::from_fn(|i| b.wrapping_add((i as u8).wrapping_mul(37)));
            assert_eq!(hash_to_hex(&h), hex::encode(h));
        }
        assert!(hash_from_hex(&s.to_uppercase()).is_none());
        assert!(hash_from_hex(&s[1..]).is_none());
        assert!(hash_from_hex(&format!("{s}00")).is_none());
        assert!(hash_from_hex(&format!(" {}", &s[1..])).is_none());
        assert!(hash_from_hex("").is_none());
    }
}
