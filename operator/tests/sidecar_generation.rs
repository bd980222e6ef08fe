//! Black-box tests of the routes' rollout status (`configGeneration`, `sidecarsCurrent`,
//! `sidecarsTotal`): the real operator against the fake API server, with pods whose podIP
//! is 127.0.0.1 and whose container port `portcullis-adm` points at sidecars on this host —
//! small in-test servers that answer `/readyz` like the sidecar, and (when its binary is
//! built) the real `portcullis-sidecar`.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use portcullis_fake_apiserver::{FakeApiServer, Propagation};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// A stand-in sidecar: `GET /readyz` answers like `portcullis-sidecar` with the generation
/// it is told to report (empty: 503, no valid configuration yet).
struct Mimic {
    addr: SocketAddr,
    generation: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Mimic {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mimic {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let generation = Arc::new(Mutex::new(String::new()));
        let g = generation.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let g = g.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let generation = g.lock().unwrap().clone();
                        async move {
                            let (code, body) = match req.uri().path() {
                                "/readyz" if generation.is_empty() => (
                                    503,
                                    json!({"status": "no valid configuration loaded", "generation": ""}),
                                ),
                                "/readyz" => (200, json!({"status": "ready", "generation": generation})),
                                _ => (404, json!({"error": "not found"})),
                            };
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .status(code)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body.to_string())))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, generation, task }
    }

    fn report(&self, generation: &str) {
        *self.generation.lock().unwrap() = generation.to_owned();
    }
}

/// A running pod of `app` whose injected sidecar's admin port is `admin` on 127.0.0.1.
fn running_pod(name: &str, app: &str, admin: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS,
                     "labels": {"app": app, INJECT: "true", "pod-template-hash": "h"}},
        "spec": {
            "initContainers": [{
                "name": "portcullis-sidecar", "image": "sidecar", "restartPolicy": "Always",
                "ports": [
                    {"name": "portcullis-http", "containerPort": 15080, "protocol": "TCP"},
                    {"name": "portcullis-adm", "containerPort": admin, "protocol": "TCP"},
                ],
            }],
            "containers": [{"name": "app", "image": "app"}],
        },
        "status": {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]},
    })
}

fn seed(server: &FakeApiServer) {
    for obj in [
        basic_secret("sa", "alice", "password-a"),
        basic_profile("pa", "sa"),
        route("ra", "a", &["pa"]),
    ] {
        server.create(&obj).unwrap();
    }
}

/// `(configGeneration, sidecarsCurrent, sidecarsTotal)` of a route.
fn rollout(server: &FakeApiServer, route: &str) -> Option<(String, i64, i64)> {
    let r = server.get(ROUTES, NS, route)?;
    let s = &r["status"];
    Some((
        s["configGeneration"].as_str().unwrap_or_default().to_owned(),
        s["sidecarsCurrent"].as_i64()?,
        s["sidecarsTotal"].as_i64()?,
    ))
}

/// The generation in group `a`'s ConfigMap, once it differs from `not`.
async fn written_generation(server: &FakeApiServer, op: &Operator, not: &str) -> String {
    let ga = group_of("a");
    wait_until(WAIT, "group a's ConfigMap", op, || {
        let cm = server.get("configmaps", NS, &ga)?;
        let g = config_of(&cm)["generation"].as_str()?.to_owned();
        (g != not).then_some(g)
    })
    .await
}

