//! Lifetime strings on the wire: `"3600s"`, `"90m"`, `"24h"`, `"7d"`, `"3600"`.
//!
//! Grammar: one or more ASCII digits, optionally followed by exactly one unit
//! letter (`s`, `m`, `h`, `d`; lowercase). No sign, no whitespace, no
//! fractions, no compound values. Plain digits mean seconds. Values whose
//! seconds do not fit in a `u64` are rejected. Zero parses; whether a zero
//! TTL is acceptable is the caller's decision.
//!
//! [`format_duration`] writes the largest of `h`, `m`, `s` that divides the
//! value exactly (never `d`, so the output is also a valid Go duration, which
//! CFSSL clients parse).

use std::time::Duration;

use thiserror::Error;

/// Why a duration string was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DurationError {
    /// The string is empty.
    #[error("duration is empty")]
    Empty,
    /// The string starts with a minus sign.
    #[error("duration must not be negative")]
    Negative,
    /// The number part is missing or contains something other than digits.
    #[error("duration must be digits followed by an optional unit (s, m, h, d)")]
    InvalidNumber,
    /// The unit letter is not one of `s`, `m`, `h`, `d`.
    #[error("duration unit must be one of s, m, h, d")]
    UnknownUnit,
    /// The value does not fit.
    #[error("duration is too large")]
    Overflow,
}

/// Parses a wire duration (see the module documentation for the grammar).
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let bytes = s.as_bytes();
    let Some(&last) = bytes.last() else {
        return Err(DurationError::Empty);
    };
    if bytes[0] == b'-' {
        return Err(DurationError::Negative);
    }
    let (digits, multiplier) = if last.is_ascii_digit() {
        (bytes, 1u64)
    } else {
        let multiplier = match last {
            b's' => 1,
            b'm' => 60,
            b'h' => 3_600,
            b'd' => 86_400,
            _ if last.is_ascii_alphabetic() => return Err(DurationError::UnknownUnit),
            _ => return Err(DurationError::InvalidNumber),
        };
        (&bytes[..bytes.len() - 1], multiplier)
    };
    if digits.is_empty() {
        return Err(DurationError::InvalidNumber);
    }
    let mut value: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return Err(DurationError::InvalidNumber);
        }
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or(DurationError::Overflow)?;
    }
    let secs = value
        .checked_mul(multiplier)
        .ok_or(DurationError::Overflow)?;
    Ok(Duration::from_secs(secs))
}

/// Formats a duration for the wire, in whole seconds (sub-second parts are
/// dropped): `"24h"`, `"90m"`, `"61s"`, `"0s"`.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        "0s".to_owned()
    } else if secs % 3_600 == 0 {
        format!("{}h", secs / 3_600)
    } else if secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Result<Duration, DurationError> {
        Ok(Duration::from_secs(n))
    }

    #[test]
    fn accepts_units_and_plain_seconds() {
        assert_eq!(parse_duration("3600s"), secs(3600));
        assert_eq!(parse_duration("90m"), secs(5400));
        assert_eq!(parse_duration("24h"), secs(86_400));
        assert_eq!(parse_duration("7d"), secs(604_800));
        assert_eq!(parse_duration("3600"), secs(3600));
        assert_eq!(parse_duration("0"), secs(0));
        assert_eq!(parse_duration("0s"), secs(0));
        assert_eq!(parse_duration("007m"), secs(420));
        assert_eq!(parse_duration("18446744073709551615"), secs(u64::MAX));
        assert_eq!(
            parse_duration("213503982334601d"),
            secs(213_503_982_334_601 * 86_400)
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("-1"), Err(DurationError::Negative));
        assert_eq!(parse_duration("-5h"), Err(DurationError::Negative));
        assert_eq!(parse_duration("-"), Err(DurationError::Negative));
        assert_eq!(parse_duration("h"), Err(DurationError::InvalidNumber));
        assert_eq!(parse_duration("s"), Err(DurationError::InvalidNumber));
        assert_eq!(parse_duration("+5s"), Err(DurationError::InvalidNumber));
        assert_eq!(parse_duration(" 5s"), Err(DurationError::InvalidNumber));
        assert_eq!(parse_duration("5s "), Err(DurationError::InvalidNumber));
        assert_eq!(parse_duration("1.5h"), Err(DurationError::InvalidNumber));
        assert_eq!(parse_duration("1h30m"), Err(DurationError::InvalidNumber));
        assert_eq!(parse_duration("5ms"), Err(DurationError::InvalidNumber));
        assert_eq!(parse_duration("5w"), Err(DurationError::UnknownUnit));
        assert_eq!(parse_duration("5H"), Err(DurationError::UnknownUnit));
        assert_eq!(parse_duration("5µ"), Err(DurationError::InvalidNumber));
        assert_eq!(parse_duration("٣s"), Err(DurationError::InvalidNumber));
    }

    #[test]
    fn rejects_overflow() {
        assert_eq!(
            parse_duration("18446744073709551616"),
            Err(DurationError::Overflow)
        );
        assert_eq!(
            parse_duration("99999999999999999999999999s"),
            Err(DurationError::Overflow)
        );
        assert_eq!(
            parse_duration("213503982334602d"),
            Err(DurationError::Overflow)
        );
        assert_eq!(
            parse_duration("5124095576030432h"),
            Err(DurationError::Overflow)
        );
    }

    #[test]
    fn formats_and_round_trips() {
        assert_eq!(format_duration(Duration::from_secs(0)), "0s");
        assert_eq!(format_duration(Duration::from_secs(86_400)), "24h");
        assert_eq!(format_duration(Duration::from_secs(5_400)), "90m");
        assert_eq!(format_duration(Duration::from_secs(61)), "61s");
        assert_eq!(format_duration(Duration::from_millis(1_500)), "1s");
        for n in [0u64, 1, 59, 60, 61, 3_599, 3_600, 86_400, 90_061, u64::MAX] {
            let d = Duration::from_secs(n);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{n}");
        }
    }
}
