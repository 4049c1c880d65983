"""The sidecar's settings as Python meets them (``toolgate._core.SidecarSettings``): checked
once, in the extension, when made; a mistake is a ValueError naming its flag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from toolgate._core import Sidecar, SidecarSettings

NAMES = sorted(SidecarSettings().as_dict())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"capacitty": 1}, "there is no option --capacitty"),
        ({"capacity": "64"}, "--capacity: invalid type"),
        ({"threads": 0}, "--threads must be at least 1"),
        ({"threads": True}, "--threads: invalid type"),
        ({"store_mode": "fast"}, "--store-mode is exact or cached"),
        ({"decision_log": Path("/tmp/x")}, "--decision-log: a setting is a str, int, float"),
        ({"capacity": [64]}, "--capacity: a setting is a str, int, float, bool or None, not list"),
        ({"session_from": "jwt:"}, "--session-from is 'header' or 'jwt:CLAIM'"),
        ({"store": "http://redis"}, "--store is local, redis://"),
    ],
)
def test_a_wrong_setting_is_a_value_error_naming_its_flag(options, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace("|", r"\|")):
        SidecarSettings(**options)


@given(
    st.dictionaries(
        st.sampled_from(NAMES),
        st.none() | st.booleans() | st.integers(-3, 2**65) | st.floats() | st.text(max_size=8),
        max_size=4,
    )
)
def test_any_settings_are_made_or_refused_with_a_value_error(options):
    try:
        settings = SidecarSettings(**options)
    except ValueError as err:
        assert str(err).startswith("--") or " --" in str(err)
        return
    assert settings.replace() == settings
    for name, value in options.items():
        assert getattr(settings, name) == value


def test_settings_read_back_compare_and_change():
    cached = SidecarSettings(store_mode="cached", capacity=64)
    assert (cached.store_mode, cached.capacity, cached.threads) == ("cached", 64, None)
    assert cached == SidecarSettings().replace(capacity=64, store_mode="cached")
    assert cached != SidecarSettings()
    assert repr(cached) == 'SidecarSettings(capacity=64, store_mode="cached")'
    assert cached.as_dict()["store_mode"] == "cached"
    assert SidecarSettings(agent_from="jwt:azp").verified == (True, False)
    with pytest.raises(AttributeError):
        cached.capacitty  # noqa: B018
    with pytest.raises(ValueError, match="--capacity must be at least 1"):
        cached.replace(capacity=0)


def test_a_sidecar_is_made_as_its_settings_say(tmp_path: Path):
    log = tmp_path / "decisions.jsonl"
    settings = SidecarSettings(decision_log=str(log), decision_log_filter="denials")
    sidecar = Sidecar({"version": "1", "default": "deny"}, settings, key=b"k" * 32)
    sidecar.engine.decide("anything", grant="g")
    assert sidecar.sync_decision_log(30)
    (line,) = [json.loads(line) for line in log.read_text().splitlines() if '"tool"' in line]
    assert (line["tool"], line["verdict"]) == ("anything", "DENY")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Sidecar({"version": "1"}, approvals_table=tmp_path / "t", key=b"short")
