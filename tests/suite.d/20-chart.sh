#!/usr/bin/env bash
# The Helm chart (charts/portcullis), checked with the real tools (tests/setup.d/30-helm.sh
# installs them):
#   1. the chart's CRDs (files/crds/) are byte-identical to crds/, and its RBAC rules
#      (files/rbac.yaml) to operator/rbac.yaml;
#   2. helm lint --strict, with the default values and with non-default ones;
#   3. helm template with default and non-default values; wrong values are refused by
#      values.schema.json (non-zero exit and the schema's message);
#   4. every rendered manifest validates offline against the Kubernetes OpenAPI schemas
#      (kubernetes-validate --strict, for the oldest and newest Kubernetes the chart supports);
#      objects of custom types (monitoring.coreos.com) are skipped, CRDs themselves are
#      validated, and the rendered CRDs are the ones in crds/ plus the chart's metadata;
#   7. the pods the injection webhook produces (operator/src/webhook.rs) validate against the
#      same Kubernetes schemas;
#   6. dashboards/portcullis.json: valid Grafana JSON whose queries use only metrics the
#      sidecar and operator export (names from their metrics.rs) and, with promtool on the
#      PATH, parse as PromQL;
#   5. the settings the chart hands the operator carry the values they were given, and every
#      flag the Deployment passes to `portcullis-operator run` is one `run --help` lists; the
#      operator reads the rendered settings as at start (sidecar.limitsStore: the injected
#      sidecar's --limits-store flags and password Secret volume; values it refuses);
#   8. the default images (operator Deployment, injected sidecar) are exactly the references
#      tests/images/build.sh tags.
set -euo pipefail
cd "$(dirname "$0")/../.."
TOOLS="${PORTCULLIS_TOOLS:-$PWD/target/tools}"
export PATH="$TOOLS/bin:$PATH"
CHART=charts/portcullis
PY="$TOOLS/venv/bin/python3"   # has PyYAML (a kubernetes-validate dependency)
K8S_VERSIONS=(1.29.0 1.37.0)

for tool in helm kubernetes-validate "$PY"; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool not found: run tests/setup.d/30-helm.sh" >&2; exit 1; }
done

work="$(mktemp -d)"
trap '[ -n "${KEEP_WORK:-}" ] || rm -rf "$work"' EXIT
failures=0
pass() { printf '  ok   %s\n' "$*"; }
fail() { printf '  FAIL %s\n' "$*" >&2; failures=$((failures + 1)); }

# --- 1. CRDs are a faithful copy ----------------------------------------------------------
echo "CRDs: $CHART/files/crds/ == crds/"
if diff -r crds "$CHART/files/crds" >"$work/crd.diff"; then
  pass "files/crds/ is byte-identical to crds/"
else
  cat "$work/crd.diff" >&2
  fail "files/crds/ differs from crds/ (refresh: cp crds/*.yaml $CHART/files/crds/)"
fi

echo "RBAC: $CHART/files/rbac.yaml == operator/rbac.yaml"
if [ ! -e operator/rbac.yaml ]; then
  echo "  skip operator/rbac.yaml not in this checkout"
elif cmp -s operator/rbac.yaml "$CHART/files/rbac.yaml"; then
  pass "files/rbac.yaml is byte-identical to operator/rbac.yaml"
else
  diff operator/rbac.yaml "$CHART/files/rbac.yaml" >&2 || true
  fail "files/rbac.yaml differs from operator/rbac.yaml (refresh: cp operator/rbac.yaml $CHART/files/)"
fi

# --- non-default values ---------------------------------------------------------------------
cat >"$work/values-custom.yaml" <<'YAML'
fullnameOverride: pc
crds:
  install: true
operator:
  image: {repository: registry.example.com/portcullis-operator, tag: "1.2.3", pullPolicy: Always}
  replicas: 3
  leaderElection: {leaseName: pc-leader}
  logLevel: debug
  adminPort: 9080
  webhookPort: 10443
  resources: {requests: {cpu: 100m, memory: 128Mi}, limits: {cpu: "1", memory: 512Mi}}
  podAnnotations: {example.com/team: platform}
  podLabels: {team: platform}
  nodeSelector: {kubernetes.io/os: linux}
  tolerations: [{key: dedicated, operator: Equal, value: infra, effect: NoSchedule}]
  priorityClassName: system-cluster-critical
  runAsUser: 10001
