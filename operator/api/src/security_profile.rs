//! `SecurityProfile`: who may call an API, from where, and how often.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{SecretRef, SignatureAlgorithm, SignatureHash, SignatureStandard};

/// A security profile says who may call the APIs it is assigned to (one authentication
/// type), from which IP ranges, how often, and how hits are audited. A profile is valid only
/// in its own namespace (environment) and may be assigned to many ApiRoutes there.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "portcullis.dev",
    version = "v1alpha1",
    kind = "SecurityProfile",
    plural = "securityprofiles",
    shortname = "sp",
    category = "portcullis",
    namespaced,
    status = "SecurityProfileStatus",
    derive = "PartialEq",
    doc = "A SecurityProfile says who may call the ApiRoutes it is assigned to, from where, and how often.",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.basic) == (self.type == 'Basic')").message("spec.basic must be set exactly when type is Basic").field_path(".basic"),
    validation = Rule::new("has(self.apiKey) == (self.type == 'ApiKey')").message("spec.apiKey must be set exactly when type is ApiKey").field_path(".apiKey"),
    validation = Rule::new("has(self.oauth2) == (self.type == 'OAuth2')").message("spec.oauth2 must be set exactly when type is OAuth2").field_path(".oauth2"),
    validation = Rule::new("has(self.httpSignature) == (self.type == 'HttpSignature')").message("spec.httpSignature must be set exactly when type is HttpSignature").field_path(".httpSignature"),
    validation = Rule::new("has(self.oauth1) == (self.type == 'OAuth1')").message("spec.oauth1 must be set exactly when type is OAuth1").field_path(".oauth1"),
    validation = Rule::new("has(self.clientCertificate) == (self.type == 'ClientCertificate')").message("spec.clientCertificate must be set exactly when type is ClientCertificate").field_path(".clientCertificate"),
)]
pub struct SecurityProfileSpec {
    /// The authentication type; exactly the block of the same name must be set (none for
    /// Anonymous).
    #[serde(rename = "type")]
    pub profile_type: ProfileType,
    /// Type Basic: one username/password pair per profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicProfile>,
    /// Type ApiKey: Mashery-style API keys, optionally with a signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<ApiKeyProfile>,
    /// Type OAuth2: bearer tokens from an identity provider, or issued by the sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuth2Profile>,
    /// Type HttpSignature: consumers sign their requests (RFC 9421 or draft-cavage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_signature: Option<HttpSignatureProfile>,
    /// Type OAuth1: consumers sign their requests as OAuth 1.0a says (RFC 5849).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth1: Option<OAuth1Profile>,
    /// Type ClientCertificate: consumers present a certificate (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<ClientCertificateProfile>,
    /// Trust requests only from these IP ranges (IPv4 and IPv6) and block all others. Empty:
    /// no restriction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10000))]
    pub trusted_ip_ranges: Vec<IpRange>,
    /// Hits allowed through this profile per rolling minute and per calendar period (quota),
    /// across all ApiRoutes that use it, for the profile as a whole or for each consumer. The
    /// org allowance still takes precedence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// How hits through this profile are recorded in the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<Audit>,
}

/// The authentication type of a profile.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum ProfileType {
    /// Anyone may call; the identity logged is `anonymous`.
    Anonymous,
    /// HTTP Basic authentication with the profile's username and password.
    Basic,
    /// An API key in a query parameter or header, optionally signed (Mashery style).
    ApiKey,
    /// OAuth 2.0 bearer tokens.
    OAuth2,
    /// HTTP message signatures.
    HttpSignature,
    /// OAuth 1.0a signed requests (RFC 5849).
    OAuth1,
    /// TLS client certificates.
    ClientCertificate,
}

impl ProfileType {
    /// The name used in the CRD and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anonymous => "Anonymous",
            Self::Basic => "Basic",
            Self::ApiKey => "ApiKey",
            Self::OAuth2 => "OAuth2",
            Self::HttpSignature => "HttpSignature",
            Self::OAuth1 => "OAuth1",
            Self::ClientCertificate => "ClientCertificate",
        }
    }
}

impl std::fmt::Display for ProfileType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Basic authentication settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BasicProfile {
    /// A Secret of type `kubernetes.io/basic-auth` holding `username` and `password`.
    pub secret_ref: SecretRef,
}

