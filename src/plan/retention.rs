//! The effective retention of a dataset: the strictest maximum and the
//! longest minimum over its own rule and every RetentionPolicy that selects
//! it. A minimum longer than the maximum is a conflict that is reported,
//! never resolved silently; while it lasts, the minimum protects the data.

use std::{cmp::Ordering, collections::BTreeMap};

use chrono::{DateTime, Utc};

use crate::api::{
    DataCategory, DatasetSpec, Duration, EffectiveRetention, ExpiryAction, RetentionPolicySpec, RetentionRule,
    TimeBasis,
};

/// Where a rule came from, as shown in status (`RetentionPolicy/<name>` or `Dataset`).
pub fn policy_source(name: &str) -> String {
    format!("RetentionPolicy/{name}")
}

pub const INLINE_SOURCE: &str = "Dataset";

/// Whether a policy selects a dataset: any shared category (when the policy
/// names categories) and a matching label selector (when it has one).
pub fn policy_selects(
    policy: &RetentionPolicySpec,
    categories: &[DataCategory],
    labels: &BTreeMap<String, String>,
) -> bool {
    let by_category = policy.categories.is_empty() || policy.categories.iter().any(|c| categories.contains(c));
    let by_label = policy.dataset_selector.as_ref().is_none_or(|s| super::selector::matches(s, labels));
    by_category && by_label
}

/// The outcome for one dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    /// The strictest maximum and the rule that set it.
    pub maximum: Option<(RetentionRule, String)>,
    /// The longest minimum and the rule that set it.
    pub minimum: Option<(Duration, String)>,
    /// Every applicable rule's source.
    pub sources: Vec<String>,
    /// A minimum longer than the maximum.
    pub conflict: Option<String>,
}

impl Effective {
    /// The time basis and action of the maximum (defaults when no maximum applies).
    pub fn basis(&self) -> (TimeBasis, Option<&str>, ExpiryAction) {
        match &self.maximum {
            Some((rule, _)) => (rule.measured_from, rule.event.as_deref(), rule.action),
            None => (TimeBasis::Created, None, ExpiryAction::Delete),
        }
    }

    /// The status shape.
    pub fn to_status(&self) -> EffectiveRetention {
        let (measured_from, event, action) = self.basis();
        EffectiveRetention {
            keep_for: self.maximum.as_ref().and_then(|(r, _)| r.keep_for.as_ref()).map(|d| d.to_string()),
            keep_at_least: self.minimum.as_ref().map(|(d, _)| d.to_string()),
            measured_from: self.maximum.as_ref().map(|_| measured_from),
            event: event.map(str::to_string),
            action: self.maximum.as_ref().map(|_| action),
            set_by: self.maximum.as_ref().map(|(_, s)| s.clone()),
            minimum_set_by: self.minimum.as_ref().map(|(_, s)| s.clone()),
            sources: self.sources.clone(),
        }
    }
}

