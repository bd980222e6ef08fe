//! The admission webhooks over HTTPS ([`webhook`](crate::webhook) holds the decisions), on
//! every replica — leader or standby — at `--webhook-addr` (`$PORTCULLIS_WEBHOOK_ADDR`):
//!
//! - `POST /mutate-pods`, `POST /validate-apiroutes` and `POST /validate-securityprofiles`
//!   answer `AdmissionReview`s with [`answer_review`] (counted in
//!   `portcullis_operator_webhook_reviews_total`); anything else is a 404.
//! - TLS (rustls, TLS 1.2 and 1.3) with a serving certificate each replica issues itself, in
//!   memory, from the operator's CA (the Secret the leader's certificate manager keeps) for
//!   the webhook Service's names (`<service>`, `<service>.<namespace>`,
//!   `<service>.<namespace>.svc`, `<service>.<namespace>.svc.cluster.local`), renewed at two
//!   thirds of its lifetime and when the CA it was signed by is no longer trusted. Until the
//!   CA exists, handshakes fail (the API server retries by its failure policy) and the
//!   replica's `/readyz` answers 503.
//! - [`ClusterView`]: each replica watches SecurityProfiles, ApiRoutes and namespace labels
//!   itself (a standby has no controller caches); the Secrets the route's profiles reference
//!   are read when an ApiRoute is reviewed, so no replica keeps every Secret in memory.
//! - Access: before an ApiRoute or SecurityProfile review is decided, the replica asks the
//!   API server, one SubjectAccessReview per [`requirements`] entry (3 s each, concurrently),
//!   whether the review's user (`userInfo`: username, uid, groups, extra) may do what the
//!   object needs; a review that cannot be made leaves the check `Failed`, which refuses
//!   the object (fail closed).
//!
//! The leader keeps the webhook configurations' `caBundle` current
//! ([`certs::manager::update_ca_bundles`](crate::certs::manager::update_ca_bundles)).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::PostParams;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use portcullis_api::{ApiRoute, SecurityProfile};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::ca::{self, Subject};
use crate::certs::plan::{CA_SECRET, CERT_LABEL, CaState, Lifetimes};
use crate::controller::refs::profile_secrets;
use crate::controller::{Health, Metrics};
use crate::webhook::{
    Access, AccessCheck, ClusterView, MUTATE_PODS_PATH, SidecarSettings, VALIDATE_APIROUTES_PATH,
    VALIDATE_SECURITYPROFILES_PATH, WebhookSettings, answer_review, requirements,
};

/// Largest AdmissionReview accepted (the API server sends at most a few MiB).
const MAX_BODY: usize = 8 << 20;

/// How the webhook server runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The operator's namespace (where the CA's Secret is).
    pub namespace: String,
    pub sidecar: SidecarSettings,
    pub webhook: WebhookSettings,
    pub lifetimes: Lifetimes,
}

impl Options {
    /// The names the serving certificate covers.
    pub fn serving_hosts(&self) -> Vec<String> {
        let mut w = self.webhook.clone();
        if w.service.is_empty() {
            w.service = "portcullis-webhook".to_owned();
        }
        if w.namespace.is_empty() {
            w.namespace = self.namespace.clone();
        }
        w.serving_hosts()
    }
}

