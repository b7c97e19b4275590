//! Postings: which entries (sequence numbers) carry a key (a serial, an
//! SPKI hash or a name id, as a `u64`), 16 bytes per posting.
//!
//! A sorted run of `(key, seq)` pairs plus a small sorted tail that new
//! postings go to; the tail is merged into the run when it holds more than
//! an eighth of it (at least 4096), so an append costs O(1) amortised
//! (about nine moves) and a lookup is two binary searches. A key's
//! sequence numbers come out in ascending order from each part, so
//! iterating them newest first from a cursor reads only what is returned.

use std::collections::BTreeSet;

/// Tail size that always triggers a merge, whatever the run's size.
const MIN_TAIL: usize = 4096;

#[derive(Default)]
pub struct Postings {
    run: Vec<(u64, u64)>,
    tail: BTreeSet<(u64, u64)>,
}

impl Postings {
    pub fn add(&mut self, key: u64, seq: u64) {
        self.tail.insert((key, seq));
        if self.tail.len() > MIN_TAIL.max(self.run.len() / 8) {
            self.merge();
        }
    }

    /// Merge the tail into the run (one pass, exact capacity).
    fn merge(&mut self) {
        let tail = std::mem::take(&mut self.tail);
        let mut merged = Vec::with_capacity(self.run.len() + tail.len());
        let mut run = std::mem::take(&mut self.run).into_iter().peekable();
        for posting in tail {
            while let Some(&r) = run.peek() {
                if r < posting {
                    merged.push(r);
                    run.next();
                } else {
                    break;
                }
            }
            merged.push(posting);
        }
        merged.extend(run);
        self.run = merged;
    }

    /// Forget every posting of an entry numbered `from` or later.
    pub fn truncate(&mut self, from: u64) {
        self.tail.retain(|(_, seq)| *seq < from);
        self.run.retain(|(_, seq)| *seq < from);
    }

    fn run_range(&self, key: u64) -> &[(u64, u64)] {
        let start = self.run.partition_point(|(k, _)| *k < key);
        let end = self.run.partition_point(|(k, _)| *k <= key);
        &self.run[start..end]
    }

    /// How many entries carry `key`.
    pub fn count(&self, key: u64) -> usize {
        self.run_range(key).len() + self.tail.range((key, 0)..=(key, u64::MAX)).count()
    }

    /// Whether entry `seq` carries `key`.
    pub fn contains(&self, key: u64, seq: u64) -> bool {
        self.run.binary_search(&(key, seq)).is_ok() || self.tail.contains(&(key, seq))
    }

    /// The entries carrying `key` numbered below `below`, newest first.
    pub fn newest_first(&self, key: u64, below: u64) -> impl Iterator<Item = u64> + '_ {
        let run = self.run_range(key);
        let cut = run.partition_point(|(_, s)| *s < below);
        let run = run[..cut].iter().rev().map(|(_, s)| *s);
        let tail = self
            .tail
            .range((key, 0)..(key, below))
            .rev()
            .map(|(_, s)| *s);
        MergeDesc::new(vec![Box::new(run), Box::new(tail)])
    }

    /// Every posting, in (key, seq) order.
    pub fn all(&self) -> Vec<(u64, u64)> {
        let mut all = self.run.clone();
        all.extend(self.tail.iter().copied());
        all.sort_unstable();
        all
    }

    pub fn len(&self) -> usize {
        self.run.len() + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes held: the run's capacity and the tail's nodes (a B-tree
    /// slot at ~2/3 fill).
    pub fn heap_bytes(&self) -> usize {
        self.run.capacity() * 16 + self.tail.len() * 24
    }
}

/// A boxed stream of sequence numbers, newest first.
pub type Seqs<'a> = Box<dyn Iterator<Item = u64> + 'a>;

/// Several descending streams merged into one descending stream (each
/// number once), lazily: k streams cost O(k) to start and O(log k) per
/// number.
pub struct MergeDesc<'a> {
    streams: Vec<Seqs<'a>>,
    heap: std::collections::BinaryHeap<(u64, usize)>,
    last: Option<u64>,
}

impl<'a> MergeDesc<'a> {
    pub fn new(mut streams: Vec<Seqs<'a>>) -> MergeDesc<'a> {
        let mut heap = std::collections::BinaryHeap::with_capacity(streams.len());
        for (i, s) in streams.iter_mut().enumerate() {
            if let Some(seq) = s.next() {
                heap.push((seq, i));
            }
        }
        MergeDesc {
            streams,
            heap,
            last: None,
        }
    }
}

impl Iterator for MergeDesc<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        loop {
            let (seq, i) = self.heap.pop()?;
            if let Some(next) = self.streams.get_mut(i).and_then(Iterator::next) {
                self.heap.push((next, i));
            }
            if self.last != Some(seq) {
                self.last = Some(seq);
                return Some(seq);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_see_the_run_and_the_tail_newest_first() {
        let mut p = Postings::default();
        // enough to merge several times, keys interleaved
        for seq in 0..20_000u64 {
            p.add(seq % 7, seq);
        }
        assert!(p.run.len() > 10_000 && !p.tail.is_empty());
        assert_eq!(p.count(3), (0..20_000).filter(|s| s % 7 == 3).count());
        let newest: Vec<u64> = p.newest_first(3, 100).take(3).collect();
        assert_eq!(newest, [94, 87, 80]);
        let all: Vec<u64> = p.newest_first(3, u64::MAX).collect();
        let expected: Vec<u64> = (0..20_000).rev().filter(|s| s % 7 == 3).collect();
        assert_eq!(all, expected);
        assert!(p.contains(3, 19_995) && !p.contains(3, 19_994));
        assert_eq!(p.newest_first(9, u64::MAX).count(), 0);
        p.truncate(50);
        assert_eq!(p.len(), 50);
        assert_eq!(
            p.newest_first(3, u64::MAX).collect::<Vec<_>>(),
            [45, 38, 31, 24, 17, 10, 3]
        );
    }

    #[test]
    fn merged_streams_come_out_descending_once_each() {
        let a: Seqs = Box::new([9u64, 5, 2].into_iter());
        let b: Seqs = Box::new([8u64, 5, 1].into_iter());
        let c: Seqs = Box::new(std::iter::empty());
        let merged: Vec<u64> = MergeDesc::new(vec![a, b, c]).collect();
        assert_eq!(merged, [9, 8, 5, 2, 1]);
    }
}
