//! Credentials toward an origin (`backend.origin.auth`), added to every call the sidecar
//! forwards to a remote origin, from the inbound listeners (gateway mode) and from the egress
//! listener (`egress: true` routes) alike:
//!
//! - `Basic`: `Authorization: Basic ...` from the route's Secret, replacing any the client sent.
//! - `SharedSecret`: the `apikey` and `sig` query parameters (names from the configuration),
//!   `sig = hex(MD5|SHA256(apikey + secret + unixSeconds))`, computed per request, replacing
//!   any the client sent.
//! - `HttpSignature`: an RFC 9421 (`Signature-Input` / `Signature`, label `sig1`) or
//!   draft-cavage-10 (`Signature`) signature made with the route's key, over the configured
//!   components (default `@method @target-uri @authority content-digest`, resp.
//!   `(request-target) host date digest`). `Date` is added when missing. When a digest
//!   (`content-digest`, `digest`) is covered the body is buffered, up to
//!   `--max-signed-body-bytes` (default 1 MiB); a larger one is answered 413. Otherwise the
//!   body streams. Signature headers the client sent are removed.
//! - `OAuth2ClientCredentials`: a bearer token from the route's token endpoint ([`TokenSource`]),
//!   cached until shortly before it expires and refreshed by one request at a time. When the
//!   origin answers 401, the token is dropped and the call is sent once more with a fresh
//!   token — only when the body can be replayed: an empty body, or one whose declared length
//!   is at most `--max-signed-body-bytes` (buffered for that purpose). A streamed body is not
//!   replayed: the 401 goes back to the client, and the next call gets a fresh token. A token
//!   endpoint that is down, slow or refusing gives 503 within a bounded time.
//!
//! Everything is built when the configuration is compiled ([`OriginCredentials::build`]):
//! keys are parsed once, and a configuration whose credentials cannot be used is refused with
//! a message naming the route (the last good configuration keeps serving). No secret, key or
//! token is ever logged, and no error message carries one.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http::header::{AUTHORIZATION, CONTENT_LENGTH, DATE};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use http_body::Body;
use http_body_util::BodyExt;
use portcullis_config::{OriginAuth, OriginAuthSecrets, SignatureAlgorithm, SignatureHash, SignatureStandard};
use portcullis_signatures::cavage::{self, AlgorithmName};
use portcullis_signatures::digest::{self, DigestAlgorithm};
use portcullis_signatures::rfc9421;
use portcullis_signatures::{Algorithm, Key, MasheryHash, Message, mashery_sig};

use crate::base::body::{BodyError, BodyStalled, BufferLease, OverBudget, ProxyBody, full, leased};
use crate::base::clock::unix_secs;
use crate::base::form::{form_encode, percent_decode};
use crate::identity::client::IdpError;

pub use crate::identity::origin_token::{Token, TokenSource};

/// Default of `--max-signed-body-bytes`: 1 MiB.
pub const DEFAULT_MAX_SIGNED_BODY_BYTES: u64 = 1024 * 1024;

static MAX_SIGNED_BODY_BYTES: AtomicU64 = AtomicU64::new(DEFAULT_MAX_SIGNED_BODY_BYTES);

/// Sets the largest body buffered to be signed (or replayed), from `--max-signed-body-bytes`.
/// Read when a configuration is compiled.
pub fn set_max_signed_body_bytes(bytes: u64) {
    MAX_SIGNED_BODY_BYTES.store(bytes, Ordering::Relaxed);
}

/// The largest body buffered to be signed (or replayed).
pub fn max_signed_body_bytes() -> u64 {
    MAX_SIGNED_BODY_BYTES.load(Ordering::Relaxed)
}

/// The label of the RFC 9421 signature the sidecar adds.
pub const SIGNATURE_LABEL: &str = "sig1";
/// Default RFC 9421 components.
pub const DEFAULT_RFC9421_COMPONENTS: [&str; 4] = ["@method", "@target-uri", "@authority", "content-digest"];
/// Default draft-cavage headers.
pub const DEFAULT_CAVAGE_HEADERS: [&str; 4] = ["(request-target)", "host", "date", "digest"];

