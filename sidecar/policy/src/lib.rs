//! The Portcullis policy engine: what to do with one request.
//!
//! [`Engine::compile`] turns a loaded sidecar configuration into matchers, credential
//! checkers, IP sets and resolved rate-limit counters, once per configuration.
//! [`Engine::decide`] is then a pure function of the request's facts ([`RequestView`]), the
//! compiled configuration, the clock (`now_ms`, passed in) and the limiter's state: no
//! socket, no task, no allocation on the admitted path except where a caller asks for an
//! audited identity header. The proxy maps the [`Outcome`] to an HTTP answer.
//!
//! Decision order for a request:
//! 1. the path is brought to its normal form ([`path`]); a path that could be read two ways
//!    (dot segments, `;` parameters, encoded slashes, backslashes, malformed escapes) is
//!    refused ([`Outcome::BadRequest`]);
//! 2. route, matched on the normal path: the most specific host, then the longest path
//!    prefix, then methods ([`routes`]); none: [`Outcome::NoRoute`], never counted. A path
//!    that a more specific case-sensitive route matches only when letter case is ignored is
//!    refused ([`Outcome::BadRequest`]). An admitted call carries the normal path
//!    ([`Admission::path`]): the proxy forwards exactly that;
//! 3. `sslOnly` over plain HTTP: [`Outcome::Redirect`];
//! 4. the route's profiles in order; the first whose credentials are right and whose
//!    trusted IP ranges hold the client admits. Right credentials from the wrong address:
//!    403; no profile with right credentials: 401 with every profile's challenge;
//! 5. limits: the org allowance and the admitting profile's limit, taken together or not at
//!    all ([`limit`]); over either: 429, the org's first;
//! 6. an HTTP message signature is recorded in its profile's replay cache only now, once the
//!    call is otherwise admitted: seen before inside its window (or the cache full), 401 and
//!    the limits' hit is given back ([`signature`]). When the signature covers a body digest,
//!    the [`Admission`] asks the proxy to check it ([`Admission::body_digest`]).
//!
//! OAuth2 profiles verify JWT bearer tokens ([`oauth2`]) with keys the sidecar feeds in
//! ([`oauth2::KeySlot`], one atomic load per decision); a valid token without a required
//! scope is refused 403 (`insufficient_scope`). Builtin profiles issue their own tokens: the
//! proxy asks [`Engine::token_endpoint`] before deciding. Opaque tokens of profiles with
//! introspection (RFC 7662) are judged from a cache the sidecar fills: it asks
//! [`Engine::introspection_wanted`] before deciding, and introspects the token it names.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;
use portcullis_config::{Backend, Loaded, ProfileAuth};

pub mod auth;
pub mod ip;
pub mod limit;
pub mod oauth1;
pub mod oauth2;
pub mod path;
pub mod provider;
mod query;
pub mod routes;
pub mod signature;
pub mod throttle;

pub use auth::{PeerCertificate, Rejection};
pub use ip::IpSet;
pub use limit::{
    Counted, CounterId, Fallback, Grant, InMemoryLimiter, Limiter, MAX_HITS, RateInfo, Refusal, Refused, Scope, Span,
};
pub use path::{NormalPath, PathError};
pub use portcullis_config::QuotaPeriod;
pub use provider::{CallInput, Needs, ProviderCall, ProviderEndpoint, ProviderRandom, Reply};
pub use signature::{BodyDigest, ReplayRegistry};

use auth::{ApiKey, Basic, ClientCertificate};
use oauth1::OAuth1;
pub use oauth2::introspection::{Introspected, IntrospectionError, IntrospectionRequest};
use oauth2::{KeySlot, OAuth2, TokenCheck};
use routes::{Matcher, PathMatch};
use signature::{HttpSignature, Signed};

/// The listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Calls to the pod (`--inbound`, `--inbound-tls`).
    Inbound,
    /// The app's own calls toward origins (`--egress`).
    Egress,
}

/// The clock a decision is taken at. Wall time for what carries dates (token expiry,
/// signature creation); a monotonic reading for windows (rate limits, the failed-authentication
/// throttle), so that a step of the wall clock neither freezes a window nor gives a hit back
/// to the wrong bucket. Both in milliseconds; tests may pass one `u64` for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Milliseconds on a clock that never goes back (any origin, fixed for the process).
    pub mono_ms: u64,
}

impl From<u64> for Now {
    fn from(ms: u64) -> Self {
        Self {
            unix_ms: ms,
            mono_ms: ms,
        }
    }
}

/// What the engine looks at: the facts of one request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a str,
    /// Host, lower case, without port.
    pub host: Option<&'a str>,
    /// The authority as sent (`host[:port]`: the URI's, else the Host header), for
    /// HTTP message signatures (`@authority`); `None`: `host` is used.
    pub authority: Option<&'a str>,
    /// The path as sent, without the query (normalized by the engine, [`path::normalize`]).
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The address of the TCP peer.
    pub peer: IpAddr,
    /// The request came over TLS.
    pub tls: bool,
    pub listener: Listener,
    /// The client certificate, verified by the TLS layer.
    pub client_cert: Option<&'a PeerCertificate>,
    /// The body, when [`Engine::form_wanted`] asked for it: a form an OAuth 1.0a signature
    /// covers.
    pub form: Option<&'a [u8]>,
}

