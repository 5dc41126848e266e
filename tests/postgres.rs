//! The PostgreSQL driver against a real PostgreSQL 15 server on loopback.
//! Every test checks the exact final state of the table, not just counts:
//! nothing newer than the cutoff, nothing held and nothing under minimum
//! retention is ever deleted, and everything else selected is gone.

mod common;

use std::{collections::BTreeSet, time::Duration};

use chrono::{DateTime, TimeZone, Utc};
use common::pg::PgServer;
use common::scrub::{
    SqlStore, config_error, contact_anonymization, cutoff, expiry_selection, id, older_than, patiently, rt, selected,
    stop_point, table, unix_cutoff,
};
use lethe::{
    api::{AnonymizeStrategy, UnixTimeUnit},
    scrub::{
        Action, FieldRule, Limits, Lookup, ScrubError, Selection, Table,
        driver::Driver,
        postgres::{ConnectOptions, Postgres},
    },
};
use proptest::prelude::*;

async fn connect(pg: &PgServer) -> Postgres {
    Postgres::connect(&pg.options(), &Limits::default()).await.unwrap()
}

async fn ids(db: &Postgres, sql: &str) -> BTreeSet<i64> {
    db.client().query(sql, &[]).await.unwrap().iter().map(|r| r.get::<_, i64>(0)).collect()
}

/// One generated row: id, user, created (days from the cutoff, or NULL),
/// issued (days from the minimum-retention boundary, or NULL).
#[derive(Debug, Clone)]
struct Row {
    id: i64,
    user: i32,
    created: Option<i32>,
    issued: Option<i32>,
}

fn rows() -> impl Strategy<Value = Vec<Row>> {
    prop::collection::vec(
        (0i32..20, prop::option::weighted(0.9, -50i32..50), prop::option::weighted(0.9, -50i32..50)),
        0..300,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (user, created, issued))| Row { id: i as i64, user, created, issued })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The invariants, over generated tables: exactly the rows older than
    /// the cutoff, not held and not under minimum retention are deleted.
    #[test]
    fn retention_deletes_exactly_the_expired_unheld_rows(
        data in rows(),
        held in prop::collection::btree_set(0i32..20, 0..5),
        with_minimum in any::<bool>(),
        batch in 1i64..50,
        block_pass in any::<bool>(),
    ) {
        let pg = shared_pg();
        rt().block_on(async {
            let db = connect(pg).await;
            db.execute_batch("DROP TABLE IF EXISTS events; CREATE TABLE events (id bigint PRIMARY KEY, user_id int, created_at timestamptz, issued_at timestamptz); CREATE INDEX ON events (created_at)").await.unwrap();
            let minimum = cutoff() - chrono::Duration::days(20);
            for r in &data {
                let created = r.created.map(|d| cutoff() + chrono::Duration::hours(d as i64 * 12));
                let issued = r.issued.map(|d| minimum + chrono::Duration::hours(d as i64 * 12));
                db.client().execute("INSERT INTO events VALUES ($1, $2, $3, $4)", &[&r.id, &r.user, &created, &issued]).await.unwrap();
            }
            let sel = expiry_selection("events", &held, with_minimum.then_some(minimum));
            // Both ways of finding batches: block ranges, and index-found rows.
            let limits = Limits { initial_batch: batch, min_batch: 1, block_pass_above: if block_pass { 0.0 } else { f64::INFINITY }, ..Limits::default() };
            let planned = db.plan(&sel).await.unwrap();
            let outcome = db.run(&sel, &Action::Delete, &limits, 0, |_| {}).await.unwrap();

            let survives = |r: &Row| !selected(r.user, r.created.map(i64::from), r.issued.map(i64::from), &held, with_minimum);
            let expected: BTreeSet<i64> = data.iter().filter(|r| survives(r)).map(|r| r.id).collect();
            let actual = ids(&db, "SELECT id FROM events").await;
            assert_eq!(actual, expected, "exact survivors");
            assert_eq!(outcome.records_done as usize, data.len() - expected.len());
            assert_eq!(outcome.records_done, planned.selected, "the plan predicted the run");
            assert_eq!(outcome.remaining, 0);
            // A block pass's last count also reads the oldest record left
            // past the cutoff (held or under minimum retention).
            let oldest = data.iter().filter(|r| survives(r)).filter_map(|r| r.created).filter(|d| *d < 0).min();
            let oldest = oldest.map(|d| cutoff() + chrono::Duration::hours(d as i64 * 12));
            assert_eq!(outcome.oldest_past_cutoff, block_pass.then_some(oldest));
        });
    }

    /// See [`common::scrub::referring_tables_keep_exactly_what_they_must`]:
    /// in block ranges and through the index.
    #[test]
    fn retention_keeps_exactly_what_held_and_refusing_rows_refer_to(
        case in common::scrub::referring(),
        batch in 1i64..50,
        block_pass in any::<bool>(),
    ) {
        let limits = Limits { initial_batch: batch, min_batch: 1, block_pass_above: if block_pass { 0.0 } else { f64::INFINITY }, ..Limits::default() };
        let literal = |t: DateTime<Utc>| format!("'{}+00'", t.format("%Y-%m-%d %H:%M:%S"));
        rt().block_on(common::scrub::referring_tables_keep_exactly_what_they_must(&PgStore(shared_pg()), "timestamptz", literal, &case, &limits));
    }

    /// The same invariants for anonymization: exactly the selected rows
    /// change, in every field of the rule set; no row is deleted; the
    /// others are byte for byte as they were; a second run changes nothing.
    #[test]
    fn anonymization_changes_exactly_the_expired_unheld_rows(
        data in rows(),
        held in prop::collection::btree_set(0i32..20, 0..5),
        with_minimum in any::<bool>(),
        batch in 1i64..50,
    ) {
        let pg = shared_pg();
        rt().block_on(async {
            let db = connect(pg).await;
            db.execute_batch("DROP TABLE IF EXISTS people; CREATE TABLE people (id bigint PRIMARY KEY, user_id int, created_at timestamptz, issued_at timestamptz, email varchar(40) NOT NULL UNIQUE, phone text, age int)").await.unwrap();
            let minimum = cutoff() - chrono::Duration::days(20);
            for r in &data {
                let created = r.created.map(|d| cutoff() + chrono::Duration::hours(d as i64 * 12));
                let issued = r.issued.map(|d| minimum + chrono::Duration::hours(d as i64 * 12));
                let phone = (r.id % 3 != 0).then(|| format!("+49 {}", r.id));
                db.client().execute(
                    "INSERT INTO people VALUES ($1, $2, $3, $4, 'user' || $1::bigint || '@example.com', $5, ($1::bigint % 4)::int)",
                    &[&r.id, &r.user, &created, &issued, &phone],
                ).await.unwrap();
            }
            let before = db.client().query("SELECT id, email, phone, age FROM people ORDER BY id", &[]).await.unwrap();
            let sel = expiry_selection("people", &held, with_minimum.then_some(minimum));
            let action = contact_anonymization();
            let limits = Limits { initial_batch: batch, min_batch: 1, ..Limits::default() };
            let pending = db.pending(&sel, &action).await.unwrap();
            let outcome = db.run(&sel, &action, &limits, 0, |_| {}).await.unwrap();

            let chosen = |r: &Row| selected(r.user, r.created.map(i64::from), r.issued.map(i64::from), &held, with_minimum);
            let after = db.client().query("SELECT id, email, phone, age FROM people ORDER BY id", &[]).await.unwrap();
            assert_eq!(after.len(), data.len(), "no row deleted");
            let mut hashes = BTreeSet::new();
            for ((r, b), a) in data.iter().zip(&before).zip(&after) {
                let (email, phone, age): (String, Option<String>, Option<i32>) = (a.get(1), a.get(2), a.get(3));
                if chosen(r) {
                    assert!(email.starts_with("anon-") && email.len() <= 40, "{email}");
                    assert!(hashes.insert(email), "hashes stay distinct");
                    assert_eq!((phone, age), (None, Some(0)));
                } else {
                    assert_eq!((email, phone, age), (b.get::<_, String>(1), b.get(2), b.get(3)), "row {} untouched", r.id);
                }
            }
            let expected = data.iter().filter(|r| chosen(r)).count() as i64;
            assert_eq!((outcome.records_done, outcome.remaining, pending), (expected, 0, expected));
            let again = db.run(&sel, &action, &limits, 0, |_| {}).await.unwrap();
            assert_eq!((again.records_done, again.remaining), (0, 0), "a second run changes nothing");
        });
    }
}

/// One server for the property test's many cases.
fn shared_pg() -> &'static PgServer {
    static PG: std::sync::OnceLock<PgServer> = std::sync::OnceLock::new();
    PG.get_or_init(PgServer::start)
}

