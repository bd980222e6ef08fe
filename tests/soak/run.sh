#!/usr/bin/env bash
# Soak: the sidecar under a steady load for a long time (issue 15). By hand, on an idle machine:
#
#   tests/soak/run.sh                  # 10 minutes at 80% of the saturated rate
#   SOAK_SECONDS=60 tests/soak/run.sh  # a shorter look
#
# The setup is the benchmark's (tests/bench): release binaries, bench-backend (1 KiB answers)
# on core 1, the sidecar with one tokio worker on core 0, the bench policy (trusted ranges,
# Basic, a limit that never triggers, the audit log to a file). First 10 s as fast as
# possible (oha, 64 connections) give the saturated rate R; then SOAK_SECONDS at 0.8 R. The
# sidecar's RSS is read from /proc every 10 s. The run fails (non-zero) when any request was
# not answered 200, or when RSS grew more than 5% from the end of the first minute to the end.
# Results: target/soak/results.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SECONDS_TOTAL=${SOAK_SECONDS:-600}
OUT=$ROOT/target/soak
RUN=$OUT/run
TOOLS=${PORTCULLIS_TOOLS:-$ROOT/target/tools}
export PATH="$TOOLS/bin:$PATH"
rm -rf "$RUN" && mkdir -p "$RUN/config"
log() { printf '[soak] %s\n' "$*" >&2; }
command -v oha >/dev/null || { log "installing oha"; cargo install oha --locked --quiet --root "$TOOLS"; }

# The static release binaries the images ship (tests/lib/release.sh); in CI,
# tests/suite.d/70-images.sh has built the sidecar and the operator already.
log "building release binaries (static, as in the images)"
source tests/lib/release.sh
release_build portcullis-sidecar portcullis-operator
release_build portcullis-bench
BIN=$(release_dir)
"$BIN/portcullis-operator" render -f tests/bench/policy.yaml --out "$RUN/config" --org-allowance 100000000 >/dev/null

# The backend port is the one tests/bench/policy.yaml routes to.
BACKEND_PORT=18080 SIDECAR_PORT=18181 ADMIN_PORT=18190
AUTH="Authorization: Basic $(printf 'bench:bench-password' | base64)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
taskset -c 1 "$BIN/bench-backend" "127.0.0.1:$BACKEND_PORT" 2>"$RUN/backend.log" & PIDS+=($!)
TOKIO_WORKER_THREADS=1 taskset -c 0 "$BIN/portcullis-sidecar" --config-dir "$RUN/config" \
  --inbound "127.0.0.1:$SIDECAR_PORT" --inbound-tls 127.0.0.1:0 --egress 127.0.0.1:0 \
  --admin "127.0.0.1:$ADMIN_PORT" --audit-log "$RUN/audit.log" >"$RUN/sidecar.log" 2>&1 & SIDECAR=$!
PIDS+=($SIDECAR)
URL="http://127.0.0.1:$SIDECAR_PORT/bench"
ready=
for _ in $(seq 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "$AUTH" "$URL" || true)" = 200 ] && { ready=1; break; }
  sleep 0.1
done
[ -n "$ready" ] || { log "the sidecar does not answer 200 on $URL"; exit 1; }

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$SIDECAR/status"; }
log "saturated rate (10 s, 64 connections)"
taskset -c 1 oha --no-tui --output-format json -z 10s -c 64 -H "$AUTH" "$URL" >"$RUN/saturated.json"
R=$(python3 -c "import json,sys; print(int(json.load(open(sys.argv[1]))['summary']['requestsPerSec']))" "$RUN/saturated.json")
RATE=$(( R * 8 / 10 ))
log "saturated: $R requests/s; soaking ${SECONDS_TOTAL}s at $RATE requests/s"

: >"$RUN/rss.tsv"
( for t in $(seq 0 10 "$SECONDS_TOTAL"); do echo -e "$t\t$(rss_kib)" >>"$RUN/rss.tsv"; sleep 10; done ) & SAMPLER=$!
taskset -c 1 oha --no-tui --output-format json -z "${SECONDS_TOTAL}s" -q "$RATE" -c 64 -H "$AUTH" "$URL" >"$RUN/soak.json"
kill "$SAMPLER" 2>/dev/null || true
echo -e "$SECONDS_TOTAL\t$(rss_kib)" >>"$RUN/rss.tsv"

status=0
python3 - "$RUN" "$R" "$RATE" "$SECONDS_TOTAL" >"$OUT/results.md" <<'PY' || status=$?
import json, sys
run, saturated, rate, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
soak = json.load(open(f"{run}/soak.json"))
codes = soak.get("statusCodeDistribution", {})
ok = int(codes.get("200", 0))
other = sum(int(v) for k, v in codes.items() if k != "200")
# Requests still in flight when the duration ends are cut by oha itself, not failures.
errors = sum(int(v) for k, v in soak.get("errorDistribution", {}).items() if k != "aborted due to deadline")
rss = [tuple(map(int, l.split())) for l in open(f"{run}/rss.tsv") if len(l.split()) == 2]
base = next((kib for t, kib in rss if t >= 60), rss[0][1])
end = rss[-1][1]
growth = (end - base) / base * 100
lat = soak["latencyPercentiles"]
print(f"# Soak: {total} s at {rate} requests/s (80% of the saturated {saturated} requests/s)\n")
print(f"- answered 200: {ok}; other statuses: {other}; connection errors: {errors}")
print(f"- achieved: {soak['summary']['requestsPerSec']:.0f} requests/s; p50 {lat['p50']*1e3:.2f} ms, p99 {lat['p99']*1e3:.2f} ms")
print(f"- sidecar RSS: {rss[0][1]/1024:.1f} MiB at start, {base/1024:.1f} MiB after the first minute, {end/1024:.1f} MiB at the end ({growth:+.1f}%)")
print(f"- RSS samples (s, KiB): {' '.join(f'{t}:{k}' for t, k in rss)}")
ok_run = other == 0 and errors == 0 and growth < 5
print(f"\n**{'PASS' if ok_run else 'FAIL'}**: zero failed requests and RSS growth under 5% after the first minute")
sys.exit(0 if ok_run else 1)
PY
cat "$OUT/results.md"
exit $status
