//! Accepting connections: the accept loops of the plain and TLS listeners, the TLS handshake
//! (the certificate by SNI, a client certificate where a route wants one), the HTTP/1.1 and
//! HTTP/2 connection settings (header size and header read time bounded), the bounds every
//! connection lives within ([`ConnectionLimits`]: the handshake and idle timeouts, the number
//! open at once) and the graceful drain on shutdown. Knows nothing of what a request means:
//! each loop is handed the service that answers a connection's requests, and what it observes
//! goes to the [`ConnectionEvents`] it is handed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{Pin, pin};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderValue;
use http::header::STRICT_TRANSPORT_SECURITY;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use portcullis_policy::ip::client_network;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use super::Connection;
pub use super::answers::ABANDONED_FLOOR;
use super::answers::{Abandoned, Activity, Busy, StreamExec, Tracked};
use super::server_tls::ServerTls;
use crate::base::body::ProxyBody;
use crate::base::engine::Listener;
use crate::base::headers::PeerAddr;

/// The HTTP/1.1 and HTTP/2 settings every listener serves connections with: head buffers
/// bounded by twice `max_header_bytes`, at most `max_concurrent_streams` requests at once on
/// one HTTP/2 connection. The time allowed for an HTTP/1.1 head is kept by the connection's
/// own timer ([`ConnectionLimits::header_read_timeout`]), not by one hyper would arm anew for
/// every request.
pub fn connection_builder(max_header_bytes: u32, max_concurrent_streams: u32) -> auto::Builder<StreamExec> {
    let mut builder = auto::Builder::new(StreamExec);
    builder
        .http1()
        .keep_alive(true)
        // An answer's head and body in one buffer, one write: cheaper than a vectored write
        // for the small answers that are most of an API's (the buffer is bounded by
        // `max_buf_size`, so a large body is still written a part at a time).
        .writev(false)
        .header_read_timeout(None)
        // Heads up to the limit are answered by the request path (431 with a JSON body); the
        // connection's buffer stops anything far beyond it (431 from hyper itself).
        .max_buf_size(2 * max_header_bytes as usize);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(2 * max_header_bytes)
        .max_concurrent_streams(max_concurrent_streams)
        // What a stream's answer may have queued toward the client beyond what the socket
        // took (h2's default is 400 KiB per stream: 40 MiB for one connection that opens
        // its windows wide and never reads).
        .max_send_buf_size(H2_SEND_BUFFER)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// Bytes one HTTP/2 stream's answer may queue toward a client that does not take them.
pub const H2_SEND_BUFFER: usize = 64 * 1024;

/// The bounds of one listener's connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time from the accept until the client has shown which HTTP it speaks (the HTTP/2
    /// preface, or the first bytes of an HTTP/1.1 request), the TLS handshake included on the
    /// TLS listener; else the connection is closed.
    pub handshake_timeout: Duration,
    /// A connection with no request in progress for this long is closed (gracefully: HTTP/2
    /// gets a GOAWAY first).
    pub idle_timeout: Duration,
    /// An HTTP/1.1 connection waiting for a request (from its start, or from the end of the
    /// previous answer) has this long to send the whole head; else it is closed. The idle
    /// timeout still applies when it is shorter.
    pub header_read_timeout: Duration,
    /// Most connections open at once; beyond, a new connection is closed as soon as it is
    /// accepted.
    pub max_connections: usize,
    /// Most connections one client address may hold open at once (`None`: no share): so
    /// that one client cannot take a small listener's whole budget (the admin listener's).
    pub max_per_client: Option<usize>,
}

/// Why a connection was closed by a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// No HTTP within the handshake timeout (TLS handshake, protocol detection).
    Handshake,
    /// No request in progress for the idle timeout.
    Idle,
    /// An answer in progress the client took nothing of for the idle timeout (HTTP/1.1: its
    /// connection is closed; HTTP/2: its stream is reset, the connection goes on).
    Send,
}

impl Timeout {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Handshake => "handshake",
            Self::Idle => "idle",
            Self::Send => "send",
        }
    }
}

