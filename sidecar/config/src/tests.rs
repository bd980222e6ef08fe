use super::*;

fn basic_config() -> (SidecarConfig, SecretMaterial) {
    let mut config = SidecarConfig::empty("prod");
    config.generation = "g1".into();
    config.profiles.push(Profile {
        name: "accounting".into(),
        auth: ProfileAuth::Basic,
        trusted_ip_ranges: vec![IpRange {
            from: "10.0.0.0".parse().unwrap(),
            to: "10.0.255.255".parse().unwrap(),
        }],
        rate_limit_per_minute: Some(5),
        rate_limit_per: Default::default(),
        quota: None,
        on_store_unavailable: StoreFallback::default(),
        replicas: None,
        identity_header: None,
    });
    config.routes.push(Route {
        name: "finance".into(),
        hosts: vec![],
        path_prefix: "/finance".into(),
        case_insensitive: false,
        methods: vec![],
        profiles: vec!["accounting".into()],
        ssl_only: false,
        tls: false,
        backend: Backend::Local { port: 8080 },
        egress: false,
    });
    let mut secrets = SecretMaterial {
        schema_version: SCHEMA_VERSION,
        generation: "g1".into(),
        ..Default::default()
    };
    secrets.profiles.insert(
        "accounting".into(),
        ProfileSecrets {
            basic: Some(UserPassword {
                username: "alice".into(),
                password: Sensitive::new("s3cret-pw"),
            }),
            ..Default::default()
        },
    );
    (config, secrets)
}

#[test]
fn round_trips_through_a_directory() {
    let (config, secrets) = basic_config();
    let loaded = Loaded { config, secrets };
    let dir = std::env::temp_dir().join(format!("portcullis-config-test-{}", std::process::id()));
    loaded.write_dir(&dir).unwrap();
    let back = load_dir(&dir).unwrap();
    assert_eq!(back, loaded);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn secrets_never_print() {
    let (_, secrets) = basic_config();
    let debug = format!("{secrets:?}");
    assert!(!debug.contains("s3cret-pw"), "{debug}");
    assert!(debug.contains("<redacted>"));
}

#[test]
fn check_refuses_missing_credentials() {
    let (config, mut secrets) = basic_config();
    secrets.profiles.clear();
    let err = config.check(&secrets).unwrap_err().to_string();
    assert!(err.contains("profile accounting (Basic) has no credentials"), "{err}");
}

#[test]
fn check_refuses_unknown_profile_and_mismatched_generation() {
    let (mut config, secrets) = basic_config();
    config.routes[0].profiles.push("ghost".into());
    let err = config.check(&secrets).unwrap_err().to_string();
    assert!(err.contains("route finance: profile ghost"), "{err}");

    let (mut config, secrets) = basic_config();
    config.generation = "g2".into();
    assert!(matches!(
        config.check(&secrets),
        Err(ConfigError::GenerationMismatch { .. })
    ));
}

#[test]
fn check_refuses_reversed_range() {
    let (mut config, secrets) = basic_config();
    config.profiles[0].trusted_ip_ranges[0] = IpRange {
        from: "10.0.0.9".parse().unwrap(),
        to: "10.0.0.1".parse().unwrap(),
    };
    assert!(
        config
            .check(&secrets)
            .unwrap_err()
            .to_string()
            .contains("not a valid range")
    );
}

#[test]
fn unknown_fields_are_refused() {
    let err =
        serde_json::from_str::<SidecarConfig>(r#"{"schemaVersion":1,"generation":"g","namespace":"n","routez":[]}"#)
            .unwrap_err();
    assert!(err.to_string().contains("routez"), "{err}");
}

#[test]
fn case_insensitive_defaults_to_false_and_is_left_out_when_false() {
    let old = r#"{"name":"r","pathPrefix":"/admin","backend":{"type":"Local","port":8080}}"#;
    let route: Route = serde_json::from_str(old).unwrap();
    assert!(
        !route.case_insensitive,
        "a config.json written before the field still loads"
    );
    // Left out when false: configurations without case-insensitive routes hash as before.
    let json = serde_json::to_string(&route).unwrap();
    assert!(!json.contains("caseInsensitive"), "{json}");
    let mut route = route;
    route.case_insensitive = true;
    let json = serde_json::to_string(&route).unwrap();
    assert!(json.contains(r#""caseInsensitive":true"#), "{json}");
    assert_eq!(serde_json::from_str::<Route>(&json).unwrap(), route);
}

#[test]
fn host_names_are_dns_labels_or_bracketed_ipv6() {
    let label63 = "a".repeat(63);
    let long_ok = [label63.as_str(); 4].join(".")[..253].to_owned();
    let long_ok = long_ok.trim_end_matches('.').to_owned();
    for host in [
        "a",
        "a.",
        "api.example.com",
        "a-b_c.example",
        "127.0.0.1",
        "[::1]",
        "[2001:db8::7]",
        label63.as_str(),
        long_ok.as_str(),
    ] {
        assert!(valid_host(host), "{host} is valid");
    }
    let label64 = "a".repeat(64);
    let too_long = format!("{}.{}", "a.".repeat(126), "ab");
    for host in [
        "",
        ".",
        "..",
        ".a",
        "a..b",
        "a.b..",
        "ex ample",
        "é.example",
        "a/b",
        "a:80",
        "[::1",
        "[not-an-ip]",
        label64.as_str(),
        too_long.as_str(),
    ] {
        assert!(!valid_host(host), "{host:?} is not valid");
    }
}
