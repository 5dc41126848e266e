//! `lethe report` against objects in the API emulator whose status says
//! exactly what happened: the numbers are checked one by one, and the HTML
//! page is rendered by headless Chromium.

mod common;

use std::process::Command;

use common::Cluster;
use serde_json::Value;

const NS: &str = "privacy";
/// A subject identifier that must appear in no output.
const SUBJECT: &str = "jane.roe@example.com";

fn object(c: &Cluster, manifest: &str, status: Option<&str>) {
    c.apply_text(manifest, &["-n", NS]);
    if let Some(st) = status {
        let v: Value = serde_yaml::from_str(manifest).unwrap();
        let target =
            format!("{}/{}", v["kind"].as_str().unwrap().to_lowercase(), v["metadata"]["name"].as_str().unwrap());
        c.ok(&["-n", NS, "patch", &target, "--subresource=status", "--type=merge", "-p", st]);
    }
}

fn request(c: &Cluster, name: &str, regime: &str, reason: &str, received: &str, status: &str) {
    let m = format!(
        "apiVersion: lethe.dev/v1alpha1\nkind: DeletionRequest\nmetadata: {{name: {name}}}\nspec:\n  subject: {{identifiers: {{email: \"{SUBJECT}\"}}}}\n  regime: {regime}\n  reason: {reason}\n  receivedAt: \"{received}\"\n"
    );
    object(c, &m, Some(status));
}

fn run(c: &Cluster, name: &str, dataset: &str, status: &str) {
    let m = format!(
        "apiVersion: lethe.dev/v1alpha1\nkind: ScrubRun\nmetadata: {{name: {name}}}\nspec: {{datasetRef: {{name: {dataset}}}, purpose: Retention, cutoff: \"2026-01-01T00:00:00Z\", timeField: created_at}}\n"
    );
    object(c, &m, Some(status));
}

