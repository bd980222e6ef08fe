//! Unit tests of the rollout counts, the pod table and the poller (a fake [`Probe`], no
//! sockets; the test of `poller::HttpProbe` against a canned listener is in `poller`).

use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use portcullis_api::ApiRouteStatus;

use super::*;
use crate::controller::group::INJECT_LABEL;
use crate::controller::status::{self, DesiredStatus};

fn group(generation: &str, routes: &[&str]) -> GroupPlan {
    GroupPlan {
        pods: 0,
        routes: routes.iter().map(|r| r.to_string()).collect(),
        generation: generation.into(),
        configmap: Default::default(),
        secret: Default::default(),
        network_policy: None,
    }
}

fn report(group: &str, generation: Option<&str>) -> PodReport {
    PodReport {
        group: group.into(),
        generation: generation.map(str::to_owned),
    }
}

fn rollout(generation: Option<&str>, current: i32, total: i32) -> Rollout {
    Rollout {
        config_generation: generation.map(str::to_owned),
        current,
        total,
    }
}

#[test]
fn counts_pods_reporting_their_groups_generation() {
    let groups = BTreeMap::from([
        ("g1".to_owned(), group("gen-a", &["r1", "r2"])),
        ("g2".to_owned(), group("gen-b", &["r2"])),
        ("g3".to_owned(), group("gen-c", &[])),
    ]);
    let pods = [
        report("g1", Some("gen-a")),
        report("g1", Some("gen-old")), // lags
        report("g2", Some("gen-b")),
        report("g2", None),            // not answering
        report("g2", Some("gen-a")),   // another group's generation is not current here
        report("g3", Some("gen-c")),   // serves no route
        report("gone", Some("gen-a")), // a group the plan does not know
    ];
    let out = route_rollouts(&groups, &pods);
    assert_eq!(out["r1"], rollout(Some("gen-a"), 1, 2));
    assert_eq!(out["r2"], rollout(Some("gen-a,gen-b"), 2, 5));
    assert_eq!(out.len(), 2);
    // Every pod current: n of n. No running pod: 0 of 0, generation still named.
    let all = route_rollouts(&groups, &[report("g1", Some("gen-a")), report("g1", Some("gen-a"))]);
    assert_eq!(all["r1"], rollout(Some("gen-a"), 2, 2));
    assert_eq!(all["r2"], rollout(Some("gen-a,gen-b"), 2, 2));
    assert_eq!(route_rollouts(&groups, &[])["r1"], rollout(Some("gen-a"), 0, 0));
}

#[test]
fn fill_sets_every_route_and_unserved_routes_get_zero() {
    let mut plan = Plan {
        groups: BTreeMap::from([("g1".to_owned(), group("gen-a", &["served"]))]),
        routes: BTreeMap::from([
            (
                "served".to_owned(),
                status::route_status(&crate::compile::Verdict::Accepted, Some(1), 1, 1),
            ),
            (
                "rejected".to_owned(),
                status::route_status(&crate::compile::Verdict::Accepted, Some(1), 0, 0),
            ),
        ]),
        profiles: BTreeMap::new(),
    };
    fill(&mut plan, &[report("g1", Some("gen-a"))]);
    assert_eq!(plan.routes["served"].rollout, Some(rollout(Some("gen-a"), 1, 1)));
    assert_eq!(plan.routes["rejected"].rollout, Some(rollout(None, 0, 0)));
}

#[test]
fn status_is_written_only_when_the_numbers_change() {
    let desired = DesiredStatus {
        observed_generation: Some(1),
        conditions: vec![],
        routes: None,
        rollout: Some(rollout(Some("g"), 1, 2)),
    };
    let now = Time(Timestamp::now());
    let body = status::patch(&desired, &[], &now);
    assert_eq!(body["status"]["configGeneration"], "g");
    assert_eq!(body["status"]["sidecarsCurrent"], 1);
    assert_eq!(body["status"]["sidecarsTotal"], 2);
    let written: ApiRouteStatus = serde_json::from_value(body["status"].clone()).unwrap();
    let r = desired.rollout.as_ref().unwrap();
    assert!(r.is_current(&written));
    assert!(!rollout(Some("g"), 2, 2).is_current(&written));
    assert!(!rollout(Some("h"), 1, 2).is_current(&written));
    assert!(!r.is_current(&ApiRouteStatus::default()), "never written");
    // No generation: the field is removed (null in the merge patch) and 0 of 0 is written.
    let mut none = desired.clone();
    none.rollout = Some(Rollout::default());
    let body = status::patch(&none, &[], &now);
    assert!(body["status"]["configGeneration"].is_null());
    assert_eq!(body["status"]["sidecarsTotal"], 0);
    let written: ApiRouteStatus = serde_json::from_value(body["status"].clone()).unwrap();
    assert!(Rollout::default().is_current(&written));
    // A desired status without rollout (before the first poll) leaves the fields alone.
    let mut untouched = desired;
    untouched.rollout = None;
    let body = status::patch(&untouched, &[], &now);
    assert!(!body["status"].as_object().unwrap().contains_key("sidecarsTotal"));
}

