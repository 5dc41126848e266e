//! The MySQL and MariaDB driver.
//!
//! Each batch is one statement in its own transaction,
//! `DELETE FROM t WHERE <selection> LIMIT n` (or the matching `UPDATE` for
//! anonymization). InnoDB evaluates the condition on the current row
//! version it locks, so a row changed concurrently is judged by its new
//! values. Values are bound parameters converted to the column's type
//! first: MySQL would otherwise compare `'42abc'` equal to the integer 42.
//! The session runs in UTC; DATETIME columns are taken to hold UTC.

use std::time::Duration;

use mysql_async::{Conn, OptsBuilder, Value, prelude::Queryable};

use super::{
    Action, ConnectOptions, Counts, FieldRule, Limits, Outcome, PartitionMode, Probe, Progress, ScrubError, Selection,
    Table,
    sql::{self, Anonymization, Dialect},
};
use crate::api::{AnonymizeStrategy, Identifier, UnixTimeUnit};

/// One column's facts from `information_schema`.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    data_type: String,
    nullable: bool,
    max_len: Option<i64>,
    /// A generated column: the server computes its values, by this
    /// expression (as the catalog prints it).
    generated: Option<String>,
    /// A unique index on this column alone: `Some(Some(n))` when it covers
    /// only the first `n` characters, `Some(None)` when it covers them all,
    /// `None` when there is no such index.
    unique_prefix: Option<Option<i64>>,
    /// A text column's character set and collation, as the catalog names
    /// them (`None` for other columns, or a name that is not a plain word).
    charset: Option<(String, String)>,
}

/// A row of the column query: name, type, nullable, length, generation
/// expression, unique alone, unique prefix, character set, collation.
type ColumnRow =
    (String, String, String, Option<i64>, Option<String>, i64, Option<i64>, Option<String>, Option<String>);

/// Each generated column among `cols`, with the other columns its
/// expression reads (names it mentions that are columns of the table,
/// generated ones too).
fn generated_from(cols: &[Column]) -> Vec<(String, Vec<String>)> {
    cols.iter()
        .filter_map(|g| {
            let names = sql::names_in(Dialect::Mysql, g.generated.as_deref()?);
            let from = cols
                .iter()
                .filter(|c| c.name != g.name && names.iter().any(|n| n.eq_ignore_ascii_case(&c.name)))
                .map(|c| c.name.clone())
                .collect();
            Some((g.name.clone(), from))
        })
        .collect()
}

impl Column {
    fn is_integer(&self) -> bool {
        matches!(self.data_type.as_str(), "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint")
    }

    fn is_text(&self) -> bool {
        matches!(self.data_type.as_str(), "char" | "varchar" | "text" | "tinytext" | "mediumtext" | "longtext")
    }

    /// Refuses this column as one an identifier is matched in unless the
    /// server compares it with an identifier's text exactly: integers
    /// (parsed first), text, `enum` and `set` members, bytes of no fixed
    /// length, and MariaDB's `uuid`, `inet4` and `inet6` (read from text).
    /// Elsewhere a value bound as text would match nothing (`binary(16)`
    /// holding a UUID's bytes, `binary(n)` padded with zero bytes), so a
    /// held subject's rows would go unprotected and an erased one's stay; or
    /// it would be compared as a floating-point number, equal to
    /// neighbouring identifiers (`float`, `double`, and `decimal` on MySQL).
    fn identifies(&self, table: &Table) -> Result<(), ScrubError> {
        let t = self.data_type.as_str();
        let bytes = matches!(t, "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob");
        if self.is_integer() || self.is_text() || bytes || matches!(t, "enum" | "set" | "uuid" | "inet4" | "inet6") {
            return Ok(());
        }
        Err(ScrubError::Config(format!(
            "identifier column {} of table {} has type {t}, which Lethe cannot match an identifier in exactly; supported: integer \
             types, char, varchar, text, enum, set, varbinary, blob, uuid, inet4, inet6. Name a generated column \
             showing the identifier as text instead (BIN_TO_UUID({0}) or HEX({0}) for bytes, CAST({0} AS SIGNED) \
             for a whole decimal)",
            self.name, table.name
        )))
    }

    /// A value computed for this column (a hash, in the connection's
    /// character set) in the column's own character set and collation: so
    /// it compares with the column's values through the column's indexes,
    /// and meets them in one `CASE` without a clash of collations.
    fn in_own_charset(&self, value: &str) -> Option<String> {
        let (charset, collation) = self.charset.as_ref()?;
        Some(format!("CONVERT({value} USING `{charset}`) COLLATE `{collation}`"))
    }
}

pub struct Mysql {
    conn: tokio::sync::Mutex<Conn>,
    version: String,
    /// What integer time columns count (the Dataset's `unixTimeUnit`).
    unix_time: Option<UnixTimeUnit>,
    /// The session's limits, which counts keep to.
    limits: Limits,
}

/// Tables estimated to hold fewer records than this are counted in one
/// statement, whatever the plan.
const CHUNKED_COUNT_FROM_ROWS: f64 = 100_000.0;

fn classify(e: mysql_async::Error, what: &str) -> ScrubError {
    match e {
        mysql_async::Error::Server(s) => {
            let text = format!("{what}: {} ({})", without_value(&s.message), s.code);
            match s.code {
                // Access denied, command denied, column command denied.
                1044 | 1045 | 1142 | 1143 | 1227 | 1698 => ScrubError::Access(text),
                // Statement time exceeded: a batch is retried smaller; a read
                // of the table cannot be, and would time out again each time.
                1969 | 3024 if !what.starts_with("batch") => {
                    ScrubError::Config(format!("{text}: {}", super::READ_TIMEOUT))
                }
                // Lock wait timeout, deadlock, statement time exceeded (MariaDB, MySQL).
                1205 | 1213 | 1969 | 3024 => ScrubError::Busy(text),
                // Server shutting down, too many connections.
                1040 | 1053 | 1927 => ScrubError::Unavailable(text),
                // A parent row a foreign key still refers to.
                1451 => ScrubError::Config(format!("{text}: {}", super::STILL_REFERENCED)),
                _ => ScrubError::Config(text),
            }
        }
        other => ScrubError::Unavailable(format!("{what}: {other}")),
    }
}

/// A server message without the value it quotes from a record
/// ("Duplicate entry '...' for key", "Incorrect ... value: '...'"), which
/// may be personal data; names of keys and columns stay. The value runs
/// to the last `' for ` (it may hold quotes itself), else the last quote.
fn without_value(message: &str) -> String {
    for opening in ["entry '", "value: '"] {
        if let Some(i) = message.find(opening) {
            let from = i + opening.len();
            let rest = &message[from..];
            let to = rest.rfind("' for ").or_else(|| rest.rfind('\'')).map_or(message.len(), |j| from + j);
            return format!("{}…{}", &message[..from], &message[to..]);
        }
    }
    message.to_string()
}

fn time_value(t: chrono::DateTime<chrono::Utc>) -> Value {
    Value::from(t.format("%Y-%m-%d %H:%M:%S%.6f").to_string())
}

/// A predicate under construction: MySQL's `?` placeholders and their values.
struct Bound {
    sql: Vec<String>,
    values: Vec<Value>,
}

