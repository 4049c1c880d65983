"""deploy/helm/toolgate, the Helm chart: the Kustomize kit (deploy/kubernetes) as Helm values.

- ``helm lint --strict`` passes, and ``helm template`` renders, for each mode with every option
  on and off; every rendered object is valid Kubernetes for the newest version
  kubernetes-validate knows, strictly (the Prometheus Operator's objects are checked against
  what they select, as tests/test_kubernetes_sidecars.py does); each option adds what it says
  and nothing when off.
- Mode allInOne renders the kit's base: the same pod (every container, probe, volume, setting),
  the same ConfigMap contents and Service port, and its pieces agree (test_kubernetes's
  ``agreement``). Mode sidecars, given the kit example's server container, renders what the
  ``sidecars`` component makes of it: the same two containers, volumes and NetworkPolicy, the
  server container kept exactly. The named templates work from a parent chart.
- The files the chart reads (files/) are the kit's files byte for byte: Helm reads nothing
  outside the chart's directory. So the policy ConfigMap is the given policy, the alert rules
  alerts.yaml's groups, the dashboard dashboard.json.
- A changed policy changes the ConfigMap only (reloaded in place, the pod not rolled).
- The Redis store options point toolgate at the store; replicas above 1 need one.
- ``podman kube play`` of the allInOne rendering (marker ``packaging``, as tests/test_kube_play.py,
  whose helpers it uses).

Helm is the pinned version scripts/install-helm builds into target/tools/bin (scripts/test runs
it); without it the tests that run it skip, except in CI.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import re
import runpy
import shutil
import subprocess
import tomllib
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import kubernetes_validate
import pytest
import yaml
from envoy_proxy import module_env, validate
from hypothesis import HealthCheck, given, settings
from redis_server import RedisServer
from test_kubernetes import K8S_VERSION, agreement, needs_envoy, rendered
from test_kubernetes_module import module_filter, with_module
from test_kubernetes_sidecars import admitted, kustomize
from toolgate.cli.main import command_parser

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "toolgate"
KUBE = ROOT / "deploy" / "kubernetes"
EXAMPLE = KUBE / "example"
CRDS = {"ServiceMonitor", "PrometheusRule"}

#: The chart's files/ and the originals they copy (Helm's .Files reads inside the chart only).
COPIES = {
    "envoy.yaml": KUBE / "envoy.yaml",
    "envoy-sidecars.yaml": KUBE / "sidecars" / "envoy.yaml",
    "envoy-module.yaml": KUBE / "module" / "envoy.yaml",
    "module-servicemonitor.yaml": KUBE / "module" / "servicemonitor.yaml",
    "loopback.mjs": KUBE / "loopback.mjs",
    "policy.json": ROOT / "examples" / "policy.json",
    "alerts.yaml": KUBE / "monitoring" / "alerts.yaml",
    "dashboard.json": KUBE / "monitoring" / "dashboard.json",
}


def _helm() -> str | None:
    local = ROOT / "target" / "tools" / "bin" / "helm"
    return str(local) if local.exists() else shutil.which("helm")


HELM = _helm()


def helm(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Helm, run; a test without it skips (CI, whose scripts/test installs it, fails). The
    tests of the chart's files run without it."""
    if HELM is None:
        if os.environ.get("CI"):
            pytest.fail("no helm: scripts/test installs it (bash scripts/install-helm)")
        pytest.skip("no helm (bash scripts/install-helm)")
    return subprocess.run(
        [HELM, *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )


def values_file(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / f"values-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def template(
    tmp_path: Path, values: dict[str, Any], release: str = "toolgate", chart: Path = CHART
) -> list[dict[str, Any]]:
    """The objects ``helm template`` renders with ``values``."""
    done = helm("template", release, str(chart), "-f", str(values_file(tmp_path, values)))
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def refused(tmp_path: Path, values: dict[str, Any]) -> str:
    """The error ``helm template`` fails with for ``values``."""
    done = helm("template", "toolgate", str(CHART), "-f", str(values_file(tmp_path, values)))
    assert done.returncode != 0, done.stdout[:2000]
    return done.stderr


def named(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def pod(objects: list[dict[str, Any]], name: str | None = None) -> dict[str, Any]:
    deployments = [
        o
        for o in objects
        if o["kind"] == "Deployment" and not o["metadata"]["name"].endswith("-redis")
    ]
    (found,) = [d for d in deployments if name in (None, d["metadata"]["name"])]
    return found["spec"]["template"]


def containers(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in template["spec"]["containers"]}


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


# --- the configurations rendered ---------------------------------------------------------------

#: The example app of the kit (deploy/kubernetes/example/app) as mode sidecars' values.
_APP = next(d for d in yaml.safe_load_all((EXAMPLE / "app" / "deployment.yaml").read_text()) if d)
_APP_POD = _APP["spec"]["template"]["spec"]
SIDECARS: dict[str, Any] = {
    "mode": "sidecars",
    "policy": (EXAMPLE / "policy.json").read_text(),
    "sidecars": {
        "containers": _APP_POD["containers"],
        "volumes": _APP_POD["volumes"],
        "mcpPort": 3001,
    },
}
MONITORING = {
    "monitoring": {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "dashboard": {"enabled": True},
    }
}


MODULE = {"envoyModule": {"enabled": True}}


def merged(*parts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


CONFIGS: dict[str, dict[str, Any]] = {
    "allInOne": {},
    "allInOne-everything": merged(
        MONITORING, {"networkPolicy": {"enabled": True}, "store": {"redis": {"enabled": True}}}
    ),
    "allInOne-store-url": {"store": {"url": "redis://redis.example:6379/0", "timeoutMs": 50}},
    "allInOne-store-secret": {"store": {"existingSecret": "toolgate-store"}},
    "allInOne-options": {
        "store": {"existingSecret": "toolgate-store"},
        "toolgate": {"options": {"capacity": 200000, "metrics-per-tool": True}},
    },
    "allInOne-existing-policy": {"existingPolicyConfigMap": "my-policy"},
    "sidecars": SIDECARS,
    "sidecars-everything": merged(SIDECARS, MONITORING, {"store": {"redis": {"enabled": True}}}),
    "sidecars-no-networkpolicy": merged(SIDECARS, {"networkPolicy": {"enabled": False}}),
    "sidecars-templates-only": merged(SIDECARS, {"sidecars": {"createDeployment": False}}),
    "sidecars-module": merged(SIDECARS, MODULE),
    "sidecars-module-everything": merged(
        SIDECARS, MODULE, MONITORING, {"store": {"redis": {"enabled": True}}}
    ),
}


def expected_kinds(values: dict[str, Any]) -> list[str]:
    """The kinds a configuration must render: each option adds its objects, and nothing else."""
    sidecars = values.get("mode") == "sidecars"
    deployment = not sidecars or values["sidecars"].get("createDeployment", True)
    monitoring = values.get("monitoring", {})
    kinds = ["ConfigMap"]  # Envoy's
    kinds += ["ConfigMap"] if not values.get("existingPolicyConfigMap") else []
    kinds += ["ConfigMap"] if not sidecars else []  # the Node preload
    kinds += ["Deployment", "Service"] if deployment else []
    if values.get("networkPolicy", {}).get("enabled", sidecars):
        kinds.append("NetworkPolicy")
    if values.get("store", {}).get("redis", {}).get("enabled"):
        kinds += ["Deployment", "Service"]
    if monitoring.get("serviceMonitor", {}).get("enabled"):
        kinds += ["Service", "ServiceMonitor"]
    if monitoring.get("prometheusRule", {}).get("enabled"):
        kinds.append("PrometheusRule")
    if monitoring.get("dashboard", {}).get("enabled"):
        kinds.append("ConfigMap")
    return sorted(kinds)


@pytest.fixture(scope="module")
def renderings(tmp_path_factory) -> dict[str, list[dict[str, Any]]]:
    work = tmp_path_factory.mktemp("helm")
    return {name: template(work, values) for name, values in CONFIGS.items()}


# --- helm itself, the chart's metadata, the copies ---------------------------------------------


def test_helm_is_the_pinned_version():
    script = (ROOT / "scripts" / "install-helm").read_text()
    pinned = re.search(r"^HELM_VERSION=(\S+)$", script, re.M)
    assert pinned
    done = helm("version", "--template", "{{.Version}}")
    assert done.stdout == pinned.group(1)


def test_the_chart_deploys_this_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]
    assert chart["version"] == chart["appVersion"] == version


@pytest.mark.parametrize("name", sorted(COPIES))
def test_the_charts_files_are_the_kits(name):
    # Helm reads no file outside the chart; kustomize none outside the kit. One copy each way
    # would drift, so the chart's is the kit's, byte for byte: edit the kit's, then copy.
    assert (CHART / "files" / name).read_bytes() == COPIES[name].read_bytes(), (
        f"cp {COPIES[name].relative_to(ROOT)} {(CHART / 'files' / name).relative_to(ROOT)}"
    )


def test_the_chart_has_no_file_it_does_not_read():
    assert {p.name for p in (CHART / "files").iterdir()} == set(COPIES)


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_helm_lint_passes(config, tmp_path):
    done = helm("lint", "--strict", str(CHART), "-f", str(values_file(tmp_path, CONFIGS[config])))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_value_is_documented():
    """Each leaf of values.yaml has a `# --` comment above it or above a mapping it is in, with
    its default, and README.md names it."""
    text = (CHART / "values.yaml").read_text()
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load(text)

    def leaves(node: Any, prefix: str = "") -> list[str]:
        if isinstance(node, dict) and node and not prefix.endswith(("resources", "labels")):
            return [p for k, v in node.items() for p in leaves(v, f"{prefix}{k}.")]
        return [prefix.rstrip(".")]

    for path in leaves(values):
        top = path.split(".")[0]
        assert f"`{path}`" in readme or f"`{top}" in readme, path
    assert text.count("# --") >= 30
    assert text.count("(default:") + text.count("Default:") >= text.count("# --")


# --- values.schema.json: a misspelt value is refused ---------------------------------------------

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
#: Mappings whose keys are the user's (Kubernetes' own fields, labels), not the chart's.
OPEN = {"resources", "labels", "podLabels", "podAnnotations", "podSpec", "policy", "global"}
OPEN |= {"envoyResources"}
#: toolgate.options: keys of toolgate's own, whose schema its parser makes (below).
OPEN |= {"options"}


def value_paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path of the chart's own mappings in ``node`` (values.yaml's)."""
    paths = []
    for key, value in node.items():
        path = (*prefix, key)
        paths.append(path)
        if isinstance(value, dict) and key not in OPEN:
            paths += value_paths(value, path)
    return paths


def schema_paths(node: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for key, sub in node.get("properties", {}).items():
        path = (*prefix, key)
        paths.append(path)
        if key not in OPEN:
            paths += schema_paths(sub, path)
    return paths


VALUE_PATHS = value_paths(yaml.safe_load((CHART / "values.yaml").read_text()))


def test_the_schema_names_exactly_the_values():
    """values.yaml owns which values there are and their defaults; the schema their types."""
    assert sorted(schema_paths(SCHEMA)) == sorted([*VALUE_PATHS, ("global",)])


def misspelt(key: str) -> str:
    """``key`` with two letters swapped (or one doubled): as a hand slips."""
    return key[1] + key[0] + key[2:] if key[0] != key[1] else key + key[-1]


@pytest.mark.parametrize("path", VALUE_PATHS, ids=".".join)
def test_a_misspelt_value_is_refused_by_helm(tmp_path, path):
    values: dict[str, Any] = {}
    node = values
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[misspelt(path[-1])] = "x"
    said = refused(tmp_path, values)
    assert f"additional properties '{misspelt(path[-1])}' not allowed" in said, said


def test_a_value_of_the_wrong_type_is_refused_by_helm(tmp_path):
    assert "replicas" in refused(tmp_path, {"replicas": "three"})
    assert "port" in refused(tmp_path, {"service": {"port": 70000}})
    assert "logFormat" in refused(tmp_path, {"toolgate": {"logFormat": "yaml"}})


# --- toolgate.options: made from toolgate's parser ----------------------------------------------

GEN_OPTIONS = runpy.run_path(str(ROOT / "scripts" / "gen_helm_options"))


def test_the_options_schema_is_the_one_toolgates_parser_makes():
    assert (CHART / "values.schema.json").read_text() == GEN_OPTIONS["written"](), (
        "run scripts/gen_helm_options"
    )


def test_the_chart_gives_on_the_command_line_exactly_the_options_it_leaves_out(renderings):
    given = set()
    for objects in renderings.values():
        for o in objects:
            if o["kind"] == "Deployment" and not o["metadata"]["name"].endswith("-redis"):
                args = containers(o["spec"]["template"])["toolgate"]["args"]
                given |= {a[2:] for a in args if a.startswith("--")}
    assert given == set(GEN_OPTIONS["CHART_SETS"])


SERVE_PARSER = command_parser("serve")


#: Text options drawn, with text each takes (the others are addresses, paths and URLs).
HEADERS = ["grant-header", "session-header", "agent-header", "server-header", "jwt-payload-key"]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_options_reach_toolgate_as_the_values_it_reads(tmp_path, data):
    """Values the schema admits render as TOOLGATE_* variables that toolgate reads back as
    the same values (a whole number without a decimal point, a flag as true or false)."""
    from toolgate.cli.serve_config import layered, options_of, variable

    schema = SCHEMA["properties"]["toolgate"]["properties"]["options"]["properties"]
    samples = {
        "integer": st.integers(1, 10**7),
        "number": st.sampled_from([0.5, 2.0, 30, 0.001, 1500]),
        "boolean": st.booleans(),
    }
    drawable = sorted(n for n, e in schema.items() if e.get("type") != "string") + HEADERS
    names = data.draw(st.lists(st.sampled_from(drawable), min_size=1, max_size=6, unique=True))
    options: dict[str, Any] = {}
    actions = options_of(SERVE_PARSER)

    def taken(name: str, value: Any) -> bool:
        """Whether the option's own checks (a range, such as a ratio's) take ``value``."""
        check = actions[name].type
        try:
            if callable(check):
                check(str(value))
        except argparse.ArgumentTypeError:
            return False
        return True

    for name in names:
        entry = schema[name]
        if "enum" in entry:
            options[name] = data.draw(st.sampled_from(entry["enum"]))
        elif entry["type"] == "string":
            options[name] = "x-caller"
        else:
            options[name] = data.draw(samples[entry["type"]].filter(partial(taken, name)))
    objects = template(tmp_path, {"toolgate": {"options": options}})
    env = {e["name"]: e["value"] for e in containers(pod(objects))["toolgate"]["env"]}
    assert set(env) == {variable(n) for n in options}
    words = ["--policy", "p.json"]
    read, _ = layered(SERVE_PARSER, SERVE_PARSER.parse_args(words), words, environ=env)
    for name, value in options.items():
        got = getattr(read, actions[name].dest)
        if isinstance(value, bool):
            assert got is value, name
        elif isinstance(value, int | float):
            assert got == pytest.approx(value), (name, env)
        else:
            assert str(got) == value, name


def test_a_misspelt_option_or_one_of_the_charts_is_refused_by_helm(tmp_path):
    said = refused(tmp_path, {"toolgate": {"options": {"capactiy": 1000}}})
    assert "additional properties 'capactiy' not allowed" in said, said
    said = refused(tmp_path, {"toolgate": {"options": {"listen": "0.0.0.0:9191"}}})
    assert "additional properties 'listen' not allowed" in said, said
    assert "capacity" in refused(tmp_path, {"toolgate": {"options": {"capacity": "lots"}}})
    assert "store-mode" in refused(tmp_path, {"toolgate": {"options": {"store-mode": "fast"}}})


# --- validity, and each option on and off -------------------------------------------------------


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_every_rendered_object_is_valid_kubernetes(renderings, config):
    objects = renderings[config]
    assert sorted(o["kind"] for o in objects) == expected_kinds(CONFIGS[config])
    for obj in objects:
        if obj["kind"] in CRDS:
            assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_a_broken_rendering_is_not_valid(renderings):
    broken = copy.deepcopy(named(renderings["allInOne"], "Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_wrong_values_are_refused(tmp_path):
    assert "mode must be allInOne or sidecars" in refused(tmp_path, {"mode": "sidecar"})
    # The policy is yours in mode sidecars, and so are the containers.
    assert "the policy is yours" in refused(tmp_path, {"mode": "sidecars"})
    # The module decides beside your containers: mode sidecars only.
    assert "mode sidecars only" in refused(tmp_path, MODULE)
    no_containers = {"mode": "sidecars", "policy": "{}"}
    assert "sidecars.containers" in refused(tmp_path, no_containers)
    # Replicas without a shared store would each allow a limit's max.
    assert "needs counters in Redis" in refused(tmp_path, {"replicas": 2})
    both = {"store": {"url": "redis://r:6379/0", "redis": {"enabled": True}}}
    assert "set one of" in refused(tmp_path, both)


# --- mode allInOne is the kit's base ------------------------------------------------------------

#: The chart's ConfigMap names (release "toolgate") -> the kit base's.
BASE_NAMES = {
    "toolgate-policy": "toolgate-policy",
    "toolgate-envoy": "envoy-config",
    "toolgate-mcp-loopback": "mcp-loopback",
}


def renamed_volumes(spec: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            volume["configMap"]["name"] = names.get(volume["configMap"]["name"], "?")
    return spec


def test_all_in_one_is_the_kits_base(renderings):
    objects = renderings["allInOne"]
    base = rendered(KUBE)  # kubectl kustomize, or test_kubernetes' renderer without kubectl
    chart_pod, base_pod = pod(objects), pod(base)
    assert renamed_volumes(chart_pod["spec"], BASE_NAMES) == base_pod["spec"]
    annotations = chart_pod["metadata"]["annotations"]
    assert base_pod["metadata"]["annotations"].items() <= annotations.items()
    # ...the rest of the Deployment, its ConfigMaps' contents and the Service's port.
    chart_deployment, base_deployment = named(objects, "Deployment"), named(base, "Deployment")
    for key in ("replicas", "strategy"):
        assert chart_deployment["spec"][key] == base_deployment["spec"][key]
    for chart_name, base_name in BASE_NAMES.items():
        assert (
            named(objects, "ConfigMap", chart_name)["data"]
            == (named(base, "ConfigMap", base_name)["data"])
        )
    assert named(objects, "Service")["spec"] == named(base, "Service")["spec"] | {
        "selector": chart_deployment["spec"]["selector"]["matchLabels"]
    }
    # The kit's agreement check (ports, mounts, probes, security) finds nothing to report.
    assert agreement(objects) == []


def test_envoy_and_the_preload_roll_the_pod_and_the_policy_does_not(tmp_path):
    before = template(tmp_path, {})
    after = template(tmp_path, {"policy": json.dumps({"version": "1", "default": "deny"})})
    # A new policy changes its ConfigMap, not the pod template: the pod reloads it in place.
    assert named(before, "Deployment") == named(after, "Deployment")
    policy = "toolgate-policy"
    assert named(before, "ConfigMap", policy) != named(after, "ConfigMap", policy)
    # What is read at start only has its checksum on the pod, so a change rolls it.
    annotations = pod(before)["metadata"]["annotations"]
    assert {"checksum/envoy-config", "checksum/mcp-loopback"} <= set(annotations)
    assert not [a for a in annotations if "policy" in a]


# --- mode sidecars is the kit's component --------------------------------------------------------


def kit_example() -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.skip("no kubectl (kubectl kustomize)")
    return kustomize(EXAMPLE)


def kit_example_with_module(directory: Path) -> list[dict[str, Any]]:
    kit_example()  # skips without kubectl
    return kustomize(with_module(directory))


@pytest.mark.parametrize("config", ["sidecars", "sidecars-module"])
def test_sidecars_is_what_the_kits_component_makes(renderings, config, tmp_path):
    """Mode sidecars is the `sidecars` component over the kit's example; with envoyModule, the
    `module` component after it: the same init container, containers, volumes and bootstrap."""
    objects = renderings[config]
    kit = kit_example_with_module(tmp_path) if config.endswith("module") else kit_example()
    chart_pod, kit_pod = pod(objects), pod(kit, "everything")
    chart_envoy_map = chart_pod["spec"]["volumes"][1]["configMap"]["name"]
    kit_envoy_map = next(
        v["configMap"]["name"] for v in kit_pod["spec"]["volumes"] if v["name"] == "toolgate-envoy"
    )
    names = {"toolgate-policy": "toolgate-policy", chart_envoy_map: kit_envoy_map}
    # The same containers (the two sidecars, and the server exactly as given), volumes and pod
    # settings, in the same order.
    spec = renamed_volumes(chart_pod["spec"], names)
    assert sorted(spec["volumes"], key=lambda v: v["name"]) == sorted(
        kit_pod["spec"]["volumes"], key=lambda v: v["name"]
    )
    spec.pop("volumes")
    assert spec == {k: v for k, v in kit_pod["spec"].items() if k != "volumes"}
    assert chart_pod["metadata"]["labels"]["toolgate/sidecars"] == "enabled"
    assert ("initContainers" in spec) == config.endswith("module")
    # The pod carries the checksum of the bootstrap it mounts, so a new one rolls it.
    bootstrap = "envoy-module.yaml" if config.endswith("module") else "envoy-sidecars.yaml"
    assert chart_pod["metadata"]["annotations"]["checksum/toolgate-envoy"] == (
        hashlib.sha256((CHART / "files" / bootstrap).read_bytes()).hexdigest()
    )
    # Envoy's bootstrap and the policy are the kit's; the Service targets Envoy.
    assert (
        named(objects, "ConfigMap", chart_envoy_map)["data"]
        == (named(kit, "ConfigMap", kit_envoy_map)["data"])
    )
    assert (
        named(objects, "ConfigMap", "toolgate-policy")["data"]
        == (named(kit, "ConfigMap", "toolgate-policy")["data"])
    )
    (port,) = named(objects, "Service")["spec"]["ports"]
    assert port["targetPort"] == "toolgate-mcp"
    # The NetworkPolicy is the component's.
    assert (
        named(objects, "NetworkPolicy")["spec"]
        == (named(kit, "NetworkPolicy", "toolgate-sidecars")["spec"])
    )


def test_with_the_module_the_servicemonitor_scrapes_what_the_kits_does(renderings, tmp_path):
    """The module's decisions, in Envoy's stats, are scraped as the kit's module component adds
    to the monitoring component's ServiceMonitor; without the module, only /metrics."""
    chart = named(renderings["sidecars-module-everything"], "ServiceMonitor")["spec"]
    kit = named(kit_example_with_module(tmp_path), "ServiceMonitor", "toolgate")["spec"]
    assert chart["endpoints"] == kit["endpoints"]
    assert [e["path"] for e in chart["endpoints"]] == ["/metrics", "/stats/prometheus"]
    plain = named(renderings["sidecars-everything"], "ServiceMonitor")["spec"]["endpoints"]
    assert [e["path"] for e in plain] == ["/metrics"]


