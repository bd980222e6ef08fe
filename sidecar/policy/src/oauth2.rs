//! OAuth 2.0 bearer tokens (RFC 6750) that are JWT access tokens (RFC 9068), and the
//! sidecar's own token provider (profile provider `Builtin`).
//!
//! - A token is verified with the keys of its profile: the key set published at `jwksUri`
//!   ([`KeySlot`], fed by the sidecar, read here with one atomic load), and for `Builtin`
//!   profiles the profile's own ES256 keys (by `kid`). Algorithms: `RS256`, `PS512`, `ES256`,
//!   `EdDSA` with JWKS keys; `HS256`, `none` and anything else are refused.
//! - `kid` picks the key; a token without `kid` is tried against every key that fits its
//!   algorithm. A `kid` not in the set asks the sidecar to fetch the set again
//!   ([`KeySlot::unknown_kid`]) and is refused meanwhile. No keys at all: refused (fails
//!   closed).
//! - Claims: `exp` is required and `nbf` honoured, both with [`CLOCK_SKEW_SECS`] of skew;
//!   `iss` must equal the profile's issuer when one is set; `aud` (a string or a list) must
//!   name one of the profile's audiences when any are set; `scope` (space-separated) or `scp`
//!   (a list or a string) must hold every required scope, else the call is forbidden (403,
//!   `insufficient_scope`) rather than unauthorized.
//! - The caller is `sub`, else `client_id`, else `azp`.
//! - Builtin tokens are ES256 JWTs signed with the newest of the profile's keys (EC P-256, in
//!   a Secret the operator makes and rotates; every key verifies, so a rotation leaves tokens
//!   valid until they expire), published as a JWK Set ([`Builtin::jwks`]). Every replica has
//!   the same keys: tokens survive restarts and reloads. Each token carries its client's
//!   version (`pcv`: a digest of the profile, the client's secret and scopes): changing a
//!   client's secret or scopes, or removing it, invalidates the tokens issued so far.
//! - Opaque tokens are introspected (RFC 7662, [`introspection`]): the sidecar asks the
//!   profile's endpoint and fills an [`introspection::IntrospectionCache`]; the engine judges
//!   the cached answer with the same rules as a JWT's claims (`exp` optional there).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use base64::Engine as _;
use http::HeaderMap;
use http::header::AUTHORIZATION;
use portcullis_config::Sensitive;
use portcullis_signatures::{Algorithm, Key};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::Rejection;

pub mod grants;
pub mod introspection;
pub mod login;

use introspection::{Introspected, Introspection};

/// Seconds of clock difference tolerated on `exp` and `nbf`.
pub const CLOCK_SKEW_SECS: u64 = 60;
/// Longest token looked at.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Most keys tried for a token without `kid`.
const MAX_KEYS_TRIED: usize = 8;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// One usable key of a JWKS.
#[derive(Debug)]
struct Jwk {
    kid: Option<Box<str>>,
    /// The `alg` the key is restricted to, when the JWKS says.
    alg: Option<Algorithm>,
    key: Key,
}

/// A JSON Web Key Set, reduced to the keys this engine can verify with.
#[derive(Debug, Default)]
pub struct JwkSet {
    keys: Vec<Jwk>,
}

/// Why a JWKS document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("the key set is not JSON with a \"keys\" list")]
    NotAKeySet,
}

impl JwkSet {
    /// Parses a JWKS document (RFC 7517). Keys of other types, curves or uses are skipped.
    pub fn from_json(bytes: &[u8]) -> Result<Self, JwksError> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|_| JwksError::NotAKeySet)?;
        let list = doc.get("keys").and_then(Value::as_array).ok_or(JwksError::NotAKeySet)?;
        let keys = list.iter().filter_map(jwk).collect();
        Ok(Self { keys })
    }

    /// How many usable keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The set holds no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn jwk(v: &Value) -> Option<Jwk> {
    let s = |name: &str| v.get(name).and_then(Value::as_str);
    if s("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let b = |name: &str| s(name).and_then(|x| B64.decode(x.trim_end_matches('=')).ok());
    let (label, der) = match s("kty")? {
        "RSA" => ("RSA PUBLIC KEY", rsa_pkcs1(&b("n")?, &b("e")?)),
        "EC" if s("crv") == Some("P-256") => {
            let (x, y) = (b("x")?, b("y")?);
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            let mut der = hex_bytes("3059301306072a8648ce3d020106082a8648ce3d030107034200");
            der.push(4);
            der.extend_from_slice(&x);
            der.extend_from_slice(&y);
            ("PUBLIC KEY", der)
        }
        "OKP" if s("crv") == Some("Ed25519") => {
            let x = b("x")?;
            if x.len() != 32 {
                return None;
            }
            let mut der = hex_bytes("302a300506032b6570032100");
            der.extend_from_slice(&x);
            ("PUBLIC KEY", der)
        }
        _ => return None,
    };
    let pem = format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    );
    let key = Key::from_pem(&pem).ok()?;
    let alg = match s("alg") {
        None => None,
        Some(a) => Some(jose_algorithm(a).filter(|a| key.fits(*a))?),
    };
    Some(Jwk {
        kid: s("kid").map(Into::into),
        alg,
        key,
    })
}

