#!/usr/bin/env bash
# The container images: tests/images/build.sh builds both (static release binaries, the ones
# tests/suite.d/90-bench-smoke.sh then measures; buildah, no daemon) and is run twice, which
# must give the same two digests (it starts from a clean store and leaves only the archives);
# tests/images/check.sh unpacks each archive and runs its entrypoint chrooted, as the image's
# user, in a network namespace with only the loopback interface (tests/setup.d/70-images.sh
# installs buildah, skopeo and umoci).
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$SECONDS

echo "tests/images/build.sh"
timeout 1800 tests/images/build.sh
first=$(cat target/images/digests.txt)
built=$SECONDS
echo "tests/images/build.sh, again"
timeout 600 tests/images/build.sh >/dev/null
if [ "$(cat target/images/digests.txt)" = "$first" ]; then
  echo "  ok   the second build gives the same digests"
else
  echo "  FAIL the second build gives other digests:" >&2
  diff <(echo "$first") target/images/digests.txt >&2 || true
  exit 1
fi
archives=$(cd target/images && ls -- *.tar | tr '\n' ' ')
if [ "$archives" = "portcullis-operator.tar portcullis-sidecar.tar " ] && [ ! -e target/images/storage ]; then
  echo "  ok   target/images holds the two archives, no build store: $archives"
else
  echo "  FAIL target/images: $archives$(ls -d target/images/storage 2>/dev/null)" >&2
  exit 1
fi
rebuilt=$SECONDS

echo "tests/images/check.sh"
timeout 600 tests/images/check.sh
echo "images suite: $((SECONDS - start)) s (first build $((built - start)) s, second $((rebuilt - built)) s, run test $((SECONDS - rebuilt)) s)"
