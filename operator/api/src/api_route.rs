//! `ApiRoute`: one API, how consumers reach it and where calls go.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{SecretRef, SignatureAlgorithm, SignatureHash, SignatureStandard};

/// An API route: the hosts and path consumers call, the security profiles that admit them,
/// and the backend calls are forwarded to (the app in the same pod, or a remote origin).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "portcullis.dev",
    version = "v1alpha1",
    kind = "ApiRoute",
    plural = "apiroutes",
    shortname = "ar",
    category = "portcullis",
    namespaced,
    status = "ApiRouteStatus",
    derive = "PartialEq",
    doc = "An ApiRoute is one API: the hosts and path consumers call, the profiles that admit them, and the backend.",
    printcolumn = r#"{"name":"Hosts","type":"string","jsonPath":".spec.hosts"}"#,
    printcolumn = r#"{"name":"Path","type":"string","jsonPath":".spec.pathPrefix"}"#,
    printcolumn = r#"{"name":"Profiles","type":"string","jsonPath":".spec.profiles[*].name"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.profiles) || self.profiles.all(p, self.profiles.exists_one(q, q.name == p.name))").message("a profile may be listed only once").field_path(".profiles").reason(kube::core::Reason::FieldValueDuplicate),
    validation = Rule::new("!self.egress || has(self.backend.origin)").message("egress routes need backend.origin").field_path(".egress"),
    validation = Rule::new("!self.sslOnly || has(self.tls)").message("sslOnly needs tls (a certificate for the hosts)").field_path(".sslOnly"),
)]
pub struct ApiRouteSpec {
    /// Pods whose sidecars serve this route (labels in the route's namespace).
    pub workload_selector: LabelSelector,
    /// Host names consumers call (exact, or `*.example.com` for one level of subdomain).
    /// Empty: any Host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(
            regex(pattern = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"),
            length(max = 253)
        )
    )]
    pub hosts: Vec<String>,
    /// Path prefix of the API, matched on segment boundaries against the request path in its
    /// normal form; the longest matching prefix wins. Default `/`.
    #[serde(default = "default_path_prefix")]
    #[schemars(regex(pattern = r"^/[^?#\s]*$"), length(max = 1024))]
    pub path_prefix: String,
    /// Match `pathPrefix` without regard to ASCII letter case (`/Admin/x` then matches
    /// `/admin`). Default false: paths match in their exact case, and a path that differs from
    /// a more specific route's prefix only in case is refused (400) rather than served by a
    /// broader route. Paths are matched in their normal form either way (docs/api.md, "Path
    /// normal form").
    #[serde(default)]
    pub case_insensitive: bool,
    /// HTTP methods served; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(regex(pattern = r"^[A-Z]+$"), length(max = 16)))]
    pub methods: Vec<String>,
    /// Security profiles (same namespace) that may admit a call; the first that admits it
    /// wins. Empty: anonymous. Types are never mixed; several Basic, ApiKey, HttpSignature or
    /// ClientCertificate profiles are allowed, at most one OAuth2 and one Anonymous.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub profiles: Vec<ProfileRef>,
    /// Plain-HTTP requests get a 308 redirect to the https URL; TLS responses carry
    /// Strict-Transport-Security.
    #[serde(default)]
    pub ssl_only: bool,
    /// Client-facing TLS for `hosts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RouteTls>,
    /// Where calls go: exactly one of `port` or `origin`.
    pub backend: Backend,
    /// Serve this route on the sidecar's loopback egress listener, for calls the app itself
    /// makes to `backend.origin`.
    #[serde(default)]
    pub egress: bool,
}

fn default_path_prefix() -> String {
    "/".to_owned()
}

/// A reference to a SecurityProfile in the route's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileRef {
    /// Name of the SecurityProfile.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Client-facing TLS.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretName) != (has(self.issue) && self.issue)").message("tls needs exactly one of secretName or issue: true"))]
pub struct RouteTls {
    /// A `kubernetes.io/tls` Secret (certificate chain included) for the route's hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
    /// The operator's CA issues and rotates a certificate for the route's hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue: Option<bool>,
}

