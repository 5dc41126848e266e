//! Redis: a Dataset is the keys a SCAN pattern matches; a key is a record.
//! A hash key's fields are its columns — the time basis (`timestamps`) and
//! the subject fields are read with `HMGET`; keys without the time field
//! never expire, as a NULL never does in SQL. A subject's keys are also
//! found by the Dataset's `subjectKeyTemplate` (`session:{user_id}:*`),
//! with the identifier escaped so it cannot widen the pattern.
//!
//! Keys are found with `SCAN ... MATCH ... COUNT` (never `KEYS`) and removed
//! with pipelined `UNLINK`; every key is re-checked in the batch that
//! removes it. A pass is idempotent: run again after a kill, it finishes the
//! same set. Redis Cluster is not supported (one node or a primary).

use chrono::{DateTime, Utc};
use redis::aio::MultiplexedConnection;

use super::keys::{Class, classify, fields, glob_escape, glob_match, parse_time};
use super::{Action, Counts, Limits, Outcome, Progress, ScrubError, Selection};
use crate::api::{Identifier, KeyLocation};

pub use super::keys::KEY_FIELD;

/// Keys asked of each SCAN step when counting (a hint to the server).
const SCAN_COUNT: usize = 5000;

pub struct RedisDriver {
    con: MultiplexedConnection,
    pub(super) target: Option<KeyLocation>,
}

fn unavailable(e: redis::RedisError) -> ScrubError {
    if e.kind() == redis::ErrorKind::AuthenticationFailed || e.to_string().contains("NOAUTH") {
        ScrubError::Access(e.to_string())
    } else {
        ScrubError::Unavailable(e.to_string())
    }
}

/// Renders a key template for one subject; `None` when it names an
/// identifier type the subject lacks.
pub fn render_key_template(
    template: &str,
    identifiers: &std::collections::BTreeMap<String, String>,
) -> Result<Option<String>, ScrubError> {
    super::render_template(template, identifiers, |key, value| {
        if value.is_empty() {
            return Err(ScrubError::Config(format!("an empty identifier of type {key:?} names no keys")));
        }
        Ok(glob_escape(value))
    })
}

/// Where a SCAN over the keys in scope has got to.
struct Scanner {
    dataset: String,
    patterns: Vec<String>,
    names: Vec<String>,
    next: usize,
    cursor: u64,
}

/// A pass's batches: each SCAN step's selected keys, unlinked in one pipeline.
struct KeyBatches<'a> {
    driver: &'a RedisDriver,
    sel: &'a Selection,
    scanner: Scanner,
}

impl super::BatchSource for KeyBatches<'_> {
    fn sizes(&self, limits: &Limits) -> (i64, i64, i64) {
        // SCAN's COUNT: keys looked at per step. Redis serves one command at
        // a time, so a step never asks for more than 10,000.
        let max = limits.max_batch.clamp(1, 10_000);
        (limits.initial_batch.clamp(1, max), limits.min_batch.clamp(1, max), max)
    }

    async fn batch(&mut self, size: i64) -> Result<Option<i64>, ScrubError> {
        let Some(batch) = self.driver.next_batch(&mut self.scanner, self.sel, size as usize).await? else {
            return Ok(None);
        };
        let doomed: Vec<&String> = batch.iter().filter(|(_, c)| *c == Class::Selected).map(|(k, _)| k).collect();
        if doomed.is_empty() {
            return Ok(Some(0));
        }
        let mut p = redis::pipe();
        for k in &doomed {
            p.cmd("UNLINK").arg(*k);
        }
        let removed: Vec<i64> = p.query_async(&mut self.driver.con.clone()).await.map_err(unavailable)?;
        Ok(Some(removed.iter().sum()))
    }
}

