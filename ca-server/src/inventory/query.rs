//! A search as the API and the console take it: the URL query
//! `name=…&serial=…&spki=…&key=…&class=…&decision=…&expiring_before=…&cursor=…&limit=…`
//! (form-encoded; empty values count as absent), parsed into a typed
//! [`Query`] with errors that name the parameter, and the opaque paging
//! [`Cursor`].
//!
//! Results come newest first (descending entry number); with
//! `expiring_before`, soonest notAfter first. A cursor says where the
//! previous page stopped in that order, so entries appended between two
//! pages never shift a page: they are newer than any cursor.

use super::index::{canonical_serial, canonical_spki};
use super::names::NameQuery;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ca_proto::logentry::LogDecision;

/// Longest query string accepted.
pub const MAX_QUERY_LEN: usize = 4096;
/// Results per page at most, and by default.
pub const MAX_LIMIT: usize = 100;
pub const DEFAULT_LIMIT: usize = 50;
/// Longest class or key id searched for.
const MAX_ID_LEN: usize = 128;

/// Why a search query was refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("the query is longer than {MAX_QUERY_LEN} bytes")]
    TooLong,
    #[error("unknown parameter '{0}'; known: name, serial, spki, key, class, decision, expiring_before, cursor, limit")]
    UnknownParameter(String),
    #[error("parameter '{0}' is given twice")]
    Repeated(&'static str),
    #[error("parameter '{0}' is not valid percent-encoded UTF-8")]
    Encoding(String),
    #[error("name must be a DNS name, '*.suffix', an IP address or a URI of at most 1024 bytes")]
    Name,
    #[error("serial must be hexadecimal (colons allowed)")]
    Serial,
    #[error("spki must be the 64 hex digits of an SPKI SHA-256")]
    Spki,
    #[error("{0} must be 1 to 128 characters")]
    Id(&'static str),
    #[error("decision must be issued, denied or revoked")]
    Decision,
    #[error("expiring_before must be an RFC 3339 time, e.g. 2026-07-01T00:00:00Z")]
    ExpiringBefore,
    #[error("limit must be an integer from 1 to {MAX_LIMIT}")]
    Limit,
    #[error("cursor is not one this server handed out for this kind of search")]
    Cursor,
}

/// Where a page stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// Newest-first order: continue with entries numbered below this.
    Below(u64),
    /// notAfter order: continue after (notAfter, entry number).
    After { not_after: u32, seq: u64 },
}

impl Cursor {
    pub fn encode(&self) -> String {
        let text = match self {
            Cursor::Below(seq) => format!("n.{seq}"),
            Cursor::After { not_after, seq } => format!("e.{not_after}.{seq}"),
        };
        URL_SAFE_NO_PAD.encode(text)
    }

    pub fn decode(text: &str) -> Result<Cursor, QueryError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| QueryError::Cursor)?;
        let text = String::from_utf8(bytes).map_err(|_| QueryError::Cursor)?;
        let parts: Vec<&str> = text.split('.').collect();
        let num = |s: &str| s.parse::<u64>().map_err(|_| QueryError::Cursor);
        match parts.as_slice() {
            ["n", seq] => Ok(Cursor::Below(num(seq)?)),
            ["e", not_after, seq] => Ok(Cursor::After {
                not_after: not_after.parse().map_err(|_| QueryError::Cursor)?,
                seq: num(seq)?,
            }),
            _ => Err(QueryError::Cursor),
        }
    }
}

/// A parsed search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The name term as given, and what it searches.
    pub name: Option<(String, NameQuery)>,
    /// Canonical serial (lowercase hex, no leading zeros).
    pub serial: Option<String>,
    /// Canonical SPKI SHA-256 (64 lowercase hex digits).
    pub spki: Option<String>,
    pub key: Option<String>,
    pub class: Option<String>,
    pub decision: Option<LogDecision>,
    /// Unix seconds: certificates valid now that expire before this.
    pub expiring_before: Option<i64>,
    pub cursor: Option<Cursor>,
    pub limit: usize,
}

