//! `lethe validate`: offline validation of manifests, for a GitOps pipeline
//! to run before merge. Each Lethe object is checked against its CRD schema
//! (the same structural rules and CEL rules the API server applies), parsed
//! into its Rust type (durations, identifiers), and then checked against the
//! other objects in the set (references, store types, conflicting windows).
//! Every problem is one line naming file, object and field.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    path::{Path, PathBuf},
};

use chrono::Utc;
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::Value;

use crate::{
    api::{self, DataStore, Dataset, DeletionRequest, ExpiryAction, LegalHold, RetentionPolicy, ScrubRun, StoreType},
    plan::{retention, selector},
    schema::{self, CompiledSchema, UnknownFields},
};

/// Larger manifests are refused rather than parsed.
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in one object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub severity: Severity,
    pub file: String,
    /// `Kind/name`, `Kind/namespace/name`, or `document N` before the kind is known.
    pub object: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        write!(f, "{}: {}: ", self.file, self.object)?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        // One problem, one line, whatever the input contained.
        f.write_str(&self.message.replace(['\n', '\r'], " "))
    }
}

/// Options of a validation run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// References to objects not in the set are warnings instead of errors
    /// (for validating part of a repository).
    pub partial: bool,
}

/// A parsed document and where it came from.
struct Doc {
    file: String,
    index: usize,
    value: Value,
}

/// A Lethe object that passed the per-object checks.
struct Parsed {
    file: String,
    label: String,
    namespace: String,
    name: String,
    labels: BTreeMap<String, String>,
    object: LetheObject,
}

enum LetheObject {
    DataStore(Box<DataStore>),
    Dataset(Box<Dataset>),
    RetentionPolicy(Box<RetentionPolicy>),
    DeletionRequest(Box<DeletionRequest>),
    LegalHold(Box<LegalHold>),
    ScrubRun(Box<ScrubRun>),
}

/// Validates files and directories (recursing into `*.yaml`, `*.yml`, `*.json`).
pub fn validate_paths(paths: &[PathBuf], options: &Options) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    for p in paths {
        collect_files(p, &mut files, &mut problems);
    }
    files.sort();
    let mut docs = Vec::new();
    for f in &files {
        let name = f.display().to_string();
        match std::fs::metadata(f) {
            Ok(m) if m.len() > MAX_FILE_BYTES => {
                problems.push(file_problem(&name, format!("file is larger than {MAX_FILE_BYTES} bytes")))
            }
            Ok(_) => match std::fs::read_to_string(f) {
                Ok(text) => docs.extend(parse_documents(&name, &text, &mut problems)),
                Err(e) => problems.push(file_problem(&name, format!("cannot read: {e}"))),
            },
            Err(e) => problems.push(file_problem(&name, format!("cannot read: {e}"))),
        }
    }
    problems.extend(validate_docs(docs, options));
    problems
}

/// Validates one YAML stream held in memory (used by tests and fuzzing).
pub fn validate_str(file: &str, text: &str, options: &Options) -> Vec<Problem> {
    let mut problems = Vec::new();
    let docs = parse_documents(file, text, &mut problems);
    problems.extend(validate_docs(docs, options));
    problems
}

fn file_problem(file: &str, message: String) -> Problem {
    Problem { severity: Severity::Error, file: file.into(), object: "file".into(), field: None, message }
}

fn collect_files(p: &Path, out: &mut Vec<PathBuf>, problems: &mut Vec<Problem>) {
    let meta = match std::fs::metadata(p) {
        Ok(m) => m,
        Err(e) => {
            problems.push(file_problem(&p.display().to_string(), format!("cannot read: {e}")));
            return;
        }
    };
    if meta.is_dir() {
        match std::fs::read_dir(p) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    let path = entry.path();
                    let is_manifest =
                        path.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
                    if path.is_dir() || is_manifest {
                        collect_files(&path, out, problems);
                    }
                }
            }
            Err(e) => problems.push(file_problem(&p.display().to_string(), format!("cannot read: {e}"))),
        }
    } else {
        out.push(p.to_path_buf());
    }
}

