//! HTML for the console: escaping (every value that came from a log entry,
//! a certificate or a query goes through [`esc`]), the page frame shared
//! by every page, and small formatting helpers. No inline styles or
//! scripts (the CSP forbids both): looks come from `assets/console.css`.

use std::fmt::Write;

/// `text` safe in element content and in double-quoted attributes.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// The console's pages, for the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Activity,
    Search,
    Findings,
}

/// A whole page: head, navigation, `body`, footer.
pub fn page(title: &str, active: Nav, log_id: &str, body: &str) -> String {
    let mut nav = String::new();
    for (item, href, label) in [
        (Nav::Overview, "/ui/", "Overview"),
        (Nav::Activity, "/ui/activity", "Activity"),
        (Nav::Search, "/ui/search", "Search"),
        (Nav::Findings, "/ui/findings", "Findings"),
    ] {
        let current = if item == active {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(nav, "<a href=\"{href}\"{current}>{label}</a>");
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>{title} · Trellis</title>\
         <link rel=\"icon\" href=\"data:,\">\
         <link rel=\"stylesheet\" href=\"/ui/assets/console.css\"></head>\
         <body><header><a class=\"brand\" href=\"/ui/\">Trellis</a><nav>{nav}</nav>\
         <span class=\"replica\">log {log}</span></header>\
         <main><h1>{title}</h1>\n{body}\n</main>\
         <footer>Read-only console of this replica · generated {now} UTC</footer></body></html>\n",
        title = esc(title),
        log = esc(log_id),
        now = esc(&short_time(super::now())),
    )
}

/// `2026-05-01 12:34` (UTC) from Unix seconds.
pub fn short_time(t: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(t) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        ),
        Err(_) => "-".into(),
    }
}

/// `2026-05-01 12:34:56` (UTC) from an RFC 3339 time (fractions dropped);
/// the text itself when it is not one.
pub fn time_text(rfc3339: &str) -> String {
    match ca_proto::time::Rfc3339::parse(rfc3339) {
        Ok(t) => {
            let t = t.time();
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        }
        Err(_) => rfc3339.to_string(),
    }
}

/// A byte count for people: `812 B`, `14.2 KiB`, `3.1 MiB`, `2.0 GiB`.
pub fn bytes(n: u64) -> String {
    let n_f = n as f64;
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n_f / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", n_f / 1_048_576.0),
        _ => format!("{:.1} GiB", n_f / 1_073_741_824.0),
    }
}

/// "in 3 d 4 h", "5 min ago": how far `t` is from `now`.
pub fn relative(t: i64, now: i64) -> String {
    let d = t - now;
    let span = span(d.unsigned_abs());
    if d >= 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

fn span(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs} s"),
        (0, 0, m) => format!("{m} min"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, h, _) if d < 30 => format!("{d} d {h} h"),
        (d, _, _) => format!("{d} d"),
    }
}

/// A `<table>` with a header row; `rows` are already-escaped cells.
pub fn table(class: &str, headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!(
        "<div class=\"scroll\"><table class=\"{}\"><thead><tr>",
        esc(class)
    );
    for h in headers {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for (cell, header) in row.iter().zip(headers) {
            let _ = write!(out, "<td data-label=\"{}\">{cell}</td>", esc(header));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    out
}

/// A small coloured label (`ok`, `warn`, `bad`, or a decision name).
pub fn badge(kind: &str, text: &str) -> String {
    format!("<span class=\"badge {}\">{}</span>", esc(kind), esc(text))
}

/// A short, hoverable form of a long hex value.
pub fn short_hex(hex: &str) -> String {
    let short: String = hex.chars().take(16).collect();
    if short.len() < hex.len() {
        format!("<code title=\"{}\">{}…</code>", esc(hex), esc(&short))
    } else {
        format!("<code>{}</code>", esc(hex))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(
            esc("<script>alert(\"x\")</script>&'"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
        assert_eq!(esc("a\u{0}b"), "a\\u{0}b");
    }

    #[test]
    fn times_read_as_countdowns() {
        assert_eq!(relative(100 + 3 * 86_400 + 7200, 100), "in 3 d 2 h");
        assert_eq!(relative(0, 300), "5 min ago");
        assert_eq!(relative(400 * 86_400, 0), "in 400 d");
        assert_eq!(short_time(0), "1970-01-01 00:00");
        assert_eq!(
            time_text("2026-12-05T23:42:26.474540054Z"),
            "2026-12-05 23:42:26"
        );
        assert_eq!(bytes(2048), "2.0 KiB");
    }
}
