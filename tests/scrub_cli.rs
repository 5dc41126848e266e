//! `lethe scrub` as a process: a dry run changes nothing, a held dataset is
//! refused, and a pass killed with SIGKILL at random points, then run
//! again, ends in the exact expected state.

mod common;

use std::{process::Command, time::Duration};

fn lethe(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lethe")).args(args).output().unwrap()
}

fn count(db: &std::path::Path, sql: &str) -> i64 {
    rusqlite::Connection::open(db).unwrap().query_row(sql, [], |r| r.get(0)).unwrap()
}

/// A shop database with 300,000 tracking events (half older than 13 months
/// before 2026-11-23) and the manifests that govern it.
fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "CREATE TABLE tracking_events (id INTEGER PRIMARY KEY, customer_id INTEGER, recorded_at TEXT NOT NULL);
             CREATE INDEX te_time ON tracking_events (recorded_at);
             WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 300000)
             INSERT INTO tracking_events SELECT n, n % 5000,
               strftime('%Y-%m-%d %H:%M:%S', '2025-10-23', (CASE WHEN n % 2 = 0 THEN '-' ELSE '+' END) || (n % 20000) || ' minutes') FROM g;
             CREATE TABLE access_log (id INTEGER PRIMARY KEY, user_id INTEGER, logged_at TEXT);
             INSERT INTO access_log VALUES (1, 1, '2020-01-01');",
        )
        .unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(
        manifests.join("shop.yaml"),
        format!(
            "apiVersion: lethe.dev/v1alpha1\nkind: DataStore\nmetadata: {{name: shop}}\nspec: {{type: sqlite, sqlite: {{path: {}}}}}\n---
apiVersion: lethe.dev/v1alpha1\nkind: Dataset\nmetadata: {{name: tracking-events}}\nspec:\n  storeRef: {{name: shop}}\n  categories: [tracking]\n  table: {{name: tracking_events}}\n  timestamps: {{created: recorded_at}}\n  subjectFields: {{user_id: customer_id}}\n---
apiVersion: lethe.dev/v1alpha1\nkind: RetentionPolicy\nmetadata: {{name: tracking-13-months}}\nspec: {{categories: [tracking], keepFor: 13mo}}\n---
apiVersion: lethe.dev/v1alpha1\nkind: Dataset\nmetadata: {{name: access-logs}}\nspec:\n  storeRef: {{name: shop}}\n  categories: [logs]\n  table: {{name: access_log}}\n  timestamps: {{created: logged_at}}\n  retention: {{keepFor: 90d}}\n---
apiVersion: lethe.dev/v1alpha1\nkind: LegalHold\nmetadata: {{name: fraud}}\nspec: {{reason: investigation, datasets: [access-logs]}}\n",
            db.display()
        ),
    )
    .unwrap();
    (dir, db, manifests)
}

const AT: &str = "2026-11-23T00:00:00Z";
const EXPIRED: &str = "SELECT count(*) FROM tracking_events WHERE recorded_at < '2025-10-23 00:00:00'";
const KEPT: &str = "SELECT count(*) FROM tracking_events WHERE recorded_at >= '2025-10-23 00:00:00'";

#[test]
fn dry_run_counts_and_changes_nothing_and_holds_are_refused() {
    let (_dir, db, manifests) = setup();
    let expired = count(&db, EXPIRED);
    let out =
        lethe(&["scrub", "--dataset", "tracking-events", "-f", manifests.to_str().unwrap(), "--dry-run", "--at", AT]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["selected"], expired);
    assert_eq!(report["setBy"], "RetentionPolicy/tracking-13-months");
    assert_eq!(count(&db, EXPIRED), expired, "a dry run deletes nothing");

    let out = lethe(&["scrub", "--dataset", "access-logs", "-f", manifests.to_str().unwrap(), "--at", AT]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("LegalHold \"fraud\" holds Dataset \"access-logs\"") && err.contains("(LegalHold)"), "{err}");
    assert_eq!(count(&db, "SELECT count(*) FROM access_log"), 1, "held data stays");
}

#[test]
fn a_killed_scrub_process_resumes_to_the_exact_end_state() {
    let (_dir, db, manifests) = setup();
    let (expired, kept) = (count(&db, EXPIRED), count(&db, KEPT));
    assert!(expired > 100_000 && kept > 100_000);
    let args = ["scrub", "--dataset", "tracking-events", "-f", manifests.to_str().unwrap(), "--at", AT];
    let mut seed = 0x5deece66du64;
    let mut kills = 0;
    for _ in 0..12 {
        common::next_random(&mut seed);
        let mut child = Command::new(env!("CARGO_BIN_EXE_lethe"))
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(10 + seed % 150));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL: no chance to clean up
            kills += 1;
        }
        child.wait().unwrap();
        assert_eq!(count(&db, KEPT), kept, "nothing newer than the cutoff deleted");
    }
    assert!(kills >= 10, "at least ten kills ({kills})");
    let out = lethe(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["remaining"], 0);
    assert_eq!(count(&db, EXPIRED), 0);
    assert_eq!(count(&db, KEPT), kept);
    assert_eq!(count(&db, "SELECT count(*) FROM tracking_events"), kept);
}

