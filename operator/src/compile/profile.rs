//! Compiling one SecurityProfile.

use std::collections::BTreeMap;
use std::net::IpAddr;

use portcullis_api as api;
use portcullis_config as cfg;

use super::login;
use super::secrets::{self, Outbound, SecretIndex, Sender};
use super::{Problem, reason};

/// A valid profile: its configuration and its secrets.
#[derive(Clone, Debug)]
pub(crate) struct CompiledProfile {
    pub profile: cfg::Profile,
    pub secrets: cfg::ProfileSecrets,
}

/// Compiles profile `name` of the namespace of `secrets`; `limits_store`: whether the sidecars
/// count in a shared limits store (quotas need one).
pub(crate) fn compile(
    name: &str,
    spec: &api::SecurityProfileSpec,
    secrets: &SecretIndex<'_>,
    limits_store: bool,
) -> Result<CompiledProfile, Problem> {
    let api::SecurityProfileSpec {
        profile_type,
        basic,
        api_key,
        oauth2,
        http_signature,
        oauth1,
        client_certificate,
        trusted_ip_ranges,
        rate_limit,
        audit,
    } = spec;

    check_blocks(spec)?;
    // Before the Secrets: the problem admission refuses is the one the status reports.
    check_rate_limit(secrets.namespace(), name, rate_limit.as_ref(), limits_store)?;
    let mut out = cfg::ProfileSecrets::default();
    let auth = match profile_type {
        api::ProfileType::Anonymous => cfg::ProfileAuth::Anonymous,
        api::ProfileType::Basic => {
            let basic = basic.as_ref().expect("checked by check_blocks");
            let data = secrets.get(
                "spec.basic.secretRef.name",
                &basic.secret_ref.name,
                Some(secrets::BASIC_AUTH),
            )?;
            let username = data.required("username")?.expose().to_owned();
            if username.contains(':') {
                return Err(Problem::new(
                    reason::INVALID_SECRET,
                    "spec.basic.secretRef.name",
                    format!(
                        "Secret {:?}: a Basic username cannot contain ':'",
                        basic.secret_ref.name
                    ),
                ));
            }
            out.basic = Some(cfg::UserPassword {
                username,
                password: data.required("password")?,
            });
            cfg::ProfileAuth::Basic
        }
        api::ProfileType::ApiKey => {
            let key = api_key.as_ref().expect("checked by check_blocks");
            let data = secrets.get("spec.apiKey.secretRef.name", &key.secret_ref.name, None)?;
            out.api_keys = data.all()?;
            cfg::ProfileAuth::ApiKey {
                key_param: key.key_param.clone(),
                key_header: key.key_header.clone(),
                signature: key.signature.as_ref().map(|s| cfg::ApiKeySignature {
                    param: s.param.clone(),
                    algorithm: hash(s.algorithm),
                    clock_skew_seconds: s.clock_skew_seconds,
                }),
            }
        }
        api::ProfileType::OAuth2 => {
            let o = oauth2.as_ref().expect("checked by check_blocks");
            let builtin = matches!(o.provider, api::OAuth2Provider::Builtin);
            if builtin {
                let b = o.builtin.as_ref().ok_or_else(|| {
                    Problem::new(
                        reason::INVALID_SPEC,
                        "spec.oauth2.builtin",
                        "is required when provider is Builtin",
                    )
                })?;
                let data = secrets.get(
                    "spec.oauth2.builtin.clientsSecretRef.name",
                    &b.clients_secret_ref.name,
                    None,
                )?;
                let clients = builtin_clients("spec.oauth2.builtin.clientsSecretRef.name", data.all()?, o.allow_http)?;
                out.oauth2_clients = clients.clients;
                out.oauth2_client_scopes = clients.scopes;
                match &b.delegation {
                    Some(d) => {
                        check_identity_url(
                            "spec.oauth2.builtin.delegation.consentUrl",
                            &d.consent_url,
                            o.allow_http,
                            "spec.oauth2.allowHttp",
                        )?;
                        if clients.redirect_uris.is_empty() {
                            return Err(Problem::new(
                                reason::INVALID_SECRET,
                                "spec.oauth2.builtin.clientsSecretRef.name",
                                "no client has redirect URIs (`<client id>.redirectUris`): delegation needs at least one",
                            ));
                        }
                        out.oauth2_redirect_uris = clients.redirect_uris;
                        let field = "spec.oauth2.builtin.delegation.ownerSecretRef.name";
                        let token = secrets.get(field, &d.owner_secret_ref.name, None)?.required("token")?;
                        if token.expose().len() < 16
                            || token.expose().chars().any(|c| c.is_whitespace() || c.is_control())
                        {
                            return Err(Problem::new(
                                reason::INVALID_SECRET,
                                field,
                                format!(
                                    "Secret {:?}: key \"token\" must be at least 16 characters, no spaces",
                                    d.owner_secret_ref.name
                                ),
                            ));
                        }
                        out.oauth2_owner_token = Some(token);
                    }
                    None if !clients.redirect_uris.is_empty() => {
                        return Err(Problem::new(
                            reason::INVALID_SPEC,
                            "spec.oauth2.builtin.delegation",
                            "the clients Secret lists redirect URIs: set delegation (consentUrl, ownerSecretRef) to serve the authorization-code grant",
                        ));
                    }
                    None => {}
                }
                out.oauth2_signing_keys = super::token_keys::compile(name, secrets)?;
            } else if o.jwks_uri.is_none() && o.introspection.is_none() && o.login.is_none() {
                return Err(Problem::new(
                    reason::INVALID_SPEC,
                    "spec.oauth2.jwksUri",
                    "jwksUri, introspection or login is required unless provider is Builtin",
                ));
            }
            let login = match &o.login {
                Some(l) => {
                    let (login, login_secrets) = login::compile(name, o, l, secrets)?;
                    out.login = Some(login_secrets);
                    Some(Box::new(login))
                }
                None => None,
            };
            if let Some(i) = &o.introspection {
                check_identity_url(
                    "spec.oauth2.introspection.url",
                    &i.url,
                    o.allow_http,
                    "spec.oauth2.allowHttp",
                )?;
                // Sent to the introspection endpoint the profile's author chose: the Secret
                // must allow it, like a route's origin credentials.
                let data = secrets.get_outbound(
                    "spec.oauth2.introspection.clientSecretRef.name",
                    &i.client_secret_ref.name,
                    None,
                    Outbound {
                        sender: Sender::Profile(name),
                        urls: &[("spec.oauth2.introspection.url", i.url.as_str())],
                        unverified_origin: false,
                    },
                )?;
                out.introspection_client = Some(cfg::ClientCredentials {
                    client_id: data.required("clientId")?.expose().to_owned(),
                    client_secret: data.required("clientSecret")?,
                });
            }
            if let Some(uri) = &o.jwks_uri {
                check_identity_url("spec.oauth2.jwksUri", uri, o.allow_http, "spec.oauth2.allowHttp")?;
            }
            cfg::ProfileAuth::OAuth2 {
                provider: format!("{:?}", o.provider),
                // With sign-in, bearer tokens are held to the provider's issuer too.
                issuer: login.as_ref().map(|l| l.issuer.clone()).or_else(|| o.issuer.clone()),
                jwks_uri: o.jwks_uri.clone(),
                introspection_url: o.introspection.as_ref().map(|i| i.url.clone()),
                audiences: o.audiences.clone(),
                required_scopes: o.required_scopes.clone(),
                builtin_token_ttl_seconds: o.builtin.as_ref().filter(|_| builtin).map(|b| b.token_ttl_seconds),
                builtin_delegation: o
                    .builtin
                    .as_ref()
                    .filter(|_| builtin)
                    .and_then(|b| b.delegation.as_ref())
                    .map(|d| cfg::Delegation {
                        consent_url: d.consent_url.clone(),
                        refresh_token_ttl_seconds: d.refresh_token_ttl_seconds,
                        max_grant_seconds: d.max_grant_seconds,
                    }),
                login,
            }
        }
        api::ProfileType::HttpSignature => {
            let h = http_signature.as_ref().expect("checked by check_blocks");
            let data = secrets.get("spec.httpSignature.secretRef.name", &h.secret_ref.name, None)?;
            out.signature_keys = data.all()?;
            if h.max_age_seconds == 0 {
                return Err(Problem::new(
                    reason::INVALID_SPEC,
                    "spec.httpSignature.maxAgeSeconds",
                    "must be at least 1",
                ));
            }
            cfg::ProfileAuth::HttpSignature {
                standard: standard(h.standard),
                algorithms: h.algorithms.iter().map(|a| algorithm(*a)).collect(),
                required_components: h.required_components.clone(),
                max_age_seconds: h.max_age_seconds,
                on_store_unavailable: match h.on_store_unavailable.unwrap_or_default() {
                    api::ReplayStoreFallback::Deny => cfg::ReplayFallback::Deny,
                    api::ReplayStoreFallback::Local => cfg::ReplayFallback::Local,
                },
            }
        }
        api::ProfileType::OAuth1 => {
            let o = oauth1.as_ref().expect("checked by check_blocks");
            let field = "spec.oauth1.consumersSecretRef.name";
            out.oauth1_consumers = secrets.get(field, &o.consumers_secret_ref.name, None)?.all()?;
            oauth1_consumers(field, &o.consumers_secret_ref.name, &out.oauth1_consumers)?;
            if let Some(tokens) = &o.tokens_secret_ref {
                let field = "spec.oauth1.tokensSecretRef.name";
                let data = secrets.get(field, &tokens.name, None)?.all()?;
                out.oauth1_tokens = oauth1_tokens(field, &tokens.name, data, &out.oauth1_consumers)?;
            } else if o.require_token {
                return Err(Problem::new(
                    reason::INVALID_SPEC,
                    "spec.oauth1.tokensSecretRef",
                    "is required when requireToken is true",
                ));
            }
            cfg::ProfileAuth::OAuth1 {
                signature_methods: o.signature_methods.iter().map(|m| oauth1_method(*m)).collect(),
                timestamp_window_seconds: o.timestamp_window_seconds,
                require_token: o.require_token,
                on_store_unavailable: match o.on_store_unavailable.unwrap_or_default() {
                    api::ReplayStoreFallback::Deny => cfg::ReplayFallback::Deny,
                    api::ReplayStoreFallback::Local => cfg::ReplayFallback::Local,
                },
            }
        }
        api::ProfileType::ClientCertificate => {
            let c = client_certificate.as_ref().expect("checked by check_blocks");
            let data = secrets.get("spec.clientCertificate.caSecretRef.name", &c.ca_secret_ref.name, None)?;
            out.client_ca_pem = Some(data.pem("ca.crt", "CERTIFICATE")?);
            cfg::ProfileAuth::ClientCertificate {
                allowed_subjects: c.allowed_subjects.clone(),
            }
        }
    };

    Ok(CompiledProfile {
        profile: cfg::Profile {
            name: name.to_owned(),
            auth,
            trusted_ip_ranges: ip_ranges(trusted_ip_ranges)?,
            rate_limit_per_minute: rate_limit.as_ref().and_then(|l| l.requests_per_minute),
            rate_limit_per: match rate_limit.as_ref().and_then(|l| l.per).unwrap_or_default() {
                api::LimitPer::Profile => cfg::LimitPer::Profile,
                api::LimitPer::Consumer => cfg::LimitPer::Consumer,
            },
            quota: rate_limit.as_ref().and_then(|l| l.quota.as_ref()).map(|q| cfg::Quota {
                requests: q.requests,
                period: match q.period {
                    api::QuotaPeriod::Hour => cfg::QuotaPeriod::Hour,
                    api::QuotaPeriod::Day => cfg::QuotaPeriod::Day,
                    api::QuotaPeriod::Month => cfg::QuotaPeriod::Month,
                },
            }),
            on_store_unavailable: match rate_limit.as_ref().and_then(|l| l.on_store_unavailable) {
                None | Some(api::StoreFallback::LocalShare) => cfg::StoreFallback::LocalShare,
                Some(api::StoreFallback::Allow) => cfg::StoreFallback::Allow,
                Some(api::StoreFallback::Deny) => cfg::StoreFallback::Deny,
            },
            // Counted by the plan, which sees the namespace's pods.
            replicas: None,
            identity_header: audit.as_ref().and_then(|a| a.identity_header.clone()),
        },
        secrets: out,
    })
}

