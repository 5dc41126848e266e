//! One interface over the store drivers, built from Lethe's API types: the
//! controllers and `lethe scrub` talk to a `Driver`, never to a driver module.

use std::time::Duration;

use super::{
    Action, ConnectOptions, Counts, Limits, Outcome, PartitionMode, Probe, Progress, ScrubError, Selection, Table,
};
use super::{mysql::Mysql, postgres::Postgres, sqlite::Sqlite};
use crate::api::{DataStoreSpec, DatasetSpec, PartitionHandling, StoreLimits, StoreType};

/// A connected store.
pub enum Driver {
    Postgres(Postgres),
    Mysql(Mysql),
    Sqlite(Sqlite),
    Files(FilesDriver),
    Redis(super::redis::RedisDriver),
    S3(super::s3::S3Driver),
}

/// Files under a root, and the Dataset's directory in it (set by
/// [`Driver::for_dataset`]). A selection's subject and held values are
/// directories relative to the Dataset's directory (rendered from its
/// `subjectPathTemplate`); its time conditions apply to each file's time.
pub struct FilesDriver {
    store: super::files::FileStore,
    target: Option<crate::api::FileLocation>,
}

impl FilesDriver {
    fn selection(&self, sel: &Selection) -> Result<super::files::FileSelection, ScrubError> {
        let t = self.target.as_ref().ok_or_else(|| ScrubError::Config("the dataset names no files location".into()))?;
        let paths = |v: &[(crate::api::Identifier, Vec<String>)]| -> Vec<std::path::PathBuf> {
            v.iter().flat_map(|(_, vals)| vals.iter().map(std::path::PathBuf::from)).collect()
        };
        Ok(super::files::FileSelection {
            directory: t.directory.clone().into(),
            older_than: sel.older_than.as_ref().map(|(_, t)| *t),
            subject: paths(&sel.subject),
            keep_newer_than: sel.keep_newer_than.as_ref().map(|(_, t)| *t),
            held: paths(&sel.held),
            name_date_pattern: t.name_date_pattern.clone(),
        })
    }

    fn refuse_anonymize(action: &Action) -> Result<(), ScrubError> {
        super::delete_only(action, "files")
    }

    async fn run(
        &self,
        sel: &Selection,
        action: &Action,
        limits: &Limits,
        done_before: i64,
        on_progress: impl FnMut(&Progress),
    ) -> Result<Outcome, ScrubError> {
        Self::refuse_anonymize(action)?;
        let fsel = self.selection(sel)?;
        let mut source = FileBatches { store: &self.store, files: self.store.selected(&fsel)?, sel: &fsel, next: 0 };
        let mut out = super::drive(&mut source, limits, done_before, on_progress).await?;
        self.store.remove_subject_dirs(&fsel)?;
        out.remaining = self.store.selected(&fsel)?.len() as i64;
        Ok(out)
    }
}

/// Credentials read from the DataStore's Secret.
#[derive(Clone, Default)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
    /// The CA certificate (PEM) from the store's `tls.caSecretRef`.
    pub ca_pem: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a password.
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The files a pass removes, a batch at a time.
struct FileBatches<'a> {
    store: &'a super::files::FileStore,
    files: Vec<(std::path::PathBuf, u64)>,
    sel: &'a super::files::FileSelection,
    next: usize,
}

impl super::BatchSource for FileBatches<'_> {
    fn sizes(&self, limits: &Limits) -> (i64, i64, i64) {
        (limits.initial_batch, limits.min_batch, limits.max_batch)
    }

    async fn batch(&mut self, size: i64) -> Result<Option<i64>, ScrubError> {
        if self.next >= self.files.len() {
            return Ok(None);
        }
        let end = (self.next + size.max(1) as usize).min(self.files.len());
        let mut n = 0;
        for (path, _) in &self.files[self.next..end] {
            if self.store.remove(self.sel, path)? {
                n += 1;
            }
        }
        self.next = end;
        // Removing files blocks: let checkpoints and other work through.
        tokio::task::yield_now().await;
        Ok(Some(n))
    }
}

/// A DataStore's limits as the engine's.
pub fn limits(spec: &StoreLimits) -> Limits {
    let ms = |d: &crate::api::Duration| Duration::from_secs(d.seconds());
    Limits {
        target_batch: Duration::from_millis(spec.target_batch_millis.max(1) as u64),
        max_records_per_second: spec.max_records_per_second,
        connections: spec.max_connections_per_run.clamp(1, 16) as usize,
        lock_timeout: ms(&spec.lock_timeout),
        statement_timeout: ms(&spec.statement_timeout),
        ..Limits::default()
    }
}

