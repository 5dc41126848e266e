//! A real MariaDB server for a test, on a free loopback port in a temporary
//! directory, with a password user `lethe` and a database `app`. Killed
//! when dropped.
#![allow(dead_code)]

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::Duration,
};

// `super::watchdog`: tests/common/mod.rs declares it, as do the benchmarks
// that include this file.
use super::watchdog;

pub const PASSWORD: &str = "lethe-test-password";

pub struct MariaDb {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Mutex<Option<Child>>,
    tls: bool,
    /// Stops the server and removes its directory if this is never dropped.
    _watchdog: watchdog::Watchdog,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl MariaDb {
    pub fn start() -> MariaDb {
        Self::start_inner(None)
    }

    /// A server that also accepts TLS with this certificate and key (PEM).
    pub fn start_tls(cert: &str, key: &str) -> MariaDb {
        Self::start_inner(Some((cert, key)))
    }

    fn start_inner(tls: Option<(&str, &str)>) -> MariaDb {
        // Bootstraps running side by side have been seen to trip over each
        // other's temporary tables: one at a time across test processes,
        // each with its own tmpdir.
        let dir = tempfile::Builder::new().prefix("lethe-mariadb-").tempdir().unwrap();
        // The data directory's path names this server's process alone (the
        // bracket keeps the pattern from matching the watcher's own command).
        let watchdog = watchdog::Watchdog::arm(&format!(
            "pkill -9 -f -- '--datadir={d}/dat[a]'; rm -rf '{d}'",
            d = dir.path().display()
        ));
        let data = dir.path().join("data");
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        {
            let lock = std::fs::File::create(std::env::temp_dir().join("lethe-mariadb-bootstrap.lock")).unwrap();
            lock.lock().expect("bootstrap lock");
            let out = Command::new("mariadb-install-db")
                .args(["--no-defaults", "--user=root", "--auth-root-authentication-method=normal", "--skip-test-db"])
                .arg(format!("--datadir={}", data.display()))
                .env("TMPDIR", &tmp)
                .output()
                .expect("mariadb-install-db (run scripts/setup-test-env.sh)");
            assert!(out.status.success(), "mariadb-install-db: {}", String::from_utf8_lossy(&out.stderr));
        }
        if let Some((cert, key)) = tls {
            std::fs::write(dir.path().join("server.crt"), cert).unwrap();
            std::fs::write(dir.path().join("server.key"), key).unwrap();
        }
        let db = MariaDb { port: free_port(), dir, child: Mutex::new(None), tls: tls.is_some(), _watchdog: watchdog };
        db.start_again();
        let sql = format!(
            "CREATE USER 'lethe'@'%' IDENTIFIED BY '{PASSWORD}'; GRANT ALL ON *.* TO 'lethe'@'%'; CREATE DATABASE app;"
        );
        let out = Command::new("mariadb")
            .args(["--no-defaults", "-u", "root", "-S"])
            .arg(db.socket())
            .args(["-e", &sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "create user: {}", String::from_utf8_lossy(&out.stderr));
        db
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// Starts the server (again, after `kill`) and waits until it answers.
    pub fn start_again(&self) {
        let d = self.dir.path();
        // Debian puts the server in /usr/sbin, which a non-root PATH may lack.
        let server =
            if std::path::Path::new("/usr/sbin/mariadbd").exists() { "/usr/sbin/mariadbd" } else { "mariadbd" };
        let child = Command::new(server)
            .args([
                "--no-defaults",
                "--user=root",
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=128M",
                "--innodb-flush-log-at-trx-commit=2",
                "--skip-log-bin",
            ])
            .arg(format!("--port={}", self.port))
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--pid-file={}", d.join("pid").display()))
            .arg(format!("--log-error={}", d.join("err.log").display()))
            .arg(format!("--tmpdir={}", d.join("tmp").display()))
            .args(if self.tls {
                vec![
                    format!("--ssl-cert={}", d.join("server.crt").display()),
                    format!("--ssl-key={}", d.join("server.key").display()),
                ]
            } else {
                vec![]
            })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd");
        *self.child.lock().unwrap() = Some(child);
        for _ in 0..200 {
            let ok = Command::new("mariadb-admin")
                .args(["--no-defaults", "-u", "root", "-S"])
                .arg(self.socket())
                .arg("ping")
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("mariadbd did not start: {}", std::fs::read_to_string(d.join("err.log")).unwrap_or_default());
    }

    /// Kills the server at once, as a crash would.
    pub fn kill(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn options(&self) -> lethe::scrub::ConnectOptions {
        lethe::scrub::ConnectOptions {
            host: "127.0.0.1".into(),
            port: self.port,
            database: "app".into(),
            user: "lethe".into(),
            password: Some(PASSWORD.into()),
            tls: Default::default(),
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.kill();
    }
}
