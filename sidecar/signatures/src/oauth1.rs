//! OAuth 1.0a request signatures (RFC 5849 section 3): the protocol parameters read from the
//! `Authorization: OAuth` header, a form body or the query (section 3.5), the signature base
//! string built exactly as section 3.4.1 says (percent encoding of section 3.6, every
//! parameter kept, duplicates included, sorted by name then value), and the four signature
//! methods: `HMAC-SHA1`, `HMAC-SHA256`, `RSA-SHA1` and `PLAINTEXT`.
//!
//! Pure: the timestamp window and the nonce (section 3.3) are the caller's, with its clock and
//! replay cache ([`Signed::replay_key`]). Errors name the parameter, never a secret.
//!
//! ```
//! use portcullis_signatures::oauth1::{self, Request, SignatureMethod, Credentials};
//!
//! # fn main() -> Result<(), portcullis_signatures::Error> {
//! let secrets = Credentials { consumer_secret: "kd94hf93k423kf44", token_secret: "pfkkdhi9sl3r4s00", rsa: None };
//! let mut req = Request { method: "GET", scheme: "http", authority: "photos.example.net",
//!     path: "/photos", query: Some("file=vacation.jpg&size=original"), authorization: None, form: None };
//! let header = oauth1::authorization_header(&req, "dpf43f3p2l4k3l03", Some("nnch734d00sl2jdk"),
//!     SignatureMethod::HmacSha1, 1191242096, "kllo9940pd9333jh", &secrets)?;
//! req.authorization = Some(&header);
//! let signed = oauth1::parse(&req)?;
//! oauth1::verify(&req, &signed, &secrets, false)?;
//! assert_eq!(signed.consumer_key, "dpf43f3p2l4k3l03");
//! # Ok(())
//! # }
//! ```

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use subtle::ConstantTimeEq;

use crate::{Error, Key};

/// Most parameters read from one request (query, form body and header together).
pub const MAX_PARAMS: usize = 256;

/// The signature methods of RFC 5849 section 3.4, and `HMAC-SHA256` (as oauthlib and most
/// providers offer it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureMethod {
    HmacSha1,
    HmacSha256,
    RsaSha1,
    /// The secrets themselves: only over TLS.
    Plaintext,
}

impl SignatureMethod {
    /// Every method.
    pub const ALL: [SignatureMethod; 4] = [
        SignatureMethod::HmacSha1,
        SignatureMethod::HmacSha256,
        SignatureMethod::RsaSha1,
        SignatureMethod::Plaintext,
    ];

    /// The `oauth_signature_method` value.
    pub fn name(self) -> &'static str {
        match self {
            SignatureMethod::HmacSha1 => "HMAC-SHA1",
            SignatureMethod::HmacSha256 => "HMAC-SHA256",
            SignatureMethod::RsaSha1 => "RSA-SHA1",
            SignatureMethod::Plaintext => "PLAINTEXT",
        }
    }

    /// Parses an `oauth_signature_method` value (exact, as the RFC spells it).
    pub fn from_name(name: &str) -> Option<SignatureMethod> {
        SignatureMethod::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// The request as it arrived: what the base string is built from.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The method as sent (upper-cased in the base string).
    pub method: &'a str,
    /// `http` or `https`: how the client reached the server it signed for.
    pub scheme: &'a str,
    /// The authority as sent (`host` or `host:port`).
    pub authority: &'a str,
    /// The path as sent, percent-encoded as on the request line.
    pub path: &'a str,
    /// The query as sent, without `?`.
    pub query: Option<&'a str>,
    /// The `Authorization` header's value, if any.
    pub authorization: Option<&'a str>,
    /// The body, only when it is single-part `application/x-www-form-urlencoded`
    /// (section 3.4.1.3.1).
    pub form: Option<&'a [u8]>,
}

/// The secrets a signature is checked with (or made with).
#[derive(Clone, Copy)]
pub struct Credentials<'a> {
    /// The client (consumer) secret: the HMAC key's first half, PLAINTEXT's first half.
    pub consumer_secret: &'a str,
    /// The token secret; empty when the request carries no token (two-legged).
    pub token_secret: &'a str,
    /// The client's RSA key for `RSA-SHA1` (verifying only).
    pub rsa: Option<&'a Key>,
}

impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

