//! The operator end to end: the real `kubectl` against the project's API
//! emulator, the `lethe operator` binary as a separate process, and a real
//! PostgreSQL server holding the data.

mod common;

use std::time::Duration;

use common::{
    Cluster,
    operator::{Operator, Sql, eventually},
    pg::{PASSWORD, PgServer},
};

const LIMIT: Duration = Duration::from_secs(120);

/// The shop's tables with 5,000 customers. About a tenth of each table is
/// past its window (under the default 20% brake); customer 4711 is the
/// subject of the example DeletionRequest.
const SHOP: &str = r#"
CREATE TABLE customers (id bigint PRIMARY KEY, email text UNIQUE NOT NULL, full_name text NOT NULL, phone text,
  street_address text, created_at timestamptz NOT NULL, last_login_at timestamptz, closed_at timestamptz);
INSERT INTO customers
  SELECT i, CASE WHEN i = 4711 THEN 'jane.doe@example.com' ELSE 'c' || i || '@example.com' END, 'Customer ' || i,
         '+49 30 ' || i, 'Street ' || i, now() - interval '3 years', now() - interval '1 day',
         CASE WHEN i % 50 = 0 THEN now() - interval '60 days' END
  FROM generate_series(1, 5000) i;
CREATE TABLE marketing_preferences (id bigint PRIMARY KEY, customer_id bigint, email_address text,
  created_at timestamptz, last_interest_at timestamptz);
INSERT INTO marketing_preferences
  SELECT i, i, 'c' || i || '@example.com', now() - interval '4 years',
         now() - make_interval(months => CASE WHEN i % 10 = 0 THEN 30 ELSE i % 20 END, days => 1)
  FROM generate_series(1, 5000) i;
UPDATE marketing_preferences SET email_address = 'jane.doe@example.com' WHERE id = 4711;
CREATE TABLE tracking_events (id bigint PRIMARY KEY, customer_id bigint, device_id text, recorded_at timestamptz);
INSERT INTO tracking_events
  SELECT i, i, 'dev-' || i, now() - make_interval(months => CASE WHEN i % 10 = 0 THEN 14 ELSE i % 12 END, days => 1)
  FROM generate_series(1, 5000) i;
CREATE TABLE access_log (id bigint PRIMARY KEY, user_id bigint, logged_at timestamptz);
INSERT INTO access_log
  SELECT i, i, now() - make_interval(days => CASE WHEN i % 10 = 0 THEN 200 ELSE i % 80 END, hours => 1)
  FROM generate_series(1, 5000) i;
CREATE TABLE invoices (id bigint PRIMARY KEY, customer_id bigint REFERENCES customers (id), issued_at timestamptz,
  amount numeric);
INSERT INTO invoices
  SELECT i, i, now() - make_interval(years => i % 12, days => 1), 10 FROM generate_series(1, 5000) i;
-- Support tickets reference customers, but no Dataset declares them.
CREATE TABLE support_tickets (id bigint PRIMARY KEY, customer_id bigint REFERENCES customers (id));
-- Customer 4711 also has a recent invoice, under the 7-year minimum.
INSERT INTO invoices VALUES (9001, 4711, now() - interval '2 years', 20);
"#;

/// The examples, pointed at the test's PostgreSQL.
fn examples_for(pg: &PgServer, s3: &common::s3::S3Server) -> String {
    let mut all = String::new();
    let mut files: Vec<_> = std::fs::read_dir("examples").unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in files {
        all.push_str("---\n");
        all.push_str(&std::fs::read_to_string(f).unwrap());
        all.push('\n');
    }
    let replace = |s: String, from: &str, to: &str| {
        assert!(s.contains(from), "examples no longer contain {from:?}");
        s.replace(from, to)
    };
    let all = replace(all, "host: shop-db.databases.svc", "host: 127.0.0.1");
    let all = replace(all, "port: 5432", &format!("port: {}", pg.port));
    let all = replace(all, "database: shop", "database: postgres");
    let all = replace(all, "mode: require", "mode: disable");
    let all = replace(all, "https://minio.storage.svc:9000", &s3.endpoint());
    let all = replace(all, "username: lethe_scrubber", "username: postgres");
    replace(all, "password: change-me", &format!("password: {PASSWORD}"))
}

fn jsonpath(c: &Cluster, ns: &str, what: &str, path: &str) -> String {
    let (_, out, _) = c.kubectl(&["-n", ns, "get", what, "-o", &format!("jsonpath={path}")]);
    out
}

fn object(c: &Cluster, ns: &str, what: &str) -> serde_json::Value {
    serde_json::from_str(&c.ok(&["-n", ns, "get", what, "-o", "json"])).unwrap()
}

/// The Argo CD health of a live object, by the chart's Lua check.
fn health(c: &Cluster, ns: &str, kind: &str, name: &str) -> String {
    let (status, message) = common::lua::health(kind, &object(c, ns, &format!("{}/{name}", kind.to_lowercase())));
    assert!(!message.is_empty(), "{kind}/{name}: a health message");
    status
}

fn status(c: &Cluster, ns: &str, what: &str) -> serde_json::Value {
    let out = c.ok(&["-n", ns, "get", what, "-o", "json"]);
    serde_json::from_str::<serde_json::Value>(&out).unwrap()["status"].clone()
}