/// The rules on `spec.rateLimit` of profile `namespace/name`, which its spec and the
/// operator's settings decide alone (`limits_store`: whether the sidecars count in a shared
/// limits store): checked by the compiler and at admission, with the same message.
pub(crate) fn check_rate_limit(
    namespace: &str,
    name: &str,
    rate_limit: Option<&api::RateLimit>,
    limits_store: bool,
) -> Result<(), Problem> {
    let Some(limit) = rate_limit else { return Ok(()) };
    if limit.requests_per_minute.is_none() && limit.quota.is_none() {
        return Err(Problem::new(
            reason::INVALID_SPEC,
            "spec.rateLimit",
            "sets neither requestsPerMinute nor quota: set one or both, or leave rateLimit out",
        ));
    }
    if limit.requests_per_minute == Some(0) {
        return Err(Problem::new(
            reason::INVALID_SPEC,
            "spec.rateLimit.requestsPerMinute",
            "must be at least 1",
        ));
    }
    if let Some(quota) = &limit.quota {
        if quota.requests == 0 {
            return Err(Problem::new(
                reason::INVALID_SPEC,
                "spec.rateLimit.quota.requests",
                "must be at least 1",
            ));
        }
        if !limits_store {
            return Err(Problem::new(
                reason::INVALID_SPEC,
                "spec.rateLimit.quota",
                format!(
                    "SecurityProfile {namespace}/{name} sets a quota, which only a shared limits store counts, and \
                     the operator has none configured: set the Helm value sidecar.limitsStore.url, or remove \
                     spec.rateLimit.quota"
                ),
            ));
        }
    }
    Ok(())
}

