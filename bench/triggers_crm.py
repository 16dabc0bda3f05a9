"""The CRM engine's side of ``bench/triggers.py``, run in a process of its own (as a real CRM engine is): a
consumer polling ``/triggers`` with its cursor and the webhook receiver on 127.0.0.1.

Talks to the benchmark through a pipe: it first sends the receiver's URL; it is then sent ``("feed", url)``
to start polling the server at ``url``. Each ``("acked", ids)`` (the spend jumps a load got a 200 for) is
answered once every one of them is in the feed and delivered by webhook (or 30 s after the ids came): with
when it first saw each trigger in the feed, when each webhook was answered 200, and the log of its polls
(sent, answered, triggers returned), all since it started; it polls on meanwhile. ``("stop", None)`` ends it.
Times are ``time.perf_counter()``: CLOCK_MONOTONIC on Linux, one clock for every process, so they compare
with the load's acknowledgement times.
"""

from __future__ import annotations

import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DRAIN_SECONDS = 30.0
"""How long after the load ends the CRM waits for the acknowledged spend jumps still missing."""
IDLE_SLEEP = 0.01
"""Seconds the consumer waits after an empty page before it polls again (a full page: at once)."""


def crm(conn: Connection, secret: bytes, crm_key: str) -> None:
    """The process: see the module's docstring."""
    import httpx

    from tests.serving.webhook_receiver import Receiver

    receiver = Receiver(secret)
    conn.send(receiver.url)
    kind, url = conn.recv()
    assert kind == "feed", kind
    seen: dict[str, int] = {}  # trigger id -> index of the poll that first returned it
    polls: list[tuple[float, float, int]] = []  # (sent, answered, triggers returned)
    acked: set[str] | None = None
    deadline = float("inf")
    after = 0
    with httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {crm_key}"}) as client:
        while True:
            if conn.poll():
                kind, ids = conn.recv()
                if kind == "stop":
                    break
                acked, deadline = set(ids), time.perf_counter() + DRAIN_SECONDS
            if acked is not None and (time.perf_counter() > deadline or (
                    acked <= set(seen) and acked <= set(receiver.delivered()))):
                conn.send({"seen": seen, "polls": polls, "arrived": _arrived(receiver)})
                acked, deadline = None, float("inf")
            sent = time.perf_counter()
            r = client.post("/triggers", json={"after": after, "limit": 1000})
            page = r.json()
            polls.append((sent, time.perf_counter(), len(page["triggers"])))
            for t in page["triggers"]:
                seen.setdefault(t["trigger_id"], len(polls) - 1)
            after = page["next_after"]
            if not page["triggers"]:
                time.sleep(IDLE_SLEEP)
    receiver.close()


def _arrived(receiver: Any) -> dict[str, float]:
    """Trigger id -> when its webhook was first answered 200."""
    arrived: dict[str, float] = {}
    with receiver.lock:
        for g in receiver.got:
            if g.status == 200:
                arrived.setdefault(g.trigger_id, g.at)
    return arrived
