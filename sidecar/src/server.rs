//! Listeners and connection handling: HTTP/1.1 (keep-alive) and HTTP/2 with prior knowledge
//! on the same socket, header size and header read time bounded; on `--inbound-tls`, the same
//! over TLS (HTTP/2 or HTTP/1.1 by ALPN) with the TLS configuration of the configuration in
//! force when the connection arrived ([`crate::tls`]).

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

use crate::audit::AuditLog;
use crate::cli::ServeArgs;
use crate::engine::InMemoryLimiter;
use crate::forward::Forwarder;
use crate::metrics::Metrics;
use crate::proxy::{self, Connection, Listener};
use crate::reload::{self, Snapshot};
use crate::state::{Active, Shared};
use crate::{admin, metrics::ReloadResult};

/// Why the sidecar cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr} ({name}): {source}")]
    Bind {
        name: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("--config-dir is required")]
    NoConfigDir,
    #[error("cannot open the audit log {path}: {source}")]
    AuditLog {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Binds every listener, loads the configuration and serves until the future ends (never,
/// short of an error) or a shutdown signal arrives.
pub async fn run(args: ServeArgs) -> Result<(), ServeError> {
    let dir = args.config_dir.clone().ok_or(ServeError::NoConfigDir)?;
    let bind = |name: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { name, addr, source })
    };
    let inbound = bind("inbound", args.inbound).await?;
    let inbound_tls = bind("inbound-tls", args.inbound_tls).await?;
    let egress = bind("egress", args.egress).await?;
    let admin_listener = bind("admin", args.admin).await?;

    let audit = AuditLog::open(args.audit_log.as_deref())
        .and_then(|log| log.spawn_flusher().map(|()| log))
        .map_err(|source| ServeError::AuditLog {
            path: args.audit_log.clone().unwrap_or_else(|| "<stdout>".into()),
            source,
        })?;
    let metrics = Metrics::new();
    crate::origin_auth::set_max_signed_body_bytes(args.max_signed_body_bytes as u64);
    let forwarder = Forwarder::new(args.backend_connect_timeout, args.backend_timeout);
    let sources = reload::Sources {
        mounted: dir,
        api: watch_dir(&args),
    };
    let dir = sources.current().to_owned();
    let snapshot = Snapshot::read(&dir);
    let limiter = Arc::new(InMemoryLimiter::new());
    let initial = match reload::load(&dir, &limiter, &forwarder) {
        Ok(active) => {
            tracing::info!(generation = active.generation(), routes = active.config.routes.len(),
                dir = %dir.display(), "configuration loaded");
            metrics.reload(ReloadResult::Ok);
            active
        }
        Err(error) => {
            tracing::error!(%error, dir = %dir.display(),
                "no valid configuration yet: serving no routes, not ready; retrying on change");
            metrics.reload(ReloadResult::Error);
            Active::empty(limiter.clone())
        }
    };
    let shared = Shared::new(
        initial,
        metrics,
        forwarder,
        args.max_header_bytes as usize,
        args.max_signed_body_bytes,
        limiter,
        audit.clone(),
    );

    let builder = connection_builder(&args);
    let (stop, stopped) = watch::channel(false);
    let mut serving = Vec::new();
    for (listener, kind) in [(inbound, Listener::Inbound), (egress, Listener::Egress)] {
        let shared = shared.clone();
        log_listening(&listener, if kind == Listener::Inbound { "inbound" } else { "egress" });
        let make = move |peer| {
            let shared = shared.clone();
            let conn = Connection {
                peer,
                listener: kind,
                tls: false,
                client_cert: None,
            };
            service_fn(move |req| {
                let shared = shared.clone();
                let conn = conn.clone();
                async move { Ok::<_, Infallible>(proxy::handle(shared, conn, req).await) }
            })
        };
        serving.push(tokio::spawn(accept_loop(
            listener,
            builder.clone(),
            make,
            stopped.clone(),
            args.drain_timeout,
        )));
    }
    {
        let shared = shared.clone();
        log_listening(&admin_listener, "admin");
        let make = move |_| {
            let shared = shared.clone();
            service_fn(move |req| {
                let resp = admin::handle(&shared, &req);
                async move { Ok::<_, Infallible>(resp) }
            })
        };
        serving.push(tokio::spawn(accept_loop(
            admin_listener,
            builder.clone(),
            make,
            stopped.clone(),
            args.drain_timeout,
        )));
    }
    log_listening(&inbound_tls, "inbound-tls");
    serving.push(tokio::spawn(tls_accept_loop(
        inbound_tls,
        builder.clone(),
        shared.clone(),
        stopped.clone(),
        args.drain_timeout,
        args.header_read_timeout,
    )));
    let follower = follow_api(&args, &sources);
    tokio::spawn(crate::oauth2::refresh_keys(
        shared.clone(),
        crate::oauth2::RefreshPolicy {
            interval: args.jwks_refresh_interval,
            min_interval: args.jwks_min_refresh_interval,
        },
    ));
    let watcher = tokio::spawn(reload::watch(shared, sources, args.reload_interval, snapshot));

    shutdown_signal().await;
    tracing::info!(drain = ?args.drain_timeout, "shutting down: no new connections, draining the open ones");
    watcher.abort();
    if let Some(follower) = follower {
        follower.abort();
    }
    let _ = stop.send(true);
    for task in serving {
        let _ = task.await;
    }
    audit.flush();
    tracing::info!("stopped");
    Ok(())
}

