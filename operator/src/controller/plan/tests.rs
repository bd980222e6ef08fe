//! Unit tests of planning: grouping, per-group credentials, owners, statuses.

use portcullis_api::*;

use super::*;
use crate::controller::group::INJECT_LABEL;

const NS: &str = "prod";

fn meta(name: &str, uid: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(NS.into()),
        uid: Some(uid.into()),
        generation: Some(1),
        ..Default::default()
    }
}

fn basic_secret(name: &str, password: &str) -> Secret {
    Secret {
        metadata: meta(name, &format!("uid-{name}")),
        type_: Some("kubernetes.io/basic-auth".into()),
        data: Some(BTreeMap::from([
            ("username".into(), ByteString(b"user".to_vec())),
            ("password".into(), ByteString(password.as_bytes().to_vec())),
        ])),
        ..Default::default()
    }
}

fn basic_profile(name: &str, secret: &str) -> SecurityProfile {
    let spec: SecurityProfileSpec =
        serde_json::from_value(serde_json::json!({"type": "Basic", "basic": {"secretRef": {"name": secret}}})).unwrap();
    SecurityProfile {
        metadata: meta(name, &format!("uid-{name}")),
        spec,
        status: None,
    }
}

fn route(name: &str, app: &str, profiles: &[&str]) -> ApiRoute {
    let spec: ApiRouteSpec = serde_json::from_value(serde_json::json!({
        "workloadSelector": {"matchLabels": {"app": app}},
        "pathPrefix": format!("/{name}"),
        "profiles": profiles.iter().map(|p| serde_json::json!({"name": p})).collect::<Vec<_>>(),
        "backend": {"port": 8080},
    }))
    .unwrap();
    ApiRoute {
        metadata: meta(name, &format!("uid-{name}")),
        spec,
        status: None,
    }
}

fn pod(app: &str, hash: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app".into(), app.into()),
        (INJECT_LABEL.into(), "true".into()),
        ("pod-template-hash".into(), hash.into()),
    ])
}

struct World {
    profiles: Vec<SecurityProfile>,
    routes: Vec<ApiRoute>,
    secrets: Vec<Secret>,
    pods: Vec<BTreeMap<String, String>>,
    settings: Settings,
    generation_key: GenerationKey,
}

impl World {
    fn new() -> Self {
        Self {
            profiles: vec![basic_profile("pa", "sa"), basic_profile("pb", "sb")],
            routes: vec![route("ra", "a", &["pa"]), route("rb", "b", &["pb"])],
            secrets: vec![basic_secret("sa", "password-a"), basic_secret("sb", "password-b")],
            pods: vec![pod("a", "1"), pod("a", "2"), pod("b", "1")],
            settings: Settings::default(),
            generation_key: GenerationKey::from_bytes(&[42; 32]).unwrap(),
        }
    }

    fn plan(&self) -> Plan {
        plan(&Snapshot {
            namespace: NS,
            profiles: &self.profiles,
            routes: &self.routes,
            secrets: &self.secrets,
            pods: &self.pods,
            settings: &self.settings,
            generation_key: &self.generation_key,
        })
    }
}

fn group_of(plan: &Plan, app: &str) -> GroupPlan {
    let name = group::group_name_for_pod(&pod(app, "x"));
    plan.groups[&name].clone()
}

fn secrets_json(g: &GroupPlan) -> String {
    String::from_utf8(g.secret.data.as_ref().unwrap()[SECRETS_FILE].0.clone()).unwrap()
}

fn config_json(g: &GroupPlan) -> &str {
    &g.configmap.data.as_ref().unwrap()[CONFIG_FILE]
}

#[test]
fn replicas_share_a_group_and_each_group_gets_only_its_routes_credentials() {
    let plan = World::new().plan();
    assert_eq!(plan.groups.len(), 2);
    let a = group_of(&plan, "a");
    assert_eq!((a.pods, a.routes.as_slice()), (2, ["ra".to_owned()].as_slice()));
    assert!(secrets_json(&a).contains("password-a"));
    assert!(
        !secrets_json(&a).contains("password-b"),
        "a pod only receives its routes' credentials"
    );
    let b = group_of(&plan, "b");
    assert!(secrets_json(&b).contains("password-b") && !secrets_json(&b).contains("password-a"));
    for g in [&a, &b] {
        assert!(!config_json(g).contains("password"), "no secret in a ConfigMap");
    }
}

