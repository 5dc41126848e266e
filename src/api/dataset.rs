//! Dataset: where one kind of personal data lives in one store.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{DataCategory, Duration, ExpiryAction, Identifier, LocalRef, RetentionRule, Schedule, TimeBasis};

/// Where one kind of personal data lives, how to find a data subject in it,
/// which timestamps windows are measured from, and how to anonymize it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "lethe.dev",
    version = "v1alpha1",
    kind = "Dataset",
    plural = "datasets",
    shortname = "dset",
    category = "lethe",
    namespaced,
    status = "DatasetStatus",
    doc = "Where one kind of personal data lives in one store, and how long it may be kept.",
    printcolumn(name = "Store", type_ = "string", json_path = ".spec.storeRef.name"),
    printcolumn(name = "Window", type_ = "string", json_path = ".status.effectiveRetention.keepFor"),
    printcolumn(name = "Set By", type_ = "string", json_path = ".status.effectiveRetention.setBy"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(
        name = "Last Run",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"LastRunSucceeded\")].reason"
    ),
    printcolumn(name = "Next Run", type_ = "string", json_path = ".status.nextScheduleTime"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("[has(self.table), has(self.objects), has(self.keys), has(self.files)].filter(x, x).size() == 1").message("set exactly one of table, objects, keys and files"),
    validation = Rule::new("!(has(self.retention) && self.retention.action == 'anonymize') || (has(self.anonymization) && size(self.anonymization.fields) > 0)").message("retention.action: anonymize needs anonymization.fields").field_path(".anonymization"),
    validation = Rule::new("!(has(self.erasure) && self.erasure.action == 'anonymize') || (has(self.anonymization) && size(self.anonymization.fields) > 0)").message("erasure.action: anonymize needs anonymization.fields").field_path(".anonymization"),
    validation = Rule::new("!has(self.retention) || self.retention.measuredFrom != 'created' || has(self.timestamps.created) || has(self.files) || has(self.objects)").message("retention measured from creation needs timestamps.created (files and objects carry their own time)").field_path(".timestamps.created"),
    validation = Rule::new("!has(self.retention) || self.retention.measuredFrom != 'lastActivity' || has(self.timestamps.lastActivity)").message("retention measured from last activity needs timestamps.lastActivity").field_path(".timestamps.lastActivity"),
    validation = Rule::new("!has(self.retention) || self.retention.measuredFrom != 'event' || (has(self.timestamps.events) && self.retention.event in self.timestamps.events)").message("retention measured from an event needs that event in timestamps.events").field_path(".timestamps.events"),
)]
pub struct DatasetSpec {
    /// The DataStore this dataset lives in.
    pub store_ref: LocalRef,
    /// What kind of personal data this is; policies and holds select by category.
    #[schemars(length(min = 1, max = 16))]
    pub categories: Vec<DataCategory>,
    /// SQL stores: the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<TableRef>,
    /// Object stores: bucket and prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<ObjectLocation>,
    /// Redis: key pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<KeyLocation>,
    /// Files: a directory under the store's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<FileLocation>,
    /// The fields windows are measured from.
    #[serde(default)]
    pub timestamps: Timestamps,
    /// How to find a data subject: identifier type → field, e.g. `user_id: customer_id`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[a-z][a-z0-9_]{0,62}$'))").message("identifier types are lower-case names such as user_id or email"))]
    #[schemars(extend("maxProperties" = 32))]
    pub subject_fields: BTreeMap<String, Identifier>,
    /// The primary key, when the store cannot tell (SQL stores introspect it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub primary_key: Vec<Identifier>,
    /// RetentionPolicies (by name) that apply in addition to those whose
    /// selectors match this dataset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub retention_policies: Vec<String>,
    /// A retention rule of this dataset's own; the strictest of it and every
    /// matching RetentionPolicy applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionRule>,
    /// What a subject's erasure request does here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erasure: Option<Erasure>,
    /// How to anonymize a record instead of deleting it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymization: Option<Anonymization>,
    /// Datasets this one references (a child table's foreign key to its parent),
    /// so erasure removes children before parents, and a hold on this one
    /// keeps the parent records its held rows refer to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub relations: Vec<Relation>,
    /// When retention runs happen; defaults to the schedule of the policy
    /// that sets the effective window, else daily.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// Stops a run that would change more than this before it changes anything.
    #[serde(default)]
    pub safety: Safety,
    /// Partitions of a table range-partitioned on its time column that lie
    /// wholly past the cutoff (and hold nothing held or under minimum
    /// retention) are dropped, detached, or deleted row by row.
    #[serde(default)]
    pub partitions: PartitionHandling,
    /// Count what would be affected, change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PartitionHandling {
    /// Drop whole partitions.
    #[default]
    Drop,
    /// Detach whole partitions, leaving them as tables for archiving.
    Detach,
    /// Delete row by row.
    Rows,
}

