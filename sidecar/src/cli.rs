//! The command line (see the contract in `docs/api.md`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `portcullis-sidecar`: serves the routes of a compiled configuration directory.
#[derive(Parser, Debug)]
#[command(name = "portcullis-sidecar", version, about, subcommand_negates_reqs = true)]
pub struct Cli {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Log format of the operational log (audit lines are always JSON).
    #[arg(long, value_enum, default_value_t = LogFormat::Json, global = true)]
    pub log_format: LogFormat,
    /// Most runtime workers. Without it, one per CPU the process may use (its affinity and
    /// its cgroup's CPU quota, rounded up), and 2 when no quota bounds it; one worker runs the
    /// current-thread scheduler. (`TOKIO_WORKER_THREADS` is read when this is not given.)
    #[arg(long, global = true, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub workers: Option<usize>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands besides serving.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// A tiny backend for demos: answers 200 with a JSON echo of the method, the path and the
    /// `X-Portcullis-*` headers it received.
    DemoBackend {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
}

/// Operational log format.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Options of the proxy itself.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Directory holding `config.json` and `secrets.json` (a mounted ConfigMap/Secret).
    #[arg(long, required = true)]
    pub config_dir: Option<PathBuf>,
    /// Plain-HTTP inbound listener (HTTP/1.1 and h2c).
    #[arg(long, default_value = "0.0.0.0:15080")]
    pub inbound: SocketAddr,
    /// TLS inbound listener (TLS 1.3/1.2, certificate by SNI, HTTP/2 and HTTP/1.1 by ALPN).
    #[arg(long, default_value = "0.0.0.0:15443")]
    pub inbound_tls: SocketAddr,
    /// Loopback listener for the app's own calls to origin routes (`egress: true`).
    #[arg(long, default_value = "127.0.0.1:15001")]
    pub egress: SocketAddr,
    /// Admin listener: `/metrics`, `/healthz`, `/readyz`, `/config` (`/config` only to
    /// loopback clients unless `--admin-config-remote`).
    #[arg(long, default_value = "0.0.0.0:15090")]
    pub admin: SocketAddr,
    /// Also answer `/config` (the configuration in force: routes, profiles, ranges; no
    /// secret) to clients that are not on the loopback interface.
    #[arg(long)]
    pub admin_config_remote: bool,
    /// File the audit lines (one JSON object per hit) are appended to; default: stdout.
    #[arg(long)]
    pub audit_log: Option<PathBuf>,
    /// Most bytes of audit lines waiting in memory to be written; when the output cannot keep
    /// up, lines beyond it are dropped and counted (`portcullis_audit_lines_dropped_total`).
    /// SIGHUP reopens `--audit-log` (log rotation).
    #[arg(long, default_value_t = 16 << 20, value_parser = clap::value_parser!(u64).range(65536..))]
    pub audit_buffer_bytes: u64,
    /// Time allowed for a client to send a request's headers before its connection is cut.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub header_read_timeout: Duration,
    /// Time allowed from a connection's accept until the client shows which HTTP it speaks
    /// (its first bytes, or the whole HTTP/2 preface), the TLS handshake included on
    /// `--inbound-tls`; else the connection is closed.
    #[arg(long, value_parser = parse_positive_duration, default_value = "10s")]
    pub handshake_timeout: Duration,
    /// A connection with no request in progress for this long is closed (HTTP/2: after a
    /// GOAWAY). HTTP/1.1 connections waiting for their next request are also bound by
    /// `--header-read-timeout`.
    #[arg(long, value_parser = parse_positive_duration, default_value = "90s")]
    pub idle_timeout: Duration,
    /// Most connections open at once on each of `--inbound`, `--inbound-tls` and `--egress`;
    /// beyond, a new connection is closed as soon as it is accepted (counted in
    /// `portcullis_connections_refused_total`). The admin listener has its own 64.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Most connections one client address (IPv6: one /64) may hold open at once on each of
    /// `--inbound`, `--inbound-tls` and `--egress` (beyond, counted as refused), so that one
    /// network cannot take a listener's whole `--max-connections`. Off by default: behind a
    /// load balancer or an ingress gateway every client comes from its few addresses.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_client: Option<u32>,
    /// Most requests in progress at once on one HTTP/2 connection (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,
    /// Longest wait for the next part of a request body: a client that sends nothing of its
    /// body for this long gets 408 (or, when the app has answered already, its upload toward
    /// the app is cut). Like nginx's `client_body_timeout`: the time between two reads, not
    /// for the whole body.
    #[arg(long, value_parser = parse_positive_duration, default_value = "30s")]
    pub body_read_timeout: Duration,
    /// Time allowed for the backend to answer with its response headers (else 504).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub backend_timeout: Duration,
    /// Time allowed to connect to the backend (else 502).
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub backend_connect_timeout: Duration,
    /// Largest request head (request line and headers) accepted, in bytes (else 431).
    #[arg(long, default_value_t = 64 * 1024, value_parser = clap::value_parser!(u32).range(8192..))]
    pub max_header_bytes: u32,
    /// Largest request body held in memory to check it against a digest (`Content-Digest`,
    /// `Digest`) that an inbound HTTP message signature covers (else 413), or to digest it for
    /// an outbound signature, in bytes; other bodies stream through unread.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_signed_body_bytes: usize,
    /// Most memory all request bodies held at once may take together, in bytes (bodies read to
    /// check a signed digest, to sign toward an origin, or kept for a retry with a fresh
    /// OAuth2 token); beyond it such requests get 503 with `Retry-After: 1`.
    #[arg(long, default_value_t = 32 << 20, value_parser = clap::value_parser!(u64).range(65536..))]
    pub body_buffer_budget: u64,
    /// Failed authentications (wrong Basic passwords, unknown API keys) one client address
    /// (IPv6: one /64) may have per minute before its requests get 429 (0: no limit).
    #[arg(long, default_value_t = 30)]
    pub auth_failures_per_address: u32,
    /// Failed authentications one claimed Basic user may have per minute, from any address,
    /// before requests for that user get 429 (0: no limit).
    #[arg(long, default_value_t = 10)]
    pub auth_failures_per_user: u32,
    /// Most consumers (the identities of `rateLimit.per: Consumer` profiles) with counters
    /// kept at once. A consumer is dropped once its hits left their windows; a new consumer
    /// beyond this while every kept one has live hits gets 429 (fails closed).
    #[arg(long, default_value_t = portcullis_policy::limit::DEFAULT_MAX_CONSUMERS,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000_000))]
    pub max_consumers: usize,
    /// Allow origins on this host (`backend.origin` resolving to a loopback or unspecified
    /// address), for tests and single-host setups. Off by default: in a pod such an origin is
    /// the pod's own app or the sidecar itself, reached around the routes that guard them.
    #[arg(long)]
    pub allow_loopback_origins: bool,
    /// Count rate limits and the org allowance in this Redis, shared by every replica:
    /// `redis://HOST:PORT[/DB]`, `rediss://...` (TLS), `redis-cluster://HOST:PORT,HOST:PORT`
    /// (`rediss-cluster://` with TLS), or the master Redis Sentinels name,
    /// `redis-sentinel://HOST:PORT,HOST:PORT/MASTER` (`rediss-sentinel://`: TLS to the data
    /// nodes). Without it each sidecar counts alone.
    #[arg(long, env = "PORTCULLIS_LIMITS_STORE")]
    pub limits_store: Option<String>,
    /// File holding the Redis password (a mounted Secret), for `--limits-store`. Behind
    /// Sentinel it is the data nodes' password, also offered to the sentinels (as the default
    /// user's, which sentinels without a password accept).
    #[arg(long)]
    pub limits_store_password_file: Option<PathBuf>,
    /// Time allowed for each call to the limits store; beyond, the store counts as unavailable
    /// and each replica enforces its share of every limit until it answers again.
    #[arg(long, value_parser = parse_positive_duration, default_value = "100ms")]
    pub limits_store_timeout: Duration,
    /// On SIGTERM, time allowed for open requests to finish before the process exits.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub drain_timeout: Duration,
    /// Follow this ConfigMap (key `config.json`) through the Kubernetes API, with
    /// `--watch-secret`: a change is enforced within a second instead of at the kubelet's next
    /// sync. Needs RBAC to get/list/watch the two objects; without it the mounted files are used.
    #[arg(long, requires = "watch_secret")]
    pub watch_configmap: Option<String>,
    /// The Secret (key `secrets.json`) followed with `--watch-configmap`.
    #[arg(long, requires = "watch_configmap")]
    pub watch_secret: Option<String>,
    /// Writable directory the followed objects are written to (kubelet layout). Once it holds a
    /// configuration it is preferred to `--config-dir`. Default: `$TMPDIR/portcullis-api-config`.
    #[arg(long)]
    pub watch_dir: Option<PathBuf>,
    /// API server URL for `--watch-*` (default: in-cluster, from the service account).
    #[arg(long)]
    pub api_server: Option<String>,
    /// Namespace of the followed objects (default: the service account's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// Bearer token file for `--api-server` (default: none; in-cluster uses the service account).
    #[arg(long)]
    pub api_token_file: Option<PathBuf>,
    /// Most OAuth2 token introspection calls in progress at once, in all; beyond, a request
    /// whose token needs one is answered 503 with `Retry-After`.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub introspection_max_in_flight: u32,
    /// Most introspection calls in progress at once for one client address (IPv6: per /64);
    /// beyond, 429 with `Retry-After`.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub introspection_client_max_in_flight: u32,
    /// Introspection calls one client address (IPv6: per /64) may start per second, in bursts
    /// of as many; beyond, 429 with `Retry-After`.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub introspection_client_rate: u32,
    /// How often the configuration directory is checked for changes.
    #[arg(long, value_parser = parse_duration, default_value = "250ms")]
    pub reload_interval: Duration,
    /// How often the key sets of OAuth2 profiles (`jwksUri`) are fetched again.
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    pub jwks_refresh_interval: Duration,
    /// Shortest time between two fetches of a key set asked for by a token whose key id it
    /// lacks (key rotation).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub jwks_min_refresh_interval: Duration,
}