impl RedisDriver {
    pub async fn connect(host: &str, port: u16, db: u8, password: Option<&str>) -> Result<RedisDriver, ScrubError> {
        use redis::IntoConnectionInfo;
        let info = redis::ConnectionAddr::Tcp(host.to_string(), port).into_connection_info().map_err(unavailable)?;
        let mut settings = redis::RedisConnectionInfo::default().set_db(i64::from(db));
        if let Some(p) = password {
            settings = settings.set_password(p);
        }
        let client = redis::Client::open(info.set_redis_settings(settings)).map_err(unavailable)?;
        let con = client.get_multiplexed_async_connection().await.map_err(unavailable)?;
        Ok(RedisDriver { con, target: None })
    }

    pub async fn server_version(&self) -> Result<String, ScrubError> {
        let info: String =
            redis::cmd("INFO").arg("server").query_async(&mut self.con.clone()).await.map_err(unavailable)?;
        let v = info.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or("unknown");
        Ok(format!("Redis {}", v.trim()))
    }

    fn pattern(&self) -> Result<String, ScrubError> {
        self.target
            .as_ref()
            .map(|t| t.pattern.clone())
            .ok_or_else(|| ScrubError::Config("the dataset names no key pattern".into()))
    }

    /// The patterns to SCAN: a subject's key patterns when the selection is
    /// by key alone (cheap), else the Dataset's pattern.
    fn scan_patterns(&self, sel: &Selection) -> Result<Vec<String>, ScrubError> {
        let by_key_only = !sel.subject.is_empty() && sel.subject.iter().all(|(c, _)| c.to_string() == KEY_FIELD);
        if by_key_only {
            Ok(sel.subject.iter().flat_map(|(_, v)| v.clone()).collect())
        } else {
            Ok(vec![self.pattern()?])
        }
    }

    /// A SCAN over the keys in scope, batch by batch.
    fn scanner(&self, sel: &Selection) -> Result<Scanner, ScrubError> {
        if sel.older_than.is_none() && sel.subject.iter().all(|(_, v)| v.is_empty()) {
            return Err(ScrubError::Config("a run must select by time, by subject, or both".into()));
        }
        Ok(Scanner {
            dataset: self.pattern()?,
            patterns: self.scan_patterns(sel)?,
            names: fields(sel),
            next: 0,
            cursor: 0,
        })
    }

    /// The next batch of keys in scope with their class; `None` at the end.
    async fn next_batch(
        &self,
        s: &mut Scanner,
        sel: &Selection,
        count: usize,
    ) -> Result<Option<Vec<(String, Class)>>, ScrubError> {
        let mut con = self.con.clone();
        while s.next < s.patterns.len() {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(s.cursor)
                .arg("MATCH")
                .arg(&s.patterns[s.next])
                .arg("COUNT")
                .arg(count)
                .query_async(&mut con)
                .await
                .map_err(unavailable)?;
            s.cursor = next;
            if next == 0 {
                s.next += 1;
            }
            // Only the Dataset's keys, whatever pattern found them.
            let keys: Vec<String> =
                keys.into_iter().filter(|k| glob_match(s.dataset.as_bytes(), k.as_bytes())).collect();
            if keys.is_empty() {
                continue;
            }
            let values: Vec<Vec<Option<String>>> = if s.names.is_empty() {
                vec![vec![]; keys.len()]
            } else {
                let mut p = redis::pipe();
                for k in &keys {
                    // HMGET on a key of another type is an error: read only hashes' fields.
                    p.cmd("EVAL")
                        .arg("if redis.call('TYPE', KEYS[1])['ok'] == 'hash' then return redis.call('HMGET', KEYS[1], unpack(ARGV)) else return {} end")
                        .arg(1)
                        .arg(k)
                        .arg(&s.names);
                }
                p.query_async(&mut con).await.map_err(unavailable)?
            };
            let batch = keys
                .into_iter()
                .zip(values)
                .map(|(k, v)| {
                    let c = classify(sel, &s.names, &k, &v);
                    (k, c)
                })
                .collect();
            return Ok(Some(batch));
        }
        Ok(None)
    }

