#!/usr/bin/env bash
# The README's first command works: examples/quickstart.sh in check mode (admitted, 401,
# 403 and 429 through the real binaries), on ports unlikely to be taken.
set -euo pipefail
cd "$(dirname "$0")/../.."
PORTCULLIS_INBOUND=127.0.0.1:25080 PORTCULLIS_ADMIN=127.0.0.1:25090 \
PORTCULLIS_INBOUND_TLS=127.0.0.1:25443 PORTCULLIS_EGRESS=127.0.0.1:25001 \
  timeout 600 examples/quickstart.sh --check
