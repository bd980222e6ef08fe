//! The HTTP face of the store: routing, query parameters, bodies, watch streams.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt as _;
use futures::channel::mpsc;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use crate::error::ApiError;
use crate::resources::{Discovery, Target, parse_path};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Change, EventType, Filter, Part, PatchKind, Propagation, Store};

pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// Largest request body accepted.
const MAX_BODY: usize = 64 << 20;

/// A request the server received, for tests that count or inspect calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The `Accept` header (empty when absent).
    pub accept: String,
}

impl RecordedRequest {
    /// Whether the client asked for metadata only (`as=PartialObjectMetadata[List]`).
    pub fn metadata_only(&self) -> bool {
        metadata_only(&self.accept)
    }
}

/// Whether an `Accept` header asks for `meta.k8s.io/v1` `PartialObjectMetadata`.
fn metadata_only(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.contains(&"g=meta.k8s.io")
            && params
                .iter()
                .any(|p| *p == "as=PartialObjectMetadata" || *p == "as=PartialObjectMetadataList")
    })
}

/// What a metadata-only client sees of an object.
fn partial(object: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": object["metadata"]})
}

impl RecordedRequest {
    /// Whether the request could change state (anything but GET, HEAD and OPTIONS).
    pub fn is_write(&self) -> bool {
        !matches!(self.method.as_str(), "GET" | "HEAD" | "OPTIONS")
    }
}

/// A failure to answer instead of serving matching requests (see
/// [`crate::FakeApiServer::fail_requests`]).
#[derive(Clone, Debug)]
pub(crate) struct Fault {
    pub method: String,
    pub path_contains: String,
    pub code: u16,
    /// How many more matching requests fail.
    pub remaining: usize,
}

/// A response held back (see [`crate::FakeApiServer::delay_responses`]).
#[derive(Clone, Debug)]
pub(crate) struct Delay {
    pub method: String,
    pub path_contains: String,
    pub delay: Duration,
    /// How many more matching requests are delayed.
    pub remaining: usize,
}

/// State shared by every connection.
pub(crate) struct Shared {
    pub store: Mutex<Store>,
    pub requests: Mutex<Vec<RecordedRequest>>,
    pub faults: Mutex<Vec<Fault>>,
    pub delays: Mutex<Vec<Delay>>,
    /// Resource index → how late its watch streams deliver live changes.
    pub watch_delays: Mutex<BTreeMap<usize, Duration>>,
    /// Who may do what, for SubjectAccessReviews.
    pub access: Mutex<Vec<crate::AccessRule>>,
    /// SubjectAccessReviews answered.
    pub access_reviews: Mutex<Vec<Value>>,
    pub bookmark_interval: Duration,
    pub shutdown: watch::Receiver<bool>,
    /// Bumped to end every open watch stream.
    pub expire: watch::Sender<u64>,
}

impl Shared {
    pub fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn watch_delay(&self, resource: usize) -> Option<Duration> {
        self.watch_delays
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&resource)
            .copied()
            .filter(|d| !d.is_zero())
    }
}

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

fn error_response(error: &ApiError) -> Response<Body> {
    json_response(
        StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &error.status(),
    )
}

/// Serves one request.
pub(crate) async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    shared
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(RecordedRequest {
            method: req.method().to_string(),
            path: req.uri().path().to_owned(),
            query: req.uri().query().unwrap_or_default().to_owned(),
            accept: req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
        });
    tracing::debug!(method = %req.method(), uri = %req.uri(), "request");
    if let Some(code) = injected_fault(&shared, req.method().as_str(), req.uri().path()) {
        let error = ApiError {
            code,
            reason: "InternalError",
            message: format!("injected failure ({code})"),
        };
        return Ok(error_response(&error));
    }
    let delay = injected_delay(&shared, req.method().as_str(), req.uri().path());
    let response = route(shared, req, query).await.unwrap_or_else(|e| error_response(&e));
    if let Some(delay) = delay {
        // Served (its effect is visible to everyone), answered late.
        tokio::time::sleep(delay).await;
    }
    Ok(response)
}

/// The delay of this request's response, if any (and counts it).
fn injected_delay(shared: &Shared, method: &str, path: &str) -> Option<Duration> {
    let mut delays = shared.delays.lock().unwrap_or_else(|e| e.into_inner());
    let delay = delays
        .iter_mut()
        .find(|d| d.remaining > 0 && d.method.eq_ignore_ascii_case(method) && path.contains(&d.path_contains))?;
    delay.remaining -= 1;
    Some(delay.delay)
}

