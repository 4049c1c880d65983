"""The Envoy Gateway and Istio manifests (deploy/envoy-gateway/, deploy/istio/, and the
standalone toolgate they share, deploy/kubernetes/standalone/) checked against those projects'
own schemas, as their releases publish them: Envoy Gateway's CRDs and the Gateway API CRDs it
bundles, Istio's CRDs, and Istio's MeshConfig proto, fetched from the Go module proxy (Envoy
Gateway v1.9.1, istio.io/api v1.32.0) into ~/.cache/toolgate/gomod. Kubernetes' own kinds
are checked by kubernetes-validate.

A CRD's schema lets unknown fields through (the API server prunes them, and a misspelt field
would silently do nothing), so every object of these schemas is read as closed here: a field
no schema names is refused. CEL rules (x-kubernetes-validations) are not evaluated."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from test_helm import K8S_VERSION

ROOT = Path(__file__).resolve().parent.parent
ENVOY_GATEWAY = ("github.com/envoyproxy/gateway", "v1.9.1")
ISTIO_API = ("istio.io/api", "v1.32.0")
MANIFESTS = {
    "envoy-gateway": ROOT / "deploy/envoy-gateway/toolgate.yaml",
    "istio": ROOT / "deploy/istio/authorization-policy.yaml",
    "standalone": ROOT / "deploy/kubernetes/standalone/toolgate.yaml",
}
MESH_CONFIG = ROOT / "deploy/istio/mesh-config.yaml"
#: Kubernetes' own API groups, checked by kubernetes-validate.
KUBERNETES_OWN = {"v1", "apps/v1", "networking.k8s.io/v1"}


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def module_dirs() -> dict[str, Path]:
    """Each module's unpacked directory, downloaded once into the kept Go module cache."""
    go = shutil.which("go")
    if go is None:
        if os.environ.get("CI"):
            pytest.fail("no go: the tests build Go programs, and fetch these schemas with it")
        pytest.skip("no go")
    cache = Path.home() / ".cache" / "toolgate" / "gomod"
    env = {**os.environ, "GOMODCACHE": str(cache), "GOFLAGS": "-modcacherw", "GO111MODULE": "on"}
    wanted = [f"{path}@{version}" for path, version in (ENVOY_GATEWAY, ISTIO_API)]
    done = subprocess.run(
        [go, "mod", "download", "-json", *wanted],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=cache.parent if cache.parent.exists() else None,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    decoder, text, out = json.JSONDecoder(), done.stdout.strip(), {}
    while text:
        info, end = decoder.raw_decode(text)
        out[info["Path"]] = Path(info["Dir"])
        text = text[end:].strip()
    return out


@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    return module_dirs()


def closed(schema: Any) -> Any:
    """``schema`` with every object that names its properties refusing any other."""
    if isinstance(schema, dict):
        out = {k: closed(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [closed(v) for v in schema]
    return schema


def crd_schemas(modules: dict[str, Path]) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the CRD's schema of that version, closed."""
    eg = modules[ENVOY_GATEWAY[0]] / "charts/gateway-helm/charts/crds/crds"
    files = [*sorted((eg / "generated").glob("*.yaml")), eg / "gatewayapi-crds.yaml"]
    files.append(modules[ISTIO_API[0]] / "kubernetes/customresourcedefinitions.gen.yaml")
    out = {}
    for file in files:
        # libyaml's loader: the same documents as PyYAML's own, read 9 times faster (5 MB of
        # CRDs took 10 s of a core, 40 s in CI beside the other tests).
        for crd in yaml.load_all(file.read_text(), Loader=yaml.CSafeLoader):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served") and "schema" in version:
                    schema = version["schema"]["openAPIV3Schema"]
                    out[(f"{group}/{version['name']}", kind)] = closed(schema)
    return out


@pytest.fixture(scope="module")
def schemas(modules: dict[str, Path]) -> dict[tuple[str, str], dict[str, Any]]:
    return crd_schemas(modules)


def problems(obj: dict[str, Any], schemas: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """What the object's own schema says is wrong with it (nothing: valid)."""
    key = (obj["apiVersion"], obj["kind"])
    if key not in schemas:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            return [str(err)]
        return []
    # metadata is the API server's (the CRD says only "object"); spec is the CRD's.
    extra = sorted(set(obj) - {"apiVersion", "kind", "metadata", "spec"})
    validator = jsonschema.Draft7Validator(schemas[key]["properties"]["spec"])
    found = [
        f"spec/{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(obj.get("spec"))
    ]
    return [f"unknown top-level fields {extra}"] * bool(extra) + found


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_every_object_is_valid_by_its_projects_schema(name, schemas):
    objects = documents(MANIFESTS[name])
    assert objects
    for obj in objects:
        assert problems(obj, schemas) == [], (obj["kind"], obj["metadata"]["name"])


def test_the_custom_kinds_are_the_ones_the_guide_names(schemas):
    """Each object of the gateways' own kinds has its CRD among those fetched (a kind or
    version they do not serve would otherwise be checked by nothing)."""
    kinds = {
        (o["apiVersion"], o["kind"])
        for path in MANIFESTS.values()
        for o in documents(path)
        if o["apiVersion"] not in KUBERNETES_OWN
    }
    assert kinds <= set(schemas), kinds - set(schemas)
    assert {
        ("gateway.envoyproxy.io/v1alpha1", "SecurityPolicy"),
        ("gateway.envoyproxy.io/v1alpha1", "EnvoyExtensionPolicy"),
        ("security.istio.io/v1", "AuthorizationPolicy"),
    } <= kinds


def _mutations(obj: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every key of an object's spec (to misspell one at a time)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield (*path, key)
            yield from _mutations(value, (*path, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _mutations(value, (*path, i))


@pytest.mark.parametrize("name", ["envoy-gateway", "istio"])
def test_any_misspelt_field_of_a_gateway_object_is_refused(name, schemas):
    """Every key of every custom object's spec, misspelt in turn, makes the object invalid:
    the check cannot pass a manifest whose field would be pruned and do nothing."""
    custom = [o for o in documents(MANIFESTS[name]) if (o["apiVersion"], o["kind"]) in schemas]
    tried = 0
    for obj in custom:
        for path in _mutations(obj["spec"]):
            # A list's index, or a key of a map whose keys are the user's (labels).
            if isinstance(path[-1], int) or "matchLabels" in path[:-1]:
                continue
            broken = copy.deepcopy(obj)
            node = broken["spec"]
            for step in path[:-1]:
                node = node[step]
            node[path[-1] + "x"] = node.pop(path[-1])
            assert problems(broken, schemas), (obj["kind"], path)
            tried += 1
    assert tried >= 5


def mesh_config_type(modules: dict[str, Path], out: Path) -> Any:
    """Istio's MeshConfig message, compiled from its proto with its own vendored imports."""
    from grpc_tools import protoc

    api = modules[ISTIO_API[0]]
    include = Path(protoc.__file__).parent / "_proto"
    sources = [
        "mesh/v1alpha1/config.proto",
        "mesh/v1alpha1/proxy.proto",
        "networking/v1alpha3/destination_rule.proto",
        "networking/v1alpha3/virtual_service.proto",
        "networking/v1alpha3/workload_group.proto",
        "networking/v1alpha3/workload_entry.proto",
        "networking/v1beta1/proxy_config.proto",
        "type/v1beta1/selector.proto",
        "google/api/field_behavior.proto",
    ]
    args = [
        "protoc",
        f"-I{api}",
        f"-I{api / 'common-protos'}",
        f"-I{include}",
        f"--python_out={out}",
        *sources,
    ]
    assert protoc.main(args) == 0
    sys.path.insert(0, str(out))
    try:
        from mesh.v1alpha1 import config_pb2  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(out))
    return config_pb2.MeshConfig


def test_the_mesh_config_is_valid_by_istios_proto(modules, tmp_path_factory):
    from google.protobuf import json_format

    mesh_config = mesh_config_type(modules, tmp_path_factory.mktemp("istio-proto"))
    values = yaml.safe_load(MESH_CONFIG.read_text())
    assert set(values) == {"meshConfig"}
    parsed = json_format.ParseDict(values["meshConfig"], mesh_config())
    (provider,) = parsed.extension_providers
    grpc = provider.envoy_ext_authz_grpc
    assert (grpc.service, grpc.port, grpc.fail_open) == (
        "toolgate.toolgate.svc.cluster.local",
        9191,
        False,
    )
    assert grpc.include_request_body_in_check.pack_as_bytes
    # A misspelt key is refused, not ignored.
    broken = copy.deepcopy(values["meshConfig"])
    broken["extensionProviders"][0]["envoyExtAuthzGrpc"]["failOpn"] = False
    with pytest.raises(json_format.ParseError):
        json_format.ParseDict(broken, mesh_config())


def test_the_guides_agree_with_the_standalone_service():
    """Both gateways ask the Service the standalone manifest makes, on its port."""
    standalone = {(o["kind"], o["metadata"]["name"]): o for o in documents(MANIFESTS["standalone"])}
    service = standalone[("Service", "toolgate")]
    (port,) = service["spec"]["ports"]
    namespace = service["metadata"]["namespace"]
    eg = documents(MANIFESTS["envoy-gateway"])
    (security,) = [o for o in eg if o["kind"] == "SecurityPolicy"]
    (ref,) = security["spec"]["extAuth"]["grpc"]["backendRefs"]
    assert (ref["name"], ref["namespace"], ref["port"]) == ("toolgate", namespace, port["port"])
    provider = yaml.safe_load(MESH_CONFIG.read_text())["meshConfig"]["extensionProviders"][0]
    grpc = provider["envoyExtAuthzGrpc"]
    assert grpc["service"] == f"toolgate.{namespace}.svc.cluster.local"
    assert grpc["port"] == port["port"]
    args = standalone[("Deployment", "toolgate")]["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert args[args.index("--listen") + 1].endswith(f":{port['port']}")
