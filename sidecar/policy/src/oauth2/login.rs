//! Sign-in for people (OpenID Connect authorization code flow with PKCE), pure.
//!
//! The sidecar does the I/O (discovery, the token endpoint, randomness); everything it
//! decides with is here, as functions of the request, the compiled profile, the clock and
//! the random bytes it is handed:
//!
//! - [`Login::start`]: a browser without a session is sent to the provider's authorization
//!   endpoint with `state`, `nonce` and a PKCE S256 challenge. The pending sign-in (state,
//!   nonce, verifier, return path, time) is sealed into a short-lived cookie bound to that
//!   browser: nothing is kept on the server per pending sign-in.
//! - [`Login::callback`]: the callback's `state` must equal the sealed cookie's (constant
//!   time), the cookie must open under a session key and be at most [`STATE_TTL_SECS`] old.
//!   The sidecar also remembers used states and codes for that long ([`UsedOnce`], bounded),
//!   so a callback is honoured once on a replica.
//! - [`Login::accept_tokens`]: the ID token of the token endpoint's answer is verified with
//!   the provider's discovered keys (signature, `iss`, `aud` = the client id, `exp`, and the
//!   `nonce` of the pending sign-in), then the allowed domains and emails.
//! - Sessions ([`Session`]) are sealed with AES-256-GCM (ring) under the profile's newest
//!   session key and open under any of its keys (rotation with an overlap); the cookie is
//!   `HttpOnly; Secure; SameSite=Lax` and under 4 KiB (the refresh token is left out rather
//!   than exceed it). Every replica with the same keys accepts it: no shared state.
//! - Return paths are same-host relative paths only ([`safe_return_path`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use http::HeaderMap;
use http::header::COOKIE;
use portcullis_config::Sensitive;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{B64, KeySlot, OAuth2};
use crate::auth::Rejection;

/// The sign-in cookies' names start with this: `__Host-` makes browsers keep them only when
/// set over HTTPS (or from a loopback host) for this very host, with `Path=/` and no
/// `Domain`, so a sibling subdomain cannot toss a cookie of that name (RFC 6265bis 4.1.3.2).
pub const COOKIE_PREFIX: &str = "__Host-portcullis-";
/// How long a pending sign-in may take, seconds.
pub const STATE_TTL_SECS: u64 = 600;
/// A session is refreshed this long before it ends, seconds.
pub const REFRESH_BEFORE_SECS: u64 = 60;
/// Largest `Set-Cookie` value the sidecar writes (browsers keep 4096 bytes per cookie).
pub const MAX_COOKIE_BYTES: usize = 4000;
/// Longest return path kept through a sign-in.
const MAX_RETURN_BYTES: usize = 1024;
/// Largest discovery document or token answer read.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// Why a sign-in step was refused (for the error page and the audit line; never a secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("the sign-in state is missing or was not made by this site")]
    BadState,
    #[error("the sign-in took too long")]
    StateExpired,
    #[error("this sign-in was already completed")]
    Replayed,
    #[error("the identity provider refused the sign-in")]
    ProviderRefused,
    #[error("the identity provider's answer has no usable ID token")]
    NoIdToken,
    #[error("the ID token is not valid for this site")]
    BadIdToken,
    #[error("the ID token does not belong to this sign-in (nonce)")]
    WrongNonce,
    #[error("this account is not allowed")]
    NotAllowed,
    #[error("the callback has no authorization code")]
    NoCode,
    #[error("the session cannot be stored in a cookie")]
    SessionTooLarge,
}

impl LoginError {
    /// A short reason for the audit line.
    pub fn reason(self) -> &'static str {
        match self {
            Self::BadState => "sign-in state missing or forged",
            Self::StateExpired => "sign-in state expired",
            Self::Replayed => "sign-in state or code used twice",
            Self::ProviderRefused => "identity provider refused the sign-in",
            Self::NoIdToken => "no ID token",
            Self::BadIdToken => "ID token refused",
            Self::WrongNonce => "ID token nonce mismatch",
            Self::NotAllowed => "account not allowed",
            Self::NoCode => "callback without code",
            Self::SessionTooLarge => "session too large for a cookie",
        }
    }
}

/// A profile's session keys: the first seals, every one opens.
pub struct SessionKeys {
    keys: Vec<([u8; 4], LessSafeKey)>,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys").field("keys", &self.keys.len()).finish()
    }
}

