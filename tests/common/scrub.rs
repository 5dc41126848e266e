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

/// A stop point for a run, set by the run's own progress rather than by the
/// clock, so that how fast the machine is does not decide how far the
/// interrupted runs of a test get: the returned future ends `after` the run
/// has reported progress `reports` times (`after` from the start for none).
/// Pass the callback to the run and drop the run when the future ends.
pub fn stop_point(
    reports: u64,
    after: std::time::Duration,
) -> (impl Fn(&lethe::scrub::Progress), impl Future<Output = ()>) {
    let (tx, mut rx) = tokio::sync::watch::channel(0u64);
    let on_progress = move |_: &lethe::scrub::Progress| tx.send_modify(|n| *n += 1);
    let stop = async move {
        // An error here means the run has ended and dropped the callback.
        if rx.wait_for(|n| *n >= reports).await.is_ok() {
            tokio::time::sleep(after).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    (on_progress, stop)
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
        guards: vec![],
    }
}

/// Every record of table `name` whose `column` is before the cutoff.
pub fn older_than(name: &str, column: &str) -> lethe::scrub::Selection {
    lethe::scrub::Selection {
        table: table(name),
        older_than: Some((id(column), cutoff())),
        subject: vec![],
        keep_newer_than: None,
        held: vec![],
        guards: vec![],
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
        guards: vec![],
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

/// A SQL store as the shared checks (Unix times, unique keys) use it.
pub trait SqlStore {
    /// Runs statements as they are.
    async fn exec(&self, sql: &str);
    /// The first column of a query's rows, as integers.
    async fn ids(&self, sql: &str) -> std::collections::BTreeSet<i64>;
    /// A driver on the store reading integer times in `unit`.
    async fn driver(&self, unit: Option<lethe::api::UnixTimeUnit>) -> lethe::scrub::driver::Driver;
}

/// What every SQL driver does with integer time columns, on tables of
/// [`unix_time_rows`]: `stamps_ms` (bigint milliseconds, plus a far-future
/// stand-in, the largest bigint), `stamps_s` (seconds, in `seconds_type`)
/// and `stamps_s_far` (bigint seconds and a stand-in). Without a unit, and
/// with one the values contradict, the plan and the run are refused and
/// nothing changes; with the right one, exactly the rows whose instants
/// are selected go, and the oldest and newest left read back as instants.
pub async fn integer_time_columns_count_the_datasets_unit(store: &impl SqlStore, seconds_type: &str) {
    use lethe::{api::UnixTimeUnit, scrub::Limits};
    let delete = lethe::scrub::Action::Delete;
    store
        .exec(&format!(
            "CREATE TABLE stamps_ms (id bigint PRIMARY KEY, user_id int NOT NULL, created bigint, issued bigint);
             INSERT INTO stamps_ms VALUES {};
             INSERT INTO stamps_ms VALUES (1000, 2, 9223372036854775807, NULL);
             CREATE TABLE stamps_s (id bigint PRIMARY KEY, user_id int NOT NULL, created {seconds_type}, issued {seconds_type});
             INSERT INTO stamps_s VALUES {};
             CREATE TABLE stamps_s_far (id bigint PRIMARY KEY, user_id int NOT NULL, created bigint, issued bigint);
             INSERT INTO stamps_s_far SELECT * FROM stamps_s;
             INSERT INTO stamps_s_far VALUES (1000, 2, 9223372036854775807, 9223372036854775807);",
            unix_time_values(1),
            unix_time_values(1000)
        ))
        .await;
    let (ms, s, far) =
        (unix_time_selection("stamps_ms"), unix_time_selection("stamps_s"), unix_time_selection("stamps_s_far"));
    let tables = ["stamps_ms", "stamps_s", "stamps_s_far"];
    let mut before = Vec::new();
    for t in tables {
        before.push(store.ids(&format!("SELECT id FROM {t}")).await);
    }
    let db = store.driver(None).await;
    config_error(db.plan(&ms).await, &["created", "unixTimeUnit"]);
    config_error(db.run(&ms, &delete, &Limits::default(), 0, |_| {}).await, &["unixTimeUnit"]);
    // Milliseconds read as seconds would never expire; seconds read as
    // milliseconds would all look expired, a stand-in among them or not.
    let db = store.driver(Some(UnixTimeUnit::Seconds)).await;
    config_error(db.plan(&ms).await, &["created", "after the year 5000"]);
    config_error(db.run(&ms, &delete, &Limits::default(), 0, |_| {}).await, &["after the year 5000"]);
    let db = store.driver(Some(UnixTimeUnit::Milliseconds)).await;
    for sel in [&s, &far] {
        config_error(db.plan(sel).await, &["created", "likely counts Seconds"]);
        config_error(db.run(sel, &delete, &Limits::default(), 0, |_| {}).await, &["likely counts Seconds"]);
    }
    for (t, ids) in tables.iter().zip(&before) {
        assert_eq!(&store.ids(&format!("SELECT id FROM {t}")).await, ids, "{t} unchanged");
    }

    // Nor does the stand-in make the right unit look wrong, and it never expires.
    let mut kept = unix_time_kept(1);
    kept.insert(1000);
    let plan = db.plan(&ms).await.unwrap();
    assert_eq!(plan.selected as usize, before[0].len() - kept.len());
    let out = db.run(&ms, &delete, &Limits::default(), 0, |_| {}).await.unwrap();
    assert_eq!((out.records_done, out.remaining), (plan.selected, 0));
    assert_eq!(store.ids("SELECT id FROM stamps_ms").await, kept);
    let db = store.driver(Some(UnixTimeUnit::Seconds)).await;
    db.run(&s, &delete, &Limits::default(), 0, |_| {}).await.unwrap();
    assert_eq!(store.ids("SELECT id FROM stamps_s").await, unix_time_kept(1000));
    // The oldest and newest record before the cutoff that is left (held
    // or under minimum retention), read back as instants.
    let left = lethe::scrub::Selection { keep_newer_than: None, held: vec![], ..s };
    assert_eq!(db.extreme(&left, &id("created"), false).await.unwrap(), Some(cutoff() - chrono::Duration::days(1)));
    assert_eq!(db.extreme(&left, &id("created"), true).await.unwrap(), Some(cutoff()));
}

/// What every SQL driver does with anonymization rules on a column of a
/// unique key of several columns (`UNIQUE (tenant, email)`,
/// `UNIQUE (tenant, nick)`): a fixed value or a redaction is refused,
/// before any change and already in the plan, exactly when it would give
/// two records the same values in the key: two changed records of one
/// tenant, or a changed record and another of its tenant already holding
/// the value. Records without a tenant share nothing; hashes stay distinct.
pub async fn unique_keys_of_several_columns_are_checked_before_anonymizing(store: &impl SqlStore, time_type: &str) {
    use lethe::{
        api::AnonymizeStrategy::{Fixed, Hash, Redact},
        scrub::{Action, FieldRule, Limits, Selection},
    };
    use std::collections::BTreeSet;
    store
        .exec(&format!(
            "CREATE TABLE members (id bigint PRIMARY KEY, tenant int, email varchar(40), nick varchar(40), left_at {time_type},
                                   UNIQUE (tenant, email), UNIQUE (tenant, nick));
             INSERT INTO members VALUES
               (1, 1, 'a@example.com', 'ann', '2020-01-01 00:00:00'), (2, 1, 'b@example.com', 'bob', '2020-01-01 00:00:00'),
               (3, 2, 'c@example.com', 'cy', '2020-01-01 00:00:00'), (4, 2, 'gone', 'dee', NULL),
               (5, 3, 'e@example.com', 'eve', '2020-01-01 00:00:00'), (6, 3, 'f@example.com', 'fay', NULL),
               (7, NULL, 'g@example.com', 'gus', '2020-01-01 00:00:00'), (8, NULL, 'h@example.com', 'hal', '2020-01-01 00:00:00');"
        ))
        .await;
    let left = Selection {
        table: table("members"),
        older_than: Some((id("left_at"), cutoff())),
        subject: vec![],
        keep_newer_than: None,
        held: vec![],
        guards: vec![],
    };
    let of_tenants = |t: &[&str]| Selection {
        subject: vec![(id("tenant"), t.iter().map(|s| s.to_string()).collect())],
        ..left.clone()
    };
    let rule = |field: &str, strategy| FieldRule { field: id(field), strategy, value: Some("gone".into()) };
    let anonymize = |rules: Vec<FieldRule>| Action::Anonymize { rules, salt: "s".into() };
    let unchanged = "SELECT id FROM members WHERE email LIKE '%@example.com' AND nick NOT LIKE '*%'";
    let db = store.driver(None).await;
    for (sel, field, strategy) in [
        // Two changed records of tenant 1.
        (left.clone(), "email", Fixed),
        (of_tenants(&["1"]), "email", Fixed),
        // One changed record of tenant 2, beside one already holding 'gone'.
        (of_tenants(&["2"]), "email", Fixed),
        // 'ann' and 'bob' both become '***'.
        (of_tenants(&["1"]), "nick", Redact),
    ] {
        let action = anonymize(vec![rule(field, strategy)]);
        let says = [field, "unique key", "use hash"];
        config_error(db.pending(&sel, &action).await, &says);
        config_error(db.run(&sel, &action, &Limits::default(), 0, |_| {}).await, &says);
    }
    assert_eq!(store.ids(unchanged).await, BTreeSet::from([1, 2, 3, 5, 6, 7, 8]), "nothing changed");

    // One record of tenant 3; records without a tenant share nothing.
    let out = db
        .run(&of_tenants(&["3"]), &anonymize(vec![rule("email", Fixed)]), &Limits::default(), 0, |_| {})
        .await
        .unwrap();
    assert_eq!((out.records_done, out.remaining), (1, 0));
    let others = Selection { held: vec![(id("tenant"), vec!["1".into(), "2".into()])], ..left.clone() };
    let action = anonymize(vec![rule("email", Fixed), rule("nick", Redact)]);
    assert_eq!(db.pending(&others, &action).await.unwrap(), 3);
    let out = db.run(&others, &action, &Limits::default(), 0, |_| {}).await.unwrap();
    assert_eq!((out.records_done, out.remaining), (3, 0));
    assert_eq!(store.ids("SELECT id FROM members WHERE email = 'gone'").await, BTreeSet::from([4, 5, 7, 8]));
    // Hashes keep tenant 1's two records apart.
    let action = anonymize(vec![rule("email", Hash), rule("nick", Hash)]);
    let out = db.run(&of_tenants(&["1"]), &action, &Limits::default(), 0, |_| {}).await.unwrap();
    assert_eq!((out.records_done, out.remaining), (2, 0));
    assert_eq!(
        store.ids("SELECT id FROM members WHERE email LIKE 'anon-%' AND nick LIKE 'anon-%'").await,
        BTreeSet::from([1, 2])
    );
}

/// What every SQL driver does with a unique key on a generated column
/// (`email_key`, `lower(email)` stored): it is checked as the server
/// computes it from the new values. A `fixed` address for two records is
/// refused before any change, naming the key, and so is an address only
/// `lower` makes the same as another record's; a `hash` of an address
/// anonymized before, then registered again, takes a fresh value instead
/// of stopping the run at a batch the key refuses. `chained`: `email_key`
/// is computed from another generated column (`trim(email_low)`,
/// `email_low` being `lower(email)`), which MySQL/MariaDB and SQLite
/// allow. A key that leaves out the records a rule changes (`live_email`,
/// an address only while the member has not left: a unique index with a
/// condition, as MySQL/MariaDB spell it) takes no refusal for one address
/// given to two members who left at the same time, and one for a live
/// member given another live member's address. A `null` is checked too
/// where the expression makes something of it (`COALESCE(nick, email)`).
/// `cased_text`: a text type
/// of the store that tells capitals apart, for `email`.
pub async fn unique_keys_on_generated_columns_are_checked_as_the_server_computes_them(
    store: &impl SqlStore,
    time_type: &str,
    cased_text: &str,
    chained: bool,
) {
    use lethe::{
        api::AnonymizeStrategy::{Fixed, Hash},
        scrub::{Action, FieldRule, Limits, Selection},
    };
    use std::collections::BTreeSet;
    let old = "'2020-01-01 00:00:00'";
    let key = match chained {
        false => "email_key varchar(80) GENERATED ALWAYS AS (lower(email)) STORED UNIQUE",
        true => {
            "email_low varchar(80) GENERATED ALWAYS AS (lower(email)) STORED,
                 email_key varchar(80) GENERATED ALWAYS AS (trim(email_low)) STORED UNIQUE"
        }
    };
    store
        .exec(&format!(
            "CREATE TABLE members_gen (id bigint PRIMARY KEY, email {cased_text}, {key}, left_at {time_type});
             INSERT INTO members_gen (id, email, left_at) VALUES (1, 'A@example.com', {old}), (2, 'b@example.com', {old}),
                                                                 (3, 'gone', NULL);"
        ))
        .await;
    let left = Selection {
        table: table("members_gen"),
        older_than: Some((id("left_at"), cutoff())),
        subject: vec![],
        keep_newer_than: None,
        held: vec![],
        guards: vec![],
    };
    let email = |strategy, value: Option<&str>| Action::Anonymize {
        rules: vec![FieldRule { field: id("email"), strategy, value: value.map(String::from) }],
        salt: "s".into(),
    };
    let db = store.driver(None).await;
    let fixed = email(Fixed, Some("x"));
    let says = ["anonymizing email", "unique key", "generated column"];
    config_error(db.pending(&left, &fixed).await, &says);
    config_error(db.run(&left, &fixed, &Limits::default(), 0, |_| {}).await, &says);
    let as_inserted = "SELECT id FROM members_gen WHERE email IN ('A@example.com', 'b@example.com', 'gone')";
    assert_eq!(store.ids(as_inserted).await, BTreeSet::from([1, 2, 3]), "nothing changed");
    let hash = email(Hash, None);
    let out = db.run(&left, &hash, &Limits::default(), 0, |_| {}).await.unwrap();
    assert_eq!((out.records_done, out.remaining), (2, 0));
    // Registered again, and left again.
    store.exec(&format!("INSERT INTO members_gen (id, email, left_at) VALUES (4, 'A@example.com', {old})")).await;
    let out = db.run(&left, &hash, &Limits::default(), 0, |_| {}).await.unwrap();
    assert_eq!((out.records_done, out.remaining), (1, 0));
    let anonymized = "SELECT id FROM members_gen WHERE email LIKE 'anon-%' AND email_key = email";
    assert_eq!(store.ids(anonymized).await, BTreeSet::from([1, 2, 4]));
    assert_eq!(store.ids("SELECT id FROM members_gen WHERE email = 'gone'").await, BTreeSet::from([3]));
    // `GONE`, which only `lower` makes record 3's `gone`.
    let first = Selection { older_than: None, subject: vec![(id("id"), vec!["1".into()])], ..left.clone() };
    let capitals = email(Fixed, Some("GONE"));
    config_error(db.pending(&first, &capitals).await, &says);
    config_error(db.run(&first, &capitals, &Limits::default(), 0, |_| {}).await, &says);
    assert_eq!(store.ids("SELECT id FROM members_gen WHERE email LIKE 'anon-%'").await, BTreeSet::from([1, 2, 4]));

    store
        .exec(&format!(
            "CREATE TABLE members_live (id bigint PRIMARY KEY, email varchar(80), left_at {time_type},
                 live_email varchar(80) GENERATED ALWAYS AS (CASE WHEN left_at IS NULL THEN email END) STORED UNIQUE);
             INSERT INTO members_live (id, email, left_at) VALUES (1, 'a@example.com', {old}), (2, 'b@example.com', {old}),
                                                                  (3, 'c@example.com', NULL), (4, 'd@example.com', NULL);"
        ))
        .await;
    let left = Selection { table: table("members_live"), ..left };
    let removed = email(Fixed, Some("removed@example.invalid"));
    let out = db.run(&left, &removed, &Limits::default(), 0, |_| {}).await.unwrap();
    assert_eq!((out.records_done, out.remaining), (2, 0));
    let third = Selection { table: table("members_live"), subject: vec![(id("id"), vec!["3".into()])], ..first };
    let taken = email(Fixed, Some("d@example.com"));
    config_error(db.pending(&third, &taken).await, &says);
    config_error(db.run(&third, &taken, &Limits::default(), 0, |_| {}).await, &says);
    let removed_ids = "SELECT id FROM members_live WHERE email = 'removed@example.invalid'";
    assert_eq!(store.ids(removed_ids).await, BTreeSet::from([1, 2]), "record 3 unchanged");
    let out = db.run(&third, &removed, &Limits::default(), 0, |_| {}).await.unwrap();
    assert_eq!((out.records_done, out.remaining), (1, 0));
    assert_eq!(store.ids(removed_ids).await, BTreeSet::from([1, 2, 3]));

    // An expression that makes something of a NULL: a nickname taken away
    // leaves the address as the handle, which another member's nickname is.
    store
        .exec(&format!(
            "CREATE TABLE members_handle (id bigint PRIMARY KEY, nick varchar(40), email varchar(80), left_at {time_type},
                 handle varchar(80) GENERATED ALWAYS AS (COALESCE(nick, email)) STORED UNIQUE);
             INSERT INTO members_handle (id, nick, email, left_at) VALUES (1, 'ann', 'a@example.com', {old}),
                 (2, 'a@example.com', 'b@example.com', NULL), (3, 'cy', 'c@example.com', {old});"
        ))
        .await;
    let no_nick = Action::Anonymize {
        rules: vec![FieldRule { field: id("nick"), strategy: lethe::api::AnonymizeStrategy::Null, value: None }],
        salt: "s".into(),
    };
    let left = Selection { table: table("members_handle"), ..left };
    config_error(db.pending(&left, &no_nick).await, &["anonymizing nick", "unique key", "generated column"]);
    config_error(db.run(&left, &no_nick, &Limits::default(), 0, |_| {}).await, &["anonymizing nick"]);
    assert_eq!(store.ids("SELECT id FROM members_handle WHERE nick IS NULL").await, BTreeSet::new(), "nothing changed");
    let third = Selection { table: table("members_handle"), ..third };
    let out = db.run(&third, &no_nick, &Limits::default(), 0, |_| {}).await.unwrap();
    assert_eq!((out.records_done, out.remaining), (1, 0));
    assert_eq!(store.ids("SELECT id FROM members_handle WHERE nick IS NULL").await, BTreeSet::from([3]));
}

