//! The SQLite driver on real database files. Times stored as ISO-8601 text
//! and as Unix seconds side by side; every test checks the exact end state.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::scrub::{
    config_error, contact_anonymization, cutoff, expiry_selection, id, older_than, rt, selected, table, unix_time_kept,
    unix_time_selection, unix_time_values,
};
use lethe::{
    api::AnonymizeStrategy,
    scrub::{Action, FieldRule, Limits, ScrubError, Selection, sqlite::Sqlite},
};
use proptest::prelude::*;

/// A new database file with `setup` run in it.
async fn database(dir: &tempfile::TempDir, setup: &str) -> Sqlite {
    let path = dir.path().join("data.db");
    rusqlite::Connection::open(&path).unwrap().execute_batch(setup).unwrap();
    Sqlite::open(&path, &Limits::default()).await.unwrap()
}

async fn ids(db: &Sqlite, sql: &str) -> BTreeSet<i64> {
    db.query_i64(sql).await.unwrap().into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// See [`common::scrub::referring_tables_keep_exactly_what_they_must`].
    #[test]
    fn retention_keeps_exactly_what_held_and_refusing_rows_refer_to(case in common::scrub::referring(), batch in 1i64..50) {
        let dir = tempfile::tempdir().unwrap();
        let store = LiteStore(dir.path().join("data.db"));
        let limits = Limits { initial_batch: batch, min_batch: 1, ..Limits::default() };
        let literal = |t: chrono::DateTime<chrono::Utc>| format!("'{}'", t.format("%Y-%m-%d %H:%M:%S"));
        rt().block_on(common::scrub::referring_tables_keep_exactly_what_they_must(&store, "TEXT", literal, &case, &limits));
    }

    #[test]
    fn retention_deletes_exactly_the_expired_unheld_rows(
        data in prop::collection::vec((0i32..20, prop::option::weighted(0.9, -50i64..50), any::<bool>(), prop::option::weighted(0.9, -50i64..50)), 0..200),
        held in prop::collection::btree_set(0i32..20, 0..5),
        with_minimum in any::<bool>(),
        batch in 1i64..50,
    ) {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let minimum = cutoff() - chrono::Duration::days(20);
            let rows: Vec<String> = data.iter().enumerate().map(|(i, (u, c, as_text, iss))| {
                // Half-second offsets: sub-second precision must not let a newer row through.
                let c = c.map(|d| cutoff() + chrono::Duration::milliseconds(d * 500));
                let c = match c {
                    None => "NULL".into(),
                    Some(t) if *as_text => format!("'{}'", t.format("%Y-%m-%d %H:%M:%S%.3f")),
                    Some(t) => format!("{}.{:03}", t.timestamp(), t.timestamp_subsec_millis()),
                };
                let iss = iss.map(|d| format!("'{}'", (minimum + chrono::Duration::hours(d * 12)).format("%Y-%m-%dT%H:%M:%SZ"))).unwrap_or("NULL".into());
                format!("({i}, {u}, {c}, {iss})")
            }).collect();
            let mut setup = "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id INTEGER, created_at, issued_at TEXT);".to_string();
            if !rows.is_empty() {
                setup.push_str(&format!("INSERT INTO events VALUES {};", rows.join(", ")));
            }
            let db = database(&dir, &setup).await;
            let sel = expiry_selection("events", &held, with_minimum.then_some(minimum));
            let planned = db.plan(&sel).await.unwrap();
            let out = db.run(&sel, &Action::Delete, &Limits { initial_batch: batch, min_batch: 1, ..Limits::default() }, 0, |_| {}).await.unwrap();
            let expected: BTreeSet<i64> = data.iter().enumerate().filter(|(_, (u, c, _, iss))| !selected(*u, *c, *iss, &held, with_minimum)).map(|(i, _)| i as i64).collect();
            assert_eq!(ids(&db, "SELECT id FROM events").await, expected, "exact survivors");
            assert_eq!(out.records_done, planned.selected);
            assert_eq!(out.remaining, 0);
        });
    }

    /// The same invariants for anonymization: exactly the selected rows
    /// change, in every field of the rule set; no row is deleted; the
    /// others are as they were; a second run changes nothing.
    #[test]
    fn anonymization_changes_exactly_the_expired_unheld_rows(
        data in prop::collection::vec((0i32..20, prop::option::weighted(0.9, -50i64..50), prop::option::weighted(0.9, -50i64..50)), 0..200),
        held in prop::collection::btree_set(0i32..20, 0..5),
        with_minimum in any::<bool>(),
        batch in 1i64..50,
    ) {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let minimum = cutoff() - chrono::Duration::days(20);
            let rows: Vec<String> = data.iter().enumerate().map(|(i, (u, c, iss))| {
                let c = c.map(|d| format!("'{}'", (cutoff() + chrono::Duration::hours(d * 12)).format("%Y-%m-%d %H:%M:%S"))).unwrap_or("NULL".into());
                let iss = iss.map(|d| format!("'{}'", (minimum + chrono::Duration::hours(d * 12)).format("%Y-%m-%d %H:%M:%S"))).unwrap_or("NULL".into());
                let phone = if i % 3 == 0 { "NULL".to_string() } else { format!("'+49 {i}'") };
                format!("({i}, {u}, {c}, {iss}, 'user{i}@example.com', {phone}, {})", i % 4)
            }).collect();
            let mut setup = "CREATE TABLE people (id INTEGER PRIMARY KEY, user_id INTEGER, created_at TEXT, issued_at TEXT, email TEXT NOT NULL UNIQUE, phone TEXT, age INTEGER);".to_string();
            if !rows.is_empty() {
                setup.push_str(&format!("INSERT INTO people VALUES {};", rows.join(", ")));
            }
            let db = database(&dir, &setup).await;
            // Each row as one number: its id, its e-mail's and phone's lengths, its age.
            let snapshot = "SELECT id * 1000000 + length(email) * 1000 + coalesce(length(phone), 999) * 10 + coalesce(age, 9) FROM people ORDER BY id";
            let before = db.query_i64(snapshot).await.unwrap();
            let sel = expiry_selection("people", &held, with_minimum.then_some(minimum));
            let action = contact_anonymization();
            let limits = Limits { initial_batch: batch, min_batch: 1, ..Limits::default() };
            let pending = db.pending(&sel, &action).await.unwrap();
            let out = db.run(&sel, &action, &limits, 0, |_| {}).await.unwrap();

            let after = db.query_i64(snapshot).await.unwrap();
            assert_eq!(after.len(), data.len(), "no row deleted");
            let chosen: BTreeSet<i64> = data.iter().enumerate().filter(|(_, (u, c, iss))| selected(*u, *c, *iss, &held, with_minimum)).map(|(i, _)| i as i64).collect();
            for (i, (b, a)) in before.iter().zip(&after).enumerate() {
                if !chosen.contains(&(i as i64)) {
                    assert_eq!(a, b, "row {i} untouched");
                }
            }
            let anonymized = "SELECT id FROM people WHERE email LIKE 'anon-%' AND phone IS NULL AND age = 0";
            assert_eq!(ids(&db, anonymized).await, chosen, "every field of exactly the selected rows");
            let distinct = db.query_i64("SELECT count(DISTINCT email) FROM people WHERE email LIKE 'anon-%'").await.unwrap()[0];
            let expected = chosen.len() as i64;
            assert_eq!(distinct, expected, "hashes stay distinct");
            assert_eq!((out.records_done, out.remaining, pending), (expected, 0, expected));
            let again = db.run(&sel, &action, &limits, 0, |_| {}).await.unwrap();
            assert_eq!((again.records_done, again.remaining), (0, 0), "a second run changes nothing");
        });
    }
}

