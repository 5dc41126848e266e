//! The files store on real directories: exactly the expired, unheld files
//! go; nothing outside the root, nothing through a symbolic link, never the
//! root; a pass stopped anywhere and run again ends in the same state.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

mod common;

use chrono::{DateTime, Utc};
use common::{
    Cluster,
    operator::{Operator, erase_user, hold_on_user},
};
use lethe::scrub::files::{FileSelection, FileStore, render_subject_path};

const DAY: u64 = 86_400;

fn write(path: &Path, bytes: usize, age_days: u64) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, vec![b'x'; bytes]).unwrap();
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(age_days * DAY + 3600)).unwrap();
}

/// Every file under `dir` (not following links), relative, with its size.
fn files(dir: &Path) -> BTreeSet<(PathBuf, u64)> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let m = fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.insert((e.path().strip_prefix(dir).unwrap().to_path_buf(), m.len()));
            }
        }
    }
    out
}

struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

/// A root with `logs/` (files 0..400 days old, some dated by name, some per
/// user), links pointing out of the root, and files outside it.
fn tree() -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    write(&outside.join("secret.txt"), 10, 900);
    write(&outside.join("dir/old.log"), 10, 900);
    for i in 0..300u64 {
        let age = (i * 37) % 400;
        write(&root.join(format!("logs/app/{i:03}.log")), (i as usize % 7) + 1, age);
    }
    for user in [7u64, 42, 99] {
        for j in 0..5u64 {
            write(&root.join(format!("logs/users/{user}/nested/{j}.json")), 3, j * 100);
        }
    }
    // Dated by name; the mtime says "new", the name says otherwise.
    for (d, name) in [(1, "access-2020-01-15.log"), (1, "access-2099-01-15.log")] {
        write(&root.join("logs/dated").join(name), 5, d);
    }
    std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("logs/app/escape.log")).unwrap();
    std::os::unix::fs::symlink(outside.join("dir"), root.join("logs/linked")).unwrap();
    Tree { _dir: dir, root, outside }
}

fn cutoff(days: u64) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::seconds((days * DAY) as i64)
}

fn retention(days: u64) -> FileSelection {
    FileSelection {
        directory: "logs".into(),
        older_than: Some(cutoff(days)),
        held: vec!["users/7".into()],
        name_date_pattern: Some("access-{yyyy}-{mm}-{dd}.log".into()),
        ..FileSelection::default()
    }
}

/// What a retention pass must leave: computed from the files' ages, not the engine.
fn expected_after_retention(before: &BTreeSet<(PathBuf, u64)>, days: u64) -> BTreeSet<(PathBuf, u64)> {
    before
        .iter()
        .filter(|(p, _)| {
            let s = p.to_string_lossy();
            if s.starts_with("logs/users/7/") || s.ends_with("escape.log") || s == "logs/linked" {
                return true;
            }
            if s.contains("access-2020") {
                return false;
            }
            if s.contains("access-2099") {
                return true;
            }
            let age = if let Some(n) = s.strip_prefix("logs/app/").and_then(|n| n.strip_suffix(".log")) {
                (n.parse::<u64>().unwrap() * 37) % 400
            } else {
                let j: u64 = p.file_stem().unwrap().to_string_lossy().parse().unwrap();
                j * 100
            };
            age < days
        })
        .cloned()
        .collect()
}

#[test]
fn retention_removes_exactly_the_expired_unheld_files_and_nothing_outside() {
    let t = tree();
    let before = files(&t.root);
    let outside_before = files(&t.outside);
    let store = FileStore::open(t.root.to_str().unwrap()).unwrap();
    let sel = retention(180);
    let plan = store.plan(&sel).unwrap();
    assert_eq!(files(&t.root), before, "planning touches nothing");
    let out = store.run(&sel, 50, |_, _| true).unwrap();
    let after = files(&t.root);
    let expected = expected_after_retention(&before, 180);
    assert_eq!(after, expected);
    let freed: u64 = before.difference(&after).map(|(_, b)| b).sum();
    assert_eq!(out.bytes_freed, freed);
    assert_eq!(out.files_deleted as usize, before.len() - after.len());
    assert_eq!(plan.selected, out.files_deleted);
    assert_eq!(plan.selected_bytes, out.bytes_freed);
    assert_eq!(out.remaining, 0);
    assert_eq!(plan.links_skipped, 2, "the two links are met and left alone");
    assert!(plan.held >= 1, "user 7's old files are held");
    // Nothing outside the root, nothing through a link, never the directories.
    assert_eq!(files(&t.outside), outside_before);
    assert!(fs::symlink_metadata(t.root.join("logs/app/escape.log")).unwrap().file_type().is_symlink());
    assert!(t.root.join("logs").is_dir() && t.root.is_dir());
    // Nothing newer than the cutoff went.
    for (p, _) in before.difference(&after) {
        let m = p.to_string_lossy();
        assert!(!m.starts_with("logs/users/7/"), "held file {m} deleted");
    }
}

