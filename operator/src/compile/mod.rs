//! The compiler: a pure function from one namespace's SecurityProfiles, ApiRoutes and
//! Secrets (plus the org allowance and, optionally, a pod's labels) to
//! - the non-secret sidecar configuration (a ConfigMap's `config.json`),
//! - the secret material (a Secret's `secrets.json`),
//! - a verdict per object, which the controller turns into conditions and `render` into
//!   its exit status.
//!
//! An invalid profile or route is left out of the output with a verdict naming the field;
//! the valid ones are still compiled, so one bad object never stops the others from being
//! served. No secret value ever reaches the configuration or a message.
//!
//! Both files carry a `generation`: a MAC of their content under a [`GenerationKey`]
//! ([`generation`]), which names the content without revealing anything about it.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use portcullis_api::{ApiRoute, SecurityProfile};
use portcullis_config::{Loaded, SCHEMA_VERSION, SecretMaterial, SidecarConfig};

pub mod generation;
pub mod login;
mod overlap;
mod profile;
mod route;
mod secrets;
mod selector;
pub mod token_keys;

pub use generation::GenerationKey;
pub use overlap::{ALLOW_OVERLAP_ANNOTATION, OWNER_LABEL, shared_owner_routes, taken_over};
pub use route::{issued_client_secret, issued_serving_secret};
pub use secrets::{ALLOWED_ORIGINS_ANNOTATION, ALLOWED_PROFILES_ANNOTATION, ALLOWED_ROUTES_ANNOTATION};
pub use selector::{check_selector, selector_matches};

/// Condition reasons, one per kind of problem (`Accepted=False` carries one of these).
pub mod reason {
    pub const ACCEPTED: &str = "Accepted";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// A route names, as credentials it would send to its origin, a Secret that does not
    /// allow it (`portcullis.dev/allowed-routes`, `portcullis.dev/allowed-origins`).
    pub const SECRET_NOT_ALLOWED: &str = "SecretNotAllowed";
    pub const WRONG_SECRET_TYPE: &str = "WrongSecretType";
    pub const SECRET_KEY_MISSING: &str = "SecretKeyMissing";
    pub const INVALID_SECRET: &str = "InvalidSecret";
    pub const INVALID_IP_RANGE: &str = "InvalidIpRange";
    pub const PROFILE_NOT_FOUND: &str = "ProfileNotFound";
    pub const PROFILE_INVALID: &str = "ProfileInvalid";
    pub const PROFILE_MIX: &str = "ProfileMix";
    pub const DUPLICATE_PROFILE: &str = "DuplicateProfile";
    pub const TOO_MANY_OAUTH2: &str = "TooManyOAuth2";
    pub const TOO_MANY_ANONYMOUS: &str = "TooManyAnonymous";
    pub const INVALID_BACKEND: &str = "InvalidBackend";
    pub const CERTIFICATE_PENDING: &str = "CertificatePending";
    /// A route overlaps an older route of another owner on the same workload.
    pub const ROUTE_OVERLAP: &str = "RouteOverlap";
}

/// What the compiler reads: everything in one namespace.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    pub namespace: &'a str,
    pub profiles: &'a [SecurityProfile],
    pub routes: &'a [ApiRoute],
    pub secrets: &'a [Secret],
    /// Hits per minute across every route (operator setting `orgAllowance.requestsPerMinute`).
    pub org_allowance: Option<u32>,
    /// Peers whose `X-Forwarded-For` the sidecars believe.
    pub trusted_proxies: &'a [ipnet::IpNet],
    /// Whether the sidecars count limits in a shared limits store (Helm
    /// `sidecar.limitsStore.url`): a profile with a quota is refused without one.
    pub limits_store_configured: bool,
    /// `Some(labels)`: compile only the routes whose `workloadSelector` selects a pod with
    /// these labels. `None`: every route.
    pub workload_labels: Option<&'a BTreeMap<String, String>>,
}

