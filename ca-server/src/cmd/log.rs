//! `ca-server log verify|show|monitor|search`: the audit tools of
//! `crate::audit` and the inventory's search (`crate::inventory`, built
//! from the file then asked) with their output for operators (and for the
//! tests that read it).

use super::Exit;
use crate::admin;
use crate::audit::follow::{Follower, Until};
use crate::audit::monitor::{self, FindingKind, Tally};
use crate::audit::textfile::MonitorMetrics;
use crate::audit::{log_paths, show, verify};
use crate::config::Config;
use crate::state::{write_atomic, StateDir};
use anyhow::Result;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How often `monitor --follow` looks for new entries, at most.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// `log verify`: a summary line, every problem, then `OK` (or an error).
pub fn verify(config: &Config) -> Result<()> {
    let report = verify::verify(&config.state_dir, &config.log.log_id)?;
    println!(
        "log {}: {} entries ({} issued, {} denied, {} revocations), {} signed tree heads, root {}",
        config.log.log_id,
        report.entries,
        report.issued,
        report.denied,
        report.revoked,
        report.heads,
        report.root_hash
    );
    for problem in &report.problems {
        println!("PROBLEM: {problem}");
    }
    if !report.ok() {
        anyhow::bail!(
            "log verification failed with {} problem(s)",
            report.problems.len()
        );
    }
    println!("OK");
    Ok(())
}

/// `log show`: matching entries, one line (or JSON line) each.
pub fn show(config: &Config, filter: &show::Filter, json: bool) -> Result<()> {
    show::for_each_match(
        &config.state_dir,
        &config.log.log_id,
        filter,
        |entry| -> Result<()> {
            if json {
                println!("{}", String::from_utf8_lossy(&entry.to_bytes()));
            } else {
                println!("{}", show::line(entry));
            }
            Ok(())
        },
    )?;
    Ok(())
}

/// What `log search` looks for: the API's parameters (`--name`,
/// `--serial`, `--spki`, `--key`, `--class`, `--decision`,
/// `--expiring-before`), as `(parameter, value)` pairs.
pub fn search(config: &Config, filters: Vec<(String, String)>, json: bool) -> Result<Exit> {
    use crate::inventory::{query::Query, Inventory, SearchLimits};
    let mut query = Query::from_pairs(filters)?;
    query.limit = crate::inventory::query::MAX_LIMIT;
    let state = StateDir::new(&config.state_dir);
    let path = log_paths(&state, &config.log.log_id).data();
    let started = Instant::now();
    let inventory = Inventory::build(&config.log.log_id, &path)?;
    eprintln!(
        "indexed {} entries of log {} in {:.1} s",
        inventory.len(),
        config.log.log_id,
        started.elapsed().as_secs_f64()
    );
    let limits = SearchLimits {
        now: crate::inventory::now_unix(),
        tree_size: u64::MAX,
        max_bytes: usize::MAX,
        budget: usize::MAX,
    };
    let mut found = 0u64;
    loop {
        let page = inventory.search(&query, limits)?;
        for r in &page.results {
            found += 1;
            if json {
                println!("{}", serde_json::to_string(r)?);
            } else {
                println!("{}", search_line(r));
            }
        }
        match page.next {
            Some(next) => query.cursor = Some(crate::inventory::query::Cursor::decode(&next)?),
            None => break,
        }
    }
    eprintln!("{found} match(es)");
    Ok(Exit::Success)
}

/// One result on one line: entry, time, class, decision, names, serial,
/// key, then expiry, reasons or the revocation reason.
fn search_line(r: &crate::inventory::fetch::SearchResult) -> String {
    let decision = crate::inventory::query::decision_name(r.decision);
    let decision = if r.revoked {
        "issued(revoked)"
    } else {
        decision
    };
    let detail = if !r.reasons.is_empty() {
        r.reasons
            .iter()
            .map(|x| format!("{}: {}", x.code, x.detail))
            .collect::<Vec<_>>()
            .join("; ")
    } else if let Some(reason) = &r.revocation_reason {
        format!("reason={reason}")
    } else {
        r.not_after
            .as_deref()
            .map(|t| format!("not_after={t}"))
            .unwrap_or_default()
    };
    format!(
        "#{} {} {} {} {} serial={} key={} {}",
        r.seq,
        r.time,
        r.class,
        decision,
        if r.names.is_empty() {
            "-".to_string()
        } else {
            r.names.join(",")
        },
        r.serial.as_deref().unwrap_or("-"),
        r.key_id,
        detail
    )
}

/// How `log monitor` runs.
#[derive(Debug, Clone, Default)]
pub struct MonitorOptions {
    /// Keep reading new entries (until killed).
    pub follow: bool,
    /// Write the counts here in Prometheus text format.
    pub metrics_file: Option<PathBuf>,
}

/// `log monitor`: findings as JSON lines on stdout, a summary on stderr;
/// [`Exit::Findings`] when any finding is a failure.
pub fn monitor(config: &Config, options: &MonitorOptions) -> Result<Exit> {
    let policies = admin::load_policies(config)?;
    let state = StateDir::new(&config.state_dir);
    let mut follower = Follower::new(log_paths(&state, &config.log.log_id).data());
    let metrics = options
        .metrics_file
        .as_ref()
        .map(|_| MonitorMetrics::new())
        .transpose()?;
    // A one-shot run reads every complete entry; a follower stops at the
    // last signed head and waits for a batch still being written.
    let until = if options.follow {
        Until::SignedHead
    } else {
        Until::End
    };
    let mut tally = Tally::default();
    let mut first = true;
    loop {
        let started = Instant::now();
        // Read again when there is something new: rotation adds intermediates.
        let mut known = None;
        let polled = follower.poll(until, |entry| -> Result<()> {
            let known =
                known.get_or_insert_with(|| monitor::known_intermediates(&state, &policies));
            for finding in monitor::check(&entry, &policies, known) {
                tally.add(&finding);
                println!("{}", serde_json::to_string(&finding)?);
            }
            tally.checked += 1;
            Ok(())
        })?;
        if let (Some(path), Some(metrics)) = (&options.metrics_file, &metrics) {
            if first || polled.entries > 0 {
                write_atomic(path, &metrics.render(&tally)?, 0o644)?;
            }
        }
        first = false;
        if !options.follow {
            break;
        }
        std::thread::sleep(POLL_INTERVAL.saturating_sub(started.elapsed()));
    }
    eprintln!(
        "checked {} entries: {} failure(s), {} IP SAN(s)",
        tally.checked,
        tally.failures(),
        tally.count(FindingKind::IpSan)
    );
    Ok(if tally.failures() > 0 {
        Exit::Findings
    } else {
        Exit::Success
    })
}
