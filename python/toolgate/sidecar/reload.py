"""Hot reload of the policy file: the loop that looks at it, loads what it finds, and logs
and counts each outcome. When a file is to be loaded (new, complete, a pins file changed)
is the runtime's ``PolicyWatch`` (rust/runtime/src/policy_watch.rs), which the Envoy module
shares: in-place edits are loaded once their writer has closed the file and it has stayed
unchanged for the settle period; a file renamed over the path (a ConfigMap's swap) at once;
SIGHUP at once. A new document is validated before it replaces the old one; an invalid one
keeps the old policy, logs every error and counts a failed reload. Counters live in the
engine and survive every reload.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from toolgate._core import Engine, FileVersion, Policy, PolicyError, PolicyWatch, read_version
from toolgate.sidecar.metrics import ReloadCounts

__all__ = ["FileVersion", "PolicyWatcher", "read_version", "warn_self_asserted"]

log = logging.getLogger("toolgate.reload")


class PolicyWatcher:
    """Polls ``path`` every ``interval`` seconds; ``trigger()`` reloads at once (SIGHUP).

    ``loaded`` is the file as read just before the engine's policy was read from it (so a
    change made in between is seen as new); None reads it now. An in-place edit is loaded
    once the file has read the same (content, size, mtime) for ``settle`` seconds; 0 loads it
    at once. ``now`` is the clock the settle period is measured on. ``follow_writers=False``
    asks nothing of the kernel about the file's writers: the settle period alone decides.
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
        follow_writers: bool = True,
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
        if loaded is None:
            loaded = read_version(path)
        # The loaded policy's pins files, as the policy read them: a change made since it read
        # them (before this watcher looked) is a change to load.
        pins = list(engine.policy.pins_loaded)
        self._watch = PolicyWatch(path, settle, loaded, pins, follow_writers=follow_writers)
        if self._watch.unwatched is not None and follow_writers:
            log.warning(
                "cannot watch the policy file's writers (%s); settle period only",
                self._watch.unwatched,
            )
        self._thread = threading.Thread(target=self._run, name="policy-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

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
        return self._watch.next_wait(self._interval)

    def check(self, forced: bool = False) -> None:
        """One look at the file: load it if it is new and complete (or ``forced``)."""
        look = self._watch.look(forced, self._now())
        if look.kind == "unreadable":
            # Mid-swap or deleted: keep serving the loaded policy and look again later.
            if look.first:
                log.warning(
                    "policy %s cannot be read (%s: deleted, or being replaced); serving"
                    " revision %s until it can",
                    self._path,
                    look.why,
                    self._engine.revision,
                )
            if forced:
                log.error("cannot read policy %s; keeping the loaded policy", self._path)
                self._reloads.add("failure")
        elif look.kind == "settling" and look.first:
            log.info(
                "policy %s changed in place; loading it once its writer has closed it and it"
                " has stayed unchanged for %gs",
                self._path,
                self._settle,
            )
        elif look.kind == "load":
            if look.pins:
                log.info("a pins file of policy %s changed; reloading it", self._path)
            assert look.content is not None
            self.reload(look.content)

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
            self._watch.tried(list(getattr(err, "pins_read", [])))
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
            self._watch.tried([])
            old = self._engine.revision  # still live
            log.error("cannot reload policy %s: %s; keeping revision %s", self._path, err, old)
            return False
        self._reloads.add("success")
        self._watch.tried(list(done.pins_loaded))
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
