//! Decision tests: whole configurations in, outcomes out, with a fake clock.

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine as _;
use http::HeaderMap;
use portcullis_config::{Loaded, SecretMaterial, SidecarConfig};
use serde_json::{Value, json};

use super::*;

const T0: u64 = 1_764_000_000_000;

fn loaded(config: Value, secrets: Value) -> Loaded {
    let mut config = config;
    config["schemaVersion"] = json!(1);
    config["generation"] = json!("g");
    config["namespace"] = json!("demo");
    let mut secrets = secrets;
    secrets["schemaVersion"] = json!(1);
    secrets["generation"] = json!("g");
    Loaded {
        config: serde_json::from_value::<SidecarConfig>(config).unwrap(),
        secrets: serde_json::from_value::<SecretMaterial>(secrets).unwrap(),
    }
}

fn engine(config: Value, secrets: Value) -> Engine {
    Engine::compile(&loaded(config, secrets), Arc::new(InMemoryLimiter::new())).unwrap()
}

fn route(name: &str, prefix: &str, profiles: &[&str]) -> Value {
    json!({"name": name, "pathPrefix": prefix, "profiles": profiles, "backend": {"type": "Local", "port": 8080}})
}

/// A request builder.
struct Req {
    method: &'static str,
    host: Option<&'static str>,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    peer: IpAddr,
    tls: bool,
    listener: Listener,
    cert: Option<PeerCertificate>,
}

fn get(path: &str) -> Req {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (path.to_owned(), None),
    };
    Req {
        method: "GET",
        host: Some("api.example.com"),
        path,
        query,
        headers: HeaderMap::new(),
        peer: "127.0.0.1".parse().unwrap(),
        tls: false,
        listener: Listener::Inbound,
        cert: None,
    }
}

impl Req {
    fn header(mut self, k: &'static str, v: &str) -> Self {
        self.headers.append(k, v.parse().unwrap());
        self
    }
    fn basic(self, user: &str, pw: &str) -> Self {
        let v = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
        );
        self.header("authorization", &v)
    }
    fn from(mut self, peer: &str) -> Self {
        self.peer = peer.parse().unwrap();
        self
    }
    fn view(&self) -> RequestView<'_> {
        RequestView {
            method: self.method,
            host: self.host,
            authority: self.host,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            peer: self.peer,
            tls: self.tls,
            listener: self.listener,
            client_cert: self.cert.as_ref(),
            form: None,
        }
    }
}

/// (status, route, profile, identity) of a decision.
fn verdict(e: &Engine, r: &Req, now: u64) -> (u16, String, String, String) {
    match e.decide(&r.view(), now) {
        Outcome::BadRequest { .. } => (400, "-".into(), "-".into(), "-".into()),
        Outcome::NoRoute => (404, "-".into(), "-".into(), "-".into()),
        Outcome::Redirect { route, .. } => (308, route.into(), "-".into(), "-".into()),
        Outcome::Deny(d) => (denial_status(&d), d.route.into(), d.profile.into(), "-".into()),
        Outcome::Allow(a) => (200, a.route.name.to_string(), a.profile.into(), a.identity.into_owned()),
    }
}

fn denial_status(d: &Denial<'_>) -> u16 {
    match d.kind {
        DenialKind::Unauthorized { .. } => 401,
        DenialKind::Forbidden | DenialKind::InsufficientScope { .. } => 403,
        DenialKind::RateLimited { .. } | DenialKind::Throttled { .. } => 429,
        DenialKind::StoreUnavailable { .. } | DenialKind::TooManyConsumers { .. } => 503,
        DenialKind::MethodNotAllowed { .. } => 405,
    }
}

fn status(e: &Engine, r: &Req) -> u16 {
    verdict(e, r, T0).0
}

#[test]
fn routes_without_profiles_are_anonymous_and_unmatched_paths_404() {
    let e = engine(json!({"routes": [route("app", "/app", &[])]}), json!({}));
    assert_eq!(
        verdict(&e, &get("/app/x"), T0),
        (200, "app".into(), "anonymous".into(), "anonymous".into())
    );
    assert_eq!(status(&e, &get("/apple")), 404);
    assert_eq!(status(&e, &get("/app/../admin")), 400);
}

