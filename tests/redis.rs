//! The Redis driver against a real redis-server on loopback: exactly the
//! expired, unheld keys go; a subject's keys by template and by hash field;
//! a pass killed at random points and run again ends exact; and the
//! operator scrubs a Redis Dataset end to end.

mod common;

use std::collections::BTreeSet;

use chrono::Utc;
use common::{
    Cluster,
    operator::{Operator, erase_user, hold_on_user},
    redis::RedisServer,
};
use lethe::{
    api::Identifier,
    scrub::{Action, Limits, Selection, Table, driver::Driver, redis::render_key_template},
};

const DAY: i64 = 86_400;

/// Sessions as hashes (`session:<user>:<n>`, created `age` days ago), a
/// cache of plain strings, and keys of another dataset.
fn populate(r: &RedisServer, n: i64) {
    let mut con = r.con();
    let now = Utc::now().timestamp();
    let mut p = redis::pipe();
    for i in 0..n {
        let user = i % 50;
        let age = (i * 37) % 400;
        p.cmd("HSET")
            .arg(format!("session:{user}:{i}"))
            .arg("user_id")
            .arg(user.to_string())
            .arg("created_at")
            .arg((now - age * DAY - 3600).to_string())
            .ignore();
        if i % 5000 == 4999 {
            p.query::<()>(&mut con).unwrap();
            p = redis::pipe();
        }
    }
    // A session without a time: never expires. Another type under the pattern.
    p.cmd("HSET").arg("session:1:untimed").arg("user_id").arg("1").ignore();
    p.cmd("SET").arg("session:1:flag").arg("x").ignore();
    for i in 0..100 {
        p.cmd("SET").arg(format!("cache:{i}")).arg("x").ignore();
    }
    p.query::<()>(&mut con).unwrap();
}

fn keys(r: &RedisServer) -> BTreeSet<String> {
    let mut con = r.con();
    let mut out = BTreeSet::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) =
            redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(1000).query(&mut con).unwrap();
        out.extend(batch);
        cursor = next;
        if cursor == 0 {
            return out;
        }
    }
}

/// Age in days of a session key, from how `populate` made it.
fn age_of(key: &str) -> Option<i64> {
    let i: i64 = key.rsplit(':').next()?.parse().ok()?;
    Some((i * 37) % 400)
}

fn id(s: &str) -> Identifier {
    Identifier::new(s).unwrap()
}

fn limits() -> Limits {
    Limits { initial_batch: 500, max_batch: 500, ..Limits::default() }
}

fn driver(r: &RedisServer, rt: &tokio::runtime::Runtime) -> Driver {
    let store: lethe::api::DataStoreSpec =
        serde_json::from_value(serde_json::json!({"type": "redis", "redis": {"host": "127.0.0.1", "port": r.port}}))
            .unwrap();
    let ds: lethe::api::DatasetSpec = serde_json::from_value(serde_json::json!({
        "storeRef": {"name": "cache"}, "categories": ["usage"],
        "keys": {"pattern": "session:*", "subjectKeyTemplate": "session:{user_id}:*"},
        "timestamps": {"created": "created_at"}, "subjectFields": {"user_id": "user_id"},
    }))
    .unwrap();
    rt.block_on(Driver::connect(&store, &Default::default())).unwrap().for_dataset(&ds)
}

fn retention(days: i64) -> Selection {
    Selection {
        table: Table { schema: None, name: id("records") },
        older_than: Some((id("created_at"), Utc::now() - chrono::Duration::seconds(days * DAY))),
        subject: vec![],
        keep_newer_than: None,
        // User 7 is held, by key pattern.
        held: vec![(id("key"), vec!["session:7:*".into()])],
        guards: vec![],
    }
}

fn expected_after_retention(before: &BTreeSet<String>, days: i64) -> BTreeSet<String> {
    before
        .iter()
        .filter(|k| !k.starts_with("session:") || k.starts_with("session:7:") || age_of(k).is_none_or(|a| a < days))
        .cloned()
        .collect()
}