/// What to do with a request. Borrows names from the engine that decided it, never the
/// request.
#[derive(Debug)]
pub enum Outcome<'e> {
    /// The path could be read two ways (not in [`path`]'s normal form, or a case variant of
    /// a more specific route's prefix): 400.
    BadRequest { reason: &'static str },
    /// No route matches: 404, never counted.
    NoRoute,
    /// The route is HTTPS-only: go to `location`.
    Redirect { route: &'e str, location: String },
    /// Refused.
    Deny(Denial<'e>),
    /// Admitted: forward.
    Allow(Admission<'e>),
}

/// A refused call.
#[derive(Debug)]
pub struct Denial<'e> {
    pub route: &'e str,
    /// The profile that refused it last, `-` when none applies.
    pub profile: &'e str,
    pub client_ip: IpAddr,
    pub kind: DenialKind<'e>,
    /// Why, for the audit log; never a secret.
    pub reason: &'static str,
    /// Who was authenticated when the refusal came after (a rate limit, a replay): the audit
    /// line names them.
    pub identity: Option<Cow<'e, str>>,
}

/// How a call was refused.
#[derive(Debug)]
pub enum DenialKind<'e> {
    /// Credentials missing or wrong: 401 with these `WWW-Authenticate` challenges.
    Unauthorized { challenges: &'e [String] },
    /// Credentials right but not allowed (address), or HTTPS required without a host: 403.
    Forbidden,
    /// A valid OAuth2 token without a required scope: 403 with these `WWW-Authenticate`
    /// challenges (`Bearer ..., error="insufficient_scope"`).
    InsufficientScope { challenges: &'e [String] },
    /// Over a limit: 429.
    RateLimited { scope: Scope, info: RateInfo },
    /// The shared store could not be asked, and the profile refuses calls then
    /// (`onStoreUnavailable: Deny`, or a signature that cannot be checked against replay
    /// cluster-wide): 503 with `Retry-After`.
    StoreUnavailable { retry_after_secs: u64 },
    /// The sidecar keeps as many consumers' counters as it may (`--max-consumers`), each with
    /// live hits: a new consumer is refused, 503 with `Retry-After` (fails closed).
    TooManyConsumers { retry_after_secs: u64 },
    /// The most specific route for the path does not list the method (nor does another
    /// route on the same path): 405 with `Allow`. Never handed to a broader route, whose
    /// profiles would then guard a path the app serves as this route's.
    MethodNotAllowed { allow: &'e str },
    /// Too many failed authentications from this address or for this user
    /// ([`throttle`]): 429 with `Retry-After`, credentials not looked at.
    Throttled { retry_after_secs: u64 },
}

/// An admitted call.
#[derive(Debug)]
pub struct Admission<'e> {
    pub route: &'e CompiledRoute,
    pub profile: &'e str,
    /// Who was authenticated: `anonymous`, the Basic username, the API key, the certificate
    /// subject, the signature's key id or the token's subject. The app is told this one.
    pub identity: Cow<'e, str>,
    /// The value of the profile's `identityHeader` when the request carried one: what the
    /// audit line names instead (the client chose it, so the app is never told it).
    pub audit_identity: Option<Cow<'e, str>>,
    pub client_ip: IpAddr,
    /// The tightest limit that applied, for the `RateLimit-*` headers.
    pub rate: Option<RateInfo>,
    /// The admitting HTTP message signature covers this digest header: the proxy must check
    /// it against the body before forwarding (401 when it does not match).
    pub body_digest: Option<BodyDigest>,
    /// The path the route was matched on, in normal form ([`path::normalize`]): the proxy
    /// forwards exactly this path, [`NormalPath::resolve`]d against the path as sent, with
    /// the original query. [`NormalPath::AsSent`] when the request came in normal form (the
    /// common case: nothing allocated, nothing copied).
    pub path: NormalPath,
    /// The client used HTTPS: to the sidecar itself, or to a trusted proxy in front that
    /// says so (`X-Forwarded-Proto: https`). The app is told this scheme.
    pub https: bool,
    /// What the credential says beyond the identity (a signed-in person's email, the client
    /// a Builtin token was issued to): the app is told it too. Boxed: most calls have none.
    pub told: Option<Box<Told>>,
    grant: Option<(usize, Grant)>,
    /// The limits or the replay check still to be done on the shared store
    /// ([`Engine::settle`]).
    pending: Option<Pending>,
}

/// What a credential says beyond the identity ([`Admission::told`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Told {
    /// The signed-in person's email (a sign-in session whose ID token had a verified one).
    pub email: Option<String>,
    /// The client the Builtin provider issued the admitting token to.
    pub client: Option<String>,
}

/// The limits one call takes, all or none: the org allowance first, then the profile's (or
/// the consumer's) per-minute limit, then the quota.
#[derive(Debug)]
pub struct LimitHits<'e, C> {
    held: [Option<(Held<'e, C>, u32)>; MAX_HITS],
    len: usize,
    scopes: [Scope; MAX_HITS],
    shares: [u32; MAX_HITS],
    fallback: Fallback,
}

/// A counter a call takes a hit on.
#[derive(Debug)]
enum Held<'e, C> {
    /// The engine's (the org allowance, a profile's limit).
    Engine(&'e C),
    /// A consumer's, resolved for this call.
    Consumer(C),
}

impl<C> Held<'_, C> {
    fn counter(&self) -> &C {
        match self {
            Self::Engine(c) => c,
            Self::Consumer(c) => c,
        }
    }
}

/// Counters with their limits, as [`Limiter::acquire`] takes them.
pub struct HitList<'a, C> {
    items: [(&'a C, u32); MAX_HITS],
    len: usize,
}

impl<'a, C> std::ops::Deref for HitList<'a, C> {
    type Target = [(&'a C, u32)];

    fn deref(&self) -> &Self::Target {
        &self.items[..self.len]
    }
}

impl<'e, C> LimitHits<'e, C> {
    fn new() -> Self {
        Self {
            held: [None, None, None],
            len: 0,
            scopes: [Scope::Org; MAX_HITS],
            shares: [0; MAX_HITS],
            fallback: Fallback::Allow,
        }
    }

    fn push(&mut self, held: Held<'e, C>, limit: u32, scope: Scope, share: u32) {
        self.held[self.len] = Some((held, limit));
        self.scopes[self.len] = scope;
        self.shares[self.len] = share;
        self.len += 1;
    }

    /// Each counter with its limit, in the order [`Refusal::index`] refers to.
    pub fn list(&self) -> HitList<'_, C> {
        let first = self.held[0].as_ref().expect("at least one hit").0.counter();
        let mut items = [(first, 0); MAX_HITS];
        for (item, (held, limit)) in items.iter_mut().zip(self.held.iter().flatten()) {
            *item = (held.counter(), *limit);
        }
        HitList { items, len: self.len }
    }

    /// The scope of the counter at `index` of [`list`](Self::list).
    pub fn scope(&self, index: usize) -> Scope {
        self.scopes.get(index).copied().unwrap_or(Scope::Profile)
    }

    /// What to do when the shared store cannot be asked (the admitting profile's
    /// `onStoreUnavailable`).
    pub fn fallback(&self) -> Fallback {
        self.fallback
    }
}

/// A signature to remember on the shared store ([`Engine::pending_replay`]).
#[derive(Debug, Clone, Copy)]
pub struct ReplayEntry<'e> {
    /// The profile, `<namespace>/<name>`: signatures are remembered per profile.
    pub profile: &'e str,
    /// The key that signed.
    pub key_id: &'e str,
    /// Names the signature (a hash of the key id and what it signed).
    pub replay_key: &'e [u8; 32],
    /// How long it must be remembered, seconds (until it could no longer be admitted).
    pub ttl_secs: u64,
    /// The longest any signature of the profile is remembered, seconds.
    pub window_secs: u64,
    /// Most live signatures one key may hold.
    pub budget: usize,
}

/// What the shared store said of a signature ([`Engine::settle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedReplay {
    /// Not seen before: now remembered.
    Fresh,
    /// Seen before inside its window: a replay.
    Seen,
    /// Its key holds its whole budget of live signatures (refused, fails closed).
    Full,
    /// The store could not be asked.
    Unavailable,
}

/// What an admission waiting for the shared store still has to do.
#[derive(Debug)]
struct Pending {
    /// The admitting profile.
    index: usize,
    /// Its limits are still to be taken.
    limits: bool,
    /// Its signature, recorded against replay only once the limits admit the call (as when
    /// they are taken at once: a call refused for its rate keeps its signature usable).
    signed: Option<Signed>,
    /// The scope of each of its limits, in the order of [`LimitHits::list`].
    scopes: [Scope; MAX_HITS],
}

impl Admission<'_> {
    /// Whether the call waits for the shared store (its rate limits, or its signature's
    /// replay check) before it may be forwarded ([`Engine::pending_hits`],
    /// [`Engine::pending_replay`], [`Engine::settle`]).
    pub fn limits_pending(&self) -> bool {
        self.pending.is_some()
    }
}

/// Why a configuration does not compile into an engine (names the object; never a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("route {route:?}: profile {profile:?} is not in the configuration")]
    UnknownProfile { route: String, profile: String },
    #[error("profile {profile:?}: {what} missing from the secret material")]
    MissingSecret { profile: String, what: &'static str },
    #[error("profile {profile:?}: {message}")]
    Invalid { profile: String, message: String },
}

/// A route, compiled.
#[derive(Debug)]
pub struct CompiledRoute {
    /// Name of the ApiRoute.
    pub name: Box<str>,
    /// Index in the configuration's `routes`.
    pub index: usize,
    /// Where calls go.
    pub backend: Backend,
    matcher: Matcher,
    ssl_only: bool,
    /// The route has a client-facing certificate: the sidecar serves it over HTTPS too.
    tls: bool,
    profiles: Box<[usize]>,
    challenges: Box<[String]>,
    /// The challenges when a bearer token was presented and refused (`error="invalid_token"`).
    invalid_token: Box<[String]>,
    /// The challenge of a 403 for a missing scope.
    insufficient_scope: Box<[String]>,
    /// `Allow` of a 405: the methods it lists.
    allow: Box<str>,
}

impl CompiledRoute {
    /// The port of the local backend, if the route goes to the app in the pod.
    pub fn local_port(&self) -> Option<u16> {
        match self.backend {
            Backend::Local { port } => Some(port),
            Backend::Origin { .. } => None,
        }
    }

    /// The `WWW-Authenticate` challenges of a 401 on this route.
    pub fn challenges(&self) -> &[String] {
        &self.challenges
    }

    /// The path prefix, in normal form.
    pub fn path_prefix(&self) -> &str {
        self.matcher.prefix()
    }
}

/// Why a path that a more specific route matches only when letter case is ignored is refused.
const CASE_VARIANT: &str = "path differs only in letter case from a more specific route's prefix";

/// Why a request is not handed to a route ([`Engine::route_for`]).
#[derive(Debug, Clone, Copy)]
enum NotRouted<'e> {
    /// A more specific case-sensitive route matches the path only when case is ignored: 400.
    CaseVariant,
    /// The most specific route on the path does not list the method: 405.
    OtherMethod(&'e CompiledRoute),
}

#[derive(Debug)]
enum Auth {
    Anonymous,
    Basic(Basic),
    ApiKey(ApiKey),
    ClientCertificate(ClientCertificate),
    HttpSignature(HttpSignature),
    OAuth1(OAuth1),
    OAuth2(Box<OAuth2>),
}

impl Auth {
    /// The replay protection of a signing profile.
    fn replay_guard(&self) -> Option<&signature::ReplayGuard> {
        match self {
            Auth::HttpSignature(s) => Some(s.guard()),
            Auth::OAuth1(o) => Some(o.guard()),
            _ => None,
        }
    }
}

struct CompiledProfile<C> {
    name: Box<str>,
    auth: Auth,
    /// Empty: any address.
    trusted: IpSet,
    limits: ProfileLimits<C>,
    identity_header: Option<http::HeaderName>,
    /// `<namespace>/<name>`: how the shared store knows it.
    store_name: Box<str>,
}

/// A profile's per-minute limit and quota, compiled.
struct ProfileLimits<C> {
    minute: Option<ProfileLimit<C>>,
    quota: Option<ProfileLimit<C>>,
    on_unavailable: portcullis_config::StoreFallback,
}

impl<C> ProfileLimits<C> {
    fn none() -> Self {
        Self {
            minute: None,
            quota: None,
            on_unavailable: portcullis_config::StoreFallback::LocalShare,
        }
    }
}

/// One limit of a profile.
struct ProfileLimit<C> {
    /// The profile's counter; `None` when each consumer has its own ([`Limiter::consumer`]).
    counter: Option<C>,
    scope: Scope,
    span: Span,
    limit: u32,
    /// Its share per sidecar while the shared store is unavailable.
    share: u32,
}

/// The name of the implicit profile of a route that lists none.
pub const ANONYMOUS: &str = "anonymous";

/// A compiled configuration.
pub struct Engine<L: Limiter = InMemoryLimiter> {
    routes: Vec<CompiledRoute>,
    profiles: Vec<CompiledProfile<L::Counter>>,
    /// The org allowance: counter, limit, and its share per sidecar while the shared store is
    /// unavailable.
    org: Option<(L::Counter, u32, u32)>,
    trusted_proxies: IpSet,
    limiter: Arc<L>,
    /// The key slots of the OAuth2 profiles' `jwksUri`s, for the sidecar to feed.
    jwks: Vec<(Box<str>, Arc<KeySlot>)>,
    /// Some OAuth2 profile introspects tokens.
    introspects: bool,
    /// The OpenID providers of the profiles with sign-in, for the sidecar to discover.
    logins: Vec<LoginProvider>,
    /// Some profile is OAuth1 (a signed form body is read before deciding).
    oauth1: bool,
    /// Some profile is a Builtin OAuth2 provider (its documents are served).
    builtins: bool,
}

/// An OpenID provider some profile signs people in with: its discovery URL and the slot its
/// document (and keys) go to.
#[derive(Debug, Clone)]
pub struct LoginProvider {
    pub url: Box<str>,
    /// The issuer the document must name.
    pub issuer: Box<str>,
    /// Every endpoint must be `https://` (the discovery URL is).
    pub https_only: bool,
    pub slot: Arc<oauth2::login::DiscoverySlot>,
}

impl<L: Limiter> std::fmt::Debug for Engine<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("routes", &self.routes.len())
            .field("profiles", &self.profiles.len())
            .finish_non_exhaustive()
    }
}

