//! Errors from loading and validating class policy files, each naming the
//! file and, where known, the line (`db.toml:12:5: unknown field ...`).

use std::fmt;
use std::path::PathBuf;

/// A policy file could not be read, parsed or accepted.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Reading a file or directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML, or not the policy schema (unknown field, wrong type,
    /// unknown value such as an unknown key usage), at a 1-based line and column.
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// Well-formed but not acceptable (bad CIDR or pattern, default_ttl >
    /// max_ttl, missing default profile, bad class name, ...).
    #[error("{}{message}", Location { file, line: *line })]
    Invalid {
        file: String,
        line: Option<usize>,
        message: String,
    },
}

struct Location<'a> {
    file: &'a str,
    line: Option<usize>,
}

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: ", self.file),
            None => write!(f, "{}: ", self.file),
        }
    }
}

impl PolicyError {
    /// The 1-based line the error points at, if known.
    pub fn line(&self) -> Option<usize> {
        match self {
            PolicyError::Io { .. } => None,
            PolicyError::Syntax { line, .. } => Some(*line),
            PolicyError::Invalid { line, .. } => *line,
        }
    }
}

/// 1-based (line, column) of a byte offset in `text`; column counts characters.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut off = offset.min(text.len());
    while !text.is_char_boundary(off) {
        off -= 1;
    }
    let before = &text[..off];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let t = "a = 1\nbü = 2\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        assert_eq!(line_col(t, 9), (2, 3));
        assert_eq!(line_col(t, 999), (3, 1));
    }
}