impl SessionKeys {
    /// Keys from their base64 text (32 bytes each), newest first.
    pub fn new(keys: &[&str]) -> Result<Self, String> {
        if keys.is_empty() {
            return Err("no session key".into());
        }
        let keys = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(k.trim())
                    .map_err(|_| format!("session key {i} is not base64"))?;
                if bytes.len() != 32 {
                    return Err(format!("session key {i} is not 32 bytes"));
                }
                let id: [u8; 4] = Sha256::digest(&bytes)[..4].try_into().unwrap_or_default();
                let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| format!("session key {i} is unusable"))?;
                Ok((id, LessSafeKey::new(key)))
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { keys })
    }

    /// `plain` sealed under the newest key with `nonce` (random, never reused) and
    /// `purpose` as associated data: base64url of key id, nonce, ciphertext and tag.
    pub fn seal(&self, purpose: &[u8], plain: &[u8], nonce: [u8; NONCE_LEN]) -> String {
        let (id, key) = &self.keys[0];
        let mut buf = plain.to_vec();
        // Sealing in memory cannot fail for inputs this small.
        let _ = key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(purpose), &mut buf);
        let mut out = Vec::with_capacity(4 + NONCE_LEN + buf.len());
        out.extend_from_slice(id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        B64.encode(out)
    }

    /// What [`Self::seal`] sealed with `purpose`, if `sealed` opens under one of the keys.
    pub fn open(&self, purpose: &[u8], sealed: &str) -> Option<Vec<u8>> {
        if sealed.len() > MAX_COOKIE_BYTES {
            return None;
        }
        let raw = B64.decode(sealed).ok()?;
        if raw.len() < 4 + NONCE_LEN + 16 {
            return None;
        }
        let (id, rest) = raw.split_at(4);
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let (_, key) = self.keys.iter().find(|(k, _)| k == id)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = ct.to_vec();
        let plain = key.open_in_place(nonce, Aad::from(purpose), &mut buf).ok()?;
        Some(plain.to_vec())
    }
}

/// What an OpenID provider's discovery document says (the parts the sidecar uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    /// RP-initiated logout, where the provider offers it.
    pub end_session_endpoint: Option<String>,
}

/// Why a discovery document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    #[error("the discovery document is not a JSON object")]
    NotJson,
    #[error("the discovery document has no {0}")]
    Missing(&'static str),
    #[error("the discovery document names issuer {found:?}, not {expected:?}")]
    WrongIssuer { expected: String, found: String },
    #[error("the discovery document's {0} is not an http(s) URL")]
    BadUrl(&'static str),
    #[error("the provider does not offer the authorization code flow with PKCE S256")]
    NoPkce,
}

impl Discovered {
    /// Parses a discovery document (OpenID Connect Discovery 1.0), which must name `issuer`
    /// (section 4.3); with `https_only`, every endpoint must be `https://`.
    pub fn from_json(bytes: &[u8], issuer: &str, https_only: bool) -> Result<Self, DiscoveryError> {
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(DiscoveryError::NotJson);
        }
        let doc: Value = serde_json::from_slice(bytes).map_err(|_| DiscoveryError::NotJson)?;
        let s = |name| doc.get(name).and_then(Value::as_str);
        let found = s("issuer").ok_or(DiscoveryError::Missing("issuer"))?;
        if found.trim_end_matches('/') != issuer.trim_end_matches('/') {
            return Err(DiscoveryError::WrongIssuer {
                expected: issuer.into(),
                found: found.chars().take(200).collect(),
            });
        }
        let url = |name: &'static str| -> Result<String, DiscoveryError> {
            let u = s(name).ok_or(DiscoveryError::Missing(name))?;
            let ok = u.len() <= 2048
                && (u.starts_with("https://") || (!https_only && u.starts_with("http://")))
                && u.parse::<http::Uri>().is_ok();
            if ok {
                Ok(u.to_owned())
            } else {
                Err(DiscoveryError::BadUrl(name))
            }
        };
        // Providers that list their PKCE methods must list S256 (Google, Salesforce and
        // oidc-provider list it; one that lists none is tried).
        if let Some(methods) = doc.get("code_challenge_methods_supported").and_then(Value::as_array)
            && !methods.iter().any(|m| m.as_str() == Some("S256"))
        {
            return Err(DiscoveryError::NoPkce);
        }
        Ok(Self {
            issuer: found.to_owned(),
            authorization_endpoint: url("authorization_endpoint")?,
            token_endpoint: url("token_endpoint")?,
            jwks_uri: url("jwks_uri")?,
            end_session_endpoint: match s("end_session_endpoint") {
                Some(_) => Some(url("end_session_endpoint")?),
                None => None,
            },
        })
    }
}

