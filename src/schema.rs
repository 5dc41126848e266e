//! Validation of objects against a CRD's structural OpenAPI v3 schema, the
//! way a Kubernetes API server does it: types, enums, patterns, bounds,
//! required fields, unknown fields, defaults, and the CEL rules in
//! `x-kubernetes-validations`. Shared by `lethe validate` and the API
//! emulator so both give the same answer.

use std::{collections::HashMap, fmt, sync::Mutex};

use serde_json::{Map, Value};

/// One problem with one field, rendered like the API server's field errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path, e.g. `spec.retention.keepFor` or `spec.relations[0].columns`.
    pub path: String,
    pub kind: FieldErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldErrorKind {
    Required,
    Unknown,
    Type { expected: String, got: String },
    Unsupported { value: String, supported: Vec<String> },
    Invalid { value: String, detail: String },
    Forbidden(String),
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.path;
        match &self.kind {
            FieldErrorKind::Required => write!(f, "{p}: Required value"),
            FieldErrorKind::Unknown => write!(f, "{p}: field not declared in schema"),
            FieldErrorKind::Type { expected, got } => {
                write!(f, "{p}: Invalid value: \"{got}\": {p} in body must be of type {expected}: \"{got}\"")
            }
            FieldErrorKind::Unsupported { value, supported } => {
                let list = supported.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
                write!(f, "{p}: Unsupported value: {value}: supported values: {list}")
            }
            FieldErrorKind::Invalid { value, detail } => write!(f, "{p}: Invalid value: {value}: {detail}"),
            FieldErrorKind::Forbidden(detail) => write!(f, "{p}: Forbidden: {detail}"),
        }
    }
}

/// How unknown fields are treated, as with `fieldValidation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownFields {
    /// Report each as an error (`fieldValidation=Strict`).
    Reject,
    /// Remove them silently (the API server's default pruning).
    Prune,
}

/// Shortens a value for an error message and escapes it, so a hostile value
/// cannot forge extra output lines.
fn show(v: &Value) -> String {
    let s = match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    if s.chars().count() > 120 { format!("{}...", s.chars().take(117).collect::<String>()) } else { s }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

/// Compiled patterns are cached: the same few patterns are checked very often.
fn pattern_matches(pattern: &str, s: &str) -> Result<bool, String> {
    static CACHE: Mutex<Option<HashMap<String, regex::Regex>>> = Mutex::new(None);
    let mut guard = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = guard.get_or_insert_with(HashMap::new);
    if !cache.contains_key(pattern) {
        let re = regex::Regex::new(pattern).map_err(|e| format!("invalid pattern in schema: {e}"))?;
        cache.insert(pattern.to_string(), re);
    }
    Ok(cache[pattern].is_match(s))
}

/// Walks `value` against `schema`, applying defaults, handling unknown fields
/// per `unknown`, and collecting every structural error (not CEL).
pub fn check_structure(schema: &Value, value: &mut Value, unknown: UnknownFields) -> Vec<FieldError> {
    let mut errors = Vec::new();
    walk(schema, value, "", unknown, &mut errors);
    errors
}

fn walk(schema: &Value, value: &mut Value, path: &str, unknown: UnknownFields, errors: &mut Vec<FieldError>) {
    let Some(s) = schema.as_object() else { return };
    let err = |errors: &mut Vec<FieldError>, kind| errors.push(FieldError { path: path.to_string(), kind });

    if value.is_null() {
        if s.get("nullable").and_then(Value::as_bool) != Some(true) {
            // A null where a value is expected: the API server drops nulls for
            // fields with no nullable; treat as type error for clarity.
            if let Some(t) = s.get("type").and_then(Value::as_str) {
                err(errors, FieldErrorKind::Type { expected: t.into(), got: "null".into() });
            }
        }
        return;
    }

    let int_or_string = s.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
    if let Some(expected) = s.get("type").and_then(Value::as_str) {
        let got = type_name(value);
        let ok = match expected {
            "number" => got == "number" || got == "integer",
            t => t == got,
        } || (int_or_string && (got == "integer" || got == "string"));
        if !ok {
            err(errors, FieldErrorKind::Type { expected: expected.into(), got: got.into() });
            return;
        }
    }

    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(subs) = s.get(key).and_then(Value::as_array) {
            let results: Vec<Vec<FieldError>> = subs
                .iter()
                .map(|sub| {
                    let mut v = value.clone();
                    let mut e = Vec::new();
                    // Alternatives only constrain; unknown fields are judged by the main schema.
                    walk_constraints_only(sub, &mut v, path, &mut e);
                    e
                })
                .collect();
            let passing = results.iter().filter(|e| e.is_empty()).count();
            match key {
                "allOf" => errors.extend(results.into_iter().flatten()),
                "anyOf" if passing == 0 => err(
                    errors,
                    FieldErrorKind::Invalid { value: show(value), detail: "must match at least one schema".into() },
                ),
                "oneOf" if passing != 1 => err(
                    errors,
                    FieldErrorKind::Invalid { value: show(value), detail: "must match exactly one schema".into() },
                ),
                _ => {}
            }
        }
    }

    check_scalar_constraints(s, value, path, errors);

    match value {
        Value::Object(obj) => walk_object(s, obj, path, unknown, errors),
        Value::Array(items) => {
            if let Some(item_schema) = s.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(item_schema, item, &format!("{path}[{i}]"), unknown, errors);
                }
            }
            check_list_uniqueness(s, items, path, errors);
        }
        _ => {}
    }
}

