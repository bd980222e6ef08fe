//! Benchmark (ignored by default): 1,000 SecurityProfiles (each with its Secret) and 1,000
//! ApiRoutes in one namespace, served to 50 workloads (one pod each, 20 routes per
//! workload), reach steady state against the fake API server: every route and profile has a
//! current status, every group has its ConfigMap and Secret, and the operator stops writing.
//! Prints the time from the operator's start and its peak RSS (VmHWM).
//!
//! ```sh
//! cargo test --release -p portcullis-operator --test bench -- --ignored --nocapture
//! ```
//!
//! `PORTCULLIS_BENCH_WORKLOADS=1000` gives every route its own workload (1,000 groups).

mod common;

use std::time::{Duration, Instant};

use common::*;

const PROFILES_N: usize = 1000;
const ROUTES_N: usize = 1000;
/// Workloads (one pod and one configuration group each) unless
/// `PORTCULLIS_BENCH_WORKLOADS` says otherwise.
const DEFAULT_WORKLOADS: usize = 50;

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run explicitly with --ignored --release"]
async fn thousand_profiles_and_routes_reach_steady_state() {
    let workloads: usize = std::env::var("PORTCULLIS_BENCH_WORKLOADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_WORKLOADS)
        .clamp(1, ROUTES_N);
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    for i in 0..PROFILES_N {
        server
            .create(&basic_secret(&format!("s{i}"), &format!("user{i}"), &format!("pw{i}")))
            .unwrap();
        server
            .create(&basic_profile(&format!("p{i}"), &format!("s{i}")))
            .unwrap();
    }
    for i in 0..ROUTES_N {
        let app = format!("w{}", i % workloads);
        server
            .create(&route(&format!("r{i}"), &app, &[&format!("p{}", i % PROFILES_N)]))
            .unwrap();
    }
    for w in 0..workloads {
        server.create(&pod(&format!("w{w}-0"), &format!("w{w}"))).unwrap();
    }

    let started = Instant::now();
    let op = Operator::start(&dir, "bench", &["--workers", "4"]);
    let steady = |server: &portcullis_fake_apiserver::FakeApiServer| {
        let routes = server.list(ROUTES, Some(NS));
        let profiles = server.list(PROFILES, Some(NS));
        let current = |o: &serde_json::Value| {
            o["status"]["observedGeneration"] == o["metadata"]["generation"]
                && condition(o, "Ready").is_some_and(|c| c["status"] == "True")
        };
        routes.len() == ROUTES_N
            && routes.iter().all(current)
            && profiles.iter().all(current)
            && server.list("configmaps", Some(NS)).len() == workloads
            && server.list("secrets", Some(NS)).len() == PROFILES_N + workloads
    };
    wait_until(Duration::from_secs(120), "steady state", &op, || {
        steady(&server).then_some(())
    })
    .await;
    let steady_at = started.elapsed();
    // Steady: no more writes for a while.
    let mut version = server.resource_version();
    let quiet_since = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = server.resource_version();
        if now == version {
            break started.elapsed() - Duration::from_millis(500);
        }
        version = now;
        assert!(started.elapsed() < Duration::from_secs(120), "never quiet");
    };
    let rss = peak_rss_kib(op.pid()).unwrap_or(0);
    let reconciles = op
        .metric("portcullis_operator_reconciles_total{result=\"ok\"}")
        .unwrap_or(0.0);
    println!(
        "BENCH {PROFILES_N} profiles, {ROUTES_N} routes, {workloads} groups: every status current and every \
         object written {:.2} s after the operator started; writes quiet by {:.2} s; {reconciles} reconciles; \
         peak RSS {:.1} MiB",
        steady_at.as_secs_f64(),
        quiet_since.as_secs_f64(),
        rss as f64 / 1024.0
    );
}
