//! The Helm chart: linted and rendered by Helm's own SDK, its CRDs the
//! generated ones, every value documented, RBAC without wildcards, alerts
//! and dashboard queries checked by promtool, and an install into the API
//! emulator whose Deployment runs the operator from the chart's own spec.

mod common;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use common::{Cluster, operator::eventually};
use serde_json::Value;

const CHART: &str = "charts/lethe";

fn python() -> PathBuf {
    let venv = std::env::var("LETHE_VENV").unwrap_or_else(|_| "/var/tmp/lethe-venv".into());
    let p = Path::new(&venv).join("bin/python");
    assert!(p.exists(), "{} missing: run scripts/setup-test-env.sh", p.display());
    p
}

/// `helm.py` with these arguments; returns stdout, failing the test on error.
fn helm(args: &[&str]) -> String {
    let out = Command::new(python()).arg("scripts/helm.py").args(args).output().expect("helm.py runs");
    assert!(
        out.status.success(),
        "helm.py {} failed:\n{}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Renders the chart with extra values (YAML); returns the parsed documents.
fn render(values: &str, include_crds: bool) -> (String, Vec<Value>) {
    let f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(f.path(), values).unwrap();
    let mut args = vec!["template", "lethe", CHART, "--namespace", "lethe-system", "-f", f.path().to_str().unwrap()];
    if include_crds {
        args.push("--include-crds");
    }
    let text = helm(&args);
    let docs = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::from_value::<Value>(serde::Deserialize::deserialize(d).unwrap()).unwrap())
        .filter(|v| !v.is_null())
        .collect();
    (text, docs)
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} not rendered"))
}

const EVERYTHING_ON: &str = "
scrubJobs: {namespaces: [shop, billing]}
metrics:
  serviceMonitor: {enabled: true}
  prometheusRule: {enabled: true}
dashboard: {enabled: true}
networkPolicy:
  enabled: true
  metricsFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]
";

#[test]
fn the_chart_lints_clean_with_defaults_and_with_everything_on() {
    helm(&["lint", CHART]);
    let f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(f.path(), EVERYTHING_ON).unwrap();
    helm(&["lint", CHART, "-f", f.path().to_str().unwrap()]);
}

#[test]
fn the_charts_crds_are_the_generated_crds_byte_for_byte() {
    let names = |dir: &str| -> BTreeSet<String> {
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    };
    assert_eq!(names("crds"), names("charts/lethe/crds"), "same files; regenerate with `make crds`");
    for name in names("crds") {
        let top = std::fs::read(Path::new("crds").join(&name)).unwrap();
        let chart = std::fs::read(Path::new("charts/lethe/crds").join(&name)).unwrap();
        assert!(top == chart, "charts/lethe/crds/{name} differs from crds/{name}; regenerate with `make crds`");
    }
}

