//! The shared context: [`Context`] (everything the reconciler and the poller read and write:
//! the API client, the settings, the generation key, the caches and stores, the sidecars'
//! reports, the metrics and the Event recorder), the namespaces it knows of, and the
//! operator's field manager.
//!
//! State only, no I/O of its own. Layer 4 of the list in `controller`: may use layers 0–3;
//! uses `cache`, `metrics`, `store` (layer 0), `objects` (layer 1), `plan` (layer 2, for
//! [`Settings`]) and `rollout` (layer 3, for [`Sidecars`]).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Client;
use kube::runtime::events::Recorder;
use portcullis_api::{ApiRoute, SecurityProfile};

use super::cache::{PodIndex, SecretCache};
use super::metrics::Metrics;
use super::objects::OwnedSecret;
use super::plan::Settings;
use super::rollout::Sidecars;
use super::store::Store;
use crate::compile::GenerationKey;

/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "portcullis-operator";

/// Everything the reconciler reads and writes.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    /// The key of the configuration generation, read (or created) at startup from the
    /// Secret `portcullis-generation-key` in the operator's namespace. Never logged.
    pub generation_key: GenerationKey,
    pub routes: Store<ApiRoute>,
    pub profiles: Store<SecurityProfile>,
    pub configmaps: Store<ConfigMap>,
    pub owned_secrets: Store<OwnedSecret>,
    /// The groups' NetworkPolicies (watched only when `settings.network_policy`).
    pub network_policies: Store<NetworkPolicy>,
    pub secrets: SecretCache,
    pub pods: PodIndex,
    /// Running sidecars and the generations they report (fed by the pod watch and by the
    /// poller, `poller::poll_loop`).
    pub sidecars: Sidecars,
    pub metrics: Metrics,
    pub recorder: Recorder,
}

/// Every namespace the caches know of (to reconcile after a sync or on resync).
pub fn known_namespaces(ctx: &Context) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    out.extend(ctx.routes.namespaces());
    out.extend(ctx.profiles.namespaces());
    out.extend(ctx.configmaps.namespaces());
    out.extend(ctx.owned_secrets.namespaces());
    out.extend(ctx.network_policies.namespaces());
    out
}