/// What the SQL drivers that check a unique key on a generated column as
/// the server computes it (MySQL/MariaDB, SQLite) do with one the check
/// cannot restate on the new values (here, computed from a column named
/// as the check's own `lethe_o0`): the key is judged by the columns it is
/// computed from instead. Two records given one value, and one given
/// another's, are still refused before any change, and a value no other
/// record holds runs.
pub async fn a_generated_key_the_check_cannot_restate_is_judged_by_its_columns(store: &impl SqlStore, time_type: &str) {
    use lethe::{
        api::AnonymizeStrategy::Fixed,
        scrub::{Action, FieldRule, Limits, Selection},
    };
    use std::collections::BTreeSet;
    store
        .exec(&format!(
            "CREATE TABLE members_shadow (id bigint PRIMARY KEY, lethe_o0 varchar(80), left_at {time_type},
                 email_key varchar(80) GENERATED ALWAYS AS (lower(lethe_o0)) STORED UNIQUE);
             INSERT INTO members_shadow (id, lethe_o0, left_at) VALUES (1, 'a@example.com', '2020-01-01 00:00:00'),
                 (2, 'b@example.com', '2020-01-01 00:00:00'), (3, 'c@example.com', NULL);"
        ))
        .await;
    let left = Selection {
        table: table("members_shadow"),
        older_than: Some((id("left_at"), cutoff())),
        subject: vec![],
        keep_newer_than: None,
        held: vec![],
        guards: vec![],
    };
    let fixed = |value: &str| Action::Anonymize {
        rules: vec![FieldRule { field: id("lethe_o0"), strategy: Fixed, value: Some(value.into()) }],
        salt: "s".into(),
    };
    let db = store.driver(None).await;
    let says = ["anonymizing lethe_o0", "unique key", "generated column"];
    config_error(db.pending(&left, &fixed("x")).await, &says);
    config_error(db.run(&left, &fixed("x"), &Limits::default(), 0, |_| {}).await, &says);
    let unchanged = "SELECT id FROM members_shadow WHERE lethe_o0 LIKE '%@example.com'";
    assert_eq!(store.ids(unchanged).await, BTreeSet::from([1, 2, 3]));
    // One record given another's value.
    let first = Selection { older_than: None, subject: vec![(id("id"), vec!["1".into()])], ..left };
    config_error(db.run(&first, &fixed("b@example.com"), &Limits::default(), 0, |_| {}).await, &says);
    assert_eq!(store.ids(unchanged).await, BTreeSet::from([1, 2, 3]));
    let out = db.run(&first, &fixed("x"), &Limits::default(), 0, |_| {}).await.unwrap();
    assert_eq!((out.records_done, out.remaining), (1, 0));
    assert_eq!(store.ids(unchanged).await, BTreeSet::from([2, 3]));
}