impl Default for Query {
    fn default() -> Self {
        Query {
            name: None,
            serial: None,
            spki: None,
            key: None,
            class: None,
            decision: None,
            expiring_before: None,
            cursor: None,
            limit: DEFAULT_LIMIT,
        }
    }
}

impl Query {
    /// Parse a raw URL query string.
    pub fn parse(query: &str) -> Result<Query, QueryError> {
        Query::from_pairs(pairs(query)?)
    }

    /// A query from decoded `(name, value)` pairs; empty values are
    /// ignored, unknown or repeated names refused.
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Query, QueryError> {
        let mut q = Query::default();
        let mut seen: Vec<&'static str> = Vec::new();
        for (name, value) in pairs {
            let value = value.trim().to_string();
            if value.is_empty() {
                continue;
            }
            let known: &'static str = match name.as_str() {
                "name" => "name",
                "serial" => "serial",
                "spki" => "spki",
                "key" => "key",
                "class" => "class",
                "decision" => "decision",
                "expiring_before" => "expiring_before",
                "cursor" => "cursor",
                "limit" => "limit",
                _ => return Err(QueryError::UnknownParameter(truncated(&name))),
            };
            if seen.contains(&known) {
                return Err(QueryError::Repeated(known));
            }
            seen.push(known);
            let id = |what: &'static str, v: String| {
                if v.chars().count() > MAX_ID_LEN {
                    Err(QueryError::Id(what))
                } else {
                    Ok(Some(v))
                }
            };
            match known {
                "name" => {
                    let parsed = NameQuery::parse(&value).ok_or(QueryError::Name)?;
                    q.name = Some((value, parsed));
                }
                "serial" => q.serial = Some(canonical_serial(&value).ok_or(QueryError::Serial)?),
                "spki" => q.spki = Some(canonical_spki(&value).ok_or(QueryError::Spki)?),
                "key" => q.key = id("key", value)?,
                "class" => q.class = id("class", value)?,
                "decision" => {
                    q.decision = Some(match value.as_str() {
                        "issued" => LogDecision::Issued,
                        "denied" => LogDecision::Denied,
                        "revoked" => LogDecision::Revoked,
                        _ => return Err(QueryError::Decision),
                    })
                }
                "expiring_before" => {
                    let t = ca_proto::time::Rfc3339::parse(&value)
                        .map_err(|_| QueryError::ExpiringBefore)?;
                    q.expiring_before = Some(t.unix_timestamp());
                }
                "cursor" => q.cursor = Some(Cursor::decode(&value)?),
                _ => {
                    q.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|l| (1..=MAX_LIMIT).contains(l))
                        .ok_or(QueryError::Limit)?
                }
            }
        }
        // A cursor belongs to the order of the search it came from.
        match (q.cursor, q.expiring_before) {
            (Some(Cursor::Below(_)), Some(_)) | (Some(Cursor::After { .. }), None) => {
                Err(QueryError::Cursor)
            }
            _ => Ok(q),
        }
    }

    /// Whether any filter is set (a search without one lists the newest
    /// entries).
    pub fn has_filter(&self) -> bool {
        self.name.is_some()
            || self.serial.is_some()
            || self.spki.is_some()
            || self.key.is_some()
            || self.class.is_some()
            || self.decision.is_some()
            || self.expiring_before.is_some()
    }

    /// The query's filters as URL query pairs (no cursor or limit), for
    /// links to the next page.
    pub fn filter_pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some((text, _)) = &self.name {
            out.push(("name", text.clone()));
        }
        for (k, v) in [
            ("serial", &self.serial),
            ("spki", &self.spki),
            ("key", &self.key),
            ("class", &self.class),
        ] {
            if let Some(v) = v {
                out.push((k, v.clone()));
            }
        }
        if let Some(d) = self.decision {
            out.push(("decision", decision_name(d).to_string()));
        }
        if let Some(t) = self
            .expiring_before
            .and_then(|t| ca_proto::time::Rfc3339::from_unix_timestamp(t).ok())
        {
            out.push(("expiring_before", t.as_str().to_string()));
        }
        out
    }
}

