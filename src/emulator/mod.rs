//! A Kubernetes API emulator: an HTTP server on loopback speaking enough of
//! the real Kubernetes REST protocol that unmodified kube-rs controllers and
//! the real `kubectl` work against it. It knows nothing of Lethe's
//! controllers; CRDs register kinds dynamically, as in a real cluster.

mod http;
mod kubelet;
mod patch;
mod rbac;
mod registry;
mod select;
mod store;
mod table;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, Uri},
};

pub use store::{ApiError, Store, WriteOptions};

/// State shared by every request.
pub struct Inner {
    pub store: Mutex<Store>,
    /// Pod logs by `namespace/name`.
    pub logs: Mutex<HashMap<String, String>>,
    /// Ends every open watch when sent to (a network blip, for tests).
    pub disconnect: tokio::sync::broadcast::Sender<()>,
    /// How many watches were answered `410 Gone` (for tests and diagnostics).
    pub gone_sent: std::sync::atomic::AtomicU64,
    /// Whether requests with a ServiceAccount's token are authorized by RBAC
    /// (pods then run with their ServiceAccount's token).
    pub rbac: std::sync::atomic::AtomicBool,
    /// The messages of requests RBAC denied (for tests and diagnostics).
    pub denied: Mutex<Vec<String>>,
    /// How many requests RBAC allowed.
    pub allowed: std::sync::atomic::AtomicU64,
}

pub type Shared = Arc<Inner>;

/// A running emulator.
pub struct Emulator {
    pub addr: SocketAddr,
    pub shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Emulator {
    /// Starts serving on `addr` (port 0 picks a free port).
    pub async fn start(addr: SocketAddr) -> std::io::Result<Emulator> {
        let shared: Shared = Arc::new(Inner {
            store: Mutex::new(Store::new()),
            logs: Mutex::new(HashMap::new()),
            disconnect: tokio::sync::broadcast::channel(4).0,
            gone_sent: std::sync::atomic::AtomicU64::new(0),
            rbac: std::sync::atomic::AtomicBool::new(false),
            denied: Mutex::default(),
            allowed: std::sync::atomic::AtomicU64::new(0),
        });
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = Router::new().fallback(route).with_state(shared.clone());
        // The pods' kubeconfigs live in a directory the job runner owns:
        // removed when the emulator stops.
        let dir = tempfile::Builder::new().prefix("lethe-emulator-").tempdir()?;
        std::fs::write(dir.path().join("admin.kubeconfig"), kubeconfig(&format!("http://{addr}"), "default"))?;
        let jobs = tokio::spawn(kubelet::run(shared.clone(), dir));
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "emulator server stopped");
            }
            jobs.abort();
        });
        Ok(Emulator { addr, shared, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig pointing at this emulator.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        kubeconfig(&self.url(), namespace)
    }

    pub fn write_kubeconfig(&self, path: &Path, namespace: &str) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig(namespace))
    }

    /// Ends every open watch stream, as a dropped connection would.
    pub fn disconnect_watches(&self) {
        let _ = self.shared.disconnect.send(());
    }

    /// Authorizes ServiceAccounts by the RBAC objects stored, and runs pods
    /// with their ServiceAccount's token; other clients stay administrators.
    pub fn enforce_rbac(&self) {
        self.shared.rbac.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The messages of the requests RBAC denied so far.
    pub fn denied(&self) -> Vec<String> {
        self.shared.denied.lock().expect("denied lock").clone()
    }

    /// How many ServiceAccount requests RBAC allowed so far.
    pub fn allowed(&self) -> u64 {
        self.shared.allowed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Compacts the watch history so resuming watchers get `410 Gone`.
    pub fn compact(&self) {
        self.shared.store.lock().expect("store lock").compact();
    }

    /// Stops serving (open watches end).
    pub fn stop(self) {
        self.task.abort();
    }
}

async fn route(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    http::handle(shared, method, uri, headers, body).await
}

/// A kubeconfig for an emulator at `url`.
pub fn kubeconfig(url: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: lethe-dev\n  cluster:\n    server: {url}\ncontexts:\n- name: lethe-dev\n  context:\n    cluster: lethe-dev\n    user: lethe-dev\n    namespace: {namespace}\ncurrent-context: lethe-dev\nusers:\n- name: lethe-dev\n  user:\n    token: lethe-dev\n"
    )
}
