#!/usr/bin/env bash
# The container images of the sidecar and the operator, built from this checkout without a
# Docker daemon:
#
#   tests/images/build.sh               # build both, write target/images/*.tar, print digests
#   tests/images/build.sh --print-refs  # print the two image references only (no build)
#
# The images are ghcr.io/portcullis-dev/portcullis-sidecar:<appVersion> and
# ghcr.io/portcullis-dev/portcullis-operator:<appVersion>, the chart's defaults
# (charts/portcullis: values.yaml repositories, Chart.yaml appVersion, which must equal the
# crates' version). Steps:
#   1. static release binaries (tests/lib/release.sh: glibc, -C target-feature=+crt-static);
#   2. a build context in target/images/context: the binaries, images/rootfs/, Debian's CA
#      bundle (package ca-certificates) and an empty /tmp;
#   3. buildah bud of images/Containerfile, --target sidecar and --target operator, on vfs
#      storage under target/images/ that is removed afterwards; file times and the creation
#      time are the commit's (SOURCE_DATE_EPOCH if set), so the same commit and binaries give
#      the same digests;
#   4. buildah push into the OCI archives target/images/portcullis-{sidecar,operator}.tar (the
#      reference above in their index), digests in target/images/digests.txt.
# Needs buildah (tests/setup.d/70-images.sh installs Debian's). README, "Images", says how to
# load the archives into kind, k3d or a registry.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
REGISTRY=ghcr.io/portcullis-dev
NAMES=(portcullis-sidecar portcullis-operator)
OUT=$ROOT/target/images

log() { printf '[images] %s\n' "$*" >&2; }
die() { printf '[images] error: %s\n' "$*" >&2; exit 1; }

# --- names and version -----------------------------------------------------------------------
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' charts/portcullis/Chart.yaml)
[ -n "$app_version" ] || die "no appVersion in charts/portcullis/Chart.yaml"
ref() { echo "$REGISTRY/$1:$app_version"; }

if [ "${1:-}" = "--print-refs" ]; then
  for name in "${NAMES[@]}"; do ref "$name"; done
  exit 0
fi
[ $# -eq 0 ] || die "usage: $0 [--print-refs]"

crate_versions=$(cargo metadata --format-version 1 --no-deps | python3 -c '
import json, sys
pkgs = {p["name"]: p["version"] for p in json.load(sys.stdin)["packages"]}
print(" ".join(sorted({pkgs[n] for n in sys.argv[1:]})))' "${NAMES[@]}")
[ "$crate_versions" = "$app_version" ] ||
  die "the crates' version ($crate_versions) differs from the chart's appVersion ($app_version)"

command -v buildah >/dev/null || die "buildah not found: run tests/setup.d/70-images.sh (apt-get install buildah)"
for tool in strip readelf; do
  command -v "$tool" >/dev/null || die "$tool not found: apt-get install binutils"
done
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca_bundle" ] || die "$ca_bundle missing: apt-get install ca-certificates"

if git rev-parse --git-dir >/dev/null 2>&1; then
  revision=$(git rev-parse HEAD)
  git diff --quiet HEAD -- 2>/dev/null || revision="$revision-dirty"
  epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
else
  revision=unknown
  epoch=${SOURCE_DATE_EPOCH:-0}
fi
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)

# --- 1. binaries -----------------------------------------------------------------------------
source tests/lib/release.sh
log "building static release binaries (cargo build --release --target $(release_triple), +crt-static)"
release_build portcullis-sidecar portcullis-operator
bin=$(release_dir)
for name in "${NAMES[@]}"; do
  [ -x "$bin/$name" ] || die "$bin/$name was not built"
  # A static binary has no program interpreter (no ld.so, no libc.so to find in the image).
  if LC_ALL=C readelf -l "$bin/$name" | grep -q 'Requesting program interpreter'; then
    die "$bin/$name is dynamically linked"
  fi
done

# --- 2. build context --------------------------------------------------------------------------
storage=$OUT/storage
buildah=(buildah --root "$storage/root" --runroot "$storage/run" --storage-driver vfs)
cleanup() {
  if [ -d "$storage/root" ]; then "${buildah[@]}" rmi --all --force >/dev/null 2>&1 || true; fi
  rm -rf "$storage" "$OUT/context"
}
trap cleanup EXIT
cleanup
rm -f "$OUT"/*.tar "$OUT"/*.digest "$OUT/digests.txt"
mkdir -p "$storage/tmp" "$OUT/context"
export TMPDIR=$storage/tmp   # buildah's scratch files, inside target/ too

ctx=$OUT/context
cp -R images/rootfs "$ctx/rootfs"
install -d -m 1777 "$ctx/rootfs/tmp"
install -D -m 0644 "$ca_bundle" "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"
chmod -R u=rwX,go=rX "$ctx/rootfs/etc"
chmod 1777 "$ctx/rootfs/tmp"
for name in "${NAMES[@]}"; do
  # Symbols only serve backtraces; without them each image is several MB smaller.
  strip --strip-all -o "$ctx/$name" "$bin/$name"
  chmod 0755 "$ctx/$name"
done
# Every file the images hold gets the commit's time, whatever the checkout's times are.
find "$ctx" -exec touch -h -d "@$epoch" {} +

# --- 3./4. images and archives -----------------------------------------------------------------
log "building images (buildah, vfs storage under $storage), version $app_version, revision $revision"
: >"$OUT/digests.txt"
for name in "${NAMES[@]}"; do
  image=$(ref "$name")
  "${buildah[@]}" bud --quiet --isolation chroot --layers=false --pull=never \
    --timestamp "$epoch" --target "${name#portcullis-}" \
    --build-arg "VERSION=$app_version" --build-arg "REVISION=$revision" \
    --build-arg "CREATED=$created" \
    -f images/Containerfile -t "$image" "$ctx" >/dev/null
  "${buildah[@]}" push --quiet --digestfile "$OUT/$name.digest" \
    "$image" "oci-archive:$OUT/$name.tar:$image" >/dev/null
  digest=$(cat "$OUT/$name.digest")
  rm -f "$OUT/$name.digest"
  printf '%s@%s\n' "$image" "$digest" >>"$OUT/digests.txt"
  printf '%s@%s  target/images/%s.tar  %s\n' "$image" "$digest" "$name" \
    "$(du -h "$OUT/$name.tar" | cut -f1)"
done