/// The status code of an injected failure for this request, if any (and counts it).
fn injected_fault(shared: &Shared, method: &str, path: &str) -> Option<u16> {
    let mut faults = shared.faults.lock().unwrap_or_else(|e| e.into_inner());
    let fault = faults
        .iter_mut()
        .find(|f| f.remaining > 0 && f.method.eq_ignore_ascii_case(method) && path.contains(&f.path_contains))?;
    fault.remaining -= 1;
    Some(fault.code)
}

async fn read_body(req: Request<Incoming>) -> Result<(Option<String>, Bytes), ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?
        .to_bytes();
    Ok((content_type, bytes))
}

fn parse_json(bytes: &[u8], yaml: bool) -> Result<Value, ApiError> {
    match serde_json::from_slice(bytes) {
        Ok(v) => Ok(v),
        Err(_) if yaml => {
            serde_yaml::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("invalid YAML: {e}")))
        }
        Err(e) => Err(ApiError::bad_request(format!("invalid JSON: {e}"))),
    }
}

fn flag(query: &BTreeMap<String, String>, name: &str) -> bool {
    query.get(name).is_some_and(|v| v == "true" || v == "1")
}

async fn route(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    query: BTreeMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_owned();
    let target = parse_path(&path).ok_or_else(ApiError::unknown_resource)?;
    let method = req.method().clone();
    let dry_run = query.get("dryRun").is_some_and(|v| v == "All");
    let metadata_only = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(metadata_only);
    match target {
        Target::Collection {
            group: "authorization.k8s.io",
            version: "v1",
            namespace: None,
            plural: "subjectaccessreviews",
        } if method == Method::POST => {
            let (_, bytes) = read_body(req).await?;
            let rules = shared.access.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let answered = crate::access::review(&rules, parse_json(&bytes, true)?)?;
            shared
                .access_reviews
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(answered.clone());
            Ok(json_response(StatusCode::CREATED, &answered))
        }
        Target::Discovery(d) if method == Method::GET => Ok(json_response(StatusCode::OK, &discovery(&shared, d)?)),
        Target::Discovery(_) => Err(ApiError::method_not_allowed()),
        Target::Collection {
            group,
            version,
            namespace,
            plural,
        } => {
            let resource = shared
                .store()
                .find(group, version, plural)
                .ok_or_else(ApiError::unknown_resource)?;
            match method {
                Method::GET => {
                    let filter = Filter {
                        namespace: namespace.map(str::to_owned),
                        labels: LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
                            .map_err(|e| ApiError::bad_request(e.to_string()))?,
                        fields: FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))
                            .map_err(|e| ApiError::bad_request(e.to_string()))?,
                    };
                    if flag(&query, "watch") {
                        Ok(watch(shared, resource, filter, &query, metadata_only))
                    } else {
                        list(&shared, resource, &filter, &query, metadata_only)
                    }
                }
                Method::POST => {
                    let namespace = namespace.unwrap_or_default().to_owned();
                    let (_, bytes) = read_body(req).await?;
                    let body = parse_json(&bytes, true)?;
                    let created = shared.store().create(resource, &namespace, body, dry_run)?;
                    Ok(json_response(StatusCode::CREATED, &created))
                }
                _ => Err(ApiError::method_not_allowed()),
            }
        }
        Target::Object {
            group,
            version,
            namespace,
            plural,
            name,
            subresource,
        } => {
            let resource = shared
                .store()
                .find(group, version, plural)
                .ok_or_else(ApiError::unknown_resource)?;
            let part = match subresource {
                None => Part::Main,
                Some("status") => Part::Status,
                Some(_) => return Err(ApiError::unknown_resource()),
            };
            let namespace = namespace.unwrap_or_default().to_owned();
            let name = name.to_owned();
            match method {
                Method::GET => {
                    let object = shared.store().get(resource, &namespace, &name)?;
                    match metadata_only {
                        true => Ok(json_response(StatusCode::OK, &partial(&object))),
                        false => Ok(json_response(StatusCode::OK, &object)),
                    }
                }
                Method::PUT => {
                    let (_, bytes) = read_body(req).await?;
                    let body = parse_json(&bytes, true)?;
                    let replaced = shared
                        .store()
                        .replace(resource, &namespace, &name, part, body, dry_run)?;
                    Ok(json_response(StatusCode::OK, &replaced))
                }
                Method::PATCH => {
                    let (content_type, bytes) = read_body(req).await?;
                    let content_type = content_type.unwrap_or_default();
                    let kind = match content_type.as_str() {
                        "application/merge-patch+json" | "application/strategic-merge-patch+json" => PatchKind::Merge,
                        "application/apply-patch+yaml" | "application/apply-patch+json" => PatchKind::Apply {
                            force: flag(&query, "force"),
                        },
                        other => return Err(ApiError::unsupported_media_type(other)),
                    };
                    let body = parse_json(&bytes, matches!(kind, PatchKind::Apply { .. }))?;
                    let manager = query.get("fieldManager").map(String::as_str);
                    let patched = shared
                        .store()
                        .patch(resource, &namespace, &name, part, kind, body, manager, dry_run)?;
                    Ok(json_response(StatusCode::OK, &patched))
                }
                Method::DELETE if part == Part::Main => {
                    let (_, bytes) = read_body(req).await?;
                    let options = if bytes.is_empty() {
                        Value::Null
                    } else {
                        parse_json(&bytes, false)?
                    };
                    let policy = query
                        .get("propagationPolicy")
                        .map(String::as_str)
                        .or_else(|| options["propagationPolicy"].as_str());
                    let propagation = match policy {
                        Some("Orphan") => Propagation::Orphan,
                        _ => Propagation::Delete,
                    };
                    let deleted = shared
                        .store()
                        .delete(resource, &namespace, &name, propagation, dry_run)?;
                    Ok(json_response(StatusCode::OK, &deleted))
                }
                _ => Err(ApiError::method_not_allowed()),
            }
        }
    }
}

