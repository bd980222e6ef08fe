//! The connection to the Redis store, the script every limits decision runs there
//! (`take.lua`) and the one that remembers signatures against replay (`remember.lua`): a
//! standalone server (`redis://`, `rediss://`), a Redis Cluster
//! (`redis-cluster://host:port,host:port`, `rediss-cluster://...`), or the master a set of
//! Redis Sentinels name (`redis-sentinel://host:port,host:port/master`,
//! `rediss-sentinel://...`). Every call is bounded by the store timeout; the connection comes
//! back by itself after a failure (behind Sentinel: to the master the sentinels name then).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ErrorKind, IntoConnectionInfo, Pipeline, RedisError, RedisFuture,
    RedisResult, Script, ServerErrorKind, TlsMode, Value,
};
use tokio::sync::Mutex;

pub mod grants;

/// Why the store could not be used. Never carries the password.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("--limits-store: {0}")]
    Url(String),
    #[error("limits store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("limits store: {0}")]
    Redis(String),
    #[error("limits store answered something unexpected: {0}")]
    Reply(String),
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        // The error's text names the kind and the server's message, never the URL.
        Self::Redis(format!(
            "{:?}: {}",
            e.kind(),
            e.detail().unwrap_or_else(|| e.category())
        ))
    }
}

/// The port of a sentinel named without one.
pub const SENTINEL_PORT: u16 = 26379;

/// Where the shared counts live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One server (or a primary behind a service): `redis://` or `rediss://`.
    Single(String),
    /// A Redis Cluster, by some of its nodes: `redis-cluster://` or `rediss-cluster://`.
    Cluster(Vec<String>),
    /// The master a set of Redis Sentinels monitor under `master`:
    /// `redis-sentinel://HOST:PORT,HOST:PORT/MASTER` or `rediss-sentinel://...` (TLS to the
    /// data nodes; the sentinels are asked in plain TCP).
    Sentinel {
        /// The sentinels (host, port).
        sentinels: Vec<(String, u16)>,
        /// The master's name in the sentinels' configuration (`sentinel monitor NAME ...`).
        master: String,
        /// TLS to the master.
        tls: bool,
    },
}

impl Target {
    /// Parses `--limits-store`. The password is not part of the URL (it comes from a file).
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let bad = |why: &str| {
            StoreError::Url(format!(
                "{why} (expected redis://HOST:PORT[/DB], rediss://..., \
                 redis-cluster://HOST:PORT,HOST:PORT, rediss-cluster://..., \
                 redis-sentinel://HOST:PORT,HOST:PORT/MASTER or rediss-sentinel://...)"
            ))
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        if rest.contains('@') {
            return Err(bad("put the password in --limits-store-password-file, not in the URL"));
        }
        if rest.contains(['?', '#']) {
            return Err(bad(
                "no query or fragment (a password goes in --limits-store-password-file, not in the URL)",
            ));
        }
        fn nodes(list: &str) -> Vec<&str> {
            list.split(',').map(str::trim).filter(|n| !n.is_empty()).collect()
        }
        let hosts = |plain: &str| -> Result<Vec<String>, StoreError> {
            let nodes: Vec<String> = nodes(rest).iter().map(|n| format!("{plain}://{n}")).collect();
            if nodes.is_empty() {
                return Err(bad("no node"));
            }
            for node in &nodes {
                node.as_str().into_connection_info().map_err(|e| bad(&e.to_string()))?;
            }
            Ok(nodes)
        };
        let sentinel = |tls: bool| -> Result<Self, StoreError> {
            let (list, master) = rest
                .split_once('/')
                .ok_or_else(|| bad("no master name after the sentinels"))?;
            if master.is_empty()
                || !master
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(bad(&format!(
                    "{master:?} is not a master name (letters, digits, '-', '_', '.')"
                )));
            }
            let sentinels: Vec<(String, u16)> = nodes(list)
                .into_iter()
                .map(|n| host_port(n, SENTINEL_PORT).ok_or_else(|| bad(&format!("{n:?} is not HOST[:PORT]"))))
                .collect::<Result<_, _>>()?;
            if sentinels.is_empty() {
                return Err(bad("no sentinel"));
            }
            Ok(Self::Sentinel {
                sentinels,
                master: master.to_owned(),
                tls,
            })
        };
        match scheme {
            "redis" | "rediss" => {
                url.into_connection_info().map_err(|e| bad(&e.to_string()))?;
                Ok(Self::Single(url.to_owned()))
            }
            "redis-cluster" => Ok(Self::Cluster(hosts("redis")?)),
            "rediss-cluster" => Ok(Self::Cluster(hosts("rediss")?)),
            "redis-sentinel" => sentinel(false),
            "rediss-sentinel" => sentinel(true),
            other => Err(bad(&format!("unknown scheme {other:?}"))),
        }
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; `default` when the port is left out.
fn host_port(node: &str, default: u16) -> Option<(String, u16)> {
    let (host, port) = if let Some(v6) = node.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        if host.is_empty() || !host.chars().all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.')) {
            return None;
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (host, port)
    } else {
        let (host, port) = match node.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (node, None),
        };
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            return None;
        }
        (host, port)
    };
    let port = match port {
        None => default,
        Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0)?,
    };
    Some((host.to_owned(), port))
}

