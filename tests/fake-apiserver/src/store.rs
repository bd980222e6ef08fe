//! The in-memory object store: objects, the monotonic resourceVersion, the event history that
//! watches replay from, owner-reference garbage collection.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::error::ApiError;
use crate::patch::{self, Managers};
use crate::resources::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};

/// Kind of a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as recorded in the history and broadcast to watches.
#[derive(Clone, Debug)]
pub struct Change {
    pub resource_version: u64,
    pub resource: usize,
    pub namespace: String,
    pub event: EventType,
    pub object: Arc<Value>,
    /// The object before a modification.
    pub previous: Option<Arc<Value>>,
}

/// A receiver of every future change.
pub type Changes = broadcast::Receiver<Arc<Change>>;

/// Which part of an object a write addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The main resource (for status-subresource types: everything but `status`).
    Main,
    /// The `status` subresource.
    Status,
}

impl Part {
    fn subresource(self) -> &'static str {
        match self {
            Self::Main => "",
            Self::Status => "status",
        }
    }
}

/// How a patch body is to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json` (and strategic merge, treated the same way).
    Merge,
    /// `application/apply-patch+yaml`: server-side apply.
    Apply { force: bool },
}

/// How dependents are treated when their owner is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Propagation {
    /// Delete dependents whose owners are all gone (Background and Foreground).
    #[default]
    Delete,
    /// Remove the owner reference and keep the dependent.
    Orphan,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    resource: usize,
    namespace: String,
    name: String,
}

#[derive(Clone, Debug)]
struct Stored {
    object: Arc<Value>,
    managers: Managers,
}

/// The server's state. All methods are synchronous; the HTTP layer holds the lock only for
/// the duration of one call.
pub struct Store {
    pub(crate) types: Vec<ResourceType>,
    objects: BTreeMap<Key, Stored>,
    resource_version: u64,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// Changes at or before this version are no longer in the history (watch: 410 Gone).
    compacted: u64,
    serial: u64,
    changes: broadcast::Sender<Arc<Change>>,
}

/// The answer to a list request.
pub struct ListResult {
    pub items: Vec<Arc<Value>>,
    pub resource_version: u64,
    pub continue_token: Option<String>,
}

/// Filters of list and watch requests.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn matches(&self, namespace: &str, object: &Value) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && self.labels.matches(object)
            && self.fields.matches(object)
    }
}

fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl Store {
    pub fn new(types: Vec<ResourceType>, history_limit: usize) -> Self {
        let (changes, _) = broadcast::channel(history_limit.max(16));
        Self {
            types,
            objects: BTreeMap::new(),
            resource_version: 0,
            history: VecDeque::new(),
            history_limit,
            compacted: 0,
            serial: 0,
            changes,
        }
    }

    /// The index of a served type.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<usize> {
        self.types
            .iter()
            .position(|t| t.group == group && t.version == version && t.plural == plural)
    }

    /// The index of a type by `apiVersion` and `kind`.
    pub fn find_kind(&self, api_version: &str, kind: &str) -> Option<usize> {
        self.types
            .iter()
            .position(|t| t.api_version() == api_version && t.kind == kind)
    }

    /// The index of a type by kubectl name (`configmaps`, `leases.coordination.k8s.io`).
    pub fn find_name(&self, name: &str) -> Option<usize> {
        self.types.iter().position(|t| t.qualified_name() == name)
    }

    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    /// Forgets the history: watches from any earlier version get 410 Gone.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.resource_version;
    }

    pub fn get(&self, resource: usize, namespace: &str, name: &str) -> Result<Arc<Value>, ApiError> {
        let key = self.key(resource, namespace, name);
        self.objects
            .get(&key)
            .map(|s| s.object.clone())
            .ok_or_else(|| ApiError::not_found(self.types[resource].qualified_name(), name))
    }

    pub fn list(
        &self,
        resource: usize,
        filter: &Filter,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<ListResult, ApiError> {
        let (resource_version, after) = match continue_token {
            Some(token) => {
                let (rv, rest) = token
                    .split_once(':')
                    .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
                let (ns, name) = rest
                    .split_once('/')
                    .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
                let rv = rv
                    .parse()
                    .map_err(|_| ApiError::bad_request("invalid continue token"))?;
                (rv, Some(self.key(resource, ns, name)))
            }
            None => (self.resource_version, None),
        };
        let start = after.clone().unwrap_or(Key {
            resource,
            namespace: String::new(),
            name: String::new(),
        });
        let mut items = Vec::new();
        let mut last = None;
        let mut more = false;
        let candidates = self
            .objects
            .range(start..)
            .take_while(|(k, _)| k.resource == resource)
            .filter(|(k, _)| Some(*k) != after.as_ref());
        for (key, stored) in candidates {
            if !filter.matches(&key.namespace, &stored.object) {
                continue;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                more = true;
                break;
            }
            items.push(stored.object.clone());
            last = Some(key);
        }
        let continue_token = match (more, last) {
            (true, Some(k)) => Some(format!("{resource_version}:{}/{}", k.namespace, k.name)),
            _ => None,
        };
        Ok(ListResult {
            items,
            resource_version,
            continue_token,
        })
    }

    /// A receiver of future changes and the recorded changes after `since` that pass
    /// `filter`, taken atomically. `Err` (410) when `since` is older than the history.
    pub fn subscribe(&self, resource: usize, since: u64) -> Result<(Changes, Vec<Arc<Change>>), ApiError> {
        if since < self.compacted {
            return Err(ApiError::gone(format!(
                "too old resource version: {since} ({})",
                self.compacted + 1
            )));
        }
        let replay = self
            .history
            .iter()
            .filter(|c| c.resource_version > since && c.resource == resource)
            .cloned()
            .collect();
        Ok((self.changes.subscribe(), replay))
    }

    /// A receiver of future changes and every current object (for watches without a
    /// resourceVersion), taken atomically.
    pub fn subscribe_with_state(&self, resource: usize, filter: &Filter) -> (Changes, Vec<Arc<Value>>, u64) {
        let snapshot = self
            .list(resource, filter, None, None)
            .map(|l| l.items)
            .unwrap_or_default();
        (self.changes.subscribe(), snapshot, self.resource_version)
    }

    fn key(&self, resource: usize, namespace: &str, name: &str) -> Key {
        let namespace = if self.types[resource].namespaced {
            namespace.to_owned()
        } else {
            String::new()
        };
        Key {
            resource,
            namespace,
            name: name.to_owned(),
        }
    }

    /// Checks and fills `apiVersion`, `kind`, `metadata.namespace` of a request body.
    fn normalize_body(&self, resource: usize, namespace: &str, body: &mut Value) -> Result<(), ApiError> {
        let t = self.types[resource];
        let Value::Object(map) = body else {
            return Err(ApiError::bad_request("the request body is not a JSON object"));
        };
        for (field, want) in [("apiVersion", t.api_version()), ("kind", t.kind.to_owned())] {
            match map.get(field).and_then(Value::as_str) {
                Some(have) if have != want => {
                    return Err(ApiError::bad_request(format!(
                        "{field} {have:?} does not match {want:?}"
                    )));
                }
                _ => {
                    map.insert(field.to_owned(), Value::String(want));
                }
            }
        }
        let meta = map
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("metadata is not an object"))?;
        if t.namespaced {
            match meta.get("namespace").and_then(Value::as_str) {
                Some(ns) if ns != namespace => {
                    return Err(ApiError::bad_request(format!(
                        "the namespace of the object ({ns}) does not match the namespace of the request ({namespace})"
                    )));
                }
                _ => {
                    meta.insert("namespace".into(), Value::String(namespace.to_owned()));
                }
            }
        }
        if t.kind == "Secret" {
            fold_string_data(map);
        }
        Ok(())
    }

    /// `POST` to a collection.
    pub fn create(
        &mut self,
        resource: usize,
        namespace: &str,
        mut body: Value,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        self.normalize_body(resource, namespace, &mut body)?;
        let t = self.types[resource];
        let meta = &mut body["metadata"];
        let name = match meta["name"].as_str() {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => match meta["generateName"].as_str() {
                Some(prefix) => {
                    self.serial += 1;
                    format!("{prefix}{:05x}", self.serial)
                }
                None => return Err(ApiError::bad_request("name or generateName is required")),
            },
        };
        meta["name"] = Value::String(name.clone());
        let key = self.key(resource, namespace, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(t.qualified_name(), &name));
        }
        if t.status_subresource
            && let Value::Object(map) = &mut body
        {
            map.remove("status");
        }
        self.insert_new(key, body, Managers::new(), dry_run)
    }

    fn insert_new(
        &mut self,
        key: Key,
        mut body: Value,
        managers: Managers,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        self.serial += 1;
        let serial = self.serial;
        let meta = &mut body["metadata"];
        meta["uid"] = Value::String(format!("00000000-0000-4000-8000-{serial:012x}"));
        meta["creationTimestamp"] = Value::String(now());
        meta["generation"] = json!(1);
        if let Value::Object(m) = meta {
            m.remove("resourceVersion");
            m.remove("managedFields");
            m.remove("deletionTimestamp");
        }
        if dry_run {
            return Ok(Arc::new(body));
        }
        Ok(self.commit(key, body, managers, None))
    }

    /// Stores `object` under `key` with a new resourceVersion and records the change.
    fn commit(&mut self, key: Key, mut object: Value, managers: Managers, previous: Option<Arc<Value>>) -> Arc<Value> {
        self.resource_version += 1;
        object["metadata"]["resourceVersion"] = Value::String(self.resource_version.to_string());
        let object = Arc::new(object);
        let event = if previous.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(&key, event, object.clone(), previous);
        self.objects.insert(
            key,
            Stored {
                object: object.clone(),
                managers,
            },
        );
        object
    }

    fn record(&mut self, key: &Key, event: EventType, object: Arc<Value>, previous: Option<Arc<Value>>) {
        let change = Arc::new(Change {
            resource_version: self.resource_version,
            resource: key.resource,
            namespace: key.namespace.clone(),
            event,
            object,
            previous,
        });
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.resource_version;
            }
        }
        // No receivers is fine.
        let _ = self.changes.send(change);
    }

    /// Finishes an update of an existing object: keeps identity fields, bumps generation on
    /// spec changes, and commits unless nothing changed.
    fn update_existing(
        &mut self,
        key: Key,
        old: Arc<Value>,
        mut new: Value,
        managers: Managers,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let t = self.types[key.resource];
        for field in ["uid", "creationTimestamp", "name", "namespace", "generation"] {
            match old["metadata"].get(field) {
                Some(v) => new["metadata"][field] = v.clone(),
                None => {
                    if let Value::Object(m) = &mut new["metadata"] {
                        m.remove(field);
                    }
                }
            }
        }
        if let Value::Object(m) = &mut new["metadata"] {
            m.remove("managedFields");
        }
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if t.kind == "Secret"
            && let Value::Object(map) = &mut new
        {
            fold_string_data(map);
        }
        if spec_of(&old, t) != spec_of(&new, t) {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            new["metadata"]["generation"] = json!(generation);
        }
        if new == *old || dry_run {
            if !dry_run && let Some(stored) = self.objects.get_mut(&key) {
                stored.managers = managers;
            }
            return Ok(if dry_run { Arc::new(new) } else { old });
        }
        Ok(self.commit(key, new, managers, Some(old)))
    }

    /// Writes `body` as given, status included, creating or replacing the object (the
    /// seeding path for tests; no preconditions, no field managers).
    pub fn put(&mut self, resource: usize, mut body: Value) -> Result<Arc<Value>, ApiError> {
        let namespace = body["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
        self.normalize_body(resource, &namespace, &mut body)?;
        let name = body["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::bad_request("metadata.name is required"))?
            .to_owned();
        let key = self.key(resource, &namespace, &name);
        match self.objects.get(&key).cloned() {
            Some(stored) => self.update_existing(key, stored.object, body, stored.managers, false),
            None => self.insert_new(key, body, Managers::new(), false),
        }
    }

    /// `PUT` to an object or its status.
    pub fn replace(
        &mut self,
        resource: usize,
        namespace: &str,
        name: &str,
        part: Part,
        mut body: Value,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        self.normalize_body(resource, namespace, &mut body)?;
        let t = self.types[resource];
        let key = self.key(resource, namespace, name);
        let stored = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(t.qualified_name(), name))?;
        if body["metadata"]["name"].as_str().is_some_and(|n| n != name) {
            return Err(ApiError::bad_request("the name of the object does not match the URL"));
        }
        check_precondition(&body, &stored.object, t, name)?;
        let new = scoped(t, part, &stored.object, body);
        self.update_existing(key, stored.object, new, stored.managers, dry_run)
    }

    /// `PATCH` to an object or its status.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        resource: usize,
        namespace: &str,
        name: &str,
        part: Part,
        kind: PatchKind,
        mut body: Value,
        field_manager: Option<&str>,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let t = self.types[resource];
        let key = self.key(resource, namespace, name);
        let existing = self.objects.get(&key).cloned();
        match kind {
            PatchKind::Merge => {
                let stored = existing.ok_or_else(|| ApiError::not_found(t.qualified_name(), name))?;
                check_precondition(&body, &stored.object, t, name)?;
                let mut patched = (*stored.object).clone();
                patch::merge_patch(&mut patched, &body);
                let mut new = scoped(t, part, &stored.object, patched);
                self.normalize_body(resource, namespace, &mut new)?;
                self.update_existing(key, stored.object, new, stored.managers, dry_run)
            }
            PatchKind::Apply { force } => {
                let manager = field_manager
                    .filter(|m| !m.is_empty())
                    .ok_or_else(|| ApiError::bad_request("fieldManager is required for apply requests"))?;
                self.normalize_body(resource, namespace, &mut body)?;
                if body["metadata"]["name"].as_str().is_some_and(|n| n != name) {
                    return Err(ApiError::bad_request("the name of the object does not match the URL"));
                }
                body["metadata"]["name"] = Value::String(name.to_owned());
                patch::strip_nulls(&mut body);
                if let Value::Object(m) = &mut body["metadata"] {
                    for generated in ["uid", "creationTimestamp", "generation", "managedFields"] {
                        m.remove(generated);
                    }
                }
                let applied = applied_part(t, part, body);
                match existing {
                    None => {
                        if part == Part::Status {
                            return Err(ApiError::not_found(t.qualified_name(), name));
                        }
                        let mut object = json!({});
                        let mut managers = Managers::new();
                        patch::apply(&mut object, &mut managers, &applied, manager, "", true)
                            .map_err(|_| ApiError::conflict("conflict on a new object"))?;
                        if let Value::Object(m) = &mut object["metadata"] {
                            m.remove("resourceVersion");
                        }
                        self.insert_new(key, object, managers, dry_run)
                    }
                    Some(stored) => {
                        check_precondition(&applied, &stored.object, t, name)?;
                        let mut applied = applied;
                        if let Value::Object(m) = &mut applied["metadata"] {
                            m.remove("resourceVersion");
                        }
                        let mut object = (*stored.object).clone();
                        let mut managers = stored.managers.clone();
                        patch::apply(&mut object, &mut managers, &applied, manager, part.subresource(), force)
                            .map_err(|conflicts| {
                                let list: Vec<String> = conflicts
                                    .iter()
                                    .map(|c| format!("conflict with {:?}: {}", c.manager, c.field))
                                    .collect();
                                ApiError::conflict(format!(
                                    "Apply failed with {} conflict(s): {}",
                                    list.len(),
                                    list.join("; ")
                                ))
                            })?;
                        self.update_existing(key, stored.object, object, managers, dry_run)
                    }
                }
            }
        }
    }

    /// `DELETE` of an object; dependents are collected per `propagation`.
    pub fn delete(
        &mut self,
        resource: usize,
        namespace: &str,
        name: &str,
        propagation: Propagation,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let t = self.types[resource];
        let key = self.key(resource, namespace, name);
        let stored = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(t.qualified_name(), name))?;
        if dry_run {
            return Ok(stored.object);
        }
        let deleted = self.remove(&key);
        self.collect_garbage(propagation);
        Ok(deleted)
    }

    fn remove(&mut self, key: &Key) -> Arc<Value> {
        let stored = self.objects.remove(key).expect("caller checked the key exists");
        self.resource_version += 1;
        let mut object = (*stored.object).clone();
        object["metadata"]["resourceVersion"] = Value::String(self.resource_version.to_string());
        let object = Arc::new(object);
        self.record(key, EventType::Deleted, object.clone(), None);
        object
    }

    /// Deletes every object whose owners are all gone (repeatedly, for chains), and removes
    /// dangling owner references from objects that keep another owner.
    fn collect_garbage(&mut self, propagation: Propagation) {
        loop {
            let live: BTreeSet<String> = self
                .objects
                .values()
                .filter_map(|s| s.object["metadata"]["uid"].as_str().map(str::to_owned))
                .collect();
            let mut orphans = Vec::new();
            let mut trimmed = Vec::new();
            for (key, stored) in &self.objects {
                let Some(refs) = stored.object["metadata"]["ownerReferences"].as_array() else {
                    continue;
                };
                let kept: Vec<Value> = refs
                    .iter()
                    .filter(|r| r["uid"].as_str().is_some_and(|uid| live.contains(uid)))
                    .cloned()
                    .collect();
                if kept.len() == refs.len() {
                    continue;
                }
                if kept.is_empty() && propagation == Propagation::Delete {
                    orphans.push(key.clone());
                } else {
                    trimmed.push((key.clone(), kept));
                }
            }
            for (key, kept) in trimmed {
                let stored = self.objects[&key].clone();
                let mut object = (*stored.object).clone();
                if kept.is_empty() {
                    if let Value::Object(m) = &mut object["metadata"] {
                        m.remove("ownerReferences");
                    }
                } else {
                    object["metadata"]["ownerReferences"] = Value::Array(kept);
                }
                self.commit(key, object, stored.managers, Some(stored.object));
            }
            if orphans.is_empty() {
                return;
            }
            for key in orphans {
                self.remove(&key);
            }
        }
    }
}

