//! Accepting connections: the accept loops of the plain and TLS listeners, the TLS handshake
//! (the certificate by SNI, a client certificate where a route wants one), the HTTP/1.1 and
//! HTTP/2 connection settings (header size and header read time bounded), and the graceful
//! drain on shutdown. Knows nothing of what a request means: each loop is handed the service
//! that answers a connection's requests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use http::header::STRICT_TRANSPORT_SECURITY;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::Connection;
use super::server_tls::ServerTls;
use crate::base::body::ProxyBody;
use crate::base::engine::Listener;

/// The HTTP/1.1 and HTTP/2 settings every listener serves connections with: heads read
/// within `header_read_timeout`, head buffers bounded by twice `max_header_bytes`.
pub fn connection_builder(header_read_timeout: Duration, max_header_bytes: u32) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(header_read_timeout)
        // Heads up to the limit are answered by the request path (431 with a JSON body); the
        // connection's buffer stops anything far beyond it (431 from hyper itself).
        .max_buf_size(2 * max_header_bytes as usize);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(2 * max_header_bytes)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// Accepts connections until `stopped` turns true, then waits up to `drain` for the open
/// connections to finish their requests (each told to close once idle).
pub async fn accept_loop<F, S>(
    listener: TcpListener,
    builder: auto::Builder<TokioExecutor>,
    make_service: F,
    mut stopped: watch::Receiver<bool>,
    drain: Duration,
) where
    F: Fn(SocketAddr) -> S,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<ProxyBody>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let graceful = GracefulShutdown::new();
    while let Some((stream, peer)) = next_connection(&listener, &mut stopped).await {
        let connection = builder
            .serve_connection(TokioIo::new(stream), make_service(peer))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(?drain, "connections still open after the drain timeout: closing them");
    }
}

/// The next accepted connection (with `TCP_NODELAY`), or `None` once `stopped` changes. A
/// failed accept (typically EMFILE) backs off instead of spinning.
async fn next_connection(
    listener: &TcpListener,
    stopped: &mut watch::Receiver<bool>,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            _ = stopped.changed() => return None,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "cannot set TCP_NODELAY");
                }
                return Some((stream, peer));
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// `Strict-Transport-Security` on every response over TLS.
const HSTS: HeaderValue = HeaderValue::from_static("max-age=31536000");

/// The TLS listener: like [`accept_loop`], with a TLS handshake (bounded by
/// `handshake_timeout`) before HTTP, and `Strict-Transport-Security` on every response. The
/// handshake uses the TLS configuration `current_tls` gives when it starts; the connection
/// keeps it across reloads. `make_service` gets the connection the handshake described.
pub async fn tls_accept_loop<T, F, S>(
    listener: TcpListener,
    builder: auto::Builder<TokioExecutor>,
    current_tls: T,
    make_service: F,
    mut stopped: watch::Receiver<bool>,
    drain: Duration,
    handshake_timeout: Duration,
) where
    T: Fn() -> Option<Arc<ServerTls>> + Send + Sync + 'static,
    F: Fn(Connection) -> S + Send + Sync + 'static,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<ProxyBody>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let current_tls = Arc::new(current_tls);
    let make_service = Arc::new(make_service);
    while let Some((stream, peer)) = next_connection(&listener, &mut stopped).await {
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let current_tls = current_tls.clone();
        let make_service = make_service.clone();
        tokio::spawn(async move {
            let (stream, conn) =
                match tokio::time::timeout(handshake_timeout, tls_handshake(&*current_tls, stream, peer)).await {
                    Ok(Ok(done)) => done,
                    Ok(Err(HandshakeError::ClientCertificate(error))) => {
                        // A client authentication failure: worth an operational line (there
                        // is no request, hence no audit line).
                        tracing::info!(%peer, %error, "TLS client certificate refused");
                        return;
                    }
                    Ok(Err(HandshakeError::Other(error))) => {
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let inner = make_service(conn);
            let service = service_fn(move |req| {
                let response = inner.call(req);
                async move {
                    let mut resp = response.await?;
                    resp.headers_mut().insert(STRICT_TRANSPORT_SECURITY, HSTS);
                    Ok::<_, Infallible>(resp)
                }
            });
            let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            ?drain,
            "TLS connections still open after the drain timeout: closing them"
        );
    }
}

/// Reads the ClientHello, picks the configuration for its SNI name (asking for a client
/// certificate where a route wants one), completes the handshake and describes the
/// connection.
async fn tls_handshake(
    current_tls: &(dyn Fn() -> Option<Arc<ServerTls>> + Send + Sync),
    stream: TcpStream,
    peer: SocketAddr,
) -> Result<(tokio_rustls::server::TlsStream<TcpStream>, Connection), HandshakeError> {
    let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
        .await
        .map_err(|e| HandshakeError::Other(format!("reading the ClientHello: {e}")))?;
    let Some(tls) = current_tls() else {
        return Err(HandshakeError::Other("no route has a TLS certificate".into()));
    };
    let config = tls.config_for(start.client_hello().server_name());
    let stream = start.into_stream(config).await.map_err(|e| {
        let client_cert = matches!(
            e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()),
            Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
        );
        if client_cert {
            HandshakeError::ClientCertificate(e.to_string())
        } else {
            HandshakeError::Other(e.to_string())
        }
    })?;
    let client_cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| tls.peer_certificate(chain))
        .map(Arc::new);
    let conn = Connection {
        peer,
        listener: Listener::Inbound,
        tls: true,
        client_cert,
    };
    Ok((stream, conn))
}

/// Why a TLS handshake did not complete.
enum HandshakeError {
    /// The client's certificate was refused (no profile CA verifies it).
    ClientCertificate(String),
    Other(String),
}

fn local(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Logs where a listener listens.
pub fn log_listening(listener: &TcpListener, name: &'static str) {
    tracing::info!(addr = %local(listener), listener = name, "listening");
}
