//! The compiled sidecar configuration: the contract between the operator, which writes it,
//! and the sidecar, which enforces it.
//!
//! A sidecar's configuration directory holds two files:
//! - [`CONFIG_FILE`] (`config.json`), a [`SidecarConfig`]: routes, profiles, limits. No
//!   secret ever appears here; the operator publishes it in a ConfigMap.
//! - [`SECRETS_FILE`] (`secrets.json`), a [`SecretMaterial`]: passwords, keys, certificates,
//!   by profile and route name. The operator publishes it in a Secret.
//!
//! Both are plain serde data (no kube, no tokio) so that the operator can produce them
//! without depending on the proxy, and the sidecar can read them without depending on kube.
//! [`SidecarConfig::check`] verifies that the two agree; the sidecar refuses a pair that
//! does not and keeps serving its last good configuration.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

mod secret;
pub use secret::Sensitive;

/// Name of the non-secret configuration file in a configuration directory.
pub const CONFIG_FILE: &str = "config.json";
/// Name of the secret material file in a configuration directory.
pub const SECRETS_FILE: &str = "secrets.json";
/// Version of the format in this crate. A sidecar refuses a configuration of another version.
pub const SCHEMA_VERSION: u32 = 1;

/// Everything a sidecar enforces, minus secrets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarConfig {
    /// Format version, [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Names this configuration and its secret material (the operator's keyed MAC of their
    /// content; opaque to the sidecar): the generation the sidecar reports it enforces.
    pub generation: String,
    /// Namespace (environment) the configuration was compiled for.
    pub namespace: String,
    /// Hits per rolling minute across all routes; takes precedence over every profile limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_allowance: Option<u32>,
    /// Sidecars in this namespace (every configuration group), as the operator last counted
    /// them: while a shared limits store is unavailable, each enforces this share of the org
    /// allowance. Absent: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Peers whose `X-Forwarded-For` is believed for the client address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Profiles used by at least one route, by name.
    #[serde(default)]
    pub profiles: Vec<Profile>,
    /// Routes served, in the order the operator compiled them (by name).
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// A compiled security profile.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    /// Name of the SecurityProfile.
    pub name: String,
    /// How callers authenticate.
    pub auth: ProfileAuth,
    /// Inclusive address ranges callers must come from; empty: anywhere. Sorted and merged
    /// by the compiler.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_ip_ranges: Vec<IpRange>,
    /// Hits per rolling minute through this profile, across all its routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_minute: Option<u32>,
    /// Whom the rate limit and the quota count: the profile as a whole, or each consumer
    /// (the identity the profile established) on its own.
    #[serde(default, skip_serializing_if = "LimitPer::is_default")]
    pub rate_limit_per: LimitPer,
    /// Hits per calendar period (UTC); counted only on a shared limits store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
    /// What the limit does while a shared limits store is unavailable.
    #[serde(default, skip_serializing_if = "StoreFallback::is_default")]
    pub on_store_unavailable: StoreFallback,
    /// Sidecars serving this profile's routes in this namespace, as the operator last counted
    /// them (the divisor of [`StoreFallback::LocalShare`]). Absent: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Header whose value is logged as the identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_header: Option<String>,
}

/// Whom a profile's rate limit and quota count.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LimitPer {
    /// Every call through the profile, whoever makes it.
    #[default]
    Profile,
    /// Each consumer on its own: the Basic username, the API key, the token's subject (or
    /// client), the signature's key id, the certificate's subject.
    Consumer,
}

impl LimitPer {
    /// The default (left out of the JSON).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Hits per calendar period.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Quota {
    /// Hits admitted per period.
    pub requests: u32,
    pub period: QuotaPeriod,
}

/// A calendar period, in UTC: it starts at the full hour, at midnight, on the first of the
/// month.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuotaPeriod {
    Hour,
    Day,
    Month,
}

/// What a profile's rate limit does while the shared limits store is unavailable.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreFallback {
    /// Each sidecar enforces its share: the limit divided by the replicas, rounded up.
    #[default]
    LocalShare,
    /// Calls are admitted without counting.
    Allow,
    /// Calls are refused (503).
    Deny,
}