/// What a listener reports about its connections (the wiring hands it the metrics).
pub trait ConnectionEvents: Send + Sync + 'static {
    /// A connection was accepted within the limit.
    fn opened(&self);
    /// An accepted connection is closed.
    fn closed(&self);
    /// A connection was closed at once: the listener was full.
    fn refused(&self);
    /// A connection was closed by a timeout.
    fn timed_out(&self, why: Timeout);
    /// An HTTP/2 connection was closed because its client reset most of its requests after
    /// they were forwarded ([`ABANDONED_FLOOR`]).
    fn abandoned_too_often(&self);
}

/// Everything an accept loop serves its connections with.
#[derive(Clone)]
pub struct Serving {
    /// The HTTP/1.1 and HTTP/2 settings ([`connection_builder`]).
    pub builder: auto::Builder<StreamExec>,
    pub limits: ConnectionLimits,
    pub events: Arc<dyn ConnectionEvents>,
    /// Turns true on shutdown: stop accepting, close connections once idle.
    pub stopped: watch::Receiver<bool>,
    /// On shutdown, time allowed for open requests to finish.
    pub drain: Duration,
}

/// After a graceful close for idleness, how long a connection with nothing in progress may
/// take to go (a client that never acknowledges an HTTP/2 GOAWAY).
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What serves the requests of a connection: a hyper service whose every outcome is an
/// answer (errors included), sendable to the connection's task.
pub trait HttpService:
    hyper::service::Service<
        http::Request<hyper::body::Incoming>,
        Response = http::Response<ProxyBody>,
        Error = Infallible,
        Future: Send + 'static,
    > + Send
    + 'static
{
}

impl<S> HttpService for S where
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<ProxyBody>,
            Error = Infallible,
            Future: Send + 'static,
        > + Send
        + 'static
{
}

/// Accepts connections until `stopped` turns true, then waits up to `drain` for the open
/// connections to finish their requests (each told to close once idle).
pub async fn accept_loop<F, S>(listener: TcpListener, serving: Serving, make_service: F)
where
    F: Fn(SocketAddr) -> S,
    S: HttpService,
{
    let gate = Gate::new(&serving);
    let mut stopped = serving.stopped.clone();
    while let Some((stream, peer)) = next_connection(&listener, &mut stopped).await {
        let Some(slot) = gate.admit(&serving, peer.ip()) else {
            drop(stream);
            continue;
        };
        let service = make_service(peer);
        let serving = serving.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + serving.limits.handshake_timeout;
            let mut stream = stream;
            let Some(prefix) = first_bytes(&mut stream, deadline, peer, &serving).await else {
                return;
            };
            serve(Prefixed::new(stream, prefix), service, peer, &serving, None).await;
            drop(slot);
        });
    }
    drop(listener);
    gate.drain(&serving).await;
}

/// The next accepted connection (with `TCP_NODELAY`), or `None` once `stopped` changes. A
/// failed accept (typically EMFILE) backs off instead of spinning.
async fn next_connection(
    listener: &TcpListener,
    stopped: &mut watch::Receiver<bool>,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    loop {
        if *stopped.borrow_and_update() {
            return None;
        }
        let accepted = tokio::select! {
            _ = stopped.changed() => return None,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "cannot set TCP_NODELAY");
                }
                return Some((stream, peer));
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The connections a listener may have open at once.
struct Gate {
    permits: Arc<Semaphore>,
    max: u32,
    /// Open connections by client network, when clients have a share.
    clients: Option<ClientShares>,
}

impl Gate {
    fn new(serving: &Serving) -> Self {
        let max = serving
            .limits
            .max_connections
            .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max: max as u32,
            clients: serving.limits.max_per_client.map(ClientShares::new),
        }
    }

    /// A place for one more connection from `peer`, or `None` (counted) when the listener
    /// is full or the client holds its share.
    fn admit(&self, serving: &Serving, peer: IpAddr) -> Option<Slot> {
        let client = match &self.clients {
            None => None,
            Some(shares) => match shares.take(peer) {
                Ok(share) => Some(share),
                Err(share) => {
                    serving.events.refused();
                    tracing::debug!(share, %peer, "connection refused: the client holds its share");
                    return None;
                }
            },
        };
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                serving.events.opened();
                Some(Slot {
                    _permit: permit,
                    _client: client,
                    events: serving.events.clone(),
                })
            }
            Err(_) => {
                serving.events.refused();
                tracing::debug!(max = self.max, "connection refused: the listener is full");
                None
            }
        }
    }

    /// Waits (up to the drain timeout) until every connection has closed.
    async fn drain(&self, serving: &Serving) {
        if tokio::time::timeout(serving.drain, self.permits.acquire_many(self.max))
            .await
            .is_err()
        {
            let drain = serving.drain;
            tracing::warn!(?drain, "connections still open after the drain timeout: closing them");
        }
    }
}

