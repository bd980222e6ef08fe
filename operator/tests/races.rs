//! Races and failures of issue 15 (operator items 8–11): the real binary against the
//! in-process fake API server, with late write responses and late watch events (Kubernetes
//! orders events within one watch, not across watches), over 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use common::*;
use portcullis_fake_apiserver::{FakeApiServer, Propagation};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const LEASES: &str = "leases.coordination.k8s.io";
const LEASE_NS: &str = "portcullis-system";
const LEASE: &str = "portcullis-operator";

fn get(server: &FakeApiServer, resource: &str, name: &str) -> Option<Value> {
    server.get(resource, NS, name)
}

fn seed(server: &FakeApiServer, objects: Vec<Value>) {
    for obj in objects {
        server.create(&obj).unwrap();
    }
}

/// Workload `a` as most tests here start: pod `a-1`, route `ra` guarded by the Basic profile
/// `pa` with Secret `sa`, and `more`.
fn workload_a(more: Vec<Value>) -> Vec<Value> {
    let mut objects = vec![
        basic_secret("sa", "alice", "password-a"),
        basic_profile("pa", "sa"),
        route("ra", "a", &["pa"]),
        pod("a-1", "a"),
    ];
    objects.extend(more);
    objects
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
    seed(&server, workload_a(vec![route("ra2", "a", &["pa"])]));
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
    // Ended by the shutdown itself (not merely aborted when the process leaves).
    assert!(logs.contains("certificate manager stopped"), "{logs}");
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

/// Item 11: the leader's renewals hang (the API server takes a minute to answer): it steps
/// down within two thirds of the lease duration instead of reconciling on for minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_renewals_hang_steps_down_within_the_lease_duration() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    seed(&server, workload_a(vec![]));
    // --lease-duration 3, --lease-renew 1.
    let mut op = Operator::start(&dir, "op", &[]);
    wait_until(WAIT, "the operator to lead", &op, || {
        (op.metric("portcullis_operator_leader")? == 1.0).then_some(())
    })
    .await;
    let path = format!("/leases/{LEASE}");
    server.delay_responses("GET", &path, Duration::from_secs(60), 1000);
    server.delay_responses("PUT", &path, Duration::from_secs(60), 1000);
    let stuck = Instant::now();
    let status = op.wait_exit(Duration::from_secs(8));
    assert_eq!(status.code(), Some(1), "{}", op.logs());
    assert!(
        stuck.elapsed() < Duration::from_secs(5),
        "stepped down after {:?}",
        stuck.elapsed()
    );
    assert!(
        op.logs().contains("could not renew the leader Lease in time"),
        "{}",
        op.logs()
    );
}

/// Item 11: a standby judges the holder's expiry by when it saw the Lease change, on its own
/// clock: a live leader whose clock is an hour behind keeps the Lease; once it stops
/// renewing, the standby takes over after the lease duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_judges_expiry_by_its_own_observations_not_the_leaders_clock() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    seed(&server, workload_a(vec![]));
    let behind = || serde_json::to_value(MicroTime(Timestamp::now() - SignedDuration::from_hours(1))).unwrap();
    server
        .create(&json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": LEASE, "namespace": LEASE_NS},
            "spec": {"holderIdentity": "other", "leaseDurationSeconds": 3,
                     "acquireTime": behind(), "renewTime": behind(), "leaseTransitions": 0},
        }))
        .unwrap();
    let op = Operator::start(&dir, "op", &[]);
    wait_until(WAIT, "the standby to be ready", &op, || {
        (op.get("/readyz")?.0 == 200).then_some(())
    })
    .await;
    // The other leader renews every 500 ms with its slow clock, for 3 lease durations.
    for _ in 0..18 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        server
            .merge_patch(LEASES, LEASE_NS, LEASE, &json!({"spec": {"renewTime": behind()}}))
            .unwrap();
        let lease = server.get(LEASES, LEASE_NS, LEASE).unwrap();
        assert_eq!(
            lease["spec"]["holderIdentity"],
            "other",
            "took a live leader's Lease\n{}",
            op.logs()
        );
    }
    assert_eq!(op.metric("portcullis_operator_leader"), Some(0.0));
    // It stops renewing: the standby takes over after the duration (3 s) without a change.
    let stopped = Instant::now();
    wait_until(WAIT, "the standby to lead", &op, || {
        (op.metric("portcullis_operator_leader")? == 1.0).then_some(())
    })
    .await;
    assert!(
        stopped.elapsed() >= Duration::from_secs(2),
        "took over after {:?}",
        stopped.elapsed()
    );
    let lease = server.get(LEASES, LEASE_NS, LEASE).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "op");
    routes_of_group(&server, &op, "a", &["ra"]).await;
}
