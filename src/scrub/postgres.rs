//! The PostgreSQL driver.
//!
//! Each batch is one statement in its own transaction. A large selection
//! (by the planner's estimate) is deleted in consecutive ranges of the
//! table's blocks, read in physical order as one scan would; a small one
//! in bounded sets of rows found through whatever index fits:
//!
//! ```sql
//! DELETE FROM t WHERE ctid >= '(a,0)' AND ctid < '(b,0)' AND <selection>
//! DELETE FROM t WHERE ctid = ANY(ARRAY(SELECT ctid FROM t WHERE <selection> LIMIT n))
//!                 AND <selection>
//! ```
//!
//! The selection is part of every statement that changes data, and
//! PostgreSQL re-checks it on the row version it actually deletes, so a row
//! changed concurrently (its time moved past the cutoff, its subject put on
//! hold) is skipped, never deleted. Parameter types are inferred by the
//! server from the columns and the values converted to them, so identifier
//! and time columns keep their indexes.

use std::time::Duration;

use tokio_postgres::{
    Client, NoTls, Statement,
    config::SslMode,
    error::SqlState,
    types::{Kind, ToSql, Type},
};

use super::{
    Action, Counts, Limits, Lookup, Outcome, PartitionMode, Progress, ScrubError, Selection,
    sql::{self, Dialect, Param, Params},
};
use crate::api::{AnonymizeStrategy, Identifier, TlsMode, UnixTimeUnit};

pub use super::{ConnectOptions, Probe};

/// A partition name as `regclass` prints it: plain or double-quoted parts.
fn partition_name_ok(name: &str) -> bool {
    let part = |p: &str| {
        (p.len() > 2 && p.starts_with('"') && p.ends_with('"') && !p[1..p.len() - 1].replace("\"\"", "").contains('"'))
            || (!p.is_empty()
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
                && !p.starts_with(|c: char| c.is_ascii_digit()))
    };
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() <= 2 && parts.iter().all(|p| part(p))
}

/// Batches of rows found by the selection (through an index where one
/// fits): `LIMIT n` of them, re-checked on delete/update.
struct Limited<'a> {
    client: &'a Client,
    stmt: Statement,
    params: Vec<Param>,
    /// The statement is an anonymization returning (records changed,
    /// records that still do not read as anonymized afterwards).
    rechecked: bool,
    most_records: i64,
}

impl super::Counting for Postgres {
    async fn count(&self, sel: &Selection) -> Result<i64, ScrubError> {
        Postgres::count(self, sel).await
    }

    async fn total(&self, table: &super::Table) -> Result<i64, ScrubError> {
        self.count_where(table, "true", &[]).await
    }
}

impl super::Indexes for Postgres {
    /// A valid index, of a kind that finds equal values, which covers
    /// every row (no condition).
    async fn leads_an_index(&self, g: &super::Guard) -> Result<bool, ScrubError> {
        let columns: Vec<&str> = g.columns.iter().map(Identifier::as_str).collect();
        Ok(self
            .client
            .query_one(
                "SELECT EXISTS (SELECT FROM pg_index i
                                  JOIN pg_class c ON c.oid = i.indexrelid
                                  JOIN pg_am a ON a.oid = c.relam
                                  JOIN pg_attribute t ON t.attrelid = i.indrelid AND t.attnum = i.indkey[0]
                                 WHERE i.indrelid = to_regclass($1) AND i.indisvalid AND i.indpred IS NULL
                                   AND a.amname IN ('btree', 'hash') AND t.attname = ANY($2))",
                &[&Self::qualified(&g.table), &columns],
            )
            .await
            .map_err(|e| classify(e, "referencing indexes"))?
            .get(0))
    }
}

impl super::BatchSource for Limited<'_> {
    fn sizes(&self, limits: &Limits) -> (i64, i64, i64) {
        (limits.initial_batch, limits.min_batch, limits.max_batch)
    }

    async fn batch(&mut self, size: i64) -> Result<Option<i64>, ScrubError> {
        let bound = bind(&self.stmt, &self.params, &[size])?;
        let n = if self.rechecked {
            let row = self.client.query_one(&self.stmt, &as_refs(&bound)).await.map_err(|e| classify(e, "batch"))?;
            let (n, unfinished): (i64, i64) = (row.get(0), row.get(1));
            if unfinished > 0 {
                // The next batch would select them again, and so on forever.
                return Err(super::not_anonymized(unfinished, n));
            }
            n
        } else {
            self.client.execute(&self.stmt, &as_refs(&bound)).await.map_err(|e| classify(e, "batch"))? as i64
        };
        Ok((n > 0).then_some(n))
    }

    fn most_records(&self) -> Option<i64> {
        Some(self.most_records)
    }
}

/// Tables smaller than this (8 MiB at the default block size) are counted
/// in one statement, whatever the plan.
const CHUNKED_COUNT_FROM_BLOCKS: i64 = 1024;

/// The most blocks one statement of a count reads.
const COUNT_CHUNK_BLOCKS: i64 = 1024;

/// One connection's share of a block pass: consecutive ranges of the
/// table's blocks, read in physical order as a single scan would, each range
/// its own statement. The last share is open-ended, for rows added past the
/// end meanwhile.
struct BlockShare<'a> {
    client: &'a Client,
    delete: Statement,
    /// The first block of a range holding a record the selection matches.
    first_selected: Statement,
    /// Records the planner expects a block to hold for the selection.
    density: f64,
    target: std::time::Duration,
    /// The most blocks the next delete may cover: what the last range that
    /// deleted anything says fits in the target time, were the next blocks
    /// as full of selected records as the planner expects.
    most_blocks: i64,
    /// Whether the last range held nothing to delete.
    after_empty: bool,
    /// The blocks the last batch covered (set by every batch before the
    /// loop asks for it).
    used: i64,
    most_records: i64,
    /// What the selection matches in a range (with `count_params`), and
    /// the oldest record past the cutoff there where the selection has one.
    count: Statement,
    count_params: Vec<Param>,
    /// The selection's parameters, then the range's two bounds.
    params: Vec<Param>,
    first_block: i64,
    next_block: i64,
    end_block: i64,
    open_end: bool,
}

impl BlockShare<'_> {
    /// Sets the range parameters to blocks `[from, to)`; past the share's
    /// end when it is the last.
    fn range(&mut self, from: i64, to: i64) {
        set_range(&mut self.params, from, to, self.end_block, self.open_end);
    }

    /// The share's blocks, for the count after the pass; with `oldest`,
    /// the oldest record past the cutoff too.
    fn counted(&self, oldest: Option<TimeReader>) -> BlockCount<'_> {
        BlockCount {
            client: self.client,
            stmt: self.count.clone(),
            params: self.count_params.clone(),
            first_block: self.first_block,
            end_block: self.end_block,
            open_end: self.open_end,
            oldest,
            oldest_found: None,
        }
    }
}

/// Sets the last two of `params` to the row ids bounding blocks
/// `[from, to)`, as text; the upper bound past every block when `to`
/// reaches an open `end`.
fn set_range(params: &mut [Param], from: i64, to: i64, end: i64, open_end: bool) {
    let to = if to >= end && open_end { i64::from(u32::MAX) } else { to };
    let i = params.len() - 2;
    params[i] = Param::Text(format!("({from},0)"));
    params[i + 1] = Param::Text(format!("({to},0)"));
}

/// The rows of the blocks between two row ids, the parameters `from` and
/// `to` (bound as text, see [`set_range`]).
fn block_range(from: &str, to: &str) -> String {
    format!("ctid >= CAST({from} AS text)::tid AND ctid < CAST({to} AS text)::tid")
}

/// What the planner expects a predicate to match.
struct Estimate {
    /// Its share of the table's records.
    share: f64,
    /// Its records.
    rows: f64,
    /// The table's records.
    total: f64,
    /// Whether its plan reads the whole table.
    whole: bool,
}

/// Whether a statement was cancelled by the session's statement timeout.
fn timed_out(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::QUERY_CANCELED)
        && e.as_db_error().is_some_and(|d| d.message().contains("statement timeout"))
}

/// What a selection matches in a range of a table's blocks, read from the
/// table rather than an index (right after a pass the index still points
/// at every row just deleted, each a visit to the table), a statement per
/// chunk of blocks. The chunks are sized to a fraction of the statement
/// timeout, so a table of any size is counted without one statement
/// running out of time, and read from the last block back to the first:
/// after a pass the most recently deleted blocks are still in the server's
/// buffers, and reading them first keeps them from being evicted by the
/// older ones before they are read. Run inside [`CountSnapshot`], every
/// chunk sees the same snapshot, as one statement would.
struct BlockCount<'a> {
    client: &'a Client,
    /// `count(*)` of the selection between two row ids.
    stmt: Statement,
    /// The selection's parameters, then the range's two bounds.
    params: Vec<Param>,
    first_block: i64,
    end_block: i64,
    /// The range goes on past `end_block`, for rows added past the end.
    open_end: bool,
    /// Where the statement also reads the earliest value of a time column
    /// (its second column): how, and what [`Self::count`] found.
    oldest: Option<TimeReader>,
    oldest_found: Option<chrono::DateTime<chrono::Utc>>,
}

impl BlockCount<'_> {
    async fn count(&mut self, limits: &Limits) -> Result<i64, ScrubError> {
        let oldest = self.oldest.clone();
        let (total, found) = self
            .fold(limits, (0, None), |(total, found), row| {
                let found = match &oldest {
                    Some(time) => super::extreme_of(found, time.read(row)?, false),
                    None => found,
                };
                Ok((total + row.get::<_, i64>(0), found))
            })
            .await?;
        self.oldest_found = found;
        Ok(total)
    }

    /// Runs the statement on every chunk, last first, folding each
    /// chunk's row into `acc` with `add`.
    async fn fold<T>(
        &mut self,
        limits: &Limits,
        mut acc: T,
        mut add: impl FnMut(T, &tokio_postgres::Row) -> Result<T, ScrubError>,
    ) -> Result<T, ScrubError> {
        let target = limits.target_batch.min(limits.statement_timeout / 4);
        // At most 8 MiB (at the default block size) a statement: a larger
        // range, read forwards, would evict its own last blocks, still in
        // the buffers after a pass, by its first, before reading them.
        let sizing = Limits { target_batch: target, min_batch: 1, max_batch: COUNT_CHUNK_BLOCKS, ..limits.clone() };
        let client = self.client;
        let savepoint =
            |q: &'static str| async move { client.batch_execute(q).await.map_err(|e| classify(e, "count")) };
        let (mut size, mut to) = (128i64, self.end_block);
        loop {
            let from = (to - size).max(self.first_block);
            set_range(&mut self.params, from, to, self.end_block, self.open_end);
            let bound = bind(&self.stmt, &self.params, &[])?;
            savepoint("SAVEPOINT lethe_chunk").await?;
            let t = std::time::Instant::now();
            match client.query_one(&self.stmt, &as_refs(&bound)).await {
                Ok(row) => {
                    savepoint("RELEASE SAVEPOINT lethe_chunk").await?;
                    acc = add(acc, &row)?;
                    if from <= self.first_block {
                        return Ok(acc);
                    }
                    to = from;
                    size = super::next_batch_size(&sizing, size, t.elapsed());
                }
                // A busier moment than the last chunk's: the same blocks in
                // halves, in the same snapshot.
                Err(e) if timed_out(&e) && size > 1 => {
                    savepoint("ROLLBACK TO SAVEPOINT lethe_chunk").await?;
                    size /= 2;
                }
                Err(e) => return Err(classify(e, "count")),
            }
        }
    }
}