#[test]
fn retention_unlinks_exactly_the_expired_unheld_keys() {
    let r = RedisServer::start();
    populate(&r, 20_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = driver(&r, &rt);
    let before = keys(&r);
    let sel = retention(180);
    let plan = rt.block_on(db.plan(&sel)).unwrap();
    assert_eq!(keys(&r), before, "planning touches nothing");
    let out = rt.block_on(db.run(&sel, &Action::Delete, &limits(), 0, |_| {})).unwrap();
    let after = keys(&r);
    assert_eq!(after, expected_after_retention(&before, 180));
    assert_eq!(out.records_done as usize, before.len() - after.len());
    assert_eq!(plan.selected, out.records_done);
    assert_eq!(out.remaining, 0);
    assert!(plan.held > 0, "user 7's old sessions are held");
    assert!(after.contains("session:1:untimed") && after.contains("session:1:flag"), "no time, never expires");
    assert!(after.iter().filter(|k| k.starts_with("cache:")).count() == 100, "other datasets untouched");
    // Minimum retention on top: keep everything younger than 300 days.
    let r2 = RedisServer::start();
    populate(&r2, 5_000);
    let db2 = driver(&r2, &rt);
    let before2 = keys(&r2);
    let sel2 = Selection {
        keep_newer_than: Some((id("created_at"), Utc::now() - chrono::Duration::seconds(300 * DAY))),
        ..retention(100)
    };
    rt.block_on(db2.run(&sel2, &Action::Delete, &limits(), 0, |_| {})).unwrap();
    assert_eq!(keys(&r2), expected_after_retention(&before2, 300));
    // Keys cannot be anonymized.
    let anon = Action::Anonymize { rules: vec![], salt: String::new() };
    assert!(rt.block_on(db.run(&sel, &anon, &limits(), 0, |_| {})).is_err());
}

#[test]
fn a_pass_killed_at_random_points_and_run_again_ends_exact() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = RedisServer::start();
    populate(&r, 100_000);
    let before = keys(&r);
    let expected = expected_after_retention(&before, 200);
    let db = driver(&r, &rt);
    let small = Limits { initial_batch: 200, max_batch: 200, ..Limits::default() };
    // Kill the pass at pseudo-random moments: its future is dropped wherever
    // it is, between batches or with an UNLINK in flight, as a crash would.
    let mut seed = 0x2545f4914f6cdd1du64;
    let (mut aborts, mut least, mut last) = (0, 1_000, before.clone());
    for _ in 0..12 {
        common::next_random(&mut seed);
        let after = std::time::Duration::from_micros(least + seed % 40_000);
        let sel = retention(200);
        match rt.block_on(async { tokio::time::timeout(after, db.run(&sel, &Action::Delete, &small, 0, |_| {})).await })
        {
            Err(_) => aborts += 1,
            Ok(out) => {
                out.unwrap();
            }
        }
        let partial = keys(&r);
        assert!(
            partial.is_superset(&expected),
            "a killed pass removed a key that must stay: newer than the cutoff, held, or outside the Dataset"
        );
        // Killed before its first batch: on a busy machine that takes
        // longer, so the next passes live longer.
        if partial == last {
            least = (least * 2).min(500_000);
        }
        last = partial;
    }
    assert!(aborts >= 10, "at least ten kills ({aborts})");
    let partial = keys(&r);
    assert!(partial != before && partial != expected, "the kills left a pass half done");
    let out = rt.block_on(db.run(&retention(200), &Action::Delete, &limits(), 0, |_| {})).unwrap();
    assert_eq!(out.remaining, 0);
    assert_eq!(keys(&r), expected, "exact end state after {aborts} kills");
}

