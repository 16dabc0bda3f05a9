"""The storefront's default answers, rendered once and reused: the same bytes the endpoint sends through its
response model, and never reused after live events or a model reload (in process, on the trained project's
real models; that the precomputed candidates equal the full computation is tested in the models' tests)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from serving.runtime import MAX_ANSWERS, Personaliser
from serving.schemas import RecommendResponse
from serving.service import _render_recommend
from tests.serving.conftest import customers

pytestmark = pytest.mark.slow  # the trained project


def test_default_answers_are_the_endpoints_json_rendered_once(personaliser: Personaliser,
                                                              trained_project) -> None:
    p = personaliser
    for cid in customers(trained_project, 20):
        for k in (1, 5, 10):
            body = p.default_answer(cid, k, _render_recommend)
            assert body is not None
            full = RecommendResponse(**p.recommend(cid, k, None, False, [])).model_dump_json().encode()
            assert body == full
            again = p.default_answer(cid, k, lambda a: b"rendered again")  # not rendered a second time
            assert again is body
    assert len(p.current.answers) == 60
    assert p.default_answer("never-seen-1", 5, _render_recommend) is None  # the fallback is computed


def test_live_events_and_reloads_stop_reuse(personaliser: Personaliser, trained_project) -> None:
    p = personaliser
    cid, other = customers(trained_project, 2)
    before = p.default_answer(cid, 10, _render_recommend)
    assert before is not None and p.default_answer(other, 10, _render_recommend) is not None
    d, _ = trained_project
    prods = pd.read_parquet(d / "shop" / "products.parquet")
    pid = str(prods[prods["in_stock"]]["product_id"].iloc[-1])
    p.add_events([{"customer_id": cid, "product_id": pid, "event_type": "add_to_cart"}])
    assert p.default_answer(cid, 10, _render_recommend) is None  # computed with the event from now on
    assert p.default_answer(other, 10, _render_recommend) is not None  # others keep theirs
    old = p.current
    p.reload()
    assert p.current is not old and not p.current.answers  # a new load starts without answers
    assert p.default_answer(other, 10, _render_recommend) == old.answers[(other, 10)]  # same champion


def test_a_load_renders_the_default_answers_before_it_serves(trained_project, tmp_path: Path) -> None:
    d, _ = trained_project
    p = Personaliser(d, store_url=f"sqlite:///{tmp_path / 'live.db'}", render=_render_recommend, warm_k=5)
    try:
        assert p.current is not None
        cid = customers(trained_project, 1)[0]
        warm = p.current.answers[(cid, 5)]  # there before any request
        assert warm == RecommendResponse(**p.recommend(cid, 5, None, False, [])).model_dump_json().encode()
        known = len(p.current.bundle.engine.data.users)
        assert len(p.current.answers) == min(known, MAX_ANSWERS)
        p.reload()
        assert (cid, 5) in p.current.answers  # a reload renders its own
    finally:
        p.close()


def test_capped_offer_is_never_sent_past_its_volume_under_concurrent_requests(personaliser: Personaliser,
                                                                             trained_project) -> None:
    """An offer with a total volume in the catalogue: eight threads deciding and recording offers at once
    send it at most that many times (what is left is read and the sends logged under one lock), counted in
    the live store."""
    import threading
    from dataclasses import replace
    p = personaliser
    policy = p.current.bundle.policy
    assert policy is not None
    ids = customers(trained_project, 200)
    b = p.current.bundle
    known = [c for c in ids if b.features.at[c, "n_orders"] > 0]
    dec = policy.decide(b.features.loc[known], b.scores["churn"].reindex(known),
                        max(pd.Timestamp.now(), b.as_of), campaign="capped")  # without a cap; nothing logged
    given = dec.loc[(dec["group"] == "treatment") & (dec["offer_id"] != "none"), "offer_id"].value_counts()
    top = str(given.index[0])
    assert given.iloc[0] > 8
    policy.catalogue = replace(policy.catalogue, offers=tuple(replace(o, max_volume=5) if o.id == top else o
                                                              for o in policy.catalogue.offers))
    answers: list[dict] = []

    def ask(chunk: list[str]) -> None:
        for c in chunk:
            answers.extend(p.offers([c], None, "capped", dry_run=False))

    threads = [threading.Thread(target=ask, args=(ids[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent = [a for a in answers if a["offer_id"] == top]
    d = p.store.decisions()
    stored = d[(d["offer_id"] == top) & (d["group"] == "treatment")]
    assert len(sent) == 5 and len(stored) == 5
    assert len(answers) == len(ids) and any(a["offer_id"] not in ("none", top) for a in answers)
