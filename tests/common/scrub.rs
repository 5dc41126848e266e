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
