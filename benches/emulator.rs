//! Emulator scale check: create, list and watch 10,000 objects of one kind
//! through kube-rs, and print the timings. Run with `make bench`.

use std::time::Instant;

use futures::StreamExt;
use kube::{
    Api,
    api::{ListParams, PostParams},
    runtime::watcher,
};
use lethe::api::RetentionPolicy;

const N: usize = 10_000;

#[tokio::main]
async fn main() {
    let emu = lethe::emulator::Emulator::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    lethe::dev::install_crds(&emu).unwrap();
    let client = kube::Client::try_from(kube::Config::new(emu.url().parse().unwrap())).unwrap();
    let api: Api<RetentionPolicy> = Api::namespaced(client, "default");

    let t = Instant::now();
    let mut pending = futures::stream::iter(0..N)
        .map(|i| {
            let api = api.clone();
            async move {
                let p: RetentionPolicy = serde_json::from_value(serde_json::json!({
                    "apiVersion": "lethe.dev/v1alpha1", "kind": "RetentionPolicy",
                    "metadata": {"name": format!("policy-{i:05}")},
                    "spec": {"categories": ["logs"], "keepFor": "90d"}
                }))
                .unwrap();
                api.create(&PostParams::default(), &p).await.unwrap();
            }
        })
        .buffer_unordered(16);
    while pending.next().await.is_some() {}
    let create = t.elapsed();

    let t = Instant::now();
    let all = api.list(&ListParams::default()).await.unwrap();
    let list_all = t.elapsed();
    assert_eq!(all.items.len(), N);

    let t = Instant::now();
    let mut pages = 0;
    let mut lp = ListParams::default().limit(500);
    loop {
        let page = api.list(&lp).await.unwrap();
        pages += 1;
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    let list_paged = t.elapsed();

    let t = Instant::now();
    let mut stream = std::pin::pin!(watcher::watcher(api.clone(), watcher::Config::default()));
    let mut seen = 0;
    while let Some(ev) = stream.next().await {
        match ev.unwrap() {
            watcher::Event::InitApply(_) => seen += 1,
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    let watch_init = t.elapsed();
    assert_eq!(seen, N);

    println!("emulator, {N} RetentionPolicies (2-core machine, debug or release as built):");
    println!(
        "  create (16 in flight)      {:>8.2} s  ({:.0} objects/s)",
        create.as_secs_f64(),
        N as f64 / create.as_secs_f64()
    );
    println!("  list all in one request    {:>8.3} s", list_all.as_secs_f64());
    println!("  list in {pages} pages of 500     {:>8.3} s", list_paged.as_secs_f64());
    println!("  watcher initial sync       {:>8.3} s", watch_init.as_secs_f64());
}
