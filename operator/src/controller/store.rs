//! In-memory copies of watched objects, by namespace, fed by watch events.
//!
//! Each store turns an event into the namespaces that need a reconcile, and only when
//! something the plan depends on changed: a write that moves only the resourceVersion (or
//! `managedFields`) asks for nothing. The reconciler also stores what its own writes
//! returned, so a reconcile that runs before the watch delivers them sees them; an event
//! older than what is stored (by resourceVersion) is ignored.
//!
//! A write's response never brings back a deleted object: a deletion the watch reports (or
//! a relist that no longer finds an object) leaves a tombstone (uid and resourceVersion),
//! and a written object is stored over a tombstone only when it is provably another,
//! newer object (another uid, or without uids a newer resourceVersion). The watch is the
//! truth; a write's response only saves a reconcile from waiting for it, so dropping one is
//! always safe. Tombstones are bounded ([`TOMBSTONES`] per store, oldest forgotten first)
//! and cleared when the watch reports the name again.
//!
//! In memory, no I/O. Layer 0 of the list in `controller`: may use no sibling module (the
//! kinds it keeps implement [`Cached`] in `objects`).

use std::collections::{BTreeMap, HashMap, VecDeque};
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

/// How many deletions one store remembers (see the module doc); a write's response comes
/// back within a request timeout, long before this many deletions pass in practice.
pub const TOMBSTONES: usize = 4096;

/// What is remembered of a deleted object.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Tombstone {
    uid: Option<String>,
    /// The deletion's resourceVersion (`None`: unknown, e.g. found gone by a relist).
    rv: Option<u64>,
    /// Insertion order, for eviction.
    seq: u64,
}

/// Deleted (namespace, name)s, bounded.
#[derive(Default)]
struct Tombstones {
    by_key: HashMap<(String, String), Tombstone>,
    order: VecDeque<((String, String), u64)>,
    seq: u64,
}

impl Tombstones {
    fn bury(&mut self, key: (String, String), meta: &ObjectMeta, rv: Option<u64>) {
        self.seq += 1;
        let seq = self.seq;
        self.by_key.insert(
            key.clone(),
            Tombstone {
                uid: meta.uid.clone(),
                rv,
                seq,
            },
        );
        self.order.push_back((key, seq));
        while self.by_key.len() > TOMBSTONES {
            let Some((old, seq)) = self.order.pop_front() else {
                break;
            };
            if self.by_key.get(&old).is_some_and(|t| t.seq == seq) {
                self.by_key.remove(&old);
            }
        }
        // Entries superseded by a newer tombstone of the same key.
        if self.order.len() > 2 * TOMBSTONES {
            let by_key = &self.by_key;
            self.order.retain(|(k, s)| by_key.get(k).is_some_and(|t| t.seq == *s));
        }
    }

    fn clear(&mut self, key: &(String, String)) {
        self.by_key.remove(key);
    }

    /// Whether a written object may be stored under `key`: no tombstone, or the object is
    /// provably another, newer one.
    fn allows(&self, key: &(String, String), meta: &ObjectMeta) -> bool {
        let Some(t) = self.by_key.get(key) else { return true };
        match (&t.uid, &meta.uid) {
            (Some(dead), Some(uid)) => dead != uid,
            _ => matches!((t.rv, rv_of(meta)), (Some(dead), Some(rv)) if rv > dead),
        }
    }

    fn len(&self) -> usize {
        self.by_key.len()
    }
}

struct Inner<K> {
    by_ns: HashMap<String, Names<K>>,
    pending: Option<HashMap<String, Names<K>>>,
    synced: bool,
    tombstones: Tombstones,
}

