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

#[cfg(test)]
mod tests {
    use super::*;

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
