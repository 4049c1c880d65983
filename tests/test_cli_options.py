"""The command line as a user meets it: ``--version``, a bare ``toolgate``, every option's help
(its default and choices shown), and addresses checked when read, for every address option."""

from __future__ import annotations

import argparse
import ipaddress
import re
import subprocess
from collections.abc import Iterator

import pytest
import toolgate
import toolgate._core
from hypothesis import given
from hypothesis import strategies as st
from test_cli import TOOLGATE
from test_cli import toolgate as run
from toolgate.cli.main import build_parser
from toolgate.cli.parser import HelpFormatter
from toolgate.sidecar.addresses import check_listen, check_target, parse_host_port

# --- version and help ------------------------------------------------------------------------


def test_version_names_the_release_and_the_source_revision():
    done = run("--version")
    assert (done.returncode, done.stderr) == (0, "")
    revision = toolgate._core.__revision__
    assert re.fullmatch(r"[0-9a-f]{40}|", revision)
    shown = f" ({revision[:12]})" if revision else ""
    assert done.stdout == f"toolgate {toolgate.__version__}{shown}\n"


def test_bare_toolgate_prints_help_and_exits_0():
    done = run()
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: toolgate")
    for command in ("validate", "decide", "health", "serve", "scan", "suggest", "approvals", "log"):
        assert f"\n    {command} " in done.stdout or f"\n    {command}\n" in done.stdout, command
    assert done.stderr == ""