/// `--watch-dir`, or its default, when `--watch-configmap` is set.
fn watch_dir(args: &ServeArgs) -> Option<std::path::PathBuf> {
    args.watch_configmap.as_ref()?;
    Some(
        args.watch_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("portcullis-api-config")),
    )
}

/// Starts following the sidecar's ConfigMap and Secret through the API, if asked to. A
/// failure to set up is logged and the mounted files keep being used.
fn follow_api(args: &ServeArgs, sources: &reload::Sources) -> Option<tokio::task::JoinHandle<()>> {
    let (configmap, secret, dir) = (
        args.watch_configmap.clone()?,
        args.watch_secret.clone()?,
        sources.api.clone()?,
    );
    let config = match &args.api_server {
        Some(url) => {
            let token = match &args.api_token_file {
                Some(f) => match std::fs::read_to_string(f) {
                    Ok(t) => Some(t.trim().to_owned()),
                    Err(error) => {
                        tracing::error!(%error, file = %f.display(), "cannot read --api-token-file; not following the API");
                        return None;
                    }
                },
                None => None,
            };
            Ok(portcullis_kubewatch::ApiConfig {
                base_url: url.clone(),
                token,
                ca_pem: None,
                namespace: args.namespace.clone().unwrap_or_else(|| "default".into()),
            })
        }
        None => portcullis_kubewatch::ApiConfig::in_cluster().map(|mut c| {
            if let Some(ns) = &args.namespace {
                c.namespace = ns.clone();
            }
            c
        }),
    };
    let client = match config.and_then(portcullis_kubewatch::ApiClient::new) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot follow the configuration through the API; using the mounted files");
            return None;
        }
    };
    tracing::info!(%configmap, %secret, namespace = client.namespace(), dir = %dir.display(),
        "following the configuration through the API");
    let target = portcullis_kubewatch::Target { configmap, secret, dir };
    Some(tokio::spawn(portcullis_kubewatch::run(client, target)))
}

fn connection_builder(args: &ServeArgs) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(args.header_read_timeout)
        // Heads up to the limit are answered by `proxy::handle` (431 with a JSON body); the
        // connection's buffer stops anything far beyond it (431 from hyper itself).
        .max_buf_size(2 * args.max_header_bytes as usize);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(2 * args.max_header_bytes)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// Accepts connections until `stopped` turns true, then waits up to `drain` for the open
/// connections to finish their requests (each told to close once idle).
async fn accept_loop<F, S>(
    listener: TcpListener,
    builder: auto::Builder<TokioExecutor>,
    make_service: F,
    mut stopped: watch::Receiver<bool>,
    drain: Duration,
) where
    F: Fn(SocketAddr) -> S,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<crate::body::ProxyBody>,
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
/// `handshake_timeout`) before HTTP. The handshake uses the TLS configuration in force when
/// it starts; the connection keeps it across reloads.
async fn tls_accept_loop(
    listener: TcpListener,
    builder: auto::Builder<TokioExecutor>,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
    drain: Duration,
    handshake_timeout: Duration,
) {
    let graceful = GracefulShutdown::new();
    while let Some((stream, peer)) = next_connection(&listener, &mut stopped).await {
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let (stream, conn) =
                match tokio::time::timeout(handshake_timeout, tls_handshake(&shared, stream, peer)).await {
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
            let service = service_fn(move |req| {
                let shared = shared.clone();
                let conn = conn.clone();
                async move {
                    let mut resp = proxy::handle(shared, conn, req).await;
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
    shared: &Shared,
    stream: TcpStream,
    peer: SocketAddr,
) -> Result<(tokio_rustls::server::TlsStream<TcpStream>, Connection), HandshakeError> {
    let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
        .await
        .map_err(|e| HandshakeError::Other(format!("reading the ClientHello: {e}")))?;
    let Some(tls) = shared.active.load().tls.clone() else {
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

fn log_listening(listener: &TcpListener, name: &'static str) {
    tracing::info!(addr = %local(listener), listener = name, "listening");
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
