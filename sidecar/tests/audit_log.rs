//! Black-box tests of the audit log's bounds and rotation through the real binary: a client's
//! huge path is logged cut, and SIGHUP makes the sidecar write to a fresh `--audit-log` after
//! a log rotation moved the old one away.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

async fn open_sidecar(port: u16) -> (Sidecar, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    loaded(
        "g1",
        json!({"profiles": [{"name": "open", "auth": {"type": "Anonymous"}}],
               "routes": [{"name": "api", "pathPrefix": "/", "profiles": ["open"],
                           "backend": {"type": "Local", "port": port}}]}),
        json!({}),
    )
    .write_dir(dir.path())
    .unwrap();
    (Sidecar::start(dir.path()).await, dir)
}

#[tokio::test]
async fn a_huge_path_is_logged_cut() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = open_sidecar(backend.port()).await;
    let path = format!("/{}", "a".repeat(40_000));
    let (status, _, _) = get_with(&sidecar.url(&path), &[]).await;
    assert_eq!(status, 200);
    let lines = sidecar.wait_audit(1).await;
    let logged = lines[0]["path"].as_str().unwrap();
    assert!(logged.len() < 1100, "{} bytes logged", logged.len());
    assert!(logged.ends_with('…'), "{logged}");
}

#[tokio::test]
async fn sighup_reopens_the_audit_log_after_rotation() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = open_sidecar(backend.port()).await;
    assert_eq!(get_with(&sidecar.url("/before"), &[]).await.0, 200);
    assert_eq!(sidecar.wait_audit(1).await.len(), 1);
    let rotated = sidecar.audit.with_extension("log.1");
    std::fs::rename(&sidecar.audit, &rotated).unwrap();
    sidecar.signal("HUP");
    // Bounded: the sidecar reopens the file soon after the signal.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sidecar.audit.exists() {
        assert!(Instant::now() < deadline, "no new audit log after SIGHUP");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get_with(&sidecar.url("/after"), &[]).await.0, 200);
    let lines = sidecar.wait_audit(1).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["path"], "/after");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("/before") && !old.contains("/after"), "{old}");
    // The process is alive and serving (SIGHUP did not stop it).
    assert_eq!(get_with(&sidecar.url("/again"), &[]).await.0, 200);
}