/// The discovery document of one issuer, shared by every engine that uses it and fed by the
/// sidecar; with the key set its `jwks_uri` names.
#[derive(Debug, Default)]
pub struct DiscoverySlot {
    doc: ArcSwapOption<Discovered>,
    tried: AtomicBool,
    /// The ID tokens' keys (from the document's `jwks_uri`).
    pub keys: Arc<KeySlot>,
}

impl DiscoverySlot {
    /// Puts `doc` in force.
    pub fn store(&self, doc: Discovered) {
        self.doc.store(Some(Arc::new(doc)));
        self.mark_tried();
    }

    /// Records that the document was fetched, or that fetching it failed.
    pub fn mark_tried(&self) {
        self.tried.store(true, Ordering::Relaxed);
    }

    /// Whether the document was ever fetched or tried.
    pub fn tried(&self) -> bool {
        self.tried.load(Ordering::Relaxed)
    }

    /// The document in force, if one was ever fetched.
    pub fn get(&self) -> Option<Arc<Discovered>> {
        self.doc.load_full()
    }
}

/// Discovery slots by discovery URL, kept across reloads.
#[derive(Debug, Default)]
pub struct DiscoveryRegistry {
    slots: Mutex<HashMap<String, Arc<DiscoverySlot>>>,
}

impl DiscoveryRegistry {
    /// The slot of `url`, the same every time it is asked for.
    pub fn slot(&self, url: &str) -> Arc<DiscoverySlot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(url.to_owned()).or_default().clone()
    }
}

/// The random bytes one sign-in needs (the sidecar draws them).
#[derive(Debug, Clone, Copy)]
pub struct Random {
    pub state: [u8; 16],
    pub nonce: [u8; 16],
    pub verifier: [u8; 32],
    pub seal: [u8; NONCE_LEN],
}

/// A sign-in under way, as sealed in its cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub state: String,
    pub nonce: String,
    /// The PKCE code verifier.
    pub verifier: String,
    /// Where the browser goes after signing in (a same-host relative path).
    pub return_to: String,
    /// When the sign-in started, Unix seconds.
    pub created: u64,
}

/// A signed-in person, as sealed in the session cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub subject: String,
    pub email: Option<String>,
    /// Until when the session is valid without a refresh (the ID token's `exp`), Unix seconds.
    pub expires: u64,
    /// When the session ends whatever happens (`sessionMaxSeconds` after sign-in).
    pub ends: u64,
    /// The provider's refresh token, when it gave one (and it fits in the cookie).
    pub refresh_token: Option<String>,
}

impl Session {
    fn to_json(&self) -> Vec<u8> {
        let mut v = json!({"sub": self.subject, "exp": self.expires, "end": self.ends});
        if let Some(e) = &self.email {
            v["email"] = Value::from(e.as_str());
        }
        if let Some(rt) = &self.refresh_token {
            v["rt"] = Value::from(rt.as_str());
        }
        v.to_string().into_bytes()
    }

    fn from_json(bytes: &[u8]) -> Option<Self> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        Some(Self {
            subject: v.get("sub")?.as_str()?.to_owned(),
            email: v.get("email").and_then(Value::as_str).map(str::to_owned),
            expires: v.get("exp")?.as_u64()?,
            ends: v.get("end")?.as_u64()?,
            refresh_token: v.get("rt").and_then(Value::as_str).map(str::to_owned),
        })
    }

    /// Whether it is to be refreshed at `now`: close to (or past) its expiry, before its end,
    /// with a refresh token.
    pub fn wants_refresh(&self, now: u64) -> bool {
        self.refresh_token.is_some() && now + REFRESH_BEFORE_SECS >= self.expires && now < self.ends
    }
}

/// What a valid callback carries.
#[derive(Debug)]
pub struct Callback {
    pub code: String,
    pub pending: Pending,
}

/// The tokens of a token endpoint's answer the sidecar uses.
#[derive(Debug)]
pub struct Tokens {
    pub session: Session,
}

