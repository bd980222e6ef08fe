//! The leader's certificate manager: watches ApiRoutes, the Secrets and ConfigMaps it wrote
//! (label [`CERT_LABEL`]), runs [`plan`] and writes the difference — the CA's Secret,
//! issued Secrets (server-side apply, field manager `portcullis-operator`), bundle
//! ConfigMaps, route status `certificates` (merge patch on `/status`) — then keeps the
//! webhook configurations' `caBundle` current. It runs again on every change, when a
//! certificate falls due, and every few seconds (the webhook configurations are not
//! watched). Keys never reach a log line or an error.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use portcullis_api::ApiRoute;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::plan::{
    self, BUNDLE_CONFIGMAP, BUNDLE_KEY, CA_SECRET, CERT_LABEL, CaState, Inputs, IssuedSecret, Lifetimes,
};
use super::unix_now;
use crate::controller::leader::LeaseConfig;
use crate::controller::reconcile::FIELD_MANAGER;
use crate::webhook::{WebhookSettings, ca_bundle_patch};

/// How the certificate manager runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The operator's namespace: the CA's Secret lives there.
    pub namespace: String,
    pub lifetimes: Lifetimes,
    /// Keep a CA even when no route asks for a certificate (the webhooks need one).
    pub always: bool,
    /// Webhook configurations whose `caBundle` to keep current.
    pub webhook: Option<WebhookSettings>,
}

/// The longest the manager sleeps between passes.
const MAX_SLEEP: Duration = Duration::from_secs(5);

/// Runs the manager while `leading` is true; returns when the sender is dropped (nobody
/// follows the Lease any more: the process is shutting down), stopping the manager first.
pub async fn run_when_leading(client: Client, opts: Options, leading: watch::Receiver<bool>) {
    while_leading(leading, move || tokio::spawn(manage(client.clone(), opts.clone()))).await;
}

/// Runs the task `start` spawns while `leading` is true, aborting it when it turns false;
/// returns once the channel's sender is dropped, whatever its last value (a closed channel
/// answers every wait at once: looping on it would restart the task without end).
pub async fn while_leading(mut leading: watch::Receiver<bool>, mut start: impl FnMut() -> JoinHandle<()>) {
    loop {
        if leading.wait_for(|l| *l).await.is_err() {
            return;
        }
        // `wait_for` answers from the last value even when the sender is gone.
        if leading.has_changed().is_err() {
            return;
        }
        tracing::info!("certificate manager starting");
        let task = start();
        let closed = leading.wait_for(|l| !*l).await.is_err();
        task.abort();
        tracing::info!("certificate manager stopped");
        if closed {
            return;
        }
    }
}

/// Sends whether this replica holds the leader Lease (`cfg`), checked every
/// `cfg.renew_every`: held, and renewed within its duration. The controllers elect; this only
/// follows, so the manager never runs where the controllers do not. When `shutdown`
/// completes it sends `false` and returns, dropping the sender: the manager stops at once
/// (before the controllers finish draining and release the Lease).
pub async fn follow_lease(
    client: Client,
    cfg: LeaseConfig,
    leading: watch::Sender<bool>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::select! {
        _ = shutdown => {
            leading.send_replace(false);
        }
        _ = follow(client, &cfg, &leading) => {}
    }
}

async fn follow(client: Client, cfg: &LeaseConfig, leading: &watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    loop {
        let held = match api.get_opt(&cfg.name).await {
            Ok(lease) => lease.and_then(|l| l.spec).is_some_and(|spec| {
                let now = k8s_openapi::jiff::Timestamp::now();
                let duration =
                    k8s_openapi::jiff::SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(15).into());
                spec.holder_identity.as_deref() == Some(cfg.identity.as_str())
                    && spec
                        .renew_time
                        .as_ref()
                        .or(spec.acquire_time.as_ref())
                        .is_some_and(|t| t.0 + duration > now)
            }),
            Err(error) => {
                tracing::debug!(%error, "certificate manager: cannot read the leader Lease");
                *leading.borrow()
            }
        };
        leading.send_if_modified(|l| std::mem::replace(l, held) != held);
        tokio::time::sleep(cfg.renew_every).await;
    }
}

/// How many deletions a [`Mirror`] remembers.
const TOMBSTONES: usize = 4096;

