"""An offer's budget and a customer's contact limits hold across replicas: two runtimes on one store (each
with its own connection pool, lock and loaded policy, as two service replicas have), committing the same
customers at once from four threads, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import threading
import traceback
from dataclasses import replace
from pathlib import Path

import pytest

from serving.runtime import Personaliser
from serving.trigger_config import LiveConfig
from tests.serving.conftest import customers

pytestmark = pytest.mark.slow  # the trained project, loaded twice
CAMPAIGN, CHANNEL = "budget-test", "email"
AFFORDABLE = 6


def _replica(data: Path, url: str) -> Personaliser:
    cfg = LiveConfig()
    cfg.triggers.scan_interval_seconds = 0  # no background scan recording trigger decisions meanwhile
    p = Personaliser(data, store_url=url, live_config=cfg)
    assert p.current is not None and p.current.bundle.policy is not None, p.load_error
    return p


def _only(p: Personaliser, offer_id: str, budget: float | None) -> None:
    """Leave ``offer_id`` alone in the replica's catalogue, with a total budget, one send per customer and a
    cooldown."""
    policy = p.current.bundle.policy  # type: ignore[union-attr]
    offer = policy.catalogue.get(offer_id)
    policy.catalogue = replace(policy.catalogue, offers=(
        replace(offer, budget=budget, max_per_customer=1, cooldown_days=30),))


def test_two_replicas_committing_at_once_never_overspend_a_budget(trained_project, store_url: str) -> None:
    d, _ = trained_project
    a, b = _replica(d, store_url), _replica(d, store_url)
    try:
        ids = customers(trained_project, 300)
        counts: dict[str, int] = {}
        for ans in a.offers(ids, CHANNEL, CAMPAIGN):
            if ans["offer_id"] != "none":
                counts[ans["offer_id"]] = counts.get(ans["offer_id"], 0) + 1
        top = max(counts, key=counts.__getitem__)
        cost = a.current.bundle.policy.catalogue.get(top).cost_per_send[CHANNEL]  # type: ignore[union-attr]
        assert cost > 0
        budget = (AFFORDABLE + 0.5) * cost
        _only(a, top, None)  # previewed before the budget: a preview of a batch shares out what is left
        previews = [x for x in a.offers(ids, CHANNEL, CAMPAIGN) if x["offer_id"] == top]
        assert len(previews) >= 3 * AFFORDABLE  # far more customers want it than it can pay for
        for p in (a, b):
            _only(p, top, budget)
        wanted = [x["customer_id"] for x in previews]
        decision_ids = [x["decision_id"] for x in previews]
        answers: list[dict] = []
        commits: list[dict] = []
        errors: list[BaseException] = []
        start = threading.Barrier(4)

        def ask(p: Personaliser) -> None:  # decide and record at once, customer by customer
            try:
                start.wait(30)
                for cid in (wanted if p is a else wanted[::-1]):  # B from the other end: other customers
                    answers.extend(p.offers([cid], CHANNEL, CAMPAIGN, dry_run=False))
            except BaseException as e:
                errors.append(e)

        def commit(p: Personaliser) -> None:  # commit the previews, the same ids on both replicas
            try:
                start.wait(30)
                for did in decision_ids:
                    commits.extend(p.commit_offers([did]))
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=f, args=(p,)) for p in (a, b) for f in (ask, commit)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, "".join(traceback.format_exception(errors[0]))
        assert not any(t.is_alive() for t in threads)

        log = a.store.decisions()
        sent = log[(log["offer_id"] == top) & (log["group"] == "treatment")]
        assert len(sent) == AFFORDABLE  # exactly what the budget pays for, never more
        assert len(sent) * cost <= budget
        assert sent["customer_id"].is_unique  # one send per customer, though both replicas asked for each
        assert log["decision_id"].is_unique
        # the answers say the same: as many sends as were recorded, the rest refused with the rule
        said = [x for x in answers if x["recorded"] and not x["control_group"]]
        said_c = [r for r in commits if r["committed"] and r["group"] == "treatment"]
        assert len(said) + len(said_c) == AFFORDABLE
        got = {x["customer_id"] for x in said} | {r["customer_id"] for r in said_c}
        assert got == set(sent["customer_id"])
        refused = [x for x in answers if x["offer_id"] == "none" and not x["control_group"]]
        assert any(x["reason"].startswith("budget exhausted") for x in refused)
        assert all(not r["committed"] for r in commits if r["reason"] == "already committed")
        # afterwards either replica says why a customer without a send gets none: the budget
        unsent = [c for c in wanted if c not in set(sent["customer_id"])]
        for p in (a, b):
            again = [x for x in p.offers(unsent[:20], CHANNEL, CAMPAIGN) if not x["control_group"]]
            assert again and all(x["offer_id"] == "none" for x in again)
            assert all(x["reason"].startswith(f"budget exhausted: offer {top}") for x in again), again[0]
    finally:
        a.close()
        b.close()


def test_one_commit_call_spends_once_per_customer_and_what_is_left_once(trained_project,
                                                                          tmp_path: Path) -> None:
    """Two previews of one customer committed together record one send; previews of two campaigns committed
    together share what is left of the budget (the second campaign's decision reads the first's sends)."""
    d, _ = trained_project
    p = _replica(d, f"sqlite:///{tmp_path / 'live.db'}")
    try:
        ids = customers(trained_project, 300)
        top = next(x["offer_id"] for x in p.offers(ids, CHANNEL, "twice-a") if x["offer_id"] != "none")
        _only(p, top, None)
        mine = [x for x in p.offers(ids, CHANNEL, "twice-a") if x["offer_id"] == top]
        cid = mine[0]["customer_id"]
        same = [p.offers([cid], CHANNEL, "twice-a")[0]["decision_id"] for _ in range(2)]
        assert same[0] != same[1]
        done = p.commit_offers(same)
        assert [r["committed"] for r in done] == [True, False], done
        assert "another decision for this customer" in done[1]["reason"]

        cost = p.current.bundle.policy.catalogue.get(top).cost_per_send[CHANNEL]  # type: ignore[union-attr]
        b = next(x for x in p.offers(ids, CHANNEL, "twice-b")
                 if x["offer_id"] == top and x["customer_id"] != cid)
        c = next(x for x in p.offers(ids, CHANNEL, "twice-c")
                 if x["offer_id"] == top and x["customer_id"] not in (cid, b["customer_id"]))
        others = [b, c]  # two campaigns: decided one after the other in the commit
        _only(p, top, 2.5 * cost)  # one send recorded: one more is affordable
        done = p.commit_offers([x["decision_id"] for x in others])
        assert sorted(r["committed"] for r in done) == [False, True], done
        refused = next(r for r in done if not r["committed"])
        assert "budget exhausted" in refused["reason"]
        sent = p.store.decisions()
        assert len(sent[(sent["offer_id"] == top) & (sent["group"] == "treatment")]) == 2
    finally:
        p.close()
