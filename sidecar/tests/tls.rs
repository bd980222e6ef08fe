//! Black-box tests of TLS through the real binary over 127.0.0.1: the `--inbound-tls`
//! listener (versions and suites probed with `openssl s_client` and rustls, SNI, ALPN, HSTS),
//! sslOnly redirects, client-certificate profiles, origins over TLS and mutual TLS, a
//! certificate rotation under a steady stream of requests, and bad material refused.

mod common;
#[path = "common/pki.rs"]
mod pki;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use pki::*;
use serde_json::{Value, json};

const HOST: &str = "api.example.test";

async fn sidecar_for(l: portcullis_config::Loaded) -> (Sidecar, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    l.write_dir(dir.path()).unwrap();
    (Sidecar::start(dir.path()).await, dir)
}

fn tls_route(name: &str, hosts: &[&str], port: u16) -> Value {
    json!({"name": name, "hosts": hosts, "pathPrefix": "/", "tls": true,
           "backend": {"type": "Local", "port": port}})
}

/// Waits (bounded) until the sidecar's TLS listener completes a handshake for `host`.
async fn wait_tls(sidecar: &Sidecar, host: &str, ca: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TlsConn::open(sidecar.inbound_tls, host, default_client(ca, None))
            .await
            .is_ok()
        {
            return;
        }
        assert!(Instant::now() < deadline, "the TLS listener never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn versions_and_suites_probed_with_openssl() {
    let backend = Backend::start().await;
    let ca = Ca::new("Test CA");
    let ecdsa = ca.server("api", &[HOST]);
    let rsa = ca.server_rsa("rsa", &["rsa.example.test"]);
    let (sidecar, _dir) = sidecar_for(loaded(
        "g1",
        json!({"routes": [
            tls_route("api", &[HOST], backend.port()),
            tls_route("rsa", &["rsa.example.test"], backend.port()),
        ]}),
        json!({"routes": {"api": {"tls": ecdsa.material()}, "rsa": {"tls": rsa.material()}}}),
    ))
    .await;
    wait_tls(&sidecar, HOST, &ca.pem).await;
    let addr = sidecar.inbound_tls;

    let accepted: &[(&str, &[&str])] = &[
        (HOST, &["-tls1_3"]),
        (HOST, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]),
        (HOST, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"]),
        (HOST, &["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"]),
        // Seed 002 section 8: TLS 1.2, ECDHE_RSA, AES_128_GCM.
        (
            "rsa.example.test",
            &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"],
        ),
        ("rsa.example.test", &["-tls1_3"]),
    ];
    for (host, args) in accepted {
        let p = s_client(addr, host, args);
        assert!(p.connected, "{host} {args:?} should be accepted:\n{}", p.output);
    }
    // Old protocols: the client's own security level is lowered so that it really offers them.
    let refused: &[(&str, &[&str])] = &[
        (HOST, &["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"]),
        (HOST, &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]),
        ("rsa.example.test", &["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"]),
        ("rsa.example.test", &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]),
        // RSA key exchange (no ECDHE), CBC and SHA-1 suites.
        ("rsa.example.test", &["-tls1_2", "-cipher", "AES256-SHA"]),
        ("rsa.example.test", &["-tls1_2", "-cipher", "AES128-GCM-SHA256"]),
        ("rsa.example.test", &["-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256"]),
        ("rsa.example.test", &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA"]),
        (HOST, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256"]),
    ];
    for (host, args) in refused {
        let p = s_client(addr, host, args);
        assert!(!p.connected, "{host} {args:?} should be refused:\n{}", p.output);
        // The server itself refused: it answered with an alert (handshake_failure or
        // protocol_version), the client did not give up on its own.
        assert!(p.output.contains("SSL alert number"), "{host} {args:?}:\n{}", p.output);
        assert!(
            !p.output.contains("no protocols available") && !p.output.contains("no cipher match"),
            "the probe {args:?} did not reach the server:\n{}",
            p.output
        );
    }
}

#[tokio::test]
async fn rustls_clients_alpn_hsts_and_audit() {
    let backend = Backend::start().await;
    let ca = Ca::new("Test CA");
    let (sidecar, _dir) = sidecar_for(loaded(
        "g1",
        json!({"routes": [tls_route("api", &[HOST], backend.port())]}),
        json!({"routes": {"api": {"tls": ca.server("api", &[HOST]).material()}}}),
    ))
    .await;
    wait_tls(&sidecar, HOST, &ca.pem).await;

    let tls13 = client_config(&ca.pem, &[&rustls::version::TLS13], &["h2", "http/1.1"], None);
    let tls12 = client_config(&ca.pem, &[&rustls::version::TLS12], &["http/1.1"], None);
    let a = tls_get(sidecar.inbound_tls, HOST, tls13, "/v1/x?q=1")
        .await
        .expect("TLS 1.3");
    assert_eq!(a.status, 200);
    assert_eq!(a.protocol, Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(a.version, http::Version::HTTP_2, "ALPN h2");
    assert_eq!(a.headers["strict-transport-security"], "max-age=31536000");
    let echo = json_of(&a.body);
    assert_eq!(echo["path"], "/v1/x");
    assert_eq!(echo["headers"]["x-forwarded-proto"], json!(["https"]));

    let b = tls_get(sidecar.inbound_tls, HOST, tls12, "/v1/y")
        .await
        .expect("TLS 1.2");
    assert_eq!(b.status, 200);
    assert_eq!(b.protocol, Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(b.version, http::Version::HTTP_11);
    assert_eq!(b.headers["strict-transport-security"], "max-age=31536000");

    let lines = sidecar.wait_audit(2).await;
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l["route"] == "api" && l["status"] == 200));

    let metrics = sidecar.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("portcullis_certificate_expiry_seconds{route=\"api\"}")),
        "{metrics}"
    );
}

