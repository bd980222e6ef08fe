//! The admission webhooks, as pure functions (the HTTPS listener lives with `run`):
//!
//! - **Injection** ([`inject`], `POST /mutate-pods`): a pod labelled
//!   `portcullis.dev/inject: "true"`, or created without that label in a namespace labelled
//!   so, gets the sidecar as a *native sidecar* (an init container with
//!   `restartPolicy: Always`, so it starts and passes its startup probe before the app, and
//!   never keeps a Job from completing), with:
//!   - the named ports [`PORT_HTTP`], [`PORT_TLS`] and [`PORT_ADMIN`] (a Service targets
//!     `portcullis-http` / `portcullis-tls`; the egress listener stays on loopback);
//!   - one projected volume at [`CONFIG_DIR`] holding the group's ConfigMap (`config.json`)
//!     and Secret (`secrets.json`), both named [`config_object_name`]: the pod's
//!     configuration group (`portcullis-` and 8 hex digits of SHA-256 over its labels minus
//!     the per-replica ones, [`group::group_name_for_pod`]). Not optional: the app never
//!     starts before the operator has written its configuration;
//!   - a downward-API volume at [`PODINFO_DIR`] with the pod's `labels` and `namespace`;
//!   - with a limits store ([`LimitsStore`], Helm `sidecar.limitsStore`): the flags
//!     `--limits-store` and `--limits-store-timeout`, and, when it names a password Secret,
//!     that Secret of the pod's namespace as the volume [`LIMITS_STORE_VOLUME`] at
//!     [`LIMITS_STORE_DIR`] with `--limits-store-password-file` (the password is never in
//!     an argument, the environment or a ConfigMap);
//!   - startup, readiness (`/readyz`) and liveness (`/healthz`) probes on the admin port,
//!     the configured resources and a non-root, read-only, no-capability security context.
//!
//!   The app's own containers and probes are untouched (kubelet probes reach the app
//!   directly), and a pod that already has the sidecar gets no patch.
//!
//!   When a route that selects the pod forwards to a local port an app container declares
//!   (`containerPort`), the pod is admitted with a warning: on the pod IP that port reaches
//!   the app without the sidecar (the app should listen on 127.0.0.1; [`exposed_backend_warnings`]).
//! - **Validation** ([`validate_route`], `POST /validate-apiroutes`): an ApiRoute that the
//!   compiler would reject for reasons of its own spec, its profiles (types mixed, two
//!   OAuth2, two Anonymous, the same profile twice, a missing profile, an invalid field) or
//!   an older route of another owner whose paths it would share (`RouteOverlap`) is
//!   refused with exactly the message the controller writes into its status, because the
//!   verdict comes from the same [`compile::compile`] call. Problems that depend on
//!   ordering — a Secret not created yet, a certificate not issued yet, a referenced profile
//!   that is itself invalid — are left to the status, so `kubectl apply` of a directory works.
//! - **Access** ([`requirements`], for ApiRoutes and, `POST /validate-securityprofiles`,
//!   SecurityProfiles): naming a Secret hands its content to the sidecars (and, for a route's
//!   origin credentials, to the origin), so the user who creates or updates the object must
//!   be allowed to `get` every Secret it names; a route that shares an older route's paths
//!   by claiming its owner label ([`compile::shared_owner_routes`]) needs a user who may
//!   `update` that route. The server asks the API server (SubjectAccessReviews, for the
//!   review's `userInfo`) before the review is decided, and the answers reach these pure
//!   functions through [`ClusterView::access`]; an answer that could not be had refuses the
//!   object (fail closed).
//! - **Profile settings** ([`compile::check_profile_settings`], `POST /validate-securityprofiles`):
//!   a SecurityProfile whose `rateLimit` sets neither `requestsPerMinute` nor `quota`, or has
//!   a `quota` while the sidecars have no shared limits store ([`LimitsStore::is_configured`]),
//!   is refused with the message the controller writes into its status.
//!
//! [`handle_review`] takes an `AdmissionReview` body and returns the response body.

use std::collections::BTreeMap;

use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapProjection, Container, ContainerPort, DownwardAPIVolumeFile, DownwardAPIVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector, Pod, Probe, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, Secret, SecretProjection, SecretVolumeSource, SecurityContext, Volume,
    VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use portcullis_api::{ApiRoute, SecurityProfile};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::compile::{self, Inputs, OWNER_LABEL, Verdict, reason};
use crate::controller::group;

/// Label that asks for a sidecar, on a pod or on its namespace.
pub use crate::controller::group::INJECT_LABEL;
/// Annotation the webhook puts on an injected pod: the name of its ConfigMap and Secret.
pub const INJECTED_ANNOTATION: &str = "portcullis.dev/config-name";
/// Name of the injected container.
pub const SIDECAR_NAME: &str = "portcullis-sidecar";
/// The projected volume with `config.json` and `secrets.json`.
pub const CONFIG_VOLUME: &str = "portcullis-config";
/// The downward-API volume with the pod's labels and namespace.
pub const PODINFO_VOLUME: &str = "portcullis-podinfo";
/// The Secret volume with the limits store's password (only with
/// `sidecar.limitsStore.passwordSecret`).
pub const LIMITS_STORE_VOLUME: &str = "portcullis-limits-store";
/// Where the limits store's password Secret is mounted; the key's file is [`LIMITS_STORE_PASSWORD_FILE`].
pub const LIMITS_STORE_DIR: &str = "/etc/portcullis/limits-store";
/// The password's file (`--limits-store-password-file`), whatever the Secret's key.
pub const LIMITS_STORE_PASSWORD_FILE: &str = "/etc/portcullis/limits-store/password";
/// Where the sidecar reads its configuration (`--config-dir`).
pub const CONFIG_DIR: &str = "/etc/portcullis/config";
/// Where the downward-API files (`labels`, `namespace`) are mounted.
pub const PODINFO_DIR: &str = "/etc/portcullis/podinfo";
/// Named container ports of the inbound HTTP, inbound TLS and admin listeners (the group's
/// NetworkPolicy admits exactly these).
pub use crate::controller::group::{PORT_ADMIN, PORT_HTTP, PORT_TLS};
/// Path of the injection webhook (MutatingWebhookConfiguration in the chart).
pub const MUTATE_PODS_PATH: &str = "/mutate-pods";
/// Path of the ApiRoute validation webhook (ValidatingWebhookConfiguration in the chart).
pub const VALIDATE_APIROUTES_PATH: &str = "/validate-apiroutes";
/// Path of the SecurityProfile validation webhook (the Secrets it names).
pub const VALIDATE_SECURITYPROFILES_PATH: &str = "/validate-securityprofiles";

/// Webhooks of the chart's MutatingWebhookConfiguration (pods by label, pods by namespace label).
pub const MUTATING_WEBHOOKS: &[&str] = &["pods.inject.portcullis.dev", "namespaces.inject.portcullis.dev"];
/// Webhooks of the chart's ValidatingWebhookConfiguration.
pub const VALIDATING_WEBHOOKS: &[&str] = &[
    "apiroutes.validate.portcullis.dev",
    "securityprofiles.validate.portcullis.dev",
];

/// The reasons an ApiRoute is refused for at admission: the rules that depend only on the
/// route and the profiles' existence and types, never on objects that may be created later.
pub const REJECTED_AT_ADMISSION: &[&str] = &[
    reason::INVALID_SPEC,
    reason::INVALID_BACKEND,
    reason::PROFILE_NOT_FOUND,
    reason::PROFILE_MIX,
    reason::DUPLICATE_PROFILE,
    reason::TOO_MANY_OAUTH2,
    reason::TOO_MANY_ANONYMOUS,
    reason::ROUTE_OVERLAP,
];

/// The sidecar's listening ports.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct SidecarPorts {
    pub inbound: u16,
    pub inbound_tls: u16,
    /// Bound to 127.0.0.1 only; not declared as a container port.
    pub egress: u16,
    pub admin: u16,
}

impl Default for SidecarPorts {
    fn default() -> Self {
        Self {
            inbound: 15080,
            inbound_tls: 15443,
            egress: 15001,
            admin: 15090,
        }
    }
}

/// What the injected sidecar looks like: the `sidecar` object of the operator's settings
/// file (Helm values `sidecar.*`, rendered into `settings.json` by the chart).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct SidecarSettings {
    /// Image reference, tag included.
    pub image: String,
    pub image_pull_policy: Option<String>,
    pub resources: Option<ResourceRequirements>,
    pub ports: SidecarPorts,
    /// UID and GID the sidecar runs as.
    pub run_as_user: i64,
    /// `true` (default): a restartable init container (Kubernetes 1.29+). `false`: the
    /// first entry of `containers`, for clusters without native sidecars.
    pub native: bool,
    /// More sidecar flags, after the ones the webhook sets (Helm `sidecar.extraArgs`).
    pub extra_args: Vec<String>,
    /// The Redis the sidecars count rate limits in (Helm `sidecar.limitsStore`).
    pub limits_store: LimitsStore,
    /// `--workers`: the most runtime workers (Helm `sidecar.workers`); `None`: the sidecar
    /// follows its CPU limit (2 without one).
    pub workers: Option<u32>,
    /// `--max-connections-per-client`: the most connections one client address may hold on
    /// each listener (Helm `sidecar.maxConnectionsPerClient`); `None`: no share per address.
    pub max_connections_per_client: Option<u32>,
}

/// `sidecar.limitsStore`: where every sidecar counts rate limits, so that they hold across
/// replicas (`--limits-store`, docs/api.md "Limits across replicas"). An empty `url`: each
/// sidecar counts alone.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct LimitsStore {
    /// `redis://`, `rediss://`, `redis-cluster://`, `rediss-cluster://`, `redis-sentinel://`
    /// or `rediss-sentinel://`, without a password.
    pub url: String,
    /// The Secret, in the pod's own namespace, holding the password; mounted into the sidecar
    /// (never in its arguments or environment).
    pub password_secret: PasswordSecret,
    /// `--limits-store-timeout` (`100ms`, `1s`).
    pub timeout: String,
}

impl Default for LimitsStore {
    fn default() -> Self {
        Self {
            url: String::new(),
            password_secret: PasswordSecret::default(),
            timeout: "100ms".to_owned(),
        }
    }
}

/// `sidecar.limitsStore.passwordSecret`: a Secret of the pod's namespace, and its key.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct PasswordSecret {
    /// Empty: no password.
    pub name: String,
    pub key: String,
}

impl Default for PasswordSecret {
    fn default() -> Self {
        Self {
            name: String::new(),
            key: "password".to_owned(),
        }
    }
}

/// The URL schemes `--limits-store` takes.
pub const LIMITS_STORE_SCHEMES: &[&str] = &[
    "redis",
    "rediss",
    "redis-cluster",
    "rediss-cluster",
    "redis-sentinel",
    "rediss-sentinel",
];

/// A settings file the operator refuses to start with.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("{field} = {value:?}: {why}")]
    Invalid {
        /// The Helm value, e.g. `sidecar.limitsStore.url`.
        field: &'static str,
        value: String,
        why: String,
    },
}

impl LimitsStore {
    /// Whether the sidecars count in a shared store (a `url` is set): quotas need one.
    pub fn is_configured(&self) -> bool {
        !self.url.is_empty()
    }

    /// The checks the sidecar would fail at start on, made once in the operator: the URL's
    /// form (the sidecar parses it fully), the timeout, the Secret's name and key.
    fn validate(&self, extra_args: &[String]) -> Result<(), SettingsError> {
        let invalid = |field: &'static str, value: &str, why: &str| SettingsError::Invalid {
            field,
            value: value.to_owned(),
            why: why.to_owned(),
        };
        let secret = &self.password_secret;
        if self.url.is_empty() {
            if !secret.name.is_empty() {
                return Err(invalid(
                    "sidecar.limitsStore.passwordSecret.name",
                    &secret.name,
                    "a password without sidecar.limitsStore.url",
                ));
            }
            return Ok(());
        }
        let url = &self.url;
        let forms = "expected redis://HOST:PORT[/DB], rediss://..., redis-cluster://HOST:PORT,HOST:PORT, \
                     rediss-cluster://..., redis-sentinel://HOST:PORT,HOST:PORT/MASTER or rediss-sentinel://...";
        match url.split_once("://") {
            Some((scheme, rest)) if LIMITS_STORE_SCHEMES.contains(&scheme) && !rest.is_empty() => {
                if rest.contains('@') {
                    return Err(invalid(
                        "sidecar.limitsStore.url",
                        "<redacted: it holds a password>",
                        "put the password in the Secret sidecar.limitsStore.passwordSecret names, not in the URL",
                    ));
                }
                // Lists of nodes may have spaces after their commas; nothing else has any.
                let single = matches!(scheme, "redis" | "rediss");
                if rest
                    .chars()
                    .any(|c| c.is_control() || (c.is_whitespace() && (single || c != ' ')))
                {
                    return Err(invalid("sidecar.limitsStore.url", url, forms));
                }
                if scheme.ends_with("-sentinel") && rest.split_once('/').is_none_or(|(_, master)| master.is_empty()) {
                    return Err(invalid(
                        "sidecar.limitsStore.url",
                        url,
                        &format!("no master name after the sentinels ({forms})"),
                    ));
                }
            }
            _ => return Err(invalid("sidecar.limitsStore.url", url, forms)),
        }
        let timeout = &self.timeout;
        let digits = timeout.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let unit = &timeout[digits.len()..];
        let positive = digits.bytes().all(|b| b.is_ascii_digit()) && digits.parse::<u64>().is_ok_and(|n| n > 0);
        if !positive || !matches!(unit, "ms" | "s" | "m") {
            return Err(invalid(
                "sidecar.limitsStore.timeout",
                timeout,
                "expected a duration longer than zero like 100ms, 1s or 1m",
            ));
        }
        if !secret.name.is_empty() {
            let dns_subdomain = secret.name.len() <= 253
                && secret.name.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                });
            if !dns_subdomain {
                return Err(invalid(
                    "sidecar.limitsStore.passwordSecret.name",
                    &secret.name,
                    "not a Secret name (a DNS subdomain)",
                ));
            }
            let key = &secret.key;
            if key.is_empty()
                || key.len() > 253
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(invalid(
                    "sidecar.limitsStore.passwordSecret.key",
                    key,
                    "not a Secret key (letters, digits, '-', '_', '.')",
                ));
            }
        }
        if let Some(flag) = extra_args
            .iter()
            .find(|a| a.split('=').next().is_some_and(|f| f.starts_with("--limits-store")))
        {
            return Err(invalid(
                "sidecar.extraArgs",
                flag,
                "sidecar.limitsStore sets the --limits-store flags",
            ));
        }
        Ok(())
    }
}

