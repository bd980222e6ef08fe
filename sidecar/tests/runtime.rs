//! The runtime's workers follow the CPUs the process may use: one CPU (by affinity, here
//! `taskset`) or `--workers 1` means the current-thread scheduler (no worker threads), more
//! CPUs a worker each, capped by `--workers`, and never one per CPU when no quota bounds the
//! process. Checked on the real binary: its start-up log and its thread count.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::free_addr;
use serde_json::Value;

/// The sidecar binary's `demo-backend` (the same runtime as the proxy) under `wrapper`, with
/// `flags`: its `runtime` log line and its thread count once it answers.
fn start(wrapper: &[&str], flags: &[&str]) -> (Value, usize) {
    let addr = free_addr();
    let bin = env!("CARGO_BIN_EXE_portcullis-sidecar");
    let listen = addr.to_string();
    let mut args: Vec<&str> = wrapper.to_vec();
    args.extend([bin, "demo-backend", "--listen", &listen, "--log-format", "json"]);
    args.extend(flags);
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .env_remove("TOKIO_WORKER_THREADS")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the sidecar");
    let guard = Kill(&mut child);
    let stdout = guard.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let runtime = loop {
        let line = lines.next().expect("a runtime line").unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["fields"]["message"] == "runtime" {
            break v["fields"].clone();
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "demo backend did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", guard.0.id())).unwrap();
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (runtime, threads)
}

struct Kill<'a>(&'a mut Child);

impl Drop for Kill<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cpus_here() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[test]
fn one_cpu_means_the_current_thread_scheduler() {
    let (runtime, threads) = start(&["taskset", "-c", "0"], &[]);
    assert_eq!(runtime["workers"], 1, "{runtime}");
    assert_eq!(runtime["affinity"], "Some(1)", "{runtime}");
    assert_eq!(threads, 1, "no worker threads besides the main one");

    let (runtime, threads) = start(&[], &["--workers", "1"]);
    assert_eq!(runtime["workers"], 1, "{runtime}");
    assert_eq!(threads, 1);
}

#[test]
fn more_cpus_mean_a_worker_each_capped_and_bounded_without_a_quota() {
    let (runtime, threads) = start(&[], &[]);
    let quota: Option<usize> = runtime["cpu_quota"]
        .as_str()
        .and_then(|q| q.strip_prefix("Some(")?.strip_suffix(')')?.parse().ok());
    let expected = match quota {
        Some(q) => q.min(cpus_here()),
        None => cpus_here().min(2),
    };
    assert_eq!(runtime["workers"], expected, "{runtime}");
    if expected > 1 {
        assert!(threads > expected, "{threads} threads for {expected} workers");
    }
    if cpus_here() >= 2 {
        let (runtime, _) = start(&["taskset", "-c", "0,1"], &["--workers", "8"]);
        assert_eq!(runtime["workers"], 2, "--workers caps, the CPUs bound: {runtime}");
    }
}
