//! Reading Kubernetes Secrets for the compiler: existence, type and keys, with errors that
//! name the field that referenced the Secret and never the Secret's values.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

use super::{Problem, reason};
use portcullis_config::Sensitive;

/// Secret type of HTTP Basic credentials.
pub const BASIC_AUTH: &str = "kubernetes.io/basic-auth";
/// Secret type of TLS certificates and keys.
pub const TLS: &str = "kubernetes.io/tls";
/// Annotation by which a Secret lets ApiRoutes send its credentials to their origin:
/// comma-separated route names, or `*` for every route of the namespace.
pub const ALLOWED_ROUTES_ANNOTATION: &str = "portcullis.dev/allowed-routes";
/// The same for SecurityProfiles (a token introspection client's credentials, sent to the
/// profile's introspection endpoint): comma-separated profile names, or `*`.
pub const ALLOWED_PROFILES_ANNOTATION: &str = "portcullis.dev/allowed-profiles";
/// Optional annotation narrowing where those credentials may go: comma-separated origin
/// hosts (`host` for any port, `host:port` for one).
pub const ALLOWED_ORIGINS_ANNOTATION: &str = "portcullis.dev/allowed-origins";

/// Who would send a Secret's credentials out of the cluster.
#[derive(Clone, Copy, Debug)]
pub enum Sender<'a> {
    /// An ApiRoute, toward its origin.
    Route(&'a str),
    /// A SecurityProfile, toward its introspection endpoint.
    Profile(&'a str),
    /// A SecurityProfile's sign-in, toward its OpenID provider's token endpoint.
    Login(&'a str),
}

/// Where a Secret's credentials would go: who sends them, and every URL that receives them
/// or what they obtain (the origin, an OAuth2 token endpoint), each with the field that
/// names it.
#[derive(Clone, Copy, Debug)]
pub struct Outbound<'a> {
    pub sender: Sender<'a>,
    pub urls: &'a [(&'a str, &'a str)],
    /// The first URL (a route's origin) is `https://` with `tls.mode: None`: as plain HTTP
    /// for [`ALLOWED_ORIGINS_ANNOTATION`].
    pub unverified_origin: bool,
}

/// The Secrets of one namespace, by name.
pub struct SecretIndex<'a> {
    namespace: &'a str,
    by_name: BTreeMap<&'a str, &'a Secret>,
}

/// One Secret's data as UTF-8 strings (`stringData` taking precedence over `data`, as the API
/// server does).
pub struct SecretData {
    name: String,
    field: String,
    entries: BTreeMap<String, Vec<u8>>,
}

impl<'a> SecretIndex<'a> {
    /// The namespace the index covers.
    pub fn namespace(&self) -> &str {
        self.namespace
    }

    pub fn new(namespace: &'a str, secrets: &'a [Secret]) -> Self {
        let by_name = secrets
            .iter()
            .filter(|s| s.metadata.namespace.as_deref().unwrap_or(namespace) == namespace)
            .filter_map(|s| Some((s.metadata.name.as_deref()?, s)))
            .collect();
        Self { namespace, by_name }
    }

    /// The Secret named `name`, referenced by `field`; with `want_type`, its `type` must match.
    pub fn get(&self, field: &str, name: &str, want_type: Option<&str>) -> Result<SecretData, Problem> {
        let secret = self.find(field, name)?;
        self.read(secret, field, name, want_type)
    }