#[test]
fn examples_converge_and_a_deletion_request_completes_with_a_verifiable_receipt() {
    let c = Cluster::start();
    let pg = PgServer::start();
    let sql = Sql::connect(&pg);
    sql.exec(SHOP);
    // The data exports bucket (versioned): customer 12's export is past its
    // 30 days, 13 to 29's are not; the subject 4711 has one, rewritten once.
    let s3 = common::s3::S3Server::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s3c = s3.client();
    rt.block_on(async {
        s3c.create_bucket().bucket("shop-data-exports").send().await.unwrap();
        let on = aws_sdk_s3::types::VersioningConfiguration::builder()
            .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
            .build();
        s3c.put_bucket_versioning().bucket("shop-data-exports").versioning_configuration(on).send().await.unwrap();
    });
    let day = 86_400;
    let t0 = chrono::Utc::now().timestamp();
    let mut exports: Vec<common::s3::Seed> =
        (13..30).map(|u| common::s3::Seed::new(format!("exports/{u}/export.zip"), t0 - 5 * day)).collect();
    exports.push(common::s3::Seed::new("exports/12/export.zip", t0 - 40 * day));
    exports.push(common::s3::Seed::new("exports/4711/export.zip", t0 - 9 * day));
    exports.push(common::s3::Seed::new("exports/4711/export.zip", t0 - 2 * day));
    s3.seed("shop-data-exports", &exports);
    let ns = c.namespace("shop");
    let mut op = Operator::start(&c, &ns, "in-process", "op-a");
    c.apply_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: lethe-anonymization-salt\nstringData:\n  salt: s3cr3t-salt\n",
        &["-n", &ns],
    );
    c.apply_text(&examples_for(&pg, &s3), &["-n", &ns]);

    // Every object becomes Ready.
    for kind in ["datastores", "datasets", "retentionpolicies", "legalholds"] {
        c.ok(&["-n", &ns, "wait", "--for=condition=Ready", kind, "--all", "--timeout=120s"]);
    }
    let table = c.ok(&["-n", &ns, "get", "datasets"]);
    assert!(table.contains("SET BY") && table.contains("RetentionPolicy/marketing-24-months"), "{table}");
    assert!(table.contains("24mo") && table.contains("13mo") && table.contains("90d"), "{table}");
    let eff = status(&c, &ns, "dataset/invoices")["effectiveRetention"].clone();
    assert_eq!(eff["keepFor"], "10y");
    assert_eq!(eff["keepAtLeast"], "7y");
    assert_eq!(eff["setBy"], "RetentionPolicy/tax-records");
    assert_eq!(status(&c, &ns, "datastore/shop-db")["conditions"][0]["reason"], "Connected");

    // Every dataset's first pass finishes.
    for ds in [
        "marketing-preferences",
        "tracking-events",
        "network-access-logs",
        "customer-accounts",
        "invoices",
        "data-exports",
    ] {
        eventually(&format!("first run of {ds}"), LIMIT, || {
            let reason = jsonpath(
                &c,
                &ns,
                &format!("dataset/{ds}"),
                "{.status.conditions[?(@.type==\"LastRunSucceeded\")].reason}",
            );
            (!reason.is_empty()).then_some(reason)
        });
    }
    c.ok(&["-n", &ns, "wait", "--for=condition=Complete", "deletionrequest/erasure-request-4711", "--timeout=120s"]);

    // Retention: exactly the expired rows went, nothing newer.
    assert_eq!(sql.count("SELECT count(*) FROM marketing_preferences WHERE id % 10 = 0"), 0);
    assert_eq!(
        sql.count("SELECT count(*) FROM marketing_preferences WHERE last_interest_at < now() - interval '24 months'"),
        0
    );
    // 4,500 unexpired rows; the subject's row went with the request.
    assert_eq!(sql.count("SELECT count(*) FROM marketing_preferences"), 4499);
    assert_eq!(sql.count("SELECT count(*) FROM tracking_events"), 4499);
    assert_eq!(sql.count("SELECT count(*) FROM tracking_events WHERE recorded_at < now() - interval '13 months'"), 0);
    // The LegalHold keeps every access-log row, expired or not, the subject's too.
    assert_eq!(sql.count("SELECT count(*) FROM access_log"), 5000);
    let logs_run = status(&c, &ns, "dataset/network-access-logs");
    assert_eq!(
        logs_run["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Held").unwrap()["status"],
        "True"
    );
    // The evidence: held logs 200 days old remain past their window; nothing does for marketing.
    let age = logs_run["oldestExpiredAgeSeconds"].as_i64().unwrap();
    assert!((200 * 86400..201 * 86400).contains(&age), "{age}");
    assert_eq!(status(&c, &ns, "dataset/marketing-preferences")["oldestExpiredAgeSeconds"], 0);
    // Invoices: only those past 10 years went (the minimum keeps the rest).
    assert_eq!(sql.count("SELECT count(*) FROM invoices WHERE issued_at < now() - interval '10 years'"), 0);
    assert!(sql.count("SELECT count(*) FROM invoices WHERE issued_at < now() - interval '9 years'") > 0);
    // Closed accounts past 30 days were anonymized, not deleted.
    assert_eq!(sql.count("SELECT count(*) FROM customers"), 5000);
    assert_eq!(sql.count("SELECT count(*) FROM customers WHERE id % 50 = 0 AND email LIKE 'c%@example.com'"), 0);
    assert_eq!(sql.count("SELECT count(*) FROM customers WHERE id % 50 = 0 AND phone IS NOT NULL"), 0);
    assert_eq!(
        sql.count("SELECT count(*) FROM customers WHERE id % 50 <> 0 AND id <> 4711 AND email LIKE 'c%@example.com'"),
        4899
    );

    // The request: children before parents, holds and minimum retention named.
    let st = status(&c, &ns, "deletionrequest/erasure-request-4711");
    assert_eq!(st["phase"], "PartiallyCompleted", "{st}");
    let result = |ds: &str| st["datasets"].as_array().unwrap().iter().find(|r| r["dataset"] == ds).cloned().unwrap();
    assert_eq!(result("marketing-preferences")["phase"], "Completed", "{st:#}");
    assert_eq!(result("marketing-preferences")["remaining"], 0);
    assert_eq!(result("tracking-events")["phase"], "Completed");
    assert_eq!(result("customer-accounts")["phase"], "Completed");
    assert_eq!(result("customer-accounts")["action"], "anonymize");
    assert_eq!(result("network-access-logs")["phase"], "Blocked");
    assert!(
        result("network-access-logs")["remainingReason"].as_str().unwrap().contains("fraud-investigation-2026-114")
    );
    assert_eq!(result("invoices")["phase"], "Deferred");
    // Object storage: the expired export went by retention; the subject's
    // export went by the request, every version of it.
    assert_eq!(result("data-exports")["phase"], "Completed", "{st:#}");
    assert_eq!(result("data-exports")["recordsAffected"], 2);
    let left = rt.block_on(s3c.list_object_versions().bucket("shop-data-exports").send()).unwrap();
    let left: Vec<String> = left.versions().iter().map(|v| v.key().unwrap().to_string()).collect();
    let kept: Vec<String> = (13..30).map(|u| format!("exports/{u}/export.zip")).collect();
    assert_eq!(left, kept);
    assert_eq!(result("invoices")["remaining"], 1);
    // The kept invoice is two years old: erasable when it turns seven, five years from now.
    let erasable: chrono::DateTime<chrono::Utc> =
        result("invoices")["erasableAfter"].as_str().unwrap().parse().unwrap();
    let five_years = chrono::Utc::now() + chrono::Months::new(60);
    assert!((erasable - five_years).num_hours().abs() < 48, "erasable after {erasable}");
    assert!(st["subjectDigest"].as_str().unwrap().starts_with("sha256:"));
    // A foreign key the schema shows but no relation declares is a warning.
    let warn = st["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "UndeclaredRelations").cloned();
    let warn = warn.expect("the undeclared foreign key is reported");
    assert!(warn["message"].as_str().unwrap().contains("support_tickets -> customers"), "{warn}");
    assert!(!warn["message"].as_str().unwrap().contains("invoices -> customers"), "{warn}");
    assert!(st["receipt"]["digest"].as_str().unwrap().starts_with("sha256:"));
    // Invoices reference customers: the invoices run ended before the customers run started.
    let runs =
        c.ok(&["-n", &ns, "get", "scrubruns", "-l", "lethe.dev/deletion-request=erasure-request-4711", "-o", "json"]);
    let runs: serde_json::Value = serde_json::from_str(&runs).unwrap();
    let run = |ds: &str| {
        runs["items"].as_array().unwrap().iter().find(|r| r["spec"]["datasetRef"]["name"] == ds).cloned().unwrap()
    };
    let ended: chrono::DateTime<chrono::Utc> =
        run("invoices")["status"]["completionTime"].as_str().unwrap().parse().unwrap();
    let started: chrono::DateTime<chrono::Utc> =
        run("customer-accounts")["status"]["startTime"].as_str().unwrap().parse().unwrap();
    assert!(started >= ended, "customers erased before their invoices");

    // The data: the subject is gone where nothing keeps it.
    assert_eq!(sql.count("SELECT count(*) FROM marketing_preferences WHERE customer_id = 4711"), 0);
    assert_eq!(sql.count("SELECT count(*) FROM tracking_events WHERE customer_id = 4711"), 0);
    assert_eq!(sql.count("SELECT count(*) FROM customers WHERE email = 'jane.doe@example.com'"), 0);
    assert_eq!(
        sql.count("SELECT count(*) FROM customers WHERE id = 4711 AND phone IS NULL AND street_address = '(removed)'"),
        1
    );
    assert_eq!(sql.count("SELECT count(*) FROM invoices WHERE customer_id = 4711"), 1);
    assert_eq!(sql.count("SELECT count(*) FROM access_log WHERE user_id = 4711"), 1);
    // The invoices are deferred, and their later erasure needs the
    // identifiers: the Secret stays although the request asks for its deletion
    // on completion (the deferred test sees it deleted once nothing is deferred).
    let (code, _, _) = c.kubectl(&["-n", &ns, "get", "secret", "erasure-request-4711"]);
    assert_eq!(code, 0, "the subject's Secret must stay while a dataset is deferred");

    // Argo CD health, by the chart's Lua checks on the live objects.
    assert_eq!(health(&c, &ns, "DataStore", "shop-db"), "Healthy");
    for ds in [
        "marketing-preferences",
        "tracking-events",
        "network-access-logs",
        "customer-accounts",
        "invoices",
        "data-exports",
    ] {
        assert_eq!(health(&c, &ns, "Dataset", ds), "Healthy", "{ds}");
    }
    for p in ["marketing-24-months", "tracking-13-months", "logs-90-days", "closed-accounts-30-days", "tax-records"] {
        assert_eq!(health(&c, &ns, "RetentionPolicy", p), "Healthy", "{p}");
    }
    assert_eq!(health(&c, &ns, "LegalHold", "fraud-investigation-2026-114"), "Healthy");
    assert_eq!(health(&c, &ns, "DeletionRequest", "erasure-request-4711"), "Healthy");
    assert_eq!(health(&c, &ns, "ScrubRun", run("invoices")["metadata"]["name"].as_str().unwrap()), "Healthy");

    // The receipt verifies, and stops verifying when a result is altered.
    let verify = |c: &Cluster| {
        std::process::Command::new(env!("CARGO_BIN_EXE_lethe"))
            .args(["report", "--verify", "erasure-request-4711", "-n", &ns])
            .env("KUBECONFIG", &c.kubeconfig)
            .output()
            .unwrap()
    };
    let out = verify(&c);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(st["receipt"]["digest"].as_str().unwrap()));

    // Nothing carries the subject's identifiers: logs, Events, status, metrics.
    let (code, metrics) = op.get("/metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("lethe_records_scrubbed_total"), "metrics lack scrub counters");
    assert!(metrics.contains("lethe_deletion_requests_completed_total"));
    let events = c.ok(&["-n", &ns, "get", "events", "-o", "yaml"]);
    assert!(events.contains("RunCompleted") && events.contains("PartiallyCompleted"), "expected Events missing");
    let everything = c.ok(&["-n", &ns, "get", "lethe", "-o", "yaml"]);
    for (what, text) in
        [("operator log", op.logs()), ("Events", events), ("Lethe objects", everything), ("metrics", metrics)]
    {
        assert!(!text.contains("jane.doe@example.com"), "the subject's e-mail address appears in the {what}");
        assert!(!text.contains("jane.doe"), "part of the subject's e-mail address appears in the {what}");
    }

    // Tampering with the recorded results breaks the receipt.
    op.kill();
    c.ok(&[
        "-n",
        &ns,
        "patch",
        "deletionrequest/erasure-request-4711",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"recordsAffected":0}}"#,
    ]);
    let out = verify(&c);
    assert!(!out.status.success(), "an altered result still verified");
    assert!(String::from_utf8_lossy(&out.stderr).contains("mismatch"));
}

/// A DataStore for the test's PostgreSQL, with its Secret.
fn store_manifest(pg: &PgServer) -> String {
    store_manifest_with(pg, "")
}

