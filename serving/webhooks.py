"""Webhooks: triggers posted to the CRM engine from an outbox, signed, retried, dead-lettered.

A trigger whose kind has a URL gets a row in ``webhook_deliveries`` in the transaction that fires it, so the
request that caused it only writes a row; a :class:`WebhookSender` thread in each replica posts the rows. A
sender claims rows with a lease (``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)`` on PostgreSQL;
SQLite serialises writers), so replicas post each delivery once, and records the round's outcomes in one
transaction after posting them; a replica killed mid-round leaves its leases to expire and another (or its
restart) posts those rows again: delivery is at least once, deduplicate on ``X-Personalise-Trigger-Id``.
A trigger is posted once its decision is taken (the body carries it).

The body is the trigger as the ``/triggers`` feed serves it (JSON). Headers:

- ``X-Personalise-Signature: t=<unix seconds>,v1=<hex>``: HMAC-SHA256 with the shared key of the bytes
  ``<t>.<body>``; the receiver recomputes it (:func:`verify`) and rejects old ``t`` to stop replays;
- ``X-Personalise-Trigger-Id`` (percent-encoded where it is not printable ASCII, as header values must be:
  ``urllib.parse.unquote`` gives the id back; ASCII ids are sent unchanged), ``X-Personalise-Delivery`` (the
  outbox row), ``X-Personalise-Attempt``.

A 2xx answer delivers; anything else (or no answer within ``timeout_seconds``) is retried after
``backoff_seconds`` x 2^(attempt-1), at most ``backoff_max_seconds``; after ``max_attempts`` the row's status
is ``dead`` with the last error (the dead-letter record: ``personalise triggers dead-letters`` lists them).

Once the receiver is fixed, :func:`requeue` puts dead letters back in the outbox (``personalise triggers
dead-letters --requeue ID`` or ``--all``, or the admin route ``webhooks/requeue``): pending again, due now,
with a fresh ``max_attempts``; a running replica's sender posts each once (the lease, as for any delivery).
Only dead rows change, in one conditional UPDATE, so requeueing twice, or from two places at once, never
posts a delivery twice, and a delivered row is never posted again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import pandas as pd
import sqlalchemy as sa

from features.live import TRIGGERS, WEBHOOKS, LiveStore
from serving.orders import feed_item
from serving.trigger_config import WebhookSettings

log = logging.getLogger(__name__)
PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
SIGNATURE = "X-Personalise-Signature"
LEASE_MARGIN_SECONDS = 10.0
"""A claim lasts the post's timeout plus this (a sender that died holding it loses it then), and a round
starts posts for this long after its claim."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")
"""Printable ASCII but ``%``: sent as it is in a header value."""


def id_header(trigger_id: str) -> str:
    """A trigger id as an HTTP header value: printable ASCII as it is (``%`` escaped), anything else
    percent-encoded in UTF-8 (a customer id with an accent made the post fail before it was sent)."""
    return quote(trigger_id, safe=_HEADER_SAFE)