/// The block named by `type` must be set, and no other.
fn check_blocks(spec: &api::SecurityProfileSpec) -> Result<(), Problem> {
    let blocks = [
        ("basic", api::ProfileType::Basic, spec.basic.is_some()),
        ("apiKey", api::ProfileType::ApiKey, spec.api_key.is_some()),
        ("oauth2", api::ProfileType::OAuth2, spec.oauth2.is_some()),
        (
            "httpSignature",
            api::ProfileType::HttpSignature,
            spec.http_signature.is_some(),
        ),
        ("oauth1", api::ProfileType::OAuth1, spec.oauth1.is_some()),
        (
            "clientCertificate",
            api::ProfileType::ClientCertificate,
            spec.client_certificate.is_some(),
        ),
    ];
    for (field, ty, present) in blocks {
        if ty == spec.profile_type && !present {
            return Err(Problem::new(
                reason::INVALID_SPEC,
                format!("spec.{field}"),
                format!("is required when type is {ty}"),
            ));
        }
        if ty != spec.profile_type && present {
            return Err(Problem::new(
                reason::INVALID_SPEC,
                format!("spec.{field}"),
                format!("must not be set when type is {}", spec.profile_type),
            ));
        }
    }
    Ok(())
}

/// The token credentials of an OAuth1 profile: each entry of Secret `name` (at `field`) is
/// `<consumerKey>:<tokenSecret>`, for one of `consumers`. Messages name the token and the
/// consumer, never a secret.
fn oauth1_tokens(
    field: &str,
    name: &str,
    data: BTreeMap<String, cfg::Sensitive>,
    consumers: &BTreeMap<String, cfg::Sensitive>,
) -> Result<BTreeMap<String, cfg::OAuth1Token>, Problem> {
    let bad = |detail: String| Problem::new(reason::INVALID_SECRET, field, format!("Secret {name:?}: {detail}"));
    data.into_iter()
        .map(|(token, value)| {
            let Some((consumer, secret)) = value.expose().split_once(':') else {
                return Err(bad(format!(
                    "the value of {token:?} must be <consumerKey>:<tokenSecret>"
                )));
            };
            // The consumer is not echoed: a value written the wrong way round would show the
            // token secret.
            if !consumers.contains_key(consumer) {
                return Err(bad(format!(
                    "token {token:?} names a consumer that is not in spec.oauth1.consumersSecretRef (the value \
                     must be <consumerKey>:<tokenSecret>)"
                )));
            }
            if secret.is_empty() {
                return Err(bad(format!("token {token:?} has an empty token secret")));
            }
            let entry = cfg::OAuth1Token {
                consumer_key: consumer.to_owned(),
                secret: cfg::Sensitive::new(secret),
            };
            Ok((token, entry))
        })
        .collect()
}

