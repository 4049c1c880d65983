"""Files toolgate reads or writes whole (a key, a pins file, a log, a report) are regular files
of a bounded size: a FIFO there would block the command for ever, silently, and a device
(``/dev/zero``) would never end. Each refusal is an ``OSError`` naming the path, as the
system's own are."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from toolgate._core import MAX_FILE_BYTES

#: What a file read whole may hold: far above any key, pins file or policy (the extension's
#: reader of pins files holds to it too).
MAX_BYTES = MAX_FILE_BYTES


def check_regular(path: str | os.PathLike[str]) -> None:
    """Nothing if ``path`` is a regular file or is not there (it will be made); else an
    OSError saying what it is instead."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        what = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        code = errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL
        raise OSError(code, f"{what} (toolgate reads and writes regular files only)", str(path))


def read_regular(path: str | os.PathLike[str], limit: int = MAX_BYTES) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them; OSError otherwise
    (FileNotFoundError when it is not there)."""
    # O_NONBLOCK: opening a FIFO does not wait for a writer; it is refused just after.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            check_regular(path)
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit >> 20} MiB", str(Path(path)))
    return data
