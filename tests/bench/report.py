#!/usr/bin/env python3
"""Turns the oha JSON results of tests/bench/run.sh into the Markdown table of the README's
Performance section: medians over rounds, ratios sidecar/nginx and sidecar/direct."""
import argparse
import glob
import json
import os
import statistics
import sys

TARGETS = ["direct", "sidecar", "sidecar-redis", "nginx"]


def load(path):
    with open(path) as f:
        return json.load(f)


def ok_and_errors(result):
    codes = result.get("statusCodeDistribution", {})
    ok = sum(n for code, n in codes.items() if str(code).startswith("2"))
    bad = sum(n for code, n in codes.items() if not str(code).startswith("2"))
    # In-flight requests cut by the end of a fixed-duration run are not failures.
    bad += sum(n for e, n in result.get("errorDistribution", {}).items() if "deadline" not in e)
    return ok, bad


def median_of(runs, key):
    return statistics.median(key(r) for r in runs)


def main():
    ap = argparse.ArgumentParser()
    for name in ["dir", "mode", "command"]:
        ap.add_argument(f"--{name}", required=True)
    for name in ["rounds", "duration", "conns", "rate", "sidecar-rss-kib", "nginx-rss-kib", "audit-lines",
                 "redis-round-trips", "redis-errors"]:
        ap.add_argument(f"--{name}", type=int, required=True)
    a = ap.parse_args()

    rows = {}
    failures = []
    for t in TARGETS:
        tput = [load(p) for p in sorted(glob.glob(os.path.join(a.dir, f"tput-{t}-*.json")))]
        lat = [load(p) for p in sorted(glob.glob(os.path.join(a.dir, f"lat-{t}-*.json")))]
        if not tput or not lat:
            failures.append(f"{t}: no results")
            continue
        for r in tput + lat:
            ok, bad = ok_and_errors(r)
            if ok == 0 or bad > 0:
                failures.append(f"{t}: {ok} ok, {bad} failed responses")
        pct = lambda r, p: r["latencyPercentiles"][p] * 1e6  # seconds -> microseconds
        rows[t] = {
            "rps": median_of(tput, lambda r: r["summary"]["requestsPerSec"]),
            "tput_p99": median_of(tput, lambda r: pct(r, "p99")),
            "p50": median_of(lat, lambda r: pct(r, "p50")),
            "p99": median_of(lat, lambda r: pct(r, "p99")),
            "p999": median_of(lat, lambda r: pct(r, "p99.9")),
        }

    out = []
    out.append(f"Command: `{a.command}` ({a.mode}: {a.rounds} round(s) x {a.duration} s per target and mode, "
               f"{a.conns} keep-alive connections for throughput, {a.rate} req/s for latency; proxies pinned "
               f"to core 0 with one worker, backend and oha on core 1).")
    out.append("")
    out.append("| target | requests/s (64 conns) | p99 at max load | p50 at fixed rate | p99 at fixed rate | p99.9 at fixed rate | peak RSS |")
    out.append("|---|---:|---:|---:|---:|---:|---:|")
    rss = {"sidecar": a.sidecar_rss_kib, "nginx": a.nginx_rss_kib}
    for t in TARGETS:
        if t not in rows:
            continue
        r = rows[t]
        mem = f"{rss[t] / 1024:.1f} MiB" if t in rss else "-"
        out.append(f"| {t} | {r['rps']:.0f} | {r['tput_p99']:.0f} µs | {r['p50']:.0f} µs | {r['p99']:.0f} µs | "
                   f"{r['p999']:.0f} µs | {mem} |")
    if all(t in rows for t in TARGETS):
        s, n, d = rows["sidecar"], rows["nginx"], rows["direct"]
        out.append("")
        out.append(f"- requests/s per core, sidecar/nginx: **{s['rps'] / n['rps']:.2f}x**; sidecar/direct: {s['rps'] / d['rps']:.2f}x")
        out.append(f"- p99 at fixed rate, sidecar/nginx: {s['p99'] / n['p99']:.2f}x")
        out.append(f"- added p50 over direct at the fixed rate: sidecar {s['p50'] - d['p50']:.0f} µs, nginx {n['p50'] - d['p50']:.0f} µs")
        out.append(f"- sidecar peak RSS {a.sidecar_rss_kib / 1024:.1f} MiB; audit lines written: {a.audit_lines}")
    if "sidecar" in rows and "sidecar-redis" in rows:
        s, r = rows["sidecar"], rows["sidecar-redis"]
        out.append(f"- limits in Redis (`--limits-store`) vs in memory: requests/s {r['rps'] / s['rps']:.2f}x, "
                   f"added p50 {r['p50'] - s['p50']:+.0f} µs, p99 {r['p99'] - s['p99']:+.0f} µs at the fixed rate; "
                   f"{a.redis_round_trips} Redis round trips in all (blocks reserved ahead, given back), "
                   f"{a.redis_errors} over the store timeout")
    print("\n".join(out))
    if failures:
        print("\n".join(["", "FAILED:"] + failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
