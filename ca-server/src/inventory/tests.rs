//! The inventory against log files written here record by record, as the
//! writer writes them (entries, then a tree head per batch).

use super::query::{Cursor, Query};
use super::*;
use crate::log::record::{self, KIND_ENTRY, KIND_TREE_HEAD};
use std::io::Write;

const NOW: i64 = 1_800_000_000;

fn time(t: i64) -> String {
    ca_proto::time::Rfc3339::from_unix_timestamp(t)
        .unwrap()
        .as_str()
        .to_string()
}

fn issued(seq: u64, class: &str, names: &[&str], serial: &str, not_after: i64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "seq": seq, "time": time(NOW - 600 + seq as i64), "log_id": "t", "class": class,
        "profile": "server", "key_id": format!("{class}-key"), "decision": "issued",
        "serial": serial, "subject": names.first(), "dns": names,
        "not_before": time(NOW - 900), "not_after": time(not_after),
        "spki_sha256": format!("{seq:064x}"), "issuer": "ab", "certificate": "AAAA",
    }))
    .unwrap()
}

fn denied(seq: u64, class: &str, names: &[&str], code: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "seq": seq, "time": time(NOW - 600 + seq as i64), "log_id": "t", "class": class,
        "profile": "server", "key_id": "intruder", "decision": "denied", "dns": names,
        "reasons": [{"code": code, "detail": format!("'{}' is not allowed", names[0])}],
    }))
    .unwrap()
}

fn revoked(seq: u64, serial: &str, spki_of: u64, not_after: i64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "seq": seq, "time": time(NOW - 600 + seq as i64), "log_id": "t", "class": "db",
        "profile": "server", "key_id": "admin", "decision": "revoked", "serial": serial,
        "not_after": time(not_after), "spki_sha256": format!("{spki_of:064x}"),
        "issuer": "ab", "revocation_reason": "keyCompromise", "revoked_at": time(NOW - 1),
    }))
    .unwrap()
}

/// A log file being written batch by batch.
struct Log {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Log {
    fn new() -> Log {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.dat");
        std::fs::write(&path, b"").unwrap();
        Log { _dir: dir, path }
    }

    fn batch(&self, entries: &[Vec<u8>]) {
        let mut out = Vec::new();
        for e in entries {
            record::encode(KIND_ENTRY, e, &mut out);
        }
        record::encode(KIND_TREE_HEAD, b"{}", &mut out);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .unwrap();
        f.write_all(&out).unwrap();
    }