impl StoreFallback {
    /// The default (left out of the JSON).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// What an HttpSignature profile's replay protection does while the shared store is
/// unavailable.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReplayFallback {
    /// Signed calls are refused (503): fail closed.
    #[default]
    Deny,
    /// Each sidecar remembers signatures itself: a captured call can be replayed once per
    /// replica during the outage.
    Local,
}

impl ReplayFallback {
    /// The default (left out of the JSON).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// An inclusive range of addresses of one family.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct IpRange {
    pub from: IpAddr,
    pub to: IpAddr,
}

/// Hash for Mashery-style signatures.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureHash {
    MD5,
    SHA256,
}

/// OAuth 1.0a signature methods (names as on the wire, RFC 5849 section 3.4).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OAuth1Method {
    #[serde(rename = "HMAC-SHA1")]
    HmacSha1,
    #[serde(rename = "HMAC-SHA256")]
    HmacSha256,
    #[serde(rename = "RSA-SHA1")]
    RsaSha1,
    #[serde(rename = "PLAINTEXT")]
    Plaintext,
}

/// Token credentials an OAuth1 profile admits: the token secret and the consumer the token
/// was issued to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OAuth1Token {
    pub consumer_key: String,
    pub secret: Sensitive,
}

/// HTTP message signature standards.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureStandard {
    RFC9421,
    Cavage,
}

/// HTTP message signature algorithms (names as on the wire).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    #[serde(rename = "rsa-v1_5-sha256")]
    RsaV15Sha256,
    #[serde(rename = "rsa-pss-sha512")]
    RsaPssSha512,
    #[serde(rename = "ecdsa-p256-sha256")]
    EcdsaP256Sha256,
    #[serde(rename = "ed25519")]
    Ed25519,
}

/// How a profile authenticates callers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all_fields = "camelCase", deny_unknown_fields)]
pub enum ProfileAuth {
    /// Anyone; identity `anonymous`.
    Anonymous,
    /// HTTP Basic; the credentials are in [`ProfileSecrets::basic`].
    Basic,
    /// API keys (Mashery style); the keys are in [`ProfileSecrets::api_keys`].
    ApiKey {
        key_param: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_header: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<ApiKeySignature>,
    },
    /// OAuth 2.0 bearer tokens.
    OAuth2 {
        provider: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        issuer: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        jwks_uri: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        introspection_url: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        audiences: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        required_scopes: Vec<String>,
        /// Set when the sidecar issues tokens itself (provider Builtin).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        builtin_token_ttl_seconds: Option<u32>,
        /// Builtin: access users grant to clients (the authorization-code grant), through the
        /// owner's consent page; the clients' redirect URIs and the owner's credential are in
        /// [`ProfileSecrets::oauth2_redirect_uris`] and [`ProfileSecrets::oauth2_owner_token`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        builtin_delegation: Option<Delegation>,
        /// Sign-in for people (OpenID Connect); the client secret and the session keys are in
        /// [`ProfileSecrets::login`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        login: Option<Box<Login>>,
    },
    /// HTTP message signatures; keys in [`ProfileSecrets::signature_keys`].
    HttpSignature {
        standard: SignatureStandard,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        algorithms: Vec<SignatureAlgorithm>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        required_components: Vec<String>,
        max_age_seconds: u32,
        /// With a shared store, where signatures are remembered while it is unavailable.
        #[serde(default, skip_serializing_if = "ReplayFallback::is_default")]
        on_store_unavailable: ReplayFallback,
    },
    /// OAuth 1.0a signed requests (RFC 5849); consumer secrets (or RSA public keys) in
    /// [`ProfileSecrets::oauth1_consumers`], token credentials in
    /// [`ProfileSecrets::oauth1_tokens`].
    OAuth1 {
        /// Accepted `oauth_signature_method`s; empty: HMAC-SHA1, HMAC-SHA256 and RSA-SHA1
        /// (PLAINTEXT only when listed, and only over HTTPS).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        signature_methods: Vec<OAuth1Method>,
        /// Most seconds `oauth_timestamp` may differ from the sidecar's clock.
        timestamp_window_seconds: u32,
        /// Every call must carry token credentials (`oauth_token`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        require_token: bool,
        /// With a shared store, where nonces are remembered while it is unavailable.
        #[serde(default, skip_serializing_if = "ReplayFallback::is_default")]
        on_store_unavailable: ReplayFallback,
    },
    /// TLS client certificates; the CA bundle is in [`ProfileSecrets::client_ca_pem`].
    ClientCertificate {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        allowed_subjects: Vec<String>,
    },
}

