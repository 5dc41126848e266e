//! SQL text shared by the SQL drivers: identifier quoting and the predicate
//! of a selection. Identifiers are validated plain names (see
//! `api::validate_identifier`) and are quoted on top; values are always
//! bound parameters, never part of the text.

use super::{FieldRule, Selection};
use crate::api::{AnonymizeStrategy, Identifier, UnixTimeUnit};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Mysql,
    Sqlite,
}

/// Quotes an identifier in the dialect's quotes (doubling any quote, which
/// a validated identifier never contains).
pub fn quote(d: Dialect, ident: &Identifier) -> String {
    let q = if d == Dialect::Mysql { '`' } else { '"' };
    let escaped = ident.as_str().replace(q, &format!("{q}{q}"));
    format!("{q}{escaped}{q}")
}

/// Quotes column names the server reported (a primary key's, say), after
/// validating each as an identifier would be.
pub fn quote_names<'a>(
    d: Dialect,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<String>, crate::api::IdentifierError> {
    names.into_iter().map(|n| Identifier::new(n).map(|i| quote(d, &i))).collect()
}

pub fn table_name(d: Dialect, schema: Option<&Identifier>, name: &Identifier) -> String {
    match schema {
        Some(s) => format!("{}.{}", quote(d, s), quote(d, name)),
        None => quote(d, name),
    }
}

/// A parameter of a predicate, in placeholder order.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// An instant, and the unit integer time columns count (if known).
    Time(chrono::DateTime<chrono::Utc>, Option<UnixTimeUnit>),
    Values(Vec<String>),
    Text(String),
}

/// Builds placeholders: `$1, $2, ...` for PostgreSQL, `?` elsewhere.
#[derive(Clone)]
pub struct Params {
    d: Dialect,
    pub values: Vec<Param>,
    /// What integer time columns count, for the times pushed.
    pub unix_time: Option<UnixTimeUnit>,
}

impl Params {
    pub fn new(d: Dialect) -> Self {
        Params { d, values: Vec::new(), unix_time: None }
    }

    pub fn push(&mut self, p: Param) -> String {
        self.values.push(p);
        match self.d {
            Dialect::Postgres => format!("${}", self.values.len()),
            _ => "?".into(),
        }
    }
}

/// A catalog row of one foreign key column: the key it belongs to (`K`,
/// unique per key), the referencing table's schema (when not the
/// connection's) and name, its column, the column it references, and the
/// key's delete and update rules as the catalog spells them.
pub type KeyColumn<K> = (K, Option<String>, String, String, String, (String, String));

/// Foreign keys from catalog rows of one column each, in key order.
pub fn referencing_keys<K: PartialEq>(rows: impl IntoIterator<Item = KeyColumn<K>>) -> Vec<super::ReferencingKey> {
    let mut keys: Vec<(K, super::ReferencingKey)> = Vec::new();
    for (key, schema, table, column, referenced, (on_delete, on_update)) in rows {
        match keys.iter_mut().find(|(k, _)| *k == key) {
            Some((_, k)) => {
                k.columns.push(column);
                k.references.push(referenced);
            }
            None => keys.push((
                key,
                super::ReferencingKey {
                    schema,
                    table,
                    columns: vec![column],
                    references: vec![referenced],
                    restricts: restricts(&on_delete),
                    restricts_update: restricts(&on_update),
                },
            )),
        }
    }
    keys.into_iter().map(|(_, k)| k).collect()
}

/// Whether a delete or update rule, as a catalog spells it (`NO ACTION`,
/// `RESTRICT`, PostgreSQL's one-letter codes `a` and `r`), refuses to
/// change a referenced record, rather than changing the rows referencing
/// it.
pub fn restricts(rule: &str) -> bool {
    matches!(rule.to_ascii_uppercase().as_str(), "NO ACTION" | "RESTRICT" | "A" | "R")
}

/// The condition keeping what a guard's rows reference: the selected
/// table's referenced columns are not among those rows' values. `table` is
/// the referencing table, quoted, which the condition reads by the name
/// [`guard_alias`] gives the guard's place `n` among the selection's guards;
/// `member` binds a column's values and gives the test of that column
/// against them (`= ANY($1)`, `IN (?, ?)`). The condition never names the
/// selected table, so it reads the same in every statement shape a driver
/// wraps a predicate in (a partition, a key range, a join). `None` when the
/// guard keeps nothing.
///
/// On PostgreSQL and MySQL/MariaDB its form follows the guard's [`Lookup`]:
/// - per record, a subquery the server answers through an index on the
///   referencing columns. On PostgreSQL a correlated `NOT EXISTS`, the
///   record's columns reaching it through a derived table of no `FROM`,
///   where a bare name can only mean the enclosing statement's table, never
///   the referencing one, even with a column of the same name; on MariaDB a
///   list (`NOT ... IN (SELECT ...)`), which it turns into an index lookup
///   itself (`index_subquery`).
/// - joined, a `NOT EXISTS` over the referencing rows as a derived table,
///   its columns renamed apart from the record's. With no index, a lookup
///   per record reads the whole referencing table each time (hours for a
///   million records), and so does a list, past `work_mem` on PostgreSQL
///   and in a `DELETE` or `UPDATE` on MariaDB. PostgreSQL turns the
///   `NOT EXISTS` into an anti-join where it stands in a `WHERE`, hashing
///   those rows once per statement. MariaDB makes a table of them once per
///   statement, with an index of its own to look each record up in; the
///   derived table has a `LIMIT` of no bound, so that the server never
///   merges it back into a subquery scanning the referencing table, and
///   keeps every row, so that each record is compared with each value as
///   the list would compare them (a `DISTINCT` would keep one of the values
///   a case-insensitive column holds equal).
///
/// SQLite builds an index of the list once per statement: always a list.
pub fn guard_condition(
    d: Dialect,
    g: &super::Guard,
    n: usize,
    table: &str,
    member: &mut dyn FnMut(&Identifier, &[String]) -> String,
) -> Option<String> {
    if !g.guards_any() {
        return None;
    }
    let joined = d != Dialect::Sqlite && g.lookup != super::Lookup::PerRecord;
    let correlated = d == Dialect::Postgres && !joined;
    let alias = guard_alias(n);
    let column = |c: &Identifier| format!("{alias}.{}", quote(d, c));
    // A referencing NULL refers to nothing: it never equals the record's
    // value, and left in the list it would make every test against the
    // list unknown.
    let mut rows: Vec<String> = match correlated {
        true => g.columns.iter().enumerate().map(|(i, c)| format!("{} = lethe_rec.k{i}", column(c))).collect(),
        false => g.columns.iter().map(|c| format!("{} IS NOT NULL", column(c))).collect(),
    };
    if let Some(held) = &g.rows {
        let any: Vec<String> = held
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(c, v)| format!("{} {}", column(c), member(c, v)))
            .collect();
        rows.push(format!("({})", any.join(" OR ")));
    }
    let list = |ids: &[Identifier]| ids.iter().map(|c| quote(d, c)).collect::<Vec<_>>().join(", ");
    Some(if correlated {
        let record: Vec<String> =
            g.references.iter().enumerate().map(|(i, c)| format!("{} AS k{i}", quote(d, c))).collect();
        format!(
            "NOT EXISTS (SELECT FROM (SELECT {}) AS lethe_rec, {table} AS {alias} WHERE {})",
            record.join(", "),
            rows.join(" AND ")
        )
    } else if joined {
        // A bare name in the test below means the derived table's column
        // where one is so named, so none is named as a record's.
        let mut prefix = String::from("lethe_k");
        while g.references.iter().any(|r| r.as_str().to_ascii_lowercase().starts_with(&prefix)) {
            prefix.push('k');
        }
        let renamed: Vec<String> =
            g.columns.iter().enumerate().map(|(i, c)| format!("{} AS {prefix}{i}", column(c))).collect();
        let equal: Vec<String> =
            g.references.iter().enumerate().map(|(i, c)| format!("lethe_refs.{prefix}{i} = {}", quote(d, c))).collect();
        let (select, unmerged) = match d {
            Dialect::Postgres => ("SELECT", ""),
            _ => ("SELECT 1", " LIMIT 18446744073709551615"),
        };
        format!(
            "NOT EXISTS ({select} FROM (SELECT {} FROM {table} AS {alias} WHERE {}{unmerged}) AS lethe_refs WHERE {})",
            renamed.join(", "),
            rows.join(" AND "),
            equal.join(" AND ")
        )
    } else {
        format!(
            "NOT COALESCE(({}) IN (SELECT {} FROM {table} AS {alias} WHERE {}), FALSE)",
            list(&g.references),
            g.columns.iter().map(column).collect::<Vec<_>>().join(", "),
            rows.join(" AND ")
        )
    })
}

