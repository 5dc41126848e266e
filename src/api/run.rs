//! ScrubRun: one execution against one dataset, and its audit trail.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ExpiryAction, Identifier, LocalRef};

/// One execution: a retention pass over one dataset, or one request's
/// erasure in one dataset. Created by Lethe with a fixed cutoff; its spec
/// never changes, so the run's history cannot be rewritten.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "lethe.dev",
    version = "v1alpha1",
    kind = "ScrubRun",
    plural = "scrubruns",
    shortname = "srun",
    category = "lethe",
    namespaced,
    status = "ScrubRunStatus",
    doc = "One retention pass or one erasure in one dataset: its fixed cutoff, plan, progress and outcome.",
    printcolumn(name = "Dataset", type_ = "string", json_path = ".spec.datasetRef.name"),
    printcolumn(name = "Purpose", type_ = "string", json_path = ".spec.purpose"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Affected", type_ = "integer", json_path = ".status.counts.affected"),
    printcolumn(name = "Cutoff", type_ = "string", json_path = ".spec.cutoff"),
    printcolumn(name = "Duration", type_ = "string", json_path = ".status.duration", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self == oldSelf").message("a ScrubRun's spec is immutable; create a new run"),
    validation = Rule::new("self.purpose != 'Retention' || has(self.cutoff)").message("a retention run needs its cutoff").field_path(".cutoff"),
    validation = Rule::new("has(self.cutoff) == has(self.timeField)").message("a cutoff needs the timeField it applies to").field_path(".timeField"),
    validation = Rule::new("has(self.minimumRetentionCutoff) == has(self.minimumTimeField)").message("a minimum-retention cutoff needs the minimumTimeField it applies to").field_path(".minimumTimeField"),
    validation = Rule::new("(self.purpose == 'Erasure') == has(self.deletionRequestRef)").message("an erasure run names its DeletionRequest, a retention run does not").field_path(".deletionRequestRef"),
)]
pub struct ScrubRunSpec {
    /// The dataset scrubbed.
    pub dataset_ref: LocalRef,
    /// Retention pass or subject erasure.
    pub purpose: RunPurpose,
    /// For an erasure: the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_request_ref: Option<LocalRef>,
    /// Records whose time basis is before this instant are past their window.
    /// Computed once when the run is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutoff: Option<DateTime<Utc>>,
    /// Records whose time basis is at or after this instant are under
    /// minimum retention and never deleted by this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_retention_cutoff: Option<DateTime<Utc>>,
    /// The column the cutoff applies to, fixed when the run is created so
    /// a later change to the Dataset cannot change what this run selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_field: Option<Identifier>,
    /// The column the minimum-retention cutoff applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_time_field: Option<Identifier>,
    /// What is done to matching records.
    #[serde(default)]
    pub action: ExpiryAction,
    /// The schedule slot this run belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_time: Option<DateTime<Utc>>,
    /// Count, change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum RunPurpose {
    Retention,
    Erasure,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum RunPhase {
    Pending,
    Planning,
    AwaitingApproval,
    Running,
    Succeeded,
    Failed,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScrubRunStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RunPhase>,
    /// `Ready`, `Succeeded`, `Failed`, `Stalled` (e.g. `BlastRadiusExceeded`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// What the run will touch, recorded before anything is touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<RunPlan>,
    /// Where a resumed run continues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<RunProgress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<RunCounts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<DateTime<Utc>>,
    /// Wall-clock duration, e.g. `1m20s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Partitions dropped or detached instead of deleted row by row.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions_dropped: Vec<String>,
    /// What a re-query found after the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// `Job` or `InProcess`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,
    /// The Job executing the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// Who approved a run stopped by the blast-radius brake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunPlan {
    /// The cutoff used, copied from spec when planning starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutoff: Option<DateTime<Utc>>,
    /// Records in the dataset when planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_records: Option<i64>,
    /// Records the run expects to change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matching_records: Option<i64>,
    /// Records skipped because a legal hold covers them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_records: Option<i64>,
    /// Partitions wholly past the cutoff.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<String>,
    /// Legal holds in force for this run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunProgress {
    pub records_done: i64,
    pub batches: i64,
    /// An opaque resume point (the last key handled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunCounts {
    /// Deleted plus anonymized.
    pub affected: i64,
    pub deleted: i64,
    pub anonymized: i64,
    pub skipped_held: i64,
    pub skipped_minimum_retention: i64,
    /// Records kept because rows of another table still reference them
    /// through a foreign key that neither cascades nor sets NULL (the
    /// server would refuse to delete them, or to rewrite the column it
    /// references), as counted when the run was planned, like
    /// `skippedHeld`; a record whose last reference goes during the run (a
    /// record the run deletes) goes in the same run, the others once
    /// nothing references them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_referenced: i64,
    /// Redis keys that had no TTL and were given the Dataset's `keys.maxTtl`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub expiries_set: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// Records that still match after the run.
    pub remaining: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub verified_at: DateTime<Utc>,
    /// For a retention run: the time basis of the oldest record still past
    /// the window (held, under minimum retention, or left by an error);
    /// absent when none is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_remaining: Option<DateTime<Utc>>,
    /// For an erasure under minimum retention: the time basis of the newest
    /// record the minimum kept (erasable once it passes the minimum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_kept: Option<DateTime<Utc>>,
    /// Objects an S3 Object Lock kept from deletion, by when each becomes
    /// deletable. Lethe never bypasses a lock.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locked: Vec<LockedObjects>,
}

/// Objects under an S3 Object Lock.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LockedObjects {
    /// Object versions.
    pub objects: i64,
    /// When the lock's retention ends; absent when only a legal hold applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_until: Option<DateTime<Utc>>,
    /// Under the lock's legal hold: deletable only once it is lifted.
    #[serde(default)]
    pub legal_hold: bool,
}

impl LockedObjects {
    /// A sentence for a verification's reason, e.g. `3 objects under S3
    /// Object Lock until 2033-05-18, 1 under an S3 legal hold`.
    pub fn describe(locked: &[LockedObjects]) -> Option<String> {
        let parts: Vec<String> = locked
            .iter()
            .map(|l| match (l.retain_until, l.legal_hold) {
                (Some(t), false) => format!("{} under S3 Object Lock until {}", l.objects, t.format("%Y-%m-%d")),
                (Some(t), true) => {
                    format!("{} under S3 Object Lock until {} and an S3 legal hold", l.objects, t.format("%Y-%m-%d"))
                }
                (None, _) => format!("{} under an S3 legal hold", l.objects),
            })
            .collect();
        (!parts.is_empty()).then(|| format!("objects the store protects: {}", parts.join(", ")))
    }
}
