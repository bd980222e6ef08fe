//! Authentication schemes: each checks the credentials a request carries against one
//! profile and names the caller, or says why not. Secrets are compared in constant time and
//! never appear in a [`Rejection`].

use std::borrow::Cow;
use std::collections::HashMap;

use base64::Engine as _;
use http::HeaderMap;
use http::header::AUTHORIZATION;
use portcullis_config::{ApiKeySignature, ProfileSecrets, Sensitive, SignatureHash};
use portcullis_signatures::{MasheryHash, mashery_verify};
use subtle::ConstantTimeEq;

use crate::query::{query_param, repeated};

/// Why a profile did not authenticate a request (for the audit log; never a secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The request carries no credentials of this kind.
    Missing(&'static str),
    /// The credentials are wrong.
    Wrong(&'static str),
}

impl Rejection {
    /// The reason, for the audit log.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing(r) | Self::Wrong(r) => r,
        }
    }
}

/// What a request brings besides its headers: the verified client certificate, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The subject, as an RFC 4514 string (`CN=app,O=Example`).
    pub subject: String,
    /// DNS, URI and e-mail subject alternative names.
    pub sans: Vec<String>,
    /// Names of the profiles whose CA verified the certificate chain.
    pub verified_for: Vec<String>,
}

/// HTTP Basic with one username and password.
#[derive(Debug)]
pub struct Basic {
    username: Box<str>,
    /// `username:password`.
    pair: Box<[u8]>,
    /// base64(`username:password`), what well-behaved clients send.
    token: Box<[u8]>,
}

impl Basic {
    /// The credential of `username` / `password`.
    pub fn new(username: &str, password: &str) -> Self {
        let pair = format!("{username}:{password}").into_bytes();
        let token = base64::engine::general_purpose::STANDARD.encode(&pair).into_bytes();
        Self {
            username: username.into(),
            pair: pair.into(),
            token: token.into(),
        }
    }

    /// The username if `headers` carry exactly this credential.
    pub fn check(&self, headers: &HeaderMap) -> Result<&str, Rejection> {
        let token = basic_token(headers).ok_or(Rejection::Missing("no Basic credentials"))?;
        // The common case compares the encoded form and allocates nothing.
        if bool::from(token.ct_eq(&self.token)) {
            return Ok(&self.username);
        }
        // Another encoding of the same pair (no padding, say) still counts.
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(token))
            .map_err(|_| Rejection::Wrong("malformed Basic credentials"))?;
        if bool::from(decoded.ct_eq(&self.pair)) {
            Ok(&self.username)
        } else {
            Err(Rejection::Wrong("wrong username or password"))
        }
    }
}

/// The username an `Authorization: Basic` header claims, right or wrong (for the throttle of
/// failed authentications; never compared with anything).
pub fn claimed_basic_user(headers: &HeaderMap) -> Option<String> {
    let token = basic_token(headers)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(token))
        .ok()?;
    let user = decoded.split(|b| *b == b':').next()?;
    Some(String::from_utf8_lossy(user).into_owned())
}

/// The token of an `Authorization: Basic <token>` header.
fn basic_token(headers: &HeaderMap) -> Option<&[u8]> {
    headers.get_all(AUTHORIZATION).iter().find_map(|v| {
        let v = v.as_bytes();
        let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ')?);
        scheme.eq_ignore_ascii_case(b"basic").then(|| rest.trim_ascii())
    })
}

/// The client id and secret of an `Authorization: Basic` header as OAuth 2.0 clients send
/// them (RFC 6749 section 2.3.1: each form-urlencoded, then joined by `:`). `Some(Err)`:
/// a Basic header that cannot be read.
pub(crate) fn basic_pair(headers: &HeaderMap) -> Option<Result<(String, String), ()>> {
    let token = basic_token(headers)?;
    let pair = base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()
        .and_then(|d| String::from_utf8(d).ok());
    Some(pair.ok_or(()).and_then(|pair| {
        let (id, secret) = pair.split_once(':').ok_or(())?;
        let decode = |s: &str| crate::query::query_param(&format!("v={s}"), "v").map(|v| v.into_owned());
        Ok((decode(id).ok_or(())?, decode(secret).ok_or(())?))
    }))
}

/// Mashery-style API keys: the key alone, or with `hex(HASH(key + secret + unixSeconds))`.
#[derive(Debug)]
pub struct ApiKey {
    key_param: Box<str>,
    key_header: Option<http::HeaderName>,
    signature: Option<SignatureCheck>,
    hash: MasheryHash,
    /// API key to its shared secret.
    keys: HashMap<Box<str>, Sensitive>,
}

#[derive(Debug)]
struct SignatureCheck {
    param: Box<str>,
    skew: u64,
}

/// Why an ApiKey profile cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("keyHeader {0:?} is not a valid header name")]
pub struct BadHeaderName(pub String);

/// The secret an unknown API key's signature is checked against, to spend the same time as
/// for a known key (it never verifies: the key is refused whatever the outcome).
const UNKNOWN_KEY_SECRET: &str = "portcullis: no such key, same work";