/// The compiled sign-in of one OAuth2 profile.
pub struct Login {
    pub config: portcullis_config::Login,
    client_secret: Sensitive,
    keys: SessionKeys,
    discovery: Arc<DiscoverySlot>,
    id_tokens: OAuth2,
    session_cookie: String,
    state_cookie: String,
    /// Associated data of the sealed cookies: binds them to this profile and purpose.
    session_purpose: Vec<u8>,
    state_purpose: Vec<u8>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("issuer", &self.config.issuer)
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

impl Login {
    /// The sign-in of profile `owner` (`<namespace>/<name>`, cookie `name`).
    pub fn new(
        owner: &str,
        name: &str,
        config: &portcullis_config::Login,
        secrets: &portcullis_config::LoginSecrets,
        discovery: Arc<DiscoverySlot>,
    ) -> Result<Self, String> {
        let keys: Vec<&str> = secrets.session_keys.iter().map(|k| k.key.expose()).collect();
        let keys = SessionKeys::new(&keys)?;
        let id_tokens = OAuth2::new(
            Some(&config.issuer),
            std::slice::from_ref(&config.client_id),
            &[],
            Some(discovery.keys.clone()),
            None,
        );
        Ok(Self {
            config: config.clone(),
            client_secret: secrets.client_secret.clone(),
            keys,
            discovery,
            id_tokens,
            session_cookie: format!("{COOKIE_PREFIX}session-{name}"),
            state_cookie: format!("{COOKIE_PREFIX}login-{name}-"),
            session_purpose: format!("portcullis session v1 {owner}").into_bytes(),
            state_purpose: format!("portcullis login state v1 {owner}").into_bytes(),
        })
    }

    /// The provider's discovery document, when fetched.
    pub fn discovered(&self) -> Option<Arc<Discovered>> {
        self.discovery.get()
    }

    /// The client id and secret (for the token endpoint).
    pub fn client(&self) -> (&str, &Sensitive) {
        (&self.config.client_id, &self.client_secret)
    }

    /// The name of the session cookie.
    pub fn session_cookie_name(&self) -> &str {
        &self.session_cookie
    }

    /// The name of the pending sign-in cookie of `state`: one per sign-in under way, so
    /// that sign-ins started in several tabs each complete.
    pub fn pending_cookie_name(&self, state: &str) -> String {
        let tag = B64.encode(&Sha256::digest(state.as_bytes())[..9]);
        format!("{}{tag}", self.state_cookie)
    }

    /// Whether cookie `name` is a pending sign-in of this profile.
    pub fn is_pending_cookie(&self, name: &str) -> bool {
        // The tag is 12 characters (9 bytes in base64): another profile whose name extends
        // this one's (`a` and `a-b`) leaves more after the prefix.
        name.strip_prefix(&self.state_cookie).is_some_and(|tag| tag.len() == 12)
    }

    /// Whether the browser holds the pending sign-in the callback's `query` names.
    pub fn holds_pending(&self, headers: &HeaderMap, query: Option<&str>) -> bool {
        let state = crate::query::query_param(query.unwrap_or(""), "state");
        state.is_some_and(|s| cookie_value(headers, &self.pending_cookie_name(&s)).is_some())
    }

    /// The callback URL for a request to `authority` (`host[:port]`) over `https` or not:
    /// what is registered with the provider.
    pub fn redirect_uri(&self, authority: &str, https: bool) -> String {
        let scheme = if https { "https" } else { "http" };
        format!("{scheme}://{authority}{}", self.config.redirect_path)
    }

