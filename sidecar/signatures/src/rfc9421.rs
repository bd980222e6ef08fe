//! HTTP Message Signatures (RFC 9421): `Signature-Input` and `Signature`.
//!
//! Components: `@method`, `@target-uri`, `@authority`, `@scheme`, `@request-target`, `@path`,
//! `@query`, `@query-param;name=...`, and header fields (plain, `;bs`, `;key=...`), including
//! `content-digest` (RFC 9530, checked against the body when one is given).

use std::borrow::Cow;
use std::collections::HashSet;

use base64::Engine as _;

use crate::digest;
use crate::key::Algorithm;
use crate::sfv::{self, BareItem, InnerList, Item, Member, Params};
use crate::{Error, Key, KeyResolver, Message};

/// What to sign and how.
#[derive(Debug, Clone)]
pub struct SignParams<'a> {
    /// The dictionary key in both headers (`sig1`).
    pub label: &'a str,
    /// Covered components, in order: `@method`, `content-digest`, or a full identifier such as
    /// `"@query-param";name="id"`.
    pub components: &'a [&'a str],
    /// The `keyid` parameter.
    pub key_id: &'a str,
    /// The algorithm; it must fit the key.
    pub alg: Algorithm,
    /// The `created` parameter, Unix seconds.
    pub created: u64,
    /// The `expires` parameter, if any.
    pub expires: Option<u64>,
    /// The `nonce` parameter, if any.
    pub nonce: Option<&'a str>,
    /// The `tag` parameter, if any.
    pub tag: Option<&'a str>,
    /// Whether to send the `alg` parameter.
    pub include_alg: bool,
}

impl<'a> SignParams<'a> {
    /// Parameters with `alg` included and no expires, nonce or tag.
    pub fn new(label: &'a str, key_id: &'a str, alg: Algorithm, created: u64, components: &'a [&'a str]) -> Self {
        SignParams {
            label,
            components,
            key_id,
            alg,
            created,
            expires: None,
            nonce: None,
            tag: None,
            include_alg: true,
        }
    }
}

/// A signature made by [`sign`]: one member for each header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The `Signature-Input` member: `label=(...);created=...`.
    pub signature_input: String,
    /// The `Signature` member: `label=:base64:`.
    pub signature: String,
    /// The signature base that was signed.
    pub base: String,
}

impl Signed {
    /// Adds both members to `headers` (appending to any signatures already there).
    pub fn apply(&self, headers: &mut http::HeaderMap) -> Result<(), Error> {
        for (name, value) in [
            ("signature-input", &self.signature_input),
            ("signature", &self.signature),
        ] {
            let v = http::HeaderValue::from_str(value)
                .map_err(|_| Error::InvalidParams(format!("{name} is not a valid header value")))?;
            headers.append(name, v);
        }
        Ok(())
    }
}

/// What a verifier accepts.
#[derive(Debug, Clone)]
pub struct Policy<'a> {
    /// Allowed algorithms.
    pub algorithms: &'a [Algorithm],
    /// Components every accepted signature must cover (by name: `@method`, `host`, ...).
    /// A component carrying the same information counts: `@target-uri` for `@scheme`,
    /// `@authority`, `host`, `@path`, `@query`; `@request-target` for `@path`, `@query`;
    /// `host` and `@authority` for each other.
    pub required_components: &'a [&'a str],
    /// Oldest acceptable `created`, as an age in seconds.
    pub max_age: u64,
    /// How far in the future `created` may be (clock skew), seconds.
    pub clock_skew: u64,
    /// Only this label, if set; else the first signature that verifies.
    pub label: Option<&'a str>,
}

impl<'a> Policy<'a> {
    /// A policy: these algorithms, max age, 5 s skew, nothing else required.
    pub fn new(algorithms: &'a [Algorithm], max_age: u64) -> Self {
        Policy {
            algorithms,
            required_components: &[],
            max_age,
            clock_skew: 5,
            label: None,
        }
    }
}