/// API key settings (Mashery style).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyProfile {
    /// A Secret whose data maps each consumer's API key to its shared secret
    /// (`<apikey>: <secret>`), one entry per consumer.
    pub secret_ref: SecretRef,
    /// Query parameter carrying the key. Default `apikey`.
    #[serde(default = "default_key_param")]
    #[schemars(length(min = 1, max = 128))]
    pub key_param: String,
    /// Optional header carrying the key, as an alternative to the query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"), length(max = 128))]
    pub key_header: Option<String>,
    /// Require a signature of the key: `hex(HASH(apikey + secret + unixSeconds))`. Omit to
    /// accept the key alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<ApiKeySignature>,
}

fn default_key_param() -> String {
    "apikey".to_owned()
}

/// The signature that accompanies an API key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeySignature {
    /// Query parameter carrying the signature. Default `sig`.
    #[serde(default = "default_sig_param")]
    #[schemars(length(min = 1, max = 128))]
    pub param: String,
    /// Hash algorithm. Default MD5.
    #[serde(default)]
    pub algorithm: SignatureHash,
    /// Clock drift allowed either side of the current time, in seconds: every timestamp in
    /// `[now - skew, now + skew]` is tried. Default 300.
    #[serde(default = "default_clock_skew")]
    #[schemars(range(min = 0, max = 3600))]
    pub clock_skew_seconds: u32,
}

fn default_sig_param() -> String {
    "sig".to_owned()
}

fn default_clock_skew() -> u32 {
    300
}

/// OAuth 2.0 settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.provider != 'Builtin' || has(self.builtin)").message("oauth2.builtin is required when provider is Builtin").field_path(".builtin"),
    validation = Rule::new("self.provider == 'Builtin' || has(self.jwksUri) || has(self.introspection) || has(self.login)").message("oauth2 needs jwksUri, introspection or login unless provider is Builtin"),
    validation = Rule::new("!has(self.login) || self.provider != 'Builtin'").message("oauth2.login needs an identity provider: Google, Salesforce or Generic").field_path(".login"),
    validation = Rule::new("!has(self.login) || self.provider != 'Generic' || has(self.issuer)").message("oauth2.login with provider Generic needs issuer (the OpenID provider's issuer URL)").field_path(".issuer"),
    validation = Rule::new("(has(self.allowHttp) && self.allowHttp) || !has(self.login) || !has(self.issuer) || self.issuer.startsWith('https://')").message("issuer must be https:// for login unless allowHttp is true").field_path(".issuer"),
    validation = Rule::new("(has(self.allowHttp) && self.allowHttp) || !has(self.jwksUri) || self.jwksUri.startsWith('https://')").message("jwksUri must be https:// unless allowHttp is true").field_path(".jwksUri"),
    validation = Rule::new("(has(self.allowHttp) && self.allowHttp) || !has(self.introspection) || self.introspection.url.startsWith('https://')").message("introspection.url must be https:// unless allowHttp is true").field_path(".introspection.url"),
)]
pub struct OAuth2Profile {
    /// Identity provider. Default Generic.
    #[serde(default)]
    pub provider: OAuth2Provider,
    /// Expected `iss` of JWT access tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub issuer: Option<String>,
    /// URL of the provider's JSON Web Key Set, to verify JWT access tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://"), length(max = 2048))]
    pub jwks_uri: Option<String>,
    /// RFC 7662 token introspection, for opaque tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introspection: Option<OAuth2Introspection>,
    /// Accepted audiences (`aud`); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub audiences: Vec<String>,
    /// Scopes every token must carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub required_scopes: Vec<String>,
    /// Provider Builtin: the sidecar itself issues tokens (client-credentials grant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<OAuth2Builtin>,
    /// Sign-in for people (OpenID Connect authorization code flow with PKCE): a browser
    /// without a session is sent to the provider's sign-in page and comes back with an
    /// encrypted session cookie. API clients keep sending bearer tokens. The provider is
    /// found by OpenID discovery at `<issuer>/.well-known/openid-configuration` (issuer
    /// default: `https://accounts.google.com` for Google, `https://login.salesforce.com`
    /// for Salesforce; set it to a My Domain or Experience Cloud URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<OAuth2Login>,
    /// Permit `http://` for `jwksUri` and `introspection.url`. Default false: keys and
    /// introspection answers fetched in clear text can be replaced by anyone on the path, and
    /// the introspection client secret would travel in clear text.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_http: bool,
}

/// Who issues the OAuth 2.0 tokens a profile accepts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum OAuth2Provider {
    /// The sidecar is the token provider (the "OAuth accelerator").
    Builtin,
    /// Google as identity provider.
    Google,
    /// Salesforce as identity provider.
    Salesforce,
    /// Any OpenID Connect / OAuth 2.0 provider.
    #[default]
    Generic,
}