    fn len(&self) -> u64 {
        std::fs::metadata(&self.path).unwrap().len()
    }
}

fn limits() -> SearchLimits {
    SearchLimits {
        now: NOW,
        tree_size: u64::MAX,
        max_bytes: 256 * 1024,
        budget: search::DEFAULT_BUDGET,
    }
}

fn seqs(page: &SearchPage) -> Vec<u64> {
    page.results.iter().map(|r| r.seq).collect()
}

fn search(inv: &Inventory, q: &str) -> SearchPage {
    inv.search(&Query::parse(q).unwrap(), limits()).unwrap()
}

/// A log of `n` entries: mostly `svc-<i % 50>.<team>.db.internal` issued
/// in `db`, every 10th a denial in `web`.
fn big_log(n: u64) -> (Log, Inventory) {
    let log = Log::new();
    let mut batch = Vec::new();
    for seq in 0..n {
        let team = ["red", "blue", "green"][(seq % 3) as usize];
        let name = format!("svc-{}.{team}.db.internal", seq % 50);
        batch.push(if seq % 10 == 9 {
            denied(seq, "web", &[&name], "name_not_allowed")
        } else {
            issued(
                seq,
                "db",
                &[&name],
                &format!("{:032x}", seq + 1),
                NOW + 3600 + seq as i64,
            )
        });
        if batch.len() == 100 {
            log.batch(&batch);
            batch.clear();
        }
    }
    if !batch.is_empty() {
        log.batch(&batch);
    }
    let inv = Inventory::new("t", &log.path);
    assert_eq!(inv.refresh(&mut Nobody, NOW).unwrap(), n);
    (log, inv)
}

#[test]
fn names_are_found_exactly_and_by_suffix_newest_first() {
    let log = Log::new();
    log.batch(&[
        issued(0, "db", &["pg-1.db.internal"], "01", NOW + 100),
        issued(1, "db", &["pg-2.db.internal", "10.1.2.3"], "02", NOW + 100),
        issued(2, "web", &["www.web.internal"], "03", NOW + 100),
        denied(
            3,
            "db",
            &["evil.db.internal.attacker.example"],
            "name_not_allowed",
        ),
        issued(4, "db", &["a.b.db.internal"], "05", NOW + 100),
        issued(5, "db", &["db.internal"], "06", NOW + 100),
    ]);
    let inv = Inventory::build("t", &log.path).unwrap();
    assert_eq!(inv.len(), 6);
    assert_eq!(seqs(&search(&inv, "name=*.db.internal")), [4, 1, 0]);
    assert_eq!(seqs(&search(&inv, "name=PG-1.db.internal.")), [0]);
    assert_eq!(seqs(&search(&inv, "name=db.internal")), [5]);
    assert_eq!(seqs(&search(&inv, "name=10.1.2.3")), [1]);
    assert!(search(&inv, "name=*.nothing.internal").results.is_empty());
    assert_eq!(seqs(&search(&inv, "name=*.internal&class=web")), [2]);
    // a denial shows its reasons
    let denial = search(&inv, "decision=denied");
    assert_eq!(seqs(&denial), [3]);
    assert_eq!(denial.results[0].reasons[0].code, "name_not_allowed");
    assert_eq!(
        denial.results[0].names,
        ["evil.db.internal.attacker.example"]
    );
    // serials in any case, with colons or leading zeros
    assert_eq!(seqs(&search(&inv, "serial=0x0002")), [1]);
    assert_eq!(seqs(&search(&inv, "serial=00:02")), [1]);
    assert_eq!(
        seqs(&search(&inv, &format!("spki={:064X}", 4))),
        [4],
        "SPKI in upper case"
    );
    assert_eq!(seqs(&search(&inv, "key=db-key&limit=2")), [5, 4]);
    assert!(search(&inv, "class=nope").results.is_empty());
}

#[test]
fn a_lookup_reads_only_its_results() {
    let (_log, inv) = big_log(20_000);
    // 20 000 entries; `svc-7.*` names 400 of them
    let page = search(&inv, "name=svc-7.blue.db.internal&limit=5");
    assert_eq!(page.results.len(), 5);
    assert_eq!(page.entries_read, 5, "one log read per result");
    assert_eq!(page.examined, 5, "the name's postings drive: no scan");
    let serial = format!("serial={:x}", 12_346);
    let page = search(&inv, &serial);
    assert_eq!(seqs(&page), [12_345]);
    assert_eq!((page.entries_read, page.examined), (1, 1));
    // a suffix merges its names' postings
    let page = search(&inv, "name=*.green.db.internal&limit=10");
    assert_eq!(page.results.len(), 10);
    assert_eq!((page.entries_read, page.examined), (10, 10));
    // the smallest filter drives; the others are checked in memory
    let page = search(&inv, "class=web&name=svc-9.green.db.internal&limit=3");
    assert_eq!(page.entries_read, 3);
    assert!(page.examined <= 3 * 10, "examined {}", page.examined);
}

#[test]
fn pages_continue_where_they_stopped_while_the_log_grows() {
    let (log, inv) = big_log(1_000);
    let first = search(&inv, "name=*.red.db.internal&limit=100");
    assert_eq!(first.results.len(), 100);
    let cursor = first.next.clone().unwrap();
    // new entries arrive between two pages (newer than any cursor)
    log.batch(&[issued(
        1_000,
        "db",
        &["svc-1.red.db.internal"],
        "ffff",
        NOW + 60,
    )]);
    assert_eq!(inv.refresh(&mut Nobody, NOW).unwrap(), 1);
    let mut all = seqs(&first);
    let mut next = Some(cursor);
    while let Some(c) = next {
        let page = search(
            &inv,
            &format!("name=*.red.db.internal&limit=100&cursor={c}"),
        );
        all.extend(seqs(&page));
        next = page.next;
    }
    let expected: Vec<u64> = (0..1_000).rev().filter(|s| s % 3 == 0).collect();
    assert_eq!(all, expected, "no entry twice, none skipped");
    assert_eq!(
        seqs(&search(&inv, "name=*.red.db.internal&limit=1")),
        [1_000]
    );
}

#[test]
fn the_budget_bounds_a_search_and_its_cursor_goes_on() {
    let (_log, inv) = big_log(5_000);
    let q = Query::parse("class=nope-yet").unwrap();
    assert!(inv.search(&q, limits()).unwrap().results.is_empty());
    // an unindexed filter combination scans rows: the budget cuts it
    let small = SearchLimits {
        budget: 1_000,
        ..limits()
    };
    let q = Query::parse("name=*.db.internal&key=intruder&limit=100").unwrap();
    let mut q = q;
    let mut found = Vec::new();
    let mut pages = 0;
    loop {
        let page = inv.search(&q, small).unwrap();
        assert!(page.examined <= 1_000);
        found.extend(seqs(&page));
        pages += 1;
        match page.next {
            Some(c) => q.cursor = Some(Cursor::decode(&c).unwrap()),
            None => break,
        }
    }
    assert_eq!(found.len(), 500);
    assert!(found.windows(2).all(|w| w[0] > w[1]));
    assert!(pages >= 5, "{pages} pages");
}

#[test]
fn expiring_before_lists_live_unrevoked_certificates_soonest_first() {
    let log = Log::new();
    log.batch(&[
        issued(0, "db", &["a.db.internal"], "01", NOW + 300),
        issued(1, "db", &["b.db.internal"], "02", NOW + 100),
        issued(2, "db", &["c.db.internal"], "03", NOW - 100), // expired
        issued(3, "db", &["d.db.internal"], "04", NOW + 200),
        issued(4, "db", &["e.db.internal"], "05", NOW + 9_000),
        revoked(5, "04", 3, NOW + 200),
    ]);
    let inv = Inventory::build("t", &log.path).unwrap();
    let before = time(NOW + 1_000);
    let page = search(&inv, &format!("expiring_before={before}"));
    assert_eq!(
        seqs(&page),
        [1, 0],
        "expired, revoked and later ones left out"
    );
    let page = search(&inv, &format!("expiring_before={before}&limit=1"));
    assert_eq!(seqs(&page), [1]);
    let c = page.next.unwrap();
    let page = search(
        &inv,
        &format!("expiring_before={before}&limit=1&cursor={c}"),
    );
    assert_eq!(seqs(&page), [0]);
    // the issued entry of a revoked certificate says so
    let page = search(&inv, "serial=04");
    assert_eq!(seqs(&page), [5, 3]);
    assert_eq!(
        page.results[0].revocation_reason.as_deref(),
        Some("keyCompromise")
    );
    assert!(page.results[1].revoked);
}

#[test]
fn a_batch_cut_away_and_rewritten_replaces_its_entries() {
    let log = Log::new();
    log.batch(&[issued(0, "db", &["a.db.internal"], "01", NOW + 100)]);
    let kept = log.len();
    log.batch(&[
        issued(1, "db", &["gone.db.internal"], "02", NOW + 100),
        revoked(2, "01", 0, NOW + 100),
    ]);
    let inv = Inventory::build("t", &log.path).unwrap();
    assert_eq!(seqs(&search(&inv, "name=gone.db.internal")), [1]);
    // the fsync failed: the writer cuts the batch and writes another
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log.path)
        .unwrap()
        .set_len(kept)
        .unwrap();
    log.batch(&[
        issued(1, "db", &["new.db.internal"], "07", NOW + 100),
        denied(2, "db", &["x.db.internal"], "name_not_allowed"),
    ]);
    assert_eq!(inv.refresh(&mut Nobody, NOW).unwrap(), 2);
    assert_eq!(inv.len(), 3);
    assert!(search(&inv, "name=gone.db.internal").results.is_empty());
    assert_eq!(seqs(&search(&inv, "name=new.db.internal")), [1]);
    // the revocation was cut: entry 0 is expiring again
    let before = time(NOW + 1_000);
    assert_eq!(
        seqs(&search(&inv, &format!("expiring_before={before}"))),
        [0, 1]
    );
}

