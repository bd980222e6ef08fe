//! Faults under load (issue 15): the real sidecar binary carries a steady concurrent load (a
//! dozen clients in a loop over keep-alive connections, HTTP/1.1 and HTTP/2) while one fault
//! is injected, and every answer is counted. Each test asserts that the sidecar neither
//! crashes nor hangs, and that no request fails where the semantics allow none:
//!
//! - the app killed and started again on its port: clear gateway errors during the outage
//!   only, a bounded recovery, then no failure;
//! - the configuration reloaded a hundred times: no failure, the last one in force;
//! - the serving certificate rotated over the TLS listener: no failure, new connections see
//!   the new certificate;
//! - malformed configurations dropped in: no failure, refused and counted, the next good one
//!   applied;
//! - the identity provider (key set and introspection) stopped: cached keys and answers keep
//!   serving, new tokens fail closed, service recovers when the provider is back.
//!
//! The app and the identity provider are small hyper servers in the test that can be killed
//! (listener and open connections closed at once) and started again on the same port.

mod common;
#[path = "common/jwt.rs"]
mod jwt;
#[path = "common/pki.rs"]
mod pki;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures::future::BoxFuture;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use jwt::{ISSUER, Signer, now};
use pki::*;
use serde_json::{Value, json};
use tokio::task::{JoinHandle, JoinSet};

/// Clients of the steady load.
const WORKERS: usize = 12;
/// Longest one request may take before it counts as hung.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A load stops by itself after this long, whatever the test does.
const LOAD_CAP: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Servers that can be killed and started again.

type Handler = Arc<dyn Fn(Request<Incoming>) -> BoxFuture<'static, Response<Full<Bytes>>> + Send + Sync>;

/// A server on 127.0.0.1 that can be killed ([`Server::down`]: the listener and every open
/// connection closed at once, as when a process dies) and started again on the same port.
struct Server {
    addr: SocketAddr,
    handler: Handler,
    task: Option<JoinHandle<()>>,
}

impl Server {
    async fn start(handler: Handler) -> Self {
        let mut server = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            handler,
            task: None,
        };
        server.up().await;
        server
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Listens again (on the port of the first start).
    async fn up(&mut self) {
        assert!(self.task.is_none(), "already up");
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.addr).unwrap();
        let listener = socket.listen(1024).unwrap();
        self.addr = listener.local_addr().unwrap();
        let handler = self.handler.clone();
        self.task = Some(tokio::spawn(async move {
            // Owned by this task: aborting it drops (aborts) every connection.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let handler = handler.clone();
                        conns.spawn(async move {
                            let svc = service_fn(move |req| {
                                let answer = handler(req);
                                async move { Ok::<_, Infallible>(answer.await) }
                            });
                            let _ = auto::Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        }));
    }

    /// Kills it: no more listening, every open connection closed.
    async fn down(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        // The connections' tasks are aborted as the set is dropped; let them go.
        tokio::task::yield_now().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

/// The app: `/sleep/MS` answers after MS milliseconds; anything else at once, with the route
/// the sidecar admitted the call on (`x-portcullis-route`) as its body.
fn app() -> Handler {
    Arc::new(|req: Request<Incoming>| {
        Box::pin(async move {
            if let Some(ms) = req.uri().path().strip_prefix("/sleep/") {
                tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
            }
            let route = req
                .headers()
                .get("x-portcullis-route")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default();
            text(StatusCode::OK, route)
        })
    })
}

// ---------------------------------------------------------------------------------------
// The steady load.

/// What one request got.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// An answer, read whole.
    Status(u16),
    /// No answer: the connection failed, or nothing came within [`REQUEST_TIMEOUT`].
    Failed(String),
}

/// One request of the load.
#[derive(Debug, Clone)]
struct Sample {
    start: Instant,
    end: Instant,
    outcome: Outcome,
}

impl Sample {
    fn ok(&self) -> bool {
        self.outcome == Outcome::Status(200)
    }

    fn took(&self) -> Duration {
        self.end - self.start
    }
}

/// The answers of a load, by outcome, for messages.
fn tally(samples: &[Sample]) -> BTreeMap<String, usize> {
    let mut t = BTreeMap::new();
    for s in samples {
        let key = match &s.outcome {
            Outcome::Status(code) => code.to_string(),
            Outcome::Failed(e) => format!("failed: {e}"),
        };
        *t.entry(key).or_default() += 1;
    }
    t
}

/// `WORKERS` clients sending requests in a loop until stopped (or [`LOAD_CAP`]).
struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Vec<Sample>>>,
}

impl Load {
    /// Each worker has its own keep-alive client (even workers HTTP/1.1, odd ones HTTP/2 with
    /// prior knowledge) and sends `request(worker)` one after the other.
    fn start(request: impl Fn(usize) -> Request<Full<Bytes>> + Send + Sync + 'static) -> Self {
        let request = Arc::new(request);
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..WORKERS)
            .map(|w| {
                let (stop, request) = (stop.clone(), request.clone());
                tokio::spawn(async move {
                    let client = if w.is_multiple_of(2) { client() } else { h2c_client() };
                    let cap = Instant::now() + LOAD_CAP;
                    let mut samples = Vec::new();
                    while !stop.load(Ordering::Relaxed) && Instant::now() < cap {
                        let start = Instant::now();
                        let outcome = match tokio::time::timeout(REQUEST_TIMEOUT, async {
                            let resp = client.request(request(w)).await.map_err(|e| e.to_string())?;
                            let status = resp.status().as_u16();
                            resp.into_body().collect().await.map_err(|e| e.to_string())?;
                            Ok::<_, String>(status)
                        })
                        .await
                        {
                            Ok(Ok(status)) => Outcome::Status(status),
                            Ok(Err(e)) => Outcome::Failed(e),
                            Err(_) => Outcome::Failed("no answer within the request timeout".into()),
                        };
                        samples.push(Sample {
                            start,
                            end: Instant::now(),
                            outcome,
                        });
                    }
                    samples
                })
            })
            .collect();
        Self { stop, workers }
    }

