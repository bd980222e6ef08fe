//! Keep-alive HTTP/1.1 connections to the local app, by port.
//!
//! The app sits on 127.0.0.1 in the same pod, so this is the hottest path of the sidecar and
//! the simplest possible pool: idle connections kept in a last-in first-out list per port.
//! A call checks a connection out, sends on it, and hands it back when the response body has
//! been read to its end; a body dropped half-read closes its connection instead.
//!
//! Two kinds of connection, each in its own list:
//! - a call without a request body (most calls: GET, HEAD, DELETE, ...) is made by the
//!   proxying task itself on an [`AppConn`]: the head written in one buffer, the answer's head
//!   parsed and its body decoded as it is read ([`super::h1`]). No task, channel or second
//!   dispatcher per call: this is what the benchmark measures;
//! - a call with a body goes through a `hyper::client::conn::http1` connection driven by its
//!   own task, which streams the upload while it reads the answer (an app may answer before it
//!   has read the whole body). Such a connection returns to the pool only once it is ready for
//!   a new request: after the upload, not before.
//!
//! A pooled connection the app has meanwhile closed is noticed at checkout (or when the
//! request cannot be written on it) and the call moves to a fresh connection: a request is
//! sent on a reused connection at most once and retried only if it was never written, or, for
//! an idempotent method without a body, if the app closed the connection before any byte of
//! an answer.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::h1::{self, BodyDecoder, Decoded, H1Error, ResponseHead};
use crate::base::body::{BodyError, ProxyBody, streamed};
use crate::base::headers::Outgoing;

/// How long a connection may sit idle in the pool and still be reused. Staler ones are closed
/// when the pool next touches them (at a checkout or a checkin for their port); with no
/// traffic at all they stay until the app closes them, at most the peak concurrency's worth.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Idle connections kept per port, at most (the rest are closed when handed back).
pub const MAX_IDLE_PER_PORT: usize = 1024;

