#!/usr/bin/env python3
"""Checks of the Helm chart charts/llorch-operator and of manifests/install.yaml.

Run by tests/chart/check.sh with the project's venv (helm-python-sdk, PyYAML).
Everything renders offline with Helm's own library: `helm lint`, and
`helm template` as an install with `dry_run="client"` and the in-memory store.
Each check asserts; the last line is "N passed, N failed".
"""

from __future__ import annotations

import importlib.util
import re
import sys
import traceback
import tomllib
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import yaml

sys.dont_write_bytecode = True  # scripts/render-install.py is imported below

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "llorch-operator"
CRD = ROOT / "manifests" / "crd.yaml"
CHART_CRD = CHART / "crds" / "modelworkers.llorch.dev.yaml"
INSTALL = ROOT / "manifests" / "install.yaml"
OPERATOR_YAML = ROOT / "manifests" / "operator.yaml"
RELEASE = "llorch"
NAMESPACE = "llorch-system"

CHECKS: list[tuple[str, Callable[[], None]]] = []


def check(fn: Callable[[], None]) -> Callable[[], None]:
    CHECKS.append((fn.__name__, fn))
    return fn


# --- helpers --------------------------------------------------------------


def workspace_version() -> str:
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    return str(cargo["workspace"]["package"]["version"])


def render_all(values: dict[str, Any] | None = None, namespace: str = NAMESPACE) -> list[dict]:
    """The chart's objects, as `helm template` would print them."""
    return [d for d in yaml.safe_load_all(render_release(values, namespace)["manifest"]) if d]


def is_gateway(d: dict) -> bool:
    return d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "gateway"


def render(values: dict[str, Any] | None = None, namespace: str = NAMESPACE) -> list[dict]:
    """The operator's objects of the chart (the gateway's have checks of
    their own, on `gateway(...)`)."""
    return [d for d in render_all(values, namespace) if not is_gateway(d)]


def gateway(values: dict[str, Any] | None = None, namespace: str = NAMESPACE) -> list[dict]:
    """The gateway's objects of the chart."""
    return [d for d in render_all(values, namespace) if is_gateway(d)]


def render_release(values: dict[str, Any] | None = None, namespace: str = NAMESPACE) -> dict:
    with helm.Config(namespace=namespace, storage_driver="memory") as cfg:
        return cfg.install(str(CHART), RELEASE, values, namespace=namespace, dry_run="client")


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def operator_manifests() -> list[dict]:
    return [d for d in yaml.safe_load_all(OPERATOR_YAML.read_text()) if d]


def container(docs: list[dict]) -> dict:
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert len(spec["containers"]) == 1, spec["containers"]
    return spec["containers"][0]


def args(docs: list[dict]) -> list[str]:
    return [str(a) for a in container(docs)["args"]]


def flag(docs: list[dict], name: str) -> str | None:
    """The value of `--name=value` (or `--name value`) in the operator's args."""
    argv = args(docs)
    for i, a in enumerate(argv):
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
        if a == f"--{name}" and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            return argv[i + 1]
    return None


def rules(role: dict) -> list[dict]:
    """Rules in a canonical form (lists, apiGroups with "" for core)."""
    out = []
    for r in role["rules"]:
        c = {k: [str(x) for x in r[k]] for k in ("apiGroups", "resources", "verbs")}
        if r.get("resourceNames"):
            c["resourceNames"] = [str(x) for x in r["resourceNames"]]
        out.append(c)
    return out


def expect_schema_rejects(values: dict[str, Any], what: str) -> None:
    with helm.Chart.load(CHART) as chart:
        try:
            chart.validate_schema(values)
        except helm.HelmValuesError:
            pass
        else:
            raise AssertionError(f"values.schema.json accepts {what}: {values}")
    try:
        render(values)
    except helm.HelmError:
        return
    raise AssertionError(f"an install accepts {what}: {values}")


# --- chart metadata and lint ----------------------------------------------


@check
def chart_metadata_follows_the_workspace() -> None:
    with helm.Chart.load(CHART) as chart:
        meta = chart.metadata
    assert meta["name"] == "llorch-operator", meta
    assert meta["version"] == "0.1.0", meta
    assert meta["appVersion"] == workspace_version(), (
        f"appVersion {meta['appVersion']} != workspace version {workspace_version()}"
    )


