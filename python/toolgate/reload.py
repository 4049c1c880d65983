"""Hot reload of the policy file.

The watcher compares the file's content (read through any symlinks) with what was last
tried, so it sees in-place edits, atomic renames, and Kubernetes ConfigMap updates (the
mounted file is a symlink into a directory that the kubelet swaps). A new document is
validated before it replaces the old one; an invalid one keeps the old policy, logs every
error and counts a failed reload. Counters live in the engine and survive every reload.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

from toolgate._core import Engine, Policy, PolicyError
from toolgate.metrics import ReloadCounts

log = logging.getLogger("toolgate.reload")


def file_digest(path: Path) -> str | None:
    """SHA-256 of the file's content (through symlinks); None if it cannot be read."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class PolicyWatcher:
    """Polls ``path`` every ``interval`` seconds; ``trigger()`` reloads at once (SIGHUP)."""

    def __init__(
        self,
        path: Path,
        engine: Engine,
        reloads: ReloadCounts,
        interval: float = 1.0,
        loaded_digest: str | None = None,
    ) -> None:
        self._path = path
        self._engine = engine
        self._reloads = reloads
        self._interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._forced = threading.Event()
        # The digest of what the engine loaded, taken before it loaded it.
        self._last_digest = loaded_digest if loaded_digest is not None else file_digest(path)
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
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            # Cleared before the file is read: a SIGHUP arriving later sets it again and is
            # served by the next round, never lost.
            forced = self._forced.is_set()
            self._forced.clear()
            digest = file_digest(self._path)
            if digest is None:
                # Mid-swap or deleted: keep serving the loaded policy and look again later.
                if forced:
                    log.error("cannot read policy %s; keeping the loaded policy", self._path)
                    self._reloads.add("failure")
                continue
            if forced or digest != self._last_digest:
                self._last_digest = digest
                self.reload()

    def reload(self) -> bool:
        """Validate the file and swap it in. Returns whether the new policy is live."""
        old = self._engine.revision
        try:
            policy = Policy.from_file(self._path)
            self._engine.reload(policy)
        except PolicyError as err:
            self._reloads.add("failure")
            log.error(
                "policy %s is invalid (%d errors); keeping revision %s",
                self._path,
                len(err.errors),
                old,
            )
            for e in err.errors:
                where = f" (line {e.line})" if e.line is not None else ""
                log.error("%s: %s: %s%s", self._path, e.pointer or "/", e.message, where)
            return False
        except (OSError, ValueError) as err:
            self._reloads.add("failure")
            log.error("cannot reload policy %s: %s; keeping revision %s", self._path, err, old)
            return False
        self._reloads.add("success")
        log.info("policy reloaded: revision %s -> %s", old, policy.revision)
        return True
