//! The emulator's object store: every object as JSON, one monotonic
//! resourceVersion, a bounded history of watch events, finalizers,
//! ownerReference garbage collection and CRD registration.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
};

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::registry::{self, ResourceType};
use crate::schema::{self, UnknownFields};

/// Watch events kept for watchers that resume from a resourceVersion; older
/// resourceVersions get `410 Gone` and relist.
const HISTORY: usize = 50_000;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: None }
    }

    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        ApiError::new(404, "NotFound", format!("{} \"{name}\" not found", rt.qualified()))
            .with_details(json!({"name": name, "group": rt.group, "kind": rt.plural}))
    }

    fn with_details(mut self, d: Value) -> Self {
        self.details = Some(d);
        self
    }

    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(&self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Debug)]
pub struct WatchEvent {
    pub type_key: String,
    pub namespace: String,
    pub kind: EventType,
    pub object: Value,
    pub rv: u64,
}

/// How unknown fields and dry runs are handled on a write.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub unknown: UnknownFields,
}

type ObjKey = (String, String, String);

pub struct Store {
    types: Vec<Arc<ResourceType>>,
    objects: BTreeMap<ObjKey, Value>,
    rv: u64,
    history: VecDeque<Arc<WatchEvent>>,
    /// Watches from a resourceVersion before this get `410 Gone`.
    compacted: u64,
    tx: broadcast::Sender<Arc<WatchEvent>>,
}