const SIGNATURE: HeaderName = HeaderName::from_static("signature");
const SIGNATURE_INPUT: HeaderName = HeaderName::from_static("signature-input");
const CONTENT_DIGEST: HeaderName = HeaderName::from_static("content-digest");
const DIGEST: HeaderName = HeaderName::from_static("digest");

/// What building the credentials needs besides the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Time allowed for a whole token request (and for reading a body to buffer).
    pub timeout: Duration,
    /// Largest body buffered to be signed or replayed.
    pub max_body: u64,
}

/// Why a call could not be given its credentials.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The body is larger than `--max-signed-body-bytes` and must be buffered.
    #[error("request body larger than {limit} bytes cannot be signed")]
    BodyTooLarge { limit: u64 },
    /// The bodies held in memory are at `--body-buffer-budget`.
    #[error("request body cannot be held: {0}")]
    Busy(#[from] OverBudget),
    /// The request body could not be read (the client went away or was too slow).
    #[error("request body could not be read: {0}")]
    RequestBody(String),
    /// The client stopped sending the body (`--body-read-timeout`).
    #[error(transparent)]
    Stalled(#[from] BodyStalled),
    /// The request lacks something the signature must cover.
    #[error("request cannot be signed: {0}")]
    Sign(#[from] portcullis_signatures::Error),
    /// No token could be obtained.
    #[error("no token for the origin: {0}")]
    Token(#[from] IdpError),
}

/// A route's credentials toward its origin, built at compile time.
#[derive(Default)]
pub struct OriginCredentials {
    kind: Kind,
    max_body: u64,
    body_timeout: Duration,
}

#[derive(Default)]
enum Kind {
    #[default]
    None,
    Basic(HeaderValue),
    SharedSecret(SharedSecret),
    Signature(Box<Signer>),
    OAuth2(Arc<TokenSource>),
}

impl std::fmt::Debug for OriginCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::None => "none",
            Kind::Basic(_) => "basic",
            Kind::SharedSecret(_) => "sharedSecret",
            Kind::Signature(_) => "httpSignature",
            Kind::OAuth2(_) => "oauth2ClientCredentials",
        };
        f.debug_struct("OriginCredentials")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

struct SharedSecret {
    hash: MasheryHash,
    key_param: String,
    sig_param: String,
    apikey: String,
    secret: portcullis_config::Sensitive,
}

struct Signer {
    standard: SignatureStandard,
    key_id: String,
    alg: Algorithm,
    key: Key,
    components: Vec<String>,
    content_digest: bool,
    digest: bool,
}

/// The request as it goes out: its body, and what a retry after a 401 needs.
pub struct Outgoing {
    /// The body to send.
    pub body: ProxyBody,
    /// OAuth2: the token sent, and the body again when it can be replayed.
    pub retry: Option<Retry>,
}

/// What an OAuth2 call needs to be retried after a 401.
pub struct Retry {
    /// The token the call carried.
    pub token: Arc<Token>,
    /// The whole body, when it can be sent again.
    pub body: Option<Bytes>,
    /// Its share of the body budget, held as long as the body may be sent again.
    pub _lease: BufferLease,
}

impl OriginCredentials {
    /// Builds the credentials of `route` from its `backend.origin.auth` and their secret half.
    /// The error names what is wrong, never a secret.
    pub fn build(
        route: &str,
        auth: Option<&OriginAuth>,
        secrets: Option<&OriginAuthSecrets>,
        opts: &Options,
    ) -> Result<Self, String> {
        let kind = match (auth, secrets) {
            (None, _) => Kind::None,
            (Some(OriginAuth::Basic), Some(OriginAuthSecrets::Basic { username, password })) => {
                let raw = format!("{username}:{}", password.expose());
                let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw));
                let mut v = HeaderValue::from_str(&value)
                    .map_err(|_| "backend.origin.auth.basic: the username cannot be sent in a header".to_owned())?;
                v.set_sensitive(true);
                Kind::Basic(v)
            }
            (
                Some(OriginAuth::SharedSecret {
                    algorithm,
                    key_param,
                    sig_param,
                }),
                Some(OriginAuthSecrets::SharedSecret { apikey, secret }),
            ) => {
                if key_param.is_empty() || sig_param.is_empty() || key_param == sig_param {
                    return Err("backend.origin.auth.sharedSecret: keyParam and sigParam must be two names".into());
                }
                if apikey.is_empty() {
                    return Err("backend.origin.auth.sharedSecret: the apikey is empty".into());
                }
                Kind::SharedSecret(SharedSecret {
                    hash: match algorithm {
                        SignatureHash::MD5 => MasheryHash::Md5,
                        SignatureHash::SHA256 => MasheryHash::Sha256,
                    },
                    key_param: key_param.clone(),
                    sig_param: sig_param.clone(),
                    apikey: apikey.clone(),
                    secret: secret.clone(),
                })
            }
            (
                Some(OriginAuth::HttpSignature {
                    key_id,
                    algorithm,
                    standard,
                    components,
                }),
                Some(OriginAuthSecrets::HttpSignature { key }),
            ) => Kind::Signature(Box::new(Signer::build(
                key_id,
                *algorithm,
                *standard,
                components,
                key.expose(),
            )?)),
            (
                Some(OriginAuth::OAuth2ClientCredentials {
                    token_url,
                    scopes,
                    audience,
                }),
                Some(OriginAuthSecrets::OAuth2ClientCredentials {
                    client_id,
                    client_secret,
                }),
            ) => Kind::OAuth2(TokenSource::shared(
                route,
                token_url,
                scopes,
                audience.as_deref(),
                client_id,
                client_secret,
                opts.timeout,
            )?),
            (Some(a), Some(_)) => {
                return Err(format!(
                    "backend.origin.auth.{}: the credentials in the Secret are of another kind",
                    auth_name(a)
                ));
            }
            (Some(a), None) => {
                return Err(format!(
                    "backend.origin.auth.{}: no credentials in the secret material",
                    auth_name(a)
                ));
            }
        };
        Ok(Self {
            kind,
            max_body: opts.max_body,
            body_timeout: opts.timeout,
        })
    }

    /// Whether the route adds credentials.
    pub fn is_configured(&self) -> bool {
        !matches!(self.kind, Kind::None)
    }

    /// Adds the credentials to the outgoing request (`parts` already aimed at the origin,
    /// `Host` set) and returns the body to send with it.
    pub async fn apply<B>(
        &self,
        parts: &mut http::request::Parts,
        body: B,
        scheme: &str,
    ) -> Result<Outgoing, CredentialError>
    where
        B: Body<Data = Bytes, Error = BodyError> + Send + 'static,
    {
        match &self.kind {
            Kind::None => Ok(streamed(body)),
            Kind::Basic(value) => {
                parts.headers.insert(AUTHORIZATION, value.clone());
                Ok(streamed(body))
            }
            Kind::SharedSecret(s) => {
                let sig = mashery_sig(s.hash, &s.apikey, s.secret.expose(), unix_secs());
                parts.uri = with_query_params(&parts.uri, &[(&s.key_param, &s.apikey), (&s.sig_param, &sig)])
                    .map_err(|e| CredentialError::RequestBody(format!("cannot rewrite the query: {e}")))?;
                Ok(streamed(body))
            }
            Kind::Signature(signer) => {
                let now = unix_secs();
                if signer.needs_body() {
                    let (bytes, lease) = self.buffer(&parts.headers, body).await?;
                    signer.sign(parts, Some(&bytes), scheme, now)?;
                    set_length(&mut parts.headers, bytes.len());
                    Ok(Outgoing {
                        body: leased(bytes, lease),
                        retry: None,
                    })
                } else {
                    signer.sign(parts, None, scheme, now)?;
                    Ok(streamed(body))
                }
            }
            Kind::OAuth2(source) => {
                // Buffer what can be replayed after a 401 (before asking for a token: a body
                // too slow to arrive must not hold a token request).
                let replay = if body.is_end_stream() {
                    Some((Bytes::new(), BufferLease::default()))
                } else {
                    match body.size_hint().exact() {
                        Some(n) if n <= self.max_body => None,
                        _ => {
                            let token = source.token(None).await?;
                            token.apply(&mut parts.headers);
                            return Ok(Outgoing {
                                body: body.boxed_unsync(),
                                retry: Some(Retry {
                                    token,
                                    body: None,
                                    _lease: BufferLease::default(),
                                }),
                            });
                        }
                    }
                };
                let (bytes, lease) = match replay {
                    Some(b) => b,
                    None => self.buffer(&parts.headers, body).await?,
                };
                let token = source.token(None).await?;
                token.apply(&mut parts.headers);
                Ok(Outgoing {
                    body: full(bytes.clone()),
                    retry: Some(Retry {
                        token,
                        body: Some(bytes),
                        _lease: lease,
                    }),
                })
            }
        }
    }

    /// The origin refused `retry.token` with a 401: drops it and, when the body can be
    /// replayed, returns a fresh token to send the call once more with.
    pub async fn after_unauthorized(&self, retry: &Retry) -> Result<Option<Arc<Token>>, CredentialError> {
        let Kind::OAuth2(source) = &self.kind else {
            return Ok(None);
        };
        source.invalidate(&retry.token);
        if retry.body.is_none() {
            return Ok(None);
        }
        Ok(Some(source.token(Some(&retry.token)).await?))
    }

    /// Reads the whole body, at most `max_body` bytes, within the body timeout and the memory
    /// budget of held bodies (whose share it returns with the bytes).
    async fn buffer<B>(&self, headers: &HeaderMap, body: B) -> Result<(Bytes, BufferLease), CredentialError>
    where
        B: Body<Data = Bytes, Error = BodyError>,
    {
        let limit = self.max_body;
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) || body.size_hint().lower() > limit {
            return Err(CredentialError::BodyTooLarge { limit });
        }
        let read = async {
            let mut body = pin!(body);
            let mut buf = BytesMut::new();
            let mut lease = BufferLease::default();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| match e {
                    BodyError::Stalled(stalled) => CredentialError::Stalled(stalled),
                    BodyError::Peer(e) => CredentialError::RequestBody(e.to_string()),
                    // (A request body is never the app's answer.)
                    BodyError::App(e) => CredentialError::RequestBody(e.to_string()),
                })?;
                if let Ok(data) = frame.into_data() {
                    if (buf.len() + data.len()) as u64 > limit {
                        return Err(CredentialError::BodyTooLarge { limit });
                    }
                    lease.grow(data.len())?;
                    buf.extend_from_slice(&data);
                }
            }
            Ok((buf.freeze(), lease))
        };
        match tokio::time::timeout(self.body_timeout, read).await {
            Ok(r) => r,
            Err(_) => Err(CredentialError::RequestBody(format!(
                "not received within {:?}",
                self.body_timeout
            ))),
        }
    }
}

