//! Configuration groups: the pods that receive the same configuration.
//!
//! Pods labelled `portcullis.dev/inject=true` are grouped by their labels, minus the labels
//! that differ between replicas of one workload. Each group gets one ConfigMap and one
//! Secret named [`group_name`], compiled for exactly those labels, so a pod only receives
//! the credentials of the routes that select it. The injection webhook computes the same
//! name from a pod's labels to mount the right objects.
//!
//! Pure. Layer 0 of the list in `controller`: may use no sibling module (the webhook uses it
//! too).

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// Label that asks for a sidecar (and a configuration group).
pub const INJECT_LABEL: &str = "portcullis.dev/inject";
/// Label on the operator's ConfigMaps and Secrets naming their group.
pub const GROUP_LABEL: &str = "portcullis.dev/config-group";
/// Standard label marking the objects the operator manages.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "portcullis";
/// Prefix of every group name.
pub const GROUP_PREFIX: &str = "portcullis-";
/// Named container port of the injected sidecar's inbound HTTP listener (a Service's
/// `targetPort`).
pub const PORT_HTTP: &str = "portcullis-http";
/// Named container port of the sidecar's inbound TLS listener.
pub const PORT_TLS: &str = "portcullis-tls";
/// Named container port of the sidecar's admin listener (`/metrics`, `/healthz`, `/readyz`).
pub const PORT_ADMIN: &str = "portcullis-adm";

/// Labels that vary between replicas of one workload and so never split a group.
pub const REPLICA_LABELS: &[&str] = &[
    "pod-template-hash",
    "controller-revision-hash",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
];

/// Whether a pod with these labels asks for a sidecar.
pub fn wants_sidecar(labels: &BTreeMap<String, String>) -> bool {
    labels.get(INJECT_LABEL).is_some_and(|v| v == "true")
}

/// The labels that define a pod's group: all of them but [`REPLICA_LABELS`].
pub fn group_labels(pod_labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    pod_labels
        .iter()
        .filter(|(k, _)| !REPLICA_LABELS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The name of the ConfigMap and Secret of a group: `portcullis-` and the first 8 hex
/// digits of SHA-256 over `key=value\n` for each group label in key order.
pub fn group_name(group_labels: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    for (k, v) in group_labels {
        hasher.update(k.as_bytes());
        hasher.update(b"=");
        hasher.update(v.as_bytes());
        hasher.update(b"\n");
    }
    format!("{GROUP_PREFIX}{}", hex::encode(&hasher.finalize()[..4]))
}

/// The group name for a pod's labels (what the webhook mounts).
pub fn group_name_for_pod(pod_labels: &BTreeMap<String, String>) -> String {
    group_name(&group_labels(pod_labels))
}

/// `k=v,k2=v2`, in key order (for annotations and logs).
pub fn format_labels(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn replicas_of_one_workload_share_a_group() {
        let a = labels(&[("app", "api"), (INJECT_LABEL, "true"), ("pod-template-hash", "5d8f")]);
        let b = labels(&[("app", "api"), (INJECT_LABEL, "true"), ("pod-template-hash", "77c1")]);
        assert_eq!(group_name_for_pod(&a), group_name_for_pod(&b));
        let other = labels(&[("app", "web"), (INJECT_LABEL, "true")]);
        assert_ne!(group_name_for_pod(&a), group_name_for_pod(&other));
    }

    #[test]
    fn names_are_stable_and_valid_object_names() {
        let name = group_name(&labels(&[("app", "api"), (INJECT_LABEL, "true")]));
        // Pinned: the webhook and existing clusters depend on this exact value.
        assert_eq!(name, group_name(&labels(&[(INJECT_LABEL, "true"), ("app", "api")])));
        assert_eq!(name.len(), GROUP_PREFIX.len() + 8);
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert_eq!(group_name(&BTreeMap::new()), "portcullis-e3b0c442");
    }

    #[test]
    fn only_true_asks_for_a_sidecar() {
        assert!(wants_sidecar(&labels(&[(INJECT_LABEL, "true")])));
        assert!(!wants_sidecar(&labels(&[(INJECT_LABEL, "false")])));
        assert!(!wants_sidecar(&labels(&[])));
    }
}
