"""The Kubernetes manifests as a pod on this machine, with no cluster and no image registry:
``podman kube play`` of what ``kubectl kustomize`` renders, with the images built here
(scripts/images.py: toolgate's from the Dockerfile, stand-ins for Envoy's and Node's).

    bash scripts/kube-play up [--base DIR]          # build the images, render, play, wait
    bash scripts/kube-play call TOOL [ARGUMENTS]    # examples/mcp_call.py through the pod's Envoy
    bash scripts/kube-play down                     # remove the pod and its volumes

The pod runs with no network (``--network none``): nothing of it is reachable from the host.
``call`` runs the MCP client in the pod's network namespace (``nsenter``), on its loopback,
where Envoy listens on 127.0.0.1:10000. podman plays the Deployment and its ConfigMaps; the
containerPorts and probes are left out (podman would publish the ports on the host, and turns
probes into healthchecks that need systemd): ``up`` runs the probes itself, as the kubelet
would, until they pass. A play that fails is taken down again, volumes and all. Needs root
(podman as scripts/containers-setup sets it up, nsenter) and the project's .venv.

tests/test_kube_play.py plays the base and the sidecars example with this module.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from images import ROOT, Unavailable, envoy_image, node_image, podman, toolgate_image

BASE = ROOT / "deploy" / "kubernetes"
MCP_CALL = ROOT / "examples" / "mcp_call.py"
PLAYED = {"Deployment", "ConfigMap"}
#: Where ``up`` keeps what ``down`` needs.
STATE = ROOT / "target" / "kube-play"
#: Put before every name of the pod's objects, so that plays of several checkouts on one
#: machine do not meet (the tests set it).
PREFIX_VARIABLE = "TOOLGATE_KUBE_PLAY_PREFIX"
#: How long the pod may take to start on a busy machine before ``up`` gives up.
PATIENCE = 300.0


def built_images(work: Path) -> dict[str, str]:
    """The images the manifests name, built here: name in the manifests -> local tag."""
    return {
        "toolgate": toolgate_image(),
        "envoyproxy/envoy": envoy_image(work),
        "node": node_image(work),
    }


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize`` renders (kubectl's own kustomize; no cluster)."""
    kubectl, standalone = shutil.which("kubectl"), shutil.which("kustomize")
    if kubectl is None and standalone is None:
        raise Unavailable("neither kubectl nor kustomize")
    command = [kubectl, "kustomize"] if kubectl else [standalone, "build"]
    done = subprocess.run([*command, str(directory)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"kustomize {directory}: {done.stderr}")
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def overlay(
    directory: Path,
    of: Path,
    images: dict[str, str],
    prefix: str,
    policy: str | None = None,
    components: tuple[Path, ...] = (),
) -> Path:
    """An overlay of ``of`` with this machine's images, a name prefix (so the pod and its
    volumes are this play's), optionally another policy.json, and Kustomize components."""
    directory.mkdir(parents=True, exist_ok=True)
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(of, directory)],
        "images": [
            {"name": name, "newName": tag.rpartition(":")[0], "newTag": tag.rpartition(":")[2]}
            for name, tag in images.items()
        ],
    }
    if components:
        kustomization["components"] = [os.path.relpath(c, directory) for c in components]
    if prefix:
        kustomization["namePrefix"] = prefix
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