impl Mysql {
    pub async fn connect(opts: &ConnectOptions, limits: &Limits) -> Result<Mysql, ScrubError> {
        use crate::api::TlsMode;
        let mode = opts.tls.mode();
        let ssl = match mode {
            TlsMode::Disable => None,
            // Encrypted, the certificate not checked (as libpq's `require`).
            TlsMode::Prefer | TlsMode::Require => Some(
                mysql_async::SslOpts::default()
                    .with_danger_accept_invalid_certs(true)
                    .with_danger_skip_domain_validation(true),
            ),
            TlsMode::VerifyCA => {
                // The client library cannot check the chain without the name;
                // refuse rather than verify less than asked.
                return Err(ScrubError::Config(
                    "TLS mode verifyCA is not supported for MySQL/MariaDB; use verifyFull (chain and host name) or require".into(),
                ));
            }
            TlsMode::VerifyFull => {
                let ca = opts.tls.ca_pem.clone().ok_or_else(|| {
                    ScrubError::Config(format!("TLS mode {mode:?} needs the CA certificate (tls.caSecretRef)"))
                })?;
                Some(
                    mysql_async::SslOpts::default()
                        .with_root_certs(vec![ca.into_bytes().into()])
                        .with_disable_built_in_roots(true),
                )
            }
        };
        match Self::connect_with(opts, limits, ssl).await {
            // `prefer`: encrypted when the server can, plain text otherwise.
            Err(e) if mode == TlsMode::Prefer && !matches!(e, ScrubError::Access(_)) => {
                Self::connect_with(opts, limits, None).await
            }
            other => other,
        }
    }

    async fn connect_with(
        opts: &ConnectOptions,
        limits: &Limits,
        ssl: Option<mysql_async::SslOpts>,
    ) -> Result<Mysql, ScrubError> {
        let lock_secs = limits.lock_timeout.as_secs().max(1);
        let builder = OptsBuilder::default()
            .ip_or_hostname(opts.host.clone())
            .tcp_port(opts.port)
            .user(Some(opts.user.clone()))
            .pass(opts.password.clone())
            .db_name(Some(opts.database.clone()))
            .ssl_opts(ssl)
            // Numbers only: nothing user-written reaches these statements.
            .init(vec![
                "SET SESSION time_zone = '+00:00'".to_string(),
                // Strict whatever the server's default: a value a column
                // cannot hold fails its statement instead of being saved
                // mangled (text as 0, cut short) with a warning.
                "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'".to_string(),
                format!("SET SESSION innodb_lock_wait_timeout = {lock_secs}"),
            ]);
        let mut conn = tokio::time::timeout(Duration::from_secs(10), Conn::new(builder))
            .await
            .map_err(|_| ScrubError::Unavailable("connect: timed out".into()))?
            .map_err(|e| classify(e, "connect"))?;
        let version: String =
            conn.query_first("SELECT VERSION()").await.map_err(|e| classify(e, "version"))?.unwrap_or_default();
        let statement_timeout = if version.contains("MariaDB") {
            format!("SET SESSION max_statement_time = {}", limits.statement_timeout.as_secs_f64().max(0.001))
        } else {
            format!("SET SESSION max_execution_time = {}", limits.statement_timeout.as_millis().max(1))
        };
        conn.query_drop(statement_timeout).await.map_err(|e| classify(e, "session setup"))?;
        Ok(Mysql { conn: tokio::sync::Mutex::new(conn), version, unix_time: None, limits: limits.clone() })
    }

    /// Reads integer time columns as counts of `unit` since 1970.
    pub fn with_unix_time(mut self, unit: Option<UnixTimeUnit>) -> Self {
        self.unix_time = unit;
        self
    }

    /// Refuses an integer time column without a unit, or whose values say
    /// the unit is wrong.
    async fn check_unix_times(&self, sel: &Selection, cols: &[Column]) -> Result<(), ScrubError> {
        for (c, _) in sel.older_than.iter().chain(&sel.keep_newer_than) {
            if !cols.iter().any(|x| x.name.eq_ignore_ascii_case(c.as_str()) && x.is_integer()) {
                continue;
            }
            let unit = super::unix_unit(c, self.unix_time)?;
            let (col, ceiling) = (sql::quote(Dialect::Mysql, c), super::unix_time_ceiling(unit));
            // The oldest clamped into a signed bigint (an unsigned column may hold more).
            let q = format!(
                "SELECT CAST(LEAST(MIN({col}), {ceiling} + 1) AS SIGNED), CAST(MAX(CASE WHEN {col} <= {ceiling} THEN {col} END) AS SIGNED) FROM {}",
                Self::qualified(&sel.table)
            );
            let range: Option<(Option<i64>, Option<i64>)> =
                self.conn.lock().await.query_first(q).await.map_err(|e| classify(e, "time range"))?;
            super::check_unix_time_range(c, range.unwrap_or_default(), unit)?;
        }
        Ok(())
    }

    fn qualified(table: &Table) -> String {
        sql::table_name(Dialect::Mysql, table.schema.as_ref(), &table.name)
    }

    async fn columns(&self, table: &Table) -> Result<Vec<Column>, ScrubError> {
        let schema = table.schema.as_ref().map(|s| s.as_str().to_string());
        // Unique indexes of one column, found by grouping this table's index
        // columns: a subquery correlated with `information_schema` would read
        // the catalog of every table on the server for each row.
        let rows: Vec<ColumnRow> = self
            .conn
            .lock()
            .await
            .exec(
                "SELECT c.COLUMN_NAME, DATA_TYPE, IS_NULLABLE, CHARACTER_MAXIMUM_LENGTH,
                        NULLIF(GENERATION_EXPRESSION, ''), u.COLUMN_NAME IS NOT NULL, u.PREFIX,
                        CHARACTER_SET_NAME, COLLATION_NAME
                   FROM information_schema.COLUMNS c
                   LEFT JOIN (SELECT one.COLUMN_NAME, MIN(one.PREFIX) AS PREFIX
                                FROM (SELECT MIN(s.COLUMN_NAME) AS COLUMN_NAME, MIN(COALESCE(s.SUB_PART, 1 << 30)) AS PREFIX
                                        FROM information_schema.STATISTICS s
                                       WHERE s.TABLE_SCHEMA = COALESCE(?, DATABASE()) AND s.TABLE_NAME = ? AND s.NON_UNIQUE = 0
                                       GROUP BY s.INDEX_NAME HAVING COUNT(*) = 1) one
                               GROUP BY one.COLUMN_NAME) u ON u.COLUMN_NAME = c.COLUMN_NAME
                  WHERE c.TABLE_SCHEMA = COALESCE(?, DATABASE()) AND c.TABLE_NAME = ?",
                (&schema, table.name.as_str(), &schema, table.name.as_str()),
            )
            .await
            .map_err(|e| classify(e, "columns"))?;
        if rows.is_empty() {
            return Err(ScrubError::Config(format!("table {} does not exist", Self::qualified(table))));
        }
        Ok(rows
            .into_iter()
            .map(|(name, data_type, nullable, max_len, generated, unique, prefix, charset, collation)| {
                // Names go into the statement's text: plain words only.
                let word = |n: &String| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                Column {
                    name,
                    data_type: data_type.to_lowercase(),
                    nullable: nullable == "YES",
                    max_len,
                    generated,
                    unique_prefix: (unique != 0).then(|| prefix.filter(|p| *p < 1 << 30)),
                    charset: charset.zip(collation).filter(|(s, c)| word(s) && word(c)),
                }
            })
            .collect())
    }

