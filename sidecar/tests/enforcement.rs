//! Black-box tests of enforcement through the real binary: authentication, IP ranges, rate
//! limits (including seed 002 section 6), refunds, and what reaches the app and the audit log.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::*;
use md5::Digest;
use serde_json::{Value, json};

async fn sidecar_for(l: portcullis_config::Loaded) -> (Sidecar, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    l.write_dir(dir.path()).unwrap();
    (Sidecar::start(dir.path()).await, dir)
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn route(name: &str, prefix: &str, profiles: &[&str], port: u16) -> Value {
    json!({"name": name, "pathPrefix": prefix, "profiles": profiles, "backend": {"type": "Local", "port": port}})
}

#[tokio::test]
async fn basic_right_wrong_and_missing() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = sidecar_for(loaded(
        "g1",
        json!({
            "profiles": [{"name": "accounting", "auth": {"type": "Basic"}}],
            "routes": [route("finance", "/finance", &["accounting"], backend.port())],
        }),
        json!({"profiles": {"accounting": {"basic": {"username": "alice", "password": "s3cret-pw"}}}}),
    ))
    .await;
    let (status, _, body) = get_with(
        &sidecar.url("/finance/x"),
        &[("authorization", &basic("alice", "s3cret-pw"))],
    )
    .await;
    assert_eq!(status, 200);
    let h = &json_of(&body)["headers"];
    assert_eq!(h["x-portcullis-identity"], json!(["alice"]));
    assert_eq!(h["x-portcullis-profile"], json!(["accounting"]));
    assert_eq!(h["x-portcullis-route"], json!(["finance"]));

    for auth in [Some(basic("alice", "wrong")), Some(basic("bob", "s3cret-pw")), None] {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let (status, resp_headers, body) = get_with(&sidecar.url("/finance/x"), &headers).await;
        assert_eq!(status, 401, "{auth:?}");
        assert!(resp_headers.contains_key("www-authenticate"));
        assert_eq!(json_of(&body)["route"], "finance");
    }
    // Outside the route's prefix: no route.
    assert_eq!(get_with(&sidecar.url("/other"), &[]).await.0, 404);

    let lines = sidecar.wait_audit(5).await;
    assert_eq!(lines[0]["identity"], "alice");
    assert_eq!(lines[0]["profile"], "accounting");
    assert_eq!(lines[1]["status"], 401);
    assert_eq!(lines[1]["decision"], "deny");
    assert_ne!(lines[1]["reason"], "-");
    let raw = std::fs::read_to_string(&sidecar.audit).unwrap() + &sidecar.log();
    assert!(!raw.contains("s3cret-pw"), "a password reached a log");
}

#[tokio::test]
async fn api_key_with_signature() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = sidecar_for(loaded(
        "g1",
        json!({
            "profiles": [{"name": "partners", "auth": {"type": "ApiKey", "keyParam": "apikey",
                "signature": {"param": "sig", "algorithm": "MD5", "clockSkewSeconds": 300}}}],
            "routes": [route("catalog", "/", &["partners"], backend.port())],
        }),
        json!({"profiles": {"partners": {"apiKeys": {"2fvmer3qbk7f3jnqneg58bu2": "qvxkmw57pec7"}}}}),
    ))
    .await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let sig = hex::encode(md5::Md5::digest(format!("2fvmer3qbk7f3jnqneg58bu2qvxkmw57pec7{now}")));
    let (status, _, body) = get_with(
        &sidecar.url(&format!("/items?apikey=2fvmer3qbk7f3jnqneg58bu2&sig={sig}")),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        json_of(&body)["headers"]["x-portcullis-identity"],
        json!(["2fvmer3qbk7f3jnqneg58bu2"])
    );
    let (status, _, _) = get_with(
        &sidecar.url("/items?apikey=2fvmer3qbk7f3jnqneg58bu2&sig=65a08176826fa4621116997e1dd775fa"),
        &[],
    )
    .await;
    assert_eq!(status, 401, "a signature from 2008 is outside the clock-skew window");
    let lines = sidecar.wait_audit(2).await;
    let raw = serde_json::to_string(&lines).unwrap();
    assert!(
        !raw.contains("qvxkmw57pec7") && !raw.contains(&sig),
        "secret or signature logged: {raw}"
    );
}

#[tokio::test]
async fn outside_trusted_ip_ranges_is_403() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = sidecar_for(loaded(
        "g1",
        json!({
            "profiles": [{"name": "office", "auth": {"type": "Basic"},
                "trustedIpRanges": [{"from": "10.20.0.0", "to": "10.20.255.255"}]}],
            "routes": [route("finance", "/", &["office"], backend.port())],
        }),
        json!({"profiles": {"office": {"basic": {"username": "alice", "password": "pw"}}}}),
    ))
    .await;
    let (status, _, body) = get_with(
        &sidecar.url("/x"),
        &[
            ("authorization", &basic("alice", "pw")),
            ("x-forwarded-for", "10.20.0.5"),
        ],
    )
    .await;
    assert_eq!(
        status, 403,
        "127.0.0.1 is outside, and X-Forwarded-For from an untrusted peer is ignored"
    );
    assert_eq!(json_of(&body)["error"], "forbidden");
}