imagePullSecrets: [{name: regcred}]
serviceAccount: {create: true, name: portcullis-sa, annotations: {example.com/role: operator}}
orgAllowance:
  requestsPerMinute: 1000000
trustedProxies: [10.0.0.0/8, "fd00::/8"]
sidecar:
  image: {repository: registry.example.com/portcullis-sidecar, tag: "1.2.3", pullPolicy: Always}
  resources: {requests: {cpu: 50m, memory: 64Mi}, limits: {cpu: 500m, memory: 256Mi}}
  ports: {inbound: 8081, inboundTls: 8443, egress: 8001, admin: 9091}
  runAsUser: 10002
  native: false
  extraArgs: ["--auth-failures-per-address", "60"]
  workers: 2
  maxConnectionsPerClient: 32
webhook:
  failurePolicy: Ignore
  timeoutSeconds: 5
  servicePort: 8443
  injection: {enabled: true}
  validation: {enabled: true}
  excludeNamespaces: [kube-system, monitoring]
podDisruptionBudget: {enabled: true, minAvailable: 2}
serviceMonitor:
  enabled: true
  interval: 15s
  scrapeTimeout: 5s
  labels: {release: prometheus}
  sidecars: true
YAML
cat >"$work/values-minimal.yaml" <<'YAML'
crds: {install: false}
operator: {replicas: 1}
serviceAccount: {create: false, name: existing}
webhook: {injection: {enabled: false}, validation: {enabled: false}}
networkPolicy: {enabled: false}
YAML

# --- 2. lint -------------------------------------------------------------------------------
echo "helm lint --strict"
for values in "" "$work/values-custom.yaml" "$work/values-minimal.yaml"; do
  if helm lint --strict "$CHART" ${values:+-f "$values"} >"$work/lint.out" 2>&1; then
    pass "lint with $(basename "${values:-defaults}")"
  else
    cat "$work/lint.out" >&2; fail "lint with $(basename "${values:-defaults}")"
  fi
done

# --- 3. template ---------------------------------------------------------------------------
echo "helm template"
render() { # NAME VALUES...
  local name="$1"; shift
  if helm template portcullis "$CHART" --namespace portcullis-system "$@" >"$work/$name.yaml" 2>"$work/$name.err"; then
    pass "template $name"
  else
    cat "$work/$name.err" >&2; fail "template $name"; return 1
  fi
}
render default || true
render custom -f "$work/values-custom.yaml" || true
render minimal -f "$work/values-minimal.yaml" || true
# A shared limits store behind Sentinel (commas in --set values are escaped), with a password
# Secret; and one the schema lets through but the operator refuses at start (extraArgs that
# repeat the store's flags).
STORE_URL='redis-sentinel://redis-sentinel-0.cache:26379,redis-sentinel-1.cache:26379/limits'
render store --set-string "sidecar.limitsStore.url=${STORE_URL//,/\\,}" \
  --set sidecar.limitsStore.passwordSecret.name=redis-auth \
  --set sidecar.limitsStore.passwordSecret.key=redis-password \
  --set sidecar.limitsStore.timeout=250ms || true
render store-extra --set sidecar.limitsStore.url=redis://redis.cache:6379 \
  --set-json 'sidecar.extraArgs=["--limits-store-timeout","1s"]' || true

