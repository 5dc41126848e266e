//! A real PostgreSQL 15 server for a test, on a free loopback port in a
//! temporary directory, with password authentication over TCP. Stopped
//! (immediately) when dropped.
#![allow(dead_code)]

use std::{path::PathBuf, process::Command};

// `super::watchdog`: tests/common/mod.rs declares it, as do the benchmarks
// that include this file.
use super::watchdog;

pub const PASSWORD: &str = "lethe-test-password";

pub struct PgServer {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    ssl: bool,
    /// Stops the server and removes its directory if this is never dropped.
    _watchdog: watchdog::Watchdog,
}

fn bin_dir() -> PathBuf {
    for v in ["17", "16", "15"] {
        let p = PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"));
        if p.join("initdb").exists() {
            return p;
        }
    }
    panic!("PostgreSQL server binaries not found under /usr/lib/postgresql (run scripts/setup-test-env.sh)");
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false)
}

fn as_postgres(bin: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.args(args).output().expect("run a PostgreSQL tool")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl PgServer {
    pub fn start() -> PgServer {
        Self::start_inner(None)
    }

    /// A server that also accepts TLS with this certificate and key (PEM).
    pub fn start_tls(cert: &str, key: &str) -> PgServer {
        Self::start_inner(Some((cert, key)))
    }

    fn start_inner(tls: Option<(&str, &str)>) -> PgServer {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("lethe-pg-").tempdir().unwrap();
        let data = dir.path().join("data");
        let as_owner = if is_root() { "runuser -u postgres -- " } else { "" };
        let watchdog = watchdog::Watchdog::arm(&format!(
            "{as_owner}'{}' -D '{}' -m immediate -w stop; rm -rf '{}'",
            bin.join("pg_ctl").display(),
            data.display(),
            dir.path().display()
        ));
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        let _ = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status();
        let out = as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--pwfile",
                pwfile.to_str().unwrap(),
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        if let Some((cert, key)) = tls {
            std::fs::write(data.join("server.crt"), cert).unwrap();
            std::fs::write(data.join("server.key"), key).unwrap();
            let _ = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(data.join("server.crt"))
                .arg(data.join("server.key"))
                .status();
            let _ = Command::new("chmod").args(["600"]).arg(data.join("server.key")).status();
        }
        let port = free_port();
        let server = PgServer { port, dir, bin, ssl: tls.is_some(), _watchdog: watchdog };
        server.start_again();
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server (again, after `stop`).
    pub fn start_again(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=50{}",
            self.port,
            self.dir.path().display(),
            if self.ssl { " -c ssl=on" } else { "" }
        );
        let log = self.dir.path().join("log");
        let out = as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", self.data().to_str().unwrap(), "-o", &opts, "-l", log.to_str().unwrap(), "-w", "start"],
        );
        assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Stops the server at once, as a crash or an operator restart would.
    pub fn stop(&self) {
        let _ = as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", self.data().to_str().unwrap(), "-m", "immediate", "-w", "stop"],
        );
    }

    pub fn options(&self) -> lethe::scrub::postgres::ConnectOptions {
        lethe::scrub::postgres::ConnectOptions {
            host: "127.0.0.1".into(),
            port: self.port,
            database: "postgres".into(),
            user: "postgres".into(),
            password: Some(PASSWORD.into()),
            tls: Default::default(),
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}
