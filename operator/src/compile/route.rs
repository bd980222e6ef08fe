//! Compiling one ApiRoute, including the rules on its profiles.

use std::collections::{BTreeMap, BTreeSet};

use portcullis_api as api;
use portcullis_config as cfg;

use super::profile::{CompiledProfile, algorithm, check_identity_url, check_url, hash, is_own_pod, standard};
use super::secrets::{self, Outbound, SecretIndex, Sender};
use super::{Problem, Verdict, check_selector, reason};

/// Name of the Secret the operator's CA writes for a route's serving certificate
/// (`tls.issue: true`).
pub fn issued_serving_secret(route: &str) -> String {
    format!("{route}-portcullis-tls")
}

/// Name of the Secret the operator's CA writes for a route's origin client certificate
/// (`backend.origin.tls.clientCertificate.issue: true`).
pub fn issued_client_secret(route: &str) -> String {
    format!("{route}-portcullis-client")
}

pub(crate) fn compile(
    name: &str,
    spec: &api::ApiRouteSpec,
    profiles: &BTreeMap<String, CompiledProfile>,
    verdicts: &BTreeMap<String, Verdict>,
    secrets: &SecretIndex<'_>,
) -> Result<(cfg::Route, cfg::RouteSecrets), Problem> {
    let api::ApiRouteSpec {
        workload_selector,
        hosts,
        path_prefix,
        case_insensitive,
        methods,
        profiles: refs,
        ssl_only,
        tls,
        backend,
        egress,
    } = spec;

    check_selector(workload_selector).map_err(|e| Problem::new(reason::INVALID_SPEC, "spec.workloadSelector", e))?;
    let hosts = self::hosts(hosts)?;
    if !path_prefix.starts_with('/') || path_prefix.contains(['?', '#']) || path_prefix.contains(char::is_whitespace) {
        return Err(Problem::new(
            reason::INVALID_SPEC,
            "spec.pathPrefix",
            format!("{path_prefix:?} must start with / and hold no query, fragment or space"),
        ));
    }
    if let Some(problem) = path_prefix_problem(path_prefix) {
        return Err(Problem::new(
            reason::INVALID_SPEC,
            "spec.pathPrefix",
            format!("{path_prefix:?} {problem}: the sidecar refuses such paths, so the route would match none"),
        ));
    }
    let methods = self::methods(methods)?;
    let profile_names = check_profiles(refs, profiles, verdicts, secrets)?;

    let mut out = cfg::RouteSecrets::default();
    if let Some(t) = tls {
        // Served to clients, never sent out: no opt-in needed (docs/api.md, "Security model").
        out.tls = Some(certificate(
            name,
            "spec.tls",
            t,
            &issued_serving_secret(name),
            secrets,
            None,
        )?);
    }
    if *ssl_only && tls.is_none() {
        return Err(Problem::new(
            reason::INVALID_SPEC,
            "spec.sslOnly",
            "needs spec.tls (a certificate for the hosts)",
        ));
    }
    let backend = self::backend(name, backend, &mut out, secrets)?;
    if *egress && !matches!(backend, cfg::Backend::Origin { .. }) {
        return Err(Problem::new(
            reason::INVALID_SPEC,
            "spec.egress",
            "egress routes need backend.origin",
        ));
    }

    Ok((
        cfg::Route {
            name: name.to_owned(),
            hosts,
            path_prefix: path_prefix.clone(),
            case_insensitive: *case_insensitive,
            methods,
            profiles: profile_names,
            ssl_only: *ssl_only,
            tls: tls.is_some(),
            backend,
            egress: *egress,
        },
        out,
    ))
}

/// Why no request could match `prefix`: the sidecar matches paths in their normal form and
/// refuses (400) paths holding these (docs/api.md, "Path normal form"; the sidecar's
/// `portcullis_policy::path`). Escapes of unreserved characters, `//` and lower-case hex are
/// fine: the sidecar normalizes prefixes as it does paths.
fn path_prefix_problem(prefix: &str) -> Option<&'static str> {
    let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
    for segment in prefix.split('/') {
        let bytes = segment.as_bytes();
        // The segment's characters once unreserved escapes are decoded: only `.`s so far?
        let (mut dots, mut other) = (0, false);
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            let c = if b == b'%' {
                let (Some(hi), Some(lo)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) else {
                    return Some("holds a malformed percent-escape");
                };
                i += 3;
                (hi * 16 + lo) as u8
            } else {
                i += 1;
                if !(b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@\\".contains(&b)) {
                    return Some("holds a character not allowed in a URL path");
                }
                b
            };
            match c {
                b'/' => return Some("holds an encoded slash (%2F)"),
                b'\\' => return Some("holds a backslash"),
                b';' => return Some("holds a path parameter (;)"),
                0 => return Some("holds %00"),
                b'.' => dots += 1,
                _ => other = true,
            }
        }
        if !other && (dots == 1 || dots == 2) {
            return Some("holds a dot segment (. or ..)");
        }
    }
    None
}