    /// Like [`Self::get`], for a Secret whose content is sent out of the cluster (a route's
    /// origin credentials or client certificate, a profile's introspection client): the
    /// Secret must opt in with [`ALLOWED_ROUTES_ANNOTATION`] (or, for a profile,
    /// [`ALLOWED_PROFILES_ANNOTATION`]) naming the sender (or `*`) and, when it carries
    /// [`ALLOWED_ORIGINS_ANNOTATION`], list the host of every URL in `outbound`. Checked
    /// before anything else is read from it, so a Secret that does not opt in gives away
    /// nothing but its existence.
    pub fn get_outbound(
        &self,
        field: &str,
        name: &str,
        want_type: Option<&str>,
        outbound: Outbound<'_>,
    ) -> Result<SecretData, Problem> {
        let secret = self.find(field, name)?;
        let annotations = secret.metadata.annotations.as_ref();
        let annotation = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
        let listed = |value: &str, want: &str| value.split(',').map(str::trim).any(|v| v == "*" || v == want);
        let (kind, sender, key, to) = match outbound.sender {
            Sender::Route(route) => ("ApiRoute", route, ALLOWED_ROUTES_ANNOTATION, "an origin"),
            Sender::Profile(profile) => (
                "SecurityProfile",
                profile,
                ALLOWED_PROFILES_ANNOTATION,
                "its introspection endpoint",
            ),
            Sender::Login(profile) => (
                "SecurityProfile",
                profile,
                ALLOWED_PROFILES_ANNOTATION,
                "its OpenID provider",
            ),
        };
        if !annotation(key).is_some_and(|v| listed(v, sender)) {
            let names = if kind == "ApiRoute" { "route" } else { "profile" };
            return Err(Problem::new(
                reason::SECRET_NOT_ALLOWED,
                field,
                format!(
                    "Secret {name:?} does not allow {kind} {sender:?} to send its content to {to}; \
                     to allow it, annotate the Secret {key}: \"{sender}\" (comma-separated {names} names, \
                     or \"*\")"
                ),
            ));
        }
        if let Some(allowed) = annotation(ALLOWED_ORIGINS_ANNOTATION) {
            for (i, (url_field, url)) in outbound.urls.iter().enumerate() {
                // A URL the allow list cannot be checked against is refused (fail closed).
                let Some((host, port, http)) = url_host_port(url) else {
                    return Err(Problem::new(
                        reason::SECRET_NOT_ALLOWED,
                        field,
                        format!(
                            "Secret {name:?}: {url_field} ({url:?}) cannot be checked against {ALLOWED_ORIGINS_ANNOTATION}"
                        ),
                    ));
                };
                let plain = http || (i == 0 && outbound.unverified_origin);
                let entries = || allowed.split(',').map(str::trim);
                if plain
                    && entries().any(|entry| origin_matches(entry, &host, port))
                    && !entries().any(|entry| {
                        entry
                            .strip_prefix("http://")
                            .is_some_and(|e| origin_matches(e, &host, port))
                    })
                {
                    return Err(Problem::new(
                        reason::SECRET_NOT_ALLOWED,
                        field,
                        format!(
                            "Secret {name:?} may be sent to {host} over verified TLS only, and {url_field} is \
                             http:// or TLS mode None; to allow that, list http://{host} in {ALLOWED_ORIGINS_ANNOTATION}"
                        ),
                    ));
                }
                let matches = |entry: &str| match entry.strip_prefix("http://") {
                    Some(e) => plain && origin_matches(e, &host, port),
                    None => !plain && origin_matches(entry, &host, port),
                };
                if !entries().any(matches) {
                    return Err(Problem::new(
                        reason::SECRET_NOT_ALLOWED,
                        field,
                        format!(
                            "Secret {name:?} may be sent only to the hosts in its annotation \
                             {ALLOWED_ORIGINS_ANNOTATION} ({allowed}), and {url_field} goes to {host:?}; \
                             to allow it, add {host} to that annotation"
                        ),
                    ));
                }
            }
        }
        self.read(secret, field, name, want_type)
    }

    fn find(&self, field: &str, name: &str) -> Result<&'a Secret, Problem> {
        self.by_name.get(name).copied().ok_or_else(|| {
            Problem::new(
                reason::SECRET_NOT_FOUND,
                field,
                format!("Secret {name:?} not found in namespace {}", self.namespace),
            )
        })
    }

    fn read(&self, secret: &Secret, field: &str, name: &str, want_type: Option<&str>) -> Result<SecretData, Problem> {
        if let Some(want) = want_type {
            let have = secret.type_.as_deref().unwrap_or("Opaque");
            if have != want {
                return Err(Problem::new(
                    reason::WRONG_SECRET_TYPE,
                    field,
                    format!("Secret {name:?} has type {have}, expected {want}"),
                ));
            }
        }
        let mut entries: BTreeMap<String, Vec<u8>> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        for (k, v) in secret.string_data.iter().flatten() {
            entries.insert(k.clone(), v.clone().into_bytes());
        }
        Ok(SecretData {
            name: name.to_owned(),
            field: field.to_owned(),
            entries,
        })
    }
}

