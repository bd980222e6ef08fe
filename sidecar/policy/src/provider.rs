//! The Builtin provider's endpoints under a route (`<pathPrefix>/oauth2/...`), as pure
//! functions of the request, the compiled profile, the clock, the grant book and the random
//! bytes the sidecar draws:
//!
//! | path | method | who | what |
//! |---|---|---|---|
//! | `token` | POST | client | `client_credentials`, `authorization_code` (PKCE S256), `refresh_token` (rotated) |
//! | `revoke` | POST | client | RFC 7009: a refresh token or an access token |
//! | `authorize` | GET | browser | checks the request, sends the user to the owner's consent page |
//! | `grants` | POST | owner | makes a grant from a consent request: its code and where to send the user |
//! | `grants/deny` | POST | owner | where to send a user who refused |
//! | `grants?user=` / `?client_id=` | GET, DELETE | owner | lists or revokes a user's or a client's grants |
//! | `grants/<id>` | GET, DELETE | owner | one grant |
//! | `introspect` | POST | owner | RFC 7662 |
//!
//! Errors are RFC 6749's (section 5.2 at the token endpoint, 4.1.2.1 as redirects from the
//! authorization endpoint). The authorization request travels to the consent page and back
//! as a `request` handle: a JWS of the provider's key (type `pc-request+jwt`, ten minutes),
//! so any replica takes it back.

use std::net::IpAddr;

use http::HeaderMap;
use serde_json::{Value, json};

use crate::oauth2::grants::{self, GrantRandom, NewGrant, RedeemError};
use crate::oauth2::{self, Builtin, OAuth2, TokenToIssue};
use crate::{CompiledRoute, auth, query, throttle};

/// The shortest grant: long enough for a token after the clock-skew allowance.
const MIN_GRANT_SECS: u64 = 300;
/// Seconds a consent request handle stays valid.
pub const REQUEST_TTL_SECS: u64 = 600;
/// Longest `state` carried through.
const MAX_STATE_BYTES: usize = 1024;
const REQUEST_TYP: &str = "pc-request+jwt";

/// Which endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderCall {
    Token,
    Revoke,
    Introspect,
    Authorize,
    /// The grant API: `rest` is what follows `grants` (``, `/deny`, `/<id>`).
    Grants {
        rest: String,
    },
}

impl ProviderCall {
    /// The call `tail` (what follows `<prefix>/oauth2/`) with `method` names, if any.
    pub(crate) fn parse(tail: &str, method: &str, delegation: bool) -> Option<Self> {
        let call = match (tail, method) {
            ("token", "POST") => Self::Token,
            ("revoke", "POST") => Self::Revoke,
            ("introspect", "POST") if delegation => Self::Introspect,
            ("authorize", "GET" | "HEAD") if delegation => Self::Authorize,
            ("grants", "GET" | "POST" | "DELETE") if delegation => Self::Grants { rest: String::new() },
            ("grants/deny", "POST") if delegation => Self::Grants { rest: "/deny".into() },
            ("grants/describe", "POST") if delegation => Self::Grants {
                rest: "/describe".into(),
            },
            (t, "GET" | "DELETE") if delegation => {
                let id = t.strip_prefix("grants/")?;
                (id.len() == 22 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
                    .then(|| Self::Grants { rest: format!("/{id}") })?
            }
            _ => return None,
        };
        Some(call)
    }

    /// Whether the call reads a body.
    pub fn reads_body(&self) -> bool {
        !matches!(self, Self::Authorize) && !matches!(self, Self::Grants { rest } if rest.len() == 23)
    }
}

/// A Builtin provider endpoint a request is addressed to ([`crate::Engine::provider_endpoint`]).
#[derive(Debug, Clone)]
pub struct ProviderEndpoint<'e> {
    pub route: &'e CompiledRoute,
    pub profile: &'e str,
    pub call: ProviderCall,
    /// The `iss` of the tokens it issues: the profile's issuer, else the provider's URL.
    pub(crate) issuer: String,
    /// The client, after trusted proxies.
    pub client_ip: IpAddr,
    pub(crate) oauth2: &'e OAuth2,
    pub(crate) trusted: bool,
    /// The failed-authentication counts: wrong client secrets and owner credentials count
    /// like wrong passwords.
    pub(crate) throttle: Option<&'e throttle::Throttle>,
}

