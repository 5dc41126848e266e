//! Runs the Argo CD health checks (`charts/lethe/argocd/<Kind>.lua`) with a
//! real Lua interpreter on live objects, as Argo CD would.
#![allow(dead_code)]

use std::process::Command;

use serde_json::Value;

fn literal(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        Value::Array(items) => format!("{{{}}}", items.iter().map(literal).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("[{}] = {}", literal(&Value::String(k.clone())), literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The health check's (status, message) for an object of `kind`.
pub fn health(kind: &str, obj: &Value) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("run.lua");
    let check = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("charts/lethe/argocd/{kind}.lua"));
    std::fs::write(
        &script,
        format!(
            "obj = {}\nlocal hs = dofile({})\nprint(hs.status)\nprint(hs.message)\n",
            literal(obj),
            literal(&Value::String(check.display().to_string()))
        ),
    )
    .unwrap();
    let out = Command::new("lua5.4").arg(&script).output().expect("lua5.4 (run scripts/setup-test-env.sh)");
    assert!(out.status.success(), "{kind}.lua failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    (lines.next().unwrap_or_default().to_string(), lines.next().unwrap_or_default().to_string())
}
