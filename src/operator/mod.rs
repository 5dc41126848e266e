//! The operator: one controller per kind, sharing a client, a field manager,
//! caches of the objects they read across kinds, an event recorder, metrics
//! and the executor that runs scrubs.
//!
//! Every controller follows the same rules: status is written only through
//! `/status`, by server-side apply under [`MANAGER`], and only when it
//! differs from what the object already shows; a user's `spec` is never
//! written; conditions keep their `lastTransitionTime` unless their status
//! changes; errors back off per object and the backoff resets on success.

pub mod dataset;
pub mod datastore;
pub mod exec;
pub mod health;
pub mod hold;
pub mod job;
pub mod lease;
pub mod policy;
pub mod request;
pub mod run;
pub mod salt;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use k8s_openapi::{
    api::core::v1::{ObjectReference, Secret},
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::WatchStreamExt,
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        reflector::{self, ObjectRef, Store},
        watcher::{self, Config as WatchConfig},
    },
};
use serde::{Serialize, de::DeserializeOwned};

use crate::api::{DataStore, Dataset, DeletionRequest, LegalHold, RetentionPolicy, ScrubRun};

/// The one field manager under which Lethe writes status and creates objects.
pub const MANAGER: &str = "lethe";

/// Annotation that asks a Dataset for a run now; its value is a token echoed in status.
pub const RUN_NOW: &str = "lethe.dev/run-now";
/// Annotation approving a stalled ScrubRun or a DeletionRequest that requires approval; its value names the approver.
pub const APPROVED_BY: &str = "lethe.dev/approved-by";
/// Annotation naming who filed a DeletionRequest (an approver must be someone else).
pub const REQUESTED_BY: &str = "lethe.dev/requested-by";

/// How scrubs are executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorKind {
    /// A Kubernetes Job per run, running `lethe scrub --run`.
    Job,
    /// A task inside the operator (small installs, the demo).
    InProcess,
}

/// What the operator is started with.
#[derive(Debug, Clone)]
pub struct Config {
    pub executor: ExecutorKind,
    /// The image scrub Jobs run (the operator's own).
    pub image: String,
    /// The command scrub Jobs run (the `lethe` binary inside the image).
    pub command: String,
    /// The salt for digests of subject identifiers.
    pub digest_salt: String,
    /// The namespace the operator runs in (its Lease lives there).
    pub namespace: String,
    /// This replica's identity (the Lease holder name).
    pub identity: String,
    /// How often DataStores are probed and schedules re-checked without any change.
    pub resync: Duration,
    /// The ServiceAccount scrub Jobs run under.
    pub job_service_account: Option<String>,
}

/// Read-only caches of the kinds controllers look up across each other.
#[derive(Clone)]
pub struct Caches {
    pub stores: Store<DataStore>,
    pub datasets: Store<Dataset>,
    pub policies: Store<RetentionPolicy>,
    pub holds: Store<LegalHold>,
    pub runs: Store<ScrubRun>,
    pub requests: Store<DeletionRequest>,
}

impl Caches {
    fn in_ns<K: Resource<DynamicType = ()> + Clone>(store: &Store<K>, ns: &str) -> Vec<Arc<K>> {
        store.state().into_iter().filter(|o| o.meta().namespace.as_deref() == Some(ns)).collect()
    }

    pub fn datasets_in(&self, ns: &str) -> Vec<Arc<Dataset>> {
        Self::in_ns(&self.datasets, ns)
    }

    pub fn policies_in(&self, ns: &str) -> Vec<Arc<RetentionPolicy>> {
        Self::in_ns(&self.policies, ns)
    }

    pub fn holds_in(&self, ns: &str) -> Vec<Arc<LegalHold>> {
        Self::in_ns(&self.holds, ns)
    }

    pub fn runs_in(&self, ns: &str) -> Vec<Arc<ScrubRun>> {
        Self::in_ns(&self.runs, ns)
    }

    pub fn store(&self, ns: &str, name: &str) -> Option<Arc<DataStore>> {
        self.stores.get(&ObjectRef::new(name).within(ns))
    }

    pub fn dataset(&self, ns: &str, name: &str) -> Option<Arc<Dataset>> {
        self.datasets.get(&ObjectRef::new(name).within(ns))
    }
}

