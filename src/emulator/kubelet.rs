//! A stand-in for the Job controller and kubelet: each Job's container
//! command runs as a local process (the `lethe` binary for Lethe's scrub
//! Jobs), with the Job's args and env (Secrets resolved), a Pod object whose
//! logs `kubectl logs` reads, and Job conditions Complete or Failed.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::Engine;
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    sync::Notify,
};

use super::{
    Shared,
    store::{EventType, WriteOptions},
};
use crate::schema::UnknownFields;

const JOBS: &str = "batch/v1/jobs";
const DEPLOYMENTS: &str = "apps/v1/deployments";

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn opts() -> WriteOptions {
    WriteOptions { dry_run: false, unknown: UnknownFields::Prune }
}

/// Runs Jobs until the emulator stops. The kubeconfig in `dir` is handed to
/// each process so it can reach the emulator as a pod reaches its API
/// server; `dir` goes when this does.
pub async fn run(shared: Shared, dir: tempfile::TempDir) {
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let mut rx = shared.store.lock().expect("store lock").subscribe();
    let running: Arc<Mutex<HashMap<String, Arc<Notify>>>> = Arc::default();
    let mut deployments = Deployments::default();
    loop {
        let ev = match rx.recv().await {
            Ok(ev) => ev,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "job runner fell behind");
                continue;
            }
            Err(_) => return,
        };
        if ev.type_key == DEPLOYMENTS {
            deployments.event(&shared, &kubeconfig, ev.kind, &ev.object);
            continue;
        }
        if ev.type_key != JOBS {
            continue;
        }
        let uid = ev.object.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string();
        match ev.kind {
            EventType::Added => {
                let cancel = Arc::new(Notify::new());
                running.lock().expect("runner lock").insert(uid.clone(), cancel.clone());
                let (shared, kubeconfig, running) = (shared.clone(), kubeconfig.clone(), running.clone());
                let job = ev.object.clone();
                tokio::spawn(async move {
                    run_job(&shared, &job, &kubeconfig, cancel).await;
                    running.lock().expect("runner lock").remove(&uid);
                });
            }
            EventType::Deleted => {
                if let Some(cancel) = running.lock().expect("runner lock").remove(&uid) {
                    cancel.notify_one();
                }
            }
            EventType::Modified => {}
        }
    }
}

fn meta<'a>(v: &'a Value, field: &str) -> &'a str {
    v.pointer(&format!("/metadata/{field}")).and_then(Value::as_str).unwrap_or_default()
}

