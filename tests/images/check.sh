#!/usr/bin/env bash
# The images tests/images/build.sh wrote run: each OCI archive in target/images/ is unpacked
# (umoci: the root filesystem and the runtime config the image asks for), checked, and its
# entrypoint run from that root filesystem, chrooted, as the image's user, in a network
# namespace of its own that has nothing but the loopback interface:
#
#   tests/images/check.sh     # after tests/images/build.sh; tests/suite.d/70-images.sh runs both
#
# Checks, per image: the reference in the archive is the chart's default (build.sh
# --print-refs), the OCI labels carry the binary's version (its --version) and this commit, the
# user is not root, the root filesystem holds only the binary, passwd/group/nsswitch.conf, the
# CA bundle and /tmp (so no shell, no package manager), and its size (under 20 MiB). Then:
#   operator: `crds` prints crds/ exactly; `render` compiles examples/ plus a route to an origin
#     named by DNS into a configuration directory; `run` becomes ready and reconciles examples/
#     against the repository's fake API server (tests/fake-apiserver, a host process);
#   sidecar: serves that configuration: /healthz on the admin port, Basic-auth route admitted
#     (200, through to the demo backend) and refused with a wrong password (401), and the origin
#     route, whose name the static binary resolves through /etc/resolv.conf (a DNS responder on
#     127.0.0.1:53 inside the namespace); the audit log lands in the image's /tmp.
# Last, a private containerd imports both archives the way `kind load image-archive` and
# `k3d image import` do (`ctr images import`), and they must come out under the chart's names.
# Needs root (chroot, unshare) and tests/setup.d/70-images.sh's packages.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=$ROOT/target/images
MAX_BYTES=$((20 * 1024 * 1024))

