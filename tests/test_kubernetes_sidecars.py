"""The Kubernetes kit beside the base: the sidecars component (deploy/kubernetes/sidecars),
the monitoring component (deploy/kubernetes/monitoring) and the example that adds both to an
existing MCP server (deploy/kubernetes/example). tests/test_kube_play.py runs the example.

- Rendered by kustomize, every core object is valid Kubernetes (strictly); the Prometheus
  Operator's objects agree with the Service they scrape.
- Only labelled Deployments and Services change: the labelled Deployment gains the two
  containers and their volumes and keeps its own containers exactly; its Service's first port
  targets Envoy; an unlabelled Deployment and Service in the same overlay are untouched.
- The sidecar's Envoy config with the Deployment's --config-yaml passes ``envoy --mode
  validate``, its `mcp` cluster is the MCP container's port, and it is the base's config but
  for the documented differences.
- The NetworkPolicy admits traffic into the pod on Envoy's MCP and probes ports only: not
  toolgate's gRPC or metrics ports, Envoy's admin, or the MCP container's own port.
- The alert rules pass ``promtool check rules`` and their unit tests (``promtool test
  rules``); the PrometheusRule holds the same groups.
- Every query of the Grafana dashboard and of the alert rules parses (promtool) and names only
  metrics that a real ``toolgate serve`` exports on /metrics (or ``up``); the `toolgate-redis`
  group's, only redis_exporter's.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import grpc
import kubernetes_validate
import pytest
import yaml
from envoy_proxy import validate
from prometheus_client.parser import text_string_to_metric_families
from sidecar import Sidecar
from test_kubernetes import K8S_VERSION, needs_envoy, needs_kubectl

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
SIDECARS = KUBE / "sidecars"
MONITORING = KUBE / "monitoring"
EXAMPLE = KUBE / "example"
CRDS = {"ServiceMonitor", "PrometheusRule"}


def _promtool() -> str | None:
    local = ROOT / "target" / "tools" / "usr" / "bin" / "promtool"
    return str(local) if local.exists() else shutil.which("promtool")


PROMTOOL = _promtool()
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and not os.environ.get("CI"), reason="no promtool (scripts/test installs it)"
)


def kustomize(directory: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def containers(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}


@pytest.fixture(scope="module")
def example() -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.skip("no kubectl (kubectl kustomize)")
    return kustomize(EXAMPLE)


# --- validity ------------------------------------------------------------------------------------


def test_the_example_is_valid_kubernetes(example):
    kinds = sorted(o["kind"] for o in example)
    assert kinds == sorted(
        ["ConfigMap"] * 3
        + ["Deployment", "NetworkPolicy", "PrometheusRule", "Service", "Service", "ServiceMonitor"]
    )
    for obj in example:
        if obj["kind"] not in CRDS:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_the_servicemonitor_scrapes_envoys_probes_port(example):
    monitor = named(example, "ServiceMonitor", "toolgate")
    service = named(example, "Service", "toolgate-metrics")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    assert endpoint["path"] == "/metrics" and port["targetPort"] == "toolgate-probes"
    # The Service selects the pods the component changed.
    pod_labels = named(example, "Deployment", "everything")["spec"]["template"]["metadata"]
    assert service["spec"]["selector"].items() <= pod_labels["labels"].items()
    # The alerts' job is this Service (the operator's default job name).
    alerts = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    (down,) = [r for r in alerts["groups"][0]["rules"] if r["alert"] == "ToolgateSidecarDown"]
    assert f'job="{service["metadata"]["name"]}"' in down["expr"]


# --- what the component changes ------------------------------------------------------------------


@needs_kubectl
def test_only_labelled_objects_change(tmp_path):
    app = yaml.safe_load_all((EXAMPLE / "app" / "deployment.yaml").read_text())
    (deployment,) = [d for d in app if d]
    service = yaml.safe_load((EXAMPLE / "app" / "service.yaml").read_text())
    other, other_service = copy.deepcopy(deployment), copy.deepcopy(service)
    # A Service that leaves targetPort to default to its port is rewired too.
    del service["spec"]["ports"][0]["targetPort"]
    for obj in (other, other_service):
        obj["metadata"]["name"] = "other"
        del obj["metadata"]["labels"]["toolgate/sidecars"]
    (tmp_path / "app.yaml").write_text(
        yaml.safe_dump_all([deployment, service, other, other_service])
    )
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {"resources": ["app.yaml"], "components": [os.path.relpath(SIDECARS, tmp_path)]}
        )
    )
    objects = kustomize(tmp_path)
    changed = named(objects, "Deployment", "everything")
    assert set(containers(changed)) == {"server", "toolgate-envoy", "toolgate"}
    assert containers(changed)["server"] == containers(deployment)["server"]
    spec = changed["spec"]["template"]["spec"]
    assert {v["name"] for v in spec["volumes"]} == {
        "tmp",
        "toolgate-policy",
        "toolgate-envoy",
        "toolgate-tmp",
    }
    assert spec["securityContext"] == deployment["spec"]["template"]["spec"]["securityContext"]
    assert named(objects, "Deployment", "other") == other
    assert named(objects, "Service", "other") == other_service
    # The labelled Service now sends its clients to Envoy's MCP listener.
    (port,) = named(objects, "Service", "everything")["spec"]["ports"]
    assert port["targetPort"] == "toolgate-mcp" and port["port"] == 80


def envoy_of(objects: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The sidecar Envoy's bootstrap text and its container's arguments."""
    deployment = named(objects, "Deployment", "everything")
    envoy = containers(deployment)["toolgate-envoy"]
    (mount,) = envoy["volumeMounts"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    data = named(objects, "ConfigMap", volumes[mount["name"]]["configMap"]["name"])["data"]
    assert envoy["args"][:2] == ["-c", f"{mount['mountPath']}/envoy.yaml"]
    return data["envoy.yaml"], envoy["args"]


@needs_envoy
def test_the_sidecar_envoy_forwards_to_the_mcp_containers_port(example, tmp_path):
    text, args = envoy_of(example)
    assert args[2] == "--config-yaml"
    (cluster,) = yaml.safe_load(args[3])["static_resources"]["clusters"]
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    socket = address["address"]["socket_address"]
    server = containers(named(example, "Deployment", "everything"))["server"]
    assert (cluster["name"], socket["address"]) == ("mcp", "127.0.0.1")
    assert socket["port_value"] == server["ports"][0]["containerPort"] == 3001
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    done = validate(path, "--config-yaml", args[3])
    assert done.returncode == 0, done.stdout + done.stderr
    # Without the mcp cluster the route leads nowhere: Envoy refuses the bootstrap alone.
    assert validate(path).returncode != 0


def sidecar_drift(sidecar: dict[str, Any]) -> dict[str, Any]:
    """The sidecar's envoy.yaml with its documented differences undone (toolgate-metrics
    cluster, /metrics route and the x-mcp-server header's removal taken away; base's mcp
    cluster and server id put back): the base's envoy.yaml when nothing else differs."""
    undone = copy.deepcopy(sidecar)
    resources = undone["static_resources"]
    base = yaml.safe_load((KUBE / "envoy.yaml").read_text())
    # The client's x-mcp-server removed too (no route names the server here).
    hcm = resources["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    for mutation in hcm["early_header_mutation_extensions"]:
        mutations = mutation["typed_config"]["mutations"]
        mutation["typed_config"]["mutations"] = [
            m for m in mutations if m != {"remove": "x-mcp-server"}
        ]
    resources["clusters"] = [c for c in resources["clusters"] if c["name"] != "toolgate-metrics"]
    resources["clusters"] += [c for c in base["static_resources"]["clusters"] if c["name"] == "mcp"]
    base_routes = base["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]["route_config"]["virtual_hosts"][0]["routes"]
    for lst in resources["listeners"]:
        hcm = lst["filter_chains"][0]["filters"][0]["typed_config"]
        for host in hcm["route_config"]["virtual_hosts"]:
            host["routes"] = [r for r in host["routes"] if r["match"] != {"path": "/metrics"}]
            if lst["name"] != "mcp":
                continue
            # The base's routes, in the same order: put their server id back.
            for route, base_route in zip(host["routes"], base_routes, strict=True):
                server = base_route["typed_per_filter_config"]["envoy.filters.http.ext_authz"]
                per_filter = route.setdefault("typed_per_filter_config", {})
                per_filter["envoy.filters.http.ext_authz"] = server
    return undone


def test_the_sidecar_envoy_is_the_bases_but_for_the_documented_differences():
    sidecar = yaml.safe_load((SIDECARS / "envoy.yaml").read_text())
    base = yaml.safe_load((KUBE / "envoy.yaml").read_text())
    assert sidecar_drift(sidecar) == base
    changed = copy.deepcopy(sidecar)
    changed["static_resources"]["clusters"][0]["connect_timeout"] = "5s"
    assert sidecar_drift(changed) != base


# --- the NetworkPolicy ---------------------------------------------------------------------------


def admitted(policy: dict[str, Any], pod: dict[str, Any], port: int) -> bool:
    """Whether ``policy`` lets traffic from anywhere into ``pod`` (a pod template) on ``port``
    (NetworkPolicy's rules: a selected pod takes only what some ingress rule admits; a named
    port is a containerPort's name)."""
    selector = policy["spec"]["podSelector"].get("matchLabels", {})
    if not selector.items() <= pod["metadata"]["labels"].items():
        return True
    names = {
        p["name"]: p["containerPort"]
        for c in pod["spec"]["containers"]
        for p in c.get("ports", [])
        if "name" in p
    }
    for rule in policy["spec"].get("ingress", []):
        if rule.get("from"):
            continue  # admits some sources only
        ports = rule.get("ports")
        if not ports or any(names.get(p["port"], p["port"]) == port for p in ports):
            return True
    return False


def test_the_networkpolicy_admits_envoys_ports_only(example):
    policy = named(example, "NetworkPolicy", "toolgate-sidecars")
    pod = named(example, "Deployment", "everything")["spec"]["template"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    envoy = containers(named(example, "Deployment", "everything"))["toolgate-envoy"]
    open_ports = {p["containerPort"] for p in envoy["ports"]}
    assert open_ports == {10000, 9902}
    for port in open_ports:
        assert admitted(policy, pod, port), port
    toolgate = containers(named(example, "Deployment", "everything"))["toolgate"]
    closed = {int(a.rpartition(":")[2]) for a in toolgate["args"] if re.fullmatch(r"[\d.]+:\d+", a)}
    assert closed == {9191, 9464}
    closed |= {9901, 3001}  # Envoy's admin, the MCP container's own port
    for port in closed:
        assert not admitted(policy, pod, port), port
    # ...and the evaluator can say yes: without the policy's port list everything is open.
    everything = copy.deepcopy(policy)
    everything["spec"]["ingress"] = [{}]
    assert all(admitted(everything, pod, port) for port in closed)


# --- alerts --------------------------------------------------------------------------------------


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None, "no promtool (scripts/test installs it)"
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=MONITORING
    )


@needs_promtool
def test_the_alert_rules_pass_promtool_and_their_unit_tests(tmp_path):
    done = promtool("check", "rules", "alerts.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    done = promtool("test", "rules", "alerts.test.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    # Each alert is tested, and a broken expectation fails.
    tests = (MONITORING / "alerts.test.yaml").read_text()
    for rule in alert_rules():
        assert f"alertname: {rule['alert']}" in tests, rule["alert"]
    broken = tmp_path / "alerts.test.yaml"
    broken.write_text(tests.replace("pod: a}", "pod: b}", 1))
    shutil.copy(MONITORING / "alerts.yaml", tmp_path / "alerts.yaml")
    assert promtool("test", "rules", str(broken)).returncode != 0


def alert_rules(group: str | None = None) -> list[dict[str, Any]]:
    """The rules of alerts.yaml: of every group, or of ``group``."""
    groups = yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"]
    return [r for g in groups if group in (None, g["name"]) for r in g["rules"]]


def test_the_prometheusrule_holds_the_alert_rules():
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    alerts = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    assert rule["kind"] == "PrometheusRule" and rule["spec"] == alerts


# --- the dashboard -------------------------------------------------------------------------------

#: PromQL words that are not metric names.
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers outside label matchers,
    strings, ranges and grouping lists that are not function calls or keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[m.end() :].lstrip()
        if following.startswith("(") or m.group(0).lower() in _KEYWORDS:
            continue
        names.add(m.group(0))
    return names


def test_metric_names_reads_promql():
    assert metric_names('sum by (code) (rate(a_total{verdict="DENY", x=~"$y"}[5m])) / b') == {
        "a_total",
        "b",
    }
    assert metric_names("histogram_quantile(0.99, sum by (le) (rate(c_bucket[1m])))") == {
        "c_bucket"
    }


def dashboard_queries() -> list[str]:
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            inner = re.fullmatch(r"label_values\((.*), *\w+\)", variable["query"]["query"])
            assert inner, variable["query"]
            queries.append(inner.group(1))
    return queries


def grafana_to_promql(query: str) -> str:
    return query.replace("$__rate_interval", "5m").replace("$namespace", ".*").replace("$pod", ".*")


def test_every_query_names_metrics_toolgate_exports(tmp_path):
    queries = dashboard_queries() + [r["expr"] for r in alert_rules("toolgate")]
    assert len(queries) > 15
    with Sidecar(ROOT / "examples" / "policy.json") as sidecar:
        sidecar.client.decide("create-ami", grant="alice")
        # A counter family with labels has samples once something is counted: an error.
        with pytest.raises(grpc.RpcError):
            sidecar.raw("Decide")(b"\xff\xff", timeout=5)
        text = sidecar.metrics_text()
    exported = {"up"}
    for family in text_string_to_metric_families(text):
        exported.add(family.name)
        exported |= {s.name for s in family.samples}
        # A counter's samples are NAME_total; one with labels has none until it counts.
        if family.type == "counter":
            exported.add(family.name + "_total")
    for query in queries:
        names = metric_names(grafana_to_promql(query))
        assert names, query
        assert names <= exported, (query, names - exported)


#: What the `toolgate-redis` alerts read: redis_exporter's metrics of the Redis toolgate
#: counts on (its names for INFO's used_memory, maxmemory and evicted_keys).
REDIS_EXPORTER = {"redis_memory_used_bytes", "redis_memory_max_bytes", "redis_evicted_keys_total"}


def test_the_redis_alerts_read_only_redis_exporters_metrics():
    rules = alert_rules("toolgate-redis")
    assert rules
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names and names <= REDIS_EXPORTER, (rule["alert"], names - REDIS_EXPORTER)


@needs_promtool
def test_every_dashboard_query_parses(tmp_path):
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": grafana_to_promql(q)}
                    for i, q in enumerate(dashboard_queries())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    path.write_text(path.read_text().replace("sum by (verdict)", "sum by verdict", 1))
    assert promtool("check", "rules", str(path)).returncode != 0