#[test]
fn the_generation_is_keyed_with_the_operators_key() {
    let w = World::new();
    let mut other = World::new();
    other.generation_key = GenerationKey::from_bytes(&[43; 32]).unwrap();
    let (a, b) = (group_of(&w.plan(), "a"), group_of(&other.plan(), "a"));
    assert_eq!(
        a.generation,
        group_of(&w.plan(), "a").generation,
        "stable under one key"
    );
    assert_ne!(a.generation, b.generation);
    assert_eq!(
        config_json(&a).replace(&a.generation, ""),
        config_json(&b).replace(&b.generation, ""),
        "the same content"
    );
    assert!(!configmap_is_current(&a.configmap, &b.configmap));
}

#[test]
fn group_objects_are_labelled_annotated_and_owned_by_their_routes() {
    let plan = World::new().plan();
    let a = group_of(&plan, "a");
    let meta = &a.configmap.metadata;
    let labels = meta.labels.as_ref().unwrap();
    assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
    assert_eq!(labels[GROUP_LABEL], *meta.name.as_ref().unwrap());
    let annotations = meta.annotations.as_ref().unwrap();
    assert_eq!(annotations[GENERATION_ANNOTATION], a.generation);
    assert_eq!(
        annotations[WORKLOAD_LABELS_ANNOTATION],
        "app=a,portcullis.dev/inject=true"
    );
    let owners = meta.owner_references.as_ref().unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].uid.as_str()),
        ("ApiRoute", "uid-ra")
    );
    assert_eq!(a.secret.metadata, a.configmap.metadata);
    // The sidecar can read what the group gets.
    let config: portcullis_config::SidecarConfig = serde_json::from_str(config_json(&a)).unwrap();
    assert_eq!(config.generation, a.generation);
}

#[test]
fn each_group_gets_a_network_policy_admitting_only_the_sidecar_ports() {
    let mut w = World::new();
    assert!(group_of(&w.plan(), "a").network_policy.is_none(), "only when enabled");
    w.settings.network_policy = true;
    let a = group_of(&w.plan(), "a");
    let np = a.network_policy.as_ref().unwrap();
    // Named, labelled and owned like the group's ConfigMap and Secret (so deleted with them).
    let (np_meta, cm_meta) = (&np.metadata, &a.configmap.metadata);
    assert_eq!(np_meta.name, cm_meta.name);
    assert_eq!(np_meta.labels, cm_meta.labels);
    assert_eq!(np_meta.owner_references, cm_meta.owner_references);
    // Not rewritten for every new configuration.
    assert!(
        !np_meta
            .annotations
            .as_ref()
            .unwrap()
            .contains_key(GENERATION_ANNOTATION)
    );
    let spec = np.spec.as_ref().unwrap();
    let selector = spec.pod_selector.as_ref().unwrap().match_labels.as_ref().unwrap();
    assert_eq!(*selector, group::group_labels(&pod("a", "1")));
    assert_eq!(spec.policy_types.as_deref(), Some(&["Ingress".to_owned()][..]));
    let rules = spec.ingress.as_ref().unwrap();
    assert_eq!(rules.len(), 1);
    assert!(rules[0].from.is_none(), "from anywhere, but only to these ports");
    let ports: Vec<_> = rules[0]
        .ports
        .iter()
        .flatten()
        .map(|p| (p.port.clone().unwrap(), p.protocol.as_deref().unwrap()))
        .collect();
    let named = |n: &str| IntOrString::String(n.into());
    assert_eq!(
        ports,
        [
            (named("portcullis-http"), "TCP"),
            (named("portcullis-tls"), "TCP"),
            (named("portcullis-adm"), "TCP")
        ]
    );
    // The webhook injects the sidecar with exactly these port names.
    let sidecar = crate::webhook::sidecar_container(&Default::default());
    let injected: Vec<_> = sidecar
        .ports
        .iter()
        .flatten()
        .map(|p| named(p.name.as_deref().unwrap()))
        .collect();
    assert_eq!(injected, ports.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>());
    assert!(network_policy_is_current(np, np));
    // A group without routes keeps its pods behind the sidecar too.
    w.routes.clear();
    assert!(group_of(&w.plan(), "a").network_policy.is_some());
}

