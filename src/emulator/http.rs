//! The Kubernetes REST protocol over HTTP: discovery, OpenAPI, CRUD, PATCH,
//! watch streams, Table output and Pod logs.

// Helpers return a ready error response as their `Err`; it is built once per failed request.
#![allow(clippy::result_large_err)]

use std::{collections::HashMap, convert::Infallible, sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::Response,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{
    Shared, patch, rbac,
    registry::{self, ResourceType},
    select::{FieldSelector, LabelSelector},
    store::{ApiError, EventType, WriteOptions, type_key},
    table,
};
use crate::schema::UnknownFields;

/// The Kubernetes version reported: the installed kubectl dispatcher picks
/// its bundled client by this minor version.
pub const MINOR: &str = "33";

fn respond(code: u16, body: &Value) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap_or_default()))
        .expect("valid response")
}

fn error(e: ApiError) -> Response {
    respond(e.code, &e.status())
}

fn bad_request(msg: impl Into<String>) -> Response {
    error(ApiError::new(400, "BadRequest", msg))
}

/// The parts of a resource URL.
struct Target {
    rt: Arc<ResourceType>,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

pub async fn handle(shared: Shared, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().trim_end_matches('/').to_string();
    let query: HashMap<String, String> =
        uri.query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    tracing::debug!(%method, %uri, "request");

    match (method.clone(), segs.as_slice()) {
        (Method::GET, ["version"]) => {
            return respond(
                200,
                &json!({
                    "major": "1", "minor": MINOR, "gitVersion": format!("v1.{MINOR}.0-lethe-emulator"),
                    "gitCommit": "", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                    "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"
                }),
            );
        }
        (Method::GET, ["healthz" | "readyz" | "livez"]) => {
            return Response::builder().status(200).body(Body::from("ok")).expect("valid response");
        }
        (Method::GET, ["api"]) => {
            return respond(
                200,
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
            );
        }
        (Method::GET, ["apis"]) => {
            let types = shared.store.lock().expect("store lock").types();
            let refs: Vec<&ResourceType> = types.iter().map(AsRef::as_ref).collect();
            return respond(200, &registry::group_list(&refs));
        }
        (Method::GET, ["api", v]) => return discovery(&shared, "", v),
        (Method::GET, ["apis", g, v]) => return discovery(&shared, g, v),
        (Method::GET, ["apis", g]) => {
            let types = shared.store.lock().expect("store lock").types();
            let refs: Vec<&ResourceType> = types.iter().filter(|t| t.group == *g).map(AsRef::as_ref).collect();
            let list = registry::group_list(&refs);
            return match list["groups"].get(0) {
                Some(group) => {
                    let mut group = group.clone();
                    group["kind"] = json!("APIGroup");
                    group["apiVersion"] = json!("v1");
                    respond(200, &group)
                }
                None => error(ApiError::new(404, "NotFound", "the server could not find the requested resource")),
            };
        }
        (Method::GET, ["openapi", "v3"]) => {
            let types = shared.store.lock().expect("store lock").types();
            let mut gvs: Vec<(String, String)> = types.iter().map(|t| t.group_version()).collect();
            gvs.sort();
            gvs.dedup();
            return respond(200, &registry::openapi_index(&gvs));
        }
        (Method::GET, ["openapi", "v3", "api", v]) => return openapi(&shared, "", v),
        (Method::GET, ["openapi", "v3", "apis", g, v]) => return openapi(&shared, g, v),
        _ => {}
    }

    let target = match resolve(&shared, &segs) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    if shared.rbac.load(std::sync::atomic::Ordering::Relaxed)
        && let Some((sa_ns, sa_name)) =
            rbac::service_account(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()))
    {
        let watching = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
        let verb = match (&method, target.name.is_some()) {
            (&Method::GET, _) if watching => "watch",
            (&Method::GET, true) => "get",
            (&Method::GET, false) => "list",
            (&Method::POST, _) => "create",
            (&Method::PUT, _) => "update",
            (&Method::PATCH, _) => "patch",
            (&Method::DELETE, true) => "delete",
            (&Method::DELETE, false) => "deletecollection",
            _ => "unknown",
        };
        let attrs = rbac::Attributes {
            verb,
            group: &target.rt.group,
            resource: &target.rt.plural,
            subresource: target.sub.as_deref(),
            namespace: target.namespace.as_deref(),
            name: target.name.as_deref(),
        };
        let allowed = rbac::allowed(&shared.store.lock().expect("store lock"), &sa_ns, &sa_name, &attrs);
        if !allowed {
            let message = rbac::forbidden_message(&sa_ns, &sa_name, &attrs);
            tracing::warn!(%message, "forbidden");
            shared.denied.lock().expect("denied lock").push(message.clone());
            return error(ApiError::new(403, "Forbidden", message));
        }
        shared.allowed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let wants_table = accept.contains("as=Table");
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");

    match (method, target.name.is_some(), target.sub.as_deref()) {
        (Method::GET, false, None) => {
            if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) {
                watch(shared, target, &query)
            } else {
                list(&shared, &target, &query, wants_table)
            }
        }
        (Method::GET, true, None | Some("status")) => {
            let store = shared.store.lock().expect("store lock");
            match store.get(&target.rt, target.namespace.as_deref().unwrap_or(""), target.name.as_deref().unwrap_or(""))
            {
                Ok(obj) if wants_table => {
                    respond(200, &table::table(&target.rt, &[obj], &store.resource_version().to_string(), None))
                }
                Ok(obj) => respond(200, &obj),
                Err(e) => error(e),
            }
        }
        (Method::GET, true, Some("log")) if target.rt.kind == "Pod" => {
            let key = format!("{}/{}", target.namespace.as_deref().unwrap_or(""), target.name.as_deref().unwrap_or(""));
            let exists = {
                let store = shared.store.lock().expect("store lock");
                store.get(&target.rt, target.namespace.as_deref().unwrap_or(""), target.name.as_deref().unwrap_or(""))
            };
            match exists {
                Ok(_) => {
                    let logs = shared.logs.lock().expect("log lock").get(&key).cloned().unwrap_or_default();
                    Response::builder()
                        .status(200)
                        .header(header::CONTENT_TYPE, "text/plain")
                        .body(Body::from(logs))
                        .expect("valid response")
                }
                Err(e) => error(e),
            }
        }
        (Method::POST, false, None) => {
            if target.rt.read_only {
                return error(ApiError::new(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                ));
            }
            let obj: Value = match parse_body(&body, content_type) {
                Ok(v) => v,
                Err(r) => return r,
            };
            let opts = write_options(&query);
            let mut store = shared.store.lock().expect("store lock");
            match store.create(&target.rt, target.namespace.as_deref().unwrap_or(""), obj, opts) {
                Ok(o) => respond(201, &o),
                Err(e) => error(e),
            }
        }
        (Method::PUT, true, sub @ (None | Some("status"))) => {
            let obj: Value = match parse_body(&body, content_type) {
                Ok(v) => v,
                Err(r) => return r,
            };
            let opts = write_options(&query);
            let mut store = shared.store.lock().expect("store lock");
            let ns = target.namespace.as_deref().unwrap_or("");
            match store.update(&target.rt, ns, target.name.as_deref().unwrap_or(""), obj, sub.is_some(), opts) {
                Ok(o) => respond(200, &o),
                Err(e) => error(e),
            }
        }
        (Method::PATCH, true, sub @ (None | Some("status"))) => {
            patch_object(&shared, &target, sub, content_type, &body, &query)
        }
        (Method::DELETE, true, None) => {
            let opts: Value =
                if body.is_empty() { json!({}) } else { serde_json::from_slice(&body).unwrap_or(json!({})) };
            let policy = query
                .get("propagationPolicy")
                .cloned()
                .or_else(|| opts.get("propagationPolicy").and_then(Value::as_str).map(String::from));
            let dry_run = query.contains_key("dryRun") || opts.get("dryRun").is_some_and(|d| !d.is_null());
            let mut store = shared.store.lock().expect("store lock");
            let ns = target.namespace.as_deref().unwrap_or("");
            let name = target.name.as_deref().unwrap_or("");
            if let Some(want) = opts.pointer("/preconditions/resourceVersion").and_then(Value::as_str)
                && let Ok(cur) = store.get(&target.rt, ns, name)
                && cur.pointer("/metadata/resourceVersion").and_then(Value::as_str) != Some(want)
            {
                return error(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} \"{name}\": the ResourceVersion in the precondition ({want}) does not match the ResourceVersion in record",
                        target.rt.qualified()
                    ),
                ));
            }
            match store.delete(&target.rt, ns, name, policy.as_deref() == Some("Orphan"), dry_run) {
                Ok(o) => respond(200, &o),
                Err(e) => error(e),
            }
        }
        (Method::DELETE, false, None) => {
            let (labels, fields) = match selectors(&query) {
                Ok(s) => s,
                Err(r) => return r,
            };
            let mut store = shared.store.lock().expect("store lock");
            let items: Vec<Value> = store
                .list(&target.rt, target.namespace.as_deref())
                .into_iter()
                .filter(|o| labels.matches(o) && fields.matches(o))
                .collect();
            for o in &items {
                let ns = o.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
                let name = o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
                let _ = store.delete(&target.rt, ns, name, false, false);
            }
            respond(200, &json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}))
        }
        _ => error(ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )),
    }
}

