//! Kubernetes label selectors, evaluated the way the API server does.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` satisfy `selector`. An empty selector matches everything.
/// An unknown operator matches nothing (fail closed: a selector we cannot
/// read must not widen what a policy or hold covers... nor narrow a hold,
/// which is why callers report it as invalid first).
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_label = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let by_expr = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    by_label && by_expr
}

/// Problems that make a selector unusable, e.g. `In` without values.
pub fn problems(selector: &LabelSelector) -> Vec<String> {
    let mut out = Vec::new();
    for (i, e) in selector.match_expressions.iter().flatten().enumerate() {
        let n = e.values.as_ref().map_or(0, Vec::len);
        match e.operator.as_str() {
            "In" | "NotIn" if n == 0 => {
                out.push(format!("matchExpressions[{i}]: operator {} needs values", e.operator))
            }
            "Exists" | "DoesNotExist" if n > 0 => {
                out.push(format!("matchExpressions[{i}]: operator {} takes no values", e.operator))
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                out.push(format!("matchExpressions[{i}]: unknown operator {other:?} (In, NotIn, Exists, DoesNotExist)"))
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: if values.is_empty() { None } else { Some(values.iter().map(|s| s.to_string()).collect()) },
        }
    }

    #[test]
    fn match_labels_and_expressions() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("tier", "prod")])),
            match_expressions: Some(vec![expr("region", "In", &["eu", "us"]), expr("legacy", "DoesNotExist", &[])]),
        };
        assert!(matches(&sel, &labels(&[("tier", "prod"), ("region", "eu")])));
        assert!(!matches(&sel, &labels(&[("tier", "prod"), ("region", "apac")])));
        assert!(!matches(&sel, &labels(&[("tier", "prod"), ("region", "eu"), ("legacy", "1")])));
        assert!(!matches(&sel, &labels(&[("region", "eu")])));
        assert!(matches(&LabelSelector::default(), &labels(&[])));
    }

    #[test]
    fn not_in_matches_missing_label_and_unknown_operator_matches_nothing() {
        let sel = LabelSelector { match_expressions: Some(vec![expr("env", "NotIn", &["dev"])]), ..Default::default() };
        assert!(matches(&sel, &labels(&[])));
        assert!(!matches(&sel, &labels(&[("env", "dev")])));
        let bad = LabelSelector { match_expressions: Some(vec![expr("env", "Like", &["d"])]), ..Default::default() };
        assert!(!matches(&bad, &labels(&[("env", "d")])));
        assert_eq!(problems(&bad).len(), 1);
        let bad = LabelSelector { match_expressions: Some(vec![expr("env", "In", &[])]), ..Default::default() };
        assert_eq!(problems(&bad), vec!["matchExpressions[0]: operator In needs values"]);
    }
}
