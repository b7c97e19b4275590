//! From hits to results: read each hit's entry from `log.dat` at the
//! offset its row remembers (one seek and one record per result: a search
//! reads O(results) of the log), check that it is the entry the index
//! says (its number) and that it really matches the query (the index keys
//! serials and SPKIs by 64-bit hashes, and is never trusted over the log),
//! and shape the page within a byte budget.

use super::index::{canonical_serial, canonical_spki, serial_key};
use super::names;
use super::query::{Cursor, Query};
use super::search::Hits;
use super::InventoryError;
use crate::log::record::{self, Next, KIND_ENTRY};
use ca_proto::logentry::{LogDecision, LogEntry, LogReason, Outcome};
use serde::{Deserialize, Serialize};
use std::io::{Seek, SeekFrom};
use std::path::Path;

/// Names shown per result at most (the entry has them all).
pub const MAX_NAMES_SHOWN: usize = 100;

/// One search result: the entry's facts without its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchResult {
    pub seq: u64,
    pub time: String,
    pub class: String,
    pub profile: String,
    pub key_id: String,
    pub decision: LogDecision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// DNS, IP and URI names, then a common name that is none of them.
    pub names: Vec<String>,
    /// Names left out of `names` (more than [`MAX_NAMES_SHOWN`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub names_omitted: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// Why a request was denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<LogReason>,
    /// Why a certificate was revoked (revocation entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_reason: Option<String>,
    /// An issued certificate that a later entry revoked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One page of results (`GET /v1/log/{log_id}/search`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchPage {
    pub results: Vec<SearchResult>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next: Option<String>,
    /// Entries the index covers, and the signed tree size searched.
    pub indexed: u64,
    pub tree_size: u64,
    /// The oldest entry the index holds: older entries are not searched
    /// (the inventory keeps a window of the newest `[ui]
    /// inventory_entries`; `ca-server log show` reads them all).
    #[serde(default)]
    pub first: u64,
    /// Index candidates examined for this page.
    pub examined: u64,
    /// Entries read from the log for this page.
    pub entries_read: u64,
}

/// Read the entry whose record starts at `offset` of the open log file.
pub fn read_at(
    file: &mut std::fs::File,
    path: &Path,
    offset: u64,
) -> Result<(Vec<u8>, LogEntry), InventoryError> {
    let io = |source| InventoryError::Io {
        path: path.display().to_string(),
        source,
    };
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut reader = record::Reader::new(std::io::BufReader::with_capacity(8192, &*file), offset);
    match reader.next_record().map_err(io)? {
        Next::Record(r) if r.kind == KIND_ENTRY => {
            let entry = LogEntry::from_bytes(r.payload)
                .map_err(|e| InventoryError::Corrupt(format!("entry at offset {offset}: {e}")))?;
            Ok((r.payload.to_vec(), entry))
        }
        _ => Err(InventoryError::Corrupt(format!(
            "no entry record at offset {offset}"
        ))),
    }
}

/// Whether `entry` matches every filter of `q` (checked on the entry
/// itself).
pub fn entry_matches(entry: &LogEntry, q: &Query, now: i64) -> bool {
    let serial_ok = q
        .serial
        .as_ref()
        .is_none_or(|s| entry.serial().and_then(canonical_serial).as_deref() == Some(s.as_str()));
    let spki = match &entry.outcome {
        Outcome::Issued(i) => Some(i.spki_sha256.as_str()),
        Outcome::Revoked(r) => Some(r.spki_sha256.as_str()),
        Outcome::Denied(_) => None,
    };
    let spki_ok = q
        .spki
        .as_ref()
        .is_none_or(|s| spki.and_then(canonical_spki).as_deref() == Some(s.as_str()));
    let name_ok = q.name.as_ref().is_none_or(|(_, query)| {
        entry
            .dns()
            .iter()
            .chain(entry.ips())
            .chain(entry.uris())
            .map(String::as_str)
            .chain(entry.subject())
            .filter_map(names::key)
            .any(|k| query.matches(&k))
    });
    let expiry_ok = q.expiring_before.is_none_or(|before| {
        entry.issued().is_some_and(|i| {
            let t = i.not_after.unix_timestamp();
            t >= now && t < before
        })
    });
    serial_ok
        && spki_ok
        && name_ok
        && expiry_ok
        && q.class.as_ref().is_none_or(|c| &entry.class == c)
        && q.key.as_ref().is_none_or(|k| &entry.key_id == k)
        && q.decision.is_none_or(|d| entry.decision() == d)
}

