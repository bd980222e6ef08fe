//! Unit tests of the compiler: every profile rule, every bad input, and what reaches the
//! ConfigMap and the Secret.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use portcullis_api::*;

use super::*;

const NS: &str = "prod";

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(NS.into()),
        ..Default::default()
    }
}

fn secret(name: &str, type_: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: meta(name),
        type_: Some(type_.into()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

fn basic_secret(name: &str, user: &str, password: &str) -> Secret {
    secret(
        name,
        "kubernetes.io/basic-auth",
        &[("username", user), ("password", password)],
    )
}

fn spec(profile_type: ProfileType) -> SecurityProfileSpec {
    SecurityProfileSpec {
        profile_type,
        basic: None,
        api_key: None,
        oauth2: None,
        http_signature: None,
        oauth1: None,
        client_certificate: None,
        trusted_ip_ranges: vec![],
        rate_limit: None,
        audit: None,
    }
}

fn profile(name: &str, spec: SecurityProfileSpec) -> SecurityProfile {
    SecurityProfile {
        metadata: meta(name),
        spec,
        status: None,
    }
}

fn anonymous(name: &str) -> SecurityProfile {
    profile(name, spec(ProfileType::Anonymous))
}

fn basic(name: &str, secret: &str) -> SecurityProfile {
    let mut s = spec(ProfileType::Basic);
    s.basic = Some(BasicProfile {
        secret_ref: SecretRef::new(secret),
    });
    profile(name, s)
}

fn oauth2(name: &str) -> SecurityProfile {
    let mut s = spec(ProfileType::OAuth2);
    s.oauth2 = Some(OAuth2Profile {
        provider: OAuth2Provider::Generic,
        issuer: Some("https://idp.example.com".into()),
        jwks_uri: Some("https://idp.example.com/jwks".into()),
        introspection: None,
        audiences: vec![],
        required_scopes: vec![],
        builtin: None,
        login: None,
        allow_http: false,
    });
    profile(name, s)
}

fn api_key(name: &str, secret: &str) -> SecurityProfile {
    let mut s = spec(ProfileType::ApiKey);
    s.api_key = Some(ApiKeyProfile {
        secret_ref: SecretRef::new(secret),
        key_param: "apikey".into(),
        key_header: None,
        signature: Some(ApiKeySignature {
            param: "sig".into(),
            algorithm: SignatureHash::MD5,
            clock_skew_seconds: 300,
        }),
    });
    profile(name, s)
}

fn route(name: &str, profiles: &[&str]) -> ApiRoute {
    ApiRoute {
        metadata: meta(name),
        spec: ApiRouteSpec {
            workload_selector: LabelSelector {
                match_labels: Some([("app".to_string(), name.to_string())].into()),
                ..Default::default()
            },
            hosts: vec![],
            path_prefix: format!("/{name}"),
            case_insensitive: false,
            methods: vec![],
            profiles: profiles.iter().map(|p| ProfileRef { name: p.to_string() }).collect(),
            ssl_only: false,
            tls: None,
            backend: Backend {
                port: Some(8080),
                origin: None,
            },
            egress: false,
        },
        status: None,
    }
}

struct World {
    profiles: Vec<SecurityProfile>,
    routes: Vec<ApiRoute>,
    secrets: Vec<Secret>,
    /// The sidecars count in a shared limits store.
    limits_store: bool,
}

impl World {
    fn new() -> Self {
        Self {
            profiles: vec![
                basic("finance", "finance-user"),
                basic("accounting", "accounting-user"),
                anonymous("public"),
                anonymous("public-2"),
                oauth2("sso"),
                oauth2("sso-2"),
                api_key("partners", "partner-keys"),
            ],
            routes: vec![],
            secrets: vec![
                basic_secret("finance-user", "fin", "fin-password-1"),
                basic_secret("accounting-user", "acc", "acc-password-2"),
                secret("partner-keys", "Opaque", &[("key-1", "secret-1")]),
            ],
            limits_store: false,
        }
    }

    fn compile(&self) -> Output {
        self.compile_for(None)
    }

    fn compile_for(&self, labels: Option<&BTreeMap<String, String>>) -> Output {
        compile(&Inputs {
            namespace: NS,
            profiles: &self.profiles,
            routes: &self.routes,
            secrets: &self.secrets,
            org_allowance: Some(10),
            trusted_proxies: &[],
            limits_store_configured: self.limits_store,
            workload_labels: labels,
        })
    }
}

/// The verdict on route `name`, which must be a rejection: (reason, field, message).
fn rejected(out: &Output, name: &str) -> (&'static str, String, String) {
    match out.routes.get(name).or_else(|| out.profiles.get(name)) {
        Some(Verdict::Rejected { reason, field, message }) => (reason, field.clone(), message.clone()),
        other => panic!("{name}: expected a rejection, got {other:?}"),
    }
}

fn route_verdict(profiles: &[&str]) -> (&'static str, String, String) {
    let mut w = World::new();
    w.routes.push(route("api", profiles));
    rejected(&w.compile(), "api")
}

#[test]
fn several_basic_profiles_are_allowed() {
    let mut w = World::new();
    w.routes.push(route("api", &["finance", "accounting"]));
    let out = w.compile();
    assert_eq!(out.routes["api"], Verdict::Accepted);
    assert_eq!(out.loaded.config.routes[0].profiles, ["finance", "accounting"]);
    assert_eq!(out.profile_routes["finance"], ["api"]);
    out.loaded.config.check(&out.loaded.secrets).unwrap();
}

#[test]
fn basic_and_oauth2_are_never_mixed() {
    let (reason, field, message) = route_verdict(&["finance", "sso"]);
    assert_eq!(reason, reason::PROFILE_MIX);
    assert_eq!(field, "spec.profiles[1].name");
    assert!(message.contains("cannot mix Basic and OAuth2"), "{message}");
}

#[test]
fn basic_and_anonymous_are_never_mixed() {
    let (reason, _, message) = route_verdict(&["finance", "public"]);
    assert_eq!(reason, reason::PROFILE_MIX);
    assert!(message.contains("cannot mix Basic and Anonymous"), "{message}");
}

#[test]
fn oauth2_and_anonymous_are_never_mixed() {
    let (reason, _, message) = route_verdict(&["sso", "public"]);
    assert_eq!(reason, reason::PROFILE_MIX);
    assert!(message.contains("cannot mix OAuth2 and Anonymous"), "{message}");
}

#[test]
fn at_most_one_oauth2_profile() {
    let (reason, field, message) = route_verdict(&["sso", "sso-2"]);
    assert_eq!(reason, reason::TOO_MANY_OAUTH2);
    assert_eq!(field, "spec.profiles[1].name");
    assert!(
        message.contains("at most one OAuth2 profile per route, found sso, sso-2"),
        "{message}"
    );
}

#[test]
fn at_most_one_anonymous_profile() {
    let (reason, _, message) = route_verdict(&["public", "public-2"]);
    assert_eq!(reason, reason::TOO_MANY_ANONYMOUS);
    assert!(message.contains("at most one Anonymous"), "{message}");
}

#[test]
fn the_same_profile_never_twice() {
    let (reason, field, message) = route_verdict(&["finance", "accounting", "finance"]);
    assert_eq!(reason, reason::DUPLICATE_PROFILE);
    assert_eq!(field, "spec.profiles[2].name");
    assert!(message.contains("\"finance\" is listed more than once"), "{message}");
}

#[test]
fn unknown_profile_names_the_route_field() {
    let (reason, field, message) = route_verdict(&["finance", "ghost"]);
    assert_eq!(reason, reason::PROFILE_NOT_FOUND);
    assert_eq!(field, "spec.profiles[1].name");
    assert!(
        message.contains("SecurityProfile \"ghost\" not found in namespace prod"),
        "{message}"
    );
    let w = World::new();
    let mut w2 = World {
        routes: vec![route("api", &["ghost"])],
        ..w
    };
    w2.routes.push(route("good", &["finance"]));
    let errors = w2.compile().errors(NS);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("ApiRoute prod/api: spec.profiles[0].name:"),
        "{errors:?}"
    );
}

#[test]
fn an_invalid_route_never_stops_the_valid_ones() {
    let mut w = World::new();
    w.routes.push(route("bad", &["ghost"]));
    w.routes.push(route("good", &["finance"]));
    let out = w.compile();
    assert!(!out.routes["bad"].is_accepted());
    assert!(out.routes["good"].is_accepted());
    let names: Vec<_> = out.loaded.config.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["good"]);
}

