//! The SQLite driver: the embedded store for the demo and small installs.
//!
//! Each batch is one statement in its own transaction:
//! `DELETE FROM t WHERE rowid IN (SELECT rowid FROM t WHERE <selection> LIMIT n) AND <selection>`
//! (the primary key in place of `rowid` where the table has none, or where
//! columns shadow every name of it).
//! SQLite stores times as ISO-8601 text or as Unix seconds; both are read
//! (`unixepoch(.., 'subsec')` for text), and a value that is neither reads
//! as NULL, which never expires. Values are bound; column affinity keeps
//! `'42abc'` from equalling the integer 42.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use rusqlite::{Connection, OpenFlags, OptionalExtension, functions::FunctionFlags, types::Value};
use sha2::Digest;

use super::{
    Action, Counts, FieldRule, Limits, Outcome, Probe, Progress, ScrubError, Selection, Table,
    sql::{self, Anonymization, Dialect},
};
use crate::api::{AnonymizeStrategy, Identifier, UnixTimeUnit};

pub struct Sqlite {
    conn: Arc<Mutex<Connection>>,
    readonly: bool,
    /// What time columns stored as numbers count (seconds unless the
    /// Dataset's `unixTimeUnit` says otherwise).
    unix_time: UnixTimeUnit,
}

fn classify(e: rusqlite::Error, what: &str) -> ScrubError {
    use rusqlite::ErrorCode::*;
    let text = format!("{what}: {e}");
    match sqlite_error(&e).map(|f| f.code) {
        Some(DatabaseBusy | DatabaseLocked) => ScrubError::Busy(text),
        Some(PermissionDenied | ReadOnly | AuthorizationForStatementDenied) => ScrubError::Access(text),
        Some(CannotOpen | SystemIoFailure | DiskFull) => ScrubError::Unavailable(text),
        // An `ON DELETE RESTRICT` key refuses through a trigger of its own.
        _ if matches!(&e, rusqlite::Error::SqliteFailure(f, m)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
                || (f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_TRIGGER
                    && m.as_deref().is_some_and(|m| m.contains("FOREIGN KEY")))) =>
        {
            ScrubError::Config(format!("{text}: {}", super::STILL_REFERENCED))
        }
        // A key whose parent columns are neither the primary key nor
        // unique, which only a connection that enforces keys notices.
        _ if text.contains("foreign key mismatch") => ScrubError::Config(format!(
            "{text}: the schema declares a foreign key SQLite cannot enforce (the columns it references are neither \
             the primary key nor unique); Lethe enforces foreign keys as declared, so correct the declaration"
        )),
        _ => ScrubError::Config(text),
    }
}

/// Identifier values as a column of any declared type compares them: the
/// text, the same bytes as a blob, and the integer where the text is one
/// as SQLite writes it (`42`, not `042` or `+42`). A column declared with
/// no type (or `BLOB`) converts nothing, so an integer or a blob stored
/// there never equals the text `'42'`: a held subject's rows would go
/// unprotected, a subject's rows unerased. A column that converts
/// (`INTEGER`, `TEXT`, `NUMERIC`) makes the text and the integer one value,
/// and holds no blob an application did not write as one, so its values
/// are bound as text alone (SQLite takes at most 32,766 values a
/// statement).
fn identifier_values(vs: &[String]) -> Vec<Value> {
    vs.iter()
        .flat_map(|v| {
            let n = v.parse::<i64>().ok().filter(|n| n.to_string() == *v);
            [Value::Text(v.clone()), Value::Blob(v.as_bytes().to_vec())].into_iter().chain(n.map(Value::Integer))
        })
        .collect()
}

/// SQLite's own error, whichever way it is reported: a statement that does
/// not prepare comes with the offending token's offset, as an error of its
/// own kind.
fn sqlite_error(e: &rusqlite::Error) -> Option<&rusqlite::ffi::Error> {
    match e {
        rusqlite::Error::SqliteFailure(f, _) | rusqlite::Error::SqlInputError { error: f, .. } => Some(f),
        _ => None,
    }
}

/// Whether SQLite refused a check restating the schema's own text
/// (`SQLITE_ERROR`): a function only the application that wrote the schema
/// registers, say.
fn unrestated(e: &rusqlite::Error) -> bool {
    sqlite_error(e).is_some_and(|f| f.code == rusqlite::ErrorCode::Unknown)
}

/// The name of the database (`main`, or an attached one) a table is in,
/// as the `pragma_*` functions take it.
fn schema_name(table: &Table) -> String {
    table.schema.as_ref().map_or("main".to_string(), |s| s.as_str().to_string())
}

/// Whether a column of the table is named as the checks' own names
/// (`lethe_...`), which SQLite would let it shadow in their subqueries.
fn shadows_check_names(cols: &[Column]) -> bool {
    cols.iter().any(|c| c.name.to_ascii_lowercase().starts_with("lethe_"))
}

/// A time column read as Unix seconds, whether stored as text or a number
/// (a count of `unit` since 1970).
fn time_expr(col: &str, unit: UnixTimeUnit) -> String {
    let number = match unit {
        UnixTimeUnit::Seconds => col.to_string(),
        UnixTimeUnit::Milliseconds => format!("{col} / 1000.0"),
    };
    format!(
        "(CASE typeof({col}) WHEN 'integer' THEN {number} WHEN 'real' THEN {number} ELSE unixepoch({col}, 'subsec') END)"
    )
}

fn seconds(t: chrono::DateTime<chrono::Utc>) -> Value {
    Value::Real(t.timestamp() as f64 + f64::from(t.timestamp_subsec_micros()) / 1e6)
}

struct Column {
    name: String,
    decl: String,
    not_null: bool,
    /// The column's place in the primary key (1-based), 0 when not in it.
    pk: i64,
    /// A generated column: SQLite computes its values.
    generated: bool,
    /// The column alone is a unique key.
    unique: bool,
}