    /// The dry run. Its total is the whole Dataset's, also when only a
    /// subject's keys were scanned: the safety brake compares with it.
    pub async fn plan(&self, sel: &Selection) -> Result<Counts, ScrubError> {
        let mut c = self.tally(sel).await?;
        if self.scan_patterns(sel)? != [self.pattern()?] {
            c.total = self.total().await?;
        }
        Ok(c)
    }

    /// Keys in the Dataset.
    async fn total(&self) -> Result<i64, ScrubError> {
        let pattern = self.pattern()?;
        let mut con = self.con.clone();
        let (mut cursor, mut n) = (0u64, 0i64);
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut con)
                .await
                .map_err(unavailable)?;
            n += keys.len() as i64;
            cursor = next;
            if cursor == 0 {
                return Ok(n);
            }
        }
    }

    /// What a selection finds among the keys it scans.
    async fn tally(&self, sel: &Selection) -> Result<Counts, ScrubError> {
        let mut c = Counts::default();
        let mut s = self.scanner(sel)?;
        while let Some(batch) = self.next_batch(&mut s, sel, SCAN_COUNT).await? {
            for (_, class) in batch {
                c.total += 1;
                match class {
                    Class::Selected => c.selected += 1,
                    Class::Held => c.held += 1,
                    Class::UnderMinimum => c.under_minimum += 1,
                    Class::Out => {}
                }
            }
        }
        Ok(c)
    }

    pub async fn count(&self, sel: &Selection) -> Result<i64, ScrubError> {
        Ok(self.tally(sel).await?.selected)
    }

    /// The earliest (or latest) time among the selected keys.
    pub async fn extreme(
        &self,
        sel: &Selection,
        column: &Identifier,
        newest: bool,
    ) -> Result<Option<DateTime<Utc>>, ScrubError> {
        let mut con = self.con.clone();
        let mut best: Option<DateTime<Utc>> = None;
        let mut s = self.scanner(sel)?;
        while let Some(batch) = self.next_batch(&mut s, sel, SCAN_COUNT).await? {
            let selected: Vec<String> =
                batch.into_iter().filter(|(_, c)| *c == Class::Selected).map(|(k, _)| k).collect();
            if selected.is_empty() {
                continue;
            }
            let mut p = redis::pipe();
            for k in &selected {
                p.cmd("HGET").arg(k).arg(column.to_string());
            }
            let vals: Vec<Option<String>> = p.query_async(&mut con).await.map_err(unavailable)?;
            for t in vals.iter().flatten().filter_map(|v| parse_time(v)) {
                best = Some(match best {
                    None => t,
                    Some(b) if newest => b.max(t),
                    Some(b) => b.min(t),
                });
            }
        }
        Ok(best)
    }

    pub fn refuse_anonymize(action: &Action) -> Result<(), ScrubError> {
        super::delete_only(action, "Redis keys")
    }

    pub async fn run(
        &self,
        sel: &Selection,
        action: &Action,
        limits: &Limits,
        done_before: i64,
        on_progress: impl FnMut(&Progress),
    ) -> Result<Outcome, ScrubError> {
        Self::refuse_anonymize(action)?;
        let mut source = KeyBatches { driver: self, sel, scanner: self.scanner(sel)? };
        let mut out = super::drive(&mut source, limits, done_before, on_progress).await?;
        out.remaining = self.count(sel).await?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_cannot_widen_a_template() {
        let ids = |v: &str| [("user_id".to_string(), v.to_string())].into();
        let p = render_key_template("session:{user_id}:*", &ids("4*")).unwrap().unwrap();
        assert_eq!(p, "session:4\\*:*");
        assert!(glob_match(p.as_bytes(), b"session:4*:x"));
        assert!(!glob_match(p.as_bytes(), b"session:42:x"));
        assert_eq!(render_key_template("session:{email}:*", &ids("4")).unwrap(), None);
        assert!(render_key_template("session:{user_id}:*", &ids("")).is_err());
    }
}
