//! Hot reload of `--config-dir`.
//!
//! A cheap polling loop reads `config.json` and `secrets.json` (following symlinks) every
//! interval and compares their bytes with the last seen. Comparing content rather than
//! inotify events or mtimes makes it indifferent to how the files change: rewritten in
//! place, renamed over, the kubelet's `..data` symlink swap, or the directory itself
//! replaced. A change is debounced (the files must be stable over one more interval), then
//! loaded, checked and compiled aside; only a valid configuration is swapped in. An invalid
//! one is logged and counted, and the last good configuration keeps serving.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use portcullis_config::{CONFIG_FILE, ConfigError, SECRETS_FILE, load_dir};

use super::state::{Active, Shared};
use crate::base::engine::{CompileError, Limits};
use crate::base::tls::TlsError;
use crate::listen::ServerTls;
use crate::telemetry::metrics::{Metrics, ReloadResult};
use crate::upstream::{Forwarder, Origins};

/// Why a configuration directory was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the configuration does not compile: {0}")]
    Compile(#[from] CompileError),
    #[error("the TLS material is refused: {0}")]
    Tls(#[from] TlsError),
}

/// Reads, checks and compiles the configuration in `dir`, with its client-facing TLS and
/// its origin clients (timeouts from `forwarder`) and its routes' metrics resolved.
pub fn load(dir: &Path, limiter: &Arc<Limits>, forwarder: &Forwarder, metrics: &Metrics) -> Result<Active, LoadError> {
    let loaded = load_dir(dir)?;
    let tls = ServerTls::build(&loaded)?;
    let (connect_timeout, timeout) = forwarder.timeouts();
    let origins = Origins::build(&loaded, connect_timeout, timeout)?;
    Ok(Active::compile(&loaded, limiter.clone(), tls, origins, metrics)?)
}

/// The bytes of both files, or the error kind when one cannot be read.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Snapshot(Vec<Result<Vec<u8>, ErrorKind>>);

impl Snapshot {
    /// Reads the files of `dir` now.
    pub fn read(dir: &Path) -> Self {
        Self(
            [CONFIG_FILE, SECRETS_FILE]
                .iter()
                .map(|f| std::fs::read(dir.join(f)).map_err(|e| e.kind()))
                .collect(),
        )
    }
}

/// Loads `dir` once and puts the result in force (or logs and counts the failure).
/// Returns whether the configuration was accepted.
pub fn apply(shared: &Shared, dir: &Path) -> bool {
    match load(dir, &shared.limiter, &shared.forwarder, &shared.metrics) {
        Ok(active) => {
            let previous = shared.active.load().generation().to_owned();
            tracing::info!(
                generation = active.generation(),
                previous = previous.as_str(),
                routes = active.config.routes.len(),
                "configuration loaded"
            );
            shared.metrics.reload(ReloadResult::Ok);
            shared.swap(active);
            true
        }
        Err(error) => {
            let serving = shared.active.load().generation().to_owned();
            tracing::error!(%error, dir = %dir.display(), serving = serving.as_str(),
                "configuration refused; the last good configuration keeps serving");
            shared.metrics.reload(ReloadResult::Error);
            false
        }
    }
}

/// Where configurations come from: the mounted directory (what the kubelet syncs) and, when
/// the sidecar follows its objects through the API, the directory they are written to.
#[derive(Debug, Clone)]
pub struct Sources {
    /// `--config-dir`.
    pub mounted: PathBuf,
    /// `--watch-dir`, when following the API.
    pub api: Option<PathBuf>,
}

impl Sources {
    /// The directory in force: the API's once it holds a configuration (it is never older
    /// than the mounted one), else the mounted one.
    pub fn current(&self) -> &Path {
        match &self.api {
            Some(api) if api.join(CONFIG_FILE).exists() => api,
            _ => &self.mounted,
        }
    }
}

/// Watches the sources forever, applying every stable change of the directory in force.
pub async fn watch(shared: Arc<Shared>, sources: Sources, interval: Duration, last: Snapshot) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_dir = sources.current().to_owned();
    let mut last = last;
    loop {
        ticker.tick().await;
        let dir = sources.current().to_owned();
        let now = read(&dir).await;
        if now == last && dir == last_dir {
            continue;
        }
        last_dir = dir.clone();
        // Debounce: wait until the files stop changing (a writer may still be busy).
        let mut candidate = now;
        loop {
            tokio::time::sleep(interval).await;
            let again = read(&dir).await;
            if again == candidate {
                break;
            }
            candidate = again;
        }
        tracing::debug!(dir = %dir.display(), "configuration directory changed");
        let shared2 = shared.clone();
        let dir2 = dir.clone();
        // Reading and compiling touches the disk and may take a moment: off the runtime.
        if let Err(e) = tokio::task::spawn_blocking(move || apply(&shared2, &dir2)).await {
            tracing::error!(error = %e, "configuration reload task failed");
        }
        last = candidate;
    }
}

async fn read(dir: &Path) -> Snapshot {
    let dir = dir.to_owned();
    let fallback = Snapshot(vec![Err(ErrorKind::Other)]);
    tokio::task::spawn_blocking(move || Snapshot::read(&dir))
        .await
        .unwrap_or(fallback)
}
