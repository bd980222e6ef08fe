//! Rollout: how many of a route's sidecars enforce the current configuration generation.
//!
//! - [`Sidecars`] (leader only, in memory): the running pods that ask for a sidecar — their
//!   group and the address of the sidecar's admin port (the container port named
//!   [`PORT_ADMIN`] at the pod's IP) — fed by the pod watch, and the generation each one
//!   reported last (pod → generation; forgotten when the pod goes, stops running or moves).
//! - [`poll`] asks every such sidecar's `GET /readyz` (JSON with the `generation` it
//!   enforces) through a [`Probe`], [`CONCURRENCY`] at a time, each bounded by a timeout, and
//!   returns the namespaces whose reports changed. The leader's loop around it
//!   (`poller::poll_loop`) polls every [`POLL_EVERY`], and every [`FAST_POLL_EVERY`] for
//!   [`FAST_FOR`] after the reconciler wrote a configuration ([`Sidecars::nudge`]); the HTTP
//!   probe is `poller::HttpProbe`.
//! - [`route_rollouts`] (pure): per route, over the groups whose configuration includes it,
//!   the group generation(s), the running pods (`sidecarsTotal`) and those whose sidecar
//!   reports its group's generation (`sidecarsCurrent`). The reconciler puts the result in
//!   the routes' desired status; a status write happens only when these numbers change.
//!
//! No API-server access and no sockets of its own (a [`Probe`] does the asking), so it sits
//! below the shared context, which holds a [`Sidecars`]. Layer 3 of the list in
//! `controller`: may use layers 0–2; uses `group` (layer 0), `status` (layer 1, for
//! [`Rollout`]) and `plan` (layer 2).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::group::group_name_for_pod;
use super::plan::{GroupPlan, Plan};
use super::status::Rollout;
use crate::webhook::PORT_ADMIN;

/// Every running sidecar is asked this often.
pub const POLL_EVERY: Duration = Duration::from_secs(5);
/// ... and this often for [`FAST_FOR`] after a configuration was written.
pub const FAST_POLL_EVERY: Duration = Duration::from_millis(500);
/// How long polls stay fast after a configuration was written.
pub const FAST_FOR: Duration = Duration::from_secs(15);
/// Sidecars asked at once.
pub const CONCURRENCY: usize = 16;
/// Bound of one request (connect and answer).
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// One running pod of a namespace, for counting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodReport {
    pub group: String,
    /// The generation its sidecar reported at the last poll (`None`: not asked yet, no
    /// answer, not ready, or no admin port).
    pub generation: Option<String>,
}

/// Per route (every route of `plan`, serving or not): its rollout over the groups whose
/// configuration includes it.
pub fn route_rollouts(groups: &BTreeMap<String, GroupPlan>, pods: &[PodReport]) -> BTreeMap<String, Rollout> {
    // (current, total) per group.
    let mut per_group: BTreeMap<&str, (i32, i32)> = BTreeMap::new();
    for pod in pods {
        let Some(group) = groups.get(&pod.group) else { continue };
        let counts = per_group.entry(pod.group.as_str()).or_default();
        counts.1 += 1;
        if pod.generation.as_deref() == Some(group.generation.as_str()) {
            counts.0 += 1;
        }
    }
    let mut out: BTreeMap<String, (BTreeSet<&str>, i32, i32)> = BTreeMap::new();
    for (name, group) in groups {
        let (current, total) = per_group.get(name.as_str()).copied().unwrap_or_default();
        for route in &group.routes {
            let entry = out.entry(route.clone()).or_default();
            entry.0.insert(group.generation.as_str());
            entry.1 += current;
            entry.2 += total;
        }
    }
    out.into_iter()
        .map(|(route, (generations, current, total))| {
            let config_generation =
                (!generations.is_empty()).then(|| generations.into_iter().collect::<Vec<_>>().join(","));
            (
                route,
                Rollout {
                    config_generation,
                    current,
                    total,
                },
            )
        })
        .collect()
}

/// Puts every route's rollout into its desired status (a route no group serves: no
/// generation, 0 of 0).
pub fn fill(plan: &mut Plan, pods: &[PodReport]) {
    let mut rollouts = route_rollouts(&plan.groups, pods);
    for (route, desired) in plan.routes.iter_mut() {
        desired.rollout = Some(rollouts.remove(route).unwrap_or_default());
    }
}

type Key = (String, String);

/// Where a running pod's sidecar answers.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    group: String,
    /// `None`: the pod has no container port named [`PORT_ADMIN`].
    admin: Option<SocketAddr>,
}

/// The admin address of a pod's sidecar: its IP and the container port named
/// [`PORT_ADMIN`] (a native sidecar is an init container).
fn admin_addr(pod: &Pod) -> Option<SocketAddr> {
    let ip: IpAddr = pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
    let spec = pod.spec.as_ref()?;
    let port = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(PORT_ADMIN))?;
    Some(SocketAddr::new(ip, u16::try_from(port.container_port).ok()?))
}

/// A pod that counts: running and not being deleted.
fn target_of(pod: &Pod) -> Option<(Key, Target)> {
    let key = (pod.metadata.namespace.clone()?, pod.metadata.name.clone()?);
    let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    if !running || pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    Some((
        key,
        Target {
            group: group_name_for_pod(&labels),
            admin: admin_addr(pod),
        },
    ))
}