impl ProfileAuth {
    /// The profile type name, as in the CRD.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Anonymous => "Anonymous",
            Self::Basic => "Basic",
            Self::ApiKey { .. } => "ApiKey",
            Self::OAuth2 { .. } => "OAuth2",
            Self::HttpSignature { .. } => "HttpSignature",
            Self::OAuth1 { .. } => "OAuth1",
            Self::ClientCertificate { .. } => "ClientCertificate",
        }
    }
}

/// A Builtin provider's user-delegated access.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delegation {
    /// The owner's consent page: the user is sent there with the authorization request.
    pub consent_url: String,
    /// How long a refresh token may go unused (each refresh starts it again).
    pub refresh_token_ttl_seconds: u32,
    /// The longest grant (and the default when the owner names no lifetime).
    pub max_grant_seconds: u32,
}

/// An OAuth2 profile's sign-in for people: the OpenID Connect authorization code flow with
/// PKCE, against the provider found at `discovery_url`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Login {
    /// The provider's issuer: the discovery document and every ID token must name it.
    pub issuer: String,
    /// `<issuer>/.well-known/openid-configuration`.
    pub discovery_url: String,
    /// The client id registered with the provider.
    pub client_id: String,
    /// The callback path, on the route's host.
    pub redirect_path: String,
    /// The sign-out path, on the route's host.
    pub logout_path: String,
    /// Scopes asked for (`openid` among them).
    pub scopes: Vec<String>,
    /// Verified email domains admitted; empty with `allowed_emails` empty: anyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_domains: Vec<String>,
    /// Verified emails admitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_emails: Vec<String>,
    /// Longest a session lasts, refreshes included.
    pub session_max_seconds: u32,
}

/// The secret half of a profile's sign-in.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginSecrets {
    /// The client secret, sent to the provider's token endpoint.
    pub client_secret: Sensitive,
    /// Keys that seal the session and sign-in cookies (AES-256-GCM), newest first: the first
    /// seals, every one opens (so a rotation leaves sessions valid for the overlap).
    pub session_keys: Vec<SessionKey>,
}

/// One token signing key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SigningKey {
    /// The name of the key in its Secret (`key-<unix seconds created>`): the tokens' `kid`.
    pub name: String,
    /// An EC P-256 private key, PKCS#8 PEM.
    pub pem: Sensitive,
}

/// One session key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionKey {
    /// The name of the key in its Secret (`key-<unix seconds created>`).
    pub name: String,
    /// 32 bytes, base64 (standard alphabet, padded).
    pub key: Sensitive,
}

/// The signature that must accompany an API key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeySignature {
    pub param: String,
    pub algorithm: SignatureHash,
    pub clock_skew_seconds: u32,
}

/// A compiled route.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    /// Name of the ApiRoute.
    pub name: String,
    /// Hosts (lower case; `*.` prefix for a wildcard); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Path prefix, starting with `/`.
    pub path_prefix: String,
    /// Paths match `path_prefix` without regard to ASCII letter case (default: exact case).
    /// Left out of the JSON when false, so configurations without it read and hash as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub case_insensitive: bool,
    /// Methods (upper case); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Names of the profiles that may admit a call, in order; empty: anonymous.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// Plain-HTTP requests are redirected to https.
    #[serde(default)]
    pub ssl_only: bool,
    /// The route has a client-facing certificate in [`RouteSecrets::tls`].
    #[serde(default)]
    pub tls: bool,
    /// Where calls go.
    pub backend: Backend,
    /// Served on the egress listener rather than inbound.
    #[serde(default)]
    pub egress: bool,
}

/// Where a route's calls go.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all_fields = "camelCase", deny_unknown_fields)]
pub enum Backend {
    /// The app in the same pod at `127.0.0.1:port`.
    Local { port: u16 },
    /// A remote origin.
    Origin {
        url: String,
        tls_mode: OriginTlsMode,
        /// A custom CA bundle is in [`RouteSecrets::origin_ca_pem`] (else: system roots).
        #[serde(default)]
        custom_ca: bool,
        /// A client certificate is in [`RouteSecrets::origin_client`].
        #[serde(default)]
        client_certificate: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth: Option<OriginAuth>,
        /// The client's credentials the route's profiles consume are passed on (default: they
        /// are removed). Left out of the JSON when false.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        pass_credentials: bool,
    },
}

