"""The `module` Kustomize component (deploy/kubernetes/module): the sidecars component's pod with
Envoy deciding every request through toolgate's dynamic module, loaded from a volume that an init
container fills from the toolgate image. tests/test_kube_play.py runs it.

- Rendered over the example (deploy/kubernetes/example), every core object is valid Kubernetes
  (strictly); the labelled Deployment gains the init container, with the toolgate container's
  image, copying the image's module into a volume that Envoy mounts read-only where
  ENVOY_DYNAMIC_MODULES_SEARCH_PATH points; Envoy also mounts the policy ConfigMap where the
  module's config reads it. Nothing else of the pod changes, and only one Envoy bootstrap
  remains.
- That bootstrap, with the Deployment's --config-yaml, passes ``envoy --mode validate`` with the
  module built here (Envoy loads it and the module reads the policy), and it is
  deploy/envoy/mcp-dynamic-module.yaml but for the documented differences.
- Its probes listener reaches the admin for /stats/prometheus only.
- With the `monitoring` component before it, the ServiceMonitor gains the module's endpoint: a
  real Prometheus (Debian's, which scripts/test unpacks) scraping a real Envoy with the module
  and a real sidecar, as the Prometheus Operator makes that ServiceMonitor its scrape jobs,
  stores the module's decisions under the sidecar's names, apart from the sidecar's own series,
  and nothing else of Envoy's; the alert rules then read them.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from envoy_proxy import Envoy, config_ports, free_ports, module_env, render, send, validate
from sidecar import Sidecar, dies_with_parent, free_port, wait_for
from test_envoy_refusals import raw_call
from test_kubernetes import K8S_VERSION, needs_envoy, needs_kubectl
from test_kubernetes_sidecars import (
    EXAMPLE,
    KUBE,
    MONITORING,
    PROMTOOL,
    containers,
    kustomize,
    named,
)

ROOT = Path(__file__).resolve().parent.parent
MODULE = KUBE / "module"
DEPLOYED = ROOT / "deploy" / "envoy" / "mcp-dynamic-module.yaml"
SEARCH_PATH = "ENVOY_DYNAMIC_MODULES_SEARCH_PATH"
SERVER_HEADER_REMOVED = {
    "name": "envoy.http.early_header_mutation.header_mutation",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.http.early_header_mutation."
        "header_mutation.v3.HeaderMutation",
        "mutations": [{"remove": "x-mcp-server"}],
    },
}
#: Every Envoy bootstrap the project ships.
BOOTSTRAPS = sorted(
    path
    for path in (ROOT / "deploy").rglob("*.yaml")
    if "static_resources:" in path.read_text() and "kind:" not in path.read_text()
)


def with_module(directory: Path) -> Path:
    """An overlay of the example with the module component."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(EXAMPLE, directory)],
                "components": [os.path.relpath(MODULE, directory)],
            }
        )
    )
    return directory


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.skip("no kubectl (kubectl kustomize)")
    return kustomize(with_module(tmp_path_factory.mktemp("module")))


@pytest.fixture(scope="module")
def sidecars_only() -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.skip("no kubectl (kubectl kustomize)")
    return kustomize(EXAMPLE)


def pod_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return named(objects, "Deployment", "everything")["spec"]["template"]["spec"]


def mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in container.get("volumeMounts", [])}