    /// Starts a sign-in: the `Location` of the provider's authorization endpoint and the
    /// `Set-Cookie` value of the sealed pending sign-in. `return_to` is the path (and query)
    /// the browser asked for.
    pub fn start(
        &self,
        discovered: &Discovered,
        redirect_uri: &str,
        return_to: &str,
        random: &Random,
        now: u64,
    ) -> (String, String) {
        let pending = Pending {
            state: B64.encode(random.state),
            nonce: B64.encode(random.nonce),
            verifier: B64.encode(random.verifier),
            return_to: safe_return_path(return_to).unwrap_or("/").to_owned(),
            created: now,
        };
        let challenge = pkce_challenge(&pending.verifier);
        let query = crate::oauth2::form_pairs(&[
            ("response_type", "code"),
            ("client_id", &self.config.client_id),
            ("redirect_uri", redirect_uri),
            ("scope", &self.config.scopes.join(" ")),
            ("state", &pending.state),
            ("nonce", &pending.nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ]);
        let sep = if discovered.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        let location = format!("{}{sep}{query}", discovered.authorization_endpoint);
        let plain = json!({"s": pending.state, "n": pending.nonce, "v": pending.verifier,
                           "r": pending.return_to, "t": pending.created})
        .to_string();
        let sealed = self.keys.seal(&self.state_purpose, plain.as_bytes(), random.seal);
        (
            location,
            cookie(&self.pending_cookie_name(&pending.state), &sealed, STATE_TTL_SECS),
        )
    }

    /// Checks a callback: its query's `state` against the sealed pending sign-in of the
    /// browser's cookie, at `now`. `Err(ProviderRefused)` when the provider sent an `error`.
    pub fn callback(&self, query: Option<&str>, headers: &HeaderMap, now: u64) -> Result<Callback, LoginError> {
        let query = query.unwrap_or("");
        // One of each: a repeated parameter could be read two ways.
        if ["state", "code", "error"]
            .iter()
            .any(|n| crate::query::repeated(query, n))
        {
            return Err(LoginError::BadState);
        }
        let get = |name: &str| crate::query::query_param(query, name);
        let state = get("state").ok_or(LoginError::BadState)?;
        let sealed = cookie_value(headers, &self.pending_cookie_name(&state)).ok_or(LoginError::BadState)?;
        let plain = self
            .keys
            .open(&self.state_purpose, sealed)
            .ok_or(LoginError::BadState)?;
        let v: Value = serde_json::from_slice(&plain).map_err(|_| LoginError::BadState)?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let pending = Pending {
            state: s("s").ok_or(LoginError::BadState)?,
            nonce: s("n").ok_or(LoginError::BadState)?,
            verifier: s("v").ok_or(LoginError::BadState)?,
            return_to: s("r").ok_or(LoginError::BadState)?,
            created: v.get("t").and_then(Value::as_u64).ok_or(LoginError::BadState)?,
        };
        if !bool::from(state.as_bytes().ct_eq(pending.state.as_bytes())) {
            return Err(LoginError::BadState);
        }
        if now >= pending.created + STATE_TTL_SECS || pending.created > now + 60 {
            return Err(LoginError::StateExpired);
        }
        if get("error").is_some() {
            return Err(LoginError::ProviderRefused);
        }
        let code = get("code")
            .filter(|c| !c.is_empty() && c.len() <= 4096)
            .ok_or(LoginError::NoCode)?;
        Ok(Callback {
            code: code.into_owned(),
            pending,
        })
    }

    /// The form of the token request for `code` (authorization_code grant with the PKCE
    /// verifier); the client authenticates with `client_secret_basic`.
    pub fn code_form(&self, code: &str, redirect_uri: &str, verifier: &str) -> String {
        crate::oauth2::form_pairs(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ])
    }