pub fn type_key(rt: &ResourceType) -> String {
    format!("{}/{}/{}", rt.group, rt.version, rt.plural)
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str)
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(16_384);
        let mut s = Store {
            types: registry::builtins().into_iter().map(Arc::new).collect(),
            objects: BTreeMap::new(),
            rv: 1,
            history: VecDeque::new(),
            compacted: 0,
            tx,
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let rt = s.find("", "v1", "namespaces").expect("namespaces are built in");
            let opts = WriteOptions { dry_run: false, unknown: UnknownFields::Prune };
            s.create(&rt, "", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}), opts)
                .expect("initial namespaces");
        }
        s
    }

    pub fn types(&self) -> Vec<Arc<ResourceType>> {
        self.types.clone()
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types.iter().find(|t| t.group == group && t.version == version && t.plural == plural).cloned()
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WatchEvent>> {
        self.tx.subscribe()
    }

    /// Events after `rv` for a watcher resuming there; `None` if `rv` is older
    /// than the history kept (the watcher must relist: 410 Gone).
    pub fn events_since(&self, rv: u64) -> Option<Vec<Arc<WatchEvent>>> {
        if rv < self.compacted {
            return None;
        }
        Some(self.history.iter().filter(|e| e.rv > rv).cloned().collect())
    }

    /// Forgets the watch history, as etcd compaction does: watchers resuming
    /// from an older resourceVersion get `410 Gone` and must relist.
    pub fn compact(&mut self) {
        self.compacted = self.rv;
        self.history.clear();
    }

    fn emit(&mut self, rt: &ResourceType, namespace: &str, kind: EventType, object: Value) {
        let ev = Arc::new(WatchEvent {
            type_key: type_key(rt),
            namespace: namespace.to_string(),
            kind,
            rv: self.rv,
            object,
        });
        if self.history.len() >= HISTORY
            && let Some(old) = self.history.pop_front()
        {
            self.compacted = old.rv;
        }
        self.history.push_back(ev.clone());
        let _ = self.tx.send(ev);
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&(type_key(rt), ns.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// Objects of a type, optionally in one namespace, in name order.
    pub fn list(&self, rt: &ResourceType, ns: Option<&str>) -> Vec<Value> {
        let key = type_key(rt);
        let start = (key.clone(), ns.unwrap_or("").to_string(), String::new());
        self.objects
            .range(start..)
            .take_while(|((k, n, _), _)| *k == key && ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn check_namespace(&self, rt: &ResourceType, ns: &str) -> Result<(), ApiError> {
        if !rt.namespaced {
            return Ok(());
        }
        let nsrt = self.find("", "v1", "namespaces").expect("namespaces are built in");
        match self.objects.get(&(type_key(&nsrt), String::new(), ns.to_string())) {
            None => Err(ApiError::new(404, "NotFound", format!("namespaces \"{ns}\" not found"))),
            Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => Err(ApiError::new(
                403,
                "Forbidden",
                format!(
                    "{} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    rt.qualified()
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Validates a custom resource against its schema (pruning or rejecting
    /// unknown fields, applying defaults) and CEL rules.
    fn admit(
        &self,
        rt: &ResourceType,
        obj: &mut Value,
        old: Option<&Value>,
        opts: WriteOptions,
    ) -> Result<(), ApiError> {
        let Some(schema) = &rt.schema else { return Ok(()) };
        let mut errors = schema::check_structure(&schema.schema, obj, opts.unknown);
        if errors.is_empty() {
            errors = schema.check_cel(obj, old);
        }
        if errors.is_empty() {
            return Ok(());
        }
        let name = meta_str(obj, "name").unwrap_or("").to_string();
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| {
                let text = e.to_string();
                let message = text.strip_prefix(&format!("{}: ", e.path)).unwrap_or(&text).to_string();
                json!({"reason": "FieldValueInvalid", "message": message, "field": e.path})
            })
            .collect();
        let list = errors.iter().map(ToString::to_string).collect::<Vec<_>>();
        let message = if list.len() == 1 {
            format!("{} \"{name}\" is invalid: {}", rt.qualified_kind(), list[0])
        } else {
            format!("{} \"{name}\" is invalid: [{}]", rt.qualified_kind(), list.join(", "))
        };
        Err(ApiError::new(422, "Invalid", message)
            .with_details(json!({"name": name, "group": rt.group, "kind": rt.kind, "causes": causes})))
    }

    fn prepare_common(&self, rt: &ResourceType, obj: &mut Value, ns: &str) -> Result<(), ApiError> {
        let Some(map) = obj.as_object_mut() else {
            return Err(ApiError::new(400, "BadRequest", "the body must be a JSON object"));
        };
        map.insert("apiVersion".into(), json!(rt.api_version()));
        map.insert("kind".into(), json!(rt.kind));
        let meta = map.entry("metadata").or_insert_with(|| json!({}));
        if !meta.is_object() {
            return Err(ApiError::new(400, "BadRequest", "metadata must be an object"));
        }
        if rt.namespaced {
            match meta.get("namespace").and_then(Value::as_str) {
                Some(given) if !given.is_empty() && given != ns => {
                    return Err(ApiError::new(
                        400,
                        "BadRequest",
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => meta["namespace"] = json!(ns),
            }
        } else if let Some(m) = meta.as_object_mut() {
            m.remove("namespace");
        }
        if rt.kind == "Secret" && rt.group.is_empty() {
            fold_string_data(map);
        }
        Ok(())
    }

    pub fn create(
        &mut self,
        rt: &Arc<ResourceType>,
        ns: &str,
        mut obj: Value,
        opts: WriteOptions,
    ) -> Result<Value, ApiError> {
        self.prepare_common(rt, &mut obj, ns)?;
        let ns = if rt.namespaced { ns } else { "" };
        if meta_str(&obj, "name").is_none_or(str::is_empty) {
            match meta_str(&obj, "generateName") {
                Some(prefix) => {
                    let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..5].to_string();
                    obj["metadata"]["name"] = json!(format!("{prefix}{suffix}"));
                }
                None => {
                    return Err(ApiError::new(
                        422,
                        "Invalid",
                        format!(
                            "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                            rt.qualified_kind()
                        ),
                    ));
                }
            }
        }
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        self.check_namespace(rt, ns)?;
        let key = (type_key(rt), ns.to_string(), name.clone());
        if self.objects.contains_key(&key) {
            return Err(ApiError::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", rt.qualified()))
                .with_details(json!({"name": name, "group": rt.group, "kind": rt.plural})));
        }
        if rt.status_subresource && rt.schema.is_some() {
            // Status is the controller's; a create cannot set it.
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        self.admit(rt, &mut obj, None, opts)?;
        let crd_types = if rt.kind == "CustomResourceDefinition" {
            Some(registry::from_crd(&obj).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("CustomResourceDefinition.apiextensions.k8s.io \"{name}\" is invalid: {e}"),
                )
            })?)
        } else {
            None
        };
        if opts.dry_run {
            return Ok(obj);
        }
        let rv = self.next_rv();
        let meta = obj["metadata"].as_object_mut().expect("metadata is an object");
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now()));
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.insert("generation".into(), json!(1));
        meta.remove("deletionTimestamp");
        if rt.kind == "Namespace" && rt.group.is_empty() {
            obj["status"] = json!({"phase": "Active"});
        }
        if rt.kind == "Job" && rt.group == "batch" {
            default_job(&mut obj);
        }
        if let Some(types) = crd_types {
            self.register(&name, types, &mut obj);
        }
        self.objects.insert(key, obj.clone());
        self.emit(rt, ns, EventType::Added, obj.clone());
        self.mirror_event(rt, ns, &obj);
        Ok(obj)
    }

    /// An `events.k8s.io/v1` Event is also a `core/v1` Event, as on a real
    /// API server (one storage, two versions): `kubectl get events` and
    /// `kubectl describe` read the core form.
    fn mirror_event(&mut self, rt: &ResourceType, ns: &str, ev: &Value) {
        if rt.group != "events.k8s.io" || rt.kind != "Event" {
            return;
        }
        let Some(core) = self.types.iter().find(|t| t.group.is_empty() && t.kind == "Event").cloned() else { return };
        let name = meta_str(ev, "name").unwrap_or_default().to_string();
        let key = (type_key(&core), ns.to_string(), name.clone());
        let time = ev.get("eventTime").cloned().filter(|v| !v.is_null()).unwrap_or_else(|| json!(now()));
        let last = ev.pointer("/series/lastObservedTime").cloned().unwrap_or_else(|| time.clone());
        let existed = self.objects.get(&key).cloned();
        let mut meta = ev["metadata"].clone();
        let rv = self.next_rv();
        meta["resourceVersion"] = json!(rv.to_string());
        if let Some(old) = &existed {
            meta["uid"] = old["metadata"]["uid"].clone();
        }
        let obj = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": meta,
            "involvedObject": ev.get("regarding").cloned().unwrap_or(Value::Null),
            "reason": ev.get("reason").cloned().unwrap_or(Value::Null),
            "message": ev.get("note").cloned().unwrap_or(Value::Null),
            "type": ev.get("type").cloned().unwrap_or(Value::Null),
            "source": {"component": ev.get("reportingController").cloned().unwrap_or(Value::Null)},
            "reportingComponent": ev.get("reportingController").cloned().unwrap_or(Value::Null),
            "reportingInstance": ev.get("reportingInstance").cloned().unwrap_or(Value::Null),
            "action": ev.get("action").cloned().unwrap_or(Value::Null),
            "count": ev.pointer("/series/count").cloned().unwrap_or(json!(1)),
            "firstTimestamp": time,
            "lastTimestamp": last,
            "eventTime": ev.get("eventTime").cloned().unwrap_or(Value::Null),
        });
        self.objects.insert(key, obj.clone());
        let kind = if existed.is_some() { EventType::Modified } else { EventType::Added };
        self.emit(&core, ns, kind, obj);
    }

    fn register(&mut self, crd_name: &str, types: Vec<ResourceType>, crd: &mut Value) {
        self.types.retain(|t| t.crd.as_deref() != Some(crd_name));
        let accepted = crd.pointer("/spec/names").cloned().unwrap_or_else(|| json!({}));
        self.types.extend(types.into_iter().map(Arc::new));
        let t = now();
        crd["status"] = json!({
            "acceptedNames": accepted,
            "storedVersions": crd.pointer("/spec/versions").and_then(Value::as_array).map(|vs| vs.iter().filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true)).filter_map(|v| v.get("name").cloned()).collect::<Vec<_>>()).unwrap_or_default(),
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": t},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": t},
            ]
        });
    }

    /// Replaces an object (PUT), or only its status with `status_only`.
    pub fn update(
        &mut self,
        rt: &Arc<ResourceType>,
        ns: &str,
        name: &str,
        mut obj: Value,
        status_only: bool,
        opts: WriteOptions,
    ) -> Result<Value, ApiError> {
        let ns = if rt.namespaced { ns } else { "" };
        self.prepare_common(rt, &mut obj, ns)?;
        if meta_str(&obj, "name").is_some_and(|n| n != name) {
            return Err(ApiError::new(400, "BadRequest", "the name of the object does not match the name on the URL"));
        }
        obj["metadata"]["name"] = json!(name);
        let key = (type_key(rt), ns.to_string(), name.to_string());
        let old = self.objects.get(&key).cloned().ok_or_else(|| ApiError::not_found(rt, name))?;
        if let Some(given) = meta_str(&obj, "resourceVersion")
            && !given.is_empty()
            && Some(given) != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!("Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again", rt.qualified()),
            )
            .with_details(json!({"name": name, "group": rt.group, "kind": rt.plural})));
        }
        let mut new = if status_only {
            // Only status changes through /status.
            let mut n = old.clone();
            match obj.get("status") {
                Some(s) => n["status"] = s.clone(),
                None => {
                    if let Some(m) = n.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            // Server-side apply to /status records its managers too.
            if let Some(mf) = obj.pointer("/metadata/managedFields") {
                n["metadata"]["managedFields"] = mf.clone();
            }
            n
        } else {
            if rt.status_subresource {
                // Status is ignored on the main resource.
                match old.get("status") {
                    Some(s) => obj["status"] = s.clone(),
                    None => {
                        if let Some(m) = obj.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            obj
        };
        // The server owns these.
        for field in ["uid", "creationTimestamp", "deletionTimestamp", "generation"] {
            match old["metadata"].get(field) {
                Some(v) => new["metadata"][field] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            // Finalizers may only be removed once deletion has started.
            let old_f = old.pointer("/metadata/finalizers").and_then(Value::as_array).cloned().unwrap_or_default();
            let new_f = new.pointer("/metadata/finalizers").and_then(Value::as_array).cloned().unwrap_or_default();
            if new_f.iter().any(|f| !old_f.contains(f)) {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    format!(
                        "{} \"{name}\" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted",
                        rt.qualified_kind()
                    ),
                ));
            }
        }
        self.admit(rt, &mut new, Some(&old), opts)?;
        let spec_changed = strip_meta_status(&new) != strip_meta_status(&old);
        if spec_changed {
            let g = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
            new["metadata"]["generation"] = json!(g + 1);
        }
        let crd_types = if rt.kind == "CustomResourceDefinition" && !status_only {
            Some(registry::from_crd(&new).map_err(|e| ApiError::new(422, "Invalid", e))?)
        } else {
            None
        };
        if opts.dry_run {
            return Ok(new);
        }
        if without_managed_fields(&new) == without_managed_fields(&old) {
            // Nothing changed: no new resourceVersion, no event.
            return Ok(old);
        }
        let rv = self.next_rv();
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        if let Some(types) = crd_types {
            self.register(name, types, &mut new);
        }
        let finalizers_empty =
            new.pointer("/metadata/finalizers").and_then(Value::as_array).is_none_or(|f| f.is_empty());
        if new.pointer("/metadata/deletionTimestamp").is_some() && finalizers_empty {
            self.objects.insert(key, new);
            return Ok(self.remove(rt, ns, name).unwrap_or(Value::Null));
        }
        self.objects.insert(key, new.clone());
        self.emit(rt, ns, EventType::Modified, new.clone());
        self.mirror_event(rt, ns, &new);
        Ok(new)
    }

    /// Starts deletion: with finalizers the object only gets a
    /// deletionTimestamp; without, it is removed and its dependents collected.
    pub fn delete(
        &mut self,
        rt: &Arc<ResourceType>,
        ns: &str,
        name: &str,
        orphan: bool,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let ns = if rt.namespaced { ns } else { "" };
        let key = (type_key(rt), ns.to_string(), name.to_string());
        let obj = self.objects.get(&key).cloned().ok_or_else(|| ApiError::not_found(rt, name))?;
        if dry_run {
            return Ok(obj);
        }
        let has_finalizers =
            obj.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if obj.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(obj);
            }
            let mut o = obj;
            o["metadata"]["deletionTimestamp"] = json!(now());
            o["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            o["metadata"]["resourceVersion"] = json!(self.next_rv().to_string());
            self.objects.insert(key, o.clone());
            self.emit(rt, ns, EventType::Modified, o.clone());
            if rt.kind == "Namespace" && rt.group.is_empty() {
                self.delete_namespace_contents(name);
            }
            return Ok(o);
        }
        if orphan {
            self.orphan_dependents(&obj);
        }
        self.remove(rt, ns, name).ok_or_else(|| ApiError::not_found(rt, name))
    }

    fn remove(&mut self, rt: &ResourceType, ns: &str, name: &str) -> Option<Value> {
        let key = (type_key(rt), ns.to_string(), name.to_string());
        let mut obj = self.objects.remove(&key)?;
        obj["metadata"]["resourceVersion"] = json!(self.next_rv().to_string());
        self.emit(rt, ns, EventType::Deleted, obj.clone());
        if rt.kind == "CustomResourceDefinition" {
            self.unregister(name);
        }
        if rt.kind == "Namespace" && rt.group.is_empty() {
            self.delete_namespace_contents(name);
        }
        if let Some(uid) = meta_str(&obj, "uid").map(String::from) {
            self.collect_dependents(&uid);
        }
        Some(obj)
    }

    fn unregister(&mut self, crd_name: &str) {
        let gone: Vec<Arc<ResourceType>> =
            self.types.iter().filter(|t| t.crd.as_deref() == Some(crd_name)).cloned().collect();
        for rt in &gone {
            for obj in self.list(rt, None) {
                let ns = meta_str(&obj, "namespace").unwrap_or("").to_string();
                let name = meta_str(&obj, "name").unwrap_or("").to_string();
                self.remove(rt, &ns, &name);
            }
        }
        self.types.retain(|t| t.crd.as_deref() != Some(crd_name));
    }

    fn delete_namespace_contents(&mut self, ns: &str) {
        let keys: Vec<ObjKey> = self.objects.keys().filter(|(_, n, _)| n == ns).cloned().collect();
        for (tk, n, name) in keys {
            if let Some(rt) = self.types.iter().find(|t| type_key(t) == tk).cloned() {
                let _ = self.delete(&rt, &n, &name, false, false);
            }
        }
    }

    /// Background garbage collection: objects owned by `uid` are deleted.
    fn collect_dependents(&mut self, uid: &str) {
        let dependents: Vec<ObjKey> =
            self.objects.iter().filter(|(_, o)| owned_by(o, uid)).map(|(k, _)| k.clone()).collect();
        for (tk, ns, name) in dependents {
            if let Some(rt) = self.types.iter().find(|t| type_key(t) == tk).cloned() {
                let _ = self.delete(&rt, &ns, &name, false, false);
            }
        }
    }

    fn orphan_dependents(&mut self, owner: &Value) {
        let Some(uid) = meta_str(owner, "uid").map(String::from) else { return };
        let keys: Vec<ObjKey> =
            self.objects.iter().filter(|(_, o)| owned_by(o, &uid)).map(|(k, _)| k.clone()).collect();
        for key in keys {
            let Some(rt) = self.types.iter().find(|t| type_key(t) == key.0).cloned() else { continue };
            let mut o = self.objects[&key].clone();
            if let Some(refs) = o.pointer_mut("/metadata/ownerReferences").and_then(Value::as_array_mut) {
                refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()));
            }
            o["metadata"]["resourceVersion"] = json!(self.next_rv().to_string());
            self.objects.insert(key.clone(), o.clone());
            self.emit(&rt, &key.1, EventType::Modified, o);
        }
    }
}