#[test]
fn every_value_is_documented_in_the_chart_readme_and_nothing_else_is() {
    let values: Value = serde_yaml::from_str(&std::fs::read_to_string("charts/lethe/values.yaml").unwrap()).unwrap();
    let readme = std::fs::read_to_string("charts/lethe/README.md").unwrap();
    let documented: BTreeSet<String> = readme
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.trim_start_matches("| `").split_once('`').map(|(k, _)| k.to_string()))
        .filter(|k| k.chars().next().is_some_and(|c| c.is_ascii_lowercase()) && !k.contains(' '))
        .collect();
    let mut leaves = Vec::new();
    fn walk(prefix: &str, v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, v) in m {
                    let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&p, v, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }
    walk("", &values, &mut leaves);
    let covered = |leaf: &str| {
        let parts: Vec<&str> = leaf.split('.').collect();
        (1..=parts.len()).any(|n| documented.contains(&parts[..n].join(".")))
    };
    let undocumented: Vec<&String> = leaves.iter().filter(|l| !covered(l)).collect();
    assert!(undocumented.is_empty(), "values missing from charts/lethe/README.md: {undocumented:?}");
    // Every documented value exists.
    for d in &documented {
        let exists = leaves.iter().any(|l| l == d || l.starts_with(&format!("{d}.")));
        assert!(exists, "README documents `{d}`, which values.yaml does not have");
    }
    // values.yaml describes each documented value too: a `# --` comment above its key.
    let text = std::fs::read_to_string("charts/lethe/values.yaml").unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut path: Vec<(usize, String)> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') || t.starts_with('-') {
            continue;
        }
        let Some((key, _)) = t.split_once(':') else { continue };
        let indent = l.len() - t.len();
        path.retain(|(d, _)| *d < indent);
        path.push((indent, key.to_string()));
        let full = path.iter().map(|(_, k)| k.as_str()).collect::<Vec<_>>().join(".");
        if documented.contains(&full) {
            let described =
                lines[..i].iter().rev().take_while(|p| p.trim_start().starts_with('#')).any(|p| p.contains("# --"));
            assert!(described, "values.yaml line {}: `{full}` has no `# --` description", i + 1);
        }
    }
}

#[test]
fn rbac_names_exact_verbs_and_scrub_jobs_cannot_read_secrets() {
    let (_, docs) = render(EVERYTHING_ON, false);
    let roles: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role").collect();
    assert!(roles.len() >= 5, "operator, operator-namespace, admin, requester, viewer roles");
    for r in &roles {
        for rule in r["rules"].as_array().unwrap() {
            for field in ["apiGroups", "resources", "verbs"] {
                let items =
                    rule[field].as_array().unwrap_or_else(|| panic!("{} rule lacks {field}", r["metadata"]["name"]));
                assert!(!items.is_empty());
                assert!(items.iter().all(|v| v != "*"), "{} {}: wildcard in {field}", r["kind"], r["metadata"]["name"]);
            }
        }
    }
    let grants = |role: &Value, group: &str, resource: &str, verb: &str| {
        role["rules"].as_array().unwrap().iter().any(|r| {
            r["apiGroups"].as_array().unwrap().iter().any(|g| g == group)
                && r["resources"].as_array().unwrap().iter().any(|x| x == resource)
                && r["verbs"].as_array().unwrap().iter().any(|v| v == verb)
        })
    };
    // Scrub Jobs get no standing role: the operator grants each its own
    // (see the install test), and may grant only what it holds.
    assert!(!docs.iter().any(|d| d["metadata"]["name"] == "lethe-scrub" && d["kind"] != "ServiceAccount"));
    // The operator writes only status on users' objects: never their spec.
    let op = find(&docs, "ClusterRole", "lethe-operator");
    for kind in ["datastores", "datasets", "retentionpolicies", "legalholds", "deletionrequests"] {
        for verb in ["update", "patch", "create", "delete"] {
            assert!(!grants(op, "lethe.dev", kind, verb), "operator may not {verb} {kind}");
        }
        assert!(grants(op, "lethe.dev", &format!("{kind}/status"), "patch"));
    }
    // Requesters file requests; they cannot change one (and so cannot approve it).
    let req = find(&docs, "ClusterRole", "lethe-requester");
    assert!(grants(req, "lethe.dev", "deletionrequests", "create"));
    for verb in ["update", "patch", "delete"] {
        assert!(!grants(req, "lethe.dev", "deletionrequests", verb));
    }
    let labels = |n: &str| find(&docs, "ClusterRole", n)["metadata"]["labels"].clone();
    assert_eq!(labels("lethe-admin")["rbac.authorization.k8s.io/aggregate-to-admin"], "true");
    assert_eq!(labels("lethe-requester")["rbac.authorization.k8s.io/aggregate-to-edit"], "true");
    assert_eq!(labels("lethe-viewer")["rbac.authorization.k8s.io/aggregate-to-view"], "true");
    // Each listed namespace gets the Job ServiceAccount.
    for ns in ["shop", "billing"] {
        assert!(docs.iter().any(|d| d["kind"] == "ServiceAccount" && d["metadata"]["namespace"] == ns));
    }
    let op = find(&docs, "ClusterRole", "lethe-operator");
    for (resource, verb) in [("roles", "create"), ("rolebindings", "create"), ("roles", "patch")] {
        assert!(grants(op, "rbac.authorization.k8s.io", resource, verb), "{verb} {resource}");
    }
    for verb in ["escalate", "bind", "delete"] {
        assert!(!grants(op, "rbac.authorization.k8s.io", "roles", verb), "the operator may not {verb} roles");
    }
    // The Deployment is locked down.
    let d = find(&docs, "Deployment", "lethe");
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert!(c["resources"]["limits"]["memory"].is_string() && c["resources"]["requests"]["cpu"].is_string());
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
}