    /// The form of a refresh request.
    pub fn refresh_form(&self, refresh_token: &str) -> String {
        crate::oauth2::form_pairs(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token)])
    }

    /// Judges a token endpoint's `200` answer at `now`: for a sign-in (`nonce` of the
    /// pending sign-in) or a refresh of `previous`. Returns the session to seal.
    pub fn accept_tokens(
        &self,
        answer: &[u8],
        nonce: Option<&str>,
        previous: Option<&Session>,
        now: u64,
    ) -> Result<Session, LoginError> {
        let v: Value = serde_json::from_slice(answer).map_err(|_| LoginError::NoIdToken)?;
        let refresh_token = v
            .get("refresh_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| previous.and_then(|p| p.refresh_token.clone()));
        let claims = match v.get("id_token").and_then(Value::as_str) {
            Some(token) => {
                let claims = self
                    .id_tokens
                    .id_token_claims(token, now * 1000)
                    .map_err(|_| LoginError::BadIdToken)?;
                let got = claims.get("nonce").and_then(Value::as_str);
                match (nonce, got) {
                    (Some(want), Some(got)) if bool::from(want.as_bytes().ct_eq(got.as_bytes())) => {}
                    (Some(_), _) => return Err(LoginError::WrongNonce),
                    // A refreshed ID token need not carry a nonce (OIDC Core 12.2).
                    (None, _) => {}
                }
                claims
            }
            None => return Err(LoginError::NoIdToken),
        };
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .ok_or(LoginError::BadIdToken)?;
        if !self.authorized_party(&claims) {
            return Err(LoginError::BadIdToken);
        }
        if let Some(p) = previous
            && p.subject != subject
        {
            return Err(LoginError::BadIdToken);
        }
        if !self.admits(&claims) {
            return Err(LoginError::NotAllowed);
        }
        // Only a verified email is passed on to the app.
        let email = verified_email(&claims);
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(LoginError::BadIdToken)?;
        let ends = previous.map_or(now + u64::from(self.config.session_max_seconds), |p| p.ends);
        Ok(Session {
            subject: subject.to_owned(),
            email,
            expires: exp.min(ends),
            ends,
            refresh_token,
        })
    }

    /// OIDC Core 3.1.3.7 (4, 5): an ID token for several audiences names this client as its
    /// authorized party (`azp`), and an `azp` is always this client.
    fn authorized_party(&self, claims: &Value) -> bool {
        let several = claims.get("aud").and_then(Value::as_array).is_some_and(|a| a.len() > 1);
        match claims.get("azp") {
            Some(azp) => azp.as_str() == Some(self.config.client_id.as_str()),
            None => !several,
        }
    }

    /// Whether the person these verified claims (an ID token's, or a bearer token's) name may
    /// be admitted: `allowedDomains`/`allowedEmails` hold the verified `email`.
    pub fn admits(&self, claims: &Value) -> bool {
        self.allowed(verified_email(claims).as_deref())
    }

    /// Whether a person with this verified email (`None`: none, or not verified) may sign in.
    fn allowed(&self, email: Option<&str>) -> bool {
        let c = &self.config;
        if c.allowed_domains.is_empty() && c.allowed_emails.is_empty() {
            return true;
        }
        let Some(email) = email else { return false };
        c.allowed_emails.iter().any(|e| e == email)
            || email
                .rsplit_once('@')
                .is_some_and(|(_, domain)| c.allowed_domains.iter().any(|d| d == domain))
    }

    /// The `Set-Cookie` value of `session`, sealed with `nonce`; the refresh token is left
    /// out when the cookie would be too large with it.
    pub fn session_cookie(&self, session: &Session, nonce: [u8; NONCE_LEN], now: u64) -> Result<String, LoginError> {
        let max_age = session.ends.saturating_sub(now);
        let mut sealed = self.keys.seal(&self.session_purpose, &session.to_json(), nonce);
        if sealed.len() > MAX_COOKIE_BYTES - 200 && session.refresh_token.is_some() {
            let lean = Session {
                refresh_token: None,
                ..session.clone()
            };
            sealed = self.keys.seal(&self.session_purpose, &lean.to_json(), nonce);
        }
        if sealed.len() > MAX_COOKIE_BYTES - 200 {
            return Err(LoginError::SessionTooLarge);
        }
        Ok(cookie(&self.session_cookie, &sealed, max_age))
    }

    /// The session of the request's cookie, whatever its expiry (`None`: no cookie, or one
    /// that does not open under this profile's keys).
    pub fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let sealed = cookie_value(headers, &self.session_cookie)?;
        Session::from_json(&self.keys.open(&self.session_purpose, sealed)?)
    }

    /// The signed-in person of the request at `now` (Unix seconds).
    pub fn check(&self, headers: &HeaderMap, now: u64) -> Result<Session, Rejection> {
        // No cookie at all: the client sent no credentials (as for an API client).
        if cookie_value(headers, &self.session_cookie).is_none() {
            return Err(Rejection::Missing("no bearer token"));
        }
        let session = self.session(headers).ok_or(Rejection::Missing("no valid session"))?;
        if now >= session.expires || now >= session.ends {
            return Err(Rejection::Missing("session expired"));
        }
        Ok(session)
    }

    /// The `Set-Cookie` value that clears the session cookie.
    pub fn clear_session(&self) -> String {
        cookie(&self.session_cookie, "", 0)
    }

    /// The `Set-Cookie` value that clears the pending sign-in cookie the callback's `query`
    /// names, if it names one.
    pub fn clear_pending(&self, query: Option<&str>) -> Option<String> {
        let state = crate::query::query_param(query.unwrap_or(""), "state")?;
        Some(cookie(&self.pending_cookie_name(&state), "", 0))
    }

    /// Where signing out sends the browser: the provider's end-session endpoint when it has
    /// one (RP-initiated logout, with `client_id` and `post_logout_redirect_uri`), else
    /// `post_logout` on this host.
    pub fn logout_location(&self, discovered: Option<&Discovered>, post_logout: &str) -> String {
        match discovered.and_then(|d| d.end_session_endpoint.as_deref()) {
            Some(end) => {
                let sep = if end.contains('?') { '&' } else { '?' };
                let query = crate::oauth2::form_pairs(&[
                    ("client_id", &self.config.client_id),
                    ("post_logout_redirect_uri", post_logout),
                ]);
                format!("{end}{sep}{query}")
            }
            None => post_logout.to_owned(),
        }
    }
}