fn parse_documents(file: &str, text: &str, problems: &mut Vec<Problem>) -> Vec<Doc> {
    let mut docs = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        match Value::deserialize(de) {
            Ok(Value::Null) => {}
            Ok(value) => docs.push(Doc { file: file.into(), index: i + 1, value }),
            Err(e) => {
                problems.push(Problem {
                    severity: Severity::Error,
                    file: file.into(),
                    object: format!("document {}", i + 1),
                    field: None,
                    message: format!("not valid YAML: {e}"),
                });
                // The stream cannot be trusted past a syntax error.
                break;
            }
        }
    }
    docs
}

fn validate_docs(docs: Vec<Doc>, options: &Options) -> Vec<Problem> {
    LETHE_SCHEMAS.with(|schemas| validate_docs_with(docs, options, schemas))
}

thread_local! {
    /// Lethe's own CRD schemas, compiled once per thread.
    static LETHE_SCHEMAS: HashMap<String, CompiledSchema> = api::crds()
        .into_iter()
        .filter_map(|(_, crd)| {
            let schema = crd.spec.versions.first()?.schema.as_ref()?.open_api_v3_schema.as_ref()?;
            Some((crd.spec.names.kind.clone(), CompiledSchema::new(serde_json::to_value(schema).ok()?)))
        })
        .collect();
}

fn validate_docs_with(docs: Vec<Doc>, options: &Options, schemas: &HashMap<String, CompiledSchema>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut parsed = Vec::new();
    let mut secrets: HashSet<(String, String)> = HashSet::new();
    let mut seen: HashMap<(String, String, String), String> = HashMap::new();

    for doc in docs {
        let mut p = |object: &str, field: Option<&str>, message: String, severity: Severity| {
            problems.push(Problem {
                severity,
                file: doc.file.clone(),
                object: object.to_string(),
                field: field.map(str::to_string),
                message,
            })
        };
        let at = format!("document {}", doc.index);
        let Some(obj) = doc.value.as_object() else {
            p(&at, None, "a manifest must be a mapping with apiVersion and kind".into(), Severity::Error);
            continue;
        };
        let (Some(api_version), Some(kind)) =
            (obj.get("apiVersion").and_then(Value::as_str), obj.get("kind").and_then(Value::as_str))
        else {
            p(&at, None, "apiVersion and kind are required".into(), Severity::Error);
            continue;
        };
        let meta = obj.get("metadata");
        let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("").to_string();
        let namespace = meta.and_then(|m| m.get("namespace")).and_then(Value::as_str).unwrap_or("").to_string();
        let label = if name.is_empty() {
            format!("{kind} ({at})")
        } else if namespace.is_empty() {
            format!("{kind}/{name}")
        } else {
            format!("{kind}/{namespace}/{name}")
        };

        if kind == "List" && api_version == "v1" {
            p(&label, None, "List documents are not expanded; write one object per document".into(), Severity::Error);
            continue;
        }
        let group = api_version.split_once('/').map(|(g, _)| g).unwrap_or("");
        if group != api::GROUP {
            if api_version == "v1" && kind == "Secret" && !name.is_empty() {
                secrets.insert((namespace.clone(), name.clone()));
            }
            continue;
        }
        if api_version != api::API_VERSION {
            p(
                &label,
                Some("apiVersion"),
                format!("unsupported version {api_version:?}; use {}", api::API_VERSION),
                Severity::Error,
            );
            continue;
        }
        let Some(schema) = schemas.get(kind) else {
            p(
                &label,
                Some("kind"),
                format!("unknown kind {kind:?} in {}; known kinds: {}", api::GROUP, api::KINDS.join(", ")),
                Severity::Error,
            );
            continue;
        };
        let mut problems_here = Vec::new();
        for m in metadata_problems(meta) {
            problems_here.push((Some(m.0), m.1));
        }
        if let Some(first) = seen.insert((kind.into(), namespace.clone(), name.clone()), doc.file.clone())
            && !name.is_empty()
        {
            problems_here.push((None, format!("defined twice (also in {first})")));
        }
        if obj.contains_key("status") {
            p(&label, Some("status"), "status in a manifest is ignored; Lethe writes it".into(), Severity::Warning);
        }

        let mut value = doc.value.clone();
        let structural = schema::check_structure(&schema.schema, &mut value, UnknownFields::Reject)
            .into_iter()
            .filter(|e| !e.path.starts_with("metadata."))
            .collect::<Vec<_>>();
        for e in &structural {
            problems_here.push((
                Some(e.path.clone()),
                e.to_string().split_once(": ").map(|x| x.1.to_string()).unwrap_or_default(),
            ));
        }
        // CEL rules assume a structurally valid object, as in the API server.
        if structural.is_empty() {
            for e in schema.check_cel(&value, None) {
                let detail = match &e.kind {
                    schema::FieldErrorKind::Invalid { detail, .. } => detail.clone(),
                    other => format!("{other:?}"),
                };
                problems_here.push((Some(e.path.clone()), detail));
            }
        }
        let typed = if problems_here.is_empty() { typed(kind, &value) } else { None };
        let typed = match typed {
            Some(Ok(o)) => Some(o),
            Some(Err((field, message))) => {
                problems_here.push((Some(field), message));
                None
            }
            None => None,
        };
        for (field, message) in problems_here {
            p(&label, field.as_deref(), message, Severity::Error);
        }
        if let Some(object) = typed {
            let labels = meta
                .and_then(|m| m.get("labels"))
                .and_then(|l| serde_json::from_value(l.clone()).ok())
                .unwrap_or_default();
            parsed.push(Parsed { file: doc.file.clone(), label, namespace, name, labels, object });
        }
    }
    problems.extend(cross_checks(&parsed, &secrets, options));
    problems.sort_by(|a, b| (&a.file, a.severity).cmp(&(&b.file, b.severity)));
    problems
}

