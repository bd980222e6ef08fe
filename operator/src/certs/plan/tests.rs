//! Unit tests of the certificate plan, with a fixed clock.

use portcullis_api::ApiRouteStatus;

use super::*;

const NOW: i64 = 1_800_000_000;
const OP_NS: &str = "portcullis-system";
const LIFE: Lifetimes = Lifetimes {
    ca: 90 * DAY,
    leaf: 9 * DAY,
};

fn route(ns: &str, name: &str, spec: serde_json::Value) -> ApiRoute {
    let mut r: ApiRoute = serde_json::from_value(serde_json::json!({
        "apiVersion": "portcullis.dev/v1alpha1", "kind": "ApiRoute",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}")},
        "spec": spec,
    }))
    .unwrap();
    r.status = None;
    r
}

fn serving(ns: &str, name: &str, hosts: &[&str]) -> ApiRoute {
    route(
        ns,
        name,
        serde_json::json!({"workloadSelector": {}, "hosts": hosts, "tls": {"issue": true}, "backend": {"port": 8080}}),
    )
}

fn client(ns: &str, name: &str) -> ApiRoute {
    route(
        ns,
        name,
        serde_json::json!({"workloadSelector": {}, "backend": {"origin": {"url": "https://o.example.com",
            "tls": {"mode": "Mutual", "clientCertificate": {"issue": true}}}}}),
    )
}

/// The cluster as the manager sees it; `apply` writes a plan into it.
#[derive(Default)]
struct World {
    ca_secret: Option<Secret>,
    secrets: BTreeMap<(String, String), Secret>,
    bundles: BTreeMap<String, String>,
    routes: Vec<ApiRoute>,
    always: bool,
}

impl World {
    fn plan(&self, now: i64) -> Plan {
        let ca = self.ca_secret.as_ref().map(|s| CaState::from_secret(s, now).unwrap());
        let issued: Vec<IssuedSecret> = self.secrets.values().map(IssuedSecret::from_secret).collect();
        plan(&Inputs {
            now,
            namespace: OP_NS,
            ca: ca.as_ref(),
            routes: &self.routes,
            issued: &issued,
            bundles: &self.bundles,
            lifetimes: LIFE,
            always: self.always,
        })
    }

    fn apply(&mut self, plan: &Plan) {
        if let Some(s) = &plan.ca_secret {
            self.ca_secret = Some(s.clone());
        }
        for s in &plan.secrets {
            let key = (s.metadata.namespace.clone().unwrap(), s.metadata.name.clone().unwrap());
            self.secrets.insert(key, s.clone());
        }
        for key in &plan.delete_secrets {
            self.secrets.remove(key);
        }
        for cm in &plan.configmaps {
            let ns = cm.metadata.namespace.clone().unwrap();
            self.bundles.insert(ns, cm.data.as_ref().unwrap()[BUNDLE_KEY].clone());
        }
        for ns in &plan.delete_configmaps {
            self.bundles.remove(ns);
        }
        for st in &plan.statuses {
            let r = self
                .routes
                .iter_mut()
                .find(|r| {
                    r.metadata.name.as_deref() == Some(st.route.as_str())
                        && r.metadata.namespace.as_deref() == Some(st.namespace.as_str())
                })
                .unwrap();
            r.status.get_or_insert_with(ApiRouteStatus::default).certificates = st.certificates.clone();
        }
    }

    /// Plans and applies; returns the plan.
    fn step(&mut self, now: i64) -> Plan {
        let p = self.plan(now);
        self.apply(&p);
        p
    }

    fn leaf(&self, ns: &str, name: &str) -> IssuedSecret {
        IssuedSecret::from_secret(&self.secrets[&(ns.to_owned(), name.to_owned())])
    }

    fn ca(&self, now: i64) -> CaState {
        CaState::from_secret(self.ca_secret.as_ref().unwrap(), now).unwrap()
    }
}

fn writes(p: &Plan) -> usize {
    p.ca_secret.iter().count()
        + p.secrets.len()
        + p.delete_secrets.len()
        + p.configmaps.len()
        + p.delete_configmaps.len()
        + p.statuses.len()
}

