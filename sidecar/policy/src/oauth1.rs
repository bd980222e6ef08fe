//! OAuth1 profiles: requests signed as OAuth 1.0a says (RFC 5849 section 3), checked with
//! [`portcullis_signatures::oauth1`].
//!
//! Consumers are known by their key: a consumer secret (HMAC-SHA1, HMAC-SHA256, PLAINTEXT)
//! or an RSA public key (RSA-SHA1), parsed when the profile is compiled. Token credentials
//! (three-legged calls) belong to one consumer each. The caller is the consumer key.
//!
//! The timestamp must lie within the profile's window of the sidecar's clock, and the nonce
//! is remembered (per consumer, token and timestamp) in the profile's replay cache until the
//! timestamp leaves the window, like an HTTP message signature ([`crate::signature`]): only
//! once the call is otherwise admitted. PLAINTEXT is accepted only over HTTPS (as the
//! browser or client sees it: TLS here, or at a trusted proxy).
//!
//! A form body (`application/x-www-form-urlencoded`) is part of what is signed: the caller
//! reads it (bounded) before deciding and hands it over in [`RequestView::form`].

use std::collections::HashMap;
use std::sync::Arc;

use portcullis_config::{OAuth1Method, OAuth1Token, ProfileSecrets, ReplayFallback, Sensitive};
use portcullis_signatures::oauth1::{self, Credentials, Request, SignatureMethod};
use portcullis_signatures::{Error, Key, KeyKind, ReplayCache};
use sha2::{Digest, Sha256};

use crate::RequestView;
use crate::auth::Rejection;
use crate::signature::{BadKey, ReplayGuard, Signed};

/// The methods a profile that lists none accepts: PLAINTEXT only when listed.
const DEFAULT_METHODS: [SignatureMethod; 3] = [
    SignatureMethod::HmacSha1,
    SignatureMethod::HmacSha256,
    SignatureMethod::RsaSha1,
];

/// What a consumer signs with.
enum ConsumerKey {
    /// A consumer secret: the HMAC methods and PLAINTEXT.
    Shared(Sensitive),
    /// An RSA public key: RSA-SHA1.
    Rsa(Key),
}

/// An OAuth1 profile, compiled.
pub struct OAuth1 {
    methods: Box<[SignatureMethod]>,
    window: u64,
    require_token: bool,
    consumers: HashMap<String, ConsumerKey>,
    tokens: HashMap<String, OAuth1Token>,
    guard: ReplayGuard,
}

impl std::fmt::Debug for OAuth1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth1")
            .field("methods", &self.methods)
            .field("window", &self.window)
            .field("require_token", &self.require_token)
            .field("consumers", &self.consumers.len())
            .field("tokens", &self.tokens.len())
            .finish_non_exhaustive()
    }
}

impl OAuth1 {
    /// The profile with the consumers and tokens of `secrets`, parsed now (a value that
    /// starts with `-----BEGIN` is an RSA public key), its nonces remembered in `replays`
    /// (`fallback`: where, while a shared store is unavailable). Every token must belong to
    /// one of the consumers.
    pub fn new(
        methods: &[OAuth1Method],
        timestamp_window_seconds: u32,
        require_token: bool,
        secrets: &ProfileSecrets,
        replays: Arc<ReplayCache>,
        fallback: ReplayFallback,
    ) -> Result<Self, BadKey> {
        let methods: Box<[SignatureMethod]> = if methods.is_empty() {
            DEFAULT_METHODS.into()
        } else {
            methods.iter().map(|&m| method(m)).collect()
        };
        let consumers = secrets
            .oauth1_consumers
            .iter()
            .map(|(key, value)| {
                let text = value.expose();
                let parsed = if text.trim_start().starts_with("-----BEGIN") {
                    match Key::from_secret(text.as_bytes()) {
                        Ok(k) if k.kind() == KeyKind::Rsa => Ok(ConsumerKey::Rsa(k)),
                        Ok(_) => Err("an RSA-SHA1 consumer's key must be an RSA public key".to_owned()),
                        // Key errors name what is wrong, never the material.
                        Err(e) => Err(e.to_string()),
                    }
                } else if text.is_empty() {
                    Err("the consumer secret is empty".to_owned())
                } else {
                    Ok(ConsumerKey::Shared(value.clone()))
                };
                parsed.map(|k| (key.clone(), k)).map_err(|reason| BadKey {
                    key_id: key.clone(),
                    reason,
                })
            })
            .collect::<Result<HashMap<_, _>, _>>()?;
        for token in secrets.oauth1_tokens.values() {
            if !consumers.contains_key(&token.consumer_key) {
                return Err(BadKey {
                    key_id: token.consumer_key.clone(),
                    reason: "a token belongs to this consumer, which the profile does not have".into(),
                });
            }
        }
        let window = u64::from(timestamp_window_seconds);
        // A timestamp may be up to `window` ahead and is valid until `window` after it.
        let guard = ReplayGuard::new(replays, consumers.len(), 2 * window, fallback);
        Ok(Self {
            methods,
            window,
            require_token,
            consumers,
            tokens: secrets
                .oauth1_tokens
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            guard,
        })
    }