/// Parses `250ms`, `10s`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 250ms, 10s or 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?}: unknown unit {unit:?} (ms, s or m)")),
    }
}

/// Like [`parse_duration`], refusing zero.
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("{s:?}: must be longer than zero")),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_positive_duration("0s").is_err());
        assert_eq!(parse_positive_duration("1ms"), Ok(Duration::from_millis(1)));
    }

    #[test]
    fn contract_defaults() {
        let cli = Cli::try_parse_from(["portcullis-sidecar", "--config-dir", "/c"]).expect("parses");
        assert_eq!(cli.serve.inbound.to_string(), "0.0.0.0:15080");
        assert_eq!(cli.serve.inbound_tls.to_string(), "0.0.0.0:15443");
        assert_eq!(cli.serve.egress.to_string(), "127.0.0.1:15001");
        assert_eq!(cli.serve.admin.to_string(), "0.0.0.0:15090");
        assert_eq!(cli.serve.handshake_timeout, Duration::from_secs(10));
        assert_eq!(cli.serve.idle_timeout, Duration::from_secs(90));
        assert_eq!(cli.serve.max_connections, 4096);
        assert_eq!(cli.serve.max_concurrent_streams, 100);
        assert_eq!(cli.serve.introspection_max_in_flight, 64);
        assert_eq!(cli.serve.introspection_client_max_in_flight, 4);
        assert_eq!(cli.serve.introspection_client_rate, 10);
        assert!(
            Cli::try_parse_from(["portcullis-sidecar"]).is_err(),
            "--config-dir is required"
        );
        let demo = Cli::try_parse_from(["portcullis-sidecar", "demo-backend", "--listen", "127.0.0.1:9"]);
        assert!(matches!(
            demo.expect("parses").command,
            Some(Command::DemoBackend { .. })
        ));
    }
}