/// An accepted signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Its label.
    pub label: String,
    /// Its `keyid`.
    pub key_id: String,
    /// The algorithm that verified.
    pub alg: Algorithm,
    /// Its `created`.
    pub created: u64,
    /// Its `expires`, if any.
    pub expires: Option<u64>,
    /// Its `nonce`, if any.
    pub nonce: Option<String>,
    /// Its `tag`, if any.
    pub tag: Option<String>,
    /// The covered component identifiers, serialized.
    pub components: Vec<String>,
    /// The signature bytes.
    pub signature: Vec<u8>,
    /// What a [`crate::ReplayCache`] keys on: SHA-256 of the keyId and the signature base
    /// (not of the signature bytes, which ECDSA lets an attacker re-encode).
    pub replay_key: [u8; 32],
    /// Until when (exclusive, Unix seconds) the verifier would accept it: the replay window.
    pub valid_until: u64,
    /// True when `content-digest` was covered and checked against the body.
    pub digest_checked: bool,
}

/// Signs `msg`. Every covered component must be present (add `Content-Digest` with
/// [`digest::content_digest`] before covering `content-digest`).
pub fn sign(msg: &Message<'_>, key: &Key, p: &SignParams<'_>) -> Result<Signed, Error> {
    if !sfv::is_key(p.label) {
        return Err(Error::InvalidParams(format!(
            "label {:?} is not a structured-field key",
            p.label
        )));
    }
    if !key.fits(p.alg) {
        return Err(Error::KeyMismatch {
            alg: p.alg.name().to_string(),
            key_id: p.key_id.to_string(),
        });
    }
    let mut items = Vec::with_capacity(p.components.len());
    for c in p.components {
        items.push(component_from_str(c)?);
    }
    let mut params: Params = vec![("created".into(), BareItem::Integer(to_i64(p.created)?))];
    if let Some(e) = p.expires {
        params.push(("expires".into(), BareItem::Integer(to_i64(e)?)));
    }
    params.push(("keyid".into(), sf_string(p.key_id)?));
    if p.include_alg {
        params.push(("alg".into(), BareItem::String(p.alg.name().into())));
    }
    if let Some(n) = p.nonce {
        params.push(("nonce".into(), sf_string(n)?));
    }
    if let Some(t) = p.tag {
        params.push(("tag".into(), sf_string(t)?));
    }
    let list = InnerList { items, params };
    let (base, params_value) = signature_base(msg, &list)?;
    let sig = key.sign(p.alg, base.as_bytes())?;
    let mut signature = format!("{}=", p.label);
    sfv::write_bare_item(&mut signature, &BareItem::ByteSeq(sig));
    Ok(Signed {
        signature_input: format!("{}={}", p.label, params_value),
        signature,
        base,
    })
}