#[test]
fn minimum_retention_keeps_what_is_too_young() {
    let t = tree();
    let store = FileStore::open(t.root.to_str().unwrap()).unwrap();
    let before = files(&t.root);
    // Expire everything older than 100 days, but keep anything younger than 300.
    let sel = FileSelection { keep_newer_than: Some(cutoff(300)), ..retention(100) };
    let plan = store.plan(&sel).unwrap();
    assert!(plan.under_minimum > 0);
    store.run(&sel, 10, |_, _| true).unwrap();
    assert_eq!(files(&t.root), expected_after_retention(&before, 300));
}

#[test]
fn a_pass_killed_at_random_points_and_run_again_ends_exact() {
    let t = tree();
    let before = files(&t.root);
    let expected = expected_after_retention(&before, 200);
    let store = FileStore::open(t.root.to_str().unwrap()).unwrap();
    // Stop the pass after a pseudo-random number of steps, again and again
    // on the same tree, as repeated crashes would.
    let mut seed = 0x243f6a8885a308d3u64;
    let mut aborts = 0;
    for _ in 0..12 {
        common::next_random(&mut seed);
        let stop_after = 1 + seed % 12;
        let mut calls = 0;
        let stopped = store.run(&retention(200), 1, |_, _| {
            calls += 1;
            calls < stop_after
        });
        if stopped.is_err() {
            aborts += 1;
        }
        let partial = files(&t.root);
        assert!(partial.is_superset(&expected), "a stopped pass removed something that must stay");
    }
    assert!(aborts >= 10, "at least ten stops ({aborts})");
    assert!(files(&t.root) != before, "the stopped passes did part of the work");
    store.run(&retention(200), 10, |_, _| true).unwrap();
    assert_eq!(files(&t.root), expected, "exact end state after {aborts} stops");
    assert!(t.outside.join("secret.txt").exists());
}

#[test]
fn erasure_removes_a_subjects_directory_but_not_a_held_one_and_refuses_escapes() {
    let t = tree();
    let store = FileStore::open(t.root.to_str().unwrap()).unwrap();
    let before = files(&t.root);
    let ids = |v: &str| [("user_id".to_string(), v.to_string())].into();
    let subject = render_subject_path("users/{user_id}/", &ids("42")).unwrap().unwrap();
    let sel = FileSelection {
        directory: "logs".into(),
        subject: vec![subject],
        held: vec!["users/7".into()],
        ..FileSelection::default()
    };
    let out = store.run(&sel, 10, |_, _| true).unwrap();
    assert_eq!(out.files_deleted, 5);
    assert!(!t.root.join("logs/users/42").exists(), "the subject's directory is gone");
    assert!(t.root.join("logs/users").is_dir(), "but not its parent");
    let after = files(&t.root);
    let gone: Vec<_> = before.difference(&after).collect();
    assert!(gone.iter().all(|(p, _)| p.starts_with("logs/users/42")), "{gone:?}");
    // A held subject's erasure changes nothing.
    let held = FileSelection { subject: vec!["users/7".into()], ..sel.clone() };
    assert_eq!(store.run(&held, 10, |_, _| true).unwrap().files_deleted, 0);
    // Identifiers that would climb out are refused before anything happens.
    for bad in ["..", "../..", "a/b", ""] {
        assert!(render_subject_path("users/{user_id}/", &ids(bad)).is_err(), "{bad:?}");
    }
    // A selection that names the whole directory as a subject is refused.
    let whole = FileSelection { subject: vec![PathBuf::new()], ..sel };
    assert!(store.plan(&whole).is_err());
    assert_eq!(files(&t.root), after);
}

/// A directory nothing can be removed from while this lives: immutable
/// (`chattr +i`, which binds root too), or where that is refused (a user
/// other than root), read-only.
struct Unremovable {
    dir: PathBuf,
    immutable: bool,
}