impl SidecarSettings {
    /// Refuses values the injected sidecars would fail on (each names its Helm value).
    pub fn validate(&self) -> Result<(), SettingsError> {
        if let Some(n) = self.workers
            && !(1..=1024).contains(&n)
        {
            return Err(SettingsError::Invalid {
                field: "sidecar.workers",
                value: n.to_string(),
                why: "between 1 and 1024, or null to follow the CPU limit".into(),
            });
        }
        if self.max_connections_per_client == Some(0) {
            return Err(SettingsError::Invalid {
                field: "sidecar.maxConnectionsPerClient",
                value: "0".into(),
                why: "at least 1, or null for no share per client address".into(),
            });
        }
        for (set, flag, value) in [
            (self.workers.is_some(), "--workers", "sidecar.workers"),
            (
                self.max_connections_per_client.is_some(),
                "--max-connections-per-client",
                "sidecar.maxConnectionsPerClient",
            ),
        ] {
            if set && let Some(given) = self.extra_args.iter().find(|a| a.split('=').next() == Some(flag)) {
                return Err(SettingsError::Invalid {
                    field: "sidecar.extraArgs",
                    value: given.clone(),
                    why: format!("{value} sets {flag}"),
                });
            }
        }
        self.limits_store.validate(&self.extra_args)
    }
}

impl Default for SidecarSettings {
    fn default() -> Self {
        Self {
            image: format!(
                "ghcr.io/portcullis-dev/portcullis-sidecar:{}",
                env!("CARGO_PKG_VERSION")
            ),
            image_pull_policy: None,
            resources: None,
            ports: SidecarPorts::default(),
            run_as_user: 65532,
            native: true,
            extra_args: Vec::new(),
            limits_store: LimitsStore::default(),
            workers: None,
            max_connections_per_client: None,
        }
    }
}

/// The operator's settings file (`run --settings FILE`, the chart's `settings.json`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct OperatorSettings {
    pub org_allowance: OrgAllowance,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub sidecar: SidecarSettings,
    pub webhook: WebhookSettings,
}

/// `orgAllowance` of the settings file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct OrgAllowance {
    pub requests_per_minute: Option<u32>,
}

/// Where the webhooks are reached and which configurations carry their `caBundle`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct WebhookSettings {
    /// The webhook Service (the serving certificate is for `<service>.<namespace>.svc`).
    pub service: String,
    pub namespace: String,
    pub mutating_webhook_configuration: String,
    pub validating_webhook_configuration: String,
}

impl OperatorSettings {
    /// Parses a settings file's content, and refuses values the sidecars would fail on.
    pub fn from_json(json: &[u8]) -> Result<Self, SettingsError> {
        let settings: Self = serde_json::from_slice(json)?;
        settings.sidecar.validate()?;
        Ok(settings)
    }
}

impl WebhookSettings {
    /// The DNS names the API server may use for the webhook Service: what the serving
    /// certificate must cover.
    pub fn serving_hosts(&self) -> Vec<String> {
        let (svc, ns) = (&self.service, &self.namespace);
        vec![
            svc.clone(),
            format!("{svc}.{ns}"),
            format!("{svc}.{ns}.svc"),
            format!("{svc}.{ns}.svc.cluster.local"),
        ]
    }
}

/// The JSON patch that makes every webhook of a Mutating- or ValidatingWebhookConfiguration
/// (`configuration`, as read from the API) trust `ca_bundle_pem`; `None` when all already do.
/// Each replacement is guarded by a `test` of the webhook's name at that index, so a
/// configuration changed in between makes the patch fail instead of touching the wrong entry.
pub fn ca_bundle_patch(configuration: &Value, ca_bundle_pem: &str) -> Option<json_patch::Patch> {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(ca_bundle_pem);
    let webhooks = configuration.get("webhooks")?.as_array()?;
    let mut ops = Vec::new();
    for (i, webhook) in webhooks.iter().enumerate() {
        if webhook.pointer("/clientConfig/caBundle").and_then(Value::as_str) == Some(encoded.as_str()) {
            continue;
        }
        let Some(name) = webhook.get("name") else { continue };
        ops.push(json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": name}));
        ops.push(json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": encoded}));
    }
    if ops.is_empty() {
        return None;
    }
    Some(serde_json::from_value(Value::Array(ops)).expect("patch operations are well-formed"))
}

/// Why a pod that asks for a sidecar cannot have it (the pod is refused with this message).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InjectError {
    #[error("container {container:?} already uses port {port}, which the Portcullis sidecar listens on")]
    PortTaken { container: String, port: i32 },
    #[error("container {container:?} already has a port named {name:?}, reserved for the Portcullis sidecar")]
    PortNameTaken { container: String, name: String },
    #[error("volume {0:?} is reserved for the Portcullis sidecar")]
    VolumeTaken(String),
    #[error("pods with hostNetwork: true cannot have the Portcullis sidecar (its ports would be the node's)")]
    HostNetwork,
}

/// The name of the ConfigMap and Secret that configure a pod with these labels: its
/// configuration group's name, `portcullis-` and 8 hex digits of SHA-256 over the labels
/// minus the per-replica ones ([`group::group_name_for_pod`], what the controllers write).
pub fn config_object_name(pod_labels: &BTreeMap<String, String>) -> String {
    group::group_name_for_pod(pod_labels)
}

/// The JSON patch (RFC 6902) that injects the sidecar into `pod`, created in a namespace
/// with `ns_labels`; `Ok(None)` when the pod does not ask for a sidecar (its own label wins
/// over the namespace's: `portcullis.dev/inject: "false"` opts out) or already has one.
pub fn inject(
    pod: &Pod,
    ns_labels: &BTreeMap<String, String>,
    settings: &SidecarSettings,
) -> Result<Option<json_patch::Patch>, InjectError> {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let add_label = match labels.get(INJECT_LABEL) {
        Some(v) if v == "true" => false,
        Some(_) => return Ok(None),
        None if ns_labels.get(INJECT_LABEL).is_some_and(|v| v == "true") => true,
        None => return Ok(None),
    };
    let Some(spec) = &pod.spec else { return Ok(None) };
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(INJECTED_ANNOTATION));
    let init = spec.init_containers.as_deref().unwrap_or_default();
    if annotated || init.iter().chain(&spec.containers).any(|c| c.name == SIDECAR_NAME) {
        return Ok(None);
    }
    check_conflicts(pod, settings)?;

    let mut final_labels = labels.clone();
    if add_label {
        final_labels.insert(INJECT_LABEL.to_owned(), "true".to_owned());
    }
    let config_name = config_object_name(&final_labels);

    let mut ops = Vec::new();
    if add_label {
        map_entry(
            &mut ops,
            "/metadata/labels",
            pod.metadata.labels.is_some(),
            INJECT_LABEL,
            "true",
        );
    }
    map_entry(
        &mut ops,
        "/metadata/annotations",
        pod.metadata.annotations.is_some(),
        INJECTED_ANNOTATION,
        &config_name,
    );
    let volumes: Vec<Value> = [Some(config_volume(&config_name)), Some(podinfo_volume())]
        .into_iter()
        .chain([limits_store_volume(&settings.limits_store)])
        .flatten()
        .map(to_value)
        .collect();
    if spec.volumes.is_some() {
        for v in volumes {
            ops.push(json!({"op": "add", "path": "/spec/volumes/-", "value": v}));
        }
    } else {
        ops.push(json!({"op": "add", "path": "/spec/volumes", "value": volumes}));
    }
    let container = to_value(sidecar_container(settings));
    let list = if settings.native {
        "initContainers"
    } else {
        "containers"
    };
    let present = if settings.native {
        spec.init_containers.is_some()
    } else {
        true
    };
    if present {
        ops.push(json!({"op": "add", "path": format!("/spec/{list}/0"), "value": container}));
    } else {
        ops.push(json!({"op": "add", "path": format!("/spec/{list}"), "value": [container]}));
    }
    Ok(Some(
        serde_json::from_value(Value::Array(ops)).expect("patch operations are well-formed"),
    ))
}

/// Adds `key: value` to the map at `path`, creating the map when it is absent.
fn map_entry(ops: &mut Vec<Value>, path: &str, exists: bool, key: &str, value: &str) {
    if exists {
        let escaped = key.replace('~', "~0").replace('/', "~1");
        ops.push(json!({"op": "add", "path": format!("{path}/{escaped}"), "value": value}));
    } else {
        ops.push(json!({"op": "add", "path": path, "value": {key: value}}));
    }
}

fn to_value<T: serde::Serialize>(v: T) -> Value {
    serde_json::to_value(v).expect("Kubernetes objects serialize")
}

fn check_conflicts(pod: &Pod, settings: &SidecarSettings) -> Result<(), InjectError> {
    let Some(spec) = &pod.spec else { return Ok(()) };
    if spec.host_network == Some(true) {
        return Err(InjectError::HostNetwork);
    }
    let p = &settings.ports;
    let ports = [p.inbound, p.inbound_tls, p.egress, p.admin].map(i32::from);
    let names = [PORT_HTTP, PORT_TLS, PORT_ADMIN];
    let init = spec.init_containers.as_deref().unwrap_or_default();
    for c in init.iter().chain(&spec.containers) {
        for port in c.ports.iter().flatten() {
            if ports.contains(&port.container_port) {
                return Err(InjectError::PortTaken {
                    container: c.name.clone(),
                    port: port.container_port,
                });
            }
            if let Some(name) = port.name.as_deref().filter(|n| names.contains(n)) {
                return Err(InjectError::PortNameTaken {
                    container: c.name.clone(),
                    name: name.to_owned(),
                });
            }
        }
    }
    if let Some(v) = spec.volumes.iter().flatten().find(|v| {
        v.name == CONFIG_VOLUME
            || v.name == PODINFO_VOLUME
            || (v.name == LIMITS_STORE_VOLUME && limits_store_volume(&settings.limits_store).is_some())
    }) {
        return Err(InjectError::VolumeTaken(v.name.clone()));
    }
    Ok(())
}

