//! A small in-process Kubernetes API server for tests.
//!
//! There is no kube-apiserver on the machines these tests run on, so the operator's
//! controllers are tested end to end against this server: it speaks the Kubernetes wire
//! protocol over plain HTTP on 127.0.0.1 for the kinds Portcullis uses (ConfigMap, Secret,
//! Pod, Event in `v1` and `events.k8s.io/v1`, Lease, NetworkPolicy, SecurityProfile and
//! ApiRoute with their `/status` subresources), well enough for kube-rs clients, watchers
//! and controllers:
//!
//! - list with label and field selectors, `limit`/`continue` pages and the list's
//!   `resourceVersion`;
//! - watch streams (`?watch=1`): ADDED / MODIFIED / DELETED from a given resourceVersion
//!   (replayed from a bounded history; older versions get a 410 `Expired` ERROR event),
//!   all current objects when no version is given, BOOKMARK events when
//!   `allowWatchBookmarks` is set, `sendInitialEvents`, `timeoutSeconds`; a change that
//!   moves an object in or out of a selector is an ADDED or DELETED for that watch;
//! - get, create (`generateName` too), replace with resourceVersion preconditions, JSON
//!   merge patch (strategic merge patch is treated as a merge patch), server-side apply
//!   (`application/apply-patch+yaml` with `fieldManager` and `force`, modelled with field
//!   sets: see [`patch`]), `dryRun=All`, and delete with owner-reference garbage collection;
//! - a monotonic resourceVersion shared by every kind, `metadata.generation` bumped on
//!   changes outside metadata (and status), `uid`, `creationTimestamp`; a write that
//!   changes nothing changes no version and sends no event, as in Kubernetes;
//! - injected failures ([`FakeApiServer::fail_requests`]) to test retries, late responses
//!   ([`FakeApiServer::delay_responses`]: served at once, answered later) and late watch
//!   events ([`FakeApiServer::delay_watch_events`]: Kubernetes does not order events across
//!   watches) to test races;
//! - metadata-only lists and watches (`Accept: application/json;as=PartialObjectMetadataList`
//!   or `;as=PartialObjectMetadata`, what kube-runtime's `metadata_watcher` asks for):
//!   objects are answered as `meta.k8s.io/v1` `PartialObjectMetadata`, without their content;
//! - SubjectAccessReview creates (`authorization.k8s.io/v1`), answered from an allow-list
//!   ([`FakeApiServer::allow`], [`AccessRule`]; anything else is denied) and recorded
//!   ([`FakeApiServer::access_reviews`]).
//!
//! Tests seed and inspect objects directly through [`FakeApiServer`] and point clients at
//! it with [`FakeApiServer::write_kubeconfig`]. Not modelled: authentication and
//! authorization of the requests themselves, admission, finalizers, JSON patch, protobuf, field-level list-map
//! merging in server-side apply (lists are atomic).

#![forbid(unsafe_code)]

mod access;
mod error;
pub mod patch;
pub mod resources;
pub mod selector;
mod server;
mod store;

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use access::AccessRule;
pub use error::ApiError;
pub use resources::{DEFAULT_RESOURCES, ResourceType};
pub use server::RecordedRequest;
pub use store::Propagation;

use server::Shared;
use store::Store;

/// How to build a [`FakeApiServer`].
#[derive(Clone, Debug)]
pub struct Builder {
    resources: Vec<ResourceType>,
    history: usize,
    bookmark_interval: Duration,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            resources: DEFAULT_RESOURCES.to_vec(),
            history: 100_000,
            bookmark_interval: Duration::from_secs(1),
        }
    }
}

impl Builder {
    /// Also serve `resource`.
    pub fn resource(mut self, resource: ResourceType) -> Self {
        self.resources.push(resource);
        self
    }

    /// Keep the last `changes` changes for watches to resume from (default 100,000); a watch
    /// from an older version gets 410 Gone.
    pub fn history(mut self, changes: usize) -> Self {
        self.history = changes.max(1);
        self
    }

    /// How often watches that allow bookmarks get one (default 1 s).
    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.bookmark_interval = interval;
        self
    }

    /// Binds 127.0.0.1 on an ephemeral port and starts serving.
    pub async fn start(self) -> io::Result<FakeApiServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (shutdown_tx, shutdown) = watch::channel(false);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(self.resources, self.history)),
            requests: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            delays: Mutex::new(Vec::new()),
            watch_delays: Mutex::new(Default::default()),
            access: Mutex::new(Vec::new()),
            access_reviews: Mutex::new(Vec::new()),
            bookmark_interval: self.bookmark_interval,
            shutdown: shutdown.clone(),
            expire: watch::channel(0).0,
        });
        tokio::spawn(accept(listener, shared.clone(), shutdown));
        Ok(FakeApiServer {
            addr,
            shared,
            shutdown: shutdown_tx,
        })
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(%error, "fake API server: accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let shared = shared.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| server::handle(shared.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = shutdown.changed() => {}
            }
        });
    }
}

/// A running fake API server. Dropping it stops the server and ends every watch.
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

impl FakeApiServer {
    /// A server with the default resources.
    pub async fn start() -> io::Result<Self> {
        Builder::default().start().await
    }

