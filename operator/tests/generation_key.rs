//! The key of the configuration generation, with the real binary against the fake API
//! server: the Secret `portcullis-generation-key` in the operator's namespace is created
//! once and read by every later start (a restart or a failover changes no generation and
//! writes nothing), the generation is the HMAC under that key (not the unkeyed SHA-256 of
//! the content), the key never reaches the log, and an unusable key is replaced.

mod common;

use std::time::Duration;

use base64::Engine;
use common::*;
use portcullis_config::{SecretMaterial, SidecarConfig};
use portcullis_fake_apiserver::FakeApiServer;
use portcullis_operator::compile::GenerationKey;
use portcullis_operator::compile::generation::generation;
use serde_json::{Value, json};
use sha2::Digest;

const WAIT: Duration = Duration::from_secs(20);
const OP_NS: &str = "portcullis-system";
const KEY_SECRET: &str = "portcullis-generation-key";

fn seed(server: &FakeApiServer) {
    for obj in [
        basic_secret("sa", "alice", "password-a"),
        basic_profile("pa", "sa"),
        route("ra", "a", &["pa"]),
        pod("a-1", "a"),
    ] {
        server.create(&obj).unwrap();
    }
}

fn key_secret(server: &FakeApiServer) -> Option<Value> {
    server.get("secrets", OP_NS, KEY_SECRET)
}

fn key_of(secret: &Value) -> Vec<u8> {
    let encoded = secret["data"]["key"].as_str().expect("data.key");
    base64::engine::general_purpose::STANDARD.decode(encoded).unwrap()
}

/// Group a's ConfigMap and Secret, once both are written.
async fn group_a(server: &FakeApiServer, op: &Operator) -> (Value, Value) {
    let ga = group_of("a");
    wait_until(WAIT, "group a's ConfigMap and Secret", op, || {
        Some((server.get("configmaps", NS, &ga)?, server.get("secrets", NS, &ga)?))
    })
    .await
}

/// The generation recomputed from a group's objects: (under `key`, unkeyed SHA-256 as it
/// used to be).
fn recompute(key: &[u8], cm: &Value, secret: &Value) -> (String, String) {
    let mut config: SidecarConfig = serde_json::from_value(config_of(cm)).unwrap();
    let mut material: SecretMaterial = serde_json::from_str(&secrets_of(secret)).unwrap();
    config.generation.clear();
    material.generation.clear();
    let keyed = generation(&GenerationKey::from_bytes(key).unwrap(), &config, &material);
    let mut hasher = sha2::Sha256::new();
    hasher.update(serde_json::to_vec(&config).unwrap());
    hasher.update([0]);
    hasher.update(serde_json::to_vec(&material).unwrap());
    (keyed, hex::encode(&hasher.finalize()[..8]))
}

