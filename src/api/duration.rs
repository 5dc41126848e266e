//! The one duration type used by every Lethe resource.
//!
//! Retention windows are written the way privacy statements speak of them
//! ("24 months", "7 years", "90 days"), so the short forms `90d`, `36h`,
//! `13mo`, `7y` and combinations such as `1y6mo` are accepted, as well as
//! ISO-8601 durations (`P30D`, `P1Y6M`, `PT36H`). Months and years are kept
//! apart from fixed-length units because they are calendar-aware: 1 month
//! before 31 March is 28 or 29 February, not "30 days before".

use std::{fmt, str::FromStr};

use chrono::{DateTime, Months, TimeDelta, Utc};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Largest accepted duration: a retention window beyond 200 years is a typo.
const MAX_MONTHS: u64 = 200 * 12;
const MAX_SECONDS: u64 = 200 * 366 * 86_400;

/// The pattern the CRD schema enforces at admission; the parser is the
/// authority (it also rejects zero and out-of-range values).
pub const DURATION_PATTERN: &str =
    r"^([0-9]+(y|mo|w|d|h|m|s))+$|^P([0-9]+Y)?([0-9]+M)?([0-9]+W)?([0-9]+D)?(T([0-9]+H)?([0-9]+M)?([0-9]+S)?)?$";

/// A calendar-aware span of time: whole months plus a fixed number of seconds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Duration {
    months: u32,
    seconds: u64,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("duration is empty")]
    Empty,
    #[error(
        "'{0}' is not a duration: use a number and a unit (y, mo, w, d, h, m, s) such as 90d, 13mo, 1y6mo, or ISO-8601 such as P30D"
    )]
    Syntax(String),
    #[error("duration '{0}' is zero; a retention window must be positive")]
    Zero(String),
    #[error("duration '{0}' is longer than 200 years")]
    TooLong(String),
    #[error("duration '{0}' repeats the unit '{1}'")]
    RepeatedUnit(String, &'static str),
}

impl Duration {
    /// Whole calendar months (years count as 12).
    pub fn months(&self) -> u32 {
        self.months
    }

    /// The fixed-length part in seconds (weeks, days, hours, minutes, seconds).
    pub fn seconds(&self) -> u64 {
        self.seconds
    }

    /// The text as the user wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The instant this long before `t`: months first (clamped to the end of
    /// a shorter month, so 1mo before 31 March is the last day of February),
    /// then the fixed part. `None` only if the result is out of range.
    pub fn before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let t = t.checked_sub_months(Months::new(self.months))?;
        t.checked_sub_signed(TimeDelta::try_seconds(i64::try_from(self.seconds).ok()?)?)
    }

    /// The instant this long after `t` (months first, clamped like [`Self::before`]).
    pub fn after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let t = t.checked_add_months(Months::new(self.months))?;
        t.checked_add_signed(TimeDelta::try_seconds(i64::try_from(self.seconds).ok()?)?)
    }

    /// Which of two windows is longer when measured back from `at`. Months
    /// and days have no fixed ratio, so the comparison needs a point in time.
    pub fn cmp_at(&self, other: &Duration, at: DateTime<Utc>) -> std::cmp::Ordering {
        // An earlier "before" instant means a longer window.
        other.before(at).cmp(&self.before(at))
    }

    /// Nominal length in seconds (a month is 1/12 of 365.2425 days), for
    /// comparisons that have no point in time to measure from.
    pub fn nominal_seconds(&self) -> u64 {
        const MONTH: u64 = 2_629_746;
        u64::from(self.months) * MONTH + self.seconds
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        if text.is_empty() {
            return Err(DurationError::Empty);
        }
        let (months, seconds) =
            if let Some(rest) = text.strip_prefix('P') { parse_iso(rest, text)? } else { parse_short(text)? };
        if months == 0 && seconds == 0 {
            return Err(DurationError::Zero(text.to_string()));
        }
        if months > MAX_MONTHS || seconds > MAX_SECONDS || months * 2_629_746 + seconds > MAX_SECONDS {
            return Err(DurationError::TooLong(text.to_string()));
        }
        Ok(Duration {
            months: u32::try_from(months).map_err(|_| DurationError::TooLong(text.to_string()))?,
            seconds,
            text: text.to_string(),
        })
    }
}

