//! Follows the sidecar's own ConfigMap (`config.json`) and Secret (`secrets.json`) through the
//! Kubernetes API and writes them into the sidecar's configuration directory, atomically and
//! in the kubelet's layout, so the sidecar's ordinary reload picks them up.
//!
//! Mounted ConfigMaps and Secrets reach a pod only when the kubelet next syncs (up to a
//! minute or more). Where the sidecar's service account may `list`/`watch` its own two
//! objects, this brings a change within a second of the operator writing it.
//!
//! This crate speaks the few requests it needs (list, watch with bookmarks, 410 Gone
//! recovery) over hyper and rustls, so the sidecar does not depend on kube. Both files are
//! written only when the two objects carry the same configuration `generation`, so the
//! sidecar never sees a configuration with another version's secrets.

#![forbid(unsafe_code)]

pub mod atomic_dir;
mod client;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

pub use client::{ApiClient, ApiConfig};
pub use watch::{Kind, Update, watch_object};

/// Why talking to the API failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("in-cluster configuration: {0}")]
    InCluster(String),
    #[error("bad API server URL {0:?}")]
    Url(String),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("request to {path} failed: {message}")]
    Request { path: String, message: String },
    #[error("{path}: the API server answered {status}")]
    Status { path: String, status: u16 },
    #[error("{path}: unexpected response: {message}")]
    Decode { path: String, message: String },
    #[error("the watch expired (410 Gone)")]
    Gone,
}

/// What to follow and where to write it.
#[derive(Clone, Debug)]
pub struct Target {
    /// Name of the ConfigMap holding `config.json`.
    pub configmap: String,
    /// Name of the Secret holding `secrets.json`.
    pub secret: String,
    /// The sidecar's `--config-dir`.
    pub dir: PathBuf,
}

/// Follows both objects until the task is dropped, writing each consistent pair into
/// `target.dir`. Never returns; errors are logged and retried with backoff.
pub async fn run(client: ApiClient, target: Target) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Update>(16);
    for (kind, name) in [(Kind::ConfigMap, &target.configmap), (Kind::Secret, &target.secret)] {
        let client = client.clone();
        let name = name.clone();
        let tx = tx.clone();
        tokio::spawn(async move { watch_object(&client, kind, &name, tx).await });
    }
    drop(tx);

    let mut config: Option<Vec<u8>> = None;
    let mut secrets: Option<Vec<u8>> = None;
    let mut written: Option<String> = None;
    while let Some(update) = rx.recv().await {
        match update.kind {
            Kind::ConfigMap => config = update.content,
            Kind::Secret => secrets = update.content,
        }
        let (Some(c), Some(s)) = (&config, &secrets) else {
            continue;
        };
        let Some(generation) = matching_generation(c, s) else {
            tracing::debug!("ConfigMap and Secret generations differ; waiting for the other to follow");
            continue;
        };
        if written.as_deref() == Some(generation.as_str()) {
            continue;
        }
        let files = [
            (portcullis_config::CONFIG_FILE, c.as_slice()),
            (portcullis_config::SECRETS_FILE, s.as_slice()),
        ];
        match atomic_dir::write_atomically(&target.dir, &files) {
            Ok(()) => {
                tracing::info!(%generation, dir = %target.dir.display(), "configuration written from the API");
                written = Some(generation);
            }
            Err(error) => tracing::warn!(%error, dir = %target.dir.display(), "cannot write the configuration"),
        }
    }
}

/// The generation both files carry, when it is the same.
fn matching_generation(config: &[u8], secrets: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Generation {
        generation: String,
    }
    let c: Generation = serde_json::from_slice(config).ok()?;
    let s: Generation = serde_json::from_slice(secrets).ok()?;
    (c.generation == s.generation).then_some(c.generation)
}

/// Exponential backoff between 250 ms and 10 s.
#[derive(Debug)]
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) fn new() -> Self {
        Self(Duration::from_millis(250))
    }

    pub(crate) fn reset(&mut self) {
        self.0 = Duration::from_millis(250);
    }

    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_must_match() {
        assert_eq!(
            matching_generation(br#"{"generation":"g1","x":1}"#, br#"{"generation":"g1"}"#),
            Some("g1".into())
        );
        assert_eq!(
            matching_generation(br#"{"generation":"g1"}"#, br#"{"generation":"g2"}"#),
            None
        );
        assert_eq!(matching_generation(b"not json", br#"{"generation":"g2"}"#), None);
    }
}