/// Opens the transaction of a split count: read-only, one snapshot for
/// every statement, block ranges read as ranges rather than through an
/// index.
const COUNT_BEGIN: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

/// Within a split count's transaction: block ranges read as ranges, not
/// through an index. A setting weighs against a kind of scan rather than
/// forbidding it, so sequential scans are weighed against as well: a
/// guard's lookup among another table's rows (a subquery per record)
/// then still goes through that table's index, where with sequential
/// scans the cheaper kind left it would read that whole table once for
/// every record. The range itself is read by a scan no setting here
/// names.
const RANGES_ONLY: &str = "SET LOCAL enable_indexscan = off; SET LOCAL enable_indexonlyscan = off; \
                           SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off";

/// Within a split count's transaction: the planner's own choice again.
const ANY_SCAN: &str = "SET LOCAL enable_indexscan TO DEFAULT; SET LOCAL enable_indexonlyscan TO DEFAULT; \
                        SET LOCAL enable_bitmapscan TO DEFAULT; SET LOCAL enable_seqscan TO DEFAULT";

/// Whether a guard of the selection compares the referencing rows with
/// the records all at once ([`Lookup::Joined`]). The server does so, as an
/// anti-join, only where the test stands in a `WHERE`: elsewhere (an
/// aggregate's `FILTER`, say) it would test each record on its own,
/// reading the whole referencing table each time, so a statement counting
/// with such a guard counts in a `WHERE` of its own.
fn joins_guards(sel: &Selection) -> bool {
    sel.guards.iter().any(|g| g.guards_any() && g.lookup != Lookup::PerRecord)
}

/// The (schema, name) of every relation a JSON plan reads.
fn scanned_relations(plan: &serde_json::Value, out: &mut std::collections::BTreeSet<(String, String)>) {
    match plan {
        serde_json::Value::Object(o) => {
            if let (Some(schema), Some(rel)) =
                (o.get("Schema").and_then(|v| v.as_str()), o.get("Relation Name").and_then(|v| v.as_str()))
            {
                out.insert((schema.to_string(), rel.to_string()));
            }
            o.values().for_each(|v| scanned_relations(v, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| scanned_relations(v, out)),
        _ => {}
    }
}

/// Reads one column of a statement's rows, of a time column's type, as
/// instants.
#[derive(Clone)]
struct TimeReader {
    column: Identifier,
    ty: Type,
    at: usize,
    /// What an integer time column counts.
    unit: Option<UnixTimeUnit>,
}

impl TimeReader {
    fn read(&self, row: &tokio_postgres::Row) -> Result<Option<chrono::DateTime<chrono::Utc>>, ScrubError> {
        let at = self.at;
        let count = |n: Option<i64>| -> Result<_, ScrubError> {
            Ok(match n {
                Some(n) => super::unix_unit(&self.column, self.unit)?.instant(n),
                None => None,
            })
        };
        // `infinity`, which a time type can hold, is no instant: none.
        Ok(match self.ty {
            Type::TIMESTAMPTZ => row.try_get(at).ok().flatten(),
            Type::TIMESTAMP => row.try_get::<_, Option<chrono::NaiveDateTime>>(at).ok().flatten().map(|t| t.and_utc()),
            Type::DATE => row
                .try_get::<_, Option<chrono::NaiveDate>>(at)
                .ok()
                .flatten()
                .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc()),
            Type::INT4 => count(row.get::<_, Option<i32>>(at).map(i64::from))?,
            Type::INT8 => count(row.get(at))?,
            ref other => return Err(ScrubError::Config(format!("time column {} has type {other}", self.column))),
        })
    }
}

/// The rows a plan's top line estimates: "... (cost=a..b rows=N width=w)".
fn planned_rows(plan: &[tokio_postgres::Row]) -> f64 {
    let line: String = plan.first().map(|r| r.get(0)).unwrap_or_default();
    line.split("rows=").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0.0)
}

/// Read-only REPEATABLE READ transactions on one or more connections, all
/// in the snapshot the first one takes: counts split into many statements
/// that still read the table as of one moment.
struct CountSnapshot;

impl CountSnapshot {
    /// Runs `counts` (one per connection, the first leading) each in its
    /// own transaction sharing one snapshot, and ends every transaction
    /// whatever the outcome. The sum.
    async fn sum(counts: &mut [BlockCount<'_>], limits: &Limits) -> Result<i64, ScrubError> {
        let mut opened = Vec::new();
        let begin = format!("{COUNT_BEGIN}; {RANGES_ONLY}");
        let mut result = match Self::open(counts, &begin, &mut opened).await {
            Ok(()) => {
                let sums = futures::future::join_all(counts.iter_mut().map(|c| c.count(limits))).await;
                sums.into_iter().sum::<Result<i64, ScrubError>>()
            }
            Err(e) => Err(e),
        };
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        for client in opened {
            let ended = client.batch_execute(end).await.map_err(|e| classify(e, "count"));
            if result.is_ok() {
                result = ended.and(result);
            }
        }
        result
    }

    /// Opens the transactions, the first exporting its snapshot to the others.
    async fn open<'a>(counts: &[BlockCount<'a>], begin: &str, opened: &mut Vec<&'a Client>) -> Result<(), ScrubError> {
        let mut snapshot = None;
        for (i, c) in counts.iter().enumerate() {
            c.client.batch_execute(begin).await.map_err(|e| classify(e, "count"))?;
            opened.push(c.client);
            match &snapshot {
                None if counts.len() > 1 => {
                    let id: String = c
                        .client
                        .query_one("SELECT pg_export_snapshot()", &[])
                        .await
                        .map_err(|e| classify(e, "count"))?
                        .get(0);
                    // The server's own identifier, spliced into a statement
                    // that takes no parameters: hex digits and dashes only.
                    if id.is_empty() || !id.chars().all(|ch| ch.is_ascii_hexdigit() || ch == '-') {
                        return Err(ScrubError::Config(format!("unexpected snapshot identifier {id:?}")));
                    }
                    snapshot = Some(id);
                }
                Some(id) if i > 0 => c
                    .client
                    .batch_execute(&format!("SET TRANSACTION SNAPSHOT '{id}'"))
                    .await
                    .map_err(|e| classify(e, "count"))?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// The blocks of a block pass's first range.
const BLOCK_RANGE_INITIAL: i64 = 128;

/// The most blocks a range may cover after one of `blocks` blocks deleted
/// `records` records in `took`: what fits in the `target` time at the cost
/// per record seen there, were every block as full of selected records as
/// seen there or as the planner expects (`density`), whichever is more.
fn range_bound(target: std::time::Duration, took: std::time::Duration, records: i64, blocks: i64, density: f64) -> i64 {
    let per_record = took.as_secs_f64().max(1e-6) / records.max(1) as f64;
    let density = density.max(records as f64 / blocks.max(1) as f64);
    ((target.as_secs_f64() / per_record / density) as i64).clamp(8, 1 << 20)
}

impl super::BatchSource for BlockShare<'_> {
    fn sizes(&self, _: &Limits) -> (i64, i64, i64) {
        (BLOCK_RANGE_INITIAL, 8, 1 << 20)
    }

    /// Deletes in the next range. Ranges that held nothing (blocks a
    /// pass that was stopped already emptied, say) take little time, so the
    /// range grows fast over them; a range that large would then delete far
    /// more than a batch should wherever the selected records begin again.
    /// So past its bound a range is first searched for the first block
    /// holding a selected record, and the delete starts there and covers no
    /// more than the bound.
    async fn batch(&mut self, size: i64) -> Result<Option<i64>, ScrubError> {
        if self.next_block >= self.end_block {
            return Ok(None);
        }
        let mut from = self.next_block;
        let mut size = if self.after_empty { size } else { size.min(self.most_blocks) };
        if size > self.most_blocks {
            let to = (from + size).min(self.end_block);
            self.range(from, to);
            let bound = bind(&self.first_selected, &self.params, &[])?;
            let row = self
                .client
                .query_one(&self.first_selected, &as_refs(&bound))
                .await
                .map_err(|e| classify(e, "batch"))?;
            match row.get::<_, Option<i64>>(0) {
                None => {
                    self.next_block = to;
                    self.used = size;
                    return Ok(Some(0));
                }
                // Past the share's end only in the open-ended last share.
                Some(first) => (from, size) = (first.max(from), self.most_blocks),
            }
        }
        let to = (from + size).min(self.end_block).max(from);
        self.range(from, to);
        let bound = bind(&self.delete, &self.params, &[])?;
        let t = std::time::Instant::now();
        let n = self.client.execute(&self.delete, &as_refs(&bound)).await.map_err(|e| classify(e, "batch"))? as i64;
        self.next_block = to;
        self.used = size;
        self.after_empty = n == 0;
        if n > 0 {
            self.most_blocks = range_bound(self.target, t.elapsed(), n, size, self.density);
        }
        Ok(Some(n))
    }

    fn used(&self, _: i64) -> i64 {
        self.used
    }

    fn most_records(&self) -> Option<i64> {
        Some(self.most_records)
    }
}

pub struct Postgres {
    client: Client,
    _connection: tokio::task::JoinHandle<()>,
    /// For the further connections a block pass may open.
    again: Box<(ConnectOptions, Limits)>,
    /// What integer time columns count (the Dataset's `unixTimeUnit`).
    unix_time: Option<UnixTimeUnit>,
}

/// Classifies a server error by what should happen next.
fn classify(e: tokio_postgres::Error, what: &str) -> ScrubError {
    let text = match e.as_db_error() {
        // The session sets `row_security = off`, so a policy that would
        // filter what Lethe sees fails the statement instead.
        Some(db) if db.code() == &SqlState::INSUFFICIENT_PRIVILEGE && db.message().contains("row-level security") => {
            format!(
                "{what}: {} ({}): row-level security would hide rows from this user, so its deletes and counts \
                 could not be trusted; give the user BYPASSRLS, or run as the table's owner",
                db.message(),
                db.code().code()
            )
        }
        Some(db) => format!("{what}: {} ({})", without_values(db.message(), db.code()), db.code().code()),
        None => format!("{what}: {e}"),
    };
    match e.code() {
        None => ScrubError::Unavailable(text),
        Some(c)
            if *c == SqlState::INVALID_PASSWORD
                || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                || *c == SqlState::INSUFFICIENT_PRIVILEGE =>
        {
            ScrubError::Access(text)
        }
        // A batch that runs out of time is retried smaller; a read of the
        // table cannot be made smaller, and would time out again each time.
        Some(c)
            if *c == SqlState::QUERY_CANCELED && !what.starts_with("batch") && text.contains("statement timeout") =>
        {
            ScrubError::Config(format!("{text}: {}", super::READ_TIMEOUT))
        }
        Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => {
            ScrubError::Config(format!("{text}: {}", super::STILL_REFERENCED))
        }
        Some(c)
            if *c == SqlState::LOCK_NOT_AVAILABLE
                || *c == SqlState::QUERY_CANCELED
                || *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            ScrubError::Busy(text)
        }
        Some(c)
            if *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
                || *c == SqlState::TOO_MANY_CONNECTIONS =>
        {
            ScrubError::Unavailable(text)
        }
        Some(_) => ScrubError::Config(text),
    }
}

/// A server message without the values it quotes, which may be a record's
/// personal data: the messages of data exceptions (SQLSTATE class 22)
/// quote the value that could not be taken (`invalid input syntax for type
/// integer: "..."`, `value "..." is out of range`), from the first double
/// quote to the last (the value is not escaped, and may hold quotes
/// itself). Other messages quote names only, and keep them; the values of
/// a key a constraint refuses are in the message's detail, never read.
fn without_values(message: &str, code: &SqlState) -> String {
    match (code.code().starts_with("22"), message.find('"'), message.rfind('"')) {
        (true, Some(first), Some(last)) if first < last => {
            format!("{}\"…\"{}", &message[..first], &message[last + 1..])
        }
        _ => message.to_string(),
    }
}

type BoxedParam = Box<dyn ToSql + Sync + Send>;

/// What the anonymization statements need of each rule's column, by name,
/// from [`Postgres::check_rules`]: (maximum length, is text).
fn column_of(cols: &[(String, (Option<i64>, bool))]) -> impl Fn(&Identifier) -> (Option<i64>, bool) + '_ {
    move |f| cols.iter().find(|(n, _)| n == f.as_str()).map_or((None, true), |(_, c)| *c)
}

