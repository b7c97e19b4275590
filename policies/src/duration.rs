//! Durations as written in policy files (`"90s"`, `"15m"`, `"24h"`, `"30d"`)
//! and their compact rendering in reason details.

use std::time::Duration;

/// Parses `<positive integer><s|m|h|d>`. Zero and overflow are errors.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!("invalid duration {s:?}: expected a positive whole number followed by s, m, h or d (e.g. \"24h\")")
    };
    let unit_at = s.len().checked_sub(1).ok_or_else(bad)?;
    let (digits, unit) = (
        s.get(..unit_at).ok_or_else(bad)?,
        s.get(unit_at..).ok_or_else(bad)?,
    );
    let mult: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let secs = n.checked_mul(mult).ok_or_else(bad)?;
    if secs == 0 {
        return Err(format!("invalid duration {s:?}: must be greater than zero"));
    }
    Ok(Duration::from_secs(secs))
}

/// Renders a duration in the largest unit that divides it (`"72h"`, `"90s"`).
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 {
        return format!("{:.3}s", d.as_secs_f64());
    }
    match secs {
        0 => "0s".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(2_592_000)));
        for bad in [
            "",
            "h",
            "0s",
            "24",
            "1.5h",
            "-1h",
            "+1h",
            "1 h",
            "1H",
            "99999999999999999999d",
            "ü",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_duration(Duration::from_secs(259_200)), "3d");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
    }
}
