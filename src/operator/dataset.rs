//! Dataset: its effective retention, its schedule, the retention runs it
//! creates, and the evidence of the last ones.
//!
//! `Ready` means "valid and being scheduled"; how the last run went is the
//! separate `LastRunSucceeded` condition, so a failed run does not turn a
//! GitOps tool's health of the Dataset to Degraded.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, PostParams, PropagationPolicy},
    runtime::{Controller, controller::Action, reflector::ObjectRef, watcher::Config as WatchConfig},
};

use super::{Ctx, RUN_NOW, Result, apply_status, condition, condition_is, key, now, policy::applies};
use crate::{
    api::{
        ConcurrencyPolicy, Dataset, DatasetStatus, LocalRef, RetentionPolicy, RunPhase, RunPurpose, RunSummary,
        Schedule, ScrubRun, ScrubRunSpec,
    },
    plan::{
        retention::{self, Effective},
        schedule::{self, Due, Parsed},
    },
};

pub async fn controller(ctx: Arc<Ctx>) {
    let datasets = Api::<Dataset>::all(ctx.client.clone());
    let c1 = ctx.caches.datasets.clone();
    let c2 = ctx.caches.datasets.clone();
    let c3 = ctx.caches.datasets.clone();
    Controller::new(datasets, WatchConfig::default())
        .owns(Api::<ScrubRun>::all(ctx.client.clone()), WatchConfig::default())
        .watches(Api::<RetentionPolicy>::all(ctx.client.clone()), WatchConfig::default(), move |p| {
            super::refs_in_ns(&c1, p.namespace())
        })
        .watches(Api::<crate::api::LegalHold>::all(ctx.client.clone()), WatchConfig::default(), move |h| {
            super::refs_in_ns(&c2, h.namespace())
        })
        .watches(Api::<crate::api::DataStore>::all(ctx.client.clone()), WatchConfig::default(), move |s| {
            let name = s.name_any();
            c3.state()
                .into_iter()
                .filter(|d| d.namespace() == s.namespace() && d.spec.store_ref.name == name)
                .map(|d| ObjectRef::from_obj(d.as_ref()))
                .collect::<Vec<_>>()
        })
        .run(reconcile, super::error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// The policies that apply to a Dataset, by name.
pub fn applying_policies(ctx: &Ctx, ds: &Dataset) -> Vec<Arc<RetentionPolicy>> {
    ctx.caches.policies_in(&ds.namespace().unwrap_or_default()).into_iter().filter(|p| applies(p, ds)).collect()
}

/// The effective retention of a Dataset at `at`.
pub fn effective_of(ds: &Dataset, policies: &[Arc<RetentionPolicy>], at: DateTime<Utc>) -> Effective {
    let named: Vec<(String, &crate::api::RetentionPolicySpec)> =
        policies.iter().map(|p| (p.name_any(), &p.spec)).collect();
    retention::effective(&ds.spec, named.iter().map(|(n, s)| (n.as_str(), *s)), at)
}

/// The rule a source names (`Dataset` or `RetentionPolicy/<name>`).
fn rule_of<'a>(
    ds: &'a Dataset,
    policies: &'a [Arc<RetentionPolicy>],
    source: &str,
) -> Option<&'a crate::api::RetentionRule> {
    if source == retention::INLINE_SOURCE {
        return ds.spec.retention.as_ref();
    }
    policies.iter().find(|p| retention::policy_source(&p.name_any()) == source).map(|p| &p.spec.rule)
}

/// The minimum-retention boundary at `at`: the column and the instant after which records are kept.
pub fn minimum_at(
    ds: &Dataset,
    policies: &[Arc<RetentionPolicy>],
    effective: &Effective,
    at: DateTime<Utc>,
) -> std::result::Result<Option<(crate::api::Identifier, DateTime<Utc>)>, String> {
    let Some((d, source)) = &effective.minimum else { return Ok(None) };
    let rule = rule_of(ds, policies, source).ok_or_else(|| format!("{source} is gone"))?;
    let col = ds.spec.time_field(rule.measured_from, rule.event.as_deref()).ok_or_else(|| {
        format!("the minimum from {source} is measured from a time field this Dataset does not declare")
    })?;
    let t = d.before(at).ok_or("minimum out of range")?;
    Ok(Some((col.clone(), t)))
}

