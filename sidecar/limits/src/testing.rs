//! Real `redis-server` processes (Debian's package) on 127.0.0.1 for tests: one server, a Redis
//! Cluster, or a master and a replica behind Redis Sentinels; stopped on drop.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` process without persistence, in its own directory.
pub struct Redis {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// Starts one on a free port.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self::start_on(port)
    }

    /// Starts one on `port` (a restart on the same address).
    pub fn start_on(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let child = spawn(&mut server(port, dir.path()));
        wait_for_ports(&[port]);
        Self { child, port, _dir: dir }
    }

    /// Its `--limits-store` URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster of three masters (`redis-server --cluster-enabled yes`, joined with
/// `redis-cli --cluster create`), each on 127.0.0.1, stopped on drop.
pub struct RedisCluster {
    nodes: Vec<Child>,
    /// The masters' ports.
    pub ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts three nodes and creates the cluster; waits until it serves every slot.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        let mut ports = Vec::new();
        for i in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let node_dir = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            let child = Command::new("redis-server")
                .args([
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server (apt-get install redis-server)");
            nodes.push(child);
            ports.push(port);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in &ports {
            while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
                assert!(Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli");
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = Self {
            nodes,
            ports,
            _dir: dir,
        };
        // Every node agrees the cluster is up.
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in &cluster.ports {
            loop {
                let out = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "cluster", "info"])
                    .output()
                    .expect("redis-cli");
                if String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "the cluster did not come up");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        cluster
    }

    /// Its `--limits-store` URL.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis-cluster://{}", nodes.join(","))
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

/// A master, one replica and three Redis Sentinels (quorum 2) watching it under
/// [`RedisSentinel::MASTER`], each on 127.0.0.1, stopped on drop. The sentinels take a master
/// down after a second without an answer and promote the replica.
pub struct RedisSentinel {
    /// The data nodes (port, process): the master first at the start, then the replica.
    data: Vec<(u16, Option<Child>)>,
    sentinels: Vec<Child>,
    /// The sentinels' ports.
    pub sentinel_ports: Vec<u16>,
    /// The sentinels' password, if they have one (for `redis-cli`).
    sentinel_password: Option<String>,
    _dir: tempfile::TempDir,
}

impl RedisSentinel {
    /// The master's name in the sentinels' configuration.
    pub const MASTER: &str = "limits";

    /// Starts them without passwords; waits until every sentinel knows the replica and the
    /// two other sentinels (so that a failover can happen).
    pub fn start() -> Self {
        Self::start_with(None, false)
    }

    /// The same with data nodes requiring `password` (`requirepass`, `masterauth`; the
    /// sentinels' `auth-pass`), and the sentinels too when `sentinels_too`.
    pub fn start_with_password(password: &str, sentinels_too: bool) -> Self {
        Self::start_with(Some(password), sentinels_too)
    }

    fn start_with(password: Option<&str>, sentinels_too: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let master = free_port();
        let replica = free_port();
        let mut data = Vec::new();
        for (i, port) in [master, replica].into_iter().enumerate() {
            let node_dir = dir.path().join(format!("data{i}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            let mut command = server(port, &node_dir);
            if let Some(p) = password {
                command.args(["--requirepass", p, "--masterauth", p]);
            }
            if port == replica {
                command.args(["--replicaof", "127.0.0.1", &master.to_string()]);
            }
            data.push((port, Some(spawn(&mut command))));
        }
        wait_for_ports(&[master, replica]);
        let mut sentinels = Vec::new();
        let mut sentinel_ports = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let sentinel_dir = dir.path().join(format!("sentinel{i}"));
            std::fs::create_dir_all(&sentinel_dir).unwrap();
            let name = Self::MASTER;
            let mut conf = format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {name} 127.0.0.1 {master} 2\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 5000\n\
                 sentinel parallel-syncs {name} 1\n",
                sentinel_dir.display()
            );
            if let Some(p) = password {
                conf.push_str(&format!("sentinel auth-pass {name} {p}\n"));
                if sentinels_too {
                    conf.push_str(&format!("requirepass {p}\nsentinel sentinel-pass {p}\n"));
                }
            }
            // A sentinel rewrites its configuration file: one of its own.
            let path = sentinel_dir.join("sentinel.conf");
            std::fs::write(&path, conf).unwrap();
            let mut command = Command::new("redis-server");
            command.arg(&path).arg("--sentinel");
            sentinels.push(spawn(&mut command));
            sentinel_ports.push(port);
        }
        wait_for_ports(&sentinel_ports);
        let set = Self {
            data,
            sentinels,
            sentinel_ports,
            sentinel_password: password.filter(|_| sentinels_too).map(str::to_owned),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        for port in &set.sentinel_ports {
            loop {
                let info = set.sentinel(*port, &["SENTINEL", "MASTER", Self::MASTER]);
                let field = |name: &str| {
                    let mut lines = info.lines();
                    lines
                        .find(|l| *l == name)
                        .and_then(|_| lines.next())
                        .unwrap_or("")
                        .to_owned()
                };
                if field("num-slaves") == "1" && field("num-other-sentinels") == "2" {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the sentinels did not find each other: {info}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        set
    }

    /// Its `--limits-store` URL.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.sentinel_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis-sentinel://{}/{}", nodes.join(","), Self::MASTER)
    }

    /// The master's port, as the first sentinel that answers names it.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinel_ports.iter().find_map(|port| {
            let out = self.sentinel(*port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", Self::MASTER]);
            out.lines().nth(1)?.trim().parse().ok()
        })
    }

    /// Kills the data node the sentinels name master; returns its port.
    pub fn kill_master(&mut self) -> u16 {
        let port = self.master_port().expect("the sentinels name a master");
        let (_, child) = self.data.iter_mut().find(|(p, _)| *p == port).expect("a data node");
        if let Some(mut child) = child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        port
    }

    /// Stops the data node the sentinels name master without closing its connections (a
    /// node gone without a word: `kill -STOP`, so it never answers); returns its port.
    pub fn freeze_master(&mut self) -> u16 {
        let port = self.master_port().expect("the sentinels name a master");
        let (_, child) = self.data.iter().find(|(p, _)| *p == port).expect("a data node");
        let pid = child.as_ref().expect("a running data node").id();
        let status = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .expect("kill (procps)");
        assert!(status.success(), "kill -STOP {pid}");
        port
    }

    /// Waits until the sentinels name a master other than `old` (up to `within`); returns
    /// its port.
    pub fn wait_for_failover(&self, old: u16, within: Duration) -> u16 {
        let deadline = Instant::now() + within;
        loop {
            match self.master_port() {
                Some(port) if port != old => return port,
                _ => {}
            }
            assert!(Instant::now() < deadline, "no failover within {within:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis-cli` against the sentinel on `port`.
    fn sentinel(&self, port: u16, args: &[&str]) -> String {
        let mut command = Command::new("redis-cli");
        command.args(["-p", &port.to_string()]).args(args);
        if let Some(p) = &self.sentinel_password {
            command.env("REDISCLI_AUTH", p);
        }
        let out = command.output().expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        let data = self.data.iter_mut().filter_map(|(_, c)| c.as_mut());
        for child in self.sentinels.iter_mut().chain(data) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `redis-server` on `port` without persistence, in `dir`.
fn server(port: u16, dir: &std::path::Path) -> Command {
    let mut command = Command::new("redis-server");
    command
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir);
    command
}

fn spawn(command: &mut Command) -> Child {
    command
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install redis-server)")
}

fn wait_for_ports(ports: &[u16]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for port in ports {
        while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
