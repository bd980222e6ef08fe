//! In-memory copies of watched objects, by namespace, fed by watch events.
//!
//! Each store turns an event into the namespaces that need a reconcile, and only when
//! something the plan depends on changed: a write that moves only the resourceVersion (or
//! `managedFields`) asks for nothing. The reconciler also stores what its own writes
//! returned, so a reconcile that runs before the watch delivers them sees them; an event
//! older than what is stored (by resourceVersion) is ignored.
//!
//! In memory, no I/O. Layer 0 of the list in `controller`: may use no sibling module (the
//! kinds it keeps implement [`Cached`] in `objects`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher;

/// An object a [`Store`] keeps: its metadata, and what the plan depends on in it (a change
/// of the fingerprint asks for a reconcile).
pub trait Cached {
    type Print: PartialEq + Send;
    fn meta(&self) -> &ObjectMeta;
    fn fingerprint(&self) -> Self::Print;
}

type Names<K> = BTreeMap<String, Arc<K>>;

struct Inner<K> {
    by_ns: HashMap<String, Names<K>>,
    pending: Option<HashMap<String, Names<K>>>,
    synced: bool,
}

impl<K> Default for Inner<K> {
    fn default() -> Self {
        Self {
            by_ns: HashMap::new(),
            pending: None,
            synced: false,
        }
    }
}

/// One kind's objects.
pub struct Store<K> {
    inner: Mutex<Inner<K>>,
}

impl<K> Default for Store<K> {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
        }
    }
}

fn rv_of(meta: &ObjectMeta) -> Option<u64> {
    meta.resource_version.as_deref()?.parse().ok()
}

fn ns_name<K: Cached>(obj: &K) -> Option<(String, String)> {
    let meta = obj.meta();
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

impl<K: Cached> Store<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one watch event; returns the namespaces to reconcile.
    pub fn apply(&self, event: watcher::Event<K>) -> Vec<String> {
        let mut inner = self.lock();
        match event {
            watcher::Event::Apply(obj) => insert(&mut inner.by_ns, obj, false).into_iter().collect(),
            watcher::Event::Delete(obj) => {
                let Some((ns, name)) = ns_name(&obj) else { return vec![] };
                let names = inner.by_ns.entry(ns.clone()).or_default();
                let removed = names.remove(&name).is_some();
                if names.is_empty() {
                    inner.by_ns.remove(&ns);
                }
                if removed { vec![ns] } else { vec![] }
            }
            watcher::Event::Init => {
                inner.pending = Some(HashMap::new());
                vec![]
            }
            watcher::Event::InitApply(obj) => {
                if let Some((ns, name)) = ns_name(&obj) {
                    let pending = inner.pending.get_or_insert_with(HashMap::new);
                    pending.entry(ns).or_default().insert(name, Arc::new(obj));
                }
                vec![]
            }
            watcher::Event::InitDone => {
                let new = inner.pending.take().unwrap_or_default();
                let old = std::mem::replace(&mut inner.by_ns, new);
                inner.synced = true;
                // Namespaces whose objects differ from before the relist.
                let mut changed: Vec<String> = Vec::new();
                for ns in old.keys().chain(inner.by_ns.keys()) {
                    if changed.contains(ns) {
                        continue;
                    }
                    let (a, b) = (old.get(ns), inner.by_ns.get(ns));
                    let same = match (a, b) {
                        (Some(a), Some(b)) => {
                            a.len() == b.len()
                                && a.iter()
                                    .all(|(name, x)| b.get(name).is_some_and(|y| same(x.as_ref(), y.as_ref())))
                        }
                        _ => false,
                    };
                    if !same {
                        changed.push(ns.clone());
                    }
                }
                changed
            }
        }
    }

    /// Stores what a write of ours returned (unless the watch already delivered something
    /// newer).
    pub fn store_written(&self, obj: K) {
        insert(&mut self.lock().by_ns, obj, true);
    }

    /// Whether the initial list has completed.
    pub fn synced(&self) -> bool {
        self.lock().synced
    }

    /// The objects of one namespace, by name.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.lock()
            .by_ns
            .get(namespace)
            .map(|names| names.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every namespace that holds an object.
    pub fn namespaces(&self) -> Vec<String> {
        self.lock().by_ns.keys().cloned().collect()
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.lock().by_ns.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn same<K: Cached>(a: &K, b: &K) -> bool {
    a.fingerprint() == b.fingerprint()
}

/// Inserts `obj`; returns its namespace when something the plan depends on changed.
/// `only_newer`: keep the stored copy when it is newer.
fn insert<K: Cached>(by_ns: &mut HashMap<String, Names<K>>, obj: K, only_newer: bool) -> Option<String> {
    let (ns, name) = ns_name(&obj)?;
    let names = by_ns.entry(ns.clone()).or_default();
    let changed = match names.get(&name) {
        Some(old) => {
            let (old_rv, new_rv) = (rv_of(old.meta()), rv_of(obj.meta()));
            if let (Some(o), Some(n)) = (old_rv, new_rv)
                && (n < o || (only_newer && n == o))
            {
                return None;
            }
            !same(old.as_ref(), &obj)
        }
        None => true,
    };
    names.insert(name, Arc::new(obj));
    changed.then_some(ns)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    struct Cm(ConfigMap);

    impl Cached for Cm {
        type Print = Option<BTreeMap<String, String>>;
        fn meta(&self) -> &ObjectMeta {
            &self.0.metadata
        }
        fn fingerprint(&self) -> Self::Print {
            self.0.data.clone()
        }
    }

    fn cm(ns: &str, name: &str, rv: u64, value: &str) -> Cm {
        Cm(ConfigMap {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                resource_version: Some(rv.to_string()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([("k".into(), value.into())])),
            ..Default::default()
        })
    }

    #[test]
    fn only_relevant_changes_ask_for_work() {
        let store = Store::<Cm>::default();
        assert!(!store.synced());
        store.apply(watcher::Event::Init);
        store.apply(watcher::Event::InitApply(cm("a", "x", 1, "1")));
        assert_eq!(store.apply(watcher::Event::InitDone), ["a"]);
        assert!(store.synced());
        // Same content, new version: nothing to do.
        assert!(store.apply(watcher::Event::Apply(cm("a", "x", 2, "1"))).is_empty());
        assert_eq!(store.apply(watcher::Event::Apply(cm("a", "x", 3, "2"))), ["a"]);
        // An older event is ignored.
        assert!(store.apply(watcher::Event::Apply(cm("a", "x", 2, "1"))).is_empty());
        assert_eq!(store.in_namespace("a")[0].0.data.as_ref().unwrap()["k"], "2");
        // Our own write, then its event: no work.
        store.store_written(cm("a", "x", 5, "3"));
        assert!(store.apply(watcher::Event::Apply(cm("a", "x", 5, "3"))).is_empty());
        // A relist that finds the same objects asks for nothing; one that misses some does.
        store.apply(watcher::Event::Init);
        store.apply(watcher::Event::InitApply(cm("a", "x", 5, "3")));
        assert!(store.apply(watcher::Event::InitDone).is_empty());
        store.apply(watcher::Event::Init);
        assert_eq!(store.apply(watcher::Event::InitDone), ["a"]);
        assert!(store.is_empty());
        assert!(store.apply(watcher::Event::Delete(cm("a", "x", 6, "3"))).is_empty());
    }
}