/// Why a call through the pool failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No connection could be made to the app within the connect timeout.
    #[error("cannot connect to 127.0.0.1:{port}: {source}")]
    Connect {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    /// The connection failed while the call was on it.
    #[error("connection to 127.0.0.1:{port} failed: {source}")]
    Protocol {
        port: u16,
        #[source]
        source: hyper::Error,
    },
    /// The app's answer (to a call without a body) could not be read: the connection failed,
    /// or the answer broke HTTP/1.1 ([`H1Error`]).
    #[error("answer from 127.0.0.1:{port} unreadable: {source}")]
    Answer {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    /// The app did not answer within the time allowed (the response head; the body is not
    /// timed here).
    #[error("127.0.0.1:{port} did not answer in time")]
    TimedOut { port: u16 },
}

/// Keep-alive connections to local ports. Cheap to clone (shared).
#[derive(Clone)]
pub struct LocalPool {
    inner: Arc<Inner>,
}

struct Inner {
    idle: Mutex<Vec<PortIdle>>,
    connect_timeout: Duration,
}

/// The idle connections to one port, most recently used last.
struct PortIdle {
    port: u16,
    conns: VecDeque<Idle<SendRequest<ProxyBody>>>,
    direct: VecDeque<Idle<AppConn>>,
}

struct Idle<C> {
    conn: C,
    since: Instant,
}

fn hyper_list(p: &mut PortIdle) -> &mut VecDeque<Idle<SendRequest<ProxyBody>>> {
    &mut p.conns
}

fn direct_list(p: &mut PortIdle) -> &mut VecDeque<Idle<AppConn>> {
    &mut p.direct
}

/// A connection the pool keeps: whether, as far as it knows, the app has not closed it.
trait Pooled {
    fn is_open(&self) -> bool;
}

impl Pooled for SendRequest<ProxyBody> {
    fn is_open(&self) -> bool {
        !self.is_closed()
    }
}

impl LocalPool {
    /// A pool whose new connections must be established within `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                idle: Mutex::new(Vec::new()),
                connect_timeout,
            }),
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) to `127.0.0.1:port` and returns the response,
    /// its body still streaming; the connection returns to the pool once that body is read.
    /// The response head must come within `timeout` (connecting included).
    pub async fn send(
        &self,
        port: u16,
        req: Request<ProxyBody>,
        timeout: Duration,
    ) -> Result<Response<ProxyBody>, PoolError> {
        self.send_as(port, req, None, timeout).await
    }

    /// [`Self::send`], with the request's fields made what the app gets by `outgoing`: as
    /// they are written for a call without a body, in the map otherwise.
    pub async fn send_as(
        &self,
        port: u16,
        mut req: Request<ProxyBody>,
        outgoing: Option<&Outgoing<'_>>,
        timeout: Duration,
    ) -> Result<Response<ProxyBody>, PoolError> {
        let now = Instant::now();
        let deadline = now + timeout;
        if req.body().is_end_stream() && req.method() != Method::CONNECT {
            let (parts, _) = req.into_parts();
            return self.send_direct(port, &parts, outgoing, now, deadline).await;
        }
        if let Some(outgoing) = outgoing {
            outgoing.apply(req.headers_mut());
        }
        match tokio::time::timeout_at(deadline, self.send_hyper(port, req)).await {
            Ok(response) => Ok(response?.map(streamed)),
            Err(_) => Err(PoolError::TimedOut { port }),
        }
    }

    /// A call with a body, on a hyper connection.
    async fn send_hyper(&self, port: u16, mut req: Request<ProxyBody>) -> Result<Response<PooledBody>, PoolError> {
        let now = Instant::now();
        while let Some(mut sender) = self.checkout(port, now, hyper_list) {
            if sender.ready().await.is_err() {
                continue; // closed by the app while idle
            }
            match sender.try_send_request(req).await {
                Ok(response) => return Ok(self.pooled(port, sender, response)),
                Err(mut error) => match error.take_message() {
                    // Never written: the connection was closing; try the next one.
                    Some(unsent) => req = unsent,
                    None => {
                        return Err(PoolError::Protocol {
                            port,
                            source: error.into_error(),
                        });
                    }
                },
            }
        }
        let mut sender = self.connect(port).await?;
        match sender.send_request(req).await {
            Ok(response) => Ok(self.pooled(port, sender, response)),
            Err(source) => Err(PoolError::Protocol { port, source }),
        }
    }

    /// A call without a body, made here on an [`AppConn`], answered before `deadline`.
    async fn send_direct(
        &self,
        port: u16,
        req: &Parts,
        outgoing: Option<&Outgoing<'_>>,
        now: Instant,
        deadline: Instant,
    ) -> Result<Response<ProxyBody>, PoolError> {
        let answer_error = |source| PoolError::Answer { port, source };
        let retry_unanswered = req.method.is_idempotent();
        while let Some(mut conn) = self.checkout(port, now, direct_list) {
            match conn.call(req, outgoing, deadline).await {
                Ok(head) => return Ok(self.direct_response(port, conn, head)),
                // The app had closed it: the request was not read (unwritten), or, idempotent,
                // may be sent again.
                Err(CallError::Unwritten(_)) => continue,
                Err(CallError::Unanswered(_)) if retry_unanswered => continue,
                Err(CallError::Unanswered(e) | CallError::Failed(e)) => return Err(answer_error(e)),
                Err(CallError::TimedOut) => return Err(PoolError::TimedOut { port }),
            }
        }
        let mut conn = match tokio::time::timeout_at(deadline, self.connect_direct(port)).await {
            Ok(conn) => conn?,
            Err(_) => return Err(PoolError::TimedOut { port }),
        };
        match conn.call(req, outgoing, deadline).await {
            Ok(head) => Ok(self.direct_response(port, conn, head)),
            Err(CallError::Unwritten(e) | CallError::Unanswered(e) | CallError::Failed(e)) => Err(answer_error(e)),
            Err(CallError::TimedOut) => Err(PoolError::TimedOut { port }),
        }
    }

    /// The response of a direct call, its body read from the connection; a body already
    /// complete (none, or all of it read with the head) hands the connection back at once.
    fn direct_response(&self, port: u16, conn: AppConn, head: ResponseHead) -> Response<ProxyBody> {
        let ResponseHead {
            status,
            version,
            headers,
            framing,
            reusable,
        } = head;
        let mut body = AppBody {
            decoder: BodyDecoder::new(framing),
            lease: Some(DirectLease {
                pool: self.clone(),
                port,
                conn,
                reusable,
            }),
            deferred: None,
        };
        body.release_if_done();
        let mut response = Response::new(body.boxed_unsync());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = headers;
        response
    }

    /// Idle connections, per port.
    pub fn idle(&self, port: u16) -> usize {
        self.lock()
            .iter()
            .find(|p| p.port == port)
            .map_or(0, |p| p.conns.len() + p.direct.len())
    }

    fn lock(&self) -> MutexGuard<'_, Vec<PortIdle>> {
        self.inner.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The idle connections to `port`, made on first use.
    fn port_idle(idle: &mut Vec<PortIdle>, port: u16) -> &mut PortIdle {
        match idle.iter().position(|p| p.port == port) {
            Some(i) => &mut idle[i],
            None => {
                idle.push(PortIdle {
                    port,
                    conns: VecDeque::new(),
                    direct: VecDeque::new(),
                });
                idle.last_mut().expect("just pushed")
            }
        }
    }

    /// The most recently used idle connection to `port` in the list `kind` picks that is not
    /// stale and still open.
    fn checkout<C: Pooled>(
        &self,
        port: u16,
        now: Instant,
        kind: fn(&mut PortIdle) -> &mut VecDeque<Idle<C>>,
    ) -> Option<C> {
        let mut idle = self.lock();
        let list = kind(idle.iter_mut().find(|p| p.port == port)?);
        while let Some(idle) = list.pop_back() {
            if now.duration_since(idle.since) < IDLE_TIMEOUT && idle.conn.is_open() {
                return Some(idle.conn);
            }
        }
        None
    }

    /// Hands a connection back to the list `kind` picks, dropping the stale ones on the way
    /// (by age only: checkout looks at the socket).
    fn checkin<C: Pooled>(&self, port: u16, conn: C, kind: fn(&mut PortIdle) -> &mut VecDeque<Idle<C>>) {
        let now = Instant::now();
        let mut idle = self.lock();
        let list = kind(Self::port_idle(&mut idle, port));
        while list
            .front()
            .is_some_and(|c| now.duration_since(c.since) >= IDLE_TIMEOUT)
        {
            list.pop_front();
        }
        if list.len() < MAX_IDLE_PER_PORT {
            list.push_back(Idle { conn, since: now });
        }
    }

    /// A new connection to the app, within the connect timeout, with `TCP_NODELAY`.
    async fn open(&self, port: u16) -> Result<TcpStream, PoolError> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let connect_error = |source| PoolError::Connect { port, source };
        let stream = match tokio::time::timeout(self.inner.connect_timeout, TcpStream::connect(addr)).await {
            Ok(stream) => stream.map_err(connect_error)?,
            Err(_) => return Err(connect_error(std::io::ErrorKind::TimedOut.into())),
        };
        stream.set_nodelay(true).map_err(connect_error)?;
        Ok(stream)
    }

    async fn connect_direct(&self, port: u16) -> Result<AppConn, PoolError> {
        Ok(AppConn::new(self.open(port).await?))
    }

    async fn connect(&self, port: u16) -> Result<SendRequest<ProxyBody>, PoolError> {
        let stream = self.open(port).await?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| PoolError::Protocol { port, source })?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(port, %error, "app connection closed");
            }
        });
        Ok(sender)
    }

    fn pooled(&self, port: u16, sender: SendRequest<ProxyBody>, response: Response<Incoming>) -> Response<PooledBody> {
        let mut lease = Some(Lease {
            pool: self.clone(),
            port,
            sender,
        });
        let (parts, body) = response.into_parts();
        if body.is_end_stream() {
            // Nothing to read (HEAD, 204, 304, Content-Length: 0): reusable now.
            if let Some(lease) = lease.take() {
                lease.release();
            }
        }
        Response::from_parts(parts, PooledBody { body, lease })
    }
}