/// Each consumer of an OAuth1 profile (Secret `name` at `field`) must hold a consumer secret
/// or an RSA public key of 2048 bits or more, as the sidecar will read it: one bad consumer
/// would otherwise make the sidecar refuse the whole configuration. Messages name the
/// consumer, never its value.
fn oauth1_consumers(field: &str, name: &str, consumers: &BTreeMap<String, cfg::Sensitive>) -> Result<(), Problem> {
    for (consumer, value) in consumers {
        let text = value.expose();
        let why = if text.trim().is_empty() {
            Some("an empty consumer secret".to_owned())
        } else if text.trim_start().starts_with("-----BEGIN") {
            match portcullis_signatures::Key::from_pem(text.trim()) {
                Ok(k) if k.kind() == portcullis_signatures::KeyKind::Rsa => None,
                Ok(_) => Some("a PEM key that is not an RSA key (RSA-SHA1 needs one)".to_owned()),
                Err(e) => Some(format!("a PEM key that cannot be used: {e}")),
            }
        } else {
            None
        };
        if let Some(why) = why {
            return Err(Problem::new(
                reason::INVALID_SECRET,
                field,
                format!("Secret {name:?}: consumer {consumer:?} has {why}"),
            ));
        }
    }
    Ok(())
}

/// The signature method a CRD one names.
fn oauth1_method(m: api::OAuth1SignatureMethod) -> cfg::OAuth1Method {
    match m {
        api::OAuth1SignatureMethod::HmacSha1 => cfg::OAuth1Method::HmacSha1,
        api::OAuth1SignatureMethod::HmacSha256 => cfg::OAuth1Method::HmacSha256,
        api::OAuth1SignatureMethod::RsaSha1 => cfg::OAuth1Method::RsaSha1,
        api::OAuth1SignatureMethod::Plaintext => cfg::OAuth1Method::Plaintext,
    }
}

