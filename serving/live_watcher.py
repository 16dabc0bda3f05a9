"""Which customers have live events since the models' data end, and what those events are, known without
asking the store per request.

Events accepted by this process count at once (:meth:`LiveWatcher.note`); events other processes write to
the store are picked up by a background thread within ``poll_seconds``. The thread reads every new event row
(one query per poll) and keeps each customer's latest :data:`KEEP` in memory, in the store's order: the store
stays the durable copy, and a customer whose events this process has stored but the thread has not read yet
is read from the store (:meth:`LiveWatcher.recent` returns None), so an answer never misses an event.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from features.live import EVENTS, LiveStore
from serving.store_watch import StoreWatch

POLL_SECONDS = 0.2
KEEP = 200
"""Live events kept per customer (the newest; ``LiveStore.recent_events`` reads as many)."""
_LAST_ID = sa.select(sa.func.max(EVENTS.c.id))
_NEW_EVENTS = (sa.select(EVENTS.c.customer_id, EVENTS.c.product_id, EVENTS.c.event_type)
               .where(EVENTS.c.id > sa.bindparam("after"), EVENTS.c.id <= sa.bindparam("last"),
                      EVENTS.c.ts >= sa.bindparam("since"))
               .order_by(EVENTS.c.id))


class LiveWatcher(StoreWatch):
    """Customers with stored live events at or after the current models' ``as_of``."""

    def __init__(self, store: LiveStore, as_of: Callable[[], dt.datetime | None],
                 poll_seconds: float = POLL_SECONDS) -> None:
        """``as_of``: the current models' data end (None while no models are loaded)."""
        super().__init__(store, poll_seconds, "live-events-watch", "live events watch", at_once=False)
        self._current_as_of = as_of
        self._live: set[str] = set()
        self._events: dict[str, list[tuple[str, str]]] = {}
        """Per customer: the events read from the store since ``as_of``, oldest first (the last KEEP)."""
        self._version: dict[str, int] = {}
        """Per customer: the store id of the newest event read (changes whenever their events do)."""
        self._stale: dict[str, float] = {}
        """Customers noted by this process (monotonic time of the note) that no poll has read since."""
        self._as_of: dt.datetime | None = None
        self._last_id = 0
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()
        self._thread.start()

    def has_live(self, customer_id: str, as_of: dt.datetime) -> bool:
        """Whether the customer has stored events since ``as_of`` (the first call for new models reads the
        store once; later calls never wait for it)."""
        if as_of != self._as_of:
            self._refresh(as_of)
        return customer_id in self._live

    def recent(self, customer_id: str, as_of: dt.datetime) -> list[tuple[str, str]] | None:
        """The customer's events since ``as_of`` as ``LiveStore.recent_events`` gives them (newest first, at
        most :data:`KEEP`), from memory; None when this process stored some that no poll has read yet (then
        read the store)."""
        got = self.recent_versioned(customer_id, as_of)
        return None if got is None else got[1]

    def recent_versioned(self, customer_id: str, as_of: dt.datetime
                         ) -> tuple[int, list[tuple[str, str]]] | None:
        """:meth:`recent` with the events' version, read together: a number that changes whenever the
        customer's events in memory do (0: none), so an answer computed from them can be kept until then."""
        if as_of != self._as_of:
            self._refresh(as_of)
        if customer_id in self._stale:
            return None
        with self._lock:
            if customer_id in self._stale or self._as_of != as_of:
                return None
            return self._version.get(customer_id, 0), self._events.get(customer_id, [])[::-1]

    def note(self, customer_ids: list[str]) -> None:
        """Customers whose events this process has just stored (call it after they are committed)."""
        now = time.monotonic()
        with self._lock:
            self._live.update(customer_ids)
            for c in customer_ids:
                self._stale[c] = now

    def _refresh(self, as_of: dt.datetime, conn: Any = None) -> None:
        """Read the event rows stored since the last refresh (one at a time: ``_refreshing``); the state is
        updated under ``_lock`` only after the query, so requests never wait for the store."""
        if conn is None:
            with self.store.engine.connect() as own:
                return self._refresh(as_of, own)
        with self._refreshing:
            after = self._last_id if as_of == self._as_of else 0
            started = time.monotonic()  # what was committed before this instant is read below
            try:
                last = conn.execute(_LAST_ID).scalar_one() or 0
                rows = [] if last <= after else conn.execute(
                    _NEW_EVENTS, {"after": after, "last": last, "since": as_of}).all()
            finally:
                conn.rollback()  # end the read transaction: the next poll sees the latest writes
            with self._lock:
                if as_of != self._as_of:  # new models: start over from their data end
                    self._live, self._events, self._version, self._as_of = set(), {}, {}, as_of
                self._last_id = int(max(last, after))
                for cid, pid, etype in rows:
                    kept = self._events.setdefault(cid, [])
                    kept.append((pid, etype))
                    if len(kept) > 2 * KEEP:
                        del kept[:-KEEP]
                for cid in {r[0] for r in rows}:
                    self._events[cid] = self._events[cid][-KEEP:]
                    self._version[cid] = self._last_id
                    self._live.add(cid)
                self._stale = {c: t for c, t in self._stale.items() if t >= started}
        return None

    def _step(self, conn: Any) -> None:
        """A poll (a poll with no new rows is one ``max(id)`` query); nothing while no models are loaded."""
        as_of = self._current_as_of()
        if as_of is not None:
            self._refresh(as_of, conn)
