//! The real `kubectl` against the project's API emulator: every verb a
//! cluster admin uses on Lethe's resources.

mod common;

use common::Cluster;

#[test]
fn crds_pass_client_dry_run_and_apply() {
    let c = Cluster::start_with(false);
    let out = c.ok(&["apply", "--dry-run=client", "-f", "crds/"]);
    assert_eq!(out.matches("created (dry run)").count(), 6, "{out}");
    let out = c.ok(&["apply", "-f", "crds/"]);
    assert_eq!(out.matches("created").count(), 6, "{out}");
    c.ok(&["wait", "--for=condition=Established", "crd/datasets.lethe.dev", "--timeout=10s"]);
    let out = c.ok(&["api-resources", "--api-group=lethe.dev"]);
    for (kind, short) in [
        ("datasets", "dset"),
        ("datastores", "dstore"),
        ("retentionpolicies", "rpol"),
        ("deletionrequests", "delreq"),
        ("legalholds", "lhold"),
        ("scrubruns", "srun"),
    ] {
        assert!(out.lines().any(|l| l.starts_with(kind) && l.contains(short)), "{kind} {short} in\n{out}");
    }
}

#[test]
fn examples_apply_and_show_their_columns() {
    let c = Cluster::start();
    let ns = c.namespace("examples");
    let out = c.ok(&["apply", "-n", &ns, "-f", "examples/"]);
    assert!(out.contains("dataset.lethe.dev/invoices created"), "{out}");
    assert!(out.contains("deletionrequest.lethe.dev/erasure-request-4711 created"), "{out}");
    let out = c.ok(&["get", "-n", &ns, "datasets"]);
    let header = out.lines().next().unwrap();
    for col in ["NAME", "STORE", "WINDOW", "SET BY", "READY", "LAST RUN", "NEXT RUN", "AGE"] {
        assert!(header.contains(col), "{col} in {header}");
    }
    assert_eq!(out.lines().count(), 7, "six datasets:\n{out}");
    let out = c.ok(&["get", "-n", &ns, "rpol", "tax-records"]);
    assert!(out.contains("10y") && out.contains("7y"), "{out}");
    // The category lists every Lethe kind.
    let out = c.ok(&["get", "-n", &ns, "lethe"]);
    assert!(out.contains("datastore.lethe.dev/shop-db"), "{out}");
    assert!(out.contains("legalhold.lethe.dev/fraud-investigation-2026-114"), "{out}");
    // Re-applying changes nothing (a Secret written with stringData always
    // reads as "configured" to kubectl, as against any API server).
    let out = c.ok(&["apply", "-n", &ns, "-f", "examples/"]);
    assert!(out.lines().filter(|l| !l.starts_with("secret/")).all(|l| l.ends_with("unchanged")), "{out}");
    // Secrets come back with stringData folded into base64 data.
    let out = c.ok(&["get", "-n", &ns, "secret", "shop-db-credentials", "-o", "jsonpath={.data.username}"]);
    assert_eq!(out, "bGV0aGVfc2NydWJiZXI=");
}

#[test]
fn get_yaml_describe_and_explain() {
    let c = Cluster::start();
    let ns = c.namespace("reading");
    c.ok(&["apply", "-n", &ns, "-f", "examples/06-invoices.yaml"]);
    let y = c.ok(&["get", "-n", &ns, "dset", "invoices", "-o", "yaml"]);
    for part in [
        "apiVersion: lethe.dev/v1alpha1",
        "kind: Dataset",
        "resourceVersion:",
        "uid:",
        "generation: 1",
        "maxDeletePercent: 20",
    ] {
        assert!(y.contains(part), "{part} in\n{y}");
    }
    let d = c.ok(&["describe", "-n", &ns, "dataset", "invoices"]);
    assert!(d.contains("Name:         invoices") && d.contains("customer-accounts"), "{d}");
    let e = c.ok(&["explain", "dataset.spec.retention.keepAtLeast"]);
    assert!(e.contains("never deleted"), "{e}");
    let e = c.ok(&["explain", "deletionrequests.spec"]);
    assert!(e.contains("regime") && e.contains("subject"), "{e}");
}

