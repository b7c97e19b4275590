//! Server-rendered SVG charts (no script): stacked columns over the hours
//! of a day, and horizontal bars for ranked counts. Sized by `viewBox` so
//! they scale to the page width; colours come from the stylesheet's
//! classes; every bar has a `<title>` with its exact figure.

use super::html::esc;
use std::fmt::Write;

/// Issued and denied per hour, oldest first (24 columns).
pub fn hourly(series: &[(u64, u64)], label: &str) -> String {
    const W: f64 = 480.0;
    const H: f64 = 120.0;
    const TOP: f64 = 14.0;
    let max = series.iter().map(|(i, d)| i + d).max().unwrap_or(0).max(1);
    let n = series.len().max(1) as f64;
    let col = W / n;
    let mut out = format!(
        "<svg class=\"chart hourly\" viewBox=\"0 0 {W} {h}\" role=\"img\" aria-label=\"{}\">",
        esc(label),
        h = H + 16.0
    );
    let _ = write!(
        out,
        "<text class=\"axis\" x=\"0\" y=\"10\">max {max}/h</text>\
         <line class=\"base\" x1=\"0\" y1=\"{H}\" x2=\"{W}\" y2=\"{H}\"/>"
    );
    for (i, (issued, denied)) in series.iter().enumerate() {
        let x = i as f64 * col + 1.0;
        let scale = (H - TOP) / max as f64;
        let hi = *issued as f64 * scale;
        let hd = *denied as f64 * scale;
        let ago = series.len() - 1 - i;
        let when = if ago == 0 {
            "this hour".to_string()
        } else {
            format!("{ago} h ago")
        };
        let _ = write!(
            out,
            "<g><title>{when}: {issued} issued, {denied} denied</title>\
             <rect class=\"bar issued\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{hi:.1}\"/>\
             <rect class=\"bar denied\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{hd:.1}\"/></g>",
            H - hi,
            H - hi - hd,
            w = (col - 2.0).max(1.0),
        );
    }
    let _ = write!(
        out,
        "<text class=\"axis\" x=\"0\" y=\"{y}\">24 h ago</text>\
         <text class=\"axis end\" x=\"{W}\" y=\"{y}\">now</text></svg>",
        y = H + 13.0
    );
    out
}

/// One horizontal bar per `(label, count)`, longest first as given.
pub fn ranked(items: &[(String, u64)], class: &str, label: &str) -> String {
    const W: f64 = 480.0;
    const ROW: f64 = 22.0;
    const LABEL: f64 = 190.0;
    let max = items.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let h = ROW * items.len().max(1) as f64;
    let mut out = format!(
        "<svg class=\"chart ranked\" viewBox=\"0 0 {W} {h}\" role=\"img\" aria-label=\"{}\">",
        esc(label)
    );
    if items.is_empty() {
        out.push_str("<text class=\"axis\" x=\"0\" y=\"15\">none</text>");
    }
    for (i, (name, n)) in items.iter().enumerate() {
        let y = i as f64 * ROW;
        let width = (W - LABEL - 60.0) * *n as f64 / max as f64;
        let shown: String = name.chars().take(28).collect();
        let _ = write!(
            out,
            "<g><title>{name}: {n}</title>\
             <text class=\"label\" x=\"0\" y=\"{ty:.1}\">{shown}</text>\
             <rect class=\"bar {class}\" x=\"{LABEL}\" y=\"{ry:.1}\" width=\"{width:.1}\" height=\"{bh:.1}\"/>\
             <text class=\"value\" x=\"{vx:.1}\" y=\"{ty:.1}\">{n}</text></g>",
            name = esc(name),
            shown = esc(&shown),
            class = esc(class),
            ty = y + 15.0,
            ry = y + 4.0,
            bh = ROW - 8.0,
            vx = LABEL + width + 6.0,
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_without_styles_or_scripts() {
        let svg = hourly(&[(1, 0), (3, 2)], "db");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("class=\"bar issued\"").count(), 2);
        let svg = ranked(
            &[
                ("<bad>".to_string(), 5),
                ("name_not_allowed".to_string(), 2),
            ],
            "denied",
            "reasons",
        );
        assert!(svg.contains("&lt;bad&gt;") && !svg.contains("<bad>"));
        for s in [svg, hourly(&[], "x")] {
            assert!(!s.contains("style") && !s.contains("script"));
        }
    }
}