/// The same against PostgreSQL with 1,000,000 rows: the scrub process is
/// killed at random points at least ten times, then a last run finishes.
#[test]
fn a_killed_scrub_process_on_postgres_resumes_to_the_exact_end_state() {
    let pg = common::pg::PgServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (client, conn) = rt.block_on(async {
        let url =
            format!("host=127.0.0.1 port={} user=postgres password={} dbname=postgres", pg.port, common::pg::PASSWORD);
        tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap()
    });
    rt.spawn(conn);
    let q = |sql: &str| -> i64 { rt.block_on(client.query_one(sql, &[])).unwrap().get(0) };
    rt.block_on(client.batch_execute(
        "CREATE TABLE logs (id bigint PRIMARY KEY, user_id int NOT NULL, logged_at timestamptz NOT NULL);
         INSERT INTO logs SELECT g, g % 1000, timestamptz '2025-08-25' + (CASE WHEN g % 2 = 0 THEN -1 ELSE 1 END) * (g % 500 + 1) * interval '1 hour'
           FROM generate_series(1, 1000000) g;
         CREATE INDEX ON logs (logged_at); ANALYZE logs;",
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("logs.yaml"),
        format!(
            "apiVersion: lethe.dev/v1alpha1\nkind: DataStore\nmetadata: {{name: db}}\nspec:\n  type: postgres\n  sql: {{host: 127.0.0.1, port: {}, database: postgres}}\n  tls: {{mode: disable}}\n  limits: {{maxRecordsPerSecond: 50000, targetBatchMillis: 20}}\n---
apiVersion: lethe.dev/v1alpha1\nkind: Dataset\nmetadata: {{name: logs}}\nspec:\n  storeRef: {{name: db}}\n  categories: [logs]\n  table: {{name: logs}}\n  timestamps: {{created: logged_at}}\n  retention: {{keepFor: 90d}}\n",
            pg.port
        ),
    )
    .unwrap();
    // 90 days before the run: 2025-08-25.
    let args = ["scrub", "--dataset", "logs", "-f", dir.path().to_str().unwrap(), "--at", "2025-11-23T00:00:00Z"];
    let (expired, kept) = (
        q("SELECT count(*) FROM logs WHERE logged_at < '2025-08-25'"),
        q("SELECT count(*) FROM logs WHERE logged_at >= '2025-08-25'"),
    );
    assert_eq!(expired + kept, 1_000_000);
    let mut seed = 0x27bb2ee687b0b0fdu64;
    let (mut kills, mut left, mut least_wait) = (0, 1_000_000, 100);
    for _ in 0..40 {
        if kills >= 12 && left < 1_000_000 {
            break;
        }
        common::next_random(&mut seed);
        let mut child = Command::new(env!("CARGO_BIN_EXE_lethe"))
            .args(args)
            .env("LETHE_STORE_USERNAME", "postgres")
            .env("LETHE_STORE_PASSWORD", common::pg::PASSWORD)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let wait = least_wait + seed % 600;
        std::thread::sleep(Duration::from_millis(wait));
        let killed = child.try_wait().unwrap().is_none();
        if killed {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        assert_eq!(
            q("SELECT count(*) FROM logs WHERE logged_at >= '2025-08-25'"),
            kept,
            "nothing newer than the cutoff deleted"
        );
        let now = q("SELECT count(*) FROM logs");
        let end = if killed { "killed" } else { "ended on its own" };
        println!("{end} after {wait} ms: {} records deleted", left - now);
        // A run killed before its first batch committed: on a busy machine
        // starting up takes longer, so the next runs live longer.
        if now == left {
            least_wait = (least_wait * 2).min(3_000);
        }
        left = now;
    }
    assert!(kills >= 10, "at least ten kills ({kills})");
    assert!(left < 1_000_000, "the killed runs made progress");
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(args)
        .env("LETHE_STORE_USERNAME", "postgres")
        .env("LETHE_STORE_PASSWORD", common::pg::PASSWORD)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(q("SELECT count(*) FROM logs WHERE logged_at < '2025-08-25'"), 0);
    assert_eq!(q("SELECT count(*) FROM logs"), kept);
}

#[test]
fn subject_holds_need_the_held_identifiers_and_keep_exactly_their_rows() {
    let (_dir, db, manifests) = setup();
    std::fs::write(
        manifests.join("hold.yaml"),
        "apiVersion: lethe.dev/v1alpha1\nkind: LegalHold\nmetadata: {name: vip}\nspec:\n  reason: dispute\n  datasets: [tracking-events]\n  subjects: {secretRef: {name: vip-subjects}}\n",
    )
    .unwrap();
    let held_expired =
        "SELECT count(*) FROM tracking_events WHERE customer_id IN (7, 8) AND recorded_at < '2025-10-23 00:00:00'";
    let (expired, held, kept) = (count(&db, EXPIRED), count(&db, held_expired), count(&db, KEPT));
    assert!(held > 0);
    let args = ["scrub", "--dataset", "tracking-events", "-f", manifests.to_str().unwrap(), "--at", AT];
    // Without the held identifiers the pass does not run.
    let out = lethe(&args);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("LETHE_HELD_0_NAME=vip"));
    assert_eq!(count(&db, EXPIRED), expired);
    // Named only by a type the Dataset does not map: it does not run either,
    // naming the type, not the value.
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(args)
        .env("LETHE_HELD_0_NAME", "vip")
        .env("LETHE_HELD_0_EMAIL", "seven@example.com\n")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("names subjects by email") && !stderr.contains("seven@"), "{stderr}");
    assert_eq!(count(&db, EXPIRED), expired);
    // With them, exactly the held subjects' expired rows stay.
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(args)
        .env("LETHE_HELD_0_NAME", "vip")
        .env("LETHE_HELD_0_USER_ID", "7\n8\n")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["held"], held);
    assert_eq!(count(&db, EXPIRED), held);
    assert_eq!(count(&db, held_expired), held);
    assert_eq!(count(&db, KEPT), kept);
}

