"""A control-plane task that runs in the background, again and again, on a thread of its
own: recording approval news, following the store for webhooks, purging old approvals."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

#: Seconds a task waits after an error before it goes on (a broken store must not spin).
PAUSE_AFTER_ERROR = 1.0


class Background:
    """Calls ``step`` on a daemon thread named ``name`` until stopped, waiting ``every``
    seconds between calls (0: at once; ``step`` then waits itself). An error is logged
    under ``what`` and never ends the thread."""

    def __init__(
        self, name: str, step: Callable[[], object], every: float, log: logging.Logger, what: str
    ) -> None:
        self._step = step
        self._every = every
        self._log = log
        self._what = what
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:
                self._log.exception(self._what)
                self._stop.wait(PAUSE_AFTER_ERROR)
            self._stop.wait(self._every)