impl<K> Default for Inner<K> {
    fn default() -> Self {
        Self {
            by_ns: HashMap::new(),
            pending: None,
            synced: false,
            tombstones: Tombstones::default(),
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
            watcher::Event::Apply(obj) => {
                if let Some(key) = ns_name(&obj) {
                    inner.tombstones.clear(&key);
                }
                insert(&mut inner.by_ns, obj, false).into_iter().collect()
            }
            watcher::Event::Delete(obj) => {
                let Some((ns, name)) = ns_name(&obj) else { return vec![] };
                inner
                    .tombstones
                    .bury((ns.clone(), name.clone()), obj.meta(), rv_of(obj.meta()));
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
                // What the relist found exists; what it no longer finds was deleted.
                for (ns, names) in &old {
                    for (name, obj) in names {
                        let key = (ns.clone(), name.clone());
                        if !inner.by_ns.get(ns).is_some_and(|n| n.contains_key(name)) {
                            inner.tombstones.bury(key, obj.meta(), None);
                        }
                    }
                }
                let found: Vec<(String, String)> = inner
                    .by_ns
                    .iter()
                    .flat_map(|(ns, names)| names.keys().map(move |name| (ns.clone(), name.clone())))
                    .collect();
                for key in &found {
                    inner.tombstones.clear(key);
                }
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

    /// Stores what a write of ours returned, unless the watch already delivered something
    /// newer or reported the object deleted (a write's response never resurrects it).
    /// Returns whether it was stored.
    pub fn store_written(&self, obj: K) -> bool {
        let mut inner = self.lock();
        let Some(key) = ns_name(&obj) else { return false };
        if !inner.tombstones.allows(&key, obj.meta()) {
            return false;
        }
        inner.tombstones.clear(&key);
        let (ns, name) = key;
        let stored = match inner.by_ns.get(&ns).and_then(|names| names.get(&name)) {
            Some(old) => !is_older_or_same(old.meta(), obj.meta()),
            None => true,
        };
        if stored {
            insert(&mut inner.by_ns, obj, true);
        }
        stored
    }

    /// Number of remembered deletions (at most [`TOMBSTONES`]).
    pub fn tombstones(&self) -> usize {
        self.lock().tombstones.len()
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

/// Whether `new` is not newer than `old` (by resourceVersion, when both have one).
fn is_older_or_same(old: &ObjectMeta, new: &ObjectMeta) -> bool {
    matches!((rv_of(old), rv_of(new)), (Some(o), Some(n)) if n <= o)
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

    fn with_uid(mut c: Cm, uid: &str) -> Cm {
        c.0.metadata.uid = Some(uid.into());
        c
    }

    /// Issue 15, item 8: a status write in flight when the watch reports the deletion.
    #[test]
    fn a_write_response_never_resurrects_a_deleted_object() {
        let store = Store::<Cm>::default();
        store.apply(watcher::Event::InitDone);
        store.apply(watcher::Event::Apply(with_uid(cm("a", "x", 1, "1"), "u1")));
        // Our write lands at 2; the object is deleted at 3; the watch reports the deletion,
        // then the write's response arrives.
        assert_eq!(
            store.apply(watcher::Event::Delete(with_uid(cm("a", "x", 3, "1"), "u1"))),
            ["a"]
        );
        assert!(!store.store_written(with_uid(cm("a", "x", 2, "2"), "u1")));
        assert!(store.is_empty(), "the deleted object came back");
        // Without uids the resourceVersion decides.
        store.apply(watcher::Event::Apply(cm("a", "y", 4, "1")));
        store.apply(watcher::Event::Delete(cm("a", "y", 6, "1")));
        assert!(!store.store_written(cm("a", "y", 5, "2")));
        assert!(!store.store_written(cm("a", "y", 6, "2")));
        assert_eq!(store.len(), 0);
        // A new object under the same name (another uid) is stored.
        assert!(store.store_written(with_uid(cm("a", "x", 7, "3"), "u2")));
        assert_eq!(store.len(), 1);
        assert_eq!(store.tombstones(), 1, "the name's tombstone is cleared");
        // The watch re-creating a name clears its tombstone.
        store.apply(watcher::Event::Apply(cm("a", "y", 8, "1")));
        assert_eq!(store.tombstones(), 0);
    }

    #[test]
    fn a_relist_that_misses_an_object_buries_it() {
        let store = Store::<Cm>::default();
        store.apply(watcher::Event::Init);
        store.apply(watcher::Event::InitApply(with_uid(cm("a", "x", 1, "1"), "u1")));
        store.apply(watcher::Event::InitDone);
        // Deleted while the watch was down: the relist no longer finds it.
        store.apply(watcher::Event::Init);
        assert_eq!(store.apply(watcher::Event::InitDone), ["a"]);
        // A write of the old object that completes now stays out.
        assert!(!store.store_written(with_uid(cm("a", "x", 9, "2"), "u1")));
        assert!(store.is_empty());
    }

    #[test]
    fn tombstones_are_bounded() {
        let store = Store::<Cm>::default();
        for i in 0..(TOMBSTONES as u64 + 100) {
            store.apply(watcher::Event::Delete(cm("a", &format!("o{i}"), i + 1, "1")));
            // The same name deleted again does not grow anything.
            store.apply(watcher::Event::Delete(cm("a", "same", i + 1, "1")));
        }
        assert_eq!(store.tombstones(), TOMBSTONES);
        assert!(store.lock().tombstones.order.len() <= 2 * TOMBSTONES + 1);
        // The newest are remembered.
        let last = TOMBSTONES as u64 + 99;
        assert!(!store.store_written(cm("a", &format!("o{last}"), 1, "x")));
    }
}