fn discovery(shared: &Shared, group: &str, version: &str) -> Response {
    let types = shared.store.lock().expect("store lock").types();
    let refs: Vec<&ResourceType> =
        types.iter().filter(|t| t.group == group && t.version == version).map(AsRef::as_ref).collect();
    if refs.is_empty() {
        return error(ApiError::new(404, "NotFound", "the server could not find the requested resource"));
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    respond(200, &registry::resource_list(&gv, &refs))
}

fn openapi(shared: &Shared, group: &str, version: &str) -> Response {
    let types = shared.store.lock().expect("store lock").types();
    let refs: Vec<&ResourceType> =
        types.iter().filter(|t| t.group == group && t.version == version).map(AsRef::as_ref).collect();
    if refs.is_empty() {
        return error(ApiError::new(404, "NotFound", "the server could not find the requested resource"));
    }
    respond(200, &registry::openapi_document(&refs))
}

fn resolve(shared: &Shared, segs: &[&str]) -> Result<Target, Response> {
    let not_found = || error(ApiError::new(404, "NotFound", "the server could not find the requested resource"));
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(not_found()),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, r @ ..] if !r.is_empty() && !matches!(r, ["status"] | ["finalize"]) => {
            (Some(ns.to_string()), r)
        }
        r => (None, r),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(s.to_string())),
        _ => return Err(not_found()),
    };
    let rt = shared.store.lock().expect("store lock").find(group, version, plural).ok_or_else(not_found)?;
    if namespace.is_some() && !rt.namespaced {
        return Err(not_found());
    }
    if let Some(s) = &sub
        && !(s == "status" && rt.status_subresource || s == "log" && rt.kind == "Pod")
    {
        return Err(not_found());
    }
    Ok(Target { rt, namespace, name, sub })
}

