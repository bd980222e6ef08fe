//! One namespace's reconcile: read the caches, [`plan`](super::plan::plan) (pure), then
//! write the difference — server-side apply of each group's ConfigMap and Secret, deletion
//! of groups that are gone, status of every route and profile whose status is not current,
//! and an Event for every new rejection. Writes run concurrently; a failed write fails the
//! reconcile (retried with a backoff) without stopping the other writes.
//!
//! Owns [`reconcile`], its [`Summary`] and [`ReconcileError`]; the writes themselves are in
//! `write`. Layer 6 of the list in `controller`: may use layers 0–5; uses `refs` (layer 0),
//! `status` (layer 1), `plan` (layer 2), `rollout` (layer 3), `context` (layer 4) and
//! `write` (layer 5). [`Context`] and [`FIELD_MANAGER`] are re-exported from `context` (the
//! paths `reconcile::Context` and `reconcile::FIELD_MANAGER` keep working).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

pub use super::context::{Context, FIELD_MANAGER};
use super::plan::{self, Snapshot};
use super::refs::referenced_secrets;
use super::rollout;
use super::status;
use super::write::{object_writes, run_writes, status_writes};
use crate::compile::login::{SESSION_SECRET_LABEL, plan_session_keys, session_secret_name};
use crate::compile::token_keys::{TOKEN_KEYS_LABEL, new_key_pem, plan_token_keys, token_keys_secret_name};

/// How many referenced Secrets one reconcile reads at once.
const SECRET_READS: usize = 16;

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
    #[error("writing key Secret {namespace}/{name}: {source}")]
    WriteSessionKeys {
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

/// What one reconcile did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub groups: usize,
    pub writes: usize,
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
    // Referenced Secrets whose current content is not in memory (the watch sees only
    // metadata), and those the watch has not reported (events across watches are not ordered:
    // a Secret created before the profile naming it may still be on its way; only a read
    // says it is missing): read by name, a few at a time.
    let to_read: Vec<String> = resolved.fetch.into_iter().chain(resolved.unknown).collect();
    if !to_read.is_empty() {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
        let reads = futures::stream::iter(to_read)
            .map(|name| {
                let api = api.clone();
                async move {
                    let got = api.get_opt(&name).await;
                    (name, got)
                }
            })
            .buffer_unordered(SECRET_READS);
        let reads: Vec<_> = reads.collect().await;
        for (name, got) in reads {
            let got = got.map_err(|source| ReconcileError::ReadSecret {
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
    ensure_session_keys(ctx, namespace, &profile_list, &mut secrets).await?;
    let pods = ctx.pods.labels_in(namespace);

    let mut plan = plan::plan(&Snapshot {
        namespace,
        profiles: &profile_list,
        routes: &route_list,
        secrets: &secrets,
        pods: &pods,
        settings: &ctx.settings,
        generation_key: &ctx.generation_key,
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

/// Makes, and rotates with an overlap, the key Secrets the operator keeps for profiles, so
/// the compile of this pass sees them: the session keys of each profile with sign-in
/// (`<profile>-portcullis-session`, labelled [`SESSION_SECRET_LABEL`], rules
/// [`plan_session_keys`]) and the token signing keys of each Builtin provider
/// (`<profile>-portcullis-token-keys`, labelled [`TOKEN_KEYS_LABEL`], rules
/// [`plan_token_keys`]). A Secret of such a name the operator did not make (no label) is used
/// as it is, never written.
async fn ensure_session_keys(
    ctx: &Context,
    namespace: &str,
    profiles: &[portcullis_api::SecurityProfile],
    secrets: &mut Vec<Secret>,
) -> Result<(), ReconcileError> {
    use std::collections::BTreeMap;

    use base64::Engine as _;
    use k8s_openapi::ByteString;
    use kube::api::{Patch, PatchParams};
    use ring::rand::SecureRandom as _;

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for p in profiles {
        let Some(oauth2) = p.spec.oauth2.as_ref() else { continue };
        let profile = p.metadata.name.as_deref().unwrap_or_default();
        let mut wanted: Vec<(String, &'static str, KeyPlan)> = Vec::new();
        if let Some(login) = &oauth2.login {
            wanted.push((
                session_secret_name(profile),
                SESSION_SECRET_LABEL,
                KeyPlan::Session(u64::from(login.session_max_seconds)),
            ));
        }
        if oauth2.provider == portcullis_api::OAuth2Provider::Builtin
            && let Some(b) = &oauth2.builtin
        {
            wanted.push((
                token_keys_secret_name(profile),
                TOKEN_KEYS_LABEL,
                KeyPlan::Token(u64::from(b.token_ttl_seconds)),
            ));
        }
        for (name, label, plan) in wanted {
            let existing = secrets
                .iter()
                .position(|s| s.metadata.name.as_deref() == Some(name.as_str()));
            let ours = |s: &Secret| s.metadata.labels.as_ref().is_some_and(|l| l.contains_key(label));
            if existing.is_some_and(|i| !ours(&secrets[i])) {
                continue;
            }
            let current: BTreeMap<String, String> = existing
                .and_then(|i| secrets[i].data.as_ref())
                .map(|d| {
                    d.iter()
                        .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
                        .collect()
                })
                .unwrap_or_default();
            let mut failed = false;
            let keys = match plan {
                KeyPlan::Session(max) => plan_session_keys(&current, now, max, || {
                    let mut key = [0u8; 32];
                    failed = ring::rand::SystemRandom::new().fill(&mut key).is_err();
                    base64::engine::general_purpose::STANDARD.encode(key)
                }),
                KeyPlan::Token(ttl) => plan_token_keys(&current, now, ttl, || {
                    new_key_pem().unwrap_or_else(|| {
                        failed = true;
                        String::new()
                    })
                }),
            };
            let Some(keys) = keys else { continue };
            if failed {
                tracing::warn!(namespace, name, "no random bytes for a key; not written");
                continue;
            }
            let secret = Secret {
                metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.to_owned()),
                    labels: Some(BTreeMap::from([(label.to_owned(), profile.to_owned())])),
                    ..Default::default()
                },
                type_: Some("Opaque".to_owned()),
                data: Some(keys.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect()),
                ..Default::default()
            };
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
            let written = api
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&secret),
                )
                .await
                .map_err(|source| ReconcileError::WriteSessionKeys {
                    namespace: namespace.to_owned(),
                    name: name.clone(),
                    source,
                })?;
            tracing::info!(
                namespace,
                name,
                keys = written.data.as_ref().map_or(0, |d| d.len()),
                "wrote a key Secret"
            );
            match existing {
                Some(i) => secrets[i] = written,
                None => secrets.push(written),
            }
        }
    }
    Ok(())
}

/// Which rotation a key Secret follows, with its lifetime (seconds): a session's longest, or
/// a token's.
#[derive(Clone, Copy)]
enum KeyPlan {
    Session(u64),
    Token(u64),
}