#[test]
fn an_invalid_route_is_rejected_while_the_others_are_served() {
    let mut w = World::new();
    w.routes.push(route("broken", "a", &["missing"]));
    let plan = w.plan();
    let (reason, message) = plan.routes["broken"].rejection().unwrap();
    assert_eq!(reason, "ProfileNotFound");
    assert!(message.starts_with("spec.profiles[0].name"), "{message}");
    assert_eq!(group_of(&plan, "a").routes, ["ra"]);
    assert!(plan.routes["ra"].rejection().is_none());
    assert!(plan.routes["ra"].conditions[1].status, "ra is Ready");
}

#[test]
fn a_missing_secret_rejects_the_profile_and_its_routes_only() {
    let mut w = World::new();
    w.secrets.retain(|s| s.metadata.name.as_deref() != Some("sb"));
    let plan = w.plan();
    assert_eq!(plan.profiles["pb"].rejection().unwrap().0, "SecretNotFound");
    assert!(plan.routes["rb"].rejection().is_some());
    // The group keeps its objects, now without the route, still owned by it.
    let b = group_of(&plan, "b");
    assert!(b.routes.is_empty());
    assert!(!secrets_json(&b).contains("password-b"));
    assert_eq!(b.configmap.metadata.owner_references.as_ref().unwrap()[0].name, "rb");
    assert_eq!(group_of(&plan, "a").routes, ["ra"]);
}

#[test]
fn statuses_without_pods_and_profile_route_lists() {
    let mut w = World::new();
    w.pods.clear();
    w.routes.push(route("rc", "c", &["pa"]));
    let plan = w.plan();
    assert!(plan.groups.is_empty());
    assert_eq!(plan.routes["ra"].conditions[1].reason, "NoWorkloads");
    assert_eq!(plan.profiles["pa"].routes.as_deref().unwrap(), ["ra", "rc"]);
    assert_eq!(plan.profiles["pa"].observed_generation, Some(1));
}

#[test]
fn planning_is_deterministic_and_comparisons_see_changes() {
    let w = World::new();
    let (one, two) = (w.plan(), w.plan());
    let a1 = group_of(&one, "a");
    let a2 = group_of(&two, "a");
    assert!(configmap_is_current(&a1.configmap, &a2.configmap));
    let have = OwnedSecret::new(&a1.secret);
    assert!(secret_is_current(&have, &a2.secret));

    let mut changed = World::new();
    changed.secrets[0] = basic_secret("sa", "rotated");
    let a3 = group_of(&changed.plan(), "a");
    assert!(!secret_is_current(&have, &a3.secret));
    assert!(
        !configmap_is_current(&a1.configmap, &a3.configmap),
        "the generation moves with a secret"
    );

    // Labels and annotations set by others do not count; missing owners do.
    let mut extra = a1.configmap.clone();
    extra
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("team".into(), "x".into());
    assert!(configmap_is_current(&extra, &a2.configmap));
    extra.metadata.owner_references = None;
    assert!(!configmap_is_current(&extra, &a2.configmap));
}

#[test]
fn every_group_of_pods_has_objects_owned_by_the_routes_selecting_it() {
    let mut w = World::new();
    w.pods.push(pod("lonely", "1"));
    let plan = w.plan();
    assert_eq!(plan.groups.len(), 3);
    let lonely = group_of(&plan, "lonely");
    assert!(lonely.routes.is_empty() && lonely.configmap.metadata.owner_references.is_none());
    assert_eq!(lonely.pods, 1);
    w.routes.retain(|r| r.metadata.name.as_deref() != Some("rb"));
    let plan = w.plan();
    assert!(group_of(&plan, "b").configmap.metadata.owner_references.is_none());
    assert_eq!(
        plan.routes["ra"].conditions[1].message,
        "published to 1 configuration group(s) serving 2 pod(s)"
    );
}

#[test]
fn each_group_holds_what_compiling_the_whole_namespace_for_its_labels_gives() {
    let mut w = World::new();
    w.profiles.push(basic_profile("pc", "sa"));
    w.routes.push(route("rc", "a", &["pc", "pa"]));
    w.routes.push(route("broken", "b", &["missing"]));
    w.settings.org_allowance = Some(60);
    let plan = w.plan();
    for pod in &w.pods {
        let labels = group::group_labels(pod);
        let mut full = crate::compile::compile_with_key(
            &Inputs {
                namespace: NS,
                profiles: &w.profiles,
                routes: &w.routes,
                secrets: &w.secrets,
                org_allowance: w.settings.org_allowance,
                trusted_proxies: &w.settings.trusted_proxies,
                limits_store_configured: w.settings.limits_store_configured,
                workload_labels: Some(&labels),
            },
            &w.generation_key,
        );
        let g = &plan.groups[&group::group_name(&labels)];
        // The sidecar counts need the namespace's pods (checked on their own below).
        let config: portcullis_config::SidecarConfig = serde_json::from_str(config_json(g)).unwrap();
        let counts = config
            .profiles
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.replicas?)))
            .collect();
        crate::compile::set_replicas(
            &mut full.loaded,
            &w.generation_key,
            config.replicas.unwrap_or(1),
            &counts,
        );
        assert_eq!(g.generation, full.loaded.config.generation);
        assert_eq!(config_json(g).as_bytes(), full.loaded.config_json().as_slice());
        assert_eq!(secrets_json(g).as_bytes(), full.loaded.secrets_json().as_slice());
    }
}

