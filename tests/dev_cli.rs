//! `lethe dev`: an embedded cluster a new user can point kubectl at, which
//! stops cleanly on SIGTERM.

use std::{process::Command, time::Duration};

#[test]
fn lethe_dev_serves_the_crds_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(["dev", "--no-operator", "--kubeconfig", kubeconfig.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if kubeconfig.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out =
        Command::new("kubectl").env("KUBECONFIG", &kubeconfig).args(["get", "crds", "-o", "name"]).output().unwrap();
    let names = String::from_utf8_lossy(&out.stdout);
    assert_eq!(names.lines().filter(|l| l.ends_with(".lethe.dev")).count(), 6, "{names}");
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "clean exit on SIGTERM");
}

#[test]
fn lethe_dev_runs_the_operator_on_an_embedded_sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let db = dir.path().join("app.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE sessions (id INTEGER PRIMARY KEY, user_id INTEGER, started_at TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
         INSERT INTO sessions SELECT i, i, datetime('now', '-' || (i * 3) || ' days', '+1 hours') FROM n;",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(["dev", "--kubeconfig", kubeconfig.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if kubeconfig.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let manifest = format!(
        "apiVersion: lethe.dev/v1alpha1\nkind: DataStore\nmetadata: {{name: app}}\nspec: {{type: sqlite, sqlite: {{path: {}}}}}\n---\napiVersion: lethe.dev/v1alpha1\nkind: Dataset\nmetadata: {{name: sessions}}\nspec:\n  storeRef: {{name: app}}\n  categories: [usage]\n  table: {{name: sessions}}\n  timestamps: {{created: started_at}}\n  retention: {{keepFor: 270d}}\n",
        db.display()
    );
    let file = dir.path().join("m.yaml");
    std::fs::write(&file, manifest).unwrap();
    let kubectl = |args: &[&str]| Command::new("kubectl").env("KUBECONFIG", &kubeconfig).args(args).output().unwrap();
    assert!(kubectl(&["apply", "-f", file.to_str().unwrap()]).status.success());
    let waited = kubectl(&["wait", "--for=condition=LastRunSucceeded", "dataset/sessions", "--timeout=60s"]);
    assert!(waited.status.success(), "{}", String::from_utf8_lossy(&waited.stderr));
    // 90 of 100 rows are at most 270 days old; exactly those remain.
    let left: i64 = conn.query_row("SELECT count(*) FROM sessions", [], |r| r.get(0)).unwrap();
    assert_eq!(left, 90);
    let recent: i64 = conn
        .query_row("SELECT count(*) FROM sessions WHERE started_at >= datetime('now', '-270 days')", [], |r| r.get(0))
        .unwrap();
    assert_eq!(recent, 90);
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
