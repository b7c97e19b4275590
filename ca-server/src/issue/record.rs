//! Step *record*: the issuance-log entries the authority appends, built from
//! domain facts (the grant and the signed certificate; the domain reasons of
//! a denial and the names that were asked for), never from HTTP errors.
//! Where the log lives is [`Recorder`]'s business; the log itself knows only
//! `ca_proto::logentry::LogEntry`.

use super::{IssueError, Pending};
use crate::log::IssuanceLog;
use ca_proto::logentry::{DeniedEntry, IssuedEntry, LogEntry, LogReason, Outcome};
use ca_proto::time::Rfc3339;
use policies::{CsrFacts, HostKind};

/// Where the authority records its decisions.
#[derive(Clone)]
pub enum Recorder {
    /// The replica's issuance log: every certificate is appended, and
    /// durable, before anyone sees it; every denial of an authenticated
    /// request is appended too.
    Log(IssuanceLog),
    /// Nothing is recorded: `serve --no-log` on loopback (benchmarks) and
    /// the in-process benchmark only. Certificates carry no log evidence.
    Nothing,
}

impl Recorder {
    pub fn log(&self) -> Option<&IssuanceLog> {
        match self {
            Recorder::Log(log) => Some(log),
            Recorder::Nothing => None,
        }
    }
}

/// Names recorded for a denial: the request's own `hosts` when it sent them
/// (they replace the CSR's SANs), else the CSR's SANs when it was decoded;
/// escaped, and at most this many of each kind (a request is bounded by the
/// body limit, but the entry should stay small).
const MAX_RECORDED_NAMES: usize = 100;

struct RequestedNames {
    dns: Vec<String>,
    ips: Vec<String>,
    uris: Vec<String>,
}

impl RequestedNames {
    fn of(facts: Option<&CsrFacts>, hosts: Option<&[String]>) -> RequestedNames {
        let mut r = RequestedNames {
            dns: Vec::new(),
            ips: Vec::new(),
            uris: Vec::new(),
        };
        match (hosts, facts) {
            (Some(hosts), _) => {
                for h in hosts {
                    match HostKind::of(h) {
                        HostKind::Ip(ip) => r.ips.push(ip.to_string()),
                        HostKind::Uri => r.uris.push(printable(h)),
                        HostKind::Dns => r.dns.push(printable(h)),
                    }
                }
            }
            (None, Some(f)) => {
                r.dns = f.dns_names.iter().map(|n| printable(n)).collect();
                r.ips = f.ip_addrs.iter().map(|ip| ip.to_string()).collect();
                r.uris = f.uris.iter().map(|u| printable(u)).collect();
            }
            (None, None) => {}
        }
        r.dns.truncate(MAX_RECORDED_NAMES);
        r.ips.truncate(MAX_RECORDED_NAMES);
        r.uris.truncate(MAX_RECORDED_NAMES);
        r
    }
}

/// Client-supplied text in entries, messages and traces: escaped and
/// truncated to 80 characters.
pub fn printable(s: &str) -> String {
    s.chars().flat_map(char::escape_debug).take(80).collect()
}

pub(super) fn rfc3339(t: time::OffsetDateTime) -> Rfc3339 {
    // Formatting fails only for an offset with seconds or a year past 9999;
    // these are UTC times of this clock and of certificates it signs.
    match Rfc3339::try_from(t.to_offset(time::UtcOffset::UTC)) {
        Ok(text) => text,
        Err(e) => unreachable!("a UTC time of this CA is not RFC 3339: {e}"),
    }
}

/// The entry of a signed certificate (`seq` and `log_id` are filled in by
/// the log).
pub(super) fn issued_entry(pending: &Pending, key_id: &str) -> LogEntry {
    use base64::Engine;
    let grant = &pending.grant;
    LogEntry {
        seq: 0,
        time: rfc3339(time::OffsetDateTime::now_utc()),
        log_id: String::new(),
        class: grant.class().to_string(),
        profile: grant.profile().to_string(),
        key_id: key_id.to_string(),
        outcome: Outcome::Issued(IssuedEntry {
            serial: pending.serial_hex.clone(),
            subject: grant.common_name().map(str::to_string),
            dns: grant.dns_names().to_vec(),
            ips: grant.ip_addrs().iter().map(|ip| ip.to_string()).collect(),
            uris: grant.uris().to_vec(),
            not_before: rfc3339(pending.not_before),
            not_after: rfc3339(pending.not_after),
            spki_sha256: pending.spki_sha256.clone(),
            issuer: pending.issuer_fingerprint.clone(),
            certificate: base64::engine::general_purpose::STANDARD.encode(pending.signed.der()),
        }),
    }
}

/// The entry of a refusal the requester caused (policy, malformed or
/// unproven CSR, scope), with its domain reasons; `None` for failures of
/// the CA itself (HSM, log), which are not decisions, and for unknown
/// classes (nothing to attribute them to).
pub(super) fn denial_entry(
    error: &IssueError,
    class: &str,
    profile: &str,
    key_id: &str,
    hosts: Option<&[String]>,
) -> Option<LogEntry> {
    let (reasons, facts): (Vec<LogReason>, Option<&CsrFacts>) = match error {
        IssueError::Denied { reasons, facts } => (
            reasons
                .iter()
                .map(|r| LogReason {
                    code: r.code.as_str().to_string(),
                    detail: r.detail.clone(),
                })
                .collect(),
            Some(facts.as_ref()),
        ),
        IssueError::Decode(_)
        | IssueError::Proof(_)
        | IssueError::ForbiddenScope { .. }
        | IssueError::KeyRevoked { .. } => (
            vec![LogReason {
                code: error.code().as_str().to_string(),
                detail: error.to_string(),
            }],
            None,
        ),
        _ => return None,
    };
    let requested = RequestedNames::of(facts, hosts);
    Some(LogEntry {
        seq: 0,
        time: rfc3339(time::OffsetDateTime::now_utc()),
        log_id: String::new(),
        class: printable(class),
        profile: printable(profile),
        key_id: key_id.to_string(),
        outcome: Outcome::Denied(DeniedEntry {
            subject: facts.and_then(|f| f.common_name.as_deref().map(printable)),
            dns: requested.dns,
            ips: requested.ips,
            uris: requested.uris,
            reasons,
        }),
    })
}