/// The PrometheusRule's groups as a plain Prometheus rules file.
fn rules_file(docs: &[Value]) -> tempfile::NamedTempFile {
    let rule = find(docs, "PrometheusRule", "lethe");
    let f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(f.path(), serde_yaml::to_string(&rule["spec"]).unwrap()).unwrap();
    f
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool").args(args).output().expect("promtool (run scripts/setup-test-env.sh)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {}:\n{text}", args.join(" "));
    text
}

#[test]
fn alerts_fire_exactly_when_they_should() {
    let (_, docs) = render(EVERYTHING_ON, false);
    let rules = rules_file(&docs);
    promtool(&["check", "rules", rules.path().to_str().unwrap()]);
    // promtool unit tests: series in, alerts out (time starts at 0).
    let tests = format!(
        r#"rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'lethe_deletion_requests_overdue{{regime="GDPR"}}'
        values: '0 0 1x20'
      - series: 'lethe_deletion_requests_overdue{{regime="CCPA"}}'
        values: '0x22'
      # Due at t=2 days: within 3 days from the start.
      - series: 'lethe_deletion_request_next_deadline_timestamp_seconds{{regime="GDPR"}}'
        values: '172800x22'
      # Due in 10 days: not yet.
      - series: 'lethe_deletion_request_next_deadline_timestamp_seconds{{regime="CCPA"}}'
        values: '864000x22'
      # None open.
      - series: 'lethe_deletion_request_next_deadline_timestamp_seconds{{regime="Other"}}'
        values: '0x22'
    alert_rule_test:
      - eval_time: 1m
        alertname: LetheDeletionRequestOverdue
        exp_alerts: []
      - eval_time: 10m
        alertname: LetheDeletionRequestOverdue
        exp_alerts:
          - exp_labels: {{severity: critical, regime: GDPR}}
            exp_annotations:
              summary: "1 GDPR deletion request(s) are past their deadline"
              description: "kubectl get deletionrequests -A shows which; their Overdue condition says since when."
      - eval_time: 10m
        alertname: LetheDeletionRequestDueSoon
        exp_alerts:
          - exp_labels: {{severity: warning, regime: GDPR}}
            exp_annotations:
              summary: "An open GDPR deletion request is due within 3 days"
              description: "Approve or unblock it before its deadline: kubectl get deletionrequests -A."
  - interval: 5m
    input_series:
      # Daily schedule; one Dataset succeeded at t=0 and never again, the other all along.
      - series: 'lethe_dataset_schedule_interval_seconds{{namespace="shop",dataset="stale"}}'
        values: '86400x700'
      - series: 'lethe_dataset_last_success_timestamp_seconds{{namespace="shop",dataset="stale"}}'
        values: '0x700'
      - series: 'lethe_dataset_schedule_interval_seconds{{namespace="shop",dataset="fresh"}}'
        values: '86400x700'
      - series: 'lethe_dataset_last_success_timestamp_seconds{{namespace="shop",dataset="fresh"}}'
        values: '0+300x700'
    alert_rule_test:
      - eval_time: 47h
        alertname: LetheDatasetNotScrubbed
        exp_alerts: []
      - eval_time: 50h
        alertname: LetheDatasetNotScrubbed
        exp_alerts:
          - exp_labels: {{severity: warning, namespace: shop, dataset: stale}}
            exp_annotations:
              summary: "Dataset shop/stale has had no successful retention run within twice its schedule"
              description: "Its LastRunSucceeded condition and last run say why: kubectl -n shop describe dataset stale."
  - interval: 5m
    input_series:
      - series: 'lethe_run_failures_total{{namespace="shop",store="db",store_type="postgres",purpose="retention",reason="Unavailable"}}'
        values: '0 1 2 3 4 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5'
      - series: 'lethe_run_failures_total{{namespace="shop",store="db",store_type="postgres",purpose="retention",reason="AccessDenied"}}'
        values: '0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1'
      - series: 'lethe_blast_radius_stops_total{{namespace="shop",dataset="orders"}}'
        values: '0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1'
    alert_rule_test:
      - eval_time: 30m
        alertname: LetheRunsFailing
        exp_alerts:
          - exp_labels: {{severity: warning, reason: Unavailable}}
            exp_annotations:
              summary: "5 scrub runs failed in the last hour (Unavailable)"
              description: "kubectl get scrubruns -A shows the failed runs and their Failed condition."
      - eval_time: 20m
        alertname: LetheBlastRadiusStop
        exp_alerts:
          - exp_labels: {{severity: warning, namespace: shop, dataset: orders}}
            exp_annotations:
              summary: "The safety brake stopped a run of shop/orders before it deleted anything"
              description: "The run waits for approval: check its plan, then annotate it lethe.dev/approved-by, or fix the Dataset."
      - eval_time: 120m
        alertname: LetheBlastRadiusStop
        exp_alerts: []
"#,
        rules = rules.path().display()
    );
    let f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(f.path(), tests).unwrap();
    let out = promtool(&["test", "rules", f.path().to_str().unwrap()]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_dashboard_query_parses_and_names_exported_metrics() {
    let dash: Value = serde_json::from_str(&std::fs::read_to_string("charts/lethe/dashboards/lethe.json").unwrap())
        .expect("the dashboard is JSON");
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 12, "panels for the metrics the issue names");
    // Grafana's variables, as Grafana substitutes them.
    let concrete: Vec<String> = exprs
        .iter()
        .map(|e| e.replace("$namespace", ".*").replace("$__rate_interval", "5m").replace("$__range", "7d"))
        .collect();
    let rules: String = concrete
        .iter()
        .enumerate()
        .map(|(i, e)| {
            format!("      - record: dashboard:query{i}\n        expr: {}\n", serde_json::to_string(e).unwrap())
        })
        .collect();
    let f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(f.path(), format!("groups:\n  - name: dashboard\n    rules:\n{rules}")).unwrap();
    promtool(&["check", "rules", f.path().to_str().unwrap()]);
    // Every metric a panel reads is one the operator exports.
    let source = std::fs::read_to_string("src/operator/health.rs").unwrap();
    let re_metric = |e: &str| -> Vec<String> {
        e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("lethe_"))
            .map(String::from)
            .collect()
    };
    for e in &exprs {
        for m in re_metric(e) {
            let base =
                m.trim_start_matches("lethe_").trim_end_matches("_bucket").trim_end_matches("_total").to_string();
            assert!(source.contains(&format!("\"{base}\"")), "dashboard reads {m}, which the operator does not export");
        }
    }
    let ds = dash["templating"]["list"].as_array().unwrap();
    assert!(ds.iter().any(|v| v["name"] == "namespace"));
}