/// For status-subresource types: a main-resource write keeps the old status, a status write
/// changes only the status.
fn scoped(t: ResourceType, part: Part, old: &Value, mut new: Value) -> Value {
    if !t.status_subresource {
        return new;
    }
    match part {
        Part::Main => {
            match old.get("status") {
                Some(status) => new["status"] = status.clone(),
                None => {
                    if let Value::Object(m) = &mut new {
                        m.remove("status");
                    }
                }
            }
            new
        }
        Part::Status => {
            let mut object = old.clone();
            match new.get_mut("status").map(Value::take) {
                Some(status) if !status.is_null() => object["status"] = status,
                _ => {
                    if let Value::Object(m) = &mut object {
                        m.remove("status");
                    }
                }
            }
            if let Some(rv) = new["metadata"].get("resourceVersion") {
                object["metadata"]["resourceVersion"] = rv.clone();
            }
            object
        }
    }
}

/// The part of an applied configuration a manager may set through `part`.
fn applied_part(t: ResourceType, part: Part, mut body: Value) -> Value {
    if !t.status_subresource {
        return body;
    }
    match part {
        Part::Main => {
            if let Value::Object(m) = &mut body {
                m.remove("status");
            }
            body
        }
        Part::Status => {
            let mut applied = json!({
                "apiVersion": body["apiVersion"].take(),
                "kind": body["kind"].take(),
                "metadata": {"name": body["metadata"]["name"].take(), "namespace": body["metadata"]["namespace"].take()},
            });
            if let Some(rv) = body["metadata"].get("resourceVersion") {
                applied["metadata"]["resourceVersion"] = rv.clone();
            }
            if let Some(status) = body.get_mut("status").map(Value::take) {
                applied["status"] = status;
            }
            if let Value::Object(m) = &mut applied["metadata"] {
                m.retain(|_, v| !v.is_null());
            }
            applied
        }
    }
}