@pytest.mark.parametrize("config", ["allInOne-everything", "sidecars"])
def test_the_networkpolicy_admits_envoys_ports_only(renderings, config, tmp_path):
    objects = renderings[config]
    policy, template_ = named(objects, "NetworkPolicy"), pod(objects)
    open_ports = {10000, 9902} | ({9464} if config.startswith("allInOne") else set())
    for port in open_ports:
        assert admitted(policy, template_, port), port
    # toolgate's decisions, its loopback metrics (sidecars), Envoy's admin, the MCP server.
    for port in {9191, 9901, 8000, 3001} | ({9464} - open_ports):
        assert not admitted(policy, template_, port), port
    narrowed = template(
        tmp_path,
        merged(
            CONFIGS[config],
            {"networkPolicy": {"enabled": True, "from": [{"namespaceSelector": {}}]}},
        ),
    )
    assert named(narrowed, "NetworkPolicy")["spec"]["ingress"][0]["from"] == [
        {"namespaceSelector": {}}
    ]


@pytest.mark.parametrize("config", ["sidecars", "sidecars-module"])
def test_the_sidecar_templates_work_in_a_parent_chart(tmp_path, renderings, config):
    """Your own chart, with this one as a dependency (charts/toolgate), includes the sidecars in
    its pod template with `.Subcharts.toolgate`: the same pod as mode sidecars', with or without
    the module's init container."""
    parent = tmp_path / "my-server"
    (parent / "templates").mkdir(parents=True)
    shutil.copytree(CHART, parent / "charts" / "toolgate")
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    (parent / "Chart.yaml").write_text(
        "apiVersion: v2\nname: my-server\nversion: 1.0.0\n"
        f"dependencies:\n  - {{name: toolgate, version: {version}}}\n"
    )
    values = merged(CONFIGS[config], {"sidecars": {"createDeployment": False}})
    del values["sidecars"]["containers"], values["sidecars"]["volumes"]
    (parent / "values.yaml").write_text(yaml.safe_dump({"toolgate": values}))
    readme = (CHART / "README.md").read_text()
    snippet = readme.split("<!-- parent chart: a Helm template, not plain YAML -->\n```gotmpl\n")[1]
    snippet = snippet.split("```")[0]
    (parent / "templates" / "deployment.yaml").write_text(snippet)
    objects = template(tmp_path, {}, release="toolgate", chart=parent)
    mine = pod(objects, "my-server")
    theirs = pod(renderings[config])
    # The two sidecars first, then yours (as in mode sidecars); the sidecars' volumes first.
    assert mine["spec"]["containers"][:2] == theirs["spec"]["containers"][:2]
    sidecar_volumes = len(theirs["spec"]["volumes"]) - len(SIDECARS["sidecars"]["volumes"])
    assert sidecar_volumes == (4 if config.endswith("module") else 3)
    assert mine["spec"]["volumes"][:sidecar_volumes] == theirs["spec"]["volumes"][:sidecar_volumes]
    assert mine["spec"]["initContainers"] == theirs["spec"].get("initContainers", [])
    assert mine["metadata"]["labels"]["toolgate/sidecars"] == "enabled"
    assert mine["metadata"]["annotations"] == theirs["metadata"]["annotations"]
    # The ConfigMaps its volumes name come from the subchart.
    maps = {o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"}
    assert {v["configMap"]["name"] for v in mine["spec"]["volumes"] if "configMap" in v} <= maps


def envoy_bootstrap(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """Envoy's bootstrap as the sidecars' pod mounts it."""
    volumes = {v["name"]: v for v in pod(objects)["spec"]["volumes"]}
    name = volumes["toolgate-envoy"]["configMap"]["name"]
    return yaml.safe_load(named(objects, "ConfigMap", name)["data"]["envoy.yaml"])


@pytest.mark.parametrize(
    "store",
    [
        {"redis": {"enabled": True}},
        {"url": "redis://redis.example:6379/1", "timeoutMs": 50, "unavailable": "local"},
    ],
    ids=["chart-redis", "url"],
)
def test_with_the_module_the_redis_store_is_the_modules_too(tmp_path, store):
    """With envoyModule and a Redis store, the module's filter is given the sidecar's store
    settings (one counter table for the calls each decides); the bootstrap is otherwise the
    kit's, and the pod carries the checksum of what it mounts."""
    objects = template(tmp_path, merged(SIDECARS, MODULE, {"store": store}))
    args = containers(pod(objects))["toolgate"]["args"]
    bootstrap = envoy_bootstrap(objects)
    value = module_filter(bootstrap)["filter_config"]["value"]
    given_settings = value.pop("settings")
    assert given_settings["store"] == flag(args, "--store")
    assert given_settings["store_unavailable"] == flag(args, "--store-unavailable")
    timeout = flag(args, "--store-timeout-ms")
    assert given_settings.get("store_timeout_ms") == (int(timeout) if timeout else None)
    assert bootstrap == yaml.safe_load((CHART / "files" / "envoy-module.yaml").read_text())
    data = named(objects, "ConfigMap", "toolgate-envoy")["data"]["envoy.yaml"]
    checksum = pod(objects)["metadata"]["annotations"]["checksum/toolgate-envoy"]
    assert checksum == hashlib.sha256(data.encode()).hexdigest()
    # A Secret's URL would be written into a ConfigMap: refused, saying so.
    secret = merged(SIDECARS, MODULE, {"store": {"existingSecret": "toolgate-store"}})
    assert "existingSecret" in refused(tmp_path, secret)


@needs_envoy
def test_the_module_loads_the_charts_store_settings_in_envoy(tmp_path):
    """The bootstrap the chart renders with a Redis store passes `envoy --mode validate` with
    the module, counting in a real Redis: the module takes the settings it is given."""
    with RedisServer() as redis:
        objects = template(
            tmp_path, merged(SIDECARS, MODULE, {"store": {"url": redis.url, "timeoutMs": 200}})
        )
        bootstrap = envoy_bootstrap(objects)
        module_filter(bootstrap)["filter_config"]["value"]["policy"] = str(EXAMPLE / "policy.json")
        path = tmp_path / "envoy.yaml"
        path.write_text(yaml.safe_dump(bootstrap))
        args = containers(pod(objects))["toolgate-envoy"]["args"]
        done = validate(path, "--config-yaml", flag(args, "--config-yaml") or "", env=module_env())
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        # A setting's value the module refuses stops it: the check above can fail.
        module_filter(bootstrap)["filter_config"]["value"]["settings"]["store_mode"] = "nonsense"
        path.write_text(yaml.safe_dump(bootstrap))
        refused_ = validate(
            path, "--config-yaml", flag(args, "--config-yaml") or "", env=module_env()
        )
        assert refused_.returncode != 0


def test_the_mcp_port_reaches_envoy(tmp_path):
    objects = template(tmp_path, merged(SIDECARS, {"sidecars": {"mcpPort": 4321}}))
    args = containers(pod(objects))["toolgate-envoy"]["args"]
    (cluster,) = yaml.safe_load(flag(args, "--config-yaml") or "")["static_resources"]["clusters"]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 4321}


# --- the policy ---------------------------------------------------------------------------------


def policy_data(objects: list[dict[str, Any]]) -> str:
    template_ = pod(objects)
    (volume,) = [v for v in template_["spec"]["volumes"] if v["name"] == "toolgate-policy"]
    return named(objects, "ConfigMap", volume["configMap"]["name"])["data"]["policy.json"]


def test_the_policy_configmap_is_the_given_policy(tmp_path, renderings):
    # By default, examples/policy.json (the kit's), byte for byte.
    assert policy_data(renderings["allInOne"]) == (ROOT / "examples" / "policy.json").read_text()
    assert policy_data(renderings["sidecars"]) == (EXAMPLE / "policy.json").read_text()
    # JSON text as given (--set-file policy=...), however it is laid out...
    text = '{"version": "1",\n "default": "deny", "tools": {"a<b>&": {}}}  \n\n'
    assert policy_data(template(tmp_path, {"policy": text})) == text
    given = f"policy={EXAMPLE / 'policy.json'}"
    done = helm("template", "toolgate", str(CHART), "--set-file", given)
    assert done.returncode == 0, done.stderr
    objects = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert policy_data(objects) == (EXAMPLE / "policy.json").read_text()
    # ...or a YAML mapping, as JSON.
    mapping = {"version": "1", "default": "deny", "tools": {"echo": {}}}
    assert json.loads(policy_data(template(tmp_path, {"policy": mapping}))) == mapping


def test_an_existing_policy_configmap_is_mounted_and_none_made(renderings):
    objects = renderings["allInOne-existing-policy"]
    template_ = pod(objects)
    (volume,) = [v for v in template_["spec"]["volumes"] if v["name"] == "toolgate-policy"]
    assert volume["configMap"] == {"name": "my-policy"}
    assert not [o for o in objects if o["metadata"]["name"].endswith("-policy")]


# --- monitoring ---------------------------------------------------------------------------------


@pytest.mark.parametrize("config", ["allInOne-everything", "sidecars-everything"])
def test_the_alert_rules_are_alerts_yaml(renderings, config):
    rule = named(renderings[config], "PrometheusRule")
    alerts = yaml.safe_load((KUBE / "monitoring" / "alerts.yaml").read_text())
    assert rule["spec"] == alerts
    # The kit's PrometheusRule holds the same groups.
    kit = yaml.safe_load((KUBE / "monitoring" / "prometheusrule.yaml").read_text())
    assert rule["spec"] == kit["spec"]


@pytest.mark.parametrize("config", ["allInOne-everything", "sidecars-everything"])
def test_the_dashboard_is_dashboard_json(renderings, config):
    dashboard = named(renderings[config], "ConfigMap", "toolgate-dashboard")
    assert dashboard["data"] == {
        "dashboard.json": (KUBE / "monitoring" / "dashboard.json").read_text()
    }
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"


@pytest.mark.parametrize("config", ["allInOne-everything", "sidecars-everything"])
def test_the_servicemonitor_scrapes_toolgates_metrics_as_the_alerts_job(renderings, config):
    objects = renderings[config]
    monitor = named(objects, "ServiceMonitor")
    service = named(objects, "Service", "toolgate-metrics")
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = monitor["spec"]["endpoints"]
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    assert endpoint["path"] == "/metrics"
    # The job is the one the alerts read, whatever the release is called.
    job = labels[monitor["spec"]["jobLabel"]]
    alerts = yaml.safe_load((KUBE / "monitoring" / "alerts.yaml").read_text())
    assert f'up{{job="{job}"}}' in alerts["groups"][0]["rules"][0]["expr"]
    # The Service selects the pod, on a port serving toolgate's /metrics.
    template_ = pod(objects)
    assert service["spec"]["selector"].items() <= template_["metadata"]["labels"].items()
    served = {
        p["name"]: (c["name"], p["containerPort"])
        for c in template_["spec"]["containers"]
        for p in c.get("ports", [])
    }
    if config.startswith("sidecars"):
        # Envoy's probes listener, which routes /metrics to toolgate (files/envoy-sidecars.yaml).
        assert served[port["targetPort"]] == ("toolgate-envoy", 9902)
    else:
        toolgate = containers(template_)["toolgate"]
        assert served[port["targetPort"]] == ("toolgate", 9464)
        assert flag(toolgate["args"], "--metrics-listen") == "0.0.0.0:9464"


# --- the counter store --------------------------------------------------------------------------


def test_redis_of_the_charts_is_every_replicas_store(renderings):
    objects = renderings["allInOne-everything"]
    deployment = named(objects, "Deployment", "toolgate")
    args = containers(deployment["spec"]["template"])["toolgate"]["args"]
    assert flag(args, "--store") == "redis://toolgate-redis:6379/0"
    assert flag(args, "--store-unavailable") == "deny"
    # The budget is toolgate's own default unless set (one owner of that figure).
    assert "--store-timeout-ms" not in args
    assert deployment["spec"]["replicas"] == 3
    service = named(objects, "Service", "toolgate-redis")
    redis = named(objects, "Deployment", "toolgate-redis")
    redis_labels = redis["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= redis_labels.items()
    # The toolgate pods' selector does not take the Redis pod in, nor the reverse.
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert not selector.items() <= redis_labels.items()
    # The Redis is the kit's redis component's.
    kit = yaml.safe_load_all((KUBE / "redis" / "redis.yaml").read_text())
    (kit,) = [d for d in kit if d and d["kind"] == "Deployment"]
    assert redis["spec"]["template"]["spec"] == kit["spec"]["template"]["spec"]


def test_a_redis_of_yours_by_url_or_secret(renderings):
    args = containers(pod(renderings["allInOne-store-url"]))["toolgate"]["args"]
    assert flag(args, "--store") == "redis://redis.example:6379/0"
    assert flag(args, "--store-timeout-ms") == "50"
    toolgate = containers(pod(renderings["allInOne-store-secret"]))["toolgate"]
    # The URL (with its password) stays in the Secret: the kubelet expands $(TOOLGATE_STORE).
    assert flag(toolgate["args"], "--store") == "$(TOOLGATE_STORE)"
    (env,) = toolgate["env"]
    assert env == {
        "name": "TOOLGATE_STORE",
        "valueFrom": {"secretKeyRef": {"name": "toolgate-store", "key": "url"}},
    }
    for config in ("allInOne-store-url", "allInOne-store-secret"):
        assert named(renderings[config], "Deployment")["spec"]["replicas"] == 3
    assert "--store" not in containers(pod(renderings["allInOne"]))["toolgate"]["args"]


def test_images_and_resources_are_values(tmp_path):
    values = {
        "images": {
            "toolgate": {"repository": "registry.example.com/toolgate", "tag": "9.9.9"},
            "envoy": {"tag": "distroless-v1.40.0@sha256:" + "0" * 64},
        },
        "toolgate": {"resources": {"limits": {"cpu": "4", "memory": "1Gi"}}},
        "envoy": {"concurrency": 4},
    }
    spec = containers(pod(template(tmp_path, values)))
    assert spec["toolgate"]["image"] == "registry.example.com/toolgate:9.9.9"
    assert spec["envoy"]["image"] == "envoyproxy/envoy:distroless-v1.40.0@sha256:" + "0" * 64
    assert spec["toolgate"]["resources"]["limits"] == {"cpu": "4", "memory": "1Gi"}
    assert flag(spec["envoy"]["args"], "--concurrency") == "4"


# --- played by podman ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built_images(tmp_path_factory) -> dict[str, str]:
    """The images tests/test_kube_play.py plays the kit with (tests/built.py), by values key."""
    from built import envoy_image, node_image, toolgate_image

    work = tmp_path_factory.mktemp("images")
    return {
        "toolgate": toolgate_image(),
        "envoy": envoy_image(work),
        "mcpServer": node_image(work),
    }


@pytest.mark.packaging
def test_the_all_in_one_rendering_plays(built_images, tmp_path):
    """``podman kube play`` of ``helm template``'s allInOne pod, as tests/test_kube_play.py
    plays the kit's base (its helpers and images; skipped, except in CI, where they are
    missing)."""
    from kube_play import PlayedPod
    from sidecar import wait_for
    from test_kube_play import call, configmap

    release = f"t{uuid.uuid4().hex[:6]}-toolgate"

    def values(policy: str | None = None) -> dict[str, Any]:
        images = {
            key: {"repository": tag.rpartition(":")[0], "tag": tag.rpartition(":")[2]}
            for key, tag in built_images.items()
        }
        return {"images": images} if policy is None else {"images": images, "policy": policy}

    played = PlayedPod(template(tmp_path, values(), release=release), tmp_path)
    url = "http://127.0.0.1:10000/mcp"
    with played:
        wait_for(played.probes_pass, timeout=120, interval=1)
        denied = call(played, url, "run_command", {"command": "rm -rf /"})
        assert denied.startswith("1: DENIED CONDITION_FAILED:"), denied
        # An allowed call on first install: the placeholder server's echo runs.
        assert call(played, url, "echo", {"message": "hi"}) == "1: ok: Echo: hi"
        # `helm upgrade` with another policy: the ConfigMap's new content reaches toolgate.
        changed = json.dumps({"version": "1", "default": "deny"})
        new = template(tmp_path, values(changed), release=release)
        name = f"{release}-policy"
        played.update_configmap(name, configmap(new, name))
        wait_for(
            lambda: call(played, url, "echo", {"message": "hi"}).startswith("1: DENIED DEFAULT"),
            timeout=30,
        )
        assert played.probes_pass()
