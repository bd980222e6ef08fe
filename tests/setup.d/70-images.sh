#!/usr/bin/env bash
# Image tooling for tests/images/build.sh and tests/images/check.sh (run by
# tests/suite.d/70-images.sh), Debian 12's packages: buildah (builds the images without a
# Docker daemon), skopeo (reads the OCI archives), umoci (unpacks them into a root filesystem
# and the runtime config the image asks for), containerd (its `ctr images import` is what
# `kind load image-archive` and `k3d image import` run on the nodes), and what the run test
# drives (binutils: readelf, strip; iproute2 and util-linux: its own network namespace).
# Idempotent: nothing happens when every package is installed.
#
# containerd's package would start a system service where systemd runs; the test starts its own
# daemon on a private socket, so the install goes through a policy-rc.d that forbids service
# starts (removed afterwards unless one was already there).
set -euo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for pkg in buildah skopeo umoci containerd binutils iproute2 util-linux ca-certificates curl; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
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
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
echo "image tools ready: $(buildah --version | cut -d' ' -f1-3), $(skopeo --version), $(umoci --version), containerd $(containerd --version | awk '{print $3}')"
