//! `ca-server log show`: the log's entries for operators, filtered by
//! class, SAN, serial or decision, one line each (or JSON lines), streamed
//! from the file.

use super::follow::for_each_entry;
use super::{log_paths, AuditError};
use crate::state::StateDir;
use ca_proto::logentry::{LogDecision, LogEntry, Outcome};
use std::path::Path;

#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub class: Option<String>,
    pub san: Option<String>,
    pub serial: Option<String>,
    pub denied_only: bool,
}

impl Filter {
    pub fn matches(&self, e: &LogEntry) -> bool {
        self.class.as_ref().is_none_or(|c| &e.class == c)
            && self
                .serial
                .as_ref()
                .is_none_or(|s| e.serial() == Some(&s.to_lowercase()))
            && (!self.denied_only || e.decision() == LogDecision::Denied)
            && self.san.as_ref().is_none_or(|n| {
                let n = n.to_lowercase();
                e.dns()
                    .iter()
                    .chain(e.ips())
                    .chain(e.uris())
                    .any(|s| s.to_lowercase() == n)
            })
    }
}

/// Every entry of the log (up to a torn tail) that `filter` matches, in
/// order, one at a time; the count visited.
pub fn for_each_match<E: From<AuditError>>(
    state_dir: &Path,
    log_id: &str,
    filter: &Filter,
    mut visit: impl FnMut(&LogEntry) -> Result<(), E>,
) -> Result<u64, E> {
    let data = log_paths(&StateDir::new(state_dir), log_id).data();
    let mut matched = 0;
    for_each_entry(&data, |entry| -> Result<(), E> {
        if filter.matches(&entry) {
            matched += 1;
            visit(&entry)?;
        }
        Ok(())
    })?;
    Ok(matched)
}

pub fn line(e: &LogEntry) -> String {
    let names: Vec<&str> = e
        .dns()
        .iter()
        .chain(e.ips())
        .chain(e.uris())
        .map(String::as_str)
        .collect();
    match &e.outcome {
        Outcome::Issued(i) => format!(
            "#{} {} issued class={} profile={} key={} serial={} names={} not_after={}",
            e.seq,
            e.time,
            e.class,
            e.profile,
            e.key_id,
            i.serial,
            names.join(","),
            i.not_after
        ),
        Outcome::Denied(d) => format!(
            "#{} {} denied class={} profile={} key={} names={} reasons={}",
            e.seq,
            e.time,
            e.class,
            e.profile,
            e.key_id,
            names.join(","),
            d.reasons
                .iter()
                .map(|r| r.code.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ),
        Outcome::Revoked(r) => format!(
            "#{} {} revoked class={} profile={} key={} serial={} reason={} revoked_at={} not_after={}",
            e.seq, e.time, e.class, e.profile, e.key_id, r.serial, r.reason, r.revoked_at, r.not_after
        ),
    }
}
