//! Redis erasure benchmark: Lethe erasing one subject's 100,000 keys among
//! 1,000,000 (by key template), against `redis-cli --scan --pattern ... |
//! xargs redis-cli unlink` on an identical server, both measured in the same
//! run. Prints the ratio; nothing here is asserted. Run with `make bench`.

#[path = "../tests/common/redis.rs"]
mod server;

use std::{process::Command, time::Instant};

use server::RedisServer;

use lethe::{
    api::{DataStoreSpec, DatasetSpec, Identifier},
    scrub::{Action, Limits, Selection, Table, driver::Driver},
};

const KEYS: i64 = 1_000_000;
const SUBJECT_KEYS: i64 = 100_000;

/// A server with one subject (42) owning a tenth of the keys.
fn start() -> RedisServer {
    let server = RedisServer::start();
    let mut con = server.con();
    let mut p = redis::pipe();
    for i in 0..KEYS {
        let user = if i % (KEYS / SUBJECT_KEYS) == 0 { 42 } else { 1000 + i % 997 };
        p.cmd("SET").arg(format!("session:{user}:{i}")).arg("x").ignore();
        if (i + 1) % 20_000 == 0 || i + 1 == KEYS {
            p.query::<()>(&mut con).unwrap();
            p = redis::pipe();
        }
    }
    server
}

fn count(s: &RedisServer, pattern: &str) -> usize {
    let out =
        Command::new("redis-cli").args(["-p", &s.port.to_string(), "--scan", "--pattern", pattern]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn main() {
    let baseline = start();
    assert_eq!(count(&baseline, "session:42:*"), SUBJECT_KEYS as usize);
    let t = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "redis-cli -p {p} --scan --pattern 'session:42:*' | xargs redis-cli -p {p} unlink > /dev/null",
            p = baseline.port
        ))
        .status()
        .unwrap();
    let shell = t.elapsed();
    assert!(status.success());
    assert_eq!(count(&baseline, "session:42:*"), 0);
    drop(baseline);

    let lethe_server = start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store: DataStoreSpec = serde_json::from_value(
        serde_json::json!({"type": "redis", "redis": {"host": "127.0.0.1", "port": lethe_server.port}}),
    )
    .unwrap();
    let ds: DatasetSpec = serde_json::from_value(serde_json::json!({
        "storeRef": {"name": "cache"}, "categories": ["usage"],
        "keys": {"pattern": "session:*", "subjectKeyTemplate": "session:{user_id}:*"},
    }))
    .unwrap();
    let db = rt.block_on(Driver::connect(&store, &Default::default())).unwrap().for_dataset(&ds);
    let ids = [("user_id".to_string(), "42".to_string())].into();
    let pattern = lethe::scrub::redis::render_key_template("session:{user_id}:*", &ids).unwrap().unwrap();
    let sel = Selection {
        table: Table { schema: None, name: Identifier::new("records").unwrap() },
        older_than: None,
        subject: vec![(Identifier::new("key").unwrap(), vec![pattern])],
        keep_newer_than: None,
        held: vec![],
        guards: vec![],
    };
    let limits = Limits { initial_batch: 5_000, ..Limits::default() };
    let t = Instant::now();
    let out = rt.block_on(db.run(&sel, &Action::Delete, &limits, 0, |_| {})).unwrap();
    let lethe_time = t.elapsed();
    assert_eq!(out.records_done, SUBJECT_KEYS);
    assert_eq!(out.remaining, 0);
    assert_eq!(count(&lethe_server, "session:*") as i64, KEYS - SUBJECT_KEYS);

    println!("Redis: erase {SUBJECT_KEYS} keys of one subject among {KEYS}");
    println!("  redis-cli --scan | xargs redis-cli unlink: {:>8.0} ms", shell.as_secs_f64() * 1000.0);
    println!(
        "  Lethe (SCAN MATCH + pipelined UNLINK, verified):  {:>8.0} ms  ({:.2}x the shell pipeline's speed; target >= 3x)",
        lethe_time.as_secs_f64() * 1000.0,
        shell.as_secs_f64() / lethe_time.as_secs_f64()
    );
}