fn config_volume(name: &str) -> Volume {
    Volume {
        name: CONFIG_VOLUME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o444),
            sources: Some(vec![
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: name.to_owned(),
                        optional: Some(false),
                        items: None,
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    secret: Some(SecretProjection {
                        name: name.to_owned(),
                        optional: Some(false),
                        items: None,
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn podinfo_volume() -> Volume {
    let file = |path: &str, field: &str| DownwardAPIVolumeFile {
        path: path.to_owned(),
        field_ref: Some(ObjectFieldSelector {
            field_path: field.to_owned(),
            api_version: None,
        }),
        ..Default::default()
    };
    Volume {
        name: PODINFO_VOLUME.to_owned(),
        downward_api: Some(DownwardAPIVolumeSource {
            default_mode: Some(0o444),
            items: Some(vec![
                file("labels", "metadata.labels"),
                file("namespace", "metadata.namespace"),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The `--limits-store` flags: none without a URL; the password as a file, never a value.
fn limits_store_args(store: &LimitsStore) -> Vec<String> {
    if store.url.is_empty() {
        return Vec::new();
    }
    let mut args = vec![
        "--limits-store".to_owned(),
        store.url.clone(),
        "--limits-store-timeout".to_owned(),
        store.timeout.clone(),
    ];
    if !store.password_secret.name.is_empty() {
        args.extend([
            "--limits-store-password-file".to_owned(),
            LIMITS_STORE_PASSWORD_FILE.to_owned(),
        ]);
    }
    args
}

/// The volume of the limits store's password Secret (in the pod's namespace), its key
/// mounted as `password`; `None` without a URL or a Secret.
fn limits_store_volume(store: &LimitsStore) -> Option<Volume> {
    let secret = &store.password_secret;
    if store.url.is_empty() || secret.name.is_empty() {
        return None;
    }
    Some(Volume {
        name: LIMITS_STORE_VOLUME.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.name.clone()),
            items: Some(vec![KeyToPath {
                key: secret.key.clone(),
                path: "password".to_owned(),
                ..Default::default()
            }]),
            // Read by the sidecar's non-root user; the app's containers do not mount it.
            default_mode: Some(0o444),
            // Not optional: the pod waits for the Secret instead of starting a sidecar that
            // the store would refuse.
            optional: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The sidecar container.
pub fn sidecar_container(settings: &SidecarSettings) -> Container {
    let p = &settings.ports;
    let port = |name: &str, n: u16| ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(n),
        protocol: Some("TCP".to_owned()),
        ..Default::default()
    };
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(PORT_ADMIN.to_owned()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Default::default()
    };
    let field_env = |name: &str, field: &str| EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field.to_owned(),
                api_version: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true),
        ..Default::default()
    };
    Container {
        name: SIDECAR_NAME.to_owned(),
        image: Some(settings.image.clone()),
        image_pull_policy: settings.image_pull_policy.clone(),
        args: Some(
            [
                "--config-dir".to_owned(),
                CONFIG_DIR.to_owned(),
                "--inbound".to_owned(),
                format!("0.0.0.0:{}", p.inbound),
                "--inbound-tls".to_owned(),
                format!("0.0.0.0:{}", p.inbound_tls),
                "--egress".to_owned(),
                format!("127.0.0.1:{}", p.egress),
                "--admin".to_owned(),
                format!("0.0.0.0:{}", p.admin),
            ]
            .into_iter()
            .chain(limits_store_args(&settings.limits_store))
            .chain(
                settings
                    .workers
                    .into_iter()
                    .flat_map(|n| ["--workers".to_owned(), n.to_string()]),
            )
            .chain(
                settings
                    .max_connections_per_client
                    .into_iter()
                    .flat_map(|n| ["--max-connections-per-client".to_owned(), n.to_string()]),
            )
            .chain(settings.extra_args.iter().cloned())
            .collect(),
        ),
        env: Some(vec![
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
        ]),
        ports: Some(vec![
            port(PORT_HTTP, p.inbound),
            port(PORT_TLS, p.inbound_tls),
            port(PORT_ADMIN, p.admin),
        ]),
        // Native sidecar: started before the app containers, stopped after them.
        restart_policy: settings.native.then(|| "Always".to_owned()),
        // The app starts once the proxy listens (kubelet waits for a native sidecar's
        // startup probe); ready once a valid configuration is enforced.
        startup_probe: Some(probe("/healthz", 1, 60)),
        readiness_probe: Some(probe("/readyz", 5, 2)),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        resources: settings.resources.clone(),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(settings.run_as_user),
            run_as_group: Some(settings.run_as_user),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        volume_mounts: Some(
            [
                Some(mount(CONFIG_VOLUME, CONFIG_DIR)),
                Some(mount(PODINFO_VOLUME, PODINFO_DIR)),
                limits_store_volume(&settings.limits_store).map(|_| mount(LIMITS_STORE_VOLUME, LIMITS_STORE_DIR)),
            ]
            .into_iter()
            .flatten()
            .collect(),
        ),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Default::default()
    }
}

/// Checks an ApiRoute the way the controller does, against the SecurityProfiles, Secrets and
/// other ApiRoutes of its namespace (`routes_in_ns`: as stored, the route's own earlier
/// version included or not): `Err(message)` with the exact status message when the compiler
/// rejects it for one of [`REJECTED_AT_ADMISSION`]'s reasons (`limits_store_configured`: as
/// the controller compiles, [`LimitsStore::is_configured`]).
pub fn validate_route(
    route: &ApiRoute,
    profiles_in_ns: &[SecurityProfile],
    secrets_in_ns: &[Secret],
    routes_in_ns: &[ApiRoute],
    limits_store_configured: bool,
) -> Result<(), String> {
    let namespace = route.metadata.namespace.as_deref().unwrap_or("default");
    let profiles: Vec<SecurityProfile> = profiles_in_ns
        .iter()
        .filter(|p| p.metadata.namespace.as_deref().is_none_or(|ns| ns == namespace))
        .cloned()
        .collect();
    let routes = with_route(route, routes_in_ns);
    let output = compile::compile(&Inputs {
        namespace,
        profiles: &profiles,
        routes: &routes,
        secrets: secrets_in_ns,
        org_allowance: None,
        trusted_proxies: &[],
        limits_store_configured,
        workload_labels: None,
    });
    let name = route.metadata.name.clone().unwrap_or_default();
    match output.routes.get(&name) {
        Some(Verdict::Rejected { reason, message, .. }) if REJECTED_AT_ADMISSION.contains(reason) => {
            Err(message.clone())
        }
        _ => Ok(()),
    }
}

/// The namespace's routes as they would be with `route` admitted: its stored version (same
/// name) replaced, routes of other namespaces left out.
fn with_route(route: &ApiRoute, routes_in_ns: &[ApiRoute]) -> Vec<ApiRoute> {
    let namespace = route.metadata.namespace.as_deref();
    let mut routes: Vec<ApiRoute> = routes_in_ns
        .iter()
        .filter(|r| r.metadata.name != route.metadata.name)
        .filter(|r| r.metadata.namespace.is_none() || r.metadata.namespace.as_deref() == namespace)
        .cloned()
        .collect();
    routes.push(route.clone());
    routes
}

/// Something the user behind a review must be allowed to do (a SubjectAccessReview's
/// resource attributes).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AccessCheck {
    pub verb: &'static str,
    /// API group, `""` for the core group.
    pub group: &'static str,
    /// Plural resource name.
    pub resource: &'static str,
    pub namespace: String,
    pub name: String,
}

/// The API server's answer to an [`AccessCheck`] for the review's user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    Allowed,
    Denied,
    /// No answer could be had (the review is then refused).
    Failed(String),
}

/// Why an [`AccessCheck`] is needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// The object names this Secret: the user must be able to read it.
    NamedSecret,
    /// The route shares this older or newer route's paths by carrying the same owner label:
    /// the user must be able to update that route (and so could have allowed it anyway).
    SharedOwner { owner: String },
}

/// One access an object needs of the user who writes it, and the field that needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub field: String,
    pub check: AccessCheck,
    pub need: Need,
}

fn get_secret(field: impl Into<String>, namespace: &str, name: &str) -> Requirement {
    Requirement {
        field: field.into(),
        check: AccessCheck {
            verb: "get",
            group: "",
            resource: "secrets",
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        },
        need: Need::NamedSecret,
    }
}

/// What the user creating or updating `route` must be allowed: `get` on every Secret it
/// names (the certificates the operator's CA issues for it aside), and `update` on every
/// route whose paths it shares only by claiming the same owner ([`compile::shared_owner_routes`]
/// among `routes_in_ns`).
pub fn route_requirements(route: &ApiRoute, routes_in_ns: &[ApiRoute]) -> Vec<Requirement> {
    let ns = route.metadata.namespace.as_deref().unwrap_or("default");
    let spec = &route.spec;
    let mut out = Vec::new();
    if let Some(name) = spec.tls.as_ref().and_then(|t| t.secret_name.as_ref()) {
        out.push(get_secret("spec.tls.secretName", ns, name));
    }
    if let Some(origin) = &spec.backend.origin {
        if let Some(t) = &origin.tls {
            if let Some(ca) = &t.ca_secret_ref {
                out.push(get_secret("spec.backend.origin.tls.caSecretRef.name", ns, &ca.name));
            }
            if let Some(name) = t.client_certificate.as_ref().and_then(|c| c.secret_name.as_ref()) {
                out.push(get_secret(
                    "spec.backend.origin.tls.clientCertificate.secretName",
                    ns,
                    name,
                ));
            }
        }
        if let Some(auth) = &origin.auth {
            let named = [
                ("basic.secretRef", auth.basic.as_ref().map(|b| &b.secret_ref.name)),
                (
                    "sharedSecret.secretRef",
                    auth.shared_secret.as_ref().map(|s| &s.secret_ref.name),
                ),
                (
                    "httpSignature.secretRef",
                    auth.http_signature.as_ref().map(|h| &h.secret_ref.name),
                ),
                (
                    "oauth2ClientCredentials.clientSecretRef",
                    auth.oauth2_client_credentials
                        .as_ref()
                        .map(|o| &o.client_secret_ref.name),
                ),
            ];
            for (field, name) in named {
                if let Some(name) = name {
                    out.push(get_secret(format!("spec.backend.origin.auth.{field}.name"), ns, name));
                }
            }
        }
    }
    let owner = route
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(OWNER_LABEL))
        .cloned()
        .unwrap_or_default();
    for other in compile::shared_owner_routes(route, &with_route(route, routes_in_ns)) {
        out.push(Requirement {
            field: format!("metadata.labels[{OWNER_LABEL}]"),
            check: AccessCheck {
                verb: "update",
                group: "portcullis.dev",
                resource: "apiroutes",
                namespace: ns.to_owned(),
                name: other,
            },
            need: Need::SharedOwner { owner: owner.clone() },
        });
    }
    out
}

/// What the user creating or updating `profile` must be allowed: `get` on every Secret it
/// names.
pub fn profile_requirements(profile: &SecurityProfile) -> Vec<Requirement> {
    let ns = profile.metadata.namespace.as_deref().unwrap_or("default");
    let spec = &profile.spec;
    let oauth2 = spec.oauth2.as_ref();
    let named = [
        (
            "spec.basic.secretRef.name",
            spec.basic.as_ref().map(|b| &b.secret_ref.name),
        ),
        (
            "spec.apiKey.secretRef.name",
            spec.api_key.as_ref().map(|k| &k.secret_ref.name),
        ),
        (
            "spec.oauth2.introspection.clientSecretRef.name",
            oauth2
                .and_then(|o| o.introspection.as_ref())
                .map(|i| &i.client_secret_ref.name),
        ),
        (
            "spec.oauth2.builtin.clientsSecretRef.name",
            oauth2
                .and_then(|o| o.builtin.as_ref())
                .map(|b| &b.clients_secret_ref.name),
        ),
        (
            "spec.oauth2.builtin.delegation.ownerSecretRef.name",
            oauth2
                .and_then(|o| o.builtin.as_ref())
                .and_then(|b| b.delegation.as_ref())
                .map(|d| &d.owner_secret_ref.name),
        ),
        (
            "spec.httpSignature.secretRef.name",
            spec.http_signature.as_ref().map(|h| &h.secret_ref.name),
        ),
        (
            "spec.oauth1.consumersSecretRef.name",
            spec.oauth1.as_ref().map(|o| &o.consumers_secret_ref.name),
        ),
        (
            "spec.oauth1.tokensSecretRef.name",
            spec.oauth1
                .as_ref()
                .and_then(|o| o.tokens_secret_ref.as_ref())
                .map(|t| &t.name),
        ),
        (
            "spec.clientCertificate.caSecretRef.name",
            spec.client_certificate.as_ref().map(|c| &c.ca_secret_ref.name),
        ),
    ];
    named
        .into_iter()
        .filter_map(|(field, name)| Some(get_secret(field, ns, name?)))
        .collect()
}

/// The access checks a review needs answered before it is decided (none for anything but
/// the creation or update of an ApiRoute or SecurityProfile), with the namespace's routes
/// as `routes_in_ns`.
pub fn requirements(request: &AdmissionRequest<DynamicObject>, routes_in_ns: &[ApiRoute]) -> Vec<Requirement> {
    let (Some(object), Operation::Create | Operation::Update) = (&request.object, &request.operation) else {
        return Vec::new();
    };
    match (request.kind.group.as_str(), request.kind.kind.as_str()) {
        ("portcullis.dev", "ApiRoute") => convert::<ApiRoute>(object)
            .map(|route| route_requirements(&placed(route, request), routes_in_ns))
            .unwrap_or_default(),
        ("portcullis.dev", "SecurityProfile") => convert::<SecurityProfile>(object)
            .map(|profile| profile_requirements(&placed(profile, request)))
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The review's namespace (the request's, else the object's, else `default`).
fn request_namespace(request: &AdmissionRequest<DynamicObject>) -> String {
    request
        .namespace
        .clone()
        .or_else(|| request.object.as_ref().and_then(|o| o.metadata.namespace.clone()))
        .unwrap_or_else(|| "default".to_owned())
}

/// An object of a review with its namespace and name filled in from the request.
fn placed<K: kube::Resource>(mut object: K, request: &AdmissionRequest<DynamicObject>) -> K {
    let meta = object.meta_mut();
    meta.namespace = Some(request_namespace(request));
    if meta.name.is_none() {
        meta.name = Some(request.name.clone());
    }
    object
}

/// Refuses an update that would make `route`, the older of two overlapping routes, take over
/// the paths of newer routes of another owner (which the compiler would then refuse).
fn no_takeover(route: &ApiRoute, old: Option<&ApiRoute>, routes_in_ns: &[ApiRoute]) -> Result<(), String> {
    let taken = compile::taken_over(route, old, &with_route(route, routes_in_ns));
    let Some(first) = taken.first() else { return Ok(()) };
    Err(format!(
        "spec.pathPrefix: {:?} would now overlap ApiRoute {first:?} on the same pods, which has another owner and \
         would then be refused (RouteOverlap) while this route takes its paths; to share them, list it in \
         this route's annotation {}: \"{first}\", or give both the same label {OWNER_LABEL}",
        route.spec.path_prefix,
        compile::ALLOW_OVERLAP_ANNOTATION,
    ))
}

/// Refuses (with a message naming the field and the object) when the review's user lacks an
/// access the object needs, or when the access could not be checked.
fn check_access(requirements: &[Requirement], user: &UserInfo, cluster: &dyn ClusterView) -> Result<(), String> {
    let who = user.username.as_deref().unwrap_or("(unknown)");
    for r in requirements {
        let c = &r.check;
        let what = match &r.need {
            Need::NamedSecret => format!("get Secret {:?} in namespace {}", c.name, c.namespace),
            Need::SharedOwner { .. } => format!("update ApiRoute {:?} in namespace {}", c.name, c.namespace),
        };
        match cluster.access(c) {
            Access::Allowed => {}
            Access::Denied => {
                return Err(match &r.need {
                    Need::NamedSecret => format!(
                        "{}: user {who:?} may not {what}, so may not name it: the sidecars (and, for origin \
                         credentials, the origin) would receive its content",
                        r.field
                    ),
                    Need::SharedOwner { owner } => format!(
                        "{}: user {who:?} may not {what}, whose paths this route would share by carrying its \
                         owner {owner:?}; ask the owner of ApiRoute {:?} to list this route in its \
                         {ALLOW_OVERLAP}, or to set the label",
                        r.field,
                        c.name,
                        ALLOW_OVERLAP = compile::ALLOW_OVERLAP_ANNOTATION,
                    ),
                });
            }
            Access::Failed(error) => {
                return Err(format!(
                    "{}: cannot check whether user {who:?} may {what} ({error}); refused until it can be checked",
                    r.field
                ));
            }
        }
    }
    Ok(())
}

/// Warnings for an ApiRoute that is neither `sslOnly` nor has client-facing `tls` and uses
/// a SecurityProfile that signs people in: the sign-in cookies are `Secure`, which browsers
/// keep only over HTTPS, so people can sign in there only through a proxy that terminates
/// TLS and is one of the sidecar's trusted proxies (or on a loopback host).
pub fn sign_in_warnings(route: &ApiRoute, profiles_in_ns: &[SecurityProfile]) -> Vec<String> {
    if route.spec.ssl_only || route.spec.tls.is_some() {
        return Vec::new();
    }
    let name = route.metadata.name.as_deref().unwrap_or_default();
    let namespace = route.metadata.namespace.as_deref();
    route
        .spec
        .profiles
        .iter()
        .filter(|r| {
            profiles_in_ns.iter().any(|p| {
                p.metadata.name.as_deref() == Some(r.name.as_str())
                    && (namespace.is_none() || p.metadata.namespace.as_deref() == namespace)
                    && p.spec.oauth2.as_ref().is_some_and(|o| o.login.is_some())
            })
        })
        .map(|r| {
            format!(
                "ApiRoute \"{name}\": SecurityProfile \"{}\" signs people in, but the route has neither \
                 spec.sslOnly nor spec.tls: browsers keep sign-in cookies only over HTTPS, so sign-in works \
                 only behind a proxy that terminates TLS and is in the sidecar's trustedProxies",
                r.name
            )
        })
        .collect()
}

/// Warnings for a SecurityProfile whose Builtin provider serves user-delegated access when
/// the sidecars share no limits store (`store`): its grants, refresh tokens and revocations
/// are then kept by each sidecar, in memory.
pub fn delegation_warnings(profile: &SecurityProfile, store: bool) -> Vec<String> {
    let delegating = profile
        .spec
        .oauth2
        .as_ref()
        .and_then(|o| o.builtin.as_ref())
        .is_some_and(|b| b.delegation.is_some());
    if !delegating || store {
        return Vec::new();
    }
    vec![format!(
        "SecurityProfile \"{}\": spec.oauth2.builtin.delegation without a shared limits store keeps grants, \
         refresh tokens and revocations in each sidecar's memory: they are lost when the sidecar restarts, a \
         code or refresh token works only on the replica that issued it, and a revocation holds only on the \
         replica that received it (configure sidecar.limitsStore, or run one replica)",
        profile.metadata.name.as_deref().unwrap_or_default()
    )]
}

/// Warnings for a pod that gets the sidecar: each app container port that is also the
/// local backend port of a route selecting the pod (`labels`: the pod's labels once
/// admitted). The port is reachable on the pod IP without the sidecar's checks, unless the
/// app listens on 127.0.0.1 only (the operator's NetworkPolicy admits only the sidecar's
/// ports, where one is enforced).
pub fn exposed_backend_warnings(pod: &Pod, labels: &BTreeMap<String, String>, routes: &[ApiRoute]) -> Vec<String> {
    let Some(spec) = &pod.spec else { return Vec::new() };
    let mut backends: BTreeMap<i32, Vec<&str>> = BTreeMap::new();
    for r in routes.iter().filter(|r| compile::route_selects(r, labels)) {
        if let (Some(port), Some(name)) = (r.spec.backend.port, r.metadata.name.as_deref()) {
            backends.entry(i32::from(port)).or_default().push(name);
        }
    }
    let init = spec.init_containers.as_deref().unwrap_or_default();
    let mut out = Vec::new();
    for c in init.iter().chain(&spec.containers).filter(|c| c.name != SIDECAR_NAME) {
        for port in c.ports.iter().flatten() {
            if let Some(names) = backends.get(&port.container_port) {
                out.push(format!(
                    "container {:?} exposes port {}, the backend port of ApiRoute {}: on the pod IP that port \
                     reaches the app without the Portcullis sidecar (and lets callers set X-Portcullis-* \
                     headers); make the app listen on 127.0.0.1:{} only and drop the containerPort",
                    c.name,
                    port.container_port,
                    names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", "),
                    port.container_port,
                ));
            }
        }
    }
    out
}

/// What the webhooks read from the cluster (the operator's caches).
pub trait ClusterView {
    /// Labels of a namespace (empty when unknown).
    fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String>;
    /// The SecurityProfiles of a namespace.
    fn profiles(&self, namespace: &str) -> Vec<SecurityProfile>;
    /// The Secrets of a namespace (those the profiles and the route reference suffice).
    fn secrets(&self, namespace: &str) -> Vec<Secret>;
    /// The ApiRoutes of a namespace, as stored.
    fn routes(&self, namespace: &str) -> Vec<ApiRoute>;
    /// Whether the review's user may do `check` (answered before the review is decided,
    /// for the [`requirements`] of the review; anything else is `Failed`).
    fn access(&self, check: &AccessCheck) -> Access;
}

/// How a review was answered (the `result` label of the webhook metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewResult {
    /// Allowed unchanged.
    Allowed,
    /// Allowed with a patch (a pod given its sidecar).
    Patched,
    /// Refused (an invalid ApiRoute, a pod that cannot take the sidecar).
    Denied,
    /// The body was not an AdmissionReview.
    Invalid,
}

impl ReviewResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Patched => "patched",
            Self::Denied => "denied",
            Self::Invalid => "invalid",
        }
    }
}

/// Answers one `AdmissionReview` (admission.k8s.io/v1) body, for either webhook: pods are
/// injected, ApiRoutes validated, anything else allowed unchanged. Never fails: a body that
/// is not a review gets a review that refuses it.
pub fn handle_review(body: &[u8], settings: &SidecarSettings, cluster: &dyn ClusterView) -> Vec<u8> {
    answer_review(body, settings, cluster).0
}

/// [`handle_review`], also saying how the review was answered.
pub fn answer_review(body: &[u8], settings: &SidecarSettings, cluster: &dyn ClusterView) -> (Vec<u8>, ReviewResult) {
    let mut result = ReviewResult::Invalid;
    let response = match serde_json::from_slice::<AdmissionReview<DynamicObject>>(body)
        .map_err(|e| e.to_string())
        .and_then(|review| {
            review
                .try_into()
                .map_err(|e: kube::core::admission::ConvertAdmissionReviewError| e.to_string())
        }) {
        Err(e) => AdmissionResponse::invalid(format!("not an AdmissionReview: {e}")),
        Ok(request) => {
            let response = review(&request, settings, cluster);
            result = match (response.allowed, &response.patch) {
                (false, _) => ReviewResult::Denied,
                (true, Some(_)) => ReviewResult::Patched,
                (true, None) => ReviewResult::Allowed,
            };
            response
        }
    };
    let mut review = serde_json::to_value(response.into_review()).expect("AdmissionReview serializes");
    // The API server reads `patch` as Go []byte: a base64 string (kube serializes an array).
    if let Some(patch) = review.pointer_mut("/response/patch")
        && let Some(bytes) = patch.as_array().map(|a| {
            a.iter()
                .filter_map(|b| b.as_u64().map(|b| b as u8))
                .collect::<Vec<u8>>()
        })
    {
        use base64::Engine as _;
        *patch = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    (serde_json::to_vec(&review).expect("AdmissionReview serializes"), result)
}

fn review(
    req: &AdmissionRequest<DynamicObject>,
    settings: &SidecarSettings,
    cluster: &dyn ClusterView,
) -> AdmissionResponse {
    let allow = AdmissionResponse::from(req);
    let Some(object) = &req.object else { return allow };
    let namespace = request_namespace(req);
    let kind = (req.kind.group.as_str(), req.kind.kind.as_str());
    match (kind, &req.operation) {
        (("", "Pod"), Operation::Create) => {
            let pod: Pod = match convert(object) {
                Ok(pod) => pod,
                Err(e) => return allow.deny(format!("cannot read the Pod: {e}")),
            };
            match inject(&pod, &cluster.namespace_labels(&namespace), settings) {
                Ok(None) => allow,
                Ok(Some(patch)) => match allow.clone().with_patch(patch) {
                    Ok(mut patched) => {
                        let mut labels = pod.metadata.labels.clone().unwrap_or_default();
                        labels
                            .entry(INJECT_LABEL.to_owned())
                            .or_insert_with(|| "true".to_owned());
                        let warnings = exposed_backend_warnings(&pod, &labels, &cluster.routes(&namespace));
                        if !warnings.is_empty() {
                            patched.warnings = Some(warnings);
                        }
                        patched
                    }
                    Err(e) => allow.deny(e.to_string()),
                },
                Err(e) => allow.deny(format!("portcullis.dev/inject: {e}")),
            }
        }
        (("portcullis.dev", "ApiRoute"), Operation::Create | Operation::Update) => {
            let route: ApiRoute = match convert(object) {
                Ok(route) => placed(route, req),
                Err(e) => return allow.deny(format!("cannot read the ApiRoute: {e}")),
            };
            let routes = cluster.routes(&namespace);
            let old: Option<ApiRoute> = req.old_object.as_ref().and_then(|o| convert(o).ok());
            let checked = check_access(&route_requirements(&route, &routes), &req.user_info, cluster)
                .and_then(|()| {
                    validate_route(
                        &route,
                        &cluster.profiles(&namespace),
                        &cluster.secrets(&namespace),
                        &routes,
                        settings.limits_store.is_configured(),
                    )
                })
                .and_then(|()| no_takeover(&route, old.as_ref(), &routes));
            match checked {
                Ok(()) => {
                    let warnings = sign_in_warnings(&route, &cluster.profiles(&namespace));
                    let mut allow = allow;
                    if !warnings.is_empty() {
                        allow.warnings = Some(warnings);
                    }
                    allow
                }
                Err(message) => allow.deny(message),
            }
        }
        (("portcullis.dev", "SecurityProfile"), Operation::Create | Operation::Update) => {
            let profile: SecurityProfile = match convert(object) {
                Ok(profile) => placed(profile, req),
                Err(e) => return allow.deny(format!("cannot read the SecurityProfile: {e}")),
            };
            let checked = check_access(&profile_requirements(&profile), &req.user_info, cluster)
                .and_then(|()| compile::check_profile_settings(&profile, settings.limits_store.is_configured()));
            match checked {
                Ok(()) => {
                    let warnings = delegation_warnings(&profile, settings.limits_store.is_configured());
                    let mut allow = allow;
                    if !warnings.is_empty() {
                        allow.warnings = Some(warnings);
                    }
                    allow
                }
                Err(message) => allow.deny(message),
            }
        }
        _ => allow,
    }
}

fn convert<T: serde::de::DeserializeOwned>(object: &DynamicObject) -> Result<T, serde_json::Error> {
    serde_json::from_value(serde_json::to_value(object)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "prod";

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).expect("test pod parses")
    }

    const APP_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  generateName: finance-api-5d8f-
  namespace: prod
  labels: {app: finance-api, portcullis.dev/inject: "true", pod-template-hash: 5d8f}
spec:
  containers:
    - name: app
      image: example/finance-api:1
      ports: [{name: http, containerPort: 8080}]
      readinessProbe: {httpGet: {path: /ready, port: 8080}}
"#;

    /// Applies `patch` to `pod` the way the API server does, and reads the result back.
    fn apply(pod: &Pod, patch: &json_patch::Patch) -> Pod {
        let mut doc = serde_json::to_value(pod).unwrap();
        json_patch::patch(&mut doc, &patch.0).expect("the patch applies");
        serde_json::from_value(doc).expect("the patched pod is a Pod")
    }

    fn injected(pod: &Pod, ns_labels: &BTreeMap<String, String>, settings: &SidecarSettings) -> Pod {
        let patch = inject(pod, ns_labels, settings).unwrap().expect("a patch");
        apply(pod, &patch)
    }

    #[test]
    fn config_names_are_the_controllers_group_names() {
        // Pinned, like controller::group's tests: existing ConfigMaps and Secrets have these names.
        assert_eq!(
            config_object_name(&labels(&[("app", "api")])),
            group::group_name(&labels(&[("app", "api")]))
        );
        assert_eq!(config_object_name(&BTreeMap::new()), "portcullis-e3b0c442");
        let a = labels(&[("app", "api"), (INJECT_LABEL, "true"), ("pod-template-hash", "5d8f")]);
        let b = labels(&[("app", "api"), (INJECT_LABEL, "true"), ("pod-template-hash", "77c1")]);
        assert_eq!(config_object_name(&a), config_object_name(&b));
        assert_eq!(
            config_object_name(&a),
            config_object_name(&labels(&[("app", "api"), (INJECT_LABEL, "true")]))
        );
        assert_ne!(
            config_object_name(&a),
            config_object_name(&labels(&[("app", "web"), (INJECT_LABEL, "true")]))
        );
        let name = config_object_name(&a);
        assert_eq!(name.len(), group::GROUP_PREFIX.len() + 8);
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }

    /// `sidecar.workers` caps the injected sidecar's runtime workers; without it the sidecar
    /// follows its CPU limit. Out of range, or repeated in `extraArgs`: refused at start.
    #[test]
    fn workers_are_passed_to_the_sidecar() {
        let settings = SidecarSettings {
            workers: Some(2),
            ..Default::default()
        };
        let args = sidecar_container(&settings).args.unwrap();
        let at = args.iter().position(|a| a == "--workers").expect("--workers");
        assert_eq!(args[at + 1], "2");
        let none = sidecar_container(&SidecarSettings::default()).args.unwrap();
        assert!(!none.iter().any(|a| a == "--workers"));
        let file = |sidecar: Value| OperatorSettings::from_json(json!({"sidecar": sidecar}).to_string().as_bytes());
        assert_eq!(file(json!({"workers": 4})).unwrap().sidecar.workers, Some(4));
        assert_eq!(file(json!({"workers": null})).unwrap().sidecar.workers, None);
        let err = file(json!({"workers": 0})).unwrap_err().to_string();
        assert!(err.starts_with("sidecar.workers = \"0\""), "{err}");
        let err = file(json!({"workers": 2, "extraArgs": ["--workers=3"]}))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("sidecar.extraArgs"), "{err}");
    }

    /// `sidecar.maxConnectionsPerClient` gives each client address a share of the injected
    /// sidecar's connections; without it there is none. 0, or the flag again in `extraArgs`:
    /// refused at start.
    #[test]
    fn a_per_client_connection_share_is_passed_to_the_sidecar() {
        let settings = SidecarSettings {
            max_connections_per_client: Some(8),
            ..Default::default()
        };
        let args = sidecar_container(&settings).args.unwrap();
        let at = args
            .iter()
            .position(|a| a == "--max-connections-per-client")
            .expect("--max-connections-per-client");
        assert_eq!(args[at + 1], "8");
        let none = sidecar_container(&SidecarSettings::default()).args.unwrap();
        assert!(!none.iter().any(|a| a == "--max-connections-per-client"));
        let file = |sidecar: Value| OperatorSettings::from_json(json!({"sidecar": sidecar}).to_string().as_bytes());
        let given = file(json!({"maxConnectionsPerClient": 16})).unwrap();
        assert_eq!(given.sidecar.max_connections_per_client, Some(16));
        let err = file(json!({"maxConnectionsPerClient": 0})).unwrap_err().to_string();
        assert!(err.starts_with("sidecar.maxConnectionsPerClient = \"0\""), "{err}");
        let err = file(json!({"maxConnectionsPerClient": 4, "extraArgs": ["--max-connections-per-client", "9"]}))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("sidecar.extraArgs"), "{err}");
    }

    #[test]
    fn extra_args_follow_the_webhooks_own() {
        let settings = SidecarSettings {
            extra_args: vec!["--auth-failures-per-address".into(), "60".into()],
            ..Default::default()
        };
        let args = sidecar_container(&settings).args.unwrap();
        assert_eq!(args[0], "--config-dir");
        assert_eq!(args[args.len() - 2..], ["--auth-failures-per-address", "60"]);
    }

    #[test]
    fn injects_a_native_sidecar_with_ports_volumes_probes_and_security() {
        let before = pod(APP_POD);
        let settings = SidecarSettings {
            resources: Some(
                serde_json::from_value(
                    json!({"requests": {"cpu": "20m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}}),
                )
                .unwrap(),
            ),
            image_pull_policy: Some("IfNotPresent".into()),
            ..Default::default()
        };
        let after = injected(&before, &BTreeMap::new(), &settings);
        let spec = after.spec.as_ref().unwrap();
        let name = config_object_name(before.metadata.labels.as_ref().unwrap());

        // The app container is untouched, probes included; the sidecar is the first init container.
        assert_eq!(spec.containers, before.spec.as_ref().unwrap().containers);
        let init = spec.init_containers.as_ref().unwrap();
        assert_eq!(init.len(), 1);
        let c = &init[0];
        assert_eq!(c.name, SIDECAR_NAME);
        assert_eq!(c.restart_policy.as_deref(), Some("Always"));
        assert_eq!(c.image.as_deref(), Some(settings.image.as_str()));
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(
            c.args.as_ref().unwrap().join(" "),
            "--config-dir /etc/portcullis/config --inbound 0.0.0.0:15080 --inbound-tls 0.0.0.0:15443 \
             --egress 127.0.0.1:15001 --admin 0.0.0.0:15090"
        );
        let ports: Vec<(&str, i32)> = c
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref().unwrap(), p.container_port))
            .collect();
        assert_eq!(ports, [(PORT_HTTP, 15080), (PORT_TLS, 15443), (PORT_ADMIN, 15090)]);
        for (probe, path) in [
            (&c.startup_probe, "/healthz"),
            (&c.readiness_probe, "/readyz"),
            (&c.liveness_probe, "/healthz"),
        ] {
            let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
            assert_eq!(get.path.as_deref(), Some(path));
            assert_eq!(get.port, IntOrString::String(PORT_ADMIN.into()));
        }
        assert_eq!(c.resources, settings.resources);
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.run_as_user, Some(65532));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.as_ref().unwrap().drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        let mounts: Vec<(&str, &str, Option<bool>)> = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only))
            .collect();
        assert_eq!(
            mounts,
            [
                (CONFIG_VOLUME, CONFIG_DIR, Some(true)),
                (PODINFO_VOLUME, PODINFO_DIR, Some(true))
            ]
        );

        // One projected volume with the group's ConfigMap and Secret; the downward API.
        let volumes = spec.volumes.as_ref().unwrap();
        assert_eq!(volumes.len(), 2);
        let sources = volumes[0].projected.as_ref().unwrap().sources.as_ref().unwrap();
        assert_eq!(volumes[0].name, CONFIG_VOLUME);
        assert_eq!(sources[0].config_map.as_ref().unwrap().name, name);
        assert_eq!(sources[0].config_map.as_ref().unwrap().optional, Some(false));
        assert_eq!(sources[1].secret.as_ref().unwrap().name, name);
        assert_eq!(volumes[1].name, PODINFO_VOLUME);
        let files: Vec<(&str, &str)> = volumes[1]
            .downward_api
            .as_ref()
            .unwrap()
            .items
            .iter()
            .flatten()
            .map(|f| (f.path.as_str(), f.field_ref.as_ref().unwrap().field_path.as_str()))
            .collect();
        assert_eq!(
            files,
            [("labels", "metadata.labels"), ("namespace", "metadata.namespace")]
        );

        // Marked, labels unchanged.
        assert_eq!(after.metadata.annotations.as_ref().unwrap()[INJECTED_ANNOTATION], name);
        assert_eq!(after.metadata.labels, before.metadata.labels);
    }

    fn store(url: &str, secret: &str) -> SidecarSettings {
        SidecarSettings {
            limits_store: LimitsStore {
                url: url.into(),
                password_secret: PasswordSecret {
                    name: secret.into(),
                    key: "redis-password".into(),
                },
                timeout: "250ms".into(),
            },
            extra_args: vec!["--drain-timeout".into(), "10s".into()],
            ..Default::default()
        }
    }

    /// Without a store URL the sidecar gets no store flag and no extra volume (in-memory
    /// limits), whatever else `limitsStore` says.
    #[test]
    fn without_a_limits_store_the_sidecar_counts_alone() {
        let after = injected(&pod(APP_POD), &BTreeMap::new(), &SidecarSettings::default());
        let spec = after.spec.as_ref().unwrap();
        let c = &spec.init_containers.as_ref().unwrap()[0];
        assert!(!c.args.as_ref().unwrap().iter().any(|a| a.starts_with("--limits-store")));
        let volumes: Vec<&str> = spec.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
        assert_eq!(volumes, [CONFIG_VOLUME, PODINFO_VOLUME]);
        assert_eq!(c.volume_mounts.as_ref().unwrap().len(), 2);
    }

    /// A store without a password: the URL and the timeout as flags, before `extraArgs`.
    #[test]
    fn a_limits_store_without_password_is_two_flags() {
        let settings = store(
            "redis-sentinel://sentinel-0.redis:26379,sentinel-1.redis:26379/limits",
            "",
        );
        let after = injected(&pod(APP_POD), &BTreeMap::new(), &settings);
        let spec = after.spec.as_ref().unwrap();
        let c = &spec.init_containers.as_ref().unwrap()[0];
        let args = c.args.as_ref().unwrap().join(" ");
        assert!(
            args.ends_with(
                "--admin 0.0.0.0:15090 \
                 --limits-store redis-sentinel://sentinel-0.redis:26379,sentinel-1.redis:26379/limits \
                 --limits-store-timeout 250ms --drain-timeout 10s"
            ),
            "{args}"
        );
        let volumes: Vec<&str> = spec.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
        assert_eq!(volumes, [CONFIG_VOLUME, PODINFO_VOLUME]);
    }

    /// With a password Secret: mounted read-only from the pod's namespace, its key as the
    /// file `--limits-store-password-file` names; the password itself is nowhere in the pod.
    #[test]
    fn a_limits_store_password_is_a_mounted_secret() {
        let settings = store("rediss://redis.cache:6380", "redis-auth");
        let before = pod(APP_POD);
        let after = injected(&before, &BTreeMap::new(), &settings);
        let spec = after.spec.as_ref().unwrap();
        let c = &spec.init_containers.as_ref().unwrap()[0];
        let args = c.args.as_ref().unwrap();
        let flag = args.iter().position(|a| a == "--limits-store-password-file").unwrap();
        assert_eq!(args[flag + 1], LIMITS_STORE_PASSWORD_FILE);
        assert_eq!(
            args[args.iter().position(|a| a == "--limits-store").unwrap() + 1],
            "rediss://redis.cache:6380"
        );
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == LIMITS_STORE_VOLUME)
            .unwrap();
        assert_eq!(mount.mount_path, LIMITS_STORE_DIR);
        assert_eq!(mount.read_only, Some(true));
        assert_eq!(
            std::path::Path::new(LIMITS_STORE_DIR).join("password"),
            std::path::Path::new(LIMITS_STORE_PASSWORD_FILE)
        );
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == LIMITS_STORE_VOLUME)
            .unwrap();
        let secret = volume.secret.as_ref().unwrap();
        // A Secret volume is always the pod's own namespace's.
        assert_eq!(secret.secret_name.as_deref(), Some("redis-auth"));
        assert_eq!(secret.optional, Some(false));
        let items: Vec<(&str, &str)> = secret
            .items
            .iter()
            .flatten()
            .map(|i| (i.key.as_str(), i.path.as_str()))
            .collect();
        assert_eq!(items, [("redis-password", "password")]);
        // Only the sidecar mounts it, and no environment variable carries anything of it.
        assert_eq!(spec.containers, before.spec.as_ref().unwrap().containers);
        let env = serde_json::to_string(&c.env).unwrap();
        assert!(!env.contains("redis-auth") && !env.contains("secretKeyRef"), "{env}");
        // A pod with its own volume of that name is refused.
        let taken = pod(&APP_POD.replace(
            "  containers:",
            "  volumes: [{name: portcullis-limits-store, emptyDir: {}}]\n  containers:",
        ));
        assert_eq!(
            inject(&taken, &BTreeMap::new(), &settings),
            Err(InjectError::VolumeTaken(LIMITS_STORE_VOLUME.into()))
        );
        assert!(inject(&taken, &BTreeMap::new(), &SidecarSettings::default()).is_ok());
        // The pod's other volumes stay; the Secret's is added after the sidecar's own.
        let with_volumes = pod(&APP_POD.replace(
            "  containers:",
            "  volumes: [{name: data, emptyDir: {}}]\n  containers:",
        ));
        let after = injected(&with_volumes, &BTreeMap::new(), &settings);
        let volumes: Vec<&str> = after
            .spec
            .as_ref()
            .unwrap()
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(volumes, ["data", CONFIG_VOLUME, PODINFO_VOLUME, LIMITS_STORE_VOLUME]);
    }

    /// The settings file carries `sidecar.limitsStore` as the chart renders it; values the
    /// sidecars would fail on stop the operator at start, naming the value.
    #[test]
    fn limits_store_settings_are_checked_at_start() {
        let file = |store: Value| {
            OperatorSettings::from_json(json!({"sidecar": {"limitsStore": store}}).to_string().as_bytes())
        };
        let s = file(
            json!({"url": "redis://redis:6379", "passwordSecret": {"name": "redis", "key": "pw"}, "timeout": "1s"}),
        )
        .unwrap();
        assert_eq!(
            s.sidecar.limits_store,
            LimitsStore {
                url: "redis://redis:6379".into(),
                password_secret: PasswordSecret {
                    name: "redis".into(),
                    key: "pw".into()
                },
                timeout: "1s".into(),
            }
        );
        // The chart's defaults: no store.
        let s =
            file(json!({"url": "", "passwordSecret": {"name": "", "key": "password"}, "timeout": "100ms"})).unwrap();
        assert_eq!(s.sidecar.limits_store, LimitsStore::default());
        for url in [
            "redis://r:6379/1",
            "rediss://r:6380",
            "redis-cluster://a:7000, b:7000",
            "rediss-cluster://a:7000",
            "redis-sentinel://s0:26379,s1:26379/limits",
            "rediss-sentinel://s0/limits",
        ] {
            file(json!({"url": url})).unwrap();
        }
        for (store, field, why) in [
            (
                json!({"url": "memcached://m:11211"}),
                "sidecar.limitsStore.url",
                "expected redis://",
            ),
            (
                json!({"url": "redis.cache:6379"}),
                "sidecar.limitsStore.url",
                "expected redis://",
            ),
            (
                json!({"url": "redis://"}),
                "sidecar.limitsStore.url",
                "expected redis://",
            ),
            (
                json!({"url": "redis://r:6379\n"}),
                "sidecar.limitsStore.url",
                "expected redis://",
            ),
            (
                json!({"url": "redis://r 1:6379"}),
                "sidecar.limitsStore.url",
                "expected redis://",
            ),
            (
                json!({"url": "redis-sentinel://s0:26379"}),
                "sidecar.limitsStore.url",
                "no master name",
            ),
            (
                json!({"url": "redis-sentinel://s0:26379/"}),
                "sidecar.limitsStore.url",
                "no master name",
            ),
            (
                json!({"url": "redis://r", "timeout": "0ms"}),
                "sidecar.limitsStore.timeout",
                "longer than zero",
            ),
            (
                json!({"url": "redis://r", "timeout": "1h"}),
                "sidecar.limitsStore.timeout",
                "like 100ms",
            ),
            (
                json!({"url": "redis://r", "timeout": "fast"}),
                "sidecar.limitsStore.timeout",
                "like 100ms",
            ),
            (
                json!({"url": "redis://r", "timeout": "-1s"}),
                "sidecar.limitsStore.timeout",
                "like 100ms",
            ),
            (
                json!({"url": "redis://r", "passwordSecret": {"name": "Redis_Auth"}}),
                "sidecar.limitsStore.passwordSecret.name",
                "not a Secret name",
            ),
            (
                json!({"url": "redis://r", "passwordSecret": {"name": "r", "key": "a/b"}}),
                "sidecar.limitsStore.passwordSecret.key",
                "not a Secret key",
            ),
            (
                json!({"url": "redis://r", "passwordSecret": {"name": "r", "key": ""}}),
                "sidecar.limitsStore.passwordSecret.key",
                "not a Secret key",
            ),
            (
                json!({"passwordSecret": {"name": "redis"}}),
                "sidecar.limitsStore.passwordSecret.name",
                "without sidecar.limitsStore.url",
            ),
        ] {
            let err = file(store.clone()).unwrap_err().to_string();
            assert!(err.starts_with(field) && err.contains(why), "{store}: {err}");
        }
        // A password in the URL is refused without being repeated.
        let err = file(json!({"url": "redis://:hunter2@r:6379"})).unwrap_err().to_string();
        assert!(
            err.starts_with("sidecar.limitsStore.url") && !err.contains("hunter2"),
            "{err}"
        );
        // Unknown keys are typos.
        assert!(file(json!({"url": "redis://r", "password": "x"})).is_err());
        // The flags are limitsStore's: extraArgs setting them would make the sidecar exit.
        let err = OperatorSettings::from_json(
            json!({"sidecar": {"limitsStore": {"url": "redis://r"}, "extraArgs": ["--limits-store-timeout=1s"]}})
                .to_string()
                .as_bytes(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("sidecar.extraArgs"), "{err}");
    }

    #[test]
    fn injection_is_idempotent() {
        let settings = SidecarSettings::default();
        let once = injected(&pod(APP_POD), &BTreeMap::new(), &settings);
        assert_eq!(inject(&once, &BTreeMap::new(), &settings), Ok(None));
        // Also when only the container is there (injected by hand or by an older webhook).
        let mut by_hand = once.clone();
        by_hand.metadata.annotations = None;
        assert_eq!(inject(&by_hand, &BTreeMap::new(), &settings), Ok(None));
    }

    #[test]
    fn existing_init_containers_volumes_and_annotations_are_kept() {
        let before = pod(r#"
metadata:
  labels: {app: x, portcullis.dev/inject: "true"}
  annotations: {team/owner: payments}
spec:
  initContainers: [{name: migrate, image: example/migrate}]
  containers: [{name: app, image: example/app}]
  volumes: [{name: data, emptyDir: {}}]
"#);
        let patch = inject(&before, &BTreeMap::new(), &SidecarSettings::default())
            .unwrap()
            .unwrap();
        let paths: Vec<String> = serde_json::to_value(&patch)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|op| op["path"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            paths,
            [
                "/metadata/annotations/portcullis.dev~1config-name",
                "/spec/volumes/-",
                "/spec/volumes/-",
                "/spec/initContainers/0"
            ]
        );
        let after = apply(&before, &patch);
        let spec = after.spec.unwrap();
        let init: Vec<&str> = spec.init_containers.iter().flatten().map(|c| c.name.as_str()).collect();
        assert_eq!(init, [SIDECAR_NAME, "migrate"]);
        let volumes: Vec<&str> = spec.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
        assert_eq!(volumes, ["data", CONFIG_VOLUME, PODINFO_VOLUME]);
        let annotations = after.metadata.annotations.unwrap();
        assert_eq!(annotations["team/owner"], "payments");
        assert!(annotations.contains_key(INJECTED_ANNOTATION));
    }

    #[test]
    fn namespace_label_injects_and_labels_the_pod_a_pod_label_opts_out() {
        let ns = labels(&[(INJECT_LABEL, "true")]);
        let settings = SidecarSettings::default();
        let unlabelled = pod("metadata: {labels: {app: web}}\nspec: {containers: [{name: app, image: x}]}");
        let after = injected(&unlabelled, &ns, &settings);
        let want = labels(&[("app", "web"), (INJECT_LABEL, "true")]);
        // Labelled so the operator compiles its group, and mounted under that group's name.
        assert_eq!(after.metadata.labels.as_ref(), Some(&want));
        assert_eq!(
            after.metadata.annotations.unwrap()[INJECTED_ANNOTATION],
            config_object_name(&want)
        );

        let no_labels = pod("spec: {containers: [{name: app, image: x}]}");
        let after = injected(&no_labels, &ns, &settings);
        assert_eq!(after.metadata.labels, Some(labels(&[(INJECT_LABEL, "true")])));

        let opted_out =
            pod("metadata: {labels: {portcullis.dev/inject: \"false\"}}\nspec: {containers: [{name: app, image: x}]}");
        assert_eq!(inject(&opted_out, &ns, &settings), Ok(None));
        assert_eq!(inject(&unlabelled, &BTreeMap::new(), &settings), Ok(None));
        assert_eq!(
            inject(&unlabelled, &labels(&[(INJECT_LABEL, "yes")]), &settings),
            Ok(None)
        );
    }

    #[test]
    fn conflicts_refuse_the_pod() {
        let settings = SidecarSettings::default();
        let taken = pod(
            "metadata: {labels: {portcullis.dev/inject: \"true\"}}\nspec: {containers: [{name: app, image: x, ports: [{containerPort: 15090}]}]}",
        );
        assert_eq!(
            inject(&taken, &BTreeMap::new(), &settings),
            Err(InjectError::PortTaken {
                container: "app".into(),
                port: 15090
            })
        );
        let named = pod(
            "metadata: {labels: {portcullis.dev/inject: \"true\"}}\nspec: {containers: [{name: app, image: x, ports: [{name: portcullis-http, containerPort: 80}]}]}",
        );
        assert!(matches!(
            inject(&named, &BTreeMap::new(), &settings),
            Err(InjectError::PortNameTaken { .. })
        ));
        let host = pod(
            "metadata: {labels: {portcullis.dev/inject: \"true\"}}\nspec: {hostNetwork: true, containers: [{name: app, image: x}]}",
        );
        assert_eq!(
            inject(&host, &BTreeMap::new(), &settings),
            Err(InjectError::HostNetwork)
        );
        let volume = pod(
            "metadata: {labels: {portcullis.dev/inject: \"true\"}}\nspec: {containers: [{name: app, image: x}], volumes: [{name: portcullis-config, emptyDir: {}}]}",
        );
        assert_eq!(
            inject(&volume, &BTreeMap::new(), &settings),
            Err(InjectError::VolumeTaken(CONFIG_VOLUME.into()))
        );
    }

    #[test]
    fn without_native_sidecars_the_sidecar_is_the_first_container() {
        let settings = SidecarSettings {
            native: false,
            ports: SidecarPorts {
                inbound: 8081,
                inbound_tls: 8443,
                egress: 8001,
                admin: 9091,
            },
            ..Default::default()
        };
        let after = injected(&pod(APP_POD), &BTreeMap::new(), &settings);
        let spec = after.spec.unwrap();
        assert!(spec.init_containers.is_none());
        let c = &spec.containers[0];
        assert_eq!(
            (c.name.as_str(), spec.containers[1].name.as_str()),
            (SIDECAR_NAME, "app")
        );
        assert_eq!(c.restart_policy, None);
        assert!(c.args.as_ref().unwrap().join(" ").contains("--admin 0.0.0.0:9091"));
        assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8081);
    }

    /// With `PORTCULLIS_INJECTED_PODS_DIR` set, writes injected pods there as JSON, for
    /// tests/suite.d/20-chart.sh to validate against the Kubernetes schemas.
    #[test]
    fn injected_pods_for_schema_validation() {
        let full = pod(r#"
apiVersion: v1
kind: Pod
metadata:
  name: finance-api-0
  namespace: prod
  labels: {app: finance-api}
spec:
  initContainers: [{name: migrate, image: example/migrate:1}]
  containers:
    - name: app
      image: example/finance-api:1
      ports: [{name: http, containerPort: 8080}]
      livenessProbe: {httpGet: {path: /healthz, port: http}}
  volumes: [{name: data, emptyDir: {}}]
"#);
        let ns = labels(&[(INJECT_LABEL, "true")]);
        let settings = SidecarSettings {
            resources: Some(
                serde_json::from_value(
                    json!({"requests": {"cpu": "20m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}}),
                )
                .unwrap(),
            ),
            image_pull_policy: Some("IfNotPresent".into()),
            ..Default::default()
        };
        let legacy = SidecarSettings {
            native: false,
            ..settings.clone()
        };
        let with_store = SidecarSettings {
            limits_store: store("redis://redis.cache:6379", "redis-auth").limits_store,
            ..settings.clone()
        };
        let mut pods = vec![
            (
                "native.json".to_owned(),
                injected(&pod(APP_POD), &BTreeMap::new(), &settings),
            ),
            ("native-by-namespace.json".to_owned(), injected(&full, &ns, &settings)),
            ("container.json".to_owned(), injected(&full, &ns, &legacy)),
            ("limits-store.json".to_owned(), injected(&full, &ns, &with_store)),
        ];
        // Settings files as the chart rendered them (tests/suite.d/20-chart.sh): each is read
        // as the operator reads it at start, and either injects `chart-NAME.json` or is
        // refused with the message in `chart-NAME.error`.
        if let (Some(from), Some(dir)) = (
            std::env::var_os("PORTCULLIS_CHART_SETTINGS_DIR"),
            std::env::var_os("PORTCULLIS_INJECTED_PODS_DIR"),
        ) {
            for entry in std::fs::read_dir(from).unwrap() {
                let path = entry.unwrap().path();
                let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
                match OperatorSettings::from_json(&std::fs::read(&path).unwrap()) {
                    Ok(s) => pods.push((
                        format!("chart-{stem}.json"),
                        injected(&pod(APP_POD), &BTreeMap::new(), &s.sidecar),
                    )),
                    Err(e) => {
                        let out = std::path::Path::new(&dir).join(format!("chart-{stem}.error"));
                        std::fs::write(out, e.to_string()).unwrap();
                    }
                }
            }
        }
        if let Some(dir) = std::env::var_os("PORTCULLIS_INJECTED_PODS_DIR") {
            for (file, pod) in &pods {
                // The API server names a generateName pod after admission; validators want a name.
                let mut pod = pod.clone();
                pod.metadata
                    .name
                    .get_or_insert_with(|| "finance-api-5d8f-x7k2p".to_owned());
                let path = std::path::Path::new(&dir).join(file);
                std::fs::write(&path, serde_json::to_vec_pretty(&pod).unwrap()).unwrap();
            }
        }
        for (_, pod) in &pods {
            assert_eq!(serde_json::to_value(pod).unwrap()["kind"], "Pod");
        }
    }

    #[test]
    fn settings_file_as_the_chart_renders_it() {
        let json = br#"{
          "orgAllowance": {"requestsPerMinute": 600},
          "trustedProxies": ["10.0.0.0/8"],
          "sidecar": {
            "image": "registry.example.com/portcullis-sidecar:1.2.3",
            "imagePullPolicy": "Always",
            "ports": {"admin": 9091, "egress": 8001, "inbound": 8081, "inboundTls": 8443},
            "resources": {"limits": {"memory": "256Mi"}, "requests": {"cpu": "50m"}},
            "runAsUser": 10002,
            "native": true,
            "extraArgs": ["--auth-failures-per-address", "60"]
          },
          "webhook": {"service": "pc-webhook", "namespace": "portcullis-system",
                      "mutatingWebhookConfiguration": "pc", "validatingWebhookConfiguration": "pc"}
        }"#;
        let s = OperatorSettings::from_json(json).unwrap();
        assert_eq!(s.org_allowance.requests_per_minute, Some(600));
        assert_eq!(s.trusted_proxies, ["10.0.0.0/8".parse::<ipnet::IpNet>().unwrap()]);
        assert_eq!(s.sidecar.image, "registry.example.com/portcullis-sidecar:1.2.3");
        assert_eq!(s.sidecar.ports.inbound_tls, 8443);
        assert_eq!(s.sidecar.run_as_user, 10002);
        assert_eq!(s.sidecar.extra_args, ["--auth-failures-per-address", "60"]);
        assert_eq!(s.webhook.service, "pc-webhook");
        let defaults = OperatorSettings::from_json(br#"{"orgAllowance": {"requestsPerMinute": null}}"#).unwrap();
        assert_eq!(defaults, OperatorSettings::default());
        assert_eq!(defaults.sidecar.ports, SidecarPorts::default());
    }

    #[test]
    fn ca_bundle_patch_sets_every_webhook_once() {
        let config = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "portcullis"},
            "webhooks": MUTATING_WEBHOOKS.iter().map(|name| json!({
                "name": name,
                "clientConfig": {"service": {"name": "portcullis-webhook", "namespace": "portcullis-system", "path": MUTATE_PODS_PATH}},
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None"
            })).collect::<Vec<_>>()
        });
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let patch = ca_bundle_patch(&config, pem).expect("a patch");
        let mut patched = config.clone();
        json_patch::patch(&mut patched, &patch.0).unwrap();
        use base64::Engine as _;
        for webhook in patched["webhooks"].as_array().unwrap() {
            let bundle = webhook["clientConfig"]["caBundle"].as_str().unwrap();
            assert_eq!(
                base64::engine::general_purpose::STANDARD.decode(bundle).unwrap(),
                pem.as_bytes()
            );
            assert_eq!(webhook["clientConfig"]["service"]["name"], "portcullis-webhook");
        }
        // Current: nothing to do. Rotated: patched again.
        assert_eq!(ca_bundle_patch(&patched, pem), None);
        assert!(ca_bundle_patch(&patched, "another bundle").is_some());
        // A reordered configuration makes the guarded patch fail rather than hit the wrong webhook.
        let mut reordered = config.clone();
        reordered["webhooks"].as_array_mut().unwrap().reverse();
        assert!(json_patch::patch(&mut reordered, &patch.0).is_err());
        assert_eq!(
            ca_bundle_patch(&json!({"kind": "MutatingWebhookConfiguration"}), pem),
            None
        );
    }

    #[test]
    fn serving_certificate_covers_the_service_names() {
        let w = WebhookSettings {
            service: "portcullis-webhook".into(),
            namespace: "portcullis-system".into(),
            ..Default::default()
        };
        assert_eq!(
            w.serving_hosts(),
            [
                "portcullis-webhook",
                "portcullis-webhook.portcullis-system",
                "portcullis-webhook.portcullis-system.svc",
                "portcullis-webhook.portcullis-system.svc.cluster.local"
            ]
        );
    }

    // --- validation -----------------------------------------------------------------------

    const PROFILES: &str = r#"
apiVersion: portcullis.dev/v1alpha1
kind: SecurityProfile
metadata: {name: accounting, namespace: prod}
spec: {type: Basic, basic: {secretRef: {name: accounting-user}}}
---
apiVersion: portcullis.dev/v1alpha1
kind: SecurityProfile
metadata: {name: payroll, namespace: prod}
spec: {type: Basic, basic: {secretRef: {name: payroll-user}}}
---
apiVersion: portcullis.dev/v1alpha1
kind: SecurityProfile
metadata: {name: readers, namespace: prod}
spec: {type: OAuth2, oauth2: {provider: Generic, issuer: "https://idp.example.com", jwksUri: "https://idp.example.com/jwks"}}
---
apiVersion: portcullis.dev/v1alpha1
kind: SecurityProfile
metadata: {name: writers, namespace: prod}
spec: {type: OAuth2, oauth2: {provider: Generic, issuer: "https://idp.example.com", jwksUri: "https://idp.example.com/jwks"}}
---
apiVersion: portcullis.dev/v1alpha1
kind: SecurityProfile
metadata: {name: public, namespace: prod}
spec: {type: Anonymous}
---
apiVersion: portcullis.dev/v1alpha1
kind: SecurityProfile
metadata: {name: open, namespace: prod}
spec: {type: Anonymous}
---
apiVersion: portcullis.dev/v1alpha1
kind: SecurityProfile
metadata: {name: elsewhere, namespace: staging}
spec: {type: Anonymous}
"#;

    const SECRETS: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: accounting-user, namespace: prod}
type: kubernetes.io/basic-auth
stringData: {username: alice, password: wonderland}
---
apiVersion: v1
kind: Secret
metadata: {name: payroll-user, namespace: prod}
type: kubernetes.io/basic-auth
stringData: {username: bob, password: builder}
"#;

    fn docs<T: serde::de::DeserializeOwned>(yaml: &str) -> Vec<T> {
        serde_yaml::Deserializer::from_str(yaml)
            .map(|d| T::deserialize(d).expect("test object parses"))
            .collect()
    }

    fn route(profiles: &[&str]) -> ApiRoute {
        let refs: Vec<Value> = profiles.iter().map(|p| json!({"name": p})).collect();
        serde_json::from_value(json!({
            "apiVersion": "portcullis.dev/v1alpha1",
            "kind": "ApiRoute",
            "metadata": {"name": "finance", "namespace": NS},
            "spec": {
                "workloadSelector": {"matchLabels": {"app": "finance-api"}},
                "pathPrefix": "/finance",
                "profiles": refs,
                "backend": {"port": 8080}
            }
        }))
        .unwrap()
    }

    /// The controller's status message for the route: the compiler's verdict.
    fn controller_message(route: &ApiRoute) -> Option<String> {
        let profiles: Vec<SecurityProfile> = docs(PROFILES);
        let profiles: Vec<SecurityProfile> = profiles
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(NS))
            .collect();
        let secrets: Vec<Secret> = docs(SECRETS);
        let out = compile::compile(&Inputs {
            namespace: NS,
            profiles: &profiles,
            routes: std::slice::from_ref(route),
            secrets: &secrets,
            org_allowance: Some(100),
            trusted_proxies: &[],
            limits_store_configured: false,
            workload_labels: None,
        });
        match &out.routes["finance"] {
            Verdict::Accepted => None,
            Verdict::Rejected { message, .. } => Some(message.clone()),
        }
    }

    fn verdict(profiles: &[&str]) -> Result<(), String> {
        validate_route(
            &route(profiles),
            &docs::<SecurityProfile>(PROFILES),
            &docs::<Secret>(SECRETS),
            &[],
            false,
        )
    }

    #[test]
    fn routes_breaking_the_profile_rules_are_refused_with_the_status_message() {
        let cases: [(&[&str], &str); 6] = [
            (
                &["accounting", "readers"],
                "spec.profiles[1].name: cannot mix Basic and OAuth2 profiles",
            ),
            (
                &["public", "accounting"],
                "spec.profiles[1].name: cannot mix Anonymous and Basic profiles",
            ),
            (
                &["readers", "writers"],
                "spec.profiles[1].name: at most one OAuth2 profile per route, found readers, writers",
            ),
            (
                &["public", "open"],
                "spec.profiles[1].name: at most one Anonymous profile per route, found public, open",
            ),
            (
                &["accounting", "accounting"],
                "spec.profiles[1].name: profile \"accounting\" is listed more than once",
            ),
            (
                &["accounting", "ghost"],
                "spec.profiles[1].name: SecurityProfile \"ghost\" not found in namespace prod",
            ),
        ];
        for (profiles, want) in cases {
            let message = verdict(profiles).expect_err(want);
            assert!(message.starts_with(want), "{profiles:?}: {message}");
            assert_eq!(Some(message), controller_message(&route(profiles)), "{profiles:?}");
        }
        // A profile of another namespace is never used.
        let message = verdict(&["elsewhere"]).unwrap_err();
        assert_eq!(
            message,
            "spec.profiles[0].name: SecurityProfile \"elsewhere\" not found in namespace prod"
        );
    }

    #[test]
    fn valid_routes_and_problems_that_depend_on_ordering_are_admitted() {
        for ok in [&["accounting", "payroll"][..], &["readers"], &["public"], &[]] {
            assert_eq!(verdict(ok), Ok(()), "{ok:?}");
            assert_eq!(controller_message(&route(ok)), None);
        }
        // The profile's Secret is not there yet: the route waits in its status, not at the door.
        let no_secrets = validate_route(
            &route(&["accounting"]),
            &docs::<SecurityProfile>(PROFILES),
            &[],
            &[],
            false,
        );
        assert_eq!(no_secrets, Ok(()));
        // Likewise the route's own TLS Secret.
        let mut with_tls = route(&["readers"]);
        with_tls.spec.tls = Some(serde_json::from_value(json!({"secretName": "finance-tls"})).unwrap());
        assert_eq!(
            validate_route(&with_tls, &docs::<SecurityProfile>(PROFILES), &[], &[], false),
            Ok(())
        );
        assert!(controller_message(&with_tls).unwrap().contains("finance-tls"));
    }

    #[test]
    fn invalid_fields_are_refused_like_the_status_says() {
        let mut bad = route(&["readers"]);
        bad.spec.path_prefix = "finance".into();
        let message = validate_route(&bad, &docs::<SecurityProfile>(PROFILES), &[], &[], false).unwrap_err();
        assert!(message.starts_with("spec.pathPrefix: "), "{message}");
        assert_eq!(Some(message), controller_message(&bad));
    }

    // --- AdmissionReview --------------------------------------------------------------------

    struct Fake;
    impl ClusterView for Fake {
        fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
            if namespace == "injected" {
                labels(&[(INJECT_LABEL, "true")])
            } else {
                BTreeMap::new()
            }
        }
        fn profiles(&self, namespace: &str) -> Vec<SecurityProfile> {
            docs::<SecurityProfile>(PROFILES)
                .into_iter()
                .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
                .collect()
        }
        fn secrets(&self, _: &str) -> Vec<Secret> {
            docs(SECRETS)
        }
        fn routes(&self, namespace: &str) -> Vec<ApiRoute> {
            docs::<ApiRoute>(STORED_ROUTES)
                .into_iter()
                .filter(|r| r.metadata.namespace.as_deref() == Some(namespace))
                .collect()
        }
        fn access(&self, check: &AccessCheck) -> Access {
            if check.name == "unanswered" {
                return Access::Failed("the SubjectAccessReview timed out".into());
            }
            if FAKE_ALLOWED
                .iter()
                .any(|(verb, name)| check.verb == *verb && check.name == *name)
            {
                Access::Allowed
            } else {
                Access::Denied
            }
        }
    }

    /// What the review's user may do in `Fake` (verb, object name); a check on `unanswered`
    /// fails.
    const FAKE_ALLOWED: &[(&str, &str)] = &[("get", "finance-tls"), ("get", "accounting-user"), ("update", "shop")];

    /// The ApiRoutes `Fake` has stored: a shop and an internal API on the finance workload.
    const STORED_ROUTES: &str = r#"
