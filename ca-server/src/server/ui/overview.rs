//! `/ui/`: the first page an operator opens. Readiness (HSM, log, classes
//! suspended), the log (size, latest signed tree head and whether its
//! signature verifies), and per class its root and every intermediate with
//! expiry countdowns and the warnings of `ca-server status`
//! (`cmd::status::report`, the same thresholds).

use super::html::{badge, esc, page, relative, short_hex, short_time, table, Nav};
use super::{access, Console};
use crate::cmd::status::{self, ClassReport};
use crate::log::LogReader;
use crate::server::app::App;
use crate::server::ReadyCache;
use hyper::StatusCode;
use std::collections::BTreeMap;
use std::fmt::Write;

/// What is known only on the async side: readiness and suspensions.
pub struct Live {
    ready: bool,
    log_healthy: bool,
    suspended: BTreeMap<String, String>,
    access: &'static str,
}

impl Live {
    pub async fn gather(app: &App, ready: &ReadyCache, rule: access::Rule) -> Live {
        Live {
            ready: ready.get(app).await.status() == StatusCode::OK,
            log_healthy: app.log.as_ref().is_some_and(|l| l.is_healthy()),
            suspended: app.authority.suspended(),
            access: rule.describe(),
        }
    }
}

pub fn render(console: &Console, reader: &LogReader, live: &Live) -> (StatusCode, String) {
    let now = super::now();
    let mut body = String::new();
    body.push_str("<section class=\"cards\">");
    // Readiness: what /readyz says, and which part fails.
    let hsm = match (live.ready, live.log_healthy && live.suspended.is_empty()) {
        (true, _) => badge("ok", "reachable"),
        (false, true) => badge("bad", "not answering"),
        (false, false) => badge("warn", "not probed (see above)"),
    };
    let _ = write!(
        body,
        "<div class=\"card\"><h2>Readiness</h2><p>{}</p><dl>\
         <dt>HSM</dt><dd>{hsm}</dd><dt>Log</dt><dd>{}</dd><dt>Console</dt><dd>{}</dd></dl>",
        if live.ready {
            badge("ok", "ready")
        } else {
            badge("bad", "not ready")
        },
        if live.log_healthy {
            badge("ok", "writable")
        } else {
            badge("bad", "last write failed")
        },
        esc(live.access)
    );
    for (class, why) in &live.suspended {
        let _ = write!(
            body,
            "<p class=\"warning\">class {}: {}</p>",
            esc(class),
            esc(why)
        );
    }
    body.push_str("</div>");
    // The log.
    let sth = reader.sth();
    let verified = sth.verify(console.log.public_key());
    let size = std::fs::metadata(console.inventory.path()).map_or(0, |m| m.len());
    let (findings, checked) = {
        let f = console.findings.lock().unwrap_or_else(|p| p.into_inner());
        (f.tally.failures(), f.checked)
    };
    let _ = write!(
        body,
        "<div class=\"card\"><h2>Log {id}</h2><dl>\
         <dt>Entries</dt><dd>{size_entries}</dd>\
         <dt>log.dat</dt><dd>{bytes}</dd>\
         <dt>Indexed</dt><dd>{indexed} of {size_entries}{window}</dd>\
         <dt>Findings</dt><dd><a href=\"/ui/findings\">{findings} in {checked} checked</a></dd>\
         </dl><h3>Latest signed tree head</h3><dl>\
         <dt>Tree size</dt><dd>{size_entries}</dd>\
         <dt>Root hash</dt><dd>{root}</dd>\
         <dt>Signed</dt><dd>{signed} UTC ({ago})</dd>\
         <dt>Signature</dt><dd>{sig}</dd><dt>Log key</dt><dd>{key}</dd></dl></div>",
        id = esc(&sth.log_id),
        size_entries = sth.tree_size,
        bytes = esc(&super::html::bytes(size)),
        indexed = console.inventory.len().min(sth.tree_size),
        window = match console.inventory.first() {
            0 => String::new(),
            first => format!(
                " (searchable: entries {first} on, the newest {} at most)",
                console.config.ui.inventory_entries
            ),
        },
        root = short_hex(&sth.root_hash),
        signed = esc(&short_time(sth.timestamp_ms / 1000)),
        ago = esc(&relative(sth.timestamp_ms / 1000, now)),
        sig = match verified {
            Ok(()) => badge("ok", "verified"),
            Err(e) => badge("bad", &format!("does not verify: {e}")),
        },
        key = short_hex(&console.log.public_key().key_id()),
    );
    body.push_str("</section>");
    // Classes.
    match status::report(&console.config, time::OffsetDateTime::now_utc()) {
        Ok(classes) => {
            let warnings: usize = classes.iter().map(|c| c.warnings().len()).sum();
            let _ = write!(
                body,
                "<h2>Classes</h2><p>{} class(es), {}</p>",
                classes.len(),
                if warnings == 0 {
                    badge("ok", "no warnings")
                } else {
                    badge("warn", &format!("{warnings} warning(s)"))
                }
            );
            for class in &classes {
                body.push_str(&class_card(class, now));
            }
        }
        Err(e) => {
            tracing::warn!(event = "console_status_failed", "{e:#}");
            body.push_str("<p class=\"warning\">The class states cannot be read right now (see the server's log).</p>");
        }
    }
    (
        StatusCode::OK,
        page("Overview", Nav::Overview, console.log.log_id(), &body),
    )
}

fn class_card(class: &ClassReport, now: i64) -> String {
    let name = esc(&class.class);
    let Some(h) = &class.hierarchy else {
        return format!(
            "<section class=\"class\" id=\"class-{name}\"><h3>{name}</h3><p class=\"warning\">not initialised (run <code>ca-server init</code>)</p></section>"
        );
    };
    let expiry = |t: time::OffsetDateTime, warn: bool| {
        let secs = t.unix_timestamp();
        let cls = if secs < now {
            "bad"
        } else if warn {
            "warn"
        } else {
            "ok"
        };
        format!(
            "{} {}",
            esc(&short_time(secs)),
            badge(cls, &relative(secs, now))
        )
    };
    let mut rows = vec![vec![
        badge("root", "root"),
        short_hex(&h.root_fingerprint),
        expiry(h.root_not_after, h.root_warning.is_some()),
        format!("<code>{}</code>", esc(&h.root_key)),
    ]];
    for int in &h.intermediates {
        let status = format!("{:?}", int.status).to_lowercase();
        rows.push(vec![
            badge(&status, &status),
            short_hex(&int.fingerprint),
            expiry(int.not_after, int.warning.is_some()),
            format!("<code>{}</code>", esc(&int.key)),
        ]);
    }
    let mut out = format!(
        "<section class=\"class\" id=\"class-{name}\"><h3>{name}</h3>{}",
        table(
            "intermediates",
            &["Certificate", "SHA-256", "Expires", "Key"],
            &rows
        )
    );
    for w in class.warnings() {
        let _ = write!(
            out,
            "<p class=\"warning\">WARNING: {}</p>",
            esc(&w.to_string())
        );
    }
    let _ = write!(
        out,
        "<p class=\"links\"><a href=\"/ui/search?class={name}\">entries</a> · \
         <a href=\"/ui/search?class={name}&amp;decision=denied\">denials</a></p></section>"
    );
    out
}