/// What the SQL drivers whose servers have unique indexes on expressions
/// and with conditions (PostgreSQL, SQLite) do with a hashed value used
/// again under them: `lower(email)`, and `(nick) WHERE gone_at IS NULL OR
/// gone_at > '2030-01-01'`. A record whose hash another record already
/// holds in a column such an index reads takes a fresh value in that
/// column, rather than stopping the run at a batch the index refuses (on
/// every retry): whatever else the index reads (two members leaving
/// after 2030 on different days), and also where the condition leaves one
/// of them out, which it did not need. Every other value keeps the hash
/// that links it: the one the same rules give the same value in a table
/// without keys (`probe`).
pub async fn a_hashed_value_used_again_under_indexes_on_expressions_or_conditions_takes_a_fresh_hash(
    store: &impl SqlStore,
    time_type: &str,
) {
    use lethe::{
        api::AnonymizeStrategy::Hash,
        scrub::{Action, FieldRule, Limits},
    };
    use std::collections::BTreeSet;
    let (old, gone, later, later_still) =
        ("'2020-01-01 00:00:00'", "'2020-01-01 00:00:00'", "'2031-01-01 00:00:00'", "'2032-01-01 00:00:00'");
    let columns =
        format!("id bigint PRIMARY KEY, email varchar(60), nick varchar(40), gone_at {time_type}, left_at {time_type}");
    let rows = |ids: &[i64]| {
        let all = [
            (1, "A@example.com", "ann", "NULL", old),
            (2, "b@example.com", "bo", gone, old),
            (3, "c@example.com", "cy", "NULL", "NULL"),
            (7, "f@example.com", "kim", later, old),
            // Registered again: the first address, the first live
            // member's nickname, the nickname of a member gone, and that
            // of a member leaving after 2030, by another leaving then.
            (4, "A@example.com", "z", "NULL", old),
            (5, "d@example.com", "ann", "NULL", old),
            (6, "e@example.com", "bo", "NULL", old),
            (8, "g@example.com", "kim", later_still, old),
        ];
        let values: Vec<String> = all
            .iter()
            .filter(|r| ids.contains(&r.0))
            .map(|(id, email, nick, gone_at, left_at)| format!("({id}, '{email}', '{nick}', {gone_at}, {left_at})"))
            .collect();
        values.join(", ")
    };
    store
        .exec(&format!(
            "CREATE TABLE members ({columns});
             CREATE UNIQUE INDEX members_email ON members (lower(email));
             CREATE UNIQUE INDEX members_live_nick ON members (nick) WHERE gone_at IS NULL OR gone_at > '2030-01-01';
             INSERT INTO members VALUES {};
             CREATE TABLE probe ({columns});
             INSERT INTO probe VALUES {};",
            rows(&[1, 2, 3, 7]),
            rows(&[1, 2, 4, 5, 6, 7, 8]),
        ))
        .await;
    let rule = |field: &str| FieldRule { field: id(field), strategy: Hash, value: None };
    let hash = Action::Anonymize { rules: vec![rule("email"), rule("nick")], salt: "s".into() };
    let db = store.driver(None).await;
    let out = db.run(&older_than("members", "left_at"), &hash, &Limits::default(), 0, |_| {}).await.unwrap();
    assert_eq!((out.records_done, out.remaining), (3, 0));
    store.exec(&format!("INSERT INTO members VALUES {}", rows(&[4, 5, 6, 8]))).await;
    let out = db.run(&older_than("members", "left_at"), &hash, &Limits::default(), 0, |_| {}).await.unwrap();
    assert_eq!((out.records_done, out.remaining), (4, 0));
    let out = db.run(&older_than("probe", "left_at"), &hash, &Limits::default(), 0, |_| {}).await.unwrap();
    assert_eq!((out.records_done, out.remaining), (7, 0));
    // Which members hold the hash the probe's record `of` holds.
    let holders = async |column: &str, of: i64| {
        store
            .ids(&format!("SELECT m.id FROM members m JOIN probe p ON m.{column} = p.{column} WHERE p.id = {of}"))
            .await
    };
    for (column, of, expected) in [
        ("email", 1, vec![1]),
        ("email", 2, vec![2]),
        ("email", 5, vec![5]),
        ("email", 6, vec![6]),
        ("email", 7, vec![7]),
        ("email", 8, vec![8]),
        ("nick", 1, vec![1]),
        ("nick", 2, vec![2]),
        ("nick", 7, vec![7]),
        ("nick", 4, vec![4]),
    ] {
        assert_eq!(holders(column, of).await, BTreeSet::from_iter(expected), "{column} of {of}");
    }
    let anonymized = "SELECT id FROM members WHERE email LIKE 'anon-%' AND nick LIKE 'anon-%'";
    assert_eq!(store.ids(anonymized).await, BTreeSet::from([1, 2, 4, 5, 6, 7, 8]));
    let untouched = "SELECT id FROM members WHERE email = 'c@example.com' AND nick = 'cy'";
    assert_eq!(store.ids(untouched).await, BTreeSet::from([3]));
}