/// The name [`guard_condition`] reads the referencing table of the
/// selection's `n`th guard by: one of its own for each guard, as a session
/// holding table locks must read each table by a name it locked.
pub fn guard_alias(n: usize) -> String {
    format!("lethe_ref{n}")
}

/// The WHERE condition of a selection (PostgreSQL array form). Conditions:
/// time before cutoff, subject match, not under minimum retention, not held.
pub fn pg_predicate(sel: &Selection, params: &mut Params) -> String {
    let d = Dialect::Postgres;
    let mut parts = Vec::new();
    if let Some((col, t)) = &sel.older_than {
        parts.push(format!("{} < {}", quote(d, col), params.push(Param::Time(*t, params.unix_time))));
    }
    let subject: Vec<String> = sel
        .subject
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(col, values)| format!("{} = ANY({})", quote(d, col), params.push(Param::Values(values.clone()))))
        .collect();
    if !sel.subject.is_empty() {
        // A subject with no usable identifier matches nothing, never everyone.
        parts.push(if subject.is_empty() { "false".into() } else { format!("({})", subject.join(" OR ")) });
    }
    if let Some((col, t)) = &sel.keep_newer_than {
        // NULL compares as unknown, so a record of unknown age is kept.
        parts.push(format!("{} < {}", quote(d, col), params.push(Param::Time(*t, params.unix_time))));
    }
    for (col, values) in sel.held.iter().filter(|(_, v)| !v.is_empty()) {
        parts.push(format!(
            "NOT COALESCE({} = ANY({}), false)",
            quote(d, col),
            params.push(Param::Values(values.clone()))
        ));
    }
    for (n, g) in sel.guards.iter().enumerate() {
        let table = table_name(d, g.table.schema.as_ref(), &g.table.name);
        let mut member = |_: &Identifier, v: &[String]| format!("= ANY({})", params.push(Param::Values(v.to_vec())));
        parts.extend(guard_condition(d, g, n, &table, &mut member));
    }
    if parts.is_empty() { "false".into() } else { parts.join(" AND ") }
}

/// A rule's anonymized value of its column, as SQL (PostgreSQL). `table`
/// is the quoted table name; `column` gives each field's maximum length
/// (if limited) and whether it is text.
pub fn pg_new_value(
    table: &str,
    r: &FieldRule,
    salt: &str,
    column: &dyn Fn(&Identifier) -> (Option<i64>, bool),
    params: &mut Params,
) -> String {
    let c = quote(Dialect::Postgres, &r.field);
    match r.strategy {
        AnonymizeStrategy::Null => "NULL".into(),
        AnonymizeStrategy::Fixed => pg_fixed(table, r, column(&r.field).1, params),
        AnonymizeStrategy::Redact => format!("repeat('*', greatest(length({c}), 1))"),
        AnonymizeStrategy::Hash => {
            // Distinct inputs keep distinct outputs, so UNIQUE columns stay valid.
            let keep = hash_length(column(&r.field).0);
            let p = params.push(Param::Text(salt.to_string()));
            unless_hashed(
                Dialect::Postgres,
                &c,
                &format!(
                    "'anon-' || left(encode(sha256(convert_to(CAST({p} AS text) || {c}::text, 'UTF8')), 'hex'), {keep})"
                ),
            )
        }
    }
}

/// How many hexadecimal digits of a hash fit a column of `max_len`
/// characters after `anon-` (64 when unlimited).
pub fn hash_length(max_len: Option<i64>) -> i64 {
    max_len.map_or(64, |l| (l - 5).clamp(1, 64))
}

/// A column's hashed value, `hashed`, unless the column already holds one
/// (`anon-...`), which then stays: a record anonymized before, whose other
/// fields a new rule now changes, keeps the hash that links it.
/// (On MySQL the column is read in the hash's character set, so the two
/// branches' collations do not clash.)
pub fn unless_hashed(d: Dialect, c: &str, hashed: &str) -> String {
    match d {
        Dialect::Postgres => format!("CASE WHEN {c}::text LIKE 'anon-%' THEN {c} ELSE {hashed} END"),
        Dialect::Mysql => format!("CASE WHEN {c} LIKE 'anon-%' THEN CONVERT({c} USING utf8mb4) ELSE {hashed} END"),
        Dialect::Sqlite => format!("CASE WHEN {c} LIKE 'anon-%' THEN {c} ELSE {hashed} END"),
    }
}

/// A fresh hash-like value, `anon-` and random hexadecimal digits, for a
/// record whose own hash another record already holds in a unique key. It
/// is made from nothing of the record, so it links to nothing.
pub fn fresh_hash(d: Dialect, max_len: Option<i64>) -> String {
    let keep = hash_length(max_len);
    match d {
        Dialect::Postgres => {
            format!("'anon-' || left(encode(sha256(convert_to(gen_random_uuid()::text, 'UTF8')), 'hex'), {keep})")
        }
        Dialect::Mysql => format!("CONCAT('anon-', LEFT(SHA2(UUID(), 256), {keep}))"),
        Dialect::Sqlite => format!("'anon-' || substr(lethe_sha256(hex(randomblob(16))), 1, {keep})"),
    }
}

/// The anonymization of `rules` on a PostgreSQL table, its values pushed
/// onto `params` (the lists of values it holds stay empty). A record is
/// selected for anonymization only while some field is not yet in its
/// anonymized form, so re-running is harmless.
pub fn pg_anonymization(
    table: &str,
    rules: &[FieldRule],
    salt: &str,
    column: &dyn Fn(&Identifier) -> (Option<i64>, bool),
    params: &mut Params,
) -> Anonymization<Param> {
    let sets = rules.iter().map(|r| (r.field.clone(), pg_new_value(table, r, salt, column, params), vec![])).collect();
    let fresh = rules
        .iter()
        .filter(|r| r.strategy == AnonymizeStrategy::Hash)
        .map(|r| (r.field.clone(), fresh_hash(Dialect::Postgres, column(&r.field).0)))
        .collect();
    let done = pg_anonymized(table, rules, column, params);
    Anonymization { sets, done, done_values: vec![], fresh }
}

/// A rule's fixed value as its column's type. Text as it is; any other
/// type (`0` for an integer, a date) read by the server's own input
/// function: the table's row type filled from `{field: value}`, evaluated
/// once. (Filling the other fields with NULL fails in a table with a NOT
/// NULL domain column, so text, the usual case, does not go this way.)
pub fn pg_fixed(table: &str, rule: &FieldRule, is_text: bool, params: &mut Params) -> String {
    let value = params.push(Param::Text(rule.value.clone().unwrap_or_default()));
    if is_text {
        return format!("CAST({value} AS text)");
    }
    let c = quote(Dialect::Postgres, &rule.field);
    let field = params.push(Param::Text(rule.field.as_str().to_string()));
    format!(
        "(SELECT (jsonb_populate_record(NULL::{table}, jsonb_build_object(CAST({field} AS text), CAST({value} AS text)))).{c})"
    )
}