/// The random bytes one call may need (the sidecar draws them).
#[derive(Debug, Clone, Copy)]
pub struct ProviderRandom {
    pub jti: [u8; 16],
    pub refresh: [u8; 32],
    pub grant: GrantRandom,
}

/// The answer to a provider call.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    /// JSON to answer with (`None`: no body).
    pub body: Option<Value>,
    /// A redirect's target.
    pub location: Option<String>,
    /// `WWW-Authenticate`.
    pub challenge: Option<String>,
    pub retry_after_secs: Option<u64>,
    /// Who the call was from, for the audit line (`-` when nobody authenticated).
    pub identity: String,
    pub allowed: bool,
    /// The audit line's reason.
    pub reason: &'static str,
}

impl Reply {
    fn json(status: u16, body: Value, identity: &str, reason: &'static str) -> Self {
        Self {
            status,
            body: Some(body),
            location: None,
            challenge: None,
            retry_after_secs: None,
            identity: identity.to_owned(),
            allowed: status < 400,
            reason,
        }
    }

    /// An RFC 6749 error.
    fn error(status: u16, code: &'static str, description: Option<&str>) -> Self {
        let mut body = json!({ "error": code });
        if let Some(d) = description {
            body["error_description"] = Value::from(d);
        }
        Self::json(status, body, "-", code)
    }

    /// An error answered without the engine (an unreadable body, no randomness).
    pub fn failure(status: u16, code: &'static str, description: &str) -> Self {
        Self::error(status, code, Some(description))
    }

    fn redirect(location: String, identity: &str, reason: &'static str) -> Self {
        Self {
            status: 302,
            body: None,
            location: Some(location),
            challenge: None,
            retry_after_secs: None,
            identity: identity.to_owned(),
            allowed: true,
            reason,
        }
    }

    fn throttled(retry_after_secs: u64) -> Self {
        let mut r = Self::error(429, "too_many_requests", None);
        r.retry_after_secs = Some(retry_after_secs);
        r
    }
}

/// What a call carries: its method, headers, query and body (a form, or JSON for the grant
/// API; empty when none was read).
#[derive(Debug, Clone, Copy)]
pub struct CallInput<'a> {
    pub method: &'a str,
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    pub body: &'a str,
}

/// A form or query parameter, `Err` when it is given more than once (RFC 6749 section 3.1).
fn single<'a>(pairs: &'a str, name: &str) -> Result<Option<std::borrow::Cow<'a, str>>, ()> {
    if query::repeated(pairs, name) {
        return Err(());
    }
    Ok(query::query_param(pairs, name).filter(|v| !v.is_empty()))
}

/// `base` with `pairs` appended to its query.
fn with_query(base: &str, pairs: &[(&str, &str)]) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{}", oauth2::form_pairs(pairs))
}

/// The grants a call reads, for a shared store to load first ([`ProviderEndpoint::needs`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// Grants by id.
    pub ids: Vec<String>,
    /// Every grant of this user and/or client (the grant API's listings and revocations).
    pub user: Option<String>,
    pub client_id: Option<String>,
}

impl<'e> ProviderEndpoint<'e> {
    /// The Builtin provider.
    pub fn provider(&self) -> &'e Builtin {
        self.oauth2
            .builtin()
            .expect("a provider endpoint has a Builtin provider")
    }

    /// The grants the call reads (pure: from its parameters, nothing verified yet), so that
    /// a shared store's copies are in the book before [`Self::serve`].
    pub fn needs(&self, input: &CallInput<'_>) -> Needs {
        let mut needs = Needs::default();
        let form = |name: &str| single(input.body, name).ok().flatten();
        let id_of_token = |token: &str| {
            grants::grant_id_of(token)
                .map(str::to_owned)
                .or_else(|| oauth2::unverified_claim(token, "gid"))
        };
        match &self.call {
            ProviderCall::Token => {
                let token = match form("grant_type").as_deref() {
                    Some("authorization_code") => form("code"),
                    Some("refresh_token") => form("refresh_token"),
                    _ => None,
                };
                needs
                    .ids
                    .extend(token.as_deref().and_then(grants::grant_id_of).map(str::to_owned));
            }
            ProviderCall::Revoke | ProviderCall::Introspect => {
                needs.ids.extend(form("token").as_deref().and_then(id_of_token));
            }
            ProviderCall::Grants { rest } if rest.len() == 23 => needs.ids.push(rest[1..].to_owned()),
            ProviderCall::Grants { rest } if rest.is_empty() && input.method != "POST" => {
                let q = input.query.unwrap_or("");
                needs.user = single(q, "user").ok().flatten().map(|u| u.into_owned());
                needs.client_id = single(q, "client_id").ok().flatten().map(|c| c.into_owned());
            }
            _ => {}
        }
        needs
    }
}

