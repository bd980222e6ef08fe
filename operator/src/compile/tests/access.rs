//! The compiler's part of "what an ApiRoute author can and cannot reach" (docs/api.md,
//! "Security model"): a route sends a Secret to its origin only when the Secret opts in, and
//! a route never takes over the paths of an older route of another owner on its workload.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;

/// `route` sending Basic credentials from `secret` to `url`.
fn gateway(name: &str, url: &str, secret: &str) -> ApiRoute {
    let mut r = route(name, &[]);
    r.spec.backend = Backend {
        port: None,
        origin: Some(Origin {
            url: url.into(),
            pass_credentials: false,
            tls: None,
            auth: Some(OriginAuth {
                basic: Some(OriginBasic {
                    secret_ref: SecretRef::new(secret),
                }),
                shared_secret: None,
                http_signature: None,
                oauth2_client_credentials: None,
            }),
        }),
    };
    r
}

fn annotated(mut s: Secret, pairs: &[(&str, &str)]) -> Secret {
    s.metadata.annotations = Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    s
}

/// A World with the Basic Secret `origin-user` (annotated as given) and route `gw` sending it
/// to `url`.
fn world_with_origin_secret(url: &str, annotations: &[(&str, &str)]) -> World {
    let mut w = World::new();
    w.secrets.push(annotated(
        basic_secret("origin-user", "gw", "origin-password-9"),
        annotations,
    ));
    w.routes.push(gateway("gw", url, "origin-user"));
    w
}

fn assert_nowhere(out: &Output, value: &str) {
    assert!(!String::from_utf8(out.loaded.config_json()).unwrap().contains(value));
    assert!(!String::from_utf8(out.loaded.secrets_json()).unwrap().contains(value));
    for line in out.errors(NS) {
        assert!(!line.contains(value), "{line}");
    }
}

#[test]
fn origin_credentials_from_a_secret_that_does_not_opt_in_are_refused() {
    let w = world_with_origin_secret("https://backend.example.com", &[]);
    let out = w.compile();
    let (reason, field, message) = rejected(&out, "gw");
    assert_eq!(reason, reason::SECRET_NOT_ALLOWED);
    assert_eq!(field, "spec.backend.origin.auth.basic.secretRef.name");
    assert!(
        message.starts_with("spec.backend.origin.auth.basic.secretRef.name: Secret \"origin-user\""),
        "{message}"
    );
    assert!(message.contains("portcullis.dev/allowed-routes: \"gw\""), "{message}");
    assert!(out.loaded.config.routes.is_empty());
    assert!(out.loaded.secrets.routes.is_empty());
    assert_nowhere(&out, "origin-password-9");

    // Another route's name, or an empty list, is no opt-in either.
    for other in ["finance", "", "gw2, gateway"] {
        let w = world_with_origin_secret("https://backend.example.com", &[(ALLOWED_ROUTES_ANNOTATION, other)]);
        assert_eq!(rejected(&w.compile(), "gw").0, reason::SECRET_NOT_ALLOWED, "{other:?}");
    }
}

#[test]
fn origin_credentials_from_a_secret_that_opts_in_are_sent() {
    for allowed in ["gw", "*", "finance, gw", " gw "] {
        let w = world_with_origin_secret("https://backend.example.com", &[(ALLOWED_ROUTES_ANNOTATION, allowed)]);
        let out = w.compile();
        assert!(out.routes["gw"].is_accepted(), "{allowed:?}: {:?}", out.routes["gw"]);
        assert!(out.loaded.secrets.routes["gw"].origin_auth.is_some());
        out.loaded.config.check(&out.loaded.secrets).unwrap();
    }
}

