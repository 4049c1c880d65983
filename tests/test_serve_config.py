"""``toolgate serve``'s options from ``--config FILE`` and ``TOOLGATE_*`` variables: for every
option, a flag wins over its variable, which wins over the file, which wins over the default
(generated over options and sources); a file's or variable's value is read and refused as
the flag's is; docs/serve-options.md is the parser's; and a real sidecar serves as its file
and environment say."""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
import yaml
from conftest import EXAMPLES
from hypothesis import given, settings
from sidecar import PATIENCE, TOOLGATE, free_port
from toolgate.cli import exits
from toolgate.cli.main import command_parser
from toolgate.cli.serve_config import ConfigError, layered, options_of, reference, variable

ROOT = Path(__file__).resolve().parent.parent


PARSER = command_parser("serve")
OPTIONS = options_of(PARSER)

#: A value each kind of option takes, as the command line would be given it (and another).
SAMPLES: dict[str, tuple[str, str]] = {
    "capacity": ("4096", "8192"),
    "store-prefix": ("a:", "b:"),
    "log-format": ("json", "text"),
    "reload-settle": ("0.25", "2"),
    "metrics-listen": ("127.0.0.1:9999", "off"),
    "decision-log-filter": ("all", "denials"),
}
FLAGS = ["metrics-per-tool", "grant-vouched-by-server", "store-accept-eviction"]


def parse(words: list[str], environ: dict[str, str], config: Path | None) -> argparse.Namespace:
    words = [*(["--config", str(config)] if config else []), *words]
    args = PARSER.parse_args(words)
    out, _ = layered(PARSER, args, words, environ)
    return out


def flag_value(name: str, text: str | None) -> Any:
    """What the command line alone makes of ``--name text`` (``text`` None: a bare flag)."""
    words = [f"--{name}"] if text is None else [f"--{name}", text]
    return getattr(PARSER.parse_args(words), OPTIONS[name].dest)


@settings(max_examples=80, deadline=None)
@given(
    choices=st.dictionaries(
        st.sampled_from(sorted(SAMPLES)),
        st.tuples(st.booleans(), st.booleans(), st.booleans(), st.integers(0, 1)),
    ),
    flags=st.dictionaries(
        st.sampled_from(FLAGS), st.tuples(st.booleans(), st.booleans(), st.booleans())
    ),
)
def test_a_flag_wins_over_its_variable_which_wins_over_the_file(choices, flags, tmp_path_factory):
    words: list[str] = []
    environ: dict[str, str] = {}
    document: dict[str, Any] = {}
    expected: dict[str, Any] = {}
    for name, (on_line, in_env, in_file, pick) in choices.items():
        # Each source gives its own value, so the winner shows.
        line, env = SAMPLES[name][pick], SAMPLES[name][1 - pick]
        if on_line:
            words += [f"--{name}", line]
            expected[name] = flag_value(name, line)
        if in_env:
            environ[variable(name)] = env
            expected.setdefault(name, flag_value(name, env))
        if in_file:
            document[name] = SAMPLES[name][0]
            expected.setdefault(name, flag_value(name, SAMPLES[name][0]))
    for name, (on_line, in_env, in_file) in flags.items():
        if on_line:
            words.append(f"--{name}")
            expected[name] = True
        if in_env:
            environ[variable(name)] = "false"
            expected.setdefault(name, False)
        if in_file:
            document[name] = True
            expected.setdefault(name, True)
    config = tmp_path_factory.mktemp("config") / "serve.yaml"
    config.write_text(yaml.safe_dump(document))
    got = parse(words, environ, config)
    for name, action in OPTIONS.items():
        want = expected.get(name, action.default)
        assert getattr(got, action.dest) == want, name


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_every_option_takes_from_a_file_and_a_variable_what_its_flag_takes(name, tmp_path):
    action = OPTIONS[name]
    if action.nargs == 0:
        text, want = "true", True
    elif name in SAMPLES:
        text = SAMPLES[name][0]
        want = flag_value(name, text)
    elif action.choices:
        text = str(list(action.choices)[-1])
        want = flag_value(name, text)
    elif action.default is not None:
        text = str(action.default)
        want = flag_value(name, text)
    else:
        text = {"threads": "3", "policy": "p.json"}.get(name, "x")
        try:
            want = flag_value(name, text)
        except SystemExit:
            pytest.skip(f"--{name} takes no plain sample")
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({name: text}))
    assert getattr(parse([], {}, config), action.dest) == want
    assert getattr(parse([], {variable(name): text}, None), action.dest) == want