def sign(secret: bytes, body: bytes, t: int | None = None) -> str:
    """The signature header's value for ``body``:
    ``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``."""
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: bytes, body: bytes, header: str, max_age_seconds: float = 300.0) -> bool:
    """What a receiver does: recompute the signature of ``body`` and compare in constant time; reject a
    signature older than ``max_age_seconds``."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - t) > max_age_seconds:
        return False
    return hmac.compare_digest(sign(secret, body, t), header)


def backoff(attempts: int, settings: WebhookSettings) -> float:
    """Seconds to wait after the ``attempts``-th failure."""
    return float(min(settings.backoff_seconds * 2 ** (attempts - 1), settings.backoff_max_seconds))


class WebhookSender:
    """Posts the outbox's pending deliveries in a daemon thread (:meth:`start`), or once
    (:meth:`run_once`)."""

    def __init__(self, store: LiveStore, settings: WebhookSettings, secret: bytes,
                 before_claim: Callable[[], Any] | None = None, poll_seconds: float = 0.5,
                 batch: int = 50, lease_margin: float = LEASE_MARGIN_SECONDS) -> None:
        """``before_claim``: run before each claim (the service decides late triggers there).
        ``lease_margin``: a claim lasts the post's timeout plus this, and a round starts posts for this long
        (:meth:`run_once`)."""
        self.store, self.settings, self.secret = store, settings, secret
        self.before_claim, self.poll_seconds, self.batch = before_claim, poll_seconds, batch
        self.lease_margin = lease_margin
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.client = httpx.Client(timeout=settings.timeout_seconds, trust_env=False)
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> WebhookSender:
        self._thread = threading.Thread(target=self._run, name="webhook-sender", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        """New deliveries may be waiting: claim now rather than at the next poll."""
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.timeout_seconds + 10)
        self.client.close()

    def _run(self) -> None:
        last_late = 0.0
        while not self._stop.is_set():
            self._wake.clear()
            try:
                if self.before_claim is not None and time.monotonic() - last_late > 1.0:
                    last_late = time.monotonic()
                    self.before_claim()
                n = self.run_once()
            except Exception:
                log.exception("webhook sender: a round failed; trying again")
                n = 0
            if n == 0:
                self._wake.wait(self.poll_seconds)

    def run_once(self) -> int:
        """Claim up to ``batch`` due deliveries, post each, then record every outcome in one transaction (one
        write per round, not per delivery: on SQLite each write waits its turn behind the orders being
        stored); returns how many were claimed.

        A post starts only within ``lease_margin`` of the claim, so that it ends (at most the timeout later)
        before the claim's lease does: against a slow receiver the rest of the round is released unposted
        (no attempt counted) and claimed again by the next round, never posted by a second sender while this
        one still holds it."""
        start = time.monotonic()
        claimed = self._claim()
        outcomes = [self._post(row) if time.monotonic() - start <= self.lease_margin else (int(row["id"]), {})
                    for row in claimed]
        if outcomes:
            with self.store.engine.begin() as conn:
                for row_id, values in outcomes:
                    mine = (WEBHOOKS.c.id == row_id) & (WEBHOOKS.c.lease_owner == self.owner)
                    conn.execute(WEBHOOKS.update().where(mine).values(lease_until=None, **values))
        return len(claimed)

    def _claim(self) -> list[dict[str, Any]]:
        now = _now()
        lease = now + dt.timedelta(seconds=self.settings.timeout_seconds + self.lease_margin)
        due = (sa.select(WEBHOOKS.c.id)
               .join(TRIGGERS, TRIGGERS.c.trigger_id == WEBHOOKS.c.trigger_id)
               .where(WEBHOOKS.c.status == PENDING, WEBHOOKS.c.next_attempt_at <= now,
                      sa.or_(WEBHOOKS.c.lease_until.is_(None), WEBHOOKS.c.lease_until < now),
                      TRIGGERS.c.decided.is_(True))
               .order_by(WEBHOOKS.c.id).limit(self.batch))
        if self.store.postgres:
            due = due.with_for_update(skip_locked=True, of=WEBHOOKS)
        upd = (WEBHOOKS.update().where(WEBHOOKS.c.id.in_(due.scalar_subquery()))
               .values(lease_until=lease, lease_owner=self.owner)
               .returning(WEBHOOKS.c.id, WEBHOOKS.c.trigger_id, WEBHOOKS.c.url, WEBHOOKS.c.attempts))
        with self.store.engine.begin() as conn:
            rows = [dict(r) for r in conn.execute(upd).mappings()]
        if not rows:
            return []
        q = sa.select(TRIGGERS).where(TRIGGERS.c.trigger_id.in_({r["trigger_id"] for r in rows}))
        with self.store.engine.connect() as conn:
            items = {t["trigger_id"]: feed_item(t) for t in conn.execute(q).mappings()}
        return [{**r, "item": items[r["trigger_id"]]} for r in sorted(rows, key=lambda r: r["id"])]

    def _post(self, row: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Post one claimed delivery; its row's id and the values that record the outcome."""
        body = json.dumps(row["item"], separators=(",", ":")).encode()
        attempt = int(row["attempts"]) + 1
        headers = {"Content-Type": "application/json", SIGNATURE: sign(self.secret, body),
                   "X-Personalise-Trigger-Id": id_header(row["trigger_id"]),
                   "X-Personalise-Delivery": str(row["id"]),
                   "X-Personalise-Attempt": str(attempt)}
        error = None
        try:
            r = self.client.post(row["url"], content=body, headers=headers)
            if not 200 <= r.status_code < 300:
                error = f"HTTP {r.status_code}: {r.text[:200]}"
        except httpx.HTTPError as e:
            error = f"{type(e).__name__}: {e}"[:300]
        now = _now()
        values: dict[str, Any] = {"attempts": attempt}
        if error is None:
            values.update(status=DELIVERED, delivered_at=now, last_error=None)
        elif attempt >= self.settings.max_attempts:
            values.update(status=DEAD, last_error=error)
            log.error("webhook %s for %s dead after %d attempts: %s", row["url"], row["trigger_id"], attempt,
                      error)
        else:
            wait = backoff(attempt, self.settings)
            values.update(next_attempt_at=now + dt.timedelta(seconds=wait), last_error=error)
            log.warning("webhook %s for %s failed (attempt %d, next in %.1f s): %s", row["url"],
                        row["trigger_id"], attempt, wait, error)
        return int(row["id"]), values