#[test]
fn erasure_and_anonymization() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = database(
            &dir,
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, email TEXT NOT NULL UNIQUE, phone TEXT, full_name TEXT NOT NULL, closed_at TEXT);
             INSERT INTO customers VALUES (1, 42, 'jane@example.com', '+1', 'Jane', '2025-02-01'), (2, 8, 'bob@example.com', '+2', 'Bob', '2025-03-01'),
                                          (3, 9, 'eve@example.com', '+3', 'Eve', NULL), (4, 10, 'amy@example.com', NULL, 'Amy', '2026-06-01');",
        )
        .await;
        // '8abc' is not the integer 8.
        let sneaky = Selection { table: table("customers"), older_than: None, subject: vec![(id("user_id"), vec!["8abc".into()])], keep_newer_than: None, held: vec![], guards: vec![] };
        assert_eq!(db.run(&sneaky, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap().records_done, 0);
        // A subject's expired records: a subject that matches no one must not widen to everyone expired.
        let nobody_expired = Selection { older_than: Some((id("closed_at"), cutoff())), ..sneaky.clone() };
        assert_eq!(db.run(&nobody_expired, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap().records_done, 0);
        let empty = Selection { subject: vec![(id("user_id"), vec![])], ..nobody_expired };
        assert!(matches!(db.run(&empty, &Action::Delete, &Limits::default(), 0, |_| {}).await, Err(ScrubError::Config(_))));
        let erase = Selection { subject: vec![(id("user_id"), vec!["42".into()])], ..sneaky };
        assert_eq!(db.run(&erase, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap().records_done, 1);
        assert_eq!(ids(&db, "SELECT id FROM customers").await, BTreeSet::from([2, 3, 4]));

        let closed = Selection { table: table("customers"), older_than: Some((id("closed_at"), cutoff())), subject: vec![], keep_newer_than: None, held: vec![], guards: vec![] };
        let rules = vec![
            FieldRule { field: id("email"), strategy: AnonymizeStrategy::Hash, value: None },
            FieldRule { field: id("phone"), strategy: AnonymizeStrategy::Null, value: None },
            FieldRule { field: id("full_name"), strategy: AnonymizeStrategy::Redact, value: None },
        ];
        let action = Action::Anonymize { rules, salt: "salt".into() };
        let out = db.run(&closed, &action, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (1, 0), "only Bob's account closed before the cutoff");
        assert_eq!(ids(&db, "SELECT id FROM customers WHERE email LIKE 'anon-%' AND phone IS NULL AND full_name = '***'").await, BTreeSet::from([2]));
        assert_eq!(ids(&db, "SELECT id FROM customers WHERE email NOT LIKE 'anon-%'").await, BTreeSet::from([3, 4]));
        assert_eq!(db.run(&closed, &action, &Limits::default(), 0, |_| {}).await.unwrap().records_done, 0, "idempotent");
        let bad = Action::Anonymize { rules: vec![FieldRule { field: id("full_name"), strategy: AnonymizeStrategy::Null, value: None }], salt: String::new() };
        assert!(matches!(db.run(&closed, &bad, &Limits::default(), 0, |_| {}).await, Err(ScrubError::Config(_))));

        // Rules that would break a unique key on the column alone are
        // refused before anything changes; a key of several columns is
        // checked against the records (see
        // `unique_keys_of_several_columns_are_checked_before_anonymizing`),
        // and a partial unique index not at all.
        let setup = "CREATE TABLE coupons (code TEXT PRIMARY KEY, label TEXT UNIQUE, note TEXT, tenant INTEGER, handle TEXT, used_at TEXT,
                                           UNIQUE (tenant, handle));
                     CREATE UNIQUE INDEX live_notes ON coupons (note) WHERE used_at IS NULL;
                     CREATE UNIQUE INDEX loud_labels ON coupons (upper(label));
                     WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 20)
                     INSERT INTO coupons SELECT 'C' || n, 'L' || n, 'N' || n, n, 'h' || n, '2020-01-01' FROM g;";
        rusqlite::Connection::open(dir.path().join("data.db")).unwrap().execute_batch(setup).unwrap();
        let used = Selection { table: table("coupons"), older_than: Some((id("used_at"), cutoff())), ..closed.clone() };
        let coupons = "SELECT count(*) FROM coupons WHERE code LIKE 'C%' AND label LIKE 'L%' AND note LIKE 'N%' AND handle LIKE 'h%'";
        for (field, strategy, says) in [
            ("code", AnonymizeStrategy::Fixed, "one fixed value"),
            ("label", AnonymizeStrategy::Fixed, "one fixed value"),
            ("label", AnonymizeStrategy::Redact, "redaction"),
        ] {
            let rules = vec![FieldRule { field: id(field), strategy, value: Some("x".into()) }];
            config_error(db.run(&used, &Action::Anonymize { rules, salt: "s".into() }, &Limits::default(), 0, |_| {}).await, &[field, says]);
        }
        assert_eq!(ids(&db, coupons).await, BTreeSet::from([20]), "nothing changed");
        let rules = vec![
            FieldRule { field: id("label"), strategy: AnonymizeStrategy::Hash, value: None },
            FieldRule { field: id("note"), strategy: AnonymizeStrategy::Fixed, value: Some("gone".into()) },
            FieldRule { field: id("handle"), strategy: AnonymizeStrategy::Redact, value: None },
        ];
        let out = db.run(&used, &Action::Anonymize { rules, salt: "s".into() }, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (20, 0));
        assert_eq!(ids(&db, "SELECT count(DISTINCT label) FROM coupons WHERE label LIKE 'anon-%' AND note = 'gone' AND handle NOT GLOB '*[^*]*'").await, BTreeSet::from([20]));
    });
}

