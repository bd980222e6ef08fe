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
    /// Where the code goes (the authorization request's `redirect_uri`, else the client's
    /// only one).
    pub redirect_uri: &'a str,
    /// The authorization request named it (the token request must then name it too).
    pub redirect_given: bool,
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
    /// Bumped by every change: what a shared store compares before it takes a change.
    version: u64,
    grant: Grant,
    redirect_uri: Box<str>,
    redirect_given: bool,
    code_challenge: Box<str>,
    code: [u8; 32],
    code_used: bool,
    refresh: Option<Refresh>,
}

impl Entry {
    /// Until its end; a grant whose code was never redeemed ends with its code.
    fn live(&self, now: u64) -> bool {
        self.grant.expires_at > now && (self.code_used || self.grant.created_at + CODE_TTL_SECS > now)
    }

    /// Until when a shared store keeps it (Unix seconds).
    fn kept_until(&self) -> u64 {
        if self.code_used {
            self.grant.expires_at
        } else {
            self.grant.expires_at.min(self.grant.created_at + CODE_TTL_SECS)
        }
    }
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
    /// With a shared store: what changed here and is not there yet ([`GrantBook::take_changes`]).
    journal: Option<Mutex<Changes>>,
}

/// What changed in a book since the last [`GrantBook::take_changes`]: for a shared store.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Grants made or changed here (their state: [`GrantBook::export`]).
    pub changed: Vec<Box<str>>,
    /// Grants revoked here: id, user, client.
    pub revoked: Vec<(Box<str>, Box<str>, Box<str>)>,
    /// Clients whose client-credentials tokens were revoked here.
    pub clients: Vec<Box<str>>,
}

impl Changes {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.revoked.is_empty() && self.clients.is_empty()
    }
}

