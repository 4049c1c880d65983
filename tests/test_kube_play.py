"""The Kubernetes manifests run for real: ``podman kube play`` of what kustomize renders, with
the images built here (toolgate's from the Dockerfile; Envoy and Node stand-ins from
tests/images/, since no registry is reachable).

For the base (deploy/kubernetes) and for the example of the sidecars component added to an
existing Deployment (deploy/kubernetes/example):

- the pod starts with every container as rendered (securityContext, read-only root, volumes,
  ConfigMaps) and each container's readiness and liveness probe passes, run as the kubelet
  would (exec probes inside the container, httpGet and tcpSocket on the pod's network);
- an MCP client (examples/mcp_call.py, the official SDK) calls through the pod's Envoy: a call
  the policy allows reaches the MCP server and gets its answer, a denied one gets toolgate's
  denial (an ``isError`` result with the decision's code);
- the policy ConfigMap is changed (re-rendered with another policy.json) and its new content
  written into the pod's ConfigMap volume as the kubelet would: toolgate picks it up, and the
  call that was denied is allowed (or the reverse);
- with the component, Prometheus' scrape path works: Envoy's probes port serves toolgate's
  /metrics, counting those decisions.

The pod runs in its own network namespace (``--network none``: nothing of it is reachable from
the host); the client and the network probes run in that namespace (``nsenter``), on its
loopback. podman plays Deployments and ConfigMaps (without containerPorts and probes, see
``_playable``); the other objects (Services,
NetworkPolicy, ServiceMonitor, PrometheusRule) are validated by tests/test_kubernetes*.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from built import (
    ENVOY_IMAGE,
    NODE_IMAGE,
    ROOT,
    TOOLGATE_IMAGE,
    envoy_image,
    node_image,
    podman,
    toolgate_image,
    unavailable,
)
from sidecar import wait_for

pytestmark = pytest.mark.packaging

BASE = ROOT / "deploy" / "kubernetes"
EXAMPLE = BASE / "example"
MCP_CALL = ROOT / "examples" / "mcp_call.py"
PLAYED = {"Deployment", "ConfigMap"}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, str]:
    work = tmp_path_factory.mktemp("images")
    return {
        "toolgate": toolgate_image(),
        "envoyproxy/envoy": envoy_image(work),
        "node": node_image(work),
    }


def kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl, standalone = shutil.which("kubectl"), shutil.which("kustomize")
    if kubectl is None and standalone is None:
        unavailable("neither kubectl nor kustomize")
    command = [kubectl, "kustomize"] if kubectl else [standalone, "build"]
    done = subprocess.run([*command, str(directory)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def overlay(
    directory: Path, of: Path, images: dict[str, str], prefix: str, policy: str | None = None
) -> Path:
    """An overlay of ``of`` with this machine's images, a name prefix (so the pod and its
    volumes are this test's), and optionally another policy.json."""
    directory.mkdir(parents=True, exist_ok=True)
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(of, directory)],
        "namePrefix": prefix,
        "images": [
            {"name": name, "newName": tag.rpartition(":")[0], "newTag": tag.rpartition(":")[2]}
            for name, tag in images.items()
        ],
    }
    if policy is not None:
        (directory / "policy.json").write_text(policy)
        kustomization["configMapGenerator"] = [
            {
                "name": "toolgate-policy",
                "behavior": "replace",
                "files": ["policy.json"],
                "options": {"disableNameSuffixHash": True},
            }
        ]
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return directory


