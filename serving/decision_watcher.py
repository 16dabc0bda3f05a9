"""The offer decision log in memory: what an offer preview reads (contact history, sends of capped offers)
known without asking the store per request.

The store stays the durable copy and the only one a commit reads (under the offer-commit lock,
:meth:`LiveStore.offer_commits`). A background thread reads the log once at start (the decisions of the last
``keep_days``, and every offer's sends per channel) and then every new row (one ``max(id)`` query per poll
when nothing is new), so decisions other processes record (replicas, the audience job) count within
``poll_seconds``. Decisions this process records count at once: the desk notes their customers after the
commit (:meth:`DecisionWatcher.note`), and until a poll started after that has read them those customers'
history and every offer's sends are read from the store (:meth:`history` and :meth:`sends` return None), so a
preview in this process never misses one of its own commits.

On PostgreSQL, ids may become visible out of order (a writer without the lock, such as the audience job,
commits after a later id): ids skipped by a poll are looked for again for :data:`GAP_SECONDS`.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from features.live import DECISIONS, LiveStore
from serving.store_watch import StoreWatch

POLL_SECONDS = 0.2
GAP_SECONDS = 30.0
"""How long an id skipped by a poll (a rolled back insert, or a transaction not committed yet) is looked for
again."""
MAX_GAPS = 10_000
Row = tuple[str, str | None, str, dt.datetime]
"""A decision as a preview reads it: offer_id, channel, group, decided_at."""

_C = DECISIONS.c
_LAST_ID = sa.select(sa.func.max(_C.id))
_COLS = (_C.id, _C.customer_id, _C.offer_id, _C.channel, _C.group, _C.decided_at)
_NEW = sa.select(*_COLS).where(_C.id > sa.bindparam("after"), _C.id <= sa.bindparam("last"))
_GAPS = sa.select(*_COLS).where(_C.id.in_(sa.bindparam("ids", expanding=True)))
_RECENT = sa.select(*_COLS).where(_C.id <= sa.bindparam("last"),
                                  _C.decided_at >= sa.bindparam("since", type_=_C.decided_at.type))
_SENDS = (sa.select(_C.offer_id, _C.channel, sa.func.count())
          .where(_C.id <= sa.bindparam("last"), _C.group == "treatment").group_by(_C.offer_id, _C.channel))


class DecisionWatcher(StoreWatch):
    """Each customer's decisions of the last ``keep_days`` and every offer's treatment sends per channel."""

    def __init__(self, store: LiveStore, keep_days: int, poll_seconds: float = POLL_SECONDS,
                 start: bool = True) -> None:
        """``start``: read the log now (else at the first :meth:`history` or :meth:`sends`)."""
        super().__init__(store, poll_seconds, "decisions-watch", "decisions watch", at_once=True)
        self.keep_days = keep_days
        self._rows: dict[str, list[Row]] = defaultdict(list)
        self._sends: dict[tuple[str, str | None], int] = defaultdict(int)
        """Treatment decisions per (offer, channel), all time (``LiveStore.offer_sends``)."""
        self._stale: dict[str, float] = {}
        """Customers noted by this process (monotonic time of the note) that no poll has read since."""
        self._sends_stale = 0.0
        """Monotonic time of the last note no poll has read since (0.0: none)."""
        self._last_id = 0
        self._gaps: dict[int, float] = {}
        """Ids a poll skipped, with the monotonic time to stop looking for them."""
        self._ready = False
        self._pruned = time.monotonic()
        self._lock = threading.Lock()
        self._starting = threading.Lock()
        if start:
            self.start()

    def start(self) -> None:
        """Read the log and keep polling, in the background (once; the first preview starts it too)."""
        with self._starting:
            if self._thread.ident is None and not self._stop.is_set():
                self._thread.start()

    @property
    def ready(self) -> bool:
        """Whether the log has been read once (before that, every preview reads the store)."""
        return self._ready

    @property
    def last_id(self) -> int:
        """The newest decision id read."""
        return self._last_id

    def history(self, customer_ids: list[str], since: dt.datetime
                ) -> list[tuple[str, str, str | None, str, dt.datetime]] | None:
        """The customers' decisions at or after ``since`` (customer_id, offer_id, channel, group,
        decided_at), as ``LiveStore.decision_rows`` has them (in another order); None when not known here
        (not read yet, or one of them noted and not read since): then read the store."""
        if not self._ready:
            self.start()
            return None
        with self._lock:
            if any(c in self._stale for c in customer_ids):
                return None
            return [(c, *r) for c in customer_ids for r in self._rows.get(c, ()) if r[3] >= since]

    def sends(self, offer_ids: list[str]) -> list[tuple[str, str | None, int]] | None:
        """``LiveStore.offer_sends``' rows for ``offer_ids`` (offer_id, channel, n), in its order (by offer,
        then channel, no channel first); None when not known here (then read the store)."""
        if not self._ready:
            self.start()
            return None
        wanted = set(offer_ids)
        with self._lock:
            if self._sends_stale:
                return None
            got = [(o, ch, n) for (o, ch), n in self._sends.items() if o in wanted and n > 0]
        return sorted(got, key=lambda r: (r[0], r[1] is not None, r[1] or ""))

    def note(self, customer_ids: list[str]) -> None:
        """Customers whose decisions this process has just recorded (call it after the commit)."""
        now = time.monotonic()
        with self._lock:
            for c in customer_ids:
                self._stale[c] = now
            self._sends_stale = now

    def _now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC).replace(tzinfo=None)

    def _load(self, conn: sa.Connection) -> None:
        """The first read: the last ``keep_days`` of decisions and the sends of all time, up to one id."""
        try:
            last = conn.execute(_LAST_ID).scalar_one() or 0
            since = self._now() - dt.timedelta(days=self.keep_days + 1)
            recent = conn.execute(_RECENT, {"last": last, "since": since}).all()
            sends = conn.execute(_SENDS, {"last": last}).all()
        finally:
            conn.rollback()
        rows: dict[str, list[Row]] = defaultdict(list)
        for _, cid, oid, ch, group, at in recent:
            rows[cid].append((oid, ch, group, at))
        with self._lock:
            self._rows = rows
            self._sends = defaultdict(int, {(o, ch): int(n) for o, ch, n in sends})
            self._last_id = int(last)
            self._ready = True

    def _poll(self, conn: sa.Connection) -> None:
        """Read the rows recorded since the last poll (and ids skipped before that turned up since)."""
        started = time.monotonic()  # what was committed before this instant is read below
        after = self._last_id
        try:
            last = conn.execute(_LAST_ID).scalar_one() or 0
            rows = [] if last <= after else conn.execute(_NEW, {"after": after, "last": last}).all()
            gaps = [i for i, until in self._gaps.items() if until >= started]
            found = conn.execute(_GAPS, {"ids": gaps}).all() if gaps else []
        finally:
            conn.rollback()  # end the read transaction: the next poll sees the latest writes
        seen = {r[0] for r in rows}
        self._gaps = {i: until for i, until in self._gaps.items() if until >= started}
        for r in found:
            self._gaps.pop(r[0], None)
        if last > after and len(seen) < last - after and len(self._gaps) < MAX_GAPS:
            for i in range(after + 1, int(last) + 1):
                if i not in seen:
                    self._gaps[i] = started + GAP_SECONDS
        with self._lock:
            for _, cid, oid, ch, group, at in (*rows, *found):
                self._rows[cid].append((oid, ch, group, at))
                if group == "treatment":
                    self._sends[(oid, ch)] += 1
            self._last_id = int(max(last, after))
            self._stale = {c: t for c, t in self._stale.items() if t >= started}
            if self._sends_stale and self._sends_stale < started:
                self._sends_stale = 0.0
        if started - self._pruned > 3600:
            self._prune()

    def _prune(self) -> None:
        """Forget the decisions older than ``keep_days`` (and a day): no preview asks for them."""
        self._pruned = time.monotonic()
        since = self._now() - dt.timedelta(days=self.keep_days + 1)
        with self._lock:
            for cid in list(self._rows):
                kept = [r for r in self._rows[cid] if r[3] >= since]
                if kept:
                    self._rows[cid] = kept
                else:
                    del self._rows[cid]

    def _step(self, conn: Any) -> None:
        """Read the log (the first time), then poll."""
        if self._ready:
            self._poll(conn)
        else:
            self._load(conn)