#[test]
fn erasure_removes_a_subject_by_any_identifier_and_keeps_what_must_be_kept() {
    let pg = PgServer::start();
    rt().block_on(async {
        let db = connect(&pg).await;
        db.execute_batch(
            "CREATE TABLE invoices (id bigserial PRIMARY KEY, customer_id int NOT NULL, email text, issued_at timestamptz NOT NULL);
             INSERT INTO invoices (customer_id, email, issued_at) VALUES
               (42, 'jane@example.com', '2015-01-01'), (42, 'jane@example.com', '2025-06-01'),
               (7, 'jane@example.com', '2016-01-01'), (7, 'bob@example.com', '2016-01-01'),
               (8, 'x'' OR ''1''=''1', '2010-01-01');",
        )
        .await
        .unwrap();
        let minimum = Utc.with_ymd_and_hms(2019, 1, 1, 0, 0, 0).unwrap();
        let sel = Selection {
            table: table("invoices"),
            older_than: None,
            subject: vec![(id("customer_id"), vec!["42".into()]), (id("email"), vec!["jane@example.com".into()])],
            keep_newer_than: Some((id("issued_at"), minimum)),
            held: vec![], guards: vec![],
        };
        let plan = db.plan(&sel).await.unwrap();
        assert_eq!((plan.selected, plan.under_minimum), (2, 1));
        let out = db.run(&sel, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!(out.records_done, 2);
        let left = ids(&db, "SELECT id FROM invoices ORDER BY id").await;
        assert_eq!(left, BTreeSet::from([2, 4, 5]), "the 2025 invoice is under minimum retention; bob and the quote row are untouched");

        // A value that looks like SQL is only ever a value.
        let sneaky = Selection {
            subject: vec![(id("email"), vec!["x' OR '1'='1".into(), "' OR 1=1 --".into()])],
            keep_newer_than: None,
            ..sel.clone()
        };
        let out = db.run(&sneaky, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!(out.records_done, 1, "only the row whose email is literally that text");
        assert_eq!(ids(&db, "SELECT id FROM invoices ORDER BY id").await, BTreeSet::from([2, 4]));
    });
}

/// A server message that quotes a record's value does not carry it on.
/// PostgreSQL quotes the values it cannot take in the messages of its data
/// exceptions (SQLSTATE class 22): here triggers write each erased record's
/// address where a number or a time must go, or its number where a smaller
/// one must. The message keeps its kind, SQLSTATE and the names it gives,
/// never the value, and nothing is deleted.
#[test]
fn messages_quoting_a_records_value_leave_the_value_out() {
    rt().block_on(async {
        let db = connect(shared_pg()).await;
        db.execute_batch(
            "CREATE TABLE quoted_members (id int PRIMARY KEY, email text, phone bigint, joined_at timestamptz);
             CREATE TABLE quoted_audit (n int, at timestamptz);
             INSERT INTO quoted_members VALUES (1, 'o\"hara@example.com', 49301234567, '2015-01-01'),
                                               (2, 'kim@example.com', 5, '2015-01-01');
             CREATE FUNCTION quoted_as_number() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN INSERT INTO quoted_audit (n) VALUES (OLD.email::int); RETURN OLD; END $$;
             CREATE FUNCTION quoted_as_time() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN INSERT INTO quoted_audit (at) VALUES (OLD.email::timestamptz); RETURN OLD; END $$;
             CREATE FUNCTION quoted_too_large() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN INSERT INTO quoted_audit (n) VALUES (OLD.phone::text::int); RETURN OLD; END $$;",
        )
        .await
        .unwrap();
        let sel = Selection {
            table: table("quoted_members"),
            older_than: None,
            subject: vec![(id("email"), vec!["o\"hara@example.com".into()])],
            keep_newer_than: None,
            held: vec![],
            guards: vec![],
        };
        for (function, says) in [
            ("quoted_as_number", "invalid input syntax for type integer"),
            ("quoted_as_time", "invalid input syntax for type timestamp with time zone"),
            ("quoted_too_large", "out of range for type integer"),
        ] {
            db.execute_batch(&format!(
                "DROP TRIGGER IF EXISTS audit ON quoted_members;
                 CREATE TRIGGER audit BEFORE DELETE ON quoted_members FOR EACH ROW EXECUTE FUNCTION {function}();"
            ))
            .await
            .unwrap();
            let outcome = db.run(&sel, &Action::Delete, &Limits::default(), 0, |_| {}).await;
            let Err(ScrubError::Config(message)) = outcome else {
                panic!("{function}: a data exception is a configuration error: {outcome:?}");
            };
            assert!(
                message.contains(says) && message.contains("\"…\"") && message.contains("(22"),
                "{function}: {message}"
            );
            for personal in ["hara", "example", "4930"] {
                assert!(!message.contains(personal), "{function}: {message}");
            }
        }
        assert_eq!(ids(&db, "SELECT id::bigint FROM quoted_members").await, BTreeSet::from([1, 2]), "nothing deleted");
    });
}

#[test]
fn interrupted_runs_resume_to_the_exact_end_state() {
    let pg = PgServer::start();
    rt().block_on(async {
        let db = connect(&pg).await;
        // 1,000,000 rows, every even one past the cutoff; users 0..999, user 14 (even ids only) held.
        db.execute_batch(
            "CREATE TABLE logs (id bigint PRIMARY KEY, user_id int NOT NULL, logged_at timestamptz NOT NULL);
             INSERT INTO logs SELECT g, g % 1000, timestamptz '2026-01-01' + (CASE WHEN g % 2 = 0 THEN -1 ELSE 1 END) * (g % 500 + 1) * interval '1 hour'
               FROM generate_series(1, 1000000) g;
             CREATE INDEX ON logs (logged_at);",
        )
        .await
        .unwrap();
        let sel = Selection {
            table: table("logs"),
            older_than: Some((id("logged_at"), cutoff())),
            subject: vec![],
            keep_newer_than: None,
            held: vec![(id("user_id"), vec!["14".into()])], guards: vec![],
        };
        let planned = db.plan(&sel).await.unwrap().selected;
        assert_eq!(planned, 499_000, "every even id except user 14's 1000 rows");
        let newer_before = db.client().query_one("SELECT count(*) FROM logs WHERE logged_at >= '2026-01-01'", &[]).await.unwrap().get::<_, i64>(0);

        // Abort the run at pseudo-random points, as a killed scrub would stop.
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut aborts = 0;
        for _ in 0..12 {
            common::next_random(&mut seed);
            let after = Duration::from_millis(5 + seed % 60);
            let remaining = db.count(&sel).await.unwrap();
            let done_before = planned - remaining;
            // Every other attempt splits its block pass between two connections.
            let limits = Limits { max_batch: 5_000, connections: 1 + (seed % 2) as usize, ..Limits::default() };
            match tokio::time::timeout(after, db.run(&sel, &Action::Delete, &limits, done_before, |_| {})).await {
                Err(_) => {
                    aborts += 1;
                    // A statement already sent finishes on the server, commit
                    // or rollback, as it would after a killed process.
                    settle(&db).await;
                }
                Ok(r) => {
                    r.unwrap();
                }
            }
            // Between attempts the invariants hold.
            let newer = db.client().query_one("SELECT count(*) FROM logs WHERE logged_at >= '2026-01-01'", &[]).await.unwrap().get::<_, i64>(0);
            assert_eq!(newer, newer_before, "nothing newer than the cutoff deleted");
            let held = db.client().query_one("SELECT count(*) FROM logs WHERE user_id = 14", &[]).await.unwrap().get::<_, i64>(0);
            assert_eq!(held, 1000, "nothing held deleted");
        }
        assert!(aborts >= 10, "at least ten interruptions ({aborts})");
        let remaining = db.count(&sel).await.unwrap();
        let limits = Limits { connections: 2, ..Limits::default() };
        let out = db.run(&sel, &Action::Delete, &limits, planned - remaining, |_| {}).await.unwrap();
        assert_eq!(out.records_done, planned, "counts survive the interruptions");
        assert_eq!(out.remaining, 0);
        let total = db.client().query_one("SELECT count(*) FROM logs", &[]).await.unwrap().get::<_, i64>(0);
        assert_eq!(total, 1_000_000 - planned);
    });
}

/// An anonymization stopped at random points and run again ends exactly
/// where one uninterrupted run on an identical copy ends: the same hashes,
/// NULLs and fixed values on the same records, nothing else changed.
#[test]
fn an_interrupted_anonymization_ends_as_an_uninterrupted_one() {
    let pg = PgServer::start();
    rt().block_on(async {
        let db = connect(&pg).await;
        db.execute_batch(
            "CREATE TABLE contacts (id bigint PRIMARY KEY, user_id int NOT NULL, email varchar(40) UNIQUE, phone text, age int,
                                    created_at timestamptz NOT NULL);
             INSERT INTO contacts SELECT g, g % 1000, 'user' || g || '@example.com', '+49 30 ' || g, 20 + g % 50,
                 timestamptz '2026-01-01' + (CASE WHEN g % 2 = 0 THEN -1 ELSE 1 END) * (g % 500 + 1) * interval '1 hour'
               FROM generate_series(1, 200000) g;
             CREATE INDEX ON contacts (created_at);
             CREATE TABLE whole (LIKE contacts INCLUDING ALL); INSERT INTO whole SELECT * FROM contacts;
             ANALYZE contacts; ANALYZE whole;",
        )
        .await
        .unwrap();
        let held = BTreeSet::from([14]);
        let action = contact_anonymization();
        let whole = db.run(&expiry_selection("whole", &held, None), &action, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((whole.records_done, whole.remaining), (99_800, 0));

        let sel = expiry_selection("contacts", &held, None);
        let planned = db.pending(&sel, &action).await.unwrap();
        assert_eq!(planned, 99_800);
        let mut seed = 0x6a09e667f3bcc909u64;
        let mut aborts = 0;
        for _ in 0..12 {
            common::next_random(&mut seed);
            let remaining = db.pending(&sel, &action).await.unwrap();
            let limits = Limits {
                max_batch: 2_000,
                max_records_per_second: Some(2_000),
                block_pass_above: if seed.is_multiple_of(2) { 0.0 } else { f64::INFINITY },
                ..Limits::default()
            };
            // Each stop falls within 300 ms of the start or of one of the
            // first three batches: at most about 8,000 records an attempt,
            // so together the interrupted runs cannot reach the end.
            let (on_progress, stop) = stop_point((seed >> 8) % 4, Duration::from_millis((seed >> 16) % 300));
            let stopped = tokio::select! {
                _ = db.run(&sel, &action, &limits, planned - remaining, on_progress) => false,
                _ = stop => true,
            };
            if stopped {
                aborts += 1;
                settle(&db).await;
            }
        }
        assert!(aborts >= 10, "at least ten interruptions ({aborts})");
        let remaining = db.pending(&sel, &action).await.unwrap();
        println!("the interrupted runs anonymized {}", planned - remaining);
        let out = db.run(&sel, &action, &Limits::default(), planned - remaining, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (planned, 0));
        let differ = "SELECT count(*) FROM ((TABLE contacts EXCEPT TABLE whole) UNION ALL (TABLE whole EXCEPT TABLE contacts)) d";
        assert_eq!(ids(&db, differ).await, BTreeSet::from([0]), "the same end state");
        // Every hash is the salted hash of the record's address.
        let hashed = "SELECT count(*) FROM contacts
                       WHERE email = 'anon-' || left(encode(sha256(convert_to('pepper' || 'user' || id || '@example.com', 'UTF8')), 'hex'), 35)";
        assert_eq!(ids(&db, hashed).await, BTreeSet::from([planned]));
        let kept = "SELECT count(*) FROM contacts WHERE email = 'user' || id || '@example.com' AND phone IS NOT NULL AND age <> 0";
        assert_eq!(ids(&db, kept).await, BTreeSet::from([100_000 + 200]), "the newer records and the held user's untouched");
    });
}

/// Waits until the scrub's other connections are gone. An idle one is not
/// enough: a statement a dropped run sent may not have reached the server
/// yet, and a connection closes only after all it was sent has ended.
async fn settle(db: &Postgres) {
    let busy = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'lethe' AND pid <> pg_backend_pid()";
    while db.client().query_one(busy, &[]).await.unwrap().get::<_, i64>(0) > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Three runs on one table at once, each on its own connection, their
/// selections overlapping: a block pass with an earlier cutoff, a pass
/// through the time index with a later one (both keeping a held user), and
/// an erasure of two users, one of them only in old rows. Each ends without
/// error (a deadlock between them is retried), each verifies nothing of its
/// own selection is left, exactly the records none of them may delete
/// remain, and every record deleted is counted by exactly one run.
#[test]
fn concurrent_runs_on_one_table_keep_what_must_be_kept_and_count_each_record_once() {
    let pg = PgServer::start();
    rt().block_on(async {
        let db = connect(&pg).await;
        // 200,000 rows, every even one past the cutoff, up to 500 hours; users 0..999.
        db.execute_batch(
            "CREATE TABLE logs (id bigint PRIMARY KEY, user_id int NOT NULL, logged_at timestamptz NOT NULL);
             INSERT INTO logs SELECT g, g % 1000, timestamptz '2026-01-01' + (CASE WHEN g % 2 = 0 THEN -1 ELSE 1 END) * (g % 500 + 1) * interval '1 hour'
               FROM generate_series(1, 200000) g;
             CREATE INDEX ON logs (logged_at); ANALYZE logs;",
        )
        .await
        .unwrap();
        let [earlier, later, erasure] = common::scrub::overlapping_selections();
        let (a, b, c) = (connect(&pg).await, connect(&pg).await, connect(&pg).await);
        let blocks = Limits { block_pass_above: 0.0, max_batch: 2_000, ..Limits::default() };
        let index = Limits { block_pass_above: f64::INFINITY, max_batch: 2_000, ..Limits::default() };
        let small = Limits { initial_batch: 50, min_batch: 10, max_batch: 50, ..Limits::default() };
        let (a, b, c) = tokio::join!(
            a.run(&earlier, &Action::Delete, &blocks, 0, |_| {}),
            b.run(&later, &Action::Delete, &index, 0, |_| {}),
            c.run(&erasure, &Action::Delete, &small, 0, |_| {}),
        );
        let left = ids(&db, "SELECT id FROM logs").await;
        common::scrub::check_overlapping_runs([a.unwrap(), b.unwrap(), c.unwrap()], left, 200_000);
    });
}

/// Rows that come to match while a block pass runs, in blocks it has
/// already passed, are found by its closing count and deleted; rows that
/// must be kept stay, including a held subject's rows that came to match.
#[test]
fn rows_written_behind_a_block_pass_are_found_and_deleted() {
    let pg = PgServer::start();
    let opts = pg.options();
    rt().block_on(async {
        let db = connect(&pg).await;
        // 200,000 rows: odd ids past the cutoff, even ids newer; user 3 held
        // (ids 3, 48, 93, ...: both old and newer ones).
        db.execute_batch(
            "CREATE TABLE visits (id bigint PRIMARY KEY, user_id int NOT NULL, seen_at timestamptz NOT NULL);
             INSERT INTO visits SELECT g, g % 45, timestamptz '2026-01-01' + (CASE WHEN g % 2 = 1 THEN -1 ELSE 1 END) * (g % 300 + 1) * interval '1 hour'
               FROM generate_series(1, 200000) g;
             CREATE INDEX ON visits (seen_at);",
        )
        .await
        .unwrap();
        db.execute_batch("VACUUM ANALYZE visits").await.unwrap();
        let sel = Selection {
            table: table("visits"),
            older_than: Some((id("seen_at"), cutoff())),
            subject: vec![],
            keep_newer_than: None,
            held: vec![(id("user_id"), vec!["3".into()])], guards: vec![],
        };
        let planned = db.plan(&sel).await.unwrap().selected;
        let held = |i: &i64| i % 45 == 3;
        assert_eq!(planned, (1..=200_000).filter(|i| i % 2 == 1 && !held(i)).count() as i64, "odd ids except user 3's");

        // After the pass's first batch, another session backdates newer rows
        // lying in the blocks that batch covered.
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let (answer, answered) = std::sync::mpsc::channel::<(BTreeSet<i64>, i64)>();
        let writer = std::thread::spawn(move || {
            rt().block_on(async {
                let other = Postgres::connect(&opts, &Limits::default()).await.unwrap();
                wait.recv().unwrap();
                let moved: BTreeSet<i64> = other
                    .client()
                    .query("UPDATE visits SET seen_at = seen_at - interval '10 years' WHERE ctid < '(64,0)' AND seen_at >= '2026-01-01' RETURNING id", &[])
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let behind: i64 = other
                    .client()
                    .query_one("SELECT count(*) FROM visits WHERE ctid < '(64,0)' AND seen_at < '2026-01-01' AND user_id <> 3", &[])
                    .await
                    .unwrap()
                    .get(0);
                answer.send((moved, behind)).unwrap();
            })
        });
        let mut calls = 0;
        let mut reply = None;
        let limits = Limits { block_pass_above: 0.0, ..Limits::default() };
        let out = db
            .run(&sel, &Action::Delete, &limits, 0, |_| {
                calls += 1;
                if calls == 1 {
                    go.send(()).unwrap();
                    reply = Some(answered.recv().unwrap());
                }
            })
            .await
            .unwrap();
        writer.join().unwrap();
        let (moved, behind) = reply.expect("the pass reported its first batch");
        let held_moved = moved.iter().filter(|i| held(i)).count() as i64;
        assert!(behind > 0, "backdated rows lie in blocks the pass had already covered");
        assert!(held_moved > 0 && moved.len() as i64 > held_moved, "both held and unheld rows were backdated");

        assert_eq!(out.remaining, 0);
        assert_eq!(out.records_done, planned + moved.len() as i64 - held_moved, "the backdated unheld rows deleted too");
        let expected: BTreeSet<i64> =
            (1..=200_000).filter(|i| held(i) || (i % 2 == 0 && !moved.contains(i))).collect();
        assert_eq!(ids(&db, "SELECT id FROM visits").await, expected, "exactly the newer and the held rows stay");
    });
}

#[test]
fn schemas_that_break_naive_code() {
    let pg = PgServer::start();
    rt().block_on(async {
        let db = connect(&pg).await;
        db.execute_batch(
            r#"CREATE SCHEMA "Audit";
               CREATE TABLE "Audit"."UserEvents" ("order" timestamptz, "User" text, payload text);
               INSERT INTO "Audit"."UserEvents" VALUES ('2020-01-01', 'a', 'x'), ('2020-01-01', 'a', 'x'), ('2030-01-01', 'b', 'y'), (NULL, 'c', 'z');
               CREATE TABLE composite (tenant int, n int, at date, PRIMARY KEY (tenant, n));
               INSERT INTO composite VALUES (1, 1, '2020-01-01'), (1, 2, '2025-12-31'), (2, 1, '2026-01-01'), (2, 2, '2027-01-01');"#,
        )
        .await
        .unwrap();
        // No primary key, duplicate rows, mixed case, a reserved word as the time column.
        let sel = Selection {
            table: Table { schema: Some(id("Audit")), name: id("UserEvents") },
            older_than: Some((id("order"), cutoff())),
            subject: vec![],
            keep_newer_than: None,
            held: vec![], guards: vec![],
        };
        let out = db.run(&sel, &Action::Delete, &Limits { initial_batch: 1, min_batch: 1, ..Limits::default() }, 0, |_| {}).await.unwrap();
        assert_eq!(out.records_done, 2);
        let left: Vec<String> = db.client().query(r#"SELECT "User" FROM "Audit"."UserEvents" ORDER BY "User""#, &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
        assert_eq!(left, vec!["b", "c"], "the future row and the row without a time stay");
        // Composite key and a date column: the cutoff's own day is not before it.
        let out = db.run(&Selection { table: table("composite"), older_than: Some((id("at"), cutoff())), ..sel.clone() }, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!(out.records_done, 2);
        let left = db.client().query("SELECT tenant, n FROM composite ORDER BY 1, 2", &[]).await.unwrap().iter().map(|r| (r.get::<_, i32>(0), r.get::<_, i32>(1))).collect::<Vec<_>>();
        assert_eq!(left, vec![(2, 1), (2, 2)]);
    });
}

#[test]
fn anonymization_respects_not_null_and_unique_and_is_idempotent() {
    let pg = PgServer::start();
    rt().block_on(async {
        let db = connect(&pg).await;
        db.execute_batch(
            "CREATE TABLE customers (id serial PRIMARY KEY, email varchar(80) NOT NULL UNIQUE, phone text, full_name varchar(40) NOT NULL, closed_at timestamptz);
             INSERT INTO customers (email, phone, full_name, closed_at)
               SELECT 'user' || g || '@example.com', '+49 ' || g, 'Person ' || g, CASE WHEN g % 3 = 0 THEN NULL ELSE timestamptz '2025-01-01' + g * interval '1 day' END
               FROM generate_series(1, 600) g;",
        )
        .await
        .unwrap();
        let sel = Selection { table: table("customers"), older_than: Some((id("closed_at"), cutoff())), subject: vec![], keep_newer_than: None, held: vec![], guards: vec![] };
        let rules = vec![
            FieldRule { field: id("email"), strategy: AnonymizeStrategy::Hash, value: None },
            FieldRule { field: id("phone"), strategy: AnonymizeStrategy::Null, value: None },
            FieldRule { field: id("full_name"), strategy: AnonymizeStrategy::Redact, value: None },
        ];
        let action = Action::Anonymize { rules: rules.clone(), salt: "s3cret".into() };
        let expected: i64 = db.client().query_one("SELECT count(*) FROM customers WHERE closed_at < '2026-01-01'", &[]).await.unwrap().get(0);
        let out = db.run(&sel, &action, &Limits { initial_batch: 50, ..Limits::default() }, 0, |_| {}).await.unwrap();
        assert_eq!(out.records_done, expected);
        assert_eq!(out.remaining, 0);
        let row = db.client().query_one(
            "SELECT count(*) FILTER (WHERE email LIKE 'anon-%'), count(DISTINCT email) FILTER (WHERE email LIKE 'anon-%'),
                    count(*) FILTER (WHERE phone IS NULL), count(*) FILTER (WHERE full_name ~ '^[*]+$'), max(length(email))
               FROM customers", &[]).await.unwrap();
        assert_eq!(row.get::<_, i64>(0), expected);
        assert_eq!(row.get::<_, i64>(1), expected, "hashes stay distinct for a UNIQUE column");
        assert_eq!(row.get::<_, i64>(2), expected);
        assert_eq!(row.get::<_, i64>(3), expected);
        assert!(row.get::<_, i32>(4) <= 80, "hash fits the column");
        let untouched: i64 = db.client().query_one("SELECT count(*) FROM customers WHERE closed_at IS NULL OR closed_at >= '2026-01-01' AND email LIKE 'user%' AND phone IS NOT NULL", &[]).await.unwrap().get(0);
        assert_eq!(untouched, 600 - expected);
        // Running again changes nothing.
        let again = db.run(&sel, &action, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!(again.records_done, 0);

        // A rule the table cannot take is refused before anything changes.
        let bad = Action::Anonymize { rules: vec![FieldRule { field: id("full_name"), strategy: AnonymizeStrategy::Null, value: None }], salt: String::new() };
        db.execute_batch("UPDATE customers SET closed_at = '2020-01-01' WHERE closed_at IS NULL").await.unwrap();
        let before = ids(&db, "SELECT id::bigint FROM customers WHERE full_name LIKE 'Person%'").await;
        config_error(db.run(&sel, &bad, &Limits::default(), 0, |_| {}).await, &["NOT NULL"]);
        assert_eq!(ids(&db, "SELECT id::bigint FROM customers WHERE full_name LIKE 'Person%'").await, before, "nothing changed");

        // Rules that would break a unique key on the column alone are
        // refused before anything changes; a key of several columns is
        // checked against the records (see
        // `unique_keys_of_several_columns_are_checked_before_anonymizing`).
        db.execute_batch(
            "CREATE TABLE coupons (id serial PRIMARY KEY, code varchar(16) NOT NULL UNIQUE, label text UNIQUE, note varchar(16),
                                   tenant int, handle text, used_at timestamptz, promo text UNIQUE NULLS NOT DISTINCT, UNIQUE (tenant, handle));
             CREATE UNIQUE INDEX loud_labels ON coupons (upper(label));
             INSERT INTO coupons (code, label, note, tenant, handle, used_at, promo)
               SELECT 'C' || g, 'L' || g, 'N' || g, g, 'h' || g, '2020-01-01', 'P' || g FROM generate_series(1, 20) g;",
        )
        .await
        .unwrap();
        let used = Selection { table: table("coupons"), older_than: Some((id("used_at"), cutoff())), ..sel.clone() };
        let coupons = "SELECT id::bigint FROM coupons WHERE code LIKE 'C%' AND label LIKE 'L%' AND note LIKE 'N%' AND handle LIKE 'h%'";
        for (field, strategy, says) in [
            ("code", AnonymizeStrategy::Hash, "too few for hashes that stay distinct"),
            ("label", AnonymizeStrategy::Fixed, "one fixed value"),
            ("label", AnonymizeStrategy::Redact, "redaction"),
            ("id", AnonymizeStrategy::Fixed, "UNIQUE"),
            ("promo", AnonymizeStrategy::Null, "NULLS NOT DISTINCT"),
        ] {
            let rules = vec![FieldRule { field: id(field), strategy, value: Some("x".into()) }];
            config_error(db.run(&used, &Action::Anonymize { rules, salt: "s".into() }, &Limits::default(), 0, |_| {}).await, &[field, says]);
        }
        let long = vec![FieldRule { field: id("note"), strategy: AnonymizeStrategy::Fixed, value: Some("no longer available".into()) }];
        config_error(db.run(&used, &Action::Anonymize { rules: long, salt: String::new() }, &Limits::default(), 0, |_| {}).await, &["note holds at most 16 characters"]);
        assert_eq!(ids(&db, coupons).await.len(), 20, "nothing changed");
        let rules = vec![
            FieldRule { field: id("label"), strategy: AnonymizeStrategy::Hash, value: None },
            FieldRule { field: id("note"), strategy: AnonymizeStrategy::Hash, value: None },
            FieldRule { field: id("handle"), strategy: AnonymizeStrategy::Redact, value: None },
        ];
        let out = db.run(&used, &Action::Anonymize { rules, salt: "s".into() }, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (20, 0));
        assert_eq!(ids(&db, "SELECT count(DISTINCT label)::bigint FROM coupons WHERE label LIKE 'anon-%' AND note LIKE 'anon-%' AND handle ~ '^[*]+$'").await, BTreeSet::from([20]));

        // A fixed value is read as its column's type: a number, a date. Its
        // anonymized form is recognised in that type ('007' is 7), so a
        // second run finds nothing left to do.
        db.execute_batch(
            "CREATE TABLE profiles (id int PRIMARY KEY, age int, born date, tier char(4), left_at timestamptz);
             INSERT INTO profiles SELECT g, 20 + g, date '1990-01-01' + g, 'gold', CASE WHEN g <= 6 THEN timestamptz '2020-01-01' END
               FROM generate_series(1, 10) g;",
        )
        .await
        .unwrap();
        let left = Selection { table: table("profiles"), older_than: Some((id("left_at"), cutoff())), ..sel.clone() };
        let rules = vec![
            FieldRule { field: id("age"), strategy: AnonymizeStrategy::Fixed, value: Some("007".into()) },
            FieldRule { field: id("born"), strategy: AnonymizeStrategy::Fixed, value: Some("1900-01-01".into()) },
            FieldRule { field: id("tier"), strategy: AnonymizeStrategy::Fixed, value: Some("x".into()) },
        ];
        let action = Action::Anonymize { rules, salt: String::new() };
        let out = db.run(&left, &action, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (6, 0));
        assert_eq!(ids(&db, "SELECT id::bigint FROM profiles WHERE age = 7 AND born = '1900-01-01' AND tier = 'x'").await, (1..=6).collect());
        assert_eq!(ids(&db, "SELECT id::bigint FROM profiles WHERE age = 20 + id AND tier = 'gold'").await, (7..=10).collect());
        assert_eq!(db.run(&left, &action, &Limits::default(), 0, |_| {}).await.unwrap().records_done, 0, "idempotent");
        // A text value in a table with a NOT NULL domain column.
        db.execute_batch(
            "CREATE DOMAIN country AS char(2) NOT NULL CHECK (VALUE ~ '^[A-Z]{2}$');
             CREATE TABLE addresses (id int PRIMARY KEY, land country, street varchar(30), moved_at timestamptz);
             INSERT INTO addresses VALUES (1, 'DE', 'Main St 1', '2020-01-01'), (2, 'FR', 'Rue 2', '2030-01-01');",
        )
        .await
        .unwrap();
        let moved = Selection { table: table("addresses"), older_than: Some((id("moved_at"), cutoff())), ..sel.clone() };
        let rules = vec![FieldRule { field: id("street"), strategy: AnonymizeStrategy::Fixed, value: Some("unknown".into()) }];
        let out = db.run(&moved, &Action::Anonymize { rules, salt: String::new() }, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (1, 0));
        assert_eq!(ids(&db, "SELECT id::bigint FROM addresses WHERE street = 'unknown'").await, BTreeSet::from([1]));
        let bad = vec![FieldRule { field: id("age"), strategy: AnonymizeStrategy::Fixed, value: Some("unknown".into()) }];
        db.execute_batch("UPDATE profiles SET age = 1 WHERE id = 7; UPDATE profiles SET left_at = '2020-01-01' WHERE id = 7").await.unwrap();
        // Refused before any change, naming the rule's value and column
        // (the server's own message leaves the value out).
        let bad = Action::Anonymize { rules: bad, salt: String::new() };
        let says = ["for type integer", "fixed value \"unknown\"", "column age"];
        config_error(db.pending(&left, &bad).await, &says);
        config_error(db.run(&left, &bad, &Limits::default(), 0, |_| {}).await, &says);
        assert_eq!(ids(&db, "SELECT age::bigint FROM profiles WHERE id = 7").await, BTreeSet::from([1]), "nothing changed");

        // A trigger that changes what is written: the records never read as
        // anonymized, and would be selected again batch after batch. The
        // first batch notices and the run stops with the reason.
        db.execute_batch(
            "CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.tier := upper(NEW.tier); RETURN NEW; END $$;
             CREATE TRIGGER shout BEFORE UPDATE ON profiles FOR EACH ROW EXECUTE FUNCTION shout();",
        )
        .await
        .unwrap();
        let loud = vec![FieldRule { field: id("tier"), strategy: AnonymizeStrategy::Fixed, value: Some("y".into()) }];
        config_error(db.run(&left, &Action::Anonymize { rules: loud, salt: String::new() }, &Limits::default(), 0, |_| {}).await, &["still do not read as anonymized"]);
    });
}

/// Counts that read much of a large table (the plan's, the closing count
/// of a block pass) keep within the statement timeout whatever the table's
/// size: they read it in chunks of blocks, one snapshot throughout. The
/// same count in one statement runs out of time.
#[test]
fn counts_of_a_large_table_keep_within_the_statement_timeout() {
    let pg = PgServer::start();
    rt().block_on(async {
        let admin = connect(&pg).await;
        // 2,000,000 rows: odd ids past the cutoff, even ids newer; user 3 held.
        admin
            .execute_batch(
                "CREATE TABLE events (id bigint PRIMARY KEY, user_id int NOT NULL, at timestamptz NOT NULL);
                 INSERT INTO events SELECT g, g % 45, timestamptz '2026-01-01' + (CASE WHEN g % 2 = 1 THEN -1 ELSE 1 END) * (g % 300 + 1) * interval '1 hour'
                   FROM generate_series(1, 2000000) g;",
            )
            .await
            .unwrap();
        admin.execute_batch("VACUUM ANALYZE events").await.unwrap();
        let old = (1..=2_000_000i64).filter(|i| i % 2 == 1);
        let held = old.clone().filter(|i| i % 45 == 3).count() as i64;
        let selected = old.count() as i64 - held;
        let timeout = Duration::from_millis(10);
        // The single statement cannot: a count of the table takes far longer.
        admin.execute_batch("SET statement_timeout = 10").await.unwrap();
        let single = admin.client().query_one("SELECT count(*) FROM events WHERE at < '2026-01-01'", &[]).await;
        let says = |e: &tokio_postgres::Error| e.as_db_error().is_some_and(|d| d.message().contains("statement timeout"));
        assert!(single.as_ref().is_err_and(says), "{single:?}");
        admin.execute_batch("RESET statement_timeout").await.unwrap();

        let tight = Limits { statement_timeout: timeout, target_batch: Duration::from_millis(2), ..Limits::default() };
        let db = Postgres::connect(&pg.options(), &tight).await.unwrap();
        let sel = Selection {
            table: table("events"),
            older_than: Some((id("at"), cutoff())),
            subject: vec![],
            keep_newer_than: None,
            held: vec![(id("user_id"), vec!["3".into()])], guards: vec![],
        };
        assert_eq!(patiently(async || db.count(&sel).await).await.unwrap(), selected);
        let plan = patiently(async || db.plan(&sel).await).await.unwrap();
        assert_eq!((plan.selected, plan.total, plan.held, plan.under_minimum), (selected, 2_000_000, held, 0));
        // A selective count, planned through an index, that still runs past
        // the timeout as one statement (it visits most of the table's
        // blocks): counted again in chunks.
        admin.execute_batch("CREATE INDEX events_user ON events (user_id); ANALYZE events").await.unwrap();
        let one = Selection { subject: vec![(id("user_id"), vec!["7".into()])], held: vec![], ..sel.clone() };
        let predicate = "user_id = 7 AND at < '2026-01-01'";
        let plan = admin.client().query(&format!("EXPLAIN SELECT count(*) FROM events WHERE {predicate}"), &[]).await.unwrap();
        let plan: Vec<String> = plan.iter().map(|r| r.get(0)).collect();
        assert!(plan.iter().any(|l| l.contains("events_user")) && !plan.iter().any(|l| l.contains("Seq Scan")), "{plan:?}");
        admin.execute_batch("SET statement_timeout = 10").await.unwrap();
        let single = admin.client().query_one(&format!("SELECT count(*) FROM events WHERE {predicate}"), &[]).await;
        assert!(single.as_ref().is_err_and(says), "{single:?}");
        admin.execute_batch("RESET statement_timeout").await.unwrap();
        let of_7 = (1..=2_000_000i64).filter(|i| i % 2 == 1 && i % 45 == 7).count() as i64;
        assert_eq!(patiently(async || db.count(&one).await).await.unwrap(), of_7);
        let plan = patiently(async || db.plan(&one).await).await.unwrap();
        assert_eq!((plan.selected, plan.total, plan.held, plan.under_minimum), (of_7, 2_000_000, 0, 0));
        // The same, the table a partition of a partitioned table.
        admin
            .execute_batch(
                "CREATE TABLE all_events (id bigint NOT NULL, user_id int NOT NULL, at timestamptz NOT NULL) PARTITION BY RANGE (at);
                 ALTER TABLE all_events ATTACH PARTITION events FOR VALUES FROM (MINVALUE) TO (MAXVALUE);",
            )
            .await
            .unwrap();
        let plan = admin.client().query(&format!("EXPLAIN SELECT count(*) FROM all_events WHERE {predicate}"), &[]).await.unwrap();
        let plan: Vec<String> = plan.iter().map(|r| r.get(0)).collect();
        assert!(plan.iter().any(|l| l.contains("events_user")) && !plan.iter().any(|l| l.contains("Seq Scan")), "{plan:?}");
        let in_all = Selection { table: table("all_events"), ..one.clone() };
        assert_eq!(patiently(async || db.count(&in_all).await).await.unwrap(), of_7);
        admin.execute_batch("ALTER TABLE all_events DETACH PARTITION events").await.unwrap();
        // The run's batches keep to the target, and its closing count (two
        // connections sharing one snapshot) to the timeout.
        admin.execute_batch("CREATE INDEX events_at ON events (at)").await.unwrap();
        // Once more where a statement overran the timeout, resumed.
        let limits = Limits { connections: 2, ..tight.clone() };
        let out = patiently(async || {
            let left = db.count(&sel).await?;
            db.run(&sel, &Action::Delete, &limits, selected - left, |_| {}).await
        })
        .await
        .unwrap();
        assert_eq!((out.records_done, out.remaining), (selected, 0));
        // That count read the oldest record left past the cutoff (the held
        // subject's) too.
        let oldest = (1..=2_000_000i64).filter(|i| i % 2 == 1 && i % 45 == 3).map(|i| i % 300 + 1).max().unwrap();
        let oldest = cutoff() - Duration::from_secs(3600 * oldest as u64);
        assert_eq!(out.oldest_past_cutoff, Some(Some(oldest)));
        let kept = ids(&admin, "SELECT count(*) FROM events WHERE at >= '2026-01-01' OR user_id = 3").await;
        let total = ids(&admin, "SELECT count(*) FROM events").await;
        assert_eq!((kept, total), (BTreeSet::from([2_000_000 - selected]), BTreeSet::from([2_000_000 - selected])));
        // The oldest record left past the cutoff (the held subject's): right
        // after the pass the time index still holds an entry for every record
        // deleted, each visited before the first one left, so one statement
        // runs out of time; read in chunks of blocks.
        admin.execute_batch("SET statement_timeout = 10").await.unwrap();
        let single = admin.client().query_one("SELECT min(at) FROM events WHERE at < '2026-01-01'", &[]).await;
        assert!(single.as_ref().is_err_and(says), "{single:?}");
        admin.execute_batch("RESET statement_timeout").await.unwrap();
        let past = Selection { held: vec![], ..sel.clone() };
        assert_eq!(patiently(async || db.extreme(&past, &id("at"), false).await).await.unwrap(), Some(oldest));

        // A partitioned table: partition by partition, those the plan reads.
        admin
            .execute_batch(
                "CREATE TABLE parted (id bigint, user_id int NOT NULL, at timestamptz NOT NULL) PARTITION BY RANGE (at);
                 CREATE TABLE parted_old PARTITION OF parted FOR VALUES FROM ('2000-01-01') TO ('2026-01-01');
                 CREATE TABLE parted_new PARTITION OF parted FOR VALUES FROM ('2026-01-01') TO ('2100-01-01');
                 INSERT INTO parted SELECT g, g % 45, timestamptz '2026-01-01' + (CASE WHEN g % 2 = 1 THEN -1 ELSE 1 END) * (g % 300 + 1) * interval '1 hour'
                   FROM generate_series(1, 1000000) g;",
            )
            .await
            .unwrap();
        admin.execute_batch("ANALYZE parted").await.unwrap();
        admin.execute_batch("SET statement_timeout = 10").await.unwrap();
        let single = admin.client().query_one("SELECT count(*) FROM parted", &[]).await;
        assert!(single.as_ref().is_err_and(says), "{single:?}");
        admin.execute_batch("RESET statement_timeout").await.unwrap();
        let old = (1..=1_000_000i64).filter(|i| i % 2 == 1);
        let held = old.clone().filter(|i| i % 45 == 3).count() as i64;
        let selected = old.count() as i64 - held;
        let sel = Selection { table: table("parted"), ..sel };
        assert_eq!(patiently(async || db.count(&sel).await).await.unwrap(), selected);
        let plan = patiently(async || db.plan(&sel).await).await.unwrap();
        assert_eq!((plan.selected, plan.total, plan.held, plan.under_minimum), (selected, 1_000_000, held, 0));
    });
}

/// A table never analyzed has no row count in its statistics: its share a
/// selection takes is the planner's estimate of both, so one subject's
/// records are found through the identifier's index, not by reading every
/// block of the table.
#[test]
fn a_subject_in_a_table_never_analyzed_is_found_through_its_index() {
    let pg = PgServer::start();
    rt().block_on(async {
        let db = connect(&pg).await;
        db.execute_batch(
            "CREATE TABLE fresh (id bigint PRIMARY KEY, user_id int NOT NULL, at timestamptz NOT NULL)
               WITH (autovacuum_enabled = false);
             CREATE INDEX fresh_user ON fresh (user_id);
             INSERT INTO fresh SELECT g, g % 1000, timestamptz '2025-01-01' + g * interval '1 minute'
               FROM generate_series(1, 200000) g;",
        )
        .await
        .unwrap();
        let never: f32 =
            db.client().query_one("SELECT reltuples FROM pg_class WHERE relname = 'fresh'", &[]).await.unwrap().get(0);
        assert!(never < 1.0, "the table must not have been analyzed: {never}");
        let sel = Selection {
            table: table("fresh"),
            older_than: None,
            subject: vec![(id("user_id"), vec!["7".into()])],
            keep_newer_than: None,
            held: vec![],
            guards: vec![],
        };
        // The first batch says the way: `initial_batch` records through the
        // index, or the subject's records in the first 128 blocks (about 19).
        let limits = Limits { initial_batch: 7, ..Limits::default() };
        let mut first = None;
        let out = db
            .run(&sel, &Action::Delete, &limits, 0, |p| {
                first.get_or_insert(p.last_batch_size);
            })
            .await
            .unwrap();
        assert_eq!(first, Some(7), "batches found through the index");
        assert_eq!((out.records_done, out.remaining), (200, 0));
        let left = ids(&db, "SELECT count(*) FROM fresh WHERE user_id = 7").await;
        let total = ids(&db, "SELECT count(*) FROM fresh").await;
        assert_eq!((left, total), (BTreeSet::from([0]), BTreeSet::from([199_800])));
    });
}

/// A pass run again after one that was stopped finds the first blocks
/// already emptied. Ranges of them take little time, so the ranges grow;
/// the first range that deletes anything still covers no more than a first
/// range would: it starts at the first block holding a selected record and
/// spans 128 blocks, however far the empty ranges grew.
#[test]
fn a_pass_after_emptied_blocks_starts_where_the_records_are_and_deletes_a_bounded_range() {
    let pg = PgServer::start();
    rt().block_on(async {
        let db = connect(&pg).await;
        db.execute_batch(
            "CREATE TABLE resumed (id bigint PRIMARY KEY, user_id int NOT NULL, at timestamptz NOT NULL)
               WITH (autovacuum_enabled = false);
             INSERT INTO resumed SELECT g, g % 1000,
                 timestamptz '2026-01-01' + (CASE WHEN g % 2 = 0 THEN -1 ELSE 1 END) * (g % 500 + 1) * interval '1 hour'
               FROM generate_series(1, 400000) g;
             ANALYZE resumed;
             DELETE FROM resumed WHERE ctid < '(2000,0)' AND at < '2026-01-01';",
        )
        .await
        .unwrap();
        let count = |sql: &'static str| {
            let db = &db;
            async move { ids(db, sql).await.into_iter().next().unwrap() }
        };
        let blocks = count("SELECT (pg_relation_size('resumed') / 8192)::bigint").await;
        assert!(blocks > 2400, "{blocks} blocks");
        assert_eq!(count("SELECT count(*) FROM resumed WHERE ctid < '(2000,0)' AND at < '2026-01-01'").await, 0);
        let first_range =
            count("SELECT count(*) FROM resumed WHERE ctid >= '(2000,0)' AND ctid < '(2128,0)' AND at < '2026-01-01'")
                .await;
        let first_block =
            count("SELECT count(*) FROM resumed WHERE ctid >= '(2000,0)' AND ctid < '(2001,0)' AND at < '2026-01-01'")
                .await;
        assert!(first_block > 0, "block 2000 holds selected records");
        let (expired, kept) = (
            count("SELECT count(*) FROM resumed WHERE at < '2026-01-01'").await,
            count("SELECT count(*) FROM resumed WHERE at >= '2026-01-01'").await,
        );
        let sel = older_than("resumed", "at");
        // A target no batch reaches: every empty range doubles the next.
        let limits = Limits { target_batch: Duration::from_secs(60), block_pass_above: 0.05, ..Limits::default() };
        let mut batches = Vec::new();
        let out = db.run(&sel, &Action::Delete, &limits, 0, |p| batches.push(p.last_batch_size)).await.unwrap();
        let first = batches.iter().position(|n| *n > 0).expect("a batch deleted records");
        assert!(first >= 2, "empty ranges came first: {batches:?}");
        assert_eq!(batches[first], first_range, "blocks 2000 to 2127 only: {batches:?}");
        assert_eq!((out.records_done, out.remaining), (expired, 0));
        assert_eq!(count("SELECT count(*) FROM resumed WHERE at < '2026-01-01'").await, 0);
        assert_eq!(count("SELECT count(*) FROM resumed WHERE at >= '2026-01-01'").await, kept);
    });
}

/// A trigger that inserts a copy of every record deleted gives the
/// selection a new record for each one deleted: the run would never end.
/// It stops instead, once it has deleted more than twice what the table
/// held, with the reason, and nothing newer than the cutoff is touched. So
/// too a block pass, and an anonymization whose trigger inserts what it
/// changes as it was.
#[test]
fn a_trigger_that_inserts_what_is_deleted_stops_the_run_instead_of_looping() {
    let pg = PgServer::start();
    rt().block_on(async {
        let db = connect(&pg).await;
        db.execute_batch(
            "CREATE TABLE echo (id bigint PRIMARY KEY, user_id int NOT NULL, email text, at timestamptz NOT NULL);
             CREATE INDEX ON echo (at);
             INSERT INTO echo SELECT g, g % 100, 'u' || g || '@example.com',
                 timestamptz '2026-01-01' + (CASE WHEN g % 2 = 0 THEN -1 ELSE 1 END) * (g % 500 + 1) * interval '1 hour'
               FROM generate_series(1, 5000) g;
             ANALYZE echo;
             CREATE SEQUENCE echo_ids START 1000000;
             CREATE FUNCTION echo_again() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN INSERT INTO echo VALUES (nextval('echo_ids'), OLD.user_id, OLD.email, OLD.at); RETURN NULL; END $$;
             CREATE TRIGGER echo_delete AFTER DELETE ON echo FOR EACH ROW EXECUTE FUNCTION echo_again();
             CREATE TRIGGER echo_update AFTER UPDATE OF email ON echo FOR EACH ROW
               WHEN (OLD.email IS NOT NULL) EXECUTE FUNCTION echo_again();",
        )
        .await
        .unwrap();
        let newer = "SELECT count(*) FROM echo WHERE at >= '2026-01-01'";
        let kept = ids(&db, newer).await;
        let sel = older_than("echo", "at");
        let anonymize = Action::Anonymize {
            rules: vec![FieldRule { field: id("email"), strategy: AnonymizeStrategy::Null, value: None }],
            salt: String::new(),
        };
        for (action, block_pass_above) in
            [(Action::Delete, f64::INFINITY), (Action::Delete, 0.05), (anonymize, f64::INFINITY)]
        {
            let limits = Limits { block_pass_above, ..Limits::default() };
            let mut done = 0;
            let err = db.run(&sel, &action, &limits, 0, |p| done = p.records_done).await.unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err, ScrubError::Config(_)) && text.contains("trigger") && text.contains("twice"),
                "{action:?}, block pass above {block_pass_above}: {text}"
            );
            assert!(done > 10_000, "stopped past twice the table's 5,000 records: {done}");
            assert_eq!(ids(&db, newer).await, kept, "nothing newer than the cutoff touched");
        }
    });
}

/// A read that is not split (a count of a table under 8 MiB, in one
/// statement) and runs past the statement timeout fails with the advice to
/// raise it, not as a busy store to retry: it would time out again on
/// every retry.
#[test]
fn a_read_longer_than_the_statement_timeout_fails_with_advice_instead_of_retrying() {
    let pg = PgServer::start();
    rt().block_on(async {
        connect(&pg)
            .await
            .execute_batch(
                "CREATE TABLE events (id int PRIMARY KEY, at timestamptz NOT NULL);
                 INSERT INTO events SELECT g, timestamptz '2020-01-01' + g * interval '1 minute' FROM generate_series(1, 150000) g;",
            )
            .await
            .unwrap();
        let tight = Limits { statement_timeout: Duration::from_millis(1), ..Limits::default() };
        let db = Postgres::connect(&pg.options(), &tight).await.unwrap();
        let sel = Selection { table: table("events"), older_than: Some((id("at"), cutoff())), subject: vec![], keep_newer_than: None, held: vec![], guards: vec![] };
        for r in [db.count(&sel).await.map(|n| format!("{n}")), db.plan(&sel).await.map(|c| format!("{c:?}"))] {
            match r {
                Err(e @ ScrubError::Config(_)) => assert!(!e.retryable() && e.to_string().contains("limits.statementTimeout"), "{e}"),
                other => panic!("expected a configuration error, got {other:?}"),
            }
        }
        let admin = connect(&pg).await;
        let blocks = ids(&admin, "SELECT (pg_relation_size('events') / 8192)::bigint").await;
        assert!(blocks.iter().all(|b| *b < 1024), "{blocks:?} blocks: under 8 MiB");
        assert_eq!(ids(&admin, "SELECT count(*) FROM events").await, BTreeSet::from([150000]));
    });
}

/// Row-level security that would hide rows from Lethe's user is refused,
/// not obeyed: obeyed, it would delete only the rows it shows and then
/// count none left.
#[test]
fn row_level_security_that_hides_rows_is_refused_not_obeyed() {
    let pg = PgServer::start();
    rt().block_on(async {
        let admin = connect(&pg).await;
        admin
            .execute_batch(
                "CREATE TABLE notes (id int PRIMARY KEY, tenant text NOT NULL, at timestamptz NOT NULL);
                 INSERT INTO notes VALUES (1, 'a', '2020-01-01'), (2, 'b', '2020-01-01'), (3, 'a', '2030-01-01');
                 ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
                 CREATE POLICY only_a ON notes USING (tenant = 'a');
                 CREATE ROLE scrubber LOGIN PASSWORD 'scrubber-pw';
                 CREATE ROLE maintainer LOGIN BYPASSRLS PASSWORD 'maintainer-pw';
                 GRANT SELECT, DELETE, UPDATE ON notes TO scrubber, maintainer;",
            )
            .await
            .unwrap();
        let as_role =
            |user: &str| ConnectOptions { user: user.into(), password: Some(format!("{user}-pw")), ..pg.options() };
        let sel = Selection {
            table: table("notes"),
            older_than: Some((id("at"), cutoff())),
            subject: vec![],
            keep_newer_than: None,
            held: vec![],
            guards: vec![],
        };
        let db = Postgres::connect(&as_role("scrubber"), &Limits::default()).await.unwrap();
        let refused = |r: Result<String, ScrubError>| match r {
            Err(e @ ScrubError::Access(_)) => {
                assert!(!e.retryable());
                assert!(e.to_string().contains("row-level security") && e.to_string().contains("BYPASSRLS"), "{e}");
            }
            other => panic!("expected an access error, got {other:?}"),
        };
        refused(db.probe(&table("notes")).await.map(|p| format!("{p:?}")));
        refused(db.plan(&sel).await.map(|c| format!("{c:?}")));
        refused(db.run(&sel, &Action::Delete, &Limits::default(), 0, |_| {}).await.map(|o| format!("{o:?}")));
        let subject = Selection { older_than: None, subject: vec![(id("id"), vec!["2".into()])], ..sel.clone() };
        refused(db.run(&subject, &Action::Delete, &Limits::default(), 0, |_| {}).await.map(|o| format!("{o:?}")));
        assert_eq!(ids(&admin, "SELECT id::bigint FROM notes").await, BTreeSet::from([1, 2, 3]), "nothing deleted");
        // A user that bypasses row-level security sees, deletes and verifies every row.
        let db = Postgres::connect(&as_role("maintainer"), &Limits::default()).await.unwrap();
        assert!(db.probe(&table("notes")).await.unwrap().can_delete);
        let out = db.run(&sel, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (2, 0));
        assert_eq!(ids(&admin, "SELECT id::bigint FROM notes").await, BTreeSet::from([3]));
    });
}

#[test]
fn store_faults_are_classified_and_a_restart_mid_run_resumes() {
    let pg = PgServer::start();
    rt().block_on(async {
        let wrong = ConnectOptions { password: Some("wrong".into()), ..pg.options() };
        match Postgres::connect(&wrong, &Limits::default()).await {
            Err(e @ ScrubError::Access(_)) => assert!(!e.retryable()),
            other => panic!("expected access denied, got {:?}", other.err()),
        }
        let db = connect(&pg).await;
        config_error(db.probe(&table("missing_table")).await, &["\"missing_table\" does not exist"]);
        db.execute_batch(
            "CREATE TABLE sessions (id bigint PRIMARY KEY, seen timestamptz NOT NULL);
             INSERT INTO sessions SELECT g, timestamptz '2025-01-01' + (g % 730) * interval '1 day' FROM generate_series(1, 300000) g;",
        )
        .await
        .unwrap();
        let probe = db.probe(&table("sessions")).await.unwrap();
        assert!(probe.can_select && probe.can_delete && probe.can_update);
        assert!(probe.server_version.starts_with("PostgreSQL"), "{}", probe.server_version);
        let sel = Selection { table: table("sessions"), older_than: Some((id("seen"), cutoff())), subject: vec![], keep_newer_than: None, held: vec![], guards: vec![] };
        let planned = db.plan(&sel).await.unwrap().selected;
        // Stop the server after the first batch.
        let small = Limits { initial_batch: 1000, max_batch: 1000, ..Limits::default() };
        let mut stopped = false;
        let result = db
            .run(&sel, &Action::Delete, &small, 0, |p| {
                if !stopped && p.batches == 1 {
                    stopped = true;
                    pg.stop();
                }
            })
            .await;
        match result {
            Err(e) => assert!(e.retryable(), "a restart is retryable: {e}"),
            Ok(o) => panic!("the run cannot finish without its server: {o:?}"),
        }
        pg.start_again();
        let db = connect(&pg).await;
        let remaining = db.count(&sel).await.unwrap();
        assert!(remaining < planned, "the first batch was committed");
        let out = db.run(&sel, &Action::Delete, &Limits::default(), planned - remaining, |_| {}).await.unwrap();
        assert_eq!(out.records_done, planned);
        let newer: i64 = db.client().query_one("SELECT count(*) FROM sessions", &[]).await.unwrap().get(0);
        assert_eq!(newer, 300_000 - planned);
        let oldest: DateTime<Utc> = db.client().query_one("SELECT min(seen) FROM sessions", &[]).await.unwrap().get(0);
        assert!(oldest >= cutoff());
    });
}

#[test]
fn foreign_keys_are_introspected_and_undeclared_ones_reported() {
    use lethe::plan::erasure::{Node, children_first, undeclared};
    let pg = PgServer::start();
    rt().block_on(async {
        let db = connect(&pg).await;
        db.execute_batch(
            "CREATE TABLE customers (id int PRIMARY KEY);
             CREATE TABLE invoices (id int PRIMARY KEY, customer_id int REFERENCES customers (id));
             CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers (id) ON DELETE CASCADE);",
        )
        .await
        .unwrap();
        let found = db.foreign_keys(&table("customers")).await.unwrap();
        assert_eq!(
            found,
            vec![("invoices".to_string(), "customers".to_string()), ("orders".to_string(), "customers".to_string())]
        );
        // Only invoices -> customers is declared as a Dataset relation: orders is reported.
        let declared = vec![("invoices".to_string(), "customers".to_string())];
        assert_eq!(undeclared(&declared, &found), vec![&("orders".to_string(), "customers".to_string())]);
        // Erasing in the planned order works without tripping the foreign key.
        let nodes = [
            Node { name: "customers".into(), parents: vec![] },
            Node { name: "invoices".into(), parents: vec!["customers".into()] },
        ];
        db.execute_batch("INSERT INTO customers VALUES (1), (2); INSERT INTO invoices VALUES (10, 1), (11, 2);")
            .await
            .unwrap();
        for name in children_first(&nodes).unwrap() {
            let column = if name == "customers" { "id" } else { "customer_id" };
            let sel = Selection {
                table: table(&name),
                older_than: None,
                subject: vec![(id(column), vec!["1".into()])],
                keep_newer_than: None,
                held: vec![],
                guards: vec![],
            };
            db.run(&sel, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        }
        assert_eq!(ids(&db, "SELECT id::bigint FROM customers").await, BTreeSet::from([2]));
        assert_eq!(ids(&db, "SELECT id::bigint FROM invoices").await, BTreeSet::from([11]));
        // The other way round the database refuses, and nothing is deleted.
        let parent_first = Selection {
            table: table("customers"),
            older_than: None,
            subject: vec![(id("id"), vec!["2".into()])],
            keep_newer_than: None,
            held: vec![],
            guards: vec![],
        };
        config_error(
            db.run(&parent_first, &Action::Delete, &Limits::default(), 0, |_| {}).await,
            &["invoices_customer_id_fkey", "still referenced"],
        );
        assert_eq!(ids(&db, "SELECT id::bigint FROM customers").await, BTreeSet::from([2]));
    });
}

#[test]
fn whole_partitions_go_at_once_unless_something_in_them_must_stay() {
    use lethe::scrub::PartitionMode;
    let pg = PgServer::start();
    rt().block_on(async {
        let db = connect(&pg).await;
        let setup = |name: &str| {
            format!(
                "DROP TABLE IF EXISTS {name} CASCADE;
                 CREATE TABLE {name} (id bigint, user_id int, created_at timestamptz NOT NULL) PARTITION BY RANGE (created_at);
                 CREATE TABLE {name}_2025_10 PARTITION OF {name} FOR VALUES FROM ('2025-10-01') TO ('2025-11-01');
                 CREATE TABLE {name}_2025_11 PARTITION OF {name} FOR VALUES FROM ('2025-11-01') TO ('2025-12-01');
                 CREATE TABLE {name}_2025_12 PARTITION OF {name} FOR VALUES FROM ('2025-12-01') TO ('2026-01-01');
                 CREATE TABLE {name}_2026_01 PARTITION OF {name} FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
                 CREATE TABLE {name}_rest PARTITION OF {name} DEFAULT;
                 INSERT INTO {name} SELECT g, 1000 + g % 100, timestamptz '2025-10-01' + g * interval '1 hour' FROM generate_series(0, 3000) g;
                 INSERT INTO {name} VALUES (100000, 7, '2020-01-01'), (100001, 7, '2025-11-15');"
            )
        };
        db.execute_batch(&setup("events")).await.unwrap();
        // User 7 is held and has a record in November 2025.
        let held_november: i64 = db.client().query_one("SELECT count(*) FROM events_2025_11 WHERE user_id = 7", &[]).await.unwrap().get(0);
        assert!(held_november > 0);
        let sel = Selection {
            table: table("events"),
            older_than: Some((id("created_at"), cutoff())),
            subject: vec![],
            keep_newer_than: None,
            held: vec![(id("user_id"), vec!["7".into()])], guards: vec![],
        };
        let expected: BTreeSet<i64> = ids(&db, "SELECT id FROM events WHERE created_at >= '2026-01-01' OR user_id = 7").await;
        let planned = db.plan(&sel).await.unwrap().selected;
        let out = db.run(&sel, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!(out.partitions, vec!["events_2025_10", "events_2025_12"], "November holds a held record; January and DEFAULT are not wholly past");
        assert_eq!(out.records_done, planned);
        assert_eq!(ids(&db, "SELECT id FROM events").await, expected, "exact survivors, held rows included");
        let tables = ids(&db, "SELECT count(*) FROM pg_class WHERE relname IN ('events_2025_10', 'events_2025_12')").await;
        assert_eq!(tables, BTreeSet::from([0]), "dropped");

        // Detach leaves the table, outside the dataset; Rows never touches partitions.
        db.execute_batch(&setup("archive")).await.unwrap();
        let sel = Selection { table: table("archive"), held: vec![], ..sel };
        let limits = Limits { partitions: PartitionMode::Detach, ..Limits::default() };
        let planned = db.plan(&sel).await.unwrap().selected;
        let out = db.run(&sel, &Action::Delete, &limits, 0, |_| {}).await.unwrap();
        assert_eq!(out.partitions, vec!["archive_2025_10", "archive_2025_11", "archive_2025_12"]);
        assert_eq!(out.records_done, planned, "every record of the detached partitions counted");
        let detached: i64 = db.client().query_one("SELECT count(*) FROM archive_2025_11", &[]).await.unwrap().get(0);
        assert!(detached > 0, "a detached partition keeps its rows for archiving");
        assert_eq!(db.count(&sel).await.unwrap(), 0, "nothing past the cutoff is left in the dataset");
        db.execute_batch(&setup("rowwise")).await.unwrap();
        let sel = Selection { table: table("rowwise"), ..sel };
        let out = db.run(&sel, &Action::Delete, &Limits { partitions: PartitionMode::Rows, ..Limits::default() }, 0, |_| {}).await.unwrap();
        assert!(out.partitions.is_empty());
        assert_eq!(out.remaining, 0);

        // A partition another session is reading cannot be dropped yet: the
        // run stops retryable with nothing dropped and its transaction
        // rolled back; once the reader is gone, a rerun drops it.
        db.execute_batch(&setup("busy")).await.unwrap();
        let reader = connect(&pg).await;
        reader.execute_batch("BEGIN; SELECT count(*) FROM busy_2025_11").await.unwrap();
        let impatient =
            Postgres::connect(&pg.options(), &Limits { lock_timeout: Duration::from_millis(200), ..Limits::default() })
                .await
                .unwrap();
        let sel = Selection { table: table("busy"), ..sel };
        let pid: i32 = impatient.client().query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
        let err = impatient.run(&sel, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap_err();
        assert!(matches!(err, ScrubError::Busy(_)) && err.retryable(), "{err}");
        let left = ids(&db, "SELECT count(*) FROM pg_class WHERE relname IN ('busy_2025_11', 'busy_2025_12')").await;
        assert_eq!(left, BTreeSet::from([2]), "the locked partition and the ones after it are still there");
        let state: String =
            db.client().query_one("SELECT state FROM pg_stat_activity WHERE pid = $1", &[&pid]).await.unwrap().get(0);
        assert_eq!(state, "idle", "no transaction left open on the run's connection");
        reader.execute_batch("COMMIT").await.unwrap();
        let planned = db.plan(&sel).await.unwrap().selected;
        let out = impatient.run(&sel, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!(out.partitions, vec!["busy_2025_11", "busy_2025_12"]);
        assert_eq!((out.records_done, db.count(&sel).await.unwrap()), (planned, 0), "the rerun counts what it removed");

        // A record held rows of another table reference keeps its partition
        // too: December goes whole, November row by row around it. The
        // notes are looked up through an index where they have one, and
        // joined with each statement's records where not.
        for index in ["", "CREATE INDEX ON ticket_notes (ticket_id);"] {
            db.execute_batch(&setup("tickets")).await.unwrap();
            db.execute_batch(&format!(
                "DROP TABLE IF EXISTS ticket_notes;
                 CREATE TABLE ticket_notes (id bigint PRIMARY KEY, ticket_id bigint, case_ref text); {index}
                 INSERT INTO ticket_notes VALUES (1, 1000, 'F-1'), (2, 1800, NULL);"
            ))
            .await
            .unwrap();
            let sel = Selection {
                table: table("tickets"),
                guards: vec![lethe::scrub::Guard {
                    reason: lethe::scrub::GuardReason::Hold,
                    table: table("ticket_notes"),
                    columns: vec![id("ticket_id")],
                    references: vec![id("id")],
                    rows: Some(vec![(id("case_ref"), vec!["F-1".into()])]),
                    lookup: Default::default(),
                }],
                ..sel.clone()
            };
            let lookup = db.settled(&sel).await.unwrap().guards[0].lookup;
            assert_eq!(lookup, if index.is_empty() { Lookup::Joined } else { Lookup::PerRecord });
            let in_november = ids(&db, "SELECT id FROM tickets_2025_11 WHERE id = 1000").await;
            assert_eq!(in_november, BTreeSet::from([1000]));
            let out = db.run(&sel, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
            assert_eq!(out.partitions, vec!["tickets_2025_10", "tickets_2025_12"], "{lookup:?}");
            let past = ids(&db, "SELECT id FROM tickets WHERE created_at < '2026-01-01'").await;
            assert_eq!(past, BTreeSet::from([1000]), "only the referenced record is left past the cutoff ({lookup:?})");
        }
    });
}

#[test]
fn tls_modes_encrypt_and_verify_as_configured() {
    use lethe::{api::TlsMode, scrub::tls::TlsOptions};
    let (ca, sign) = common::tls::certificate_authority();
    let (other_ca, _) = common::tls::certificate_authority();
    let (cert, key) = sign(&["127.0.0.1", "localhost"]);
    let with = |pg: &PgServer, mode, ca_pem: Option<&str>| ConnectOptions {
        tls: TlsOptions { mode: Some(mode), ca_pem: ca_pem.map(String::from) },
        ..pg.options()
    };
    let encrypted = |db: Postgres| async move {
        db.client()
            .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
            .await
            .unwrap()
            .get::<_, bool>(0)
    };
    let pg = PgServer::start_tls(&cert, &key);
    rt().block_on(async {
        for (mode, ca_pem) in
            [(TlsMode::Require, None), (TlsMode::VerifyCA, Some(ca.as_str())), (TlsMode::VerifyFull, Some(ca.as_str()))]
        {
            let db = Postgres::connect(&with(&pg, mode, ca_pem), &Limits::default())
                .await
                .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
            assert!(encrypted(db).await, "{mode:?} encrypts");
        }
        let plain = Postgres::connect(&with(&pg, TlsMode::Disable, None), &Limits::default()).await.unwrap();
        assert!(!encrypted(plain).await);
        let refused =
            Postgres::connect(&with(&pg, TlsMode::VerifyFull, Some(other_ca.as_str())), &Limits::default()).await;
        assert!(refused.is_err(), "a server another CA signed is refused");
    });
    drop(pg);
    // A certificate from the right CA for another host: verifyCA accepts it, verifyFull does not.
    let (cert, key) = sign(&["db.example.com"]);
    let pg = PgServer::start_tls(&cert, &key);
    rt().block_on(async {
        let db = Postgres::connect(&with(&pg, TlsMode::VerifyCA, Some(ca.as_str())), &Limits::default()).await.unwrap();
        assert!(encrypted(db).await);
        assert!(
            Postgres::connect(&with(&pg, TlsMode::VerifyFull, Some(ca.as_str())), &Limits::default()).await.is_err()
        );
    });
}

#[test]
fn uuid_and_inet_identifiers_are_matched_as_their_type() {
    let pg = PgServer::start();
    rt().block_on(async {
        let db = connect(&pg).await;
        db.execute_batch(
            "CREATE TABLE devices (id int PRIMARY KEY, owner uuid NOT NULL);
             INSERT INTO devices VALUES (1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'), (2, 'b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12');",
        )
        .await
        .unwrap();
        let sel = |v: &str| Selection { table: table("devices"), older_than: None, subject: vec![(id("owner"), vec![v.into()])], keep_newer_than: None, held: vec![], guards: vec![] };
        // Upper case is the same uuid; a malformed one matches nothing.
        assert_eq!(db.run(&sel("not-a-uuid"), &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap().records_done, 0);
        assert_eq!(db.run(&sel("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"), &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap().records_done, 1);
        assert_eq!(ids(&db, "SELECT id::bigint FROM devices").await, BTreeSet::from([2]));
        // An inet column: the same address in another spelling matches; a
        // malformed one and a network around the address do not.
        db.execute_batch(
            "CREATE TABLE visits (id int PRIMARY KEY, ip inet NOT NULL);
             INSERT INTO visits VALUES (1, '2001:db8::1'), (2, '192.0.2.7'), (3, '192.0.2.8'), (4, '2001:db8::2');",
        )
        .await
        .unwrap();
        let sel = |v: Vec<&str>| Selection {
            table: table("visits"),
            older_than: None,
            subject: vec![(id("ip"), v.into_iter().map(String::from).collect())],
            keep_newer_than: None,
            held: vec![], guards: vec![],
        };
        let out = db.run(&sel(vec!["not-an-ip", "192.0.2.0/24"]), &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!(out.records_done, 0);
        let out = db.run(&sel(vec!["2001:DB8:0:0::1", " 192.0.2.7 "]), &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (2, 0));
        assert_eq!(ids(&db, "SELECT id::bigint FROM visits").await, BTreeSet::from([3, 4]));
    });
}

/// A `citext` identifier column compares as the column does, without case:
/// for an erasure and for a hold alike.
#[test]
fn case_insensitive_identifier_columns_match_without_case() {
    let pg = PgServer::start();
    rt().block_on(async {
        let db = connect(&pg).await;
        db.execute_batch(
            "CREATE EXTENSION citext;
             CREATE TABLE contacts (id int PRIMARY KEY, email citext NOT NULL, seen timestamptz NOT NULL);
             INSERT INTO contacts VALUES (1, 'Jane@Example.com', '2030-01-01'), (2, 'bob@example.com', '2020-01-01'),
               (3, 'carol@example.com', '2020-01-01'), (4, 'jane@example.org', '2030-01-01');",
        )
        .await
        .unwrap();
        let erase = Selection {
            table: table("contacts"),
            older_than: None,
            subject: vec![(id("email"), vec!["jane@EXAMPLE.com".into()])],
            keep_newer_than: None,
            held: vec![],
            guards: vec![],
        };
        let out = db.run(&erase, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (1, 0));
        assert_eq!(ids(&db, "SELECT id::bigint FROM contacts").await, BTreeSet::from([2, 3, 4]));
        let retention = Selection {
            older_than: Some((id("seen"), cutoff())),
            subject: vec![],
            held: vec![(id("email"), vec!["BOB@example.COM".into()])],
            ..erase
        };
        let out = db.run(&retention, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (1, 0));
        assert_eq!(ids(&db, "SELECT id::bigint FROM contacts").await, BTreeSet::from([2, 4]), "the held row stays");
        // A citext column is text to anonymization: hashed and redacted.
        let everyone = Selection {
            held: vec![],
            older_than: Some((id("seen"), chrono::Utc::now() + chrono::Duration::days(36500))),
            ..retention
        };
        let rules = vec![FieldRule { field: id("email"), strategy: AnonymizeStrategy::Hash, value: None }];
        let out = db
            .run(&everyone, &Action::Anonymize { rules, salt: "s".into() }, &Limits::default(), 0, |_| {})
            .await
            .unwrap();
        assert_eq!((out.records_done, out.remaining), (2, 0));
        assert_eq!(
            ids(&db, "SELECT count(DISTINCT email)::bigint FROM contacts WHERE email LIKE 'ANON-%'").await,
            BTreeSet::from([2])
        );
    });
}

/// Columns the server computes itself: a generated column and an identity
/// column `GENERATED ALWAYS`. An anonymization rule on one is refused
/// before any change, naming the column; selecting rows by a generated
/// column works like any other.
#[test]
fn columns_the_server_computes_are_refused_for_anonymization_and_usable_for_selection() {
    let pg = PgServer::start();
    rt().block_on(async {
        let db = connect(&pg).await;
        db.execute_batch(
            "CREATE TABLE members (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email text NOT NULL,
                                   email_key text GENERATED ALWAYS AS (lower(email)) STORED, closed_at timestamptz);
             INSERT INTO members (email, closed_at) VALUES ('Jane@Example.com', '2020-01-01'), ('bob@example.com', '2020-01-01'),
                                                           ('carol@example.com', '2030-01-01');",
        )
        .await
        .unwrap();
        let expired = Selection { table: table("members"), older_than: Some((id("closed_at"), cutoff())), subject: vec![], keep_newer_than: None, held: vec![], guards: vec![] };
        let snapshot = "SELECT id FROM members WHERE email LIKE '%@example.com' AND email_key = lower(email)";
        let before = ids(&db, snapshot).await;
        for (field, says) in [("email_key", "generated"), ("id", "identity")] {
            let rules = vec![FieldRule { field: id(field), strategy: AnonymizeStrategy::Fixed, value: Some("x".into()) }];
            let action = Action::Anonymize { rules, salt: String::new() };
            config_error(db.run(&expired, &action, &Limits::default(), 0, |_| {}).await, &[field, says, "cannot be anonymized"]);
        }
        assert_eq!(ids(&db, snapshot).await, before, "nothing changed");
        // The column it is computed from takes the rule, and the server recomputes.
        let rules = vec![FieldRule { field: id("email"), strategy: AnonymizeStrategy::Hash, value: None }];
        let out = db.run(&expired, &Action::Anonymize { rules, salt: "s".into() }, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (2, 0));
        assert_eq!(ids(&db, "SELECT id FROM members WHERE email_key LIKE 'anon-%'").await, BTreeSet::from([1, 2]));
        // A subject erased by the generated column.
        db.execute_batch("INSERT INTO members (email) VALUES ('Dave@Example.com'), ('erin@example.com')").await.unwrap();
        let erase = Selection { older_than: None, subject: vec![(id("email_key"), vec!["dave@example.com".into()])], ..expired };
        let out = db.run(&erase, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (1, 0));
        assert_eq!(ids(&db, "SELECT id FROM members").await, BTreeSet::from([1, 2, 3, 5]));
    });
}

/// See [`common::scrub::a_hashed_value_used_again_under_indexes_on_expressions_or_conditions_takes_a_fresh_hash`].
#[test]
fn a_hashed_value_used_again_under_indexes_on_expressions_or_conditions_takes_a_fresh_hash() {
    let pg = PgServer::start();
    rt().block_on(async {
        common::scrub::a_hashed_value_used_again_under_indexes_on_expressions_or_conditions_takes_a_fresh_hash(
            &PgStore(&pg),
            "timestamptz",
        )
        .await;
    });
}

/// See [`common::scrub::unique_keys_on_generated_columns_are_checked_as_the_server_computes_them`].
#[test]
fn unique_keys_on_generated_columns_are_checked_as_the_server_computes_them() {
    let pg = PgServer::start();
    rt().block_on(async {
        common::scrub::unique_keys_on_generated_columns_are_checked_as_the_server_computes_them(
            &PgStore(&pg),
            "timestamptz",
            "varchar(80)",
            false,
        )
        .await;
    });
}

/// A PostgreSQL server as the shared SQL checks use it.
struct PgStore<'a>(&'a PgServer);

impl SqlStore for PgStore<'_> {
    async fn exec(&self, sql: &str) {
        connect(self.0).await.execute_batch(sql).await.unwrap()
    }

    async fn ids(&self, sql: &str) -> BTreeSet<i64> {
        ids(&connect(self.0).await, sql).await
    }

    async fn driver(&self, unit: Option<UnixTimeUnit>) -> Driver {
        Driver::Postgres(connect(self.0).await.with_unix_time(unit))
    }
}

/// See [`common::scrub::unique_keys_of_several_columns_are_checked_before_anonymizing`];
/// and a key counting NULLs as equal refuses NULL for two records of one tenant.
#[test]
fn unique_keys_of_several_columns_are_checked_before_anonymizing() {
    let pg = PgServer::start();
    rt().block_on(async {
        common::scrub::unique_keys_of_several_columns_are_checked_before_anonymizing(&PgStore(&pg), "timestamptz").await;
        let db = connect(&pg).await;
        db.execute_batch(
            "CREATE TABLE badges (id bigint PRIMARY KEY, tenant int, code text, left_at timestamptz, UNIQUE NULLS NOT DISTINCT (tenant, code));
             INSERT INTO badges VALUES (1, 1, 'x', '2020-01-01'), (2, 1, 'y', '2020-01-01'), (3, 2, 'z', '2020-01-01'), (4, 3, 'w', '2020-01-01');",
        )
        .await
        .unwrap();
        let sel = |tenants: &[&str]| Selection {
            table: table("badges"),
            older_than: Some((id("left_at"), cutoff())),
            subject: vec![(id("tenant"), tenants.iter().map(|t| t.to_string()).collect())],
            keep_newer_than: None,
            held: vec![], guards: vec![],
        };
        let null = Action::Anonymize { rules: vec![FieldRule { field: id("code"), strategy: AnonymizeStrategy::Null, value: None }], salt: String::new() };
        config_error(db.run(&sel(&["1"]), &null, &Limits::default(), 0, |_| {}).await, &["code", "unique key badges_tenant_code_key"]);
        assert_eq!(ids(&db, "SELECT id FROM badges WHERE code IS NULL").await, BTreeSet::new(), "nothing changed");
        let out = db.run(&sel(&["2", "3"]), &null, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (2, 0));
    });
}

/// A unique index on an expression (`lower(email)`) is checked before
/// anonymizing as the server applies it: a fixed value for two records,
/// or one another record holds (in any case, for `lower`), is refused
/// before any change (and by the dry run), not met as a failed batch
/// mid-run; NULLs, which such an index keeps apart, are not refused.
#[test]
fn unique_indexes_on_expressions_are_checked_before_anonymizing() {
    rt().block_on(async {
        let db = connect(shared_pg()).await;
        db.execute_batch(
            "CREATE TABLE members_lc (id bigint PRIMARY KEY, email text, left_at timestamptz);
             CREATE UNIQUE INDEX members_lc_email ON members_lc (lower(email));
             INSERT INTO members_lc VALUES (1, 'a@example.com', '2020-01-01'), (2, 'b@example.com', '2020-01-01'), (3, 'gone', NULL);",
        )
        .await
        .unwrap();
        let of = |ids: &[&str]| Selection {
            table: table("members_lc"),
            older_than: Some((id("left_at"), cutoff())),
            subject: vec![(id("id"), ids.iter().map(|i| i.to_string()).collect())],
            keep_newer_than: None,
            held: vec![], guards: vec![],
        };
        let email = |strategy, value: &str| Action::Anonymize {
            rules: vec![FieldRule { field: id("email"), strategy, value: Some(value.into()) }],
            salt: "s".into(),
        };
        let says = ["email", "unique key members_lc_email", "use hash"];
        // Two records given one value; one given the value record 3 holds,
        // and one given it in capitals, which only `lower` makes the same.
        for (sel, action) in [
            (of(&["1", "2"]), email(AnonymizeStrategy::Fixed, "x")),
            (of(&["1"]), email(AnonymizeStrategy::Fixed, "gone")),
            (of(&["1"]), email(AnonymizeStrategy::Fixed, "GONE")),
        ] {
            config_error(db.pending(&sel, &action).await, &says);
            config_error(db.run(&sel, &action, &Limits::default(), 0, |_| {}).await, &says);
        }
        let unchanged = "SELECT id FROM members_lc WHERE email LIKE '%@example.com'";
        assert_eq!(ids(&db, unchanged).await, BTreeSet::from([1, 2]), "nothing changed");
        let out = db.run(&of(&["1"]), &email(AnonymizeStrategy::Fixed, "x"), &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (1, 0));
        // A record's own value in other capitals: it collides with nothing.
        let own = email(AnonymizeStrategy::Fixed, "B@EXAMPLE.COM");
        let out = db.run(&of(&["2"]), &own, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (1, 0));
        let null = Action::Anonymize { rules: vec![FieldRule { field: id("email"), strategy: AnonymizeStrategy::Null, value: None }], salt: "s".into() };
        let out = db.run(&of(&["1", "2"]), &null, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (2, 0));
        assert_eq!(ids(&db, "SELECT id FROM members_lc WHERE email IS NULL").await, BTreeSet::from([1, 2]));
    });
}

/// A Dataset naming a view, a materialized view or a foreign table gets an
/// answer saying what it named, from the dry run and from the run, and
/// nothing is changed: a simple view would take the batches' deletes, but
/// not the row ids they are found by.
#[test]
fn relations_that_are_not_tables_are_refused_naming_what_they_are() {
    rt().block_on(async {
        let db = connect(shared_pg()).await;
        db.execute_batch(
            "CREATE TABLE visits (id bigint PRIMARY KEY, seen timestamptz NOT NULL);
             INSERT INTO visits SELECT g, timestamptz '2020-01-01' + g * interval '1 day' FROM generate_series(1, 10) g;
             CREATE VIEW visits_view AS SELECT * FROM visits;
             CREATE MATERIALIZED VIEW visits_copy AS SELECT * FROM visits;
             CREATE EXTENSION IF NOT EXISTS file_fdw;
             CREATE SERVER IF NOT EXISTS files FOREIGN DATA WRAPPER file_fdw;
             CREATE FOREIGN TABLE visits_file (id bigint, seen timestamptz) SERVER files OPTIONS (filename '/dev/null');",
        )
        .await
        .unwrap();
        for (name, says) in [
            ("visits_view", "is a view"),
            ("visits_copy", "is a materialized view"),
            ("visits_file", "is a foreign table"),
        ] {
            let sel = Selection { table: table(name), older_than: Some((id("seen"), cutoff())), subject: vec![], keep_newer_than: None, held: vec![], guards: vec![] };
            config_error(db.plan(&sel).await, &[name, says]);
            config_error(db.run(&sel, &Action::Delete, &Limits::default(), 0, |_| {}).await, &[name, says]);
        }
        assert_eq!(ids(&db, "SELECT count(*) FROM visits").await, BTreeSet::from([10]), "nothing deleted");
        assert_eq!(ids(&db, "SELECT count(*) FROM visits_copy").await, BTreeSet::from([10]));
    });
}

/// A time column of a type that holds no instant would be compared as text
/// (or not at all): refused by the dry run and the run, naming the column
/// and its type, whether it is the window's column or the minimum's.
#[test]
fn a_time_column_that_holds_no_instant_is_refused_naming_it() {
    rt().block_on(async {
        let db = connect(shared_pg()).await;
        db.execute_batch(
            "CREATE TABLE stamps (id bigint PRIMARY KEY, at timestamptz, text_time text, json_time jsonb);
             INSERT INTO stamps VALUES (1, '2020-01-01', '01/01/2020', '\"2020-01-01\"'), (2, '2030-01-01', '2030-01-01', '\"2030-01-01\"');",
        )
        .await
        .unwrap();
        for (column, kind) in [("text_time", "type text"), ("json_time", "type jsonb")] {
            let stamps = Selection { table: table("stamps"), older_than: Some((id(column), cutoff())), subject: vec![], keep_newer_than: None, held: vec![], guards: vec![] };
            config_error(db.plan(&stamps).await, &[column, kind]);
            config_error(db.run(&stamps, &Action::Delete, &Limits::default(), 0, |_| {}).await, &[column, kind]);
            let retained = Selection { older_than: Some((id("at"), cutoff())), keep_newer_than: Some((id(column), cutoff())), ..stamps };
            config_error(db.run(&retained, &Action::Delete, &Limits::default(), 0, |_| {}).await, &[column, kind]);
        }
        assert_eq!(ids(&db, "SELECT id FROM stamps").await, BTreeSet::from([1, 2]), "nothing deleted");
    });
}

/// Time columns that count seconds or milliseconds since 1970: see
/// [`common::scrub::integer_time_columns_count_the_datasets_unit`].
#[test]
fn integer_time_columns_count_the_datasets_unit() {
    let pg = PgServer::start();
    rt().block_on(async {
        common::scrub::integer_time_columns_count_the_datasets_unit(&PgStore(&pg), "integer").await;
        // Partitioned on such a column: a partition whose bound stands for
        // an instant at or before the cutoff goes whole; the one holding
        // the cutoff is deleted row by row.
        let db = connect(&pg).await.with_unix_time(Some(UnixTimeUnit::Milliseconds));
        db.execute_batch(&partitioned_clicks()).await.unwrap();
        let sel = Selection {
            table: table("clicks"),
            older_than: Some((id("created"), unix_cutoff())),
            subject: vec![],
            keep_newer_than: None,
            held: vec![],
            guards: vec![],
        };
        let out = db.run(&sel, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!(out.partitions, vec!["clicks_before", "clicks_last_day"]);
        assert_eq!(out.records_done, 4);
        assert_eq!(
            ids(&db, "SELECT id FROM clicks").await,
            BTreeSet::from([5, 6]),
            "the records after the cutoff, and only they"
        );
    });
}

/// A table partitioned on `created`, milliseconds since 1970: partitions
/// before the last day before `cutoff()`, the last day, and the rest; one
/// record two days before, one a day before, one a millisecond before, one
/// at `cutoff()`, one a millisecond after and one a day after.
fn partitioned_clicks() -> String {
    let (c, day) = (cutoff().timestamp_millis(), 86_400_000);
    format!(
        "CREATE TABLE clicks (id bigint, created bigint NOT NULL) PARTITION BY RANGE (created);
         CREATE TABLE clicks_before PARTITION OF clicks FOR VALUES FROM (MINVALUE) TO ({});
         CREATE TABLE clicks_last_day PARTITION OF clicks FOR VALUES FROM ({}) TO ({c});
         CREATE TABLE clicks_rest PARTITION OF clicks FOR VALUES FROM ({c}) TO (MAXVALUE);
         INSERT INTO clicks VALUES (1, {}), (2, {}), (3, {}), (4, {c}), (5, {}), (6, {});",
        c - day,
        c - day,
        c - 2 * day,
        c - day,
        c - 1,
        c + 1,
        c + day
    )
}

/// `-infinity` and `infinity`, which PostgreSQL time types hold, are
/// compared as the server compares them (before and after every cutoff);
/// as the oldest or newest value of a selection they are no instant.
#[test]
fn infinite_times_are_compared_by_the_server_and_read_as_no_instant() {
    let pg = shared_pg();
    rt().block_on(async {
        let db = connect(pg).await;
        db.execute_batch(
            "CREATE TABLE endless (id bigint PRIMARY KEY, closed_at timestamptz, closed_on date);
             INSERT INTO endless VALUES (1, '-infinity', '-infinity'), (2, '2020-01-01', '2020-01-01'), (3, 'infinity', 'infinity');",
        )
        .await
        .unwrap();
        let year_2020 = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
        for column in ["closed_at", "closed_on"] {
            let sel = Selection { table: table("endless"), older_than: Some((id(column), cutoff())), subject: vec![], keep_newer_than: None, held: vec![], guards: vec![] };
            assert_eq!(db.count(&sel).await.unwrap(), 2, "{column}");
            assert_eq!(db.extreme(&sel, &id(column), false).await.unwrap(), None, "{column}: -infinity");
            assert_eq!(db.extreme(&sel, &id(column), true).await.unwrap(), Some(year_2020), "{column}");
        }
    });
}

/// See [`common::scrub::a_hashed_value_used_again_takes_a_fresh_hash`];
/// and the same for unique indexes on an expression (`lower(email)`) or
/// with a condition (nicknames of live members), by the columns they read.
#[test]
fn a_hashed_value_used_again_takes_a_fresh_hash() {
    rt().block_on(async {
        common::scrub::a_hashed_value_used_again_takes_a_fresh_hash(&PgStore(shared_pg()), "timestamptz").await;
        let db = connect(shared_pg()).await;
        db.execute_batch(
            "CREATE TABLE members_ci (id bigint PRIMARY KEY, email text, nick text, gone_at timestamptz, left_at timestamptz);
             CREATE UNIQUE INDEX members_ci_email ON members_ci (lower(email));
             CREATE UNIQUE INDEX members_ci_live_nick ON members_ci (nick) WHERE gone_at IS NULL;
             INSERT INTO members_ci VALUES (1, 'A@example.com', 'ann', NULL, '2020-01-01');",
        )
        .await
        .unwrap();
        let rule = |field: &str| FieldRule { field: id(field), strategy: AnonymizeStrategy::Hash, value: None };
        let action = Action::Anonymize { rules: vec![rule("email"), rule("nick")], salt: "s".into() };
        let left = Selection {
            table: table("members_ci"),
            older_than: Some((id("left_at"), cutoff())),
            subject: vec![],
            keep_newer_than: None,
            held: vec![], guards: vec![],
        };
        let out = db.run(&left, &action, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (1, 0));
        db.execute_batch("INSERT INTO members_ci VALUES (2, 'A@example.com', 'ann', NULL, '2020-01-01');").await.unwrap();
        let out = db.run(&left, &action, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (1, 0));
        let anonymized = "SELECT id FROM members_ci WHERE email LIKE 'anon-%' AND nick LIKE 'anon-%'";
        assert_eq!(ids(&db, anonymized).await, BTreeSet::from([1, 2]));
        let shared = "SELECT a.id FROM members_ci a JOIN members_ci b ON a.id <> b.id AND (a.email = b.email OR a.nick = b.nick)";
        assert_eq!(ids(&db, shared).await, BTreeSet::new());
    });
}

/// A unique index with a condition is checked before anonymizing as the
/// server applies it: a `fixed` value for two records the condition holds
/// for, or a NULL that brings a record under the condition beside another
/// holding its values, is refused before any change (and by the dry run),
/// naming the index and not the values; where the condition holds for one
/// changed record only, the same rule runs. An index the check cannot
/// restate is left to the batches: the server refuses the batch whole, and
/// the run stops there, that batch unchanged.
#[test]
fn unique_indexes_with_conditions_are_checked_before_anonymizing() {
    rt().block_on(async {
        let db = connect(shared_pg()).await;
        db.execute_batch(
            "CREATE TABLE members_live (id bigint PRIMARY KEY, nick text, gone_at timestamptz, left_at timestamptz);
             CREATE UNIQUE INDEX members_live_nick ON members_live (nick) WHERE gone_at IS NULL;
             INSERT INTO members_live VALUES (1, 'ann', NULL, '2020-01-01'), (2, 'bob', NULL, '2020-01-01'),
                                             (3, 'cy', '2020-02-01', '2020-01-01'), (4, 'di', NULL, '2030-01-01'),
                                             (5, 'cy', NULL, '2030-01-01');",
        )
        .await
        .unwrap();
        let left = Selection {
            table: table("members_live"),
            older_than: Some((id("left_at"), cutoff())),
            subject: vec![],
            keep_newer_than: None,
            held: vec![],
            guards: vec![],
        };
        let rule = |field: &str, strategy, value: Option<&str>| Action::Anonymize {
            rules: vec![FieldRule { field: id(field), strategy, value: value.map(String::from) }],
            salt: String::new(),
        };
        let as_inserted = "SELECT id FROM members_live WHERE (id, nick, gone_at IS NULL) IN
                             ((1, 'ann', true), (2, 'bob', true), (3, 'cy', false), (4, 'di', true), (5, 'cy', true))";
        // Records 1 and 2 are live: one nickname for both. Record 3 made
        // live (its gone_at NULL) beside record 5, which holds its nickname.
        for (field, strategy, value) in
            [("nick", AnonymizeStrategy::Fixed, Some("vanished")), ("gone_at", AnonymizeStrategy::Null, None)]
        {
            let action = rule(field, strategy, value);
            let says = [field, "unique key members_live_nick", "where its condition holds"];
            config_error(db.pending(&left, &action).await, &says);
            let r = db.run(&left, &action, &Limits::default(), 0, |_| {}).await;
            let Err(ScrubError::Config(message)) = &r else { panic!("refused ahead: {r:?}") };
            assert!(!["vanished", "ann", "bob", "cy"].iter().any(|v| message.contains(v)), "{message}");
            assert_eq!(ids(&db, as_inserted).await, BTreeSet::from([1, 2, 3, 4, 5]), "{field}: nothing changed");
        }
        // Where the condition holds for one changed record only.
        db.execute_batch("UPDATE members_live SET gone_at = '2020-02-01' WHERE id = 1").await.unwrap();
        let fixed = rule("nick", AnonymizeStrategy::Fixed, Some("vanished"));
        let out = db.run(&left, &fixed, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (3, 0));
        assert_eq!(ids(&db, "SELECT id FROM members_live WHERE nick = 'vanished'").await, BTreeSet::from([1, 2, 3]));
        assert_eq!(ids(&db, "SELECT id FROM members_live WHERE nick IN ('di', 'cy')").await, BTreeSet::from([4, 5]));

        // A column named as the check's own names are: not restated, so
        // the server refuses the first batch.
        db.execute_batch(
            "CREATE TABLE members_odd (id bigint PRIMARY KEY, lethe_c text, gone_at timestamptz, left_at timestamptz);
             CREATE UNIQUE INDEX members_odd_nick ON members_odd (lower(lethe_c)) WHERE gone_at IS NULL;
             INSERT INTO members_odd VALUES (1, 'ann', NULL, '2020-01-01'), (2, 'bob', NULL, '2020-01-01');",
        )
        .await
        .unwrap();
        let odd = Selection { table: table("members_odd"), ..left.clone() };
        let r =
            db.run(&odd, &rule("lethe_c", AnonymizeStrategy::Fixed, Some("gone")), &Limits::default(), 0, |_| {}).await;
        config_error(r, &["members_odd_nick", "23505"]);
        assert_eq!(
            ids(&db, "SELECT id FROM members_odd WHERE lethe_c IN ('ann', 'bob')").await,
            BTreeSet::from([1, 2])
        );
    });
}

/// A guard's referencing table is read through an index leading with a
/// referencing column where there is one, and otherwise once per
/// statement, never once per record: with `work_mem` too small to hash
/// the rows in a subquery, a lookup per record would scan the referencing
/// table 20,000 times here. Also: the selected table's referenced column
/// is named like the names the joined test gives the referencing rows'
/// columns, which must not capture it.
#[test]
fn a_guard_reads_its_referencing_table_through_an_index_or_once_a_statement() {
    let pg = shared_pg();
    rt().block_on(async {
        let db = connect(pg).await;
        let notes = ["lk_plain", "lk_indexed", "lk_partial", "lk_second"];
        let setup = |name: &str| {
            format!(
                "DROP TABLE IF EXISTS {name};
                 CREATE TABLE {name} (id bigint PRIMARY KEY, lethe_k0 bigint UNIQUE, created_at timestamptz);
                 INSERT INTO {name} SELECT g, 100000 + g, '2025-01-01'::timestamptz + g * interval '1 minute'
                   FROM generate_series(1, 20000) g;"
            )
        };
        let mut batch = setup("lk_accounts");
        for n in notes {
            // Every third account has a note, every other note is held.
            batch += &format!(
                "DROP TABLE IF EXISTS {n}; CREATE TABLE {n} (id bigint, account_key bigint, case_ref text);
                 INSERT INTO {n} SELECT g, 100000 + 3 * g, CASE WHEN g % 2 = 0 THEN 'F-1' END FROM generate_series(1, 6000) g;"
            );
        }
        batch += "CREATE INDEX ON lk_indexed (account_key);
                  CREATE INDEX ON lk_partial (account_key) WHERE case_ref IS NOT NULL;
                  CREATE INDEX ON lk_second (id, account_key);
                  ANALYZE lk_accounts, lk_plain, lk_indexed, lk_partial, lk_second;";
        db.execute_batch(&batch).await.unwrap();
        let guard = |n: &str| lethe::scrub::Guard {
            reason: lethe::scrub::GuardReason::Hold,
            table: table(n),
            columns: vec![id("account_key")],
            references: vec![id("lethe_k0")],
            rows: Some(vec![(id("case_ref"), vec!["F-1".into()])]),
            lookup: Default::default(),
        };
        let sel = |t: &str, n: &str| Selection { guards: vec![guard(n)], ..expiry_selection(t, &BTreeSet::new(), None) };
        let lookups: Vec<Lookup> = {
            let all = Selection { guards: notes.iter().map(|n| guard(n)).collect(), ..sel("lk_accounts", "lk_plain") };
            db.settled(&all).await.unwrap().guards.iter().map(|g| g.lookup).collect()
        };
        assert_eq!(lookups, [Lookup::Joined, Lookup::PerRecord, Lookup::Joined, Lookup::Joined]);
        // Held notes refer to accounts 6, 12, ..., 18,000: 3,000 of them.
        let kept: BTreeSet<i64> = (1..=3000).map(|g| 6 * g).collect();
        // How often a table was read: whole, and through an index.
        let reads = |n: &'static str| {
            let db = &db;
            async move {
                // This session's counts reach the statistics when it goes idle.
                db.execute_batch("SELECT pg_stat_force_next_flush()").await.unwrap();
                let q = format!("SELECT seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = '{n}'");
                let row = db.client().query_one(&q, &[]).await.unwrap();
                (row.get::<_, i64>(0), row.get::<_, i64>(1))
            }
        };
        // Too little memory to hash the held notes as a subquery's rows.
        db.execute_batch("SET work_mem = '64kB'; SET hash_mem_multiplier = 1").await.unwrap();
        let mut seen = Vec::new();
        for (n, lookup) in notes.into_iter().zip(lookups) {
            let before = reads(n).await;
            assert_eq!(db.count(&sel("lk_accounts", n)).await.unwrap(), 20000 - kept.len() as i64, "{n}");
            let after = reads(n).await;
            seen.push((n, "count", after.0 - before.0, after.1 - before.1));
            // A pass of the first half in block ranges, then of the rest
            // through the time index.
            let t = format!("lk_accounts_{n}");
            db.execute_batch(&setup(&t)).await.unwrap();
            let half = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::minutes(10_000);
            for (how, share, before) in [("ranges", 0.0, Some(half)), ("index", 1.0, None)] {
                let limits = Limits { block_pass_above: share, ..Limits::default() };
                let mut s = sel(&t, n);
                if let Some(at) = before {
                    s.older_than = Some((id("created_at"), at));
                }
                let before = reads(n).await;
                db.run(&s, &Action::Delete, &limits, 0, |_| {}).await.unwrap();
                let after = reads(n).await;
                seen.push((n, how, after.0 - before.0, after.1 - before.1));
            }
            assert_eq!(ids(&db, &format!("SELECT id FROM {t}")).await, kept, "{n}: exactly the referenced accounts stay");
            let (whole, indexed): (Vec<_>, Vec<_>) = seen.iter().filter(|r| r.0 == n).map(|r| (r.2, r.3)).unzip();
            match lookup {
                // Looked up per record, never read whole.
                Lookup::PerRecord => assert!(whole.iter().all(|w| *w == 0) && indexed.iter().all(|i| *i > 3000), "{seen:?}"),
                // Read whole once per statement at most (a count is one
                // statement, a pass a few dozen), or through an index the
                // server finds usable (the partial one, for held rows).
                _ => assert!(whole.iter().all(|w| *w < 200) && whole[0] <= 1, "{seen:?}"),
            }
        }
        // Partitions: February goes whole, January row by row around the
        // accounts held notes refer to, with no index on the notes. Most
        // notes refer to no account (theirs are gone): the planner then
        // expects the guard to keep nearly every record.
        db.execute_batch(
            "DROP TABLE IF EXISTS lk_parted, lk_parted_notes;
             CREATE TABLE lk_parted (id bigint, lethe_k0 bigint, created_at timestamptz NOT NULL)
               PARTITION BY RANGE (created_at);
             CREATE TABLE lk_parted_2025_01 PARTITION OF lk_parted FOR VALUES FROM ('2025-01-01') TO ('2025-02-01');
             CREATE TABLE lk_parted_2025_02 PARTITION OF lk_parted FOR VALUES FROM ('2025-02-01') TO ('2025-03-01');
             INSERT INTO lk_parted SELECT g, 100000 + g, '2025-01-01'::timestamptz + g * interval '3 minutes'
               FROM generate_series(1, 20000) g;
             CREATE TABLE lk_parted_notes (id bigint, account_key bigint, case_ref text);
             INSERT INTO lk_parted_notes SELECT g, 100000 + 6 * g, 'F-1' FROM generate_series(1, 2000) g;
             INSERT INTO lk_parted_notes SELECT g, 1000000 + g, 'F-1' FROM generate_series(2001, 32000) g;
             ANALYZE lk_parted, lk_parted_notes;",
        )
        .await
        .unwrap();
        let before = reads("lk_parted_notes").await;
        let out = db.run(&sel("lk_parted", "lk_parted_notes"), &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        let after = reads("lk_parted_notes").await;
        assert_eq!(out.partitions, vec!["lk_parted_2025_02"]);
        let left = ids(&db, "SELECT id FROM lk_parted").await;
        assert_eq!(left, (1..=2000).map(|g| 6 * g).collect(), "exactly the referenced accounts stay");
        assert!(after.0 - before.0 < 200, "the notes read whole {} times", after.0 - before.0);
        db.execute_batch("RESET work_mem; RESET hash_mem_multiplier").await.unwrap();
    });
}

/// A record another transaction changes, while a batch waits for it, to
/// a value a held note refers to stays. The table is partitioned and the
/// notes have no index, so the guard is joined, and the batch's rows are
/// not tested for it again as they are deleted: the batch locks each row
/// it finds, testing the locked row's latest version. (PostgreSQL 15 also
/// keeps it without the lock: a changed row is a new version, at a row id
/// the batch did not find. So this shows the end state, not which of the
/// two kept it.)
#[test]
fn a_record_changed_to_a_referenced_value_while_a_batch_waits_for_it_stays() {
    use lethe::scrub::{Guard, GuardReason, PartitionMode};
    let pg = shared_pg();
    rt().block_on(async {
        let (db, other, watcher) = (connect(pg).await, connect(pg).await, connect(pg).await);
        db.execute_batch(
            "DROP TABLE IF EXISTS lw_parted, lw_notes;
             CREATE TABLE lw_parted (id bigint, k bigint, created_at timestamptz NOT NULL) PARTITION BY RANGE (created_at);
             CREATE TABLE lw_parted_2025 PARTITION OF lw_parted FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
             INSERT INTO lw_parted SELECT g, 100000 + g, '2025-01-01'::timestamptz + g * interval '1 hour'
               FROM generate_series(1, 1000) g;
             CREATE TABLE lw_notes (id bigint, account_key bigint, case_ref text);
             INSERT INTO lw_notes SELECT g, 1000000 + g, 'F-1' FROM generate_series(1, 2000) g;
             ANALYZE lw_parted, lw_notes;",
        )
        .await
        .unwrap();
        // Note 1 will refer to record 500.
        other.execute_batch("BEGIN; UPDATE lw_parted SET k = 1000001 WHERE id = 500").await.unwrap();
        let guard = Guard {
            reason: GuardReason::Hold,
            table: table("lw_notes"),
            columns: vec![id("account_key")],
            references: vec![id("k")],
            rows: Some(vec![(id("case_ref"), vec!["F-1".into()])]),
            lookup: Default::default(),
        };
        let sel = Selection { guards: vec![guard], ..expiry_selection("lw_parted", &BTreeSet::new(), None) };
        assert_eq!(db.settled(&sel).await.unwrap().guards[0].lookup, Lookup::Joined);
        let limits = Limits { partitions: PartitionMode::Rows, ..Limits::default() };
        let commit = async {
            let waiting = "SELECT count(*) FROM pg_stat_activity
                            WHERE wait_event_type = 'Lock' AND datname = current_database() AND query LIKE '%lw_parted%'";
            while watcher.client().query_one(waiting, &[]).await.unwrap().get::<_, i64>(0) == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other.execute_batch("COMMIT").await.unwrap();
        };
        let (out, ()) = tokio::join!(db.run(&sel, &Action::Delete, &limits, 0, |_| {}), commit);
        assert_eq!(out.unwrap().records_done, 999);
        assert_eq!(ids(&db, "SELECT id FROM lw_parted").await, BTreeSet::from([500]), "the record now referred to stays");
    });
}

/// See [`common::scrub::records_rows_still_reference_are_kept_and_the_rest_deleted`].
#[test]
fn records_rows_still_reference_are_kept_and_the_rest_deleted() {
    rt().block_on(async {
        common::scrub::records_rows_still_reference_are_kept_and_the_rest_deleted(&PgStore(shared_pg()), "timestamptz")
            .await;
    });
}

/// See [`common::scrub::records_held_rows_of_another_table_reference_are_kept`].
#[test]
fn records_held_rows_of_another_table_reference_are_kept() {
    rt().block_on(async {
        common::scrub::records_held_rows_of_another_table_reference_are_kept(&PgStore(shared_pg()), "timestamptz")
            .await;
    });
}
