//! In-memory views fed by watches, kept deliberately small:
//! - [`SecretCache`]: every Secret is watched by its metadata only (no content is ever
//!   listed or watched); a profile's or route's referenced Secret is read by name when its
//!   content is needed and kept while it stays referenced and unchanged (a new
//!   resourceVersion in the metadata watch makes it stale: read again), so a changed password
//!   takes effect and no other secret is ever in the operator's memory;
//!   Kubernetes does not order events across watches, so a Secret the metadata watch has not
//!   reported (yet) is not taken as missing: the reconcile confirms it with a read
//!   ([`Resolved::unknown`]) before a profile or route is refused with `SecretNotFound`;
//! - [`PodIndex`]: the labels of pods that ask for a sidecar, and nothing else, so that pod
//!   status churn never triggers work.
//!
//! Both turn watch events into the namespaces that need a reconcile.
//!
//! In memory, no I/O. Layer 0 of the list in `controller`: may use no sibling module.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;

type Key = (String, String);

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Key> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

/// What is known of one existing Secret.
#[derive(Clone, Debug, Default)]
struct Entry {
    /// Its resourceVersion, as last seen (metadata watch, or a read).
    version: Option<String>,
    /// Its content, while referenced (current when its resourceVersion is `version`).
    content: Option<Arc<Secret>>,
}

impl Entry {
    fn current(&self) -> Option<&Arc<Secret>> {
        self.content
            .as_ref()
            .filter(|s| s.metadata.resource_version == self.version)
    }
}

/// How many Secret deletions the cache remembers, so that a read that raced with a deletion
/// does not bring the Secret back.
const DELETIONS: usize = 4096;

/// Recently deleted Secrets: uid and resourceVersion of the deletion, bounded.
#[derive(Default)]
struct Deletions {
    by_key: HashMap<Key, (Option<String>, Option<u64>)>,
    order: VecDeque<Key>,
}

impl Deletions {
    fn record(&mut self, key: Key, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
        let rv = meta.resource_version.as_deref().and_then(|v| v.parse().ok());
        if self.by_key.insert(key.clone(), (meta.uid.clone(), rv)).is_none() {
            self.order.push_back(key);
        }
        while self.by_key.len() > DELETIONS {
            let Some(old) = self.order.pop_front() else { break };
            self.by_key.remove(&old);
        }
    }

    fn forget(&mut self, key: &Key) {
        if self.by_key.remove(key).is_some() {
            self.order.retain(|k| k != key);
        }
    }

    /// Whether a Secret read now may be the one deleted (then it is not stored).
    fn buried(&self, key: &Key, secret: &Secret) -> bool {
        let Some((uid, rv)) = self.by_key.get(key) else {
            return false;
        };
        let read_rv: Option<u64> = secret.metadata.resource_version.as_deref().and_then(|v| v.parse().ok());
        match (uid, &secret.metadata.uid) {
            (Some(dead), Some(read)) if dead != read => false,
            (Some(_), Some(_)) => true,
            _ => !matches!((rv, read_rv), (Some(dead), Some(read)) if read > *dead),
        }
    }
}

#[derive(Default)]
struct SecretInner {
    /// Referenced Secret names per namespace.
    refs: HashMap<String, BTreeSet<String>>,
    entries: HashMap<Key, Entry>,
    /// Being rebuilt by a relist.
    pending: Option<HashMap<Key, Entry>>,
    deleted: Deletions,
}

impl SecretInner {
    fn referenced(&self, key: &Key) -> bool {
        self.refs.get(&key.0).is_some_and(|names| names.contains(&key.1))
    }

    /// The entry for a Secret seen at `version`: content kept only while referenced and
    /// still of that version.
    fn seen(&self, key: &Key, version: Option<String>) -> Entry {
        let content = self
            .entries
            .get(key)
            .and_then(|e| e.content.clone())
            .filter(|c| self.referenced(key) && c.metadata.resource_version == version);
        Entry { version, content }
    }
}

/// The Secrets of every namespace by metadata, the referenced ones' content, and a reverse
/// index of references.
#[derive(Default)]
pub struct SecretCache {
    inner: Mutex<SecretInner>,
}

/// What a namespace's references resolve to.
#[derive(Debug, Default)]
pub struct Resolved {
    /// Referenced Secrets whose current content is in the cache.
    pub cached: Vec<Arc<Secret>>,
    /// Referenced Secrets that exist but whose current content is not cached: read them.
    pub fetch: Vec<String>,
    /// Referenced Secrets the metadata watch has not reported: read them too, to confirm
    /// they are missing (the watch of Secrets may lag behind the watch that delivered the
    /// reference) before anything is refused for it.
    pub unknown: Vec<String>,
}

