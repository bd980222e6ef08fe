//! The reconciler's writes (its I/O): which writes bring the cluster to a plan
//! ([`object_writes`] for the groups' ConfigMaps, Secrets and NetworkPolicies, [`status_writes`] for the
//! statuses that are not current) and running them ([`run_writes`]): server-side apply or
//! deletion of objects, merge patches of `/status` built by `status::patch`, and an Event for
//! every new rejection. What a write returns goes back into the context's stores.
//!
//! Layer 5 (I/O) of the list in `controller`: may use layers 0–4; uses `objects`, `status`
//! (layer 1), `plan` (layer 2) and `context` (layer 4).

use std::sync::Arc;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource};
use portcullis_api::{ApiRoute, SecurityProfile};
use serde::de::DeserializeOwned;

use super::context::{Context, FIELD_MANAGER};
use super::objects::{OwnedSecret, is_managed};
use super::plan::{self, Plan};
use super::status::{self, DesiredStatus};

/// How many writes of one reconcile run at once.
const WRITE_CONCURRENCY: usize = 32;

/// One write of a reconcile.
pub(super) enum Write {
    ConfigMap(ConfigMap),
    Secret(Secret),
    NetworkPolicy(NetworkPolicy),
    DeleteConfigMap(String),
    DeleteSecret(String),
    DeleteNetworkPolicy(String),
    RouteStatus(Arc<ApiRoute>, DesiredStatus),
    ProfileStatus(Arc<SecurityProfile>, DesiredStatus),
}