fn parse_body(body: &Bytes, content_type: &str) -> Result<Value, Response> {
    if content_type.contains("protobuf") || content_type.contains("cbor") {
        return Err(error(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/apply-patch+yaml, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type})"
            ),
        )));
    }
    let parsed = if content_type.contains("yaml") {
        serde_yaml::from_slice::<Value>(body).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice::<Value>(body).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| bad_request(format!("the body of the request could not be decoded: {e}")))
}

fn write_options(query: &HashMap<String, String>) -> WriteOptions {
    WriteOptions {
        dry_run: query.get("dryRun").is_some_and(|d| d == "All"),
        unknown: match query.get("fieldValidation").map(String::as_str) {
            Some("Strict") => UnknownFields::Reject,
            _ => UnknownFields::Prune,
        },
    }
}

fn selectors(query: &HashMap<String, String>) -> Result<(LabelSelector, FieldSelector), Response> {
    let labels =
        LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or("")).map_err(bad_request)?;
    let fields =
        FieldSelector::parse(query.get("fieldSelector").map(String::as_str).unwrap_or("")).map_err(bad_request)?;
    Ok((labels, fields))
}

fn list(shared: &Shared, target: &Target, query: &HashMap<String, String>, wants_table: bool) -> Response {
    let (labels, fields) = match selectors(query) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let limit: usize = query.get("limit").and_then(|l| l.parse().ok()).filter(|l| *l > 0).unwrap_or(usize::MAX);
    let after = query.get("continue").filter(|c| !c.is_empty()).cloned();
    let store = shared.store.lock().expect("store lock");
    let rv = store.resource_version().to_string();
    let mut items: Vec<Value> = store
        .list(&target.rt, target.namespace.as_deref())
        .into_iter()
        .filter(|o| labels.matches(o) && fields.matches(o))
        .collect();
    drop(store);
    if let Some(after) = &after {
        // The continue token is the last key returned (namespace/name).
        // Compared as (namespace, name), the order the store lists in.
        let after = after.split_once('/').unwrap_or(("", after.as_str()));
        items.retain(|o| list_position(o) > after);
    }
    let remaining = items.len().saturating_sub(limit);
    let next = if remaining > 0 {
        items.truncate(limit);
        items.last().map(|o| {
            let (ns, name) = list_position(o);
            format!("{ns}/{name}")
        })
    } else {
        None
    };
    if wants_table {
        return respond(200, &table::table(&target.rt, &items, &rv, next.as_deref()));
    }
    let mut meta = json!({"resourceVersion": rv});
    if let Some(n) = next {
        meta["continue"] = json!(n);
        meta["remainingItemCount"] = json!(remaining);
    }
    respond(
        200,
        &json!({"kind": format!("{}List", target.rt.kind), "apiVersion": target.rt.api_version(), "metadata": meta, "items": items}),
    )
}

