//! PostgreSQL retention benchmark: Lethe's batched retention pass against a
//! single unbounded `DELETE` on an identical copy, both measured in the same
//! run, each while a small-transaction load runs on another table. Prints
//! ratios; nothing here is asserted. Run with `make bench`.

#[path = "../tests/common/pg.rs"]
mod pg;
#[path = "../tests/common/watchdog.rs"]
mod watchdog;

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
         CREATE TABLE source (id bigint PRIMARY KEY, user_id int NOT NULL, created_at timestamptz NOT NULL, payload text);
         INSERT INTO source SELECT g, g % 100000, timestamptz '2026-01-01' + ((g::bigint * 7919) % {ROWS} - {ROWS} / 2) * interval '10 seconds', md5(g::text)
           FROM generate_series(1, {ROWS}) g;
         CREATE INDEX ON source (created_at);
         CREATE INDEX ON source (user_id);"
    ))
    .await
    .unwrap();
    let sel = |name: &str| Selection {
        table: Table { schema: None, name: Identifier::new(name).unwrap() },
        older_than: Some((Identifier::new("created_at").unwrap(), cutoff)),
        subject: vec![],
        keep_newer_than: None,
        held: vec![],
        guards: vec![],
    };
    let two = Limits { connections: 2, ..Limits::default() };
    // Rounds on fresh copies: a p99 over well under a second of load moves a
    // lot from one run to the next, so the medians are what is reported.
    let rounds = 3;
    let (mut rates, mut loads, mut batch_p99) = (vec![Vec::new(); 3], vec![Vec::new(); 3], vec![Vec::new(); 2]);
    // The deleting batches alone, the count that follows them, and batch p50.
    let (mut pass_rates, mut verify_ms, mut batch_p50) =
        (vec![Vec::new(); 2], vec![Vec::new(); 2], vec![Vec::new(); 2]);
    let (mut idle_ms, mut single_ms) = (Vec::new(), Vec::new());
    // Lethe's whole run against the single DELETE followed by the same kind
    // of check Lethe makes: one sequential count, in one process, of what the
    // DELETE should have removed (the first read of its dead rows).
    let (mut checked_ms, mut vs_checked) = (Vec::new(), Vec::new());
    // The oldest record left past the cutoff, as a read of its own after the
    // pass: what the verification would add had the count not read it.
    let mut own_oldest_ms = Vec::new();
    for round in 0..rounds {
        for t in ["baseline_copy", "lethe_copy", "lethe_copy2"] {
            db.execute_batch(&format!(
                "DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (LIKE source INCLUDING ALL); INSERT INTO {t} SELECT * FROM source"
            ))
            .await
            .unwrap();
            db.execute_batch(&format!("VACUUM ANALYZE {t}")).await.unwrap();
        }
        // Each side starts from a quiet server: nothing left to write out, no
        // vacuum of the other side's dead rows running under it.
        db.execute_batch("CHECKPOINT").await.unwrap();
        let (_, _, mut idle) = with_load(&opts, tokio::time::sleep(Duration::from_secs(2))).await;
        let idle_p99 = pct(&mut idle, 0.99);
        idle_ms.push(idle_p99.as_secs_f64() * 1000.0);

        let (deleted, single, mut load) = with_load(&opts, async {
            db.client().execute("DELETE FROM baseline_copy WHERE created_at < $1", &[&cutoff]).await.unwrap()
        })
        .await;
        single_ms.push(single.as_secs_f64() * 1000.0);
        let single_rate = deleted as f64 / single.as_secs_f64();
        rates[0].push(single_rate);
        db.execute_batch(
            "BEGIN; SET LOCAL enable_indexscan = off; SET LOCAL enable_indexonlyscan = off;
             SET LOCAL enable_bitmapscan = off; SET LOCAL max_parallel_workers_per_gather = 0",
        )
        .await
        .unwrap();
        let t = Instant::now();
        let left: i64 = db
            .client()
            .query_one("SELECT count(*) FROM baseline_copy WHERE created_at < $1", &[&cutoff])
            .await
            .unwrap()
            .get(0);
        let checked = single + t.elapsed();
        db.execute_batch("COMMIT").await.unwrap();
        assert_eq!(left, 0);
        checked_ms.push(checked.as_secs_f64() * 1000.0);
        loads[0].push(pct(&mut load, 0.99).as_secs_f64() / idle_p99.as_secs_f64());
        for (i, (table, limits)) in [("lethe_copy", Limits::default()), ("lethe_copy2", two.clone())].iter().enumerate()
        {
            db.execute_batch("VACUUM").await.unwrap();
            db.execute_batch("CHECKPOINT").await.unwrap();
            let (outcome, took, mut load) = with_load(&opts, async {
                let start = Instant::now();
                let mut last = start;
                let outcome = db.run(&sel(table), &Action::Delete, limits, 0, |_| last = Instant::now()).await.unwrap();
                (outcome, last - start)
            })
            .await;
            let (outcome, pass) = outcome;
            pass_rates[i].push(outcome.records_done as f64 / pass.as_secs_f64() / single_rate);
            verify_ms[i].push((took - pass).as_secs_f64() * 1000.0);
            assert_eq!(outcome.records_done as u64, deleted, "both removed the same rows");
            rates[i + 1].push(outcome.records_done as f64 / took.as_secs_f64() / single_rate);
            if i == 0 {
                vs_checked.push(checked.as_secs_f64() / took.as_secs_f64());
                let t = Instant::now();
                let oldest = db.extreme(&sel(table), &Identifier::new("created_at").unwrap(), false).await.unwrap();
                own_oldest_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(Some(oldest), outcome.oldest_past_cutoff, "the count read the same");
            }
            loads[i + 1].push(pct(&mut load, 0.99).as_secs_f64() / idle_p99.as_secs_f64());
            let mut b = outcome.batch_durations.clone();
            batch_p99[i].push(pct(&mut b, 0.99).as_secs_f64() * 1000.0);
            batch_p50[i].push(pct(&mut b, 0.5).as_secs_f64() * 1000.0);
        }
        println!(
            "round {}: single DELETE {:.0} ms, load p99 {:.1}x | one connection {:.2}x, load {:.1}x | two connections {:.2}x, load {:.1}x",
            round + 1,
            single_ms[round],
            loads[0][round],
            rates[1][round],
            loads[1][round],
            rates[2][round],
            loads[2][round]
        );
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let spread = |v: &[f64]| {
        let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        format!("{:.2}x ({lo:.2}-{hi:.2})", median(v))
    };
    println!();
    println!("Medians of {rounds} rounds (range in brackets); ratios against the single DELETE of the same round.");
    println!();
    println!(
        "| measure | single DELETE | Lethe, one connection (default) | Lethe, two connections | target for Lethe |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| rows/s | {:.0} ({:.0} ms) | {} | {} | >= 0.8x |",
        median(&rates[0]),
        median(&single_ms),
        spread(&rates[1]),
        spread(&rates[2])
    );
    println!("| rows/s, deleting batches alone | | {} | {} | |", spread(&pass_rates[0]), spread(&pass_rates[1]));
    println!(
        "| rows/s against the single DELETE followed by one sequential count of what it should have removed | {:.0} ms | {} | | |",
        median(&checked_ms),
        spread(&vs_checked)
    );
    println!(
        "| verifying count after the batches | | {:.0} ms | {:.0} ms | |",
        median(&verify_ms[0]),
        median(&verify_ms[1])
    );
    println!(
        "| the oldest record left past the cutoff, read on its own after the pass (the count reads it) | | {:.0} ms | | |",
        median(&own_oldest_ms)
    );
    println!(
        "| batch p50 / p99 | {:.0} ms (one batch) | {:.0} / {:.0} ms | {:.0} / {:.0} ms | p99 <= 250 ms |",
        median(&single_ms),
        median(&batch_p50[0]),
        median(&batch_p99[0]),
        median(&batch_p50[1]),
        median(&batch_p99[1])
    );
    println!(
        "| concurrent load p99 vs idle ({:.2} ms) | {} | {} | {} | <= 1.5x |",
        median(&idle_ms),
        spread(&loads[0]),
        spread(&loads[1]),
        spread(&loads[2])
    );
    let erased = sel("lethe_copy");

    // Subject erasure with an index on the identifier column.
    let t = Instant::now();
    let subjects = 50;
    for u in 0..subjects {
        let sel = Selection {
            table: erased.table.clone(),
            older_than: None,
            subject: vec![(Identifier::new("user_id").unwrap(), vec![(u * 37).to_string()])],
            keep_newer_than: None,
            held: vec![],
            guards: vec![],
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

    // A retention pass keeping every record a wholly held table refers to
    // (a guard), against the same pass with nothing held, on identical
    // copies: the held table with an index on its referring column (each
    // record looked up through it), and without one (joined with each
    // statement's records).
    let refs = ROWS / 4;
    db.execute_batch(&format!(
        "DROP TABLE IF EXISTS lethe_copy, lethe_copy2;
         CREATE TABLE open_copy (LIKE source INCLUDING ALL); INSERT INTO open_copy SELECT * FROM source;
         CREATE TABLE guarded_copy (LIKE source INCLUDING ALL); INSERT INTO guarded_copy SELECT * FROM source;
         CREATE TABLE unindexed_copy (LIKE source INCLUDING ALL); INSERT INTO unindexed_copy SELECT * FROM source;
         CREATE TABLE held_refs (id bigint PRIMARY KEY, source_id bigint);
         INSERT INTO held_refs SELECT g, (g * 104729) % {ROWS} + 1 FROM generate_series(1, {refs}::bigint) g;
         CREATE TABLE unindexed_refs (LIKE held_refs); INSERT INTO unindexed_refs SELECT * FROM held_refs;
         CREATE INDEX ON held_refs (source_id);"
    ))
    .await
    .unwrap();
    db.execute_batch("VACUUM ANALYZE open_copy, guarded_copy, unindexed_copy, held_refs, unindexed_refs")
        .await
        .unwrap();
    let kept: i64 = db
        .client()
        .query_one(
            "SELECT count(DISTINCT r.source_id) FROM held_refs r JOIN source s ON s.id = r.source_id WHERE s.created_at < $1",
            &[&cutoff],
        )
        .await
        .unwrap()
        .get(0);
    let t = Instant::now();
    let open = db.run(&sel("open_copy"), &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
    let open_took = t.elapsed();
    for (copy, refs_table, how) in [
        ("guarded_copy", "held_refs", "with an index on its referring column"),
        ("unindexed_copy", "unindexed_refs", "with no index on its referring column"),
    ] {
        let guarded = Selection {
            guards: vec![lethe::scrub::Guard {
                reason: lethe::scrub::GuardReason::Hold,
                table: Table { schema: None, name: Identifier::new(refs_table).unwrap() },
                columns: vec![Identifier::new("source_id").unwrap()],
                references: vec![Identifier::new("id").unwrap()],
                rows: None,
                lookup: Default::default(),
            }],
            ..sel(copy)
        };
        let t = Instant::now();
        let out = db.run(&guarded, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        let guarded_took = t.elapsed();
        let left: i64 = db
            .client()
            .query_one(&format!("SELECT count(*) FROM {copy} WHERE created_at < $1"), &[&cutoff])
            .await
            .unwrap()
            .get(0);
        assert_eq!((left, out.records_done + kept), (kept, open.records_done), "exactly the referenced records stayed");
        println!(
            "| retention pass keeping what a held table of {refs} rows {how} refers to ({kept} records kept) | {:.0} ms with nothing held | {:.0} ms | {:.2}x the time |",
            open_took.as_secs_f64() * 1000.0,
            guarded_took.as_secs_f64() * 1000.0,
            guarded_took.as_secs_f64() / open_took.as_secs_f64()
        );
    }

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
        guards: vec![],
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