#[tokio::test]
async fn sni_picks_the_route_certificate() {
    let backend = Backend::start().await;
    let ca = Ca::new("Test CA");
    let api = ca.server("api", &[HOST]);
    let apps = ca.server("apps", &["*.apps.example.test"]);
    let (sidecar, _dir) = sidecar_for(loaded(
        "g1",
        json!({"routes": [
            tls_route("api", &[HOST], backend.port()),
            tls_route("apps", &["*.apps.example.test"], backend.port()),
        ]}),
        json!({"routes": {"api": {"tls": api.material()}, "apps": {"tls": apps.material()}}}),
    ))
    .await;
    wait_tls(&sidecar, HOST, &ca.pem).await;

    let a = tls_get(sidecar.inbound_tls, HOST, default_client(&ca.pem, None), "/")
        .await
        .expect("api");
    assert_eq!(a.server_cert, api.der());
    let b = tls_get(
        sidecar.inbound_tls,
        "shop.apps.example.test",
        default_client(&ca.pem, None),
        "/",
    )
    .await
    .expect("apps");
    assert_eq!(b.server_cert, apps.der());
    assert_eq!(json_of(&b.body)["headers"]["x-portcullis-route"], json!(["apps"]));
    // No SNI: the first TLS route's certificate.
    let mut no_sni = (*default_client(&ca.pem, None)).clone();
    no_sni.enable_sni = false;
    let c = tls_get(sidecar.inbound_tls, HOST, Arc::new(no_sni), "/")
        .await
        .expect("no SNI");
    assert_eq!(c.server_cert, api.der());
    // openssl agrees.
    let p = s_client(sidecar.inbound_tls, "x.apps.example.test", &[]);
    assert!(p.connected && p.output.contains("CN = apps"), "{}", p.output);
}