/// DNS subdomain names for objects, as the API server requires.
fn metadata_problems(meta: Option<&Value>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(meta) = meta.and_then(Value::as_object) else {
        out.push(("metadata".into(), "Required value".into()));
        return out;
    };
    match meta.get("name") {
        Some(Value::String(n)) => {
            if let Err(e) = check_dns_subdomain(n) {
                out.push(("metadata.name".into(), e));
            }
        }
        Some(_) => out.push(("metadata.name".into(), "must be a string".into())),
        None if meta.contains_key("generateName") => {}
        None => out.push(("metadata.name".into(), "Required value: name or generateName is required".into())),
    }
    if let Some(ns) = meta.get("namespace") {
        match ns.as_str() {
            Some(ns) if is_dns_label(ns) => {}
            _ => out.push(("metadata.namespace".into(), "must be a lower-case DNS label (RFC 1123)".into())),
        }
    }
    for key in ["labels", "annotations"] {
        if let Some(v) = meta.get(key)
            && !v.as_object().is_some_and(|m| m.values().all(Value::is_string))
        {
            out.push((format!("metadata.{key}"), "must be a map of strings".into()));
        }
    }
    out
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn check_dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 || !s.split('.').all(is_dns_label) {
        return Err(format!(
            "Invalid value: {s:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

fn typed(kind: &str, value: &Value) -> Option<Result<LetheObject, (String, String)>> {
    fn parse<T: DeserializeOwned>(v: &Value) -> Result<T, (String, String)> {
        serde_path_to_error::deserialize(v).map_err(|e| (e.path().to_string(), e.inner().to_string()))
    }
    Some(match kind {
        "DataStore" => parse(value).map(|o| LetheObject::DataStore(Box::new(o))),
        "Dataset" => parse(value).map(|o| LetheObject::Dataset(Box::new(o))),
        "RetentionPolicy" => {
            // The rule is flattened into spec, which hides field paths from
            // serde: parse it on its own first to name the field.
            if let Some(spec) = value.get("spec")
                && let Err((path, message)) = parse::<api::RetentionRule>(spec)
            {
                return Some(Err((format!("spec.{path}"), message)));
            }
            parse(value).map(|o| LetheObject::RetentionPolicy(Box::new(o)))
        }
        "DeletionRequest" => parse(value).map(|o| LetheObject::DeletionRequest(Box::new(o))),
        "LegalHold" => parse(value).map(|o| LetheObject::LegalHold(Box::new(o))),
        "ScrubRun" => parse(value).map(|o| LetheObject::ScrubRun(Box::new(o))),
        _ => return None,
    })
}

/// Checks that need more than one object: references, store types, and the
/// effective retention of every dataset.
fn cross_checks(parsed: &[Parsed], secrets: &HashSet<(String, String)>, options: &Options) -> Vec<Problem> {
    let mut out = Vec::new();
    let missing = if options.partial { Severity::Warning } else { Severity::Error };
    let find = |ns: &str, name: &str, pred: fn(&LetheObject) -> bool| {
        parsed.iter().find(|p| p.namespace == ns && p.name == name && pred(&p.object))
    };
    let is_store = |o: &LetheObject| matches!(o, LetheObject::DataStore(_));
    let is_dataset = |o: &LetheObject| matches!(o, LetheObject::Dataset(_));
    let is_policy = |o: &LetheObject| matches!(o, LetheObject::RetentionPolicy(_));
    let policies: Vec<(&Parsed, &RetentionPolicy)> = parsed
        .iter()
        .filter_map(|p| match &p.object {
            LetheObject::RetentionPolicy(r) => Some((p, r.as_ref())),
            _ => None,
        })
        .collect();
    let now = Utc::now();

    for p in parsed {
        let mut push = |severity, field: &str, message: String| {
            out.push(Problem {
                severity,
                file: p.file.clone(),
                object: p.label.clone(),
                field: Some(field.into()),
                message,
            })
        };
        match &p.object {
            LetheObject::DataStore(s) => {
                if let Some(secret) = &s.spec.secret_ref
                    && !secrets.contains(&(p.namespace.clone(), secret.name.clone()))
                {
                    push(
                        Severity::Warning,
                        "spec.secretRef.name",
                        format!(
                            "Secret {:?} is not in the validated manifests; it must exist before the store can be probed",
                            secret.name
                        ),
                    );
                }
            }
            LetheObject::Dataset(d) => {
                let spec = &d.spec;
                if let Some(salt) = spec.anonymization.as_ref().and_then(|a| a.salt_secret_ref.as_ref())
                    && !secrets.contains(&(p.namespace.clone(), salt.name.clone()))
                {
                    push(
                        Severity::Warning,
                        "spec.anonymization.saltSecretRef.name",
                        format!(
                            "Secret {:?} is not in the validated manifests; it must exist before anonymization runs",
                            salt.name
                        ),
                    );
                }
                match find(&p.namespace, &spec.store_ref.name, is_store) {
                    None => {
                        push(missing, "spec.storeRef.name", format!("DataStore {:?} not found", spec.store_ref.name))
                    }
                    Some(store) => {
                        if let LetheObject::DataStore(s) = &store.object {
                            let t = s.spec.type_;
                            let (ok, want) = match t {
                                _ if t.is_sql() => (spec.table.is_some(), "table"),
                                StoreType::S3 => (spec.objects.is_some(), "objects"),
                                StoreType::Redis => (spec.keys.is_some(), "keys"),
                                _ => (spec.files.is_some(), "files"),
                            };
                            if !ok {
                                push(
                                    Severity::Error,
                                    "spec",
                                    format!(
                                        "store {:?} is of type {}, so the dataset is described by '{want}'",
                                        spec.store_ref.name,
                                        t.as_str()
                                    ),
                                );
                            }
                        }
                    }
                }
                for (i, rel) in spec.relations.iter().enumerate() {
                    if rel.dataset == p.name {
                        push(
                            Severity::Error,
                            &format!("spec.relations[{i}].dataset"),
                            "a dataset cannot reference itself".into(),
                        );
                    } else if find(&p.namespace, &rel.dataset, is_dataset).is_none() {
                        push(
                            missing,
                            &format!("spec.relations[{i}].dataset"),
                            format!("Dataset {:?} not found", rel.dataset),
                        );
                    }
                }
                for (i, name) in spec.retention_policies.iter().enumerate() {
                    if find(&p.namespace, name, is_policy).is_none() {
                        push(
                            missing,
                            &format!("spec.retentionPolicies[{i}]"),
                            format!("RetentionPolicy {name:?} not found"),
                        );
                    }
                }
                // Every rule that applies must be measurable and enforceable here.
                let applying: Vec<(&str, &api::RetentionPolicySpec)> = policies
                    .iter()
                    .filter(|(pp, rp)| {
                        pp.namespace == p.namespace
                            && (retention::policy_selects(&rp.spec, &spec.categories, &p.labels)
                                || spec.retention_policies.contains(&pp.name))
                    })
                    .map(|(pp, rp)| (pp.name.as_str(), &rp.spec))
                    .collect();
                for (name, rp) in &applying {
                    let rule = &rp.rule;
                    if rule.keep_for.is_some() && spec.time_field(rule.measured_from, rule.event.as_deref()).is_none() {
                        let what = match rule.measured_from {
                            api::TimeBasis::Created => "timestamps.created".to_string(),
                            api::TimeBasis::LastActivity => "timestamps.lastActivity".to_string(),
                            api::TimeBasis::Event => {
                                format!("timestamps.events.{}", rule.event.as_deref().unwrap_or("?"))
                            }
                        };
                        push(
                            Severity::Error,
                            &format!("spec.{what}"),
                            format!(
                                "RetentionPolicy {name:?} measures its window from it, but the dataset does not declare it"
                            ),
                        );
                    }
                    if rule.action == ExpiryAction::Anonymize && spec.anonymization.is_none() {
                        push(
                            Severity::Error,
                            "spec.anonymization",
                            format!(
                                "RetentionPolicy {name:?} anonymizes expired records, but the dataset has no anonymization rules"
                            ),
                        );
                    }
                }
                let effective = retention::effective(spec, applying.iter().copied(), now);
                if let Some(conflict) = &effective.conflict {
                    push(Severity::Error, "spec", format!("conflicting windows: {conflict}"));
                }
                if effective.maximum.is_none() {
                    push(
                        Severity::Warning,
                        "spec",
                        "no retention rule sets a maximum for this dataset; its records never expire".into(),
                    );
                }
            }
            LetheObject::RetentionPolicy(r) => {
                if let Some(sel) = &r.spec.dataset_selector {
                    for m in selector::problems(sel) {
                        push(Severity::Error, "spec.datasetSelector", m);
                    }
                }
            }
            LetheObject::DeletionRequest(r) => {
                if let Some(scope) = &r.spec.scope {
                    for (i, name) in scope.datasets.iter().enumerate() {
                        if find(&p.namespace, name, is_dataset).is_none() {
                            push(missing, &format!("spec.scope.datasets[{i}]"), format!("Dataset {name:?} not found"));
                        }
                    }
                }
                if r.spec.subject.identifiers.is_some() {
                    push(
                        Severity::Warning,
                        "spec.subject.identifiers",
                        "inline identifiers are for development; use subject.secretRef".into(),
                    );
                }
            }
            LetheObject::LegalHold(h) => {
                for (i, name) in h.spec.datasets.iter().enumerate() {
                    if find(&p.namespace, name, is_dataset).is_none() {
                        push(missing, &format!("spec.datasets[{i}]"), format!("Dataset {name:?} not found"));
                    }
                }
                if let Some(sel) = &h.spec.dataset_selector {
                    for m in selector::problems(sel) {
                        push(Severity::Error, "spec.datasetSelector", m);
                    }
                }
            }
            LetheObject::ScrubRun(r) => {
                if find(&p.namespace, &r.spec.dataset_ref.name, is_dataset).is_none() {
                    push(missing, "spec.datasetRef.name", format!("Dataset {:?} not found", r.spec.dataset_ref.name));
                }
            }
        }
    }
    out.extend(relation_cycles(parsed));
    out
}

/// Relations must form a forest: a cycle has no safe erasure order.
fn relation_cycles(parsed: &[Parsed]) -> Vec<Problem> {
    let edges: HashMap<(&str, &str), Vec<&str>> = parsed
        .iter()
        .filter_map(|p| match &p.object {
            LetheObject::Dataset(d) => Some((
                (p.namespace.as_str(), p.name.as_str()),
                d.spec.relations.iter().map(|r| r.dataset.as_str()).collect(),
            )),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for p in parsed.iter().filter(|p| matches!(p.object, LetheObject::Dataset(_))) {
        // Follow parents from p; coming back to p is a cycle.
        let mut stack: Vec<&str> = edges.get(&(p.namespace.as_str(), p.name.as_str())).cloned().unwrap_or_default();
        let mut visited = HashSet::new();
        while let Some(n) = stack.pop() {
            if n == p.name {
                out.push(Problem {
                    severity: Severity::Error,
                    file: p.file.clone(),
                    object: p.label.clone(),
                    field: Some("spec.relations".into()),
                    message: "relations form a cycle; erasure needs an order from children to parents".into(),
                });
                break;
            }
            if visited.insert(n) {
                stack.extend(edges.get(&(p.namespace.as_str(), n)).into_iter().flatten());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        validate_str("t.yaml", text, &Options::default())
            .into_iter()
            .filter(|p| p.severity == Severity::Error)
            .map(|p| p.to_string())
            .collect()
    }

    const STORE: &str = "apiVersion: lethe.dev/v1alpha1\nkind: DataStore\nmetadata: {name: db}\nspec: {type: postgres, sql: {host: db, database: app}}\n";

    #[test]
    fn a_valid_pair_passes() {
        let text = format!(
            "{STORE}---\napiVersion: lethe.dev/v1alpha1\nkind: Dataset\nmetadata: {{name: prefs}}\nspec:\n  storeRef: {{name: db}}\n  categories: [marketing]\n  table: {{name: prefs}}\n  timestamps: {{lastActivity: last_seen}}\n  retention: {{keepFor: 24mo, measuredFrom: lastActivity}}\n"
        );
        assert_eq!(errors(&text), Vec::<String>::new());
    }

    #[test]
    fn each_line_names_file_object_and_field() {
        let text = "apiVersion: lethe.dev/v1alpha1\nkind: DataStore\nmetadata: {name: db}\nspec: {type: oracle}\n";
        let errs = errors(text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("t.yaml: DataStore/db: spec.type: Unsupported value: \"oracle\""), "{}", errs[0]);
    }

    #[test]
    fn cel_rules_apply() {
        let text = "apiVersion: lethe.dev/v1alpha1\nkind: DataStore\nmetadata: {name: db}\nspec: {type: postgres}\n";
        let errs = errors(text);
        assert!(errs.iter().any(|e| e.contains("configured under 'sql'")), "{errs:?}");
    }

    #[test]
    fn typed_parse_catches_zero_durations() {
        let text = format!(
            "{STORE}---\napiVersion: lethe.dev/v1alpha1\nkind: Dataset\nmetadata: {{name: prefs}}\nspec:\n  storeRef: {{name: db}}\n  categories: [marketing]\n  table: {{name: prefs}}\n  timestamps: {{created: c}}\n  retention: {{keepFor: 0d}}\n"
        );
        let errs = errors(&text);
        assert!(errs.iter().any(|e| e.contains("spec.retention.keepFor") && e.contains("zero")), "{errs:?}");
    }

    #[test]
    fn hostile_values_stay_on_one_line() {
        let text =
            "apiVersion: lethe.dev/v1alpha1\nkind: DataStore\nmetadata: {name: db}\nspec: {type: \"x\\nFAKE: line\"}\n";
        for e in errors(text) {
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
