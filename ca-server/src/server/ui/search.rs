//! `/ui/search?…`: the inventory search as a form and a table of results,
//! with a link to the next page. Takes the API's parameters, plus
//! `within` (e.g. `7d`: expiring before now + 7 days) for the form.

use super::html::{badge, esc, page, relative, short_hex, short_time, table, time_text, Nav};
use super::Console;
use crate::inventory::fetch::SearchPage;
use crate::inventory::query::{self, Query};
use crate::inventory::search::DEFAULT_BUDGET;
use crate::inventory::SearchLimits;
use crate::log::LogReader;
use hyper::StatusCode;
use std::fmt::Write;

pub fn render(console: &Console, reader: &LogReader, raw: &str) -> (StatusCode, String) {
    let now = super::now();
    let parsed = form_pairs(raw, now).and_then(Query::from_pairs);
    let mut body = String::new();
    let (status, q) = match parsed {
        Ok(q) => (StatusCode::OK, Some(q)),
        Err(e) => {
            let _ = write!(body, "<p class=\"warning\">{}</p>", esc(&e.to_string()));
            (StatusCode::BAD_REQUEST, None)
        }
    };
    body.push_str(&form(console, q.as_ref()));
    if let Some(q) = q {
        let limits = SearchLimits {
            now,
            tree_size: reader.sth().tree_size,
            max_bytes: console.log.read_limits().page_bytes,
            budget: DEFAULT_BUDGET,
        };
        match console.inventory.search(&q, limits) {
            Ok(found) => body.push_str(&results(&q, &found, now, console.log.log_id())),
            Err(e) => {
                tracing::error!(event = "console_search_failed", "{e}");
                body.push_str("<p class=\"warning\">The search failed (see the server's log).</p>");
            }
        }
    }
    (
        status,
        page("Search", Nav::Search, console.log.log_id(), &body),
    )
}

/// The query's pairs with `within=<duration>` turned into
/// `expiring_before`.
fn form_pairs(raw: &str, now: i64) -> Result<Vec<(String, String)>, query::QueryError> {
    let mut out = Vec::new();
    for (k, v) in query::pairs(raw)? {
        if k == "within" {
            if v.trim().is_empty() {
                continue;
            }
            let secs = ca_proto::duration::parse_duration(v.trim())
                .map_err(|_| query::QueryError::ExpiringBefore)?
                .as_secs();
            let before = ca_proto::time::Rfc3339::from_unix_timestamp(
                now.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX / 2)),
            )
            .map_err(|_| query::QueryError::ExpiringBefore)?;
            out.push(("expiring_before".to_string(), before.as_str().to_string()));
        } else {
            out.push((k, v));
        }
    }
    Ok(out)
}

fn form(console: &Console, q: Option<&Query>) -> String {
    let value = |v: Option<&str>| esc(v.unwrap_or(""));
    let q0 = Query::default();
    let q = q.unwrap_or(&q0);
    let mut classes = String::from("<option value=\"\">any</option>");
    for c in console.inventory.class_names() {
        let selected = if q.class.as_deref() == Some(c.as_str()) {
            " selected"
        } else {
            ""
        };
        let _ = write!(classes, "<option{selected}>{}</option>", esc(&c));
    }
    let mut decisions = String::from("<option value=\"\">any</option>");
    for d in ["issued", "denied", "revoked"] {
        let selected = if q.decision.map(query::decision_name) == Some(d) {
            " selected"
        } else {
            ""
        };
        let _ = write!(decisions, "<option{selected}>{d}</option>");
    }
    let expiring = q
        .expiring_before
        .and_then(|t| ca_proto::time::Rfc3339::from_unix_timestamp(t).ok())
        .map(|t| t.as_str().to_string());
    format!(
        "<form class=\"search\" method=\"get\" action=\"/ui/search\">\
         <label>Name <input name=\"name\" value=\"{name}\" placeholder=\"pg-1.db.internal or *.db.internal\"></label>\
         <label>Serial <input name=\"serial\" value=\"{serial}\" placeholder=\"hex\"></label>\
         <label>SPKI SHA-256 <input name=\"spki\" value=\"{spki}\"></label>\
         <label>Auth key <input name=\"key\" value=\"{key}\"></label>\
         <label>Class <select name=\"class\">{classes}</select></label>\
         <label>Decision <select name=\"decision\">{decisions}</select></label>\
         <label>Expiring before <input name=\"expiring_before\" value=\"{expiring}\" placeholder=\"2026-07-01T00:00:00Z\"></label>\
         <label>or within <select name=\"within\"><option value=\"\">-</option><option>1d</option><option>7d</option><option>30d</option></select></label>\
         <button type=\"submit\">Search</button></form>",
        name = value(q.name.as_ref().map(|(t, _)| t.as_str())),
        serial = value(q.serial.as_deref()),
        spki = value(q.spki.as_deref()),
        key = value(q.key.as_deref()),
        expiring = value(expiring.as_deref()),
    )
}

