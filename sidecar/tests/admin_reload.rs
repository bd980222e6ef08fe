//! Black-box tests of the admin listener, hot reload and the answers that need no policy.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn simple(generation: &str, port: u16) -> portcullis_config::Loaded {
    loaded(
        generation,
        json!({
            "profiles": [{"name": "ops", "auth": {"type": "Basic"}}],
            "routes": [{"name": "app", "pathPrefix": "/", "profiles": ["ops"],
                        "backend": {"type": "Local", "port": port}}],
        }),
        json!({"profiles": {"ops": {"basic": {"username": "ops", "password": "hunter2-very-secret"}}}}),
    )
}

#[tokio::test]
async fn missing_config_serves_404_not_ready_then_picks_it_up() {
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start(dir.path()).await;
    let (ready, generation) = sidecar.readiness().await;
    assert!(!ready, "no configuration: not ready");
    assert_eq!(generation, "");

    let (status, headers, body) = get_with(&sidecar.url("/anything?apikey=k"), &[]).await;
    assert_eq!(status, 404);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(json_of(&body)["error"], "no route");

    simple("g1", 9).write_dir(dir.path()).unwrap();
    assert!(
        sidecar.wait_generation("g1", Duration::from_millis(1500)).await,
        "config picked up"
    );
    assert!(
        sidecar.readiness().await.0,
        "ready once a valid configuration is loaded"
    );
    let metrics = sidecar.metrics().await;
    assert!(
        metrics.contains("portcullis_config_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_config_reloads_total{result=\"error\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_config_info{generation=\"g1\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn valid_change_applies_and_invalid_change_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    simple("g1", 9).write_dir(dir.path()).unwrap();
    let sidecar = Sidecar::start(dir.path()).await;
    assert_eq!(sidecar.readiness().await, (true, "g1".to_owned()));

    simple("g2", 9).write_dir(dir.path()).unwrap();
    assert!(
        sidecar.wait_generation("g2", Duration::from_millis(1000)).await,
        "applied within 1 s"
    );

    // Rewritten in place with garbage: refused, g2 keeps serving.
    std::fs::write(dir.path().join("config.json"), b"{ not json").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let metrics = sidecar.metrics().await;
        if metrics.contains("portcullis_config_reloads_total{result=\"error\"} 1") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "refusal not counted: {metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sidecar.readiness().await,
        (true, "g2".to_owned()),
        "last good configuration serving"
    );
    assert!(sidecar.log().contains("configuration refused"), "refusal is logged");

    // A secrets file of another generation is refused too.
    let mut other = simple("g3", 9);
    other.secrets.generation = "g4".into();
    other.write_dir(dir.path()).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(sidecar.readiness().await.1, "g2");
}

#[cfg(unix)]
#[tokio::test]
async fn kubelet_symlink_swap_and_replaced_dir_are_followed() {
    use std::os::unix::fs::symlink;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mount");
    std::fs::create_dir(&dir).unwrap();
    // Kubelet layout: ..2026_x/{files}, ..data -> ..2026_x, config.json -> ..data/config.json.
    let publish = |version: &str, l: &portcullis_config::Loaded| {
        let ts = dir.join(format!("..2026_{version}"));
        l.write_dir(&ts).unwrap();
        let tmp = dir.join("..data_tmp");
        symlink(format!("..2026_{version}"), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("..data")).unwrap();
    };
    publish("a", &simple("ga", 9));
    for f in ["config.json", "secrets.json"] {
        symlink(format!("..data/{f}"), dir.join(f)).unwrap();
    }
    let sidecar = Sidecar::start(&dir).await;
    assert_eq!(sidecar.readiness().await, (true, "ga".to_owned()));

    publish("b", &simple("gb", 9));
    assert!(
        sidecar.wait_generation("gb", Duration::from_millis(1000)).await,
        "symlink swap followed"
    );

    // The whole directory replaced.
    let next = root.path().join("next");
    simple("gc", 9).write_dir(&next).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::rename(&next, &dir).unwrap();
    assert!(
        sidecar.wait_generation("gc", Duration::from_millis(1000)).await,
        "replaced dir followed"
    );
}

#[tokio::test]
async fn config_endpoint_shows_configuration_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    simple("g1", 9).write_dir(dir.path()).unwrap();
    let sidecar = Sidecar::start(dir.path()).await;
    let (status, _, body) = get(&sidecar.admin_url("/config")).await.unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    assert_eq!(json_of(&body)["routes"][0]["name"], "app");
    assert_eq!(json_of(&body)["generation"], "g1");
    assert!(!text.contains("hunter2-very-secret"), "{text}");
    let (status, _, _) = get(&sidecar.admin_url("/healthz")).await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn no_route_hits_are_audited_without_query() {
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start(dir.path()).await;
    let (status, _, _) = get_with(&sidecar.url("/nowhere?apikey=KEY123&sig=SIG456"), &[]).await;
    assert_eq!(status, 404);
    let lines = sidecar.wait_audit(1).await;
    assert_eq!(lines.len(), 1, "one audit line per request");
    let line = &lines[0];
    assert_eq!(line["target"], "portcullis::audit");
    assert_eq!(line["path"], "/nowhere");
    assert_eq!(line["status"], 404);
    assert_eq!(line["method"], "GET");
    assert_eq!(line["decision"], "no_route");
    assert_eq!(line["client_ip"], "127.0.0.1");
    assert!(line["latency_ms"].is_number());
    let raw = std::fs::read_to_string(&sidecar.audit).unwrap();
    assert!(!raw.contains("KEY123") && !raw.contains("SIG456"), "{raw}");
    assert!(
        !sidecar.log().contains("portcullis::audit"),
        "audit lines go to the audit log only"
    );
}

#[tokio::test]
async fn demo_backend_echoes_verdict_headers() {
    let addr = free_addr();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis-sidecar"))
        .args(["demo-backend", "--listen", &addr.to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://{addr}/hello");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let answer = loop {
        let mut req = http::Request::get(&url);
        req = req.header("x-portcullis-identity", "alice").header("x-other", "no");
        if let Some(a) = send(&client(), req.body(Default::default()).unwrap()).await {
            break a;
        }
        assert!(std::time::Instant::now() < deadline, "demo backend did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(answer.0, 200);
    let v = json_of(&answer.2);
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/hello");
    assert_eq!(v["headers"], json!({"x-portcullis-identity": "alice"}));
}

#[tokio::test]
async fn sigterm_with_an_idle_keep_alive_connection_exits_cleanly() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = Sidecar::start(dir.path()).await;
    let mut conn = tokio::net::TcpStream::connect(sidecar.inbound).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = conn.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 404"));
    let status = sidecar
        .terminate(Duration::from_secs(4))
        .await
        .expect("exits within the drain time");
    assert!(status.success(), "{status:?}");
    assert!(sidecar.log().contains("shutting down"));
}