/// TLS toward an origin.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OriginTlsMode {
    None,
    Verify,
    Mutual,
}

/// Credentials added toward an origin; the secret parts are in [`RouteSecrets::origin_auth`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all_fields = "camelCase", deny_unknown_fields)]
pub enum OriginAuth {
    Basic,
    SharedSecret {
        algorithm: SignatureHash,
        key_param: String,
        sig_param: String,
    },
    HttpSignature {
        key_id: String,
        algorithm: SignatureAlgorithm,
        standard: SignatureStandard,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        components: Vec<String>,
    },
    OAuth2ClientCredentials {
        token_url: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        scopes: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audience: Option<String>,
    },
}

/// The secret half of a configuration, by profile and route name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretMaterial {
    /// Format version, [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Must equal [`SidecarConfig::generation`]: the two files belong together.
    pub generation: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub profiles: BTreeMap<String, ProfileSecrets>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub routes: BTreeMap<String, RouteSecrets>,
}

/// Secrets of one profile.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileSecrets {
    /// Basic: the one username/password pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<UserPassword>,
    /// ApiKey: API key to shared secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub api_keys: BTreeMap<String, Sensitive>,
    /// OAuth2 introspection client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introspection_client: Option<ClientCredentials>,
    /// OAuth2 Builtin: client id to client secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub oauth2_clients: BTreeMap<String, Sensitive>,
    /// OAuth2 Builtin: client id to the scopes its tokens may carry (none when absent).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub oauth2_client_scopes: BTreeMap<String, Vec<String>>,
    /// OAuth2 Builtin: the keys that sign its access tokens (ES256), newest first: the first
    /// signs, every one verifies (a rotation leaves tokens valid until they expire).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub oauth2_signing_keys: Vec<SigningKey>,
    /// OAuth2 Builtin with delegation: client id to its registered redirect URIs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub oauth2_redirect_uris: BTreeMap<String, Vec<String>>,
    /// OAuth2 Builtin with delegation: the owner's credential for the grant API and
    /// introspection (`Authorization: Bearer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2_owner_token: Option<Sensitive>,
    /// OAuth2 sign-in: the client secret and the session keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<LoginSecrets>,
    /// HttpSignature: keyId to HMAC secret or PEM public key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub signature_keys: BTreeMap<String, Sensitive>,
    /// OAuth1: consumer key to consumer secret (HMAC, PLAINTEXT) or PEM RSA public key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub oauth1_consumers: BTreeMap<String, Sensitive>,
    /// OAuth1: access token to its secret and consumer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub oauth1_tokens: BTreeMap<String, OAuth1Token>,
    /// ClientCertificate: the CA bundle (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_pem: Option<String>,
}

/// Secrets of one route.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSecrets {
    /// Client-facing certificate chain and key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsMaterial>,
    /// CA bundle to verify the origin (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_ca_pem: Option<String>,
    /// Client certificate toward the origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_client: Option<TlsMaterial>,
    /// Credentials toward the origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_auth: Option<OriginAuthSecrets>,
}

/// A username and password.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserPassword {
    pub username: String,
    pub password: Sensitive,
}

/// An OAuth 2.0 client id and secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: Sensitive,
}

/// A certificate chain and its private key, PEM.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsMaterial {
    pub cert_chain_pem: String,
    pub key_pem: Sensitive,
}

/// The secret half of origin credentials.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "type", rename_all_fields = "camelCase", deny_unknown_fields)]
pub enum OriginAuthSecrets {
    Basic {
        username: String,
        password: Sensitive,
    },
    SharedSecret {
        apikey: String,
        secret: Sensitive,
    },
    HttpSignature {
        key: Sensitive,
    },
    OAuth2ClientCredentials {
        client_id: String,
        client_secret: Sensitive,
    },
}

/// Why a configuration directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file} is not a valid configuration: {message}")]
    Parse { file: &'static str, message: String },
    #[error("{file} has schemaVersion {found}, this sidecar reads {expected}")]
    Version {
        file: &'static str,
        found: u32,
        expected: u32,
    },
    #[error("{CONFIG_FILE} (generation {config}) and {SECRETS_FILE} (generation {secrets}) do not belong together")]
    GenerationMismatch { config: String, secrets: String },
    #[error("{0}")]
    Inconsistent(String),
}

