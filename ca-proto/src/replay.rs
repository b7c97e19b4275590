//! Bounded cache of recently used `(key id, nonce)` pairs, to reject replays.
//!
//! A request with timestamp `ts` is accepted while `|now - ts| <= window`, so
//! its nonce must be remembered until `ts + window`; after that the timestamp
//! check alone rejects a replay and the entry is dropped. Entries are kept in
//! a min-heap ordered by that expiry and pruned on every call, so each entry
//! is removed once (amortised `O(log n)` per request) and memory holds only
//! live entries.
//!
//! Memory is bounded by `capacity` entries (a 128-bit fingerprint of the
//! pair in a hash set kept at most half full, plus a heap slot: about 60-100
//! bytes each, [`ReplayCache::check_and_insert`]). When the cache is
//! full of unexpired entries it refuses new ones with
//! [`ReplayError::CacheFull`]: a request whose nonce cannot be remembered is
//! never accepted (fail closed). Pairs are stored as truncated SHA-256
//! fingerprints (2^-128 collision odds per pair, far below any concern).
//!
//! [`ReplayCache`] is not thread-safe by itself; [`KeyedReplayCache`] gives
//! each auth key its own share behind its own lock (what the server uses). Check
//! replays only after the request's MAC verified, so that unauthenticated
//! traffic cannot fill the cache. The cache reads no clock: callers pass
//! `now_unix`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::error::ErrorCode;

/// Default maximum number of remembered nonces.
pub const DEFAULT_CAPACITY: usize = 1_000_000;

/// Why a nonce was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ReplayError {
    /// The `(key id, nonce)` pair was already used within the window.
    #[error("nonce already used")]
    Replayed,
    /// The timestamp is outside the window, so the cache could not detect a
    /// replay of it; such a request must not be accepted.
    #[error("timestamp outside the replay window")]
    OutsideWindow,
    /// The cache is full of unexpired entries.
    #[error("replay cache full")]
    CacheFull,
}

impl ReplayError {
    /// The stable error code: `replayed_request`, `stale_timestamp`, or
    /// `rate_limited` for a full cache (the client should retry later).
    pub fn code(&self) -> ErrorCode {
        match self {
            ReplayError::Replayed => ErrorCode::ReplayedRequest,
            ReplayError::OutsideWindow => ErrorCode::StaleTimestamp,
            ReplayError::CacheFull => ErrorCode::RateLimited,
        }
    }
}

/// Bounded replay cache; see the module documentation.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    window_secs: i64,
    seen: HashSet<u128>,
    /// The set's room (its capacity when it was made, with no tombstones):
    /// the set holds at most half of it. See [`ReplayCache::check_and_insert`].
    room: usize,
    by_expiry: BinaryHeap<Reverse<(i64, u128)>>,
}

impl ReplayCache {
    /// A cache holding at most `capacity` entries, for timestamps accepted
    /// within `window_secs` (the same value as the verifier's maximum skew;
    /// negative values count as 0).
    ///
    /// Room for `capacity` entries is reserved up front; the set grows
    /// (once, to twice that) only if more than half of it is ever held, and
    /// never while the number of live entries stays level (see `grow`).
    pub fn new(capacity: usize, window_secs: i64) -> Self {
        let seen = HashSet::with_capacity(capacity);
        ReplayCache {
            capacity,
            window_secs: window_secs.max(0),
            room: seen.capacity(),
            seen,
            by_expiry: BinaryHeap::with_capacity(capacity),
        }
    }

    /// A cache of [`DEFAULT_CAPACITY`] entries.
    pub fn with_window(window_secs: i64) -> Self {
        Self::new(DEFAULT_CAPACITY, window_secs)
    }

    /// Maximum number of entries.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The window, in seconds.
    pub fn window_secs(&self) -> i64 {
        self.window_secs
    }