/// The condition "every field of the record is already anonymized".
pub fn pg_anonymized(
    table: &str,
    rules: &[FieldRule],
    column: &dyn Fn(&Identifier) -> (Option<i64>, bool),
    params: &mut Params,
) -> String {
    let d = Dialect::Postgres;
    let done: Vec<String> = rules
        .iter()
        .map(|r| {
            let c = quote(d, &r.field);
            match r.strategy {
                AnonymizeStrategy::Null => format!("{c} IS NULL"),
                AnonymizeStrategy::Fixed if column(&r.field).1 => {
                    format!("{c}::text IS NOT DISTINCT FROM {}", pg_fixed(table, r, true, params))
                }
                AnonymizeStrategy::Fixed => format!("{c} IS NOT DISTINCT FROM {}", pg_fixed(table, r, false, params)),
                AnonymizeStrategy::Redact => format!("({c} IS NULL OR {c} ~ '^[*]+$')"),
                AnonymizeStrategy::Hash => format!("({c} IS NULL OR {c}::text LIKE 'anon-%')"),
            }
        })
        .collect();
    format!("({})", done.join(" AND "))
}

/// An anonymization as SQL with `?` placeholders: each rule's column, its
/// new value and that value's parameters; the condition "already
/// anonymized" and its parameters; and each hashed column's
/// [`fresh_hash`].
pub struct Anonymization<V> {
    pub sets: Vec<(Identifier, String, Vec<V>)>,
    pub done: String,
    pub done_values: Vec<V>,
    pub fresh: Vec<(Identifier, String)>,
}

impl<V: Clone> Anonymization<V> {
    /// The SET list and its parameters.
    pub fn set_list(&self, d: Dialect) -> (String, Vec<V>) {
        let sets: Vec<String> = self.sets.iter().map(|(c, value, _)| format!("{} = {value}", quote(d, c))).collect();
        (sets.join(", "), self.sets.iter().flat_map(|s| s.2.iter().cloned()).collect())
    }

    /// The rule on column `c` (named as the server's catalog does).
    pub fn rule_of(&self, d: Dialect, c: &str) -> Option<&(Identifier, String, Vec<V>)> {
        self.sets.iter().find(|s| same_column(d, c, &s.0))
    }

    /// The queries that find whether the anonymization would give two
    /// records the same values in one of `keys` (from
    /// [`UniqueKey::of_columns`]), each with its parameters and the refusal
    /// to return when it finds a row. `changed` selects the records the
    /// anonymization changes, with `values`.
    pub fn collision_checks(
        &self,
        d: Dialect,
        table: &str,
        keys: Vec<UniqueKey>,
        rules: &[FieldRule],
        changed: &str,
        values: &[V],
    ) -> Vec<(String, Vec<V>, super::ScrubError)> {
        let mut checks = Vec::new();
        // A key of one column is checked with the column's own rule.
        for key in keys.into_iter().filter(|k| k.columns.len() > 1 || k.generated) {
            let risky = key.risky(rules, |c, f| same_column(d, c, f));
            if risky.is_empty() {
                continue;
            }
            let Some(q) = collision_query(d, table, &key, |c| self.rule_of(d, c).map(|s| s.1.clone()), changed) else {
                continue;
            };
            // The changed records are read twice.
            let once = self.key_values(d, &key, values);
            checks.push((q, [once.clone(), once].concat(), key.refusal(&risky)));
        }
        checks
    }

    /// [`generated_collision_query`] for `key`, a key that reads generated
    /// columns, with its parameters: `through` is the key as the columns
    /// it is computed from ([`UniqueKey::through_generated`]), `computed`
    /// each generated column's value as SQL of those columns. `None` when
    /// a name cannot be quoted.
    #[allow(clippy::too_many_arguments)]
    pub fn generated_collision_check(
        &self,
        d: Dialect,
        table: &str,
        key: &UniqueKey,
        through: &UniqueKey,
        computed: impl Fn(&str) -> Option<String>,
        changed: &str,
        values: &[V],
    ) -> Option<(String, Vec<V>)> {
        let q = generated_collision_query(
            d,
            table,
            key,
            &through.columns,
            |c| self.rule_of(d, c).map(|s| s.1.clone()),
            computed,
            changed,
        )?;
        // The changed records are read twice.
        let once = self.key_values(d, through, values);
        Some((q, [once.clone(), once].concat()))
    }

    /// The parameters of the changed records' rows in a key's query: the
    /// new values' in the key's order, then those of the condition.
    fn key_values(&self, d: Dialect, key: &UniqueKey, values: &[V]) -> Vec<V> {
        key.columns
            .iter()
            .filter_map(|c| self.rule_of(d, c))
            .flat_map(|s| s.2.iter().cloned())
            .chain(values.iter().cloned())
            .collect()
    }

    /// The statement, and its parameters, that anonymizes first the records
    /// `changed` selects whose hash would give them the values another
    /// record already holds in a unique key (of `keys`), as when a value is
    /// anonymized, then used again by a new record, which is anonymized in
    /// turn. Such a record takes a [`fresh_hash`] in each hashed column of
    /// the keys it would collide in, and the other rules as usual, so no
    /// batch is refused by the key; every other value keeps the hash that
    /// links it. `None` when no key has a hashed column (keys with a fixed
    /// value, a redaction or a NULL that may collide are
    /// [`Self::collision_checks`]' to refuse).
    pub fn reuse_update(
        &self,
        d: Dialect,
        table: &str,
        keys: &[UniqueKey],
        rules: &[FieldRule],
        changed: &str,
        values: &[V],
    ) -> Option<(String, Vec<V>)> {
        // Each key with a hashed column: the hashed columns, the condition
        // "collides in the key" and its parameters.
        let mut collisions: Vec<(Vec<&Identifier>, String, Vec<V>)> = Vec::new();
        for key in keys {
            if !key.risky(rules, |c, f| same_column(d, c, f)).is_empty() {
                continue;
            }
            let hashed: Vec<&Identifier> = rules
                .iter()
                .filter(|r| r.strategy == AnonymizeStrategy::Hash)
                .filter(|r| key.columns.iter().any(|c| same_column(d, c, &r.field)))
                .map(|r| &r.field)
                .collect();
            if hashed.is_empty() {
                continue;
            }
            let new_value = |c: &str| self.rule_of(d, c).map(|s| s.1.clone());
            if let Some(condition) = reuse_condition(d, table, key, new_value, changed) {
                collisions.push((hashed, condition, self.key_values(d, key, values)));
            }
        }
        if collisions.is_empty() {
            return None;
        }
        // Any of `of`'s conditions, with their parameters.
        let any = |of: Vec<&(Vec<&Identifier>, String, Vec<V>)>| {
            let text: Vec<&str> = of.iter().map(|k| k.1.as_str()).collect();
            (format!("({})", text.join(" OR ")), of.iter().flat_map(|k| k.2.iter().cloned()).collect::<Vec<V>>())
        };
        let mut set_values = Vec::new();
        let mut sets = Vec::new();
        for (c, value, vs) in &self.sets {
            let of_c: Vec<_> = collisions.iter().filter(|k| k.0.contains(&c)).collect();
            let fresh = self.fresh.iter().find(|f| &f.0 == c);
            match fresh {
                Some((_, fresh)) if !of_c.is_empty() => {
                    let (collides, cvs) = any(of_c);
                    // A NULL stays NULL: it collides with nothing.
                    let c = quote(d, c);
                    sets.push(format!("{c} = CASE WHEN {c} IS NOT NULL AND {collides} THEN {fresh} ELSE {value} END"));
                    set_values.extend(cvs);
                }
                _ => sets.push(format!("{} = {value}", quote(d, c))),
            }
            set_values.extend(vs.iter().cloned());
        }
        let (collides, cvs) = any(collisions.iter().collect());
        let statement = format!("UPDATE {table} SET {} WHERE {changed} AND {collides}", sets.join(", "));
        Some((statement, [set_values, values.to_vec(), cvs].concat()))
    }
}

