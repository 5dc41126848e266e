//! `/metrics`, `/healthz` and `/readyz`.
//!
//! Labels are bounded: store types, actions, purposes, reasons, regimes,
//! kinds, and the names of Datasets (objects an admin created). No label
//! or value ever carries a subject identifier or its digest.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use axum::{Router, extract::State as AxumState, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use super::Ctx;

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

fn run_buckets() -> Histogram {
    Histogram::new([0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0])
}

fn completion_buckets() -> Histogram {
    // Seconds: a minute up to 45 days.
    Histogram::new([60.0, 600.0, 3600.0, 21600.0, 86400.0, 259200.0, 604800.0, 1_296_000.0, 2_592_000.0, 3_888_000.0])
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    records: Family<Labels, Counter>,
    run_seconds: Histograms,
    run_failures: Family<Labels, Counter>,
    blast_stops: Family<Labels, Counter>,
    requests_received: Family<Labels, Counter>,
    requests_completed: Family<Labels, Counter>,
    requests_overdue: Family<Labels, Gauge>,
    completion_seconds: Histograms,
    last_success: Family<Labels, Gauge<f64, AtomicU64>>,
    schedule_interval: Family<Labels, Gauge<f64, AtomicU64>>,
    next_deadline: Family<Labels, Gauge<f64, AtomicU64>>,
    requests_open: Family<Labels, Gauge>,
    oldest_expired: Family<Labels, Gauge>,
    reconcile_errors: Family<Labels, Counter>,
}

/// What a finished run is counted under: its Dataset's namespace, store and
/// categories, and why it ran.
pub struct RunLabels {
    pub namespace: String,
    pub store: String,
    pub store_type: String,
    pub categories: Vec<String>,
    pub purpose: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("lethe");
        let records = Family::<Labels, Counter>::default();
        registry.register("records_scrubbed", "Records deleted or anonymized", records.clone());
        let run_seconds = Histograms::new_with_constructor(run_buckets as fn() -> Histogram);
        registry.register("run_duration_seconds", "Duration of completed ScrubRuns", run_seconds.clone());
        let run_failures = Family::<Labels, Counter>::default();
        registry.register("run_failures", "ScrubRuns that failed, by reason", run_failures.clone());
        let blast_stops = Family::<Labels, Counter>::default();
        registry.register(
            "blast_radius_stops",
            "Runs stopped before deleting by the safety brake",
            blast_stops.clone(),
        );
        let requests_received = Family::<Labels, Counter>::default();
        registry.register("deletion_requests_received", "DeletionRequests seen", requests_received.clone());
        let requests_completed = Family::<Labels, Counter>::default();
        registry.register(
            "deletion_requests_completed",
            "DeletionRequests finished, by phase",
            requests_completed.clone(),
        );
        let requests_overdue = Family::<Labels, Gauge>::default();
        registry.register(
            "deletion_requests_overdue",
            "Open DeletionRequests past their deadline",
            requests_overdue.clone(),
        );
        let completion_seconds = Histograms::new_with_constructor(completion_buckets as fn() -> Histogram);
        registry.register(
            "deletion_request_completion_seconds",
            "Time from receipt to completion of DeletionRequests",
            completion_seconds.clone(),
        );
        let last_success = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "dataset_last_success_timestamp_seconds",
            "When a Dataset's last retention run succeeded",
            last_success.clone(),
        );
        let schedule_interval = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "dataset_schedule_interval_seconds",
            "Seconds between a Dataset's scheduled runs (for alerts on missed runs)",
            schedule_interval.clone(),
        );
        let next_deadline = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "deletion_request_next_deadline_timestamp_seconds",
            "The earliest deadline of open DeletionRequests (0 when none is open)",
            next_deadline.clone(),
        );
        let requests_open = Family::<Labels, Gauge>::default();
        registry.register("deletion_requests_open", "DeletionRequests not yet finished", requests_open.clone());
        let oldest_expired = Family::<Labels, Gauge>::default();
        registry.register(
            "dataset_oldest_expired_age_seconds",
            "Age of the oldest record past its window that a Dataset's last run left (0: none)",
            oldest_expired.clone(),
        );
        let reconcile_errors = Family::<Labels, Counter>::default();
        registry.register("reconcile_errors", "Reconcile errors by kind and reason", reconcile_errors.clone());
        Metrics {
            registry,
            records,
            run_seconds,
            run_failures,
            blast_stops,
            requests_received,
            requests_completed,
            requests_overdue,
            completion_seconds,
            last_success,
            schedule_interval,
            next_deadline,
            requests_open,
            oldest_expired,
            reconcile_errors,
        }
    }
}

