//! A work queue of namespaces: the compiler works on a whole namespace, so every change is
//! reduced to "reconcile namespace N". Requests for a namespace coalesce; a namespace is
//! never reconciled by two workers at once; a request that arrives during its reconcile
//! runs once more afterwards. Failed namespaces come back after an exponential backoff.
//!
//! In memory, no I/O. Layer 0 of the list in `controller`: may use no sibling module.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Default)]
struct Inner {
    /// When each pending namespace is due.
    due: HashMap<String, Instant>,
    running: HashSet<String>,
    /// Consecutive failures per namespace.
    failures: HashMap<String, u32>,
    closed: bool,
}

/// The queue. Share it behind an `Arc`.
pub struct WorkQueue {
    inner: Mutex<Inner>,
    notify: Notify,
    backoff_base: Duration,
    backoff_max: Duration,
}

impl Default for WorkQueue {
    fn default() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(300))
    }
}

impl WorkQueue {
    /// A queue whose retries wait `base`, doubling per failure, up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            notify: Notify::new(),
            backoff_base: base,
            backoff_max: max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for a reconcile of `namespace` now.
    pub fn add(&self, namespace: &str) {
        self.add_after(namespace, Duration::ZERO);
    }

    /// Asks for a reconcile of `namespace` after `delay` (an earlier request wins).
    pub fn add_after(&self, namespace: &str, delay: Duration) {
        let at = Instant::now() + delay;
        let mut inner = self.lock();
        let due = inner.due.entry(namespace.to_owned()).or_insert(at);
        *due = (*due).min(at);
        drop(inner);
        self.notify.notify_waiters();
    }

    /// Waits for the next due namespace and marks it running; `None` once closed.
    pub async fn next(&self) -> Option<String> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait_until = {
                let mut inner = self.lock();
                if inner.closed {
                    return None;
                }
                let next = inner
                    .due
                    .iter()
                    .filter(|(ns, _)| !inner.running.contains(*ns))
                    .min_by_key(|(_, at)| **at)
                    .map(|(ns, at)| (ns.clone(), *at));
                match next {
                    Some((ns, at)) if at <= Instant::now() => {
                        inner.due.remove(&ns);
                        inner.running.insert(ns.clone());
                        return Some(ns);
                    }
                    Some((_, at)) => Some(at),
                    None => None,
                }
            };
            match wait_until {
                Some(at) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Marks a reconcile finished. On failure the namespace is retried after a backoff that
    /// doubles per consecutive failure; success resets it. Returns the retry delay.
    pub fn done(&self, namespace: &str, ok: bool) -> Option<Duration> {
        let mut inner = self.lock();
        inner.running.remove(namespace);
        let delay = if ok {
            inner.failures.remove(namespace);
            None
        } else {
            let failures = inner.failures.entry(namespace.to_owned()).or_insert(0);
            let delay = self
                .backoff_base
                .saturating_mul(1u32 << (*failures).min(20))
                .min(self.backoff_max);
            *failures += 1;
            let at = Instant::now() + delay;
            let due = inner.due.entry(namespace.to_owned()).or_insert(at);
            *due = (*due).min(at);
            Some(delay)
        };
        drop(inner);
        self.notify.notify_waiters();
        delay
    }

    /// Stops handing out work: [`Self::next`] returns `None` from now on.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
    }

    /// Namespaces waiting (due or not) and running.
    pub fn len(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.due.len(), inner.running.len())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_coalesce_and_never_run_twice_at_once() {
        let q = WorkQueue::default();
        q.add("a");
        q.add("a");
        q.add("b");
        let first = q.next().await.unwrap();
        let second = q.next().await.unwrap();
        assert_ne!(first, second);
        // "a" asked for again while running: it waits until done.
        q.add(&first);
        let blocked = tokio::time::timeout(Duration::from_secs(1), q.next()).await;
        assert!(blocked.is_err());
        q.done(&first, true);
        assert_eq!(q.next().await.unwrap(), first);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_and_reset_on_success() {
        let q = WorkQueue::new(Duration::from_secs(1), Duration::from_secs(5));
        q.add("a");
        let ns = q.next().await.unwrap();
        assert_eq!(q.done(&ns, false), Some(Duration::from_secs(1)));
        let start = Instant::now();
        q.next().await.unwrap();
        assert!(start.elapsed() >= Duration::from_secs(1));
        assert_eq!(q.done("a", false), Some(Duration::from_secs(2)));
        q.next().await.unwrap();
        assert_eq!(q.done("a", false), Some(Duration::from_secs(4)));
        q.next().await.unwrap();
        assert_eq!(q.done("a", false), Some(Duration::from_secs(5)), "capped");
        q.next().await.unwrap();
        assert_eq!(q.done("a", true), None);
        q.add("a");
        q.next().await.unwrap();
        assert_eq!(q.done("a", false), Some(Duration::from_secs(1)), "reset");
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_requests_wait_and_close_releases_workers() {
        let q = Arc::new(WorkQueue::default());
        q.add_after("later", Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(q.next().await.unwrap(), "later");
        assert!(start.elapsed() >= Duration::from_secs(10));
        let waiting = tokio::spawn({
            let q = q.clone();
            async move { q.next().await }
        });
        tokio::task::yield_now().await;
        q.close();
        assert_eq!(waiting.await.unwrap(), None);
    }
}