/// Shared by every reconcile.
pub struct Ctx {
    pub client: Client,
    pub config: Config,
    pub caches: Caches,
    pub recorder: Recorder,
    pub metrics: health::Metrics,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// In-process runs currently executing, by `namespace/name`.
    pub tasks: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// Per DataStore (`namespace/name`): its `maxConcurrentRuns` and the permits.
    stores: Mutex<HashMap<String, (usize, Arc<tokio::sync::Semaphore>)>>,
    store_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// When this process started, and the finished runs it has counted.
    pub started: chrono::DateTime<chrono::Utc>,
    pub counted: Mutex<std::collections::HashSet<String>>,
}

impl Ctx {
    pub fn new(client: Client, config: Config, caches: Caches) -> Ctx {
        let recorder = Recorder::new(
            client.clone(),
            Reporter { controller: "lethe".into(), instance: Some(config.identity.clone()) },
        );
        Ctx {
            client,
            config,
            caches,
            recorder,
            metrics: health::Metrics::default(),
            failures: Mutex::default(),
            tasks: Mutex::default(),
            stores: Mutex::default(),
            store_locks: Mutex::default(),
            started: chrono::Utc::now(),
            counted: Mutex::default(),
        }
    }

    /// A lock per store, held while deciding whether another Job may start.
    pub fn store_lock(&self, store: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.store_locks.lock().expect("lock");
        locks.entry(store.to_string()).or_default().clone()
    }

    /// The semaphore bounding concurrent in-process runs against one store.
    pub fn store_permits(&self, store: &str, limit: usize) -> Arc<tokio::sync::Semaphore> {
        let mut stores = self.stores.lock().expect("lock");
        let entry =
            stores.entry(store.to_string()).or_insert_with(|| (limit, Arc::new(tokio::sync::Semaphore::new(limit))));
        if entry.0 != limit {
            // The limit changed: new runs use a fresh semaphore; running ones finish under the old.
            *entry = (limit, Arc::new(tokio::sync::Semaphore::new(limit)));
        }
        entry.1.clone()
    }

    /// Publishes an Event about `obj`. Events are best effort: a failure is logged, not returned.
    pub async fn event<K: Resource<DynamicType = ()>>(&self, obj: &K, warning: bool, reason: &str, note: String) {
        let ev = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        let reference: ObjectReference = obj.object_ref(&());
        if let Err(e) = self.recorder.publish(&ev, &reference).await {
            tracing::warn!(kind = %K::kind(&()), name = %obj.meta().name.as_deref().unwrap_or(""), error = %e, "cannot publish event");
        }
    }

    pub fn reset_backoff(&self, key: &str) {
        self.failures.lock().expect("lock").remove(key);
    }

    /// The next delay for an object that failed again: 1 s doubling to 5 min.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut f = self.failures.lock().expect("lock");
        let n = f.entry(key.to_string()).or_insert(0);
        *n = (*n + 1).min(10);
        Duration::from_secs((1u64 << (*n - 1)).min(300))
    }
}

/// Errors a reconcile returns; each names the reason shown in logs and metrics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Serde(#[from] serde_json::Error),
    #[error("{0}")]
    Scrub(#[from] crate::scrub::ScrubError),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesAPI",
            Error::Serde(_) => "Serialization",
            Error::Scrub(e) => e.reason(),
            Error::Other(_) => "Internal",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// References to every cached object in a namespace: what a change to a
/// related object in that namespace re-queues.
pub fn refs_in_ns<K: Resource<DynamicType = ()> + Clone>(store: &Store<K>, ns: Option<String>) -> Vec<ObjectRef<K>> {
    store.state().into_iter().filter(|o| o.meta().namespace == ns).map(|o| ObjectRef::from_obj(o.as_ref())).collect()
}

/// A Secret value naming held subjects: one identifier per line.
pub fn identifier_lines(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

/// `namespace/name` of an object.
pub fn key<K: Resource>(obj: &K) -> String {
    format!("{}/{}", obj.meta().namespace.as_deref().unwrap_or(""), obj.meta().name.as_deref().unwrap_or(""))
}

/// The shared error policy: log with the object's coordinates, count, back off.
pub fn error_policy<K: Resource<DynamicType = ()>>(obj: Arc<K>, err: &Error, ctx: Arc<Ctx>) -> Action {
    let k = key(obj.as_ref());
    let delay = ctx.backoff(&k);
    ctx.metrics.reconcile_error(&K::kind(&()), err.reason());
    tracing::warn!(kind = %K::kind(&()), object = %k, reason = err.reason(), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

pub fn to_time(t: DateTime<Utc>) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_millisecond(t.timestamp_millis()).unwrap_or_default())
}

pub fn from_time(t: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.0.as_millisecond()).unwrap_or_default()
}

/// Seconds precision: what the API server keeps of a timestamp.
pub fn now() -> DateTime<Utc> {
    let n = Utc::now();
    DateTime::from_timestamp(n.timestamp(), 0).unwrap_or(n)
}

/// A condition that keeps its `lastTransitionTime` when its status did not change.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| to_time(now()));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    }
}