    /// Stops every worker; all the samples, in the order they started.
    async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for w in self.workers {
            all.extend(w.await.expect("load worker"));
        }
        all.sort_by_key(|s| s.start);
        all
    }
}

fn get_req(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::default()).unwrap()
}

/// The sidecar is still running and its admin listener says it is healthy.
async fn assert_alive(sidecar: &mut Sidecar) {
    assert!(sidecar.is_running(), "the sidecar exited");
    let (status, _, _) = get(&sidecar.admin_url("/healthz")).await.expect("/healthz answers");
    assert_eq!(status, StatusCode::OK);
}

// ---------------------------------------------------------------------------------------
// Configuration directories published the way the kubelet does (both files swapped at once).

/// A configuration directory in the kubelet's layout: each version is a directory of its own
/// and `..data` is switched to it with one rename, so both files change at once.
struct Mount {
    _root: tempfile::TempDir,
    dir: PathBuf,
    versions: usize,
}

impl Mount {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("mount");
        std::fs::create_dir(&dir).unwrap();
        Self {
            _root: root,
            dir,
            versions: 0,
        }
    }

    fn path(&self) -> &Path {
        &self.dir
    }

    fn publish(&mut self, l: &portcullis_config::Loaded) {
        self.publish_raw(&l.config_json(), &l.secrets_json());
    }

    /// Publishes these bytes as `config.json` and `secrets.json`, whatever they hold.
    fn publish_raw(&mut self, config: &[u8], secrets: &[u8]) {
        use std::os::unix::fs::symlink;
        self.versions += 1;
        let version = format!("..v{}", self.versions);
        let ts = self.dir.join(&version);
        std::fs::create_dir(&ts).unwrap();
        std::fs::write(ts.join("config.json"), config).unwrap();
        std::fs::write(ts.join("secrets.json"), secrets).unwrap();
        let tmp = self.dir.join("..data_tmp");
        symlink(&version, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        for f in ["config.json", "secrets.json"] {
            let link = self.dir.join(f);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(format!("..data/{f}"), &link).unwrap();
            }
        }
    }
}

/// One anonymous route `name` on `/` toward the app at `port`, and `extra` routes.
fn anonymous(generation: &str, name: &str, port: u16, extra: &[Value]) -> portcullis_config::Loaded {
    let mut routes = vec![json!({"name": name, "pathPrefix": "/", "backend": {"type": "Local", "port": port}})];
    routes.extend_from_slice(extra);
    loaded(generation, json!({"routes": routes}), json!({}))
}

