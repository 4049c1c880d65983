"""Hot reload of the policy file.

The watcher compares the file's content (read through any symlinks) with what was last
tried, so it sees in-place edits, atomic renames, and Kubernetes ConfigMap updates (the
mounted file is a symlink into a directory that the kubelet swaps). A new document is
validated before it replaces the old one; an invalid one keeps the old policy, logs every
error and counts a failed reload. Counters live in the engine and survive every reload.

Only complete files are loaded. A YAML file cut at a line boundary is often a valid policy,
and a looser one (the cut drops a ``deny_if`` or a limit), so validation cannot tell a
half-written file from a finished one. A new file (another inode: a rename over the path, a
ConfigMap's ``..data`` swap) was written in full before it appeared, and is loaded at once.
A file changed or created in place may still be being written: it is loaded only once its
writer has closed it (on Linux, where the kernel reports that: ``file_writes``) and it has
stayed unchanged for the settle period, so a writer's pause, however long, never loads half a
file. SIGHUP loads at once: the operator says it is done.

The pins files a policy names (``pins.file``) are part of it: a change to one reloads the
policy as it stands. ``toolgate pin`` replaces a pins file whole (a rename), and a pins file
cut short is not valid JSON, so a change there is loaded at once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from toolgate._core import Engine, Policy, PolicyError
from toolgate.files import read_regular
from toolgate.sidecar.file_writes import FileWrites
from toolgate.sidecar.metrics import ReloadCounts

log = logging.getLogger("toolgate.reload")


@dataclass(frozen=True)
class FileVersion:
    """One reading of the policy file through its symlinks: which file it was, its content,
    and what the file system said about it. Two readings are equal when all of that is."""

    #: ``(st_dev, st_ino)`` of the file the path resolves to: new after a rename over it.
    identity: tuple[int, int]
    size: int
    mtime_ns: int
    digest: str
    content: bytes = field(compare=False, repr=False)


def read_version(path: Path) -> FileVersion | None:
    """The file as it is now; None if it cannot be read (missing, mid-swap)."""
    try:
        with path.open("rb") as f:
            content = f.read()
            # Of the open file, so identity and content belong to the same file even if the
            # path is swapped meanwhile.
            st = os.fstat(f.fileno())
    except OSError:
        return None
    return FileVersion(
        identity=(st.st_dev, st.st_ino),
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        digest=hashlib.sha256(content).hexdigest(),
        content=content,
    )


def pins_digests(paths: list[Path]) -> dict[Path, str | None]:
    """Each pins file's content digest now (None: it cannot be read, or is no regular file:
    a pipe there must not stall the watcher)."""
    out: dict[Path, str | None] = {}
    for p in paths:
        try:
            out[p] = hashlib.sha256(read_regular(p)).hexdigest()
        except OSError:
            out[p] = None
    return out


@dataclass(frozen=True)
class InPlaceEdit:
    """An in-place edit waiting to settle: the file as last read, and since when it reads so."""

    version: FileVersion
    since: float


class PolicyWatcher:
    """Polls ``path`` every ``interval`` seconds; ``trigger()`` reloads at once (SIGHUP).

    ``loaded`` is the file as read just before the engine's policy was read from it (so a
    change made in between is seen as new); None reads it now. An in-place edit is loaded
    once the file has read the same (content, size, mtime) for ``settle`` seconds; 0 loads it
    at once. ``now`` is the clock the settle period is measured on.
    """

    def __init__(
        self,
        path: Path,
        engine: Engine,
        reloads: ReloadCounts,
        interval: float = 1.0,
        loaded: FileVersion | None = None,
        settle: float = 0.0,
        now: Callable[[], float] = time.monotonic,
        verified: tuple[bool, bool] = (False, False),
    ) -> None:
        self._path = path
        self._verified = verified
        self._engine = engine
        self._reloads = reloads
        self._interval = interval
        self._settle = settle
        self._now = now
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._forced = threading.Event()
        # What was last tried: the content the engine loaded and the file it came from, read
        # together (a rename after that is then seen as a new file, and loaded at once).
        if loaded is None:
            loaded = read_version(path)
        self._tried_digest = loaded.digest if loaded is not None else None
        self._tried_identity = loaded.identity if loaded is not None else None
        # The file could not be read at some check since: a file that then appears under a
        # new identity was created in place (removed, then written), not renamed in whole.
        self._went_missing = loaded is None
        # The loaded policy's pins files, as the policy read them: a change made since it read
        # them (before this watcher looked) is a change to load.
        self._pins: dict[Path, str | None] = dict(engine.policy.pins_loaded)
        self._edit: InPlaceEdit | None = None
        self._writes = FileWrites()
        self._writes.look(path)
        self._thread = threading.Thread(target=self._run, name="policy-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        self._writes.close()

    def trigger(self) -> None:
        """Reload now, even if the file looks unchanged. Safe to call from a signal handler."""
        self._forced.set()
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.next_wait())
            self._wake.clear()
            if self._stop.is_set():
                return
            # Cleared before the file is read: a SIGHUP arriving later sets it again and is
            # served by the next round, never lost.
            forced = self._forced.is_set()
            self._forced.clear()
            self.check(forced)

    def next_wait(self) -> float:
        """Seconds until the next check: while an in-place edit settles, often enough that
        the settle period, not the interval, sets the delay."""
        if self._edit is not None and self._settle > 0:
            return min(self._interval, self._settle / 4)
        return self._interval

    def check(self, forced: bool = False) -> None:
        """One look at the file: load it if it is new and complete (or ``forced``)."""
        current = read_version(self._path)
        # After the reading: a write that lands in between is seen here, not missed.
        writes = self._writes.look(self._path)
        if current is None:
            # Mid-swap or deleted: keep serving the loaded policy and look again later.
            if not self._went_missing:
                log.warning(
                    "policy %s cannot be read (deleted, or being replaced); serving revision"
                    " %s until it can",
                    self._path,
                    self._engine.revision,
                )
            self._went_missing = True
            self._edit = None
            if forced:
                log.error("cannot read policy %s; keeping the loaded policy", self._path)
                self._reloads.add("failure")
            return
        if forced:
            self._load(current)
            return
        if current.digest == self._tried_digest and pins_digests(list(self._pins)) != self._pins:
            log.info("a pins file of policy %s changed; reloading it", self._path)
            self._load(current)
            return
        if current.digest == self._tried_digest:
            # Nothing new (or an edit put back what is loaded); follow a rename of the same
            # content so that later in-place edits of the new file are recognised as such.
            self._tried_identity = current.identity
            self._went_missing = False
            self._edit = None
            return
        replaced = (
            current.identity != self._tried_identity
            and not self._went_missing
            and not writes.created
        )
        if replaced or (self._settle <= 0 and writes.open is not True):
            self._load(current)
            return
        now = self._now()
        if self._edit is None:
            log.info(
                "policy %s changed in place; loading it once its writer has closed it and it"
                " has stayed unchanged for %gs",
                self._path,
                self._settle,
            )
        if self._edit is None or self._edit.version != current:
            self._edit = InPlaceEdit(current, since=now)
        elif now - self._edit.since >= self._settle and writes.open is not True:
            self._load(current)

    def _load(self, version: FileVersion) -> None:
        # Recorded before loading, so an invalid file is tried once, not at every check.
        self._tried_digest = version.digest
        self._tried_identity = version.identity
        self._went_missing = False
        self._edit = None
        self._writes.loaded()
        self.reload(version.content)

    def reload(self, content: bytes) -> bool:
        """Validate ``content``, read from the file, and swap it in: one call into the engine,
        which reads the pins files the policy names and reports the bytes it read (so the next
        check compares with what was loaded). Returns whether the new policy is live."""
        agent, session = self._verified
        try:
            # The bytes that were checked, not the file read again: exactly what settled.
            done = self._engine.reload_file(
                content, self._path, agent_verified=agent, session_verified=session
            )
        except PolicyError as err:
            self._reloads.add("failure")
            # The pins files the refused policy named, as they read: one made or changed
            # later is tried again (a policy that gains `pins` before its file exists).
            self._pins = dict(getattr(err, "pins_read", []))
            old = self._engine.revision  # still live
            n = len(err.errors)
            log.error(
                "policy %s is invalid (%d %s); keeping revision %s",
                self._path,
                n,
                "error" if n == 1 else "errors",
                old,
            )
            for e in err.errors:
                where = f" (line {e.line})" if e.line is not None else ""
                log.error("%s: %s: %s%s", self._path, e.pointer or "/", e.message, where)
            return False
        except ValueError as err:  # not UTF-8, or refused by the engine
            self._reloads.add("failure")
            self._pins = {}
            old = self._engine.revision  # still live
            log.error("cannot reload policy %s: %s; keeping revision %s", self._path, err, old)
            return False
        self._reloads.add("success")
        self._pins = dict(done.pins_loaded)
        log.info("policy reloaded: revision %s -> %s", done.revision_before, done.revision)
        for note in done.self_asserted:
            log.warning("%s: %s: %s", self._path, note.pointer, note.message)
        return True


def warn_self_asserted(path: Path, policy: Policy, verified: tuple[bool, bool]) -> None:
    """Log each limit, mark and condition of ``policy`` that rests on an identity the client
    asserts about itself (a session id or an agent id, unless ``verified``, as
    ``SidecarSettings.verified`` says, takes it from a verified token)."""
    for note in policy.self_asserted(*verified):
        log.warning("%s: %s: %s", path, note.pointer, note.message)