@check
def helm_lint_passes() -> None:
    for values in (None, {"watchNamespace": "team-a", "replicas": 1},
                   {"serviceMonitor": {"enabled": True}, "image": {"registry": "r.example/x"}}):
        # The oldest and a current server version (deprecated APIs warn).
        for kube in ("v1.20.0", "v1.33.0"):
            report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE,
                               kube_version=kube)
            assert report["total_charts_linted"] == 1, report
            bad = [m for m in report["messages"] if m["severity"] >= 2]
            assert not report["errors"] and not bad, (values, kube, report)


@check
def values_yaml_is_documented_line_by_line() -> None:
    # Every key of the chart's own settings has a comment right above it (or,
    # for a group such as `image:`, right below). Keys inside Kubernetes
    # objects passed through as they are (resources, securityContext, ...)
    # are covered by the comment of that object.
    passthrough = {"resources", "podSecurityContext", "securityContext", "nodeSelector",
                   "affinity", "tolerations", "podAnnotations", "podLabels"}
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    missing = []
    for i, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):", line)
        if not m:
            continue
        indent, key = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if not any(k in passthrough for _, k in stack):
            above = lines[i - 1].strip() if i else ""
            below = lines[i + 1].strip() if i + 1 < len(lines) else ""
            if not above.startswith("#") and not below.startswith("#"):
                missing.append(f"line {i + 1}: {key}")
        stack.append((indent, key))
    assert not missing, f"undocumented keys in values.yaml: {missing}"


# --- the default render ----------------------------------------------------


