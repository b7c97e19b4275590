//! `/ui/findings`: what `ca-server log monitor` reports — every issued
//! certificate checked from its own DER against today's policy, its
//! signer and its entry (`audit::monitor::check`) — for the newest
//! `[ui] findings_entries` entries at start and every entry logged since,
//! checked on the inventory's thread as entries arrive ([`Checker`]). The
//! page shows the counts by kind and the newest [`MAX_RECENT`] findings.
//!
//! Verifying a certificate's signature costs as much as issuing's own CSR
//! check, so the live checker verifies at most [`VERIFY_PER_SECOND`]
//! signatures a second (all of them at a normal issuance rate); beyond
//! that it tells the signer by issuer name and key identifier
//! ([`SignerCheck::ByKeyId`]), and the page says how many were verified.
//! `ca-server log monitor` verifies every one. Measured before the budget:
//! under full load the checker took a fifth of the machine's CPU.

use super::html::{badge, esc, page, table, Nav};
use super::Console;
use crate::audit::monitor::{self, Finding, FindingKind, KnownIntermediates, SignerCheck, Tally};
use crate::inventory::Observer;
use crate::server::ratelimit::Bucket;
use crate::state::StateDir;
use ca_proto::logentry::LogEntry;
use policies::PolicySet;
use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Findings kept for the page.
pub const MAX_RECENT: usize = 500;
/// Signatures verified per second at most (and at most this many at once).
pub const VERIFY_PER_SECOND: f64 = 50.0;
/// Intermediates are read again at most this often (after a rotation, a
/// certificate of the new one would otherwise look unknown).
const REREAD_KNOWN: Duration = Duration::from_secs(10);

/// What the checks found so far.
pub struct Findings {
    /// Entries before this one were not checked.
    pub from_seq: u64,
    pub checked: u64,
    /// Of `checked`, the issued entries whose signature was verified.
    pub signatures_verified: u64,
    /// Of `checked`, the issued entries whose signer was told by issuer
    /// name and key identifier (over the verification budget).
    pub signers_by_key_id: u64,
    pub tally: Tally,
    /// Newest last.
    pub recent: VecDeque<Finding>,
}

impl Findings {
    pub fn new(from_seq: u64) -> Findings {
        Findings {
            from_seq,
            checked: 0,
            signatures_verified: 0,
            signers_by_key_id: 0,
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
    /// The verification budget, refilled at VERIFY_PER_SECOND.
    budget: Bucket,
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
            budget: Bucket::full(VERIFY_PER_SECOND, Instant::now()),
        }
    }

    /// Verify this entry's signature, or tell its signer by key id.
    fn how(&mut self) -> SignerCheck {
        if self
            .budget
            .take(VERIFY_PER_SECOND, VERIFY_PER_SECOND, Instant::now())
        {
            SignerCheck::Verify
        } else {
            SignerCheck::ByKeyId
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
        let issued = entry.issued().is_some();
        let how = if issued {
            self.how()
        } else {
            SignerCheck::ByKeyId
        };
        let mut found = monitor::check_with(entry, &self.policies, &self.known, how);
        if found.iter().any(|f| f.kind == FindingKind::UnknownIssuer)
            && self.read_at.elapsed() > REREAD_KNOWN
        {
            self.known = monitor::known_intermediates(&self.state, &self.policies);
            self.read_at = Instant::now();
            found = monitor::check_with(entry, &self.policies, &self.known, how);
        }
        let mut f = self.findings.lock().unwrap_or_else(|p| p.into_inner());
        f.checked += 1;
        match (issued, how) {
            (true, SignerCheck::Verify) => f.signatures_verified += 1,
            (true, SignerCheck::ByKeyId) => f.signers_by_key_id += 1,
            (false, _) => {}
        }
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
    let (from, checked, verified, by_key_id, tally, recent) = {
        let f = console.findings.lock().unwrap_or_else(|p| p.into_inner());
        (
            f.from_seq,
            f.checked,
            f.signatures_verified,
            f.signers_by_key_id,
            f.tally.clone(),
            f.recent.iter().rev().cloned().collect::<Vec<_>>(),
        )
    };
    let mut body = format!(
        "<p>Each issued certificate is checked from its own DER, as <code>ca-server log monitor</code> does: \
         its names against today's policy, its signer against the class's intermediates, the entry against the \
         certificate. Checked: {checked} entries from entry {from} on; {} failure(s).</p>\
         <p>Signers: {verified} signature(s) verified; {by_key_id} told by issuer name and key identifier \
         (over the budget of {VERIFY_PER_SECOND} verifications a second; <code>ca-server log monitor</code> \
         verifies every signature).</p>",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::monitor::testing::{dns, entry, leaf, world};

    /// A checker for `world`'s intermediate, with a full budget.
    fn checker(world: &crate::audit::monitor::testing::World) -> (Checker, Arc<Mutex<Findings>>) {
        let findings = Arc::new(Mutex::new(Findings::new(0)));
        let state = StateDir::new(std::env::temp_dir().join("trellis-findings-test-none"));
        let checker = Checker {
            findings: findings.clone(),
            policies: world.policies.clone(),
            state,
            known: world.known.clone(),
            read_at: Instant::now(),
            budget: Bucket::full(VERIFY_PER_SECOND, Instant::now()),
        };
        (checker, findings)
    }

    #[test]
    fn signatures_are_verified_within_the_budget_and_signers_told_by_key_id_beyond() {
        let world = world();
        let der = leaf(&world, vec![dns("a.db.internal")]);
        let honest = entry(&world, &der, &["a.db.internal"]);
        let (mut checker, findings) = checker(&world);
        let entries = 4 * VERIFY_PER_SECOND as u64;
        let started = Instant::now();
        for _ in 0..entries {
            checker.entry(&honest);
        }
        let elapsed = started.elapsed().as_secs_f64();
        let f = findings.lock().unwrap();
        assert_eq!(f.checked, entries);
        assert_eq!(f.signatures_verified + f.signers_by_key_id, entries);
        let allowed = VERIFY_PER_SECOND * (1.0 + elapsed);
        assert!(
            (f.signatures_verified as f64) <= allowed,
            "{} verified in {elapsed:.2} s, at most {allowed:.0} allowed",
            f.signatures_verified
        );
        assert!(
            f.signatures_verified >= VERIFY_PER_SECOND as u64,
            "the burst is verified"
        );
        assert!(f.recent.is_empty(), "{:?}", f.recent);
    }

    #[test]
    fn over_the_budget_a_stranger_is_still_an_unknown_issuer() {
        let world = world();
        let stranger = crate::audit::monitor::testing::stranger();
        let der = leaf(&world, vec![dns("a.db.internal")]);
        let honest = entry(&world, &der, &["a.db.internal"]);
        let (mut checker, findings) = self::checker(&stranger);
        checker.budget = Bucket::full(0.0, Instant::now());
        checker.entry(&honest);
        let f = findings.lock().unwrap();
        assert_eq!(f.signers_by_key_id, 1);
        assert_eq!(
            f.tally.count(FindingKind::UnknownIssuer),
            1,
            "{:?}",
            f.recent
        );
    }
}