/// A checked-out connection, handed back by [`Lease::release`] (dropped: closed).
struct Lease {
    pool: LocalPool,
    port: u16,
    sender: SendRequest<ProxyBody>,
}

impl Lease {
    /// Hands the connection back once it can take a new request. The app may answer before it
    /// has read the whole request body (the client still uploading it): until that body is
    /// sent the connection is busy, and a call handed it would wait for the upload (up to
    /// `--backend-timeout`). Such a connection waits aside (at most [`IDLE_TIMEOUT`]) and joins
    /// the pool only once it is ready; the usual case, ready at once, costs nothing more.
    fn release(self) {
        if self.sender.is_ready() {
            self.pool.checkin(self.port, self.sender, hyper_list);
            return;
        }
        if self.sender.is_closed() {
            return;
        }
        let Self { pool, port, mut sender } = self;
        tokio::spawn(async move {
            if let Ok(Ok(())) = tokio::time::timeout(IDLE_TIMEOUT, sender.ready()).await {
                pool.checkin(port, sender, hyper_list);
            }
        });
    }
}

/// The app's response body; reading it to the end returns its connection to the pool.
pub struct PooledBody {
    body: Incoming,
    lease: Option<Lease>,
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        match &frame {
            Some(Ok(_)) if !self.body.is_end_stream() => {}
            // The end (or the last frame): the connection is free again.
            Some(Ok(_)) | None => {
                if let Some(lease) = self.lease.take() {
                    lease.release();
                }
            }
            // Failed mid-body: the connection is not reused.
            Some(Err(_)) => self.lease = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Bytes the first read of a direct connection asks for; each read that fills its space
/// doubles the next, up to [`MOST_READ`] (a large body is read in large pieces).
const FIRST_READ: usize = 8 * 1024;
/// Small chunks of an answer already read are joined into parts of up to this many bytes.
const JOINED_PART: usize = 16 * 1024;
const MOST_READ: usize = 128 * 1024;

/// A connection to the app on which calls without a body are made directly.
struct AppConn {
    /// Each call's deadline: one timer for the connection's life, moved on at every call
    /// (later deadlines cost no timer-wheel work; a timer per call did).
    deadline: Pin<Box<Sleep>>,
    io: AppIo,
}

/// The connection's socket and buffers.
struct AppIo {
    stream: TcpStream,
    /// What the app sent that is not consumed yet.
    buf: BytesMut,
    /// The request head being written (kept: no allocation per call).
    out: Vec<u8>,
    /// Bytes the next read makes room for.
    read_size: usize,
}

/// Why a direct call failed, and whether it may be sent again elsewhere.
enum CallError {
    /// The request could not be written: the app had closed the connection.
    Unwritten(std::io::Error),
    /// Written, but the connection ended before any byte of an answer (a reused connection
    /// the app closed as the request went out, or an app that dropped it).
    Unanswered(std::io::Error),
    /// The answer failed or broke HTTP/1.1.
    Failed(std::io::Error),
    /// No answer before the deadline.
    TimedOut,
}

impl AppConn {
    fn new(stream: TcpStream) -> Self {
        Self {
            deadline: Box::pin(tokio::time::sleep_until(Instant::now())),
            io: AppIo {
                stream,
                buf: BytesMut::new(),
                out: Vec::new(),
                read_size: FIRST_READ,
            },
        }
    }

    /// Writes the request head and reads the final response head, before `deadline`.
    async fn call(
        &mut self,
        req: &Parts,
        outgoing: Option<&Outgoing<'_>>,
        deadline: Instant,
    ) -> Result<ResponseHead, CallError> {
        self.deadline.as_mut().reset(deadline);
        let mut call = pin!(self.io.call(req, outgoing));
        let timer = &mut self.deadline;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = call.as_mut().poll(cx) {
                return Poll::Ready(result);
            }
            ready!(timer.as_mut().poll(cx));
            Poll::Ready(Err(CallError::TimedOut))
        })
        .await
    }
}

