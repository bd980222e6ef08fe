//! The HTTP/1.1 the sidecar speaks to the app on loopback, for calls without a request body:
//! the request head written in one buffer, the response head parsed with `httparse` into the
//! `http` types (header values share the bytes read), and the response body's framing
//! (RFC 9112 section 6) decoded as it is read. Pure: no I/O here ([`super::pool`] does it), so
//! every rule is tested on bytes.
//!
//! It is strict where hyper's client is lenient, and fails closed (the call is answered 502
//! and the connection dropped): a `Transfer-Encoding` other than a lone `chunked`, differing
//! or malformed `Content-Length` values, a bare LF in the chunked framing, a `101` the sidecar
//! never asked for, more than [`MAX_INTERIM`] interim answers, a head over
//! [`MAX_RESPONSE_HEAD`] or with more than [`MAX_RESPONSE_HEADERS`] fields, chunk lines and
//! trailers over [`MAX_CHUNK_LINE`] and [`MAX_TRAILERS`].

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HeaderMap, HeaderName, HeaderValue, TRANSFER_ENCODING};
use http::{Method, StatusCode, Version};

use crate::base::headers::{Outgoing, is_lone_chunked};

/// Most bytes of a response head (its status line and fields), as hyper's default buffer.
pub const MAX_RESPONSE_HEAD: usize = 400 * 1024;
/// Most fields in a response head (hyper's default).
pub const MAX_RESPONSE_HEADERS: usize = 100;
/// Room made in an answer's header map for the fields the sidecar adds to it before it goes
/// to the client (`RateLimit-Limit`, `-Remaining`, `-Reset`, and hyper's `Date`), so that
/// adding them does not grow and rehash the map.
const ADDED_FIELDS: usize = 4;
/// Most interim (1xx) answers before the final one.
pub const MAX_INTERIM: usize = 8;
/// Most bytes of one chunk-size line, extensions included.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Most bytes of the trailer section of a chunked body (read and dropped).
pub const MAX_TRAILERS: usize = 16 * 1024;

/// Why the app's answer cannot be read (the connection is not reused).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum H1Error {
    #[error("malformed response head: {0}")]
    Head(&'static str),
    #[error("response head larger than {MAX_RESPONSE_HEAD} bytes")]
    HeadTooLarge,
    #[error("more than {MAX_INTERIM} interim responses")]
    TooManyInterim,
    #[error("101 Switching Protocols, which was not asked for")]
    UnaskedUpgrade,
    #[error("unsupported Transfer-Encoding (only a lone \"chunked\" is read)")]
    TransferEncoding,
    #[error("invalid Content-Length")]
    ContentLength,
    #[error("malformed chunked body: {0}")]
    Chunked(&'static str),
    #[error("connection closed before the response ended")]
    Truncated,
}

/// Writes the request head of a call without a body: request line, the fields of `headers`
/// (as `outgoing` makes them for the app, when given), with `Content-Length` and
/// `Transfer-Encoding` left out, `content-length: 0` where the method defines a body or the
/// client sent a length, and the empty line.
pub fn encode_request_head(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    outgoing: Option<&Outgoing<'_>>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut length_sent = false;
    let mut field = |name: &HeaderName, value: &[u8]| {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            length_sent |= name == CONTENT_LENGTH;
            return;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    match outgoing {
        Some(outgoing) => outgoing.fields(headers, field),
        None => headers.iter().for_each(|(name, value)| field(name, value.as_bytes())),
    }
    if length_sent || matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How the body of a response is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: HEAD, 204, 304, or `Content-Length: 0`.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the app closes the connection.
    UntilClose,
}

/// A parsed final response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// Whether the connection can carry another call once the body is read.
    pub reusable: bool,
}

/// Progress through the heads of one answer, kept between reads.
#[derive(Debug, Default)]
pub struct HeadProgress {
    /// Interim (1xx) answers skipped so far.
    interim: usize,
    /// Bytes of the buffer already searched for the end of the head.
    scanned: usize,
}

impl HeadProgress {
    /// Whether an interim answer came already.
    pub fn answered(&self) -> bool {
        self.interim > 0
    }
}

/// Parses the final response head at the start of `buf`, skipping interim (1xx) answers:
/// `Ok(None)` while more bytes are needed; else the head, its bytes and those of the interim
/// answers removed from `buf` (what remains is the start of the body).
///
/// The head's end (its empty line) is found first, the head split off the buffer, and then
/// parsed once: the header values share its bytes (no allocation, no copy per value).
pub fn parse_response_head(
    buf: &mut BytesMut,
    method: &Method,
    progress: &mut HeadProgress,
) -> Result<Option<ResponseHead>, H1Error> {
    loop {
        let Some(end) = head_end(buf, progress.scanned) else {
            if buf.len() > MAX_RESPONSE_HEAD {
                return Err(H1Error::HeadTooLarge);
            }
            progress.scanned = buf.len();
            return Ok(None);
        };
        progress.scanned = 0;
        if end > MAX_RESPONSE_HEAD {
            return Err(H1Error::HeadTooLarge);
        }
        let head = buf.split_to(end).freeze();
        let mut fields = [const { MaybeUninit::uninit() }; MAX_RESPONSE_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut response, &head, &mut fields) {
            Ok(httparse::Status::Complete(len)) if len == end => {}
            Err(httparse::Error::TooManyHeaders) => return Err(H1Error::Head("too many header fields")),
            _ => return Err(H1Error::Head("not an HTTP/1.x response")),
        }
        let code = response.code.ok_or(H1Error::Head("no status"))?;
        let status = StatusCode::from_u16(code).map_err(|_| H1Error::Head("invalid status"))?;
        let version = match response.version {
            Some(1) => Version::HTTP_11,
            Some(0) => Version::HTTP_10,
            _ => return Err(H1Error::Head("unknown version")),
        };
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(H1Error::UnaskedUpgrade);
        }
        if status.is_informational() {
            progress.interim += 1;
            if progress.interim > MAX_INTERIM {
                return Err(H1Error::TooManyInterim);
            }
            continue;
        }
        let mut headers = HeaderMap::with_capacity(response.headers.len() + ADDED_FIELDS);
        let mut framed = Framed::default();
        for field in response.headers.iter() {
            let name =
                HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| H1Error::Head("invalid field name"))?;
            let value = HeaderValue::from_maybe_shared(head.slice_ref(field.value))
                .map_err(|_| H1Error::Head("invalid field value"))?;
            framed.saw(&name);
            headers.append(name, value);
        }
        return finish_head(status, version, headers, framed, method).map(Some);
    }
}