apiVersion: portcullis.dev/v1alpha1
kind: ApiRoute
metadata:
  name: shop
  namespace: prod
  creationTimestamp: "2026-01-01T00:00:00Z"
  labels: {portcullis.dev/owner: team-shop}
spec: {workloadSelector: {matchLabels: {app: shop}}, pathPrefix: /shop, backend: {port: 8080}}
---
apiVersion: portcullis.dev/v1alpha1
kind: ApiRoute
metadata:
  name: internal
  namespace: prod
  creationTimestamp: "2026-01-01T00:00:00Z"
  labels: {portcullis.dev/owner: team-finance}
spec: {workloadSelector: {matchLabels: {app: finance-api}}, pathPrefix: /internal, backend: {port: 8080}}
"#;

    fn review_body(kind: Value, resource: &str, namespace: &str, operation: &str, object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": kind,
                "resource": {"group": kind["group"], "version": kind["version"], "resource": resource},
                "name": object["metadata"]["name"].as_str().unwrap_or(""),
                "namespace": namespace,
                "operation": operation,
                "userInfo": {"username": "admin", "groups": ["system:authenticated"]},
                "object": object,
                "oldObject": null,
                "dryRun": false
            }
        }))
        .unwrap()
    }

    fn answer(body: &[u8]) -> Value {
        let out = handle_review(body, &SidecarSettings::default(), &Fake);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(v["kind"], "AdmissionReview");
        v["response"].clone()
    }

    #[test]
    fn pod_reviews_get_a_base64_json_patch() {
        let object = serde_json::to_value(pod(APP_POD)).unwrap();
        let pod_kind = json!({"group": "", "version": "v1", "kind": "Pod"});
        let r = answer(&review_body(pod_kind.clone(), "pods", NS, "CREATE", object.clone()));
        assert_eq!(r["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(r["allowed"], true);
        assert_eq!(r["patchType"], "JSONPatch");
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(r["patch"].as_str().expect("base64 string"))
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            patch,
            inject(&pod(APP_POD), &BTreeMap::new(), &SidecarSettings::default())
                .unwrap()
                .unwrap()
        );

        // Not asked for: allowed, no patch. Namespace label: patched.
        let plain = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "x"}]}});
        let r = answer(&review_body(pod_kind.clone(), "pods", NS, "CREATE", plain.clone()));
        assert_eq!((r["allowed"].clone(), r.get("patch")), (json!(true), None));
        let r = answer(&review_body(pod_kind.clone(), "pods", "injected", "CREATE", plain));
        assert!(r["patch"].is_string());

        // A conflict refuses the pod with the reason.
        let mut taken = object;
        taken["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(15080);
        let r = answer(&review_body(pod_kind, "pods", NS, "CREATE", taken));
        assert_eq!(r["allowed"], false);
        assert!(r["status"]["message"].as_str().unwrap().contains("port 15080"), "{r}");
    }

    #[test]
    fn apiroute_reviews_are_validated() {
        let kind = json!({"group": "portcullis.dev", "version": "v1alpha1", "kind": "ApiRoute"});
        let bad = serde_json::to_value(route(&["accounting", "readers"])).unwrap();
        let r = answer(&review_body(kind.clone(), "apiroutes", NS, "CREATE", bad.clone()));
        assert_eq!(r["allowed"], false);
        assert_eq!(
            r["status"]["message"].as_str(),
            controller_message(&route(&["accounting", "readers"])).as_deref()
        );
        let r = answer(&review_body(kind.clone(), "apiroutes", NS, "UPDATE", bad.clone()));
        assert_eq!(r["allowed"], false);
        let r = answer(&review_body(kind.clone(), "apiroutes", NS, "DELETE", bad));
        assert_eq!(r["allowed"], true);
        let good = serde_json::to_value(route(&["accounting", "payroll"])).unwrap();
        let r = answer(&review_body(kind, "apiroutes", NS, "CREATE", good));
        assert_eq!(r["allowed"], true);
    }

    fn route_kind() -> Value {
        json!({"group": "portcullis.dev", "version": "v1alpha1", "kind": "ApiRoute"})
    }

    /// A route review by user mallory: the response.
    fn review_route(route: &ApiRoute, operation: &str) -> Value {
        let mut body: Value =
            serde_json::from_slice(&review_body(route_kind(), "apiroutes", NS, operation, to_value(route))).unwrap();
        body["request"]["userInfo"] = json!({"username": "mallory", "groups": ["team-web"], "uid": "42"});
        answer(&serde_json::to_vec(&body).unwrap())
    }

    fn gateway_route(secret: &str) -> ApiRoute {
        let mut r = route(&["readers"]);
        r.spec.backend = serde_json::from_value(json!({"origin": {"url": "https://attacker.example.net",
            "auth": {"basic": {"secretRef": {"name": secret}}}}}))
        .unwrap();
        r
    }

    #[test]
    fn a_route_naming_a_secret_its_author_may_not_read_is_refused() {
        let r = review_route(&gateway_route("payroll-user"), "CREATE");
        assert_eq!(r["allowed"], false, "{r}");
        let message = r["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(
                "spec.backend.origin.auth.basic.secretRef.name: user \"mallory\" may not get Secret \"payroll-user\" \
                 in namespace prod"
            ),
            "{message}"
        );
        // On an update too: whoever changes where the credentials go must be able to read them.
        assert_eq!(review_route(&gateway_route("payroll-user"), "UPDATE")["allowed"], false);
        // A Secret the user may read is fine; so is the route's serving certificate.
        assert_eq!(
            review_route(&gateway_route("accounting-user"), "CREATE")["allowed"],
            true
        );
        let mut tls = route(&["readers"]);
        tls.spec.tls = Some(serde_json::from_value(json!({"secretName": "finance-tls"})).unwrap());
        assert_eq!(review_route(&tls, "CREATE")["allowed"], true);
        tls.spec.tls = Some(serde_json::from_value(json!({"secretName": "payroll-user"})).unwrap());
        let r = review_route(&tls, "CREATE");
        assert!(
            r["status"]["message"]
                .as_str()
                .unwrap()
                .starts_with("spec.tls.secretName: user \"mallory\""),
            "{r}"
        );
        // Every kind of Secret reference is checked.
        let r = route_requirements(
            &serde_json::from_value(json!({
                "apiVersion": "portcullis.dev/v1alpha1", "kind": "ApiRoute",
                "metadata": {"name": "all", "namespace": NS},
                "spec": {"workloadSelector": {}, "tls": {"issue": true}, "backend": {"origin": {
                    "url": "https://o.example.com",
                    "tls": {"mode": "Mutual", "caSecretRef": {"name": "ca"}, "clientCertificate": {"secretName": "cc"}},
                    "auth": {"oauth2ClientCredentials": {"tokenUrl": "https://idp", "clientSecretRef": {"name": "oc"}}}}}}
            }))
            .unwrap(),
            &[],
        );
        let named: Vec<(&str, &str)> = r.iter().map(|r| (r.field.as_str(), r.check.name.as_str())).collect();
        assert_eq!(
            named,
            [
                ("spec.backend.origin.tls.caSecretRef.name", "ca"),
                ("spec.backend.origin.tls.clientCertificate.secretName", "cc"),
                (
                    "spec.backend.origin.auth.oauth2ClientCredentials.clientSecretRef.name",
                    "oc"
                ),
            ]
        );
    }

    #[test]
    fn access_that_cannot_be_checked_refuses_the_object() {
        let r = review_route(&gateway_route("unanswered"), "CREATE");
        assert_eq!(r["allowed"], false);
        let message = r["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("cannot check whether user \"mallory\" may get Secret \"unanswered\""),
            "{message}"
        );
        assert!(message.contains("timed out"), "{message}");
    }

    #[test]
    fn a_profile_naming_a_secret_its_author_may_not_read_is_refused() {
        let kind = json!({"group": "portcullis.dev", "version": "v1alpha1", "kind": "SecurityProfile"});
        let profile = |secret: &str| {
            json!({"apiVersion": "portcullis.dev/v1alpha1", "kind": "SecurityProfile",
                   "metadata": {"name": "keys", "namespace": NS},
                   "spec": {"type": "ApiKey", "apiKey": {"secretRef": {"name": secret}}}})
        };
        let r = answer(&review_body(
            kind.clone(),
            "securityprofiles",
            NS,
            "CREATE",
            profile("payroll-user"),
        ));
        assert_eq!(r["allowed"], false);
        assert!(
            r["status"]["message"]
                .as_str()
                .unwrap()
                .starts_with("spec.apiKey.secretRef.name: user \"admin\" may not get Secret \"payroll-user\""),
            "{r}"
        );
        let r = answer(&review_body(
            kind.clone(),
            "securityprofiles",
            NS,
            "UPDATE",
            profile("accounting-user"),
        ));
        assert_eq!(r["allowed"], true);
        let r = answer(&review_body(
            kind,
            "securityprofiles",
            NS,
            "DELETE",
            profile("payroll-user"),
        ));
        assert_eq!(r["allowed"], true);
    }

    #[test]
    fn a_profile_with_a_quota_is_refused_without_a_limits_store_and_admitted_with_one() {
        let kind = json!({"group": "portcullis.dev", "version": "v1alpha1", "kind": "SecurityProfile"});
        let profile = |rate_limit: Value| {
            json!({"apiVersion": "portcullis.dev/v1alpha1", "kind": "SecurityProfile",
                   "metadata": {"name": "metered", "namespace": NS},
                   "spec": {"type": "Anonymous", "rateLimit": rate_limit}})
        };
        let quota = profile(json!({"per": "Consumer", "quota": {"requests": 1000, "period": "Day"}}));
        let review = |settings: &SidecarSettings, object: &Value, operation: &str| {
            let body = review_body(kind.clone(), "securityprofiles", NS, operation, object.clone());
            let v: Value = serde_json::from_slice(&handle_review(&body, settings, &Fake)).unwrap();
            v["response"].clone()
        };
        let none = SidecarSettings::default();
        let with_store = store("redis://redis.cache:6379", "");
        for operation in ["CREATE", "UPDATE"] {
            let r = review(&none, &quota, operation);
            assert_eq!(r["allowed"], false, "{r}");
            let message = r["status"]["message"].as_str().unwrap();
            assert_eq!(
                message,
                "spec.rateLimit.quota: SecurityProfile prod/metered sets a quota, which only a shared limits store \
                 counts, and the operator has none configured: set the Helm value sidecar.limitsStore.url, or \
                 remove spec.rateLimit.quota"
            );
            // The status the controller would write says the same.
            let object: SecurityProfile = serde_json::from_value(quota.clone()).unwrap();
            let out = compile::compile(&Inputs {
                namespace: NS,
                profiles: &[object],
                routes: &[],
                secrets: &[],
                org_allowance: None,
                trusted_proxies: &[],
                limits_store_configured: false,
                workload_labels: None,
            });
            assert!(
                matches!(&out.profiles["metered"], Verdict::Rejected { reason: "InvalidSpec", message: m, .. } if m == message)
            );

            assert_eq!(review(&with_store, &quota, operation)["allowed"], true);
        }
        // A per-minute limit needs no store; deleting is never refused.
        let per_minute = profile(json!({"requestsPerMinute": 60, "per": "Consumer"}));
        assert_eq!(review(&none, &per_minute, "CREATE")["allowed"], true);
        assert_eq!(review(&none, &quota, "DELETE")["allowed"], true);
        // Neither field: refused with or without a store (the CRD's rule says so too).
        let neither = profile(json!({"per": "Consumer"}));
        let r = review(&with_store, &neither, "CREATE");
        assert_eq!(r["allowed"], false);
        assert!(
            r["status"]["message"].as_str().unwrap().starts_with("spec.rateLimit: "),
            "{r}"
        );
    }

    #[test]
    fn a_route_over_an_older_routes_paths_is_refused_like_the_status_says() {
        let mut takeover = route(&["public"]);
        takeover.metadata.name = Some("takeover".into());
        takeover.spec.workload_selector = serde_json::from_value(json!({"matchLabels": {"app": "shop"}})).unwrap();
        takeover.spec.path_prefix = "/shop/checkout".into();
        let stored = docs::<ApiRoute>(STORED_ROUTES);
        let message = validate_route(&takeover, &docs::<SecurityProfile>(PROFILES), &[], &stored, false).unwrap_err();
        assert!(message.starts_with("spec.pathPrefix: \"/shop/checkout\""), "{message}");
        assert!(message.contains("overlaps ApiRoute \"shop\""), "{message}");
        let r = review_route(&takeover, "CREATE");
        assert_eq!(r["status"]["message"].as_str(), Some(message.as_str()));
        // The controller says the same.
        let profiles: Vec<SecurityProfile> = docs::<SecurityProfile>(PROFILES)
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(NS))
            .collect();
        let mut routes = stored.clone();
        routes.push(takeover.clone());
        let out = compile::compile(&Inputs {
            namespace: NS,
            profiles: &profiles,
            routes: &routes,
            secrets: &[],
            org_allowance: None,
            trusted_proxies: &[],
            limits_store_configured: false,
            workload_labels: None,
        });
        assert!(matches!(&out.routes["takeover"], Verdict::Rejected { message: m, .. } if *m == message));

        // Claiming the shop's owner: allowed only to a user who may update ApiRoute shop.
        let claimed = |owner: &str, mut r: ApiRoute| {
            r.metadata.labels = Some([(OWNER_LABEL.to_string(), owner.to_string())].into());
            r
        };
        assert_eq!(
            review_route(&claimed("team-shop", takeover.clone()), "CREATE")["allowed"],
            true
        );
        let mut on_finance = takeover.clone();
        on_finance.spec.workload_selector =
            serde_json::from_value(json!({"matchLabels": {"app": "finance-api"}})).unwrap();
        on_finance.spec.path_prefix = "/internal/admin".into();
        let r = review_route(&claimed("team-finance", on_finance), "CREATE");
        assert_eq!(r["allowed"], false);
        let message = r["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(
                "metadata.labels[portcullis.dev/owner]: user \"mallory\" may not update ApiRoute \"internal\""
            ),
            "{message}"
        );
    }

    #[test]
    fn an_older_route_widened_over_a_newer_routes_paths_is_refused() {
        // An older route of another team, on the shop's pods.
        let legacy = |prefix: &str, allow: Option<&str>| {
            let mut r: ApiRoute = serde_json::from_value(json!({
                "apiVersion": "portcullis.dev/v1alpha1", "kind": "ApiRoute",
                "metadata": {"name": "legacy", "namespace": NS, "creationTimestamp": "2025-01-01T00:00:00Z",
                             "labels": {OWNER_LABEL: "team-web"}},
                "spec": {"workloadSelector": {"matchLabels": {"app": "shop"}}, "pathPrefix": prefix,
                         "backend": {"port": 9090}}
            }))
            .unwrap();
            if let Some(list) = allow {
                r.metadata.annotations =
                    Some([(compile::ALLOW_OVERLAP_ANNOTATION.to_string(), list.to_string())].into());
            }
            r
        };
        let update = |old: &ApiRoute, new: &ApiRoute| {
            let mut body: Value =
                serde_json::from_slice(&review_body(route_kind(), "apiroutes", NS, "UPDATE", to_value(new))).unwrap();
            body["request"]["oldObject"] = to_value(old);
            answer(&serde_json::to_vec(&body).unwrap())
        };
        // Widened from /legacy to /: it would take the shop's /shop, and the shop would be refused.
        let r = update(&legacy("/legacy", None), &legacy("/", None));
        assert_eq!(r["allowed"], false, "{r}");
        let message = r["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("spec.pathPrefix: \"/\" would now overlap ApiRoute \"shop\""),
            "{message}"
        );
        // Allowing the shop, or an overlap that was there before: fine.
        assert_eq!(
            update(&legacy("/legacy", None), &legacy("/", Some("shop")))["allowed"],
            true
        );
        assert_eq!(update(&legacy("/", None), &legacy("/", None))["allowed"], true);
        // Withdrawing consent is the older owner's right.
        assert_eq!(update(&legacy("/", Some("shop")), &legacy("/", None))["allowed"], true);
        assert_eq!(
            compile::taken_over(&legacy("/", None), Some(&legacy("/x", None)), &docs(STORED_ROUTES)),
            ["shop"]
        );
    }

    #[test]
    fn a_sign_in_profile_on_a_route_without_https_gets_a_warning() {
        let staff: SecurityProfile = serde_yaml::from_str(
            r#"
apiVersion: portcullis.dev/v1alpha1
kind: SecurityProfile
metadata: {name: staff, namespace: prod}
spec:
  type: OAuth2
  oauth2:
    provider: Google
    login: {clientId: c, clientSecretRef: {name: google-oauth}}
"#,
        )
        .unwrap();
        let mut profiles = docs::<SecurityProfile>(PROFILES);
        profiles.push(staff);
        let plain = route(&["readers", "staff"]);
        let warnings = sign_in_warnings(&plain, &profiles);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("ApiRoute \"finance\": SecurityProfile \"staff\" signs people in"),
            "{}",
            warnings[0]
        );
        assert!(warnings[0].contains("spec.sslOnly nor spec.tls"), "{}", warnings[0]);
        // HTTPS on the route, or no sign-in profile: nothing to say.
        let mut ssl_only = plain.clone();
        ssl_only.spec.ssl_only = true;
        let mut with_tls = plain.clone();
        with_tls.spec.tls = Some(serde_json::from_value(json!({"issue": true})).unwrap());
        for quiet in [ssl_only, with_tls, route(&["readers", "accounting"])] {
            assert_eq!(sign_in_warnings(&quiet, &profiles), Vec::<String>::new());
        }
    }

    #[test]
    fn a_delegating_builtin_provider_is_told_its_grants_are_per_sidecar() {
        let yaml = |delegation: &str| -> SecurityProfile {
            serde_yaml::from_str(&format!(
                r#"
apiVersion: portcullis.dev/v1alpha1
kind: SecurityProfile
metadata: {{name: idp, namespace: prod}}
spec:
  type: OAuth2
  oauth2:
    provider: Builtin
    builtin:
      clientsSecretRef: {{name: clients}}
{delegation}"#
            ))
            .unwrap()
        };
        let delegating =
            yaml("      delegation: {consentUrl: 'https://owner.example/consent', ownerSecretRef: {name: owner}}");
        let warnings = delegation_warnings(&delegating, false);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with(
            "SecurityProfile \"idp\": spec.oauth2.builtin.delegation without a shared limits store keeps grants"
        ));
        assert!(warnings[0].contains("configure sidecar.limitsStore"), "{}", warnings[0]);
        // With a shared store, or without delegation: nothing to say.
        assert_eq!(delegation_warnings(&delegating, true), Vec::<String>::new());
        assert_eq!(delegation_warnings(&yaml(""), false), Vec::<String>::new());
    }

    #[test]
    fn a_pod_whose_app_port_is_a_route_backend_gets_a_warning() {
        let pod_kind = json!({"group": "", "version": "v1", "kind": "Pod"});
        let mut object = serde_json::to_value(pod(APP_POD)).unwrap();
        let r = answer(&review_body(pod_kind.clone(), "pods", NS, "CREATE", object.clone()));
        assert_eq!(r["allowed"], true);
        let warnings = r["warnings"].as_array().expect("warnings");
        assert_eq!(warnings.len(), 1, "{r}");
        let warning = warnings[0].as_str().unwrap();
        assert!(
            warning.starts_with("container \"app\" exposes port 8080, the backend port of ApiRoute \"internal\""),
            "{warning}"
        );
        assert!(warning.contains("127.0.0.1:8080"), "{warning}");
        // Another port: nothing to say.
        object["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(9000);
        let r = answer(&review_body(pod_kind, "pods", NS, "CREATE", object));
        assert_eq!(r["allowed"], true);
        assert!(r.get("warnings").is_none_or(Value::is_null), "{r}");
    }

    #[test]
    fn garbage_is_refused_not_a_panic() {
        for body in [
            &b"not json"[..],
            b"{}",
            b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}",
        ] {
            let v: Value = serde_json::from_slice(&handle_review(body, &SidecarSettings::default(), &Fake)).unwrap();
            assert_eq!(v["response"]["allowed"], false, "{v}");
        }
    }
}
