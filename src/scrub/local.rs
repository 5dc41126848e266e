//! `lethe scrub --dataset NAME -f DIR`: one retention pass of a dataset
//! straight from manifests, without a cluster. The same engine a scrub Job
//! runs; credentials come from the environment (`LETHE_STORE_USERNAME`,
//! `LETHE_STORE_PASSWORD`, `LETHE_ANONYMIZATION_SALT`), never from a file.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{
    ScrubError, Selection,
    driver::{self, Credentials, Driver},
};
use crate::{
    api::{DataStore, Dataset, LegalHold, RetentionPolicy},
    plan::retention,
};

/// What the pass did (or, dry, would do), printed as JSON.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub dataset: String,
    pub cutoff: Option<DateTime<Utc>>,
    pub minimum_retention_cutoff: Option<DateTime<Utc>>,
    pub set_by: Option<String>,
    pub dry_run: bool,
    pub selected: i64,
    pub held: i64,
    pub under_minimum: i64,
    /// Records kept because rows of another table still reference them
    /// through a foreign key that refuses what the pass does to them.
    pub referenced: i64,
    pub records_done: i64,
    pub remaining: i64,
    pub partitions: Vec<String>,
    /// Files stores: bytes the pass freed (or, dry, would free).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_freed: Option<u64>,
    /// S3 stores: objects an Object Lock kept, by when each becomes deletable.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub locked: Vec<crate::api::LockedObjects>,
    /// Redis stores: keys without a TTL given the Dataset's `keys.maxTtl`.
    #[serde(skip_serializing_if = "is_zero")]
    pub expiries_set: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

type Objects = (Vec<DataStore>, Vec<Dataset>, Vec<RetentionPolicy>, Vec<LegalHold>);

fn read_objects(dir: &Path) -> Result<Objects, ScrubError> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).map_err(|e| ScrubError::Config(format!("{}: {e}", p.display())))?.flatten() {
                stack.push(e.path());
            }
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(p);
        }
    }
    let (mut stores, mut datasets, mut policies, mut holds) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| ScrubError::Config(format!("{}: {e}", f.display())))?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v =
                serde_json::Value::deserialize(doc).map_err(|e| ScrubError::Config(format!("{}: {e}", f.display())))?;
            let bad = |e: serde_json::Error| ScrubError::Config(format!("{}: {e} (run lethe validate)", f.display()));
            match v.get("kind").and_then(|k| k.as_str()) {
                Some("DataStore") => stores.push(serde_json::from_value(v).map_err(bad)?),
                Some("Dataset") => datasets.push(serde_json::from_value(v).map_err(bad)?),
                Some("RetentionPolicy") => policies.push(serde_json::from_value(v).map_err(bad)?),
                Some("LegalHold") => holds.push(serde_json::from_value(v).map_err(bad)?),
                _ => {}
            }
        }
    }
    Ok((stores, datasets, policies, holds))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Runs one retention pass of `dataset` as of `now`.