/// The verdict on one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Rejected {
        /// A `reason` constant, for the condition.
        reason: &'static str,
        /// The field at fault, as a path from the object (`spec.profiles[1].name`).
        field: String,
        /// What is wrong; starts with the field. Never holds a secret.
        message: String,
    },
}

impl Verdict {
    pub fn is_accepted(&self) -> bool {
        matches!(self, Self::Accepted)
    }
}

/// What the compiler produces.
#[derive(Clone, Debug)]
pub struct Output {
    /// The configuration and secrets for the selected, valid routes and the profiles they use.
    pub loaded: Loaded,
    /// A verdict for every profile in the namespace.
    pub profiles: BTreeMap<String, Verdict>,
    /// A verdict for every route in the namespace, selected or not.
    pub routes: BTreeMap<String, Verdict>,
    /// For every profile, the routes that list it (sorted).
    pub profile_routes: BTreeMap<String, Vec<String>>,
}

impl Output {
    /// Every rejection, as `Kind namespace/name: message`, profiles first.
    pub fn errors(&self, namespace: &str) -> Vec<String> {
        let kinds = [("SecurityProfile", &self.profiles), ("ApiRoute", &self.routes)];
        kinds
            .into_iter()
            .flat_map(|(kind, verdicts)| {
                verdicts.iter().filter_map(move |(name, v)| match v {
                    Verdict::Accepted => None,
                    Verdict::Rejected { message, .. } => Some(format!("{kind} {namespace}/{name}: {message}")),
                })
            })
            .collect()
    }
}

/// A problem found in one field of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Problem {
    reason: &'static str,
    field: String,
    detail: String,
}

impl Problem {
    pub(crate) fn new(reason: &'static str, field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            reason,
            field: field.into(),
            detail: detail.into(),
        }
    }

    /// What the verdict says: the field, then what is wrong with it.
    fn message(&self) -> String {
        format!("{}: {}", self.field, self.detail)
    }

    fn into_verdict(self) -> Verdict {
        Verdict::Rejected {
            message: self.message(),
            reason: self.reason,
            field: self.field,
        }
    }
}

/// Writes into a group's compiled configuration how many sidecars enforce each of its limits
/// (`namespace`: every sidecar of the namespace, for the org allowance; `per_profile`: those
/// serving each profile's routes), the divisors of `onStoreUnavailable: LocalShare`, and
/// names the result anew. Only limits that are set (a profile's per-minute limit or quota)
/// get a count, so that scaling a workload changes no configuration without limits.
pub fn set_replicas(
    loaded: &mut Loaded,
    generation_key: &GenerationKey,
    namespace: u32,
    per_profile: &BTreeMap<String, u32>,
) {
    let config = &mut loaded.config;
    config.replicas = config.org_allowance.map(|_| namespace.max(1));
    for p in &mut config.profiles {
        let limited = p.rate_limit_per_minute.is_some() || p.quota.is_some();
        p.replicas = limited.then(|| per_profile.get(&p.name).copied().unwrap_or(1).max(1));
    }
    config.generation.clear();
    loaded.secrets.generation.clear();
    let generation = generation::generation(generation_key, &loaded.config, &loaded.secrets);
    loaded.config.generation = generation.clone();
    loaded.secrets.generation = generation;
}

/// Compiles one namespace, the generation keyed with this process's random key
/// ([`GenerationKey::process`]): for callers that want the verdicts, or compare outputs
/// within one process. What is published (the controllers, `render`) is compiled with
/// [`compile_with_key`].
pub fn compile(inputs: &Inputs) -> Output {
    compile_with_key(inputs, GenerationKey::process())
}

