//! Gateway mode: forwarding to a remote origin over the route's own pooled client, built when
//! the configuration is compiled ([`Origins::build`]): plain HTTP/1.1, or TLS with HTTP/2 or
//! HTTP/1.1 by ALPN, verifying the origin against the system roots or the route's CA bundle,
//! and presenting the route's client certificate in Mutual mode. Each origin call carries the
//! route's credentials (`backend.origin.auth`, [`super::credentials`]); with OAuth 2.0 client
//! credentials, a 401 from the origin is retried once with a fresh token when the body can be
//! replayed.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use portcullis_config::{Backend, Loaded, OriginTlsMode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use super::ForwardError;
use super::consumed::Consumed;
use super::credentials::{self, OriginCredentials};
use super::outside::{OutsideThePod, is_this_pod};
use crate::base::body::{BodyError, ProxyBody, full, streamed};
use crate::base::clock::unix_now;
use crate::base::headers::{Verdict, remove_hop_by_hop, remove_portcullis, set_forwarded, set_verdict};
use crate::base::tls::{self, TlsError};

/// A pooled client toward one route's origin, built at compile time.
pub struct Origin {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector<OutsideThePod>>, ProxyBody>,
    scheme: Scheme,
    authority: Authority,
    /// The origin URL's path without its trailing `/` (empty for `/`).
    base_path: String,
    host: HeaderValue,
    timeout: Duration,
    credentials: OriginCredentials,
    /// The inbound credentials removed before the call leaves.
    consumed: Consumed,
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
            (_, None) => builder.with_root_certificates(tls::system_roots()),
        };
        let config = match (tls_mode, secrets.and_then(|s| s.origin_client.as_ref())) {
            (OriginTlsMode::Mutual, None) => {
                return Err(TlsError::OriginClient {
                    route: route.into(),
                    what: "Mutual needs a client certificate, and there is none".into(),
                });
            }
            (OriginTlsMode::Mutual, Some(material)) => {
                let (key, _) = tls::certified_key(material, unix_now()).map_err(|what| TlsError::OriginClient {
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
        let credentials = OriginCredentials::build(
            route,
            auth.as_ref(),
            secrets.and_then(|s| s.origin_auth.as_ref()),
            &credentials::Options {
                timeout,
                max_body: credentials::max_signed_body_bytes(),
            },
        )
        .map_err(origin_err)?;
        let consumed = match &r.backend {
            Backend::Origin {
                pass_credentials: true, ..
            } => Consumed::default(),
            _ => Consumed::of(loaded, r),
        };

        let mut http = HttpConnector::new_with_resolver(OutsideThePod::new());
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
            consumed,
        })
    }

    /// Sends `req` to the origin: `Host` is the origin's authority, the path is the origin
    /// URL's path followed by the request's path and query, the inbound credentials the
    /// route's profiles consumed are removed ([`Consumed`]) and the route's credentials are
    /// added. With OAuth 2.0 client credentials, a 401 is retried once with a fresh token when
    /// the body can be replayed (empty, or buffered because its declared length is at most
    /// `--max-signed-body-bytes`).
    pub async fn forward<B>(
        &self,
        req: Request<B>,
        proto: &'static str,
        verdict: Verdict<'_>,
    ) -> Result<Response<ProxyBody>, ForwardError>
    where
        B: http_body::Body<Data = Bytes, Error = BodyError> + Send + 'static,
    {
        // An address literal is not resolved ([`OutsideThePod`] never sees it): judged here.
        let host = self.authority.host();
        let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>();
        if literal.is_ok_and(is_this_pod) {
            return Err(ForwardError::ThisPod);
        }
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
        self.consumed.strip(&mut parts)?;
        parts.headers.insert(HOST, self.host.clone());
        set_forwarded(&mut parts.headers, verdict.peer, proto);
        set_verdict(&mut parts.headers, &verdict);
        let outgoing = self.credentials.apply(&mut parts, body, self.scheme.as_str()).await?;

        let again = outgoing
            .retry
            .as_ref()
            .filter(|r| r.body.is_some())
            .map(|_| (parts.method.clone(), parts.uri.clone(), parts.headers.clone()));
        let mut response = self.send(Request::from_parts(parts, outgoing.body)).await?;
        if response.status() == StatusCode::UNAUTHORIZED
            && let Some(retry) = &outgoing.retry
        {
            let fresh = self.credentials.after_unauthorized(retry).await?;
            if let (Some(token), Some((method, uri, mut headers)), Some(body)) = (fresh, again, retry.body.clone()) {
                tracing::debug!(
                    route = verdict.route,
                    "origin refused the token; retrying with a fresh one"
                );
                headers.remove(AUTHORIZATION);
                token.apply(&mut headers);
                let mut req = Request::new(full(body));
                *req.method_mut() = method;
                *req.uri_mut() = uri;
                *req.version_mut() = Version::HTTP_11;
                *req.headers_mut() = headers;
                response = self.send(req).await?;
            }
        }
        let (mut parts, body) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        parts.version = client_version;
        Ok(Response::from_parts(parts, streamed(body)))
    }

    async fn send(&self, upstream: Request<ProxyBody>) -> Result<Response<hyper::body::Incoming>, ForwardError> {
        match tokio::time::timeout(self.timeout, self.client.request(upstream)).await {
            Err(_) => Err(ForwardError::Timeout(self.timeout)),
            Ok(Err(e)) if e.is_connect() => Err(ForwardError::Connect(e.into())),
            Ok(Err(e)) => Err(ForwardError::Protocol(e.into())),
            Ok(Ok(r)) => Ok(r),
        }
    }
}