fn text(s: &Secret, key: &str) -> String {
    String::from_utf8(s.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

#[test]
fn no_ca_until_something_needs_one() {
    let mut w = World::default();
    w.routes.push(route(
        "prod",
        "plain",
        serde_json::json!({"workloadSelector": {}, "backend": {"port": 8080}}),
    ));
    let p = w.step(NOW);
    assert!(p.ca.is_none() && writes(&p) == 0, "{p:?}");
    // The webhooks need one.
    w.always = true;
    let p = w.step(NOW);
    assert_eq!(p.ca_why, Some("created"));
    let bundles: Vec<&str> = p
        .configmaps
        .iter()
        .map(|c| c.metadata.namespace.as_deref().unwrap())
        .collect();
    assert_eq!(bundles, [OP_NS, "prod"]);
}

#[test]
fn a_serving_certificate_for_the_hosts_with_chain_owner_status_and_bundles() {
    let mut w = World::default();
    w.routes
        .push(serving("prod", "api", &["api.example.com", "*.api.example.com"]));
    let p = w.step(NOW);
    assert_eq!(p.ca_why, Some("created"));
    let ca_secret = p.ca_secret.as_ref().unwrap();
    assert_eq!(ca_secret.metadata.name.as_deref(), Some(CA_SECRET));
    assert_eq!(ca_secret.metadata.namespace.as_deref(), Some(OP_NS));
    assert_eq!(ca_secret.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(p.secrets.len(), 1);
    let s = &p.secrets[0];
    assert_eq!(s.metadata.name.as_deref(), Some("api-portcullis-tls"));
    assert_eq!(s.metadata.namespace.as_deref(), Some("prod"));
    assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(s.metadata.labels.as_ref().unwrap()[CERT_LABEL], "serving");
    let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("ApiRoute", "uid-prod-api"));
    // Leaf then CA; the key matches; SANs are the hosts.
    let chain = text(s, "tls.crt");
    let certs = pem_certificates(&chain);
    assert_eq!(certs.len(), 2);
    let ca = w.ca(NOW);
    assert_eq!(
        ca::inspect(certs[1], "ca").unwrap().sha256_fingerprint,
        ca.fingerprint()
    );
    let leaf = w.leaf("prod", "api-portcullis-tls");
    let info = leaf.leaf.clone().expect("readable, key matches");
    let mut sans = info.dns_names.clone();
    sans.sort();
    assert_eq!(sans, ["*.api.example.com", "api.example.com"]);
    assert_eq!(info.not_after, NOW + LIFE.leaf);
    assert!(!text(s, "tls.key").is_empty());
    // Status: notAfter and fingerprint.
    assert_eq!(
        p.statuses,
        [RouteCertificates {
            namespace: "prod".into(),
            route: "api".into(),
            certificates: vec![CertificateStatus {
                secret_name: "api-portcullis-tls".into(),
                not_after: info.not_after_rfc3339(),
                sha256_fingerprint: info.sha256_fingerprint.clone(),
            }],
        }]
    );
    assert!(info.not_after_rfc3339().ends_with('Z'));
    // Bundles: the operator's namespace and the route's.
    assert_eq!(w.bundles.keys().collect::<Vec<_>>(), [OP_NS, "prod"]);
    assert_eq!(w.bundles["prod"], ca.ca.cert_pem());
    // Nothing to do the next time round.
    let again = w.step(NOW + 10);
    assert_eq!(writes(&again), 0, "{again:?}");
    assert_eq!(
        again.next_due,
        Some(info.not_before + (info.not_after - info.not_before) * 2 / 3)
    );
}

#[test]
fn client_certificates_carry_namespace_and_route() {
    let mut w = World::default();
    w.routes.push(client("prod", "billing"));
    let p = w.step(NOW);
    assert_eq!(p.secrets[0].metadata.name.as_deref(), Some("billing-portcullis-client"));
    let leaf = w.leaf("prod", "billing-portcullis-client").leaf.unwrap();
    assert_eq!(leaf.subject, "CN=prod/billing");
    assert_eq!(writes(&w.step(NOW + 1)), 0);
}

#[test]
fn leaves_are_reissued_at_two_thirds_of_their_lifetime() {
    let mut w = World::default();
    w.routes.push(serving("prod", "api", &["api.example.com"]));
    w.step(NOW);
    let first = w.leaf("prod", "api-portcullis-tls").leaf.unwrap();
    let at = first.not_before + (first.not_after - first.not_before) * 2 / 3;
    assert_eq!(writes(&w.step(at - 1)), 0);
    let p = w.step(at);
    assert_eq!(p.reissued.len(), 1);
    assert_eq!(p.reissued[0].why, "renewal due");
    let second = w.leaf("prod", "api-portcullis-tls").leaf.unwrap();
    assert_ne!(second.sha256_fingerprint, first.sha256_fingerprint);
    assert_eq!(
        p.statuses[0].certificates[0].sha256_fingerprint,
        second.sha256_fingerprint
    );
    // The CA and the bundles did not change.
    assert!(p.ca_secret.is_none() && p.configmaps.is_empty());
}

#[test]
fn changed_hosts_unreadable_secrets_and_unknown_cas_are_reissued() {
    let mut w = World::default();
    w.routes.push(serving("prod", "api", &["api.example.com"]));
    w.step(NOW);
    w.routes[0] = serving("prod", "api", &["api.example.com", "www.example.com"]);
    let p = w.step(NOW + 5);
    assert_eq!(p.reissued[0].why, "hosts changed");
    assert_eq!(w.leaf("prod", "api-portcullis-tls").leaf.unwrap().dns_names.len(), 2);

    // A key that does not match its certificate.
    let key = ("prod".to_owned(), "api-portcullis-tls".to_owned());
    let other = Ca::generate("other", NOW, DAY).unwrap();
    let s = w.secrets.get_mut(&key).unwrap();
    s.data
        .as_mut()
        .unwrap()
        .insert("tls.key".into(), ByteString(other.key_pem().as_bytes().to_vec()));
    assert_eq!(w.step(NOW + 6).reissued[0].why, "unreadable or key mismatch");

    // Signed by another CA (say, the CA's Secret was replaced).
    let foreign = other
        .issue(
            &Subject::Serving {
                hosts: vec!["api.example.com".into(), "www.example.com".into()],
            },
            NOW,
            DAY,
        )
        .unwrap();
    let s = w.secrets.get_mut(&key).unwrap();
    let data = s.data.as_mut().unwrap();
    data.insert("tls.crt".into(), ByteString(foreign.cert_chain_pem.into_bytes()));
    data.insert("tls.key".into(), ByteString(foreign.key_pem.into_bytes()));
    assert_eq!(w.step(NOW + 7).reissued[0].why, "signed by an unknown CA");
    assert_eq!(writes(&w.step(NOW + 8)), 0);
}

#[test]
fn ca_rotation_keeps_the_previous_ca_in_the_bundle_until_nothing_it_signed_is_left() {
    let mut w = World::default();
    w.routes.push(serving("prod", "api", &["api.example.com"]));
    w.routes.push(client("prod", "billing"));
    w.step(NOW);
    let old = w.ca(NOW);
    // Keep the leaves fresh until just before the CA's renewal.
    let ca_info = old.ca.info().clone();
    let rotate_at = ca_info.not_before + (ca_info.not_after - ca_info.not_before) * 2 / 3;
    let mut t = NOW;
    while let Some(next) = w.plan(t).next_due.filter(|d| *d < rotate_at) {
        t = next;
        w.step(t);
    }
    assert_eq!(w.ca(t).fingerprint(), old.fingerprint());

    let p = w.step(rotate_at);
    assert_eq!(p.ca_why, Some("rotated at two thirds of its lifetime"));
    let new = w.ca(rotate_at);
    assert_ne!(new.fingerprint(), old.fingerprint());
    assert_eq!(new.rotated_at, Some(rotate_at));
    assert_eq!(new.previous_info().unwrap().sha256_fingerprint, old.fingerprint());
    // Both CAs are trusted everywhere; the existing leaves stay (they are not due yet).
    assert!(p.reissued.is_empty(), "{:?}", p.reissued);
    let bundle = &w.bundles["prod"];
    assert_eq!(pem_certificates(bundle).len(), 2);
    assert!(bundle.contains(old.ca.cert_pem().trim()) && bundle.contains(new.ca.cert_pem().trim()));
    assert_eq!(text(w.ca_secret.as_ref().unwrap(), PREVIOUS_KEY), old.ca.cert_pem());

    // Leaves are renewed by the new CA as they fall due; the previous CA stays until then.
    let mut t = rotate_at;
    let mut dropped_at = None;
    for _ in 0..20 {
        let Some(next) = w.plan(t).next_due else { break };
        t = next.max(t + 1);
        let p = w.step(t);
        if p.ca_why == Some("previous CA no longer in use") {
            dropped_at = Some(t);
            break;
        }
        assert_eq!(pem_certificates(&w.bundles["prod"]).len(), 2);
    }
    let dropped_at = dropped_at.expect("the previous CA is dropped");
    assert!(dropped_at >= rotate_at + LIFE.leaf);
    for name in ["api-portcullis-tls", "billing-portcullis-client"] {
        assert_eq!(
            w.leaf("prod", name).issuer.as_deref(),
            Some(new.fingerprint()),
            "{name}"
        );
    }
    assert_eq!(pem_certificates(&w.bundles["prod"]).len(), 1);
    assert_eq!(w.bundles["prod"], new.ca.cert_pem());
    assert!(w.ca(dropped_at).previous_pem.is_none());
    assert_eq!(writes(&w.step(dropped_at + 1)), 0);
}

#[test]
fn an_expired_or_broken_ca_is_replaced() {
    let mut w = World::default();
    w.routes.push(serving("prod", "api", &["api.example.com"]));
    w.step(NOW);
    // Past the CA's expiry the Secret no longer reads as a CA: the manager starts afresh.
    let later = NOW + LIFE.ca + 1;
    assert!(CaState::from_secret(w.ca_secret.as_ref().unwrap(), later).is_err());
    let issued: Vec<IssuedSecret> = w.secrets.values().map(IssuedSecret::from_secret).collect();
    let p = plan(&Inputs {
        now: later,
        namespace: OP_NS,
        ca: None,
        routes: &w.routes,
        issued: &issued,
        bundles: &w.bundles,
        lifetimes: LIFE,
        always: false,
    });
    assert_eq!(p.ca_why, Some("created"));
    assert_eq!(p.reissued[0].why, "signed by an unknown CA");
}

#[test]
fn certificates_and_bundles_no_route_asks_for_are_removed() {
    let mut w = World::default();
    w.routes.push(serving("prod", "api", &["api.example.com"]));
    w.routes.push(serving("dev", "api", &["api.dev.example.com"]));
    w.step(NOW);
    assert_eq!(w.bundles.len(), 3);
    // dev's route goes; prod's stops asking.
    w.routes.retain(|r| r.metadata.namespace.as_deref() == Some("prod"));
    w.routes[0] = route(
        "prod",
        "api",
        serde_json::json!({"workloadSelector": {}, "backend": {"port": 8080}}),
    );
    w.routes[0].status = Some(ApiRouteStatus {
        certificates: vec![CertificateStatus::default()],
        ..Default::default()
    });
    let p = w.step(NOW + 1);
    let mut deleted = p.delete_secrets.clone();
    deleted.sort();
    assert_eq!(
        deleted,
        [
            ("dev".to_owned(), "api-portcullis-tls".to_owned()),
            ("prod".to_owned(), "api-portcullis-tls".to_owned())
        ]
    );
    assert_eq!(p.delete_configmaps, ["dev"]);
    assert!(p.statuses[0].certificates.is_empty());
    // The CA stays (it may be needed again), rotation included.
    assert!(p.ca.is_some());
    assert_eq!(writes(&w.step(NOW + 2)), 0);
}

#[test]
fn a_route_without_hosts_gets_a_certificate_for_its_service_name() {
    let mut w = World::default();
    w.routes.push(serving("prod", "api", &[]));
    w.step(NOW);
    assert_eq!(
        w.leaf("prod", "api-portcullis-tls").leaf.unwrap().dns_names,
        ["api.prod.svc"]
    );
}

#[test]
fn pem_chains_split_into_certificates() {
    let ca = Ca::generate("x", NOW, DAY).unwrap();
    let pem = format!("junk\n{}{}", ca.cert_pem(), ca.cert_pem());
    let certs = pem_certificates(&pem);
    assert_eq!(certs.len(), 2);
    assert!(
        certs
            .iter()
            .all(|c| c.starts_with("-----BEGIN") && c.ends_with("-----"))
    );
    assert!(pem_certificates("nothing").is_empty());
}

#[test]
fn no_key_material_in_debug_output() {
    let mut w = World::default();
    w.routes.push(serving("prod", "api", &["api.example.com"]));
    let p = w.step(NOW);
    let ca = w.ca(NOW);
    assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
    assert!(!format!("{:?}", IssuedSecret::from_secret(&p.secrets[0])).contains("PRIVATE KEY"));
}

#[test]
fn lifetimes_parse() {
    assert_eq!(parse_duration("6s"), Ok(6));
    assert_eq!(parse_duration("6"), Ok(6));
    assert_eq!(parse_duration("30d"), Ok(30 * DAY));
    assert_eq!(parse_duration("12h"), Ok(43_200));
    assert_eq!(parse_duration("5m"), Ok(300));
    assert!(parse_duration("0s").is_err());
    assert!(parse_duration("1w").is_err());
    assert!(parse_duration("soon").is_err());
}

#[test]
fn a_labelled_secret_not_named_like_an_issued_one_is_left_alone() {
    let mut w = World::default();
    w.routes.push(serving("prod", "api", &["api.example.com"]));
    w.step(NOW);
    let mut foreign = w.secrets[&("prod".to_owned(), "api-portcullis-tls".to_owned())].clone();
    foreign.metadata.name = Some("users-own-cert".into());
    w.secrets.insert(("prod".into(), "users-own-cert".into()), foreign);
    let p = w.step(NOW + 1);
    assert!(p.delete_secrets.is_empty(), "{:?}", p.delete_secrets);
    assert_eq!(writes(&p), 0);
}