impl AppIo {
    /// Whether the app has not closed the connection, as far as the socket has told: a read
    /// attempt that is told "would block" (without a system call when the runtime knows the
    /// socket has nothing to read, the usual case). Bytes the app sent unasked also make the
    /// connection unusable.
    fn probe_open(&self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Writes the request head and reads the final response head.
    async fn call(&mut self, req: &Parts, outgoing: Option<&Outgoing<'_>>) -> Result<ResponseHead, CallError> {
        self.out.clear();
        let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
        h1::encode_request_head(&req.method, target, &req.headers, outgoing, &mut self.out);
        if let Err(error) = self.stream.write_all(&self.out).await {
            return Err(CallError::Unwritten(error));
        }
        let mut progress = h1::HeadProgress::default();
        loop {
            match h1::parse_response_head(&mut self.buf, &req.method, &mut progress) {
                Ok(Some(head)) => return Ok(head),
                Ok(None) => {}
                Err(error) => return Err(CallError::Failed(unreadable(error))),
            }
            let answered = progress.answered() || !self.buf.is_empty();
            let failed = match self.read().await {
                Ok(0) => std::io::ErrorKind::UnexpectedEof.into(),
                Ok(_) => continue,
                Err(error) => error,
            };
            return Err(if answered {
                CallError::Failed(failed)
            } else {
                CallError::Unanswered(failed)
            });
        }
    }

    fn make_room(&mut self) {
        if self.buf.capacity() - self.buf.len() < self.read_size / 2 {
            self.buf.reserve(self.read_size);
        }
    }

    fn grew(&mut self) {
        if self.buf.capacity() == self.buf.len() {
            self.read_size = (self.read_size * 2).min(MOST_READ);
        }
    }

    async fn read(&mut self) -> std::io::Result<usize> {
        self.make_room();
        let n = self.stream.read_buf(&mut self.buf).await?;
        self.grew();
        Ok(n)
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        self.make_room();
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.stream),
            cx,
            &mut self.buf
        ))?;
        self.grew();
        Poll::Ready(Ok(n))
    }
}

