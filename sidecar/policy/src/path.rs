//! The one normal form of a request path: what routes are matched on and what the app
//! receives.
//!
//! An app behind the sidecar may decode percent-escapes, merge slashes, strip `;` path
//! parameters or compare paths without regard to case before it routes a request. If the
//! sidecar matched routes on the path as sent, `/%61dmin` or `//admin` would pass a route
//! `/` and reach the app's `/admin`. So every path is first brought to one normal form
//! ([`normalize`]), routes are matched on it, and that exact path is forwarded. What could
//! still be read two ways is refused with 400 ([`PathError`]) rather than guessed at.
//!
//! The normal form (RFC 3986 section 6.2.2, with a policy in the manner of Envoy's
//! `normalize_path`, `merge_slashes` and `path_with_escaped_slashes_action: REJECT_REQUEST`):
//!
//! - percent-encoded unreserved characters (`ALPHA DIGIT - . _ ~`) are decoded (`%61` is
//!   `a`, `%7E` is `~`); every other escape is kept, its hex digits upper-cased (`%c3%a9`
//!   becomes `%C3%A9`), and is never decoded (non-ASCII bytes stay percent-encoded, `%25`
//!   stays `%25`);
//! - runs of `/` are merged into one (`//admin///x` is `/admin/x`);
//! - refused: a dot segment `.` or `..` (also once decoded: `%2e%2e`), as the engine always
//!   did; a `;` (path parameters, raw or `%3B`); an encoded slash `%2F`; a backslash (raw or
//!   `%5C`); `%00`; a malformed escape (`%zz`, `%4`); any byte RFC 3986 does not allow in a
//!   path (space, `"`, `<`, `>`, `^`, `` ` ``, `{`, `|`, `}`, controls, raw non-ASCII bytes);
//!   a path that does not start with `/` (`*`).
//!
//! Letter case is kept: matching is case-sensitive unless a route says `caseInsensitive`
//! ([`crate::routes`]).
//!
//! [`normalize`] is one linear pass over the bytes and allocates only when the path changes:
//! a path already in normal form (the common case) is returned borrowed, and normalizing a
//! normal path returns it unchanged (idempotence). It bounds nothing itself: the path's
//! length is bounded by the proxy's header limit.

use std::borrow::Cow;

/// Why a path is refused (400). The messages name the construct, never the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.reason())]
pub enum PathError {
    /// The path does not start with `/` (`*`, or empty).
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    MalformedEscape,
    /// `%2F`: the app could read it as a segment boundary.
    EncodedSlash,
    /// A raw `\` or `%5C`: some apps read it as `/`.
    Backslash,
    /// `%00`.
    Nul,
    /// A `;` (raw or `%3B`): path parameters could hide a route's prefix.
    PathParameter,
    /// A `.` or `..` segment (literal or percent-encoded).
    DotSegment,
    /// A byte that is not valid in a path (RFC 3986 `pchar` or `/`).
    InvalidByte,
}

impl PathError {
    /// The reason, for the audit log.
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotAbsolute => "path does not start with /",
            Self::MalformedEscape => "malformed percent-escape in path",
            Self::EncodedSlash => "encoded slash (%2F) in path",
            Self::Backslash => "backslash (\\ or %5C) in path",
            Self::Nul => "encoded NUL (%00) in path",
            Self::PathParameter => "path parameter (; or %3B) in path",
            Self::DotSegment => "ambiguous path (dot segments)",
            Self::InvalidByte => "byte not allowed in a path",
        }
    }
}

/// The normal form of an admitted request's path, kept without holding on to the request
/// (the proxy goes on to move the request while it holds the decision). The proxy forwards
/// [`NormalPath::resolve`] of the path as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NormalPath {
    /// The path was sent in normal form (the common case): forward it as sent.
    AsSent,
    /// The path in normal form, which differs from the path as sent.
    Rewritten(String),
}

impl NormalPath {
    /// The path to forward, given `sent`: the [`RequestView::path`](crate::RequestView::path)
    /// this admission was decided on. Borrowed from `sent` when it was already normal.
    pub fn resolve<'a>(&'a self, sent: &'a str) -> &'a str {
        match self {
            Self::AsSent => {
                debug_assert!(
                    matches!(normalize(sent), Ok(Cow::Borrowed(_))),
                    "NormalPath::resolve given another path than the one decided on"
                );
                sent
            }
            Self::Rewritten(path) => path,
        }
    }
}

