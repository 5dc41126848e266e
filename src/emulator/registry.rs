//! The resource types the emulator serves: built-in kinds and the kinds of
//! registered CustomResourceDefinitions, with discovery and OpenAPI documents.

use std::{collections::BTreeMap, sync::Arc};

use serde_json::{Value, json};

use crate::schema::CompiledSchema;

/// One served resource type (one group/version/plural).
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Whether `/status` is a subresource (then status is ignored on the main resource).
    pub status_subresource: bool,
    /// Custom resources: the structural schema with compiled CEL rules.
    pub schema: Option<Arc<CompiledSchema>>,
    /// Printer columns: (name, type, jsonPath, priority).
    pub columns: Vec<Column>,
    /// Only read (Pods are written by the Job runner, not by clients).
    pub read_only: bool,
    /// Name of the CRD that registered it.
    pub crd: Option<String>,
}

#[derive(Clone)]
pub struct Column {
    pub name: String,
    pub type_: String,
    pub json_path: String,
    pub priority: i64,
    pub description: String,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    pub fn group_version(&self) -> (String, String) {
        (self.group.clone(), self.version.clone())
    }

    /// `plural.group` as in error messages (`datasets.lethe.dev`).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// `Kind.group` as in "is invalid" messages (`Dataset.lethe.dev`).
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() { self.kind.clone() } else { format!("{}.{}", self.kind, self.group) }
    }
}

fn builtin(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    short: &[&str],
    status: bool,
) -> ResourceType {
    ResourceType {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: vec![],
        status_subresource: status,
        schema: None,
        columns: vec![],
        read_only: false,
        crd: None,
    }
}

/// The built-in kinds Lethe and kubectl use.
pub fn builtins() -> Vec<ResourceType> {
    let mut pods = builtin("", "v1", "Pod", "pods", true, &["po"], true);
    pods.columns = vec![col("Status", "string", ".status.phase")];
    let mut jobs = builtin("batch", "v1", "Job", "jobs", true, &[], true);
    jobs.columns = vec![
        col("Status", "string", ".status.conditions[?(@.status==\"True\")].type"),
        col("Succeeded", "integer", ".status.succeeded"),
    ];
    let mut secrets = builtin("", "v1", "Secret", "secrets", true, &[], false);
    secrets.columns = vec![col("Type", "string", ".type")];
    let mut crds = builtin(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        &["crd", "crds"],
        true,
    );
    crds.columns = vec![col("Created At", "date", ".metadata.creationTimestamp")];
    let mut events = builtin("", "v1", "Event", "events", true, &["ev"], false);
    events.columns = vec![
        col("Type", "string", ".type"),
        col("Reason", "string", ".reason"),
        col("Object", "string", ".involvedObject.name"),
        col("Message", "string", ".message"),
    ];
    vec![
        builtin("", "v1", "Namespace", "namespaces", false, &["ns"], true),
        secrets,
        builtin("", "v1", "ConfigMap", "configmaps", true, &["cm"], false),
        builtin("", "v1", "ServiceAccount", "serviceaccounts", true, &["sa"], false),
        builtin("", "v1", "Service", "services", true, &["svc"], true),
        events,
        pods,
        builtin("events.k8s.io", "v1", "Event", "events", true, &["ev"], false),
        builtin("coordination.k8s.io", "v1", "Lease", "leases", true, &[], false),
        jobs,
        builtin("apps", "v1", "Deployment", "deployments", true, &["deploy"], true),
        builtin("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", true, &["netpol"], false),
        builtin("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", false, &[], false),
        builtin("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", false, &[], false),
        builtin("rbac.authorization.k8s.io", "v1", "Role", "roles", true, &[], false),
        builtin("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", true, &[], false),
        crds,
    ]
}

fn col(name: &str, type_: &str, path: &str) -> Column {
    Column { name: name.into(), type_: type_.into(), json_path: path.into(), priority: 0, description: String::new() }
}

