//! The resource reference (`docs/reference.md`), generated from the CRD
//! schemas so it says exactly what the API server checks: every field with
//! its type, whether it is required, its default and constraints, and the
//! CEL rules with their messages.

use serde_json::Value;

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "\\|")
}

fn type_of(s: &Value) -> String {
    let base = s.get("type").and_then(Value::as_str).unwrap_or(if s.get("x-kubernetes-int-or-string").is_some() {
        "int or string"
    } else {
        "any"
    });
    match (base, s.get("format").and_then(Value::as_str)) {
        ("array", _) => format!("[]{}", s.get("items").map(type_of).unwrap_or_else(|| "any".into())),
        ("object", _) if s.get("additionalProperties").is_some() => {
            format!("map[string]{}", s.get("additionalProperties").map(type_of).unwrap_or_else(|| "any".into()))
        }
        (t, Some(f)) => format!("{t} ({f})"),
        (t, None) => t.to_string(),
    }
}

fn constraints(s: &Value) -> String {
    let mut c = Vec::new();
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        let vals: Vec<String> =
            // A JSON null among them only says the field may be left unset.
            e.iter()
                .filter(|v| !v.is_null())
                .map(|v| format!("`{}`", v.as_str().map(String::from).unwrap_or(v.to_string())))
                .collect();
        c.push(format!("one of {}", vals.join(", ")));
    }
    for (k, label) in [
        ("minimum", "≥"),
        ("maximum", "≤"),
        ("minLength", "length ≥"),
        ("maxLength", "length ≤"),
        ("minItems", "items ≥"),
        ("maxItems", "items ≤"),
        ("maxProperties", "entries ≤"),
    ] {
        if let Some(v) = s.get(k) {
            c.push(format!("{label} {v}"));
        }
    }
    if let Some(p) = s.get("pattern").and_then(Value::as_str) {
        c.push(format!("pattern `{p}`"));
    }
    if let Some(d) = s.get("default") {
        c.push(format!("default `{d}`"));
    }
    c.join("; ")
}

/// Field rows and CEL rules under `path`.
fn walk(path: &str, s: &Value, required: bool, rows: &mut Vec<String>, rules: &mut Vec<String>) {
    if !path.is_empty() {
        rows.push(format!(
            "| `{path}` | {} | {} | {} | {} |",
            type_of(s),
            if required { "yes" } else { "" },
            one_line(&constraints(s)),
            one_line(s.get("description").and_then(Value::as_str).unwrap_or(""))
        ));
    }
    for v in s.get("x-kubernetes-validations").and_then(Value::as_array).into_iter().flatten() {
        let at = if path.is_empty() { "(object)".to_string() } else { format!("`{path}`") };
        rules.push(format!(
            "| {at} | `{}` | {} |",
            one_line(v.get("rule").and_then(Value::as_str).unwrap_or("")),
            one_line(v.get("message").and_then(Value::as_str).unwrap_or(""))
        ));
    }
    let req: Vec<&str> =
        s.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            walk(&p, v, req.contains(&k.as_str()), rows, rules);
        }
    }
    if let Some(items) = s.get("items") {
        walk_children(&format!("{path}[]"), items, rows, rules);
    }
    if let Some(add) = s.get("additionalProperties").filter(|a| a.is_object()) {
        walk_children(&format!("{path}.<key>"), add, rows, rules);
    }
}

/// The children of an array's items or a map's values (the container has its own row).
fn walk_children(path: &str, s: &Value, rows: &mut Vec<String>, rules: &mut Vec<String>) {
    if s.get("properties").is_some() || s.get("x-kubernetes-validations").is_some() {
        let mut own = Vec::new();
        walk(path, s, false, &mut own, rules);
        rows.extend(own.into_iter().skip(1));
    }
}

/// The whole reference as Markdown.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Resource reference\n\nGenerated from the CRD schemas by `lethe reference` (`make docs`); a test fails when it drifts.\nAll kinds are namespaced, in `lethe.dev/v1alpha1`, category `lethe`.\n",
    );
    for (_, crd) in super::crds() {
        let v = serde_json::to_value(&crd).expect("CRDs serialize");
        let kind = v.pointer("/spec/names/kind").and_then(Value::as_str).unwrap_or_default();
        let short: Vec<String> = v
            .pointer("/spec/names/shortNames")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(|s| format!("`{s}`")))
            .collect();
        let schema = v.pointer("/spec/versions/0/schema/openAPIV3Schema").cloned().unwrap_or_default();
        out.push_str(&format!("\n## {kind}\n\n"));
        if let Some(d) = schema.get("description").and_then(Value::as_str) {
            out.push_str(&format!("{}\n\n", one_line(d)));
        }
        out.push_str(&format!(
            "`kubectl get {}` (short: {}).\n",
            v.pointer("/spec/names/plural").and_then(Value::as_str).unwrap_or_default(),
            short.join(", ")
        ));
        for part in ["spec", "status"] {
            let Some(s) = schema.pointer(&format!("/properties/{part}")) else { continue };
            let (mut rows, mut rules) = (Vec::new(), Vec::new());
            walk(part, s, false, &mut rows, &mut rules);
            out.push_str(&format!(
                "\n### {kind} {part}\n\n| Field | Type | Required | Constraints | Description |\n|---|---|---|---|---|\n"
            ));
            for r in rows.iter().skip(1) {
                out.push_str(r);
                out.push('\n');
            }
            if !rules.is_empty() {
                out.push_str(&format!(
                    "\nRules checked at admission ({kind} {part}):\n\n| Where | Rule | Message |\n|---|---|---|\n"
                ));
                for r in &rules {
                    out.push_str(r);
                    out.push('\n');
                }
            }
        }
    }
    out
}