/// Sign-in for people through the profile's OpenID provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.scopes.exists(s, s == 'openid')").message("login.scopes must include openid").field_path(".scopes"),
    validation = Rule::new("self.redirectPath != self.logoutPath").message("login.redirectPath and login.logoutPath must differ").field_path(".logoutPath"),
)]
pub struct OAuth2Login {
    /// The OAuth 2.0 client id registered with the provider (Google: the "Client ID";
    /// Salesforce: the Connected App's "Consumer Key").
    #[schemars(length(min = 1, max = 512))]
    pub client_id: String,
    /// Secret with the key `clientSecret` (Google: the "Client secret"; Salesforce: the
    /// "Consumer Secret"). It is sent to the provider's token endpoint, so the Secret must
    /// allow this profile: `portcullis.dev/allowed-profiles`.
    pub client_secret_ref: SecretRef,
    /// The callback path, on the route's host: register `https://<host><redirectPath>` with
    /// the provider as an authorized redirect URI. Default `/oauth2/callback`.
    #[serde(default = "default_redirect_path")]
    #[schemars(regex(pattern = r"^/[A-Za-z0-9._~!$&'()*+,;=:@/-]*$"), length(max = 256))]
    pub redirect_path: String,
    /// Signing out: clears the session and, when the provider offers it, ends the
    /// provider's session too (RP-initiated logout). Default `/oauth2/logout`.
    #[serde(default = "default_logout_path")]
    #[schemars(regex(pattern = r"^/[A-Za-z0-9._~!$&'()*+,;=:@/-]*$"), length(max = 256))]
    pub logout_path: String,
    /// Scopes asked for; must include `openid`. Default `openid email profile`.
    #[serde(default = "default_login_scopes")]
    #[schemars(
        length(min = 1, max = 32),
        inner(regex(pattern = r"^[!#-\[\]-~]+$"), length(min = 1, max = 128))
    )]
    pub scopes: Vec<String>,
    /// Only people whose verified email is in one of these domains (Google Workspace
    /// domains, for example). Empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    pub allowed_domains: Vec<String>,
    /// Only people with one of these verified emails. Empty: any (with `allowedDomains`, a
    /// person passes when either list admits them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024), inner(length(min = 3, max = 320)))]
    pub allowed_emails: Vec<String>,
    /// The longest a session lasts, refreshes included, in seconds. Default 28800 (8 h).
    #[serde(default = "default_session_max")]
    #[schemars(range(min = 300, max = 2592000))]
    pub session_max_seconds: u32,
}

fn default_redirect_path() -> String {
    "/oauth2/callback".to_owned()
}

fn default_logout_path() -> String {
    "/oauth2/logout".to_owned()
}

fn default_login_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}

fn default_session_max() -> u32 {
    28800
}

/// RFC 7662 token introspection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2Introspection {
    /// Introspection endpoint.
    #[schemars(regex(pattern = r"^https?://"), length(max = 2048))]
    pub url: String,
    /// Secret with keys `clientId` and `clientSecret` used to call the endpoint.
    pub client_secret_ref: SecretRef,
}

/// The sidecar as token provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2Builtin {
    /// Secret whose data maps each client id to its client secret.
    pub clients_secret_ref: SecretRef,
    /// Lifetime of issued tokens in seconds. Default 3600.
    #[serde(default = "default_token_ttl")]
    #[schemars(range(min = 60, max = 86400))]
    pub token_ttl_seconds: u32,
    /// Access users grant to clients (the authorization-code grant with PKCE), through the
    /// API owner's consent page and the grant API. Each client's redirect URIs are in the
    /// clients Secret under `<client id>.redirectUris` (space-separated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation: Option<OAuth2Delegation>,
}

fn default_token_ttl() -> u32 {
    3600
}

/// A Builtin provider's user-delegated access.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2Delegation {
    /// The owner's consent page: the sidecar sends the user there with the checked
    /// authorization request (`request`, `client_id` and `scope` added to its query).
    /// `https://` unless `allowHttp` is set.
    #[schemars(regex(pattern = r"^https?://"), length(max = 2048))]
    pub consent_url: String,
    /// Secret whose key `token` is the owner's credential for the grant API and introspection
    /// (`Authorization: Bearer`), at least 16 characters.
    pub owner_secret_ref: SecretRef,
    /// How long a refresh token may go unused, seconds (each refresh rotates it and starts
    /// again). Default 2592000 (30 days).
    #[serde(default = "default_refresh_ttl")]
    #[schemars(range(min = 300, max = 31536000))]
    pub refresh_token_ttl_seconds: u32,
    /// The longest grant, seconds, and the lifetime of a grant the owner gives none.
    /// Default 7776000 (90 days).
    #[serde(default = "default_max_grant")]
    #[schemars(range(min = 3600, max = 31536000))]
    pub max_grant_seconds: u32,
}