/// Environment of the first container, with Secrets and ConfigMaps resolved.
fn resolve_env(shared: &Shared, ns: &str, pod_name: &str, container: &Value) -> Result<Vec<(String, String)>, String> {
    let store = shared.store.lock().expect("store lock");
    let secret_rt = store.find("", "v1", "secrets").ok_or("no secrets type")?;
    let cm_rt = store.find("", "v1", "configmaps").ok_or("no configmaps type")?;
    let secret_data = |name: &str| -> Result<HashMap<String, String>, String> {
        let s = store.get(&secret_rt, ns, name).map_err(|_| format!("secret \"{name}\" not found"))?;
        let mut out = HashMap::new();
        for (k, v) in s.get("data").and_then(Value::as_object).into_iter().flatten() {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or_default())
                .map_err(|e| e.to_string())?;
            out.insert(k.clone(), String::from_utf8_lossy(&raw).into_owned());
        }
        Ok(out)
    };
    let cm_data = |name: &str| -> Result<HashMap<String, String>, String> {
        let c = store.get(&cm_rt, ns, name).map_err(|_| format!("configmap \"{name}\" not found"))?;
        Ok(c.get("data")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect())
    };
    let mut env = Vec::new();
    for from in container.get("envFrom").and_then(Value::as_array).into_iter().flatten() {
        if let Some(name) = from.pointer("/secretRef/name").and_then(Value::as_str) {
            env.extend(secret_data(name)?);
        }
        if let Some(name) = from.pointer("/configMapRef/name").and_then(Value::as_str) {
            env.extend(cm_data(name)?);
        }
    }
    for e in container.get("env").and_then(Value::as_array).into_iter().flatten() {
        let name = e.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        let value = if let Some(v) = e.get("value").and_then(Value::as_str) {
            v.to_string()
        } else if let Some(r) = e.pointer("/valueFrom/secretKeyRef") {
            let (sname, key) = (
                r.get("name").and_then(Value::as_str).unwrap_or_default(),
                r.get("key").and_then(Value::as_str).unwrap_or_default(),
            );
            secret_data(sname)?.remove(key).ok_or_else(|| format!("couldn't find key {key} in Secret {ns}/{sname}"))?
        } else if let Some(r) = e.pointer("/valueFrom/configMapKeyRef") {
            let (cname, key) = (
                r.get("name").and_then(Value::as_str).unwrap_or_default(),
                r.get("key").and_then(Value::as_str).unwrap_or_default(),
            );
            cm_data(cname)?.remove(key).ok_or_else(|| format!("couldn't find key {key} in ConfigMap {ns}/{cname}"))?
        } else if let Some(path) = e.pointer("/valueFrom/fieldRef/fieldPath").and_then(Value::as_str) {
            match path {
                "metadata.name" => pod_name.to_string(),
                "metadata.namespace" => ns.to_string(),
                other => return Err(format!("unsupported fieldRef {other}")),
            }
        } else {
            String::new()
        };
        env.push((name, value));
    }
    Ok(env)
}

/// The program a container command names: Lethe's own image runs this binary.
fn program(cmd: &str) -> PathBuf {
    let base = cmd.rsplit('/').next().unwrap_or(cmd);
    if base == "lethe" {
        if let Ok(p) = std::env::var("LETHE_BIN") {
            return PathBuf::from(p);
        }
        if let Ok(p) = std::env::current_exe()
            && p.file_name().is_some_and(|n| n == "lethe")
        {
            return p;
        }
        // Test binaries are not `lethe`; the binary sits next to their directory.
        if let Ok(p) = std::env::current_exe()
            && let Some(dir) = p.parent().and_then(|d| d.parent())
            && dir.join("lethe").exists()
        {
            return dir.join("lethe");
        }
    }
    PathBuf::from(cmd)
}

fn set_status(shared: &Shared, kind_plural: (&str, &str, &str), ns: &str, name: &str, status: Value) {
    let mut store = shared.store.lock().expect("store lock");
    let Some(rt) = store.find(kind_plural.0, kind_plural.1, kind_plural.2) else { return };
    let Ok(mut obj) = store.get(&rt, ns, name) else { return };
    obj["status"] = status;
    if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    let _ = store.update(&rt, ns, name, obj, true, opts());
}

