//! A Builtin provider's grants in the store (`grants.lua`), so that every replica redeems the
//! same codes, rotates the same refresh tokens and enforces the same revocations.
//!
//! Keys, all under the profile's hash tag (one slot in a Redis Cluster):
//! `portcullis:grants:{<namespace>/<profile>}:` + `g:<grant id>` (a hash: version and
//! document, expiring with the grant), `u:<SHA-256 of the user>` and `c:<client id>` (the
//! grant ids of a user and of a client), `rev` (a sorted set of revocations by the store's
//! time: `g:<grant id>`, `c:<client id>`).

use std::sync::LazyLock;

use redis::Script;
use sha2::{Digest, Sha256};

use super::{Store, StoreError};

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../grants.lua")));

/// How long revocations stay listed: longer than any access token lives (a day, the most
/// `tokenTtlSeconds` allows) and any clock skew.
pub const REVOCATIONS_KEPT_MS: u64 = (86_400 + 600) * 1000;

/// A grant's keys.
fn tag(owner: &str) -> String {
    format!("portcullis:grants:{{{owner}}}:")
}

fn grant_key(owner: &str, id: &str) -> String {
    format!("{}g:{id}", tag(owner))
}

fn user_key(owner: &str, user: &str) -> String {
    let digest = Sha256::digest(user.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}u:{hex}", tag(owner))
}

fn client_key(owner: &str, client: &str) -> String {
    format!("{}c:{client}", tag(owner))
}

fn revocations_key(owner: &str) -> String {
    format!("{}rev", tag(owner))
}

/// A grant's state to save ([`Store::grant_save`]).
#[derive(Debug, Clone, Copy)]
pub struct GrantState<'a> {
    pub id: &'a str,
    pub user: &'a str,
    pub client_id: &'a str,
    /// The version the change was made on (0: a new grant) and the new one.
    pub from_version: u64,
    pub version: u64,
    pub document: &'a str,
    /// Unix ms.
    pub expires_at_ms: u64,
}

/// Revocations the store lists ([`Store::revocations_since`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocations {
    /// The store's time, ms.
    pub now_ms: u64,
    /// Grant ids and when they were revoked (ms).
    pub grants: Vec<(String, u64)>,
    /// Client ids and until when their client-credentials tokens are revoked (ms).
    pub clients: Vec<(String, u64)>,
}

impl Store {
    /// The grants `ids` of profile `owner`: each one's version and document, or `None`.
    pub async fn grants_load(&self, owner: &str, ids: &[&str]) -> Result<Vec<Option<(u64, String)>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut call = SCRIPT.prepare_invoke();
        for id in ids {
            call.key(grant_key(owner, id));
        }
        call.arg("load");
        let reply: Vec<Vec<String>> = self.run(&call).await?;
        reply
            .into_iter()
            .map(|r| match r.as_slice() {
                [] => Ok(None),
                [v, d] => v
                    .parse()
                    .map(|v| Some((v, d.clone())))
                    .map_err(|_| StoreError::Reply("a grant version".into())),
                _ => Err(StoreError::Reply("a grant".into())),
            })
            .collect()
    }

    /// Saves a grant's state if the store still holds the version the change was made on
    /// (and the grant is neither revoked nor ended): whether it did. `index_ttl_ms`: how long
    /// the user's and client's indexes are kept (the longest grant).
    pub async fn grant_save(&self, owner: &str, state: &GrantState<'_>, index_ttl_ms: u64) -> Result<bool, StoreError> {
        let mut call = SCRIPT.prepare_invoke();
        call.key(grant_key(owner, state.id))
            .key(user_key(owner, state.user))
            .key(client_key(owner, state.client_id))
            .key(revocations_key(owner))
            .arg("save")
            .arg(state.from_version)
            .arg(state.version)
            .arg(state.document)
            .arg(state.expires_at_ms)
            .arg(state.id)
            .arg(index_ttl_ms.max(1));
        Ok(self.run::<i64>(&call).await? == 1)
    }

    /// Revokes grants (id, user, client) of profile `owner` for every replica: the store's
    /// time of the revocation.
    pub async fn grants_revoke(&self, owner: &str, grants: &[(&str, &str, &str)]) -> Result<u64, StoreError> {
        let mut call = SCRIPT.prepare_invoke();
        call.key(revocations_key(owner));
        for (id, user, client) in grants {
            call.key(grant_key(owner, id))
                .key(user_key(owner, user))
                .key(client_key(owner, client));
        }
        call.arg("revoke").arg(REVOCATIONS_KEPT_MS);
        for (id, _, _) in grants {
            call.arg(*id);
        }
        self.run(&call).await
    }

    /// Revokes the client-credentials tokens `client` was issued until now, for every replica.
    pub async fn client_tokens_revoke(&self, owner: &str, client: &str) -> Result<u64, StoreError> {
        let mut call = SCRIPT.prepare_invoke();
        call.key(revocations_key(owner)).arg("client").arg(client);
        self.run(&call).await
    }

    /// The ids of the grants of `user` (else of `client`) the store indexes (some may have
    /// ended since).
    pub async fn grant_index(
        &self,
        owner: &str,
        user: Option<&str>,
        client: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let key = match (user, client) {
            (Some(u), _) => user_key(owner, u),
            (None, Some(c)) => client_key(owner, c),
            (None, None) => return Ok(Vec::new()),
        };
        let mut call = SCRIPT.prepare_invoke();
        call.key(key).arg("index");
        self.run(&call).await
    }

    /// The revocations of profile `owner` made since `since_ms` (the store's time).
    pub async fn revocations_since(&self, owner: &str, since_ms: u64) -> Result<Revocations, StoreError> {
        let mut call = SCRIPT.prepare_invoke();
        call.key(revocations_key(owner)).arg("since").arg(since_ms);
        let reply: Vec<String> = self.run(&call).await?;
        let bad = || StoreError::Reply("a revocation list".into());
        let (now, rest) = reply.split_first().ok_or_else(bad)?;
        let mut out = Revocations {
            now_ms: now.parse().map_err(|_| bad())?,
            ..Revocations::default()
        };
        for pair in rest.chunks(2) {
            let [member, score] = pair else { return Err(bad()) };
            let at: u64 = score.parse::<f64>().map_err(|_| bad())? as u64;
            match member.split_once(':') {
                Some(("g", id)) => out.grants.push((id.to_owned(), at)),
                Some(("c", client)) => out.clients.push((client.to_owned(), at)),
                _ => return Err(bad()),
            }
        }
        Ok(out)
    }
}