    /// Its replay protection.
    pub(crate) fn guard(&self) -> &ReplayGuard {
        &self.guard
    }

    /// Checks the request's OAuth 1.0a signature at `now_secs` (`https`: as the client
    /// reached us): the consumer key, and the signature to record against replay (none for a
    /// PLAINTEXT call without a nonce, which only HTTPS protects).
    pub(crate) fn check(
        &self,
        req: &RequestView<'_>,
        https: bool,
        now_secs: u64,
    ) -> Result<(String, Option<Signed>), Rejection> {
        let mut authorization = req.headers.get_all(http::header::AUTHORIZATION).iter();
        let header = authorization.next().and_then(|v| v.to_str().ok());
        if authorization.next().is_some() {
            return Err(Rejection::Wrong("more than one Authorization header"));
        }
        // Another scheme's credentials beside an OAuth signature would reach the app unchecked.
        if header.is_some_and(|h| !is_oauth_scheme(h)) {
            return Err(Rejection::Wrong("Authorization header of another scheme"));
        }
        if form_body(req.headers) == FormBody::Ambiguous {
            return Err(Rejection::Wrong("ambiguous Content-Type for a form body"));
        }
        let request = Request {
            method: req.method,
            scheme: if https { "https" } else { "http" },
            authority: req.authority.or(req.host).unwrap_or(""),
            path: req.path,
            query: req.query,
            authorization: header,
            form: req.form,
        };
        if !carries_oauth(&request) {
            return Err(Rejection::Missing("no OAuth 1.0a signature"));
        }
        let signed = oauth1::parse(&request).map_err(rejection)?;
        if !self.methods.contains(&signed.method) {
            return Err(Rejection::Wrong("signature method not allowed"));
        }
        if signed.method == SignatureMethod::Plaintext && !https {
            return Err(Rejection::Wrong("PLAINTEXT signature over plain HTTP"));
        }
        let unbound = signed.method == SignatureMethod::Plaintext && signed.nonce.is_empty();
        if !unbound && signed.timestamp.abs_diff(now_secs) > self.window {
            return Err(Rejection::Wrong("oauth_timestamp outside the allowed window"));
        }
        let consumer = self
            .consumers
            .get(&signed.consumer_key)
            .ok_or(Rejection::Wrong("unknown consumer key"))?;
        let token_secret = match &signed.token {
            Some(token) => match self.tokens.get(token) {
                Some(t) if t.consumer_key == signed.consumer_key => t.secret.expose(),
                _ => return Err(Rejection::Wrong("unknown token")),
            },
            None if self.require_token => return Err(Rejection::Wrong("token credentials required")),
            None => "",
        };
        let credentials = match (consumer, signed.method) {
            (ConsumerKey::Rsa(key), SignatureMethod::RsaSha1) => Credentials {
                consumer_secret: "",
                token_secret,
                rsa: Some(key),
            },
            (ConsumerKey::Shared(secret), m) if m != SignatureMethod::RsaSha1 => Credentials {
                consumer_secret: secret.expose(),
                token_secret,
                rsa: None,
            },
            _ => return Err(Rejection::Wrong("signature method does not fit the consumer's key")),
        };
        oauth1::verify(&request, &signed, &credentials, https).map_err(rejection)?;
        let replay = (!unbound).then(|| Signed {
            key_id: signed.consumer_key.clone(),
            replay_key: Sha256::digest(signed.replay_key().as_bytes()).into(),
            // Remembered past the last second it is admitted in (`timestamp + window`).
            valid_until: signed.timestamp.saturating_add(self.window).saturating_add(1),
            digest: None,
        });
        Ok((signed.consumer_key, replay))
    }
}

