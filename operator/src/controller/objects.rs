//! What the stores keep of each watched kind, and what in it the plan depends on.
//!
//! Owns the [`Cached`] impls, [`OwnedSecret`] (an operator-managed Secret remembered by
//! [`data_digest`], never by content) and the `managed-by` label helpers. Pure, no I/O.
//! Layer 1 of the list in `controller`: may use layer 0; uses `group` and `store`.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use portcullis_api::{ApiRoute, ApiRouteStatus, SecurityProfile, SecurityProfileStatus};
use sha2::{Digest, Sha256};

use super::group::{MANAGED_BY, MANAGED_BY_LABEL};
use super::store::Cached;

impl Cached for ApiRoute {
    type Print = (Option<String>, Option<i64>, Option<ApiRouteStatus>);
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn fingerprint(&self) -> Self::Print {
        (self.metadata.uid.clone(), self.metadata.generation, self.status.clone())
    }
}

impl Cached for SecurityProfile {
    type Print = (Option<String>, Option<i64>, Option<SecurityProfileStatus>);
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn fingerprint(&self) -> Self::Print {
        (self.metadata.uid.clone(), self.metadata.generation, self.status.clone())
    }
}

type MetaPrint = (
    Option<BTreeMap<String, String>>,
    Option<BTreeMap<String, String>>,
    Option<Vec<OwnerReference>>,
);

fn meta_print(meta: &ObjectMeta) -> MetaPrint {
    (
        meta.labels.clone(),
        meta.annotations.clone(),
        meta.owner_references.clone(),
    )
}

/// An operator-managed ConfigMap (its content is not secret and is kept whole).
impl Cached for ConfigMap {
    type Print = (MetaPrint, Option<BTreeMap<String, String>>);
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn fingerprint(&self) -> Self::Print {
        (meta_print(&self.metadata), self.data.clone())
    }
}

/// An operator-managed NetworkPolicy (a group's: ingress to the sidecar's ports only).
impl Cached for NetworkPolicy {
    type Print = (MetaPrint, Option<NetworkPolicySpec>);
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn fingerprint(&self) -> Self::Print {
        (meta_print(&self.metadata), self.spec.clone())
    }
}

/// An operator-managed Secret, remembered by a digest of its data: the operator never keeps
/// the secret material it wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedSecret {
    pub metadata: ObjectMeta,
    pub type_: Option<String>,
    /// [`data_digest`] of its data.
    pub digest: String,
}

impl OwnedSecret {
    pub fn new(secret: &Secret) -> Self {
        Self {
            metadata: ObjectMeta {
                managed_fields: None,
                ..secret.metadata.clone()
            },
            type_: secret.type_.clone(),
            digest: data_digest(secret.data.as_ref()),
        }
    }
}

impl Cached for OwnedSecret {
    type Print = (MetaPrint, Option<String>, String);
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn fingerprint(&self) -> Self::Print {
        (meta_print(&self.metadata), self.type_.clone(), self.digest.clone())
    }
}

/// Whether an object carries the operator's `managed-by` label.
pub fn is_managed(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY)
}

/// The label selector of the operator's own ConfigMaps and Secrets.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY}")
}

/// SHA-256 (hex) of a Secret's data, in key order: how the controller remembers the content
/// of the Secrets it wrote without keeping their values in memory.
pub fn data_digest(data: Option<&BTreeMap<String, ByteString>>) -> String {
    let mut hasher = Sha256::new();
    for (k, v) in data.into_iter().flatten() {
        hasher.update((k.len() as u64).to_le_bytes());
        hasher.update(k.as_bytes());
        hasher.update((v.0.len() as u64).to_le_bytes());
        hasher.update(&v.0);
    }
    hex::encode(hasher.finalize())
}
