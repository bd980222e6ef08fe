//! Compiling an OAuth2 profile's `login` block (sign-in for people), and the pure rules of
//! its session keys: which Secret holds them, how they are named, when a new one is made and
//! when an old one is dropped (the controller applies [`plan_session_keys`]).

use std::collections::BTreeMap;

use base64::Engine as _;
use portcullis_api as api;
use portcullis_config as cfg;

use super::secrets::{Outbound, SecretIndex, Sender};
use super::{Problem, reason};

/// Google's issuer.
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";
/// Salesforce's issuer (production orgs; a My Domain or Experience Cloud site sets `issuer`).
pub const SALESFORCE_ISSUER: &str = "https://login.salesforce.com";
/// Label on the session-key Secrets the operator made (it only ever touches those).
pub const SESSION_SECRET_LABEL: &str = "portcullis.dev/session-keys-for";
/// Name prefix of each key in a session-key Secret: `key-<unix seconds created>`.
pub const SESSION_KEY_PREFIX: &str = "key-";
/// Most keys kept in a session-key Secret.
pub const MAX_SESSION_KEYS: usize = 4;
/// A new session key is made at least this often (seconds).
pub const ROTATE_EVERY_SECS: u64 = 24 * 3600;
/// How long a pending sign-in may take (the sealed `state` cookie's life), seconds.
pub const LOGIN_STATE_SECS: u64 = 600;

/// The Secret that holds the session keys of profile `profile` (made by the operator).
pub fn session_secret_name(profile: &str) -> String {
    format!("{profile}-portcullis-session")
}

/// The issuer of a sign-in profile: `issuer` when set, else the provider's.
pub fn login_issuer(o: &api::OAuth2Profile) -> Option<String> {
    if let Some(issuer) = &o.issuer {
        return Some(issuer.trim_end_matches('/').to_owned());
    }
    match o.provider {
        api::OAuth2Provider::Google => Some(GOOGLE_ISSUER.to_owned()),
        api::OAuth2Provider::Salesforce => Some(SALESFORCE_ISSUER.to_owned()),
        api::OAuth2Provider::Generic | api::OAuth2Provider::Builtin => None,
    }
}

/// Compiles `spec.oauth2.login` of profile `name`.
pub(crate) fn compile(
    name: &str,
    o: &api::OAuth2Profile,
    l: &api::OAuth2Login,
    secrets: &SecretIndex<'_>,
) -> Result<(cfg::Login, cfg::LoginSecrets), Problem> {
    let invalid = |field: &str, message: String| Err(Problem::new(reason::INVALID_SPEC, field, message));
    if o.provider == api::OAuth2Provider::Builtin {
        return invalid(
            "spec.oauth2.login",
            "needs an identity provider (Google, Salesforce or Generic), not Builtin".into(),
        );
    }
    let Some(issuer) = login_issuer(o) else {
        return invalid(
            "spec.oauth2.issuer",
            "is required for login with provider Generic (the OpenID provider's issuer URL)".into(),
        );
    };
    super::profile::check_identity_url("spec.oauth2.issuer", &issuer, o.allow_http, "spec.oauth2.allowHttp")?;
    if l.client_id.trim().is_empty() || l.client_id.chars().any(|c| c.is_control()) {
        return invalid("spec.oauth2.login.clientId", "must be a non-empty client id".into());
    }
    for (field, path) in [
        ("spec.oauth2.login.redirectPath", &l.redirect_path),
        ("spec.oauth2.login.logoutPath", &l.logout_path),
    ] {
        if !valid_login_path(path) {
            return invalid(
                field,
                format!("{path:?} must be an absolute path in normal form (no dot segments, '//', '%', '?' or '#')"),
            );
        }
    }
    if l.redirect_path == l.logout_path {
        return invalid("spec.oauth2.login.logoutPath", "must differ from redirectPath".into());
    }
    if !l.scopes.iter().any(|s| s == "openid") {
        return invalid("spec.oauth2.login.scopes", "must include openid".into());
    }
    if let Some(bad) = l.scopes.iter().find(|s| !cfg::is_scope_token(s)) {
        return invalid("spec.oauth2.login.scopes", format!("{bad:?} is not a valid scope"));
    }
    if !(300..=2_592_000).contains(&l.session_max_seconds) {
        return invalid(
            "spec.oauth2.login.sessionMaxSeconds",
            "must be between 300 and 2592000".into(),
        );
    }
    let data = secrets.get_outbound(
        "spec.oauth2.login.clientSecretRef.name",
        &l.client_secret_ref.name,
        None,
        Outbound {
            sender: Sender::Login(name),
            urls: &[("spec.oauth2.issuer", issuer.as_str())],
            unverified_origin: false,
        },
    )?;
    let client_secret = data.required("clientSecret")?;
    let key_secret = session_secret_name(name);
    let keys = secrets
        .get("spec.oauth2.login (session keys)", &key_secret, None)
        .map_err(|p| {
            if p.reason == reason::SECRET_NOT_FOUND {
                Problem::new(
                    reason::SECRET_NOT_FOUND,
                    "spec.oauth2.login",
                    format!(
                        "session key Secret {key_secret:?} not found yet (the operator makes it; for render, supply it \
                     with data {SESSION_KEY_PREFIX}<unix seconds>: base64 of 32 random bytes)"
                    ),
                )
            } else {
                p
            }
        })?;
    let session_keys = session_keys(&key_secret, &keys.all()?)?;
    Ok((
        cfg::Login {
            discovery_url: format!("{issuer}/.well-known/openid-configuration"),
            issuer,
            client_id: l.client_id.clone(),
            redirect_path: l.redirect_path.clone(),
            logout_path: l.logout_path.clone(),
            scopes: l.scopes.clone(),
            allowed_domains: l
                .allowed_domains
                .iter()
                .map(|d| d.trim().to_ascii_lowercase())
                .collect(),
            allowed_emails: l.allowed_emails.iter().map(|e| e.trim().to_ascii_lowercase()).collect(),
            session_max_seconds: l.session_max_seconds,
        },
        cfg::LoginSecrets {
            client_secret,
            session_keys,
        },
    ))
}