fn hosts(hosts: &[String]) -> Result<Vec<String>, Problem> {
    hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let lower = h.to_ascii_lowercase();
            let bare = lower.strip_prefix("*.").unwrap_or(&lower);
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            };
            if lower.len() > 253 || !bare.split('.').all(label_ok) {
                return Err(Problem::new(
                    reason::INVALID_SPEC,
                    format!("spec.hosts[{i}]"),
                    format!("{h:?} is not a host name (or *.domain wildcard)"),
                ));
            }
            Ok(lower)
        })
        .collect()
}

fn methods(methods: &[String]) -> Result<Vec<String>, Problem> {
    let mut out = Vec::with_capacity(methods.len());
    for (i, m) in methods.iter().enumerate() {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(Problem::new(
                reason::INVALID_SPEC,
                format!("spec.methods[{i}]"),
                format!("{m:?} is not an HTTP method in upper case (GET, POST, ...)"),
            ));
        }
        if !out.contains(m) {
            out.push(m.clone());
        }
    }
    Ok(out)
}

/// The rules on a route's profiles: no duplicates, every profile exists and is valid, types
/// never mixed, at most one OAuth2 and one Anonymous.
fn check_profiles(
    refs: &[api::ProfileRef],
    profiles: &BTreeMap<String, CompiledProfile>,
    verdicts: &BTreeMap<String, Verdict>,
    secrets: &SecretIndex<'_>,
) -> Result<Vec<String>, Problem> {
    let field = |i: usize| format!("spec.profiles[{i}].name");
    let mut seen = BTreeSet::new();
    for (i, r) in refs.iter().enumerate() {
        if !seen.insert(r.name.as_str()) {
            return Err(Problem::new(
                reason::DUPLICATE_PROFILE,
                field(i),
                format!("profile {:?} is listed more than once", r.name),
            ));
        }
    }
    let mut typed: Vec<(usize, &str, &'static str)> = Vec::with_capacity(refs.len());
    for (i, r) in refs.iter().enumerate() {
        match (verdicts.get(&r.name), profiles.get(&r.name)) {
            (None, _) => {
                return Err(Problem::new(
                    reason::PROFILE_NOT_FOUND,
                    field(i),
                    format!(
                        "SecurityProfile {:?} not found in namespace {}",
                        r.name,
                        secrets.namespace()
                    ),
                ));
            }
            (Some(Verdict::Rejected { message, .. }), _) => {
                return Err(Problem::new(
                    reason::PROFILE_INVALID,
                    field(i),
                    format!("SecurityProfile {:?} is invalid ({message})", r.name),
                ));
            }
            (Some(Verdict::Accepted), Some(p)) => typed.push((i, r.name.as_str(), p.profile.auth.type_name())),
            (Some(Verdict::Accepted), None) => unreachable!("accepted profiles are compiled"),
        }
    }
    if let Some(&(_, _, first)) = typed.first()
        && let Some(&(i, other_name, other)) = typed.iter().find(|(_, _, t)| *t != first)
    {
        return Err(Problem::new(
            reason::PROFILE_MIX,
            field(i),
            format!("cannot mix {first} and {other} profiles on one route (profile {other_name:?} is {other})"),
        ));
    }
    for (ty, why) in [
        ("OAuth2", reason::TOO_MANY_OAUTH2),
        ("Anonymous", reason::TOO_MANY_ANONYMOUS),
    ] {
        let of_type: Vec<_> = typed.iter().filter(|(_, _, t)| *t == ty).collect();
        if let [_, (i, _, _), ..] = of_type.as_slice() {
            let names: Vec<&str> = of_type.iter().map(|(_, n, _)| *n).collect();
            return Err(Problem::new(
                why,
                field(*i),
                format!("at most one {ty} profile per route, found {}", names.join(", ")),
            ));
        }
    }
    Ok(refs.iter().map(|r| r.name.clone()).collect())
}

/// A certificate and key: from the named Secret, or the one the operator's CA issued. With
/// `outbound` (an origin client certificate), a named Secret must allow the route to present
/// it there ([`SecretIndex::get_outbound`]); the one the CA issued for the route needs not.
fn certificate(
    route: &str,
    field: &'static str,
    tls: &api::RouteTls,
    issued_name: &str,
    secrets: &SecretIndex<'_>,
    outbound: Option<Outbound<'_>>,
) -> Result<cfg::TlsMaterial, Problem> {
    let issue = tls.issue.unwrap_or(false);
    let (secret_field, secret_name): (String, &str) = match (&tls.secret_name, issue) {
        (Some(name), false) => (format!("{field}.secretName"), name),
        (None, true) => (format!("{field}.issue"), issued_name),
        _ => {
            return Err(Problem::new(
                reason::INVALID_SPEC,
                field,
                "needs exactly one of secretName or issue: true",
            ));
        }
    };
    let read = match outbound {
        Some(outbound) if !issue => secrets.get_outbound(&secret_field, secret_name, Some(secrets::TLS), outbound),
        _ => secrets.get(&secret_field, secret_name, Some(secrets::TLS)),
    };
    let data = match read {
        Err(p) if issue && p.reason == reason::SECRET_NOT_FOUND => {
            return Err(Problem::new(
                reason::CERTIFICATE_PENDING,
                secret_field,
                format!("the operator's CA has not issued Secret {secret_name:?} for route {route} yet"),
            ));
        }
        other => other?,
    };
    Ok(cfg::TlsMaterial {
        cert_chain_pem: data.pem("tls.crt", "CERTIFICATE")?,
        key_pem: data.private_key("tls.key")?,
    })
}

fn backend(
    route: &str,
    backend: &api::Backend,
    out: &mut cfg::RouteSecrets,
    secrets: &SecretIndex<'_>,
) -> Result<cfg::Backend, Problem> {
    let origin = match (backend.port, &backend.origin) {
        (Some(0), None) => {
            return Err(Problem::new(
                reason::INVALID_BACKEND,
                "spec.backend.port",
                "must be 1-65535",
            ));
        }
        (Some(port), None) => return Ok(cfg::Backend::Local { port }),
        (None, Some(origin)) => origin,
        _ => {
            return Err(Problem::new(
                reason::INVALID_BACKEND,
                "spec.backend",
                "needs exactly one of port or origin",
            ));
        }
    };
    check_url("spec.backend.origin.url", &origin.url)?;
    if is_own_pod(&origin.url) {
        return Err(Problem::new(
            reason::INVALID_SPEC,
            "spec.backend.origin.url",
            format!(
                "{:?} is this pod itself (localhost, a loopback or unspecified address): \
                 use backend.port for the pod's own app",
                origin.url
            ),
        ));
    }
    let origin_url = [("spec.backend.origin.url", origin.url.as_str())];
    let https = origin.url.starts_with("https://");
    let outbound = Outbound {
        sender: Sender::Route(route),
        urls: &origin_url,
        // TLS without verification protects nothing from whoever answers in the origin's
        // place: for the allow list it is plain HTTP.
        unverified_origin: https && origin.tls.as_ref().is_some_and(|t| t.mode == api::OriginTlsMode::None),
    };
    let tls_mode = match (&origin.tls, https) {
        (None, true) => cfg::OriginTlsMode::Verify,
        (None, false) => cfg::OriginTlsMode::None,
        (Some(t), _) => match t.mode {
            api::OriginTlsMode::None => cfg::OriginTlsMode::None,
            api::OriginTlsMode::Verify => cfg::OriginTlsMode::Verify,
            api::OriginTlsMode::Mutual => cfg::OriginTlsMode::Mutual,
        },
    };
    if !https && tls_mode != cfg::OriginTlsMode::None {
        return Err(Problem::new(
            reason::INVALID_BACKEND,
            "spec.backend.origin.tls.mode",
            format!("{tls_mode:?} needs an https:// origin url"),
        ));
    }
    let mut custom_ca = false;
    let mut client_certificate = false;
    if let Some(t) = &origin.tls {
        if let Some(ca) = &t.ca_secret_ref {
            let data = secrets.get("spec.backend.origin.tls.caSecretRef.name", &ca.name, None)?;
            out.origin_ca_pem = Some(data.pem("ca.crt", "CERTIFICATE")?);
            custom_ca = true;
        }
        match (&t.client_certificate, tls_mode) {
            (Some(c), cfg::OriginTlsMode::Mutual) => {
                out.origin_client = Some(certificate(
                    route,
                    "spec.backend.origin.tls.clientCertificate",
                    c,
                    &issued_client_secret(route),
                    secrets,
                    Some(outbound),
                )?);
                client_certificate = true;
            }
            (None, cfg::OriginTlsMode::Mutual) => {
                return Err(Problem::new(
                    reason::INVALID_BACKEND,
                    "spec.backend.origin.tls.clientCertificate",
                    "is required when mode is Mutual",
                ));
            }
            (Some(_), _) => {
                return Err(Problem::new(
                    reason::INVALID_BACKEND,
                    "spec.backend.origin.tls.clientCertificate",
                    "is only used when mode is Mutual",
                ));
            }
            (None, _) => {}
        }
    }
    let auth = match &origin.auth {
        None => None,
        Some(a) => Some(origin_auth(a, outbound, out, secrets)?),
    };
    Ok(cfg::Backend::Origin {
        url: origin.url.trim_end_matches('/').to_owned(),
        tls_mode,
        custom_ca,
        client_certificate,
        auth,
        pass_credentials: origin.pass_credentials,
    })
}

/// The credentials toward the origin. Their Secret must allow the route to send them to the
/// origin (and, for the client-credentials grant, to the token endpoint).
fn origin_auth(
    auth: &api::OriginAuth,
    outbound: Outbound<'_>,
    out: &mut cfg::RouteSecrets,
    secrets: &SecretIndex<'_>,
) -> Result<cfg::OriginAuth, Problem> {
    let api::OriginAuth {
        basic,
        shared_secret,
        http_signature,
        oauth2_client_credentials,
    } = auth;
    let count = [
        basic.is_some(),
        shared_secret.is_some(),
        http_signature.is_some(),
        oauth2_client_credentials.is_some(),
    ]
    .into_iter()
    .filter(|b| *b)
    .count();
    if count != 1 {
        return Err(Problem::new(
            reason::INVALID_BACKEND,
            "spec.backend.origin.auth",
            "needs exactly one of basic, sharedSecret, httpSignature, oauth2ClientCredentials",
        ));
    }
    let (config, secret) = if let Some(b) = basic {
        let data = secrets.get_outbound(
            "spec.backend.origin.auth.basic.secretRef.name",
            &b.secret_ref.name,
            Some(secrets::BASIC_AUTH),
            outbound,
        )?;
        (
            cfg::OriginAuth::Basic,
            cfg::OriginAuthSecrets::Basic {
                username: data.required("username")?.expose().to_owned(),
                password: data.required("password")?,
            },
        )
    } else if let Some(s) = shared_secret {
        let data = secrets.get_outbound(
            "spec.backend.origin.auth.sharedSecret.secretRef.name",
            &s.secret_ref.name,
            None,
            outbound,
        )?;
        (
            cfg::OriginAuth::SharedSecret {
                algorithm: hash(s.algorithm),
                key_param: s.key_param.clone(),
                sig_param: s.sig_param.clone(),
            },
            cfg::OriginAuthSecrets::SharedSecret {
                apikey: data.required("apikey")?.expose().to_owned(),
                secret: data.required("secret")?,
            },
        )
    } else if let Some(h) = http_signature {
        let data = secrets.get_outbound(
            "spec.backend.origin.auth.httpSignature.secretRef.name",
            &h.secret_ref.name,
            None,
            outbound,
        )?;
        let key = if h.algorithm == api::SignatureAlgorithm::HmacSha256 {
            data.required("key")?
        } else {
            data.private_key("key")?
        };
        (
            cfg::OriginAuth::HttpSignature {
                key_id: h.key_id.clone(),
                algorithm: algorithm(h.algorithm),
                standard: standard(h.standard),
                components: h.components.clone(),
            },
            cfg::OriginAuthSecrets::HttpSignature { key },
        )
    } else if let Some(o) = oauth2_client_credentials {
        check_identity_url(
            "spec.backend.origin.auth.oauth2ClientCredentials.tokenUrl",
            &o.token_url,
            o.allow_http,
            "spec.backend.origin.auth.oauth2ClientCredentials.allowHttp",
        )?;
        // The client secret goes to the token endpoint, the token it buys to the origin.
        let urls = [
            outbound.urls[0],
            (
                "spec.backend.origin.auth.oauth2ClientCredentials.tokenUrl",
                o.token_url.as_str(),
            ),
        ];
        let data = secrets.get_outbound(
            "spec.backend.origin.auth.oauth2ClientCredentials.clientSecretRef.name",
            &o.client_secret_ref.name,
            None,
            Outbound {
                urls: &urls,
                ..outbound
            },
        )?;
        (
            cfg::OriginAuth::OAuth2ClientCredentials {
                token_url: o.token_url.clone(),
                scopes: o.scopes.clone(),
                audience: o.audience.clone(),
            },
            cfg::OriginAuthSecrets::OAuth2ClientCredentials {
                client_id: data.required("clientId")?.expose().to_owned(),
                client_secret: data.required("clientSecret")?,
            },
        )
    } else {
        unreachable!("exactly one is set")
    };
    out.origin_auth = Some(secret);
    Ok(config)
}
