//! The one body type every response of the sidecar carries, the small local answers made of
//! it, and the memory budget of request bodies held in memory. Uses nothing of the crate.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use serde::Serialize;

/// Why a streamed body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The peer's connection failed.
    #[error(transparent)]
    Peer(#[from] hyper::Error),
    /// The client stopped sending its request body.
    #[error("{0}")]
    Stalled(BodyStalled),
    /// The app's answer failed, or broke HTTP/1.1, while its body was read.
    #[error("the app's answer failed: {0}")]
    App(#[source] std::io::Error),
}

/// A streamed body: a request's body on its way to the app, the backend's body passed
/// through, or a small local answer.
pub type ProxyBody = UnsyncBoxBody<Bytes, BodyError>;

/// A body holding `bytes`, sent at once.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// `body` (a peer's, failing with [`hyper::Error`]) as a [`ProxyBody`].
pub fn streamed<B>(body: B) -> ProxyBody
where
    B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + 'static,
{
    body.map_err(BodyError::Peer).boxed_unsync()
}

/// The client sent nothing of its request body for `--body-read-timeout`: answered 408, or
/// the upload toward the app is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the client sent no part of the request body for {0:?}")]
pub struct BodyStalled(pub Duration);

/// Whether `error`, or an error it was caused by, is a stalled request body.
pub fn is_stalled(error: &(dyn std::error::Error + 'static)) -> bool {
    any_cause(error, |e| {
        e.is::<BodyStalled>() || matches!(e.downcast_ref::<BodyError>(), Some(BodyError::Stalled(_)))
    })
}

/// Whether `error`, or an error it was caused by, is one `is` holds for.
fn any_cause(
    error: &(dyn std::error::Error + 'static),
    is: impl Fn(&(dyn std::error::Error + 'static)) -> bool,
) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if is(e) {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Whether `error`, or an error it was caused by, is the client's connection ending before
/// the request body did, or its HTTP/2 stream reset by the client (the client left).
pub fn is_client_gone(error: &(dyn std::error::Error + 'static)) -> bool {
    any_cause(error, |e| match e.downcast_ref::<BodyError>() {
        Some(BodyError::Peer(peer)) => {
            peer.is_incomplete_message() || peer.is_canceled() || peer.is_closed() || any_cause(peer, connection_ended)
        }
        _ => false,
    })
}

/// Whether an error is the client's connection ending (closed or reset), or its HTTP/2
/// stream reset by the client.
fn connection_ended(error: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(h2) = error.downcast_ref::<h2::Error>() {
        return h2.is_reset() && h2.is_remote();
    }
    error.downcast_ref::<std::io::Error>().is_some_and(|io| {
        matches!(
            io.kind(),
            std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
        )
    })
}

/// A request body that must keep coming: when `timeout` passes without a frame from the
/// client, it fails with [`BodyStalled`]. The timer exists only once the client made the
/// body wait (a body that arrives with its head costs nothing).
pub fn paced<B>(body: B, timeout: Duration) -> ProxyBody
where
    B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + Unpin + 'static,
{
    if body.is_end_stream() {
        // Nothing to wait for (a GET, mostly): an empty body, boxed without allocating.
        return http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync();
    }
    Paced {
        inner: body,
        timeout,
        timer: None,
        armed: false,
    }
    .boxed_unsync()
}

struct Paced<B> {
    inner: B,
    timeout: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether `timer` runs from the last frame (else it must be restarted before waiting).
    armed: bool,
}

impl<B> hyper::body::Body for Paced<B>
where
    B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Unpin,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.armed = false;
            return Poll::Ready(frame.map(|f| f.map_err(BodyError::Peer)));
        }
        if !this.armed {
            let deadline = tokio::time::Instant::now() + this.timeout;
            match &mut this.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            this.armed = true;
        }
        if let Some(timer) = &mut this.timer {
            ready!(timer.as_mut().poll(cx));
        }
        Poll::Ready(Some(Err(BodyError::Stalled(BodyStalled(this.timeout)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// An empty body.
pub fn empty() -> ProxyBody {
    full(Bytes::new())
}

/// A JSON response.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<ProxyBody> {
    let mut body = serde_json::to_vec(value).unwrap_or_else(|_| b"{\"error\":\"internal\"}".to_vec());
    body.push(b'\n');
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Bytes of request bodies held in memory right now (signed-digest checks, bodies signed or
/// kept for a retry toward an origin), across every connection.
static BUFFERED: AtomicUsize = AtomicUsize::new(0);
/// Most bytes [`BUFFERED`] may reach: `--body-buffer-budget`.
static BUDGET: AtomicUsize = AtomicUsize::new(DEFAULT_BODY_BUFFER_BUDGET);

/// Default of `--body-buffer-budget`: 32 MiB.
pub const DEFAULT_BODY_BUFFER_BUDGET: usize = 32 << 20;

/// Sets the memory all buffered request bodies may take together.
pub fn set_body_buffer_budget(bytes: usize) {
    BUDGET.store(bytes, Ordering::Relaxed);
}

/// The budget is spent: the body cannot be held now (answered 503, retry later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("request bodies held in memory are at their budget")]
pub struct OverBudget;

/// A share of the body budget, given back when dropped.
#[derive(Debug, Default)]
pub struct BufferLease(usize);

impl BufferLease {
    /// Takes `n` more bytes of the budget, or none when that would go beyond it.
    pub fn grow(&mut self, n: usize) -> Result<(), OverBudget> {
        let budget = BUDGET.load(Ordering::Relaxed);
        let before = BUFFERED.fetch_add(n, Ordering::AcqRel);
        if before.saturating_add(n) > budget {
            BUFFERED.fetch_sub(n, Ordering::AcqRel);
            return Err(OverBudget);
        }
        self.0 += n;
        Ok(())
    }
}

impl Drop for BufferLease {
    fn drop(&mut self) {
        if self.0 != 0 {
            BUFFERED.fetch_sub(self.0, Ordering::AcqRel);
        }
    }
}

/// Bytes of request bodies held in memory right now.
pub fn buffered_bytes() -> usize {
    BUFFERED.load(Ordering::Relaxed)
}

/// A body holding `bytes` that keeps `lease` until it is dropped (sent or abandoned).
pub fn leased(bytes: Bytes, lease: BufferLease) -> ProxyBody {
    Leased {
        inner: Full::new(bytes),
        _lease: lease,
    }
    .boxed_unsync()
}

struct Leased {
    inner: Full<Bytes>,
    _lease: BufferLease,
}

impl hyper::body::Body for Leased {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BodyError>>> {
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map(|frame| frame.map(|f| f.map_err(|never| match never {})))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error a request body gives when its HTTP/2 client resets the stream (here: the
    /// client's upload fails, which makes hyper's client reset it) is the client gone; one
    /// the client did not cause is not.
    #[tokio::test]
    async fn a_stream_the_client_resets_is_the_client_gone() {
        use http_body_util::StreamBody;
        use hyper::body::Frame;
        use hyper_util::rt::{TokioExecutor, TokioIo};

        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<bool>();
        let seen_tx = std::sync::Mutex::new(Some(seen_tx));
        let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let seen_tx = seen_tx.lock().unwrap().take();
            async move {
                let error = req.into_body().collect().await.expect_err("the upload was reset");
                if let Some(tx) = seen_tx {
                    let _ = tx.send(is_client_gone(&BodyError::Peer(error)));
                }
                Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Empty::<Bytes>::new()))
            }
        });
        tokio::spawn(
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(server_io), service),
        );
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client_io))
            .await
            .unwrap();
        tokio::spawn(conn);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(2);
        let upload = StreamBody::new(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        let call = tokio::spawn(sender.send_request(hyper::Request::post("http://x/").body(upload).unwrap()));
        tx.send(Ok(Frame::data(Bytes::from_static(b"half")))).await.unwrap();
        tx.send(Err(std::io::Error::other("the client gives up")))
            .await
            .unwrap();
        let gone = tokio::time::timeout(Duration::from_secs(5), seen_rx).await;
        assert_eq!(gone.map(Result::ok), Ok(Some(true)));
        call.abort();

        // Not the client's doing: a body that stalled, an app's failure.
        assert!(!is_client_gone(&BodyError::Stalled(BodyStalled(Duration::from_secs(
            1
        )))));
        assert!(!is_client_gone(&BodyError::App(std::io::Error::other("app"))));
    }

    #[test]
    fn leases_stay_within_the_budget_and_give_back_on_drop() {
        // One test owns the process-wide budget.
        set_body_buffer_budget(1000);
        let base = buffered_bytes();
        let mut a = BufferLease::default();
        a.grow(600).unwrap();
        let mut b = BufferLease::default();
        assert_eq!(b.grow(500), Err(OverBudget));
        b.grow(400).unwrap();
        assert_eq!(buffered_bytes(), base + 1000);
        drop(a);
        b.grow(500).unwrap();
        let body = leased(Bytes::from_static(b"x"), b);
        assert_eq!(buffered_bytes(), base + 900);
        drop(body);
        assert_eq!(buffered_bytes(), base);
        set_body_buffer_budget(DEFAULT_BODY_BUFFER_BUDGET);
    }
}
