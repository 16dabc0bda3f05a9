"""Which customers have live events since the models' data end, known without asking the store per request.

Events accepted by this process count at once (:meth:`LiveWatcher.note`); events other processes write to
the store are picked up by a background thread within ``poll_seconds``.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from typing import Any

from features.live import LiveStore

log = logging.getLogger(__name__)
POLL_SECONDS = 0.2


class LiveWatcher:
    """Customers with stored live events at or after the current models' ``as_of``."""

    def __init__(self, store: LiveStore, as_of: Callable[[], dt.datetime | None],
                 poll_seconds: float = POLL_SECONDS) -> None:
        """``as_of``: the current models' data end (None while no models are loaded)."""
        self.store, self._current_as_of, self.poll_seconds = store, as_of, poll_seconds
        self._live: set[str] = set()
        self._as_of: dt.datetime | None = None
        self._last_id = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="live-events-watch", daemon=True)
        self._thread.start()

    def has_live(self, customer_id: str, as_of: dt.datetime) -> bool:
        """Whether the customer has stored events since ``as_of`` (the first call for new models reads the
        store once; later calls never wait for it)."""
        if as_of != self._as_of:
            self._refresh(as_of)
        return customer_id in self._live

    def note(self, customer_ids: list[str]) -> None:
        """Customers whose events this process has just stored."""
        with self._lock:
            self._live.update(customer_ids)

    def close(self, timeout: float = 5.0) -> None:
        """Stop polling and wait for the thread to end."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _refresh(self, as_of: dt.datetime, conn: Any = None) -> None:
        with self._lock:
            if as_of != self._as_of:  # new models: start over from their data end
                self._live, self._last_id, self._as_of = set(), 0, as_of
            new, self._last_id = self.store.customers_with_events(as_of, self._last_id, conn)
            self._live |= new

    def _watch(self) -> None:
        """Poll on one connection kept open (a poll with no new rows is one ``max(id)`` query)."""
        conn = None
        while not self._stop.wait(self.poll_seconds):
            as_of = self._current_as_of()
            if as_of is None:
                continue
            try:
                conn = conn or self.store.engine.connect()
                self._refresh(as_of, conn)
            except Exception as e:  # noqa: BLE001 -- the store may be briefly unreachable: retry, reconnected
                log.warning("live events watch: %s: %s", type(e).__name__, e)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()
