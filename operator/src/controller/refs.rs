//! The Secrets a namespace's profiles and routes reference: what the controller keeps in
//! memory and watches for changes, and nothing else.
//!
//! Pure. Layer 0 of the list in `controller`: may use no sibling module.

use std::collections::BTreeSet;

use portcullis_api::{ApiRoute, RouteTls, SecurityProfile};

/// Names of the Secrets a profile reads.
pub fn profile_secrets(profile: &SecurityProfile, out: &mut BTreeSet<String>) {
    let spec = &profile.spec;
    let names = [
        spec.basic.as_ref().map(|b| &b.secret_ref.name),
        spec.api_key.as_ref().map(|k| &k.secret_ref.name),
        spec.oauth2
            .as_ref()
            .and_then(|o| o.introspection.as_ref())
            .map(|i| &i.client_secret_ref.name),
        spec.oauth2
            .as_ref()
            .and_then(|o| o.builtin.as_ref())
            .map(|b| &b.clients_secret_ref.name),
        spec.oauth2
            .as_ref()
            .and_then(|o| o.builtin.as_ref())
            .and_then(|b| b.delegation.as_ref())
            .map(|d| &d.owner_secret_ref.name),
        spec.oauth2
            .as_ref()
            .and_then(|o| o.login.as_ref())
            .map(|l| &l.client_secret_ref.name),
        spec.http_signature.as_ref().map(|h| &h.secret_ref.name),
        spec.oauth1.as_ref().map(|o| &o.consumers_secret_ref.name),
        spec.oauth1
            .as_ref()
            .and_then(|o| o.tokens_secret_ref.as_ref())
            .map(|t| &t.name),
        spec.client_certificate.as_ref().map(|c| &c.ca_secret_ref.name),
    ];
    out.extend(names.into_iter().flatten().cloned());
}

/// The key Secrets the operator makes for a profile (so not ones its author names: watched,
/// never checked against the author's access): the session keys of a profile with sign-in,
/// the token signing keys of a Builtin provider.
pub fn profile_operator_secrets(profile: &SecurityProfile) -> impl Iterator<Item = String> {
    let name = profile.metadata.name.as_deref().unwrap_or_default();
    let oauth2 = profile.spec.oauth2.as_ref();
    let session = oauth2
        .and_then(|o| o.login.as_ref())
        .map(|_| crate::compile::login::session_secret_name(name));
    let tokens = oauth2
        .filter(|o| o.provider == portcullis_api::OAuth2Provider::Builtin)
        .map(|_| crate::compile::token_keys::token_keys_secret_name(name));
    session.into_iter().chain(tokens)
}

/// Names of the Secrets a route reads, including those the operator's CA issues for it.
pub fn route_secrets(route: &ApiRoute, out: &mut BTreeSet<String>) {
    let name = route.metadata.name.as_deref().unwrap_or_default();
    let spec = &route.spec;
    let mut tls = |t: &RouteTls, issued: String| {
        if let Some(secret) = &t.secret_name {
            out.insert(secret.clone());
        }
        if t.issue == Some(true) {
            out.insert(issued);
        }
    };
    if let Some(t) = &spec.tls {
        tls(t, format!("{name}-portcullis-tls"));
    }
    let Some(origin) = &spec.backend.origin else { return };
    if let Some(t) = &origin.tls {
        if let Some(c) = &t.client_certificate {
            tls(c, format!("{name}-portcullis-client"));
        }
        if let Some(ca) = &t.ca_secret_ref {
            out.insert(ca.name.clone());
        }
    }
    if let Some(auth) = &origin.auth {
        let names = [
            auth.basic.as_ref().map(|b| &b.secret_ref.name),
            auth.shared_secret.as_ref().map(|s| &s.secret_ref.name),
            auth.http_signature.as_ref().map(|h| &h.secret_ref.name),
            auth.oauth2_client_credentials
                .as_ref()
                .map(|o| &o.client_secret_ref.name),
        ];
        out.extend(names.into_iter().flatten().cloned());
    }
}

