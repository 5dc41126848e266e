//! Executing one ScrubRun: the same code in the operator (in-process
//! executor) and in a scrub Job (`lethe scrub --run`).
//!
//! Order of work, each step visible in the run's status before the next:
//! 1. resolve the Dataset, DataStore, holds and (for an erasure) the subject;
//! 2. record the plan — cutoff, matching, held and total records — before
//!    anything is touched (kept from the first attempt on a resume);
//! 3. stop at the safety brake unless the run was approved;
//! 4. delete or anonymize in bounded batches, checkpointing progress;
//! 5. verify by counting again and record the outcome.
//!
//! A resumed run re-runs the same selection (its cutoff is in the spec):
//! what was done is no longer selected, so nothing beyond the plan is touched.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use kube::{Api, Client, ResourceExt};

use super::{APPROVED_BY, Error, Result, apply_status, condition, now, read_secret};
use crate::{
    api::{
        DataStore, DataStoreSpec, Dataset, DeletionRequest, ExpiryAction, LegalHold, LockedObjects, RunCounts,
        RunPhase, RunPlan, RunProgress, RunPurpose, ScrubRun, ScrubRunStatus, Verification,
    },
    scrub::{
        Action, GuardReason, Selection,
        driver::{self, Credentials, Driver},
    },
};

/// Reads a DataStore's credentials from its Secrets. `Ok(Err(message))`
/// when a Secret or key is missing.
pub async fn store_credentials(
    client: &Client,
    ns: &str,
    spec: &DataStoreSpec,
) -> Result<std::result::Result<Credentials, String>> {
    let mut creds = Credentials::default();
    if let Some(r) = &spec.secret_ref {
        let Some(values) = read_secret(client, ns, &r.name).await? else {
            return Ok(Err(format!("Secret {:?} does not exist", r.name)));
        };
        creds.username = values.get(&r.username_key).cloned();
        creds.password = values.get(&r.password_key).cloned();
        if creds.username.is_none() {
            return Ok(Err(format!("Secret {:?} has no key {:?}", r.name, r.username_key)));
        }
    }
    if let Some(ca) = spec.tls.as_ref().and_then(|t| t.ca_secret_ref.as_ref()) {
        let Some(values) = read_secret(client, ns, &ca.name).await? else {
            return Ok(Err(format!("Secret {:?} (CA certificate) does not exist", ca.name)));
        };
        match values.get(&ca.key) {
            Some(pem) => creds.ca_pem = Some(pem.clone()),
            None => return Ok(Err(format!("Secret {:?} has no key {:?}", ca.name, ca.key))),
        }
    }
    Ok(Ok(creds))
}

/// What a run needs beyond the API objects: secrets, resolved by the caller.
#[derive(Default)]
pub struct Inputs {
    pub credentials: Credentials,
    /// The subject's identifiers by type (erasure runs only).
    pub identifiers: Option<BTreeMap<String, String>>,
    /// The anonymization salt (datasets that hash).
    pub anonymization_salt: Option<String>,
    /// Held subjects' identifiers by hold name, then type, then values.
    pub held: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

/// Resolves a run's secrets through the API (the in-process executor).
/// `Ok(Err(message))` when something it needs is missing.
pub async fn inputs_from_api(
    client: &Client,
    run: &ScrubRun,
    ds: &Dataset,
    store: &DataStore,
    holds: &[LegalHold],
    referrer_holds: &[LegalHold],
) -> Result<std::result::Result<Inputs, String>> {
    let ns = run.namespace().unwrap_or_default();
    let credentials = match store_credentials(client, &ns, &store.spec).await? {
        Ok(c) => c,
        Err(m) => return Ok(Err(m)),
    };
    let mut inputs = Inputs { credentials, ..Inputs::default() };
    if let Some(salt) = ds.spec.anonymization.as_ref().and_then(|a| a.salt_secret_ref.as_ref()) {
        match read_secret(client, &ns, &salt.name).await?.and_then(|v| v.get(&salt.key).cloned()) {
            Some(s) => inputs.anonymization_salt = Some(s),
            None => {
                return Ok(Err(format!(
                    "Secret {:?} key {:?} (anonymization salt) does not exist",
                    salt.name, salt.key
                )));
            }
        }
    }
    if let Some(r) = &run.spec.deletion_request_ref {
        let requests: Api<DeletionRequest> = Api::namespaced(client.clone(), &ns);
        let Some(req) = requests.get_opt(&r.name).await? else {
            return Ok(Err(format!("DeletionRequest {:?} does not exist", r.name)));
        };
        match subject_identifiers(client, &ns, &req).await? {
            Ok(ids) => inputs.identifiers = Some(ids),
            Err(m) => return Ok(Err(m)),
        }
    }
    for h in holds {
        if let Some(r) = h.spec.subjects.as_ref().and_then(|s| s.secret_ref.as_ref()) {
            let Some(by_type) = held_subjects(client, &ns, h).await? else {
                return Ok(Err(format!(
                    "LegalHold {:?} names its subjects in Secret {:?}, which does not exist; nothing runs until it does",
                    h.name_any(),
                    r.name
                )));
            };
            inputs.held.insert(h.name_any(), by_type);
        }
    }
    // A referring Dataset's hold whose Secret is missing keeps every record
    // that Dataset refers to (see `guards`), so it stops nothing here.
    for h in referrer_holds {
        if let Some(by_type) = held_subjects(client, &ns, h).await? {
            inputs.held.insert(h.name_any(), by_type);
        }
    }
    Ok(Ok(inputs))
}

/// The subjects a hold names in its Secret, by identifier type; `None`
/// when it names none that way or the Secret does not exist.
pub async fn held_subjects(
    client: &Client,
    ns: &str,
    hold: &LegalHold,
) -> Result<Option<BTreeMap<String, Vec<String>>>> {
    let Some(r) = hold.spec.subjects.as_ref().and_then(|s| s.secret_ref.as_ref()) else { return Ok(None) };
    Ok(read_secret(client, ns, &r.name)
        .await?
        .map(|values| values.into_iter().map(|(t, v)| (t, super::identifier_lines(&v))).collect()))
}

/// A DeletionRequest's subject identifiers, from its Secret or inline.
pub async fn subject_identifiers(
    client: &Client,
    ns: &str,
    req: &DeletionRequest,
) -> Result<std::result::Result<BTreeMap<String, String>, String>> {
    if let Some(ids) = &req.spec.subject.identifiers {
        return Ok(Ok(ids.clone()));
    }
    let Some(r) = &req.spec.subject.secret_ref else {
        return Ok(Err("the request names no subject".into()));
    };
    Ok(match read_secret(client, ns, &r.name).await? {
        None => Err(format!("Secret {:?} naming the subject does not exist", r.name)),
        Some(v) if v.is_empty() => Err(format!("Secret {:?} holds no identifiers", r.name)),
        Some(v) => Ok(v.into_iter().map(|(k, v)| (k, v.trim().to_string())).collect()),
    })
}

/// Active holds that apply to a dataset.
pub fn holds_for(all: &[LegalHold], ds: &Dataset, at: DateTime<Utc>) -> Vec<LegalHold> {
    all.iter()
        .filter(|h| h.namespace() == ds.namespace() && h.spec.active_at(at))
        .filter(|h| h.spec.covers(&ds.name_any(), &ds.spec.categories, ds.labels()))
        .cloned()
        .collect()
}

/// How a run ended, for the caller (the reconcile's requeue).
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Done,
    AwaitingApproval,
}