/// The claims' `email` in lower case when `email_verified` says it is verified and it looks
/// like one address (`local@domain`, visible characters only: no space, control or second
/// `@` that a comparison or a header could read another way).
fn verified_email(claims: &Value) -> Option<String> {
    let verified = claims
        .get("email_verified")
        .is_some_and(|v| v.as_bool() == Some(true) || v.as_str() == Some("true"));
    let email = claims.get("email").and_then(Value::as_str)?;
    let shaped = email.chars().all(|c| !c.is_whitespace() && !c.is_control())
        && email.split('@').count() == 2
        && email.split('@').all(|part| !part.is_empty());
    (verified && shaped).then(|| email.to_ascii_lowercase())
}

/// Whether a request is a browser navigating (sent to sign in when refused): `GET` or
/// `HEAD`, an `Accept` that names `text/html`, no `Authorization` header, and, when the
/// browser sends them, `Sec-Fetch-Mode: navigate` and `Sec-Fetch-Dest: document`.
pub fn is_browser_navigation(method: &str, headers: &HeaderMap) -> bool {
    // A browser says what a request is for (Fetch Metadata): only a top-level navigation
    // starts a sign-in, never a fetch, an image or a frame another site makes.
    let says = |name: &str, want: &str| {
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (None, _) => true,
            (Some(v), None) => v.as_bytes().eq_ignore_ascii_case(want.as_bytes()),
            _ => false,
        }
    };
    matches!(method, "GET" | "HEAD")
        && says("sec-fetch-mode", "navigate")
        && says("sec-fetch-dest", "document")
        && !headers.contains_key(http::header::AUTHORIZATION)
        && headers
            .get_all(http::header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|media| {
                let media = media.split(';').next().unwrap_or("").trim();
                media.eq_ignore_ascii_case("text/html")
            })
}

/// `name=value; Path=/; Max-Age=..; HttpOnly; Secure; SameSite=Lax`.
fn cookie(name: &str, value: &str, max_age: u64) -> String {
    format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Lax")
}

/// The value of cookie `name` in the request's `Cookie` headers; `None` when it is absent
/// or sent more than once (two values, as another site's tossed cookie would make, could be
/// read two ways: neither is used).
pub fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    // As bytes: a cookie of the app's that is not ASCII must not hide the sidecar's.
    let mut found = headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .filter_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then_some(pair[eq + 1..].trim_ascii())
        });
    let first = std::str::from_utf8(found.next()?).ok()?;
    found.next().is_none().then_some(first)
}

/// Whether cookie `name` is one of the sidecar's sign-in cookies (the app never sees them).
pub fn is_sign_in_cookie(name: &str) -> bool {
    let name = name.strip_prefix("__Host-").unwrap_or(name);
    name.starts_with("portcullis-session-") || name.starts_with("portcullis-login-")
}

/// The `Cookie` header without the cookies whose names start with `prefix`; `None` when
/// nothing is left.
pub fn without_cookies(value: &str, prefix: &str) -> Option<String> {
    let kept: Vec<&str> = value
        .split(';')
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && !pair.split('=').next().unwrap_or("").starts_with(prefix))
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

/// The PKCE S256 challenge of `verifier`.
pub fn pkce_challenge(verifier: &str) -> String {
    B64.encode(Sha256::digest(verifier.as_bytes()))
}

/// `path` when it is a same-host relative path (`/`, not `//` or `/\`, visible ASCII, not
/// too long): the only return targets followed after a sign-in.
pub fn safe_return_path(path: &str) -> Option<&str> {
    let ok = path.starts_with('/')
        && !path.starts_with("//")
        && !path.starts_with("/\\")
        && path.len() <= MAX_RETURN_BYTES
        && path.bytes().all(|b| b.is_ascii_graphic())
        && !path.contains('\\');
    ok.then_some(path)
}