/// A mirror of one watch: objects by (namespace, name), swapped in whole on each relist.
/// What the manager's own writes return goes in too ([`Mirror::store_written`]), but never
/// over a deletion the watch reported (bounded tombstones: uid and resourceVersion).
struct Mirror<V> {
    live: BTreeMap<(String, String), V>,
    pending: Option<BTreeMap<(String, String), V>>,
    synced: bool,
    gone: BTreeMap<(String, String), (Option<String>, Option<u64>)>,
    gone_order: VecDeque<(String, String)>,
}

impl<V> Default for Mirror<V> {
    fn default() -> Self {
        Self {
            live: BTreeMap::new(),
            pending: None,
            synced: false,
            gone: BTreeMap::new(),
            gone_order: VecDeque::new(),
        }
    }
}

fn rv_of(meta: &ObjectMeta) -> Option<u64> {
    meta.resource_version.as_deref()?.parse().ok()
}

impl<V> Mirror<V> {
    fn bury(&mut self, key: (String, String), meta: &ObjectMeta) {
        if self.gone.insert(key.clone(), (meta.uid.clone(), rv_of(meta))).is_none() {
            self.gone_order.push_back(key);
        }
        while self.gone.len() > TOMBSTONES {
            let Some(old) = self.gone_order.pop_front() else { break };
            self.gone.remove(&old);
        }
    }

    fn unbury(&mut self, key: &(String, String)) {
        if self.gone.remove(key).is_some() {
            self.gone_order.retain(|k| k != key);
        }
    }

    /// Stores what a write of ours returned (`meta`: the response's metadata), unless the
    /// watch reported the object deleted since and this is not provably a newer one.
    fn store_written(&mut self, key: (String, String), value: V, meta: &ObjectMeta) -> bool {
        if let Some((uid, rv)) = self.gone.get(&key) {
            let newer = match (uid, &meta.uid) {
                (Some(dead), Some(uid)) => dead != uid,
                _ => matches!((rv, rv_of(meta)), (Some(dead), Some(rv)) if rv > *dead),
            };
            if !newer {
                return false;
            }
            self.unbury(&key);
        }
        self.live.insert(key, value);
        true
    }

    fn on<K: Resource>(&mut self, event: watcher::Event<K>, keep: impl Fn(&K) -> Option<V>) {
        let key = |k: &K| {
            (
                k.meta().namespace.clone().unwrap_or_default(),
                k.meta().name.clone().unwrap_or_default(),
            )
        };
        match event {
            watcher::Event::Init => self.pending = Some(BTreeMap::new()),
            watcher::Event::InitApply(k) => {
                if let (Some(p), Some(v)) = (self.pending.as_mut(), keep(&k)) {
                    p.insert(key(&k), v);
                }
            }
            watcher::Event::InitDone => {
                if let Some(p) = self.pending.take() {
                    self.live = p;
                }
                self.synced = true;
            }
            watcher::Event::Apply(k) => {
                self.unbury(&key(&k));
                match keep(&k) {
                    Some(v) => {
                        self.live.insert(key(&k), v);
                    }
                    None => {
                        self.live.remove(&key(&k));
                    }
                }
            }
            watcher::Event::Delete(k) => {
                self.live.remove(&key(&k));
                self.bury(key(&k), k.meta());
            }
        }
    }
}

#[derive(Default)]
struct State {
    routes: Mirror<ApiRoute>,
    /// Issued Secrets by what they hold (never their keys).
    issued: Mirror<IssuedSecret>,
    /// The CA's Secret (the one object whose key the manager keeps: it signs with it).
    ca: Mirror<Secret>,
    /// Bundle ConfigMaps: namespace -> content.
    bundles: Mirror<String>,
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn spawn_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    state: Shared,
    notify: Arc<Notify>,
    on: impl Fn(&mut State, watcher::Event<K>) + Send + 'static,
) -> tokio::task::JoinHandle<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let kind = K::kind(&()).into_owned();
    tokio::spawn(async move {
        let mut stream = watcher(api, config).default_backoff().boxed();
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => {
                    on(&mut lock(&state), event);
                    notify.notify_one();
                }
                Err(error) => tracing::warn!(kind, %error, "certificate manager: watch failed; retrying"),
            }
        }
    })
}

/// Aborts the watches when the manager stops.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        self.0.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