#[test]
fn invalid_objects_are_rejected_like_an_api_server_would() {
    let c = Cluster::start();
    let ns = c.namespace("invalid");
    let (code, _, err) = c.kubectl(&["apply", "-n", &ns, "-f", "tests/validate/broken/01-unknown-store-type.yaml"]);
    assert_ne!(code, 0);
    assert!(err.contains(r#"The DataStore "db" is invalid: spec.type: Unsupported value: "oracle""#), "{err}");
    // Unknown fields: strict field validation names the field.
    let (code, _, err) = c.kubectl(&["apply", "-n", &ns, "-f", "tests/validate/broken/02-inline-password.yaml"]);
    assert_ne!(code, 0);
    assert!(err.contains("spec.sql.password"), "{err}");
    // CEL rules are evaluated at admission.
    let (code, _, err) =
        c.kubectl(&["apply", "-n", &ns, "-f", "tests/validate/broken/12-secretref-and-identifiers.yaml"]);
    assert_ne!(code, 0);
    assert!(err.contains("set exactly one of secretRef"), "{err}");
    let (code, _, err) = c.kubectl(&["apply", "-n", &ns, "-f", "tests/validate/broken/06-sql-injection-table.yaml"]);
    assert_ne!(code, 0);
    assert!(err.contains("spec.table.name"), "{err}");
    // Only the valid DataStore of the last file was stored; every rejected object was not.
    let out = c.ok(&["get", "-n", &ns, "datastores,datasets,deletionrequests", "-o", "name"]);
    assert_eq!(out.trim(), "datastore.lethe.dev/db", "rejected objects are not stored");
}

#[test]
fn immutable_fields_are_enforced_by_transition_rules() {
    let c = Cluster::start();
    let ns = c.namespace("immutable");
    c.ok(&["apply", "-n", &ns, "-f", "examples/07-deletion-request.yaml"]);
    let (code, _, err) = c.kubectl(&[
        "patch",
        "-n",
        &ns,
        "delreq",
        "erasure-request-4711",
        "--type=merge",
        "-p",
        r#"{"spec":{"subject":{"secretRef":{"name":"someone-else"}}}}"#,
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("subject is immutable"), "{err}");
    // Other fields may change, and bump the generation.
    c.ok(&[
        "patch",
        "-n",
        &ns,
        "delreq",
        "erasure-request-4711",
        "--type=merge",
        "-p",
        r#"{"spec":{"requireApproval":true}}"#,
    ]);
    let g = c.ok(&["get", "-n", &ns, "delreq", "erasure-request-4711", "-o", "jsonpath={.metadata.generation}"]);
    assert_eq!(g, "2");
}

#[test]
fn status_subresource_wait_and_patch() {
    let c = Cluster::start();
    let ns = c.namespace("status");
    c.ok(&["apply", "-n", &ns, "-f", "examples/01-datastore.yaml"]);
    // Status on the main resource is ignored.
    c.ok(&["patch", "-n", &ns, "dstore", "shop-db", "--type=merge", "-p", r#"{"status":{"serverVersion":"fake"}}"#]);
    let v = c.ok(&["get", "-n", &ns, "dstore", "shop-db", "-o", "jsonpath={.status.serverVersion}"]);
    assert_eq!(v, "");
    // Through /status it is written, and wait sees the condition.
    let status = r#"{"status":{"serverVersion":"PostgreSQL 15.18","conditions":[{"type":"Ready","status":"True","reason":"Connected","message":"ok","lastTransitionTime":"2026-11-23T00:00:00Z"}]}}"#;
    c.ok(&["patch", "-n", &ns, "dstore", "shop-db", "--subresource=status", "--type=merge", "-p", status]);
    c.ok(&["wait", "-n", &ns, "--for=condition=Ready", "dstore/shop-db", "--timeout=10s"]);
    let out = c.ok(&["get", "-n", &ns, "dstore"]);
    assert!(out.contains("True") && out.contains("Connected") && out.contains("PostgreSQL 15.18"), "{out}");
    // A status write does not bump the generation.
    let g = c.ok(&["get", "-n", &ns, "dstore", "shop-db", "-o", "jsonpath={.metadata.generation}"]);
    assert_eq!(g, "1");
}

#[test]
fn delete_with_and_without_finalizers() {
    let c = Cluster::start();
    let ns = c.namespace("finalizers");
    c.ok(&["apply", "-n", &ns, "-f", "examples/04-access-logs.yaml"]);
    c.ok(&["delete", "-n", &ns, "rpol", "logs-90-days"]);
    let (code, _, err) = c.kubectl(&["get", "-n", &ns, "rpol", "logs-90-days"]);
    assert_ne!(code, 0);
    assert!(err.contains("not found"), "{err}");

    c.ok(&[
        "patch",
        "-n",
        &ns,
        "lhold",
        "fraud-investigation-2026-114",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["lethe.dev/hold"]}}"#,
    ]);
    c.ok(&["delete", "-n", &ns, "lhold", "fraud-investigation-2026-114", "--wait=false"]);
    let ts = c.ok(&[
        "get",
        "-n",
        &ns,
        "lhold",
        "fraud-investigation-2026-114",
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ]);
    assert!(!ts.is_empty(), "deletion waits for the finalizer");
    c.ok(&[
        "patch",
        "-n",
        &ns,
        "lhold",
        "fraud-investigation-2026-114",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    let (code, _, _) = c.kubectl(&["get", "-n", &ns, "lhold", "fraud-investigation-2026-114"]);
    assert_ne!(code, 0, "gone once the finalizer is removed");
}

#[test]
fn owner_references_are_garbage_collected() {
    let c = Cluster::start();
    let ns = c.namespace("gc");
    c.ok(&["apply", "-n", &ns, "-f", "examples/06-invoices.yaml"]);
    let uid = c.ok(&["get", "-n", &ns, "dset", "invoices", "-o", "jsonpath={.metadata.uid}"]);
    let run = format!(
        "apiVersion: lethe.dev/v1alpha1\nkind: ScrubRun\nmetadata:\n  name: invoices-1\n  ownerReferences:\n  - apiVersion: lethe.dev/v1alpha1\n    kind: Dataset\n    name: invoices\n    uid: {uid}\nspec:\n  datasetRef: {{name: invoices}}\n  purpose: Retention\n  cutoff: \"2016-01-01T00:00:00Z\"\n  timeField: issued_at\n"
    );
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), run).unwrap();
    c.ok(&["apply", "-n", &ns, "-f", f.path().to_str().unwrap()]);
    // A ScrubRun's spec never changes.
    let (code, _, err) = c.kubectl(&[
        "patch",
        "-n",
        &ns,
        "srun",
        "invoices-1",
        "--type=merge",
        "-p",
        r#"{"spec":{"cutoff":"2026-01-01T00:00:00Z"}}"#,
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("immutable"), "{err}");
    c.ok(&["delete", "-n", &ns, "dset", "invoices"]);
    let out = c.ok(&["get", "-n", &ns, "scrubruns", "-o", "name"]);
    assert_eq!(out.trim(), "", "the run went with its dataset");
}

#[test]
fn label_and_field_selectors_and_paging() {
    let c = Cluster::start();
    let ns = c.namespace("select");
    c.ok(&["apply", "-n", &ns, "-f", "examples/"]);
    let out = c.ok(&["get", "-n", &ns, "dset", "-l", "retention-class=account-data", "-o", "name"]);
    assert_eq!(out.trim(), "dataset.lethe.dev/customer-accounts");
    let out = c.ok(&["get", "-n", &ns, "dset", "--field-selector", "metadata.name=invoices", "-o", "name"]);
    assert_eq!(out.trim(), "dataset.lethe.dev/invoices");
    let out = c.ok(&["get", "-n", &ns, "dset", "--chunk-size=2", "-o", "name"]);
    assert_eq!(out.lines().count(), 6, "paging returns every item once:\n{out}");
}

#[test]
fn jobs_run_as_local_processes_with_secret_env_and_logs() {
    let c = Cluster::start();
    let ns = c.namespace("jobs");
    c.apply_text(
        r#"apiVersion: v1
kind: Secret
metadata: {name: greeting}
stringData: {word: hello-from-a-secret}
---
apiVersion: batch/v1
kind: Job
metadata: {name: greet}
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox
        command: ["sh", "-c", "echo \"$WORD in $POD_NAMESPACE\""]
        env:
        - name: WORD
          valueFrom: {secretKeyRef: {name: greeting, key: word}}
---
apiVersion: batch/v1
kind: Job
metadata: {name: lethe-crd}
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: lethe
        image: ghcr.io/lethe/lethe:dev
        command: ["/lethe"]
        args: ["crd"]
---
apiVersion: batch/v1
kind: Job
metadata: {name: fails}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: main, image: busybox, command: ["sh", "-c", "echo failing; exit 3"]}
"#,
        &["-n", &ns],
    );
    c.ok(&["wait", "-n", &ns, "--for=condition=Complete", "job/greet", "job/lethe-crd", "--timeout=30s"]);
    let logs = c.ok(&["logs", "-n", &ns, "job/greet"]);
    assert_eq!(logs.trim(), "hello-from-a-secret in jobs");
    let logs = c.ok(&["logs", "-n", &ns, "job/lethe-crd"]);
    assert!(logs.contains("kind: CustomResourceDefinition"), "the Lethe binary ran: {logs}");
    c.ok(&["wait", "-n", &ns, "--for=condition=Failed", "job/fails", "--timeout=30s"]);
    let reason =
        c.ok(&["get", "-n", &ns, "job", "fails", "-o", "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason}"]);
    assert_eq!(reason, "BackoffLimitExceeded");
    let failed = c.ok(&["get", "-n", &ns, "job", "fails", "-o", "jsonpath={.status.failed}"]);
    assert_eq!(failed, "2", "one try plus backoffLimit retries");
    let pods = c.ok(&["get", "-n", &ns, "pods", "-l", "job-name=greet", "-o", "jsonpath={.items[0].status.phase}"]);
    assert_eq!(pods, "Succeeded");
    // Deleting a Job collects its Pods.
    c.ok(&["delete", "-n", &ns, "job", "greet"]);
    let pods = c.ok(&["get", "-n", &ns, "pods", "-l", "job-name=greet", "-o", "name"]);
    assert_eq!(pods.trim(), "");
}

#[test]
fn paging_across_namespaces_returns_every_item_once() {
    let c = Cluster::start();
    // "a-b" sorts before "a/" as text but after "a" as a namespace.
    for ns in ["a", "a-b"] {
        c.namespace(ns);
        c.ok(&["apply", "-n", ns, "-f", "examples/06-invoices.yaml"]);
    }
    let out = c.ok(&["get", "datasets", "-A", "--chunk-size=1", "-o", "name"]);
    assert_eq!(out.lines().count(), 2, "{out}");
}
