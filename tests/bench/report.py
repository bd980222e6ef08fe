#!/usr/bin/env python3
"""Turns the results of tests/bench/run.sh into the Markdown table of the README's Performance
section: medians over rounds of the throughput runs (wrk, wrk-report.lua's JSON), the latency
runs (oha's JSON) and the CPU snapshots taken around each throughput run (cpu-*.before/after:
the processes' utime/stime in clock ticks and the two cores' /proc/stat lines); ratios
sidecar/nginx and sidecar/direct; the validity check (direct / fastest proxy)."""
import argparse
import glob
import json
import os
import re
import statistics
import sys

TARGETS = ["direct", "sidecar", "sidecar-redis", "nginx"]
PROXIES = ["sidecar", "sidecar-redis", "nginx"]


def load(path):
    with open(path) as f:
        return json.load(f)


def rounds_of(directory, prefix, target, suffix):
    """{round: path} for the files prefix-target-ROUND.suffix."""
    out = {}
    for path in glob.glob(os.path.join(directory, f"{prefix}-{target}-*{suffix}")):
        m = re.fullmatch(rf"{re.escape(prefix)}-{re.escape(target)}-(\d+){re.escape(suffix)}", os.path.basename(path))
        if m:
            out[int(m.group(1))] = path
    return dict(sorted(out.items()))


def oha_ok_and_errors(result):
    codes = result.get("statusCodeDistribution", {})
    ok = sum(n for code, n in codes.items() if str(code).startswith("2"))
    bad = sum(n for code, n in codes.items() if not str(code).startswith("2"))
    # In-flight requests cut by the end of a fixed-duration run are not failures.
    bad += sum(n for e, n in result.get("errorDistribution", {}).items() if "deadline" not in e)
    return ok, bad


def wrk_problems(result):
    """Why a wrk run does not count (errors by kind, error statuses), or None."""
    errors = {k: v for k, v in result["errors"].items() if v}
    if result["non2xx"]:
        errors["non2xx"] = result["non2xx"]
    if result["requests"] == 0:
        errors["requests"] = 0
    return ", ".join(f"{k} {v}" for k, v in errors.items()) or None


def read_snapshot(path):
    procs, cores = {}, {}
    with open(path) as f:
        for line in f:
            kind, name, *values = line.split()
            (procs if kind == "proc" else cores)[name] = [int(v) for v in values]
    return procs, cores


def core_ticks(before, after):
    """Ticks that passed on a core between two /proc/stat lines (its wall time)."""
    return sum(a - b for a, b in zip(after[:8], before[:8]))


def busy_percent(before, after):
    """Share of a core's time not idle (idle + iowait) between two /proc/stat lines."""
    d = [a - b for a, b in zip(after[:8], before[:8])]  # user .. steal; guest is inside user
    total = sum(d)
    return 100.0 * (total - d[3] - d[4]) / total if total else 0.0


def cpu_of_run(before_path, after_path, requests, clk_tck):
    """For one throughput run: µs of user and system CPU per request for each process; each
    core's busy %; and the share of each core (%) the benchmark's own processes took: on core 0
    the backend and redis-server (wrk's own CPU is added by the caller), on core 1 the proxy."""
    (pb, cb), (pa, ca) = read_snapshot(before_path), read_snapshot(after_path)
    per_req, ticks = {}, {}
    for name in pa:
        if name in pb:
            du, ds = pa[name][0] - pb[name][0], pa[name][1] - pb[name][1]
            ticks[name] = du + ds
            if requests:
                per_req[name] = (du / clk_tck * 1e6 / requests, ds / clk_tck * 1e6 / requests)
    busy = {name: busy_percent(cb[name], ca[name]) for name in ca if name in cb}
    wall = {name: core_ticks(cb[name], ca[name]) for name in ca if name in cb}
    ours = {}
    if wall.get("load"):
        ours["load"] = (ticks.get("backend", 0) + ticks.get("redis", 0), wall["load"])
    if wall.get("proxy") and "proxy" in ticks:
        ours["proxy"] = 100.0 * ticks["proxy"] / wall["proxy"]
    # softirq time on the proxy's core: the kernel's loopback TCP work, which it accounts to the
    # core and not to the process that caused it (so not in per_req).
    if "proxy" in ca and "proxy" in cb and requests:
        per_req["core1_softirq"] = (ca["proxy"][6] - cb["proxy"][6]) / clk_tck * 1e6 / requests
    return per_req, busy, ours


def runtime_of(log_path):
    """The sidecar's start-up "runtime" log line, as its fields."""
    try:
        with open(log_path) as f:
            for line in f:
                if '"message":"runtime"' in line:
                    entry = json.loads(line)
                    return entry.get("fields", entry)
    except (OSError, ValueError):
        pass
    return None


def med(values):
    return statistics.median(values) if values else float("nan")