fn lethe(c: &Cluster, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lethe")).args(args).env("KUBECONFIG", &c.kubeconfig).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn setup() -> Cluster {
    let c = Cluster::start();
    c.namespace(NS);
    object(
        &c,
        "apiVersion: lethe.dev/v1alpha1\nkind: DataStore\nmetadata: {name: shop-db}\nspec: {type: postgres, sql: {host: db, database: shop}}\n",
        None,
    );
    for (name, cats) in [("sessions", "[usage]"), ("invoices", "[financial, contact]")] {
        let m = format!(
            "apiVersion: lethe.dev/v1alpha1\nkind: Dataset\nmetadata: {{name: {name}}}\nspec:\n  storeRef: {{name: shop-db}}\n  categories: {cats}\n  table: {{name: {name}}}\n  timestamps: {{created: created_at}}\n  retention: {{keepFor: 90d}}\n"
        );
        object(&c, &m, None);
    }
    // March 2026. Requests: on time in 2 days; late in 40 days; open and overdue; open; before the window.
    request(
        &c,
        "r-fast",
        "GDPR",
        "accountClosed",
        "2026-03-02T00:00:00Z",
        r#"{"status":{"phase":"Completed","deadline":"2026-04-01T00:00:00Z","completionTime":"2026-03-04T00:00:00Z"}}"#,
    );
    request(
        &c,
        "r-late",
        "GDPR",
        "consentWithdrawn",
        "2026-02-01T00:00:00Z",
        r#"{"status":{"phase":"PartiallyCompleted","deadline":"2026-03-03T00:00:00Z","completionTime":"2026-03-13T00:00:00Z"}}"#,
    );
    request(
        &c,
        "r-overdue",
        "CCPA",
        "objection",
        "2026-01-01T00:00:00Z",
        r#"{"status":{"phase":"AwaitingApproval","deadline":"2026-02-15T00:00:00Z"}}"#,
    );
    request(
        &c,
        "r-open",
        "CCPA",
        "accountClosed",
        "2026-03-20T00:00:00Z",
        r#"{"status":{"phase":"Running","deadline":"2099-05-04T00:00:00Z"}}"#,
    );
    request(
        &c,
        "r-old",
        "GDPR",
        "accountClosed",
        "2025-01-01T00:00:00Z",
        r#"{"status":{"phase":"Completed","deadline":"2025-01-31T00:00:00Z","completionTime":"2025-01-02T00:00:00Z"}}"#,
    );
    // Retention runs: two weeks of sessions, one invoices run, one failure, one stopped by the brake.
    run(
        &c,
        "sessions-1",
        "sessions",
        r#"{"status":{"phase":"Succeeded","startTime":"2026-03-03T01:00:00Z","completionTime":"2026-03-03T01:05:00Z","counts":{"affected":120,"deleted":120,"anonymized":0,"skippedHeld":0,"skippedMinimumRetention":0}}}"#,
    );
    run(
        &c,
        "sessions-2",
        "sessions",
        r#"{"status":{"phase":"Succeeded","startTime":"2026-03-10T01:00:00Z","completionTime":"2026-03-10T01:05:00Z","counts":{"affected":80,"deleted":80,"anonymized":0,"skippedHeld":0,"skippedMinimumRetention":0}}}"#,
    );
    run(
        &c,
        "invoices-1",
        "invoices",
        r#"{"status":{"phase":"Succeeded","startTime":"2026-03-10T02:00:00Z","completionTime":"2026-03-10T02:01:00Z","counts":{"affected":7,"deleted":0,"anonymized":7,"skippedHeld":0,"skippedMinimumRetention":3}}}"#,
    );
    run(
        &c,
        "sessions-3",
        "sessions",
        r#"{"status":{"phase":"Failed","startTime":"2026-03-17T01:00:00Z","completionTime":"2026-03-17T01:00:05Z"}}"#,
    );
    run(
        &c,
        "invoices-2",
        "invoices",
        r#"{"status":{"phase":"AwaitingApproval","startTime":"2026-03-18T01:00:00Z","conditions":[{"type":"Stalled","status":"True","reason":"BlastRadiusExceeded","message":"would delete 90% of the table","lastTransitionTime":"2026-03-18T01:00:01Z"}]}}"#,
    );
    object(
        &c,
        "apiVersion: lethe.dev/v1alpha1\nkind: LegalHold\nmetadata: {name: litigation-42}\nspec: {reason: pending litigation, datasets: [invoices]}\n",
        None,
    );
    c
}

const WINDOW: [&str; 4] = ["--from", "2026-03-01T00:00:00Z", "--to", "2026-04-01T00:00:00Z"];