impl<L: Limiter> Engine<L> {
    /// Compiles `loaded`, with counters from `limiter` (whose counts outlive this engine).
    pub fn compile(loaded: &Loaded, limiter: Arc<L>) -> Result<Self, CompileError> {
        let config = &loaded.config;
        let mut profiles = Vec::with_capacity(config.profiles.len() + 1);
        let mut jwks: Vec<(Box<str>, Arc<KeySlot>)> = Vec::new();
        let mut logins: Vec<LoginProvider> = Vec::new();
        for p in &config.profiles {
            let secrets = loaded.secrets.profiles.get(&p.name);
            let missing = |what| CompileError::MissingSecret {
                profile: p.name.clone(),
                what,
            };
            let bad_key = |e: signature::BadKey| CompileError::Invalid {
                profile: p.name.clone(),
                message: e.to_string(),
            };
            let auth = match &p.auth {
                ProfileAuth::Anonymous => Auth::Anonymous,
                ProfileAuth::Basic => {
                    let pair = secrets.and_then(|s| s.basic.as_ref()).ok_or_else(|| missing("basic"))?;
                    Auth::Basic(Basic::new(&pair.username, pair.password.expose()))
                }
                ProfileAuth::ApiKey {
                    key_param,
                    key_header,
                    signature,
                } => {
                    let secrets = secrets.ok_or_else(|| missing("apiKeys"))?;
                    let keys =
                        ApiKey::new(key_param, key_header.as_deref(), signature.as_ref(), secrets).map_err(|e| {
                            CompileError::Invalid {
                                profile: p.name.clone(),
                                message: e.to_string(),
                            }
                        })?;
                    Auth::ApiKey(keys)
                }
                ProfileAuth::ClientCertificate { allowed_subjects } => {
                    Auth::ClientCertificate(ClientCertificate::new(allowed_subjects))
                }
                ProfileAuth::OAuth2 {
                    provider,
                    issuer,
                    jwks_uri,
                    audiences,
                    required_scopes,
                    builtin_token_ttl_seconds,
                    builtin_delegation,
                    introspection_url,
                    login,
                } => {
                    let builtin = match builtin_token_ttl_seconds {
                        Some(ttl) => {
                            let clients = secrets.map(|s| &s.oauth2_clients).filter(|c| !c.is_empty());
                            let clients = clients.ok_or_else(|| missing("oauth2Clients"))?;
                            let none = std::collections::BTreeMap::new();
                            let scopes = secrets.map_or(&none, |s| &s.oauth2_client_scopes);
                            let keys = secrets.map_or(&[][..], |s| &s.oauth2_signing_keys[..]);
                            // The key is the profile's, namespace included: a same-named
                            // profile elsewhere with the same clients accepts none of its tokens.
                            let owner = format!("{}/{}", config.namespace, p.name);
                            let mut builtin = oauth2::Builtin::new(&owner, *ttl, clients, scopes, keys)
                                .map_err(|message| CompileError::Invalid {
                                    profile: p.name.clone(),
                                    message,
                                })?
                                .with_book(limiter.grants(&owner));
                            if let Some(d) = builtin_delegation {
                                let owner_token = secrets
                                    .and_then(|s| s.oauth2_owner_token.as_ref())
                                    .ok_or_else(|| missing("oauth2OwnerToken"))?;
                                let none = std::collections::BTreeMap::new();
                                let uris = secrets.map_or(&none, |s| &s.oauth2_redirect_uris);
                                builtin = builtin.with_delegation(oauth2::Delegation::new(d, owner_token, uris));
                            }
                            Some(builtin)
                        }
                        None if provider == "Builtin" => {
                            return Err(CompileError::Invalid {
                                profile: p.name.clone(),
                                message: "provider Builtin without a token lifetime".into(),
                            });
                        }
                        None => None,
                    };
                    let discovery = login.as_ref().map(|l| {
                        let slot = limiter.discovery(&l.discovery_url);
                        if !logins.iter().any(|d| *d.url == *l.discovery_url) {
                            logins.push(LoginProvider {
                                url: l.discovery_url.as_str().into(),
                                issuer: l.issuer.as_str().into(),
                                https_only: l.discovery_url.starts_with("https://"),
                                slot: slot.clone(),
                            });
                        }
                        slot
                    });
                    let slot = jwks_uri.as_deref().map(|uri| {
                        let slot = limiter.jwks(uri);
                        if !jwks.iter().any(|(u, _)| **u == *uri) {
                            jwks.push((uri.into(), slot.clone()));
                        }
                        slot
                    });
                    // Without a jwksUri, bearer tokens are verified with the sign-in
                    // provider's discovered keys.
                    let slot = slot.or_else(|| discovery.as_ref().map(|d| d.keys.clone()));
                    // A sign-in profile that names no audience holds bearer tokens to its own
                    // client id: the provider's keys sign tokens for every client it has.
                    let login_audience: Vec<String> = match login {
                        Some(l) if audiences.is_empty() => vec![l.client_id.clone()],
                        _ => Vec::new(),
                    };
                    let audiences = if login_audience.is_empty() {
                        &audiences[..]
                    } else {
                        &login_audience[..]
                    };
                    let mut verifier = OAuth2::new(issuer.as_deref(), audiences, required_scopes, slot, builtin);
                    if let (Some(l), Some(discovery)) = (login, discovery) {
                        let login_secrets = secrets.and_then(|s| s.login.as_ref()).ok_or_else(|| missing("login"))?;
                        let owner = format!("{}/{}", config.namespace, p.name);
                        let compiled = oauth2::login::Login::new(&owner, &p.name, l, login_secrets, discovery)
                            .map_err(|message| CompileError::Invalid {
                                profile: p.name.clone(),
                                message,
                            })?;
                        verifier = verifier.with_login(compiled);
                    }
                    if let Some(url) = introspection_url {
                        let client = secrets
                            .and_then(|s| s.introspection_client.as_ref())
                            .ok_or_else(|| missing("introspectionClient"))?;
                        let cache = limiter.introspection(&p.name, url);
                        verifier = verifier.with_introspection(oauth2::introspection::Introspection::new(
                            url,
                            &client.client_id,
                            client.client_secret.clone(),
                            cache,
                        ));
                    }
                    Auth::OAuth2(Box::new(verifier))
                }
                ProfileAuth::HttpSignature {
                    standard,
                    algorithms,
                    required_components,
                    max_age_seconds,
                    on_store_unavailable,
                } => {
                    let secrets = secrets.ok_or_else(|| missing("signatureKeys"))?;
                    Auth::HttpSignature(
                        HttpSignature::new(
                            *standard,
                            algorithms,
                            required_components,
                            *max_age_seconds,
                            secrets,
                            limiter.replay_cache(&p.name),
                            *on_store_unavailable,
                        )
                        .map_err(bad_key)?,
                    )
                }
                ProfileAuth::OAuth1 {
                    signature_methods,
                    timestamp_window_seconds,
                    require_token,
                    on_store_unavailable,
                } => {
                    let secrets = secrets.ok_or_else(|| missing("oauth1Consumers"))?;
                    Auth::OAuth1(
                        OAuth1::new(
                            signature_methods,
                            *timestamp_window_seconds,
                            *require_token,
                            secrets,
                            limiter.replay_cache(&p.name),
                            *on_store_unavailable,
                        )
                        .map_err(bad_key)?,
                    )
                }
            };
            let identity_header = p
                .identity_header
                .as_deref()
                .map(|h| {
                    http::HeaderName::try_from(h).map_err(|_| CompileError::Invalid {
                        profile: p.name.clone(),
                        message: format!("identityHeader {h:?} is not a valid header name"),
                    })
                })
                .transpose()?;
            let store_name = format!("{}/{}", config.namespace, p.name);
            if p.quota.is_some() && !limiter.counts_quotas() {
                return Err(CompileError::Invalid {
                    profile: p.name.clone(),
                    message: "quota needs a shared limits store (--limits-store): a sidecar's own count \
                              would multiply with the replicas and restart from zero"
                        .into(),
                });
            }
            // By namespace and name: a shared store counts for every namespace.
            let per_consumer = p.rate_limit_per == portcullis_config::LimitPer::Consumer;
            let limit = |n: u32, span: Span| {
                let scope = match (span, per_consumer) {
                    (Span::Minute, false) => Scope::Profile,
                    (Span::Minute, true) => Scope::Consumer,
                    (Span::Period(_), _) => Scope::Quota,
                };
                ProfileLimit {
                    counter: (!per_consumer).then(|| {
                        limiter.counter(CounterId {
                            scope,
                            name: &store_name,
                            consumer: None,
                            span,
                        })
                    }),
                    scope,
                    span,
                    limit: n,
                    share: n.div_ceil(p.replicas.unwrap_or(1).max(1)),
                }
            };
            let limits = ProfileLimits {
                minute: p.rate_limit_per_minute.map(|n| limit(n, Span::Minute)),
                quota: p.quota.map(|q| limit(q.requests, Span::Period(q.period))),
                on_unavailable: p.on_store_unavailable,
            };
            profiles.push(CompiledProfile {
                name: p.name.as_str().into(),
                auth,
                trusted: IpSet::new(&p.trusted_ip_ranges),
                limits,
                identity_header,
                store_name: store_name.into(),
            });
        }
        let mut anonymous = None;
        let mut routes = Vec::with_capacity(config.routes.len());
        for (index, r) in config.routes.iter().enumerate() {
            let indices: Box<[usize]> = if r.profiles.is_empty() {
                let implicit = *anonymous.get_or_insert_with(|| {
                    profiles.push(CompiledProfile {
                        name: ANONYMOUS.into(),
                        auth: Auth::Anonymous,
                        trusted: IpSet::default(),
                        limits: ProfileLimits::none(),
                        identity_header: None,
                        store_name: format!("{}/{ANONYMOUS}", config.namespace).into(),
                    });
                    profiles.len() - 1
                });
                Box::new([implicit])
            } else {
                r.profiles
                    .iter()
                    .map(|name| {
                        profiles
                            .iter()
                            .position(|p| *p.name == **name)
                            .ok_or_else(|| CompileError::UnknownProfile {
                                route: r.name.clone(),
                                profile: name.clone(),
                            })
                    })
                    .collect::<Result<_, _>>()?
            };
            let challenges = challenges(&r.name, indices.iter().map(|&i| &profiles[i].auth));
            let with_error = |error: &str| -> Box<[String]> {
                let bearer = format!("Bearer realm=\"{}\"", r.name);
                challenges
                    .iter()
                    .map(|c| {
                        if *c != bearer {
                            return c.clone();
                        }
                        let scope = indices.iter().find_map(|&i| match &profiles[i].auth {
                            Auth::OAuth2(o) if error == "insufficient_scope" => Some(o.required_scopes()),
                            _ => None,
                        });
                        match scope {
                            Some(scope) => format!("{bearer}, error=\"{error}\", scope=\"{scope}\""),
                            None => format!("{bearer}, error=\"{error}\""),
                        }
                    })
                    .collect()
            };
            let invalid_token = with_error("invalid_token");
            let matcher = Matcher::new(r);
            let allow = matcher.allow().into();
            let insufficient_scope = with_error("insufficient_scope")
                .into_iter()
                .filter(|c| c.starts_with("Bearer "))
                .collect();
            routes.push(CompiledRoute {
                name: r.name.as_str().into(),
                index,
                backend: r.backend.clone(),
                matcher,
                ssl_only: r.ssl_only,
                tls: r.tls,
                profiles: indices,
                challenges,
                invalid_token,
                insufficient_scope,
                allow,
            });
        }
        routes.sort_by(|a, b| (a.matcher.precedence(), &a.name).cmp(&(b.matcher.precedence(), &b.name)));
        Ok(Self {
            org: config.org_allowance.map(|n| {
                (
                    limiter.counter(CounterId::org()),
                    n,
                    n.div_ceil(config.replicas.unwrap_or(1).max(1)),
                )
            }),
            trusted_proxies: IpSet::from_nets(&config.trusted_proxies),
            introspects: profiles
                .iter()
                .any(|p| matches!(&p.auth, Auth::OAuth2(o) if o.has_introspection())),
            oauth1: profiles.iter().any(|p| matches!(&p.auth, Auth::OAuth1(_))),
            builtins: profiles
                .iter()
                .any(|p| matches!(&p.auth, Auth::OAuth2(o) if o.builtin().is_some())),
            routes,
            profiles,
            limiter,
            jwks,
            logins,
        })
    }