/// Whether a column the catalog names is a rule's field: case ignored on
/// MySQL and SQLite, as they compare names; exact on PostgreSQL, where a
/// quoted name keeps its case.
fn same_column(d: Dialect, c: &str, field: &Identifier) -> bool {
    match d {
        Dialect::Postgres => c == field.as_str(),
        _ => c.eq_ignore_ascii_case(field.as_str()),
    }
}

/// A unique key, as the catalog reports it: plain columns, no condition,
/// no expression. (To find hashes used again, PostgreSQL also gives an
/// index on an expression or with a condition as the columns it reads.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueKey {
    pub name: String,
    pub columns: Vec<String>,
    /// NULLs count as equal (PostgreSQL's `NULLS NOT DISTINCT`).
    pub nulls_equal: bool,
    /// The key reads a generated column, given here as the columns it is
    /// computed from (see [`UniqueKey::through_generated`]); checked even
    /// when that is one column, which need not be unique by itself.
    pub generated: bool,
}

impl UniqueKey {
    /// The keys of plain columns among catalog rows of (index name, column
    /// name in key order; none for an expression), grouped by index.
    pub fn of_columns(rows: Vec<(String, Option<String>)>) -> Vec<UniqueKey> {
        let mut keys: Vec<(UniqueKey, bool)> = Vec::new();
        for (name, column) in rows {
            if keys.last().is_none_or(|k| k.0.name != name) {
                keys.push((UniqueKey { name, columns: vec![], nulls_equal: false, generated: false }, true));
            }
            let key = keys.last_mut().expect("pushed above");
            match column {
                Some(c) => key.0.columns.push(c),
                None => key.1 = false,
            }
        }
        keys.into_iter().filter(|k| k.1).map(|k| k.0).collect()
    }

    /// A unique index on expressions or with a condition (`reads`: every
    /// column it reads, a generated column as the columns it is computed
    /// from), as a key for the fresh-hash step ([`Anonymization::reuse_update`]):
    /// of the columns it reads that `rules` hash, NULLs equal. Two records
    /// whose hashes are equal there may share an entry of the index
    /// whatever else they hold (the condition may hold for both on
    /// different dates; an expression may mix columns), so they are taken
    /// to; where in fact they would not, a record takes a fresh value it
    /// did not need. `None` when the rules hash no column it reads.
    pub fn hashed_reads(d: Dialect, name: String, reads: Vec<String>, rules: &[FieldRule]) -> Option<UniqueKey> {
        let hashed =
            |c: &String| rules.iter().any(|r| r.strategy == AnonymizeStrategy::Hash && same_column(d, c, &r.field));
        let columns: Vec<String> = reads.into_iter().filter(hashed).collect();
        (!columns.is_empty()).then_some(UniqueKey { name, columns, nulls_equal: true, generated: false })
    }

    /// The key with each generated column among its columns replaced by
    /// the columns it is computed from (`generated`: a generated column's
    /// name and theirs): records holding the same values in those hold
    /// the same value in it. (Values only its expression makes equal are
    /// not seen.)
    pub fn through_generated(self, generated: &[(String, Vec<String>)]) -> UniqueKey {
        let (columns, through) = through_generated(self.columns, generated, |a, b| a.eq_ignore_ascii_case(b));
        UniqueKey { columns, generated: self.generated || through, ..self }
    }

    /// The rules on the key's columns that may give two records the same
    /// values in it: a fixed value or a redaction (one value for many
    /// records), NULL where NULLs count as equal or where the key reads a
    /// generated column (whose expression may make something of a NULL:
    /// `COALESCE(nick, email)`). A hash keeps distinct values distinct, and
    /// a NULL otherwise equals nothing. `same` says
    /// whether a column name is a rule's field (the server's case rules).
    pub fn risky<'a>(&self, rules: &'a [FieldRule], same: impl Fn(&str, &Identifier) -> bool) -> Vec<&'a FieldRule> {
        rules
            .iter()
            .filter(|r| self.columns.iter().any(|c| same(c, &r.field)))
            .filter(|r| match r.strategy {
                AnonymizeStrategy::Fixed | AnonymizeStrategy::Redact => true,
                AnonymizeStrategy::Null => self.nulls_equal || self.generated,
                AnonymizeStrategy::Hash => false,
            })
            .collect()
    }

    /// The table's unique `keys` (as the catalog has them) as the columns
    /// they are computed from (see [`Self::through_generated`]), split:
    /// those to check by those columns
    /// ([`Anonymization::collision_checks`]), and those on generated
    /// columns that `rules` may break, to check as the server computes
    /// them ([`Anonymization::generated_collision_check`]), each with the
    /// key as the catalog has it and the rules that may break it.
    #[allow(clippy::type_complexity)]
    pub fn split_generated<'r>(
        d: Dialect,
        keys: Vec<UniqueKey>,
        generated: &[(String, Vec<String>)],
        rules: &'r [FieldRule],
    ) -> (Vec<UniqueKey>, Vec<(UniqueKey, UniqueKey, Vec<&'r FieldRule>)>) {
        let (mut by_columns, mut computed) = (Vec::new(), Vec::new());
        for key in keys {
            let through = key.clone().through_generated(generated);
            let risky = through.risky(rules, |c, f| same_column(d, c, f));
            if through.generated && !risky.is_empty() {
                computed.push((key, through, risky));
            } else {
                by_columns.push(through);
            }
        }
        (by_columns, computed)
    }

    /// Where this key (as the columns it is computed from, see
    /// [`Self::through_generated`]) stands after the check of key `name`
    /// on generated columns as the server computes them: `found` says
    /// whether it found two records sharing an entry, `None` where it
    /// could not run (logged). A collision is refused (`risky`: the rules
    /// that may cause one); otherwise the key joins `keys`, and
    /// `by_columns` too where the check could not run, to be judged by the
    /// columns it is computed from instead.
    pub fn settle_generated(
        self,
        name: &str,
        found: Option<bool>,
        risky: &[&FieldRule],
        keys: &mut Vec<UniqueKey>,
        by_columns: &mut Vec<UniqueKey>,
    ) -> Result<(), super::ScrubError> {
        match found {
            Some(true) => return Err(self.refusal(risky)),
            Some(false) => {}
            None => {
                tracing::warn!(key = %name, "generated key checked by the columns it is computed from");
                by_columns.push(self.clone());
            }
        }
        keys.push(self);
        Ok(())
    }

    /// The refusal when [`collision_query`] finds a collision.
    pub fn refusal(&self, risky: &[&FieldRule]) -> super::ScrubError {
        let fields: Vec<&str> = risky.iter().map(|r| r.field.as_str()).collect();
        let through = if self.generated { ", through a generated column" } else { "" };
        super::ScrubError::Config(format!(
            "anonymizing {} would give two records the same values in unique key {} ({}{through}); use hash for {} \
             (distinct values stay distinct)",
            fields.join(", "),
            self.name,
            self.columns.join(", "),
            fields.join(", ")
        ))
    }
}

/// `columns` with each generated column among them replaced by the
/// columns it is computed from (`generated`: a generated column's name and
/// the columns its expression reads, which may be generated in turn, as
/// MySQL/MariaDB and SQLite allow), each column once, none generated;
/// `same` says whether two names are one column (the server's case rules).
/// With whether any was replaced.
pub fn through_generated(
    columns: Vec<String>,
    generated: &[(String, Vec<String>)],
    same: impl Fn(&str, &str) -> bool,
) -> (Vec<String>, bool) {
    let mut out: Vec<String> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    let mut through = false;
    let mut todo: Vec<String> = columns.into_iter().rev().collect();
    while let Some(c) = todo.pop() {
        match generated.iter().find(|g| same(&g.0, &c)) {
            // A server refuses a cycle; were there one, it ends here.
            Some(g) if seen.contains(&g.0.as_str()) => through = true,
            Some(g) => {
                through = true;
                seen.push(&g.0);
                todo.extend(g.1.iter().rev().cloned());
            }
            None if !out.iter().any(|o| same(o, &c)) => out.push(c),
            None => {}
        }
    }
    (out, through)
}