/// A run's deterministic name: `<dataset>-<scheduled time>`.
pub fn run_name(dataset: &str, t: DateTime<Utc>) -> String {
    let stamp = t.format("%Y%m%d-%H%M%S").to_string();
    let room = 253 - stamp.len() - 1;
    format!("{}-{stamp}", &dataset[..dataset.len().min(room)])
}

struct Plan {
    effective: Effective,
    /// The schedule, or why there is none.
    schedule: std::result::Result<Option<(Parsed, Schedule)>, String>,
    problem: Option<(&'static str, String)>,
    dry_run: bool,
}

fn plan(ctx: &Ctx, ds: &Dataset, policies: &[Arc<RetentionPolicy>], at: DateTime<Utc>) -> Plan {
    let effective = effective_of(ds, policies, at);
    let ns = ds.namespace().unwrap_or_default();
    let mut problem = None;
    match ctx.caches.store(&ns, &ds.spec.store_ref.name) {
        None => problem = Some(("StoreNotFound", format!("DataStore {:?} does not exist", ds.spec.store_ref.name))),
        Some(s)
            if !condition_is(&s.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default(), "Ready", "True") =>
        {
            let why = s
                .status
                .as_ref()
                .and_then(|st| st.conditions.iter().find(|c| c.type_ == "Ready"))
                .map(|c| format!("{}: {}", c.reason, c.message))
                .unwrap_or_else(|| "not probed yet".into());
            problem = Some(("StoreNotReady", format!("DataStore {:?} is not ready ({why})", ds.spec.store_ref.name)));
        }
        Some(_) => {}
    }
    if problem.is_none()
        && let Some((rule, source)) = &effective.maximum
        && ds.spec.time_field(rule.measured_from, rule.event.as_deref()).is_none()
    {
        problem =
            Some(("MissingTimeField", format!("{source} measures from a time field this Dataset does not declare")));
    }
    if problem.is_none()
        && let Err(m) = minimum_at(ds, policies, &effective, at)
    {
        problem = Some(("MissingTimeField", m));
    }
    let chosen = ds.spec.schedule.clone().or_else(|| {
        effective.maximum.as_ref().and_then(|(_, src)| {
            policies
                .iter()
                .find(|p| retention::policy_source(&p.name_any()) == *src)
                .and_then(|p| p.spec.schedule.clone())
        })
    });
    let anchor = ds.meta().creation_timestamp.as_ref().map(super::from_time).unwrap_or(at);
    let schedule = match chosen {
        Some(s) => schedule::parse(&s, anchor).map(|p| Some((p, s))),
        None => Ok(Some((
            Parsed::daily_from(anchor),
            serde_json::from_value(serde_json::json!({"interval": "24h"})).expect("valid default schedule"),
        ))),
    };
    let dry_run = ds.spec.dry_run
        || effective.maximum.as_ref().is_some_and(|(_, src)| {
            policies.iter().any(|p| retention::policy_source(&p.name_any()) == *src && p.spec.dry_run)
        });
    Plan { effective, schedule, problem, dry_run }
}

async fn reconcile(ds: Arc<Dataset>, ctx: Arc<Ctx>) -> Result<Action> {
    let ns = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let at = now();
    let prev = ds.status.clone().unwrap_or_default();
    let generation = ds.metadata.generation;
    let policies = applying_policies(&ctx, &ds);
    let p = plan(&ctx, &ds, &policies, at);
    let mut status = DatasetStatus {
        observed_generation: generation,
        effective_retention: Some(p.effective.to_status()),
        last_schedule_time: prev.last_schedule_time,
        last_successful_time: prev.last_successful_time,
        next_schedule_time: None,
        last_run: prev.last_run.clone(),
        oldest_expired_age_seconds: prev.oldest_expired_age_seconds,
        run_now_token: prev.run_now_token.clone(),
        conditions: vec![],
    };
    let mut conds: Vec<Condition> = vec![];

    // Runs of this dataset, newest first.
    let mut runs: Vec<Arc<ScrubRun>> = ctx
        .caches
        .runs_in(&ns)
        .into_iter()
        .filter(|r| r.spec.dataset_ref.name == name && r.spec.purpose == RunPurpose::Retention)
        .filter(|r| r.owner_references().iter().any(|o| Some(&o.uid) == ds.meta().uid.as_ref()))
        .collect();
    runs.sort_by(|a, b| {
        b.meta().creation_timestamp.cmp(&a.meta().creation_timestamp).then(b.name_any().cmp(&a.name_any()))
    });
    let active: Vec<&Arc<ScrubRun>> = runs.iter().filter(|r| !super::run::is_finished(r)).collect();

    // Ready: valid and being scheduled.
    let schedule = match (&p.problem, &p.schedule) {
        (Some((reason, msg)), _) => {
            conds.push(condition(&prev.conditions, "Ready", false, reason, msg.clone(), generation));
            None
        }
        (None, Err(msg)) => {
            conds.push(condition(&prev.conditions, "Ready", false, "InvalidSchedule", msg.clone(), generation));
            None
        }
        (None, Ok(s)) => {
            let (reason, msg) = match (&p.effective.maximum, s) {
                (None, _) => {
                    ("NothingExpires", "valid; no retention maximum applies, so nothing is scheduled".to_string())
                }
                (Some(_), Some((_, sch))) if sch.suspend => ("Suspended", "valid; schedule suspended".to_string()),
                (Some((r, src)), Some(_)) => (
                    "Scheduled",
                    format!("keeping {} per {src}", r.keep_for.as_ref().map(|d| d.to_string()).unwrap_or_default()),
                ),
                (Some(_), None) => ("Scheduled", "valid".to_string()),
            };
            conds.push(condition(&prev.conditions, "Ready", true, reason, msg, generation));
            s.as_ref().filter(|(_, sch)| !sch.suspend && p.effective.maximum.is_some())
        }
    };
    if let Some(c) = &p.effective.conflict {
        conds.push(condition(
            &prev.conditions,
            "RetentionConflict",
            true,
            "MinimumAboveMaximum",
            c.clone(),
            generation,
        ));
    }
    let held: Vec<String> = super::exec::holds_for(
        &ctx.caches.holds_in(&ns).iter().map(|h| h.as_ref().clone()).collect::<Vec<_>>(),
        &ds,
        at,
    )
    .into_iter()
    .filter(|h| h.spec.subjects.is_none())
    .map(|h| h.name_any())
    .collect();
    if !held.is_empty() {
        conds.push(condition(
            &prev.conditions,
            "Held",
            true,
            "LegalHold",
            format!("LegalHold {} suspends deletion; runs record what they skip", held.join(", ")),
            generation,
        ));
    }

    // What to create now.
    let mut create: Vec<(DateTime<Utc>, &'static str)> = vec![];
    let mut requeue = ctx.config.resync;
    if p.problem.is_some() {
        // Waiting on another object (a store being probed, a Secret): look
        // again soon, in case its change raced ahead of this Dataset's cache.
        requeue = requeue.min(Duration::from_secs(5));
    }
    if schedule.is_none() {
        ctx.metrics.set_schedule_interval(&ns, &name, None);
    }
    if let Some((parsed, sch)) = schedule {
        let deadline = sch.starting_deadline_seconds;
        match prev.last_schedule_time {
            // The first pass runs as soon as the Dataset is ready.
            None => create.push((at, "Scheduled")),
            Some(last) => match schedule::due(parsed, Some(last), at, deadline) {
                Due::Run(t) => create.push((t, "Scheduled")),
                Due::Missed(t) => {
                    status.last_schedule_time = Some(t);
                    ctx.event(
                        ds.as_ref(),
                        true,
                        "MissedSchedule",
                        format!(
                            "the run due at {} was missed by more than startingDeadlineSeconds; skipped",
                            t.to_rfc3339()
                        ),
                    )
                    .await;
                }
                Due::Wait(_) => {}
            },
        }
        let token = ds.annotations().get(RUN_NOW).cloned();
        if token.is_some() && token != prev.run_now_token {
            // A run is named by the second it is for: asked for in the
            // second of the last run (one just asked for, or just
            // scheduled), it takes the next second, or its name would be
            // taken and the request lost.
            let second = |t: DateTime<Utc>| chrono::SubsecRound::trunc_subsecs(t, 0);
            let t = match status.last_schedule_time {
                Some(last) if second(last) >= second(at) => second(last) + chrono::Duration::seconds(1),
                _ => at,
            };
            create.push((t, "RunNow"));
            status.run_now_token = token;
        }
        status.next_schedule_time = parsed.next_after(at);
        let interval = status
            .next_schedule_time
            .and_then(|n| Some((parsed.next_after(n)? - n).num_seconds() as f64))
            .filter(|s| *s > 0.0);
        ctx.metrics.set_schedule_interval(&ns, &name, interval);
        if let Some(n) = status.next_schedule_time {
            requeue = requeue.min((n - at).to_std().unwrap_or_default() + Duration::from_secs(1));
        }
        create.dedup_by_key(|(t, _)| *t);
        for (t, why) in create.iter().take(1) {
            status.last_schedule_time = Some(status.last_schedule_time.map_or(*t, |l| l.max(*t)));
            if !active.is_empty() && sch.concurrency_policy == ConcurrencyPolicy::Forbid {
                ctx.event(
                    ds.as_ref(),
                    false,
                    "RunSkipped",
                    format!("run {} is still active (concurrencyPolicy Forbid)", active[0].name_any()),
                )
                .await;
                continue;
            }
            if sch.concurrency_policy == ConcurrencyPolicy::Replace {
                for r in &active {
                    let dp = DeleteParams {
                        propagation_policy: Some(PropagationPolicy::Background),
                        ..DeleteParams::default()
                    };
                    Api::<ScrubRun>::namespaced(ctx.client.clone(), &ns).delete(&r.name_any(), &dp).await?;
                }
            }
            match new_run(&ds, &policies, &p, *t, at) {
                Ok(run) => {
                    let api = Api::<ScrubRun>::namespaced(ctx.client.clone(), &ns);
                    let pp = PostParams { field_manager: Some(super::MANAGER.into()), ..PostParams::default() };
                    match api.create(&pp, &run).await {
                        Ok(r) => {
                            ctx.event(
                                ds.as_ref(),
                                false,
                                "RunCreated",
                                format!("{why}: created ScrubRun {}", r.name_any()),
                            )
                            .await
                        }
                        Err(kube::Error::Api(e)) if e.code == 409 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(m) => {
                    conds.push(condition(&prev.conditions, "Ready", false, "InvalidConfiguration", m, generation))
                }
            }
        }
    }

    // The last finished run, and history limits.
    let finished: Vec<&Arc<ScrubRun>> = runs.iter().filter(|r| super::run::is_finished(r)).collect();
    if let Some(last) = finished.first() {
        let st = last.status.clone().unwrap_or_default();
        let ok = st.phase == Some(RunPhase::Succeeded);
        let c = st.conditions.iter().find(|c| c.type_ == "Succeeded");
        let reason =
            c.map(|c| c.reason.clone()).unwrap_or_else(|| if ok { "Completed".into() } else { "Failed".into() });
        let msg = format!("{}: {}", last.name_any(), c.map(|c| c.message.clone()).unwrap_or_default());
        conds.push(condition(&prev.conditions, "LastRunSucceeded", ok, &reason, msg, generation));
        // Evidence of compliance: how old the oldest record past the window was when the run verified.
        if let Some(v) = st.verification.as_ref().filter(|_| ok) {
            status.oldest_expired_age_seconds =
                Some(v.oldest_remaining.map_or(0, |t| (v.verified_at - t).num_seconds().max(0)));
        }
        if let Some(age) = status.oldest_expired_age_seconds {
            ctx.metrics.set_oldest_expired_age(&ns, &name, age);
        }
        status.last_run = Some(RunSummary {
            name: last.name_any(),
            phase: st.phase.map(|p| format!("{p:?}")),
            records_affected: st.counts.as_ref().map(|c| c.affected),
            completion_time: st.completion_time,
        });
        if let Some(t) = finished
            .iter()
            .filter(|r| r.status.as_ref().and_then(|s| s.phase) == Some(RunPhase::Succeeded))
            .filter_map(|r| r.status.as_ref().and_then(|s| s.completion_time))
            .max()
        {
            status.last_successful_time = Some(t);
            ctx.metrics.dataset_succeeded(&ns, &name, t);
        }
    }
    if let Some((_, sch)) = p.schedule.as_ref().ok().and_then(|s| s.as_ref()) {
        let mut kept: BTreeMap<bool, i32> = BTreeMap::new();
        for r in &finished {
            let ok = r.status.as_ref().and_then(|s| s.phase) == Some(RunPhase::Succeeded);
            let limit = if ok { sch.successful_runs_history_limit } else { sch.failed_runs_history_limit };
            let n = kept.entry(ok).or_default();
            *n += 1;
            if *n > limit {
                let dp =
                    DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..DeleteParams::default() };
                match Api::<ScrubRun>::namespaced(ctx.client.clone(), &ns).delete(&r.name_any(), &dp).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    // One condition per type; the later (more specific) one wins.
    let mut by_type: BTreeMap<String, Condition> = BTreeMap::new();
    for c in conds {
        by_type.insert(c.type_.clone(), c);
    }
    status.conditions = by_type.into_values().collect();
    let was_ready = condition_is(&prev.conditions, "Ready", "True");
    let ready_now = condition_is(&status.conditions, "Ready", "True");
    if apply_status(&ctx.client, ds.as_ref(), ds.status.as_ref(), &status).await? && was_ready != ready_now {
        let c = status.conditions.iter().find(|c| c.type_ == "Ready").cloned().expect("Ready is always set");
        ctx.event(ds.as_ref(), !ready_now, &c.reason, c.message).await;
    }
    ctx.reset_backoff(&key(ds.as_ref()));
    if !active.is_empty() || !create.is_empty() {
        // A run is under way: the change that ends it may reach this
        // reconcile before the run cache has it, so look again soon.
        requeue = requeue.min(Duration::from_secs(5));
    }
    Ok(Action::requeue(requeue))
}

fn new_run(
    ds: &Dataset,
    policies: &[Arc<RetentionPolicy>],
    p: &Plan,
    scheduled: DateTime<Utc>,
    at: DateTime<Utc>,
) -> std::result::Result<ScrubRun, String> {
    let (rule, _) = p.effective.maximum.as_ref().ok_or("no maximum")?;
    let keep_for = rule.keep_for.as_ref().ok_or("no keepFor")?;
    let field = ds.spec.time_field(rule.measured_from, rule.event.as_deref()).ok_or("no time field")?;
    // Windows are measured back from when the run was decided, which is now.
    let cutoff = keep_for.before(at).ok_or("cutoff out of range")?;
    let minimum = minimum_at(ds, policies, &p.effective, at)?;
    let spec = ScrubRunSpec {
        dataset_ref: LocalRef { name: ds.name_any() },
        purpose: RunPurpose::Retention,
        deletion_request_ref: None,
        cutoff: Some(cutoff),
        minimum_retention_cutoff: minimum.as_ref().map(|(_, t)| *t),
        time_field: Some(field.clone()),
        minimum_time_field: minimum.map(|(c, _)| c),
        action: rule.action,
        scheduled_time: Some(scheduled),
        dry_run: p.dry_run,
    };
    let labels: BTreeMap<String, String> =
        [("lethe.dev/dataset".to_string(), ds.name_any().chars().take(63).collect())].into();
    Ok(ScrubRun {
        metadata: ObjectMeta {
            name: Some(run_name(&ds.name_any(), scheduled)),
            namespace: ds.namespace(),
            labels: Some(labels),
            owner_references: Some(vec![ds.controller_owner_ref(&()).ok_or("the Dataset has no uid")?]),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names_are_deterministic_and_valid() {
        let t: DateTime<Utc> = "2026-11-23T02:30:00Z".parse().unwrap();
        assert_eq!(run_name("access-logs", t), "access-logs-20261123-023000");
        let long = "a".repeat(253);
        assert_eq!(run_name(&long, t).len(), 253);
    }
}