/// Identifier columns declared with no type, or as `BLOB`, convert
/// nothing: an application may store a user's number there as an integer,
/// as text, or as a blob of the text's bytes. All are the subject `42`: a
/// hold on it keeps each, a retention pass deletes the rest, an erasure
/// takes them all, and spellings that are other text (`042`, `+42`, ` 42`)
/// match only themselves. Each plan counts as the pass does.
#[test]
fn identifiers_in_columns_without_a_type_match_as_stored_either_way() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = database(
            &dir,
            "CREATE TABLE visits (id INTEGER PRIMARY KEY, user_id, tag BLOB, at TEXT);
             INSERT INTO visits VALUES (1, 42, 42, '2020-01-01'), (2, '42', '42', '2020-01-01'),
                                       (3, 42.0, x'3432', '2020-01-01'), (4, '042', '042', '2020-01-01'),
                                       (5, '+42', '+42', '2020-01-01'), (6, 7, 7, '2020-01-01'),
                                       (7, ' 42', ' 42', '2020-01-01'), (8, 42, 42, '2099-01-01');",
        )
        .await;
        let all = "SELECT id FROM visits";
        let sel = |column: &str, held: &[&str], subject: &[&str]| Selection {
            table: table("visits"),
            older_than: subject.is_empty().then(|| (id("at"), cutoff())),
            subject: if subject.is_empty() {
                vec![]
            } else {
                vec![(id(column), subject.iter().map(|s| s.to_string()).collect())]
            },
            keep_newer_than: None,
            held: vec![(id(column), held.iter().map(|s| s.to_string()).collect())],
            guards: vec![],
        };
        // Held: the integer 42, the text '42' and the real 42.0.
        let retention = sel("user_id", &["42"], &[]);
        let plan = db.plan(&retention).await.unwrap();
        assert_eq!((plan.selected, plan.held), (4, 3));
        let out = db.run(&retention, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (4, 0));
        assert_eq!(ids(&db, all).await, BTreeSet::from([1, 2, 3, 8]));
        // By a BLOB column, the rows deleted put back: the same, the blob
        // x'3432' (the bytes of '42') held too.
        db.execute_batch(
            "INSERT INTO visits VALUES (4, '042', '042', '2020-01-01'), (5, '+42', '+42', '2020-01-01'),
                                       (6, 7, 7, '2020-01-01'), (7, ' 42', ' 42', '2020-01-01')",
        )
        .await
        .unwrap();
        let out = db.run(&sel("tag", &["42"], &[]), &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (4, 0));
        assert_eq!(ids(&db, all).await, BTreeSet::from([1, 2, 3, 8]));
        // Erasure of 42 takes the integer, the text and the real, the newer
        // one too; of '+42', only that text; of '0042' or ' 42', nothing.
        db.execute_batch("INSERT INTO visits VALUES (4, '042', '042', '2020-01-01'), (5, '+42', '+42', '2020-01-01')")
            .await
            .unwrap();
        for other in ["+42", "0042", " 42"] {
            let erase = sel("user_id", &[], &[other]);
            assert_eq!(db.plan(&erase).await.unwrap().selected, i64::from(other == "+42"), "{other:?}");
        }
        let erase = sel("user_id", &[], &["42"]);
        assert_eq!(db.plan(&erase).await.unwrap().selected, 4);
        let out = db.run(&erase, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (4, 0));
        assert_eq!(ids(&db, all).await, BTreeSet::from([4, 5]));
    });
}

/// A time column holding values SQLite reads as no time (a date written
/// another way, a word, a blob) is refused in the plan and in the run,
/// with how many there are and nothing changed: those records would never
/// expire. NULL is an unknown time, kept and not refused. Once the values
/// read as times, the pass runs.
#[test]
fn a_time_column_holding_values_that_read_as_no_time_is_refused_with_their_count() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = database(
            &dir,
            "CREATE TABLE sessions (id INTEGER PRIMARY KEY, ended_at TEXT, started BLOB);
             INSERT INTO sessions VALUES (1, '2020-01-01', '2020-01-01'), (2, '01/02/2020', '2020-01-01'),
                                         (3, 'yesterday', x'00'), (4, NULL, '2020-01-01'), (5, '2099-01-01', NULL);",
        )
        .await;
        let all = "SELECT id FROM sessions";
        let ended = older_than("sessions", "ended_at");
        let started = older_than("sessions", "started");
        for (sel, says) in [(&ended, ["ended_at", ": 2 records hold a value"]), (&started, ["started", ": 1 records hold"])] {
            let says = [says[0], says[1], "reads as no time", "nothing was changed"];
            config_error(db.plan(sel).await, &says);
            config_error(db.run(sel, &Action::Delete, &Limits::default(), 0, |_| {}).await, &says);
        }
        assert_eq!(ids(&db, all).await, BTreeSet::from([1, 2, 3, 4, 5]));
        db.execute_batch("UPDATE sessions SET ended_at = '2020-01-02' WHERE id = 2; UPDATE sessions SET ended_at = '2021-05-06T07:08:09+02:00' WHERE id = 3")
            .await
            .unwrap();
        let out = db.run(&ended, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (3, 0));
        assert_eq!(ids(&db, all).await, BTreeSet::from([4, 5]));
    });
}

#[test]
fn configuration_errors_name_what_is_wrong() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        config_error(
            Sqlite::open(dir.path().join("missing.db"), &Limits::default()).await.map(|_| ()),
            &["does not exist"],
        );
        let db = database(&dir, "CREATE TABLE t (a INTEGER);").await;
        config_error(db.probe(&table("nope")).await, &["\"nope\" does not exist"]);
        let p = db.probe(&table("t")).await.unwrap();
        assert!(p.server_version.starts_with("SQLite 3.") && p.can_delete);
        let sel = Selection {
            table: table("t"),
            older_than: Some((id("missing_column"), cutoff())),
            subject: vec![],
            keep_newer_than: None,
            held: vec![],
            guards: vec![],
        };
        assert!(matches!(db.count(&sel).await, Err(ScrubError::Config(_))));
    });
}

/// Tables a `rowid`-based batch cannot address: one without a rowid
/// (its key is the row's address), one whose columns shadow every rowid
/// alias, and one with a column named `rowid` that is not unique.
#[test]
fn tables_without_a_usable_rowid_are_addressed_by_their_key() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = database(
            &dir,
            "CREATE TABLE keyed (tenant INTEGER, n INTEGER, at TEXT, who TEXT, PRIMARY KEY (tenant, n)) WITHOUT ROWID;
             INSERT INTO keyed VALUES (1, 1, '2020-01-01', 'a'), (1, 2, '2030-01-01', 'b'), (2, 1, '2020-01-01', 'c'), (2, 2, '2020-06-01', 'd');
             CREATE TABLE shadowed (rowid INTEGER, _rowid_ INTEGER, oid INTEGER, id INTEGER PRIMARY KEY, at TEXT, email TEXT);
             INSERT INTO shadowed VALUES (7, 7, 7, 1, '2020-01-01', 'a'), (7, 7, 7, 2, '2030-01-01', 'b'), (7, 7, 7, 3, '2020-01-01', 'c');
             CREATE TABLE clash (rowid INTEGER, at TEXT);
             INSERT INTO clash VALUES (5, '2020-01-01'), (5, '2030-01-01'), (6, '2020-01-01');
             CREATE TABLE hopeless (rowid INTEGER, _rowid_ INTEGER, OID INTEGER, at TEXT);
             INSERT INTO hopeless VALUES (1, 1, 1, '2020-01-01');",
        )
        .await;
        let small = Limits { initial_batch: 1, min_batch: 1, max_batch: 1, ..Limits::default() };
        let sel = |t: &str| Selection {
            table: table(t),
            older_than: Some((id("at"), cutoff())),
            subject: vec![],
            keep_newer_than: None,
            held: vec![], guards: vec![],
        };
        let out = db.run(&sel("keyed"), &Action::Delete, &small, 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (3, 0));
        assert_eq!(ids(&db, "SELECT tenant * 10 + n FROM keyed").await, BTreeSet::from([12]));
        let out = db.run(&sel("shadowed"), &Action::Delete, &small, 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.batches, out.remaining), (2, 2, 0), "one row per batch, as bounded");
        assert_eq!(ids(&db, "SELECT id FROM shadowed").await, BTreeSet::from([2]));
        let out = db.run(&sel("clash"), &Action::Delete, &small, 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.batches, out.remaining), (2, 2, 0), "one row per batch, as bounded");
        assert_eq!(ids(&db, "SELECT count(*) FROM clash WHERE at = '2030-01-01'").await, BTreeSet::from([1]));
        // Every name of the rowid shadowed and no key: refused, nothing touched.
        config_error(db.run(&sel("hopeless"), &Action::Delete, &small, 0, |_| {}).await, &["\"hopeless\"", "no primary key"]);
        assert_eq!(ids(&db, "SELECT count(*) FROM hopeless").await, BTreeSet::from([1]));
        // Anonymization walks the same key, and each row is done once.
        db.execute_batch("INSERT INTO keyed VALUES (3, 1, '2020-01-01', 'e'), (3, 2, '2020-01-01', 'f')").await.unwrap();
        let rules = vec![FieldRule { field: id("who"), strategy: AnonymizeStrategy::Null, value: None }];
        let out = db
            .run(&sel("keyed"), &Action::Anonymize { rules, salt: "s".into() }, &small, 0, |_| {})
            .await
            .unwrap();
        assert_eq!((out.records_done, out.remaining), (2, 0));
        assert_eq!(ids(&db, "SELECT tenant * 10 + n FROM keyed WHERE who IS NULL").await, BTreeSet::from([31, 32]));
    });
}

