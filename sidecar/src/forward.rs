//! Forwarding an admitted call to the app over a pooled HTTP/1.1 client, bodies streamed.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::ProxyBody;
use crate::headers::{IDENTITY, PROFILE, ROUTE, remove_hop_by_hop, remove_portcullis, set_forwarded, set_verdict};
use crate::metrics::BackendErrorKind;

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
        Self { client, timeout }
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
