//! Access an API owner grants (the Builtin provider's authorization-code grant): the grants
//! of one profile, their codes and refresh tokens, and what was revoked.
//!
//! - A grant is made by the owner's backend through the grant API, after its consent page:
//!   a user, a client, a scope and a lifetime. It comes with a code (`<grant id>.<random>`,
//!   [`CODE_TTL_SECS`], one use) bound to the authorization request's redirect URI and PKCE
//!   challenge. A code used twice revokes its grant (RFC 6749 section 4.1.2).
//! - Redeeming the code gives a refresh token (`<grant id>.<random>`). Each refresh rotates
//!   it; presenting the one it replaced (a stolen copy, or the client's own after the thief
//!   refreshed) revokes the grant (RFC 9700 section 4.14.2).
//! - Only digests of codes and refresh tokens are kept.
//! - Revocations are a deny list read on every call ([`GrantBook::revoked`], one atomic load,
//!   nothing locked): a grant's id until every access token it could have given has expired,
//!   and, for a client's client-credentials tokens, the time before which they were issued.
//! - Bounded: [`MAX_GRANTS`] grants, [`MAX_GRANTS_PER_USER`] per user, [`MAX_REVOKED`] revoked
//!   grants. A full book makes no new grant (fail closed) rather than forget one.
//!
//! The book is per sidecar; it is kept across configuration reloads (like rate-limit counts)
//! but not across restarts. Randomness comes from the caller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::B64;

/// Seconds a code may be redeemed after its grant was made.
pub const CODE_TTL_SECS: u64 = 60;
/// Most grants a book holds.
pub const MAX_GRANTS: usize = 100_000;
/// Most live grants of one user.
pub const MAX_GRANTS_PER_USER: usize = 256;
/// Most revoked grants remembered at once.
pub const MAX_REVOKED: usize = 200_000;
/// Longest user name or client id kept.
pub const MAX_NAME_BYTES: usize = 256;

/// One grant, as the grant API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: String,
    pub user: String,
    pub client_id: String,
    /// Space-separated.
    pub scope: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds: no token of the grant outlives it.
    pub expires_at: u64,
}

/// A grant to make ([`GrantBook::create`]).
#[derive(Debug, Clone)]
pub struct NewGrant<'a> {
    pub user: &'a str,
    pub client_id: &'a str,
    pub scope: &'a str,
    pub lifetime_secs: u64,
    /// The authorization request's `redirect_uri`, `None` when it named none.
    pub redirect_uri: Option<&'a str>,
    /// The PKCE S256 challenge.
    pub code_challenge: &'a str,
}

/// Why a grant was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    #[error("the provider holds as many grants as it may")]
    Full,
    #[error("the user holds as many grants as they may")]
    UserFull,
}

/// Why a code or a refresh token was refused: always `invalid_grant` to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RedeemError {
    #[error("unknown, expired or revoked")]
    Unknown,
    #[error("issued to another client")]
    OtherClient,
    #[error("redirect_uri differs from the authorization request's")]
    RedirectUri,
    #[error("code_verifier does not match the code_challenge")]
    Verifier,
    #[error("used before: the grant is revoked")]
    Reused,
}

#[derive(Debug)]
struct Entry {
    grant: Grant,
    redirect_uri: Option<Box<str>>,
    code_challenge: Box<str>,
    code: [u8; 32],
    code_used: bool,
    refresh: Option<Refresh>,
}

#[derive(Debug)]
struct Refresh {
    current: [u8; 32],
    previous: Option<[u8; 32]>,
    expires_at: u64,
}

/// What is revoked: read on every call with a Builtin token.
#[derive(Debug, Default, Clone)]
pub struct Revoked {
    /// Grant id to when it may be forgotten (Unix seconds: its last token has expired).
    grants: HashMap<Box<str>, u64>,
    /// Client id to the time (Unix milliseconds) until which its client-credentials tokens
    /// are revoked (those issued at or before it).
    clients: HashMap<Box<str>, u64>,
}

impl Revoked {
    /// Whether an access token of grant `grant` (if any) issued to `client_id` at
    /// `issued_ms` is revoked.
    pub fn refuses(&self, grant: Option<&str>, client_id: &str, issued_ms: u64) -> bool {
        if self.grants.is_empty() && self.clients.is_empty() {
            return false;
        }
        match grant {
            Some(g) => self.grants.contains_key(g),
            None => self.clients.get(client_id).is_some_and(|&until| issued_ms <= until),
        }
    }

    /// Whether grant `id` is revoked.
    pub fn grant(&self, id: &str) -> bool {
        self.grants.contains_key(id)
    }
}