#[test]
fn most_specific_route_wins() {
    let mut exact = route("exact", "/", &[]);
    exact["hosts"] = json!(["api.example.com"]);
    let mut wild = route("wild", "/", &[]);
    wild["hosts"] = json!(["*.example.com"]);
    let mut posts = route("posts", "/v1", &[]);
    posts["methods"] = json!(["POST"]);
    let e = engine(
        json!({"routes": [route("any", "/v1", &[]), wild, exact, posts]}),
        json!({}),
    );
    let at = |host: &'static str, method: &'static str, path: &str| {
        let mut r = get(path);
        r.host = Some(host);
        r.method = method;
        verdict(&e, &r, T0).1
    };
    assert_eq!(at("api.example.com", "GET", "/v1/x"), "exact");
    assert_eq!(
        at("API.example.com.", "GET", "/v1/x"),
        "exact",
        "hosts compare normalized"
    );
    assert_eq!(at("www.example.com", "GET", "/v1/x"), "wild");
    assert_eq!(at("other.org", "GET", "/v1/x"), "any");
    assert_eq!(at("other.org", "POST", "/v1/x"), "posts");
    assert_eq!(at("other.org", "GET", "/v2"), "-");
}

fn basic_routes() -> Engine {
    engine(
        json!({
            "profiles": [
                {"name": "accounting", "auth": {"type": "Basic"},
                 "trustedIpRanges": [{"from": "127.0.0.0", "to": "127.255.255.255"}]},
                {"name": "payroll", "auth": {"type": "Basic"},
                 "trustedIpRanges": [{"from": "192.168.1.10", "to": "192.168.1.50"}]},
            ],
            "routes": [route("finance", "/", &["accounting", "payroll"])],
        }),
        json!({"profiles": {
            "accounting": {"basic": {"username": "alice", "password": "wonderland"}},
            "payroll": {"basic": {"username": "bob", "password": "builder"}},
        }}),
    )
}

#[test]
fn basic_401_and_403() {
    let e = basic_routes();
    assert_eq!(
        verdict(&e, &get("/x").basic("alice", "wonderland"), T0),
        (200, "finance".into(), "accounting".into(), "alice".into())
    );
    assert_eq!(status(&e, &get("/x").basic("alice", "nope")), 401);
    assert_eq!(status(&e, &get("/x")), 401);
    // Right and wrong credentials from outside payroll's ranges get the same answer (no
    // password oracle): accounting, which admits the address, refused them.
    let right = verdict(&e, &get("/x").basic("bob", "builder"), T0);
    let wrong = verdict(&e, &get("/x").basic("bob", "guess"), T0);
    assert_eq!(right, wrong, "right credentials, wrong address");
    assert_eq!(right.0, 401);
    assert_eq!(
        verdict(&e, &get("/x").basic("bob", "builder").from("192.168.1.20"), T0).3,
        "bob"
    );
    assert_eq!(status(&e, &get("/x").basic("bob", "builder").from("192.168.1.51")), 403);
    // From payroll's range, accounting's credentials are not looked at (out of its range)
    // and payroll refuses them: 401, as for any wrong password there.
    assert_eq!(
        status(&e, &get("/x").basic("alice", "wonderland").from("192.168.1.20")),
        401
    );
}

/// Two `Authorization` fields: the sidecar would check one while the app may read the other
/// (a valid one first, `x:y` after it). Refused before any credential is looked at.
#[test]
fn two_authorization_headers_are_a_bad_request() {
    let e = basic_routes();
    let two = get("/x").basic("alice", "wonderland").basic("x", "y");
    assert_eq!(verdict(&e, &two, T0).0, 400);
    let two = get("/x").basic("x", "y").basic("alice", "wonderland");
    assert_eq!(verdict(&e, &two, T0).0, 400);
    assert_eq!(verdict(&e, &get("/x").basic("alice", "wonderland"), T0).0, 200);
}

#[test]
fn outside_the_ranges_credentials_are_not_looked_at() {
    let e = engine(
        json!({
            "profiles": [{"name": "office", "auth": {"type": "Basic"},
                "trustedIpRanges": [{"from": "192.168.1.10", "to": "192.168.1.50"}]}],
            "routes": [route("finance", "/", &["office"])],
        }),
        json!({"profiles": {"office": {"basic": {"username": "bob", "password": "builder"}}}}),
    );
    let outside = |password| status(&e, &get("/x").basic("bob", password));
    assert_eq!(outside("builder"), 403);
    assert_eq!(outside("guess"), 403, "a wrong password is answered as the right one");
    assert_eq!(status(&e, &get("/x")), 403);
    assert_eq!(status(&e, &get("/x").basic("bob", "guess").from("192.168.1.20")), 401);
}