class PlayedPod:
    """``podman kube play`` of rendered objects, in a network namespace of its own."""

    def __init__(self, objects: list[dict[str, Any]], workdir: Path) -> None:
        self.objects = [o for o in objects if o["kind"] in PLAYED]
        (self.deployment,) = [o for o in self.objects if o["kind"] == "Deployment"]
        self.file = workdir / "play.yaml"
        self.file.write_text(yaml.safe_dump_all([_playable(o) for o in self.objects]))
        self.pod = f"{self.deployment['metadata']['name']}-pod-0"
        self.spec = self.deployment["spec"]["template"]["spec"]

    def __enter__(self) -> PlayedPod:
        try:
            podman("kube", "play", "--network", "none", str(self.file), timeout=300)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        infra = podman("pod", "inspect", "--format", "{{.InfraContainerID}}", self.pod)
        pid = podman("inspect", "--format", "{{.State.Pid}}", infra.stdout.strip())
        self.netns = f"/proc/{pid.stdout.strip()}/ns/net"
        return self

    def __exit__(self, *exc: object) -> None:
        volumes = [v["name"] for v in self.spec.get("volumes", [])]
        volumes += [
            v["configMap"]["name"] for v in self.spec.get("volumes", []) if "configMap" in v
        ]
        logs = {c["name"]: self.logs(c["name"]) for c in self.spec["containers"]}
        podman("kube", "down", str(self.file), check=False, timeout=300)
        podman("volume", "rm", "-f", *volumes, check=False)
        if exc[0] is not None:
            for name, text in logs.items():
                print(f"--- {name}\n{text[-3000:]}")

    def container(self, name: str) -> dict[str, Any]:
        (found,) = [c for c in self.spec["containers"] if c["name"] == name]
        return found

    def logs(self, name: str) -> str:
        done = podman("logs", f"{self.pod}-{name}", check=False)
        return done.stdout + done.stderr

    def in_pod(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``command`` run on the host in the pod's network namespace (its loopback)."""
        return subprocess.run(
            ["nsenter", f"--net={self.netns}", *command],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def port(self, container: dict[str, Any], port: int | str) -> int:
        if isinstance(port, int):
            return port
        (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
        return number

    def probe(self, name: str, kind: str) -> bool:
        """Run container ``name``'s ``kind`` probe as the kubelet would."""
        c = self.container(name)
        probe = c[kind]
        if "exec" in probe:
            done = podman("exec", f"{self.pod}-{name}", *probe["exec"]["command"], check=False)
            return done.returncode == 0
        if "httpGet" in probe:
            get = probe["httpGet"]
            url = f"http://127.0.0.1:{self.port(c, get['port'])}{get['path']}"
            return self.http_get(url)[0] == 200
        port = self.port(c, probe["tcpSocket"]["port"])
        code = f"import socket; socket.create_connection(('127.0.0.1', {port}), 5)"
        return self.in_pod(sys.executable, "-c", code).returncode == 0

    def http_get(self, url: str) -> tuple[int, str]:
        code = (
            "import sys, urllib.request, urllib.error\n"
            "try:\n"
            "    r = urllib.request.urlopen(sys.argv[1], timeout=5)\n"
            "    print(r.status); print(r.read().decode())\n"
            "except urllib.error.HTTPError as e:\n"
            "    print(e.code)\n"
            "except OSError:\n"
            "    print(0)\n"
        )
        done = self.in_pod(sys.executable, "-c", code, url)
        status, _, body = done.stdout.partition("\n")
        return int(status or 0), body

    def probes_pass(self) -> bool:
        return all(
            self.probe(c["name"], kind)
            for c in self.spec["containers"]
            for kind in ("readinessProbe", "livenessProbe")
            if kind in c
        )

    def mcp_call(self, url: str, tool: str, arguments: dict[str, Any]) -> str:
        """One call with examples/mcp_call.py (a session, then the call): its output line."""
        done = self.in_pod(sys.executable, str(MCP_CALL), url, tool, json.dumps(arguments))
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout.strip()

    def update_configmap(self, name: str, data: dict[str, str]) -> None:
        """Write a ConfigMap's new data into the pod's volume of it, as the kubelet updates a
        mounted ConfigMap: each file replaced whole, in one rename."""
        where = Path(
            podman("volume", "inspect", "--format", "{{.Mountpoint}}", name).stdout.strip()
        )
        for key, text in data.items():
            tmp = where / f".{key}.{uuid.uuid4().hex}"
            tmp.write_text(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, where / key)


def _playable(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` as podman plays it: without containerPorts, which podman would publish on the
    host (in a pod they publish nothing), and without probes, which podman turns into
    healthchecks that need systemd; the test runs the probes itself, from the rendered objects."""
    if obj["kind"] != "Deployment":
        return obj
    obj = json.loads(json.dumps(obj))
    for c in obj["spec"]["template"]["spec"]["containers"]:
        for key in ("ports", "readinessProbe", "livenessProbe", "startupProbe"):
            c.pop(key, None)
    return obj


def configmap(objects: list[dict[str, Any]], name: str) -> dict[str, str]:
    (found,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name]
    return found["data"]


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:6]}-"


def played(of: Path, images: dict[str, str], prefix: str, tmp_path: Path) -> PlayedPod:
    return PlayedPod(kustomize(overlay(tmp_path / "overlay", of, images, prefix)), tmp_path)


def test_the_base_plays(images, prefix, tmp_path):
    pod = played(BASE, images, prefix, tmp_path)
    names = {c["name"]: c["image"] for c in pod.spec["containers"]}
    assert names == {"mcp-server": NODE_IMAGE, "envoy": ENVOY_IMAGE, "toolgate": TOOLGATE_IMAGE}
    url = "http://127.0.0.1:10000/mcp"
    with pod:
        wait_for(pod.probes_pass, timeout=120, interval=1)
        # The policy (examples/policy.json) denies this one in toolgate...
        denied = pod.mcp_call(url, "run_command", {"command": "rm -rf /"})
        assert denied.startswith("1: DENIED CONDITION_FAILED:"), denied
        # ...allows create-ami, which reaches the MCP server (server-everything has no such
        # tool: the answer is its own), and knows nothing of echo.
        # (mcp_call.py prints an error result without toolgate's decision as "DENIED None").
        allowed = pod.mcp_call(url, "create-ami", {"name": "web"})
        assert allowed == "1: DENIED None: MCP error -32602: Tool create-ami not found", allowed
        assert pod.mcp_call(url, "echo", {"message": "hi"}).startswith("1: DENIED DEFAULT_DENY")

        # The ConfigMap changes to a policy that allows echo: the new decision reaches Envoy.
        changed = json.dumps({"version": "1", "default": "deny", "tools": {"echo": {}}})
        new = kustomize(overlay(tmp_path / "changed", BASE, images, prefix, policy=changed))
        pod.update_configmap(f"{prefix}toolgate-policy", configmap(new, f"{prefix}toolgate-policy"))
        wait_for(
            lambda: pod.mcp_call(url, "echo", {"message": "hi"}) == "1: ok: Echo: hi", timeout=30
        )
        assert pod.probes_pass()


def test_the_sidecars_component_plays_beside_an_existing_server(images, prefix, tmp_path):
    pod = played(EXAMPLE, images, prefix, tmp_path)
    assert [c["name"] for c in pod.spec["containers"]] == ["toolgate-envoy", "toolgate", "server"]
    # The MCP server's own Service now targets Envoy; the pod is reached on Envoy's port.
    envoy = pod.container("toolgate-envoy")
    url = f"http://127.0.0.1:{pod.port(envoy, 'toolgate-mcp')}/mcp"
    with pod:
        wait_for(pod.probes_pass, timeout=120, interval=1)
        assert pod.mcp_call(url, "echo", {"message": "hi"}) == "1: ok: Echo: hi"
        denied = pod.mcp_call(url, "get-env", {})
        assert denied.startswith("1: DENIED DEFAULT_DENY:"), denied

        # Prometheus' scrape: toolgate's /metrics through Envoy's probes port.
        status, metrics = pod.http_get(
            f"http://127.0.0.1:{pod.port(envoy, 'toolgate-probes')}/metrics"
        )
        assert status == 200
        assert 'toolgate_decisions_total{code="ALLOWED",verdict="ALLOW"} 1.0' in metrics
        assert 'toolgate_decisions_total{code="DEFAULT_DENY",verdict="DENY"} 1.0' in metrics

        # The policy ConfigMap changes to deny echo too.
        changed = json.dumps({"version": "1", "default": "deny", "tools": {"get-sum": {}}})
        new = kustomize(overlay(tmp_path / "changed", EXAMPLE, images, prefix, policy=changed))
        pod.update_configmap(f"{prefix}toolgate-policy", configmap(new, f"{prefix}toolgate-policy"))
        wait_for(
            lambda: pod.mcp_call(url, "echo", {"message": "hi"}).startswith(
                "1: DENIED DEFAULT_DENY"
            ),
            timeout=30,
        )
        assert pod.probes_pass()
