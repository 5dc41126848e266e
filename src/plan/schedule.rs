//! When a dataset's retention pass is due: a cron expression in an IANA time
//! zone, or a fixed interval anchored at the Dataset's creation.

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;

use crate::api::Schedule;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum Parsed {
    Cron(Box<Cron>, chrono_tz::Tz),
    Interval { anchor: DateTime<Utc>, seconds: i64 },
}

/// The schedule a Dataset without any falls back to: daily, from its creation.
pub const DEFAULT_INTERVAL_SECONDS: i64 = 86_400;

/// Parses a schedule; `anchor` is where intervals count from.
pub fn parse(s: &Schedule, anchor: DateTime<Utc>) -> Result<Parsed, String> {
    if let Some(expr) = &s.cron {
        let cron: Cron = expr.parse().map_err(|e| format!("cron {expr:?}: {e}"))?;
        let tz = match &s.time_zone {
            None => chrono_tz::UTC,
            Some(name) => name.parse().map_err(|_| format!("unknown IANA time zone {name:?}"))?,
        };
        return Ok(Parsed::Cron(Box::new(cron), tz));
    }
    match &s.interval {
        Some(d) => {
            let seconds = d.nominal_seconds() as i64;
            if seconds < 1 {
                return Err("interval must be at least 1s".into());
            }
            Ok(Parsed::Interval { anchor, seconds })
        }
        None => Err("set cron or interval".into()),
    }
}

impl Parsed {
    pub fn daily_from(anchor: DateTime<Utc>) -> Parsed {
        Parsed::Interval { anchor, seconds: DEFAULT_INTERVAL_SECONDS }
    }

    /// The first scheduled time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Parsed::Cron(cron, tz) => {
                let local = tz.from_utc_datetime(&t.naive_utc());
                cron.find_next_occurrence(&local, false).ok().map(|n| n.with_timezone(&Utc))
            }
            Parsed::Interval { anchor, seconds } => {
                if t < *anchor {
                    return Some(*anchor);
                }
                let k = (t - *anchor).num_seconds() / seconds + 1;
                Some(*anchor + chrono::Duration::seconds(k * seconds))
            }
        }
    }

    /// The most recent scheduled time at or before `now`.
    pub fn latest_at_or_before(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Parsed::Cron(cron, tz) => {
                let local = tz.from_utc_datetime(&now.naive_utc());
                cron.find_previous_occurrence(&local, true).ok().map(|n| n.with_timezone(&Utc))
            }
            Parsed::Interval { anchor, seconds } => {
                if now < *anchor {
                    return None;
                }
                let k = (now - *anchor).num_seconds() / seconds;
                Some(*anchor + chrono::Duration::seconds(k * seconds))
            }
        }
    }
}

/// What to do at `now`, given the last scheduled time acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Nothing due; the next time.
    Wait(Option<DateTime<Utc>>),
    /// A run for this scheduled time.
    Run(DateTime<Utc>),
    /// This scheduled time was missed by more than the starting deadline:
    /// skip it (no catch-up storm after an outage).
    Missed(DateTime<Utc>),
}

/// Decides whether a run is due. Only the latest missed time is ever run,
/// never every time missed during an outage.
pub fn due(p: &Parsed, last: Option<DateTime<Utc>>, now: DateTime<Utc>, starting_deadline: Option<i64>) -> Due {
    match p.latest_at_or_before(now) {
        Some(t) if last.is_none_or(|l| t > l) => match starting_deadline {
            Some(d) if (now - t).num_seconds() > d => Due::Missed(t),
            _ => Due::Run(t),
        },
        _ => Due::Wait(p.next_after(now)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn cron(expr: &str, tz: Option<&str>) -> Parsed {
        let s: Schedule = serde_json::from_value(serde_json::json!({"cron": expr, "timeZone": tz})).unwrap();
        parse(&s, at("2026-01-01T00:00:00Z")).unwrap()
    }

    #[test]
    fn cron_in_a_time_zone() {
        // 02:30 in Berlin is 01:30 UTC in winter, 00:30 UTC in summer.
        let p = cron("30 2 * * *", Some("Europe/Berlin"));
        assert_eq!(p.next_after(at("2026-01-10T12:00:00Z")), Some(at("2026-01-11T01:30:00Z")));
        assert_eq!(p.next_after(at("2026-07-10T12:00:00Z")), Some(at("2026-07-11T00:30:00Z")));
        let utc = cron("30 2 * * *", None);
        assert_eq!(utc.next_after(at("2026-01-10T12:00:00Z")), Some(at("2026-01-11T02:30:00Z")));
    }

    #[test]
    fn unknown_zone_and_bad_cron_are_errors() {
        let s: Schedule =
            serde_json::from_value(serde_json::json!({"cron": "0 * * * *", "timeZone": "Mars/Olympus"})).unwrap();
        assert!(parse(&s, Utc::now()).unwrap_err().contains("Mars/Olympus"));
        let s: Schedule = serde_json::from_value(serde_json::json!({"cron": "61 * * * *"})).unwrap();
        assert!(parse(&s, Utc::now()).is_err());
    }

    #[test]
    fn only_the_latest_missed_time_runs() {
        let p = cron("0 * * * *", None);
        // Last acted on at 01:00, operator back at 05:10: one run, for 05:00.
        assert_eq!(
            due(&p, Some(at("2026-01-01T01:00:00Z")), at("2026-01-01T05:10:00Z"), None),
            Due::Run(at("2026-01-01T05:00:00Z"))
        );
        // With a 5-minute starting deadline, 05:00 is too late at 05:10.
        assert_eq!(
            due(&p, Some(at("2026-01-01T01:00:00Z")), at("2026-01-01T05:10:00Z"), Some(300)),
            Due::Missed(at("2026-01-01T05:00:00Z"))
        );
        // Already acted on: wait for the next.
        assert_eq!(
            due(&p, Some(at("2026-01-01T05:00:00Z")), at("2026-01-01T05:10:00Z"), None),
            Due::Wait(Some(at("2026-01-01T06:00:00Z")))
        );
    }

    #[test]
    fn intervals_count_from_their_anchor() {
        let p = Parsed::Interval { anchor: at("2026-01-01T00:00:10Z"), seconds: 60 };
        assert_eq!(p.next_after(at("2026-01-01T00:05:00Z")), Some(at("2026-01-01T00:05:10Z")));
        assert_eq!(p.latest_at_or_before(at("2026-01-01T00:05:00Z")), Some(at("2026-01-01T00:04:10Z")));
        assert_eq!(p.latest_at_or_before(at("2026-01-01T00:00:00Z")), None);
        assert_eq!(due(&p, None, at("2026-01-01T00:00:30Z"), None), Due::Run(at("2026-01-01T00:00:10Z")));
    }
}