/// Adds `n * per` to `acc`, failing on overflow as "too long".
fn accumulate(acc: &mut u64, n: u64, per: u64, text: &str) -> Result<(), DurationError> {
    *acc =
        n.checked_mul(per).and_then(|v| acc.checked_add(v)).ok_or_else(|| DurationError::TooLong(text.to_string()))?;
    Ok(())
}

fn parse_short(text: &str) -> Result<(u64, u64), DurationError> {
    const UNITS: [(&str, u64, bool); 7] = [
        // (unit, factor, is-months)
        ("y", 12, true),
        ("mo", 1, true),
        ("w", 7 * 86_400, false),
        ("d", 86_400, false),
        ("h", 3_600, false),
        ("m", 60, false),
        ("s", 1, false),
    ];
    let syntax = || DurationError::Syntax(text.to_string());
    let bytes = text.as_bytes();
    let (mut months, mut seconds) = (0u64, 0u64);
    let mut seen = [false; UNITS.len()];
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i - start > 12 {
            return Err(syntax());
        }
        let n: u64 = text[start..i].parse().map_err(|_| syntax())?;
        // "mo" must win over "m" (minutes).
        let rest = &text[i..];
        let (idx, (unit, factor, is_months)) = UNITS
            .iter()
            .enumerate()
            .find(|(_, (u, _, _))| rest.starts_with(u) && !(*u == "m" && rest.starts_with("mo")))
            .ok_or_else(syntax)?;
        if seen[idx] {
            return Err(DurationError::RepeatedUnit(text.to_string(), unit));
        }
        seen[idx] = true;
        i += unit.len();
        if *is_months {
            accumulate(&mut months, n, *factor, text)?;
        } else {
            accumulate(&mut seconds, n, *factor, text)?;
        }
    }
    Ok((months, seconds))
}

