//! The resource types the fake server serves, and how request paths map onto them.

use std::fmt;

/// One served resource type (a collection such as `configmaps` in core `v1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// API version (`v1`, `v1alpha1`).
    pub version: &'static str,
    /// Plural resource name, as in URLs.
    pub plural: &'static str,
    /// Kind of one object.
    pub kind: &'static str,
    /// Objects live in namespaces.
    pub namespaced: bool,
    /// `status` is a subresource: writes to the main resource leave it alone, writes to
    /// `/status` change nothing else.
    pub status_subresource: bool,
}

impl ResourceType {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural` for the core group, `plural.group` otherwise (kubectl's spelling).
    pub fn qualified_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.qualified_name())
    }
}

const fn core(plural: &'static str, kind: &'static str) -> ResourceType {
    ResourceType {
        group: "",
        version: "v1",
        plural,
        kind,
        namespaced: true,
        status_subresource: false,
    }
}

/// What the server serves unless told otherwise: the kinds the Portcullis operator and
/// sidecar use.
pub const DEFAULT_RESOURCES: &[ResourceType] = &[
    core("configmaps", "ConfigMap"),
    core("secrets", "Secret"),
    ResourceType {
        status_subresource: true,
        ..core("pods", "Pod")
    },
    core("events", "Event"),
    ResourceType {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        status_subresource: false,
    },
    ResourceType {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind: "Lease",
        namespaced: true,
        status_subresource: false,
    },
    ResourceType {
        group: "networking.k8s.io",
        version: "v1",
        plural: "networkpolicies",
        kind: "NetworkPolicy",
        namespaced: true,
        status_subresource: false,
    },
    ResourceType {
        group: "portcullis.dev",
        version: "v1alpha1",
        plural: "securityprofiles",
        kind: "SecurityProfile",
        namespaced: true,
        status_subresource: true,
    },
    ResourceType {
        group: "portcullis.dev",
        version: "v1alpha1",
        plural: "apiroutes",
        kind: "ApiRoute",
        namespaced: true,
        status_subresource: true,
    },
];

/// A parsed resource request path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// Discovery and version documents.
    Discovery(Discovery<'a>),
    /// A collection: `namespace` is `None` for a cluster-wide (all namespaces) request.
    Collection {
        group: &'a str,
        version: &'a str,
        namespace: Option<&'a str>,
        plural: &'a str,
    },
    /// One object, or its `subresource`.
    Object {
        group: &'a str,
        version: &'a str,
        namespace: Option<&'a str>,
        plural: &'a str,
        name: &'a str,
        subresource: Option<&'a str>,
    },
}

/// A discovery document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Discovery<'a> {
    Version,
    CoreVersions,
    Groups,
    Resources { group: &'a str, version: &'a str },
}

/// Parses `/api/v1/...` and `/apis/group/version/...`.
pub fn parse_path(path: &str) -> Option<Target<'_>> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["version"] => return Some(Target::Discovery(Discovery::Version)),
        ["api"] => return Some(Target::Discovery(Discovery::CoreVersions)),
        ["apis"] => return Some(Target::Discovery(Discovery::Groups)),
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(*ns), rest),
        rest => (None, rest),
    };
    Some(match rest {
        [] => Target::Discovery(Discovery::Resources { group, version }),
        [plural] => Target::Collection {
            group,
            version,
            namespace,
            plural,
        },
        [plural, name] => Target::Object {
            group,
            version,
            namespace,
            plural,
            name,
            subresource: None,
        },
        [plural, name, sub] => Target::Object {
            group,
            version,
            namespace,
            plural,
            name,
            subresource: Some(*sub),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_core_and_group_paths() {
        assert_eq!(
            parse_path("/api/v1/namespaces/prod/configmaps/a"),
            Some(Target::Object {
                group: "",
                version: "v1",
                namespace: Some("prod"),
                plural: "configmaps",
                name: "a",
                subresource: None
            })
        );
        assert_eq!(
            parse_path("/apis/portcullis.dev/v1alpha1/namespaces/prod/apiroutes/r/status"),
            Some(Target::Object {
                group: "portcullis.dev",
                version: "v1alpha1",
                namespace: Some("prod"),
                plural: "apiroutes",
                name: "r",
                subresource: Some("status")
            })
        );
        assert_eq!(
            parse_path("/api/v1/pods"),
            Some(Target::Collection {
                group: "",
                version: "v1",
                namespace: None,
                plural: "pods"
            })
        );
        assert_eq!(
            parse_path("/apis/coordination.k8s.io/v1"),
            Some(Target::Discovery(Discovery::Resources {
                group: "coordination.k8s.io",
                version: "v1"
            }))
        );
        assert_eq!(parse_path("/healthz/x/y/z/w/v/u"), None);
    }

    #[test]
    fn names_resources_like_kubectl() {
        assert_eq!(DEFAULT_RESOURCES[0].qualified_name(), "configmaps");
        assert_eq!(DEFAULT_RESOURCES[5].qualified_name(), "leases.coordination.k8s.io");
        assert_eq!(DEFAULT_RESOURCES[5].api_version(), "coordination.k8s.io/v1");
    }
}