/// A query that returns a row when changing the records `changed` selects
/// would give two records the same values in `key`: two changed records,
/// or a changed record and any other (as it is now: batches change records
/// one after another, and each must fit beside the rest). `new_value` is a
/// column's anonymized value as SQL, `None` for a column no rule changes.
/// A record is told apart from the others by its current values in the
/// key, which no other record shares. `None` when a column's name cannot
/// be quoted.
pub fn collision_query(
    d: Dialect,
    table: &str,
    key: &UniqueKey,
    new_value: impl Fn(&str) -> Option<String>,
    changed: &str,
) -> Option<String> {
    Some(KeyRows::new(d, table, key, new_value, changed)?.collision_query())
}

/// [`collision_query`] for a key that reads generated columns
/// (MySQL/MariaDB, SQLite), as the server would compute them: each changed
/// record's new values in `reads` (every column the key is computed from,
/// none generated), then each of the key's columns on those values:
/// `computed` gives a key column's value as SQL of columns in `reads` (a
/// generated column's expression, as the server keeps it), else a column
/// is its new value. So a key that leaves out the records a rule changes
/// (`IF(deleted_at IS NULL, email, NULL)`) takes no refusal for values
/// they come to share, and values only the expression makes equal
/// (`lower`) are found. `None` when a name cannot be quoted.
pub fn generated_collision_query(
    d: Dialect,
    table: &str,
    key: &UniqueKey,
    reads: &[String],
    new_value: impl Fn(&str) -> Option<String>,
    computed: impl Fn(&str) -> Option<String>,
    changed: &str,
) -> Option<String> {
    let quoted = quote_names(d, reads.iter().map(String::as_str)).ok()?;
    let cols = quote_names(d, key.columns.iter().map(String::as_str)).ok()?;
    let current: Vec<String> = cols.iter().enumerate().map(|(i, c)| format!("{c} AS lethe_o{i}")).collect();
    let values: Vec<String> = cols
        .iter()
        .zip(&key.columns)
        .enumerate()
        .map(|(i, (c, name))| format!("{} AS lethe_k{i}, lethe_o{i}", computed(name).unwrap_or(c.clone())))
        .collect();
    let changed_rows = format!(
        "(SELECT {} FROM (SELECT {}, {} FROM {table} WHERE {changed}) AS lethe_b) AS lethe_n",
        values.join(", "),
        new_row(&quoted, reads, new_value).join(", "),
        current.join(", "),
    );
    Some(KeyRows { d, table, key, cols, changed_rows }.collision_query())
}

/// A generated column's expression (as the server's catalog prints it)
/// with each generated column it reads replaced by that column's own
/// expression, in brackets, until it reads none: `generated` holds each
/// generated column's name and expression; `same` says whether two names
/// are one column. On MySQL/MariaDB only quoted names are column names
/// (they quote every column they print in an expression; a bare word is a
/// function or a keyword); on SQLite, whose text is as written, a bare
/// word is too, unless a bracket follows (a function). `None` on a cycle,
/// which no server allows.
pub fn inline_generated(
    d: Dialect,
    expr: &str,
    generated: &[(String, String)],
    same: &dyn Fn(&str, &str) -> bool,
) -> Option<String> {
    fn inline(
        d: Dialect,
        expr: &str,
        generated: &[(String, String)],
        same: &dyn Fn(&str, &str) -> bool,
        depth: usize,
    ) -> Option<String> {
        if depth > generated.len() {
            return None;
        }
        let chars: Vec<char> = expr.chars().collect();
        let (mut out, mut at) = (String::new(), 0);
        let toks = spans(d, expr);
        for (n, (t, r)) in toks.iter().enumerate() {
            let name = match t {
                Token::Quoted(name) => name,
                Token::Word(name) if d != Dialect::Mysql && toks.get(n + 1).is_none_or(|t| t.0 != Token::Open) => name,
                _ => continue,
            };
            let Some(g) = generated.iter().find(|g| same(&g.0, name)) else { continue };
            out.extend(&chars[at..r.start]);
            out.push('(');
            out.push_str(&inline(d, &g.1, generated, same, depth + 1)?);
            out.push(')');
            at = r.end;
        }
        out.extend(&chars[at..]);
        Some(out)
    }
    inline(d, expr, generated, same, 0)
}

/// A token of SQL text the server keeps for its own schema (a generated
/// column's expression, a table's `CREATE TABLE`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A bare word (a name, a keyword, a function).
    Word(String),
    /// A quoted name, unquoted.
    Quoted(String),
    Open,
    Close,
    Comma,
    Other,
}

/// Splits SQL text into [`Token`]s; string literals and comments are left
/// out (as `Other`).
fn tokens(d: Dialect, text: &str) -> Vec<Token> {
    spans(d, text).into_iter().map(|t| t.0).collect()
}

/// [`tokens`], each with where it is in `text` (a range of characters).
fn spans(d: Dialect, text: &str) -> Vec<(Token, std::ops::Range<usize>)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut at = Vec::new();
    let mut i = 0;
    // Text up to `close`, a doubled `close` standing for one; a backslash
    // escapes the next character where `backslash`.
    let quoted = |i: &mut usize, close: char, backslash: bool| {
        let mut inner = String::new();
        *i += 1;
        while *i < chars.len() {
            let c = chars[*i];
            if backslash && c == '\\' && *i + 1 < chars.len() {
                inner.push(chars[*i + 1]);
                *i += 2;
                continue;
            }
            if c == close {
                if chars.get(*i + 1) == Some(&close) {
                    inner.push(close);
                    *i += 2;
                    continue;
                }
                *i += 1;
                break;
            }
            inner.push(c);
            *i += 1;
        }
        inner
    };
    while i < chars.len() {
        let c = chars[i];
        let (start, before) = (i, out.len());
        match c {
            _ if c.is_whitespace() => i += 1,
            '-' if chars.get(i + 1) == Some(&'-') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                    i += 1;
                }
                i += 2;
            }
            '\'' => {
                quoted(&mut i, '\'', d == Dialect::Mysql);
                out.push(Token::Other);
            }
            // MySQL reads "..." as a string, unless in ANSI_QUOTES mode.
            '"' if d == Dialect::Mysql => {
                quoted(&mut i, '"', true);
                out.push(Token::Other);
            }
            '"' | '`' => out.push(Token::Quoted(quoted(&mut i, c, false))),
            '[' if d == Dialect::Sqlite => {
                let end = chars[i..].iter().position(|&c| c == ']').map_or(chars.len(), |p| i + p);
                out.push(Token::Quoted(chars[i + 1..end].iter().collect()));
                i = end + 1;
            }
            '(' | ')' | ',' => {
                out.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    _ => Token::Comma,
                });
                i += 1;
            }
            _ if c.is_alphanumeric() || c == '_' || c == '$' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$') {
                    i += 1;
                }
                // A number is no name.
                out.push(if c.is_ascii_digit() { Token::Other } else { Token::Word(chars[start..i].iter().collect()) });
            }
            _ => {
                out.push(Token::Other);
                i += 1;
            }
        }
        if out.len() > before {
            at.push(start..i.min(chars.len()));
        }
    }
    out.into_iter().zip(at).collect()
}

/// The names an expression of the server's own text mentions, bare or
/// quoted, outside string literals: every column it reads, among
/// functions and keywords (a caller keeps the table's columns).
pub fn names_in(d: Dialect, expr: &str) -> Vec<String> {
    names(&tokens(d, expr))
}

/// The names among `toks`, bare or quoted.
fn names(toks: &[Token]) -> Vec<String> {
    toks.iter()
        .filter_map(|t| match t {
            Token::Word(w) | Token::Quoted(w) => Some(w.clone()),
            _ => None,
        })
        .collect()
}