#[tokio::test]
async fn intermediates_are_served_and_accepted() {
    let backend = Backend::start().await;
    let root = Ca::new("Root CA");
    let issuing = root.intermediate("Issuing CA");
    let mut server = issuing.server("api", &[HOST]);
    server.cert_pem = format!("{}{}", server.cert_pem, issuing.pem);
    let client_root = Ca::new("Client Root CA");
    let client_issuing = client_root.intermediate("Client Issuing CA");
    let mut client = client_issuing.client("partner-a", &[]);
    client.cert_pem = format!("{}{}", client.cert_pem, client_issuing.pem);
    let mut route = tls_route("api", &[HOST], backend.port());
    route["profiles"] = json!(["partners"]);
    let (sidecar, _dir) = sidecar_for(loaded(
        "g1",
        json!({"profiles": [{"name": "partners", "auth": {"type": "ClientCertificate"}}], "routes": [route]}),
        json!({"profiles": {"partners": {"clientCaPem": client_root.pem}},
               "routes": {"api": {"tls": server.material()}}}),
    ))
    .await;
    wait_tls(&sidecar, HOST, &root.pem).await;
    // The client trusts the root only: the served chain carries the intermediate.
    let a = tls_get(sidecar.inbound_tls, HOST, default_client(&root.pem, Some(&client)), "/")
        .await
        .expect("chain served and accepted");
    assert_eq!(a.status, 200);
    assert_eq!(
        json_of(&a.body)["headers"]["x-portcullis-identity"],
        json!([subject("partner-a")])
    );
}

#[tokio::test]
async fn ssl_only_redirects_plain_http_with_308() {
    let backend = Backend::start().await;
    let ca = Ca::new("Test CA");
    let mut route = tls_route("api", &[HOST], backend.port());
    route["sslOnly"] = json!(true);
    let (sidecar, _dir) = sidecar_for(loaded(
        "g1",
        json!({"routes": [route]}),
        json!({"routes": {"api": {"tls": ca.server("api", &[HOST]).material()}}}),
    ))
    .await;
    wait_tls(&sidecar, HOST, &ca.pem).await;

    let (status, headers, _) = get_with(&sidecar.url("/v1/items?page=2"), &[("host", HOST)]).await;
    assert_eq!(status, 308);
    assert_eq!(headers["location"], "https://api.example.test/v1/items?page=2");
    let a = tls_get(
        sidecar.inbound_tls,
        HOST,
        default_client(&ca.pem, None),
        "/v1/items?page=2",
    )
    .await
    .expect("https");
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["strict-transport-security"], "max-age=31536000");
    let lines = sidecar.wait_audit(2).await;
    assert_eq!(lines[0]["decision"], "redirect");
    assert_eq!(lines[1]["decision"], "allow");
}

/// Behind a TLS-terminating ingress (a trusted proxy) an `sslOnly` route is served over plain
/// HTTP when the ingress says `X-Forwarded-Proto: https`, and the app is told `https`; the
/// same header from any other peer changes nothing.
#[tokio::test]
async fn ssl_only_behind_a_trusted_tls_ingress() {
    let backend = Backend::start().await;
    let ca = Ca::new("Test CA");
    let mut route = tls_route("api", &[HOST], backend.port());
    route["sslOnly"] = json!(true);
    let serve = |trusted: Value| {
        let dir = tempfile::tempdir().unwrap();
        loaded(
            "g1",
            json!({"trustedProxies": trusted, "routes": [route.clone()]}),
            json!({"routes": {"api": {"tls": ca.server("api", &[HOST]).material()}}}),
        )
        .write_dir(dir.path())
        .unwrap();
        dir
    };
    let ingress = [("host", HOST), ("x-forwarded-proto", "https")];

    let dir = serve(json!(["127.0.0.0/8"]));
    let sidecar = Sidecar::start(dir.path()).await;
    let (status, _, body) = get_with(&sidecar.url("/v1/items"), &ingress).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_of(&body)["headers"]["x-forwarded-proto"], json!(["https"]));
    let (status, headers, _) = get_with(&sidecar.url("/v1/items"), &[("host", HOST)]).await;
    assert_eq!(status, 308, "no word from the ingress: redirected");
    assert_eq!(headers["location"], "https://api.example.test/v1/items");
    drop(sidecar);

    let dir = serve(json!([]));
    let sidecar = Sidecar::start(dir.path()).await;
    let (status, _, _) = get_with(&sidecar.url("/v1/items"), &ingress).await;
    assert_eq!(status, 308, "X-Forwarded-Proto from an untrusted peer means nothing");
}