/// Where the head at the start of `buf` ends: just after the first empty line (CRLF CRLF, or
/// bare LFs, which `httparse` then judges), searching from about `from` (what an earlier call
/// searched, less what the end could straddle).
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from.saturating_sub(2);
    while let Some(i) = memchr::memchr(b'\n', buf.get(at..)?) {
        let lf = at + i;
        match (buf.get(lf + 1), buf.get(lf + 2)) {
            (Some(b'\n'), _) => return Some(lf + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(lf + 3),
            _ => at = lf + 1,
        }
    }
    None
}

/// The framing and reuse of a final response (RFC 9112 sections 6.3 and 9.3).
fn finish_head(
    status: StatusCode,
    version: Version,
    mut headers: HeaderMap,
    framed: Framed,
    method: &Method,
) -> Result<ResponseHead, H1Error> {
    let close = framed.connection
        && headers
            .get_all(CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"));
    let mut reusable = version == Version::HTTP_11 && !close;
    let bodiless = *method == Method::HEAD || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let framing = if framed.transfer_encoding {
        if !is_lone_chunked(&headers) {
            return Err(H1Error::TransferEncoding);
        }
        if headers.remove(CONTENT_LENGTH).is_some() {
            // Both: the chunked framing wins, and the connection is not trusted again.
            reusable = false;
        }
        if bodiless { Framing::Empty } else { Framing::Chunked }
    } else if framed.content_length {
        let length = content_length(&headers)?;
        if bodiless || length == 0 {
            Framing::Empty
        } else {
            Framing::Length(length)
        }
    } else if bodiless {
        Framing::Empty
    } else {
        reusable = false;
        Framing::UntilClose
    };
    Ok(ResponseHead {
        status,
        version,
        headers,
        framing,
        reusable,
    })
}

/// Whether the `Transfer-Encoding` fields, together, say exactly `chunked`.
/// Which of the fields that frame an answer or end its connection its head has, noted as the
/// fields are read (the map is not searched for those it lacks).
#[derive(Debug, Default, Clone, Copy)]
struct Framed {
    connection: bool,
    transfer_encoding: bool,
    content_length: bool,
}

impl Framed {
    fn saw(&mut self, name: &HeaderName) {
        self.connection |= name == CONNECTION;
        self.transfer_encoding |= name == TRANSFER_ENCODING;
        self.content_length |= name == CONTENT_LENGTH;
    }
}

/// The one length every `Content-Length` value (fields and list members) states.
fn content_length(headers: &HeaderMap) -> Result<u64, H1Error> {
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for member in value.as_bytes().split(|b| *b == b',') {
            let digits = member.trim_ascii();
            if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
                return Err(H1Error::ContentLength);
            }
            let n = digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            if length.is_some_and(|l| l != n) {
                return Err(H1Error::ContentLength);
            }
            length = Some(n);
        }
    }
    length.ok_or(H1Error::ContentLength)
}

