#!/usr/bin/env bash
# Tools of the browser sign-in suite (tests/suite.d/80-login-e2e.sh): Debian's headless
# `chromium`, and under target/tools/login-e2e the npm packages `oidc-provider` (an OpenID
# Provider certified by the OpenID Foundation) and `playwright-core` (drives the browser; no
# bundled browser download). Idempotent: does nothing when all three are there at their pins.
set -euo pipefail
cd "$(dirname "$0")/../.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
tools="${PORTCULLIS_TOOLS:-$PWD/target/tools}"
dir="$tools/login-e2e"
mkdir -p "$dir"

apt_install() {
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

command -v chromium >/dev/null 2>&1 || apt_install chromium fonts-liberation
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt_install nodejs npm
fi

oidc_pin=9.13.3
pw_pin=1.65.1
have() { node -p "require('$dir/node_modules/$1/package.json').version" 2>/dev/null || true; }
if [ "$(have oidc-provider)" != "$oidc_pin" ] || [ "$(have playwright-core)" != "$pw_pin" ]; then
  [ -f "$dir/package.json" ] || echo '{"name":"portcullis-login-e2e","private":true,"type":"module"}' >"$dir/package.json"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$dir" --no-audit --no-fund --silent \
    "oidc-provider@$oidc_pin" "playwright-core@$pw_pin"
fi
echo "login e2e tools ready: $(chromium --version 2>/dev/null | head -1), oidc-provider $(have oidc-provider), playwright-core $(have playwright-core)"
