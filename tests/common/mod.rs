//! Test harness: the project's API emulator on a free loopback port, with a
//! kubeconfig for the real `kubectl`, and a fresh namespace per test.
#![allow(dead_code)]

use std::{path::PathBuf, process::Command, sync::mpsc};

/// Advances a seeded xorshift generator: the kill tests' pseudo-random,
/// reproducible stop points.
pub fn next_random(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

pub struct Cluster {
    pub url: String,
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
    /// Runs the emulator; dropping it stops the server.
    _runtime: tokio::runtime::Runtime,
    pub emulator: lethe::emulator::Emulator,
}

impl Cluster {
    /// Starts an emulator with Lethe's CRDs installed.
    pub fn start() -> Cluster {
        Self::start_with(true)
    }

    pub fn start_with(install_crds: bool) -> Cluster {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let emulator = runtime
            .block_on(lethe::emulator::Emulator::start("127.0.0.1:0".parse().unwrap()))
            .expect("emulator starts");
        if install_crds {
            lethe::dev::install_crds(&emulator).expect("CRDs install");
        }
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        emulator.write_kubeconfig(&kubeconfig, "default").unwrap();
        Cluster { url: emulator.url(), kubeconfig, _dir: dir, _runtime: runtime, emulator }
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self._runtime
    }

    /// Runs kubectl; returns (exit code, stdout, stderr).
    pub fn kubectl(&self, args: &[&str]) -> (i32, String, String) {
        let out =
            Command::new("kubectl").env("KUBECONFIG", &self.kubeconfig).args(args).output().expect("kubectl runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs kubectl and fails the test unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.kubectl(args);
        assert_eq!(code, 0, "kubectl {} failed:\n{out}\n{err}", args.join(" "));
        out
    }

    /// A fresh namespace for one test.
    pub fn namespace(&self, name: &str) -> String {
        // `kubectl create namespace` sends protobuf, which the emulator does
        // not speak; `apply` sends JSON.
        self.apply_text(&format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"), &[]);
        name.to_string()
    }

    /// `kubectl apply -f` of a manifest held in memory.
    pub fn apply_text(&self, manifest: &str, extra: &[&str]) -> String {
        let f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        std::fs::write(f.path(), manifest).unwrap();
        let mut args = vec!["apply", "-f", f.path().to_str().unwrap()];
        args.extend_from_slice(extra);
        self.ok(&args)
    }

    /// A kube-rs client for this emulator.
    pub fn client(&self) -> kube::Client {
        let (tx, rx) = mpsc::channel();
        let url = self.url.clone();
        self._runtime.spawn(async move {
            let config = kube::Config::new(url.parse().unwrap());
            tx.send(kube::Client::try_from(config).unwrap()).unwrap();
        });
        rx.recv().unwrap()
    }
}
pub mod lua;
pub mod mariadb;
pub mod operator;
pub mod pg;
pub mod redis;
pub mod s3;
pub mod scrub;
pub mod tls;
pub mod watchdog;