#[test]
fn the_report_counts_requests_and_retention_for_the_window() {
    let c = setup();
    let mut args = vec!["report", "-n", NS, "-o", "json"];
    args.extend(WINDOW);
    let (ok, out, err) = lethe(&c, &args);
    assert!(ok, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    let q = &r["requests"];
    assert_eq!(
        (q["received"].as_u64(), q["completed"].as_u64(), q["completedOnTime"].as_u64()),
        (Some(2), Some(2), Some(1))
    );
    assert_eq!((q["open"].as_u64(), q["overdue"].as_u64()), (Some(2), Some(1)));
    assert_eq!(q["medianDaysToCompletion"], 2.0);
    assert_eq!(q["p95DaysToCompletion"], 40.0);
    assert_eq!(q["byRegime"]["CCPA"]["overdue"], 1);
    assert_eq!(q["byRegime"]["GDPR"]["completed"], 2);
    assert_eq!(q["byReason"]["consentWithdrawn"]["completed"], 1);
    assert_eq!(q["byReason"]["objection"]["open"], 1);
    let t = &r["retention"];
    assert_eq!(t["runsSucceeded"], 3);
    assert_eq!(t["runsFailed"], 1);
    assert_eq!(t["blastRadiusStops"], 1);
    assert_eq!(t["recordsScrubbed"], 207);
    assert_eq!(t["recordsByCategory"]["usage"], 200);
    assert_eq!(t["recordsByCategory"]["financial"], 7);
    assert_eq!(t["recordsByCategory"]["contact"], 7);
    assert_eq!(t["recordsByStore"]["privacy/shop-db (postgres)"], 207);
    assert_eq!(t["recordsByWeek"]["2026-03-02"], 120);
    assert_eq!(t["recordsByWeek"]["2026-03-09"], 87);
    // The hold was placed today, after this window: not active at its end...
    assert_eq!(t["holdsActive"], serde_json::json!([]));
    // ...and active at the end of the last 30 days (the default window).
    let (ok, now, _) = lethe(&c, &["report", "-n", NS, "-o", "json"]);
    assert!(ok);
    let now: Value = serde_json::from_str(&now).unwrap();
    assert_eq!(now["retention"]["holdsActive"], serde_json::json!(["privacy/litigation-42"]));
    assert_eq!(now["requests"]["overdue"], 1, "still overdue now");

    let mut args = vec!["report", "-n", NS];
    args.extend(WINDOW);
    let (ok, table, _) = lethe(&c, &args);
    assert!(ok);
    assert!(table.contains("regime CCPA"), "{table}");
    assert!(table.contains("Days to completion: median 2.0, p95 40.0"), "{table}");
    for text in [&out, &table] {
        assert!(!text.contains(SUBJECT) && !text.contains("jane"), "the report must not carry identifiers");
    }

    // A window with nothing in it, and a window that is not one.
    let (ok, out, _) = lethe(
        &c,
        &["report", "-n", NS, "-o", "json", "--from", "2020-01-01T00:00:00Z", "--to", "2020-02-01T00:00:00Z"],
    );
    assert!(ok);
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["requests"]["received"], 0);
    assert_eq!(r["retention"]["recordsScrubbed"], 0);
    assert!(r["requests"]["medianDaysToCompletion"].is_null());
    let (ok, _, err) = lethe(&c, &["report", "--from", "2026-04-01T00:00:00Z", "--to", "2026-03-01T00:00:00Z"]);
    assert!(!ok && err.contains("window is empty"), "{err}");
    let (ok, _, err) = lethe(&c, &["report", "--since", "soon"]);
    assert!(!ok && err.contains("--since"), "{err}");
}

#[test]
fn the_html_report_renders_in_headless_chromium_with_its_charts() {
    let c = setup();
    let mut args = vec!["report", "-n", NS, "-o", "html"];
    args.extend(WINDOW);
    let (ok, page, err) = lethe(&c, &args);
    assert!(ok, "{err}");
    assert!(!page.contains(SUBJECT));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.html");
    std::fs::write(&file, &page).unwrap();
    let chromium = |extra: &[&str]| {
        let profile = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("chromium");
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", file.display()));
        let out = cmd.output().expect("chromium (run scripts/setup-test-env.sh)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The DOM after rendering: the numbers and both charts' bars are there.
    let (ok, dom, log) = chromium(&["--dump-dom"]);
    assert!(ok, "chromium failed: {log}");
    assert!(!log.contains("CONSOLE") && !log.contains("Uncaught"), "the page logged errors: {log}");
    let text_of = |id: &str| {
        let start = dom.find(&format!("id=\"{id}\">")).unwrap_or_else(|| panic!("#{id} not in the rendered page"))
            + id.len()
            + 6;
        dom[start..].split('<').next().unwrap().to_string()
    };
    assert_eq!(text_of("received"), "2");
    assert_eq!(text_of("overdue"), "1");
    assert_eq!(text_of("median"), "2.0");
    assert_eq!(text_of("p95"), "40.0");
    assert_eq!(text_of("scrubbed"), "207");
    assert_eq!(text_of("stops"), "1");
    assert!(
        dom.contains("aria-label=\"Time to completion\"") && dom.contains("aria-label=\"Records scrubbed per week\"")
    );
    // 7 buckets of time to completion and 2 weeks of retention.
    assert_eq!(dom.matches("class=\"bar\"").count(), 9, "{dom}");
    // And as pixels: a screenshot of the page is written.
    let png = dir.path().join("report.png");
    let (ok, _, log) = chromium(&["--window-size=1200,1800", &format!("--screenshot={}", png.display())]);
    assert!(ok, "{log}");
    let bytes = std::fs::read(&png).expect("a screenshot");
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000, "the screenshot is {} bytes", bytes.len());
}