#[test]
fn missing_secret_names_profile_and_field() {
    let mut w = World::new();
    w.secrets.retain(|s| s.metadata.name.as_deref() != Some("finance-user"));
    w.routes.push(route("api", &["finance"]));
    let out = w.compile();
    let (reason, field, message) = rejected(&out, "finance");
    assert_eq!(reason, reason::SECRET_NOT_FOUND);
    assert_eq!(field, "spec.basic.secretRef.name");
    assert!(
        message.contains("Secret \"finance-user\" not found in namespace prod"),
        "{message}"
    );
    // The route that uses it is refused too, naming the profile.
    let (reason, _, message) = rejected(&out, "api");
    assert_eq!(reason, reason::PROFILE_INVALID);
    assert!(message.contains("SecurityProfile \"finance\" is invalid"), "{message}");
    let errors = out.errors(NS).join("\n");
    assert!(
        errors.contains("SecurityProfile prod/finance: spec.basic.secretRef.name"),
        "{errors}"
    );
}

#[test]
fn wrong_secret_type_is_refused() {
    let mut w = World::new();
    w.secrets
        .push(secret("opaque-user", "Opaque", &[("username", "u"), ("password", "p")]));
    w.profiles.push(basic("opaque", "opaque-user"));
    let (reason, field, message) = rejected(&w.compile(), "opaque");
    assert_eq!(reason, reason::WRONG_SECRET_TYPE);
    assert_eq!(field, "spec.basic.secretRef.name");
    assert!(
        message.contains("has type Opaque, expected kubernetes.io/basic-auth"),
        "{message}"
    );
}