/// Parses, normalizes (CIDR to from/to), sorts and merges the trusted ranges.
fn ip_ranges(ranges: &[api::IpRange]) -> Result<Vec<cfg::IpRange>, Problem> {
    let mut out = Vec::with_capacity(ranges.len());
    for (i, r) in ranges.iter().enumerate() {
        let field = |f: &str| format!("spec.trustedIpRanges[{i}].{f}");
        let bad = |f: &str, detail: String| Err(Problem::new(reason::INVALID_IP_RANGE, field(f), detail));
        match (&r.cidr, &r.from, &r.to) {
            (Some(cidr), None, None) => {
                let net: ipnet::IpNet = match cidr.trim().parse() {
                    Ok(net) => net,
                    Err(_) => return bad("cidr", format!("{cidr:?} is not a CIDR block (like 10.0.0.0/8)")),
                };
                out.push(cfg::IpRange {
                    from: net.network(),
                    to: net.broadcast(),
                });
            }
            (None, Some(from), Some(to)) => {
                let Ok(from_ip) = from.trim().parse::<IpAddr>() else {
                    return bad("from", format!("{from:?} is not an IP address"));
                };
                let Ok(to_ip) = to.trim().parse::<IpAddr>() else {
                    return bad("to", format!("{to:?} is not an IP address"));
                };
                if from_ip.is_ipv4() != to_ip.is_ipv4() {
                    return bad("to", format!("{to} is not of the same address family as {from}"));
                }
                if from_ip > to_ip {
                    return bad("from", format!("{from} is greater than to ({to})"));
                }
                out.push(cfg::IpRange {
                    from: from_ip,
                    to: to_ip,
                });
            }
            (None, None, None) => return bad("cidr", "a range needs cidr, or from and to".into()),
            (Some(_), _, _) => return bad("cidr", "set either cidr or from/to, not both".into()),
            (None, Some(_), None) => return bad("to", "is required with from".into()),
            (None, None, Some(_)) => return bad("from", "is required with to".into()),
        }
    }
    Ok(merge(out))
}

/// Sorts ranges and merges overlapping or adjacent ones of the same family.
fn merge(mut ranges: Vec<cfg::IpRange>) -> Vec<cfg::IpRange> {
    fn key(ip: IpAddr) -> (u8, u128) {
        match ip {
            IpAddr::V4(v4) => (4, u32::from(v4) as u128),
            IpAddr::V6(v6) => (6, u128::from(v6)),
        }
    }
    ranges.sort_by_key(|r| (key(r.from), key(r.to)));
    let mut merged: Vec<cfg::IpRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        if let Some(last) = merged.last_mut() {
            let (lf, lt) = key(last.to);
            let (rf, rs) = key(r.from);
            if lf == rf && rs <= lt.saturating_add(1) {
                if key(r.to) > key(last.to) {
                    last.to = r.to;
                }
                continue;
            }
        }
        merged.push(r);
    }
    merged
}

