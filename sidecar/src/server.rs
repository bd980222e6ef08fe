//! The wiring: binds the listeners, loads the first configuration, starts the background
//! tasks (hot reload, key-set refresh, following the API) and hands every listener the
//! service that answers it: the request path ([`crate::request::handle`]) on the inbound,
//! TLS and egress listeners, the admin service on the admin listener. The only module that
//! knows every layer; nothing imports it but `main`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::base::engine::{Budget, InMemoryLimiter, Limits, Listener};
use crate::base::headers::PeerAddr;
use crate::cli::ServeArgs;
use crate::identity::introspection::{self, Introspector};
use crate::identity::jwks::{self, RefreshPolicy};
use crate::listen::Connection;
use crate::listen::accept::{
    ConnectionEvents, ConnectionLimits, Serving, Timeout, accept_loop, connection_builder, log_listening,
    tls_accept_loop,
};
use crate::ops::admin;
use crate::ops::reload::{self, Snapshot};
use crate::ops::state::{Active, Bounds, Shared};
use crate::request;
use crate::telemetry::audit::AuditLog;
use crate::telemetry::metrics::{ListenerMetrics, Metrics, ReloadResult};
use crate::upstream::{Forwarder, credentials};

/// Most connections open at once on the admin listener (probes, scrapes, `kubectl`): a
/// budget of its own, so that it answers however full the other listeners are.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Most admin connections one client address may hold: one client (a pod that can reach the
/// admin port) cannot take the whole budget and starve the kubelet's probes.
const ADMIN_MAX_PER_CLIENT: usize = 8;

/// The connection events of one listener, counted in its metrics.
struct Observed(ListenerMetrics);

impl ConnectionEvents for Observed {
    fn opened(&self) {
        self.0.open.inc();
    }

    fn closed(&self) {
        self.0.open.dec();
    }

    fn refused(&self) {
        self.0.refused.inc();
    }

    fn timed_out(&self, why: Timeout) {
        match why {
            Timeout::Handshake => self.0.handshake_timeouts.inc(),
            Timeout::Idle => self.0.idle_timeouts.inc(),
            Timeout::Send => self.0.send_timeouts.inc(),
        }
    }

