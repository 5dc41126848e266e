//! `lethe report`: the privacy report for a time window, from the objects
//! in the cluster — deletion requests (received, completed, on time, time to
//! completion, open, overdue; by regime and by reason) and retention (records
//! scrubbed per category and store, per week; runs failed; safety-brake
//! stops; holds active). As a table, JSON, or a self-contained HTML page.
//!
//! The report carries counts and names of objects an admin created, never a
//! subject's identifiers or their digests.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use kube::{Resource, ResourceExt};
use serde::Serialize;

use crate::api::{DataStore, Dataset, DeletionRequest, LegalHold, RunPhase, RunPurpose, ScrubRun};

/// What a report is computed from.
pub struct Inputs<'a> {
    pub requests: &'a [DeletionRequest],
    pub runs: &'a [ScrubRun],
    pub datasets: &'a [Dataset],
    pub stores: &'a [DataStore],
    pub holds: &'a [LegalHold],
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub generated_at: DateTime<Utc>,
    pub requests: Requests,
    pub retention: Retention,
}

#[derive(Serialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Received within the window.
    pub received: u64,
    /// Finished within the window (any final phase).
    pub completed: u64,
    /// Of those, finished by their deadline.
    pub completed_on_time: u64,
    /// Not finished (now).
    pub open: u64,
    /// Not finished and past their deadline (now).
    pub overdue: u64,
}

#[derive(Serialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Requests {
    #[serde(flatten)]
    pub total: Counts,
    /// Days from receipt to completion of the requests finished in the window.
    pub median_days_to_completion: Option<f64>,
    pub p95_days_to_completion: Option<f64>,
    pub by_regime: BTreeMap<String, Counts>,
    pub by_reason: BTreeMap<String, Counts>,
    /// Final phases of the requests finished in the window.
    pub by_outcome: BTreeMap<String, u64>,
    /// Time to completion, in whole days, of each finished request (for the histogram).
    pub days_to_completion: Vec<i64>,
}

#[derive(Serialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    pub runs_succeeded: u64,
    pub runs_failed: u64,
    /// Runs the safety brake stopped before they deleted anything.
    pub blast_radius_stops: u64,
    /// Records deleted or anonymized by runs finished in the window.
    pub records_scrubbed: i64,
    pub records_by_category: BTreeMap<String, i64>,
    /// By `namespace/store (type)`.
    pub records_by_store: BTreeMap<String, i64>,
    /// By the Monday starting each week.
    pub records_by_week: BTreeMap<NaiveDate, i64>,
    /// Legal holds in force at the end of the window, as `namespace/name`.
    pub holds_active: Vec<String>,
}

fn received_at(r: &DeletionRequest) -> Option<DateTime<Utc>> {
    r.spec.received_at.or_else(|| r.meta().creation_timestamp.as_ref().map(crate::operator::from_time))
}

/// The value at quantile `q` (nearest rank) of sorted `v`.
fn quantile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

fn monday(t: DateTime<Utc>) -> NaiveDate {
    let d = t.date_naive();
    d - Duration::days(d.weekday().num_days_from_monday() as i64)
}

