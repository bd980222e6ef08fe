//! The admission webhooks over HTTPS, end to end: the real `portcullis-operator run` (leader
//! and standby) serves AdmissionReviews with a certificate from its own CA, which the
//! published bundle verifies; a pod asking for a sidecar gets the patch, an invalid
//! ApiRoute is refused with the controller's message, and the webhook configurations'
//! caBundle is filled in.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::*;
use portcullis_fake_apiserver::resources::ResourceType;
use portcullis_fake_apiserver::{FakeApiServer, Propagation};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OP_NS: &str = "portcullis-system";
const SERVICE: &str = "portcullis-webhook";
const CONFIG: &str = "portcullis";

fn cluster_scoped(group: &'static str, plural: &'static str, kind: &'static str) -> ResourceType {
    ResourceType {
        group,
        version: "v1",
        plural,
        kind,
        namespaced: false,
        status_subresource: false,
    }
}

async fn webhook_server(dir: &tempfile::TempDir) -> FakeApiServer {
    let server = FakeApiServer::builder()
        .bookmark_interval(Duration::from_millis(500))
        .resource(cluster_scoped("", "namespaces", "Namespace"))
        .resource(cluster_scoped(
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            "MutatingWebhookConfiguration",
        ))
        .resource(cluster_scoped(
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
            "ValidatingWebhookConfiguration",
        ))
        .start()
        .await
        .unwrap();
    server.write_kubeconfig(&dir.path().join("kubeconfig"), NS).unwrap();
    server
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn settings_file(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("settings.json");
    let settings = json!({
        "orgAllowance": {"requestsPerMinute": null},
        "trustedProxies": [],
        "sidecar": {"image": "registry.example.com/portcullis-sidecar:1.2.3", "native": true},
        "webhook": {"service": SERVICE, "namespace": OP_NS,
                    "mutatingWebhookConfiguration": CONFIG, "validatingWebhookConfiguration": CONFIG},
    });
    std::fs::write(&path, settings.to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

fn webhook_configurations() -> (Value, Value) {
    let client = |path: &str| json!({"service": {"name": SERVICE, "namespace": OP_NS, "path": path, "port": 443}});
    let mutating = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": CONFIG},
        "webhooks": [
            {"name": "pods.inject.portcullis.dev", "clientConfig": client("/mutate-pods"),
             "admissionReviewVersions": ["v1"], "sideEffects": "None"},
            {"name": "namespaces.inject.portcullis.dev", "clientConfig": client("/mutate-pods"),
             "admissionReviewVersions": ["v1"], "sideEffects": "None"},
        ],
    });
    let validating = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": CONFIG},
        "webhooks": [
            {"name": "apiroutes.validate.portcullis.dev", "clientConfig": client("/validate-apiroutes"),
             "admissionReviewVersions": ["v1"], "sideEffects": "None"},
        ],
    });
    (mutating, validating)
}

fn review(kind: Value, resource: &str, object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0b7e4f1c-0000-4000-8000-000000000001",
            "kind": kind,
            "resource": {"group": kind["group"], "version": kind["version"], "resource": resource},
            "name": object["metadata"]["name"].as_str().unwrap_or(""),
            "namespace": NS,
            "operation": "CREATE",
            "userInfo": {"username": "admin"},
            "object": object,
            "oldObject": null,
            "dryRun": false
        }
    })
}