/// What the body decoder made of the bytes it had.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes (sharing the read buffer).
    Data(Bytes),
    /// More bytes must be read first.
    NeedMore,
    /// The body has ended; what remains in the buffer is not part of it.
    End,
}

/// Decodes a response body of a given framing from a read buffer, frame by frame.
#[derive(Debug)]
pub struct BodyDecoder {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Bytes left of a `Content-Length` body.
    Length(u64),
    /// Before a chunk-size line.
    ChunkSize,
    /// Bytes left of the current chunk's data.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// The trailer section, this many bytes of it read.
    Trailers(usize),
    UntilClose,
    Done,
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        Self { state }
    }

    /// Whether the body has been read to its end.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes of the body still to come, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// The next part of the body found in `buf` (consumed from it).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, H1Error> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::End),
                State::Length(left) | State::ChunkData(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    self.state = match self.state {
                        State::Length(_) if left == 0 => State::Done,
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::ChunkEnd,
                        _ => State::ChunkData(left),
                    };
                    return Ok(Decoded::Data(data));
                }
                State::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                State::ChunkSize => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = chunk_size(&line)?;
                    self.state = if size == 0 {
                        State::Trailers(0)
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::ChunkEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(H1Error::Chunked("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = State::ChunkSize;
                }
                State::Trailers(read) => {
                    let room = MAX_TRAILERS.saturating_sub(read);
                    let Some(line) = take_line(buf, room).map_err(|_| H1Error::Chunked("malformed trailers"))? else {
                        return Ok(Decoded::NeedMore);
                    };
                    self.state = if line.is_empty() {
                        State::Done
                    } else {
                        State::Trailers(read + line.len() + 2)
                    };
                }
            }
        }
    }

    /// The connection closed: the end of a body delimited by it, else a truncated body.
    pub fn eof(&mut self) -> Result<(), H1Error> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(H1Error::Truncated),
        }
    }
}

/// A CRLF-terminated line from the start of `buf` (without its CRLF), if one is there within
/// `max` bytes. A bare LF or CR is an error.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, H1Error> {
    let window = &buf[..buf.len().min(max.saturating_add(2))];
    match window.iter().position(|b| *b == b'\n' || *b == b'\r') {
        Some(i) if window[i] == b'\n' => Err(H1Error::Chunked("bare LF")),
        Some(i) if i + 1 < window.len() => {
            if window[i + 1] != b'\n' {
                return Err(H1Error::Chunked("bare CR"));
            }
            let line = buf.split_to(i);
            buf.advance(2);
            Ok(Some(line))
        }
        // A CR last: its LF has not come yet.
        Some(_) => Ok(None),
        None if window.len() > max => Err(H1Error::Chunked("line too long")),
        None => Ok(None),
    }
}