    /// An engine with no routes: every request is answered 404.
    pub fn empty(limiter: Arc<L>) -> Self {
        Self {
            routes: Vec::new(),
            profiles: Vec::new(),
            org: None,
            trusted_proxies: IpSet::default(),
            limiter,
            jwks: Vec::new(),
            logins: Vec::new(),
            introspects: false,
            oauth1: false,
            builtins: false,
        }
    }

    /// The `jwksUri`s of the OAuth2 profiles with the slots their keys go to: the sidecar
    /// fetches each document and [`KeySlot::store`]s it.
    pub fn jwks(&self) -> impl Iterator<Item = (&str, &Arc<KeySlot>)> {
        self.jwks.iter().map(|(u, s)| (&**u, s))
    }

    /// The Builtin provider endpoint `req` is addressed to, if any (`<pathPrefix>/oauth2/...`,
    /// [`provider`]) on the inbound listeners, for the route `req` would otherwise match when
    /// one of its profiles is an OAuth2 profile with provider Builtin. The client address is
    /// judged as for the API itself ([`ProviderEndpoint::from_trusted_address`]).
    pub fn provider_endpoint(&self, req: &RequestView<'_>) -> Option<ProviderEndpoint<'_>> {
        if !self.builtins || req.listener != Listener::Inbound {
            return None;
        }
        // Refused paths are left to [`Engine::decide`] (400).
        let path = path::normalize(req.path).ok()?;
        let (base, tail) = path.rsplit_once("/oauth2/")?;
        let host = req.host.map(routes::normal_host);
        let route = self.route_for(false, host.as_deref(), &path, req.method).ok()??;
        let prefix = route.matcher.prefix().trim_end_matches('/');
        let same = if route.matcher.case_insensitive() {
            prefix.eq_ignore_ascii_case(base)
        } else {
            prefix == base
        };
        if !same {
            return None;
        }
        if route.ssl_only && !req.tls && !self.https_at_trusted_proxy(req) {
            return None;
        }
        let client_ip = ip::client_ip(req.peer, req.headers, &self.trusted_proxies);
        route.profiles.iter().find_map(|&i| {
            let profile = &self.profiles[i];
            let Auth::OAuth2(o) = &profile.auth else {
                return None;
            };
            let builtin = o.builtin()?;
            let call = ProviderCall::parse(tail, req.method, builtin.delegation().is_some())?;
            Some(ProviderEndpoint {
                route,
                profile: &profile.name,
                call,
                issuer: o.issuer().map_or_else(|| self.provider_url(req, prefix), str::to_owned),
                oauth2: o,
                client_ip,
                trusted: profile.trusted.is_empty() || profile.trusted.contains(client_ip),
                throttle: self.limiter.throttle(),
            })
        })
    }

    /// The Builtin providers of the configuration (with a shared store, the sidecar follows
    /// their revocations there).
    pub fn builtin_providers(&self) -> impl Iterator<Item = &oauth2::Builtin> {
        self.profiles.iter().filter_map(|p| match &p.auth {
            Auth::OAuth2(o) => o.builtin(),
            _ => None,
        })
    }

    /// The document of a Builtin provider `req` asks for, if any (`GET`/`HEAD` on an inbound
    /// listener, on a route whose profiles include a Builtin provider):
    /// `<pathPrefix>/oauth2/jwks` (its public keys, a JWK Set), and its authorization server
    /// metadata (RFC 8414) at `/.well-known/oauth-authorization-server<pathPrefix>` (section
    /// 3.1) and `<pathPrefix>/.well-known/oauth-authorization-server`. Public documents:
    /// served whatever the client's address.
    pub fn provider_document(&self, req: &RequestView<'_>) -> Option<ProviderDocument<'_>> {
        const WELL_KNOWN: &str = "/.well-known/oauth-authorization-server";
        if !self.builtins || req.listener != Listener::Inbound || !matches!(req.method, "GET" | "HEAD") {
            return None;
        }
        let path = path::normalize(req.path).ok()?;
        let host = req.host.map(routes::normal_host);
        let (base, jwks) = if let Some(base) = path.strip_suffix("/oauth2/jwks") {
            (base, true)
        } else if let Some(base) = path.strip_suffix(WELL_KNOWN) {
            (base, false)
        } else if let Some(base) = path.strip_prefix(WELL_KNOWN) {
            (base, false)
        } else {
            return None;
        };
        let route = self.routes.iter().find(|r| {
            !r.matcher.egress()
                && r.matcher.host_matches(host.as_deref())
                && r.matcher.prefix().trim_end_matches('/') == base
                && r.profiles
                    .iter()
                    .any(|&i| matches!(&self.profiles[i].auth, Auth::OAuth2(o) if o.builtin().is_some()))
        })?;
        let (profile, oauth2) = route.profiles.iter().find_map(|&i| match &self.profiles[i].auth {
            Auth::OAuth2(o) if o.builtin().is_some() => Some((&*self.profiles[i].name, &**o)),
            _ => None,
        })?;
        let builtin = oauth2.builtin()?;
        let base_url = self.provider_url(req, base);
        let body = if jwks {
            builtin.jwks()
        } else {
            let mut scopes: Vec<&str> = builtin.all_scopes();
            scopes.sort_unstable();
            scopes.dedup();
            let client_auth = ["client_secret_basic", "client_secret_post"];
            let mut doc = serde_json::json!({
                "issuer": oauth2.issuer().map_or_else(|| base_url.clone(), str::to_owned),
                "token_endpoint": format!("{base_url}/oauth2/token"),
                "jwks_uri": format!("{base_url}/oauth2/jwks"),
                "grant_types_supported": ["client_credentials"],
                "response_types_supported": [],
                "token_endpoint_auth_methods_supported": client_auth,
                "revocation_endpoint": format!("{base_url}/oauth2/revoke"),
                "revocation_endpoint_auth_methods_supported": client_auth,
                "scopes_supported": scopes,
            });
            if builtin.delegation().is_some() {
                doc["authorization_endpoint"] = format!("{base_url}/oauth2/authorize").into();
                doc["grant_types_supported"] =
                    serde_json::json!(["authorization_code", "refresh_token", "client_credentials"]);
                doc["response_types_supported"] = serde_json::json!(["code"]);
                doc["response_modes_supported"] = serde_json::json!(["query"]);
                doc["code_challenge_methods_supported"] = serde_json::json!(["S256"]);
                doc["authorization_response_iss_parameter_supported"] = true.into();
                doc["introspection_endpoint"] = format!("{base_url}/oauth2/introspect").into();
                // Authenticated with the owner's credential (`Authorization: Bearer`), which is
                // no registered client authentication method: the field is left out (RFC 8414).
            }
            doc
        };
        Some(ProviderDocument {
            route: &route.name,
            profile,
            body,
        })
    }

    /// The URL of the Builtin provider at path `base` (a route's prefix) as the client
    /// reached it: its issuer when the profile names none.
    fn provider_url(&self, req: &RequestView<'_>, base: &str) -> String {
        let scheme = if req.tls || self.https_at_trusted_proxy(req) {
            "https"
        } else {
            "http"
        };
        let authority = req.authority.or(req.host).unwrap_or("");
        format!("{scheme}://{authority}{base}")
    }

    /// The OpenID providers of the profiles with sign-in: the sidecar fetches each discovery
    /// document (and the keys it names) into its slot.
    pub fn login_providers(&self) -> &[LoginProvider] {
        &self.logins
    }

    /// The sign-in step `req` is addressed to, if any: the callback (`redirectPath`) or the
    /// sign-out path (`logoutPath`) of a profile with sign-in on a route of the request's
    /// host, on the inbound listeners, whatever the route's path prefix. When several
    /// profiles share a callback path, the one whose pending sign-in cookie the browser
    /// holds is chosen.
    pub fn login_endpoint(&self, req: &RequestView<'_>) -> Option<LoginEndpoint<'_>> {
        if self.logins.is_empty() || req.listener != Listener::Inbound {
            return None;
        }
        if !matches!(req.method, "GET" | "HEAD" | "POST") {
            return None;
        }
        let path = path::normalize(req.path).ok()?;
        let host = req.host.map(routes::normal_host);
        let https = req.tls || self.https_at_trusted_proxy(req);
        // Over plain HTTP, only a loopback host keeps the `Secure` sign-in cookies.
        let secure_enough = https || host.as_deref().is_some_and(is_loopback_host);
        let client_ip = ip::client_ip(req.peer, req.headers, &self.trusted_proxies);
        let mut fallback = None;
        for route in &self.routes {
            if route.matcher.egress() || !route.matcher.host_matches(host.as_deref()) {
                continue;
            }
            for &i in route.profiles.iter() {
                let profile = &self.profiles[i];
                let Auth::OAuth2(o) = &profile.auth else { continue };
                let Some(login) = o.login() else { continue };
                let step = if *login.config.redirect_path == *path {
                    LoginStep::Callback
                } else if *login.config.logout_path == *path {
                    LoginStep::Logout
                } else {
                    continue;
                };
                let endpoint = LoginEndpoint {
                    route: &route.name,
                    profile: &profile.name,
                    login,
                    step,
                    https,
                    https_required: !https && (route.ssl_only || !secure_enough),
                    client_ip,
                    trusted: profile.trusted.is_empty() || profile.trusted.contains(client_ip),
                };
                if step == LoginStep::Callback && !login.holds_pending(req.headers, req.query) {
                    fallback.get_or_insert(endpoint);
                    continue;
                }
                return Some(endpoint);
            }
        }
        fallback
    }

    /// Whether refusal `denial` of `req` is to be answered by sending the browser to sign
    /// in rather than with `401`: a `GET` or `HEAD` that accepts `text/html`, carries no
    /// `Authorization` header (API clients keep the `401` and its Bearer challenge, and a
    /// wrong token is never traded for a sign-in), refused for missing or expired
    /// credentials on a route with a sign-in profile whose trusted ranges admit the client.
    ///
    /// The sign-in cookies are `Secure`, which a browser keeps only over HTTPS or from a
    /// loopback host: a plain-HTTP browser of another host is first sent back to the same
    /// URL over HTTPS when the route has a certificate, and told sign-in needs HTTPS when it
    /// has none (never sent on a sign-in that could only fail at the callback).
    pub fn login_redirect(&self, req: &RequestView<'_>, denial: &Denial<'_>) -> Option<LoginRedirect<'_>> {
        if self.logins.is_empty() || !matches!(denial.kind, DenialKind::Unauthorized { .. }) {
            return None;
        }
        if !oauth2::login::is_browser_navigation(req.method, req.headers) {
            return None;
        }
        let route = self.routes.iter().find(|r| *r.name == *denial.route)?;
        let https = req.tls || self.https_at_trusted_proxy(req);
        if route.ssl_only && !https {
            return None;
        }
        let start = route.profiles.iter().find_map(|&i| {
            let profile = &self.profiles[i];
            let Auth::OAuth2(o) = &profile.auth else { return None };
            let login = o.login()?;
            if !profile.trusted.is_empty() && !profile.trusted.contains(denial.client_ip) {
                return None;
            }
            Some(LoginStart {
                route: &route.name,
                profile: &profile.name,
                login,
                https,
            })
        })?;
        let host = req.host.map(routes::normal_host);
        if https || host.as_deref().is_some_and(is_loopback_host) {
            return Some(LoginRedirect::SignIn(start));
        }
        let (route_name, profile) = (start.route, start.profile);
        match (route.tls, host, path::normalize(req.path)) {
            (true, Some(host), Ok(path)) => Some(LoginRedirect::Https {
                route: route_name,
                profile,
                location: https_location(&host, &path, req.query),
            }),
            _ => Some(LoginRedirect::HttpsUnavailable {
                route: route_name,
                profile,
            }),
        }
    }

    /// The sign-in a refused browser is sent to: the first profile of route `route` with
    /// sign-in.
    pub fn login_of_route(&self, route: &str) -> Option<(&str, &oauth2::login::Login)> {
        let route = self.routes.iter().find(|r| *r.name == *route)?;
        route.profiles.iter().find_map(|&i| {
            let profile = &self.profiles[i];
            match &profile.auth {
                Auth::OAuth2(o) => o.login().map(|l| (&*profile.name, l)),
                _ => None,
            }
        })
    }

    /// The session `req` carries that is to be refreshed before [`Engine::decide`] judges
    /// it (close to or past its expiry, with a refresh token), at `now_secs`: for a request
    /// without a bearer token, on a route whose sign-in profile admits the client's address.
    pub fn refresh_wanted(&self, req: &RequestView<'_>, now_secs: u64) -> Option<RefreshRequest<'_>> {
        if self.logins.is_empty() || oauth2::bearer_token(req.headers).is_some() {
            return None;
        }
        let (route, client_ip) = self.served_route(req)?;
        route.profiles.iter().find_map(|&i| {
            let profile = &self.profiles[i];
            let Auth::OAuth2(o) = &profile.auth else { return None };
            let login = o.login()?;
            if !profile.trusted.is_empty() && !profile.trusted.contains(client_ip) {
                return None;
            }
            let session = login.session(req.headers)?;
            session.wants_refresh(now_secs).then_some(RefreshRequest {
                route: &route.name,
                profile: &profile.name,
                login,
                session,
            })
        })
    }

    /// Whether some profile is OAuth1, whose signatures may cover a form body
    /// ([`Engine::form_wanted`]).
    pub fn reads_forms(&self) -> bool {
        self.oauth1
    }

    /// The route whose decision needs `req`'s body ([`RequestView::form`]), if any: a
    /// single-part `application/x-www-form-urlencoded` body, whose parameters an OAuth 1.0a
    /// signature covers, to a route with an OAuth1 profile. The caller reads it, bounded,
    /// before deciding.
    pub fn form_wanted(&self, req: &RequestView<'_>) -> Option<&str> {
        if !self.oauth1 || !oauth1::is_form(req.headers) {
            return None;
        }
        let (route, _) = self.served_route(req)?;
        route
            .profiles
            .iter()
            .any(|&i| matches!(self.profiles[i].auth, Auth::OAuth1(_)))
            .then_some(&*route.name)
    }

    /// The route `req` is for and the client's address, when the route would serve it as it
    /// came (a valid path, HTTPS where the route is `sslOnly`): what the steps asked about
    /// before [`Engine::decide`] (introspection, a session refresh) look at.
    fn served_route(&self, req: &RequestView<'_>) -> Option<(&CompiledRoute, IpAddr)> {
        let path = path::normalize(req.path).ok()?;
        let host = req.host.map(routes::normal_host);
        let egress = req.listener == Listener::Egress;
        let route = self.route_for(egress, host.as_deref(), &path, req.method).ok()??;
        if route.ssl_only && !req.tls && !self.https_at_trusted_proxy(req) {
            return None;
        }
        Some((route, ip::client_ip(req.peer, req.headers, &self.trusted_proxies)))
    }

    /// The token `req` carries that must be introspected before [`Engine::decide`] can judge
    /// it, if any: its route's first profile that introspects it, admits the client's address
    /// (no identity provider is asked on behalf of a client the profile refuses anyway) and
    /// holds no fresh answer about it. `None` at once (no allocation) when no profile
    /// introspects; call again after storing an answer, for a route with several such
    /// profiles.
    pub fn introspection_wanted<'r>(&self, req: &RequestView<'r>, now_ms: u64) -> Option<IntrospectionRequest<'_, 'r>> {
        if !self.introspects {
            return None;
        }
        let token = oauth2::bearer_token(req.headers)?;
        // Refused paths are refused before any identity provider is asked.
        let (route, client_ip) = self.served_route(req)?;
        let mut digest = None;
        route.profiles.iter().find_map(|&i| {
            let profile = &self.profiles[i];
            let Auth::OAuth2(o) = &profile.auth else {
                return None;
            };
            let introspection = o.introspects(token)?;
            if !profile.trusted.is_empty() && !profile.trusted.contains(client_ip) {
                return None;
            }
            let d = digest.get_or_insert_with(|| oauth2::introspection::digest(token));
            if introspection.cache.get(d, now_ms).is_some() {
                return None;
            }
            Some(IntrospectionRequest {
                route: &route.name,
                profile: &profile.name,
                client_ip,
                introspection,
                token,
            })
        })
    }

    /// The compiled routes, most specific first.
    pub fn routes(&self) -> &[CompiledRoute] {
        &self.routes
    }

    /// The route a request goes to, its path in normal form: the first in precedence order
    /// that matches. `Err` when a more specific case-sensitive route matches the path only
    /// when letter case is ignored: an app that ignores case would serve the request as that
    /// route, so it is not handed to a broader one.
    fn route_for(
        &self,
        egress: bool,
        host: Option<&str>,
        path: &str,
        method: &str,
    ) -> Result<Option<&CompiledRoute>, NotRouted<'_>> {
        let mut case_variant = false;
        // The most specific route on the path that does not list the method: only another
        // route at the same place (host and prefix) may take the call.
        let mut other_method: Option<&CompiledRoute> = None;
        for route in &self.routes {
            match route.matcher.path_match(egress, host, path, method) {
                PathMatch::Yes if case_variant => return Err(NotRouted::CaseVariant),
                PathMatch::Yes => match other_method {
                    Some(blocked) if blocked.matcher.place(host) != route.matcher.place(host) => {
                        return Err(NotRouted::OtherMethod(blocked));
                    }
                    _ => return Ok(Some(route)),
                },
                PathMatch::OnlyIgnoringCase => case_variant = true,
                PathMatch::OtherMethod => {
                    other_method.get_or_insert(route);
                }
                PathMatch::No => {}
            }
        }
        match other_method {
            Some(blocked) => Err(NotRouted::OtherMethod(blocked)),
            None => Ok(None),
        }
    }

    /// Decides what to do with `req` at `now` ([`Now`]).
    pub fn decide(&self, req: &RequestView<'_>, now: impl Into<Now>) -> Outcome<'_> {
        let now = now.into();
        let (now_ms, window_ms) = (now.unix_ms, now.mono_ms);
        let path = match path::normalize(req.path) {
            Ok(path) => path,
            Err(e) => return Outcome::BadRequest { reason: e.reason() },
        };
        // One authority, in a form no app can read as another host (userinfo, `/`, `\`, ...).
        if req.host.is_some_and(|h| !routes::valid_host(h))
            || req.authority.is_some_and(|a| !routes::valid_authority(a))
        {
            return Outcome::BadRequest {
                reason: "malformed host",
            };
        }
        // Methods are case-sensitive (RFC 9110), frameworks upper-case them: `get` would match
        // no `GET`-only route here and reach the app's GET handler through a broader one.
        if req.method.bytes().any(|b| b.is_ascii_lowercase()) {
            return Outcome::BadRequest {
                reason: "method not in upper case",
            };
        }
        // One credential per request: with two `Authorization` fields the sidecar would check
        // one and the app might read the other (RFC 9110 allows only one).
        if req.headers.get_all(http::header::AUTHORIZATION).iter().nth(1).is_some() {
            return Outcome::BadRequest {
                reason: "more than one Authorization header",
            };
        }
        let host = req.host.map(routes::normal_host);
        let host = host.as_deref();
        let egress = req.listener == Listener::Egress;
        let route = match self.route_for(egress, host, &path, req.method) {
            Ok(Some(route)) => route,
            Ok(None) => return Outcome::NoRoute,
            Err(NotRouted::CaseVariant) => return Outcome::BadRequest { reason: CASE_VARIANT },
            Err(NotRouted::OtherMethod(route)) => {
                return Outcome::Deny(Denial {
                    route: &route.name,
                    profile: "-",
                    client_ip: ip::client_ip(req.peer, req.headers, &self.trusted_proxies),
                    kind: DenialKind::MethodNotAllowed { allow: &route.allow },
                    reason: "method not allowed on this route",
                    identity: None,
                });
            }
        };
        // Letters outside ASCII that some platforms' case-insensitive comparisons take for
        // ASCII ones (Java's `equalsIgnoreCase` reads `ı` as `i`): a path that routes
        // elsewhere once they are folded could be served as that other route.
        if let Some(folded) = path::fold_unicode_case(&path)
            && !matches!(self.route_for(egress, host, &folded, req.method), Ok(Some(r)) if std::ptr::eq(r, route))
        {
            return Outcome::BadRequest { reason: CASE_VARIANT };
        }
        let client_ip = ip::client_ip(req.peer, req.headers, &self.trusted_proxies);
        if route.ssl_only && !req.tls && !self.https_at_trusted_proxy(req) {
            return match host {
                Some(host) => Outcome::Redirect {
                    route: &route.name,
                    location: https_location(host, &path, req.query),
                },
                None => Outcome::Deny(Denial {
                    route: &route.name,
                    profile: "-",
                    client_ip,
                    kind: DenialKind::Forbidden,
                    reason: "https required and no host to redirect to",
                    identity: None,
                }),
            };
        }
        let now_secs = now_ms / 1000;
        let throttle = self.limiter.throttle();
        let claimed = || auth::claimed_basic_user(req.headers);
        if let Some(t) = throttle.filter(|t| !t.is_empty())
            && let Some(retry_after_secs) = t.blocked(client_ip, claimed().as_deref(), window_ms)
        {
            return Outcome::Deny(Denial {
                route: &route.name,
                profile: "-",
                client_ip,
                kind: DenialKind::Throttled { retry_after_secs },
                reason: "too many failed authentications",
                identity: None,
            });
        }
        let mut guessed = false;
        let mut forbidden: Option<&str> = None;
        let mut insufficient: Option<&str> = None;
        let mut rejection: Option<(&str, Rejection)> = None;
        let mut bearer_refused = false;
        let mut email: Option<String> = None;
        let mut client: Option<String> = None;
        for &i in route.profiles.iter() {
            let profile = &self.profiles[i];
            // Trusted ranges before credentials: a client outside them learns nothing about
            // its credentials (right and wrong ones get the same 403).
            if !profile.trusted.is_empty() && !profile.trusted.contains(client_ip) {
                forbidden.get_or_insert(&profile.name);
                continue;
            }
            let mut signed = None;
            let identity = match &profile.auth {
                Auth::Anonymous => Ok(Cow::Borrowed(ANONYMOUS)),
                Auth::Basic(b) => b.check(req.headers).map(Cow::Borrowed),
                Auth::ApiKey(k) => k.check(req.query, req.headers, now_secs).map(Cow::Borrowed),
                // The subject belongs to the connection, not to the engine.
                Auth::ClientCertificate(c) => c
                    .check(&profile.name, req.client_cert)
                    .map(|s| Cow::Owned(s.to_owned())),
                Auth::HttpSignature(s) => s.check(req, now_secs).map(|mut v| {
                    let key_id = std::mem::take(&mut v.key_id);
                    signed = Some(v);
                    Cow::Owned(key_id)
                }),
                Auth::OAuth1(o) => {
                    let https = req.tls || self.https_at_trusted_proxy(req);
                    o.check(req, https, now_secs).map(|(consumer, v)| {
                        signed = v;
                        Cow::Owned(consumer)
                    })
                }
                Auth::OAuth2(o) => match o.check(req.headers, now_ms) {
                    Ok(TokenCheck::Admitted { identity, client: c }) => {
                        client = c;
                        Ok(Cow::Owned(identity))
                    }
                    Ok(TokenCheck::Session { subject, email: e }) => {
                        email = e;
                        Ok(Cow::Owned(subject))
                    }
                    Ok(TokenCheck::InsufficientScope) => {
                        insufficient.get_or_insert(&profile.name);
                        continue;
                    }
                    Err(r) => {
                        bearer_refused |= matches!(r, Rejection::Wrong(_));
                        Err(r)
                    }
                },
            };
            let identity = match identity {
                Ok(identity) => identity,
                Err(r) => {
                    // A refused password or API key counts against the throttle; a bearer token
                    // or a signature (made with a key the client must hold) cannot be guessed,
                    // and a missing credential is no guess.
                    guessed |=
                        matches!(r, Rejection::Wrong(_)) && matches!(profile.auth, Auth::Basic(_) | Auth::ApiKey(_));
                    // A wrong credential says more than a missing one of another kind.
                    if rejection.is_none_or(|(_, prev)| matches!(prev, Rejection::Missing(_))) {
                        rejection = Some((&profile.name, r));
                    }
                    continue;
                }
            };
            return match self.admit(route, i, identity, signed, req, client_ip, now, path.into()) {
                Outcome::Allow(mut admission) => {
                    if email.is_some() || client.is_some() {
                        admission.told = Some(Box::new(Told { email, client }));
                    }
                    Outcome::Allow(admission)
                }
                other => other,
            };
        }
        // 403 only when no profile whose ranges admit the client looked at its credentials.
        if let Some(profile) = forbidden.filter(|_| rejection.is_none() && insufficient.is_none()) {
            return Outcome::Deny(Denial {
                route: &route.name,
                profile,
                client_ip,
                kind: DenialKind::Forbidden,
                reason: "client address outside the profile's trusted IP ranges",
                identity: None,
            });
        }
        if let Some(profile) = insufficient {
            return Outcome::Deny(Denial {
                route: &route.name,
                profile,
                client_ip,
                kind: DenialKind::InsufficientScope {
                    challenges: &route.insufficient_scope,
                },
                reason: "token lacks a required scope",
                identity: None,
            });
        }
        if guessed && let Some(t) = throttle {
            t.failed(client_ip, claimed().as_deref(), window_ms);
        }
        let (profile, reason) = rejection.map_or(("-", "no credentials"), |(p, r)| (p, r.reason()));
        Outcome::Deny(Denial {
            route: &route.name,
            profile,
            client_ip,
            kind: DenialKind::Unauthorized {
                challenges: if bearer_refused {
                    &route.invalid_token
                } else {
                    &route.challenges
                },
            },
            reason,
            identity: None,
        })
    }

    /// Whether a trusted proxy in front (a TLS-terminating ingress) says the client used
    /// HTTPS: the peer is in `trustedProxies` and the last `X-Forwarded-Proto` it sent is
    /// `https`. From anyone else the header means nothing.
    fn https_at_trusted_proxy(&self, req: &RequestView<'_>) -> bool {
        !self.trusted_proxies.is_empty()
            && self.trusted_proxies.contains(req.peer)
            && req
                .headers
                .get_all("x-forwarded-proto")
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
    }

    #[allow(clippy::too_many_arguments)]
    fn admit<'e>(
        &'e self,
        route: &'e CompiledRoute,
        index: usize,
        identity: Cow<'e, str>,
        signed: Option<Signed>,
        req: &RequestView<'_>,
        client_ip: IpAddr,
        now: Now,
        path: NormalPath,
    ) -> Outcome<'e> {
        let taken = match self.hits(index, &identity, now) {
            Ok(None) => None,
            Ok(Some(hits)) => match self.limiter.try_acquire(&hits.list(), now) {
                Some(taken) => Some((taken, hits.scopes)),
                None => {
                    // Decided on the shared store: nothing taken yet, nothing recorded.
                    let digest = signed.as_ref().and_then(|s| s.digest);
                    let scopes = hits.scopes;
                    drop(hits);
                    let mut admission = self.admission(route, index, identity, req, client_ip, path, digest);
                    admission.pending = Some(Pending {
                        index,
                        limits: true,
                        signed,
                        scopes,
                    });
                    return Outcome::Allow(admission);
                }
            },
            Err((scope, refusal)) => {
                let mut denial = self.rate_denial(route, index, client_ip, scope, refusal);
                denial.identity = Some(identity);
                return Outcome::Deny(denial);
            }
        };
        let grant = match taken {
            None => None,
            Some((Ok(grant), _)) => Some((index, grant)),
            Some((Err(refusal), scopes)) => {
                let mut denial = self.rate_denial(route, index, client_ip, scopes[refusal.index], refusal);
                denial.identity = Some(identity);
                return Outcome::Deny(denial);
            }
        };
        let digest = signed.as_ref().and_then(|s| s.digest);
        let mut admission = self.admission(route, index, identity, req, client_ip, path, digest);
        admission.rate = grant.as_ref().map(|(_, g)| g.info);
        admission.grant = grant;
        if signed.is_some() && self.limiter.shares_replays() {
            // Remembered on the shared store, by the caller, before the call goes on.
            admission.pending = Some(Pending {
                index,
                limits: false,
                signed,
                scopes: [Scope::Profile; MAX_HITS],
            });
            return Outcome::Allow(admission);
        }
        if let Some(signed) = signed
            && let Err(denial) = self.record_signature(index, &admission, signed, now)
        {
            self.refund(&admission);
            return Outcome::Deny(denial);
        }
        Outcome::Allow(admission)
    }