/// One call of the script.
#[derive(Debug, Clone)]
pub struct Take<'a> {
    /// The counters' keys (one hash slot).
    pub keys: &'a [&'a str],
    /// Their limits.
    pub limits: &'a [u32],
    /// Hits wanted.
    pub want: u32,
    /// A block is at most the smallest remaining / `divisor`.
    pub divisor: u32,
    /// 0: now, for a waiting request (one hit at least, or a refusal); 1: ahead, in the next
    /// bucket (a block, or nothing).
    pub lead: u8,
    /// Hits of an earlier block given back first: (bucket, hits).
    pub release: (u64, u32),
    /// Each counter's window ([`span_code`]); empty: every one a rolling minute.
    pub spans: &'a [u8],
}

/// How the script knows a counter's window: 0 a rolling minute, 1 an hour, 2 a day, 3 a
/// month.
pub fn span_code(span: portcullis_policy::Span) -> u8 {
    use portcullis_policy::{QuotaPeriod, Span};
    match span {
        Span::Minute => 0,
        Span::Period(QuotaPeriod::Hour) => 1,
        Span::Period(QuotaPeriod::Day) => 2,
        Span::Period(QuotaPeriod::Month) => 3,
    }
}

/// What the script did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// Hits taken (0 when refused, or ahead with too little budget).
    pub taken: u32,
    /// The counter at its limit (index into the keys), if refused.
    pub refused: Option<usize>,
    /// The smallest remaining budget, after.
    pub remaining: u32,
    /// Milliseconds until the oldest hit of the tightest counter leaves its window.
    pub reset_ms: u64,
    /// The bucket (100 ms, on the store's clock) the hits were counted in.
    pub bucket: u64,
    /// The store's clock when it ran the script (ms since the epoch).
    pub now_ms: u64,
    /// The tightest counter (index into the keys).
    pub tightest: usize,
}

/// How the store is reached.
enum Conn {
    /// Reconnects by itself.
    Single(ConnectionManager),
    /// Made on first use, and again after it was lost.
    Cluster(Box<Lazy<ClusterClient>>),
    /// Made on first use through the sentinels, and again (asking them anew, so to the
    /// current master) after it was lost, timed out or met a demoted master.
    Sentinel(Box<Lazy<SentinelClient>>),
}

/// A client and the connection it made, if any. The client's lock is held while connecting,
/// so that concurrent calls wait for one connection instead of each making their own; the
/// connection's only while it is read or replaced.
struct Lazy<C: Connect> {
    client: Mutex<C>,
    /// The connection and its number (one more for each made).
    conn: std::sync::Mutex<(u64, Option<C::Conn>)>,
}

/// A client that makes connections. (The future is boxed: the sentinel lookup's type is too
/// deep to nest in the limiter's.)
trait Connect {
    type Conn: Clone + Send;
    fn connect(&mut self, timeout: Duration) -> RedisFuture<'_, Self::Conn>;
}