/// Every Secret name the given profiles and routes reference.
pub fn referenced_secrets<'a>(
    profiles: impl IntoIterator<Item = &'a SecurityProfile>,
    routes: impl IntoIterator<Item = &'a ApiRoute>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    profiles.into_iter().for_each(|p| {
        profile_secrets(p, &mut out);
        out.extend(profile_operator_secrets(p));
    });
    routes.into_iter().for_each(|r| route_secrets(r, &mut out));
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use k8s_openapi::api::core::v1::Secret;
    use serde::Deserialize;

    use super::*;
    use crate::compile::{Inputs, compile};

    /// Every object in `examples/`.
    fn examples() -> (Vec<SecurityProfile>, Vec<ApiRoute>, Vec<Secret>) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let (mut profiles, mut routes, mut secrets) = (Vec::new(), Vec::new(), Vec::new());
        let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "yaml")) {
            let text = std::fs::read_to_string(file).unwrap();
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value = serde_yaml::Value::deserialize(doc).unwrap();
                match value.get("kind").and_then(|k| k.as_str()) {
                    Some("SecurityProfile") => profiles.push(serde_yaml::from_value(value).unwrap()),
                    Some("ApiRoute") => routes.push(serde_yaml::from_value(value).unwrap()),
                    Some("Secret") => secrets.push(serde_yaml::from_value(value).unwrap()),
                    _ => {}
                }
            }
        }
        (profiles, routes, secrets)
    }

    #[test]
    fn the_referenced_secrets_are_all_the_compiler_needs() {
        let (profiles, routes, secrets) = examples();
        assert!(!profiles.is_empty() && !routes.is_empty() && !secrets.is_empty());
        let namespaces: BTreeSet<String> = profiles
            .iter()
            .filter_map(|p| p.metadata.namespace.clone())
            .chain(routes.iter().filter_map(|r| r.metadata.namespace.clone()))
            .collect();
        for ns in namespaces {
            let in_ns = |m: &Option<String>| m.as_deref() == Some(ns.as_str());
            let p: Vec<_> = profiles
                .iter()
                .filter(|o| in_ns(&o.metadata.namespace))
                .cloned()
                .collect();
            let r: Vec<_> = routes
                .iter()
                .filter(|o| in_ns(&o.metadata.namespace))
                .cloned()
                .collect();
            let all: Vec<_> = secrets
                .iter()
                .filter(|o| in_ns(&o.metadata.namespace))
                .cloned()
                .collect();
            let wanted = referenced_secrets(&p, &r);
            let only: Vec<_> = all
                .iter()
                .filter(|s| wanted.contains(s.metadata.name.as_deref().unwrap_or_default()))
                .cloned()
                .collect();
            let inputs = |secrets| Inputs {
                namespace: &ns,
                profiles: &p,
                routes: &r,
                secrets,
                org_allowance: None,
                trusted_proxies: &[],
                limits_store_configured: false,
                workload_labels: None,
            };
            let with_all = compile(&inputs(&all));
            let with_referenced = compile(&inputs(&only));
            assert_eq!(with_all.loaded, with_referenced.loaded, "namespace {ns}");
            assert_eq!(with_all.routes, with_referenced.routes, "namespace {ns}");
            assert_eq!(with_all.profiles, with_referenced.profiles, "namespace {ns}");
        }
    }

    #[test]
    fn issued_certificates_are_referenced_by_their_conventional_names() {
        let route: ApiRoute = serde_yaml::from_str(
            "apiVersion: portcullis.dev/v1alpha1\nkind: ApiRoute\nmetadata: {name: r, namespace: ns}\n\
             spec:\n  workloadSelector: {}\n  tls: {issue: true}\n  backend:\n    origin:\n      url: https://o\n\
             \x20     tls: {mode: Mutual, clientCertificate: {issue: true}, caSecretRef: {name: ca}}\n\
             \x20     auth: {basic: {secretRef: {name: user}}}\n",
        )
        .unwrap();
        let names = referenced_secrets([], [&route]);
        let expected = ["ca", "r-portcullis-client", "r-portcullis-tls", "user"];
        assert_eq!(names.iter().map(String::as_str).collect::<Vec<_>>(), expected);
    }
}