impl SecretCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, SecretInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one event of the metadata-only watch of Secrets; returns the namespaces whose
    /// referenced Secrets changed (or appeared, or went).
    pub fn apply(&self, event: watcher::Event<PartialObjectMeta<Secret>>) -> Vec<String> {
        let mut inner = self.lock();
        match event {
            watcher::Event::Apply(meta) => {
                let Some(key) = key_of(&meta.metadata) else {
                    return vec![];
                };
                let unchanged = inner
                    .entries
                    .get(&key)
                    .is_some_and(|e| e.version == meta.metadata.resource_version);
                let entry = inner.seen(&key, meta.metadata.resource_version);
                inner.entries.insert(key.clone(), entry);
                inner.deleted.forget(&key);
                if inner.referenced(&key) && !unchanged {
                    vec![key.0]
                } else {
                    vec![]
                }
            }
            watcher::Event::Delete(meta) => {
                let Some(key) = key_of(&meta.metadata) else {
                    return vec![];
                };
                inner.entries.remove(&key);
                inner.deleted.record(key.clone(), &meta.metadata);
                if inner.referenced(&key) { vec![key.0] } else { vec![] }
            }
            watcher::Event::Init => {
                inner.pending = Some(HashMap::new());
                vec![]
            }
            watcher::Event::InitApply(meta) => {
                if let Some(key) = key_of(&meta.metadata) {
                    let entry = inner.seen(&key, meta.metadata.resource_version);
                    inner.pending.get_or_insert_with(HashMap::new).insert(key, entry);
                }
                vec![]
            }
            watcher::Event::InitDone => {
                if let Some(pending) = inner.pending.take() {
                    inner.entries = pending;
                }
                inner.refs.keys().cloned().collect()
            }
        }
    }

    /// Records what `namespace` references now (dropping the content of Secrets it no
    /// longer references) and resolves the references.
    pub fn set_refs(&self, namespace: &str, names: BTreeSet<String>) -> Resolved {
        let mut inner = self.lock();
        let inner = &mut *inner;
        for (key, entry) in inner.entries.iter_mut() {
            if key.0 == namespace && !names.contains(&key.1) {
                entry.content = None;
            }
        }
        let mut resolved = Resolved::default();
        for name in &names {
            match inner.entries.get(&(namespace.to_owned(), name.clone())) {
                Some(entry) => match entry.current() {
                    Some(secret) => resolved.cached.push(secret.clone()),
                    None => resolved.fetch.push(name.clone()),
                },
                // Not known to exist: confirm with a read (a later watch event asks again).
                None => resolved.unknown.push(name.clone()),
            }
        }
        if names.is_empty() {
            inner.refs.remove(namespace);
        } else {
            inner.refs.insert(namespace.to_owned(), names);
        }
        resolved
    }

    /// Stores a Secret read for a reference (`None`: it turned out not to exist). A read
    /// older than what the watch reported since stays stale, and is read again; a read of a
    /// Secret whose deletion the watch reported since is dropped.
    pub fn fetched(&self, namespace: &str, name: &str, secret: Option<Secret>) {
        let mut inner = self.lock();
        let key = (namespace.to_owned(), name.to_owned());
        match secret {
            Some(secret) if !inner.entries.contains_key(&key) && inner.deleted.buried(&key, &secret) => {}
            Some(secret) if inner.referenced(&key) => {
                let version = secret.metadata.resource_version.clone();
                let entry = inner
                    .entries
                    .entry(key)
                    .or_insert_with(|| Entry { version, content: None });
                entry.content = Some(Arc::new(secret));
            }
            Some(_) => {}
            None => {
                inner.entries.remove(&key);
            }
        }
    }

    /// Number of Secrets whose content is kept.
    pub fn cached_len(&self) -> usize {
        self.lock().entries.values().filter(|e| e.content.is_some()).count()
    }
}

#[derive(Default)]
struct PodInner {
    pods: HashMap<Key, BTreeMap<String, String>>,
    pending: Option<HashMap<Key, BTreeMap<String, String>>>,
}

/// Labels of the pods that ask for a sidecar.
#[derive(Default)]
pub struct PodIndex {
    inner: Mutex<PodInner>,
}

