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

use super::keys::{Class, classify, fields, glob_escape, glob_match, matches, parse_time};
use super::{Action, Counts, Limits, Outcome, Progress, ScrubError, Selection};
use crate::api::{Identifier, KeyLocation};

pub use super::keys::KEY_FIELD;

/// Keys asked of each SCAN step when counting (a hint to the server); a
/// pass's steps never ask for more either.
const SCAN_COUNT: usize = 10_000;
/// Keys per UNLINK command.
const UNLINK_KEYS: usize = 1000;

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
    /// Seconds: `keys.maxTtl`, given to keys without a TTL by a retention pass.
    max_ttl: Option<u64>,
    expiries_set: i64,
}

/// A key met by a scan: its class, and whether a hold names it.
struct Scanned {
    key: String,
    class: Class,
    held: bool,
}

/// The pseudo-field of a sorted set member's score, a Unix time in seconds.
pub const SCORE_FIELD: &str = "score";
/// The pseudo-field of a set or sorted set member.
pub const MEMBER_FIELD: &str = "member";

/// Whether a selection reads members of sets and sorted sets.
fn members_mode(sel: &Selection) -> bool {
    let is = |id: &Identifier| [SCORE_FIELD, MEMBER_FIELD].contains(&id.to_string().as_str());
    sel.older_than.as_ref().is_some_and(|(c, _)| is(c)) || sel.subject.iter().any(|(c, _)| is(c))
}

/// Gives a key without a TTL the maximum (`EXPIRE ... NX`, Redis 7), unless
/// it is a set or sorted set holding a held member.
const EXPIRE_SCRIPT: &str = r#"
local t = redis.call('TYPE', KEYS[1])['ok']
for i = 2, #ARGV do
  if (t == 'set' and redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 1) or (t == 'zset' and redis.call('ZSCORE', KEYS[1], ARGV[i])) then
    return 0
  end
end
return redis.call('EXPIRE', KEYS[1], ARGV[1], 'NX')
"#;