impl ApiKey {
    /// The scheme for keys from `secrets`.
    pub fn new(
        key_param: &str,
        key_header: Option<&str>,
        signature: Option<&ApiKeySignature>,
        secrets: &ProfileSecrets,
    ) -> Result<Self, BadHeaderName> {
        let key_header = key_header
            .map(|h| http::HeaderName::try_from(h).map_err(|_| BadHeaderName(h.to_owned())))
            .transpose()?;
        let hash = match signature.map_or(SignatureHash::MD5, |s| s.algorithm) {
            SignatureHash::MD5 => MasheryHash::Md5,
            SignatureHash::SHA256 => MasheryHash::Sha256,
        };
        let keys = secrets
            .api_keys
            .iter()
            .map(|(key, secret)| (key.as_str().into(), secret.clone()))
            .collect();
        Ok(Self {
            key_param: key_param.into(),
            key_header,
            signature: signature.map(|s| SignatureCheck {
                param: s.param.as_str().into(),
                skew: u64::from(s.clock_skew_seconds),
            }),
            hash,
            keys,
        })
    }

    /// The query parameter that carries the key.
    pub fn key_param(&self) -> &str {
        &self.key_param
    }

    /// The API key, if the request carries a known one (and its valid signature).
    pub fn check<'e>(&'e self, query: Option<&str>, headers: &HeaderMap, now_secs: u64) -> Result<&'e str, Rejection> {
        // One key per request: with two, the sidecar would count one consumer and the app
        // might read the other.
        let in_query = query.and_then(|q| query_param(q, &self.key_param));
        let in_headers = self
            .key_header
            .as_ref()
            .map_or(0, |h| headers.get_all(h).iter().count());
        if query.is_some_and(|q| repeated(q, &self.key_param)) || in_headers + usize::from(in_query.is_some()) > 1 {
            return Err(Rejection::Wrong("more than one API key"));
        }
        let presented: Cow<'_, str> = match in_query {
            Some(k) => k,
            None => self
                .key_header
                .as_ref()
                .and_then(|h| headers.get(h))
                .and_then(|v| v.to_str().ok())
                .map(Cow::Borrowed)
                .ok_or(Rejection::Missing("no API key"))?,
        };
        let Some((key, secret)) = self.keys.get_key_value(presented.as_ref()) else {
            // Spend the time a known key costs, so that response times do not tell which keys
            // exist (checking a signature tries every second of the clock-skew window).
            if let Some(sig) = &self.signature
                && let Some(given) = query.and_then(|q| query_param(q, &sig.param))
            {
                let _ = mashery_verify(self.hash, &presented, UNKNOWN_KEY_SECRET, &given, now_secs, sig.skew);
            }
            return Err(Rejection::Wrong("unknown API key"));
        };
        if let Some(sig) = &self.signature {
            let given = query
                .and_then(|q| query_param(q, &sig.param))
                .ok_or(Rejection::Missing("no API key signature"))?;
            if mashery_verify(self.hash, key, secret.expose(), &given, now_secs, sig.skew).is_none() {
                return Err(Rejection::Wrong(
                    "API key signature invalid or outside the clock-skew window",
                ));
            }
        }
        Ok(key)
    }
}

/// A client certificate verified by the TLS layer against the profile's CA, and optionally
/// restricted to some subjects or SANs.
#[derive(Debug)]
pub struct ClientCertificate {
    allowed: Vec<String>,
}

impl ClientCertificate {
    /// The scheme admitting certificates that match one of `allowed` (any when empty).
    pub fn new(allowed: &[String]) -> Self {
        Self {
            allowed: allowed.to_vec(),
        }
    }