    /// The selection as SQL with its values converted to the columns' types.
    fn predicate(sel: &Selection, cols: &[Column], unix_time: Option<UnixTimeUnit>) -> Result<Bound, ScrubError> {
        let d = Dialect::Mysql;
        let column = |c: &Identifier| {
            cols.iter()
                .find(|x| x.name.eq_ignore_ascii_case(c.as_str()))
                .ok_or_else(|| ScrubError::Config(format!("column {c} does not exist")))
        };
        // Values that cannot be of the column's type cannot match a row: dropped.
        let typed = |c: &Column, values: &[String]| -> Result<Vec<Value>, ScrubError> {
            c.identifies(&sel.table)?;
            Ok(if c.is_integer() {
                // An unsigned `bigint` holds numbers past the signed range.
                let number = |v: &str| v.parse::<i64>().map(Value::from).or_else(|_| v.parse::<u64>().map(Value::from));
                values.iter().filter_map(|v| number(v.trim()).ok()).collect()
            } else {
                values.iter().map(|v| Value::from(v.as_str())).collect()
            })
        };
        // An instant as the column compares it. Anything else would be
        // compared as text or as a number, and match by accident or not at all.
        let time = |c: &Identifier, t: chrono::DateTime<chrono::Utc>| {
            let col = column(c)?;
            match col.data_type.as_str() {
                "datetime" | "timestamp" | "date" => Ok(time_value(t)),
                _ if col.is_integer() => Ok(Value::from(super::unix_unit(c, unix_time)?.count(t))),
                other => Err(ScrubError::Config(format!(
                    "time column {c} has type {other}; it must be datetime, timestamp, date, or an integer \
                     with the Dataset's timestamps.unixTimeUnit"
                ))),
            }
        };
        let list = |n: usize| vec!["?"; n].join(", ");
        let mut b = Bound { sql: Vec::new(), values: Vec::new() };
        if let Some((c, t)) = &sel.older_than {
            b.values.push(time(c, *t)?);
            b.sql.push(format!("{} < ?", sql::quote(d, c)));
        }
        let mut any = Vec::new();
        for (c, values) in sel.subject.iter().filter(|(_, v)| !v.is_empty()) {
            let vals = typed(column(c)?, values)?;
            if !vals.is_empty() {
                any.push(format!("{} IN ({})", sql::quote(d, c), list(vals.len())));
                b.values.extend(vals);
            }
        }
        if !sel.subject.is_empty() {
            // A subject with no usable identifier matches nothing, never everyone.
            b.sql.push(if any.is_empty() { "FALSE".into() } else { format!("({})", any.join(" OR ")) });
        }
        if let Some((c, t)) = &sel.keep_newer_than {
            // NULL compares as unknown, so a record of unknown age is kept.
            b.values.push(time(c, *t)?);
            b.sql.push(format!("{} < ?", sql::quote(d, c)));
        }
        for (c, values) in sel.held.iter().filter(|(_, v)| !v.is_empty()) {
            let vals = typed(column(c)?, values)?;
            if !vals.is_empty() {
                b.sql.push(format!("NOT COALESCE({} IN ({}), FALSE)", sql::quote(d, c), list(vals.len())));
                b.values.extend(vals);
            }
        }
        for (n, g) in sel.guards.iter().enumerate() {
            // Bound as text: the server converts them to the column's type;
            // a value that matches more rows than meant only keeps more.
            let mut member = |_: &Identifier, v: &[String]| {
                b.values.extend(v.iter().map(|s| Value::from(s.as_str())));
                format!("IN ({})", list(v.len()))
            };
            let cond = sql::guard_condition(d, g, n, &Self::qualified(&g.table), &mut member);
            b.sql.extend(cond);
        }
        Ok(b)
    }

    fn where_clause(b: &Bound) -> String {
        if b.sql.is_empty() { "FALSE".into() } else { b.sql.join(" AND ") }
    }

    pub fn server_version(&self) -> String {
        self.version.clone()
    }

    pub async fn probe(&self, table: &Table) -> Result<Probe, ScrubError> {
        let cols = self.columns(table).await?;
        let name = Self::qualified(table);
        let first = sql::quote(
            Dialect::Mysql,
            &Identifier::new(cols[0].name.clone()).map_err(|e| ScrubError::Config(e.to_string()))?,
        );
        // Asking the server to plan each statement checks the privilege for it.
        let can_select = self.allowed(format!("EXPLAIN SELECT 1 FROM {name} LIMIT 0")).await?;
        let can_delete = self.allowed(format!("EXPLAIN DELETE FROM {name} WHERE FALSE")).await?;
        let can_update = self.allowed(format!("EXPLAIN UPDATE {name} SET {first} = {first} WHERE FALSE")).await?;
        Ok(Probe { server_version: self.version.clone(), can_select, can_delete, can_update })
    }

    /// The foreign keys of other tables (and of this one) referencing a
    /// table, each column named, in key order.
    pub async fn referencing_keys(&self, table: &Table) -> Result<Vec<super::ReferencingKey>, ScrubError> {
        let schema = table.schema.as_ref().map(|s| s.as_str().to_string());
        // Schema (unless the connection's), table, key, column, referenced
        // column, delete rule, update rule.
        type KeyRow = (Option<String>, String, String, String, String, String, String);
        let rows: Vec<KeyRow> = self
            .conn
            .lock()
            .await
            .exec(
                "SELECT NULLIF(k.TABLE_SCHEMA, DATABASE()), k.TABLE_NAME, k.CONSTRAINT_NAME, k.COLUMN_NAME,
                        k.REFERENCED_COLUMN_NAME, r.DELETE_RULE, r.UPDATE_RULE
                   FROM information_schema.KEY_COLUMN_USAGE k
                   JOIN information_schema.REFERENTIAL_CONSTRAINTS r
                     ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME
                    AND r.TABLE_NAME = k.TABLE_NAME
                  WHERE k.REFERENCED_TABLE_SCHEMA = COALESCE(?, DATABASE()) AND k.REFERENCED_TABLE_NAME = ?
                  ORDER BY k.TABLE_SCHEMA, k.TABLE_NAME, k.CONSTRAINT_NAME, k.ORDINAL_POSITION",
                (schema, table.name.as_str()),
            )
            .await
            .map_err(|e| classify(e, "foreign keys"))?;
        Ok(sql::referencing_keys(rows.into_iter().map(
            |(schema, child, constraint, column, referenced, on_delete, on_update)| {
                ((schema.clone(), child.clone(), constraint), schema, child, column, referenced, (on_delete, on_update))
            },
        )))
    }

    /// Foreign keys touching a table, as (child table, parent table) names.
    pub async fn foreign_keys(&self, table: &Table) -> Result<Vec<(String, String)>, ScrubError> {
        let schema = table.schema.as_ref().map(|s| s.as_str().to_string());
        let rows: Vec<(String, String)> = self
            .conn
            .lock()
            .await
            .exec(
                "SELECT DISTINCT TABLE_NAME, REFERENCED_TABLE_NAME FROM information_schema.KEY_COLUMN_USAGE
                  WHERE REFERENCED_TABLE_NAME IS NOT NULL AND TABLE_SCHEMA = COALESCE(?, DATABASE())
                    AND (TABLE_NAME = ? OR REFERENCED_TABLE_NAME = ?)
                  ORDER BY 1, 2",
                (schema, table.name.as_str(), table.name.as_str()),
            )
            .await
            .map_err(|e| classify(e, "foreign keys"))?;
        Ok(rows)
    }