impl Unremovable {
    fn new(dir: &Path) -> Unremovable {
        let immutable = Command::new("chattr").arg("+i").arg(dir).output().is_ok_and(|o| o.status.success());
        if !immutable {
            fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
        }
        Unremovable { dir: dir.to_path_buf(), immutable }
    }
}

impl Drop for Unremovable {
    fn drop(&mut self) {
        if self.immutable {
            let _ = Command::new("chattr").arg("-i").arg(&self.dir).output();
        } else {
            let _ = fs::set_permissions(&self.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755));
        }
    }
}

/// A file the pass cannot remove stops it with an access error naming the
/// Dataset's directory, never the file or the subject's directory it is in
/// (rendered from an identifier, here an address). Once the directory can
/// be written again, the pass run again ends exact.
#[test]
fn a_file_the_pass_cannot_remove_is_reported_without_its_path() {
    let t = tree();
    let subject = t.root.join("logs/users/jane@example.com");
    write(&subject.join("nested/9.json"), 3, 900);
    let before = files(&t.root);
    let store = FileStore::open(t.root.to_str().unwrap()).unwrap();
    let sel = retention(30);
    let locked = Unremovable::new(&subject.join("nested"));
    let err = store.run(&sel, 10, |_, _| true).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, lethe::scrub::ScrubError::Access(_)), "{err:?}");
    assert!(message.contains(&format!("a file or directory in {}", t.root.join("logs").display())), "{message}");
    for personal in ["jane", "example", "9.json", "nested"] {
        assert!(!message.contains(personal), "{message}");
    }
    assert!(subject.join("nested/9.json").exists());
    drop(locked);
    let out = store.run(&sel, 10, |_, _| true).unwrap();
    assert_eq!(out.remaining, 0);
    assert_eq!(files(&t.root), expected_after_retention(&before, 30));
}

#[test]
fn a_dataset_directory_reached_through_a_link_is_refused() {
    let t = tree();
    let store = FileStore::open(t.root.to_str().unwrap()).unwrap();
    let sel = FileSelection { directory: "logs/linked".into(), ..retention(1) };
    let err = store.plan(&sel).unwrap_err().to_string();
    assert!(err.contains("symbolic link"), "{err}");
    assert!(store.run(&sel, 1, |_, _| true).is_err());
    assert!(t.outside.join("dir/old.log").exists());
    let sel = FileSelection { directory: "../outside".into(), ..retention(1) };
    assert!(store.plan(&sel).is_err());
}

#[test]
fn lethe_scrub_runs_a_files_dataset_from_manifests() {
    let t = tree();
    let manifests = tempfile::tempdir().unwrap();
    fs::write(
        manifests.path().join("m.yaml"),
        format!(
            "apiVersion: lethe.dev/v1alpha1\nkind: DataStore\nmetadata: {{name: vol}}\nspec: {{type: filesystem, filesystem: {{root: {}}}}}\n---\napiVersion: lethe.dev/v1alpha1\nkind: Dataset\nmetadata: {{name: logs}}\nspec:\n  storeRef: {{name: vol}}\n  categories: [usage]\n  files: {{directory: logs, nameDatePattern: \"access-{{yyyy}}-{{mm}}-{{dd}}.log\"}}\n  retention: {{keepFor: 180d}}\n",
            t.root.display()
        ),
    )
    .unwrap();
    let before = files(&t.root);
    let scrub = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
            .args(["scrub", "--dataset", "logs", "-f"])
            .arg(manifests.path())
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let dry = scrub(&["--dry-run"]);
    assert_eq!(files(&t.root), before, "a dry run touches nothing");
    let report = scrub(&[]);
    assert_eq!(report["selected"], dry["selected"]);
    assert_eq!(report["recordsDone"], dry["selected"]);
    assert_eq!(report["bytesFreed"], dry["bytesFreed"]);
    assert_eq!(report["remaining"], 0);
    // Without the hold on user 7, their old files go too.
    let mut expected = expected_after_retention(&before, 180);
    expected.retain(|(p, _)| {
        !p.starts_with("logs/users/7") || {
            let j: u64 = p.file_stem().unwrap().to_string_lossy().parse().unwrap();
            j * 100 < 180
        }
    });
    assert_eq!(files(&t.root), expected);
}