/// Installs the rendered chart into the emulator, which runs the chart's
/// Deployment as a local process and enforces RBAC: the operator, holding
/// only the chart's roles, scrubs a Dataset through a Job running under the
/// chart's `lethe-scrub` ServiceAccount, honours a LegalHold named by
/// Secret and erases a requested subject through a Job of its own, and
/// nothing either asks is denied.
#[test]
fn the_rendered_chart_installs_and_its_deployment_runs_the_operator() {
    let c = Cluster::start_with(false);
    c.emulator.enforce_rbac();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let values = format!(
        "scrubJobs: {{namespaces: [shop]}}\nmetrics: {{port: {port}}}\nnetworkPolicy: {{enabled: true}}\ndashboard: {{enabled: true}}\nlogJson: false\n"
    );
    let (text, docs) = render(&values, true);
    // CRDs first (as Helm does), then the namespaces the chart's objects live in.
    let crds: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "CustomResourceDefinition").collect();
    assert_eq!(crds.len(), 6);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, docs: &[&Value]| {
        let p = dir.path().join(name);
        let body: Vec<String> = docs.iter().map(|d| serde_yaml::to_string(d).unwrap()).collect();
        std::fs::write(&p, body.join("---\n")).unwrap();
        p
    };
    let crd_file = write("crds.yaml", &crds);
    c.ok(&["apply", "-f", crd_file.to_str().unwrap()]);
    c.namespace("lethe-system");
    c.namespace("shop");
    let rest: Vec<&Value> = docs.iter().filter(|d| d["kind"] != "CustomResourceDefinition").collect();
    let rest_file = write("chart.yaml", &rest);
    let dry = c.ok(&["apply", "--dry-run=client", "-f", rest_file.to_str().unwrap()]);
    assert!(dry.contains("deployment.apps/lethe created (dry run)"), "{dry}");
    c.ok(&["apply", "-f", rest_file.to_str().unwrap()]);
    assert!(text.contains("kind: NetworkPolicy") && text.contains("lethe-dashboard"));

    // The emulator starts the Deployment's pod: the operator, with the
    // chart's arguments and environment, holds the Lease and becomes ready.
    c.ok(&["-n", "lethe-system", "rollout", "status", "deployment/lethe", "--timeout=90s"]);
    let pods = c.ok(&["-n", "lethe-system", "get", "pods", "-l", "app.kubernetes.io/component=operator", "-o", "name"]);
    let pod = pods.lines().next().expect("an operator pod").trim_start_matches("pod/").to_string();
    let logs = c.ok(&["-n", "lethe-system", "logs", &pod]);
    assert!(logs.contains("holding the lease"), "{logs}");

    // A Dataset on an SQLite file: scrubbed by a Job running as lethe-scrub.
    let db_dir = tempfile::tempdir().unwrap();
    let db = db_dir.path().join("app.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE sessions (id INTEGER PRIMARY KEY, user_id INTEGER, started_at TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
         INSERT INTO sessions SELECT i, i, datetime('now', '-' || (i * 3) || ' days', '+1 hours') FROM n;",
    )
    .unwrap();
    let manifest = format!(
        "apiVersion: lethe.dev/v1alpha1\nkind: DataStore\nmetadata: {{name: app}}\nspec: {{type: sqlite, sqlite: {{path: {}}}}}\n---\napiVersion: lethe.dev/v1alpha1\nkind: Dataset\nmetadata: {{name: sessions}}\nspec:\n  storeRef: {{name: app}}\n  categories: [usage]\n  table: {{name: sessions}}\n  timestamps: {{created: started_at}}\n  subjectFields: {{user_id: user_id}}\n  retention: {{keepFor: 270d}}\n",
        db.display()
    );
    c.apply_text(&manifest, &["-n", "shop"]);
    c.ok(&["-n", "shop", "wait", "--for=condition=LastRunSucceeded", "dataset/sessions", "--timeout=90s"]);
    let left: i64 = conn.query_row("SELECT count(*) FROM sessions", [], |r| r.get(0)).unwrap();
    assert_eq!(left, 90, "exactly the 90 rows inside 270 days remain");
    let sa = c.ok(&["-n", "shop", "get", "jobs", "-o", "jsonpath={.items[*].spec.template.spec.serviceAccountName}"]);
    assert_eq!(sa.trim(), "lethe-scrub");
    let image =
        c.ok(&["-n", "shop", "get", "jobs", "-o", "jsonpath={.items[0].spec.template.spec.containers[0].image}"]);
    assert_eq!(image, "ghcr.io/lethe-dev/lethe:0.1.0", "scrub Jobs run the chart's image");
    // A legal hold named by Secret and two deletion requests, one for the
    // held subject: erased through Jobs as well, under the chart's roles.
    c.apply_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: litigation-subjects}\nstringData: {user_id: \"5\"}\n---\napiVersion: lethe.dev/v1alpha1\nkind: LegalHold\nmetadata: {name: litigation}\nspec:\n  reason: Litigation involving one customer\n  datasets: [sessions]\n  subjects: {secretRef: {name: litigation-subjects}}\n",
        &["-n", "shop"],
    );
    c.ok(&["-n", "shop", "wait", "--for=condition=Ready", "legalhold/litigation", "--timeout=60s"]);
    let held = "apiVersion: lethe.dev/v1alpha1\nkind: DeletionRequest\nmetadata: {name: held-subject}\nspec:\n  subject: {identifiers: {user_id: \"5\"}}\n  regime: GDPR\n";
    // The other subject named by a Secret, which the operator deletes at the end.
    let by_secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: subject-7}\nstringData: {user_id: \"7\"}\n---\napiVersion: lethe.dev/v1alpha1\nkind: DeletionRequest\nmetadata: {name: free-subject}\nspec:\n  subject: {secretRef: {name: subject-7}}\n  regime: GDPR\n  deleteSecretOnCompletion: true\n";
    c.apply_text(&format!("{held}---\n{by_secret}"), &["-n", "shop"]);
    for r in ["held-subject", "free-subject"] {
        c.ok(&["-n", "shop", "wait", "--for=condition=Complete", &format!("deletionrequest/{r}"), "--timeout=120s"]);
    }
    let phase =
        |r: &str| c.ok(&["-n", "shop", "get", &format!("deletionrequest/{r}"), "-o", "jsonpath={.status.phase}"]);
    assert_eq!((phase("held-subject").as_str(), phase("free-subject").as_str()), ("Blocked", "Completed"));
    let of = |user: i64| -> i64 {
        conn.query_row("SELECT count(*) FROM sessions WHERE user_id = ?1", [user], |r| r.get(0)).unwrap()
    };
    assert_eq!((of(5), of(7)), (1, 0), "the held subject's session kept, the other's erased");
    assert_eq!(conn.query_row("SELECT count(*) FROM sessions", [], |r| r.get::<_, i64>(0)).unwrap(), 89);
    eventually("the request's Secret is deleted", Duration::from_secs(30), || {
        (c.kubectl(&["-n", "shop", "get", "secret", "subject-7"]).0 != 0).then_some(())
    });
    // The erasure ran as a Job of its own, as lethe-scrub.
    let jobs = c.ok(&["-n", "shop", "get", "jobs", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert!(jobs.split(' ').any(|j| j == "free-subject-sessions-scrub"), "{jobs}");
    let sas = c.ok(&["-n", "shop", "get", "jobs", "-o", "jsonpath={.items[*].spec.template.spec.serviceAccountName}"]);
    assert_eq!(sas.trim(), "lethe-scrub lethe-scrub");
    // The chart's roles were enough: RBAC denied the operator and the Job nothing.
    assert_eq!(c.emulator.denied(), Vec::<String>::new());
    // The operator and the Job did talk as their ServiceAccounts (not as admins).
    assert!(c.emulator.allowed() > 20, "only {} requests were authorized by RBAC", c.emulator.allowed());
    // And RBAC is enforced: the Job's ServiceAccount reads its run, not Secrets.
    let run = c.ok(&["-n", "shop", "get", "scrubruns", "-o", "jsonpath={.items[0].metadata.name}"]);
    let denied = c.runtime().block_on(async {
        let mut config = kube::Config::new(c.url.parse().unwrap());
        config.auth_info.token = Some("serviceaccount:shop:lethe-scrub".to_string().into());
        let client = kube::Client::try_from(config).unwrap();
        let runs: kube::Api<lethe::api::ScrubRun> = kube::Api::namespaced(client.clone(), "shop");
        runs.get(&run).await.expect("the Job's ServiceAccount reads its run");
        // Only its own run, Dataset and store: not the list of runs, nor another by name.
        let code = |e: kube::Error| match e {
            kube::Error::Api(s) => s.code,
            other => panic!("{other}"),
        };
        assert_eq!(code(runs.list(&Default::default()).await.unwrap_err()), 403);
        assert_eq!(code(runs.get("another-run").await.unwrap_err()), 403);
        let stores: kube::Api<lethe::api::DataStore> = kube::Api::namespaced(client.clone(), "shop");
        assert_eq!(code(stores.list(&Default::default()).await.unwrap_err()), 403);
        let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> = kube::Api::namespaced(client.clone(), "shop");
        let datasets: kube::Api<lethe::api::Dataset> = kube::Api::namespaced(client, "shop");
        assert_eq!(code(datasets.get("another-dataset").await.unwrap_err()), 403);
        (secrets.list(&Default::default()).await.err(), datasets.delete("sessions", &Default::default()).await.err())
    });
    match denied {
        (Some(kube::Error::Api(s)), Some(kube::Error::Api(d))) => {
            assert_eq!((s.code, d.code), (403, 403));
            assert!(
                s.message.contains("User \"system:serviceaccount:shop:lethe-scrub\" cannot list resource \"secrets\""),
                "{}",
                s.message
            );
        }
        other => panic!("expected two 403s, got {other:?}"),
    }

    // /metrics answers on the chart's port.
    eventually("metrics on the chart's port", Duration::from_secs(30), || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        use std::io::{Read, Write};
        write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.contains("lethe_records_scrubbed_total").then_some(())
    });

    // Uninstalling the Deployment stops the operator.
    c.ok(&["-n", "lethe-system", "delete", "deployment", "lethe"]);
    eventually("the operator stops", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err().then_some(())
    });
}