#[tokio::test]
async fn exactly_n_of_64_concurrent_clients_are_admitted() {
    const N: usize = 7;
    let backend = Backend::start().await;
    let (sidecar, _dir) = sidecar_for(loaded(
        "g1",
        json!({
            "profiles": [{"name": "open", "auth": {"type": "Anonymous"}, "rateLimitPerMinute": N}],
            "routes": [route("app", "/", &["open"], backend.port())],
        }),
        json!({}),
    ))
    .await;
    let url = sidecar.url("/x");
    let calls = (0..64).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { get_with(&url, &[]).await })
    });
    let mut ok = 0;
    let mut limited = 0;
    for call in calls {
        let (status, headers, _) = call.await.unwrap();
        assert_eq!(headers["ratelimit-limit"], N.to_string().as_str());
        match status.as_u16() {
            200 => ok += 1,
            429 => {
                limited += 1;
                assert!(headers.contains_key("retry-after"));
                assert_eq!(headers["ratelimit-remaining"], "0");
                assert!(headers.contains_key("ratelimit-reset"));
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, limited), (N, 64 - N));
    let metrics = sidecar.metrics().await;
    assert!(
        metrics.contains("portcullis_rate_limit_rejections_total{scope=\"profile\"} 57"),
        "{metrics}"
    );
}

/// Ten routes; route r0 is reached through profile `limited` (5 per minute); the org
/// allowance is 10.
async fn seed_002(backend: &Backend) -> (Sidecar, tempfile::TempDir) {
    let mut routes = vec![route("r0", "/r0", &["limited"], backend.port())];
    routes.extend((1..10).map(|i| route(&format!("r{i}"), &format!("/r{i}"), &["open"], backend.port())));
    sidecar_for(loaded(
        "g1",
        json!({
            "orgAllowance": 10,
            "profiles": [
                {"name": "limited", "auth": {"type": "Anonymous"}, "rateLimitPerMinute": 5},
                {"name": "open", "auth": {"type": "Anonymous"}},
            ],
            "routes": routes,
        }),
        json!({}),
    ))
    .await
}

async fn status(sidecar: &Sidecar, path: &str) -> u16 {
    get_with(&sidecar.url(path), &[]).await.0.as_u16()
}

#[tokio::test]
async fn seed_002_profile_limit_then_org_allowance() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = seed_002(&backend).await;
    for _ in 0..5 {
        assert_eq!(status(&sidecar, "/r0").await, 200);
    }
    assert_eq!(status(&sidecar, "/r0").await, 429, "the profile's 5 are used");
    for i in 1..=5 {
        assert_eq!(
            status(&sidecar, &format!("/r{i}")).await,
            200,
            "r{i}: 5 hits left in the org"
        );
    }
    for i in 6..10 {
        assert_eq!(
            status(&sidecar, &format!("/r{i}")).await,
            429,
            "r{i}: the org allowance is used"
        );
    }
    let metrics = sidecar.metrics().await;
    assert!(
        metrics.contains("portcullis_rate_limit_rejections_total{scope=\"org\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_rate_limit_rejections_total{scope=\"profile\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn seed_002_org_allowance_takes_precedence() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = seed_002(&backend).await;
    for _ in 0..2 {
        assert_eq!(status(&sidecar, "/r0").await, 200);
    }
    for i in 1..=8 {
        assert_eq!(status(&sidecar, &format!("/r{i}")).await, 200);
    }
    assert_eq!(status(&sidecar, "/r9").await, 429);
    assert_eq!(
        status(&sidecar, "/r0").await,
        429,
        "the profile has 3 left but the org none"
    );
    // 404s are never counted: no route, or the backend's own 404.
    assert_eq!(status(&sidecar, "/nowhere").await, 404);
}

#[tokio::test]
async fn backend_404_is_refunded_and_no_route_not_counted() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = sidecar_for(loaded(
        "g1",
        json!({
            "profiles": [{"name": "open", "auth": {"type": "Anonymous"}, "rateLimitPerMinute": 2}],
            "routes": [route("app", "/status", &["open"], backend.port())],
        }),
        json!({}),
    ))
    .await;
    for _ in 0..5 {
        assert_eq!(status(&sidecar, "/status/404").await, 404, "the backend's own 404");
        assert_eq!(status(&sidecar, "/nowhere").await, 404, "no route");
    }
    assert_eq!(status(&sidecar, "/status/200").await, 200);
    assert_eq!(status(&sidecar, "/status/200").await, 200);
    assert_eq!(status(&sidecar, "/status/200").await, 429);
}

