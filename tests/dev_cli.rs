//! `lethe dev`: an embedded cluster a new user can point kubectl at, which
//! stops cleanly on SIGTERM.

use std::{process::Command, time::Duration};

#[test]
fn lethe_dev_serves_the_crds_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(["dev", "--no-operator", "--kubeconfig", kubeconfig.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if kubeconfig.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out =
        Command::new("kubectl").env("KUBECONFIG", &kubeconfig).args(["get", "crds", "-o", "name"]).output().unwrap();
    let names = String::from_utf8_lossy(&out.stdout);
    assert_eq!(names.lines().filter(|l| l.ends_with(".lethe.dev")).count(), 6, "{names}");
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "clean exit on SIGTERM");
}
