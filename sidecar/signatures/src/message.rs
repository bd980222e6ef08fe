//! The request as the signature code sees it: no body (bodies go in as `&[u8]` where a
//! digest is checked or made).

use std::borrow::Cow;

use http::HeaderMap;

use crate::Error;

/// A request to sign or verify.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The method as sent (`POST`).
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// `host[:port]` of the target (the Host header or the h2 `:authority`).
    pub authority: &'a str,
    /// The path, `/` when empty, still percent-encoded.
    pub path: &'a str,
    /// The query without its `?`, or `None` when the target has no `?`.
    pub query: Option<&'a str>,
    /// The header fields.
    pub headers: &'a HeaderMap,
}

impl<'a> Message<'a> {
    /// The view of an `http::Request` (its body is ignored): the authority from the URI, else
    /// the Host header.
    pub fn from_request<B>(req: &'a http::Request<B>, scheme: &'a str) -> Message<'a> {
        Message::from_parts(req.method(), req.uri(), req.headers(), scheme)
    }

    /// The same from a request's method, URI and headers.
    pub fn from_parts(
        method: &'a http::Method,
        uri: &'a http::Uri,
        headers: &'a HeaderMap,
        scheme: &'a str,
    ) -> Message<'a> {
        let authority = uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| headers.get(http::header::HOST).and_then(|h| h.to_str().ok()))
            .unwrap_or("");
        Message {
            method: method.as_str(),
            scheme: uri.scheme_str().unwrap_or(scheme),
            authority,
            path: uri.path(),
            query: uri.query(),
            headers,
        }
    }

    /// The path, `/` when empty.
    pub fn path_or_root(&self) -> &'a str {
        if self.path.is_empty() { "/" } else { self.path }
    }

    /// The authority lower-cased, without the scheme's default port.
    pub fn normalized_authority(&self) -> String {
        let mut a = self.authority.trim().to_ascii_lowercase();
        let default = match self.scheme.to_ascii_lowercase().as_str() {
            "https" => Some(":443"),
            "http" => Some(":80"),
            _ => None,
        };
        if let Some(port) = default
            && a.ends_with(port)
        {
            a.truncate(a.len() - port.len());
        }
        a
    }

    /// `path[?query]`, the origin-form request target.
    pub fn request_target(&self) -> String {
        match self.query {
            Some(q) => format!("{}?{}", self.path_or_root(), q),
            None => self.path_or_root().to_string(),
        }
    }

    /// `scheme://authority/path[?query]`.
    pub fn target_uri(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme.to_ascii_lowercase(),
            self.normalized_authority(),
            self.request_target()
        )
    }

    /// The field's value: every line's value trimmed, joined with `, `; `None` when absent.
    /// `host` falls back to the authority (HTTP/2 has no Host header).
    pub fn field(&self, name: &str) -> Result<Option<Cow<'a, str>>, Error> {
        let mut out: Option<Cow<'a, str>> = None;
        for v in self.headers.get_all(name) {
            let s = v
                .to_str()
                .map_err(|_| Error::malformed("header", format!("{name} is not visible ASCII")))?
                .trim_matches(|c| c == ' ' || c == '\t');
            match &mut out {
                Some(o) => {
                    let o = o.to_mut();
                    o.push_str(", ");
                    o.push_str(s);
                }
                None => out = Some(Cow::Borrowed(s)),
            }
        }
        if out.is_none() && name.eq_ignore_ascii_case("host") && !self.authority.is_empty() {
            out = Some(Cow::Owned(self.authority.to_ascii_lowercase()));
        }
        Ok(out)
    }

    /// Each field line's value trimmed (for byte-sequence wrapping).
    pub(crate) fn field_lines(&self, name: &str) -> Vec<&'a [u8]> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.as_bytes().trim_ascii())
            .collect()
    }
}
