//! `portcullis-operator run`: leader election, the watches that feed the caches, the worker
//! pool that reconciles namespaces, the admin port, and a graceful shutdown.
//!
//! Order of events: bind the admin port; read the generation key from its Secret in the
//! operator's namespace (created when missing; retried until it works, not ready meanwhile);
//! wait for the Lease (a standby is ready and idle);
//! as leader, list and watch routes and profiles, then — knowing which Secrets they
//! reference — Secrets (by metadata only: the content of a referenced Secret is read by name,
//! and only the operator's own Secrets are watched whole), the operator's ConfigMaps (and
//! NetworkPolicies) and the pods that ask for a sidecar; once
//! every cache is synced, reconcile every known namespace, then whatever the watches
//! report, and every namespace again each `resync`. On SIGTERM: stop taking work, let
//! running reconciles finish (up to `drain`), release the Lease.
//!
//! Layer 7 (top) of the list in `controller`: may use every other module.

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use portcullis_api::{ApiRoute, SecurityProfile};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::admin::{self, Health};
use super::cache::{PodIndex, SecretCache};
use super::context::{Context, FIELD_MANAGER, known_namespaces};
use super::generation_key::{self, GENERATION_KEY_SECRET};
use super::group::INJECT_LABEL;
use super::leader::{self, LeaseConfig};
use super::metrics::Metrics;
use super::objects::{OwnedSecret, is_managed, managed_selector};
use super::plan::Settings;
use super::poller::{self, HttpProbe};
use super::queue::WorkQueue;
use super::reconcile::reconcile;
use super::refs::referenced_secrets;
use super::rollout::Sidecars;
use super::store::Store;

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Options {
    pub settings: Settings,
    /// Admin port (`/metrics`, `/healthz`, `/readyz`).
    pub admin: SocketAddr,
    pub lease: LeaseConfig,
    /// Namespaces reconciled at once.
    pub workers: usize,
    /// Every namespace is reconciled again this often.
    pub resync: Duration,
    /// How long a shutdown waits for running reconciles.
    pub drain: Duration,
}

/// Why `run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("binding the admin port {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("lost the leader Lease {namespace}/{name}")]
    LeadershipLost { namespace: String, name: String },
}