async fn run_job(shared: &Shared, job: &Value, kubeconfig: &std::path::Path, cancel: Arc<Notify>) {
    let ns = meta(job, "namespace").to_string();
    let job_name = meta(job, "name").to_string();
    let job_uid = meta(job, "uid").to_string();
    let backoff_limit = job.pointer("/spec/backoffLimit").and_then(Value::as_u64).unwrap_or(6);
    let deadline = job.pointer("/spec/activeDeadlineSeconds").and_then(Value::as_u64);
    let start = now();
    let started = tokio::time::Instant::now();
    let mut failed = 0u64;
    loop {
        set_status(
            shared,
            ("batch", "v1", "jobs"),
            &ns,
            &job_name,
            json!({"startTime": start, "active": 1, "failed": failed, "succeeded": 0}),
        );
        let mut labels = job.pointer("/spec/template/metadata/labels").cloned().unwrap_or_else(|| json!({}));
        labels["job-name"] = json!(job_name);
        labels["batch.kubernetes.io/job-name"] = json!(job_name);
        labels["controller-uid"] = json!(job_uid);
        labels["batch.kubernetes.io/controller-uid"] = json!(job_uid);
        let pod = PodOwner {
            ns: &ns,
            prefix: &job_name,
            api_version: "batch/v1",
            kind: "Job",
            uid: &job_uid,
            labels,
            pod_name: pod_name(&job_name),
        };
        let outcome = run_pod(
            shared,
            job,
            &pod,
            kubeconfig,
            &cancel,
            deadline.map(|d| Duration::from_secs(d).saturating_sub(started.elapsed())),
            None,
        )
        .await;
        match outcome {
            PodOutcome::Succeeded => {
                let mut status =
                    json!({"startTime": start, "completionTime": now(), "succeeded": 1, "failed": failed, "active": 0});
                status["conditions"] = terminal_conditions(
                    ["SuccessCriteriaMet", "Complete"],
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                );
                set_status(shared, ("batch", "v1", "jobs"), &ns, &job_name, status);
                return;
            }
            PodOutcome::Cancelled => return,
            PodOutcome::Failed | PodOutcome::DeadlineExceeded => {
                failed += 1;
                let deadline_hit = matches!(outcome, PodOutcome::DeadlineExceeded);
                if deadline_hit || failed > backoff_limit {
                    let (reason, message) = if deadline_hit {
                        ("DeadlineExceeded", "Job was active longer than specified deadline")
                    } else {
                        ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
                    };
                    let mut status = json!({"startTime": start, "failed": failed, "succeeded": 0, "active": 0});
                    status["conditions"] = terminal_conditions(["FailureTarget", "Failed"], reason, message);
                    set_status(shared, ("batch", "v1", "jobs"), &ns, &job_name, status);
                    return;
                }
                // Back off a little before the next pod, as the Job controller does.
                tokio::time::sleep(Duration::from_millis(200 * failed)).await;
            }
        }
    }
}

fn append_log(shared: &Shared, key: &str, line: &str) {
    let mut logs = shared.logs.lock().expect("log lock");
    let entry = logs.entry(key.to_string()).or_default();
    entry.push_str(line);
    entry.push('\n');
}

/// The two conditions a finished Job carries (the target, then the outcome).
fn terminal_conditions(types: [&str; 2], reason: &str, message: &str) -> Value {
    let t = now();
    Value::Array(
        types
            .iter()
            .map(|ty| json!({"type": ty, "status": "True", "reason": reason, "message": message, "lastProbeTime": t, "lastTransitionTime": t}))
            .collect(),
    )
}

enum PodOutcome {
    Succeeded,
    Failed,
    DeadlineExceeded,
    Cancelled,
}

/// Who a pod belongs to: its owner (a Job or a Deployment) and its labels.
struct PodOwner<'a> {
    ns: &'a str,
    /// Name of the owner, and the prefix of the pod's name.
    prefix: &'a str,
    api_version: &'a str,
    kind: &'a str,
    uid: &'a str,
    labels: Value,
    pod_name: String,
}

/// The kubeconfig a pod's process gets: the administrator's, or with RBAC
/// enforced, one carrying its ServiceAccount's token (the ServiceAccount
/// must exist, as the API server requires).
fn pod_kubeconfig(shared: &Shared, admin: &std::path::Path, ns: &str, template: &Value) -> Result<PathBuf, String> {
    if !shared.rbac.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(admin.to_path_buf());
    }
    let sa = template.pointer("/spec/serviceAccountName").and_then(Value::as_str).unwrap_or("default");
    {
        let store = shared.store.lock().expect("store lock");
        let rt = store.find("", "v1", "serviceaccounts").ok_or("no serviceaccounts type")?;
        store.get(&rt, ns, sa).map_err(|_| format!("serviceaccount \"{sa}\" not found in namespace \"{ns}\""))?;
    }
    let text = std::fs::read_to_string(admin).map_err(|e| e.to_string())?;
    let token = super::rbac::token(ns, sa);
    let path = admin.with_extension(format!("{ns}.{sa}.kubeconfig"));
    std::fs::write(&path, text.replace("token: lethe-dev", &format!("token: {token}"))).map_err(|e| e.to_string())?;
    Ok(path)
}