pub fn decision_name(d: LogDecision) -> &'static str {
    match d {
        LogDecision::Issued => "issued",
        LogDecision::Denied => "denied",
        LogDecision::Revoked => "revoked",
    }
}

fn truncated(s: &str) -> String {
    s.chars().take(32).collect()
}

/// Decoded `name=value` pairs of a form-encoded query string.
pub fn pairs(query: &str) -> Result<Vec<(String, String)>, QueryError> {
    if query.len() > MAX_QUERY_LEN {
        return Err(QueryError::TooLong);
    }
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = decode_component(k).ok_or_else(|| QueryError::Encoding(truncated(k)))?;
            let v = decode_component(v).ok_or_else(|| QueryError::Encoding(truncated(&k)))?;
            Ok((k, v))
        })
        .collect()
}

/// `application/x-www-form-urlencoded` decoding of one component: `+` is a
/// space, `%XX` a byte; the result must be UTF-8.
pub fn decode_component(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Percent-encode one query component (everything but unreserved
/// characters and `*`).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'*') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `k=v&k=v`, encoded.
pub fn encode_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> String {
    pairs
        .into_iter()
        .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(&v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_parses_into_its_filters() {
        let q = Query::parse(
            "name=%2A.db.internal&serial=0A:1b&class=db&decision=denied&limit=7&key=&spki=",
        )
        .unwrap();
        assert_eq!(
            q.name,
            Some((
                "*.db.internal".into(),
                NameQuery::Suffix("d:internal.db.".into())
            ))
        );
        assert_eq!(q.serial.as_deref(), Some("a1b"));
        assert_eq!(q.class.as_deref(), Some("db"));
        assert_eq!(q.decision, Some(LogDecision::Denied));
        assert_eq!((q.limit, q.key.as_deref()), (7, None));
        let q = Query::parse("expiring_before=2026-07-01T00%3A00%3A00Z").unwrap();
        assert_eq!(q.expiring_before, Some(1_782_864_000));
        assert!(!Query::parse("").unwrap().has_filter());
    }

    #[test]
    fn bad_queries_name_the_parameter() {
        for (q, e) in [
            ("nmae=x", QueryError::UnknownParameter("nmae".into())),
            ("class=a&class=b", QueryError::Repeated("class")),
            ("limit=0", QueryError::Limit),
            ("limit=101", QueryError::Limit),
            ("decision=maybe", QueryError::Decision),
            ("serial=xyz", QueryError::Serial),
            ("spki=abcd", QueryError::Spki),
            ("expiring_before=tomorrow", QueryError::ExpiringBefore),
            ("name=%FF", QueryError::Encoding("name".into())),
            ("name=%2", QueryError::Encoding("name".into())),
            ("cursor=bm90IGEgY3Vyc29y", QueryError::Cursor),
        ] {
            assert_eq!(Query::parse(q).unwrap_err(), e, "{q}");
        }
        assert_eq!(
            Query::parse(&"a".repeat(MAX_QUERY_LEN + 1)).unwrap_err(),
            QueryError::TooLong
        );
        // a cursor of the other order is refused
        let below = Cursor::Below(5).encode();
        let q = format!("cursor={below}&expiring_before=2026-07-01T00:00:00Z");
        assert_eq!(Query::parse(&q).unwrap_err(), QueryError::Cursor);
    }

    #[test]
    fn cursors_and_links_round_trip() {
        for c in [
            Cursor::Below(0),
            Cursor::Below(u64::MAX),
            Cursor::After {
                not_after: 7,
                seq: 9,
            },
        ] {
            assert_eq!(Cursor::decode(&c.encode()), Ok(c));
        }
        let q = Query::parse("name=spiffe%3A%2F%2Ft%2Fdb%2Fx&decision=issued").unwrap();
        let again = Query::parse(&encode_pairs(q.filter_pairs())).unwrap();
        assert_eq!(again, q);
    }
}
