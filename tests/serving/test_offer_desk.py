"""Offers are previews until committed (in process, on the trained project's real policy and a real store)."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from pydantic import ValidationError

from serving.runtime import Personaliser
from tests.serving.conftest import customers

pytestmark = pytest.mark.slow  # the trained project


def _without_ids(answers: list[dict]) -> list[dict]:
    return [{k: v for k, v in a.items() if k != "decision_id"} for a in answers]


def test_a_preview_records_nothing_and_asking_again_gives_the_same_answer(personaliser: Personaliser,
                                                                          trained_project) -> None:
    p = personaliser
    ids = customers(trained_project, 200)
    first = p.offers(ids, None, "spring")
    again = p.offers(ids, None, "spring")
    assert _without_ids(again) == _without_ids(first)
    assert all(a["dry_run"] and not a["recorded"] for a in first)
    assert any(a["offer_id"] != "none" and a["decision_id"] for a in first)
    assert len(p.store.decisions()) == 0


def test_a_commit_records_each_decision_once(personaliser: Personaliser, trained_project) -> None:
    p = personaliser
    previews = [a for a in p.offers(customers(trained_project, 200), None, "c1") if a["decision_id"]][:10]
    ids = [a["decision_id"] for a in previews]
    done = p.commit_offers(ids)
    assert [r["committed"] for r in done] == [True] * 10
    stored = p.store.decisions()
    assert len(stored) == 10 and set(stored["customer_id"]) == {a["customer_id"] for a in previews}
    assert set(stored["group"]) <= {"treatment", "control"} and stored["decision_id"].notna().all()
    again = p.commit_offers(ids)  # a retried commit
    assert [(r["committed"], r["reason"]) for r in again] == [(False, "already committed")] * 10
    assert len(p.store.decisions()) == 10


def test_dry_run_false_decides_and_records_at_once(personaliser: Personaliser, trained_project) -> None:
    p = personaliser
    answers = p.offers(customers(trained_project, 100), None, "now", dry_run=False)
    recorded = [a for a in answers if a["recorded"]]
    assert recorded and all(a["decision_id"] for a in recorded)
    assert len(p.store.decisions()) == len(recorded)
    assert p.commit_offers([recorded[0]["decision_id"]])[0]["reason"] == "already committed"


def test_concurrent_commits_never_overshoot_a_capped_offer(personaliser: Personaliser,
                                                           trained_project) -> None:
    p = personaliser
    policy = p.current.bundle.policy
    ids = customers(trained_project, 300)
    previews = p.offers(ids, None, "capped")
    counts: dict[str, int] = {}
    for a in previews:
        if a["offer_id"] != "none":
            counts[a["offer_id"]] = counts.get(a["offer_id"], 0) + 1
    top = max(counts, key=counts.__getitem__)
    assert counts[top] > 8
    policy.catalogue = replace(policy.catalogue, offers=tuple(replace(o, max_volume=5) if o.id == top else o
                                                              for o in policy.catalogue.offers))
    wanted = [a["decision_id"] for a in previews if a["offer_id"] == top]  # all previewed before the cap
    results: list[dict] = []

    def commit(chunk: list[str]) -> None:
        for d in chunk:
            results.extend(p.commit_offers([d]))

    threads = [threading.Thread(target=commit, args=(wanted[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r["committed"] for r in results) == 5 and len(results) == len(wanted)
    refused = [r for r in results if not r["committed"]]
    assert all("the decision changed since the preview" in r["reason"] for r in refused)
    d = p.store.decisions()
    assert len(d[(d["offer_id"] == top) & (d["group"] == "treatment")]) == 5


def test_an_unknown_channel_is_a_400_naming_the_allowed_ones(personaliser: Personaliser,
                                                             trained_project) -> None:
    with pytest.raises(ValidationError) as err:
        personaliser.offers(customers(trained_project, 3), "pigeon", "x")
    (problem,) = err.value.errors()
    assert problem["loc"] == ("channel",) and "'pigeon'" in problem["msg"] and "email" in problem["msg"]


def test_offers_from_prepared_scores_equal_the_full_decision(personaliser: Personaliser,
                                                             trained_project) -> None:
    """The desk's answers from the scores prepared at load equal those of the policy's full computation,
    before and after commits (cooldowns, caps): one customer at a time and in batches."""
    p = personaliser
    cur = p.current
    assert cur is not None and cur.offers_prepared is not None
    unprepared = replace(cur, offers_prepared=None)
    ids = customers(trained_project, 300) + ["never-seen"]
    for _ in range(2):
        fast, slow = p.desk.decide(cur, ids, None, "c9"), p.desk.decide(unprepared, ids, None, "c9")
        assert _without_ids(fast) == _without_ids(slow)
        for cid in ids[:30]:
            assert _without_ids(p.desk.decide(cur, [cid], None, "c9")) == \
                _without_ids(p.desk.decide(unprepared, [cid], None, "c9"))
        p.commit_offers([a["decision_id"] for a in fast if a["decision_id"]][:100])  # history for round 2
    assert len(p.store.decisions()) > 0