fn parse_iso(rest: &str, text: &str) -> Result<(u64, u64), DurationError> {
    let syntax = || DurationError::Syntax(text.to_string());
    if rest.is_empty() || rest == "T" || rest.ends_with('T') {
        return Err(syntax());
    }
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let (mut months, mut seconds) = (0u64, 0u64);
    // Designators must appear in this order, each at most once.
    let mut walk = |part: &str, order: &[(char, u64, bool)]| -> Result<(), DurationError> {
        let mut pos = 0usize;
        let mut num = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                if num.len() > 12 {
                    return Err(syntax());
                }
                continue;
            }
            let found = order[pos..].iter().position(|(d, _, _)| *d == c).ok_or_else(syntax)?;
            if num.is_empty() {
                return Err(syntax());
            }
            let n: u64 = num.parse().map_err(|_| syntax())?;
            let (_, factor, is_months) = order[pos + found];
            if is_months {
                accumulate(&mut months, n, factor, text)?;
            } else {
                accumulate(&mut seconds, n, factor, text)?;
            }
            pos += found + 1;
            num.clear();
        }
        if num.is_empty() { Ok(()) } else { Err(syntax()) }
    };
    walk(date, &[('Y', 12, true), ('M', 1, true), ('W', 7 * 86_400, false), ('D', 86_400, false)])?;
    if let Some(time) = time {
        walk(time, &[('H', 3_600, false), ('M', 60, false), ('S', 1, false)])?;
    }
    Ok((months, seconds))
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": 64,
            "description": "A positive duration: a number and a unit (y, mo, w, d, h, m, s), combinable as in 1y6mo, or ISO-8601 such as P30D. Months and years are calendar months."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn d(s: &str) -> Duration {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn utc(y: i32, m: u32, day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, day, 12, 0, 0).unwrap()
    }

    #[test]
    fn short_forms() {
        assert_eq!((d("90d").months(), d("90d").seconds()), (0, 90 * 86_400));
        assert_eq!(d("36h").seconds(), 36 * 3_600);
        assert_eq!(d("13mo").months(), 13);
        assert_eq!(d("7y").months(), 84);
        assert_eq!(d("1y6mo").months(), 18);
        assert_eq!(d("2w").seconds(), 14 * 86_400);
        assert_eq!(d("1d12h30m5s").seconds(), 86_400 + 12 * 3_600 + 30 * 60 + 5);
        assert_eq!(d("5m").seconds(), 300);
        assert_eq!(d("5m").months(), 0);
    }

    #[test]
    fn iso_forms() {
        assert_eq!(d("P30D").seconds(), 30 * 86_400);
        assert_eq!(d("P1Y6M").months(), 18);
        assert_eq!(d("PT36H").seconds(), 36 * 3_600);
        assert_eq!(d("P2W").seconds(), 14 * 86_400);
        assert_eq!(d("P1M").months(), 1);
        assert_eq!(d("PT1M").seconds(), 60);
        let full = d("P1Y2M3DT4H5M6S");
        assert_eq!(full.months(), 14);
        assert_eq!(full.seconds(), 3 * 86_400 + 4 * 3_600 + 5 * 60 + 6);
    }

    #[test]
    fn text_round_trips() {
        for s in ["90d", "1y6mo", "P30D"] {
            let v: Duration = serde_json::from_value(serde_json::json!(s)).unwrap();
            assert_eq!(serde_json::to_value(&v).unwrap(), serde_json::json!(s));
        }
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            " ",
            "d",
            "10",
            "10x",
            "-5d",
            "+5d",
            "5 d",
            "1.5d",
            "P",
            "PT",
            "P1",
            "P1H",
            "PT1D",
            "P1M1Y",
            "1d1d",
            "1mo2mo",
            "5dd",
            "0d",
            "P0D",
            "0y0mo",
            "PT0S",
            "P1DT",
            "1y 6mo",
            "１d",
            "9999999999999d",
            "201y",
            "2500mo",
            "3000000d",
            "ninety days",
            "d90",
        ] {
            assert!(s.parse::<Duration>().is_err(), "{s:?} must be rejected");
        }
    }

    #[test]
    fn zero_is_named() {
        assert_eq!("0d".parse::<Duration>(), Err(DurationError::Zero("0d".into())));
    }

    #[test]
    fn month_end_is_clamped() {
        // 31 March minus one month is the last day of February.
        assert_eq!(d("1mo").before(utc(2025, 3, 31)).unwrap(), utc(2025, 2, 28));
        assert_eq!(d("1mo").before(utc(2024, 3, 31)).unwrap(), utc(2024, 2, 29));
        // 31 May minus one month is 30 April.
        assert_eq!(d("1mo").before(utc(2025, 5, 31)).unwrap(), utc(2025, 4, 30));
        // Forwards too.
        assert_eq!(d("1mo").after(utc(2025, 1, 31)).unwrap(), utc(2025, 2, 28));
    }

    #[test]
    fn leap_years() {
        // One year before 29 Feb 2024 is 28 Feb 2023.
        assert_eq!(d("1y").before(utc(2024, 2, 29)).unwrap(), utc(2023, 2, 28));
        // Four years before a leap day is a leap day.
        assert_eq!(d("4y").before(utc(2024, 2, 29)).unwrap(), utc(2020, 2, 29));
        // 365 days across a leap day is not a calendar year.
        assert_eq!(d("365d").before(utc(2024, 12, 31)).unwrap(), utc(2024, 1, 1));
        assert_eq!(d("1y").before(utc(2024, 12, 31)).unwrap(), utc(2023, 12, 31));
    }

    #[test]
    fn months_before_days() {
        // 1mo1d before 1 March 2025: 1 Feb, then 31 Jan.
        assert_eq!(d("1mo1d").before(utc(2025, 3, 1)).unwrap(), utc(2025, 1, 31));
    }

    #[test]
    fn comparison_depends_on_the_calendar() {
        let month = d("1mo");
        let days30 = d("30d");
        // In March a month back is 28 days: shorter than 30 days.
        assert_eq!(month.cmp_at(&days30, utc(2025, 3, 1)), std::cmp::Ordering::Less);
        // In August a month back is 31 days: longer.
        assert_eq!(month.cmp_at(&days30, utc(2025, 8, 1)), std::cmp::Ordering::Greater);
        assert_eq!(d("7y").cmp_at(&d("24mo"), utc(2025, 8, 1)), std::cmp::Ordering::Greater);
    }

    #[test]
    fn schema_pattern_agrees_with_parser_on_samples() {
        let re = regex::Regex::new(DURATION_PATTERN).unwrap();
        for s in ["90d", "1y6mo", "P30D", "PT36H", "P1Y2M3DT4H5M6S", "13mo", "2w"] {
            assert!(re.is_match(s), "{s}");
            assert!(s.parse::<Duration>().is_ok(), "{s}");
        }
        for s in ["", "10", "d", "5 d", "P1H", "-5d", "1.5d"] {
            assert!(!re.is_match(s), "{s}");
        }
    }
}
