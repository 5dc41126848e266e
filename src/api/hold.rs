//! LegalHold: data that must not be deleted, whatever its window says.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{DataCategory, SecretRef};

/// Suspends deletion for whole datasets or for specific data subjects, with
/// a reason and an optional expiry. Retention runs skip held records;
/// erasure requests touching held data end Blocked or PartiallyCompleted
/// with the hold named.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "lethe.dev",
    version = "v1alpha1",
    kind = "LegalHold",
    plural = "legalholds",
    shortname = "lhold",
    category = "lethe",
    namespaced,
    status = "LegalHoldStatus",
    doc = "Suspends deletion of whole datasets or of specific data subjects, for a reason, until it is removed or expires.",
    printcolumn(name = "Active", type_ = "string", json_path = ".status.conditions[?(@.type==\"Active\")].status"),
    printcolumn(name = "Expires", type_ = "string", json_path = ".spec.expiresAt"),
    printcolumn(name = "Datasets", type_ = "integer", json_path = ".status.coveredDatasets"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".spec.reason", priority = 1),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.datasets) > 0 || has(self.datasetSelector) || size(self.categories) > 0 || has(self.subjects)").message("a hold covers datasets (by name, selector or category), subjects, or both"))]
pub struct LegalHoldSpec {
    /// Why the data must be kept (shown in status and Events).
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
    /// A case or ticket reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub case_reference: Option<String>,
    /// Datasets held by name.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub datasets: Vec<String>,
    /// Datasets held by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_selector: Option<LabelSelector>,
    /// Datasets held by category.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub categories: Vec<DataCategory>,
    /// Hold only these subjects' records (in the datasets above, or in every
    /// dataset of the namespace when no dataset is named).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subjects: Option<HeldSubjects>,
    /// When the hold ends by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Subjects under a hold, never by plain identifier in the spec.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.digests) > 0 || has(self.secretRef)").message("name subjects by digests or a secretRef"))]
pub struct HeldSubjects {
    /// Salted identifier digests as printed by `lethe digest`.
    #[serde(default)]
    #[schemars(length(max = 1000), inner(regex(pattern = "^sha256:[0-9a-f]{64}$")))]
    pub digests: Vec<String>,
    /// A Secret whose keys are identifier types and whose values are
    /// newline-separated identifiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegalHoldStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Active` (False once expired).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// How many datasets the hold covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covered_datasets: Option<i32>,
    /// Names of the covered datasets (at most 100 listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<String>,
    /// How many subjects the hold names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subjects: Option<i32>,
}

impl LegalHoldSpec {
    /// Whether the hold is in force at `now`.
    pub fn active_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|t| now < t)
    }

    /// Whether the hold names datasets at all (by name, selector or category).
    pub fn names_datasets(&self) -> bool {
        !self.datasets.is_empty() || !self.categories.is_empty() || self.dataset_selector.is_some()
    }

    /// Whether the hold applies to a dataset: named, selected or sharing a
    /// category; a hold that names only subjects applies to every dataset.
    pub fn covers(
        &self,
        dataset: &str,
        categories: &[DataCategory],
        labels: &std::collections::BTreeMap<String, String>,
    ) -> bool {
        if !self.names_datasets() {
            return true;
        }
        self.datasets.iter().any(|d| d == dataset)
            || self.categories.iter().any(|c| categories.contains(c))
            || self.dataset_selector.as_ref().is_some_and(|sel| crate::plan::selector::matches(sel, labels))
    }
}
