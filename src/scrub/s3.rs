//! S3-compatible object storage: a Dataset is a bucket and a key prefix,
//! and every object version in it is a record. Its time is the date the key
//! carries (`keyDatePattern`, the end of the day or month it names) or else
//! its LastModified; any other time or subject field is read from the
//! object's user metadata (`x-amz-meta-<field>`, one HEAD per object). A
//! subject's objects are also found by the Dataset's `subjectKeyTemplate`:
//! a template ending in `/` names a prefix, any other names one key, and an
//! identifier can never widen either.
//!
//! In a versioned bucket (versioning enabled or suspended) a pass lists
//! every version and deletes each selected one by its version id, so an
//! erasure removes the data itself, not just its current version, and a
//! retention pass also removes expired noncurrent versions; a delete
//! marker goes once every version of its key does (its key names the
//! subject too). Objects are deleted with `DeleteObjects`, 1,000 keys a
//! call, a few calls at a time; throttled keys are retried with backoff.
//! An object an S3 Object Lock protects (retention or legal hold) is never
//! forced: it is counted with the date it becomes deletable and stays
//! selected, so the verification reports it.
//!
//! Passes are idempotent: listing again after a kill finds only what is
//! left. Keys never appear in errors or logs (they name subjects).

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{BucketVersioningStatus, Delete, ObjectIdentifier, ObjectLockLegalHoldStatus};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt, stream};

use super::keys::{Class, KEY_FIELD, classify, fields, glob_escape, parse_time};
use super::{Action, Counts, Limits, Locked, Outcome, Progress, ScrubError, Selection};
use crate::api::{FILE_TIME, Identifier, ObjectLocation};

/// Keys S3 accepts per `DeleteObjects` call (and returns per listing page).
const PAGE: usize = 1000;
/// Keys asked for per listing page. S3 answers at most 1,000 whatever is
/// asked; servers that allow larger pages answer with fewer round trips.
const LIST_MAX: usize = 10_000;
/// `DeleteObjects` calls in flight at once.
const DELETE_CONCURRENCY: usize = 4;
/// HEAD requests in flight at once when metadata is needed.
const HEAD_CONCURRENCY: usize = 16;
/// Attempts for keys a `DeleteObjects` call answers with a throttling error.
const KEY_ATTEMPTS: u32 = 5;

/// Where and as whom the driver connects.
#[derive(Clone)]
pub struct S3Options {
    /// `https://host:port` for non-AWS servers; AWS's regional endpoint when unset.
    pub endpoint: Option<String>,
    pub region: String,
    pub force_path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Trust only this CA (PEM) instead of the system's roots.
    pub ca_pem: Option<String>,
}

pub struct S3Driver {
    client: Client,
    endpoint: String,
    pub(super) target: Option<ObjectLocation>,
    versioned: tokio::sync::OnceCell<bool>,
}

/// One entry of a listing: an object version or a delete marker.
#[derive(Debug, Clone)]
struct Version {
    key: String,
    id: Option<String>,
    modified: DateTime<Utc>,
    marker: bool,
}

