//! The scrub engine: what one run selects, how it deletes or anonymizes in
//! bounded batches, and what it reports. One file per store driver; the SQL
//! quoting and predicate building is shared by the SQL drivers.
//!
//! Safety rests on the selection being fixed for the whole run: the cutoff,
//! the minimum-retention boundary and the held subjects are decided before
//! the first batch and re-checked by every statement that changes data, so
//! a crash, a retry or a concurrent writer can never widen what a run
//! touches. Resuming is re-running the same selection: what was done is no
//! longer selected.

pub mod driver;
pub mod files;
pub mod keys;
pub mod local;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod s3;
pub mod sql;
pub mod sqlite;
pub mod tls;

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::api::{AnonymizeStrategy, Identifier, UnixTimeUnit};

/// Where and as whom an SQL driver connects.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: Option<String>,
    pub tls: tls::TlsOptions,
}

/// What a probe finds.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub server_version: String,
    pub can_select: bool,
    pub can_delete: bool,
    pub can_update: bool,
}

/// A table, optionally schema-qualified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub schema: Option<Identifier>,
    pub name: Identifier,
}

/// Which records a run touches. Every condition is ANDed.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub table: Table,
    /// Only records whose time column is before the instant (NULL never expires).
    pub older_than: Option<(Identifier, DateTime<Utc>)>,
    /// Only records of the subject: any of these columns equal to any of the values.
    pub subject: Vec<(Identifier, Vec<String>)>,
    /// Never records whose column is at or after the instant (minimum
    /// retention; a NULL there is treated as "too young to know" and kept).
    pub keep_newer_than: Option<(Identifier, DateTime<Utc>)>,
    /// Never records of held subjects: a column equal to any of the values.
    pub held: Vec<(Identifier, Vec<String>)>,
    /// Never records that rows of another table reference where they must
    /// stay: held rows, which deleting the record would reach through the
    /// foreign key (a cascade, or setting it NULL), and any row of a key
    /// that refuses the change (see [`GuardReason`]).
    pub guards: Vec<Guard>,
}

/// Rows of another table that must stay as they are, and how they refer
/// to the selected table: the records they reference are kept (and counted
/// as held, or as referenced).
#[derive(Debug, Clone, PartialEq)]
pub struct Guard {
    /// Why those rows stay.
    pub reason: GuardReason,
    /// The referencing table.
    pub table: Table,
    /// Its columns, each referencing the selected table's column at the same
    /// place in `references`.
    pub columns: Vec<Identifier>,
    pub references: Vec<Identifier>,
    /// Which of its rows must stay: all (`None`, a hold on the whole
    /// table's Dataset), or those with a column equal to any of the values
    /// (held subjects).
    pub rows: Option<Vec<(Identifier, Vec<String>)>>,
    /// How the store finds a record's referencing rows, where a driver
    /// chooses (PostgreSQL, MySQL/MariaDB): left [`Lookup::Unsettled`] by
    /// whoever makes the guard, and settled by the driver from the store's
    /// indexes.
    pub lookup: Lookup,
}

/// How a guard's referencing rows are found for the selected records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Lookup {
    /// Not yet asked of the store: read as [`Lookup::Joined`].
    #[default]
    Unsettled,
    /// Each record looked up on its own, through an index of the
    /// referencing table whose first column is a referencing column.
    PerRecord,
    /// The referencing rows read once per statement, for the records to be
    /// compared with (a hash of them on PostgreSQL, a table with an index
    /// of its own on MariaDB). Where no index leads with a referencing
    /// column, a lookup per record would read the whole referencing table
    /// once for every record.
    Joined,
}

/// Why a guard's rows stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardReason {
    /// A legal hold on them (through their Dataset).
    Hold,
    /// A foreign key that neither cascades nor sets a value on delete (or,
    /// for an anonymization rewriting a column it references, on update):
    /// the server refuses to delete or rewrite a record while any row
    /// references it, so the run keeps such records (counted as
    /// referenced) and changes the rest, where the first batch holding one
    /// would otherwise fail.
    Reference,
}