    /// Number of entries currently held (some may have expired since the
    /// last call).
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether the cache holds no entries.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Records the pair, or refuses it if it was seen within the window, if
    /// `ts` is outside the window, or if the cache is full.
    pub fn check_and_insert(
        &mut self,
        key_id: &str,
        nonce: &str,
        ts: i64,
        now_unix: i64,
    ) -> Result<(), ReplayError> {
        if (i128::from(now_unix) - i128::from(ts)).abs() > i128::from(self.window_secs) {
            return Err(ReplayError::OutsideWindow);
        }
        self.prune_expired(now_unix);
        let fp = fingerprint(key_id, nonce);
        if self.seen.contains(&fp) {
            return Err(ReplayError::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(ReplayError::CacheFull);
        }
        if 2 * (self.seen.len() + 1) > self.room {
            self.grow();
        }
        self.seen.insert(fp);
        self.by_expiry
            .push(Reverse((ts.saturating_add(self.window_secs), fp)));
        Ok(())
    }

    /// Move the entries into a set with twice the room (at most twice the
    /// capacity). The set is kept at most half full because entries leave
    /// it as fast as they come: a removal may leave a tombstone, and when
    /// tombstones use up a hash table's spare slots it rehashes, in place
    /// while it is at most half full, by doubling its memory otherwise.
    /// Kept fuller, a set of a steady size doubled minutes after the load
    /// leveled off (a step of 18 MiB in a soak at 2,756 requests a second,
    /// about 830,000 live nonces); kept at most half full, it grows only
    /// while the number of live nonces does.
    fn grow(&mut self) {
        let room = (2 * self.room)
            .max(2 * (self.seen.len() + 1))
            .min(2 * self.capacity.max(1));
        let mut seen = HashSet::with_capacity(room);
        seen.extend(self.seen.drain());
        self.room = seen.capacity();
        self.seen = seen;
    }

    /// Drops every entry whose timestamp can no longer be accepted at
    /// `now_unix`. Called by [`Self::check_and_insert`]; callers may also
    /// call it periodically to release memory when idle.
    pub fn prune_expired(&mut self, now_unix: i64) {
        while let Some(&Reverse((expires, fp))) = self.by_expiry.peek() {
            if expires >= now_unix {
                break;
            }
            self.by_expiry.pop();
            self.seen.remove(&fp);
        }
    }
}

/// One [`ReplayCache`] per auth key, each with its own bounded share, so
/// that one key (however busy, or however hostile its holder) can fill only
/// its own nonces: when a key's share is full its own requests are refused
/// (fail closed) and every other key is unaffected.
///
/// The caller sizes each share; the server gives a key what its rate limit
/// can use within the window (burst + rate × 2 × window, the most nonces it
/// can have admitted while they are still replayable), capped by the
/// configured maximum per key. Room for up to [`RESERVE`] entries of each
/// share is reserved up front; a busier key's set grows on demand up to its
/// share.
///
/// The set of keys is fixed at construction (the server's auth keys); a key
/// id outside it is refused with [`ReplayError::CacheFull`], which the server
/// never reaches because it checks nonces only after the MAC verified.
#[derive(Debug)]
pub struct KeyedReplayCache {
    per_key: std::collections::HashMap<String, std::sync::Mutex<ReplayCache>>,
}

/// Entries reserved up front in each key's share.
pub const RESERVE: usize = 65_536;

impl KeyedReplayCache {
    /// One share of `capacity` entries per `(key id, capacity)`.
    pub fn new<'a>(shares: impl IntoIterator<Item = (&'a str, usize)>, window_secs: i64) -> Self {
        let per_key = shares
            .into_iter()
            .map(|(id, capacity)| {
                let mut cache = ReplayCache::new(capacity.min(RESERVE), window_secs);
                cache.capacity = capacity;
                (id.to_string(), std::sync::Mutex::new(cache))
            })
            .collect();
        KeyedReplayCache { per_key }
    }

    /// The capacity of `key_id`'s share (0 for a key outside the set).
    pub fn share(&self, key_id: &str) -> usize {
        self.per_key.get(key_id).map_or(0, |c| {
            c.lock().unwrap_or_else(|p| p.into_inner()).capacity()
        })
    }

    /// Entries held for `key_id` (0 for a key outside the set).
    pub fn len_for(&self, key_id: &str) -> usize {
        self.per_key
            .get(key_id)
            .map_or(0, |c| c.lock().unwrap_or_else(|p| p.into_inner()).len())
    }

    /// [`ReplayCache::check_and_insert`] in `key_id`'s own share.
    pub fn check_and_insert(
        &self,
        key_id: &str,
        nonce: &str,
        ts: i64,
        now_unix: i64,
    ) -> Result<(), ReplayError> {
        let cache = self.per_key.get(key_id).ok_or(ReplayError::CacheFull)?;
        cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check_and_insert(key_id, nonce, ts, now_unix)
    }
}

