//! DNS names: normalisation (lowercase, one trailing dot stripped, IDNA
//! A-labels, strict character rules) and the `exact` / `*.suffix` patterns
//! that class policies allow names with.

use std::fmt;

/// Why a string is not an acceptable DNS name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error("forbidden character U+{:04X}", *.0 as u32)]
    ForbiddenChar(char),
    #[error("empty label")]
    EmptyLabel,
    #[error("label longer than 63 octets")]
    LabelTooLong,
    #[error("name longer than 253 octets")]
    TooLong,
    #[error("character {0:?} not allowed in a DNS label")]
    BadChar(char),
    #[error("label starts or ends with a hyphen")]
    BadHyphen,
    #[error("'*' is allowed only as the entire leftmost label of a name with a suffix")]
    BadWildcard,
    #[error("last label is numeric (looks like an IP address)")]
    NumericTld,
    #[error("not a valid internationalised name (IDNA/UTS 46)")]
    Idna,
}

/// Longest input worth handing to IDNA (anything longer cannot shrink to 253).
const MAX_INPUT_BYTES: usize = 1024;

/// Normalise a DNS name: lowercase, strip ONE trailing dot, convert U-labels to
/// A-labels (UTS 46, STD3 rules, hyphen checks), and reject NUL, whitespace,
/// control and invisible format characters, empty labels, labels over 63
/// octets, names over 253, characters outside `[a-z0-9-]`, leading or trailing
/// hyphens in a label, and a numeric last label (an IP address is not a DNS
/// name). `*` is accepted only as the entire leftmost label followed by at
/// least one more label (`*.example`); whether a wildcard is permitted is the
/// caller's decision. The function is idempotent.
pub fn normalize_dns_name(s: &str) -> Result<String, NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if let Some(c) = s.chars().find(|&c| forbidden_char(c)) {
        return Err(NameError::ForbiddenChar(c));
    }
    if s.len() > MAX_INPUT_BYTES {
        return Err(NameError::TooLong);
    }
    let body = s.strip_suffix('.').unwrap_or(s);
    if body.is_empty() {
        return Err(NameError::Empty);
    }
    let (wildcard, rest) = match body.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, body),
    };
    if rest.contains('*') {
        return Err(NameError::BadWildcard);
    }
    if rest.split('.').any(str::is_empty) {
        return Err(NameError::EmptyLabel);
    }
    // Report the structural problems precisely for ASCII input; IDNA's own
    // error is opaque.
    if rest.is_ascii() {
        check_ascii_labels(&rest.to_ascii_lowercase())?;
    }
    let ascii = idna::domain_to_ascii_strict(rest).map_err(|_| NameError::Idna)?;
    check_ascii_labels(&ascii)?;
    let out = if wildcard {
        format!("*.{ascii}")
    } else {
        ascii
    };
    if out.len() > 253 {
        return Err(NameError::TooLong);
    }
    Ok(out)
}

/// Characters rejected before any mapping: NUL and other controls, all
/// whitespace, and invisible format characters that UTS 46 would silently
/// drop (so what a reviewer reads is what gets certified).
fn forbidden_char(c: char) -> bool {
    c.is_control()
        || c.is_whitespace()
        || matches!(
            c,
            '\u{00AD}' | '\u{034F}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        )
}

/// Checks a lowercase ASCII name (without wildcard label or trailing dot).
fn check_ascii_labels(name: &str) -> Result<(), NameError> {
    let mut last = "";
    for label in name.split('.') {
        if label.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        if label.len() > 63 {
            return Err(NameError::LabelTooLong);
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(NameError::BadChar(c));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(NameError::BadHyphen);
        }
        last = label;
    }
    if name.len() > 253 {
        return Err(NameError::TooLong);
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NameError::NumericTld);
    }
    Ok(())
}

/// Whether a normalised name is a wildcard (`*.suffix`).
pub(crate) fn is_wildcard(normalised: &str) -> bool {
    normalised.starts_with("*.")
}

/// An allowed-name pattern from a class policy, in normalised form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DnsPattern {
    /// Matches exactly this name.
    Exact(String),
    /// `*.suffix`: matches names with exactly ONE extra label in front of
    /// `suffix` (not `suffix` itself, not two labels), and the wildcard name
    /// `*.suffix` itself.
    Wildcard(String),
}

impl DnsPattern {
    /// Parses a pattern as written in a policy file.
    pub fn parse(pattern: &str) -> Result<DnsPattern, NameError> {
        let n = normalize_dns_name(pattern)?;
        Ok(match n.strip_prefix("*.") {
            Some(suffix) => DnsPattern::Wildcard(suffix.to_owned()),
            None => DnsPattern::Exact(n),
        })
    }