/// What every SQL driver does when a hashed value is used again: an
/// address anonymized (`UNIQUE (email)`), then registered anew in the same
/// tenant under the same nickname (`UNIQUE (tenant, nick)`), then
/// anonymized in turn, and again. The run does not stop at the key: each
/// record whose hash another record already holds takes a fresh random
/// one, and only in the columns of the key it would collide in; every
/// other value keeps the hash that links it to its first form, and a value
/// already hashed is not hashed again.
pub async fn a_hashed_value_used_again_takes_a_fresh_hash(store: &impl SqlStore, time_type: &str) {
    use lethe::{
        api::AnonymizeStrategy::{Hash, Null},
        scrub::{Action, FieldRule, Limits, Selection},
    };
    use std::collections::BTreeSet;
    let old = "'2020-01-01 00:00:00'";
    store
        .exec(&format!(
            "CREATE TABLE accounts (id bigint PRIMARY KEY, tenant int, email varchar(40) UNIQUE, nick varchar(40),
                                    phone varchar(20), left_at {time_type}, UNIQUE (tenant, nick));
             INSERT INTO accounts VALUES (1, 1, 'a@example.com', 'ann', '555', {old}), (2, 2, 'b@example.com', 'ann', '556', {old}),
                                         (3, 1, 'c@example.com', 'cy', '557', NULL);"
        ))
        .await;
    let rule = |field: &str, strategy| FieldRule { field: id(field), strategy, value: None };
    let action = Action::Anonymize {
        rules: vec![rule("email", Hash), rule("nick", Hash), rule("phone", Null)],
        salt: "s".into(),
    };
    let left = Selection {
        table: table("accounts"),
        older_than: Some((id("left_at"), cutoff())),
        subject: vec![],
        keep_newer_than: None,
        held: vec![],
        guards: vec![],
    };
    let db = store.driver(None).await;
    let out = db.run(&left, &action, &Limits::default(), 0, |_| {}).await.unwrap();
    assert_eq!((out.records_done, out.remaining), (2, 0));
    store.exec("CREATE TABLE first_forms AS SELECT id, email, nick FROM accounts").await;
    let same_as_first =
        "SELECT a.id FROM accounts a JOIN first_forms f ON a.id = f.id AND a.email = f.email AND a.nick = f.nick";
    let anonymized = "SELECT id FROM accounts WHERE email LIKE 'anon-%' AND nick LIKE 'anon-%' AND phone IS NULL";
    let shared = "SELECT a.id FROM accounts a JOIN accounts b ON a.id <> b.id AND (a.email = b.email OR (a.tenant = b.tenant AND a.nick = b.nick))";

    // 4 uses record 1's address and nickname again; 5 the nickname in
    // another tenant; 6 already holds a hash-like address.
    store
        .exec(&format!(
            "INSERT INTO accounts VALUES (4, 1, 'a@example.com', 'ann', '558', {old}), (5, 3, 'd@example.com', 'ann', '559', {old}),
                                         (6, 4, 'anon-kept', 'fay', '560', {old});"
        ))
        .await;
    assert_eq!(db.pending(&left, &action).await.unwrap(), 3);
    let mut reported = Vec::new();
    let out = db.run(&left, &action, &Limits::default(), 0, |p| reported.push(p.records_done)).await.unwrap();
    assert_eq!((out.records_done, out.remaining), (3, 0));
    // 4 first, on its own (a run resumed after it counts it still).
    assert_eq!((reported.first(), reported.last()), (Some(&1), Some(&3)));
    assert_eq!(store.ids(anonymized).await, BTreeSet::from([1, 2, 4, 5, 6]));
    assert_eq!(store.ids(same_as_first).await, BTreeSet::from([1, 2, 3]), "records done before keep their values");
    assert_eq!(store.ids(shared).await, BTreeSet::new());
    let nick_of =
        |n: i64| format!("SELECT id FROM accounts WHERE nick = (SELECT nick FROM first_forms WHERE id = {n})");
    assert_eq!(store.ids(&nick_of(1)).await, BTreeSet::from([1, 2, 5]), "only 4's nickname is fresh");
    assert_eq!(store.ids("SELECT id FROM accounts WHERE email = 'anon-kept'").await, BTreeSet::from([6]));
    assert_eq!(store.ids("SELECT id FROM accounts WHERE phone IS NOT NULL").await, BTreeSet::from([3]));

    // Again, with the nickname alone used again in tenant 1: the address
    // keeps its hash, and the fresh nickname differs from 4's.
    store
        .exec(&format!(
            "INSERT INTO accounts VALUES (7, 1, 'g@example.com', 'ann', '561', {old});
             INSERT INTO first_forms SELECT id, email, nick FROM accounts WHERE id = 4;"
        ))
        .await;
    let out = db.run(&left, &action, &Limits::default(), 0, |_| {}).await.unwrap();
    assert_eq!((out.records_done, out.remaining), (1, 0));
    assert_eq!(store.ids(anonymized).await, BTreeSet::from([1, 2, 4, 5, 6, 7]));
    assert_eq!(store.ids(shared).await, BTreeSet::new());
    assert_eq!(store.ids(&nick_of(1)).await, BTreeSet::from([1, 2, 5]));
    // 7's address is the hash of g@example.com: anonymized alone, in a
    // copy of the table, it reads the same.
    store
        .exec(&format!(
            "CREATE TABLE lone (id bigint PRIMARY KEY, tenant int, email varchar(40) UNIQUE, nick varchar(40),
                                phone varchar(20), left_at {time_type}, UNIQUE (tenant, nick));
             INSERT INTO lone VALUES (7, 1, 'g@example.com', 'ann', '561', {old});"
        ))
        .await;
    let lone = Selection { table: table("lone"), ..left.clone() };
    db.run(&lone, &action, &Limits::default(), 0, |_| {}).await.unwrap();
    assert_eq!(
        store.ids("SELECT a.id FROM accounts a JOIN lone l ON a.email = l.email AND a.nick <> l.nick").await,
        BTreeSet::from([7])
    );
    assert_eq!(db.pending(&left, &action).await.unwrap(), 0);
}