/// Computes the effective retention at `at` (months have no fixed length,
/// so "strictest" is measured back from a point in time). `policies` are
/// `(name, spec)` pairs already known to select the dataset.
pub fn effective<'a>(
    dataset: &DatasetSpec,
    policies: impl IntoIterator<Item = (&'a str, &'a RetentionPolicySpec)>,
    at: DateTime<Utc>,
) -> Effective {
    let mut rules: Vec<(String, &RetentionRule)> = Vec::new();
    if let Some(rule) = &dataset.retention {
        rules.push((INLINE_SOURCE.to_string(), rule));
    }
    let mut named: Vec<_> = policies.into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    rules.extend(named.into_iter().map(|(name, p)| (policy_source(name), &p.rule)));

    let mut maximum: Option<(RetentionRule, String)> = None;
    let mut minimum: Option<(Duration, String)> = None;
    for (source, rule) in &rules {
        if let Some(keep_for) = &rule.keep_for {
            let stricter = match &maximum {
                None => true,
                Some((best, _)) => {
                    keep_for.cmp_at(best.keep_for.as_ref().expect("maximum has keepFor"), at) == Ordering::Less
                }
            };
            if stricter {
                maximum = Some(((*rule).clone(), source.clone()));
            }
        }
        if let Some(keep_at_least) = &rule.keep_at_least {
            let longer = match &minimum {
                None => true,
                Some((best, _)) => keep_at_least.cmp_at(best, at) == Ordering::Greater,
            };
            if longer {
                minimum = Some((keep_at_least.clone(), source.clone()));
            }
        }
    }
    let conflict = match (&maximum, &minimum) {
        (Some((max_rule, max_src)), Some((min, min_src))) => {
            let max = max_rule.keep_for.as_ref().expect("maximum has keepFor");
            (min.cmp_at(max, at) == Ordering::Greater).then(|| {
                format!(
                    "minimum {min} ({min_src}) is longer than maximum {max} ({max_src}); the minimum is honoured and nothing under it is deleted"
                )
            })
        }
        _ => None,
    };
    Effective { maximum, minimum, sources: rules.into_iter().map(|(s, _)| s).collect(), conflict }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn rule(keep_for: Option<&str>, keep_at_least: Option<&str>) -> RetentionRule {
        RetentionRule {
            keep_for: keep_for.map(|s| s.parse().unwrap()),
            keep_at_least: keep_at_least.map(|s| s.parse().unwrap()),
            measured_from: TimeBasis::Created,
            event: None,
            action: ExpiryAction::Delete,
        }
    }

    fn policy(categories: &[DataCategory], r: RetentionRule) -> RetentionPolicySpec {
        RetentionPolicySpec {
            categories: categories.to_vec(),
            dataset_selector: None,
            rule: r,
            schedule: None,
            dry_run: false,
        }
    }

    fn dataset(inline: Option<RetentionRule>) -> DatasetSpec {
        serde_json::from_value(serde_json::json!({
            "storeRef": {"name": "db"},
            "categories": ["marketing"],
            "table": {"name": "prefs"},
            "timestamps": {"created": "created_at"},
        }))
        .map(|mut d: DatasetSpec| {
            d.retention = inline;
            d
        })
        .unwrap()
    }

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
    }

    #[test]
    fn strictest_maximum_wins_and_is_named() {
        let a = policy(&[DataCategory::Marketing], rule(Some("24mo"), None));
        let b = policy(&[DataCategory::Marketing], rule(Some("13mo"), None));
        let e = effective(&dataset(Some(rule(Some("3y"), None))), [("a", &a), ("b", &b)], at());
        let (r, src) = e.maximum.unwrap();
        assert_eq!(r.keep_for.unwrap().as_str(), "13mo");
        assert_eq!(src, "RetentionPolicy/b");
        assert_eq!(e.sources, vec!["Dataset", "RetentionPolicy/a", "RetentionPolicy/b"]);
        assert!(e.conflict.is_none());
    }

    #[test]
    fn longest_minimum_wins_and_conflict_is_visible() {
        let tax = policy(&[DataCategory::Financial], rule(None, Some("7y")));
        let short = policy(&[DataCategory::Financial], rule(Some("90d"), Some("30d")));
        let e = effective(&dataset(None), [("tax", &tax), ("short", &short)], at());
        assert_eq!(e.minimum.as_ref().unwrap().0.as_str(), "7y");
        assert!(e.conflict.as_ref().unwrap().contains("RetentionPolicy/tax"));
    }

    #[test]
    fn single_rule_minimum_above_maximum_conflicts() {
        let e = effective(&dataset(Some(rule(Some("30d"), Some("1y")))), [], at());
        assert!(e.conflict.is_some());
    }

    #[test]
    fn no_rules_means_nothing_expires() {
        let e = effective(&dataset(None), [], at());
        assert!(e.maximum.is_none() && e.minimum.is_none() && e.sources.is_empty());
        assert_eq!(e.to_status().keep_for, None);
    }

    #[test]
    fn selection_by_category_and_labels() {
        let mut p = policy(&[DataCategory::Marketing], rule(Some("1y"), None));
        let labels: BTreeMap<String, String> = [("tier".to_string(), "prod".to_string())].into();
        assert!(policy_selects(&p, &[DataCategory::Marketing, DataCategory::Contact], &labels));
        assert!(!policy_selects(&p, &[DataCategory::Logs], &labels));
        p.dataset_selector = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
            match_labels: Some([("tier".to_string(), "dev".to_string())].into()),
            match_expressions: None,
        });
        assert!(!policy_selects(&p, &[DataCategory::Marketing], &labels));
    }
}
