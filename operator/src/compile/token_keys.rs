//! The signing keys of a Builtin OAuth2 provider: which Secret holds them
//! (`<profile>-portcullis-token-keys`, made and rotated by the operator), how they are read
//! (each `key-<unix seconds>` an EC P-256 private key, PKCS#8 PEM) and how a new one is made.
//! Rotation follows [`plan_rotating_keys`]: a new key every `max(24 h, tokenTtlSeconds)`, the
//! old one kept until every token it signed has expired.

use std::collections::BTreeMap;

use base64::Engine as _;
use portcullis_config as cfg;

use super::login::{SESSION_KEY_PREFIX, key_created, plan_rotating_keys};
use super::secrets::SecretIndex;
use super::{Problem, reason};

/// Label on the token-key Secrets the operator made (it only ever touches those).
pub const TOKEN_KEYS_LABEL: &str = "portcullis.dev/token-keys-for";
/// A new token key is made at least this often (seconds).
pub const ROTATE_EVERY_SECS: u64 = 24 * 3600;
/// The field the problems of a Builtin profile's keys are reported on.
const FIELD: &str = "spec.oauth2.builtin (token signing keys)";

/// The Secret that holds the token signing keys of Builtin profile `profile`.
pub fn token_keys_secret_name(profile: &str) -> String {
    format!("{profile}-portcullis-token-keys")
}

/// What the token-key Secret of a profile whose tokens live `ttl_secs` should hold at `now`
/// (see [`plan_rotating_keys`]); `fresh` makes a new key ([`new_key_pem`]).
pub fn plan_token_keys(
    current: &BTreeMap<String, String>,
    now: u64,
    ttl_secs: u64,
    fresh: impl FnOnce() -> String,
) -> Option<BTreeMap<String, String>> {
    plan_rotating_keys(current, now, ROTATE_EVERY_SECS.max(ttl_secs), ttl_secs + 60, fresh)
}

/// A new EC P-256 private key, PKCS#8 PEM; `None` without randomness.
pub fn new_key_pem() -> Option<String> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 =
        ring::signature::EcdsaKeyPair::generate_pkcs8(&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).ok()?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).ok()?);
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Some(pem)
}

/// The signing keys of Builtin profile `profile` from its token-key Secret, newest first.
pub(crate) fn compile(profile: &str, secrets: &SecretIndex<'_>) -> Result<Vec<cfg::SigningKey>, Problem> {
    let secret = token_keys_secret_name(profile);
    let data = secrets.get(FIELD, &secret, None).map_err(|p| {
        if p.reason == reason::SECRET_NOT_FOUND {
            Problem::new(
                reason::SECRET_NOT_FOUND,
                "spec.oauth2.builtin",
                format!(
                    "token signing key Secret {secret:?} not found yet (the operator makes it; for render, supply it \
                     with data {SESSION_KEY_PREFIX}<unix seconds>: an EC P-256 private key, PKCS#8 PEM)"
                ),
            )
        } else {
            p
        }
    })?;
    let mut keys = Vec::new();
    for (name, value) in data.all()? {
        let bad = |what: &str| {
            Problem::new(
                reason::INVALID_SECRET,
                FIELD,
                format!("Secret {secret:?} key {name:?}: {what}"),
            )
        };
        let created = key_created(&name).ok_or_else(|| bad("is not named key-<unix seconds>"))?;
        if !value.expose().contains("-----BEGIN PRIVATE KEY-----") {
            return Err(bad("is not a PKCS#8 PEM private key"));
        }
        keys.push((created, cfg::SigningKey { name, pem: value }));
    }
    keys.sort_by_key(|k| std::cmp::Reverse(k.0));
    Ok(keys.into_iter().map(|(_, k)| k).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    #[test]
    fn keys_rotate_daily_and_the_old_one_outlives_its_tokens() {
        let first = plan_token_keys(&BTreeMap::new(), 1000, 3600, || "A".into()).unwrap();
        assert_eq!(first.keys().collect::<Vec<_>>(), ["key-1000"]);
        assert_eq!(plan_token_keys(&first, 1000 + DAY - 1, 3600, || "B".into()), None);
        let rotated = plan_token_keys(&first, 1000 + DAY, 3600, || "B".into()).unwrap();
        assert_eq!(rotated.len(), 2, "the old key still verifies its tokens");
        // Once every token of the old key has expired (its successor an hour and a minute
        // old), it goes.
        assert_eq!(plan_token_keys(&rotated, 1000 + DAY + 3660, 3600, || "C".into()), None);
        let later = plan_token_keys(&rotated, 1000 + DAY + 3661, 3600, || "C".into()).unwrap();
        assert_eq!(
            later.keys().cloned().collect::<Vec<_>>(),
            [format!("key-{}", 1000 + DAY)]
        );
    }

    #[test]
    fn a_new_key_is_a_p256_pkcs8_pem_the_sidecar_signs_with() {
        let pem = new_key_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let der = base64::engine::general_purpose::STANDARD
            .decode(pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>())
            .unwrap();
        let rng = ring::rand::SystemRandom::new();
        ring::signature::EcdsaKeyPair::from_pkcs8(&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
            .unwrap();
        assert_ne!(pem, new_key_pem().unwrap());
    }
}