fn fingerprint(key_id: &str, nonce: &str) -> u128 {
    let mut h = Sha256::new();
    // Length prefix: ("ab", "c") and ("a", "bc") differ.
    h.update((key_id.len() as u64).to_be_bytes());
    h.update(key_id.as_bytes());
    h.update(nonce.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    #[test]
    fn a_steady_load_does_not_grow_the_set_once_it_leveled_off() {
        // 400 nonces a second, each remembered for 11 s: about 4,400 live.
        // The share starts small and grows, as a key's share does.
        let mut c = ReplayCache::new(4096, 10);
        c.capacity = 100_000;
        let mut n = 0u64;
        let mut leveled: Option<usize> = None;
        for second in 0..400i64 {
            for _ in 0..400 {
                let nonce = n.to_string();
                n += 1;
                assert_eq!(
                    c.check_and_insert("k", &nonce, NOW + second, NOW + second),
                    Ok(())
                );
            }
            assert!(
                2 * c.len() <= c.room,
                "{} live in room for {}",
                c.len(),
                c.room
            );
            // The set's capacity (entries plus free slots) never passes the
            // room it was made with: it never grew by itself.
            assert!(
                c.seen.capacity() <= c.room,
                "{} > {}",
                c.seen.capacity(),
                c.room
            );
            if second == 30 {
                leveled = Some(c.room);
            }
            if let Some(room) = leveled {
                assert_eq!(c.room, room, "grew at second {second}");
            }
        }
        assert!(c.len() >= 4_000 && c.len() <= 4_800, "{}", c.len());
    }

    #[test]
    fn rejects_repeat() {
        let mut c = ReplayCache::new(10, 300);
        assert_eq!(c.check_and_insert("k", "nonce-1", NOW, NOW), Ok(()));
        assert_eq!(
            c.check_and_insert("k", "nonce-1", NOW, NOW),
            Err(ReplayError::Replayed)
        );
        // Same nonce with another timestamp is still the same pair.
        assert_eq!(
            c.check_and_insert("k", "nonce-1", NOW + 10, NOW + 5),
            Err(ReplayError::Replayed)
        );
        // Other key, other nonce: fine.
        assert_eq!(c.check_and_insert("k2", "nonce-1", NOW, NOW), Ok(()));
        assert_eq!(c.check_and_insert("k", "nonce-2", NOW, NOW), Ok(()));
        // No confusion between key/nonce boundaries.
        assert_eq!(c.check_and_insert("ab", "c", NOW, NOW), Ok(()));
        assert_eq!(c.check_and_insert("a", "bc", NOW, NOW), Ok(()));
        assert_eq!(c.len(), 5);
        assert_eq!(ReplayError::Replayed.code(), ErrorCode::ReplayedRequest);
    }

    #[test]
    fn remembers_for_the_whole_window_then_forgets() {
        let mut c = ReplayCache::new(10, 300);
        assert_eq!(c.check_and_insert("k", "n", NOW, NOW), Ok(()));
        // Still replayable at the edge of the window: still rejected.
        assert_eq!(
            c.check_and_insert("k", "n", NOW, NOW + 300),
            Err(ReplayError::Replayed)
        );
        // Past the window the original timestamp is itself refused...
        assert_eq!(
            c.check_and_insert("k", "n", NOW, NOW + 301),
            Err(ReplayError::OutsideWindow)
        );
        // ...and the entry has been dropped, so a fresh request may reuse it.
        assert_eq!(c.check_and_insert("k", "n", NOW + 301, NOW + 301), Ok(()));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn future_timestamps_are_remembered_longer() {
        let mut c = ReplayCache::new(10, 300);
        // Client clock 300 s ahead: acceptable until NOW + 600.
        assert_eq!(c.check_and_insert("k", "n", NOW + 300, NOW), Ok(()));
        assert_eq!(
            c.check_and_insert("k", "n", NOW + 300, NOW + 600),
            Err(ReplayError::Replayed)
        );
        assert_eq!(
            c.check_and_insert("k", "n", NOW + 300, NOW + 601),
            Err(ReplayError::OutsideWindow)
        );
    }

    #[test]
    fn rejects_outside_window() {
        let mut c = ReplayCache::new(10, 300);
        assert_eq!(
            c.check_and_insert("k", "n", NOW - 301, NOW),
            Err(ReplayError::OutsideWindow)
        );
        assert_eq!(
            c.check_and_insert("k", "n", NOW + 301, NOW),
            Err(ReplayError::OutsideWindow)
        );
        assert_eq!(
            c.check_and_insert("k", "n", i64::MIN, i64::MAX),
            Err(ReplayError::OutsideWindow)
        );
        assert!(c.is_empty());
        assert_eq!(ReplayError::OutsideWindow.code(), ErrorCode::StaleTimestamp);
    }

    #[test]
    fn enforces_capacity_and_evicts_expired() {
        let mut c = ReplayCache::new(3, 300);
        assert_eq!(c.check_and_insert("k", "a", NOW, NOW), Ok(()));
        assert_eq!(c.check_and_insert("k", "b", NOW + 100, NOW + 100), Ok(()));
        assert_eq!(c.check_and_insert("k", "c", NOW + 200, NOW + 200), Ok(()));
        assert_eq!(
            c.check_and_insert("k", "d", NOW + 200, NOW + 200),
            Err(ReplayError::CacheFull)
        );
        assert_eq!(ReplayError::CacheFull.code(), ErrorCode::RateLimited);
        // Full cache still detects replays rather than reporting "full".
        assert_eq!(
            c.check_and_insert("k", "a", NOW, NOW + 200),
            Err(ReplayError::Replayed)
        );
        assert_eq!(c.len(), 3);
        // At NOW + 301 "a" has expired: one slot frees up.
        assert_eq!(c.check_and_insert("k", "d", NOW + 301, NOW + 301), Ok(()));
        assert_eq!(c.len(), 3);
        assert_eq!(
            c.check_and_insert("k", "e", NOW + 301, NOW + 301),
            Err(ReplayError::CacheFull)
        );
        // "b" and "c" are still remembered.
        assert_eq!(
            c.check_and_insert("k", "b", NOW + 100, NOW + 301),
            Err(ReplayError::Replayed)
        );
        assert_eq!(
            c.check_and_insert("k", "c", NOW + 200, NOW + 301),
            Err(ReplayError::Replayed)
        );
        // Much later everything has expired.
        c.prune_expired(NOW + 10_000);
        assert!(c.is_empty());
    }

    #[test]
    fn zero_capacity_fails_closed() {
        let mut c = ReplayCache::new(0, 300);
        assert_eq!(
            c.check_and_insert("k", "n", NOW, NOW),
            Err(ReplayError::CacheFull)
        );
    }

    #[test]
    fn many_entries_expire_in_order() {
        let mut c = ReplayCache::new(10_000, 60);
        for i in 0..5_000i64 {
            let t = NOW + i / 10;
            assert_eq!(c.check_and_insert("k", &format!("n{i}"), t, t), Ok(()));
        }
        // Entries with ts + 60 < now are gone; the rest are kept.
        let now = NOW + 499;
        c.prune_expired(now);
        let expected = (0..5_000i64).filter(|i| NOW + i / 10 + 60 >= now).count();
        assert_eq!(c.len(), expected);
        assert_eq!(c.window_secs(), 60);
        assert_eq!(c.capacity(), 10_000);
        assert_eq!(ReplayCache::with_window(300).capacity(), DEFAULT_CAPACITY);
    }

    #[test]
    fn keyed_shares_are_independent() {
        let c = KeyedReplayCache::new([("a", 100), ("b", 200_000)], 300);
        assert_eq!(c.share("a"), 100);
        assert_eq!(c.share("b"), 200_000);
        for i in 0..100 {
            assert_eq!(c.check_and_insert("a", &format!("n{i}"), NOW, NOW), Ok(()));
        }
        // a's share is full: a is refused, b is not.
        assert_eq!(
            c.check_and_insert("a", "one-more", NOW, NOW),
            Err(ReplayError::CacheFull)
        );
        // b grows past the up-front reservation.
        for i in 0..(RESERVE + 10) {
            assert_eq!(c.check_and_insert("b", &format!("n{i}"), NOW, NOW), Ok(()));
        }
        assert_eq!(c.len_for("a"), 100);
        assert_eq!(c.len_for("b"), RESERVE + 10);
        // Replays are still per key and nonce.
        assert_eq!(
            c.check_and_insert("b", "n0", NOW, NOW),
            Err(ReplayError::Replayed)
        );
        // A key outside the set has no share.
        assert_eq!(
            c.check_and_insert("zzz", "n0", NOW, NOW),
            Err(ReplayError::CacheFull)
        );
        // Expiry frees a's share.
        assert_eq!(
            c.check_and_insert("a", "later", NOW + 700, NOW + 700),
            Ok(())
        );
    }
}