impl PodIndex {
    fn lock(&self) -> std::sync::MutexGuard<'_, PodInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one watch event; returns the namespaces whose pod label sets changed.
    pub fn apply(&self, event: watcher::Event<Pod>) -> Vec<String> {
        let mut inner = self.lock();
        let labels = |pod: &Pod| pod.metadata.labels.clone().unwrap_or_default();
        match event {
            watcher::Event::Apply(pod) => {
                let Some(key) = key_of(&pod.metadata) else {
                    return vec![];
                };
                let labels = labels(&pod);
                if inner.pods.get(&key) == Some(&labels) {
                    return vec![];
                }
                inner.pods.insert(key.clone(), labels);
                vec![key.0]
            }
            watcher::Event::Delete(pod) => {
                let Some(key) = key_of(&pod.metadata) else {
                    return vec![];
                };
                match inner.pods.remove(&key) {
                    Some(_) => vec![key.0],
                    None => vec![],
                }
            }
            watcher::Event::Init => {
                inner.pending = Some(HashMap::new());
                vec![]
            }
            watcher::Event::InitApply(pod) => {
                if let Some(key) = key_of(&pod.metadata) {
                    let labels = labels(&pod);
                    inner.pending.get_or_insert_with(HashMap::new).insert(key, labels);
                }
                vec![]
            }
            watcher::Event::InitDone => {
                let pending = inner.pending.take().unwrap_or_default();
                let old = std::mem::replace(&mut inner.pods, pending);
                let namespaces: BTreeSet<String> = old.keys().chain(inner.pods.keys()).map(|k| k.0.clone()).collect();
                namespaces.into_iter().collect()
            }
        }
    }