fn streamed<B>(body: B) -> Outgoing
where
    B: Body<Data = Bytes, Error = BodyError> + Send + 'static,
{
    Outgoing {
        body: body.boxed_unsync(),
        retry: None,
    }
}

fn set_length(headers: &mut HeaderMap, len: usize) {
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
}

fn auth_name(a: &OriginAuth) -> &'static str {
    match a {
        OriginAuth::Basic => "basic",
        OriginAuth::SharedSecret { .. } => "sharedSecret",
        OriginAuth::HttpSignature { .. } => "httpSignature",
        OriginAuth::OAuth2ClientCredentials { .. } => "oauth2ClientCredentials",
    }
}

/// The name of a component, lower-cased, without parameters (`"content-digest";sf` →
/// `content-digest`).
fn component_name(c: &str) -> String {
    let c = c.trim();
    let name = if let Some(rest) = c.strip_prefix('"') {
        rest.split('"').next().unwrap_or("")
    } else {
        c.split(';').next().unwrap_or("")
    };
    name.to_ascii_lowercase()
}

impl Signer {
    fn build(
        key_id: &str,
        alg: SignatureAlgorithm,
        standard: SignatureStandard,
        components: &[String],
        secret: &str,
    ) -> Result<Self, String> {
        let what = "backend.origin.auth.httpSignature";
        let alg = portcullis_policy::signature::algorithm(alg);
        if key_id.is_empty() {
            return Err(format!("{what}: keyId is empty"));
        }
        let key = Key::from_secret(secret.as_bytes()).map_err(|e| format!("{what}: the signing key: {e}"))?;
        if !key.can_sign() {
            return Err(format!(
                "{what}: the Secret holds a public key; signing needs the private key"
            ));
        }
        if !key.fits(alg) {
            return Err(format!(
                "{what}: algorithm {alg} does not fit the key ({:?})",
                key.kind()
            ));
        }
        let components: Vec<String> = if components.is_empty() {
            match standard {
                SignatureStandard::RFC9421 => DEFAULT_RFC9421_COMPONENTS.iter().map(|s| (*s).to_owned()).collect(),
                SignatureStandard::Cavage => DEFAULT_CAVAGE_HEADERS.iter().map(|s| (*s).to_owned()).collect(),
            }
        } else {
            components.to_vec()
        };
        let names: Vec<String> = components.iter().map(|c| component_name(c)).collect();
        let signer = Signer {
            standard,
            key_id: key_id.to_owned(),
            alg,
            key,
            content_digest: names.iter().any(|n| n == "content-digest"),
            digest: names.iter().any(|n| n == "digest"),
            components,
        };
        signer.dry_run(&names).map_err(|e| format!("{what}: {e}"))?;
        Ok(signer)
    }