/// The grants of one Builtin profile.
#[derive(Debug, Default)]
pub struct GrantBook {
    entries: Mutex<HashMap<Box<str>, Entry>>,
    revoked: ArcSwap<Revoked>,
}

/// The random bytes one new grant needs (the sidecar draws them).
#[derive(Debug, Clone, Copy)]
pub struct GrantRandom {
    pub id: [u8; 16],
    pub code: [u8; 32],
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The grant id a code or refresh token names.
pub fn grant_id_of(token: &str) -> Option<&str> {
    let (id, rest) = token.split_once('.')?;
    (id.len() == 22 && !rest.is_empty() && rest.len() <= 64).then_some(id)
}

impl GrantBook {
    fn lock(&self) -> MutexGuard<'_, HashMap<Box<str>, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What is revoked now (one atomic load).
    pub fn revoked(&self) -> arc_swap::Guard<Arc<Revoked>> {
        self.revoked.load()
    }

    /// Makes a grant at `now` (Unix seconds): the grant and its code.
    pub fn create(&self, new: &NewGrant<'_>, random: &GrantRandom, now: u64) -> Result<(Grant, String), CreateError> {
        let mut entries = self.lock();
        entries.retain(|_, e| e.grant.expires_at > now);
        if entries.len() >= MAX_GRANTS || self.revoked.load().grants.len() >= MAX_REVOKED {
            return Err(CreateError::Full);
        }
        if entries.values().filter(|e| e.grant.user == new.user).count() >= MAX_GRANTS_PER_USER {
            return Err(CreateError::UserFull);
        }
        let id = B64.encode(random.id);
        let code = format!("{id}.{}", B64.encode(random.code));
        let grant = Grant {
            id: id.clone(),
            user: new.user.to_owned(),
            client_id: new.client_id.to_owned(),
            scope: new.scope.to_owned(),
            created_at: now,
            expires_at: now + new.lifetime_secs.max(1),
        };
        entries.insert(
            id.into(),
            Entry {
                grant: grant.clone(),
                redirect_uri: new.redirect_uri.map(Into::into),
                code_challenge: new.code_challenge.into(),
                code: digest(&code),
                code_used: false,
                refresh: None,
            },
        );
        Ok((grant, code))
    }

    /// Redeems `code` for `client_id` (authenticated) with the token request's `redirect_uri`
    /// and `verifier`: the grant and its first refresh token (`refresh_random`), valid
    /// `refresh_ttl` seconds. `token_ttl`: the longest access token's lifetime (how long a
    /// revoked grant is remembered).
    #[allow(clippy::too_many_arguments)]
    pub fn redeem(
        &self,
        code: &str,
        client_id: &str,
        redirect_uri: Option<&str>,
        verifier: &str,
        refresh_random: &[u8; 32],
        refresh_ttl: u64,
        token_ttl: u64,
        now: u64,
    ) -> Result<(Grant, String), RedeemError> {
        let id = grant_id_of(code).ok_or(RedeemError::Unknown)?;
        let mut entries = self.lock();
        let e = entries.get_mut(id).ok_or(RedeemError::Unknown)?;
        if !bool::from(e.code.ct_eq(&digest(code))) || e.grant.expires_at <= now {
            return Err(RedeemError::Unknown);
        }
        if e.code_used {
            drop(entries);
            self.revoke(id, token_ttl, now);
            return Err(RedeemError::Reused);
        }
        if e.grant.created_at + CODE_TTL_SECS <= now {
            return Err(RedeemError::Unknown);
        }
        if e.grant.client_id != client_id {
            return Err(RedeemError::OtherClient);
        }
        if e.redirect_uri.as_deref() != redirect_uri && e.redirect_uri.is_some() {
            return Err(RedeemError::RedirectUri);
        }
        let challenge = super::login::pkce_challenge(verifier);
        if !valid_verifier(verifier) || !bool::from(challenge.as_bytes().ct_eq(e.code_challenge.as_bytes())) {
            // A wrong verifier spends the code too: it is not tried again.
            e.code_used = true;
            return Err(RedeemError::Verifier);
        }
        e.code_used = true;
        let refresh = format!("{id}.{}", B64.encode(refresh_random));
        e.refresh = Some(Refresh {
            current: digest(&refresh),
            previous: None,
            expires_at: (now + refresh_ttl).min(e.grant.expires_at),
        });
        Ok((e.grant.clone(), refresh))
    }

