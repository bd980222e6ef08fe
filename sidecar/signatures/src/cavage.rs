//! draft-cavage-http-signatures-10: the `Signature` header (or `Authorization: Signature ...`)
//! with `keyId`, `algorithm`, `created`, `expires`, `headers` and `signature`.
//!
//! Pseudo-headers `(request-target)`, `(created)`, `(expires)`; header fields such as `host`,
//! `date`, `digest` (`Digest: SHA-256=base64`, checked against the body when one is given).
//! Algorithm names: `hs2019` (the algorithm follows from the key), and the legacy
//! `hmac-sha256`, `rsa-sha256`, `ecdsa-sha256`, `ed25519` / `ed25519-sha512`; the RFC 9421
//! names are accepted too. ECDSA signatures are DER (`r || s` is accepted on verify).

use base64::Engine as _;

use crate::digest;
use crate::key::{Algorithm, EcdsaEncoding};
use crate::{Error, Key, KeyResolver, Message};

/// How the `algorithm` parameter is written when signing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlgorithmName {
    /// `hs2019`: the verifier derives the algorithm from the key.
    Hs2019,
    /// The legacy name (`hmac-sha256`, `rsa-sha256`, `ecdsa-sha256`, `ed25519-sha512`);
    /// rsa-pss-sha512 has none and is written `hs2019`.
    Legacy,
}

/// What to sign and how.
#[derive(Debug, Clone)]
pub struct SignParams<'a> {
    /// The `keyId` parameter.
    pub key_id: &'a str,
    /// The algorithm; it must fit the key.
    pub alg: Algorithm,
    /// How to name it in the `algorithm` parameter.
    pub algorithm_name: AlgorithmName,
    /// The signed headers, in order (`(request-target)`, `host`, `date`, `digest`, ...).
    pub headers: &'a [&'a str],
    /// The `created` parameter (needed to sign `(created)`).
    pub created: Option<u64>,
    /// The `expires` parameter (needed to sign `(expires)`).
    pub expires: Option<u64>,
}

/// A signature made by [`sign`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The parameters: `keyId="...",algorithm="...",headers="...",signature="..."`.
    pub params: String,
    /// The signing string that was signed.
    pub signing_string: String,
}

impl Signed {
    /// The value for a `Signature` header.
    pub fn signature_header(&self) -> &str {
        &self.params
    }

    /// The value for an `Authorization` header: `Signature ...`.
    pub fn authorization_header(&self) -> String {
        format!("Signature {}", self.params)
    }
}

/// What a verifier accepts.
#[derive(Debug, Clone)]
pub struct Policy<'a> {
    /// Allowed algorithms.
    pub algorithms: &'a [Algorithm],
    /// Headers every accepted signature must cover. `(request-target)` also satisfies the
    /// RFC 9421 names `@method`, `@path`, `@query` and `@request-target`; `host` satisfies
    /// `@authority`; both together satisfy `@target-uri`.
    pub required_headers: &'a [&'a str],
    /// Oldest acceptable creation (signed `created`, else the signed `Date`), as an age in
    /// seconds.
    pub max_age: u64,
    /// How far in the future the creation time may be, seconds.
    pub clock_skew: u64,
}

impl<'a> Policy<'a> {
    /// A policy: these algorithms, max age, 5 s skew, nothing else required.
    pub fn new(algorithms: &'a [Algorithm], max_age: u64) -> Self {
        Policy {
            algorithms,
            required_headers: &[],
            max_age,
            clock_skew: 5,
        }
    }
}

/// An accepted signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Its `keyId`.
    pub key_id: String,
    /// The algorithm that verified.
    pub alg: Algorithm,
    /// The creation time: the signed `created` (`(created)` in the headers), else the signed
    /// `Date`.
    pub created: u64,
    /// Its `expires`, if signed (`(expires)` in the headers).
    pub expires: Option<u64>,
    /// The signed headers.
    pub headers: Vec<String>,
    /// The signature bytes.
    pub signature: Vec<u8>,
    /// What a [`crate::ReplayCache`] keys on: SHA-256 of the keyId and the signing string
    /// (not of the signature bytes, which ECDSA lets an attacker re-encode).
    pub replay_key: [u8; 32],
    /// Until when (exclusive, Unix seconds) the verifier would accept it: the replay window.
    pub valid_until: u64,
    /// True when `digest` was signed and checked against the body.
    pub digest_checked: bool,
}