fn default_refresh_ttl() -> u32 {
    2_592_000
}

fn default_max_grant() -> u32 {
    7_776_000
}

/// HTTP message signature verification settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpSignatureProfile {
    /// Secret whose data maps each keyId to an HMAC secret or a PEM public key.
    pub secret_ref: SecretRef,
    /// Signature standard. Default RFC9421.
    #[serde(default)]
    pub standard: SignatureStandard,
    /// Accepted algorithms; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5), extend("x-kubernetes-list-type" = "set"))]
    pub algorithms: Vec<SignatureAlgorithm>,
    /// Components every signature must cover (for example `@method`, `@path`, `host`,
    /// `date`, `content-digest`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 128)))]
    pub required_components: Vec<String>,
    /// Oldest accepted signature (`created` or `Date`), in seconds. Default 300.
    #[serde(default = "default_max_age")]
    #[schemars(range(min = 1, max = 86400))]
    pub max_age_seconds: u32,
    /// With a shared limits store (`--limits-store`), signatures are remembered there, so a
    /// captured signed request is admitted once in the cluster. While the store is
    /// unavailable: `Deny` (default) refuses signed calls with 503 (fail closed); `Local`
    /// has each sidecar remember them itself (a capture may then be replayed once per
    /// replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_store_unavailable: Option<ReplayStoreFallback>,
}

/// OAuth 1.0a (RFC 5849) verification settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuth1Profile {
    /// Secret whose data maps each consumer key to its consumer secret (HMAC-SHA1,
    /// HMAC-SHA256, PLAINTEXT) or to a PEM RSA public key (RSA-SHA1).
    pub consumers_secret_ref: SecretRef,
    /// Secret whose data maps each access token to `<consumerKey>:<tokenSecret>`: the token
    /// credentials consumers may sign with, each usable by its consumer only. Without it,
    /// only calls without `oauth_token` (two-legged) are admitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_secret_ref: Option<SecretRef>,
    /// Every call must carry token credentials (`oauth_token`). Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_token: bool,
    /// Accepted `oauth_signature_method`s; empty: HMAC-SHA1, HMAC-SHA256 and RSA-SHA1.
    /// PLAINTEXT is accepted only when listed, and only over HTTPS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4), extend("x-kubernetes-list-type" = "set"))]
    pub signature_methods: Vec<OAuth1SignatureMethod>,
    /// Most seconds `oauth_timestamp` may differ from the sidecar's clock; nonces are
    /// remembered that long. Default 300.
    #[serde(default = "default_max_age")]
    #[schemars(range(min = 1, max = 3600))]
    pub timestamp_window_seconds: u32,
    /// With a shared limits store, nonces are remembered there (a captured call is admitted
    /// once in the cluster). While the store is unavailable: `Deny` (default) refuses signed
    /// calls with 503; `Local` has each sidecar remember them itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_store_unavailable: Option<ReplayStoreFallback>,
}

/// An OAuth 1.0a signature method (RFC 5849 section 3.4).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum OAuth1SignatureMethod {
    #[serde(rename = "HMAC-SHA1")]
    HmacSha1,
    #[serde(rename = "HMAC-SHA256")]
    HmacSha256,
    #[serde(rename = "RSA-SHA1")]
    RsaSha1,
    #[serde(rename = "PLAINTEXT")]
    Plaintext,
}

/// Where a signing profile (HttpSignature, OAuth1) remembers signatures while the shared
/// store is unavailable.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum ReplayStoreFallback {
    /// Refuse signed calls (503): fail closed.
    #[default]
    Deny,
    /// Each sidecar remembers signatures itself.
    Local,
}

fn default_max_age() -> u32 {
    300
}

/// Client-certificate (mutual TLS) settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientCertificateProfile {
    /// Secret with the CA bundle (key `ca.crt`) that client certificates must chain to.
    pub ca_secret_ref: SecretRef,
    /// Accepted subjects (for example `CN=partner-a`); SAN DNS names are also accepted.
    /// Empty: any certificate issued by the CA.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 1024)))]
    pub allowed_subjects: Vec<String>,
}

