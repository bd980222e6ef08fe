//! The connection to the Redis store, the script every limits decision runs there
//! (`take.lua`) and the one that remembers signatures against replay (`remember.lua`): a standalone server (`redis://`, `rediss://`) or a Redis Cluster
//! (`redis-cluster://host:port,host:port`, `rediss-cluster://...`). Every call is bounded by
//! the store timeout; the connection comes back by itself after a failure.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{IntoConnectionInfo, Script};
use tokio::sync::Mutex;

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

/// Where the shared counts live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One server (or a primary behind a service): `redis://` or `rediss://`.
    Single(String),
    /// A Redis Cluster, by some of its nodes: `redis-cluster://` or `rediss-cluster://`.
    Cluster(Vec<String>),
}

impl Target {
    /// Parses `--limits-store`. The password is not part of the URL (it comes from a file).
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let bad = |why: &str| {
            StoreError::Url(format!(
                "{why} (expected redis://HOST:PORT[/DB], rediss://..., or redis-cluster://HOST:PORT,HOST:PORT)"
            ))
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        if rest.contains('@') {
            return Err(bad("put the password in --limits-store-password-file, not in the URL"));
        }
        let hosts = |plain: &str| -> Result<Vec<String>, StoreError> {
            let nodes: Vec<String> = rest
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| format!("{plain}://{n}"))
                .collect();
            if nodes.is_empty() {
                return Err(bad("no node"));
            }
            for node in &nodes {
                node.as_str().into_connection_info().map_err(|e| bad(&e.to_string()))?;
            }
            Ok(nodes)
        };
        match scheme {
            "redis" | "rediss" => {
                url.into_connection_info().map_err(|e| bad(&e.to_string()))?;
                Ok(Self::Single(url.to_owned()))
            }
            "redis-cluster" => Ok(Self::Cluster(hosts("redis")?)),
            "rediss-cluster" => Ok(Self::Cluster(hosts("rediss")?)),
            other => Err(bad(&format!("unknown scheme {other:?}"))),
        }
    }
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

enum Conn {
    Single(ConnectionManager),
    Cluster(Box<Cluster>),
}

struct Cluster {
    client: ClusterClient,
    conn: Mutex<Option<ClusterConnection>>,
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
    /// up), each call bounded by `timeout`.
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
                Conn::Cluster(Box::new(Cluster {
                    client: builder.build()?,
                    conn: Mutex::new(None),
                }))
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
        let reply: Vec<i64> = self.run(&invocation).await?;
        parse(&reply, take.keys.len())
    }

    /// Runs a script invocation within the timeout. A connection lost since the last call (a
    /// restarted or failed-over server) is made again at once: one more try within the same
    /// timeout.
    async fn run<T: redis::FromRedisValue>(&self, invocation: &redis::ScriptInvocation<'_>) -> Result<T, StoreError> {
        let call = async {
            match self.invoke(invocation).await {
                Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() => {
                    self.invoke(invocation).await
                }
                other => other,
            }
        };
        Ok(tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))??)
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> redis::RedisResult<T> {
        {
            let reply: T = match &self.conn {
                Conn::Single(conn) => invocation.invoke_async(&mut conn.clone()).await?,
                Conn::Cluster(cluster) => {
                    let Cluster { client, conn } = &**cluster;
                    let mut c = Self::cluster(client, conn).await?;
                    match invocation.invoke_async(&mut c).await {
                        Ok(r) => r,
                        Err(e) => {
                            if e.is_io_error() || e.is_connection_dropped() {
                                *conn.lock().await = None;
                            }
                            return Err(e);
                        }
                    }
                }
            };
            Ok(reply)
        }
    }

    async fn cluster(
        client: &ClusterClient,
        conn: &Mutex<Option<ClusterConnection>>,
    ) -> redis::RedisResult<ClusterConnection> {
        let mut slot = conn.lock().await;
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let c = client.get_async_connection().await?;
        *slot = Some(c.clone());
        Ok(c)
    }
}

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
        assert!(Target::parse("memcached://x:1").is_err());
        assert!(Target::parse("redis-cluster://").is_err());
        assert!(Target::parse("127.0.0.1:6379").is_err());
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