pub(crate) fn check_url(field: &str, url: &str) -> Result<(), Problem> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| {
            Problem::new(
                reason::INVALID_SPEC,
                field,
                format!("{url:?} must start with http:// or https://"),
            )
        })?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || rest.contains(char::is_whitespace) || rest.contains('\\') {
        return Err(Problem::new(
            reason::INVALID_SPEC,
            field,
            format!("{url:?} is not a valid URL"),
        ));
    }
    // Credentials come from Secrets, never from the URL; and `user@host` is a host an allow
    // list could misread.
    if authority.contains('@') {
        return Err(Problem::new(
            reason::INVALID_SPEC,
            field,
            format!("{url:?} carries userinfo (`user@`): put credentials in a Secret"),
        ));
    }
    // The host the sidecar will accept (a DNS name, an IPv4 or a bracketed IPv6 address):
    // anything else (`%7a.example`, full-width letters) would be refused by every sidecar
    // that loads it, freezing their configuration.
    if !cfg::valid_authority(authority) {
        return Err(Problem::new(
            reason::INVALID_SPEC,
            field,
            format!("{url:?}: the host is not a DNS name (letters, digits, '-', '_', dots) or an IP address"),
        ));
    }
    // A port, when given, is 1 to 65535: an empty or out-of-range one would be read as the
    // scheme's default by one parser and refused or wrapped by another.
    let port = match authority.rsplit_once(':') {
        Some((_, p)) if !p.contains(']') => Some(p),
        _ => None,
    };
    if let Some(p) = port
        && !(p.len() <= 5
            && !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_digit())
            && (1..=65535).contains(&p.parse::<u32>().unwrap_or(0)))
    {
        return Err(Problem::new(
            reason::INVALID_SPEC,
            field,
            format!("{url:?} has port {p:?}, not a number from 1 to 65535"),
        ));
    }
    Ok(())
}

/// Whether the host of `url` (checked by [`check_url`]) is this pod itself: `localhost` (and
/// `*.localhost`), a loopback or an unspecified address. An origin there would be the pod's
/// own app (or the sidecar) reached around the route that guards it.
pub(crate) fn is_own_pod(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(ip) => {
            let ip = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                v4 => v4,
            };
            ip.is_loopback() || ip.is_unspecified()
        }
        Err(_) => false,
    }
}

/// Suffix of the Secret keys that list a Builtin client's scopes: `<client id>.scopes`.
const SCOPES_SUFFIX: &str = ".scopes";
/// Suffix of the Secret keys that list a Builtin client's redirect URIs:
/// `<client id>.redirectUris`.
const REDIRECT_URIS_SUFFIX: &str = ".redirectUris";
/// Most redirect URIs of one client.
const MAX_REDIRECT_URIS: usize = 16;

/// A Builtin provider's clients (id to secret), the scopes each may be granted and the
/// redirect URIs registered for each.
#[derive(Debug, Default)]
struct BuiltinClients {
    clients: BTreeMap<String, cfg::Sensitive>,
    scopes: BTreeMap<String, Vec<String>>,
    redirect_uris: BTreeMap<String, Vec<String>>,
}