/// Waits (bounded) until `/metrics` counts `n` refused configurations.
async fn wait_reload_errors(sidecar: &Sidecar, n: f64, within: Duration) -> Option<f64> {
    let deadline = Instant::now() + within;
    loop {
        let errors = metric(
            &sidecar.metrics().await,
            "portcullis_config_reloads_total{result=\"error\"}",
        );
        if errors == Some(n) || Instant::now() > deadline {
            return errors;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// 1. The app killed and restarted.

/// The app dies under load (listener and connections gone, some calls in progress) and comes
/// back on its port a second later. During the outage every call gets a clear gateway error
/// (`502`/`503` with a JSON body, never a hang: well within `--backend-timeout`), the
/// connections of the clients to the sidecar are not broken, and once the app is back the
/// first call succeeds within a bounded time and not one call fails afterwards.
#[tokio::test]
async fn the_app_killed_and_restarted_under_load() {
    let mut app = Server::start(app()).await;
    let mount = {
        let mut m = Mount::new();
        m.publish(&anonymous("g1", "app", app.port(), &[]));
        m
    };
    let backend_timeout = Duration::from_secs(2);
    let mut sidecar = Sidecar::start_with(
        mount.path(),
        &["--backend-timeout", "2s", "--backend-connect-timeout", "500ms"],
    )
    .await;
    // One client in four waits on a slow answer: the kill finds calls in progress.
    let (fast, slow) = (sidecar.url("/x"), sidecar.url("/sleep/200"));
    let load = Load::start(move |w| get_req(if w % 4 == 3 { &slow } else { &fast }));

    tokio::time::sleep(Duration::from_millis(1000)).await;
    let down_at = Instant::now();
    app.down().await;
    let killed_at = Instant::now();
    // A gateway error as the clients see it, while the app is down.
    let (status, _, body) = get_with(&sidecar.url("/probe"), &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(json_of(&body)["error"], "backend unavailable");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    app.up().await;
    let up_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let samples = load.stop().await;
    let summary = tally(&samples);

    // No client connection broke, nothing hung: every call got an answer, and every answer
    // was a success or a gateway error, in well under the backend timeout.
    for s in &samples {
        match s.outcome {
            Outcome::Status(200) | Outcome::Status(502) | Outcome::Status(503) => {}
            _ => panic!("unexpected outcome {s:?}; all: {summary:?}"),
        }
        assert!(
            s.took() < backend_timeout,
            "a call took {:?} (backend timeout {backend_timeout:?}): {s:?}",
            s.took()
        );
    }
    // Before the kill: all served.
    let before: Vec<_> = samples.iter().filter(|s| s.end < down_at).collect();
    assert!(before.len() > 100, "too little load before the kill: {}", before.len());
    assert!(before.iter().all(|s| s.ok()), "failures before the kill: {summary:?}");
    // Calls in progress when the app died were answered (a gateway error), not left hanging.
    // (In progress: started before the kill began, ended after it began. The sidecar, another
    // process, may answer a cut call before `down()` has returned here.)
    let cut = samples
        .iter()
        .filter(|s| s.start < down_at && s.end > down_at && !s.ok())
        .count();
    assert!(cut >= 1, "no call was in progress at the kill: {summary:?}");
    // The outage was real: calls made while the app was down all failed (and there were many).
    let outage: Vec<_> = samples
        .iter()
        .filter(|s| s.start > killed_at && s.end < up_at)
        .collect();
    assert!(outage.len() > 20, "too few calls during the outage: {}", outage.len());
    assert!(
        outage.iter().all(|s| !s.ok()),
        "a call was served while the app was down"
    );
    // Recovery: the first call made after the restart that succeeded, and none failing after.
    let first_ok = samples
        .iter()
        .filter(|s| s.start >= up_at && s.ok())
        .min_by_key(|s| s.end)
        .expect("never recovered");
    let recovery = first_ok.end - up_at;
    let after: Vec<_> = samples.iter().filter(|s| s.start >= first_ok.end).collect();
    let failed_after = after.iter().filter(|s| !s.ok()).count();
    let failed_while_recovering = samples
        .iter()
        .filter(|s| s.start >= up_at && s.start < first_ok.end && !s.ok())
        .count();
    eprintln!(
        "app restart: {} calls ({summary:?}); {cut} cut by the kill, {} during the outage; recovered \
         {recovery:?} after the restart ({failed_while_recovering} failed meanwhile); {} calls after, \
         {failed_after} failed",
        samples.len(),
        outage.len(),
        after.len()
    );
    assert!(recovery < Duration::from_secs(1), "recovery took {recovery:?}");
    assert_eq!(failed_while_recovering, 0, "calls made after the restart failed");
    assert!(after.len() > 100, "too little load after the recovery: {}", after.len());
    assert_eq!(failed_after, 0, "failures after the recovery: {summary:?}");

    let metrics = sidecar.metrics().await;
    assert!(
        metric(&metrics, "portcullis_backend_errors_total{kind=\"connect\"}") >= Some(1.0),
        "{metrics}"
    );
    assert_alive(&mut sidecar).await;
}

// ---------------------------------------------------------------------------------------
// 2. A hundred reloads.

/// The configuration is reloaded 100 times under load, alternating between two compatible
/// versions (one with an extra route and a profile the load never touches): not one request
/// fails, `/readyz` stays ready all along, every reload is applied and counted, and the last
/// configuration is the one in force.
#[tokio::test]
async fn a_hundred_reloads_under_load_fail_no_request() {
    let app = Server::start(app()).await;
    let port = app.port();
    let version = |i: usize| {
        let generation = format!("g{i}");
        if i.is_multiple_of(2) {
            anonymous(&generation, "app", port, &[])
        } else {
            loaded(
                &generation,
                json!({
                    "profiles": [{"name": "ops", "auth": {"type": "Basic"}}],
                    "routes": [
                        {"name": "app", "pathPrefix": "/", "backend": {"type": "Local", "port": port}},
                        {"name": format!("extra-{i}"), "pathPrefix": "/extra", "profiles": ["ops"],
                         "backend": {"type": "Local", "port": port}},
                    ],
                }),
                json!({"profiles": {"ops": {"basic": {"username": "ops", "password": "a long password"}}}}),
            )
        }
    };
    let mut mount = Mount::new();
    mount.publish(&version(0));
    let mut sidecar = Sidecar::start_with(mount.path(), &["--reload-interval", "10ms"]).await;
    let url = sidecar.url("/x");
    let load = Load::start(move |_| get_req(&url));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    for i in 1..=100 {
        mount.publish(&version(i));
        let generation = format!("g{i}");
        assert!(
            sidecar.wait_generation(&generation, Duration::from_secs(5)).await,
            "reload {i} not applied"
        );
        assert!(sidecar.readiness().await.0, "not ready after reload {i}");
    }
    let reloading = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let samples = load.stop().await;
    let summary = tally(&samples);
    let during = samples
        .iter()
        .filter(|s| s.start >= started && s.start < started + reloading)
        .count();
    eprintln!(
        "100 reloads in {reloading:?}; {} calls ({during} while reloading): {summary:?}",
        samples.len()
    );
    assert!(during > 200, "too little load while reloading: {during}");
    assert!(samples.iter().all(Sample::ok), "failed requests: {summary:?}");

    // Every reload applied and counted, none refused; the last one in force.
    let metrics = sidecar.metrics().await;
    assert_eq!(
        metric(&metrics, "portcullis_config_reloads_total{result=\"ok\"}"),
        Some(101.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "portcullis_config_reloads_total{result=\"error\"}").unwrap_or(0.0),
        0.0,
        "{metrics}"
    );
    assert_eq!(sidecar.readiness().await, (true, "g100".to_owned()));
    let (_, _, body) = get(&sidecar.admin_url("/config")).await.unwrap();
    let config = json_of(&body);
    assert_eq!(config["generation"], "g100");
    assert_eq!(config["routes"].as_array().map(Vec::len), Some(1), "{config}");
    // Enforced too: `/extra` (Basic under g99) is the anonymous route's again.
    let (status, _, body) = get_with(&sidecar.url("/extra"), &[]).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"app"[..]));
    assert_alive(&mut sidecar).await;
}

// ---------------------------------------------------------------------------------------
// 3. The serving certificate rotated.

const HOST: &str = "api.example.test";

fn tls_config(generation: &str, port: u16, leaf: &Leaf) -> portcullis_config::Loaded {
    loaded(
        generation,
        json!({"routes": [{"name": "api", "hosts": [HOST], "pathPrefix": "/", "tls": true,
                           "backend": {"type": "Local", "port": port}}]}),
        json!({"routes": {"api": {"tls": leaf.material()}}}),
    )
}

/// A request over TLS, and the certificate its connection was served with.
struct TlsSample {
    sample: Sample,
    cert: Vec<u8>,
}

/// The serving certificate is rotated five times under load over `--inbound-tls`: clients
/// that keep their connection (HTTP/2 and HTTP/1.1) and clients that open one per request
/// see not one failure; every connection opened once a rotation is in force is served with
/// the new certificate, and the kept connections keep working.
#[tokio::test]
async fn the_serving_certificate_rotated_under_tls_load() {
    const ROTATIONS: usize = 5;
    let app = Server::start(app()).await;
    let ca = Ca::new("Test CA");
    let leaves: Vec<Leaf> = (0..=ROTATIONS)
        .map(|i| ca.server(&format!("api-{i}"), &[HOST]))
        .collect();
    let mut mount = Mount::new();
    mount.publish(&tls_config("g0", app.port(), &leaves[0]));
    let mut sidecar = Sidecar::start_with(mount.path(), &["--reload-interval", "20ms"]).await;
    let addr = sidecar.inbound_tls;
    let h2 = default_client(&ca.pem, None);
    let h1 = client_config(
        &ca.pem,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
        &["http/1.1"],
        None,
    );
    // The listener serves once the first configuration is in force.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TlsConn::open(addr, HOST, h2.clone()).await.is_err() {
        assert!(Instant::now() < deadline, "the TLS listener never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Workers 0..8 keep one connection each (HTTP/2 and HTTP/1.1 in turn; a new one only
    // after a failure), workers 8..12 open a new connection per request.
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<JoinHandle<(Vec<TlsSample>, usize)>> = (0..WORKERS)
        .map(|w| {
            let stop = stop.clone();
            let config = if w.is_multiple_of(2) { h2.clone() } else { h1.clone() };
            let keep = w < 8;
            tokio::spawn(async move {
                let cap = Instant::now() + LOAD_CAP;
                let mut samples = Vec::new();
                let mut opened = 0;
                let mut conn: Option<TlsConn> = None;
                while !stop.load(Ordering::Relaxed) && Instant::now() < cap {
                    let start = Instant::now();
                    if conn.is_none() {
                        opened += 1;
                        match TlsConn::open(addr, HOST, config.clone()).await {
                            Ok(c) => conn = Some(c),
                            Err(e) => {
                                let outcome = Outcome::Failed(e);
                                let sample = Sample {
                                    start,
                                    end: Instant::now(),
                                    outcome,
                                };
                                samples.push(TlsSample {
                                    sample,
                                    cert: Vec::new(),
                                });
                                continue;
                            }
                        }
                    }
                    let c = conn.as_mut().expect("open");
                    let cert = c.server_cert.clone();
                    let outcome = match c.get("/x").await {
                        Ok(a) => Outcome::Status(a.status.as_u16()),
                        Err(e) => Outcome::Failed(e),
                    };
                    if !keep || matches!(outcome, Outcome::Failed(_)) {
                        conn = None;
                    }
                    let sample = Sample {
                        start,
                        end: Instant::now(),
                        outcome,
                    };
                    samples.push(TlsSample { sample, cert });
                }
                (samples, opened)
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(400)).await;
    // (published, in force) instants of each rotation.
    let mut times = Vec::new();
    for (i, leaf) in leaves.iter().enumerate().skip(1) {
        let published = Instant::now();
        mount.publish(&tls_config(&format!("g{i}"), app.port(), leaf));
        assert!(
            sidecar.wait_generation(&format!("g{i}"), Duration::from_secs(5)).await,
            "rotation {i} not applied"
        );
        let in_force = Instant::now();
        times.push((published, in_force));
        let fresh = tls_get(addr, HOST, h2.clone(), "/fresh")
            .await
            .expect("a new connection");
        assert_eq!(fresh.status, 200);
        assert_eq!(fresh.server_cert, leaf.der(), "a new connection after rotation {i}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for (w, worker) in workers.into_iter().enumerate() {
        let (samples, opened) = worker.await.unwrap();
        if w < 8 {
            assert_eq!(opened, 1, "worker {w} had to open a new connection");
        }
        all.extend(samples.into_iter().map(|s| (w, s)));
    }
    let summary = tally(&all.iter().map(|(_, s)| s.sample.clone()).collect::<Vec<_>>());
    eprintln!("certificate rotation: {} requests over TLS: {summary:?}", all.len());
    assert!(all.len() > 200, "too little load: {}", all.len());
    assert!(all.iter().all(|(_, s)| s.sample.ok()), "failed requests: {summary:?}");

    // New connections: opened once rotation i was in force and done before rotation i + 1
    // was published, they were served with certificate i.
    let mut checked = 0;
    for (w, s) in all.iter().filter(|(w, _)| *w >= 8) {
        let Some(i) = (0..=ROTATIONS)
            .rev()
            .find(|i| *i == 0 || s.sample.start >= times[i - 1].1)
        else {
            continue;
        };
        if i < ROTATIONS && s.sample.end > times[i].0 {
            continue; // straddles the next rotation
        }
        assert_eq!(
            s.cert,
            leaves[i].der(),
            "worker {w}: a new connection under rotation {i}"
        );
        checked += 1;
    }
    let seen: std::collections::BTreeSet<_> = all.iter().filter(|(w, _)| *w >= 8).map(|(_, s)| &s.cert).collect();
    assert!(checked > 50, "too few new connections checked: {checked}");
    assert_eq!(seen.len(), ROTATIONS + 1, "every certificate was served");
    assert_alive(&mut sidecar).await;
}

// ---------------------------------------------------------------------------------------
// 4. Malformed configurations.

/// Five malformed configurations are dropped in under load (not JSON, the wrong shape,
/// files of two generations, a route naming a missing profile, garbage TLS material): each
/// is refused, counted in `portcullis_config_reloads_total{result="error"}` and logged, the
/// good configuration keeps serving (`/readyz` ready, its generation) and not one request
/// fails; the good configuration that follows is applied.
#[tokio::test]
async fn malformed_configurations_dropped_in_under_load() {
    let app = Server::start(app()).await;
    let port = app.port();
    let mut mount = Mount::new();
    mount.publish(&anonymous("g1", "app-v1", port, &[]));
    let mut sidecar = Sidecar::start_with(mount.path(), &["--reload-interval", "20ms"]).await;
    let url = sidecar.url("/x");
    let load = Load::start(move |_| get_req(&url));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let good = anonymous("g1", "app-v1", port, &[]);
    let mismatched = {
        let mut l = anonymous("g3", "app-v3", port, &[]);
        l.secrets.generation = "g4".into();
        l
    };
    let missing_profile = json!({"schemaVersion": 1, "generation": "g5", "namespace": "test",
        "routes": [{"name": "app", "pathPrefix": "/", "profiles": ["ghost"],
                    "backend": {"type": "Local", "port": port}}]});
    let bad_tls = tls_config(
        "g6",
        port,
        &Leaf {
            cert_pem: "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n".into(),
            key_pem: "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n".into(),
        },
    );
    let malformed: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        ("not JSON", b"{ not json".to_vec(), good.secrets_json()),
        (
            "the wrong shape",
            json!({"schemaVersion": 1, "generation": "g2", "namespace": "test", "routes": "nope"})
                .to_string()
                .into_bytes(),
            json!({"schemaVersion": 1, "generation": "g2"}).to_string().into_bytes(),
        ),
        ("two generations", mismatched.config_json(), mismatched.secrets_json()),
        (
            "a missing profile",
            missing_profile.to_string().into_bytes(),
            json!({"schemaVersion": 1, "generation": "g5"}).to_string().into_bytes(),
        ),
        ("garbage TLS material", bad_tls.config_json(), bad_tls.secrets_json()),
    ];
    for (n, (what, config, secrets)) in malformed.iter().enumerate() {
        mount.publish_raw(config, secrets);
        let errors = wait_reload_errors(&sidecar, (n + 1) as f64, Duration::from_secs(5)).await;
        assert_eq!(errors, Some((n + 1) as f64), "{what}: refusal not counted");
        assert_eq!(
            sidecar.readiness().await,
            (true, "g1".to_owned()),
            "{what}: the good configuration must keep serving"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then a good one: applied, and enforced (the app sees the new route's name).
    mount.publish(&anonymous("g7", "app-v7", port, &[]));
    assert!(
        sidecar.wait_generation("g7", Duration::from_secs(5)).await,
        "the good configuration after the malformed ones"
    );
    let (status, _, body) = get_with(&sidecar.url("/after"), &[]).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"app-v7"[..]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let samples = load.stop().await;
    let summary = tally(&samples);
    eprintln!("malformed configurations: {} calls: {summary:?}", samples.len());
    assert!(samples.len() > 300, "too little load: {}", samples.len());
    assert!(samples.iter().all(Sample::ok), "failed requests: {summary:?}");

    let metrics = sidecar.metrics().await;
    assert_eq!(
        metric(&metrics, "portcullis_config_reloads_total{result=\"error\"}"),
        Some(malformed.len() as f64),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "portcullis_config_reloads_total{result=\"ok\"}"),
        Some(2.0),
        "{metrics}"
    );
    let refusals = sidecar.log().matches("configuration refused").count();
    assert_eq!(refusals, malformed.len(), "each refusal logged once");
    assert_alive(&mut sidecar).await;
}

// ---------------------------------------------------------------------------------------
// 5. The identity provider stopped.

/// An access token for `sub` by `signer`, valid for five minutes.
fn token(signer: &Signer, sub: &str) -> String {
    signer.token(json!({"iss": ISSUER, "sub": sub, "aud": "finance-api", "iat": now(),
                        "exp": now() + 300, "scope": "read"}))
}

/// What the identity provider serves: its key set at `/jwks`, RFC 7662 answers at
/// `/introspect` (active for the tokens it issued, inactive otherwise), with call counts.
#[derive(Default)]
struct IdpState {
    jwks: Mutex<String>,
    active: Mutex<HashMap<String, Value>>,
    introspections: AtomicUsize,
}

fn idp(state: Arc<IdpState>) -> Handler {
    Arc::new(move |req: Request<Incoming>| {
        let state = state.clone();
        Box::pin(async move {
            if req.uri().path() == "/jwks" {
                return text(StatusCode::OK, state.jwks.lock().unwrap().clone());
            }
            state.introspections.fetch_add(1, Ordering::SeqCst);
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let token = String::from_utf8_lossy(&body)
                .split('&')
                .find_map(|kv| kv.strip_prefix("token="))
                .unwrap_or_default()
                .to_owned();
            let answer = state.active.lock().unwrap().get(&token).cloned();
            let mut r = text(
                StatusCode::OK,
                answer.unwrap_or_else(|| json!({"active": false})).to_string(),
            );
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            r
        })
    })
}

fn active(sub: &str) -> Value {
    json!({"active": true, "sub": sub, "client_id": "app-1", "scope": "read", "iss": ISSUER,
           "aud": "finance-api", "exp": now() + 300, "token_type": "Bearer"})
}

/// The identity provider (key set and introspection endpoint) stops under load and comes
/// back. Meanwhile, requests whose JWT is verified with the keys already fetched and requests
/// whose opaque token has a cached answer keep being served: not one fails (docs/api.md: a
/// failed fetch keeps the last keys; answers are cached 60 s). New tokens fail closed: an
/// opaque one gets `503` (introspection unavailable, not cached), a JWT of an unknown key
/// `401`. Once the provider is back, both are admitted within a bounded time.
#[tokio::test]
async fn the_identity_provider_stopped_under_load() {
    let app = Server::start(app()).await;
    let (k1, k2) = (Signer::new("k1"), Signer::new("k2"));
    let state = Arc::new(IdpState::default());
    *state.jwks.lock().unwrap() = json!({"keys": [k1.jwk()]}).to_string();
    state
        .active
        .lock()
        .unwrap()
        .insert("tok-cached".into(), active("carol"));
    let mut provider = Server::start(idp(state.clone())).await;
    let base = format!("http://{}", provider.addr);
    let mut mount = Mount::new();
    mount.publish(&loaded(
        "g1",
        json!({
            "profiles": [{"name": "idp", "auth": {"type": "OAuth2", "provider": "Generic", "issuer": ISSUER,
                "jwksUri": format!("{base}/jwks"), "introspectionUrl": format!("{base}/introspect"),
                "audiences": ["finance-api"], "requiredScopes": ["read"]}}],
            "routes": [{"name": "api", "pathPrefix": "/api", "profiles": ["idp"],
                "backend": {"type": "Local", "port": app.port()}}],
        }),
        json!({"profiles": {"idp": {"introspectionClient": {"clientId": "portcullis", "clientSecret": "s3cret"}}}}),
    ));
    let flags = [
        "--jwks-refresh-interval",
        "500ms",
        "--jwks-min-refresh-interval",
        "500ms",
        "--introspection-client-rate",
        "1000",
    ];
    let mut sidecar = Sidecar::start_with(mount.path(), &flags).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sidecar.readiness().await.0 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = sidecar.url("/api/x");
    let call = |token: &str| {
        let url = url.clone();
        let auth = format!("Bearer {token}");
        async move { get_with(&url, &[("authorization", &auth)]).await }
    };
    let jwt = token(&k1, "alice");
    assert_eq!(call(&jwt).await.0, StatusCode::OK);
    assert_eq!(call("tok-cached").await.0, StatusCode::OK);
    assert_eq!(state.introspections.load(Ordering::SeqCst), 1);

    // Half the clients carry the JWT, half the opaque token.
    let load = {
        let (url, jwt) = (url.clone(), jwt.clone());
        Load::start(move |w| {
            let token = if w % 4 < 2 { jwt.as_str() } else { "tok-cached" };
            Request::get(&url)
                .header("authorization", format!("Bearer {token}"))
                .body(Full::default())
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    provider.down().await;
    let down_at = Instant::now();
    // The key set is fetched again (every 500 ms here) and fails: the last keys are kept.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sidecar.log().contains("OAuth2 key set fetch failed") {
        assert!(
            Instant::now() < deadline,
            "no key set fetch was tried while the provider was down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // New tokens fail closed, quickly.
    let unknown_kid = token(&k2, "bob");
    for i in 0..5 {
        let started = Instant::now();
        let (status, _, body) = call(&format!("tok-new-{i}")).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(
            json_of(&body)["error"],
            "token introspection unavailable: the introspection endpoint failed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "took {:?}",
            started.elapsed()
        );
        let (status, headers, _) = call(&unknown_kid).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            headers["www-authenticate"],
            "Bearer realm=\"api\", error=\"invalid_token\""
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let outage = down_at.elapsed();

    // Back, with a second key and the new opaque token issued.
    *state.jwks.lock().unwrap() = json!({"keys": [k1.jwk(), k2.jwk()]}).to_string();
    state.active.lock().unwrap().insert("tok-new-0".into(), active("dave"));
    provider.up().await;
    let up_at = Instant::now();
    let deadline = up_at + Duration::from_secs(10);
    let mut recovered = [None, None];
    while recovered.iter().any(Option::is_none) {
        assert!(Instant::now() < deadline, "did not recover: {recovered:?}");
        for (i, token) in ["tok-new-0", unknown_kid.as_str()].iter().enumerate() {
            if recovered[i].is_none() {
                let (status, _, body) = call(token).await;
                match status {
                    StatusCode::OK => recovered[i] = Some(up_at.elapsed()),
                    StatusCode::SERVICE_UNAVAILABLE | StatusCode::UNAUTHORIZED => {}
                    other => panic!("{other}: {}", String::from_utf8_lossy(&body)),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let samples = load.stop().await;
    let summary = tally(&samples);
    let during = samples.iter().filter(|s| s.start >= down_at && s.end < up_at).count();
    eprintln!(
        "identity provider down {outage:?}: {} calls ({during} during the outage): {summary:?}; \
         recovered: opaque {:?}, new key {:?}",
        samples.len(),
        recovered[0].unwrap(),
        recovered[1].unwrap()
    );
    assert!(during > 100, "too little load during the outage: {during}");
    assert!(samples.iter().all(Sample::ok), "failed requests: {summary:?}");
    // Cached answers needed no call: the load cost none (the first check of tok-cached, the
    // new token answered after the restart).
    assert_eq!(state.introspections.load(Ordering::SeqCst), 2);
    assert!(recovered[0].unwrap() < Duration::from_secs(3));
    // The key set is tried again at most 500 ms after a failure (here), so within a second
    // or so.
    assert!(recovered[1].unwrap() < Duration::from_secs(3));
    let metrics = sidecar.metrics().await;
    assert_eq!(
        metric(&metrics, "portcullis_backend_errors_total{kind=\"introspection\"}"),
        Some(5.0),
        "{metrics}"
    );
    assert_alive(&mut sidecar).await;
}