    /// Whether the pattern allows `name`, which must already be normalised.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            DnsPattern::Exact(e) => e == name,
            DnsPattern::Wildcard(suffix) => {
                if let Some(rest) = name.strip_prefix("*.") {
                    return rest == suffix;
                }
                match name
                    .strip_suffix(suffix.as_str())
                    .and_then(|head| head.strip_suffix('.'))
                {
                    Some(label) => !label.is_empty() && !label.contains('.') && label != "*",
                    None => false,
                }
            }
        }
    }
}

impl fmt::Display for DnsPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsPattern::Exact(e) => f.write_str(e),
            DnsPattern::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_trailing_dot_and_idn() {
        assert_eq!(
            normalize_dns_name("API-1.DB.INTERNAL.").as_deref(),
            Ok("api-1.db.internal")
        );
        assert_eq!(
            normalize_dns_name("bücher.db.internal").as_deref(),
            Ok("xn--bcher-kva.db.internal")
        );
        assert_eq!(
            normalize_dns_name("*.DB.internal").as_deref(),
            Ok("*.db.internal")
        );
    }

    #[test]
    fn rejects_bad_names() {
        let bad = [
            ("", NameError::Empty),
            (".", NameError::Empty),
            ("a\0.db.internal", NameError::ForbiddenChar('\0')),
            ("a b.db.internal", NameError::ForbiddenChar(' ')),
            ("a\t.db.internal", NameError::ForbiddenChar('\t')),
            (
                "a\u{200B}b.db.internal",
                NameError::ForbiddenChar('\u{200B}'),
            ),
            ("a..db.internal", NameError::EmptyLabel),
            (".db.internal", NameError::EmptyLabel),
            ("db.internal..", NameError::EmptyLabel),
            ("a_b.db.internal", NameError::BadChar('_')),
            ("-a.db.internal", NameError::BadHyphen),
            ("a-.db.internal", NameError::BadHyphen),
            ("*foo.db.internal", NameError::BadWildcard),
            ("a.*.db.internal", NameError::BadWildcard),
            ("*", NameError::BadWildcard),
            ("*.*.internal", NameError::BadWildcard),
            ("1.2.3.4", NameError::NumericTld),
        ];
        for (input, want) in bad {
            assert_eq!(normalize_dns_name(input), Err(want), "input {input:?}");
        }
        let long_label = format!("{}.internal", "a".repeat(64));
        assert_eq!(
            normalize_dns_name(&long_label),
            Err(NameError::LabelTooLong)
        );
        let long_name = format!("{}internal", "abcdefghi.".repeat(25));
        assert_eq!(normalize_dns_name(&long_name), Err(NameError::TooLong));
        assert!(normalize_dns_name("xn--zz.db.internal").is_err());
        assert!(normalize_dns_name("ab--cd.db.internal").is_err());
    }

    #[test]
    fn wildcard_pattern_matches_exactly_one_label() {
        let p = DnsPattern::parse("*.db.internal").expect("pattern");
        assert!(p.matches("a.db.internal"));
        assert!(p.matches("*.db.internal"));
        assert!(!p.matches("db.internal"));
        assert!(!p.matches("a.b.db.internal"));
        assert!(!p.matches("adb.internal"));
        assert!(!p.matches("a.db.internal.evil.example"));
        assert!(!p.matches("*.a.db.internal"));
        let e = DnsPattern::parse("db.internal").expect("pattern");
        assert!(e.matches("db.internal"));
        assert!(!e.matches("db.internal.evil.example"));
        assert!(!e.matches("a.db.internal"));
    }

    #[test]
    fn bad_patterns_rejected() {
        for p in ["*foo.x", "a.*.b", "*", "**.x", "x.*", ""] {
            assert!(DnsPattern::parse(p).is_err(), "pattern {p:?}");
        }
    }

    /// Property-ish: over a generated set of inputs, every accepted name
    /// normalises to itself again, and the result is plain lowercase ASCII.
    #[test]
    fn normalisation_is_idempotent() {
        let parts = [
            "a",
            "Z",
            "xn--bcher-kva",
            "bücher",
            "DB",
            "-",
            "x-y",
            "9",
            "*",
            "ß",
            "Ä",
            "日本",
            "",
            "ﬁ",
            "1a",
            "straße",
            "ＡＢ",
        ];
        let seps = [".", "。", ".."];
        let tails = ["", ".", "..", ".internal", ".internal."];
        let mut checked = 0;
        for a in parts {
            for sep in seps {
                for b in parts {
                    for tail in tails {
                        let input = format!("{a}{sep}{b}{tail}");
                        if let Ok(n) = normalize_dns_name(&input) {
                            checked += 1;
                            assert_eq!(
                                normalize_dns_name(&n).as_deref(),
                                Ok(n.as_str()),
                                "not idempotent for {input:?}"
                            );
                            assert!(n.is_ascii() && n == n.to_ascii_lowercase(), "{n:?}");
                            assert!(!n.ends_with('.'), "{n:?}");
                        }
                    }
                }
            }
        }
        assert!(checked > 100, "only {checked} accepted inputs");
    }
}