/// A foreign key of another table referencing a table, as the catalog
/// names it: the referencing table (its schema when not the connection's
/// own), its columns, the referenced columns in the same order, and
/// whether it refuses to let a referenced record be deleted, or its
/// referenced columns be changed (`NO ACTION` or `RESTRICT`, where
/// `CASCADE`, `SET NULL` and `SET DEFAULT` change the referencing rows
/// instead).
#[derive(Debug, Clone, PartialEq)]
pub struct ReferencingKey {
    pub schema: Option<String>,
    pub table: String,
    pub columns: Vec<String>,
    pub references: Vec<String>,
    pub restricts: bool,
    pub restricts_update: bool,
}

impl ReferencingKey {
    /// The guard keeping every record a row of this key's table refers to,
    /// for a key that refuses what `action` does to them: their deletion,
    /// or a change of a referenced column by an anonymization rule; `None`
    /// otherwise. A name Lethe cannot quote is refused: such a key could
    /// not be kept.
    pub fn guard(&self, action: &Action) -> Result<Option<Guard>, ScrubError> {
        let refused = match action {
            Action::Delete => self.restricts,
            Action::Anonymize { rules, .. } => {
                // Column names compared as the least strict server would.
                let rewritten = |c: &String| rules.iter().any(|r| r.field.as_str().eq_ignore_ascii_case(c));
                self.restricts_update && self.references.iter().any(rewritten)
            }
        };
        if !refused {
            return Ok(None);
        }
        let name = |n: &str| {
            Identifier::new(n).map_err(|e| {
                ScrubError::Config(format!(
                    "the foreign key of {} referencing this table names {n:?}, which Lethe cannot quote ({e})",
                    self.table
                ))
            })
        };
        let names = |v: &[String]| v.iter().map(|n| name(n)).collect::<Result<Vec<_>, _>>();
        Ok(Some(Guard {
            reason: GuardReason::Reference,
            table: Table { schema: self.schema.as_deref().map(name).transpose()?, name: name(&self.table)? },
            columns: names(&self.columns)?,
            references: names(&self.references)?,
            rows: None,
            lookup: Lookup::Unsettled,
        }))
    }
}

impl Guard {
    /// Whether some row could be guarded (a list of no values guards none).
    pub fn guards_any(&self) -> bool {
        self.rows.as_ref().is_none_or(|r| r.iter().any(|(_, v)| !v.is_empty()))
    }
}

/// Fills a subject template (`users/{user_id}/`) with one subject's
/// identifiers, each passed through `value` (which checks or escapes it);
/// `None` when the template names a type the subject lacks.
pub fn render_template(
    template: &str,
    identifiers: &std::collections::BTreeMap<String, String>,
    mut value: impl FnMut(&str, &str) -> Result<String, ScrubError>,
) -> Result<Option<String>, ScrubError> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| ScrubError::Config(format!("template {template:?}: unclosed '{{'")))?;
        let key = &rest[start + 1..start + end];
        let Some(v) = identifiers.get(key) else { return Ok(None) };
        out.push_str(&value(key, v)?);
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(Some(out))
}

/// Refuses an anonymization where a store can only delete whole records.
pub fn delete_only(action: &Action, store: &str) -> Result<(), ScrubError> {
    match action {
        Action::Delete => Ok(()),
        Action::Anonymize { .. } => {
            Err(ScrubError::Config(format!("{store} cannot be anonymized in place; use the delete action")))
        }
    }
}

impl Selection {
    /// The same selection with what keeps records from it set aside (holds,
    /// minimum retention): every record past its cutoff, of its subject.
    pub fn with_kept(&self) -> Selection {
        Selection { keep_newer_than: None, held: vec![], guards: vec![], ..self.clone() }
    }

    /// The same selection with its holds set aside (held subjects, held
    /// rows of other tables), still keeping what references keep.
    pub fn without_holds(&self) -> Selection {
        Selection { held: vec![], ..self.without_guards(GuardReason::Hold) }
    }

    /// The same selection with what foreign keys refusing deletion keep set aside.
    pub fn without_references(&self) -> Selection {
        self.without_guards(GuardReason::Reference)
    }

    /// The same selection with the guards of one reason set aside.
    pub fn without_guards(&self, reason: GuardReason) -> Selection {
        Selection { guards: self.guards.iter().filter(|g| g.reason != reason).cloned().collect(), ..self.clone() }
    }

