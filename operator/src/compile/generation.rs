//! The configuration generation: a keyed MAC of what a sidecar enforces.
//!
//! The generation names a compiled configuration and its secret material. It is published
//! widely (the `portcullis.dev/generation` annotation, a route's `status.configGeneration`,
//! the sidecar's `/readyz`, `/config` and `portcullis_config_info{generation}`), so it must
//! not let anyone who reads it test a guess of a password or key offline. It is therefore
//! HMAC-SHA256 under a [`GenerationKey`] (the operator keeps one in a Secret in its own
//! namespace) over `config.json`, a zero byte and `secrets.json` (both before the generation
//! is set), truncated to 16 hex digits: the same for the same content and key, different as
//! soon as either changes, and without the key no function of the content anyone can
//! recompute.

use std::sync::OnceLock;

use hmac::{Hmac, Mac};
use portcullis_config::{SecretMaterial, SidecarConfig};
use sha2::Sha256;

/// Bytes of a key the operator generates, and the fewest it accepts.
pub const KEY_LEN: usize = 32;

/// The key of the generation MAC. Never printed: `Debug` shows no byte of it.
#[derive(Clone)]
pub struct GenerationKey(Vec<u8>);

/// Why a key cannot be made or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("a generation key needs at least {KEY_LEN} bytes, this one has {0}")]
    TooShort(usize),
    #[error("the operating system's random number generator failed")]
    Random,
}

impl GenerationKey {
    /// A new random key of [`KEY_LEN`] bytes.
    pub fn generate() -> Result<Self, KeyError> {
        use ring::rand::SecureRandom;
        let mut bytes = vec![0u8; KEY_LEN];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| KeyError::Random)?;
        Ok(Self(bytes))
    }

    /// A key from its bytes (a Secret's or a file's), at least [`KEY_LEN`] of them.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() < KEY_LEN {
            return Err(KeyError::TooShort(bytes.len()));
        }
        Ok(Self(bytes.to_vec()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A random key of this process, made on first use: what [`compile`](super::compile)
    /// uses when the caller gives none. Generations under it are stable within the process
    /// and mean nothing outside it.
    pub fn process() -> &'static Self {
        static KEY: OnceLock<GenerationKey> = OnceLock::new();
        KEY.get_or_init(|| Self::generate().expect("a random generation key for this process"))
    }
}

impl std::fmt::Debug for GenerationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GenerationKey(..)")
    }
}

/// The generation of a configuration and its secrets (before the generation is set in
/// them): the first 16 hex digits of HMAC-SHA256 under `key` over `config.json`, a zero
/// byte and `secrets.json`.
pub fn generation(key: &GenerationKey, config: &SidecarConfig, material: &SecretMaterial) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(&serde_json::to_vec(config).expect("config serializes"));
    mac.update(&[0]);
    mac.update(&serde_json::to_vec(material).expect("secrets serialize"));
    hex::encode(&mac.finalize().into_bytes()[..8])
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    use portcullis_api::{ApiRoute, SecurityProfile};
    use serde_json::json;
    use sha2::Digest;

    use super::*;
    use crate::compile::{Inputs, Output, compile_with_key};

    /// A Basic profile whose Secret holds `password`, and a route using it.
    fn compile(password: &str, key: &GenerationKey) -> Output {
        let meta = |name: &str| json!({"name": name, "namespace": "prod"});
        let profile: SecurityProfile = serde_json::from_value(json!({
            "apiVersion": "portcullis.dev/v1alpha1", "kind": "SecurityProfile", "metadata": meta("basic"),
            "spec": {"type": "Basic", "basic": {"secretRef": {"name": "users"}}},
        }))
        .unwrap();
        let route: ApiRoute = serde_json::from_value(json!({
            "apiVersion": "portcullis.dev/v1alpha1", "kind": "ApiRoute", "metadata": meta("api"),
            "spec": {"workloadSelector": {}, "pathPrefix": "/api", "profiles": [{"name": "basic"}],
                     "backend": {"port": 8080}},
        }))
        .unwrap();
        let mut secret: Secret =
            serde_json::from_value(json!({"metadata": meta("users"), "type": "kubernetes.io/basic-auth"})).unwrap();
        secret.data = Some(
            [("username", "alice"), ("password", password)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        );
        let out = compile_with_key(
            &Inputs {
                namespace: "prod",
                profiles: &[profile],
                routes: &[route],
                secrets: &[secret],
                org_allowance: None,
                trusted_proxies: &[],
                limits_store_configured: false,
                workload_labels: None,
            },
            key,
        );
        assert!(out.errors("prod").is_empty(), "{:?}", out.errors("prod"));
        assert!(String::from_utf8(out.loaded.secrets_json()).unwrap().contains(password));
        out
    }

    /// What the generation used to be: the first 16 hex digits of the unkeyed SHA-256 over
    /// the same bytes, which anyone holding `config.json` could recompute over a guessed
    /// `secrets.json` to confirm a password offline.
    fn unkeyed_sha256(out: &Output) -> String {
        let (mut config, mut material) = (out.loaded.config.clone(), out.loaded.secrets.clone());
        config.generation.clear();
        material.generation.clear();
        let mut hasher = sha2::Sha256::new();
        hasher.update(serde_json::to_vec(&config).unwrap());
        hasher.update([0]);
        hasher.update(serde_json::to_vec(&material).unwrap());
        hex::encode(&hasher.finalize()[..8])
    }

    #[test]
    fn the_generation_is_a_keyed_mac_not_a_content_hash() {
        let key = GenerationKey::from_bytes(&[1; 32]).unwrap();
        let other = GenerationKey::from_bytes(&[2; 32]).unwrap();
        let out = compile("correct-horse-battery", &key);
        let generation = out.loaded.config.generation.clone();
        assert_eq!(generation.len(), 16);
        assert!(
            generation
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(out.loaded.secrets.generation, generation, "both files carry it");

        // Not the unkeyed hash: knowing the content (or guessing the password) is not
        // enough to recompute it.
        assert_ne!(generation, unkeyed_sha256(&out));
        // Another key, another generation for the same content (and nothing else differs).
        let mut under_other = compile("correct-horse-battery", &other).loaded;
        assert_ne!(under_other.config.generation, generation);
        under_other.config.generation = generation.clone();
        under_other.secrets.generation = generation.clone();
        assert!(under_other == out.loaded, "the key changes nothing but the generation");

        // Stable under the same key; changes exactly when the content does.
        assert_eq!(
            compile("correct-horse-battery", &key).loaded.config.generation,
            generation
        );
        let same_bytes = GenerationKey::from_bytes(&[1; 32]).unwrap();
        assert_eq!(
            compile("correct-horse-battery", &same_bytes).loaded.config.generation,
            generation
        );
        assert_ne!(
            compile("correct-horse-batterz", &key).loaded.config.generation,
            generation
        );
    }

    #[test]
    fn keys_are_random_long_enough_and_never_printed() {
        let (a, b) = (GenerationKey::generate().unwrap(), GenerationKey::generate().unwrap());
        assert_eq!(a.as_bytes().len(), KEY_LEN);
        assert_ne!(a.as_bytes(), b.as_bytes());
        assert!(matches!(
            GenerationKey::from_bytes(&[0; 31]),
            Err(KeyError::TooShort(31))
        ));
        assert_eq!(GenerationKey::from_bytes(&[0; 64]).unwrap().as_bytes().len(), 64);
        assert_eq!(format!("{a:?}"), "GenerationKey(..)");
        // Within one process, compile() is stable under its process key.
        assert_eq!(GenerationKey::process().as_bytes(), GenerationKey::process().as_bytes());
    }
}