/// A new pod's name: the prefix and five random characters.
fn pod_name(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..5])
}

fn delete_pod(shared: &Shared, ns: &str, name: &str) {
    let mut store = shared.store.lock().expect("store lock");
    if let Some(rt) = store.find("", "v1", "pods") {
        let _ = store.delete(&rt, ns, name, false, false);
    }
}

/// Runs one pod of `owner`'s template to its end. `ready`, when given, is
/// told whether the pod passes its readiness probe while it runs.
async fn run_pod(
    shared: &Shared,
    owner: &Value,
    o: &PodOwner<'_>,
    kubeconfig: &std::path::Path,
    cancel: &Notify,
    deadline: Option<Duration>,
    ready: Option<&tokio::sync::watch::Sender<bool>>,
) -> PodOutcome {
    let ns = o.ns;
    let template = owner.pointer("/spec/template").cloned().unwrap_or_else(|| json!({}));
    let pod_name = o.pod_name.clone();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name, "namespace": ns, "labels": o.labels,
            "ownerReferences": [{"apiVersion": o.api_version, "kind": o.kind, "name": o.prefix, "uid": o.uid, "controller": true, "blockOwnerDeletion": true}]},
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    });
    {
        let mut store = shared.store.lock().expect("store lock");
        let Some(rt) = store.find("", "v1", "pods") else { return PodOutcome::Failed };
        if store.create(&rt, ns, pod, opts()).is_err() {
            return PodOutcome::Failed;
        }
    }
    let container = template.pointer("/spec/containers/0").cloned().unwrap_or_else(|| json!({}));
    let container_name = container.get("name").and_then(Value::as_str).unwrap_or("main").to_string();
    let log_key = format!("{ns}/{pod_name}");
    let log = |line: &str| append_log(shared, &log_key, line);
    let pod_status = |phase: &str, exit: Option<i32>, reason: &str| {
        let state = match exit {
            None => json!({"running": {"startedAt": now()}}),
            Some(code) => json!({"terminated": {"exitCode": code, "reason": reason, "finishedAt": now()}}),
        };
        set_status(
            shared,
            ("", "v1", "pods"),
            ns,
            &pod_name,
            json!({
                "phase": phase, "startTime": now(),
                "containerStatuses": [{"name": container_name, "ready": exit.is_none(), "restartCount": 0, "state": state, "image": container.get("image").cloned().unwrap_or_default()}]
            }),
        );
    };
    let env = match resolve_env(shared, ns, &pod_name, &container) {
        Ok(env) => env,
        Err(e) => {
            // As a kubelet would: the container cannot start.
            log(&format!("Error: {e}"));
            pod_status("Failed", Some(1), "CreateContainerConfigError");
            return PodOutcome::Failed;
        }
    };
    let mut argv: Vec<String> = container
        .get("command")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    argv.extend(
        container
            .get("args")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from)),
    );
    let Some((cmd, args)) = argv.split_first() else {
        log("Error: the emulator runs a container's command; this container has none");
        pod_status("Failed", Some(1), "ContainerCannotRun");
        return PodOutcome::Failed;
    };
    let kubeconfig = match pod_kubeconfig(shared, kubeconfig, ns, &template) {
        Ok(k) => k,
        Err(e) => {
            log(&format!("Error: {e}"));
            pod_status("Failed", Some(1), "CreateContainerConfigError");
            return PodOutcome::Failed;
        }
    };
    let mut command = tokio::process::Command::new(program(cmd));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAME", &pod_name)
        .env("POD_NAMESPACE", ns)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            log(&format!("Error: cannot start {cmd}: {e}"));
            pod_status("Failed", Some(127), "ContainerCannotRun");
            return PodOutcome::Failed;
        }
    };
    pod_status("Running", None, "");
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let pump = |stream: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| {
        let shared = shared.clone();
        let key = log_key.clone();
        tokio::spawn(async move {
            let Some(stream) = stream else { return };
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                append_log(&shared, &key, &line);
            }
        })
    };
    let pumps = [
        pump(out.map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Unpin + Send>)),
        pump(err.map(|e| Box::new(e) as Box<dyn tokio::io::AsyncRead + Unpin + Send>)),
    ];
    let deadline_sleep = async {
        match deadline {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline_sleep);
    let probe_url = readiness_url(&container);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let outcome = loop {
        tokio::select! {
            status = child.wait() => {
                for p in pumps { let _ = p.await; }
                let code = status.ok().and_then(|s| s.code()).unwrap_or(137);
                if code == 0 {
                    pod_status("Succeeded", Some(0), "Completed");
                    break PodOutcome::Succeeded;
                }
                pod_status("Failed", Some(code), "Error");
                break PodOutcome::Failed;
            }
            _ = cancel.notified() => {
                let _ = child.kill().await;
                break PodOutcome::Cancelled;
            }
            _ = &mut deadline_sleep => {
                let _ = child.kill().await;
                pod_status("Failed", Some(137), "DeadlineExceeded");
                break PodOutcome::DeadlineExceeded;
            }
            _ = tick.tick(), if ready.is_some() => {
                let ok = match &probe_url {
                    Some(url) => http_ok(url).await,
                    None => true,
                };
                if let Some(tx) = ready {
                    tx.send_if_modified(|r| std::mem::replace(r, ok) != ok);
                }
            }
        }
    };
    if let Some(tx) = ready {
        tx.send_if_modified(|r| std::mem::replace(r, false));
    }
    outcome
}

