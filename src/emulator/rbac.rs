//! RBAC authorization for ServiceAccounts, when the emulator is asked to
//! enforce it: Roles, ClusterRoles (with aggregation), RoleBindings and
//! ClusterRoleBindings evaluated as the API server's RBAC authorizer does.
//! Pods started by the emulator present their ServiceAccount's token; every
//! other client is an administrator.

use serde_json::Value;

use super::store::Store;

const RBAC: &str = "rbac.authorization.k8s.io";

/// The token a pod running as a ServiceAccount presents.
pub fn token(namespace: &str, name: &str) -> String {
    format!("serviceaccount:{namespace}:{name}")
}

/// The ServiceAccount (namespace, name) a bearer token stands for.
pub fn service_account(authorization: Option<&str>) -> Option<(String, String)> {
    let t = authorization?.strip_prefix("Bearer ")?.strip_prefix("serviceaccount:")?;
    let (ns, name) = t.split_once(':')?;
    Some((ns.to_string(), name.to_string()))
}

/// What a request asks to do.
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

fn strings(v: &Value, field: &str) -> Vec<String> {
    v.get(field).and_then(Value::as_array).into_iter().flatten().filter_map(|s| s.as_str().map(String::from)).collect()
}

fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    let any = |field: &str, want: &str| strings(rule, field).iter().any(|x| x == "*" || x == want);
    let resource = match a.subresource {
        Some(s) => format!("{}/{s}", a.resource),
        None => a.resource.to_string(),
    };
    let names = strings(rule, "resourceNames");
    any("apiGroups", a.group)
        && any("resources", &resource)
        && any("verbs", a.verb)
        && (names.is_empty() || a.name.is_some_and(|n| names.iter().any(|x| x == n)))
}

/// The rules of a ClusterRole, including those aggregated into it.
fn cluster_role_rules(store: &Store, role: &Value) -> Vec<Value> {
    let mut rules: Vec<Value> = role.get("rules").and_then(Value::as_array).cloned().unwrap_or_default();
    let selectors = role.pointer("/aggregationRule/clusterRoleSelectors").and_then(Value::as_array);
    if let (Some(selectors), Some(rt)) = (selectors, store.find(RBAC, "v1", "clusterroles")) {
        for other in store.list(&rt, None) {
            let labels = other.pointer("/metadata/labels").and_then(Value::as_object);
            let selected = selectors.iter().any(|s| {
                s.get("matchLabels")
                    .and_then(Value::as_object)
                    .is_some_and(|want| want.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v)))
            });
            if selected && other.pointer("/metadata/name") != role.pointer("/metadata/name") {
                rules.extend(other.get("rules").and_then(Value::as_array).cloned().unwrap_or_default());
            }
        }
    }
    rules
}

fn binds(binding: &Value, sa_ns: &str, sa_name: &str) -> bool {
    let binding_ns = binding.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
    binding.get("subjects").and_then(Value::as_array).into_iter().flatten().any(|s| {
        let ns = s.get("namespace").and_then(Value::as_str).unwrap_or(binding_ns);
        match s.get("kind").and_then(Value::as_str) {
            Some("ServiceAccount") => s.get("name").and_then(Value::as_str) == Some(sa_name) && ns == sa_ns,
            Some("Group") => {
                matches!(s.get("name").and_then(Value::as_str), Some("system:serviceaccounts" | "system:authenticated"))
                    || s.get("name").and_then(Value::as_str) == Some(&format!("system:serviceaccounts:{sa_ns}"))
            }
            _ => false,
        }
    })
}

/// Whether the ServiceAccount may do what `a` asks.
pub fn allowed(store: &Store, sa_ns: &str, sa_name: &str, a: &Attributes) -> bool {
    let find = |plural: &str| store.find(RBAC, "v1", plural);
    let role_rules = |binding: &Value| -> Vec<Value> {
        let kind = binding.pointer("/roleRef/kind").and_then(Value::as_str).unwrap_or("");
        let name = binding.pointer("/roleRef/name").and_then(Value::as_str).unwrap_or("");
        let ns = binding.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
        match kind {
            "ClusterRole" => find("clusterroles")
                .and_then(|rt| store.get(&rt, "", name).ok())
                .map(|r| cluster_role_rules(store, &r))
                .unwrap_or_default(),
            "Role" => find("roles")
                .and_then(|rt| store.get(&rt, ns, name).ok())
                .and_then(|r| r.get("rules").and_then(Value::as_array).cloned())
                .unwrap_or_default(),
            _ => vec![],
        }
    };
    let mut bindings = Vec::new();
    if let Some(rt) = find("clusterrolebindings") {
        bindings.extend(store.list(&rt, None));
    }
    if let (Some(ns), Some(rt)) = (a.namespace, find("rolebindings")) {
        bindings.extend(store.list(&rt, Some(ns)));
    }
    bindings.iter().filter(|b| binds(b, sa_ns, sa_name)).any(|b| role_rules(b).iter().any(|r| rule_allows(r, a)))
}

/// The API server's message for a denied request.
pub fn forbidden_message(sa_ns: &str, sa_name: &str, a: &Attributes) -> String {
    let resource = match a.subresource {
        Some(s) => format!("{}/{s}", a.resource),
        None => a.resource.to_string(),
    };
    let qualified = if a.group.is_empty() { resource.clone() } else { format!("{resource}.{}", a.group) };
    let what = match a.name {
        Some(n) => format!("{qualified} \"{n}\""),
        None => qualified,
    };
    let scope = match a.namespace {
        Some(ns) => format!(" in the namespace \"{ns}\""),
        None => " at the cluster scope".to_string(),
    };
    format!(
        "{what} is forbidden: User \"system:serviceaccount:{sa_ns}:{sa_name}\" cannot {} resource \"{resource}\" in API group \"{}\"{scope}",
        a.verb, a.group
    )
}
