//! In-memory views fed by watches, kept deliberately small:
//! - [`SecretCache`]: every Secret is watched, but only those a profile or route references
//!   are kept with their data (the reverse index says which), so a changed password takes
//!   effect and no other secret lingers in the operator's memory;
//! - [`PodIndex`]: the labels of pods that ask for a sidecar, and nothing else, so that pod
//!   status churn never triggers work.
//!
//! Both turn watch events into the namespaces that need a reconcile.
//!
//! In memory, no I/O. Layer 0 of the list in `controller`: may use no sibling module.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::runtime::watcher;

type Key = (String, String);

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Key> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

#[derive(Clone, Debug)]
enum Entry {
    /// Exists, content not kept (not referenced when it was last seen).
    Known,
    Cached(Arc<Secret>),
}

#[derive(Default)]
struct SecretInner {
    /// Referenced Secret names per namespace.
    refs: HashMap<String, BTreeSet<String>>,
    entries: HashMap<Key, Entry>,
    /// Being rebuilt by a relist.
    pending: Option<HashMap<Key, Entry>>,
}

impl SecretInner {
    fn referenced(&self, key: &Key) -> bool {
        self.refs.get(&key.0).is_some_and(|names| names.contains(&key.1))
    }

    fn entry_for(&self, key: &Key, secret: Secret) -> Entry {
        if self.referenced(key) {
            Entry::Cached(Arc::new(secret))
        } else {
            Entry::Known
        }
    }
}

/// The referenced Secrets, by namespace, with a reverse index of references.
#[derive(Default)]
pub struct SecretCache {
    inner: Mutex<SecretInner>,
}

/// What a namespace's references resolve to.
#[derive(Debug, Default)]
pub struct Resolved {
    /// Referenced Secrets in the cache.
    pub cached: Vec<Arc<Secret>>,
    /// Referenced Secrets that exist but whose content is not cached yet: fetch them.
    pub fetch: Vec<String>,
}

impl SecretCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, SecretInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one watch event; returns the namespaces whose referenced Secrets changed.
    pub fn apply(&self, event: watcher::Event<Secret>) -> Vec<String> {
        let mut inner = self.lock();
        match event {
            watcher::Event::Apply(secret) => {
                let Some(key) = key_of(&secret.metadata) else {
                    return vec![];
                };
                let entry = inner.entry_for(&key, secret);
                let changed = matches!(entry, Entry::Cached(_));
                inner.entries.insert(key.clone(), entry);
                if changed { vec![key.0] } else { vec![] }
            }
            watcher::Event::Delete(secret) => {
                let Some(key) = key_of(&secret.metadata) else {
                    return vec![];
                };
                inner.entries.remove(&key);
                if inner.referenced(&key) { vec![key.0] } else { vec![] }
            }
            watcher::Event::Init => {
                inner.pending = Some(HashMap::new());
                vec![]
            }
            watcher::Event::InitApply(secret) => {
                if let Some(key) = key_of(&secret.metadata) {
                    let entry = inner.entry_for(&key, secret);
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
                *entry = Entry::Known;
            }
        }
        let mut resolved = Resolved::default();
        for name in &names {
            match inner.entries.get(&(namespace.to_owned(), name.clone())) {
                Some(Entry::Cached(secret)) => resolved.cached.push(secret.clone()),
                Some(Entry::Known) => resolved.fetch.push(name.clone()),
                None => {}
            }
        }
        if names.is_empty() {
            inner.refs.remove(namespace);
        } else {
            inner.refs.insert(namespace.to_owned(), names);
        }
        resolved
    }

    /// Stores a Secret fetched for a reference (`None`: it turned out not to exist).
    pub fn fetched(&self, namespace: &str, name: &str, secret: Option<Secret>) {
        let mut inner = self.lock();
        let key = (namespace.to_owned(), name.to_owned());
        match secret {
            Some(secret) => {
                let entry = inner.entry_for(&key, secret);
                inner.entries.insert(key, entry);
            }
            None => {
                inner.entries.remove(&key);
            }
        }
    }

    /// Number of Secrets whose content is kept.
    pub fn cached_len(&self) -> usize {
        self.lock()
            .entries
            .values()
            .filter(|e| matches!(e, Entry::Cached(_)))
            .count()
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

    fn secret(name: &str, value: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([("k".into(), ByteString(value.into()))])),
            ..Default::default()
        }
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_referenced_secrets_keep_their_content() {
        let cache = SecretCache::default();
        for e in [
            watcher::Event::Init,
            watcher::Event::InitApply(secret("used", "1")),
            watcher::Event::InitApply(secret("other", "2")),
            watcher::Event::InitDone,
        ] {
            cache.apply(e);
        }
        // Nothing referenced yet: nothing cached; the first resolve asks for a fetch.
        assert_eq!(cache.cached_len(), 0);
        let resolved = cache.set_refs("ns", names(&["used", "missing"]));
        assert_eq!(resolved.fetch, ["used"]);
        cache.fetched("ns", "used", Some(secret("used", "1")));
        assert_eq!(cache.set_refs("ns", names(&["used"])).cached.len(), 1);

        // A change of a referenced Secret asks for its namespace; of another one, nothing.
        assert_eq!(cache.apply(watcher::Event::Apply(secret("used", "new"))), ["ns"]);
        assert!(cache.apply(watcher::Event::Apply(secret("other", "new"))).is_empty());
        let resolved = cache.set_refs("ns", names(&["used"]));
        assert_eq!(resolved.cached[0].data.as_ref().unwrap()["k"].0, b"new");

        // Dropping the reference drops the content.
        cache.set_refs("ns", names(&[]));
        assert_eq!(cache.cached_len(), 0);
        assert!(cache.apply(watcher::Event::Delete(secret("used", ""))).is_empty());
    }

    #[test]
    fn a_secret_created_after_its_reference_is_picked_up() {
        let cache = SecretCache::default();
        cache.apply(watcher::Event::InitDone);
        assert!(cache.set_refs("ns", names(&["later"])).cached.is_empty());
        assert_eq!(cache.apply(watcher::Event::Apply(secret("later", "x"))), ["ns"]);
        assert_eq!(cache.set_refs("ns", names(&["later"])).cached.len(), 1);
        assert_eq!(cache.apply(watcher::Event::Delete(secret("later", "x"))), ["ns"]);
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