fn store_manifest_with(pg: &PgServer, extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: db-credentials}}
stringData: {{username: postgres, password: {PASSWORD}}}
---
apiVersion: lethe.dev/v1alpha1
kind: DataStore
metadata: {{name: db}}
spec:
  type: postgres
  sql: {{host: 127.0.0.1, port: {}, database: postgres}}
  secretRef: {{name: db-credentials}}
  tls: {{mode: disable}}
{extra}"#,
        pg.port
    )
}

/// A Dataset over table `t` keeping 30 days from `column`, with options.
fn dataset_manifest(name: &str, table: &str, column: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: lethe.dev/v1alpha1
kind: Dataset
metadata: {{name: {name}}}
spec:
  storeRef: {{name: db}}
  categories: [usage]
  table: {{name: {table}}}
  primaryKey: [id]
  timestamps: {{created: {column}}}
  subjectFields: {{user_id: user_id}}
  retention: {{keepFor: 30d}}
  schedule: {{cron: "0 0 1 1 *"}}
{extra}"#
    )
}

/// A table of `n` events, one per day of age (`id` days old, plus an hour),
/// with a `birth` column that is old for every row.
fn events_table(sql: &Sql, table: &str, n: i64) {
    sql.exec(&format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, user_id bigint, created_at timestamptz, birth timestamptz);
         INSERT INTO {table} SELECT i, i % 100, now() - make_interval(days => i % 300, hours => 1),
           now() - interval '40 years' FROM generate_series(1, {n}) i;"
    ));
}