/// A grant's state as a shared store keeps it: its version and a JSON document (digests of
/// its code and refresh tokens, never the tokens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub version: u64,
    pub user: String,
    pub client_id: String,
    /// Until when the store keeps it (Unix seconds): the grant's end, or its code's while
    /// the code was not redeemed.
    pub expires_at: u64,
    pub document: String,
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
        entries.retain(|_, e| e.live(now));
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
        self.note_changed(&id);
        entries.insert(
            id.into(),
            Entry {
                version: 1,
                grant: grant.clone(),
                redirect_uri: new.redirect_uri.into(),
                redirect_given: new.redirect_given,
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
        // Named in the authorization request: the same again; not named: if given, the one
        // the code went to.
        let redirect_ok = match redirect_uri {
            Some(r) => *r == *e.redirect_uri,
            None => !e.redirect_given,
        };
        if !redirect_ok {
            return Err(RedeemError::RedirectUri);
        }
        let challenge = super::login::pkce_challenge(verifier);
        if !valid_verifier(verifier) || !bool::from(challenge.as_bytes().ct_eq(e.code_challenge.as_bytes())) {
            // A wrong verifier spends the code too: it is not tried again.
            e.code_used = true;
            e.version += 1;
            self.note_changed(id);
            return Err(RedeemError::Verifier);
        }
        e.code_used = true;
        e.version += 1;
        self.note_changed(id);
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
        e.version += 1;
        self.note_changed(id);
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
        self.lock().get(id).filter(|e| e.live(now)).map(|e| e.grant.clone())
    }

    /// The live grants `keep` selects, oldest first.
    pub fn list(&self, now: u64, keep: impl Fn(&Grant) -> bool) -> Vec<Grant> {
        let mut out: Vec<Grant> = self
            .lock()
            .values()
            .filter(|e| e.live(now))
            .map(|e| &e.grant)
            .filter(|g| keep(g))
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
            .filter(|(_, e)| e.live(now) && which(&e.grant))
            .map(|(id, _)| id.clone())
            .collect();
        if ids.is_empty() {
            return 0;
        }
        let mut revoked = Revoked::clone(&self.revoked.load());
        revoked.grants.retain(|_, &mut until| until > now);
        for id in &ids {
            let e = entries.remove(id).expect("listed above");
            if let Some(j) = &self.journal {
                lock(j).revoked.push((
                    id.clone(),
                    e.grant.user.as_str().into(),
                    e.grant.client_id.as_str().into(),
                ));
            }
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
        if let Some(j) = &self.journal {
            lock(j).clients.push(client_id.into());
        }
    }

    /// A book that journals its changes for a shared store ([`GrantBook::take_changes`]).
    pub fn shared() -> Self {
        Self {
            journal: Some(Mutex::default()),
            ..Self::default()
        }
    }

    /// Whether the book journals its changes for a shared store.
    pub fn is_shared(&self) -> bool {
        self.journal.is_some()
    }

    fn note_changed(&self, id: &str) {
        if let Some(j) = &self.journal {
            let mut j = lock(j);
            if !j.changed.iter().any(|c| **c == *id) {
                j.changed.push(id.into());
            }
        }
    }

    /// What changed since the last call (empty without a shared store).
    pub fn take_changes(&self) -> Changes {
        self.journal
            .as_ref()
            .map(|j| std::mem::take(&mut *lock(j)))
            .unwrap_or_default()
    }

    /// Grant `id`'s state, to write to a shared store; `None` when the book does not hold it.
    pub fn export(&self, id: &str) -> Option<Exported> {
        let entries = self.lock();
        let e = entries.get(id)?;
        let hex = |d: &[u8; 32]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let doc = serde_json::json!({
            "user": e.grant.user, "client_id": e.grant.client_id, "scope": e.grant.scope,
            "created_at": e.grant.created_at, "expires_at": e.grant.expires_at,
            "redirect_uri": &*e.redirect_uri, "redirect_given": e.redirect_given,
            "code_challenge": &*e.code_challenge,
            "code": hex(&e.code), "code_used": e.code_used,
            "refresh": e.refresh.as_ref().map(|r| serde_json::json!({
                "current": hex(&r.current), "previous": r.previous.as_ref().map(hex), "expires_at": r.expires_at,
            })),
        });
        Some(Exported {
            version: e.version,
            user: e.grant.user.clone(),
            client_id: e.grant.client_id.clone(),
            expires_at: e.kept_until(),
            document: doc.to_string(),
        })
    }

    /// Takes grant `id` as a shared store holds it (`None`: the store holds no such grant,
    /// so neither does the book). A document that does not read is taken as no grant.
    pub fn import(&self, id: &str, stored: Option<(u64, &str)>) {
        let mut entries = self.lock();
        let entry = stored.and_then(|(version, doc)| entry_of(id, version, doc));
        match entry {
            Some(e) => {
                entries.insert(id.into(), e);
            }
            None => {
                entries.remove(id);
            }
        }
    }

    /// The ids of the grants the book holds that `keep` selects.
    pub fn ids(&self, keep: impl Fn(&Grant) -> bool) -> Vec<Box<str>> {
        self.lock()
            .iter()
            .filter(|(_, e)| keep(&e.grant))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Takes revocations other replicas made, as a shared store lists them: grant ids
    /// (revoked at Unix milliseconds `at_ms`) and clients' client-credentials tokens (issued
    /// until `at_ms`). `token_ttl`: how long a revoked grant is remembered after `at_ms`.
    pub fn learn_revocations(&self, grants: &[(&str, u64)], clients: &[(&str, u64)], token_ttl: u64, now: u64) {
        if grants.is_empty() && clients.is_empty() {
            return;
        }
        let mut entries = self.lock();
        let current = self.revoked.load();
        let news = grants.iter().any(|(id, _)| !current.grants.contains_key(*id))
            || clients
                .iter()
                .any(|(c, at)| current.clients.get(*c).is_none_or(|had| had < at));
        for (id, _) in grants {
            entries.remove(*id);
        }
        if !news {
            return;
        }
        let mut revoked = Revoked::clone(&current);
        revoked.grants.retain(|_, &mut until| until > now);
        for (id, at_ms) in grants {
            let until = at_ms / 1000 + token_ttl + super::CLOCK_SKEW_SECS;
            revoked.grants.entry((*id).into()).or_insert(until);
        }
        for (client, at_ms) in clients {
            let had = revoked.clients.entry((*client).into()).or_insert(0);
            *had = (*had).max(*at_ms);
        }
        self.revoked.store(Arc::new(revoked));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An entry from a shared store's document, if it reads.
fn entry_of(id: &str, version: u64, doc: &str) -> Option<Entry> {
    let v: serde_json::Value = serde_json::from_str(doc).ok()?;
    let s = |name: &str| v.get(name).and_then(serde_json::Value::as_str);
    let n = |name: &str| v.get(name).and_then(serde_json::Value::as_u64);
    let digest = |x: Option<&serde_json::Value>| -> Option<[u8; 32]> {
        let h = x?.as_str()?;
        let bytes: Vec<u8> = (0..h.len())
            .step_by(2)
            .map(|i| h.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
            .collect::<Option<_>>()?;
        bytes.try_into().ok()
    };
    let refresh = match v.get("refresh") {
        Some(serde_json::Value::Object(r)) => Some(Refresh {
            current: digest(r.get("current"))?,
            previous: match r.get("previous") {
                None | Some(serde_json::Value::Null) => None,
                p => Some(digest(p)?),
            },
            expires_at: r.get("expires_at")?.as_u64()?,
        }),
        _ => None,
    };
    Some(Entry {
        version,
        grant: Grant {
            id: id.to_owned(),
            user: s("user")?.to_owned(),
            client_id: s("client_id")?.to_owned(),
            scope: s("scope")?.to_owned(),
            created_at: n("created_at")?,
            expires_at: n("expires_at")?,
        },
        redirect_uri: s("redirect_uri")?.into(),
        redirect_given: v.get("redirect_given")?.as_bool()?,
        code_challenge: s("code_challenge")?.into(),
        code: digest(v.get("code"))?,
        code_used: v.get("code_used")?.as_bool()?,
        refresh,
    })
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
    /// The book of profile `owner` (`namespace/name`), the same every time; `shared`: a new
    /// one journals its changes for a shared store.
    pub fn book(&self, owner: &str, shared: bool) -> Arc<GrantBook> {
        let mut books = lock(&self.books);
        books
            .entry(owner.to_owned())
            .or_insert_with(|| {
                Arc::new(if shared {
                    GrantBook::shared()
                } else {
                    GrantBook::default()
                })
            })
            .clone()
    }
}
