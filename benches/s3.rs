//! S3 retention benchmark: 25,000 expired objects among 50,000, deleted by
//! Lethe (batched `DeleteObjects`, a few calls in flight) against
//! one-object-at-a-time `DeleteObject` with the same client, each on an
//! identical bucket of the same S3-compatible test server in the same run.
//! Both need the same listing to find the expired objects, so the deletion
//! is timed on its own as well as the whole pass (listing, deleting and, for
//! Lethe, the verifying listing). Prints ratios; nothing is asserted beyond
//! both ending in the same state. Run with `make bench`.

#[path = "../tests/common/s3.rs"]
mod server;

use std::time::{Duration, Instant};

use chrono::Utc;
use server::{ACCESS_KEY, S3Server, SECRET_KEY, Seed};

use lethe::{
    api::{DataStoreSpec, DatasetSpec, Identifier},
    scrub::{Action, Limits, Selection, Table, driver::Driver},
};

const OBJECTS: i64 = 50_000;
const DAY: i64 = 86_400;

fn seed(s3: &S3Server, rt: &tokio::runtime::Runtime, bucket: &str) {
    rt.block_on(s3.client().create_bucket().bucket(bucket).send()).unwrap();
    let now = Utc::now().timestamp();
    // Every other object is 400 days old; the rest a day old.
    let seeds: Vec<Seed> = (0..OBJECTS)
        .map(|i| Seed::new(format!("logs/{}/{i}.log", i % 100), now - if i % 2 == 0 { 400 } else { 1 } * DAY))
        .collect();
    s3.seed(bucket, &seeds);
}

/// Lists a bucket's objects: the keys older than `cutoff`, and the time it took.
fn list_expired(
    client: &aws_sdk_s3::Client,
    rt: &tokio::runtime::Runtime,
    bucket: &str,
    cutoff: i64,
) -> (Vec<String>, usize, Duration) {
    let t = Instant::now();
    rt.block_on(async {
        let (mut expired, mut total, mut token) = (Vec::new(), 0, None);
        loop {
            // The page size Lethe asks for: both sides list alike.
            let r = client
                .list_objects_v2()
                .bucket(bucket)
                .max_keys(10_000)
                .set_continuation_token(token)
                .send()
                .await
                .unwrap();
            total += r.contents().len();
            for o in r.contents() {
                if o.last_modified().unwrap().secs() < cutoff {
                    expired.push(o.key().unwrap().to_string());
                }
            }
            if r.is_truncated() != Some(true) {
                return (expired, total, t.elapsed());
            }
            token = r.next_continuation_token().map(str::to_string);
        }
    })
}

fn driver(s3: &S3Server, rt: &tokio::runtime::Runtime, bucket: &str) -> Driver {
    let store: DataStoreSpec = serde_json::from_value(serde_json::json!({
        "type": "s3", "s3": {"endpoint": s3.endpoint(), "forcePathStyle": true}, "secretRef": {"name": "s3"},
    }))
    .unwrap();
    let ds: DatasetSpec = serde_json::from_value(serde_json::json!({
        "storeRef": {"name": "s3"}, "categories": ["logs"], "objects": {"bucket": bucket, "prefix": "logs/"},
    }))
    .unwrap();
    let creds = lethe::scrub::driver::Credentials {
        username: Some(ACCESS_KEY.into()),
        password: Some(SECRET_KEY.into()),
        ca_pem: None,
    };
    rt.block_on(Driver::connect(&store, &creds)).unwrap().for_dataset(&ds)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn main() {
    let s3 = S3Server::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = s3.client();
    for b in ["baseline", "lethe-delete", "lethe-pass"] {
        seed(&s3, &rt, b);
    }
    let cutoff = Utc::now().timestamp() - 30 * DAY;

    // Baseline: list, then one DeleteObject per expired object.
    let (expired, total, list_time) = list_expired(&client, &rt, "baseline", cutoff);
    assert_eq!((expired.len(), total), (OBJECTS as usize / 2, OBJECTS as usize));
    let t = Instant::now();
    rt.block_on(async {
        for k in &expired {
            client.delete_object().bucket("baseline").key(k).send().await.unwrap();
        }
    });
    let single = t.elapsed();

    // Lethe's deletion of the same listing.
    let db = driver(&s3, &rt, "lethe-delete");
    let Driver::S3(s3db) = &db else { unreachable!("an s3 store") };
    let (expired2, _, list_time2) = list_expired(&client, &rt, "lethe-delete", cutoff);
    let t = Instant::now();
    let n = rt.block_on(s3db.delete_keys(&expired2)).unwrap();
    let batched = t.elapsed();
    assert_eq!(n as usize, expired2.len());

    // Lethe's whole retention pass: listing, deleting, verifying.
    let db = driver(&s3, &rt, "lethe-pass");
    let sel = Selection {
        table: Table { schema: None, name: Identifier::new("objects").unwrap() },
        older_than: Some((Identifier::new("modified").unwrap(), chrono::DateTime::from_timestamp(cutoff, 0).unwrap())),
        subject: vec![],
        keep_newer_than: None,
        held: vec![],
        guards: vec![],
    };
    let t = Instant::now();
    let out = rt.block_on(db.run(&sel, &Action::Delete, &Limits::default(), 0, |_| {})).unwrap();
    let pass = t.elapsed();
    assert_eq!((out.records_done, out.remaining), (OBJECTS / 2, 0));
    for b in ["baseline", "lethe-delete", "lethe-pass"] {
        let (left_expired, left, _) = list_expired(&client, &rt, b, cutoff);
        assert_eq!((left_expired.len(), left), (0, OBJECTS as usize / 2), "{b}");
    }

    let e = expired.len() as f64;
    println!("S3 retention: {} expired objects among {OBJECTS} (moto server on loopback)", expired.len());
    println!("| measure | one DeleteObject per object | Lethe | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| deleting the listed objects | {:.1} s ({:.0} objects/s) | {:.2} s ({:.0} objects/s) | {:.1}× |",
        secs(single),
        e / secs(single),
        secs(batched),
        e / secs(batched),
        secs(single) / secs(batched)
    );
    println!(
        "| whole pass (listing {:.1} s / {:.1} s, Lethe also verifies) | {:.1} s | {:.1} s | {:.1}× |",
        secs(list_time),
        secs(list_time2),
        secs(list_time + single),
        secs(pass),
        secs(list_time + single) / secs(pass)
    );
}
