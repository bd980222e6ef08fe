//! Forwarding an admitted call, bodies streamed: to the app over a pooled HTTP/1.1 client
//! ([`Forwarder::local`]), or to a remote origin (gateway mode, [`Origin::forward`]) over the
//! route's own pooled client, built when the configuration is compiled ([`Origins::build`]):
//! plain HTTP/1.1, or TLS with HTTP/2 or HTTP/1.1 by ALPN, verifying the origin against the
//! system roots or the route's CA bundle, and presenting the route's client certificate in
//! Mutual mode.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use portcullis_config::{Backend, Loaded, OriginTlsMode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::body::ProxyBody;
use crate::headers::{IDENTITY, PROFILE, ROUTE, remove_hop_by_hop, remove_portcullis, set_forwarded, set_verdict};
use crate::metrics::BackendErrorKind;
use crate::tls::{self, TlsError};

/// Who the sidecar admitted, told to the app in `X-Portcullis-*` headers.
#[derive(Debug, Clone, Copy)]
pub struct Verdict<'a> {
    pub route: &'a str,
    pub profile: &'a str,
    pub identity: &'a str,
}

/// Why a call could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("backend did not answer within {0:?}")]
    Timeout(Duration),
    #[error("backend unreachable: {0}")]
    Connect(#[source] hyper_util::client::legacy::Error),
    #[error("backend connection failed: {0}")]
    Protocol(#[source] hyper_util::client::legacy::Error),
    #[error("invalid backend address: {0}")]
    Address(#[from] http::Error),
}

impl ForwardError {
    /// The metric label of this failure.
    pub fn kind(&self) -> BackendErrorKind {
        match self {
            Self::Timeout(_) => BackendErrorKind::Timeout,
            Self::Connect(_) => BackendErrorKind::Connect,
            Self::Protocol(_) | Self::Address(_) => BackendErrorKind::Protocol,
        }
    }
}

/// The pooled client toward local backends.
#[derive(Clone)]
pub struct Forwarder {
    client: Client<HttpConnector, ProxyBody>,
    connect_timeout: Duration,
    timeout: Duration,
}

impl Forwarder {
    /// A client whose connections time out after `connect_timeout` and whose calls must
    /// produce response headers within `timeout`.
    pub fn new(connect_timeout: Duration, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Self {
            client,
            connect_timeout,
            timeout,
        }
    }

    /// The time allowed to connect, and for the response headers.
    pub fn timeouts(&self) -> (Duration, Duration) {
        (self.connect_timeout, self.timeout)
    }

    /// Sends `req` to `127.0.0.1:port` with clean headers and returns the app's response,
    /// its body still streaming.
    pub async fn local(
        &self,
        req: Request<Incoming>,
        port: u16,
        peer: IpAddr,
        proto: &'static str,
        verdict: Verdict<'_>,
    ) -> Result<Response<ProxyBody>, ForwardError> {
        let (mut parts, body) = req.into_parts();
        let client_version = parts.version;

        // HTTP/2 carries the host in the URI authority; an HTTP/1.1 backend wants `Host`.
        if !parts.headers.contains_key(HOST)
            && let Some(authority) = parts.uri.authority()
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            parts.headers.insert(HOST, host);
        }
        let authority = Authority::try_from(format!("{}:{port}", Ipv4Addr::LOCALHOST))
            .map_err(|e| ForwardError::Address(e.into()))?;
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or(PathAndQuery::from_static("/"));
        parts.uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(authority)
            .path_and_query(path)
            .build()?;
        parts.version = Version::HTTP_11;

        remove_hop_by_hop(&mut parts.headers);
        remove_portcullis(&mut parts.headers);
        set_forwarded(&mut parts.headers, peer, proto);
        set_verdict(&mut parts.headers, ROUTE, verdict.route);
        set_verdict(&mut parts.headers, PROFILE, verdict.profile);
        if !set_verdict(&mut parts.headers, IDENTITY, verdict.identity) {
            tracing::debug!(
                route = verdict.route,
                "identity is not a valid header value; not passed on"
            );
        }

        let upstream = Request::from_parts(parts, body.boxed_unsync());
        let response = match tokio::time::timeout(self.timeout, self.client.request(upstream)).await {
            Err(_) => return Err(ForwardError::Timeout(self.timeout)),
            Ok(Err(e)) if e.is_connect() => return Err(ForwardError::Connect(e)),
            Ok(Err(e)) => return Err(ForwardError::Protocol(e)),
            Ok(Ok(r)) => r,
        };
        let (mut parts, body) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        parts.version = client_version;
        Ok(Response::from_parts(parts, body.boxed_unsync()))
    }
}

/// A pooled client toward one route's origin, built at compile time.
pub struct Origin {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, ProxyBody>,
    scheme: Scheme,
    authority: Authority,
    /// The origin URL's path without its trailing `/` (empty for `/`).
    base_path: String,
    host: HeaderValue,
    timeout: Duration,
    credentials: OriginCredentials,
}

/// The hook for `backend.origin.auth` (Basic, shared-secret signature, HTTP message
/// signature, OAuth 2.0 client credentials): adds the route's credentials to each call
/// toward the origin. Not implemented yet: calls go without credentials (the route's
/// compilation logs a warning when it asks for some).
#[derive(Debug, Default)]
pub struct OriginCredentials {
    /// The route asked for origin credentials (`backend.origin.auth`).
    pub configured: bool,
}

impl OriginCredentials {
    /// Adds the credentials to the outgoing request (the hook: nothing yet).
    pub fn apply(&self, _parts: &mut http::request::Parts) {}
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("scheme", &self.scheme)
            .field("authority", &self.authority)
            .field("base_path", &self.base_path)
            .finish_non_exhaustive()
    }
}

