//! Reading Kubernetes Secrets for the compiler: existence, type and keys, with errors that
//! name the field that referenced the Secret and never the Secret's values.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

use super::{Problem, reason};
use portcullis_config::Sensitive;

/// Secret type of HTTP Basic credentials.
pub const BASIC_AUTH: &str = "kubernetes.io/basic-auth";
/// Secret type of TLS certificates and keys.
pub const TLS: &str = "kubernetes.io/tls";

/// The Secrets of one namespace, by name.
pub struct SecretIndex<'a> {
    namespace: &'a str,
    by_name: BTreeMap<&'a str, &'a Secret>,
}

/// One Secret's data as UTF-8 strings (`stringData` taking precedence over `data`, as the API
/// server does).
pub struct SecretData {
    name: String,
    field: String,
    entries: BTreeMap<String, Vec<u8>>,
}

impl<'a> SecretIndex<'a> {
    /// The namespace the index covers.
    pub fn namespace(&self) -> &str {
        self.namespace
    }

    pub fn new(namespace: &'a str, secrets: &'a [Secret]) -> Self {
        let by_name = secrets
            .iter()
            .filter(|s| s.metadata.namespace.as_deref().unwrap_or(namespace) == namespace)
            .filter_map(|s| Some((s.metadata.name.as_deref()?, s)))
            .collect();
        Self { namespace, by_name }
    }

    /// The Secret named `name`, referenced by `field`; with `want_type`, its `type` must match.
    pub fn get(&self, field: &str, name: &str, want_type: Option<&str>) -> Result<SecretData, Problem> {
        let secret = self.by_name.get(name).ok_or_else(|| {
            Problem::new(
                reason::SECRET_NOT_FOUND,
                field,
                format!("Secret {name:?} not found in namespace {}", self.namespace),
            )
        })?;
        if let Some(want) = want_type {
            let have = secret.type_.as_deref().unwrap_or("Opaque");
            if have != want {
                return Err(Problem::new(
                    reason::WRONG_SECRET_TYPE,
                    field,
                    format!("Secret {name:?} has type {have}, expected {want}"),
                ));
            }
        }
        let mut entries: BTreeMap<String, Vec<u8>> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        for (k, v) in secret.string_data.iter().flatten() {
            entries.insert(k.clone(), v.clone().into_bytes());
        }
        Ok(SecretData {
            name: name.to_owned(),
            field: field.to_owned(),
            entries,
        })
    }
}

impl SecretData {
    /// The value of `key`, which must be present, non-empty UTF-8.
    pub fn required(&self, key: &str) -> Result<Sensitive, Problem> {
        match self.entries.get(key) {
            None => Err(Problem::new(
                reason::SECRET_KEY_MISSING,
                &self.field,
                format!("Secret {:?} has no key {key:?}", self.name),
            )),
            Some(v) if v.is_empty() => Err(Problem::new(
                reason::SECRET_KEY_MISSING,
                &self.field,
                format!("Secret {:?} has an empty {key:?}", self.name),
            )),
            Some(v) => self.utf8(key, v),
        }
    }

    /// Every entry, for Secrets that map identifiers to secrets (API keys, clients, keyIds).
    pub fn all(&self) -> Result<BTreeMap<String, Sensitive>, Problem> {
        if self.entries.is_empty() {
            return Err(Problem::new(
                reason::SECRET_KEY_MISSING,
                &self.field,
                format!("Secret {:?} has no entries", self.name),
            ));
        }
        self.entries
            .iter()
            .map(|(k, v)| Ok((k.clone(), self.utf8(k, v)?)))
            .collect()
    }

    /// A PEM value under `key` that must contain a `BEGIN <label>` block.
    pub fn pem(&self, key: &str, label: &str) -> Result<String, Problem> {
        let value = self.required(key)?;
        if !value.expose().contains(&format!("-----BEGIN {label}")) {
            return Err(Problem::new(
                reason::INVALID_SECRET,
                &self.field,
                format!("Secret {:?} key {key:?} is not a PEM {label}", self.name),
            ));
        }
        Ok(value.expose().to_owned())
    }

    /// A PEM private key under `key` (any of the usual PEM labels).
    pub fn private_key(&self, key: &str) -> Result<Sensitive, Problem> {
        let value = self.required(key)?;
        if !value.expose().contains("-----BEGIN") || !value.expose().contains("PRIVATE KEY-----") {
            return Err(Problem::new(
                reason::INVALID_SECRET,
                &self.field,
                format!("Secret {:?} key {key:?} is not a PEM private key", self.name),
            ));
        }
        Ok(value)
    }

    fn utf8(&self, key: &str, v: &[u8]) -> Result<Sensitive, Problem> {
        std::str::from_utf8(v).map(Sensitive::new).map_err(|_| {
            Problem::new(
                reason::INVALID_SECRET,
                &self.field,
                format!("Secret {:?} key {key:?} is not UTF-8 text", self.name),
            )
        })
    }
}
