"""What writers did to the policy file, as Linux's inotify reports it.

Polling sees what a file holds, not whether its writer is done: a writer that pauses in the
middle of an in-place write (a slow copy, a shell's ``cat >``, a stopped process) leaves a
file that reads the same for as long as it pauses. The kernel knows better: it reports each
write to a file (``IN_MODIFY``, truncation included) and each close of a file opened for
writing (``IN_CLOSE_WRITE``), and whether a name appeared by creation (``IN_CREATE``) or by a
rename (``IN_MOVED_TO``). The watch is on the directory the policy path resolves into, so a
file removed and written again in place is seen from its creation.

Elsewhere (no inotify, a Python without ctypes, or no watch to be had) nothing is known, and
the watcher relies on the settle period alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("toolgate.reload")

try:
    # Linux only; nor on a Python built without ctypes (some musl builds).
    from inotify_simple import INotify
    from inotify_simple import flags as in_flags
except ImportError:  # pragma: no cover - the settle period alone decides there
    INotify = None


@dataclass(frozen=True)
class Writes:
    """The policy file's writers as last reported.

    ``open``: True while a writer has written to the file and not yet closed it; False once
    every write has been closed; None when nothing is known (no inotify, events lost, or
    writes that began before the watch). ``created``: the file was created in place (opened
    with ``O_CREAT``) since it was last loaded, rather than renamed over the path whole.
    """

    open: bool | None = None
    created: bool = False


UNKNOWN = Writes()


class FileWrites:
    """Follows the writes to the file a path resolves to. ``look()`` drains what the kernel
    reported since the last look; ``loaded()`` forgets the creation once the file is loaded."""

    def __init__(self) -> None:
        self._inotify = None
        if INotify is not None:
            try:
                self._inotify = INotify(nonblocking=True)
            except (OSError, AttributeError) as err:  # the instance limit, seccomp, no inotify
                log.warning("cannot watch the policy file's writers (%s); settle period only", err)
        self._wd: int | None = None
        # The directory watched and the file's name in it (both resolved through symlinks).
        self._where: tuple[Path, str] | None = None
        self._writes = UNKNOWN

    def look(self, path: Path) -> Writes:
        if self._inotify is None:
            return UNKNOWN
        self._follow(path)
        for event in self._inotify.read(timeout=0):
            self._note(event.wd, event.mask, event.name)
        return self._writes

    def loaded(self) -> None:
        self._writes = Writes(open=self._writes.open, created=False)

    def close(self) -> None:
        if self._inotify is not None:
            self._inotify.close()

    def _follow(self, path: Path) -> None:
        resolved = Path(os.path.realpath(path))
        where = (resolved.parent, resolved.name)
        if where == self._where and self._wd is not None:
            return
        assert self._inotify is not None
        if self._wd is not None:
            # The directory may have gone away, and its watch with it.
            with contextlib.suppress(OSError):
                self._inotify.rm_watch(self._wd)
        mask = (
            in_flags.MODIFY
            | in_flags.CLOSE_WRITE
            | in_flags.CREATE
            | in_flags.MOVED_TO
            | in_flags.MOVED_FROM
            | in_flags.DELETE
        )
        try:
            self._wd = self._inotify.add_watch(resolved.parent, mask)
        except OSError:  # the directory is missing (mid-swap): look again next time
            self._wd = None
        self._where = where
        # Writes that began before the watch are not known.
        self._writes = UNKNOWN

    def _note(self, wd: int, mask: int, name: str) -> None:
        if mask & in_flags.Q_OVERFLOW:
            self._writes = Writes(open=None, created=self._writes.created)
            return
        if mask & in_flags.IGNORED and wd == self._wd:  # the directory was removed
            self._wd = None
            self._writes = UNKNOWN
            return
        if wd != self._wd or self._where is None or name != self._where[1]:
            return
        if mask & in_flags.CREATE:
            self._writes = Writes(open=True, created=True)
        elif mask & in_flags.MODIFY:
            self._writes = Writes(open=True, created=self._writes.created)
        elif mask & in_flags.CLOSE_WRITE:
            self._writes = Writes(open=False, created=self._writes.created)
        elif mask & in_flags.MOVED_TO:
            self._writes = Writes(open=False, created=False)
        elif mask & (in_flags.MOVED_FROM | in_flags.DELETE):
            self._writes = UNKNOWN
