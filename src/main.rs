//! The `lethe` command line.
#![forbid(unsafe_code)]

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};
use lethe::validate::{self, Severity};

#[derive(Parser)]
#[command(name = "lethe", version, about = "Enforce data-retention policies on the stores where personal data lives")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers against the current Kubernetes cluster (KUBECONFIG or in-cluster).
    Operator(OperatorArgs),
    /// Execute one ScrubRun (`--run`, what a scrub Job runs), or one retention
    /// pass of a Dataset straight from manifests (`--dataset` and `-f`).
    Scrub {
        /// The ScrubRun to execute, from inside its Job.
        #[arg(long, conflicts_with_all = ["dataset", "manifests"], requires = "namespace")]
        run: Option<String>,
        /// The ScrubRun's namespace.
        #[arg(long, env = "POD_NAMESPACE")]
        namespace: Option<String>,
        /// The Dataset to scrub.
        #[arg(long, required_unless_present = "run", requires = "manifests")]
        dataset: Option<String>,
        /// Directory (or file) of manifests holding the Dataset, its DataStore, policies and holds.
        #[arg(short = 'f', long = "filename")]
        manifests: Option<PathBuf>,
        /// Count what would be affected, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Compute windows as of this instant (RFC 3339) instead of now.
        #[arg(long)]
        at: Option<String>,
    },
    /// Start a local embedded cluster (API emulator) with Lethe's CRDs installed.
    Dev {
        /// Where to write the kubeconfig (default: $TMPDIR/lethe-dev.kubeconfig).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Port on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Run the emulator without the operator.
        #[arg(long)]
        no_operator: bool,
        /// How the dev operator runs scrubs.
        #[arg(long, value_enum, default_value = "in-process")]
        executor: lethe::operator::ExecutorKind,
    },
    /// Print every CRD as YAML (the content of crds/).
    Crd {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long)]
        output_dir: Option<PathBuf>,
    },
    /// Print the resource reference (Markdown) generated from the CRD schemas.
    Reference,
    /// Validate manifests offline: schemas, CEL rules and cross-object checks.
    Validate {
        /// Files or directories (recursing into *.yaml, *.yml, *.json).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Treat references to objects outside the given files as warnings.
        #[arg(long)]
        partial: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Print the salted digest of a subject identifier read from stdin (for
    /// LegalHold `subjects.digests`), never echoing the identifier.
    Digest {
        /// The identifier type, e.g. email or user_id.
        #[arg(long = "type")]
        type_: String,
        /// The operator's namespace, where the salt Secret lives (when LETHE_DIGEST_SALT is unset).
        #[arg(long, default_value = "lethe-system")]
        operator_namespace: String,
    },
    /// Print the privacy report of deletion requests and retention runs.
    Report {
        /// Recompute the receipt of this DeletionRequest and compare it with the one in its status.
        #[arg(long)]
        verify: Option<String>,
        /// One namespace (default: all namespaces; with --verify, the kubeconfig's).
        #[arg(short, long)]
        namespace: Option<String>,
        /// The window: this long before --to (e.g. 30d, 12w, 1y).
        #[arg(long, default_value = "30d", conflicts_with = "from")]
        since: String,
        /// The window's start (RFC 3339), instead of --since.
        #[arg(long)]
        from: Option<String>,
        /// The window's end (RFC 3339; default: now).
        #[arg(long)]
        to: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: ReportFormat,
    },
}

#[derive(clap::Args)]
struct OperatorArgs {
    /// How scrubs run: a Kubernetes Job per run, or a task inside the operator.
    #[arg(long, value_enum, env = "LETHE_EXECUTOR", default_value = "job")]
    executor: lethe::operator::ExecutorKind,
    /// The image scrub Jobs run (the operator's own).
    #[arg(long, env = "LETHE_IMAGE", default_value = "ghcr.io/lethe-dev/lethe:latest")]
    image: String,
    /// The namespace the operator runs in (its Lease and digest salt live there).
    #[arg(long, env = "POD_NAMESPACE", default_value = "lethe-system")]
    namespace: String,
    /// This replica's identity for leader election (default: pod name, else host and pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Where /metrics, /healthz and /readyz listen.
    #[arg(long, env = "LETHE_HEALTH_ADDR", default_value = "0.0.0.0:8080")]
    health_addr: std::net::SocketAddr,
    /// Seconds between re-checks of unchanged objects (store probes, schedules).
    #[arg(long, default_value_t = 300)]
    resync_seconds: u64,
    /// The ServiceAccount scrub Jobs run under.
    #[arg(long, env = "LETHE_JOB_SERVICE_ACCOUNT")]
    job_service_account: Option<String>,
    /// Log as JSON lines.
    #[arg(long, env = "LETHE_LOG_JSON")]
    log_json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    Table,
    Json,
    Html,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd { output_dir } => crd(output_dir),
        Command::Reference => {
            print!("{}", lethe::api::reference::markdown());
            ExitCode::SUCCESS
        }
        Command::Validate { files, partial, output } => {
            let problems = validate::validate_paths(&files, &validate::Options { partial });
            let errors = problems.iter().filter(|p| p.severity == Severity::Error).count();
            match output {
                Format::Text => {
                    for p in &problems {
                        println!("{p}");
                    }
                    eprintln!("{errors} error(s), {} warning(s)", problems.len() - errors);
                }
                Format::Json => match serde_json::to_string_pretty(&problems) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("cannot render problems: {e}");
                        return ExitCode::FAILURE;
                    }
                },
            }
            if errors > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
        }
        Command::Operator(args) => operator(args),
        Command::Scrub { run: Some(run), namespace, .. } => {
            logging(true);
            scrub_run(&run, namespace.as_deref().unwrap_or("default"))
        }
        Command::Scrub { dataset, manifests, dry_run, at, .. } => match (dataset, manifests) {
            (Some(d), Some(m)) => scrub(&d, &m, dry_run, at.as_deref()),
            _ => {
                eprintln!("lethe scrub: give --run, or --dataset with -f");
                ExitCode::from(2)
            }
        },
        Command::Dev { kubeconfig, port, no_operator, executor } => {
            if !no_operator {
                logging(false);
            }
            let opts = lethe::dev::DevOptions {
                kubeconfig: kubeconfig.unwrap_or_else(lethe::dev::default_kubeconfig),
                port,
                no_operator,
                executor,
            };
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("lethe dev: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(lethe::dev::run(opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("lethe dev: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Digest { type_, operator_namespace } => digest(&type_, &operator_namespace),
        Command::Report { verify: Some(name), namespace, .. } => verify_receipt(&name, namespace.as_deref()),
        Command::Report { verify: None, namespace, since, from, to, output } => {
            report(namespace.as_deref(), &since, from.as_deref(), to.as_deref(), output)
        }
    }
}