    /// A selection with no condition at all would select every record;
    /// refuse it so no bug upstream can turn into a table wipe.
    pub fn check(&self) -> Result<(), ScrubError> {
        if self.older_than.is_none() && self.subject.iter().all(|(_, v)| v.is_empty()) {
            return Err(ScrubError::Config("a run must select by time, by subject, or both".into()));
        }
        if !self.subject.is_empty() && self.subject.iter().all(|(_, v)| v.is_empty()) {
            // Dropping the subject condition would widen the run to everyone.
            return Err(ScrubError::Config("a subject without identifier values selects nothing".into()));
        }
        if let Some(g) = self.guards.iter().find(|g| g.columns.is_empty() || g.columns.len() != g.references.len()) {
            return Err(ScrubError::Config(format!(
                "a relation from {} names {} columns referencing {}",
                g.table.name,
                g.columns.len(),
                g.references.len()
            )));
        }
        Ok(())
    }

    /// Selects by the cutoff alone: no subject, nothing held, no minimum retention.
    pub fn time_only(&self) -> bool {
        self.older_than.is_some()
            && self.subject.is_empty()
            && self.held.is_empty()
            && self.guards.is_empty()
            && self.keep_newer_than.is_none()
    }
}

/// One anonymization rule, resolved for a run.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldRule {
    pub field: Identifier,
    pub strategy: AnonymizeStrategy,
    pub value: Option<String>,
}

/// What happens to selected records.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Delete,
    Anonymize { rules: Vec<FieldRule>, salt: String },
}

/// How hard a run may work the store.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Batches are sized to take about this long.
    pub target_batch: Duration,
    pub initial_batch: i64,
    pub min_batch: i64,
    pub max_batch: i64,
    pub max_records_per_second: Option<i64>,
    pub lock_timeout: Duration,
    pub statement_timeout: Duration,
    /// What happens to a partition whose every record is selected.
    pub partitions: PartitionMode,
    /// Above this estimated share of the table selected, a delete reads the
    /// table once in block ranges instead of finding rows through an index
    /// batch by batch (PostgreSQL), or walks the primary key in ranges
    /// (MySQL/MariaDB, where a plan that reads the whole table counts as
    /// all of it).
    pub block_pass_above: f64,
    /// Connections a block pass may use at once, each deleting its own
    /// share of the table's blocks.
    pub connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            target_batch: Duration::from_millis(200),
            initial_batch: 1_000,
            min_batch: 100,
            max_batch: 100_000,
            max_records_per_second: None,
            lock_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(30),
            block_pass_above: 0.05,
            connections: 1,
            partitions: PartitionMode::Drop,
        }
    }
}

/// Partitions lying wholly past the cutoff, with every record in them
/// selected, can go whole: far cheaper than deleting row by row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PartitionMode {
    /// Drop the partition.
    #[default]
    Drop,
    /// Detach it (the table stays, outside the dataset) for someone to archive.
    Detach,
    /// Never: delete row by row.
    Rows,
}

/// Progress reported after every committed batch, for the ScrubRun status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Records changed by this run, including before a resume.
    pub records_done: i64,
    pub batches: i64,
    pub last_batch_size: i64,
    pub last_batch: Duration,
    pub elapsed: Duration,
}

/// The outcome of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub records_done: i64,
    pub batches: i64,
    /// Batch durations, for p50/p99 reporting.
    pub batch_durations: Vec<Duration>,
    /// Records still selected after the run (0 expected).
    pub remaining: i64,
    /// Partitions dropped or detached whole instead of deleted row by row.
    pub partitions: Vec<String>,
    /// Objects the store refused to delete because an S3 Object Lock
    /// protects them, by the date each becomes deletable.
    pub locked: Vec<Locked>,
    /// Redis keys without a TTL given the Dataset's `keys.maxTtl`.
    pub expiries_set: i64,
    /// The oldest record left past the selection's cutoff, whatever kept
    /// it (a hold, minimum retention), where the run's own last count read
    /// it: `Some(None)` when none is left. `None` where the run did not;
    /// [`driver::Driver::extreme`] reads it then.
    pub oldest_past_cutoff: Option<Option<DateTime<Utc>>>,
}

/// Objects under an S3 Object Lock: deletable from `until`, or, under a
/// lock's legal hold, once someone lifts it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Locked {
    pub until: Option<DateTime<Utc>>,
    pub legal_hold: bool,
    pub objects: i64,
}