/// Writes a run's status as it progresses. Every write is the whole status
/// under the one field manager.
struct Writer<'a> {
    client: &'a Client,
    run: &'a ScrubRun,
    shown: Option<ScrubRunStatus>,
    st: ScrubRunStatus,
    /// Identifiers no message this writer writes may carry.
    secrets: Vec<String>,
}

impl<'a> Writer<'a> {
    /// A writer of the run's status as it stands, keeping `secrets` out of
    /// every message.
    fn new(client: &'a Client, run: &'a ScrubRun, secrets: Vec<String>) -> Self {
        let st = run.status.clone().unwrap_or_default();
        Writer { client, run, shown: run.status.clone(), st, secrets }
    }

    async fn flush(&mut self) -> Result<()> {
        // kstatus: in progress until the run ends.
        match self.st.phase {
            Some(RunPhase::Succeeded | RunPhase::Failed) | None => self.clear("Reconciling"),
            Some(p) => self.set("Reconciling", true, &format!("{p:?}"), "the run is in progress"),
        }
        apply_status(self.client, self.run, self.shown.as_ref(), &self.st).await?;
        self.shown = Some(self.st.clone());
        Ok(())
    }

    fn conceal(&self, text: &str) -> String {
        crate::digest::conceal(text, &self.secrets.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn set(&mut self, type_: &str, ok: bool, reason: &str, message: impl Into<String>) {
        let message = self.conceal(&message.into());
        let c = condition(&self.st.conditions, type_, ok, reason, message, self.run.metadata.generation);
        self.st.conditions.retain(|x| x.type_ != type_);
        self.st.conditions.push(c);
        self.st.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    }

    fn clear(&mut self, type_: &str) {
        self.st.conditions.retain(|x| x.type_ != type_);
    }

    async fn fail(&mut self, reason: &str, message: String) -> Result<Ended> {
        let at = now();
        self.st.phase = Some(RunPhase::Failed);
        self.st.completion_time = Some(at);
        if let Some(start) = self.st.start_time {
            self.st.duration = Some(human((at - start).to_std().unwrap_or_default()));
        }
        self.clear("Stalled");
        self.set("Succeeded", false, reason, message.clone());
        self.set("Failed", true, reason, message);
        self.flush().await?;
        Ok(Ended::Done)
    }
}

/// `1h2m3s`-style, for status.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

/// What the run executes against, resolved from the API.
pub struct Targets {
    pub dataset: Dataset,
    pub store: DataStore,
    pub holds: Vec<LegalHold>,
    /// Declared relations between the namespace's tables, as (child table, parent table).
    pub relations: Vec<(String, String)>,
    /// The other tables' Datasets in the same store (see [`neighbours_of`]),
    /// with the holds on each: their tables may reference this one's.
    pub neighbours: Vec<(Dataset, Vec<LegalHold>)>,
}

impl Targets {
    /// The holds on the neighbouring Datasets that are not already the run's own.
    pub fn neighbour_holds(&self) -> Vec<LegalHold> {
        let mut out: Vec<LegalHold> = Vec::new();
        for h in self.neighbours.iter().flat_map(|(_, hs)| hs) {
            if !self.holds.iter().chain(&out).any(|o| o.name_any() == h.name_any()) {
                out.push(h.clone());
            }
        }
        out
    }
}

/// A Dataset whose table references the run's: deleting a record reaches
/// the rows that refer to it (a cascade, or setting the reference NULL),
/// so the holds on that Dataset keep the records they refer to.
#[derive(Clone, Debug)]
pub struct Referrer {
    pub dataset: Dataset,
    /// The referencing table, as the relation or the store names it.
    pub table: crate::scrub::Table,
    /// Its columns, and the run's table's columns they reference.
    pub columns: Vec<crate::api::Identifier>,
    pub references: Vec<crate::api::Identifier>,
}

/// The Datasets in `datasets` of a table in `ds`'s store (`ds` included:
/// a table may reference itself), each with only what holds select by
/// (name, namespace, labels) and its spec.
pub fn neighbours_of(datasets: &[Dataset], ds: &Dataset) -> Vec<Dataset> {
    datasets
        .iter()
        .filter(|d| d.spec.table.is_some() && d.spec.store_ref.name == ds.spec.store_ref.name)
        .map(|d| {
            let mut n = Dataset::new(&d.name_any(), d.spec.clone());
            n.metadata.namespace = d.namespace();
            n.metadata.labels = d.metadata.labels.clone();
            n
        })
        .collect()
}

/// Each Dataset with the active holds on it (from `all`).
pub fn with_holds(datasets: Vec<Dataset>, all: &[LegalHold], at: DateTime<Utc>) -> Vec<(Dataset, Vec<LegalHold>)> {
    datasets
        .into_iter()
        .map(|d| {
            let on_it = holds_for(all, &d, at);
            (d, on_it)
        })
        .collect()
}

/// What the holds on `ds`'s neighbours keep of its table (see [`guards`]),
/// and the names of those holds. The store is asked for the keys
/// referencing the table only when some neighbour is held.
pub async fn neighbour_guards(
    db: &Driver,
    ds: &Dataset,
    table: &crate::scrub::Table,
    neighbours: &[(Dataset, Vec<LegalHold>)],
    action: &Action,
    inputs: &Inputs,
    subject_digests: &[String],
) -> std::result::Result<(Vec<crate::scrub::Guard>, Vec<String>), crate::scrub::ScrubError> {
    if neighbours.iter().all(|(_, hs)| hs.is_empty()) {
        return Ok((vec![], vec![]));
    }
    let keys = db.referencing_keys(table).await?;
    let referrers = referrers(ds, neighbours, &keys).map_err(crate::scrub::ScrubError::Config)?;
    Ok(guards(&referrers, action, inputs, subject_digests))
}

/// The held neighbours whose tables reference `ds`'s: by each declared
/// relation to it, and by each foreign key the store shows (`keys`) that
/// no relation of that Dataset declares. A key naming a column no
/// identifier can be is refused: its rows could not be kept.
fn referrers(
    ds: &Dataset,
    neighbours: &[(Dataset, Vec<LegalHold>)],
    keys: &[crate::scrub::ReferencingKey],
) -> std::result::Result<Vec<(Referrer, Vec<LegalHold>)>, String> {
    use crate::api::Identifier;
    let mut out = Vec::new();
    for (n, on_it) in neighbours.iter().filter(|(_, hs)| !hs.is_empty()) {
        let Some(t) = &n.spec.table else { continue };
        let declared: Vec<&crate::api::Relation> =
            n.spec.relations.iter().filter(|r| r.dataset == ds.name_any()).collect();
        let table = crate::scrub::Table { schema: t.schema.clone(), name: t.name.clone() };
        for r in &declared {
            let (columns, references) = (r.columns.clone(), r.references.clone());
            out.push((Referrer { dataset: n.clone(), table: table.clone(), columns, references }, on_it.clone()));
        }
        // A key's table outside the connection's schema names it; a Dataset
        // naming its schema may name the connection's own.
        let its_table = |k: &&crate::scrub::ReferencingKey| {
            k.table == t.name.as_str()
                && match (&k.schema, &t.schema) {
                    (Some(a), Some(b)) => a == b.as_str(),
                    (Some(_), None) => false,
                    (None, _) => true,
                }
        };
        for k in keys.iter().filter(its_table) {
            let names = |v: &[String]| {
                v.iter().map(|c| Identifier::new(c.as_str())).collect::<std::result::Result<Vec<_>, _>>().map_err(|e| {
                    format!(
                        "the foreign key of {} referencing this table names a column Lethe cannot quote ({e})",
                        k.table
                    )
                })
            };
            let (columns, references) = (names(&k.columns)?, names(&k.references)?);
            if declared.iter().any(|r| r.columns == columns) {
                continue;
            }
            let schema = match &k.schema {
                Some(s) => Some(Identifier::new(s.as_str()).map_err(|e| format!("schema {s:?}: {e}"))?),
                None => None,
            };
            let table = crate::scrub::Table { schema, name: t.name.clone() };
            out.push((Referrer { dataset: n.clone(), table, columns, references }, on_it.clone()));
        }
    }
    Ok(out)
}

/// Loads a run's Dataset, DataStore and applicable holds. `Ok(Err)` names what is missing.
pub async fn targets(client: &Client, run: &ScrubRun) -> Result<std::result::Result<Targets, String>> {
    let ns = run.namespace().unwrap_or_default();
    let datasets = Api::<Dataset>::namespaced(client.clone(), &ns).list(&Default::default()).await?.items;
    let table_of = |name: &str| {
        datasets.iter().find(|d| d.name_any() == name).and_then(|d| d.spec.table.as_ref()).map(|t| t.name.to_string())
    };
    let relations = datasets
        .iter()
        .flat_map(|d| d.spec.relations.iter().map(move |r| (d, r)))
        .filter_map(|(d, r)| Some((d.spec.table.as_ref()?.name.to_string(), table_of(&r.dataset)?)))
        .collect();
    let neighbours = match datasets.iter().find(|d| d.name_any() == run.spec.dataset_ref.name) {
        Some(ds) => neighbours_of(&datasets, ds),
        None => vec![],
    };
    targets_of_run(client, run, relations, neighbours).await
}

/// A run's Dataset, DataStore and holds, read with no more than a scrub
/// Job's Role allows (its Dataset and DataStore by name, LegalHolds listed);
/// the relations and neighbouring Datasets come from the caller.
pub async fn targets_of_run(
    client: &Client,
    run: &ScrubRun,
    relations: Vec<(String, String)>,
    neighbours: Vec<Dataset>,
) -> Result<std::result::Result<Targets, String>> {
    let ns = run.namespace().unwrap_or_default();
    let Some(dataset) = Api::<Dataset>::namespaced(client.clone(), &ns).get_opt(&run.spec.dataset_ref.name).await?
    else {
        return Ok(Err(format!("Dataset {:?} does not exist", run.spec.dataset_ref.name)));
    };
    let Some(store) = Api::<DataStore>::namespaced(client.clone(), &ns).get_opt(&dataset.spec.store_ref.name).await?
    else {
        return Ok(Err(format!("DataStore {:?} does not exist", dataset.spec.store_ref.name)));
    };
    let all = Api::<LegalHold>::namespaced(client.clone(), &ns).list(&Default::default()).await?.items;
    let at = now();
    let holds = holds_for(&all, &dataset, at);
    let neighbours = with_holds(neighbours, &all, at);
    Ok(Ok(Targets { dataset, store, holds, relations, neighbours }))
}

/// Hooks for metrics (the in-process executor counts; a Job does not).
pub trait Observer: Send + Sync {
    fn stalled(&self, _namespace: &str, _dataset: &str) {}
}

pub struct NoObserver;
impl Observer for NoObserver {}

/// Executes (or resumes) a run to its end, a stall, or a retryable error.
pub async fn execute(
    client: &Client,
    run: &ScrubRun,
    targets: Targets,
    inputs: Inputs,
    digest_salt: &str,
    executor: &str,
    observer: &dyn Observer,
) -> Result<Ended> {
    // A store's message may quote a record: the identifiers this run
    // knows never leave it, whatever the message.
    let mut secrets: Vec<String> = inputs.identifiers.iter().flat_map(|m| m.values().cloned()).collect();
    secrets.extend(inputs.held.values().flat_map(|m| m.values().flatten().cloned()));
    let mut w = Writer::new(client, run, secrets);
    w.st.observed_generation = run.metadata.generation;
    w.st.executor = Some(executor.to_string());
    match execute_with(&mut w, run, targets, inputs, digest_salt, observer).await {
        // A store error no retry can mend (configuration, access) fails the
        // run wherever it arose, instead of resuming it forever.
        Err(Error::Scrub(e)) if !e.retryable() => w.fail(e.reason(), e.to_string()).await,
        Err(Error::Scrub(e)) => Err(Error::Scrub(e.map_text(|t| w.conceal(&t)))),
        other => other,
    }
}

async fn execute_with(
    w: &mut Writer<'_>,
    run: &ScrubRun,
    targets: Targets,
    inputs: Inputs,
    digest_salt: &str,
    observer: &dyn Observer,
) -> Result<Ended> {
    if matches!(w.st.phase, Some(RunPhase::Succeeded | RunPhase::Failed)) {
        return Ok(Ended::Done);
    }
    let Targets { dataset: ds, store, holds, relations, neighbours } = targets;
    let purpose = run.spec.purpose;

    // Holds. A hold on the whole dataset stops the run before it connects.
    let subject_digests: Vec<String> =
        inputs.identifiers.as_ref().map(|ids| crate::digest::all(digest_salt, ids)).unwrap_or_default();
    let mut whole = Vec::new();
    // Why a hold was taken to hold this subject without naming it.
    let mut uncertain: Vec<String> = Vec::new();
    let mut held_cols: BTreeMap<crate::api::Identifier, Vec<String>> = BTreeMap::new();
    for h in &holds {
        let name = h.name_any();
        match &h.spec.subjects {
            None => whole.push(name),
            Some(s) => {
                let named_by_digest = subject_digests.iter().any(|d| s.digests.contains(d));
                if s.secret_ref.is_some() && !inputs.held.contains_key(&name) {
                    // A hold made after this run's Job was built: its subjects never
                    // reached the Job. Stop rather than risk their records.
                    return w
                        .fail(
                            "HeldSubjectsUnresolvable",
                            format!(
                                "LegalHold {name:?} names subjects this run was not given (it is newer than the run's Job); nothing was deleted, the next run carries them"
                            ),
                        )
                        .await;
                }
                let by_secret = inputs.held.get(&name).cloned().unwrap_or_default();
                // A retention pass keeps a held subject's records only by the
                // identifiers the hold gives that the Dataset maps: none of
                // them, and it cannot tell those records apart.
                let named = by_secret.values().any(|v| !v.is_empty());
                let held_before: usize = held_cols.values().map(Vec::len).sum();
                let unmapped = |held_cols: &BTreeMap<crate::api::Identifier, Vec<String>>| {
                    purpose == RunPurpose::Retention
                        && named
                        && held_cols.values().map(Vec::len).sum::<usize>() == held_before
                };
                let held_types = by_secret.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
                let unmapped_reason = format!(
                    "LegalHold {name:?} names subjects by {held_types}, none of which this Dataset maps to its records; a \
                     retention pass cannot tell their records apart, so it does not run. Give the hold's Secret \
                     the identifier types the Dataset maps (subjectFields, or its key or path template)"
                );
                let named_by_value = inputs
                    .identifiers
                    .as_ref()
                    .is_some_and(|ids| ids.iter().any(|(t, v)| by_secret.get(t).is_some_and(|vals| vals.contains(v))));
                if named_by_digest || named_by_value {
                    // This very subject is held.
                    whole.push(name);
                    continue;
                }
                let shares_a_type = inputs
                    .identifiers
                    .as_ref()
                    .is_some_and(|ids| ids.keys().any(|t| by_secret.get(t).is_some_and(|v| !v.is_empty())));
                if purpose == RunPurpose::Erasure && named && !shares_a_type {
                    // The hold and the request name subjects by different
                    // types: this subject may be one the hold names.
                    uncertain.push(format!(
                        "{name} names subjects only by {held_types}, which this request does not give, so this subject may \
                         be among them"
                    ));
                    whole.push(name);
                    continue;
                }
                if !s.digests.is_empty() && purpose == RunPurpose::Retention {
                    // A retention pass cannot recognise rows by digest: refuse rather than delete them.
                    return w
                        .fail(
                            "HeldSubjectsUnresolvable",
                            format!(
                                "LegalHold {name:?} names subjects by digest only; a retention pass cannot tell their records apart, so it does not run. Name held subjects with subjects.secretRef to let retention skip exactly their records"
                            ),
                        )
                        .await;
                }
                if let Some(files) = &ds.spec.files {
                    // Files: a held subject's directory, from the path template.
                    let Some(tpl) = &files.subject_path_template else {
                        return w
                            .fail(
                                "HeldSubjectsUnresolvable",
                                format!("LegalHold {name:?} names subjects, but this files Dataset has no subjectPathTemplate to find their files; nothing runs"),
                            )
                            .await;
                    };
                    for (t, values) in by_secret {
                        for v in values {
                            let ids = [(t.clone(), v)].into();
                            match crate::scrub::files::render_subject_path(tpl, &ids) {
                                Ok(Some(p)) => held_cols
                                    .entry(file_path_field())
                                    .or_default()
                                    .push(p.to_string_lossy().into_owned()),
                                Ok(None) => {}
                                Err(e) => return w.fail("HeldSubjectsUnresolvable", e.to_string()).await,
                            }
                        }
                    }
                    if unmapped(&held_cols) {
                        return w.fail("HeldSubjectsUnresolvable", unmapped_reason).await;
                    }
                    continue;
                }
                for (t, values) in by_secret {
                    // Redis and S3: a held subject's keys, from the key template.
                    for v in &values {
                        let ids = [(t.clone(), v.clone())].into();
                        match driver::subject_key_pattern(&ds.spec, &ids) {
                            Ok(Some(p)) => held_cols.entry(key_field()).or_default().push(p),
                            Ok(None) => {}
                            Err(e) => return w.fail("HeldSubjectsUnresolvable", e.to_string()).await,
                        }
                    }
                    if let Some(col) = ds.spec.subject_fields.get(&t) {
                        held_cols.entry(col.clone()).or_default().extend(values);
                    }
                }
                // A Dataset that maps no identifier at all ties no record to
                // a subject: there is nothing of theirs to tell apart.
                if !ds.spec.subject_types().is_empty() && unmapped(&held_cols) {
                    return w.fail("HeldSubjectsUnresolvable", unmapped_reason).await;
                }
            }
        }
    }
    let table = match driver::table(&ds.spec) {
        Ok(t) => t,
        Err(e) => return w.fail("InvalidConfiguration", e.to_string()).await,
    };
    let mut sel = Selection {
        table,
        older_than: None,
        subject: vec![],
        keep_newer_than: match (&run.spec.minimum_time_field, run.spec.minimum_retention_cutoff) {
            (Some(f), Some(t)) => Some((f.clone(), t)),
            _ => None,
        },
        held: held_cols.into_iter().collect(),
        guards: vec![],
    };
    match purpose {
        RunPurpose::Retention => match (&run.spec.time_field, run.spec.cutoff) {
            (Some(f), Some(t)) => sel.older_than = Some((f.clone(), t)),
            _ => return w.fail("InvalidConfiguration", "a retention run needs cutoff and timeField".into()).await,
        },
        RunPurpose::Erasure if ds.spec.files.is_some() => {
            let ids = inputs.identifiers.clone().unwrap_or_default();
            let tpl = ds.spec.files.as_ref().and_then(|f| f.subject_path_template.clone());
            let Some(tpl) = tpl else {
                return w.fail("NoSubjectFields", "this files Dataset has no subjectPathTemplate".into()).await;
            };
            match crate::scrub::files::render_subject_path(&tpl, &ids) {
                Ok(Some(p)) => sel.subject = vec![(file_path_field(), vec![p.to_string_lossy().into_owned()])],
                Ok(None) => {
                    return w
                        .fail("NoSubjectFields", "the subject has no identifier the path template names".into())
                        .await;
                }
                Err(e) => return w.fail("InvalidConfiguration", e.to_string()).await,
            }
        }
        RunPurpose::Erasure => {
            let ids = inputs.identifiers.clone().unwrap_or_default();
            sel.subject = ds
                .spec
                .subject_fields
                .iter()
                .filter_map(|(t, col)| ids.get(t).map(|v| (col.clone(), vec![v.clone()])))
                .collect();
            match driver::subject_key_pattern(&ds.spec, &ids) {
                Ok(Some(p)) => sel.subject.push((key_field(), vec![p])),
                Ok(None) => {}
                Err(e) => return w.fail("InvalidConfiguration", e.to_string()).await,
            }
            if sel.subject.is_empty() {
                return w
                    .fail(
                        "NoSubjectFields",
                        "none of the subject's identifier types is a subject field of this Dataset".into(),
                    )
                    .await;
            }
        }
    }
    let action = driver::action(run.spec.action, &ds.spec, inputs.anonymization_salt.clone().unwrap_or_default());
    let db = match Driver::connect(&store.spec, &inputs.credentials).await {
        Ok(db) => db.for_dataset(&ds.spec),
        Err(e) if e.retryable() => return Err(e.into()),
        Err(e) => return w.fail(e.reason(), e.to_string()).await,
    };
    let through;
    (sel.guards, through) =
        neighbour_guards(&db, &ds, &sel.table, &neighbours, &action, &inputs, &subject_digests).await?;
    sel.guards.extend(db.reference_guards(&sel.table, &action).await?);

    if purpose == RunPurpose::Erasure {
        // Erasure order rests on declared relations; a foreign key the schema
        // shows but no Dataset declares is worth a warning, never silence.
        let bare = |t: &str| t.rsplit('.').next().unwrap_or(t).trim_matches('"').to_string();
        let found: Vec<(String, String)> =
            db.foreign_keys(&sel.table).await?.into_iter().map(|(c, p)| (bare(&c), bare(&p))).collect();
        let missing = crate::plan::erasure::undeclared(&relations, &found);
        if missing.is_empty() {
            w.clear("UndeclaredRelations");
        } else {
            let list: Vec<String> = missing.iter().map(|(c, p)| format!("{c} -> {p}")).collect();
            w.set(
                "UndeclaredRelations",
                true,
                "ForeignKeyNotDeclared",
                format!("foreign keys no Dataset relation declares: {}", list.join(", ")),
            );
        }
    }

    if !whole.is_empty() {
        // Nothing is touched; what would have been is counted as held.
        let open = Selection { held: vec![], guards: vec![], ..sel.clone() };
        let n = db.count(&open).await?;
        let at = now();
        w.st.plan.get_or_insert_with(|| RunPlan {
            cutoff: run.spec.cutoff,
            matching_records: Some(0),
            held_records: Some(n),
            holds: whole.clone(),
            ..RunPlan::default()
        });
        w.st.counts = Some(RunCounts { skipped_held: n, ..RunCounts::default() });
        w.st.phase = Some(RunPhase::Succeeded);
        w.st.completion_time = Some(at);
        let oldest = past_window(&db, &sel, run).await?;
        w.st.verification = Some(Verification {
            remaining: n,
            reason: Some(
                [format!("held by LegalHold {}", whole.join(", "))]
                    .into_iter()
                    .chain(uncertain)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            verified_at: at,
            oldest_remaining: oldest,
            newest_kept: None,
            locked: vec![],
        });
        w.clear("Stalled");
        w.set(
            "Succeeded",
            true,
            "Held",
            format!("LegalHold {} holds this data; nothing was deleted", whole.join(", ")),
        );
        w.flush().await?;
        return Ok(Ended::Done);
    }

    // The plan, recorded once, before anything changes.
    if w.st.plan.is_none() {
        w.st.phase = Some(RunPhase::Planning);
        let mut counts = match db.plan(&sel).await {
            Ok(c) => c,
            Err(e) if e.retryable() => return Err(e.into()),
            Err(e) => return w.fail(e.reason(), e.to_string()).await,
        };
        if matches!(action, Action::Anonymize { .. }) {
            // Records anonymized by an earlier run match, but have nothing left to do.
            // This also refuses rules the table cannot take, dry run or not.
            counts.selected = db.pending(&sel, &action).await?;
        }
        w.st.plan = Some(RunPlan {
            cutoff: run.spec.cutoff,
            total_records: Some(counts.total),
            matching_records: Some(counts.selected),
            held_records: Some(counts.held),
            partitions: vec![],
            holds: holds
                .iter()
                .filter(|h| h.spec.subjects.is_some())
                .map(|h| h.name_any())
                .chain(through.iter().filter(|n| !holds.iter().any(|h| h.name_any() == **n)).cloned())
                .collect(),
        });
        w.st.counts = Some(RunCounts {
            skipped_held: counts.held,
            skipped_minimum_retention: counts.under_minimum,
            skipped_referenced: counts.referenced,
            ..RunCounts::default()
        });
        w.flush().await?;
    }
    let plan = w.st.plan.clone().unwrap_or_default();
    let matching = plan.matching_records.unwrap_or(0);
    let total = plan.total_records.unwrap_or(0);
    let dry_run = run.spec.dry_run || ds.spec.dry_run;

    // The safety brake.
    let safety = &ds.spec.safety;
    let over_share = total > 0 && matching * 100 > i64::from(safety.max_delete_percent) * total;
    let over_count = safety.max_delete_records.is_some_and(|m| matching > m);
    let approver = run.annotations().get(APPROVED_BY).filter(|v| !v.trim().is_empty()).cloned();
    if !dry_run && (over_share || over_count) {
        match &approver {
            None => {
                let limit = match safety.max_delete_records {
                    Some(m) if over_count => format!("the limit of {m} records"),
                    _ => format!("{}% of the table", safety.max_delete_percent),
                };
                let msg = format!(
                    "the run would affect {matching} of {total} records, more than {limit}; nothing was deleted. Check the Dataset (is timestamps pointing at the right column?) and approve with: kubectl annotate scrubrun {} {APPROVED_BY}=<your name>",
                    run.name_any()
                );
                let first = w.st.phase != Some(RunPhase::AwaitingApproval);
                w.st.phase = Some(RunPhase::AwaitingApproval);
                w.set("Stalled", true, "BlastRadiusExceeded", msg);
                w.flush().await?;
                if first {
                    observer.stalled(&run.namespace().unwrap_or_default(), &ds.name_any());
                }
                return Ok(Ended::AwaitingApproval);
            }
            Some(who) => {
                w.st.approved_by = Some(who.clone());
                w.set("Stalled", false, "Approved", format!("approved by {who} for {matching} records"));
            }
        }
    }

    let started = w.st.start_time.unwrap_or_else(now);
    w.st.start_time = Some(started);
    if dry_run {
        let at = now();
        w.st.phase = Some(RunPhase::Succeeded);
        w.st.completion_time = Some(at);
        w.st.duration = Some(human((at - started).to_std().unwrap_or_default()));
        let c = w.st.counts.get_or_insert_with(RunCounts::default);
        c.affected = matching;
        w.set(
            "Succeeded",
            true,
            "DryRun",
            format!("dry run: {matching} records would be affected; nothing was changed"),
        );
        w.flush().await?;
        return Ok(Ended::Done);
    }
    let resumed = w.st.progress.is_some();
    let done_before = w.st.progress.as_ref().map_or(0, |p| p.records_done);
    w.st.phase = Some(RunPhase::Running);
    w.set("Succeeded", false, "Running", if resumed { "resumed from its checkpoint" } else { "running" });
    w.flush().await?;

    let limits = driver::dataset_limits(&store.spec.limits, &ds.spec);
    let (tx, mut rx) = tokio::sync::watch::channel(None::<crate::scrub::Progress>);
    let outcome = {
        let fut = db.run(&sel, &action, &limits, done_before, move |p| {
            let _ = tx.send(Some(p.clone()));
        });
        tokio::pin!(fut);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tokio::select! {
                r = &mut fut => break r,
                _ = tick.tick() => {
                    if rx.has_changed().unwrap_or(false) {
                        let p = rx.borrow_and_update().clone();
                        if let Some(p) = p {
                            w.st.progress = Some(RunProgress {
                                records_done: p.records_done,
                                batches: p.batches,
                                checkpoint: Some(format!("{} records in {} batches", p.records_done, p.batches)),
                                update_time: Some(now()),
                            });
                            if let Err(e) = w.flush().await {
                                tracing::warn!(run = %run.name_any(), error = %e, "cannot record progress");
                            }
                        }
                    }
                }
            }
        }
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) if e.retryable() => return Err(e.into()),
        Err(e) => {
            return w.fail(e.reason(), e.to_string()).await;
        }
    };
    // Verify: count again what the subject (or the window) still matches.
    let at = now();
    let mut referencing: Vec<String> = Vec::new();
    for g in sel.guards.iter().filter(|g| g.reason == GuardReason::Reference) {
        if !referencing.contains(&g.table.name.to_string()) {
            referencing.push(g.table.name.to_string());
        }
    }
    let locked: Vec<LockedObjects> = outcome.locked.iter().map(LockedObjects::from).collect();
    let lock_reason = LockedObjects::describe(&locked);
    let verification = match purpose {
        RunPurpose::Retention => Verification {
            remaining: outcome.remaining,
            reason: lock_reason
                .clone()
                .or_else(|| (outcome.remaining > 0).then(|| "records still match; the next run continues".to_string())),
            verified_at: at,
            oldest_remaining: match outcome.oldest_past_cutoff {
                Some(read) => read,
                None => past_window(&db, &sel, run).await?,
            },
            newest_kept: None,
            locked: locked.clone(),
        },
        RunPurpose::Erasure => {
            // What the action left undone, plus what minimum retention and holds kept.
            let everything = sel.with_kept();
            let now_selected = db.count(&sel).await?;
            let kept = db.count(&everything).await? - now_selected;
            let remaining = outcome.remaining + kept;
            let reason = if remaining == 0 {
                None
            } else if lock_reason.is_some() {
                lock_reason.clone()
            } else if let Some(t) = run.spec.minimum_retention_cutoff {
                Some(format!("under minimum retention (records newer than {})", t.to_rfc3339()))
            } else {
                // Which guards keep some of them: each, set aside, would let more go.
                let mut why = Vec::new();
                if !through.is_empty() && db.count(&sel.without_guards(GuardReason::Hold)).await? > now_selected {
                    why.push(format!(
                        "held by LegalHold {}: held rows of another Dataset refer to them",
                        through.join(", ")
                    ));
                }
                if !referencing.is_empty() && db.count(&sel.without_references()).await? > now_selected {
                    why.push(format!("{}; erased once nothing references them", still_referenced(&referencing)));
                }
                Some(if why.is_empty() { "held".to_string() } else { why.join("; ") })
            };
            // The newest record minimum retention keeps: erasable once it passes the minimum.
            let newest_kept = match (&run.spec.minimum_time_field, remaining > 0) {
                (Some(col), true) => db.extreme(&everything, col, true).await?,
                _ => None,
            };
            Verification { remaining, reason, verified_at: at, oldest_remaining: None, newest_kept, locked }
        }
    };
    let affected = if resumed {
        (matching - outcome.remaining).max(outcome.records_done - done_before)
    } else {
        outcome.records_done
    };
    let c = w.st.counts.get_or_insert_with(RunCounts::default);
    c.affected = affected;
    c.expiries_set += outcome.expiries_set;
    match action {
        Action::Delete => c.deleted = affected,
        Action::Anonymize { .. } => c.anonymized = affected,
    }
    w.st.progress = Some(RunProgress {
        records_done: affected,
        batches: outcome.batches,
        checkpoint: Some("complete".into()),
        update_time: Some(at),
    });
    w.st.partitions_dropped = outcome.partitions.clone();
    w.st.verification = Some(verification);
    w.st.phase = Some(RunPhase::Succeeded);
    w.st.completion_time = Some(at);
    let seconds = (at - started).to_std().unwrap_or_default();
    w.st.duration = Some(human(seconds));
    let done = format!(
        "{affected} records {}",
        match run.spec.action {
            ExpiryAction::Delete => "deleted",
            ExpiryAction::Anonymize => "anonymized",
        }
    );
    let referenced = w.st.counts.as_ref().map_or(0, |c| c.skipped_referenced);
    let message = match referenced {
        0 => done,
        n => format!("{done}; {n} kept: {}", still_referenced(&referencing)),
    };
    w.set("Succeeded", true, "Completed", message);
    w.clear("Failed");
    w.flush().await?;
    Ok(Ended::Done)
}

/// Why records a run selects are kept for `tables`' rows referencing them.
fn still_referenced(tables: &[String]) -> String {
    format!(
        "still referenced by rows of {} through a foreign key that neither cascades nor sets NULL",
        tables.join(", ")
    )
}

/// What the holds on referring Datasets keep of the run's table: for each
/// relation (or foreign key) from a held Dataset, which of its rows must stay as they are
/// (and so the records they refer to). Only a delete, or an anonymization
/// that rewrites a referenced column, reaches those rows.
///
/// A hold on the whole Dataset keeps every row of it; a hold naming
/// subjects keeps their rows, found by the Dataset's subject fields. Where
/// the run cannot tell a held subject's rows apart — a subject named by
/// digest on a retention pass, or this very subject in an erasure when the
/// Dataset has no field for its identifiers, or a Secret the run was not
/// given — every row of the Dataset is kept. On an erasure, a digest that
/// is not this subject's holds other subjects, whose rows do not refer to
/// this subject's records.
fn guards(
    referrers: &[(Referrer, Vec<LegalHold>)],
    action: &Action,
    inputs: &Inputs,
    subject_digests: &[String],
) -> (Vec<crate::scrub::Guard>, Vec<String>) {
    let (mut out, mut names) = (Vec::new(), Vec::<String>::new());
    for (r, on_it) in referrers.iter().filter(|(_, hs)| !hs.is_empty()) {
        let reaches = match action {
            Action::Delete => true,
            Action::Anonymize { rules, .. } => rules.iter().any(|f| r.references.contains(&f.field)),
        };
        if !reaches {
            continue;
        }
        let rows = held_rows(on_it, &r.dataset.spec.subject_fields, inputs, subject_digests);
        if rows.as_ref().is_some_and(|l| l.is_empty()) {
            // No held subject's row: the Dataset ties no row to a subject, or the holds name no one.
            continue;
        }
        out.push(crate::scrub::Guard {
            reason: GuardReason::Hold,
            table: r.table.clone(),
            columns: r.columns.clone(),
            references: r.references.clone(),
            rows,
            lookup: crate::scrub::Lookup::Unsettled,
        });
        for h in on_it {
            if !names.contains(&h.name_any()) {
                names.push(h.name_any());
            }
        }
    }
    (out, names)
}

/// The rows of a referring Dataset its holds keep, by its subject
/// fields; `None` for all of them (see [`guards`]).
fn held_rows(
    on_it: &[LegalHold],
    fields: &BTreeMap<String, crate::api::Identifier>,
    inputs: &Inputs,
    subject_digests: &[String],
) -> Option<Vec<(crate::api::Identifier, Vec<String>)>> {
    let by_field = |by_type: &BTreeMap<String, Vec<String>>| -> Vec<_> {
        by_type.iter().filter_map(|(t, v)| Some((fields.get(t)?.clone(), v.clone()))).collect()
    };
    let mut rows = Vec::new();
    for h in on_it {
        let s = h.spec.subjects.as_ref()?;
        // By digest: only an erasure knows a subject, and only its own digest matters.
        if !s.digests.is_empty() {
            let ids = inputs.identifiers.as_ref()?;
            if subject_digests.iter().any(|d| s.digests.contains(d)) {
                let own = by_field(&ids.iter().map(|(t, v)| (t.clone(), vec![v.clone()])).collect());
                if own.is_empty() {
                    return None;
                }
                rows.extend(own);
            }
        }
        if s.secret_ref.is_some() {
            let by_type = inputs.held.get(&h.name_any())?;
            let own = by_field(by_type);
            // Named only by types this Dataset has no field for, where it
            // has any: their rows are here, under identifiers the hold did
            // not give, and cannot be told apart, so all are kept.
            if own.is_empty() && !fields.is_empty() && by_type.values().any(|v| !v.is_empty()) {
                return None;
            }
            rows.extend(own);
        }
    }
    Some(rows)
}

/// The field name under which a Redis or S3 selection carries key patterns.
fn key_field() -> crate::api::Identifier {
    crate::api::Identifier::new(crate::scrub::redis::KEY_FIELD).expect("a valid identifier")
}

/// The field name under which a files selection carries directories.
fn file_path_field() -> crate::api::Identifier {
    crate::api::Identifier::new("path").expect("a valid identifier")
}

/// The oldest record still past a retention run's window, whatever kept it.
async fn past_window(db: &Driver, sel: &Selection, run: &ScrubRun) -> Result<Option<DateTime<Utc>>> {
    let Some((col, _)) = &sel.older_than else { return Ok(None) };
    if run.spec.purpose != RunPurpose::Retention {
        return Ok(None);
    }
    Ok(db.extreme(&sel.with_kept(), col, false).await?)
}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error::Other(s)
    }
}

