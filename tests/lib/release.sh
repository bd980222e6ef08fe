# The release binaries the images ship, the benchmark measures and the soak runs; sourced, never
# run (tests/images/build.sh, tests/bench/run.sh, tests/soak/run.sh).
#
#   release_build PACKAGE...   cargo build --release of those packages, statically linked
#                              (glibc, -C target-feature=+crt-static), for the host's triple
#   release_dir                prints the directory the binaries are in:
#                              <target dir>/<host triple>/release
#
# --target keeps these builds apart from the plain `cargo build --release` ones: RUSTFLAGS then
# apply to the target's crates only (build scripts and proc macros stay shared with the other
# builds), and nothing in <target dir>/release is rebuilt. Every caller passes the same flags,
# so the first build is the only one: the next callers find it up to date. Callers building
# other packages as well build them in a separate release_build, so that the sidecar's and the
# operator's dependencies are resolved with the same features every time.

PORTCULLIS_RELEASE_RUSTFLAGS="-C target-feature=+crt-static"

release_triple() {
  rustc -vV | sed -n 's/^host: //p'
}

release_dir() {
  local target_dir
  target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  echo "$target_dir/$(release_triple)/release"
}

release_build() {
  local pkgs=() p
  for p in "$@"; do pkgs+=(-p "$p"); done
  RUSTFLAGS="$PORTCULLIS_RELEASE_RUSTFLAGS" cargo build --release --locked --quiet \
    --target "$(release_triple)" "${pkgs[@]}"
}