def parsers(
    parser: argparse.ArgumentParser, name: str = "toolgate"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser of the command line, subcommands' included, with its command."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from parsers(sub, f"{name} {sub_name}")


OPTIONS = [
    pytest.param(command, parser, action, id=f"{command} {action.option_strings[-1]}")
    for command, parser in parsers(build_parser())
    for action in parser._actions
    if action.option_strings
    and not isinstance(action, argparse._HelpAction | argparse._VersionAction)
    and action.help != argparse.SUPPRESS
]


def test_the_options_are_all_found():
    found = {p.id for p in OPTIONS}
    assert {
        "toolgate serve --listen",
        "toolgate decide --target",
        "toolgate log verify --head",
    } <= found
    assert len(OPTIONS) > 60


def help_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The line ``--help`` prints for one option, formatted without wrapping."""
    shown = parser.formatter_class
    parser.formatter_class = lambda prog: HelpFormatter(prog, max_help_position=1000, width=10**6)
    try:
        text = parser.format_help()
    finally:
        parser.formatter_class = shown
    head = "  " + action.option_strings[0]
    (line,) = [line for line in text.splitlines() if line.startswith((head + " ", head + ","))]
    return line


@pytest.mark.parametrize(("command", "parser", "action"), OPTIONS)
def test_every_option_has_help_with_its_default_and_choices(
    command: str, parser: argparse.ArgumentParser, action: argparse.Action
):
    assert action.help, f"{command} {action.option_strings}: no help"
    shown = help_of(parser, action)
    if action.choices is not None and action.metavar is None:
        assert "{" + ",".join(map(str, action.choices)) + "}" in shown
    default = action.default
    if default not in (None, False, [], "", argparse.SUPPRESS):
        # Spelled as argparse would, or explained in words.
        assert f"default: {default}" in shown or "default" in shown, shown
        if "default:" in shown:
            assert f"default: {default}" in shown, shown


# --- addresses: each option, end to end -------------------------------------------------------

ADDRESS_OPTIONS = [
    ("serve", "--listen"),
    ("serve", "--metrics-listen"),
    ("serve", "--admin-listen"),
    ("decide", "--target"),
    ("health", "--target"),
    ("approvals", "--target"),
]

BAD_ADDRESSES = {
    "127.0.0.1:99999": "port must be",
    "127.0.0.1:-1": "port must be",
    "127.0.0.1:": "port must be",
    "127.0.0.1:http": "port must be",
    "127.0.0.1": "expected HOST:PORT",
    "::1:50051": "in brackets",
    "[::1:50051": "no ']'",
    "[fe80::zz]:1": "not an IPv6 address",
    "256.0.0.1:80": "not an IPv4 address",
    "bad_host:80": "neither an IP address nor a host name",
    "": "expected HOST:PORT",
}


def command_line(command: str, option: str, value: str) -> list[str]:
    extra = {
        "decide": ["--tool", "x"],
        "approvals": ["--token-file", "/nonexistent", "list"],
    }.get(command, [])
    return [command, option, value, *extra]


@pytest.mark.parametrize(("command", "option"), ADDRESS_OPTIONS)
@pytest.mark.parametrize("value", list(BAD_ADDRESSES))
def test_a_bad_address_is_refused_naming_the_option(
    command: str, option: str, value: str, capsys: pytest.CaptureFixture[str]
):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(command_line(command, option, value))
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: " in err
    assert BAD_ADDRESSES[value] in err


@pytest.mark.parametrize("option", ["--listen", "--metrics-listen", "--admin-listen"])
def test_serve_on_an_impossible_port_exits_before_serving(option: str):
    """An impossible port must not be served on a port the system chose while 99999 is
    logged: nothing starts."""
    done = run("serve", option, "127.0.0.1:99999")
    assert done.returncode == 2
    assert f"argument {option}: the port must be 0-65535, got '99999'" in done.stderr
    assert "serving" not in done.stderr


def test_serve_options_from_python_are_checked_too():
    from toolgate._core import SidecarSettings
    from toolgate.sidecar.options import ServeOptions
    from toolgate.sidecar.serve import serve

    with pytest.raises(ValueError, match="--listen: expected HOST:PORT"):
        SidecarSettings(listen="127.0.0.1:99999")
    with pytest.raises(ValueError, match="port must be"):
        serve(ServeOptions(metrics_listen="127.0.0.1:65536"))


def test_unix_sockets_are_addresses_where_a_client_or_grpc_server_takes_them():
    check_listen("unix:/run/toolgate.sock")
    check_target("unix:/run/toolgate.sock")
    parser = build_parser()
    args = parser.parse_args(["serve", "--listen", "unix:/tmp/t.sock"])
    assert args.listen == "unix:/tmp/t.sock"
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--metrics-listen", "unix:/tmp/m.sock"])
    assert parser.parse_args(["serve", "--metrics-listen", "off"]).metrics_listen == "off"


def test_a_target_port_is_never_0_and_a_listener_may_be():
    assert parse_host_port("127.0.0.1:0", allow_port_zero=True) == ("127.0.0.1", 0)
    with pytest.raises(ValueError, match="port must be 1-65535"):
        check_target("127.0.0.1:0")


# --- addresses: the whole class, generated ------------------------------------------------------

#: Host names: DNS labels, not all digits (digits and dots are an IPv4 address, checked as one).
host_names = st.from_regex(
    r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?){0,3}", fullmatch=True
).filter(lambda h: not h.replace(".", "").isdigit())
hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
    host_names,
)


@given(hosts, st.integers(0, 65535))
def test_every_host_and_port_in_range_is_read_back(host: str, port: int):
    got_host, got_port = parse_host_port(f"{host}:{port}", allow_port_zero=True)
    assert got_port == port
    assert got_host == host.strip("[]")


@given(hosts, st.integers(65536, 10**12) | st.integers(-(10**6), -1))
def test_every_port_out_of_range_is_refused(host: str, port: int):
    with pytest.raises(ValueError, match="port must be"):
        parse_host_port(f"{host}:{port}", allow_port_zero=True)


@given(st.text(max_size=40))
def test_any_text_is_an_address_or_a_value_error(text: str):
    try:
        host, port = parse_host_port(text, allow_port_zero=True)
    except ValueError as err:
        assert str(err)
        return
    # Accepted: the port is in range and the host is an IP address or a DNS name.
    assert 0 <= port <= 65535
    assert text.endswith(f":{port}") and text.isascii()
    try:
        ipaddress.ip_address(host)
    except ValueError:
        assert all(0 < len(label) <= 63 for label in host.split("."))
        assert not host.replace(".", "").isdigit()


def test_the_cli_error_is_argparse_error_not_a_traceback():
    done = subprocess.run(
        [*TOOLGATE, "health", "--target", "localhost:123456"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "toolgate health: error: argument --target: the port must be 1-65535, got '123456' in "
        "'localhost:123456'"
    )


def test_serve_without_options_serves_the_defaults_of_serve_options():
    from toolgate.cli.serve import options
    from toolgate.sidecar.options import ServeOptions

    assert options(build_parser().parse_args(["serve"])) == ServeOptions()


#: The sidecar's settings with no ``toolgate serve`` flag: for programs and tests that
#: assemble a sidecar themselves.
NO_FLAG = {
    "max_message_bytes",
    "store_connect_wait",
    "store_clock",
    "decision_log_queue",
    "decision_log_queue_bytes",
    "approvals_capacity",
    "approvals_queue",
}


def another(name: str, default: object) -> object:
    """A value of the setting ``name`` that the sidecar takes and is not ``default``."""
    choices = toolgate._core.SidecarSettings.CHOICES
    if name in choices:
        return next(word for word in choices[name] if word != default)
    special = {
        "listen": "127.0.0.1:1",
        "threads": 3,
        "store": "redis://127.0.0.1:1/0",
        "decision_log": "-",
        "otlp_endpoint": "http://127.0.0.1:4317",
        "otlp_sample_ratio": 0.5,
        "authzen_listen": "127.0.0.1:1",
    }
    if name in special:
        return special[name]
    if name.endswith("_from"):
        return "jwt:claim"
    if name.endswith("_header"):
        return "x-another"
    if isinstance(default, bool):
        return not default
    if isinstance(default, int | float):
        return default * 2
    return f"{default}-2"


def test_every_sidecar_setting_is_a_serve_flag_whose_default_and_value_it_passes_through(
    tmp_path,
):
    """The settings' one owner is the extension: each has a flag (NO_FLAG aside) whose default
    is the setting's, and a value given on the command line reaches the sidecar as given."""
    from toolgate.cli.main import command_parser
    from toolgate.cli.serve import options

    defaults = toolgate._core.SidecarSettings().as_dict()
    flags = {a.dest: a for a in command_parser("serve")._actions}
    assert set(defaults) >= NO_FLAG
    assert set(defaults) - NO_FLAG <= set(flags)
    # A file the sidecar reads when its settings are checked.
    tokens = tmp_path / "tokens"
    tokens.write_text("gateway 0123456789abcdef\n")
    words = []
    for name in sorted(set(defaults) - NO_FLAG):
        assert flags[name].default == defaults[name], name
        value = str(tokens) if name == "authzen_tokens" else another(name, defaults[name])
        flag = flags[name].option_strings[-1]
        words += [flag] if flags[name].nargs == 0 else [flag, str(value)]
        defaults[name] = value
    settings = options(build_parser().parse_args(["serve", *words])).sidecar
    assert settings.as_dict() == defaults
    assert settings == toolgate._core.SidecarSettings(**defaults)
