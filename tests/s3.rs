//! The S3 driver against a real S3-compatible server on loopback (moto's,
//! with versioning and Object Lock): exactly the expired, unheld objects
//! go, by LastModified or by the date in the key; an erasure removes every
//! version and delete marker of a subject's objects; what an Object Lock
//! protects is reported with its date and never forced; a pass stopped
//! anywhere and run again ends in the same state; and the operator scrubs
//! an S3 Dataset end to end.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_s3::types::{
    BucketVersioningStatus, ObjectLockLegalHold, ObjectLockLegalHoldStatus, ObjectLockRetention,
    ObjectLockRetentionMode, VersioningConfiguration,
};
use chrono::Utc;
use common::{
    Cluster,
    operator::{Operator, erase_user, hold_on_user},
    s3::{ACCESS_KEY, S3Server, SECRET_KEY, Seed},
};
use lethe::{
    api::Identifier,
    scrub::{Action, Limits, Selection, Table, driver::Driver, s3::render_key_template},
};

const DAY: i64 = 86_400;

fn id(s: &str) -> Identifier {
    Identifier::new(s).unwrap()
}

fn limits() -> Limits {
    Limits { initial_batch: 1000, max_batch: 2000, ..Limits::default() }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// Age in days of the i-th object `populate` makes.
fn age(i: i64) -> i64 {
    (i * 37) % 400
}

/// `users/<u>/<i>.json` for n objects (u = i mod 50), aged `age(i)` days,
/// plus old objects outside the Dataset's prefix.
fn populate(s3: &S3Server, bucket: &str, n: i64) {
    let now = Utc::now().timestamp();
    let mut seeds: Vec<Seed> =
        (0..n).map(|i| Seed::new(format!("users/{}/{i}.json", i % 50), now - age(i) * DAY - 3600)).collect();
    seeds.extend((0..100).map(|i| Seed::new(format!("exports/{i}.csv"), now - 1000 * DAY)));
    s3.seed(bucket, &seeds);
}

fn create_bucket(s3: &S3Server, rt: &tokio::runtime::Runtime, bucket: &str, versioned: bool, locked: bool) {
    let c = s3.client();
    rt.block_on(async {
        c.create_bucket().bucket(bucket).object_lock_enabled_for_bucket(locked).send().await.unwrap();
        if versioned && !locked {
            let v = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
            c.put_bucket_versioning().bucket(bucket).versioning_configuration(v).send().await.unwrap();
        }
    });
}

/// Every (key, version id, is a delete marker) in a bucket.
fn versions(s3: &S3Server, rt: &tokio::runtime::Runtime, bucket: &str) -> BTreeSet<(String, String, bool)> {
    let c = s3.client();
    rt.block_on(async {
        let mut out = BTreeSet::new();
        let (mut km, mut vm) = (None, None);
        loop {
            let r = c
                .list_object_versions()
                .bucket(bucket)
                .set_key_marker(km.clone())
                .set_version_id_marker(vm.clone())
                .send()
                .await
                .unwrap();
            for v in r.versions() {
                out.insert((v.key().unwrap().to_string(), v.version_id().unwrap_or("null").to_string(), false));
            }
            for m in r.delete_markers() {
                out.insert((m.key().unwrap().to_string(), m.version_id().unwrap_or("null").to_string(), true));
            }
            if r.is_truncated() != Some(true) {
                return out;
            }
            km = r.next_key_marker().map(str::to_string);
            vm = r.next_version_id_marker().map(str::to_string);
        }
    })
}

/// Current keys of a bucket.
fn keys(s3: &S3Server, rt: &tokio::runtime::Runtime, bucket: &str) -> BTreeSet<String> {
    let c = s3.client();
    rt.block_on(async {
        let mut out = BTreeSet::new();
        let mut token = None;
        loop {
            let r = c.list_objects_v2().bucket(bucket).set_continuation_token(token).send().await.unwrap();
            out.extend(r.contents().iter().map(|o| o.key().unwrap().to_string()));
            if r.is_truncated() != Some(true) {
                return out;
            }
            token = r.next_continuation_token().map(str::to_string);
        }
    })
}

fn driver(s3: &S3Server, rt: &tokio::runtime::Runtime, objects: serde_json::Value) -> Driver {
    let store: lethe::api::DataStoreSpec = serde_json::from_value(serde_json::json!({
        "type": "s3", "s3": {"endpoint": s3.endpoint(), "forcePathStyle": true},
        "secretRef": {"name": "s3-credentials"},
    }))
    .unwrap();
    let ds: lethe::api::DatasetSpec = serde_json::from_value(serde_json::json!({
        "storeRef": {"name": "objects"}, "categories": ["usage"], "objects": objects,
        "subjectFields": {"user_id": "user_id"},
    }))
    .unwrap();
    let creds = lethe::scrub::driver::Credentials {
        username: Some(ACCESS_KEY.into()),
        password: Some(SECRET_KEY.into()),
        ca_pem: None,
    };
    rt.block_on(Driver::connect(&store, &creds)).unwrap().for_dataset(&ds)
}

fn users(bucket: &str) -> serde_json::Value {
    serde_json::json!({"bucket": bucket, "prefix": "users/", "subjectKeyTemplate": "users/{user_id}/"})
}

fn subject(user: &str) -> String {
    render_key_template("users/{user_id}/", &[("user_id".to_string(), user.to_string())].into()).unwrap().unwrap()
}

fn retention(days: i64) -> Selection {
    Selection {
        table: Table { schema: None, name: id("objects") },
        older_than: Some((id("modified"), Utc::now() - chrono::Duration::seconds(days * DAY))),
        subject: vec![],
        keep_newer_than: None,
        // User 7 is held, by key.
        held: vec![(id("key"), vec![subject("7")])],
        guards: vec![],
    }
}

/// What a retention pass must leave, from how `populate` aged each key.
fn expected_after_retention(before: &BTreeSet<String>, days: i64) -> BTreeSet<String> {
    before
        .iter()
        .filter(|k| {
            let Some(rest) = k.strip_prefix("users/") else { return true };
            if rest.starts_with("7/") {
                return true;
            }
            let i: i64 = rest.split('/').nth(1).unwrap().trim_end_matches(".json").parse().unwrap();
            age(i) < days
        })
        .cloned()
        .collect()
}

#[test]
fn retention_deletes_exactly_the_expired_unheld_objects() {
    let s3 = S3Server::start();
    let rt = rt();
    create_bucket(&s3, &rt, "logs", false, false);
    populate(&s3, "logs", 20_000);
    let db = driver(&s3, &rt, users("logs"));
    let before = keys(&s3, &rt, "logs");
    let sel = retention(180);
    let plan = rt.block_on(db.plan(&sel)).unwrap();
    assert_eq!(keys(&s3, &rt, "logs"), before, "planning touches nothing");
    assert_eq!(plan.total, 20_000, "objects outside the prefix are not the Dataset's");
    let out = rt.block_on(db.run(&sel, &Action::Delete, &limits(), 0, |_| {})).unwrap();
    let after = keys(&s3, &rt, "logs");
    assert_eq!(after, expected_after_retention(&before, 180));
    assert_eq!(out.records_done as usize, before.len() - after.len());
    assert_eq!(plan.selected, out.records_done);
    assert_eq!(out.remaining, 0);
    assert!(plan.held > 0, "user 7's old objects are held");
    assert_eq!(after.iter().filter(|k| k.starts_with("exports/")).count(), 100, "outside the prefix: untouched");

    // Minimum retention on top: nothing younger than 300 days goes.
    create_bucket(&s3, &rt, "logs2", false, false);
    populate(&s3, "logs2", 3_000);
    let db2 = driver(&s3, &rt, users("logs2"));
    let before2 = keys(&s3, &rt, "logs2");
    let sel2 = Selection {
        keep_newer_than: Some((id("modified"), Utc::now() - chrono::Duration::seconds(300 * DAY))),
        ..retention(100)
    };
    let plan2 = rt.block_on(db2.plan(&sel2)).unwrap();
    assert!(plan2.under_minimum > 0);
    rt.block_on(db2.run(&sel2, &Action::Delete, &limits(), 0, |_| {})).unwrap();
    assert_eq!(keys(&s3, &rt, "logs2"), expected_after_retention(&before2, 300));
    // Objects cannot be anonymized.
    let anon = Action::Anonymize { rules: vec![], salt: String::new() };
    assert!(rt.block_on(db.run(&sel, &anon, &limits(), 0, |_| {})).is_err());
}

#[test]
fn a_date_in_the_key_is_the_time_and_a_day_is_kept_until_it_ends() {
    let s3 = S3Server::start();
    let rt = rt();
    create_bucket(&s3, &rt, "daily", false, false);
    // Written just now, dated by their keys: LastModified must not matter.
    let now = Utc::now();
    let day = |d: i64| (now - chrono::Duration::days(d)).format("%Y/%m/%d").to_string();
    let mut seeds = Vec::new();
    for d in 0..60 {
        for n in 0..5 {
            seeds.push(Seed::new(format!("logs/{}/app-{n}.log", day(d)), now.timestamp()));
        }
    }
    seeds.push(Seed::new("logs/latest.log", now.timestamp() - 1000 * DAY));
    s3.seed("daily", &seeds);
    let db = driver(
        &s3,
        &rt,
        serde_json::json!({"bucket": "daily", "prefix": "logs/", "keyDatePattern": "logs/{yyyy}/{mm}/{dd}/"}),
    );
    // The cutoff falls inside the day 30 days ago: that day's objects may
    // hold records newer than the cutoff, so they stay.
    let cutoff = now - chrono::Duration::days(30);
    let sel = Selection { older_than: Some((id("modified"), cutoff)), held: vec![], ..retention(0) };
    let out = rt.block_on(db.run(&sel, &Action::Delete, &limits(), 0, |_| {})).unwrap();
    let after = keys(&s3, &rt, "daily");
    let expected: BTreeSet<String> = (0..=30)
        .flat_map(|d| (0..5).map(move |n| (d, n)))
        .map(|(d, n)| format!("logs/{}/app-{n}.log", day(d)))
        .chain(["logs/latest.log".to_string()])
        .collect();
    assert_eq!(after, expected, "days wholly before the cutoff go; a key without a date never expires by it");
    assert_eq!(out.records_done, 29 * 5);
}

#[test]
fn an_erasure_removes_every_version_and_delete_marker_of_the_subject_only() {
    let s3 = S3Server::start();
    let rt = rt();
    create_bucket(&s3, &rt, "profiles", true, false);
    let now = Utc::now().timestamp();
    // Three versions of each object, a year apart, for users 0..10.
    for v in 0..3 {
        let seeds: Vec<Seed> = (0..10)
            .flat_map(|u| (0..20).map(move |n| (u, n)))
            .map(|(u, n)| Seed::new(format!("users/{u}/doc-{n}.json"), now - (2 - v) * 365 * DAY - DAY))
            .collect();
        s3.seed("profiles", &seeds);
    }
    // User 42 deleted one object through the API: a delete marker on top.
    let c = s3.client();
    s3.seed("profiles", &[Seed::new("users/42/photo.jpg", now - 10 * DAY)]);
    rt.block_on(c.delete_object().bucket("profiles").key("users/42/photo.jpg").send()).unwrap();
    let before = versions(&s3, &rt, "profiles");
    assert!(before.iter().any(|(k, _, m)| k == "users/42/photo.jpg" && *m), "a delete marker exists");
    let db = driver(&s3, &rt, users("profiles"));
    let sel =
        Selection { older_than: None, subject: vec![(id("key"), vec![subject("3")])], held: vec![], ..retention(0) };
    // Only the subject's prefix is listed, but the brake compares with the whole Dataset.
    assert_eq!(rt.block_on(db.plan(&sel)).unwrap().total, 601);
    let out = rt.block_on(db.run(&sel, &Action::Delete, &limits(), 0, |_| {})).unwrap();
    assert_eq!(out.records_done, 60, "20 objects × 3 versions");
    let after = versions(&s3, &rt, "profiles");
    let gone: BTreeSet<_> = before.difference(&after).cloned().collect();
    assert!(gone.iter().all(|(k, _, _)| k.starts_with("users/3/")) && gone.len() == 60);
    assert!(!after.iter().any(|(k, _, _)| k.starts_with("users/3/")), "no version is left behind");

    // User 42: the data version and the delete marker both go.
    let sel42 = Selection { subject: vec![(id("key"), vec![subject("42")])], ..sel.clone() };
    let out = rt.block_on(db.run(&sel42, &Action::Delete, &limits(), 0, |_| {})).unwrap();
    assert_eq!(out.records_done, 1);
    assert!(!versions(&s3, &rt, "profiles").iter().any(|(k, _, _)| k.starts_with("users/42/")), "nor a marker");

    // A held subject's erasure changes nothing.
    let held = Selection {
        subject: vec![(id("key"), vec![subject("5")])],
        held: vec![(id("key"), vec![subject("5")])],
        ..sel.clone()
    };
    let snapshot = versions(&s3, &rt, "profiles");
    assert_eq!(rt.block_on(db.run(&held, &Action::Delete, &limits(), 0, |_| {})).unwrap().records_done, 0);
    assert_eq!(versions(&s3, &rt, "profiles"), snapshot);

    // Retention in a versioned bucket: the expired noncurrent versions go,
    // the current ones (one day old) stay, held user 7 keeps everything.
    let out = rt.block_on(db.run(&retention(180), &Action::Delete, &limits(), 0, |_| {})).unwrap();
    let after = versions(&s3, &rt, "profiles");
    assert_eq!(out.records_done, 8 * 20 * 2, "two old versions of each object of the 8 unheld users left");
    for u in [0, 1, 2, 4, 5, 6, 8, 9] {
        let n = after.iter().filter(|(k, _, _)| k.starts_with(&format!("users/{u}/"))).count();
        assert_eq!(n, 20, "user {u}: only the current versions stay");
    }
    assert_eq!(after.iter().filter(|(k, _, _)| k.starts_with("users/7/")).count(), 60, "held: every version");
}

#[test]
fn objects_under_object_lock_are_reported_with_their_date_and_never_forced() {
    let s3 = S3Server::start();
    let rt = rt();
    create_bucket(&s3, &rt, "vault", true, true);
    let now = Utc::now().timestamp();
    let seeds: Vec<Seed> = (0..30).map(|i| Seed::new(format!("users/{}/r-{i}.pdf", i % 3), now - 400 * DAY)).collect();
    let ids = s3.seed("vault", &seeds);
    let c = s3.client();
    let until = aws_sdk_s3::primitives::DateTime::from_secs(2_000_000_000);
    rt.block_on(async {
        for i in 0..5 {
            let r = ObjectLockRetention::builder()
                .mode(ObjectLockRetentionMode::Governance)
                .retain_until_date(until)
                .build();
            c.put_object_retention()
                .bucket("vault")
                .key(&seeds[i].key)
                .version_id(&ids[i])
                .retention(r)
                .send()
                .await
                .unwrap();
        }
        for i in 5..7 {
            let h = ObjectLockLegalHold::builder().status(ObjectLockLegalHoldStatus::On).build();
            c.put_object_legal_hold()
                .bucket("vault")
                .key(&seeds[i].key)
                .version_id(&ids[i])
                .legal_hold(h)
                .send()
                .await
                .unwrap();
        }
    });
    let db = driver(&s3, &rt, users("vault"));
    let sel = Selection { held: vec![], ..retention(180) };
    let out = rt.block_on(db.run(&sel, &Action::Delete, &limits(), 0, |_| {})).unwrap();
    assert_eq!(out.records_done, 23);
    assert_eq!(out.remaining, 7, "locked objects still match and are counted");
    let locked: BTreeMap<(Option<i64>, bool), i64> =
        out.locked.iter().map(|l| ((l.until.map(|t| t.timestamp()), l.legal_hold), l.objects)).collect();
    assert_eq!(locked, BTreeMap::from([((Some(2_000_000_000), false), 5), ((None, true), 2)]));
    let left: BTreeSet<String> = keys(&s3, &rt, "vault");
    let expected: BTreeSet<String> = seeds[..7].iter().map(|s| s.key.clone()).collect();
    assert_eq!(left, expected, "exactly the locked objects remain");
    let reason = lethe::api::LockedObjects::describe(
        &out.locked.iter().map(lethe::api::LockedObjects::from).collect::<Vec<_>>(),
    )
    .unwrap();
    assert!(
        reason.contains("5 under S3 Object Lock until 2033-05-18") && reason.contains("2 under an S3 legal hold"),
        "{reason}"
    );
}

#[test]
fn a_pass_killed_at_random_points_and_run_again_ends_exact() {
    let s3 = S3Server::start();
    let rt = rt();
    // 6,000 objects, about 2,950 of them expired and unheld: three batches of 1,000.
    let fresh = |bucket: &str| {
        create_bucket(&s3, &rt, bucket, false, false);
        populate(&s3, bucket, 6_000);
    };
    fresh("reference");
    let before = keys(&s3, &rt, "reference");
    let expected = expected_after_retention(&before, 200);
    let batch = Limits { initial_batch: 1000, max_batch: 1000, ..Limits::default() };
    // Each kill on a fresh copy: once the first batch is done, a
    // pseudo-random 0-20 ms on (the second batch's DeleteObjects in flight,
    // which the server still completes), the pass's future is dropped, as a
    // crash would. Then it runs again.
    let mut seed = 0x9e3779b97f4a7c15u64;
    let (mut aborts, mut midway) = (0, 0);
    for attempt in 0..10 {
        common::next_random(&mut seed);
        let delay = std::time::Duration::from_millis(seed % 20);
        let bucket = format!("killed-{attempt}");
        fresh(&bucket);
        let db = driver(&s3, &rt, users(&bucket));
        let sel = retention(200);
        let killed = rt.block_on(async {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let run = db.run(&sel, &Action::Delete, &batch, 0, move |_| {
                let _ = tx.send(());
            });
            tokio::select! {
                biased;
                out = run => {
                    out.unwrap();
                    false
                }
                _ = async {
                    rx.recv().await;
                    tokio::time::sleep(delay).await;
                } => true,
            }
        });
        aborts += i32::from(killed);
        let partial = keys(&s3, &rt, &bucket);
        assert!(
            partial.is_superset(&expected),
            "a killed pass deleted an object that must stay: newer than the cutoff, held, or outside the prefix"
        );
        midway += i32::from(partial != before && partial != expected);
        let out = rt.block_on(db.run(&retention(200), &Action::Delete, &limits(), 0, |_| {})).unwrap();
        assert_eq!(out.remaining, 0);
        assert_eq!(keys(&s3, &rt, &bucket), expected, "exact end state after a kill {delay:?} after the first batch");
    }
    assert_eq!(aborts, 10, "every pass was killed before its end");
    eprintln!("kills with part of the pass done: {midway}");
    assert!(midway >= 5, "most kills fell with the pass half done ({midway} of 10)");
}

#[test]
fn a_subject_is_found_by_object_metadata_too() {
    let s3 = S3Server::start();
    let rt = rt();
    create_bucket(&s3, &rt, "uploads", false, false);
    let now = Utc::now().timestamp();
    let seeds: Vec<Seed> = (0..300)
        .map(|i| Seed {
            key: format!("users/upload-{i}.bin"),
            modified: now - DAY,
            metadata: vec![("user_id".into(), (i % 10).to_string())],
        })
        .collect();
    s3.seed("uploads", &seeds);
    let db = driver(&s3, &rt, serde_json::json!({"bucket": "uploads", "prefix": "users/"}));
    // Metadata names are case-insensitive: a hold by `User_Id` keeps user 3's uploads.
    let held = Selection {
        older_than: Some((id("modified"), Utc::now())),
        subject: vec![],
        held: vec![(id("User_Id"), vec!["3".into()])],
        ..retention(0)
    };
    assert_eq!(rt.block_on(db.plan(&held)).unwrap().held, 30);
    let sel =
        Selection { older_than: None, subject: vec![(id("user_id"), vec!["4".into()])], held: vec![], ..retention(0) };
    assert_eq!(rt.block_on(db.plan(&sel)).unwrap().selected, 30);
    let out = rt.block_on(db.run(&sel, &Action::Delete, &limits(), 0, |_| {})).unwrap();
    assert_eq!((out.records_done, out.remaining), (30, 0));
    let left = keys(&s3, &rt, "uploads");
    let expected: BTreeSet<String> =
        (0..300).filter(|i| i % 10 != 4).map(|i| format!("users/upload-{i}.bin")).collect();
    assert_eq!(left, expected);
}

#[test]
fn the_operator_scrubs_an_s3_dataset_and_erases_a_subject() {
    let s3 = S3Server::start();
    let rt = rt();
    create_bucket(&s3, &rt, "app-logs", true, false);
    populate(&s3, "app-logs", 3_000);
    let before = keys(&s3, &rt, "app-logs");
    let c = Cluster::start();
    let ns = c.namespace("objects");
    let _op = Operator::start(&c, &ns, "in-process", "op-s3");
    let manifest = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: s3-credentials}}
