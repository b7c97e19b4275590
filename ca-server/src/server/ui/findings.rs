//! `/ui/findings`: what `ca-server log monitor` reports — every issued
//! certificate checked from its own DER against today's policy, its
//! signer and its entry (`audit::monitor::check`) — for the newest
//! `[ui] findings_entries` entries at start and every entry logged since,
//! checked on the inventory's thread as entries arrive ([`Checker`]). The
//! page shows the counts by kind and the newest [`MAX_RECENT`] findings.

use super::html::{badge, esc, page, table, Nav};
use super::Console;
use crate::audit::monitor::{self, Finding, FindingKind, KnownIntermediates, Tally};
use crate::inventory::Observer;
use crate::state::StateDir;
use ca_proto::logentry::LogEntry;
use policies::PolicySet;
use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Findings kept for the page.
pub const MAX_RECENT: usize = 500;
/// Intermediates are read again at most this often (after a rotation, a
/// certificate of the new one would otherwise look unknown).
const REREAD_KNOWN: Duration = Duration::from_secs(10);

/// What the checks found so far.
pub struct Findings {
    /// Entries before this one were not checked.
    pub from_seq: u64,
    pub checked: u64,
    pub tally: Tally,
    /// Newest last.
    pub recent: VecDeque<Finding>,
}

impl Findings {
    pub fn new(from_seq: u64) -> Findings {
        Findings {
            from_seq,
            checked: 0,
            tally: Tally::default(),
            recent: VecDeque::new(),
        }
    }
}

/// Checks entries as the inventory indexes them.
pub struct Checker {
    findings: Arc<Mutex<Findings>>,
    policies: PolicySet,
    state: StateDir,
    known: KnownIntermediates,
    read_at: Instant,
}

impl Checker {
    pub fn new(findings: Arc<Mutex<Findings>>, policies: PolicySet, state: StateDir) -> Checker {
        let known = monitor::known_intermediates(&state, &policies);
        Checker {
            findings,
            policies,
            state,
            known,
            read_at: Instant::now(),
        }
    }
}

impl Observer for Checker {
    fn entry(&mut self, entry: &LogEntry) {
        let from = self
            .findings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .from_seq;
        if entry.seq < from {
            return;
        }
        let mut found = monitor::check(entry, &self.policies, &self.known);
        if found.iter().any(|f| f.kind == FindingKind::UnknownIssuer)
            && self.read_at.elapsed() > REREAD_KNOWN
        {
            self.known = monitor::known_intermediates(&self.state, &self.policies);
            self.read_at = Instant::now();
            found = monitor::check(entry, &self.policies, &self.known);
        }
        let mut f = self.findings.lock().unwrap_or_else(|p| p.into_inner());
        f.checked += 1;
        for finding in found {
            f.tally.add(&finding);
            f.recent.push_back(finding);
            if f.recent.len() > MAX_RECENT {
                f.recent.pop_front();
            }
        }
    }

    fn truncated(&mut self, from_seq: u64) {
        // The cut entries' findings go; the counts keep them (they were
        // found in entries a tree head had covered).
        let mut f = self.findings.lock().unwrap_or_else(|p| p.into_inner());
        f.recent.retain(|x| x.seq < from_seq);
    }
}

pub fn render(console: &Console) -> String {
    let (from, checked, tally, recent) = {
        let f = console.findings.lock().unwrap_or_else(|p| p.into_inner());
        (
            f.from_seq,
            f.checked,
            f.tally.clone(),
            f.recent.iter().rev().cloned().collect::<Vec<_>>(),
        )
    };
    let mut body = format!(
        "<p>Each issued certificate is checked from its own DER, as <code>ca-server log monitor</code> does: \
         its names against today's policy, its signer against the class's intermediates, the entry against the \
         certificate. Checked: {checked} entries from entry {from} on; {} failure(s).</p>",
        tally.failures()
    );
    let counts: Vec<Vec<String>> = FindingKind::ALL
        .iter()
        .map(|k| {
            vec![
                format!("<code>{}</code>", k.as_str()),
                if k.is_failure() {
                    badge("bad", "failure")
                } else {
                    badge("warn", "for review")
                },
                tally.count(*k).to_string(),
            ]
        })
        .collect();
    body.push_str(&table("counts", &["Kind", "Severity", "Count"], &counts));
    let _ = write!(body, "<h2>Newest findings</h2>");
    if recent.is_empty() {
        body.push_str("<p class=\"notice\">None.</p>");
    } else {
        let rows: Vec<Vec<String>> = recent
            .iter()
            .map(|f| {
                vec![
                    format!(
                        "<a href=\"/ui/entry/{}/{}\">{}</a>",
                        esc(console.log.log_id()),
                        f.seq,
                        f.seq
                    ),
                    format!("<code>{}</code>", f.kind.as_str()),
                    esc(&f.class),
                    f.serial.as_deref().map(esc).unwrap_or_default(),
                    esc(&f.detail),
                ]
            })
            .collect();
        body.push_str(&table(
            "findings",
            &["Entry", "Kind", "Class", "Serial", "Detail"],
            &rows,
        ));
    }
    page("Findings", Nav::Findings, console.log.log_id(), &body)
}