#[test]
fn missing_secret_key_is_refused_without_revealing_values() {
    let mut w = World::new();
    w.secrets.push(secret(
        "half-user",
        "kubernetes.io/basic-auth",
        &[("username", "carol-the-user")],
    ));
    w.profiles.push(basic("half", "half-user"));
    let (reason, _, message) = rejected(&w.compile(), "half");
    assert_eq!(reason, reason::SECRET_KEY_MISSING);
    assert!(message.contains("has no key \"password\""), "{message}");
    assert!(!message.contains("carol-the-user"));
}

fn profile_with_ranges(ranges: Vec<IpRange>) -> Output {
    let mut w = World::new();
    let mut p = spec(ProfileType::Anonymous);
    p.trusted_ip_ranges = ranges;
    w.profiles.push(profile("ranged", p));
    w.routes.push(route("api", &["ranged"]));
    w.compile()
}

fn cidr(c: &str) -> IpRange {
    IpRange {
        cidr: Some(c.into()),
        from: None,
        to: None,
    }
}

fn from_to(from: &str, to: &str) -> IpRange {
    IpRange {
        cidr: None,
        from: Some(from.into()),
        to: Some(to.into()),
    }
}

#[test]
fn bad_cidr_names_the_range() {
    let out = profile_with_ranges(vec![cidr("10.0.0.0/8"), cidr("10.300.0.0/16")]);
    let (reason, field, message) = rejected(&out, "ranged");
    assert_eq!(reason, reason::INVALID_IP_RANGE);
    assert_eq!(field, "spec.trustedIpRanges[1].cidr");
    assert!(message.contains("\"10.300.0.0/16\" is not a CIDR block"), "{message}");
}

#[test]
fn from_greater_than_to_is_refused() {
    let out = profile_with_ranges(vec![from_to("192.168.1.50", "192.168.1.10")]);
    let (reason, field, message) = rejected(&out, "ranged");
    assert_eq!(reason, reason::INVALID_IP_RANGE);
    assert_eq!(field, "spec.trustedIpRanges[0].from");
    assert!(
        message.contains("192.168.1.50 is greater than to (192.168.1.10)"),
        "{message}"
    );
}

#[test]
fn mixed_families_are_refused() {
    let out = profile_with_ranges(vec![from_to("10.0.0.1", "2001:db8::1")]);
    let (_, field, message) = rejected(&out, "ranged");
    assert_eq!(field, "spec.trustedIpRanges[0].to");
    assert!(message.contains("same address family"), "{message}");
}

#[test]
fn ranges_are_normalized_sorted_and_merged() {
    let out = profile_with_ranges(vec![
        cidr("2001:db8::/32"),
        from_to("10.0.1.0", "10.0.1.255"),
        cidr("10.0.0.0/24"),
        from_to("192.168.1.10", "192.168.1.50"),
    ]);
    let ranges = &out.loaded.config.profile("ranged").unwrap().trusted_ip_ranges;
    let shown: Vec<String> = ranges.iter().map(|r| format!("{}-{}", r.from, r.to)).collect();
    assert_eq!(
        shown,
        [
            "10.0.0.0-10.0.1.255",
            "192.168.1.10-192.168.1.50",
            "2001:db8::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"
        ]
    );
}

#[test]
fn type_must_match_its_block() {
    let mut w = World::new();
    let mut s = spec(ProfileType::Basic);
    s.oauth2 = oauth2("x").spec.oauth2;
    w.profiles.push(profile("confused", s));
    let (reason, field, message) = rejected(&w.compile(), "confused");
    assert_eq!(reason, reason::INVALID_SPEC);
    assert_eq!(field, "spec.basic");
    assert!(message.contains("is required when type is Basic"), "{message}");
}

