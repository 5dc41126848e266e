//! The receipt of a DeletionRequest: a SHA-256 digest over the canonical
//! per-dataset results and timestamps, computed by the operator when the
//! request completes and recomputed by `lethe report --verify`.
//!
//! Canonical form: compact JSON with keys in a fixed order, datasets sorted
//! by name, timestamps in RFC 3339 UTC with seconds. Any change to a result,
//! a count or a timestamp changes the digest.

use serde_json::{Value, json};

use crate::api::{DeletionRequest, DeletionRequestStatus};

fn ts(t: Option<chrono::DateTime<chrono::Utc>>) -> Value {
    t.map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))).unwrap_or(Value::Null)
}

/// The canonical document a receipt digests.
pub fn canonical(req: &DeletionRequest, status: &DeletionRequestStatus) -> String {
    let mut datasets = status.datasets.clone();
    datasets.sort_by(|a, b| a.dataset.cmp(&b.dataset));
    let results: Vec<Value> = datasets
        .iter()
        .map(|d| {
            json!([
                d.dataset,
                d.action.map(|a| format!("{a:?}")),
                d.phase,
                d.run,
                d.records_affected,
                d.remaining,
                d.remaining_reason,
                ts(d.erasable_after),
                d.verified,
            ])
        })
        .collect();
    let doc = json!([
        "lethe.dev/receipt/v1",
        req.metadata.namespace,
        req.metadata.name,
        req.metadata.uid,
        req.spec.regime.as_str(),
        status.subject_digest,
        ts(req.spec.received_at.or_else(|| req.metadata.creation_timestamp.as_ref().map(crate::operator::from_time))),
        ts(status.deadline),
        ts(status.start_time),
        ts(status.completion_time),
        status.phase.map(|p| format!("{p:?}")),
        status.records_affected,
        results,
    ]);
    doc.to_string()
}

/// The receipt digest for a request's status.
pub fn digest(req: &DeletionRequest, status: &DeletionRequestStatus) -> String {
    crate::digest::sha256(canonical(req, status).as_bytes())
}

/// Recomputes a completed request's receipt: `Ok(digest)` when it matches.
pub fn verify(req: &DeletionRequest) -> Result<String, String> {
    let status = req.status.as_ref().ok_or("the request has no status")?;
    let receipt = status.receipt.as_ref().ok_or("the request has no receipt (not completed)")?;
    let mut without = status.clone();
    without.receipt = None;
    without.conditions = vec![];
    let again = digest(req, &without);
    if again == receipt.digest {
        Ok(again)
    } else {
        Err(format!("receipt mismatch: status says {}, recomputed {again}", receipt.digest))
    }
}
