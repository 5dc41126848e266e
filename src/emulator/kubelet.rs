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

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn opts() -> WriteOptions {
    WriteOptions { dry_run: false, unknown: UnknownFields::Prune }
}

/// Runs Jobs until the emulator stops. `kubeconfig` is handed to each
/// process so it can reach the emulator as a pod reaches its API server.
pub async fn run(shared: Shared, kubeconfig: PathBuf) {
    let mut rx = shared.store.lock().expect("store lock").subscribe();
    let running: Arc<Mutex<HashMap<String, Arc<Notify>>>> = Arc::default();
    loop {
        let ev = match rx.recv().await {
            Ok(ev) => ev,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "job runner fell behind");
                continue;
            }
            Err(_) => return,
        };
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
        let outcome = run_pod(
            shared,
            job,
            &ns,
            &job_name,
            &job_uid,
            kubeconfig,
            &cancel,
            deadline.map(|d| Duration::from_secs(d).saturating_sub(started.elapsed())),
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

#[allow(clippy::too_many_arguments)]
async fn run_pod(
    shared: &Shared,
    job: &Value,
    ns: &str,
    job_name: &str,
    job_uid: &str,
    kubeconfig: &std::path::Path,
    cancel: &Notify,
    deadline: Option<Duration>,
) -> PodOutcome {
    let template = job.pointer("/spec/template").cloned().unwrap_or_else(|| json!({}));
    let mut labels = template.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({}));
    labels["job-name"] = json!(job_name);
    labels["batch.kubernetes.io/job-name"] = json!(job_name);
    labels["controller-uid"] = json!(job_uid);
    labels["batch.kubernetes.io/controller-uid"] = json!(job_uid);
    let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..5].to_string();
    let pod_name = format!("{job_name}-{suffix}");
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name, "namespace": ns, "labels": labels,
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": job_uid, "controller": true, "blockOwnerDeletion": true}]},
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
    let mut command = tokio::process::Command::new(program(cmd));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("KUBECONFIG", kubeconfig)
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
    let outcome = tokio::select! {
        status = child.wait() => {
            for p in pumps { let _ = p.await; }
            let code = status.ok().and_then(|s| s.code()).unwrap_or(137);
            if code == 0 {
                pod_status("Succeeded", Some(0), "Completed");
                PodOutcome::Succeeded
            } else {
                pod_status("Failed", Some(code), "Error");
                PodOutcome::Failed
            }
        }
        _ = cancel.notified() => {
            let _ = child.kill().await;
            PodOutcome::Cancelled
        }
        _ = deadline_sleep => {
            let _ = child.kill().await;
            pod_status("Failed", Some(137), "DeadlineExceeded");
            PodOutcome::DeadlineExceeded
        }
    };
    outcome
}