fn pod(name: &str, app: &str, phase: &str, ip: Option<&str>, admin: Option<i32>) -> Pod {
    let ports = admin.map(|p| {
        vec![ContainerPort {
            name: Some(PORT_ADMIN.into()),
            container_port: p,
            ..Default::default()
        }]
    });
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            labels: Some(BTreeMap::from([
                ("app".into(), app.into()),
                (INJECT_LABEL.into(), "true".into()),
                ("pod-template-hash".into(), name.into()),
            ])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                ..Default::default()
            }],
            // The injected sidecar is a native sidecar: an init container.
            init_containers: Some(vec![Container {
                name: "portcullis-sidecar".into(),
                ports,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some(phase.into()),
            pod_ip: ip.map(str::to_owned),
            ..Default::default()
        }),
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

/// Answers from a table; counts requests and the most at once.
#[derive(Default)]
struct FakeProbe {
    answers: Mutex<HashMap<SocketAddr, Option<String>>>,
    /// Addresses that never answer.
    hang: Mutex<BTreeSet<SocketAddr>>,
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl FakeProbe {
    fn set(&self, admin: SocketAddr, generation: Option<&str>) {
        self.answers
            .lock()
            .unwrap()
            .insert(admin, generation.map(str::to_owned));
    }
}

impl Probe for FakeProbe {
    async fn generation(&self, admin: SocketAddr) -> Option<String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(10)).await;
        if self.hang.lock().unwrap().contains(&admin) {
            std::future::pending::<()>().await;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.answers.lock().unwrap().get(&admin).cloned().flatten()
    }
}

fn generations(sidecars: &Sidecars) -> Vec<(String, Option<String>)> {
    let mut out: Vec<_> = sidecars
        .reports_in("ns")
        .unwrap()
        .into_iter()
        .map(|r| (r.group, r.generation))
        .collect();
    out.sort();
    out
}

#[test]
fn only_running_pods_with_an_address_are_sidecars() {
    let s = Sidecars::default();
    assert_eq!(
        s.apply(&watcher::Event::Apply(pod("p1", "a", "Pending", None, Some(15090)))),
        Vec::<String>::new()
    );
    assert_eq!(
        s.apply(&watcher::Event::Apply(pod(
            "p1",
            "a",
            "Running",
            Some("10.0.0.1"),
            Some(15090)
        ))),
        ["ns"]
    );
    // The same again: nothing to do.
    assert!(
        s.apply(&watcher::Event::Apply(pod(
            "p1",
            "a",
            "Running",
            Some("10.0.0.1"),
            Some(15090)
        )))
        .is_empty()
    );
    // Running without an admin port: counted (total), never asked.
    s.apply(&watcher::Event::Apply(pod(
        "p2",
        "a",
        "Running",
        Some("10.0.0.2"),
        None,
    )));
    let targets = s.lock().targets.clone();
    assert_eq!(targets[&("ns".into(), "p1".into())].admin, Some(addr(15090)));
    assert_eq!(targets[&("ns".into(), "p2".into())].admin, None);
    assert_eq!(
        targets[&("ns".into(), "p1".into())].group,
        group_name_for_pod(&pod_labels("p1", "a"))
    );
    // Before a first poll there are no counts.
    assert!(s.reports_in("ns").is_none());
    // Terminating or finished: gone.
    let mut terminating = pod("p1", "a", "Running", Some("10.0.0.1"), Some(15090));
    terminating.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    assert_eq!(s.apply(&watcher::Event::Apply(terminating)), ["ns"]);
    assert_eq!(
        s.apply(&watcher::Event::Apply(pod(
            "p2",
            "a",
            "Succeeded",
            Some("10.0.0.2"),
            None
        ))),
        ["ns"]
    );
    assert!(s.lock().targets.is_empty());
}

fn pod_labels(name: &str, app: &str) -> BTreeMap<String, String> {
    pod(name, app, "Running", None, None).metadata.labels.unwrap()
}

#[tokio::test(start_paused = true)]
async fn polls_record_generations_and_report_changed_namespaces() {
    let s = Sidecars::default();
    let probe = FakeProbe::default();
    s.apply(&watcher::Event::Apply(pod(
        "p1",
        "a",
        "Running",
        Some("10.0.0.1"),
        Some(1),
    )));
    s.apply(&watcher::Event::Apply(pod(
        "p2",
        "a",
        "Running",
        Some("10.0.0.1"),
        Some(2),
    )));
    probe.set(addr(1), Some("gen-1"));
    probe.set(addr(2), Some("gen-0"));
    assert_eq!(poll(&s, &probe).await, ["ns"]);
    let g = group_name_for_pod(&pod_labels("p1", "a"));
    assert_eq!(
        generations(&s),
        [(g.clone(), Some("gen-0".into())), (g.clone(), Some("gen-1".into()))]
    );
    // Nothing changed: no work.
    assert!(poll(&s, &probe).await.is_empty());
    // The lagging one catches up.
    probe.set(addr(2), Some("gen-1"));
    assert_eq!(poll(&s, &probe).await, ["ns"]);
    // Not ready (empty generation) or silent: not current.
    probe.set(addr(1), Some(""));
    probe.hang.lock().unwrap().insert(addr(2));
    let started = Instant::now();
    assert_eq!(poll(&s, &probe).await, ["ns"]);
    assert!(
        started.elapsed() >= TIMEOUT && started.elapsed() < TIMEOUT * 2,
        "bounded by the timeout"
    );
    assert_eq!(generations(&s), [(g.clone(), None), (g, None)]);
}

#[tokio::test(start_paused = true)]
async fn reports_are_pruned_when_pods_go_or_move() {
    let s = Sidecars::default();
    let probe = FakeProbe::default();
    for (name, port) in [("p1", 1u16), ("p2", 2), ("p3", 3)] {
        s.apply(&watcher::Event::Apply(pod(
            name,
            "a",
            "Running",
            Some("10.0.0.1"),
            Some(port.into()),
        )));
        probe.set(addr(port), Some("gen"));
    }
    poll(&s, &probe).await;
    assert_eq!(s.reported_len(), 3);
    // Deleted: its report goes.
    s.apply(&watcher::Event::Delete(pod(
        "p1",
        "a",
        "Running",
        Some("10.0.0.1"),
        Some(1),
    )));
    assert_eq!(s.reported_len(), 2);
    // Recreated elsewhere under the same name: the old answer no longer counts.
    s.apply(&watcher::Event::Apply(pod(
        "p2",
        "a",
        "Running",
        Some("10.0.0.9"),
        Some(2),
    )));
    assert_eq!(s.reported_len(), 1);
    // A relist that misses p3 forgets it too.
    s.apply(&watcher::Event::Init);
    s.apply(&watcher::Event::InitApply(pod(
        "p2",
        "a",
        "Running",
        Some("10.0.0.9"),
        Some(2),
    )));
    assert_eq!(s.apply(&watcher::Event::InitDone), ["ns"]);
    assert_eq!(s.reported_len(), 0);
    assert_eq!(s.lock().targets.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn polls_are_concurrency_limited() {
    let s = Sidecars::default();
    let probe = FakeProbe::default();
    for i in 0..50u16 {
        s.apply(&watcher::Event::Apply(pod(
            &format!("p{i}"),
            "a",
            "Running",
            Some("10.0.0.1"),
            Some(i32::from(i) + 1),
        )));
        probe.set(addr(i + 1), Some("gen"));
    }
    poll(&s, &probe).await;
    assert_eq!(probe.calls.load(Ordering::SeqCst), 50);
    assert_eq!(probe.max_in_flight.load(Ordering::SeqCst), CONCURRENCY);
    assert_eq!(s.reports_in("ns").unwrap().len(), 50);
    assert!(s.reports_in("other").unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_written_configuration_makes_polls_fast_for_a_while() {
    let s = Sidecars::default();
    assert_eq!(s.next_wait(), POLL_EVERY);
    s.nudge();
    assert_eq!(s.next_wait(), FAST_POLL_EVERY);
    tokio::time::sleep(FAST_FOR).await;
    assert_eq!(s.next_wait(), POLL_EVERY);
    // The nudge wakes a waiting poller (the permit is kept if none waits yet).
    s.nudge();
    tokio::time::timeout(Duration::from_millis(1), s.nudged.notified())
        .await
        .unwrap();
}