    /// Labels of each pod in `namespace`.
    pub fn labels_in(&self, namespace: &str) -> Vec<BTreeMap<String, String>> {
        let inner = self.lock();
        let mut pods: Vec<(&Key, &BTreeMap<String, String>)> =
            inner.pods.iter().filter(|(k, _)| k.0 == namespace).collect();
        pods.sort_by(|a, b| a.0.cmp(b.0));
        pods.into_iter().map(|(_, labels)| labels.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn secret(name: &str, version: &str, value: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(version.into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([("k".into(), ByteString(value.into()))])),
            ..Default::default()
        }
    }

    /// What the metadata watch delivers of a Secret.
    fn meta(name: &str, version: &str) -> PartialObjectMeta<Secret> {
        PartialObjectMeta {
            metadata: secret(name, version, "").metadata,
            ..Default::default()
        }
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_referenced_secrets_are_read_and_kept() {
        let cache = SecretCache::default();
        for e in [
            watcher::Event::Init,
            watcher::Event::InitApply(meta("used", "1")),
            watcher::Event::InitApply(meta("other", "2")),
            watcher::Event::InitDone,
        ] {
            cache.apply(e);
        }
        // Nothing referenced yet: nothing cached; the first resolve asks for a read.
        assert_eq!(cache.cached_len(), 0);
        let resolved = cache.set_refs("ns", names(&["used", "missing"]));
        assert_eq!(resolved.fetch, ["used"]);
        cache.fetched("ns", "used", Some(secret("used", "1", "one")));
        assert_eq!(cache.set_refs("ns", names(&["used"])).cached.len(), 1);
        // Reading an unreferenced Secret keeps nothing.
        cache.fetched("ns", "other", Some(secret("other", "2", "two")));
        assert_eq!(cache.cached_len(), 1);

        // The same version again (our own read, a resync) asks for nothing.
        assert!(cache.apply(watcher::Event::Apply(meta("used", "1"))).is_empty());
        // A change of a referenced Secret asks for its namespace and a new read; of another
        // one, nothing.
        assert_eq!(cache.apply(watcher::Event::Apply(meta("used", "3"))), ["ns"]);
        assert!(cache.apply(watcher::Event::Apply(meta("other", "4"))).is_empty());
        let resolved = cache.set_refs("ns", names(&["used"]));
        assert!(resolved.cached.is_empty());
        assert_eq!(resolved.fetch, ["used"]);
        cache.fetched("ns", "used", Some(secret("used", "3", "new")));
        let resolved = cache.set_refs("ns", names(&["used"]));
        assert_eq!(resolved.cached[0].data.as_ref().unwrap()["k"].0, b"new");

        // Dropping the reference drops the content.
        cache.set_refs("ns", names(&[]));
        assert_eq!(cache.cached_len(), 0);
        assert!(cache.apply(watcher::Event::Delete(meta("used", "3"))).is_empty());
    }

    #[test]
    fn a_read_older_than_the_watch_is_read_again() {
        let cache = SecretCache::default();
        cache.apply(watcher::Event::InitDone);
        cache.set_refs("ns", names(&["s"]));
        assert_eq!(cache.apply(watcher::Event::Apply(meta("s", "5"))), ["ns"]);
        // A read that started before version 5 was written.
        cache.fetched("ns", "s", Some(secret("s", "4", "old")));
        assert_eq!(cache.set_refs("ns", names(&["s"])).fetch, ["s"]);
        cache.fetched("ns", "s", Some(secret("s", "5", "new")));
        assert_eq!(cache.set_refs("ns", names(&["s"])).cached.len(), 1);
    }

    #[test]
    fn a_secret_created_after_its_reference_is_picked_up() {
        let cache = SecretCache::default();
        cache.apply(watcher::Event::InitDone);
        assert!(cache.set_refs("ns", names(&["later"])).cached.is_empty());
        assert_eq!(cache.apply(watcher::Event::Apply(meta("later", "1"))), ["ns"]);
        assert_eq!(cache.set_refs("ns", names(&["later"])).fetch, ["later"]);
        assert_eq!(cache.apply(watcher::Event::Delete(meta("later", "1"))), ["ns"]);
        let resolved = cache.set_refs("ns", names(&["later"]));
        assert!(resolved.fetch.is_empty());
        assert_eq!(resolved.unknown, ["later"], "a missing Secret is confirmed by a read");
    }

    /// Issue 15, item 10: the Secret's event is late (another watch); the read finds it.
    #[test]
    fn a_secret_the_watch_has_not_reported_is_read_not_missing() {
        let cache = SecretCache::default();
        cache.apply(watcher::Event::InitDone);
        let resolved = cache.set_refs("ns", names(&["early"]));
        assert!(resolved.cached.is_empty() && resolved.fetch.is_empty());
        assert_eq!(resolved.unknown, ["early"]);
        cache.fetched("ns", "early", Some(secret("early", "7", "v")));
        assert_eq!(cache.set_refs("ns", names(&["early"])).cached.len(), 1);
        // Its late event changes nothing.
        assert!(cache.apply(watcher::Event::Apply(meta("early", "7"))).is_empty());
        assert_eq!(cache.set_refs("ns", names(&["early"])).cached.len(), 1);
    }

    #[test]
    fn a_read_that_raced_with_a_deletion_does_not_bring_the_secret_back() {
        let cache = SecretCache::default();
        cache.apply(watcher::Event::InitDone);
        cache.set_refs("ns", names(&["s"]));
        cache.apply(watcher::Event::Apply(meta("s", "1")));
        // Read at version 1; the deletion (version 2) is reported before the read returns.
        cache.apply(watcher::Event::Delete(meta("s", "2")));
        cache.fetched("ns", "s", Some(secret("s", "1", "old")));
        let resolved = cache.set_refs("ns", names(&["s"]));
        assert!(resolved.cached.is_empty() && resolved.fetch.is_empty());
        assert_eq!(resolved.unknown, ["s"]);
        // Created again (a newer version): read and kept.
        cache.fetched("ns", "s", Some(secret("s", "3", "new")));
        assert_eq!(cache.set_refs("ns", names(&["s"])).cached.len(), 1);
    }

    #[test]
    fn a_relist_keeps_current_content() {
        let cache = SecretCache::default();
        cache.apply(watcher::Event::InitDone);
        cache.set_refs("ns", names(&["s"]));
        cache.apply(watcher::Event::Apply(meta("s", "1")));
        cache.fetched("ns", "s", Some(secret("s", "1", "v")));
        for e in [
            watcher::Event::Init,
            watcher::Event::InitApply(meta("s", "1")),
            watcher::Event::InitDone,
        ] {
            cache.apply(e);
        }
        assert_eq!(
            cache.set_refs("ns", names(&["s"])).cached.len(),
            1,
            "no read after a relist"
        );
    }

    fn pod(name: &str, app: &str, phase: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                labels: Some(BTreeMap::from([("app".into(), app.into())])),
                ..Default::default()
            },
            status: Some(k8s_openapi::api::core::v1::PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pods_trigger_work_only_when_labels_change() {
        let index = PodIndex::default();
        assert_eq!(index.apply(watcher::Event::Apply(pod("p", "a", "Pending"))), ["ns"]);
        assert!(index.apply(watcher::Event::Apply(pod("p", "a", "Running"))).is_empty());
        assert_eq!(index.apply(watcher::Event::Apply(pod("p", "b", "Running"))), ["ns"]);
        assert_eq!(index.labels_in("ns")[0]["app"], "b");
        assert_eq!(index.apply(watcher::Event::Delete(pod("p", "b", "Running"))), ["ns"]);
        assert!(index.labels_in("ns").is_empty());
    }
}
