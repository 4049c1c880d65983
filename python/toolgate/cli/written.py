"""Files the commands write (``suggest -o``, ``scan --save``, ``test --junit``, ``import
-o``): their directory made if missing, as ``serve`` makes its ``--state-dir``; what cannot
be written is one sentence naming the option and the path, and exit status 2."""

from __future__ import annotations

import errno
import sys
from pathlib import Path

from toolgate.cli import exits
from toolgate.files import check_regular


def write_file(path: str, data: str | bytes) -> None:
    """Write ``data`` to ``path``, making its directory if missing; OSError if it cannot."""
    target = Path(path)
    check_regular(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        # A file stands where its directory goes (mkdir's own word for it is "exists").
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(target.parent)) from None
    if isinstance(data, bytes):
        target.write_bytes(data)
    else:
        target.write_text(data, encoding="utf-8")


def write(command: str, option: str, path: str, data: str | bytes) -> int:
    """Write ``data`` to ``path`` (given as ``option``); 0, or 2 having said why not."""
    try:
        write_file(path, data)
    except OSError as err:
        print(f"toolgate {command}: {option} {path}: {err.strerror or err}", file=sys.stderr)
        return exits.UNUSABLE
    return exits.OK