    /// The selection with each guard's [`Lookup`] settled
    /// ([`super::settled`]), once each column a guard matches held
    /// subjects' identifiers in is known to compare them exactly (see
    /// [`Column::identifies`]): a guard that matched none would keep none.
    pub async fn settled<'s>(&self, sel: &'s Selection) -> Result<std::borrow::Cow<'s, Selection>, ScrubError> {
        for g in &sel.guards {
            let Some(rows) = &g.rows else { continue };
            let cols = self.columns(&g.table).await?;
            for (c, _) in rows {
                let col = cols
                    .iter()
                    .find(|x| x.name.eq_ignore_ascii_case(c.as_str()))
                    .ok_or_else(|| ScrubError::Config(format!("column {c} of {} does not exist", g.table.name)))?;
                col.identifies(&g.table)?;
            }
        }
        super::settled(self, sel).await
    }

    async fn allowed(&self, q: String) -> Result<bool, ScrubError> {
        match self.conn.lock().await.query_drop(q).await {
            Ok(()) => Ok(true),
            Err(e) => match classify(e, "probe") {
                ScrubError::Access(_) => Ok(false),
                other => Err(other),
            },
        }
    }

    /// Counts what a condition matches. Where the table is large and the
    /// server would read much of it, the count walks the primary key (or a
    /// unique key of NOT NULL columns) in ranges, one statement each, sized
    /// to a fraction of the statement timeout, inside one read-only
    /// transaction with a consistent snapshot: the whole table as of one
    /// moment, as one statement would read it, whatever its size. Otherwise
    /// one statement, walked after all where that runs out of time.
    async fn count_where(&self, table: &Table, cond: &str, values: Vec<Value>) -> Result<i64, ScrubError> {
        let q = format!("SELECT COUNT(*) FROM {} WHERE {cond}", Self::qualified(table));
        Ok(self.count_read(table, q, values.clone(), cond, &values).await?.0)
    }

    /// Runs `q`, a count (and, as a second column, perhaps a `MIN` as a
    /// number) of the records `cond` matches, as [`Self::count_where`] says:
    /// along the walked key, or one statement, walked after all where that
    /// runs out of time.
    async fn count_read(
        &self,
        table: &Table,
        q: String,
        values: Vec<Value>,
        cond: &str,
        cond_values: &[Value],
    ) -> Result<(i64, Option<i64>), ScrubError> {
        let large = self.estimated_rows(table).await? >= CHUNKED_COUNT_FROM_ROWS;
        if large && let Some(key) = self.walk_key(table, cond, cond_values, &self.limits).await? {
            return self.walk_read(Self::qualified(table), key, q, values, Walking::Count).await;
        }
        let counted: Result<Option<mysql_async::Row>, _> = self.conn.lock().await.exec_first(&q, values.clone()).await;
        match counted {
            Ok(row) => count_and_number(row),
            // Through an index, and still too long for one statement.
            Err(e) => self.walk_after(table, e, q, values, Walking::Count, "count").await,
        }
    }

    /// Where one statement `q` failed with `e`: if it ran out of time on a
    /// large table with a key to walk, `q` again along that key
    /// ([`Self::walk_read`]); else the error, as `what`.
    async fn walk_after(
        &self,
        table: &Table,
        e: mysql_async::Error,
        q: String,
        values: Vec<Value>,
        walking: Walking,
        what: &str,
    ) -> Result<(i64, Option<i64>), ScrubError> {
        if matches!(&e, mysql_async::Error::Server(s) if matches!(s.code, 1969 | 3024))
            && self.estimated_rows(table).await? >= CHUNKED_COUNT_FROM_ROWS
            && let Some(key) = self.quoted_key(table).await?
        {
            return self.walk_read(Self::qualified(table), key, q, values, walking).await;
        }
        Err(classify(e, what))
    }

    /// Runs `q` (`SELECT COUNT(*) ... WHERE`, or as `walking` says) in
    /// ranges of the walked key (`key`, quoted), each a statement sized to
    /// a quarter of the statement timeout, all in one read-only snapshot.
    /// The count (none with [`Walking::Extreme`]) and the value the walk kept.
    async fn walk_read(
        &self,
        name: String,
        key: Vec<String>,
        q: String,
        values: Vec<Value>,
        walking: Walking,
    ) -> Result<(i64, Option<i64>), ScrubError> {
        let begin = [
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
        ];
        for q in begin {
            self.conn.lock().await.query_drop(q).await.map_err(|e| classify(e, "count"))?;
        }
        let mut walk = KeyWalk {
            db: self,
            table: name,
            key,
            statement: q,
            values,
            after: None,
            done: false,
            walking,
            found: None,
        };
        let limits = Limits {
            target_batch: self.limits.target_batch.min(self.limits.statement_timeout / 4),
            max_records_per_second: None,
            min_batch: 1,
            ..self.limits.clone()
        };
        let counted = super::drive(&mut walk, &limits, 0, |_| {}).await;
        let end = if counted.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = self.conn.lock().await.query_drop(end).await.map_err(|e| classify(e, "count"));
        let n = counted?.records_done;
        ended?;
        Ok((n, walk.found))
    }

    /// The earliest (or, with `newest`, latest) value of `column` among the
    /// records a selection matches: one statement, or along the walked key
    /// where that runs out of time on a large table.
    pub async fn extreme(
        &self,
        sel: &Selection,
        column: &Identifier,
        newest: bool,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, ScrubError> {
        let sel = &*self.settled(sel).await?;
        let cols = self.columns(&sel.table).await?;
        let b = Self::predicate(sel, &cols, self.unix_time)?;
        let time = TimeValue::of(column, &cols, newest);
        let name = Self::qualified(&sel.table);
        let q = format!("SELECT {} FROM {name} WHERE {}", time.sql, Self::where_clause(&b));
        let found: Result<Option<Option<i64>>, _> = self.conn.lock().await.exec_first(&q, b.values.clone()).await;
        let n = match found {
            Ok(n) => n.flatten(),
            // Too long for one statement: no index on the column, or one
            // still holding an entry for each record a pass just deleted.
            Err(e) => self.walk_after(&sel.table, e, q, b.values, Walking::Extreme { newest }, "oldest").await?.1,
        };
        time.instant(n, self.unix_time)
    }

    /// The count closing a delete run (`cond`, `values`: what the selection
    /// still matches) that also reads the oldest record left past the
    /// selection's cutoff, held or under minimum retention: one statement,
    /// or along the walked key as [`Self::count_where`] would count. Right
    /// after a run, a read of that record of its own would go through the
    /// time column's index, whose entries for the records just deleted
    /// stay until the server purges them, each visited first.
    async fn count_with_oldest(
        &self,
        sel: &Selection,
        cols: &[Column],
        cond: &str,
        values: &[Value],
    ) -> Result<(i64, Option<Option<chrono::DateTime<chrono::Utc>>>), ScrubError> {
        let Some((column, _)) = &sel.older_than else {
            return Ok((self.count_where(&sel.table, cond, values.to_vec()).await?, None));
        };
        let past = Self::predicate(&sel.with_kept(), cols, self.unix_time)?;
        let past_cond = Self::where_clause(&past);
        let time = TimeValue::of(column, cols, false);
        let name = Self::qualified(&sel.table);
        let q = format!("SELECT COUNT(CASE WHEN {cond} THEN 1 END), {} FROM {name} WHERE {past_cond}", time.sql);
        let mut all = values.to_vec();
        all.extend(past.values.iter().cloned());
        let (n, found) = self.count_read(&sel.table, q, all, &past_cond, &past.values).await?;
        Ok((n, Some(time.instant(found, self.unix_time)?)))
    }

    pub async fn count(&self, sel: &Selection) -> Result<i64, ScrubError> {
        let sel = &*self.settled(sel).await?;
        let cols = self.columns(&sel.table).await?;
        let b = Self::predicate(sel, &cols, self.unix_time)?;
        self.count_where(&sel.table, &Self::where_clause(&b), b.values).await
    }

    /// The dry run.
    pub async fn plan(&self, sel: &Selection) -> Result<Counts, ScrubError> {
        let sel = &*self.settled(sel).await?;
        self.check_unix_times(sel, &self.columns(&sel.table).await?).await?;
        super::plan(self, sel).await
    }

    /// Each rule's new value and the "already anonymized" condition,
    /// refusing rules the table cannot take.
    fn anonymize(rules: &[FieldRule], salt: &str, cols: &[Column]) -> Result<Anonymization<Value>, ScrubError> {
        let d = Dialect::Mysql;
        let (mut sets, mut done, mut done_values, mut fresh) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in rules {
            let col = cols
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(r.field.as_str()))
                .ok_or_else(|| ScrubError::Config(format!("column {} does not exist", r.field)))?;
            let c = sql::quote(d, &r.field);
            // A unique prefix index keeps distinct only as much as its prefix.
            let prefix = col.unique_prefix.flatten();
            let facts = super::ColumnFacts {
                nullable: col.nullable,
                is_text: col.is_text(),
                max_len: match (col.max_len, prefix) {
                    (Some(l), Some(p)) => Some(l.min(p)),
                    (l, p) => l.or(p),
                },
                computed: col.generated.is_some().then_some("a generated column"),
                unique: col.unique_prefix.is_some(),
                one_null: false,
            };
            super::check_rule(r, &facts)?;
            match r.strategy {
                AnonymizeStrategy::Null => {
                    done.push(format!("{c} IS NULL"));
                    sets.push((r.field.clone(), "NULL".to_string(), vec![]));
                }
                AnonymizeStrategy::Fixed => {
                    let v = r.value.clone().unwrap_or_default();
                    done.push(format!("{c} <=> ?"));
                    done_values.push(Value::from(v.as_str()));
                    sets.push((r.field.clone(), "?".to_string(), vec![Value::from(v.as_str())]));
                }
                AnonymizeStrategy::Redact => {
                    done.push(format!("({c} IS NULL OR {c} REGEXP '^[*]+$')"));
                    let redacted = format!("REPEAT('*', GREATEST(CHAR_LENGTH({c}), 1))");
                    sets.push((r.field.clone(), redacted, vec![]));
                }
                AnonymizeStrategy::Hash => {
                    // Distinct inputs keep distinct outputs, so UNIQUE columns stay valid.
                    let keep = sql::hash_length(col.max_len);
                    done.push(format!("({c} IS NULL OR {c} LIKE 'anon-%')"));
                    let hashed = format!("CONCAT('anon-', LEFT(SHA2(CONCAT(?, {c}), 256), {keep}))");
                    // In the column's character set where the catalog names
                    // it: the step that finds hashes used again looks each
                    // one up in the column's unique index, which a value in
                    // another character set cannot use (every record read
                    // once for every record changed).
                    let fresh_hash = sql::fresh_hash(d, col.max_len);
                    let (set, fresh_value) = match (col.in_own_charset(&hashed), col.in_own_charset(&fresh_hash)) {
                        (Some(own), Some(fresh_own)) => {
                            (format!("CASE WHEN {c} LIKE 'anon-%' THEN {c} ELSE {own} END"), fresh_own)
                        }
                        _ => (sql::unless_hashed(d, &c, &hashed), fresh_hash),
                    };
                    sets.push((r.field.clone(), set, vec![Value::from(salt)]));
                    fresh.push((r.field.clone(), fresh_value));
                }
            }
        }
        Ok(Anonymization { sets, done: format!("({})", done.join(" AND ")), done_values, fresh })
    }

    /// Drops (or, on MariaDB, converts to a table of its own: "detach")
    /// every range partition on the time column that lies wholly before the
    /// cutoff and whose every record is selected. The table is write-locked
    /// from the check to the DDL, so no record slips in between.
    /// Understood layouts: `RANGE COLUMNS(col)`, `RANGE(UNIX_TIMESTAMP(col))`
    /// and `RANGE(TO_DAYS(col))`; anything else is scrubbed row by row.
    async fn whole_partitions(
        &self,
        sel: &Selection,
        b: &Bound,
        mode: PartitionMode,
    ) -> Result<Vec<(String, i64)>, ScrubError> {
        let Some((col, cutoff)) = &sel.older_than else { return Ok(vec![]) };
        let schema = sel.table.schema.as_ref().map(|s| s.as_str().to_string());
        let parts: Vec<(String, String, String, String)> = self
            .conn
            .lock()
            .await
            .exec(
                "SELECT PARTITION_NAME, PARTITION_METHOD, COALESCE(PARTITION_EXPRESSION, ''), COALESCE(PARTITION_DESCRIPTION, '')
                   FROM information_schema.PARTITIONS
                  WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND PARTITION_NAME IS NOT NULL
                  ORDER BY PARTITION_ORDINAL_POSITION",
                (schema, sel.table.name.as_str()),
            )
            .await
            .map_err(|e| classify(e, "partitions"))?;
        let quoted = sql::quote(Dialect::Mysql, col).to_ascii_lowercase();
        let table = Self::qualified(&sel.table);
        let pred = Self::where_clause(b);
        let mut done = Vec::new();
        for (name, method, expr, upper) in parts {
            let expr = expr.to_ascii_lowercase().replace(' ', "");
            let numeric = !upper.is_empty() && upper.bytes().all(|c| c.is_ascii_digit());
            // The partition's exclusive upper bound, as a time SQL can compare.
            let (bound_sql, bound_value) = match method.as_str() {
                // The column itself, an integer counting the Dataset's unit.
                "RANGE" | "RANGE COLUMNS" if numeric && expr == quoted => {
                    match (self.unix_time, upper.parse::<i64>().ok()) {
                        (Some(unit), Some(n)) => match unit.instant(n) {
                            Some(t) => ("CAST(? AS DATETIME(6))", time_value(t)),
                            None => continue,
                        },
                        _ => continue,
                    }
                }
                "RANGE COLUMNS" if expr == quoted => {
                    match upper.strip_prefix('\'').and_then(|u| u.strip_suffix('\'')) {
                        Some(literal) => ("CAST(? AS DATETIME(6))", Value::from(literal)),
                        None => continue,
                    }
                }
                "RANGE" if numeric && expr == format!("unix_timestamp({quoted})") => {
                    ("FROM_UNIXTIME(?)", Value::from(upper.parse::<i64>().unwrap_or(i64::MAX)))
                }
                "RANGE" if numeric && expr == format!("to_days({quoted})") => {
                    ("FROM_DAYS(?)", Value::from(upper.parse::<i64>().unwrap_or(i64::MAX)))
                }
                _ => continue,
            };
            // Partition names come from the catalog; only plain ones are used in DDL.
            let Ok(part) = Identifier::new(name.clone()) else { continue };
            let part_q = sql::quote(Dialect::Mysql, &part);
            let before: Option<i64> = self
                .conn
                .lock()
                .await
                .exec_first(format!("SELECT {bound_sql} <= ?"), (bound_value, time_value(*cutoff)))
                .await
                .map_err(|e| classify(e, "partition bound"))?;
            if before != Some(1) {
                continue;
            }
            let mut conn = self.conn.lock().await;
            conn.query_drop(format!("LOCK TABLES {}", Self::locks(sel)))
                .await
                .map_err(|e| classify(e, "lock table"))?;
            let result = async {
                let counts: Option<(i64, Option<i64>)> = conn
                    .exec_first(
                        format!(
                            "SELECT COUNT(*), SUM(NOT COALESCE(({pred}), FALSE)) FROM {table} PARTITION ({part_q})"
                        ),
                        b.values.clone(),
                    )
                    .await
                    .map_err(|e| classify(e, "partition"))?;
                let (records, keep) = counts.map(|(r, k)| (r, k.unwrap_or(0))).unwrap_or((0, 0));
                if keep > 0 {
                    // Something in it must stay: row by row it is.
                    return Ok(None);
                }
                let ddl = match mode {
                    PartitionMode::Detach if self.version.contains("MariaDB") => {
                        let detached = Identifier::new(format!("{}_{}", sel.table.name.as_str(), part.as_str()))
                            .map_err(|e| ScrubError::Config(format!("partition {name}: {e}")))?;
                        let into = sql::table_name(Dialect::Mysql, sel.table.schema.as_ref(), &detached);
                        format!("ALTER TABLE {table} CONVERT PARTITION {part_q} TO TABLE {into}")
                    }
                    // MySQL cannot detach a partition: its records go row by row.
                    PartitionMode::Detach => return Ok(None),
                    _ => format!("ALTER TABLE {table} DROP PARTITION {part_q}"),
                };
                conn.query_drop(ddl).await.map_err(|e| classify(e, "drop partition"))?;
                Ok::<_, ScrubError>(Some(records))
            }
            .await;
            let unlocked = conn.query_drop("UNLOCK TABLES").await.map_err(|e| classify(e, "unlock"));
            if let Some(records) = result? {
                done.push((name, records));
            }
            unlocked?;
        }
        Ok(done)
    }

    /// What a partition's check and drop lock: the selected table to write,
    /// and the table of each guard to read, by the name its condition reads
    /// it by ([`sql::guard_alias`]): a session holding locks may read no
    /// other table, nor one table twice in a statement by one name.
    fn locks(sel: &Selection) -> String {
        let mut locks = vec![format!("{} WRITE", Self::qualified(&sel.table))];
        for (n, g) in sel.guards.iter().enumerate().filter(|(_, g)| g.guards_any()) {
            locks.push(format!("{} AS {} READ", Self::qualified(&g.table), sql::guard_alias(n)));
        }
        locks.join(", ")
    }

    /// Runs a selection to the end in bounded batches (see the module docs).
    pub async fn run(
        &self,
        sel: &Selection,
        action: &Action,
        limits: &Limits,
        done_before: i64,
        on_progress: impl FnMut(&Progress),
    ) -> Result<Outcome, ScrubError> {
        sel.check()?;
        let sel = &*self.settled(sel).await?;
        let cols = self.columns(&sel.table).await?;
        self.check_unix_times(sel, &cols).await?;
        let b = Self::predicate(sel, &cols, self.unix_time)?;
        let pred = Self::where_clause(&b);
        let table = Self::qualified(&sel.table);
        // Whole partitions first, where the time column is the range key.
        let (mut partitions, mut done_before, mut on_progress) = (Vec::new(), done_before, on_progress);
        if matches!(action, Action::Delete) && limits.partitions != PartitionMode::Rows {
            for (name, records) in self.whole_partitions(sel, &b, limits.partitions).await? {
                done_before += records;
                partitions.push(name);
                on_progress(&Progress { records_done: done_before, ..Progress::default() });
            }
        }
        let (statement, values, remaining_cond, remaining_values) = match action {
            Action::Delete => {
                (format!("DELETE FROM {table} WHERE {pred}"), b.values.clone(), pred.clone(), b.values.clone())
            }
            Action::Anonymize { rules, salt } => {
                let a = Self::anonymize(rules, salt, &cols)?;
                let cond = format!("{pred} AND NOT {}", a.done);
                let mut remaining = b.values.clone();
                remaining.extend(a.done_values.iter().cloned());
                let keys = self.check_unique_keys(&sel.table, &cols, rules, &a, &cond, &remaining).await?;
                if let Some((q, params)) = a.reuse_update(Dialect::Mysql, &table, &keys, rules, &cond, &remaining) {
                    let mut conn = self.conn.lock().await;
                    conn.exec_drop(q, params).await.map_err(|e| classify(e, "fresh hashes"))?;
                    if conn.affected_rows() > 0 {
                        // Committed: a run resumed from here counts them still.
                        done_before += conn.affected_rows() as i64;
                        on_progress(&Progress { records_done: done_before, ..Progress::default() });
                    }
                }
                let (sets, mut values) = a.set_list(Dialect::Mysql);
                values.extend(remaining.iter().cloned());
                (format!("UPDATE {table} SET {sets} WHERE {cond}"), values, cond, remaining)
            }
        };
        let mut outcome = Outcome { records_done: done_before, ..Outcome::default() };
        let walk_key = self.walk_key(&sel.table, &remaining_cond, &remaining_values, limits).await?;
        let walked = walk_key.is_some();
        if let Some(key) = walk_key {
            // One pass along the key; then the count says whether rows
            // were added or moved behind it meanwhile.
            let mut walk = KeyWalk {
                db: self,
                table: table.clone(),
                key,
                statement: statement.clone(),
                values: values.clone(),
                after: None,
                done: false,
                walking: Walking::Change,
                found: None,
            };
            outcome = super::drive(&mut walk, limits, done_before, &mut on_progress).await?;
            (outcome.remaining, outcome.oldest_past_cutoff) =
                self.count_left(sel, action, &cols, &remaining_cond, &remaining_values).await?;
        }
        if !walked || outcome.remaining > 0 {
            let mut source = MyBatches { db: self, statement, values };
            let more = super::drive(&mut source, limits, outcome.records_done, &mut on_progress).await?;
            outcome.records_done = more.records_done;
            outcome.batches += more.batches;
            outcome.batch_durations.extend(more.batch_durations);
            (outcome.remaining, outcome.oldest_past_cutoff) =
                self.count_left(sel, action, &cols, &remaining_cond, &remaining_values).await?;
        }
        outcome.partitions = partitions;
        Ok(outcome)
    }

    /// What a run leaves for its action to do (`cond`, `values`), counted
    /// after it; after a delete, with the oldest record left past the
    /// cutoff ([`Self::count_with_oldest`]).
    async fn count_left(
        &self,
        sel: &Selection,
        action: &Action,
        cols: &[Column],
        cond: &str,
        values: &[Value],
    ) -> Result<(i64, Option<Option<chrono::DateTime<chrono::Utc>>>), ScrubError> {
        match action {
            Action::Delete => self.count_with_oldest(sel, cols, cond, values).await,
            Action::Anonymize { .. } => Ok((self.count_where(&sel.table, cond, values.to_vec()).await?, None)),
        }
    }

    /// The key to walk in consecutive ranges ([`Self::walk_columns`]), when
    /// the server estimates that the selection is more than
    /// `block_pass_above` of the table, or can find it only by reading the
    /// whole table. `... LIMIT n` batches would then read again, from the
    /// start, every row (or index entry, until purged) the earlier batches
    /// passed over. Returns the key's columns, quoted, in key order.
    async fn walk_key(
        &self,
        table: &Table,
        cond: &str,
        values: &[Value],
        limits: &Limits,
    ) -> Result<Option<Vec<String>>, ScrubError> {
        let name = Self::qualified(table);
        let Some(key) = self.quoted_key(table).await? else {
            return Ok(None);
        };
        let mut conn = self.conn.lock().await;
        let plan: Vec<mysql_async::Row> = conn
            .exec(format!("EXPLAIN SELECT * FROM {name} WHERE {cond}"), values.to_vec())
            .await
            .map_err(|e| classify(e, "plan"))?;
        // "Impossible WHERE" and the like: no access to the table at all.
        let Some(rows) = plan.first().and_then(|r| r.get_opt::<Value, _>("rows")).and_then(Result::ok) else {
            return Ok(None);
        };
        let number = |v: Value| mysql_async::from_value_opt::<Option<i64>>(v).ok().flatten().unwrap_or(0) as f64;
        let rows = number(rows);
        drop(conn);
        let share = rows / self.estimated_rows(table).await?.max(1.0);
        Ok((share > limits.block_pass_above).then_some(key))
    }

    /// The key to walk ([`Self::walk_columns`]), quoted; `None` where there is none.
    async fn quoted_key(&self, table: &Table) -> Result<Option<Vec<String>>, ScrubError> {
        let key = self.walk_columns(table).await?;
        if key.is_empty() {
            return Ok(None);
        }
        let quoted = sql::quote_names(Dialect::Mysql, key.iter().map(String::as_str))
            .map_err(|e| ScrubError::Config(format!("key of {}: {e}", Self::qualified(table))))?;
        Ok(Some(quoted))
    }

    /// The server's estimate of the records in a table (0 where it has none).
    async fn estimated_rows(&self, table: &Table) -> Result<f64, ScrubError> {
        let total: Option<Value> = self
            .conn
            .lock()
            .await
            .exec_first(
                "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?",
                (table.schema.as_ref().map(|s| s.as_str()), table.name.as_str()),
            )
            .await
            .map_err(|e| classify(e, "table size"))?;
        let total = total.and_then(|v| mysql_async::from_value_opt::<Option<i64>>(v).ok().flatten());
        Ok(total.unwrap_or(0) as f64)
    }

    /// The columns of the key to walk, in key order: the primary key, or
    /// where there is none a unique key of NOT NULL columns, whole (no
    /// prefix, no expression), which orders the records as totally (none
    /// without either).
    async fn walk_columns(&self, table: &Table) -> Result<Vec<String>, ScrubError> {
        // A column that may be NULL, or only a prefix of it, reads as one
        // without a name, which leaves its key out, as an expression does.
        let rows: Vec<(String, Option<String>)> = self
            .conn
            .lock()
            .await
            .exec(
                "SELECT INDEX_NAME, IF(NULLABLE <> 'YES' AND SUB_PART IS NULL, COLUMN_NAME, NULL)
                   FROM information_schema.STATISTICS
                  WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND NON_UNIQUE = 0
                  ORDER BY INDEX_NAME <> 'PRIMARY', INDEX_NAME, SEQ_IN_INDEX",
                (table.schema.as_ref().map(|s| s.as_str()), table.name.as_str()),
            )
            .await
            .map_err(|e| classify(e, "primary key"))?;
        Ok(sql::UniqueKey::of_columns(rows).into_iter().next().map(|k| k.columns).unwrap_or_default())
    }

    /// Records the selection still leaves for the action to do.
    pub async fn pending(&self, sel: &Selection, action: &Action) -> Result<i64, ScrubError> {
        let Action::Anonymize { rules, salt } = action else { return self.count(sel).await };
        let sel = &*self.settled(sel).await?;
        let cols = self.columns(&sel.table).await?;
        let b = Self::predicate(sel, &cols, self.unix_time)?;
        let a = Self::anonymize(rules, salt, &cols)?;
        let cond = format!("{} AND NOT {}", Self::where_clause(&b), a.done);
        let mut values = b.values.clone();
        values.extend(a.done_values.iter().cloned());
        self.check_unique_keys(&sel.table, &cols, rules, &a, &cond, &values).await?;
        self.count_where(&sel.table, &cond, values).await
    }

    /// Refuses an anonymization that would give two records the same
    /// values in a unique key of several columns, or of a generated column
    /// (as the server computes it from the new values), before any
    /// change. `changed` selects the records it changes, with `values`.
    /// Returns the table's unique keys, a generated column as the columns
    /// it is computed from (for the fresh-hash step).
    async fn check_unique_keys(
        &self,
        table: &Table,
        cols: &[Column],
        rules: &[FieldRule],
        a: &Anonymization<Value>,
        changed: &str,
        values: &[Value],
    ) -> Result<Vec<sql::UniqueKey>, ScrubError> {
        let rows: Vec<(String, Option<String>)> = self
            .conn
            .lock()
            .await
            .exec(
                "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS
                  WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND NON_UNIQUE = 0
                  ORDER BY INDEX_NAME, SEQ_IN_INDEX",
                (table.schema.as_ref().map(|s| s.as_str()), table.name.as_str()),
            )
            .await
            .map_err(|e| classify(e, "unique keys"))?;
        // A key on an expression has a column without a name.
        let d = Dialect::Mysql;
        let name = Self::qualified(table);
        let generated = generated_from(cols);
        let expressions: Vec<(String, String)> =
            cols.iter().filter_map(|c| Some((c.name.clone(), c.generated.clone()?))).collect();
        let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        let (mut approximate, computed) =
            sql::UniqueKey::split_generated(d, sql::UniqueKey::of_columns(rows), &generated, rules);
        let mut keys = approximate.clone();
        for (key, through, risky) in computed {
            // As the server computes the key's generated columns, each in its
            // own character set and collation.
            let computed = |c: &str| {
                let col = cols.iter().find(|x| x.name.eq_ignore_ascii_case(c))?;
                let expr = format!("({})", sql::inline_generated(d, col.generated.as_ref()?, &expressions, &same)?);
                Some(col.in_own_charset(&expr).unwrap_or(expr))
            };
            // A check the server refuses (an expression it cannot restate)
            // or that cannot be built: the key is judged by the columns it
            // is computed from instead, which may refuse what the key would
            // take, and leaves values only its expression makes equal to
            // the batches.
            let found = match a.generated_collision_check(d, &name, &key, &through, computed, changed, values) {
                None => None,
                Some((q, params)) => match self.conn.lock().await.exec_first::<i64, _, _>(q, params).await {
                    Ok(found) => Some(found.is_some()),
                    Err(e) => match classify(e, "unique key check") {
                        ScrubError::Config(m) if !m.contains(super::READ_TIMEOUT) => {
                            tracing::warn!(key = %key.name, error = %m, "unique key check not prepared");
                            None
                        }
                        e => return Err(e),
                    },
                },
            };
            through.settle_generated(&key.name, found, &risky, &mut keys, &mut approximate)?;
        }
        for (q, params, refusal) in a.collision_checks(d, &name, approximate, rules, changed, values) {
            let found: Option<i64> =
                self.conn.lock().await.exec_first(q, params).await.map_err(|e| classify(e, "unique key check"))?;
            if found.is_some() {
                return Err(refusal);
            }
        }
        Ok(keys)
    }

    /// For tests and tools: runs SQL text as is.
    pub async fn execute_batch(&self, sql: &str) -> Result<(), ScrubError> {
        self.conn.lock().await.query_drop(sql).await.map_err(|e| classify(e, "execute"))
    }

    /// For tests and tools: a query's first column as integers.
    pub async fn query_i64(&self, sql: &str) -> Result<Vec<i64>, ScrubError> {
        self.conn.lock().await.query(sql).await.map_err(|e| classify(e, "query"))
    }
}