#[test]
fn interrupted_runs_resume_to_the_exact_end_state() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = database(
            &dir,
            "CREATE TABLE logs (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, logged_at INTEGER NOT NULL);
             WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 200000)
             INSERT INTO logs SELECT n, n % 1000, 1767225600 + (CASE WHEN n % 2 = 0 THEN -1 ELSE 1 END) * (n % 500 + 1) * 3600 FROM g;",
        )
        .await;
        let sel = Selection { table: table("logs"), older_than: Some((id("logged_at"), cutoff())), subject: vec![], keep_newer_than: None, held: vec![(id("user_id"), vec!["14".into()])], guards: vec![] };
        let planned = db.plan(&sel).await.unwrap().selected;
        assert_eq!(planned, 99_800);
        let mut seed = 0x853c49e6748fea9bu64;
        let mut aborts = 0;
        for _ in 0..12 {
            common::next_random(&mut seed);
            let remaining = db.count(&sel).await.unwrap();
            let limits = Limits { max_batch: 2_000, ..Limits::default() };
            let after = Duration::from_millis(2 + seed % 30);
            if tokio::time::timeout(after, db.run(&sel, &Action::Delete, &limits, planned - remaining, |_| {})).await.is_err() {
                aborts += 1;
            }
            assert_eq!(db.query_i64("SELECT count(*) FROM logs WHERE logged_at >= 1767225600").await.unwrap()[0], 100_000);
            assert_eq!(db.query_i64("SELECT count(*) FROM logs WHERE user_id = 14").await.unwrap()[0], 200);
        }
        assert!(aborts >= 10, "at least ten interruptions ({aborts})");
        let remaining = db.count(&sel).await.unwrap();
        let out = db.run(&sel, &Action::Delete, &Limits::default(), planned - remaining, |_| {}).await.unwrap();
        assert_eq!(out.records_done, planned);
        assert_eq!(db.query_i64("SELECT count(*) FROM logs").await.unwrap()[0], 200_000 - planned);
    });
}

/// Three runs on one database file at once, each with its own connection,
/// as on PostgreSQL and MariaDB: two retention passes with different
/// cutoffs keeping a held user, and an erasure of two users. SQLite lets
/// one write at a time, so each waits for the others' batches (in WAL
/// mode, so that reads do not wait for writes too); each ends without
/// error, exactly what none may delete remains, and every record
/// deleted is counted by exactly one run.
#[test]
fn concurrent_runs_on_one_table_keep_what_must_be_kept_and_count_each_record_once() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = database(
            &dir,
            "CREATE TABLE logs (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, logged_at INTEGER NOT NULL);
             WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 100000)
             INSERT INTO logs SELECT n, n % 1000, 1767225600 + (CASE WHEN n % 2 = 0 THEN -1 ELSE 1 END) * (n % 500 + 1) * 3600 FROM g;
             CREATE INDEX logs_at ON logs (logged_at); PRAGMA journal_mode = WAL;",
        )
        .await;
        let [earlier, later, erasure] = common::scrub::overlapping_selections();
        let path = dir.path().join("data.db");
        let (a, b, c) = (
            Sqlite::open(&path, &Limits::default()).await.unwrap(),
            Sqlite::open(&path, &Limits::default()).await.unwrap(),
            Sqlite::open(&path, &Limits::default()).await.unwrap(),
        );
        let limits = Limits { max_batch: 2_000, ..Limits::default() };
        let small = Limits { initial_batch: 50, min_batch: 10, max_batch: 50, ..Limits::default() };
        let (a, b, c) = tokio::join!(
            a.run(&earlier, &Action::Delete, &limits, 0, |_| {}),
            b.run(&later, &Action::Delete, &limits, 0, |_| {}),
            c.run(&erasure, &Action::Delete, &small, 0, |_| {}),
        );
        let left = ids(&db, "SELECT id FROM logs").await;
        common::scrub::check_overlapping_runs([a.unwrap(), b.unwrap(), c.unwrap()], left, 100_000);
    });
}

/// Generated columns, stored and virtual: an anonymization rule on one is
/// refused before any change, naming the column; selecting rows by one
/// works like any other column.
#[test]
fn generated_columns_are_refused_for_anonymization_and_usable_for_selection() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = database(
            &dir,
            "CREATE TABLE members (id INTEGER PRIMARY KEY, email TEXT NOT NULL,
                                   email_key TEXT GENERATED ALWAYS AS (lower(email)) STORED,
                                   domain TEXT GENERATED ALWAYS AS (substr(email, instr(email, '@') + 1)) VIRTUAL, closed_at TEXT);
             INSERT INTO members (email, closed_at) VALUES ('Jane@Example.com', '2020-01-01'), ('bob@example.com', '2020-01-01'),
                                                           ('carol@example.com', '2030-01-01');",
        )
        .await;
        let expired = Selection { table: table("members"), older_than: Some((id("closed_at"), cutoff())), subject: vec![], keep_newer_than: None, held: vec![], guards: vec![] };
        let snapshot = "SELECT id FROM members WHERE email LIKE '%@example.com' AND email_key = lower(email)";
        let before = ids(&db, snapshot).await;
        for field in ["email_key", "domain"] {
            let rules = vec![FieldRule { field: id(field), strategy: AnonymizeStrategy::Fixed, value: Some("x".into()) }];
            config_error(db.run(&expired, &Action::Anonymize { rules, salt: String::new() }, &Limits::default(), 0, |_| {}).await, &[field, "generated column", "cannot be anonymized"]);
        }
        assert_eq!(ids(&db, snapshot).await, before, "nothing changed");
        let rules = vec![FieldRule { field: id("email"), strategy: AnonymizeStrategy::Hash, value: None }];
        let out = db.run(&expired, &Action::Anonymize { rules, salt: "s".into() }, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (2, 0));
        assert_eq!(ids(&db, "SELECT id FROM members WHERE email_key LIKE 'anon-%'").await, BTreeSet::from([1, 2]));
        db.execute_batch("INSERT INTO members (email) VALUES ('Dave@Example.com'), ('erin@example.net')").await.unwrap();
        for (field, value, gone) in [("email_key", "dave@example.com", 4), ("domain", "example.net", 5)] {
            let erase = Selection { older_than: None, subject: vec![(id(field), vec![value.into()])], ..expired.clone() };
            let out = db.run(&erase, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
            assert_eq!((out.records_done, out.remaining), (1, 0), "erased by {field}");
            assert!(!ids(&db, "SELECT id FROM members").await.contains(&gone));
        }
        assert_eq!(ids(&db, "SELECT id FROM members").await, BTreeSet::from([1, 2, 3]));
    });
}

