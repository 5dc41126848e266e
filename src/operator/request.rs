//! DeletionRequest: resolve the datasets holding the subject, honour legal
//! holds and minimum retention, erase children before parents through
//! erasure ScrubRuns, and finish with per-dataset results and a receipt.
//!
//! The subject's identifiers are read only to compute their salted digest
//! (and, in the in-process executor, by the scrub); status, Events, logs and
//! metrics carry the digest, never an identifier.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, PostParams},
    runtime::{Controller, controller::Action, reflector::ObjectRef, watcher::Config as WatchConfig},
};

use super::{APPROVED_BY, Ctx, REQUESTED_BY, Result, apply_status, condition, dataset, exec, from_time, key, now};
use crate::{
    api::{
        Dataset, DatasetResult, DeletionRequest, DeletionRequestStatus, ExpiryAction, LegalHold, LocalRef, Receipt,
        Regime, RequestPhase, RunPhase, RunPurpose, ScrubRun, ScrubRunSpec,
    },
    digest,
    plan::erasure::{self, Node},
};

pub async fn controller(ctx: Arc<Ctx>) {
    let cache = ctx.caches.requests.clone();
    Controller::new(Api::<DeletionRequest>::all(ctx.client.clone()), WatchConfig::default())
        .owns(Api::<ScrubRun>::all(ctx.client.clone()), WatchConfig::default())
        .watches(Api::<LegalHold>::all(ctx.client.clone()), WatchConfig::default(), move |h| {
            super::refs_in_ns(&cache, h.namespace())
        })
        .run(reconcile, super::error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// Days a regime allows, from receipt of the request.
pub fn deadline_days(regime: Regime) -> i64 {
    match regime {
        Regime::Gdpr => 30,
        Regime::Ccpa => 45,
        Regime::Other => 30,
    }
}

/// Whether a request has finished (any final phase).
pub fn terminal(p: Option<RequestPhase>) -> bool {
    matches!(
        p,
        Some(
            RequestPhase::Completed
                | RequestPhase::PartiallyCompleted
                | RequestPhase::Deferred
                | RequestPhase::Blocked
                | RequestPhase::Failed
        )
    )
}

/// The name of a request's `attempt`-th run on a dataset (the first is
/// [`run_name`]; later ones erase what minimum retention deferred).
pub fn attempt_name(request: &str, dataset: &str, attempt: u32) -> String {
    let first = run_name(request, dataset);
    if attempt <= 1 {
        return first;
    }
    let suffix = format!("-{attempt}");
    let keep = 253 - suffix.len();
    format!("{}{suffix}", &first[..first.len().min(keep)])
}

/// Creates a request's erasure run on one dataset, with the minimum
/// retention that applies now.
async fn create_run(
    ctx: &Ctx,
    req: &DeletionRequest,
    ds: &Dataset,
    run_n: &str,
    action: ExpiryAction,
    at: DateTime<Utc>,
) -> Result<()> {
    let ns = req.namespace().unwrap_or_default();
    let name = req.name_any();
    let ds_name = ds.name_any();
    let policies = dataset::applying_policies(ctx, ds);
    let effective = dataset::effective_of(ds, &policies, at);
    // Anonymizing keeps the record, which is what a minimum retention
    // requires: a Dataset that erases by anonymization anonymizes records
    // under the minimum instead of deferring.
    let minimum = match action {
        ExpiryAction::Anonymize => None,
        ExpiryAction::Delete => dataset::minimum_at(ds, &policies, &effective, at).map_err(super::Error::Other)?,
    };
    let run = ScrubRun {
        metadata: ObjectMeta {
            name: Some(run_n.to_string()),
            namespace: Some(ns.clone()),
            labels: Some(
                [
                    ("lethe.dev/dataset".to_string(), ds_name.chars().take(63).collect()),
                    ("lethe.dev/deletion-request".to_string(), name.chars().take(63).collect()),
                ]
                .into(),
            ),
            owner_references: Some(vec![req.controller_owner_ref(&()).expect("a stored request has a uid")]),
            ..ObjectMeta::default()
        },
        spec: ScrubRunSpec {
            dataset_ref: LocalRef { name: ds_name.clone() },
            purpose: RunPurpose::Erasure,
            deletion_request_ref: Some(LocalRef { name: name.clone() }),
            cutoff: None,
            time_field: None,
            minimum_retention_cutoff: minimum.as_ref().map(|(_, t)| *t),
            minimum_time_field: minimum.map(|(c, _)| c),
            action,
            scheduled_time: Some(at),
            dry_run: req.spec.dry_run || ds.spec.dry_run,
        },
        status: None,
    };
    let pp = PostParams { field_manager: Some(super::MANAGER.into()), ..PostParams::default() };
    match Api::<ScrubRun>::namespaced(ctx.client.clone(), &ns).create(&pp, &run).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// When the earliest deferred dataset of a finished request may be erased.
fn next_erasable(st: &DeletionRequestStatus) -> Option<DateTime<Utc>> {
    st.datasets.iter().filter(|d| d.phase.as_deref() == Some("Deferred")).filter_map(|d| d.erasable_after).min()
}

/// The erasure run's name for one dataset of a request.
pub fn run_name(request: &str, dataset: &str) -> String {
    let name = format!("{request}-{dataset}");
    if name.len() <= 253 {
        return name;
    }
    let h = &digest::sha256(name.as_bytes())[7..17];
    format!("{}-{h}", &name[..242])
}

/// Whether a hold keeps this subject's records in this dataset.
fn holding(
    h: &LegalHold,
    digests: &[String],
    ids: &BTreeMap<String, String>,
    held_values: &BTreeMap<String, Vec<String>>,
) -> bool {
    match &h.spec.subjects {
        None => true,
        Some(s) => {
            digests.iter().any(|d| s.digests.contains(d))
                || ids.iter().any(|(t, v)| held_values.get(t).is_some_and(|vals| vals.iter().any(|x| x == v)))
        }
    }
}

async fn reconcile(req: Arc<DeletionRequest>, ctx: Arc<Ctx>) -> Result<Action> {
    let ns = req.namespace().unwrap_or_default();
    let name = req.name_any();
    let at = now();
    let prev = req.status.clone().unwrap_or_default();
    let generation = req.metadata.generation;
    let received = req.spec.received_at.or_else(|| req.meta().creation_timestamp.as_ref().map(from_time)).unwrap_or(at);
    let deadline = req.spec.deadline.unwrap_or(received + chrono::Duration::days(deadline_days(req.spec.regime)));
    if prev.phase.is_none() {
        ctx.metrics.request_received(req.spec.regime.as_str());
    }
    let open = ctx.caches.requests.state();
    for (regime, n) in overdue_counts(&open, at) {
        ctx.metrics.set_overdue(regime, n);
    }
    for (regime, (n, next)) in open_requests(&open) {
        ctx.metrics.set_open(regime, n, next);
    }
    if terminal(prev.phase) && prev.receipt.is_some() {
        ctx.reset_backoff(&key(req.as_ref()));
        // Datasets deferred by minimum retention are erased once they may be.
        match next_erasable(&prev) {
            None => return Ok(Action::await_change()),
            Some(t) if t > at => {
                let wait = (t - at).to_std().unwrap_or_default() + Duration::from_secs(1);
                return Ok(Action::requeue(wait.min(ctx.config.resync)));
            }
            Some(_) => {}
        }
    }
    let mut st = DeletionRequestStatus {
        observed_generation: generation,
        phase: Some(RequestPhase::Pending),
        subject_digest: prev.subject_digest.clone(),
        deadline: Some(deadline),
        start_time: prev.start_time,
        responded_at: prev.responded_at.or(prev.completion_time.filter(|_| terminal(prev.phase))),
        approved_by: prev.approved_by.clone(),
        ..DeletionRequestStatus::default()
    };
    // Once answered, later passes over deferred records do not make it late.
    let overdue = st.responded_at.unwrap_or(at) > deadline;
    let overdue_cond = |prev: &DeletionRequestStatus| {
        if overdue {
            condition(
                &prev.conditions,
                "Overdue",
                true,
                "DeadlinePassed",
                format!("the deadline {} has passed", deadline.to_rfc3339()),
                generation,
            )
        } else {
            condition(
                &prev.conditions,
                "Overdue",
                false,
                "WithinDeadline",
                format!("due by {}", deadline.to_rfc3339()),
                generation,
            )
        }
    };
    let ids = match exec::subject_identifiers(&ctx.client, &ns, &req).await? {
        Ok(ids) => ids,
        Err(m) => {
            st.conditions =
                vec![condition(&prev.conditions, "Ready", false, "SecretMissing", m, generation), overdue_cond(&prev)];
            write(&ctx, &req, &mut st).await?;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
    };
    let digests = digest::all(&ctx.config.digest_salt, &ids);
    st.subject_digest = Some(digest::subject(&ctx.config.digest_salt, &ids));

    // The approval gate.
    let mut conds = vec![
        condition(&prev.conditions, "Ready", true, "Accepted", "the request is valid", generation),
        overdue_cond(&prev),
    ];
    if req.spec.require_approval {
        let approver = req.annotations().get(APPROVED_BY).map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let requester = req.annotations().get(REQUESTED_BY).map(|s| s.trim().to_string());
        match approver {
            Some(a) if Some(&a) == requester.as_ref() => {
                st.phase = Some(RequestPhase::AwaitingApproval);
                conds.push(condition(
                    &prev.conditions,
                    "Approved",
                    false,
                    "SelfApproval",
                    "the approver must not be the requester",
                    generation,
                ));
            }
            Some(a) => {
                st.approved_by = Some(a.clone());
                conds.push(condition(
                    &prev.conditions,
                    "Approved",
                    true,
                    "Approved",
                    format!("approved by {a}"),
                    generation,
                ));
            }
            None => {
                st.phase = Some(RequestPhase::AwaitingApproval);
                conds.push(condition(
                    &prev.conditions,
                    "Approved",
                    false,
                    "AwaitingApproval",
                    format!("approve with: kubectl annotate deletionrequest {name} {APPROVED_BY}=<your name>"),
                    generation,
                ));
            }
        }
        if st.phase == Some(RequestPhase::AwaitingApproval) {
            st.conditions = conds;
            if write(&ctx, &req, &mut st).await? && prev.phase != st.phase {
                ctx.event(req.as_ref(), false, "AwaitingApproval", "the request waits for approval".into()).await;
            }
            return Ok(Action::requeue(ctx.config.resync));
        }
    }

    // Datasets in scope, children first.
    let datasets: Vec<Arc<Dataset>> = ctx
        .caches
        .datasets_in(&ns)
        .into_iter()
        .filter(|d| d.spec.subject_types().iter().any(|t| ids.contains_key(t)))
        .filter(|d| match &req.spec.scope {
            None => true,
            Some(s) => s.datasets.contains(&d.name_any()) || s.categories.iter().any(|c| d.spec.categories.contains(c)),
        })
        .collect();
    let nodes: Vec<Node> = datasets
        .iter()
        .map(|d| Node { name: d.name_any(), parents: d.spec.relations.iter().map(|r| r.dataset.clone()).collect() })
        .collect();
    let order = match erasure::children_first(&nodes) {
        Ok(o) => o,
        Err(m) => {
            st.phase = Some(RequestPhase::Failed);
            conds.push(condition(&prev.conditions, "Ready", false, "RelationCycle", m, generation));
            st.conditions = conds;
            write(&ctx, &req, &mut st).await?;
            return Ok(Action::requeue(ctx.config.resync));
        }
    };

    // Subject holds named by Secret: their values, to compare in memory.
    let holds: Vec<LegalHold> = ctx.caches.holds_in(&ns).iter().map(|h| h.as_ref().clone()).collect();
    let mut held_values: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for h in holds.iter().filter(|h| h.spec.active_at(at)) {
        if let Some(by_type) = exec::held_subjects(&ctx.client, &ns, h).await? {
            held_values.insert(h.name_any(), by_type);
        }
    }

    let runs_api: Api<ScrubRun> = Api::namespaced(ctx.client.clone(), &ns);
    let mut results = Vec::new();
    let mut waiting = false;
    for ds_name in &order {
        let ds = datasets.iter().find(|d| d.name_any() == *ds_name).expect("ordered from these datasets");
        let action = ds.spec.erasure.as_ref().map(|e| e.action).unwrap_or(ExpiryAction::Delete);
        let mut r = DatasetResult { dataset: ds_name.clone(), action: Some(action), ..DatasetResult::default() };
        // A dataset deferred by minimum retention gets a further run once the
        // kept records may go; the latest run decides the result, and the
        // records of earlier ones are added to it.
        let mut attempt = 1;
        let mut earlier_affected = 0;
        let mut existing = runs_api.get_opt(&attempt_name(&name, ds_name, 1)).await?;
        while let Some(run) = &existing {
            let Some(next) = runs_api.get_opt(&attempt_name(&name, ds_name, attempt + 1)).await? else { break };
            earlier_affected += run.status.as_ref().and_then(|s| s.counts.as_ref()).map_or(0, |c| c.affected);
            attempt += 1;
            existing = Some(next);
        }
        let run_n = attempt_name(&name, ds_name, attempt);
        let holders: Vec<String> = exec::holds_for(&holds, ds, at)
            .iter()
            .filter(|h| holding(h, &digests, &ids, held_values.get(&h.name_any()).unwrap_or(&BTreeMap::new())))
            .map(|h| h.name_any())
            .collect();
        if existing.is_none() && !holders.is_empty() {
            r.phase = Some("Blocked".into());
            r.remaining_reason = Some(format!("held by LegalHold {}", holders.join(", ")));
            results.push(r);
            continue;
        }
        let run = match existing {
            Some(run) => run,
            None if waiting => {
                r.phase = Some("Pending".into());
                results.push(r);
                continue;
            }
            None => {
                create_run(&ctx, &req, ds, &run_n, action, at).await?;
                st.start_time.get_or_insert(at);
                waiting = true;
                r.run = Some(run_n);
                r.phase = Some("Running".into());
                results.push(r);
                continue;
            }
        };
        r.run = Some(run_n);
        let rs = run.status.clone().unwrap_or_default();
        match rs.phase {
            Some(RunPhase::Succeeded) => {
                let c = rs.conditions.iter().find(|c| c.type_ == "Succeeded");
                let counts = rs.counts.clone().unwrap_or_default();
                r.records_affected = Some(earlier_affected + counts.affected);
                let v = rs.verification.clone();
                r.remaining = v.as_ref().map(|v| v.remaining);
                r.remaining_reason = v.as_ref().and_then(|v| v.reason.clone());
                r.verified = Some(v.as_ref().is_some_and(|v| v.remaining == 0));
                r.phase = Some(match c.map(|c| c.reason.as_str()) {
                    Some("Held") => "Blocked".into(),
                    Some("DryRun") => "DryRun".into(),
                    _ if r.remaining.unwrap_or(0) > 0 && run.spec.minimum_retention_cutoff.is_some() => {
                        // Erasable once the newest kept record passes its minimum.
                        let policies = dataset::applying_policies(&ctx, ds);
                        let effective = dataset::effective_of(ds, &policies, at);
                        let from = v.as_ref().and_then(|v| v.newest_kept).or(run.spec.scheduled_time).unwrap_or(at);
                        // Whole seconds, as status and a run's cutoff keep them: rounded
                        // up, plus the second a run's cutoff loses when truncated, so the
                        // run made then no longer finds the record kept.
                        r.erasable_after = effective.minimum.as_ref().and_then(|(d, _)| d.after(from)).map(|t| {
                            use chrono::Timelike;
                            let whole = t.with_nanosecond(0).unwrap_or(t);
                            let up = if whole < t { whole + chrono::Duration::seconds(1) } else { whole };
                            up + chrono::Duration::seconds(1)
                        });
                        "Deferred".into()
                    }
                    _ if r.remaining.unwrap_or(0) > 0 => "Blocked".into(),
                    _ => "Completed".into(),
                });
                // Due now: the next run erases what the minimum no longer keeps.
                if r.phase.as_deref() == Some("Deferred")
                    && r.erasable_after.is_some_and(|t| t <= at)
                    && holders.is_empty()
                    && !waiting
                {
                    let next = attempt_name(&name, ds_name, attempt + 1);
                    create_run(&ctx, &req, ds, &next, action, at).await?;
                    waiting = true;
                    r.run = Some(next);
                    r.phase = Some("Running".into());
                    r.erasable_after = None;
                }
            }
            Some(RunPhase::Failed) => {
                let c = rs.conditions.iter().find(|c| c.type_ == "Failed" || c.type_ == "Succeeded");
                r.phase = Some("Failed".into());
                r.error = c.map(|c| format!("{}: {}", c.reason, c.message));
            }
            Some(RunPhase::AwaitingApproval) => {
                r.phase = Some("AwaitingApproval".into());
                waiting = true;
            }
            _ => {
                r.phase = Some("Running".into());
                waiting = true;
            }
        }
        results.push(r);
    }
    // Warnings the runs found (foreign keys no relation declares).
    let mut warnings = Vec::new();
    for r in &results {
        if let Some(run) = r.run.as_ref().and_then(|n| ctx.caches.runs.get(&ObjectRef::new(n).within(&ns)))
            && let Some(c) = run
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "UndeclaredRelations" && c.status == "True"))
        {
            warnings.push(format!("{}: {}", r.dataset, c.message));
        }
    }
    if !warnings.is_empty() {
        conds.push(condition(
            &prev.conditions,
            "UndeclaredRelations",
            true,
            "ForeignKeyNotDeclared",
            warnings.join("; "),
            generation,
        ));
    }
    st.records_affected = Some(results.iter().filter_map(|r| r.records_affected).sum());
    let phase_of = |r: &DatasetResult| r.phase.clone().unwrap_or_default();
    let all_done = !results.iter().any(|r| matches!(phase_of(r).as_str(), "Running" | "Pending" | "AwaitingApproval"));
    st.datasets = results;
    if !all_done {
        st.phase = Some(RequestPhase::Running);
        conds.push(condition(&prev.conditions, "Complete", false, "Running", "erasure in progress", generation));
        st.conditions = conds;
        if write(&ctx, &req, &mut st).await? && prev.phase != st.phase {
            ctx.event(req.as_ref(), false, "Started", format!("erasing across {} dataset(s)", order.len())).await;
        }
        // A run's end may reach this reconcile before the run cache has it.
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let count = |p: &str| st.datasets.iter().filter(|r| phase_of(r) == p).count();
    let n = st.datasets.len();
    let (done, blocked, deferred, failed) =
        (count("Completed") + count("DryRun"), count("Blocked"), count("Deferred"), count("Failed"));
    let phase = if failed > 0 {
        RequestPhase::Failed
    } else if done == n {
        RequestPhase::Completed
    } else if blocked == n {
        RequestPhase::Blocked
    } else if deferred == n {
        RequestPhase::Deferred
    } else {
        RequestPhase::PartiallyCompleted
    };
    st.phase = Some(phase);
    st.completion_time = Some(at);
    st.start_time.get_or_insert(at);
    st.responded_at.get_or_insert(at);
    let summary = format!("{done} of {n} dataset(s) erased, {blocked} held, {deferred} deferred, {failed} failed");
    conds.push(condition(
        &prev.conditions,
        "Complete",
        phase != RequestPhase::Failed,
        &format!("{phase:?}"),
        summary.clone(),
        generation,
    ));
    if overdue {
        // Finished late: still recorded as overdue.
        conds.retain(|c| c.type_ != "Overdue");
        conds.push(condition(
            &prev.conditions,
            "Overdue",
            true,
            "CompletedLate",
            format!("completed after the deadline {}", deadline.to_rfc3339()),
            generation,
        ));
    }
    let mut unsigned = st.clone();
    unsigned.conditions = vec![];
    st.receipt = Some(Receipt { digest: crate::receipt::digest(&req, &unsigned), issued_at: at });
    st.conditions = conds;
    write(&ctx, &req, &mut st).await?;
    ctx.metrics.request_completed(
        req.spec.regime.as_str(),
        &format!("{phase:?}"),
        (at - received).num_seconds().max(0) as f64,
    );
    ctx.event(req.as_ref(), phase == RequestPhase::Failed, &format!("{phase:?}"), summary).await;
    // The Secret stays while a deferred dataset still needs the identifiers.
    if req.spec.delete_secret_on_completion
        && phase != RequestPhase::Failed
        && deferred == 0
        && let Some(r) = &req.spec.subject.secret_ref
    {
        match Api::<Secret>::namespaced(ctx.client.clone(), &ns).delete(&r.name, &DeleteParams::default()).await {
            Ok(_) => {
                ctx.event(req.as_ref(), false, "SecretDeleted", format!("deleted Secret {} naming the subject", r.name))
                    .await
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    ctx.reset_backoff(&key(req.as_ref()));
    Ok(Action::await_change())
}

/// Writes a request's status with `Reconciling` (kstatus: in progress)
/// while it is not finished, so GitOps tools wait for it.
async fn write(ctx: &Ctx, req: &DeletionRequest, st: &mut DeletionRequestStatus) -> Result<bool> {
    let prev = req.status.clone().unwrap_or_default();
    st.conditions.retain(|c| c.type_ != "Reconciling");
    if !terminal(st.phase) {
        let phase = st.phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "Pending".into());
        st.conditions.push(condition(
            &prev.conditions,
            "Reconciling",
            true,
            &phase,
            "the request is in progress",
            req.metadata.generation,
        ));
    }
    apply_status(&ctx.client, req, req.status.as_ref(), &*st).await
}

/// How many requests are open under each regime, and their earliest deadline.
pub fn open_requests(requests: &[Arc<DeletionRequest>]) -> BTreeMap<&'static str, (i64, Option<DateTime<Utc>>)> {
    let mut out: BTreeMap<&'static str, (i64, Option<DateTime<Utc>>)> =
        [("GDPR", (0, None)), ("CCPA", (0, None)), ("Other", (0, None))].into();
    for r in requests {
        let st = r.status.clone().unwrap_or_default();
        if terminal(st.phase) || st.responded_at.is_some() {
            continue;
        }
        let e = out.entry(r.spec.regime.as_str()).or_default();
        e.0 += 1;
        if let Some(d) = st.deadline {
            e.1 = Some(e.1.map_or(d, |x| x.min(d)));
        }
    }
    out
}

/// Overdue requests per regime, for the gauge.
pub fn overdue_counts(requests: &[Arc<DeletionRequest>], at: DateTime<Utc>) -> BTreeMap<&'static str, i64> {
    let mut out: BTreeMap<&'static str, i64> = [("GDPR", 0), ("CCPA", 0), ("Other", 0)].into();
    for r in requests {
        let st = r.status.clone().unwrap_or_default();
        if !terminal(st.phase) && st.responded_at.is_none() && st.deadline.is_some_and(|d| at > d) {
            *out.entry(r.spec.regime.as_str()).or_default() += 1;
        }
    }
    out
}