impl super::Indexes for Mysql {
    /// A B-tree index the optimizer may use: not ignored (MariaDB), not
    /// invisible (MySQL).
    async fn leads_an_index(&self, g: &super::Guard) -> Result<bool, ScrubError> {
        // Every column, as MariaDB names whether an index is ignored
        // (`IGNORED`) and MySQL whether it is visible (`IS_VISIBLE`).
        let indexes: Vec<mysql_async::Row> = self
            .conn
            .lock()
            .await
            .exec(
                "SELECT * FROM information_schema.STATISTICS
                  WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?
                    AND SEQ_IN_INDEX = 1 AND INDEX_TYPE = 'BTREE'",
                (g.table.schema.as_ref().map(|s| s.as_str()), g.table.name.as_str()),
            )
            .await
            .map_err(|e| classify(e, "referencing indexes"))?;
        let usable = |r: &mysql_async::Row| {
            let text = |name: &str| r.get_opt::<Option<String>, _>(name).and_then(Result::ok).flatten();
            text("IGNORED").is_none_or(|v| !v.eq_ignore_ascii_case("YES"))
                && text("IS_VISIBLE").is_none_or(|v| !v.eq_ignore_ascii_case("NO"))
                && text("COLUMN_NAME").is_some_and(|c| g.columns.iter().any(|x| x.as_str().eq_ignore_ascii_case(&c)))
        };
        Ok(indexes.iter().any(usable))
    }
}