impl SidecarConfig {
    /// An empty configuration: no routes, every request answered 404.
    pub fn empty(namespace: impl Into<String>) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            generation: String::new(),
            namespace: namespace.into(),
            org_allowance: None,
            replicas: None,
            trusted_proxies: Vec::new(),
            profiles: Vec::new(),
            routes: Vec::new(),
        }
    }

    /// The profile of this name.
    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.name == name)
    }

    /// Verifies that the configuration is internally consistent and that `secrets` holds
    /// every secret it needs. Never mentions a secret value in its error.
    pub fn check(&self, secrets: &SecretMaterial) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Inconsistent(m));
        for (file, v) in [
            (CONFIG_FILE, self.schema_version),
            (SECRETS_FILE, secrets.schema_version),
        ] {
            if v != SCHEMA_VERSION {
                return Err(ConfigError::Version {
                    file,
                    found: v,
                    expected: SCHEMA_VERSION,
                });
            }
        }
        if self.generation != secrets.generation {
            return Err(ConfigError::GenerationMismatch {
                config: self.generation.clone(),
                secrets: secrets.generation.clone(),
            });
        }
        let mut names = std::collections::BTreeSet::new();
        for p in &self.profiles {
            if !names.insert(p.name.as_str()) {
                return bad(format!("profile {} appears twice", p.name));
            }
            for r in &p.trusted_ip_ranges {
                if r.from.is_ipv4() != r.to.is_ipv4() || r.from > r.to {
                    return bad(format!(
                        "profile {}: trusted IP range {}-{} is not a valid range",
                        p.name, r.from, r.to
                    ));
                }
            }
            let s = secrets.profiles.get(&p.name);
            let missing = match &p.auth {
                ProfileAuth::Basic => s.and_then(|s| s.basic.as_ref()).is_none(),
                ProfileAuth::ApiKey { .. } => s.is_none_or(|s| s.api_keys.is_empty()),
                ProfileAuth::HttpSignature { .. } => s.is_none_or(|s| s.signature_keys.is_empty()),
                ProfileAuth::OAuth1 { .. } => s.is_none_or(|s| s.oauth1_consumers.is_empty()),
                ProfileAuth::ClientCertificate { .. } => s.and_then(|s| s.client_ca_pem.as_ref()).is_none(),
                ProfileAuth::OAuth2 { login: Some(_), .. }
                    if s.and_then(|s| s.login.as_ref())
                        .is_none_or(|l| l.session_keys.is_empty()) =>
                {
                    true
                }
                ProfileAuth::OAuth2 {
                    builtin_token_ttl_seconds: Some(_),
                    builtin_delegation,
                    ..
                } => s.is_none_or(|s| {
                    s.oauth2_clients.is_empty()
                        || s.oauth2_signing_keys.is_empty()
                        || (builtin_delegation.is_some() && s.oauth2_owner_token.is_none())
                }),
                ProfileAuth::OAuth2 {
                    introspection_url: Some(_),
                    ..
                } => s.and_then(|s| s.introspection_client.as_ref()).is_none(),
                _ => false,
            };
            if missing {
                return bad(format!(
                    "profile {} ({}) has no credentials in {SECRETS_FILE}",
                    p.name,
                    p.auth.type_name()
                ));
            }
        }
        let mut route_names = std::collections::BTreeSet::new();
        for r in &self.routes {
            if !route_names.insert(r.name.as_str()) {
                return bad(format!("route {} appears twice", r.name));
            }
            if !r.path_prefix.starts_with('/') {
                return bad(format!("route {}: pathPrefix must start with /", r.name));
            }
            for p in &r.profiles {
                if self.profile(p).is_none() {
                    return bad(format!("route {}: profile {p} is not in the configuration", r.name));
                }
            }
            let s = secrets.routes.get(&r.name);
            if r.tls && s.and_then(|s| s.tls.as_ref()).is_none() {
                return bad(format!("route {}: tls certificate missing from {SECRETS_FILE}", r.name));
            }
            if let Backend::Origin {
                custom_ca,
                client_certificate,
                auth,
                ..
            } = &r.backend
            {
                if *custom_ca && s.and_then(|s| s.origin_ca_pem.as_ref()).is_none() {
                    return bad(format!("route {}: origin CA missing from {SECRETS_FILE}", r.name));
                }
                if *client_certificate && s.and_then(|s| s.origin_client.as_ref()).is_none() {
                    return bad(format!(
                        "route {}: origin client certificate missing from {SECRETS_FILE}",
                        r.name
                    ));
                }
                if auth.is_some() && s.and_then(|s| s.origin_auth.as_ref()).is_none() {
                    return bad(format!(
                        "route {}: origin credentials missing from {SECRETS_FILE}",
                        r.name
                    ));
                }
            } else if r.egress {
                return bad(format!("route {}: egress routes need an origin backend", r.name));
            }
        }
        Ok(())
    }
}