/// Computes the report for `[from, to)`, with `now` deciding what is open or overdue.
pub fn build(inputs: &Inputs, from: DateTime<Utc>, to: DateTime<Utc>, now: DateTime<Utc>) -> Report {
    let in_window = |t: DateTime<Utc>| t >= from && t < to;
    let mut req = Requests::default();
    let mut days = Vec::new();
    for r in inputs.requests {
        let st = r.status.clone().unwrap_or_default();
        let regime = r.spec.regime.as_str().to_string();
        let reason = serde_json::to_value(r.spec.reason).ok().and_then(|v| v.as_str().map(String::from));
        let reason = reason.unwrap_or_else(|| "Unspecified".into());
        let mut bump = |f: &dyn Fn(&mut Counts)| {
            f(&mut req.total);
            f(req.by_regime.entry(regime.clone()).or_default());
            f(req.by_reason.entry(reason.clone()).or_default());
        };
        let received = received_at(r);
        if received.is_some_and(in_window) {
            bump(&|c| c.received += 1);
        }
        if crate::operator::request::terminal(st.phase) {
            if let Some(done) = st.completion_time.filter(|t| in_window(*t)) {
                let on_time = st.deadline.is_none_or(|d| done <= d);
                bump(&|c| {
                    c.completed += 1;
                    if on_time {
                        c.completed_on_time += 1;
                    }
                });
                *req.by_outcome.entry(format!("{:?}", st.phase.expect("finished"))).or_default() += 1;
                if let Some(rec) = received {
                    let d = (done - rec).num_seconds().max(0) as f64 / 86400.0;
                    days.push(d);
                }
            }
        } else if received.is_some_and(|t| t < to) {
            let overdue = st.deadline.is_some_and(|d| d < now);
            bump(&|c| {
                c.open += 1;
                if overdue {
                    c.overdue += 1;
                }
            });
        }
    }
    days.sort_by(|a, b| a.total_cmp(b));
    req.median_days_to_completion = quantile(&days, 0.5);
    req.p95_days_to_completion = quantile(&days, 0.95);
    req.days_to_completion = days.iter().map(|d| d.floor() as i64).collect();

    let mut ret = Retention::default();
    let dataset = |ns: &str, name: &str| {
        inputs.datasets.iter().find(|d| d.namespace().as_deref() == Some(ns) && d.name_any() == name)
    };
    for run in inputs.runs {
        let st = run.status.clone().unwrap_or_default();
        let ns = run.namespace().unwrap_or_default();
        let stopped =
            st.conditions.iter().any(|c| c.type_ == "Stalled" && c.reason != "Approved") || st.approved_by.is_some();
        let started = st.start_time.or_else(|| run.meta().creation_timestamp.as_ref().map(crate::operator::from_time));
        if stopped && started.is_some_and(in_window) {
            ret.blast_radius_stops += 1;
        }
        // Erasures are counted with their requests; this section is retention.
        if run.spec.purpose != RunPurpose::Retention {
            continue;
        }
        let Some(done) = st.completion_time.filter(|t| in_window(*t)) else { continue };
        match st.phase {
            Some(RunPhase::Failed) => ret.runs_failed += 1,
            Some(RunPhase::Succeeded) => {
                ret.runs_succeeded += 1;
                let c = st.counts.clone().unwrap_or_default();
                let n = c.deleted + c.anonymized;
                if n == 0 {
                    continue;
                }
                ret.records_scrubbed += n;
                *ret.records_by_week.entry(monday(done)).or_default() += n;
                let ds = dataset(&ns, &run.spec.dataset_ref.name);
                let cats: Vec<String> = ds
                    .map(|d| d.spec.categories.iter().map(|c| c.as_str().to_string()).collect())
                    .unwrap_or_else(|| vec!["unknown".into()]);
                for cat in cats {
                    *ret.records_by_category.entry(cat).or_default() += n;
                }
                let store_name = ds.map(|d| d.spec.store_ref.name.clone()).unwrap_or_else(|| "unknown".into());
                let store_type = inputs
                    .stores
                    .iter()
                    .find(|s| s.namespace().as_deref() == Some(ns.as_str()) && s.name_any() == store_name)
                    .map(|s| s.spec.type_.as_str())
                    .unwrap_or("unknown");
                *ret.records_by_store.entry(format!("{ns}/{store_name} ({store_type})")).or_default() += n;
            }
            _ => {}
        }
    }
    let end = to.min(now);
    ret.holds_active = inputs
        .holds
        .iter()
        .filter(|h| h.meta().creation_timestamp.as_ref().map(crate::operator::from_time).is_none_or(|c| c < end))
        .filter(|h| h.spec.expires_at.is_none_or(|e| e > end))
        .map(|h| format!("{}/{}", h.namespace().unwrap_or_default(), h.name_any()))
        .collect();
    ret.holds_active.sort();
    Report { from, to, generated_at: now, requests: req, retention: ret }
}

