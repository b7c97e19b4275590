//! `ca-server log verify|show|monitor`: the audit tools of `crate::audit`
//! with their output for operators (and for the tests that read it).

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