fn generation_of(cm: &Value) -> String {
    cm["metadata"]["annotations"]["portcullis.dev/generation"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn key_create_requests(server: &FakeApiServer) -> usize {
    let path = format!("/api/v1/namespaces/{OP_NS}/secrets");
    server
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == path)
        .count()
}

fn assert_key_not_logged(op: &Operator, key: &[u8]) {
    let logs = op.logs();
    assert!(!logs.contains(&hex::encode(key)), "the key (hex) in the log");
    assert!(
        !logs.contains(&base64::engine::general_purpose::STANDARD.encode(key)),
        "the key (base64) in the log"
    );
}

async fn reconciled_and_ready(op: &Operator) {
    wait_until(WAIT, "the operator to reconcile", op, || {
        let ok = op.metric("portcullis_operator_reconciles_total{result=\"ok\"}")?;
        (ok >= 1.0 && op.get("/readyz")?.0 == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_secret_is_created_once_and_reused_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    seed(&server);
    let mut op = Operator::start(&dir, "op-1", &[]);
    let (cm, secret) = group_a(&server, &op).await;

    // The key: 32 random bytes in an Opaque Secret of the operator's namespace.
    let key_secret_1 = key_secret(&server).expect("the generation key Secret");
    assert_eq!(key_secret_1["type"], "Opaque");
    let key = key_of(&key_secret_1);
    assert_eq!(key.len(), 32);
    assert!(
        key_secret_1["metadata"]["labels"]["app.kubernetes.io/managed-by"].is_null(),
        "not one of the controllers' group objects"
    );

    // The generation is the HMAC under that key, not the content hash anyone could recompute.
    let gen1 = generation_of(&cm);
    assert_eq!(config_of(&cm)["generation"], gen1.as_str());
    let (keyed, unkeyed) = recompute(&key, &cm, &secret);
    assert_eq!(gen1, keyed);
    assert_ne!(gen1, unkeyed);
    assert_key_not_logged(&op, &key);
    assert!(op.logs().contains("wrote a new generation key"), "{}", op.logs());

    // A restart reads the same key: same generation, nothing written.
    reconciled_and_ready(&op).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cm_rv = rv(&server.get("configmaps", NS, &group_of("a")).unwrap());
    assert!(op.terminate().success(), "{}", op.logs());
    let op2 = Operator::start(&dir, "op-2", &[]);
    reconciled_and_ready(&op2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cm2 = server.get("configmaps", NS, &group_of("a")).unwrap();
    assert_eq!(generation_of(&cm2), gen1, "the generation survives a restart");
    assert_eq!(rv(&cm2), cm_rv, "no ConfigMap write after a restart");
    assert_eq!(
        op2.metric("portcullis_operator_writes_total{kind=\"ConfigMap\",op=\"apply\"}"),
        None
    );
    let key_secret_2 = key_secret(&server).unwrap();
    assert_eq!(rv(&key_secret_2), rv(&key_secret_1), "the key Secret is not rewritten");
    assert_eq!(key_of(&key_secret_2), key);
    assert_eq!(key_create_requests(&server), 1, "created once");
    assert!(op2.logs().contains("read the generation key"), "{}", op2.logs());
    assert_key_not_logged(&op2, &key);

    // A change of content still changes the generation, under the same key.
    server
        .merge_patch("secrets", NS, "sa", &json!({"data": {"password": b64("rotated-a")}}))
        .unwrap();
    let cm3 = wait_until(WAIT, "a new generation", &op2, || {
        let cm = server.get("configmaps", NS, &group_of("a"))?;
        (generation_of(&cm) != gen1).then_some(cm)
    })
    .await;
    let (_, secret3) = group_a(&server, &op2).await;
    assert_eq!(recompute(&key, &cm3, &secret3).0, generation_of(&cm3));
    assert_rbac_allows(&server.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_together_share_one_key_so_a_failover_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    seed(&server);
    let mut ops = [
        Operator::start(&dir, "first", &[]),
        Operator::start(&dir, "second", &[]),
    ];
    let (cm, _) = group_a(&server, &ops[0]).await;
    let gen1 = generation_of(&cm);
    for op in &ops {
        wait_until(WAIT, "both replicas ready", op, || {
            (op.get("/readyz")?.0 == 200).then_some(())
        })
        .await;
    }
    let leader = wait_until(WAIT, "a leader", &ops[0], || {
        ops.iter()
            .position(|op| op.metric("portcullis_operator_leader") == Some(1.0))
    })
    .await;
    let standby = 1 - leader;
    // Both may try to create it; one succeeds, the other reads what it wrote.
    let wrote: Vec<usize> = ops
        .iter()
        .map(|op| op.logs().matches("wrote a new generation key").count())
        .collect();
    let read: Vec<usize> = ops
        .iter()
        .map(|op| op.logs().matches("read the generation key").count())
        .collect();
    assert_eq!(wrote.iter().sum::<usize>(), 1, "one key for both: wrote {wrote:?}");
    assert_eq!((wrote[0] + read[0], wrote[1] + read[1]), (1, 1), "read {read:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cm_rv = rv(&server.get("configmaps", NS, &group_of("a")).unwrap());

    // The leader goes; the standby takes over with the same key.
    assert!(ops[leader].terminate().success());
    let op = &ops[standby];
    wait_until(WAIT, "the standby to lead", op, || {
        (op.metric("portcullis_operator_leader")? == 1.0).then_some(())
    })
    .await;
    reconciled_and_ready(op).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cm2 = server.get("configmaps", NS, &group_of("a")).unwrap();
    assert_eq!(generation_of(&cm2), gen1);
    assert_eq!(rv(&cm2), cm_rv, "no write after a failover");
    assert_rbac_allows(&server.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_key_is_replaced_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    seed(&server);
    server
        .create(&json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": KEY_SECRET, "namespace": OP_NS},
            "type": "Opaque",
            "data": {"key": b64("too-short")},
        }))
        .unwrap();
    let op = Operator::start(&dir, "op", &[]);
    let (cm, secret) = group_a(&server, &op).await;
    let key = key_of(&key_secret(&server).unwrap());
    assert_eq!(key.len(), 32);
    assert_eq!(recompute(&key, &cm, &secret).0, generation_of(&cm));
    assert!(
        op.logs()
            .contains("the generation key Secret is unusable; a new key replaces it"),
        "{}",
        op.logs()
    );
    assert_key_not_logged(&op, &key);
    assert_rbac_allows(&server.requests());
}
