#!/usr/bin/env bash
# Third-party HTTP signature implementations for the interop suite
# (tests/suite.d/40-signatures-interop.sh): Python `http-message-signatures` (RFC 9421) in a
# venv under target/tools/venv-sig, and npm `http-signature` (draft-cavage) under
# target/tools/node. Idempotent: does nothing when both are already there.
set -euo pipefail
cd "$(dirname "$0")/../.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
tools="${PORTCULLIS_TOOLS:-$PWD/target/tools}"
mkdir -p "$tools"

apt_install() {
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# --- Python: http-message-signatures (RFC 9421) ---------------------------------------------
venv="$tools/venv-sig"
py_pin=3.0.0
if [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("http-message-signatures"))' 2>/dev/null)" != "$py_pin" ]; then
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    rm -rf "$venv"
    apt_install python3-venv
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check "http-message-signatures==$py_pin" 'cryptography>=42'
fi

# --- Node: http-signature (draft-cavage) -------------------------------------------------------
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt_install nodejs npm
fi
node_dir="$tools/node"
npm_pin=1.4.0
if [ "$(node -p "require('$node_dir/node_modules/http-signature/package.json').version" 2>/dev/null)" != "$npm_pin" ]; then
  mkdir -p "$node_dir"
  [ -f "$node_dir/package.json" ] || echo '{"name":"portcullis-sig-interop","private":true}' >"$node_dir/package.json"
  npm install --prefix "$node_dir" --no-audit --no-fund --silent "http-signature@$npm_pin"
fi
echo "signature interop tools ready: $("$venv/bin/pip" show http-message-signatures | sed -n 's/^Version: /http-message-signatures /p'), http-signature $(node -p "require('$node_dir/node_modules/http-signature/package.json').version")"
