"""What every command's parser shares: help that shows each option's default, option types for
numbers with a least value, and errors that name the command they belong to (a mistyped
option of ``toolgate serve`` is reported with ``toolgate serve``'s usage, and the option it
was probably meant to be)."""

from __future__ import annotations

import argparse
import difflib
import math
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

#: A usage longer than this many lines is shortened in error messages to the command and a
#: pointer to its --help (``toolgate serve`` has sixty options).
USAGE_LINES = 4


def _number(
    kind: Callable[[str], Any], least: float, what: str, most: float = math.inf
) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        # Also refuses NaN and infinity, which no count or duration is.
        if not least <= value <= most or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be {what}: {text!r}")
        return value

    return parse


positive_int = _number(int, 1, "at least 1")
positive_float = _number(float, 1e-9, "more than 0")
non_negative_float = _number(float, 0, "0 or more")
#: A time a command waits on a server: a day at most (gRPC's deadlines overflow far beyond).
seconds = _number(float, 1e-9, "more than 0 and at most a day (86400)", most=86400)
wait_seconds = _number(float, 0, "0 or more, and at most a day (86400)", most=86400)
#: A share, from none to all.
ratio = _number(float, 0, "from 0 to 1", most=1)


#: How long a command that asks a sidecar waits by default for one that does not answer yet:
#: one just started (``toolgate serve ... &``, then ``toolgate decide``).
WAIT = 5.0


def add_wait(parser: argparse.ArgumentParser, default: Any = None) -> None:
    """``--wait SECONDS``: how long a command that asks a sidecar waits for one that does not
    answer yet, before saying that nothing listens (``default``: ``WAIT``)."""
    parser.add_argument(
        "--wait",
        type=wait_seconds,
        default=WAIT if default is None else default,
        metavar="SECONDS",
        help="wait this long for a sidecar that is starting; 0: not at all",
    )


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already speaks of it
    (argparse's ArgumentDefaultsHelpFormatter, without "default: None" for options that have
    none)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if default is None or default is False or default == [] or default == argparse.SUPPRESS:
            return text
        if "default" in text.lower() or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help, and every subcommand's, shows the defaults, and whose
    errors are its own: an option no parser knows is reported by the innermost command it
    was given to, with that command's usage (argparse leaves them to the top level)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        # The innermost command's name, for messages of errors met while it runs.
        self.set_defaults(command_name=self.prog)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(_unrecognized(self, extras))
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        usage = self.format_usage()
        if usage.count("\n") > USAGE_LINES:
            usage = f"usage: {self.prog} [options] ...; '{self.prog} --help' lists them\n"
        self.exit(2, f"{usage}{self.prog}: error: {message}\n")


def _unrecognized(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """ "unrecognized arguments: ...", naming the option a mistyped one was probably meant as."""
    message = f"unrecognized arguments: {' '.join(extras)}"
    known = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
    for extra in extras:
        if extra.startswith("--"):
            close = difflib.get_close_matches(extra.partition("=")[0], known, n=1, cutoff=0.7)
            if close:
                return f"{message} (did you mean {close[0]}?)"
    return message