fn discovery(shared: &Shared, what: Discovery<'_>) -> Result<Value, ApiError> {
    let store = shared.store();
    Ok(match what {
        Discovery::Version => json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-portcullis-fake",
            "platform": "linux/amd64", "goVersion": "go1.24", "compiler": "gc",
            "gitCommit": "", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
        }),
        Discovery::CoreVersions => json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
        }),
        Discovery::Groups => {
            let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for t in store.types.iter().filter(|t| !t.group.is_empty()) {
                let versions = groups.entry(t.group).or_default();
                if !versions.contains(&t.version) {
                    versions.push(t.version);
                }
            }
            let groups: Vec<Value> = groups
                .into_iter()
                .map(|(group, versions)| {
                    let versions: Vec<Value> = versions
                        .iter()
                        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
                        .collect();
                    json!({"name": group, "versions": versions, "preferredVersion": versions[0]})
                })
                .collect();
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        }
        Discovery::Resources { group, version } => {
            let mut resources = Vec::new();
            for t in store.types.iter().filter(|t| t.group == group && t.version == version) {
                resources.push(json!({
                    "name": t.plural, "singularName": t.kind.to_lowercase(), "namespaced": t.namespaced,
                    "kind": t.kind,
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                }));
                if t.status_subresource {
                    resources.push(json!({
                        "name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced,
                        "kind": t.kind, "verbs": ["get", "patch", "update"],
                    }));
                }
            }
            if resources.is_empty() {
                return Err(ApiError::unknown_resource());
            }
            let group_version = if group.is_empty() {
                version.to_owned()
            } else {
                format!("{group}/{version}")
            };
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
        }
    })
}

