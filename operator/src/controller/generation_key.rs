//! The key of the configuration generation ([`crate::compile::generation`]), kept in the
//! Secret [`GENERATION_KEY_SECRET`] in the operator's namespace: created once (32 random
//! bytes under [`GENERATION_KEY_DATA`]) when missing, read at startup, never overwritten
//! while usable, so the generation of unchanged content survives restarts and failovers.
//! The key never reaches a log line or an error.
//!
//! Layer 5 (I/O) of the list in `controller`: may use layers 0–4; only its tests use a
//! sibling, `objects` (layer 1).

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::compile::GenerationKey;
use crate::compile::generation::KeyError;

/// The Secret holding the key, in the operator's namespace.
pub const GENERATION_KEY_SECRET: &str = "portcullis-generation-key";
/// The Secret's data key whose value is the key's raw bytes.
pub const GENERATION_KEY_DATA: &str = "key";
/// The label the Secret carries (not the configuration groups' `managed-by` label: the
/// controllers never treat it as one of their objects).
pub const GENERATION_KEY_LABEL: &str = "portcullis.dev/generation-key";

/// Writes lost to a concurrent replica before giving up (the caller retries later).
const ATTEMPTS: usize = 5;

/// The Secret holding `key`.
pub fn key_secret(namespace: &str, key: &GenerationKey) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(GENERATION_KEY_SECRET.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(GENERATION_KEY_LABEL.to_owned(), "true".to_owned())])),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            GENERATION_KEY_DATA.to_owned(),
            ByteString(key.as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}

/// Why the Secret's key cannot be used (names no byte of it).
#[derive(Debug, thiserror::Error)]
pub enum UnusableKey {
    #[error("data.{GENERATION_KEY_DATA} is missing")]
    Missing,
    #[error("data.{GENERATION_KEY_DATA}: {0}")]
    Invalid(#[from] KeyError),
}

/// The key a Secret holds.
pub fn key_from_secret(secret: &Secret) -> Result<GenerationKey, UnusableKey> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(GENERATION_KEY_DATA))
        .ok_or(UnusableKey::Missing)?;
    Ok(GenerationKey::from_bytes(&bytes.0)?)
}

/// Why the key could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("Secret {namespace}/{GENERATION_KEY_SECRET}: {source}")]
    Api {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("a new generation key: {0}")]
    Generate(#[from] KeyError),
}

/// Reads the key from the Secret in `namespace`; creates the Secret with a new random key
/// when it is missing, and replaces the key when it is unusable (with a warning naming the
/// Secret). A replica that loses a race with another one (the Secret created, or changed,
/// meanwhile) reads what the other wrote, so every replica ends up with the same key.
pub async fn load_or_create(client: &Client, namespace: &str) -> Result<GenerationKey, LoadError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let api_err = |source| LoadError::Api {
        namespace: namespace.to_owned(),
        source,
    };
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let written = match api.get_opt(GENERATION_KEY_SECRET).await.map_err(api_err)? {
            Some(secret) => match key_from_secret(&secret) {
                Ok(key) => {
                    tracing::info!(namespace, name = GENERATION_KEY_SECRET, "read the generation key");
                    return Ok(key);
                }
                Err(problem) => {
                    tracing::warn!(
                        namespace,
                        name = GENERATION_KEY_SECRET,
                        %problem,
                        "the generation key Secret is unusable; a new key replaces it"
                    );
                    let key = GenerationKey::generate()?;
                    // Only if nobody changed it since it was read.
                    let body = json!({
                        "metadata": {"resourceVersion": secret.metadata.resource_version},
                        "data": {GENERATION_KEY_DATA: base64::engine::general_purpose::STANDARD.encode(key.as_bytes())},
                    });
                    api.patch(GENERATION_KEY_SECRET, &PatchParams::default(), &Patch::Merge(&body))
                        .await
                        .map(|_| key)
                }
            },
            None => {
                let key = GenerationKey::generate()?;
                api.create(&PostParams::default(), &key_secret(namespace, &key))
                    .await
                    .map(|_| key)
            }
        };
        match written {
            Ok(key) => {
                tracing::info!(namespace, name = GENERATION_KEY_SECRET, "wrote a new generation key");
                return Ok(key);
            }
            // Another replica created or replaced it meanwhile: read theirs.
            Err(kube::Error::Api(status)) if status.code == 409 => last = Some(kube::Error::Api(status)),
            Err(error) => return Err(api_err(error)),
        }
    }
    Err(api_err(last.expect("at least one attempt")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_holds_the_raw_key_and_reads_back() {
        let key = GenerationKey::from_bytes(&[7; 32]).unwrap();
        let secret = key_secret("ops", &key);
        assert_eq!(secret.metadata.name.as_deref(), Some(GENERATION_KEY_SECRET));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("ops"));
        assert_eq!(secret.data.as_ref().unwrap()[GENERATION_KEY_DATA].0, vec![7; 32]);
        // Not one of the controllers' group objects.
        assert!(!crate::controller::objects::is_managed(&secret.metadata));
        assert_eq!(key_from_secret(&secret).unwrap().as_bytes(), key.as_bytes());

        let mut short = secret.clone();
        short
            .data
            .as_mut()
            .unwrap()
            .insert(GENERATION_KEY_DATA.into(), ByteString(vec![1; 8]));
        let message = key_from_secret(&short).unwrap_err().to_string();
        assert_eq!(
            message,
            "data.key: a generation key needs at least 32 bytes, this one has 8"
        );
        let mut empty = secret;
        empty.data = None;
        assert_eq!(key_from_secret(&empty).unwrap_err().to_string(), "data.key is missing");
    }

    #[test]
    fn debug_shows_no_key() {
        let key = GenerationKey::from_bytes(&[0xab; 32]).unwrap();
        assert_eq!(format!("{key:?}"), "GenerationKey(..)");
    }
}
