//! What the fuzz targets share: a request read from fuzzer bytes, and an engine whose
//! configuration has every profile type, so one input reaches every parser a client does.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};

use http::{HeaderMap, HeaderName, HeaderValue};
use portcullis_config::{Loaded, SecretMaterial, SidecarConfig};
use portcullis_policy::{Engine, InMemoryLimiter};
use serde_json::json;

/// The Builtin provider's token signing key in these tests (EC P-256).
const SIGNING_PEM: &str = include_str!("../../signatures/tests/keys/test-key-ecc-p256.key");

/// A request as the engine sees it, read from fuzzer bytes: the first line is
/// `METHOD TARGET`, each further line a header `name: value` (lines the `http` crate refuses
/// are skipped, as hyper would refuse them); a first byte with its low bit set means TLS.
pub struct FuzzRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub host: Option<String>,
    pub headers: HeaderMap,
    pub tls: bool,
}

impl FuzzRequest {
    pub fn parse(data: &[u8]) -> Option<Self> {
        let (&flags, data) = data.split_first()?;
        let text = std::str::from_utf8(data).ok()?;
        let mut lines = text.split("\r\n");
        let (method, target) = lines.next()?.split_once(' ')?;
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q.to_owned())),
            None => (target, None),
        };
        let mut headers = HeaderMap::new();
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value.trim()),
            ) else {
                continue;
            };
            headers.append(name, value);
        }
        let host = headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .map(|h| h.split(':').next().unwrap_or_default().to_ascii_lowercase());
        Some(Self {
            method: method.to_owned(),
            path: path.to_owned(),
            query,
            host,
            headers,
            tls: flags & 1 == 1,
        })
    }

    pub fn view(&self) -> portcullis_policy::RequestView<'_> {
        portcullis_policy::RequestView {
            method: &self.method,
            host: self.host.as_deref(),
            authority: None,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            peer: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            tls: self.tls,
            listener: portcullis_policy::Listener::Inbound,
            client_cert: None,
            form: None,
        }
    }
}

/// The engine every `decide` input runs against: one route per profile type, on hosts and
/// prefixes that overlap, behind a trusted proxy range, with limits and an org allowance.
pub fn engine() -> &'static Engine<InMemoryLimiter> {
    static ENGINE: OnceLock<Engine<InMemoryLimiter>> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let route = |name: &str, host: Option<&str>, prefix: &str, profile: &str| {
            let mut r = json!({"name": name, "pathPrefix": prefix, "profiles": [profile],
                               "backend": {"type": "Local", "port": 8080}});
            if let Some(h) = host {
                r["hosts"] = json!([h]);
            }
            r
        };
        let config = json!({
            "schemaVersion": 1, "generation": "fuzz", "namespace": "fuzz",
            "trustedProxies": ["10.0.0.0/8"],
            "orgAllowance": 1000000,
            "profiles": [
                {"name": "open", "auth": {"type": "Anonymous"}},
                {"name": "basic", "auth": {"type": "Basic"}, "rateLimitPerMinute": 1000000,
                 "trustedIpRanges": [{"from": "10.0.0.0", "to": "10.255.255.255"}],
                 "identityHeader": "x-app-user"},
                {"name": "keys", "auth": {"type": "ApiKey", "keyParam": "apikey", "keyHeader": "x-api-key",
                 "signature": {"param": "sig", "algorithm": "SHA256", "clockSkewSeconds": 300}}},
                {"name": "rfc", "auth": {"type": "HttpSignature", "standard": "RFC9421",
                 "requiredComponents": ["@method"], "maxAgeSeconds": 300}},
                {"name": "cavage", "auth": {"type": "HttpSignature", "standard": "Cavage",
                 "requiredComponents": ["(request-target)"], "maxAgeSeconds": 300}},
                {"name": "oauth", "auth": {"type": "OAuth2", "provider": "Builtin",
                 "builtinTokenTtlSeconds": 600, "requiredScopes": ["read"],
                 "builtinDelegation": {"consentUrl": "https://owner.example/consent",
                                       "refreshTokenTtlSeconds": 86400, "maxGrantSeconds": 604800}}},
            ],
            "routes": [
                route("open", None, "/", "open"),
                route("admin", None, "/admin", "basic"),
                route("keys", Some("api.example"), "/v1", "keys"),
                route("rfc", Some("signed.example"), "/", "rfc"),
                route("cavage", Some("old.example"), "/", "cavage"),
                route("oauth", Some("tokens.example"), "/api", "oauth"),
            ],
        });
        let secrets = json!({"schemaVersion": 1, "generation": "fuzz", "profiles": {
            "basic": {"basic": {"username": "zoë", "password": "pw"}},
            "keys": {"apiKeys": {"key-1": "secret-1"}},
            "rfc": {"signatureKeys": {"gw-1": "hmac secret"}},
            "cavage": {"signatureKeys": {"gw-1": "hmac secret"}},
            "oauth": {"oauth2SigningKeys": [{"name": "key-1", "pem": SIGNING_PEM}], "oauth2Clients": {"app-1": "s3cret"}, "oauth2ClientScopes": {"app-1": ["read"]},
                      "oauth2RedirectUris": {"app-1": ["https://app.example/cb"]}, "oauth2OwnerToken": "owner-credential-0123"},
        }});
        let loaded = Loaded {
            config: serde_json::from_value::<SidecarConfig>(config).expect("fuzz config"),
            secrets: serde_json::from_value::<SecretMaterial>(secrets).expect("fuzz secrets"),
        };
        Engine::compile(&loaded, Arc::new(InMemoryLimiter::new())).expect("fuzz engine")
    })
}