fn run_of(c: &Cluster, ns: &str, dataset: &str) -> serde_json::Value {
    let out = c.ok(&["-n", ns, "get", "scrubruns", "-l", &format!("lethe.dev/dataset={dataset}"), "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut items = v["items"].as_array().cloned().unwrap_or_default();
    items.sort_by_key(|r| r["metadata"]["name"].as_str().unwrap_or_default().to_string());
    items.pop().unwrap_or(serde_json::Value::Null)
}

fn wait_phase(c: &Cluster, ns: &str, dataset: &str, phase: &str) -> serde_json::Value {
    let t = std::time::Instant::now();
    loop {
        let r = run_of(c, ns, dataset);
        if r["status"]["phase"] == phase {
            return r;
        }
        // On a timeout, what the newest run says (a run's status names no subject).
        assert!(
            t.elapsed() < LIMIT,
            "timed out waiting for a run of {dataset} in phase {phase}; the newest run: {} {}",
            r["metadata"]["name"],
            r["status"]
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_legal_hold_blocks_exactly_what_it_covers_until_it_expires() {
    let c = Cluster::start();
    let pg = PgServer::start();
    let sql = Sql::connect(&pg);
    // 3,000 rows spread over 300 days: nine tenths are past 30 days, so the
    // brake is opened wide for this test.
    events_table(&sql, "held_events", 3000);
    events_table(&sql, "free_events", 3000);
    let ns = c.namespace("holds");
    let _op = Operator::start(&c, &ns, "in-process", "op-holds");
    let expires =
        (chrono::Utc::now() + chrono::Duration::seconds(20)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    c.apply_text(
        &format!(
            "apiVersion: lethe.dev/v1alpha1\nkind: LegalHold\nmetadata: {{name: audit}}\nspec:\n  reason: Audit of the held table\n  datasets: [held]\n  expiresAt: \"{expires}\"\n"
        ),
        &["-n", &ns],
    );
    c.ok(&["-n", &ns, "wait", "--for=condition=Active", "legalhold/audit", "--timeout=60s"]);
    let wide = "  safety: {maxDeletePercent: 100}\n";
    let manifest = format!(
        "{}---\n{}---\n{}",
        store_manifest(&pg),
        dataset_manifest("held", "held_events", "created_at", wide),
        dataset_manifest("free", "free_events", "created_at", wide)
    );
    c.apply_text(&manifest, &["-n", &ns]);
    let expired =
        |t: &str| sql.count(&format!("SELECT count(*) FROM {t} WHERE created_at < now() - interval '30 days'"));
    let newer =
        |t: &str| sql.count(&format!("SELECT count(*) FROM {t} WHERE created_at >= now() - interval '30 days'"));
    let newer_before = newer("free_events");
    wait_phase(&c, &ns, "free", "Succeeded");
    let held_run = wait_phase(&c, &ns, "held", "Succeeded");
    // The uncovered dataset lost its expired rows, and only those.
    assert_eq!(expired("free_events"), 0);
    assert_eq!(newer("free_events"), newer_before);
    // The covered dataset kept everything; the run says why and how much.
    assert_eq!(sql.count("SELECT count(*) FROM held_events"), 3000);
    assert_eq!(held_run["status"]["conditions"][0]["reason"], "Held", "{held_run:#}");
    assert!(held_run["status"]["counts"]["skippedHeld"].as_i64().unwrap() > 0);
    let hold = status(&c, &ns, "legalhold/audit");
    assert_eq!(hold["datasets"], serde_json::json!(["held"]));

    // The hold expires; the next run proceeds.
    c.ok(&["-n", &ns, "wait", "--for=condition=Active=false", "legalhold/audit", "--timeout=90s"]);
    c.ok(&["-n", &ns, "annotate", "dataset/held", "lethe.dev/run-now=after-hold"]);
    eventually("a run after the hold", LIMIT, || {
        let r = run_of(&c, &ns, "held");
        (r["metadata"]["name"] != held_run["metadata"]["name"] && r["status"]["phase"] == "Succeeded").then_some(())
    });
    assert_eq!(expired("held_events"), 0);
    assert!(newer("held_events") > 0);
    assert_eq!(status(&c, &ns, "dataset/held")["runNowToken"], "after-hold");
}

#[test]
fn the_brake_stops_a_misconfigured_dataset_until_the_run_is_approved() {
    let c = Cluster::start();
    let pg = PgServer::start();
    let sql = Sql::connect(&pg);
    events_table(&sql, "visits", 3000);
    let ns = c.namespace("brake");
    let _op = Operator::start(&c, &ns, "in-process", "op-brake");
    // The time field points at `birth`, which is old for every row.
    let manifest = format!("{}---\n{}", store_manifest(&pg), dataset_manifest("visits", "visits", "birth", ""));
    c.apply_text(&manifest, &["-n", &ns]);
    let run = wait_phase(&c, &ns, "visits", "AwaitingApproval");
    let stalled =
        run["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Stalled").cloned().unwrap();
    assert_eq!(stalled["reason"], "BlastRadiusExceeded");
    assert!(stalled["message"].as_str().unwrap().contains("3000 of 3000"), "{stalled}");
    assert_eq!(run["status"]["plan"]["matchingRecords"], 3000);
    // Nothing was deleted, and waiting changes nothing.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sql.count("SELECT count(*) FROM visits"), 3000);
    let name = run["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(health(&c, &ns, "ScrubRun", &name), "Suspended");
    // Dataset health is not degraded by a stalled run.
    assert_eq!(jsonpath(&c, &ns, "dataset/visits", "{.status.conditions[?(@.type==\"Ready\")].status}"), "True");

    assert_eq!(health(&c, &ns, "Dataset", "visits"), "Healthy");
    c.ok(&["-n", &ns, "annotate", &format!("scrubrun/{name}"), "lethe.dev/approved-by=privacy-officer"]);
    let done = wait_phase(&c, &ns, "visits", "Succeeded");
    assert_eq!(done["status"]["approvedBy"], "privacy-officer");
    assert_eq!(done["status"]["counts"]["deleted"], 3000);
    assert_eq!(sql.count("SELECT count(*) FROM visits"), 0);
}

/// Kills the executor in the middle of a large run, restarts, and checks
/// the run finishes with exact counts and nothing newer than its cutoff lost.
fn interrupted_run_resumes(executor: &str, kill: impl FnOnce(&Cluster, &str, &str, &mut Operator) -> Option<Operator>) {
    let c = Cluster::start();
    let pg = PgServer::start();
    let sql = Sql::connect(&pg);
    events_table(&sql, "big", 400_000);
    let expected = sql.count("SELECT count(*) FROM big WHERE created_at < now() - interval '30 days'");
    let newer =
        sql.count("SELECT count(*) FROM big WHERE created_at >= now() - interval '30 days' - interval '1 minute'");
    let ns = c.namespace("resume");
    let mut op = Operator::start(&c, &ns, executor, "op-resume");
    // Throttled so the run lasts long enough to be interrupted.
    let store = store_manifest_with(&pg, "  limits: {maxRecordsPerSecond: 40000, targetBatchMillis: 50}\n");
    let manifest =
        format!("{store}---\n{}", dataset_manifest("big", "big", "created_at", "  safety: {maxDeletePercent: 100}\n"));
    c.apply_text(&manifest, &["-n", &ns]);
    let name = eventually("progress of the run", LIMIT, || {
        let r = run_of(&c, &ns, "big");
        (r["status"]["progress"]["recordsDone"].as_i64().unwrap_or(0) > 0)
            .then(|| r["metadata"]["name"].as_str().unwrap().to_string())
    });
    assert_eq!(health(&c, &ns, "ScrubRun", &name), "Progressing");
    let restarted = kill(&c, &ns, &name, &mut op);
    // Interrupted part way: some rows deleted, not all.
    let left = sql.count("SELECT count(*) FROM big");
    assert!(left < 400_000 && left > 400_000 - expected, "the kill did not land mid-run ({left} rows left)");
    let done = wait_phase(&c, &ns, "big", "Succeeded");
    assert_eq!(done["metadata"]["name"], name.as_str(), "the same run finished");
    assert_eq!(done["status"]["plan"]["matchingRecords"], expected);
    assert_eq!(done["status"]["counts"]["deleted"], expected, "{:#}", done["status"]);
    assert_eq!(done["status"]["verification"]["remaining"], 0);
    assert_eq!(sql.count("SELECT count(*) FROM big"), 400_000 - expected);
    // Nothing newer than the cutoff was touched.
    assert_eq!(
        sql.count("SELECT count(*) FROM big WHERE created_at >= now() - interval '30 days' - interval '1 minute'"),
        newer
    );
    drop(restarted);
}

#[test]
fn killing_the_operator_mid_run_resumes_with_exact_counts() {
    interrupted_run_resumes("in-process", |c, ns, _, op| {
        op.kill();
        Some(Operator::start(c, ns, "in-process", "op-resume"))
    });
}

#[test]
fn killing_the_scrub_job_process_resumes_with_exact_counts() {
    interrupted_run_resumes("job", |c, ns, name, _| {
        // The emulator runs the Job's container as a local `lethe scrub --run` process.
        let pattern = format!("scrub --run {name} --namespace {ns}");
        let out = std::process::Command::new("pkill").args(["-9", "-f", &pattern]).status().unwrap();
        assert!(out.success(), "no scrub process to kill");
        let job = eventually("a failed pod on the Job", LIMIT, || {
            let j = c.ok(&["-n", ns, "get", "jobs", "-o", "json"]);
            let j: serde_json::Value = serde_json::from_str(&j).unwrap();
            let job = j["items"][0].clone();
            (job["status"]["failed"].as_i64().unwrap_or(0) >= 1).then_some(job)
        });
        assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "ScrubRun");
        None
    });
}

#[test]
fn only_the_lease_holder_reconciles_and_a_standby_takes_over() {
    let c = Cluster::start();
    let pg = PgServer::start();
    let sql = Sql::connect(&pg);
    events_table(&sql, "one", 100);
    events_table(&sql, "two", 100);
    let ns = c.namespace("leader");
    let mut a = Operator::start(&c, &ns, "in-process", "op-a");
    eventually("op-a ready", LIMIT, || (a.get("/readyz").0 == 200).then_some(()));
    let b = Operator::start(&c, &ns, "in-process", "op-b");
    eventually("op-b waiting for the lease", LIMIT, || {
        b.logs().contains("another replica holds the lease").then_some(())
    });
    assert_eq!(b.get("/readyz").0, 503, "a standby must not report ready");
    assert_eq!(b.get("/healthz").0, 200, "a standby is alive");
    assert_eq!(jsonpath(&c, &ns, "lease/lethe-operator", "{.spec.holderIdentity}"), "op-a");

    let wide = "  safety: {maxDeletePercent: 100}\n";
    c.apply_text(
        &format!("{}---\n{}", store_manifest(&pg), dataset_manifest("one", "one", "created_at", wide)),
        &["-n", &ns],
    );
    c.ok(&["-n", &ns, "wait", "--for=condition=Ready", "dataset/one", "--timeout=60s"]);
    assert!(!b.logs().contains("starting controllers"), "the standby reconciled");

    a.kill();
    eventually("op-b takes over", LIMIT, || (b.get("/readyz").0 == 200).then_some(()));
    assert_eq!(jsonpath(&c, &ns, "lease/lethe-operator", "{.spec.holderIdentity}"), "op-b");
    assert_eq!(jsonpath(&c, &ns, "lease/lethe-operator", "{.spec.leaseTransitions}"), "1");
    c.apply_text(&dataset_manifest("two", "two", "created_at", wide), &["-n", &ns]);
    c.ok(&["-n", &ns, "wait", "--for=condition=Ready", "dataset/two", "--timeout=60s"]);
    wait_phase(&c, &ns, "two", "Succeeded");
    assert_eq!(sql.count("SELECT count(*) FROM two WHERE created_at < now() - interval '30 days'"), 0);
}

#[test]
fn datastore_readiness_names_the_reason() {
    let c = Cluster::start();
    let pg = PgServer::start();
    let ns = c.namespace("stores");
    let _op = Operator::start(&c, &ns, "in-process", "op-stores");
    let store = |name: &str, port: u16, secret: &str| {
        format!(
            "apiVersion: lethe.dev/v1alpha1\nkind: DataStore\nmetadata: {{name: {name}}}\nspec:\n  type: postgres\n  sql: {{host: 127.0.0.1, port: {port}, database: postgres}}\n  secretRef: {{name: {secret}}}\n  tls: {{mode: disable}}\n"
        )
    };
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let manifest = format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: wrong}}\nstringData: {{username: postgres, password: not-the-password}}\n---\n{}---\n{}---\n{}",
        store_manifest(&pg),
        store("bad-password", pg.port, "wrong"),
        store("nowhere", closed, "db-credentials"),
        store("no-secret", pg.port, "missing")
    );
    c.apply_text(&manifest, &["-n", &ns]);
    let reason = |name: &str| {
        eventually(&format!("a Ready condition on {name}"), LIMIT, || {
            let r =
                jsonpath(&c, &ns, &format!("datastore/{name}"), "{.status.conditions[?(@.type==\"Ready\")].reason}");
            (!r.is_empty()).then_some(r)
        })
    };
    assert_eq!(reason("db"), "Connected");
    assert!(jsonpath(&c, &ns, "datastore/db", "{.status.serverVersion}").starts_with("PostgreSQL 1"));
    assert_eq!(reason("bad-password"), "AuthFailed");
    assert_eq!(reason("nowhere"), "Unreachable");
    assert_eq!(reason("no-secret"), "SecretMissing");
    assert_eq!(health(&c, &ns, "DataStore", "bad-password"), "Degraded");
    assert_eq!(health(&c, &ns, "DataStore", "db"), "Healthy");
    let msg = jsonpath(&c, &ns, "datastore/bad-password", "{.status.conditions[0].message}");
    assert!(!msg.contains("not-the-password"), "a password leaked into status");
    // The Secret appearing fixes the store without any other change.
    c.apply_text(
        &format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: missing}}\nstringData: {{username: postgres, password: {PASSWORD}}}\n"),
        &["-n", &ns],
    );
    c.ok(&["-n", &ns, "wait", "--for=condition=Ready", "datastore/no-secret", "--timeout=60s"]);
    let events = c.ok(&["-n", &ns, "get", "events"]);
    assert!(events.contains("AuthFailed") && events.contains("Connected"), "{events}");
}

#[test]
fn a_request_needing_approval_waits_for_someone_else_and_reports_overdue() {
    let c = Cluster::start();
    let pg = PgServer::start();
    let sql = Sql::connect(&pg);
    events_table(&sql, "visits", 1000);
    let ns = c.namespace("approval");
    let op = Operator::start(&c, &ns, "in-process", "op-approval");
    let received = (chrono::Utc::now() - chrono::Duration::days(50)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let manifest = format!(
        "{}---\n{}---\napiVersion: lethe.dev/v1alpha1\nkind: DeletionRequest\nmetadata:\n  name: req-1\n  annotations: {{lethe.dev/requested-by: alice}}\nspec:\n  subject: {{identifiers: {{user_id: \"5\"}}}}\n  regime: CCPA\n  receivedAt: \"{received}\"\n  requireApproval: true\n",
        store_manifest(&pg),
        dataset_manifest("visits", "visits", "created_at", "  safety: {maxDeletePercent: 100}\n")
    );
    c.apply_text(&manifest, &["-n", &ns]);
    let phase = || jsonpath(&c, &ns, "deletionrequest/req-1", "{.status.phase}");
    eventually("the request waits for approval", LIMIT, || (phase() == "AwaitingApproval").then_some(()));
    assert_eq!(health(&c, &ns, "DeletionRequest", "req-1"), "Suspended");
    // kstatus reads an unfinished request as in progress.
    assert_eq!(
        jsonpath(&c, &ns, "deletionrequest/req-1", "{.status.conditions[?(@.type==\"Reconciling\")].status}"),
        "True"
    );
    // 50 days after receipt, past the CCPA's 45.
    c.ok(&["-n", &ns, "wait", "--for=condition=Overdue", "deletionrequest/req-1", "--timeout=60s"]);
    let deadline = jsonpath(&c, &ns, "deletionrequest/req-1", "{.status.deadline}");
    let expected = (chrono::Utc::now() - chrono::Duration::days(5)).date_naive().to_string();
    assert!(deadline.starts_with(&expected), "deadline {deadline}, expected 45 days after receipt");
    let (_, metrics) = op.get("/metrics");
    assert!(metrics.contains("lethe_deletion_requests_overdue{regime=\"CCPA\"} 1"), "{metrics}");
    // The earliest open deadline, for alerts on requests coming due.
    let due = deadline.parse::<chrono::DateTime<chrono::Utc>>().unwrap().timestamp() as f64;
    let next = |regime: &str| {
        let (_, m) = op.get("/metrics");
        metric(&m, "lethe_deletion_request_next_deadline_timestamp_seconds", &[("regime", regime)])
    };
    eventually("the next deadline is exported", LIMIT, || (next("CCPA") == due).then_some(()));
    assert_eq!(next("GDPR"), 0.0, "no GDPR request is open");
    let (_, m) = op.get("/metrics");
    assert_eq!(metric(&m, "lethe_deletion_requests_open", &[("regime", "CCPA")]), 1.0, "{m}");
    // The requester cannot approve their own request.
    c.ok(&["-n", &ns, "annotate", "deletionrequest/req-1", "lethe.dev/approved-by=alice"]);
    eventually("self-approval refused", LIMIT, || {
        let r = jsonpath(&c, &ns, "deletionrequest/req-1", "{.status.conditions[?(@.type==\"Approved\")].reason}");
        (r == "SelfApproval").then_some(())
    });
    // The retention pass ran meanwhile; the subject's recent rows wait for approval.
    wait_phase(&c, &ns, "visits", "Succeeded");
    assert_eq!(sql.count("SELECT count(*) FROM visits WHERE user_id = 5"), 4);
    let others = sql.count("SELECT count(*) FROM visits WHERE user_id <> 5");
    c.ok(&["-n", &ns, "annotate", "--overwrite", "deletionrequest/req-1", "lethe.dev/approved-by=bob"]);
    c.ok(&["-n", &ns, "wait", "--for=condition=Complete", "deletionrequest/req-1", "--timeout=120s"]);
    assert_eq!(phase(), "Completed");
    assert_eq!(jsonpath(&c, &ns, "deletionrequest/req-1", "{.status.approvedBy}"), "bob");
    assert_eq!(
        jsonpath(&c, &ns, "deletionrequest/req-1", "{.status.conditions[?(@.type==\"Reconciling\")].status}"),
        ""
    );
    assert_eq!(
        jsonpath(&c, &ns, "deletionrequest/req-1", "{.status.conditions[?(@.type==\"Overdue\")].reason}"),
        "CompletedLate"
    );
    assert_eq!(sql.count("SELECT count(*) FROM visits WHERE user_id = 5"), 0);
    assert_eq!(sql.count("SELECT count(*) FROM visits WHERE user_id <> 5"), others);
    assert_eq!(jsonpath(&c, &ns, "deletionrequest/req-1", "{.status.recordsAffected}"), "4");
}

#[test]
fn holds_on_subjects_by_digest_and_by_secret() {
    let c = Cluster::start();
    let pg = PgServer::start();
    let sql = Sql::connect(&pg);
    events_table(&sql, "visits", 1000);
    let ns = c.namespace("subjects");
    let _op = Operator::start(&c, &ns, "in-process", "op-subjects");
    // The digest a privacy engineer puts in a hold, without the identifier on any command line.
    let mut digest = std::process::Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(["digest", "--type", "user_id"])
        .env("LETHE_DIGEST_SALT", common::operator::SALT)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(digest.stdin.as_mut().unwrap(), b"5\n").unwrap();
    let out = digest.wait_with_output().unwrap();
    let d = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(d.starts_with("sha256:") && d.len() == 71, "{d}");
    let manifest = format!(
        "{}---\n{}---\napiVersion: lethe.dev/v1alpha1\nkind: LegalHold\nmetadata: {{name: litigation}}\nspec:\n  reason: Litigation involving one customer\n  datasets: [visits]\n  subjects: {{digests: [\"{d}\"]}}\n",
        store_manifest(&pg),
        dataset_manifest("visits", "visits", "created_at", "  safety: {maxDeletePercent: 100}\n")
    );
    c.apply_text(&manifest, &["-n", &ns]);
    // Retention cannot recognise the held subject's rows by digest: it refuses.
    let refused = wait_phase(&c, &ns, "visits", "Failed");
    assert_eq!(refused["status"]["conditions"][0]["reason"], "HeldSubjectsUnresolvable", "{:#}", refused["status"]);
    assert_eq!(sql.count("SELECT count(*) FROM visits"), 1000);
    // Erasure: the held subject is blocked, another proceeds.
    let request = |name: &str, user: &str| {
        format!(
            "apiVersion: lethe.dev/v1alpha1\nkind: DeletionRequest\nmetadata: {{name: {name}}}\nspec:\n  subject: {{identifiers: {{user_id: \"{user}\"}}}}\n  regime: GDPR\n"
        )
    };
    c.apply_text(&format!("{}---\n{}", request("held-subject", "5"), request("free-subject", "7")), &["-n", &ns]);
    for r in ["held-subject", "free-subject"] {
        c.ok(&["-n", &ns, "wait", "--for=condition=Complete", &format!("deletionrequest/{r}"), "--timeout=120s"]);
    }
    assert_eq!(jsonpath(&c, &ns, "deletionrequest/held-subject", "{.status.phase}"), "Blocked");
    assert_eq!(jsonpath(&c, &ns, "deletionrequest/free-subject", "{.status.phase}"), "Completed");
    assert_eq!(sql.count("SELECT count(*) FROM visits WHERE user_id = 5"), 10);
    assert_eq!(sql.count("SELECT count(*) FROM visits WHERE user_id = 7"), 0);

    // Named by Secret, but only by an identifier type the Dataset does not
    // map (it maps user_id): retention cannot tell the subject's rows
    // apart, and refuses, naming the type and never a value.
    let refused_first = refused["metadata"]["name"].clone();
    c.apply_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: litigation-subjects}\nstringData: {email: \"five@example.com\"}\n---\napiVersion: lethe.dev/v1alpha1\nkind: LegalHold\nmetadata: {name: litigation}\nspec:\n  reason: Litigation involving one customer\n  datasets: [visits]\n  subjects: {secretRef: {name: litigation-subjects}}\n",
        &["-n", &ns],
    );
    c.ok(&["-n", &ns, "annotate", "dataset/visits", "lethe.dev/run-now=after-email-hold"]);
    let t = std::time::Instant::now();
    let unmapped = loop {
        let r = run_of(&c, &ns, "visits");
        if r["metadata"]["name"] != refused_first && r["status"]["phase"] == "Failed" {
            break r;
        }
        assert!(t.elapsed() < LIMIT, "no refused run after the email hold: {}", r["status"]);
        std::thread::sleep(Duration::from_millis(250));
    };
    let condition = &unmapped["status"]["conditions"][0];
    assert_eq!(condition["reason"], "HeldSubjectsUnresolvable", "{:#}", unmapped["status"]);
    let message = condition["message"].as_str().unwrap();
    assert!(message.contains("names subjects by email") && !message.contains("five@"), "{message}");
    assert_eq!(sql.count("SELECT count(*) FROM visits"), 990, "nothing deleted");
    // An erasure giving no identifier type the hold names cannot tell
    // whether its subject is held: it keeps the rows, saying why. One that
    // gives the hold's type, with another value, goes ahead.
    c.apply_text(
        &format!(
            "{}---\napiVersion: lethe.dev/v1alpha1\nkind: DeletionRequest\nmetadata: {{name: other-by-email}}\nspec:\n  subject: {{identifiers: {{user_id: \"9\", email: \"nine@example.com\"}}}}\n  regime: GDPR\n",
            request("maybe-held", "5")
        ),
        &["-n", &ns],
    );
    for r in ["maybe-held", "other-by-email"] {
        c.ok(&["-n", &ns, "wait", "--for=condition=Complete", &format!("deletionrequest/{r}"), "--timeout=120s"]);
    }
    assert_eq!(jsonpath(&c, &ns, "deletionrequest/maybe-held", "{.status.phase}"), "Blocked");
    let reason = jsonpath(&c, &ns, "deletionrequest/maybe-held", "{.status.datasets[0].remainingReason}");
    assert!(
        reason.contains("litigation names subjects only by email") && reason.contains("may be among them"),
        "{reason}"
    );
    assert_eq!(jsonpath(&c, &ns, "deletionrequest/other-by-email", "{.status.phase}"), "Completed");
    assert_eq!(sql.count("SELECT count(*) FROM visits WHERE user_id = 5"), 10);
    assert_eq!(sql.count("SELECT count(*) FROM visits WHERE user_id = 9"), 0);

    // Named by Secret instead, retention skips exactly the held subject's rows.
    c.apply_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: litigation-subjects}\nstringData: {user_id: \"5\"}\n---\napiVersion: lethe.dev/v1alpha1\nkind: LegalHold\nmetadata: {name: litigation}\nspec:\n  reason: Litigation involving one customer\n  datasets: [visits]\n  subjects: {secretRef: {name: litigation-subjects}}\n",
        &["-n", &ns],
    );
    let held = sql.count("SELECT count(*) FROM visits WHERE user_id = 5 AND created_at < now() - interval '30 days'");
    assert!(held > 0);
    c.ok(&["-n", &ns, "annotate", "--overwrite", "dataset/visits", "lethe.dev/run-now=after-secret-hold"]);
    let done = wait_phase(&c, &ns, "visits", "Succeeded");
    assert_eq!(done["status"]["plan"]["heldRecords"], held, "{:#}", done["status"]);
    assert_eq!(sql.count("SELECT count(*) FROM visits WHERE user_id = 5"), 10);
    assert_eq!(
        sql.count("SELECT count(*) FROM visits WHERE user_id <> 5 AND created_at < now() - interval '30 days'"),
        0
    );
}