/// How the request's `Content-Type` speaks of a form body (RFC 5849 section 3.4.1.3.1: only
/// a single-part `application/x-www-form-urlencoded` body's parameters are signed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FormBody {
    /// No form.
    None,
    /// One `Content-Type` naming one media type, the form's: its parameters are signed.
    Form,
    /// The form's media type among others (two headers, a list): an app could read the body
    /// as a form whose parameters the signature would not cover. Refused.
    Ambiguous,
}

/// How `headers` speak of a form body.
pub(crate) fn form_body(headers: &http::HeaderMap) -> FormBody {
    let mut lines = 0;
    let mut types = 0;
    let mut form = false;
    for value in headers.get_all(http::header::CONTENT_TYPE) {
        lines += 1;
        // Bytes that are no text could hide anything: treated as a mention.
        let Ok(text) = value.to_str() else {
            form = true;
            types += 2;
            continue;
        };
        for media in text.split(',') {
            types += 1;
            let name = media.split(';').next().unwrap_or("").trim();
            form |= name.eq_ignore_ascii_case("application/x-www-form-urlencoded");
        }
    }
    match (form, lines == 1 && types == 1) {
        (false, _) => FormBody::None,
        (true, true) => FormBody::Form,
        (true, false) => FormBody::Ambiguous,
    }
}

/// Whether `headers` say the body is a signed form ([`FormBody::Form`]).
pub(crate) fn is_form(headers: &http::HeaderMap) -> bool {
    form_body(headers) == FormBody::Form
}

/// Whether the request carries OAuth protocol parameters at all (else it has no
/// credentials of this kind, rather than wrong ones).
fn carries_oauth(req: &Request<'_>) -> bool {
    let in_header = req.authorization.is_some_and(is_oauth_scheme);
    let has_param = |text: &[u8]| {
        text.split(|&b| b == b'&').any(|pair| {
            let name = pair.split(|&b| b == b'=').next().unwrap_or(b"");
            percent_decoded(name).as_slice() == b"oauth_consumer_key"
        })
    };
    in_header || req.query.is_some_and(|q| has_param(q.as_bytes())) || req.form.is_some_and(has_param)
}

/// Whether an `Authorization` value is of the `OAuth` scheme.
fn is_oauth_scheme(value: &str) -> bool {
    value.len() >= 6 && value.as_bytes()[..6].eq_ignore_ascii_case(b"oauth ")
}

/// `%XX` sequences decoded (a malformed one kept as it is).
fn percent_decoded(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            text[i],
            text.get(i + 1).copied().and_then(hex),
            text.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// The signature method a configured one names.
fn method(m: OAuth1Method) -> SignatureMethod {
    match m {
        OAuth1Method::HmacSha1 => SignatureMethod::HmacSha1,
        OAuth1Method::HmacSha256 => SignatureMethod::HmacSha256,
        OAuth1Method::RsaSha1 => SignatureMethod::RsaSha1,
        OAuth1Method::Plaintext => SignatureMethod::Plaintext,
    }
}

/// The audit reason for a refused signature (static: never a key or a value).
fn rejection(e: Error) -> Rejection {
    match e {
        Error::AlgorithmNotAllowed(_) => Rejection::Wrong("signature method not allowed"),
        Error::BadSignature => Rejection::Wrong("signature does not verify"),
        Error::Malformed { .. } => Rejection::Wrong("malformed OAuth 1.0a parameters"),
        _ => Rejection::Wrong("OAuth 1.0a signature refused"),
    }
}

#[cfg(test)]
mod tests;
