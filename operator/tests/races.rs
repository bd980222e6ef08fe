//! Races and failures of issue 15 (operator items 8–11): the real binary against the
//! in-process fake API server, with late write responses and late watch events (Kubernetes
//! orders events within one watch, not across watches), over 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use common::*;
use portcullis_fake_apiserver::{FakeApiServer, Propagation};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn get(server: &FakeApiServer, resource: &str, name: &str) -> Option<Value> {
    server.get(resource, NS, name)
}

fn seed(server: &FakeApiServer, objects: Vec<Value>) {
    for obj in objects {
        server.create(&obj).unwrap();
    }
}

async fn routes_of_group(server: &FakeApiServer, op: &Operator, app: &str, want: &[&str]) {
    let group = group_of(app);
    wait_until(WAIT, &format!("group {app} serving {want:?}"), op, || {
        let cm = get(server, "configmaps", &group)?;
        (route_names(&config_of(&cm)) == want).then_some(())
    })
    .await;
}

/// Item 8: the route's status write is answered only after the watch reported the route
/// deleted; the write's response must not bring the route back into the store (it would
/// stay in the group's configuration, served by the sidecars, until a relist).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_deleted_while_its_status_write_is_in_flight_stays_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    seed(
        &server,
        vec![
            basic_secret("sa", "alice", "password-a"),
            basic_profile("pa", "sa"),
            route("ra", "a", &["pa"]),
            route("ra2", "a", &["pa"]),
            pod("a-1", "a"),
        ],
    );
    let mut op = Operator::start(&dir, "op", &[]);
    routes_of_group(&server, &op, "a", &["ra", "ra2"]).await;
    wait_until(WAIT, "ra2 Ready", &op, || {
        (condition(&get(&server, ROUTES, "ra2")?, "Ready")?["status"] == "True").then_some(())
    })
    .await;

    // ra2's next status write is served at once but answered 2 s later.
    server.delay_responses("PATCH", "/apiroutes/ra2/status", Duration::from_secs(2), 1);
    let generation = server
        .merge_patch(ROUTES, NS, "ra2", &json!({"spec": {"pathPrefix": "/ra2-v2"}}))
        .unwrap()["metadata"]["generation"]
        .clone();
    // Once the write has landed (its response still on its way), delete the route.
    wait_until(WAIT, "ra2's new status written", &op, || {
        let ra2 = get(&server, ROUTES, "ra2")?;
        (ra2["status"]["observedGeneration"] == generation).then_some(())
    })
    .await;
    let deleted_at = Instant::now();
    server.delete(ROUTES, NS, "ra2", Propagation::Delete).unwrap();
    routes_of_group(&server, &op, "a", &["ra"]).await;
    // Past the late response, and a reconcile after it: ra2 stays out.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(deleted_at.elapsed()) + Duration::from_secs(1)).await;
    let cm = get(&server, "configmaps", &group_of("a")).unwrap();
    assert_eq!(route_names(&config_of(&cm)), ["ra"], "{}", op.logs());
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.method == "PATCH" && r.path.ends_with("/apiroutes/ra2/status")),
        "the race was not exercised"
    );

    // Item 9: SIGTERM stops the certificate manager once (no restart loop).
    let status = op.terminate();
    assert!(status.success(), "{status:?}\n{}", op.logs());
    let logs = op.logs();
    let starts = logs.matches("certificate manager starting").count();
    assert!(starts <= 1, "the certificate manager started {starts} times\n{logs}");
}

/// Item 10: a Secret created before the profile that names it, whose event comes late (the
/// Secrets' watch lags behind the profiles' watch): the profile is accepted, never refused
/// with `SecretNotFound` nor given a Warning Event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_whose_event_comes_after_its_profiles_is_not_reported_missing() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    seed(
        &server,
        vec![
            basic_secret("sb", "bob", "password-b"),
            basic_profile("pb", "sb"),
            route("rb", "b", &["pb"]),
            pod("a-1", "a"),
            pod("b-1", "b"),
        ],
    );
    let op = Operator::start(&dir, "op", &[]);
    routes_of_group(&server, &op, "b", &["rb"]).await;

    server.delay_watch_events("secrets", Duration::from_secs(3)).unwrap();
    let created = Instant::now();
    server.create(&basic_secret("sa", "alice", "password-a")).unwrap();
    server.create(&basic_profile("pa", "sa")).unwrap();
    server.create(&route("ra", "a", &["pa"])).unwrap();
    routes_of_group(&server, &op, "a", &["ra"]).await;
    assert!(
        created.elapsed() < Duration::from_secs(3),
        "served only once the Secret's event came: {:?}",
        created.elapsed()
    );
    let pa = get(&server, PROFILES, "pa").unwrap();
    assert_eq!(condition(&pa, "Accepted").unwrap()["status"], "True", "{pa}");
    // Past the late event too: no rejection was ever published.
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(created.elapsed())).await;
    let events: Vec<Value> = server
        .list("events.events.k8s.io", Some(NS))
        .into_iter()
        .filter(|e| e["reason"] == "SecretNotFound")
        .collect();
    assert!(events.is_empty(), "{events:?}\n{}", op.logs());
    // A Secret that really is missing is still reported (after a read).
    server.create(&basic_profile("pc", "nowhere")).unwrap();
    wait_until(WAIT, "pc refused", &op, || {
        let pc = get(&server, PROFILES, "pc")?;
        (condition(&pc, "Accepted")?["reason"] == "SecretNotFound").then_some(())
    })
    .await;
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.path.ends_with("/secrets/nowhere")),
        "a missing Secret is confirmed with a read"
    );
}
