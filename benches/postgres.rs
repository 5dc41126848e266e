//! PostgreSQL retention benchmark: Lethe's batched retention pass against a
//! single unbounded `DELETE` on an identical copy, both measured in the same
//! run, each while a small-transaction load runs on another table. Prints
//! ratios; nothing here is asserted. Run with `make bench`.

#[path = "../tests/common/pg.rs"]
mod pg;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{TimeZone, Utc};
use lethe::{
    api::Identifier,
    scrub::{Action, Limits, Selection, Table, postgres::Postgres},
};

const ROWS: i64 = 2_000_000;

fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs small transactions on `accounts` until stopped; returns their latencies.
async fn load(opts: lethe::scrub::postgres::ConnectOptions, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let db = Postgres::connect(&opts, &Limits::default()).await.unwrap();
    let stmt = db.client().prepare("UPDATE accounts SET balance = balance + 1 WHERE id = $1").await.unwrap();
    let mut lat = Vec::new();
    let mut i = 0i32;
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        db.client().execute(&stmt, &[&(i % 1000)]).await.unwrap();
        lat.push(t.elapsed());
        i += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    lat
}

async fn with_load<F: std::future::Future<Output = T>, T>(
    opts: &lethe::scrub::postgres::ConnectOptions,
    work: F,
) -> (T, Duration, Vec<Duration>) {
    let stop = Arc::new(AtomicBool::new(false));
    let handle = tokio::spawn(load(opts.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    let out = work.await;
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    (out, took, handle.await.unwrap())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = pg::PgServer::start();
    let opts = server.options();
    let db = Postgres::connect(&opts, &Limits { statement_timeout: Duration::from_secs(600), ..Limits::default() })
        .await
        .unwrap();
    let cutoff = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    println!("PostgreSQL retention benchmark: {ROWS} rows per table, half past the cutoff, index on the time column");
    db.execute_batch(&format!(
        "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
         INSERT INTO accounts SELECT g, 0 FROM generate_series(0, 999) g;
         CREATE TABLE lethe_copy (id bigint PRIMARY KEY, user_id int NOT NULL, created_at timestamptz NOT NULL, payload text);
         INSERT INTO lethe_copy SELECT g, g % 100000, timestamptz '2026-01-01' + ((g::bigint * 7919) % {ROWS} - {ROWS} / 2) * interval '10 seconds', md5(g::text)
           FROM generate_series(1, {ROWS}) g;
         CREATE INDEX ON lethe_copy (created_at);
         CREATE INDEX ON lethe_copy (user_id);
         CREATE TABLE baseline_copy (LIKE lethe_copy INCLUDING ALL);
         INSERT INTO baseline_copy SELECT * FROM lethe_copy;
         CREATE TABLE lethe_copy2 (LIKE lethe_copy INCLUDING ALL);
         INSERT INTO lethe_copy2 SELECT * FROM lethe_copy;"
    ))
    .await
    .unwrap();
    db.execute_batch("VACUUM ANALYZE").await.unwrap();
    // Each side starts from a quiet server: nothing left to write out, no
    // vacuum of the other side's dead rows running under it.
    db.execute_batch("CHECKPOINT").await.unwrap();

    let (_, _, mut idle) = with_load(&opts, tokio::time::sleep(Duration::from_secs(3))).await;
    let idle_p99 = pct(&mut idle, 0.99);

    let (deleted, single, mut single_load) = with_load(&opts, async {
        db.client().execute("DELETE FROM baseline_copy WHERE created_at < $1", &[&cutoff]).await.unwrap()
    })
    .await;
    let single_rate = deleted as f64 / single.as_secs_f64();
    db.execute_batch("VACUUM baseline_copy").await.unwrap();
    db.execute_batch("CHECKPOINT").await.unwrap();

    let sel = Selection {
        table: Table { schema: None, name: Identifier::new("lethe_copy").unwrap() },
        older_than: Some((Identifier::new("created_at").unwrap(), cutoff)),
        subject: vec![],
        keep_newer_than: None,
        held: vec![],
    };
    let (outcome, lethe_took, mut lethe_load) =
        with_load(&opts, async { db.run(&sel, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap() }).await;
    let lethe_rate = outcome.records_done as f64 / lethe_took.as_secs_f64();
    let mut batches = outcome.batch_durations.clone();
    assert_eq!(outcome.records_done as u64, deleted, "both removed the same rows");
    db.execute_batch("VACUUM lethe_copy").await.unwrap();
    db.execute_batch("CHECKPOINT").await.unwrap();

    // The same pass split between two connections (`maxConnectionsPerRun: 2`).
    let sel2 =
        Selection { table: Table { schema: None, name: Identifier::new("lethe_copy2").unwrap() }, ..sel.clone() };
    let two = Limits { connections: 2, ..Limits::default() };
    let (outcome2, took2, mut load2) =
        with_load(&opts, async { db.run(&sel2, &Action::Delete, &two, 0, |_| {}).await.unwrap() }).await;
    let rate2 = outcome2.records_done as f64 / took2.as_secs_f64();
    let mut batches2 = outcome2.batch_durations.clone();
    assert_eq!(outcome2.records_done as u64, deleted, "both removed the same rows");

    println!();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p99 = |v: &mut Vec<Duration>| pct(v, 0.99);
    println!(
        "| measure | single DELETE | Lethe, one connection (default) | Lethe, two connections | target for Lethe |"
    );
    println!("|---|---|---|---|---|");
    println!("| rows deleted | {deleted} | {} | {} | |", outcome.records_done, outcome2.records_done);
    println!(
        "| rows/s | {single_rate:.0} | {lethe_rate:.0} ({:.2}x) | {rate2:.0} ({:.2}x) | >= 0.8x |",
        lethe_rate / single_rate,
        rate2 / single_rate
    );
    println!(
        "| batches, p50 / p99 | 1, {:.0} ms | {}, {:.0} / {:.0} ms | {}, {:.0} / {:.0} ms | p99 <= 250 ms |",
        ms(single),
        outcome.batches,
        ms(pct(&mut batches, 0.5)),
        ms(pct(&mut batches, 0.99)),
        outcome2.batches,
        ms(pct(&mut batches2, 0.5)),
        ms(pct(&mut batches2, 0.99))
    );
    println!(
        "| concurrent load p99 (idle {:.2} ms) | {:.2} ms ({:.1}x) | {:.2} ms ({:.1}x) | {:.2} ms ({:.1}x) | <= 1.5x |",
        ms(idle_p99),
        ms(p99(&mut single_load)),
        p99(&mut single_load).as_secs_f64() / idle_p99.as_secs_f64(),
        ms(p99(&mut lethe_load)),
        p99(&mut lethe_load).as_secs_f64() / idle_p99.as_secs_f64(),
        ms(p99(&mut load2)),
        p99(&mut load2).as_secs_f64() / idle_p99.as_secs_f64()
    );

    // Subject erasure with an index on the identifier column.
    let t = Instant::now();
    let subjects = 50;
    for u in 0..subjects {
        let sel = Selection {
            table: sel.table.clone(),
            older_than: None,
            subject: vec![(Identifier::new("user_id").unwrap(), vec![(u * 37).to_string()])],
            keep_newer_than: None,
            held: vec![],
        };
        db.run(&sel, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
    }
    println!();
    println!("| measure | row by row | Lethe | ratio / target |");
    println!("|---|---|---|---|");
    println!(
        "| subject erasure, 1M-row table, indexed identifier | | {:.1} ms per subject | |",
        t.elapsed().as_secs_f64() * 1000.0 / subjects as f64
    );

    // The same data partitioned by month: whole partitions dropped vs row by row.
    let mut parts = String::new();
    for name in ["part_rows", "part_drop"] {
        parts.push_str(&format!("CREATE TABLE {name} (id bigint, user_id int, created_at timestamptz NOT NULL) PARTITION BY RANGE (created_at);"));
        for m in 0..24 {
            let (y, mo) = (2025 + m / 12, m % 12 + 1);
            let (ny, nmo) = if mo == 12 { (y + 1, 1) } else { (y, mo + 1) };
            parts.push_str(&format!("CREATE TABLE {name}_{y}_{mo:02} PARTITION OF {name} FOR VALUES FROM ('{y}-{mo:02}-01') TO ('{ny}-{nmo:02}-01');"));
        }
        parts.push_str(&format!(
            "INSERT INTO {name} SELECT g, g % 100000, timestamptz '2025-01-01' + ((g * 7919) % {ROWS}) * interval '31 seconds' FROM generate_series(1, {ROWS}::bigint) g;"
        ));
    }
    db.execute_batch(&parts).await.unwrap();
    db.execute_batch("VACUUM ANALYZE").await.unwrap();
    let part_sel = |name: &str| Selection {
        table: Table { schema: None, name: Identifier::new(name).unwrap() },
        older_than: Some((Identifier::new("created_at").unwrap(), cutoff)),
        subject: vec![],
        keep_newer_than: None,
        held: vec![],
    };
    let t = Instant::now();
    let rows_out = db
        .run(
            &part_sel("part_rows"),
            &Action::Delete,
            &Limits { partitions: lethe::scrub::PartitionMode::Rows, ..Limits::default() },
            0,
            |_| {},
        )
        .await
        .unwrap();
    let by_rows = t.elapsed();
    let t = Instant::now();
    let drop_out = db.run(&part_sel("part_drop"), &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
    let by_drop = t.elapsed();
    assert_eq!(rows_out.records_done, drop_out.records_done, "both removed the same rows");
    println!(
        "| partition drop vs row delete ({} rows in {} monthly partitions) | {:.0} ms row by row | {:.0} ms dropping | {:.0}x (target >= 50x) |",
        drop_out.records_done,
        drop_out.partitions.len(),
        by_rows.as_secs_f64() * 1000.0,
        by_drop.as_secs_f64() * 1000.0,
        by_rows.as_secs_f64() / by_drop.as_secs_f64()
    );
}
