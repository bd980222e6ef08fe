//! Keep-alive HTTP/1.1 connections to the local app, by port.
//!
//! The app sits on 127.0.0.1 in the same pod, so this is the hottest path of the sidecar and
//! the simplest possible pool: `hyper::client::conn::http1` connections kept idle in a
//! last-in first-out list per port, each driven by one task for its whole life. A call checks
//! a connection out, sends on it, and hands it back when the response body has been read to
//! its end ([`PooledBody`]); a body dropped half-read closes its connection instead. Unlike a
//! general-purpose client, nothing is spawned and no channel is crossed per call beyond the
//! connection's own.
//!
//! A connection goes back to the pool only once it is ready for a new request: an answer can
//! end before its request body has been sent (an app that answers without reading a slow
//! upload), and such a connection joins the pool when the upload is over, not before.
//!
//! A pooled connection the app has meanwhile closed is noticed at checkout (or when the
//! request cannot be written on it) and the call moves to a fresh connection: a request is
//! sent on a reused connection at most once and retried only if it was never written.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::base::body::ProxyBody;

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
    conns: VecDeque<Idle>,
}

struct Idle {
    sender: SendRequest<ProxyBody>,
    since: Instant,
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
    pub async fn send(&self, port: u16, mut req: Request<ProxyBody>) -> Result<Response<PooledBody>, PoolError> {
        let now = Instant::now();
        while let Some(mut sender) = self.checkout(port, now) {
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

    /// Idle connections, per port.
    pub fn idle(&self, port: u16) -> usize {
        self.lock().iter().find(|p| p.port == port).map_or(0, |p| p.conns.len())
    }

    fn lock(&self) -> MutexGuard<'_, Vec<PortIdle>> {
        self.inner.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used idle connection to `port` that is still open and not stale.
    fn checkout(&self, port: u16, now: Instant) -> Option<SendRequest<ProxyBody>> {
        let mut idle = self.lock();
        let conns = &mut idle.iter_mut().find(|p| p.port == port)?.conns;
        while let Some(conn) = conns.pop_back() {
            if !conn.sender.is_closed() && now.duration_since(conn.since) < IDLE_TIMEOUT {
                return Some(conn.sender);
            }
        }
        None
    }

    /// Hands a connection back, closing the stale ones on the way.
    fn checkin(&self, port: u16, sender: SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock();
        let conns = match idle.iter().position(|p| p.port == port) {
            Some(i) => &mut idle[i].conns,
            None => {
                idle.push(PortIdle {
                    port,
                    conns: VecDeque::new(),
                });
                &mut idle.last_mut().expect("just pushed").conns
            }
        };
        while conns
            .front()
            .is_some_and(|c| now.duration_since(c.since) >= IDLE_TIMEOUT || c.sender.is_closed())
        {
            conns.pop_front();
        }
        if conns.len() < MAX_IDLE_PER_PORT {
            conns.push_back(Idle { sender, since: now });
        }
    }

    async fn connect(&self, port: u16) -> Result<SendRequest<ProxyBody>, PoolError> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let connect_error = |source| PoolError::Connect { port, source };
        let stream = match tokio::time::timeout(self.inner.connect_timeout, TcpStream::connect(addr)).await {
            Ok(stream) => stream.map_err(connect_error)?,
            Err(_) => return Err(connect_error(std::io::ErrorKind::TimedOut.into())),
        };
        stream.set_nodelay(true).map_err(connect_error)?;
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
            self.pool.checkin(self.port, self.sender);
            return;
        }
        if self.sender.is_closed() {
            return;
        }
        let Self { pool, port, mut sender } = self;
        tokio::spawn(async move {
            if let Ok(Ok(())) = tokio::time::timeout(IDLE_TIMEOUT, sender.ready()).await {
                pool.checkin(port, sender);
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