/// Verifies the request's signatures against `policy`: the first acceptable one (or the one
/// labelled `policy.label`) is returned. With a `body`, a covered `content-digest` is checked
/// against it.
pub fn verify<K: KeyResolver + ?Sized>(
    msg: &Message<'_>,
    body: Option<&[u8]>,
    keys: &K,
    policy: &Policy<'_>,
    now: u64,
) -> Result<Verified, Error> {
    let input = msg
        .field("signature-input")?
        .ok_or(Error::MissingSignature("Signature-Input"))?;
    let sigs = msg.field("signature")?.ok_or(Error::MissingSignature("Signature"))?;
    let input = sfv::parse_dictionary(&input).map_err(|e| Error::malformed("Signature-Input", e))?;
    let sigs = sfv::parse_dictionary(&sigs).map_err(|e| Error::malformed("Signature", e))?;
    let mut first_err = None;
    for (label, member) in &input {
        if policy.label.is_some_and(|l| l != label) {
            continue;
        }
        match verify_one(msg, body, keys, policy, now, label, member, &sigs) {
            Ok(v) => return Ok(v),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or(Error::MissingSignature("Signature-Input (with the expected label)")))
}

#[allow(clippy::too_many_arguments)]
fn verify_one<K: KeyResolver + ?Sized>(
    msg: &Message<'_>,
    body: Option<&[u8]>,
    keys: &K,
    policy: &Policy<'_>,
    now: u64,
    label: &str,
    member: &Member,
    sigs: &sfv::Dictionary,
) -> Result<Verified, Error> {
    let Member::InnerList(list) = member else {
        return Err(Error::malformed(
            "Signature-Input",
            format!("{label} is not an inner list"),
        ));
    };
    let signature = match sfv::member(sigs, label) {
        Some(Member::Item(Item {
            bare: BareItem::ByteSeq(b),
            ..
        })) => b.clone(),
        Some(_) => {
            return Err(Error::malformed("Signature", format!("{label} is not a byte sequence")));
        }
        None => return Err(Error::malformed("Signature", format!("no member {label}"))),
    };

    // Parameters.
    let int = |name: &str| -> Result<Option<u64>, Error> {
        match sfv::param(&list.params, name) {
            None => Ok(None),
            Some(BareItem::Integer(i)) if *i >= 0 => Ok(Some(*i as u64)),
            Some(_) => Err(Error::malformed(
                "Signature-Input",
                format!("{name} is not a non-negative integer"),
            )),
        }
    };
    let string = |name: &str| -> Result<Option<String>, Error> {
        match sfv::param(&list.params, name) {
            None => Ok(None),
            Some(BareItem::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Error::malformed("Signature-Input", format!("{name} is not a string"))),
        }
    };
    let created = int("created")?;
    let expires = int("expires")?;
    let key_id = string("keyid")?.ok_or_else(|| Error::malformed("Signature-Input", "no keyid parameter"))?;
    let alg_param = string("alg")?;
    let nonce = string("nonce")?;
    let tag = string("tag")?;

    // Time.
    let created = created.ok_or(Error::MissingCreated)?;
    let valid_until = crate::validity(created, expires, now, policy.max_age, policy.clock_skew)?;

    // The key before the components: a signature by an unknown key costs no more than its
    // parameters (a request may carry up to `sfv::MAX_MEMBERS` of them).
    let key = keys.resolve(&key_id).ok_or_else(|| Error::UnknownKey(key_id.clone()))?;

    // Covered components: names, duplicates, required ones. (At most
    // `sfv::MAX_INNER_LIST_ITEMS` of them: the parser refuses more.)
    let mut covered: Vec<String> = Vec::with_capacity(list.items.len());
    let mut names: Vec<&str> = Vec::with_capacity(list.items.len());
    let mut distinct: HashSet<String> = HashSet::with_capacity(list.items.len());
    for item in &list.items {
        let BareItem::String(name) = &item.bare else {
            return Err(Error::malformed(
                "Signature-Input",
                "component identifier is not a string",
            ));
        };
        let mut s = String::new();
        sfv::write_item(&mut s, item);
        if !distinct.insert(s.clone()) {
            return Err(Error::malformed(
                "Signature-Input",
                format!("component {s} covered twice"),
            ));
        }
        covered.push(s);
        names.push(name);
    }
    for req in policy.required_components {
        if !covers(&names, req) {
            return Err(Error::NotCovered((*req).to_string()));
        }
    }

    // Algorithm.
    let candidates: Vec<Algorithm> = match &alg_param {
        Some(name) => {
            let alg = Algorithm::from_name(name)
                .filter(|a| policy.algorithms.contains(a))
                .ok_or_else(|| Error::AlgorithmNotAllowed(name.clone()))?;
            if !key.fits(alg) {
                return Err(Error::KeyMismatch {
                    alg: name.clone(),
                    key_id,
                });
            }
            vec![alg]
        }
        None => {
            let c: Vec<Algorithm> = policy.algorithms.iter().copied().filter(|a| key.fits(*a)).collect();
            if c.is_empty() {
                return Err(Error::AlgorithmNotAllowed(format!(
                    "(none allowed for the {:?} key of keyId {key_id})",
                    key.kind()
                )));
            }
            c
        }
    };

    let (base, _) = signature_base(msg, list)?;
    let alg = candidates
        .into_iter()
        .find(|a| key.verify(*a, base.as_bytes(), &signature).is_ok())
        .ok_or(Error::BadSignature)?;

    let mut digest_checked = false;
    if let Some(body) = body
        && names.iter().any(|n| n.eq_ignore_ascii_case("content-digest"))
    {
        let value = msg
            .field("content-digest")?
            .ok_or_else(|| Error::MissingComponent("content-digest".into()))?;
        digest::verify_content_digest(&value, body)?;
        digest_checked = true;
    }

    Ok(Verified {
        label: label.to_string(),
        replay_key: crate::replay_key(&key_id, base.as_bytes()),
        key_id,
        alg,
        created,
        expires,
        nonce,
        tag,
        components: covered,
        signature,
        valid_until,
        digest_checked,
    })
}

/// True when the covered component names include `required` or a component that carries the
/// same information: `@target-uri` covers `@scheme`, `@authority`, `host`, `@path` and
/// `@query`; `@request-target` covers `@path` and `@query`; `host` and `@authority` cover
/// each other.
fn covers(names: &[&str], required: &str) -> bool {
    let has = |n: &str| names.iter().any(|c| c.eq_ignore_ascii_case(n));
    if has(required) {
        return true;
    }
    match required.to_ascii_lowercase().as_str() {
        "@scheme" => has("@target-uri"),
        "@authority" => has("@target-uri") || has("host"),
        "host" => has("@target-uri") || has("@authority"),
        "@path" | "@query" => has("@target-uri") || has("@request-target"),
        _ => false,
    }
}

/// Builds the signature base (RFC 9421 §2.5) for the covered components and parameters in
/// `list`; returns it and the serialized `@signature-params` value.
pub fn signature_base(msg: &Message<'_>, list: &InnerList) -> Result<(String, String), Error> {
    let mut base = String::with_capacity(256);
    for item in &list.items {
        let value = component_value(msg, item)?;
        sfv::write_item(&mut base, item);
        base.push_str(": ");
        base.push_str(&value);
        base.push('\n');
    }
    let mut params = String::with_capacity(128);
    sfv::write_inner_list(&mut params, list);
    base.push_str("\"@signature-params\": ");
    base.push_str(&params);
    Ok((base, params))
}

fn component_from_str(c: &str) -> Result<Item, Error> {
    let item = if c.starts_with('"') {
        sfv::parse_item(c).map_err(|e| Error::InvalidParams(format!("component {c}: {e}")))?
    } else {
        let name = if c.starts_with('@') {
            c.to_string()
        } else {
            c.to_ascii_lowercase()
        };
        Item {
            bare: BareItem::String(name),
            params: Vec::new(),
        }
    };
    match &item.bare {
        BareItem::String(s) if !s.is_empty() && s != "@signature-params" => Ok(item),
        _ => Err(Error::InvalidParams(format!("component {c} is not a valid identifier"))),
    }
}

fn component_value<'a>(msg: &Message<'a>, item: &Item) -> Result<Cow<'a, str>, Error> {
    let BareItem::String(name) = &item.bare else {
        return Err(Error::malformed(
            "Signature-Input",
            "component identifier is not a string",
        ));
    };
    let display = || {
        let mut s = String::new();
        sfv::write_item(&mut s, item);
        s
    };
    for (k, _) in &item.params {
        let ok = match k.as_str() {
            "name" => name == "@query-param",
            "bs" | "key" => !name.starts_with('@'),
            _ => false,
        };
        if !ok {
            return Err(Error::UnsupportedComponent(display()));
        }
    }
    if let Some(derived) = name.strip_prefix('@') {
        let v = match derived {
            "method" => Cow::Borrowed(msg.method),
            "target-uri" => Cow::Owned(msg.target_uri()),
            "authority" => Cow::Owned(msg.normalized_authority()),
            "scheme" => Cow::Owned(msg.scheme.to_ascii_lowercase()),
            "request-target" => Cow::Owned(msg.request_target()),
            "path" => Cow::Borrowed(msg.path_or_root()),
            "query" => Cow::Owned(format!("?{}", msg.query.unwrap_or(""))),
            "query-param" => {
                let Some(BareItem::String(want)) = sfv::param(&item.params, "name") else {
                    return Err(Error::malformed("Signature-Input", "@query-param without a name"));
                };
                Cow::Owned(
                    query_param(msg.query.unwrap_or(""), want).ok_or_else(|| Error::MissingComponent(display()))??,
                )
            }
            "status" => return Err(Error::MissingComponent(display())),
            "signature-params" => {
                return Err(Error::malformed("Signature-Input", "@signature-params covered"));
            }
            _ => return Err(Error::UnsupportedComponent(display())),
        };
        return Ok(v);
    }
    if sfv::param(&item.params, "bs").is_some() {
        if sfv::param(&item.params, "key").is_some() {
            return Err(Error::UnsupportedComponent(display()));
        }
        let lines = msg.field_lines(name);
        if lines.is_empty() {
            return Err(Error::MissingComponent(display()));
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        return Ok(Cow::Owned(
            lines
                .iter()
                .map(|l| format!(":{}:", b64.encode(l)))
                .collect::<Vec<_>>()
                .join(", "),
        ));
    }
    let value = msg.field(name)?.ok_or_else(|| Error::MissingComponent(display()))?;
    if let Some(key) = sfv::param(&item.params, "key") {
        let BareItem::String(key) = key else {
            return Err(Error::malformed("Signature-Input", "key parameter is not a string"));
        };
        let dict = sfv::parse_dictionary(&value)
            .map_err(|_| Error::malformed("header", format!("{name} is not a dictionary")))?;
        let m = sfv::member(&dict, key).ok_or_else(|| Error::MissingComponent(display()))?;
        let mut s = String::new();
        sfv::write_member(&mut s, m);
        return Ok(Cow::Owned(s));
    }
    Ok(value)
}