/// A table, optionally schema-qualified.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TableRef {
    /// Schema (PostgreSQL) or database (MySQL); the connection's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Identifier>,
    /// Table name.
    pub name: Identifier,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectLocation {
    /// Bucket name.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"))]
    pub bucket: String,
    /// Key prefix, e.g. `logs/`.
    #[serde(default)]
    #[schemars(length(max = 1024))]
    pub prefix: String,
    /// A date embedded in the key, e.g. `logs/{yyyy}/{mm}/{dd}/` (matched from
    /// the key's start; an object's time is the end of the day or month it
    /// names); without it the object's LastModified is the time basis. Other
    /// time fields in `timestamps` are read from user metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub key_date_pattern: Option<String>,
    /// Where a subject's objects live: ending in `/`, a prefix
    /// (`users/{user_id}/`); otherwise one key (`exports/{user_id}.zip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub subject_key_template: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyLocation {
    /// A SCAN pattern, e.g. `session:*`. Hashes are records whose fields are
    /// read by `timestamps` and `subjectFields`; sorted sets and sets are
    /// records by member, with the pseudo-fields `score` (a time) and `member`.
    #[schemars(length(min = 1, max = 1024))]
    pub pattern: String,
    /// Where a subject's keys live, e.g. `session:{user_id}:*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub subject_key_template: Option<String>,
    /// Keys without a TTL are given this one by retention passes (never a
    /// held subject's key, and not while a minimum retention applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl: Option<Duration>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileLocation {
    /// Directory relative to the store's root.
    #[serde(default)]
    #[schemars(regex(pattern = r"^([^/.][^/]*(/[^/.][^/]*)*)?$"), length(max = 4096))]
    pub directory: String,
    /// A date embedded in the file name, e.g. `access-{yyyy}-{mm}-{dd}.log`;
    /// without it the file's mtime is the time basis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub name_date_pattern: Option<String>,
    /// Where a subject's files live, e.g. `exports/{user_id}/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub subject_path_template: Option<String>,
}

/// The fields retention windows are measured from.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timestamps {
    /// When the record was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<Identifier>,
    /// When the subject was last active (or last expressed interest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<Identifier>,
    /// Named events, e.g. `accountClosed: closed_at`. A record whose event
    /// field is empty has not had the event and never expires by it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[a-z][A-Za-z0-9]{0,62}$'))").message("event names are lowerCamelCase, e.g. accountClosed"))]
    #[schemars(extend("maxProperties" = 16))]
    pub events: BTreeMap<String, Identifier>,
    /// What a time field stored as an integer counts since 1970-01-01 UTC.
    /// Required on PostgreSQL and MySQL/MariaDB for integer time columns;
    /// SQLite reads integers as seconds unless told otherwise. Fields of a
    /// date or time type are read as such whatever this says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix_time_unit: Option<UnixTimeUnit>,
}

/// The unit of a time stored as a number.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum UnixTimeUnit {
    Seconds,
    Milliseconds,
}

impl UnixTimeUnit {
    /// How many of this unit make a second.
    pub fn per_second(self) -> i64 {
        match self {
            UnixTimeUnit::Seconds => 1,
            UnixTimeUnit::Milliseconds => 1000,
        }
    }

    /// An instant as a count of this unit, rounded up: a stored count is
    /// below it exactly when the time it stands for is before the instant.
    pub fn count(self, t: DateTime<Utc>) -> i64 {
        let nanos = i64::from(t.timestamp_subsec_nanos());
        match self {
            UnixTimeUnit::Seconds => t.timestamp() + i64::from(nanos > 0),
            UnixTimeUnit::Milliseconds => t.timestamp_millis() + i64::from(nanos % 1_000_000 > 0),
        }
    }

    /// A count of this unit as an instant.
    pub fn instant(self, n: i64) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_millis(n.checked_mul(1000 / self.per_second())?)
    }
}

/// The time field name runs of a files or objects Dataset carry: a file's
/// or object's own time (the date in its name or key, else its
/// modification time).
pub const FILE_TIME: &str = "modified";

impl DatasetSpec {
    /// The identifier types a subject's records are found by: the subject
    /// fields, and the placeholders of a files Dataset's path template.
    pub fn subject_types(&self) -> Vec<String> {
        let mut types: Vec<String> = self.subject_fields.keys().cloned().collect();
        let templates = [
            self.files.as_ref().and_then(|f| f.subject_path_template.as_deref()),
            self.keys.as_ref().and_then(|k| k.subject_key_template.as_deref()),
            self.objects.as_ref().and_then(|o| o.subject_key_template.as_deref()),
        ];
        for tpl in templates.into_iter().flatten() {
            let mut rest = tpl;
            while let Some(start) = rest.find('{') {
                let Some(end) = rest[start..].find('}') else { break };
                types.push(rest[start + 1..start + end].to_string());
                rest = &rest[start + end + 1..];
            }
        }
        types.sort();
        types.dedup();
        types
    }