fn list(
    shared: &Shared,
    resource: usize,
    filter: &Filter,
    query: &BTreeMap<String, String>,
    metadata_only: bool,
) -> Result<Response<Body>, ApiError> {
    let limit = query.get("limit").and_then(|l| l.parse().ok()).filter(|l| *l > 0);
    let token = query.get("continue").map(String::as_str).filter(|t| !t.is_empty());
    let store = shared.store();
    let result = store.list(resource, filter, limit, token)?;
    let t = store.types[resource];
    drop(store);
    let mut metadata = json!({"resourceVersion": result.resource_version.to_string()});
    if let Some(token) = result.continue_token {
        metadata["continue"] = Value::String(token);
    }
    let body = if metadata_only {
        let items: Vec<Value> = result.items.iter().map(|i| partial(i)).collect();
        json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadataList",
            "metadata": metadata,
            "items": items,
        })
    } else {
        let items: Vec<&Value> = result.items.iter().map(|i| &**i).collect();
        json!({
            "apiVersion": t.api_version(),
            "kind": format!("{}List", t.kind),
            "metadata": metadata,
            "items": items,
        })
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// What a change looks like to a watch with `filter` (selectors can turn a modification
/// into an addition or a deletion).
fn translate(change: &Change, filter: &Filter) -> Option<(EventType, Arc<Value>)> {
    let selected = |object: &Value| filter.matches(&change.namespace, object);
    match change.event {
        EventType::Added | EventType::Deleted => {
            selected(&change.object).then(|| (change.event, change.object.clone()))
        }
        EventType::Modified => {
            let before = change.previous.as_deref().is_some_and(selected);
            match (before, selected(&change.object)) {
                (true, true) => Some((EventType::Modified, change.object.clone())),
                (false, true) => Some((EventType::Added, change.object.clone())),
                (true, false) => Some((EventType::Deleted, change.object.clone())),
                (false, false) => None,
            }
        }
    }
}

/// A watch event for an object, whole or (`metadata_only`) as `PartialObjectMetadata`.
fn object_line(kind: EventType, object: &Value, metadata_only: bool) -> Bytes {
    if metadata_only {
        event_line(kind.as_str(), &partial(object))
    } else {
        event_line(kind.as_str(), object)
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// Starts a watch stream: replayed or current objects first, then live changes, bookmarks,
/// until `timeoutSeconds`, the client leaves, or the server stops.
fn watch(
    shared: Arc<Shared>,
    resource: usize,
    filter: Filter,
    query: &BTreeMap<String, String>,
    metadata_only: bool,
) -> Response<Body> {
    let since = query
        .get("resourceVersion")
        .and_then(|rv| rv.parse::<u64>().ok())
        .filter(|rv| *rv > 0);
    let send_initial = flag(query, "sendInitialEvents");
    let bookmarks = flag(query, "allowWatchBookmarks");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);

    let store = shared.store();
    let t = store.types[resource];
    let subscription = match since {
        Some(rv) if !send_initial => store.subscribe(resource, rv).map(|(rx, replay)| {
            let events: Vec<_> = replay.iter().filter_map(|c| translate(c, &filter)).collect();
            (rx, events, store.resource_version().max(rv))
        }),
        _ => {
            let (rx, objects, rv) = store.subscribe_with_state(resource, &filter);
            Ok((rx, objects.into_iter().map(|o| (EventType::Added, o)).collect(), rv))
        }
    };
    drop(store);

    let (mut tx, rx) = mpsc::channel::<Bytes>(64);
    let body = StreamBody::new(futures::StreamExt::map(rx, |b| Ok::<_, Infallible>(Frame::data(b)))).boxed();
    let response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()));

    let bookmark = move |rv: u64, initial_end: bool| {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        event_line(
            "BOOKMARK",
            &json!({"kind": t.kind, "apiVersion": t.api_version(), "metadata": metadata}),
        )
    };
    let mut shutdown = shared.shutdown.clone();
    let mut expire = shared.expire.subscribe();
    let interval = shared.bookmark_interval;
    tokio::spawn(async move {
        // Live lines held back by a watch delay, in order, with when they are due.
        let mut late: std::collections::VecDeque<(tokio::time::Instant, Bytes)> = Default::default();
        let (mut changes, initial, mut seen) = match subscription {
            Ok(s) => s,
            Err(gone) => {
                let _ = tx.send(event_line("ERROR", &gone.status())).await;
                return;
            }
        };
        for (kind, object) in initial {
            if tx.send(object_line(kind, &object, metadata_only)).await.is_err() {
                return;
            }
        }
        if (send_initial || bookmarks) && tx.send(bookmark(seen, send_initial)).await.is_err() {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            let due = late.front().map(|(at, _)| *at);
            let line = tokio::select! {
                change = changes.recv() => match change {
                    Ok(change) if change.resource_version <= seen => continue,
                    Ok(change) => {
                        seen = change.resource_version;
                        if change.resource != resource {
                            continue;
                        }
                        let line = match translate(&change, &filter) {
                            Some((kind, object)) => object_line(kind, &object, metadata_only),
                            None => continue,
                        };
                        match shared.watch_delay(resource) {
                            Some(delay) => {
                                late.push_back((tokio::time::Instant::now() + delay, line));
                                continue;
                            }
                            None if !late.is_empty() => {
                                // Behind the held-back lines: order within a stream is kept.
                                let at = late.back().map(|(at, _)| *at).unwrap_or_else(tokio::time::Instant::now);
                                late.push_back((at, line));
                                continue;
                            }
                            None => line,
                        }
                    }
                    // Lagged or closed: end the stream; the client resumes from its last version.
                    Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => return,
                },
                _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                    match late.pop_front() {
                        Some((_, line)) => line,
                        None => continue,
                    }
                }
                // No bookmark past a held-back change (a client resuming from it would miss it).
                _ = ticker.tick(), if bookmarks && late.is_empty() => bookmark(seen, false),
                _ = &mut deadline => return,
                _ = shutdown.changed() => return,
                _ = expire.changed() => return,
            };
            if tx.send(line).await.is_err() {
                return;
            }
        }
    });
    response
}