#[tokio::test]
async fn identity_header_replaces_the_audited_identity() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = sidecar_for(loaded(
        "g1",
        json!({
            "profiles": [{"name": "accounting", "auth": {"type": "Basic"}, "identityHeader": "X-App-Key"}],
            "routes": [route("finance", "/", &["accounting"], backend.port())],
        }),
        json!({"profiles": {"accounting": {"basic": {"username": "alice", "password": "pw"}}}}),
    ))
    .await;
    let (status, _, _) = get_with(
        &sidecar.url("/x"),
        &[("authorization", &basic("alice", "pw")), ("x-app-key", "app-42")],
    )
    .await;
    assert_eq!(status, 200);
    let lines = sidecar.wait_audit(1).await;
    assert_eq!(lines[0]["identity"], "app-42");
}

#[tokio::test]
async fn forwarded_for_is_believed_from_a_trusted_proxy() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = sidecar_for(loaded(
        "g1",
        json!({
            "trustedProxies": ["127.0.0.0/8"],
            "profiles": [{"name": "office", "auth": {"type": "Basic"},
                "trustedIpRanges": [{"from": "10.20.0.0", "to": "10.20.255.255"}]}],
            "routes": [route("finance", "/", &["office"], backend.port())],
        }),
        json!({"profiles": {"office": {"basic": {"username": "alice", "password": "pw"}}}}),
    ))
    .await;
    let auth = basic("alice", "pw");
    // The peer (127.0.0.1) is a trusted proxy: the nearest untrusted hop is the client.
    let via_proxy = [
        ("authorization", auth.as_str()),
        ("x-forwarded-for", "203.0.113.9, 10.20.0.5"),
    ];
    let (status, _, body) = get_with(&sidecar.url("/x"), &via_proxy).await;
    assert_eq!(status, 200);
    let told = &json_of(&body)["headers"];
    assert_eq!(told["x-portcullis-identity"], json!(["alice"]));
    // The app is told the client decided on, and the chain with the sidecar's peer added.
    assert_eq!(told["x-real-ip"], json!(["10.20.0.5"]));
    assert_eq!(told["x-forwarded-for"], json!(["203.0.113.9, 10.20.0.5, 127.0.0.1"]));
    let outside = [
        ("authorization", auth.as_str()),
        ("x-forwarded-for", "10.20.0.5, 203.0.113.9"),
    ];
    assert_eq!(get_with(&sidecar.url("/x"), &outside).await.0, 403);
    let lines = sidecar.wait_audit(2).await;
    assert_eq!(lines[0]["client_ip"], "10.20.0.5");
    assert_eq!(lines[1]["client_ip"], "203.0.113.9");
}

#[tokio::test]
async fn api_key_in_a_header_and_several_basic_profiles() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = sidecar_for(loaded(
        "g1",
        json!({
            "profiles": [
                {"name": "partners", "auth": {"type": "ApiKey", "keyParam": "apikey", "keyHeader": "X-Api-Key"}},
                {"name": "accounting", "auth": {"type": "Basic"}},
                {"name": "payroll", "auth": {"type": "Basic"}},
            ],
            "routes": [
                route("catalog", "/catalog", &["partners"], backend.port()),
                route("finance", "/finance", &["accounting", "payroll"], backend.port()),
            ],
        }),
        json!({"profiles": {
            "partners": {"apiKeys": {"k-123": "unused-secret"}},
            "accounting": {"basic": {"username": "alice", "password": "a"}},
            "payroll": {"basic": {"username": "bob", "password": "b"}},
        }}),
    ))
    .await;
    let (status, _, body) = get_with(&sidecar.url("/catalog/1"), &[("x-api-key", "k-123")]).await;
    assert_eq!(status, 200);
    assert_eq!(json_of(&body)["headers"]["x-portcullis-identity"], json!(["k-123"]));
    let (status, headers, _) = get_with(&sidecar.url("/catalog/1"), &[("x-api-key", "k-999")]).await;
    assert_eq!(status, 401);
    assert_eq!(
        headers["www-authenticate"],
        "APIKey realm=\"catalog\", param=\"apikey\""
    );
    let (status, _, body) = get_with(&sidecar.url("/finance"), &[("authorization", &basic("bob", "b"))]).await;
    assert_eq!(status, 200, "the second Basic profile admits bob");
    assert_eq!(json_of(&body)["headers"]["x-portcullis-profile"], json!(["payroll"]));
}

#[tokio::test]
async fn ambiguous_paths_are_refused_before_routing() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = sidecar_for(loaded(
        "g1",
        json!({
            "profiles": [{"name": "office", "auth": {"type": "Basic"}}],
            "routes": [
                route("public", "/public", &[], backend.port()),
                route("admin", "/admin", &["office"], backend.port()),
            ],
        }),
        json!({"profiles": {"office": {"basic": {"username": "alice", "password": "pw"}}}}),
    ))
    .await;
    assert_eq!(get_with(&sidecar.url("/public/x"), &[]).await.0, 200);
    for path in [
        "/public/../admin/users",
        "/public/%2e%2e/admin/users",
        "/public/%2E%2E%2Fadmin",
    ] {
        let (status, _, body) = get_with(&sidecar.url(path), &[]).await;
        assert_eq!(status, 400, "{path}");
        assert_eq!(json_of(&body)["error"], "bad request");
    }
}