def main():
    ap = argparse.ArgumentParser()
    for name in ["dir", "mode", "command"]:
        ap.add_argument(f"--{name}", required=True)
    for name in ["rounds", "duration", "conns", "rate", "clk-tck", "audit-lines", "redis-round-trips", "redis-errors"]:
        ap.add_argument(f"--{name}", type=int, required=True)
    ap.add_argument("--min-ratio", type=float, required=True, help="direct / fastest proxy, at least")
    ap.add_argument("--rss-kib", action="append", default=[], help="TARGET=KiB (VmHWM)")
    ap.add_argument("--runtime-log", action="append", default=[], help="TARGET=PATH of a sidecar's log")
    a = ap.parse_args()
    rss = {t: int(v) for t, v in (x.split("=", 1) for x in a.rss_kib)}

    rows = {}
    failures = []
    for t in TARGETS:
        tput_files = rounds_of(a.dir, "tput", t, ".json")
        lat_files = rounds_of(a.dir, "lat", t, ".json")
        if not tput_files or not lat_files:
            failures.append(f"{t}: no results")
            continue
        rps, p50_max, p99_max, cpu_user, cpu_sys = [], [], [], [], []
        backend_cpu, redis_cpu, load_busy, proxy_busy, load_ours, proxy_ours, softirq = [], [], [], [], [], [], []
        for rnd, path in tput_files.items():
            w = load(path)
            problem = wrk_problems(w)
            if problem:
                failures.append(f"{t} round {rnd} (wrk): {problem}")
            rps.append(w["requests"] / (w["duration_us"] / 1e6))
            p50_max.append(w["latency_us"]["p50"])
            p99_max.append(w["latency_us"]["p99"])
            before = os.path.join(a.dir, f"cpu-{t}-{rnd}.before")
            after = os.path.join(a.dir, f"cpu-{t}-{rnd}.after")
            if not (os.path.exists(before) and os.path.exists(after)):
                failures.append(f"{t} round {rnd}: no CPU snapshots")
                continue
            per_req, busy, ours = cpu_of_run(before, after, w["requests"], a.clk_tck)
            if "load" in ours:
                ticks, wall = ours["load"]
                load_ours.append(100.0 * (ticks + w.get("cpu_s", 0) * a.clk_tck) / wall)
            if "proxy" in ours:
                proxy_ours.append(ours["proxy"])
            if "proxy" in per_req:
                cpu_user.append(per_req["proxy"][0])
                cpu_sys.append(per_req["proxy"][1])
            if "backend" in per_req:
                backend_cpu.append(sum(per_req["backend"]))
            if "redis" in per_req:
                redis_cpu.append(sum(per_req["redis"]))
            if "core1_softirq" in per_req:
                softirq.append(per_req["core1_softirq"])
            load_busy.append(busy.get("load", float("nan")))
            proxy_busy.append(busy.get("proxy", float("nan")))
        lat = []
        for rnd, path in lat_files.items():
            r = load(path)
            ok, bad = oha_ok_and_errors(r)
            if ok == 0 or bad > 0:
                failures.append(f"{t} round {rnd} (oha): {ok} ok, {bad} failed responses")
            lat.append(r)
        pct = lambda r, p: r["latencyPercentiles"][p] * 1e6  # seconds -> microseconds
        rows[t] = {
            "rps": med(rps), "rps_all": rps,
            "max_p50": med(p50_max), "max_p99": med(p99_max),
            "p50": med([pct(r, "p50") for r in lat]),
            "p99": med([pct(r, "p99") for r in lat]),
            "p999": med([pct(r, "p99.9") for r in lat]),
            "user": med(cpu_user) if cpu_user else None,
            "sys": med(cpu_sys) if cpu_sys else None,
            "backend_cpu": med(backend_cpu), "redis_cpu": med(redis_cpu),
            "load_busy": load_busy, "proxy_busy": proxy_busy, "load_ours": load_ours, "proxy_ours": proxy_ours,
            "softirq": med(softirq),
        }

    out = []
    rate = f"{a.rate:,}"
    out.append(f"Command: `{a.command}` ({a.mode}: {a.rounds} round(s) x {a.duration} s per target and mode). "
               f"Throughput: wrk, 1 thread, {a.conns} keep-alive connections, as fast as possible; latency: oha, "
               f"8 connections at {rate} req/s. Core 0: wrk/oha, the backend (nginx, one worker, `return 200` "
               f"with 1 KiB) and redis-server; core 1: the proxy under test alone (one worker).")
    out.append("")
    out.append(f"| target | requests/s | p50 / p99 at max load | p50 / p99 / p99.9 at {rate} req/s "
               f"| user CPU/req | sys CPU/req | peak RSS |")
    out.append("|---|---:|---:|---:|---:|---:|---:|")
    for t in TARGETS:
        if t not in rows:
            continue
        r = rows[t]
        mem = f"{rss[t] / 1024:.1f} MiB" if t in rss else "-"
        user = f"{r['user']:.2f} µs" if r["user"] is not None else "-"
        sys_ = f"{r['sys']:.2f} µs" if r["sys"] is not None else "-"
        out.append(f"| {t} | {r['rps']:.0f} | {r['max_p50']:.0f} / {r['max_p99']:.0f} µs | "
                   f"{r['p50']:.0f} / {r['p99']:.0f} / {r['p999']:.0f} µs | {user} | {sys_} | {mem} |")
    out.append("")

    # Validity: the load side (wrk + backend on core 0) must be far from being the limit.
    proxies = [t for t in PROXIES if t in rows]
    valid = False
    if "direct" in rows and proxies:
        fastest = max(proxies, key=lambda t: rows[t]["rps"])
        ratio = rows["direct"]["rps"] / rows[fastest]["rps"]
        valid = ratio >= a.min_ratio
        verdict = "valid" if valid else "**INVALID**: the load side, not the proxy, may have set the numbers"
        out.append(f"- validity: direct / fastest proxy ({fastest}) = **{ratio:.2f}x** "
                   f"(at least {a.min_ratio:g}x required in {a.mode} mode): {verdict}")
    def cores(t):
        r = rows[t]
        line = f"{t}: core 0 {med(r['load_busy']):.0f}% (ours {med(r['load_ours']):.0f}%)"
        line += f", core 1 {med(r['proxy_busy']):.0f}%"
        return line + (f" (the proxy {med(r['proxy_ours']):.0f}%)" if r["proxy_ours"] else "")
    out.append("- cores busy during the throughput runs (medians; \"ours\": wrk, the backend and redis-server on "
               "core 0, the proxy on core 1; the rest is other processes on the machine): "
               + "; ".join(cores(t) for t in TARGETS if t in rows))
    if proxies:
        lb = [b for t in proxies for b in rows[t]["load_busy"]]
        lo = [b for t in proxies for b in rows[t]["load_ours"]]
        d = rows.get("direct", {}).get("load_ours", [])
        out.append(f"- the load side's headroom: during the proxies' throughput runs wrk + backend + redis-server "
                   f"took {min(lo):.0f}-{max(lo):.0f}% of core 0 (median {med(lo):.0f}%; core 0 busy in all "
                   f"{min(lb):.0f}-{max(lb):.0f}%), against {med(d):.0f}% in the direct runs, where they are the limit")
    if all(t in rows for t in ["sidecar", "nginx", "direct"]):
        s, n, d = rows["sidecar"], rows["nginx"], rows["direct"]
        out.append(f"- requests/s per core, sidecar/nginx: **{s['rps'] / n['rps']:.2f}x**; "
                   f"sidecar/direct: {s['rps'] / d['rps']:.2f}x "
                   f"(per round: sidecar {', '.join(f'{x:.0f}' for x in s['rps_all'])}; "
                   f"nginx {', '.join(f'{x:.0f}' for x in n['rps_all'])})")
        if s["user"] is not None and n["user"] is not None:
            sc, nc = s["user"] + s["sys"], n["user"] + n["sys"]
            out.append(f"- CPU per request (user + sys), sidecar/nginx: {sc:.2f} / {nc:.2f} µs = **{sc / nc:.2f}x**")
        out.append("- softirq time on core 1 per request (loopback TCP work the kernel accounts to the core, "
                   "not to the process, so not in the CPU columns; other processes' too): "
                   + ", ".join(f"{t} {rows[t]['softirq']:.2f} µs" for t in proxies))
        out.append(f"- p99 at the fixed rate, sidecar/nginx: {s['p99'] / n['p99']:.2f}x")
        out.append(f"- added p50 over direct at the fixed rate: sidecar {s['p50'] - d['p50']:.0f} µs, "
                   f"nginx {n['p50'] - d['p50']:.0f} µs")
        out.append(f"- backend CPU per request in the direct runs: {d['backend_cpu']:.2f} µs")
    runtimes = []
    for t, path in (x.split("=", 1) for x in a.runtime_log):
        f = runtime_of(path)
        runtimes.append(f"{t} " + (", ".join(f"{k}={f[k]}" for k in ["workers", "affinity", "cpu_quota", "cap"] if k in f)
                                   if f else "no runtime line"))
    if runtimes:
        out.append(f"- sidecar runtime (start-up log line \"runtime\"): {'; '.join(runtimes)}")
    if "sidecar" in rss:
        out.append(f"- sidecar peak RSS {rss['sidecar'] / 1024:.1f} MiB; audit lines written: {a.audit_lines}")
    if "sidecar" in rows and "sidecar-redis" in rows:
        s, r = rows["sidecar"], rows["sidecar-redis"]
        out.append(f"- limits in Redis (`--limits-store`) vs in memory: requests/s {r['rps'] / s['rps']:.2f}x, "
                   f"added p50 {r['p50'] - s['p50']:+.0f} µs, p99 {r['p99'] - s['p99']:+.0f} µs at the fixed rate; "
                   f"{a.redis_round_trips} Redis round trips in all (blocks reserved ahead, given back), "
                   f"{a.redis_errors} over the store timeout; redis-server CPU per request "
                   f"{r['redis_cpu']:.2f} µs (core 0, not in the table)")
    print("\n".join(out))
    if failures:
        print("\n".join(["", "FAILED:"] + [f"- {f}" for f in failures]))
    if not valid:
        print(f"\nINVALID: direct must be at least {a.min_ratio:g}x the fastest proxy's requests/s.")
    if failures or not valid:
        sys.exit(1)


if __name__ == "__main__":
    main()
