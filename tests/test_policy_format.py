"""Every reader of policy text chooses JSON or YAML the same way (one function in the core):
``Policy.from_str``, ``Policy.from_file``, ``read_document`` and the reloader read the same
bytes, with or without a byte-order mark, under any file name, as the same policy."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from toolgate import Engine, Policy
from toolgate._core import read_document

TOOL = st.from_regex(r"[a-z][a-z0-9_-]{0,12}", fullmatch=True)
ACTION = st.sampled_from(["allow", "deny", "require_approval"])
POLICIES = st.fixed_dictionaries(
    {
        "version": st.just("1"),
        "default": st.sampled_from(["allow", "deny"]),
        "tools": st.dictionaries(TOOL, st.fixed_dictionaries({"action": ACTION}), max_size=4),
    }
)


def written(doc: dict, as_yaml: bool, bom: bool, lead: str) -> str:
    text = yaml.safe_dump(doc, sort_keys=False) if as_yaml else json.dumps(doc, indent=1)
    return ("\ufeff" if bom else "") + lead + text


@settings(max_examples=150, deadline=None)
@given(
    doc=POLICIES,
    as_yaml=st.booleans(),
    bom=st.booleans(),
    lead=st.sampled_from(["", "\n", "  ", "\n\t\n"]),
    name=st.sampled_from(["policy", "policy.txt", None]),
)
def test_every_reader_reads_the_same_text_as_the_same_policy(
    doc: dict, as_yaml: bool, bom: bool, lead: str, name: str | None
):
    if as_yaml:
        # Only blank lines before YAML: spaces would indent its first key alone.
        lead = lead.replace("\t", "").replace(" ", "")
    text = written(doc, as_yaml, bom, lead)
    expected = Policy.from_dict(doc).revision
    with tempfile.TemporaryDirectory() as tmp:
        suffix = (".yaml" if as_yaml else ".json") if name is None else ""
        path = Path(tmp) / ((name or "policy") + suffix)
        path.write_bytes(text.encode())
        revisions = {
            "from_str": Policy.from_str(text).revision,
            "from_str with path": Policy.from_str(text, path=path).revision,
            "from_file": Policy.from_file(path).revision,
            "reloader": Engine(Policy.from_dict({"version": "1"}))
            .reload_file(path.read_bytes(), path)
            .revision,
            "read_document": Policy.from_dict(read_document(text, path=path)[0]).revision,
        }
    assert set(revisions.values()) == {expected}, revisions


def test_a_byte_order_mark_before_json_text_is_json():
    """The disagreement this fixed: from_str read a BOM-led JSON text as YAML and failed."""
    text = '\ufeff{"version": "1", "default": "deny"}'
    assert (
        Policy.from_str(text).revision
        == Policy.from_dict({"version": "1", "default": "deny"}).revision
    )


@pytest.mark.parametrize("name", ["p.json", "p.JSON", "p.yaml", "p.yml"])
def test_the_extension_decides_over_the_text(name: str):
    """A ``.json`` file is JSON and a ``.yaml`` one YAML, whatever the text looks like: YAML
    text in a ``.json`` file is an error, not a YAML policy."""
    yaml_text = "version: '1'\ndefault: deny\n"
    if name.lower().endswith(".json"):
        with pytest.raises(ValueError):
            Policy.from_str(yaml_text, path=name)
    else:
        assert Policy.from_str(yaml_text, path=name).revision
