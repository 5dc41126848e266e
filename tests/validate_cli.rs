//! `lethe validate` as a pipeline runs it: the examples pass, every file of
//! the broken corpus fails with its documented message, and nothing panics.

use std::{fs, path::PathBuf, process::Command};

fn validate(path: &str) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lethe")).args(["validate", "-f", path]).output().expect("run lethe");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn examples_pass() {
    let (code, out) = validate("examples");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 error(s)"), "{out}");
    // The examples are the realistic set, not an empty directory.
    let n = fs::read_dir("examples").unwrap().count();
    assert!(n >= 7, "examples/ holds the manifest set");
}

#[test]
fn every_broken_manifest_fails_with_its_message() {
    let mut files: Vec<PathBuf> = fs::read_dir("tests/validate/broken").unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 20, "at least 20 broken manifests");
    for f in files {
        let text = fs::read_to_string(&f).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: first line must be '# expect: <message>'", f.display()));
        let (code, out) = validate(f.to_str().unwrap());
        assert_eq!(code, 1, "{}: exit code (101 would be a panic)\n{out}", f.display());
        assert!(out.contains(expect), "{}: expected {expect:?} in\n{out}", f.display());
        // Exactly one line per problem, each naming the file.
        for line in out.lines().filter(|l| !l.ends_with("warning(s)")) {
            assert!(line.contains(f.to_str().unwrap()), "{}: line without file: {line}", f.display());
        }
    }
}

#[test]
fn missing_file_is_an_error_not_a_panic() {
    let (code, out) = validate("does/not/exist.yaml");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot read"), "{out}");
}

#[test]
fn json_output_is_machine_readable() {
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(["validate", "-o", "json", "-f", "tests/validate/broken/01-unknown-store-type.yaml"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v[0]["severity"], "error");
    assert_eq!(v[0]["field"], "spec.type");
}

#[test]
fn the_report_without_a_cluster_says_so_and_exits() {
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .arg("report")
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no cluster"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_operator_without_a_cluster_says_so_and_exits() {
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(["operator", "--health-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no cluster"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