#[derive(Default)]
struct Inner {
    targets: HashMap<Key, Target>,
    pending: Option<HashMap<Key, Target>>,
    /// What each target reported at the last poll.
    reported: HashMap<Key, Option<String>>,
    /// A first poll has completed: counts mean something (until then the reconciler leaves
    /// the routes' rollout fields as they are, so a restart does not flap them to 0).
    polled: bool,
    fast_until: Option<Instant>,
}

impl Inner {
    /// Sets a pod's target; forgets its report when it moved. True when it changed.
    fn set(&mut self, key: Key, target: Option<Target>) -> bool {
        let old = match target {
            Some(t) => self.targets.insert(key.clone(), t),
            None => self.targets.remove(&key),
        };
        let new = self.targets.get(&key);
        if old.as_ref() != new {
            self.reported.remove(&key);
            true
        } else {
            false
        }
    }
}

/// The leader's view of running sidecars and the generations they report.
#[derive(Default)]
pub struct Sidecars {
    inner: Mutex<Inner>,
    /// Wakes the poller (`poller::poll_loop`).
    pub(super) nudged: Notify,
}

impl Sidecars {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one event of the pod watch; returns the namespaces whose running pods changed.
    pub fn apply(&self, event: &watcher::Event<Pod>) -> Vec<String> {
        let mut inner = self.lock();
        let key_of = |pod: &Pod| Some((pod.metadata.namespace.clone()?, pod.metadata.name.clone()?));
        match event {
            watcher::Event::Apply(pod) | watcher::Event::Delete(pod) => {
                let Some(key) = key_of(pod) else { return vec![] };
                let target = match event {
                    watcher::Event::Apply(_) => target_of(pod).map(|(_, t)| t),
                    _ => None,
                };
                let ns = key.0.clone();
                if inner.set(key, target) { vec![ns] } else { vec![] }
            }
            watcher::Event::Init => {
                inner.pending = Some(HashMap::new());
                vec![]
            }
            watcher::Event::InitApply(pod) => {
                if let Some((key, target)) = target_of(pod) {
                    inner.pending.get_or_insert_with(HashMap::new).insert(key, target);
                }
                vec![]
            }
            watcher::Event::InitDone => {
                let new = inner.pending.take().unwrap_or_default();
                let keys: BTreeSet<Key> = inner.targets.keys().chain(new.keys()).cloned().collect();
                let mut changed = BTreeSet::new();
                for key in keys {
                    let target = new.get(&key).cloned();
                    let ns = key.0.clone();
                    if inner.set(key, target) {
                        changed.insert(ns);
                    }
                }
                changed.into_iter().collect()
            }
        }
    }

    /// The running pods of `namespace` and what their sidecars reported; `None` before the
    /// first poll.
    pub fn reports_in(&self, namespace: &str) -> Option<Vec<PodReport>> {
        let inner = self.lock();
        if !inner.polled {
            return None;
        }
        let reports = inner
            .targets
            .iter()
            .filter(|(k, _)| k.0 == namespace)
            .map(|(k, t)| PodReport {
                group: t.group.clone(),
                generation: inner.reported.get(k).cloned().flatten(),
            })
            .collect();
        Some(reports)
    }

    /// Number of pods whose report is kept (for tests: it shrinks when pods go).
    pub fn reported_len(&self) -> usize {
        self.lock().reported.len()
    }

    /// A configuration was written: poll now and often for a while.
    pub fn nudge(&self) {
        self.lock().fast_until = Some(Instant::now() + FAST_FOR);
        self.nudged.notify_one();
    }

    /// How long to wait before the next poll.
    pub(super) fn next_wait(&self) -> Duration {
        let mut inner = self.lock();
        match inner.fast_until {
            Some(until) if Instant::now() < until => FAST_POLL_EVERY,
            _ => {
                inner.fast_until = None;
                POLL_EVERY
            }
        }
    }
}

/// Asks one sidecar for the generation it enforces.
pub trait Probe: Send + Sync {
    /// The generation the sidecar at `admin` reports (`None`: no answer in time, not ready,
    /// or an unreadable answer).
    fn generation(&self, admin: SocketAddr) -> impl Future<Output = Option<String>> + Send;
}

/// Asks every running sidecar once; returns the namespaces whose reports changed.
pub async fn poll<P: Probe>(sidecars: &Sidecars, probe: &P) -> Vec<String> {
    let targets: Vec<(Key, SocketAddr)> = sidecars
        .lock()
        .targets
        .iter()
        .filter_map(|(k, t)| Some((k.clone(), t.admin?)))
        .collect();
    let results: Vec<(Key, SocketAddr, Option<String>)> = stream::iter(targets)
        .map(|(key, addr)| async move {
            let generation = tokio::time::timeout(TIMEOUT, probe.generation(addr))
                .await
                .ok()
                .flatten()
                .filter(|g| !g.is_empty());
            (key, addr, generation)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut inner = sidecars.lock();
    inner.polled = true;
    let mut changed = BTreeSet::new();
    for (key, addr, generation) in results {
        // The pod may have gone or moved meanwhile.
        if inner.targets.get(&key).and_then(|t| t.admin) != Some(addr) {
            continue;
        }
        let before = inner.reported.insert(key.clone(), generation.clone());
        if before.flatten() != generation {
            changed.insert(key.0);
        }
    }
    changed.into_iter().collect()
}

#[cfg(test)]
mod tests;