    /// The limits that apply to a call admitted by profile `index` for `consumer`; `None`
    /// when none does; the scope and refusal when a consumer's counters cannot be kept.
    fn hits(
        &self,
        index: usize,
        consumer: &str,
        now: Now,
    ) -> Result<Option<LimitHits<'_, L::Counter>>, (Scope, Refusal)> {
        use portcullis_config::StoreFallback;
        let profile = &self.profiles[index];
        let limits = &profile.limits;
        let mut hits = LimitHits::new();
        if let Some((o, n, share)) = &self.org {
            hits.push(Held::Engine(o), *n, Scope::Org, *share);
        }
        for l in [&limits.minute, &limits.quota].into_iter().flatten() {
            let held = match &l.counter {
                Some(c) => Held::Engine(c),
                None => {
                    let id = CounterId {
                        scope: l.scope,
                        name: &profile.store_name,
                        consumer: Some(consumer),
                        span: l.span,
                    };
                    match self.limiter.consumer(id, now) {
                        Some(c) => Held::Consumer(c),
                        None => {
                            let info = RateInfo {
                                limit: l.limit,
                                remaining: 0,
                                reset_secs: 1,
                            };
                            let why = Refused::TooManyConsumers;
                            return Err((
                                l.scope,
                                Refusal {
                                    index: hits.len,
                                    info,
                                    why,
                                },
                            ));
                        }
                    }
                }
            };
            hits.push(held, l.limit, l.scope, l.share);
        }
        if hits.len == 0 {
            return Ok(None);
        }
        // The admitting profile's choice, for the org allowance too (a profile without a
        // limit of its own enforces its share of the org allowance).
        hits.fallback = match limits.on_unavailable {
            StoreFallback::LocalShare => Fallback::LocalShare(hits.shares),
            StoreFallback::Allow => Fallback::Allow,
            StoreFallback::Deny => Fallback::Deny,
        };
        Ok(Some(hits))
    }

    /// The hits an admission waiting for its limits must take on the shared store; `None`
    /// when it waits for none.
    /// (A consumer's counters dropped since the decision for want of room: `None`, and the
    /// call is refused by [`settle`](Self::settle), fail closed.)
    pub fn pending_hits(&self, admission: &Admission<'_>, now: Now) -> Option<LimitHits<'_, L::Counter>> {
        let pending = admission.pending.as_ref().filter(|p| p.limits)?;
        self.hits(pending.index, &admission.identity, now).ok().flatten()
    }

    /// The signature an admission waiting for the shared store must remember there before
    /// it is settled (only once its limits admitted it); `None` when there is none, or the
    /// limiter keeps signatures in this process.
    pub fn pending_replay<'a>(&'a self, admission: &'a Admission<'_>, now: Now) -> Option<ReplayEntry<'a>> {
        if !self.limiter.shares_replays() {
            return None;
        }
        let pending = admission.pending.as_ref()?;
        let signed = pending.signed.as_ref()?;
        let profile = &self.profiles[pending.index];
        let guard = profile.auth.replay_guard()?;
        Some(ReplayEntry {
            profile: &profile.store_name,
            key_id: &admission.identity,
            replay_key: &signed.replay_key,
            ttl_secs: guard.remember_for(signed, now.unix_ms / 1000),
            window_secs: guard.remember_at_most(),
            budget: guard.share(),
        })
    }

    /// Completes an admission that was waiting for its limits with what the shared store
    /// answered: the call stays admitted (its signature now recorded against replay), or the
    /// denial it gets instead (429 over a limit, nothing consumed; 401 for a replayed
    /// signature, the hit given back).
    ///
    /// `taken`: what the store answered for [`Engine::pending_hits`] (`None` when there were
    /// none); `replay`: what it said of [`Engine::pending_replay`] (`None` when there was
    /// none: a signature is then recorded in this process).
    pub fn settle<'e>(
        &'e self,
        admission: &mut Admission<'e>,
        taken: Option<Result<Grant, Refusal>>,
        replay: Option<SharedReplay>,
        now: Now,
    ) -> Result<(), Denial<'e>> {
        let Some(pending) = admission.pending.take() else {
            return Ok(());
        };
        match taken {
            Some(Ok(grant)) => {
                // Admitted uncounted (`Allow` while the store is unavailable): no budget to tell.
                admission.rate = (grant.counted != Counted::Nowhere).then_some(grant.info);
                admission.grant = Some((pending.index, grant));
            }
            Some(Err(refusal)) => {
                let scope = pending.scopes.get(refusal.index).copied().unwrap_or(Scope::Profile);
                let mut denial = self.rate_denial(admission.route, pending.index, admission.client_ip, scope, refusal);
                denial.identity = Some(admission.identity.clone());
                return Err(denial);
            }
            // Limits still owed and not taken: fail closed.
            None if pending.limits => {
                return Err(self.store_denial(admission, "rate limits not checked"));
            }
            None => {}
        }
        let Some(signed) = pending.signed else {
            return Ok(());
        };
        let refused = |reason| {
            self.refund(admission);
            Err(self.unauthorized(admission, reason))
        };
        let local = |admission: &mut Admission<'e>| match self.record_signature(pending.index, admission, signed, now) {
            Ok(()) => Ok(()),
            Err(denial) => {
                self.refund(admission);
                Err(denial)
            }
        };
        let local_fallback = self.profiles[pending.index]
            .auth
            .replay_guard()
            .is_some_and(|g| g.store_fallback() == portcullis_config::ReplayFallback::Local);
        match replay {
            None => local(admission),
            // A profile that falls back on this sidecar's memory remembers here too: a
            // signature it admitted while the store was unavailable (not in the store) is
            // refused when the store is back, and one admitted before is refused here during
            // an outage.
            Some(SharedReplay::Fresh) if local_fallback => local(admission),
            Some(SharedReplay::Fresh) => Ok(()),
            Some(SharedReplay::Seen) => refused("signature replayed"),
            Some(SharedReplay::Full) => refused("replay cache full (refused, fails closed)"),
            Some(SharedReplay::Unavailable) if local_fallback => local(admission),
            Some(SharedReplay::Unavailable) => {
                self.refund(admission);
                Err(self.store_denial(admission, "replay store unavailable (signed calls refused)"))
            }
        }
    }

    fn unauthorized<'e>(&'e self, admission: &Admission<'e>, reason: &'static str) -> Denial<'e> {
        Denial {
            route: &admission.route.name,
            profile: admission.profile,
            client_ip: admission.client_ip,
            kind: DenialKind::Unauthorized {
                challenges: &admission.route.challenges,
            },
            reason,
            identity: Some(admission.identity.clone()),
        }
    }

    fn store_denial<'e>(&'e self, admission: &Admission<'e>, reason: &'static str) -> Denial<'e> {
        Denial {
            route: &admission.route.name,
            profile: admission.profile,
            client_ip: admission.client_ip,
            kind: DenialKind::StoreUnavailable { retry_after_secs: 1 },
            reason,
            identity: Some(admission.identity.clone()),
        }
    }

    fn rate_denial<'e>(
        &'e self,
        route: &'e CompiledRoute,
        index: usize,
        client_ip: IpAddr,
        scope: Scope,
        refusal: Refusal,
    ) -> Denial<'e> {
        let limited = DenialKind::RateLimited {
            scope,
            info: refusal.info,
        };
        let (kind, reason) = match refusal.why {
            Refused::StoreUnavailable => (
                DenialKind::StoreUnavailable { retry_after_secs: 1 },
                "limits store unavailable (the profile refuses calls then)",
            ),
            Refused::TooManyConsumers => (
                DenialKind::TooManyConsumers { retry_after_secs: 1 },
                "too many consumers with live counters (fails closed)",
            ),
            Refused::OverLimit => (
                limited,
                match scope {
                    Scope::Org => "org allowance exceeded",
                    Scope::Profile => "profile rate limit exceeded",
                    Scope::Consumer => "consumer rate limit exceeded",
                    Scope::Quota => "quota exceeded",
                },
            ),
        };
        Denial {
            route: &route.name,
            profile: &self.profiles[index].name,
            client_ip,
            kind,
            reason,
            identity: None,
        }
    }

    /// Records the signature that admitted a call against replay (only an otherwise admitted
    /// call uses its signature up, see [`signature`]).
    fn record_signature<'e>(
        &'e self,
        index: usize,
        admission: &Admission<'e>,
        signed: Signed,
        now: Now,
    ) -> Result<(), Denial<'e>> {
        let Some(guard) = self.profiles[index].auth.replay_guard() else {
            return Ok(());
        };
        guard
            .record(&signed, &admission.identity, now.unix_ms / 1000)
            .map_err(|r| self.unauthorized(admission, r.reason()))
    }

    /// An admission by profile `index`, its limits not taken yet.
    #[allow(clippy::too_many_arguments)]
    fn admission<'e>(
        &'e self,
        route: &'e CompiledRoute,
        index: usize,
        identity: Cow<'e, str>,
        req: &RequestView<'_>,
        client_ip: IpAddr,
        path: NormalPath,
        body_digest: Option<BodyDigest>,
    ) -> Admission<'e> {
        let profile = &self.profiles[index];
        // Seed 002 section 5: the identity header overrides what is audited, never who was
        // authenticated (the client chooses its value).
        let audit_identity = profile
            .identity_header
            .as_ref()
            .and_then(|h| req.headers.get(h))
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(|v| Cow::Owned(v.to_owned()));
        Admission {
            route,
            profile: &profile.name,
            identity,
            audit_identity,
            client_ip,
            rate: None,
            body_digest,
            path,
            https: req.tls || self.https_at_trusted_proxy(req),
            told: None,
            grant: None,
            pending: None,
        }
    }

    /// Gives back the hit an admission took (the backend answered 404).
    pub fn refund(&self, admission: &Admission<'_>) {
        let Some((index, grant)) = &admission.grant else {
            return;
        };
        let Some(profile) = self.profiles.get(*index) else {
            return;
        };
        let mut consumers: [Option<L::Counter>; MAX_HITS] = [None, None, None];
        let mut counters: [Option<&L::Counter>; MAX_HITS] = [None; MAX_HITS];
        let mut len = 0;
        if let Some((o, _, _)) = &self.org {
            counters[len] = Some(o);
            len += 1;
        }
        let limits = [&profile.limits.minute, &profile.limits.quota];
        for (slot, l) in consumers.iter_mut().zip(limits.into_iter().flatten()) {
            if l.counter.is_none() {
                // A consumer's counter no longer kept holds none of its hits: nothing to give.
                *slot = self.limiter.kept_consumer(CounterId {
                    scope: l.scope,
                    name: &profile.store_name,
                    consumer: Some(&admission.identity),
                    span: l.span,
                });
                if slot.is_none() {
                    return;
                }
            }
        }
        for (l, consumer) in limits.into_iter().flatten().zip(&consumers) {
            counters[len] = l.counter.as_ref().or(consumer.as_ref());
            len += 1;
        }
        let counters: Vec<&L::Counter> = counters[..len].iter().flatten().copied().collect();
        if !counters.is_empty() {
            self.limiter.refund(&counters, grant);
        }
    }
}

