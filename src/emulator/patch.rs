//! PATCH in its four flavours: JSON merge patch, JSON patch, strategic merge
//! patch (as merge patch without directives: enough for what kubectl sends
//! to the built-ins Lethe uses), and server-side apply with field managers
//! that merges lists of maps by their keys (conditions by `type`).

use std::collections::BTreeSet;

use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value, json};

/// A path into an object: `f:<field>` or `k:<key json>` segments, as in managedFields.
type FieldPath = Vec<String>;

/// JSON merge patch (RFC 7386).
pub fn merge(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// Strategic merge patch, minus directives (`$patch`, `$retainKeys`, `$setElementOrder/...`).
pub fn strategic(target: &mut Value, patch: &Value) {
    merge(target, &strip_directives(patch));
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| (k.clone(), strip_directives(v))).collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// JSON patch (RFC 6902).
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let p: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| format!("invalid JSON patch: {e}"))?;
    json_patch::patch(target, &p).map_err(|e| e.to_string())
}

/// Which lists merge by keys: from the schema's `x-kubernetes-list-type: map`,
/// and `conditions` by `type` for kinds without a schema.
fn list_keys(schema: Option<&Value>, field: &str) -> Option<Vec<String>> {
    match schema {
        Some(s) if s.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") => Some(
            s.get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|k| k.as_str().map(String::from)).collect())
                .unwrap_or_default(),
        ),
        Some(_) => None,
        None if field == "conditions" => Some(vec!["type".into()]),
        None => None,
    }
}

fn child_schema<'a>(schema: Option<&'a Value>, field: &str) -> Option<&'a Value> {
    let s = schema?;
    s.get("properties").and_then(|p| p.get(field)).or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
}

fn key_segment(item: &Value, keys: &[String]) -> String {
    let m: Map<String, Value> = keys.iter().map(|k| (k.clone(), item.get(k).cloned().unwrap_or(Value::Null))).collect();
    format!("k:{}", Value::Object(m))
}

/// The set of leaf paths an applied configuration sets.
fn field_set(v: &Value, schema: Option<&Value>, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                let cs = child_schema(schema, k);
                prefix.push(format!("f:{k}"));
                match (child, list_keys(cs, k)) {
                    (Value::Array(items), Some(keys)) if !keys.is_empty() => {
                        out.insert(prefix.clone());
                        let item_schema = cs.and_then(|s| s.get("items"));
                        for item in items {
                            prefix.push(key_segment(item, &keys));
                            out.insert(prefix.clone());
                            field_set(item, item_schema, prefix, out);
                            prefix.pop();
                        }
                    }
                    _ => {
                        out.insert(prefix.clone());
                        field_set(child, cs, prefix, out);
                    }
                }
                prefix.pop();
            }
        }
        _ => {}
    }
}

/// Renders a field set as `fieldsV1`.
fn to_fields_v1(set: &BTreeSet<FieldPath>) -> Value {
    let mut root = json!({});
    for path in set {
        let mut cur = &mut root;
        for seg in path {
            cur = cur
                .as_object_mut()
                .expect("fieldsV1 nodes are objects")
                .entry(seg.clone())
                .or_insert_with(|| json!({}));
        }
    }
    root
}

fn from_fields_v1(v: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    if let Some(m) = v.as_object() {
        for (k, child) in m {
            if k == "." {
                continue;
            }
            prefix.push(k.clone());
            out.insert(prefix.clone());
            from_fields_v1(child, prefix, out);
            prefix.pop();
        }
    }
}

/// Removes the value at a managedFields-style path.
fn remove_path(target: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else { return };
    if let Some(field) = first.strip_prefix("f:") {
        let Some(m) = target.as_object_mut() else { return };
        if rest.is_empty() {
            m.remove(field);
        } else if let Some(child) = m.get_mut(field) {
            remove_path(child, rest);
        }
    } else if let Some(key) = first.strip_prefix("k:") {
        let Ok(Value::Object(key)) = serde_json::from_str::<Value>(key) else { return };
        let Some(items) = target.as_array_mut() else { return };
        let matches = |item: &Value| key.iter().all(|(k, v)| item.get(k) == Some(v));
        if rest.is_empty() {
            items.retain(|i| !matches(i));
        } else if let Some(item) = items.iter_mut().find(|i| matches(i)) {
            remove_path(item, rest);
        }
    }
}

/// Merges an applied configuration into the live object: maps recursively,
/// keyed lists item by item, everything else replaced.
fn apply_merge(live: &mut Value, applied: &Value, schema: Option<&Value>) {
    let (Some(lm), Some(am)) = (live.as_object_mut(), applied.as_object()) else {
        *live = applied.clone();
        return;
    };
    for (k, av) in am {
        let cs = child_schema(schema, k);
        match (lm.get_mut(k), av, list_keys(cs, k)) {
            (Some(Value::Array(litems)), Value::Array(aitems), Some(keys)) if !keys.is_empty() => {
                let item_schema = cs.and_then(|s| s.get("items"));
                for ai in aitems {
                    let seg = key_segment(ai, &keys);
                    match litems.iter_mut().find(|li| key_segment(li, &keys) == seg) {
                        Some(li) => apply_merge(li, ai, item_schema),
                        None => litems.push(ai.clone()),
                    }
                }
            }
            (Some(lv @ Value::Object(_)), Value::Object(_), _) => apply_merge(lv, av, cs),
            _ => {
                lm.insert(k.clone(), av.clone());
            }
        }
    }
}