    /// The field a time basis is read from. Files and objects carry their
    /// own time, so their Datasets measure `created` without declaring it.
    pub fn time_field(&self, basis: TimeBasis, event: Option<&str>) -> Option<Identifier> {
        match self.timestamps.field_for(basis, event) {
            Some(f) => Some(f.clone()),
            None if (self.files.is_some() || self.objects.is_some()) && basis == TimeBasis::Created => {
                Some(Identifier::new(FILE_TIME).expect("a valid identifier"))
            }
            None => None,
        }
    }
}

impl Timestamps {
    /// The field for a time basis, if the dataset declares it.
    pub fn field_for(&self, basis: TimeBasis, event: Option<&str>) -> Option<&Identifier> {
        match basis {
            TimeBasis::Created => self.created.as_ref(),
            TimeBasis::LastActivity => self.last_activity.as_ref(),
            TimeBasis::Event => event.and_then(|e| self.events.get(e)),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Erasure {
    /// Delete a subject's records, or anonymize them in place.
    #[serde(default)]
    pub action: ExpiryAction,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.fields.exists(f, f.strategy == 'hash') || has(self.saltSecretRef)").message("strategy hash needs saltSecretRef (an unsalted hash of an e-mail address is not anonymous)").field_path(".saltSecretRef"))]
pub struct Anonymization {
    /// One rule per personal field.
    #[x_kube(merge_strategy = ListMerge::Map(vec!["field".into()]))]
    #[schemars(length(min = 1, max = 64))]
    pub fields: Vec<FieldRule>,
    /// Secret key holding the salt for `hash` (required when a rule hashes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt_secret_ref: Option<super::SecretKeyRef>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AnonymizeStrategy {
    /// Set to NULL (only for nullable fields).
    Null,
    /// Set to `value`.
    Fixed,
    /// Replace by a salted hash, truncated to the field's length (keeps uniqueness).
    Hash,
    /// Replace by a run of `*` of the same length.
    Redact,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.strategy != 'fixed' || has(self.value)").message("strategy fixed needs a value").field_path(".value"),
    validation = Rule::new("self.strategy == 'fixed' || !has(self.value)").message("value is only used with strategy fixed").field_path(".value"),
)]
pub struct FieldRule {
    /// The field (column) to anonymize.
    pub field: Identifier,
    /// How.
    pub strategy: AnonymizeStrategy,
    /// With `fixed`: the replacement value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub value: Option<String>,
}

/// A reference from this dataset (the child) to another (the parent).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.columns) == size(self.references)").message("a relation names as many columns as it references"))]
pub struct Relation {
    /// The parent Dataset in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub dataset: String,
    /// This dataset's key columns that point at the parent.
    #[schemars(length(min = 1, max = 16))]
    pub columns: Vec<Identifier>,
    /// The parent's columns they reference.
    #[schemars(length(min = 1, max = 16))]
    pub references: Vec<Identifier>,
}

fn default_max_delete_percent() -> i32 {
    20
}

/// The blast-radius brake.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Safety {
    /// A run that would change more than this share of the dataset stops for approval.
    #[serde(default = "default_max_delete_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub max_delete_percent: i32,
    /// A run that would change more than this many records stops for approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_delete_records: Option<i64>,
}

impl Default for Safety {
    fn default() -> Self {
        Safety { max_delete_percent: default_max_delete_percent(), max_delete_records: None }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (valid and being scheduled), `LastRunSucceeded`, `RetentionConflict`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The window that applies, and where it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_retention: Option<EffectiveRetention>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<DateTime<Utc>>,
    /// The most recent run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunSummary>,
    /// Age in seconds of the oldest record still past its window after the
    /// last run (0 is the evidence of compliance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_expired_age_seconds: Option<i64>,
    /// The last `lethe.dev/run-now` token acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_now_token: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveRetention {
    /// The strictest applicable maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_for: Option<String>,
    /// The longest applicable minimum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_at_least: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_from: Option<TimeBasis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ExpiryAction>,
    /// Which rule set the maximum: `RetentionPolicy/<name>` or `Dataset` (inline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_by: Option<String>,
    /// Which rule set the minimum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_set_by: Option<String>,
    /// Every rule that applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_affected: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<DateTime<Utc>>,
}