fn hex_bytes(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap_or(0))
        .collect()
}

/// `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`, DER.
fn rsa_pkcs1(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut body = der_integer(n);
    body.extend(der_integer(e));
    der_tlv(0x30, &body)
}

fn der_integer(v: &[u8]) -> Vec<u8> {
    let start = v.iter().position(|&b| b != 0).unwrap_or(v.len().saturating_sub(1));
    let v = &v[start.min(v.len())..];
    let mut content = Vec::with_capacity(v.len() + 1);
    if v.first().is_none_or(|&b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(v);
    der_tlv(0x02, &content)
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len() - 1);
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// The JOSE name of an algorithm this engine verifies.
fn jose_algorithm(name: &str) -> Option<Algorithm> {
    match name {
        "RS256" => Some(Algorithm::RsaV15Sha256),
        "PS512" => Some(Algorithm::RsaPssSha512),
        "ES256" => Some(Algorithm::EcdsaP256Sha256),
        "EdDSA" | "Ed25519" => Some(Algorithm::Ed25519),
        "HS256" => Some(Algorithm::HmacSha256),
        _ => None,
    }
}

/// The key set of one `jwksUri`, shared by every engine that uses it and fed by the sidecar
/// (which fetches the document): decisions read it with one atomic load.
#[derive(Debug, Default)]
pub struct KeySlot {
    keys: ArcSwap<JwkSet>,
    unknown_kid: AtomicBool,
    tried: AtomicBool,
}

impl KeySlot {
    /// Puts `set` in force.
    pub fn store(&self, set: JwkSet) {
        self.keys.store(Arc::new(set));
        self.mark_tried();
    }

    /// Records that the set was fetched, or that fetching it failed.
    pub fn mark_tried(&self) {
        self.tried.store(true, Ordering::Relaxed);
    }

    /// Whether the set was ever fetched or tried (the sidecar is not ready before: a token
    /// checked then would be refused only because the keys are not there yet).
    pub fn tried(&self) -> bool {
        self.tried.load(Ordering::Relaxed)
    }

    /// The set in force.
    pub fn keys(&self) -> Arc<JwkSet> {
        self.keys.load_full()
    }

    /// Whether a token named a key not in the set since the last call (the set may be
    /// stale: fetch it again). Clears the flag.
    pub fn take_unknown_kid(&self) -> bool {
        self.unknown_kid.swap(false, Ordering::Relaxed)
    }
}

/// Key slots by `jwksUri`, kept across reloads (like rate-limit counters) so that a new
/// configuration starts with the keys already fetched.
#[derive(Debug, Default)]
pub struct JwksRegistry {
    slots: Mutex<HashMap<String, Arc<KeySlot>>>,
}

impl JwksRegistry {
    /// The slot of `uri`, the same every time it is asked for.
    pub fn slot(&self, uri: &str) -> Arc<KeySlot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(uri.to_owned()).or_default().clone()
    }
}

/// How an OAuth2 profile's token was judged.
#[derive(Debug)]
pub enum TokenCheck {
    /// Valid, with every required scope: the caller, and for the Builtin provider's tokens
    /// the client they were issued to.
    Admitted { identity: String, client: Option<String> },
    /// No bearer token, but a valid sign-in session: the person and their email.
    Session { subject: String, email: Option<String> },
    /// Valid, but a required scope is missing: 403.
    InsufficientScope,
}