/// What the API server defaults on a Job: the selector by controller uid,
/// the matching template labels, and the retry and completion counts.
fn default_job(job: &mut Value) {
    let uid = meta_str(job, "uid").unwrap_or_default().to_string();
    let name = meta_str(job, "name").unwrap_or_default().to_string();
    let spec = job.as_object_mut().expect("object").entry("spec").or_insert_with(|| json!({}));
    if spec.get("selector").is_none() {
        spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    }
    for (k, v) in [("backoffLimit", 6), ("completions", 1), ("parallelism", 1)] {
        if spec.get(k).is_none() {
            spec[k] = json!(v);
        }
    }
    let labels = spec
        .as_object_mut()
        .expect("object")
        .entry("template")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .map(|t| t.entry("metadata").or_insert_with(|| json!({})))
        .and_then(|m| m.as_object_mut())
        .map(|m| m.entry("labels").or_insert_with(|| json!({})));
    if let Some(Value::Object(labels)) = labels {
        labels.insert("batch.kubernetes.io/controller-uid".into(), json!(uid));
        labels.insert("controller-uid".into(), json!(uid));
        labels.insert("batch.kubernetes.io/job-name".into(), json!(name));
        labels.insert("job-name".into(), json!(name));
    }
}

fn owned_by(obj: &Value, uid: &str) -> bool {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| refs.iter().any(|r| r.get("uid").and_then(Value::as_str) == Some(uid)))
}

fn without_managed_fields(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
        m.remove("resourceVersion");
    }
    o
}

/// Everything but metadata and status: what bumps `generation`.
fn strip_meta_status(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    o
}

/// A Secret's `stringData` is write-only: folded into `data` as base64.
fn fold_string_data(secret: &mut serde_json::Map<String, Value>) {
    use base64::Engine;
    let Some(Value::Object(sd)) = secret.remove("stringData") else { return };
    let data = secret.entry("data").or_insert_with(|| json!({}));
    if let Some(data) = data.as_object_mut() {
        for (k, v) in sd {
            let text = v.as_str().map(String::from).unwrap_or_else(|| v.to_string());
            data.insert(k, json!(base64::engine::general_purpose::STANDARD.encode(text)));
        }
    }
}
