//! RetentionPolicy: which Datasets it selects, whether its own minimum is
//! above its maximum, and `Ready`.

use std::{cmp::Ordering, sync::Arc};

use futures::StreamExt;
use kube::{
    Api, ResourceExt,
    runtime::{Controller, controller::Action, watcher::Config as WatchConfig},
};

use super::{Ctx, Result, apply_status, condition, key, now};
use crate::{
    api::{Dataset, RetentionPolicy, RetentionPolicyStatus},
    plan::{retention, selector},
};

pub async fn controller(ctx: Arc<Ctx>) {
    let policies = Api::<RetentionPolicy>::all(ctx.client.clone());
    let datasets = Api::<Dataset>::all(ctx.client.clone());
    let cache = ctx.caches.policies.clone();
    Controller::new(policies, WatchConfig::default())
        .watches(datasets, WatchConfig::default(), move |ds| super::refs_in_ns(&cache, ds.namespace()))
        .run(reconcile, super::error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// Whether `policy` applies to `ds`: it selects it, or the Dataset names it.
pub fn applies(policy: &RetentionPolicy, ds: &Dataset) -> bool {
    policy.namespace() == ds.namespace()
        && (retention::policy_selects(&policy.spec, &ds.spec.categories, ds.labels())
            || ds.spec.retention_policies.contains(&policy.name_any()))
}

async fn reconcile(policy: Arc<RetentionPolicy>, ctx: Arc<Ctx>) -> Result<Action> {
    let ns = policy.namespace().unwrap_or_default();
    let prev = policy.status.clone().unwrap_or_default();
    let generation = policy.metadata.generation;
    let mut datasets: Vec<String> =
        ctx.caches.datasets_in(&ns).iter().filter(|d| applies(&policy, d)).map(|d| d.name_any()).collect();
    datasets.sort();
    let problems = policy.spec.dataset_selector.as_ref().map(selector::problems).unwrap_or_default();
    let rule = &policy.spec.rule;
    let conflict = match (&rule.keep_for, &rule.keep_at_least) {
        (Some(max), Some(min)) if min.cmp_at(max, now()) == Ordering::Greater => {
            Some(format!("keepAtLeast {min} is longer than keepFor {max}"))
        }
        _ => None,
    };
    let ready = if !problems.is_empty() {
        condition(&prev.conditions, "Ready", false, "InvalidSelector", problems.join("; "), generation)
    } else if let Some(c) = &conflict {
        condition(&prev.conditions, "Ready", false, "Conflict", c.clone(), generation)
    } else {
        let msg = match datasets.len() {
            0 => "valid; selects no Dataset yet".to_string(),
            n => format!("valid; applies to {n} Dataset(s)"),
        };
        condition(&prev.conditions, "Ready", true, "Valid", msg, generation)
    };
    let status = RetentionPolicyStatus {
        observed_generation: generation,
        conditions: vec![ready],
        matched_datasets: Some(datasets.len() as i32),
        datasets,
    };
    if apply_status(&ctx.client, policy.as_ref(), policy.status.as_ref(), &status).await?
        && let Some(c) = &conflict
        && !prev.conditions.iter().any(|p| p.reason == "Conflict")
    {
        ctx.event(policy.as_ref(), true, "RetentionConflict", c.clone()).await;
    }
    ctx.reset_backoff(&key(policy.as_ref()));
    Ok(Action::requeue(ctx.config.resync))
}
