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
    if parts.is_empty() { "false".into() } else { parts.join(" AND ") }
}

/// The SET list and the "already anonymized" test of anonymization rules
/// (PostgreSQL). A record is selected for anonymization only while some
/// field is not yet in its anonymized form, so re-running is harmless.
/// `table` is the quoted table name; `column` gives each field's maximum
/// length (if limited) and whether it is text.
pub fn pg_anonymize(
    table: &str,
    rules: &[FieldRule],
    salt: &str,
    column: &dyn Fn(&Identifier) -> (Option<i64>, bool),
    params: &mut Params,
) -> (String, String) {
    let sets: Vec<String> = rules
        .iter()
        .map(|r| format!("{} = {}", quote(Dialect::Postgres, &r.field), pg_new_value(table, r, salt, column, params)))
        .collect();
    (sets.join(", "), pg_anonymized(table, rules, column, params))
}

/// A rule's anonymized value of its column, as SQL.
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
            let keep = column(&r.field).0.map_or(64, |l| (l - 5).clamp(1, 64));
            let p = params.push(Param::Text(salt.to_string()));
            format!(
                "'anon-' || left(encode(sha256(convert_to(CAST({p} AS text) || {c}::text, 'UTF8')), 'hex'), {keep})"
            )
        }
    }
}

/// A rule's fixed value as its column's type. Text as it is; any other
/// type (`0` for an integer, a date) read by the server's own input
/// function: the table's row type filled from `{field: value}`, evaluated
/// once. (Filling the other fields with NULL fails in a table with a NOT
/// NULL domain column, so text, the usual case, does not go this way.)
fn pg_fixed(table: &str, rule: &FieldRule, is_text: bool, params: &mut Params) -> String {
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
/// anonymized" and its parameters.
pub struct Anonymization<V> {
    pub sets: Vec<(Identifier, String, Vec<V>)>,
    pub done: String,
    pub done_values: Vec<V>,
}

impl<V: Clone> Anonymization<V> {
    /// The SET list and its parameters.
    pub fn set_list(&self, d: Dialect) -> (String, Vec<V>) {
        let sets: Vec<String> = self.sets.iter().map(|(c, value, _)| format!("{} = {value}", quote(d, c))).collect();
        (sets.join(", "), self.sets.iter().flat_map(|s| s.2.iter().cloned()).collect())
    }

    /// The rule on column `c` (named as the server's catalog does, case
    /// ignored as MySQL and SQLite do).
    pub fn rule_of(&self, c: &str) -> Option<&(Identifier, String, Vec<V>)> {
        self.sets.iter().find(|s| s.0.as_str().eq_ignore_ascii_case(c))
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
        for key in keys {
            let risky = key.risky(rules, |c, f| c.eq_ignore_ascii_case(f.as_str()));
            if risky.is_empty() {
                continue;
            }
            let Some(q) = collision_query(d, table, &key, |c| self.rule_of(c).map(|s| s.1.clone()), changed) else {
                continue;
            };
            // The changed records are read twice: each time the new values'
            // parameters in the key's order, then the condition's.
            let once: Vec<V> = key
                .columns
                .iter()
                .filter_map(|c| self.rule_of(c))
                .flat_map(|s| s.2.iter().cloned())
                .chain(values.iter().cloned())
                .collect();
            checks.push((q, [once.clone(), once].concat(), key.refusal(&risky)));
        }
        checks
    }
}

/// A unique key of several columns, as the catalog reports it: plain
/// columns, no condition, no expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueKey {
    pub name: String,
    pub columns: Vec<String>,
    /// NULLs count as equal (PostgreSQL's `NULLS NOT DISTINCT`).
    pub nulls_equal: bool,
}