impl From<&Locked> for crate::api::LockedObjects {
    fn from(l: &Locked) -> Self {
        crate::api::LockedObjects { objects: l.objects, retain_until: l.until, legal_hold: l.legal_hold }
    }
}

/// What a dry run or a plan finds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// Records the run would change.
    pub selected: i64,
    /// Records in the table.
    pub total: i64,
    /// Records that would be selected but for a hold.
    pub held: i64,
    /// Records that would be selected but for minimum retention.
    pub under_minimum: i64,
    /// Records that would be selected but for rows of another table still
    /// referencing them through a key that refuses what the run does.
    pub referenced: i64,
}

/// Errors, each with what should happen next.
#[derive(Debug, thiserror::Error)]
pub enum ScrubError {
    /// Wrong configuration: retrying will not help; nothing was changed.
    #[error("configuration error: {0}")]
    Config(String),
    /// Authentication or privileges: fix credentials or grants.
    #[error("access denied: {0}")]
    Access(String),
    /// The store went away: retry later, resuming.
    #[error("store unavailable (retryable): {0}")]
    Unavailable(String),
    /// A legal hold covers the data: nothing is deleted until it ends.
    #[error("held: {0}")]
    Held(String),
    /// A lock or statement timeout, a deadlock: retry the batch smaller.
    #[error("store busy (retryable): {0}")]
    Busy(String),
}

impl ScrubError {
    /// The same error with its message passed through `f`.
    pub fn map_text(self, f: impl FnOnce(String) -> String) -> ScrubError {
        match self {
            ScrubError::Config(t) => ScrubError::Config(f(t)),
            ScrubError::Access(t) => ScrubError::Access(f(t)),
            ScrubError::Unavailable(t) => ScrubError::Unavailable(f(t)),
            ScrubError::Held(t) => ScrubError::Held(f(t)),
            ScrubError::Busy(t) => ScrubError::Busy(f(t)),
        }
    }

    pub fn retryable(&self) -> bool {
        matches!(self, ScrubError::Unavailable(_) | ScrubError::Busy(_))
    }

    /// A stable CamelCase reason for conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            ScrubError::Config(_) => "InvalidConfiguration",
            ScrubError::Access(_) => "AccessDenied",
            ScrubError::Unavailable(_) => "StoreUnavailable",
            ScrubError::Busy(_) => "StoreBusy",
            ScrubError::Held(_) => "LegalHold",
        }
    }
}

/// Next batch size: aim for the target duration, never more than double or
/// less than half the last one, within the limits (the maximum winning
/// where limits put the minimum above it).
pub fn next_batch_size(limits: &Limits, current: i64, took: Duration) -> i64 {
    let took = took.as_secs_f64().max(0.001);
    let ideal = (current as f64 * limits.target_batch.as_secs_f64() / took) as i64;
    ideal.clamp(current / 2, current * 2).max(limits.min_batch).min(limits.max_batch)
}

/// What settling a guard's [`Lookup`] needs of a driver.
pub(crate) trait Indexes {
    /// Whether the guard's referencing table has an index the server would
    /// use to find a record's referencing rows, one whose first column is a
    /// referencing column (false for a table not found, whose statements
    /// then fail as they would).
    async fn leads_an_index(&self, g: &Guard) -> Result<bool, ScrubError>;
}

/// The selection with each unsettled guard's [`Lookup`] settled: per
/// record where an index leads with a referencing column, joined otherwise.
pub(crate) async fn settled<'s, I: Indexes>(
    i: &I,
    sel: &'s Selection,
) -> Result<std::borrow::Cow<'s, Selection>, ScrubError> {
    if sel.guards.iter().all(|g| g.lookup != Lookup::Unsettled) {
        return Ok(std::borrow::Cow::Borrowed(sel));
    }
    let mut sel = sel.clone();
    for g in sel.guards.iter_mut().filter(|g| g.lookup == Lookup::Unsettled) {
        g.lookup = if i.leads_an_index(g).await? { Lookup::PerRecord } else { Lookup::Joined };
    }
    Ok(std::borrow::Cow::Owned(sel))
}

/// What a dry run needs of a driver: counting a selection and a table.
pub(crate) trait Counting {
    async fn count(&self, sel: &Selection) -> Result<i64, ScrubError>;
    async fn total(&self, table: &Table) -> Result<i64, ScrubError>;
}