/// One open connection's place; gives it back (and says so) when dropped.
struct Slot {
    _permit: OwnedSemaphorePermit,
    _client: Option<ClientShare>,
    events: Arc<dyn ConnectionEvents>,
}

/// What each client network ([`client_network`]: an address, IPv6 a /64) holds open, against
/// the share each may hold. Entries live only while they hold a connection: bounded by the
/// listener's budget.
struct ClientShares {
    share: usize,
    open: ClientCounts,
}

type ClientCounts = Arc<Mutex<HashMap<IpAddr, usize>>>;

impl ClientShares {
    fn new(share: usize) -> Self {
        Self {
            share: share.max(1),
            open: Arc::default(),
        }
    }

    /// One more connection for `peer`'s network, or `Err(share)` when it holds its share.
    fn take(&self, peer: IpAddr) -> Result<ClientShare, usize> {
        let network = client_network(peer);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let held = open.entry(network).or_insert(0);
        if *held >= self.share {
            return Err(self.share);
        }
        *held += 1;
        Ok(ClientShare {
            network,
            clients: Arc::clone(&self.open),
        })
    }
}

/// One connection of a client's share; given back when dropped.
struct ClientShare {
    network: IpAddr,
    clients: ClientCounts,
}

impl Drop for ClientShare {
    fn drop(&mut self) {
        let mut open = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = open.get_mut(&self.network) {
            *held -= 1;
            if *held == 0 {
                open.remove(&self.network);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.events.closed();
    }
}

/// The HTTP/2 connection preface, which tells HTTP/2 (prior knowledge) from HTTP/1.1.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The first bytes of a connection, read until they tell HTTP/2 from HTTP/1.1 (all 24 bytes
/// of the preface, or the first one that differs), before `deadline`. `None`: the client
/// left or was too slow (counted) and the connection is to be closed.
async fn first_bytes<S: AsyncRead + Unpin>(
    stream: &mut S,
    deadline: Instant,
    peer: SocketAddr,
    serving: &Serving,
) -> Option<Prefix> {
    let read = async {
        let mut prefix = Prefix {
            bytes: [0; 24],
            len: 0,
            pos: 0,
        };
        loop {
            let n = stream.read(&mut prefix.bytes[prefix.len..]).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            prefix.len += n;
            if prefix.len == H2_PREFACE.len() || prefix.bytes[..prefix.len] != H2_PREFACE[..prefix.len] {
                return Ok::<_, io::Error>(prefix);
            }
        }
    };
    match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(prefix)) => Some(prefix),
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "connection closed before its first request");
            None
        }
        Err(_) => {
            serving.events.timed_out(Timeout::Handshake);
            tracing::debug!(%peer, "no HTTP within the handshake timeout: closing");
            None
        }
    }
}

/// Whether a connection's verification no longer holds (polled every [`STALE_CHECK`]).
type Stale = Box<dyn Fn() -> bool + Send>;

/// How often a connection with a client certificate checks that its CAs are still in force.
const STALE_CHECK: Duration = Duration::from_secs(1);