impl UniqueKey {
    /// The keys of several plain columns among catalog rows of (index
    /// name, column name in key order; none for an expression), grouped
    /// by index.
    pub fn of_columns(rows: Vec<(String, Option<String>)>) -> Vec<UniqueKey> {
        let mut keys: Vec<(UniqueKey, bool)> = Vec::new();
        for (name, column) in rows {
            if keys.last().is_none_or(|k| k.0.name != name) {
                keys.push((UniqueKey { name, columns: vec![], nulls_equal: false }, true));
            }
            let key = keys.last_mut().expect("pushed above");
            match column {
                Some(c) => key.0.columns.push(c),
                None => key.1 = false,
            }
        }
        keys.into_iter().filter(|k| k.1 && k.0.columns.len() > 1).map(|k| k.0).collect()
    }

    /// The rules on the key's columns that may give two records the same
    /// values in it: a fixed value or a redaction (one value for many
    /// records), NULL where NULLs count as equal. A hash keeps distinct
    /// values distinct, and a NULL otherwise equals nothing. `same` says
    /// whether a column name is a rule's field (the server's case rules).
    pub fn risky<'a>(&self, rules: &'a [FieldRule], same: impl Fn(&str, &Identifier) -> bool) -> Vec<&'a FieldRule> {
        rules
            .iter()
            .filter(|r| self.columns.iter().any(|c| same(c, &r.field)))
            .filter(|r| match r.strategy {
                AnonymizeStrategy::Fixed | AnonymizeStrategy::Redact => true,
                AnonymizeStrategy::Null => self.nulls_equal,
                AnonymizeStrategy::Hash => false,
            })
            .collect()
    }

    /// The refusal when [`collision_query`] finds a collision.
    pub fn refusal(&self, risky: &[&FieldRule]) -> super::ScrubError {
        let fields: Vec<&str> = risky.iter().map(|r| r.field.as_str()).collect();
        super::ScrubError::Config(format!(
            "anonymizing {} would give two records the same values in unique key {} ({}); use hash for {} \
             (distinct values stay distinct)",
            fields.join(", "),
            self.name,
            self.columns.join(", "),
            fields.join(", ")
        ))
    }
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
    let cols = quote_names(d, key.columns.iter().map(String::as_str)).ok()?;
    let same = match d {
        Dialect::Postgres => "IS NOT DISTINCT FROM",
        Dialect::Mysql => "<=>",
        Dialect::Sqlite => "IS",
    };
    let equal = if key.nulls_equal { same } else { "=" };
    let each = |f: &dyn Fn(usize, &String) -> String, sep: &str| {
        cols.iter().enumerate().map(|(i, c)| f(i, c)).collect::<Vec<_>>().join(sep)
    };
    let values = each(
        &|i, c| format!("{} AS lethe_k{i}, {c} AS lethe_o{i}", new_value(&key.columns[i]).unwrap_or_else(|| c.clone())),
        ", ",
    );
    let changed_rows = format!("(SELECT {values} FROM {table} WHERE {changed}) AS lethe_n");
    let filled = if key.nulls_equal {
        String::new()
    } else {
        format!(" WHERE {}", each(&|i, _| format!("lethe_k{i} IS NOT NULL"), " AND "))
    };
    Some(format!(
        "SELECT 1 FROM {changed_rows}{filled} GROUP BY {} HAVING count(*) > 1 \
         UNION ALL \
         SELECT 1 FROM {changed_rows} JOIN {table} AS lethe_u ON {} WHERE NOT ({}) \
         LIMIT 1",
        each(&|i, _| format!("lethe_k{i}"), ", "),
        each(&|i, c| format!("lethe_u.{c} {equal} lethe_n.lethe_k{i}"), " AND "),
        each(&|i, c| format!("lethe_u.{c} {same} lethe_n.lethe_o{i}"), " AND "),
    ))
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
    fn predicate_binds_every_value() {
        let sel = Selection {
            table: Table { schema: None, name: id("t") },
            older_than: Some((id("created_at"), Utc::now())),
            subject: vec![(id("email"), vec!["x'); drop table t; --".into()])],
            keep_newer_than: Some((id("issued_at"), Utc::now())),
            held: vec![(id("user_id"), vec!["7".into()])],
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
