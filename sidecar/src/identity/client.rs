//! The one HTTP client toward identity providers, and the one error type of their calls.
//!
//! Key sets ([`super::jwks`]), introspection ([`super::introspection`]) and token requests
//! toward origins ([`super::origin_token`]) all go through [`IdpClient::exchange`]: rustls with
//! the system roots (plain `http://` too, for in-cluster providers), HTTP/1.1, pooled
//! connections kept 30 s, connections made within 5 s, the whole exchange bounded by the
//! caller's timeout and the answer by the caller's size limit. The client is built once per
//! process ([`IdpClient::shared`]).
//!
//! [`IdpError`] names the kind of endpoint and what went wrong, never a token or a secret
//! (those are not in transport errors, and answers are not quoted).

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::base::form::form_encode;
use crate::base::tls;

/// Longest a connection to an identity provider may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle connection to an identity provider is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Which kind of identity-provider endpoint a call went to (for messages and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// An OAuth2 profile's `jwksUri`.
    KeySet,
    /// An OAuth2 profile's RFC 7662 introspection endpoint.
    Introspection,
    /// A route's `oauth2ClientCredentials.tokenUrl`.
    Token,
    /// An OpenID provider's discovery document (sign-in for people).
    Discovery,
    /// An OpenID provider's token endpoint (sign-in for people: code exchange, refresh).
    LoginToken,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::KeySet => "key set endpoint",
            Self::Introspection => "introspection endpoint",
            Self::Token => "token endpoint",
            Self::Discovery => "OpenID discovery document",
            Self::LoginToken => "sign-in token endpoint",
        })
    }
}

/// Why a call to an identity provider failed. Carries no token and no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdpError {
    #[error("no HTTP client toward identity providers: {0}")]
    Client(String),
    #[error("{0} request cannot be made: {1}")]
    Request(Endpoint, String),
    #[error("{0} unreachable: {1}")]
    Unreachable(Endpoint, String),
    #[error("{0} did not answer within {1:?}")]
    Timeout(Endpoint, Duration),
    #[error("{endpoint} answered {status}{}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Refused {
        endpoint: Endpoint,
        status: u16,
        /// The OAuth `error` code of the answer, when it had a short printable one.
        code: Option<String>,
    },
    #[error("{0} answer unusable: {1}")]
    Invalid(Endpoint, String),
}

/// An answer: its status and its body, read whole (up to the caller's limit).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

type Inner = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The HTTP client toward identity providers (cheap to clone: one pool).
#[derive(Clone)]
pub struct IdpClient(Inner);

impl fmt::Debug for IdpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdpClient").finish_non_exhaustive()
    }
}

impl IdpClient {
    /// The process's client, built on first use. The error says why no TLS configuration
    /// could be made (then no identity provider can be called).
    pub fn shared() -> Result<&'static IdpClient, IdpError> {
        static SHARED: OnceLock<Result<IdpClient, String>> = OnceLock::new();
        SHARED
            .get_or_init(Self::build)
            .as_ref()
            .map_err(|e| IdpError::Client(e.clone()))
    }

    fn build() -> Result<Self, String> {
        let config = rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_protocol_versions(tls::VERSIONS)
            .map_err(|e| format!("no usable TLS configuration ({e})"))?
            .with_root_certificates(tls::system_roots())
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self(
            Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(IDLE_TIMEOUT)
                .build(connector),
        ))
    }

    /// Sends `req` to an `endpoint` and reads the answer, all within `timeout`; a body longer
    /// than `max_bytes` is an error. Any status is an answer: the caller judges it.
    pub async fn exchange(
        &self,
        endpoint: Endpoint,
        req: Request<Full<Bytes>>,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Answer, IdpError> {
        let exchange = async {
            let resp = self
                .0
                .request(req)
                .await
                .map_err(|e| IdpError::Unreachable(endpoint, error_chain(&e)))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), max_bytes)
                .collect()
                .await
                .map_err(|e| IdpError::Unreachable(endpoint, format!("reading the answer: {e}")))?
                .to_bytes();
            Ok(Answer { status, body })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| IdpError::Timeout(endpoint, timeout))?
    }
}

/// `Authorization: Basic` for `client_secret_basic` (RFC 6749 section 2.3.1: the id and the
/// secret form-encoded, then Basic), marked sensitive; `None` when it cannot be a header.
pub fn client_secret_basic(client_id: &str, client_secret: &str) -> Option<HeaderValue> {
    let basic = format!("{}:{}", form_encode(client_id), form_encode(client_secret));
    let mut value = HeaderValue::from_str(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(basic)
    ))
    .ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// An error and its sources, `: `-joined.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_endpoint_and_no_secret() {
        let e = IdpError::Refused {
            endpoint: Endpoint::Token,
            status: 401,
            code: Some("invalid_client".into()),
        };
        assert_eq!(e.to_string(), "token endpoint answered 401 (invalid_client)");
        let e = IdpError::Refused {
            endpoint: Endpoint::Introspection,
            status: 401,
            code: None,
        };
        assert_eq!(e.to_string(), "introspection endpoint answered 401");
    }

    #[test]
    fn basic_credentials_are_form_encoded_first() {
        let v = client_secret_basic("a b", "p:w").unwrap();
        assert!(v.is_sensitive());
        // base64("a%20b:p%3Aw")
        assert_eq!(v.to_str().unwrap(), "Basic YSUyMGI6cCUzQXc=");
    }
}