/// A service error's code and message, never the request (its key names a subject).
fn service_error<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static, R: std::fmt::Debug>(
    what: &str,
    e: SdkError<E, R>,
) -> ScrubError {
    let status = e.raw_response().map(|r| format!("{r:?}")).unwrap_or_default();
    match &e {
        SdkError::ServiceError(_) => {
            let code = e.code().unwrap_or("").to_string();
            let msg = format!("{what}: {} {}", code, e.message().unwrap_or("")).trim_end().to_string();
            classify_code(&code, msg, &status)
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ScrubError::Unavailable(format!("{what}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)))
        }
        _ => ScrubError::Config(format!("{what}: {}", aws_sdk_s3::error::DisplayErrorContext(&e))),
    }
}

fn classify_code(code: &str, msg: String, status: &str) -> ScrubError {
    match code {
        "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AllAccessDisabled" | "Forbidden" => {
            ScrubError::Access(msg)
        }
        "SlowDown" | "RequestTimeout" | "RequestLimitExceeded" | "Throttling" => ScrubError::Busy(msg),
        "InternalError" | "ServiceUnavailable" => ScrubError::Unavailable(msg),
        "NoSuchBucket" | "NotFound" => ScrubError::Config(msg),
        _ if status.contains("StatusCode(403)") => ScrubError::Access(msg),
        _ if status.contains("StatusCode(404)") => ScrubError::Config(format!("{msg} (not found)")),
        _ if status.contains("StatusCode(5") => ScrubError::Unavailable(msg),
        _ => ScrubError::Config(msg),
    }
}

fn to_chrono(t: Option<&aws_sdk_s3::primitives::DateTime>) -> Option<DateTime<Utc>> {
    let t = t?;
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

/// Renders a subject key template for one subject as a key pattern: a
/// template ending in `/` names everything under that prefix, any other
/// one key. `None` when it names an identifier type the subject lacks.
pub fn render_key_template(
    template: &str,
    identifiers: &BTreeMap<String, String>,
) -> Result<Option<String>, ScrubError> {
    let literal = super::render_template(template, identifiers, |key, value| {
        if value.is_empty() || value.contains('/') {
            return Err(ScrubError::Config(format!(
                "an identifier of type {key:?} that is empty or holds '/' cannot name a subject's objects"
            )));
        }
        Ok(value.to_string())
    })?;
    Ok(literal.map(|l| {
        let mut p = glob_escape(&l);
        if l.ends_with('/') {
            p.push('*');
        }
        p
    }))
}

/// Locked objects summed by when (and whether) they become deletable.
fn grouped(locked: impl IntoIterator<Item = Locked>) -> Vec<Locked> {
    let mut by: BTreeMap<(Option<DateTime<Utc>>, bool), i64> = BTreeMap::new();
    for l in locked {
        *by.entry((l.until, l.legal_hold)).or_default() += l.objects;
    }
    by.into_iter().map(|((until, legal_hold), objects)| Locked { until, legal_hold, objects }).collect()
}

/// The literal start of a key pattern: what a listing can ask for by prefix.
fn literal_prefix(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => out.push(n),
                None => break,
            },
            '*' | '?' | '[' => break,
            c => out.push(c),
        }
    }
    out
}

/// Where a listing over the keys in scope has got to.
struct Lister {
    prefixes: Vec<String>,
    next: usize,
    versioned: bool,
    token: Option<String>,
    key_marker: Option<String>,
    version_marker: Option<String>,
    /// The last key's versions of a truncated page: more may follow.
    carry: Vec<Version>,
    /// The Dataset's own prefix: nothing outside it is ever in scope.
    dataset: String,
    names: Vec<String>,
    date_pattern: Option<String>,
}

/// An S3 client for a store: rustls with ring, the store's CA if it names
/// one, standard retries (with backoff on throttling) up to 5 attempts.
pub fn client(o: &S3Options) -> Result<Client, ScrubError> {
    use aws_smithy_http_client::tls;
    let mut builder = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring));
    if let Some(ca) = &o.ca_pem {
        let store = tls::TrustStore::empty().with_native_roots(false).with_pem_certificate(ca.as_bytes());
        let ctx = tls::TlsContext::builder()
            .with_trust_store(store)
            .build()
            .map_err(|e| ScrubError::Config(format!("the store's CA certificate: {e}")))?;
        builder = builder.tls_context(ctx);
    }
    let creds =
        aws_sdk_s3::config::Credentials::new(&o.access_key_id, &o.secret_access_key, None, None, "lethe-datastore");
    let mut conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(o.region.clone()))
        .credentials_provider(creds)
        .force_path_style(o.force_path_style)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(5))
        .http_client(builder.build_https());
    if let Some(e) = &o.endpoint {
        conf = conf.endpoint_url(e.clone());
    }
    Ok(Client::from_conf(conf.build()))
}

impl S3Driver {
    pub fn connect(o: &S3Options) -> Result<S3Driver, ScrubError> {
        Ok(S3Driver {
            client: client(o)?,
            endpoint: o.endpoint.clone().unwrap_or_else(|| format!("AWS {}", o.region)),
            target: None,
            versioned: tokio::sync::OnceCell::new(),
        })
    }

    fn location(&self) -> Result<&ObjectLocation, ScrubError> {
        self.target.as_ref().ok_or_else(|| ScrubError::Config("the dataset names no bucket".into()))
    }