impl From<Cow<'_, str>> for NormalPath {
    fn from(path: Cow<'_, str>) -> Self {
        match path {
            Cow::Borrowed(_) => Self::AsSent,
            Cow::Owned(path) => Self::Rewritten(path),
        }
    }
}

/// `ALPHA DIGIT - . _ ~`.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// A byte allowed as is inside a segment: `pchar` without `pct-encoded` and without `;`.
fn is_segment_byte(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@'
        )
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// What the current segment of the output holds so far, to spot `.` and `..`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Segment {
    Empty,
    Dot,
    DotDot,
    Other,
}

impl Segment {
    fn push(self, b: u8) -> Self {
        match (self, b) {
            (Self::Empty, b'.') => Self::Dot,
            (Self::Dot, b'.') => Self::DotDot,
            _ => Self::Other,
        }
    }

    fn end(self) -> Result<(), PathError> {
        match self {
            Self::Dot | Self::DotDot => Err(PathError::DotSegment),
            Self::Empty | Self::Other => Ok(()),
        }
    }
}

/// The output: the input itself while nothing changed, a copy from the first change on.
struct Output<'a> {
    input: &'a [u8],
    owned: Option<Vec<u8>>,
}

impl Output<'_> {
    /// The input up to `at` is the output so far: copy it, the output departs from here.
    fn diverge(&mut self, at: usize) -> &mut Vec<u8> {
        let input = self.input;
        self.owned.get_or_insert_with(|| {
            let mut v = Vec::with_capacity(input.len());
            v.extend_from_slice(input.get(..at).unwrap_or(input));
            v
        })
    }

    /// Emits bytes the input holds at the same place (nothing to do while borrowed).
    fn keep(&mut self, bytes: &[u8]) {
        if let Some(v) = &mut self.owned {
            v.extend_from_slice(bytes);
        }
    }
}

/// Brings `path` to the normal form described in the [module documentation](self), or says
/// why it is refused. Borrowed when `path` already is in normal form.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut out = Output {
        input: bytes,
        owned: None,
    };
    let mut segment = Segment::Empty;
    // The last byte emitted was a `/` (the path starts with one).
    let mut after_slash = false;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'/' => {
                segment.end()?;
                segment = Segment::Empty;
                if after_slash {
                    out.diverge(i);
                } else {
                    out.keep(b"/");
                    after_slash = true;
                }
                i += 1;
            }
            b'%' => {
                let (hi, lo) = match (bytes.get(i + 1), bytes.get(i + 2)) {
                    (Some(&hi), Some(&lo)) => (hi, lo),
                    _ => return Err(PathError::MalformedEscape),
                };
                let (Some(h), Some(l)) = (hex_value(hi), hex_value(lo)) else {
                    return Err(PathError::MalformedEscape);
                };
                let decoded = (h << 4) | l;
                match decoded {
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::Backslash),
                    0 => return Err(PathError::Nul),
                    b';' => return Err(PathError::PathParameter),
                    _ if is_unreserved(decoded) => {
                        out.diverge(i).push(decoded);
                        segment = segment.push(decoded);
                    }
                    _ if hi.is_ascii_lowercase() || lo.is_ascii_lowercase() => {
                        out.diverge(i)
                            .extend_from_slice(&[b'%', hi.to_ascii_uppercase(), lo.to_ascii_uppercase()]);
                        segment = Segment::Other;
                    }
                    _ => {
                        out.keep(&[b'%', hi, lo]);
                        segment = Segment::Other;
                    }
                }
                after_slash = false;
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::PathParameter),
            _ if is_segment_byte(b) => {
                out.keep(&[b]);
                segment = segment.push(b);
                after_slash = false;
                i += 1;
            }
            _ => return Err(PathError::InvalidByte),
        }
    }
    segment.end()?;
    match out.owned {
        None => Ok(Cow::Borrowed(path)),
        // Only ASCII was emitted: this cannot fail, and says so rather than panicking.
        Some(v) => String::from_utf8(v).map(Cow::Owned).map_err(|_| PathError::InvalidByte),
    }
}