/// The origin clients of a configuration, by route index.
#[derive(Debug, Default)]
pub struct Origins(Vec<Option<Origin>>);

impl Origins {
    /// Builds a client for every route whose backend is an origin.
    pub fn build(loaded: &Loaded, connect_timeout: Duration, timeout: Duration) -> Result<Self, TlsError> {
        let mut out = Vec::with_capacity(loaded.config.routes.len());
        for r in &loaded.config.routes {
            out.push(match &r.backend {
                Backend::Local { .. } => None,
                Backend::Origin { .. } => Some(Origin::build(loaded, &r.name, connect_timeout, timeout)?),
            });
        }
        Ok(Self(out))
    }

    /// The client of the route at `index`.
    pub fn get(&self, index: usize) -> Option<&Origin> {
        self.0.get(index).and_then(Option::as_ref)
    }
}

fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "cannot read some system CA certificates");
            }
            let mut store = RootCertStore::empty();
            let (added, ignored) = store.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "system roots loaded");
            Arc::new(store)
        })
        .clone()
}

/// Accepts any origin certificate: `tls.mode: None` on an https:// origin (encrypted, not
/// authenticated). The handshake signature is still checked.
#[derive(Debug)]
struct NoVerification(rustls::crypto::WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

impl Origin {
    fn build(loaded: &Loaded, route: &str, connect_timeout: Duration, timeout: Duration) -> Result<Self, TlsError> {
        let Some(r) = loaded.config.routes.iter().find(|r| r.name == route) else {
            return Err(TlsError::Origin {
                route: route.into(),
                what: "no such route".into(),
            });
        };
        let Backend::Origin {
            url, tls_mode, auth, ..
        } = &r.backend
        else {
            return Err(TlsError::Origin {
                route: route.into(),
                what: "not an origin route".into(),
            });
        };
        let origin_err = |what: String| TlsError::Origin {
            route: route.into(),
            what,
        };
        let uri: Uri = url
            .parse()
            .map_err(|e| origin_err(format!("url {url:?} is not a URL ({e})")))?;
        let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTP);
        let https = scheme == Scheme::HTTPS;
        if !https && scheme != Scheme::HTTP {
            return Err(origin_err(format!("url {url:?}: only http:// and https:// origins")));
        }
        if !https && *tls_mode != OriginTlsMode::None {
            return Err(origin_err(format!("{tls_mode:?} needs an https:// url")));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| origin_err(format!("url {url:?} has no host")))?;
        let host =
            HeaderValue::from_str(authority.as_str()).map_err(|_| origin_err(format!("url {url:?}: invalid host")))?;
        let base_path = uri.path().trim_end_matches('/').to_owned();
        let secrets = loaded.secrets.routes.get(route);

        let provider = tls::provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(tls::VERSIONS)
            .map_err(|e| origin_err(format!("no usable TLS configuration ({e})")))?;
        let builder = match (tls_mode, secrets.and_then(|s| s.origin_ca_pem.as_deref())) {
            (OriginTlsMode::None, _) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider.signature_verification_algorithms))),
            (_, Some(pem)) => {
                let store = tls::ca_store(pem).map_err(|what| TlsError::OriginCa {
                    route: route.into(),
                    what,
                })?;
                builder.with_root_certificates(store)
            }
            (_, None) => builder.with_root_certificates(system_roots()),
        };
        let config = match (tls_mode, secrets.and_then(|s| s.origin_client.as_ref())) {
            (OriginTlsMode::Mutual, None) => {
                return Err(TlsError::OriginClient {
                    route: route.into(),
                    what: "Mutual needs a client certificate, and there is none".into(),
                });
            }
            (OriginTlsMode::Mutual, Some(material)) => {
                let (key, _) =
                    tls::certified_key(material, tls::unix_now()).map_err(|what| TlsError::OriginClient {
                        route: route.into(),
                        what,
                    })?;
                let key_der = tls::key_der(material).map_err(|what| TlsError::OriginClient {
                    route: route.into(),
                    what,
                })?;
                builder
                    .with_client_auth_cert(key.cert.clone(), key_der)
                    .map_err(|_| TlsError::OriginClient {
                        route: route.into(),
                        what: "tls.key cannot be used with tls.crt".into(),
                    })?
            }
            _ => builder.with_no_client_auth(),
        };
        if *tls_mode == OriginTlsMode::None && https {
            tracing::warn!(
                route,
                "origin tls mode None on an https:// origin: the origin's certificate is not verified"
            );
        }
        let credentials = OriginCredentials {
            configured: auth.is_some(),
        };
        if credentials.configured {
            tracing::warn!(
                route,
                "backend.origin.auth is not supported by this sidecar yet: calls reach the origin without credentials"
            );
        }

        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        http.enforce_http(false);
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config);
        let connector = if https {
            builder.https_only().enable_all_versions().wrap_connector(http)
        } else {
            builder.https_or_http().enable_http1().wrap_connector(http)
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Self {
            client,
            scheme,
            authority,
            base_path,
            host,
            timeout,
            credentials,
        })
    }

    /// Sends `req` to the origin: `Host` is the origin's authority, the path is the origin
    /// URL's path followed by the request's path and query.
    pub async fn forward(
        &self,
        req: Request<Incoming>,
        peer: IpAddr,
        proto: &'static str,
        verdict: Verdict<'_>,
    ) -> Result<Response<ProxyBody>, ForwardError> {
        let (mut parts, body) = req.into_parts();
        let client_version = parts.version;
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let target = if self.base_path.is_empty() {
            PathAndQuery::try_from(path)
        } else {
            PathAndQuery::try_from(format!("{}{path}", self.base_path))
        }
        .map_err(|e| ForwardError::Address(e.into()))?;
        parts.uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(target)
            .build()?;
        parts.version = Version::HTTP_11;
        remove_hop_by_hop(&mut parts.headers);
        remove_portcullis(&mut parts.headers);
        parts.headers.insert(HOST, self.host.clone());
        set_forwarded(&mut parts.headers, peer, proto);
        set_verdict(&mut parts.headers, ROUTE, verdict.route);
        set_verdict(&mut parts.headers, PROFILE, verdict.profile);
        set_verdict(&mut parts.headers, IDENTITY, verdict.identity);
        self.credentials.apply(&mut parts);

        let upstream = Request::from_parts(parts, body.boxed_unsync());
        let response = match tokio::time::timeout(self.timeout, self.client.request(upstream)).await {
            Err(_) => return Err(ForwardError::Timeout(self.timeout)),
            Ok(Err(e)) if e.is_connect() => return Err(ForwardError::Connect(e)),
            Ok(Err(e)) => return Err(ForwardError::Protocol(e)),
            Ok(Ok(r)) => r,
        };
        let (mut parts, body) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        parts.version = client_version;
        Ok(Response::from_parts(parts, body.boxed_unsync()))
    }
}