/// Each generated column's expression, as written, and the names it
/// mentions (see [`names_in`]), from a SQLite table's `CREATE TABLE`
/// text, for the columns named in `generated`.
pub fn sqlite_generated_columns(create: &str, generated: &[String]) -> Vec<(String, String, Vec<String>)> {
    let chars: Vec<char> = create.chars().collect();
    let toks = spans(Dialect::Sqlite, create);
    let Some(start) = toks.iter().position(|t| t.0 == Token::Open) else { return Vec::new() };
    // The column definitions: the table's list, split at its own commas.
    let (defs, _) = bracketed_list(&toks, start);
    let mut out = Vec::new();
    for def in defs {
        let Some((Token::Word(name) | Token::Quoted(name), _)) = def.first() else { continue };
        let Some(name) = generated.iter().find(|g| g.eq_ignore_ascii_case(name)) else { continue };
        // `AS (` opens the expression (after `GENERATED ALWAYS`, or alone).
        let Some(at) = def
            .windows(2)
            .position(|w| matches!(&w[0].0, Token::Word(a) if a.eq_ignore_ascii_case("as")) && w[1].0 == Token::Open)
        else {
            continue;
        };
        let (mut names, mut depth, mut end) = (Vec::new(), 0, None);
        for t in &def[at + 1..] {
            match &t.0 {
                Token::Open => depth += 1,
                Token::Close => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(t.1.start);
                        break;
                    }
                }
                Token::Word(w) | Token::Quoted(w) => names.push(w.clone()),
                _ => {}
            }
        }
        let Some(end) = end else { continue };
        let expr: String = chars[def[at + 1].1.end..end].iter().collect();
        out.push((name.clone(), expr.trim().to_string(), names));
    }
    out
}

/// A token and where it is in its text (see [`spans`]).
type Spanned = (Token, std::ops::Range<usize>);

/// The items of the bracketed list `toks[open]` opens, split at its own
/// commas (not those of brackets within), and where its closing bracket
/// is (`None` when the text ends first).
fn bracketed_list(toks: &[Spanned], open: usize) -> (Vec<Vec<&Spanned>>, Option<usize>) {
    let (mut items, mut item, mut depth) = (Vec::new(), Vec::new(), 0);
    for (n, t) in toks.iter().enumerate().skip(open + 1) {
        match t.0 {
            Token::Open => depth += 1,
            Token::Close if depth == 0 => {
                items.push(item);
                return (items, Some(n));
            }
            Token::Close => depth -= 1,
            Token::Comma if depth == 0 => {
                items.push(std::mem::take(&mut item));
                continue;
            }
            _ => {}
        }
        item.push(t);
    }
    items.push(item);
    (items, None)
}

/// The names a SQLite `CREATE INDEX` text mentions from its column list
/// on, its condition included (see [`names_in`]): every column the index
/// reads, among functions, keywords and collations (a caller keeps the
/// table's columns).
pub fn sqlite_index_names(create: &str) -> Vec<String> {
    let toks = tokens(Dialect::Sqlite, create);
    let start = toks.iter().position(|t| *t == Token::Open).unwrap_or(toks.len());
    names(&toks[start..])
}

/// The keys (each as written, less `ASC`/`DESC`) and the condition of a
/// SQLite `CREATE INDEX` text; `None` where it does not read as one.
pub fn sqlite_index_parts(create: &str) -> Option<(Vec<String>, Option<String>)> {
    let chars: Vec<char> = create.chars().collect();
    let text = |r: std::ops::Range<usize>| chars[r].iter().collect::<String>().trim().to_string();
    let toks = spans(Dialect::Sqlite, create);
    let open = toks.iter().position(|t| t.0 == Token::Open)?;
    let (keys, close) = bracketed_list(&toks, open);
    let close = close?;
    let keys = keys
        .into_iter()
        .map(|mut k| {
            if let Some((Token::Word(w), _)) = k.last()
                && (w.eq_ignore_ascii_case("asc") || w.eq_ignore_ascii_case("desc"))
            {
                k.pop();
            }
            Some(text(k.first()?.1.start..k.last()?.1.end))
        })
        .collect::<Option<Vec<String>>>()?;
    let condition = match toks.get(close + 1) {
        None => None,
        Some((Token::Word(w), r)) if w.eq_ignore_ascii_case("where") && toks.len() > close + 2 => {
            Some(text(r.end..chars.len()))
        }
        Some(_) => return None,
    };
    Some((keys, condition))
}

/// A unique index the plain-column checks cannot judge: one on
/// expressions (`lower(email)`), with a condition (`WHERE gone_at IS
/// NULL`), or (PostgreSQL) on a generated column. Its keys, condition and
/// generation expressions are the server's own text for its catalog
/// (PostgreSQL prints them: `pg_get_indexdef`, `pg_get_expr`; SQLite keeps
/// the `CREATE INDEX` text), never anything a manifest says; both servers
/// allow only deterministic expressions there, so evaluating them changes
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprIndex {
    pub name: String,
    /// Each key column or expression, in key order.
    pub keys: Vec<String>,
    /// The condition, if the index has one.
    pub condition: Option<String>,
    /// Every column the keys and the condition read, a generated column
    /// as the columns it is computed from.
    pub reads: Vec<String>,
    /// The generated columns the keys and the condition read, each with
    /// its expression (of columns in `reads`).
    pub computed: Vec<(String, String)>,
    /// NULLs count as equal (`NULLS NOT DISTINCT`).
    pub nulls_equal: bool,
}

impl ExprIndex {
    /// `f` of each key (its place and text), joined by `sep`.
    fn each_key(&self, f: &dyn Fn(usize, &String) -> String, sep: &str) -> String {
        self.keys.iter().enumerate().map(|(i, k)| f(i, k)).collect::<Vec<_>>().join(sep)
    }

    /// The rules that may put two records on one entry of the index: all
    /// but hashes (which keep distinct values distinct) on a column it
    /// reads, including those its condition reads, which may bring
    /// records into the index.
    pub fn risky<'a>(&self, d: Dialect, rules: &'a [FieldRule]) -> Vec<&'a FieldRule> {
        rules
            .iter()
            .filter(|r| r.strategy != AnonymizeStrategy::Hash && self.reads.iter().any(|c| same_column(d, c, &r.field)))
            .collect()
    }

    /// The refusal when [`pg_index_collision_query`] or
    /// [`sqlite_index_collision_query`] finds a collision:
    /// the index and the columns it reads, not its text (a condition may
    /// name values).
    pub fn refusal(&self, risky: &[&FieldRule]) -> super::ScrubError {
        let fields: Vec<&str> = risky.iter().map(|r| r.field.as_str()).collect();
        let generated: Vec<&str> = self.computed.iter().map(|c| c.0.as_str()).collect();
        let through = match generated.len() {
            0 => String::new(),
            1 => format!(", through the generated column {}", generated[0]),
            _ => format!(", through the generated columns {}", generated.join(", ")),
        };
        let scope = if self.condition.is_some() { ", where its condition holds" } else { "" };
        super::ScrubError::Config(format!(
            "anonymizing {} would give two records the same values in unique key {} (reading {}{through}{scope}); \
             use hash for {} (distinct values stay distinct)",
            fields.join(", "),
            self.name,
            self.reads.join(", "),
            fields.join(", ")
        ))
    }
}