fn logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_runtime=warn,kube_client=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

fn runtime(what: &str) -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Runtime::new() {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("lethe {what}: {e}");
            None
        }
    }
}

fn operator(args: OperatorArgs) -> ExitCode {
    logging(args.log_json);
    let Some(rt) = runtime("operator") else { return ExitCode::FAILURE };
    let result = rt.block_on(async move {
        let client = kube::Client::try_default().await.map_err(|e| format!("no cluster: {e}"))?;
        let digest_salt = lethe::operator::salt::load_or_create(&client, &args.namespace).await?;
        let identity = args.identity.unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        });
        let config = lethe::operator::Config {
            executor: args.executor,
            image: args.image,
            command: "/lethe".into(),
            digest_salt,
            namespace: args.namespace,
            identity,
            resync: std::time::Duration::from_secs(args.resync_seconds.max(1)),
            job_service_account: args.job_service_account,
        };
        lethe::operator::run(client, config, args.health_addr).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "operator stopped");
            ExitCode::FAILURE
        }
    }
}

fn scrub_run(run: &str, namespace: &str) -> ExitCode {
    let Some(rt) = runtime("scrub") else { return ExitCode::FAILURE };
    match rt.block_on(lethe::operator::job::run_in_job(namespace, run)) {
        Ok(ended) => {
            tracing::info!(run = %run, ?ended, "scrub run ended");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(run = %run, reason = e.reason(), error = %e, "scrub run interrupted; the Job retries and resumes");
            ExitCode::from(75)
        }
    }
}

fn digest(type_: &str, operator_namespace: &str) -> ExitCode {
    let mut value = String::new();
    if std::io::Read::read_to_string(&mut std::io::stdin(), &mut value).is_err() {
        eprintln!("lethe digest: cannot read the identifier from stdin");
        return ExitCode::from(2);
    }
    let value = value.trim();
    if value.is_empty() {
        eprintln!("lethe digest: give the identifier on stdin");
        return ExitCode::from(2);
    }
    let salt = match std::env::var("LETHE_DIGEST_SALT").ok().filter(|s| !s.is_empty()) {
        Some(s) => Ok(s),
        None => runtime("digest").ok_or_else(|| "no runtime".to_string()).and_then(|rt| {
            rt.block_on(async {
                let client = kube::Client::try_default().await.map_err(|e| format!("no cluster: {e}"))?;
                lethe::operator::read_secret(&client, operator_namespace, lethe::operator::salt::SECRET)
                    .await
                    .map_err(|e| e.to_string())?
                    .and_then(|v| v.get(lethe::operator::salt::KEY).cloned())
                    .ok_or_else(|| format!("Secret {operator_namespace}/{} not found", lethe::operator::salt::SECRET))
            })
        }),
    };
    match salt {
        Ok(salt) => {
            println!("{}", lethe::digest::identifier(&salt, type_, value));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lethe digest: {e}");
            ExitCode::FAILURE
        }
    }
}