impl Column {
    /// Text is stored as given (text affinity, or none: a column declared
    /// without a type).
    fn keeps_text(&self) -> bool {
        ["CHAR", "TEXT", "CLOB"].iter().any(|t| self.decl.contains(t)) || self.decl.is_empty()
    }

    /// The column converts nothing it is compared with (blob affinity:
    /// declared with no type, or a type naming `BLOB` and no `INT`).
    fn converts_nothing(&self) -> bool {
        let d = &self.decl;
        !d.contains("INT") && (d.is_empty() || d.contains("BLOB"))
    }
}

/// A unique index on expressions or with a condition (see
/// [`sql::ExprIndex`]), with the collation of each key and the generated
/// columns its text names.
struct LiteIndex {
    index: sql::ExprIndex,
    collations: Vec<String>,
    generated: Vec<String>,
}

impl Sqlite {
    /// Opens an existing database file (a missing file is a configuration error, not a new database).
    pub async fn open(path: impl Into<PathBuf>, limits: &Limits) -> Result<Sqlite, ScrubError> {
        let path = path.into();
        let busy = limits.lock_timeout;
        tokio::task::spawn_blocking(move || {
            if !path.exists() {
                return Err(ScrubError::Config(format!("database file {} does not exist", path.display())));
            }
            let conn =
                Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                    .or_else(|_| Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY))
                    .map_err(|e| classify(e, "open"))?;
            conn.busy_timeout(busy).map_err(|e| classify(e, "open"))?;
            // Foreign keys as the schema declares them, as on the other
            // servers: a delete cascades where a key says so (else its
            // records would stay behind, personal data and all), and a
            // key that neither cascades nor sets NULL refuses the batch.
            // SQLite leaves them off unless asked (the bundled build asks
            // by default; a build against another library may not).
            conn.pragma_update(None, "foreign_keys", true).map_err(|e| classify(e, "open"))?;
            conn.create_scalar_function(
                "lethe_sha256",
                1,
                FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
                |ctx| {
                    let v: String = ctx.get(0)?;
                    Ok(format!("{:x}", sha2::Sha256::digest(v.as_bytes())))
                },
            )
            .map_err(|e| classify(e, "open"))?;
            let readonly = conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true);
            Ok(Sqlite { conn: Arc::new(Mutex::new(conn)), readonly, unix_time: UnixTimeUnit::Seconds })
        })
        .await
        .map_err(|e| ScrubError::Unavailable(format!("open: {e}")))?
    }

    /// Runs `f` on the connection off the async threads.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, ScrubError> + Send + 'static,
    ) -> Result<T, ScrubError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&conn.lock().unwrap_or_else(|e| e.into_inner())))
            .await
            .map_err(|e| ScrubError::Unavailable(format!("sqlite worker: {e}")))?
    }

    fn qualified(table: &Table) -> String {
        sql::table_name(Dialect::Sqlite, table.schema.as_ref(), &table.name)
    }

    async fn columns(&self, table: &Table) -> Result<Vec<Column>, ScrubError> {
        let schema = schema_name(table);
        let name = table.name.as_str().to_string();
        let shown = Self::qualified(table);
        self.with(move |c| {
            let mut stmt = c
                .prepare("SELECT c.name, c.type, c.\"notnull\", c.pk, c.hidden IN (2, 3),
                        (c.pk = 1 AND NOT EXISTS (SELECT 1 FROM pragma_table_xinfo(?1, ?2) k WHERE k.pk > 1))
                        -- An index on an expression has a column without a name.
                        OR c.name IN (SELECT min(i.name) FROM pragma_index_list(?1, ?2) l, pragma_index_info(l.name, ?2) i
                                       WHERE l.\"unique\" AND NOT l.partial GROUP BY l.name
                                      HAVING count(*) = 1 AND min(i.name) IS NOT NULL)
                   FROM pragma_table_xinfo(?1, ?2) c")
                .map_err(|e| classify(e, "columns"))?;
            let cols = stmt
                .query_map((&name, &schema), |r| {
                    Ok(Column {
                        name: r.get(0)?,
                        decl: r.get::<_, String>(1)?.to_uppercase(),
                        not_null: r.get::<_, i64>(2)? != 0,
                        pk: r.get(3)?,
                        generated: r.get(4)?,
                        unique: r.get(5)?,
                    })
                })
                .map_err(|e| classify(e, "columns"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| classify(e, "columns"))?;
            if cols.is_empty() {
                return Err(ScrubError::Config(format!("table {shown} does not exist")));
            }
            Ok(cols)
        })
        .await
    }

    /// What addresses one row of the table in a batch's `IN (SELECT ..
    /// LIMIT n)`: the rowid under a name no column shadows, else the
    /// primary key (always, for a table declared `WITHOUT ROWID`).
    /// Returned as the columns to select and the expression to match them.
    async fn row_key(&self, table: &Table, cols: &[Column]) -> Result<(String, String), ScrubError> {
        let schema = schema_name(table);
        let name = table.name.as_str().to_string();
        let without_rowid = self
            .with(move |c| {
                c.query_row("SELECT wr FROM pragma_table_list WHERE name = ?1 AND schema = ?2", (&name, &schema), |r| {
                    r.get::<_, i64>(0)
                })
                .map_err(|e| classify(e, "table kind"))
            })
            .await?
            != 0;
        if !without_rowid
            && let Some(alias) =
                ["rowid", "_rowid_", "oid"].into_iter().find(|a| !cols.iter().any(|c| c.name.eq_ignore_ascii_case(a)))
        {
            return Ok((alias.to_string(), alias.to_string()));
        }
        let shown = Self::qualified(table);
        let quoted = Self::primary_key(table, cols)?;
        let list = quoted.join(", ");
        match quoted.len() {
            0 => Err(ScrubError::Config(format!(
                "table {shown} has columns named rowid, _rowid_ and oid and no primary key: its rows cannot be addressed one batch at a time"
            ))),
            1 => Ok((list.clone(), list)),
            _ => Ok((list.clone(), format!("({list})"))),
        }
    }

    fn predicate(sel: &Selection, cols: &[Column], unit: UnixTimeUnit) -> Result<(String, Vec<Value>), ScrubError> {
        let d = Dialect::Sqlite;
        let exists = |c: &Identifier| {
            cols.iter()
                .find(|x| x.name.eq_ignore_ascii_case(c.as_str()))
                .ok_or_else(|| ScrubError::Config(format!("column {c} does not exist")))
        };
        // Identifier values as the column compares them.
        let identifiers = |c: &Identifier, vs: &[String]| -> Result<Vec<Value>, ScrubError> {
            Ok(if exists(c)?.converts_nothing() {
                identifier_values(vs)
            } else {
                vs.iter().map(|v| Value::Text(v.clone())).collect()
            })
        };
        let list = |n: usize| vec!["?"; n].join(", ");
        let (mut parts, mut values) = (Vec::new(), Vec::new());
        if let Some((c, t)) = &sel.older_than {
            exists(c)?;
            parts.push(format!("{} < ?", time_expr(&sql::quote(d, c), unit)));
            values.push(seconds(*t));
        }
        let mut any = Vec::new();
        for (c, vs) in sel.subject.iter().filter(|(_, v)| !v.is_empty()) {
            let vs = identifiers(c, vs)?;
            any.push(format!("{} IN ({})", sql::quote(d, c), list(vs.len())));
            values.extend(vs);
        }
        if !sel.subject.is_empty() {
            // A subject with no usable identifier matches nothing, never everyone.
            parts.push(if any.is_empty() { "0".into() } else { format!("({})", any.join(" OR ")) });
        }
        if let Some((c, t)) = &sel.keep_newer_than {
            exists(c)?;
            parts.push(format!("{} < ?", time_expr(&sql::quote(d, c), unit)));
            values.push(seconds(*t));
        }
        for (c, vs) in sel.held.iter().filter(|(_, v)| !v.is_empty()) {
            let vs = identifiers(c, vs)?;
            parts.push(format!("NOT COALESCE({} IN ({}), 0)", sql::quote(d, c), list(vs.len())));
            values.extend(vs);
        }
        for (n, g) in sel.guards.iter().enumerate() {
            // The referencing table's columns are not at hand: every form.
            let mut member = |_: &Identifier, v: &[String]| {
                let v = identifier_values(v);
                let n = v.len();
                values.extend(v);
                format!("IN ({})", list(n))
            };
            parts.extend(sql::guard_condition(d, g, n, &Self::qualified(&g.table), &mut member));
        }
        Ok((if parts.is_empty() { "0".into() } else { parts.join(" AND ") }, values))
    }

    async fn count_where(&self, table: &Table, cond: String, values: Vec<Value>) -> Result<i64, ScrubError> {
        let q = format!("SELECT count(*) FROM {} WHERE {cond}", Self::qualified(table));
        self.with(move |c| {
            c.query_row(&q, rusqlite::params_from_iter(values), |r| r.get(0)).map_err(|e| classify(e, "count"))
        })
        .await
    }

    /// The earliest (or, with `newest`, latest) value of `column` among the records a selection matches.
    pub async fn extreme(
        &self,
        sel: &Selection,
        column: &Identifier,
        newest: bool,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, ScrubError> {
        let agg = if newest { "max" } else { "min" };
        let cols = self.columns(&sel.table).await?;
        let (pred, values) = Self::predicate(sel, &cols, self.unix_time)?;
        let q = format!(
            "SELECT CAST({agg}({}) AS INTEGER) FROM {} WHERE {pred}",
            time_expr(&sql::quote(Dialect::Sqlite, column), self.unix_time),
            Self::qualified(&sel.table)
        );
        let s: Option<i64> = self
            .with(move |c| {
                c.query_row(&q, rusqlite::params_from_iter(values), |r| r.get(0)).map_err(|e| classify(e, "oldest"))
            })
            .await?;
        Ok(s.and_then(|s| chrono::DateTime::from_timestamp(s, 0)))
    }

    pub async fn server_version(&self) -> Result<String, ScrubError> {
        self.with(|c| {
            c.query_row("SELECT 'SQLite ' || sqlite_version()", [], |r| r.get(0)).map_err(|e| classify(e, "version"))
        })
        .await
    }

    /// Foreign keys touching a table, as (child table, parent table)
    /// names: the tables that reference it and the tables it references,
    /// from each table's `pragma_foreign_key_list`.
    pub async fn foreign_keys(&self, table: &Table) -> Result<Vec<(String, String)>, ScrubError> {
        let catalog = Self::catalog(table);
        let schema = schema_name(table);
        let name = table.name.as_str().to_string();
        self.with(move |c| {
            let mut stmt = c
                .prepare(&format!(
                    "SELECT DISTINCT m.name, f.\"table\" FROM {catalog} m, pragma_foreign_key_list(m.name, ?2) f
                      WHERE m.type = 'table' AND (m.name = ?1 COLLATE NOCASE OR f.\"table\" = ?1 COLLATE NOCASE)
                      ORDER BY 1, 2"
                ))
                .map_err(|e| classify(e, "foreign keys"))?;
            stmt.query_map((&name, &schema), |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(|e| classify(e, "foreign keys"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| classify(e, "foreign keys"))
        })
        .await
    }

    /// The foreign keys of other tables (and of this one) referencing a
    /// table, each column named, in key order; a key naming no parent
    /// columns references the parent's primary key.
    pub async fn referencing_keys(&self, table: &Table) -> Result<Vec<super::ReferencingKey>, ScrubError> {
        let catalog = Self::catalog(table);
        let schema = schema_name(table);
        let name = table.name.as_str().to_string();
        // Table, key, column, referenced column, delete and update rules.
        type KeyRow = (String, i64, String, Option<String>, (String, String));
        let rows: Vec<KeyRow> = self
            .with(move |c| {
                let mut stmt = c
                    .prepare(&format!(
                        "SELECT m.name, f.id, f.\"from\", COALESCE(f.\"to\",
                                (SELECT p.name FROM pragma_table_info(?1, ?2) p WHERE p.pk = f.seq + 1)), f.on_delete, f.on_update
                           FROM {catalog} m, pragma_foreign_key_list(m.name, ?2) f
                          WHERE m.type = 'table' AND f.\"table\" = ?1 COLLATE NOCASE
                          ORDER BY m.name, f.id, f.seq"
                    ))
                    .map_err(|e| classify(e, "foreign keys"))?;
                stmt.query_map((&name, &schema), |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, (r.get(4)?, r.get(5)?)))
                })
                    .map_err(|e| classify(e, "foreign keys"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| classify(e, "foreign keys"))
            })
            .await?;
        // A key is on the same database's tables; one whose parent column
        // SQLite cannot name cannot be enforced either.
        let other = table.schema.as_ref().map(|s| s.as_str().to_string());
        Ok(sql::referencing_keys(rows.into_iter().filter_map(|(child, id, column, referenced, rule)| {
            Some(((child.clone(), id), other.clone(), child, column, referenced?, rule))
        })))
    }

    pub async fn probe(&self, table: &Table) -> Result<Probe, ScrubError> {
        self.columns(table).await?;
        let version = self.server_version().await?;
        Ok(Probe { server_version: version, can_select: true, can_delete: !self.readonly, can_update: !self.readonly })
    }

    pub async fn count(&self, sel: &Selection) -> Result<i64, ScrubError> {
        let cols = self.columns(&sel.table).await?;
        let (cond, values) = Self::predicate(sel, &cols, self.unix_time)?;
        self.count_where(&sel.table, cond, values).await
    }

    /// The dry run.
    /// Reads time columns stored as numbers as counts of `unit` (seconds when unset).
    pub fn with_unix_time(mut self, unit: Option<UnixTimeUnit>) -> Self {
        self.unix_time = unit.unwrap_or(UnixTimeUnit::Seconds);
        self
    }

    /// Refuses a time column whose numbers, read in the unit, say the unit
    /// is wrong, or that holds values SQLite reads as no time at all (text
    /// that is not ISO 8601, a blob): those records would never expire, and
    /// a column of such values is likely not the records' time.
    async fn check_unix_times(&self, sel: &Selection) -> Result<(), ScrubError> {
        for (col, _) in sel.older_than.iter().chain(&sel.keep_newer_than) {
            let c = sql::quote(Dialect::Sqlite, col);
            let number = format!("CASE WHEN typeof({c}) IN ('integer', 'real') THEN {c} END");
            let ceiling = super::unix_time_ceiling(self.unix_time);
            let q = format!(
                "SELECT CAST(min({number}) AS INTEGER), CAST(max(CASE WHEN {number} <= {ceiling} THEN {number} END) AS INTEGER),
                        count(CASE WHEN {c} IS NOT NULL AND {} IS NULL THEN 1 END) FROM {}",
                time_expr(&c, self.unix_time),
                Self::qualified(&sel.table)
            );
            let (range, unreadable) = self
                .with(move |c| {
                    c.query_row(&q, [], |r| Ok(((r.get(0)?, r.get(1)?), r.get::<_, i64>(2)?)))
                        .map_err(|e| classify(e, "time range"))
                })
                .await?;
            if unreadable > 0 {
                return Err(ScrubError::Config(format!(
                    "time column {col}: {unreadable} records hold a value SQLite reads as no time (times are ISO 8601 text, \
                     such as 2024-05-01 or 2024-05-01T10:00:00Z, or numbers counting the Dataset's \
                     timestamps.unixTimeUnit since 1970); their records would never expire: correct them, or name \
                     the column that holds the records' times; nothing was changed"
                )));
            }
            super::check_unix_time_range(col, range, self.unix_time)?;
        }
        Ok(())
    }

    pub async fn plan(&self, sel: &Selection) -> Result<Counts, ScrubError> {
        self.check_unix_times(sel).await?;
        super::plan(self, sel).await
    }

    /// Each rule's new value and the "already anonymized" condition,
    /// refusing rules the table cannot take.
    fn anonymize(rules: &[FieldRule], salt: &str, cols: &[Column]) -> Result<Anonymization<Value>, ScrubError> {
        let d = Dialect::Sqlite;
        let (mut sets, mut done, mut done_values, mut fresh) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in rules {
            let col = cols
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(r.field.as_str()))
                .ok_or_else(|| ScrubError::Config(format!("column {} does not exist", r.field)))?;
            let is_text = col.keeps_text();
            let c = sql::quote(d, &r.field);
            let facts = super::ColumnFacts {
                nullable: !col.not_null,
                is_text,
                max_len: None,
                computed: col.generated.then_some("a generated column"),
                unique: col.unique,
                one_null: false,
            };
            super::check_rule(r, &facts)?;
            match r.strategy {
                AnonymizeStrategy::Null => {
                    sets.push((r.field.clone(), "NULL".to_string(), vec![]));
                    done.push(format!("{c} IS NULL"));
                }
                AnonymizeStrategy::Fixed => {
                    let v = r.value.clone().unwrap_or_default();
                    sets.push((r.field.clone(), "?".to_string(), vec![Value::Text(v.clone())]));
                    done.push(format!("{c} IS ?"));
                    done_values.push(Value::Text(v));
                }
                AnonymizeStrategy::Redact => {
                    let redacted = format!("replace(hex(zeroblob(max(length({c}), 1))), '00', '*')");
                    sets.push((r.field.clone(), redacted, vec![]));
                    done.push(format!("({c} IS NULL OR ({c} <> '' AND {c} NOT GLOB '*[^*]*'))"));
                }
                AnonymizeStrategy::Hash => {
                    // Distinct inputs keep distinct outputs, so UNIQUE columns stay valid.
                    let hashed = format!("'anon-' || lethe_sha256(? || {c})");
                    sets.push((
                        r.field.clone(),
                        sql::unless_hashed(d, &c, &hashed),
                        vec![Value::Text(salt.to_string())],
                    ));
                    fresh.push((r.field.clone(), sql::fresh_hash(d, None)));
                    done.push(format!("({c} IS NULL OR {c} LIKE 'anon-%')"));
                }
            }
        }
        Ok(Anonymization { sets, done: format!("({})", done.join(" AND ")), done_values, fresh })
    }

    pub async fn run(
        &self,
        sel: &Selection,
        action: &Action,
        limits: &Limits,
        done_before: i64,
        mut on_progress: impl FnMut(&Progress),
    ) -> Result<Outcome, ScrubError> {
        sel.check()?;
        let cols = self.columns(&sel.table).await?;
        self.check_unix_times(sel).await?;
        let (pred, values) = Self::predicate(sel, &cols, self.unix_time)?;
        let (key_cols, key) = self.row_key(&sel.table, &cols).await?;
        let table = Self::qualified(&sel.table);
        let mut done_before = done_before;
        let (batch, remaining_cond, remaining_values) = match action {
            Action::Delete => (
                Batch::Delete {
                    statement: format!(
                        "DELETE FROM {table} WHERE {key} IN (SELECT {key_cols} FROM {table} WHERE {pred} LIMIT ?) AND {pred}"
                    ),
                    cond: values.clone(),
                },
                pred.clone(),
                values,
            ),
            Action::Anonymize { rules, salt } => {
                let a = Self::anonymize(rules, salt, &cols)?;
                let cond = format!("{pred} AND NOT {}", a.done);
                let mut inner = values.clone();
                inner.extend(a.done_values.iter().cloned());
                let keys = self.check_unique_keys(&sel.table, &cols, rules, &a, &cond, &inner).await?;
                if let Some((q, params)) = a.reuse_update(Dialect::Sqlite, &table, &keys, rules, &cond, &inner) {
                    let fresh = self
                        .with(move |c| {
                            c.execute(&q, rusqlite::params_from_iter(params)).map_err(|e| classify(e, "fresh hashes"))
                        })
                        .await? as i64;
                    if fresh > 0 {
                        // Committed: a run resumed from here counts them still.
                        done_before += fresh;
                        on_progress(&Progress { records_done: done_before, ..Progress::default() });
                    }
                }
                let (sets, set_values) = a.set_list(Dialect::Sqlite);
                let batch_rows = format!("{key} IN (SELECT * FROM temp.lethe_batch) AND {cond}");
                (
                    Batch::Anonymize {
                        gather: format!(
                            "CREATE TEMP TABLE lethe_batch AS SELECT {key_cols} FROM {table} WHERE {cond} LIMIT ?"
                        ),
                        update: format!("UPDATE {table} SET {sets} WHERE {batch_rows}"),
                        check: format!("SELECT count(*) FROM {table} WHERE {batch_rows}"),
                        sets: set_values,
                        cond: inner.clone(),
                    },
                    cond,
                    inner,
                )
            }
        };
        let records = super::Counting::total(self, &sel.table).await?;
        let mut source =
            LiteBatches { db: self, batch: Arc::new(batch), most_records: super::most_records(records as f64) };
        let mut outcome = super::drive(&mut source, limits, done_before, on_progress).await?;
        outcome.remaining = self.count_where(&sel.table, remaining_cond, remaining_values).await?;
        Ok(outcome)
    }

    /// Records the selection still leaves for the action to do.
    pub async fn pending(&self, sel: &Selection, action: &Action) -> Result<i64, ScrubError> {
        let Action::Anonymize { rules, salt } = action else { return self.count(sel).await };
        let cols = self.columns(&sel.table).await?;
        let (pred, mut values) = Self::predicate(sel, &cols, self.unix_time)?;
        let a = Self::anonymize(rules, salt, &cols)?;
        let cond = format!("{pred} AND NOT {}", a.done);
        values.extend(a.done_values.iter().cloned());
        self.check_unique_keys(&sel.table, &cols, rules, &a, &cond, &values).await?;
        self.count_where(&sel.table, cond, values).await
    }

    /// The `sqlite_schema` of the table's database.
    fn catalog(table: &Table) -> String {
        let schema = table.schema.as_ref().map_or("main".to_string(), |s| sql::quote(Dialect::Sqlite, s));
        format!("{schema}.sqlite_schema")
    }

    /// The table's unique indexes on expressions or with conditions: their
    /// keys and condition as the `CREATE INDEX` text has them, every
    /// column they read (the text's names that are columns of the table,
    /// a generated column as the columns it is computed from), and each
    /// key's collation. An index whose text does not read as one has no
    /// keys (and is not checked ahead).
    async fn indexes_on_expressions_or_conditions(
        &self,
        table: &Table,
        cols: &[Column],
        generated: &[(String, Vec<String>)],
    ) -> Result<Vec<LiteIndex>, ScrubError> {
        let schema = schema_name(table);
        let name = table.name.as_str().to_string();
        let catalog = Self::catalog(table);
        let rows: Vec<(String, String, Vec<String>)> = self
            .with(move |c| {
                // An expression is a key column without a name.
                let mut stmt = c
                    .prepare(&format!(
                        "SELECT l.name, s.sql FROM pragma_index_list(?1, ?2) l
                           JOIN {catalog} s ON s.type = 'index' AND s.name = l.name
                          WHERE l.\"unique\" AND s.sql IS NOT NULL
                            AND (l.partial OR EXISTS (SELECT 1 FROM pragma_index_info(l.name, ?2) i WHERE i.name IS NULL))
                          ORDER BY l.name"
                    ))
                    .map_err(|e| classify(e, "unique keys"))?;
                let indexes = stmt
                    .query_map((&name, &schema), |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                    .map_err(|e| classify(e, "unique keys"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| classify(e, "unique keys"))?;
                let mut collations = c
                    .prepare("SELECT coll FROM pragma_index_xinfo(?1, ?2) WHERE key ORDER BY seqno")
                    .map_err(|e| classify(e, "unique keys"))?;
                indexes
                    .into_iter()
                    .map(|(index, create)| {
                        let colls = collations
                            .query_map((&index, &schema), |r| r.get(0))
                            .and_then(|rows| rows.collect::<Result<Vec<String>, _>>())
                            .map_err(|e| classify(e, "unique keys"))?;
                        Ok((index, create, colls))
                    })
                    .collect()
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(name, create, collations)| {
                let names = sql::sqlite_index_names(&create);
                let read: Vec<String> = cols
                    .iter()
                    .filter(|c| names.iter().any(|n| n.eq_ignore_ascii_case(&c.name)))
                    .map(|c| c.name.clone())
                    .collect();
                let direct_generated =
                    cols.iter().filter(|c| c.generated && read.contains(&c.name)).map(|c| c.name.clone()).collect();
                let (reads, _) = sql::through_generated(read, generated, |a, b| a.eq_ignore_ascii_case(b));
                let (keys, condition) = sql::sqlite_index_parts(&create).unwrap_or_default();
                LiteIndex {
                    index: sql::ExprIndex { name, keys, condition, reads, computed: vec![], nulls_equal: false },
                    collations,
                    generated: direct_generated,
                }
            })
            .collect())
    }

    /// Refuses an anonymization that would put two records on one entry
    /// of a unique index on expressions or with a condition, before any
    /// change: the index's keys and condition evaluated on each changed
    /// record's new values, beside every other record as it is now (see
    /// [`sql::sqlite_index_collision_query`]). An index the check cannot
    /// restate is logged and left to the batches: a fixed value on a
    /// column it reads that the column would store converted (a number
    /// column), a generated column it reads computed from a column a rule
    /// changes, a column named as the check's own names (`lethe_r`), a
    /// text the check cannot parse or prepare.
    #[allow(clippy::too_many_arguments)]
    async fn check_indexes(
        &self,
        table: &Table,
        cols: &[Column],
        indexes: &[LiteIndex],
        generated: &[(String, Vec<String>)],
        rules: &[FieldRule],
        a: &Anonymization<Value>,
        changed: &str,
        values: &[Value],
    ) -> Result<(), ScrubError> {
        let d = Dialect::Sqlite;
        let columns: Vec<String> = cols.iter().map(|c| c.name.clone()).collect();
        // The check's own names would be shadowed.
        let shadowed = shadows_check_names(cols);
        let mut row = None;
        for LiteIndex { index, collations, generated: read_generated } in indexes {
            let risky = index.risky(d, rules);
            if risky.is_empty() {
                continue;
            }
            let converted = rules.iter().any(|r| {
                r.strategy == AnonymizeStrategy::Fixed
                    && index.reads.iter().any(|c| c.eq_ignore_ascii_case(r.field.as_str()))
                    && cols.iter().any(|c| c.name.eq_ignore_ascii_case(r.field.as_str()) && !c.keeps_text())
            });
            let stale = read_generated.iter().any(|g| {
                let (from, _) = sql::through_generated(vec![g.clone()], generated, |a, b| a.eq_ignore_ascii_case(b));
                from.iter().any(|c| a.rule_of(d, c).is_some())
            });
            let why = match () {
                _ if index.keys.is_empty() => Some("its text does not read as an index"),
                _ if shadowed => Some("a column is named as the check's own names (lethe_...)"),
                _ if converted => Some("a fixed value on a column it reads would be stored converted"),
                _ if stale => Some("it reads a generated column computed from a column a rule changes"),
                _ => None,
            };
            if let Some(why) = why {
                tracing::warn!(index = %index.name, reason = why, "unique key not checked ahead");
                continue;
            }
            let row = match &row {
                Some(r) => r,
                None => row.insert(self.row_identity(table, cols).await?),
            };
            let new_value = |c: &str| a.rule_of(d, c).map(|s| s.1.clone());
            let Some(q) = sql::sqlite_index_collision_query(
                &Self::qualified(table),
                index,
                &columns,
                collations,
                row,
                new_value,
                changed,
            ) else {
                tracing::warn!(index = %index.name, reason = "a name cannot be quoted", "unique key not checked ahead");
                continue;
            };
            let params: Vec<Value> = columns
                .iter()
                .filter_map(|c| a.rule_of(d, c))
                .flat_map(|s| s.2.iter().cloned())
                .chain(values.iter().cloned())
                .collect();
            let found = self
                .with(move |c| match c.query_row(&q, rusqlite::params_from_iter(params), |_| Ok(())).optional() {
                    Ok(found) => Ok(Some(found.is_some())),
                    Err(e) if unrestated(&e) => Ok(None),
                    Err(e) => Err(classify(e, "unique key check")),
                })
                .await?;
            match found {
                Some(true) => return Err(index.refusal(&risky)),
                Some(false) => {}
                None => {
                    tracing::warn!(index = %index.name, reason = "the check does not prepare", "unique key not checked ahead")
                }
            }
        }
        Ok(())
    }

    /// The primary key's columns, quoted, in key order.
    fn primary_key(table: &Table, cols: &[Column]) -> Result<Vec<String>, ScrubError> {
        let mut key: Vec<&Column> = cols.iter().filter(|c| c.pk > 0).collect();
        key.sort_by_key(|c| c.pk);
        sql::quote_names(Dialect::Sqlite, key.iter().map(|c| c.name.as_str())).map_err(|e| {
            let shown = Self::qualified(table);
            ScrubError::Config(format!("table {shown}: a primary key column cannot be addressed: {e}"))
        })
    }

    /// An expression of the table's columns naming one record: the rowid
    /// under a name no column shadows, else the primary key's values,
    /// quoted.
    async fn row_identity(&self, table: &Table, cols: &[Column]) -> Result<String, ScrubError> {
        let (key_cols, _) = self.row_key(table, cols).await?;
        if ["rowid", "_rowid_", "oid"].contains(&key_cols.as_str()) {
            return Ok(key_cols);
        }
        let quoted = Self::primary_key(table, cols)?;
        Ok(quoted.iter().map(|q| format!("quote({q})")).collect::<Vec<_>>().join(" || ',' || "))
    }

    /// Each generated column among `cols`, with the other columns its
    /// expression reads (names it mentions that are columns of the
    /// table, generated ones too); and with its expression as written.
    /// From the table's `CREATE TABLE` text.
    #[allow(clippy::type_complexity)]
    async fn generated_from(
        &self,
        table: &Table,
        cols: &[Column],
    ) -> Result<(Vec<(String, Vec<String>)>, Vec<(String, String)>), ScrubError> {
        let generated: Vec<String> = cols.iter().filter(|c| c.generated).map(|c| c.name.clone()).collect();
        if generated.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let catalog = Self::catalog(table);
        let name = table.name.as_str().to_string();
        let create: Option<String> = self
            .with(move |c| {
                c.query_row(&format!("SELECT sql FROM {catalog} WHERE type = 'table' AND name = ?1"), [&name], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(|e| classify(e, "table definition"))
            })
            .await?;
        let found = sql::sqlite_generated_columns(&create.unwrap_or_default(), &generated);
        let expressions = found.iter().map(|(g, expr, _)| (g.clone(), expr.clone())).collect();
        let from = found
            .into_iter()
            .map(|(g, _, names)| {
                let from = cols
                    .iter()
                    .filter(|c| {
                        !c.name.eq_ignore_ascii_case(&g) && names.iter().any(|n| n.eq_ignore_ascii_case(&c.name))
                    })
                    .map(|c| c.name.clone())
                    .collect();
                (g, from)
            })
            .collect();
        Ok((from, expressions))
    }

    /// Refuses an anonymization that would give two records the same
    /// values in a unique key of several columns, or of a generated column
    /// (as SQLite computes it from the new values), or in a unique index on
    /// expressions or with a condition, before any change. `changed`
    /// selects the records it changes, with `values`. Returns the table's
    /// unique keys, a generated column as the columns it is computed from,
    /// and such an index as a key of the hashed columns it reads (for the
    /// fresh-hash step).
    async fn check_unique_keys(
        &self,
        table: &Table,
        cols: &[Column],
        rules: &[FieldRule],
        a: &Anonymization<Value>,
        changed: &str,
        values: &[Value],
    ) -> Result<Vec<sql::UniqueKey>, ScrubError> {
        let schema = schema_name(table);
        let name = table.name.as_str().to_string();
        // Each key column with the collation the index compares it under.
        let rows: Vec<(String, Option<String>, String)> = self
            .with(move |c| {
                // A key on an expression has a column without a name.
                let mut stmt = c
                    .prepare(
                        "SELECT l.name, i.name, i.coll FROM pragma_index_list(?1, ?2) l, pragma_index_xinfo(l.name, ?2) i
                          WHERE l.\"unique\" AND NOT l.partial AND i.key ORDER BY l.name, i.seqno",
                    )
                    .map_err(|e| classify(e, "unique keys"))?;
                stmt.query_map((&name, &schema), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .map_err(|e| classify(e, "unique keys"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| classify(e, "unique keys"))
            })
            .await?;
        let collation = |index: &str, column: &str| {
            rows.iter().find(|r| r.0 == index && r.1.as_deref() == Some(column)).map(|r| r.2.clone())
        };
        let (generated, expressions) = self.generated_from(table, cols).await?;
        let d = Dialect::Sqlite;
        let name = Self::qualified(table);
        let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        // SQLite lets a column of a subquery share a name with another, so
        // a column named as the check's own names would not fail it.
        let shadowed = shadows_check_names(cols);
        let (mut approximate, computed) = sql::UniqueKey::split_generated(
            d,
            sql::UniqueKey::of_columns(rows.iter().map(|r| (r.0.clone(), r.1.clone())).collect()),
            &generated,
            rules,
        );
        let mut keys = approximate.clone();
        for (key, through, risky) in computed {
            // As SQLite computes the key's generated columns, every column
            // compared under the key's collation.
            let computed = |c: &str| {
                let coll = sql::quote_names(d, [collation(&key.name, c)?.as_str()]).ok()?.pop()?;
                let value = match expressions.iter().find(|g| same(&g.0, c)) {
                    Some((_, expr)) => format!("({})", sql::inline_generated(d, expr, &expressions, &same)?),
                    None => sql::quote_names(d, [c]).ok()?.pop()?,
                };
                Some(format!("{value} COLLATE {coll}"))
            };
            // A check that does not prepare (an expression it cannot
            // restate), cannot be built or would read a column under one of
            // its own names: the key is judged by the columns it is
            // computed from instead, which may refuse what the key would
            // take, and leaves values only its expression makes equal to
            // the batches.
            let found = match a.generated_collision_check(d, &name, &key, &through, computed, changed, values) {
                _ if shadowed => None,
                None => None,
                Some((q, params)) => {
                    self.with(move |c| {
                        match c.query_row(&q, rusqlite::params_from_iter(params), |_| Ok(())).optional() {
                            Ok(found) => Ok(Some(found.is_some())),
                            Err(e) if unrestated(&e) => Ok(None),
                            Err(e) => Err(classify(e, "unique key check")),
                        }
                    })
                    .await?
                }
            };
            through.settle_generated(&key.name, found, &risky, &mut keys, &mut approximate)?;
        }
        for (q, params, refusal) in a.collision_checks(d, &name, approximate, rules, changed, values) {
            let found = self
                .with(move |c| {
                    c.query_row(&q, rusqlite::params_from_iter(params), |_| Ok(()))
                        .optional()
                        .map_err(|e| classify(e, "unique key check"))
                })
                .await?;
            if found.is_some() {
                return Err(refusal);
            }
        }
        let indexes = self.indexes_on_expressions_or_conditions(table, cols, &generated).await?;
        self.check_indexes(table, cols, &indexes, &generated, rules, a, changed, values).await?;
        // For the fresh-hash step, as keys of the hashed columns they read.
        keys.extend(
            indexes
                .into_iter()
                .filter_map(|i| sql::UniqueKey::hashed_reads(Dialect::Sqlite, i.index.name, i.index.reads, rules)),
        );
        Ok(keys)
    }

    /// For tests and tools: runs SQL text as is.
    pub async fn execute_batch(&self, sql: &str) -> Result<(), ScrubError> {
        let sql = sql.to_string();
        self.with(move |c| c.execute_batch(&sql).map_err(|e| classify(e, "execute"))).await
    }

    /// For tests and tools: a query's first column as integers.
    pub async fn query_i64(&self, sql: &str) -> Result<Vec<i64>, ScrubError> {
        let sql = sql.to_string();
        self.with(move |c| {
            let mut stmt = c.prepare(&sql).map_err(|e| classify(e, "query"))?;
            stmt.query_map([], |r| r.get(0))
                .map_err(|e| classify(e, "query"))?
                .collect::<Result<Vec<i64>, _>>()
                .map_err(|e| classify(e, "query"))
        })
        .await
    }
}

/// One batch's statements and their values.
enum Batch {
    /// `DELETE ... WHERE key IN (SELECT key ... WHERE cond LIMIT ?) AND
    /// cond`, and the condition's values (bound twice, the limit between).
    Delete { statement: String, cond: Vec<Value> },
    /// An anonymization, in one transaction: the keys of the batch's
    /// records gathered into a temporary table (`gather`: the condition's
    /// values, then the limit); the update of those records (`update`: the
    /// SET values, then the condition's); and the count of those that
    /// still do not read as anonymized (`check`: the condition's).
    Anonymize { gather: String, update: String, check: String, sets: Vec<Value>, cond: Vec<Value> },
}

impl Batch {
    fn run(&self, c: &Connection, size: i64) -> Result<i64, ScrubError> {
        let err = |e| classify(e, "batch");
        let with = |head: &[Value], tail: &[Value]| rusqlite::params_from_iter([head, tail].concat());
        match self {
            Batch::Delete { statement, cond } => {
                let values = [cond.as_slice(), &[Value::Integer(size)], cond].concat();
                c.execute(statement, rusqlite::params_from_iter(values)).map_err(err).map(|n| n as i64)
            }
            Batch::Anonymize { gather, update, check, sets, cond } => {
                // A trigger may write something else after the update (SQLite
                // counts the records all the same): such records would be
                // selected again, batch after batch.
                let tx =
                    rusqlite::Transaction::new_unchecked(c, rusqlite::TransactionBehavior::Immediate).map_err(err)?;
                tx.execute("DROP TABLE IF EXISTS temp.lethe_batch", []).map_err(err)?;
                tx.execute(gather, with(cond, &[Value::Integer(size)])).map_err(err)?;
                let n = tx.execute(update, with(sets, cond)).map_err(err)? as i64;
                let unfinished: i64 = tx.query_row(check, with(cond, &[]), |r| r.get(0)).map_err(err)?;
                if unfinished > 0 {
                    return Err(super::not_anonymized(unfinished, n));
                }
                tx.execute("DROP TABLE temp.lethe_batch", []).map_err(err)?;
                tx.commit().map_err(err)?;
                Ok(n)
            }
        }
    }
}

impl super::Counting for Sqlite {
    async fn count(&self, sel: &Selection) -> Result<i64, ScrubError> {
        Sqlite::count(self, sel).await
    }

    async fn total(&self, table: &Table) -> Result<i64, ScrubError> {
        self.count_where(table, "1".into(), vec![]).await
    }
}

struct LiteBatches<'a> {
    db: &'a Sqlite,
    batch: Arc<Batch>,
    most_records: i64,
}

impl super::BatchSource for LiteBatches<'_> {
    fn sizes(&self, limits: &Limits) -> (i64, i64, i64) {
        (limits.initial_batch, limits.min_batch, limits.max_batch)
    }

    async fn batch(&mut self, size: i64) -> Result<Option<i64>, ScrubError> {
        let batch = self.batch.clone();
        let n = self.db.with(move |c| batch.run(c, size)).await?;
        Ok((n > 0).then_some(n))
    }

    fn most_records(&self) -> Option<i64> {
        Some(self.most_records)
    }
}