/// A local pass keeps what held rows of a referring Dataset refer to, as
/// the cluster does: customers whose orders a hold covers stay (their
/// orders would go with them, `ON DELETE CASCADE`). Without the held
/// subjects' identifiers, every customer an order refers to stays; with
/// them, only the held subject's. A customer a receipt (of a table no
/// Dataset names) references through a key that refuses its deletion
/// stays too, reported as referenced.
#[test]
fn a_local_pass_keeps_what_held_rows_of_a_referring_dataset_refer_to() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, user_id INTEGER, left_at TEXT);
             INSERT INTO customers VALUES (1, 1, '2020-01-01'), (2, 2, '2020-01-01'), (3, 3, '2020-01-01'), (4, 4, '2026-11-01');
             CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER, placed_at TEXT,
                                  customer_id INTEGER REFERENCES customers (id) ON DELETE CASCADE);
             INSERT INTO orders VALUES (11, 1, '2026-11-01', 1), (12, 2, '2026-11-01', 2);
             CREATE TABLE receipts (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers (id));
             INSERT INTO receipts VALUES (21, 3);",
        )
        .unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let dataset = |name: &str, table: &str, time: &str, extra: &str| {
        format!(
            "apiVersion: lethe.dev/v1alpha1\nkind: Dataset\nmetadata: {{name: {name}}}\nspec:\n  storeRef: {{name: shop}}\n  categories: [financial]\n  table: {{name: {table}}}\n  timestamps: {{created: {time}}}\n  subjectFields: {{user_id: user_id}}\n  retention: {{keepFor: 365d}}\n{extra}"
        )
    };
    std::fs::write(
        manifests.join("shop.yaml"),
        [
            format!(
                "apiVersion: lethe.dev/v1alpha1\nkind: DataStore\nmetadata: {{name: shop}}\nspec: {{type: sqlite, sqlite: {{path: {}}}}}\n",
                db.display()
            ),
            dataset("customers", "customers", "left_at", ""),
            dataset("orders", "orders", "placed_at", "  relations: [{dataset: customers, columns: [customer_id], references: [id]}]\n"),
            "apiVersion: lethe.dev/v1alpha1\nkind: LegalHold\nmetadata: {name: fraud}\nspec:\n  reason: dispute\n  datasets: [orders]\n  subjects: {secretRef: {name: fraud-subjects}}\n".into(),
        ]
        .join("---\n"),
    )
    .unwrap();
    let args = ["scrub", "--dataset", "customers", "-f", manifests.to_str().unwrap(), "--at", AT, "--dry-run"];
    let report = |out: std::process::Output| -> serde_json::Value {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // Not told whom the hold names: every customer an order refers to is kept.
    let dry = report(lethe(&args));
    let counted = |r: &serde_json::Value, done: &str| ["selected", "held", "referenced", done].map(|k| r[k].as_i64());
    assert_eq!(counted(&dry, "recordsDone"), [Some(0), Some(2), Some(1), Some(0)], "{dry:#}");
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(&args[..args.len() - 1])
        .env("LETHE_HELD_0_NAME", "fraud")
        .env("LETHE_HELD_0_USER_ID", "2\n")
        .output()
        .unwrap();
    let done = report(out);
    assert_eq!(counted(&done, "recordsDone"), [Some(1), Some(1), Some(1), Some(1)], "{done:#}");
    assert_eq!(count(&db, "SELECT count(*) FROM customers WHERE id IN (2, 3, 4)"), 3);
    assert_eq!(count(&db, "SELECT count(*) FROM customers"), 3);
    assert_eq!(count(&db, "SELECT count(*) FROM receipts"), 1);
    assert_eq!(count(&db, "SELECT count(*) FROM orders WHERE id = 12"), 1, "the held order stays");
    assert_eq!(count(&db, "SELECT count(*) FROM orders"), 1, "the other went with its customer");
}
