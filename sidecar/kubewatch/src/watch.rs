//! Following one named ConfigMap or Secret: list for its state and a resourceVersion, then
//! watch from there (with bookmarks); re-list when the watch expires (410 Gone), back off on
//! errors.

use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::{ApiClient, Backoff, WatchError};

/// Which object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A ConfigMap whose `data["config.json"]` is the configuration.
    ConfigMap,
    /// A Secret whose `data["secrets.json"]` (base64) is the secret material.
    Secret,
}

impl Kind {
    fn resource(self) -> &'static str {
        match self {
            Self::ConfigMap => "configmaps",
            Self::Secret => "secrets",
        }
    }

    /// The file's bytes in the object, if present.
    fn content(self, object: &Value) -> Option<Vec<u8>> {
        match self {
            Self::ConfigMap => object["data"][portcullis_config::CONFIG_FILE]
                .as_str()
                .map(|s| s.as_bytes().to_vec()),
            Self::Secret => object["data"][portcullis_config::SECRETS_FILE]
                .as_str()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok()),
        }
    }
}

/// The latest content of one object (`None`: absent or deleted).
#[derive(Debug)]
pub struct Update {
    pub kind: Kind,
    pub content: Option<Vec<u8>>,
}

const WATCH_SECONDS: u32 = 290;
const IDLE: Duration = Duration::from_secs(WATCH_SECONDS as u64 + 30);

/// Sends an [`Update`] whenever the object changes, until the receiver is dropped.
pub async fn watch_object(client: &ApiClient, kind: Kind, name: &str, tx: mpsc::Sender<Update>) {
    let mut backoff = Backoff::new();
    let collection = format!("/api/v1/namespaces/{}/{}", client.namespace(), kind.resource());
    let selector = format!("fieldSelector=metadata.name%3D{name}");
    loop {
        if tx.is_closed() {
            return;
        }
        let outcome = follow(client, kind, &collection, &selector, &tx, &mut backoff).await;
        match outcome {
            Err(WatchError::Gone) => tracing::debug!(?kind, name, "watch expired; listing again"),
            Err(error) => {
                tracing::warn!(?kind, name, %error, "watching the API failed; retrying");
                backoff.wait().await;
            }
            Ok(()) => return,
        }
    }
}

/// One list + watch session. `Ok(())` only when the receiver is gone.
async fn follow(
    client: &ApiClient,
    kind: Kind,
    collection: &str,
    selector: &str,
    tx: &mpsc::Sender<Update>,
    backoff: &mut Backoff,
) -> Result<(), WatchError> {
    let list = client
        .get_json(&format!("{collection}?{selector}"), Duration::from_secs(10))
        .await?;
    let mut version = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let content = list["items"]
        .as_array()
        .and_then(|items| items.first())
        .and_then(|o| kind.content(o));
    if tx.send(Update { kind, content }).await.is_err() {
        return Ok(());
    }
    backoff.reset();
    loop {
        let path = format!(
            "{collection}?{selector}&watch=1&allowWatchBookmarks=true&timeoutSeconds={WATCH_SECONDS}&resourceVersion={version}"
        );
        let mut lines = client.stream_lines(&path).await?;
        while let Some(event) = lines.next(IDLE).await? {
            let object = &event["object"];
            if let Some(v) = object["metadata"]["resourceVersion"].as_str() {
                version = v.to_owned();
            }
            let content = match event["type"].as_str() {
                Some("ADDED" | "MODIFIED") => kind.content(object),
                Some("DELETED") => None,
                Some("BOOKMARK") => continue,
                Some("ERROR") if object["code"].as_u64() == Some(410) => return Err(WatchError::Gone),
                other => {
                    return Err(WatchError::Decode {
                        path,
                        message: format!("unexpected watch event {other:?}"),
                    });
                }
            };
            if tx.send(Update { kind, content }).await.is_err() {
                return Ok(());
            }
        }
        // The server closed the watch (timeoutSeconds): watch again from `version`.
    }
}
