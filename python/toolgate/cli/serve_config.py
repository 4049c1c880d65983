"""``toolgate serve``'s options from a file (``--config FILE``, YAML) and from the environment
(``TOOLGATE_*``), as well as from its command line: for each option, a flag given wins over
its variable, which wins over the file, which wins over the default.

The command line's parser is the one owner of the options: a file's keys are the options'
names without their dashes (``metrics-listen: off``), a variable's name is ``TOOLGATE_`` and
the name in capitals with underscores (``TOOLGATE_METRICS_LISTEN=off``), and each value is
read by the option's own type and choices, so it is refused exactly as the flag would be."""

from __future__ import annotations

import argparse
import difflib
import os
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from toolgate._core import read_document
from toolgate.files import read_regular

PREFIX = "TOOLGATE_"
#: Values a flag without a value (``--metrics-per-tool``) takes from a variable.
TRUE, FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}
#: Options only the command line gives (the file itself).
COMMAND_LINE_ONLY = {"config"}


class ConfigError(ValueError):
    """A file or variable that does not give an option a value it can take."""


def options_of(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The options a file or the environment may set, by name (``metrics-listen``)."""
    out = {}
    for action in parser._actions:
        long = [s for s in action.option_strings if s.startswith("--")]
        if long and not isinstance(action, argparse._HelpAction):
            name = long[0][2:]
            if name not in COMMAND_LINE_ONLY:
                out[name] = action
    return out


def variable(name: str) -> str:
    """The environment variable of option ``name``."""
    return PREFIX + name.upper().replace("-", "_")


def given_on_command_line(parser: argparse.ArgumentParser, words: Sequence[str]) -> set[str]:
    """The destinations of the options ``words`` give (argparse sets a default only where the
    namespace has none, so a namespace holding a marker for each keeps it for the rest)."""
    marker = object()
    namespace = argparse.Namespace(**{a.dest: marker for a in parser._actions})
    parsed = parser.parse_args(list(words), namespace=namespace)
    return {dest for dest, value in vars(parsed).items() if value is not marker}


def read_file(path: str) -> dict[str, Any]:
    """The file's mapping, read as policies are (YAML or JSON; a key twice is refused)."""
    try:
        text = read_regular(path).decode("utf-8")
    except OSError as err:
        raise ConfigError(f"--config {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--config {path}: not UTF-8") from None
    if not text.strip():
        return {}
    try:
        document, _ = read_document(text, format="yaml", path=path)
    except ValueError as err:
        raise ConfigError(f"--config {path}: {err}") from None
    if document is None:
        return {}
    if not isinstance(document, dict) or not all(isinstance(k, str) for k in document):
        raise ConfigError(f"--config {path}: not a mapping of option names to values")
    return document


def _value(action: argparse.Action, raw: Any, where: str) -> Any:
    """``raw`` read as the option of ``action`` reads its argument."""
    if isinstance(action, argparse._StoreTrueAction):
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in TRUE | FALSE:
            return text in TRUE
        raise ConfigError(f"{where}: expected true or false, got {raw!r}")
    if isinstance(raw, dict | list) or raw is None:
        raise ConfigError(f"{where}: expected one value, got {raw!r}")
    # A flag's text, as given on the command line (true and false for a word that takes them).
    text = {True: "true", False: "false"}.get(raw, str(raw)) if isinstance(raw, bool) else str(raw)
    try:
        value = action.type(text) if callable(action.type) else text
    except argparse.ArgumentTypeError as err:
        raise ConfigError(f"{where}: {err}") from None
    except (ValueError, TypeError):
        kind = getattr(action.type, "__name__", "")
        raise ConfigError(f"{where}: invalid {kind} value: {text!r}") from None
    if action.choices is not None and value not in action.choices:
        shown = ", ".join(map(str, action.choices))
        raise ConfigError(f"{where}: {text!r} is not one of {shown}")
    return value


def layered(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    words: Sequence[str],
    environ: Mapping[str, str] = os.environ,
) -> tuple[argparse.Namespace, list[str]]:
    """``args`` (parsed from ``words``) with each option not given there taken from its
    variable, else from ``--config``'s file; and warnings for variables that look like a
    misspelt option's."""
    options = options_of(parser)
    given = given_on_command_line(parser, words)
    document = read_file(args.config) if getattr(args, "config", None) else {}
    for key in document:
        if key not in options:
            near = difflib.get_close_matches(key, list(options), n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ConfigError(f"--config {args.config}: {key!r} is not an option{hint}")
    out = argparse.Namespace(**vars(args))
    for name, action in options.items():
        if action.dest in given:
            continue
        if variable(name) in environ:
            setattr(out, action.dest, _value(action, environ[variable(name)], variable(name)))
        elif name in document:
            where = f"--config {args.config}: {name}"
            setattr(out, action.dest, _value(action, document[name], where))
    known = {variable(n) for n in options}
    warnings = []
    for var in sorted(v for v in environ if v.startswith(PREFIX) and v not in known):
        near = difflib.get_close_matches(var, sorted(known), n=1, cutoff=0.85)
        if near:
            warnings.append(f"{var} is not an option's variable (did you mean {near[0]}?)")
    return out, warnings


def _json_type(action: argparse.Action) -> str:
    """The JSON type of an option's value: what its type makes of "1" (an int, a float; the
    option's own checks, such as positive, stay the parser's), else a string."""
    try:
        probe = action.type("1") if callable(action.type) else "1"
    except (argparse.ArgumentTypeError, ValueError, TypeError):
        return "string"
    return {int: "integer", float: "number"}.get(type(probe), "string")


def schema(parser: argparse.ArgumentParser, leave_out: Collection[str] = ()) -> dict[str, Any]:
    """A JSON Schema of the options a file or the environment may set, except ``leave_out``
    (those a deployment sets itself): each option's name, its type (a flag is a boolean, a
    choice one of its words) and its help. The Helm chart's ``toolgate.options`` is checked
    against it, so a misspelt option is refused before the pod starts."""
    properties: dict[str, Any] = {}
    for name, action in options_of(parser).items():
        if name in leave_out:
            continue
        if isinstance(action, argparse._StoreTrueAction):
            entry: dict[str, Any] = {"type": "boolean"}
        elif action.choices is not None:
            entry = {"enum": [str(c) for c in action.choices]}
        else:
            entry = {"type": _json_type(action)}
        default = action.default
        text = " ".join((action.help or "").replace("%(default)s", str(default)).split())
        entry["description"] = text
        properties[name] = entry
    return {"type": "object", "additionalProperties": False, "properties": properties}


def reference(parser: argparse.ArgumentParser) -> str:
    """docs/serve-options.md's table: every option with its variable, default and help, as
    the parser has them (a test keeps the page equal to this)."""
    rows = [
        "| option | variable | default | |",
        "|---|---|---|---|",
    ]
    for name, action in options_of(parser).items():
        flag = f"`--{name}`" if action.nargs == 0 else f"`--{name} {action.metavar or 'VALUE'}`"
        default = action.default
        shown = "off" if default is False else "" if default is None else f"`{default}`"
        text = " ".join((action.help or "").replace("%(default)s", str(default)).split())
        cells = [flag, f"`{variable(name)}`", shown, text]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"