/// For `anyOf`/`oneOf` branches: check constraints without treating fields
/// that a branch does not mention as unknown.
fn walk_constraints_only(schema: &Value, value: &mut Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(s) = schema.as_object() else { return };
    check_scalar_constraints(s, value, path, errors);
    if let (Some(req), Value::Object(obj)) = (s.get("required").and_then(Value::as_array), &*value) {
        for r in req.iter().filter_map(Value::as_str) {
            if !obj.contains_key(r) {
                errors.push(FieldError { path: join(path, r), kind: FieldErrorKind::Required });
            }
        }
    }
    if let (Some(props), Value::Object(obj)) = (s.get("properties").and_then(Value::as_object), value) {
        for (k, sub) in props {
            if let Some(v) = obj.get_mut(k) {
                walk_constraints_only(sub, v, &join(path, k), errors);
            }
        }
    }
}

fn check_scalar_constraints(s: &Map<String, Value>, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let mut invalid = |detail: String| {
        errors.push(FieldError { path: path.to_string(), kind: FieldErrorKind::Invalid { value: show(value), detail } })
    };
    if let Some(options) = s.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        errors.push(FieldError {
            path: path.to_string(),
            kind: FieldErrorKind::Unsupported {
                value: show(value),
                // A nullable field lists null among its values: that is
                // leaving it unset, not a value to write.
                supported: options
                    .iter()
                    .filter(|o| !o.is_null())
                    .map(|o| o.as_str().map(str::to_string).unwrap_or_else(|| o.to_string()))
                    .collect(),
            },
        });
        return;
    }
    match value {
        Value::String(text) => {
            let len = text.chars().count() as u64;
            if let Some(min) = s.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                invalid(format!("{path} in body should be at least {min} chars long"));
            }
            if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                invalid(format!("{path} in body should be at most {max} chars long"));
            }
            if let Some(pattern) = s.get("pattern").and_then(Value::as_str) {
                match pattern_matches(pattern, text) {
                    Ok(true) => {}
                    Ok(false) => invalid(format!("{path} in body should match '{pattern}'")),
                    Err(e) => invalid(e),
                }
            }
            if s.get("format").and_then(Value::as_str) == Some("date-time")
                && chrono::DateTime::parse_from_rfc3339(text).is_err()
            {
                invalid(format!("{path} in body must be of type date-time"));
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if let Some(min) = s.get("minimum").and_then(Value::as_f64)
                && x < min
            {
                invalid(format!("{path} in body should be greater than or equal to {min}"));
            }
            if let Some(max) = s.get("maximum").and_then(Value::as_f64)
                && x > max
            {
                invalid(format!("{path} in body should be less than or equal to {max}"));
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(min) = s.get("minItems").and_then(Value::as_u64)
                && n < min
            {
                invalid(format!("{path} in body should have at least {min} items"));
            }
            if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
                && n > max
            {
                invalid(format!("{path} in body should have at most {max} items"));
            }
        }
        Value::Object(obj) => {
            let n = obj.len() as u64;
            if let Some(min) = s.get("minProperties").and_then(Value::as_u64)
                && n < min
            {
                invalid(format!("{path} in body should have at least {min} properties"));
            }
            if let Some(max) = s.get("maxProperties").and_then(Value::as_u64)
                && n > max
            {
                invalid(format!("{path} in body should have at most {max} properties"));
            }
        }
        _ => {}
    }
}