impl Pooled for AppConn {
    fn is_open(&self) -> bool {
        self.io.probe_open()
    }
}

fn unreadable(error: H1Error) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, error)
}

/// A checked-out direct connection, handed back once the body is read (dropped: closed).
struct DirectLease {
    pool: LocalPool,
    port: u16,
    conn: AppConn,
    /// Whether the answer allows another call on the connection (HTTP/1.1, no `close`, its
    /// end known from its framing).
    reusable: bool,
}

/// The body of an answer to a direct call, read from its connection as it is polled.
struct AppBody {
    decoder: BodyDecoder,
    /// `None` once the body has ended or failed.
    lease: Option<DirectLease>,
    /// A read error met while joining small chunks, reported on the next poll.
    deferred: Option<std::io::Error>,
}

impl AppBody {
    /// A small chunk joined with the chunks after it that can be read without waiting, up to
    /// [`JOINED_PART`] bytes (copied): an app writing many small chunks at once would
    /// otherwise make a part of each, written to the client one by one, and queued one by one
    /// toward an HTTP/2 client that does not read (h2 bounds the bytes queued, not the frames
    /// holding them). A read error met meanwhile is kept for the next poll.
    fn join_small(&mut self, first: Bytes, cx: &mut Context<'_>) -> Bytes {
        let Some(lease) = self.lease.as_mut() else {
            return first;
        };
        if first.len() >= JOINED_PART {
            return first;
        }
        let mut joined: Option<BytesMut> = None;
        while joined.as_ref().map_or(first.len(), BytesMut::len) < JOINED_PART {
            match self.decoder.decode(&mut lease.conn.io.buf) {
                Ok(Decoded::Data(more)) => {
                    joined
                        .get_or_insert_with(|| {
                            let mut j = BytesMut::with_capacity(JOINED_PART.max(first.len() + more.len()));
                            j.extend_from_slice(&first);
                            j
                        })
                        .extend_from_slice(&more);
                }
                // Whatever is already there, without waiting (an end of stream is met again
                // on the next read).
                Ok(Decoded::NeedMore) => match lease.conn.io.poll_read(cx) {
                    Poll::Ready(Ok(n)) if n > 0 => {}
                    Poll::Ready(Err(error)) => {
                        self.deferred = Some(error);
                        break;
                    }
                    _ => break,
                },
                // The end, or an error: met again on the next poll.
                Ok(Decoded::End) | Err(_) => break,
            }
        }
        joined.map_or(first, BytesMut::freeze)
    }

    /// At the body's end: the connection goes back to the pool if it may carry another call
    /// and holds nothing beyond this answer.
    fn release_if_done(&mut self) {
        if !self.decoder.is_done() {
            return;
        }
        if let Some(lease) = self.lease.take()
            && lease.reusable
            && lease.conn.io.buf.is_empty()
        {
            lease.pool.checkin(lease.port, lease.conn, direct_list);
        }
    }

    fn fail(&mut self, error: std::io::Error) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.lease = None;
        Poll::Ready(Some(Err(BodyError::App(error))))
    }
}

impl Body for AppBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Some(error) = this.deferred.take() {
            return this.fail(error);
        }
        loop {
            let Some(lease) = this.lease.as_mut() else {
                return Poll::Ready(None);
            };
            match this.decoder.decode(&mut lease.conn.io.buf) {
                Ok(Decoded::Data(data)) => {
                    let data = this.join_small(data, cx);
                    this.release_if_done();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::End) => {
                    this.release_if_done();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => {}
                Err(error) => return this.fail(unreadable(error)),
            }
            match ready!(lease.conn.io.poll_read(cx)) {
                Ok(0) => match this.decoder.eof() {
                    // Delimited by the close: the end, and the connection goes.
                    Ok(()) => {
                        this.lease = None;
                        return Poll::Ready(None);
                    }
                    Err(error) => return this.fail(unreadable(error)),
                },
                Ok(_) => {}
                Err(error) => return this.fail(error),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