/// Splits a Builtin provider's Secret into its clients (`<client id>: <secret>`), the scopes
/// each may be granted (`<client id>.scopes: "read write"`; none when absent) and its
/// redirect URIs (`<client id>.redirectUris: "https://app.example/cb ..."`, checked by
/// [`check_redirect_uri`]; `allow_http`: `http://` to any host, not only loopback).
fn builtin_clients(
    field: &str,
    mut entries: BTreeMap<String, cfg::Sensitive>,
    allow_http: bool,
) -> Result<BuiltinClients, Problem> {
    let mut out = BuiltinClients::default();
    let extras: Vec<String> = entries
        .keys()
        .filter(|k| k.ends_with(SCOPES_SUFFIX) || k.ends_with(REDIRECT_URIS_SUFFIX))
        .cloned()
        .collect();
    for key in extras {
        let value = entries.remove(&key).expect("listed above");
        let (client, scopes) = match key.strip_suffix(SCOPES_SUFFIX) {
            Some(client) => (client, true),
            None => (&key[..key.len() - REDIRECT_URIS_SUFFIX.len()], false),
        };
        if !entries.contains_key(client) {
            return Err(Problem::new(
                reason::INVALID_SECRET,
                field,
                format!("key {key:?} is for client {client:?}, which the Secret does not hold"),
            ));
        }
        let list: Vec<String> = value.expose().split_ascii_whitespace().map(str::to_owned).collect();
        if scopes {
            if let Some(bad) = list.iter().find(|s| !cfg::is_scope_token(s)) {
                return Err(Problem::new(
                    reason::INVALID_SECRET,
                    field,
                    format!("key {key:?}: {bad:?} is not a valid OAuth 2.0 scope"),
                ));
            }
            out.scopes.insert(client.to_owned(), list);
        } else {
            if list.is_empty() || list.len() > MAX_REDIRECT_URIS {
                return Err(Problem::new(
                    reason::INVALID_SECRET,
                    field,
                    format!("key {key:?} must list 1 to {MAX_REDIRECT_URIS} redirect URIs"),
                ));
            }
            for uri in &list {
                check_redirect_uri(field, &key, uri, allow_http)?;
            }
            out.redirect_uris.insert(client.to_owned(), list);
        }
    }
    if entries.is_empty() {
        return Err(Problem::new(
            reason::SECRET_KEY_MISSING,
            field,
            "the Secret holds no client",
        ));
    }
    out.clients = entries;
    Ok(out)
}

/// A registered redirect URI: absolute, no fragment (RFC 6749 section 3.1.2), `https://`, or
/// `http://` to a loopback address (native apps, RFC 8252 section 7.3) unless `allow_http`.
fn check_redirect_uri(field: &str, key: &str, uri: &str, allow_http: bool) -> Result<(), Problem> {
    let bad = |why: &str| {
        Problem::new(
            reason::INVALID_SECRET,
            field,
            format!("key {key:?}: redirect URI {uri:?} {why}"),
        )
    };
    if uri.len() > 2048 {
        return Err(bad("is longer than 2048 characters"));
    }
    check_url(field, uri).map_err(|_| bad("is not an absolute http(s) URL"))?;
    if uri.contains('#') {
        return Err(bad("has a fragment"));
    }
    if uri.starts_with("http://") && !allow_http && !is_own_pod(uri) {
        return Err(bad(
            "is plain http:// to a host other than loopback (set spec.oauth2.allowHttp: true to allow it)",
        ));
    }
    Ok(())
}

/// [`check_url`] for a URL the sidecar fetches keys, tokens or token answers from, or sends a
/// client secret to: `https://` unless the object opts in at `allow_field`.
pub(crate) fn check_identity_url(field: &str, url: &str, allow_http: bool, allow_field: &str) -> Result<(), Problem> {
    check_url(field, url)?;
    if !allow_http && !url.starts_with("https://") {
        return Err(Problem::new(
            reason::INVALID_SPEC,
            field,
            format!("{url:?} is not https:// (set {allow_field}: true to allow plain HTTP)"),
        ));
    }
    Ok(())
}

pub(crate) fn hash(h: api::SignatureHash) -> cfg::SignatureHash {
    match h {
        api::SignatureHash::MD5 => cfg::SignatureHash::MD5,
        api::SignatureHash::SHA256 => cfg::SignatureHash::SHA256,
    }
}

pub(crate) fn standard(s: api::SignatureStandard) -> cfg::SignatureStandard {
    match s {
        api::SignatureStandard::RFC9421 => cfg::SignatureStandard::RFC9421,
        api::SignatureStandard::Cavage => cfg::SignatureStandard::Cavage,
    }
}

pub(crate) fn algorithm(a: api::SignatureAlgorithm) -> cfg::SignatureAlgorithm {
    match a {
        api::SignatureAlgorithm::HmacSha256 => cfg::SignatureAlgorithm::HmacSha256,
        api::SignatureAlgorithm::RsaV15Sha256 => cfg::SignatureAlgorithm::RsaV15Sha256,
        api::SignatureAlgorithm::RsaPssSha512 => cfg::SignatureAlgorithm::RsaPssSha512,
        api::SignatureAlgorithm::EcdsaP256Sha256 => cfg::SignatureAlgorithm::EcdsaP256Sha256,
        api::SignatureAlgorithm::Ed25519 => cfg::SignatureAlgorithm::Ed25519,
    }
}
