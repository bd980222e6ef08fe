//! Black-box tests of `portcullis-operator run`: the real binary against the in-process fake
//! API server, over 127.0.0.1, through a kubeconfig.

mod common;

use std::time::Duration;

use common::*;
use portcullis_fake_apiserver::{FakeApiServer, Propagation};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const NETWORK_POLICIES: &str = "networkpolicies.networking.k8s.io";

fn seed(server: &FakeApiServer) {
    for obj in [
        basic_secret("sa", "alice", "password-a"),
        basic_secret("sb", "bob", "password-b"),
        basic_profile("pa", "sa"),
        basic_profile("pb", "sb"),
        route("ra", "a", &["pa"]),
        route("ra2", "a", &["pa"]),
        route("rb", "b", &["pb"]),
        pod("a-1", "a"),
        pod("a-2", "a"),
        pod("b-1", "b"),
    ] {
        server.create(&obj).unwrap();
    }
}

fn get(server: &FakeApiServer, resource: &str, name: &str) -> Option<Value> {
    server.get(resource, NS, name)
}

/// The states of everything the operator writes (resourceVersions), to detect churn.
fn written_versions(server: &FakeApiServer) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for resource in ["configmaps", "secrets", NETWORK_POLICIES, ROUTES, PROFILES] {
        for obj in server.list(resource, Some(NS)) {
            out.push((
                format!("{resource}/{}", obj["metadata"]["name"].as_str().unwrap()),
                rv(&obj),
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciles_routes_and_profiles_into_configmaps_and_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    seed(&server);
    let mut op = Operator::start(&dir, "op-1", &[]);
    let (ga, gb) = (group_of("a"), group_of("b"));

    // 1. Each group gets a ConfigMap and a Secret with its routes, and only its credentials.
    let cm_a = wait_until(WAIT, "group a's ConfigMap", &op, || get(&server, "configmaps", &ga)).await;
    let cfg_a = config_of(&cm_a);
    assert_eq!(route_names(&cfg_a), ["ra", "ra2"]);
    assert!(!cm_a["data"]["config.json"].as_str().unwrap().contains("password"));
    let labels = &cm_a["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/managed-by"], "portcullis");
    assert_eq!(labels["portcullis.dev/config-group"], ga.as_str());
    let owners: Vec<&str> = cm_a["metadata"]["ownerReferences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(owners, ["ra", "ra2"]);
    let ra = get(&server, ROUTES, "ra").unwrap();
    assert_eq!(cm_a["metadata"]["ownerReferences"][0]["uid"], ra["metadata"]["uid"]);
    let applies: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with(&format!("/configmaps/{ga}")))
        .collect();
    assert!(!applies.is_empty());
    for r in &applies {
        assert!(r.query.contains("fieldManager=portcullis-operator"), "{r:?}");
        assert!(r.query.contains("force=true"), "{r:?}");
    }
    let secret_a = wait_until(WAIT, "group a's Secret", &op, || get(&server, "secrets", &ga)).await;
    let material_a = secrets_of(&secret_a);
    assert!(material_a.contains("password-a") && !material_a.contains("password-b"));
    let secret_b = wait_until(WAIT, "group b's Secret", &op, || get(&server, "secrets", &gb)).await;
    assert!(secrets_of(&secret_b).contains("password-b") && !secrets_of(&secret_b).contains("password-a"));
    assert_eq!(
        cm_a["metadata"]["annotations"]["portcullis.dev/generation"], cfg_a["generation"],
        "the annotation names the configuration generation"
    );

    // 2. Status: observedGeneration, Accepted and Ready, the profile's route list.
    let ra = wait_until(WAIT, "ra Ready", &op, || {
        let ra = get(&server, ROUTES, "ra")?;
        (condition(&ra, "Ready")?["status"] == "True").then_some(ra)
    })
    .await;
    assert_eq!(ra["status"]["observedGeneration"], ra["metadata"]["generation"]);
    assert_eq!(condition(&ra, "Accepted").unwrap()["status"], "True");
    let pa = wait_until(WAIT, "pa's route list", &op, || {
        let pa = get(&server, PROFILES, "pa")?;
        pa["status"]["routes"].is_array().then_some(pa)
    })
    .await;
    assert_eq!(pa["status"]["routes"], json!(["ra", "ra2"]));
    assert_eq!(condition(&pa, "Ready").unwrap()["status"], "True");

    // 3. A changed referenced Secret changes the output, within 2 seconds.
    let changed = std::time::Instant::now();
    server
        .merge_patch("secrets", NS, "sa", &json!({"data": {"password": b64("rotated-a")}}))
        .unwrap();
    wait_until(WAIT, "the rotated password in group a's Secret", &op, || {
        secrets_of(&get(&server, "secrets", &ga)?)
            .contains("rotated-a")
            .then_some(())
    })
    .await;
    assert!(
        changed.elapsed() < Duration::from_secs(2),
        "took {:?}",
        changed.elapsed()
    );
    let cm_a2 = wait_until(WAIT, "a new generation on group a's ConfigMap", &op, || {
        let cm = get(&server, "configmaps", &ga)?;
        (config_of(&cm)["generation"] != cfg_a["generation"]).then_some(cm)
    })
    .await;
    assert_eq!(route_names(&config_of(&cm_a2)), ["ra", "ra2"]);
    assert!(!secrets_of(&get(&server, "secrets", &ga).unwrap()).contains("password-a"));

    // 4. An invalid route: Accepted=False with the reason and the field; an Event; the other
    //    routes keep their configuration.
    let cm_b_before = get(&server, "configmaps", &gb).unwrap();
    server
        .merge_patch(ROUTES, NS, "ra2", &json!({"spec": {"profiles": [{"name": "missing"}]}}))
        .unwrap();
    let ra2 = wait_until(WAIT, "ra2 Accepted=False", &op, || {
        let r = get(&server, ROUTES, "ra2")?;
        (condition(&r, "Accepted")?["status"] == "False").then_some(r)
    })
    .await;
    let accepted = condition(&ra2, "Accepted").unwrap();
    assert_eq!(accepted["reason"], "ProfileNotFound");
    assert!(
        accepted["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.profiles[0].name"),
        "{accepted}"
    );
    assert_eq!(ra2["status"]["observedGeneration"], ra2["metadata"]["generation"]);
    assert_eq!(condition(&ra2, "Ready").unwrap()["status"], "False");
    wait_until(WAIT, "group a without ra2", &op, || {
        let cm = get(&server, "configmaps", &ga)?;
        (route_names(&config_of(&cm)) == ["ra"]).then_some(())
    })
    .await;
    wait_until(WAIT, "a Warning Event for ra2", &op, || {
        server
            .list("events.events.k8s.io", Some(NS))
            .into_iter()
            .find(|e| e["regarding"]["name"] == "ra2" && e["reason"] == "ProfileNotFound" && e["type"] == "Warning")
    })
    .await;
    let ra = get(&server, ROUTES, "ra").unwrap();
    assert_eq!(condition(&ra, "Accepted").unwrap()["status"], "True");
    assert_eq!(
        rv(&get(&server, "configmaps", &gb).unwrap()),
        rv(&cm_b_before),
        "group b untouched"
    );

    // 5. Deleting the route of a group deletes its objects (owner references); while the
    //    group's pods remain, the operator writes them back without the route, and once the
    //    pods are gone too, the objects go for good.
    server.delete(ROUTES, NS, "rb", Propagation::Delete).unwrap();
    assert!(get(&server, "configmaps", &gb).is_none() && get(&server, "secrets", &gb).is_none());
    let cm_b = wait_until(WAIT, "group b's empty configuration", &op, || {
        get(&server, "configmaps", &gb)
    })
    .await;
    assert!(route_names(&config_of(&cm_b)).is_empty());
    assert!(cm_b["metadata"]["ownerReferences"].is_null());
    let secret_b = wait_until(WAIT, "group b's Secret", &op, || get(&server, "secrets", &gb)).await;
    assert!(!secrets_of(&secret_b).contains("password-b"));
    wait_until(WAIT, "pb's route list emptied", &op, || {
        let pb = get(&server, PROFILES, "pb")?;
        pb["status"]["routes"].is_null().then_some(())
    })
    .await;
    server.delete("pods", NS, "b-1", Propagation::Delete).unwrap();
    wait_until(WAIT, "group b's objects gone", &op, || {
        (get(&server, "configmaps", &gb).is_none() && get(&server, "secrets", &gb).is_none()).then_some(())
    })
    .await;

    // 6. Admin port.
    assert_eq!(op.get("/healthz").unwrap().0, 200);
    assert_eq!(op.get("/readyz").unwrap().0, 200);
    assert!(
        op.metric("portcullis_operator_reconciles_total{result=\"ok\"}")
            .unwrap()
            >= 1.0
    );
    assert_eq!(op.metric("portcullis_operator_leader").unwrap(), 1.0);
    assert!(
        op.metric("portcullis_operator_reconcile_duration_seconds_count")
            .unwrap()
            >= 1.0
    );
    assert!(op.metric("portcullis_operator_reconcile_errors_total").is_some());

    // Every request so far is allowed by rbac.yaml.
    assert_rbac_allows(&server.requests());

    // 7. A restart changes nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = written_versions(&server);
    let status = op.terminate();
    assert!(status.success(), "graceful shutdown exits 0: {status:?}\n{}", op.logs());
    assert!(op.logs().contains("released the leader Lease"), "{}", op.logs());
    let op2 = Operator::start(&dir, "op-2", &[]);
    wait_until(WAIT, "the new operator to reconcile", &op2, || {
        let ok = op2.metric("portcullis_operator_reconciles_total{result=\"ok\"}")?;
        (ok >= 1.0 && op2.get("/readyz")?.0 == 200).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(written_versions(&server), before, "no churn after a restart");
    assert_eq!(
        op2.metric("portcullis_operator_writes_total{kind=\"ConfigMap\",op=\"apply\"}"),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_a_standby_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    seed(&server);
    let mut first = Operator::start(&dir, "first", &[]);
    let ga = group_of("a");
    wait_until(WAIT, "the first replica to lead", &first, || {
        (first.metric("portcullis_operator_leader")? == 1.0).then_some(())
    })
    .await;
    wait_until(WAIT, "group a's ConfigMap", &first, || get(&server, "configmaps", &ga)).await;
    let second = Operator::start(&dir, "second", &[]);
    wait_until(WAIT, "the standby to be ready", &second, || {
        (second.get("/readyz")?.0 == 200).then_some(())
    })
    .await;
    assert_eq!(second.metric("portcullis_operator_leader"), Some(0.0));
    assert!(second.logs().contains("standing by"), "{}", second.logs());
    let lease = server
        .get("leases.coordination.k8s.io", "portcullis-system", "portcullis-operator")
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "first");

    // The leader dies without releasing; the standby takes over after the lease expires.
    first.terminate_hard();
    wait_until(WAIT, "the standby to lead", &second, || {
        (second.metric("portcullis_operator_leader")? == 1.0).then_some(())
    })
    .await;
    server
        .merge_patch(
            "secrets",
            NS,
            "sa",
            &json!({"data": {"password": b64("after-failover")}}),
        )
        .unwrap();
    wait_until(WAIT, "the new leader to apply a change", &second, || {
        secrets_of(&get(&server, "secrets", &ga)?)
            .contains("after-failover")
            .then_some(())
    })
    .await;
    let lease = server
        .get("leases.coordination.k8s.io", "portcullis-system", "portcullis-operator")
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "second");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    assert_rbac_allows(&server.requests());

    // Another holder appears (say, after a network partition): the operator stops at once.
    let mut second = second;
    server
        .merge_patch(
            "leases.coordination.k8s.io",
            "portcullis-system",
            "portcullis-operator",
            &json!({"spec": {"holderIdentity": "intruder", "renewTime": lease_now(), "leaseDurationSeconds": 60}}),
        )
        .unwrap();
    let status = second.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "{}", second.logs());
    assert!(
        second.logs().contains("another replica took the leader Lease"),
        "{}",
        second.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_made_valid_again_and_a_missing_secret_created_later_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    for obj in [basic_profile("pa", "sa"), route("ra", "a", &["pa"]), pod("a-1", "a")] {
        server.create(&obj).unwrap();
    }
    let op = Operator::start(&dir, "op", &[]);
    let ga = group_of("a");
    let ra = wait_until(WAIT, "ra rejected for its profile", &op, || {
        let r = get(&server, ROUTES, "ra")?;
        (condition(&r, "Accepted")?["reason"] == "ProfileInvalid").then_some(r)
    })
    .await;
    assert!(
        condition(&ra, "Accepted").unwrap()["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.profiles[0]")
    );
    // Statuses are written concurrently: pa's may land after ra's.
    wait_until(WAIT, "pa refused for its Secret", &op, || {
        let pa = get(&server, PROFILES, "pa")?;
        (condition(&pa, "Accepted")?["reason"] == "SecretNotFound").then_some(())
    })
    .await;
    let event = wait_until(WAIT, "a Warning Event for pa", &op, || {
        server
            .list("events.events.k8s.io", Some(NS))
            .into_iter()
            .find(|e| e["regarding"]["kind"] == "SecurityProfile" && e["regarding"]["name"] == "pa")
    })
    .await;
    assert_eq!(event["reason"], "SecretNotFound");
    assert!(
        event["note"].as_str().unwrap().starts_with("spec.basic.secretRef"),
        "{event}"
    );
    // The group exists (a route selects it) with nothing to serve.
    let cm = wait_until(WAIT, "group a's ConfigMap", &op, || get(&server, "configmaps", &ga)).await;
    assert!(route_names(&config_of(&cm)).is_empty());

    server.create(&basic_secret("sa", "alice", "late")).unwrap();
    wait_until(WAIT, "ra served once its Secret exists", &op, || {
        let cm = get(&server, "configmaps", &ga)?;
        (route_names(&config_of(&cm)) == ["ra"]).then_some(())
    })
    .await;
    let ra = wait_until(WAIT, "ra accepted", &op, || {
        let r = get(&server, ROUTES, "ra")?;
        (condition(&r, "Ready")?["status"] == "True").then_some(r)
    })
    .await;
    assert_eq!(condition(&ra, "Accepted").unwrap()["status"], "True");
    assert!(secrets_of(&get(&server, "secrets", &ga).unwrap()).contains("late"));

    // The API server forgets its history and ends every watch (as on a restart): the
    // operator relists, writes nothing that is current, and still follows changes.
    let versions = |server: &FakeApiServer| {
        ["configmaps", "secrets", ROUTES, PROFILES]
            .iter()
            .flat_map(|r| server.list(r, Some(NS)))
            .map(|o| (o["metadata"]["name"].as_str().unwrap().to_owned(), rv(&o)))
            .collect::<Vec<_>>()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = versions(&server);
    server.compact();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(versions(&server), before, "a relist causes no writes");
    server
        .merge_patch(
            "secrets",
            NS,
            "sa",
            &json!({"data": {"password": b64("after-compaction")}}),
        )
        .unwrap();
    wait_until(WAIT, "a change after the relist", &op, || {
        secrets_of(&get(&server, "secrets", &ga)?)
            .contains("after-compaction")
            .then_some(())
    })
    .await;

    // A new pod of another workload that no route selects gets an empty configuration.
    server.create(&pod("c-1", "c")).unwrap();
    let cm_c = wait_until(WAIT, "group c's ConfigMap", &op, || {
        get(&server, "configmaps", &group_of("c"))
    })
    .await;
    assert!(route_names(&config_of(&cm_c)).is_empty());
    wait_until(WAIT, "group c's Secret", &op, || {
        get(&server, "secrets", &group_of("c"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_writes_back_off_and_retry_without_holding_up_other_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    let in_ns = |mut obj: Value, ns: &str| {
        obj["metadata"]["namespace"] = json!(ns);
        obj
    };
    for ns in [NS, "other"] {
        for obj in [
            basic_secret("sa", "alice", "pw"),
            basic_profile("pa", "sa"),
            route("ra", "a", &["pa"]),
            pod("a-1", "a"),
        ] {
            server.create(&in_ns(obj, ns)).unwrap();
        }
    }
    let ga = group_of("a");
    let failing = format!("/namespaces/{NS}/configmaps/{ga}");
    server.fail_requests("PATCH", &failing, 500, 3);
    let started = std::time::Instant::now();
    let op = Operator::start(&dir, "op", &[]);

    // The other namespace is served at once.
    wait_until(WAIT, "the other namespace's ConfigMap", &op, || {
        server.get("configmaps", "other", &ga)
    })
    .await;
    // The failing one says so in the route's status, then recovers after backoffs.
    let ra = wait_until(WAIT, "ra Ready=False ApplyFailed", &op, || {
        let r = get(&server, ROUTES, "ra")?;
        (condition(&r, "Ready")?["reason"] == "ApplyFailed").then_some(r)
    })
    .await;
    let ready = condition(&ra, "Ready").unwrap();
    assert!(ready["message"].as_str().unwrap().contains(&ga), "{ready}");
    assert_eq!(condition(&ra, "Accepted").unwrap()["status"], "True");
    wait_until(WAIT, "ra Ready after retries", &op, || {
        let r = get(&server, ROUTES, "ra")?;
        (condition(&r, "Ready")?["status"] == "True").then_some(())
    })
    .await;
    assert!(get(&server, "configmaps", &ga).is_some());
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retries wait: {:?}",
        started.elapsed()
    );
    let attempts = server
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.contains(&failing))
        .count();
    assert_eq!(attempts, 4, "three failures, then one success");
    assert_eq!(op.metric("portcullis_operator_reconcile_errors_total"), Some(3.0));
    assert!(
        op.metric("portcullis_operator_reconciles_total{result=\"error\"}")
            .unwrap()
            >= 3.0,
        "{}",
        op.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_group_gets_a_network_policy_that_goes_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    seed(&server);
    let op = Operator::start(&dir, "op", &[]);
    let (ga, gb) = (group_of("a"), group_of("b"));

    // Only the sidecar's named ports, on the group's pods, owned like the group's objects.
    let np = wait_until(WAIT, "group a's NetworkPolicy", &op, || {
        get(&server, NETWORK_POLICIES, &ga)
    })
    .await;
    let spec = &np["spec"];
    assert_eq!(
        spec["podSelector"],
        json!({"matchLabels": {"app": "a", INJECT: "true"}})
    );
    assert_eq!(spec["policyTypes"], json!(["Ingress"]));
    assert_eq!(
        spec["ingress"],
        json!([{"ports": [
            {"port": "portcullis-http", "protocol": "TCP"},
            {"port": "portcullis-tls", "protocol": "TCP"},
            {"port": "portcullis-adm", "protocol": "TCP"}
        ]}])
    );
    assert_eq!(np["metadata"]["labels"]["app.kubernetes.io/managed-by"], "portcullis");
    assert_eq!(np["metadata"]["labels"]["portcullis.dev/config-group"], ga.as_str());
    let cm = wait_until(WAIT, "group a's ConfigMap", &op, || get(&server, "configmaps", &ga)).await;
    assert_eq!(np["metadata"]["ownerReferences"], cm["metadata"]["ownerReferences"]);
    wait_until(WAIT, "group b's NetworkPolicy", &op, || {
        get(&server, NETWORK_POLICIES, &gb)
    })
    .await;

    // Deleting the group's route deletes it (garbage collection); the operator writes it back
    // while the pods remain, and deletes it once they are gone.
    server.delete(ROUTES, NS, "rb", Propagation::Delete).unwrap();
    assert!(get(&server, NETWORK_POLICIES, &gb).is_none());
    let np_b = wait_until(WAIT, "group b's NetworkPolicy again", &op, || {
        get(&server, NETWORK_POLICIES, &gb)
    })
    .await;
    assert!(np_b["metadata"]["ownerReferences"].is_null());
    server.delete("pods", NS, "b-1", Propagation::Delete).unwrap();
    wait_until(WAIT, "group b's NetworkPolicy gone", &op, || {
        get(&server, NETWORK_POLICIES, &gb).is_none().then_some(())
    })
    .await;
    // A NetworkPolicy changed by hand is put back.
    server
        .merge_patch(NETWORK_POLICIES, NS, &ga, &json!({"spec": {"ingress": [{}]}}))
        .unwrap();
    wait_until(WAIT, "group a's NetworkPolicy restored", &op, || {
        let np = get(&server, NETWORK_POLICIES, &ga)?;
        (np["spec"]["ingress"][0]["ports"].as_array()?.len() == 3).then_some(())
    })
    .await;
    assert_rbac_allows(&server.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_network_policies_none_is_read_or_written() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    seed(&server);
    let op = Operator::start(&dir, "op", &["--network-policy=false"]);
    wait_until(WAIT, "group a's ConfigMap", &op, || {
        get(&server, "configmaps", &group_of("a"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.list(NETWORK_POLICIES, None).is_empty());
    assert!(
        !server.requests().iter().any(|r| r.path.contains("networkpolicies")),
        "no access to NetworkPolicies is needed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_credentials_need_the_secrets_consent_and_unreferenced_secrets_stay_unread() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    seed(&server);
    // Another team's Secret, and a route that would send it to its own server.
    server
        .create(&basic_secret("payroll-db", "payroll", "payroll-password"))
        .unwrap();
    server
        .create(&basic_secret("unrelated", "nobody", "unrelated-password"))
        .unwrap();
    let mut exfiltrate = route("exfiltrate", "a", &[]);
    exfiltrate["spec"]["backend"] = json!({"origin": {"url": "https://attacker.example.net",
        "auth": {"basic": {"secretRef": {"name": "payroll-db"}}}}});
    server.create(&exfiltrate).unwrap();
    let op = Operator::start(&dir, "op", &[]);
    let ga = group_of("a");

    let r = wait_until(WAIT, "exfiltrate Accepted=False", &op, || {
        let r = get(&server, ROUTES, "exfiltrate")?;
        (condition(&r, "Accepted")?["status"] == "False").then_some(r)
    })
    .await;
    let accepted = condition(&r, "Accepted").unwrap();
    assert_eq!(accepted["reason"], "SecretNotAllowed");
    let message = accepted["message"].as_str().unwrap();
    assert!(
        message.starts_with("spec.backend.origin.auth.basic.secretRef.name: Secret \"payroll-db\""),
        "{message}"
    );
    assert!(message.contains("portcullis.dev/allowed-routes"), "{message}");
    // The group is served without it, and no group Secret holds the password.
    let cm = wait_until(WAIT, "group a's ConfigMap", &op, || {
        let cm = get(&server, "configmaps", &ga)?;
        (route_names(&config_of(&cm)) == ["ra", "ra2"]).then_some(cm)
    })
    .await;
    assert!(!cm["data"]["config.json"].as_str().unwrap().contains("attacker"));
    wait_until(WAIT, "group Secrets", &op, || get(&server, "secrets", &group_of("b"))).await;
    for s in server.list("secrets", Some(NS)) {
        if s["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "portcullis" {
            assert!(
                !secrets_of(&s).contains("payroll-password"),
                "{}",
                s["metadata"]["name"]
            );
        }
    }
    assert!(!op.logs().contains("payroll-password"));

    // The Secret's owner consents, for this route and this origin: the route is served.
    server
        .merge_patch(
            "secrets",
            NS,
            "payroll-db",
            &json!({"metadata": {"annotations": {"portcullis.dev/allowed-routes": "exfiltrate",
                                                 "portcullis.dev/allowed-origins": "attacker.example.net"}}}),
        )
        .unwrap();
    wait_until(WAIT, "exfiltrate served once the Secret allows it", &op, || {
        let cm = get(&server, "configmaps", &ga)?;
        (route_names(&config_of(&cm)) == ["exfiltrate", "ra", "ra2"]).then_some(())
    })
    .await;
    assert!(secrets_of(&get(&server, "secrets", &ga).unwrap()).contains("payroll-password"));

    // What the operator read of Secrets: every Secret by metadata only, its own whole (by
    // label), and the referenced ones by name — never the unrelated Secret's content.
    for r in server.requests() {
        if r.method != "GET" || !r.path.contains("/secrets") {
            continue;
        }
        let collection = r.path.ends_with("/secrets");
        let own = r
            .query
            .contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dportcullis")
            || r.query.contains("labelSelector=portcullis.dev%2Fcertificate");
        if collection {
            assert!(r.metadata_only() || own, "a list or watch of Secret content: {r:?}");
        } else {
            assert!(!r.path.ends_with("/unrelated") || r.metadata_only(), "read {r:?}");
        }
    }
    assert_rbac_allows(&server.requests());
}

/// Issue 15, item 12: two workloads whose group names collide (32 bits of SHA-256) are not
/// merged: the shared objects carry no route and no credential, both routes say why, and
/// once one workload goes the other is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_whose_group_names_collide_are_refused_not_merged() {
    // `app=w91044` and `app=w147913` (with the inject label) hash to the same group name.
    let (x, y) = ("w91044", "w147913");
    assert_eq!(group_of(x), group_of(y), "the test needs colliding names");
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    for obj in [
        basic_secret("sa", "alice", "password-a"),
        basic_secret("sb", "bob", "password-b"),
        basic_profile("pa", "sa"),
        basic_profile("pb", "sb"),
        route("rx", x, &["pa"]),
        route("ry", y, &["pb"]),
        pod("x-1", x),
        pod("y-1", y),
    ] {
        server.create(&obj).unwrap();
    }
    let op = Operator::start(&dir, "op", &[]);
    let group = group_of(x);
    for name in ["rx", "ry"] {
        let r = wait_until(WAIT, &format!("{name} not Ready for the collision"), &op, || {
            let r = get(&server, ROUTES, name)?;
            (condition(&r, "Ready")?["reason"] == "GroupCollision").then_some(r)
        })
        .await;
        let message = condition(&r, "Ready").unwrap()["message"].as_str().unwrap().to_owned();
        assert!(
            message.contains(&format!("app={x}")) && message.contains(&format!("app={y}")),
            "{message}"
        );
        assert_eq!(condition(&r, "Accepted").unwrap()["status"], "True");
    }
    let cm = wait_until(WAIT, "the shared ConfigMap", &op, || get(&server, "configmaps", &group)).await;
    assert!(route_names(&config_of(&cm)).is_empty());
    assert!(
        cm["metadata"]["annotations"]["portcullis.dev/group-collision"]
            .as_str()
            .is_some_and(|sets| sets.contains(x) && sets.contains(y)),
        "{cm}"
    );
    let secret = wait_until(WAIT, "the shared Secret", &op, || get(&server, "secrets", &group)).await;
    let material = secrets_of(&secret);
    assert!(
        !material.contains("password-a") && !material.contains("password-b"),
        "{material}"
    );

    // One workload goes: the other is served again.
    server.delete("pods", NS, "y-1", Propagation::Delete).unwrap();
    wait_until(WAIT, "rx served", &op, || {
        let cm = get(&server, "configmaps", &group)?;
        (route_names(&config_of(&cm)) == ["rx"]).then_some(())
    })
    .await;
    wait_until(WAIT, "rx Ready", &op, || {
        (condition(&get(&server, ROUTES, "rx")?, "Ready")?["status"] == "True").then_some(())
    })
    .await;
    assert!(secrets_of(&get(&server, "secrets", &group).unwrap()).contains("password-a"));
}

/// A profile with sign-in: the operator makes its session-key Secret (labelled, one key
/// `key-<unix seconds>` of 32 random bytes), the sidecar's Secret carries the key and the
/// client secret, and the ConfigMap neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_profile_gets_a_session_key_secret_made_by_the_operator() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    let client_secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "google-oauth", "namespace": NS,
                     "annotations": {"portcullis.dev/allowed-profiles": "staff"}},
        "data": {"clientSecret": b64("GOCSPX-test")},
    });
    let profile = json!({
        "apiVersion": "portcullis.dev/v1alpha1", "kind": "SecurityProfile",
        "metadata": {"name": "staff", "namespace": NS},
        "spec": {"type": "OAuth2", "oauth2": {"provider": "Google", "login": {
            "clientId": "1234.apps.googleusercontent.com", "clientSecretRef": {"name": "google-oauth"},
            "redirectPath": "/oauth2/callback", "logoutPath": "/oauth2/logout",
            "scopes": ["openid", "email"], "sessionMaxSeconds": 28800}}},
    });
    for obj in [client_secret, profile, route("ra", "a", &["staff"]), pod("a-1", "a")] {
        server.create(&obj).unwrap();
    }
    let op = Operator::start(&dir, "op", &[]);
    let keys = wait_until(WAIT, "the session-key Secret", &op, || {
        get(&server, "secrets", "staff-portcullis-session")
    })
    .await;
    assert_eq!(keys["metadata"]["labels"]["portcullis.dev/session-keys-for"], "staff");
    let data = keys["data"].as_object().unwrap();
    assert_eq!(data.len(), 1);
    let (name, value) = data.iter().next().unwrap();
    assert!(name.starts_with("key-"), "{name}");
    let key_text = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(&key_text)
            .unwrap()
            .len(),
        32
    );
    let ga = group_of("a");
    wait_until(WAIT, "ra served with sign-in", &op, || {
        let cm = get(&server, "configmaps", &ga)?;
        (route_names(&config_of(&cm)) == ["ra"]).then_some(())
    })
    .await;
    let secrets = secrets_of(&get(&server, "secrets", &ga).unwrap());
    assert!(secrets.contains(&key_text) && secrets.contains("GOCSPX-test"));
    let cm = get(&server, "configmaps", &ga).unwrap().to_string();
    assert!(!cm.contains(&key_text) && !cm.contains("GOCSPX-test"));
    assert!(cm.contains("https://accounts.google.com/.well-known/openid-configuration"));
}

/// A Builtin provider: the operator makes its token-key Secret (labelled, one EC P-256 key in
/// PKCS#8 PEM), the sidecar's Secret carries it, the ConfigMap does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_builtin_provider_gets_a_token_key_secret_made_by_the_operator() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    let clients = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "oauth-clients", "namespace": NS},
        "data": {"app-1": b64("client-secret-1")},
    });
    let profile = json!({
        "apiVersion": "portcullis.dev/v1alpha1", "kind": "SecurityProfile",
        "metadata": {"name": "idp", "namespace": NS},
        "spec": {"type": "OAuth2", "oauth2": {"provider": "Builtin",
            "builtin": {"clientsSecretRef": {"name": "oauth-clients"}, "tokenTtlSeconds": 600}}},
    });
    for obj in [clients, profile, route("ra", "a", &["idp"]), pod("a-1", "a")] {
        server.create(&obj).unwrap();
    }
    let op = Operator::start(&dir, "op", &[]);
    let keys = wait_until(WAIT, "the token-key Secret", &op, || {
        get(&server, "secrets", "idp-portcullis-token-keys")
    })
    .await;
    assert_eq!(keys["metadata"]["labels"]["portcullis.dev/token-keys-for"], "idp");
    let data = keys["data"].as_object().unwrap();
    assert_eq!(data.len(), 1);
    let (name, value) = data.iter().next().unwrap();
    assert!(name.starts_with("key-"), "{name}");
    let pem = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    let ga = group_of("a");
    wait_until(WAIT, "ra served by the Builtin provider", &op, || {
        let cm = get(&server, "configmaps", &ga)?;
        (route_names(&config_of(&cm)) == ["ra"]).then_some(())
    })
    .await;
    let body = pem.lines().nth(1).unwrap().to_owned();
    let secrets = secrets_of(&get(&server, "secrets", &ga).unwrap());
    assert!(secrets.contains(&body), "the sidecar's Secret carries the key");
    let cm = get(&server, "configmaps", &ga).unwrap().to_string();
    assert!(!cm.contains(&body) && !cm.contains("PRIVATE KEY"));
}