/// The current serving certificate.
#[derive(Debug, Default)]
struct Resolver(RwLock<Option<Arc<CertifiedKey>>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What each replica watches for the webhooks: reflector stores, kept by [`reflect`].
#[derive(Clone)]
struct Cache {
    namespaces: Store<Namespace>,
    profiles: Store<SecurityProfile>,
    routes: Store<ApiRoute>,
}

/// One review's view of the cluster: the caches plus the Secrets read and the access
/// checks answered for it.
struct View {
    namespace_labels: BTreeMap<String, String>,
    profiles: Vec<SecurityProfile>,
    secrets: Vec<Secret>,
    routes: Vec<ApiRoute>,
    access: BTreeMap<AccessCheck, Access>,
}

impl ClusterView for View {
    fn namespace_labels(&self, _: &str) -> BTreeMap<String, String> {
        self.namespace_labels.clone()
    }
    fn profiles(&self, _: &str) -> Vec<SecurityProfile> {
        self.profiles.clone()
    }
    fn secrets(&self, _: &str) -> Vec<Secret> {
        self.secrets.clone()
    }
    fn routes(&self, _: &str) -> Vec<ApiRoute> {
        self.routes.clone()
    }
    fn access(&self, check: &AccessCheck) -> Access {
        self.access
            .get(check)
            .cloned()
            .unwrap_or_else(|| Access::Failed("not checked".to_owned()))
    }
}

/// Binds the webhook port (so a port in use fails `run` at once).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until the task is aborted, counting reviews in `metrics` and telling `health`
/// whether a serving certificate is in place.
pub async fn serve(client: Client, listener: TcpListener, opts: Options, metrics: Metrics, health: Arc<Health>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resolver = Arc::new(Resolver::default());
    let (profiles, profiles_writer) = reflector::store();
    let (routes, routes_writer) = reflector::store();
    let (namespaces, namespaces_writer) = reflector::store();
    let cache = Cache {
        namespaces,
        profiles,
        routes,
    };
    let tasks = [
        tokio::spawn(keep_certificate(client.clone(), opts.clone(), resolver.clone(), health)),
        tokio::spawn(reflect(
            Api::<SecurityProfile>::all(client.clone()),
            profiles_writer,
            "webhook: SecurityProfile watch failed; retrying",
        )),
        tokio::spawn(reflect(
            Api::<ApiRoute>::all(client.clone()),
            routes_writer,
            "webhook: ApiRoute watch failed; retrying",
        )),
        // Without access to namespaces (injection disabled), only pod labels count.
        tokio::spawn(reflect(
            Api::<Namespace>::all(client.clone()),
            namespaces_writer,
            "webhook: cannot watch namespaces; injection by namespace label is off until it can",
        )),
    ];
    struct AbortOnDrop<const N: usize>([tokio::task::JoinHandle<()>; N]);
    impl<const N: usize> Drop for AbortOnDrop<N> {
        fn drop(&mut self) {
            self.0.iter().for_each(tokio::task::JoinHandle::abort);
        }
    }
    let _tasks = AbortOnDrop(tasks);

    let config = match rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b.with_no_client_auth().with_cert_resolver(resolver),
        Err(error) => {
            tracing::error!(%error, "webhook TLS configuration");
            return;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tracing::info!(addr = ?listener.local_addr().ok(), "admission webhooks listening (HTTPS)");
    let settings = Arc::new(opts.sidecar.clone());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(%error, "webhook: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, client, cache, settings, metrics) = (
            acceptor.clone(),
            client.clone(),
            cache.clone(),
            settings.clone(),
            metrics.clone(),
        );
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "webhook: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(move |req| {
                let (client, cache, settings, metrics) =
                    (client.clone(), cache.clone(), settings.clone(), metrics.clone());
                async move { Ok::<_, Infallible>(handle(req, &client, &cache, &settings, &metrics).await) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, %error, "webhook: connection ended");
            }
        });
    }
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts")
}

async fn handle(
    req: Request<Incoming>,
    client: &Client,
    cache: &Cache,
    settings: &SidecarSettings,
    metrics: &Metrics,
) -> Response<Full<Bytes>> {
    let started = std::time::Instant::now();
    let path = req.uri().path().to_owned();
    if ![
        MUTATE_PODS_PATH,
        VALIDATE_APIROUTES_PATH,
        VALIDATE_SECURITYPROFILES_PATH,
    ]
    .contains(&path.as_str())
    {
        return respond(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec());
    }
    if req.method() != Method::POST {
        return respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", b"POST only\n".to_vec());
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return respond(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                b"body too large or unreadable\n".to_vec(),
            );
        }
    };
    let view = view_for(&body, client, cache).await;
    let (answer, result) = answer_review(&body, settings, &view);
    let webhook = path.trim_start_matches('/');
    metrics
        .webhook_reviews
        .with_label_values(&[webhook, result.as_str()])
        .inc();
    metrics
        .webhook_duration
        .with_label_values(&[webhook])
        .observe(started.elapsed().as_secs_f64());
    respond(StatusCode::OK, "application/json", answer)
}