/// The image's runtime (distroless `cc`) has glibc and libgcc and nothing
/// else: the binary must need no other shared library (no OpenSSL, no
/// system SQLite), or the image would not start.
#[test]
fn the_binary_needs_only_what_the_distroless_image_has() {
    let out = Command::new("ldd").arg(env!("CARGO_BIN_EXE_lethe")).output().expect("ldd");
    let text = String::from_utf8_lossy(&out.stdout);
    let libs: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(libs.iter().any(|l| l.starts_with("libc.so")), "{text}");
    let allowed =
        ["linux-vdso.so", "libc.so", "libm.so", "libgcc_s.so", "ld-linux", "libdl.so", "libpthread.so", "librt.so"];
    for l in libs {
        let base = l.rsplit('/').next().unwrap();
        assert!(
            allowed.iter().any(|a| base.starts_with(a)),
            "the binary needs {base}, which the runtime image lacks:\n{text}"
        );
    }
    let dockerfile = std::fs::read_to_string("Dockerfile").unwrap();
    assert!(dockerfile.contains("FROM gcr.io/distroless/cc-debian12:nonroot"));
    assert!(dockerfile.contains("ENTRYPOINT [\"/lethe\"]"), "the chart and scrub Jobs run /lethe");
    let deployment = std::fs::read_to_string("charts/lethe/templates/deployment.yaml").unwrap();
    assert!(deployment.contains("command: [\"/lethe\"]"));
}
