//! The `lethe operator` binary as a child process against a test cluster,
//! with its log captured to a file; killed (SIGKILL) when dropped.
#![allow(dead_code)]

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::Cluster;

/// The salt every test operator uses, so digests are reproducible in tests.
pub const SALT: &str = "test-digest-salt";

pub struct Operator {
    child: Option<Child>,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Operator {
    pub fn start(cluster: &Cluster, namespace: &str, executor: &str, identity: &str) -> Operator {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("operator.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_lethe"))
            .args(["operator", "--executor", executor, "--namespace", namespace, "--identity", identity])
            .args(["--health-addr", "127.0.0.1:0", "--resync-seconds", "5", "--log-json"])
            .env("KUBECONFIG", &cluster.kubeconfig)
            .env("LETHE_DIGEST_SALT", SALT)
            .env("LETHE_BIN", env!("CARGO_BIN_EXE_lethe"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("lethe operator starts");
        Operator { child: Some(child), log, _dir: dir }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address of /metrics, /healthz and /readyz, from the log.
    pub fn health_addr(&self) -> String {
        let t = Instant::now();
        loop {
            for line in self.logs().lines() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
                    && let Some(a) = v.get("addr").and_then(|a| a.as_str())
                {
                    return a.to_string();
                }
            }
            assert!(t.elapsed() < Duration::from_secs(60), "operator never served health:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET on the health server: (status code, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.health_addr()).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (code, body)
    }

    /// SIGKILL: no chance to clean up, as a crashed pod.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` until it returns `Some`, failing with `what` after `limit`
/// (an upper bound for a broken build, not a performance assertion).
pub fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A plain SQL client on its own runtime.
pub struct Sql {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Sql {
    pub fn connect(pg: &super::pg::PgServer) -> Sql {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let conn =
            format!("host=127.0.0.1 port={} user=postgres password={} dbname=postgres", pg.port, super::pg::PASSWORD);
        let client = rt.block_on(async {
            let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            client
        });
        Sql { rt, client }
    }

    pub fn exec(&self, sql: &str) {
        self.rt.block_on(self.client.batch_execute(sql)).unwrap();
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.rt.block_on(self.client.query_one(sql, &[])).unwrap().get(0)
    }

    pub fn text(&self, sql: &str) -> Option<String> {
        self.rt.block_on(self.client.query_one(sql, &[])).unwrap().get(0)
    }
}

/// A LegalHold on `dataset` naming the subject `user_id` through a Secret.
pub fn hold_on_user(dataset: &str, user_id: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: held-users}}\nstringData: {{user_id: \"{user_id}\"}}\n---\napiVersion: lethe.dev/v1alpha1\nkind: LegalHold\nmetadata: {{name: audit}}\nspec:\n  reason: audit of user {user_id}\n  datasets: [{dataset}]\n  subjects: {{secretRef: {{name: held-users}}}}\n"
    )
}

/// Files a GDPR DeletionRequest `erase-<user_id>` for that subject, waits
/// until it is complete, and returns its phase.
pub fn erase_user(c: &Cluster, ns: &str, user_id: &str) -> String {
    let name = format!("erase-{user_id}");
    c.apply_text(
        &format!("apiVersion: lethe.dev/v1alpha1\nkind: DeletionRequest\nmetadata: {{name: {name}}}\nspec:\n  subject: {{identifiers: {{user_id: \"{user_id}\"}}}}\n  regime: GDPR\n"),
        &["-n", ns],
    );
    c.ok(&["-n", ns, "wait", "--for=condition=Complete", &format!("deletionrequest/{name}"), "--timeout=90s"]);
    c.ok(&["-n", ns, "get", &format!("deletionrequest/{name}"), "-o", "jsonpath={.status.phase}"])
}