/// The Builtin provider of one profile: its clients and signing keys.
pub struct Builtin {
    /// ES256 keys, newest first: the first signs, every one verifies (by `kid`).
    keys: Box<[(Box<str>, Key)]>,
    ttl_seconds: u32,
    clients: BTreeMap<Box<str>, Box<[u8]>>,
    /// The scopes each client's tokens may carry; a client without an entry gets none.
    scopes: BTreeMap<Box<str>, Box<[Box<str>]>>,
    /// Each client's version (`pcv` in its tokens): a digest of the profile, the client's
    /// secret and scopes, so that changing a client (or taking a scope away) ends its tokens.
    versions: BTreeMap<Box<str>, Box<str>>,
    /// `namespace/name` of the profile: its grants' place in a shared store.
    owner: Box<str>,
    /// Grants and revocations (kept across reloads).
    book: Arc<grants::GrantBook>,
    /// User-delegated access, when the profile has a consent page.
    delegation: Option<Delegation>,
}

/// A Builtin provider's user-delegated access: the owner's consent page and credential, and
/// the clients' redirect URIs.
pub struct Delegation {
    pub consent_url: Box<str>,
    owner_token: Box<[u8]>,
    redirect_uris: BTreeMap<Box<str>, Box<[Box<str>]>>,
    pub refresh_ttl_secs: u64,
    pub max_grant_secs: u64,
}

impl Delegation {
    /// From the profile's settings and secrets.
    pub fn new(
        settings: &portcullis_config::Delegation,
        owner_token: &Sensitive,
        redirect_uris: &BTreeMap<String, Vec<String>>,
    ) -> Self {
        Self {
            consent_url: settings.consent_url.as_str().into(),
            owner_token: owner_token.expose().as_bytes().into(),
            redirect_uris: redirect_uris
                .iter()
                .map(|(c, l)| (c.as_str().into(), l.iter().map(|u| u.as_str().into()).collect()))
                .collect(),
            refresh_ttl_secs: u64::from(settings.refresh_token_ttl_seconds.max(1)),
            max_grant_secs: u64::from(settings.max_grant_seconds.max(1)),
        }
    }

    /// Whether `token` is the owner's credential (constant time in the token).
    pub fn owner_matches(&self, token: &str) -> bool {
        bool::from(self.owner_token.as_ref().ct_eq(token.as_bytes()))
    }

    /// The redirect URI to send `client`'s answer to: `requested` when registered for it,
    /// the only registered one when `requested` is `None`.
    pub fn redirect_uri<'a>(&'a self, client: &str, requested: Option<&'a str>) -> Option<&'a str> {
        let list = self.redirect_uris.get(client)?;
        match requested {
            Some(r) => list.iter().any(|u| **u == *r).then_some(r),
            None if list.len() == 1 => Some(&list[0]),
            None => None,
        }
    }
}

impl std::fmt::Debug for Delegation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delegation")
            .field("consent_url", &self.consent_url)
            .field("clients", &self.redirect_uris.len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Builtin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builtin")
            .field("clients", &self.clients.len())
            .field("keys", &self.keys.len())
            .field("ttl_seconds", &self.ttl_seconds)
            .finish_non_exhaustive()
    }
}

impl Builtin {
    /// The provider of profile `profile` with `clients` (id to secret), the `scopes` each
    /// client may be granted (id to scopes; a client without an entry is granted none) and
    /// the signing `keys` (EC P-256 private keys, newest first).
    pub fn new(
        profile: &str,
        ttl_seconds: u32,
        clients: &BTreeMap<String, Sensitive>,
        scopes: &BTreeMap<String, Vec<String>>,
        keys: &[portcullis_config::SigningKey],
    ) -> Result<Self, String> {
        if clients.is_empty() {
            return Err("a Builtin provider needs at least one client".into());
        }
        if keys.is_empty() {
            return Err("a Builtin provider needs a token signing key".into());
        }
        for (id, list) in scopes {
            if !clients.contains_key(id) {
                return Err(format!("scopes are given for {id:?}, which is not a client"));
            }
            if let Some(bad) = list.iter().find(|s| !portcullis_config::is_scope_token(s)) {
                return Err(format!("client {id:?}: {bad:?} is not a valid scope"));
            }
        }
        let keys = keys
            .iter()
            .map(|k| {
                let key = Key::from_pem(k.pem.expose())
                    .ok()
                    .filter(|key| key.can_sign() && key.fits(Algorithm::EcdsaP256Sha256))
                    .ok_or_else(|| format!("token signing key {:?} is not an EC P-256 private key", k.name))?;
                Ok((k.name.as_str().into(), key))
            })
            .collect::<Result<Box<[_]>, String>>()?;
        let versions = clients
            .iter()
            .map(|(id, secret)| {
                // Each field length-prefixed, so that no two clients give the same input.
                let mut h = Sha256::new();
                let mut field = |b: &[u8]| {
                    h.update((b.len() as u64).to_be_bytes());
                    h.update(b);
                };
                field(b"portcullis builtin client v1");
                field(profile.as_bytes());
                field(id.as_bytes());
                field(secret.expose().as_bytes());
                for scope in scopes.get(id).into_iter().flatten() {
                    field(scope.as_bytes());
                }
                (id.as_str().into(), B64.encode(&h.finalize()[..16]).into())
            })
            .collect();
        Ok(Self {
            keys,
            ttl_seconds: ttl_seconds.max(1),
            clients: clients
                .iter()
                .map(|(id, s)| (id.as_str().into(), s.expose().as_bytes().into()))
                .collect(),
            scopes: scopes
                .iter()
                .map(|(id, list)| (id.as_str().into(), list.iter().map(|s| s.as_str().into()).collect()))
                .collect(),
            versions,
            owner: profile.into(),
            book: Arc::default(),
            delegation: None,
        })
    }