/// The dry run, the same for every driver: what the run would change, and
/// what holds and minimum retention keep from it.
pub(crate) async fn plan<C: Counting>(c: &C, sel: &Selection) -> Result<Counts, ScrubError> {
    sel.check()?;
    let selected = c.count(sel).await?;
    let without_minimum = Selection { keep_newer_than: None, ..sel.clone() };
    let referenced = match sel.guards.iter().any(|g| g.reason == GuardReason::Reference) {
        true => c.count(&sel.without_references()).await? - selected,
        false => 0,
    };
    Ok(Counts {
        selected,
        total: c.total(&sel.table).await?,
        held: c.count(&sel.without_holds()).await? - selected,
        under_minimum: c.count(&without_minimum).await? - selected,
        referenced,
    })
}

/// The earlier (or, with `newest`, later) of two values, either absent.
pub(crate) fn extreme_of<T: Ord>(a: Option<T>, b: Option<T>, newest: bool) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if newest { a.max(b) } else { a.min(b) }),
        (a, b) => a.or(b),
    }
}

/// The refusal when a batch's records still do not read as anonymized
/// after it: the next batch would select them again, and so on forever.
pub(crate) fn not_anonymized(unfinished: i64, of: i64) -> ScrubError {
    ScrubError::Config(format!(
        "{unfinished} of {of} records just anonymized still do not read as anonymized (a trigger, or the column's \
         type, changes the values written); stopping instead of rewriting them forever"
    ))
}

/// The most records a run changes in a table the planner expects to hold
/// `records`: twice as many, and some more for a table small or growing.
pub(crate) fn most_records(records: f64) -> i64 {
    (2.0 * records.max(0.0)).min(1e15) as i64 + 10_000
}

fn endless(changed: i64, most: i64) -> ScrubError {
    ScrubError::Config(format!(
        "the run has changed {changed} records, more than twice what the table held when it began ({most} at \
         most): the table gains records the selection matches as fast as they go (a trigger or rule inserting what \
         is deleted or changed?); stopping instead of running forever"
    ))
}

/// The advice when a statement other than a batch (a count that cannot be
/// split, a catalog query) reaches the store's statement timeout.
pub(crate) const READ_TIMEOUT: &str = "a read that cannot be split took longer than the DataStore's \
     limits.statementTimeout; raise it (batches keep to limits.targetBatchMillis whatever it is)";

/// The advice when a foreign key without `ON DELETE CASCADE` (or `SET
/// NULL`) refuses a batch: the server's message names the key and the
/// table whose records still reference the ones selected.
pub(crate) const STILL_REFERENCED: &str = "records this run selects are still referenced by another table's \
     records through a foreign key that neither cascades nor sets NULL; remove or change those first (children \
     before parents: a Dataset of that table, declared as a relation of this one), or let the key cascade";

/// The unit of an integer time column: the Dataset's, where it says one.
pub(crate) fn unix_unit(column: &Identifier, unit: Option<UnixTimeUnit>) -> Result<UnixTimeUnit, ScrubError> {
    unit.ok_or_else(|| {
        ScrubError::Config(format!(
            "time column {column} holds integers; set the Dataset's timestamps.unixTimeUnit to what they count \
             (Seconds or Milliseconds since 1970)"
        ))
    })
}

/// Refuses an integer time column whose values, read in `unit`, cannot be
/// when records were written: the unit is wrong, and the run would take
/// every record (seconds read as milliseconds: even the newest is before
/// 1973) or never any (milliseconds read as seconds: even the oldest is
/// after the year 5000). `range` is the column's oldest value, and its
/// newest up to [`unix_time_ceiling`] (a far-future stand-in value would
/// hide the first case otherwise).
pub(crate) fn check_unix_time_range(
    column: &Identifier,
    range: (Option<i64>, Option<i64>),
    unit: UnixTimeUnit,
) -> Result<(), ScrubError> {
    let seconds = |n: i64| n.div_euclid(unit.per_second());
    let advice = "check the Dataset's timestamps.unixTimeUnit; nothing was changed";
    let (Some(oldest), newest) = range else { return Ok(()) };
    if oldest > unix_time_ceiling(unit) {
        return Err(ScrubError::Config(format!(
            "read as {unit:?}, even the oldest {column} is after the year 5000, so no record would ever expire; {advice}"
        )));
    }
    if let Some(newest) = newest
        && unit == UnixTimeUnit::Milliseconds
        // 10^8 seconds is 1973-03-03.
        && seconds(newest) < 100_000_000
    {
        let day = unit.instant(newest).map(|t| t.format("%Y-%m-%d").to_string()).unwrap_or_default();
        return Err(ScrubError::Config(format!(
            "read as Milliseconds, even the newest {column} is from {day}, so every record would look expired; \
             the column likely counts Seconds: {advice}"
        )));
    }
    Ok(())
}