/// A request's OAuth protocol parameters and every other parameter it carries.
#[derive(Debug, Clone)]
pub struct Signed {
    pub consumer_key: String,
    /// `oauth_token`, absent for two-legged requests.
    pub token: Option<String>,
    pub method: SignatureMethod,
    /// `oauth_timestamp`, Unix seconds (section 3.3).
    pub timestamp: u64,
    pub nonce: String,
    /// `oauth_signature`, decoded (base64 text for the HMAC and RSA methods).
    signature: String,
    /// Every parameter but `oauth_signature` and the header's `realm`, decoded, in the order
    /// read: what section 3.4.1.3 normalises.
    params: Vec<(String, String)>,
}

impl Signed {
    /// Every parameter but `oauth_signature` and `realm`, decoded, in the order read: what
    /// [`base_string`] normalises.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    /// What a replay cache remembers for this request (section 3.3: the nonce is unique per
    /// timestamp and client credentials, and token when there is one).
    pub fn replay_key(&self) -> String {
        let mut key = String::with_capacity(64);
        for part in [
            self.consumer_key.as_str(),
            self.token.as_deref().unwrap_or(""),
            &self.nonce,
        ] {
            key.push_str(&encode(part));
            key.push('&');
        }
        let _ = write!(key, "{}", self.timestamp);
        key
    }
}

/// Reads the protocol parameters (section 3.5: the `Authorization` header, the form body,
/// the query) and every request parameter. Each `oauth_*` parameter may appear once in the
/// whole request; `oauth_version`, when present, must be `1.0`.
pub fn parse(req: &Request<'_>) -> Result<Signed, Error> {
    let mut params = Vec::new();
    if let Some(query) = req.query {
        form_pairs(query.as_bytes(), "query", &mut params)?;
    }
    if let Some(form) = req.form {
        form_pairs(form, "form body", &mut params)?;
    }
    if let Some(header) = req.authorization.and_then(oauth_header) {
        header_pairs(header, &mut params)?;
    }
    let one = |name: &str| -> Result<Option<String>, Error> {
        let mut found = params.iter().filter(|(n, _)| n == name);
        let value = found.next().map(|(_, v)| v.clone());
        if found.next().is_some() {
            return Err(Error::malformed(
                "oauth parameters",
                format!("{name} appears more than once"),
            ));
        }
        Ok(value)
    };
    let required = |value: Option<String>, name: &'static str| {
        value.ok_or_else(|| Error::malformed("oauth parameters", format!("{name} is missing")))
    };
    let consumer_key = required(one("oauth_consumer_key")?, "oauth_consumer_key")?;
    let token = one("oauth_token")?;
    let method_name = required(one("oauth_signature_method")?, "oauth_signature_method")?;
    let method = SignatureMethod::from_name(&method_name).ok_or(Error::AlgorithmNotAllowed(method_name))?;
    let signature = required(one("oauth_signature")?, "oauth_signature")?;
    let (timestamp, nonce) = match method {
        // PLAINTEXT may leave both out (section 3.4.4); the caller's policy decides.
        SignatureMethod::Plaintext => (
            one("oauth_timestamp")?
                .map(|t| timestamp_of(&t))
                .transpose()?
                .unwrap_or(0),
            one("oauth_nonce")?.unwrap_or_default(),
        ),
        _ => (
            timestamp_of(&required(one("oauth_timestamp")?, "oauth_timestamp")?)?,
            required(one("oauth_nonce")?, "oauth_nonce")?,
        ),
    };
    if let Some(version) = one("oauth_version")?
        && version != "1.0"
    {
        return Err(Error::malformed("oauth_version", "must be 1.0"));
    }
    for name in ["oauth_callback", "oauth_verifier", "oauth_body_hash"] {
        one(name)?;
    }
    params.retain(|(n, _)| n != "oauth_signature");
    Ok(Signed {
        consumer_key,
        token,
        method,
        timestamp,
        nonce,
        signature,
        params,
    })
}

fn timestamp_of(text: &str) -> Result<u64, Error> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 12 {
        return Err(Error::malformed("oauth_timestamp", "not a positive integer"));
    }
    text.parse()
        .map_err(|_| Error::malformed("oauth_timestamp", "not a positive integer"))
}

