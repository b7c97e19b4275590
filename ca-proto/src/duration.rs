//! The one duration grammar of Trellis: lifetimes on the wire (`"3600s"`,
//! `"90m"`, `"24h"`, `"7d"`, `"3600"`) and in policy files (`"24h"`).
//!
//! Grammar: one or more ASCII digits, optionally followed by exactly one unit
//! letter (`s`, `m`, `h`, `d`; lowercase). No sign, no whitespace, no
//! fractions, no compound values. Plain digits mean seconds. Values whose
//! seconds do not fit in a `u64` are rejected.
//!
//! [`DurationRules`] say what a context requires beyond the grammar:
//! [`parse_duration`] is the wire ([`DurationRules::WIRE`]: plain seconds
//! and zero parse; whether a zero TTL is acceptable is the caller's
//! decision), [`parse_duration_strict`] is for policy files
//! ([`DurationRules::STRICT`]: a unit is required and zero is refused).
//!
//! [`format_duration`] writes the largest of `h`, `m`, `s` that divides the
//! value exactly (never `d`, so the output is also a valid Go duration, which
//! CFSSL clients parse); its output parses under both rules (zero only under
//! the wire rules).

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
    /// Plain digits where [`DurationRules::unit_required`] wants a unit.
    #[error("duration needs a unit (s, m, h or d), e.g. \"24h\"")]
    MissingUnit,
    /// Zero where [`DurationRules::zero_allowed`] is false.
    #[error("duration must be greater than zero")]
    Zero,
}

/// What a context requires of a duration beyond the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationRules {
    /// Plain digits (seconds) are refused with [`DurationError::MissingUnit`].
    pub unit_required: bool,
    /// Whether zero parses; if not, [`DurationError::Zero`].
    pub zero_allowed: bool,
}

impl DurationRules {
    /// The wire: plain seconds and zero parse.
    pub const WIRE: DurationRules = DurationRules {
        unit_required: false,
        zero_allowed: true,
    };
    /// Policy files: a unit is required and zero is refused.
    pub const STRICT: DurationRules = DurationRules {
        unit_required: true,
        zero_allowed: false,
    };
}

/// Parses a wire duration ([`DurationRules::WIRE`]).
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    parse_duration_with(s, DurationRules::WIRE)
}

/// Parses a policy-file duration ([`DurationRules::STRICT`]).
pub fn parse_duration_strict(s: &str) -> Result<Duration, DurationError> {
    parse_duration_with(s, DurationRules::STRICT)
}

/// Parses `s` under `rules` (see the module documentation for the grammar).
/// Grammar errors come before rule errors, and a missing unit before zero.
pub fn parse_duration_with(s: &str, rules: DurationRules) -> Result<Duration, DurationError> {
    let bytes = s.as_bytes();
    let Some(&last) = bytes.last() else {
        return Err(DurationError::Empty);
    };
    if bytes[0] == b'-' {
        return Err(DurationError::Negative);
    }
    let (digits, multiplier) = if last.is_ascii_digit() {
        if rules.unit_required && bytes.iter().all(u8::is_ascii_digit) {
            return Err(DurationError::MissingUnit);
        }
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
    if secs == 0 && !rules.zero_allowed {
        return Err(DurationError::Zero);
    }
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
    fn strict_rules_want_a_unit_and_refuse_zero() {
        for (s, n) in [
            ("90s", 90),
            ("15m", 900),
            ("24h", 86_400),
            ("30d", 2_592_000),
        ] {
            assert_eq!(parse_duration_strict(s), secs(n), "{s}");
        }
        assert_eq!(parse_duration_strict("24"), Err(DurationError::MissingUnit));
        assert_eq!(parse_duration_strict("0"), Err(DurationError::MissingUnit));
        assert_eq!(parse_duration_strict("0s"), Err(DurationError::Zero));
        assert_eq!(parse_duration_strict("000d"), Err(DurationError::Zero));
        // Grammar errors are the wire's.
        for bad in ["", "h", "1.5h", "-1h", "+1h", "1 h", "1H", "ü", "1x2"] {
            assert_eq!(parse_duration_strict(bad), parse_duration(bad), "{bad:?}");
        }
        assert_eq!(
            parse_duration_strict("99999999999999999999d"),
            Err(DurationError::Overflow)
        );
        let only_zero = DurationRules {
            unit_required: false,
            zero_allowed: false,
        };
        assert_eq!(parse_duration_with("60", only_zero), secs(60));
        assert_eq!(
            parse_duration_with("0", only_zero),
            Err(DurationError::Zero)
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
            if n > 0 {
                assert_eq!(parse_duration_strict(&format_duration(d)), Ok(d), "{n}");
            }
        }
    }
}