/// Serves HTTP on `io` until the connection ends: closes it once it has had no request in
/// progress for the idle timeout (an HTTP/1.1 connection: nor a whole head within the header
/// read timeout), and gracefully on shutdown.
async fn serve<I, S>(io: Prefixed<I>, service: S, peer: SocketAddr, serving: &Serving, stale: Option<Stale>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService,
{
    let http2 = io.prefix.is_h2();
    let activity = Arc::new(Activity::new());
    // The shutdown signal and the timers are looked at only when one of them woke the task,
    // not on each of the connection's own wake-ups (every read and write).
    let control = Arc::new(ControlWake::default());
    let service = {
        let activity = activity.clone();
        let control = control.clone();
        service_fn(move |req| {
            let busy = Busy::start(&activity);
            let response = service.call(req);
            // HTTP/2: a stream the client resets before the end of its answer (the app may be
            // at work on it still).
            let abandoned = http2.then(|| Abandoned::new(&activity, &control));
            async move {
                let response = response.await?;
                Ok::<_, Infallible>(response.map(|body| Tracked::new(body, busy, abandoned)))
            }
        })
    };
    let mut stopped = serving.stopped.clone();
    let mut closing = *stopped.borrow_and_update();
    let conn = serving.builder.serve_connection(TokioIo::new(io), service);
    let mut conn = pin!(conn);
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    // How long the connection may wait for a request: HTTP/1.1 heads are bound by the header
    // read timeout too (HTTP/2 has its own flow: its streams' heads come in frames).
    let idle = if http2 {
        serving.limits.idle_timeout
    } else {
        serving.limits.idle_timeout.min(serving.limits.header_read_timeout)
    };
    // How long answers in progress may all wait for the client without any being taken.
    let stall = serving.limits.idle_timeout;
    // The answers' progress at the last look, and since when it has been that.
    let mut seen_progress: Option<(u64, Instant)> = None;
    // Asleep until the connection may have become idle; after a graceful close, until it may
    // be dropped.
    let timer = tokio::time::sleep(idle);
    let mut timer = pin!(timer);
    let mut stale_check = tokio::time::interval(STALE_CHECK);
    stale_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = stopped.changed();
    let mut stop = pin!(stop);
    control.set_due();
    let control_waker = std::task::Waker::from(control.clone());
    let checks_stale = stale.is_some();
    loop {
        let event = std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                return Poll::Ready(Event::Ended(result));
            }
            if !control.take_due(cx.waker()) {
                return Poll::Pending;
            }
            let mut cx = Context::from_waker(&control_waker);
            if !closing && checks_stale && stale_check.poll_tick(&mut cx).is_ready() {
                return Poll::Ready(Event::StaleCheck);
            }
            if !closing && stop.as_mut().poll(&mut cx).is_ready() {
                return Poll::Ready(Event::Stop);
            }
            if !closing && activity.abandons_too_many() {
                return Poll::Ready(Event::Abandoned);
            }
            if timer.as_mut().poll(&mut cx).is_ready() {
                return Poll::Ready(Event::Timer);
            }
            Poll::Pending
        })
        .await;
        // Whatever happened, the control branches are looked at again on the next poll.
        control.set_due();
        match event {
            Event::StaleCheck => {
                if stale.as_ref().is_some_and(|stale| stale()) {
                    tracing::debug!(%peer, "client certificate verified under a replaced configuration: closing");
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                    timer.as_mut().reset(Instant::now() + CLOSE_GRACE);
                }
            }
            Event::Ended(result) => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            Event::Abandoned => {
                // Closed at once: a graceful close would wait for the client to acknowledge
                // its GOAWAY, and take new streams until then.
                serving.events.abandoned_too_often();
                tracing::debug!(%peer, "client reset most of its requests after they were forwarded: closing");
                return;
            }
            Event::Stop => {
                closing = true;
                conn.as_mut().graceful_shutdown();
                timer.as_mut().reset(Instant::now() + CLOSE_GRACE);
            }
            Event::Timer => {
                let now = Instant::now();
                if activity.busy() {
                    if http2 {
                        // Each stream on its own: others completing (or waiting for the app)
                        // do not keep a stalled one.
                        if !closing {
                            for _ in 0..activity.reset_stalled_streams(now, stall) {
                                serving.events.timed_out(Timeout::Send);
                                tracing::debug!(%peer, ?stall, "client took nothing of an answer: stream reset");
                            }
                        }
                    } else {
                        // The answer in progress waiting for the client to take it, and
                        // nothing taken since the last look: a client that does not read
                        // would hold the connection forever.
                        let progress = activity.progress();
                        match seen_progress {
                            Some((seen, since)) if seen == progress => {
                                if !closing && activity.all_wait_for_client() && now - since >= stall {
                                    serving.events.timed_out(Timeout::Send);
                                    tracing::debug!(%peer, ?stall, "client took nothing of its answer: closing");
                                    return;
                                }
                            }
                            _ => seen_progress = Some((progress, now)),
                        }
                    }
                    // Look again once what is in progress may have ended (at the idle pace:
                    // for HTTP/1.1 the header read timeout runs from the end of the answer).
                    timer.as_mut().reset(now + if closing { CLOSE_GRACE } else { idle });
                } else if closing {
                    // Told to close, nothing in progress, and still not gone: drop it.
                    return;
                } else {
                    let idle_until = activity.last_end() + idle;
                    if idle_until > now {
                        timer.as_mut().reset(idle_until);
                    } else {
                        serving.events.timed_out(Timeout::Idle);
                        tracing::debug!(%peer, ?idle, "idle connection: closing");
                        if !http2 {
                            // Nothing in progress: nothing to finish, and a head begun is
                            // not waited for.
                            return;
                        }
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                        timer.as_mut().reset(now + CLOSE_GRACE);
                    }
                }
            }
        }
    }
}

