//! What a connection's answers are doing, for its serving loop to judge: requests in progress
//! and when the last one ended (the idle timeout), and which answers wait for the client to
//! take them (the send stall). An HTTP/1.1 connection has one answer at a time, judged
//! through counters on the connection; each HTTP/2 stream is judged on its own
//! ([`StreamWatch`]), so that a client cannot keep one answer stalled by completing others
//! on the same connection, and a stalled stream is reset without the rest.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use atomic_waker::AtomicWaker;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::accept::ControlWake;

/// What a connection is doing: requests in progress (from the call to the end of the
/// response body) and when the last one ended.
pub(super) struct Activity {
    /// The connection's start: the origin of `last_end`.
    start: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `start` to the end of the last request.
    last_end: AtomicU64,
    /// HTTP/1.1: answers in progress that wait for the client to take them (their head, or
    /// their last part, not yet taken): see [`Tracked`].
    for_client: AtomicUsize,
    /// HTTP/1.1: moves whenever an answer makes progress (a part taken, or a wait for the app).
    progress: AtomicU64,
    /// HTTP/2: the streams answering, each with what the serving loop saw of it last.
    streams: Mutex<Vec<Watched>>,
    /// HTTP/2: requests begun (counted by [`Abandoned`]: HTTP/1.1 needs no count).
    started: AtomicU64,
    /// HTTP/2: requests the client reset before the end of their answer.
    abandoned: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Self {
        Self {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_end: AtomicU64::new(0),
            for_client: AtomicUsize::new(0),
            progress: AtomicU64::new(0),
            streams: Mutex::new(Vec::new()),
            started: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
        }
    }

    pub(super) fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// Whether every request in progress is an answer waiting for the client (none is being
    /// handled, none waits for the app). HTTP/1.1 only.
    pub(super) fn all_wait_for_client(&self) -> bool {
        self.for_client.load(Ordering::Acquire) == self.in_flight.load(Ordering::Acquire)
    }

    /// HTTP/1.1 only.
    pub(super) fn progress(&self) -> u64 {
        self.progress.load(Ordering::Acquire)
    }

    /// Whether the client reset at least [`ABANDONED_FLOOR`] requests before the end of their
    /// answer, and more than half of all it made: each reset frees a stream for another
    /// request while the app may still be at work on the last (`--max-concurrent-streams`
    /// would bound nothing).
    pub(super) fn abandons_too_many(&self) -> bool {
        let abandoned = self.abandoned.load(Ordering::Acquire);
        abandoned >= ABANDONED_FLOOR && abandoned * 2 > self.started.load(Ordering::Acquire)
    }

    /// When the last request ended (the connection's start if none did).
    pub(super) fn last_end(&self) -> Instant {
        self.start + Duration::from_millis(self.last_end.load(Ordering::Acquire))
    }

    /// Resets the HTTP/2 streams whose answer has waited for the client, with no part taken,
    /// for at least `stall` (measured from the first look that saw it so); returns how many.
    /// A stream is seen waiting from one look to the next: call at least every `stall`.
    pub(super) fn reset_stalled_streams(&self, now: Instant, stall: Duration) -> usize {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let mut reset = 0;
        for watched in streams.iter_mut() {
            let watch = &watched.watch;
            if watch.cancelled.load(Ordering::Acquire) {
                continue;
            }
            let parts = watch.parts.load(Ordering::Acquire);
            if !watch.for_client.load(Ordering::Acquire) {
                watched.seen = None;
                continue;
            }
            match watched.seen {
                Some((seen, since)) if seen == parts => {
                    if now - since >= stall {
                        watch.cancel();
                        reset += 1;
                    }
                }
                _ => watched.seen = Some((parts, now)),
            }
        }
        reset
    }

    fn watch_stream(&self, watch: Arc<StreamWatch>) {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        streams.push(Watched { watch, seen: None });
    }

    fn unwatch_stream(&self, watch: &Arc<StreamWatch>) {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = streams.iter().position(|w| Arc::ptr_eq(&w.watch, watch)) {
            streams.swap_remove(at);
        }
    }
}

/// An HTTP/2 stream's answer as the serving loop sees it.
struct Watched {
    watch: Arc<StreamWatch>,
    /// The parts taken at the look that first saw it waiting at that count, and when.
    seen: Option<(u64, Instant)>,
}

/// One request in progress on a connection: from its call to the end of its response body.
pub(super) struct Busy(Arc<Activity>);