fn report(
    namespace: Option<&str>,
    since: &str,
    from: Option<&str>,
    to: Option<&str>,
    output: ReportFormat,
) -> ExitCode {
    let now = chrono::Utc::now();
    let parse = |s: &str| s.parse::<chrono::DateTime<chrono::Utc>>().map_err(|e| format!("{s:?}: {e}"));
    let window = (|| -> Result<_, String> {
        let to = to.map(parse).transpose()?.unwrap_or(now);
        let from = match from {
            Some(f) => parse(f)?,
            None => {
                let d: lethe::api::Duration = since.parse().map_err(|e| format!("--since {since:?}: {e}"))?;
                d.before(to).ok_or_else(|| format!("--since {since:?} reaches before the calendar"))?
            }
        };
        if from >= to {
            return Err("the window is empty: --from must be before --to".into());
        }
        Ok((from, to))
    })();
    let (from, to) = match window {
        Ok(w) => w,
        Err(e) => {
            eprintln!("lethe report: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(rt) = runtime("report") else { return ExitCode::FAILURE };
    let loaded = rt.block_on(async {
        let client = kube::Client::try_default().await.map_err(|e| format!("no cluster: {e}"))?;
        async fn all<K>(client: &kube::Client, ns: Option<&str>) -> Result<Vec<K>, String>
        where
            K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
                + Clone
                + serde::de::DeserializeOwned
                + std::fmt::Debug,
            K::DynamicType: Default,
        {
            let api: kube::Api<K> = match ns {
                Some(ns) => kube::Api::namespaced(client.clone(), ns),
                None => kube::Api::all(client.clone()),
            };
            api.list(&Default::default()).await.map(|l| l.items).map_err(|e| e.to_string())
        }
        Ok::<_, String>((
            all::<lethe::api::DeletionRequest>(&client, namespace).await?,
            all::<lethe::api::ScrubRun>(&client, namespace).await?,
            all::<lethe::api::Dataset>(&client, namespace).await?,
            all::<lethe::api::DataStore>(&client, namespace).await?,
            all::<lethe::api::LegalHold>(&client, namespace).await?,
        ))
    });
    let (requests, runs, datasets, stores, holds) = match loaded {
        Ok(l) => l,
        Err(e) => {
            eprintln!("lethe report: {e}");
            return ExitCode::FAILURE;
        }
    };
    let inputs =
        lethe::report::Inputs { requests: &requests, runs: &runs, datasets: &datasets, stores: &stores, holds: &holds };
    let r = lethe::report::build(&inputs, from, to, now);
    match output {
        ReportFormat::Table => print!("{}", lethe::report::table(&r)),
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default()),
        ReportFormat::Html => print!("{}", lethe::report::html(&r)),
    }
    ExitCode::SUCCESS
}

fn verify_receipt(name: &str, namespace: Option<&str>) -> ExitCode {
    let Some(rt) = runtime("report") else { return ExitCode::FAILURE };
    let result = rt.block_on(async {
        let client = kube::Client::try_default().await.map_err(|e| format!("no cluster: {e}"))?;
        let ns = namespace.map(String::from).unwrap_or_else(|| client.default_namespace().to_string());
        let api: kube::Api<lethe::api::DeletionRequest> = kube::Api::namespaced(client, &ns);
        let req = api.get(name).await.map_err(|e| format!("DeletionRequest {ns}/{name}: {e}"))?;
        lethe::receipt::verify(&req)
    });
    match result {
        Ok(d) => {
            println!("receipt verified: {d}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lethe report --verify: {e}");
            ExitCode::FAILURE
        }
    }
}

fn scrub(dataset: &str, manifests: &std::path::Path, dry_run: bool, at: Option<&str>) -> ExitCode {
    let now = match at.map(chrono::DateTime::parse_from_rfc3339) {
        None => chrono::Utc::now(),
        Some(Ok(t)) => t.with_timezone(&chrono::Utc),
        Some(Err(e)) => {
            eprintln!("lethe scrub: --at: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lethe scrub: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(lethe::scrub::local::run(manifests, dataset, dry_run, now)) {
        Ok(report) => {
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lethe scrub: {} ({})", e, e.reason());
            // 75 (EX_TEMPFAIL): try again later; 1: fix something first.
            if e.retryable() { ExitCode::from(75) } else { ExitCode::FAILURE }
        }
    }
}

fn crd(output_dir: Option<PathBuf>) -> ExitCode {
    let result = match output_dir {
        None => lethe::api::crds_yaml().map(|s| print!("{s}")).map_err(|e| e.to_string()),
        Some(dir) => lethe::api::crds().iter().try_for_each(|(file, crd)| {
            let text = lethe::api::crd_document(crd).map_err(|e| e.to_string())?;
            std::fs::write(dir.join(file), text).map_err(|e| format!("{}: {e}", dir.join(file).display()))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lethe crd: {e}");
            ExitCode::FAILURE
        }
    }
}