fn legacy_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HmacSha256 => "hmac-sha256",
        Algorithm::RsaV15Sha256 => "rsa-sha256",
        Algorithm::RsaPssSha512 => "hs2019",
        Algorithm::EcdsaP256Sha256 => "ecdsa-sha256",
        Algorithm::Ed25519 => "ed25519-sha512",
    }
}

/// Signs `msg`. Every signed header must be present (add `Digest` with
/// [`digest::digest_header`] and `Date` before signing them).
pub fn sign(msg: &Message<'_>, key: &Key, p: &SignParams<'_>) -> Result<Signed, Error> {
    if !key.fits(p.alg) {
        return Err(Error::KeyMismatch {
            alg: p.alg.name().to_string(),
            key_id: p.key_id.to_string(),
        });
    }
    if p.headers.is_empty() {
        return Err(Error::InvalidParams("no headers to sign".into()));
    }
    check_param_value("keyId", p.key_id)?;
    let headers: Vec<String> = p.headers.iter().map(|h| h.to_ascii_lowercase()).collect();
    for h in &headers {
        if h.is_empty() || h.contains(|c: char| c.is_ascii_whitespace() || c == '"') {
            return Err(Error::InvalidParams(format!("bad header name {h:?}")));
        }
    }
    let signing_string = signing_string(msg, &headers, p.created, p.expires)?;
    let sig = key.sign_with(p.alg, signing_string.as_bytes(), EcdsaEncoding::Asn1)?;
    let algorithm = match p.algorithm_name {
        AlgorithmName::Hs2019 => "hs2019",
        AlgorithmName::Legacy => legacy_name(p.alg),
    };
    let mut params = format!("keyId=\"{}\",algorithm=\"{algorithm}\"", p.key_id);
    if let Some(c) = p.created {
        params.push_str(&format!(",created={c}"));
    }
    if let Some(e) = p.expires {
        params.push_str(&format!(",expires={e}"));
    }
    params.push_str(&format!(
        ",headers=\"{}\",signature=\"{}\"",
        headers.join(" "),
        base64::engine::general_purpose::STANDARD.encode(sig)
    ));
    Ok(Signed { params, signing_string })
}

fn check_param_value(name: &str, v: &str) -> Result<(), Error> {
    if v.bytes().all(|c| (0x20..0x7f).contains(&c) && c != b'"' && c != b'\\') {
        Ok(())
    } else {
        Err(Error::InvalidParams(format!(
            "{name} has characters that cannot be quoted"
        )))
    }
}

/// The signing string for `headers` (lower-case names), joined with `\n`.
pub fn signing_string(
    msg: &Message<'_>,
    headers: &[String],
    created: Option<u64>,
    expires: Option<u64>,
) -> Result<String, Error> {
    let mut out = String::with_capacity(256);
    for (i, h) in headers.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(h);
        out.push_str(": ");
        match h.as_str() {
            "(request-target)" => {
                out.push_str(&msg.method.to_ascii_lowercase());
                out.push(' ');
                out.push_str(&msg.request_target());
            }
            "(created)" => {
                let c = created.ok_or_else(|| Error::MissingComponent("(created)".into()))?;
                out.push_str(&c.to_string());
            }
            "(expires)" => {
                let e = expires.ok_or_else(|| Error::MissingComponent("(expires)".into()))?;
                out.push_str(&e.to_string());
            }
            name if name.starts_with('(') => return Err(Error::UnsupportedComponent(name.into())),
            name => {
                let v = msg.field(name)?.ok_or_else(|| Error::MissingComponent(name.into()))?;
                out.push_str(&v);
            }
        }
    }
    Ok(out)
}

/// The parsed parameters of a `Signature` header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignatureParams {
    /// `keyId`.
    pub key_id: String,
    /// `algorithm`, if sent.
    pub algorithm: Option<String>,
    /// `created`, if sent.
    pub created: Option<u64>,
    /// `expires`, if sent (fractions dropped).
    pub expires: Option<u64>,
    /// `headers`, lower-cased (default: `(created)` when `created` is sent, else `date`).
    pub headers: Vec<String>,
    /// `signature`, decoded.
    pub signature: Vec<u8>,
}

/// Most parameters in one `Signature` value (six are defined); beyond, it is refused.
pub const MAX_PARAMS: usize = 16;
/// Most header names in `headers`; beyond, the signature is refused.
pub const MAX_HEADERS: usize = crate::sfv::MAX_INNER_LIST_ITEMS;

