//! ScrubRun: hands each run to an executor and keeps it going until it
//! ends. The in-process executor runs [`exec::execute`] as a task of the
//! operator; the Job executor creates a Job running `lethe scrub --run`,
//! which executes the same code and writes the same status.
//!
//! A run whose executor died (operator restarted, Job pod killed) is picked
//! up again from its status: the plan is kept and the selection re-run.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::{
    Api, ResourceExt,
    runtime::{Controller, controller::Action, reflector::ObjectRef, watcher::Config as WatchConfig},
};

use super::health::RunLabels;
use super::{APPROVED_BY, Ctx, ExecutorKind, Result, apply_status, condition, exec, job, key};
use crate::api::{RunPhase, RunPurpose, ScrubRun, ScrubRunStatus};

pub async fn controller(ctx: Arc<Ctx>) {
    let runs = Api::<ScrubRun>::all(ctx.client.clone());
    let jobs = Api::<Job>::all(ctx.client.clone());
    Controller::new(runs, WatchConfig::default())
        .owns(jobs, WatchConfig::default().labels(job::RUN_LABEL))
        .run(reconcile, super::error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

pub fn is_finished(run: &ScrubRun) -> bool {
    matches!(run.status.as_ref().and_then(|s| s.phase), Some(RunPhase::Succeeded | RunPhase::Failed))
}

struct Metrics(Arc<Ctx>);

impl exec::Observer for Metrics {
    fn stalled(&self, namespace: &str, dataset: &str) {
        self.0.metrics.blast_radius_stop(namespace, dataset);
    }
}

async fn reconcile(run: Arc<ScrubRun>, ctx: Arc<Ctx>) -> Result<Action> {
    let k = key(run.as_ref());
    if run.metadata.deletion_timestamp.is_some() {
        if let Some(t) = ctx.tasks.lock().expect("lock").remove(&k) {
            t.abort();
        }
        return Ok(Action::await_change());
    }
    if is_finished(&run) {
        count_finished(&ctx, &run);
        ctx.tasks.lock().expect("lock").remove(&k);
        ctx.reset_backoff(&k);
        return Ok(Action::await_change());
    }
    if run.status.is_none() {
        // Visible at once: accepted, not started.
        let st = ScrubRunStatus {
            observed_generation: run.metadata.generation,
            phase: Some(RunPhase::Pending),
            conditions: vec![
                condition(&[], "Reconciling", true, "Pending", "the run is in progress", run.metadata.generation),
                condition(&[], "Succeeded", false, "Pending", "waiting for the executor", run.metadata.generation),
            ],
            ..ScrubRunStatus::default()
        };
        apply_status(&ctx.client, run.as_ref(), None, &st).await?;
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    let stalled = run.status.as_ref().and_then(|s| s.phase) == Some(RunPhase::AwaitingApproval);
    if stalled && !run.annotations().contains_key(APPROVED_BY) {
        return Ok(Action::await_change());
    }
    match ctx.config.executor {
        ExecutorKind::InProcess => {
            spawn(&ctx, &run);
            Ok(Action::requeue(Duration::from_secs(60)))
        }
        ExecutorKind::Job => job::ensure(&ctx, &run).await,
    }
}

/// Starts the in-process task for a run unless one is alive.
fn spawn(ctx: &Arc<Ctx>, run: &Arc<ScrubRun>) {
    let k = key(run.as_ref());
    let mut tasks = ctx.tasks.lock().expect("lock");
    if tasks.get(&k).is_some_and(|t| !t.is_finished()) {
        return;
    }
    let ctx2 = ctx.clone();
    let ns = run.namespace().unwrap_or_default();
    let name = run.name_any();
    let handle = tokio::spawn(async move {
        let api: Api<ScrubRun> = Api::namespaced(ctx2.client.clone(), &ns);
        let mut attempt = 0u32;
        loop {
            let outcome = async {
                let Some(run) = api.get_opt(&name).await? else { return Ok(true) };
                if is_finished(&run) {
                    return Ok(true);
                }
                let targets = match exec::targets(&ctx2.client, &run).await? {
                    Ok(t) => t,
                    Err(m) => {
                        exec::fail(&ctx2.client, &run, "NotFound", m).await?;
                        return Ok(true);
                    }
                };
                let inputs = match exec::inputs_from_api(
                    &ctx2.client,
                    &run,
                    &targets.dataset,
                    &targets.store,
                    &targets.holds,
                    &targets.neighbour_holds(),
                )
                .await?
                {
                    Ok(i) => i,
                    Err(m) => {
                        exec::fail(&ctx2.client, &run, "SecretMissing", m).await?;
                        return Ok(true);
                    }
                };
                // At most maxConcurrentRuns runs against one store at a time.
                let store_key = format!("{ns}/{}", targets.store.name_any());
                let limit = targets.store.spec.limits.max_concurrent_runs.max(1) as usize;
                let permits = ctx2.store_permits(&store_key, limit);
                let _permit = permits.acquire_owned().await.map_err(|e| super::Error::Other(e.to_string()))?;
                let observer = Metrics(ctx2.clone());
                let ended = exec::execute(
                    &ctx2.client,
                    &run,
                    targets,
                    inputs,
                    &ctx2.config.digest_salt,
                    "in-process",
                    &observer,
                )
                .await?;
                if let Some(run) = api.get_opt(&name).await? {
                    match ended {
                        exec::Ended::Done if is_finished(&run) => announce(&ctx2, &run).await,
                        exec::Ended::AwaitingApproval => announce_stall(&ctx2, &run).await,
                        exec::Ended::Done => {}
                    }
                }
                super::Result::<bool>::Ok(true)
            }
            .await;
            match outcome {
                Ok(_) => break,
                Err(e) => {
                    attempt += 1;
                    let delay = Duration::from_secs((1u64 << attempt.min(8)).min(120));
                    tracing::warn!(run = %format!("{ns}/{name}"), reason = e.reason(), error = %e, retry_in = ?delay, "scrub run interrupted; will resume");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    });
    tasks.insert(k, handle);
}

/// Counts a finished run in the metrics, whichever executor ran it: once
/// per operator process, and only runs that finished after it started (the
/// counters start at zero with the process; older runs are history).
fn count_finished(ctx: &Ctx, run: &ScrubRun) {
    let Some(st) = run.status.as_ref() else { return };
    if st.completion_time.is_none_or(|t| t < ctx.started) {
        return;
    }
    if !ctx.counted.lock().expect("lock").insert(key(run)) {
        return;
    }
    let ns = run.namespace().unwrap_or_default();
    let dataset = ctx.caches.datasets.get(&ObjectRef::new(&run.spec.dataset_ref.name).within(&ns));
    let store_name = dataset.as_ref().map(|d| d.spec.store_ref.name.clone()).unwrap_or_default();
    let store = ctx.caches.stores.get(&ObjectRef::new(&store_name).within(&ns));
    let labels = RunLabels {
        namespace: ns,
        store: store_name,
        store_type: store.map(|s| s.spec.type_.as_str().to_string()).unwrap_or_default(),
        categories: dataset
            .map(|d| d.spec.categories.iter().map(|c| c.as_str().to_string()).collect())
            .unwrap_or_default(),
        purpose: match run.spec.purpose {
            RunPurpose::Retention => "retention",
            RunPurpose::Erasure => "erasure",
        },
    };
    match st.phase {
        Some(RunPhase::Succeeded) => {
            let c = st.counts.clone().unwrap_or_default();
            let seconds =
                st.start_time.zip(st.completion_time).map(|(a, b)| (b - a).num_milliseconds() as f64 / 1000.0);
            ctx.metrics.run_succeeded(&labels, c.deleted, c.anonymized, seconds);
        }
        Some(RunPhase::Failed) => {
            let reason = st.conditions.iter().find(|c| c.type_ == "Failed" || c.type_ == "Succeeded");
            ctx.metrics.run_failed(&labels, reason.map_or("Unknown", |c| c.reason.as_str()));
        }
        _ => {}
    }
}

/// Events for a finished run.
pub async fn announce(ctx: &Ctx, run: &ScrubRun) {
    let st = run.status.clone().unwrap_or_default();
    let c = st.conditions.iter().find(|c| c.type_ == "Succeeded").cloned();
    match (st.phase, c) {
        (Some(RunPhase::Succeeded), Some(c)) => ctx.event(run, false, &format!("Run{}", c.reason), c.message).await,
        (Some(RunPhase::Failed), Some(c)) => ctx.event(run, true, &c.reason, c.message).await,
        _ => {}
    }
}

/// The Event for a run stopped by the safety brake.
pub async fn announce_stall(ctx: &Ctx, run: &ScrubRun) {
    let st = run.status.clone().unwrap_or_default();
    if let Some(c) = st.conditions.iter().find(|c| c.type_ == "Stalled" && c.status == "True") {
        ctx.event(run, true, &c.reason, c.message.clone()).await;
    }
}
