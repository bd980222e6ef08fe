//! The operator's CA, end to end: the real `portcullis-operator run` against the fake API
//! server issues a route's certificate into a kubernetes.io/tls Secret (chain, SANs, owner),
//! publishes the CA bundle it verifies against, shows notAfter and the fingerprint in the
//! route's status, hands the certificate to the sidecar configuration, renews it at two
//! thirds of its lifetime, and keeps the previous CA in the bundle during a CA rotation.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const OP_NS: &str = "portcullis-system";
const HOST: &str = "api.example.com";

fn issuing_route(name: &str, app: &str) -> Value {
    json!({
        "apiVersion": "portcullis.dev/v1alpha1", "kind": "ApiRoute",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "workloadSelector": {"matchLabels": {"app": app}},
            "hosts": [HOST, format!("*.{HOST}")],
            "pathPrefix": "/",
            "profiles": [{"name": "anon"}],
            "tls": {"issue": true},
            "backend": {"port": 8080},
        },
    })
}

fn anonymous_profile() -> Value {
    json!({
        "apiVersion": "portcullis.dev/v1alpha1", "kind": "SecurityProfile",
        "metadata": {"name": "anon", "namespace": NS},
        "spec": {"type": "Anonymous"},
    })
}

fn data(secret: &Value, key: &str) -> String {
    let encoded = secret["data"][key].as_str().unwrap_or_default();
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(encoded).unwrap()).unwrap()
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Verifies a serving chain for `host` against a bundle, as a TLS client would.
fn verify(chain_pem: &str, bundle_pem: &str, host: &str) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(bundle_pem) {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .unwrap();
    let chain = certs(chain_pem);
    verifier
        .verify_server_cert(
            &chain[0],
            &chain[1..],
            &ServerName::try_from(host.to_owned()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
}

fn get(server: &portcullis_fake_apiserver::FakeApiServer, resource: &str, ns: &str, name: &str) -> Option<Value> {
    server.get(resource, ns, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issued_certificate_with_chain_sans_bundle_status_and_sidecar_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    server.create(&anonymous_profile()).unwrap();
    let route = server.create(&issuing_route("api", "web")).unwrap();
    server.create(&pod("web-1", "web")).unwrap();
    let op = Operator::start(&dir, "op-a", &[]);

    let secret = wait_until(Duration::from_secs(20), "the issued Secret", &op, || {
        get(&server, "secrets", NS, "api-portcullis-tls")
    })
    .await;
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let owner = &secret["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "ApiRoute");
    assert_eq!(owner["uid"], route["metadata"]["uid"]);
    let chain = data(&secret, "tls.crt");
    assert!(data(&secret, "tls.key").contains("PRIVATE KEY"));
    let ders = certs(&chain);
    assert_eq!(ders.len(), 2, "leaf and CA");

    // SANs are the route's hosts.
    let (_, leaf) = x509_parser::parse_x509_certificate(&ders[0]).unwrap();
    let mut sans: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => d.to_string(),
            other => panic!("unexpected SAN {other:?}"),
        })
        .collect();
    sans.sort();
    assert_eq!(sans, [format!("*.{HOST}"), HOST.to_owned()]);

    // The bundle in the route's namespace (and the operator's) verifies it for the hosts.
    let bundle = wait_until(Duration::from_secs(10), "the bundle ConfigMap", &op, || {
        get(&server, "configmaps", NS, "portcullis-ca-bundle")
    })
    .await;
    let bundle = bundle["data"]["ca.crt"].as_str().unwrap().to_owned();
    verify(&chain, &bundle, HOST).unwrap();
    verify(&chain, &bundle, &format!("www.{HOST}")).unwrap();
    assert!(verify(&chain, &bundle, "other.example.com").is_err());
    let other_ca = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let foreign = params.self_signed(&other_ca).unwrap().pem();
    assert!(
        verify(&chain, &foreign, HOST).is_err(),
        "a foreign CA does not verify it"
    );
    let op_bundle =
        get(&server, "configmaps", OP_NS, "portcullis-ca-bundle").expect("bundle in the operator's namespace");
    assert_eq!(op_bundle["data"]["ca.crt"], bundle.as_str());
    let ca_secret = get(&server, "secrets", OP_NS, "portcullis-ca").expect("the CA Secret");
    assert_eq!(ca_secret["type"], "kubernetes.io/tls");
    assert_eq!(data(&ca_secret, "tls.crt"), bundle);

    // Status: notAfter and the SHA-256 fingerprint of the certificate in the Secret.
    let fp = fingerprint(&ders[0]);
    let not_after = leaf.validity().not_after.timestamp();
    let status = wait_until(Duration::from_secs(10), "status certificates", &op, || {
        let r = get(&server, ROUTES, NS, "api")?;
        let c = r["status"]["certificates"].as_array()?.first()?.clone();
        (c["sha256Fingerprint"] == fp.as_str()).then_some(c)
    })
    .await;
    assert_eq!(status["secretName"], "api-portcullis-tls");
    let parsed = time::OffsetDateTime::parse(
        status["notAfter"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(parsed.unix_timestamp(), not_after);

    // The compiler sees the Secret: the route is accepted and its sidecars get the certificate.
    let group = group_of("web");
    wait_until(Duration::from_secs(10), "the route accepted", &op, || {
        let r = get(&server, ROUTES, NS, "api")?;
        (condition(&r, "Accepted")?["status"] == "True").then_some(())
    })
    .await;
    wait_until(Duration::from_secs(10), "the certificate in secrets.json", &op, || {
        let s = get(&server, "secrets", NS, &group)?;
        let leaf_pem = certs(&chain)[0].clone();
        let material = secrets_of(&s);
        let b64 = base64::engine::general_purpose::STANDARD.encode(leaf_pem.as_ref());
        // PEM bodies are wrapped at 64 columns; compare the first line of the body.
        material.contains(&b64[..64]).then_some(())
    })
    .await;

    // A restart changes nothing.
    let rv_secret = rv(&get(&server, "secrets", NS, "api-portcullis-tls").unwrap());
    let rv_ca = rv(&get(&server, "secrets", OP_NS, "portcullis-ca").unwrap());
    drop(op);
    let op = Operator::start(&dir, "op-a", &[]);
    wait_until(Duration::from_secs(15), "the restarted operator leads", &op, || {
        (op.metric("portcullis_operator_leader")? == 1.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        rv(&get(&server, "secrets", NS, "api-portcullis-tls").unwrap()),
        rv_secret
    );
    assert_eq!(rv(&get(&server, "secrets", OP_NS, "portcullis-ca").unwrap()), rv_ca);

    // Hosts change: a new certificate for the new hosts.
    let mut changed = get(&server, ROUTES, NS, "api").unwrap();
    changed["spec"]["hosts"] = json!(["new.example.com"]);
    server.put(&changed).unwrap();
    wait_until(Duration::from_secs(10), "a certificate for the new hosts", &op, || {
        let s = get(&server, "secrets", NS, "api-portcullis-tls")?;
        verify(&data(&s, "tls.crt"), &bundle, "new.example.com").ok()
    })
    .await;

    assert!(!op.logs().contains("PRIVATE KEY"), "key material in the log");
    assert_rbac_allows(&server.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_for_origin_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    server.create(&anonymous_profile()).unwrap();
    server
        .create(&json!({
            "apiVersion": "portcullis.dev/v1alpha1", "kind": "ApiRoute",
            "metadata": {"name": "billing", "namespace": NS},
            "spec": {
                "workloadSelector": {"matchLabels": {"app": "web"}},
                "pathPrefix": "/billing",
                "profiles": [{"name": "anon"}],
                "backend": {"origin": {"url": "https://billing.example.com",
                    "tls": {"mode": "Mutual", "clientCertificate": {"issue": true}}}},
            },
        }))
        .unwrap();
    let op = Operator::start(&dir, "op-a", &[]);
    let secret = wait_until(Duration::from_secs(20), "the client certificate", &op, || {
        get(&server, "secrets", NS, "billing-portcullis-client")
    })
    .await;
    let ders = certs(&data(&secret, "tls.crt"));
    let (_, leaf) = x509_parser::parse_x509_certificate(&ders[0]).unwrap();
    assert_eq!(leaf.subject().to_string(), format!("CN={NS}/billing"));
    // It verifies as a client certificate against the bundle.
    let bundle = wait_until(Duration::from_secs(10), "the bundle", &op, || {
        get(&server, "configmaps", NS, "portcullis-ca-bundle")
    })
    .await;
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(bundle["data"]["ca.crt"].as_str().unwrap()) {
        roots.add(c).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    verifier
        .verify_client_cert(&ders[0], &ders[1..], UnixTime::now())
        .unwrap();
    wait_until(Duration::from_secs(10), "status certificates", &op, || {
        let r = get(&server, ROUTES, NS, "billing")?;
        let c = r["status"]["certificates"].as_array()?.first()?.clone();
        (c["secretName"] == "billing-portcullis-client" && c["sha256Fingerprint"] == fingerprint(&ders[0]).as_str())
            .then_some(())
    })
    .await;
    assert_rbac_allows(&server.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_renewed_at_two_thirds_of_their_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    server.create(&anonymous_profile()).unwrap();
    server.create(&issuing_route("api", "web")).unwrap();
    let op = Operator::start(&dir, "op-a", &["--cert-lifetime", "6s"]);
    let first = wait_until(Duration::from_secs(20), "the issued Secret", &op, || {
        get(&server, "secrets", NS, "api-portcullis-tls")
    })
    .await;
    let issued_at = Instant::now();
    let first_chain = certs(&data(&first, "tls.crt"));
    let first_fp = fingerprint(&first_chain[0]);
    let (_, leaf) = x509_parser::parse_x509_certificate(&first_chain[0]).unwrap();
    let v = leaf.validity();
    assert_eq!(
        v.not_after.timestamp() - v.not_before.timestamp(),
        6,
        "a 6 s certificate"
    );

    let second = wait_until(Duration::from_secs(15), "a renewed certificate", &op, || {
        let s = get(&server, "secrets", NS, "api-portcullis-tls")?;
        (fingerprint(&certs(&data(&s, "tls.crt"))[0]) != first_fp).then_some(s)
    })
    .await;
    let after = issued_at.elapsed();
    // Renewed at 4 s (two thirds of 6 s), give or take the second granularity of certificates.
    assert!(
        after >= Duration::from_millis(2500) && after <= Duration::from_secs(7),
        "renewed after {after:?}"
    );
    let second_fp = fingerprint(&certs(&data(&second, "tls.crt"))[0]);
    wait_until(Duration::from_secs(10), "status with the new fingerprint", &op, || {
        let r = get(&server, ROUTES, NS, "api")?;
        (r["status"]["certificates"][0]["sha256Fingerprint"] == second_fp.as_str()).then_some(())
    })
    .await;
    // And again: every renewal verifies against the bundle.
    let third = wait_until(Duration::from_secs(15), "a second renewal", &op, || {
        let s = get(&server, "secrets", NS, "api-portcullis-tls")?;
        let fp = fingerprint(&certs(&data(&s, "tls.crt"))[0]);
        (fp != first_fp && fp != second_fp).then_some(s)
    })
    .await;
    let bundle = get(&server, "configmaps", NS, "portcullis-ca-bundle").unwrap();
    verify(
        &data(&third, "tls.crt"),
        bundle["data"]["ca.crt"].as_str().unwrap(),
        HOST,
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_rotation_keeps_the_previous_ca_in_the_bundle_until_its_certificates_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    server.create(&anonymous_profile()).unwrap();
    server.create(&issuing_route("api", "web")).unwrap();
    let op = Operator::start(&dir, "op-a", &["--ca-lifetime", "15s", "--cert-lifetime", "6s"]);
    let ca_fp = |server: &portcullis_fake_apiserver::FakeApiServer| {
        let s = get(server, "secrets", OP_NS, "portcullis-ca")?;
        Some(fingerprint(&certs(&data(&s, "tls.crt"))[0]))
    };
    let bundle_of = |server: &portcullis_fake_apiserver::FakeApiServer| {
        let cm = get(server, "configmaps", NS, "portcullis-ca-bundle")?;
        Some(cm["data"]["ca.crt"].as_str()?.to_owned())
    };
    let old = wait_until(Duration::from_secs(20), "the CA", &op, || ca_fp(&server)).await;
    let new = wait_until(Duration::from_secs(20), "a rotated CA", &op, || {
        ca_fp(&server).filter(|fp| *fp != old)
    })
    .await;
    // Right after the rotation: both CAs in the bundle; the current certificate (still from
    // the old CA, or already from the new one) verifies against it.
    let bundle = wait_until(Duration::from_secs(5), "the bundle with both CAs", &op, || {
        bundle_of(&server).filter(|b| certs(b).len() == 2)
    })
    .await;
    let in_bundle: Vec<String> = certs(&bundle).iter().map(|c| fingerprint(c)).collect();
    assert_eq!(in_bundle, [new.clone(), old.clone()]);
    let ca_secret = get(&server, "secrets", OP_NS, "portcullis-ca").unwrap();
    assert_eq!(fingerprint(&certs(&data(&ca_secret, "previous.crt"))[0]), old);
    let leaf = get(&server, "secrets", NS, "api-portcullis-tls").unwrap();
    verify(&data(&leaf, "tls.crt"), &bundle, HOST).unwrap();

    // Then the certificate is reissued by the new CA, and the old CA leaves the bundle.
    let reissued = wait_until(Duration::from_secs(15), "a certificate from the new CA", &op, || {
        let s = get(&server, "secrets", NS, "api-portcullis-tls")?;
        let chain = certs(&data(&s, "tls.crt"));
        (fingerprint(&chain[1]) == new).then_some(s)
    })
    .await;
    let single = wait_until(Duration::from_secs(15), "the old CA dropped", &op, || {
        bundle_of(&server).filter(|b| certs(b).len() == 1)
    })
    .await;
    if ca_fp(&server).as_deref() == Some(new.as_str()) {
        assert_eq!(fingerprint(&certs(&single)[0]), new);
        let current = get(&server, "secrets", NS, "api-portcullis-tls").unwrap();
        verify(&data(&current, "tls.crt"), &single, HOST).unwrap();
    }
    drop(reissued);
    assert!(!op.logs().contains("PRIVATE KEY"), "key material in the log");
}