    fn needs_body(&self) -> bool {
        self.content_digest || self.digest
    }

    /// Signs a made-up request carrying every covered header, so that a configuration whose
    /// components or key cannot work is refused when it is compiled, not on every call.
    fn dry_run(&self, names: &[String]) -> Result<(), portcullis_signatures::Error> {
        let mut parts = http::Request::post("http://origin.invalid/dry-run?x=1")
            .header(http::header::HOST, "origin.invalid")
            .body(())
            .expect("static request")
            .into_parts()
            .0;
        for n in names {
            if !n.starts_with('@')
                && !n.starts_with('(')
                && let Ok(name) = HeaderName::from_bytes(n.as_bytes())
                && !parts.headers.contains_key(&name)
            {
                parts.headers.insert(name, HeaderValue::from_static("x"));
            }
        }
        match self.sign(&mut parts, Some(b""), "http", unix_secs()) {
            // Depends on the request (e.g. a query parameter it may carry).
            Err(portcullis_signatures::Error::MissingComponent(_)) => Ok(()),
            other => other,
        }
    }

    /// Adds `Date` when missing, the digests it covers, and the signature.
    fn sign(
        &self,
        parts: &mut http::request::Parts,
        body: Option<&[u8]>,
        scheme: &str,
        now: u64,
    ) -> Result<(), portcullis_signatures::Error> {
        let headers = &mut parts.headers;
        headers.remove(SIGNATURE);
        headers.remove(SIGNATURE_INPUT);
        if !headers.contains_key(DATE)
            && let Ok(v) = HeaderValue::from_str(&portcullis_signatures::http_date(now))
        {
            headers.insert(DATE, v);
        }
        let body = body.unwrap_or_default();
        if self.content_digest
            && let Ok(v) = HeaderValue::from_str(&digest::content_digest(DigestAlgorithm::Sha256, body))
        {
            headers.insert(CONTENT_DIGEST, v);
        }
        if self.digest
            && let Ok(v) = HeaderValue::from_str(&digest::digest_header(DigestAlgorithm::Sha256, body))
        {
            headers.insert(DIGEST, v);
        }
        let components: Vec<&str> = self.components.iter().map(String::as_str).collect();
        let msg = Message::from_parts(&parts.method, &parts.uri, &parts.headers, scheme);
        match self.standard {
            SignatureStandard::RFC9421 => {
                let params = rfc9421::SignParams::new(SIGNATURE_LABEL, &self.key_id, self.alg, now, &components);
                let signed = rfc9421::sign(&msg, &self.key, &params)?;
                signed.apply(&mut parts.headers)
            }
            SignatureStandard::Cavage => {
                let created = components.iter().any(|c| c.eq_ignore_ascii_case("(created)"));
                let expires = components.iter().any(|c| c.eq_ignore_ascii_case("(expires)"));
                let params = cavage::SignParams {
                    key_id: &self.key_id,
                    alg: self.alg,
                    algorithm_name: AlgorithmName::Legacy,
                    headers: &components,
                    created: (created || expires).then_some(now),
                    expires: expires.then_some(now + 300),
                };
                let signed = cavage::sign(&msg, &self.key, &params)?;
                let v = HeaderValue::from_str(signed.signature_header())
                    .map_err(|_| portcullis_signatures::Error::InvalidParams("signature header".into()))?;
                parts.headers.insert(SIGNATURE, v);
                Ok(())
            }
        }
    }
}