#[tokio::test]
async fn client_certificates_allow_and_deny() {
    let backend = Backend::start().await;
    let server_ca = Ca::new("Server CA");
    let partners_ca = Ca::new("Partners CA");
    let other_ca = Ca::new("Other CA");
    let mut route = tls_route("partners", &[HOST], backend.port());
    route["profiles"] = json!(["partners"]);
    // A route without a certificate of its own, served with the wildcard route's: the
    // client certificate is asked for its host too.
    let b2b = json!({"name": "b2b", "hosts": ["b2b.example.test"], "pathPrefix": "/",
        "profiles": ["partners"], "backend": {"type": "Local", "port": backend.port()}});
    let (sidecar, _dir) = sidecar_for(loaded(
        "g1",
        json!({
            "profiles": [{"name": "partners", "auth": {"type": "ClientCertificate",
                "allowedSubjects": [subject("partner-a"), "billing.example.test"]}}],
            "routes": [route, b2b, tls_route("wild", &["*.example.test"], backend.port())],
        }),
        json!({
            "profiles": {"partners": {"clientCaPem": partners_ca.pem}},
            "routes": {
                "partners": {"tls": server_ca.server("api", &[HOST]).material()},
                "wild": {"tls": server_ca.server("wild", &["*.example.test"]).material()},
            },
        }),
    ))
    .await;
    wait_tls(&sidecar, HOST, &server_ca.pem).await;
    let call = |client: Option<Leaf>| {
        let config = default_client(&server_ca.pem, client.as_ref());
        let addr = sidecar.inbound_tls;
        async move { tls_get(addr, HOST, config, "/orders").await }
    };

    // Allowed by subject, and by SAN.
    let a = call(Some(partners_ca.client("partner-a", &[])))
        .await
        .expect("partner-a");
    assert_eq!(a.status, 200);
    let h = &json_of(&a.body)["headers"];
    assert_eq!(h["x-portcullis-identity"], json!([subject("partner-a")]));
    assert_eq!(h["x-portcullis-profile"], json!(["partners"]));
    let b = call(Some(partners_ca.client("billing", &["billing.example.test"])))
        .await
        .expect("billing");
    assert_eq!(b.status, 200);
    // Right CA, subject not allowed; no certificate at all.
    let c = call(Some(partners_ca.client("partner-z", &[])))
        .await
        .expect("partner-z");
    assert_eq!(c.status, 401);
    let d = call(None).await.expect("no certificate");
    assert_eq!(d.status, 401);
    // Wrong CA: the handshake fails (with TLS 1.3 the client learns it on its first read).
    let e = call(Some(other_ca.client("partner-a", &[]))).await;
    assert!(e.is_err(), "a certificate from another CA was accepted: {e:?}");
    let tls12 = client_config(
        &server_ca.pem,
        &[&rustls::version::TLS12],
        &["http/1.1"],
        Some(&other_ca.client("partner-a", &[])),
    );
    assert!(tls_get(sidecar.inbound_tls, HOST, tls12, "/orders").await.is_err());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sidecar.log().contains("TLS client certificate refused") {
        assert!(Instant::now() < deadline, "the refusal is not logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // openssl with the right certificate, over TLS 1.2.
    let dir = tempfile::tempdir().unwrap();
    let leaf = partners_ca.client("partner-a", &[]);
    std::fs::write(dir.path().join("c.pem"), &leaf.cert_pem).unwrap();
    std::fs::write(dir.path().join("k.pem"), &leaf.key_pem).unwrap();
    let cert = dir.path().join("c.pem").display().to_string();
    let key = dir.path().join("k.pem").display().to_string();
    let p = s_client(sidecar.inbound_tls, HOST, &["-tls1_2", "-cert", &cert, "-key", &key]);
    assert!(p.connected, "{}", p.output);
    assert!(p.output.contains("Partners CA"), "the CA is hinted: {}", p.output);

    let partner = default_client(&server_ca.pem, Some(&partners_ca.client("partner-a", &[])));
    let f = tls_get(sidecar.inbound_tls, "b2b.example.test", partner.clone(), "/")
        .await
        .expect("b2b");
    assert_eq!(f.status, 200, "{}", String::from_utf8_lossy(&f.body));
    assert_eq!(json_of(&f.body)["headers"]["x-portcullis-route"], json!(["b2b"]));
    // A host without a client-certificate route is not asked for one.
    let g = tls_get(sidecar.inbound_tls, "www.example.test", partner, "/")
        .await
        .expect("www");
    assert_eq!(g.status, 200);
    assert_eq!(
        json_of(&g.body)["headers"]["x-portcullis-identity"],
        json!(["anonymous"])
    );

    let lines = sidecar.wait_audit(6).await;
    let allowed: Vec<&Value> = lines.iter().filter(|l| l["status"] == 200).collect();
    assert_eq!(allowed[0]["identity"], subject("partner-a"));
    assert_eq!(allowed[0]["profile"], "partners");
    assert_eq!(allowed[1]["identity"], subject("billing"));
    let denied: Vec<&Value> = lines.iter().filter(|l| l["status"] == 401).collect();
    assert_eq!(denied.len(), 2);
    assert!(denied.iter().all(|l| l["decision"] == "deny" && l["identity"] == "-"));
}

fn origin_route(name: &str, prefix: &str, url: &str, mode: &str, custom_ca: bool, client_cert: bool) -> Value {
    json!({"name": name, "pathPrefix": prefix, "backend": {"type": "Origin", "url": url,
        "tlsMode": mode, "customCa": custom_ca, "clientCertificate": client_cert}})
}

#[tokio::test]
async fn origins_none_verify_and_mutual() {
    let origin_ca = Ca::new("Origin CA");
    let wrong_ca = Ca::new("Wrong CA");
    let gateway_ca = Ca::new("Gateway CA");
    let origin_cert = origin_ca.server("origin", &["127.0.0.1"]);
    let verify_origin = TlsOrigin::start(&origin_cert, None).await;
    let mutual_origin = TlsOrigin::start(&origin_cert, Some(&gateway_ca.pem)).await;
    let plain = Backend::start().await;
    let v = format!("https://{}/base", verify_origin.addr);
    let m = format!("https://{}", mutual_origin.addr);
    let p = format!("http://{}/plain/", plain.addr);
    let gateway = gateway_ca.client("gateway", &[]);
    let mut outbound = origin_route("outbound", "/out", &v, "Verify", true, false);
    outbound["egress"] = json!(true);
    let (sidecar, _dir) = sidecar_for(loaded(
        "g1",
        json!({"routes": [
            origin_route("verify", "/verify", &v, "Verify", true, false),
            origin_route("wrong-ca", "/wrong", &v, "Verify", true, false),
            origin_route("system-roots", "/system", &v, "Verify", false, false),
            origin_route("unverified", "/unverified", &v, "None", false, false),
            origin_route("mutual", "/mutual", &m, "Mutual", true, true),
            origin_route("no-client-cert", "/nocert", &m, "Verify", true, false),
            origin_route("plain", "/p", &p, "None", false, false),
            outbound,
        ]}),
        json!({"routes": {
            "verify": {"originCaPem": origin_ca.pem},
            "wrong-ca": {"originCaPem": wrong_ca.pem},
            "mutual": {"originCaPem": origin_ca.pem, "originClient": gateway.material()},
            "no-client-cert": {"originCaPem": origin_ca.pem},
            "outbound": {"originCaPem": origin_ca.pem},
        }}),
    ))
    .await;

    let (status, _, body) = get_with(&sidecar.url("/verify/items?x=1"), &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let echo = json_of(&body);
    assert_eq!(echo["path"], "/base/verify/items");
    assert_eq!(echo["query"], "x=1");
    assert_eq!(echo["host"], verify_origin.addr.to_string());
    assert_eq!(echo["version"], "HTTP/2.0", "HTTP/2 by ALPN toward the origin");
    assert_eq!(echo["identity"], "anonymous");
    assert_eq!(echo["client"], Value::Null);

    for path in ["/wrong/items", "/system/items", "/nocert/items"] {
        let (status, _, body) = get_with(&sidecar.url(path), &[]).await;
        assert_eq!(status, 502, "{path}: {}", String::from_utf8_lossy(&body));
    }
    let (status, _, body) = get_with(&sidecar.url("/unverified/x"), &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    let (status, _, body) = get_with(&sidecar.url("/mutual/x"), &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_of(&body)["client"], subject("gateway"));

    let (status, _, body) = get_with(&sidecar.url("/p/x?y=2"), &[("host", "public.example.test")]).await;
    assert_eq!(status, 200);
    let echo = json_of(&body);
    assert_eq!(echo["path"], "/plain/p/x");
    assert_eq!(echo["query"], "y=2");
    assert_eq!(echo["headers"]["host"], json!([plain.addr.to_string()]));

    // The app's own calls through the egress listener.
    let (status, _, body) = get_with(&format!("http://{}/out/z", sidecar.egress), &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_of(&body)["path"], "/base/out/z");
    assert_eq!(
        get_with(&sidecar.url("/out/z"), &[]).await.0,
        404,
        "egress routes are not inbound"
    );

    let lines = sidecar.wait_audit(8).await;
    assert!(
        lines
            .iter()
            .any(|l| l["route"] == "wrong-ca" && l["status"] == 502 && l["decision"] == "error")
    );
}

#[tokio::test]
async fn certificate_rotation_under_steady_requests() {
    let backend = Backend::start().await;
    let ca = Ca::new("Test CA");
    let first = ca.server("api-1", &[HOST]);
    let second = ca.server("api-2", &[HOST]);
    let config = json!({"routes": [tls_route("api", &[HOST], backend.port())]});
    let dir = tempfile::tempdir().unwrap();
    loaded(
        "g1",
        config.clone(),
        json!({"routes": {"api": {"tls": first.material()}}}),
    )
    .write_dir(dir.path())
    .unwrap();
    let sidecar = Sidecar::start_with(dir.path(), &["--reload-interval", "50ms"]).await;
    wait_tls(&sidecar, HOST, &ca.pem).await;

    // A kept-alive connection opened before the rotation keeps working after it.
    let mut kept = TlsConn::open(sidecar.inbound_tls, HOST, default_client(&ca.pem, None))
        .await
        .expect("kept connection");
    assert_eq!(kept.server_cert, first.der());

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, ok, addr, ca) = (stop.clone(), ok.clone(), sidecar.inbound_tls, ca.pem.clone());
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut seen = std::collections::BTreeSet::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                match tls_get(addr, HOST, default_client(&ca, None), "/x").await {
                    Ok(a) if a.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        seen.insert(a.server_cert);
                    }
                    Ok(a) => failures.push(format!("status {}", a.status)),
                    Err(e) => failures.push(e),
                }
            }
            (failures, seen)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    loaded("g2", config, json!({"routes": {"api": {"tls": second.material()}}}))
        .write_dir(dir.path())
        .unwrap();
    assert!(sidecar.wait_generation("g2", Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = std::collections::BTreeSet::new();
    for w in workers {
        let (failures, s) = w.await.unwrap();
        assert!(failures.is_empty(), "failed requests during the rotation: {failures:?}");
        seen.extend(s);
    }
    assert!(
        ok.load(Ordering::Relaxed) > 20,
        "too few requests: {}",
        ok.load(Ordering::Relaxed)
    );
    assert!(
        seen.contains(&first.der()) && seen.contains(&second.der()),
        "both certificates served"
    );
    let a = kept.get("/after").await.expect("the kept connection still serves");
    assert_eq!(a.status, 200);
    let fresh = tls_get(sidecar.inbound_tls, HOST, default_client(&ca.pem, None), "/")
        .await
        .unwrap();
    assert_eq!(fresh.server_cert, second.der());
}

#[tokio::test]
async fn bad_tls_material_is_refused_and_the_last_good_serves() {
    let backend = Backend::start().await;
    let ca = Ca::new("Test CA");
    let good = ca.server("api", &[HOST]);
    let other = ca.server("other", &[HOST]);
    let config = json!({"routes": [tls_route("api", &[HOST], backend.port())]});
    let dir = tempfile::tempdir().unwrap();
    loaded(
        "good",
        config.clone(),
        json!({"routes": {"api": {"tls": good.material()}}}),
    )
    .write_dir(dir.path())
    .unwrap();
    let sidecar = Sidecar::start_with(dir.path(), &["--reload-interval", "50ms"]).await;
    wait_tls(&sidecar, HOST, &ca.pem).await;

    let mut cc_route = tls_route("api", &[HOST], backend.port());
    cc_route["profiles"] = json!(["partners"]);
    let cc_config = json!({
        "profiles": [{"name": "partners", "auth": {"type": "ClientCertificate"}}],
        "routes": [cc_route],
    });
    let leaf_as_ca = ca.client("not-a-ca", &[]);
    let bad: Vec<(&str, Value, Value, &str)> = vec![
        (
            "no-key",
            config.clone(),
            json!({"routes": {"api": {"tls": {"certChainPem": good.cert_pem, "keyPem": ""}}}}),
            "route \"api\"",
        ),
        (
            "mismatch",
            config.clone(),
            json!({"routes": {"api": {"tls": {"certChainPem": good.cert_pem, "keyPem": other.key_pem}}}}),
            "does not match",
        ),
        (
            "expired",
            config.clone(),
            json!({"routes": {"api": {"tls": ca.expired_server("api", &[HOST]).material()}}}),
            "expired",
        ),
        (
            "not-a-ca",
            cc_config,
            json!({"profiles": {"partners": {"clientCaPem": leaf_as_ca.cert_pem}},
                   "routes": {"api": {"tls": good.material()}}}),
            "profile \"partners\"",
        ),
    ];
    for (i, (generation, config, secrets, message)) in bad.into_iter().enumerate() {
        let errors_before = reload_errors(&sidecar).await;
        loaded(generation, config, secrets).write_dir(dir.path()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while reload_errors(&sidecar).await == errors_before {
            assert!(Instant::now() < deadline, "{generation}: never refused");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(sidecar.readiness().await, (true, "good".to_owned()), "{generation}");
        let log = sidecar.log();
        let refusal = log
            .lines()
            .filter(|l| l.contains("configuration refused"))
            .nth(i)
            .unwrap_or_else(|| panic!("{generation}: no refusal logged:\n{log}"));
        let error = serde_json::from_str::<Value>(refusal).expect("JSON log")["fields"]["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(error.contains(message), "{generation}: {error}");
        let a = tls_get(sidecar.inbound_tls, HOST, default_client(&ca.pem, None), "/")
            .await
            .expect("the last good TLS configuration serves");
        assert_eq!(a.status, 200);
        assert_eq!(a.server_cert, good.der());
    }
    let log = sidecar.log();
    for key in [&good.key_pem, &other.key_pem] {
        let body = key.lines().nth(1).unwrap();
        assert!(!log.contains(body), "key material reached the log");
    }
}

async fn reload_errors(sidecar: &Sidecar) -> u64 {
    sidecar
        .metrics()
        .await
        .lines()
        .find(|l| l.starts_with("portcullis_config_reloads_total{result=\"error\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn bad_material_at_startup_serves_nothing_until_fixed() {
    let backend = Backend::start().await;
    let ca = Ca::new("Test CA");
    let config = json!({"routes": [tls_route("api", &[HOST], backend.port())]});
    let dir = tempfile::tempdir().unwrap();
    loaded(
        "expired",
        config.clone(),
        json!({"routes": {"api": {"tls": ca.expired_server("api", &[HOST]).material()}}}),
    )
    .write_dir(dir.path())
    .unwrap();
    let sidecar = Sidecar::start_with(dir.path(), &["--reload-interval", "50ms"]).await;
    assert_eq!(sidecar.readiness().await, (false, String::new()));
    // No TLS configuration: the handshake is refused, and nothing hangs.
    let refused = tls_get(sidecar.inbound_tls, HOST, default_client(&ca.pem, None), "/").await;
    assert!(refused.is_err(), "{refused:?}");

    loaded(
        "fixed",
        config,
        json!({"routes": {"api": {"tls": ca.server("api", &[HOST]).material()}}}),
    )
    .write_dir(dir.path())
    .unwrap();
    assert!(sidecar.wait_generation("fixed", Duration::from_secs(10)).await);
    let a = tls_get(sidecar.inbound_tls, HOST, default_client(&ca.pem, None), "/")
        .await
        .expect("served once fixed");
    assert_eq!(a.status, 200);
}

/// Issue 15, item 1: on `--inbound-tls` the handshake timeout covers the TLS handshake and
/// the first bytes of HTTP after it: a client that completes the handshake and then stays
/// silent, or stops after 23 of the 24 bytes of the HTTP/2 preface, is cut.
#[tokio::test]
async fn the_handshake_timeout_covers_tls_and_the_first_bytes_after_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let backend = Backend::start().await;
    let ca = Ca::new("Test CA");
    let dir = tempfile::tempdir().unwrap();
    loaded(
        "g1",
        json!({"routes": [tls_route("api", &[HOST], backend.port())]}),
        json!({"routes": {"api": {"tls": ca.server("api", &[HOST]).material()}}}),
    )
    .write_dir(dir.path())
    .unwrap();
    let sidecar = Sidecar::start_with(dir.path(), &["--handshake-timeout", "700ms"]).await;
    wait_tls(&sidecar, HOST, &ca.pem).await;

    let connector = tokio_rustls::TlsConnector::from(default_client(&ca.pem, None));
    let mut conns = Vec::new();
    for half_preface in [false, true] {
        let tcp = tokio::net::TcpStream::connect(sidecar.inbound_tls).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from(HOST).unwrap();
        let mut tls = connector.connect(name, tcp).await.expect("handshake");
        if half_preface {
            tls.write_all(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..23]).await.unwrap();
            tls.flush().await.unwrap();
        }
        conns.push(tls);
    }
    for (i, tls) in conns.iter_mut().enumerate() {
        let mut buf = [0u8; 64];
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "TLS connection {i} still open");
    }
    // Honest clients are served.
    let answer = tls_get(sidecar.inbound_tls, HOST, default_client(&ca.pem, None), "/ok")
        .await
        .expect("served");
    assert_eq!(answer.status, 200);
    let metrics = sidecar.metrics().await;
    assert!(
        metrics.contains("portcullis_connections_timed_out_total{listener=\"inbound_tls\",phase=\"handshake\"} 2"),
        "{metrics}"
    );
}

/// A connection whose client certificate was verified against a CA that a reload removed is
/// closed (once idle): its next request cannot ride on the old verification, and a new
/// connection is verified against the CAs now in force.
#[tokio::test]
async fn a_reload_that_removes_a_ca_closes_the_connections_it_verified() {
    let backend = Backend::start().await;
    let server_ca = Ca::new("Server CA");
    let partners_ca = Ca::new("Partners CA");
    let other_ca = Ca::new("Other CA");
    let dir = tempfile::tempdir().unwrap();
    let write = |generation: &str, client_ca: &str| {
        let mut route = tls_route("partners", &[HOST], backend.port());
        route["profiles"] = json!(["partners"]);
        loaded(
            generation,
            json!({
                "profiles": [{"name": "partners", "auth": {"type": "ClientCertificate", "allowedSubjects": []}}],
                "routes": [route],
            }),
            json!({
                "profiles": {"partners": {"clientCaPem": client_ca}},
                "routes": {"partners": {"tls": server_ca.server("api", &[HOST]).material()}},
            }),
        )
        .write_dir(dir.path())
        .unwrap();
    };
    write("g1", &partners_ca.pem);
    let sidecar = Sidecar::start(dir.path()).await;
    wait_tls(&sidecar, HOST, &server_ca.pem).await;
    let leaf = partners_ca.client("partner-a", &[]);
    let config = default_client(&server_ca.pem, Some(&leaf));
    let mut conn = TlsConn::open(sidecar.inbound_tls, HOST, config.clone())
        .await
        .expect("connect");
    assert_eq!(conn.get("/orders").await.expect("first call").status, 200);

    write("g2", &other_ca.pem);
    assert!(sidecar.wait_generation("g2", Duration::from_secs(10)).await);
    // Bounded: the connection is told to close within a few seconds of the reload.
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        match conn.get("/orders").await {
            Err(_) => break,
            Ok(answer) => {
                assert_eq!(answer.status, 200);
                assert!(Instant::now() < deadline, "the connection outlived its CA");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let again = tls_get(sidecar.inbound_tls, HOST, config, "/orders").await;
    assert!(
        again.is_err() || again.as_ref().is_ok_and(|a| a.status != 200),
        "a new connection with the removed CA's certificate was served: {again:?}"
    );
}