impl ProviderEndpoint<'_> {
    /// Whether the client's address is within the profile's trusted IP ranges (or the profile
    /// has none). The authorization endpoint, where people's browsers come, is served from
    /// anywhere; the others are refused outside them (403) as the API itself would be.
    pub fn from_trusted_address(&self) -> bool {
        self.trusted || self.call == ProviderCall::Authorize
    }

    fn builtin(&self) -> &Builtin {
        self.oauth2
            .builtin()
            .expect("a provider endpoint has a Builtin provider")
    }

    /// Answers the call at `now_ms` (Unix milliseconds; `window_ms`: the monotonic clock of
    /// the failed-authentication throttle).
    pub fn serve(&self, input: &CallInput<'_>, random: &ProviderRandom, now_ms: u64, window_ms: u64) -> Reply {
        // One credential: the sidecar would check one field, something else might read another.
        if input
            .headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .nth(1)
            .is_some()
        {
            return Reply::error(400, "invalid_request", Some("more than one Authorization header"));
        }
        if matches!(
            self.call,
            ProviderCall::Token | ProviderCall::Revoke | ProviderCall::Introspect
        ) && !is_form(input.headers)
        {
            return Reply::error(
                400,
                "invalid_request",
                Some("the body must be application/x-www-form-urlencoded"),
            );
        }
        match &self.call {
            ProviderCall::Token => self.token(input, random, now_ms, window_ms),
            ProviderCall::Revoke => self.revoke(input, now_ms, window_ms),
            ProviderCall::Authorize => self.authorize(input, now_ms),
            ProviderCall::Introspect => match self.owner(input.headers, window_ms) {
                Ok(()) => self.introspect(input.body, now_ms / 1000),
                Err(r) => *r,
            },
            ProviderCall::Grants { rest } => match self.owner(input.headers, window_ms) {
                Ok(()) => self.grants(rest, input, random, now_ms / 1000),
                Err(r) => *r,
            },
        }
    }

    /// The client a token or revocation request authenticates as (`client_secret_basic` or
    /// `client_secret_post`), wrong secrets counted in the throttle.
    fn client(&self, headers: &HeaderMap, body: &str, window_ms: u64) -> Result<String, Box<Reply>> {
        let form = |name: &str| query::query_param(body, name);
        let invalid = || {
            let mut r = Reply::error(401, "invalid_client", None);
            r.challenge = Some(format!("Basic realm=\"{}\", charset=\"UTF-8\"", self.route.name));
            r
        };
        if query::repeated(body, "client_id") || query::repeated(body, "client_secret") {
            return Err(Box::new(Reply::error(
                400,
                "invalid_request",
                Some("client_id or client_secret given twice"),
            )));
        }
        let (id, secret) = match (auth::basic_pair(headers), form("client_id"), form("client_secret")) {
            // A client_id beside Basic credentials must name the same client.
            (Some(Ok((id, _))), Some(other), None) if *other != *id => {
                return Err(Box::new(Reply::error(
                    400,
                    "invalid_request",
                    Some("client_id differs from the Basic credentials"),
                )));
            }
            (Some(Ok(pair)), _, None) => pair,
            (Some(Err(())), _, _) => return Err(Box::new(invalid())),
            (None, Some(id), Some(secret)) => (id.into_owned(), secret.into_owned()),
            (None, _, _) => return Err(Box::new(invalid())),
            // Two ways of authenticating at once.
            (Some(_), _, Some(_)) => return Err(Box::new(Reply::error(400, "invalid_request", None))),
        };
        // Client ids and Basic users are counted apart.
        let claimed = format!("oauth2 client {id}");
        if let Some(t) = self.throttle.filter(|t| !t.is_empty())
            && let Some(retry) = t.blocked(self.client_ip, Some(&claimed), window_ms)
        {
            return Err(Box::new(Reply::throttled(retry)));
        }
        if !self.builtin().client_matches(&id, &secret) {
            if let Some(t) = self.throttle {
                t.failed(self.client_ip, Some(&claimed), window_ms);
            }
            return Err(Box::new(invalid()));
        }
        Ok(id)
    }

    /// The owner's credential (`Authorization: Bearer`), wrong ones counted in the throttle
    /// per address only: counted against the owner too, anyone could lock the owner's
    /// backend out (and a credential of 16 characters or more is not guessed).
    fn owner(&self, headers: &HeaderMap, window_ms: u64) -> Result<(), Box<Reply>> {
        let delegation = self.builtin().delegation().expect("grant API calls need delegation");
        if let Some(t) = self.throttle.filter(|t| !t.is_empty())
            && let Some(retry) = t.blocked(self.client_ip, None, window_ms)
        {
            return Err(Box::new(Reply::throttled(retry)));
        }
        let presented = oauth2::bearer_token(headers);
        if presented.is_some_and(|t| delegation.owner_matches(t)) {
            return Ok(());
        }
        if presented.is_some()
            && let Some(t) = self.throttle
        {
            t.failed(self.client_ip, None, window_ms);
        }
        let mut r = Reply::error(401, "invalid_token", None);
        r.challenge = Some(format!("Bearer realm=\"{}\"", self.route.name));
        Err(Box::new(r))
    }

    fn token(&self, input: &CallInput<'_>, random: &ProviderRandom, now_ms: u64, window_ms: u64) -> Reply {
        let client = match self.client(input.headers, input.body, window_ms) {
            Ok(c) => c,
            Err(r) => return *r,
        };
        let body = input.body;
        let now = now_ms / 1000;
        let builtin = self.builtin();
        let Ok(grant_type) = single(body, "grant_type") else {
            return Reply::error(400, "invalid_request", Some("grant_type given twice"));
        };
        let Ok(requested) = single(body, "scope") else {
            return Reply::error(400, "invalid_request", Some("scope given twice"));
        };
        if requested.as_deref().is_some_and(|s| !oauth2::valid_scope(s)) {
            return Reply::error(400, "invalid_scope", None);
        }
        let delegation = builtin.delegation();
        let (grant, refresh, scope) = match (grant_type.as_deref(), delegation) {
            (Some("client_credentials"), _) => {
                let Some(scope) = builtin.grant(&client, requested.as_deref()) else {
                    return Reply::error(400, "invalid_scope", None);
                };
                (None, None, scope)
            }
            (Some("authorization_code"), Some(d)) => {
                let (Ok(Some(code)), Ok(redirect_uri), Ok(Some(verifier))) = (
                    single(body, "code"),
                    single(body, "redirect_uri"),
                    single(body, "code_verifier"),
                ) else {
                    return Reply::error(
                        400,
                        "invalid_request",
                        Some("code and code_verifier are required, once"),
                    );
                };
                let ttl = u64::from(builtin.ttl_seconds());
                match builtin.book().redeem(
                    &code,
                    &client,
                    redirect_uri.as_deref(),
                    &verifier,
                    &random.refresh,
                    d.refresh_ttl_secs,
                    ttl,
                    now,
                ) {
                    Ok((grant, refresh)) => {
                        let scope = still_allowed(builtin, &client, &grant.scope);
                        if scope.is_empty() {
                            // The client's Secret allows none of the grant's scopes any more.
                            return Reply::error(400, "invalid_scope", None);
                        }
                        (Some(grant), Some(refresh), scope)
                    }
                    Err(e) => return invalid_grant(e),
                }
            }
            (Some("refresh_token"), Some(d)) => {
                let Ok(Some(token)) = single(body, "refresh_token") else {
                    return Reply::error(400, "invalid_request", Some("refresh_token is required, once"));
                };
                let ttl = u64::from(builtin.ttl_seconds());
                // A narrower scope is checked before the token rotates.
                // The scope asked (else the grant's) must be within the grant's and what the
                // client's Secret allows now, and not empty: checked before the token rotates.
                if let Some((grant, _)) = builtin.book().refresh_token(&token, now) {
                    let asked = requested.as_deref().unwrap_or(&grant.scope);
                    let within = asked
                        .split_ascii_whitespace()
                        .all(|s| grant.scope.split(' ').any(|g| g == s));
                    let now_allowed = still_allowed(builtin, &client, asked);
                    if !within || now_allowed.is_empty() || (requested.is_some() && now_allowed != normal_scope(asked))
                    {
                        return Reply::error(400, "invalid_scope", None);
                    }
                }
                match builtin
                    .book()
                    .refresh(&token, &client, &random.refresh, d.refresh_ttl_secs, ttl, now)
                {
                    Ok((grant, refresh)) => {
                        let scope = requested.as_deref().map_or_else(|| grant.scope.clone(), normal_scope);
                        let scope = still_allowed(builtin, &client, &scope);
                        (Some(grant), Some(refresh), scope)
                    }
                    Err(e) => return invalid_grant(e),
                }
            }
            (Some(_), _) => return Reply::error(400, "unsupported_grant_type", None),
            (None, _) => return Reply::error(400, "invalid_request", Some("grant_type is required")),
        };
        let scope = Some(scope).filter(|s| !s.is_empty());
        let issued = self.oauth2.issue(&TokenToIssue {
            client_id: &client,
            grant: grant.as_ref(),
            scope: scope.as_deref(),
            issuer: &self.issuer,
            now_ms,
            jti: random.jti,
        });
        let Some((access_token, expires_in)) = issued else {
            return Reply::error(400, "invalid_grant", None);
        };
        let mut body = json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": expires_in,
        });
        if let Some(s) = &scope {
            body["scope"] = Value::from(s.as_str());
        }
        if let Some(r) = refresh {
            body["refresh_token"] = Value::from(r);
        }
        let reason = match &grant {
            None => "oauth2 token issued",
            Some(_) => "oauth2 token issued for a grant",
        };
        let identity = grant
            .as_ref()
            .map_or(client.clone(), |g| format!("{} for {}", client, g.user));
        Reply::json(200, body, &identity, reason)
    }

    /// RFC 7009. A refresh token revokes its grant; an access token of a grant revokes the
    /// grant; a client-credentials token revokes every such token the client holds from
    /// before now. Unknown tokens are answered 200 (section 2.2).
    fn revoke(&self, input: &CallInput<'_>, now_ms: u64, window_ms: u64) -> Reply {
        let client = match self.client(input.headers, input.body, window_ms) {
            Ok(c) => c,
            Err(r) => return *r,
        };
        let Ok(Some(token)) = single(input.body, "token") else {
            return Reply::error(400, "invalid_request", Some("token is required, once"));
        };
        let now = now_ms / 1000;
        let builtin = self.builtin();
        let ttl = u64::from(builtin.ttl_seconds());
        let ok = |reason| Reply {
            body: None,
            ..Reply::json(200, Value::Null, &client, reason)
        };
        if let Some((grant, _)) = builtin.book().refresh_token(&token, now) {
            if grant.client_id != client {
                return Reply::error(
                    400,
                    "unauthorized_client",
                    Some("the token was issued to another client"),
                );
            }
            builtin.book().revoke(&grant.id, ttl, now);
            return ok("oauth2 grant revoked");
        }
        if let Some(claims) = self.oauth2.builtin_claims(&token, now) {
            if claims.get("client_id").and_then(Value::as_str) != Some(client.as_str()) {
                return Reply::error(
                    400,
                    "unauthorized_client",
                    Some("the token was issued to another client"),
                );
            }
            return match claims.get("gid").and_then(Value::as_str) {
                Some(gid) => {
                    builtin.book().revoke(gid, ttl, now);
                    ok("oauth2 grant revoked")
                }
                None => {
                    builtin.book().revoke_client_tokens(&client, now_ms);
                    ok("oauth2 client tokens revoked")
                }
            };
        }
        ok("oauth2 revocation of an unknown token")
    }

    /// RFC 7662, for the owner's services.
    fn introspect(&self, body: &str, now: u64) -> Reply {
        let Ok(Some(token)) = single(body, "token") else {
            return Reply::error(400, "invalid_request", Some("token is required, once"));
        };
        let builtin = self.builtin();
        let answer = if let Some(claims) = self.oauth2.builtin_claims(&token, now) {
            let mut a = json!({"active": true, "token_type": "Bearer"});
            for name in ["scope", "client_id", "sub", "exp", "iat", "iss", "aud", "jti"] {
                if let Some(v) = claims.get(name) {
                    a[name] = v.clone();
                }
            }
            if claims.get("gid").is_some() {
                a["username"] = claims.get("sub").cloned().unwrap_or(Value::Null);
            }
            a
        } else if let Some((grant, exp)) = builtin.book().refresh_token(&token, now) {
            json!({
                "active": true,
                "token_type": "refresh_token",
                "client_id": grant.client_id,
                "sub": grant.user,
                "username": grant.user,
                "scope": grant.scope,
                "exp": exp,
                "iss": self.issuer,
            })
        } else {
            json!({"active": false})
        };
        Reply::json(200, answer, "owner", "oauth2 introspection")
    }

    /// The authorization endpoint: a checked request goes to the consent page as a handle.
    fn authorize(&self, input: &CallInput<'_>, now_ms: u64) -> Reply {
        let builtin = self.builtin();
        let delegation = builtin.delegation().expect("authorize needs delegation");
        let q = input.query.unwrap_or("");
        let page = |description: &str| {
            // Never redirected: the client or its redirect URI is not known to be the
            // client's (RFC 6749 section 4.1.2.1).
            let mut r = Reply::error(400, "invalid_request", Some(description));
            r.allowed = false;
            r
        };
        let (Ok(client), Ok(redirect)) = (single(q, "client_id"), single(q, "redirect_uri")) else {
            return page("client_id or redirect_uri given twice");
        };
        let Some(client) = client.filter(|c| builtin.has_client(c)) else {
            return page("unknown client_id");
        };
        let Some(redirect_to) = delegation.redirect_uri(&client, redirect.as_deref()) else {
            return page("redirect_uri is not registered for the client");
        };
        let state = single(q, "state").ok().flatten();
        if state.as_deref().is_some_and(|s| s.len() > MAX_STATE_BYTES) {
            return page("state is too long");
        }
        let back = |code: &'static str, description: &str| {
            let mut pairs = vec![("error", code), ("error_description", description)];
            if let Some(s) = state.as_deref() {
                pairs.push(("state", s));
            }
            pairs.push(("iss", &self.issuer));
            let mut r = Reply::redirect(with_query(redirect_to, &pairs), &client, code);
            r.allowed = false;
            r
        };
        let params = [
            "response_type",
            "scope",
            "state",
            "code_challenge",
            "code_challenge_method",
        ];
        if params.iter().any(|p| query::repeated(q, p)) {
            return back("invalid_request", "a parameter is given twice");
        }
        let param = |name| single(q, name).ok().flatten();
        if param("response_type").as_deref() != Some("code") {
            return back("unsupported_response_type", "only response_type=code is served");
        }
        let challenge = param("code_challenge");
        let challenge_ok = challenge
            .as_deref()
            .is_some_and(|c| c.len() == 43 && grants::valid_verifier(c));
        if !challenge_ok || param("code_challenge_method").as_deref() != Some("S256") {
            return back("invalid_request", "PKCE with code_challenge_method=S256 is required");
        }
        let requested = param("scope");
        if requested.as_deref().is_some_and(|s| !oauth2::valid_scope(s)) {
            return back("invalid_scope", "the scope is malformed");
        }
        let Some(scope) = builtin.grant(&client, requested.as_deref()) else {
            return back("invalid_scope", "the client may not ask for this scope");
        };
        let mut claims = json!({
            "cid": &*client,
            "rdr": redirect_to,
            "scp": scope,
            "pkc": challenge.as_deref(),
            "exp": now_ms / 1000 + REQUEST_TTL_SECS,
        });
        if let Some(r) = redirect.as_deref() {
            claims["ru"] = Value::from(r);
        }
        if let Some(s) = state.as_deref() {
            claims["st"] = Value::from(s);
        }
        let Some(handle) = builtin.sign(REQUEST_TYP, &claims) else {
            return Reply::error(500, "server_error", None);
        };
        let location = with_query(
            &delegation.consent_url,
            &[("request", &handle), ("client_id", &client), ("scope", &scope)],
        );
        Reply::redirect(location, &client, "oauth2 authorization request sent to consent")
    }

    /// The owner's grant API.
    fn grants(&self, rest: &str, input: &CallInput<'_>, random: &ProviderRandom, now: u64) -> Reply {
        let builtin = self.builtin();
        let book = builtin.book();
        let ttl = u64::from(builtin.ttl_seconds());
        let q = input.query.unwrap_or("");
        match (input.method, rest) {
            ("POST", "") | ("POST", "/deny") | ("POST", "/describe") => {
                let Ok(body) = serde_json::from_str::<Value>(input.body) else {
                    return Reply::error(400, "invalid_request", Some("the body is not JSON"));
                };
                let Some(request) = body
                    .get("request")
                    .and_then(Value::as_str)
                    .and_then(|h| builtin.open(REQUEST_TYP, h))
                    .filter(|c| c.get("exp").and_then(Value::as_u64).is_some_and(|e| e > now))
                else {
                    return Reply::error(400, "invalid_request", Some("request is not a live consent request"));
                };
                let s = |name: &str| request.get(name).and_then(Value::as_str).unwrap_or_default();
                let mut back: Vec<(&str, &str)> = Vec::new();
                if let Some(state) = request.get("st").and_then(Value::as_str) {
                    back.push(("state", state));
                }
                back.push(("iss", &self.issuer));
                if rest == "/describe" {
                    let body = json!({
                        "client_id": s("cid"),
                        "scope": still_allowed(builtin, s("cid"), s("scp")),
                        "redirect_uri": s("rdr"),
                        "expires_at": request.get("exp"),
                    });
                    return Reply::json(200, body, "owner", "oauth2 consent request described");
                }
                // What the consent page showed, when it says: the handle must agree.
                if body.get("client_id").is_some_and(|c| c.as_str() != Some(s("cid"))) {
                    return Reply::error(400, "invalid_request", Some("client_id is not the consent request's"));
                }
                // A page that pins the client it showed pins the scope it showed too: else it
                // would grant the request's, which the URL it read need not have named.
                if rest.is_empty() && body.get("client_id").is_some() && body.get("scope").is_none_or(Value::is_null) {
                    return Reply::error(400, "invalid_request", Some("with client_id, name the scope shown too"));
                }
                // The client's redirect URI and scopes as they are now, not as when the user
                // was sent to the consent page.
                let delegation = builtin.delegation().expect("grant API needs delegation");
                if delegation.redirect_uri(s("cid"), Some(s("rdr"))).is_none() {
                    return Reply::error(400, "invalid_request", Some("the redirect URI is no longer registered"));
                }
                if rest == "/deny" {
                    back.insert(0, ("error", "access_denied"));
                    let to = with_query(s("rdr"), &back);
                    return Reply::json(200, json!({ "redirect_to": to }), "owner", "oauth2 consent refused");
                }
                let user = body.get("user").and_then(Value::as_str).unwrap_or_default();
                if user.is_empty() || user.len() > grants::MAX_NAME_BYTES || user.chars().any(char::is_control) {
                    return Reply::error(
                        400,
                        "invalid_request",
                        Some("user must be 1 to 256 characters, none a control"),
                    );
                }
                let scope = match body.get("scope") {
                    None | Some(Value::Null) => s("scp").to_owned(),
                    Some(Value::String(asked))
                        if oauth2::valid_scope(asked)
                            && asked
                                .split_ascii_whitespace()
                                .all(|a| s("scp").split(' ').any(|g| g == a)) =>
                    {
                        normal_scope(asked)
                    }
                    Some(_) => {
                        return Reply::error(400, "invalid_scope", Some("scope must be within the request's"));
                    }
                };
                let scope = still_allowed(builtin, s("cid"), &scope);
                if scope.is_empty() {
                    return Reply::error(400, "invalid_scope", Some("the grant would carry no scope"));
                }
                let lifetime = match body.get("lifetime_seconds") {
                    None | Some(Value::Null) => delegation.max_grant_secs,
                    Some(v) => match v
                        .as_u64()
                        .filter(|&l| (MIN_GRANT_SECS..=delegation.max_grant_secs).contains(&l))
                    {
                        Some(l) => l,
                        None => {
                            return Reply::error(
                                400,
                                "invalid_request",
                                Some(&format!(
                                    "lifetime_seconds must be {MIN_GRANT_SECS} to {} (maxGrantSeconds)",
                                    delegation.max_grant_secs
                                )),
                            );
                        }
                    },
                };
                let new = NewGrant {
                    user,
                    client_id: s("cid"),
                    scope: &scope,
                    lifetime_secs: lifetime,
                    redirect_uri: s("rdr"),
                    redirect_given: request.get("ru").is_some(),
                    code_challenge: s("pkc"),
                };
                match book.create(&new, &random.grant, now) {
                    Ok((grant, code)) => {
                        back.insert(0, ("code", &code));
                        let to = with_query(s("rdr"), &back);
                        let body = json!({ "grant": grant_json(&grant), "code": code, "redirect_to": to });
                        Reply::json(201, body, "owner", "oauth2 grant made")
                    }
                    Err(e) => Reply::error(409, "grant_limit", Some(&e.to_string())),
                }
            }
            ("GET", "") | ("DELETE", "") => {
                let (Ok(user), Ok(client)) = (single(q, "user"), single(q, "client_id")) else {
                    return Reply::error(400, "invalid_request", Some("user or client_id given twice"));
                };
                let keep = |g: &grants::Grant| match (&user, &client) {
                    (Some(u), None) => g.user == **u,
                    (None, Some(c)) => g.client_id == **c,
                    (Some(u), Some(c)) => g.user == **u && g.client_id == **c,
                    (None, None) => false,
                };
                if user.is_none() && client.is_none() {
                    return Reply::error(400, "invalid_request", Some("name a user or a client_id"));
                }
                if input.method == "GET" {
                    let list: Vec<Value> = book.list(now, keep).iter().map(grant_json).collect();
                    Reply::json(200, json!({ "grants": list }), "owner", "oauth2 grants listed")
                } else {
                    let n = book.revoke_where(ttl, now, keep);
                    Reply::json(200, json!({ "revoked": n }), "owner", "oauth2 grants revoked")
                }
            }
            (method, id) => {
                let id = id.trim_start_matches('/');
                match method {
                    "GET" => match book.get(id, now) {
                        Some(g) => Reply::json(200, grant_json(&g), "owner", "oauth2 grant shown"),
                        None => Reply::error(404, "not_found", None),
                    },
                    _ if book.revoke(id, ttl, now) => Reply {
                        body: None,
                        ..Reply::json(204, Value::Null, "owner", "oauth2 grant revoked")
                    },
                    _ => Reply::error(404, "not_found", None),
                }
            }
        }
    }
}