    /// Rotates refresh token `token` of `client_id`: the grant and the new refresh token.
    /// The token it replaced, presented again, revokes the grant.
    pub fn refresh(
        &self,
        token: &str,
        client_id: &str,
        random: &[u8; 32],
        refresh_ttl: u64,
        token_ttl: u64,
        now: u64,
    ) -> Result<(Grant, String), RedeemError> {
        let id = grant_id_of(token).ok_or(RedeemError::Unknown)?;
        let mut entries = self.lock();
        let e = entries.get_mut(id).ok_or(RedeemError::Unknown)?;
        let Some(r) = e.refresh.as_mut() else {
            return Err(RedeemError::Unknown);
        };
        let presented = digest(token);
        if r.previous.is_some_and(|p| bool::from(p.ct_eq(&presented))) {
            drop(entries);
            self.revoke(id, token_ttl, now);
            return Err(RedeemError::Reused);
        }
        if !bool::from(r.current.ct_eq(&presented)) || r.expires_at <= now || e.grant.expires_at <= now {
            return Err(RedeemError::Unknown);
        }
        if e.grant.client_id != client_id {
            return Err(RedeemError::OtherClient);
        }
        let next = format!("{id}.{}", B64.encode(random));
        r.previous = Some(r.current);
        r.current = digest(&next);
        r.expires_at = (now + refresh_ttl).min(e.grant.expires_at);
        Ok((e.grant.clone(), next))
    }

    /// The live grant refresh token `token` belongs to, and when the token expires.
    pub fn refresh_token(&self, token: &str, now: u64) -> Option<(Grant, u64)> {
        let id = grant_id_of(token)?;
        let entries = self.lock();
        let e = entries.get(id)?;
        let r = e.refresh.as_ref()?;
        let live = bool::from(r.current.ct_eq(&digest(token))) && r.expires_at > now && e.grant.expires_at > now;
        live.then(|| (e.grant.clone(), r.expires_at))
    }

    /// Grant `id`, if live.
    pub fn get(&self, id: &str, now: u64) -> Option<Grant> {
        self.lock()
            .get(id)
            .filter(|e| e.grant.expires_at > now)
            .map(|e| e.grant.clone())
    }

    /// The live grants `keep` selects, oldest first.
    pub fn list(&self, now: u64, keep: impl Fn(&Grant) -> bool) -> Vec<Grant> {
        let mut out: Vec<Grant> = self
            .lock()
            .values()
            .map(|e| &e.grant)
            .filter(|g| g.expires_at > now && keep(g))
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        out
    }

    /// Revokes grant `id`: its refresh token at once, its access tokens from the next call.
    /// Whether it was live.
    pub fn revoke(&self, id: &str, token_ttl: u64, now: u64) -> bool {
        self.revoke_where(token_ttl, now, |g| g.id == id) > 0
    }

    /// Revokes every grant `which` selects: how many.
    pub fn revoke_where(&self, token_ttl: u64, now: u64, which: impl Fn(&Grant) -> bool) -> usize {
        let mut entries = self.lock();
        let ids: Vec<Box<str>> = entries
            .iter()
            .filter(|(_, e)| e.grant.expires_at > now && which(&e.grant))
            .map(|(id, _)| id.clone())
            .collect();
        if ids.is_empty() {
            return 0;
        }
        let mut revoked = Revoked::clone(&self.revoked.load());
        revoked.grants.retain(|_, &mut until| until > now);
        for id in &ids {
            let e = entries.remove(id).expect("listed above");
            // No access token of the grant outlives the grant or `token_ttl` from now.
            let until = e.grant.expires_at.min(now + token_ttl) + super::CLOCK_SKEW_SECS;
            revoked.grants.insert(id.clone(), until);
        }
        self.revoked.store(Arc::new(revoked));
        ids.len()
    }

    /// Revokes the client-credentials tokens `client_id` was issued before `now_ms`.
    pub fn revoke_client_tokens(&self, client_id: &str, now_ms: u64) {
        let _entries = self.lock();
        let mut revoked = Revoked::clone(&self.revoked.load());
        revoked.clients.insert(client_id.into(), now_ms);
        self.revoked.store(Arc::new(revoked));
    }
}

/// A PKCE code verifier: 43 to 128 unreserved characters (RFC 7636 section 4.1).
pub fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The grant books of every Builtin profile, kept across reloads.
#[derive(Debug, Default)]
pub struct GrantRegistry {
    books: Mutex<HashMap<String, Arc<GrantBook>>>,
}

impl GrantRegistry {
    /// The book of profile `owner` (`namespace/name`), the same every time.
    pub fn book(&self, owner: &str) -> Arc<GrantBook> {
        let mut books = self.books.lock().unwrap_or_else(|p| p.into_inner());
        books.entry(owner.to_owned()).or_default().clone()
    }
}
