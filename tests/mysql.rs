//! The MySQL/MariaDB driver against a real MariaDB server on loopback.
//! As for PostgreSQL, every test checks the exact final state.

mod common;

use std::{collections::BTreeSet, time::Duration};

use chrono::{DateTime, TimeZone, Utc};
use common::mariadb::MariaDb;
use common::scrub::{
    SqlStore, config_error, contact_anonymization, cutoff, expiry_selection, id, older_than, patiently, rt, selected,
    stop_point, table, unix_cutoff,
};
use lethe::{
    api::{AnonymizeStrategy, UnixTimeUnit},
    scrub::{Action, ConnectOptions, FieldRule, Limits, ScrubError, Selection, Table, driver::Driver, mysql::Mysql},
};
use proptest::prelude::*;

async fn connect(db: &MariaDb) -> Mysql {
    Mysql::connect(&db.options(), &Limits::default()).await.unwrap()
}

async fn ids(db: &Mysql, sql: &str) -> BTreeSet<i64> {
    db.query_i64(sql).await.unwrap().into_iter().collect()
}

/// A connection, and its id on the server (for [`gone`]).
async fn connect_with_id(db: &MariaDb) -> (Mysql, i64) {
    let conn = connect(db).await;
    let id = conn.query_i64("SELECT CONNECTION_ID()").await.unwrap()[0];
    (conn, id)
}

/// Waits until connection `id` is gone. A statement a dropped run sent may
/// not have reached the server yet, so an idle connection is not enough;
/// the connection closes only after all it was sent has ended, commit or
/// rollback, as after a killed process.
async fn gone(db: &Mysql, id: i64) {
    let open = format!("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = {id}");
    while db.query_i64(&open).await.unwrap()[0] > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn shared() -> &'static MariaDb {
    static DB: std::sync::OnceLock<MariaDb> = std::sync::OnceLock::new();
    DB.get_or_init(MariaDb::start)
}

