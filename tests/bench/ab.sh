#!/usr/bin/env bash
# A/B of two sidecar binaries under the same load, alternating, for tuning one change:
#
#   tests/bench/ab.sh OLD_BINARY NEW_BINARY [ROUNDS]     # DUR=8 seconds per run by default
#
# Same setup as run.sh (tests/bench/common.sh, policy.yaml): the nginx backend and wrk (64
# keep-alive connections) on core 0, the sidecar alone on core 1, started without
# TOKIO_WORKER_THREADS (one CPU, one worker). The order alternates every round (OLD NEW, NEW
# OLD, ...). Prints, per run, requests/s and the sidecar's user and system CPU per request
# (/proc/PID/stat around the run, over the requests wrk counted), and how busy each core was
# (/proc/stat), then the medians. The ratios compare binaries only while the sidecar is the
# one saturated: a run whose load core was busier than 95%, or whose sidecar core was less
# busy than 90%, is flagged, and the medians say how many were. Last, the median of the
# rounds' own NEW/OLD ratios ("paired"): a round's two runs are next to each other in time, so
# the machine's drift moves it less than the medians over all rounds.
# Builds the release portcullis-operator (to render the policy) as run.sh does; needs wrk and
# nginx (run.sh installs them).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY [ROUNDS]" >&2; exit 2; }
A=$(realpath "$1") B=$(realpath "$2") ROUNDS=${3:-3} DUR=${DUR:-8}
cd "$(dirname "$0")/../.."
source tests/bench/common.sh
source tests/lib/release.sh
bench_need nginx:nginx-light wrk:wrk curl:curl pgrep:procps python3:python3
release_build portcullis-sidecar portcullis-operator
BIN=$(release_dir)
CLK_TCK=$(getconf CLK_TCK)
bench_sidecar_setup "$BIN/portcullis-operator"

: > "$RUN/results.tsv"
for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order=(OLD NEW); else order=(NEW OLD); fi
  for which in "${order[@]}"; do
    if [ "$which" = OLD ]; then bin=$A; else bin=$B; fi
    env -u TOKIO_WORKER_THREADS taskset -c "$BENCH_PROXY_CPU" "$bin" "${SIDECAR_ARGS[@]}" \
      >"$RUN/sidecar.log" 2>&1 & SIDECAR=$!
    code=$(bench_wait_200 "$URL") || { echo "$bin does not answer 200 (got $code)" >&2; cat "$RUN/sidecar.log" >&2; exit 1; }
    before=$(bench_ticks "$SIDECAR")
    cores_before=$(bench_core_ticks)
    bench_wrk "$RUN/wrk.json" "$URL" "$DUR" 64
    after=$(bench_ticks "$SIDECAR")
    read -r load_busy proxy_busy < <(bench_cores_busy "$cores_before" "$(bench_core_ticks)")
    saturated=yes
    if [ "$load_busy" -gt 95 ] || [ "$proxy_busy" -lt 90 ]; then saturated=no; fi
    # requests/s, user and system µs per request, problems (errors, error statuses)
    read -r rps user sys problems < <(python3 - "$RUN/wrk.json" "$before" "$after" "$CLK_TCK" <<'PY'
import json, sys
w = json.load(open(sys.argv[1]))
(u0, s0), (u1, s1), tck = map(int, sys.argv[2].split()), map(int, sys.argv[3].split()), int(sys.argv[4])
n = w["requests"]
bad = sum(w["errors"].values()) + w["non2xx"]
print(f"{n / (w['duration_us'] / 1e6):.0f} {(u1 - u0) / tck * 1e6 / n:.2f} {(s1 - s0) / tck * 1e6 / n:.2f} {bad}")
PY
)
    workers=$(grep -m1 -o '"workers":[0-9]*' "$RUN/sidecar.log" || echo '"workers":?')
    echo "round $round $which requests/s=$rps user_cpu/req=${user}us sys_cpu/req=${sys}us ${workers//\"/} errors=$problems peak_rss=$(awk '/VmHWM/ {print $2}' "/proc/$SIDECAR/status") kB load_core=${load_busy}% sidecar_core=${proxy_busy}%$([ $saturated = yes ] || echo ' NOT-PROXY-BOUND')"
    printf '%s\t%s\t%s\t%s\t%s\n' "$which" "$rps" "$user" "$sys" "$saturated" >> "$RUN/results.tsv"
    kill "$SIDECAR"; wait "$SIDECAR" 2>/dev/null || true
    SIDECAR=
    rm -f "$RUN/audit.log"
  done
done
python3 - "$RUN/results.tsv" "$A" "$B" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
med = {}
for name, path in zip(["OLD", "NEW"], sys.argv[2:]):
    runs = [r for r in rows if r[0] == name]
    med[name] = [statistics.median(float(r[i]) for r in runs) for i in (1, 2, 3)]
    rps, user, sys_ = med[name]
    print(f"median {name} requests/s={rps:.0f} user_cpu/req={user:.2f}us sys_cpu/req={sys_:.2f}us ({path})")
a, b = med["OLD"], med["NEW"]
print(f"NEW/OLD: requests/s {b[0] / a[0]:.3f}x, CPU per request {(b[1] + b[2]) / (a[1] + a[2]):.3f}x")
olds, news = ([r for r in rows if r[0] == n] for n in ("OLD", "NEW"))
pairs = [(float(n[1]) / float(o[1]), (float(n[2]) + float(n[3])) / (float(o[2]) + float(o[3])))
         for o, n in zip(olds, news)]
wins = sum(1 for rps, _ in pairs if rps > 1)
print(f"paired (median of the rounds' NEW/OLD): requests/s {statistics.median(p[0] for p in pairs):.3f}x, "
      f"CPU per request {statistics.median(p[1] for p in pairs):.3f}x; NEW faster in {wins} of {len(pairs)} rounds")
unbound = sum(1 for r in rows if r[4] != "yes")
if unbound:
    print(f"WARNING: {unbound} of {len(rows)} runs were not proxy-bound (load core over 95% busy, or the "
          "sidecar's core under 90%): their requests/s measure the load side as much as the sidecar")
PY
