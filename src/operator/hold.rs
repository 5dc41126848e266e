//! LegalHold: active or expired, which Datasets and how many subjects it
//! covers. Datasets and DeletionRequests watch holds themselves, so a hold
//! appearing, changing or expiring re-queues what it affects.

use std::sync::Arc;

use futures::StreamExt;
use kube::{
    Api, ResourceExt,
    runtime::{Controller, controller::Action, watcher::Config as WatchConfig},
};

use super::{Ctx, Result, apply_status, condition, key, now, read_secret};
use crate::api::{LegalHold, LegalHoldStatus};

pub async fn controller(ctx: Arc<Ctx>) {
    let cache = ctx.caches.holds.clone();
    Controller::new(Api::<LegalHold>::all(ctx.client.clone()), WatchConfig::default())
        // A Dataset appearing or changing labels may change what a hold covers.
        .watches(Api::<crate::api::Dataset>::all(ctx.client.clone()), WatchConfig::default(), move |d| {
            super::refs_in_ns(&cache, d.namespace())
        })
        .run(reconcile, super::error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn reconcile(hold: Arc<LegalHold>, ctx: Arc<Ctx>) -> Result<Action> {
    let ns = hold.namespace().unwrap_or_default();
    let prev = hold.status.clone().unwrap_or_default();
    let generation = hold.metadata.generation;
    let at = now();
    let active = hold.spec.active_at(at);
    let mut datasets: Vec<String> = ctx
        .caches
        .datasets_in(&ns)
        .iter()
        .filter(|d| hold.spec.names_datasets() && hold.spec.covers(&d.name_any(), &d.spec.categories, d.labels()))
        .map(|d| d.name_any())
        .collect();
    datasets.sort();
    let mut ready = condition(&prev.conditions, "Ready", true, "Valid", "hold is valid", generation);
    let mut subjects = None;
    if let Some(s) = &hold.spec.subjects {
        let mut n = s.digests.len();
        if let Some(r) = &s.secret_ref {
            match read_secret(&ctx.client, &ns, &r.name).await? {
                // Each key is an identifier type; count the subjects, never show them.
                Some(values) => n += values.values().map(|v| super::identifier_lines(v).len()).max().unwrap_or(0),
                None => {
                    ready = condition(
                        &prev.conditions,
                        "Ready",
                        false,
                        "SecretMissing",
                        format!(
                            "Secret {:?} naming the held subjects does not exist; affected runs refuse to start",
                            r.name
                        ),
                        generation,
                    )
                }
            }
        }
        subjects = Some(n as i32);
    }
    let active_cond = if active {
        let msg = match hold.spec.expires_at {
            Some(t) => format!("in force until {}", t.to_rfc3339()),
            None => "in force until removed".to_string(),
        };
        condition(&prev.conditions, "Active", true, "InForce", msg, generation)
    } else {
        condition(&prev.conditions, "Active", false, "Expired", "the hold has expired; runs proceed", generation)
    };
    let status = LegalHoldStatus {
        observed_generation: generation,
        conditions: vec![ready, active_cond],
        covered_datasets: Some(datasets.len() as i32),
        datasets,
        subjects,
    };
    let was_active = super::condition_is(&prev.conditions, "Active", "True");
    if apply_status(&ctx.client, hold.as_ref(), hold.status.as_ref(), &status).await? {
        if active && !was_active {
            ctx.event(hold.as_ref(), false, "HoldActive", "deletion of covered data is suspended".into()).await;
        } else if !active && was_active {
            ctx.event(
                hold.as_ref(),
                false,
                "HoldExpired",
                "the hold expired; covered data follows its retention again".into(),
            )
            .await;
        }
    }
    ctx.reset_backoff(&key(hold.as_ref()));
    let next = match hold.spec.expires_at {
        Some(t) if t > at => (t - at).to_std().unwrap_or_default() + std::time::Duration::from_secs(1),
        _ => ctx.config.resync,
    };
    Ok(Action::requeue(next.min(ctx.config.resync)))
}