impl Connect for ClusterClient {
    type Conn = ClusterConnection;
    fn connect(&mut self, _: Duration) -> RedisFuture<'_, ClusterConnection> {
        // The builder holds the timeouts.
        Box::pin(self.get_async_connection())
    }
}

impl Connect for SentinelClient {
    type Conn = MultiplexedConnection;
    /// Asks the sentinels for the master (and checks it is one), then connects to it.
    fn connect(&mut self, timeout: Duration) -> RedisFuture<'_, MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        Box::pin(async move { self.get_async_connection_with_config(&config).await })
    }
}

impl<C: Connect> Lazy<C> {
    fn new(client: C) -> Self {
        Self {
            client: Mutex::new(client),
            conn: std::sync::Mutex::new((0, None)),
        }
    }

    fn current(&self) -> (u64, Option<C::Conn>) {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The connection and its number, made if there is none.
    async fn get(&self, timeout: Duration) -> RedisResult<(u64, C::Conn)> {
        if let (n, Some(c)) = self.current() {
            return Ok((n, c));
        }
        let mut client = self.client.lock().await;
        // Made by another call while this one waited.
        if let (n, Some(c)) = self.current() {
            return Ok((n, c));
        }
        let c = client.connect(timeout).await?;
        let mut slot = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        *slot = (slot.0 + 1, Some(c.clone()));
        Ok((slot.0, c))
    }

    /// Drops connection `n` (every connection with `None`): the next call makes a new one. A
    /// newer connection than the one that failed is kept.
    fn forget(&self, n: Option<u64>) {
        let mut slot = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if n.is_none_or(|n| n == slot.0) {
            slot.1 = None;
        }
    }
}

/// A connection to the store, whichever its kind: commands and scripts run on it as on any
/// redis-rs async connection.
#[derive(Clone)]
pub(crate) enum Handle {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(MultiplexedConnection),
}

impl ConnectionLike for Handle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
            Self::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
            Self::Sentinel(c) => c.get_db(),
        }
    }
}

/// Whether `e` means the connection is gone (a restarted or failed server, a dropped link) or
/// leads to a node that is no longer the master (a failover): worth one more try on a new
/// connection.
fn lost(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
}

/// A signature to remember ([`Store::remember`]).
#[derive(Debug, Clone)]
pub struct Remember {
    /// The entry, then its key's counts of the current and the previous window.
    keys: [String; 3],
    ttl_ms: u64,
    budget: u64,
    window_ms: u64,
}

impl Remember {
    /// The keys of `entry` under `prefix` (`{profile key}` is the hash tag: one slot per
    /// signing key), the count windows on this process's wall clock.
    pub fn new(prefix: &str, entry: &portcullis_policy::ReplayEntry<'_>) -> Self {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self::at(prefix, entry, now_ms)
    }

    fn at(prefix: &str, entry: &portcullis_policy::ReplayEntry<'_>, now_ms: u64) -> Self {
        use std::fmt::Write;
        let owner = format!("{prefix}{{{}\0{}}}", entry.profile, entry.key_id);
        let mut signature = String::with_capacity(owner.len() + 65);
        signature.push_str(&owner);
        signature.push(':');
        for b in entry.replay_key {
            let _ = write!(signature, "{b:02x}");
        }
        let window_ms = entry.window_secs.max(1) * 1000;
        let bucket = now_ms / window_ms;
        Self {
            keys: [
                signature,
                format!("{owner}:n:{bucket}"),
                format!("{owner}:n:{}", bucket.saturating_sub(1)),
            ],
            ttl_ms: entry.ttl_secs.max(1) * 1000,
            budget: entry.budget as u64,
            window_ms,
        }
    }
}

/// What the store said of a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remembered {
    /// Not seen before: now remembered.
    Fresh,
    /// Seen before: a replay.
    Seen,
    /// Its key holds its budget of live signatures.
    Full,
}

/// The store: its connection and the scripts.
pub struct Store {
    conn: Conn,
    script: Script,
    remember: Script,
    timeout: Duration,
}

