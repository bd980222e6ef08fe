//! The CEL rules (`x-kubernetes-validations`) in the CRDs, evaluated client-side with
//! kube-cel (the Kubernetes CEL libraries) the way the API server evaluates them: every rule
//! compiles, the examples pass, and each rule refuses what it is meant to refuse.

use kube::CustomResourceExt;
use portcullis_api::{ApiRoute, SecurityProfile};
use serde_json::{Value, json};

fn schema<K: CustomResourceExt>() -> Value {
    let crd = serde_json::to_value(K::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// The messages of every rule the object breaks (defaults applied first, as the API server does).
fn violations<K: CustomResourceExt>(object: &Value) -> Vec<String> {
    kube_cel::Validator::new()
        .validate_with_defaults(&schema::<K>(), object, None)
        .into_iter()
        .map(|e| e.to_string())
        .collect()
}

/// Compilation errors and cost-budget warnings of every rule under `node`. (kube-cel's scope
/// check is not used: it mistakes comprehension variables such as `p` in `all(p, ...)` for
/// free variables.)
fn collect_compile_errors(node: &kube_cel::CompiledSchema, out: &mut Vec<String>) {
    out.extend(node.compilation_errors().iter().map(|e| e.to_string()));
    for compiled in node.validations.iter().flatten() {
        let rule = &compiled.rule.rule;
        let warnings = kube_cel::estimate_rule_cost(rule, node);
        out.extend(warnings.into_iter().map(|w| format!("{rule}: {}", w.message)));
    }
    for child in node.properties.values() {
        collect_compile_errors(child, out);
    }
    if let Some(items) = &node.items {
        collect_compile_errors(items, out);
    }
}

#[test]
fn every_rule_compiles_within_the_cost_budget() {
    for schema in [schema::<SecurityProfile>(), schema::<ApiRoute>()] {
        let compiled = kube_cel::compile_schema(&schema);
        let mut errors = Vec::new();
        collect_compile_errors(&compiled, &mut errors);
        assert!(errors.is_empty(), "{errors:#?}");
    }
}

fn profile(spec: Value) -> Value {
    json!({"apiVersion": "portcullis.dev/v1alpha1", "kind": "SecurityProfile",
           "metadata": {"name": "p", "namespace": "prod"}, "spec": spec})
}

fn route(spec: Value) -> Value {
    let mut base = json!({"workloadSelector": {"matchLabels": {"app": "a"}}, "backend": {"port": 8080}});
    base.as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
    json!({"apiVersion": "portcullis.dev/v1alpha1", "kind": "ApiRoute",
           "metadata": {"name": "r", "namespace": "prod"}, "spec": base})
}

#[test]
fn the_examples_pass_every_rule() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            continue; // examples/quickstart.sh
        }
        let text = std::fs::read_to_string(path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc).unwrap();
            let errors = match value["kind"].as_str() {
                Some("SecurityProfile") => violations::<SecurityProfile>(&value),
                Some("ApiRoute") => violations::<ApiRoute>(&value),
                _ => continue,
            };
            assert!(errors.is_empty(), "{}: {errors:?}", value["metadata"]["name"]);
            checked += 1;
        }
    }
    assert!(checked >= 12, "checked only {checked} objects");
}

#[test]
fn type_must_match_its_block() {
    let ok = profile(json!({"type": "Basic", "basic": {"secretRef": {"name": "s"}}}));
    assert!(violations::<SecurityProfile>(&ok).is_empty());
    let missing = profile(json!({"type": "Basic"}));
    let errors = violations::<SecurityProfile>(&missing);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.basic must be set exactly when type is Basic")),
        "{errors:?}"
    );
    let extra = profile(json!({"type": "Anonymous", "apiKey": {"secretRef": {"name": "k"}}}));
    let errors = violations::<SecurityProfile>(&extra);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.apiKey must be set exactly when type is ApiKey")),
        "{errors:?}"
    );
}