/// POSTs `body` to `path` over HTTPS, trusting only `bundle_pem`, with the webhook Service's
/// name for SNI and verification: (status, parsed JSON body).
async fn post(addr: SocketAddr, bundle_pem: &str, path: &str, body: &Value) -> Result<(u16, Value), String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(bundle_pem.as_bytes()) {
        roots.add(c.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(format!("{SERVICE}.{OP_NS}.svc")).unwrap();
    let mut tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
    let body = serde_json::to_vec(body).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {SERVICE}.{OP_NS}.svc\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.map_err(|e| e.to_string())?;
    tls.write_all(&body).await.map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    Ok((code, serde_json::from_str(body).unwrap_or(Value::Null)))
}

fn bundle(server: &FakeApiServer) -> Option<String> {
    let cm = server.get("configmaps", OP_NS, "portcullis-ca-bundle")?;
    Some(cm["data"]["ca.crt"].as_str()?.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_over_https_on_leader_and_standby_with_the_ca_bundle_in_their_configurations() {
    let dir = tempfile::tempdir().unwrap();
    let server = webhook_server(&dir).await;
    let (mutating, validating) = webhook_configurations();
    server.create(&mutating).unwrap();
    server.create(&validating).unwrap();
    server
        .create(&json!({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": NS, "labels": {"kubernetes.io/metadata.name": NS, INJECT: "true"}}}))
        .unwrap();
    server.create(&basic_secret("users", "alice", "s3cret")).unwrap();
    server.create(&basic_profile("basic", "users")).unwrap();
    server
        .create(
            &json!({"apiVersion": "portcullis.dev/v1alpha1", "kind": "SecurityProfile",
                        "metadata": {"name": "anon", "namespace": NS}, "spec": {"type": "Anonymous"}}),
        )
        .unwrap();

    let settings = settings_file(&dir);
    let (addr_a, addr_b) = (free_addr(), free_addr());
    let leader = Operator::start(
        &dir,
        "op-a",
        &["--webhook-addr", &addr_a.to_string(), "--settings", &settings],
    );
    wait_until(Duration::from_secs(15), "op-a leads", &leader, || {
        (leader.metric("portcullis_operator_leader")? == 1.0).then_some(())
    })
    .await;
    let standby = Operator::start(
        &dir,
        "op-b",
        &["--webhook-addr", &addr_b.to_string(), "--settings", &settings],
    );

    // The CA (created because the webhooks need one) and its bundle.
    let ca_bundle = wait_until(Duration::from_secs(20), "the CA bundle", &leader, || bundle(&server)).await;
    let encoded = base64::engine::general_purpose::STANDARD.encode(&ca_bundle);

    // caBundle of every webhook of both configurations.
    for resource in [
        "mutatingwebhookconfigurations.admissionregistration.k8s.io",
        "validatingwebhookconfigurations.admissionregistration.k8s.io",
    ] {
        let config = wait_until(Duration::from_secs(15), "caBundle patched in", &leader, || {
            let c = server.get(resource, "", CONFIG)?;
            c["webhooks"]
                .as_array()?
                .iter()
                .all(|w| w["clientConfig"]["caBundle"] == encoded.as_str())
                .then_some(c)
        })
        .await;
        // Nothing else changed.
        let webhooks = config["webhooks"].as_array().unwrap();
        assert!(webhooks.iter().all(|w| w["clientConfig"]["service"]["name"] == SERVICE));
    }

    // A pod asking for a sidecar, on both replicas (the standby serves too).
    let pod_kind = json!({"group": "", "version": "v1", "kind": "Pod"});
    let pod_review = review(pod_kind, "pods", pod("web-1", "web"));
    for (who, addr, op) in [("leader", addr_a, &leader), ("standby", addr_b, &standby)] {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let (code, answer) = loop {
            match post(addr, &ca_bundle, "/mutate-pods", &pod_review).await {
                Ok(v) => break v,
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{who} does not serve HTTPS: {e}\n{}", op.logs()),
            }
        };
        assert_eq!(code, 200, "{who}");
        let response = &answer["response"];
        assert_eq!(response["uid"], pod_review["request"]["uid"], "{who}");
        assert_eq!(response["allowed"], true, "{who}");
        assert_eq!(response["patchType"], "JSONPatch", "{who}");
        let patch: Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(response["patch"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        let sidecar = patch
            .as_array()
            .unwrap()
            .iter()
            .find(|op| op["path"].as_str().unwrap().starts_with("/spec/initContainers"))
            .expect("the sidecar is injected");
        let container = if sidecar["value"].is_array() {
            &sidecar["value"][0]
        } else {
            &sidecar["value"]
        };
        assert_eq!(container["name"], "portcullis-sidecar");
        assert_eq!(container["image"], "registry.example.com/portcullis-sidecar:1.2.3");
        // Counted on the replica that answered.
        assert_eq!(
            op.metric("portcullis_operator_webhook_reviews_total{result=\"patched\",webhook=\"mutate-pods\"}"),
            Some(1.0),
            "{who}"
        );
        assert_eq!(
            op.metric("portcullis_operator_webhook_duration_seconds_count{webhook=\"mutate-pods\"}"),
            Some(1.0),
            "{who}"
        );
    }
    // Not a review at all: refused, and counted as such.
    let (code, answer) = post(addr_a, &ca_bundle, "/validate-apiroutes", &json!({"hello": 1}))
        .await
        .unwrap();
    assert_eq!((code, &answer["response"]["allowed"]), (200, &json!(false)));
    assert_eq!(
        leader.metric("portcullis_operator_webhook_reviews_total{result=\"invalid\",webhook=\"validate-apiroutes\"}"),
        Some(1.0)
    );

    // A pod without the label in a namespace labelled for injection (the replica's namespace
    // cache): labelled and injected; one that opts out is left alone.
    let pod_kind = json!({"group": "", "version": "v1", "kind": "Pod"});
    let unlabelled = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain", "namespace": NS, "labels": {"app": "x"}},
                            "spec": {"containers": [{"name": "app", "image": "app"}]}});
    let (_, answer) = post(
        addr_b,
        &ca_bundle,
        "/mutate-pods",
        &review(pod_kind.clone(), "pods", unlabelled.clone()),
    )
    .await
    .unwrap();
    let patch = base64::engine::general_purpose::STANDARD
        .decode(answer["response"]["patch"].as_str().expect("a patch"))
        .unwrap();
    let patch: Value = serde_json::from_slice(&patch).unwrap();
    assert!(
        patch
            .as_array()
            .unwrap()
            .iter()
            .any(|op| op["path"] == "/metadata/labels/portcullis.dev~1inject"),
        "{patch}"
    );
    let mut opted_out = unlabelled;
    opted_out["metadata"]["labels"][INJECT] = json!("false");
    let (_, answer) = post(addr_a, &ca_bundle, "/mutate-pods", &review(pod_kind, "pods", opted_out))
        .await
        .unwrap();
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none_or(Value::is_null), "{answer}");

    // An ApiRoute mixing Basic and Anonymous: refused with the message the controller writes
    // into its status (the Basic profile's Secret is read for the review).
    let mixed = json!({
        "apiVersion": "portcullis.dev/v1alpha1", "kind": "ApiRoute",
        "metadata": {"name": "mixed", "namespace": NS},
        "spec": {"workloadSelector": {"matchLabels": {"app": "web"}}, "pathPrefix": "/m",
                 "profiles": [{"name": "basic"}, {"name": "anon"}], "backend": {"port": 8080}},
    });
    let route_kind = json!({"group": "portcullis.dev", "version": "v1alpha1", "kind": "ApiRoute"});
    let (code, answer) = post(
        addr_b,
        &ca_bundle,
        "/validate-apiroutes",
        &review(route_kind.clone(), "apiroutes", mixed.clone()),
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    let denied = answer["response"]["status"]["message"].as_str().unwrap().to_owned();
    server.create(&mixed).unwrap();
    let status_message = wait_until(Duration::from_secs(15), "the controller's verdict", &leader, || {
        let r = server.get(ROUTES, NS, "mixed")?;
        let c = condition(&r, "Accepted")?;
        (c["status"] == "False").then(|| c["message"].as_str().unwrap().to_owned())
    })
    .await;
    assert_eq!(denied, status_message);
    assert!(denied.contains("cannot mix"), "{denied}");

    // A missing profile too; a valid route is allowed.
    let missing = json!({
        "apiVersion": "portcullis.dev/v1alpha1", "kind": "ApiRoute",
        "metadata": {"name": "missing", "namespace": NS},
        "spec": {"workloadSelector": {}, "pathPrefix": "/x", "profiles": [{"name": "nope"}], "backend": {"port": 8080}},
    });
    let (_, answer) = post(
        addr_a,
        &ca_bundle,
        "/validate-apiroutes",
        &review(route_kind.clone(), "apiroutes", missing),
    )
    .await
    .unwrap();
    assert_eq!(answer["response"]["allowed"], false);
    assert!(
        answer["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("\"nope\" not found")
    );
    let fine = route("fine", "web", &["basic"]);
    let (_, answer) = post(
        addr_a,
        &ca_bundle,
        "/validate-apiroutes",
        &review(route_kind, "apiroutes", fine),
    )
    .await
    .unwrap();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");

    // Other paths are not served; a client that trusts another CA is refused.
    let (code, _) = post(addr_a, &ca_bundle, "/other", &json!({})).await.unwrap();
    assert_eq!(code, 404);
    let other = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let foreign = params.self_signed(&other).unwrap().pem();
    assert!(post(addr_a, &foreign, "/mutate-pods", &pod_review).await.is_err());

    for op in [&leader, &standby] {
        assert!(!op.logs().contains("PRIVATE KEY"), "key material in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhooks_follow_a_ca_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let server = webhook_server(&dir).await;
    let (mutating, validating) = webhook_configurations();
    server.create(&mutating).unwrap();
    server.create(&validating).unwrap();
    let settings = settings_file(&dir);
    let addr = free_addr();
    let op = Operator::start(
        &dir,
        "op-a",
        &[
            "--webhook-addr",
            &addr.to_string(),
            "--settings",
            &settings,
            "--ca-lifetime",
            "15s",
            "--cert-lifetime",
            "3s",
        ],
    );
    let count = |pem: &str| CertificateDer::pem_slice_iter(pem.as_bytes()).count();
    let ca_bundle = |server: &FakeApiServer| {
        let c = server.get(
            "validatingwebhookconfigurations.admissionregistration.k8s.io",
            "",
            CONFIG,
        )?;
        let b64 = c["webhooks"][0]["clientConfig"]["caBundle"].as_str()?.to_owned();
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).ok()?).ok()
    };
    let pod_review = review(
        json!({"group": "", "version": "v1", "kind": "Pod"}),
        "pods",
        pod("web-1", "web"),
    );
    let first = wait_until(Duration::from_secs(20), "the first CA in caBundle", &op, || {
        ca_bundle(&server)
    })
    .await;
    assert_eq!(count(&first), 1);
    // During the rotation the configurations trust both CAs, and the webhook keeps answering.
    let both = wait_until(Duration::from_secs(20), "both CAs in caBundle", &op, || {
        ca_bundle(&server).filter(|b| count(b) == 2)
    })
    .await;
    assert!(both.contains(first.trim()), "the old CA is still trusted");
    let (code, _) = post(addr, &both, "/mutate-pods", &pod_review).await.unwrap();
    assert_eq!(code, 200);
    // Then only the new CA: the replica's serving certificate comes from it by then.
    let only_new = wait_until(Duration::from_secs(20), "the old CA leaves caBundle", &op, || {
        ca_bundle(&server).filter(|b| count(b) == 1 && *b != first)
    })
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match post(addr, &only_new, "/mutate-pods", &pod_review).await {
            Ok((code, _)) => {
                assert_eq!(code, 200);
                break;
            }
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "{e}\n{}", op.logs());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    assert!(
        post(addr, &first, "/mutate-pods", &pod_review).await.is_err(),
        "the old CA no longer verifies it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_replica_is_ready_only_with_a_serving_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let server = webhook_server(&dir).await;
    // Another replica leads (and never creates the CA): no serving certificate can be issued.
    server
        .create(&json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "portcullis-operator", "namespace": OP_NS},
            "spec": {"holderIdentity": "elsewhere", "leaseDurationSeconds": 3600,
                     "acquireTime": lease_now(), "renewTime": lease_now()}}))
        .unwrap();
    let settings = settings_file(&dir);
    let webhooks = Operator::start(
        &dir,
        "op-w",
        &["--webhook-addr", &free_addr().to_string(), "--settings", &settings],
    );
    let plain = Operator::start(&dir, "op-p", &["--settings", &settings]);
    // A standby without webhooks is ready; the one serving webhooks is not, and stays so.
    wait_until(Duration::from_secs(15), "the plain standby is ready", &plain, || {
        (plain.get("/readyz")?.0 == 200).then_some(())
    })
    .await;
    // Its admin listener may come up later than the standby's on a loaded machine.
    wait_until(
        Duration::from_secs(15),
        "the webhook replica answers",
        &webhooks,
        || webhooks.get("/readyz").map(|_| ()),
    )
    .await;
    for _ in 0..10 {
        let answer = webhooks.get("/readyz").map(|(code, _)| code);
        assert_eq!(
            answer,
            Some(503),
            "ready without a serving certificate\n{}",
            webhooks.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The plain standby stops and the leader goes away: the webhook replica leads, creates the
    // CA, gets its serving certificate and turns ready.
    let mut plain = plain;
    plain.terminate();
    server
        .delete(
            "leases.coordination.k8s.io",
            OP_NS,
            "portcullis-operator",
            Propagation::Delete,
        )
        .unwrap();
    wait_until(
        Duration::from_secs(30),
        "the webhook replica is ready",
        &webhooks,
        || (webhooks.get("/readyz")?.0 == 200).then_some(()),
    )
    .await;
    // The CA bundle is published beside the CA (its own write, which may land just after
    // the replica turned ready).
    wait_until(Duration::from_secs(10), "the CA bundle", &webhooks, || bundle(&server)).await;
}

/// The operator's webhooks with a leader serving them: (operator, address, CA bundle).
async fn serving_operator(dir: &tempfile::TempDir, server: &FakeApiServer) -> (Operator, SocketAddr, String) {
    let (mutating, validating) = webhook_configurations();
    server.create(&mutating).unwrap();
    server.create(&validating).unwrap();
    let settings = settings_file(dir);
    let addr = free_addr();
    let op = Operator::start(
        dir,
        "op-a",
        &["--webhook-addr", &addr.to_string(), "--settings", &settings],
    );
    let ca_bundle = wait_until(Duration::from_secs(20), "the CA bundle", &op, || bundle(server)).await;
    // Serving once the replica has its certificate.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while post(addr, &ca_bundle, "/other", &json!({})).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "no HTTPS\n{}", op.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (op, addr, ca_bundle)
}

/// `review` as user `user` (groups `groups`).
fn review_by(kind: Value, resource: &str, object: Value, user: &str, groups: &[&str]) -> Value {
    let mut r = review(kind, resource, object);
    r["request"]["userInfo"] = json!({"username": user, "uid": "u-1", "groups": groups,
                                      "extra": {"scopes": ["view"]}});
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_named_by_a_route_or_profile_need_the_authors_access() {
    use portcullis_fake_apiserver::AccessRule;
    let dir = tempfile::tempdir().unwrap();
    let server = webhook_server(&dir).await;
    server
        .create(&basic_secret("payroll", "bob", "payroll-password"))
        .unwrap();
    server
        .create(&basic_secret("web-origin", "web", "web-password"))
        .unwrap();
    server.allow(AccessRule::get_secret("dev", NS, "web-origin"));
    let (op, addr, ca_bundle) = serving_operator(&dir, &server).await;

    let route_kind = json!({"group": "portcullis.dev", "version": "v1alpha1", "kind": "ApiRoute"});
    let gateway = |secret: &str| {
        json!({
            "apiVersion": "portcullis.dev/v1alpha1", "kind": "ApiRoute",
            "metadata": {"name": "exfiltrate", "namespace": NS},
            "spec": {"workloadSelector": {"matchLabels": {"app": "web"}}, "pathPrefix": "/x",
                     "backend": {"origin": {"url": "https://attacker.example.net",
                                            "auth": {"basic": {"secretRef": {"name": secret}}}}}},
        })
    };
    // The developer may not read the payroll Secret: the route naming it is refused, naming
    // the Secret and the field.
    let (code, answer) = post(
        addr,
        &ca_bundle,
        "/validate-apiroutes",
        &review_by(route_kind.clone(), "apiroutes", gateway("payroll"), "dev", &["devs"]),
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "spec.backend.origin.auth.basic.secretRef.name: user \"dev\" may not get Secret \"payroll\" in namespace prod"
        ),
        "{message}"
    );
    assert!(!message.contains("payroll-password"));
    // The review asked about exactly that user, with its groups, uid and extra.
    let asked = server.access_reviews();
    let spec = &asked.last().unwrap()["spec"];
    assert_eq!(spec["user"], "dev");
    assert_eq!(spec["groups"], json!(["devs"]));
    assert_eq!(spec["uid"], "u-1");
    assert_eq!(spec["extra"], json!({"scopes": ["view"]}));
    assert_eq!(
        spec["resourceAttributes"],
        json!({"verb": "get", "group": "", "resource": "secrets", "namespace": NS, "name": "payroll"})
    );
    // A Secret the developer may read is fine.
    let (_, answer) = post(
        addr,
        &ca_bundle,
        "/validate-apiroutes",
        &review_by(route_kind.clone(), "apiroutes", gateway("web-origin"), "dev", &["devs"]),
    )
    .await
    .unwrap();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");

    // A SecurityProfile naming a Secret its author may not read: refused too.
    let profile_kind = json!({"group": "portcullis.dev", "version": "v1alpha1", "kind": "SecurityProfile"});
    let (_, answer) = post(
        addr,
        &ca_bundle,
        "/validate-securityprofiles",
        &review_by(
            profile_kind,
            "securityprofiles",
            basic_profile("steal", "payroll"),
            "dev",
            &[],
        ),
    )
    .await
    .unwrap();
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    assert!(
        answer["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.basic.secretRef.name: user \"dev\" may not get Secret \"payroll\""),
        "{answer}"
    );

    // No answer from the API server: refused (fail closed).
    server.fail_requests("POST", "subjectaccessreviews", 500, 1);
    let (_, answer) = post(
        addr,
        &ca_bundle,
        "/validate-apiroutes",
        &review_by(route_kind, "apiroutes", gateway("web-origin"), "dev", &[]),
    )
    .await
    .unwrap();
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("cannot check whether user \"dev\" may get Secret \"web-origin\""),
        "{message}"
    );
    assert_eq!(
        op.metric("portcullis_operator_webhook_reviews_total{result=\"denied\",webhook=\"validate-apiroutes\"}"),
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_app_port_a_route_forwards_to_gets_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let server = webhook_server(&dir).await;
    let mut r = route("web", "web", &[]);
    r["spec"]["backend"]["port"] = json!(8080);
    server.create(&r).unwrap();
    let (op, addr, ca_bundle) = serving_operator(&dir, &server).await;
    let pod_kind = json!({"group": "", "version": "v1", "kind": "Pod"});
    let mut web = pod("web-1", "web");
    web["spec"]["containers"][0]["ports"] = json!([{"name": "http", "containerPort": 8080}]);
    // The replica's route cache fills asynchronously: ask until the warning appears.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let warnings = loop {
        let (_, answer) = post(
            addr,
            &ca_bundle,
            "/mutate-pods",
            &review(pod_kind.clone(), "pods", web.clone()),
        )
        .await
        .unwrap();
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
        assert!(
            answer["response"]["patch"].is_string(),
            "the sidecar is injected all the same"
        );
        if let Some(w) = answer["response"]["warnings"].as_array() {
            break w.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no warning\n{}", op.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let warning = warnings[0].as_str().unwrap();
    assert!(
        warning.starts_with("container \"app\" exposes port 8080, the backend port of ApiRoute \"web\""),
        "{warning}"
    );
    // An app that does not declare the port gets no warning.
    let plain = pod("web-2", "web");
    let (_, answer) = post(addr, &ca_bundle, "/mutate-pods", &review(pod_kind, "pods", plain))
        .await
        .unwrap();
    assert!(
        answer["response"].get("warnings").is_none_or(Value::is_null),
        "{answer}"
    );
}
