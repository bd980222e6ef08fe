//! One namespace's reconcile: read the caches, [`plan`](super::plan::plan) (pure), then
//! write the difference — server-side apply of each group's ConfigMap and Secret, deletion
//! of groups that are gone, status of every route and profile whose status is not current,
//! and an Event for every new rejection. Writes run concurrently; a failed write fails the
//! reconcile (retried with a backoff) without stopping the other writes.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource};
use portcullis_api::{ApiRoute, SecurityProfile};
use serde::de::DeserializeOwned;

use super::cache::{PodIndex, SecretCache};
use super::metrics::Metrics;
use super::objects::{OwnedSecret, is_managed};
use super::plan::{self, Plan, Settings, Snapshot};
use super::refs::referenced_secrets;
use super::rollout::{self, Sidecars};
use super::status::{self, DesiredStatus};
use super::store::Store;

/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "portcullis-operator";
/// How many writes of one reconcile run at once.
const WRITE_CONCURRENCY: usize = 32;

/// A failed reconcile. Messages come from the API server and name objects, never secret
/// values.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("reading Secret {namespace}/{name}: {source}")]
    ReadSecret {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{failed} write(s) failed in namespace {namespace}; first: {first}")]
    Writes {
        namespace: String,
        failed: usize,
        first: String,
    },
}

/// Everything the reconciler reads and writes.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub routes: Store<ApiRoute>,
    pub profiles: Store<SecurityProfile>,
    pub configmaps: Store<ConfigMap>,
    pub owned_secrets: Store<OwnedSecret>,
    pub secrets: SecretCache,
    pub pods: PodIndex,
    /// Running sidecars and the generations they report (fed by the pod watch and the
    /// poller of [`super::rollout`]).
    pub sidecars: Sidecars,
    pub metrics: Metrics,
    pub recorder: Recorder,
}

/// What one reconcile did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub groups: usize,
    pub writes: usize,
}

enum Write {
    ConfigMap(ConfigMap),
    Secret(Secret),
    DeleteConfigMap(String),
    DeleteSecret(String),
    RouteStatus(Arc<ApiRoute>, DesiredStatus),
    ProfileStatus(Arc<SecurityProfile>, DesiredStatus),
}

fn unarc<K: Clone>(list: &[Arc<K>]) -> Vec<K> {
    list.iter().map(|o| (**o).clone()).collect()
}

/// Reconciles one namespace.
pub async fn reconcile(ctx: &Context, namespace: &str) -> Result<Summary, ReconcileError> {
    let routes = ctx.routes.in_namespace(namespace);
    let profiles = ctx.profiles.in_namespace(namespace);
    let (route_list, profile_list) = (unarc(&routes), unarc(&profiles));

    let wanted = referenced_secrets(&profile_list, &route_list);
    let resolved = ctx.secrets.set_refs(namespace, wanted.clone());
    let mut secrets: Vec<Secret> = resolved.cached.iter().map(|s| (**s).clone()).collect();
    if !resolved.fetch.is_empty() {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
        for name in resolved.fetch {
            let got = api.get_opt(&name).await.map_err(|source| ReconcileError::ReadSecret {
                namespace: namespace.to_owned(),
                name: name.clone(),
                source,
            })?;
            ctx.secrets.fetched(namespace, &name, got.clone());
            secrets.extend(got);
        }
        // References may have changed meanwhile; keep only what is referenced.
        secrets.retain(|s| s.metadata.name.as_ref().is_some_and(|n| wanted.contains(n)));
    }
    let pods = ctx.pods.labels_in(namespace);

    let mut plan = plan::plan(&Snapshot {
        namespace,
        profiles: &profile_list,
        routes: &route_list,
        secrets: &secrets,
        pods: &pods,
        settings: &ctx.settings,
    });
    if let Some(reports) = ctx.sidecars.reports_in(namespace) {
        rollout::fill(&mut plan, &reports);
    }

    // First the groups' objects; a route whose group could not be written is not Ready.
    let objects = object_writes(ctx, namespace, &plan);
    let mut summary = Summary {
        groups: plan.groups.len(),
        writes: objects.len(),
    };
    let mut failures: Vec<kube::Error> = Vec::new();
    if !objects.is_empty() {
        // New configuration on its way to the sidecars: ask them soon and often.
        ctx.sidecars.nudge();
    }
    for (group, result) in run_writes(ctx, namespace, objects).await {
        let Err(error) = result else { continue };
        if let Some(g) = group.as_ref().and_then(|g| plan.groups.get(g)) {
            let message = format!(
                "writing the configuration of group {}: {error}",
                group.as_deref().unwrap_or_default()
            );
            for route in &g.routes {
                if let Some(desired) = plan.routes.get_mut(route) {
                    status::not_published(desired, &message);
                }
            }
        }
        failures.push(error);
    }
    // Then the statuses.
    let statuses = status_writes(&plan, &routes, &profiles);
    summary.writes += statuses.len();
    failures.extend(
        run_writes(ctx, namespace, statuses)
            .await
            .into_iter()
            .filter_map(|(_, r)| r.err()),
    );
    match failures.first() {
        None => Ok(summary),
        Some(first) => Err(ReconcileError::Writes {
            namespace: namespace.to_owned(),
            failed: failures.len(),
            first: first.to_string(),
        }),
    }
}

/// Runs writes concurrently; each result comes with the group it wrote, if any.
async fn run_writes(
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
            _ => None,
        }
    }
}

/// The object writes that bring the cluster to `plan` (nothing when it is there already):
/// apply of each group's ConfigMap and Secret that differs, deletion of groups that are gone.
fn object_writes(ctx: &Context, namespace: &str, plan: &Plan) -> Vec<Write> {
    let mut out = Vec::new();
    let configmaps = ctx.configmaps.in_namespace(namespace);
    let secrets = ctx.owned_secrets.in_namespace(namespace);
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
    out
}

/// The status writes `plan` asks for: every object whose status is not current.
fn status_writes(plan: &Plan, routes: &[Arc<ApiRoute>], profiles: &[Arc<SecurityProfile>]) -> Vec<Write> {
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

/// Every namespace the caches know of (to reconcile after a sync or on resync).
pub fn known_namespaces(ctx: &Context) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    out.extend(ctx.routes.namespaces());
    out.extend(ctx.profiles.namespaces());
    out.extend(ctx.configmaps.namespaces());
    out.extend(ctx.owned_secrets.namespaces());
    out
}
