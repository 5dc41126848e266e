//! DeletionRequest: a data subject's request to be forgotten.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{DataCategory, ExpiryAction, IdentifierMap, SecretRef};

/// A data subject's erasure request. The subject's identifiers come from a
/// Secret (or, for development, inline); status, Events, logs and metrics
/// only ever carry a salted digest of them.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "lethe.dev",
    version = "v1alpha1",
    kind = "DeletionRequest",
    plural = "deletionrequests",
    shortname = "delreq",
    category = "lethe",
    namespaced,
    status = "DeletionRequestStatus",
    doc = "A data subject's request to erase their personal data, with a deadline and a receipt on completion.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Regime", type_ = "string", json_path = ".spec.regime"),
    printcolumn(name = "Deadline", type_ = "string", json_path = ".status.deadline"),
    printcolumn(name = "Overdue", type_ = "string", json_path = ".status.conditions[?(@.type==\"Overdue\")].status"),
    printcolumn(name = "Records", type_ = "integer", json_path = ".status.recordsAffected"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.deleteSecretOnCompletion || has(self.subject.secretRef)").message("deleteSecretOnCompletion needs subject.secretRef").field_path(".deleteSecretOnCompletion"))]
pub struct DeletionRequestSpec {
    /// Who is to be forgotten. Immutable: a request is about one subject.
    #[x_kube(validation = Rule::new("self == oldSelf").message("subject is immutable; create a new request"))]
    pub subject: Subject,
    /// The law the request is made under; sets the default deadline
    /// (GDPR: 30 days, CCPA: 45 days, Other: 30 days).
    pub regime: Regime,
    /// Why the subject asked, for the privacy report.
    #[serde(default)]
    pub reason: RequestReason,
    /// When the request was received, if earlier than this object's creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<DateTime<Utc>>,
    /// An explicit deadline, overriding the regime's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// Limit the request to some datasets or categories; by default every
    /// dataset in the namespace that holds any of the subject's identifier types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<RequestScope>,
    /// Wait for an explicit approval (the `lethe.dev/approved-by` annotation,
    /// set by someone other than the requester) before erasing.
    #[serde(default)]
    pub require_approval: bool,
    /// Delete the identifiers' Secret once the request is complete and no
    /// dataset is deferred (a deferred erasure still needs the identifiers).
    #[serde(default)]
    pub delete_secret_on_completion: bool,
    /// Count what would be affected, change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretRef) != has(self.identifiers)").message("set exactly one of secretRef (recommended) and identifiers (development only)"))]
pub struct Subject {
    /// A Secret whose keys are identifier types (`user_id`, `email`) and
    /// whose values are the subject's identifiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// Inline identifiers, by identifier type. For development only: they
    /// are stored in the object for anyone who can read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[a-z][a-z0-9_]{0,62}$'))").message("identifier types are lower-case names such as user_id or email"))]
    #[schemars(extend("minProperties" = 1, "maxProperties" = 16))]
    pub identifiers: Option<IdentifierMap>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
pub enum Regime {
    /// EU/UK General Data Protection Regulation: one month.
    #[serde(rename = "GDPR")]
    Gdpr,
    /// California Consumer Privacy Act: 45 days.
    #[serde(rename = "CCPA")]
    Ccpa,
    /// Any other: 30 days unless `deadline` says otherwise.
    Other,
}

impl Regime {
    pub fn as_str(&self) -> &'static str {
        match self {
            Regime::Gdpr => "GDPR",
            Regime::Ccpa => "CCPA",
            Regime::Other => "Other",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RequestReason {
    /// The subject withdrew consent.
    ConsentWithdrawn,
    /// The subject closed their account.
    AccountClosed,
    /// The subject objects to the processing.
    Objection,
    /// The data was processed unlawfully.
    UnlawfulProcessing,
    /// The data was collected from a child.
    ChildData,
    /// Not stated.
    #[default]
    Unspecified,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.datasets) > 0 || size(self.categories) > 0").message("a scope names datasets, categories, or both"))]
pub struct RequestScope {
    /// Only these datasets.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub datasets: Vec<String>,
    /// Only datasets of these categories.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub categories: Vec<DataCategory>,
}

/// Where a request stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum RequestPhase {
    Pending,
    AwaitingApproval,
    Running,
    Completed,
    PartiallyCompleted,
    Deferred,
    Blocked,
    Failed,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletionRequestStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RequestPhase>,
    /// `Ready`, `Complete`, `Overdue`, `Approved`, `Blocked`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Salted digest of the subject's identifiers (never the identifiers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<DateTime<Utc>>,
    /// When the request first finished: the answer its deadline applies to.
    /// Datasets deferred by minimum retention are erased later, by further
    /// runs, without making the request overdue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responded_at: Option<DateTime<Utc>>,
    /// Records erased or anonymized, over every dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_affected: Option<i64>,
    /// One entry per dataset, in erasure order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["dataset".into()]))]
    pub datasets: Vec<DatasetResult>,
    /// Who approved, when approval was required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// Proof of completion a privacy team can file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetResult {
    pub dataset: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ExpiryAction>,
    /// The ScrubRun doing the work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_affected: Option<i64>,
    /// Records still matching the subject after verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<i64>,
    /// Why records remain: a hold, minimum retention, unreachable copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_reason: Option<String>,
    /// When remaining records become erasable (minimum retention, backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erasable_after: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// `sha256:<hex>` over the canonical per-dataset results.
    pub digest: String,
    pub issued_at: DateTime<Utc>,
}