# --- inside the network namespace (the script runs itself through `unshare --net`) -----------
if [ "${1:-}" = "--in-netns" ]; then
  work=$2
  failures=0
  pass() { printf '  ok   %s\n' "$*"; }
  fail() { printf '  FAIL %s\n' "$*" >&2; failures=$((failures + 1)); }
  pids=()
  cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
  }
  trap cleanup EXIT
  trap 'exit 1' INT TERM
  ip link set lo up
  if ip -o link show | grep -qv ' lo:'; then
    echo "network namespace has interfaces besides lo" >&2; exit 1
  fi

  # exec_image IMAGE ARGS...: becomes the image's entrypoint, chrooted into its root
  # filesystem, as its user, with its environment only. run: in the foreground; start: in the
  # background (its pid, the entrypoint's once exec'd, in pids and last_pid).
  exec_image() {
    local image=$1; shift
    local rootfs="$work/$image/bundle/rootfs" uid gid
    uid=$(cat "$work/$image/uid") gid=$(cat "$work/$image/gid")
    mapfile -t entry <"$work/$image/args"
    mapfile -t envv <"$work/$image/env"
    exec env -i "${envv[@]}" chroot --userspec="$uid:$gid" --groups="$gid" "$rootfs" "${entry[@]}" "$@"
  }
  run() { (exec_image "$@"); }
  start() { exec_image "$@" & last_pid=$!; pids+=("$last_pid"); }

  echo "operator (chroot, uid $(cat "$work/operator/uid"))"
  op_root="$work/operator/bundle/rootfs"
  if run operator crds >"$work/crds.out" 2>"$work/crds.err" &&
    cat crds/securityprofile.yaml crds/apiroute.yaml | cmp -s - "$work/crds.out"; then
    pass "portcullis-operator crds prints crds/ ($(grep -c '^kind: CustomResourceDefinition' "$work/crds.out") CRDs)"
  else
    cat "$work/crds.err" >&2; fail "portcullis-operator crds does not print crds/"
  fi
  # The render's input (examples/ and the DNS-named origin route) and output, inside the
  # operator's root filesystem, the output owned by the image's user.
  mkdir -p "$op_root/work/in" "$op_root/work/config"
  cp examples/*.yaml "$work/origin-route.yaml" "$op_root/work/in/"
  chown "$(cat "$work/operator/uid"):$(cat "$work/operator/gid")" "$op_root/work/config"
  if run operator render -f /work/in --out /work/config --org-allowance 100 >"$work/render.out" 2>&1 &&
    [ -s "$op_root/work/config/config.json" ] && [ -s "$op_root/work/config/secrets.json" ]; then
    pass "portcullis-operator render -f examples/ wrote config.json and secrets.json"
  else
    cat "$work/render.out" >&2; fail "portcullis-operator render"
  fi

  # `run`: the controllers, against the repository's fake API server (a host process on
  # 127.0.0.1) seeded with examples/; its kubeconfig is written into the image's filesystem.
  "$work/fake-apiserver" --kubeconfig "$op_root/work/kubeconfig" --namespace demo --seed examples \
    >"$work/apiserver.out" 2>"$work/apiserver.log" &
  pids+=($!)
  for _ in $(seq 1 100); do [ -s "$op_root/work/kubeconfig" ] && break; sleep 0.1; done
  chmod 0644 "$op_root/work/kubeconfig" 2>/dev/null || true
  start operator run --kubeconfig /work/kubeconfig --admin 127.0.0.1:18080 --lease-namespace demo \
    --identity image-test --lease-duration 15 --lease-renew 5 >"$work/operator.log" 2>&1
  reconciled="" ready=000
  for _ in $(seq 1 300); do   # up to 30 s
    reconciled=$(curl -s http://127.0.0.1:18080/metrics | grep -E '^portcullis_operator_reconciles_total\{result="ok"\} [1-9]' || true)
    ready=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18080/readyz || true)
    [ -n "$reconciled" ] && [ "$ready" = 200 ] && break
    sleep 0.1
  done
  if [ -n "$reconciled" ] && [ "$ready" = 200 ]; then
    pass "portcullis-operator run: /readyz 200, reconciled examples/ against the fake API server ($reconciled)"
  else
    tail -n 20 "$work/operator.log" >&2
    fail "portcullis-operator run: /readyz $ready, reconciles '${reconciled:-none}'"
  fi

  echo "sidecar (chroot, uid $(cat "$work/sidecar/uid"))"
  sc_root="$work/sidecar/bundle/rootfs"
  mkdir -p "$sc_root/config"
  cp "$op_root/work/config/config.json" "$op_root/work/config/secrets.json" "$sc_root/config/"
  chown -R "$(cat "$work/sidecar/uid"):$(cat "$work/sidecar/gid")" "$sc_root/config"
  # What the kubelet mounts into a pod: the resolver's configuration (no /etc/hosts, so the
  # origin's name can only come from DNS).
  printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:2\n' >"$sc_root/etc/resolv.conf"
  python3 - "$work/dns.log" <<'PY' >"$work/dns.out" 2>&1 &
# A DNS responder for the test: origin.portcullis.test has the address 127.0.0.1 (IPv4 only),
# every other name does not exist. Each question is logged.
import socket, struct, sys
log = open(sys.argv[1], "a", buffering=1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
print("ready", flush=True)
while True:
    q, peer = s.recvfrom(512)
    i = 12
    labels = []
    while q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode("ascii", "replace"))
        i += q[i] + 1
    qtype = struct.unpack(">H", q[i + 1:i + 3])[0]
    question = q[12:i + 5]
    name = ".".join(labels).lower()
    print(name, qtype, file=log)
    if name == "origin.portcullis.test":
        answers = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 30, 4) + socket.inet_aton("127.0.0.1") if qtype == 1 else b""
        flags, count = 0x8580, 1 if qtype == 1 else 0
    else:
        answers, flags, count = b"", 0x8583, 0
    s.sendto(q[:2] + struct.pack(">HHHHH", flags, 1, count, 0, 0) + question + answers, peer)
PY
  pids+=($!)
  for _ in $(seq 1 100); do grep -q ready "$work/dns.out" 2>/dev/null && break; sleep 0.1; done
  grep -q ready "$work/dns.out" || { cat "$work/dns.out" >&2; echo "the DNS responder did not start" >&2; exit 1; }
  # The app the examples route to (127.0.0.1:8080), and the origin (8081): the image's own
  # demo backend, which echoes what it received.
  start sidecar demo-backend --listen 127.0.0.1:8080 >"$work/backend.log" 2>&1
  start sidecar demo-backend --listen 127.0.0.1:8081 >"$work/origin.log" 2>&1
  start sidecar --log-format text --config-dir /config --inbound 127.0.0.1:15080 \
    --inbound-tls 127.0.0.1:15443 --egress 127.0.0.1:15001 --admin 127.0.0.1:15090 \
    --audit-log /tmp/audit.log --allow-loopback-origins >"$work/sidecar.log" 2>&1
  sidecar_pid=$last_pid
  healthz=000
  for _ in $(seq 1 100); do   # up to 10 s
    healthz=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:15090/healthz || true)
    [ "$healthz" = 200 ] && curl -s -o /dev/null http://127.0.0.1:8080/ && curl -s -o /dev/null http://127.0.0.1:8081/ && break
    sleep 0.1
  done
  if [ "$healthz" = 200 ]; then
    pass "GET /healthz on the admin port: 200"
  else
    cat "$work/sidecar.log" >&2; fail "GET /healthz on the admin port: $healthz"
  fi
  # The process is the image's binary, running as the image's user.
  proc_exe=$(readlink "/proc/$sidecar_pid/exe" 2>/dev/null || echo "?")
  proc_ids=$(awk '/^Uid:/ {u=$2} /^Gid:/ {g=$2} END {print u ":" g}' "/proc/$sidecar_pid/status" 2>/dev/null || echo "?")
  if [ "$proc_ids" = "$(cat "$work/sidecar/uid"):$(cat "$work/sidecar/gid")" ] && [ "$proc_exe" = "$sc_root/usr/local/bin/portcullis-sidecar" ]; then
    pass "the sidecar process is the image's binary, running as $proc_ids"
  else
    fail "the sidecar process is $proc_exe running as $proc_ids"
  fi

  expect() { # STATUS WHAT CURL_ARGS...
    local want=$1 what=$2 got; shift 2
    got=$(curl -s -o "$work/body" -w '%{http_code}' "$@" || true)
    if [ "$got" = "$want" ]; then pass "$what: $got"; else fail "$what: $got, expected $want"; fi
  }
  expect 200 "alice on the rendered route /finance/ledger" -u alice:wonderland http://127.0.0.1:15080/finance/ledger
  grep -q '/finance/ledger' "$work/body" || fail "the backend's answer does not echo /finance/ledger"
  expect 401 "a wrong password on /finance/ledger" -u alice:nope http://127.0.0.1:15080/finance/ledger
  expect 200 "the route to http://origin.portcullis.test:8081 (a DNS name)" http://127.0.0.1:15080/origin/hello
  # The origin (the demo backend on 8081, nothing else listens there) echoes the route it was
  # sent by; the name was asked of the DNS responder.
  if grep -q '"x-portcullis-route":"image-test-origin"' "$work/body" && grep -q '"path":"/origin/hello"' "$work/body" &&
    grep -q '^origin.portcullis.test 1$' "$work/dns.log"; then
    pass "the static binary resolved origin.portcullis.test through DNS ($(sort -u "$work/dns.log" | tr '\n' ' '))"
  else
    fail "no DNS question for origin.portcullis.test, or the origin did not answer: $(cat "$work/dns.log" 2>/dev/null)"
  fi
  for _ in $(seq 1 50); do [ -s "$sc_root/tmp/audit.log" ] && break; sleep 0.1; done
  if [ -s "$sc_root/tmp/audit.log" ]; then
    pass "audit log written in the image's /tmp ($(wc -l <"$sc_root/tmp/audit.log") lines)"
  else
    fail "no audit log in the image's /tmp"
  fi
  if [ "$failures" -gt 0 ]; then
    echo "--- sidecar log" >&2; tail -n 30 "$work/sidecar.log" >&2
  fi
  exit "$failures"
fi

# --- outside: unpack and inspect -------------------------------------------------------------
for tool in umoci skopeo containerd ctr unshare chroot curl python3 ip; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool not found: run tests/setup.d/70-images.sh" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "FAIL: the run test needs root (chroot, unshare --net)" >&2; exit 1; }

work=$OUT/check
rm -rf "$work"
mkdir -p "$work"
ctrd="" ctrd_pid=""
outside_cleanup() {
  if [ -n "$ctrd_pid" ]; then kill "$ctrd_pid" 2>/dev/null || true; wait "$ctrd_pid" 2>/dev/null || true; fi
  if [ -n "$ctrd" ]; then rm -rf "$ctrd"; fi
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap outside_cleanup EXIT
failures=0
pass() { printf '  ok   %s\n' "$*"; }
fail() { printf '  FAIL %s\n' "$*" >&2; failures=$((failures + 1)); }

mapfile -t refs < <(tests/images/build.sh --print-refs)
app_version=${refs[0]##*:}
head_commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)

for image in sidecar operator; do
  name=portcullis-$image
  archive=$OUT/$name.tar
  echo "$name ($archive)"
  [ -s "$archive" ] || { fail "$archive missing: run tests/images/build.sh"; continue; }
  ref=$(printf '%s\n' "${refs[@]}" | grep "/$name:")
  mkdir -p "$work/$image/layout"
  tar -xf "$archive" -C "$work/$image/layout"

  # The archive's index names the chart's image; its digest is the one build.sh printed.
  index_ref=$(python3 -c 'import json,sys; print(" ".join(m.get("annotations",{}).get("org.opencontainers.image.ref.name","") for m in json.load(open(sys.argv[1]))["manifests"]))' "$work/$image/layout/index.json")
  if [ "$index_ref" = "$ref" ]; then pass "archive names $ref"; else fail "archive names '$index_ref', expected $ref"; fi
  skopeo inspect "oci-archive:$archive" >"$work/$image/inspect.json"
  digest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["Digest"])' "$work/$image/inspect.json")
  if grep -qx "$ref@$digest" "$OUT/digests.txt" 2>/dev/null; then
    pass "digest $digest (target/images/digests.txt)"
  else
    fail "digest $digest not in target/images/digests.txt"
  fi

  # Unpack: the root filesystem and the runtime config (user, entrypoint, environment).
  umoci unpack --image "$work/$image/layout:$ref" "$work/$image/bundle" >"$work/$image/umoci.log" 2>&1 ||
    { cat "$work/$image/umoci.log" >&2; fail "umoci unpack"; continue; }
  rootfs=$work/$image/bundle/rootfs
  python3 - "$work/$image" <<'PY'
import json, os, sys
d = sys.argv[1]
c = json.load(open(os.path.join(d, "bundle", "config.json")))
p = c["process"]
open(os.path.join(d, "uid"), "w").write(str(p["user"]["uid"]))
open(os.path.join(d, "gid"), "w").write(str(p["user"]["gid"]))
open(os.path.join(d, "args"), "w").write("".join(a + "\n" for a in p["args"]))
open(os.path.join(d, "env"), "w").write("".join(e + "\n" for e in p.get("env", [])))
PY
  uid=$(cat "$work/$image/uid") gid=$(cat "$work/$image/gid")
  if [ "$uid" != 0 ] && [ "$gid" != 0 ]; then pass "user $uid:$gid (not root)"; else fail "user $uid:$gid is root"; fi
  entry=$(head -n1 "$work/$image/args")
  if [ "$entry" = "/usr/local/bin/$name" ]; then pass "entrypoint $entry"; else fail "entrypoint $entry"; fi

  # Labels: the binary's version and this commit.
  bin_version=$(chroot --userspec="$uid:$gid" --groups="$gid" "$rootfs" "$entry" --version | awk '{print $2}')
  if python3 - "$work/$image/inspect.json" "$app_version" "$bin_version" "$head_commit" "$name" <<'PY'; then
import json, sys
labels = json.load(open(sys.argv[1]))["Labels"]
version, bin_version, commit, name = sys.argv[2:6]
want = {
    "org.opencontainers.image.title": name,
    "org.opencontainers.image.version": version,
    "org.opencontainers.image.licenses": "Apache-2.0",
    "org.opencontainers.image.source": "https://github.com/portcullis-dev/portcullis",
}
bad = [f"{k}={labels.get(k)!r}, expected {v!r}" for k, v in want.items() if labels.get(k) != v]
if bin_version != version:
    bad.append(f"the binary says {bin_version!r}, the label {version!r}")
rev = labels.get("org.opencontainers.image.revision", "")
if rev.removesuffix("-dirty") != commit:
    bad.append(f"revision {rev!r}, expected {commit!r}")
for k in ("org.opencontainers.image.created", "org.opencontainers.image.description"):
    if not labels.get(k):
        bad.append(f"no {k}")
for b in bad:
    print("   -", b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
    pass "labels: version $app_version (= $entry --version), revision $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["Labels"]["org.opencontainers.image.revision"])' "$work/$image/inspect.json")"
  else
    fail "labels"
  fi

  # Contents: exactly these files, so no shell, no package manager, nothing else to run.
  want_files="/etc/group
/etc/nsswitch.conf
/etc/passwd
/etc/ssl/certs/ca-certificates.crt
/usr/local/bin/$name"
  files=$(cd "$rootfs" && find . ! -type d | sed 's#^\.##' | LC_ALL=C sort)
  if [ "$files" = "$want_files" ]; then
    pass "holds only: $(tr '\n' ' ' <<<"$files")"
  else
    fail "unexpected contents: $(diff <(echo "$want_files") <(echo "$files") | grep '^[<>]' | tr '\n' ' ')"
  fi
  for sh in sh bash dash ash busybox; do
    if [ -e "$rootfs/bin/$sh" ] || [ -e "$rootfs/usr/bin/$sh" ]; then fail "has a shell: $sh"; fi
  done
  if env -i chroot --userspec="$uid:$gid" --groups="$gid" "$rootfs" /bin/sh -c true 2>/dev/null; then
    fail "/bin/sh runs inside the image"
  else
    pass "no shell: /bin/sh does not run inside the image"
  fi
  if [ "$(stat -c %a "$rootfs/tmp")" = 1777 ]; then pass "/tmp is 1777"; else fail "/tmp is $(stat -c %a "$rootfs/tmp")"; fi
  if grep -q "^[^:]*:x:$uid:$gid:" "$rootfs/etc/passwd"; then
    pass "/etc/passwd names uid $uid ($(grep "^[^:]*:x:$uid:" "$rootfs/etc/passwd" | cut -d: -f1))"
  else
    fail "/etc/passwd has no entry for $uid:$gid"
  fi
  certs=$(grep -c 'BEGIN CERTIFICATE' "$rootfs/etc/ssl/certs/ca-certificates.crt" || true)
  if [ "${certs:-0}" -gt 50 ]; then pass "CA bundle: $certs certificates"; else fail "CA bundle: $certs certificates"; fi

  # Size: what a node stores (unpacked) and what it pulls (compressed layers).
  unpacked=$(du -sb "$rootfs" | cut -f1)
  pulled=$(python3 - "$work/$image/layout" <<'PY'
import json, os, sys
layout = sys.argv[1]
blob = lambda d: os.path.join(layout, "blobs", *d.split(":"))
(m,) = json.load(open(os.path.join(layout, "index.json")))["manifests"]
print(sum(layer["size"] for layer in json.load(open(blob(m["digest"])))["layers"]))
PY
)
  mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
  if [ "$unpacked" -lt "$MAX_BYTES" ]; then
    pass "size: $(mib "$unpacked") unpacked, $(mib "$pulled") compressed (target under 20 MiB)"
  else
    fail "size: $(mib "$unpacked") unpacked, over 20 MiB"
  fi
  echo "$name $digest $unpacked $pulled" >>"$work/sizes"
done

if [ "$failures" -gt 0 ]; then
  echo "images: $failures failure(s) before running them" >&2
  exit 1
fi

# --- run them, offline ------------------------------------------------------------------------
# The fake API server the operator image's `run` talks to (a debug build, as the other suites use).
cargo build -q -p portcullis-fake-apiserver --bin fake-apiserver
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
cp "$target_dir/debug/fake-apiserver" "$work/fake-apiserver"
cat >"$work/origin-route.yaml" <<'YAML'
# The image test's route to an origin named by DNS (tests/images/check.sh): anyone, GET only.
apiVersion: portcullis.dev/v1alpha1
kind: ApiRoute
metadata:
  name: image-test-origin
  namespace: demo
spec:
  workloadSelector:
    matchLabels: {app: demo-api}
  pathPrefix: /origin
  methods: [GET]
  profiles: [{name: public}]
  backend:
    origin:
      url: http://origin.portcullis.test:8081
YAML
if ! timeout 120 unshare --net -- bash "$ROOT/tests/images/check.sh" --in-netns "$work"; then
  echo "images: the run test failed" >&2
  exit 1
fi

# --- loaded as kind and k3d load them ---------------------------------------------------------
# `kind load image-archive` pipes the archive to `ctr --namespace=k8s.io images import
# --all-platforms --digests --snapshotter=...` on each node, `k3d image import` runs `ctr image
# import FILE`: a private containerd (own socket, state and root, no CRI) does the same, and the
# images must come out under the names the chart uses.
echo "containerd $(containerd --version | awk '{print $3}'): ctr images import, as kind and k3d run it"
ctrd=$(mktemp -d /tmp/portcullis-ctrd.XXXXXX)
printf 'version = 2\nroot = "%s/root"\nstate = "%s/state"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "%s/containerd.sock"\n' \
  "$ctrd" "$ctrd" "$ctrd" >"$ctrd/config.toml"
containerd --config "$ctrd/config.toml" >"$work/containerd.log" 2>&1 &
ctrd_pid=$!
for _ in $(seq 1 100); do [ -S "$ctrd/containerd.sock" ] && break; sleep 0.1; done
ctr=(ctr --address "$ctrd/containerd.sock")
for image in sidecar operator; do
  "${ctr[@]}" --namespace=k8s.io images import --all-platforms --digests --snapshotter=native - \
    <"$OUT/portcullis-$image.tar" >>"$work/ctr.log" 2>&1 || fail "kind's import of portcullis-$image.tar"
  "${ctr[@]}" --namespace=k3d images import "$OUT/portcullis-$image.tar" >>"$work/ctr.log" 2>&1 ||
    fail "k3d's import of portcullis-$image.tar"
done
want=$(printf '%s\n' "${refs[@]}" | LC_ALL=C sort)
for ns in k8s.io k3d; do
  got=$("${ctr[@]}" --namespace=$ns images ls -q 2>>"$work/ctr.log" | grep -v '@' | LC_ALL=C sort || true)
  if [ "$got" = "$want" ]; then
    pass "namespace $ns holds $(tr '\n' ' ' <<<"$got")"
  else
    tail -n 20 "$work/ctr.log" "$work/containerd.log" >&2 || true
    fail "namespace $ns holds '$(tr '\n' ' ' <<<"$got")', expected $(tr '\n' ' ' <<<"$want")"
  fi
done

if [ "$failures" -gt 0 ]; then
  echo "images: $failures failure(s)" >&2
  exit 1
fi
echo "images: all checks passed"