@check
def defaults_render_the_expected_objects() -> None:
    docs = render()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                            "Role", "RoleBinding", "Service", "Deployment"]), kinds
    for d in docs:
        want_name = "llorch-operator-self" if d["kind"] in ("Role", "RoleBinding") else "llorch-operator"
        assert d["metadata"]["name"] == want_name, d["metadata"]
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert d["metadata"]["namespace"] == NAMESPACE, d["metadata"]
        labels = d["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "llorch-operator", labels
        assert labels["app.kubernetes.io/version"] == workspace_version(), labels


@check
def defaults_use_images_of_the_app_version() -> None:
    v = workspace_version()
    docs = render()
    c = container(docs)
    assert c["image"] == f"llorch/operator:{v}", c["image"]
    assert flag(docs, "worker-image") == f"llorch/worker:{v}", args(docs)
    assert flag(docs, "worker-cpu-image") == f"llorch/worker:{v}-cpu", args(docs)


@check
def deployment_mirrors_operator_yaml() -> None:
    docs = render()
    plain = operator_manifests()
    dep, want = one(docs, "Deployment"), one(plain, "Deployment")
    pod, want_pod = dep["spec"]["template"]["spec"], want["spec"]["template"]["spec"]
    c, want_c = container(docs), want_pod["containers"][0]
    assert dep["spec"]["replicas"] == want["spec"]["replicas"] == 2
    assert pod["securityContext"] == want_pod["securityContext"], pod["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"] == want_c["securityContext"], c["securityContext"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["resources"] == want_c["resources"], c["resources"]
    assert c["livenessProbe"] == want_c["livenessProbe"] == {
        "httpGet": {"path": "/healthz", "port": "metrics"}}, c["livenessProbe"]
    assert c["readinessProbe"] == want_c["readinessProbe"] == {
        "httpGet": {"path": "/readyz", "port": "metrics"}}, c["readinessProbe"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {p["name"]: p["containerPort"] for p in want_c["ports"]} == {
        "report": 8081, "metrics": 8080}, ports
    env = {e["name"]: e.get("valueFrom") for e in c["env"]}
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}, env
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}, env
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    argv = args(docs)
    assert argv[0] == "run", argv
    assert flag(docs, "log-format") == "json", argv
    assert flag(docs, "metrics-addr") == ":8080" and flag(docs, "report-addr") == ":8081", argv
    assert "--leader-elect" in argv and "--leader-elect=false" not in argv, argv
    assert flag(docs, "namespace") is None, "cluster-wide by default"
    assert flag(docs, "report-url") is None, "the operator looks up its Service"


def operator_run_flags() -> set[str]:
    """The long flags of `llorch-operator run`, read from its clap derive
    structs (operator/src/run.rs and the ChildArgs of operator/src/main.rs)."""
    flags = set()
    for src in ("run.rs", "main.rs"):
        text = (ROOT / "operator" / "src" / src).read_text()
        for m in re.finditer(r"#\[arg\((.*?)\)\]\s*(?:///[^\n]*\s*|#\[[^\n]*\]\s*)*(\w+):",
                             text, re.S):
            attrs, field = m.group(1), m.group(2)
            if not re.search(r"\blong\b", attrs):
                continue
            named = re.search(r'\blong\s*=\s*"([^"]+)"', attrs)
            flags.add(named.group(1) if named else field.replace("_", "-"))
    return flags


@check
def chart_flags_exist_in_the_operator() -> None:
    known = operator_run_flags()
    assert {"namespace", "leader-elect", "service-name", "worker-image"} <= known, known
    values = {"watchNamespace": "team-a", "reportUrl": "http://r.team-a.svc:8081/x", "replicas": 1}
    for docs in (render(), render(values)):
        for a in args(docs)[1:]:
            assert a.startswith("--"), a
            name = a[2:].split("=", 1)[0]
            assert name in known, f"the chart passes --{name}, which `llorch-operator run` lacks"


@check
def policy_values_become_operator_flags() -> None:
    docs = render()
    for name in ("allowed-host-paths", "allowed-image-prefixes", "allowed-service-accounts"):
        assert name in operator_run_flags(), name
        assert flag(docs, name) is None, f"--{name} is unset by default"
    docs = render({"policy": {"allowedHostPaths": ["/var/lib/models", "/srv/gguf"],
                              "allowedImagePrefixes": ["registry.example.com/llorch/"],
                              "allowedServiceAccounts": ["inference"]}})
    assert flag(docs, "allowed-host-paths") == "/var/lib/models,/srv/gguf"
    assert flag(docs, "allowed-image-prefixes") == "registry.example.com/llorch/"
    assert flag(docs, "allowed-service-accounts") == "inference"
    expect_schema_rejects({"policy": {"allowedHostPaths": ["models"]}}, "a relative host path")
    expect_schema_rejects({"policy": {"allowedHostPaths": ["/a,/b"]}}, "a comma in a host path")
    expect_schema_rejects({"policy": {"allowHostPaths": []}}, "a misspelt policy key")


@check
def service_is_found_by_the_operator() -> None:
    docs = render()
    svc, dep = one(docs, "Service"), one(docs, "Deployment")
    assert flag(docs, "service-name") == svc["metadata"]["name"], args(docs)
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
    want = {p["name"]: (p["port"], p["targetPort"])
            for p in one(operator_manifests(), "Service")["spec"]["ports"]}
    assert ports == want == {"report": (8081, "report"), "metrics": (8080, "metrics")}, ports
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    for k, v in svc["spec"]["selector"].items():
        assert pod_labels.get(k) == v, (k, v, pod_labels)
    assert dep["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]


@check
def cluster_role_equals_operator_yaml() -> None:
    docs = render()
    got = rules(one(docs, "ClusterRole"))
    want = rules(one(operator_manifests(), "ClusterRole"))
    assert got == want, f"chart ClusterRole rules differ from manifests/operator.yaml:\n{got}\n{want}"
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": "llorch-operator"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "llorch-operator",
                                    "namespace": NAMESPACE}], binding["subjects"]
    # No Lease rights cluster-wide: only its own Lease, in its own namespace.
    assert not any("leases" in r["resources"] for r in got), got
    role = one(docs, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert rules(role) == rules(one(operator_manifests(), "Role"))
    assert one(docs, "RoleBinding")["roleRef"]["name"] == role["metadata"]["name"]


@check
def notes_tell_how_to_create_a_first_model_worker() -> None:
    notes = render_release()["notes"]
    for needle in ("kubectl apply", "manifests/samples/", "kubectl get mw",
                   "kubectl wait", "--for=condition=Ready"):
        assert needle in notes, f"NOTES.txt lacks {needle!r}:\n{notes}"


# --- non-default values ----------------------------------------------------


@check
def watch_namespace_gives_namespaced_rbac() -> None:
    docs = render({"watchNamespace": "team-a"})
    kinds = sorted(d["kind"] for d in docs)
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds, kinds
    assert flag(docs, "namespace") == "team-a", args(docs)
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in by_kind(docs, "Role")}
    assert set(roles) == {("team-a", "llorch-operator"), (NAMESPACE, "llorch-operator-self")}, roles
    plain = rules(one(operator_manifests(), "ClusterRole"))
    own = rules(one(operator_manifests(), "Role"))
    # In the watched namespace: what the ClusterRole grants.
    assert rules(roles[("team-a", "llorch-operator")]) == plain
    # In the release namespace: its own Lease, and reading its own Service.
    assert rules(roles[(NAMESPACE, "llorch-operator-self")]) == own
    bindings = {(b["metadata"]["namespace"], b["roleRef"]["name"]): b
                for b in by_kind(docs, "RoleBinding")}
    assert set(bindings) == set(roles), bindings
    for b in bindings.values():
        assert b["roleRef"]["kind"] == "Role"
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": "llorch-operator",
                                  "namespace": NAMESPACE}], b["subjects"]
    # Nothing beyond manifests/operator.yaml's grants.
    for role in roles.values():
        for r in rules(role):
            assert any(set(r["apiGroups"]) <= set(p["apiGroups"])
                       and set(r["resources"]) <= set(p["resources"])
                       and set(r["verbs"]) <= set(p["verbs"]) for p in plain + own), r