def playable(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` as podman plays it: without containerPorts, which podman would publish on the
    host (in a pod they publish nothing), and without probes, which podman turns into
    healthchecks that need systemd; the probes are run from the rendered objects instead.
    Init containers run at each start of the pod (podman's ``always``), as the kubelet runs
    them: podman's default, ``once``, removes one after it ran, and podman 4.3 tries that
    while it still runs, failing the play."""
    if obj["kind"] != "Deployment":
        return obj
    obj = json.loads(json.dumps(obj))
    if obj["spec"]["template"]["spec"].get("initContainers"):
        # podman reads it from the Deployment's own annotations.
        annotations = obj["metadata"].setdefault("annotations", {})
        annotations["io.podman.annotations.init.container.type"] = "always"
    for c in obj["spec"]["template"]["spec"]["containers"]:
        for key in ("ports", "readinessProbe", "livenessProbe", "startupProbe"):
            c.pop(key, None)
    return obj


class PlayedPod:
    """``podman kube play`` of rendered objects, in a network namespace of its own."""

    def __init__(self, objects: list[dict[str, Any]], workdir: Path) -> None:
        self.objects = [o for o in objects if o["kind"] in PLAYED]
        (self.deployment,) = [o for o in self.objects if o["kind"] == "Deployment"]
        self.file = workdir / "play.yaml"
        self.file.write_text(yaml.safe_dump_all([playable(o) for o in self.objects]))
        (workdir / "rendered.json").write_text(json.dumps(self.objects))
        self.pod = f"{self.deployment['metadata']['name']}-pod-0"
        self.spec = self.deployment["spec"]["template"]["spec"]

    @classmethod
    def played_before(cls, workdir: Path) -> PlayedPod:
        """The pod ``up`` played from ``workdir``."""
        return cls(json.loads((workdir / "rendered.json").read_text()), workdir)

    def play(self) -> None:
        """Play it; if that fails, take down whatever was made."""
        try:
            podman("kube", "play", "--network", "none", str(self.file), timeout=PATIENCE)
        except BaseException:
            self.down()
            raise

    def __enter__(self) -> PlayedPod:
        self.play()
        return self

    def __exit__(self, *exc: object) -> None:
        logs = {c["name"]: self.logs(c["name"]) for c in self.spec["containers"]}
        self.down()
        if exc[0] is not None:
            for name, text in logs.items():
                print(f"--- {name}\n{text[-3000:]}")

    def down(self) -> None:
        """Remove the pod and every volume it made (ConfigMaps and emptyDirs)."""
        volumes = [v["name"] for v in self.spec.get("volumes", [])]
        volumes += [
            v["configMap"]["name"] for v in self.spec.get("volumes", []) if "configMap" in v
        ]
        podman("kube", "down", str(self.file), check=False, timeout=PATIENCE)
        podman("volume", "rm", "-f", *volumes, check=False)

    @property
    def netns(self) -> str:
        infra = podman("pod", "inspect", "--format", "{{.InfraContainerID}}", self.pod)
        pid = podman("inspect", "--format", "{{.State.Pid}}", infra.stdout.strip())
        return f"/proc/{pid.stdout.strip()}/ns/net"

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

    def wait_until_ready(self, timeout: float = PATIENCE) -> None:
        """Until every probe passes (each container running as rendered)."""
        deadline = time.monotonic() + timeout
        while not self.probes_pass():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the pod's probes did not pass within {timeout:.0f}s")
            time.sleep(1)

    def mcp_port(self) -> int:
        """Envoy's MCP port: the container port named for it in the manifests."""
        for c in self.spec["containers"]:
            for p in c.get("ports", []):
                if p.get("name") in ("http-mcp", "toolgate-mcp"):
                    return int(p["containerPort"])
        raise RuntimeError("no container port http-mcp or toolgate-mcp")

    def mcp_call(
        self, url: str, tool: str, arguments: dict[str, Any], *extra: str
    ) -> subprocess.CompletedProcess[str]:
        """examples/mcp_call.py through the pod's Envoy: a session, then the call."""
        return self.in_pod(sys.executable, str(MCP_CALL), url, tool, json.dumps(arguments), *extra)

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


# --- the command ------------------------------------------------------------------------------


def _state() -> Path:
    prefix = os.environ.get(PREFIX_VARIABLE, "")
    return STATE / (prefix.rstrip("-") or "default")


def up(base: Path) -> None:
    state = _state()
    if (state / "rendered.json").exists():
        PlayedPod.played_before(state).down()
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    print("building the images (once per change of their inputs)...", flush=True)
    with tempfile.TemporaryDirectory(prefix="toolgate-images-") as work:
        images = built_images(Path(work))
    prefix = os.environ.get(PREFIX_VARIABLE, "")
    objects = kustomize(overlay(state / "overlay", base, images, prefix))
    pod = PlayedPod(objects, state)
    print(f"playing {pod.pod} ({', '.join(c['name'] for c in pod.spec['containers'])})...")
    pod.play()
    try:
        pod.wait_until_ready()
    except BaseException:
        for c in pod.spec["containers"]:
            print(f"--- {c['name']}\n{pod.logs(c['name'])[-2000:]}", file=sys.stderr)
        pod.down()
        shutil.rmtree(state, ignore_errors=True)
        raise
    print(
        f"{pod.pod} is up, every probe passing; Envoy listens on 127.0.0.1:{pod.mcp_port()} "
        "in its network namespace: bash scripts/kube-play call TOOL [ARGUMENTS]"
    )


def played() -> PlayedPod:
    state = _state()
    if not (state / "rendered.json").exists():
        raise Unavailable("no pod played: bash scripts/kube-play up")
    return PlayedPod.played_before(state)


def call(tool: str, arguments: str, extra: list[str]) -> int:
    pod = played()
    url = f"http://127.0.0.1:{pod.mcp_port()}/mcp"
    done = pod.mcp_call(url, tool, json.loads(arguments), *extra)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.returncode


def down() -> None:
    state = _state()
    if (state / "rendered.json").exists():
        pod = PlayedPod.played_before(state)
        pod.down()
        print(f"{pod.pod} and its volumes removed")
    shutil.rmtree(state, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/kube-play", description=__doc__.split("\n\n")[0])
    actions = parser.add_subparsers(dest="action", required=True)
    p_up = actions.add_parser("up", help="build the images, render the manifests, play the pod")
    p_up.add_argument("--base", type=Path, default=BASE, help="a kustomization to play")
    p_call = actions.add_parser("call", help="call a tool through the pod's Envoy")
    p_call.add_argument("tool")
    p_call.add_argument("arguments", nargs="?", default="{}", help="a JSON object")
    p_call.add_argument("--token", default="alice", help="sent as Authorization: Bearer TOKEN")
    actions.add_parser("down", help="remove the pod and its volumes")
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            up(args.base.resolve())
        elif args.action == "call":
            return call(args.tool, args.arguments, ["--token", args.token])
        else:
            down()
    except Unavailable as err:
        print(f"kube-play: {err}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
        print(f"kube-play {args.action}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"kube-play {args.action}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