    /// The same provider keeping its grants and revocations in `book` (the same book across
    /// reloads).
    pub fn with_book(mut self, book: Arc<grants::GrantBook>) -> Self {
        self.book = book;
        self
    }

    /// The same provider, with user-delegated access.
    pub fn with_delegation(mut self, delegation: Delegation) -> Self {
        self.delegation = Some(delegation);
        self
    }

    /// The grants and revocations.
    pub fn book(&self) -> &grants::GrantBook {
        &self.book
    }

    /// `namespace/name` of the profile.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// User-delegated access, when the profile has it.
    pub fn delegation(&self) -> Option<&Delegation> {
        self.delegation.as_ref()
    }

    /// `claims` as a JWS of type `typ`, signed with the newest key.
    pub(crate) fn sign(&self, typ: &str, claims: &Value) -> Option<String> {
        let (kid, key) = self.keys.first()?;
        let header = B64.encode(serde_json::to_vec(&json!({"alg": "ES256", "typ": typ, "kid": &**kid})).ok()?);
        let payload = B64.encode(serde_json::to_vec(claims).ok()?);
        let signed = format!("{header}.{payload}");
        let sig = key.sign(Algorithm::EcdsaP256Sha256, signed.as_bytes()).ok()?;
        Some(format!("{signed}.{}", B64.encode(sig)))
    }

    /// The claims of a JWS of type `typ` one of this provider's keys signed, if it is one.
    pub(crate) fn open(&self, typ: &str, jws: &str) -> Option<Value> {
        if jws.len() > MAX_TOKEN_BYTES {
            return None;
        }
        let mut parts = jws.splitn(3, '.');
        let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
        let header: Value = serde_json::from_slice(&B64.decode(h).ok()?).ok()?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256")
            || header.get("typ").and_then(Value::as_str) != Some(typ)
        {
            return None;
        }
        let kid = header.get("kid").and_then(Value::as_str)?;
        let (_, key) = self.keys.iter().find(|(k, _)| **k == *kid)?;
        let signature = B64.decode(s).ok()?;
        key.verify(
            Algorithm::EcdsaP256Sha256,
            &jws.as_bytes()[..h.len() + 1 + p.len()],
            &signature,
        )
        .ok()?;
        serde_json::from_slice::<Value>(&B64.decode(p).ok()?)
            .ok()
            .filter(Value::is_object)
    }

    /// Whether `client` is registered.
    pub fn has_client(&self, client: &str) -> bool {
        self.clients.contains_key(client)
    }

    /// The scopes `client` may be granted.
    pub fn allowed_scopes(&self, client: &str) -> &[Box<str>] {
        self.scopes.get(client).map_or(&[][..], |s| &s[..])
    }

