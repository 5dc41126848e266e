//! Small helpers shared by the store driver tests.
#![allow(dead_code)]

use chrono::{DateTime, TimeZone, Utc};
use lethe::{api::Identifier, scrub::Table};

pub fn id(s: &str) -> Identifier {
    Identifier::new(s).unwrap()
}

pub fn table(name: &str) -> Table {
    Table { schema: None, name: id(name) }
}

pub fn cutoff() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Asserts that `r` is a configuration error whose message says each of
/// `says`.
#[track_caller]
pub fn config_error<T: std::fmt::Debug>(r: Result<T, lethe::scrub::ScrubError>, says: &[&str]) {
    match r {
        Err(lethe::scrub::ScrubError::Config(m)) => {
            assert!(says.iter().all(|s| m.contains(s)), "expected a message saying {says:?}: {m}")
        }
        other => panic!("expected a configuration error saying {says:?}, got {other:?}"),
    }
}

/// Whether a row of the property tests is selected: created before the
/// cutoff (`created` below 0, in the test's units), its user not held, and
/// not under minimum retention (`issued` below 0) when the test applies one.
pub fn selected(
    user: i32,
    created: Option<i64>,
    issued: Option<i64>,
    held: &std::collections::BTreeSet<i32>,
    with_minimum: bool,
) -> bool {
    let expired = created.is_some_and(|d| d < 0);
    let under_minimum = with_minimum && issued.is_none_or(|d| d >= 0);
    expired && !held.contains(&user) && !under_minimum
}

/// The anonymization the property tests apply: a salted hash of a UNIQUE
/// `email`, NULL for `phone`, `age` fixed at 0.
pub fn contact_anonymization() -> lethe::scrub::Action {
    use lethe::{api::AnonymizeStrategy, scrub::FieldRule};
    let rules = vec![
        FieldRule { field: id("email"), strategy: AnonymizeStrategy::Hash, value: None },
        FieldRule { field: id("phone"), strategy: AnonymizeStrategy::Null, value: None },
        FieldRule { field: id("age"), strategy: AnonymizeStrategy::Fixed, value: Some("0".into()) },
    ];
    lethe::scrub::Action::Anonymize { rules, salt: "pepper".into() }
}

/// The selection of the property tests: `created_at` before the cutoff,
/// `user_id`s in `held` kept, and records whose `issued_at` is not before
/// `minimum` kept when there is one.
pub fn expiry_selection(
    name: &str,
    held: &std::collections::BTreeSet<i32>,
    minimum: Option<DateTime<Utc>>,
) -> lethe::scrub::Selection {
    lethe::scrub::Selection {
        table: table(name),
        older_than: Some((id("created_at"), cutoff())),
        subject: vec![],
        keep_newer_than: minimum.map(|m| (id("issued_at"), m)),
        held: vec![(id("user_id"), held.iter().map(|u| u.to_string()).collect())],
    }
}

/// The cutoff of the Unix-time tests: half a millisecond after `cutoff()`,
/// so a stored count of `cutoff()` is before it and one unit more is not.
pub fn unix_cutoff() -> DateTime<Utc> {
    cutoff() + chrono::Duration::microseconds(500)
}

/// Their minimum-retention boundary: half a millisecond after thirty days
/// before `cutoff()`.
pub fn unix_minimum() -> DateTime<Utc> {
    cutoff() - chrono::Duration::days(30) + chrono::Duration::microseconds(500)
}

/// Rows of the Unix-time tests, `(id, user_id, created, issued)`, times as
/// counts of a unit of `unit_ms` milliseconds since 1970: each creation
/// time around the cutoff (a day before, one unit before, at, one unit
/// after, a day after, NULL) with each issue time around the
/// minimum-retention boundary (one unit before, at, one unit after, NULL),
/// for user 1 (held) and user 2.
pub fn unix_time_rows(unit_ms: i64) -> Vec<(i64, i32, Option<i64>, Option<i64>)> {
    let c = cutoff().timestamp_millis() / unit_ms;
    let m = (cutoff() - chrono::Duration::days(30)).timestamp_millis() / unit_ms;
    let day = 86_400_000 / unit_ms;
    let mut rows = Vec::new();
    for created in [Some(c - day), Some(c - 1), Some(c), Some(c + 1), Some(c + day), None] {
        for issued in [Some(m - 1), Some(m), Some(m + 1), None] {
            for user in [1, 2] {
                rows.push((rows.len() as i64 + 1, user, created, issued));
            }
        }
    }
    rows
}

/// The rows as an SQL `VALUES` list.
pub fn unix_time_values(unit_ms: i64) -> String {
    let n = |v: Option<i64>| v.map_or("NULL".to_string(), |v| v.to_string());
    unix_time_rows(unit_ms)
        .into_iter()
        .map(|(id, user, c, i)| format!("({id}, {user}, {}, {})", n(c), n(i)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The selection of the Unix-time tests on a table of [`unix_time_rows`]:
/// `created` before [`unix_cutoff`], user 1 held, `issued` before
/// [`unix_minimum`].
pub fn unix_time_selection(name: &str) -> lethe::scrub::Selection {
    lethe::scrub::Selection {
        table: table(name),
        older_than: Some((id("created"), unix_cutoff())),
        subject: vec![],
        keep_newer_than: Some((id("issued"), unix_minimum())),
        held: vec![(id("user_id"), vec!["1".into()])],
    }
}

/// The ids of [`unix_time_rows`] the selection must leave, worked out from
/// the instants the counts stand for.
pub fn unix_time_kept(unit_ms: i64) -> std::collections::BTreeSet<i64> {
    let before =
        |v: Option<i64>, t: DateTime<Utc>| v.is_some_and(|v| DateTime::from_timestamp_millis(v * unit_ms).unwrap() < t);
    unix_time_rows(unit_ms)
        .into_iter()
        .filter(|(_, user, c, i)| !(before(*c, unix_cutoff()) && before(*i, unix_minimum()) && *user != 1))
        .map(|(id, ..)| id)
        .collect()
}