impl Store {
    /// A store at `target`, connected lazily (the sidecar starts whether or not the store is
    /// up), each call bounded by `timeout`. The password is the data nodes'; behind Sentinel
    /// it is offered to the sentinels too, as the default user's (`AUTH default PASSWORD`),
    /// which sentinels without a password accept as well.
    pub fn new(target: &Target, password: Option<String>, timeout: Duration) -> Result<Self, StoreError> {
        let conn = match target {
            Target::Single(url) => {
                let mut info = url.as_str().into_connection_info()?;
                if let Some(p) = password {
                    let settings = info.redis_settings().clone().set_password(p);
                    info = info.set_redis_settings(settings);
                }
                let client = redis::Client::open(info)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                Conn::Single(client.get_connection_manager_lazy(config)?)
            }
            Target::Cluster(nodes) => {
                let mut builder = ClusterClient::builder(nodes.clone())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(1);
                if let Some(p) = password {
                    builder = builder.password(p);
                }
                Conn::Cluster(Box::new(Lazy::new(builder.build()?)))
            }
            Target::Sentinel { sentinels, master, tls } => {
                let addrs = sentinels
                    .iter()
                    .map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port));
                let mut builder = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)?;
                if *tls {
                    builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
                }
                if let Some(p) = password {
                    builder = builder
                        .set_client_to_redis_password(&p)
                        .set_client_to_sentinel_username("default")
                        .set_client_to_sentinel_password(&p);
                }
                Conn::Sentinel(Box::new(Lazy::new(builder.build()?)))
            }
        };
        Ok(Self {
            conn,
            script: Script::new(include_str!("take.lua")),
            remember: Script::new(include_str!("remember.lua")),
            timeout,
        })
    }

    /// Remembers a signature (`remember.lua`), within the timeout.
    pub async fn remember(&self, call: &Remember) -> Result<Remembered, StoreError> {
        let mut invocation = self.remember.prepare_invoke();
        for key in &call.keys {
            invocation.key(key.as_str());
        }
        invocation.arg(call.ttl_ms).arg(call.budget).arg(call.window_ms);
        match self.run::<i64>(&invocation).await? {
            0 => Ok(Remembered::Fresh),
            1 => Ok(Remembered::Seen),
            2 => Ok(Remembered::Full),
            other => Err(StoreError::Reply(format!("{other:?}"))),
        }
    }

    /// Runs the limits script once, within the timeout.
    pub async fn take(&self, take: &Take<'_>) -> Result<Taken, StoreError> {
        let mut invocation = self.script.prepare_invoke();
        for key in take.keys {
            invocation.key(*key);
        }
        for limit in take.limits {
            invocation.arg(*limit);
        }
        invocation
            .arg(take.want)
            .arg(take.divisor.max(1))
            .arg(take.lead)
            .arg(take.release.0)
            .arg(take.release.1);
        for span in take.spans {
            invocation.arg(*span);
        }
        let reply: Vec<i64> = self.run(&invocation).await?;
        parse(&reply, take.keys.len())
    }

    /// Runs a script invocation within the timeout (see [`Self::call`]).
    async fn run<T: redis::FromRedisValue>(&self, invocation: &redis::ScriptInvocation<'_>) -> Result<T, StoreError> {
        self.call(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await
    }

    /// Runs `f` on the store's connection within the timeout. A connection lost since the
    /// last call (a restarted or failed-over server) is made again at once: one more try
    /// within the same timeout.
    async fn call<T, F>(&self, f: impl Fn(Handle) -> F) -> Result<T, StoreError>
    where
        F: Future<Output = RedisResult<T>>,
    {
        let once = async || {
            let (n, c) = self.connection().await?;
            let result = f(c).await;
            if let Err(e) = &result
                && lost(e)
            {
                self.forget(Some(n));
            }
            result
        };
        let call = async {
            match once().await {
                Err(e) if lost(&e) => once().await,
                other => other,
            }
        };
        let mut call = std::pin::pin!(call);
        let mut answered = tokio::time::timeout(self.timeout, &mut call).await;
        // A timer and the store's answer can become ready in the same turn of a busy runtime,
        // the timer seen first: the answer is then waiting for the connection's own task to
        // read it. Let the runtime run what is ready before calling the store slow, so that a
        // sidecar starved of CPU (by a flood of requests) does not take itself for a store
        // that stopped answering.
        for _ in 0..GRACE_TURNS {
            if answered.is_ok() {
                break;
            }
            tokio::task::yield_now().await;
            answered = tokio::time::timeout(Duration::ZERO, &mut call).await;
        }
        match answered {
            Ok(result) => Ok(result?),
            Err(_) => {
                // Behind Sentinel, a master that stopped answering (a node gone without a
                // word) is asked for again on the next call.
                if let Conn::Sentinel(lazy) = &self.conn {
                    lazy.forget(None);
                }
                Err(StoreError::Timeout(self.timeout))
            }
        }
    }

    /// The connection to run a call on, and its number (for [`Self::forget`]).
    async fn connection(&self) -> RedisResult<(u64, Handle)> {
        match &self.conn {
            Conn::Single(c) => Ok((0, Handle::Single(c.clone()))),
            Conn::Cluster(lazy) => lazy.get(self.timeout).await.map(|(n, c)| (n, Handle::Cluster(c))),
            Conn::Sentinel(lazy) => lazy.get(self.timeout).await.map(|(n, c)| (n, Handle::Sentinel(c))),
        }
    }

    /// Drops connection `n` after it was lost (the connection manager reconnects by itself).
    fn forget(&self, n: Option<u64>) {
        match &self.conn {
            Conn::Single(_) => {}
            Conn::Cluster(lazy) => lazy.forget(n),
            Conn::Sentinel(lazy) => lazy.forget(n),
        }
    }
}