@pytest.mark.parametrize(
    ("document", "environ", "said"),
    [
        ({"capacty": 3}, {}, "'capacty' is not an option (did you mean capacity?)"),
        ({"capacity": "lots"}, {}, "capacity: invalid int value: 'lots'"),
        ({"log-format": "xml"}, {}, "log-format: 'xml' is not one of"),
        ({"listen": ["a", "b"]}, {}, "listen: expected one value"),
        ({"metrics-per-tool": "maybe"}, {}, "expected true or false"),
        ({}, {"TOOLGATE_CAPACITY": "0"}, "TOOLGATE_CAPACITY"),
        ({}, {"TOOLGATE_METRICS_PER_TOOL": "2"}, "TOOLGATE_METRICS_PER_TOOL: expected true"),
    ],
)
def test_a_value_the_flag_would_refuse_is_refused_naming_where(document, environ, said, tmp_path):
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump(document))
    words = ["--config", str(config)]
    args = PARSER.parse_args(words)
    try:
        out, _ = layered(PARSER, args, words, environ)
    except ConfigError as err:
        assert said in str(err)
        return
    # --capacity 0 is refused when serving starts, as the flag's is.
    assert environ == {"TOOLGATE_CAPACITY": "0"} and out.capacity == 0


def test_a_file_that_is_no_mapping_is_refused(tmp_path):
    config = tmp_path / "serve.yaml"
    for text in ("- a\n- b\n", "just text\n", "a: [\n"):
        config.write_text(text)
        words = ["--config", str(config)]
        with pytest.raises(ConfigError, match=str(config)):
            layered(PARSER, PARSER.parse_args(words), words, {})


def test_a_variable_close_to_an_options_is_warned_about():
    _, warnings = layered(PARSER, PARSER.parse_args([]), [], {"TOOLGATE_METRIC_LISTEN": "off"})
    assert warnings == [
        "TOOLGATE_METRIC_LISTEN is not an option's variable (did you mean TOOLGATE_METRICS_LISTEN?)"
    ]
    # The project's own scripts' variables are nobody's typo.
    _, warnings = layered(PARSER, PARSER.parse_args([]), [], {"TOOLGATE_CROSS_CACHE": "/x"})
    assert warnings == []


def test_the_reference_page_is_the_parsers():
    page = (ROOT / "docs" / "serve-options.md").read_text()
    table = page[page.index("| option | variable |") :]
    assert table == reference(PARSER), "regenerate docs/serve-options.md's table"


def test_a_sidecar_serves_as_its_file_and_environment_say(tmp_path):
    port, unused = free_port(), free_port()
    config = tmp_path / "serve.yaml"
    # The file says one port, the variable another: the variable's is served.
    config.write_text(f"listen: 127.0.0.1:{unused}\nmetrics-listen: off\ncapacity: 4096\n")
    env = {**os.environ, "TOOLGATE_LISTEN": f"127.0.0.1:{port}", "TOOLGATE_LOG_FORMAT": "json"}
    server = subprocess.Popen(
        [*TOOLGATE, "serve", "--config", str(config), "--policy", str(EXAMPLES / "policy.json")],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        health = subprocess.run(
            [*TOOLGATE, "health", "--target", f"127.0.0.1:{port}", "--wait", str(PATIENCE)],
            capture_output=True,
            text=True,
            timeout=2 * PATIENCE,
        )
        assert health.returncode == exits.OK, health.stderr
    finally:
        server.terminate()
        _, err = server.communicate(timeout=PATIENCE)
    assert '"msg": "metrics off"' in err, err


@pytest.mark.parametrize("flag", ["--drain", "--grace"])
@pytest.mark.parametrize("value", ["inf", "nan", "-1", "86401"])
def test_a_wait_that_is_no_time_a_stop_can_take_is_refused(flag: str, value: str, capsys):
    # An infinite drain was taken, and the stop then failed ("timestamp out of range").
    with pytest.raises(SystemExit) as exit:
        PARSER.parse_args([flag, value])
    assert exit.value.code == 2
    assert flag in capsys.readouterr().err
