//! MariaDB retention benchmark: Lethe's batched retention pass against a
//! single unbounded `DELETE` on an identical copy, both measured in the same
//! run, with and without an index on the time column. Without one the
//! server can find the rows only by reading the whole table, and Lethe
//! walks the primary key; the same run also times plain `DELETE ... LIMIT n`
//! batches, which read the table again from the start each time. Prints
//! ratios; nothing here is asserted. Run with `make bench`.

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

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let server = mariadb::MariaDb::start();
    let limits = Limits { statement_timeout: Duration::from_secs(600), ..Limits::default() };
    let db = Mysql::connect(&server.options(), &limits).await.unwrap();
    let cutoff = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    println!("MariaDB retention benchmark: {ROWS} rows per table, half past the cutoff, not in time order");
    println!();
    println!("| time column | single DELETE | Lethe (default) | ratio | `DELETE ... LIMIT n` batches only | ratio |");
    println!("|---|---|---|---|---|---|");
    for indexed in [false, true] {
        let index = if indexed { ", KEY (logged_at)" } else { "" };
        for t in ["baseline", "lethe", "limited"] {
            // Row times scattered over the ids, so the rows to delete lie all
            // through the table, as they do in a table written over time and
            // then updated.
            db.execute_batch(&format!(
                "DROP TABLE IF EXISTS {t};
                 CREATE TABLE {t} (id bigint PRIMARY KEY, user_id int NOT NULL, logged_at datetime NOT NULL, payload varchar(40){index});
                 INSERT INTO {t} SELECT seq, seq % 100000, TIMESTAMPADD(SECOND, CAST((seq * 7919) % {ROWS} AS SIGNED) - {ROWS} / 2, '2026-01-01'), MD5(seq)
                   FROM seq_1_to_{ROWS};
                 ANALYZE TABLE {t};"
            ))
            .await
            .unwrap();
        }
        // Each side starts with the server's purge of old row versions done.
        let settle = "SET GLOBAL innodb_max_purge_lag_wait = 0";
        db.execute_batch(settle).await.unwrap();
        let start = Instant::now();
        db.execute_batch(&format!("DELETE FROM baseline WHERE logged_at < '{}'", cutoff.format("%Y-%m-%d %H:%M:%S")))
            .await
            .unwrap();
        let single = start.elapsed();
        let sel = |name: &str| Selection {
            table: Table { schema: None, name: Identifier::new(name).unwrap() },
            older_than: Some((Identifier::new("logged_at").unwrap(), cutoff)),
            subject: vec![],
            keep_newer_than: None,
            held: vec![],
            guards: vec![],
        };
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
}