    /// Reaches the server: with a Dataset, its bucket; else any answer to a
    /// signed request that is not a credentials error.
    pub async fn server_version(&self) -> Result<String, ScrubError> {
        let host = self.endpoint.split("://").last().unwrap_or_default().trim_end_matches('/');
        if let Some(t) = &self.target {
            self.client.head_bucket().bucket(&t.bucket).send().await.map_err(|e| service_error("HeadBucket", e))?;
        } else {
            match self.client.list_buckets().send().await.map_err(|e| service_error("ListBuckets", e)) {
                Ok(_) => {}
                // Signed and understood, only not allowed to list: the credentials work.
                Err(ScrubError::Access(m)) if m.contains("AccessDenied") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(format!("S3 {host}"))
    }

    /// Whether the bucket keeps versions (enabled or suspended); a bucket
    /// whose versioning cannot be read is listed by version to be safe.
    async fn versioned(&self) -> Result<bool, ScrubError> {
        let bucket = self.location()?.bucket.clone();
        self.versioned
            .get_or_try_init(|| async {
                match self.client.get_bucket_versioning().bucket(&bucket).send().await {
                    Ok(v) => Ok(matches!(
                        v.status(),
                        Some(BucketVersioningStatus::Enabled | BucketVersioningStatus::Suspended)
                    )),
                    // Some servers answer for a bucket never versioned with a
                    // document the client cannot decode; read its status from
                    // the body itself.
                    Err(e) if e.raw_response().is_some_and(|r| r.status().is_success()) => {
                        let body = e.raw_response().and_then(|r| r.body().bytes()).unwrap_or_default();
                        let body = String::from_utf8_lossy(body);
                        Ok(body.contains("<Status>Enabled</Status>") || body.contains("<Status>Suspended</Status>"))
                    }
                    Err(e) => match service_error("GetBucketVersioning", e) {
                        ScrubError::Access(_) => Ok(true),
                        other => Err(other),
                    },
                }
            })
            .await
            .copied()
    }

    /// A listing over the objects in scope.
    async fn lister(&self, sel: &Selection) -> Result<Lister, ScrubError> {
        if sel.older_than.is_none() && sel.subject.iter().all(|(_, v)| v.is_empty()) {
            return Err(ScrubError::Config("a run must select by time, by subject, or both".into()));
        }
        let t = self.location()?;
        let by_key_only = !sel.subject.is_empty() && sel.subject.iter().all(|(c, _)| c.to_string() == KEY_FIELD);
        let mut prefixes: Vec<String> = if by_key_only {
            // Only a subject's keys: list under each of their prefixes.
            sel.subject.iter().flat_map(|(_, v)| v.iter().map(|p| literal_prefix(p))).collect()
        } else {
            vec![t.prefix.clone()]
        };
        prefixes.sort();
        prefixes.dedup();
        // A prefix inside another is listed by it.
        let mut outer: Vec<String> = Vec::new();
        for p in prefixes {
            if !outer.iter().any(|o| p.starts_with(o.as_str())) {
                outer.push(p);
            }
        }
        Ok(Lister {
            prefixes: outer,
            next: 0,
            versioned: self.versioned().await?,
            token: None,
            key_marker: None,
            version_marker: None,
            carry: vec![],
            dataset: t.prefix.clone(),
            names: fields(sel),
            date_pattern: t.key_date_pattern.clone(),
        })
    }

    /// The next page of entries in scope, whole keys only; `None` at the end.
    async fn page(&self, l: &mut Lister, max: usize) -> Result<Option<Vec<Version>>, ScrubError> {
        let bucket = self.location()?.bucket.clone();
        let max = max.clamp(1, LIST_MAX) as i32;
        while l.next < l.prefixes.len() {
            let prefix = l.prefixes[l.next].clone();
            let mut entries = if l.versioned {
                let r = self
                    .client
                    .list_object_versions()
                    .bucket(&bucket)
                    .prefix(&prefix)
                    .max_keys(max)
                    .set_key_marker(l.key_marker.clone())
                    .set_version_id_marker(l.version_marker.clone())
                    .send()
                    .await
                    .map_err(|e| service_error("ListObjectVersions", e))?;
                let mut all = std::mem::take(&mut l.carry);
                let mut page: Vec<Version> = r
                    .versions()
                    .iter()
                    .map(|v| Version {
                        key: v.key().unwrap_or_default().to_string(),
                        id: v.version_id().map(str::to_string),
                        modified: to_chrono(v.last_modified()).unwrap_or_else(Utc::now),
                        marker: false,
                    })
                    .chain(r.delete_markers().iter().map(|m| Version {
                        key: m.key().unwrap_or_default().to_string(),
                        id: m.version_id().map(str::to_string),
                        modified: to_chrono(m.last_modified()).unwrap_or_else(Utc::now),
                        marker: true,
                    }))
                    .collect();
                page.sort_by(|a, b| a.key.cmp(&b.key));
                all.extend(page);
                if r.is_truncated() == Some(true) {
                    l.key_marker = r.next_key_marker().map(str::to_string);
                    l.version_marker = r.next_version_id_marker().map(str::to_string);
                    // The last key's versions may continue on the next page.
                    if let Some(last) = all.last().map(|v| v.key.clone()) {
                        let split = all.iter().position(|v| v.key == last).unwrap_or(all.len());
                        l.carry = all.split_off(split);
                    }
                } else {
                    l.key_marker = None;
                    l.version_marker = None;
                    l.next += 1;
                }
                all
            } else {
                let r = self
                    .client
                    .list_objects_v2()
                    .bucket(&bucket)
                    .prefix(&prefix)
                    .max_keys(max)
                    .set_continuation_token(l.token.clone())
                    .send()
                    .await
                    .map_err(|e| service_error("ListObjectsV2", e))?;
                if r.is_truncated() == Some(true) {
                    l.token = r.next_continuation_token().map(str::to_string);
                } else {
                    l.token = None;
                    l.next += 1;
                }
                r.contents()
                    .iter()
                    .map(|o| Version {
                        key: o.key().unwrap_or_default().to_string(),
                        id: None,
                        modified: to_chrono(o.last_modified()).unwrap_or_else(Utc::now),
                        marker: false,
                    })
                    .collect()
            };
            entries.retain(|v| v.key.starts_with(&l.dataset));
            if !entries.is_empty() {
                return Ok(Some(entries));
            }
        }
        Ok(None)
    }

    /// A version's time: the date its key carries, else its LastModified.
    fn time_of(l: &Lister, v: &Version) -> Option<DateTime<Utc>> {
        match &l.date_pattern {
            Some(p) => super::files::embedded_date(p, &v.key, false),
            None => Some(v.modified),
        }
    }

    /// The values a selection reads, per entry: the time under `modified`,
    /// user metadata for every other field (HEAD, for object versions only).
    async fn values(&self, l: &Lister, entries: &[Version]) -> Result<Vec<Vec<Option<String>>>, ScrubError> {
        let needs_head = l.names.iter().any(|n| n != FILE_TIME);
        let bucket = self.location()?.bucket.clone();
        let metadata: Vec<Option<std::collections::HashMap<String, String>>> = if needs_head {
            // Collected first: a lazy iterator of borrowing futures is not Send for every lifetime.
            let heads: Vec<_> = entries
                .iter()
                .map(|v| {
                    let bucket = bucket.clone();
                    async move {
                        if v.marker {
                            return Ok(None);
                        }
                        let r = self
                            .client
                            .head_object()
                            .bucket(bucket)
                            .key(&v.key)
                            .set_version_id(v.id.clone().filter(|id| id != "null"))
                            .send()
                            .await;
                        match r {
                            // Metadata names are case-insensitive (S3 keeps them lower-case).
                            Ok(h) => Ok(h
                                .metadata()
                                .map(|m| m.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect())),
                            // Gone since the listing: nothing to read, nothing to delete.
                            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
                            Err(e) => Err(service_error("HeadObject", e)),
                        }
                    }
                })
                .map(futures::FutureExt::boxed)
                .collect();
            stream::iter(heads).buffered(HEAD_CONCURRENCY).try_collect().await?
        } else {
            vec![None; entries.len()]
        };
        Ok(entries
            .iter()
            .zip(metadata)
            .map(|(v, meta)| {
                l.names
                    .iter()
                    .map(|n| {
                        if n == FILE_TIME {
                            Self::time_of(l, v).map(|t| t.to_rfc3339())
                        } else {
                            meta.as_ref().and_then(|m| m.get(&n.to_ascii_lowercase()).cloned())
                        }
                    })
                    .collect()
            })
            .collect())
    }

    /// Classifies a page. A delete marker goes only with every version of
    /// its key: removing it alone would bring an older version back.
    async fn classify_page(
        &self,
        l: &Lister,
        sel: &Selection,
        entries: Vec<Version>,
    ) -> Result<Vec<(Version, Class)>, ScrubError> {
        let values = self.values(l, &entries).await?;
        let mut out: Vec<(Version, Class)> = entries
            .into_iter()
            .zip(values)
            .map(|(v, vals)| {
                let c = classify(sel, &l.names, &v.key, &vals);
                (v, c)
            })
            .collect();
        let mut kept_keys: std::collections::HashSet<String> = std::collections::HashSet::new();
        for (v, c) in &out {
            if !v.marker && *c != Class::Selected {
                kept_keys.insert(v.key.clone());
            }
        }
        for (v, c) in &mut out {
            if v.marker && *c == Class::Selected && kept_keys.contains(&v.key) {
                *c = Class::Out;
            }
        }
        Ok(out)
    }

    /// Deletes entries, 1,000 a call, a few calls at a time. Returns the
    /// object versions deleted (markers are not records) and what an Object
    /// Lock kept.
    async fn delete(&self, doomed: Vec<Version>) -> Result<(i64, Vec<Locked>), ScrubError> {
        let chunks: Vec<Vec<Version>> = doomed.chunks(PAGE).map(<[Version]>::to_vec).collect();
        let results: Vec<(i64, Vec<Locked>)> =
            stream::iter(chunks.into_iter().map(|c| futures::FutureExt::boxed(self.delete_chunk(c))))
                .buffer_unordered(DELETE_CONCURRENCY)
                .try_collect()
                .await?;
        let mut n = 0;
        let mut locked = Vec::new();
        for (d, l) in results {
            n += d;
            locked.extend(l);
        }
        Ok((n, locked))
    }

    async fn delete_chunk(&self, mut pending: Vec<Version>) -> Result<(i64, Vec<Locked>), ScrubError> {
        let bucket = self.location()?.bucket.clone();
        let mut deleted = 0;
        let mut locked = Vec::new();
        for attempt in 0..KEY_ATTEMPTS {
            if pending.is_empty() {
                break;
            }
            let ids = pending
                .iter()
                .map(|v| {
                    ObjectIdentifier::builder()
                        .key(&v.key)
                        .set_version_id(v.id.clone())
                        .build()
                        .map_err(|e| ScrubError::Config(format!("DeleteObjects: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let delete = Delete::builder()
                .set_objects(Some(ids))
                .quiet(true)
                .build()
                .map_err(|e| ScrubError::Config(format!("DeleteObjects: {e}")))?;
            let r = self
                .client
                .delete_objects()
                .bucket(&bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| service_error("DeleteObjects", e))?;
            let mut retry = Vec::new();
            let mut denied = Vec::new();
            let mut failed: std::collections::HashSet<(String, Option<String>)> = std::collections::HashSet::new();
            for err in r.errors() {
                let key = err.key().unwrap_or_default().to_string();
                let id = err.version_id().map(str::to_string);
                let Some(v) = pending.iter().find(|v| v.key == key && (id.is_none() || v.id == id)).cloned() else {
                    continue;
                };
                failed.insert((v.key.clone(), v.id.clone()));
                match err.code().unwrap_or("") {
                    "NoSuchKey" | "NoSuchVersion" => {}
                    "SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout" => retry.push(v),
                    "AccessDenied" => denied.push(v),
                    code => {
                        return Err(ScrubError::Config(format!(
                            "DeleteObjects refused an object: {code} {}",
                            err.message().unwrap_or("")
                        )));
                    }
                }
            }
            deleted +=
                pending.iter().filter(|v| !v.marker && !failed.contains(&(v.key.clone(), v.id.clone()))).count() as i64;
            locked.extend(self.locks(denied).await?);
            pending = retry;
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
        if !pending.is_empty() {
            return Err(ScrubError::Busy(format!("DeleteObjects: {} objects still throttled", pending.len())));
        }
        Ok((deleted, locked))
    }

    /// Deletes these keys' current objects the way a pass deletes what it
    /// selected (1,000 a call, a few calls at a time), without listing or
    /// checking anything: for the benchmark, which times deletion apart
    /// from the listing both it and its baseline need. Returns how many went.
    pub async fn delete_keys(&self, keys: &[String]) -> Result<i64, ScrubError> {
        let doomed =
            keys.iter().map(|k| Version { key: k.clone(), id: None, modified: Utc::now(), marker: false }).collect();
        Ok(self.delete(doomed).await?.0)
    }

    /// Why the server refused to delete these versions: an Object Lock
    /// (counted by the date it ends) or, if none protects them, missing
    /// permissions (an error: the run stops).
    async fn locks(&self, denied: Vec<Version>) -> Result<Vec<Locked>, ScrubError> {
        let bucket = self.location()?.bucket.clone();
        let now = Utc::now();
        let mut out = Vec::new();
        for v in denied {
            let h = self
                .client
                .head_object()
                .bucket(&bucket)
                .key(&v.key)
                .set_version_id(v.id.clone())
                .send()
                .await
                .map_err(|e| service_error("HeadObject", e))?;
            let until = to_chrono(h.object_lock_retain_until_date()).filter(|t| *t > now);
            let legal = h.object_lock_legal_hold_status() == Some(&ObjectLockLegalHoldStatus::On);
            if until.is_none() && !legal {
                return Err(ScrubError::Access(
                    "DeleteObjects: access denied to objects no Object Lock protects; the credentials need s3:DeleteObject and s3:DeleteObjectVersion on the dataset's prefix".into(),
                ));
            }
            out.push(Locked { until, legal_hold: legal, objects: i64::from(!v.marker) });
        }
        Ok(grouped(out))
    }

    /// The dry run. Its total is the whole Dataset's, also when only a
    /// subject's prefix was listed: the safety brake compares with it.
    pub async fn plan(&self, sel: &Selection) -> Result<Counts, ScrubError> {
        let mut c = self.tally(sel).await?;
        let l = self.lister(sel).await?;
        if l.prefixes != [l.dataset.clone()] {
            c.total = self.total(l).await?;
        }
        Ok(c)
    }

    /// Object versions in the Dataset.
    async fn total(&self, mut l: Lister) -> Result<i64, ScrubError> {
        l.prefixes = vec![l.dataset.clone()];
        l.names.clear();
        let mut n = 0;
        while let Some(page) = self.page(&mut l, LIST_MAX).await? {
            n += page.iter().filter(|v| !v.marker).count() as i64;
        }
        Ok(n)
    }

    /// What a selection finds among the objects it lists.
    async fn tally(&self, sel: &Selection) -> Result<Counts, ScrubError> {
        let mut c = Counts::default();
        let mut l = self.lister(sel).await?;
        while let Some(page) = self.page(&mut l, LIST_MAX).await? {
            for (v, class) in self.classify_page(&l, sel, page).await? {
                if v.marker {
                    continue;
                }
                c.add(class);
            }
        }
        Ok(c)
    }

    pub async fn count(&self, sel: &Selection) -> Result<i64, ScrubError> {
        Ok(self.tally(sel).await?.selected)
    }

    /// The earliest (or latest) time among the selected object versions.
    pub async fn extreme(
        &self,
        sel: &Selection,
        column: &Identifier,
        newest: bool,
    ) -> Result<Option<DateTime<Utc>>, ScrubError> {
        let column = column.to_string();
        let mut l = self.lister(sel).await?;
        if !l.names.contains(&column) {
            l.names.push(column.clone());
        }
        let i = l.names.iter().position(|n| *n == column).unwrap_or(0);
        let mut best: Option<DateTime<Utc>> = None;
        while let Some(page) = self.page(&mut l, LIST_MAX).await? {
            let values = self.values(&l, &page).await?;
            for (v, vals) in page.iter().zip(values) {
                if v.marker || classify(sel, &l.names, &v.key, &vals) != Class::Selected {
                    continue;
                }
                if let Some(t) = vals.get(i).cloned().flatten().as_deref().and_then(parse_time) {
                    best = super::extreme_of(best, Some(t), newest);
                }
            }
        }
        Ok(best)
    }

    pub fn refuse_anonymize(action: &Action) -> Result<(), ScrubError> {
        super::delete_only(action, "objects")
    }

    pub async fn run(
        &self,
        sel: &Selection,
        action: &Action,
        limits: &Limits,
        done_before: i64,
        on_progress: impl FnMut(&Progress),
    ) -> Result<Outcome, ScrubError> {
        Self::refuse_anonymize(action)?;
        let mut source = ObjectBatches {
            driver: self,
            sel,
            lister: self.lister(sel).await?,
            locked: vec![],
            pending: Default::default(),
            listed_all: false,
        };
        let mut out = super::drive(&mut source, limits, done_before, on_progress).await?;
        out.locked = grouped(source.locked);
        out.remaining = self.count(sel).await?;
        Ok(out)
    }
}

/// A pass's batches: the selected entries of listing pages (one page
/// listed per batch at most), deleted up to the batch size at a time.
struct ObjectBatches<'a> {
    driver: &'a S3Driver,
    sel: &'a Selection,
    lister: Lister,
    locked: Vec<Locked>,
    /// Selected entries listed but not yet deleted, in listing order.
    pending: std::collections::VecDeque<Version>,
    listed_all: bool,
}

impl super::BatchSource for ObjectBatches<'_> {
    fn sizes(&self, limits: &Limits) -> (i64, i64, i64) {
        // Objects deleted per batch: one to ten DeleteObjects calls.
        let max = limits.max_batch.clamp(PAGE as i64, 10 * PAGE as i64);
        (limits.initial_batch.clamp(PAGE as i64, max), PAGE as i64, max)
    }

    async fn batch(&mut self, size: i64) -> Result<Option<i64>, ScrubError> {
        let size = size.max(1) as usize;
        if self.pending.len() < size && !self.listed_all {
            match self.driver.page(&mut self.lister, LIST_MAX).await? {
                Some(page) => {
                    let classes = self.driver.classify_page(&self.lister, self.sel, page).await?;
                    self.pending.extend(classes.into_iter().filter(|(_, c)| *c == Class::Selected).map(|(v, _)| v));
                }
                None => self.listed_all = true,
            }
        }
        if self.pending.is_empty() {
            return Ok(if self.listed_all { None } else { Some(0) });
        }
        let doomed: Vec<Version> = self.pending.drain(..size.min(self.pending.len())).collect();
        let (n, locked) = self.driver.delete(doomed).await?;
        self.locked.extend(locked);
        Ok(Some(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrub::keys::glob_match;

    #[test]
    fn templates_name_a_prefix_or_one_key_and_identifiers_cannot_widen_them() {
        let ids = |v: &str| [("user_id".to_string(), v.to_string())].into();
        let p = render_key_template("users/{user_id}/", &ids("4")).unwrap().unwrap();
        assert_eq!(p, "users/4/*");
        assert!(glob_match(p.as_bytes(), b"users/4/a.json"));
        assert!(!glob_match(p.as_bytes(), b"users/42/a.json"));
        let one = render_key_template("exports/{user_id}.zip", &ids("4")).unwrap().unwrap();
        assert!(glob_match(one.as_bytes(), b"exports/4.zip"));
        assert!(!glob_match(one.as_bytes(), b"exports/4.zip.bak"));
        // Glob characters in an identifier match only themselves.
        let star = render_key_template("users/{user_id}/", &ids("*")).unwrap().unwrap();
        assert!(!glob_match(star.as_bytes(), b"users/4/a.json"));
        assert_eq!(literal_prefix(&star), "users/*/");
        assert!(render_key_template("users/{user_id}/", &ids("4/..")).is_err());
        assert!(render_key_template("users/{user_id}/", &ids("")).is_err());
        assert_eq!(render_key_template("users/{email}/", &ids("4")).unwrap(), None);
        assert_eq!(literal_prefix("users/4/*"), "users/4/");
    }
}
