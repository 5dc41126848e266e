//! DataStore: probe connectivity and credentials on every change and
//! periodically; `Ready` with `Connected`, `AuthFailed`, `Unreachable`,
//! `SecretMissing` or `InvalidConfiguration`, and the server version.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    runtime::{Controller, controller::Action, reflector::ObjectRef, watcher::Config as WatchConfig},
};

use super::{Ctx, Result, apply_status, condition, exec, key, now};
use crate::{
    api::{DataStore, DataStoreStatus},
    scrub::{ScrubError, driver::Driver},
};

pub async fn controller(ctx: Arc<Ctx>) {
    let stores = Api::<DataStore>::all(ctx.client.clone());
    let secrets = Api::<Secret>::all(ctx.client.clone());
    let cache = ctx.caches.stores.clone();
    Controller::new(stores, WatchConfig::default())
        // A Secret appearing or changing re-probes the stores that use it.
        .watches(secrets, WatchConfig::default(), move |secret| {
            let ns = secret.namespace().unwrap_or_default();
            let name = secret.name_any();
            cache
                .state()
                .into_iter()
                .filter(|s| s.namespace().as_deref() == Some(ns.as_str()))
                .filter(|s| {
                    s.spec.secret_ref.as_ref().is_some_and(|r| r.name == name)
                        || s.spec.tls.as_ref().and_then(|t| t.ca_secret_ref.as_ref()).is_some_and(|r| r.name == name)
                })
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        })
        .run(reconcile, super::error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// The Ready condition's reason for a probe failure.
fn reason(e: &ScrubError) -> &'static str {
    match e {
        ScrubError::Access(_) => "AuthFailed",
        ScrubError::Unavailable(_) | ScrubError::Busy(_) => "Unreachable",
        ScrubError::Config(_) | ScrubError::Held(_) => "InvalidConfiguration",
    }
}

async fn reconcile(store: Arc<DataStore>, ctx: Arc<Ctx>) -> Result<Action> {
    let ns = store.namespace().unwrap_or_default();
    let prev = store.status.clone().unwrap_or_default();
    let generation = store.metadata.generation;
    // A volume only scrub Jobs mount cannot be probed from here.
    let job_volume = ctx.config.executor == super::ExecutorKind::Job
        && store.spec.filesystem.as_ref().is_some_and(|f| f.persistent_volume_claim.is_some());
    let probed = if job_volume {
        Ok("filesystem (PersistentVolumeClaim mounted by scrub Jobs)".to_string())
    } else {
        probe(&ctx, &ns, &store).await?
    };
    let mut status = DataStoreStatus {
        observed_generation: generation,
        last_probe_time: prev.last_probe_time,
        server_version: prev.server_version.clone(),
        ..DataStoreStatus::default()
    };
    match &probed {
        Ok(version) => {
            status.server_version = Some(version.clone());
            status.conditions = vec![condition(
                &prev.conditions,
                "Ready",
                true,
                "Connected",
                format!("connected; {version}"),
                generation,
            )];
        }
        Err((reason, message)) => {
            status.conditions = vec![condition(&prev.conditions, "Ready", false, reason, message.clone(), generation)];
        }
    }
    // The probe time moves only when the outcome changes, so a periodic
    // probe with the same result writes nothing.
    if status.conditions != prev.conditions
        || status.server_version != prev.server_version
        || prev.last_probe_time.is_none()
    {
        status.last_probe_time = Some(now());
    }
    let was_ready = super::condition_is(&prev.conditions, "Ready", "True");
    if apply_status(&ctx.client, store.as_ref(), store.status.as_ref(), &status).await? {
        match &probed {
            Ok(v) if !was_ready => ctx.event(store.as_ref(), false, "Connected", format!("connected to {v}")).await,
            Err((reason, message)) if was_ready || prev.conditions.is_empty() => {
                ctx.event(store.as_ref(), true, reason, message.clone()).await
            }
            _ => {}
        }
    }
    ctx.reset_backoff(&key(store.as_ref()));
    Ok(Action::requeue(if probed.is_ok() {
        ctx.config.resync
    } else {
        ctx.config.resync.min(std::time::Duration::from_secs(30))
    }))
}

/// Connects to the store with its credentials: its version, or why not.
async fn probe(ctx: &Ctx, ns: &str, store: &DataStore) -> Result<std::result::Result<String, (&'static str, String)>> {
    Ok(match exec::store_credentials(&ctx.client, ns, &store.spec).await? {
        Err(missing) => Err(("SecretMissing", missing)),
        Ok(creds) => match Driver::connect(&store.spec, &creds).await {
            Err(e) => Err((reason(&e), e.to_string())),
            Ok(db) => db.server_version().await.map_err(|e| (reason(&e), e.to_string())),
        },
    })
}