/// Trims a sorted set by score, or removes a subject's members from a set
/// or sorted set, skipping held members; counts only when ARGV[1] is 1.
/// Returns {changed or selected, held, under minimum retention, members}.
const MEMBERS_SCRIPT: &str = r#"
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'zset' and t ~= 'set' then return {0, 0, 0, 0} end
local total
if t == 'zset' then total = redis.call('ZCARD', KEYS[1]) else total = redis.call('SCARD', KEYS[1]) end
local dry, keyheld, cutoff, minimum = ARGV[1] == '1', ARGV[2] == '1', ARGV[3], ARGV[4]
local ns = tonumber(ARGV[5])
local want, held, heldany = {}, {}, false
for i = 6, 5 + ns do want[ARGV[i]] = true end
for i = 6 + ns, #ARGV do held[ARGV[i]] = true; heldany = true end
local cand, under = {}, 0
if cutoff ~= '' then
  if t ~= 'zset' then return {0, 0, 0, total} end
  local upper = cutoff
  if minimum ~= '' and tonumber(minimum) < tonumber(cutoff) then upper = minimum end
  local expired = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. cutoff)
  if ns == 0 and not heldany and not keyheld and not dry then
    local n = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. upper)
    return {n, 0, expired - n, total}
  end
  local all = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. upper)
  under = expired - #all
  for _, m in ipairs(all) do
    if ns == 0 or want[m] then cand[#cand + 1] = m end
  end
else
  for i = 6, 5 + ns do
    local m = ARGV[i]
    if t == 'zset' then
      local s = redis.call('ZSCORE', KEYS[1], m)
      if s then
        if minimum ~= '' and tonumber(s) >= tonumber(minimum) then under = under + 1 else cand[#cand + 1] = m end
      end
    elseif redis.call('SISMEMBER', KEYS[1], m) == 1 then
      cand[#cand + 1] = m
    end
  end
end
if keyheld then return {0, #cand, under, total} end
local n, h = 0, 0
for _, m in ipairs(cand) do
  if held[m] then h = h + 1
  elseif dry then n = n + 1
  elseif t == 'zset' then n = n + redis.call('ZREM', KEYS[1], m)
  else n = n + redis.call('SREM', KEYS[1], m) end
end
return {n, h, under, total}
"#;

impl super::BatchSource for KeyBatches<'_> {
    fn sizes(&self, limits: &Limits) -> (i64, i64, i64) {
        // SCAN's COUNT: keys looked at per step. Redis serves one command at
        // a time, so a step never asks for more than 10,000.
        let max = limits.max_batch.clamp(1, SCAN_COUNT as i64);
        (limits.initial_batch.clamp(1, max), limits.min_batch.clamp(1, max), max)
    }

    async fn batch(&mut self, size: i64) -> Result<Option<i64>, ScrubError> {
        let Some(batch) = self.driver.next_batch(&mut self.scanner, self.sel, size as usize).await? else {
            return Ok(None);
        };
        let mut con = self.driver.con.clone();
        let doomed: Vec<&String> = batch.iter().filter(|k| k.class == Class::Selected).map(|k| &k.key).collect();
        let mut n = 0;
        if !doomed.is_empty() {
            // UNLINK takes many keys: a few commands instead of one per key.
            let mut p = redis::pipe();
            for chunk in doomed.chunks(UNLINK_KEYS) {
                p.cmd("UNLINK").arg(chunk);
            }
            let removed: Vec<i64> = p.query_async(&mut con).await.map_err(unavailable)?;
            n += removed.iter().sum::<i64>();
        }
        let rest: Vec<Scanned> = batch.into_iter().filter(|k| k.class != Class::Selected).collect();
        if members_mode(self.sel) {
            n += self.driver.members(self.sel, &rest, false).await?.iter().map(|m| m[0]).sum::<i64>();
        }
        if let Some(ttl) = self.max_ttl {
            // Keys without a TTL get the Dataset's maximum, except a held
            // subject's keys (the hold must outlive any TTL).
            let open: Vec<&String> = rest.iter().filter(|k| !k.held).map(|k| &k.key).collect();
            if !open.is_empty() {
                let held_members: Vec<String> = self
                    .sel
                    .held
                    .iter()
                    .filter(|(c, _)| c.to_string() == MEMBER_FIELD)
                    .flat_map(|(_, v)| v.clone())
                    .collect();
                let mut p = redis::pipe();
                for k in &open {
                    p.cmd("EVAL").arg(EXPIRE_SCRIPT).arg(1).arg(*k).arg(ttl).arg(&held_members);
                }
                let set: Vec<i64> = p.query_async(&mut con).await.map_err(unavailable)?;
                self.expiries_set += set.iter().sum::<i64>();
            }
        }
        Ok(Some(n))
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
    ) -> Result<Option<Vec<Scanned>>, ScrubError> {
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
                .map(|(key, v)| Scanned {
                    class: classify(sel, &s.names, &key, &v),
                    held: matches(&sel.held, &s.names, &key, &v),
                    key,
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
            for k in &batch {
                c.add(k.class);
            }
            if members_mode(sel) {
                for m in self.members(sel, &batch, true).await? {
                    if m[3] > 0 {
                        // A set's members are its records, not the set itself.
                        c.total += m[3] - 1;
                        c.selected += m[0];
                        c.held += m[1];
                        c.under_minimum += m[2];
                    }
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
                batch.into_iter().filter(|k| k.class == Class::Selected).map(|k| k.key).collect();
            if selected.is_empty() {
                continue;
            }
            let mut p = redis::pipe();
            for k in &selected {
                p.cmd("HGET").arg(k).arg(column.to_string());
            }
            let vals: Vec<Option<String>> = p.query_async(&mut con).await.map_err(unavailable)?;
            for t in vals.iter().flatten().filter_map(|v| parse_time(v)) {
                best = super::extreme_of(best, Some(t), newest);
            }
        }
        Ok(best)
    }

    pub fn refuse_anonymize(action: &Action) -> Result<(), ScrubError> {
        super::delete_only(action, "Redis keys")
    }

    /// Runs the members script on each scanned key (sets and sorted sets
    /// answer; other types count nothing): [changed or selected, held,
    /// under minimum, members] per key.
    async fn members(&self, sel: &Selection, keys: &[Scanned], dry: bool) -> Result<Vec<[i64; 4]>, ScrubError> {
        if keys.is_empty() {
            return Ok(vec![]);
        }
        let score = |c: &Option<(Identifier, DateTime<Utc>)>| match c {
            Some((f, t)) if f.to_string() == SCORE_FIELD => t.timestamp().to_string(),
            _ => String::new(),
        };
        let (cutoff, minimum) = (score(&sel.older_than), score(&sel.keep_newer_than));
        let pick = |conds: &[(Identifier, Vec<String>)]| -> Vec<String> {
            conds.iter().filter(|(c, _)| c.to_string() == MEMBER_FIELD).flat_map(|(_, v)| v.clone()).collect()
        };
        let (wanted, held) = (pick(&sel.subject), pick(&sel.held));
        let by_member = sel.subject.iter().any(|(c, _)| c.to_string() == MEMBER_FIELD);
        let mut p = redis::pipe();
        for k in keys {
            // A selection by member naming no member selects nothing.
            let empty = by_member && wanted.is_empty();
            let key_held = sel.held.iter().any(|(c, v)| {
                c.to_string() == KEY_FIELD && v.iter().any(|pat| glob_match(pat.as_bytes(), k.key.as_bytes()))
            });
            p.cmd("EVAL")
                .arg(MEMBERS_SCRIPT)
                .arg(1)
                .arg(&k.key)
                .arg(if dry || empty { "1" } else { "0" })
                .arg(if key_held { "1" } else { "0" })
                .arg(&cutoff)
                .arg(&minimum)
                .arg(wanted.len())
                .arg(&wanted)
                .arg(&held);
        }
        let out: Vec<Vec<i64>> = p.query_async(&mut self.con.clone()).await.map_err(unavailable)?;
        Ok(out.into_iter().map(|v| [v[0], v[1], v[2], v[3]]).collect())
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
        // A maximum TTL is the Dataset's own retention: only retention passes
        // apply it, and never under a minimum retention it could undercut.
        let max_ttl = match (&self.target, sel.subject.is_empty(), &sel.keep_newer_than) {
            (Some(t), true, None) => t.max_ttl.as_ref().map(|d| d.seconds().max(1)),
            _ => None,
        };
        let mut source = KeyBatches { driver: self, sel, scanner: self.scanner(sel)?, max_ttl, expiries_set: 0 };
        let mut out = super::drive(&mut source, limits, done_before, on_progress).await?;
        out.expiries_set = source.expiries_set;
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