/// A query that returns a row when changing the records `changed` selects
/// would put two records on one entry of `index`, as the index itself
/// sees them: its keys and condition evaluated on each changed record's
/// new values (and the generated columns computed from them), beside
/// every other record as it is now (batches change
/// records one after another, and each must fit beside the rest). Records
/// are told apart by where they are stored (`tableoid`, `ctid`). `None`
/// when a column's name cannot be quoted.
pub fn pg_index_collision_query(
    table: &str,
    index: &ExprIndex,
    new_value: impl Fn(&str) -> Option<String>,
    changed: &str,
) -> Option<String> {
    let reads = quote_names(Dialect::Postgres, index.reads.iter().map(String::as_str)).ok()?;
    if reads.is_empty() || index.keys.is_empty() {
        return None;
    }
    let new_row = new_row(&reads, &index.reads, new_value);
    let computed = quote_names(Dialect::Postgres, index.computed.iter().map(|c| c.0.as_str())).ok()?;
    let with_computed: Vec<String> = reads
        .iter()
        .cloned()
        .chain(computed.iter().zip(&index.computed).map(|(q, (_, expr))| format!("({expr}) AS {q}")))
        .collect();
    let each = |f: &dyn Fn(usize, &String) -> String, sep: &str| index.each_key(f, sep);
    let keys = each(&|i, k| format!("({k}) AS lethe_k{i}"), ", ");
    let condition = index.condition.as_deref().map_or("true".to_string(), |c| format!("({c})"));
    let (filled, equal) = if index.nulls_equal {
        (String::new(), "IS NOT DISTINCT FROM")
    } else {
        (format!(" WHERE {}", each(&|i, _| format!("lethe_k{i} IS NOT NULL"), " AND ")), "=")
    };
    Some(format!(
        "WITH lethe_n AS (SELECT {keys}, lethe_t, lethe_c FROM (SELECT {}, lethe_t, lethe_c FROM \
         (SELECT {}, tableoid AS lethe_t, ctid AS lethe_c FROM {table} WHERE {changed}) AS lethe_b) AS lethe_p \
         WHERE {condition}), \
         lethe_u AS (SELECT {keys}, tableoid AS lethe_t, ctid AS lethe_c FROM {table} WHERE {condition}) \
         SELECT 1 FROM lethe_n{filled} GROUP BY {} HAVING count(*) > 1 \
         UNION ALL SELECT 1 FROM lethe_n JOIN lethe_u ON {} \
         WHERE (lethe_u.lethe_t, lethe_u.lethe_c) <> (lethe_n.lethe_t, lethe_n.lethe_c) LIMIT 1",
        with_computed.join(", "),
        new_row.join(", "),
        each(&|i, _| format!("lethe_k{i}"), ", "),
        each(&|i, _| format!("lethe_u.lethe_k{i} {equal} lethe_n.lethe_k{i}"), " AND "),
    ))
}

/// A record's columns (`names`, `quoted`) with its new values: each
/// column's `new_value`, or itself where no rule changes it.
fn new_row(quoted: &[String], names: &[String], new_value: impl Fn(&str) -> Option<String>) -> Vec<String> {
    quoted.iter().zip(names).map(|(q, name)| format!("{} AS {q}", new_value(name).unwrap_or(q.clone()))).collect()
}

/// [`pg_index_collision_query`] on SQLite: `columns` are every column of
/// the table (an index's text names them as they are); records are told
/// apart by `row` (an expression naming one record of the table: its
/// rowid, or its primary key's values quoted); each key is compared under
/// the collation the index gives it (`collations`, from the server's
/// `pragma_index_xinfo`); NULLs are distinct. `None` when a name cannot be
/// quoted.
pub fn sqlite_index_collision_query(
    table: &str,
    index: &ExprIndex,
    columns: &[String],
    collations: &[String],
    row: &str,
    new_value: impl Fn(&str) -> Option<String>,
    changed: &str,
) -> Option<String> {
    let d = Dialect::Sqlite;
    let quoted = quote_names(d, columns.iter().map(String::as_str)).ok()?;
    let collations = quote_names(d, collations.iter().map(String::as_str)).ok()?;
    if index.keys.is_empty() || collations.len() != index.keys.len() {
        return None;
    }
    let new_row = new_row(&quoted, columns, new_value);
    let each = |f: &dyn Fn(usize, &String) -> String, sep: &str| index.each_key(f, sep);
    let keys = each(&|i, k| format!("({k}) AS lethe_k{i}"), ", ");
    let condition = index.condition.as_deref().map_or("1".to_string(), |c| format!("({c})"));
    Some(format!(
        "WITH lethe_n AS (SELECT {keys}, lethe_r FROM \
         (SELECT {}, {row} AS lethe_r FROM {table} WHERE {changed}) AS lethe_b WHERE {condition}), \
         lethe_u AS (SELECT {keys}, {row} AS lethe_r FROM {table} WHERE {condition}) \
         SELECT 1 FROM (SELECT 1 FROM lethe_n WHERE {} GROUP BY {} HAVING count(*) > 1) \
         UNION ALL SELECT 1 FROM lethe_n JOIN lethe_u ON {} WHERE lethe_u.lethe_r IS NOT lethe_n.lethe_r LIMIT 1",
        new_row.join(", "),
        each(&|i, _| format!("lethe_k{i} IS NOT NULL"), " AND "),
        each(&|i, _| format!("lethe_k{i} COLLATE {}", collations[i]), ", "),
        each(&|i, _| format!("lethe_u.lethe_k{i} = lethe_n.lethe_k{i} COLLATE {}", collations[i]), " AND "),
    ))
}

/// A condition selecting the records `changed` selects whose new values in
/// `key` another record holds now (as [`collision_query`]'s second half
/// finds them), by their current values in the key (NULLs equal). Those
/// records are gathered first (a derived table made `DISTINCT`), so MySQL
/// may read the table it updates.
fn reuse_condition(
    d: Dialect,
    table: &str,
    key: &UniqueKey,
    new_value: impl Fn(&str) -> Option<String>,
    changed: &str,
) -> Option<String> {
    let k = KeyRows::new(d, table, key, new_value, changed)?;
    Some(format!(
        "EXISTS (SELECT 1 FROM (SELECT DISTINCT {} FROM {}) AS lethe_hit WHERE {})",
        k.each(&|i, _| format!("lethe_n.lethe_o{i} AS lethe_o{i}"), ", "),
        k.beside_others(),
        k.each(&|i, c| format!("lethe_hit.lethe_o{i} {} {table}.{c}", k.same()), " AND "),
    ))
}

/// The records a change selects, with their new (`lethe_k<i>`) and current
/// (`lethe_o<i>`) values in a key's columns, as the derived table
/// `lethe_n`.
struct KeyRows<'a> {
    d: Dialect,
    table: &'a str,
    key: &'a UniqueKey,
    cols: Vec<String>,
    changed_rows: String,
}

impl<'a> KeyRows<'a> {
    fn new(
        d: Dialect,
        table: &'a str,
        key: &'a UniqueKey,
        new_value: impl Fn(&str) -> Option<String>,
        changed: &str,
    ) -> Option<Self> {
        let cols = quote_names(d, key.columns.iter().map(String::as_str)).ok()?;
        let values: Vec<String> = cols
            .iter()
            .zip(&key.columns)
            .enumerate()
            .map(|(i, (c, name))| format!("{} AS lethe_k{i}, {c} AS lethe_o{i}", new_value(name).unwrap_or(c.clone())))
            .collect();
        let changed_rows = format!("(SELECT {} FROM {table} WHERE {changed}) AS lethe_n", values.join(", "));
        Some(KeyRows { d, table, key, cols, changed_rows })
    }

    /// The query of [`collision_query`]: a row when two changed records
    /// share new values in the key, or a changed record's new values are
    /// another record's.
    fn collision_query(&self) -> String {
        let filled = if self.key.nulls_equal {
            String::new()
        } else {
            format!(" WHERE {}", self.each(&|i, _| format!("lethe_k{i} IS NOT NULL"), " AND "))
        };
        format!(
            "SELECT 1 FROM {}{filled} GROUP BY {} HAVING count(*) > 1 UNION ALL SELECT 1 FROM {} LIMIT 1",
            self.changed_rows,
            self.each(&|i, _| format!("lethe_k{i}"), ", "),
            self.beside_others(),
        )
    }

