//! `portcullis-sidecar`: see [`portcullis_sidecar`].

use anyhow::Context;
use clap::Parser;
use portcullis_sidecar::base::cpus::Budget;
use portcullis_sidecar::cli::{Cli, Command, LogFormat};
use portcullis_sidecar::demo;
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

// jemalloc: fewer and cheaper allocator calls than glibc's malloc on the request path, and a
// flat RSS under churn (measured with tests/bench/run.sh; see the README's Performance).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_format)?;
    let cap = cli.workers.or_else(|| {
        std::env::var("TOKIO_WORKER_THREADS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
    });
    let workers = Budget::read().workers(cap);
    tracing::info!(workers = workers.count, affinity = ?workers.budget.affinity,
        cpu_quota = ?workers.budget.quota, cap = ?workers.cap, "runtime");
    runtime(workers.count)?.block_on(async {
        match cli.command {
            Some(Command::DemoBackend { listen }) => demo::serve(listen).await.context("demo backend"),
            None => portcullis_sidecar::run(cli.serve).await.context("sidecar"),
        }
    })
}

/// The tokio runtime with `workers` workers ([`portcullis_sidecar::base::cpus`]). With one
/// worker the current-thread scheduler does the same work without cross-thread wake-ups.
fn runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    builder.enable_all().build().context("cannot start the tokio runtime")
}

/// Operational logs to stdout (JSON or text, `RUST_LOG` filtered, default `info`). Audit
/// lines do not go through `tracing`: see [`portcullis_sidecar::telemetry::audit`].
fn init_tracing(format: LogFormat) -> anyhow::Result<()> {
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ops = match format {
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stdout).boxed(),
        LogFormat::Text => fmt::layer().with_writer(std::io::stdout).boxed(),
    }
    .with_filter(env);
    tracing_subscriber::registry().with(ops).try_init()?;
    Ok(())
}
