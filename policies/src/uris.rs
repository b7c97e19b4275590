//! URI SANs (SPIFFE IDs and the like): a strict normal form (scheme and
//! authority lowercased) and the exact / `prefix/*` patterns that class
//! policies allow them with.

use std::fmt;

/// Why a string is not an acceptable URI SAN or URI pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("empty URI")]
    Empty,
    #[error("URI longer than {MAX_URI_BYTES} bytes")]
    TooLong,
    #[error("character U+{:04X} not allowed in a URI", *.0 as u32)]
    BadChar(char),
    #[error("missing \"scheme://\"")]
    NoScheme,
    #[error("invalid scheme")]
    BadScheme,
    #[error("invalid or empty authority (user info is not allowed)")]
    BadAuthority,
    #[error("'*' is allowed only as a final \"/*\" in a pattern")]
    BadWildcard,
}

const MAX_URI_BYTES: usize = 2048;

/// Normalises a URI: printable ASCII only, `scheme://authority[rest]`, scheme
/// and authority lowercased, user info rejected. The rest is kept verbatim.
pub fn normalize_uri(s: &str) -> Result<String, UriError> {
    if s.is_empty() {
        return Err(UriError::Empty);
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(UriError::BadChar(c));
    }
    if s.len() > MAX_URI_BYTES {
        return Err(UriError::TooLong);
    }
    let (scheme, after) = s.split_once("://").ok_or(UriError::NoScheme)?;
    let mut sc = scheme.chars();
    let scheme_ok = sc.next().is_some_and(|c| c.is_ascii_alphabetic())
        && sc.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(UriError::BadScheme);
    }
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    let authority_ok = !authority.is_empty()
        && authority.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | ':' | '[' | ']')
        });
    if !authority_ok {
        return Err(UriError::BadAuthority);
    }
    Ok(format!(
        "{}://{}{}",
        scheme.to_ascii_lowercase(),
        authority.to_ascii_lowercase(),
        rest
    ))
}

/// An allowed-URI pattern from a class policy, in normalised form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UriPattern {
    /// Matches exactly this URI (after normalisation).
    Exact(String),
    /// Written `prefix/*`; holds `prefix/`. Matches URIs that continue the
    /// prefix with one or more path characters forming non-empty path
    /// segments: no `.`/`..` segments, no `//`, no trailing `/`, no
    /// percent-encoding, query or fragment.
    Prefix(String),
}

impl UriPattern {
    /// Parses a pattern as written in a policy file.
    pub fn parse(pattern: &str) -> Result<UriPattern, UriError> {
        match pattern.strip_suffix('*') {
            Some(prefix) if prefix.ends_with("/") => {
                if prefix.contains(['*', '?', '#', '%']) {
                    return Err(UriError::BadWildcard);
                }
                Ok(UriPattern::Prefix(normalize_uri(prefix)?))
            }
            _ if pattern.contains('*') => Err(UriError::BadWildcard),
            _ => Ok(UriPattern::Exact(normalize_uri(pattern)?)),
        }
    }

    /// Whether the pattern allows `uri`, which must already be normalised.
    pub fn matches(&self, uri: &str) -> bool {
        match self {
            UriPattern::Exact(e) => e == uri,
            UriPattern::Prefix(p) => uri.strip_prefix(p.as_str()).is_some_and(valid_tail),
        }
    }
}

fn valid_tail(tail: &str) -> bool {
    !tail.is_empty()
        && tail.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    '-' | '.'
                        | '_'
                        | '~'
                        | '!'
                        | '$'
                        | '&'
                        | '\''
                        | '('
                        | ')'
                        | '+'
                        | ','
                        | ';'
                        | '='
                        | ':'
                        | '@'
                        | '/'
                )
        })
        && tail
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

impl fmt::Display for UriPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UriPattern::Exact(e) => f.write_str(e),
            UriPattern::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_patterns() {
        let p = UriPattern::parse("spiffe://trellis.internal/db/*").expect("pattern");
        let ok = |u: &str| normalize_uri(u).is_ok_and(|n| p.matches(&n));
        assert!(ok("spiffe://trellis.internal/db/a"));
        assert!(ok("SPIFFE://Trellis.Internal/db/a/b-c"));
        assert!(!ok("spiffe://trellis.internal/DB/a"));
        assert!(!ok("spiffe://trellis.internal/db/"));
        assert!(!ok("spiffe://trellis.internal/db"));
        assert!(!ok("spiffe://trellis.internal/db/../api/x"));
        assert!(!ok("spiffe://trellis.internal/db/a/"));
        assert!(!ok("spiffe://trellis.internal/db/a//b"));
        assert!(!ok("spiffe://trellis.internal/db/%2e%2e/api"));
        assert!(!ok("spiffe://trellis.internal/db/a?x=1"));
        assert!(!ok("spiffe://trellis.internal.evil/db/a"));
        assert!(!ok("spiffe://user@trellis.internal/db/a"));
        assert!(!ok("spiffe://trellis.internal/db/a b"));
    }

    #[test]
    fn exact_patterns_and_bad_patterns() {
        let p = UriPattern::parse("spiffe://trellis.internal/ca").expect("pattern");
        assert!(p.matches("spiffe://trellis.internal/ca"));
        assert!(!p.matches("spiffe://trellis.internal/ca/x"));
        for bad in [
            "spiffe://*",
            "spiffe://t/*/x",
            "spiffe://t/a*",
            "no-scheme/*",
            "://x/*",
            "",
        ] {
            assert!(UriPattern::parse(bad).is_err(), "pattern {bad:?}");
        }
    }
}