#[test]
fn erasure_by_key_template_and_by_hash_field_but_not_a_held_subject() {
    let r = RedisServer::start();
    populate(&r, 2_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = driver(&r, &rt);
    let before = keys(&r);
    let ids = |v: &str| [("user_id".to_string(), v.to_string())].into();
    let pattern = render_key_template("session:{user_id}:*", &ids("42")).unwrap().unwrap();
    let sel = Selection {
        table: Table { schema: None, name: id("records") },
        older_than: None,
        subject: vec![(id("key"), vec![pattern])],
        keep_newer_than: None,
        held: vec![],
        guards: vec![],
    };
    // Only the subject's keys are scanned, but the brake compares with the whole Dataset.
    let plan = rt.block_on(db.plan(&sel)).unwrap();
    assert_eq!(plan.total, before.iter().filter(|k| k.starts_with("session:")).count() as i64);
    assert!(plan.selected > 0 && plan.selected < 100, "{plan:?}");
    let out = rt.block_on(db.run(&sel, &Action::Delete, &limits(), 0, |_| {})).unwrap();
    let after = keys(&r);
    let gone: BTreeSet<_> = before.difference(&after).cloned().collect();
    assert_eq!(gone.len() as i64, out.records_done);
    assert!(!gone.is_empty() && gone.iter().all(|k| k.starts_with("session:42:")), "{gone:?}");
    // By hash field: every session whose user_id is 9, whatever its key.
    let mut con = r.con();
    let _: () = redis::cmd("HSET").arg("session:moved:1").arg("user_id").arg("9").query(&mut con).unwrap();
    let by_field = Selection { subject: vec![(id("user_id"), vec!["9".into()])], ..sel.clone() };
    rt.block_on(db.run(&by_field, &Action::Delete, &limits(), 0, |_| {})).unwrap();
    let now = keys(&r);
    assert!(!now.contains("session:moved:1") && !now.iter().any(|k| k.starts_with("session:9:")));
    // A held subject's erasure changes nothing.
    let held = Selection {
        subject: vec![(id("key"), vec!["session:7:*".into()])],
        held: vec![(id("user_id"), vec!["7".into()])],
        ..sel.clone()
    };
    let out = rt.block_on(db.run(&held, &Action::Delete, &limits(), 0, |_| {})).unwrap();
    assert_eq!(out.records_done, 0);
    assert_eq!(keys(&r), now);
    // An identifier cannot widen the pattern to other subjects.
    let wide = render_key_template("session:{user_id}:*", &ids("*")).unwrap().unwrap();
    let sel = Selection { subject: vec![(id("key"), vec![wide])], ..sel };
    assert_eq!(rt.block_on(db.run(&sel, &Action::Delete, &limits(), 0, |_| {})).unwrap().records_done, 0);
    assert_eq!(keys(&r), now);
}

#[test]
fn the_operator_scrubs_a_redis_dataset_and_erases_a_subject() {
    let r = RedisServer::start();
    populate(&r, 3_000);
    let before = keys(&r);
    let c = Cluster::start();
    let ns = c.namespace("sessions");
    let _op = Operator::start(&c, &ns, "in-process", "op-redis");
    let manifest = format!(
        r#"apiVersion: lethe.dev/v1alpha1
kind: DataStore
metadata: {{name: cache}}
spec: {{type: redis, redis: {{host: 127.0.0.1, port: {port}}}}}
---
apiVersion: lethe.dev/v1alpha1
kind: Dataset
metadata: {{name: sessions}}
spec:
  storeRef: {{name: cache}}
  categories: [usage]
  keys: {{pattern: "session:*", subjectKeyTemplate: "session:{{user_id}}:*"}}
  timestamps: {{created: created_at}}
  subjectFields: {{user_id: user_id}}
  retention: {{keepFor: 180d}}
  schedule: {{cron: "0 0 1 1 *"}}
  safety: {{maxDeletePercent: 100}}
"#,
        port = r.port
    );
    c.apply_text(&format!("{manifest}---\n{}", hold_on_user("sessions", "7")), &["-n", &ns]);
    c.ok(&["-n", &ns, "wait", "--for=condition=Ready", "datastore/cache", "--timeout=60s"]);
    let version = c.ok(&["-n", &ns, "get", "datastore/cache", "-o", "jsonpath={.status.serverVersion}"]);
    assert!(version.starts_with("Redis 7"), "{version}");
    c.ok(&["-n", &ns, "wait", "--for=condition=LastRunSucceeded", "dataset/sessions", "--timeout=90s"]);
    let after = keys(&r);
    assert_eq!(after, expected_after_retention(&before, 180));
    let run = c.ok(&["-n", &ns, "get", "scrubruns", "-o", "jsonpath={.items[0].status}"]);
    let run: serde_json::Value = serde_json::from_str(&run).unwrap();
    assert_eq!(run["counts"]["deleted"].as_u64().unwrap() as usize, before.len() - after.len());
    assert_eq!(run["verification"]["remaining"], 0);

    assert_eq!(erase_user(&c, &ns, "42"), "Completed");
    let now = keys(&r);
    assert!(!now.iter().any(|k| k.starts_with("session:42:")));
    let gone: Vec<_> = after.difference(&now).collect();
    assert!(!gone.is_empty() && gone.iter().all(|k| k.starts_with("session:42:")), "{gone:?}");
    assert_eq!(erase_user(&c, &ns, "7"), "Blocked");
    assert_eq!(keys(&r), now, "the held subject's keys stay");
}

fn driver_for(r: &RedisServer, rt: &tokio::runtime::Runtime, keys: serde_json::Value) -> Driver {
    let store: lethe::api::DataStoreSpec =
        serde_json::from_value(serde_json::json!({"type": "redis", "redis": {"host": "127.0.0.1", "port": r.port}}))
            .unwrap();
    let ds: lethe::api::DatasetSpec = serde_json::from_value(serde_json::json!({
        "storeRef": {"name": "cache"}, "categories": ["usage"], "keys": keys,
    }))
    .unwrap();
    rt.block_on(Driver::connect(&store, &Default::default())).unwrap().for_dataset(&ds)
}

fn zcard(con: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("ZCARD").arg(key).query(con).unwrap()
}

#[test]
fn sorted_sets_are_trimmed_by_score_and_a_subject_leaves_every_set() {
    let r = RedisServer::start();
    let mut con = r.con();
    let now = Utc::now().timestamp();
    // activity:<u>: 100 events each, scored by when they happened.
    for u in 0..20 {
        let mut p = redis::pipe();
        for i in 0..100i64 {
            p.cmd("ZADD")
                .arg(format!("activity:{u}"))
                .arg(now - age_of(&format!("x:{i}")).unwrap() * DAY)
                .arg(format!("e{i}"))
                .ignore();
        }
        p.query::<()>(&mut con).unwrap();
    }
    let young = (0..100i64).filter(|i| age_of(&format!("x:{i}")).unwrap() < 180).count() as i64;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = driver_for(&r, &rt, serde_json::json!({"pattern": "activity:*"}));
    let sel = Selection {
        table: Table { schema: None, name: id("records") },
        older_than: Some((id("score"), Utc::now() - chrono::Duration::seconds(180 * DAY))),
        subject: vec![],
        keep_newer_than: None,
        held: vec![(id("key"), vec!["activity:7".into()])],
        guards: vec![],
    };
    let plan = rt.block_on(db.plan(&sel)).unwrap();
    assert_eq!((plan.total, plan.selected, plan.held), (2000, 19 * (100 - young), 100 - young), "{plan:?}");
    let out = rt.block_on(db.run(&sel, &Action::Delete, &limits(), 0, |_| {})).unwrap();
    assert_eq!((out.records_done, out.remaining), (19 * (100 - young), 0));
    for u in 0..20 {
        let expected = if u == 7 { 100 } else { young };
        assert_eq!(zcard(&mut con, &format!("activity:{u}")), expected, "activity:{u}");
    }
    // Minimum retention: with a 300-day minimum, a 100-day window trims only past 300 days.
    let keep = (0..100i64).filter(|i| age_of(&format!("x:{i}")).unwrap() < 300).count() as i64;
    let sel2 = Selection {
        older_than: Some((id("score"), Utc::now() - chrono::Duration::seconds(100 * DAY))),
        keep_newer_than: Some((id("score"), Utc::now() - chrono::Duration::seconds(300 * DAY))),
        held: vec![],
        ..sel.clone()
    };
    rt.block_on(db.run(&sel2, &Action::Delete, &limits(), 0, |_| {})).unwrap();
    assert_eq!(zcard(&mut con, "activity:7"), keep, "the hold is gone: the minimum still keeps the young");

    // A subject's members leave every set and sorted set; a held member stays.
    let _: () = redis::cmd("SADD").arg("online").arg(&["1", "42", "7"]).query(&mut con).unwrap();
    let _: () = redis::cmd("ZADD").arg("leaders").arg(&["5", "42", "6", "7", "7", "9"]).query(&mut con).unwrap();
    let _: () = redis::cmd("SET").arg("42").arg("not a member").query(&mut con).unwrap();
    let db = driver_for(&r, &rt, serde_json::json!({"pattern": "*"}));
    let erase = Selection {
        older_than: None,
        subject: vec![(id("member"), vec!["42".into()])],
        keep_newer_than: None,
        held: vec![],
        ..sel.clone()
    };
    let out = rt.block_on(db.run(&erase, &Action::Delete, &limits(), 0, |_| {})).unwrap();
    assert_eq!((out.records_done, out.remaining), (2, 0));
    let online: BTreeSet<String> = redis::cmd("SMEMBERS").arg("online").query(&mut con).unwrap();
    assert_eq!(online, BTreeSet::from(["1".to_string(), "7".to_string()]));
    let leaders: Vec<String> = redis::cmd("ZRANGE").arg("leaders").arg(0).arg(-1).query(&mut con).unwrap();
    assert_eq!(leaders, ["7", "9"]);
    assert!(keys(&r).contains("42"), "a key named like the member is not a member");
    // Trimming by score around a held member.
    let now_s = now.to_string();
    let _: () =
        redis::cmd("ZADD").arg("visits").arg(&["100", "7", "100", "8", now_s.as_str(), "9"]).query(&mut con).unwrap();
    let db = driver_for(&r, &rt, serde_json::json!({"pattern": "visits"}));
    let trim = Selection { held: vec![(id("member"), vec!["7".into()])], ..sel };
    let out = rt.block_on(db.run(&trim, &Action::Delete, &limits(), 0, |_| {})).unwrap();
    assert_eq!(out.records_done, 1);
    let visits: Vec<String> = redis::cmd("ZRANGE").arg("visits").arg(0).arg(-1).query(&mut con).unwrap();
    assert_eq!(visits, ["7", "9"]);
}

#[test]
fn keys_without_a_ttl_get_the_maximum_but_never_a_held_subjects() {
    let r = RedisServer::start();
    populate(&r, 1_000);
    let mut con = r.con();
    let _: () = redis::cmd("SET").arg("session:3:short").arg("x").arg("EX").arg(100).query(&mut con).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = driver_for(&r, &rt, serde_json::json!({"pattern": "session:*", "maxTtl": "30d"}));
    let sel = retention(180);
    let before = keys(&r);
    let out = rt.block_on(db.run(&sel, &Action::Delete, &limits(), 0, |_| {})).unwrap();
    let after = keys(&r);
    let ttl = |con: &mut redis::Connection, k: &str| -> i64 { redis::cmd("TTL").arg(k).query(con).unwrap() };
    let mut given = 0;
    for k in &after {
        let t = ttl(&mut con, k);
        if k.starts_with("session:7:") {
            assert_eq!(t, -1, "{k}: a held subject's key must not expire");
        } else if k == "session:3:short" {
            assert!((0..=100).contains(&t), "{k}: an existing TTL is kept ({t})");
        } else if k.starts_with("session:") {
            assert!((30 * DAY - 60..=30 * DAY).contains(&t), "{k}: {t}");
            given += 1;
        } else {
            assert_eq!(t, -1, "{k}: outside the Dataset");
        }
    }
    assert!(given > 0);
    assert_eq!(out.expiries_set, given);
    assert_eq!(before.len() - after.len(), out.records_done as usize);
    // Under a minimum retention a TTL could cut it short: none is given.
    let r2 = RedisServer::start();
    populate(&r2, 200);
    let db2 = driver_for(&r2, &rt, serde_json::json!({"pattern": "session:*", "maxTtl": "1d"}));
    let sel2 = Selection {
        keep_newer_than: Some((id("created_at"), Utc::now() - chrono::Duration::seconds(300 * DAY))),
        ..retention(100)
    };
    let out = rt.block_on(db2.run(&sel2, &Action::Delete, &limits(), 0, |_| {})).unwrap();
    assert_eq!(out.expiries_set, 0);
    let mut con2 = r2.con();
    assert!(keys(&r2).iter().all(|k| ttl(&mut con2, k) == -1));
}

#[test]
fn a_million_keys_retention_and_erasure_end_exact() {
    // 100,000 session hashes (aged as `populate` ages them) among 900,000 other keys.
    let r = RedisServer::start();
    let mut con = r.con();
    let mut p = redis::pipe();
    for i in 0..900_000i64 {
        p.cmd("SET").arg(format!("page:{i}")).arg("x").ignore();
        if i % 50_000 == 49_999 {
            p.query::<()>(&mut con).unwrap();
            p = redis::pipe();
        }
    }
    populate(&r, 100_000);
    let before = keys(&r);
    assert_eq!(before.len(), 1_000_000 + 102);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = driver(&r, &rt);
    let big = Limits { initial_batch: 5_000, max_batch: 10_000, ..Limits::default() };
    let out = rt.block_on(db.run(&retention(180), &Action::Delete, &big, 0, |_| {})).unwrap();
    let after = keys(&r);
    assert_eq!(after, expected_after_retention(&before, 180));
    assert_eq!(out.records_done as usize, before.len() - after.len());
    // One subject's sessions among the million keys, by template.
    let ids = [("user_id".to_string(), "42".to_string())].into();
    let pattern = render_key_template("session:{user_id}:*", &ids).unwrap().unwrap();
    let sel = Selection { older_than: None, subject: vec![(id("key"), vec![pattern])], held: vec![], ..retention(0) };
    let out = rt.block_on(db.run(&sel, &Action::Delete, &big, 0, |_| {})).unwrap();
    let last = keys(&r);
    let expected: BTreeSet<String> = after.iter().filter(|k| !k.starts_with("session:42:")).cloned().collect();
    assert_eq!(last, expected);
    assert_eq!(out.records_done as usize, after.len() - last.len());
}
