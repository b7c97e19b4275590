//! Answering a [`Query`] from the index alone: which entries match, in the
//! query's order, from its cursor on, at most `limit` of them.
//!
//! One filter *drives*: the one with the fewest entries (a serial, an SPKI,
//! a name or the names under a suffix, an auth key, a class and/or
//! decision), whose entry numbers come newest first straight from its
//! postings; the other filters are checked against each candidate's row in
//! memory. With `expiring_before` the expiry set drives (soonest first).
//! With no filter, or a suffix matching more than [`MAX_MERGE`] names,
//! rows are scanned newest first. Every search examines at most `budget`
//! candidates; a page cut short by the budget still carries a cursor, so
//! the cost of one request is bounded whatever the query. Nothing here
//! reads the log: the caller fetches the entries of the hits
//! (O(results)) and checks them against the query (`super::fetch`).

use super::index::{decision_index, serial_key, spki_key, Index, Row};
use super::names::NameQuery;
use super::postings::{MergeDesc, Seqs};
use super::query::{Cursor, Query};
use ca_proto::logentry::LogDecision;
use std::ops::Bound;

/// A suffix matching more names than this is searched by scanning rows.
pub const MAX_MERGE: usize = 4096;
/// Candidates examined per search, by default.
pub const DEFAULT_BUDGET: usize = 1 << 18;

/// One matching entry and the cursor that continues after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub seq: u64,
    pub row: Row,
    pub after: Cursor,
}

/// What the index found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hits {
    pub hits: Vec<Hit>,
    /// Where the next page starts, when there may be more.
    pub next: Option<Cursor>,
    /// Candidates examined.
    pub examined: usize,
}

/// The query's filters as index ids and keys; `None` when some filter
/// names something the index has never seen (nothing can match).
struct Resolved {
    class: Option<u16>,
    key: Option<u32>,
    decision: Option<LogDecision>,
    serial: Option<u64>,
    spki: Option<u64>,
    name: Option<NameFilter>,
}

enum NameFilter {
    One(u32),
    /// Ids under the suffix (when at most `MAX_MERGE`), and the prefix.
    Suffix(Option<Vec<u32>>, String),
}

fn resolve(index: &Index, q: &Query) -> Option<Resolved> {
    let class = match &q.class {
        Some(c) => Some(u16::try_from(index.classes.id(c)?).ok()?),
        None => None,
    };
    let key = match &q.key {
        Some(k) => Some(index.keys.id(k)?),
        None => None,
    };
    let serial = match &q.serial {
        Some(s) => Some(serial_key(s)?),
        None => None,
    };
    let spki = match &q.spki {
        Some(s) => Some(spki_key(s)?),
        None => None,
    };
    let name = match &q.name {
        None => None,
        Some((_, NameQuery::Exact(k))) => Some(NameFilter::One(index.names.id(k)?)),
        Some((_, query @ NameQuery::Suffix(prefix))) => {
            let ids = index.names.matching(query, MAX_MERGE);
            if ids.is_empty() {
                return None;
            }
            let ids = (ids.len() <= MAX_MERGE).then_some(ids);
            Some(NameFilter::Suffix(ids, prefix.clone()))
        }
    };
    Some(Resolved {
        class,
        key,
        decision: q.decision,
        serial,
        spki,
        name,
    })
}

impl Resolved {
    fn matches(&self, index: &Index, seq: u64, row: &Row) -> bool {
        self.class.is_none_or(|c| row.class == c)
            && self.key.is_none_or(|k| row.key == k)
            && self.decision.is_none_or(|d| row.decision == d)
            && self.serial.is_none_or(|k| index.by_serial.contains(k, seq))
            && self.spki.is_none_or(|k| index.by_spki.contains(k, seq))
            && match &self.name {
                None => true,
                Some(NameFilter::One(id)) => index.names_of(seq).contains(id),
                Some(NameFilter::Suffix(_, prefix)) => index.names_of(seq).iter().any(|id| {
                    index
                        .names
                        .key(*id)
                        .is_some_and(|k| k.starts_with(prefix.as_str()))
                }),
            }
    }