#[test]
fn a_page_stays_within_its_byte_budget() {
    let (_log, inv) = big_log(300);
    let tight = SearchLimits {
        max_bytes: 2_000,
        ..limits()
    };
    let q = Query::parse("class=db&limit=100").unwrap();
    let page = inv.search(&q, tight).unwrap();
    let bytes = serde_json::to_vec(&page.results).unwrap().len();
    assert!(!page.results.is_empty() && page.results.len() < 100);
    assert!(bytes <= 2_000 + 200, "{bytes}");
    let next = Cursor::decode(page.next.as_deref().unwrap()).unwrap();
    assert_eq!(next, Cursor::Below(page.results.last().unwrap().seq));
}

#[test]
fn rows_stay_small() {
    assert_eq!(std::mem::size_of::<index::Row>(), 32);
}

/// The window: an inventory capped at 1,000 entries, fed 3,500 in batches
/// of 100, never holds more than the cap, finds the newest entries by every
/// key, finds nothing older than its first entry, and its results are
/// still read back from the log at the right offsets.
#[test]
fn a_capped_inventory_holds_a_window_of_the_newest_entries() {
    let log = Log::new();
    let inv = Inventory::new("t", &log.path).with_max_entries(1_000);
    let mut most_held = 0;
    for b in 0..35u64 {
        let batch: Vec<Vec<u8>> = (b * 100..b * 100 + 100)
            .map(|seq| {
                issued(
                    seq,
                    "db",
                    &[&format!("svc-{seq}.db.internal")],
                    &format!("{:032x}", seq + 1),
                    NOW + 3600 + seq as i64,
                )
            })
            .collect();
        log.batch(&batch);
        inv.refresh(&mut Nobody, NOW).unwrap();
        most_held = most_held.max(inv.held());
    }
    assert_eq!(inv.len(), 3_500);
    assert!(
        most_held <= 1_000,
        "held {most_held} entries with a cap of 1000"
    );
    let first = inv.first();
    assert!(
        first > 0 && inv.held() >= 500,
        "first {first}, held {}",
        inv.held()
    );
    assert_eq!(inv.len() - first, inv.held());
    // Newest entries: by name, serial and key; the oldest held and none older.
    assert_eq!(seqs(&search(&inv, "name=svc-3499.db.internal")), [3499]);
    assert_eq!(
        seqs(&search(&inv, &format!("serial={:x}", first + 1))),
        [first]
    );
    assert!(search(&inv, &format!("serial={:x}", first))
        .results
        .is_empty());
    assert!(search(&inv, "name=svc-0.db.internal").results.is_empty());
    let page = search(&inv, "name=*.db.internal&limit=5");
    assert_eq!(seqs(&page), [3499, 3498, 3497, 3496, 3495]);
    assert_eq!(page.first, first);
    // "Expiring next" starts at the oldest entry held.
    let soonest = search(
        &inv,
        &format!("expiring_before={}&limit=1", time(NOW + 100_000)),
    );
    assert_eq!(seqs(&soonest), [first]);
}

/// A cut batch that reaches below the window's first entry empties the
/// index, which then takes the entries written again from there.
#[test]
fn truncation_below_the_window_starts_it_again_there() {
    let mut index = index::Index::starting_at(10);
    let entry = |seq: u64| {
        ca_proto::logentry::LogEntry::from_bytes(&issued(
            seq,
            "db",
            &["a.db.internal"],
            &format!("{:x}", seq + 1),
            NOW + 10,
        ))
        .unwrap()
    };
    for seq in 10..15 {
        index.add(seq * 100, &entry(seq)).unwrap();
    }
    assert!(index.add(0, &entry(3)).is_err(), "out of order");
    index.truncate(12);
    assert_eq!((index.first(), index.len()), (10, 12));
    index.truncate(4);
    assert_eq!((index.first(), index.len(), index.held()), (4, 4, 0));
    index.add(400, &entry(4)).unwrap();
    assert_eq!(index.row(4).map(|r| r.offset), Some(400));
    assert_eq!(index.row(10), None);
}
