//! `lethe scrub` as a process: a dry run changes nothing, a held dataset is
//! refused, and a pass killed with SIGKILL at random points, then run
//! again, ends in the exact expected state.

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
apiVersion: lethe.dev/v1alpha1\nkind: Dataset\nmetadata: {{name: tracking-events}}\nspec:\n  storeRef: {{name: shop}}\n  categories: [tracking]\n  table: {{name: tracking_events}}\n  timestamps: {{created: recorded_at}}\n---
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
    assert!(String::from_utf8_lossy(&out.stderr).contains("LegalHold \"fraud\" holds Dataset \"access-logs\""));
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
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
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