/// The view a review needs: its namespace's labels and profiles, and — for an ApiRoute —
/// the Secrets the profiles it names reference, read now.
async fn view_for(body: &[u8], client: &Client, cache: &Cache) -> View {
    let review: Value = serde_json::from_slice(body).unwrap_or_default();
    let request = &review["request"];
    let namespace = request["namespace"]
        .as_str()
        .or_else(|| request.pointer("/object/metadata/namespace").and_then(Value::as_str))
        .unwrap_or("default")
        .to_owned();
    let namespace_labels = cache
        .namespaces
        .get(&ObjectRef::new(&namespace))
        .and_then(|n| n.metadata.labels.clone())
        .unwrap_or_default();
    let profiles: Vec<SecurityProfile> = cache
        .profiles
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .map(Arc::unwrap_or_clone)
        .collect();
    let mut secrets = Vec::new();
    if request.pointer("/kind/kind").and_then(Value::as_str) == Some("ApiRoute")
        && let Ok(route) = serde_json::from_value::<ApiRoute>(request["object"].clone())
    {
        let mut names = std::collections::BTreeSet::new();
        for r in &route.spec.profiles {
            if let Some(p) = profiles
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(r.name.as_str()))
            {
                profile_secrets(p, &mut names);
            }
        }
        let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        let reads = names.iter().map(|name| {
            let api = api.clone();
            async move { tokio::time::timeout(Duration::from_secs(3), api.get_opt(name)).await }
        });
        for (name, got) in names.iter().zip(futures::future::join_all(reads).await) {
            match got {
                Ok(Ok(Some(secret))) => secrets.push(secret),
                Ok(Ok(None)) => {}
                Ok(Err(error)) => tracing::debug!(namespace, name, %error, "webhook: cannot read a Secret"),
                Err(_) => tracing::debug!(namespace, name, "webhook: reading a Secret timed out"),
            }
        }
    }
    let routes: Vec<ApiRoute> = cache
        .routes
        .state()
        .into_iter()
        .filter(|r| r.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .map(Arc::unwrap_or_clone)
        .collect();
    let request: Option<AdmissionRequest<DynamicObject>> =
        serde_json::from_slice::<AdmissionReview<DynamicObject>>(body)
            .ok()
            .and_then(|review| review.try_into().ok());
    let mut access = BTreeMap::new();
    if let Some(request) = request {
        let checks: std::collections::BTreeSet<AccessCheck> =
            requirements(&request, &routes).into_iter().map(|r| r.check).collect();
        let answers = checks.iter().map(|check| ask(client, &request, check));
        access = checks
            .iter()
            .cloned()
            .zip(futures::future::join_all(answers).await)
            .collect();
    }
    View {
        namespace_labels,
        profiles,
        secrets,
        routes,
        access,
    }
}