#[test]
fn a_driver_is_built_from_the_api_types() {
    use lethe::{
        api::{DataStoreSpec, DatasetSpec},
        scrub::driver::{self, Credentials, Driver},
    };
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shop.db");
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE tracking_events (id INTEGER PRIMARY KEY, customer_id INTEGER, recorded_at TEXT);
                            INSERT INTO tracking_events VALUES (1, 1, '2020-01-01'), (2, 1, '2030-01-01');")
            .unwrap();
        let store: DataStoreSpec = serde_yaml::from_str(&format!("type: sqlite\nsqlite: {{path: {}}}\n", path.display())).unwrap();
        let dataset: DatasetSpec = serde_yaml::from_str(
            "storeRef: {name: shop}\ncategories: [tracking]\ntable: {name: tracking_events}\ntimestamps: {created: recorded_at}\nsubjectFields: {user_id: customer_id}\n",
        )
        .unwrap();
        let db = Driver::connect(&store, &Credentials::default()).await.unwrap();
        let table = driver::table(&dataset).unwrap();
        assert!(db.probe(&table).await.unwrap().can_delete);
        let sel = Selection {
            table,
            older_than: Some((dataset.timestamps.created.clone().unwrap(), cutoff())),
            subject: vec![],
            keep_newer_than: None,
            held: vec![], guards: vec![],
        };
        assert_eq!(db.plan(&sel).await.unwrap().selected, 1, "the dry run counts and changes nothing");
        assert_eq!(db.count(&sel).await.unwrap(), 1);
        let out = db.run(&sel, &Action::Delete, &driver::limits(&store.limits), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (1, 0));
        // An S3 store without credentials says what it needs.
        let s3: DataStoreSpec = serde_yaml::from_str("type: s3\ns3: {region: eu-west-1}\n").unwrap();
        match Driver::connect(&s3, &Credentials::default()).await {
            Err(ScrubError::Config(m)) => assert!(m.contains("secretRef"), "{m}"),
            _ => panic!("an s3 store without credentials connects"),
        }
    });
}

/// Numbers in a time column count seconds unless the Dataset's
/// `unixTimeUnit` says milliseconds; text times in the same column are read
/// as text whatever it says. A unit the newest number contradicts is
/// refused before anything changes.
#[test]
fn numeric_times_count_the_datasets_unit() {
    use lethe::{
        api::{DataStoreSpec, DatasetSpec},
        scrub::driver::{Credentials, Driver},
    };
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stamps.db");
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(&format!(
                "CREATE TABLE stamps_ms (id INTEGER PRIMARY KEY, user_id INTEGER, created, issued);
                 INSERT INTO stamps_ms VALUES {};
                 INSERT INTO stamps_ms VALUES (1000, 2, '2025-12-31T23:59:59Z', '2025-01-01'), (1001, 2, '2026-01-01T00:00:01Z', '2025-01-01');
                 CREATE TABLE stamps_s (id INTEGER PRIMARY KEY, user_id INTEGER, created INTEGER, issued INTEGER);
                 INSERT INTO stamps_s VALUES {};",
                unix_time_values(1),
                unix_time_values(1000)
            ))
            .unwrap();
        let store: DataStoreSpec = serde_yaml::from_str(&format!("type: sqlite\nsqlite: {{path: {}}}\n", path.display())).unwrap();
        let driver = |unit: &str| {
            let dataset: DatasetSpec = serde_yaml::from_str(&format!(
                "storeRef: {{name: s}}\ncategories: [tracking]\ntable: {{name: stamps_ms}}\ntimestamps: {{created: created{unit}}}\n"
            ))
            .unwrap();
            let store = store.clone();
            async move { Driver::connect(&store, &Credentials::default()).await.unwrap().for_dataset(&dataset) }
        };
        let ids = |table: &str| -> BTreeSet<i64> {
            let c = rusqlite::Connection::open(&path).unwrap();
            let mut q = c.prepare(&format!("SELECT id FROM {table}")).unwrap();
            q.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
        };
        let (ms, s) = (unix_time_selection("stamps_ms"), unix_time_selection("stamps_s"));
        let every = (ids("stamps_ms"), ids("stamps_s"));
        let (seconds, millis) = (driver("").await, driver(", unixTimeUnit: Milliseconds").await);
        config_error(seconds.plan(&ms).await, &["created", "after the year 5000"]);
        config_error(seconds.run(&ms, &Action::Delete, &Limits::default(), 0, |_| {}).await, &["after the year 5000"]);
        config_error(millis.plan(&s).await, &["created", "likely counts Seconds"]);
        config_error(millis.run(&s, &Action::Delete, &Limits::default(), 0, |_| {}).await, &["likely counts Seconds"]);
        assert_eq!((ids("stamps_ms"), ids("stamps_s")), every, "nothing changed");

        let mut kept = unix_time_kept(1);
        kept.insert(1001);
        let plan = millis.plan(&ms).await.unwrap();
        assert_eq!(plan.selected as usize, every.0.len() - kept.len());
        let out = millis.run(&ms, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (plan.selected, 0));
        assert_eq!(ids("stamps_ms"), kept);
        seconds.run(&s, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!(ids("stamps_s"), unix_time_kept(1000));
    });
}

/// A database file as the shared SQL checks use it.
struct LiteStore(std::path::PathBuf);

impl common::scrub::SqlStore for LiteStore {
    async fn exec(&self, sql: &str) {
        rusqlite::Connection::open(&self.0).unwrap().execute_batch(sql).unwrap()
    }

    async fn ids(&self, sql: &str) -> BTreeSet<i64> {
        ids(&Sqlite::open(&self.0, &Limits::default()).await.unwrap(), sql).await
    }

    async fn driver(&self, unit: Option<lethe::api::UnixTimeUnit>) -> lethe::scrub::driver::Driver {
        lethe::scrub::driver::Driver::Sqlite(
            Sqlite::open(&self.0, &Limits::default()).await.unwrap().with_unix_time(unit),
        )
    }
}

