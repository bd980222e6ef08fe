//! The pure half of a reconcile: from one namespace's objects to the ConfigMaps, Secrets
//! and statuses that should exist. No I/O; the reconciler compares the plan with the cluster
//! and writes the difference.
//!
//! Owns [`Settings`], [`Snapshot`], [`Plan`]/[`GroupPlan`] (the desired objects) and the
//! comparisons that say whether an existing object is current. Layer 2 of the list in
//! `controller`: may use layers 0–1; uses `group`, `refs` (layer 0), `objects` and `status`
//! (layer 1).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPort, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use portcullis_api::{ApiRoute, SecurityProfile};
use portcullis_config::{CONFIG_FILE, Loaded, SECRETS_FILE};

use super::group::{self, GROUP_LABEL, MANAGED_BY, MANAGED_BY_LABEL, PORT_ADMIN, PORT_HTTP, PORT_TLS};
use super::objects::{OwnedSecret, data_digest};
use super::refs::referenced_secrets;
use super::status::{self, DesiredStatus};
use crate::compile::{self, GenerationKey, Inputs};

/// Annotation with the configuration generation a group's objects carry.
pub const GENERATION_ANNOTATION: &str = "portcullis.dev/generation";
/// Annotation with the pod labels a group was compiled for.
pub const WORKLOAD_LABELS_ANNOTATION: &str = "portcullis.dev/workload-labels";

/// Operator-wide settings that go into every configuration.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Hits per minute across every route.
    pub org_allowance: Option<u32>,
    /// Peers whose `X-Forwarded-For` the sidecars believe.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Whether the sidecars count limits in a shared limits store (Helm
    /// `sidecar.limitsStore.url`): profiles with a quota are refused without one.
    pub limits_store_configured: bool,
    /// Give every group a NetworkPolicy that admits ingress to the sidecar's ports only
    /// (`run --network-policy`, Helm value `networkPolicy.enabled`).
    pub network_policy: bool,
}

/// Everything one namespace holds that the plan depends on.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot<'a> {
    pub namespace: &'a str,
    pub profiles: &'a [SecurityProfile],
    pub routes: &'a [ApiRoute],
    /// The Secrets the profiles and routes reference (others are not needed).
    pub secrets: &'a [Secret],
    /// Labels of each pod labelled `portcullis.dev/inject=true`.
    pub pods: &'a [BTreeMap<String, String>],
    pub settings: &'a Settings,
    /// The key of the configuration generation (the operator's Secret
    /// `portcullis-generation-key`).
    pub generation_key: &'a GenerationKey,
}

/// One configuration group's desired objects.
#[derive(Clone, Debug)]
pub struct GroupPlan {
    /// Pods in the group.
    pub pods: usize,
    /// Routes it serves (valid routes that select its pods).
    pub routes: Vec<String>,
    /// The configuration generation.
    pub generation: String,
    pub configmap: ConfigMap,
    pub secret: Secret,
    /// Ingress to the group's pods only on the sidecar's ports (`None`: not managed).
    pub network_policy: Option<NetworkPolicy>,
}

/// What should exist in one namespace.
#[derive(Clone, Debug)]
pub struct Plan {
    /// By group name.
    pub groups: BTreeMap<String, GroupPlan>,
    /// Desired status by route name.
    pub routes: BTreeMap<String, DesiredStatus>,
    /// Desired status by profile name.
    pub profiles: BTreeMap<String, DesiredStatus>,
}

/// Annotation on the objects of a group whose name two different label sets share: the
/// label sets (`;`-separated). Such a group is served nothing (see [`plan`]).
pub const GROUP_COLLISION_ANNOTATION: &str = "portcullis.dev/group-collision";

/// The pods of one group name: the label sets that hash to it (normally one) and how many
/// pods.
#[derive(Default)]
struct Members {
    labels: BTreeSet<BTreeMap<String, String>>,
    pods: usize,
}

