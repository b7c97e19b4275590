//! `ca-bench inventory`: the inventory (`ca_server::inventory`) over a
//! synthetic issuance log of 1,000,000 entries (by default): how long the
//! first build takes (reading and parsing `log.dat` as the server does at
//! start), what the index holds in memory (the process's resident set
//! before and after, and the index's own estimate from its capacities),
//! and the latency of searches by name, by suffix, by serial and by
//! `expiring_before` (p50/p99 over many random queries, each reading its
//! results back from the file, as the API does), with the entries read
//! and candidates examined per search (O(results), not O(log)).
//!
//! Before the inventory, the revocation serial index
//! (`ca_server::revoke::index`, facts on disk) is built over the same log:
//! its time and the resident set it adds. After it, the inventory with the
//! server's default window (`[ui] inventory_entries`): what it holds and
//! adds.
//!
//! The log: a fleet of 100,000 hosts (`h<n>.t<team>.<class>.internal`,
//! 50 teams, classes db/api/web) renewing over 30 days, so each name has
//! about ten entries; 90% issued, 8% denied, 2% revocations; each issued
//! entry carries a certificate-sized base64 blob. Records are written in
//! batches of 256 with a tree head record after each, as the writer does
//! (the heads are not signed: the inventory only needs the framing).

use anyhow::{Context, Result};
use ca_server::inventory::query::Query;
use ca_server::inventory::search::DEFAULT_BUDGET;
use ca_server::inventory::{Inventory, Nobody, SearchLimits};
use ca_server::log::record::{self, KIND_ENTRY, KIND_TREE_HEAD};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// What `ca-bench inventory` is asked to do.
#[derive(clap::Args, Clone)]
pub struct InventoryOpts {
    /// Entries in the synthetic log.
    #[arg(long, default_value_t = 1_000_000)]
    pub entries: u64,
    /// Bytes of the fake certificate in each issued entry (base64 makes
    /// them 4/3 larger); a P-256 leaf is 600-700 bytes of DER.
    #[arg(long, default_value_t = 650)]
    pub cert_bytes: usize,
    /// Searches per kind.
    #[arg(long, default_value_t = 2000)]
    pub queries: usize,
    /// Also write the report (markdown) to this file.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

const HOSTS: u64 = 100_000;
const CLASSES: [&str; 3] = ["db", "api", "web"];
const DAY: i64 = 86_400;

/// A cheap, well-mixed hash (SplitMix64) for synthetic values.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn host(seq: u64) -> u64 {
    mix(seq) % HOSTS
}

fn name(h: u64) -> String {
    format!("h{h}.t{}.{}.internal", h % 50, CLASSES[(h % 3) as usize])
}

fn serial(seq: u64) -> String {
    format!(
        "{:016x}{:016x}",
        mix(seq ^ 0x5e) & 0x7fff_ffff_ffff_ffff,
        mix(seq ^ 0xa1)
    )
}

fn rfc3339(t: i64) -> Result<String> {
    Ok(ca_proto::time::Rfc3339::from_unix_timestamp(t)?
        .as_str()
        .to_string())
}

/// Entry `seq` of a log that spans the 30 days before `now`.
fn entry(seq: u64, n: u64, now: i64, blob: &str) -> Result<Vec<u8>> {
    let t = now - 30 * DAY + (seq as i64 * 30 * DAY) / n.max(1) as i64;
    let h = host(seq);
    let class = CLASSES[(h % 3) as usize];
    let key = format!("{class}-sidecar-{}", h % 40);
    let kind = mix(seq ^ 0x77) % 100;
    let value = if kind < 8 {
        serde_json::json!({
            "seq": seq, "time": rfc3339(t)?, "log_id": "bench", "class": class,
            "profile": "server", "key_id": key, "decision": "denied",
            "dns": [format!("h{h}.t{}.evil.example", h % 50)],
            "reasons": [{"code": "name_not_allowed", "detail": "not allowed in this class"}],
        })
    } else if kind < 10 && seq > 0 {
        let victim = seq - 1 - mix(seq) % seq.min(1000);
        serde_json::json!({
            "seq": seq, "time": rfc3339(t)?, "log_id": "bench", "class": class,
            "profile": "server", "key_id": "admin", "decision": "revoked",
            "serial": serial(victim), "not_after": rfc3339(t + DAY)?,
            "spki_sha256": format!("{:016x}{:048x}", mix(victim), 0),
            "issuer": "ab".repeat(32), "revocation_reason": "keyCompromise",
            "revoked_at": rfc3339(t)?,
        })
    } else {
        let ttl = DAY + (mix(seq ^ 3) % 3) as i64 * DAY;
        serde_json::json!({
            "seq": seq, "time": rfc3339(t)?, "log_id": "bench", "class": class,
            "profile": "server", "key_id": key, "decision": "issued",
            "serial": serial(seq), "subject": name(h), "dns": [name(h)],
            "not_before": rfc3339(t - 300)?, "not_after": rfc3339(t + ttl)?,
            "spki_sha256": format!("{:016x}{:048x}", mix(seq), 0),
            "issuer": "ab".repeat(32), "certificate": blob,
        })
    };
    Ok(serde_json::to_vec(&value)?)
}