/// `op`, again where it ran out of the statement timeout, up to four times
/// in all. The tests of reads on large tables set a timeout of a few
/// milliseconds, which any statement can overrun on a busy machine (a stall
/// of the server or of the test); a batch overrunning it again after the
/// run's own smaller retries ends the run as busy, which a later run
/// resumes. A read that cannot keep to the timeout overruns it every time.
pub async fn patiently<T>(
    mut op: impl AsyncFnMut() -> Result<T, lethe::scrub::ScrubError>,
) -> Result<T, lethe::scrub::ScrubError> {
    let mut attempts = 1;
    loop {
        match op().await {
            Err(lethe::scrub::ScrubError::Config(m)) if m.contains("limits.statementTimeout") && attempts < 4 => {
                eprintln!("again after running out of the statement timeout: {m}");
            }
            Err(lethe::scrub::ScrubError::Busy(m)) if attempts < 4 => eprintln!("again after a busy store: {m}"),
            r => return r,
        }
        attempts += 1;
    }
}

/// The selections of the concurrent-runs tests, on table `logs` (rows
/// `1..=n`, every even one before the cutoff by up to 500 hours, user
/// `id % 1000`): everything before 250 hours ahead of the cutoff, and
/// everything before it, both keeping user 14; and users 21 and 22 whole.
pub fn overlapping_selections() -> [lethe::scrub::Selection; 3] {
    let held = vec![(id("user_id"), vec!["14".into()])];
    let earlier = lethe::scrub::Selection {
        older_than: Some((id("logged_at"), cutoff() - chrono::Duration::hours(250))),
        held: held.clone(),
        ..older_than("logs", "logged_at")
    };
    let later = lethe::scrub::Selection { held, ..older_than("logs", "logged_at") };
    let erasure = lethe::scrub::Selection {
        older_than: None,
        subject: vec![(id("user_id"), vec!["21".into(), "22".into()])],
        ..older_than("logs", "logged_at")
    };
    [earlier, later, erasure]
}