/// Runs writes concurrently; each result comes with the group it wrote, if any.
pub(super) async fn run_writes(
    ctx: &Context,
    namespace: &str,
    writes: Vec<Write>,
) -> Vec<(Option<String>, Result<(), kube::Error>)> {
    stream::iter(writes)
        .map(|w| async move {
            let group = w.group();
            (group, write(ctx, namespace, w).await)
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await
}

impl Write {
    /// The group whose objects this writes.
    fn group(&self) -> Option<String> {
        match self {
            Write::ConfigMap(cm) => cm.metadata.name.clone(),
            Write::Secret(s) => s.metadata.name.clone(),
            Write::NetworkPolicy(np) => np.metadata.name.clone(),
            _ => None,
        }
    }
}

/// The object writes that bring the cluster to `plan` (nothing when it is there already):
/// apply of each group's ConfigMap, Secret and NetworkPolicy that differs, deletion of groups
/// that are gone (NetworkPolicies only while the operator manages them).
pub(super) fn object_writes(ctx: &Context, namespace: &str, plan: &Plan) -> Vec<Write> {
    let mut out = Vec::new();
    let configmaps = ctx.configmaps.in_namespace(namespace);
    let secrets = ctx.owned_secrets.in_namespace(namespace);
    let policies = ctx.network_policies.in_namespace(namespace);
    let name_of = |m: &ObjectMeta| m.name.clone().unwrap_or_default();
    for (name, group) in &plan.groups {
        let have_cm = configmaps.iter().find(|c| c.metadata.name.as_ref() == Some(name));
        if !have_cm.is_some_and(|have| plan::configmap_is_current(have, &group.configmap)) {
            out.push(Write::ConfigMap(group.configmap.clone()));
        }
        let have_secret = secrets.iter().find(|s| s.metadata.name.as_ref() == Some(name));
        if !have_secret.is_some_and(|have| plan::secret_is_current(have, &group.secret)) {
            out.push(Write::Secret(group.secret.clone()));
        }
        if let Some(want) = &group.network_policy {
            let have = policies.iter().find(|p| p.metadata.name.as_ref() == Some(name));
            if !have.is_some_and(|have| plan::network_policy_is_current(have, want)) {
                out.push(Write::NetworkPolicy(want.clone()));
            }
        }
    }
    let stale = |meta| is_managed(meta) && !plan.groups.contains_key(&name_of(meta));
    out.extend(
        configmaps
            .iter()
            .filter(|c| stale(&c.metadata))
            .map(|c| Write::DeleteConfigMap(name_of(&c.metadata))),
    );
    out.extend(
        secrets
            .iter()
            .filter(|s| stale(&s.metadata))
            .map(|s| Write::DeleteSecret(name_of(&s.metadata))),
    );
    if ctx.settings.network_policy {
        out.extend(
            policies
                .iter()
                .filter(|p| stale(&p.metadata))
                .map(|p| Write::DeleteNetworkPolicy(name_of(&p.metadata))),
        );
    }
    out
}

/// The status writes `plan` asks for: every object whose status is not current.
pub(super) fn status_writes(plan: &Plan, routes: &[Arc<ApiRoute>], profiles: &[Arc<SecurityProfile>]) -> Vec<Write> {
    let mut out = Vec::new();
    for route in routes {
        let Some(desired) = route.metadata.name.as_ref().and_then(|n| plan.routes.get(n)) else {
            continue;
        };
        let have = route.status.clone().unwrap_or_default();
        let rollout_current = desired.rollout.as_ref().is_none_or(|r| r.is_current(&have));
        if !rollout_current || !status::is_current(have.observed_generation, &have.conditions, None, desired) {
            out.push(Write::RouteStatus(route.clone(), desired.clone()));
        }
    }
    for profile in profiles {
        let Some(desired) = profile.metadata.name.as_ref().and_then(|n| plan.profiles.get(n)) else {
            continue;
        };
        let have = profile.status.clone().unwrap_or_default();
        if !status::is_current(have.observed_generation, &have.conditions, Some(&have.routes), desired) {
            out.push(Write::ProfileStatus(profile.clone(), desired.clone()));
        }
    }
    out
}

fn ignore_not_found(result: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match result {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        other => other,
    }
}

async fn write(ctx: &Context, namespace: &str, w: Write) -> Result<(), kube::Error> {
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let client = ctx.client.clone();
    let count = |kind: &str, op: &str| ctx.metrics.writes.with_label_values(&[kind, op]).inc();
    match w {
        Write::ConfigMap(cm) => {
            let name = cm.metadata.name.clone().unwrap_or_default();
            let api: Api<ConfigMap> = Api::namespaced(client, namespace);
            let written = api.patch(&name, &apply, &Patch::Apply(&cm)).await?;
            count("ConfigMap", "apply");
            tracing::info!(namespace, name, "applied ConfigMap");
            ctx.configmaps.store_written(written);
        }
        Write::Secret(secret) => {
            let name = secret.metadata.name.clone().unwrap_or_default();
            let api: Api<Secret> = Api::namespaced(client, namespace);
            let written = api.patch(&name, &apply, &Patch::Apply(&secret)).await?;
            count("Secret", "apply");
            tracing::info!(namespace, name, "applied Secret");
            ctx.owned_secrets.store_written(OwnedSecret::new(&written));
        }
        Write::NetworkPolicy(np) => {
            let name = np.metadata.name.clone().unwrap_or_default();
            let api: Api<NetworkPolicy> = Api::namespaced(client, namespace);
            let written = api.patch(&name, &apply, &Patch::Apply(&np)).await?;
            count("NetworkPolicy", "apply");
            tracing::info!(namespace, name, "applied NetworkPolicy");
            ctx.network_policies.store_written(written);
        }
        Write::DeleteNetworkPolicy(name) => {
            let api: Api<NetworkPolicy> = Api::namespaced(client, namespace);
            ignore_not_found(api.delete(&name, &DeleteParams::default()).await.map(|_| ()))?;
            count("NetworkPolicy", "delete");
            tracing::info!(namespace, name, "deleted NetworkPolicy");
        }
        Write::DeleteConfigMap(name) => {
            let api: Api<ConfigMap> = Api::namespaced(client, namespace);
            ignore_not_found(api.delete(&name, &DeleteParams::default()).await.map(|_| ()))?;
            count("ConfigMap", "delete");
            tracing::info!(namespace, name, "deleted ConfigMap");
        }
        Write::DeleteSecret(name) => {
            let api: Api<Secret> = Api::namespaced(client, namespace);
            ignore_not_found(api.delete(&name, &DeleteParams::default()).await.map(|_| ()))?;
            count("Secret", "delete");
            tracing::info!(namespace, name, "deleted Secret");
        }
        Write::RouteStatus(route, desired) => {
            let existing = route
                .status
                .as_ref()
                .map(|s| s.conditions.as_slice())
                .unwrap_or_default();
            if let Some(written) = write_status(ctx, namespace, route.as_ref(), existing, &desired).await? {
                ctx.routes.store_written(written);
            }
        }
        Write::ProfileStatus(profile, desired) => {
            let existing = profile
                .status
                .as_ref()
                .map(|s| s.conditions.as_slice())
                .unwrap_or_default();
            if let Some(written) = write_status(ctx, namespace, profile.as_ref(), existing, &desired).await? {
                ctx.profiles.store_written(written);
            }
        }
    }
    Ok(())
}

/// Patches one object's status; publishes an Event when it newly reports a rejection.
/// `None`: the object is gone.
async fn write_status<K>(
    ctx: &Context,
    namespace: &str,
    obj: &K,
    existing: &[Condition],
    desired: &DesiredStatus,
) -> Result<Option<K>, kube::Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let kind = K::kind(&()).into_owned();
    let name = obj.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let now = Time(Timestamp::now());
    let body = status::patch(desired, existing, &now);
    let written = match api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        Ok(written) => written,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
        Err(e) => return Err(e),
    };
    ctx.metrics.writes.with_label_values(&[kind.as_str(), "status"]).inc();
    let previously = existing
        .iter()
        .find(|c| c.type_ == status::condition::ACCEPTED)
        .filter(|c| c.status == "False")
        .map(|c| (c.reason.as_str(), c.message.as_str()));
    if let Some((reason, message)) = desired.rejection() {
        tracing::warn!(namespace, kind, name, reason, message, "rejected");
        if previously != Some((reason, message)) {
            let event = Event {
                type_: EventType::Warning,
                reason: reason.to_owned(),
                note: Some(message.chars().take(1000).collect()),
                action: "Compile".to_owned(),
                secondary: None,
            };
            // An Event is best effort: its failure does not fail the reconcile.
            match ctx.recorder.publish(&event, &obj.object_ref(&())).await {
                Ok(()) => ctx.metrics.writes.with_label_values(&["Event", "create"]).inc(),
                Err(error) => tracing::warn!(namespace, kind, name, %error, "could not publish an Event"),
            }
        }
    }
    Ok(Some(written))
}