/// A files DataStore on `root` (with `extra` store fields), a Dataset of
/// dated logs with a 180-day window, and a hold on user 7.
fn operator_manifest(root: &Path, extra: &str) -> String {
    format!(
        r#"apiVersion: lethe.dev/v1alpha1
kind: DataStore
metadata: {{name: vol}}
spec: {{type: filesystem, filesystem: {{root: {root}{extra}}}}}
---
apiVersion: lethe.dev/v1alpha1
kind: Dataset
metadata: {{name: logs}}
spec:
  storeRef: {{name: vol}}
  categories: [usage]
  files: {{directory: logs, nameDatePattern: "access-{{yyyy}}-{{mm}}-{{dd}}.log", subjectPathTemplate: "users/{{user_id}}/"}}
  retention: {{keepFor: 180d}}
  schedule: {{cron: "0 0 1 1 *"}}
  safety: {{maxDeletePercent: 100}}
---
{}"#,
        hold_on_user("logs", "7"),
        root = root.display()
    )
}

/// The operator scrubs a files Dataset (in-process executor): retention
/// keeps a held subject's directory, and a deletion request removes one
/// subject's directory, with the counts and verification in status.
#[test]
fn the_operator_scrubs_a_files_dataset_and_erases_a_subjects_files() {
    let t = tree();
    let before = files(&t.root);
    let outside_before = files(&t.outside);
    let c = Cluster::start();
    let ns = c.namespace("volumes");
    let _op = Operator::start(&c, &ns, "in-process", "op-files");
    c.apply_text(&operator_manifest(&t.root, ""), &["-n", &ns]);
    c.ok(&["-n", &ns, "wait", "--for=condition=Ready", "datastore/vol", "--timeout=60s"]);
    c.ok(&["-n", &ns, "wait", "--for=condition=LastRunSucceeded", "dataset/logs", "--timeout=90s"]);
    let after = files(&t.root);
    assert_eq!(after, expected_after_retention(&before, 180));
    assert_eq!(files(&t.outside), outside_before);
    let run = c.ok(&["-n", &ns, "get", "scrubruns", "-o", "jsonpath={.items[0].status}"]);
    let run: serde_json::Value = serde_json::from_str(&run).unwrap();
    assert_eq!(run["counts"]["deleted"].as_u64().unwrap() as usize, before.len() - after.len());
    assert_eq!(run["verification"]["remaining"], 0);
    assert!(run["plan"]["heldRecords"].as_i64().unwrap() >= 1, "user 7's old files were held: {run}");

    // A deletion request for user 42 removes their directory, and nothing else.
    assert_eq!(erase_user(&c, &ns, "42"), "Completed");
    assert!(!t.root.join("logs/users/42").exists());
    let gone: Vec<_> = after.difference(&files(&t.root)).cloned().collect();
    assert!(!gone.is_empty() && gone.iter().all(|(p, _)| p.starts_with("logs/users/42")), "{gone:?}");
    // A request for the held user is blocked, their files untouched.
    assert_eq!(erase_user(&c, &ns, "7"), "Blocked");
    assert!(t.root.join("logs/users/7/nested/4.json").exists());
}

/// With the Job executor, a files store's scrub Job mounts the DataStore's
/// PersistentVolumeClaim at the store's root (the emulator runs the Job as a
/// local process, so the root is the same directory) and scrubs it exactly.
#[test]
fn a_scrub_job_mounts_the_stores_volume_claim_at_its_root() {
    let t = tree();
    let before = files(&t.root);
    let c = Cluster::start();
    let ns = c.namespace("volume-jobs");
    let _op = Operator::start(&c, &ns, "job", "op-files-job");
    c.apply_text(&operator_manifest(&t.root, ", persistentVolumeClaim: access-logs"), &["-n", &ns]);
    c.ok(&["-n", &ns, "wait", "--for=condition=LastRunSucceeded", "dataset/logs", "--timeout=90s"]);
    assert_eq!(files(&t.root), expected_after_retention(&before, 180));
    let spec = |path: &str| {
        c.ok(&["-n", &ns, "get", "jobs", "-o", &format!("jsonpath={{.items[0].spec.template.spec{path}}}")])
    };
    assert_eq!(spec(".volumes[0].persistentVolumeClaim.claimName"), "access-logs");
    assert_eq!(spec(".containers[0].volumeMounts[0].name"), spec(".volumes[0].name"));
    assert_eq!(spec(".containers[0].volumeMounts[0].mountPath"), t.root.display().to_string());
    let executor = c.ok(&["-n", &ns, "get", "scrubruns", "-o", "jsonpath={.items[0].status.executor}"]);
    assert_eq!(executor, "job");
}