/// The largest count of `unit` taken for a time when checking the unit:
/// 10^11 seconds, in the year 5138.
pub(crate) fn unix_time_ceiling(unit: UnixTimeUnit) -> i64 {
    100_000_000_000 * unit.per_second()
}

/// What the server reports about a column an anonymization rule names.
pub(crate) struct ColumnFacts {
    pub nullable: bool,
    pub is_text: bool,
    pub max_len: Option<i64>,
    /// Set when the server computes the column's values itself, saying how.
    pub computed: Option<&'static str>,
    /// The column alone is a unique key (primary key, or a unique index
    /// or constraint on it and nothing else, without a condition).
    pub unique: bool,
    /// That unique key counts NULLs as equal (PostgreSQL's `NULLS NOT
    /// DISTINCT`), so only one record may hold NULL.
    pub one_null: bool,
}

/// The fewest characters a salted hash keeps in a UNIQUE column: `anon-`
/// and 16 hex digits (64 bits), so distinct records keep distinct values.
const UNIQUE_HASH_LEN: i64 = 21;

/// Refuses an anonymization rule a column cannot take, before anything changes.
pub(crate) fn check_rule(rule: &FieldRule, col: &ColumnFacts) -> Result<(), ScrubError> {
    let f = &rule.field;
    if let Some(how) = col.computed {
        return Err(ScrubError::Config(format!(
            "column {f} is {how}: the database sets its values itself, so it cannot be anonymized \
             (for a generated column, anonymize the columns it is computed from)"
        )));
    }
    match rule.strategy {
        AnonymizeStrategy::Null if !col.nullable => {
            Err(ScrubError::Config(format!("column {f} is NOT NULL; use fixed, hash or redact")))
        }
        AnonymizeStrategy::Null if col.one_null => Err(ScrubError::Config(format!(
            "column {f} is UNIQUE NULLS NOT DISTINCT: only one record may hold NULL; use hash"
        ))),
        AnonymizeStrategy::Hash | AnonymizeStrategy::Redact if !col.is_text => {
            Err(ScrubError::Config(format!("column {f} is not text; hash and redact need a text column")))
        }
        AnonymizeStrategy::Hash if col.max_len.is_some_and(|l| l < 13) => Err(ScrubError::Config(format!(
            "column {f} holds at most {} characters, too few for a hash",
            col.max_len.unwrap_or(0)
        ))),
        AnonymizeStrategy::Hash if col.unique && col.max_len.is_some_and(|l| l < UNIQUE_HASH_LEN) => {
            Err(ScrubError::Config(format!(
                "column {f} is UNIQUE and holds at most {} characters, too few for hashes that stay distinct \
                 (at least {UNIQUE_HASH_LEN})",
                col.max_len.unwrap_or(0)
            )))
        }
        AnonymizeStrategy::Fixed
            if col.max_len.is_some_and(|l| rule.value.as_deref().unwrap_or_default().chars().count() as i64 > l) =>
        {
            Err(ScrubError::Config(format!(
                "column {f} holds at most {} characters, fewer than the fixed value",
                col.max_len.unwrap_or(0)
            )))
        }
        AnonymizeStrategy::Fixed | AnonymizeStrategy::Redact if col.unique => Err(ScrubError::Config(format!(
            "column {f} is UNIQUE: {} would give records the same value; use hash (distinct values per record) \
             or null",
            if rule.strategy == AnonymizeStrategy::Fixed { "one fixed value" } else { "redaction" }
        ))),
        _ => Ok(()),
    }
}

