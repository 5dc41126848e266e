//! What the key-addressed stores (Redis, S3) share: a record is a key, a
//! selection's subject and held conditions may be key patterns (Redis
//! globs) under the pseudo-field [`KEY_FIELD`], and every other condition
//! reads a value the store keeps with the key (a hash field, the object's
//! time or metadata). One classification decides, key by key, whether a
//! record is selected, held, under minimum retention, or out of scope.

use chrono::{DateTime, Utc};

use super::Selection;
use crate::api::Identifier;

/// The pseudo-field under which a selection carries key patterns.
pub const KEY_FIELD: &str = "key";

/// Escapes a value for a SCAN pattern: it matches itself only.
pub fn glob_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Redis glob matching (`*`, `?`, `[...]` with ranges and `^`, `\` escapes).
pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let (mut star_p, mut star_i) = (None, 0);
    while i < s.len() {
        let step = if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star_p = Some(p);
                    star_i = i;
                    p += 1;
                    continue;
                }
                b'?' => Some(1),
                b'[' => class(&pattern[p..], s[i]),
                b'\\' if p + 1 < pattern.len() => (pattern[p + 1] == s[i]).then_some(2),
                c => (c == s[i]).then_some(1),
            }
        } else {
            None
        };
        match step {
            Some(n) => {
                p += n;
                i += 1;
            }
            None => match star_p {
                Some(sp) => {
                    p = sp + 1;
                    star_i += 1;
                    i = star_i;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

/// Whether `c` is in the class at the start of `pat` (`[...]`); the class's length if so.
fn class(pat: &[u8], c: u8) -> Option<usize> {
    let mut j = 1;
    let negate = pat.get(1) == Some(&b'^');
    if negate {
        j += 1;
    }
    let mut hit = false;
    while j < pat.len() && pat[j] != b']' {
        if pat[j] == b'\\' && j + 1 < pat.len() {
            hit |= pat[j + 1] == c;
            j += 2;
        } else if j + 2 < pat.len() && pat[j + 1] == b'-' && pat[j + 2] != b']' {
            let (a, b) = (pat[j].min(pat[j + 2]), pat[j].max(pat[j + 2]));
            hit |= (a..=b).contains(&c);
            j += 3;
        } else {
            hit |= pat[j] == c;
            j += 1;
        }
    }
    if j >= pat.len() {
        return None; // an unclosed class matches nothing
    }
    (hit != negate).then_some(j + 1)
}

/// A time stored in a hash field: Unix seconds or RFC 3339.
pub fn parse_time(v: &str) -> Option<DateTime<Utc>> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return DateTime::from_timestamp_millis((secs * 1000.0) as i64);
    }
    DateTime::parse_from_rfc3339(v).ok().map(|t| t.with_timezone(&Utc))
}

impl super::Counts {
    /// Counts one record of a dry run by where it stands.
    pub fn add(&mut self, class: Class) {
        self.total += 1;
        match class {
            Class::Selected => self.selected += 1,
            Class::Held => self.held += 1,
            Class::UnderMinimum => self.under_minimum += 1,
            Class::Out => {}
        }
    }
}

/// Where one record stands in a selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Out,
    Selected,
    Held,
    UnderMinimum,
}

/// The fields a selection reads from each hash, in a fixed order.
pub fn fields(sel: &Selection) -> Vec<String> {
    let mut f: Vec<String> = Vec::new();
    let mut add = |id: &Identifier| {
        let s = id.to_string();
        if s != KEY_FIELD && !f.contains(&s) {
            f.push(s);
        }
    };
    if let Some((c, _)) = &sel.older_than {
        add(c);
    }
    if let Some((c, _)) = &sel.keep_newer_than {
        add(c);
    }
    for (c, _) in sel.subject.iter().chain(sel.held.iter()) {
        add(c);
    }
    f
}

/// Whether any condition holds for a key: a key pattern it matches, or a
/// field whose value is one of the condition's.
pub fn matches(conds: &[(Identifier, Vec<String>)], names: &[String], key: &str, values: &[Option<String>]) -> bool {
    conds.iter().any(|(id, vals)| {
        if id.to_string() == KEY_FIELD {
            vals.iter().any(|p| glob_match(p.as_bytes(), key.as_bytes()))
        } else {
            let i = names.iter().position(|n| *n == id.to_string());
            let v = i.and_then(|i| values.get(i)).and_then(|v| v.as_deref());
            v.is_some_and(|v| vals.iter().any(|x| x == v))
        }
    })
}

pub fn classify(sel: &Selection, names: &[String], key: &str, values: &[Option<String>]) -> Class {
    let value = |id: &Identifier| -> Option<&str> {
        let i = names.iter().position(|n| *n == id.to_string())?;
        values.get(i)?.as_deref()
    };
    let matches = |conds: &[(Identifier, Vec<String>)]| matches(conds, names, key, values);
    let expired = match &sel.older_than {
        None => true,
        Some((c, t)) => value(c).and_then(parse_time).is_some_and(|v| v < *t),
    };
    let of_subject = sel.subject.is_empty() || matches(&sel.subject);
    if !(expired && of_subject) {
        Class::Out
    } else if matches(&sel.held) {
        Class::Held
    } else if let Some((c, t)) = &sel.keep_newer_than {
        // A key without the field is too young to know: kept.
        if value(c).and_then(parse_time).is_none_or(|v| v >= *t) { Class::UnderMinimum } else { Class::Selected }
    } else {
        Class::Selected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_redis_does() {
        assert!(glob_match(b"session:*", b"session:42:a"));
        assert!(!glob_match(b"session:*", b"sessions"));
        assert!(glob_match(b"s?ssion", b"session"));
        assert!(glob_match(b"user:[0-9]", b"user:7"));
        assert!(!glob_match(b"user:[^0-9]", b"user:7"));
        assert!(glob_match(b"a\\*b", b"a*b"));
        assert!(!glob_match(b"a\\*b", b"axb"));
        assert!(glob_match(b"*", b""));
    }

    #[test]
    fn times_are_unix_seconds_or_rfc3339() {
        assert_eq!(parse_time("1700000000").unwrap().timestamp(), 1_700_000_000);
        assert_eq!(parse_time("2026-01-01T00:00:00Z").unwrap().timestamp(), 1_767_225_600);
        assert_eq!(parse_time("soon"), None);
    }
}