fn results(q: &Query, found: &SearchPage, now: i64, log_id: &str) -> String {
    let mut out = format!(
        "<p class=\"summary\">{} result(s){} · {} of {} entries indexed{}{}</p>",
        found.results.len(),
        if found.next.is_some() {
            " on this page"
        } else {
            ""
        },
        found.indexed.min(found.tree_size),
        found.tree_size,
        if found.first > 0 {
            format!(
                " (entries {} on: the inventory keeps the newest; <code>ca-server log show</code> reads older ones)",
                found.first
            )
        } else {
            String::new()
        },
        if q.expiring_before.is_some() {
            " · soonest expiry first"
        } else {
            " · newest first"
        },
    );
    let rows: Vec<Vec<String>> = found
        .results
        .iter()
        .map(|r| {
            let mut names: Vec<String> = r.names.iter().take(4).map(|n| esc(n)).collect();
            let more = r.names.len().saturating_sub(4) + r.names_omitted;
            if more > 0 {
                names.push(format!("+{more}"));
            }
            let decision = if r.revoked {
                format!(
                    "{} {}",
                    badge("issued", "issued"),
                    badge("revoked", "revoked")
                )
            } else {
                badge(
                    query::decision_name(r.decision),
                    query::decision_name(r.decision),
                )
            };
            let detail = if !r.reasons.is_empty() {
                r.reasons
                    .iter()
                    .map(|x| format!("<code>{}</code> {}", esc(&x.code), esc(&x.detail)))
                    .collect::<Vec<_>>()
                    .join("<br>")
            } else if let Some(reason) = &r.revocation_reason {
                format!("reason <code>{}</code>", esc(reason))
            } else {
                r.not_after
                    .as_deref()
                    .and_then(|t| ca_proto::time::Rfc3339::parse(t).ok())
                    .map(|t| {
                        let secs = t.unix_timestamp();
                        format!(
                            "expires {} ({})",
                            esc(&short_time(secs)),
                            esc(&relative(secs, now))
                        )
                    })
                    .unwrap_or_default()
            };
            vec![
                format!(
                    "<a href=\"/ui/entry/{}/{}\">{}</a>",
                    esc(log_id),
                    r.seq,
                    r.seq
                ),
                esc(&time_text(&r.time)),
                esc(&r.class),
                decision,
                names.join("<br>"),
                r.serial.as_deref().map(short_hex).unwrap_or_default(),
                esc(&r.key_id),
                detail,
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("<p class=\"notice\">Nothing matches.</p>");
    } else {
        out.push_str(&table(
            "results",
            &[
                "Entry",
                "Time (UTC)",
                "Class",
                "Decision",
                "Names",
                "Serial",
                "Auth key",
                "Details",
            ],
            &rows,
        ));
    }
    if let Some(next) = &found.next {
        let mut pairs = q.filter_pairs();
        pairs.push(("limit", q.limit.to_string()));
        pairs.push(("cursor", next.clone()));
        let _ = write!(
            out,
            "<p class=\"pager\"><a rel=\"next\" href=\"/ui/search?{}\">Next page →</a></p>",
            esc(&query::encode_pairs(pairs))
        );
    }
    out
}