    /// The public keys, as a JWK Set (RFC 7517): what `jwks_uri` serves.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .keys
            .iter()
            .filter_map(|(kid, key)| {
                let point = key.ec_public_point()?;
                Some(
                    json!({"kty": "EC", "crv": "P-256", "kid": &**kid, "alg": "ES256", "use": "sig",
                            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])}),
                )
            })
            .collect();
        json!({ "keys": keys })
    }

    /// Every scope some client may be granted.
    pub fn all_scopes(&self) -> Vec<&str> {
        self.scopes
            .values()
            .flat_map(|list| list.iter().map(|s| &**s))
            .collect()
    }

    /// Whether verified Builtin claims belong to a client as it is now (its `pcv`).
    fn current(&self, claims: &Value) -> bool {
        let client = claims.get("client_id").and_then(Value::as_str);
        let version = claims.get("pcv").and_then(Value::as_str);
        match (client.and_then(|c| self.versions.get(c)), version) {
            (Some(want), Some(got)) => bool::from(want.as_bytes().ct_eq(got.as_bytes())),
            _ => false,
        }
    }

    /// The scope to grant `client` when it asks for `requested` (space-separated, well formed;
    /// `None` when it asked for none): what it asked for when every asked scope is allowed to
    /// it (`None` when it is not), all its allowed scopes when it asked for none.
    pub fn grant(&self, client: &str, requested: Option<&str>) -> Option<String> {
        let allowed = self.scopes.get(client).map_or(&[][..], |s| &s[..]);
        match requested {
            None => Some(allowed.join(" ")),
            Some(requested) => {
                let mut granted: Vec<&str> = Vec::new();
                for scope in requested.split_ascii_whitespace() {
                    if !allowed.iter().any(|a| &**a == scope) {
                        return None;
                    }
                    if !granted.contains(&scope) {
                        granted.push(scope);
                    }
                }
                Some(granted.join(" "))
            }
        }
    }

    /// Whether `secret` is the secret of client `id` (constant time in the secret).
    pub fn client_matches(&self, id: &str, secret: &str) -> bool {
        match self.clients.get(id) {
            Some(known) => bool::from(known.as_ref().ct_eq(secret.as_bytes())),
            None => {
                // Spend about the same time on an unknown client.
                let _ = [0u8; 32].as_slice().ct_eq(secret.as_bytes());
                false
            }
        }
    }

    /// Token lifetime, seconds.
    pub fn ttl_seconds(&self) -> u32 {
        self.ttl_seconds
    }
}

/// The verifier of one OAuth2 profile.
#[derive(Debug)]
pub struct OAuth2 {
    issuer: Option<Box<str>>,
    audiences: Box<[Box<str>]>,
    required_scopes: Box<[Box<str>]>,
    jwks: Option<Arc<KeySlot>>,
    builtin: Option<Builtin>,
    introspection: Option<Introspection>,
    login: Option<Box<login::Login>>,
}

impl OAuth2 {
    /// A verifier with the keys of `jwks` (fed elsewhere) and/or `builtin`.
    pub fn new(
        issuer: Option<&str>,
        audiences: &[String],
        required_scopes: &[String],
        jwks: Option<Arc<KeySlot>>,
        builtin: Option<Builtin>,
    ) -> Self {
        Self {
            issuer: issuer.map(Into::into),
            audiences: audiences.iter().map(|a| a.as_str().into()).collect(),
            required_scopes: required_scopes.iter().map(|s| s.as_str().into()).collect(),
            jwks,
            builtin,
            introspection: None,
            login: None,
        }
    }

    /// The same verifier, with sign-in for people (a session cookie admits a browser).
    pub fn with_login(mut self, login: login::Login) -> Self {
        self.login = Some(Box::new(login));
        self
    }

    /// The profile's sign-in, if it has one.
    pub fn login(&self) -> Option<&login::Login> {
        self.login.as_deref()
    }

    /// The verified claims of an ID token at `now_ms`: signature, `exp`, `nbf`, `iss` and
    /// `aud` as for bearer tokens (this verifier's issuer and audiences).
    pub(crate) fn id_token_claims(&self, token: &str, now_ms: u64) -> Result<Value, Rejection> {
        let (claims, _) = self.verify(token)?;
        self.judge(&claims, now_ms / 1000, true)?;
        Ok(claims)
    }

    /// The same verifier, asking `introspection` about the tokens it cannot verify locally.
    pub fn with_introspection(mut self, introspection: Introspection) -> Self {
        self.introspection = Some(introspection);
        self
    }

    /// The introspection settings, when this profile introspects `token` (see
    /// [`introspection`]: every token without local keys, else only tokens not shaped like
    /// a JWT).
    pub(crate) fn introspects(&self, token: &str) -> Option<&Introspection> {
        let i = self.introspection.as_ref()?;
        let local = self.jwks.is_some() || self.builtin.is_some();
        (!local || !looks_like_jwt(token)).then_some(i)
    }

    /// Whether the profile introspects any token.
    pub(crate) fn has_introspection(&self) -> bool {
        self.introspection.is_some()
    }

    /// The issuer tokens must name, when the profile sets one.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// The Builtin provider, when the sidecar issues this profile's tokens.
    pub fn builtin(&self) -> Option<&Builtin> {
        self.builtin.as_ref()
    }

    /// The required scopes, space-separated (for `insufficient_scope` challenges).
    pub fn required_scopes(&self) -> String {
        self.required_scopes.join(" ")
    }