/// Runs until `shutdown` completes (then returns `Ok`) or leadership is lost, counting in
/// `metrics` and reporting in `health` (both also fed by the webhook server, when it runs).
pub async fn run(
    client: Client,
    opts: Options,
    metrics: Metrics,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let listener = admin::bind(opts.admin).await.map_err(|source| RunError::Admin {
        addr: opts.admin,
        source,
    })?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(opts.admin), "admin port listening");
    let admin_task = tokio::spawn(admin::serve(listener, metrics.clone(), health.clone(), stop_rx));
    let leases: Api<Lease> = Api::namespaced(client.clone(), &opts.lease.namespace);
    tokio::pin!(shutdown);

    // The generation key, in the operator's namespace (where the Lease is).
    let generation_key = loop {
        match generation_key::load_or_create(&client, &opts.lease.namespace).await {
            Ok(key) => break key,
            Err(error) => tracing::warn!(
                namespace = %opts.lease.namespace,
                name = GENERATION_KEY_SECRET,
                %error,
                "cannot read or create the generation key; retrying"
            ),
        }
        tokio::select! {
            _ = &mut shutdown => {
                let _ = stop_tx.send(true);
                let _ = admin_task.await;
                return Ok(());
            }
            _ = tokio::time::sleep(opts.lease.renew_every) => {}
        }
    };

    // Standby until we hold the Lease.
    let mut announced = false;
    let mut observer = leader::Observer::default();
    loop {
        // Each attempt is bounded (kube's own read timeout is minutes).
        let attempt = tokio::time::timeout(
            opts.lease.duration,
            leader::try_hold(&leases, &opts.lease, &mut observer),
        );
        match attempt.await {
            Ok(Ok(true)) => break,
            Ok(Ok(false)) => {
                if !announced {
                    tracing::info!(lease = %opts.lease.name, "another replica leads; standing by");
                    announced = true;
                }
                health.set_ready(true);
            }
            Ok(Err(error)) => tracing::warn!(%error, "leader election: cannot read or write the Lease"),
            Err(_) => tracing::warn!("leader election: reading or writing the Lease timed out"),
        }
        tokio::select! {
            _ = &mut shutdown => {
                let _ = stop_tx.send(true);
                let _ = admin_task.await;
                return Ok(());
            }
            _ = tokio::time::sleep(opts.lease.renew_every) => {}
        }
    }
    tracing::info!(identity = %opts.lease.identity, lease = %opts.lease.name, "acquired the leader Lease");
    metrics.leader.set(1);
    health.set_ready(false);

    let ctx = Arc::new(Context {
        client: client.clone(),
        settings: opts.settings.clone(),
        generation_key,
        routes: Store::default(),
        profiles: Store::default(),
        configmaps: Store::default(),
        owned_secrets: Store::default(),
        network_policies: Store::default(),
        secrets: SecretCache::default(),
        pods: PodIndex::default(),
        sidecars: Sidecars::default(),
        metrics: metrics.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.to_owned(),
                instance: Some(opts.lease.identity.clone()),
            },
        ),
    });
    let queue = Arc::new(WorkQueue::default());
    let tasks = Tasks::default();
    let mut lost = tokio::spawn(keep_leading(
        leases.clone(),
        opts.lease.clone(),
        metrics.clone(),
        observer,
    ));
    let leading = tokio::spawn(lead(
        ctx.clone(),
        queue.clone(),
        opts.clone(),
        health.clone(),
        tasks.clone(),
    ));

    let result = tokio::select! {
        _ = &mut shutdown => {
            tracing::info!("shutting down: finishing running reconciles");
            Ok(())
        }
        _ = &mut lost => Err(RunError::LeadershipLost {
            namespace: opts.lease.namespace.clone(),
            name: opts.lease.name.clone(),
        }),
    };
    health.set_ready(false);
    queue.close();
    leading.abort();
    lost.abort();
    // Workers finish the reconcile they are running (the queue hands out no more work) —
    // unless another replica leads now: then they stop at once.
    let workers = std::mem::take(&mut *tasks.lock(&tasks.workers));
    if result.is_err() {
        workers.iter().for_each(JoinHandle::abort);
    }
    let drain = async {
        for w in workers {
            let _ = w.await;
        }
    };
    if tokio::time::timeout(opts.drain, drain).await.is_err() {
        tracing::warn!(drain = ?opts.drain, "reconciles still running at the end of the drain period");
    }
    for w in std::mem::take(&mut *tasks.lock(&tasks.watches)) {
        w.abort();
    }
    if result.is_ok() {
        match leader::release(&leases, &opts.lease).await {
            Ok(()) => tracing::info!("released the leader Lease"),
            Err(error) => tracing::warn!(%error, "could not release the leader Lease"),
        }
    }
    metrics.leader.set(0);
    let _ = stop_tx.send(true);
    let _ = admin_task.await;
    result
}

/// Renews the Lease; returns when it is lost: another replica holds it, or it could not be
/// renewed within two thirds of its duration (each attempt is cut off at that deadline, so a
/// renewal that hangs cannot keep us leading after a standby may have taken over).
async fn keep_leading(leases: Api<Lease>, cfg: LeaseConfig, metrics: Metrics, mut observer: leader::Observer) {
    let mut renewed = tokio::time::Instant::now();
    loop {
        // Stop well before a standby may take over (at the full duration).
        let deadline = renewed + cfg.duration * 2 / 3;
        tokio::time::sleep(cfg.renew_every).await;
        match tokio::time::timeout_at(deadline, leader::try_hold(&leases, &cfg, &mut observer)).await {
            Ok(Ok(true)) => {
                renewed = tokio::time::Instant::now();
                continue;
            }
            Ok(Ok(false)) => {
                tracing::error!("another replica took the leader Lease");
                break;
            }
            Ok(Err(error)) => tracing::warn!(%error, "could not renew the leader Lease"),
            Err(_) => tracing::warn!("renewing the leader Lease timed out"),
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::error!("could not renew the leader Lease in time");
            break;
        }
    }
    metrics.leader.set(0);
}