/// Checks the signature of `signed` (read from `req` by [`parse`]) with `secrets`.
/// `PLAINTEXT` is refused unless `over_tls` (section 3.4.4). Tags and PLAINTEXT secrets are
/// compared in constant time.
pub fn verify(req: &Request<'_>, signed: &Signed, secrets: &Credentials<'_>, over_tls: bool) -> Result<(), Error> {
    match signed.method {
        SignatureMethod::Plaintext => {
            if !over_tls {
                return Err(Error::AlgorithmNotAllowed("PLAINTEXT without TLS".into()));
            }
            let expected = hmac_key(secrets);
            if bool::from(expected.as_bytes().ct_eq(signed.signature.as_bytes())) {
                Ok(())
            } else {
                Err(Error::BadSignature)
            }
        }
        SignatureMethod::HmacSha1 | SignatureMethod::HmacSha256 => {
            let tag = STANDARD
                .decode(signed.signature.as_bytes())
                .map_err(|_| Error::malformed("oauth_signature", "not base64"))?;
            let key = ring::hmac::Key::new(hmac_algorithm(signed.method), hmac_key(secrets).as_bytes());
            ring::hmac::verify(&key, base_string(req, &signed.params).as_bytes(), &tag).map_err(|_| Error::BadSignature)
        }
        SignatureMethod::RsaSha1 => {
            let signature = STANDARD
                .decode(signed.signature.as_bytes())
                .map_err(|_| Error::malformed("oauth_signature", "not base64"))?;
            let key = secrets.rsa.ok_or(Error::InvalidKey("no RSA key for RSA-SHA1"))?;
            key.rsa_sha1_verify(base_string(req, &signed.params).as_bytes(), &signature)
        }
    }
}

/// The signature of `req` with the protocol parameters `protocol` (every `oauth_*` but the
/// signature), as the client computes it.
fn signature(
    req: &Request<'_>,
    protocol: &[(String, String)],
    method: SignatureMethod,
    secrets: &Credentials<'_>,
) -> Result<String, Error> {
    let mut params = Vec::new();
    if let Some(query) = req.query {
        form_pairs(query.as_bytes(), "query", &mut params)?;
    }
    if let Some(form) = req.form {
        form_pairs(form, "form body", &mut params)?;
    }
    params.extend(protocol.iter().cloned());
    Ok(match method {
        SignatureMethod::Plaintext => hmac_key(secrets),
        SignatureMethod::HmacSha1 | SignatureMethod::HmacSha256 => {
            let key = ring::hmac::Key::new(hmac_algorithm(method), hmac_key(secrets).as_bytes());
            STANDARD.encode(ring::hmac::sign(&key, base_string(req, &params).as_bytes()))
        }
        // ring verifies SHA-1 signatures (legacy use) but does not make them.
        SignatureMethod::RsaSha1 => return Err(Error::AlgorithmNotAllowed("RSA-SHA1 for signing".into())),
    })
}

/// An `Authorization: OAuth ...` value signing `req` (the client's side: tests, and calls the
/// sidecar makes toward OAuth 1.0a origins). Every method but `RSA-SHA1`, which is only
/// verified.
pub fn authorization_header(
    req: &Request<'_>,
    consumer_key: &str,
    token: Option<&str>,
    method: SignatureMethod,
    timestamp: u64,
    nonce: &str,
    secrets: &Credentials<'_>,
) -> Result<String, Error> {
    let mut protocol: Vec<(String, String)> = vec![
        ("oauth_consumer_key".into(), consumer_key.into()),
        ("oauth_signature_method".into(), method.name().into()),
        ("oauth_timestamp".into(), timestamp.to_string()),
        ("oauth_nonce".into(), nonce.into()),
        ("oauth_version".into(), "1.0".into()),
    ];
    if let Some(token) = token {
        protocol.push(("oauth_token".into(), token.into()));
    }
    let signature = signature(req, &protocol, method, secrets)?;
    protocol.push(("oauth_signature".into(), signature));
    let mut header = String::from("OAuth ");
    for (i, (name, value)) in protocol.iter().enumerate() {
        if i > 0 {
            header.push_str(", ");
        }
        let _ = write!(header, "{}=\"{}\"", encode(name), encode(value));
    }
    Ok(header)
}

/// Section 3.4.2: `encode(client secret) & encode(token secret)`.
fn hmac_key(secrets: &Credentials<'_>) -> String {
    format!("{}&{}", encode(secrets.consumer_secret), encode(secrets.token_secret))
}