/// How many sidecars enforce the limits: every pod with a sidecar in the namespace (the org
/// allowance), and by profile, the pods of the groups that serve one of its routes (a group
/// whose name two label sets share serves none).
fn sidecars(
    s: &Snapshot,
    members: &BTreeMap<String, Members>,
    verdicts: &compile::Output,
) -> (u32, BTreeMap<String, u32>) {
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let mut per_profile: BTreeMap<String, u32> = BTreeMap::new();
    for member in members.values().filter(|m| m.labels.len() == 1) {
        let served: BTreeSet<&str> = s
            .routes
            .iter()
            .filter(|r| member.labels.iter().any(|l| compile::route_selects(r, l)))
            .filter(|r| {
                let name = r.metadata.name.as_deref().unwrap_or_default();
                verdicts.routes.get(name).is_some_and(compile::Verdict::is_accepted)
            })
            .flat_map(|r| r.spec.profiles.iter().map(|p| p.name.as_str()))
            .collect();
        for profile in served {
            let n = per_profile.entry(profile.to_owned()).or_default();
            *n = n.saturating_add(count(member.pods));
        }
    }
    (count(s.pods.len()), per_profile)
}

/// Plans one namespace.
///
/// A group's name keeps 32 bits of a hash of its labels (compatible with the objects pods
/// already mount), so two workloads may share a name; the full label sets are compared, and
/// a name two label sets share is never a merge: its objects get an empty configuration
/// (no route, no credential, annotated [`GROUP_COLLISION_ANNOTATION`]) and every route that
/// selects either workload reports `Ready=False` with reason `GroupCollision`, until one
/// workload's labels change.
pub fn plan(s: &Snapshot) -> Plan {
    let mut members: BTreeMap<String, Members> = BTreeMap::new();
    for pod in s.pods {
        let labels = group::group_labels(pod);
        let member = members.entry(group::group_name(&labels)).or_default();
        member.labels.insert(labels);
        member.pods += 1;
    }
    fn inputs<'a>(
        s: &'a Snapshot,
        profiles: &'a [SecurityProfile],
        routes: &'a [ApiRoute],
        secrets: &'a [Secret],
        labels: Option<&'a BTreeMap<String, String>>,
    ) -> Inputs<'a> {
        Inputs {
            namespace: s.namespace,
            profiles,
            routes,
            secrets,
            org_allowance: s.settings.org_allowance,
            trusted_proxies: &s.settings.trusted_proxies,
            limits_store_configured: s.settings.limits_store_configured,
            workload_labels: labels,
        }
    }
    // The verdicts, and the profiles' route lists, need the whole namespace.
    let verdicts = compile::compile_with_key(&inputs(s, s.profiles, s.routes, s.secrets, None), s.generation_key);
    let (namespace_sidecars, profile_sidecars) = sidecars(s, &members, &verdicts);

    let mut groups = BTreeMap::new();
    // Route → the collision message of a group it selects.
    let mut collisions: BTreeMap<String, String> = BTreeMap::new();
    for (name, member) in &members {
        let Some(labels) = member.labels.first() else { continue };
        let pods = &member.pods;
        // Every group of pods has objects (the injected sidecar mounts them, not optionally),
        // with an empty configuration when no valid route selects it. They belong to the
        // routes that select it, valid or not, so deleting those deletes them (the next
        // reconcile writes an empty configuration back while pods remain).
        let selecting: Vec<&ApiRoute> = s
            .routes
            .iter()
            .filter(|r| member.labels.iter().any(|l| compile::route_selects(r, l)))
            .collect();
        let collision = (member.labels.len() > 1).then(|| {
            let sets: Vec<String> = member.labels.iter().map(group::format_labels).collect();
            for r in &selecting {
                let message = format!(
                    "pods labelled {} share the configuration group name {name}; none of them is served \
                     until the labels of all but one of these workloads change",
                    sets.join(" and pods labelled ")
                );
                if let Some(route) = &r.metadata.name {
                    collisions.entry(route.clone()).or_insert(message);
                }
            }
            sets.join(";")
        });
        let selecting_valid: &[&ApiRoute] = if collision.is_some() { &[] } else { &selecting };
        // A group's configuration depends only on the routes that select it, the profiles
        // they name and the Secrets those reference (routes are compiled one by one), so
        // each group compiles just those: the same output as compiling the whole namespace
        // for these labels, in a fraction of the time.
        // Only the routes the namespace's verdicts accept: a route refused for overlapping an
        // older route (a verdict that needs the namespace's other routes) stays out of every
        // group, whatever routes this group holds.
        let routes: Vec<ApiRoute> = selecting_valid
            .iter()
            .filter(|r| {
                let name = r.metadata.name.as_deref().unwrap_or_default();
                verdicts.routes.get(name).is_some_and(compile::Verdict::is_accepted)
            })
            .map(|r| (*r).clone())
            .collect();
        let named: BTreeSet<&str> = routes
            .iter()
            .flat_map(|r| r.spec.profiles.iter().map(|p| p.name.as_str()))
            .collect();
        let profiles: Vec<SecurityProfile> = s
            .profiles
            .iter()
            .filter(|p| p.metadata.name.as_deref().is_some_and(|n| named.contains(n)))
            .cloned()
            .collect();
        let wanted = referenced_secrets(&profiles, &routes);
        let secrets: Vec<Secret> = s
            .secrets
            .iter()
            .filter(|x| x.metadata.name.as_ref().is_some_and(|n| wanted.contains(n)))
            .cloned()
            .collect();
        let mut output =
            compile::compile_with_key(&inputs(s, &profiles, &routes, &secrets, Some(labels)), s.generation_key);
        compile::set_replicas(
            &mut output.loaded,
            s.generation_key,
            namespace_sidecars,
            &profile_sidecars,
        );
        let routes: Vec<String> = output.loaded.config.routes.iter().map(|r| r.name.clone()).collect();
        let owners = owner_references(&selecting);
        let mut meta = group_meta(s.namespace, name, labels, &output.loaded.config.generation, owners);
        if let (Some(sets), Some(annotations)) = (collision, meta.annotations.as_mut()) {
            annotations.insert(GROUP_COLLISION_ANNOTATION.to_owned(), sets);
        }
        let network_policy = s.settings.network_policy.then(|| network_policy(&meta, labels));
        groups.insert(
            name.clone(),
            GroupPlan {
                pods: *pods,
                generation: output.loaded.config.generation.clone(),
                configmap: configmap(meta.clone(), &output.loaded),
                secret: secret(meta, &output.loaded),
                network_policy,
                routes,
            },
        );
    }

    let routes = s
        .routes
        .iter()
        .filter_map(|r| {
            let name = r.metadata.name.clone()?;
            let verdict = verdicts.routes.get(&name)?;
            let serving = groups.values().filter(|g| g.routes.contains(&name));
            let (count, pods) = serving.fold((0, 0), |(n, p), g| (n + 1, p + g.pods));
            let mut desired = status::route_status(verdict, r.metadata.generation, count, pods);
            if let Some(message) = collisions.get(&name) {
                status::group_collision(&mut desired, message);
            }
            Some((name, desired))
        })
        .collect();
    let profiles = s
        .profiles
        .iter()
        .filter_map(|p| {
            let name = p.metadata.name.clone()?;
            let verdict = verdicts.profiles.get(&name)?;
            let using = verdicts
                .profile_routes
                .get(&name)
                .map(Vec::as_slice)
                .unwrap_or_default();
            Some((name, status::profile_status(verdict, p.metadata.generation, using)))
        })
        .collect();
    Plan {
        groups,
        routes,
        profiles,
    }
}