/// One trusted IP range: either a CIDR block or an inclusive from/to pair of addresses of
/// the same family.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.cidr) != (has(self.from) || has(self.to))").message("a trusted IP range has either cidr, or from and to"),
    validation = Rule::new("has(self.from) == has(self.to)").message("from and to go together"),
    validation = Rule::new("!has(self.cidr) || isCIDR(self.cidr)").message("cidr must be a CIDR block such as 10.0.0.0/8").field_path(".cidr"),
    validation = Rule::new("!has(self.from) || (isIP(self.from) && isIP(self.to) && ip(self.from).family() == ip(self.to).family())").message("from and to must be IP addresses of the same family"),
    validation = Rule::new("!has(self.from) || !isIP(self.from) || !isIP(self.to) || ip(self.from).family() != 4 || ip(self.to).family() != 4 || int(self.from.split('.')[0]) * 16777216 + int(self.from.split('.')[1]) * 65536 + int(self.from.split('.')[2]) * 256 + int(self.from.split('.')[3]) <= int(self.to.split('.')[0]) * 16777216 + int(self.to.split('.')[1]) * 65536 + int(self.to.split('.')[2]) * 256 + int(self.to.split('.')[3])").message("from must not be greater than to"),
)]
pub struct IpRange {
    /// A CIDR block, IPv4 or IPv6 (`10.20.0.0/16`, `2001:db8::/32`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub cidr: Option<String>,
    /// First address of the range (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 45))]
    pub from: Option<String>,
    /// Last address of the range (inclusive), not lower than `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 45))]
    pub to: Option<String>,
}

/// A profile's rate limit and quota: at least one of `requestsPerMinute` and `quota`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.requestsPerMinute) || has(self.quota)").message("spec.rateLimit must set requestsPerMinute, quota or both"),
)]
pub struct RateLimit {
    /// Hits per rolling minute across every ApiRoute using this profile (for the profile, or
    /// for each consumer: `per`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000000))]
    pub requests_per_minute: Option<u32>,
    /// Whom the per-minute limit and the quota count: `Profile` (default) every hit through
    /// the profile as a whole, `Consumer` each consumer on its own — the identity the profile
    /// established: the Basic username, the API key, the token's subject (or client), the
    /// signature's key id, the certificate's subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<LimitPer>,
    /// Hits per calendar period (UTC) across every ApiRoute using this profile (for the
    /// profile, or for each consumer: `per`). Counted only in the shared limits store (Helm
    /// `sidecar.limitsStore.url`), so a profile with a quota is refused when the operator has
    /// no limits store configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
    /// With a shared limits store (`--limits-store`), what the per-minute limit and the quota
    /// do while the store is unavailable: `LocalShare` (default) has each sidecar enforce
    /// each of them divided by the sidecars serving the profile (rounded up), `Allow` admits
    /// calls without counting, `Deny` refuses them with 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_store_unavailable: Option<StoreFallback>,
}

/// Whom the per-minute limit and the quota count: the profile as a whole (`Profile`, the
/// default), or each consumer on its own (`Consumer`) — the identity the profile established:
/// the Basic username, the API key, the token's subject (or client), the signature's key id,
/// the certificate's subject.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum LimitPer {
    /// Every hit through the profile, whoever makes it.
    #[default]
    Profile,
    /// Each consumer on its own (the identity the profile established).
    Consumer,
}

/// Hits admitted per calendar period.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Quota {
    /// Hits admitted per period.
    #[schemars(range(min = 1, max = 1000000000))]
    pub requests: u32,
    /// The calendar period, in UTC: `Hour` (from the full hour), `Day` (from midnight) or
    /// `Month` (from the first of the month).
    pub period: QuotaPeriod,
}

/// A calendar period, in UTC: `Hour` (from the full hour), `Day` (from midnight) or `Month`
/// (from the first of the month).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum QuotaPeriod {
    /// From the full hour to the next.
    Hour,
    /// From midnight to midnight.
    Day,
    /// From the first of the month to the first of the next.
    Month,
}

/// What a rate limit does while the shared limits store is unavailable.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum StoreFallback {
    /// Each sidecar enforces its share of the limit.
    #[default]
    LocalShare,
    /// Admit without counting.
    Allow,
    /// Refuse with 503.
    Deny,
}

/// Audit settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Audit {
    /// Log this request header's value as the identity instead of the username, key or
    /// subject (useful when one application key is shared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"), length(max = 128))]
    pub identity_header: Option<String>,
}

/// Observed state of a SecurityProfile.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecurityProfileStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions: `Accepted` and `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// ApiRoutes that use this profile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
}