async fn wait_rollout(server: &FakeApiServer, op: &Operator, want: (&str, i64, i64)) {
    let what = format!("ra's rollout {want:?}");
    wait_until(WAIT, &what, op, || {
        let (g, c, t) = rollout(server, "ra")?;
        ((g.as_str(), c, t) == want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_status_counts_the_sidecars_that_run_the_current_generation() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    seed(&server);
    let (m1, m2) = (Mimic::start().await, Mimic::start().await);
    server.put(&running_pod("a-1", "a", m1.addr.port())).unwrap();
    server.put(&running_pod("a-2", "a", m2.addr.port())).unwrap();
    // A pod that does not run yet is not counted.
    server.create(&pod("a-3", "a")).unwrap();
    let op = Operator::start(&dir, "op-1", &[]);

    // 1. Written, and no sidecar has loaded it yet: 0 of 2.
    let gen1 = written_generation(&server, &op, "").await;
    wait_rollout(&server, &op, (&gen1, 0, 2)).await;

    // 2. Both report it: 2 of 2.
    m1.report(&gen1);
    m2.report(&gen1);
    wait_rollout(&server, &op, (&gen1, 2, 2)).await;

    // 3. A new generation (a rotated password); one sidecar lags: 1 of 2, then 2 of 2.
    server
        .merge_patch("secrets", NS, "sa", &json!({"data": {"password": b64("rotated")}}))
        .unwrap();
    let gen2 = written_generation(&server, &op, &gen1).await;
    wait_rollout(&server, &op, (&gen2, 0, 2)).await;
    m1.report(&gen2);
    let caught_up = std::time::Instant::now();
    wait_rollout(&server, &op, (&gen2, 1, 2)).await;
    assert!(
        caught_up.elapsed() < Duration::from_secs(3),
        "soon after a write the sidecars are polled often (took {:?})",
        caught_up.elapsed()
    );
    m2.report(&gen2);
    wait_rollout(&server, &op, (&gen2, 2, 2)).await;

    // 4. Steady: no status writes while nothing changes.
    let before = rv(&server.get(ROUTES, NS, "ra").unwrap());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rv(&server.get(ROUTES, NS, "ra").unwrap()), before, "no status churn");

    // 5. A sidecar that stops answering is not current; a pod that goes is not counted.
    drop(m2);
    wait_rollout(&server, &op, (&gen2, 1, 2)).await;
    server.delete("pods", NS, "a-2", Propagation::Delete).unwrap();
    wait_rollout(&server, &op, (&gen2, 1, 1)).await;

    // 6. The third pod starts running (no admin port answering yet): counted, not current.
    let mut a3 = server.get("pods", NS, "a-3").unwrap();
    a3["status"] = json!({"phase": "Running", "podIP": "127.0.0.1"});
    server.put(&a3).unwrap();
    wait_rollout(&server, &op, (&gen2, 1, 2)).await;

    assert_rbac_allows(&server.requests());
}

/// The real sidecar, when it was built next to this test (`cargo build -p
/// portcullis-sidecar`): `target/<profile>/portcullis-sidecar`.
fn sidecar_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/<test> → target/<profile>/portcullis-sidecar
    let path = exe.parent()?.parent()?.join("portcullis-sidecar");
    path.is_file().then_some(path)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Sidecar {
    child: Child,
    dir: PathBuf,
    admin: u16,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sidecar {
    fn start(binary: &PathBuf, dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let admin = free_port();
        let child = Command::new(binary)
            .arg("--config-dir")
            .arg(&dir)
            .args(["--inbound", &format!("127.0.0.1:{}", free_port())])
            .args(["--inbound-tls", &format!("127.0.0.1:{}", free_port())])
            .args(["--egress", &format!("127.0.0.1:{}", free_port())])
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self { child, dir, admin }
    }

    /// Writes what a kubelet would mount from the group's ConfigMap and Secret.
    fn mount(&self, server: &FakeApiServer, group: &str) {
        let cm = server.get("configmaps", NS, group).unwrap();
        let secret = server.get("secrets", NS, group).unwrap();
        let write = |name: &str, content: &str| {
            let tmp = self.dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, content).unwrap();
            std::fs::rename(&tmp, self.dir.join(name)).unwrap();
        };
        write("secrets.json", &secrets_of(&secret));
        write("config.json", cm["data"]["config.json"].as_str().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_sidecars_report_the_generation_they_enforce() {
    let Some(binary) = sidecar_binary() else {
        eprintln!("skipped: portcullis-sidecar is not built next to this test (cargo build -p portcullis-sidecar)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    seed(&server);
    let s1 = Sidecar::start(&binary, dir.path().join("s1"));
    let s2 = Sidecar::start(&binary, dir.path().join("s2"));
    server.put(&running_pod("a-1", "a", s1.admin)).unwrap();
    server.put(&running_pod("a-2", "a", s2.admin)).unwrap();
    let op = Operator::start(&dir, "op-1", &[]);
    let ga = group_of("a");

    let gen1 = written_generation(&server, &op, "").await;
    wait_rollout(&server, &op, (&gen1, 0, 2)).await;
    s1.mount(&server, &ga);
    s2.mount(&server, &ga);
    wait_rollout(&server, &op, (&gen1, 2, 2)).await;

    // A new generation reaches only the first sidecar: 1 of 2.
    server
        .merge_patch("secrets", NS, "sa", &json!({"data": {"password": b64("rotated")}}))
        .unwrap();
    let gen2 = written_generation(&server, &op, &gen1).await;
    s1.mount(&server, &ga);
    wait_rollout(&server, &op, (&gen2, 1, 2)).await;
    s2.mount(&server, &ga);
    wait_rollout(&server, &op, (&gen2, 2, 2)).await;
}
