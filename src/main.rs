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
    /// Run the controllers against the current Kubernetes cluster.
    Operator,
    /// One retention pass of a dataset, from manifests (the scrub Job mode, `--run`, comes with the controllers).
    Scrub {
        /// The Dataset to scrub.
        #[arg(long)]
        dataset: String,
        /// Directory (or file) of manifests holding the Dataset, its DataStore, policies and holds.
        #[arg(short = 'f', long = "filename")]
        manifests: PathBuf,
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
    },
    /// Print every CRD as YAML (the content of crds/).
    Crd {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long)]
        output_dir: Option<PathBuf>,
    },
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
    /// Print the privacy report of deletion requests and retention runs.
    Report,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn not_yet(what: &str, issue: u32) -> ExitCode {
    eprintln!("lethe {what} is not implemented yet (tracked in issue {issue}).");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd { output_dir } => crd(output_dir),
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
        Command::Operator => not_yet("operator", 5),
        Command::Scrub { dataset, manifests, dry_run, at } => scrub(&dataset, &manifests, dry_run, at.as_deref()),
        Command::Dev { kubeconfig, port, no_operator } => {
            let opts = lethe::dev::DevOptions {
                kubeconfig: kubeconfig.unwrap_or_else(lethe::dev::default_kubeconfig),
                port,
                no_operator,
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
        Command::Report => not_yet("report", 7),
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
