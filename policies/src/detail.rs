//! Rendering client-supplied values into reason details safely: escaped,
//! quoted and truncated, so a hostile name cannot forge log lines or bloat
//! responses.

/// Longest escaped value shown in a detail, in characters.
const MAX_SHOWN_CHARS: usize = 80;

/// `"value"`, with control and non-printing characters escaped and the
/// escaped text cut to 80 characters (marked with `…`).
pub(crate) fn quoted(raw: &str) -> String {
    let escaped: String = raw.escape_debug().collect();
    let mut shown: String = escaped.chars().take(MAX_SHOWN_CHARS).collect();
    if escaped.chars().count() > MAX_SHOWN_CHARS {
        shown.push('…');
    }
    format!("\"{shown}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_truncates() {
        assert_eq!(quoted("a\0b\n"), "\"a\\0b\\n\"");
        let long = "x".repeat(200);
        let q = quoted(&long);
        assert_eq!(q.chars().count(), 80 + 3);
        assert!(q.ends_with("…\""));
    }
}