pub async fn run(dir: &Path, dataset: &str, dry_run: bool, now: DateTime<Utc>) -> Result<Report, ScrubError> {
    use kube::ResourceExt;
    let (stores, datasets, policies, holds) = read_objects(dir)?;
    let ds = datasets
        .iter()
        .find(|d| d.name_any() == dataset)
        .ok_or_else(|| ScrubError::Config(format!("Dataset {dataset:?} not found in {}", dir.display())))?;
    let store = stores
        .iter()
        .find(|s| s.name_any() == ds.spec.store_ref.name && s.namespace() == ds.namespace())
        .ok_or_else(|| ScrubError::Config(format!("DataStore {:?} not found", ds.spec.store_ref.name)))?;
    // Holds: a dataset-wide hold stops the pass. A hold naming subjects by
    // Secret needs their identifiers, which reach a local pass the way they
    // reach a scrub Job: `LETHE_HELD_<n>_NAME=<hold>` and
    // `LETHE_HELD_<n>_<TYPE>=<values, one per line>`. Without them, or when
    // a hold names subjects by digest only, the pass refuses to run rather
    // than risk deleting held records.
    let from_env = crate::operator::job::inputs_from_env().held;
    let mut held: Vec<(crate::api::Identifier, Vec<String>)> = Vec::new();
    // Files: held subjects' directories, from the same identifiers.
    let mut held_paths: Vec<std::path::PathBuf> = Vec::new();
    let template = ds.spec.files.as_ref().and_then(|f| f.subject_path_template.clone());
    for h in holds.iter().filter(|h| h.namespace() == ds.namespace() && h.spec.active_at(now)) {
        if !h.spec.covers(&ds.name_any(), &ds.spec.categories, ds.labels()) {
            continue;
        }
        let name = h.name_any();
        let Some(subjects) = &h.spec.subjects else {
            return Err(ScrubError::Held(format!("LegalHold {name:?} holds Dataset {dataset:?}; nothing is deleted")));
        };
        let values = from_env.get(&name).filter(|_| subjects.digests.is_empty() && subjects.secret_ref.is_some());
        let Some(values) = values else {
            return Err(ScrubError::Config(format!(
                "LegalHold {name:?} holds subjects in Dataset {dataset:?}; a local pass needs their identifiers (LETHE_HELD_0_NAME={name} and LETHE_HELD_0_<TYPE>) and cannot match digests, so it does not run"
            )));
        };
        let found = held.iter().map(|h| h.1.len()).sum::<usize>() + held_paths.len();
        for (t, v) in values {
            if let Some(col) = ds.spec.subject_fields.get(t) {
                held.push((col.clone(), v.clone()));
            }
            for value in v {
                let ids = [(t.clone(), value.clone())].into();
                if let Some(p) = super::driver::subject_key_pattern(&ds.spec, &ids)? {
                    held.push((crate::api::Identifier::new(super::keys::KEY_FIELD).expect("valid"), vec![p]));
                }
            }
            if let Some(tpl) = &template {
                for value in v {
                    let ids = [(t.clone(), value.clone())].into();
                    if let Some(p) = super::files::render_subject_path(tpl, &ids)? {
                        held_paths.push(p);
                    }
                }
            }
        }
        // Named only by identifier types the Dataset does not map (where it
        // maps any): their records cannot be told apart.
        let named = values.values().any(|v| !v.is_empty());
        if !ds.spec.subject_types().is_empty()
            && named
            && held.iter().map(|h| h.1.len()).sum::<usize>() + held_paths.len() == found
        {
            let types: Vec<&str> = values.keys().map(String::as_str).collect();
            return Err(ScrubError::Config(format!(
                "LegalHold {name:?} names subjects by {}, none of which Dataset {dataset:?} maps to its records; a \
                 retention pass cannot tell their records apart, so it does not run",
                types.join(", ")
            )));
        }
    }
    let applying: Vec<(String, &crate::api::RetentionPolicySpec)> = policies
        .iter()
        .filter(|p| p.namespace() == ds.namespace())
        .filter(|p| {
            retention::policy_selects(&p.spec, &ds.spec.categories, ds.labels())
                || ds.spec.retention_policies.contains(&p.name_any())
        })
        .map(|p| (p.name_any(), &p.spec))
        .collect();
    let effective = retention::effective(&ds.spec, applying.iter().map(|(n, p)| (n.as_str(), *p)), now);
    let Some((rule, set_by)) = &effective.maximum else {
        return Err(ScrubError::Config(format!(
            "no retention rule sets a maximum for Dataset {dataset:?}; nothing expires"
        )));
    };
    let keep_for = rule.keep_for.as_ref().expect("a maximum has keepFor");
    if let Some(f) = &ds.spec.files {
        // Files carry their own time (a date in the name, else mtime).
        let root =
            store.spec.filesystem.as_ref().ok_or_else(|| {
                ScrubError::Config(format!("DataStore {:?} has no filesystem root", store.name_any()))
            })?;
        let cutoff = keep_for.before(now).ok_or_else(|| ScrubError::Config("cutoff out of range".into()))?;
        let minimum = effective.minimum.as_ref().and_then(|(d, _)| d.before(now));
        let sel = super::files::FileSelection {
            directory: f.directory.clone().into(),
            older_than: Some(cutoff),
            subject: vec![],
            keep_newer_than: minimum,
            held: held_paths,
            name_date_pattern: f.name_date_pattern.clone(),
        };
        let fs = super::files::FileStore::open(&root.root)?;
        let plan = fs.plan(&sel)?;
        let mut report = Report {
            dataset: dataset.to_string(),
            cutoff: Some(cutoff),
            minimum_retention_cutoff: minimum,
            set_by: Some(set_by.clone()),
            dry_run: dry_run || ds.spec.dry_run,
            selected: plan.selected,
            held: plan.held,
            under_minimum: plan.under_minimum,
            records_done: 0,
            remaining: plan.selected,
            bytes_freed: Some(plan.selected_bytes),
            ..Report::default()
        };
        if report.dry_run {
            return Ok(report);
        }
        let out = fs.run(&sel, 1000, |files, bytes| {
            eprintln!("{}", serde_json::json!({"progress": {"recordsDone": files, "bytesFreed": bytes}}));
            true
        })?;
        report.records_done = out.files_deleted;
        report.remaining = out.remaining;
        report.bytes_freed = Some(out.bytes_freed);
        return Ok(report);
    }
    let time_col = ds.spec.time_field(rule.measured_from, rule.event.as_deref()).ok_or_else(|| {
        ScrubError::Config(format!("Dataset {dataset:?} does not declare the time field {set_by} measures from"))
    })?;
    let cutoff = keep_for.before(now).ok_or_else(|| ScrubError::Config("cutoff out of range".into()))?;
    // The minimum is measured on its own rule's time basis.
    let minimum = match &effective.minimum {
        None => None,
        Some((d, source)) => {
            let basis = if source == retention::INLINE_SOURCE {
                ds.spec.retention.as_ref()
            } else {
                applying.iter().find(|(n, _)| retention::policy_source(n) == *source).map(|(_, p)| &p.rule)
            }
            .map(|r| (r.measured_from, r.event.clone()))
            .ok_or_else(|| ScrubError::Config(format!("minimum from {source} not found")))?;
            let col = ds.spec.time_field(basis.0, basis.1.as_deref()).ok_or_else(|| {
                ScrubError::Config(format!(
                    "Dataset {dataset:?} does not declare the time field {source} measures from"
                ))
            })?;
            Some((col, d.before(now).ok_or_else(|| ScrubError::Config("minimum out of range".into()))?))
        }
    };
    let action = driver::action(rule.action, &ds.spec, env("LETHE_ANONYMIZATION_SALT").unwrap_or_default());
    let mut sel = Selection {
        table: driver::table(&ds.spec)?,
        older_than: Some((time_col, cutoff)),
        subject: vec![],
        keep_newer_than: minimum.clone(),
        held,
        guards: vec![],
    };
    let credentials = Credentials {
        username: env("LETHE_STORE_USERNAME"),
        password: env("LETHE_STORE_PASSWORD"),
        ca_pem: env("LETHE_STORE_CA_FILE").and_then(|f| std::fs::read_to_string(f).ok()),
    };
    let db = Driver::connect(&store.spec, &credentials).await?.for_dataset(&ds.spec);
    // Holds on Datasets whose tables reference this one keep what their
    // held rows refer to, as in the cluster; their subjects come the same way.
    use crate::operator::exec;
    let neighbours = exec::with_holds(exec::neighbours_of(&datasets, ds), &holds, now);
    let inputs = exec::Inputs { held: from_env, ..exec::Inputs::default() };
    sel.guards = exec::neighbour_guards(&db, ds, &sel.table, &neighbours, &action, &inputs, &[]).await?.0;
    sel.guards.extend(db.reference_guards(&sel.table, &action).await?);
    let plan = db.plan(&sel).await?;
    let mut report = Report {
        dataset: dataset.to_string(),
        cutoff: Some(cutoff),
        minimum_retention_cutoff: minimum.map(|(_, t)| t),
        set_by: Some(set_by.clone()),
        dry_run: dry_run || ds.spec.dry_run,
        selected: plan.selected,
        held: plan.held,
        under_minimum: plan.under_minimum,
        referenced: plan.referenced,
        records_done: 0,
        remaining: plan.selected,
        ..Report::default()
    };
    if report.dry_run {
        return Ok(report);
    }
    let limits = driver::dataset_limits(&store.spec.limits, &ds.spec);
    let outcome = db
        .run(&sel, &action, &limits, 0, |p| {
            // Progress as JSON lines on stderr, for `kubectl logs` of a scrub Job.
            eprintln!("{}", serde_json::json!({"progress": {"recordsDone": p.records_done, "batches": p.batches, "lastBatch": p.last_batch_size}}));
        })
        .await?;
    report.records_done = outcome.records_done;
    report.remaining = outcome.remaining;
    report.partitions = outcome.partitions;
    report.expiries_set = outcome.expiries_set;
    report.locked = outcome.locked.iter().map(crate::api::LockedObjects::from).collect();
    Ok(report)
}