#[test]
fn no_secret_reaches_the_configmap_part() {
    let mut w = World::new();
    w.routes.push(route("api", &["finance", "accounting"]));
    w.routes.push(route("partner", &["partners"]));
    let out = w.compile();
    let config = String::from_utf8(out.loaded.config_json()).unwrap();
    for secret in ["fin-password-1", "acc-password-2", "secret-1"] {
        assert!(!config.contains(secret), "{secret} leaked into config.json");
    }
    let secrets = String::from_utf8(out.loaded.secrets_json()).unwrap();
    assert!(secrets.contains("fin-password-1") && secrets.contains("secret-1"));
}

#[test]
fn a_pod_only_receives_the_routes_that_select_it() {
    let mut w = World::new();
    w.routes.push(route("finance", &["finance"]));
    w.routes.push(route("accounting", &["accounting"]));
    let labels: BTreeMap<String, String> = [("app".to_string(), "finance".to_string())].into();
    let out = w.compile_for(Some(&labels));
    let names: Vec<_> = out.loaded.config.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["finance"]);
    let profiles: Vec<_> = out.loaded.config.profiles.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(profiles, ["finance"]);
    let secrets = String::from_utf8(out.loaded.secrets_json()).unwrap();
    assert!(
        !secrets.contains("acc-password-2"),
        "another route's credentials leaked"
    );
    // Verdicts still cover every route.
    assert!(out.routes["accounting"].is_accepted());
}

#[test]
fn generation_is_stable_and_follows_content() {
    let mut w = World::new();
    w.routes.push(route("api", &["finance"]));
    let a = w.compile().loaded.config.generation;
    assert_eq!(a, w.compile().loaded.config.generation);
    w.secrets[0] = basic_secret("finance-user", "fin", "rotated-password");
    let b = w.compile().loaded.config.generation;
    assert_ne!(a, b, "a changed password must change the generation");
}

#[test]
fn backend_needs_exactly_one_of_port_and_origin() {
    let mut w = World::new();
    let mut r = route("api", &[]);
    r.spec.backend.port = None;
    w.routes.push(r);
    let (reason, field, _) = rejected(&w.compile(), "api");
    assert_eq!(reason, reason::INVALID_BACKEND);
    assert_eq!(field, "spec.backend");
}

