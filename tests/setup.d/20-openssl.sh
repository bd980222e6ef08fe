#!/usr/bin/env bash
# Debian's openssl, which sidecar/tests/tls.rs drives (`openssl s_client` probes of the TLS
# listener, `openssl genpkey` for an RSA test key). 10-base.sh installs it too; this script
# keeps the TLS tests' requirement explicit. Idempotent.
set -euo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v openssl >/dev/null 2>&1; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl
fi
openssl version