/// The backend of a route.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.port) != has(self.origin)").message("backend needs exactly one of port or origin"))]
pub struct Backend {
    /// The app in the same pod, at `127.0.0.1:<port>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// A remote origin (gateway mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// A remote origin.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.url.startsWith('http://') || !has(self.tls) || self.tls.mode == 'None'").message("an http:// origin cannot use tls mode Verify or Mutual"))]
pub struct Origin {
    /// Base URL of the origin (`https://backend.example.com`, optionally with a path prefix).
    #[schemars(regex(pattern = r"^https?://[^\s/?#]+(/[^\s?#]*)?$"), length(max = 2048))]
    pub url: String,
    /// TLS toward the origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<OriginTls>,
    /// Credentials added to every forwarded call (at most one kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<OriginAuth>,
    /// Pass the client's credentials that the route's profiles consumed (`Authorization`, API
    /// key header and parameters, signatures) on to the origin. Default false: they are
    /// removed, since they were meant for the sidecar, not for a third party.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pass_credentials: bool,
}

/// TLS toward an origin.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode != 'Mutual' || has(self.clientCertificate)").message("tls mode Mutual needs clientCertificate").field_path(".clientCertificate"))]
pub struct OriginTls {
    /// None: no certificate verification (https still encrypts); Verify: verify the origin's
    /// certificate and host name; Mutual: Verify and present a client certificate. Default
    /// Verify.
    #[serde(default)]
    pub mode: OriginTlsMode,
    /// Secret with the CA bundle (key `ca.crt`) to verify the origin; default: system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretRef>,
    /// The client certificate presented in Mutual mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<RouteTls>,
}

/// How the sidecar uses TLS toward an origin.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum OriginTlsMode {
    /// Do not verify the origin's certificate.
    None,
    /// Verify the origin's certificate and host name.
    #[default]
    Verify,
    /// Verify, and present a client certificate.
    Mutual,
}

/// Credentials added to calls toward the origin.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.basic), has(self.sharedSecret), has(self.httpSignature), has(self.oauth2ClientCredentials)].filter(x, x).size() == 1").message("origin auth needs exactly one of basic, sharedSecret, httpSignature, oauth2ClientCredentials"))]
pub struct OriginAuth {
    /// HTTP Basic from a `kubernetes.io/basic-auth` Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<OriginBasic>,
    /// Mashery-style `apikey` and `sig` query parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_secret: Option<OriginSharedSecret>,
    /// A signed request (RFC 9421 or draft-cavage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_signature: Option<OriginHttpSignature>,
    /// A bearer token from an OAuth 2.0 client-credentials grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2_client_credentials: Option<OriginOAuth2ClientCredentials>,
}

/// Basic credentials toward the origin.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OriginBasic {
    /// A `kubernetes.io/basic-auth` Secret.
    pub secret_ref: SecretRef,
}

/// Shared-secret signature toward the origin.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OriginSharedSecret {
    /// Secret with keys `apikey` and `secret`.
    pub secret_ref: SecretRef,
    /// Hash algorithm. Default MD5.
    #[serde(default)]
    pub algorithm: SignatureHash,
    /// Query parameter for the key. Default `apikey`.
    #[serde(default = "default_key_param")]
    #[schemars(length(min = 1, max = 128))]
    pub key_param: String,
    /// Query parameter for the signature. Default `sig`.
    #[serde(default = "default_sig_param")]
    #[schemars(length(min = 1, max = 128))]
    pub sig_param: String,
}

fn default_key_param() -> String {
    "apikey".to_owned()
}

fn default_sig_param() -> String {
    "sig".to_owned()
}

/// Request signing toward the origin.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OriginHttpSignature {
    /// Secret with key `key`: the HMAC secret or the PEM private key.
    pub secret_ref: SecretRef,
    /// keyId announced to the origin.
    #[schemars(length(min = 1, max = 256))]
    pub key_id: String,
    /// Signature algorithm.
    pub algorithm: SignatureAlgorithm,
    /// Signature standard. Default RFC9421.
    #[serde(default)]
    pub standard: SignatureStandard,
    /// Components to sign; default `@method`, `@target-uri`, `date`, and `content-digest`
    /// when there is a body.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 128)))]
    pub components: Vec<String>,
}

/// OAuth 2.0 client-credentials toward the origin.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("(has(self.allowHttp) && self.allowHttp) || self.tokenUrl.startsWith('https://')").message("tokenUrl must be https:// unless allowHttp is true").field_path(".tokenUrl"),
)]
pub struct OriginOAuth2ClientCredentials {
    /// Token endpoint.
    #[schemars(regex(pattern = r"^https?://"), length(max = 2048))]
    pub token_url: String,
    /// Secret with keys `clientId` and `clientSecret` (sent as client_secret_basic).
    pub client_secret_ref: SecretRef,
    /// Scopes requested.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub scopes: Vec<String>,
    /// Audience requested, for providers that need one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Permit an `http://` `tokenUrl`. Default false: the client secret and the token would
    /// travel in clear text.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_http: bool,
}

/// Observed state of an ApiRoute.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiRouteStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions: `Accepted` (with the reason and the field when the spec is
    /// invalid) and `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The configuration generation published for this route's sidecars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_generation: Option<String>,
    /// Selected sidecars that report the current configuration generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecars_current: Option<i32>,
    /// Selected sidecars in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecars_total: Option<i32>,
    /// Certificates the operator issued for this route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateStatus>,
}

/// A certificate issued for a route.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// The Secret holding it.
    pub secret_name: String,
    /// Expiry (RFC 3339).
    pub not_after: String,
    /// SHA-256 fingerprint of the DER certificate, hex.
    pub sha256_fingerprint: String,
}