#[test]
fn allowed_origins_limit_where_the_credentials_go() {
    fn allowed(origins: &str) -> [(&str, &str); 2] {
        [(ALLOWED_ROUTES_ANNOTATION, "*"), (ALLOWED_ORIGINS_ANNOTATION, origins)]
    }
    let accepted = [
        ("https://backend.example.com/v1", "backend.example.com"),
        ("https://BACKEND.example.com", "other.example.com, backend.example.com"),
        ("https://backend.example.com:8443", "backend.example.com"),
        ("https://backend.example.com", "backend.example.com:443"),
        ("http://backend.example.com:8080", "http://backend.example.com:8080"),
        (
            "http://backend.example.com",
            "backend.example.com, http://backend.example.com",
        ),
        ("https://[fd00::1]:8443", "[fd00::1]:8443"),
        ("https://[fd00::1]", "fd00::1"),
    ];
    for (url, origins) in accepted {
        let out = world_with_origin_secret(url, &allowed(origins)).compile();
        assert!(
            out.routes["gw"].is_accepted(),
            "{url} / {origins}: {:?}",
            out.routes["gw"]
        );
    }
    let refused = [
        ("https://attacker.example.net", "backend.example.com"),
        ("https://backend.example.com.attacker.net", "backend.example.com"),
        ("https://backend.example.com:8443", "backend.example.com:443"),
        ("https://backend.example.com", ""),
        // A bare entry is TLS only.
        ("http://backend.example.com:8080", "backend.example.com:8080"),
        ("http://backend.example.com", "backend.example.com"),
    ];
    for (url, origins) in refused {
        let out = world_with_origin_secret(url, &allowed(origins)).compile();
        let (reason, field, message) = rejected(&out, "gw");
        assert_eq!(reason, reason::SECRET_NOT_ALLOWED, "{url}");
        assert_eq!(field, "spec.backend.origin.auth.basic.secretRef.name");
        assert!(message.contains("portcullis.dev/allowed-origins"), "{message}");
        assert!(message.contains("spec.backend.origin.url"), "{message}");
        assert_nowhere(&out, "origin-password-9");
    }
    // URLs that one parser could read as another destination, and the pod itself, are not
    // origins at all.
    let invalid = [
        ("https://user@attacker.example.net", "backend.example.com"),
        (
            "https://backend.example.com@attacker.example.net",
            "backend.example.com",
        ),
        ("https://backend.example.com:/x", "backend.example.com:8443"),
        ("https://backend.example.com:65536", "backend.example.com:8443"),
        ("https://backend.example.com:99999999999", "backend.example.com:8443"),
        ("https://backend.example.com:0", "backend.example.com"),
        ("http://127.0.0.1:8080", "127.0.0.1"),
        ("http://localhost:8080", "localhost"),
        ("http://[::1]:8080", "::1"),
        ("http://0.0.0.0:8080", "0.0.0.0"),
        ("http://[::ffff:127.0.0.2]:8080", "::ffff:127.0.0.2"),
        ("http://app.localhost.:8080", "app.localhost"),
        ("https://%7a.example", "z.example"),
        ("https://local%68ost", "localhost"),
        ("https://\u{ff4c}ocalhost", "localhost"),
        ("https://backend..example.com", "backend..example.com"),
    ];
    for (url, origins) in invalid {
        let out = world_with_origin_secret(url, &allowed(origins)).compile();
        let (reason, field, _) = rejected(&out, "gw");
        assert_eq!(
            (reason, field.as_str()),
            (reason::INVALID_SPEC, "spec.backend.origin.url"),
            "{url}"
        );
        assert_nowhere(&out, "origin-password-9");
    }
}

#[test]
fn a_client_credentials_secret_must_allow_the_token_endpoint_too() {
    let mut w = World::new();
    w.secrets.push(annotated(
        secret(
            "client",
            "Opaque",
            &[("clientId", "gw"), ("clientSecret", "client-secret-7")],
        ),
        &[
            (ALLOWED_ROUTES_ANNOTATION, "gw"),
            (ALLOWED_ORIGINS_ANNOTATION, "backend.example.com"),
        ],
    ));
    let mut r = gateway("gw", "https://backend.example.com", "unused");
    let auth = r.spec.backend.origin.as_mut().unwrap().auth.as_mut().unwrap();
    auth.basic = None;
    auth.oauth2_client_credentials = Some(OriginOAuth2ClientCredentials {
        token_url: "https://idp.attacker.net/token".into(),
        client_secret_ref: SecretRef::new("client"),
        scopes: vec![],
        audience: None,
        allow_http: false,
    });
    w.routes.push(r);
    let out = w.compile();
    let (reason, _, message) = rejected(&out, "gw");
    assert_eq!(reason, reason::SECRET_NOT_ALLOWED);
    assert!(message.contains("tokenUrl goes to \"idp.attacker.net\""), "{message}");
    assert_nowhere(&out, "client-secret-7");
}

