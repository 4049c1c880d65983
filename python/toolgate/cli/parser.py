"""What every command's parser shares: help that shows each option's default, and option
types for numbers with a least value."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def _number(kind: Callable[[str], Any], least: float, what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value >= least:
            raise argparse.ArgumentTypeError(f"must be {what}: {text!r}")
        return value

    return parse


positive_int = _number(int, 1, "at least 1")
positive_float = _number(float, 1e-9, "more than 0")
non_negative_float = _number(float, 0, "0 or more")


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
    """An ArgumentParser whose help, and every subcommand's, shows the defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