/// Issue 20: the divisors of `onStoreUnavailable: LocalShare`. The org allowance's is every
/// sidecar of the namespace; a profile's, the sidecars of the groups serving its routes.
/// Limits that are not set get no count, so scaling changes no configuration without limits.
#[test]
fn groups_learn_how_many_sidecars_share_each_limit() {
    let mut w = World::new();
    let counts = |plan: &Plan, app: &str| {
        let config: portcullis_config::SidecarConfig = serde_json::from_str(config_json(&group_of(plan, app))).unwrap();
        let profiles: Vec<(String, Option<u32>)> =
            config.profiles.iter().map(|p| (p.name.clone(), p.replicas)).collect();
        (config.replicas, profiles)
    };
    let before = w.plan();
    assert_eq!(counts(&before, "a"), (None, vec![("pa".into(), None)]));
    w.pods.push(pod("a", "3"));
    assert_eq!(
        w.plan().groups[&group_of(&before, "a").configmap.metadata.name.clone().unwrap()].generation,
        group_of(&before, "a").generation,
        "no limit: scaling changes nothing"
    );
    w.settings.org_allowance = Some(600);
    for p in &mut w.profiles {
        p.spec.rate_limit = Some(portcullis_api::RateLimit {
            requests_per_minute: Some(100),
            per: None,
            quota: None,
            on_store_unavailable: None,
        });
    }
    // pc is served by both workloads: a (3 pods) and b (1 pod).
    w.profiles.push(basic_profile("pc", "sa"));
    w.profiles.last_mut().unwrap().spec.rate_limit = w.profiles[0].spec.rate_limit.clone();
    w.routes.push(route("rc-a", "a", &["pc"]));
    w.routes.push(route("rc-b", "b", &["pc"]));
    let plan = w.plan();
    assert_eq!(
        counts(&plan, "a"),
        (Some(4), vec![("pa".into(), Some(3)), ("pc".into(), Some(4))])
    );
    assert_eq!(
        counts(&plan, "b"),
        (Some(4), vec![("pb".into(), Some(1)), ("pc".into(), Some(4))])
    );
    let scaled = group_of(&plan, "a").generation;
    w.pods.pop();
    assert_ne!(
        group_of(&w.plan(), "a").generation,
        scaled,
        "with limits, scaling is a new configuration"
    );
}

/// A profile with only a quota is limited too: while the store is down each sidecar enforces
/// its share of the quota, so its sidecars are counted like a per-minute limit's.
#[test]
fn a_quota_alone_gets_its_sidecar_count() {
    let mut w = World::new();
    w.settings.limits_store_configured = true;
    w.profiles[0].spec.rate_limit = Some(portcullis_api::RateLimit {
        requests_per_minute: None,
        per: Some(portcullis_api::LimitPer::Consumer),
        quota: Some(portcullis_api::Quota {
            requests: 10_000,
            period: portcullis_api::QuotaPeriod::Month,
        }),
        on_store_unavailable: None,
    });
    w.pods.push(pod("a", "3"));
    let plan = w.plan();
    assert!(plan.profiles["pa"].rejection().is_none(), "{:?}", plan.profiles["pa"]);
    let config: portcullis_config::SidecarConfig = serde_json::from_str(config_json(&group_of(&plan, "a"))).unwrap();
    let pa = &config.profiles[0];
    assert_eq!(pa.name, "pa");
    assert_eq!(pa.rate_limit_per_minute, None);
    assert_eq!(pa.rate_limit_per, portcullis_config::LimitPer::Consumer);
    assert_eq!(
        pa.quota,
        Some(portcullis_config::Quota {
            requests: 10_000,
            period: portcullis_config::QuotaPeriod::Month,
        })
    );
    assert_eq!(pa.replicas, Some(3), "a: 3 pods serve pa's route");
    let config: portcullis_config::SidecarConfig = serde_json::from_str(config_json(&group_of(&plan, "b"))).unwrap();
    assert_eq!(config.profiles[0].replicas, None, "pb has no limit");

    // Without a limits store the profile is refused, and its route is not served.
    w.settings.limits_store_configured = false;
    let plan = w.plan();
    let (reason, message) = plan.profiles["pa"].rejection().unwrap();
    assert_eq!(reason, "InvalidSpec");
    assert!(
        message.starts_with("spec.rateLimit.quota: SecurityProfile prod/pa"),
        "{message}"
    );
    assert!(plan.routes["ra"].rejection().is_some());
    assert!(group_of(&plan, "a").routes.is_empty());
    assert_eq!(group_of(&plan, "b").routes, ["rb"]);
}

