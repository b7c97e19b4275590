//! RFC 3339 times on the wire.
//!
//! [`Rfc3339`] is a date-time that is known to be valid RFC 3339 text: it
//! serialises as exactly the text it was made from (or, when made from an
//! [`OffsetDateTime`], as the `time` crate formats it: `Z` for UTC,
//! fractional seconds only when not zero), and deserialising refuses any
//! string that is not RFC 3339 (without echoing it).

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use ::time::format_description::well_known::Rfc3339 as Rfc3339Format;
use ::time::OffsetDateTime;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// Why a value is not an [`Rfc3339`] time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TimeError {
    /// The text is not an RFC 3339 date-time.
    #[error("not an RFC 3339 date-time")]
    Malformed,
    /// The instant cannot be written in RFC 3339 (a year outside
    /// 0000-9999, or an offset with seconds).
    #[error("time cannot be written as RFC 3339")]
    Unrepresentable,
}

/// A valid RFC 3339 date-time, with the text it is written as.
///
/// Equality compares the text: two spellings of one instant (`Z` and
/// `+00:00`) are different values; compare [`time`](Self::time) for the
/// instant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rfc3339 {
    text: String,
    at: OffsetDateTime,
}

impl Rfc3339 {
    /// The time, as `text` says it (e.g. `"2024-01-01T00:00:00Z"`).
    pub fn parse(text: &str) -> Result<Rfc3339, TimeError> {
        let at = OffsetDateTime::parse(text, &Rfc3339Format).map_err(|_| TimeError::Malformed)?;
        Ok(Rfc3339 {
            text: text.to_owned(),
            at,
        })
    }

    /// The time `secs` seconds after the Unix epoch, in UTC.
    pub fn from_unix_timestamp(secs: i64) -> Result<Rfc3339, TimeError> {
        let at =
            OffsetDateTime::from_unix_timestamp(secs).map_err(|_| TimeError::Unrepresentable)?;
        Rfc3339::try_from(at)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The instant, with the offset the text gives.
    pub fn time(&self) -> OffsetDateTime {
        self.at
    }

    /// Seconds since the Unix epoch (fractions dropped).
    pub fn unix_timestamp(&self) -> i64 {
        self.at.unix_timestamp()
    }
}

impl TryFrom<OffsetDateTime> for Rfc3339 {
    type Error = TimeError;

    fn try_from(at: OffsetDateTime) -> Result<Rfc3339, TimeError> {
        let text = at
            .format(&Rfc3339Format)
            .map_err(|_| TimeError::Unrepresentable)?;
        Ok(Rfc3339 { text, at })
    }
}

impl FromStr for Rfc3339 {
    type Err = TimeError;

    fn from_str(text: &str) -> Result<Rfc3339, TimeError> {
        Rfc3339::parse(text)
    }
}

impl Deref for Rfc3339 {
    type Target = str;

    fn deref(&self) -> &str {
        &self.text
    }
}

impl AsRef<str> for Rfc3339 {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<Rfc3339> for String {
    fn from(t: Rfc3339) -> String {
        t.text
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Rfc3339 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Rfc3339, D::Error> {
        let text = String::deserialize(deserializer)?;
        let at = OffsetDateTime::parse(&text, &Rfc3339Format)
            .map_err(|_| serde::de::Error::custom(TimeError::Malformed))?;
        Ok(Rfc3339 { text, at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_as_the_text_it_was_made_from() {
        for text in [
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00+00:00",
            "2024-02-29T23:59:59.5-07:30",
            "1985-04-12T23:20:50.52Z",
            "9999-12-31T23:59:59Z",
        ] {
            let json = format!("\"{text}\"");
            let t: Rfc3339 = serde_json::from_str(&json).expect(text);
            assert_eq!(t.as_str(), text);
            assert_eq!(&*t, text);
            assert_eq!(t.to_string(), text);
            assert_eq!(serde_json::to_string(&t).expect("ser"), json);
            assert_eq!(text.parse::<Rfc3339>(), Ok(t));
        }
        let z: Rfc3339 = "2024-01-01T00:00:00Z".parse().expect("z");
        let plus: Rfc3339 = "2024-01-01T00:00:00+00:00".parse().expect("+");
        assert_ne!(z, plus, "equality is on the text");
        assert_eq!(z.time(), plus.time());
        assert_eq!(z.unix_timestamp(), 1_704_067_200);
    }

    #[test]
    fn made_from_a_time_it_is_what_time_formats() {
        // The server's sign response wrote `OffsetDateTime::format(&Rfc3339)`
        // into a string; these are the same bytes.
        let at = OffsetDateTime::from_unix_timestamp(1_704_067_200).expect("t");
        let t = Rfc3339::try_from(at).expect("fits");
        assert_eq!(t.as_str(), at.format(&Rfc3339Format).expect("format"));
        assert_eq!(t.as_str(), "2024-01-01T00:00:00Z");
        assert_eq!(Rfc3339::from_unix_timestamp(1_704_067_200), Ok(t.clone()));
        assert_eq!(String::from(t), "2024-01-01T00:00:00Z");
        let odd = ::time::UtcOffset::from_hms(1, 0, 30).expect("offset");
        assert_eq!(
            Rfc3339::try_from(at.to_offset(odd)),
            Err(TimeError::Unrepresentable)
        );
        // Years beyond 9999 do not exist here (no `large-dates`).
        assert!(OffsetDateTime::from_unix_timestamp(253_402_300_800).is_err());
        assert_eq!(
            Rfc3339::from_unix_timestamp(i64::MAX),
            Err(TimeError::Unrepresentable)
        );
    }

    #[test]
    fn malformed_text_is_refused_without_echo() {
        for bad in [
            "",
            "2024-01-01",
            "2024-01-01T00:00:00",
            "2024-13-01T00:00:00Z",
            "2024-02-30T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00+24:00",
            " 2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00Z ",
            "1704067200",
            "SECRET-VALUE",
        ] {
            assert_eq!(Rfc3339::parse(bad), Err(TimeError::Malformed), "{bad:?}");
            let e = serde_json::from_str::<Rfc3339>(&format!("\"{bad}\"")).unwrap_err();
            assert!(!e.to_string().contains("SECRET"), "{e}");
        }
        assert!(serde_json::from_str::<Rfc3339>("1704067200").is_err());
        // RFC 3339 section 5.6 lets a space stand for `T`; `time` takes it.
        assert!(Rfc3339::parse("2024-01-01 00:00:00Z").is_ok());
        assert!(serde_json::from_str::<Rfc3339>("null").is_err());
    }
}