/// Deployments the emulator runs: each generation's pods as local
/// processes, restarted when they exit (Recreate on every spec change).
#[derive(Default)]
struct Deployments {
    /// By uid: the generation running and how to stop it.
    running: HashMap<String, (i64, Arc<tokio::sync::watch::Sender<bool>>)>,
}

impl Deployments {
    fn event(&mut self, shared: &Shared, kubeconfig: &std::path::Path, kind: EventType, d: &Value) {
        let uid = meta(d, "uid").to_string();
        let generation = d.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
        match kind {
            EventType::Deleted => {
                if let Some((_, stop)) = self.running.remove(&uid) {
                    let _ = stop.send(true);
                }
            }
            EventType::Added | EventType::Modified => {
                if self.running.get(&uid).is_some_and(|(g, _)| *g == generation) {
                    return; // a status update, or nothing new to run
                }
                if let Some((_, stop)) = self.running.remove(&uid) {
                    let _ = stop.send(true);
                }
                let stop = Arc::new(tokio::sync::watch::channel(false).0);
                self.running.insert(uid, (generation, stop.clone()));
                tokio::spawn(run_deployment(shared.clone(), d.clone(), kubeconfig.to_path_buf(), stop));
            }
        }
    }
}

async fn run_deployment(shared: Shared, d: Value, kubeconfig: PathBuf, stop: Arc<tokio::sync::watch::Sender<bool>>) {
    let ns = meta(&d, "namespace").to_string();
    let name = meta(&d, "name").to_string();
    let uid = meta(&d, "uid").to_string();
    let generation = d.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
    let replicas = d.pointer("/spec/replicas").and_then(Value::as_u64).unwrap_or(1) as usize;
    let hash = format!("{:x}", generation.wrapping_mul(0x9e37_79b9) & 0xff_ffff);
    let mut readiness = Vec::new();
    for _ in 0..replicas {
        let (tx, rx) = tokio::sync::watch::channel(false);
        readiness.push(rx);
        let (shared, d, kubeconfig, stop, ns, name, uid, hash) = (
            shared.clone(),
            d.clone(),
            kubeconfig.clone(),
            stop.clone(),
            ns.clone(),
            name.clone(),
            uid.clone(),
            hash.clone(),
        );
        tokio::spawn(async move {
            let mut stopped = stop.subscribe();
            let cancel = Notify::new();
            let mut restarts = 0u32;
            loop {
                let mut labels = d.pointer("/spec/template/metadata/labels").cloned().unwrap_or_else(|| json!({}));
                labels["pod-template-hash"] = json!(hash);
                let owner = PodOwner {
                    ns: &ns,
                    prefix: &name,
                    api_version: "apps/v1",
                    kind: "Deployment",
                    uid: &uid,
                    labels,
                    pod_name: pod_name(&format!("{name}-{hash}")),
                };
                let pod = run_pod(&shared, &d, &owner, &kubeconfig, &cancel, None, Some(&tx));
                let outcome = tokio::select! {
                    o = pod => o,
                    _ = stopped.wait_for(|s| *s) => {
                        // Dropping the pod future kills its process.
                        PodOutcome::Cancelled
                    }
                };
                // The next start is a new pod; this one is gone.
                delete_pod(&shared, &ns, &owner.pod_name);
                let _ = tx.send(false);
                if matches!(outcome, PodOutcome::Cancelled) || *stopped.borrow() {
                    return;
                }
                // As the kubelet restarts an exited container, with a growing pause.
                restarts += 1;
                let pause = Duration::from_millis((250u64 << restarts.min(6)).min(10_000));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stopped.wait_for(|s| *s) => return,
                }
            }
        });
    }
    let mut last = None;
    let mut stopped = stop.subscribe();
    loop {
        let ready = readiness.iter().filter(|r| *r.borrow()).count();
        if last != Some(ready) {
            last = Some(ready);
            set_status(
                &shared,
                ("apps", "v1", "deployments"),
                &ns,
                &name,
                deployment_status(generation, replicas, ready),
            );
        }
        let changed = futures::future::select_all(readiness.iter_mut().map(|r| Box::pin(r.changed())));
        tokio::select! {
            _ = changed => {}
            _ = stopped.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        if readiness.is_empty() {
            let _ = stopped.wait_for(|s| *s).await;
            return;
        }
    }
}

