//! `portcullis-sidecar`: see [`portcullis_sidecar`].

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use portcullis_sidecar::cli::{Cli, Command, LogFormat};
use portcullis_sidecar::{audit, demo};
use tracing_subscriber::filter::{EnvFilter, FilterExt, Targets, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

// jemalloc: fewer and cheaper allocator calls than glibc's malloc on the request path, and a
// flat RSS under churn (measured with tests/bench/run.sh; see the README's Performance).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long an audit line may wait in memory before it is written out.
const AUDIT_FLUSH_INTERVAL: Duration = Duration::from_millis(100);

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let audit = init_tracing(&cli)?;
    let result = runtime()?.block_on(async {
        match cli.command {
            Some(Command::DemoBackend { listen }) => demo::serve(listen).await.context("demo backend"),
            None => portcullis_sidecar::run(cli.serve).await.context("sidecar"),
        }
    });
    if let Some(audit) = audit {
        flush(&audit);
    }
    result
}

/// The tokio runtime: one worker per CPU, or `TOKIO_WORKER_THREADS`. With a single worker
/// (the usual sidecar budget) the current-thread scheduler does the same work without
/// cross-thread wake-ups.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let single = std::env::var("TOKIO_WORKER_THREADS").is_ok_and(|v| v.trim() == "1");
    let mut builder = if single {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build().context("cannot start the tokio runtime")
}

/// The audit log, buffered: request handlers append lines to memory under a short lock;
/// a flusher thread swaps the buffer out every [`AUDIT_FLUSH_INTERVAL`] (and at exit) and
/// writes it to the file outside that lock, so no request ever waits on disk (like nginx's
/// `access_log ... buffer=`).
struct AuditLog {
    pending: Mutex<Vec<u8>>,
    file: Mutex<(File, Vec<u8>)>,
}

type AuditFile = Arc<AuditLog>;

/// The audit log as a `tracing` writer: each event is appended whole under the lock.
struct AuditSink(AuditFile);

struct AuditGuard<'a>(std::sync::MutexGuard<'a, Vec<u8>>);

impl Write for AuditGuard<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for AuditSink {
    type Writer = AuditGuard<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        AuditGuard(self.0.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn flush(audit: &AuditFile) {
    let mut file = audit.file.lock().unwrap_or_else(|p| p.into_inner());
    let (file, spare) = &mut *file;
    {
        let mut pending = audit.pending.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::swap(&mut *pending, spare);
    }
    if spare.is_empty() {
        return;
    }
    if let Err(error) = file.write_all(spare) {
        tracing::error!(%error, "cannot write the audit log");
    }
    spare.clear();
}

/// Operational logs to stdout (JSON or text, `RUST_LOG` filtered, default `info`); audit
/// lines always as JSON, to `--audit-log` (returned, to be flushed at exit) or stdout.
fn init_tracing(cli: &Cli) -> anyhow::Result<Option<AuditFile>> {
    let not_audit = filter_fn(|m| m.target() != audit::TARGET);
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ops = match cli.log_format {
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stdout).boxed(),
        LogFormat::Text => fmt::layer().with_writer(std::io::stdout).boxed(),
    }
    .with_filter(env.and(not_audit));
    let only_audit = Targets::new().with_target(audit::TARGET, tracing::Level::INFO);
    let mut audit_file = None;
    let audit_layer = match &cli.serve.audit_log {
        Some(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open the audit log {}", path.display()))?;
            let file: AuditFile = Arc::new(AuditLog {
                pending: Mutex::new(Vec::with_capacity(64 * 1024)),
                file: Mutex::new((file, Vec::with_capacity(64 * 1024))),
            });
            let flusher = file.clone();
            std::thread::Builder::new()
                .name("audit-flush".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(AUDIT_FLUSH_INTERVAL);
                        flush(&flusher);
                    }
                })
                .context("cannot start the audit log flusher")?;
            audit_file = Some(file.clone());
            fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_writer(AuditSink(file))
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
    Ok(audit_file)
}