/// `metadata.resourceVersion` in a write is an optimistic-concurrency precondition.
fn check_precondition(body: &Value, current: &Value, t: ResourceType, name: &str) -> Result<(), ApiError> {
    match body["metadata"]["resourceVersion"].as_str() {
        Some(rv) if !rv.is_empty() && Some(rv) != current["metadata"]["resourceVersion"].as_str() => {
            Err(ApiError::conflict(format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                t.qualified_name()
            )))
        }
        _ => Ok(()),
    }
}

/// What `metadata.generation` tracks: everything but metadata (and status, when it is a
/// subresource).
fn spec_of(object: &Value, t: ResourceType) -> Value {
    let mut spec = object.clone();
    if let Value::Object(m) = &mut spec {
        m.remove("metadata");
        if t.status_subresource {
            m.remove("status");
        }
    }
    spec
}

/// Secrets: `stringData` is write-only and folded into `data` (base64), as the API server does.
fn fold_string_data(secret: &mut Map<String, Value>) {
    let Some(Value::Object(strings)) = secret.remove("stringData") else {
        return;
    };
    let data = secret.entry("data").or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(data) = data {
        for (k, v) in strings {
            if let Value::String(s) = v {
                data.insert(k, Value::String(base64::engine::general_purpose::STANDARD.encode(s)));
            }
        }
    }
}