/// Checks what the three runs over [`overlapping_selections`] of `n` rows
/// left (`left`, the ids) and counted: each verified nothing of its own
/// selection is left, exactly every newer record but user 21's and every
/// held record remain, and each deleted record was counted once. Which run
/// deletes a record two select depends on timing: what each deleted is
/// printed.
pub fn check_overlapping_runs(outcomes: [lethe::scrub::Outcome; 3], left: std::collections::BTreeSet<i64>, n: i64) {
    let [a, b, c] = outcomes;
    assert_eq!((a.remaining, b.remaining, c.remaining), (0, 0, 0));
    println!("deleted: {}, {} and {}", a.records_done, b.records_done, c.records_done);
    let expected: std::collections::BTreeSet<i64> =
        (1..=n).filter(|g| (g % 2 == 1 && g % 1000 != 21) || g % 1000 == 14).collect();
    assert_eq!(left, expected);
    assert_eq!(a.records_done + b.records_done + c.records_done, n - expected.len() as i64);
}

/// What every SQL driver keeps of a table other tables reference (a
/// selection's guards): deleting a customer would cascade into its orders
/// (`ON DELETE CASCADE`) or clear its notes' reference (`SET NULL`), so a
/// customer some held order or any note of a wholly held table refers to
/// is kept and counted as held. Orders not held go with their customer; a
/// kept customer keeps all its orders. A key of two columns is matched as
/// a pair, never column by column.
pub async fn records_held_rows_of_another_table_reference_are_kept(store: &impl SqlStore, time_type: &str) {
    use lethe::scrub::{Action, Counts, Guard, GuardReason, Limits, ReferencingKey, Selection};
    use std::collections::BTreeSet;
    let old = "'2020-01-01 00:00:00'";
    store
        .exec(&format!(
            "CREATE TABLE kept_customers (id bigint PRIMARY KEY, name varchar(20), left_at {time_type});
             CREATE TABLE kept_orders (id bigint PRIMARY KEY, customer_id bigint, case_ref varchar(20),
                                       FOREIGN KEY (customer_id) REFERENCES kept_customers (id) ON DELETE CASCADE);
             CREATE TABLE kept_notes (id bigint PRIMARY KEY, customer_id bigint,
                                      FOREIGN KEY (customer_id) REFERENCES kept_customers (id) ON DELETE SET NULL);
             INSERT INTO kept_customers VALUES (1, 'a', {old}), (2, 'b', {old}), (3, 'c', {old}), (4, 'd', {old}),
                                               (5, 'e', {old}), (6, 'f', {old}), (7, 'g', NULL);
             INSERT INTO kept_orders VALUES (10, 1, 'F-1'), (20, 2, 'none'), (30, 3, 'F-1'), (31, 3, NULL), (60, NULL, 'F-1');
             INSERT INTO kept_notes VALUES (100, 5), (101, NULL);"
        ))
        .await;
    let expired = Selection {
        table: table("kept_customers"),
        older_than: Some((id("left_at"), cutoff())),
        subject: vec![],
        keep_newer_than: None,
        held: vec![],
        guards: vec![],
    };
    let guard = |child: &str, rows| Guard {
        reason: GuardReason::Hold,
        table: table(child),
        columns: vec![id("customer_id")],
        references: vec![id("id")],
        rows,
        lookup: Default::default(),
    };
    let sel = Selection {
        guards: vec![
            guard("kept_orders", Some(vec![(id("case_ref"), vec!["F-1".to_string()])])),
            guard("kept_notes", None),
        ],
        ..expired.clone()
    };
    let db = store.driver(None).await;
    // The keys the guards stand for, as the catalog tells them.
    let key = |table: &str, columns: &[&str], references: &[&str]| ReferencingKey {
        schema: None,
        table: table.into(),
        columns: columns.iter().map(|c| c.to_string()).collect(),
        references: references.iter().map(|c| c.to_string()).collect(),
        restricts: false,
        restricts_update: true,
    };
    let mut found = db.referencing_keys(&table("kept_customers")).await.unwrap();
    found.sort_by(|a, b| a.table.cmp(&b.table));
    assert_eq!(found, [key("kept_notes", &["customer_id"], &["id"]), key("kept_orders", &["customer_id"], &["id"])]);
    assert_eq!(db.plan(&sel).await.unwrap(), Counts { selected: 3, total: 7, held: 3, ..Counts::default() });
    let out = db.run(&sel, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
    assert_eq!((out.records_done, out.remaining), (3, 0));
    assert_eq!(store.ids("SELECT id FROM kept_customers").await, BTreeSet::from([1, 3, 5, 7]));
    assert_eq!(store.ids("SELECT id FROM kept_orders").await, BTreeSet::from([10, 30, 31, 60]));
    assert_eq!(store.ids("SELECT id FROM kept_notes WHERE customer_id = 5").await, BTreeSet::from([100]));
    // Without them, the run would take the rest: the guards, not the data, kept them.
    assert_eq!(db.count(&expired).await.unwrap(), 3);
    // A held list of no values guards no row.
    let none_held = Selection { guards: vec![guard("kept_orders", Some(vec![(id("case_ref"), vec![])]))], ..expired };
    assert_eq!(db.count(&none_held).await.unwrap(), 3);

    store
        .exec(&format!(
            "CREATE TABLE kept_accounts (tenant bigint, id bigint, left_at {time_type}, PRIMARY KEY (tenant, id));
             CREATE TABLE kept_invoices (id bigint PRIMARY KEY, tenant bigint, account bigint, case_ref varchar(20),
                                         FOREIGN KEY (tenant, account) REFERENCES kept_accounts (tenant, id) ON DELETE CASCADE);
             INSERT INTO kept_accounts VALUES (1, 1, {old}), (1, 2, {old}), (2, 1, {old}), (2, 2, {old});
             INSERT INTO kept_invoices VALUES (1, 1, 2, 'F-1'), (2, 2, 1, 'F-1'), (3, 2, 2, NULL);"
        ))
        .await;
    let pairs = Selection {
        table: table("kept_accounts"),
        older_than: Some((id("left_at"), cutoff())),
        subject: vec![],
        keep_newer_than: None,
        held: vec![],
        guards: vec![Guard {
            reason: GuardReason::Hold,
            table: table("kept_invoices"),
            columns: vec![id("tenant"), id("account")],
            references: vec![id("tenant"), id("id")],
            rows: Some(vec![(id("case_ref"), vec!["F-1".to_string()])]),
            lookup: Default::default(),
        }],
    };
    assert_eq!(
        db.referencing_keys(&table("kept_accounts")).await.unwrap(),
        [key("kept_invoices", &["tenant", "account"], &["tenant", "id"])]
    );
    let out = db.run(&pairs, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
    assert_eq!((out.records_done, out.remaining), (2, 0));
    assert_eq!(store.ids("SELECT tenant * 10 + id FROM kept_accounts").await, BTreeSet::from([12, 21]));
    assert_eq!(store.ids("SELECT id FROM kept_invoices").await, BTreeSet::from([1, 2]));
}

/// What every SQL driver keeps of a table whose records rows of other
/// tables reference through keys that refuse their deletion (`NO ACTION`,
/// `RESTRICT`, and a key of the table on itself): the referenced records
/// stay and are counted as referenced, every other expired record goes (a
/// cascading key's rows with it), where the first batch holding a
/// referenced record used to stop the pass. A record kept only because
/// another expired record referred to it goes once that one has gone: the
/// pass ends only when its selection matches nothing. An anonymization
/// rewriting a column a key refusing updates references (letters by
/// email) keeps the records referenced that way, and only those.
pub async fn records_rows_still_reference_are_kept_and_the_rest_deleted(store: &impl SqlStore, time_type: &str) {
    use lethe::{
        api::AnonymizeStrategy,
        scrub::{Action, Counts, FieldRule, Limits, Selection},
    };
    use std::collections::BTreeSet;
    let (old, new) = ("'2020-01-01 00:00:00'", "'2030-01-01 00:00:00'");
    store
        .exec(&format!(
            "CREATE TABLE ref_customers (id bigint PRIMARY KEY, left_at {time_type}, referrer_id bigint,
                                         email varchar(40) UNIQUE, nickname varchar(20),
                                         FOREIGN KEY (referrer_id) REFERENCES ref_customers (id));
             CREATE TABLE ref_letters (id bigint PRIMARY KEY, email varchar(40),
                                       FOREIGN KEY (email) REFERENCES ref_customers (email) ON DELETE CASCADE);
             CREATE TABLE ref_invoices (id bigint PRIMARY KEY, customer_id bigint,
                                        FOREIGN KEY (customer_id) REFERENCES ref_customers (id));
             CREATE TABLE ref_orders (id bigint PRIMARY KEY, customer_id bigint,
                                      FOREIGN KEY (customer_id) REFERENCES ref_customers (id) ON DELETE RESTRICT);
             CREATE TABLE ref_sessions (id bigint PRIMARY KEY, customer_id bigint,
                                        FOREIGN KEY (customer_id) REFERENCES ref_customers (id) ON DELETE CASCADE);
             INSERT INTO ref_customers (id, left_at, referrer_id, email)
                  VALUES (1, {old}, NULL, 'c1'), (2, {old}, NULL, 'c2'), (3, {old}, NULL, 'c3'), (4, {old}, NULL, 'c4'),
                         (6, {old}, NULL, 'c6'), (7, {old}, NULL, 'c7'), (8, {old}, NULL, 'c8'), (9, {new}, NULL, 'c9');
             INSERT INTO ref_customers (id, left_at, referrer_id, email) VALUES (5, {old}, 6, 'c5');
             INSERT INTO ref_letters VALUES (40, 'c3');
             INSERT INTO ref_invoices VALUES (10, 1), (11, NULL);
             INSERT INTO ref_orders VALUES (20, 2), (21, 9);
             INSERT INTO ref_sessions VALUES (30, 3), (31, 4), (32, 9);"
        ))
        .await;
    let db = store.driver(None).await;
    let customers = table("ref_customers");
    let mut keys = db.referencing_keys(&customers).await.unwrap();
    keys.sort_by(|a, b| a.table.cmp(&b.table));
    let rules: Vec<(&str, bool, bool)> =
        keys.iter().map(|k| (k.table.as_str(), k.restricts, k.restricts_update)).collect();
    assert_eq!(
        rules,
        [
            ("ref_customers", true, true),
            ("ref_invoices", true, true),
            ("ref_letters", false, true),
            ("ref_orders", true, true),
            ("ref_sessions", false, true)
        ]
    );

    // Anonymizing: only the key on the rewritten column keeps anything.
    let rule = |field: &str, strategy| FieldRule { field: id(field), strategy, value: None };
    let nicknames = Action::Anonymize { rules: vec![rule("nickname", AnonymizeStrategy::Null)], salt: String::new() };
    assert_eq!(db.reference_guards(&customers, &nicknames).await.unwrap(), [], "no referenced column rewritten");
    let emails = Action::Anonymize { rules: vec![rule("email", AnonymizeStrategy::Hash)], salt: "pepper".into() };
    let guards = db.reference_guards(&customers, &emails).await.unwrap();
    assert_eq!(guards.iter().map(|g| g.table.name.to_string()).collect::<Vec<_>>(), ["ref_letters"]);
    let expired = older_than("ref_customers", "left_at");
    let sel = Selection { guards, ..expired.clone() };
    assert_eq!(db.plan(&sel).await.unwrap().referenced, 1);
    let out = db.run(&sel, &emails, &Limits::default(), 0, |_| {}).await.unwrap();
    assert_eq!((out.records_done, out.remaining), (7, 0));
    assert_eq!(store.ids("SELECT id FROM ref_customers WHERE email LIKE 'c%'").await, BTreeSet::from([3, 9]));
    // Without the guard the server refuses to rewrite the letter's customer.
    config_error(db.run(&expired, &emails, &Limits::default(), 0, |_| {}).await, &["still referenced"]);
    assert_eq!(store.ids("SELECT id FROM ref_customers WHERE email LIKE 'c%'").await, BTreeSet::from([3, 9]));

    // Deleting: every key refusing deletion keeps what it references.
    let guards = db.reference_guards(&customers, &Action::Delete).await.unwrap();
    let mut guarded: Vec<String> = guards.iter().map(|g| g.table.name.to_string()).collect();
    guarded.sort();
    assert_eq!(guarded, ["ref_customers", "ref_invoices", "ref_orders"], "the cascading key keeps nothing");
    let sel = Selection { guards, ..expired.clone() };
    // 1 (an invoice), 2 (an order) and 6 (customer 5's referrer) are kept.
    let counts = Counts { selected: 5, total: 9, referenced: 3, ..Counts::default() };
    assert_eq!(db.plan(&sel).await.unwrap(), counts);
    let out = db.run(&sel, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
    assert_eq!((out.records_done, out.remaining), (6, 0), "5, and then 6, which only 5 referred to");
    assert_eq!(store.ids("SELECT id FROM ref_customers").await, BTreeSet::from([1, 2, 9]));
    assert_eq!(store.ids("SELECT id FROM ref_invoices").await, BTreeSet::from([10, 11]));
    assert_eq!(store.ids("SELECT id FROM ref_orders").await, BTreeSet::from([20, 21]));
    assert_eq!(store.ids("SELECT id FROM ref_sessions").await, BTreeSet::from([32]), "the cascade took 3's and 4's");
    assert_eq!(db.plan(&sel).await.unwrap(), Counts { selected: 0, total: 3, referenced: 2, ..Counts::default() });
    // Without the guards the server refuses the batch holding 1 and 2.
    config_error(db.run(&expired, &Action::Delete, &Limits::default(), 0, |_| {}).await, &["still referenced"]);
    assert_eq!(store.ids("SELECT id FROM ref_customers").await, BTreeSet::from([1, 2, 9]));
}

/// A generated table and two tables referring to it, for
/// [`referring_tables_keep_exactly_what_they_must`]: each record's user and
/// time (half-days from the cutoff, or NULL), the held users, the orders
/// (the record they refer to, by position, and whether they are held) and
/// the receipts (the record they refer to). A position past the end refers
/// to nothing. `indexed` says whether the orders' and the receipts'
/// referencing columns have an index of their own (PostgreSQL and MariaDB
/// look records up through it, and join all at once without one). MariaDB
/// makes one for every foreign key, so a guard on a table without one of
/// its own is told to join, as PostgreSQL would settle it anyway.
#[derive(Debug, Clone)]
pub struct Referring {
    pub records: Vec<(i32, Option<i64>)>,
    pub held: std::collections::BTreeSet<i32>,
    pub orders: Vec<(usize, bool)>,
    pub receipts: Vec<usize>,
    pub indexed: (bool, bool),
}

pub fn referring() -> impl proptest::strategy::Strategy<Value = Referring> {
    use proptest::prelude::*;
    (
        prop::collection::vec((0i32..20, prop::option::weighted(0.9, -50i64..50)), 0..200),
        prop::collection::btree_set(0i32..20, 0..3),
        prop::collection::vec((0usize..200, any::<bool>()), 0..40),
        prop::collection::vec(0usize..200, 0..40),
        any::<(bool, bool)>(),
    )
        .prop_map(|(records, held, orders, receipts, indexed)| Referring {
            records,
            held,
            orders,
            receipts,
            indexed,
        })
}

/// The invariants with other tables referring to the generated one, on
/// every SQL store: orders (`ON DELETE CASCADE`, some of them held, by
/// case) and receipts (a key that refuses deletion). Exactly the selected
/// records no held order and no receipt refers to are deleted, their
/// unheld orders with them; every held order and every receipt stays; the
/// plan's counts of held and referenced records are what the data says.
/// `literal` writes an instant as the store's time column reads it.
pub async fn referring_tables_keep_exactly_what_they_must(
    store: &impl SqlStore,
    time_type: &str,
    literal: fn(DateTime<Utc>) -> String,
    case: &Referring,
    limits: &lethe::scrub::Limits,
) {
    use lethe::scrub::{Action, Guard, GuardReason};
    use std::collections::BTreeSet;
    let Referring { records, held, orders, receipts, indexed } = case;
    store.exec("DROP TABLE IF EXISTS g_orders").await;
    store.exec("DROP TABLE IF EXISTS g_receipts").await;
    store.exec("DROP TABLE IF EXISTS g_events").await;
    store
        .exec(&format!(
            "CREATE TABLE g_events (id bigint PRIMARY KEY, user_id int, created_at {time_type});
             CREATE INDEX g_events_created ON g_events (created_at);
             CREATE TABLE g_orders (id bigint PRIMARY KEY, event_id bigint, case_ref varchar(10),
                                    FOREIGN KEY (event_id) REFERENCES g_events (id) ON DELETE CASCADE);
             CREATE TABLE g_receipts (id bigint PRIMARY KEY, event_id bigint, FOREIGN KEY (event_id) REFERENCES g_events (id));"
        ))
        .await;
    for (_, table) in [(indexed.0, "g_orders"), (indexed.1, "g_receipts")].into_iter().filter(|(on, _)| *on) {
        store.exec(&format!("CREATE INDEX {table}_event ON {table} (event_id)")).await;
    }
    let at = |d: Option<i64>| d.map_or("NULL".into(), |d| literal(cutoff() + chrono::Duration::hours(d * 12)));
    let to = |i: usize| (i < records.len()).then_some(i as i64);
    let or_null = |e: Option<i64>| e.map_or("NULL".into(), |e| e.to_string());
    let insert = |table: &str, values: Vec<String>| match values.is_empty() {
        true => String::new(),
        false => format!("INSERT INTO {table} VALUES {};", values.join(", ")),
    };
    let events = records.iter().enumerate().map(|(i, (u, d))| format!("({i}, {u}, {})", at(*d))).collect();
    let order_rows = orders
        .iter()
        .enumerate()
        .map(|(n, (i, h))| format!("({n}, {}, {})", or_null(to(*i)), if *h { "'F-1'" } else { "NULL" }))
        .collect();
    let receipt_rows = receipts.iter().enumerate().map(|(n, i)| format!("({n}, {})", or_null(to(*i)))).collect();
    let rows = [insert("g_events", events), insert("g_orders", order_rows), insert("g_receipts", receipt_rows)];
    if rows.iter().any(|r| !r.is_empty()) {
        store.exec(&rows.concat()).await;
    }
    let db = store.driver(None).await;
    let mut sel = expiry_selection("g_events", held, None);
    let keys = db.referencing_keys(&table("g_events")).await.unwrap();
    sel.guards = keys.iter().filter_map(|k| k.guard(&Action::Delete).unwrap()).collect();
    sel.guards.push(Guard {
        reason: GuardReason::Hold,
        table: table("g_orders"),
        columns: vec![id("event_id")],
        references: vec![id("id")],
        rows: Some(vec![(id("case_ref"), vec!["F-1".into()])]),
        lookup: Default::default(),
    });
    for g in &mut sel.guards {
        if [(indexed.0, "g_orders"), (indexed.1, "g_receipts")].contains(&(false, g.table.name.as_str())) {
            g.lookup = lethe::scrub::Lookup::Joined;
        }
    }
    let planned = db.plan(&sel).await.unwrap();
    let outcome = db.run(&sel, &Action::Delete, limits, 0, |_| {}).await.unwrap();

    let held_order = |r: usize| orders.iter().any(|(i, h)| *h && *i == r);
    let receipt = |r: usize| receipts.contains(&r);
    let expired = |r: usize| records[r].1.is_some_and(|d| d < 0);
    let user_held = |r: usize| held.contains(&records[r].0);
    let gone = |r: &usize| expired(*r) && !user_held(*r) && !held_order(*r) && !receipt(*r);
    let expected: BTreeSet<i64> = (0..records.len()).filter(|r| !gone(r)).map(|r| r as i64).collect();
    assert_eq!(store.ids("SELECT id FROM g_events").await, expected, "exact survivors");
    assert_eq!((outcome.records_done, outcome.remaining), ((records.len() - expected.len()) as i64, 0));
    assert_eq!(outcome.records_done, planned.selected, "the plan predicted the run");
    let past: Vec<usize> = (0..records.len()).filter(|r| expired(*r)).collect();
    let referenced = past.iter().filter(|r| !user_held(**r) && !held_order(**r) && receipt(**r)).count();
    let kept_by_holds = past.iter().filter(|r| !receipt(**r) && (user_held(**r) || held_order(**r))).count();
    assert_eq!((planned.referenced, planned.held), (referenced as i64, kept_by_holds as i64), "{planned:?}");
    let orders_left: BTreeSet<i64> = orders
        .iter()
        .enumerate()
        .filter(|(_, (i, _))| to(*i).is_none_or(|e| expected.contains(&e)))
        .map(|(n, _)| n as i64)
        .collect();
    assert_eq!(store.ids("SELECT id FROM g_orders").await, orders_left, "held orders all stay");
    assert_eq!(store.ids("SELECT count(*) FROM g_receipts").await, BTreeSet::from([receipts.len() as i64]));
}