impl super::Counting for Mysql {
    async fn count(&self, sel: &Selection) -> Result<i64, ScrubError> {
        Mysql::count(self, sel).await
    }

    async fn total(&self, table: &Table) -> Result<i64, ScrubError> {
        self.count_where(table, "TRUE", vec![]).await
    }
}

/// Consecutive ranges of the walked key, each one statement: the
/// selection's statement narrowed to keys after `after` and up to `upto`,
/// where `upto` lies `size` rows on (found through the key's own index).
/// A key of several columns is compared column by column, spelled out, as
/// the server turns that (and not a row comparison) into a key range.
struct KeyWalk<'a> {
    db: &'a Mysql,
    table: String,
    key: Vec<String>,
    statement: String,
    values: Vec<Value>,
    after: Option<Vec<Value>>,
    done: bool,
    walking: Walking,
    /// The earliest or latest value so far, with [`Walking::Extreme`].
    found: Option<i64>,
}

/// What each range of a [`KeyWalk`] runs.
#[derive(Clone, Copy)]
enum Walking {
    /// The selection's `DELETE` or `UPDATE`: the records it changes.
    Change,
    /// A count: what the range holds; and where the statement reads a
    /// second column, a `MIN` as a number, kept in `found`.
    Count,
    /// A `MIN` (or, `newest`, `MAX`) as a number, kept in `found`.
    Extreme { newest: bool },
}

