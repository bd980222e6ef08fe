//! A Builtin provider's grants in a real `redis-server` and a Redis Cluster: saved with
//! compare and set, loaded by every replica, revoked for all (`store::grants`).

use std::time::Duration;

use portcullis_limits::store::grants::GrantState;
use portcullis_limits::testing::{Redis, RedisCluster};
use portcullis_limits::{Store, Target};

fn store(url: &str) -> Store {
    Store::new(&Target::parse(url).unwrap(), None, Duration::from_secs(2)).unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn grants_hold_for_every_replica(url: &str) {
    let (a, b) = (store(url), store(url));
    let owner = "prod/accelerator";
    let state = |from, version, document| GrantState {
        id: "grant-1",
        user: "alice",
        client_id: "app-1",
        from_version: from,
        version,
        document,
        expires_at_ms: now_ms() + 60_000,
    };
    // Made on a, seen on b.
    assert!(a.grant_save(owner, &state(0, 1, "{\"d\":1}"), 60_000).await.unwrap());
    assert_eq!(
        b.grants_load(owner, &["grant-1", "grant-2"]).await.unwrap(),
        vec![Some((1, "{\"d\":1}".to_string())), None]
    );
    // Two replicas change version 1: one wins.
    assert!(b.grant_save(owner, &state(1, 2, "{\"d\":2}"), 60_000).await.unwrap());
    assert!(!a.grant_save(owner, &state(1, 2, "{\"d\":3}"), 60_000).await.unwrap());
    assert_eq!(
        a.grants_load(owner, &["grant-1"]).await.unwrap()[0],
        Some((2, "{\"d\":2}".into()))
    );
    // Indexed by user and by client; another profile sees nothing.
    assert_eq!(
        a.grant_index(owner, Some("alice"), None).await.unwrap(),
        vec!["grant-1"]
    );
    assert_eq!(
        a.grant_index(owner, None, Some("app-1")).await.unwrap(),
        vec!["grant-1"]
    );
    assert!(a.grants_load("prod/other", &["grant-1"]).await.unwrap()[0].is_none());
    // Revoked on b: gone for a, listed as revoked, never saved again.
    let before = a.revocations_since(owner, 0).await.unwrap();
    assert!(before.grants.is_empty());
    let at = b.grants_revoke(owner, &[("grant-1", "alice", "app-1")]).await.unwrap();
    assert!(a.grants_load(owner, &["grant-1"]).await.unwrap()[0].is_none());
    assert!(a.grant_index(owner, Some("alice"), None).await.unwrap().is_empty());
    let listed = a.revocations_since(owner, before.now_ms).await.unwrap();
    assert_eq!(listed.grants, vec![("grant-1".to_string(), at)]);
    assert!(!a.grant_save(owner, &state(0, 1, "{}"), 60_000).await.unwrap());
    // A client's tokens.
    let at = a.client_tokens_revoke(owner, "app-9").await.unwrap();
    let listed = b.revocations_since(owner, before.now_ms).await.unwrap();
    assert_eq!(listed.clients, vec![("app-9".to_string(), at)]);
    // An ended grant is not saved.
    let mut ended = state(0, 1, "{}");
    ended.id = "grant-3";
    ended.expires_at_ms = now_ms() - 1;
    assert!(!a.grant_save(owner, &ended, 60_000).await.unwrap());
}

#[tokio::test]
async fn grants_in_one_redis_hold_for_every_replica() {
    let redis = Redis::start();
    grants_hold_for_every_replica(&redis.url()).await;
}

/// In a Redis Cluster, every key of a profile shares one slot (its hash tag).
#[tokio::test]
async fn grants_in_a_redis_cluster_hold_for_every_replica() {
    let cluster = RedisCluster::start();
    grants_hold_for_every_replica(&cluster.url()).await;
}
