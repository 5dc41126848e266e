//! Types shared by several Lethe resources.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Duration;

/// Pattern of an identifier type name (`user_id`, `email`, `device_id`).
pub const IDENTIFIER_TYPE_PATTERN: &str = "^[a-z][a-z0-9_]{0,62}$";

/// A reference to an object of another kind in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct LocalRef {
    /// Name of the referenced object in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// One key of a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// What kind of personal data a dataset holds. Policies and holds select
/// datasets by category.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DataCategory {
    /// Names, postal addresses, e-mail addresses, phone numbers.
    Contact,
    /// Government identifiers, identity verification data.
    Identity,
    /// Payment and billing data, invoices.
    Financial,
    /// Passwords, tokens, security questions.
    Credentials,
    /// Device identifiers, hardware and browser properties.
    Device,
    /// Precise or coarse location.
    Location,
    /// How a person uses the service.
    Usage,
    /// Server, network access and application logs.
    Logs,
    /// Marketing preferences and campaign data.
    Marketing,
    /// Cookies, analytics and tracking identifiers.
    Tracking,
    /// Support tickets and correspondence.
    Support,
    /// Data about children.
    Children,
    /// Health data.
    Health,
    /// Content a person created or uploaded.
    Content,
    /// Anything else.
    Other,
}

impl DataCategory {
    pub fn as_str(&self) -> &'static str {
        match self {
            DataCategory::Contact => "contact",
            DataCategory::Identity => "identity",
            DataCategory::Financial => "financial",
            DataCategory::Credentials => "credentials",
            DataCategory::Device => "device",
            DataCategory::Location => "location",
            DataCategory::Usage => "usage",
            DataCategory::Logs => "logs",
            DataCategory::Marketing => "marketing",
            DataCategory::Tracking => "tracking",
            DataCategory::Support => "support",
            DataCategory::Children => "children",
            DataCategory::Health => "health",
            DataCategory::Content => "content",
            DataCategory::Other => "other",
        }
    }
}

/// The point in time a retention window is measured from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TimeBasis {
    /// When the record was created (the dataset's `timestamps.created`).
    #[default]
    Created,
    /// When the subject was last active (the dataset's `timestamps.lastActivity`).
    LastActivity,
    /// A named event such as an account closure (the dataset's `timestamps.events`).
    Event,
}

/// What happens to a record once its window has passed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ExpiryAction {
    /// Remove the record.
    #[default]
    Delete,
    /// Keep the record but replace its personal fields by the dataset's anonymization rules.
    Anonymize,
}

/// How long data may be kept and what happens afterwards. Used inline on a
/// Dataset and by RetentionPolicies.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.keepFor) || has(self.keepAtLeast)").message("set keepFor (the maximum), keepAtLeast (the minimum), or both"),
    validation = Rule::new("self.measuredFrom != 'event' || has(self.event)").message("measuredFrom: event needs the event's name in 'event'").field_path(".event"),
    validation = Rule::new("!has(self.event) || self.measuredFrom == 'event'").message("'event' is only used with measuredFrom: event").field_path(".event"),
)]
pub struct RetentionRule {
    /// The maximum: data older than this (from `measuredFrom`) is deleted or anonymized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_for: Option<Duration>,
    /// The minimum (a legal, tax or accounting obligation): data younger than
    /// this is never deleted, not even on a subject's request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_at_least: Option<Duration>,
    /// What the window is measured from.
    #[serde(default)]
    pub measured_from: TimeBasis,
    /// With `measuredFrom: event`: the event's name, a key of the Dataset's `timestamps.events`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z][A-Za-z0-9]{0,62}$"))]
    pub event: Option<String>,
    /// What happens to an expired record.
    #[serde(default)]
    pub action: ExpiryAction,
}

/// Whether a new run may start while an earlier one of the same dataset is still running.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Skip the new run while one is active (the safe default for deletes).
    #[default]
    Forbid,
    /// Cancel the active run and start the new one.
    Replace,
}

fn default_succeeded_history() -> i32 {
    3
}

fn default_failed_history() -> i32 {
    3
}

/// When retention runs happen.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.cron) != has(self.interval)").message("set exactly one of cron and interval"),
    validation = Rule::new("!has(self.timeZone) || has(self.cron)").message("timeZone applies to cron schedules").field_path(".timeZone"),
)]
pub struct Schedule {
    /// A five-field cron expression (minute hour day-of-month month day-of-week), e.g. `30 2 * * *`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^\S+( \S+){4}$"), length(max = 128))]
    pub cron: Option<String>,
    /// An IANA time zone for the cron expression, e.g. `Europe/Berlin`. Default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z_]+(/[A-Za-z0-9_+-]+){0,2}$"), length(max = 64))]
    pub time_zone: Option<String>,
    /// Alternatively to cron, a fixed interval such as `6h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Stop starting new runs (running ones finish).
    #[serde(default)]
    pub suspend: bool,
    /// A run missed by more than this many seconds (operator down) is skipped
    /// instead of started late, so an outage does not cause a catch-up storm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub starting_deadline_seconds: Option<i64>,
    /// What to do when a run is due while the previous one is still running.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// Succeeded runs to keep as history.
    #[serde(default = "default_succeeded_history")]
    #[schemars(range(min = 0, max = 100))]
    pub successful_runs_history_limit: i32,
    /// Failed runs to keep as history.
    #[serde(default = "default_failed_history")]
    #[schemars(range(min = 0, max = 100))]
    pub failed_runs_history_limit: i32,
}

/// Identifier values of one data subject, by identifier type
/// (`user_id: "42"`, `email: "a@example.com"`).
pub type IdentifierMap = BTreeMap<String, String>;

/// Standard status conditions, merged by `type` under server-side apply.
pub type Conditions = Vec<Condition>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_names_match_serde() {
        for c in [DataCategory::Contact, DataCategory::Logs, DataCategory::Children, DataCategory::Other] {
            assert_eq!(serde_json::to_value(c).unwrap(), serde_json::json!(c.as_str()));
        }
    }
}