/// Where an object sits in a list: (namespace, name). The continue token is
/// the last returned position, written `namespace/name`.
fn list_position(o: &Value) -> (&str, &str) {
    (
        o.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or(""),
        o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or(""),
    )
}

fn patch_object(
    shared: &Shared,
    target: &Target,
    sub: Option<&str>,
    content_type: &str,
    body: &Bytes,
    query: &HashMap<String, String>,
) -> Response {
    let ns = target.namespace.as_deref().unwrap_or("");
    let name = target.name.as_deref().unwrap_or("");
    let opts = write_options(query);
    let mut store = shared.store.lock().expect("store lock");
    let current = store.get(&target.rt, ns, name);
    let is_apply = content_type.starts_with("application/apply-patch");
    let patch_doc: Value = match parse_body(body, if is_apply { "yaml" } else { content_type }) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut obj = match (&current, is_apply) {
        (Ok(o), _) => o.clone(),
        (Err(_), true) => json!({"metadata": {"name": name}}),
        (Err(e), false) => return error(e.clone()),
    };
    let expected_rv = obj.pointer("/metadata/resourceVersion").cloned();
    if is_apply {
        let Some(manager) = query.get("fieldManager").filter(|m| !m.is_empty()) else {
            return error(ApiError::new(
                422,
                "Invalid",
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        };
        let schema = target.rt.schema.as_ref().map(|s| &s.schema);
        obj = patch::server_side_apply(&obj, &patch_doc, manager, sub, schema, &target.rt.api_version());
    } else if content_type.starts_with("application/json-patch+json") {
        if let Err(e) = patch::json_patch(&mut obj, &patch_doc) {
            return error(ApiError::new(422, "Invalid", e));
        }
    } else if content_type.starts_with("application/strategic-merge-patch+json") {
        if target.rt.schema.is_some() {
            return error(ApiError::new(
                415,
                "UnsupportedMediaType",
                "strategic merge patch is not supported for custom resources; use --type=merge",
            ));
        }
        patch::strategic(&mut obj, &patch_doc);
    } else {
        patch::merge(&mut obj, &patch_doc);
    }
    // A patch carries a resourceVersion only when it asks for a precondition.
    let wanted = patch_doc.pointer("/metadata/resourceVersion").cloned();
    obj["metadata"]["resourceVersion"] = wanted.or(expected_rv).unwrap_or(Value::Null);
    let result = match current {
        Ok(_) => store.update(&target.rt, ns, name, obj, sub.is_some(), opts),
        Err(_) => {
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            store.create(&target.rt, ns, obj, opts)
        }
    };
    match result {
        Ok(o) => respond(200, &o),
        Err(e) => error(e),
    }
}

fn watch(shared: Shared, target: Target, query: &HashMap<String, String>) -> Response {
    let (labels, fields) = match selectors(query) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let timeout = query.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).unwrap_or(1800);
    let bookmarks = query.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let initial = query.get("sendInitialEvents").is_some_and(|b| b == "true");
    let from_rv: Option<u64> =
        query.get("resourceVersion").filter(|r| !r.is_empty() && *r != "0").and_then(|r| r.parse().ok());
    let rt = target.rt.clone();
    let tkey = type_key(&rt);
    let ns_filter = target.namespace.clone();
    let name_filter = target.name.clone();

    // Subscribe before reading the backlog so nothing falls between them.
    let (mut rx, backlog, start_rv) = {
        let store = shared.store.lock().expect("store lock");
        let rx = store.subscribe();
        let rv = store.resource_version();
        let backlog: Result<Vec<(EventType, Value)>, ()> = match from_rv {
            Some(rv0) if !initial => match store.events_since(rv0) {
                Some(evs) => Ok(evs
                    .into_iter()
                    .filter(|e| e.type_key == tkey && ns_filter.as_ref().is_none_or(|n| *n == e.namespace))
                    .map(|e| (e.kind, e.object.clone()))
                    .collect()),
                None => Err(()),
            },
            _ => Ok(store.list(&rt, ns_filter.as_deref()).into_iter().map(|o| (EventType::Added, o)).collect()),
        };
        (rx, backlog, rv)
    };
    let mut disconnect = shared.disconnect.subscribe();
    let (tx, out) = mpsc::channel::<Result<Bytes, Infallible>>(1024);
    let line = |ty: &str, obj: &Value| {
        let mut s = serde_json::to_vec(&json!({"type": ty, "object": obj})).unwrap_or_default();
        s.push(b'\n');
        Bytes::from(s)
    };
    let accept = move |o: &Value| {
        labels.matches(o)
            && fields.matches(o)
            && name_filter.as_ref().is_none_or(|n| o.pointer("/metadata/name").and_then(Value::as_str) == Some(n))
    };
    let api_version = rt.api_version();
    let kind = rt.kind.clone();
    tokio::spawn(async move {
        match backlog {
            Err(()) => {
                shared.gone_sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let gone = ApiError::new(410, "Expired", "too old resource version").status();
                let _ = tx.send(Ok(line("ERROR", &gone))).await;
                return;
            }
            Ok(events) => {
                for (ty, o) in events {
                    if accept(&o) && tx.send(Ok(line(ty.as_str(), &o))).await.is_err() {
                        return;
                    }
                }
            }
        }
        let bookmark = |rv: u64, end: bool| {
            let mut meta = json!({"resourceVersion": rv.to_string()});
            if end {
                meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            json!({"kind": kind, "apiVersion": api_version, "metadata": meta})
        };
        if initial && tx.send(Ok(line("BOOKMARK", &bookmark(start_rv, true)))).await.is_err() {
            return;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let mut last_rv = start_rv;
        // Progress bookmarks every few seconds, the first one a period in
        // (a real API server does not send one as a watch opens).
        let period = Duration::from_secs(5);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
                _ = disconnect.recv() => return,
                _ = ticker.tick() => {
                    if bookmarks && tx.send(Ok(line("BOOKMARK", &bookmark(last_rv, false)))).await.is_err() {
                        return;
                    }
                }
                ev = rx.recv() => match ev {
                    Ok(e) => {
                        if e.rv <= start_rv { continue; }
                        last_rv = e.rv;
                        if e.type_key != tkey || ns_filter.as_ref().is_some_and(|n| *n != e.namespace) || !accept(&e.object) {
                            continue;
                        }
                        if tx.send(Ok(line(e.kind.as_str(), &e.object))).await.is_err() {
                            return;
                        }
                    }
                    // A watcher that fell behind must relist, like a real API server's.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let gone = ApiError::new(410, "Expired", "too old resource version").status();
                        let _ = tx.send(Ok(line("ERROR", &gone))).await;
                        return;
                    }
                    Err(_) => return,
                }
            }
        }
    });
    let stream = futures::stream::unfold(out, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .expect("valid response")
}