fn walk_object(
    s: &Map<String, Value>,
    obj: &mut Map<String, Value>,
    path: &str,
    unknown: UnknownFields,
    errors: &mut Vec<FieldError>,
) {
    let props = s.get("properties").and_then(Value::as_object);
    let additional = s.get("additionalProperties");
    let preserve = s.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true);
    let embedded = s.get("x-kubernetes-embedded-resource").and_then(Value::as_bool) == Some(true);

    // Defaults first, as the API server does, so required checks and CEL see them.
    if let Some(props) = props {
        for (k, sub) in props {
            if !obj.contains_key(k)
                && let Some(d) = sub.get("default")
            {
                obj.insert(k.clone(), d.clone());
            }
        }
    }
    if let Some(req) = s.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !obj.contains_key(r) {
                errors.push(FieldError { path: join(path, r), kind: FieldErrorKind::Required });
            }
        }
    }

    let keys: Vec<String> = obj.keys().cloned().collect();
    for k in keys {
        let child = join(path, &k);
        if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            // Implicit in every custom resource; the API server checks metadata itself.
            continue;
        }
        if let Some(sub) = props.and_then(|p| p.get(&k)) {
            if let Some(v) = obj.get_mut(&k) {
                walk(sub, v, &child, unknown, errors);
            }
        } else if let Some(add) = additional.filter(|a| a.is_object()) {
            if let Some(v) = obj.get_mut(&k) {
                walk(add, v, &child, unknown, errors);
            }
        } else if additional.and_then(Value::as_bool) == Some(true) || preserve || (embedded && props.is_none()) {
            // Free-form content the schema allows.
        } else if props.is_some() || additional.and_then(Value::as_bool) == Some(false) {
            match unknown {
                UnknownFields::Reject => errors.push(FieldError { path: child, kind: FieldErrorKind::Unknown }),
                UnknownFields::Prune => {
                    obj.remove(&k);
                }
            }
        }
    }
}

/// `x-kubernetes-list-type: map` (unique keys) and `set` (unique items).
fn check_list_uniqueness(s: &Map<String, Value>, items: &[Value], path: &str, errors: &mut Vec<FieldError>) {
    match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("map") => {
            let keys: Vec<&str> = s
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut seen = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let key: Vec<Value> = keys.iter().map(|k| item.get(*k).cloned().unwrap_or(Value::Null)).collect();
                if seen.contains(&key) {
                    errors.push(FieldError {
                        path: format!("{path}[{i}]"),
                        kind: FieldErrorKind::Invalid {
                            value: show(&Value::Array(key)),
                            detail: "Duplicate value".into(),
                        },
                    });
                } else {
                    seen.push(key);
                }
            }
        }
        Some("set") => {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    errors.push(FieldError {
                        path: format!("{path}[{i}]"),
                        kind: FieldErrorKind::Invalid { value: show(item), detail: "Duplicate value".into() },
                    });
                }
            }
        }
        _ => {}
    }
}