    pub fn builder() -> Builder {
        Builder::default()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig (YAML) for this server, with `namespace` as the context's namespace.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\n\
             current-context: fake\nusers:\n- name: fake\n  user: {{}}\npreferences: {{}}\n",
            url = self.url()
        )
    }

    /// Writes [`Self::kubeconfig`] to `path`.
    pub fn write_kubeconfig(&self, path: &Path, namespace: &str) -> io::Result<()> {
        std::fs::write(path, self.kubeconfig(namespace))
    }

    fn resource_of(&self, object: &Value) -> Result<usize, ApiError> {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        self.shared
            .store()
            .find_kind(api_version, kind)
            .ok_or_else(|| ApiError::bad_request(format!("this server does not serve {api_version} {kind}")))
    }

    fn resource_named(&self, resource: &str) -> Result<usize, ApiError> {
        self.shared
            .store()
            .find_name(resource)
            .ok_or_else(ApiError::unknown_resource)
    }

    /// Creates an object as a `POST` would (server-set fields filled in; `status` dropped
    /// for status-subresource kinds). The object carries `apiVersion` and `kind`.
    pub fn create(&self, object: &impl Serialize) -> Result<Value, ApiError> {
        let body = to_value(object)?;
        let resource = self.resource_of(&body)?;
        let namespace = body["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
        let created = self.shared.store().create(resource, &namespace, body, false)?;
        Ok((*created).clone())
    }

    /// Creates or replaces an object as given, `status` included, without preconditions.
    pub fn put(&self, object: &impl Serialize) -> Result<Value, ApiError> {
        let body = to_value(object)?;
        let resource = self.resource_of(&body)?;
        let stored = self.shared.store().put(resource, body)?;
        Ok((*stored).clone())
    }

    /// Merge-patches an object (its main part; `status` too for kinds without a status
    /// subresource).
    pub fn merge_patch(&self, resource: &str, namespace: &str, name: &str, patch: &Value) -> Result<Value, ApiError> {
        let resource = self.resource_named(resource)?;
        let patched = self.shared.store().patch(
            resource,
            namespace,
            name,
            store::Part::Main,
            store::PatchKind::Merge,
            patch.clone(),
            None,
            false,
        )?;
        Ok((*patched).clone())
    }

    /// The object, by kubectl resource name (`configmaps`, `apiroutes.portcullis.dev`).
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let resource = self.resource_named(resource).ok()?;
        self.shared
            .store()
            .get(resource, namespace, name)
            .ok()
            .map(|o| (*o).clone())
    }

    /// [`Self::get`], deserialized.
    pub fn get_as<T: DeserializeOwned>(&self, resource: &str, namespace: &str, name: &str) -> Option<T> {
        self.get(resource, namespace, name)
            .and_then(|v| serde_json::from_value(v).ok())
    }

    /// Every object of a resource, in one namespace or (`None`) all, sorted by namespace and
    /// name.
    pub fn list(&self, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        let Ok(resource) = self.resource_named(resource) else {
            return Vec::new();
        };
        let filter = store::Filter {
            namespace: namespace.map(str::to_owned),
            ..Default::default()
        };
        self.shared
            .store()
            .list(resource, &filter, None, None)
            .map(|l| l.items.iter().map(|o| (**o).clone()).collect())
            .unwrap_or_default()
    }

    /// Deletes an object; dependents are garbage-collected per `propagation`.
    pub fn delete(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        propagation: Propagation,
    ) -> Result<Value, ApiError> {
        let resource = self.resource_named(resource)?;
        let deleted = self
            .shared
            .store()
            .delete(resource, namespace, name, propagation, false)?;
        Ok((*deleted).clone())
    }

    /// The latest resourceVersion handed out.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().resource_version()
    }

    /// Forgets the change history and ends every open watch stream, as an API server
    /// restart would: clients must resume, and those resuming from an earlier version get
    /// 410 Gone and list again.
    pub fn compact(&self) {
        self.shared.store().compact();
        self.shared.expire.send_modify(|epoch| *epoch += 1);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Answers the next `count` requests with `method` whose path contains `path_contains`
    /// with an error status `code` (an `InternalError` Status) instead of serving them, to
    /// test how clients handle failures. Recorded like any request.
    pub fn fail_requests(&self, method: &str, path_contains: &str, code: u16, count: usize) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(server::Fault {
                method: method.to_owned(),
                path_contains: path_contains.to_owned(),
                code,
                remaining: count,
            });
    }

    /// Serves the next `count` requests with `method` whose path contains `path_contains` at
    /// once (their effect is visible, watches report it) but sends each response only
    /// `delay` later, as a slow API server or network would: a write still in flight while
    /// other things happen. Recorded like any request.
    pub fn delay_responses(&self, method: &str, path_contains: &str, delay: Duration, count: usize) {
        self.shared
            .delays
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(server::Delay {
                method: method.to_owned(),
                path_contains: path_contains.to_owned(),
                delay,
                remaining: count,
            });
    }

    /// From now on, watch streams of `resource` (kubectl name: `secrets`,
    /// `apiroutes.portcullis.dev`) deliver each live change `delay` after it happened (in
    /// order, and with no bookmark past it), while other resources' watches are on time:
    /// events across watches arrive reordered. `Duration::ZERO` ends the delay.
    pub fn delay_watch_events(&self, resource: &str, delay: Duration) -> Result<(), ApiError> {
        let resource = self.resource_named(resource)?;
        self.shared
            .watch_delays
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(resource, delay);
        Ok(())
    }

    /// Lets SubjectAccessReviews that match `rule` be allowed (none is, by default).
    pub fn allow(&self, rule: AccessRule) {
        self.shared.access.lock().unwrap_or_else(|e| e.into_inner()).push(rule);
    }

    /// Every SubjectAccessReview answered so far (with its `status`), in order.
    pub fn access_reviews(&self) -> Vec<Value> {
        self.shared
            .access_reviews
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.requests.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

fn to_value(object: &impl Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(object).map_err(|e| ApiError::bad_request(format!("cannot serialize the object: {e}")))
}
