#!/usr/bin/env bash
# Prometheus for tests/suite.d/50-prometheus.sh (a real server scraping the sidecar and the
# operator) and promtool (`check metrics` on both /metrics outputs; tests/suite.d/20-chart.sh
# checks the dashboard's PromQL with `check rules`). Debian 12's `prometheus` package.
# Idempotent: nothing happens when both binaries are already on PATH.
#
# The package's postinst would start the system service; the suite runs its own server on
# 127.0.0.1, so the install goes through a policy-rc.d that forbids service starts (removed
# afterwards unless one was already there), and a service that started anyway is stopped.
set -euo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi

policy=/usr/sbin/policy-rc.d
ours=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
  as_root chmod 755 "$policy"
  ours=1
fi
cleanup() { if [ "$ours" = 1 ]; then as_root rm -f "$policy"; fi; }
trap cleanup EXIT

as_root apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus

# Whatever the init system, the package's own server must not hold port 9090 or run beside
# the suite's server.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
elif command -v service >/dev/null; then
  as_root service prometheus stop >/dev/null 2>&1 || true
fi

command -v prometheus >/dev/null && command -v promtool >/dev/null || {
  echo "prometheus/promtool still missing after apt-get install prometheus" >&2
  exit 1
}
prometheus --version 2>&1 | head -n1