/// See [`common::scrub::unique_keys_of_several_columns_are_checked_before_anonymizing`].
#[test]
fn unique_keys_of_several_columns_are_checked_before_anonymizing() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = LiteStore(dir.path().join("data.db"));
        common::scrub::unique_keys_of_several_columns_are_checked_before_anonymizing(&store, "TEXT").await;
    });
}

/// See [`common::scrub::unique_keys_on_generated_columns_are_checked_as_the_server_computes_them`].
#[test]
fn unique_keys_on_generated_columns_are_checked_as_the_server_computes_them() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = LiteStore(dir.path().join("data.db"));
        common::scrub::unique_keys_on_generated_columns_are_checked_as_the_server_computes_them(
            &store,
            "TEXT",
            "varchar(80)",
            false,
        )
        .await;
    });
}

/// See [`common::scrub::unique_keys_on_generated_columns_are_checked_as_the_server_computes_them`]:
/// a key on a generated column computed from another.
#[test]
fn unique_keys_on_chained_generated_columns_are_checked_as_the_server_computes_them() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = LiteStore(dir.path().join("data.db"));
        common::scrub::unique_keys_on_generated_columns_are_checked_as_the_server_computes_them(
            &store,
            "TEXT",
            "varchar(80)",
            true,
        )
        .await;
    });
}

/// See [`common::scrub::a_generated_key_the_check_cannot_restate_is_judged_by_its_columns`].
#[test]
fn a_generated_key_the_check_cannot_restate_is_judged_by_its_columns() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = LiteStore(dir.path().join("data.db"));
        common::scrub::a_generated_key_the_check_cannot_restate_is_judged_by_its_columns(&store, "TEXT").await;
    });
}

/// Foreign keys are introspected (for the erasure's order and its warning
/// about keys no relation declares) and hold as the schema declares them,
/// whatever the application that wrote the file enables on its own
/// connections: a parent whose records
/// another table still references without a cascade is refused, naming
/// the reason and what to do, and nothing is deleted; children first, then
/// the parents, and the cascade takes the expired customer's session. A
/// key SQLite cannot enforce is refused, saying so.
#[test]
fn foreign_keys_are_introspected_and_enforced_as_declared() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = database(
            &dir,
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, seen TEXT NOT NULL);
             CREATE TABLE invoices (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers (id));
             CREATE TABLE sessions (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers ON DELETE CASCADE);
             INSERT INTO customers VALUES (1, '2020-01-01'), (2, '2020-01-01'), (3, '2030-01-01');
             INSERT INTO invoices VALUES (10, 2);
             INSERT INTO sessions VALUES (20, 1), (21, 3);",
        )
        .await;
        let found = db.foreign_keys(&table("customers")).await.unwrap();
        assert_eq!(found, vec![("invoices".into(), "customers".into()), ("sessions".into(), "customers".into())]);
        assert_eq!(db.foreign_keys(&table("sessions")).await.unwrap(), vec![("sessions".into(), "customers".into())]);
        // The sessions' key names no parent column: it references the primary key.
        let key = |t: &str, restricts| lethe::scrub::ReferencingKey {
            schema: None,
            table: t.into(),
            columns: vec!["customer_id".into()],
            references: vec!["id".into()],
            restricts,
            restricts_update: true,
        };
        let found = db.referencing_keys(&table("customers")).await.unwrap();
        assert_eq!(found, [key("invoices", true), key("sessions", false)]);
        let customers = Selection {
            table: table("customers"),
            older_than: Some((id("seen"), cutoff())),
            subject: vec![],
            keep_newer_than: None,
            held: vec![],
            guards: vec![],
        };
        config_error(
            db.run(&customers, &Action::Delete, &Limits::default(), 0, |_| {}).await,
            &["FOREIGN KEY", "still referenced"],
        );
        assert_eq!(ids(&db, "SELECT id FROM customers").await, BTreeSet::from([1, 2, 3]), "nothing deleted");
        assert_eq!(ids(&db, "SELECT id FROM sessions").await, BTreeSet::from([20, 21]));
        let invoices = Selection {
            table: table("invoices"),
            older_than: None,
            subject: vec![(id("customer_id"), vec!["2".into()])],
            ..customers.clone()
        };
        db.run(&invoices, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        let out = db.run(&customers, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (2, 0));
        assert_eq!(ids(&db, "SELECT id FROM customers").await, BTreeSet::from([3]));
        assert_eq!(ids(&db, "SELECT id FROM sessions").await, BTreeSet::from([21]), "the cascade took session 20");

        // A key SQLite cannot enforce (its parent column is not unique),
        // which an application that never enables keys does not notice.
        let dir = tempfile::tempdir().unwrap();
        let db = database(
            &dir,
            "PRAGMA foreign_keys = OFF;
             CREATE TABLE events (id INTEGER PRIMARY KEY, seen TEXT NOT NULL, code TEXT);
             CREATE TABLE notes (id INTEGER PRIMARY KEY, code TEXT REFERENCES events (code));
             INSERT INTO events VALUES (1, '2020-01-01', 'a'), (2, '2030-01-01', 'b');",
        )
        .await;
        let events = Selection { table: table("events"), ..customers };
        config_error(
            db.run(&events, &Action::Delete, &Limits::default(), 0, |_| {}).await,
            &["foreign key mismatch", "neither the primary key nor unique", "correct the declaration"],
        );
        assert_eq!(ids(&db, "SELECT id FROM events").await, BTreeSet::from([1, 2]), "nothing deleted");
    });
}

/// See [`common::scrub::a_hashed_value_used_again_takes_a_fresh_hash`].
#[test]
fn a_hashed_value_used_again_takes_a_fresh_hash() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = LiteStore(dir.path().join("data.db"));
        common::scrub::a_hashed_value_used_again_takes_a_fresh_hash(&store, "TEXT").await;
    });
}

/// See [`common::scrub::a_hashed_value_used_again_under_indexes_on_expressions_or_conditions_takes_a_fresh_hash`].
#[test]
fn a_hashed_value_used_again_under_indexes_on_expressions_or_conditions_takes_a_fresh_hash() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = LiteStore(dir.path().join("data.db"));
        common::scrub::a_hashed_value_used_again_under_indexes_on_expressions_or_conditions_takes_a_fresh_hash(
            &store, "TEXT",
        )
        .await;
    });
}