/// Turns of the runtime a call that timed out gets to find an answer already received.
const GRACE_TURNS: usize = 4;

fn parse(reply: &[i64], keys: usize) -> Result<Taken, StoreError> {
    let bad = || StoreError::Reply(format!("{reply:?}"));
    let &[taken, refused, remaining, reset_ms, bucket, now_ms, tightest] = reply else {
        return Err(bad());
    };
    let refused = match usize::try_from(refused).map_err(|_| bad())? {
        0 => None,
        i if i <= keys => Some(i - 1),
        _ => return Err(bad()),
    };
    let tightest = usize::try_from(tightest).map_err(|_| bad())?;
    if tightest == 0 || tightest > keys {
        return Err(bad());
    }
    Ok(Taken {
        taken: u32::try_from(taken).map_err(|_| bad())?,
        refused,
        remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
        reset_ms: u64::try_from(reset_ms.max(0)).map_err(|_| bad())?,
        bucket: u64::try_from(bucket).map_err(|_| bad())?,
        now_ms: u64::try_from(now_ms).map_err(|_| bad())?,
        tightest: tightest - 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_one_server_or_cluster_nodes_and_never_a_password() {
        assert_eq!(
            Target::parse("redis://127.0.0.1:6379/2").unwrap(),
            Target::Single("redis://127.0.0.1:6379/2".into())
        );
        assert_eq!(
            Target::parse("redis-cluster://10.0.0.1:7000, 10.0.0.2:7000").unwrap(),
            Target::Cluster(vec!["redis://10.0.0.1:7000".into(), "redis://10.0.0.2:7000".into()])
        );
        let err = Target::parse("redis://:hunter2@10.0.0.1:6379").unwrap_err().to_string();
        assert!(
            err.contains("--limits-store-password-file") && !err.contains("hunter2"),
            "{err}"
        );
        for url in [
            "redis://10.0.0.1:6379?password=hunter2",
            "redis://10.0.0.1:6379/0#hunter2",
            "redis-cluster://10.0.0.1:7000?password=hunter2",
            "redis-sentinel://s0:26379/limits?password=hunter2",
        ] {
            let err = Target::parse(url).unwrap_err().to_string();
            assert!(
                err.contains("no query or fragment") && !err.contains("hunter2"),
                "{url}: {err}"
            );
        }
        assert!(Target::parse("memcached://x:1").is_err());
        assert!(Target::parse("redis-cluster://").is_err());
        assert!(Target::parse("127.0.0.1:6379").is_err());
    }

    #[test]
    fn sentinel_urls_name_the_sentinels_and_the_master() {
        assert_eq!(
            Target::parse("redis-sentinel://10.0.0.1:26380, sentinel-1.redis ,[fd00::1]:5000,[::1]/limits").unwrap(),
            Target::Sentinel {
                sentinels: vec![
                    ("10.0.0.1".into(), 26380),
                    ("sentinel-1.redis".into(), SENTINEL_PORT),
                    ("fd00::1".into(), 5000),
                    ("::1".into(), SENTINEL_PORT),
                ],
                master: "limits".into(),
                tls: false,
            }
        );
        assert_eq!(
            Target::parse("rediss-sentinel://s:26379/my_master.1").unwrap(),
            Target::Sentinel {
                sentinels: vec![("s".into(), 26379)],
                master: "my_master.1".into(),
                tls: true,
            }
        );
        for (url, why) in [
            ("redis-sentinel://10.0.0.1:26379", "no master name"),
            ("redis-sentinel://10.0.0.1:26379/", "is not a master name"),
            ("redis-sentinel://10.0.0.1:26379/a/b", "is not a master name"),
            ("redis-sentinel://10.0.0.1:26379/a?db=1", "no query or fragment"),
            ("redis-sentinel:///limits", "no sentinel"),
            ("redis-sentinel://,/limits", "no sentinel"),
            ("redis-sentinel://h:0/limits", "\"h:0\" is not HOST[:PORT]"),
            ("redis-sentinel://h:65536/limits", "is not HOST[:PORT]"),
            ("redis-sentinel://h:/limits", "is not HOST[:PORT]"),
            ("redis-sentinel://fd00::1/limits", "is not HOST[:PORT]"),
            ("redis-sentinel://[fd00::1/limits", "is not HOST[:PORT]"),
            ("redis-sentinel://[fd00::1]x/limits", "is not HOST[:PORT]"),
            ("redis-sentinel://h h:1/limits", "is not HOST[:PORT]"),
            ("redis-sentinels://h:1/limits", "unknown scheme"),
        ] {
            let err = Target::parse(url).unwrap_err().to_string();
            assert!(err.starts_with("--limits-store: "), "{url}: {err}");
            assert!(err.contains(why), "{url}: {err}");
            assert!(
                err.contains("redis-sentinel://HOST:PORT,HOST:PORT/MASTER") && err.contains("redis://HOST:PORT"),
                "{url}: the expected forms are named: {err}"
            );
        }
        let err = Target::parse("redis-sentinel://:hunter2@10.0.0.1:26379/limits")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--limits-store-password-file") && !err.contains("hunter2"),
            "{err}"
        );
    }

    /// The store is made without a round trip: the sidecar starts whether or not the
    /// sentinels answer.
    #[tokio::test]
    async fn a_sentinel_store_connects_lazily_and_its_errors_hold_no_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let target = Target::parse(&format!("redis-sentinel://127.0.0.1:{port}/limits")).unwrap();
        let store = Store::new(&target, Some("hunter2".into()), Duration::from_millis(200)).unwrap();
        let err = store
            .take(&Take {
                keys: &["k"],
                limits: &[1],
                want: 1,
                divisor: 1,
                lead: 0,
                release: (0, 0),
                spans: &[],
            })
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("limits store"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn replies_are_checked() {
        let ok = parse(&[3, 0, 40, 59_000, 17_000_000_000, 1_700_000_000_000, 2], 2).unwrap();
        assert_eq!(ok.taken, 3);
        assert_eq!(ok.refused, None);
        assert_eq!(ok.tightest, 1);
        let refused = parse(&[0, 1, 0, 1000, 1, 100, 1], 2).unwrap();
        assert_eq!(refused.refused, Some(0));
        assert!(parse(&[0, 3, 0, 0, 0, 0, 1], 2).is_err());
        assert!(parse(&[1, 0, 0], 1).is_err());
        assert!(parse(&[1, 0, 0, 0, 0, 0, 0], 1).is_err());
    }
}