/// A configuration and its secrets, read from a directory and checked.
#[derive(Clone, PartialEq)]
pub struct Loaded {
    pub config: SidecarConfig,
    pub secrets: SecretMaterial,
}

impl fmt::Debug for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loaded")
            .field("generation", &self.config.generation)
            .field("routes", &self.config.routes.len())
            .finish_non_exhaustive()
    }
}

/// Reads `config.json` and `secrets.json` from `dir` and checks them. A missing
/// `secrets.json` is read as empty material (a configuration that needs no secret).
pub fn load_dir(dir: &Path) -> Result<Loaded, ConfigError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    let config: SidecarConfig = serde_json::from_slice(&read(CONFIG_FILE)?).map_err(|e| ConfigError::Parse {
        file: CONFIG_FILE,
        message: e.to_string(),
    })?;
    let secrets = match read(SECRETS_FILE) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ConfigError::Parse {
            file: SECRETS_FILE,
            // serde_json's messages name the position and the expected type, never the value.
            message: e.to_string(),
        })?,
        Err(ConfigError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => SecretMaterial {
            schema_version: SCHEMA_VERSION,
            generation: config.generation.clone(),
            ..Default::default()
        },
        Err(e) => return Err(e),
    };
    config.check(&secrets)?;
    Ok(Loaded { config, secrets })
}

impl Loaded {
    /// Writes both files into `dir` (each written to a temporary file, then renamed).
    pub fn write_dir(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let write = |name: &str, bytes: Vec<u8>| {
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, dir.join(name))
        };
        write(CONFIG_FILE, self.config_json())?;
        write(SECRETS_FILE, self.secrets_json())
    }

    /// The `config.json` bytes.
    pub fn config_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(&self.config).expect("config serializes");
        v.push(b'\n');
        v
    }

    /// The `secrets.json` bytes (reveals the secrets: only for a Secret or a file).
    pub fn secrets_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(&self.secrets).expect("secrets serialize");
        v.push(b'\n');
        v
    }
}

/// An OAuth 2.0 scope token: one or more of `%x21 / %x23-5B / %x5D-7E` (RFC 6749 section
/// 3.3). Shared by the operator (a Builtin client's scopes) and the sidecar (token requests).
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// Whether `authority` (`host[:port]`, as in a `Host` header or an absolute URI) is one the
/// sidecar routes on: a DNS name (letters, digits, `-`, `_`, dots between non-empty labels,
/// one trailing dot at most), an IPv4 address or a bracketed IPv6 address, then an optional
/// port of 1 to 5 digits. Shared by the sidecar (requests) and the operator (origin URLs). Anything else (userinfo `a@b`, `/`, `?`, `#`, `\`, spaces, empty
/// labels) is a host that an app could read as another one.
pub fn valid_authority(authority: &str) -> bool {
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (authority, None),
    };
    port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())) && valid_host(host)
}

/// Whether `host` (without port) is a DNS name, an IPv4 address or a bracketed IPv6 address
/// ([`valid_authority`]).
pub fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[') {
        return inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    // One pass over the bytes (it runs on every request's `Host`): labels of 1 to 63 letters,
    // digits, `-` and `_`, between dots.
    let mut label = 0;
    for &b in name.as_bytes() {
        if b == b'.' {
            if label == 0 {
                return false;
            }
            label = 0;
        } else if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            label += 1;
            if label > 63 {
                return false;
            }
        } else {
            return false;
        }
    }
    label > 0
}

#[cfg(test)]
mod tests;