/// The size of a chunk-size line: hex digits, then optional whitespace and extensions (read and
/// dropped; no control characters).
fn chunk_size(line: &[u8]) -> Result<u64, H1Error> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(H1Error::Chunked("invalid chunk size"));
    }
    let rest = &line[digits..];
    let rest = &rest[rest.iter().take_while(|b| **b == b' ' || **b == b'\t').count()..];
    if !(rest.is_empty() || rest[0] == b';') || rest.iter().any(|b| b.is_ascii_control() && *b != b'\t') {
        return Err(H1Error::Chunked("invalid chunk extension"));
    }
    let mut size = 0u64;
    for d in &line[..digits] {
        let v = (*d as char).to_digit(16).expect("a hex digit");
        size = size.checked_mul(16).ok_or(H1Error::Chunked("chunk size overflows"))? | u64::from(v);
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &str, method: Method) -> Result<Option<(ResponseHead, BytesMut)>, H1Error> {
        let mut buf = BytesMut::from(bytes);
        let mut progress = HeadProgress::default();
        Ok(parse_response_head(&mut buf, &method, &mut progress)?.map(|h| (h, buf)))
    }

    fn get(bytes: &str) -> Result<ResponseHead, H1Error> {
        Ok(head(bytes, Method::GET)?.expect("complete").0)
    }

    /// The whole body of `framing` decoded from `wire` fed `step` bytes at a time.
    fn decode_all(framing: Framing, wire: &[u8], step: usize) -> Result<(Vec<u8>, BytesMut), H1Error> {
        let mut decoder = BodyDecoder::new(framing);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::End => return Ok((body, buf)),
                Decoded::NeedMore if fed < wire.len() => {
                    let end = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
                Decoded::NeedMore => {
                    decoder.eof()?;
                    return Ok((body, buf));
                }
            }
        }
    }

    #[test]
    fn request_heads_carry_the_fields_and_a_length_only_where_due() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("app.example"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        let mut out = Vec::new();
        encode_request_head(&Method::GET, "/p?q=1", &headers, None, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /p?q=1 HTTP/1.1\r\nhost: app.example\r\nx-a: 1\r\nx-a: 2\r\n\r\n"
        );
        let mut out = Vec::new();
        encode_request_head(&Method::POST, "/", &HeaderMap::new(), None, &mut out);
        assert_eq!(out, b"POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
        headers.insert("content-length", HeaderValue::from_static("0"));
        let mut out = Vec::new();
        encode_request_head(&Method::DELETE, "/", &headers, None, &mut out);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .ends_with("x-a: 2\r\ncontent-length: 0\r\n\r\n")
        );
    }

    #[test]
    fn heads_are_read_when_complete_and_leave_the_body() {
        assert!(
            head("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n", Method::GET)
                .unwrap()
                .is_none()
        );
        let (h, rest) = head("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nhi", Method::GET)
            .unwrap()
            .unwrap();
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.framing, Framing::Length(2));
        assert!(h.reusable);
        assert_eq!(h.headers["x-a"], "b");
        assert_eq!(&rest[..], b"hi");
    }

    #[test]
    fn a_head_arriving_in_any_two_pieces_ends_where_its_empty_line_does() {
        for wire in [
            "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\nbody\n\n",
            "HTTP/1.1 200 OK\nA: 1\n\nbody\r\n\r\n",
            "HTTP/1.1 204 No Content\r\n\r\n",
        ] {
            let whole = wire.as_bytes();
            let end = whole.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
            let end = match whole.windows(2).position(|w| w == b"\n\n").map(|i| i + 2) {
                Some(lf) if end.is_none_or(|crlf| lf < crlf) => lf,
                _ => end.unwrap(),
            };
            for split in 0..whole.len() {
                // What the first piece showed, searched again from where the search stopped.
                let first = head_end(&whole[..split], 0);
                let found = first.or_else(|| head_end(whole, split));
                assert_eq!(found, Some(end), "{wire:?} split at {split}");
            }
            assert_eq!(head_end(&whole[..end - 1], 0), None, "{wire:?}");
        }
    }

    #[test]
    fn interim_answers_are_skipped_but_bounded() {
        let (h, rest) = head(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nX",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.status, StatusCode::NO_CONTENT);
        assert_eq!(h.framing, Framing::Empty);
        assert!(!h.headers.contains_key("link"));
        assert_eq!(&rest[..], b"X");
        let many = "HTTP/1.1 100 Continue\r\n\r\n".repeat(MAX_INTERIM + 1);
        assert_eq!(head(&many, Method::GET).unwrap_err(), H1Error::TooManyInterim);
        assert_eq!(
            get("HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n").unwrap_err(),
            H1Error::UnaskedUpgrade
        );
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let f = |s: &str| get(s).map(|h| (h.framing, h.reusable));
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
            Ok((Framing::Chunked, true))
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding:  Chunked \r\n\r\n"),
            Ok((Framing::Chunked, true))
        );
        // Both: chunked wins, the length is dropped, the connection is not reused.
        let h = get("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n").unwrap();
        assert_eq!((h.framing, h.reusable), (Framing::Chunked, false));
        assert!(!h.headers.contains_key("content-length"));
        for te in ["gzip", "gzip, chunked", "chunked, chunked", "chunked, gzip", ""] {
            let s = format!("HTTP/1.1 200 OK\r\ntransfer-encoding: {te}\r\n\r\n");
            assert_eq!(f(&s), Err(H1Error::TransferEncoding), "{te}");
        }
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n"),
            Err(H1Error::TransferEncoding)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            Ok((Framing::Empty, true))
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\ncontent-length: 7\r\n\r\n"),
            Ok((Framing::Length(7), true))
        );
        for cl in ["7, 8", "-1", "+7", "0x7", "", "7 7", "99999999999999999999"] {
            let s = format!("HTTP/1.1 200 OK\r\ncontent-length: {cl}\r\n\r\n");
            assert_eq!(f(&s), Err(H1Error::ContentLength), "{cl}");
        }
        assert_eq!(f("HTTP/1.1 200 OK\r\n\r\n"), Ok((Framing::UntilClose, false)));
        assert_eq!(
            f("HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n"),
            Ok((Framing::Empty, true))
        );
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", Method::HEAD)
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(h.framing, Framing::Empty);
        assert_eq!(h.headers["content-length"], "9");
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\ncontent-length: 1\r\n\r\n"),
            Ok((Framing::Length(1), false))
        );
        assert_eq!(
            f("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n"),
            Ok((Framing::Length(1), false))
        );
    }

    #[test]
    fn malformed_and_oversized_heads_are_errors() {
        assert!(matches!(get("HTTP/2 200 OK\r\n\r\n"), Err(H1Error::Head(_))));
        assert!(matches!(
            get("HTTP/1.1 200 OK\r\nbad header\r\n\r\n"),
            Err(H1Error::Head(_))
        ));
        let many: String = (0..=MAX_RESPONSE_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        assert!(matches!(
            get(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")),
            Err(H1Error::Head(_))
        ));
        let big = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_RESPONSE_HEAD + 1));
        assert_eq!(head(&big, Method::GET).unwrap_err(), H1Error::HeadTooLarge);
    }

    #[test]
    fn length_bodies_end_at_their_length_and_leave_the_rest() {
        for step in [1, 3, 1000] {
            let (body, rest) = decode_all(Framing::Length(5), b"hello!", step).unwrap();
            assert_eq!(body, b"hello");
            // The byte after the body stays for the caller to see (and refuse reuse).
            assert!(step == 1 || &rest[..] == b"!", "{step}");
        }
        assert_eq!(
            decode_all(Framing::Length(5), b"hel", 2).unwrap_err(),
            H1Error::Truncated
        );
        assert_eq!(
            decode_all(Framing::UntilClose, b"all of it", 4).unwrap().0,
            b"all of it"
        );
    }

    #[test]
    fn chunked_bodies_are_decoded_in_any_split() {
        let wire = b"5;name=value\r\nhello\r\n6 \r\n world\r\nA\r\n0123456789\r\n0\r\nx-trailer: t\r\n\r\nNEXT";
        for step in [1, 2, 7, 1000] {
            let (body, rest) = decode_all(Framing::Chunked, wire, step).unwrap();
            assert_eq!(body, b"hello world0123456789", "{step}");
            if step == 1000 {
                assert_eq!(&rest[..], b"NEXT");
            }
        }
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        let bad: &[&[u8]] = &[
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"\r\n",
            b"g\r\n",
            b"-5\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"5;a\x01b\r\nhello\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"5\rhello",
            b"5\x0c\r\nhello\r\n0\r\n\r\n",
        ];
        for wire in bad {
            assert!(
                matches!(decode_all(Framing::Chunked, wire, 1000), Err(H1Error::Chunked(_))),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let long = format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_LINE));
        assert!(matches!(
            decode_all(Framing::Chunked, long.as_bytes(), 1000),
            Err(H1Error::Chunked("line too long"))
        ));
        let trailers = format!("0\r\n{}", "x-t: v\r\n".repeat(MAX_TRAILERS / 8 + 1));
        assert!(matches!(
            decode_all(Framing::Chunked, trailers.as_bytes(), 100),
            Err(H1Error::Chunked(_))
        ));
        assert_eq!(
            decode_all(Framing::Chunked, b"5\r\nhel", 1000).unwrap_err(),
            H1Error::Truncated
        );
    }
}
