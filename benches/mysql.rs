//! MariaDB retention benchmark: Lethe's batched retention pass against a
//! single unbounded `DELETE` on an identical copy, both measured in the same
//! run, with and without an index on the time column. Without one the
//! server can find the rows only by reading the whole table, and Lethe
//! walks the primary key; the same run also times plain `DELETE ... LIMIT n`
//! batches, which read the table again from the start each time. Then a
//! pass keeping what a held table refers to, with and without an index on
//! its referring column, against the same pass with nothing held. Prints
//! ratios; only the end states are asserted. Run with `make bench`.

#[path = "../tests/common/mariadb.rs"]
mod mariadb;
#[path = "../tests/common/watchdog.rs"]
mod watchdog;

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use lethe::{
    api::Identifier,
    scrub::{Action, Limits, Selection, Table, mysql::Mysql},
};

const ROWS: i64 = 1_000_000;

/// Makes table `t` anew, with its rows' times scattered over the ids, so
/// that the rows to delete lie all through the table, as they do in a
/// table written over time and then updated; `index` declares any index
/// besides the primary key.
fn table_of(t: &str, index: &str) -> String {
    format!(
        "DROP TABLE IF EXISTS {t};
         CREATE TABLE {t} (id bigint PRIMARY KEY, user_id int NOT NULL, logged_at datetime NOT NULL, payload varchar(40){index});
         INSERT INTO {t} SELECT seq, seq % 100000, TIMESTAMPADD(SECOND, CAST((seq * 7919) % {ROWS} AS SIGNED) - {ROWS} / 2, '2026-01-01'), MD5(seq)
           FROM seq_1_to_{ROWS};
         ANALYZE TABLE {t};"
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let server = mariadb::MariaDb::start();
    let limits = Limits { statement_timeout: Duration::from_secs(600), ..Limits::default() };
    let db = Mysql::connect(&server.options(), &limits).await.unwrap();
    let cutoff = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    // Each side starts with the server's purge of old row versions done.
    let settle = "SET GLOBAL innodb_max_purge_lag_wait = 0";
    let sel = |name: &str| Selection {
        table: Table { schema: None, name: Identifier::new(name).unwrap() },
        older_than: Some((Identifier::new("logged_at").unwrap(), cutoff)),
        subject: vec![],
        keep_newer_than: None,
        held: vec![],
        guards: vec![],
    };
    println!("MariaDB retention benchmark: {ROWS} rows per table, half past the cutoff, not in time order");
    println!();
    println!("| time column | single DELETE | Lethe (default) | ratio | `DELETE ... LIMIT n` batches only | ratio |");
    println!("|---|---|---|---|---|---|");
    for indexed in [false, true] {
        let index = if indexed { ", KEY (logged_at)" } else { "" };
        for t in ["baseline", "lethe", "limited"] {
            db.execute_batch(&table_of(t, index)).await.unwrap();
        }
        db.execute_batch(settle).await.unwrap();
        let start = Instant::now();
        db.execute_batch(&format!("DELETE FROM baseline WHERE logged_at < '{}'", cutoff.format("%Y-%m-%d %H:%M:%S")))
            .await
            .unwrap();
        let single = start.elapsed();
        let mut took = Vec::new();
        for (t, limits) in
            [("lethe", Limits::default()), ("limited", Limits { block_pass_above: f64::INFINITY, ..Limits::default() })]
        {
            db.execute_batch(settle).await.unwrap();
            let start = Instant::now();
            let out = db.run(&sel(t), &Action::Delete, &limits, 0, |_| {}).await.unwrap();
            took.push(start.elapsed());
            assert_eq!((out.records_done, out.remaining), (ROWS / 2, 0), "every expired row deleted");
        }
        let ratio = |d: Duration| single.as_secs_f64() / d.as_secs_f64();
        println!(
            "| {} | {:.0} ms | {:.0} ms | {:.2}x | {:.0} ms | {:.2}x |",
            if indexed { "indexed" } else { "no index" },
            single.as_secs_f64() * 1000.0,
            took[0].as_secs_f64() * 1000.0,
            ratio(took[0]),
            took[1].as_secs_f64() * 1000.0,
            ratio(took[1]),
        );
    }

    // A retention pass keeping every record a wholly held table refers to
    // (a guard), against the same pass with nothing held, on identical
    // copies: the held table with an index on its referring column (each
    // record looked up through it), and without one (read once a
    // statement).
    let refs = ROWS / 4;
    let mut setup = String::from("DROP TABLE IF EXISTS held_refs, unindexed_refs;");
    for t in ["open_copy", "guarded_copy", "unindexed_copy"] {
        setup += &table_of(t, ", KEY (logged_at)");
    }
    setup += &format!(
        "CREATE TABLE held_refs (id bigint PRIMARY KEY, lethe_id bigint, KEY (lethe_id));
         INSERT INTO held_refs SELECT seq, (seq * 104729) % {ROWS} + 1 FROM seq_1_to_{refs};
         CREATE TABLE unindexed_refs (id bigint PRIMARY KEY, lethe_id bigint);
         INSERT INTO unindexed_refs SELECT * FROM held_refs;
         ANALYZE TABLE held_refs, unindexed_refs;"
    );
    db.execute_batch(&setup).await.unwrap();
    let past = cutoff.format("%Y-%m-%d %H:%M:%S");
    let kept = db
        .query_i64(&format!(
            "SELECT COUNT(DISTINCT r.lethe_id) FROM held_refs r JOIN open_copy s ON s.id = r.lethe_id WHERE s.logged_at < '{past}'"
        ))
        .await
        .unwrap()[0];
    println!();
    println!("| measure | nothing held | Lethe | ratio |");
    println!("|---|---|---|---|");
    db.execute_batch(settle).await.unwrap();
    let start = Instant::now();
    let open = db.run(&sel("open_copy"), &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
    let open_took = start.elapsed();
    assert_eq!((open.records_done, open.remaining), (ROWS / 2, 0), "every expired row deleted");
    for (copy, refs_table, how) in [
        ("guarded_copy", "held_refs", "with an index on its referring column"),
        ("unindexed_copy", "unindexed_refs", "with no index on its referring column"),
    ] {
        let guarded = Selection {
            guards: vec![lethe::scrub::Guard {
                reason: lethe::scrub::GuardReason::Hold,
                table: Table { schema: None, name: Identifier::new(refs_table).unwrap() },
                columns: vec![Identifier::new("lethe_id").unwrap()],
                references: vec![Identifier::new("id").unwrap()],
                rows: None,
                lookup: Default::default(),
            }],
            ..sel(copy)
        };
        db.execute_batch(settle).await.unwrap();
        let start = Instant::now();
        let out = db.run(&guarded, &Action::Delete, &Limits::default(), 0, |_| {}).await.unwrap();
        let took = start.elapsed();
        let left = db.query_i64(&format!("SELECT COUNT(*) FROM {copy} WHERE logged_at < '{past}'")).await.unwrap()[0];
        assert_eq!((left, out.records_done + kept), (kept, open.records_done), "exactly the referenced records stayed");
        println!(
            "| retention pass keeping what a held table of {refs} rows {how} refers to ({kept} records kept) | {:.0} ms | {:.0} ms | {:.2}x the time |",
            open_took.as_secs_f64() * 1000.0,
            took.as_secs_f64() * 1000.0,
            took.as_secs_f64() / open_took.as_secs_f64()
        );
    }
}