#[test]
fn an_origin_client_certificate_must_opt_in_but_one_the_ca_issued_needs_not() {
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let key = "-----BEGIN PRIVATE KEY-----\nclient-key-5\n-----END PRIVATE KEY-----\n";
    let mtls = |name: &str, tls: RouteTls| {
        let mut r = route(name, &[]);
        r.spec.backend = Backend {
            port: None,
            origin: Some(Origin {
                url: "https://backend.example.com".into(),
                pass_credentials: false,
                tls: Some(OriginTls {
                    mode: OriginTlsMode::Mutual,
                    ca_secret_ref: None,
                    client_certificate: Some(tls),
                }),
                auth: None,
            }),
        };
        r
    };
    let named = RouteTls {
        secret_name: Some("client-cert".into()),
        issue: None,
    };
    let mut w = World::new();
    w.secrets.push(secret(
        "client-cert",
        "kubernetes.io/tls",
        &[("tls.crt", pem), ("tls.key", key)],
    ));
    w.routes.push(mtls("gw", named.clone()));
    let out = w.compile();
    let (reason, field, _) = rejected(&out, "gw");
    assert_eq!(
        (reason, field.as_str()),
        (
            reason::SECRET_NOT_ALLOWED,
            "spec.backend.origin.tls.clientCertificate.secretName"
        )
    );
    assert_nowhere(&out, "client-key-5");

    w.secrets[3] = annotated(w.secrets[3].clone(), &[(ALLOWED_ROUTES_ANNOTATION, "gw")]);
    assert!(w.compile().routes["gw"].is_accepted());

    // The certificate the operator's CA issued for the route is the route's own.
    let mut w = World::new();
    w.secrets.push(secret(
        &issued_client_secret("gw"),
        "kubernetes.io/tls",
        &[("tls.crt", pem), ("tls.key", key)],
    ));
    w.routes.push(mtls(
        "gw",
        RouteTls {
            secret_name: None,
            issue: Some(true),
        },
    ));
    assert!(w.compile().routes["gw"].is_accepted());
}

#[test]
fn an_introspection_client_secret_must_allow_the_profile_and_its_endpoint() {
    let world = |annotations: &[(&str, &str)]| {
        let mut w = World::new();
        w.secrets.push(annotated(
            secret(
                "idp-client",
                "Opaque",
                &[("clientId", "rs"), ("clientSecret", "introspection-secret-3")],
            ),
            annotations,
        ));
        let mut p = oauth2("opaque");
        let o = p.spec.oauth2.as_mut().unwrap();
        o.jwks_uri = None;
        o.introspection = Some(OAuth2Introspection {
            url: "https://idp.example.com/introspect".into(),
            client_secret_ref: SecretRef::new("idp-client"),
        });
        w.profiles.push(p);
        w.routes.push(route("api", &["opaque"]));
        w
    };
    let out = world(&[]).compile();
    let (reason, field, message) = rejected(&out, "opaque");
    assert_eq!(
        (reason, field.as_str()),
        (
            reason::SECRET_NOT_ALLOWED,
            "spec.oauth2.introspection.clientSecretRef.name"
        )
    );
    assert!(
        message.contains("portcullis.dev/allowed-profiles: \"opaque\""),
        "{message}"
    );
    assert_eq!(rejected(&out, "api").0, reason::PROFILE_INVALID);
    assert_nowhere(&out, "introspection-secret-3");
    // The route annotation is not the profile's.
    let out = world(&[(ALLOWED_ROUTES_ANNOTATION, "*")]).compile();
    assert_eq!(rejected(&out, "opaque").0, reason::SECRET_NOT_ALLOWED);

    let out = world(&[(ALLOWED_PROFILES_ANNOTATION, "opaque")]).compile();
    assert!(out.profiles["opaque"].is_accepted(), "{:?}", out.profiles["opaque"]);
    assert!(out.routes["api"].is_accepted());
    let out = world(&[
        (ALLOWED_PROFILES_ANNOTATION, "*"),
        (ALLOWED_ORIGINS_ANNOTATION, "other-idp.example.com"),
    ])
    .compile();
    let (reason, _, message) = rejected(&out, "opaque");
    assert_eq!(reason, reason::SECRET_NOT_ALLOWED);
    assert!(
        message.contains("spec.oauth2.introspection.url goes to \"idp.example.com\""),
        "{message}"
    );
}

#[test]
fn inbound_secrets_and_the_serving_certificate_need_no_opt_in() {
    // Profiles verify callers with their Secrets (nothing is sent anywhere; the introspection
    // client aside), and a route's serving certificate is presented to clients: neither
    // needs the annotation.
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let key = "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n";
    let mut w = World::new();
    w.secrets.push(secret(
        "api-tls",
        "kubernetes.io/tls",
        &[("tls.crt", pem), ("tls.key", key)],
    ));
    let mut r = route("api", &["finance"]);
    r.spec.tls = Some(RouteTls {
        secret_name: Some("api-tls".into()),
        issue: None,
    });
    w.routes.push(r);
    let out = w.compile();
    assert!(out.routes["api"].is_accepted(), "{:?}", out.routes["api"]);
    assert!(out.profiles["finance"].is_accepted());
}