/// A Deployment's status as `kubectl rollout status` reads it.
fn deployment_status(generation: i64, replicas: usize, ready: usize) -> Value {
    let t = now();
    let available = ready == replicas;
    json!({
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": replicas - ready,
        "conditions": [
            {"type": "Available", "status": if available { "True" } else { "False" },
             "reason": if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
             "message": format!("{ready} of {replicas} replicas ready"), "lastUpdateTime": t, "lastTransitionTime": t},
            {"type": "Progressing", "status": "True",
             "reason": if available { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" },
             "message": "pods run as local processes in the emulator", "lastUpdateTime": t, "lastTransitionTime": t},
        ],
    })
}

/// Where a container's HTTP readiness probe looks, on loopback (pods share
/// the host's network in the emulator).
fn readiness_url(container: &Value) -> Option<String> {
    let get = container.pointer("/readinessProbe/httpGet")?;
    let path = get.get("path").and_then(Value::as_str).unwrap_or("/");
    let port = match get.get("port")? {
        Value::Number(n) => n.as_u64()?,
        Value::String(name) => container
            .get("ports")
            .and_then(Value::as_array)?
            .iter()
            .find(|p| p.get("name").and_then(Value::as_str) == Some(name.as_str()))?
            .get("containerPort")?
            .as_u64()?,
        _ => return None,
    };
    Some(format!("127.0.0.1:{port}{path}"))
}

/// Whether a plain HTTP GET of `addr_path` (`host:port/path`) answers 2xx within a second.
async fn http_ok(addr_path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, path) = addr_path.split_at(addr_path.find('/').unwrap_or(addr_path.len()));
    let path = if path.is_empty() { "/" } else { path };
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1.1 2") || head.starts_with(b"HTTP/1.0 2"))
    };
    tokio::time::timeout(Duration::from_secs(1), attempt).await.ok().flatten().unwrap_or(false)
}
