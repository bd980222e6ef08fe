//! Forwarding to the app on `127.0.0.1:<port>` over the keep-alive pool ([`super::pool`]):
//! origin-form request target, HTTP/1.1, `Host` the authority the call was routed on,
//! headers cleaned and the verdict added ([`Outgoing`]).

use std::net::Ipv4Addr;
use std::time::Duration;

use http::header::HOST;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, Uri, Version};

use super::ForwardError;
use super::pool::{LocalPool, PoolError};
use crate::base::body::ProxyBody;
use crate::base::headers::{Outgoing, Verdict, remove_hop_by_hop};

/// The pooled client toward local backends.
#[derive(Clone)]
pub struct Forwarder {
    pool: LocalPool,
    connect_timeout: Duration,
    timeout: Duration,
    /// The sidecar's own listener ports: never a route's app (a route pointed at the egress
    /// or admin listener would turn another route, or `/config`, into its backend).
    own_ports: Vec<u16>,
}

impl Forwarder {
    /// A client whose connections time out after `connect_timeout` and whose calls must
    /// produce response headers within `timeout`.
    pub fn new(connect_timeout: Duration, timeout: Duration) -> Self {
        Self {
            pool: LocalPool::new(connect_timeout),
            connect_timeout,
            timeout,
            own_ports: Vec::new(),
        }
    }

    /// This forwarder, refusing to send calls to `ports` (the sidecar's own listeners).
    pub fn refusing_ports(mut self, ports: impl IntoIterator<Item = u16>) -> Self {
        self.own_ports = ports.into_iter().collect();
        self
    }

    /// The time allowed to connect, and for the response headers.
    pub fn timeouts(&self) -> (Duration, Duration) {
        (self.connect_timeout, self.timeout)
    }

    /// Sends `req` to `127.0.0.1:port` with clean headers and returns the app's response,
    /// its body still streaming.
    pub async fn local(
        &self,
        req: Request<ProxyBody>,
        port: u16,
        proto: &'static str,
        verdict: Verdict<'_>,
    ) -> Result<Response<ProxyBody>, ForwardError> {
        if self.own_ports.contains(&port) {
            return Err(ForwardError::OwnPort(port));
        }
        let (mut parts, body) = req.into_parts();
        let client_version = parts.version;

        // The authority the call was routed on: the request target's (HTTP/2, absolute form),
        // which the request path has checked agrees with any `Host`; else the one `Host`.
        let host = match parts.uri.authority() {
            Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
            None if parts.headers.contains_key(HOST) => None,
            None => HeaderValue::from_str(&format!("{}:{port}", Ipv4Addr::LOCALHOST)).ok(),
        };
        if let Some(host) = host {
            parts.headers.insert(HOST, host);
        }
        // Origin-form on the wire: the connection already names the app.
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            let path = parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or(PathAndQuery::from_static("/"));
            parts.uri = Uri::from(path);
        }
        parts.version = Version::HTTP_11;

        let upstream = Request::from_parts(parts, body);
        let outgoing = Outgoing { verdict, proto };
        let response = match self.pool.send_as(port, upstream, Some(&outgoing), self.timeout).await {
            Err(PoolError::TimedOut { .. }) => return Err(ForwardError::Timeout(self.timeout)),
            Err(e @ PoolError::Connect { .. }) => return Err(ForwardError::Connect(e.into())),
            Err(e) => return Err(ForwardError::Protocol(e.into())),
            Ok(r) => r,
        };
        let (mut parts, body) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        parts.version = client_version;
        Ok(Response::from_parts(parts, body))
    }
}