    /// The certificate subject if `cert` was verified for `profile` and is allowed.
    pub fn check<'r>(&self, profile: &str, cert: Option<&'r PeerCertificate>) -> Result<&'r str, Rejection> {
        let cert = cert.ok_or(Rejection::Missing("no client certificate"))?;
        if !cert.verified_for.iter().any(|p| p == profile) {
            return Err(Rejection::Wrong("client certificate not issued by the profile's CA"));
        }
        let allowed = self.allowed.is_empty()
            || self
                .allowed
                .iter()
                .any(|a| *a == cert.subject || cert.sans.iter().any(|s| s == a));
        if allowed {
            Ok(&cert.subject)
        } else {
            Err(Rejection::Wrong("client certificate subject not allowed"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "2fvmer3qbk7f3jnqneg58bu2";

    fn mashery(alg: SignatureHash, key: &str, secret: &str, ts: u64) -> String {
        let hash = match alg {
            SignatureHash::MD5 => MasheryHash::Md5,
            SignatureHash::SHA256 => MasheryHash::Sha256,
        };
        portcullis_signatures::mashery_sig(hash, key, secret, ts)
    }
    const SECRET: &str = "qvxkmw57pec7";

    #[test]
    fn seed_003_test_vector() {
        assert_eq!(
            mashery(SignatureHash::MD5, KEY, SECRET, 1_200_603_038),
            "65a08176826fa4621116997e1dd775fa"
        );
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::try_from(*k).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn basic_right_wrong_missing_and_unpadded() {
        let b = Basic::new("alice", "wonderland");
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let ok = headers(&[("authorization", &format!("Basic {}", enc("alice:wonderland")))]);
        assert_eq!(b.check(&ok), Ok("alice"));
        let lower = headers(&[("authorization", &format!("basic  {}", enc("alice:wonderland")))]);
        assert_eq!(b.check(&lower), Ok("alice"));
        let nopad = base64::engine::general_purpose::STANDARD_NO_PAD.encode("alice:wonderland!");
        let b2 = Basic::new("alice", "wonderland!");
        assert_eq!(
            b2.check(&headers(&[("authorization", &format!("Basic {nopad}"))])),
            Ok("alice")
        );
        let wrong = headers(&[("authorization", &format!("Basic {}", enc("alice:nope")))]);
        assert!(matches!(b.check(&wrong), Err(Rejection::Wrong(_))));
        assert!(matches!(b.check(&headers(&[])), Err(Rejection::Missing(_))));
        let bearer = headers(&[("authorization", "Bearer abc")]);
        assert!(matches!(b.check(&bearer), Err(Rejection::Missing(_))));
        let garbage = headers(&[("authorization", "Basic !!!")]);
        assert!(matches!(b.check(&garbage), Err(Rejection::Wrong(_))));
    }

    fn keys(algorithm: Option<SignatureHash>) -> ApiKey {
        let mut secrets = ProfileSecrets::default();
        secrets.api_keys.insert(KEY.into(), Sensitive::new(SECRET));
        let sig = algorithm.map(|algorithm| ApiKeySignature {
            param: "sig".into(),
            algorithm,
            clock_skew_seconds: 300,
        });
        ApiKey::new("apikey", Some("X-Api-Key"), sig.as_ref(), &secrets).unwrap()
    }

    #[test]
    fn api_key_alone_from_query_or_header() {
        let k = keys(None);
        let none = HeaderMap::new();
        assert_eq!(k.check(Some(&format!("a=1&apikey={KEY}")), &none, 0), Ok(KEY));
        assert_eq!(k.check(None, &headers(&[("x-api-key", KEY)]), 0), Ok(KEY));
        assert_eq!(
            k.check(Some("apikey=nope"), &none, 0),
            Err(Rejection::Wrong("unknown API key"))
        );
        assert_eq!(
            k.check(Some("xapikey=1"), &none, 0),
            Err(Rejection::Missing("no API key"))
        );
    }

    #[test]
    fn signature_anywhere_in_the_skew_window() {
        for alg in [SignatureHash::MD5, SignatureHash::SHA256] {
            let k = keys(Some(alg));
            let now = 1_200_603_038;
            let none = HeaderMap::new();
            for ts in [now, now - 300, now + 300, now - 1, now + 17] {
                let sig = mashery(alg, KEY, SECRET, ts);
                let q = format!("apikey={KEY}&sig={sig}");
                assert_eq!(k.check(Some(&q), &none, now), Ok(KEY), "{alg:?} ts {ts}");
                let upper = format!("apikey={KEY}&sig={}", sig.to_uppercase());
                assert_eq!(k.check(Some(&upper), &none, now), Ok(KEY), "hex is case-insensitive");
            }
            for ts in [now - 301, now + 301] {
                let sig = mashery(alg, KEY, SECRET, ts);
                let q = format!("apikey={KEY}&sig={sig}");
                assert!(
                    matches!(k.check(Some(&q), &none, now), Err(Rejection::Wrong(_))),
                    "{ts}"
                );
            }
            let q = format!("apikey={KEY}");
            assert!(matches!(k.check(Some(&q), &none, now), Err(Rejection::Missing(_))));
            let q = format!("apikey={KEY}&sig=zz");
            assert!(matches!(k.check(Some(&q), &none, now), Err(Rejection::Wrong(_))));
        }
    }

    #[test]
    fn the_seed_signature_is_refused_today() {
        let k = keys(Some(SignatureHash::MD5));
        let q = format!("apikey={KEY}&sig=65a08176826fa4621116997e1dd775fa");
        assert!(k.check(Some(&q), &HeaderMap::new(), 1_200_603_038).is_ok());
        assert!(k.check(Some(&q), &HeaderMap::new(), 1_764_000_000).is_err());
    }

    #[test]
    fn client_certificates() {
        let cert = PeerCertificate {
            subject: "CN=billing,O=Example".into(),
            sans: vec!["billing.example.com".into()],
            verified_for: vec!["partners".into()],
        };
        let any = ClientCertificate::new(&[]);
        assert_eq!(any.check("partners", Some(&cert)), Ok("CN=billing,O=Example"));
        assert!(matches!(any.check("others", Some(&cert)), Err(Rejection::Wrong(_))));
        assert!(matches!(any.check("partners", None), Err(Rejection::Missing(_))));
        let by_san = ClientCertificate::new(&["billing.example.com".into()]);
        assert!(by_san.check("partners", Some(&cert)).is_ok());
        let other = ClientCertificate::new(&["CN=payroll,O=Example".into()]);
        assert!(matches!(other.check("partners", Some(&cert)), Err(Rejection::Wrong(_))));
    }
}
