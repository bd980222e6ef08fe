//! A minimal Kubernetes API client: bearer token, cluster CA, GET and streaming GET.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::WatchError;

const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Where the API server is and how to authenticate.
#[derive(Clone)]
pub struct ApiConfig {
    /// `https://host:port` (or `http://` for tests).
    pub base_url: String,
    /// Bearer token.
    pub token: Option<String>,
    /// PEM bundle to verify the API server; `None`: the webpki roots are not used, so an
    /// https URL needs it.
    pub ca_pem: Option<String>,
    /// Namespace of the objects.
    pub namespace: String,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("base_url", &self.base_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl ApiConfig {
    /// The pod's own service account: `KUBERNETES_SERVICE_HOST`/`_PORT`, and the token, CA and
    /// namespace mounted under `/var/run/secrets/kubernetes.io/serviceaccount`.
    pub fn in_cluster() -> Result<Self, WatchError> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST")
            .map_err(|_| WatchError::InCluster("KUBERNETES_SERVICE_HOST is not set".into()))?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let read = |file: &str| {
            std::fs::read_to_string(format!("{SERVICE_ACCOUNT}/{file}"))
                .map_err(|e| WatchError::InCluster(format!("{SERVICE_ACCOUNT}/{file}: {e}")))
        };
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        Ok(Self {
            base_url: format!("https://{host}:{port}"),
            token: Some(read("token")?.trim().to_owned()),
            ca_pem: Some(read("ca.crt")?),
            namespace: read("namespace")?.trim().to_owned(),
        })
    }
}

/// A cloneable client for one API server and namespace.
#[derive(Clone)]
pub struct ApiClient {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
    base_url: String,
    token: Option<String>,
    namespace: String,
}

impl ApiClient {
    pub fn new(config: ApiConfig) -> Result<Self, WatchError> {
        if !config.base_url.starts_with("https://") && !config.base_url.starts_with("http://") {
            return Err(WatchError::Url(config.base_url));
        }
        let mut roots = rustls::RootCertStore::empty();
        if let Some(pem) = &config.ca_pem {
            for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
                let cert = cert.map_err(|e| WatchError::Tls(format!("CA bundle: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| WatchError::Tls(format!("CA bundle: {e}")))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| WatchError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                base_url: config.base_url.trim_end_matches('/').to_owned(),
                token: config.token,
                namespace: config.namespace,
            }),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    async fn send(&self, path: &str) -> Result<hyper::Response<hyper::body::Incoming>, WatchError> {
        let uri = format!("{}{path}", self.inner.base_url);
        let mut req = hyper::Request::get(&uri).header(http::header::ACCEPT, "application/json");
        if let Some(token) = &self.inner.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req.body(Empty::new()).map_err(|e| WatchError::Request {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let resp = self.inner.client.request(req).await.map_err(|e| WatchError::Request {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        match resp.status().as_u16() {
            200..=299 => Ok(resp),
            410 => Err(WatchError::Gone),
            status => Err(WatchError::Status {
                path: path.to_owned(),
                status,
            }),
        }
    }

    /// GET `path` and parse the JSON answer, within `timeout`.
    pub async fn get_json(&self, path: &str, timeout: Duration) -> Result<serde_json::Value, WatchError> {
        let work = async {
            let resp = self.send(path).await?;
            let body = resp.into_body().collect().await.map_err(|e| WatchError::Request {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
            serde_json::from_slice(&body.to_bytes()).map_err(|e| WatchError::Decode {
                path: path.to_owned(),
                message: e.to_string(),
            })
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| WatchError::Request {
                path: path.to_owned(),
                message: format!("no answer within {timeout:?}"),
            })?
    }

    /// GET `path` as a stream of newline-delimited JSON values (a watch).
    pub async fn stream_lines(&self, path: &str) -> Result<Lines, WatchError> {
        let resp = tokio::time::timeout(Duration::from_secs(10), self.send(path))
            .await
            .map_err(|_| WatchError::Request {
                path: path.to_owned(),
                message: "no answer within 10s".into(),
            })??;
        Ok(Lines {
            path: path.to_owned(),
            body: resp.into_body(),
            buf: BytesMut::new(),
        })
    }
}

/// Newline-delimited JSON read from a streaming body.
pub struct Lines {
    path: String,
    body: hyper::body::Incoming,
    buf: BytesMut,
}

impl Lines {
    /// The next JSON value; `Ok(None)` when the server ended the stream; an error when nothing
    /// arrived for `idle` (the server sends bookmarks, so silence means a dead connection).
    pub async fn next(&mut self, idle: Duration) -> Result<Option<serde_json::Value>, WatchError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(pos + 1);
                let line = line.strip_suffix(b"\n").unwrap_or(&line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(line).map(Some).map_err(|e| WatchError::Decode {
                    path: self.path.clone(),
                    message: e.to_string(),
                });
            }
            let frame = tokio::time::timeout(idle, self.body.frame())
                .await
                .map_err(|_| WatchError::Request {
                    path: self.path.clone(),
                    message: format!("watch idle for {idle:?}"),
                })?;
            match frame {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(WatchError::Request {
                        path: self.path.clone(),
                        message: e.to_string(),
                    });
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}
