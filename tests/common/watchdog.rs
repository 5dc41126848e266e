//! Cleanup that runs once the test process has ended, however it ended.
//!
//! A server kept in a `static` is never dropped, and a process stopped by a
//! signal drops nothing: without this, each such run would leave a server
//! and its data directory behind. The watcher runs in its own session, so
//! a signal to the test's process group does not reach it; it waits for
//! the end of a pipe only this process holds, which the kernel closes when
//! the process ends.

use std::process::{Child, Command, Stdio};

pub struct Watchdog(Child);

impl Watchdog {
    /// Runs the shell command `cleanup` when this process ends, unless the
    /// watchdog is dropped first (the owner cleaned up itself).
    pub fn arm(cleanup: &str) -> Watchdog {
        let child = Command::new("setsid")
            .args(["sh", "-c", &format!("cat >/dev/null; {cleanup}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a cleanup watcher (setsid, sh)");
        Watchdog(child)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Stop the watcher before its pipe closes, so it cleans nothing.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
