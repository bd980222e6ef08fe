//! `portcullis-kubewatch` against a small fake API server on 127.0.0.1: the first state, a
//! change of both objects, generations that disagree for a while, an expired watch (410).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use portcullis_kubewatch::{ApiClient, ApiConfig, Target};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const TOKEN: &str = "test-token-123";

#[derive(Default)]
struct State {
    objects: HashMap<&'static str, Value>,
    version: u64,
    lists: u32,
    watchers: Vec<(&'static str, mpsc::UnboundedSender<Bytes>)>,
    unauthorized: u32,
}

#[derive(Clone, Default)]
struct FakeApi(Arc<Mutex<State>>);

fn configmap(generation: &str) -> Value {
    let config = json!({"schemaVersion": 1, "generation": generation, "namespace": "prod", "routes": []});
    json!({"kind": "ConfigMap", "metadata": {"name": "portcullis-abc", "resourceVersion": "0"},
           "data": {"config.json": config.to_string()}})
}

fn secret(generation: &str) -> Value {
    let secrets = json!({"schemaVersion": 1, "generation": generation});
    let encoded = base64::engine::general_purpose::STANDARD.encode(secrets.to_string());
    json!({"kind": "Secret", "metadata": {"name": "portcullis-abc", "resourceVersion": "0"},
           "data": {"secrets.json": encoded}})
}

impl FakeApi {
    /// Sets an object and sends MODIFIED to its watchers.
    fn set(&self, resource: &'static str, mut object: Value) {
        let mut state = self.0.lock().unwrap();
        state.version += 1;
        object["metadata"]["resourceVersion"] = json!(state.version.to_string());
        state.objects.insert(resource, object.clone());
        let line = Bytes::from(format!("{}\n", json!({"type": "MODIFIED", "object": object})));
        state
            .watchers
            .retain(|(r, tx)| *r != resource || tx.send(line.clone()).is_ok());
    }

    /// Ends every watch with a 410 Gone error event.
    fn expire_watches(&self) {
        let mut state = self.0.lock().unwrap();
        let line = Bytes::from(format!(
            "{}\n",
            json!({"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}})
        ));
        for (_, tx) in state.watchers.drain(..) {
            let _ = tx.send(line.clone());
        }
    }

    fn lists(&self) -> u32 {
        self.0.lock().unwrap().lists
    }

    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<BoxBody<Bytes, Infallible>> {
        let authorized =
            req.headers().get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"));
        if !authorized {
            self.0.lock().unwrap().unauthorized += 1;
            return Response::builder()
                .status(401)
                .body(Full::new(Bytes::new()).boxed())
                .unwrap();
        }
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or_default().to_owned();
        let resource: &'static str = if path.ends_with("/configmaps") {
            "configmaps"
        } else {
            "secrets"
        };
        assert!(path.starts_with("/api/v1/namespaces/prod/"), "{path}");
        assert!(
            query.contains("fieldSelector=metadata.name%3Dportcullis-abc"),
            "{query}"
        );
        if query.contains("watch=1") {
            let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
            self.0.lock().unwrap().watchers.push((resource, tx));
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
            });
            return Response::new(StreamBody::new(stream).boxed());
        }
        let mut state = self.0.lock().unwrap();
        state.lists += 1;
        let items: Vec<Value> = state.objects.get(resource).cloned().into_iter().collect();
        let body = json!({"metadata": {"resourceVersion": state.version.to_string()}, "items": items});
        Response::new(Full::new(Bytes::from(body.to_string())).boxed())
    }

    async fn serve(self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let api = self.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let api = api.clone();
                        async move { Ok::<_, Infallible>(api.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        format!("http://{addr}")
    }
}

async fn wait_for_generation(dir: &std::path::Path, want: &str) {
    for _ in 0..100 {
        if let Ok(loaded) = portcullis_config::load_dir(dir)
            && loaded.config.generation == want
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("generation {want} never written into {}", dir.display());
}

fn generation_on_disk(dir: &std::path::Path) -> Option<String> {
    portcullis_config::load_dir(dir).ok().map(|l| l.config.generation)
}

#[tokio::test]
async fn follows_both_objects_and_writes_only_matching_generations() {
    let api = FakeApi::default();
    api.set("configmaps", configmap("g1"));
    api.set("secrets", secret("g1"));
    let base_url = api.clone().serve().await;
    let dir = tempfile::tempdir().unwrap();
    let client = ApiClient::new(ApiConfig {
        base_url,
        token: Some(TOKEN.into()),
        ca_pem: None,
        namespace: "prod".into(),
    })
    .unwrap();
    let task = tokio::spawn(portcullis_kubewatch::run(
        client,
        Target {
            configmap: "portcullis-abc".into(),
            secret: "portcullis-abc".into(),
            dir: dir.path().to_owned(),
        },
    ));

    wait_for_generation(dir.path(), "g1").await;

    // The ConfigMap moves first: nothing is written until the Secret follows.
    tokio::time::sleep(Duration::from_millis(200)).await; // let the watches start
    api.set("configmaps", configmap("g2"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(generation_on_disk(dir.path()).as_deref(), Some("g1"));
    api.set("secrets", secret("g2"));
    wait_for_generation(dir.path(), "g2").await;

    // An expired watch is followed by a fresh list, which picks up what changed meanwhile.
    let lists = api.lists();
    api.expire_watches();
    for _ in 0..100 {
        if api.lists() >= lists + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(api.lists() >= lists + 2, "no re-list after 410 Gone");
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.set("configmaps", configmap("g3"));
    api.set("secrets", secret("g3"));
    wait_for_generation(dir.path(), "g3").await;
    assert_eq!(api.0.lock().unwrap().unauthorized, 0);
    task.abort();
}

#[tokio::test]
async fn a_wrong_token_writes_nothing_and_keeps_trying() {
    let api = FakeApi::default();
    api.set("configmaps", configmap("g1"));
    api.set("secrets", secret("g1"));
    let base_url = api.clone().serve().await;
    let dir = tempfile::tempdir().unwrap();
    let client = ApiClient::new(ApiConfig {
        base_url,
        token: Some("wrong".into()),
        ca_pem: None,
        namespace: "prod".into(),
    })
    .unwrap();
    let task = tokio::spawn(portcullis_kubewatch::run(
        client,
        Target {
            configmap: "portcullis-abc".into(),
            secret: "portcullis-abc".into(),
            dir: dir.path().to_owned(),
        },
    ));
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(generation_on_disk(dir.path()).is_none());
    assert!(api.0.lock().unwrap().unauthorized >= 4, "it retries with backoff");
    task.abort();
}