/// A callback or logout path: absolute, in the normal form the sidecar matches on.
fn valid_login_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains("//")
        && !path.contains(['%', '?', '#', '\\', ';'])
        && path.split('/').all(|seg| seg != "." && seg != "..")
        && path.bytes().all(|b| b.is_ascii_graphic())
}

/// The keys of session-key Secret `secret` (its entries), newest first: every entry must be
/// `key-<unix seconds>` with 32 bytes in base64.
pub(crate) fn session_keys(
    secret: &str,
    entries: &BTreeMap<String, cfg::Sensitive>,
) -> Result<Vec<cfg::SessionKey>, Problem> {
    let mut keys = Vec::new();
    for (name, value) in entries {
        let bad = |what: &str| {
            Problem::new(
                reason::INVALID_SECRET,
                "spec.oauth2.login (session keys)",
                format!("Secret {secret:?} key {name:?}: {what}"),
            )
        };
        let created = key_created(name).ok_or_else(|| bad("is not named key-<unix seconds>"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value.expose().trim())
            .map_err(|_| bad("is not base64"))?;
        if bytes.len() != 32 {
            return Err(bad("is not 32 bytes"));
        }
        keys.push((
            created,
            cfg::SessionKey {
                name: name.clone(),
                key: value.expose().trim().to_owned().into(),
            },
        ));
    }
    if keys.is_empty() {
        return Err(Problem::new(
            reason::SECRET_KEY_MISSING,
            "spec.oauth2.login (session keys)",
            format!("Secret {secret:?} holds no session key"),
        ));
    }
    keys.sort_by_key(|k| std::cmp::Reverse(k.0));
    Ok(keys.into_iter().map(|(_, k)| k).collect())
}

/// The creation time of a key named `key-<unix seconds>`.
pub fn key_created(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(SESSION_KEY_PREFIX)?;
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What the session-key Secret of a profile should hold at `now` (Unix seconds), given what
/// it holds (`current`: key name to value; names that are not keys are dropped) and the
/// longest a session lasts (`session_max_secs`): `None` when it is right as it is.
///
/// - No key: one new key.
/// - The newest key older than the rotation period (`max(ROTATE_EVERY_SECS,
///   session_max_secs)`): a new key is added in front; the older ones stay.
/// - An older key is dropped once the key after it has sealed every session for longer than
///   a session lasts (plus a pending sign-in): no session it sealed is alive. The overlap.
/// - At most [`MAX_SESSION_KEYS`] keys, the newest kept.
///
/// `fresh` gives a new key's value (base64 of 32 random bytes): the only impure input.
pub fn plan_session_keys(
    current: &BTreeMap<String, String>,
    now: u64,
    session_max_secs: u64,
    fresh: impl FnOnce() -> String,
) -> Option<BTreeMap<String, String>> {
    plan_rotating_keys(
        current,
        now,
        ROTATE_EVERY_SECS.max(session_max_secs),
        session_max_secs + LOGIN_STATE_SECS,
        fresh,
    )
}

/// What a Secret of rotating keys (`key-<unix seconds>`, newest first) should hold at `now`:
/// a new key when there is none or the newest is `rotate_every` old; an older key kept until
/// the key after it has been in use for `overlap` (what the older one made cannot outlive
/// that); at most [`MAX_SESSION_KEYS`]. `None` when it is right as it is. Session keys and
/// Builtin token signing keys follow it.
pub fn plan_rotating_keys(
    current: &BTreeMap<String, String>,
    now: u64,
    rotate_every: u64,
    overlap: u64,
    fresh: impl FnOnce() -> String,
) -> Option<BTreeMap<String, String>> {
    let mut keys: Vec<(u64, &String, &String)> = current
        .iter()
        .filter_map(|(name, value)| Some((key_created(name)?, name, value)))
        .collect();
    keys.sort_by_key(|k| std::cmp::Reverse(k.0));
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let newest = keys.first().map(|k| k.0);
    let mut successor_created = match newest {
        Some(created) if now.saturating_sub(created) < rotate_every && created <= now => None,
        _ => {
            out.insert(format!("{SESSION_KEY_PREFIX}{now}"), fresh());
            Some(now)
        }
    };
    for (created, name, value) in keys {
        if out.len() >= MAX_SESSION_KEYS {
            break;
        }
        // Kept while the key that replaced it has not outlived everything it made.
        let keep = successor_created.is_none_or(|next| now.saturating_sub(next) <= overlap);
        if keep {
            out.insert(name.clone(), value.clone());
        }
        successor_created = Some(created);
    }
    let same = out.len() == current.len() && out.iter().all(|(k, v)| current.get(k) == Some(v));
    (!same).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[(&str, &str)]) -> BTreeMap<String, String> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const DAY: u64 = 86_400;
    const MAX: u64 = 8 * 3600;

    #[test]
    fn first_key_is_made() {
        let plan = plan_session_keys(&BTreeMap::new(), 1000, MAX, || "A".into()).unwrap();
        assert_eq!(plan, keys(&[("key-1000", "A")]));
    }

    #[test]
    fn a_young_key_is_left_alone() {
        let now = 1000 + DAY - 1;
        assert_eq!(
            plan_session_keys(&keys(&[("key-1000", "A")]), now, MAX, || "B".into()),
            None
        );
    }

    #[test]
    fn rotation_keeps_the_old_key_for_the_overlap_then_drops_it() {
        let t0 = 1000;
        let t1 = t0 + DAY;
        let rotated = plan_session_keys(&keys(&[("key-1000", "A")]), t1, MAX, || "B".into()).unwrap();
        assert_eq!(rotated, keys(&[("key-1000", "A"), (&format!("key-{t1}"), "B")]));
        // Within the overlap (a session's longest life plus a pending sign-in): both kept.
        let during = t1 + MAX + LOGIN_STATE_SECS;
        assert_eq!(plan_session_keys(&rotated, during, MAX, || "C".into()), None);
        // After it: the old key goes, nothing new is made.
        let after = plan_session_keys(&rotated, during + 1, MAX, || "C".into()).unwrap();
        assert_eq!(after, keys(&[(&format!("key-{t1}"), "B")]));
    }

    #[test]
    fn long_sessions_rotate_less_often_and_keys_stay_bounded() {
        let month = 30 * DAY;
        assert_eq!(
            plan_session_keys(&keys(&[("key-0", "A")]), 2 * DAY, month, || "B".into()),
            None
        );
        let many = keys(&[
            ("key-1", "a"),
            ("key-2", "b"),
            ("key-3", "c"),
            ("key-4", "d"),
            ("key-5", "e"),
        ]);
        let plan = plan_session_keys(&many, 6, month, || "f".into()).unwrap();
        assert_eq!(plan.len(), MAX_SESSION_KEYS);
        assert!(plan.contains_key("key-5") && !plan.contains_key("key-1"));
    }

    #[test]
    fn foreign_entries_and_future_keys_are_replaced() {
        let plan = plan_session_keys(&keys(&[("junk", "x")]), 50, MAX, || "A".into()).unwrap();
        assert_eq!(plan, keys(&[("key-50", "A")]));
        // A key from the future (a clock step): a new one is made now, the odd one kept for the overlap.
        let plan = plan_session_keys(&keys(&[("key-9999", "Z")]), 50, MAX, || "A".into()).unwrap();
        assert!(plan.contains_key("key-50"));
    }

    #[test]
    fn key_names() {
        assert_eq!(key_created("key-17"), Some(17));
        for bad in ["key-", "key-x", "kee-1", "key-+1", "key-123456789012345678901"] {
            assert_eq!(key_created(bad), None, "{bad}");
        }
        assert!(valid_login_path("/oauth2/callback"));
        for bad in ["oauth2", "/a//b", "/a/../b", "/a%2f", "/a?x", "/a b"] {
            assert!(!valid_login_path(bad), "{bad}");
        }
    }
}