/// `WWW-Authenticate` challenges for a route's profiles, one per kind.
fn challenges<'a>(route: &str, auths: impl Iterator<Item = &'a Auth>) -> Box<[String]> {
    let mut out: Vec<String> = Vec::new();
    for auth in auths {
        let c = match auth {
            Auth::Basic(_) => format!("Basic realm=\"{route}\", charset=\"UTF-8\""),
            Auth::ApiKey(k) => format!("APIKey realm=\"{route}\", param=\"{}\"", k.key_param()),
            Auth::HttpSignature(_) => format!("Signature realm=\"{route}\""),
            Auth::OAuth1(_) => format!("OAuth realm=\"{route}\""),
            Auth::OAuth2(_) => format!("Bearer realm=\"{route}\""),
            Auth::Anonymous | Auth::ClientCertificate(_) => continue,
        };
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out.into_boxed_slice()
}

/// Which sign-in step a request is ([`Engine::login_endpoint`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginStep {
    /// The provider sends the browser back here with a code.
    Callback,
    /// Signing out.
    Logout,
}

/// A request to a sign-in step of a profile ([`Engine::login_endpoint`]).
#[derive(Debug, Clone, Copy)]
pub struct LoginEndpoint<'e> {
    pub route: &'e str,
    pub profile: &'e str,
    pub login: &'e oauth2::login::Login,
    pub step: LoginStep,
    /// The client used HTTPS (to the sidecar, or to a trusted proxy in front).
    pub https: bool,
    /// The request came over plain HTTP and the route is `sslOnly` or the host is not a
    /// loopback one (whose browsers keep `Secure` cookies over plain HTTP): refused.
    pub https_required: bool,
    pub client_ip: IpAddr,
    /// The client's address is in the profile's trusted ranges (or it has none).
    pub trusted: bool,
}