#[test]
fn ip_ranges_are_checked() {
    let with = |range: Value| {
        violations::<SecurityProfile>(&profile(json!({"type": "Anonymous", "trustedIpRanges": [range]})))
    };
    assert!(with(json!({"cidr": "10.0.0.0/8"})).is_empty());
    assert!(with(json!({"from": "192.168.1.10", "to": "192.168.1.50"})).is_empty());
    assert!(with(json!({"from": "2001:db8::1", "to": "2001:db8::9"})).is_empty());
    let e = with(json!({"cidr": "10.0.0.0/33"}));
    assert!(e.iter().any(|e| e.contains("cidr must be a CIDR block")), "{e:?}");
    let e = with(json!({"from": "192.168.1.50", "to": "192.168.1.10"}));
    assert!(
        e.iter().any(|e| e.contains("from must not be greater than to")),
        "{e:?}"
    );
    let e = with(json!({"from": "10.0.0.1", "to": "2001:db8::1"}));
    assert!(e.iter().any(|e| e.contains("same family")), "{e:?}");
    let e = with(json!({"cidr": "10.0.0.0/8", "from": "10.0.0.1", "to": "10.0.0.2"}));
    assert!(e.iter().any(|e| e.contains("either cidr, or from and to")), "{e:?}");
    let e = with(json!({"from": "10.0.0.1"}));
    assert!(e.iter().any(|e| e.contains("from and to go together")), "{e:?}");
}

#[test]
fn route_rules() {
    let e = violations::<ApiRoute>(&route(json!({})));
    assert!(e.is_empty(), "{e:?}");
    let e = violations::<ApiRoute>(&route(
        json!({"profiles": [{"name": "a"}, {"name": "b"}, {"name": "a"}]}),
    ));
    assert!(
        e.iter().any(|e| e.contains("a profile may be listed only once")),
        "{e:?}"
    );
    let e = violations::<ApiRoute>(&route(
        json!({"backend": {"port": 80, "origin": {"url": "https://x.example"}}}),
    ));
    assert!(e.iter().any(|e| e.contains("exactly one of port or origin")), "{e:?}");
    let e = violations::<ApiRoute>(&route(json!({"backend": {}})));
    assert!(e.iter().any(|e| e.contains("exactly one of port or origin")), "{e:?}");
    let e = violations::<ApiRoute>(&route(json!({"egress": true})));
    assert!(
        e.iter().any(|e| e.contains("egress routes need backend.origin")),
        "{e:?}"
    );
    let e = violations::<ApiRoute>(&route(json!({"sslOnly": true})));
    assert!(e.iter().any(|e| e.contains("sslOnly needs tls")), "{e:?}");
    let e = violations::<ApiRoute>(&route(json!({"tls": {"secretName": "x", "issue": true}})));
    assert!(
        e.iter().any(|e| e.contains("exactly one of secretName or issue")),
        "{e:?}"
    );
    let origin = |o: Value| violations::<ApiRoute>(&route(json!({"backend": {"origin": o}})));
    let e = origin(json!({"url": "https://o.example", "tls": {"mode": "Mutual"}}));
    assert!(
        e.iter().any(|e| e.contains("tls mode Mutual needs clientCertificate")),
        "{e:?}"
    );
    let e = origin(json!({"url": "http://o.example", "tls": {"mode": "Verify"}}));
    assert!(e.iter().any(|e| e.contains("http:// origin cannot use tls")), "{e:?}");
    let e = origin(json!({"url": "https://o.example", "auth": {
        "basic": {"secretRef": {"name": "a"}}, "sharedSecret": {"secretRef": {"name": "b"}}}}));
    assert!(e.iter().any(|e| e.contains("origin auth needs exactly one")), "{e:?}");
}