    /// Checks the bearer token of `headers` at `now_ms` (Unix milliseconds).
    pub fn check(&self, headers: &HeaderMap, now_ms: u64) -> Result<TokenCheck, Rejection> {
        let Some(token) = bearer_token(headers) else {
            // Without a bearer token, a browser's sign-in session (bearer tokens win: an API
            // client is judged by what it sends).
            let login = self.login.as_ref().ok_or(Rejection::Missing("no bearer token"))?;
            // Another scheme's credentials beside a session would reach the app unchecked.
            if headers.contains_key(AUTHORIZATION) {
                return Err(Rejection::Wrong("Authorization header of another scheme"));
            }
            let session = login.check(headers, now_ms / 1000)?;
            return Ok(TokenCheck::Session {
                subject: session.subject,
                email: session.email,
            });
        };
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Rejection::Wrong("malformed bearer token"));
        }
        if let Some(i) = self.introspects(token) {
            return match i.cache.get(&introspection::digest(token), now_ms) {
                Some(Introspected::Active(claims)) => self.judge(&claims, now_ms / 1000, false),
                Some(Introspected::Inactive) => Err(Rejection::Wrong("token not active")),
                // The sidecar introspects before deciding: only an answer evicted meanwhile
                // gets here.
                None => Err(Rejection::Wrong("token not introspected")),
            };
        }
        let (claims, own) = self.verify(token)?;
        let admitted = self.judge(&claims, now_ms / 1000, true)?;
        Ok(match admitted {
            // The Builtin provider's tokens name the client they were issued to.
            TokenCheck::Admitted { identity, .. } if own => TokenCheck::Admitted {
                identity,
                client: claims.get("client_id").and_then(Value::as_str).map(str::to_owned),
            },
            other => other,
        })
    }

    /// The claims of a Builtin access token that verifies, is current and not revoked, and
    /// has not expired at `now` (Unix seconds): for introspection.
    pub fn builtin_claims(&self, token: &str, now: u64) -> Option<Value> {
        self.builtin.as_ref()?;
        match self.verify(token) {
            Ok((claims, true)) => {
                let exp = claims.get("exp").and_then(Value::as_u64)?;
                (exp > now).then_some(claims)
            }
            _ => None,
        }
    }

    /// The claims of `token` if its signature is right, and whether the Builtin provider
    /// issued it.
    fn verify(&self, token: &str) -> Result<(Value, bool), Rejection> {
        let malformed = Rejection::Wrong("malformed bearer token");
        if token.len() > MAX_TOKEN_BYTES {
            return Err(malformed);
        }
        let mut parts = token.splitn(3, '.');
        let (Some(h), Some(p), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Rejection::Wrong(if self.builtin.is_none() && self.jwks.is_none() {
                "opaque tokens cannot be verified (no introspection)"
            } else {
                "bearer token is not a JWT"
            }));
        };
        let header: Value = B64
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(malformed)?;
        let signature = B64.decode(s).map_err(|_| malformed)?;
        let alg_name = header.get("alg").and_then(Value::as_str).unwrap_or("none");
        let alg = jose_algorithm(alg_name).ok_or(Rejection::Wrong("token algorithm not accepted"))?;
        let signed = &token[..h.len() + 1 + p.len()];
        let kid = header.get("kid").and_then(Value::as_str);
        // The Builtin provider's own keys (ES256, by kid) come first.
        let own = self.builtin.as_ref().and_then(|b| {
            let (_, key) = b.keys.iter().find(|(k, _)| Some(&**k) == kid)?;
            Some((b, key))
        });
        let ok = if let Some((builtin, key)) = own {
            let verified = alg == Algorithm::EcdsaP256Sha256 && key.verify(alg, signed.as_bytes(), &signature).is_ok();
            if !verified {
                return Err(Rejection::Wrong("bad token signature"));
            }
            let claims = B64
                .decode(p)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .filter(Value::is_object)
                .ok_or(malformed)?;
            // Only access tokens: not another document signed with the same keys.
            if header.get("typ").and_then(Value::as_str) != Some("at+jwt") {
                return Err(Rejection::Wrong("not an access token"));
            }
            if !builtin.current(&claims) {
                return Err(Rejection::Wrong("token's client changed or removed"));
            }
            let grant = claims.get("gid").and_then(Value::as_str);
            let client = claims.get("client_id").and_then(Value::as_str).unwrap_or_default();
            let issued_ms = claims.get("pct").and_then(Value::as_u64).unwrap_or(0);
            if builtin.book.revoked().refuses(grant, client, issued_ms) {
                return Err(Rejection::Wrong("token revoked"));
            }
            return Ok((claims, true));
        } else if alg == Algorithm::HmacSha256 {
            // HS256 never: no shared key verifies tokens, and never a JWKS public key.
            return Err(Rejection::Wrong("token algorithm not accepted"));
        } else {
            let slot = self
                .jwks
                .as_ref()
                .ok_or(Rejection::Wrong("token algorithm not accepted"))?;
            let set = slot.keys.load();
            if set.keys.is_empty() {
                return Err(Rejection::Wrong("no token keys loaded (jwksUri not fetched)"));
            }
            let fits = |k: &&Jwk| k.key.fits(alg) && k.alg.is_none_or(|a| a == alg);
            match header.get("kid").and_then(Value::as_str) {
                Some(kid) => {
                    let Some(k) = set.keys.iter().find(|k| k.kid.as_deref() == Some(kid)) else {
                        slot.unknown_kid.store(true, Ordering::Relaxed);
                        return Err(Rejection::Wrong("token key id unknown"));
                    };
                    fits(&k) && k.key.verify(alg, signed.as_bytes(), &signature).is_ok()
                }
                None => set
                    .keys
                    .iter()
                    .filter(fits)
                    .take(MAX_KEYS_TRIED)
                    .any(|k| k.key.verify(alg, signed.as_bytes(), &signature).is_ok()),
            }
        };
        if !ok {
            return Err(Rejection::Wrong("bad token signature"));
        }
        let claims = B64
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .filter(Value::is_object)
            .ok_or(malformed)?;
        Ok((claims, false))
    }

    /// Judges verified claims at `now` (Unix seconds); `exp` is required when `require_exp`
    /// (JWTs; an introspection answer need not carry one).
    fn judge(&self, claims: &Value, now: u64, require_exp: bool) -> Result<TokenCheck, Rejection> {
        let num = |name: &str| claims.get(name).and_then(Value::as_f64);
        match num("exp") {
            None if require_exp => return Err(Rejection::Wrong("token has no exp")),
            Some(exp) if exp + (CLOCK_SKEW_SECS as f64) <= now as f64 => {
                return Err(Rejection::Wrong("token expired"));
            }
            _ => {}
        }
        if num("nbf").is_some_and(|nbf| nbf > (now + CLOCK_SKEW_SECS) as f64) {
            return Err(Rejection::Wrong("token not yet valid"));
        }
        if let Some(issuer) = &self.issuer
            && !claims
                .get("iss")
                .and_then(Value::as_str)
                .is_some_and(|iss| issuer_matches(issuer, iss))
        {
            return Err(Rejection::Wrong("token issuer not accepted"));
        }
        if !self.audiences.is_empty() {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => self.audiences.iter().any(|x| **x == **a),
                Some(Value::Array(list)) => list
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|a| self.audiences.iter().any(|x| **x == *a)),
                _ => false,
            };
            if !ok {
                return Err(Rejection::Wrong("token audience not accepted"));
            }
        }
        // A sign-in profile's account rules hold for its bearer tokens too: an ID token of a
        // person sign-in refuses must not reach the app through `Authorization`.
        if let Some(login) = &self.login
            && !login.admits(claims)
        {
            return Err(Rejection::Wrong("token's account not allowed"));
        }
        let identity = ["sub", "client_id", "azp"]
            .iter()
            .find_map(|c| claims.get(*c).and_then(Value::as_str).filter(|s| !s.is_empty()))
            .ok_or(Rejection::Wrong("token names no subject or client"))?;
        if !self.required_scopes.is_empty() {
            let mut granted: Vec<&str> = Vec::new();
            for claim in ["scope", "scp"] {
                match claims.get(claim) {
                    Some(Value::String(s)) => granted.extend(s.split_ascii_whitespace()),
                    Some(Value::Array(list)) => granted.extend(list.iter().filter_map(Value::as_str)),
                    _ => {}
                }
            }
            if !self.required_scopes.iter().all(|r| granted.contains(&&**r)) {
                return Ok(TokenCheck::InsufficientScope);
            }
        }
        Ok(TokenCheck::Admitted {
            identity: identity.to_owned(),
            client: None,
        })
    }

    /// Issues a Builtin access token (`None` when the profile is not Builtin or the client
    /// is unknown): `(token, expires_in)`.
    pub fn issue(&self, t: &TokenToIssue<'_>) -> Option<(String, u32)> {
        let builtin = self.builtin.as_ref()?;
        let (kid, key) = builtin.keys.first()?;
        let now = t.now_ms / 1000;
        // A grant's tokens end with it, clock skew allowance included.
        let grant_end = t
            .grant
            .map_or(u64::MAX, |g| g.expires_at.saturating_sub(CLOCK_SKEW_SECS));
        let exp = (now + u64::from(builtin.ttl_seconds)).min(grant_end);
        if exp <= now {
            return None;
        }
        let mut claims = serde_json::Map::new();
        claims.insert("iss".into(), Value::from(t.issuer));
        claims.insert(
            "sub".into(),
            Value::from(t.grant.map_or(t.client_id, |g| g.user.as_str())),
        );
        claims.insert("client_id".into(), Value::from(t.client_id));
        claims.insert("pcv".into(), Value::from(&**builtin.versions.get(t.client_id)?));
        if let Some(g) = t.grant {
            claims.insert("gid".into(), Value::from(g.id.as_str()));
        }
        match self.audiences.len() {
            0 => {}
            1 => {
                claims.insert("aud".into(), Value::from(&*self.audiences[0]));
            }
            _ => {
                let list = self.audiences.iter().map(|a| Value::from(&**a)).collect();
                claims.insert("aud".into(), Value::Array(list));
            }
        }
        claims.insert("iat".into(), Value::from(now));
        claims.insert("pct".into(), Value::from(t.now_ms));
        claims.insert("exp".into(), Value::from(exp));
        claims.insert("jti".into(), Value::from(B64.encode(t.jti)));
        if let Some(scope) = t.scope.filter(|s| !s.is_empty()) {
            claims.insert("scope".into(), Value::from(scope));
        }
        let header = B64.encode(serde_json::to_vec(&json!({"alg": "ES256", "typ": "at+jwt", "kid": &**kid})).ok()?);
        let payload = B64.encode(serde_json::to_vec(&Value::Object(claims)).ok()?);
        let signed = format!("{header}.{payload}");
        let sig = key.sign(Algorithm::EcdsaP256Sha256, signed.as_bytes()).ok()?;
        Some((format!("{signed}.{}", B64.encode(sig)), (exp - now) as u32))
    }
}