/// Letters outside ASCII that a case-insensitive comparison somewhere takes for ASCII letters,
/// in normal form (percent-encoded UTF-8, upper-case hex), with those letters: `ı` (U+0131)
/// and `İ` (U+0130) for `i`, `ſ` (U+017F) for `s`, the Kelvin sign (U+212A) for `k` (Java's
/// `equalsIgnoreCase`); `ß` and `ẞ` for `ss` and the ligatures `ﬀ ﬁ ﬂ ﬃ ﬄ ﬅ ﬆ` (U+FB00 to
/// U+FB06) for their letters (full case mapping: Python's `upper()`/`casefold()`, Java's and
/// JavaScript's `toUpperCase()`).
const UNICODE_CASE_VARIANTS: [(&str, &str); 13] = [
    ("%C4%B1", "i"),
    ("%C4%B0", "i"),
    ("%C5%BF", "s"),
    ("%E2%84%AA", "k"),
    ("%C3%9F", "ss"),
    ("%E1%BA%9E", "ss"),
    ("%EF%AC%80", "ff"),
    ("%EF%AC%81", "fi"),
    ("%EF%AC%82", "fl"),
    ("%EF%AC%83", "ffi"),
    ("%EF%AC%84", "ffl"),
    ("%EF%AC%85", "st"),
    ("%EF%AC%86", "st"),
];