#[test]
fn oauth2_rules() {
    let e = violations::<SecurityProfile>(&profile(json!({"type": "OAuth2", "oauth2": {"provider": "Builtin"}})));
    assert!(e.iter().any(|e| e.contains("oauth2.builtin is required")), "{e:?}");
    let e = violations::<SecurityProfile>(&profile(json!({"type": "OAuth2", "oauth2": {"provider": "Generic"}})));
    assert!(
        e.iter().any(|e| e.contains("needs jwksUri, introspection or login")),
        "{e:?}"
    );
    let oauth2 = |o: Value| violations::<SecurityProfile>(&profile(json!({"type": "OAuth2", "oauth2": o})));
    // Sign-in: an identity provider, an issuer for Generic (https:// unless allowHttp), openid.
    let login = json!({"clientId": "c", "clientSecretRef": {"name": "s"}, "redirectPath": "/cb",
                       "logoutPath": "/out", "scopes": ["openid"], "sessionMaxSeconds": 3600});
    assert_eq!(
        oauth2(json!({"provider": "Google", "login": login})),
        Vec::<String>::new()
    );
    let e = oauth2(json!({"provider": "Builtin", "builtin": {"clientsSecretRef": {"name": "b"}}, "login": login}));
    assert!(
        e.iter().any(|e| e.contains("oauth2.login needs an identity provider")),
        "{e:?}"
    );
    let e = oauth2(json!({"provider": "Generic", "login": login}));
    assert!(
        e.iter().any(|e| e.contains("with provider Generic needs issuer")),
        "{e:?}"
    );
    let e = oauth2(json!({"provider": "Generic", "issuer": "http://op.example", "login": login}));
    assert!(
        e.iter().any(|e| e.contains("issuer must be https:// for login")),
        "{e:?}"
    );
    let mut no_openid = login.clone();
    no_openid["scopes"] = json!(["email"]);
    let e = oauth2(json!({"provider": "Google", "login": no_openid}));
    assert!(
        e.iter().any(|e| e.contains("login.scopes must include openid")),
        "{e:?}"
    );
    let e = oauth2(json!({"jwksUri": "http://idp.example/jwks"}));
    assert!(e.iter().any(|e| e.contains("jwksUri must be https://")), "{e:?}");
    let e = oauth2(json!({"introspection": {"url": "http://idp.example/i", "clientSecretRef": {"name": "c"}}}));
    assert!(
        e.iter().any(|e| e.contains("introspection.url must be https://")),
        "{e:?}"
    );
    assert_eq!(
        oauth2(json!({"jwksUri": "http://idp.example/jwks", "allowHttp": true})),
        Vec::<String>::new()
    );
    assert_eq!(
        oauth2(json!({"jwksUri": "https://idp.example/jwks"})),
        Vec::<String>::new()
    );
    let token = |t: Value| {
        violations::<ApiRoute>(&route(json!({"backend": {"origin": {"url": "https://o.example",
            "auth": {"oauth2ClientCredentials": t}}}})))
    };
    let e = token(json!({"tokenUrl": "http://idp.example/t", "clientSecretRef": {"name": "c"}}));
    assert!(e.iter().any(|e| e.contains("tokenUrl must be https://")), "{e:?}");
    let ok = json!({"tokenUrl": "http://idp.example/t", "clientSecretRef": {"name": "c"}, "allowHttp": true});
    assert_eq!(token(ok), Vec::<String>::new());
}

#[test]
fn a_rate_limit_needs_requests_per_minute_or_a_quota() {
    let with = |limit: Value| violations::<SecurityProfile>(&profile(json!({"type": "Anonymous", "rateLimit": limit})));
    let e = with(json!({"per": "Consumer", "onStoreUnavailable": "Deny"}));
    assert!(
        e.iter()
            .any(|e| e.contains("spec.rateLimit must set requestsPerMinute, quota or both")),
        "{e:?}"
    );
    assert_eq!(with(json!({"requestsPerMinute": 60})), Vec::<String>::new());
    assert_eq!(
        with(json!({"quota": {"requests": 1000, "period": "Month"}, "per": "Consumer"})),
        Vec::<String>::new()
    );
    assert_eq!(
        with(json!({"requestsPerMinute": 60, "quota": {"requests": 1, "period": "Hour"}})),
        Vec::<String>::new()
    );
}