/// Parses the parameters of a `Signature` header value (or of `Authorization` after the
/// `Signature ` scheme). Linear in its input: at most [`MAX_PARAMS`] parameters and
/// [`MAX_HEADERS`] header names.
pub fn parse_params(value: &str) -> Result<SignatureParams, Error> {
    const WHAT: &str = "Signature";
    let b = value.as_bytes();
    let mut i = 0;
    let mut seen: Vec<String> = Vec::new();
    let mut out = SignatureParams::default();
    let mut key_id = None;
    let mut signature = None;
    let mut headers = None;
    loop {
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t' || b[i] == b',') {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' {
            i += 1;
        }
        if i >= b.len() {
            return Err(Error::malformed(WHAT, "parameter without a value"));
        }
        let name = value[start..i].trim().to_string();
        i += 1;
        let v: String = if b.get(i) == Some(&b'"') {
            i += 1;
            let mut s = String::new();
            loop {
                match b.get(i) {
                    None => return Err(Error::malformed(WHAT, "unterminated quoted value")),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < b.len() => {
                        s.push(b[i + 1] as char);
                        i += 2;
                    }
                    Some(&c) => {
                        s.push(c as char);
                        i += 1;
                    }
                }
            }
            s
        } else {
            let s = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            value[s..i].trim().to_string()
        };
        if seen.contains(&name) {
            return Err(Error::malformed(WHAT, format!("{name} given twice")));
        }
        if seen.len() == MAX_PARAMS {
            return Err(Error::malformed(WHAT, format!("more than {MAX_PARAMS} parameters")));
        }
        seen.push(name.clone());
        let number = |v: &str| -> Result<u64, Error> {
            let int = v.split_once('.').map_or(v, |(i, _)| i);
            int.parse::<u64>()
                .map_err(|_| Error::malformed(WHAT, format!("{name} is not a number")))
        };
        match name.as_str() {
            "keyId" => key_id = Some(v),
            "algorithm" => out.algorithm = Some(v),
            "created" => out.created = Some(number(&v)?),
            "expires" => out.expires = Some(number(&v)?),
            "headers" => {
                let names: Vec<String> = v
                    .split_ascii_whitespace()
                    .take(MAX_HEADERS + 1)
                    .map(|h| h.to_ascii_lowercase())
                    .collect();
                if names.len() > MAX_HEADERS {
                    return Err(Error::malformed(WHAT, format!("more than {MAX_HEADERS} headers")));
                }
                headers = Some(names);
            }
            "signature" => signature = Some(v),
            _ => {}
        }
    }
    out.key_id = key_id.ok_or_else(|| Error::malformed(WHAT, "no keyId"))?;
    let signature = signature.ok_or_else(|| Error::malformed(WHAT, "no signature"))?;
    out.signature = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|_| Error::malformed(WHAT, "signature is not base64"))?;
    out.headers = match headers {
        Some(h) => h,
        None if out.created.is_some() => vec!["(created)".into()],
        None => vec!["date".into()],
    };
    if out.headers.is_empty() {
        return Err(Error::malformed(WHAT, "empty headers"));
    }
    Ok(out)
}

/// The `Signature` header's parameters, else those of `Authorization: Signature ...`.
fn signature_value(msg: &Message<'_>) -> Result<String, Error> {
    if let Some(v) = msg.field("signature")? {
        return Ok(v.into_owned());
    }
    if let Some(v) = msg.field("authorization")? {
        let v = v.trim_start();
        if v.len() > 10 && v[..10].eq_ignore_ascii_case("signature ") {
            return Ok(v[10..].to_string());
        }
    }
    Err(Error::MissingSignature("Signature (or Authorization: Signature)"))
}

