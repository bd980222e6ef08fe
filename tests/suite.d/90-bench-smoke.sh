#!/usr/bin/env bash
# The load benchmark in smoke mode (one short round per target) so that it never rots:
# release builds, the nginx backend, nginx with the same policy, wrk and oha; fails if a target
# does not answer or enforce the policy, or if direct is below 1.5x the fastest proxy.
# The full run is a documented command (README, Performance), not a test.
set -euo pipefail
cd "$(dirname "$0")/../.."
timeout 1800 tests/bench/run.sh --smoke
