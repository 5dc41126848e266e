//! `lethe dev`: a local embedded cluster (the API emulator) with Lethe's CRDs
//! installed, and a kubeconfig to point `kubectl` at it.

use std::{net::SocketAddr, path::PathBuf};

use crate::{api, emulator::Emulator};

pub struct DevOptions {
    pub kubeconfig: PathBuf,
    pub port: u16,
    pub no_operator: bool,
    pub executor: crate::operator::ExecutorKind,
}

/// Where the dev operator keeps its Lease and digest salt.
pub const OPERATOR_NAMESPACE: &str = "lethe-system";

/// A client for the emulator, with the operator's namespace in place.
pub async fn operator_client(emu: &Emulator) -> Result<kube::Client, String> {
    let url = emu.url().parse().map_err(|e| format!("emulator URL: {e}"))?;
    let client = kube::Client::try_from(kube::Config::new(url)).map_err(|e| e.to_string())?;
    let ns: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    let body = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}});
    let pp = kube::api::PatchParams::apply(crate::operator::MANAGER);
    ns.patch(OPERATOR_NAMESPACE, &pp, &kube::api::Patch::Apply(&body)).await.map_err(|e| e.to_string())?;
    Ok(client)
}

/// The kubeconfig written when none is given.
pub fn default_kubeconfig() -> PathBuf {
    std::env::temp_dir().join("lethe-dev.kubeconfig")
}

/// Starts the emulator and installs the CRDs; the caller decides how long it runs.
pub async fn start(opts: &DevOptions) -> Result<Emulator, String> {
    let emu = Emulator::start(SocketAddr::from(([127, 0, 0, 1], opts.port)))
        .await
        .map_err(|e| format!("cannot listen: {e}"))?;
    install_crds(&emu)?;
    emu.write_kubeconfig(&opts.kubeconfig, "default").map_err(|e| format!("{}: {e}", opts.kubeconfig.display()))?;
    Ok(emu)
}

/// Registers Lethe's CRDs directly in the emulator's store.
pub fn install_crds(emu: &Emulator) -> Result<(), String> {
    let mut store = emu.shared.store.lock().map_err(|_| "store lock poisoned")?;
    let rt = store.find("apiextensions.k8s.io", "v1", "customresourcedefinitions").ok_or("CRD type missing")?;
    for (_, crd) in api::crds() {
        let obj = serde_json::to_value(&crd).map_err(|e| e.to_string())?;
        let opts = crate::emulator::WriteOptions { dry_run: false, unknown: crate::schema::UnknownFields::Prune };
        store.create(&rt, "", obj, opts).map_err(|e| e.message)?;
    }
    Ok(())
}

/// Runs until SIGINT or SIGTERM.
pub async fn run(opts: DevOptions) -> Result<(), String> {
    let emu = start(&opts).await?;
    println!("Lethe dev cluster listening on {}", emu.url());
    println!("  export KUBECONFIG={}", opts.kubeconfig.display());
    println!("  kubectl get crds");
    let operator = if opts.no_operator {
        None
    } else {
        let client = operator_client(&emu).await?;
        let config = crate::operator::Config {
            executor: opts.executor,
            image: "lethe:dev".into(),
            command: "/lethe".into(),
            digest_salt: crate::operator::salt::load_or_create(&client, OPERATOR_NAMESPACE).await?,
            namespace: OPERATOR_NAMESPACE.into(),
            identity: format!("lethe-dev-{}", std::process::id()),
            resync: std::time::Duration::from_secs(60),
            job_service_account: None,
        };
        println!("Operator running in-process ({:?} executor); `kubectl get lethe` shows its work.", opts.executor);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        Some(tokio::spawn(async move {
            if let Err(e) = crate::operator::run(client, config, addr).await {
                eprintln!("operator stopped: {e}");
            }
        }))
    };
    wait_for_shutdown().await;
    if let Some(op) = operator {
        op.abort();
    }
    println!("stopping");
    emu.stop();
    Ok(())
}

async fn wait_for_shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
    }
}