/// `invalid_grant`, its description naming the cause (the client holds the code or token).
fn invalid_grant(e: RedeemError) -> Reply {
    let mut r = Reply::error(400, "invalid_grant", Some(&e.to_string()));
    r.reason = match e {
        RedeemError::Reused => "oauth2 code or refresh token reused: grant revoked",
        _ => "invalid_grant",
    };
    r
}

/// Whether the body is a form (`application/x-www-form-urlencoded`, RFC 6749 section 3.2).
fn is_form(headers: &HeaderMap) -> bool {
    let mut types = headers.get_all(http::header::CONTENT_TYPE).iter();
    let first = types.next().and_then(|v| v.to_str().ok());
    types.next().is_none()
        && first.is_some_and(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
        })
}

/// The scopes of `scope` client `client` may still be granted (its Secret may have taken
/// some away since the grant was made).
fn still_allowed(builtin: &Builtin, client: &str, scope: &str) -> String {
    let allowed = builtin.allowed_scopes(client);
    scope
        .split_ascii_whitespace()
        .filter(|s| allowed.iter().any(|a| &**a == *s))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Scopes space-separated once each, in the order asked.
fn normal_scope(scope: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for s in scope.split_ascii_whitespace() {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out.join(" ")
}

fn grant_json(g: &grants::Grant) -> Value {
    json!({
        "id": g.id,
        "user": g.user,
        "client_id": g.client_id,
        "scope": g.scope,
        "created_at": g.created_at,
        "expires_at": g.expires_at,
    })
}