refused() { # WHAT EXPECTED_MESSAGE HELM_ARGS...
  local what="$1" want="$2"; shift 2
  if helm template portcullis "$CHART" "$@" >"$work/refused.out" 2>&1; then
    fail "$what: accepted, expected a schema error"
  elif grep -qi -- "$want" "$work/refused.out"; then
    pass "$what: refused ($(grep -i -m1 -o -- "$want.*" "$work/refused.out" | cut -c1-90))"
  else
    cat "$work/refused.out" >&2; fail "$what: refused, but without \"$want\""
  fi
}
refused "orgAllowance.requestsPerMinute=0" "minimum" --set orgAllowance.requestsPerMinute=0
refused "orgAllowance.requestsPerMinute=-5" "minimum" --set orgAllowance.requestsPerMinute=-5
refused "orgAllowance.requestsPerMinute=lots" "requestsPerMinute" --set-string orgAllowance.requestsPerMinute=lots
refused "unknown top-level key" "additional properties" --set replicaCount=2
refused "unknown sidecar key" "additional properties" --set sidecar.port=15080
refused "operator.replicas=0" "minimum" --set operator.replicas=0
refused "sidecar.ports.admin=70000" "maximum" --set sidecar.ports.admin=70000
refused "webhook.failurePolicy=Sometimes" "failurePolicy" --set webhook.failurePolicy=Sometimes
refused "sidecar.image.pullPolicy=Maybe" "pullPolicy" --set sidecar.image.pullPolicy=Maybe
refused "networkPolicy.enabled=maybe" "enabled" --set-string networkPolicy.enabled=maybe
refused "sidecar.workers=0" "workers" --set sidecar.workers=0
refused "sidecar.maxConnectionsPerClient=0" "maxConnectionsPerClient" --set sidecar.maxConnectionsPerClient=0
refused "sidecar.limitsStore.url=memcached://m:11211" "limitsStore/url" --set sidecar.limitsStore.url=memcached://m:11211
refused "sidecar.limitsStore.url without a scheme" "limitsStore/url" --set sidecar.limitsStore.url=redis.cache:6379
refused "sidecar.limitsStore.url with a password" "limitsStore/url" --set 'sidecar.limitsStore.url=redis://:hunter2@redis.cache:6379'
refused "sidecar.limitsStore.url Sentinel without a master" "limitsStore/url" --set sidecar.limitsStore.url=redis-sentinel://s0:26379
refused "sidecar.limitsStore.timeout=0ms" "limitsStore/timeout" --set sidecar.limitsStore.timeout=0ms
refused "sidecar.limitsStore.timeout=1h" "limitsStore/timeout" --set sidecar.limitsStore.timeout=1h
refused "sidecar.limitsStore.passwordSecret.name=Redis_Auth" "passwordSecret/name" --set sidecar.limitsStore.passwordSecret.name=Redis_Auth
refused "unknown sidecar.limitsStore key" "additional properties" --set sidecar.limitsStore.password=hunter2

# --- 4. validate every manifest ------------------------------------------------------------
echo "kubernetes-validate (${K8S_VERSIONS[*]})"
for name in default custom minimal store; do
  [ -s "$work/$name.yaml" ] || continue
  mkdir -p "$work/split-$name"
  "$PY" - "$work/$name.yaml" "$work/split-$name" <<'PY' || fail "$name: split"
import sys, yaml, os
src, out = sys.argv[1], sys.argv[2]
n = 0
for doc in yaml.safe_load_all(open(src)):
    if not doc:
        continue
    n += 1
    api, kind, name = doc["apiVersion"], doc["kind"], doc["metadata"]["name"]
    group = api.split("/")[0] if "/" in api else ""
    sub = "custom" if group.endswith("monitoring.coreos.com") or group.endswith("portcullis.dev") else "k8s"
    os.makedirs(os.path.join(out, sub), exist_ok=True)
    with open(os.path.join(out, sub, f"{n:02d}-{kind}-{name}.yaml"), "w") as f:
        yaml.safe_dump(doc, f)
