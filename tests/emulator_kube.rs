//! kube-rs against the project's API emulator: the client library the
//! operator is built on works unmodified.

mod common;

use std::{sync::Arc, time::Duration};

use common::Cluster;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::{Controller, WatchStreamExt, controller::Action, watcher},
};
use lethe::api::{DataStore, DataStoreSpec, RetentionPolicy};
use serde_json::json;

fn store(name: &str) -> DataStore {
    let spec: DataStoreSpec =
        serde_json::from_value(json!({"type": "postgres", "sql": {"host": "db", "database": "app"}})).unwrap();
    DataStore::new(name, spec)
}

fn condition(type_: &str, status: &str, reason: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: format!("{type_} is {status}"),
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
        observed_generation: Some(1),
    }
}

#[test]
fn a_controller_reconciles_every_object_and_writes_status_by_server_side_apply() {
    let c = Cluster::start();
    let ns = c.namespace("controller");
    let client = c.client();
    c.runtime().block_on(async move {
        let api: Api<DataStore> = Api::namespaced(client.clone(), &ns);
        for i in 0..3 {
            api.create(&PostParams::default(), &store(&format!("db-{i}"))).await.unwrap();
        }
        let reconcile = |obj: Arc<DataStore>, api: Arc<Api<DataStore>>| async move {
            let status = json!({"apiVersion": "lethe.dev/v1alpha1", "kind": "DataStore",
                "status": {"serverVersion": "reconciled", "conditions": [condition("Ready", "True", "Connected")]}});
            api.patch_status(&obj.name_any(), &PatchParams::apply("lethe-test"), &Patch::Apply(&status)).await?;
            Ok::<_, kube::Error>(Action::await_change())
        };
        let ctl = Controller::new(api.clone(), watcher::Config::default())
            .run(reconcile, |_, _, _| Action::requeue(Duration::from_secs(1)), Arc::new(api.clone()))
            .take(3);
        tokio::time::timeout(Duration::from_secs(20), ctl.for_each(|_| async {})).await.expect("three reconciles");
        for i in 0..3 {
            let s = api.get_status(&format!("db-{i}")).await.unwrap();
            assert_eq!(s.status.unwrap().server_version.as_deref(), Some("reconciled"));
        }
    });
}

#[test]
fn server_side_apply_merges_conditions_by_type() {
    let c = Cluster::start();
    let ns = c.namespace("ssa");
    let client = c.client();
    c.runtime().block_on(async move {
        let api: Api<DataStore> = Api::namespaced(client, &ns);
        api.create(&PostParams::default(), &store("db")).await.unwrap();
        let apply = |manager: &'static str, cond: Condition| {
            let api = api.clone();
            async move {
                let body =
                    json!({"apiVersion": "lethe.dev/v1alpha1", "kind": "DataStore", "status": {"conditions": [cond]}});
                api.patch_status("db", &PatchParams::apply(manager), &Patch::Apply(&body)).await.unwrap()
            }
        };
        apply("a", condition("Ready", "False", "Probing")).await;
        apply("b", condition("Degraded", "False", "Fine")).await;
        let after = apply("a", condition("Ready", "True", "Connected")).await;
        let conds = after.status.unwrap().conditions;
        assert_eq!(conds.len(), 2, "{conds:?}");
        let ready = conds.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Connected"));
        assert!(conds.iter().any(|c| c.type_ == "Degraded"), "the other manager's condition stays");
        // Applying the same status again writes nothing.
        let rv = after.metadata.resource_version.clone();
        let again = apply("a", conds.iter().find(|c| c.type_ == "Ready").unwrap().clone()).await;
        assert_eq!(again.metadata.resource_version, rv);
    });
}

#[test]
fn a_stale_update_gets_409() {
    let c = Cluster::start();
    let ns = c.namespace("conflict");
    let client = c.client();
    c.runtime().block_on(async move {
        let api: Api<DataStore> = Api::namespaced(client, &ns);
        let created = api.create(&PostParams::default(), &store("db")).await.unwrap();
        let mut first = created.clone();
        first.spec.limits.max_concurrent_runs = 2;
        api.replace("db", &PostParams::default(), &first).await.unwrap();
        let mut stale = created;
        stale.spec.limits.max_concurrent_runs = 3;
        match api.replace("db", &PostParams::default(), &stale).await {
            Err(kube::Error::Api(e)) => assert_eq!(e.code, 409, "{e:?}"),
            other => panic!("expected 409, got {other:?}"),
        }
        assert_eq!(api.get("db").await.unwrap().spec.limits.max_concurrent_runs, 2);
    });
}

#[test]
fn a_watcher_recovers_from_a_dropped_connection_and_from_410_gone() {
    let c = Cluster::start();
    let ns = c.namespace("watch");
    let client = c.client();
    let emulator = &c.emulator;
    c.runtime().block_on(async move {
        let api: Api<RetentionPolicy> = Api::namespaced(client, &ns);
        let policy = |name: &str| -> RetentionPolicy {
            serde_json::from_value(json!({"apiVersion": "lethe.dev/v1alpha1", "kind": "RetentionPolicy",
                "metadata": {"name": name}, "spec": {"categories": ["logs"], "keepFor": "90d"}}))
            .unwrap()
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // With a backoff, as every watcher of the operator's: without one a
        // watcher retries a failing request at once, never yielding, and a
        // runtime shutting down under it waits for ever.
        let stream = watcher::watcher(api.clone(), watcher::Config::default()).default_backoff();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                if let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = ev {
                    let _ = tx.send(p.name_any());
                }
            }
        });
        // Each call answered within a bound: a hang fails here, named.
        let create = |api: &Api<RetentionPolicy>, name: &'static str| {
            let (api, p) = (api.clone(), policy(name));
            async move {
                tokio::time::timeout(Duration::from_secs(30), api.create(&PostParams::default(), &p))
                    .await
                    .unwrap_or_else(|_| panic!("creating {name} was not answered"))
                    .unwrap();
            }
        };
        create(&api, "one").await;
        wait_for(&mut rx, "one").await.expect("sees the first object");

        emulator.disconnect_watches();
        create(&api, "two").await;
        wait_for(&mut rx, "two").await.expect("sees an object created around a dropped connection");

        // Move the resourceVersion on where the watcher does not look, forget
        // the history, and drop the connection: resuming must get 410 Gone.
        let elsewhere: Api<RetentionPolicy> = Api::namespaced(api.clone().into_client(), "default");
        create(&elsewhere, "filler").await;
        emulator.compact();
        let gone_before = emulator.shared.gone_sent.load(std::sync::atomic::Ordering::Relaxed);
        emulator.disconnect_watches();
        create(&api, "three").await;
        wait_for(&mut rx, "three").await.expect("relists after 410 Gone");
        let gone_after = emulator.shared.gone_sent.load(std::sync::atomic::Ordering::Relaxed);
        assert!(gone_after > gone_before, "the resumed watch was answered 410 Gone");
        task.abort();
    });
}

async fn wait_for(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    name: &str,
) -> Result<(), tokio::time::error::Elapsed> {
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(n) = rx.recv().await {
            if n == name {
                return;
            }
        }
    })
    .await
}
