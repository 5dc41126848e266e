//! RetentionPolicy: how long data of given categories may be kept.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{DataCategory, RetentionRule, Schedule};

/// How long data of the selected datasets may (and must) be kept. When
/// several rules apply to a dataset, the strictest maximum and the longest
/// minimum win; a minimum above a maximum is reported as a conflict.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "lethe.dev",
    version = "v1alpha1",
    kind = "RetentionPolicy",
    plural = "retentionpolicies",
    shortname = "rpol",
    category = "lethe",
    namespaced,
    status = "RetentionPolicyStatus",
    doc = "How long data of given categories may be kept, the minimum it must be kept, and what happens on expiry.",
    printcolumn(name = "Keep For", type_ = "string", json_path = ".spec.keepFor"),
    printcolumn(name = "Keep At Least", type_ = "string", json_path = ".spec.keepAtLeast"),
    printcolumn(name = "From", type_ = "string", json_path = ".spec.measuredFrom"),
    printcolumn(name = "Action", type_ = "string", json_path = ".spec.action"),
    printcolumn(name = "Datasets", type_ = "integer", json_path = ".status.matchedDatasets"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.categories) && size(self.categories) > 0) || has(self.datasetSelector)").message("select datasets by categories, datasetSelector, or both"))]
pub struct RetentionPolicySpec {
    /// Datasets holding any of these categories are selected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub categories: Vec<DataCategory>,
    /// Datasets whose labels match are selected (both must match when both are set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_selector: Option<LabelSelector>,
    /// The window, its time basis and the action on expiry.
    #[serde(flatten)]
    pub rule: RetentionRule,
    /// When retention runs of the datasets whose window this policy sets happen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// Count what would be affected, change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Conflict`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// How many datasets this policy selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_datasets: Option<i32>,
    /// Names of the selected datasets (at most 100 listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<String>,
}
