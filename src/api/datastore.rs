//! DataStore: a registered store where personal data lives.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Duration, SecretKeyRef};

/// The kind of store.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StoreType {
    Postgres,
    Mysql,
    Mariadb,
    Sqlite,
    S3,
    Redis,
    Filesystem,
}

impl StoreType {
    pub fn as_str(&self) -> &'static str {
        match self {
            StoreType::Postgres => "postgres",
            StoreType::Mysql => "mysql",
            StoreType::Mariadb => "mariadb",
            StoreType::Sqlite => "sqlite",
            StoreType::S3 => "s3",
            StoreType::Redis => "redis",
            StoreType::Filesystem => "filesystem",
        }
    }

    /// Stores whose datasets are tables with columns.
    pub fn is_sql(&self) -> bool {
        matches!(self, StoreType::Postgres | StoreType::Mysql | StoreType::Mariadb | StoreType::Sqlite)
    }
}

/// A registered store. Credentials come from a Secret only; the schema has
/// no field for an inline password.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "lethe.dev",
    version = "v1alpha1",
    kind = "DataStore",
    plural = "datastores",
    shortname = "dstore",
    category = "lethe",
    namespaced,
    status = "DataStoreStatus",
    doc = "A store where personal data lives: a database, bucket, Redis or volume, with credentials from a Secret.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.serverVersion"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("(self.type in ['postgres', 'mysql', 'mariadb']) == has(self.sql)").message("postgres, mysql and mariadb stores are configured under 'sql' (and only they)"),
    validation = Rule::new("(self.type == 'sqlite') == has(self.sqlite)").message("sqlite stores are configured under 'sqlite' (and only they)"),
    validation = Rule::new("(self.type == 's3') == has(self.s3)").message("s3 stores are configured under 's3' (and only they)"),
    validation = Rule::new("(self.type == 'redis') == has(self.redis)").message("redis stores are configured under 'redis' (and only they)"),
    validation = Rule::new("(self.type == 'filesystem') == has(self.filesystem)").message("filesystem stores are configured under 'filesystem' (and only they)"),
    validation = Rule::new("!has(self.tls) || self.type in ['postgres', 'mysql', 'mariadb', 'redis', 's3']").message("tls applies to network stores").field_path(".tls"),
)]
pub struct DataStoreSpec {
    /// The kind of store.
    #[serde(rename = "type")]
    pub type_: StoreType,
    /// Connection to PostgreSQL, MySQL or MariaDB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<SqlConnection>,
    /// An SQLite database file (for the demo and small installs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlite: Option<SqliteConnection>,
    /// An S3-compatible object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Connection>,
    /// A Redis server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisConnection>,
    /// Files on a volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FilesystemLocation>,
    /// Credentials from a Secret in the same namespace (never inline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<CredentialsSecretRef>,
    /// Transport security.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// How hard Lethe may work this store.
    #[serde(default)]
    pub limits: StoreLimits,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SqlConnection {
    /// Host name or address of the server.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// Port; the store type's default when unset (5432 or 3306).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// Database name.
    #[schemars(length(min = 1, max = 63))]
    pub database: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SqliteConnection {
    /// Absolute path of the database file, as seen by the scrub process.
    #[schemars(regex(pattern = "^/"), length(max = 4096))]
    pub path: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Connection {
    /// Endpoint URL for non-AWS servers, e.g. `https://minio.storage:9000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^https?://"), length(max = 2048))]
    pub endpoint: Option<String>,
    /// Region.
    #[serde(default = "default_region")]
    #[schemars(length(min = 1, max = 64))]
    pub region: String,
    /// Address buckets by path (`endpoint/bucket/key`), as most non-AWS servers need.
    #[serde(default)]
    pub force_path_style: bool,
}

fn default_region() -> String {
    "us-east-1".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisConnection {
    /// Host name or address of the server.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// Port (default 6379).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// Logical database number.
    #[serde(default)]
    #[schemars(range(min = 0, max = 15))]
    pub database: u8,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilesystemLocation {
    /// A PersistentVolumeClaim in the same namespace that scrub Jobs mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub persistent_volume_claim: Option<String>,
    /// Absolute root directory; nothing outside it is ever touched.
    #[schemars(regex(pattern = "^/"), length(max = 4096))]
    pub root: String,
}

/// Which Secret and keys hold the credentials. The values never appear in
/// a Lethe resource.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// The Secret in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key of the user name (S3: the access key id).
    #[serde(default = "default_username_key")]
    #[schemars(length(min = 1, max = 253))]
    pub username_key: String,
    /// Key of the password (S3: the secret access key).
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1, max = 253))]
    pub password_key: String,
}

fn default_username_key() -> String {
    "username".into()
}

fn default_password_key() -> String {
    "password".into()
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TlsMode {
    /// No TLS.
    Disable,
    /// TLS if the server offers it.
    #[default]
    Prefer,
    /// TLS, without verifying the certificate.
    Require,
    /// TLS with a certificate signed by the given CA.
    VerifyCA,
    /// TLS with a certificate signed by the given CA and matching the host name.
    VerifyFull,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(self.mode in ['verifyCA', 'verifyFull']) || has(self.caSecretRef)").message("verifyCA and verifyFull need caSecretRef"))]
pub struct Tls {
    /// How strictly the connection is secured.
    #[serde(default)]
    pub mode: TlsMode,
    /// The CA certificate (PEM) to verify the server against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
}

fn default_concurrency() -> i32 {
    1
}

fn default_connections_per_run() -> i32 {
    1
}

fn default_target_batch_millis() -> i32 {
    200
}

fn default_lock_timeout() -> Duration {
    "2s".parse().expect("valid default")
}

fn default_statement_timeout() -> Duration {
    "30s".parse().expect("valid default")
}

/// Bounds on the load Lethe puts on a production store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreLimits {
    /// Runs against this store at the same time.
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = 1, max = 64))]
    pub max_concurrent_runs: i32,
    /// Connections one run may use at once: a large PostgreSQL deletion
    /// splits its pass over the table between them. More is faster and
    /// weighs more on the server's other work.
    #[serde(default = "default_connections_per_run")]
    #[schemars(range(min = 1, max = 16))]
    pub max_connections_per_run: i32,
    /// Upper bound on records changed per second (unset: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_records_per_second: Option<i64>,
    /// Batches are sized to take about this long, each in its own transaction.
    #[serde(default = "default_target_batch_millis")]
    #[schemars(range(min = 10, max = 10000))]
    pub target_batch_millis: i32,
    /// Give up a batch that waits longer than this for a lock.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout: Duration,
    /// Abort any single statement after this long.
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout: Duration,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_concurrent_runs: default_concurrency(),
            max_connections_per_run: default_connections_per_run(),
            max_records_per_second: None,
            target_batch_millis: default_target_batch_millis(),
            lock_timeout: default_lock_timeout(),
            statement_timeout: default_statement_timeout(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataStoreStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the store was reached with the given credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Version string the server reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// When connectivity was last probed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<DateTime<Utc>>,
}
