//! Names of schemas, tables and columns that Lethe will put into SQL.
//!
//! Store drivers always quote identifiers with the store's own quoting, and
//! values are always bound parameters; on top of that, an identifier must be
//! a plain name so that nothing a user writes can change the shape of a
//! statement. Mixed case and reserved words are fine (quoting handles them);
//! spaces, quotes, semicolons, comment markers and dots are not. A qualified
//! name is written as separate `schema` and `table` fields.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize};

/// PostgreSQL truncates names at 63 bytes and MySQL allows 64; 63 fits both.
pub const MAX_IDENTIFIER_LEN: usize = 63;

/// The pattern the CRD schema enforces; [`validate_identifier`] is the same
/// rule in Rust.
pub const IDENTIFIER_PATTERN: &str = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifierError {
    #[error("identifier is empty")]
    Empty,
    #[error("identifier is longer than {MAX_IDENTIFIER_LEN} characters")]
    TooLong,
    #[error("unsafe identifier {0:?}: only letters, digits and '_' are allowed, starting with a letter or '_'")]
    Unsafe(String),
}

/// Checks that `s` is a plain SQL name. The error message quotes the input
/// with escapes so control characters cannot forge output lines.
pub fn validate_identifier(s: &str) -> Result<(), IdentifierError> {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return Err(IdentifierError::Empty);
    };
    if s.len() > MAX_IDENTIFIER_LEN {
        return Err(IdentifierError::TooLong);
    }
    let ok_first = first.is_ascii_alphabetic() || first == '_';
    if !ok_first || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        let shown: String = s.chars().take(80).collect();
        return Err(IdentifierError::Unsafe(shown));
    }
    Ok(())
}

/// A validated SQL identifier (schema, table or column name).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Identifier(String);

impl Identifier {
    pub fn new(s: impl Into<String>) -> Result<Self, IdentifierError> {
        let s = s.into();
        validate_identifier(&s)?;
        Ok(Identifier(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Identifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Identifier {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Identifier::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Identifier {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Identifier".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": IDENTIFIER_PATTERN,
            "minLength": 1,
            "maxLength": MAX_IDENTIFIER_LEN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names_including_mixed_case_and_reserved_words() {
        for s in ["users", "CustomerID", "_private", "order", "select", "t1", "a", "Email_Addr"] {
            assert!(validate_identifier(s).is_ok(), "{s}");
        }
        assert!(validate_identifier(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn rejects_injection_and_oddities() {
        for s in [
            "",
            "users; drop table x",
            "users--",
            "a\"b",
            "a'b",
            "a`b",
            "public.users",
            "1users",
            "user name",
            "users\n",
            "naïve",
            "a/*b*/",
            "x)",
            "$1",
            "users\0",
        ] {
            assert!(validate_identifier(s).is_err(), "{s:?} must be rejected");
        }
        assert_eq!(validate_identifier(&"a".repeat(64)), Err(IdentifierError::TooLong));
    }

    #[test]
    fn schema_pattern_agrees_with_validator_on_samples() {
        let re = regex::Regex::new(IDENTIFIER_PATTERN).unwrap();
        for s in ["users", "Order", "_x", "users; drop table x", "1a", "a.b", "", "a-b"] {
            assert_eq!(re.is_match(s), validate_identifier(s).is_ok(), "{s:?}");
        }
    }

    #[test]
    fn deserialize_validates() {
        assert!(serde_json::from_value::<Identifier>(serde_json::json!("ok_name")).is_ok());
        assert!(serde_json::from_value::<Identifier>(serde_json::json!("x; drop")).is_err());
    }
}