/// Starts a watch whose events `on_event` turns into namespaces to reconcile; `synced` is
/// set at the end of the first list.
fn spawn_watch<K, F>(
    api: Api<K>,
    config: watcher::Config,
    queue: Arc<WorkQueue>,
    synced: Arc<AtomicBool>,
    mut on_event: F,
) -> JoinHandle<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
    F: FnMut(watcher::Event<K>) -> Vec<String> + Send + 'static,
{
    let kind = K::kind(&()).into_owned();
    tokio::spawn(async move {
        let mut stream = watcher(api, config).default_backoff().boxed();
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => {
                    let done = matches!(event, watcher::Event::InitDone);
                    for ns in on_event(event) {
                        queue.add(&ns);
                    }
                    if done && !synced.swap(true, Ordering::SeqCst) {
                        tracing::info!(kind, "cache synced");
                    }
                }
                Err(error) => tracing::warn!(kind, %error, "watch failed; retrying"),
            }
        }
    })
}

/// Maps a watch event of Secrets onto the operator's own Secrets (by digest).
fn owned_secret_event(event: &watcher::Event<Secret>) -> Option<watcher::Event<OwnedSecret>> {
    let owned = |s: &Secret| is_managed(&s.metadata).then(|| OwnedSecret::new(s));
    Some(match event {
        // One that lost the label is no longer ours (if it was, the next reconcile fixes it).
        watcher::Event::Apply(s) => match owned(s) {
            Some(o) => watcher::Event::Apply(o),
            None => watcher::Event::Delete(OwnedSecret::new(s)),
        },
        // A Secret that lost the label is no longer ours: forget it either way.
        watcher::Event::Delete(s) => watcher::Event::Delete(OwnedSecret::new(s)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(s) => watcher::Event::InitApply(owned(s)?),
        watcher::Event::InitDone => watcher::Event::InitDone,
    })
}

async fn wait_for(flags: &[&Arc<AtomicBool>]) {
    while !flags.iter().all(|f| f.load(Ordering::SeqCst)) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The leader's work: watches, then workers. Returns only when the queue closes.
async fn lead(ctx: Arc<Context>, queue: Arc<WorkQueue>, opts: Options, health: Arc<Health>, tasks: Tasks) {
    let client = ctx.client.clone();
    let flag = || Arc::new(AtomicBool::new(false));
    let (routes_synced, profiles_synced) = (flag(), flag());
    let c = ctx.clone();
    tasks.watch(spawn_watch(
        Api::<ApiRoute>::all(client.clone()),
        watcher::Config::default(),
        queue.clone(),
        routes_synced.clone(),
        move |e| c.routes.apply(e),
    ));
    let c = ctx.clone();
    tasks.watch(spawn_watch(
        Api::<SecurityProfile>::all(client.clone()),
        watcher::Config::default(),
        queue.clone(),
        profiles_synced.clone(),
        move |e| c.profiles.apply(e),
    ));
    wait_for(&[&routes_synced, &profiles_synced]).await;

    // Knowing the references, a change of a referenced Secret asks for its namespace.
    for ns in ctx.routes.namespaces().into_iter().chain(ctx.profiles.namespaces()) {
        let (p, r) = (ctx.profiles.in_namespace(&ns), ctx.routes.in_namespace(&ns));
        let refs = referenced_secrets(p.iter().map(AsRef::as_ref), r.iter().map(AsRef::as_ref));
        ctx.secrets.set_refs(&ns, refs);
    }
    let (secrets_synced, owned_synced, configmaps_synced, pods_synced) = (flag(), flag(), flag(), flag());
    // Every Secret by its metadata only: the content of the Secrets nobody references is
    // never sent to the operator (the reconcile reads the referenced ones by name).
    let c = ctx.clone();
    tasks.watch(spawn_watch(
        Api::<PartialObjectMeta<Secret>>::all(client.clone()),
        watcher::Config::default(),
        queue.clone(),
        secrets_synced.clone(),
        move |e| c.secrets.apply(e),
    ));
    // The operator's own Secrets whole (remembered by a digest).
    let c = ctx.clone();
    tasks.watch(spawn_watch(
        Api::<Secret>::all(client.clone()),
        watcher::Config::default().labels(&managed_selector()),
        queue.clone(),
        owned_synced.clone(),
        move |e| match owned_secret_event(&e) {
            Some(owned) => c.owned_secrets.apply(owned),
            None => Vec::new(),
        },
    ));
    let c = ctx.clone();
    tasks.watch(spawn_watch(
        Api::<ConfigMap>::all(client.clone()),
        watcher::Config::default().labels(&managed_selector()),
        queue.clone(),
        configmaps_synced.clone(),
        move |e| c.configmaps.apply(e),
    ));
    // The groups' NetworkPolicies, when the operator manages them (otherwise it may have
    // no access to them at all).
    let policies_synced = flag();
    if opts.settings.network_policy {
        let c = ctx.clone();
        tasks.watch(spawn_watch(
            Api::<NetworkPolicy>::all(client.clone()),
            watcher::Config::default().labels(&managed_selector()),
            queue.clone(),
            policies_synced.clone(),
            move |e| c.network_policies.apply(e),
        ));
    } else {
        policies_synced.store(true, Ordering::SeqCst);
    }
    let c = ctx.clone();
    tasks.watch(spawn_watch(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default().labels(&format!("{INJECT_LABEL}=true")),
        queue.clone(),
        pods_synced.clone(),
        move |e| {
            let mut namespaces = c.sidecars.apply(&e);
            namespaces.extend(c.pods.apply(e));
            namespaces
        },
    ));
    wait_for(&[
        &secrets_synced,
        &owned_synced,
        &configmaps_synced,
        &pods_synced,
        &policies_synced,
    ])
    .await;
    tracing::info!(
        routes = ctx.routes.len(),
        profiles = ctx.profiles.len(),
        "caches synced; reconciling"
    );
    for ns in known_namespaces(&ctx) {
        queue.add(&ns);
    }
    health.set_ready(true);

    let (c, q, resync) = (ctx.clone(), queue.clone(), opts.resync);
    tasks.watch(tokio::spawn(async move {
        loop {
            tokio::time::sleep(resync).await;
            for ns in known_namespaces(&c) {
                q.add(&ns);
            }
        }
    }));
    for _ in 0..opts.workers.max(1) {
        tasks
            .lock(&tasks.workers)
            .push(tokio::spawn(work(ctx.clone(), queue.clone())));
    }
    // The sidecars' generations, for the routes' rollout status.
    tasks.watch(tokio::spawn(poller::poll_loop(ctx.clone(), queue.clone(), HttpProbe)));
}

/// The leader's background tasks: watches (aborted at shutdown) and workers (drained).
#[derive(Clone, Default)]
struct Tasks {
    watches: Arc<Mutex<Vec<JoinHandle<()>>>>,
    workers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Tasks {
    fn lock<'a>(&self, list: &'a Mutex<Vec<JoinHandle<()>>>) -> std::sync::MutexGuard<'a, Vec<JoinHandle<()>>> {
        list.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn watch(&self, task: JoinHandle<()>) {
        self.lock(&self.watches).push(task);
    }
}

async fn work(ctx: Arc<Context>, queue: Arc<WorkQueue>) {
    while let Some(ns) = queue.next().await {
        ctx.metrics
            .queue_depth
            .set(i64::try_from(queue.len().0).unwrap_or(i64::MAX));
        let started = Instant::now();
        let result = reconcile(&ctx, &ns).await;
        let elapsed = started.elapsed();
        ctx.metrics.duration.observe(elapsed.as_secs_f64());
        match &result {
            Ok(summary) => {
                ctx.metrics.reconciles.with_label_values(&["ok"]).inc();
                tracing::debug!(namespace = %ns, groups = summary.groups, writes = summary.writes, ?elapsed, "reconciled");
            }
            Err(error) => {
                ctx.metrics.reconciles.with_label_values(&["error"]).inc();
                ctx.metrics.errors.inc();
                tracing::warn!(namespace = %ns, %error, "reconcile failed; retrying after a backoff");
            }
        }
        queue.done(&ns, result.is_ok());
    }
}