print(n, file=open(os.path.join(out, "count"), "w"))
PY
  for v in "${K8S_VERSIONS[@]}"; do
    if kubernetes-validate --strict --quiet -k "$v" "$work/split-$name"/k8s/*.yaml >"$work/validate.out" 2>&1; then
      pass "$name: $(ls "$work/split-$name/k8s" | wc -l) manifests valid for Kubernetes $v"
    else
      cat "$work/validate.out" >&2; fail "$name: invalid for Kubernetes $v"
    fi
  done
  if [ -d "$work/split-$name/custom" ]; then
    pass "$name: skipped custom-typed $(cd "$work/split-$name/custom" && ls | sed 's/^[0-9]*-//; s/\.yaml$//' | tr '\n' ' ')"
  fi
done

# --- 4b/5. content checks --------------------------------------------------------------------
echo "rendered content"
if "$PY" - "$work" <<'PY'; then pass "CRDs, Deployment, webhooks, RBAC and settings as configured"; else fail "rendered content"; fi
import json, sys, yaml, glob, os
work = sys.argv[1]
def docs(name):
    return [d for d in yaml.safe_load_all(open(os.path.join(work, name + ".yaml"))) if d]
def one(ds, kind, name=None):
    found = [d for d in ds if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]
errors = []
def check(cond, msg):
    if not cond:
        errors.append(msg)

default, custom, minimal = docs("default"), docs("custom"), docs("minimal")

# CRDs: exactly crds/, plus labels and the keep policy.
repo = {}
for path in sorted(glob.glob("crds/*.yaml")):
    crd = yaml.safe_load(open(path))
    repo[crd["metadata"]["name"]] = crd
rendered = {d["metadata"]["name"]: d for d in default if d["kind"] == "CustomResourceDefinition"}
check(set(rendered) == set(repo), f"rendered CRDs {sorted(rendered)} != crds/ {sorted(repo)}")
for name, crd in rendered.items():
    meta = dict(crd["metadata"])
    check(meta.pop("annotations", {}).get("helm.sh/resource-policy") == "keep", f"{name}: no keep policy")
    meta.pop("labels", None)
    check({**crd, "metadata": meta} == repo.get(name), f"{name}: rendered CRD differs from crds/")
check(not any(d["kind"] == "CustomResourceDefinition" for d in minimal), "crds.install=false still renders CRDs")

# Operator Deployment: replicas, args, ports, probes, security.
for ds, replicas, admin, webhook in ((default, 2, 8080, 9443), (custom, 3, 9080, 10443)):
    dep = one(ds, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    check(dep["spec"]["replicas"] == replicas, f"replicas {dep['spec']['replicas']}")
    check(c["args"][0] == "run" and any(a.startswith("--lease-name=") for a in c["args"]), f"args {c['args']}")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    check(ports == {"admin": admin, "webhook": webhook}, f"ports {ports}")
    check(c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}, "liveness")
    check(c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}, "readiness")
    sc = c["securityContext"]
    check(sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"], f"securityContext {sc}")
    check(sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}, f"securityContext {sc}")
    check(pod["securityContext"]["runAsNonRoot"] is True, "pod runAsNonRoot")
    pdb = one(ds, "PodDisruptionBudget")
    check(pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"], "PDB selector")
cargs = one(custom, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
for want in ("--lease-name=pc-leader", "--org-allowance=1000000", "--trusted-proxies=10.0.0.0/8,fd00::/8", "--admin=0.0.0.0:9080"):
    check(want in cargs, f"custom args lack {want}: {cargs}")
dargs = one(default, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
check("--network-policy=true" in dargs and "--network-policy=true" in cargs, f"network policies on by default: {dargs}")
margs = one(minimal, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
check("--network-policy=false" in margs, f"networkPolicy.enabled=false reaches the operator: {margs}")
check(not any(a.startswith(("--org-allowance", "--trusted-proxies")) for a in dargs), f"default args {dargs}")
with open(os.path.join(work, "flags"), "w") as f:
    for flag in sorted({a.split("=")[0] for a in cargs + dargs if a.startswith("--")}):
        print(flag, file=f)
check(not any(d["kind"] == "PodDisruptionBudget" for d in minimal), "PDB rendered for one replica")
check(not any(d["kind"].endswith("WebhookConfiguration") for d in minimal), "webhooks rendered while disabled")
check(not any(d["kind"] == "ServiceMonitor" for d in default), "ServiceMonitor rendered by default")
check(one(custom, "ServiceMonitor")["metadata"]["labels"].get("release") == "prometheus", "ServiceMonitor labels")
one(custom, "PodMonitor")

# Webhooks: pods by label or by namespace label, ApiRoutes validated, service wired.
mwc = one(default, "MutatingWebhookConfiguration")
svc = one(default, "Service", "portcullis-webhook")
for wh in mwc["webhooks"]:
    check(wh["clientConfig"]["service"]["name"] == svc["metadata"]["name"], "mutating webhook service")
    check(wh["rules"][0]["resources"] == ["pods"], "mutating webhook rules")
    check("portcullis-system" in wh["namespaceSelector"]["matchExpressions"][0]["values"], "release namespace not excluded")
sels = [(w.get("objectSelector"), w.get("namespaceSelector", {}).get("matchLabels")) for w in mwc["webhooks"]]
check(({"matchLabels": {"portcullis.dev/inject": "true"}}, None) in sels, f"no pod-label webhook: {sels}")
check(any(ns == {"portcullis.dev/inject": "true"} for _, ns in sels), f"no namespace-label webhook: {sels}")
vwc = one(default, "ValidatingWebhookConfiguration")
check(vwc["webhooks"][0]["rules"][0]["resources"] == ["apiroutes"], "validating webhook rules")
# Names and paths are the ones operator/src/webhook.rs serves and keeps the caBundle of.
import re
src = open("operator/src/webhook.rs").read()
def const(name):
    m = re.search(rf"pub const {name}: &(?:\[&str\]|str) = &?\[?([^;]*?)\]?;", src)
    return re.findall(r'"([^"]+)"', m.group(1)) if m else []
check([w["name"] for w in mwc["webhooks"]] == const("MUTATING_WEBHOOKS"), f"mutating webhook names vs webhook.rs {const('MUTATING_WEBHOOKS')}")
check([w["name"] for w in vwc["webhooks"]] == const("VALIDATING_WEBHOOKS"), f"validating webhook names vs webhook.rs {const('VALIDATING_WEBHOOKS')}")
check({w["clientConfig"]["service"]["path"] for w in mwc["webhooks"]} == set(const("MUTATE_PODS_PATH")), "mutating path vs webhook.rs")
check([w["clientConfig"]["service"]["path"] for w in vwc["webhooks"]] == const("VALIDATE_APIROUTES_PATH") + const("VALIDATE_SECURITYPROFILES_PATH"), "validating paths vs webhook.rs")
check([w["rules"][0]["resources"] for w in vwc["webhooks"]] == [["apiroutes"], ["securityprofiles"]], "validating webhook rules")
for w in mwc["webhooks"] + vwc["webhooks"]:
    check("caBundle" not in w["clientConfig"], "caBundle rendered: the operator owns it")

# RBAC: operator/rbac.yaml's rules, leases only namespaced, webhook access by name, no wildcards.
cr = one(default, "ClusterRole")
for rule in cr["rules"]:
    check("*" not in rule["verbs"] and "*" not in rule["resources"], f"wildcard rule {rule}")
    check("leases" not in rule["resources"], "leases in the ClusterRole")
role = one(default, "Role")
check(all(r["resources"] == ["leases"] for r in role["rules"]), "Role is for leases only")
if os.path.exists("operator/rbac.yaml"):
    controller_rules = yaml.safe_load(open("operator/rbac.yaml"))["rules"]
    for rule in controller_rules:
        where = role["rules"] if "leases" in rule["resources"] else cr["rules"]
        check(rule in where, f"operator/rbac.yaml rule missing from the chart: {rule}")
hooks = [r for r in cr["rules"] if "admissionregistration.k8s.io" in r["apiGroups"]]
check(len(hooks) == 1 and hooks[0].get("resourceNames") == ["portcullis"], f"webhook configuration rules {hooks}")
check(not any("admissionregistration.k8s.io" in r["apiGroups"] for r in one(minimal, "ClusterRole")["rules"]),
      "webhook rules without webhooks")
# NetworkPolicies: the groups' (networking.k8s.io), and not at all when disabled.
nps = [r for r in cr["rules"] if "networkpolicies" in r["resources"]]
check(len(nps) == 1 and nps[0]["apiGroups"] == ["networking.k8s.io"], f"NetworkPolicy rules {nps}")
check(not any("networkpolicies" in r["resources"] for r in one(minimal, "ClusterRole")["rules"]),
      "NetworkPolicy rule with networkPolicy.enabled=false")
# The validating webhooks ask SubjectAccessReviews (create only), and only when they run.
sars = [r for r in cr["rules"] if "authorization.k8s.io" in r["apiGroups"]]
check(sars == [{"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]}],
      f"SubjectAccessReview rules {sars}")
check(not any("authorization.k8s.io" in r["apiGroups"] for r in one(minimal, "ClusterRole")["rules"]),
      "SubjectAccessReview rule without the validating webhooks")

# Settings: org allowance and sidecar defaults reach the operator.
settings = json.loads(one(custom, "ConfigMap", "pc-settings")["data"]["settings.json"])
check(settings["orgAllowance"]["requestsPerMinute"] == 1000000, f"orgAllowance {settings['orgAllowance']}")
check(settings["sidecar"]["image"] == "registry.example.com/portcullis-sidecar:1.2.3", "sidecar image")
check(settings["sidecar"]["ports"] == {"inbound": 8081, "inboundTls": 8443, "egress": 8001, "admin": 9091}, "sidecar ports")
check(settings["webhook"]["service"] == "pc-webhook", "webhook service in settings")
check(settings["sidecar"]["native"] is False and settings["sidecar"]["runAsUser"] == 10002, "sidecar settings")
check(settings["sidecar"]["extraArgs"] == ["--auth-failures-per-address", "60"], f"sidecar extraArgs {settings['sidecar'].get('extraArgs')}")
check(settings["sidecar"]["workers"] == 2, f"sidecar workers {settings['sidecar'].get('workers')}")
check(settings["sidecar"]["maxConnectionsPerClient"] == 32,
      f"sidecar maxConnectionsPerClient {settings['sidecar'].get('maxConnectionsPerClient')}")
dsettings = json.loads(one(default, "ConfigMap", "portcullis-settings")["data"]["settings.json"])
check(dsettings["orgAllowance"]["requestsPerMinute"] is None, "default org allowance is unlimited")
# The limits store: none by default (in-memory limits); as given, the Secret by name only.
check(dsettings["sidecar"]["limitsStore"] == {"url": "", "passwordSecret": {"name": "", "key": "password"}, "timeout": "100ms"},
      f"default limitsStore {dsettings['sidecar'].get('limitsStore')}")
store = docs("store")
ssettings = json.loads(one(store, "ConfigMap", "portcullis-settings")["data"]["settings.json"])
check(ssettings["sidecar"]["limitsStore"] == {
    "url": "redis-sentinel://redis-sentinel-0.cache:26379,redis-sentinel-1.cache:26379/limits",
    "passwordSecret": {"name": "redis-auth", "key": "redis-password"},
    "timeout": "250ms"}, f"limitsStore {ssettings['sidecar'].get('limitsStore')}")
check(not [d for d in store if d["kind"] == "Secret"], "the chart renders no Secret for the store")

for e in errors:
    print("   -", e, file=sys.stderr)
sys.exit(1 if errors else 0)
PY

echo "default images == tests/images/build.sh --print-refs"
if [ -s "$work/default.yaml" ]; then
  mapfile -t built < <(tests/images/build.sh --print-refs)
  if "$PY" - "$work/default.yaml" "${built[@]}" >"$work/images.out" 2>&1 <<'PY'; then
import json, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
(dep,) = [d for d in docs if d["kind"] == "Deployment"]
(cm,) = [d for d in docs if d["kind"] == "ConfigMap" and "settings.json" in d.get("data", {})]
operator = dep["spec"]["template"]["spec"]["containers"][0]["image"]
sidecar = json.loads(cm["data"]["settings.json"])["sidecar"]["image"]
print(operator, sidecar)
sys.exit(0 if sorted([operator, sidecar]) == sorted(sys.argv[2:]) else 1)
PY
    pass "the chart installs the images build.sh tags: $(cat "$work/images.out")"
  else
    fail "the chart's default images ($(cat "$work/images.out")) are not build.sh's (${built[*]})"
  fi
fi

echo "portcullis-operator run --help"
if [ -s "$work/flags" ]; then
  cargo build -q -p portcullis-operator --bin portcullis-operator
  help="$("${CARGO_TARGET_DIR:-target}/debug/portcullis-operator" run --help)"
  missing=""
  while read -r flag; do
    grep -q -- "$flag[ =]" <<<"$help" || missing="$missing $flag"
  done <"$work/flags"
  if [ -z "$missing" ]; then
    pass "run accepts every flag the chart passes: $(tr '\n' ' ' <"$work/flags")"
  else
    fail "run does not accept:$missing"
  fi
fi

echo "injected pods (webhook::inject, with the settings the chart rendered)"
mkdir -p "$work/pods" "$work/settings"
for name in default custom store store-extra; do
  [ -s "$work/$name.yaml" ] || continue
  "$PY" - "$work/$name.yaml" >"$work/settings/$name.json" <<'PY' || fail "$name: settings.json"
import sys, yaml
(cm,) = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "ConfigMap" and "settings.json" in d.get("data", {})]
print(cm["data"]["settings.json"])
PY
done
if PORTCULLIS_INJECTED_PODS_DIR="$work/pods" PORTCULLIS_CHART_SETTINGS_DIR="$work/settings" \
     cargo test -q -p portcullis-operator --lib -- \
     webhook::tests::injected_pods_for_schema_validation --exact >"$work/pods.out" 2>&1 \
   && [ -n "$(ls "$work/pods")" ]; then
  # The operator starts with what the chart renders, and injects the store's flags and Secret.
  if "$PY" - "$work/pods" >"$work/store-pod.out" 2>&1 <<'PY'; then
import json, os, sys
pods = sys.argv[1]
errors = []
def check(ok, what):
    if not ok:
        errors.append(what)
def sidecar(name):
    pod = json.load(open(os.path.join(pods, f"chart-{name}.json")))
    spec = pod["spec"]
    (c,) = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == "portcullis-sidecar"]
    return spec, c
for name in ("default", "custom"):
    check(os.path.exists(os.path.join(pods, f"chart-{name}.json")), f"no pod from the {name} settings: "
          + (open(os.path.join(pods, f"chart-{name}.error")).read() if os.path.exists(os.path.join(pods, f"chart-{name}.error")) else ""))
_, c = sidecar("default")
check(not any(a.startswith("--limits-store") for a in c["args"]), f"store flags without a store: {c['args']}")
check("--max-connections-per-client" not in c["args"], f"a per-client share by default: {c['args']}")
_, c = sidecar("custom")
at = c["args"].index("--max-connections-per-client") if "--max-connections-per-client" in c["args"] else -1
check(at >= 0 and c["args"][at + 1] == "32", f"sidecar.maxConnectionsPerClient=32 not passed: {c['args']}")
spec, c = sidecar("store")
args = c["args"]
tail = args[args.index("--limits-store"):]
check(tail == ["--limits-store", "redis-sentinel://redis-sentinel-0.cache:26379,redis-sentinel-1.cache:26379/limits",
               "--limits-store-timeout", "250ms",
               "--limits-store-password-file", "/etc/portcullis/limits-store/password"], f"store args {tail}")
(vol,) = [v for v in spec["volumes"] if v["name"] == "portcullis-limits-store"]
check(vol["secret"]["secretName"] == "redis-auth" and vol["secret"]["items"] == [{"key": "redis-password", "path": "password"}],
      f"store volume {vol}")
(mount,) = [m for m in c["volumeMounts"] if m["name"] == "portcullis-limits-store"]
check(mount == {"name": "portcullis-limits-store", "mountPath": "/etc/portcullis/limits-store", "readOnly": True}, f"mount {mount}")
check(not any("portcullis-limits-store" in json.dumps(a) for a in spec["containers"]), "the app mounts the password")
check(not any(k in json.dumps(c.get("env", [])) for k in ("redis-auth", "secretKeyRef")), f"store in env {c.get('env')}")
err = os.path.join(pods, "chart-store-extra.error")
check(os.path.exists(err) and open(err).read().startswith("sidecar.extraArgs"),
      "extraArgs repeating the store's flags: not refused at start")
for e in errors:
    print("   -", e)
print("sidecar args end with", " ".join(tail))
sys.exit(1 if errors else 0)
PY
    pass "limits store: $(tail -n1 "$work/store-pod.out"); refused at start: $(cat "$work/pods/chart-store-extra.error")"
  else
    cat "$work/store-pod.out" >&2; fail "limits store in the injected sidecar"
  fi
  for v in "${K8S_VERSIONS[@]}"; do
    if kubernetes-validate --strict --quiet -k "$v" "$work"/pods/*.json >"$work/validate.out" 2>&1; then
      pass "injected pods ($(cd "$work/pods" && ls | tr '\n' ' ')) valid for Kubernetes $v"
    else
      cat "$work/validate.out" >&2; fail "injected pods invalid for Kubernetes $v"
    fi
  done
else
  cat "$work/pods.out" >&2; fail "could not write the injected pods"
fi

echo "dashboards/portcullis.json"
if "$PY" - "$work" <<'PY'; then pass "dashboard: panels, variables and metric names"; else fail "dashboard"; fi
import json, os, re, sys
work = sys.argv[1]
d = json.load(open("dashboards/portcullis.json"))
errors = []
exported = set()
for src in ("sidecar/src/telemetry/metrics.rs", "operator/src/controller/metrics.rs"):
    exported |= set(re.findall(r'"(portcullis_[a-z_]+)"', open(src).read()))
ids = [p["id"] for p in d["panels"]]
if len(ids) != len(set(ids)):
    errors.append(f"duplicate panel ids {ids}")
exprs = []
for p in d["panels"]:
    for t in p.get("targets", []):
        exprs.append((p["title"], t["expr"]))
for v in d["templating"]["list"]:
    if v["type"] == "query":
        exprs.append((f"variable {v['name']}", v["query"]["query"]))
used = set()
for title, e in exprs:
    for m in re.findall(r"\b(portcullis_[a-z_]+)", e):
        base = re.sub(r"_(bucket|sum|count)$", "", m)
        used.add(base)
        if base not in exported:
            errors.append(f"{title}: {m} is not exported (known: {sorted(exported)})")
for must in ("portcullis_requests_total", "portcullis_request_duration_seconds", "portcullis_rate_limit_rejections_total",
             "portcullis_config_reloads_total", "portcullis_backend_errors_total", "portcullis_operator_reconciles_total"):
    if must not in used:
        errors.append(f"no panel uses {must}")
# PromQL for promtool: Grafana's variables replaced by concrete values.
rules = {"groups": [{"name": "dashboard", "rules": []}]}
for i, (title, e) in enumerate(x for x in exprs if not x[0].startswith("variable")):
    e = e.replace("$__rate_interval", "5m")
    e = re.sub(r"\$[a-z_]+", ".*", e)
    rules["groups"][0]["rules"].append({"record": f"dashboard:panel_{i}", "expr": e})
json.dump(rules, open(os.path.join(work, "dashboard-rules.json"), "w"))
for e in errors:
    print("   -", e, file=sys.stderr)
sys.exit(1 if errors else 0)
PY
if command -v promtool >/dev/null; then
  # promtool reads YAML; JSON is YAML.
  cp "$work/dashboard-rules.json" "$work/dashboard-rules.yaml"
  if promtool check rules "$work/dashboard-rules.yaml" >"$work/promtool.out" 2>&1; then
    pass "dashboard: every query parses as PromQL (promtool check rules)"
  else
    cat "$work/promtool.out" >&2; fail "dashboard: PromQL"
  fi
else
  echo "  skip promtool not installed: PromQL syntax not checked"
fi

if [ "$failures" -gt 0 ]; then
  echo "chart suite: $failures failure(s)" >&2
  exit 1
fi
echo "chart suite: all checks passed"