/// Resource types declared by a CRD object (one per served version).
pub fn from_crd(crd: &Value) -> Result<Vec<ResourceType>, String> {
    let spec = crd.get("spec").ok_or("spec is required")?;
    let group = spec.get("group").and_then(Value::as_str).ok_or("spec.group is required")?;
    let names = spec.get("names").ok_or("spec.names is required")?;
    let kind = names.get("kind").and_then(Value::as_str).ok_or("spec.names.kind is required")?;
    let plural = names.get("plural").and_then(Value::as_str).ok_or("spec.names.plural is required")?;
    let expected = format!("{plural}.{group}");
    let name = crd.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    if name != expected {
        return Err(format!("metadata.name: Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"));
    }
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    let namespaced = spec.get("scope").and_then(Value::as_str) != Some("Cluster");
    let mut out = Vec::new();
    for v in spec.get("versions").and_then(Value::as_array).ok_or("spec.versions is required")? {
        if v.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let version = v.get("name").and_then(Value::as_str).ok_or("spec.versions[].name is required")?;
        let schema =
            v.pointer("/schema/openAPIV3Schema").cloned().ok_or("versions[].schema.openAPIV3Schema is required")?;
        let columns = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|cols| {
                cols.iter()
                    .map(|c| Column {
                        name: c.get("name").and_then(Value::as_str).unwrap_or("").into(),
                        type_: c.get("type").and_then(Value::as_str).unwrap_or("string").into(),
                        json_path: c.get("jsonPath").and_then(Value::as_str).unwrap_or("").into(),
                        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                        description: c.get("description").and_then(Value::as_str).unwrap_or("").into(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(ResourceType {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: names
                .get("singular")
                .and_then(Value::as_str)
                .map(String::from)
                .unwrap_or_else(|| kind.to_lowercase()),
            namespaced,
            short_names: strings(names.get("shortNames")),
            categories: strings(names.get("categories")),
            status_subresource: v.pointer("/subresources/status").is_some(),
            schema: Some(Arc::new(CompiledSchema::new(schema))),
            columns,
            read_only: false,
            crd: Some(expected.clone()),
        });
    }
    Ok(out)
}

/// `GET /apis/{group}/{version}` and `GET /api/v1`.
pub fn resource_list(group_version: &str, types: &[&ResourceType]) -> Value {
    let mut resources = Vec::new();
    for t in types {
        let verbs: Vec<&str> = if t.read_only {
            vec!["get", "list", "watch"]
        } else {
            vec!["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        };
        let mut r = json!({
            "name": t.plural, "singularName": t.singular, "namespaced": t.namespaced, "kind": t.kind, "verbs": verbs,
        });
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        resources.push(r);
        if t.status_subresource {
            resources.push(json!({"name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"]}));
        }
        if t.kind == "Pod" {
            resources.push(
                json!({"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]}),
            );
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

/// `GET /apis`.
pub fn group_list(types: &[&ResourceType]) -> Value {
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for t in types.iter().filter(|t| !t.group.is_empty()) {
        let versions = groups.entry(&t.group).or_default();
        if !versions.contains(&t.version.as_str()) {
            versions.push(&t.version);
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> =
                vs.iter().map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v})).collect();
            json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /openapi/v3`: the index of per-group-version documents.
pub fn openapi_index(group_versions: &[(String, String)]) -> Value {
    let mut paths = serde_json::Map::new();
    for (g, v) in group_versions {
        let key = if g.is_empty() { format!("api/{v}") } else { format!("apis/{g}/{v}") };
        paths.insert(key.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{key}")}));
    }
    json!({"paths": paths})
}

/// One group-version's OpenAPI v3 document: schemas with their GVK and the
/// paths kubectl inspects (a PATCH with `fieldValidation` means the server
/// validates fields, so kubectl leaves it to the server).
pub fn openapi_document(types: &[&ResourceType]) -> Value {
    let mut schemas = serde_json::Map::new();
    let mut paths = serde_json::Map::new();
    for t in types {
        let name = format!("{}.{}.{}", reverse_domain(&t.group), t.version, t.kind);
        let mut schema = match &t.schema {
            Some(s) => s.schema.clone(),
            None => json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        };
        if let Some(obj) = schema.as_object_mut() {
            let props = obj.entry("properties").or_insert_with(|| json!({}));
            if let Some(props) = props.as_object_mut() {
                props.entry("apiVersion").or_insert_with(|| json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
                props.entry("kind").or_insert_with(|| json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
                props.insert("metadata".into(), json!({"type": "object", "description": "Standard object's metadata.", "x-kubernetes-preserve-unknown-fields": true}));
            }
            obj.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": t.group, "version": t.version, "kind": t.kind}]),
            );
        }
        schemas.insert(name.clone(), schema);
        let gvk = json!({"group": t.group, "version": t.version, "kind": t.kind});
        let base =
            if t.group.is_empty() { format!("/api/{}", t.version) } else { format!("/apis/{}/{}", t.group, t.version) };
        let item_path = if t.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", t.plural)
        } else {
            format!("{base}/{}/{{name}}", t.plural)
        };
        let reference = json!({"$ref": format!("#/components/schemas/{name}")});
        let params = json!([
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        ]);
        let op = |verb: &str| {
            json!({
                "operationId": format!("{verb}{}", t.kind),
                "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": params,
                "requestBody": {"content": {"application/json": {"schema": reference}}},
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}}
            })
        };
        paths.insert(
            item_path,
            json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas}
    })
}

/// `lethe.dev` → `dev.lethe`, the way Kubernetes names OpenAPI definitions.
fn reverse_domain(group: &str) -> String {
    if group.is_empty() {
        return "io.k8s.api.core".into();
    }
    group.split('.').rev().collect::<Vec<_>>().join(".")
}