    fn abandoned_too_often(&self) {
        self.0.reset_abuse.inc();
    }
}

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
    #[error(transparent)]
    LimitsStore(#[from] portcullis_limits::StoreError),
    #[error("cannot read --limits-store-password-file {path}: {source}")]
    LimitsStorePassword {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the audit log {path}: {source}")]
    AuditLog {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The limiter: in process, or shared through `--limits-store` (its background task
/// spawned, its metrics registered).
fn limits(args: &ServeArgs, metrics: &Metrics) -> Result<Limits, ServeError> {
    let local = InMemoryLimiter::new()
        .with_auth_failure_budget(Budget {
            per_address: args.auth_failures_per_address,
            per_user: args.auth_failures_per_user,
            ..Budget::default()
        })
        .with_max_consumers(args.max_consumers);
    let mut options = portcullis_limits::Options {
        max_consumers: args.max_consumers,
        ..Default::default()
    };
    let Some(url) = &args.limits_store else {
        return Ok(Limits::new(local, None, options));
    };
    let password = match &args.limits_store_password_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|source| ServeError::LimitsStorePassword {
                    path: path.clone(),
                    source,
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        ),
        None => None,
    };
    options.consumer_key = password.as_deref().map(|p| p.as_bytes().into());
    let target = portcullis_limits::Target::parse(url)?;
    let store = portcullis_limits::Store::new(&target, password, args.limits_store_timeout)?;
    let store_metrics = metrics.limits_store();
    let on_mode = store_metrics.clone();
    let limiter = Limits::new(local, Some(store), options)
        .on_mode(move |mode| on_mode.mode(mode.as_str()))
        .on_round_trip(move |took, failed| store_metrics.round_trip(took, failed));
    tracing::info!(store = %url, "rate limits counted in the shared store");
    Ok(limiter)
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

    let audit = AuditLog::open(args.audit_log.as_deref(), args.audit_buffer_bytes as usize)
        .and_then(|log| log.spawn_flusher().map(|()| log))
        .map_err(|source| ServeError::AuditLog {
            path: args.audit_log.clone().unwrap_or_else(|| "<stdout>".into()),
            source,
        })?;
    let metrics = Metrics::new();
    metrics.register_counter(audit.dropped());
    spawn_log_rotation(Arc::clone(&audit));
    credentials::set_max_signed_body_bytes(args.max_signed_body_bytes as u64);
    crate::base::body::set_body_buffer_budget(args.body_buffer_budget as usize);
    crate::upstream::outside::set_allow_loopback(args.allow_loopback_origins);
    let forwarder = Forwarder::new(args.backend_connect_timeout, args.backend_timeout).refusing_ports(
        [args.inbound, args.inbound_tls, args.egress, args.admin]
            .iter()
            .map(|a| a.port()),
    );
    let sources = reload::Sources {
        mounted: dir,
        api: watch_dir(&args),
    };
    let dir = sources.current().to_owned();
    let snapshot = Snapshot::read(&dir);
    let limiter = Arc::new(limits(&args, &metrics)?);
    tokio::spawn(Arc::clone(&limiter).run());
    let initial = match reload::load(&dir, &limiter, &forwarder, &metrics) {
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
        Bounds {
            max_header_bytes: args.max_header_bytes as usize,
            max_signed_body_bytes: args.max_signed_body_bytes,
            body_read_timeout: args.body_read_timeout,
        },
        limiter,
        audit.clone(),
        Introspector::new(
            introspection::TIMEOUT,
            introspection::Budget {
                max_in_flight: args.introspection_max_in_flight as usize,
                client_in_flight: args.introspection_client_max_in_flight,
                client_per_second: args.introspection_client_rate,
            },
        ),
    );

    let builder = connection_builder(args.max_header_bytes, args.max_concurrent_streams);
    let (stop, stopped) = watch::channel(false);
    let limits = ConnectionLimits {
        handshake_timeout: args.handshake_timeout,
        idle_timeout: args.idle_timeout,
        header_read_timeout: args.header_read_timeout,
        max_connections: args.max_connections as usize,
        max_per_client: args.max_connections_per_client.map(|n| n as usize),
    };
    let serving_as = |name: &'static str, limits: ConnectionLimits| Serving {
        builder: builder.clone(),
        limits,
        events: Arc::new(Observed(shared.metrics.listener(name))),
        stopped: stopped.clone(),
        drain: args.drain_timeout,
    };
    let mut serving = Vec::new();
    for (listener, kind, name) in [
        (inbound, Listener::Inbound, "inbound"),
        (egress, Listener::Egress, "egress"),
    ] {
        let shared = shared.clone();
        log_listening(&listener, name);
        let make = move |peer| {
            let shared = shared.clone();
            let conn = Connection {
                peer,
                peer_addr: PeerAddr::new(peer.ip()),
                listener: kind,
                tls: false,
                client_cert: None,
            };
            inbound_service(shared, conn)
        };
        serving.push(tokio::spawn(accept_loop(listener, serving_as(name, limits), make)));
    }
    {
        let shared = shared.clone();
        log_listening(&admin_listener, "admin");
        let config = if args.admin_config_remote {
            admin::ConfigVisibility::Anyone
        } else {
            admin::ConfigVisibility::Loopback
        };
        let make = move |peer: SocketAddr| {
            let shared = shared.clone();
            service_fn(move |req| {
                let resp = admin::handle(&shared, &req, peer.ip(), config);
                async move { Ok::<_, Infallible>(resp) }
            })
        };
        // Its own budget: probes and scrapes get through however full the others are; and a
        // share per client address, so that one client cannot hold that budget either.
        let limits = ConnectionLimits {
            max_connections: ADMIN_MAX_CONNECTIONS,
            max_per_client: Some(ADMIN_MAX_PER_CLIENT),
            ..limits
        };
        serving.push(tokio::spawn(accept_loop(
            admin_listener,
            serving_as("admin", limits),
            make,
        )));
    }
    log_listening(&inbound_tls, "inbound-tls");
    let current_tls = {
        let shared = shared.clone();
        move || shared.active.load().tls.clone()
    };
    let make = {
        let shared = shared.clone();
        move |conn: Connection| inbound_service(shared.clone(), conn)
    };
    serving.push(tokio::spawn(tls_accept_loop(
        inbound_tls,
        serving_as("inbound_tls", limits),
        current_tls,
        make,
    )));
    let follower = follow_api(&args, &sources);
    let key_sets = {
        let shared = shared.clone();
        move || {
            let active = shared.active.load();
            active
                .engine
                .jwks()
                .map(|(uri, slot)| (uri.to_owned(), slot.clone()))
                .collect()
        }
    };
    tokio::spawn(jwks::refresh_keys(
        key_sets,
        RefreshPolicy {
            interval: args.jwks_refresh_interval,
            min_interval: args.jwks_min_refresh_interval,
        },
    ));
    let providers = {
        let shared = shared.clone();
        move || shared.active.load().engine.login_providers().to_vec()
    };
    tokio::spawn(crate::identity::discovery::refresh_discovery(
        providers,
        RefreshPolicy {
            interval: args.jwks_refresh_interval,
            min_interval: args.jwks_min_refresh_interval,
        },
    ));
    tokio::spawn(crate::ops::grants::follow_revocations(shared.clone()));
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

/// The service of the inbound and egress listeners: each request goes down the request path
/// ([`request::handle`]). Its future holds the whole request's state (several KiB: the
/// decision, the audit record, the call to the app) and is boxed once here, so that hyper and
/// the connection's wrappers move a pointer, not the state, each time they take it over. It is
/// written into its allocation (`Box::write`) rather than made on the stack and copied there
/// (`Box::pin`), which copies the whole state's size (1.6% of the instructions per request).
fn inbound_service(
    shared: Arc<Shared>,
    conn: Connection,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<crate::base::body::ProxyBody>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static {
    service_fn(move |req| {
        let handling = Box::into_pin(Box::write(
            Box::new_uninit(),
            request::handle(shared.clone(), conn.clone(), req),
        ));
        async move { Ok::<_, Infallible>(handling.await) }
    })
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

/// On SIGHUP, reopens the audit log (after a log rotation moved it away).
fn spawn_log_rotation(audit: Arc<AuditLog>) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hup) => hup,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP: the audit log will not be reopened");
            return;
        }
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let audit = Arc::clone(&audit);
            // Waits for a flush in progress: off the runtime's threads.
            match tokio::task::spawn_blocking(move || audit.reopen()).await {
                Ok(Ok(())) => tracing::info!("SIGHUP: audit log reopened"),
                Ok(Err(error)) => {
                    tracing::error!(%error, "SIGHUP: cannot reopen the audit log; still writing the old one")
                }
                Err(_) => {}
            }
        }
    });
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