/// What woke a connection's serving loop.
enum Event<E> {
    /// The connection ended (closed, or failed).
    Ended(Result<(), E>),
    /// Time to check that a client certificate's CAs are still in force.
    StaleCheck,
    /// The client reset most of its HTTP/2 requests after they were forwarded.
    Abandoned,
    /// The sidecar is shutting down.
    Stop,
    /// The idle (or close-grace) timer fired.
    Timer,
}

/// The waker of a connection's control branches (shutdown, timers): it notes that they are
/// due a look, then wakes the connection's task.
#[derive(Default)]
pub(super) struct ControlWake {
    due: std::sync::atomic::AtomicBool,
    task: Mutex<Option<std::task::Waker>>,
}

impl ControlWake {
    /// Whether the control branches are due a look (then no longer), keeping `task` as the
    /// waker to wake when they are due again.
    fn take_due(&self, task: &std::task::Waker) -> bool {
        if !self.due.swap(false, Ordering::AcqRel) {
            return false;
        }
        let mut stored = self.task.lock().unwrap_or_else(|p| p.into_inner());
        if !stored.as_ref().is_some_and(|w| w.will_wake(task)) {
            *stored = Some(task.clone());
        }
        true
    }

    pub(super) fn set_due(&self) {
        self.due.store(true, Ordering::Release);
    }
}

impl std::task::Wake for ControlWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.set_due();
        if let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            task.wake_by_ref();
        }
    }
}

/// The bytes [`first_bytes`] read, given back to HTTP first.
struct Prefix {
    bytes: [u8; 24],
    len: usize,
    pos: usize,
}

impl Prefix {
    /// Whether the connection speaks HTTP/2 (it began with the whole preface).
    fn is_h2(&self) -> bool {
        self.bytes[..self.len] == H2_PREFACE[..]
    }
}

/// A stream whose first bytes were read already: reads give them back first.
struct Prefixed<S> {
    prefix: Prefix,
    stream: S,
}