    /// The smallest driver's stream, newest first, of entries below
    /// `below`; rows newest first when no filter can drive.
    fn driver<'a>(&self, index: &'a Index, below: u64) -> Seqs<'a> {
        let list = |l: &'a Vec<u64>| -> Seqs<'a> {
            let cut = l.partition_point(|s| *s < below);
            Box::new(l[..cut].iter().rev().copied())
        };
        // Sizes matter only to choose among several drivers (counting the
        // postings of many names under a suffix costs more than the page).
        let drivers = [
            self.serial.is_some(),
            self.spki.is_some(),
            matches!(
                self.name,
                Some(NameFilter::One(_)) | Some(NameFilter::Suffix(Some(_), _))
            ),
            self.key.is_some(),
            self.class.is_some() || self.decision.is_some(),
        ]
        .iter()
        .filter(|d| **d)
        .count();
        let mut best: Option<(usize, Seqs<'a>)> = None;
        let mut offer = |size: &dyn Fn() -> usize, make: &dyn Fn() -> Seqs<'a>| {
            let size = if drivers > 1 { size() } else { 0 };
            if best.as_ref().is_none_or(|(b, _)| size < *b) {
                best = Some((size, make()));
            }
        };
        if let Some(k) = self.serial {
            offer(&|| index.by_serial.count(k), &|| {
                Box::new(index.by_serial.newest_first(k, below))
            });
        }
        if let Some(k) = self.spki {
            offer(&|| index.by_spki.count(k), &|| {
                Box::new(index.by_spki.newest_first(k, below))
            });
        }
        match &self.name {
            Some(NameFilter::One(id)) => {
                let id = u64::from(*id);
                offer(&|| index.by_name.count(id), &|| {
                    Box::new(index.by_name.newest_first(id, below))
                });
            }
            Some(NameFilter::Suffix(Some(ids), _)) => {
                let size = || {
                    ids.iter()
                        .map(|id| index.by_name.count(u64::from(*id)))
                        .sum()
                };
                offer(&size, &|| {
                    Box::new(MergeDesc::new(
                        ids.iter()
                            .map(|id| -> Seqs<'a> {
                                Box::new(index.by_name.newest_first(u64::from(*id), below))
                            })
                            .collect(),
                    ))
                });
            }
            _ => {}
        }
        if let Some(k) = self.key {
            if let Some(l) = index.by_key.get(k as usize) {
                offer(&|| l.len(), &|| list(l));
            }
        }
        let class_lists: Vec<&'a Vec<u64>> = match (self.class, self.decision) {
            (Some(c), Some(d)) => index
                .by_class
                .get(c as usize)
                .map(|ls| &ls[decision_index(d)])
                .into_iter()
                .collect(),
            (Some(c), None) => index
                .by_class
                .get(c as usize)
                .map(|ls| ls.iter().collect())
                .unwrap_or_default(),
            (None, Some(d)) => index
                .by_class
                .iter()
                .map(|ls| &ls[decision_index(d)])
                .collect(),
            (None, None) => Vec::new(),
        };
        if self.class.is_some() || self.decision.is_some() {
            let size = || class_lists.iter().map(|l| l.len()).sum();
            offer(&size, &|| {
                Box::new(MergeDesc::new(
                    class_lists.iter().map(|l| list(l)).collect(),
                ))
            });
        }
        match best {
            Some((_, stream)) => stream,
            None => Box::new((0..below).rev()),
        }
    }
}

/// Matching entries of `index` for `q`, among the first `upto` entries
/// (the signed tree size), as of Unix time `now`.
pub fn find(index: &Index, q: &Query, now: i64, upto: u64, budget: usize) -> Hits {
    let empty = Hits {
        hits: Vec::new(),
        next: None,
        examined: 0,
    };
    let upto = upto.min(index.len());
    let Some(resolved) = resolve(index, q) else {
        return empty;
    };
    let limit = q.limit.max(1);
    let budget = budget.max(1);
    match q.expiring_before {
        Some(before) => by_expiry(index, &resolved, q.cursor, now, before, upto, limit, budget),
        None => {
            let below = match q.cursor {
                Some(Cursor::Below(b)) => b.min(upto),
                _ => upto,
            };
            newest_first(index, &resolved, below, limit, budget)
        }
    }
}

fn newest_first(index: &Index, r: &Resolved, below: u64, limit: usize, budget: usize) -> Hits {
    let mut stream = r.driver(index, below).peekable();
    let mut hits = Vec::new();
    let mut examined = 0;
    let mut next = None;
    while let Some(seq) = stream.next() {
        if examined == budget {
            // Not examined: the next page starts with it.
            next = Some(Cursor::Below(seq.saturating_add(1)));
            break;
        }
        examined += 1;
        let Some(row) = index.row(seq) else { continue };
        if r.matches(index, seq, row) {
            hits.push(Hit {
                seq,
                row: *row,
                after: Cursor::Below(seq),
            });
            if hits.len() == limit {
                if stream.peek().is_some() {
                    next = Some(Cursor::Below(seq));
                }
                break;
            }
        }
    }
    Hits {
        hits,
        next,
        examined,
    }
}

#[allow(clippy::too_many_arguments)]
fn by_expiry(
    index: &Index,
    r: &Resolved,
    cursor: Option<Cursor>,
    now: i64,
    before: i64,
    upto: u64,
    limit: usize,
    budget: usize,
) -> Hits {
    let secs = |t: i64| u32::try_from(t.max(0)).unwrap_or(u32::MAX);
    let floor = (secs(now), 0u64);
    let start = match cursor {
        Some(Cursor::After { not_after, seq }) if (not_after, seq) >= floor => {
            Bound::Excluded((not_after, seq))
        }
        _ => Bound::Included(floor),
    };
    let end = Bound::Excluded((secs(before), 0u64));
    let mut hits = Vec::new();
    let mut examined = 0;
    let mut next = None;
    if secs(before) <= floor.0 {
        return Hits {
            hits,
            next,
            examined,
        };
    }
    let mut stream = index.expiring.range((start, end)).peekable();
    let mut last = None;
    while let Some(&(not_after, seq)) = stream.next() {
        if examined == budget {
            next = last;
            break;
        }
        examined += 1;
        last = Some(Cursor::After { not_after, seq });
        if seq >= upto {
            continue;
        }
        let Some(row) = index.row(seq) else { continue };
        if r.matches(index, seq, row) {
            hits.push(Hit {
                seq,
                row: *row,
                after: Cursor::After { not_after, seq },
            });
            if hits.len() == limit {
                if stream.peek().is_some() {
                    next = last;
                }
                break;
            }
        }
    }
    Hits {
        hits,
        next,
        examined,
    }
}
