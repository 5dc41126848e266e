//! `lethe dev`: a local embedded cluster (the API emulator) with Lethe's CRDs
//! installed, and a kubeconfig to point `kubectl` at it.

use std::{net::SocketAddr, path::PathBuf};

use crate::{api, emulator::Emulator};

pub struct DevOptions {
    pub kubeconfig: PathBuf,
    pub port: u16,
    pub no_operator: bool,
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
    if !opts.no_operator {
        println!("The operator arrives with the controllers (issue 5); the emulator runs alone for now.");
    }
    wait_for_shutdown().await;
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