// --- overlapping routes ---------------------------------------------------------------------

fn at(mut r: ApiRoute, seconds: i64, prefix: &str) -> ApiRoute {
    r.metadata.creation_timestamp = Some(Time(
        k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + seconds).unwrap(),
    ));
    r.spec.path_prefix = prefix.into();
    // Every route on the same workload.
    r.spec.workload_selector = LabelSelector {
        match_labels: Some([("app".to_string(), "shop".to_string())].into()),
        ..Default::default()
    };
    r
}

fn labelled(mut r: ApiRoute, key: &str, value: &str) -> ApiRoute {
    r.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(key.into(), value.into());
    r
}

fn with_annotation(mut r: ApiRoute, key: &str, value: &str) -> ApiRoute {
    r.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(key.into(), value.into());
    r
}

fn compile_routes(routes: Vec<ApiRoute>) -> Output {
    let mut w = World::new();
    w.routes = routes;
    w.compile()
}

#[test]
fn a_newer_route_of_another_owner_on_an_older_routes_paths_is_refused() {
    let finance = at(route("finance", &["finance"]), 0, "/finance");
    let takeover = at(route("takeover", &["public"]), 10, "/finance/payments");
    let out = compile_routes(vec![takeover.clone(), finance.clone()]);
    assert!(out.routes["finance"].is_accepted());
    let (reason, field, message) = rejected(&out, "takeover");
    assert_eq!((reason, field.as_str()), (reason::ROUTE_OVERLAP, "spec.pathPrefix"));
    assert!(
        message.starts_with("spec.pathPrefix: \"/finance/payments\" (any host) overlaps ApiRoute \"finance\""),
        "{message}"
    );
    assert!(
        message.contains("portcullis.dev/allow-overlap: \"takeover\""),
        "{message}"
    );
    assert_eq!(route_names(&out), ["finance"]);

    // Any overlap counts: the same prefix, or a shorter one over the older route's.
    for prefix in ["/finance", "/", "/finance/"] {
        let out = compile_routes(vec![finance.clone(), at(route("takeover", &[]), 10, prefix)]);
        assert_eq!(rejected(&out, "takeover").0, reason::ROUTE_OVERLAP, "{prefix}");
    }
    // The older route wins whatever the names; without timestamps (render), the name decides.
    let out = compile_routes(vec![
        at(route("a-new", &[]), 20, "/finance/x"),
        at(route("z-old", &[]), 0, "/finance"),
    ]);
    assert!(out.routes["z-old"].is_accepted());
    assert_eq!(rejected(&out, "a-new").0, reason::ROUTE_OVERLAP);
    let mut a = at(route("a", &[]), 0, "/x");
    let mut b = at(route("b", &[]), 0, "/x/y");
    a.metadata.creation_timestamp = None;
    b.metadata.creation_timestamp = None;
    let out = compile_routes(vec![b, a]);
    assert!(out.routes["a"].is_accepted());
    assert_eq!(rejected(&out, "b").0, reason::ROUTE_OVERLAP);
}

#[test]
fn routes_that_do_not_overlap_are_left_alone() {
    let finance = at(route("finance", &["finance"]), 0, "/finance");
    let mut other_workload = at(route("other", &[]), 10, "/finance/x");
    other_workload.spec.workload_selector.match_labels = Some([("app".to_string(), "billing".to_string())].into());
    let sibling_path = at(route("sibling", &[]), 10, "/financex");
    let mut other_host = at(route("host", &[]), 10, "/finance/x");
    other_host.spec.hosts = vec!["b.example.com".into()];
    other_host.spec.backend.port = Some(9090);
    let mut finance_on_a = finance.clone();
    finance_on_a.spec.hosts = vec!["a.example.com".into()];
    let mut egress = at(route("egress", &[]), 10, "/finance/x");
    egress.spec.egress = true;
    egress.spec.backend = gateway("x", "https://o.example.com", "s").spec.backend;
    egress.spec.backend.origin.as_mut().unwrap().auth = None;
    let out = compile_routes(vec![finance_on_a, other_workload, sibling_path, other_host, egress]);
    for name in ["finance", "other", "sibling", "host", "egress"] {
        assert!(out.routes[name].is_accepted(), "{name}: {:?}", out.routes[name]);
    }

    // Another host name on the same app port still reaches the same paths of the app.
    let mut finance_on_a = finance.clone();
    finance_on_a.spec.hosts = vec!["a.example.com".into()];
    let mut same_port = at(route("same-port", &[]), 10, "/finance/x");
    same_port.spec.hosts = vec!["b.example.com".into()];
    let out = compile_routes(vec![finance_on_a, same_port]);
    assert_eq!(rejected(&out, "same-port").0, reason::ROUTE_OVERLAP);
}

