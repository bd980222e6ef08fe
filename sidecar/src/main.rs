//! `portcullis-sidecar`: see [`portcullis_sidecar`].

use std::fs::OpenOptions;
use std::io::LineWriter;
use std::sync::Mutex;

use anyhow::Context;
use clap::Parser;
use portcullis_sidecar::cli::{Cli, Command, LogFormat};
use portcullis_sidecar::{audit, demo};
use tracing_subscriber::filter::{EnvFilter, FilterExt, Targets, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(&cli)?;
    match cli.command {
        Some(Command::DemoBackend { listen }) => demo::serve(listen).await.context("demo backend"),
        None => portcullis_sidecar::run(cli.serve).await.context("sidecar"),
    }
}

/// Operational logs to stdout (JSON or text, `RUST_LOG` filtered, default `info`); audit
/// lines always as JSON, to `--audit-log` or stdout.
fn init_tracing(cli: &Cli) -> anyhow::Result<()> {
    let not_audit = filter_fn(|m| m.target() != audit::TARGET);
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ops = match cli.log_format {
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stdout).boxed(),
        LogFormat::Text => fmt::layer().with_writer(std::io::stdout).boxed(),
    }
    .with_filter(env.and(not_audit));
    let only_audit = Targets::new().with_target(audit::TARGET, tracing::Level::INFO);
    let audit_layer = match &cli.serve.audit_log {
        Some(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open the audit log {}", path.display()))?;
            fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_writer(Mutex::new(LineWriter::new(file)))
                .boxed()
        }
        None => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stdout)
            .boxed(),
    }
    .with_filter(only_audit);
    tracing_subscriber::registry().with(ops).with(audit_layer).try_init()?;
    Ok(())
}