@check
def rbac_and_service_account_can_be_brought() -> None:
    docs = render({"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "mine"}})
    kinds = {d["kind"] for d in docs}
    assert kinds == {"Service", "Deployment"}, kinds
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "mine"
    try:
        render({"serviceAccount": {"create": False}})
    except helm.HelmError as e:
        assert "serviceAccount.name is required" in str(e), e
    else:
        raise AssertionError("serviceAccount.create=false without a name renders")


@check
def registry_prefixes_every_image() -> None:
    v = workspace_version()
    for registry in ("registry.example.com/mirror", "registry.example.com/mirror/"):
        docs = render({"image": {"registry": registry}})
        assert container(docs)["image"] == f"registry.example.com/mirror/llorch/operator:{v}"
        assert flag(docs, "worker-image") == f"registry.example.com/mirror/llorch/worker:{v}"
        assert flag(docs, "worker-cpu-image") == f"registry.example.com/mirror/llorch/worker:{v}-cpu"


@check
def tags_can_be_set() -> None:
    docs = render({"image": {"tag": "dev"}, "worker": {"image": {"tag": "7", "cpuTag": "7-cpu-avx2"}}})
    assert container(docs)["image"] == "llorch/operator:dev"
    assert flag(docs, "worker-image") == "llorch/worker:7"
    assert flag(docs, "worker-cpu-image") == "llorch/worker:7-cpu-avx2"


@check
def one_replica_still_elects() -> None:
    # A rolling update runs the old and the new pod side by side: without
    # the Lease both would reconcile, each with its own worker image.
    docs = render({"replicas": 1})
    assert one(docs, "Deployment")["spec"]["replicas"] == 1
    argv = args(docs)
    assert "--leader-elect" in argv and "--leader-elect=false" not in argv, argv


@check
def three_replicas_elect_a_leader() -> None:
    docs = render({"replicas": 3})
    argv = args(docs)
    assert "--leader-elect" in argv and "--leader-elect=false" not in argv, argv


@check
def service_monitor_is_optional() -> None:
    assert not by_kind(render(), "ServiceMonitor")
    docs = render({"serviceMonitor": {"enabled": True, "interval": "30s",
                                      "labels": {"release": "prom"}}})
    sm = one(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1", sm
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    svc = one(docs, "Service")
    for k, v in sm["spec"]["selector"]["matchLabels"].items():
        assert svc["metadata"]["labels"].get(k) == v, (k, v)
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


@check
def report_url_and_release_namespace() -> None:
    docs = render({"reportUrl": "http://reports.ops.svc:8081/v1/workers/report"}, namespace="ops")
    assert flag(docs, "report-url") == "http://reports.ops.svc:8081/v1/workers/report"
    assert one(docs, "Deployment")["metadata"]["namespace"] == "ops"
    assert one(docs, "ClusterRoleBinding")["subjects"][0]["namespace"] == "ops"


@check
def schema_rejects_wrong_types() -> None:
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(None)
        chart.validate_schema({"replicas": 1, "watchNamespace": "team-a"})
    expect_schema_rejects({"replicas": "two"}, "a string replica count")
    expect_schema_rejects({"replicas": 0}, "zero replicas")
    expect_schema_rejects({"serviceMonitor": {"enabled": "yes"}}, "a string boolean")
    expect_schema_rejects({"watchNamespace": "Team_A"}, "an invalid namespace")
    expect_schema_rejects({"replica": 2}, "an unknown (misspelt) key")
    expect_schema_rejects({"logFormat": "xml"}, "an unknown log format")
    expect_schema_rejects({"image": {"tag": 1.0}}, "a numeric tag")


# --- the gateway ----------------------------------------------------------


def gateway_flags() -> set[str]:
    """The long flags of `llorch-operator gateway` (operator/src/gateway_cmd.rs)."""
    text = (ROOT / "operator" / "src" / "gateway_cmd.rs").read_text()
    flags = set()
    for m in re.finditer(r"#\[arg\((.*?)\)\]\s*(?:///[^\n]*\s*|#\[[^\n]*\]\s*)*(\w+):", text, re.S):
        attrs, field = m.group(1), m.group(2)
        if re.search(r"\blong\b", attrs):
            named = re.search(r'\blong\s*=\s*"([^"]+)"', attrs)
            flags.add(named.group(1) if named else field.replace("_", "-"))
    return flags


@check
def the_gateway_runs_by_default_behind_its_service() -> None:
    docs = gateway()
    assert sorted(d["kind"] for d in docs) == sorted(
        ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service", "Deployment"]), docs
    for d in docs:
        assert d["metadata"]["name"] == "llorch-gateway", d["metadata"]
    dep, svc = one(docs, "Deployment"), one(docs, "Service")
    assert dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"] == f"llorch/operator:{workspace_version()}", "the operator's image"
    assert c["args"][0] == "gateway", c["args"]
    assert pod["serviceAccountName"] == "llorch-gateway"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http",
                                     "protocol": "TCP"}], svc["spec"]["ports"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "llorch-gateway", "worker NetworkPolicies admit it"
    for k, v in svc["spec"]["selector"].items():
        assert labels.get(k) == v
    known = gateway_flags()
    for a in c["args"][1:]:
        name = a[2:].split("=", 1)[0]
        assert name in known, f"the chart passes --{name}, which `llorch-operator gateway` lacks"
    got = rules(one(docs, "ClusterRole"))
    assert got == [
        {"apiGroups": ["llorch.dev"], "resources": ["modelworkers"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["llorch.dev"], "resources": ["modelworkers/scale"],
         "verbs": ["get", "update", "patch"]},
        {"apiGroups": [""], "resources": ["pods", "endpoints"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    ], got


@check
def gateway_values_become_flags_and_namespaced_roles() -> None:
    docs = gateway({"watchNamespace": "team-a", "gateway": {
        "apiKeysSecret": "llorch-keys", "coldStartTimeout": "30m", "replicas": 3}})
    c = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "--namespace=team-a" in c["args"], c["args"]
    assert "--api-keys-secret=llorch-keys" in c["args"], c["args"]
    assert "--cold-start-timeout=30m" in c["args"], c["args"]
    assert one(docs, "Deployment")["spec"]["replicas"] == 3
    kinds = sorted(d["kind"] for d in docs)
    assert "ClusterRole" not in kinds, kinds
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in by_kind(docs, "Role")}
    assert set(roles) == {("team-a", "llorch-gateway"), (NAMESPACE, "llorch-gateway-keys")}, roles
    assert rules(roles[(NAMESPACE, "llorch-gateway-keys")]) == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
         "resourceNames": ["llorch-keys"]}]
    assert not gateway({"gateway": {"enabled": False}}), "disabled: no gateway object"
    expect_schema_rejects({"gateway": {"coldStartTimeout": "soon"}}, "a timeout without a unit")
    expect_schema_rejects({"gateway": {"replica": 1}}, "a misspelt gateway key")


# --- the generated copies --------------------------------------------------


@check
def chart_crd_equals_manifests_crd() -> None:
    assert CHART_CRD.read_text() == CRD.read_text(), (
        "charts/llorch-operator/crds/modelworkers.llorch.dev.yaml differs from "
        "manifests/crd.yaml: run make manifests")


@check
def install_yaml_is_a_fresh_render() -> None:
    spec = importlib.util.spec_from_file_location("render_install",
                                                  ROOT / "scripts" / "render-install.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fresh = module.render()
    committed = INSTALL.read_text() if INSTALL.exists() else ""
    assert committed == fresh, "manifests/install.yaml is out of date: run make manifests"


@check
def install_yaml_has_namespace_crd_then_chart() -> None:
    docs = [d for d in yaml.safe_load_all(INSTALL.read_text()) if d]
    assert docs[0] == {"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": NAMESPACE}}, docs[0]
    assert docs[1] == yaml.safe_load(CRD.read_text()), "the CRD in install.yaml differs"
    assert [d["kind"] for d in docs[2:]] == [d["kind"] for d in render_all()]
    for d in docs[2:]:
        assert d["metadata"].get("namespace", NAMESPACE) == NAMESPACE, d["metadata"]


def main() -> int:
    passed = failed = 0
    only = set(sys.argv[1:])
    for name, fn in CHECKS:
        if only and name not in only:
            continue
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - every failure is reported
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")
            if not isinstance(e, AssertionError):
                traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {name}")
    print(f"chart: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