#[test]
fn unauthorized_carries_each_challenge_once() {
    let e = basic_routes();
    match e.decide(&get("/x").view(), T0) {
        Outcome::Deny(Denial {
            kind: DenialKind::Unauthorized { challenges },
            reason,
            ..
        }) => {
            assert_eq!(challenges, ["Basic realm=\"finance\", charset=\"UTF-8\""]);
            assert_eq!(reason, "no Basic credentials");
        }
        other => panic!("{other:?}"),
    }
    match e.decide(&get("/x").basic("alice", "nope").view(), T0) {
        Outcome::Deny(d) => assert_eq!(d.reason, "wrong username or password"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn forwarded_for_only_from_trusted_proxies() {
    let mut e = basic_routes();
    let spoof = get("/x")
        .basic("bob", "builder")
        .header("x-forwarded-for", "192.168.1.20");
    assert_eq!(status(&e, &spoof), 401, "the peer is not a trusted proxy");
    e.trusted_proxies = IpSet::from_nets(&["127.0.0.0/8".parse().unwrap()]);
    assert_eq!(status(&e, &spoof), 200);
}

fn api_keys() -> Engine {
    engine(
        json!({
            "profiles": [{"name": "partners", "auth": {"type": "ApiKey", "keyParam": "apikey",
                "signature": {"param": "sig", "algorithm": "MD5", "clockSkewSeconds": 300}}}],
            "routes": [route("catalog", "/", &["partners"])],
        }),
        json!({"profiles": {"partners": {"apiKeys": {"2fvmer3qbk7f3jnqneg58bu2": "qvxkmw57pec7"}}}}),
    )
}

#[test]
fn api_key_signatures_against_the_clock() {
    let e = api_keys();
    let seed = get("/items?apikey=2fvmer3qbk7f3jnqneg58bu2&sig=65a08176826fa4621116997e1dd775fa");
    assert_eq!(
        verdict(&e, &seed, 1_200_603_038_000),
        (
            200,
            "catalog".into(),
            "partners".into(),
            "2fvmer3qbk7f3jnqneg58bu2".into()
        )
    );
    assert_eq!(verdict(&e, &seed, (1_200_603_038 + 300) * 1000 + 999).0, 200);
    assert_eq!(verdict(&e, &seed, (1_200_603_038 + 301) * 1000).0, 401);
    assert_eq!(verdict(&e, &seed, (1_200_603_038 - 301) * 1000).0, 401);
    match e.decide(&get("/items").view(), T0) {
        Outcome::Deny(Denial {
            kind: DenialKind::Unauthorized { challenges },
            ..
        }) => assert_eq!(challenges, ["APIKey realm=\"catalog\", param=\"apikey\""]),
        other => panic!("{other:?}"),
    }
}

/// An unknown key costs what a known key with a wrong signature costs (the signature is tried
/// over the whole clock-skew window either way), so response times do not tell which keys
/// exist. Medians of alternating runs, with a wide margin (without the equal work the ratio is
/// in the hundreds).
#[test]
fn unknown_api_keys_take_as_long_as_known_ones() {
    let e = api_keys();
    let known = "/items?apikey=2fvmer3qbk7f3jnqneg58bu2&sig=00000000000000000000000000000000";
    let unknown = "/items?apikey=2fvmer3qbk7f3jnqneg58bu3&sig=00000000000000000000000000000000";
    let mut times = [Vec::new(), Vec::new()];
    for i in 0..60u32 {
        for (which, path) in [known, unknown].into_iter().enumerate() {
            // Each from its own address: the throttle must not answer for the parser.
            let r = get(path).from(&format!("10.{}.{}.{which}", i / 200, i % 200));
            let start = std::time::Instant::now();
            assert_eq!(verdict(&e, &r, T0).0, 401);
            times[which].push(start.elapsed());
        }
    }
    let median = |v: &mut Vec<std::time::Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64()
    };
    let (k, u) = (median(&mut times[0]), median(&mut times[1]));
    let ratio = k / u;
    assert!(
        (0.3..3.0).contains(&ratio),
        "known {k:e}s vs unknown {u:e}s: ratio {ratio}"
    );
}

#[test]
fn identity_header_replaces_only_the_audited_identity() {
    let e = engine(
        json!({
            "profiles": [{"name": "accounting", "auth": {"type": "Basic"}, "identityHeader": "X-App-Key"}],
            "routes": [route("finance", "/", &["accounting"])],
        }),
        json!({"profiles": {"accounting": {"basic": {"username": "alice", "password": "pw"}}}}),
    );
    let r = get("/").basic("alice", "pw").header("x-app-key", "app-42");
    let Outcome::Allow(a) = e.decide(&r.view(), T0) else {
        panic!("alice is admitted");
    };
    assert_eq!(a.identity, "alice", "the app is told who authenticated");
    assert_eq!(
        a.audit_identity.as_deref(),
        Some("app-42"),
        "the audit line names the header"
    );
    assert_eq!(verdict(&e, &get("/").basic("alice", "pw"), T0).3, "alice");
    let r = get("/").basic("alice", "wrong").header("x-app-key", "app-42");
    assert_eq!(status(&e, &r), 401, "the header never authenticates");
}

/// Seed 002 section 6: org allowance 10; route r0 through `limited` (5 per minute).
fn seed_002() -> Engine {
    let mut routes = vec![route("r0", "/r0", &["limited"])];
    routes.extend((1..10).map(|i| route(&format!("r{i}"), &format!("/r{i}"), &["open"])));
    engine(
        json!({
            "orgAllowance": 10,
            "profiles": [
                {"name": "limited", "auth": {"type": "Anonymous"}, "rateLimitPerMinute": 5},
                {"name": "open", "auth": {"type": "Anonymous"}},
            ],
            "routes": routes,
        }),
        json!({}),
    )
}

fn limited_scope(e: &Engine, path: &str, now: u64) -> Option<Scope> {
    match e.decide(&get(path).view(), now) {
        Outcome::Deny(Denial {
            kind: DenialKind::RateLimited { scope, .. },
            ..
        }) => Some(scope),
        Outcome::Allow(_) => None,
        other => panic!("{other:?}"),
    }
}

#[test]
fn seed_002_profile_limit_then_org_allowance() {
    let e = seed_002();
    for _ in 0..5 {
        assert_eq!(limited_scope(&e, "/r0", T0), None);
    }
    assert_eq!(limited_scope(&e, "/r0", T0), Some(Scope::Profile));
    for i in 1..=5 {
        assert_eq!(limited_scope(&e, &format!("/r{i}"), T0), None, "r{i}");
    }
    for i in 6..10 {
        assert_eq!(limited_scope(&e, &format!("/r{i}"), T0), Some(Scope::Org), "r{i}");
    }
    // A rolling minute later everything is available again.
    assert_eq!(limited_scope(&e, "/r0", T0 + 60_000), None);
}

#[test]
fn seed_002_org_allowance_takes_precedence() {
    let e = seed_002();
    for _ in 0..2 {
        assert_eq!(limited_scope(&e, "/r0", T0), None);
    }
    for i in 1..=8 {
        assert_eq!(limited_scope(&e, &format!("/r{i}"), T0), None);
    }
    assert_eq!(limited_scope(&e, "/r9", T0), Some(Scope::Org));
    assert_eq!(
        limited_scope(&e, "/r0", T0),
        Some(Scope::Org),
        "3 left in the profile, none in the org"
    );
    assert!(matches!(e.decide(&get("/nowhere").view(), T0), Outcome::NoRoute));
}

#[test]
fn refused_and_refunded_hits_are_not_counted() {
    let e = engine(
        json!({
            "orgAllowance": 3,
            "profiles": [{"name": "p", "auth": {"type": "Basic"}, "rateLimitPerMinute": 2}],
            "routes": [route("app", "/", &["p"])],
        }),
        json!({"profiles": {"p": {"basic": {"username": "u", "password": "pw"}}}}),
    );
    for _ in 0..5 {
        assert_eq!(status(&e, &get("/").basic("u", "bad")), 401);
    }
    for _ in 0..4 {
        match e.decide(&get("/").basic("u", "pw").view(), T0) {
            Outcome::Allow(a) => e.refund(&a),
            other => panic!("{other:?}"),
        }
    }
    match e.decide(&get("/").basic("u", "pw").view(), T0) {
        Outcome::Allow(a) => assert_eq!(
            a.rate,
            Some(RateInfo {
                limit: 2,
                remaining: 1,
                reset_secs: 60
            })
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(status(&e, &get("/").basic("u", "pw")), 200);
    assert_eq!(status(&e, &get("/").basic("u", "pw")), 429);
}

#[test]
fn limits_survive_a_recompile_with_the_same_limiter() {
    let limiter = Arc::new(InMemoryLimiter::new());
    let config = json!({
        "profiles": [{"name": "p", "auth": {"type": "Anonymous"}, "rateLimitPerMinute": 1}],
        "routes": [route("app", "/", &["p"])],
    });
    let first = Engine::compile(&loaded(config.clone(), json!({})), limiter.clone()).unwrap();
    assert_eq!(status(&first, &get("/")), 200);
    let second = Engine::compile(&loaded(config, json!({})), limiter).unwrap();
    assert_eq!(status(&second, &get("/")), 429);
}

/// Windows run on the monotonic reading of [`Now`]: a wall clock stepped forward an hour does
/// not empty a window, nor does one stepped back keep it full.
#[test]
fn limit_windows_follow_the_monotonic_clock_not_the_wall_clock() {
    let e = engine(
        json!({
            "profiles": [{"name": "p", "auth": {"type": "Anonymous"}, "rateLimitPerMinute": 1}],
            "routes": [route("app", "/", &["p"])],
        }),
        json!({}),
    );
    let at = |unix_ms: u64, mono_ms: u64| Now { unix_ms, mono_ms };
    let r = get("/");
    let decide = |now: Now| match e.decide(&r.view(), now) {
        Outcome::Allow(_) => 200,
        Outcome::Deny(_) => 429,
        other => panic!("{other:?}"),
    };
    assert_eq!(decide(at(T0, 5_000)), 200);
    assert_eq!(
        decide(at(T0 + 3_600_000, 6_000)),
        429,
        "the wall clock jumped; a second passed"
    );
    assert_eq!(
        decide(at(T0 - 3_600_000, 66_000)),
        200,
        "a minute passed, whatever the wall clock says"
    );
}

/// A method-restricted route guards every spelling an app serves it under: lower-case
/// methods are refused (frameworks upper-case them), HEAD goes where GET does.
#[test]
fn methods_cannot_walk_around_a_method_route() {
    let mut guarded = route("reports", "/report", &["office"]);
    guarded["methods"] = json!(["GET", "DELETE"]);
    let e = engine(
        json!({
            "profiles": [{"name": "office", "auth": {"type": "Basic"}},
                         {"name": "open", "auth": {"type": "Anonymous"}}],
            "routes": [guarded, route("open", "/", &["open"])],
        }),
        json!({"profiles": {"office": {"basic": {"username": "u", "password": "pw"}}}}),
    );
    let with = |method: &'static str| Req {
        method,
        ..get("/report/q")
    };
    assert_eq!(verdict(&e, &with("GET"), T0).0, 401);
    assert_eq!(
        verdict(&e, &with("HEAD"), T0).0,
        401,
        "HEAD is guarded by the GET route"
    );
    assert_eq!(verdict(&e, &with("get"), T0).0, 400);
    assert_eq!(verdict(&e, &with("Delete"), T0).0, 400);
    // A method the route does not list is not handed to the broader anonymous route: the app
    // may serve it under /report as well.
    match e.decide(&with("POST").view(), T0) {
        Outcome::Deny(d) => {
            assert!(
                matches!(
                    d.kind,
                    DenialKind::MethodNotAllowed {
                        allow: "GET, DELETE, HEAD"
                    }
                ),
                "{d:?}"
            );
            assert_eq!((d.route, d.reason), ("reports", "method not allowed on this route"));
        }
        other => panic!("POST went on: {other:?}"),
    }
    assert_eq!(verdict(&e, &with("PATCH"), T0).0, 405);
    assert_eq!(verdict(&e, &get("/elsewhere"), T0).1, "open");
}

/// Routes on the same path may split its methods: another route at the same place (host and
/// prefix) takes what the first does not list, and only then is a method refused.
#[test]
fn routes_on_one_path_may_split_its_methods() {
    let mut reads = route("reads", "/report", &["open"]);
    reads["methods"] = json!(["GET"]);
    let mut writes = route("writes", "/report", &["office"]);
    writes["methods"] = json!(["POST"]);
    let e = engine(
        json!({
            "profiles": [{"name": "office", "auth": {"type": "Basic"}},
                         {"name": "open", "auth": {"type": "Anonymous"}}],
            "routes": [reads, writes, route("rest", "/", &["open"])],
        }),
        json!({"profiles": {"office": {"basic": {"username": "u", "password": "pw"}}}}),
    );
    let with = |method: &'static str| Req {
        method,
        ..get("/report/q")
    };
    assert_eq!(verdict(&e, &with("GET"), T0).1, "reads");
    assert_eq!(verdict(&e, &with("POST"), T0).0, 401, "writes, which needs credentials");
    assert_eq!(verdict(&e, &with("DELETE"), T0).0, 405);
    let mut catch_all = route("report-rest", "/report", &["open"]);
    catch_all["methods"] = json!([]);
    let e = engine(
        json!({
            "profiles": [{"name": "open", "auth": {"type": "Anonymous"}}],
            "routes": [{"name": "reads", "pathPrefix": "/report", "methods": ["GET"], "profiles": ["open"],
                        "backend": {"type": "Local", "port": 8080}}, catch_all],
        }),
        json!({}),
    );
    assert_eq!(
        verdict(&e, &with("DELETE"), T0).1,
        "report-rest",
        "a route for every method on the same path"
    );
}

/// Letters outside ASCII that Java's case-insensitive comparisons take for ASCII ones do not
/// walk around a route: `/adm%C4%B1n` (`ı`) is not an anonymous call to `/`.
#[test]
fn unicode_case_variants_are_refused() {
    let mut admin = route("admin", "/admin", &["office"]);
    admin["caseInsensitive"] = json!(true);
    let e = engine(
        json!({
            "profiles": [{"name": "office", "auth": {"type": "Basic"}},
                         {"name": "open", "auth": {"type": "Anonymous"}}],
            "routes": [admin, route("secure", "/secure", &["office"]), route("open", "/", &["open"])],
        }),
        json!({"profiles": {"office": {"basic": {"username": "u", "password": "pw"}}}}),
    );
    for path in [
        "/adm%C4%B1n/x",
        "/ADM%C4%B0N",
        "/%C5%BFecure/x",
        "/admin%E2%84%AA/..",
        "/%C5%BFECURE",
    ] {
        let status = verdict(&e, &get(path), T0).0;
        assert!(status == 400 || status == 401, "{path}: {status}");
        assert_ne!(
            verdict(&e, &get(path), T0).1,
            "open",
            "{path} reached the anonymous route"
        );
    }
    assert_eq!(verdict(&e, &get("/adm%C4%B1n/x"), T0).0, 400);
    // Full case mappings: `ﬁ` upper-cases to `FI`, `ß` to `SS`.
    let e2 = engine(
        json!({
            "profiles": [{"name": "office", "auth": {"type": "Basic"}},
                         {"name": "open", "auth": {"type": "Anonymous"}}],
            "routes": [route("files", "/files", &["office"]), route("pass", "/pass", &["office"]),
                       route("open", "/", &["open"])],
        }),
        json!({"profiles": {"office": {"basic": {"username": "u", "password": "pw"}}}}),
    );
    assert_eq!(verdict(&e2, &get("/%EF%AC%81les/x"), T0).0, 400);
    assert_eq!(verdict(&e2, &get("/pa%C3%9F"), T0).0, 400);
    assert_eq!(verdict(&e2, &get("/pa%E1%BA%9E/x"), T0).0, 400);
    assert_eq!(
        verdict(&e, &get("/caf%C3%A9"), T0).1,
        "open",
        "other letters are just letters"
    );
    assert_eq!(
        verdict(&e, &get("/%C4%B1"), T0).1,
        "open",
        "a dotless i alone routes where i would"
    );
}

/// Look-alikes of a prefix that apps serve as it (format suffixes, trailing escapes) are the
/// route's, not a broader route's.
#[test]
fn look_alike_paths_belong_to_the_route_they_look_like() {
    let e = engine(
        json!({
            "profiles": [{"name": "office", "auth": {"type": "Basic"}},
                         {"name": "open", "auth": {"type": "Anonymous"}}],
            "routes": [route("admin", "/admin", &["office"]), route("open", "/", &["open"])],
        }),
        json!({"profiles": {"office": {"basic": {"username": "u", "password": "pw"}}}}),
    );
    for path in ["/admin.json", "/admin.", "/admin%20", "/admin%3F", "/admin.json/x"] {
        assert_eq!(
            verdict(&e, &get(path), T0),
            (401, "admin".into(), "office".into(), "-".into()),
            "{path}"
        );
    }
    assert_eq!(
        verdict(&e, &get("/administrator"), T0).1,
        "open",
        "a longer name is another segment"
    );
}

/// Hosts an app could read as another host are refused, not routed to a broader route.
#[test]
fn malformed_hosts_are_refused() {
    let mut admin = route("admin", "/", &["office"]);
    admin["hosts"] = json!(["admin.example"]);
    let e = engine(
        json!({
            "profiles": [{"name": "office", "auth": {"type": "Basic"}},
                         {"name": "open", "auth": {"type": "Anonymous"}}],
            "routes": [admin, route("open", "/", &["open"])],
        }),
        json!({"profiles": {"office": {"basic": {"username": "u", "password": "pw"}}}}),
    );
    for host in [
        "a@admin.example",
        "admin.example/x",
        "admin.example?",
        "admin.example#",
        "admin.example\\x",
        "admin..example",
        ".admin.example",
        "admin.example..",
        "[::1",
        "[zz]",
        "admin example",
    ] {
        let r = Req {
            host: Some(host),
            ..get("/x")
        };
        assert_eq!(verdict(&e, &r, T0).0, 400, "{host:?}");
    }
    for host in ["admin.example", "ADMIN.example.", "[::1]", "10.0.0.1", "api_1.example"] {
        let r = Req {
            host: Some(host),
            ..get("/x")
        };
        assert_ne!(verdict(&e, &r, T0).0, 400, "{host:?}");
    }
    let bad_port = Req {
        host: Some("admin.example:8x"),
        ..get("/x")
    };
    assert_eq!(verdict(&e, &bad_port, T0).0, 400);
}

#[test]
fn ssl_only_redirects_plain_http_keeping_the_query() {
    let mut r = route("secure", "/", &[]);
    r["sslOnly"] = json!(true);
    let e = engine(json!({"routes": [r]}), json!({}));
    match e.decide(&get("/a/b?x=1&y=2").view(), T0) {
        Outcome::Redirect { route, location } => {
            assert_eq!(route, "secure");
            assert_eq!(location, "https://api.example.com/a/b?x=1&y=2");
        }
        other => panic!("{other:?}"),
    }
    let mut tls = get("/a");
    tls.tls = true;
    assert_eq!(status(&e, &tls), 200);
    let mut hostless = get("/a");
    hostless.host = None;
    assert_eq!(status(&e, &hostless), 403);
}

#[test]
fn ssl_only_believes_x_forwarded_proto_only_from_a_trusted_proxy() {
    let mut r = route("secure", "/", &[]);
    r["sslOnly"] = json!(true);
    let mut e = engine(json!({"routes": [r]}), json!({}));
    let behind_ingress = get("/a").header("x-forwarded-proto", "https");
    assert_eq!(status(&e, &behind_ingress), 308, "the peer is not a trusted proxy");
    e.trusted_proxies = IpSet::from_nets(&["127.0.0.0/8".parse().unwrap()]);
    assert_eq!(status(&e, &behind_ingress), 200, "a TLS-terminating ingress said https");
    assert_eq!(status(&e, &get("/a").header("x-forwarded-proto", "http")), 308);
    assert_eq!(status(&e, &get("/a")), 308);
}

#[test]
fn egress_routes_only_on_the_egress_listener() {
    let mut r = route("out", "/", &[]);
    r["egress"] = json!(true);
    let e = engine(json!({"routes": [r]}), json!({}));
    assert_eq!(status(&e, &get("/")), 404);
    let mut out = get("/");
    out.listener = Listener::Egress;
    assert_eq!(status(&e, &out), 200);
}

#[test]
fn client_certificates_verified_for_the_profile() {
    let e = engine(
        json!({
            "profiles": [{"name": "partners", "auth": {"type": "ClientCertificate", "allowedSubjects": ["CN=billing"]}}],
            "routes": [route("b2b", "/", &["partners"])],
        }),
        json!({"profiles": {"partners": {"clientCaPem": "-----BEGIN CERTIFICATE-----"}}}),
    );
    let mut r = get("/");
    assert_eq!(status(&e, &r), 401);
    r.cert = Some(PeerCertificate {
        subject: "CN=billing".into(),
        sans: vec![],
        verified_for: vec!["partners".into()],
    });
    assert_eq!(verdict(&e, &r, T0).3, "CN=billing");
    r.cert.as_mut().unwrap().subject = "CN=other".into();
    assert_eq!(status(&e, &r), 401);
}

#[test]
fn unsupported_profile_types_fail_closed() {
    let e = engine(
        json!({
            "profiles": [{"name": "sso", "auth": {"type": "OAuth2", "provider": "Generic"}}],
            "routes": [route("api", "/", &["sso"])],
        }),
        json!({}),
    );
    assert_eq!(status(&e, &get("/").header("authorization", "Bearer anything")), 401);
}

#[test]
fn compile_errors_name_the_profile_and_never_a_secret() {
    let l = loaded(
        json!({
            "profiles": [{"name": "accounting", "auth": {"type": "Basic"}}],
            "routes": [route("finance", "/", &["accounting"])],
        }),
        json!({}),
    );
    let err = Engine::compile(&l, Arc::new(InMemoryLimiter::new())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "profile \"accounting\": basic missing from the secret material"
    );
    let l = loaded(json!({"routes": [route("finance", "/", &["ghost"])]}), json!({}));
    let err = Engine::compile(&l, Arc::new(InMemoryLimiter::new())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "route \"finance\": profile \"ghost\" is not in the configuration"
    );
}

mod paths;
mod signatures;

#[test]
fn password_guessing_is_throttled_per_user_and_address() {
    let e = engine(
        json!({
            "profiles": [{"name": "office", "auth": {"type": "Basic"}}],
            "routes": [route("finance", "/", &["office"])],
        }),
        json!({"profiles": {"office": {"basic": {"username": "bob", "password": "builder"}}}}),
    );
    let budget = crate::throttle::Budget::default();
    for n in 0..budget.per_user {
        let r = get("/x").basic("bob", &format!("guess-{n}"));
        assert_eq!(verdict(&e, &r, T0 + u64::from(n)).0, 401, "guess {n}");
    }
    // The user's budget is spent: even the right password is not looked at, from anywhere.
    let right = get("/x").basic("bob", "builder").from("10.9.9.9");
    match e.decide(&right.view(), T0 + 100) {
        Outcome::Deny(Denial {
            kind: DenialKind::Throttled { retry_after_secs },
            ..
        }) => assert!((1..=60).contains(&retry_after_secs), "{retry_after_secs}"),
        other => panic!("{other:?}"),
    }
    // Another user from another address is not affected; the window ends after a minute.
    assert_eq!(status(&e, &get("/x").basic("carol", "x").from("10.9.9.8")), 401);
    assert_eq!(verdict(&e, &right, T0 + 61_000).0, 200);
}

fn per_consumer(max_consumers: usize) -> Engine {
    let config = json!({
        "orgAllowance": 100,
        "profiles": [{"name": "partners", "auth": {"type": "ApiKey", "keyParam": "apikey"},
            "rateLimitPerMinute": 2, "rateLimitPer": "Consumer"}],
        "routes": [route("catalog", "/", &["partners"])],
    });
    let secrets = json!({"profiles": {"partners": {"apiKeys": {"k1": "s1", "k2": "s2", "k3": "s3"}}}});
    let limiter = InMemoryLimiter::new().with_max_consumers(max_consumers);
    Engine::compile(&loaded(config, secrets), Arc::new(limiter)).unwrap()
}

/// (status, reason or identity) of `apikey=key` at `now`.
fn by_key(e: &Engine, key: &str, now: u64) -> (u16, String) {
    match e.decide(&get(&format!("/items?apikey={key}")).view(), now) {
        Outcome::Allow(a) => (200, a.identity.into_owned()),
        Outcome::Deny(d) => (denial_status(&d), d.reason.into()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn per_consumer_limits_count_each_consumer_apart() {
    let e = per_consumer(100);
    for key in ["k1", "k2"] {
        assert_eq!(by_key(&e, key, T0), (200, key.into()));
        assert_eq!(by_key(&e, key, T0), (200, key.into()));
        assert_eq!(by_key(&e, key, T0), (429, "consumer rate limit exceeded".into()));
    }
    match e.decide(&get("/items?apikey=k1").view(), T0) {
        Outcome::Deny(Denial {
            kind: DenialKind::RateLimited { scope, info },
            identity,
            ..
        }) => {
            assert_eq!(scope, Scope::Consumer);
            assert_eq!((info.limit, info.remaining, info.reset_secs), (2, 0, 60));
            assert_eq!(identity.as_deref(), Some("k1"));
        }
        other => panic!("{other:?}"),
    }
    // A refund gives the consumer's hit back (and the org's), not another consumer's.
    match e.decide(&get("/items?apikey=k3").view(), T0) {
        Outcome::Allow(a) => e.refund(&a),
        other => panic!("{other:?}"),
    }
    for _ in 0..2 {
        assert_eq!(by_key(&e, "k3", T0).0, 200);
    }
    assert_eq!(by_key(&e, "k3", T0).0, 429);
    assert_eq!(by_key(&e, "k1", T0 + 60_000).0, 200, "the window rolls per consumer");
}

#[test]
fn per_consumer_counters_are_bounded_and_fail_closed() {
    let e = per_consumer(2);
    assert_eq!(by_key(&e, "k1", T0).0, 200);
    assert_eq!(by_key(&e, "k2", T0).0, 200);
    assert_eq!(
        by_key(&e, "k3", T0),
        (503, "too many consumers with live counters (fails closed)".into())
    );
    assert_eq!(by_key(&e, "k1", T0).0, 200, "kept consumers go on");
    assert_eq!(by_key(&e, "k3", T0 + 60_000).0, 200, "idle consumers make room");
}

#[test]
fn quotas_need_a_shared_store() {
    let l = loaded(
        json!({
            "profiles": [{"name": "metered", "auth": {"type": "Anonymous"},
                "quota": {"requests": 1000, "period": "Day"}}],
            "routes": [route("app", "/", &["metered"])],
        }),
        json!({}),
    );
    let err = Engine::compile(&l, Arc::new(InMemoryLimiter::new()))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("profile \"metered\": quota needs a shared limits store (--limits-store)"),
        "{err}"
    );
}

/// One API key per request: two in the query, or one in the query and one in the header, are
/// refused (the sidecar would count one consumer and the app might read the other).
#[test]
fn two_api_keys_are_refused() {
    let e = engine(
        json!({
            "profiles": [{"name": "partners", "auth": {"type": "ApiKey", "keyParam": "apikey", "keyHeader": "x-api-key"}}],
            "routes": [route("catalog", "/", &["partners"])],
        }),
        json!({"profiles": {"partners": {"apiKeys": {"k1": "s1", "k2": "s2"}}}}),
    );
    assert_eq!(verdict(&e, &get("/items?apikey=k1"), T0).3, "k1");
    assert_eq!(verdict(&e, &get("/items").header("x-api-key", "k2"), T0).3, "k2");
    for r in [
        get("/items?apikey=k1&apikey=k2"),
        get("/items?apikey=k1&api%6Bey=k2"),
        get("/items?apikey=k1").header("x-api-key", "k2"),
        get("/items").header("x-api-key", "k1").header("x-api-key", "k2"),
    ] {
        match e.decide(&r.view(), T0) {
            Outcome::Deny(d) => assert_eq!((denial_status(&d), d.reason), (401, "more than one API key")),
            other => panic!("{other:?}"),
        }
    }
}