fn ts(t: DateTime<Utc>) -> String {
    format!("'{}'", t.format("%Y-%m-%d %H:%M:%S"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// The invariants, over generated tables: exactly the rows older than
    /// the cutoff, not held and not under minimum retention are deleted.
    #[test]
    fn retention_deletes_exactly_the_expired_unheld_rows(
        data in prop::collection::vec((0i32..20, prop::option::weighted(0.9, -50i64..50), prop::option::weighted(0.9, -50i64..50)), 0..200),
        held in prop::collection::btree_set(0i32..20, 0..5),
        with_minimum in any::<bool>(),
        batch in 1i64..50,
        walk in any::<bool>(),
        key_shape in 0u8..3,
    ) {
        rt().block_on(async {
            let db = connect(shared()).await;
            // Without an index on the time column the server reads the whole
            // table, and the run walks the primary key; with one and the walk
            // turned off, batches are `LIMIT n` through the index.
            // A primary key of one column or of two (walked column by
            // column), or no primary key but a unique key of NOT NULL columns.
            let index = if walk { "" } else { ", KEY (created_at)" };
            let (user, key) = match key_shape {
                0 => ("user_id int", "PRIMARY KEY (id)"),
                1 => ("user_id int NOT NULL", "PRIMARY KEY (user_id, id)"),
                _ => ("user_id int NOT NULL", "UNIQUE KEY (user_id, id)"),
            };
            db.execute_batch(&format!("DROP TABLE IF EXISTS events; CREATE TABLE events (id bigint NOT NULL, {user}, created_at datetime(6), issued_at datetime(6), {key}{index})")).await.unwrap();
            let minimum = cutoff() - chrono::Duration::days(20);
            let values: Vec<String> = data.iter().enumerate().map(|(i, (u, c, iss))| {
                let c = c.map(|d| ts(cutoff() + chrono::Duration::hours(d * 12))).unwrap_or("NULL".into());
                let iss = iss.map(|d| ts(minimum + chrono::Duration::hours(d * 12))).unwrap_or("NULL".into());
                format!("({i}, {u}, {c}, {iss})")
            }).collect();
            if !values.is_empty() {
                db.execute_batch(&format!("INSERT INTO events VALUES {}", values.join(", "))).await.unwrap();
            }
            let sel = expiry_selection("events", &held, with_minimum.then_some(minimum));
            let planned = db.plan(&sel).await.unwrap();
            let limits = Limits { initial_batch: batch, min_batch: 1, block_pass_above: if walk { 0.0 } else { f64::INFINITY }, ..Limits::default() };
            let deletes = "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'COM_DELETE'";
            let before = db.query_i64(deletes).await.unwrap()[0];
            let out = db.run(&sel, &Action::Delete, &limits, 0, |_| {}).await.unwrap();
            if walk && !data.is_empty() {
                // Nothing changed the table meanwhile: the walk alone covered it,
                // one statement a range, with no `LIMIT` batch after it.
                assert_eq!(db.query_i64(deletes).await.unwrap()[0] - before, out.batches, "only the walk's statements ran");
            }
            let expected: BTreeSet<i64> = data.iter().enumerate().filter(|(_, (u, c, iss))| !selected(*u, *c, *iss, &held, with_minimum)).map(|(i, _)| i as i64).collect();
            assert_eq!(ids(&db, "SELECT id FROM events").await, expected, "exact survivors");
            assert_eq!(out.records_done, planned.selected);
            assert_eq!(out.remaining, 0);
            // The closing count also read the oldest record left past the
            // cutoff (held or under minimum retention).
            let oldest = data.iter().filter(|(u, c, iss)| !selected(*u, *c, *iss, &held, with_minimum)).filter_map(|r| r.1).filter(|d| *d < 0).min();
            assert_eq!(out.oldest_past_cutoff, Some(oldest.map(|d| cutoff() + chrono::Duration::hours(d * 12))));
        });
    }

    /// See [`common::scrub::referring_tables_keep_exactly_what_they_must`]:
    /// walked along the primary key and in `LIMIT n` batches.
    #[test]
    fn retention_keeps_exactly_what_held_and_refusing_rows_refer_to(
        case in common::scrub::referring(),
        batch in 1i64..50,
        walk in any::<bool>(),
    ) {
        let limits = Limits { initial_batch: batch, min_batch: 1, block_pass_above: if walk { 0.0 } else { f64::INFINITY }, ..Limits::default() };
        rt().block_on(common::scrub::referring_tables_keep_exactly_what_they_must(&MariaStore(shared()), "datetime", ts, &case, &limits));
    }

    /// The same invariants for anonymization, walked or in `LIMIT n`
    /// batches: exactly the selected rows change, in every field of the
    /// rule set; no row is deleted; the others are as they were; a second
    /// run changes nothing.
    #[test]
    fn anonymization_changes_exactly_the_expired_unheld_rows(
        data in prop::collection::vec((0i32..20, prop::option::weighted(0.9, -50i64..50), prop::option::weighted(0.9, -50i64..50)), 0..200),
        held in prop::collection::btree_set(0i32..20, 0..5),
        with_minimum in any::<bool>(),
        batch in 1i64..50,
        walk in any::<bool>(),
    ) {
        rt().block_on(async {
            let db = connect(shared()).await;
            let index = if walk { "" } else { ", KEY (created_at)" };
            db.execute_batch(&format!("DROP TABLE IF EXISTS people; CREATE TABLE people (id bigint PRIMARY KEY, user_id int, created_at datetime(6), issued_at datetime(6), email varchar(40) NOT NULL UNIQUE, phone varchar(20), age int{index})")).await.unwrap();
            let minimum = cutoff() - chrono::Duration::days(20);
            let values: Vec<String> = data.iter().enumerate().map(|(i, (u, c, iss))| {
                let c = c.map(|d| ts(cutoff() + chrono::Duration::hours(d * 12))).unwrap_or("NULL".into());
                let iss = iss.map(|d| ts(minimum + chrono::Duration::hours(d * 12))).unwrap_or("NULL".into());
                let phone = if i % 3 == 0 { "NULL".to_string() } else { format!("'+49 {i}'") };
                format!("({i}, {u}, {c}, {iss}, 'user{i}@example.com', {phone}, {})", i % 4)
            }).collect();
            if !values.is_empty() {
                db.execute_batch(&format!("INSERT INTO people VALUES {}", values.join(", "))).await.unwrap();
            }
            // A checksum of each row's fields, in id order.
            let snapshot = "SELECT CRC32(CONCAT_WS('|', id, email, COALESCE(phone, '-'), age)) FROM people ORDER BY id";
            let before = db.query_i64(snapshot).await.unwrap();
            let sel = expiry_selection("people", &held, with_minimum.then_some(minimum));
            let action = contact_anonymization();
            let limits = Limits { initial_batch: batch, min_batch: 1, block_pass_above: if walk { 0.0 } else { f64::INFINITY }, ..Limits::default() };
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
            let distinct = db.query_i64("SELECT COUNT(DISTINCT email) FROM people WHERE email LIKE 'anon-%'").await.unwrap()[0];
            let expected = chosen.len() as i64;
            assert_eq!(distinct, expected, "hashes stay distinct");
            assert_eq!((out.records_done, out.remaining, pending), (expected, 0, expected));
            let again = db.run(&sel, &action, &limits, 0, |_| {}).await.unwrap();
            assert_eq!((again.records_done, again.remaining), (0, 0), "a second run changes nothing");
        });
    }
}

#[test]
fn erasure_binds_values_by_column_type() {
    let server = MariaDb::start();
    rt().block_on(async {
        let db = connect(&server).await;
        db.execute_batch(
            "CREATE TABLE `order` (id int PRIMARY KEY, `User` int NOT NULL, email varchar(100), placed_at datetime NOT NULL);
             INSERT INTO `order` VALUES (1, 42, 'jane@example.com', '2015-01-01'), (2, 42, NULL, '2025-06-01'),
               (3, 7, 'jane@example.com', '2016-01-01'), (4, 7, 'bob@example.com', '2016-01-01'), (5, 8, NULL, '2010-01-01');",
        )
        .await
        .unwrap();
        // '8abc' would equal 8 to MySQL's own conversion; bound as a typed value it matches nothing.
        let sneaky = Selection {
            table: table("order"),
            older_than: None,
            subject: vec![(id("User"), vec!["8abc".into(), "8 OR 1=1".into()])],
            keep_newer_than: None,
            held: vec![], guards: vec![],
        };
        let out = db.run(&sneaky, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!(out.records_done, 0, "no row matches a malformed integer identifier");
        let sel = Selection {
            subject: vec![(id("User"), vec!["42".into()]), (id("email"), vec!["jane@example.com".into()])],
            keep_newer_than: Some((id("placed_at"), Utc.with_ymd_and_hms(2019, 1, 1, 0, 0, 0).unwrap())),
            ..sneaky
        };
        let plan = db.plan(&sel).await.unwrap();
        assert_eq!((plan.selected, plan.under_minimum), (2, 1));
        // Foreign keys are introspected, for the erasure order and for warnings.
        db.execute_batch("CREATE TABLE order_lines (id int PRIMARY KEY, order_id int, FOREIGN KEY (order_id) REFERENCES `order` (id))").await.unwrap();
        assert_eq!(db.foreign_keys(&table("order")).await.unwrap(), vec![("order_lines".to_string(), "order".to_string())]);
        db.run(&sel, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!(ids(&db, "SELECT id FROM `order` ORDER BY id").await, BTreeSet::from([2, 4, 5]));
    });
}

/// Identifiers in an unsigned `bigint` column beyond the largest signed
/// 64-bit integer are numbers all the same: a hold on one keeps its rows,
/// an erasure of one takes them, and the plan counts as the pass does.
#[test]
fn unsigned_identifiers_past_the_signed_range_are_matched() {
    rt().block_on(async {
        let db = connect(shared()).await;
        db.execute_batch(
            "DROP TABLE IF EXISTS wide_ids;
             CREATE TABLE wide_ids (id int PRIMARY KEY, account bigint unsigned NOT NULL, seen_at datetime);
             INSERT INTO wide_ids VALUES (1, 18446744073709551615, '2015-01-01'), (2, 9223372036854775808, '2015-01-01'),
                                         (3, 42, '2015-01-01'), (4, 18446744073709551615, '2099-01-01');",
        )
        .await
        .unwrap();
        let all = "SELECT id FROM wide_ids";
        let held = Selection {
            held: vec![(id("account"), vec!["18446744073709551615".into()])],
            ..older_than("wide_ids", "seen_at")
        };
        let plan = db.plan(&held).await.unwrap();
        assert_eq!((plan.selected, plan.held), (2, 1));
        let out = db.run(&held, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (2, 0));
        assert_eq!(ids(&db, all).await, BTreeSet::from([1, 4]), "the held account's rows stay");
        let erase = Selection {
            older_than: None,
            subject: vec![(id("account"), vec!["18446744073709551615".into(), "18446744073709551616".into()])],
            held: vec![],
            ..held
        };
        assert_eq!(db.plan(&erase).await.unwrap().selected, 2);
        let out = db.run(&erase, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (2, 0));
        assert!(ids(&db, all).await.is_empty());
    });
}

/// A server message that quotes a record's value does not carry it on:
/// here an audit trigger copies each erased address into a table that
/// already holds it, and the duplicate-entry message would quote it.
#[test]
fn messages_quoting_a_records_value_leave_the_value_out() {
    let server = MariaDb::start();
    rt().block_on(async {
        let db = connect(&server).await;
        db.execute_batch(
            "CREATE TABLE members (id int PRIMARY KEY, email varchar(100), joined_at datetime);
             CREATE TABLE erased (email varchar(100) PRIMARY KEY, tenant int);
             INSERT INTO members VALUES (1, 'o''hara@example.com', '2015-01-01'), (2, 'kim@example.com', '2015-01-01');
             INSERT INTO erased VALUES ('o''hara@example.com', 1);
             CREATE TRIGGER audit BEFORE DELETE ON members FOR EACH ROW INSERT INTO erased VALUES (OLD.email, 1);",
        )
        .await
        .unwrap();
        let sel = Selection {
            table: table("members"),
            older_than: None,
            subject: vec![(id("email"), vec!["o'hara@example.com".into()])],
            keep_newer_than: None,
            held: vec![],
            guards: vec![],
        };
        let Err(ScrubError::Config(message)) = db.run(&sel, &Action::Delete, &Limits::default(), 0, |_| {}).await
        else {
            panic!("a duplicate entry is a configuration error");
        };
        assert!(message.contains("Duplicate entry '…' for key 'PRIMARY'") && message.contains("1062"), "{message}");
        assert!(!message.contains("hara") && !message.contains("example"), "{message}");
        assert_eq!(ids(&db, "SELECT id FROM members").await, BTreeSet::from([1, 2]), "nothing deleted");
        // A value the server quotes with no key after it.
        db.execute_batch("SET SESSION sql_mode = 'STRICT_ALL_TABLES'").await.unwrap();
        let Err(e) = db.execute_batch("UPDATE erased SET tenant = 'kim@example.com' WHERE tenant = 1").await else {
            panic!("strict mode refuses text in an integer column");
        };
        assert!(e.to_string().contains("value: '…'") && !e.to_string().contains("kim"), "{e}");
    });
}

#[test]
fn schemas_that_break_naive_code() {
    let server = MariaDb::start();
    rt().block_on(async {
        let db = connect(&server).await;
        db.execute_batch(
            "CREATE DATABASE `Audit`;
             CREATE TABLE `Audit`.`UserEvents` (`order` datetime, `User` varchar(10), payload text);
             INSERT INTO `Audit`.`UserEvents` VALUES ('2020-01-01', 'a', 'x'), ('2020-01-01', 'a', 'x'), ('2030-01-01', 'b', 'y'), (NULL, 'c', 'z');
             CREATE TABLE composite (tenant int, n int, at date, PRIMARY KEY (tenant, n));
             INSERT INTO composite VALUES (1, 1, '2020-01-01'), (1, 2, '2025-12-31'), (2, 1, '2026-01-01'), (2, 2, '2027-01-01');",
        )
        .await
        .unwrap();
        // Another database, no primary key, duplicate rows, mixed case, a reserved word as the time column.
        let sel = Selection {
            table: Table { schema: Some(id("Audit")), name: id("UserEvents") },
            older_than: Some((id("order"), cutoff())),
            subject: vec![],
            keep_newer_than: None,
            held: vec![], guards: vec![],
        };
        let out = db.run(&sel, &Action::Delete, &Limits { initial_batch: 1, min_batch: 1, ..Limits::default() }, 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (2, 0));
        let left: BTreeSet<i64> = ids(&db, "SELECT ASCII(`User`) FROM `Audit`.`UserEvents`").await;
        assert_eq!(left, BTreeSet::from([b'b' as i64, b'c' as i64]), "the future row and the row without a time stay");
        // Composite key and a date column: the cutoff's own day is not before it.
        let out = db.run(&Selection { table: table("composite"), older_than: Some((id("at"), cutoff())), ..sel.clone() }, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!(out.records_done, 2);
        assert_eq!(ids(&db, "SELECT tenant * 10 + n FROM composite").await, BTreeSet::from([21, 22]));

        // A time column that holds text, or integers the Dataset gives no
        // unit for, would be compared as text or as a number: refused,
        // naming its type or the missing unit.
        db.execute_batch(
            "CREATE TABLE stamps (id int PRIMARY KEY, epoch bigint, text_time varchar(30));
             INSERT INTO stamps VALUES (1, 1577836800, '2020-01-01 00:00:00'), (2, 1893456000, '2030-01-01 00:00:00'), (3, 0, 'n/a');",
        )
        .await
        .unwrap();
        for (column, kind) in [("epoch", "unixTimeUnit"), ("text_time", "varchar")] {
            let stamps = Selection { table: table("stamps"), older_than: Some((id(column), cutoff())), ..sel.clone() };
            config_error(db.run(&stamps, &Action::Delete, &Limits::default(), 0, |_| {}).await, &[column, kind]);
            let retained = Selection { older_than: None, subject: vec![(id("id"), vec!["3".into()])], keep_newer_than: Some((id(column), cutoff())), ..stamps };
            assert!(matches!(db.count(&retained).await, Err(ScrubError::Config(_))), "{column} as the minimum's column");
        }
        assert_eq!(ids(&db, "SELECT id FROM stamps").await, BTreeSet::from([1, 2, 3]), "nothing deleted");

        // A foreign key without ON DELETE CASCADE: parent first is refused
        // with a non-retryable error naming the table, and nothing goes.
        db.execute_batch(
            "CREATE TABLE customers (id int PRIMARY KEY, seen datetime NOT NULL);
             CREATE TABLE invoices (id int PRIMARY KEY, customer_id int, FOREIGN KEY (customer_id) REFERENCES customers (id));
             CREATE TABLE sessions (id int PRIMARY KEY, customer_id int, FOREIGN KEY (customer_id) REFERENCES customers (id) ON DELETE CASCADE);
             INSERT INTO customers VALUES (1, '2020-01-01'), (2, '2020-01-01'), (3, '2030-01-01');
             INSERT INTO invoices VALUES (10, 2);
             INSERT INTO sessions VALUES (20, 1), (21, 3);",
        )
        .await
        .unwrap();
        let mut found = db.foreign_keys(&table("customers")).await.unwrap();
        found.sort();
        assert_eq!(found, vec![("invoices".into(), "customers".into()), ("sessions".into(), "customers".into())]);
        let customers = Selection { table: table("customers"), older_than: Some((id("seen"), cutoff())), ..sel.clone() };
        config_error(db.run(&customers, &Action::Delete, &Limits::default(), 0, |_| {}).await, &["customers", "still referenced"]);
        assert_eq!(ids(&db, "SELECT id FROM customers").await, BTreeSet::from([1, 2, 3]), "a failed batch deletes nothing");
        assert_eq!(ids(&db, "SELECT id FROM sessions").await, BTreeSet::from([20, 21]));
        // Children first (the invoice), then the parents: the cascade takes
        // the expired customer's session, the newer customer's stays.
        let invoices = Selection { table: table("invoices"), subject: vec![(id("customer_id"), vec!["2".into()])], older_than: None, ..sel.clone() };
        db.run(&invoices, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        let out = db.run(&customers, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (2, 0));
        assert_eq!(ids(&db, "SELECT id FROM customers").await, BTreeSet::from([3]));
        assert_eq!(ids(&db, "SELECT id FROM sessions").await, BTreeSet::from([21]));
        assert_eq!(ids(&db, "SELECT count(*) FROM invoices").await, BTreeSet::from([0]));
    });
}

/// Rows written behind the primary-key walk while it runs (backdated, or
/// given a key the walk has passed) are found by the count that closes it
/// and deleted; held ones stay.
#[test]
fn rows_written_behind_a_key_walk_are_found_and_deleted() {
    let server = MariaDb::start();
    let opts = server.options();
    rt().block_on(async {
        let db = connect(&server).await;
        // 10,000 rows: odd ids past the cutoff, even ids newer; user 3 held. No time index.
        db.execute_batch(
            "CREATE TABLE visits (id bigint PRIMARY KEY, user_id int NOT NULL, seen_at datetime NOT NULL);
             INSERT INTO visits SELECT seq, seq % 45, TIMESTAMPADD(HOUR, IF(seq % 2 = 1, -1, 1) * CAST(seq % 300 + 1 AS SIGNED), '2026-01-01') FROM seq_1_to_10000;",
        )
        .await
        .unwrap();
        let sel = Selection {
            table: table("visits"),
            older_than: Some((id("seen_at"), cutoff())),
            subject: vec![],
            keep_newer_than: None,
            held: vec![(id("user_id"), vec!["3".into()])], guards: vec![],
        };
        let held = |i: &i64| i % 45 == 3;
        let planned = db.plan(&sel).await.unwrap().selected;
        assert_eq!(planned, (1..=10_000).filter(|i| i % 2 == 1 && !held(i)).count() as i64);

        // After the walk's first range (ids 1-500), another session backdates
        // the newer rows among ids 1-400 and gives two old rows ahead of the
        // walk keys behind it.
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let (done, answered) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            rt().block_on(async {
                let other = Mysql::connect(&opts, &Limits::default()).await.unwrap();
                wait.recv().unwrap();
                other
                    .execute_batch(
                        "UPDATE visits SET seen_at = seen_at - INTERVAL 10 YEAR WHERE id <= 400 AND seen_at >= '2026-01-01';
                         UPDATE visits SET id = -id WHERE id IN (9001, 9005);",
                    )
                    .await
                    .unwrap();
                done.send(()).unwrap();
            })
        });
        let mut calls = 0;
        let limits = Limits { initial_batch: 500, min_batch: 500, max_batch: 500, block_pass_above: 0.0, ..Limits::default() };
        let out = db
            .run(&sel, &Action::Delete, &limits, 0, |_| {
                calls += 1;
                if calls == 1 {
                    go.send(()).unwrap();
                    answered.recv().unwrap();
                }
            })
            .await
            .unwrap();
        writer.join().unwrap();
        assert!(calls > 20, "the walk went range by range ({calls} batches)");
        let backdated = (1..=400).filter(|i| i % 2 == 0).count() as i64;
        let backdated_held = (1..=400).filter(|i| i % 2 == 0 && held(i)).count() as i64;
        assert!(backdated_held > 0, "some backdated rows are held");
        assert_eq!(out.remaining, 0);
        assert_eq!(out.records_done, planned + backdated - backdated_held, "the backdated unheld rows deleted too");
        let expected: BTreeSet<i64> = (1..=10_000).filter(|i| held(i) || (i % 2 == 0 && *i > 400)).collect();
        let left = ids(&db, "SELECT id FROM visits").await;
        let wrong: Vec<_> = left.symmetric_difference(&expected).collect();
        assert!(wrong.is_empty(), "exactly the newer and the held rows stay; differing ids: {wrong:?}");
    });
}

/// An anonymization stopped at random points and run again ends exactly
/// where one uninterrupted run on an identical copy ends, as on PostgreSQL.
#[test]
fn an_interrupted_anonymization_ends_as_an_uninterrupted_one() {
    let server = MariaDb::start();
    rt().block_on(async {
        let db = connect(&server).await;
        db.execute_batch(
            "CREATE TABLE contacts (id bigint PRIMARY KEY, user_id int NOT NULL, email varchar(40) UNIQUE, phone text, age int,
                                    created_at datetime NOT NULL, KEY (created_at));
             INSERT INTO contacts SELECT seq, seq % 1000, CONCAT('user', seq, '@example.com'), CONCAT('+49 30 ', seq), 20 + seq % 50,
                 TIMESTAMPADD(HOUR, IF(seq % 2 = 0, -1, 1) * CAST(seq % 500 + 1 AS SIGNED), '2026-01-01') FROM seq_1_to_200000;
             CREATE TABLE whole LIKE contacts; INSERT INTO whole SELECT * FROM contacts;
             ANALYZE TABLE contacts, whole;",
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
        let mut seed = 0xbb67ae8584caa73bu64;
        let mut aborts = 0;
        for _ in 0..12 {
            common::next_random(&mut seed);
            let remaining = db.pending(&sel, &action).await.unwrap();
            // A fresh connection per attempt: an aborted one may be mid-statement.
            let (attempt, id) = connect_with_id(&server).await;
            let limits = Limits {
                max_batch: 2_000,
                max_records_per_second: Some(2_000),
                block_pass_above: if seed.is_multiple_of(2) { 0.0 } else { f64::INFINITY },
                ..Limits::default()
            };
            // As on PostgreSQL, each stop falls within 300 ms of the start or
            // of one of the first three batches: at most about 8,000 records
            // an attempt, so together the interrupted runs cannot reach the end.
            let (on_progress, stop) = stop_point((seed >> 8) % 4, Duration::from_millis((seed >> 16) % 300));
            let stopped = tokio::select! {
                _ = attempt.run(&sel, &action, &limits, planned - remaining, on_progress) => false,
                _ = stop => true,
            };
            aborts += u32::from(stopped);
            drop(attempt);
            gone(&db, id).await;
        }
        assert!(aborts >= 10, "at least ten interruptions ({aborts})");
        let remaining = db.pending(&sel, &action).await.unwrap();
        println!("the interrupted runs anonymized {}", planned - remaining);
        let out = db.run(&sel, &action, &Limits::default(), planned - remaining, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (planned, 0));
        // Matched by key (MariaDB's EXCEPT takes seconds here), each value
        // compared byte for byte.
        let differ = "SELECT COUNT(*) FROM contacts c JOIN whole w USING (id)
                       WHERE NOT (c.user_id <=> w.user_id AND BINARY c.email <=> BINARY w.email AND BINARY c.phone <=> BINARY w.phone
                                  AND c.age <=> w.age AND c.created_at <=> w.created_at)";
        assert_eq!(ids(&db, differ).await, BTreeSet::from([0]), "the same end state");
        let rows = "SELECT (SELECT COUNT(*) FROM contacts) + (SELECT COUNT(*) FROM whole)";
        assert_eq!(ids(&db, rows).await, BTreeSet::from([400_000]), "every record in both");
        // Every hash is the salted hash of the record's address, as the
        // server computes it for any column.
        let hashed = "SELECT COUNT(*) FROM contacts
                       WHERE CONVERT(email USING utf8mb4) = CONCAT('anon-', LEFT(SHA2(CONCAT('pepper', CONCAT('user', id, '@example.com')), 256), 35))";
        assert_eq!(ids(&db, hashed).await, BTreeSet::from([planned]));
        let kept = "SELECT COUNT(*) FROM contacts WHERE email = CONCAT('user', id, '@example.com') AND phone IS NOT NULL AND age <> 0";
        assert_eq!(ids(&db, kept).await, BTreeSet::from([100_000 + 200]), "the newer records and the held user's untouched");
    });
}

/// Three runs on one table at once, as on PostgreSQL: `LIMIT n` batches
/// with an earlier cutoff, a walk of the primary key with a later one
/// (both keeping a held user), and an erasure of two users. Each ends
/// without error (a deadlock or lock wait between them is retried), exactly
/// the records none of them may delete remain, and every record deleted is
/// counted by exactly one run.
#[test]
fn concurrent_runs_on_one_table_keep_what_must_be_kept_and_count_each_record_once() {
    let server = MariaDb::start();
    rt().block_on(async {
        let db = connect(&server).await;
        db.execute_batch(
            "CREATE TABLE logs (id bigint PRIMARY KEY, user_id int NOT NULL, logged_at datetime NOT NULL, KEY (logged_at));
             INSERT INTO logs SELECT seq, seq % 1000, TIMESTAMPADD(HOUR, IF(seq % 2 = 0, -1, 1) * CAST(seq % 500 + 1 AS SIGNED), '2026-01-01') FROM seq_1_to_200000;
             ANALYZE TABLE logs;",
        )
        .await
        .unwrap();
        let [earlier, later, erasure] = common::scrub::overlapping_selections();
        let (a, b, c) = (connect(&server).await, connect(&server).await, connect(&server).await);
        let walk = Limits { block_pass_above: 0.0, max_batch: 2_000, ..Limits::default() };
        let limited = Limits { block_pass_above: f64::INFINITY, max_batch: 2_000, ..Limits::default() };
        let small = Limits { initial_batch: 50, min_batch: 10, max_batch: 50, ..Limits::default() };
        let (a, b, c) = tokio::join!(
            a.run(&earlier, &Action::Delete, &limited, 0, |_| {}),
            b.run(&later, &Action::Delete, &walk, 0, |_| {}),
            c.run(&erasure, &Action::Delete, &small, 0, |_| {}),
        );
        let left = ids(&db, "SELECT id FROM logs").await;
        common::scrub::check_overlapping_runs([a.unwrap(), b.unwrap(), c.unwrap()], left, 200_000);
    });
}

#[test]
fn interrupted_runs_resume_to_the_exact_end_state() {
    let server = MariaDb::start();
    rt().block_on(async {
        let db = connect(&server).await;
        // 200,000 rows (MariaDB's sequence engine), every even one past the cutoff; user 14 held.
        db.execute_batch(
            "CREATE TABLE logs (id bigint PRIMARY KEY, user_id int NOT NULL, logged_at datetime NOT NULL, KEY (logged_at));
             INSERT INTO logs SELECT seq, seq % 1000, TIMESTAMPADD(HOUR, IF(seq % 2 = 0, -1, 1) * CAST(seq % 500 + 1 AS SIGNED), '2026-01-01') FROM seq_1_to_200000;",
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
        assert_eq!(planned, 99_800);
        let mut seed = 0x2545f4914f6cdd1du64;
        let mut aborts = 0;
        for _ in 0..12 {
            common::next_random(&mut seed);
            let remaining = db.count(&sel).await.unwrap();
            // A fresh connection per attempt: an aborted one may be mid-statement.
            let (attempt, id) = connect_with_id(&server).await;
            // Either way of batching, chosen at random: along the key or `LIMIT n`.
            let limits = Limits { max_batch: 2_000, block_pass_above: if seed.is_multiple_of(2) { 0.0 } else { f64::INFINITY }, ..Limits::default() };
            let after = Duration::from_millis(5 + seed % 60);
            if tokio::time::timeout(after, attempt.run(&sel, &Action::Delete, &limits, planned - remaining, |_| {})).await.is_err() {
                aborts += 1;
            }
            drop(attempt);
            gone(&db, id).await;
            let newer = db.query_i64("SELECT COUNT(*) FROM logs WHERE logged_at >= '2026-01-01'").await.unwrap()[0];
            assert_eq!(newer, 100_000, "nothing newer than the cutoff deleted");
            let held = db.query_i64("SELECT COUNT(*) FROM logs WHERE user_id = 14").await.unwrap()[0];
            assert_eq!(held, 200, "nothing held deleted");
        }
        assert!(aborts >= 10, "at least ten interruptions ({aborts})");
        let remaining = db.count(&sel).await.unwrap();
        let out = db.run(&sel, &Action::Delete, &Limits::default(), planned - remaining, |_| {}).await.unwrap();
        assert_eq!(out.records_done, planned);
        assert_eq!(db.query_i64("SELECT COUNT(*) FROM logs").await.unwrap()[0], 200_000 - planned);
    });
}

#[test]
fn anonymization_respects_not_null_and_unique_and_is_idempotent() {
    let server = MariaDb::start();
    rt().block_on(async {
        let db = connect(&server).await;
        db.execute_batch(
            "CREATE TABLE customers (id int PRIMARY KEY, email varchar(80) NOT NULL UNIQUE, phone varchar(30), full_name varchar(40) NOT NULL, closed_at datetime);
             INSERT INTO customers SELECT seq, CONCAT('user', seq, '@example.com'), CONCAT('+49 ', seq), CONCAT('Person ', seq),
               IF(seq % 3 = 0, NULL, TIMESTAMPADD(DAY, seq, '2025-01-01')) FROM seq_1_to_600;",
        )
        .await
        .unwrap();
        let sel = Selection { table: table("customers"), older_than: Some((id("closed_at"), cutoff())), subject: vec![], keep_newer_than: None, held: vec![], guards: vec![] };
        let rules = vec![
            FieldRule { field: id("email"), strategy: AnonymizeStrategy::Hash, value: None },
            FieldRule { field: id("phone"), strategy: AnonymizeStrategy::Null, value: None },
            FieldRule { field: id("full_name"), strategy: AnonymizeStrategy::Redact, value: None },
        ];
        let action = Action::Anonymize { rules, salt: "s3cret".into() };
        let expected = db.query_i64("SELECT COUNT(*) FROM customers WHERE closed_at < '2026-01-01'").await.unwrap()[0];
        let out = db.run(&sel, &action, &Limits { initial_batch: 50, ..Limits::default() }, 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (expected, 0));
        let stats = db
            .query_i64("SELECT COUNT(DISTINCT email) FROM customers WHERE email LIKE 'anon-%' AND phone IS NULL AND full_name REGEXP '^[*]+$'")
            .await
            .unwrap();
        assert_eq!(stats[0], expected, "every selected record anonymized, hashes distinct");
        let untouched = db.query_i64("SELECT COUNT(*) FROM customers WHERE email LIKE 'user%' AND phone IS NOT NULL").await.unwrap()[0];
        assert_eq!(untouched, 600 - expected);
        assert_eq!(db.run(&sel, &action, &Limits::default(), 0, |_| {}).await.unwrap().records_done, 0, "idempotent");
        let bad = Action::Anonymize { rules: vec![FieldRule { field: id("full_name"), strategy: AnonymizeStrategy::Null, value: None }], salt: String::new() };
        config_error(db.run(&sel, &bad, &Limits::default(), 0, |_| {}).await, &["NOT NULL"]);

        // Rules that would break a unique key on the column alone (or on
        // its first characters) are refused before anything changes; a key
        // of several columns is checked against the records (see
        // `unique_keys_of_several_columns_are_checked_before_anonymizing`).
        db.execute_batch(
            "CREATE TABLE coupons (id int PRIMARY KEY, code varchar(16) NOT NULL UNIQUE, label varchar(80), note varchar(16),
                                   tenant int, handle varchar(20), used_at datetime, UNIQUE (label), UNIQUE KEY short_label (label(12)),
                                   UNIQUE (tenant, handle));
             INSERT INTO coupons SELECT seq, CONCAT('C', seq), CONCAT('L', seq), CONCAT('N', seq), seq, CONCAT('h', seq), '2020-01-01'
               FROM seq_1_to_20;",
        )
        .await
        .unwrap();
        let used = Selection { table: table("coupons"), older_than: Some((id("used_at"), cutoff())), ..sel.clone() };
        let coupons = "SELECT id FROM coupons WHERE code LIKE 'C%' AND label LIKE 'L%' AND note LIKE 'N%' AND handle LIKE 'h%'";
        for (field, strategy, says) in [
            ("code", AnonymizeStrategy::Hash, "too few for hashes that stay distinct"),
            ("label", AnonymizeStrategy::Hash, "at most 12 characters"),
            ("label", AnonymizeStrategy::Fixed, "one fixed value"),
            ("code", AnonymizeStrategy::Redact, "redaction"),
            ("id", AnonymizeStrategy::Fixed, "UNIQUE"),
        ] {
            let rules = vec![FieldRule { field: id(field), strategy, value: Some("x".into()) }];
            config_error(db.run(&used, &Action::Anonymize { rules, salt: "s".into() }, &Limits::default(), 0, |_| {}).await, &[field, says]);
        }
        assert_eq!(ids(&db, coupons).await.len(), 20, "nothing changed");
        db.execute_batch("ALTER TABLE coupons DROP INDEX short_label").await.unwrap();
        let rules = vec![
            FieldRule { field: id("label"), strategy: AnonymizeStrategy::Hash, value: None },
            FieldRule { field: id("note"), strategy: AnonymizeStrategy::Hash, value: None },
            FieldRule { field: id("handle"), strategy: AnonymizeStrategy::Redact, value: None },
        ];
        let out = db.run(&used, &Action::Anonymize { rules, salt: "s".into() }, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (20, 0));
        assert_eq!(ids(&db, "SELECT COUNT(DISTINCT label) FROM coupons WHERE label LIKE 'anon-%' AND note LIKE 'anon-%' AND handle REGEXP '^[*]+$'").await, BTreeSet::from([20]));

        // On a server configured without strict mode, a value the column
        // cannot hold would be mangled with a warning (text in a number
        // column saved as 0, which then even compares equal to the text):
        // the session is strict, so the statement fails and nothing changes.
        // A fixed value longer than its column is refused before any query.
        db.execute_batch(
            "SET GLOBAL sql_mode = '';
             CREATE TABLE legacy (id int PRIMARY KEY, nickname varchar(8), age int, left_at datetime);
             INSERT INTO legacy SELECT seq, CONCAT('nick', seq), 30 + seq, '2020-01-01' FROM seq_1_to_10;",
        )
        .await
        .unwrap();
        let lax = connect(&server).await;
        let legacy = Selection { table: table("legacy"), older_than: Some((id("left_at"), cutoff())), ..sel.clone() };
        // (The server's message quotes the value; Lethe leaves it out, as it
        // cannot tell a rule's value from a record's.)
        for (field, value, says) in [("age", "unknown", "value: '…'"), ("nickname", "anonymous", "nickname holds at most 8")] {
            let rules = vec![FieldRule { field: id(field), strategy: AnonymizeStrategy::Fixed, value: Some(value.into()) }];
            config_error(lax.run(&legacy, &Action::Anonymize { rules, salt: String::new() }, &Limits::default(), 0, |_| {}).await, &[says]);
        }
        let untouched = "SELECT COUNT(*) FROM legacy WHERE nickname LIKE 'nick%' AND age > 30";
        assert_eq!(ids(&lax, untouched).await, BTreeSet::from([10]), "nothing changed");
    });
}

/// Counts that read much of a large table (the plan's, the run's closing
/// count) keep within the statement timeout whatever the table's size:
/// they walk the primary key in ranges, one snapshot throughout. The same
/// count in one statement runs out of time.
#[test]
fn counts_of_a_large_table_keep_within_the_statement_timeout() {
    rt().block_on(async {
        let server = shared();
        let admin = connect(server).await;
        // 1,000,000 rows: odd ids past the cutoff, even ids newer; user 3 held.
        admin
            .execute_batch(
                "CREATE TABLE big_events (id int PRIMARY KEY, user_id int NOT NULL, at datetime NOT NULL);
                 INSERT INTO big_events SELECT seq, seq % 45, TIMESTAMPADD(HOUR, IF(seq % 2 = 1, -1, 1) * CAST(seq % 300 + 1 AS SIGNED), '2026-01-01')
                   FROM seq_1_to_1000000;
                 ANALYZE TABLE big_events;",
            )
            .await
            .unwrap();
        let old = (1..=1_000_000i64).filter(|i| i % 2 == 1);
        let held = old.clone().filter(|i| i % 45 == 3).count() as i64;
        let selected = old.count() as i64 - held;
        // The single statement cannot: a count of the table takes far longer.
        admin.execute_batch("SET SESSION max_statement_time = 0.025").await.unwrap();
        let single = admin.query_i64("SELECT COUNT(*) FROM big_events WHERE at < '2026-01-01'").await;
        assert!(single.as_ref().is_err_and(|e| e.to_string().contains("max_statement_time")), "{single:?}");

        let tight = Limits { statement_timeout: Duration::from_millis(25), target_batch: Duration::from_millis(5), ..Limits::default() };
        let db = Mysql::connect(&server.options(), &tight).await.unwrap();
        let sel = Selection {
            table: table("big_events"),
            older_than: Some((id("at"), cutoff())),
            subject: vec![],
            keep_newer_than: None,
            held: vec![(id("user_id"), vec!["3".into()])], guards: vec![],
        };
        assert_eq!(patiently(async || db.count(&sel).await).await.unwrap(), selected);
        let plan = patiently(async || db.plan(&sel).await).await.unwrap();
        assert_eq!((plan.selected, plan.total, plan.held, plan.under_minimum), (selected, 1_000_000, held, 0));
        // A selective count, planned through an index, that still runs past
        // the timeout as one statement (a visit to the record for each
        // entry): counted again along the primary key. Three subjects of 45
        // (about 67,000 entries, some 80 ms idle here, where one subject's
        // 22,000 took 25 ms, the timeout itself), still read through the
        // index (`EXPLAIN`: a range of `big_events_user`).
        admin.execute_batch("SET SESSION max_statement_time = 0").await.unwrap();
        admin.execute_batch("CREATE INDEX big_events_user ON big_events (user_id); ANALYZE TABLE big_events").await.unwrap();
        admin.execute_batch("SET SESSION max_statement_time = 0.025").await.unwrap();
        let predicate = "user_id IN (7, 8, 9) AND at < '2026-01-01'";
        let single = admin.query_i64(&format!("SELECT COUNT(*) FROM big_events WHERE {predicate}")).await;
        assert!(single.as_ref().is_err_and(|e| e.to_string().contains("max_statement_time")), "{single:?}");
        let subjects = vec!["7".into(), "8".into(), "9".into()];
        let one = Selection { subject: vec![(id("user_id"), subjects)], held: vec![], ..sel.clone() };
        let of_7 = (1..=1_000_000i64).filter(|i| i % 2 == 1 && (7..=9).contains(&(i % 45))).count() as i64;
        assert_eq!(patiently(async || db.count(&one).await).await.unwrap(), of_7);
        let plan = patiently(async || db.plan(&one).await).await.unwrap();
        assert_eq!((plan.selected, plan.total, plan.held, plan.under_minimum), (of_7, 1_000_000, 0, 0));
        // Without a primary key, a unique key of NOT NULL columns is walked
        // the same way, by the counts and by the run (whose closing count
        // would otherwise be one statement, past the timeout).
        admin.execute_batch("SET SESSION max_statement_time = 0").await.unwrap();
        admin.execute_batch("ALTER TABLE big_events DROP PRIMARY KEY, ADD UNIQUE KEY walked (id)").await.unwrap();
        admin.execute_batch("SET SESSION max_statement_time = 0.025").await.unwrap();
        assert_eq!(patiently(async || db.count(&sel).await).await.unwrap(), selected);
        assert_eq!(patiently(async || db.count(&one).await).await.unwrap(), of_7);
        // Once more where a statement overran the timeout, resumed.
        let out = patiently(async || {
            let left = db.count(&sel).await?;
            db.run(&sel, &Action::Delete, &tight, selected - left, |_| {}).await
        })
        .await
        .unwrap();
        assert_eq!((out.records_done, out.remaining), (selected, 0));
        let reader = connect(server).await;
        let kept = ids(&reader, "SELECT COUNT(*) FROM big_events WHERE at >= '2026-01-01' OR user_id = 3").await;
        let total = ids(&reader, "SELECT COUNT(*) FROM big_events").await;
        assert_eq!((kept, total), (BTreeSet::from([1_000_000 - selected]), BTreeSet::from([1_000_000 - selected])));
        // The oldest record left past the cutoff (the held subject's), with
        // no index on the time column: one statement runs out of time; read
        // along the walked key.
        let single = admin.query_i64("SELECT CAST(UNIX_TIMESTAMP(MIN(at)) AS SIGNED) FROM big_events WHERE at < '2026-01-01'").await;
        assert!(single.as_ref().is_err_and(|e| e.to_string().contains("max_statement_time")), "{single:?}");
        let past = Selection { held: vec![], ..sel.clone() };
        let oldest = (1..=1_000_000i64).filter(|i| i % 2 == 1 && i % 45 == 3).map(|i| i % 300 + 1).max().unwrap();
        let oldest = cutoff() - Duration::from_secs(3600 * oldest as u64);
        assert_eq!(patiently(async || db.extreme(&past, &id("at"), false).await).await.unwrap(), Some(oldest));
        // The run's closing count, along the same key, read it too.
        assert_eq!(out.oldest_past_cutoff, Some(Some(oldest)));
    });
}

/// A read that cannot be split (a count of a table without a primary key,
/// which has no key to walk) and runs past the statement timeout fails
/// with the advice to raise it, not as a busy store to retry: it would
/// time out again on every retry.
#[test]
fn a_read_longer_than_the_statement_timeout_fails_with_advice_instead_of_retrying() {
    rt().block_on(async {
        let server = shared();
        connect(server)
            .await
            .execute_batch(
                "CREATE TABLE slow_events (id int NOT NULL, at datetime NOT NULL);
                 INSERT INTO slow_events SELECT seq, TIMESTAMPADD(MINUTE, seq, '2020-01-01') FROM seq_1_to_500000;",
            )
            .await
            .unwrap();
        let tight = Limits { statement_timeout: Duration::from_millis(1), ..Limits::default() };
        let db = Mysql::connect(&server.options(), &tight).await.unwrap();
        let sel = Selection {
            table: table("slow_events"),
            older_than: Some((id("at"), cutoff())),
            subject: vec![],
            keep_newer_than: None,
            held: vec![],
            guards: vec![],
        };
        for r in [db.count(&sel).await.map(|n| format!("{n}")), db.plan(&sel).await.map(|c| format!("{c:?}"))] {
            match r {
                Err(e @ ScrubError::Config(_)) => {
                    assert!(!e.retryable() && e.to_string().contains("limits.statementTimeout"), "{e}")
                }
                other => panic!("expected a configuration error, got {other:?}"),
            }
        }
        assert_eq!(ids(&connect(server).await, "SELECT COUNT(*) FROM slow_events").await, BTreeSet::from([500000]));
    });
}

#[test]
fn store_faults_are_classified_and_a_crash_mid_run_resumes() {
    let server = MariaDb::start();
    rt().block_on(async {
        let wrong = ConnectOptions { password: Some("wrong".into()), ..server.options() };
        match Mysql::connect(&wrong, &Limits::default()).await {
            Err(e @ ScrubError::Access(_)) => assert!(!e.retryable()),
            other => panic!("expected access denied, got {:?}", other.err()),
        }
        let db = connect(&server).await;
        config_error(db.probe(&table("missing_table")).await, &["`missing_table` does not exist"]);
        db.execute_batch(
            "CREATE TABLE sessions (id bigint PRIMARY KEY, seen datetime NOT NULL, KEY (seen));
             INSERT INTO sessions SELECT seq, TIMESTAMPADD(DAY, seq % 730, '2025-01-01') FROM seq_1_to_100000;",
        )
        .await
        .unwrap();
        let probe = db.probe(&table("sessions")).await.unwrap();
        assert!(probe.can_select && probe.can_delete && probe.can_update);
        assert!(probe.server_version.contains("MariaDB"), "{}", probe.server_version);
        let sel = Selection {
            table: table("sessions"),
            older_than: Some((id("seen"), cutoff())),
            subject: vec![],
            keep_newer_than: None,
            held: vec![],
            guards: vec![],
        };
        let planned = db.plan(&sel).await.unwrap().selected;
        let small = Limits { initial_batch: 1000, max_batch: 1000, ..Limits::default() };
        let mut killed = false;
        let result = db
            .run(&sel, &Action::Delete, &small, 0, |p| {
                if !killed && p.batches == 1 {
                    killed = true;
                    server.kill();
                }
            })
            .await;
        match result {
            Err(e) => assert!(e.retryable(), "a crash is retryable: {e}"),
            Ok(o) => panic!("the run cannot finish without its server: {o:?}"),
        }
        server.start_again();
        let db = connect(&server).await;
        let remaining = db.count(&sel).await.unwrap();
        assert!(remaining < planned, "the first batch was committed");
        let out = db.run(&sel, &Action::Delete, &Limits::default(), planned - remaining, |_| {}).await.unwrap();
        assert_eq!(out.records_done, planned);
        assert_eq!(db.query_i64("SELECT COUNT(*) FROM sessions WHERE seen < '2026-01-01'").await.unwrap()[0], 0);
        assert_eq!(db.query_i64("SELECT COUNT(*) FROM sessions").await.unwrap()[0], 100_000 - planned);
    });
}

#[test]
fn tls_modes_encrypt_and_verify_as_configured() {
    use lethe::{api::TlsMode, scrub::tls::TlsOptions};
    let (ca, sign) = common::tls::certificate_authority();
    let (other_ca, _) = common::tls::certificate_authority();
    let (cert, key) = sign(&["127.0.0.1", "localhost"]);
    let with = |db: &MariaDb, mode, ca_pem: Option<&str>| lethe::scrub::ConnectOptions {
        tls: TlsOptions { mode: Some(mode), ca_pem: ca_pem.map(String::from) },
        ..db.options()
    };
    let cipher =
        "SELECT LENGTH(VARIABLE_VALUE) FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'SSL_CIPHER'";
    let server = MariaDb::start_tls(&cert, &key);
    rt().block_on(async {
        for (mode, ca_pem) in
            [(TlsMode::Prefer, None), (TlsMode::Require, None), (TlsMode::VerifyFull, Some(ca.as_str()))]
        {
            let db = Mysql::connect(&with(&server, mode, ca_pem), &Limits::default())
                .await
                .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
            assert!(db.query_i64(cipher).await.unwrap()[0] > 0, "{mode:?} encrypts");
        }
        let plain = Mysql::connect(&with(&server, TlsMode::Disable, None), &Limits::default()).await.unwrap();
        assert_eq!(plain.query_i64(cipher).await.unwrap()[0], 0);
        let refused =
            Mysql::connect(&with(&server, TlsMode::VerifyFull, Some(other_ca.as_str())), &Limits::default()).await;
        assert!(refused.is_err(), "a server another CA signed is refused");
    });
    drop(server);
    // A certificate from the right CA for another host: verifyFull refuses it;
    // verifyCA is refused outright (the client library cannot do it).
    let (cert, key) = sign(&["db.example.com"]);
    let server = MariaDb::start_tls(&cert, &key);
    rt().block_on(async {
        assert!(
            Mysql::connect(&with(&server, TlsMode::VerifyFull, Some(ca.as_str())), &Limits::default()).await.is_err()
        );
        let ca_only = Mysql::connect(&with(&server, TlsMode::VerifyCA, Some(ca.as_str())), &Limits::default()).await;
        assert!(matches!(ca_only, Err(lethe::scrub::ScrubError::Config(_))));
    });
    // A server without TLS: require refuses rather than fall back, prefer falls back.
    let plain_server = shared();
    rt().block_on(async {
        assert!(Mysql::connect(&with(plain_server, TlsMode::Require, None), &Limits::default()).await.is_err());
        let db = Mysql::connect(&with(plain_server, TlsMode::Prefer, None), &Limits::default()).await.unwrap();
        assert_eq!(db.query_i64(cipher).await.unwrap()[0], 0);
    });
}

#[test]
fn whole_partitions_past_the_cutoff_are_dropped_or_detached_unless_a_row_must_stay() {
    use lethe::scrub::PartitionMode;
    rt().block_on(async {
        let db = connect(shared()).await;
        // Yearly partitions by RANGE COLUMNS and by TO_DAYS; the cutoff is 2026-03-01.
        let cutoff: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        for (t, partitioning) in [
            ("pcols", "PARTITION BY RANGE COLUMNS (created_at) (PARTITION p2024 VALUES LESS THAN ('2025-01-01'), PARTITION p2025 VALUES LESS THAN ('2026-01-01'), PARTITION p2026 VALUES LESS THAN ('2027-01-01'), PARTITION pmax VALUES LESS THAN (MAXVALUE))"),
            ("pdays", "PARTITION BY RANGE (TO_DAYS(created_at)) (PARTITION p2024 VALUES LESS THAN (TO_DAYS('2025-01-01')), PARTITION p2025 VALUES LESS THAN (TO_DAYS('2026-01-01')), PARTITION p2026 VALUES LESS THAN (TO_DAYS('2027-01-01')), PARTITION pmax VALUES LESS THAN MAXVALUE)"),
        ] {
            db.execute_batch(&format!(
                "DROP TABLE IF EXISTS {t}; DROP TABLE IF EXISTS {t}_p2024; DROP TABLE IF EXISTS {t}_p2025;
                 CREATE TABLE {t} (id bigint, user_id int, created_at datetime(6) NOT NULL, PRIMARY KEY (id, created_at)) {partitioning};
                 INSERT INTO {t} VALUES (1, 1, '2024-03-01'), (2, 2, '2024-09-01'), (3, 3, '2025-02-01'), (4, 4, '2025-11-01'),
                   (5, 5, '2026-01-15'), (6, 6, '2026-02-20'), (7, 7, '2026-04-01'), (8, 8, '2030-01-01');"
            ))
            .await
            .unwrap();
        }
        let sel = |t: &str, held: Vec<String>| Selection {
            table: table(t),
            older_than: Some((id("created_at"), cutoff)),
            subject: vec![],
            keep_newer_than: None,
            held: vec![(id("user_id"), held)], guards: vec![],
        };
        // User 3 (in p2025) is held: p2024 goes whole, p2025 row by row, p2026 straddles the cutoff.
        let out = db.run(&sel("pcols", vec!["3".into()]), &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!(out.partitions, vec!["p2024".to_string()]);
        assert_eq!(out.records_done, 5, "2 by partition, 1 in p2025 and 2 in p2026 by rows");
        assert_eq!(ids(&db, "SELECT id FROM pcols").await, BTreeSet::from([3, 7, 8]));
        assert_eq!(db.query_i64("SELECT COUNT(*) FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'pcols'").await.unwrap(), vec![3]);

        // Detach (MariaDB): the old years become tables of their own, nothing is lost.
        let limits = Limits { partitions: PartitionMode::Detach, ..Limits::default() };
        let out = db.run(&sel("pdays", vec![]), &Action::Delete, &limits, 0, |_| {}).await.unwrap();
        assert_eq!(out.partitions, vec!["p2024".to_string(), "p2025".to_string()]);
        assert_eq!(ids(&db, "SELECT id FROM pdays").await, BTreeSet::from([7, 8]));
        assert_eq!(ids(&db, "SELECT id FROM pdays_p2024").await, BTreeSet::from([1, 2]));
        assert_eq!(ids(&db, "SELECT id FROM pdays_p2025").await, BTreeSet::from([3, 4]));
        assert_eq!(out.remaining, 0);
    });
}

/// MariaDB's own address and uuid types: the same value in another
/// spelling matches, a malformed one matches nothing and fails nothing.
#[test]
fn inet6_and_uuid_identifiers_are_matched_as_their_type() {
    rt().block_on(async {
        let db = connect(shared()).await;
        db.execute_batch(
            "DROP TABLE IF EXISTS visits;
             CREATE TABLE visits (id int PRIMARY KEY, ip INET6 NOT NULL, device UUID NOT NULL);
             INSERT INTO visits VALUES (1, '2001:db8::1', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'),
               (2, '::ffff:192.0.2.7', 'b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12'), (3, '::ffff:192.0.2.8', 'c0eebc99-9c0b-4ef8-bb6d-6bb9bd380a13'),
               (4, '::', '00000000-0000-0000-0000-000000000000');",
        )
        .await
        .unwrap();
        let sel = |c: &str, v: Vec<&str>| Selection {
            table: table("visits"),
            older_than: None,
            subject: vec![(id(c), v.into_iter().map(String::from).collect())],
            keep_newer_than: None,
            held: vec![], guards: vec![],
        };
        let out = db.run(&sel("ip", vec!["not-an-ip", "192.0.2.0/24"]), &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!(out.records_done, 0);
        let out = db.run(&sel("device", vec!["not-a-uuid"]), &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!(out.records_done, 0);
        let out = db.run(&sel("ip", vec!["2001:DB8:0:0::1", "not-an-ip"]), &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (1, 0));
        let out = db.run(&sel("device", vec!["B0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A12"]), &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (1, 0));
        assert_eq!(ids(&db, "SELECT id FROM visits").await, BTreeSet::from([3, 4]), "a malformed value is not the zero address");
    });
}

/// Identifier columns the server would not compare with an identifier's
/// text exactly are refused, naming the column and its type, before
/// anything changes: a UUID's bytes in `binary(16)` and text padded in
/// `binary(8)` (matching nothing, so a held subject's rows would go
/// unprotected), floating-point and decimal numbers (compared as
/// floating-point, equal to a neighbouring identifier). So in an erasure,
/// in a retention pass's hold, and in the held rows of a guard. Bytes of
/// no fixed length compare exactly and are matched, and a generated column
/// showing the bytes as text is the way to match the others.
#[test]
fn identifier_columns_that_cannot_match_exactly_are_refused_naming_their_type() {
    rt().block_on(async {
        let db = connect(shared()).await;
        db.execute_batch(
            "DROP TABLE IF EXISTS exact_notes, exact_devices;
             CREATE TABLE exact_devices (id int PRIMARY KEY, uid binary(16), code binary(8), score double,
                                         amount decimal(20,0), handle varbinary(40),
                                         uid_hex char(32) AS (lower(hex(uid))) VIRTUAL, seen_at datetime);
             INSERT INTO exact_devices (id, uid, code, score, amount, handle, seen_at) VALUES
               (1, unhex('3f2504e04f8911d39a0c0305e82c3301'), '42', 12345678901234567, 12345678901234567, 'h1', '2015-01-01'),
               (2, unhex('00000000000000000000000000000002'), '43', 2, 2, 'h2', '2015-01-01');
             CREATE TABLE exact_notes (id int PRIMARY KEY, device_id int, author binary(16));
             INSERT INTO exact_notes VALUES (1, 1, unhex('3f2504e04f8911d39a0c0305e82c3301'));",
        )
        .await
        .unwrap();
        let all = "SELECT id FROM exact_devices";
        let uuid = "3f2504e0-4f89-11d3-9a0c-0305e82c3301";
        let sel = |subject: &[(&str, &str)], held: &[(&str, &str)]| Selection {
            table: table("exact_devices"),
            older_than: subject.is_empty().then(|| (id("seen_at"), cutoff())),
            subject: subject.iter().map(|(c, v)| (id(c), vec![v.to_string()])).collect(),
            keep_newer_than: None,
            held: held.iter().map(|(c, v)| (id(c), vec![v.to_string()])).collect(),
            guards: vec![],
        };
        for (column, ty, value) in [
            ("uid", "binary", uuid),
            ("code", "binary", "42"),
            ("score", "double", "12345678901234568"),
            ("amount", "decimal", "12345678901234567"),
        ] {
            let says = format!("identifier column {column} of table exact_devices has type {ty}");
            for s in [sel(&[(column, value)], &[]), sel(&[], &[(column, value)])] {
                config_error(db.plan(&s).await, &[&says, "generated column"]);
                config_error(db.run(&s, &Action::Delete, &Limits::default(), 0, |_| {}).await, &[&says]);
            }
        }
        let guarded = Selection {
            guards: vec![lethe::scrub::Guard {
                reason: lethe::scrub::GuardReason::Hold,
                table: table("exact_notes"),
                columns: vec![id("device_id")],
                references: vec![id("id")],
                rows: Some(vec![(id("author"), vec![uuid.to_string()])]),
                lookup: Default::default(),
            }],
            ..sel(&[], &[])
        };
        let says = "identifier column author of table exact_notes has type binary";
        config_error(db.plan(&guarded).await, &[says]);
        config_error(db.run(&guarded, &Action::Delete, &Limits::default(), 0, |_| {}).await, &[says]);
        assert_eq!(ids(&db, all).await, BTreeSet::from([1, 2]), "nothing deleted");
        for (column, value, left) in [("handle", "h2", vec![1]), ("uid_hex", "3f2504e04f8911d39a0c0305e82c3301", vec![])] {
            let out = db.run(&sel(&[(column, value)], &[]), &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
            assert_eq!((out.records_done, out.remaining), (1, 0), "{column}");
            assert_eq!(ids(&db, all).await, left.into_iter().collect(), "{column}");
        }
    });
}

/// Generated columns, stored and virtual: an anonymization rule on one is
/// refused before any change, naming the column; selecting rows by one
/// works like any other column.
#[test]
fn generated_columns_are_refused_for_anonymization_and_usable_for_selection() {
    rt().block_on(async {
        let db = connect(shared()).await;
        db.execute_batch(
            "CREATE TABLE members (id int AUTO_INCREMENT PRIMARY KEY, email varchar(80) NOT NULL,
                                   email_key varchar(80) AS (LOWER(email)) STORED, domain varchar(80) AS (SUBSTRING_INDEX(email, '@', -1)) VIRTUAL,
                                   closed_at datetime);
             INSERT INTO members (email, closed_at) VALUES ('Jane@Example.com', '2020-01-01'), ('bob@example.com', '2020-01-01'),
                                                           ('carol@example.com', '2030-01-01');",
        )
        .await
        .unwrap();
        let expired = Selection { table: table("members"), older_than: Some((id("closed_at"), cutoff())), subject: vec![], keep_newer_than: None, held: vec![], guards: vec![] };
        let snapshot = "SELECT id FROM members WHERE email LIKE '%@example.com' AND email_key = LOWER(email)";
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
        db.execute_batch("INSERT INTO members (email) VALUES ('Dave@Example.com'), ('erin@example.com')").await.unwrap();
        let erase = Selection { older_than: None, subject: vec![(id("email_key"), vec!["dave@example.com".into()])], ..expired };
        let out = db.run(&erase, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        assert_eq!((out.records_done, out.remaining), (1, 0));
        assert_eq!(ids(&db, "SELECT id FROM members").await, BTreeSet::from([1, 2, 3, 5]));
    });
}

/// A MariaDB server as the shared SQL checks use it.
struct MariaStore<'a>(&'a MariaDb);

impl SqlStore for MariaStore<'_> {
    async fn exec(&self, sql: &str) {
        connect(self.0).await.execute_batch(sql).await.unwrap()
    }

    async fn ids(&self, sql: &str) -> BTreeSet<i64> {
        ids(&connect(self.0).await, sql).await
    }

    async fn driver(&self, unit: Option<UnixTimeUnit>) -> Driver {
        Driver::Mysql(connect(self.0).await.with_unix_time(unit))
    }
}

/// See [`common::scrub::unique_keys_of_several_columns_are_checked_before_anonymizing`].
#[test]
fn unique_keys_of_several_columns_are_checked_before_anonymizing() {
    let server = MariaDb::start();
    rt().block_on(async {
        common::scrub::unique_keys_of_several_columns_are_checked_before_anonymizing(&MariaStore(&server), "datetime")
            .await;
    });
}

/// Time columns that count seconds or milliseconds since 1970: see
/// [`common::scrub::integer_time_columns_count_the_datasets_unit`].
#[test]
fn integer_time_columns_count_the_datasets_unit() {
    let server = shared();
    rt().block_on(async {
        common::scrub::integer_time_columns_count_the_datasets_unit(&MariaStore(server), "int unsigned").await;
        // Partitioned on such a column, by RANGE and by RANGE COLUMNS: a
        // partition whose bound stands for an instant at or before the
        // cutoff goes whole; the one holding the cutoff goes row by row.
        let db = connect(server).await.with_unix_time(Some(UnixTimeUnit::Milliseconds));
        let (c, day) = (cutoff().timestamp_millis(), 86_400_000);
        for (name, method) in [("clicks_range", "RANGE"), ("clicks_columns", "RANGE COLUMNS")] {
            db.execute_batch(&format!(
                "CREATE TABLE {name} (id bigint, created bigint NOT NULL) PARTITION BY {method} (created) (
                   PARTITION p_before VALUES LESS THAN ({}), PARTITION p_last_day VALUES LESS THAN ({c}),
                   PARTITION p_rest VALUES LESS THAN (MAXVALUE));
                 INSERT INTO {name} VALUES (1, {}), (2, {}), (3, {}), (4, {c}), (5, {}), (6, {});",
                c - day,
                c - 2 * day,
                c - day,
                c - 1,
                c + 1,
                c + day
            ))
            .await
            .unwrap();
            let sel = Selection {
                table: table(name),
                older_than: Some((id("created"), unix_cutoff())),
                subject: vec![],
                keep_newer_than: None,
                held: vec![],
                guards: vec![],
            };
            let out = db.run(&sel, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
            assert_eq!(out.partitions, vec!["p_before", "p_last_day"], "{method}");
            assert_eq!(out.records_done, 4, "{method}");
            assert_eq!(ids(&db, &format!("SELECT id FROM {name}")).await, BTreeSet::from([5, 6]), "{method}");
        }
    });
}

/// See [`common::scrub::unique_keys_on_generated_columns_are_checked_as_the_server_computes_them`].
#[test]
fn unique_keys_on_generated_columns_are_checked_as_the_server_computes_them() {
    rt().block_on(async {
        common::scrub::unique_keys_on_generated_columns_are_checked_as_the_server_computes_them(
            &MariaStore(shared()),
            "datetime",
            "varchar(80) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
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
        common::scrub::unique_keys_on_generated_columns_are_checked_as_the_server_computes_them(
            &MariaStore(shared()),
            "datetime",
            "varchar(80) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
            true,
        )
        .await;
    });
}

/// See [`common::scrub::a_generated_key_the_check_cannot_restate_is_judged_by_its_columns`].
#[test]
fn a_generated_key_the_check_cannot_restate_is_judged_by_its_columns() {
    rt().block_on(async {
        common::scrub::a_generated_key_the_check_cannot_restate_is_judged_by_its_columns(
            &MariaStore(shared()),
            "datetime",
        )
        .await;
    });
}

/// See [`common::scrub::a_hashed_value_used_again_takes_a_fresh_hash`].
#[test]
fn a_hashed_value_used_again_takes_a_fresh_hash() {
    rt().block_on(async {
        common::scrub::a_hashed_value_used_again_takes_a_fresh_hash(&MariaStore(shared()), "datetime").await;
    });
}

/// A trigger that inserts into the table it fires on is refused by the
/// server when it fires, so a run cannot go on forever deleting what the
/// trigger puts back: its first batch fails with the server's reason, and
/// nothing is deleted.
#[test]
fn a_trigger_that_inserts_what_is_deleted_fails_the_batch() {
    rt().block_on(async {
        let db = connect(shared()).await;
        db.execute_batch(
            "DROP TABLE IF EXISTS echo;
             CREATE TABLE echo (id int AUTO_INCREMENT PRIMARY KEY, at datetime NOT NULL);
             INSERT INTO echo (at) SELECT IF(seq % 2 = 0, '2020-01-01', '2030-01-01') FROM seq_1_to_2000;
             CREATE TRIGGER echo_again AFTER DELETE ON echo FOR EACH ROW INSERT INTO echo (at) VALUES (OLD.at);",
        )
        .await
        .unwrap();
        let sel = older_than("echo", "at");
        config_error(db.run(&sel, &Action::Delete, &Limits::default(), 0, |_| {}).await, &["'echo'", "trigger"]);
        assert_eq!(ids(&db, "SELECT count(*) FROM echo").await, BTreeSet::from([2000]), "nothing deleted");
    });
}

/// See [`common::scrub::records_rows_still_reference_are_kept_and_the_rest_deleted`].
#[test]
fn records_rows_still_reference_are_kept_and_the_rest_deleted() {
    rt().block_on(async {
        common::scrub::records_rows_still_reference_are_kept_and_the_rest_deleted(&MariaStore(shared()), "datetime")
            .await;
    });
}

/// See [`common::scrub::records_held_rows_of_another_table_reference_are_kept`].
#[test]
fn records_held_rows_of_another_table_reference_are_kept() {
    rt().block_on(async {
        common::scrub::records_held_rows_of_another_table_reference_are_kept(&MariaStore(shared()), "datetime").await;
    });
}

/// A guard's referencing table is read through an index leading with a
/// referencing column where the optimizer may use one, and otherwise once
/// per statement, never once per record: MariaDB runs a list of the
/// referencing values in a `DELETE` as a subquery per record, which with
/// no index reads the whole referencing table each time. Rows read come
/// from the server's table statistics. Also: the selected table's
/// referenced column is named like the names the joined test gives the
/// referencing rows' columns, which must not capture it; and a partitioned
/// table's check before a partition goes whole reads the guards' tables
/// under the locks it takes, one of them the table itself.
#[test]
fn a_guard_reads_its_referencing_table_through_an_index_or_once_a_statement() {
    use lethe::scrub::{Guard, GuardReason, Lookup};
    rt().block_on(async {
        let db = connect(shared()).await;
        db.execute_batch("SET GLOBAL userstat = 1").await.unwrap();
        let notes = ["lk_plain", "lk_indexed", "lk_second", "lk_ignored"];
        let setup = |name: &str| {
            format!(
                "DROP TABLE IF EXISTS {name};
                 CREATE TABLE {name} (id bigint PRIMARY KEY, lethe_k0 bigint UNIQUE, created_at datetime, KEY (created_at));
                 INSERT INTO {name} SELECT seq, 100000 + seq, '2025-01-01' + INTERVAL seq MINUTE FROM seq_1_to_6000;"
            )
        };
        let mut batch = setup("lk_accounts");
        for n in notes {
            // Every third account has a note, every other note is held.
            batch += &format!(
                "DROP TABLE IF EXISTS {n}; CREATE TABLE {n} (id bigint, account_key bigint, case_ref text);
                 INSERT INTO {n} SELECT seq, 100000 + 3 * seq, IF(seq % 2 = 0, 'F-1', NULL) FROM seq_1_to_2000;"
            );
        }
        batch += "CREATE INDEX lk_indexed_key ON lk_indexed (account_key);
                  CREATE INDEX lk_second_key ON lk_second (id, account_key);
                  CREATE INDEX lk_ignored_key ON lk_ignored (account_key) IGNORED;
                  ANALYZE TABLE lk_accounts, lk_plain, lk_indexed, lk_second, lk_ignored;";
        db.execute_batch(&batch).await.unwrap();
        let guard = |n: &str, column: &str, rows: Option<Vec<(lethe::api::Identifier, Vec<String>)>>| Guard {
            reason: GuardReason::Hold,
            table: table(n),
            columns: vec![id(column)],
            references: vec![id("lethe_k0")],
            rows,
            lookup: Default::default(),
        };
        let held = || Some(vec![(id("case_ref"), vec!["F-1".to_string()])]);
        let sel = |t: &str, guards: Vec<Guard>| Selection { guards, ..expiry_selection(t, &BTreeSet::new(), None) };
        let lookups: Vec<Lookup> = {
            let all = sel("lk_accounts", notes.iter().map(|n| guard(n, "account_key", held())).collect());
            db.settled(&all).await.unwrap().guards.iter().map(|g| g.lookup).collect()
        };
        assert_eq!(lookups, [Lookup::Joined, Lookup::PerRecord, Lookup::Joined, Lookup::Joined]);
        // Rows of table `n` the server has read so far.
        let reads = |n: &'static str| {
            let db = &db;
            async move {
                let q = format!(
                    "SELECT CAST(COALESCE(SUM(ROWS_READ), 0) AS SIGNED) FROM information_schema.TABLE_STATISTICS
                      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{n}'"
                );
                db.query_i64(&q).await.unwrap()[0]
            }
        };
        // Held notes refer to accounts 6, 12, ..., 6,000: 1,000 of them.
        let kept: BTreeSet<i64> = (1..=1000).map(|g| 6 * g).collect();
        // A statement reading the notes whole reads 2,000 rows; one
        // reading them per record, about 5,000 times that.
        let whole = 2000;
        for n in notes {
            let before = reads(n).await;
            let guarded = sel("lk_accounts", vec![guard(n, "account_key", held())]);
            assert_eq!(db.count(&guarded).await.unwrap(), 6000 - kept.len() as i64, "{n}");
            let read = reads(n).await - before;
            assert!(read <= whole, "{n}: a count read {read} notes");
            // A pass of the first half in key ranges, then of the rest
            // through the time index in `LIMIT` batches.
            let t = format!("lk_accounts_{n}");
            db.execute_batch(&setup(&t)).await.unwrap();
            let half = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::minutes(3000);
            for (how, share, until) in [("ranges", 0.0, Some(half)), ("limits", 1.0, None)] {
                let limits = Limits { block_pass_above: share, ..Limits::default() };
                let mut s = sel(&t, vec![guard(n, "account_key", held())]);
                if let Some(at) = until {
                    s.older_than = Some((id("created_at"), at));
                }
                let before = reads(n).await;
                let out = db.run(&s, &Action::Delete, &limits, 0, |_| {}).await.unwrap();
                let read = reads(n).await - before;
                // Each batch, and a few counts around them.
                assert!(read <= (out.batches as i64 + 10) * whole, "{n}, {how}: {read} notes read, {out:?}");
            }
            assert_eq!(ids(&db, &format!("SELECT id FROM {t}")).await, kept, "{n}: exactly the referenced accounts stay");
        }
        // Partitions by month: March goes whole; January and February row
        // by row around the accounts held notes refer to (with no index on
        // them), and the February account an account kept refers to.
        db.execute_batch(
            "DROP TABLE IF EXISTS lk_parted, lk_parted_notes;
             CREATE TABLE lk_parted (id bigint, lethe_k0 bigint, parent_key bigint, created_at datetime NOT NULL,
                                     PRIMARY KEY (id, created_at))
               PARTITION BY RANGE COLUMNS (created_at) (
                 PARTITION p2025_01 VALUES LESS THAN ('2025-02-01'), PARTITION p2025_02 VALUES LESS THAN ('2025-03-01'),
                 PARTITION p2025_03 VALUES LESS THAN ('2025-04-01'), PARTITION pmax VALUES LESS THAN (MAXVALUE));
             INSERT INTO lk_parted SELECT seq, 100000 + seq, IF(seq = 6, 116000, NULL),
                                          '2025-01-01' + INTERVAL 5 * seq MINUTE FROM seq_1_to_20000;
             CREATE TABLE lk_parted_notes (id bigint, account_key bigint, case_ref text);
             INSERT INTO lk_parted_notes SELECT seq, 100000 + 6 * seq, 'F-1' FROM seq_1_to_2000;
             ANALYZE TABLE lk_parted, lk_parted_notes;",
        )
        .await
        .unwrap();
        let guards = vec![guard("lk_parted_notes", "account_key", held()), guard("lk_parted", "parent_key", None)];
        let before = reads("lk_parted_notes").await;
        let out = db.run(&sel("lk_parted", guards), &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        let read = reads("lk_parted_notes").await - before;
        assert_eq!(out.partitions, vec!["p2025_03"]);
        let mut left: BTreeSet<i64> = (1..=2000).map(|g| 6 * g).collect();
        left.insert(16000);
        assert_eq!(ids(&db, "SELECT id FROM lk_parted").await, left, "exactly the referenced accounts stay");
        assert!(read <= (out.batches as i64 + 10) * whole, "the notes: {read} rows read, {out:?}");
    });
}