#[test]
fn the_same_owner_or_the_older_routes_consent_allows_an_overlap() {
    let finance = at(route("finance", &["finance"]), 0, "/finance");
    let payments = at(route("payments", &["accounting"]), 10, "/finance/payments");

    let out = compile_routes(vec![
        labelled(finance.clone(), OWNER_LABEL, "team-finance"),
        labelled(payments.clone(), OWNER_LABEL, "team-finance"),
    ]);
    assert!(out.routes["payments"].is_accepted(), "{:?}", out.routes["payments"]);
    assert_eq!(route_names(&out), ["finance", "payments"]);

    // Different owners, or only one of them labelled: refused.
    for (a, b) in [("team-finance", "team-web"), ("team-finance", "")] {
        let out = compile_routes(vec![
            labelled(finance.clone(), OWNER_LABEL, a),
            labelled(payments.clone(), OWNER_LABEL, b),
        ]);
        assert_eq!(rejected(&out, "payments").0, reason::ROUTE_OVERLAP, "{a} / {b}");
    }
    // The older route lists the newer one (or everyone).
    for list in ["payments", "reports, payments", "*"] {
        let out = compile_routes(vec![
            with_annotation(finance.clone(), ALLOW_OVERLAP_ANNOTATION, list),
            payments.clone(),
        ]);
        assert!(out.routes["payments"].is_accepted(), "{list}");
    }
    // The newer route's own annotation grants nothing.
    let out = compile_routes(vec![
        finance.clone(),
        with_annotation(payments.clone(), ALLOW_OVERLAP_ANNOTATION, "finance"),
    ]);
    assert_eq!(rejected(&out, "payments").0, reason::ROUTE_OVERLAP);
}

#[test]
fn a_refused_overlap_is_in_no_group_however_the_group_is_compiled() {
    // Per pod labels, the compiler sees every route, and refuses the overlap there too.
    let finance = at(route("finance", &["finance"]), 0, "/finance");
    let takeover = at(route("takeover", &["public"]), 10, "/finance/payments");
    let mut w = World::new();
    w.routes = vec![finance, takeover];
    let labels = BTreeMap::from([("app".to_string(), "shop".to_string())]);
    let out = w.compile_for(Some(&labels));
    assert_eq!(route_names(&out), ["finance"]);
    assert_eq!(rejected(&out, "takeover").0, reason::ROUTE_OVERLAP);
}

#[test]
fn shared_owners_are_reported_for_the_webhook() {
    let finance = labelled(at(route("finance", &[]), 0, "/finance"), OWNER_LABEL, "t");
    let claim = labelled(at(route("claim", &[]), 10, "/finance/x"), OWNER_LABEL, "t");
    let elsewhere = labelled(at(route("elsewhere", &[]), 5, "/other"), OWNER_LABEL, "t");
    let consented = with_annotation(finance.clone(), ALLOW_OVERLAP_ANNOTATION, "claim");
    assert_eq!(
        shared_owner_routes(&claim, &[finance.clone(), elsewhere.clone(), claim.clone()]),
        ["finance"]
    );
    // Both directions: an older route claiming a newer route's owner shares its paths too.
    assert_eq!(shared_owner_routes(&finance, std::slice::from_ref(&claim)), ["claim"]);
    assert!(shared_owner_routes(&claim, &[consented, elsewhere]).is_empty());
}

fn route_names(out: &Output) -> Vec<&str> {
    out.loaded.config.routes.iter().map(|r| r.name.as_str()).collect()
}