/// A dataset's limits: its store's, with its own way of handling partitions.
pub fn dataset_limits(store: &StoreLimits, dataset: &DatasetSpec) -> Limits {
    Limits {
        partitions: match dataset.partitions {
            PartitionHandling::Drop => PartitionMode::Drop,
            PartitionHandling::Detach => PartitionMode::Detach,
            PartitionHandling::Rows => PartitionMode::Rows,
        },
        ..limits(store)
    }
}

/// A subject's key pattern in a Redis or S3 Dataset, from its
/// `subjectKeyTemplate`; `None` when there is no template or it names an
/// identifier type the subject lacks.
pub fn subject_key_pattern(
    dataset: &DatasetSpec,
    identifiers: &std::collections::BTreeMap<String, String>,
) -> Result<Option<String>, ScrubError> {
    if let Some(tpl) = dataset.keys.as_ref().and_then(|k| k.subject_key_template.as_deref()) {
        return super::redis::render_key_template(tpl, identifiers);
    }
    if let Some(tpl) = dataset.objects.as_ref().and_then(|o| o.subject_key_template.as_deref()) {
        return super::s3::render_key_template(tpl, identifiers);
    }
    Ok(None)
}

/// What a run does to the records it selects: delete, or anonymize by the
/// Dataset's field rules with `salt`.
pub fn action(action: crate::api::ExpiryAction, dataset: &DatasetSpec, salt: String) -> Action {
    match action {
        crate::api::ExpiryAction::Delete => Action::Delete,
        crate::api::ExpiryAction::Anonymize => Action::Anonymize {
            rules: dataset
                .anonymization
                .iter()
                .flat_map(|a| &a.fields)
                .map(|f| super::FieldRule { field: f.field.clone(), strategy: f.strategy, value: f.value.clone() })
                .collect(),
            salt,
        },
    }
}

/// The table a SQL dataset names (for files, keys and objects, a
/// placeholder: the driver reads the location from the Dataset).
pub fn table(dataset: &DatasetSpec) -> Result<Table, ScrubError> {
    if dataset.files.is_some() || dataset.keys.is_some() || dataset.objects.is_some() {
        return Ok(Table { schema: None, name: crate::api::Identifier::new("files").expect("a valid identifier") });
    }
    let t = dataset.table.as_ref().ok_or_else(|| ScrubError::Config("the dataset names no table".into()))?;
    Ok(Table { schema: t.schema.clone(), name: t.name.clone() })
}

impl Driver {
    /// Connects to the store a DataStore describes.
    pub async fn connect(store: &DataStoreSpec, credentials: &Credentials) -> Result<Driver, ScrubError> {
        let limits = limits(&store.limits);
        let sql = |default_port: u16| -> Result<ConnectOptions, ScrubError> {
            let c = store.sql.as_ref().ok_or_else(|| ScrubError::Config("the store has no sql connection".into()))?;
            Ok(ConnectOptions {
                host: c.host.clone(),
                port: c.port.unwrap_or(default_port),
                database: c.database.clone(),
                user: credentials.username.clone().unwrap_or_else(|| "lethe".into()),
                password: credentials.password.clone(),
                tls: super::tls::TlsOptions {
                    mode: Some(store.tls.as_ref().map(|t| t.mode).unwrap_or(crate::api::TlsMode::Prefer)),
                    ca_pem: credentials.ca_pem.clone(),
                },
            })
        };
        Ok(match store.type_ {
            StoreType::Postgres => Driver::Postgres(Postgres::connect(&sql(5432)?, &limits).await?),
            StoreType::Mysql | StoreType::Mariadb => Driver::Mysql(Mysql::connect(&sql(3306)?, &limits).await?),
            StoreType::Sqlite => {
                let path = &store
                    .sqlite
                    .as_ref()
                    .ok_or_else(|| ScrubError::Config("the store has no sqlite path".into()))?
                    .path;
                Driver::Sqlite(Sqlite::open(path, &limits).await?)
            }
            StoreType::Redis => {
                let c = store
                    .redis
                    .as_ref()
                    .ok_or_else(|| ScrubError::Config("the store has no redis connection".into()))?;
                Driver::Redis(
                    super::redis::RedisDriver::connect(
                        &c.host,
                        c.port.unwrap_or(6379),
                        c.database,
                        credentials.password.as_deref(),
                    )
                    .await?,
                )
            }
            StoreType::Filesystem => {
                let root = &store
                    .filesystem
                    .as_ref()
                    .ok_or_else(|| ScrubError::Config("the store has no filesystem root".into()))?
                    .root;
                Driver::Files(FilesDriver { store: super::files::FileStore::open(root)?, target: None })
            }
            StoreType::S3 => {
                let c = store.s3.as_ref().ok_or_else(|| ScrubError::Config("the store has no s3 connection".into()))?;
                let (Some(id), Some(secret)) = (&credentials.username, &credentials.password) else {
                    return Err(ScrubError::Config(
                        "an s3 store needs secretRef naming a Secret with the access key id (username) and secret access key (password)".into(),
                    ));
                };
                Driver::S3(super::s3::S3Driver::connect(&super::s3::S3Options {
                    endpoint: c.endpoint.clone(),
                    region: c.region.clone(),
                    force_path_style: c.force_path_style,
                    access_key_id: id.clone(),
                    secret_access_key: secret.clone(),
                    ca_pem: credentials.ca_pem.clone(),
                })?)
            }
        })
    }