#[test]
fn settings_reach_every_group() {
    let mut w = World::new();
    w.settings.org_allowance = Some(600);
    w.settings.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
    let plan = w.plan();
    for g in plan.groups.values() {
        let config: portcullis_config::SidecarConfig = serde_json::from_str(config_json(g)).unwrap();
        assert_eq!(config.org_allowance, Some(600));
        assert_eq!(config.trusted_proxies.len(), 1);
    }
}

/// Two label sets whose group names collide (the first 32 bits of their SHA-256 agree).
const COLLIDING: [&str; 2] = ["w91044", "w147913"];

/// Issue 15, item 12: a hash collision between two workloads' group names is an error on
/// the routes, and the shared objects carry no route and no credential of either.
#[test]
fn two_workloads_whose_group_names_collide_are_not_merged() {
    let (x, y) = (COLLIDING[0], COLLIDING[1]);
    assert_eq!(
        group::group_name_for_pod(&pod(x, "1")),
        group::group_name_for_pod(&pod(y, "1")),
        "the test needs colliding names"
    );
    let mut w = World::new();
    w.routes.push(route("rx", x, &["pa"]));
    w.routes.push(route("ry", y, &["pb"]));
    w.pods.extend([pod(x, "1"), pod(x, "2"), pod(y, "1")]);
    let plan = w.plan();
    let shared = group_of(&plan, x);
    assert!(shared.routes.is_empty(), "served: {:?}", shared.routes);
    let secrets = secrets_json(&shared);
    assert!(
        !secrets.contains("password-a") && !secrets.contains("password-b"),
        "no credential in a group two workloads share: {secrets}"
    );
    assert_eq!(shared.pods, 3);
    let annotations = shared.configmap.metadata.annotations.as_ref().unwrap();
    let sets = &annotations[GROUP_COLLISION_ANNOTATION];
    assert!(
        sets.contains(&format!("app={x}")) && sets.contains(&format!("app={y}")),
        "{sets}"
    );
    // Both routes own the objects (deleting them deletes the objects).
    let owners: Vec<&str> = shared
        .configmap
        .metadata
        .owner_references
        .iter()
        .flatten()
        .map(|o| o.name.as_str())
        .collect();
    assert_eq!(owners, ["rx", "ry"]);
    for name in ["rx", "ry"] {
        let desired = &plan.routes[name];
        assert!(desired.rejection().is_none(), "the spec itself is valid");
        let ready = desired
            .conditions
            .iter()
            .find(|c| c.type_ == status::condition::READY)
            .unwrap();
        assert!(!ready.status);
        assert_eq!(ready.reason, status::reason::GROUP_COLLISION);
        assert!(ready.message.contains(&format!("app={x}")) && ready.message.contains(&format!("app={y}")));
    }
    // The other groups are untouched.
    let a = group_of(&plan, "a");
    assert_eq!(a.routes, ["ra"]);
    let ready = plan.routes["ra"]
        .conditions
        .iter()
        .find(|c| c.type_ == status::condition::READY)
        .unwrap();
    assert!(ready.status);

    // One workload relabelled: no collision, each served again.
    w.pods.retain(|p| p["app"] != y);
    let plan = w.plan();
    let g = group_of(&plan, x);
    assert_eq!(g.routes, ["rx"]);
    assert!(
        !g.configmap
            .metadata
            .annotations
            .as_ref()
            .unwrap()
            .contains_key(GROUP_COLLISION_ANNOTATION)
    );
    assert!(secrets_json(&g).contains("password-a"));
}