/// Unique indexes on an expression (`lower(email)`) or with a condition
/// (`(nick COLLATE NOCASE) WHERE gone_at IS NULL`) are checked before any
/// change, as SQLite applies them: the index's own keys, collation and
/// condition on each changed record's new values, beside every other
/// record. A `fixed` or `null` rule that would put two records on one
/// entry is refused in the plan and in the run, naming the index; where
/// the condition leaves the records out, or a record meets only itself,
/// the rule runs. A table whose rows are addressed by a composite key is
/// checked the same way, under the collation its column declares. An index the check cannot restate (a column
/// named as its own names) is left to the batches: the server refuses the
/// batch, which stays unchanged.
#[test]
fn unique_indexes_on_expressions_or_with_conditions_are_checked_before_anonymizing() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = database(
            &dir,
            "CREATE TABLE members (id INTEGER PRIMARY KEY, email TEXT, nick TEXT, gone_at TEXT, left_at TEXT);
             CREATE UNIQUE INDEX members_email ON members (lower(email));
             CREATE UNIQUE INDEX members_live_nick ON members (nick COLLATE NOCASE DESC) WHERE gone_at IS NULL;
             INSERT INTO members VALUES (1, 'a@example.com', 'ann', NULL, '2020-01-01'),
                                        (2, 'b@example.com', 'bo', NULL, '2020-01-01'),
                                        (3, 'gone', 'Cy', NULL, NULL),
                                        (4, 'd@example.com', 'cy', '2020-01-01', '2020-01-01'),
                                        (5, 'e@example.com', 'eve', '2020-01-01', '2020-01-01');
             CREATE TABLE tagged (a TEXT, b TEXT, tag TEXT COLLATE NOCASE, label TEXT, left_at TEXT,
                                  PRIMARY KEY (a, b)) WITHOUT ROWID;
             CREATE UNIQUE INDEX tagged_tag ON tagged (tag) WHERE left_at IS NOT NULL;
             CREATE UNIQUE INDEX tagged_label ON tagged (lower(label));
             INSERT INTO tagged VALUES ('x', '1', 't1', 'l1', '2020-01-01'), ('x', '2', 't2', 'l2', '2020-01-01');
             CREATE TABLE odd (id INTEGER PRIMARY KEY, lethe_r TEXT, left_at TEXT);
             CREATE UNIQUE INDEX odd_r ON odd (lower(lethe_r));
             INSERT INTO odd VALUES (1, 'p', '2020-01-01'), (2, 'q', '2020-01-01');",
        )
        .await;
        let of = |name: &str, column: &str, ids: &[&str]| Selection {
            table: table(name),
            older_than: Some((id("left_at"), cutoff())),
            subject: vec![(id(column), ids.iter().map(|i| i.to_string()).collect())],
            keep_newer_than: None,
            held: vec![],
            guards: vec![],
        };
        let members = |ids: &[&str]| of("members", "id", ids);
        let rule = |field: &str, strategy, value: Option<&str>| Action::Anonymize {
            rules: vec![FieldRule { field: id(field), strategy, value: value.map(String::from) }],
            salt: "s".into(),
        };
        let fixed = |field: &str, value: &str| rule(field, AnonymizeStrategy::Fixed, Some(value));
        let email = ["email", "unique key members_email", "use hash"];
        let nick = ["unique key members_live_nick", "where its condition holds"];
        for (sel, action, says) in [
            // Two records given one address; one given an address another
            // holds, and one given it in capitals, which only `lower` makes
            // the same.
            (members(&["1", "2"]), fixed("email", "x"), &email[..]),
            (members(&["1"]), fixed("email", "gone"), &email[..]),
            (members(&["1"]), fixed("email", "GONE"), &email[..]),
            // Two live members given one nickname; one given a live
            // member's nickname in capitals (the index's collation).
            (members(&["1", "2"]), fixed("nick", "x"), &nick[..]),
            (members(&["1"]), fixed("nick", "CY"), &nick[..]),
            // A member gone, brought under the condition beside a live one
            // holding the same nickname under the index's collation.
            (members(&["4"]), rule("gone_at", AnonymizeStrategy::Null, None), &["gone_at", "members_live_nick"][..]),
            (of("tagged", "b", &["2"]), fixed("tag", "T1"), &["tag", "unique key tagged_tag"][..]),
        ] {
            config_error(db.pending(&sel, &action).await, says);
            config_error(db.run(&sel, &action, &Limits::default(), 0, |_| {}).await, says);
        }
        let as_inserted =
            "SELECT id FROM members WHERE email LIKE '%@example.com' AND nick IN ('ann', 'bo', 'cy', 'eve')
                              AND (gone_at IS NULL) = (id < 4)";
        assert_eq!(ids(&db, as_inserted).await, BTreeSet::from([1, 2, 4, 5]), "nothing changed");
        assert_eq!(
            ids(&db, "SELECT count(*) FROM tagged WHERE tag COLLATE BINARY IN ('t1', 't2')").await,
            BTreeSet::from([2])
        );
        // Members gone, whom the condition leaves out; a record's own
        // values in other capitals; a composite-key record's own tag.
        for (sel, action, done) in [
            (members(&["4", "5"]), fixed("nick", "x"), 2),
            (members(&["2"]), fixed("email", "B@EXAMPLE.COM"), 1),
            (members(&["1"]), fixed("nick", "ANN"), 1),
            (of("tagged", "b", &["1"]), fixed("label", "L1"), 1),
        ] {
            let out = db.run(&sel, &action, &Limits::default(), 0, |_| {}).await.unwrap();
            assert_eq!((out.records_done, out.remaining), (done, 0));
        }
        let changed = "SELECT id FROM members WHERE nick = 'x' OR email = 'B@EXAMPLE.COM' OR nick = 'ANN'";
        assert_eq!(ids(&db, changed).await, BTreeSet::from([1, 2, 4, 5]));
        assert_eq!(ids(&db, "SELECT count(*) FROM tagged WHERE label = 'L1'").await, BTreeSet::from([1]));
        // Left to the batches: not refused ahead, refused by the server.
        let odd = of("odd", "id", &["1", "2"]);
        assert_eq!(db.pending(&odd, &fixed("lethe_r", "x")).await.unwrap(), 2);
        let refused = db.run(&odd, &fixed("lethe_r", "x"), &Limits::default(), 0, |_| {}).await.unwrap_err();
        assert!(refused.to_string().contains("UNIQUE constraint failed"), "{refused}");
        assert_eq!(ids(&db, "SELECT id FROM odd WHERE lethe_r IN ('p', 'q')").await, BTreeSet::from([1, 2]));
    });
}