/// Server-side apply of `applied` by `manager` onto `live` (the current
/// object, or an empty one for a create). Fields the manager set before
/// and no longer sets are removed unless another manager also set them.
/// Conflicts are resolved in the applier's favour (as with `force=true`).
pub fn server_side_apply(
    live: &Value,
    applied: &Value,
    manager: &str,
    subresource: Option<&str>,
    schema: Option<&Value>,
    api_version: &str,
) -> Value {
    let mut result = live.clone();
    // What the applier means, without what the server owns.
    let mut config = applied.clone();
    if let Some(meta) = config.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in ["resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "deletionTimestamp"] {
            meta.remove(k);
        }
    }
    let mut new_set = BTreeSet::new();
    let mut scoped = config.clone();
    if let Some(m) = scoped.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("name");
            meta.remove("namespace");
        }
    }
    field_set(&scoped, schema, &mut Vec::new(), &mut new_set);

    let entries: Vec<Value> =
        live.pointer("/metadata/managedFields").and_then(Value::as_array).cloned().unwrap_or_default();
    let same = |e: &Value| {
        e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some("Apply")
            && e.get("subresource").and_then(Value::as_str) == subresource
    };
    let mut prev = BTreeSet::new();
    let mut others = BTreeSet::new();
    for e in &entries {
        let target = if same(e) { &mut prev } else { &mut others };
        if let Some(f) = e.get("fieldsV1") {
            from_fields_v1(f, &mut Vec::new(), target);
        }
    }
    // Only the outermost dropped paths: removing a keyed list item's fields
    // first would leave an empty item its key no longer matches.
    let gone: BTreeSet<&FieldPath> = prev.difference(&new_set).filter(|p| !others.contains(*p)).collect();
    let dropped: Vec<&FieldPath> =
        gone.iter().copied().filter(|p| !(1..p.len()).any(|n| gone.contains(&p[..n].to_vec()))).collect();
    for p in dropped {
        remove_path(&mut result, p);
    }
    apply_merge(&mut result, &config, schema);

    let mut kept: Vec<Value> = entries.into_iter().filter(|e| !same(e)).collect();
    let mut entry = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(&new_set),
    });
    if let Some(s) = subresource {
        entry["subresource"] = json!(s);
    }
    kept.push(entry);
    if let Some(meta) = result.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("managedFields".into(), Value::Array(kept));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conditions_schema() -> Value {
        json!({"type": "object", "properties": {"status": {"type": "object", "properties": {
            "conditions": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
                "items": {"type": "object", "properties": {"type": {"type": "string"}, "status": {"type": "string"}}}},
            "phase": {"type": "string"}, "count": {"type": "integer"}
        }}}})
    }

    #[test]
    fn apply_merges_conditions_by_type_across_managers() {
        let s = conditions_schema();
        let live = json!({"metadata": {"name": "x"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        let a = server_side_apply(
            &live,
            &json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            "a",
            Some("status"),
            Some(&s),
            "v1",
        );
        let b = server_side_apply(
            &a,
            &json!({"status": {"conditions": [{"type": "Synced", "status": "True"}]}}),
            "b",
            Some("status"),
            Some(&s),
            "v1",
        );
        let conds = b["status"]["conditions"].as_array().unwrap();
        assert_eq!(conds.len(), 2);
        assert_eq!(conds[0], json!({"type": "Ready", "status": "True"}));
        assert_eq!(conds[1], json!({"type": "Synced", "status": "True"}));
    }

    #[test]
    fn apply_removes_fields_the_manager_stopped_setting() {
        let s = conditions_schema();
        let one = server_side_apply(
            &json!({"metadata": {}}),
            &json!({"status": {"phase": "Running", "count": 3}}),
            "m",
            None,
            Some(&s),
            "v1",
        );
        let two = server_side_apply(&one, &json!({"status": {"phase": "Done"}}), "m", None, Some(&s), "v1");
        assert_eq!(two["status"], json!({"phase": "Done"}));
        // A field another manager also set survives.
        let other = server_side_apply(&one, &json!({"status": {"count": 3}}), "o", None, Some(&s), "v1");
        let three = server_side_apply(&other, &json!({"status": {"phase": "Done"}}), "m", None, Some(&s), "v1");
        assert_eq!(three["status"]["count"], 3);
    }

    #[test]
    fn apply_removes_a_keyed_item_the_manager_stopped_setting() {
        let s = conditions_schema();
        let cond = |t: &str| json!({"type": t, "status": "True", "reason": "R", "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z"});
        let one = server_side_apply(
            &json!({"metadata": {"name": "x"}}),
            &json!({"status": {"conditions": [cond("A"), cond("B")]}}),
            "m",
            Some("status"),
            Some(&s),
            "v1",
        );
        let two = server_side_apply(
            &one,
            &json!({"status": {"conditions": [cond("B")]}}),
            "m",
            Some("status"),
            Some(&s),
            "v1",
        );
        assert_eq!(two["status"]["conditions"], json!([cond("B")]));
    }

    #[test]
    fn strategic_ignores_directives() {
        let mut t = json!({"data": {"a": "1"}});
        strategic(&mut t, &json!({"data": {"b": "2"}, "$retainKeys": ["data"]}));
        assert_eq!(t, json!({"data": {"a": "1", "b": "2"}}));
    }
}