/// An access token to issue ([`OAuth2::issue`]).
#[derive(Debug, Clone, Copy)]
pub struct TokenToIssue<'a> {
    pub client_id: &'a str,
    /// The user's grant (its user is the subject), `None` for client credentials.
    pub grant: Option<&'a grants::Grant>,
    /// Space-separated.
    pub scope: Option<&'a str>,
    /// The `iss` claim (RFC 9068: every access token names its issuer).
    pub issuer: &'a str,
    /// Unix milliseconds.
    pub now_ms: u64,
    /// Random: the token's `jti`.
    pub jti: [u8; 16],
}

/// Claim `name` of JWT `token`, read without verifying anything (to find what to load
/// before the token is judged).
pub(crate) fn unverified_claim(token: &str, name: &str) -> Option<String> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&B64.decode(payload).ok()?).ok()?;
    claims.get(name)?.as_str().map(str::to_owned)
}

/// Whether `token` has the shape of a JWT: three dot-separated parts.
fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|&b| b == b'.').count() == 2
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers.get_all(AUTHORIZATION).iter().find_map(|v| {
        let v = v.to_str().ok()?;
        let (scheme, rest) = v.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| rest.trim())
            .filter(|t| !t.is_empty())
    })
}

/// `k=v&k=v`, each form-urlencoded (RFC 6749 appendix B).
pub(crate) fn form_pairs(pairs: &[(&str, &str)]) -> String {
    let enc = portcullis_signatures::percent_encode;
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A scope request is well formed: space-separated tokens of `%x21 / %x23-5B / %x5D-7E`
/// (RFC 6749 section 3.3).
pub fn valid_scope(scope: &str) -> bool {
    scope.len() <= 1024
        && scope
            .split(' ')
            .filter(|s| !s.is_empty())
            .all(portcullis_config::is_scope_token)
}

/// Whether a token's `iss` names the profile's `issuer`: exactly, or for Google the bare
/// `accounts.google.com` its ID tokens may carry instead of `https://accounts.google.com`
/// (Google's OpenID Connect documentation names both).
fn issuer_matches(issuer: &str, iss: &str) -> bool {
    const GOOGLE: &str = "https://accounts.google.com";
    iss == issuer || (issuer == GOOGLE && iss == "accounts.google.com")
}

#[cfg(test)]
mod tests;