/// Owner references to the routes that select a group (sorted by name), so deleting every
/// one of them deletes its objects.
fn owner_references(routes: &[&ApiRoute]) -> Vec<OwnerReference> {
    let mut refs: Vec<OwnerReference> = routes
        .iter()
        .filter_map(|r| {
            Some(OwnerReference {
                api_version: ApiRoute::api_version(&()).into_owned(),
                kind: ApiRoute::kind(&()).into_owned(),
                name: r.metadata.name.clone()?,
                uid: r.metadata.uid.clone()?,
                ..Default::default()
            })
        })
        .collect();
    refs.sort_by(|a, b| a.name.cmp(&b.name));
    refs
}

fn group_meta(
    namespace: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
    generation: &str,
    owners: Vec<OwnerReference>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(BTreeMap::from([
            (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
            (GROUP_LABEL.to_owned(), name.to_owned()),
        ])),
        annotations: Some(BTreeMap::from([
            (GENERATION_ANNOTATION.to_owned(), generation.to_owned()),
            (WORKLOAD_LABELS_ANNOTATION.to_owned(), group::format_labels(labels)),
        ])),
        owner_references: (!owners.is_empty()).then_some(owners),
        ..Default::default()
    }
}

fn configmap(metadata: ObjectMeta, loaded: &Loaded) -> ConfigMap {
    let json = String::from_utf8(loaded.config_json()).expect("serde_json writes UTF-8");
    ConfigMap {
        metadata,
        data: Some(BTreeMap::from([(CONFIG_FILE.to_owned(), json)])),
        ..Default::default()
    }
}

