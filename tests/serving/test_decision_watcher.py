"""The decision log in memory equals what the store gives a preview (``LiveStore.decision_rows`` and
``offer_sends``): for decisions another writer records (within a poll), for decisions this process records
(read from the store until a poll has read them: ``None``), and after a restart (read from the store
again)."""

from __future__ import annotations

import datetime as dt
import time

import pandas as pd

from features.live import DECISIONS, LiveStore
from serving.decision_watcher import DecisionWatcher

DAYS = 120


def wait_for(cond, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _row(cid: str, offer: str, channel: str | None, group: str, n: int) -> dict:
    return {"customer_id": cid, "offer_id": offer, "channel": channel, "group": group, "campaign_id": "c",
            "expected_value": 1.0, "propensity": 0.5, "model_version": "v", "decision_id": f"{n:032x}"}


def _store_history(store: LiveStore, ids: list[str], since: dt.datetime) -> list[tuple]:
    return sorted((r["customer_id"], r["offer_id"], r["channel"], r["group"], r["decided_at"])
                  for r in store.decision_rows(since, ids))


def _equal_to_store(w: DecisionWatcher, store: LiveStore, ids: list[str], offers: list[str]) -> bool:
    since = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=DAYS)
    hist, sends = w.history(ids, since), w.sends(offers)
    if hist is None or sends is None:
        return False
    pd.testing.assert_frame_equal(pd.DataFrame(sends, columns=["offer_id", "channel", "n"]),
                                  store.offer_sends(offers))
    assert sorted(hist) == _store_history(store, ids, since)
    return True


def test_the_log_in_memory_equals_the_store_across_writers_and_restarts(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    store, other = LiveStore(url), LiveStore(url)  # `other`: another process writing to the same store
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with store.engine.begin() as conn:  # recorded before this process started: one too old to count
        conn.execute(DECISIONS.insert(), [
            {**_row("A", "o1", "email", "treatment", 1), "decided_at": now - dt.timedelta(days=DAYS + 5)},
            {**_row("A", "o2", "sms", "treatment", 2), "decided_at": now - dt.timedelta(days=3)},
            {**_row("B", "o1", None, "control", 3), "decided_at": now - dt.timedelta(days=1)}])
    ids, offers = ["A", "B", "C", "D"], ["o1", "o2", "o3"]
    w = DecisionWatcher(store, DAYS, poll_seconds=0.05)
    try:
        wait_for(lambda: w.ready)
        assert _equal_to_store(w, store, ids, offers)
        assert [r[1] for r in w.history(["A"], now - dt.timedelta(days=DAYS))] == ["o2"]  # o1: too old
        assert w.sends(["o1"]) == [("o1", "email", 1)]  # every send of all time counts against caps
        store.add_decisions([_row("C", "o1", "email", "treatment", 4),
                             _row("A", "o1", "sms", "treatment", 5)])
        w.note(["C", "A"])  # this process recorded them: read the store until a poll has read them
        assert w.history(["C"], now) is None and w.sends(offers) is None
        assert w.history(["B", "D"], now - dt.timedelta(days=DAYS)) is not None  # the others' still hold
        wait_for(lambda: w.history(["C", "A"], now) is not None and w.sends(offers) is not None)
        assert _equal_to_store(w, store, ids, offers)
        seen = w.last_id
        other.add_decisions([_row("D", "o3", "email", "treatment", 6), _row("B", "o1", None, "treatment", 7)])
        wait_for(lambda: w.last_id > seen)  # another writer's decisions: within a poll
        assert _equal_to_store(w, store, ids, offers)
        assert w.sends(["o1"]) == [("o1", None, 1), ("o1", "email", 2), ("o1", "sms", 1)]
    finally:
        w.close()
        assert not w.running
    again = DecisionWatcher(LiveStore(url), DAYS, poll_seconds=0.05, start=False)  # a restart
    try:
        assert not again.running and again.history(ids, now) is None  # not read yet: read the store
        wait_for(lambda: again.ready)
        assert _equal_to_store(again, store, ids, offers)
    finally:
        again.close()
        store.engine.dispose()
        other.engine.dispose()