#[test]
fn origin_auth_and_tls_secrets_go_to_the_secret() {
    let mut w = World::new();
    let mut user = basic_secret("origin-user", "gw", "origin-password-9");
    // The Secret lets route gw send it to its origin (docs/api.md, "Security model").
    user.metadata.annotations = Some([(ALLOWED_ROUTES_ANNOTATION.to_string(), "gw".to_string())].into());
    w.secrets.push(user);
    let mut r = route("gw", &[]);
    r.spec.backend = Backend {
        port: None,
        origin: Some(Origin {
            url: "https://backend.example.com/".into(),
            pass_credentials: false,
            tls: None,
            auth: Some(OriginAuth {
                basic: Some(OriginBasic {
                    secret_ref: SecretRef::new("origin-user"),
                }),
                shared_secret: None,
                http_signature: None,
                oauth2_client_credentials: None,
            }),
        }),
    };
    w.routes.push(r);
    let out = w.compile();
    assert!(out.routes["gw"].is_accepted(), "{:?}", out.routes["gw"]);
    let route = &out.loaded.config.routes[0];
    match &route.backend {
        portcullis_config::Backend::Origin {
            url, tls_mode, auth, ..
        } => {
            assert_eq!(url, "https://backend.example.com");
            assert_eq!(*tls_mode, portcullis_config::OriginTlsMode::Verify);
            assert_eq!(*auth, Some(portcullis_config::OriginAuth::Basic));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !String::from_utf8(out.loaded.config_json())
            .unwrap()
            .contains("origin-password-9")
    );
    out.loaded.config.check(&out.loaded.secrets).unwrap();
}

#[test]
fn ssl_only_needs_tls_and_tls_needs_a_tls_secret() {
    let mut w = World::new();
    let mut r = route("api", &[]);
    r.spec.ssl_only = true;
    w.routes.push(r);
    let (_, field, _) = rejected(&w.compile(), "api");
    assert_eq!(field, "spec.sslOnly");

    let mut w = World::new();
    let mut r = route("api", &[]);
    r.spec.tls = Some(RouteTls {
        secret_name: Some("finance-user".into()),
        issue: None,
    });
    w.routes.push(r);
    let (reason, field, message) = rejected(&w.compile(), "api");
    assert_eq!(reason, reason::WRONG_SECRET_TYPE);
    assert_eq!(field, "spec.tls.secretName");
    assert!(message.contains("expected kubernetes.io/tls"), "{message}");
}

#[test]
fn issued_certificates_are_pending_until_the_ca_writes_them() {
    let mut w = World::new();
    let mut r = route("api", &[]);
    r.spec.tls = Some(RouteTls {
        secret_name: None,
        issue: Some(true),
    });
    w.routes.push(r);
    let (reason, field, message) = rejected(&w.compile(), "api");
    assert_eq!(reason, reason::CERTIFICATE_PENDING);
    assert_eq!(field, "spec.tls.issue");
    assert!(message.contains("api-portcullis-tls"), "{message}");
}

#[test]
fn case_insensitive_reaches_the_configuration() {
    let mut w = World::new();
    w.routes.push(route("api", &[]));
    let mut r = route("admin", &[]);
    r.spec.case_insensitive = true;
    w.routes.push(r);
    let out = w.compile();
    let routes = &out.loaded.config.routes;
    let flag = |name: &str| routes.iter().find(|r| r.name == name).map(|r| r.case_insensitive);
    assert_eq!((flag("api"), flag("admin")), (Some(false), Some(true)));
}

#[test]
fn path_prefixes_the_sidecar_would_never_match_are_refused() {
    for (prefix, says) in [
        ("/admin;v=1", "path parameter"),
        ("/a%3Bb", "path parameter"),
        ("/a%2fb", "encoded slash"),
        ("/a\\b", "backslash"),
        ("/a%5Cb", "backslash"),
        ("/a%00", "%00"),
        ("/a%zz", "malformed"),
        ("/a%4", "malformed"),
        ("/a/../b", "dot segment"),
        ("/a/%2e%2E", "dot segment"),
        ("/.", "dot segment"),
        ("/a|b", "not allowed"),
        ("/caf\u{e9}", "not allowed"),
    ] {
        let mut w = World::new();
        let mut r = route("api", &[]);
        r.spec.path_prefix = prefix.into();
        w.routes.push(r);
        let (reason, field, message) = rejected(&w.compile(), "api");
        assert_eq!((reason, field.as_str()), ("InvalidSpec", "spec.pathPrefix"), "{prefix}");
        assert!(message.contains(says), "{prefix}: {message}");
    }
    // The sidecar normalizes these itself.
    for prefix in [
        "/",
        "/api/",
        "/%61pi",
        "/api//v1",
        "/caf%c3%a9",
        "/a.b/..c/~d",
        "/a%20b",
    ] {
        let mut w = World::new();
        let mut r = route("api", &[]);
        r.spec.path_prefix = prefix.into();
        w.routes.push(r);
        assert_eq!(w.compile().loaded.config.routes.len(), 1, "{prefix}");
    }
}

#[test]
fn hosts_and_methods_are_checked_and_normalized() {
    let mut w = World::new();
    let mut r = route("api", &[]);
    r.spec.hosts = vec!["API.Example.com".into(), "*.example.org".into()];
    r.spec.methods = vec!["GET".into(), "GET".into(), "POST".into()];
    w.routes.push(r);
    let out = w.compile();
    assert_eq!(out.loaded.config.routes[0].hosts, ["api.example.com", "*.example.org"]);
    assert_eq!(out.loaded.config.routes[0].methods, ["GET", "POST"]);

    let mut w = World::new();
    let mut r = route("api", &[]);
    r.spec.hosts = vec!["ok.example.com".into(), "bad host".into()];
    w.routes.push(r);
    let (_, field, _) = rejected(&w.compile(), "api");
    assert_eq!(field, "spec.hosts[1]");

    let mut w = World::new();
    let mut r = route("api", &[]);
    r.spec.methods = vec!["get".into()];
    w.routes.push(r);
    let (_, field, _) = rejected(&w.compile(), "api");
    assert_eq!(field, "spec.methods[0]");
}

#[test]
fn api_key_secrets_map_keys_to_shared_secrets() {
    let mut w = World::new();
    w.routes.push(route("partner", &["partners"]));
    let out = w.compile();
    let s = &out.loaded.secrets.profiles["partners"];
    assert_eq!(s.api_keys["key-1"].expose(), "secret-1");
    match &out.loaded.config.profile("partners").unwrap().auth {
        portcullis_config::ProfileAuth::ApiKey {
            key_param, signature, ..
        } => {
            assert_eq!(key_param, "apikey");
            assert_eq!(signature.as_ref().unwrap().clock_skew_seconds, 300);
        }
        other => panic!("{other:?}"),
    }
}

/// Who may reach what: Secrets that opt in to be sent to origins, routes of other owners on
/// an older route's paths.
mod access;

/// `spec.rateLimit`: per-minute limits, quotas (which need a shared limits store) and whom
/// they count.
mod limits;

fn builtin(name: &str, clients: &str) -> SecurityProfile {
    let mut p = oauth2(name);
    let o = p.spec.oauth2.as_mut().unwrap();
    o.provider = OAuth2Provider::Builtin;
    o.jwks_uri = None;
    o.builtin = Some(OAuth2Builtin {
        clients_secret_ref: SecretRef::new(clients),
        token_ttl_seconds: 600,
        delegation: None,
    });
    p
}

/// A Builtin provider's Secret holds its clients and, under `<client>.scopes`, the scopes each
/// may be granted; a scope list for no client, or a malformed scope, refuses the profile.
#[test]
fn builtin_clients_carry_their_scopes_from_the_secret() {
    let pem = crate::compile::token_keys::new_key_pem().unwrap();
    let world = |data: &[(&str, &str)]| {
        let mut w = World::new();
        w.secrets.push(secret("clients", "Opaque", data));
        w.secrets
            .push(secret("idp-portcullis-token-keys", "Opaque", &[("key-1000", &pem)]));
        w.profiles.push(builtin("idp", "clients"));
        w.routes.push(route("api", &["idp"]));
        w.compile()
    };
    let out = world(&[("app-1", "s1"), ("app-1.scopes", "read  write"), ("app-2", "s2")]);
    assert_eq!(out.profiles["idp"], Verdict::Accepted);
    let s = &out.loaded.secrets.profiles["idp"];
    assert_eq!(s.oauth2_clients.keys().collect::<Vec<_>>(), ["app-1", "app-2"]);
    assert_eq!(
        s.oauth2_client_scopes,
        BTreeMap::from([("app-1".to_string(), vec!["read".to_string(), "write".to_string()])])
    );
    assert_eq!(s.oauth2_signing_keys.len(), 1);
    assert_eq!(s.oauth2_signing_keys[0].name, "key-1000");
    out.loaded.config.check(&out.loaded.secrets).unwrap();
    // The signing keys are secrets: never in the configuration file.
    assert!(
        !String::from_utf8(out.loaded.config_json())
            .unwrap()
            .contains("PRIVATE KEY")
    );

    let out = world(&[("app-1", "s1"), ("app-9.scopes", "read")]);
    let (reason, field, message) = rejected(&out, "idp");
    assert_eq!(
        (reason, field.as_str()),
        (reason::INVALID_SECRET, "spec.oauth2.builtin.clientsSecretRef.name")
    );
    assert!(message.contains("\"app-9.scopes\""), "{message}");
    let out = world(&[("app-1", "s1"), ("app-1.scopes", "read \"all\"")]);
    assert!(rejected(&out, "idp").2.contains("not a valid OAuth 2.0 scope"));
    let out = world(&[("app-1.scopes", "read")]);
    assert_eq!(rejected(&out, "idp").0, reason::INVALID_SECRET);
}

/// Delegation: redirect URIs from `<client>.redirectUris`, the owner's credential from its
/// Secret; each mistake refused with the field that holds it.
#[test]
fn builtin_delegation_compiles_redirect_uris_and_the_owner_credential() {
    let pem = crate::compile::token_keys::new_key_pem().unwrap();
    let world = |data: &[(&str, &str)], owner: Option<&str>, delegation: bool| {
        let mut w = World::new();
        w.secrets.push(secret("clients", "Opaque", data));
        w.secrets
            .push(secret("idp-portcullis-token-keys", "Opaque", &[("key-1000", &pem)]));
        if let Some(token) = owner {
            w.secrets.push(secret("owner", "Opaque", &[("token", token)]));
        }
        let mut p = builtin("idp", "clients");
        if delegation {
            p.spec.oauth2.as_mut().unwrap().builtin.as_mut().unwrap().delegation = Some(OAuth2Delegation {
                consent_url: "https://owner.example.com/consent".into(),
                owner_secret_ref: SecretRef::new("owner"),
                refresh_token_ttl_seconds: 86400,
                max_grant_seconds: 604800,
            });
        }
        w.profiles.push(p);
        w.routes.push(route("api", &["idp"]));
        w.compile()
    };
    let good = [
        ("app-1", "s1"),
        (
            "app-1.redirectUris",
            "https://app.example.com/cb  http://127.0.0.1:8765/cb",
        ),
        ("app-2", "s2"),
    ];
    let out = world(&good, Some("owner-credential-0123"), true);
    assert_eq!(out.profiles["idp"], Verdict::Accepted);
    let s = &out.loaded.secrets.profiles["idp"];
    assert_eq!(s.oauth2_clients.keys().collect::<Vec<_>>(), ["app-1", "app-2"]);
    assert_eq!(
        s.oauth2_redirect_uris["app-1"],
        ["https://app.example.com/cb", "http://127.0.0.1:8765/cb"]
    );
    assert_eq!(s.oauth2_owner_token.as_ref().unwrap().expose(), "owner-credential-0123");
    let json = String::from_utf8(out.loaded.config_json()).unwrap();
    assert!(
        json.contains("\"consentUrl\": \"https://owner.example.com/consent\""),
        "{json}"
    );
    assert!(!json.contains("owner-credential"), "the owner's credential is a secret");
    out.loaded.config.check(&out.loaded.secrets).unwrap();

    let field = |out: &Output| rejected(out, "idp").1;
    for (uri, why) in [
        ("https://app.example.com/cb#frag", "has a fragment"),
        ("http://app.example.com/cb", "plain http://"),
        ("app.example.com/cb", "not an absolute"),
    ] {
        let out = world(
            &[("app-1", "s1"), ("app-1.redirectUris", uri)],
            Some("owner-credential-0123"),
            true,
        );
        let (_, f, message) = rejected(&out, "idp");
        assert_eq!(f, "spec.oauth2.builtin.clientsSecretRef.name");
        assert!(message.contains(why), "{uri}: {message}");
    }
    let out = world(
        &[("app-1", "s1"), ("app-9.redirectUris", "https://a.example/cb")],
        Some("owner-credential-0123"),
        true,
    );
    assert!(rejected(&out, "idp").2.contains("\"app-9.redirectUris\""));
    assert_eq!(
        field(&world(&good, None, true)),
        "spec.oauth2.builtin.delegation.ownerSecretRef.name"
    );
    assert_eq!(
        field(&world(&good, Some("short"), true)),
        "spec.oauth2.builtin.delegation.ownerSecretRef.name"
    );
    assert_eq!(
        field(&world(&good, Some("owner-credential-0123"), false)),
        "spec.oauth2.builtin.delegation"
    );
    let out = world(&[("app-1", "s1")], Some("owner-credential-0123"), true);
    assert!(rejected(&out, "idp").2.contains("no client has redirect URIs"));
}

fn oauth1(name: &str, tokens: Option<&str>, require_token: bool) -> SecurityProfile {
    let mut s = spec(ProfileType::OAuth1);
    s.oauth1 = Some(OAuth1Profile {
        consumers_secret_ref: SecretRef::new("oauth1-consumers"),
        tokens_secret_ref: tokens.map(SecretRef::new),
        require_token,
        signature_methods: vec![OAuth1SignatureMethod::HmacSha1, OAuth1SignatureMethod::Plaintext],
        timestamp_window_seconds: 120,
        on_store_unavailable: None,
    });
    profile(name, s)
}

#[test]
fn oauth1_profiles_compile_consumers_and_tokens() {
    let mut w = World::new();
    w.secrets.push(secret(
        "oauth1-consumers",
        "Opaque",
        &[("partner-a", "consumer-secret-a"), ("partner-b", "consumer-secret-b")],
    ));
    w.secrets.push(secret(
        "oauth1-tokens",
        "Opaque",
        &[("tok-1", "partner-a:token-secret-1")],
    ));
    w.profiles.push(oauth1("signed", Some("oauth1-tokens"), true));
    w.routes.push(route("api", &["signed"]));
    let out = w.compile();
    assert_eq!(out.errors(NS), Vec::<String>::new());
    out.loaded.config.check(&out.loaded.secrets).unwrap();
    let auth = &out.loaded.config.profile("signed").unwrap().auth;
    assert_eq!(
        *auth,
        portcullis_config::ProfileAuth::OAuth1 {
            signature_methods: vec![
                portcullis_config::OAuth1Method::HmacSha1,
                portcullis_config::OAuth1Method::Plaintext
            ],
            timestamp_window_seconds: 120,
            require_token: true,
            on_store_unavailable: portcullis_config::ReplayFallback::Deny,
        }
    );
    let secrets = &out.loaded.secrets.profiles["signed"];
    assert_eq!(secrets.oauth1_consumers["partner-b"].expose(), "consumer-secret-b");
    let token = &secrets.oauth1_tokens["tok-1"];
    assert_eq!(
        (token.consumer_key.as_str(), token.secret.expose()),
        ("partner-a", "token-secret-1")
    );
    // Nothing secret in the configuration file.
    let config = String::from_utf8(out.loaded.config_json()).unwrap();
    assert!(
        !config.contains("consumer-secret") && !config.contains("token-secret"),
        "{config}"
    );
}

#[test]
fn oauth1_tokens_must_name_a_consumer_and_a_secret() {
    let verdict = |token_value: &str, tokens: Option<&str>, require_token: bool| {
        let mut w = World::new();
        w.secrets.push(secret(
            "oauth1-consumers",
            "Opaque",
            &[("partner-a", "consumer-secret-a")],
        ));
        w.secrets
            .push(secret("oauth1-tokens", "Opaque", &[("tok-1", token_value)]));
        w.profiles.push(oauth1("signed", tokens, require_token));
        rejected(&w.compile(), "signed")
    };
    let (reason, field, message) = verdict("partner-z:token-secret-1", Some("oauth1-tokens"), false);
    assert_eq!(
        (reason, field.as_str()),
        (reason::INVALID_SECRET, "spec.oauth1.tokensSecretRef.name")
    );
    assert!(
        message.contains("token \"tok-1\" names a consumer that is not in"),
        "{message}"
    );
    // Neither part of the value is echoed (written the wrong way round, the first is a secret).
    assert!(
        !message.contains("token-secret-1") && !message.contains("partner-z"),
        "{message}"
    );
    let (_, _, message) = verdict("no-separator-secret", Some("oauth1-tokens"), false);
    assert!(message.contains("must be <consumerKey>:<tokenSecret>"), "{message}");
    assert!(!message.contains("no-separator-secret"), "{message}");
    let (_, _, message) = verdict("partner-a:", Some("oauth1-tokens"), false);
    assert!(message.contains("empty token secret"), "{message}");
    let (reason, field, message) = verdict("partner-a:s", None, true);
    assert_eq!(
        (reason, field.as_str()),
        (reason::INVALID_SPEC, "spec.oauth1.tokensSecretRef")
    );
    assert!(message.contains("requireToken"), "{message}");
}

/// A Builtin provider waits for its token-key Secret (the operator makes it), and refuses
/// one whose entries are not named keys holding PKCS#8 PEM, without showing the material.
#[test]
fn builtin_token_keys_come_from_the_operators_secret() {
    let mut w = World::new();
    w.secrets.push(secret("clients", "Opaque", &[("app-1", "s1")]));
    w.profiles.push(builtin("idp", "clients"));
    let (reason, field, message) = rejected(&w.compile(), "idp");
    assert_eq!(
        (reason, field.as_str()),
        (reason::SECRET_NOT_FOUND, "spec.oauth2.builtin")
    );
    assert!(
        message.contains("\"idp-portcullis-token-keys\" not found yet"),
        "{message}"
    );
    w.secrets.push(secret(
        "idp-portcullis-token-keys",
        "Opaque",
        &[("key-1000", "not-a-key-material-xyz")],
    ));
    let (reason, _, message) = rejected(&w.compile(), "idp");
    assert_eq!(reason, reason::INVALID_SECRET);
    assert!(
        message.contains("is not a PKCS#8 PEM private key") && !message.contains("xyz"),
        "{message}"
    );
}

/// Every consumer must be usable as the sidecar reads it: one bad consumer would make the
/// sidecar refuse the whole configuration, so the profile is refused here, naming it.
#[test]
fn oauth1_consumers_must_hold_a_secret_or_an_rsa_key() {
    let verdict = |value: &str| {
        let mut w = World::new();
        w.secrets.push(secret(
            "oauth1-consumers",
            "Opaque",
            &[("partner-a", "consumer-secret-a"), ("partner-b", value)],
        ));
        w.profiles.push(oauth1("signed", None, false));
        w.compile()
    };
    let ec = include_str!("../../../sidecar/signatures/tests/keys/test-key-ecc-p256.pem");
    let short = include_str!("../../../sidecar/signatures/tests/keys/rsa1024.key");
    for (value, why) in [
        ("   ", "an empty consumer secret"),
        (ec, "not an RSA key"),
        (short, "cannot be used"),
        (
            "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n",
            "cannot be used",
        ),
    ] {
        let (reason, field, message) = rejected(&verdict(value), "signed");
        assert_eq!(
            (reason, field.as_str()),
            (reason::INVALID_SECRET, "spec.oauth1.consumersSecretRef.name")
        );
        assert!(
            message.contains("consumer \"partner-b\" has") && message.contains(why),
            "{message}"
        );
        assert!(!message.contains("BEGIN"), "{message}");
    }
    let rsa = include_str!("../../../sidecar/signatures/tests/keys/rsa2048.pub");
    assert_eq!(verdict(rsa).profiles["signed"], Verdict::Accepted);
}