/// The states and codes already used, each until it could no longer be used anyway:
/// bounded, so a flood of callbacks cannot grow it (a full memory refuses new sign-ins
/// rather than forget: fail closed).
#[derive(Debug)]
pub struct UsedOnce {
    seen: Mutex<HashMap<[u8; 32], u64>>,
    capacity: usize,
}

impl UsedOnce {
    /// A memory of at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// Records `what` (a state or a code, kept only as a digest) until `until` (Unix
    /// seconds): `Ok(())` the first time, `Err(Replayed)` after. At capacity with nothing
    /// expired: `Err(Replayed)` too (fail closed).
    pub fn first_use(&self, kind: &str, what: &str, until: u64, now: u64) -> Result<(), LoginError> {
        let mut h = Sha256::new();
        h.update(kind.as_bytes());
        h.update([0]);
        h.update(what.as_bytes());
        let digest: [u8; 32] = h.finalize().into();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.get(&digest).is_some_and(|&t| t > now) {
            return Err(LoginError::Replayed);
        }
        if seen.len() >= self.capacity {
            seen.retain(|_, &mut t| t > now);
            if seen.len() >= self.capacity {
                return Err(LoginError::Replayed);
            }
        }
        seen.insert(digest, until);
        Ok(())
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether a session's refresh may go to the provider now ([`RefreshGate::turn`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshTurn {
    /// Yes: this request refreshes it (the others of the same session wait).
    Go,
    /// Not now: one is under way or was made a moment ago, or the budget is spent; the session
    /// is judged as it is.
    Wait,
    /// An earlier refresh found the session ended (the account no longer allowed, the
    /// refresh token revoked): the request has no session.
    Ended,
}

/// Keeps sessions' refreshes from flooding the provider: one refresh per session cookie (its
/// refresh token and expiry, kept as a digest) every [`REFRESH_HOLD_SECS`] (the requests of
/// one cookie share one refresh; the refreshed cookie is another), at most `per_second` in all,
/// and a session a refresh ended stays ended. Bounded: at capacity with nothing expired, a
/// refresh waits (the session is judged as it is until it expires).
#[derive(Debug)]
pub struct RefreshGate {
    sessions: Mutex<HashMap<[u8; 32], (u64, bool)>>,
    capacity: usize,
    per_second: u32,
    second: Mutex<(u64, u32)>,
}

/// How long one refresh holds off the next of the same session, seconds.
pub const REFRESH_HOLD_SECS: u64 = 10;

impl RefreshGate {
    /// A gate for at most `capacity` sessions and `per_second` refreshes a second.
    pub fn new(capacity: usize, per_second: u32) -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            per_second,
            second: Mutex::new((0, 0)),
        }
    }

    fn digest(session: &Session) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(session.refresh_token.as_deref().unwrap_or("").as_bytes());
        h.update([0]);
        h.update(session.expires.to_be_bytes());
        h.finalize().into()
    }

    /// Whether `session` may be refreshed at `now` (Unix seconds); a `Go` holds off the next
    /// refresh of the same cookie for [`REFRESH_HOLD_SECS`].
    pub fn turn(&self, session: &Session, now: u64) -> RefreshTurn {
        let key = Self::digest(session);
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match sessions.get(&key) {
            Some(&(until, true)) if until > now => return RefreshTurn::Ended,
            Some(&(until, false)) if until > now => return RefreshTurn::Wait,
            _ => {}
        }
        {
            let mut second = self.second.lock().unwrap_or_else(|p| p.into_inner());
            if second.0 != now {
                *second = (now, 0);
            }
            if second.1 >= self.per_second {
                return RefreshTurn::Wait;
            }
            second.1 += 1;
        }
        if sessions.len() >= self.capacity {
            sessions.retain(|_, &mut (until, _)| until > now);
            if sessions.len() >= self.capacity {
                return RefreshTurn::Wait;
            }
        }
        sessions.insert(key, (now + REFRESH_HOLD_SECS, false));
        RefreshTurn::Go
    }

    /// Records that refreshing `session` found it ended: it stays ended until its own end.
    pub fn ended(&self, session: &Session) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.insert(Self::digest(session), (session.ends, true));
    }
}

#[cfg(test)]
mod tests;
