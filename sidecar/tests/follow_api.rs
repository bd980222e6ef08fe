//! Propagation through the API: the sidecar follows its own ConfigMap and Secret (served by
//! the in-process fake API server) and enforces a change within 2 seconds, preferring what
//! the API says over the (slower) mounted files.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use portcullis_fake_apiserver::FakeApiServer;
use serde_json::{Value, json};

fn objects(l: &portcullis_config::Loaded) -> (Value, Value) {
    let configmap = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "portcullis-web", "namespace": "demo"},
        "data": {"config.json": String::from_utf8(l.config_json()).unwrap()},
    });
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "portcullis-web", "namespace": "demo"},
        "data": {"secrets.json": base64::engine::general_purpose::STANDARD.encode(l.secrets_json())},
    });
    (configmap, secret)
}

fn config(generation: &str, prefix: &str, port: u16) -> portcullis_config::Loaded {
    loaded(
        generation,
        json!({"routes": [{"name": "app", "pathPrefix": prefix, "backend": {"type": "Local", "port": port}}]}),
        json!({}),
    )
}

#[tokio::test]
async fn follows_its_objects_through_the_api_within_two_seconds() {
    let backend = Backend::start().await;
    let api = FakeApiServer::start().await.unwrap();
    let (cm, secret) = objects(&config("api-1", "/v1", backend.port()));
    api.create(&cm).unwrap();
    api.create(&secret).unwrap();

    // The mounted files hold an older configuration.
    let mounted = tempfile::tempdir().unwrap();
    config("mounted-0", "/v0", backend.port())
        .write_dir(mounted.path())
        .unwrap();
    let watch_dir = tempfile::tempdir().unwrap();
    let watch_dir = watch_dir.path().join("api");
    let url = api.url();
    let sidecar = Sidecar::start_with(
        mounted.path(),
        &[
            "--watch-configmap",
            "portcullis-web",
            "--watch-secret",
            "portcullis-web",
            "--api-server",
            &url,
            "--namespace",
            "demo",
            "--watch-dir",
            watch_dir.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        sidecar.wait_generation("api-1", Duration::from_secs(5)).await,
        "the API's configuration replaces the mounted one: {}",
        sidecar.log()
    );
    assert_eq!(get_with(&sidecar.url("/v1/x"), &[]).await.0, 200);
    assert_eq!(get_with(&sidecar.url("/v0/x"), &[]).await.0, 404);

    // A change reaches enforcement within 2 s.
    let (cm, secret) = objects(&config("api-2", "/v2", backend.port()));
    let start = Instant::now();
    api.put(&cm).unwrap();
    api.put(&secret).unwrap();
    assert!(sidecar.wait_generation("api-2", Duration::from_secs(2)).await);
    let took = start.elapsed();
    assert_eq!(get_with(&sidecar.url("/v2/x"), &[]).await.0, 200);
    assert_eq!(get_with(&sidecar.url("/v1/x"), &[]).await.0, 404);
    eprintln!("API change enforced in {took:?}");

    // A newer mounted file does not roll the API's configuration back.
    config("mounted-1", "/m1", backend.port())
        .write_dir(mounted.path())
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(sidecar.readiness().await.1, "api-2");
}

#[tokio::test]
async fn without_an_api_the_mounted_files_are_served() {
    let backend = Backend::start().await;
    let mounted = tempfile::tempdir().unwrap();
    config("mounted-0", "/v0", backend.port())
        .write_dir(mounted.path())
        .unwrap();
    let watch_dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start_with(
        mounted.path(),
        &[
            "--watch-configmap",
            "portcullis-web",
            "--watch-secret",
            "portcullis-web",
            "--api-server",
            "http://127.0.0.1:9",
            "--namespace",
            "demo",
            "--watch-dir",
            watch_dir.path().join("api").to_str().unwrap(),
        ],
    )
    .await;
    assert!(sidecar.wait_generation("mounted-0", Duration::from_secs(5)).await);
    assert_eq!(get_with(&sidecar.url("/v0/x"), &[]).await.0, 200);
    config("mounted-1", "/v1", backend.port())
        .write_dir(mounted.path())
        .unwrap();
    assert!(sidecar.wait_generation("mounted-1", Duration::from_secs(3)).await);
}