    /// The dialect's equality that takes NULLs as equal.
    fn same(&self) -> &'static str {
        match self.d {
            Dialect::Postgres => "IS NOT DISTINCT FROM",
            Dialect::Mysql => "<=>",
            Dialect::Sqlite => "IS",
        }
    }

    fn each(&self, f: &dyn Fn(usize, &String) -> String, sep: &str) -> String {
        self.cols.iter().enumerate().map(|(i, c)| f(i, c)).collect::<Vec<_>>().join(sep)
    }

    /// The changed records joined with every other record (`lethe_u`) that
    /// holds their new values; a record is told from the others by its
    /// current values.
    fn beside_others(&self) -> String {
        let same = self.same();
        let equal = if self.key.nulls_equal { same } else { "=" };
        format!(
            "{} JOIN {} AS lethe_u ON {} WHERE NOT ({})",
            self.changed_rows,
            self.table,
            self.each(&|i, c| format!("lethe_u.{c} {equal} lethe_n.lethe_k{i}"), " AND "),
            self.each(&|i, c| format!("lethe_u.{c} {same} lethe_n.lethe_o{i}"), " AND "),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrub::Table;
    use chrono::Utc;

    fn id(s: &str) -> Identifier {
        Identifier::new(s).unwrap()
    }

    #[test]
    fn quoting_handles_reserved_words_and_case() {
        assert_eq!(quote(Dialect::Postgres, &id("Order")), "\"Order\"");
        assert_eq!(quote(Dialect::Mysql, &id("select")), "`select`");
        assert_eq!(table_name(Dialect::Postgres, Some(&id("public")), &id("user")), "\"public\".\"user\"");
    }

    #[test]
    fn names_in_an_expression_leave_string_literals_out() {
        // As MariaDB prints a generated column's expression.
        let expr = "concat(lcase(`email`),`Odd Name`,'lit`x', \"it's\", 'a''b `c`')";
        assert_eq!(names_in(Dialect::Mysql, expr), ["concat", "lcase", "email", "Odd Name"]);
        assert_eq!(names_in(Dialect::Mysql, r"concat(`a``b`, 'x\'`y`')"), ["concat", "a`b"]);
    }

    #[test]
    fn sqlite_generated_columns_and_their_expressions_are_read_from_the_table_text() {
        let create = r#"CREATE TABLE "m" (
            id INTEGER PRIMARY KEY, -- a comment, with AS (x)
            email TEXT DEFAULT 'AS (nick)',
            "Full Name" TEXT CHECK (length("Full Name") > 0, 1),
            [key] TEXT GENERATED ALWAYS AS (lower(email) || [Full Name] /* , nick */) STORED UNIQUE,
            short TEXT AS (substr("Full Name", 1, 3)),
            CONSTRAINT c UNIQUE (email, id)
        )"#;
        let wanted = ["KEY".to_string(), "short".to_string(), "email".to_string()];
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            sqlite_generated_columns(create, &wanted),
            [
                (
                    "KEY".to_string(),
                    "lower(email) || [Full Name] /* , nick */".to_string(),
                    strings(&["lower", "email", "Full Name"])
                ),
                ("short".to_string(), r#"substr("Full Name", 1, 3)"#.to_string(), strings(&["substr", "Full Name"])),
            ]
        );
    }

    #[test]
    fn sqlite_index_names_are_those_of_its_columns_and_condition() {
        let create = r#"CREATE UNIQUE INDEX "on (x" ON [members] (lower("e-mail") COLLATE nocase, tenant DESC)
                        WHERE gone_at IS NULL AND note <> 'tenant, x'"#;
        assert_eq!(
            sqlite_index_names(create),
            ["lower", "e-mail", "COLLATE", "nocase", "tenant", "DESC", "WHERE", "gone_at", "IS", "NULL", "AND", "note"]
        );
    }

    #[test]
    fn sqlite_index_parts_are_its_keys_and_condition_as_written() {
        let create = r#"CREATE UNIQUE INDEX "on (x" ON [members] (lower("e-mail") COLLATE nocase, tenant DESC,
                        substr(note, 1, 2)) WHERE gone_at IS NULL AND note <> 'tenant, x)'"#;
        let parts = sqlite_index_parts(create).unwrap();
        assert_eq!(parts.0, [r#"lower("e-mail") COLLATE nocase"#, "tenant", "substr(note, 1, 2)"]);
        assert_eq!(parts.1.as_deref(), Some("gone_at IS NULL AND note <> 'tenant, x)'"));
        assert_eq!(sqlite_index_parts("CREATE UNIQUE INDEX u ON t(a)"), Some((vec!["a".to_string()], None)));
        assert_eq!(sqlite_index_parts("CREATE UNIQUE INDEX u ON t(a) WHERE"), None);
        assert_eq!(sqlite_index_parts("CREATE UNIQUE INDEX u ON t(a, )"), None);
        assert_eq!(sqlite_index_parts("CREATE UNIQUE INDEX u ON t(a"), None);
    }

    #[test]
    fn a_key_through_a_generated_column_names_the_columns_it_is_computed_from() {
        let key = UniqueKey {
            name: "k".into(),
            columns: vec!["tenant".into(), "Email_Key".into()],
            nulls_equal: false,
            generated: false,
        };
        let generated = [("email_key".to_string(), vec!["email".to_string(), "tenant".to_string()])];
        let through = key.clone().through_generated(&generated);
        assert_eq!(
            (through.columns.clone(), through.generated),
            (vec!["tenant".to_string(), "email".to_string()], true)
        );
        assert_eq!(key.clone().through_generated(&[]), key);
        // Through a generated column computed from another, to the column
        // both are computed from; and a cycle (which no server allows) ends.
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let chain = [
            ("email_key".to_string(), strings(&["email_low", "tenant"])),
            ("email_low".to_string(), strings(&["email"])),
            ("a".to_string(), strings(&["b"])),
            ("b".to_string(), strings(&["a", "c"])),
        ];
        let through = key.through_generated(&chain);
        assert_eq!((through.columns, through.generated), (strings(&["tenant", "email"]), true));
        assert_eq!(through_generated(strings(&["a", "id"]), &chain, |x, y| x == y), (strings(&["c", "id"]), true));
    }

    #[test]
    fn a_generated_expression_is_written_out_down_to_the_columns_it_is_computed_from() {
        let strings = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
        // As MariaDB prints them: every column quoted. A function named
        // like a column (`email_low`), a string and a quoted name of
        // another column stay as they are.
        let generated = strings(&[
            ("Email_Key", "trim(`EMAIL_LOW`)"),
            ("email_low", "lcase(`email`)"),
            ("a", "concat(`b`,'x')"),
            ("b", "`a`"),
        ]);
        let same = |x: &str, y: &str| x.eq_ignore_ascii_case(y);
        let inline = |expr: &str| inline_generated(Dialect::Mysql, expr, &generated, &same);
        assert_eq!(inline("trim(`EMAIL_LOW`)").as_deref(), Some("trim((lcase(`email`)))"));
        assert_eq!(
            inline("concat(`email_key`, email_low(1), '`email_low`', `tenant`)").as_deref(),
            Some("concat((trim((lcase(`email`)))), email_low(1), '`email_low`', `tenant`)")
        );
        assert_eq!(inline("`email`").as_deref(), Some("`email`"));
        // A cycle, which no server allows, ends without an expression.
        assert_eq!(inline("`a`"), None);
    }

    #[test]
    fn predicate_binds_every_value() {
        let sel = Selection {
            table: Table { schema: None, name: id("t") },
            older_than: Some((id("created_at"), Utc::now())),
            subject: vec![(id("email"), vec!["x'); drop table t; --".into()])],
            keep_newer_than: Some((id("issued_at"), Utc::now())),
            held: vec![(id("user_id"), vec!["7".into()])],
            guards: vec![],
        };
        let mut p = Params::new(Dialect::Postgres);
        let sql = pg_predicate(&sel, &mut p);
        assert_eq!(
            sql,
            "\"created_at\" < $1 AND (\"email\" = ANY($2)) AND \"issued_at\" < $3 AND NOT COALESCE(\"user_id\" = ANY($4), false)"
        );
        assert!(!sql.contains("drop"), "values never reach the text");
        assert_eq!(p.values.len(), 4);
    }
}