/// `uri` with the `(name, value)` query parameters set: any parameter of the same names is
/// removed, the new ones are appended (percent-encoded).
pub fn with_query_params(uri: &Uri, params: &[(&str, &str)]) -> Result<Uri, http::Error> {
    let names: Vec<&str> = params.iter().map(|(n, _)| *n).collect();
    let mut query = query_without(uri, &names);
    for (n, v) in params {
        query.push(format!("{}={}", form_encode(n), form_encode(v)));
    }
    set_query(uri, &query)
}

/// `uri` without the query parameters named `names` (compared after percent-decoding, as
/// the policy engine reads them); `uri` itself when it has none of them.
pub fn without_query_params(uri: &Uri, names: &[&str]) -> Result<Uri, http::Error> {
    let Some(q) = uri.query() else {
        return Ok(uri.clone());
    };
    let kept = query_without(uri, names);
    if kept.len() == q.split('&').filter(|p| !p.is_empty()).count() {
        return Ok(uri.clone());
    }
    set_query(uri, &kept)
}

/// The query's parameters, in order, but those named `names`.
fn query_without(uri: &Uri, names: &[&str]) -> Vec<String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let name = p.split('=').next().unwrap_or("");
            !names.contains(&percent_decode(name).as_str())
        })
        .map(str::to_owned)
        .collect()
}