/// A count and a number, the first two columns of `row` (the number none
/// where NULL); a count that does not read as one is an error, never 0.
fn count_and_number(row: Option<mysql_async::Row>) -> Result<(i64, Option<i64>), ScrubError> {
    let Some(row) = row else { return Ok((0, None)) };
    let number = |i: usize| row.get_opt::<Option<i64>, _>(i).and_then(Result::ok);
    let count =
        number(0).flatten().ok_or_else(|| ScrubError::Unavailable("count: the server returned no count".into()))?;
    Ok((count, number(1).flatten()))
}

/// The earliest (or latest) value of a time column as a number a statement
/// reads: seconds since 1970, or the column's own count of its unit.
struct TimeValue {
    sql: String,
    integer: bool,
    column: Identifier,
}

impl TimeValue {
    fn of(column: &Identifier, cols: &[Column], newest: bool) -> TimeValue {
        let agg = if newest { "max" } else { "min" };
        let integer = cols.iter().any(|x| x.name.eq_ignore_ascii_case(column.as_str()) && x.is_integer());
        let c = sql::quote(Dialect::Mysql, column);
        let value = if integer {
            format!("LEAST({agg}({c}), 9000000000000000000)")
        } else {
            format!("UNIX_TIMESTAMP({agg}({c}))")
        };
        TimeValue { sql: format!("CAST({value} AS SIGNED)"), integer, column: column.clone() }
    }