/// The re-encoded value of query parameter `want` (itself in re-encoded form); `None` when
/// absent, an error when it occurs more than once.
fn query_param(query: &str, want: &str) -> Option<Result<String, Error>> {
    let mut found: Option<String> = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        if form_reencode(n) == want {
            if found.is_some() {
                return Some(Err(Error::malformed(
                    "query",
                    format!("parameter {want} occurs more than once"),
                )));
            }
            found = Some(form_reencode(v));
        }
    }
    found.map(Ok)
}

/// application/x-www-form-urlencoded decoding, then percent-encoding of every byte outside
/// `A-Za-z0-9*-._`.
fn form_reencode(s: &str) -> String {
    let b = s.as_bytes();
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => decoded.push(b' '),
            b'%' if i + 2 < b.len() => match (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                (Some(h), Some(l)) => {
                    decoded.push(h << 4 | l);
                    i += 2;
                }
                _ => decoded.push(b'%'),
            },
            c => decoded.push(c),
        }
        i += 1;
    }
    let mut out = String::with_capacity(decoded.len());
    for c in decoded {
        if c.is_ascii_alphanumeric() || b"*-._".contains(&c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn sf_string(s: &str) -> Result<BareItem, Error> {
    if s.bytes().all(|c| (0x20..0x7f).contains(&c)) {
        Ok(BareItem::String(s.to_string()))
    } else {
        Err(Error::InvalidParams("parameter value is not printable ASCII".into()))
    }
}

fn to_i64(v: u64) -> Result<i64, Error> {
    i64::try_from(v)
        .ok()
        .filter(|v| *v < 1_000_000_000_000_000)
        .ok_or_else(|| Error::InvalidParams("timestamp out of range".into()))
}