/// Compiles one namespace, the generation a MAC under `generation_key`
/// ([`generation::generation`]). Pure: the same inputs and key always give the same output,
/// generation included.
pub fn compile_with_key(inputs: &Inputs, generation_key: &GenerationKey) -> Output {
    let secrets = secrets::SecretIndex::new(inputs.namespace, inputs.secrets);

    let mut profiles = BTreeMap::new();
    let mut profile_verdicts = BTreeMap::new();
    for sp in inputs.profiles {
        let name = sp.metadata.name.clone().unwrap_or_default();
        match profile::compile(&name, &sp.spec, &secrets, inputs.limits_store_configured) {
            Ok(compiled) => {
                profile_verdicts.insert(name.clone(), Verdict::Accepted);
                profiles.insert(name, compiled);
            }
            Err(problem) => {
                profile_verdicts.insert(name, problem.into_verdict());
            }
        }
    }

    let mut routes: Vec<&ApiRoute> = inputs.routes.iter().collect();
    routes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    // Routes of another owner on an older route's paths (overlap.rs): decided on the routes'
    // specs and metadata alone, before anything else about them.
    let mut overlaps = overlap::refusals(&routes);

    let mut config = SidecarConfig::empty(inputs.namespace);
    config.org_allowance = inputs.org_allowance;
    config.trusted_proxies = inputs.trusted_proxies.to_vec();
    let mut material = SecretMaterial {
        schema_version: SCHEMA_VERSION,
        ..Default::default()
    };
    let mut route_verdicts = BTreeMap::new();
    let mut profile_routes: BTreeMap<String, Vec<String>> =
        profile_verdicts.keys().map(|name| (name.clone(), Vec::new())).collect();
    let mut used_profiles = BTreeSet::new();

    for ar in routes {
        let name = ar.metadata.name.clone().unwrap_or_default();
        for p in &ar.spec.profiles {
            if let Some(list) = profile_routes.get_mut(&p.name)
                && !list.contains(&name)
            {
                list.push(name.clone());
            }
        }
        let compiled = match overlaps.remove(&name) {
            Some(problem) => Err(problem),
            None => route::compile(&name, &ar.spec, &profiles, &profile_verdicts, &secrets),
        };
        match compiled {
            Err(problem) => {
                route_verdicts.insert(name, problem.into_verdict());
            }
            Ok((route, route_secrets)) => {
                route_verdicts.insert(name.clone(), Verdict::Accepted);
                let selected = inputs
                    .workload_labels
                    .is_none_or(|labels| selector_matches(&ar.spec.workload_selector, labels));
                if selected {
                    used_profiles.extend(route.profiles.iter().cloned());
                    if route_secrets != Default::default() {
                        material.routes.insert(name, route_secrets);
                    }
                    config.routes.push(route);
                }
            }
        }
    }

    for (name, compiled) in profiles {
        if used_profiles.contains(&name) {
            if compiled.secrets != Default::default() {
                material.profiles.insert(name.clone(), compiled.secrets);
            }
            config.profiles.push(compiled.profile);
        }
    }

    let generation = generation::generation(generation_key, &config, &material);
    config.generation = generation.clone();
    material.generation = generation;

    Output {
        loaded: Loaded {
            config,
            secrets: material,
        },
        profiles: profile_verdicts,
        routes: route_verdicts,
        profile_routes,
    }
}

/// The problem of a SecurityProfile that its spec and the operator's settings decide alone,
/// without Secrets or other objects (`spec.rateLimit`: neither field set, a quota without a
/// shared limits store): `Err` with the message its status would carry, for admission.
pub fn check_profile_settings(profile: &SecurityProfile, limits_store_configured: bool) -> Result<(), String> {
    let namespace = profile.metadata.namespace.as_deref().unwrap_or("default");
    let name = profile.metadata.name.as_deref().unwrap_or_default();
    profile::check_rate_limit(
        namespace,
        name,
        profile.spec.rate_limit.as_ref(),
        limits_store_configured,
    )
    .map_err(|problem| problem.message())
}

/// Whether a route selects a pod with `labels` (re-exported for the controllers).
pub fn route_selects(route: &ApiRoute, labels: &BTreeMap<String, String>) -> bool {
    selector_matches(&route.spec.workload_selector, labels)
}

/// The selector of a route, for grouping.
pub fn workload_selector(route: &ApiRoute) -> &LabelSelector {
    &route.spec.workload_selector
}

#[cfg(test)]
mod tests;