/// Converts parameters to the types the server inferred for them.
fn bind(stmt: &Statement, params: &[Param], extra: &[i64]) -> Result<Vec<BoxedParam>, ScrubError> {
    let types = stmt.params();
    let mut out: Vec<BoxedParam> = Vec::with_capacity(types.len());
    for (i, p) in params.iter().enumerate() {
        let ty = types.get(i).ok_or_else(|| ScrubError::Config("parameter count mismatch".into()))?;
        out.push(convert(p, ty)?);
    }
    for n in extra {
        out.push(Box::new(*n));
    }
    Ok(out)
}

fn convert(p: &Param, ty: &Type) -> Result<BoxedParam, ScrubError> {
    Ok(match (p, ty) {
        (Param::Time(t, _), &Type::TIMESTAMPTZ) => Box::new(*t),
        (Param::Time(t, _), &Type::TIMESTAMP) => Box::new(t.naive_utc()),
        // Whole days: a record dated the cutoff's day is not before it.
        (Param::Time(t, _), &Type::DATE) => Box::new(t.date_naive()),
        // A count since 1970 in the Dataset's unit (checked at plan and run).
        (Param::Time(t, Some(unit)), &Type::INT8) => Box::new(unit.count(*t)),
        (Param::Time(t, Some(unit)), &Type::INT4) => Box::new(i32::try_from(unit.count(*t)).map_err(|_| {
            ScrubError::Config(format!("the time {t} does not fit an integer time column counting {unit:?}"))
        })?),
        (Param::Time(_, None), &Type::INT4 | &Type::INT8) => {
            return Err(ScrubError::Config(
                "a time column holds integers; set the Dataset's timestamps.unixTimeUnit to what they count \
                 (Seconds or Milliseconds since 1970)"
                    .into(),
            ));
        }
        (Param::Time(..), other) => {
            return Err(ScrubError::Config(format!(
                "a time column has type {other}; it must be timestamptz, timestamp, date, or an integer or bigint \
                 with the Dataset's timestamps.unixTimeUnit"
            )));
        }
        // Values that cannot be of the column's type cannot match a row: dropped.
        (Param::Values(v), &Type::INT2_ARRAY) => {
            Box::new(v.iter().filter_map(|s| s.trim().parse::<i16>().ok()).collect::<Vec<_>>())
        }
        (Param::Values(v), &Type::INT4_ARRAY) => {
            Box::new(v.iter().filter_map(|s| s.trim().parse::<i32>().ok()).collect::<Vec<_>>())
        }
        (Param::Values(v), &Type::INT8_ARRAY) => {
            Box::new(v.iter().filter_map(|s| s.trim().parse::<i64>().ok()).collect::<Vec<_>>())
        }
        // A host address (IPv4 or IPv6, any spelling); inet also compares the netmask.
        (Param::Values(v), &Type::INET_ARRAY) => {
            Box::new(v.iter().filter_map(|s| s.trim().parse::<std::net::IpAddr>().ok()).collect::<Vec<_>>())
        }
        (Param::Values(v), &Type::UUID_ARRAY) => {
            Box::new(v.iter().filter_map(|s| uuid::Uuid::parse_str(s.trim()).ok()).collect::<Vec<_>>())
        }
        (Param::Values(v), &Type::TEXT_ARRAY | &Type::VARCHAR_ARRAY | &Type::BPCHAR_ARRAY | &Type::NAME_ARRAY) => {
            Box::new(v.clone())
        }
        // The citext extension's type: the server compares without case.
        (Param::Values(v), ty) if matches!(ty.kind(), Kind::Array(m) if m.name() == "citext") => Box::new(v.clone()),
        (Param::Values(_), other) => {
            return Err(ScrubError::Config(format!(
                "an identifier column has type {}; supported: smallint, integer, bigint, uuid, inet, text, varchar, char, citext",
                other.name().trim_start_matches('_')
            )));
        }
        (Param::Text(s), _) => Box::new(s.clone()),
    })
}

fn as_refs(v: &[BoxedParam]) -> Vec<&(dyn ToSql + Sync)> {
    v.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync)).collect()
}