/// Marks a run failed without executing it (something it needs is missing).
pub async fn fail(client: &Client, run: &ScrubRun, reason: &str, message: String) -> Result<()> {
    let mut w = Writer::new(client, run, Vec::new());
    w.st.observed_generation = run.metadata.generation;
    w.fail(reason, message).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{api::Identifier, scrub::FieldRule};

    fn orders() -> Referrer {
        let dataset: Dataset = serde_yaml::from_str(
            "apiVersion: lethe.dev/v1alpha1
kind: Dataset
metadata: {name: orders, namespace: shop}
spec:
  storeRef: {name: db}
  categories: [financial]
  table: {name: orders}
  subjectFields: {user_id: buyer, email: buyer_email}",
        )
        .unwrap();
        let table = crate::scrub::Table { schema: None, name: id("orders") };
        Referrer { dataset, table, columns: vec![id("customer_id")], references: vec![id("id")] }
    }

    fn id(s: &str) -> Identifier {
        Identifier::new(s).unwrap()
    }

    fn hold(name: &str, subjects: &str) -> LegalHold {
        serde_yaml::from_str(&format!(
            "apiVersion: lethe.dev/v1alpha1
kind: LegalHold
metadata: {{name: {name}, namespace: shop}}
spec: {{reason: r, datasets: [orders]{subjects}}}"
        ))
        .unwrap()
    }

    fn held(name: &str, t: &str, v: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
        [(name.to_string(), [(t.to_string(), vec![v.to_string()])].into())].into()
    }

    /// The rows a guard keeps: `None`, all of them.
    type Rows = Option<Vec<(Identifier, Vec<String>)>>;

    /// The rows each guard keeps, and the holds named.
    fn kept(holds: Vec<LegalHold>, action: &Action, inputs: &Inputs, digests: &[&str]) -> (Vec<Rows>, Vec<String>) {
        let digests: Vec<String> = digests.iter().map(|d| d.to_string()).collect();
        let (g, names) = guards(&[(orders(), holds)], action, inputs, &digests);
        for g in &g {
            assert_eq!(
                (g.table.name.as_str(), &g.columns, &g.references),
                ("orders", &vec![id("customer_id")], &vec![id("id")])
            );
        }
        (g.into_iter().map(|g| g.rows).collect(), names)
    }

    fn key(schema: Option<&str>, table: &str, columns: &[&str], references: &[&str]) -> crate::scrub::ReferencingKey {
        crate::scrub::ReferencingKey {
            schema: schema.map(String::from),
            table: table.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            references: references.iter().map(|c| c.to_string()).collect(),
            restricts: false,
            restricts_update: false,
        }
    }

    #[test]
    fn referrers_come_from_declared_relations_and_the_stores_foreign_keys() {
        let mut customers = orders().dataset;
        customers.metadata.name = Some("customers".into());
        customers.spec.table = Some(serde_yaml::from_str("{name: customers}").unwrap());
        let mut declared = orders().dataset;
        declared.spec.relations =
            vec![serde_yaml::from_str("{dataset: customers, columns: [customer_id], references: [id]}").unwrap()];
        let held = vec![hold("all", "")];
        let found = |neighbours: &[(Dataset, Vec<LegalHold>)], keys: &[crate::scrub::ReferencingKey]| {
            referrers(&customers, neighbours, keys)
                .map(|r| r.iter().map(|(r, _)| (r.columns.clone(), r.references.clone())).collect::<Vec<_>>())
        };
        let by = |c: &str, r: &str| (vec![id(c)], vec![id(r)]);
        let schemas = |neighbours: &[(Dataset, Vec<LegalHold>)], keys: &[crate::scrub::ReferencingKey]| {
            let r = referrers(&customers, neighbours, keys).unwrap();
            r.iter().map(|(r, _)| r.table.schema.clone()).collect::<Vec<_>>()
        };
        let keys = [
            key(None, "orders", &["customer_id"], &["id"]),
            key(None, "orders", &["billing_id"], &["id"]),
            key(Some("archive"), "orders", &["old_id"], &["id"]),
            key(None, "invoices", &["customer_id"], &["id"]),
        ];
        // The declared relation once, the undeclared key of its table beside it;
        // another schema's table and other tables are not this Dataset's.
        assert_eq!(
            found(&[(declared.clone(), held.clone())], &keys),
            Ok(vec![by("customer_id", "id"), by("billing_id", "id")])
        );
        // Without a hold, nothing to keep.
        assert_eq!(found(&[(declared.clone(), vec![])], &keys), Ok(vec![]));
        // A table named with its schema matches that schema's keys, and
        // those of the connection's schema (which may be the one it names);
        // each guard reads the table the key is on.
        let mut archived = orders().dataset;
        archived.spec.table = Some(serde_yaml::from_str("{schema: archive, name: orders}").unwrap());
        let archived = [(archived, held.clone())];
        let all = vec![by("customer_id", "id"), by("billing_id", "id"), by("old_id", "id")];
        assert_eq!(found(&archived, &keys), Ok(all));
        assert_eq!(schemas(&archived, &keys), [None, None, Some(id("archive"))]);
        let odd = [key(None, "orders", &["a b"], &["id"])];
        assert!(found(&[(declared, held)], &odd).unwrap_err().contains("cannot quote"));
    }

    const D: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

    #[test]
    fn holds_on_a_referring_dataset_guard_exactly_the_rows_they_hold() {
        let none = Inputs::default();
        let delete = Action::Delete;
        assert_eq!(kept(vec![], &delete, &none, &[]), (vec![], vec![]), "no hold, no guard");
        assert_eq!(kept(vec![hold("all", "")], &delete, &none, &[]), (vec![None], vec!["all".into()]));
        // Named in a Secret: their rows, by the referring Dataset's own fields.
        let by_secret = hold("fraud", ", subjects: {secretRef: {name: s}}");
        let inputs = Inputs { held: held("fraud", "email", "a@example.com"), ..Inputs::default() };
        let rows = vec![(id("buyer_email"), vec!["a@example.com".to_string()])];
        assert_eq!(kept(vec![by_secret.clone()], &delete, &inputs, &[]).0, vec![Some(rows.clone())]);
        // Identifiers it has no field for: the subject's rows are here under
        // others, so all are kept; so does a Secret not given.
        let phone = Inputs { held: held("fraud", "phone", "555"), ..Inputs::default() };
        assert_eq!(kept(vec![by_secret.clone()], &delete, &phone, &[]), (vec![None], vec!["fraud".into()]));
        assert_eq!(kept(vec![by_secret.clone()], &delete, &none, &[]).0, vec![None]);
        // By digest: a retention pass cannot tell the rows apart, so keeps all.
        let by_digest = hold("case", &format!(", subjects: {{digests: [\"{D}\"]}}"));
        assert_eq!(kept(vec![by_digest.clone()], &delete, &none, &[]).0, vec![None]);
        // An erasure: this subject's digest holds its rows; another's holds none of them.
        let subject = Inputs { identifiers: Some([("user_id".to_string(), "7".to_string())].into()), ..inputs };
        let own = vec![(id("buyer"), vec!["7".to_string()])];
        assert_eq!(kept(vec![by_digest.clone()], &delete, &subject, &[D]).0, vec![Some(own.clone())]);
        assert_eq!(kept(vec![by_digest.clone()], &delete, &subject, &["sha256:other"]).0, vec![]);
        let phone_subject =
            Inputs { identifiers: Some([("phone".to_string(), "555".to_string())].into()), ..Inputs::default() };
        assert_eq!(kept(vec![by_digest.clone()], &delete, &phone_subject, &[D]).0, vec![None]);
        // Several holds on one Dataset: the rows of each; one on all of it wins.
        let both = kept(vec![by_digest.clone(), by_secret.clone()], &delete, &subject, &[D]).0;
        assert_eq!(both, vec![Some([own, rows].concat())]);
        assert_eq!(kept(vec![by_secret, hold("all", "")], &delete, &subject, &[]).0, vec![None]);
        // An anonymization reaches referring rows only through a referenced column.
        let rule = |f: &str| FieldRule { field: id(f), strategy: crate::api::AnonymizeStrategy::Null, value: None };
        let names = Action::Anonymize { rules: vec![rule("name")], salt: String::new() };
        assert_eq!(kept(vec![hold("all", "")], &names, &none, &[]), (vec![], vec![]));
        let key = Action::Anonymize { rules: vec![rule("id")], salt: String::new() };
        assert_eq!(kept(vec![hold("all", "")], &key, &none, &[]).0, vec![None]);
    }
}