stringData: {{username: {ACCESS_KEY}, password: {SECRET_KEY}}}
---
apiVersion: lethe.dev/v1alpha1
kind: DataStore
metadata: {{name: objects}}
spec:
  type: s3
  s3: {{endpoint: "{endpoint}", forcePathStyle: true}}
  secretRef: {{name: s3-credentials}}
---
apiVersion: lethe.dev/v1alpha1
kind: Dataset
metadata: {{name: app-logs}}
spec:
  storeRef: {{name: objects}}
  categories: [usage]
  objects: {{bucket: app-logs, prefix: "users/", subjectKeyTemplate: "users/{{user_id}}/"}}
  retention: {{keepFor: 180d}}
  schedule: {{cron: "0 0 1 1 *"}}
  safety: {{maxDeletePercent: 100}}
"#,
        endpoint = s3.endpoint()
    );
    c.apply_text(&format!("{manifest}---\n{}", hold_on_user("app-logs", "7")), &["-n", &ns]);
    c.ok(&["-n", &ns, "wait", "--for=condition=Ready", "datastore/objects", "--timeout=60s"]);
    c.ok(&["-n", &ns, "wait", "--for=condition=LastRunSucceeded", "dataset/app-logs", "--timeout=90s"]);
    let after = keys(&s3, &rt, "app-logs");
    assert_eq!(after, expected_after_retention(&before, 180));
    let run = c.ok(&["-n", &ns, "get", "scrubruns", "-o", "jsonpath={.items[0].status}"]);
    let run: serde_json::Value = serde_json::from_str(&run).unwrap();
    assert_eq!(run["counts"]["deleted"].as_u64().unwrap() as usize, before.len() - after.len());
    assert_eq!(run["verification"]["remaining"], 0);

    assert_eq!(erase_user(&c, &ns, "42"), "Completed");
    assert_eq!(erase_user(&c, &ns, "3"), "Completed");
    let now = versions(&s3, &rt, "app-logs");
    assert!(!now.iter().any(|(k, _, _)| k.starts_with("users/3/")), "every version of user 3's objects is gone");
    let gone: Vec<String> = after.difference(&keys(&s3, &rt, "app-logs")).cloned().collect();
    assert!(
        !gone.is_empty() && gone.iter().all(|k| k.starts_with("users/3/") || k.starts_with("users/42/")),
        "{gone:?}"
    );
    assert_eq!(erase_user(&c, &ns, "7"), "Blocked");
    assert!(now.iter().filter(|(k, _, _)| k.starts_with("users/7/")).count() > 0, "the held subject's objects stay");
}
