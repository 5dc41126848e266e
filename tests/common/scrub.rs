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