#[test]
fn unchanged_objects_are_not_rewritten_and_run_history_is_bounded() {
    let c = Cluster::start();
    let pg = PgServer::start();
    let sql = Sql::connect(&pg);
    events_table(&sql, "ticks", 300);
    let ns = c.namespace("history");
    let _op = Operator::start(&c, &ns, "in-process", "op-history");
    let schedule = "  safety: {maxDeletePercent: 100}\n";
    let ds = dataset_manifest("ticks", "ticks", "created_at", schedule)
        .replace("schedule: {cron: \"0 0 1 1 *\"}", "schedule: {interval: 2s, successfulRunsHistoryLimit: 1}");
    c.apply_text(&format!("{}---\n{ds}", store_manifest(&pg)), &["-n", &ns]);
    c.ok(&["-n", &ns, "wait", "--for=condition=Ready", "datastore/db", "--timeout=60s"]);
    // Re-probed every resync (5 s here) with the same outcome: no write.
    let rv = jsonpath(&c, &ns, "datastore/db", "{.metadata.resourceVersion}");
    let probed = jsonpath(&c, &ns, "datastore/db", "{.status.lastProbeTime}");
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(
        jsonpath(&c, &ns, "datastore/db", "{.metadata.resourceVersion}"),
        rv,
        "an unchanged status was rewritten"
    );
    assert_eq!(jsonpath(&c, &ns, "datastore/db", "{.status.lastProbeTime}"), probed);
    // Runs every 2 s; only the newest succeeded run is kept.
    let first = eventually("a first run", LIMIT, || {
        let n = jsonpath(&c, &ns, "dataset/ticks", "{.status.lastRun.name}");
        (!n.is_empty()).then_some(n)
    });
    eventually("a later run", LIMIT, || {
        let n = jsonpath(&c, &ns, "dataset/ticks", "{.status.lastRun.name}");
        (n > first && n.len() == first.len()).then_some(())
    });
    eventually("history trimmed to one succeeded run", LIMIT, || {
        let names = c.ok(&["-n", &ns, "get", "scrubruns", "-o", "name"]);
        let n = names.lines().count();
        (n == 1 || (n == 2 && !names.contains(&first))).then_some(())
    });
    let names = c.ok(&["-n", &ns, "get", "scrubruns", "-o", "name"]);
    assert!(!names.contains(&first), "the first run outlived the history limit: {names}");
    // Suspending the schedule reads as Suspended to Argo CD.
    c.ok(&["-n", &ns, "patch", "dataset/ticks", "--type=merge", "-p", r#"{"spec":{"schedule":{"suspend":true}}}"#]);
    eventually("a suspended Dataset", LIMIT, || (health(&c, &ns, "Dataset", "ticks") == "Suspended").then_some(()));
}

/// Two datasets on a store allowing one run at a time: their runs never overlap.
fn one_run_at_a_time(executor: &str) {
    let c = Cluster::start();
    let pg = PgServer::start();
    let sql = Sql::connect(&pg);
    events_table(&sql, "first", 60_000);
    events_table(&sql, "second", 60_000);
    let ns = c.namespace("serial");
    let op = Operator::start(&c, &ns, executor, "op-serial");
    let store = store_manifest_with(&pg, "  limits: {maxConcurrentRuns: 1, maxRecordsPerSecond: 30000}\n");
    let wide = "  safety: {maxDeletePercent: 100}\n";
    // The Datasets carry Argo CD's tracking label and annotation, as when an
    // Application syncs them; the runs and Jobs Lethe makes must not copy them.
    let tracked = |name: &str| {
        dataset_manifest(name, name, "created_at", wide).replacen(
            &format!("metadata: {{name: {name}}}"),
            &format!("metadata: {{name: {name}, labels: {{app.kubernetes.io/instance: shop}}, annotations: {{argocd.argoproj.io/tracking-id: \"shop:lethe.dev/Dataset:{ns}/{name}\"}}}}"),
            1,
        )
    };
    let manifest = format!("{store}---\n{}---\n{}", tracked("first"), tracked("second"));
    assert!(manifest.contains("tracking-id"));
    c.apply_text(&manifest, &["-n", &ns]);
    let a = wait_phase(&c, &ns, "first", "Succeeded");
    let b = wait_phase(&c, &ns, "second", "Succeeded");
    let t = |r: &serde_json::Value, f: &str| {
        r["status"][f].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap()
    };
    let (a0, a1, b0, b1) = (t(&a, "startTime"), t(&a, "completionTime"), t(&b, "startTime"), t(&b, "completionTime"));
    assert!(b0 >= a1 || a0 >= b1, "runs overlapped: first {a0}..{a1}, second {b0}..{b1}");
    assert!((a1 - a0).num_seconds() >= 1 && (b1 - b0).num_seconds() >= 1, "runs too short to tell");

    for kind in ["scrubruns", "jobs"] {
        let meta = c.ok(&["-n", &ns, "get", kind, "-o", "jsonpath={.items[*].metadata}"]);
        assert!(!meta.contains("argocd.argoproj.io") && !meta.contains("app.kubernetes.io/instance"), "{kind}: {meta}");
    }
    let runs = c.ok(&["-n", &ns, "get", "scrubruns", "-o", "name"]);
    assert!(runs.lines().count() >= 2, "{runs}");

    // Both executors count finished runs in the metrics, by store and category.
    let deleted =
        a["status"]["counts"]["deleted"].as_i64().unwrap() + b["status"]["counts"]["deleted"].as_i64().unwrap();
    assert!(deleted > 0);
    let labels = [
        ("namespace", ns.as_str()),
        ("store", "db"),
        ("store_type", "postgres"),
        ("category", "usage"),
        ("purpose", "retention"),
        ("action", "delete"),
    ];
    eventually("both runs counted", LIMIT, || {
        let (_, m) = op.get("/metrics");
        let runs =
            metric(&m, "lethe_run_duration_seconds_count", &[("store_type", "postgres"), ("purpose", "retention")]);
        (runs == 2.0).then_some(())
    });
    let (_, m) = op.get("/metrics");
    assert_eq!(metric(&m, "lethe_records_scrubbed_total", &labels), deleted as f64, "{m}");
    // Both Datasets run on 1 January ("0 0 1 1 *"): the interval is the next year's length.
    let year = chrono::Datelike::year(&chrono::Utc::now()) + 1;
    let jan1 = |y: i32| chrono::NaiveDate::from_ymd_opt(y, 1, 1).unwrap();
    let interval = (jan1(year + 1) - jan1(year)).num_seconds() as f64;
    for d in ["first", "second"] {
        let l = [("namespace", ns.as_str()), ("dataset", d)];
        assert_eq!(metric(&m, "lethe_dataset_schedule_interval_seconds", &l), interval, "{m}");
    }
}

/// The sum of a metric's samples whose labels include all of `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            (n == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[test]
fn a_store_runs_one_scrub_at_a_time_in_process() {
    one_run_at_a_time("in-process");
}

#[test]
fn a_store_runs_one_scrub_at_a_time_as_jobs() {
    one_run_at_a_time("job");
}

#[test]
fn records_under_minimum_retention_are_anonymized_when_the_dataset_erases_by_anonymizing() {
    let c = Cluster::start();
    let pg = PgServer::start();
    let sql = Sql::connect(&pg);
    sql.exec(
        "CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint, email text, placed_at timestamptz);
         INSERT INTO orders SELECT i, i % 20, 'u' || (i % 20) || '@example.com', now() - make_interval(days => i)
           FROM generate_series(1, 200) i;",
    );
    let ns = c.namespace("anon");
    let _op = Operator::start(&c, &ns, "in-process", "op-anon");
    let dataset = r#"apiVersion: lethe.dev/v1alpha1
kind: Dataset
metadata: {name: orders}
spec:
  storeRef: {name: db}
  categories: [financial]
  table: {name: orders}
  timestamps: {created: placed_at}
  subjectFields: {user_id: user_id}
  retention: {keepAtLeast: 5y}
  erasure: {action: anonymize}
  anonymization:
    fields: [{field: email, strategy: redact}]
---
apiVersion: lethe.dev/v1alpha1
kind: DeletionRequest
metadata: {name: forget-3}
spec:
  subject: {identifiers: {user_id: "3"}}
  regime: GDPR
"#;
    c.apply_text(&format!("{}---\n{dataset}", store_manifest(&pg)), &["-n", &ns]);
    c.ok(&["-n", &ns, "wait", "--for=condition=Complete", "deletionrequest/forget-3", "--timeout=120s"]);
    assert_eq!(jsonpath(&c, &ns, "deletionrequest/forget-3", "{.status.phase}"), "Completed");
    assert_eq!(jsonpath(&c, &ns, "deletionrequest/forget-3", "{.status.datasets[0].recordsAffected}"), "10");
    // Every record is kept (the minimum), none still names the subject.
    assert_eq!(sql.count("SELECT count(*) FROM orders"), 200);
    assert_eq!(sql.count("SELECT count(*) FROM orders WHERE user_id = 3 AND email LIKE '%example.com'"), 0);
    assert_eq!(sql.count("SELECT count(*) FROM orders WHERE user_id <> 3 AND email LIKE '%example.com'"), 190);
}

/// A request deferred by minimum retention finishes by itself: once the
/// newest kept record passes its minimum, a further run erases it; the
/// answer's time (and so the deadline) stays the first completion, and the
/// Secret naming the subject is kept until nothing is deferred.
#[test]
fn a_deferred_erasure_finishes_once_the_minimum_retention_has_passed() {
    let c = Cluster::start();
    let pg = PgServer::start();
    let sql = Sql::connect(&pg);
    // Subject 7: two orders past the 20-second minimum, two within it; subject 8 is someone else.
    sql.exec(
        "CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint, placed_at timestamptz);
         INSERT INTO orders VALUES (1, 7, now() - interval '2 days'), (2, 7, now() - interval '1 day'),
           (3, 7, now() - interval '2 seconds'), (4, 7, now()), (5, 8, now() - interval '2 days');",
    );
    let ns = c.namespace("deferred");
    let op = Operator::start(&c, &ns, "in-process", "op-deferred");
    let manifest = format!(
        r#"{}---
apiVersion: lethe.dev/v1alpha1
kind: Dataset
metadata: {{name: orders}}
spec:
  storeRef: {{name: db}}
  categories: [financial]
  table: {{name: orders}}
  primaryKey: [id]
  timestamps: {{created: placed_at}}
  subjectFields: {{user_id: user_id}}
  retention: {{keepFor: 10y, keepAtLeast: 20s}}
  safety: {{maxDeletePercent: 100}}
---
apiVersion: v1
kind: Secret
metadata: {{name: subject-7}}
stringData: {{user_id: "7"}}
---
apiVersion: lethe.dev/v1alpha1
kind: DeletionRequest
metadata: {{name: erase-7}}
spec:
  subject: {{secretRef: {{name: subject-7}}}}
  regime: GDPR
  deleteSecretOnCompletion: true
"#,
        store_manifest(&pg)
    );
    c.apply_text(&manifest, &["-n", &ns]);
    let phase = || jsonpath(&c, &ns, "deletionrequest/erase-7", "{.status.phase}");
    eventually("first pass deferred", LIMIT, || (phase() == "Deferred").then_some(()));
    let responded = jsonpath(&c, &ns, "deletionrequest/erase-7", "{.status.respondedAt}");
    assert!(!responded.is_empty());
    let erasable = jsonpath(&c, &ns, "deletionrequest/erase-7", "{.status.datasets[0].erasableAfter}");
    assert!(!erasable.is_empty(), "a deferred dataset says when it may be erased");
    assert_eq!(sql.count("SELECT count(*) FROM orders WHERE user_id = 7"), 2, "the two recent orders are kept");
    assert_eq!(c.kubectl(&["-n", &ns, "get", "secret", "subject-7"]).0, 0, "the Secret stays while deferred");

    // After the minimum, the request finishes by itself with a further run.
    eventually("the deferred orders are erased", LIMIT, || (phase() == "Completed").then_some(()));
    assert_eq!(sql.count("SELECT count(*) FROM orders WHERE user_id = 7"), 0);
    assert_eq!(sql.count("SELECT count(*) FROM orders WHERE user_id = 8"), 1, "nobody else's records");
    let runs = c.ok(&["-n", &ns, "get", "scrubruns", "-l", "lethe.dev/deletion-request=erase-7", "-o", "name"]);
    assert_eq!(runs.lines().count(), 2, "{runs}");
    assert_eq!(jsonpath(&c, &ns, "deletionrequest/erase-7", "{.status.datasets[0].recordsAffected}"), "4");
    assert_eq!(jsonpath(&c, &ns, "deletionrequest/erase-7", "{.status.datasets[0].remaining}"), "0");
    assert_eq!(
        jsonpath(&c, &ns, "deletionrequest/erase-7", "{.status.respondedAt}"),
        responded,
        "answered at the first pass"
    );
    assert_eq!(
        jsonpath(&c, &ns, "deletionrequest/erase-7", "{.status.conditions[?(@.type==\"Overdue\")].status}"),
        "False"
    );
    eventually("the Secret is deleted at the end", LIMIT, || {
        (c.kubectl(&["-n", &ns, "get", "secret", "subject-7"]).0 != 0).then_some(())
    });
    // The new receipt verifies.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(["report", "--verify", "erase-7", "-n", &ns])
        .env("KUBECONFIG", &c.kubeconfig)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    drop(op);
}

/// An anonymization rule the table cannot take fails the run at its plan,
/// dry run or not, with the column named and nothing changed: `fixed` on a
/// UNIQUE column would give every record the same value.
#[test]
fn an_anonymization_rule_the_table_cannot_take_fails_the_run_before_any_change() {
    let c = Cluster::start();
    let pg = PgServer::start();
    let sql = Sql::connect(&pg);
    sql.exec(
        "CREATE TABLE accounts (id bigint PRIMARY KEY, user_id bigint, email text UNIQUE, closed_at timestamptz);
         INSERT INTO accounts SELECT i, i, 'u' || i || '@example.com', now() - make_interval(days => i) FROM generate_series(1, 100) i;",
    );
    let ns = c.namespace("badrule");
    let _op = Operator::start(&c, &ns, "in-process", "op-badrule");
    let dataset = |name: &str, dry: bool| {
        dataset_manifest(
            name,
            "accounts",
            "closed_at",
            &format!(
                "  dryRun: {dry}\n  safety: {{maxDeletePercent: 100}}\n  anonymization:\n    fields: [{{field: email, strategy: fixed, value: removed}}]\n"
            ),
        )
        .replace("retention: {keepFor: 30d}", "retention: {keepFor: 30d, action: anonymize}")
    };
    c.apply_text(
        &format!("{}---\n{}---\n{}", store_manifest(&pg), dataset("rehearsal", true), dataset("accounts", false)),
        &["-n", &ns],
    );
    for name in ["rehearsal", "accounts"] {
        let failed = wait_phase(&c, &ns, name, "Failed");
        let condition = &failed["status"]["conditions"][0];
        assert_eq!(condition["reason"], "InvalidConfiguration", "{:#}", failed["status"]);
        let message = condition["message"].as_str().unwrap_or_default();
        assert!(message.contains("email") && message.contains("UNIQUE"), "{message}");
    }
    assert_eq!(sql.count("SELECT count(*) FROM accounts WHERE email LIKE 'u%@example.com'"), 100, "nothing changed");
}

/// A Dataset over a table whose time column counts milliseconds since 1970:
/// without `unixTimeUnit` its run fails before any change, naming the
/// field to set; with it, exactly the records older than the window go.
#[test]
fn integer_time_columns_need_the_datasets_unit_and_then_expire_by_it() {
    let c = Cluster::start();
    let pg = PgServer::start();
    let sql = Sql::connect(&pg);
    for t in ["clicks_unitless", "clicks"] {
        // One row per day of age, plus twelve hours: 1 to 29 days are kept.
        sql.exec(&format!(
            "CREATE TABLE {t} (id bigint PRIMARY KEY, user_id bigint, clicked_ms bigint);
             INSERT INTO {t} SELECT i, i, (extract(epoch FROM now() - make_interval(days => i, hours => 12)) * 1000)::bigint
               FROM generate_series(1, 100) i;"
        ));
    }
    let ns = c.namespace("unixtime");
    let _op = Operator::start(&c, &ns, "in-process", "op-unixtime");
    let brake = "  safety: {maxDeletePercent: 100}\n";
    c.apply_text(
        &format!(
            "{}---\n{}---\n{}",
            store_manifest(&pg),
            dataset_manifest("clicks-unitless", "clicks_unitless", "clicked_ms", brake),
            dataset_manifest("clicks", "clicks", "clicked_ms", brake).replace(
                "timestamps: {created: clicked_ms}",
                "timestamps: {created: clicked_ms, unixTimeUnit: Milliseconds}"
            )
        ),
        &["-n", &ns],
    );
    let failed = wait_phase(&c, &ns, "clicks-unitless", "Failed");
    let condition = &failed["status"]["conditions"][0];
    assert_eq!(condition["reason"], "InvalidConfiguration", "{:#}", failed["status"]);
    let message = condition["message"].as_str().unwrap_or_default();
    assert!(message.contains("clicked_ms") && message.contains("unixTimeUnit"), "{message}");
    assert_eq!(sql.count("SELECT count(*) FROM clicks_unitless"), 100, "nothing changed");

    let done = wait_phase(&c, &ns, "clicks", "Succeeded");
    assert_eq!(done["status"]["counts"]["deleted"], 71, "{:#}", done["status"]);
    assert_eq!(sql.count("SELECT count(*) FROM clicks WHERE id < 30"), 29, "every record younger than 30 days kept");
    assert_eq!(sql.count("SELECT count(*) FROM clicks"), 29, "every older one gone");
}

/// A store's message may quote a record: here a guard trigger refuses to
/// delete a member, naming the address (in capitals) in its exception. The
/// erasure fails before anything is deleted, and says why, with the
/// subject's identifier taken out of the message everywhere it goes.
#[test]
fn a_store_message_quoting_the_subject_reaches_no_status_event_or_log() {
    let c = Cluster::start();
    let pg = PgServer::start();
    let sql = Sql::connect(&pg);
    sql.exec(
        "CREATE TABLE members (id bigint PRIMARY KEY, user_id bigint, email text, created_at timestamptz);
         INSERT INTO members SELECT i, i, 'm' || i || '@example.com', now() - make_interval(days => i) FROM generate_series(1, 50) i;
         UPDATE members SET email = 'Jane.Roe@example.com' WHERE id = 7;
         CREATE FUNCTION guard() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN RAISE EXCEPTION 'member % is under review and cannot be removed', upper(OLD.email); END $$;
         CREATE TRIGGER members_guard BEFORE DELETE ON members FOR EACH ROW EXECUTE FUNCTION guard();",
    );
    let ns = c.namespace("quoted");
    let op = Operator::start(&c, &ns, "in-process", "op-quoted");
    let dataset = dataset_manifest("members", "members", "created_at", "")
        .replace("subjectFields: {user_id: user_id}", "subjectFields: {email: email}")
        .replace("keepFor: 30d", "keepFor: 3650d");
    // The identifier in a Secret, as a request should carry it.
    let request = "apiVersion: v1\nkind: Secret\nmetadata: {name: forget-jane}\nstringData: {email: Jane.Roe@example.com}\n---\n\
                   apiVersion: lethe.dev/v1alpha1\nkind: DeletionRequest\nmetadata: {name: forget-jane}\nspec:\n  \
                   subject: {secretRef: {name: forget-jane}}\n  regime: GDPR\n";
    c.apply_text(&format!("{}---\n{dataset}---\n{request}", store_manifest(&pg)), &["-n", &ns]);
    let failed = eventually("the erasure to fail", LIMIT, || {
        let r = object(&c, &ns, "deletionrequest/forget-jane");
        (r["status"]["phase"] == "Failed").then_some(r)
    });
    let error = failed["status"]["datasets"][0]["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains("member [identifier] is under review and cannot be removed"),
        "the store's reason, without the identifier: {:#}",
        failed["status"]
    );
    assert_eq!(sql.count("SELECT count(*) FROM members"), 50, "nothing deleted");
    let events = c.ok(&["-n", &ns, "get", "events", "-o", "yaml"]);
    let everything = c.ok(&["-n", &ns, "get", "lethe", "-o", "yaml"]);
    for (what, text) in [("operator log", op.logs()), ("Events", events), ("Lethe objects", everything)] {
        assert!(!text.to_ascii_lowercase().contains("jane.roe"), "the subject's e-mail address appears in the {what}");
    }
}

/// A delete that would reach a held Dataset's rows through a foreign key
/// keeps the records those rows refer to. Customers past their window:
/// deleting one cascades into its orders (`ON DELETE CASCADE`) and clears
/// its tickets' reference (`SET NULL`). A hold on one subject's orders (by
/// Secret) and a hold on every ticket keep exactly the customers those
/// rows refer to, counted as held and naming both holds; the other
/// customers go, their unheld orders with them. Orders declare their
/// relation; tickets do not, and their foreign key is followed instead.
/// An invoice, of a table no Dataset names, references a customer through
/// a key that neither cascades nor sets NULL: that customer stays, counted
/// as referenced, and its subject's erasure is blocked saying why.
/// The same in-process and from a scrub Job (which gets the store's other
/// Datasets from the operator).
fn holds_on_referring_datasets_keep_what_their_rows_refer_to(executor: &str) {
    let c = Cluster::start();
    let pg = PgServer::start();
    let sql = Sql::connect(&pg);
    sql.exec(
        "CREATE TABLE customers (id bigint PRIMARY KEY, user_id bigint, created_at timestamptz);
         INSERT INTO customers SELECT i, i, now() - interval '100 days' FROM generate_series(1, 6) i;
         CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint, created_at timestamptz,
                              customer_id bigint REFERENCES customers (id) ON DELETE CASCADE);
         INSERT INTO orders VALUES (11, 1, now(), 1), (12, 2, now(), 2), (13, 3, now(), 3), (14, 2, now(), NULL);
         CREATE TABLE tickets (id bigint PRIMARY KEY, user_id bigint, created_at timestamptz,
                               customer_id bigint REFERENCES customers (id) ON DELETE SET NULL);
         INSERT INTO tickets VALUES (21, 4, now(), 4);
         CREATE TABLE invoices (id bigint PRIMARY KEY, customer_id bigint REFERENCES customers (id));
         INSERT INTO invoices VALUES (31, 5);",
    );
    let ns = c.namespace("referrers");
    let _op = Operator::start(&c, &ns, executor, "op-referrers");
    let refers = "  relations: [{dataset: customers, columns: [customer_id], references: [id]}]\n";
    let hold = |name: &str, dataset: &str, subjects: &str| {
        format!(
            "apiVersion: lethe.dev/v1alpha1\nkind: LegalHold\nmetadata: {{name: {name}}}\nspec:\n  reason: Investigation\n  datasets: [{dataset}]\n{subjects}"
        )
    };
    let manifest = [
        "apiVersion: v1\nkind: Secret\nmetadata: {name: fraud-subjects}\nstringData: {user_id: \"2\"}\n".to_string(),
        hold("fraud", "orders", "  subjects: {secretRef: {name: fraud-subjects}}\n"),
        hold("audit", "tickets", ""),
        store_manifest(&pg),
        dataset_manifest("orders", "orders", "created_at", refers),
        // No relation declared: the store's foreign key stands for it.
        dataset_manifest("tickets", "tickets", "created_at", ""),
    ]
    .join("---\n");
    c.apply_text(&manifest, &["-n", &ns]);
    for h in ["fraud", "audit"] {
        c.ok(&["-n", &ns, "wait", "--for=condition=Active", &format!("legalhold/{h}"), "--timeout=60s"]);
    }
    // The referring Datasets exist before the referenced one's first run.
    c.apply_text(
        &dataset_manifest("customers", "customers", "created_at", "  safety: {maxDeletePercent: 100}\n"),
        &["-n", &ns],
    );
    let done = wait_phase(&c, &ns, "customers", "Succeeded");
    let st = &done["status"];
    assert_eq!(sql.count("SELECT count(*) FROM customers WHERE id IN (2, 4, 5)"), 3, "{st:#}");
    assert_eq!(sql.count("SELECT count(*) FROM customers"), 3, "the others went: {st:#}");
    assert_eq!(sql.count("SELECT count(*) FROM orders WHERE id IN (12, 14)"), 2, "held orders stay");
    assert_eq!(sql.count("SELECT count(*) FROM orders"), 2, "unheld orders went with their customers");
    assert_eq!(sql.count("SELECT count(*) FROM tickets WHERE customer_id = 4"), 1, "the held ticket is unchanged");
    assert_eq!(st["plan"]["heldRecords"], 2, "{st:#}");
    assert_eq!(st["counts"]["deleted"], 3, "{st:#}");
    assert_eq!(st["counts"]["skippedHeld"], 2, "{st:#}");
    assert_eq!(st["counts"]["skippedReferenced"], 1, "{st:#}");
    let succeeded = st["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Succeeded").unwrap();
    let message = succeeded["message"].as_str().unwrap_or_default();
    assert!(message.contains("1 kept") && message.contains("referenced by rows of invoices"), "{message}");
    let mut holds: Vec<String> =
        st["plan"]["holds"].as_array().unwrap().iter().map(|h| h.as_str().unwrap().to_string()).collect();
    holds.sort();
    assert_eq!(holds, ["audit", "fraud"], "{st:#}");

    // Erases a subject; its customer record stays, one record left: why,
    // and the request's result for the orders.
    let erase = |user: &str| {
        let name = format!("subject-{user}");
        c.apply_text(
            &format!("apiVersion: lethe.dev/v1alpha1\nkind: DeletionRequest\nmetadata: {{name: {name}}}\nspec:\n  subject: {{identifiers: {{user_id: \"{user}\"}}}}\n  regime: GDPR\n"),
            &["-n", &ns],
        );
        let request = format!("deletionrequest/{name}");
        c.ok(&["-n", &ns, "wait", "--for=condition=Complete", &request, "--timeout=120s"]);
        let req = status(&c, &ns, &request);
        let entry = |d: &str| req["datasets"].as_array().unwrap().iter().find(|e| e["dataset"] == d).cloned().unwrap();
        let customers = entry("customers");
        assert_eq!(
            (customers["phase"].as_str(), customers["remaining"].as_i64()),
            (Some("Blocked"), Some(1)),
            "{req:#}"
        );
        (customers["remainingReason"].as_str().unwrap_or_default().to_string(), entry("orders"))
    };

    // Erasing the held subject: its orders are held, and its customer
    // record stays with them, saying why.
    let (reason, orders) = erase("2");
    assert!(reason.contains("fraud") && reason.contains("refer"), "{reason}");
    assert_eq!(orders["phase"], "Blocked", "{orders:#}");
    assert_eq!(sql.count("SELECT count(*) FROM customers WHERE id = 2"), 1);
    assert_eq!(sql.count("SELECT count(*) FROM orders WHERE user_id = 2"), 2);

    // Erasing the invoiced subject: nothing holds it, but the invoice
    // still references its customer record.
    let (reason, _) = erase("5");
    assert!(reason.contains("still referenced by rows of invoices") && !reason.contains("fraud"), "{reason}");
    assert_eq!(sql.count("SELECT count(*) FROM customers WHERE id = 5"), 1);
    assert_eq!(sql.count("SELECT count(*) FROM invoices"), 1);
}

#[test]
fn holds_on_referring_datasets_keep_what_their_rows_refer_to_in_process() {
    holds_on_referring_datasets_keep_what_their_rows_refer_to("in-process");
}

#[test]
fn holds_on_referring_datasets_keep_what_their_rows_refer_to_as_jobs() {
    holds_on_referring_datasets_keep_what_their_rows_refer_to("job");
}