/// Where a browser refused for want of a session goes ([`Engine::login_redirect`]).
#[derive(Debug)]
pub enum LoginRedirect<'e> {
    /// To the provider, to sign in.
    SignIn(LoginStart<'e>),
    /// Back to `location`, the same URL over HTTPS, first: the browser came over plain HTTP
    /// to a route that also serves HTTPS.
    Https {
        route: &'e str,
        profile: &'e str,
        location: String,
    },
    /// Nowhere: plain HTTP to a host the browser would not keep `Secure` cookies for, on a
    /// route without a certificate. An error page says sign-in needs HTTPS.
    HttpsUnavailable { route: &'e str, profile: &'e str },
}

/// A browser to send to sign in ([`Engine::login_redirect`]).
#[derive(Debug, Clone, Copy)]
pub struct LoginStart<'e> {
    pub route: &'e str,
    pub profile: &'e str,
    pub login: &'e oauth2::login::Login,
    /// The client used HTTPS (the callback URL's scheme).
    pub https: bool,
}

/// A session to refresh before deciding ([`Engine::refresh_wanted`]).
#[derive(Debug)]
pub struct RefreshRequest<'e> {
    pub route: &'e str,
    pub profile: &'e str,
    pub login: &'e oauth2::login::Login,
    pub session: oauth2::login::Session,
}

/// A Builtin provider's public document ([`Engine::provider_document`]).
#[derive(Debug)]
pub struct ProviderDocument<'e> {
    pub route: &'e str,
    pub profile: &'e str,
    /// The JSON to answer with.
    pub body: serde_json::Value,
}

/// Whether browsers treat `host` (lower case, without port) as a secure context over plain
/// HTTP and keep `Secure` cookies from it: `localhost`, `*.localhost` and loopback addresses.
fn is_loopback_host(host: &str) -> bool {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    host == "localhost" || host.ends_with(".localhost") || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `https://host/path?query`.
fn https_location(host: &str, path: &str, query: Option<&str>) -> String {
    let mut l = String::with_capacity(8 + host.len() + path.len() + query.map_or(0, |q| q.len() + 1));
    l.push_str("https://");
    l.push_str(host);
    l.push_str(path);
    if let Some(q) = query {
        l.push('?');
        l.push_str(q);
    }
    l
}

#[cfg(test)]
mod tests;