    /// Binds a store to a Dataset: where its files, keys or objects are, and
    /// what an SQL table's integer time columns count.
    pub fn for_dataset(self, dataset: &DatasetSpec) -> Driver {
        let unit = dataset.timestamps.unix_time_unit;
        match self {
            Driver::Postgres(d) => Driver::Postgres(d.with_unix_time(unit)),
            Driver::Mysql(d) => Driver::Mysql(d.with_unix_time(unit)),
            Driver::Sqlite(d) => Driver::Sqlite(d.with_unix_time(unit)),
            Driver::Files(f) => Driver::Files(FilesDriver { target: dataset.files.clone(), ..f }),
            Driver::Redis(mut r) => {
                r.target = dataset.keys.clone();
                Driver::Redis(r)
            }
            Driver::S3(mut s) => {
                s.target = dataset.objects.clone();
                Driver::S3(s)
            }
        }
    }

    /// The server's version, as a short string for status.
    pub async fn server_version(&self) -> Result<String, ScrubError> {
        let v = match self {
            Driver::Postgres(d) => d.server_version().await?,
            Driver::Mysql(d) => d.server_version(),
            Driver::Sqlite(d) => d.server_version().await?,
            Driver::Files(_) => "filesystem".to_string(),
            Driver::Redis(r) => r.server_version().await?,
            Driver::S3(s) => s.server_version().await?,
        };
        Ok(v.split(" on ").next().unwrap_or_default().chars().take(64).collect())
    }

