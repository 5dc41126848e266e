//! Salted digests of data-subject identifiers: what Lethe shows instead of
//! the identifiers themselves, and what a LegalHold names subjects by.
//!
//! `sha256:<hex>` of `salt \0 type \0 value`. The salt is one per
//! installation (a Secret), so a digest cannot be reversed by hashing a list
//! of known e-mail addresses without it, and stays the same across restarts
//! so holds keep matching.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// The digest of one identifier of one type.
pub fn identifier(salt: &str, type_: &str, value: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0]);
    h.update(type_.as_bytes());
    h.update([0]);
    h.update(value.as_bytes());
    format!("sha256:{}", hex(&h.finalize()))
}

/// The digest naming a whole subject: over the per-identifier digests in type order.
pub fn subject(salt: &str, identifiers: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (t, v) in identifiers {
        h.update(identifier(salt, t, v).as_bytes());
        h.update([b'\n']);
    }
    format!("sha256:{}", hex(&h.finalize()))
}

/// Every per-identifier digest of a subject.
pub fn all(salt: &str, identifiers: &BTreeMap<String, String>) -> Vec<String> {
    identifiers.iter().map(|(t, v)| identifier(salt, t, v)).collect()
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// SHA-256 of bytes as `sha256:<hex>`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// What stands in a message for an identifier [`conceal`] took out.
pub const CONCEALED: &str = "[identifier]";

/// `text` with every whole occurrence of each of `values` replaced by
/// [`CONCEALED`], ASCII case ignored. For messages a store wrote, which may
/// quote a record (a trigger's exception, a duplicate key), before they
/// reach status, Events or logs. Whole: an occurrence inside a longer word
/// or number stays, so concealing `7` leaves `23505` alone. Longer values
/// go first, so one that contains another is taken whole.
pub fn conceal(text: &str, values: &[&str]) -> String {
    let mut values: Vec<&str> = values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()).collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values.dedup();
    let mut text = text.to_string();
    for v in values {
        let needle = v.to_ascii_lowercase();
        let word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
        let (starts_word, ends_word) = (word(v.chars().next()), word(v.chars().last()));
        // ASCII lowering keeps every byte where it was.
        let lower = text.to_ascii_lowercase();
        let (mut out, mut copied, mut from) = (String::with_capacity(text.len()), 0, 0);
        while let Some(found) = lower[from..].find(&needle) {
            let (at, end) = (from + found, from + found + v.len());
            let inside_word =
                starts_word && word(text[..at].chars().last()) || ends_word && word(text[end..].chars().next());
            if !inside_word {
                out.push_str(&text[copied..at]);
                out.push_str(CONCEALED);
                (copied, from) = (end, end);
            } else {
                // Not whole: a later match may still overlap this one.
                from = at + text[at..].chars().next().map_or(1, char::len_utf8);
            }
        }
        out.push_str(&text[copied..]);
        text = out;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conceal_takes_out_whole_identifiers_only() {
        let msg =
            "batch: record of Jane.Doe@example.com (user 7) is under review, see 'jane.doe@example.com-old' (P0001)";
        let out = conceal(msg, &["jane.doe@example.com", "7", "", "P0001x"]);
        assert_eq!(
            out,
            "batch: record of [identifier] (user [identifier]) is under review, see '[identifier]-old' (P0001)"
        );
        // Inside a longer number or word: not the identifier.
        assert_eq!(conceal("code 23505, user 17, id 7a", &["7", "5"]), "code 23505, user 17, id 7a");
        // The longer of two overlapping values is taken whole.
        assert_eq!(conceal("alice@example.com", &["alice", "alice@example.com"]), "[identifier]");
        // A match that is not whole does not hide a later one that is.
        assert_eq!(conceal("77 7", &["7"]), "77 [identifier]");
        assert_eq!(conceal("x-ä7-7", &["7"]), "x-ä7-[identifier]");
        assert_eq!(conceal("+49 30 1234", &["+49 30 1234"]), "[identifier]");
    }

    #[test]
    fn digests_depend_on_salt_type_and_value() {
        let a = identifier("s1", "email", "a@example.com");
        assert!(a.starts_with("sha256:") && a.len() == 71);
        assert_ne!(a, identifier("s2", "email", "a@example.com"));
        assert_ne!(a, identifier("s1", "user_id", "a@example.com"));
        assert_ne!(a, identifier("s1", "email", "b@example.com"));
        // The separator keeps type and value apart.
        assert_ne!(identifier("s", "ab", "c"), identifier("s", "a", "bc"));
        assert!(!a.contains("example"));
    }

    #[test]
    fn subject_digest_is_order_independent_and_stable() {
        let m: BTreeMap<String, String> =
            [("user_id".to_string(), "42".to_string()), ("email".to_string(), "x@y".to_string())].into();
        assert_eq!(subject("s", &m), subject("s", &m.clone()));
        assert_eq!(all("s", &m).len(), 2);
    }
}