def deliveries(store: LiveStore, status: str | None = None) -> pd.DataFrame:
    """The outbox (optionally one status): what was delivered, what waits, what is dead."""
    q = sa.select(WEBHOOKS).order_by(WEBHOOKS.c.id)
    if status is not None:
        q = q.where(WEBHOOKS.c.status == status)
    with store.engine.connect() as conn:
        return pd.DataFrame(conn.execute(q).mappings().all(), columns=[c.name for c in WEBHOOKS.columns])


DEAD_LETTER_COLUMNS = ["id", "trigger_id", "kind", "url", "attempts", "last_error", "created_at"]


def dead_letters(store: LiveStore, limit: int | None = None) -> list[dict[str, Any]]:
    """The dead letters, oldest first (at most ``limit``): what :func:`requeue` takes back, by ``id``."""
    cols = [WEBHOOKS.c[c] for c in DEAD_LETTER_COLUMNS]
    q = sa.select(*cols).where(WEBHOOKS.c.status == DEAD).order_by(WEBHOOKS.c.id).limit(limit)
    with store.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(q).mappings()]
    return [{**r, "created_at": r["created_at"].isoformat()} for r in rows]


def requeue(store: LiveStore, ids: list[int] | None = None) -> dict[str, list[int]]:
    """Put dead letters back in the outbox: the deliveries ``ids`` (None: every dead one) become pending,
    due now, with their attempts counted from 0 again (their last error stays until the next attempt).
    Returns ``requeued`` (ids) and ``not_dead``: those of ``ids`` left alone, unknown, still pending or
    delivered already."""
    q = WEBHOOKS.update().where(WEBHOOKS.c.status == DEAD)
    if ids is not None:
        if not ids:
            return {"requeued": [], "not_dead": []}
        q = q.where(WEBHOOKS.c.id.in_(ids))
    q = q.values(status=PENDING, attempts=0, next_attempt_at=_now(), lease_until=None,
                 lease_owner=None).returning(WEBHOOKS.c.id)
    with store.engine.begin() as conn:
        done = sorted(int(r[0]) for r in conn.execute(q))
    if done:
        log.info("webhooks: %d dead letters requeued: %s", len(done), done[:20])
    left = sorted(set(ids) - set(done)) if ids is not None else []
    return {"requeued": done, "not_dead": left}