    pub fn store_type(&self) -> &'static str {
        match self {
            Driver::Postgres(_) => "postgres",
            Driver::Mysql(_) => "mysql",
            Driver::Sqlite(_) => "sqlite",
            Driver::Files(_) => "filesystem",
            Driver::Redis(_) => "redis",
            Driver::S3(_) => "s3",
        }
    }

    pub async fn probe(&self, table: &Table) -> Result<Probe, ScrubError> {
        match self {
            Driver::Postgres(d) => d.probe(table).await,
            Driver::Mysql(d) => d.probe(table).await,
            Driver::Sqlite(d) => d.probe(table).await,
            Driver::Files(_) => {
                Ok(Probe { server_version: "filesystem".into(), can_select: true, can_delete: true, can_update: false })
            }
            Driver::Redis(r) => Ok(Probe {
                server_version: r.server_version().await?,
                can_select: true,
                can_delete: true,
                can_update: false,
            }),
            Driver::S3(s) => Ok(Probe {
                server_version: s.server_version().await?,
                can_select: true,
                can_delete: true,
                can_update: false,
            }),
        }
    }

    /// Relations between tables (a selection's guards) are for SQL stores
    /// only; anywhere else they would be silently ignored, so refuse them.
    fn tables_only(&self, sel: &Selection) -> Result<(), ScrubError> {
        match self {
            Driver::Postgres(_) | Driver::Mysql(_) | Driver::Sqlite(_) => Ok(()),
            _ if sel.guards.is_empty() => Ok(()),
            _ => Err(ScrubError::Config(format!(
                "a {} store has no tables for a relation to keep records by",
                self.store_type()
            ))),
        }
    }

    pub async fn count(&self, sel: &Selection) -> Result<i64, ScrubError> {
        self.tables_only(sel)?;
        match self {
            Driver::Postgres(d) => d.count(sel).await,
            Driver::Mysql(d) => d.count(sel).await,
            Driver::Sqlite(d) => d.count(sel).await,
            Driver::Files(f) => Ok(f.store.selected(&f.selection(sel)?)?.len() as i64),
            Driver::Redis(r) => r.count(sel).await,
            Driver::S3(s) => s.count(sel).await,
        }
    }

    /// Records the selection still leaves for the action to do (not yet
    /// anonymized, for an anonymization); refuses anonymization rules the
    /// table cannot take, as the run would before any change.
    pub async fn pending(&self, sel: &Selection, action: &Action) -> Result<i64, ScrubError> {
        self.tables_only(sel)?;
        match self {
            Driver::Postgres(d) => d.pending(sel, action).await,
            Driver::Mysql(d) => d.pending(sel, action).await,
            Driver::Sqlite(d) => d.pending(sel, action).await,
            Driver::Files(f) => {
                FilesDriver::refuse_anonymize(action)?;
                Ok(f.store.selected(&f.selection(sel)?)?.len() as i64)
            }
            Driver::Redis(r) => {
                super::redis::RedisDriver::refuse_anonymize(action)?;
                r.count(sel).await
            }
            Driver::S3(s) => {
                super::s3::S3Driver::refuse_anonymize(action)?;
                s.count(sel).await
            }
        }
    }

    /// The earliest (or, with `newest`, latest) value of `column` among the records a selection matches.
    pub async fn extreme(
        &self,
        sel: &Selection,
        column: &crate::api::Identifier,
        newest: bool,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, ScrubError> {
        self.tables_only(sel)?;
        match self {
            Driver::Postgres(d) => d.extreme(sel, column, newest).await,
            Driver::Mysql(d) => d.extreme(sel, column, newest).await,
            Driver::Sqlite(d) => d.extreme(sel, column, newest).await,
            Driver::Files(f) => f.store.extreme(&f.selection(sel)?, newest),
            Driver::Redis(r) => r.extreme(sel, column, newest).await,
            Driver::S3(s) => s.extreme(sel, column, newest).await,
        }
    }

    /// Foreign keys touching a table, as (child table, parent table).
    pub async fn foreign_keys(&self, table: &Table) -> Result<Vec<(String, String)>, ScrubError> {
        match self {
            Driver::Postgres(d) => d.foreign_keys(table).await,
            Driver::Mysql(d) => d.foreign_keys(table).await,
            Driver::Sqlite(d) => d.foreign_keys(table).await,
            Driver::Files(_) | Driver::Redis(_) | Driver::S3(_) => Ok(vec![]),
        }
    }

    /// Foreign keys referencing a table, with their columns (SQL stores; none elsewhere).
    pub async fn referencing_keys(&self, table: &Table) -> Result<Vec<super::ReferencingKey>, ScrubError> {
        match self {
            Driver::Postgres(d) => d.referencing_keys(table).await,
            Driver::Mysql(d) => d.referencing_keys(table).await,
            Driver::Sqlite(d) => d.referencing_keys(table).await,
            Driver::Files(_) | Driver::Redis(_) | Driver::S3(_) => Ok(vec![]),
        }
    }

    /// What the foreign keys refusing the action keep of a table: a guard
    /// for each key that neither cascades nor sets a value, on delete for
    /// a delete, on update for an anonymization rewriting a column the key
    /// references (SQL stores; none elsewhere).
    pub async fn reference_guards(&self, table: &Table, action: &Action) -> Result<Vec<super::Guard>, ScrubError> {
        let keys = self.referencing_keys(table).await?;
        keys.iter().filter_map(|k| k.guard(action).transpose()).collect()
    }

    /// The dry run.
    pub async fn plan(&self, sel: &Selection) -> Result<Counts, ScrubError> {
        self.tables_only(sel)?;
        match self {
            Driver::Postgres(d) => d.plan(sel).await,
            Driver::Mysql(d) => d.plan(sel).await,
            Driver::Sqlite(d) => d.plan(sel).await,
            Driver::Files(f) => {
                let c = f.store.plan(&f.selection(sel)?)?;
                Ok(Counts {
                    selected: c.selected,
                    total: c.total,
                    held: c.held,
                    under_minimum: c.under_minimum,
                    ..Counts::default()
                })
            }
            Driver::Redis(r) => r.plan(sel).await,
            Driver::S3(s) => s.plan(sel).await,
        }
    }

    pub async fn run(
        &self,
        sel: &Selection,
        action: &Action,
        limits: &Limits,
        done_before: i64,
        on_progress: impl FnMut(&Progress),
    ) -> Result<Outcome, ScrubError> {
        self.tables_only(sel)?;
        match self {
            Driver::Postgres(d) => d.run(sel, action, limits, done_before, on_progress).await,
            Driver::Mysql(d) => d.run(sel, action, limits, done_before, on_progress).await,
            Driver::Sqlite(d) => d.run(sel, action, limits, done_before, on_progress).await,
            Driver::Files(f) => f.run(sel, action, limits, done_before, on_progress).await,
            Driver::Redis(r) => r.run(sel, action, limits, done_before, on_progress).await,
            Driver::S3(s) => s.run(sel, action, limits, done_before, on_progress).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_print_the_password() {
        let c = Credentials { username: Some("u".into()), password: Some("hunter2".into()), ca_pem: None };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn store_limits_map_to_engine_limits() {
        let l = limits(&StoreLimits::default());
        assert_eq!(l.lock_timeout, Duration::from_secs(2));
        assert_eq!(l.statement_timeout, Duration::from_secs(30));
        assert_eq!(l.target_batch, Duration::from_millis(200));
        assert_eq!(l.connections, 1, "one connection unless the store allows more");
        let two = limits(&StoreLimits { max_connections_per_run: 2, ..StoreLimits::default() });
        assert_eq!(two.connections, 2);
    }
}