impl Postgres {
    /// Connects and sets the session's lock and statement timeouts.
    pub async fn connect(opts: &ConnectOptions, limits: &Limits) -> Result<Postgres, ScrubError> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&opts.host)
            .port(opts.port)
            .dbname(&opts.database)
            .user(&opts.user)
            .application_name("lethe")
            .connect_timeout(Duration::from_secs(10));
        if let Some(p) = &opts.password {
            cfg.password(p);
        }
        let (client, task) = match opts.tls.mode() {
            TlsMode::Disable => {
                let (client, connection) = cfg.connect(NoTls).await.map_err(|e| classify(e, "connect"))?;
                (
                    client,
                    tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!(error = %e, "postgres connection closed")
                        }
                    }),
                )
            }
            mode => {
                cfg.ssl_mode(if mode == TlsMode::Prefer { SslMode::Prefer } else { SslMode::Require });
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(super::tls::client_config(&opts.tls)?);
                let (client, connection) = cfg.connect(tls).await.map_err(|e| classify(e, "connect"))?;
                (
                    client,
                    tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!(error = %e, "postgres connection closed")
                        }
                    }),
                )
            }
        };
        // Numbers only: nothing user-written reaches these statements. No
        // parallel workers: a scrub takes one backend of the server, no more.
        // No JIT compilation: it takes tens to hundreds of milliseconds a
        // statement, as long as a batch, and pays only for statements far
        // longer (the weights `RANGES_ONLY` puts on kinds of scan would
        // make every count look like one).
        // Row-level security that applies to the user fails a statement
        // rather than filtering it: a filtered count would verify nothing.
        let setup = format!(
            "SET lock_timeout = {}; SET statement_timeout = {}; SET TimeZone = 'UTC'; SET max_parallel_workers_per_gather = 0;
             SET row_security = off; SET jit = off",
            limits.lock_timeout.as_millis().max(1),
            limits.statement_timeout.as_millis().max(1)
        );
        client.batch_execute(&setup).await.map_err(|e| classify(e, "session setup"))?;
        Ok(Postgres { client, _connection: task, again: Box::new((opts.clone(), limits.clone())), unix_time: None })
    }

    /// Reads integer time columns as counts of `unit` since 1970.
    pub fn with_unix_time(mut self, unit: Option<UnixTimeUnit>) -> Self {
        self.unix_time = unit;
        self
    }

    /// Parameters for a statement, times bound in this driver's unit.
    fn params(&self) -> Params {
        let mut p = Params::new(Dialect::Postgres);
        p.unix_time = self.unix_time;
        p
    }

    /// Refuses a time column of a type that holds no instant (text, say),
    /// naming it, and one stored as integers without a unit, or whose
    /// newest value says the unit is wrong. Other columns are left to the
    /// statements' own type checks.
    async fn check_time_columns(&self, sel: &Selection) -> Result<(), ScrubError> {
        for (col, _) in sel.older_than.iter().chain(&sel.keep_newer_than) {
            let (c, table) = (sql::quote(Dialect::Postgres, col), Self::qualified(&sel.table));
            let stmt = self
                .client
                .prepare(&format!("SELECT {c} FROM {table} LIMIT 0"))
                .await
                .map_err(|e| classify(e, "time column"))?;
            match stmt.columns()[0].type_() {
                &Type::INT4 | &Type::INT8 => {}
                &Type::TIMESTAMPTZ | &Type::TIMESTAMP | &Type::DATE => continue,
                other => {
                    return Err(ScrubError::Config(format!(
                        "time column {col} has type {other}; it must be timestamptz, timestamp, date, or an integer \
                         or bigint with the Dataset's timestamps.unixTimeUnit"
                    )));
                }
            }
            let unit = super::unix_unit(col, self.unix_time)?;
            let row = self
                .client
                .query_one(
                    &format!(
                        "SELECT min({c})::bigint, (max({c}) FILTER (WHERE {c} <= {}))::bigint FROM {table}",
                        super::unix_time_ceiling(unit)
                    ),
                    &[],
                )
                .await
                .map_err(|e| classify(e, "time range"))?;
            super::check_unix_time_range(col, (row.get(0), row.get(1)), unit)?;
        }
        Ok(())
    }

    pub async fn server_version(&self) -> Result<String, ScrubError> {
        let row = self.client.query_one("SELECT version()", &[]).await.map_err(|e| classify(e, "version"))?;
        Ok(row.get(0))
    }

    fn qualified(table: &super::Table) -> String {
        sql::table_name(Dialect::Postgres, table.schema.as_ref(), &table.name)
    }

    /// Checks the table exists and what the user may do with it.
    pub async fn probe(&self, table: &super::Table) -> Result<Probe, ScrubError> {
        let name = Self::qualified(table);
        let row = self
            .client
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL,
                        CASE WHEN to_regclass($1) IS NULL THEN false ELSE has_table_privilege(to_regclass($1), 'SELECT') END,
                        CASE WHEN to_regclass($1) IS NULL THEN false ELSE has_table_privilege(to_regclass($1), 'DELETE') END,
                        CASE WHEN to_regclass($1) IS NULL THEN false ELSE has_table_privilege(to_regclass($1), 'UPDATE') END",
                &[&name],
            )
            .await
            .map_err(|e| classify(e, "probe"))?;
        if !row.get::<_, bool>(0) {
            return Err(ScrubError::Config(format!("table {name} does not exist")));
        }
        self.check_kind(&name).await?;
        if row.get::<_, bool>(1) {
            // Fails where row-level security would filter the table.
            self.client
                .simple_query(&format!("SELECT 1 FROM {name} LIMIT 0"))
                .await
                .map_err(|e| classify(e, "probe"))?;
        }
        Ok(Probe {
            server_version: self.server_version().await?,
            can_select: row.get(1),
            can_delete: row.get(2),
            can_update: row.get(3),
        })
    }

    /// Refuses a relation whose records cannot be changed batch by batch:
    /// the batches and the pass over blocks tell records apart by where
    /// each is stored (`ctid`), which only a table has. A view, a
    /// materialized view or a foreign table gets an answer naming what it
    /// is and what to name instead, before anything runs.
    async fn check_kind(&self, name: &str) -> Result<(), ScrubError> {
        let kind = match self.relation(name).await? {
            None => return Err(ScrubError::Config(format!("table {name} does not exist"))),
            Some((kind, _)) => kind,
        };
        let (what, instead) = match kind.as_str() {
            "r" | "p" => return Ok(()),
            "v" => ("a view", "name the table it reads as the Dataset's table"),
            "m" => ("a materialized view", "name the table it is computed from, and refresh the view after a pass"),
            "f" => ("a foreign table", "register the server that holds its records as a DataStore of its own"),
            _ => ("not a table", "name a table"),
        };
        Err(ScrubError::Config(format!(
            "{name} is {what}: Lethe changes records of tables, told apart by where each is stored; {instead}"
        )))
    }

    /// The column a table is range-partitioned on, if it is.
    async fn partition_key(&self, table: &str) -> Result<Option<String>, ScrubError> {
        let row = self
            .client
            .query_one("SELECT pg_get_partkeydef(to_regclass($1))", &[&table])
            .await
            .map_err(|e| classify(e, "partitions"))?;
        let def: Option<String> = row.get(0);
        // "RANGE (created_at)" or "RANGE (\"Order\")"; anything else is not a time range.
        Ok(def.and_then(|d| {
            let inner = d.strip_prefix("RANGE (")?.strip_suffix(')')?;
            let name = inner
                .strip_prefix('"')
                .and_then(|n| n.strip_suffix('"'))
                .map(|n| n.replace("\"\"", "\""))
                .unwrap_or(inner.to_string());
            (!name.contains(',') && !name.contains('(')).then_some(name)
        }))
    }

    /// Drops or detaches every partition that lies wholly before the cutoff
    /// and whose every record is selected (nothing held, nothing under
    /// minimum retention). Each partition is checked and removed under an
    /// exclusive lock in one transaction, so no record slips in between.
    /// Returns the partitions and how many records each held.
    async fn whole_partitions(
        &self,
        table: &str,
        pred: &str,
        values: &[Param],
        sel: &Selection,
        mode: PartitionMode,
    ) -> Result<Vec<(String, i64)>, ScrubError> {
        let Some((_, cutoff)) = sel.older_than else { return Ok(Vec::new()) };
        let time_only = sel.time_only();
        let rows = self
            .client
            .query(
                "SELECT c.oid::regclass::text, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                  WHERE i.inhparent = to_regclass($1) ORDER BY 1",
                &[&table],
            )
            .await
            .map_err(|e| classify(e, "partitions"))?;
        // Partitions whose upper bound is at or before the cutoff, compared
        // by the server in one statement.
        let mut candidates = Vec::new();
        for r in rows {
            let (name, bound): (String, String) = (r.get(0), r.get(1));
            // Names come from the catalog, already quoted by regclass; still, only plain shapes are used.
            if !partition_name_ok(&name) {
                continue;
            }
            // "FOR VALUES FROM ('a') TO ('b')": the partition holds times before b.
            let Some(upper) = bound.split(" TO (").nth(1).and_then(|u| u.strip_suffix(')')) else { continue };
            // MINVALUE and MAXVALUE are not quoted; nor are `integer` bounds.
            let literal = upper.strip_prefix('\'').and_then(|u| u.strip_suffix('\''));
            let upper = match (literal.unwrap_or(upper).parse::<i64>(), self.unix_time) {
                // An integer key counting the Dataset's unit: the instant its bound stands for.
                (Ok(n), Some(unit)) => match unit.instant(n) {
                    Some(t) => t.to_rfc3339(),
                    None => continue,
                },
                (Ok(_), None) => continue,
                (Err(_), _) => match literal {
                    Some(time) => time.to_string(),
                    None => continue,
                },
            };
            candidates.push((name, upper));
        }
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let uppers: Vec<&str> = candidates.iter().map(|(_, u)| u.as_str()).collect();
        let before: Vec<bool> = self
            .client
            .query(
                "SELECT CAST(u AS timestamptz) <= $2::timestamptz FROM unnest(CAST($1 AS text[])) WITH ORDINALITY AS b(u, i) ORDER BY i",
                &[&uppers, &cutoff],
            )
            .await
            .map_err(|e| classify(e, "partition bound"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut done = Vec::new();
        for ((name, _), _) in candidates.into_iter().zip(before).filter(|(_, before)| *before) {
            let result = async {
                // The transaction stays open after this message.
                let begin = format!("BEGIN; LOCK TABLE {name} IN ACCESS EXCLUSIVE MODE");
                // With nothing but the cutoff to satisfy, the partition's
                // bound already says every row does: only count them.
                let (records, keep): (i64, i64) = if time_only {
                    let counted = self
                        .client
                        .simple_query(&format!("{begin}; SELECT count(*) FROM {name}"))
                        .await
                        .map_err(|e| classify(e, "partition"))?;
                    let n = counted
                        .iter()
                        .find_map(|m| match m {
                            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
                            _ => None,
                        })
                        .ok_or_else(|| ScrubError::Unavailable("partition: the server returned no count".into()))?;
                    (n, 0)
                } else {
                    self.client.batch_execute(&begin).await.map_err(|e| classify(e, "lock partition"))?;
                    // Where a guard compares the referencing rows all at
                    // once, it does so only in a WHERE (see `joins_guards`).
                    let q = match joins_guards(sel) {
                        true => format!(
                            "SELECT count(*), count(*) - (SELECT count(*) FROM {name} WHERE {pred}) FROM {name}"
                        ),
                        false => format!(
                            "SELECT count(*), count(*) FILTER (WHERE NOT COALESCE(({pred}), false)) FROM {name}"
                        ),
                    };
                    let stmt = self.client.prepare(&q).await.map_err(|e| classify(e, "partition"))?;
                    let bound = bind(&stmt, values, &[])?;
                    let row =
                        self.client.query_one(&stmt, &as_refs(&bound)).await.map_err(|e| classify(e, "partition"))?;
                    (row.get(0), row.get(1))
                };
                if keep > 0 {
                    // Something in it must stay: row by row it is.
                    return Ok(None);
                }
                let ddl = match mode {
                    PartitionMode::Detach => format!("ALTER TABLE {table} DETACH PARTITION {name}"),
                    _ => format!("DROP TABLE {name}"),
                };
                // Nothing after a failing statement in one message runs: a
                // failed drop leaves the transaction open, to be rolled back.
                self.client
                    .batch_execute(&format!("{ddl}; COMMIT"))
                    .await
                    .map_err(|e| classify(e, "drop partition"))?;
                Ok::<_, ScrubError>(Some(records))
            }
            .await;
            match result {
                Ok(Some(records)) => done.push((name, records)),
                Ok(None) => self.client.batch_execute("ROLLBACK").await.map_err(|e| classify(e, "rollback"))?,
                Err(e) => {
                    let _ = self.client.batch_execute("ROLLBACK").await;
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    /// Foreign keys touching a table, as (child table, parent table) names:
    /// the tables that reference it and the tables it references.
    pub async fn foreign_keys(&self, table: &super::Table) -> Result<Vec<(String, String)>, ScrubError> {
        let rows = self
            .client
            .query(
                "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c
                  WHERE c.contype = 'f' AND (c.conrelid = to_regclass($1) OR c.confrelid = to_regclass($1))
                  ORDER BY 1, 2",
                &[&Self::qualified(table)],
            )
            .await
            .map_err(|e| classify(e, "foreign keys"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The foreign keys of other tables (and of this one) referencing a
    /// table, each column named, in key order. A partitioned table's key
    /// is given once, not once per partition.
    pub async fn referencing_keys(&self, table: &super::Table) -> Result<Vec<super::ReferencingKey>, ScrubError> {
        let rows = self
            .client
            .query(
                "SELECT NULLIF(n.nspname, current_schema()), r.relname,
                        array(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(num, i)
                                JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.num ORDER BY k.i),
                        array(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(num, i)
                                JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.num ORDER BY k.i),
                        c.confdeltype::text, c.confupdtype::text
                   FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid JOIN pg_namespace n ON n.oid = r.relnamespace
                  WHERE c.contype = 'f' AND c.confrelid = to_regclass($1) AND c.conparentid = 0
                  ORDER BY 1, 2, c.conname",
                &[&Self::qualified(table)],
            )
            .await
            .map_err(|e| classify(e, "foreign keys"))?;
        Ok(rows
            .iter()
            .map(|r| super::ReferencingKey {
                schema: r.get(0),
                table: r.get(1),
                columns: r.get(2),
                references: r.get(3),
                restricts: sql::restricts(r.get(4)),
                restricts_update: sql::restricts(r.get(5)),
            })
            .collect())
    }

    /// Counts what a predicate matches. Where the plan reads the whole
    /// table, or much of it, and the table is large, the count reads it in
    /// chunks of blocks within one snapshot ([`BlockCount`]), so it keeps
    /// within the statement timeout however large the table; a partitioned
    /// table, partition by partition (those its plan reads), each the same
    /// way, all in one snapshot. Otherwise one statement, through whatever
    /// index fits; on a large table, in chunks after all where that
    /// statement runs out of time (a selective count can still read much
    /// of a huge table).
    async fn count_where(&self, table: &super::Table, predicate: &str, params: &[Param]) -> Result<i64, ScrubError> {
        let name = Self::qualified(table);
        match self.relation(&name).await? {
            Some((kind, _)) if kind == "p" => {
                if let Some(leaves) = self.scanned_leaves(&name, predicate, params).await?
                    && leaves.iter().map(|l| l.1).sum::<i64>() >= CHUNKED_COUNT_FROM_BLOCKS
                {
                    return self.count_leaves(&leaves, predicate, params).await;
                }
            }
            Some((kind, blocks)) if (kind == "r" || kind == "m") && blocks >= CHUNKED_COUNT_FROM_BLOCKS => {
                let mut count = match self.block_count(&name, blocks, predicate, params).await? {
                    Some(count) => count,
                    // Through an index, in one statement; should even that
                    // run out of time, in chunks of blocks after all.
                    None => match self.count_statement(&name, predicate, params).await? {
                        Err(e) if timed_out(&e) => self.chunks(&name, blocks, predicate, params).await?,
                        counted => return counted.map_err(|e| classify(e, "count")),
                    },
                };
                return CountSnapshot::sum(std::slice::from_mut(&mut count), &self.again.1).await;
            }
            _ => {}
        }
        self.count_one(&name, predicate, params).await
    }

    /// Counts what a predicate matches in one statement.
    async fn count_one(&self, name: &str, predicate: &str, params: &[Param]) -> Result<i64, ScrubError> {
        self.count_statement(name, predicate, params).await?.map_err(|e| classify(e, "count"))
    }

    /// [`Self::count_one`], with the server's own error where the count
    /// itself fails, for the callers that count in chunks when it runs out
    /// of time.
    async fn count_statement(
        &self,
        name: &str,
        predicate: &str,
        params: &[Param],
    ) -> Result<Result<i64, tokio_postgres::Error>, ScrubError> {
        let q = format!("SELECT count(*) FROM {name} WHERE {predicate}");
        let stmt = self.client.prepare(&q).await.map_err(|e| classify(e, "count"))?;
        let bound = bind(&stmt, params, &[])?;
        Ok(self.client.query_one(&stmt, &as_refs(&bound)).await.map(|row| row.get(0)))
    }

    /// The count of a plain table in chunks of blocks, where it is large and
    /// its plan reads all of it or much of it; `None` otherwise.
    async fn block_count(
        &self,
        name: &str,
        blocks: i64,
        predicate: &str,
        params: &[Param],
    ) -> Result<Option<BlockCount<'_>>, ScrubError> {
        if blocks < CHUNKED_COUNT_FROM_BLOCKS {
            return Ok(None);
        }
        let e = self.estimate(name, predicate, params).await?;
        if !e.whole && e.share <= self.again.1.block_pass_above {
            return Ok(None);
        }
        self.chunks(name, blocks, predicate, params).await.map(Some)
    }

    /// The count of a plain table of `blocks` blocks in chunks of blocks.
    async fn chunks(
        &self,
        name: &str,
        blocks: i64,
        predicate: &str,
        params: &[Param],
    ) -> Result<BlockCount<'_>, ScrubError> {
        self.chunked("count(*)", name, blocks, predicate, params).await
    }

    /// `SELECT <what>` of a plain table of `blocks` blocks, chunk by chunk.
    async fn chunked(
        &self,
        what: &str,
        name: &str,
        blocks: i64,
        predicate: &str,
        params: &[Param],
    ) -> Result<BlockCount<'_>, ScrubError> {
        let mut ranged = self.params();
        ranged.values = params.to_vec();
        let from = ranged.push(Param::Text(String::new()));
        let to = ranged.push(Param::Text(String::new()));
        let q = format!("SELECT {what} FROM {name} WHERE {} AND {predicate}", block_range(&from, &to));
        let stmt = self.client.prepare(&q).await.map_err(|e| classify(e, "count"))?;
        Ok(BlockCount {
            client: &self.client,
            stmt,
            params: ranged.values,
            first_block: 0,
            end_block: blocks,
            open_end: true,
            oldest: None,
            oldest_found: None,
        })
    }

    /// The partitions a predicate's plan on a partitioned table reads (after
    /// pruning), as `regclass` names with their blocks; `None` where a
    /// partition the plan reads is not a plain table (a foreign table, say).
    async fn scanned_leaves(
        &self,
        name: &str,
        predicate: &str,
        params: &[Param],
    ) -> Result<Option<Vec<(String, i64)>>, ScrubError> {
        let plan = self.explain("(FORMAT JSON, VERBOSE)", name, predicate, params).await?;
        let plan: serde_json::Value = plan.first().map(|r| r.get(0)).unwrap_or_default();
        let mut read = std::collections::BTreeSet::new();
        scanned_relations(&plan, &mut read);
        let rows = self
            .client
            .query(
                "SELECT c.oid::regclass::text, n.nspname::text, c.relname::text, c.relkind::text, \
                        (pg_relation_size(c.oid) / current_setting('block_size')::int)::bigint \
                   FROM pg_partition_tree(to_regclass($1)) t JOIN pg_class c ON c.oid = t.relid \
                   JOIN pg_namespace n ON n.oid = c.relnamespace WHERE t.isleaf ORDER BY 1",
                &[&name],
            )
            .await
            .map_err(|e| classify(e, "partitions"))?;
        let mut leaves = Vec::new();
        for r in rows {
            let (leaf, schema, rel, kind, blocks): (String, String, String, String, i64) =
                (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
            if !read.contains(&(schema, rel)) {
                continue;
            }
            // Names come from the catalog, already quoted by regclass; still,
            // only plain shapes are used.
            if kind != "r" || !partition_name_ok(&leaf) {
                return Ok(None);
            }
            leaves.push((leaf, blocks));
        }
        Ok(Some(leaves))
    }

    /// Counts what a predicate matches in each of a partitioned table's
    /// partitions, each as a plain table would be, all in one snapshot.
    async fn count_leaves(
        &self,
        leaves: &[(String, i64)],
        predicate: &str,
        params: &[Param],
    ) -> Result<i64, ScrubError> {
        // Planned before the snapshot, with every kind of scan allowed.
        let mut ways = Vec::new();
        for leaf in leaves {
            ways.push((leaf, self.block_count(&leaf.0, leaf.1, predicate, params).await?));
        }
        self.client.batch_execute(COUNT_BEGIN).await.map_err(|e| classify(e, "count"))?;
        let mut result = Ok(0);
        for ((leaf, blocks), way) in &mut ways {
            let n = self.count_leaf(leaf, *blocks, way.as_mut(), predicate, params).await;
            result = result.and_then(|total| n.map(|n| total + n));
            if result.is_err() {
                break;
            }
        }
        let ended = self.client.batch_execute(if result.is_ok() { "COMMIT" } else { "ROLLBACK" }).await;
        let total = result?;
        ended.map_err(|e| classify(e, "count"))?;
        Ok(total)
    }

    /// One partition's share of [`Self::count_leaves`], inside its
    /// transaction: in chunks of blocks where planned so (`way`), else in
    /// one statement, and in chunks after all where that statement runs out
    /// of time on a partition large enough.
    async fn count_leaf(
        &self,
        leaf: &str,
        blocks: i64,
        way: Option<&mut BlockCount<'_>>,
        predicate: &str,
        params: &[Param],
    ) -> Result<i64, ScrubError> {
        let run = |q: &'static str| async move { self.client.batch_execute(q).await.map_err(|e| classify(e, "count")) };
        if let Some(count) = way {
            run(RANGES_ONLY).await?;
            return count.count(&self.again.1).await;
        }
        run(ANY_SCAN).await?;
        if blocks < CHUNKED_COUNT_FROM_BLOCKS {
            return self.count_one(leaf, predicate, params).await;
        }
        run("SAVEPOINT lethe_leaf").await?;
        match self.count_statement(leaf, predicate, params).await? {
            Err(e) if timed_out(&e) => {
                run("ROLLBACK TO SAVEPOINT lethe_leaf").await?;
                run(RANGES_ONLY).await?;
                self.chunks(leaf, blocks, predicate, params).await?.count(&self.again.1).await
            }
            counted => {
                let n = counted.map_err(|e| classify(e, "count"))?;
                run("RELEASE SAVEPOINT lethe_leaf").await?;
                Ok(n)
            }
        }
    }

    /// The earliest (or, with `newest`, latest) value of `column` among the
    /// records a selection matches. One statement, through the column's
    /// index where there is one; on a large plain table, in chunks of
    /// blocks where that runs out of time: right after a pass has deleted
    /// many records, an index still holds an entry for each, and the
    /// statement visits every one before it finds a record still there.
    pub async fn extreme(
        &self,
        sel: &Selection,
        column: &Identifier,
        newest: bool,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, ScrubError> {
        let sel = &*self.settled(sel).await?;
        let agg = if newest { "max" } else { "min" };
        let mut params = self.params();
        let pred = sql::pg_predicate(sel, &mut params);
        let what = format!("{agg}({})", sql::quote(Dialect::Postgres, column));
        let name = Self::qualified(&sel.table);
        let stmt = self
            .client
            .prepare(&format!("SELECT {what} FROM {name} WHERE {pred}"))
            .await
            .map_err(|e| classify(e, "oldest"))?;
        let time = self.time_reader(column, &stmt, 0);
        let instant = |row: &tokio_postgres::Row| time.read(row);
        let bound = bind(&stmt, &params.values, &[])?;
        let err = match self.client.query_one(&stmt, &as_refs(&bound)).await {
            Ok(row) => return instant(&row),
            Err(e) => e,
        };
        if !timed_out(&err) {
            return Err(classify(err, "oldest"));
        }
        let blocks = match self.relation(&name).await? {
            Some((kind, blocks)) if (kind == "r" || kind == "m") && blocks >= CHUNKED_COUNT_FROM_BLOCKS => blocks,
            _ => return Err(classify(err, "oldest")),
        };
        let mut chunks = self.chunked(&what, &name, blocks, &pred, &params.values).await?;
        let begin = format!("{COUNT_BEGIN}; {RANGES_ONLY}");
        self.client.batch_execute(&begin).await.map_err(|e| classify(e, "oldest"))?;
        let found =
            chunks.fold(&self.again.1, None, |acc, row| Ok(super::extreme_of(acc, instant(row)?, newest))).await;
        let ended = self.client.batch_execute(if found.is_ok() { "COMMIT" } else { "ROLLBACK" }).await;
        let found = found?;
        ended.map_err(|e| classify(e, "oldest"))?;
        Ok(found)
    }

    /// Reads column `at` of `stmt`'s rows, values of time column `column`.
    fn time_reader(&self, column: &Identifier, stmt: &Statement, at: usize) -> TimeReader {
        TimeReader { column: column.clone(), ty: stmt.columns()[at].type_().clone(), at, unit: self.unix_time }
    }

    /// The selection with each guard's [`Lookup`] settled
    /// ([`super::settled`]).
    pub async fn settled<'s>(&self, sel: &'s Selection) -> Result<std::borrow::Cow<'s, Selection>, ScrubError> {
        super::settled(self, sel).await
    }

    /// Records a selection would change now.
    pub async fn count(&self, sel: &Selection) -> Result<i64, ScrubError> {
        let sel = &*self.settled(sel).await?;
        let mut params = self.params();
        let pred = sql::pg_predicate(sel, &mut params);
        self.count_where(&sel.table, &pred, &params.values).await
    }

    /// The dry run: what the run would change, and what holds and minimum
    /// retention keep.
    pub async fn plan(&self, sel: &Selection) -> Result<Counts, ScrubError> {
        let sel = &*self.settled(sel).await?;
        self.probe(&sel.table).await?;
        self.check_time_columns(sel).await?;
        super::plan(self, sel).await
    }

    /// What anonymization needs to know of each column, by name.
    async fn columns(&self, table: &super::Table) -> Result<Vec<(String, super::ColumnFacts)>, ScrubError> {
        let schema = table.schema.as_ref().map(Identifier::as_str).unwrap_or("public");
        let rows = self
            .client
            .query(
                "SELECT column_name::text, is_nullable = 'YES',
                        data_type IN ('text', 'character varying', 'character') OR udt_name = 'citext',
                        character_maximum_length::bigint, is_generated = 'ALWAYS', identity_generation = 'ALWAYS',
                        -- NULL: no unique index on the column alone; else whether one
                        -- counts NULLs as equal (NULLS NOT DISTINCT, read so that
                        -- servers before 15, without the field, parse it too).
                        (SELECT bool_or(COALESCE((to_jsonb(i) ->> 'indnullsnotdistinct')::boolean, false))
                           FROM pg_index i
                           JOIN pg_class t ON t.oid = i.indrelid
                           JOIN pg_namespace n ON n.oid = t.relnamespace
                           JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0]
                          WHERE n.nspname = c.table_schema AND t.relname = c.table_name
                            AND a.attname = c.column_name AND i.indisunique AND i.indnkeyatts = 1
                            AND i.indpred IS NULL AND i.indexprs IS NULL)
                   FROM information_schema.columns c WHERE table_schema = $1 AND table_name = $2",
                &[&schema, &table.name.as_str()],
            )
            .await
            .map_err(|e| classify(e, "columns"))?;
        Ok(rows
            .iter()
            .map(|r| {
                let computed = if r.get(4) {
                    Some("a generated column")
                } else if r.get::<_, Option<bool>>(5) == Some(true) {
                    Some("an identity column GENERATED ALWAYS")
                } else {
                    None
                };
                let facts = super::ColumnFacts {
                    nullable: r.get(1),
                    is_text: r.get(2),
                    max_len: r.get(3),
                    computed,
                    unique: r.get::<_, Option<bool>>(6).is_some(),
                    one_null: r.get::<_, Option<bool>>(6) == Some(true),
                };
                (r.get(0), facts)
            })
            .collect())
    }

    /// Refuses anonymization rules the table cannot take, before any change;
    /// returns each rule's column's maximum length and whether it is text.
    async fn check_rules(
        &self,
        sel: &Selection,
        rules: &[super::FieldRule],
    ) -> Result<Vec<(String, (Option<i64>, bool))>, ScrubError> {
        let cols = self.columns(&sel.table).await?;
        let mut found = Vec::new();
        for r in rules {
            let Some((_, facts)) = cols.iter().find(|c| c.0 == r.field.as_str()) else {
                return Err(ScrubError::Config(format!("column {} does not exist", r.field)));
            };
            super::check_rule(r, facts)?;
            found.push((r.field.as_str().to_string(), (facts.max_len, facts.is_text)));
        }
        Ok(found)
    }

    /// The table's unique keys of plain columns (no condition, no expression).
    async fn unique_keys(&self, table: &str) -> Result<Vec<sql::UniqueKey>, ScrubError> {
        let rows = self
            .client
            .query(
                "SELECT ic.relname::text, array_agg(a.attname::text ORDER BY k.n),
                        bool_or(COALESCE((to_jsonb(i) ->> 'indnullsnotdistinct')::boolean, false))
                   FROM pg_index i
                   JOIN pg_class ic ON ic.oid = i.indexrelid
                   CROSS JOIN LATERAL generate_series(0, i.indnkeyatts - 1) AS k(n)
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[k.n]
                  WHERE i.indrelid = to_regclass($1) AND i.indisunique
                    AND i.indpred IS NULL AND i.indexprs IS NULL
                  GROUP BY ic.relname ORDER BY ic.relname",
                &[&table],
            )
            .await
            .map_err(|e| classify(e, "unique keys"))?;
        Ok(rows
            .iter()
            .map(|r| sql::UniqueKey { name: r.get(0), columns: r.get(1), nulls_equal: r.get(2), generated: false })
            .collect())
    }

    /// Refuses anonymization rules the table cannot take, before any
    /// change: the columns' own limits, then every unique key of several
    /// columns the rules would leave two records sharing, and every
    /// unique index on expressions, with a condition or on a generated
    /// column. Returns the rules' columns (see [`Self::check_rules`]) and
    /// the table's unique keys, such an index as a key of the hashed
    /// columns it reads (see [`sql::UniqueKey::hashed_reads`],
    /// [`Self::give_fresh_hashes`]).
    async fn check_anonymization(
        &self,
        sel: &Selection,
        rules: &[super::FieldRule],
        salt: &str,
    ) -> Result<(Vec<(String, (Option<i64>, bool))>, Vec<sql::UniqueKey>), ScrubError> {
        let cols = self.check_rules(sel, rules).await?;
        let column = column_of(&cols);
        let table = Self::qualified(&sel.table);
        // A fixed value its column's type cannot take, refused before any
        // change and named: a batch's own message would leave it out, as
        // it leaves out every value the server quotes (a record's may be
        // personal data).
        for r in rules.iter().filter(|r| r.strategy == AnonymizeStrategy::Fixed && !column(&r.field).1) {
            let mut p = Params::new(Dialect::Postgres);
            let q = format!("SELECT {} IS NULL", sql::pg_fixed(&table, r, false, &mut p));
            let stmt = self.client.prepare(&q).await.map_err(|e| classify(e, "fixed value"))?;
            let bound = bind(&stmt, &p.values, &[])?;
            if let Err(e) = self.client.query_one(&stmt, &as_refs(&bound)).await {
                let data = e.code().is_some_and(|c| c.code().starts_with("22"));
                return Err(match classify(e, "fixed value") {
                    ScrubError::Config(m) if data => ScrubError::Config(format!(
                        "{m}: the fixed value {:?} of the rule for column {} is not of the column's type",
                        r.value.as_deref().unwrap_or_default(),
                        r.field
                    )),
                    other => other,
                });
            }
        }
        let mut keys = self.unique_keys(&table).await?;
        // A key of one column is checked with the column's own rule.
        for key in keys.iter().filter(|k| k.columns.len() > 1) {
            let risky = key.risky(rules, |c, f| c == f.as_str());
            if risky.is_empty() {
                continue;
            }
            let (p, changed, values) = self.collision_parts(sel, rules, salt, &column, &key.columns);
            let Some(q) = sql::collision_query(
                sql::Dialect::Postgres,
                &table,
                key,
                |c| values.iter().find(|v| v.0 == c).map(|v| v.1.clone()),
                &changed,
            ) else {
                continue;
            };
            let stmt = self.client.prepare(&q).await.map_err(|e| classify(e, "unique key check"))?;
            let bound = bind(&stmt, &p.values, &[])?;
            let found =
                self.client.query_opt(&stmt, &as_refs(&bound)).await.map_err(|e| classify(e, "unique key check"))?;
            if found.is_some() {
                return Err(key.refusal(&risky));
            }
        }
        // Indexes on expressions or with conditions, as the server sees
        // them: `lower` making `A@x` and `a@x` one, a condition taking in
        // records a NULL brings under it.
        let indexes = self.indexes_on_expressions_or_conditions(&table).await?;
        for index in &indexes {
            let risky = index.risky(sql::Dialect::Postgres, rules);
            if risky.is_empty() {
                continue;
            }
            let (p, changed, values) = self.collision_parts(sel, rules, salt, &column, &index.reads);
            let Some(q) = sql::pg_index_collision_query(
                &table,
                index,
                |c| values.iter().find(|v| v.0 == c).map(|v| v.1.clone()),
                &changed,
            ) else {
                continue;
            };
            let stmt = match self.client.prepare(&q).await {
                Ok(stmt) => stmt,
                // An index the check cannot restate (a column named as the
                // check's own names, `lethe_c`, say): left to the batches,
                // which the server refuses whole where it would be broken.
                Err(e)
                    if e.code()
                        .is_some_and(|c| c.code().starts_with("42") && *c != SqlState::INSUFFICIENT_PRIVILEGE) =>
                {
                    let error = classify(e, "unique key check");
                    tracing::warn!(index = %index.name, %error, "unique key not checked ahead");
                    continue;
                }
                Err(e) => return Err(classify(e, "unique key check")),
            };
            let bound = bind(&stmt, &p.values, &[])?;
            let found =
                self.client.query_opt(&stmt, &as_refs(&bound)).await.map_err(|e| classify(e, "unique key check"))?;
            if found.is_some() {
                return Err(index.refusal(&risky));
            }
        }
        drop(column);
        // For the fresh-hash step, as a key of the hashed columns it reads.
        keys.extend(
            indexes
                .into_iter()
                .filter_map(|i| sql::UniqueKey::hashed_reads(sql::Dialect::Postgres, i.name, i.reads, rules)),
        );
        Ok((cols, keys))
    }

    /// What a check of a unique key reading `columns` needs: its
    /// parameters, the condition selecting the records the run changes,
    /// and the new value of each rule on one of `columns` (a NULL of the
    /// column's type, for an index's condition).
    fn collision_parts<'r>(
        &self,
        sel: &Selection,
        rules: &'r [super::FieldRule],
        salt: &str,
        column: &dyn Fn(&Identifier) -> (Option<i64>, bool),
        columns: &[String],
    ) -> (Params, String, Vec<(&'r str, String)>) {
        let table = Self::qualified(&sel.table);
        let mut p = self.params();
        let pred = sql::pg_predicate(sel, &mut p);
        let done = sql::pg_anonymized(&table, rules, column, &mut p);
        let values = rules
            .iter()
            .filter(|r| columns.iter().any(|c| c == r.field.as_str()))
            .map(|r| {
                let value = match r.strategy {
                    AnonymizeStrategy::Null => {
                        format!("(NULL::{table}).{}", sql::quote(sql::Dialect::Postgres, &r.field))
                    }
                    _ => sql::pg_new_value(&table, r, salt, column, &mut p),
                };
                (r.field.as_str(), value)
            })
            .collect();
        (p, format!("{pred} AND NOT {done}"), values)
    }

    /// The table's unique indexes on expressions, with conditions or on
    /// generated columns, with their keys and conditions as the server
    /// prints them (see [`sql::ExprIndex`]) and every column they read, a
    /// generated column as its expression and the columns it reads.
    async fn indexes_on_expressions_or_conditions(&self, table: &str) -> Result<Vec<sql::ExprIndex>, ScrubError> {
        let generated: Vec<(String, String, Vec<String>)> = self
            .client
            .query(
                "SELECT a.attname::text, pg_get_expr(d.adbin, d.adrelid, true),
                        ARRAY(SELECT b.attname::text FROM pg_depend dep
                                JOIN pg_attribute b ON b.attrelid = a.attrelid AND b.attnum = dep.refobjsubid
                               WHERE dep.classid = 'pg_attrdef'::regclass AND dep.objid = d.oid
                                 AND dep.refclassid = 'pg_class'::regclass AND dep.refobjid = a.attrelid
                                 AND dep.refobjsubid > 0 AND b.attnum <> a.attnum
                               ORDER BY b.attnum)
                   FROM pg_attribute a
                   JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                  WHERE a.attrelid = to_regclass($1) AND a.attgenerated <> '' AND NOT a.attisdropped",
                &[&table],
            )
            .await
            .map_err(|e| classify(e, "generated columns"))?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let from: Vec<(String, Vec<String>)> = generated.iter().map(|g| (g.0.clone(), g.2.clone())).collect();
        let rows = self
            .client
            .query(
                "SELECT ic.relname::text,
                        ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true)
                                FROM generate_series(1, i.indnkeyatts::int) AS k ORDER BY k),
                        pg_get_expr(i.indpred, i.indrelid, true),
                        ARRAY(SELECT a.attname::text FROM pg_attribute a
                               WHERE a.attrelid = i.indrelid AND a.attnum > 0
                                 AND (a.attnum = ANY(i.indkey::int2[])
                                      OR EXISTS (SELECT 1 FROM pg_depend d
                                                  WHERE d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid
                                                    AND d.refclassid = 'pg_class'::regclass
                                                    AND d.refobjid = i.indrelid AND d.refobjsubid = a.attnum))
                               ORDER BY a.attnum),
                        COALESCE((to_jsonb(i) ->> 'indnullsnotdistinct')::boolean, false)
                   FROM pg_index i
                   JOIN pg_class ic ON ic.oid = i.indexrelid
                  WHERE i.indrelid = to_regclass($1) AND i.indisunique
                    AND (i.indpred IS NOT NULL OR i.indexprs IS NOT NULL
                         OR EXISTS (SELECT 1 FROM pg_attribute g
                                     WHERE g.attrelid = i.indrelid AND g.attnum = ANY(i.indkey::int2[])
                                       AND g.attgenerated <> ''))
                  ORDER BY 1",
                &[&table],
            )
            .await
            .map_err(|e| classify(e, "unique keys"))?;
        Ok(rows
            .iter()
            .map(|r| {
                let read: Vec<String> = r.get(3);
                let computed =
                    generated.iter().filter(|g| read.contains(&g.0)).map(|g| (g.0.clone(), g.1.clone())).collect();
                let (reads, _) = sql::through_generated(read, &from, |a, b| a == b);
                sql::ExprIndex {
                    name: r.get(0),
                    keys: r.get(1),
                    condition: r.get(2),
                    reads,
                    computed,
                    nulls_equal: r.get(4),
                }
            })
            .collect())
    }

    /// Anonymizes, in one statement, the records whose hash another record
    /// already holds in a unique key (`keys`, from
    /// [`Self::check_anonymization`]), with a fresh one (see
    /// [`sql::Anonymization::reuse_update`]); returns how many.
    async fn give_fresh_hashes(
        &self,
        sel: &Selection,
        rules: &[super::FieldRule],
        salt: &str,
        cols: &[(String, (Option<i64>, bool))],
        keys: &[sql::UniqueKey],
    ) -> Result<i64, ScrubError> {
        let table = Self::qualified(&sel.table);
        let mut p = self.params();
        let pred = sql::pg_predicate(sel, &mut p);
        let column = column_of(cols);
        let a = sql::pg_anonymization(&table, rules, salt, &column, &mut p);
        let changed = format!("{pred} AND NOT {}", a.done);
        let Some((q, _)) = a.reuse_update(sql::Dialect::Postgres, &table, keys, rules, &changed, &[]) else {
            return Ok(0);
        };
        let stmt = self.client.prepare(&q).await.map_err(|e| classify(e, "fresh hashes"))?;
        let bound = bind(&stmt, &p.values, &[])?;
        let n = self.client.execute(&stmt, &as_refs(&bound)).await.map_err(|e| classify(e, "fresh hashes"))?;
        Ok(n as i64)
    }

    /// Runs a selection to the end in bounded batches, reporting progress
    /// after every committed batch. `done_before` carries the count of an
    /// interrupted earlier attempt of the same run.
    pub async fn run(
        &self,
        sel: &Selection,
        action: &Action,
        limits: &Limits,
        done_before: i64,
        mut on_progress: impl FnMut(&Progress),
    ) -> Result<Outcome, ScrubError> {
        sel.check()?;
        let sel = &*self.settled(sel).await?;
        let table = Self::qualified(&sel.table);
        self.check_kind(&table).await?;
        self.check_time_columns(sel).await?;
        let mut params = self.params();
        let pred = sql::pg_predicate(sel, &mut params);
        let partitioned = self.partition_key(&table).await?;
        // Whole partitions first, where the time column is the key.
        let (mut partitions, mut done_before) = (Vec::new(), done_before);
        if let (Action::Delete, Some((col, _)), Some(key)) = (action, &sel.older_than, &partitioned)
            && limits.partitions != PartitionMode::Rows
            && key == col.as_str()
        {
            for (name, records) in self.whole_partitions(&table, &pred, &params.values, sel, limits.partitions).await? {
                done_before += records;
                partitions.push(name);
                on_progress(&Progress { records_done: done_before, ..Progress::default() });
            }
        }
        // Row ids are per partition: pair them with the partition's oid.
        // Each row is tested again as it is changed, against `cond` or, where
        // given, `recheck`, which leaves something of `cond` out: the batch
        // then locks its rows as it finds them (testing each locked row's
        // latest version), so that nothing changes them before they are.
        let limited = |what: &str, cond: &str, recheck: Option<&str>, limit: &str| {
            if partitioned.is_some() {
                let (lock, recheck) = recheck.map_or(("", cond), |r| (" FOR UPDATE", r));
                format!(
                    "{what} WHERE (tableoid, ctid) IN (SELECT tableoid, ctid FROM {table} WHERE {cond} LIMIT {limit}{lock}) AND {recheck}"
                )
            } else {
                format!(
                    "{what} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE {cond} LIMIT {limit})) AND {cond}"
                )
            }
        };
        // A partitioned table's batch of row ids is a join, which the
        // planner takes for one row where it expects a joined guard to keep
        // nearly every record (referencing values that match no record: a
        // declared relation's rows whose records are gone). A joined guard's
        // test among the rechecks would then read the referencing rows once
        // per record (over a minute for a batch of 5,000 records among
        // 300,000 notes on scratch tables, against 0.1 s). So the recheck
        // leaves joined guards out, and the batch locks its rows instead
        // (a fifth more time a batch there).
        let recheck = |params: &mut Params| match partitioned.is_some() && joins_guards(sel) {
            true => {
                let guards = sel.guards.iter().filter(|g| g.lookup == Lookup::PerRecord).cloned().collect();
                Some(sql::pg_predicate(&Selection { guards, ..sel.clone() }, params))
            }
            false => None,
        };
        let estimate = match (action, &partitioned) {
            (Action::Delete, None) => Some(self.estimate(&table, &pred, &params.values).await?),
            _ => None,
        };
        let block_pass = estimate.as_ref().filter(|e| e.share > limits.block_pass_above);
        let most_records = super::most_records(match &estimate {
            Some(e) => e.total,
            None => self.planned_total(&table).await?,
        });
        let (stmt, mut outcome) = match action {
            Action::Delete => {
                let outcome = if let Some(e) = block_pass {
                    let (outcome, left) =
                        self.block_pass(&table, sel, &pred, &params, e, limits, done_before, &mut on_progress).await?;
                    if left == 0 {
                        // The pass's own last count is the verification.
                        return Ok(Outcome { partitions, ..outcome });
                    }
                    // What it found is older than the batches to come.
                    Outcome { oldest_past_cutoff: None, ..outcome }
                } else {
                    Outcome { records_done: done_before, ..Outcome::default() }
                };
                let recheck = recheck(&mut params);
                let limit = format!("${}", params.values.len() + 1);
                let q = limited(&format!("DELETE FROM {table}"), &pred, recheck.as_deref(), &limit);
                (self.client.prepare(&q).await.map_err(|e| classify(e, "prepare"))?, outcome)
            }
            Action::Anonymize { rules, salt } => {
                let (cols, keys) = self.check_anonymization(sel, rules, salt).await?;
                let fresh = self.give_fresh_hashes(sel, rules, salt, &cols, &keys).await?;
                if fresh > 0 {
                    // Committed: a run resumed from here counts them still.
                    done_before += fresh;
                    on_progress(&Progress { records_done: done_before, ..Progress::default() });
                }
                let column = column_of(&cols);
                let a = sql::pg_anonymization(&table, rules, salt, &column, &mut params);
                let (sets, done) = (a.set_list(sql::Dialect::Postgres).0, a.done);
                let recheck = recheck(&mut params).map(|r| format!("{r} AND NOT {done}"));
                let limit = format!("${}", params.values.len() + 1);
                let q = limited(
                    &format!("UPDATE {table} SET {sets}"),
                    &format!("{pred} AND NOT {done}"),
                    recheck.as_deref(),
                    &limit,
                );
                // Each batch also reports what it changed that still does not
                // read as anonymized, which would otherwise be selected again.
                let q = format!(
                    "WITH lethe_changed AS ({q} RETURNING {done} AS lethe_done) \
                     SELECT count(*)::bigint, count(*) FILTER (WHERE NOT coalesce(lethe_done, false))::bigint FROM lethe_changed"
                );
                (
                    self.client.prepare(&q).await.map_err(|e| classify(e, "prepare"))?,
                    Outcome { records_done: done_before, ..Outcome::default() },
                )
            }
        };
        // Rows found by the selection: the whole run, or what a block pass
        // could not see (rows moved or added while it ran).
        let rechecked = matches!(action, Action::Anonymize { .. });
        let mut source = Limited { client: &self.client, stmt, params: params.values, rechecked, most_records };
        let before = outcome.batches;
        let more = super::drive(&mut source, limits, outcome.records_done, |p| {
            on_progress(&Progress { batches: p.batches + before, ..p.clone() })
        })
        .await?;
        outcome.records_done = more.records_done;
        outcome.batches += more.batches;
        outcome.batch_durations.extend(more.batch_durations);
        outcome.partitions = partitions;
        outcome.remaining = self.left_to_do(sel, action).await?;
        Ok(outcome)
    }

    /// Deletes what a selection matches in one pass over the table's blocks,
    /// split between up to `limits.connections` connections, each taking a
    /// contiguous share. Returns the outcome and what the selection still
    /// matches after the pass, counted once every share is done. The same
    /// count reads the oldest record left past the cutoff, whatever kept
    /// it, into the outcome: a read of its own would go through the time
    /// column's index, which still holds an entry for every record the pass
    /// deleted, each visited before the first one left. `expected` is what
    /// the planner expects of the selection and the table.
    #[allow(clippy::too_many_arguments)]
    async fn block_pass(
        &self,
        table: &str,
        sel: &Selection,
        pred: &str,
        params: &Params,
        expected: &Estimate,
        limits: &Limits,
        done_before: i64,
        on_progress: &mut impl FnMut(&Progress),
    ) -> Result<(Outcome, i64), ScrubError> {
        let blocks: i64 = self
            .client
            .query_one(
                "SELECT (pg_relation_size(to_regclass($1)) / current_setting('block_size')::int)::bigint",
                &[&table],
            )
            .await
            .map_err(|e| classify(e, "size"))?
            .get(0);
        // Small tables are not worth a second connection.
        let wanted = limits.connections.clamp(1, 16).min(1 + (blocks / 4096) as usize);
        let mut extra = Vec::new();
        while extra.len() + 1 < wanted {
            match Postgres::connect(&self.again.0, &self.again.1).await {
                Ok(db) => extra.push(db),
                Err(e) => {
                    // The server's connection limit, say: fewer shares then.
                    tracing::debug!(error = %e, "block pass continues on fewer connections");
                    break;
                }
            }
        }
        let mut range = params.clone();
        let from = range.push(Param::Text(String::new()));
        let to = range.push(Param::Text(String::new()));
        let within = format!("{} AND {pred}", block_range(&from, &to));
        // The count after the pass, and the oldest record past the cutoff.
        let mut tally = self.params();
        let tally_sql = match &sel.older_than {
            Some((col, _)) => {
                let past = sql::pg_predicate(&sel.with_kept(), &mut tally);
                let pred = sql::pg_predicate(sel, &mut tally);
                let (from, to) = (tally.push(Param::Text(String::new())), tally.push(Param::Text(String::new())));
                let (col, range) = (sql::quote(Dialect::Postgres, col), block_range(&from, &to));
                match joins_guards(sel) {
                    true => format!(
                        "SELECT (SELECT count(*) FROM {table} WHERE {range} AND {pred}), \
                                (SELECT min({col}) FROM {table} WHERE {range} AND {past})"
                    ),
                    false => format!(
                        "SELECT count(*) FILTER (WHERE {pred}), min({col}) FROM {table} WHERE {range} AND {past}"
                    ),
                }
            }
            None => {
                tally.values = range.values.clone();
                format!("SELECT count(*) FROM {table} WHERE {within}")
            }
        };
        let dbs: Vec<&Postgres> = std::iter::once(self).chain(extra.iter()).collect();
        let k = dbs.len() as i64;
        let mut shares = Vec::with_capacity(dbs.len());
        // Records a block holds for the selection, on average as far as the
        // planner knows: what bounds a range after ranges that held none.
        let density = expected.rows / blocks.max(1) as f64;
        for (i, db) in dbs.iter().enumerate() {
            let prepare = |q: String| async move { db.client.prepare(&q).await.map_err(|e| classify(e, "prepare")) };
            let (first, end) = (blocks * i as i64 / k, blocks * (i as i64 + 1) / k);
            shares.push(BlockShare {
                client: &db.client,
                delete: prepare(format!("DELETE FROM {table} WHERE {within}")).await?,
                first_selected: prepare(format!(
                    "SELECT min((ctid::text::point)[0])::bigint FROM {table} WHERE {within}"
                ))
                .await?,
                density,
                target: limits.target_batch,
                most_blocks: BLOCK_RANGE_INITIAL,
                after_empty: false,
                used: 0,
                most_records: super::most_records(expected.total),
                count: prepare(tally_sql.clone()).await?,
                count_params: tally.values.clone(),
                params: range.values.clone(),
                first_block: first,
                next_block: first,
                end_block: end,
                open_end: i as i64 == k - 1,
            });
        }
        // Each share paces itself to its part of the store's rate.
        let share_limits =
            Limits { max_records_per_second: limits.max_records_per_second.map(|r| (r / k).max(1)), ..limits.clone() };
        let progress = std::sync::Mutex::new((vec![(0i64, 0i64); shares.len()], on_progress));
        let outcomes = futures::future::try_join_all(shares.iter_mut().enumerate().map(|(i, share)| {
            let (progress, limits) = (&progress, &share_limits);
            super::drive(share, limits, 0, move |p| {
                let mut g = progress.lock().unwrap_or_else(|e| e.into_inner());
                g.0[i] = (p.records_done, p.batches);
                let combined = Progress {
                    records_done: done_before + g.0.iter().map(|s| s.0).sum::<i64>(),
                    batches: g.0.iter().map(|s| s.1).sum(),
                    ..p.clone()
                };
                (g.1)(&combined);
            })
        }))
        .await?;
        // One snapshot for every share's count: a row moved from one share's
        // blocks to another's is seen once, wherever it is.
        let oldest = sel.older_than.as_ref().map(|(col, _)| self.time_reader(col, &shares[0].count, 1));
        let mut counts: Vec<BlockCount> = shares.iter().map(|s| s.counted(oldest.clone())).collect();
        let left = CountSnapshot::sum(&mut counts, limits).await?;
        let oldest_past_cutoff =
            oldest.map(|_| counts.iter().fold(None, |acc, c| super::extreme_of(acc, c.oldest_found, false)));
        let mut outcome = Outcome { records_done: done_before, oldest_past_cutoff, ..Outcome::default() };
        for o in outcomes {
            outcome.records_done += o.records_done;
            outcome.batches += o.batches;
            outcome.batch_durations.extend(o.batch_durations);
        }
        Ok((outcome, left))
    }

    /// Records the selection still leaves for the action to do: all of
    /// them for a delete, those not yet anonymized for an anonymization.
    /// Refuses anonymization rules the table cannot take, as the run would.
    pub async fn pending(&self, sel: &Selection, action: &Action) -> Result<i64, ScrubError> {
        let sel = &*self.settled(sel).await?;
        if let Action::Anonymize { rules, salt } = action {
            self.check_anonymization(sel, rules, salt).await?;
        }
        self.left_to_do(sel, action).await
    }

    /// [`Self::pending`] without the check of the rules, for after a run.
    async fn left_to_do(&self, sel: &Selection, action: &Action) -> Result<i64, ScrubError> {
        match action {
            Action::Delete => self.count(sel).await,
            Action::Anonymize { rules, .. } => {
                let cols = self.check_rules(sel, rules).await?;
                let mut p = self.params();
                let pred = sql::pg_predicate(sel, &mut p);
                let done = sql::pg_anonymized(&Self::qualified(&sel.table), rules, &column_of(&cols), &mut p);
                self.count_where(&sel.table, &format!("{pred} AND NOT {done}"), &p.values).await
            }
        }
    }

    /// The plan of reading what a predicate matches, with EXPLAIN's options `how`.
    async fn explain(
        &self,
        how: &str,
        table: &str,
        pred: &str,
        params: &[Param],
    ) -> Result<Vec<tokio_postgres::Row>, ScrubError> {
        let q = format!("EXPLAIN {how} SELECT 1 FROM {table} WHERE {pred}");
        let stmt = self.client.prepare(&q).await.map_err(|e| classify(e, "plan"))?;
        let bound = bind(&stmt, params, &[])?;
        self.client.query(&stmt, &as_refs(&bound)).await.map_err(|e| classify(e, "plan"))
    }

    /// A relation's kind (`pg_class.relkind`) and its blocks (none of its
    /// own for a partitioned table, whose rows are in its partitions).
    async fn relation(&self, table: &str) -> Result<Option<(String, i64)>, ScrubError> {
        let row = self
            .client
            .query_opt(
                "SELECT relkind::text, (pg_relation_size(oid) / current_setting('block_size')::int)::bigint \
                 FROM pg_class WHERE oid = to_regclass($1)",
                &[&table],
            )
            .await
            .map_err(|e| classify(e, "size"))?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// The planner's view of a predicate: what it selects, of how many
    /// records, and whether its plan reads every block of the table.
    async fn estimate(&self, table: &str, pred: &str, params: &[Param]) -> Result<Estimate, ScrubError> {
        let plan = self.explain("", table, pred, params).await?;
        let whole = plan.iter().any(|r| r.get::<_, String>(0).contains("Seq Scan on"));
        // The whole table as the same planner sees it: from its statistics
        // scaled to its size now, or from its size alone where it has never
        // been analyzed (`reltuples` still -1, no count to divide by).
        let total = self.planned_total(table).await?;
        let rows = planned_rows(&plan);
        Ok(Estimate { share: rows / total.max(1.0), rows, total, whole })
    }

    /// The records the planner expects a table to hold.
    async fn planned_total(&self, table: &str) -> Result<f64, ScrubError> {
        Ok(planned_rows(&self.explain("", table, "true", &[]).await?))
    }

    /// For tests and tools: runs SQL text as is.
    pub async fn execute_batch(&self, sql: &str) -> Result<(), ScrubError> {
        self.client.batch_execute(sql).await.map_err(|e| classify(e, "execute"))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_range_is_bounded_by_the_denser_of_what_it_saw_and_what_the_planner_expects() {
        let (target, ms) = (Duration::from_millis(200), Duration::from_millis);
        // As dense as expected: the range that takes the target time.
        assert_eq!(range_bound(target, ms(100), 5_000, 100, 50.0), 200);
        // Denser than expected: the same.
        assert_eq!(range_bound(target, ms(100), 5_000, 100, 10.0), 200);
        // A tenth as dense as expected: a tenth of that, in case the next
        // blocks are as full as the planner says.
        assert_eq!(range_bound(target, ms(100), 500, 100, 50.0), 20);
        // Never below 8 blocks nor above 2^20.
        assert_eq!(range_bound(target, ms(10_000), 1, 100, 50.0), 8);
        assert_eq!(range_bound(target, ms(1), 1_000_000, 1_000_000, 0.0), 1 << 20);
    }
}
