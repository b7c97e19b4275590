//! `/ui/activity`: issuance and denial rates per class over the last hour
//! and day, with a column per hour, denials by reason and the auth keys
//! that asked most (from `inventory::activity`, in memory).

use super::charts;
use super::html::{esc, page, table, Nav};
use super::query_link;
use super::Console;
use std::fmt::Write;

pub fn render(console: &Console) -> String {
    let now = super::now();
    let s = console.inventory.activity(now);
    let mut body = String::new();
    let rows: Vec<Vec<String>> = s
        .classes
        .iter()
        .map(|(class, a)| {
            let link = |decision: &str, n: u64| {
                format!(
                    "<a href=\"/ui/search?{}\">{n}</a>",
                    esc(&query_link(&[("class", class), ("decision", decision)]))
                )
            };
            vec![
                format!("<a href=\"#class-{0}\">{0}</a>", esc(class)),
                a.issued_hour.to_string(),
                a.denied_hour.to_string(),
                link("issued", a.issued_day),
                link("denied", a.denied_day),
                link("revoked", a.revoked_day),
                format!("{:.2}", a.issued_day as f64 / 24.0),
            ]
        })
        .collect();
    let _ = write!(
        body,
        "<p>Counted from the log as entries arrive (decision time), over the last hour and the last 24 hours.</p>{}",
        table(
            "activity",
            &[
                "Class",
                "Issued (1 h)",
                "Denied (1 h)",
                "Issued (24 h)",
                "Denied (24 h)",
                "Revoked (24 h)",
                "Issued per hour (24 h)",
            ],
            &rows
        )
    );
    if s.classes.is_empty() {
        body.push_str("<p class=\"notice\">No entries in the last 24 hours.</p>");
    }
    body.push_str("<h2>Per hour</h2><p class=\"legend\"><span class=\"key issued\">issued</span> <span class=\"key denied\">denied</span></p><div class=\"charts\">");
    for (class, a) in &s.classes {
        let _ = write!(
            body,
            "<figure id=\"class-{c}\"><figcaption>{c}</figcaption>{}</figure>",
            charts::hourly(
                &a.hourly,
                &format!("class {class}: issued and denied per hour")
            ),
            c = esc(class)
        );
    }
    body.push_str("</div><div class=\"charts\">");
    let _ = write!(
        body,
        "<figure><figcaption>Denials by reason (24 h)</figcaption>{}</figure>",
        charts::ranked(&top(&s.reasons_day), "denied", "denials by reason")
    );
    let _ = write!(
        body,
        "<figure><figcaption>Top requesting auth keys (24 h)</figcaption>{}</figure>",
        charts::ranked(&top(&s.keys_day), "issued", "requests by auth key")
    );
    body.push_str("</div>");
    page("Activity", Nav::Activity, console.log.log_id(), &body)
}

/// The first ten.
fn top(items: &[(String, u64)]) -> Vec<(String, u64)> {
    items.iter().take(10).cloned().collect()
}