fn write_log(path: &Path, n: u64, now: i64, cert_bytes: usize) -> Result<u64> {
    // Base64 text of `cert_bytes` bytes (what the index never looks into).
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let blob: String = (0..cert_bytes.div_ceil(3) * 4)
        .map(|i| ALPHABET[(mix(i as u64) % 64) as usize] as char)
        .collect();
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut buf = Vec::new();
    for seq in 0..n {
        record::encode(KIND_ENTRY, &entry(seq, n, now, &blob)?, &mut buf);
        if seq % 256 == 255 || seq + 1 == n {
            record::encode(KIND_TREE_HEAD, b"{}", &mut buf);
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    out.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

/// Resident set of this process, bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

struct Measured {
    kind: &'static str,
    example: String,
    p50: Duration,
    p99: Duration,
    results: f64,
    read: f64,
    examined: f64,
}

fn measure(
    inventory: &Inventory,
    kind: &'static str,
    queries: impl Iterator<Item = String>,
    limits: SearchLimits,
) -> Result<Measured> {
    let mut times = Vec::new();
    let (mut results, mut read, mut examined) = (0u64, 0u64, 0u64);
    let mut example = String::new();
    for q in queries {
        let query = Query::parse(&q).map_err(|e| anyhow::anyhow!("{q}: {e}"))?;
        let started = Instant::now();
        let page = inventory.search(&query, limits)?;
        times.push(started.elapsed());
        results += page.results.len() as u64;
        read += page.entries_read;
        examined += page.examined;
        if example.is_empty() {
            example = q;
        }
    }
    times.sort();
    let n = times.len().max(1);
    let at = |p: f64| {
        times
            .get(((n as f64 * p) as usize).min(n - 1))
            .copied()
            .unwrap_or_default()
    };
    Ok(Measured {
        kind,
        example,
        p50: at(0.50),
        p99: at(0.99),
        results: results as f64 / n as f64,
        read: read as f64 / n as f64,
        examined: examined as f64 / n as f64,
    })
}

pub fn run(opts: &InventoryOpts) -> Result<String> {
    let dir = tempfile::Builder::new()
        .prefix("trellis-inventory")
        .tempdir()?;
    // The state directory's layout (`log/<id>/log.dat`), for the serial
    // index, which follows every log of a state directory.
    std::fs::create_dir_all(dir.path().join("log/bench"))?;
    let path = dir.path().join("log/bench/log.dat");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    eprintln!("writing a synthetic log of {} entries ...", opts.entries);
    let started = Instant::now();
    let size = write_log(&path, opts.entries, now, opts.cert_bytes)?;
    eprintln!(
        "  {:.0} MiB in {:.1} s; building the index ...",
        size as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );
    let rss_before = rss();
    let started = Instant::now();
    let mut serials =
        ca_server::revoke::index::SerialIndex::new(ca_server::state::StateDir::new(dir.path()));
    serials.poll(now)?;
    let serial_build = started.elapsed();
    let serial_rss = rss().saturating_sub(rss_before);
    let serial_count = serials.len();
    eprintln!(
        "  serial index: {serial_count} certificates in {:.1} s; windowed inventory ...",
        serial_build.as_secs_f64()
    );
    drop(serials);
    let rss_before = rss();
    let window_cap = ca_server::config::UiConfig::default().inventory_entries;
    let windowed = Inventory::new("bench", &path).with_max_entries(window_cap);
    let started = Instant::now();
    windowed.refresh(&mut Nobody, now)?;
    let window_build = started.elapsed();
    let window_rss = rss().saturating_sub(rss_before);
    let (window_first, window_held) = (windowed.first(), windowed.held());
    drop(windowed);
    eprintln!(
        "  windowed in {:.1} s; the whole inventory ...",
        window_build.as_secs_f64()
    );
    let rss_before = rss();
    let inventory = Inventory::new("bench", &path);
    let started = Instant::now();
    let indexed = inventory.refresh(&mut Nobody, now)?;
    let build = started.elapsed();
    let rss_after = rss();
    let estimate = inventory.heap_bytes() as u64;
    anyhow::ensure!(
        indexed == opts.entries,
        "indexed {indexed} of {} entries",
        opts.entries
    );
    eprintln!("  built in {:.1} s; searching ...", build.as_secs_f64());
    let limits = SearchLimits {
        now,
        tree_size: u64::MAX,
        max_bytes: 256 * 1024,
        budget: DEFAULT_BUDGET,
    };
    let q = opts.queries as u64;
    let n = opts.entries;
    let rows = [
        measure(
            &inventory,
            "name (exact)",
            (0..q).map(|i| format!("name={}&limit=50", name(host(mix(i) % n)))),
            limits,
        )?,
        measure(
            &inventory,
            "name (*.suffix)",
            (0..q).map(|i| {
                let h = mix(i ^ 9) % HOSTS;
                format!(
                    "name=*.t{}.{}.internal&limit=50",
                    h % 50,
                    CLASSES[(h % 3) as usize]
                )
            }),
            limits,
        )?,
        measure(
            &inventory,
            "serial",
            (0..q).map(|i| format!("serial={}", serial(mix(i ^ 5) % n))),
            limits,
        )?,
        measure(
            &inventory,
            "expiring_before",
            (0..q).map(|i| {
                let t = now + 3600 + (mix(i ^ 11) % (2 * DAY as u64)) as i64;
                format!(
                    "expiring_before={}&limit=50",
                    rfc3339(t).unwrap_or_default()
                )
            }),
            limits,
        )?,
        measure(
            &inventory,
            "class + decision",
            (0..q).map(|i| {
                format!(
                    "class={}&decision=denied&limit=50",
                    CLASSES[(i % 3) as usize]
                )
            }),
            limits,
        )?,
    ];
    let per_entry = |b: u64| b as f64 / opts.entries.max(1) as f64;
    let rss_delta = rss_after.saturating_sub(rss_before);
    let mut report = format!(
        "# Inventory at {} entries\n\n\
         `cargo build --release -p ca-bench && target/release/ca-bench inventory --entries {} --queries {} --out docs/inventory-bench.md` \
         ({}; about 20 s, so not part of `make bench`).\n\n\
         | | |\n|---|---|\n\
         | log.dat | {:.0} MiB ({:.0} bytes per entry) |\n\
         | first build (read + parse + index) | {:.1} s ({:.0} entries/s) |\n\
         | resident set added by the index | {:.0} MiB ({:.0} bytes per entry) |\n\
         | index heap, estimated from capacities | {:.0} MiB ({:.0} bytes per entry) |\n\
         | the server's inventory, a window of the newest {} (`[ui] inventory_entries`): built in | {:.1} s, holding entries {}.. ({} entries), resident set added {:.0} MiB |\n\
         | revocation serial index (facts on disk): built in | {:.1} s ({:.0} entries/s read; {} live certificates kept, the rest expired more than a day ago), resident set added {:.1} MiB |\n\n\
         | search | example | p50 | p99 | results | entries read | candidates examined |\n\
         |---|---|---|---|---|---|---|\n",
        opts.entries,
        opts.entries,
        opts.queries,
        ca_server_host(),
        size as f64 / 1048576.0,
        per_entry(size),
        build.as_secs_f64(),
        opts.entries as f64 / build.as_secs_f64().max(1e-9),
        rss_delta as f64 / 1048576.0,
        per_entry(rss_delta),
        estimate as f64 / 1048576.0,
        per_entry(estimate),
        window_cap,
        window_build.as_secs_f64(),
        window_first,
        window_held,
        window_rss as f64 / 1048576.0,
        serial_build.as_secs_f64(),
        opts.entries as f64 / serial_build.as_secs_f64().max(1e-9),
        serial_count,
        serial_rss as f64 / 1048576.0,
    );
    for r in &rows {
        report.push_str(&format!(
            "| {} | `{}` | {:.0} µs | {:.0} µs | {:.1} | {:.1} | {:.1} |\n",
            r.kind,
            r.example,
            r.p50.as_secs_f64() * 1e6,
            r.p99.as_secs_f64() * 1e6,
            r.results,
            r.read,
            r.examined
        ));
    }
    report.push_str(
        "\nWhere the bytes go (per entry, see `ca_server::inventory`): a 32-byte row \
         (record offset, time, notAfter, ids, decision), 16 per posting (one per name, \
         serial and SPKI), 8 in the auth-key list and 8 in the class × decision list, \
         4 per name id, ~40 per live certificate in the expiry set, and each distinct \
         name once (~100 bytes; here 100,000 names). The resident set also holds what \
         the allocator kept from parsing.\n",
    );
    report.push_str(
        "\nEach search reads its results back from `log.dat` (one seek and one record each, \
         the page cache warm) and checks them against the query, as `GET /v1/log/{id}/search` does; \
         entries read = results shows O(results).\n",
    );
    Ok(report)
}

fn ca_server_host() -> String {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cpus} CPU(s)")
}
