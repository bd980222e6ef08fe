//! The inbound credentials a route's profiles consume: the `Authorization` of Basic, OAuth2
//! and draft-cavage signatures, an API key's header and query parameters (key and
//! signature), an HTTP message signature's `Signature` and `Signature-Input`, OAuth 1.0a's
//! `Authorization` and protocol query parameters. They were
//! meant for the sidecar, so they are removed before a call leaves for a third-party origin
//! (gateway mode), unless the route passes them on (`backend.origin.passCredentials`).
//! Those of every profile of the route go, not only the admitting one's: a wrong password
//! tried on one profile before another admitted the call is no business of the origin's.

use http::header::AUTHORIZATION;
use http::request::Parts;
use http::{HeaderName, Uri};
use portcullis_config::{Loaded, ProfileAuth, Route};

use super::credentials::without_query_params;

const SIGNATURE: HeaderName = HeaderName::from_static("signature");
const SIGNATURE_INPUT: HeaderName = HeaderName::from_static("signature-input");
/// The OAuth 1.0a protocol parameters a query may carry (RFC 5849 section 3.5.3).
const OAUTH1_PARAMS: [&str; 8] = [
    "oauth_consumer_key",
    "oauth_token",
    "oauth_signature_method",
    "oauth_signature",
    "oauth_timestamp",
    "oauth_nonce",
    "oauth_version",
    "oauth_verifier",
];

/// What one route's profiles read from a request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Consumed {
    headers: Vec<HeaderName>,
    query: Vec<String>,
}

impl Consumed {
    /// The credentials `route`'s profiles consume (none for Anonymous and ClientCertificate).
    pub fn of(loaded: &Loaded, route: &Route) -> Self {
        let mut out = Self::default();
        let profiles = route
            .profiles
            .iter()
            .filter_map(|name| loaded.config.profiles.iter().find(|p| p.name == *name));
        for profile in profiles {
            match &profile.auth {
                ProfileAuth::Anonymous | ProfileAuth::ClientCertificate { .. } => {}
                ProfileAuth::Basic | ProfileAuth::OAuth2 { .. } => out.header(AUTHORIZATION),
                ProfileAuth::ApiKey {
                    key_param,
                    key_header,
                    signature,
                } => {
                    out.param(key_param);
                    if let Some(h) = key_header
                        .as_deref()
                        .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                    {
                        out.header(h);
                    }
                    if let Some(sig) = signature {
                        out.param(&sig.param);
                    }
                }
                ProfileAuth::HttpSignature { .. } => {
                    out.header(AUTHORIZATION);
                    out.header(SIGNATURE);
                    out.header(SIGNATURE_INPUT);
                }
                // A form body's protocol parameters stay (the body is passed as sent).
                ProfileAuth::OAuth1 { .. } => {
                    out.header(AUTHORIZATION);
                    for name in OAUTH1_PARAMS {
                        out.param(name);
                    }
                }
            }
        }
        out
    }

    fn header(&mut self, name: HeaderName) {
        if !self.headers.contains(&name) {
            self.headers.push(name);
        }
    }

    fn param(&mut self, name: &str) {
        if !self.query.iter().any(|q| q == name) {
            self.query.push(name.to_owned());
        }
    }

    /// Whether nothing is consumed.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.query.is_empty()
    }

    /// Removes the consumed headers and query parameters from a request about to leave.
    pub fn strip(&self, parts: &mut Parts) -> Result<(), http::Error> {
        for name in &self.headers {
            parts.headers.remove(name);
        }
        if !self.query.is_empty() && parts.uri.query().is_some() {
            let names: Vec<&str> = self.query.iter().map(String::as_str).collect();
            let uri: Uri = without_query_params(&parts.uri, &names)?;
            parts.uri = uri;
        }
        Ok(())
    }
}
