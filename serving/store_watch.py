"""A background thread polling the live store on one connection kept open: the part the event and the
decision watchers (:mod:`serving.live_watcher`, :mod:`serving.decision_watcher`) share.

A subclass says what one poll reads (:meth:`StoreWatch._step`); a failing poll is logged, its connection
closed, and the next poll reconnects (the store may be briefly unreachable).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from features.live import LiveStore

log = logging.getLogger(__name__)


class StoreWatch:
    """Calls :meth:`_step` every ``poll_seconds`` on a thread named ``name`` (first at once with
    ``at_once``, else after one wait) until :meth:`close`; ``what`` names it in the log."""

    def __init__(self, store: LiveStore, poll_seconds: float, name: str, what: str, at_once: bool) -> None:
        self.store, self.poll_seconds = store, poll_seconds
        self._what, self._at_once = what, at_once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=name, daemon=True)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def close(self, timeout: float = 5.0) -> None:
        """Stop polling and wait for the thread to end."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _step(self, conn: Any) -> None:
        """One poll on ``conn``."""
        raise NotImplementedError

    def _watch(self) -> None:
        conn = self._step_on(None) if self._at_once and not self._stop.is_set() else None
        while not self._stop.wait(self.poll_seconds):
            conn = self._step_on(conn)
        if conn is not None:
            conn.close()

    def _step_on(self, conn: Any) -> Any:
        """:meth:`_step` on ``conn`` (connected if None); the connection to keep, None after an error."""
        try:
            conn = conn or self.store.engine.connect()
            self._step(conn)
        except Exception as e:  # noqa: BLE001 -- the store may be briefly unreachable: retry, reconnected
            log.warning("%s: %s: %s", self._what, type(e).__name__, e)
            if conn is not None:
                conn.close()
            return None
        return conn