impl Busy {
    pub(super) fn start(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let since_start = self.0.start.elapsed().as_millis() as u64;
        self.0.last_end.fetch_max(since_start, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Requests an HTTP/2 client may reset before the end of their answer, when they are more
/// than half of its requests, before its connection is closed (like Envoy's premature-reset
/// check).
pub const ABANDONED_FLOOR: u64 = 100;

/// An HTTP/2 request until the end of its answer: counted as abandoned if dropped before (its
/// client reset the stream, before the head or during the body), and the connection's loop
/// woken when that makes too many. An answer whose body failed (the app's connection broke)
/// is not the client's doing: not counted.
pub(super) struct Abandoned {
    activity: Arc<Activity>,
    control: Arc<ControlWake>,
    armed: bool,
}

impl Abandoned {
    pub(super) fn new(activity: &Arc<Activity>, control: &Arc<ControlWake>) -> Self {
        activity.started.fetch_add(1, Ordering::Relaxed);
        Self {
            activity: activity.clone(),
            control: control.clone(),
            armed: true,
        }
    }

    /// The answer ended (or failed on the app's side): nothing to count.
    fn answered(&mut self) {
        self.armed = false;
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if self.armed {
            self.activity.abandoned.fetch_add(1, Ordering::AcqRel);
            if self.activity.abandons_too_many() {
                std::task::Wake::wake_by_ref(&self.control);
            }
        }
    }
}

/// One HTTP/2 stream's answer, shared by the stream's task ([`StreamExec`]), its body
/// ([`Tracked`]) and the serving loop, which may reset it.
#[derive(Default)]
pub(super) struct StreamWatch {
    /// The answer waits for the client (its head, or its last part, not yet taken).
    for_client: AtomicBool,
    /// Parts taken, and waits for the app begun.
    parts: AtomicU64,
    /// The serving loop gave up on it: the stream's task ends, which resets the stream.
    cancelled: AtomicBool,
    /// The stream's task.
    task: AtomicWaker,
}

impl StreamWatch {
    fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.task.wake();
    }
}

thread_local! {
    /// The stream whose task this thread is running, if an HTTP/2 stream's.
    static CURRENT_STREAM: RefCell<Option<Arc<StreamWatch>>> = const { RefCell::new(None) };
}

/// The executor of HTTP/2 streams: spawns each stream's task on the runtime, with a
/// [`StreamWatch`] its answer reports to and the serving loop may end it by.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamExec;

impl<F> hyper::rt::Executor<F> for StreamExec
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        tokio::spawn(Cancellable {
            watch: Arc::default(),
            stream: Some(stream),
        });
    }
}

pin_project_lite::pin_project! {
    /// A stream's task, ended early (dropping it resets the stream) once its watch is
    /// cancelled.
    struct Cancellable<F> {
        watch: Arc<StreamWatch>,
        #[pin]
        stream: Option<F>,
    }
}

impl<F: Future<Output = ()>> Future for Cancellable<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        this.watch.task.register(cx.waker());
        if this.watch.cancelled.load(Ordering::Acquire) {
            this.stream.set(None);
            return Poll::Ready(());
        }
        let Some(stream) = this.stream.as_mut().as_pin_mut() else {
            return Poll::Ready(());
        };
        let outer = CURRENT_STREAM.with(|current| current.replace(Some(this.watch.clone())));
        let polled = stream.poll(cx);
        CURRENT_STREAM.with(|current| *current.borrow_mut() = outer);
        polled
    }
}

/// A response body that keeps its request counted as in progress until it is sent (or
/// dropped), and tells whether it waits for the client: from the head until the connection
/// asks for a part, and after each part until it asks for the next; not while the app is
/// awaited (a slow answer is never the client's fault). An HTTP/2 answer reports to its
/// stream's watch, an HTTP/1.1 one to the connection's counters.
pub(super) struct Tracked<B: Body> {
    body: B,
    busy: Busy,
    for_client: bool,
    stream: Option<Arc<StreamWatch>>,
    /// HTTP/2: the request, counted as abandoned unless its body ends.
    abandoned: Option<Abandoned>,
}

impl<B: Body> Tracked<B> {
    /// `abandoned`: the answer is an HTTP/2 stream's, made within its task.
    pub(super) fn new(body: B, busy: Busy, abandoned: Option<Abandoned>) -> Self {
        let stream = if abandoned.is_some() {
            CURRENT_STREAM.with(|current| current.borrow().clone())
        } else {
            None
        };
        match &stream {
            Some(watch) => {
                watch.parts.fetch_add(1, Ordering::Release);
                watch.for_client.store(true, Ordering::Release);
                busy.0.watch_stream(watch.clone());
            }
            None => {
                busy.0.progress.fetch_add(1, Ordering::Release);
                busy.0.for_client.fetch_add(1, Ordering::AcqRel);
            }
        }
        Self {
            body,
            busy,
            for_client: true,
            stream,
            abandoned,
        }
    }

    fn set_for_client(&mut self, for_client: bool) {
        if let Some(watch) = &self.stream {
            watch.parts.fetch_add(1, Ordering::Release);
            if self.for_client != for_client {
                self.for_client = for_client;
                watch.for_client.store(for_client, Ordering::Release);
            }
            return;
        }
        let activity = &self.busy.0;
        activity.progress.fetch_add(1, Ordering::Release);
        if self.for_client != for_client {
            self.for_client = for_client;
            if for_client {
                activity.for_client.fetch_add(1, Ordering::AcqRel);
            } else {
                activity.for_client.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

impl<B: Body> Drop for Tracked<B> {
    fn drop(&mut self) {
        if let Some(abandoned) = &mut self.abandoned
            && self.body.is_end_stream()
        {
            abandoned.answered();
        }
        match &self.stream {
            Some(watch) => self.busy.0.unwatch_stream(watch),
            None if self.for_client => {
                self.busy.0.for_client.fetch_sub(1, Ordering::AcqRel);
            }
            None => {}
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        self.set_for_client(polled.is_ready());
        if let Poll::Ready(None | Some(Err(_))) = &polled
            && let Some(abandoned) = &mut self.abandoned
        {
            abandoned.answered();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