/// Unique indexes on expressions the check ahead cannot restate: one
/// reading a number column a `fixed` rule sets (SQLite stores the text as a
/// number, which the check would compare as text), one reading a generated
/// column computed from the column a rule changes, and one on a function
/// only the application that wrote it registers. Each is left to the
/// batches, so the plan counts the records; the server then refuses the
/// first batch, the run fails with its message, and every record stays as
/// it was. A generated unique key on that function is judged by the column
/// it is computed from, refused ahead where two records would share it.
#[test]
fn unique_indexes_the_check_cannot_restate_are_left_to_the_server_and_nothing_changes() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = rusqlite::Connection::open(dir.path().join("data.db")).unwrap();
            let flags = rusqlite::functions::FunctionFlags::SQLITE_UTF8
                | rusqlite::functions::FunctionFlags::SQLITE_DETERMINISTIC;
            c.create_scalar_function("norm", 1, flags, |f| Ok(f.get::<String>(0)?.to_lowercase())).unwrap();
            c.execute_batch(
                "CREATE TABLE apps (id INTEGER PRIMARY KEY, email TEXT, left_at TEXT);
                 CREATE UNIQUE INDEX apps_email ON apps (norm(email));
                 INSERT INTO apps VALUES (1, 'a', '2020-01-01'), (2, 'b', '2020-01-01'), (3, 'C', NULL);
                 CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT,
                                     k TEXT GENERATED ALWAYS AS (norm(email)) STORED UNIQUE, left_at TEXT);
                 INSERT INTO users (id, email, left_at) VALUES (1, 'a', '2020-01-01'), (2, 'b', '2020-01-01');",
            )
            .unwrap();
        }
        let db = database(
            &dir,
            "CREATE TABLE codes (id INTEGER PRIMARY KEY, code INTEGER, left_at TEXT);
             CREATE UNIQUE INDEX codes_abs ON codes (abs(code));
             INSERT INTO codes VALUES (1, 5, '2020-01-01'), (2, 6, '2020-01-01'), (3, -7, NULL);
             CREATE TABLE gens (id INTEGER PRIMARY KEY, email TEXT, k TEXT GENERATED ALWAYS AS (lower(email)) VIRTUAL,
                                left_at TEXT);
             CREATE UNIQUE INDEX gens_k ON gens (upper(k));
             INSERT INTO gens (id, email, left_at) VALUES (1, 'a', '2020-01-01'), (2, 'b', '2020-01-01'), (3, 'C', NULL);",
        )
        .await;
        let fixed = |field: &str, value: &str| Action::Anonymize {
            rules: vec![FieldRule { field: id(field), strategy: AnonymizeStrategy::Fixed, value: Some(value.into()) }],
            salt: "s".into(),
        };
        let expired = |name: &str| Selection {
            table: table(name),
            older_than: Some((id("left_at"), cutoff())),
            subject: vec![],
            keep_newer_than: None,
            held: vec![],
            guards: vec![],
        };
        // Records 1 and 2 given one value, which also meets record 3's.
        for (name, action, before, says) in [
            (
                "codes",
                fixed("code", "7"),
                "SELECT id FROM codes WHERE code IN (5, 6, -7) AND abs(code) = id + 4",
                "UNIQUE constraint failed: index 'codes_abs'",
            ),
            (
                "gens",
                fixed("email", "c"),
                "SELECT id FROM gens WHERE email IN ('a', 'b', 'C') AND k = lower(email)",
                "UNIQUE constraint failed: index 'gens_k'",
            ),
            ("apps", fixed("email", "c"), "SELECT id FROM apps WHERE email IN ('a', 'b', 'C')", "function: norm"),
        ] {
            let sel = expired(name);
            assert_eq!(ids(&db, before).await, BTreeSet::from([1, 2, 3]), "{name} as inserted");
            assert_eq!(db.pending(&sel, &action).await.unwrap(), 2, "{name}: the plan counts both records");
            config_error(db.run(&sel, &action, &Limits::default(), 0, |_| {}).await, &["batch", says]);
            assert_eq!(ids(&db, before).await, BTreeSet::from([1, 2, 3]), "{name}: nothing changed");
        }
        // A generated unique key on that function: judged by the column it
        // is computed from, which two records would share.
        let users = "SELECT id FROM users WHERE email IN ('a', 'b') AND k = email";
        for refused in [
            db.pending(&expired("users"), &fixed("email", "c")).await.map(|_| ()),
            db.run(&expired("users"), &fixed("email", "c"), &Limits::default(), 0, |_| {}).await.map(|_| ()),
        ] {
            config_error(refused, &["email", "unique key"]);
        }
        assert_eq!(ids(&db, users).await, BTreeSet::from([1, 2]), "users: nothing changed");
    });
}

/// A trigger that writes something else after the update: the records
/// never read as anonymized, and SQLite counts them changed all the same,
/// so each batch would select them again. The first batch notices, the
/// run stops with the reason, and that batch is undone.
#[test]
fn an_anonymization_a_trigger_undoes_stops_with_the_reason() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = database(
            &dir,
            "CREATE TABLE profiles (id INTEGER PRIMARY KEY, tier TEXT, nick TEXT, left_at TEXT);
             INSERT INTO profiles VALUES (1, 'a', 'ann', '2020-01-01'), (2, 'b', 'bob', '2020-01-01'), (3, 'c', 'cy', NULL);
             CREATE TRIGGER shout AFTER UPDATE OF tier ON profiles
               BEGIN UPDATE profiles SET tier = upper(NEW.tier) WHERE rowid = NEW.rowid; END;",
        )
        .await;
        let left = Selection {
            table: table("profiles"),
            older_than: Some((id("left_at"), cutoff())),
            subject: vec![],
            keep_newer_than: None,
            held: vec![], guards: vec![],
        };
        let rule = |field: &str| FieldRule { field: id(field), strategy: AnonymizeStrategy::Fixed, value: Some("y".into()) };
        let loud = Action::Anonymize { rules: vec![rule("tier"), rule("nick")], salt: String::new() };
        config_error(db.run(&left, &loud, &Limits::default(), 0, |_| {}).await, &["2 of 2", "still do not read as anonymized"]);
        assert_eq!(ids(&db, "SELECT id FROM profiles WHERE tier IN ('a', 'b', 'c') AND nick <> 'y'").await, BTreeSet::from([1, 2, 3]));
        // A rule the trigger leaves alone runs to the end.
        let quiet = Action::Anonymize { rules: vec![rule("nick")], salt: String::new() };
        let out = db.run(&left, &quiet, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (2, 0));
        assert_eq!(ids(&db, "SELECT id FROM profiles WHERE nick = 'y'").await, BTreeSet::from([1, 2]));
    });
}

/// A trigger that inserts a copy of every record deleted would keep a run
/// going forever; it stops once it has deleted more than twice what the
/// table held, with the reason, and nothing newer than the cutoff goes.
#[test]
fn a_trigger_that_inserts_what_is_deleted_stops_the_run_instead_of_looping() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = database(
            &dir,
            "CREATE TABLE echo (id INTEGER PRIMARY KEY, at TEXT NOT NULL);
             WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 2000)
             INSERT INTO echo SELECT n, CASE WHEN n % 2 = 0 THEN '2020-01-01' ELSE '2030-01-01' END FROM g;
             CREATE TRIGGER echo_again AFTER DELETE ON echo BEGIN INSERT INTO echo (at) VALUES (OLD.at); END;",
        )
        .await;
        let newer = "SELECT id FROM echo WHERE at >= '2030-01-01'";
        let kept = ids(&db, newer).await;
        assert_eq!(kept.len(), 1000);
        let sel = older_than("echo", "at");
        let mut done = 0;
        let err = db.run(&sel, &Action::Delete, &Limits::default(), 0, |p| done = p.records_done).await;
        config_error(err, &["more than twice what the table held", "trigger"]);
        assert!(done > 4_000, "stopped past twice the table's 2,000 records: {done}");
        assert_eq!(ids(&db, newer).await, kept, "nothing newer than the cutoff deleted");
    });
}

/// See [`common::scrub::records_rows_still_reference_are_kept_and_the_rest_deleted`].
#[test]
fn records_rows_still_reference_are_kept_and_the_rest_deleted() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = LiteStore(dir.path().join("data.db"));
        common::scrub::records_rows_still_reference_are_kept_and_the_rest_deleted(&store, "TEXT").await;
    });
}

/// See [`common::scrub::records_held_rows_of_another_table_reference_are_kept`].
#[test]
fn records_held_rows_of_another_table_reference_are_kept() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = LiteStore(dir.path().join("data.db"));
        common::scrub::records_held_rows_of_another_table_reference_are_kept(&store, "TEXT").await;
    });
}
