"""Offer previews decided from the decision log in memory (:mod:`serving.decision_watcher`, on the service's
event loop) equal those read from the store: after commits (cooldowns, per-customer maxima, a capped offer
used up), after a restart (the log read from the store again), and while commits run concurrently (a preview
right after a customer's commit always sees it). On the trained project's real policy and a real store."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from serving.offer_desk import OfferDesk
from serving.runtime import Personaliser
from tests.serving.conftest import customers

pytestmark = pytest.mark.slow  # the trained project


def _without_ids(answers: list[dict]) -> list[dict]:
    return [{k: v for k, v in a.items() if k != "decision_id"} for a in answers]


def wait_for(cond, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _from_memory(p: Personaliser, ids: list[str], campaign: str) -> list[dict]:
    """Each customer's preview as the service's event loop decides it (None: it would read the store)."""
    return [p.offer_preview(c, None, campaign) for c in ids]


def test_previews_from_memory_equal_the_store_after_commits_and_a_restart(personaliser: Personaliser,
                                                                         trained_project, tmp_path) -> None:
    p = personaliser
    cur = p.current
    assert cur is not None and cur.offers_prepared is not None and p.desk.log is not None
    store_only = OfferDesk(p.store, watch=False)  # previews read from the store, as before
    ids = customers(trained_project, 200) + ["never-seen"]
    wait_for(lambda: p.desk.log.ready)
    before = _from_memory(p, ids, "m1")
    assert None not in before
    assert _without_ids(before) == _without_ids(store_only.decide(cur, ids, None, "m1"))
    # a capped offer: the first sends use up its volume
    counts: dict[str, int] = {}
    for a in before:
        if a["offer_id"] != "none":
            counts[a["offer_id"]] = counts.get(a["offer_id"], 0) + 1
    top = max(counts, key=counts.__getitem__)
    policy = cur.bundle.policy
    policy.catalogue = replace(policy.catalogue, offers=tuple(replace(o, max_volume=3) if o.id == top else o
                                                              for o in policy.catalogue.offers))
    sent = [a for a in before if a["decision_id"]][:60]
    done = p.commit_offers([a["decision_id"] for a in sent])
    assert sum(r["committed"] for r in done) >= 3
    after_store = _without_ids(store_only.decide(cur, ids, None, "m1"))
    # right after the commit: the committed customers (and the capped offer) are read from the store
    now = [p.offer_preview(c, None, "m1") for c in ids]
    assert all(a is None or _without_ids([a]) == [s] for a, s in zip(now, after_store, strict=True))
    committed = {r["customer_id"] for r in done if r["committed"] and r["group"] == "treatment"}
    wait_for(lambda: None not in _from_memory(p, ids, "m1"))  # a poll has read the commits
    after = _without_ids(_from_memory(p, ids, "m1"))
    assert after == after_store
    assert after != _without_ids(before)
    changed = {a["customer_id"] for a, b in zip(after, _without_ids(before), strict=True) if a != b}
    assert committed <= changed  # a cooldown (or the used-up cap) bars what was sent
    log = p.store.decisions()
    assert len(log[(log["offer_id"] == top) & (log["group"] == "treatment")]) == 3  # its volume: used up
    wanted_top = [i for i, a in enumerate(before)
                  if a["offer_id"] == top and a["customer_id"] not in committed]  # treated, not sent
    assert wanted_top and all(after[i]["offer_id"] != top for i in wanted_top)
    # a restart: the log is read from the store again, previews are the same
    d, _ = trained_project
    restarted = Personaliser(d, store_url=p.store.url)
    try:
        assert restarted.current is not None
        restarted.current.bundle.policy.catalogue = policy.catalogue  # the same cap
        wait_for(lambda: restarted.desk.log is not None and restarted.desk.log.ready)
        again = _from_memory(restarted, ids, "m1")
        assert None not in again and _without_ids(again) == after
    finally:
        restarted.close()


def test_a_preview_right_after_a_concurrent_commit_sees_it(personaliser: Personaliser,
                                                           trained_project) -> None:
    p = personaliser
    cur = p.current
    assert cur is not None and cur.offers_prepared is not None
    store_only = OfferDesk(p.store, watch=False)
    ids = customers(trained_project, 160)
    wait_for(lambda: p.desk.log is not None and p.desk.log.ready)
    mismatches: list[tuple] = []
    seen_commit = []

    def work(chunk: list[str]) -> None:
        for c in chunk:
            first = p.offers([c], None, "cc", dry_run=False)[0]  # decided and recorded at once
            if first["recorded"] and first["offer_id"] != "none":
                seen_commit.append(c)
            for _ in range(2):  # previews in this process, from memory or, until a poll read it, the store
                got = p.offer_preview(c, None, "cc")
                want = store_only.decide(cur, [c], None, "cc")[0]
                if got is not None and _without_ids([got]) != _without_ids([want]):
                    mismatches.append((c, got, want))

    def browse(stop: threading.Event) -> None:  # previews of everyone, meanwhile
        while not stop.is_set():
            for c in ids[::7]:
                p.offer_preview(c, None, "cc")

    stop = threading.Event()
    browsers = [threading.Thread(target=browse, args=(stop,)) for _ in range(2)]
    workers = [threading.Thread(target=work, args=(ids[i::4],)) for i in range(4)]
    for t in browsers + workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    for t in browsers:
        t.join()
    assert not mismatches, mismatches[:2]
    assert len(seen_commit) > 20
    wait_for(lambda: None not in _from_memory(p, ids, "cc"))
    assert _without_ids(_from_memory(p, ids, "cc")) == _without_ids(store_only.decide(cur, ids, None, "cc"))
    sent = p.store.decisions(customer_ids=ids)
    assert len(sent) == len(set(sent["decision_id"])) and set(seen_commit) <= set(sent["customer_id"])