/// Where keys, token answers and tokens come from, and where client secrets go: `https://`
/// unless the object says `allowHttp: true` (for an identity provider in the same pod or a
/// test). Refused in clear text, the secret never reaches the compiled output.
#[test]
fn identity_urls_must_be_https_unless_the_object_opts_in() {
    let profile_world = |jwks: &str, introspect: &str, allow_http: bool| {
        let mut w = World::new();
        w.secrets.push(annotated(
            secret(
                "idp-client",
                "Opaque",
                &[("clientId", "rs"), ("clientSecret", "introspection-secret-4")],
            ),
            &[(ALLOWED_PROFILES_ANNOTATION, "p")],
        ));
        let mut p = oauth2("p");
        let o = p.spec.oauth2.as_mut().unwrap();
        o.jwks_uri = Some(jwks.into());
        o.introspection = Some(OAuth2Introspection {
            url: introspect.into(),
            client_secret_ref: SecretRef::new("idp-client"),
        });
        o.allow_http = allow_http;
        w.profiles.push(p);
        w.routes.push(route("api", &["p"]));
        w.compile()
    };
    let out = profile_world(
        "http://idp.example.com/jwks",
        "https://idp.example.com/introspect",
        false,
    );
    let (reason, field, message) = rejected(&out, "p");
    assert_eq!((reason, field.as_str()), (reason::INVALID_SPEC, "spec.oauth2.jwksUri"));
    assert!(message.contains("spec.oauth2.allowHttp: true"), "{message}");
    let out = profile_world(
        "https://idp.example.com/jwks",
        "http://idp.example.com/introspect",
        false,
    );
    let (reason, field, _) = rejected(&out, "p");
    assert_eq!(
        (reason, field.as_str()),
        (reason::INVALID_SPEC, "spec.oauth2.introspection.url")
    );
    assert_nowhere(&out, "introspection-secret-4");
    let out = profile_world("http://idp.example.com/jwks", "http://idp.example.com/introspect", true);
    assert_eq!(
        out.profiles["p"],
        Verdict::Accepted,
        "allowHttp: true admits http:// endpoints"
    );

    let route_world = |token_url: &str, allow_http: bool| {
        let mut w = World::new();
        w.secrets.push(annotated(
            secret(
                "client",
                "Opaque",
                &[("clientId", "gw"), ("clientSecret", "client-secret-8")],
            ),
            &[
                (ALLOWED_ROUTES_ANNOTATION, "gw"),
                (
                    ALLOWED_ORIGINS_ANNOTATION,
                    "backend.example.com,idp.example.com,http://idp.example.com",
                ),
            ],
        ));
        let mut r = gateway("gw", "https://backend.example.com", "unused");
        let auth = r.spec.backend.origin.as_mut().unwrap().auth.as_mut().unwrap();
        auth.basic = None;
        auth.oauth2_client_credentials = Some(OriginOAuth2ClientCredentials {
            token_url: token_url.into(),
            client_secret_ref: SecretRef::new("client"),
            scopes: vec![],
            audience: None,
            allow_http,
        });
        w.routes.push(r);
        w.compile()
    };
    let out = route_world("http://idp.example.com/token", false);
    let (reason, field, message) = rejected(&out, "gw");
    assert_eq!(
        (reason, field.as_str()),
        (
            reason::INVALID_SPEC,
            "spec.backend.origin.auth.oauth2ClientCredentials.tokenUrl"
        )
    );
    assert!(message.contains("allowHttp: true"), "{message}");
    assert_nowhere(&out, "client-secret-8");
    assert_eq!(
        route_world("http://idp.example.com/token", true).routes["gw"],
        Verdict::Accepted
    );
    assert_eq!(
        route_world("https://idp.example.com/token", false).routes["gw"],
        Verdict::Accepted
    );
}

/// TLS without verification protects the credentials from nobody who answers in the origin's
/// place: for the allow list it is plain HTTP.
#[test]
fn unverified_tls_counts_as_plain_http_for_allowed_origins() {
    let unverified = |origins: &str| {
        let mut w = world_with_origin_secret(
            "https://backend.example.com",
            &[(ALLOWED_ROUTES_ANNOTATION, "*"), (ALLOWED_ORIGINS_ANNOTATION, origins)],
        );
        w.routes[0].spec.backend.origin.as_mut().unwrap().tls = Some(OriginTls {
            mode: OriginTlsMode::None,
            ca_secret_ref: None,
            client_certificate: None,
        });
        w.compile()
    };
    let out = unverified("backend.example.com");
    let (reason, _, message) = rejected(&out, "gw");
    assert_eq!(reason, reason::SECRET_NOT_ALLOWED);
    assert!(message.contains("verified TLS only"), "{message}");
    assert_nowhere(&out, "origin-password-9");
    assert_eq!(unverified("http://backend.example.com").routes["gw"], Verdict::Accepted);
}