/// Where a run's batches come from: each driver's way of finding and
/// changing one bounded batch.
pub(crate) trait BatchSource {
    /// (initial, minimum, maximum) batch size in the source's unit.
    fn sizes(&self, limits: &Limits) -> (i64, i64, i64);
    /// Changes one batch; `None` once the selection is exhausted.
    async fn batch(&mut self, size: i64) -> Result<Option<i64>, ScrubError>;
    /// The size the last batch took, where the source chose another than
    /// the one `asked`: the next is sized from it.
    fn used(&self, asked: i64) -> i64 {
        asked
    }
    /// The most records the run may change. A run changing more is
    /// changing records its table gains as fast as it changes them (a
    /// trigger inserting what is deleted, say), and would never end.
    fn most_records(&self) -> Option<i64> {
        None
    }
}

/// The batch loop shared by the drivers: adaptive sizing, smaller retries
/// when the store is busy, pacing, and progress after every batch.
pub(crate) async fn drive<B: BatchSource>(
    source: &mut B,
    limits: &Limits,
    done_before: i64,
    mut on_progress: impl FnMut(&Progress),
) -> Result<Outcome, ScrubError> {
    let start = std::time::Instant::now();
    let mut progress = Progress { records_done: done_before, ..Progress::default() };
    let mut outcome = Outcome::default();
    let (mut size, _, _) = source.sizes(limits);
    let mut retries = 0;
    loop {
        let before = source.sizes(limits);
        let t = std::time::Instant::now();
        let n = match source.batch(size).await {
            Ok(Some(n)) => n,
            Ok(None) => break,
            Err(ScrubError::Busy(_)) if retries < 5 => {
                // Smaller and a little later: do not fight the application for locks.
                retries += 1;
                size = (size / 2).max(before.1);
                tokio::time::sleep(Duration::from_millis(100 * retries)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        retries = 0;
        size = source.used(size);
        let took = t.elapsed();
        outcome.batch_durations.push(took);
        progress.records_done += n;
        progress.batches += 1;
        progress.last_batch_size = n;
        progress.last_batch = took;
        progress.elapsed = start.elapsed();
        on_progress(&progress);
        if let Some(most) = source.most_records()
            && progress.records_done - done_before > most
        {
            return Err(endless(progress.records_done - done_before, most));
        }
        if let Some(rps) = limits.max_records_per_second {
            let min = Duration::from_secs_f64((progress.records_done - done_before) as f64 / rps as f64);
            if let Some(wait) = min.checked_sub(start.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let (initial, min, max) = source.sizes(limits);
        size = if (initial, min, max) != before {
            // The source changed its unit (blocks to records): start afresh.
            initial
        } else {
            next_batch_size(&Limits { min_batch: min, max_batch: max, ..limits.clone() }, size, took)
        };
    }
    outcome.records_done = progress.records_done;
    outcome.batches = progress.batches;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_size_adapts_within_bounds() {
        let l = Limits::default();
        assert_eq!(next_batch_size(&l, 1000, Duration::from_millis(100)), 2000);
        assert_eq!(next_batch_size(&l, 1000, Duration::from_millis(800)), 500);
        assert_eq!(next_batch_size(&l, 1000, Duration::from_millis(250)), 800);
        assert_eq!(next_batch_size(&l, 100, Duration::from_secs(5)), 100);
        assert_eq!(next_batch_size(&l, 100_000, Duration::from_millis(1)), 100_000);
        // A minimum above the maximum: the maximum holds, and nothing panics.
        let crossed = Limits { min_batch: 100, max_batch: 50, ..Limits::default() };
        assert_eq!(next_batch_size(&crossed, 50, Duration::from_millis(1)), 50);
        assert_eq!(next_batch_size(&crossed, 50, Duration::from_secs(5)), 50);
    }

    #[test]
    fn a_selection_without_conditions_is_refused() {
        let t = Table { schema: None, name: Identifier::new("t").unwrap() };
        let s = Selection {
            table: t,
            older_than: None,
            subject: vec![],
            keep_newer_than: None,
            held: vec![],
            guards: vec![],
        };
        assert!(matches!(s.check(), Err(ScrubError::Config(_))));
        // A subject whose identifiers are all missing must not become "everyone older than the cutoff".
        let col = Identifier::new("email").unwrap();
        let s = Selection { older_than: Some((col.clone(), chrono::Utc::now())), subject: vec![(col, vec![])], ..s };
        assert!(matches!(s.check(), Err(ScrubError::Config(_))));
    }
}
