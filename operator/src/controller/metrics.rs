//! The operator's Prometheus metrics (served on the admin port at `/metrics`).
//!
//! Layer 0 of the list in `controller`: may use no sibling module.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Every metric, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles of a namespace, by `result` (`ok` | `error`).
    pub reconciles: IntCounterVec,
    /// Failed reconciles (each is retried after a backoff).
    pub errors: IntCounter,
    /// How long a namespace's reconcile took.
    pub duration: Histogram,
    /// Writes, by `kind` (`ConfigMap` | `Secret` | `ApiRoute` | `SecurityProfile` | `Event`)
    /// and `op` (`apply` | `delete` | `status` | `create`).
    pub writes: IntCounterVec,
    /// 1 while this replica holds the leader Lease.
    pub leader: IntGauge,
    /// Namespaces waiting for a reconcile.
    pub queue_depth: IntGauge,
    /// Admission reviews answered, by `webhook` (`mutate-pods` | `validate-apiroutes`) and
    /// `result` (`allowed` | `patched` | `denied` | `invalid`).
    pub webhook_reviews: IntCounterVec,
    /// How long answering an admission review took, by `webhook`.
    pub webhook_duration: HistogramVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "portcullis_operator_reconciles_total",
                "Namespace reconciles, by result.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let errors = IntCounter::new(
            "portcullis_operator_reconcile_errors_total",
            "Failed namespace reconciles (retried after a backoff).",
        )
        .expect("valid metric");
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "portcullis_operator_reconcile_duration_seconds",
                "Duration of one namespace reconcile.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("valid metric");
        let writes = IntCounterVec::new(
            Opts::new(
                "portcullis_operator_writes_total",
                "Writes to the API server, by kind and operation.",
            ),
            &["kind", "op"],
        )
        .expect("valid metric");
        let leader = IntGauge::new(
            "portcullis_operator_leader",
            "1 while this replica holds the leader Lease.",
        )
        .expect("valid metric");
        let queue_depth = IntGauge::new("portcullis_operator_queue_depth", "Namespaces waiting for a reconcile.")
            .expect("valid metric");
        let webhook_reviews = IntCounterVec::new(
            Opts::new(
                "portcullis_operator_webhook_reviews_total",
                "Admission reviews answered, by webhook and result.",
            ),
            &["webhook", "result"],
        )
        .expect("valid metric");
        let webhook_duration = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_operator_webhook_duration_seconds",
                "Time to answer an admission review, by webhook.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["webhook"],
        )
        .expect("valid metric");
        for c in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(webhook_reviews.clone()),
            Box::new(webhook_duration.clone()),
            Box::new(errors.clone()),
            Box::new(duration.clone()),
            Box::new(writes.clone()),
            Box::new(leader.clone()),
            Box::new(queue_depth.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        for result in ["ok", "error"] {
            reconciles.with_label_values(&[result]);
        }
        Self {
            registry,
            reconciles,
            errors,
            duration,
            writes,
            leader,
            queue_depth,
            webhook_reviews,
            webhook_duration,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let m = Metrics::new();
        m.reconciles.with_label_values(&["ok"]).inc();
        m.duration.observe(0.2);
        m.writes.with_label_values(&["ConfigMap", "apply"]).inc();
        let text = m.render();
        for name in [
            "portcullis_operator_reconciles_total{result=\"ok\"} 1",
            "portcullis_operator_reconcile_errors_total 0",
            "portcullis_operator_reconcile_duration_seconds_count 1",
            "portcullis_operator_writes_total{kind=\"ConfigMap\",op=\"apply\"} 1",
            "portcullis_operator_leader 0",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
