//! Shared harness of the black-box tests: the real `portcullis-sidecar` binary, a test
//! backend that echoes what it received, configuration directories and a small client.

#![allow(dead_code)]

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use portcullis_config::{Loaded, SecretMaterial, SidecarConfig};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// A free port on 127.0.0.1 (bound then released).
pub fn free_addr() -> SocketAddr {
    let l = StdListener::bind("127.0.0.1:0").expect("bind :0");
    l.local_addr().expect("local addr")
}

/// An address nothing listens on, for as long as the returned socket lives: it is bound and
/// never listens, so connections to it are refused and no other test (nor the kernel, for a
/// port-0 bind) can take its port meanwhile, as it could a port [`free_addr`] let go.
pub fn closed_addr() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().expect("address")).expect("bind :0");
    let addr = socket.local_addr().expect("local addr");
    (socket, addr)
}

/// Builds a configuration from JSON (config) and JSON (secrets) with a given generation.
pub fn loaded(generation: &str, config: Value, secrets: Value) -> Loaded {
    let mut c = json!({"schemaVersion": 1, "generation": generation, "namespace": "test"});
    let mut s = json!({"schemaVersion": 1, "generation": generation});
    merge(&mut c, config);
    merge(&mut s, secrets);
    Loaded {
        config: serde_json::from_value::<SidecarConfig>(c).expect("valid test config"),
        secrets: serde_json::from_value::<SecretMaterial>(s).expect("valid test secrets"),
    }
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

/// A running sidecar, killed on drop.
pub struct Sidecar {
    child: Child,
    pub inbound: SocketAddr,
    /// `--inbound-tls`.
    pub inbound_tls: SocketAddr,
    /// `--egress`.
    pub egress: SocketAddr,
    pub admin: SocketAddr,
    pub audit: PathBuf,
    pub stdout: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Sidecar {
    /// Starts the sidecar on `dir` and waits until its admin listener answers.
    pub async fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[]).await
    }

    /// Same, with extra flags. Origins on 127.0.0.1 are allowed (`--allow-loopback-origins`:
    /// every test peer is on this host); [`Sidecar::start_strict`] starts without it.
    pub async fn start_with(dir: &Path, extra: &[&str]) -> Self {
        let mut flags = vec!["--allow-loopback-origins"];
        flags.extend_from_slice(extra);
        Self::start_strict(dir, &flags).await
    }

    /// Starts the sidecar on `dir` with exactly the flags `extra` (and the listeners').
    ///
    /// The listeners' ports are picked free (bound to `:0`, then let go): another process of
    /// a parallel test may take one before the sidecar binds it. A sidecar that exits before
    /// it answers is started again on other ports (three tries), and the last one's log is
    /// shown if none comes up.
    pub async fn start_strict(dir: &Path, extra: &[&str]) -> Self {
        let mut tries = 0;
        loop {
            tries += 1;
            let mut sidecar = Self::spawn(dir, extra);
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if get(&sidecar.admin_url("/healthz")).await.map(|r| r.0) == Some(StatusCode::OK)
                    && sidecar.owns_its_listeners()
                {
                    return sidecar;
                }
                if let Ok(Some(status)) = sidecar.child.try_wait() {
                    let log = sidecar.log();
                    assert!(tries < 3, "sidecar exited ({status}) before it answered:\n{log}");
                    eprintln!("sidecar exited ({status}) before it answered, starting it again:\n{log}");
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "sidecar did not come up within 30 s:\n{}",
                    sidecar.log()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Whether the four listening sockets on the sidecar's ports are the child's own.
    ///
    /// A port [`free_addr`] let go may be taken by another test (an echo backend answers
    /// `/healthz` too) before the sidecar binds it: the sidecar then fails to bind and exits,
    /// and a `/healthz` answer alone would pass for it. Linux only: the listening sockets'
    /// inodes in `/proc/net/tcp` against the child's `/proc/<pid>/fd`.
    fn owns_its_listeners(&self) -> bool {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", self.pid())) else {
            return false;
        };
        let sockets: std::collections::HashSet<String> = fds
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter_map(|target| {
                let target = target.to_string_lossy();
                Some(target.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
            })
            .collect();
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        let listening_inode = |port: u16| {
            let local = format!("0100007F:{port:04X}");
            table.lines().skip(1).find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
                (fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A"))
                    .then(|| fields.get(9).map(|inode| (*inode).to_owned()))
                    .flatten()
            })
        };
        [self.inbound, self.inbound_tls, self.egress, self.admin]
            .iter()
            .all(|addr| listening_inode(addr.port()).is_some_and(|inode| sockets.contains(&inode)))
    }

    fn spawn(dir: &Path, extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (inbound, admin) = (free_addr(), free_addr());
        let (inbound_tls, egress) = (free_addr(), free_addr());
        let audit = tmp.path().join("audit.log");
        let stdout = tmp.path().join("stdout.log");
        let child = Command::new(env!("CARGO_BIN_EXE_portcullis-sidecar"))
            .arg("--config-dir")
            .arg(dir)
            .args(["--inbound", &inbound.to_string()])
            .args(["--admin", &admin.to_string()])
            .args(["--inbound-tls", &inbound_tls.to_string()])
            .args(["--egress", &egress.to_string()])
            .arg("--audit-log")
            .arg(&audit)
            .args(extra)
            .stdout(Stdio::from(std::fs::File::create(&stdout).expect("stdout file")))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start portcullis-sidecar");
        Self {
            child,
            inbound,
            inbound_tls,
            egress,
            admin,
            audit,
            stdout,
            _tmp: tmp,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.inbound, path)
    }

    /// The process id of the sidecar.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running (it has not exited or crashed).
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }

    /// A `kB` line of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, ...), in KiB.
    pub fn proc_status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/<pid>/status"))
    }

    /// Sends the sidecar process `signal` (a `kill -s` name such as `HUP`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {signal}");
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// The generation `/readyz` reports, and whether it is ready.
    pub async fn readiness(&self) -> (bool, String) {
        let (status, _, body) = get(&self.admin_url("/readyz")).await.expect("readyz answers");
        let v: Value = serde_json::from_slice(&body).expect("readyz JSON");
        (
            status == StatusCode::OK,
            v["generation"].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// Waits (bounded) until `/readyz` reports `generation`.
    pub async fn wait_generation(&self, generation: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.readiness().await.1 == generation {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The audit lines written so far, parsed.
    pub fn audit_lines(&self) -> Vec<Value> {
        let Ok(file) = std::fs::File::open(&self.audit) else {
            return Vec::new();
        };
        BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(&l).expect("audit line is JSON"))
            .collect()
    }

    /// Waits (bounded) for at least `n` audit lines.
    pub async fn wait_audit(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines = self.audit_lines();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit.
    pub async fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        self.signal("TERM");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the sidecar logged on stdout.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// The text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let (_, _, body) = get(&self.admin_url("/metrics")).await.expect("metrics answer");
        String::from_utf8(body.to_vec()).expect("metrics are text")
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pooled HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2-only (prior knowledge) client.
pub fn h2c_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

/// Sends `req`, reads the whole answer; `None` when the connection failed.
pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Option<(StatusCode, http::HeaderMap, Bytes)> {
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .ok()?
        .ok()?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.ok()?.to_bytes();
    Some((parts.status, parts.headers, body))
}

/// GET `url` with a fresh client.
pub async fn get(url: &str) -> Option<(StatusCode, http::HeaderMap, Bytes)> {
    let req = Request::get(url).body(Full::default()).expect("request");
    send(&client(), req).await
}

/// GET `url` with headers.
pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(&client(), req.body(Full::default()).expect("request"))
        .await
        .expect("sidecar answers")
}

/// JSON of a body.
pub fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// A test backend on 127.0.0.1:0. By path:
/// - `/status/NNN`: answers NNN;
/// - `/sleep/MS`: waits MS milliseconds, then answers 200;
/// - `/stream/N`: streams N chunks of 64 KiB, 10 ms apart;
/// - `/trickle/MS`: streams `a`, `b`, `c`, MS milliseconds apart (an app slow mid-answer);
/// - `/duplex`: streams the request body back as it arrives;
/// - `/count`: answers with the number of request body bytes, read as a stream;
/// - anything else: 200 with a JSON echo of method, path, query, version and headers.
pub struct Backend {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type TestBody = BoxBody<Bytes, Infallible>;

impl Backend {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service_fn(respond))
                        .await;
                });
            }
        });
        Self { addr, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

async fn respond(req: Request<Incoming>) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let full = |s: String| Full::new(Bytes::from(s)).boxed();
    if let Some(code) = path.strip_prefix("/status/") {
        let status = StatusCode::from_bytes(code.as_bytes()).unwrap_or(StatusCode::BAD_REQUEST);
        let mut r = Response::new(full(format!("{{\"status\":{code}}}")));
        *r.status_mut() = status;
        return Ok(r);
    }
    if let Some(ms) = path.strip_prefix("/sleep/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        return Ok(Response::new(full("slept".into())));
    }
    if let Some(n) = path.strip_prefix("/stream/") {
        let n: usize = n.parse().unwrap_or(1);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
        tokio::spawn(async move {
            for _ in 0..n {
                if tx
                    .send(Ok(Frame::data(Bytes::from(vec![b'x'; 64 * 1024]))))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let mut rx = rx;
        let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        return Ok(Response::new(BodyExt::boxed(StreamBody::new(stream))));
    }
    if let Some(ms) = path.strip_prefix("/trickle/") {
        let gap = Duration::from_millis(ms.parse().unwrap_or(0));
        let stream = futures::stream::unfold(0u8, move |i| async move {
            if i == 3 {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            Some((Ok(Frame::data(Bytes::from(vec![b'a' + i]))), i + 1))
        });
        return Ok(Response::new(BodyExt::boxed(StreamBody::new(stream))));
    }
    if path == "/duplex" {
        // Streams the request body back as it arrives.
        let mut body = req.into_body();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
        tokio::spawn(async move {
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data()
                    && tx.send(Ok(Frame::data(data))).await.is_err()
                {
                    return;
                }
            }
        });
        let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        return Ok(Response::new(BodyExt::boxed(StreamBody::new(stream))));
    }
    if path == "/count" {
        let mut body = req.into_body();
        let mut n = 0usize;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => n += f.data_ref().map_or(0, |d| d.len()),
                Err(_) => break,
            }
        }
        return Ok(Response::new(full(format!("{{\"bytes\":{n}}}"))));
    }
    let headers: serde_json::Map<String, Value> = req
        .headers()
        .keys()
        .map(|k| {
            let values: Vec<Value> = req
                .headers()
                .get_all(k)
                .iter()
                .map(|v| Value::from(String::from_utf8_lossy(v.as_bytes())))
                .collect();
            (k.as_str().to_owned(), Value::from(values))
        })
        .collect();
    let echo = json!({
        "method": req.method().as_str(),
        "path": path,
        "query": req.uri().query(),
        "version": format!("{:?}", req.version()),
        "headers": headers,
    });
    Ok(Response::new(full(echo.to_string())))
}

/// The value of the metric line `name` (with its labels, as exported) in a `/metrics` text.
pub fn metric(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

/// Sends `bytes` on a new connection to `addr`, waits `wait`, then closes it: a client that
/// leaves before its answer.
pub async fn send_then_leave(addr: SocketAddr, bytes: &[u8], wait: Duration) {
    use tokio::io::AsyncWriteExt;
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(bytes).await.expect("send");
    tokio::time::sleep(wait).await;
}

/// Asserts that an audit line records a client that left while the sidecar waited on its
/// behalf: status 499, decision `abandoned`, `reason`, and each of `fields` (name, value).
pub fn assert_abandoned(line: &Value, reason: &str, fields: &[(&str, &str)]) {
    assert_eq!(line["status"], 499, "{line}");
    assert_eq!(line["decision"], "abandoned", "{line}");
    assert_eq!(line["reason"], reason, "{line}");
    for (name, value) in fields {
        assert_eq!(line[*name], *value, "{name}: {line}");
    }
}