/// `path` (in normal form) with the [`UNICODE_CASE_VARIANTS`] replaced by their ASCII
/// letters; `None`, without allocating, when it holds none.
pub fn fold_unicode_case(path: &str) -> Option<String> {
    if !path.contains('%') || !UNICODE_CASE_VARIANTS.iter().any(|(v, _)| path.contains(v)) {
        return None;
    }
    let mut folded = path.to_owned();
    for (variant, ascii) in UNICODE_CASE_VARIANTS {
        folded = folded.replace(variant, ascii);
    }
    (folded != path).then_some(folded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(path: &str) -> String {
        match normalize(path) {
            Ok(p) => p.into_owned(),
            Err(e) => panic!("{path:?} refused: {e}"),
        }
    }

    fn err(path: &str) -> PathError {
        match normalize(path) {
            Ok(p) => panic!("{path:?} accepted as {p:?}"),
            Err(e) => e,
        }
    }

    fn borrowed(path: &str) -> bool {
        matches!(normalize(path), Ok(Cow::Borrowed(p)) if p == path)
    }

    #[test]
    fn normal_paths_are_borrowed_unchanged() {
        for p in [
            "/",
            "/admin",
            "/admin/",
            "/admin/x",
            "/a/b.c/..d/.e/f..",
            "/a/.../b",
            "/~user/a-b_c.d",
            "/files/caf%C3%A9",
            "/a%20b",
            "/q%3F%23",
            "/100%25",
            "/sub!$&'()*+,=:@delims",
            "/Admin/X",
        ] {
            assert!(borrowed(p), "{p:?}");
        }
    }

    #[test]
    fn the_five_attacks() {
        assert_eq!(ok("/%61dmin/x"), "/admin/x");
        assert_eq!(ok("//admin/x"), "/admin/x");
        assert_eq!(err("/admin;x=1/y"), PathError::PathParameter);
        assert_eq!(err("/admin%2fx"), PathError::EncodedSlash);
        assert_eq!(err("/admin%2Fx"), PathError::EncodedSlash);
        // Case is kept; the route matcher deals with it.
        assert!(borrowed("/Admin/x"));
    }

    #[test]
    fn unreserved_escapes_are_decoded_in_any_case() {
        assert_eq!(ok("/%41%5a%61%7a%30%39%2D%2e%5F%7e"), "/AZaz09-._~");
        assert_eq!(ok("/%61%64%6D%69%6E"), "/admin");
        assert_eq!(ok("/a%2eb"), "/a.b");
    }

    #[test]
    fn other_escapes_are_kept_upper_cased() {
        assert_eq!(ok("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(ok("/caf%C3%a9/%e2%82%AC"), "/caf%C3%A9/%E2%82%AC");
        assert_eq!(ok("/a%3f"), "/a%3F");
        assert_eq!(ok("/a%20"), "/a%20");
        // An encoded percent is decoded only once: it stays an escape.
        assert_eq!(ok("/%2561dmin"), "/%2561dmin");
        assert_eq!(ok("/%7e%2a"), "/~%2A");
    }

    #[test]
    fn slashes_are_merged() {
        assert_eq!(ok("//"), "/");
        assert_eq!(ok("///a//b///"), "/a/b/");
        assert_eq!(ok("/a//%62"), "/a/b");
    }

    #[test]
    fn dot_segments_are_refused_literal_or_encoded() {
        for p in [
            "/.",
            "/..",
            "/../admin",
            "/a/..",
            "/a/../admin",
            "/public/./x",
            "/./",
            "/a/./",
            "/a/%2e%2e/b",
            "/a/%2E%2E/b",
            "/a/%2E./b",
            "/a/.%2e/b",
            "/a/%2e/b",
            "//../admin",
            "/a//..//b",
            "/a/%2e%2e",
        ] {
            assert_eq!(err(p), PathError::DotSegment, "{p:?}");
        }
    }

    #[test]
    fn encoded_separators_nul_and_parameters_are_refused() {
        assert_eq!(err("/a%2F..%2Fb"), PathError::EncodedSlash);
        assert_eq!(err("/a%5cb"), PathError::Backslash);
        assert_eq!(err("/a%5Cb"), PathError::Backslash);
        assert_eq!(err("/a\\b"), PathError::Backslash);
        assert_eq!(err("/a%00"), PathError::Nul);
        assert_eq!(err("/a;"), PathError::PathParameter);
        assert_eq!(err("/a;jsessionid=1"), PathError::PathParameter);
        assert_eq!(err("/admin%3bx/y"), PathError::PathParameter);
        assert_eq!(err("/admin%3Bx/y"), PathError::PathParameter);
    }

    #[test]
    fn malformed_escapes_are_refused() {
        for p in ["/%", "/%4", "/a%zz", "/%g0", "/%0g", "/a%4/", "/%%41", "/%-1", "/%+1"] {
            assert_eq!(err(p), PathError::MalformedEscape, "{p:?}");
        }
    }

    #[test]
    fn invalid_bytes_are_refused() {
        for p in [
            "/a b",
            "/a\"b",
            "/a<b",
            "/a>b",
            "/a^b",
            "/a`b",
            "/a{b",
            "/a|b",
            "/a}b",
            "/a\tb",
            "/a\nb",
            "/a\u{7f}",
            "/a#b",
            "/a?b",
            "/caf\u{e9}",
            "/\u{2028}",
        ] {
            assert_eq!(err(p), PathError::InvalidByte, "{p:?}");
        }
    }

    #[test]
    fn relative_and_asterisk_paths_are_refused() {
        for p in ["", "*", "admin", "%2Fadmin", "http://x/admin"] {
            assert_eq!(err(p), PathError::NotAbsolute, "{p:?}");
        }
    }

    #[test]
    fn normalizing_is_idempotent() {
        for p in [
            "/%61dmin/x",
            "//admin/x",
            "/caf%c3%a9//%7e/x%2a/",
            "/A%42c",
            "/%2561",
            "/a%2eb/",
        ] {
            let once = ok(p);
            assert!(borrowed(&once), "{p:?} -> {once:?} is not normal");
        }
    }

    #[test]
    fn normal_paths_resolve_against_the_path_as_sent() {
        let sent = "/admin/x";
        let normal = NormalPath::from(normalize(sent).unwrap());
        assert_eq!(normal, NormalPath::AsSent);
        assert!(std::ptr::eq(normal.resolve(sent), sent), "borrowed, not copied");
        let sent = "//%61dmin/x";
        let normal = NormalPath::from(normalize(sent).unwrap());
        assert_eq!(normal, NormalPath::Rewritten("/admin/x".into()));
        assert_eq!(normal.resolve(sent), "/admin/x");
    }

    #[test]
    fn reasons_name_the_construct_only() {
        assert_eq!(err("/a/../b").reason(), "ambiguous path (dot segments)");
        assert_eq!(err("/a%2fb").to_string(), "encoded slash (%2F) in path");
        assert!(!err("/secret;token=hunter2").to_string().contains("hunter2"));
    }

    #[test]
    fn long_paths_are_linear() {
        // 1 MiB of work each: quadratic behaviour would not finish in test time.
        let n = 1 << 20;
        let normal = "/a".repeat(n / 2);
        assert!(borrowed(&normal));
        let slashes = format!("{}x", "/".repeat(n));
        assert_eq!(ok(&slashes), "/x");
        let escapes = "/%61".repeat(n / 4);
        assert_eq!(ok(&escapes), "/a".repeat(n / 4));
        let upper = "%c3".repeat(n / 3);
        assert_eq!(ok(&format!("/{upper}")), format!("/{}", "%C3".repeat(n / 3)));
        let dots = format!("{}/..", "/.a".repeat(n / 3));
        assert_eq!(err(&dots), PathError::DotSegment);
    }
}
