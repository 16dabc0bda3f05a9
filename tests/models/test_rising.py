"""The rising component (products selling faster than they did, issue #21) on the checker board: its order,
its fallback without a prior rate, and the reason its lead gives (fast: no shop, no training)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from models.recsys import (
    BlendRecommender,
    RecommenderConfig,
    RisingRecommender,
    TrendingRecommender,
    build_context,
)
from models.recsys.reasons import FIXED_REASONS, POPULAR, batch_reason_codes, reason_codes
from tests.models.recsys_data import N, checker_board


def board_with_rates() -> tuple:
    """The board with purchases in the trending window (``recent``) and the rate before it (``prior``):
    p00 steady and popular (40 then 40), p01 rising from little (10 after 1), p02 falling (5 after 30)."""
    data = checker_board()
    recent = np.full(N, 2.0)
    prior = np.full(N, 2.0)
    recent[:3], prior[:3] = (40.0, 10.0, 5.0), (40.0, 1.0, 30.0)
    return replace(data, recent_item_weight=recent, prior_item_weight=prior), recent, prior


def test_rising_ranks_growth_over_popularity_the_same_for_everyone() -> None:
    data, recent, prior = board_with_rates()
    m = RisingRecommender().fit(data)
    s = m.score(build_context(data, data.users.ids))
    assert np.array_equal(s, np.broadcast_to(s[0], s.shape))  # no personal taste
    np.testing.assert_allclose(s[0], np.log1p(recent) - np.log1p(prior))
    assert s[0, 1] > s[0, 0] > s[0, 2]  # rising above steady above falling, though p00 sells most
    recs = m.recommend(["u01"], k=1)  # u01 never bought p01 (the board's diagonal) and may be shown it
    assert recs["product_id"].tolist() == ["p01"]
    data.item_ok[1] = False  # out of stock: not shown, rising or not
    assert "p01" not in set(m.recommend(data.users.ids, k=5)["product_id"])


def test_without_a_prior_rate_rising_is_trending() -> None:
    data, _, _ = board_with_rates()
    data = replace(data, prior_item_weight=None)
    ctx = build_context(data, data.users.ids[:4])
    rising = RisingRecommender().fit(data).score(ctx)
    trending = TrendingRecommender().fit(data).score(ctx)
    order = np.argsort(-rising[0], kind="stable")
    assert np.array_equal(order, np.argsort(-trending[0], kind="stable"))
    assert rising[0, 0] > rising[0, 1]  # the most bought first, as trending


def test_an_item_led_by_rising_reads_popular_right_now() -> None:
    data, _, _ = board_with_rates()
    weights = {"buy_again": 1.0, "item_knn": 0.01, "rising": 1.0}
    blend = BlendRecommender(RecommenderConfig(blend_weights=tuple(weights.items()))).fit(data)
    assert "rising" in blend.components_
    ctx = build_context(data, ["u01", "u03"])
    comps = blend.component_scores(ctx)
    top = np.array([[1], [1]])  # p01: not bought by u01, bought by u03 (odd with odd)
    codes = batch_reason_codes(blend, ctx.P.tocsr(), ctx.W.tocsr(), comps, top)
    assert FIXED_REASONS[codes[0, 0]] == "popular right now" and codes[0, 0] == POPULAR
    assert codes[1, 0] != POPULAR  # bought before: a buy-again reason wins
    one = reason_codes(blend, ctx.P.tocsr(), ctx.W.tocsr(), 0, {n: v[0] for n, v in comps.items()}, top[0])
    assert one.tolist() == [POPULAR]


def test_a_blend_weighing_rising_serves_its_own_lists_computed_and_precomputed() -> None:
    """The service's two paths (one customer computed; everyone precomputed) give the blend's own lists when
    it weighs rising."""
    from models.recsys import RecommendationEngine
    data, _, _ = board_with_rates()
    weights = {"buy_again": 1.0, "item_knn": 0.5, "popularity": 0.1, "rising": 0.5}
    blend = BlendRecommender(RecommenderConfig(blend_weights=tuple(weights.items()))).fit(data)
    want = blend.recommend(data.users.ids, k=5)
    engine = RecommendationEngine(blend, TrendingRecommender().fit(data))
    for cid in ("u01", "u02", "u07"):
        got = [i["product_id"] for i in engine.recommend_one(cid, k=5).items]
        assert got == want[want["customer_id"] == cid]["product_id"].tolist()
    cand = engine.precompute(n=5, batch=7).candidates_
    assert cand is not None
    for cid in ("u01", "u02", "u07"):
        got = data.items.ids[cand.items[data.users.row(cid)]].tolist()
        assert got == want[want["customer_id"] == cid]["product_id"].tolist()
    without = blend.use_weights({n: w for n, w in weights.items() if n != "rising"})
    assert not without.recommend(data.users.ids, k=5).equals(want)  # rising changes the lists