    /// The instant a number read stands for.
    fn instant(
        &self,
        n: Option<i64>,
        unit: Option<UnixTimeUnit>,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, ScrubError> {
        match n {
            Some(n) if self.integer => Ok(super::unix_unit(&self.column, unit)?.instant(n)),
            other => Ok(other.and_then(|s| chrono::DateTime::from_timestamp(s, 0))),
        }
    }
}

impl KeyWalk<'_> {
    /// `key > at` (or `key <= at`) in key order, with its values.
    fn compare(&self, at: &[Value], after: bool) -> (String, Vec<Value>) {
        let (strict, last) = if after { (">", ">") } else { ("<", "<=") };
        let mut terms = Vec::new();
        let mut values = Vec::new();
        for i in 0..self.key.len() {
            let mut parts: Vec<String> = self.key[..i].iter().map(|k| format!("{k} = ?")).collect();
            values.extend(at[..i].iter().cloned());
            let op = if i + 1 == self.key.len() { last } else { strict };
            parts.push(format!("{} {op} ?", self.key[i]));
            values.push(at[i].clone());
            terms.push(format!("({})", parts.join(" AND ")));
        }
        (format!("({})", terms.join(" OR ")), values)
    }
}

impl super::BatchSource for KeyWalk<'_> {
    fn sizes(&self, limits: &Limits) -> (i64, i64, i64) {
        (limits.initial_batch, limits.min_batch, limits.max_batch)
    }

    async fn batch(&mut self, size: i64) -> Result<Option<i64>, ScrubError> {
        if self.done {
            return Ok(None);
        }
        let key = self.key.join(", ");
        // The offset is a number of ours, not a user's value.
        let offset = size.max(1) - 1;
        let (from, from_values) = match &self.after {
            Some(a) => self.compare(a, true),
            None => ("TRUE".to_string(), Vec::new()),
        };
        let mut conn = self.db.conn.lock().await;
        let upto: Option<mysql_async::Row> = conn
            .exec_first(
                format!("SELECT {key} FROM {} WHERE {from} ORDER BY {key} LIMIT 1 OFFSET {offset}", self.table),
                from_values.clone(),
            )
            .await
            .map_err(|e| classify(e, "batch range"))?;
        let upto: Option<Vec<Value>> = upto.map(|r| r.unwrap());
        let mut q = format!("{} AND {from}", self.statement);
        let mut values = self.values.clone();
        values.extend(from_values);
        if let Some(u) = &upto {
            let (to, to_values) = self.compare(u, false);
            q.push_str(&format!(" AND {to}"));
            values.extend(to_values);
        }
        let n = match self.walking {
            Walking::Change => {
                conn.exec_drop(q, values).await.map_err(|e| classify(e, "batch"))?;
                conn.affected_rows() as i64
            }
            Walking::Count => {
                let row: Option<mysql_async::Row> =
                    conn.exec_first(q, values).await.map_err(|e| classify(e, "batch"))?;
                let (n, v) = count_and_number(row)?;
                self.found = super::extreme_of(self.found, v, false);
                n
            }
            Walking::Extreme { newest } => {
                let v = conn.exec_first::<Option<i64>, _, _>(q, values).await.map_err(|e| classify(e, "batch"))?;
                self.found = super::extreme_of(self.found, v.flatten(), newest);
                0
            }
        };
        match upto {
            Some(u) => self.after = Some(u),
            None => self.done = true,
        }
        Ok(Some(n))
    }
}

struct MyBatches<'a> {
    db: &'a Mysql,
    statement: String,
    values: Vec<Value>,
}

impl super::BatchSource for MyBatches<'_> {
    fn sizes(&self, limits: &Limits) -> (i64, i64, i64) {
        (limits.initial_batch, limits.min_batch, limits.max_batch)
    }

    async fn batch(&mut self, size: i64) -> Result<Option<i64>, ScrubError> {
        // The limit is a number of ours, not a user's value.
        let q = format!("{} LIMIT {}", self.statement, size.max(1));
        let mut conn = self.db.conn.lock().await;
        conn.exec_drop(q, self.values.clone()).await.map_err(|e| classify(e, "batch"))?;
        let n = conn.affected_rows() as i64;
        Ok((n > 0).then_some(n))
    }
}