impl Metrics {
    /// A run that succeeded: records per category and action, its duration.
    pub fn run_succeeded(&self, l: &RunLabels, deleted: i64, anonymized: i64, seconds: Option<f64>) {
        for category in &l.categories {
            for (action, n) in [("delete", deleted), ("anonymize", anonymized)] {
                let labels = vec![
                    ("namespace", l.namespace.clone()),
                    ("store", l.store.clone()),
                    ("store_type", l.store_type.clone()),
                    ("category", category.clone()),
                    ("purpose", l.purpose.to_string()),
                    ("action", action.to_string()),
                ];
                self.records.get_or_create(&labels).inc_by(n.max(0) as u64);
            }
        }
        if let Some(s) = seconds {
            let labels = vec![("store_type", l.store_type.clone()), ("purpose", l.purpose.to_string())];
            self.run_seconds.get_or_create(&labels).observe(s);
        }
    }

    pub fn run_failed(&self, l: &RunLabels, reason: &str) {
        let labels = vec![
            ("namespace", l.namespace.clone()),
            ("store", l.store.clone()),
            ("store_type", l.store_type.clone()),
            ("purpose", l.purpose.to_string()),
            ("reason", reason.to_string()),
        ];
        self.run_failures.get_or_create(&labels).inc();
    }

    pub fn blast_radius_stop(&self, namespace: &str, dataset: &str) {
        let l = vec![("namespace", namespace.to_string()), ("dataset", dataset.to_string())];
        self.blast_stops.get_or_create(&l).inc();
    }

    pub fn request_received(&self, regime: &str) {
        self.requests_received.get_or_create(&vec![("regime", regime.to_string())]).inc();
    }

    pub fn request_completed(&self, regime: &str, phase: &str, seconds: f64) {
        let l = vec![("regime", regime.to_string()), ("phase", phase.to_string())];
        self.requests_completed.get_or_create(&l).inc();
        self.completion_seconds.get_or_create(&vec![("regime", regime.to_string())]).observe(seconds);
    }

    pub fn set_overdue(&self, regime: &str, n: i64) {
        self.requests_overdue.get_or_create(&vec![("regime", regime.to_string())]).set(n);
    }

    /// Open requests under a regime and their earliest deadline, if any.
    pub fn set_open(&self, regime: &str, n: i64, next: Option<chrono::DateTime<chrono::Utc>>) {
        let l = vec![("regime", regime.to_string())];
        self.requests_open.get_or_create(&l).set(n);
        self.next_deadline.get_or_create(&l).set(next.map_or(0.0, |t| t.timestamp() as f64));
    }

    pub fn set_oldest_expired_age(&self, namespace: &str, dataset: &str, seconds: i64) {
        let l = vec![("namespace", namespace.to_string()), ("dataset", dataset.to_string())];
        self.oldest_expired.get_or_create(&l).set(seconds);
    }

    pub fn set_schedule_interval(&self, namespace: &str, dataset: &str, seconds: Option<f64>) {
        let l = vec![("namespace", namespace.to_string()), ("dataset", dataset.to_string())];
        match seconds {
            Some(s) => {
                self.schedule_interval.get_or_create(&l).set(s);
            }
            None => {
                self.schedule_interval.remove(&l);
            }
        }
    }

    pub fn dataset_succeeded(&self, namespace: &str, dataset: &str, at: chrono::DateTime<chrono::Utc>) {
        let l = vec![("namespace", namespace.to_string()), ("dataset", dataset.to_string())];
        self.last_success.get_or_create(&l).set(at.timestamp() as f64);
    }

    pub fn reconcile_error(&self, kind: &str, reason: &str) {
        let l = vec![("kind", kind.to_string()), ("reason", reason.to_string())];
        self.reconcile_errors.get_or_create(&l).inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Readiness: caches synced and the Lease held.
#[derive(Clone, Default)]
pub struct State {
    ready: Arc<AtomicBool>,
}

impl State {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
}

/// Serves the endpoints; returns the bound address.
pub async fn serve(addr: SocketAddr, ctx: Arc<Ctx>, state: State) -> Result<SocketAddr, String> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|AxumState((_, state)): AxumState<(Arc<Ctx>, State)>| async move {
                if state.ready.load(Ordering::SeqCst) {
                    (StatusCode::OK, "ready").into_response()
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready: waiting for the lease or caches").into_response()
                }
            }),
        )
        .route(
            "/metrics",
            get(|AxumState((ctx, _)): AxumState<(Arc<Ctx>, State)>| async move {
                ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], ctx.metrics.render())
            }),
        )
        .with_state((ctx, state));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "health server stopped");
        }
    });
    Ok(bound)
}