pub fn condition_is(conditions: &[Condition], type_: &str, status: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == status)
}

/// Applies `status` through `/status` under [`MANAGER`] unless the object
/// already shows exactly that. Returns whether a write happened.
pub async fn apply_status<K, S>(client: &Client, obj: &K, current: Option<&S>, status: &S) -> Result<bool>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(false);
    }
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(&obj.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&body)).await?;
    Ok(true)
}

/// The values of a Secret, decoded. `None` when the Secret does not exist.
pub async fn read_secret(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<std::collections::BTreeMap<String, String>>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let Some(secret) = api.get_opt(name).await? else {
        return Ok(None);
    };
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in secret.data.unwrap_or_default() {
        let text =
            String::from_utf8(v.0).map_err(|_| Error::Other(format!("Secret {name:?} key {k:?} is not UTF-8")))?;
        out.insert(k, text);
    }
    for (k, v) in secret.string_data.unwrap_or_default() {
        out.insert(k, v);
    }
    Ok(Some(out))
}

/// A reflector over every object of one kind, and the task feeding it.
fn cache<K>(client: &Client) -> (Store<K>, impl std::future::Future<Output = ()> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    use futures::StreamExt;
    let (reader, writer) = reflector::store();
    let api: Api<K> = Api::all(client.clone());
    let stream = reflector::reflector(writer, watcher::watcher(api, WatchConfig::default()))
        .default_backoff()
        .for_each(|_| futures::future::ready(()));
    (reader, stream)
}

/// Runs the operator until `shutdown` resolves or leadership is lost.
pub async fn run(client: Client, config: Config, health_addr: std::net::SocketAddr) -> Result<(), String> {
    let (stores, f1) = cache::<DataStore>(&client);
    let (datasets, f2) = cache::<Dataset>(&client);
    let (policies, f3) = cache::<RetentionPolicy>(&client);
    let (holds, f4) = cache::<LegalHold>(&client);
    let (runs, f5) = cache::<ScrubRun>(&client);
    let (requests, f6) = cache::<DeletionRequest>(&client);
    let caches = Caches { stores, datasets, policies, holds, runs, requests };
    let ctx = Arc::new(Ctx::new(client.clone(), config.clone(), caches.clone()));
    let state = health::State::default();
    let server = health::serve(health_addr, ctx.clone(), state.clone()).await?;
    tracing::info!(addr = %server, "serving /metrics, /healthz and /readyz");

    // Only the Lease holder reconciles; the caches fill meanwhile.
    let caches_fut = tokio::spawn(async move {
        tokio::join!(f1, f2, f3, f4, f5, f6);
    });
    let leader = lease::Elector::new(client.clone(), &config.namespace, "lethe-operator", &config.identity);
    leader.acquire().await.map_err(|e| format!("leader election: {e}"))?;
    tracing::info!(identity = %config.identity, "holding the lease; starting controllers");
    let lost = leader.keep().map_err(|e| format!("leader election: {e}"))?;
    for ready in [
        caches.stores.wait_until_ready().await.is_ok(),
        caches.datasets.wait_until_ready().await.is_ok(),
        caches.policies.wait_until_ready().await.is_ok(),
        caches.holds.wait_until_ready().await.is_ok(),
        caches.runs.wait_until_ready().await.is_ok(),
        caches.requests.wait_until_ready().await.is_ok(),
    ] {
        if !ready {
            return Err("caches did not sync".into());
        }
    }
    state.set_ready(true);
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => tracing::info!("terminated"),
            _ = lost => tracing::error!("lost the lease; stopping"),
        }
    };
    tokio::select! {
        _ = controllers(ctx.clone()) => {}
        _ = shutdown => {}
    }
    state.set_ready(false);
    caches_fut.abort();
    Ok(())
}

async fn controllers(ctx: Arc<Ctx>) {
    tokio::join!(
        datastore::controller(ctx.clone()),
        policy::controller(ctx.clone()),
        hold::controller(ctx.clone()),
        dataset::controller(ctx.clone()),
        run::controller(ctx.clone()),
        request::controller(ctx.clone()),
    );
}
