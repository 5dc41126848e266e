//! `meta.k8s.io/v1` Table output built from printer columns, so
//! `kubectl get` shows each kind's columns.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::registry::ResourceType;

/// Evaluates the JSONPath subset printer columns use:
/// `.a.b`, `.a[0].b` and `.a[?(@.k=="v")].b`.
pub fn json_path<'a>(obj: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut cur = vec![obj];
    let mut rest = path.trim().trim_start_matches('{').trim_end_matches('}').trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            cur = cur.into_iter().filter_map(|v| v.get(key)).collect();
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else { return vec![] };
            let inner = &r[..end];
            rest = &r[end + 1..];
            if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let Some((key, want)) = filter.split_once("==") else { return vec![] };
                let want = want.trim().trim_matches('"').trim_matches('\'');
                cur = cur
                    .into_iter()
                    .filter_map(Value::as_array)
                    .flatten()
                    .filter(|item| item.get(key.trim()).and_then(Value::as_str) == Some(want))
                    .collect();
            } else if inner == "*" {
                cur = cur.into_iter().filter_map(Value::as_array).flatten().collect();
            } else if let Ok(i) = inner.parse::<usize>() {
                cur = cur.into_iter().filter_map(|v| v.get(i)).collect();
            } else {
                return vec![];
            }
        } else {
            return vec![];
        }
    }
    cur
}

/// Age the way kubectl prints it: `45s`, `12m`, `5h`, `3d`, `2y`.
pub fn age(since: &str, now: DateTime<Utc>) -> String {
    let Ok(t) = DateTime::parse_from_rfc3339(since) else { return "<invalid>".into() };
    let secs = (now - t.with_timezone(&Utc)).num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7_200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3_600),
        s if s < 365 * 86_400 => format!("{}d", s / 86_400),
        s => format!("{}y", s / (365 * 86_400)),
    }
}

fn cell(obj: &Value, col_type: &str, path: &str, now: DateTime<Utc>) -> Value {
    let found = json_path(obj, path);
    let Some(first) = found.first() else { return Value::Null };
    if col_type == "date" {
        return first.as_str().map(|s| json!(age(s, now))).unwrap_or(Value::Null);
    }
    if found.len() > 1 {
        let parts: Vec<String> =
            found.iter().map(|v| v.as_str().map(String::from).unwrap_or_else(|| v.to_string())).collect();
        return json!(parts.join(","));
    }
    (*first).clone()
}

/// A Table of `objects` with `rt`'s printer columns (Name first, Age last
/// when the kind has no columns of its own).
pub fn table(rt: &ResourceType, objects: &[Value], resource_version: &str, continue_token: Option<&str>) -> Value {
    let now = Utc::now();
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    let mut cols = rt.columns.clone();
    if !cols.iter().any(|c| c.json_path == ".metadata.creationTimestamp") {
        cols.push(super::registry::Column {
            name: "Age".into(),
            type_: "date".into(),
            json_path: ".metadata.creationTimestamp".into(),
            priority: 0,
            description: String::new(),
        });
    }
    for c in &cols {
        let t = if c.type_ == "date" { "string" } else { c.type_.as_str() };
        defs.push(
            json!({"name": c.name, "type": t, "format": "", "description": c.description, "priority": c.priority}),
        );
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![o.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
            cells.extend(cols.iter().map(|c| cell(o, &c.type_, &c.json_path, now)));
            json!({
                "cells": cells,
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or_default()}
            })
        })
        .collect();
    let mut meta = json!({"resourceVersion": resource_version});
    if let Some(c) = continue_token {
        meta["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_path_subset() {
        let o = json!({"spec": {"a": 1}, "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "X", "status": "False"}]}});
        assert_eq!(json_path(&o, ".spec.a"), vec![&json!(1)]);
        assert_eq!(json_path(&o, ".status.conditions[?(@.type==\"Ready\")].status"), vec![&json!("True")]);
        assert_eq!(json_path(&o, ".status.conditions[1].type"), vec![&json!("X")]);
        assert!(json_path(&o, ".spec.missing").is_empty());
    }

    #[test]
    fn ages() {
        let now = DateTime::parse_from_rfc3339("2026-01-10T00:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(age("2026-01-09T23:59:30Z", now), "30s");
        assert_eq!(age("2026-01-09T23:00:00Z", now), "60m");
        assert_eq!(age("2026-01-07T00:00:00Z", now), "3d");
    }
}