fn days(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), |d| format!("{d:.1}"))
}

/// The report as plain-text tables.
pub fn table(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let q = &r.requests;
    let _ = writeln!(s, "Privacy report {} to {}\n", r.from.format("%Y-%m-%d %H:%M"), r.to.format("%Y-%m-%d %H:%M"));
    let _ = writeln!(s, "DELETION REQUESTS");
    let _ =
        writeln!(s, "{:<22} {:>9} {:>10} {:>8} {:>6} {:>8}", "", "RECEIVED", "COMPLETED", "ON TIME", "OPEN", "OVERDUE");
    let row = |s: &mut String, name: &str, c: &Counts| {
        let _ = writeln!(
            s,
            "{:<22} {:>9} {:>10} {:>8} {:>6} {:>8}",
            name, c.received, c.completed, c.completed_on_time, c.open, c.overdue
        );
    };
    row(&mut s, "all", &q.total);
    for (k, c) in &q.by_regime {
        row(&mut s, &format!("regime {k}"), c);
    }
    for (k, c) in &q.by_reason {
        row(&mut s, &format!("reason {k}"), c);
    }
    let _ = writeln!(
        s,
        "\nDays to completion: median {}, p95 {}",
        days(q.median_days_to_completion),
        days(q.p95_days_to_completion)
    );
    let t = &r.retention;
    let _ = writeln!(s, "\nRETENTION");
    let _ = writeln!(
        s,
        "Runs succeeded {}, failed {}; safety-brake stops {}; records scrubbed {}",
        t.runs_succeeded, t.runs_failed, t.blast_radius_stops, t.records_scrubbed
    );
    for (title, m) in [("CATEGORY", &t.records_by_category), ("STORE", &t.records_by_store)] {
        let _ = writeln!(s, "{title:<40} {:>12}", "RECORDS");
        for (k, n) in m {
            let _ = writeln!(s, "{k:<40} {n:>12}");
        }
    }
    let _ = writeln!(
        s,
        "Legal holds active: {}",
        if t.holds_active.is_empty() { "none".into() } else { t.holds_active.join(", ") }
    );
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A bar chart as inline SVG: labels under bars, values above.
fn bars(title: &str, data: &[(String, i64)]) -> String {
    let (w, h, pad) = (640.0, 220.0, 30.0);
    let max = data.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1) as f64;
    let n = data.len().max(1) as f64;
    let slot = (w - 2.0 * pad) / n;
    let mut svg = format!(
        r#"<figure><figcaption>{}</figcaption><svg role="img" aria-label="{}" viewBox="0 0 {w} {h}" width="{w}" height="{h}">"#,
        esc(title),
        esc(title)
    );
    svg.push_str(&format!(
        r##"<line x1="{pad}" y1="{y}" x2="{x2}" y2="{y}" stroke="#888"/>"##,
        y = h - pad,
        x2 = w - pad
    ));
    for (i, (label, v)) in data.iter().enumerate() {
        let bh = (*v as f64 / max) * (h - 2.5 * pad);
        let x = pad + i as f64 * slot + slot * 0.1;
        let y = h - pad - bh;
        svg.push_str(&format!(
            r##"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{bw:.1}" height="{bh:.1}" fill="#4a7ab5"><title>{l}: {v}</title></rect><text x="{tx:.1}" y="{ty:.1}" font-size="11" text-anchor="middle">{v}</text><text x="{tx:.1}" y="{ly:.1}" font-size="10" text-anchor="middle">{l}</text>"##,
            bw = slot * 0.8,
            tx = x + slot * 0.4,
            ty = y - 3.0,
            ly = h - pad + 14.0,
            l = esc(label),
        ));
    }
    svg.push_str("</svg></figure>");
    svg
}