/// The host (lower case, IPv6 without brackets), the port of an `http(s)://` URL, and whether
/// it is plain `http://`.
fn url_host_port(url: &str) -> Option<(String, u16, bool)> {
    let (rest, default_port) = match url.split_once("://")? {
        ("https", rest) => (rest, 443),
        ("http", rest) => (rest, 80),
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = split_host_port(authority)?;
    let port = match port {
        None => default_port,
        Some(p) => p.parse().ok().filter(|&p| p != 0)?,
    };
    Some((host.to_ascii_lowercase(), port, default_port == 80))
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match s.split_once(':') {
        Some((host, port)) if !port.contains(':') => Some((host, Some(port))),
        Some(_) => Some((s, None)),
        None => Some((s, None)),
    }
    .filter(|(host, _)| !host.is_empty())
}

/// Whether an entry of [`ALLOWED_ORIGINS_ANNOTATION`] (`host` or `host:port`, case-insensitive)
/// covers `host` on `port`.
fn origin_matches(entry: &str, host: &str, port: u16) -> bool {
    let Some((entry_host, entry_port)) = split_host_port(entry) else {
        return false;
    };
    entry_host.eq_ignore_ascii_case(host) && entry_port.is_none_or(|p| p.parse() == Ok(port))
}

impl SecretData {
    /// The value of `key`, which must be present, non-empty UTF-8.
    pub fn required(&self, key: &str) -> Result<Sensitive, Problem> {
        match self.entries.get(key) {
            None => Err(Problem::new(
                reason::SECRET_KEY_MISSING,
                &self.field,
                format!("Secret {:?} has no key {key:?}", self.name),
            )),
            Some(v) if v.is_empty() => Err(Problem::new(
                reason::SECRET_KEY_MISSING,
                &self.field,
                format!("Secret {:?} has an empty {key:?}", self.name),
            )),
            Some(v) => self.utf8(key, v),
        }
    }

    /// Every entry, for Secrets that map identifiers to secrets (API keys, clients, keyIds).
    pub fn all(&self) -> Result<BTreeMap<String, Sensitive>, Problem> {
        if self.entries.is_empty() {
            return Err(Problem::new(
                reason::SECRET_KEY_MISSING,
                &self.field,
                format!("Secret {:?} has no entries", self.name),
            ));
        }
        self.entries
            .iter()
            .map(|(k, v)| Ok((k.clone(), self.utf8(k, v)?)))
            .collect()
    }

    /// A PEM value under `key` that must contain a `BEGIN <label>` block.
    pub fn pem(&self, key: &str, label: &str) -> Result<String, Problem> {
        let value = self.required(key)?;
        if !value.expose().contains(&format!("-----BEGIN {label}")) {
            return Err(Problem::new(
                reason::INVALID_SECRET,
                &self.field,
                format!("Secret {:?} key {key:?} is not a PEM {label}", self.name),
            ));
        }
        Ok(value.expose().to_owned())
    }

    /// A PEM private key under `key` (any of the usual PEM labels).
    pub fn private_key(&self, key: &str) -> Result<Sensitive, Problem> {
        let value = self.required(key)?;
        if !value.expose().contains("-----BEGIN") || !value.expose().contains("PRIVATE KEY-----") {
            return Err(Problem::new(
                reason::INVALID_SECRET,
                &self.field,
                format!("Secret {:?} key {key:?} is not a PEM private key", self.name),
            ));
        }
        Ok(value)
    }

    fn utf8(&self, key: &str, v: &[u8]) -> Result<Sensitive, Problem> {
        std::str::from_utf8(v).map(Sensitive::new).map_err(|_| {
            Problem::new(
                reason::INVALID_SECRET,
                &self.field,
                format!("Secret {:?} key {key:?} is not UTF-8 text", self.name),
            )
        })
    }
}