impl<S> Prefixed<S> {
    fn new(stream: S, prefix: Prefix) -> Self {
        Self { prefix, stream }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let prefix = &mut self.prefix;
        if prefix.pos < prefix.len {
            let n = (prefix.len - prefix.pos).min(buf.remaining());
            buf.put_slice(&prefix.bytes[prefix.pos..prefix.pos + n]);
            prefix.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// `Strict-Transport-Security` on every response over TLS.
const HSTS: HeaderValue = HeaderValue::from_static("max-age=31536000");

/// The TLS listener: like [`accept_loop`], with a TLS handshake before HTTP (within the
/// handshake timeout, which covers both), and `Strict-Transport-Security` on every response.
/// The handshake uses the TLS configuration `current_tls` gives when it starts; the
/// connection keeps it across reloads. `make_service` gets the connection the handshake
/// described.
pub async fn tls_accept_loop<T, F, S>(listener: TcpListener, serving: Serving, current_tls: T, make_service: F)
where
    T: Fn() -> Option<Arc<ServerTls>> + Send + Sync + 'static,
    F: Fn(Connection) -> S + Send + Sync + 'static,
    S: HttpService,
{
    let gate = Gate::new(&serving);
    let mut stopped = serving.stopped.clone();
    let current_tls = Arc::new(current_tls);
    let make_service = Arc::new(make_service);
    while let Some((stream, peer)) = next_connection(&listener, &mut stopped).await {
        let Some(slot) = gate.admit(&serving, peer.ip()) else {
            drop(stream);
            continue;
        };
        let serving = serving.clone();
        let current_tls = current_tls.clone();
        let make_service = make_service.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + serving.limits.handshake_timeout;
            let (mut stream, conn, used) =
                match tokio::time::timeout_at(deadline, tls_handshake(&*current_tls, stream, peer)).await {
                    Ok(Ok(done)) => done,
                    Ok(Err(HandshakeError::ClientCertificate(error))) => {
                        // A client authentication failure: worth an operational line (there
                        // is no request, hence no audit line).
                        tracing::info!(%peer, %error, "TLS client certificate refused");
                        return;
                    }
                    Ok(Err(HandshakeError::Other(error))) => {
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        serving.events.timed_out(Timeout::Handshake);
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let Some(prefix) = first_bytes(&mut stream, deadline, peer, &serving).await else {
                return;
            };
            // A client certificate was verified against the CAs in force at the handshake: once
            // a reload replaces them, the connection is closed (gracefully, when idle) so that
            // the next request is verified against the new ones.
            let stale: Option<Stale> = conn.client_cert.is_some().then(|| {
                let current_tls = current_tls.clone();
                Box::new(move || !current_tls().is_some_and(|now| Arc::ptr_eq(&now, &used))) as Stale
            });
            let inner = make_service(conn);
            let service = service_fn(move |req| {
                let response = inner.call(req);
                async move {
                    let mut resp = response.await?;
                    resp.headers_mut().insert(STRICT_TRANSPORT_SECURITY, HSTS);
                    Ok::<_, Infallible>(resp)
                }
            });
            serve(Prefixed::new(stream, prefix), service, peer, &serving, stale).await;
            drop(slot);
        });
    }
    drop(listener);
    gate.drain(&serving).await;
}

/// Reads the ClientHello, picks the configuration for its SNI name (asking for a client
/// certificate where a route wants one), completes the handshake and describes the
/// connection.
async fn tls_handshake(
    current_tls: &(dyn Fn() -> Option<Arc<ServerTls>> + Send + Sync),
    stream: TcpStream,
    peer: SocketAddr,
) -> Result<(tokio_rustls::server::TlsStream<TcpStream>, Connection, Arc<ServerTls>), HandshakeError> {
    let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
        .await
        .map_err(|e| HandshakeError::Other(format!("reading the ClientHello: {e}")))?;
    let Some(tls) = current_tls() else {
        return Err(HandshakeError::Other("no route has a TLS certificate".into()));
    };
    let config = tls.config_for(start.client_hello().server_name());
    let stream = start.into_stream(config).await.map_err(|e| {
        let client_cert = matches!(
            e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()),
            Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
        );
        if client_cert {
            HandshakeError::ClientCertificate(e.to_string())
        } else {
            HandshakeError::Other(e.to_string())
        }
    })?;
    let client_cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| tls.peer_certificate(chain))
        .map(Arc::new);
    let conn = Connection {
        peer,
        peer_addr: PeerAddr::new(peer.ip()),
        listener: Listener::Inbound,
        tls: true,
        client_cert,
    };
    Ok((stream, conn, tls))
}

/// Why a TLS handshake did not complete.
enum HandshakeError {
    /// The client's certificate was refused (no profile CA verifies it).
    ClientCertificate(String),
    Other(String),
}

fn local(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Logs where a listener listens.
pub fn log_listening(listener: &TcpListener, name: &'static str) {
    tracing::info!(addr = %local(listener), listener = name, "listening");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_network_holds_at_most_its_share_and_gets_it_back() {
        let shares = ClientShares::new(2);
        let held: Vec<ClientShare> = ["2001:db8:0:7::1", "2001:db8:0:7:ffff::2"]
            .into_iter()
            .map(|a| shares.take(ip(a)).unwrap())
            .collect();
        // A third address of the same /64 is the same client; another /64 and IPv4 are not.
        assert_eq!(shares.take(ip("2001:db8:0:7::3")).err(), Some(2));
        let other = shares.take(ip("2001:db8:0:8::1")).unwrap();
        let v4 = [ip("10.0.0.1"), ip("::ffff:10.0.0.1")].map(|a| shares.take(a).unwrap());
        assert_eq!(shares.take(ip("10.0.0.1")).err(), Some(2));
        assert!(shares.take(ip("10.0.0.2")).is_ok());
        // Given back when dropped, and forgotten once a network holds nothing.
        drop(held);
        assert!(shares.take(ip("2001:db8:0:7::9")).is_ok());
        drop((other, v4));
        assert!(shares.open.lock().unwrap().is_empty());
    }
}