/// Time to completion in buckets of days, as the histogram shows it.
pub fn completion_buckets(days: &[i64]) -> Vec<(String, i64)> {
    const EDGES: [(i64, i64, &str); 7] = [
        (0, 1, "<1 d"),
        (1, 3, "1–2 d"),
        (3, 7, "3–6 d"),
        (7, 14, "7–13 d"),
        (14, 31, "14–30 d"),
        (31, 46, "31–45 d"),
        (46, i64::MAX, ">45 d"),
    ];
    EDGES
        .iter()
        .map(|(lo, hi, l)| (l.to_string(), days.iter().filter(|d| **d >= *lo && **d < *hi).count() as i64))
        .collect()
}

/// The report as one self-contained HTML page (inline CSS and SVG, no scripts).
pub fn html(r: &Report) -> String {
    let q = &r.requests;
    let t = &r.retention;
    let mut rows = String::new();
    let mut row = |name: &str, c: &Counts| {
        rows.push_str(&format!(
            "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            c.received,
            c.completed,
            c.completed_on_time,
            c.open,
            c.overdue
        ));
    };
    row("All requests", &q.total);
    for (k, c) in &q.by_regime {
        row(&format!("Regime {k}"), c);
    }
    for (k, c) in &q.by_reason {
        row(&format!("Reason {k}"), c);
    }
    let list = |m: &BTreeMap<String, i64>| -> String {
        m.iter().map(|(k, v)| format!("<tr><th>{}</th><td>{v}</td></tr>", esc(k))).collect()
    };
    let weekly: Vec<(String, i64)> =
        t.records_by_week.iter().map(|(d, n)| (d.format("%d %b").to_string(), *n)).collect();
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Privacy report {from} to {to}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }} th, td {{ padding: .3rem .8rem; border-bottom: 1px solid #ddd; text-align: right; }}
th:first-child {{ text-align: left; }} figure {{ margin: 1rem 0; }} figcaption {{ font-weight: 600; }}
.kpi {{ display: inline-block; margin-right: 2rem; }} .kpi b {{ display: block; font-size: 1.6rem; }}
</style></head><body>
<h1>Privacy report</h1>
<p>{from} to {to} (generated {generated}). Counts only: no subject's identifiers appear in this report.</p>
<h2>Deletion requests</h2>
<div class="kpi"><b id="received">{received}</b>received</div><div class="kpi"><b id="completed">{completed}</b>completed</div><div class="kpi"><b id="on-time">{on_time}</b>on time</div><div class="kpi"><b id="overdue">{overdue}</b>overdue now</div>
<p>Days to completion: median <b id="median">{median}</b>, 95th percentile <b id="p95">{p95}</b>.</p>
<table id="requests"><thead><tr><th></th><th>Received</th><th>Completed</th><th>On time</th><th>Open</th><th>Overdue</th></tr></thead><tbody>{rows}</tbody></table>
{hist}
<h2>Retention</h2>
<div class="kpi"><b id="scrubbed">{scrubbed}</b>records scrubbed</div><div class="kpi"><b id="runs-failed">{failed}</b>runs failed</div><div class="kpi"><b id="stops">{stops}</b>safety-brake stops</div><div class="kpi"><b id="holds">{holds}</b>legal holds active</div>
{weekly}
<table id="by-category"><thead><tr><th>Category</th><th>Records</th></tr></thead><tbody>{cats}</tbody></table>
<table id="by-store"><thead><tr><th>Store</th><th>Records</th></tr></thead><tbody>{stores}</tbody></table>
</body></html>
"#,
        from = r.from.format("%Y-%m-%d"),
        to = r.to.format("%Y-%m-%d"),
        generated = r.generated_at.format("%Y-%m-%d %H:%M UTC"),
        received = q.total.received,
        completed = q.total.completed,
        on_time = q.total.completed_on_time,
        overdue = q.total.overdue,
        median = days(q.median_days_to_completion),
        p95 = days(q.p95_days_to_completion),
        hist = bars("Time to completion", &completion_buckets(&q.days_to_completion)),
        scrubbed = t.records_scrubbed,
        failed = t.runs_failed,
        stops = t.blast_radius_stops,
        holds = t.holds_active.len(),
        weekly = bars("Records scrubbed per week", &weekly),
        cats = list(&t.records_by_category),
        stores = list(&t.records_by_store),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn request(
        name: &str,
        regime: &str,
        received: &str,
        phase: &str,
        done: Option<&str>,
        deadline: &str,
    ) -> DeletionRequest {
        let mut v = json!({"apiVersion": "lethe.dev/v1alpha1", "kind": "DeletionRequest",
            "metadata": {"name": name, "namespace": "shop", "creationTimestamp": received},
            "spec": {"subject": {"identifiers": {"user_id": "1"}}, "regime": regime, "reason": "accountClosed", "receivedAt": received},
            "status": {"phase": phase, "deadline": deadline}});
        if let Some(d) = done {
            v["status"]["completionTime"] = json!(d);
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn counts_requests_by_window_deadline_and_regime() {
        let requests = vec![
            // Completed in 2 days, on time.
            request(
                "a",
                "GDPR",
                "2026-03-02T00:00:00Z",
                "Completed",
                Some("2026-03-04T00:00:00Z"),
                "2026-04-01T00:00:00Z",
            ),
            // Completed in 40 days, after its 30-day deadline.
            request(
                "b",
                "GDPR",
                "2026-02-01T00:00:00Z",
                "PartiallyCompleted",
                Some("2026-03-13T00:00:00Z"),
                "2026-03-03T00:00:00Z",
            ),
            // Open and overdue.
            request("c", "CCPA", "2026-01-01T00:00:00Z", "AwaitingApproval", None, "2026-02-15T00:00:00Z"),
            // Open, not due.
            request("d", "CCPA", "2026-03-20T00:00:00Z", "Running", None, "2026-05-04T00:00:00Z"),
            // Outside the window entirely.
            request(
                "e",
                "GDPR",
                "2025-01-01T00:00:00Z",
                "Completed",
                Some("2025-01-02T00:00:00Z"),
                "2025-01-31T00:00:00Z",
            ),
        ];
        let inputs = Inputs { requests: &requests, runs: &[], datasets: &[], stores: &[], holds: &[] };
        let r = build(&inputs, t("2026-03-01T00:00:00Z"), t("2026-04-01T00:00:00Z"), t("2026-03-25T00:00:00Z"));
        let q = &r.requests;
        assert_eq!(q.total, Counts { received: 2, completed: 2, completed_on_time: 1, open: 2, overdue: 1 });
        assert_eq!(
            q.by_regime["GDPR"],
            Counts { received: 1, completed: 2, completed_on_time: 1, open: 0, overdue: 0 }
        );
        assert_eq!(
            q.by_regime["CCPA"],
            Counts { received: 1, completed: 0, completed_on_time: 0, open: 2, overdue: 1 }
        );
        assert_eq!(q.median_days_to_completion, Some(2.0));
        assert_eq!(q.p95_days_to_completion, Some(40.0));
        assert_eq!(q.by_outcome["PartiallyCompleted"], 1);
        assert_eq!(completion_buckets(&q.days_to_completion)[1], ("1–2 d".to_string(), 1));
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(10.0));
        assert_eq!(quantile(&v, 0.95), Some(19.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn html_escapes_names_and_has_no_scripts() {
        let r = Report {
            from: t("2026-03-01T00:00:00Z"),
            to: t("2026-04-01T00:00:00Z"),
            generated_at: t("2026-04-01T00:00:00Z"),
            requests: Requests::default(),
            retention: Retention {
                records_by_store: [("shop/<db> (postgres)".to_string(), 5)].into(),
                ..Retention::default()
            },
        };
        let page = html(&r);
        assert!(page.contains("shop/&lt;db&gt; (postgres)"));
        assert!(!page.contains("<script"));
    }
}
