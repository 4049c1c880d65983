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

The manifests do not depend on the node's architecture: the arm64 image's serving decisions
under qemu-user-static is tests/test_image.py's (a pod of it here took up to three minutes of
CI and checked nothing more).

The pod runs in its own network namespace (``--network none``: nothing of it is reachable from
the host); the client and the network probes run in that namespace (``nsenter``), on its
loopback. podman plays Deployments and ConfigMaps (without containerPorts and probes, see
``playable`` in scripts/kube_play.py, which ``scripts/kube-play`` runs too); the other objects
(Services, NetworkPolicy, ServiceMonitor, PrometheusRule) are validated by
tests/test_kubernetes*.py.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from built import (
    ENVOY_IMAGE,
    NODE_IMAGE,
    ROOT,
    TOOLGATE_IMAGE,
    envoy_image,
    node_image,
    toolgate_image,
    unavailable,
)
from prometheus_client.parser import text_string_to_metric_families
from sidecar import wait_for

sys.path.insert(0, str(ROOT / "scripts"))
import kube_play
from images import Unavailable
from kube_play import BASE, PlayedPod, overlay

pytestmark = pytest.mark.packaging

EXAMPLE = BASE / "example"
MODULE = BASE / "module"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, str]:
    work = tmp_path_factory.mktemp("images")
    return {
        "toolgate": toolgate_image(),
        "envoyproxy/envoy": envoy_image(work),
        "node": node_image(work),
    }


def kustomize(directory: Path) -> list[dict[str, Any]]:
    try:
        return kube_play.kustomize(directory)
    except Unavailable as err:
        unavailable(str(err))
        raise


def configmap(objects: list[dict[str, Any]], name: str) -> dict[str, str]:
    (found,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name]
    return found["data"]


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:6]}-"


def played(
    of: Path, images: dict[str, str], prefix: str, tmp_path: Path, *components: Path
) -> PlayedPod:
    made = overlay(tmp_path / "overlay", of, images, prefix, components=components)
    return PlayedPod(kustomize(made), tmp_path)


def call(pod: PlayedPod, url: str, tool: str, arguments: dict[str, Any]) -> str:
    """One call with examples/mcp_call.py (a session, then the call): its output line. It
    exits 0 when the call ran, 1 when it was denied or failed."""
    done = pod.mcp_call(url, tool, arguments)
    said = done.stdout.strip()
    assert done.returncode == (0 if ": ok: " in said else 1), done.stderr[-3000:]
    return said


def test_the_base_plays(images, prefix, tmp_path):
    pod = played(BASE, images, prefix, tmp_path)
    names = {c["name"]: c["image"] for c in pod.spec["containers"]}
    assert names == {"mcp-server": NODE_IMAGE, "envoy": ENVOY_IMAGE, "toolgate": TOOLGATE_IMAGE}
    url = "http://127.0.0.1:10000/mcp"
    with pod:
        wait_for(pod.probes_pass, timeout=120, interval=1)
        # The policy (examples/policy.json) denies this one in toolgate...
        denied = call(pod, url, "run_command", {"command": "rm -rf /"})
        assert denied.startswith("1: DENIED CONDITION_FAILED:"), denied
        # ...allows the placeholder server's echo, which runs: an allowed call on first deploy.
        assert call(pod, url, "echo", {"message": "hi"}) == "1: ok: Echo: hi"

        # The ConfigMap changes to a policy that allows nothing: the new decision reaches Envoy.
        changed = json.dumps({"version": "1", "default": "deny"})
        new = kustomize(overlay(tmp_path / "changed", BASE, images, prefix, policy=changed))
        pod.update_configmap(f"{prefix}toolgate-policy", configmap(new, f"{prefix}toolgate-policy"))
        wait_for(
            lambda: call(pod, url, "echo", {"message": "hi"}).startswith("1: DENIED DEFAULT_DENY"),
            timeout=30,
        )
        assert pod.probes_pass()


def the_example_decides(pod: PlayedPod, patience: float) -> str:
    """Once the example's pod is ready, echo is allowed through its Envoy and get-env denied by
    the example policy; returns the MCP URL (the MCP server's own Service now targets Envoy:
    the pod is reached on Envoy's port)."""
    url = f"http://127.0.0.1:{pod.port(pod.container('toolgate-envoy'), 'toolgate-mcp')}/mcp"
    wait_for(pod.probes_pass, timeout=patience, interval=1)
    assert call(pod, url, "echo", {"message": "hi"}) == "1: ok: Echo: hi"
    denied = call(pod, url, "get-env", {})
    assert denied.startswith("1: DENIED DEFAULT_DENY:"), denied
    return url