fn secret(metadata: ObjectMeta, loaded: &Loaded) -> Secret {
    Secret {
        metadata,
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            SECRETS_FILE.to_owned(),
            ByteString(loaded.secrets_json()),
        )])),
        ..Default::default()
    }
}

/// The group's NetworkPolicy: its pods (selected by the group's labels) admit ingress only
/// on the sidecar's named ports, so nothing reaches the app's own port around the sidecar.
/// Same name, labels and owners as the group's ConfigMap and Secret, without the generation
/// (the policy does not change with the configuration).
fn network_policy(group: &ObjectMeta, labels: &BTreeMap<String, String>) -> NetworkPolicy {
    let port = |name: &str| NetworkPolicyPort {
        port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..Default::default()
    };
    NetworkPolicy {
        metadata: ObjectMeta {
            annotations: group.annotations.as_ref().map(|a| {
                a.iter()
                    .filter(|(k, _)| k.as_str() == WORKLOAD_LABELS_ANNOTATION)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }),
            ..group.clone()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: None,
                ports: Some(vec![port(PORT_HTTP), port(PORT_TLS), port(PORT_ADMIN)]),
            }]),
            egress: None,
        }),
    }
}

fn contains_all(have: Option<&BTreeMap<String, String>>, want: Option<&BTreeMap<String, String>>) -> bool {
    want.into_iter()
        .flatten()
        .all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
}

fn same_meta(have: &ObjectMeta, want: &ObjectMeta) -> bool {
    contains_all(have.labels.as_ref(), want.labels.as_ref())
        && contains_all(have.annotations.as_ref(), want.annotations.as_ref())
        && have.owner_references.as_deref().unwrap_or_default() == want.owner_references.as_deref().unwrap_or_default()
}

/// Whether an existing ConfigMap already holds what `want` would write.
pub fn configmap_is_current(have: &ConfigMap, want: &ConfigMap) -> bool {
    same_meta(&have.metadata, &want.metadata) && have.data == want.data
}

/// Whether an existing NetworkPolicy already holds what `want` would write.
pub fn network_policy_is_current(have: &NetworkPolicy, want: &NetworkPolicy) -> bool {
    same_meta(&have.metadata, &want.metadata) && have.spec == want.spec
}

/// Whether an existing Secret (remembered by metadata, type and [`data_digest`]) already
/// holds what `want` would write.
pub fn secret_is_current(have: &OwnedSecret, want: &Secret) -> bool {
    same_meta(&have.metadata, &want.metadata)
        && have.type_ == want.type_
        && have.digest == data_digest(want.data.as_ref())
}

#[cfg(test)]
mod tests;