async fn manage(client: Client, opts: Options) {
    let state: Shared = Arc::default();
    let notify = Arc::new(Notify::new());
    let selector = |v: Option<&str>| match v {
        Some(v) => watcher::Config::default().labels(&format!("{CERT_LABEL}={v}")),
        None => watcher::Config::default().labels(CERT_LABEL),
    };
    let ns = opts.namespace.clone();
    let _tasks = Tasks(vec![
        spawn_watch(
            Api::<ApiRoute>::all(client.clone()),
            watcher::Config::default(),
            state.clone(),
            notify.clone(),
            |s, e| s.routes.on(e, |r: &ApiRoute| Some(r.clone())),
        ),
        spawn_watch(
            Api::<Secret>::all(client.clone()),
            selector(None),
            state.clone(),
            notify.clone(),
            move |s, e: watcher::Event<Secret>| {
                let what = |x: &Secret| {
                    x.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(CERT_LABEL))
                        .cloned()
                        .unwrap_or_default()
                };
                let is_ca = |x: &Secret| {
                    what(x) == "ca"
                        && x.metadata.namespace.as_deref() == Some(ns.as_str())
                        && x.metadata.name.as_deref() == Some(CA_SECRET)
                };
                s.ca.on(e.clone(), |x| is_ca(x).then(|| x.clone()));
                s.issued.on(e, |x| {
                    matches!(what(x).as_str(), "serving" | "client").then(|| IssuedSecret::from_secret(x))
                });
            },
        ),
        spawn_watch(
            Api::<ConfigMap>::all(client.clone()),
            selector(Some("bundle")),
            state.clone(),
            notify.clone(),
            |s, e| {
                s.bundles.on(e, |c: &ConfigMap| {
                    (c.metadata.name.as_deref() == Some(BUNDLE_CONFIGMAP))
                        .then(|| c.data.as_ref()?.get(BUNDLE_KEY).cloned())
                        .flatten()
                })
            },
        ),
    ]);
    let mut failures = 0u32;
    let mut warned_ca = None;
    loop {
        let synced = {
            let s = lock(&state);
            s.routes.synced && s.issued.synced && s.ca.synced && s.bundles.synced
        };
        let mut sleep = MAX_SLEEP;
        if synced {
            match pass(&client, &opts, &state, &mut warned_ca).await {
                Ok(next) => {
                    failures = 0;
                    if let Some(next) = next {
                        let secs = (next - unix_now()).max(0) as u64;
                        sleep = sleep.min(Duration::from_secs(secs));
                    }
                }
                Err(error) => {
                    failures += 1;
                    sleep = Duration::from_millis(500 * 2u64.pow(failures.min(6)));
                    tracing::warn!(%error, ?sleep, "certificate manager: a write failed; retrying");
                }
            }
        }
        tokio::select! {
            _ = notify.notified() => {
                // Let a burst of events settle.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// One pass: plan, write. Returns when something is next due.
async fn pass(
    client: &Client,
    opts: &Options,
    state: &Shared,
    warned_ca: &mut Option<String>,
) -> Result<Option<i64>, kube::Error> {
    let now = unix_now();
    let (ca_secret, routes, issued, bundles) = {
        let s = lock(state);
        (
            s.ca.live.values().next().cloned(),
            s.routes.live.values().cloned().collect::<Vec<_>>(),
            s.issued.live.values().cloned().collect::<Vec<_>>(),
            s.bundles
                .live
                .iter()
                .map(|((ns, _), v)| (ns.clone(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
        )
    };
    let ca = match ca_secret.as_ref().map(|s| CaState::from_secret(s, now)) {
        None => None,
        Some(Ok(ca)) => Some(ca),
        Some(Err(error)) => {
            let message = error.to_string();
            if warned_ca.as_deref() != Some(message.as_str()) {
                tracing::warn!(namespace = %opts.namespace, name = CA_SECRET, %message, "the CA Secret is unusable; a new CA replaces it");
                *warned_ca = Some(message);
            }
            None
        }
    };
    let plan = plan::plan(&Inputs {
        now,
        namespace: &opts.namespace,
        ca: ca.as_ref(),
        routes: &routes,
        issued: &issued,
        bundles: &bundles,
        lifetimes: opts.lifetimes,
        always: opts.always,
    });
    for (what, message) in &plan.failures {
        tracing::warn!(what, message, "cannot issue a certificate");
    }
    let apply = PatchParams::apply(FIELD_MANAGER).force();

    // The CA first: everything else is signed by it or carries its certificate.
    if let (Some(secret), Some(new)) = (&plan.ca_secret, &plan.ca) {
        let api: Api<Secret> = Api::namespaced(client.clone(), &opts.namespace);
        let written = api.patch(CA_SECRET, &apply, &Patch::Apply(secret)).await?;
        tracing::info!(
            namespace = %opts.namespace,
            name = CA_SECRET,
            why = plan.ca_why.unwrap_or_default(),
            fingerprint = %new.fingerprint(),
            not_after = %new.ca.info().not_after_rfc3339(),
            previous = new.previous_pem.is_some(),
            "wrote the CA Secret"
        );
        let meta = written.metadata.clone();
        lock(state)
            .ca
            .store_written((opts.namespace.clone(), CA_SECRET.to_owned()), written, &meta);
    }
    let mut first_error = None;
    for (secret, why) in plan.secrets.iter().zip(&plan.reissued) {
        let (ns, name) = (why.namespace.as_str(), why.name.as_str());
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        match api.patch(name, &apply, &Patch::Apply(secret)).await {
            Ok(written) => {
                let summary = IssuedSecret::from_secret(secret);
                if let Some(leaf) = &summary.leaf {
                    tracing::info!(
                        namespace = ns,
                        name,
                        why = why.why,
                        not_after = %leaf.not_after_rfc3339(),
                        fingerprint = %leaf.sha256_fingerprint,
                        "issued a certificate"
                    );
                }
                lock(state)
                    .issued
                    .store_written((ns.to_owned(), name.to_owned()), summary, &written.metadata);
            }
            Err(e) => {
                tracing::warn!(namespace = ns, name, error = %e, "cannot write an issued certificate");
                first_error.get_or_insert(e);
            }
        }
    }
    for (ns, name) in &plan.delete_secrets {
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(namespace = %ns, name = %name, "deleted a certificate no route asks for"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                first_error.get_or_insert(e);
                continue;
            }
        }
        lock(state).issued.live.remove(&(ns.clone(), name.clone()));
    }
    for cm in &plan.configmaps {
        let ns = cm.metadata.namespace.clone().unwrap_or_default();
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        match api.patch(BUNDLE_CONFIGMAP, &apply, &Patch::Apply(cm)).await {
            Ok(written) => {
                tracing::info!(namespace = %ns, name = BUNDLE_CONFIGMAP, "published the CA bundle");
                let content = cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get(BUNDLE_KEY))
                    .cloned()
                    .unwrap_or_default();
                lock(state)
                    .bundles
                    .store_written((ns, BUNDLE_CONFIGMAP.to_owned()), content, &written.metadata);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    for ns in &plan.delete_configmaps {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        match api.delete(BUNDLE_CONFIGMAP, &DeleteParams::default()).await {
            Ok(_) => {
                lock(state)
                    .bundles
                    .live
                    .remove(&(ns.clone(), BUNDLE_CONFIGMAP.to_owned()));
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                lock(state)
                    .bundles
                    .live
                    .remove(&(ns.clone(), BUNDLE_CONFIGMAP.to_owned()));
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    for st in &plan.statuses {
        let api: Api<ApiRoute> = Api::namespaced(client.clone(), &st.namespace);
        let certificates = if st.certificates.is_empty() {
            Value::Null
        } else {
            json!(st.certificates)
        };
        let body = json!({"status": {"certificates": certificates}});
        match api
            .patch_status(&st.route, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(written) => {
                let meta = written.metadata.clone();
                lock(state)
                    .routes
                    .store_written((st.namespace.clone(), st.route.clone()), written, &meta);
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let (Some(webhook), Some(bundle)) = (&opts.webhook, &plan.bundle)
        && let Err(e) = update_ca_bundles(client, webhook, bundle).await
    {
        first_error.get_or_insert(e);
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(plan.next_due),
    }
}

/// Makes every webhook of the configured Mutating- and ValidatingWebhookConfiguration trust
/// `bundle` ([`ca_bundle_patch`]). The patch is applied to the configuration as read and
/// sent as a merge patch of `webhooks` guarded by the `resourceVersion` read, so a
/// concurrent change fails the write (retried) instead of being overwritten.
pub async fn update_ca_bundles(client: &Client, webhook: &WebhookSettings, bundle: &str) -> Result<(), kube::Error> {
    let configs = [
        ("MutatingWebhookConfiguration", &webhook.mutating_webhook_configuration),
        (
            "ValidatingWebhookConfiguration",
            &webhook.validating_webhook_configuration,
        ),
    ];
    for (kind, name) in configs {
        if name.is_empty() {
            continue;
        }
        let gvk = GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind);
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk));
        let current = match api.get_opt(name).await {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            // Not allowed (the chart grants access only to configurations it renders).
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 404 => continue,
            Err(e) => return Err(e),
        };
        let mut value = serde_json::to_value(&current).unwrap_or_default();
        let Some(patch) = ca_bundle_patch(&value, bundle) else {
            continue;
        };
        if json_patch::patch(&mut value, &patch.0).is_err() {
            continue;
        }
        let body = json!({
            "metadata": {"resourceVersion": current.metadata.resource_version},
            "webhooks": value.get("webhooks").cloned().unwrap_or_default(),
        });
        api.patch(name, &PatchParams::default(), &Patch::Merge(&body)).await?;
        tracing::info!(kind, name, "updated the webhook caBundle");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Issue 15, item 9: on SIGTERM the Lease follower goes (the channel's sender is dropped)
    /// while the value is still `true`; the manager must stop, not restart in a tight loop.
    #[test]
    fn a_dropped_leadership_channel_ends_the_manager_even_while_leading() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let starts = Arc::new(AtomicUsize::new(0));
        let counted = starts.clone();
        let finished = runtime.block_on(async move {
            let (tx, rx) = watch::channel(false);
            let manager = tokio::spawn(while_leading(rx, move || {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(std::future::pending())
            }));
            tx.send(true).unwrap();
            tx.send(false).unwrap();
            tx.send(true).unwrap();
            drop(tx);
            tokio::time::timeout(Duration::from_secs(2), manager).await.is_ok()
        });
        // A task spinning without yielding would block an orderly shutdown.
        runtime.shutdown_background();
        assert!(finished, "the manager did not end once the channel closed");
        assert!(
            starts.load(Ordering::SeqCst) <= 2,
            "restarted {} times",
            starts.load(Ordering::SeqCst)
        );
    }

    fn route(uid: &str, rv: u64) -> ApiRoute {
        let mut r: ApiRoute = serde_json::from_value(json!({
            "apiVersion": "portcullis.dev/v1alpha1", "kind": "ApiRoute",
            "metadata": {"name": "r", "namespace": "ns", "uid": uid, "resourceVersion": rv.to_string()},
            "spec": {"workloadSelector": {"matchLabels": {"app": "a"}}, "pathPrefix": "/r",
                     "profiles": [{"name": "p"}], "backend": {"port": 8080}},
        }))
        .unwrap();
        r.metadata.generation = Some(1);
        r
    }

    /// Issue 15, item 8, in the certificate manager's mirrors: a status write answered
    /// after the watch reported the route deleted does not bring it back (the manager would
    /// keep issuing certificates for it).
    #[test]
    fn a_write_response_never_resurrects_a_deleted_object_in_a_mirror() {
        let key = ("ns".to_owned(), "r".to_owned());
        let mut mirror = Mirror::<ApiRoute>::default();
        mirror.on(watcher::Event::InitDone, |r: &ApiRoute| Some(r.clone()));
        mirror.on(watcher::Event::Apply(route("u1", 1)), |r: &ApiRoute| Some(r.clone()));
        mirror.on(watcher::Event::Delete(route("u1", 3)), |r: &ApiRoute| Some(r.clone()));
        let late = route("u1", 2);
        assert!(!mirror.store_written(key.clone(), late.clone(), &late.metadata));
        assert!(mirror.live.is_empty());
        // Another route under the same name is stored.
        let new = route("u2", 4);
        assert!(mirror.store_written(key.clone(), new.clone(), &new.metadata));
        assert_eq!(mirror.live.len(), 1);
        assert!(mirror.gone.is_empty());
        // Bounded.
        for i in 0..(TOMBSTONES + 10) {
            let mut r = route("u", 10);
            r.metadata.name = Some(format!("r{i}"));
            mirror.on(watcher::Event::Delete(r), |r: &ApiRoute| Some(r.clone()));
        }
        assert_eq!(mirror.gone.len(), TOMBSTONES);
        assert_eq!(mirror.gone_order.len(), TOMBSTONES);
    }

    #[test]
    fn the_manager_follows_leadership() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let starts = Arc::new(AtomicUsize::new(0));
            let counted = starts.clone();
            let (tx, rx) = watch::channel(false);
            let manager = tokio::spawn(while_leading(rx, move || {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(std::future::pending())
            }));
            for round in 1..=3 {
                tx.send(true).unwrap();
                for _ in 0..100 {
                    if starts.load(Ordering::SeqCst) == round {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                assert_eq!(starts.load(Ordering::SeqCst), round);
                tx.send(false).unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            drop(tx);
            tokio::time::timeout(Duration::from_secs(2), manager)
                .await
                .expect("ends")
                .unwrap();
            assert_eq!(starts.load(Ordering::SeqCst), 3);
        });
    }
}