/// Asks the API server whether the review's user may do `check` (a SubjectAccessReview).
async fn ask(client: &Client, request: &AdmissionRequest<DynamicObject>, check: &AccessCheck) -> Access {
    let user = &request.user_info;
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username.clone(),
            uid: user.uid.clone(),
            groups: user.groups.clone(),
            extra: user.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(check.verb.to_owned()),
                group: Some(check.group.to_owned()),
                resource: Some(check.resource.to_owned()),
                namespace: Some(check.namespace.clone()),
                name: Some(check.name.clone()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = tokio::time::timeout(Duration::from_secs(3), api.create(&PostParams::default(), &review)).await;
    match answer {
        Ok(Ok(SubjectAccessReview { status: Some(s), .. })) if s.allowed && s.denied != Some(true) => Access::Allowed,
        Ok(Ok(SubjectAccessReview { status: Some(_), .. })) => Access::Denied,
        Ok(Ok(_)) => Access::Failed("the SubjectAccessReview came back without a status".to_owned()),
        Ok(Err(error)) => {
            tracing::warn!(verb = check.verb, resource = check.resource, namespace = %check.namespace,
                name = %check.name, %error, "webhook: SubjectAccessReview failed");
            Access::Failed(format!("the SubjectAccessReview failed: {error}"))
        }
        Err(_) => Access::Failed("the SubjectAccessReview timed out".to_owned()),
    }
}

/// Keeps `writer`'s store equal to every object of `api`, for the life of the task; watch
/// errors are logged once per outage (`failing`) and retried with backoff.
async fn reflect<K>(api: Api<K>, writer: reflector::store::Writer<K>, failing: &'static str)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let mut down = false;
    watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .for_each(|event| {
            match event {
                Err(error) if !down => {
                    tracing::warn!(%error, "{failing}");
                    down = true;
                }
                Err(_) => {}
                Ok(_) => down = false,
            }
            futures::future::ready(())
        })
        .await;
}

/// The serving certificate in use: its facts and the CA that signed it.
struct Serving {
    info: ca::CertInfo,
    issuer: String,
}

/// Watches the CA's Secret and keeps a serving certificate from it in `resolver`.
async fn keep_certificate(client: Client, opts: Options, resolver: Arc<Resolver>, health: Arc<Health>) {
    let ca_secret: Arc<Mutex<Option<Secret>>> = Arc::default();
    let notify = Arc::new(tokio::sync::Notify::new());
    let watch = {
        let (ca_secret, notify) = (ca_secret.clone(), notify.clone());
        let api: Api<Secret> = Api::namespaced(client, &opts.namespace);
        let config = watcher::Config::default().labels(&format!("{CERT_LABEL}=ca"));
        tokio::spawn(async move {
            let mut stream = watcher(api, config).default_backoff().applied_objects().boxed();
            while let Some(item) = stream.next().await {
                match item {
                    Ok(s) if s.metadata.name.as_deref() == Some(CA_SECRET) => {
                        *ca_secret.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
                        notify.notify_one();
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "webhook: CA Secret watch failed; retrying"),
                }
            }
        })
    };
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _watch = AbortOnDrop(watch);
    let hosts = opts.serving_hosts();
    let mut current: Option<Serving> = None;
    loop {
        let now = crate::certs::unix_now();
        let secret = ca_secret.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut sleep = Duration::from_secs(30);
        if let Some(state) = secret.and_then(|s| CaState::from_secret(&s, now).ok()) {
            let trusted = |issuer: &str| {
                issuer == state.fingerprint() || state.previous_info().is_some_and(|p| p.sha256_fingerprint == issuer)
            };
            let due = match &current {
                None => true,
                Some(s) => {
                    !trusted(&s.issuer)
                        || s.info.not_after <= now
                        || ca::needs_renewal(s.info.not_before, s.info.not_after, now)
                }
            };
            if due {
                match state
                    .ca
                    .issue(&Subject::Serving { hosts: hosts.clone() }, now, opts.lifetimes.leaf)
                    .map_err(|e| e.to_string())
                    .and_then(|issued| {
                        let key = certified_key(&issued.cert_chain_pem, &issued.key_pem)?;
                        Ok((issued.info, key))
                    }) {
                    Ok((info, key)) => {
                        tracing::info!(
                            not_after = %info.not_after_rfc3339(),
                            fingerprint = %info.sha256_fingerprint,
                            "webhook: serving certificate issued"
                        );
                        *resolver.0.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(key));
                        health.set_serving(true);
                        current = Some(Serving {
                            info,
                            issuer: state.fingerprint().to_owned(),
                        });
                    }
                    Err(message) => {
                        tracing::warn!(message, "webhook: cannot issue the serving certificate");
                        sleep = Duration::from_secs(5);
                    }
                }
            }
            if let Some(s) = &current {
                let renew = s.info.not_before + (s.info.not_after - s.info.not_before) * 2 / 3;
                sleep = sleep.min(Duration::from_secs((renew - now).max(1) as u64));
            }
        }
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

fn certified_key(chain_pem: &str, key_pem: &str) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| "the issued certificate chain does not parse".to_owned())?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| "the issued key does not parse".to_owned())?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|_| "the issued key is of an unsupported type".to_owned())?;
    Ok(CertifiedKey::new(certs, signer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_hosts_default_to_the_chart_names() {
        let opts = Options {
            namespace: "portcullis-system".into(),
            sidecar: SidecarSettings::default(),
            webhook: WebhookSettings::default(),
            lifetimes: Lifetimes::default(),
        };
        assert_eq!(
            opts.serving_hosts(),
            [
                "portcullis-webhook",
                "portcullis-webhook.portcullis-system",
                "portcullis-webhook.portcullis-system.svc",
                "portcullis-webhook.portcullis-system.svc.cluster.local"
            ]
        );
    }

    #[test]
    fn issued_certificates_load_into_rustls() {
        let ca = crate::ca::Ca::generate("t", 1_800_000_000, 86_400).unwrap();
        let issued = ca
            .issue(
                &Subject::Serving {
                    hosts: vec!["a.b.svc".into()],
                },
                1_800_000_000,
                3_600,
            )
            .unwrap();
        let key = certified_key(&issued.cert_chain_pem, &issued.key_pem).unwrap();
        assert_eq!(key.cert.len(), 2);
        assert!(certified_key(&issued.cert_chain_pem, "nope").is_err());
    }
}