/// A result from an entry. `revoked` says whether a later entry revoked
/// the certificate.
pub fn result_of(entry: &LogEntry, revoked: bool) -> SearchResult {
    let mut all: Vec<String> = entry
        .dns()
        .iter()
        .chain(entry.ips())
        .chain(entry.uris())
        .cloned()
        .collect();
    if let Some(cn) = entry.subject() {
        if !all.iter().any(|n| n.eq_ignore_ascii_case(cn)) {
            all.push(cn.to_string());
        }
    }
    let names_omitted = all.len().saturating_sub(MAX_NAMES_SHOWN);
    all.truncate(MAX_NAMES_SHOWN);
    let (not_after, revocation_reason) = match &entry.outcome {
        Outcome::Issued(i) => (Some(i.not_after.as_str().to_string()), None),
        Outcome::Revoked(r) => (
            Some(r.not_after.as_str().to_string()),
            Some(r.reason.clone()),
        ),
        Outcome::Denied(_) => (None, None),
    };
    SearchResult {
        seq: entry.seq,
        time: entry.time.as_str().to_string(),
        class: entry.class.clone(),
        profile: entry.profile.clone(),
        key_id: entry.key_id.clone(),
        decision: entry.decision(),
        serial: entry.serial().map(str::to_string),
        names: all,
        names_omitted,
        not_after,
        reasons: entry.reasons().to_vec(),
        revocation_reason,
        revoked: revoked && entry.decision() == LogDecision::Issued,
    }
}

/// What [`page`] needs besides the hits.
pub struct PageContext<'a> {
    pub path: &'a Path,
    pub query: &'a Query,
    pub now: i64,
    /// Serialised result bytes per page at most (one result always fits).
    pub max_bytes: usize,
    pub indexed: u64,
    pub tree_size: u64,
    pub first: u64,
    /// Whether a certificate serial (posting key) has been revoked.
    pub is_revoked: &'a dyn Fn(u64) -> bool,
}

/// Read, check and shape the hits into a page.
pub fn page(hits: Hits, cx: &PageContext<'_>) -> Result<SearchPage, InventoryError> {
    let mut results = Vec::with_capacity(hits.hits.len());
    let mut next = hits.next;
    let mut bytes = 0usize;
    let mut read = 0u64;
    if !hits.hits.is_empty() {
        let mut file = std::fs::File::open(cx.path).map_err(|source| InventoryError::Io {
            path: cx.path.display().to_string(),
            source,
        })?;
        let mut last_included: Option<Cursor> = None;
        for hit in &hits.hits {
            let (_, entry) = read_at(&mut file, cx.path, hit.row.offset)?;
            read += 1;
            if entry.seq != hit.seq {
                return Err(InventoryError::Corrupt(format!(
                    "the index places entry {} at offset {}, which holds entry {}",
                    hit.seq, hit.row.offset, entry.seq
                )));
            }
            if !entry_matches(&entry, cx.query, cx.now) {
                tracing::debug!(
                    event = "inventory_false_hit",
                    seq = hit.seq,
                    "index candidate does not match on the entry"
                );
                last_included = Some(hit.after);
                continue;
            }
            let revoked = entry
                .issued()
                .and_then(|i| serial_key(&i.serial))
                .is_some_and(|k| (cx.is_revoked)(k));
            let result = result_of(&entry, revoked);
            let size = serde_json::to_vec(&result).map_or(0, |v| v.len() + 1);
            if !results.is_empty() && bytes + size > cx.max_bytes {
                next = last_included;
                break;
            }
            bytes += size;
            results.push(result);
            last_included = Some(hit.after);
        }
    }
    Ok(SearchPage {
        results,
        next: next.map(|c| c.encode()),
        indexed: cx.indexed,
        tree_size: cx.tree_size,
        first: cx.first,
        examined: hits.examined as u64,
        entries_read: read,
    })
}