fn algorithms_for(name: Option<&str>, key: &Key, policy: &Policy<'_>, key_id: &str) -> Result<Vec<Algorithm>, Error> {
    let named = match name.map(|n| n.to_ascii_lowercase()) {
        None => None,
        Some(n) => match n.as_str() {
            "hs2019" => None,
            "hmac-sha256" => Some(Algorithm::HmacSha256),
            "rsa-sha256" => Some(Algorithm::RsaV15Sha256),
            "ecdsa-sha256" => Some(Algorithm::EcdsaP256Sha256),
            "ed25519" | "ed25519-sha512" => Some(Algorithm::Ed25519),
            other => Some(Algorithm::from_name(other).ok_or_else(|| Error::AlgorithmNotAllowed(other.into()))?),
        },
    };
    match named {
        Some(alg) => {
            if !policy.algorithms.contains(&alg) {
                return Err(Error::AlgorithmNotAllowed(name.unwrap_or_default().to_string()));
            }
            if !key.fits(alg) {
                return Err(Error::KeyMismatch {
                    alg: name.unwrap_or_default().to_string(),
                    key_id: key_id.to_string(),
                });
            }
            Ok(vec![alg])
        }
        None => {
            let c: Vec<Algorithm> = policy.algorithms.iter().copied().filter(|a| key.fits(*a)).collect();
            if c.is_empty() {
                return Err(Error::AlgorithmNotAllowed(format!(
                    "(none allowed for the {:?} key of keyId {key_id})",
                    key.kind()
                )));
            }
            Ok(c)
        }
    }
}

fn covers(headers: &[String], required: &str) -> bool {
    let has = |n: &str| headers.iter().any(|h| h == n);
    match required.to_ascii_lowercase().as_str() {
        "@method" | "@path" | "@query" | "@request-target" => has("(request-target)"),
        "@target-uri" => has("(request-target)") && has("host"),
        "@authority" => has("host"),
        other => has(other),
    }
}

/// Verifies the request's `Signature` (or `Authorization: Signature`) against `policy`. With a
/// `body`, a signed `digest` header is checked against it.
pub fn verify<K: KeyResolver + ?Sized>(
    msg: &Message<'_>,
    body: Option<&[u8]>,
    keys: &K,
    policy: &Policy<'_>,
    now: u64,
) -> Result<Verified, Error> {
    let params = parse_params(&signature_value(msg)?)?;
    for req in policy.required_headers {
        if !covers(&params.headers, req) {
            return Err(Error::NotCovered((*req).to_string()));
        }
    }

    // Only signed parameters count: `created` / `expires` outside the signing string could be
    // changed by anyone (to pass the age check, or to shorten the replay window).
    let signed_created = params
        .created
        .filter(|_| params.headers.iter().any(|h| h == "(created)"));
    let signed_expires = params
        .expires
        .filter(|_| params.headers.iter().any(|h| h == "(expires)"));

    // Creation time: the signed `created`, else the signed Date.
    let created = match signed_created {
        Some(c) => c,
        None => {
            if !params.headers.iter().any(|h| h == "date") {
                return Err(Error::MissingCreated);
            }
            let date = msg
                .field("date")?
                .ok_or_else(|| Error::MissingComponent("date".into()))?;
            let t = httpdate::parse_http_date(&date).map_err(|_| Error::malformed("Date", "not an HTTP date"))?;
            t.duration_since(std::time::UNIX_EPOCH)
                .map_err(|_| Error::malformed("Date", "before 1970"))?
                .as_secs()
        }
    };
    let valid_until = crate::validity(created, signed_expires, now, policy.max_age, policy.clock_skew)?;

    let key = keys
        .resolve(&params.key_id)
        .ok_or_else(|| Error::UnknownKey(params.key_id.clone()))?;
    let candidates = algorithms_for(params.algorithm.as_deref(), key, policy, &params.key_id)?;
    let signing_string = signing_string(msg, &params.headers, params.created, params.expires)?;
    let ecdsa = if params.signature.len() == 64 {
        EcdsaEncoding::Fixed
    } else {
        EcdsaEncoding::Asn1
    };
    let alg = candidates
        .into_iter()
        .find(|a| {
            key.verify_with(*a, signing_string.as_bytes(), &params.signature, ecdsa)
                .is_ok()
        })
        .ok_or(Error::BadSignature)?;

    let mut digest_checked = false;
    if let Some(body) = body
        && params.headers.iter().any(|h| h == "digest")
    {
        let v = msg
            .field("digest")?
            .ok_or_else(|| Error::MissingComponent("digest".into()))?;
        digest::verify_digest_header(&v, body)?;
        digest_checked = true;
    }

    Ok(Verified {
        replay_key: crate::replay_key(&params.key_id, signing_string.as_bytes()),
        key_id: params.key_id,
        alg,
        created,
        expires: signed_expires,
        headers: params.headers,
        signature: params.signature,
        valid_until,
        digest_checked,
    })
}