fn set_query(uri: &Uri, query: &[String]) -> Result<Uri, http::Error> {
    let pq = if query.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), query.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq)?);
    Ok(Uri::from_parts(parts)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_replace_the_clients() {
        let uri: Uri = "http://o/p/q?a=1&apikey=evil&sig=x&b=2".parse().unwrap();
        let out = with_query_params(&uri, &[("apikey", "k 1"), ("sig", "abc")]).unwrap();
        assert_eq!(out.to_string(), "http://o/p/q?a=1&b=2&apikey=k%201&sig=abc");
        let uri: Uri = "http://o/".parse().unwrap();
        let out = with_query_params(&uri, &[("apikey", "k"), ("sig", "s")]).unwrap();
        assert_eq!(out.to_string(), "http://o/?apikey=k&sig=s");
        let uri: Uri = "http://o/x?api%6Bey=evil".parse().unwrap();
        let out = with_query_params(&uri, &[("apikey", "k")]).unwrap();
        assert_eq!(out.query(), Some("apikey=k"));
    }

    #[test]
    fn query_params_are_removed_by_decoded_name() {
        let uri: Uri = "http://o/p?a=1&apikey=k&api%6Bey=k2&sig=s&b=2".parse().unwrap();
        let out = without_query_params(&uri, &["apikey", "sig"]).unwrap();
        assert_eq!(out.to_string(), "http://o/p?a=1&b=2");
        let uri: Uri = "http://o/p?apikey=k".parse().unwrap();
        assert_eq!(
            without_query_params(&uri, &["apikey"]).unwrap().to_string(),
            "http://o/p"
        );
        let uri: Uri = "http://o/p?a=1".parse().unwrap();
        assert_eq!(without_query_params(&uri, &["apikey"]).unwrap(), uri);
    }

    #[test]
    fn component_names() {
        assert_eq!(component_name("Content-Digest"), "content-digest");
        assert_eq!(component_name("\"content-digest\";sf"), "content-digest");
        assert_eq!(component_name("@method"), "@method");
        assert_eq!(component_name("digest"), "digest");
    }

    fn opts() -> Options {
        Options {
            timeout: Duration::from_secs(1),
            max_body: 16,
        }
    }

    #[test]
    fn refused_configurations_name_the_problem() {
        let sig = |alg: SignatureAlgorithm, components: Vec<String>| OriginAuth::HttpSignature {
            key_id: "gw".into(),
            algorithm: alg,
            standard: SignatureStandard::RFC9421,
            components,
        };
        let secret = |s: &str| OriginAuthSecrets::HttpSignature {
            key: s.to_owned().into(),
        };
        let err = OriginCredentials::build(
            "r",
            Some(&sig(SignatureAlgorithm::Ed25519, vec![])),
            Some(&secret("hmac secret")),
            &opts(),
        )
        .unwrap_err();
        assert!(err.contains("does not fit"), "{err}");
        assert!(!err.contains("hmac secret"));
        let err = OriginCredentials::build(
            "r",
            Some(&sig(SignatureAlgorithm::HmacSha256, vec!["@bogus".into()])),
            Some(&secret("s")),
            &opts(),
        )
        .unwrap_err();
        assert!(err.contains("@bogus"), "{err}");
        let err = OriginCredentials::build("r", Some(&OriginAuth::Basic), Some(&secret("s")), &opts()).unwrap_err();
        assert!(err.contains("another kind"), "{err}");
        assert!(
            OriginCredentials::build(
                "r",
                Some(&sig(SignatureAlgorithm::HmacSha256, vec![])),
                Some(&secret("s")),
                &opts()
            )
            .is_ok()
        );
    }

    #[tokio::test]
    async fn large_bodies_are_refused_before_reading() {
        let creds = OriginCredentials::build(
            "r",
            Some(&OriginAuth::HttpSignature {
                key_id: "gw".into(),
                algorithm: SignatureAlgorithm::HmacSha256,
                standard: SignatureStandard::Cavage,
                components: vec![],
            }),
            Some(&OriginAuthSecrets::HttpSignature {
                key: "k".to_owned().into(),
            }),
            &opts(),
        )
        .unwrap();
        let body = http_body_util::Full::new(Bytes::from(vec![b'x'; 17])).map_err(|never| match never {});
        let (mut parts, ()) = http::Request::post("http://o/x")
            .header("host", "o")
            .body(())
            .unwrap()
            .into_parts();
        let err = creds.apply(&mut parts, body, "http").await.err().unwrap();
        assert!(matches!(err, CredentialError::BodyTooLarge { limit: 16 }), "{err}");

        let body = http_body_util::Full::new(Bytes::from_static(b"hello")).map_err(|never| match never {});
        let out = creds.apply(&mut parts, body, "http").await.ok().unwrap();
        assert!(out.retry.is_none());
        assert_eq!(parts.headers["content-length"], "5");
        assert!(parts.headers.contains_key("date"));
        assert!(parts.headers["digest"].to_str().unwrap().starts_with("SHA-256="));
        assert!(
            parts.headers["signature"]
                .to_str()
                .unwrap()
                .contains("headers=\"(request-target) host date digest\"")
        );
    }
}