def bootstrap(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """Envoy's bootstrap as the pod mounts it, and its container's arguments."""
    pod = pod_of(objects)
    envoy = containers(named(objects, "Deployment", "everything"))["toolgate-envoy"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    config = mounts(envoy)["toolgate-envoy"]
    data = named(objects, "ConfigMap", volumes[config["name"]]["configMap"]["name"])["data"]
    assert envoy["args"][:2] == ["-c", f"{config['mountPath']}/envoy.yaml"]
    return yaml.safe_load(data["envoy.yaml"]), envoy["args"]


def module_filter(config: dict[str, Any]) -> dict[str, Any]:
    (mcp,) = [lst for lst in config["static_resources"]["listeners"] if lst["name"] == "mcp"]
    hcm = mcp["filter_chains"][0]["filters"][0]["typed_config"]
    (found,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.dynamic_modules"]
    return found["typed_config"]


def test_the_rendered_objects_are_valid_kubernetes(rendered):
    for obj in rendered:
        if obj["kind"] not in {"ServiceMonitor", "PrometheusRule"}:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    # One Envoy bootstrap: the component's replaced the sidecars component's.
    envoys = [o for o in rendered if o["metadata"]["name"].startswith("toolgate-envoy")]
    assert [o["kind"] for o in envoys] == ["ConfigMap"]
    assert yaml.safe_load(envoys[0]["data"]["envoy.yaml"]) == yaml.safe_load(
        (MODULE / "envoy.yaml").read_text()
    )


def test_an_init_container_fills_the_volume_envoy_loads_the_module_from(rendered):
    pod = pod_of(rendered)
    (init,) = pod["initContainers"]
    toolgate = containers(named(rendered, "Deployment", "everything"))["toolgate"]
    envoy = containers(named(rendered, "Deployment", "everything"))["toolgate-envoy"]
    # The toolgate container's image: the module is always the sidecar's release.
    assert init["image"] == toolgate["image"]
    (written,) = init["volumeMounts"]
    # The image's module, written under another name and renamed into place.
    shell, flag, script = init["command"]
    new = f"{written['mountPath']}/.libtoolgate.so.new"
    assert (shell, flag) == ("sh", "-c")
    assert script.split() == [
        "cp",
        "/opt/toolgate/envoy/libtoolgate.so",
        new,
        "&&",
        "mv",
        "-f",
        new,
        f"{written['mountPath']}/libtoolgate.so",
    ]
    assert not written.get("readOnly")
    # As locked down as the sidecar's (the pod's securityContext is the app's own).
    assert toolgate["securityContext"].items() <= init["securityContext"].items()
    # Envoy reads that volume, read-only, where its search path points.
    loaded = mounts(envoy)[written["name"]]
    assert loaded["readOnly"] is True
    assert set(mounts(envoy)) == {"toolgate-envoy", written["name"], "toolgate-policy"}
    # No other container mounts the module's volume.
    others = [c for c in pod["containers"] if c["name"] != "toolgate-envoy"]
    assert [c["name"] for c in others if written["name"] in mounts(c)] == []
    env = {e["name"]: e["value"] for e in envoy["env"]}
    assert env[SEARCH_PATH].rstrip("/") == loaded["mountPath"].rstrip("/")
    (volume,) = [v for v in pod["volumes"] if v["name"] == written["name"]]
    assert set(volume) == {"name", "emptyDir"}


def test_envoy_reads_the_policy_configmap_where_the_module_looks(rendered):
    pod = pod_of(rendered)
    envoy = containers(named(rendered, "Deployment", "everything"))["toolgate-envoy"]
    config, _ = bootstrap(rendered)
    policy = Path(module_filter(config)["filter_config"]["value"]["policy"])
    policy_mount = mounts(envoy)["toolgate-policy"]
    assert policy.parent == Path(policy_mount["mountPath"]) and policy_mount["readOnly"] is True
    # The same ConfigMap as the toolgate sidecar's, mounted as a directory (a subPath mount
    # would never see an edit).
    assert "subPath" not in policy_mount
    toolgate = containers(named(rendered, "Deployment", "everything"))["toolgate"]
    assert "--policy" in toolgate["args"]
    assert toolgate["args"][toolgate["args"].index("--policy") + 1] == str(policy)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["toolgate-policy"]["configMap"]["name"] == "toolgate-policy"


def test_nothing_else_of_the_pod_changes(rendered, sidecars_only):
    module, plain = (
        copy.deepcopy(named(objects, "Deployment", "everything"))
        for objects in (rendered, sidecars_only)
    )
    for deployment in (module, plain):
        spec = deployment["spec"]["template"]["spec"]
        spec.pop("initContainers", None)
        spec["volumes"] = [v for v in spec["volumes"] if v["name"] != "toolgate-envoy-module"]
        for volume in spec["volumes"]:
            if volume["name"] == "toolgate-envoy":  # the bootstrap's ConfigMap: another hash
                volume["configMap"]["name"] = "toolgate-envoy"
        (envoy,) = [c for c in spec["containers"] if c["name"] == "toolgate-envoy"]
        envoy.pop("env", None)
        envoy["volumeMounts"] = [m for m in envoy["volumeMounts"] if m["name"] == "toolgate-envoy"]
        envoy["resources"]["limits"].pop("memory")
    assert module == plain


@needs_envoy
def test_the_bootstrap_loads_the_module_and_its_policy(rendered, tmp_path):
    config, args = bootstrap(rendered)
    assert args[2] == "--config-yaml"
    # The pod's policy path, pointed at the example's policy here.
    filter_config = module_filter(config)["filter_config"]["value"]
    filter_config["policy"] = str(EXAMPLE / "policy.json")
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(config))
    done = validate(path, "--config-yaml", args[3], env=module_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # A policy it cannot read stops Envoy: the module's config is checked at load.
    filter_config["policy"] = str(tmp_path / "missing.json")
    path.write_text(yaml.safe_dump(config))
    assert validate(path, "--config-yaml", args[3], env=module_env()).returncode != 0


def module_drift(component: dict[str, Any]) -> dict[str, Any]:
    """The component's envoy.yaml with its documented differences undone (the probes listener and
    its clusters removed, and the x-mcp-server header's removal; loopback, the repository's
    policy and server, and the mcp cluster put back): deploy/envoy/mcp-dynamic-module.yaml when
    nothing else differs."""
    undone = copy.deepcopy(component)
    deployed = yaml.safe_load(DEPLOYED.read_text())
    resources = undone["static_resources"]
    # The probes listener: the sidecars component's, with the route to the admin's page.
    (probes,) = [lst for lst in resources["listeners"] if lst["name"] == "probes"]
    sidecars = yaml.safe_load((KUBE / "sidecars" / "envoy.yaml").read_text())
    (expected,) = [
        lst for lst in sidecars["static_resources"]["listeners"] if lst["name"] == "probes"
    ]
    routes = probes["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
    routes["virtual_hosts"][0]["routes"] = [
        r
        for r in routes["virtual_hosts"][0]["routes"]
        if r["match"] != {"path": "/stats/prometheus"}
    ]
    assert probes == expected
    resources["listeners"] = [lst for lst in resources["listeners"] if lst["name"] != "probes"]
    resources["listeners"][0]["address"]["socket_address"]["address"] = "127.0.0.1"
    hcm = resources["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm.pop("early_header_mutation_extensions") == [SERVER_HEADER_REMOVED]
    value = module_filter(undone)["filter_config"]["value"]
    deployed_value = module_filter(deployed)["filter_config"]["value"]
    value["policy"], value["server"] = deployed_value["policy"], deployed_value["server"]
    clusters = [c for c in resources["clusters"] if c["name"] == "toolgate"]
    resources["clusters"] = [
        *[c for c in deployed["static_resources"]["clusters"] if c["name"] == "mcp"],
        *clusters,
    ]
    return undone


def test_the_bootstrap_is_the_deployed_module_config_but_for_the_documented_differences():
    component = yaml.safe_load((MODULE / "envoy.yaml").read_text())
    deployed = yaml.safe_load(DEPLOYED.read_text())
    assert module_drift(component) == deployed
    changed = copy.deepcopy(component)
    module_filter(changed)["filter_config"]["value"]["sidecar"]["timeout_ms"] = 5000
    assert module_drift(changed) != deployed


def test_the_probes_listener_reaches_the_admin_for_its_prometheus_page_only():
    component = yaml.safe_load((MODULE / "envoy.yaml").read_text())
    (probes,) = [
        lst for lst in component["static_resources"]["listeners"] if lst["name"] == "probes"
    ]
    hcm = probes["filter_chains"][0]["filters"][0]["typed_config"]
    (host,) = hcm["route_config"]["virtual_hosts"]
    admin = [c for c in component["static_resources"]["clusters"] if c["name"] == "envoy-admin"]
    port = admin[0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert port["socket_address"] == component["admin"]["address"]["socket_address"]
    to_admin = [r for r in host["routes"] if r.get("route", {}).get("cluster") == "envoy-admin"]
    assert to_admin == [
        {
            "match": {"path": "/stats/prometheus"},
            "route": {"cluster": "envoy-admin", "timeout": "10s"},
        }
    ]
    # No other cluster reaches the admin's address.
    admin_address = component["admin"]["address"]["socket_address"]
    reaching = [
        c["name"]
        for c in component["static_resources"]["clusters"]
        for e in c["load_assignment"]["endpoints"]
        for lb in e["lb_endpoints"]
        if lb["endpoint"]["address"]["socket_address"] == admin_address
    ]
    assert reaching == ["envoy-admin"]
    # Every other route is an exact path or the catch-all 404.
    for route in host["routes"]:
        assert set(route["match"]) == {"path"} or route == {
            "match": {"prefix": "/"},
            "direct_response": {"status": 404},
        }


@needs_kubectl
def test_the_component_needs_the_sidecars_component_first(tmp_path):
    """Alone, the component has no Envoy bootstrap to replace: kustomize refuses it."""
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": [], "components": [os.path.relpath(MODULE, tmp_path)]})
    )
    with pytest.raises(AssertionError, match="toolgate-envoy"):
        kustomize(tmp_path)


def server_fixed(hcm: dict[str, Any]) -> bool:
    """Whether every request through this connection manager is decided for an MCP server the
    config names (a `server` in the module's config, or in ext_authz's context extensions on
    every route), so that no header chooses it."""
    for f in hcm.get("http_filters", []):
        config = f.get("typed_config", {})
        if f["name"] == "envoy.filters.http.dynamic_modules":
            return "server" in config["filter_config"]["value"]
    routes = [r for h in hcm["route_config"]["virtual_hosts"] for r in h["routes"]]
    return all(
        "server"
        in r.get("typed_per_filter_config", {})
        .get("envoy.filters.http.ext_authz", {})
        .get("check_settings", {})
        .get("context_extensions", {})
        for r in routes
    )


def removed_early(hcm: dict[str, Any]) -> set[str]:
    return {
        m["remove"]
        for e in hcm.get("early_header_mutation_extensions", [])
        for m in e["typed_config"].get("mutations", [])
        if "remove" in m
    }


@pytest.mark.parametrize("path", BOOTSTRAPS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_shipped_bootstrap_lets_a_client_name_the_mcp_server(path):
    """toolgate takes the MCP server's id from the config, else from the x-mcp-server header:
    a config that names none removes a client's header before anything reads it, or the
    client would pick the policy's `servers` section and the counters of its server-scoped
    limits."""
    config = yaml.safe_load(path.read_text())
    deciding = 0
    for listener in config["static_resources"].get("listeners", []):
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                hcm = f.get("typed_config", {})
                names = {h["name"] for h in hcm.get("http_filters", [])}
                toolgate = {"envoy.filters.http.ext_authz", "envoy.filters.http.dynamic_modules"}
                if not names & toolgate:
                    continue
                deciding += 1
                assert server_fixed(hcm) or "x-mcp-server" in removed_early(hcm), listener["name"]
    assert deciding or "ratelimit" in path.name, "no listener decided by toolgate"


# --- monitoring: the module's decisions under the sidecar's names ------------------------------

#: Debian's prometheus package, unpacked by scripts/test beside promtool.
PROMETHEUS = (
    str(Path(PROMTOOL).with_name("prometheus"))
    if PROMTOOL and Path(PROMTOOL).with_name("prometheus").exists()
    else shutil.which("prometheus")
)
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None and not os.environ.get("CI"),
    reason="no prometheus (scripts/test unpacks Debian's package)",
)
#: A ServiceMonitor's relabelling fields, as the Prometheus Operator writes them in Prometheus'
#: configuration.
RELABEL_FIELDS = {"sourceLabels": "source_labels", "targetLabel": "target_label"}


def scrape_job(endpoint: dict[str, Any], target: str) -> dict[str, Any]:
    """A ServiceMonitor endpoint as the Prometheus Operator makes it a scrape job, the job label
    the one the monitoring component's jobLabel gives (its Service's name)."""

    def relabel(rule: dict[str, Any]) -> dict[str, Any]:
        return {RELABEL_FIELDS.get(k, k): v for k, v in rule.items()}

    return {
        "job_name": f"toolgate-metrics{endpoint['path']}",
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "metrics_path": endpoint["path"],
        "params": endpoint.get("params", {}),
        "static_configs": [{"targets": [target], "labels": {"job": "toolgate-metrics"}}],
        "relabel_configs": [relabel(r) for r in endpoint.get("relabelings", [])],
        "metric_relabel_configs": [relabel(r) for r in endpoint.get("metricRelabelings", [])],
    }


def test_the_servicemonitor_gains_the_modules_endpoint_only_after_monitoring(
    rendered, sidecars_only
):
    with_module = named(rendered, "ServiceMonitor", "toolgate")["spec"]["endpoints"]
    without = named(sidecars_only, "ServiceMonitor", "toolgate")["spec"]["endpoints"]
    assert with_module[: len(without)] == without and len(with_module) == len(without) + 1
    (added,) = with_module[len(without) :]
    assert (added["port"], added["path"]) == ("metrics", "/stats/prometheus")


@needs_prometheus
def test_prometheus_stores_the_modules_decisions_as_the_sidecars(rendered, tmp_path):
    """Prometheus scraping the pod as the ServiceMonitor says (both endpoints, through Envoy's
    probes listener) keeps the module's counters under the sidecar's names with
    metrics_source="envoy-module", the sidecar's own series beside them, nothing of Envoy's."""
    config, args = bootstrap(rendered)
    module_filter(config)["filter_config"]["value"]["policy"] = str(EXAMPLE / "policy.json")
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(config))
    endpoints = named(rendered, "ServiceMonitor", "toolgate")["spec"]["endpoints"]
    query_port = free_port()
    with Sidecar(EXAMPLE / "policy.json") as sidecar:
        ports = free_ports(config_ports(path))
        ports |= {9191: sidecar.port, 9464: sidecar.metrics_port}
        upstream = args[3].replace("port_value: 3001", f"port_value: {free_port()}")
        with Envoy(
            render(path, ports),
            ports[9901],
            "--config-yaml",
            upstream,
            port=ports[10000],
            env=module_env(),
        ) as envoy:
            target = f"127.0.0.1:{ports[9902]}"
            (tmp_path / "prometheus.yml").write_text(
                yaml.safe_dump({"scrape_configs": [scrape_job(e, target) for e in endpoints]})
            )
            log = (tmp_path / "prometheus.log").open("wb")
            prometheus = subprocess.Popen(
                dies_with_parent(
                    [
                        str(PROMETHEUS),
                        f"--config.file={tmp_path / 'prometheus.yml'}",
                        f"--storage.tsdb.path={tmp_path / 'data'}",
                        f"--web.listen-address=127.0.0.1:{query_port}",
                    ]
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                # get-env is not in the example's policy: denied, by the module.
                denied = raw_call('{"name":"get-env","arguments":{}}')

                def deny(times: int) -> None:
                    for _ in range(times):
                        status, headers, _ = send(envoy, "POST", denied)
                        code = headers.get("x-toolgate-code")
                        assert code == "DEFAULT_DENY", (status, headers)

                def stored(count: int) -> list[dict[str, Any]] | None:
                    # Each stream's end pushes the module's numbers (at most once a second).
                    send(envoy, "POST", b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
                    found = query(query_port, 'toolgate_decisions_total{verdict="DENY"}')
                    return found if found and float(found[0]["value"][1]) == count else None

                deny(3)
                (denials,) = wait_for(lambda: stored(3), timeout=60)
                assert denials["metric"]["metrics_source"] == "envoy-module"
                assert denials["metric"]["api"] == "envoy_module"

                # Both endpoints scraped (each target's first scrape comes in its own time),
                # the sidecar's series kept apart from the module's.
                def both(promql: str) -> list[dict[str, Any]] | None:
                    found = query(query_port, promql)
                    return found if len(found) == 2 else None

                up = wait_for(lambda: both('up{job="toolgate-metrics"} == 1'), timeout=60)
                assert sorted(float(s["value"][1]) for s in up) == [1.0, 1.0]
                info = wait_for(lambda: both("toolgate_policy_info"), timeout=60)
                sources = sorted(s["metric"].get("metrics_source", "") for s in info)
                assert sources == ["", "envoy-module"]
                # Nothing of Envoy's own stats kept: the module's endpoint gives toolgate's
                # names (and Prometheus' own series about the scrape) only.
                module = query(query_port, '{metrics_source="envoy-module"}')
                names = {s["metric"]["__name__"] for s in module}
                envoys = [n for n in names if not n.startswith(("toolgate_", "scrape_", "up"))]
                assert envoys == [] and len({n for n in names if n.startswith("toolgate_")}) > 5
                # The denial alert's rate reads the module's denials.
                deny(3)
                wait_for(lambda: stored(6), timeout=60)
                spike = alert_expression("ToolgateDenialsSpiking").splitlines()[0]
                spike = spike.rsplit(" > ", 1)[0]
                assert "toolgate_decisions_total" in spike
                wait_for(lambda: [s for s in query(query_port, spike) if float(s["value"][1]) > 0])
            finally:
                prometheus.terminate()
                prometheus.wait(timeout=30)
                log.close()


def query(port: int, promql: str) -> list[dict[str, Any]]:
    """An instant query to Prometheus' HTTP API: its result's samples."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            answer = json.load(response)
    except OSError:
        return []
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def alert_expression(name: str) -> str:
    rules = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    (found,) = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == name]
    return found["expr"]