fn hmac_algorithm(method: SignatureMethod) -> ring::hmac::Algorithm {
    match method {
        SignatureMethod::HmacSha256 => ring::hmac::HMAC_SHA256,
        _ => ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
    }
}

/// Section 3.4.1: `METHOD&encode(base string URI)&encode(normalized parameters)`.
pub fn base_string(req: &Request<'_>, params: &[(String, String)]) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(&req.method.to_ascii_uppercase());
    out.push('&');
    out.push_str(&encode(&base_uri(req)));
    out.push('&');
    out.push_str(&encode(&normalized(params)));
    out
}

/// Section 3.4.1.2: scheme and host in lower case, the port only when it is not the
/// scheme's default, the path as sent (`/` when empty), no query, no fragment.
fn base_uri(req: &Request<'_>) -> String {
    let scheme = req.scheme.to_ascii_lowercase();
    let authority = req.authority.to_ascii_lowercase();
    let (host, port) = match authority.rsplit_once(':') {
        // An IPv6 literal's last colon is inside its brackets.
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (authority.as_str(), None),
    };
    let default = match scheme.as_str() {
        "http" => "80",
        "https" => "443",
        _ => "",
    };
    let mut uri = format!("{scheme}://{host}");
    if let Some(port) = port.filter(|p| *p != default && !p.is_empty()) {
        uri.push(':');
        uri.push_str(port);
    }
    uri.push_str(if req.path.is_empty() { "/" } else { req.path });
    uri
}

/// Section 3.4.1.3.2: every name and value encoded, sorted by name then value (byte order),
/// `name=value` joined by `&`.
fn normalized(params: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> = params.iter().map(|(n, v)| (encode(n), encode(v))).collect();
    encoded.sort();
    let mut out = String::with_capacity(encoded.iter().map(|(n, v)| n.len() + v.len() + 2).sum());
    for (i, (name, value)) in encoded.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// Section 3.6: every byte but the unreserved `ALPHA / DIGIT / - . _ ~` as `%XX` (upper-case
/// hex) of its UTF-8 encoding.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The parameters of an `OAuth` authorization header, or `None` for another scheme.
fn oauth_header(value: &str) -> Option<&str> {
    let value = value.trim_start();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    scheme.eq_ignore_ascii_case("OAuth").then_some(rest)
}

/// Section 3.5.1: `name="value"` pairs separated by commas, values percent-encoded; `realm`
/// is left out of the signature.
fn header_pairs(text: &str, out: &mut Vec<(String, String)>) -> Result<(), Error> {
    for item in text.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (name, value) = item
            .split_once('=')
            .ok_or_else(|| Error::malformed("Authorization", "a parameter without a value"))?;
        let value = value
            .trim()
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or_else(|| Error::malformed("Authorization", "a value that is not a quoted string"))?;
        let name = decode(name.trim().as_bytes(), false, "Authorization")?;
        if name == "realm" {
            continue;
        }
        push(out, name, decode(value.as_bytes(), false, "Authorization")?)?;
    }
    Ok(())
}

/// `application/x-www-form-urlencoded` pairs (a query or a form body): `+` is a space.
fn form_pairs(text: &[u8], what: &'static str, out: &mut Vec<(String, String)>) -> Result<(), Error> {
    for item in text.split(|b| *b == b'&').filter(|i| !i.is_empty()) {
        let (name, value) = match item.iter().position(|b| *b == b'=') {
            Some(at) => (&item[..at], &item[at + 1..]),
            None => (item, &b""[..]),
        };
        push(out, decode(name, true, what)?, decode(value, true, what)?)?;
    }
    Ok(())
}

fn push(out: &mut Vec<(String, String)>, name: String, value: String) -> Result<(), Error> {
    if out.len() >= MAX_PARAMS {
        return Err(Error::malformed(
            "oauth parameters",
            format!("more than {MAX_PARAMS} parameters"),
        ));
    }
    out.push((name, value));
    Ok(())
}

/// Percent-decodes `text` (and `+` as a space when `plus`); the result must be UTF-8.
fn decode(text: &[u8], plus: bool, what: &'static str) -> Result<String, Error> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'%' => {
                let hex = text
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| Error::malformed(what, "a bad percent escape"))?;
                out.push(hex);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| Error::malformed(what, "not UTF-8 once decoded"))
}