def test_the_sidecars_component_plays_beside_an_existing_server(images, prefix, tmp_path):
    pod = played(EXAMPLE, images, prefix, tmp_path)
    assert [c["name"] for c in pod.spec["containers"]] == ["toolgate-envoy", "toolgate", "server"]
    envoy = pod.container("toolgate-envoy")
    with pod:
        url = the_example_decides(pod, patience=120)

        # Prometheus' scrape: toolgate's /metrics through Envoy's probes port.
        status, metrics = pod.http_get(
            f"http://127.0.0.1:{pod.port(envoy, 'toolgate-probes')}/metrics"
        )
        assert status == 200
        decided = 'toolgate_decisions_total{api="ext_authz",code="%s",verdict="%s"} 1.0'
        assert decided % ("ALLOWED", "ALLOW") in metrics
        assert decided % ("DEFAULT_DENY", "DENY") in metrics

        # The policy ConfigMap changes to deny echo too.
        changed = json.dumps({"version": "1", "default": "deny", "tools": {"get-sum": {}}})
        new = kustomize(overlay(tmp_path / "changed", EXAMPLE, images, prefix, policy=changed))
        pod.update_configmap(f"{prefix}toolgate-policy", configmap(new, f"{prefix}toolgate-policy"))
        wait_for(
            lambda: call(pod, url, "echo", {"message": "hi"}).startswith("1: DENIED DEFAULT_DENY"),
            timeout=30,
        )
        assert pod.probes_pass()


def test_the_module_component_plays_with_envoy_deciding(images, prefix, tmp_path):
    """Envoy's image holds glibc alone (as the distroless one does): the module loads from the
    volume the init container filled from the toolgate image, and decides there; the toolgate
    sidecar decides nothing."""
    pod = played(EXAMPLE, images, prefix, tmp_path, MODULE)
    assert [c["name"] for c in pod.spec["initContainers"]] == ["toolgate-envoy-module"]
    envoy = pod.container("toolgate-envoy")
    probes = pod.port(envoy, "toolgate-probes")
    with pod:
        url = the_example_decides(pod, patience=120)
        assert "Dynamic module ABI version" in pod.logs("toolgate-envoy")

        # The decisions are Envoy's stats (the module's), pushed as a stream ends (at most once
        # a second: each probe ends one more).
        def counted() -> bool:
            pod.http_get(url.replace("/mcp", "/elsewhere"))
            status, stats = pod.http_get(f"http://127.0.0.1:{probes}/stats/prometheus")
            assert status == 200
            decided = {
                (s.labels["verdict"], s.labels["code"])
                for family in text_string_to_metric_families(stats)
                for s in family.samples
                if s.name == "envoy_toolgate_decisions_total"
                and s.labels.get("api") == "envoy_module"
                and s.value > 0
            }
            return {("ALLOW", "ALLOWED"), ("DENY", "DEFAULT_DENY")} <= decided

        wait_for(counted, timeout=30)
        # ...and none of them is the sidecar's, which is kept for approvals and admin.
        status, metrics = pod.http_get(f"http://127.0.0.1:{probes}/metrics")
        assert status == 200 and "toolgate_build_info" in metrics
        decided_by_sidecar = [
            s
            for family in text_string_to_metric_families(metrics)
            for s in family.samples
            if s.name == "toolgate_decisions_total" and s.value > 0
        ]
        assert decided_by_sidecar == []
        # Nothing else of Envoy's admin is reachable on the pod's IP.
        assert pod.http_get(f"http://127.0.0.1:{probes}/config_dump")[0] == 404

        # The policy ConfigMap changes: the module in Envoy loads it again.
        changed = json.dumps({"version": "1", "default": "deny", "tools": {"get-sum": {}}})
        new = kustomize(
            overlay(tmp_path / "changed", EXAMPLE, images, prefix, changed, components=(MODULE,))
        )
        pod.update_configmap(f"{prefix}toolgate-policy", configmap(new, f"{prefix}toolgate-policy"))
        wait_for(
            lambda: call(pod, url, "echo", {"message": "hi"}).startswith("1: DENIED DEFAULT_DENY"),
            timeout=30,
        )
        assert pod.probes_pass()