/// A CRD version's schema, with its CEL rules compiled once for many objects.
pub struct CompiledSchema {
    pub schema: Value,
    cel: kube::core::cel::CompiledSchema,
    validator: kube::core::cel::Validator,
}

impl CompiledSchema {
    pub fn new(schema: Value) -> Self {
        let cel = kube::core::cel::compile_schema(&schema);
        CompiledSchema { schema, cel, validator: kube::core::cel::Validator::new() }
    }

    /// Evaluates the CEL rules (`x-kubernetes-validations`) on `value`, with
    /// `old` for transition rules on update.
    pub fn check_cel(&self, value: &Value, old: Option<&Value>) -> Vec<FieldError> {
        match self.validator.validate_compiled(&self.cel, value, old) {
            Ok(()) => Vec::new(),
            Err(errs) => errs
                .into_vec()
                .into_iter()
                .map(|e| {
                    let path = e.field_path.trim_start_matches('.').to_string();
                    FieldError {
                        path: if path.is_empty() { "<root>".into() } else { path },
                        kind: FieldErrorKind::Invalid { value: "\"object\"".into(), detail: e.message },
                    }
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
                "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                "count": {"type": "integer", "minimum": 1, "maximum": 10},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2, "x-kubernetes-list-type": "set"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            },
            "x-kubernetes-validations": [{"rule": "!has(self.count) || self.count != 7", "message": "seven is unlucky"}]
        })
    }

    fn errors(v: Value) -> Vec<String> {
        let mut v = v;
        check_structure(&schema(), &mut v, UnknownFields::Reject).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn valid_object_passes_and_gets_defaults() {
        let mut v = json!({"name": "abc", "labels": {"x": "y"}, "free": {"any": [1]}});
        assert!(check_structure(&schema(), &mut v, UnknownFields::Reject).is_empty());
        assert_eq!(v["mode"], "a");
    }

    #[test]
    fn reports_like_the_api_server() {
        assert_eq!(errors(json!({})), vec!["name: Required value"]);
        assert_eq!(
            errors(json!({"name": "abc", "mode": "c"})),
            vec![r#"mode: Unsupported value: "c": supported values: "a", "b""#]
        );
        assert_eq!(
            errors(json!({"name": 5})),
            vec![r#"name: Invalid value: "integer": name in body must be of type string: "integer""#]
        );
        assert_eq!(
            errors(json!({"name": "ABC"})),
            vec![r#"name: Invalid value: "ABC": name in body should match '^[a-z]+$'"#]
        );
        assert_eq!(errors(json!({"name": "a", "bogus": 1})), vec!["bogus: field not declared in schema"]);
        assert_eq!(
            errors(json!({"name": "a", "count": 11})),
            vec!["count: Invalid value: 11: count in body should be less than or equal to 10"]
        );
        assert_eq!(
            errors(json!({"name": "a", "tags": ["x", "x"]})),
            vec![r#"tags[1]: Invalid value: "x": Duplicate value"#]
        );
        assert_eq!(errors(json!({"name": "a", "labels": {"k": 1}})).len(), 1);
    }

    #[test]
    fn prune_removes_unknown_fields() {
        let mut v = json!({"name": "a", "bogus": 1, "free": {"kept": true}});
        assert!(check_structure(&schema(), &mut v, UnknownFields::Prune).is_empty());
        assert!(v.get("bogus").is_none());
        assert_eq!(v["free"]["kept"], true);
    }

    #[test]
    fn cel_rules_are_evaluated() {
        let compiled = CompiledSchema::new(schema());
        assert!(compiled.check_cel(&json!({"name": "a", "count": 3}), None).is_empty());
        let errs = compiled.check_cel(&json!({"name": "a", "count": 7}), None);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].to_string().contains("seven is unlucky"));
    }
}
