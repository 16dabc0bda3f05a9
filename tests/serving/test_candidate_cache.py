"""Answers looked up in the candidates ranked at training time equal the engine's full computation (the same
items, ranks, reasons and scores), for every rule set; requests they cannot answer exactly are computed."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

from features.interactions import IdMap, InteractionData
from features.schema import CUSTOMER_ID, PRODUCT_ID, RANK, SCORE
from models.recsys import (
    DEFAULT_WEIGHTS,
    DISCOVERY_RULES,
    BlendRecommender,
    BusinessRules,
    RecommendationEngine,
    RecommenderConfig,
    TrendingRecommender,
)
from serving import candidate_cache
from tests.models.recsys_data import CFG, board_reranker, checker_board, shop_data, shop_reranker

BOARD_CFG = RecommenderConfig(factors=8, seed=3, blend_weights=DEFAULT_WEIGHTS, rerank_candidates=30)


def rulesets(categories: list[str]) -> list[BusinessRules]:
    return [BusinessRules(), BusinessRules(exclude_bought=True),
            BusinessRules(exclude_bought=True, allow_replenishable=False),
            BusinessRules(categories=(categories[0],)), BusinessRules(exclude_categories=(categories[1],)),
            BusinessRules(exclude_returned=False)]


def assert_same_answers(full: RecommendationEngine, cached: RecommendationEngine, customers, rules_list,
                        ks=(10,)) -> int:
    """Every answer of ``cached`` (looked up when it can be) equals ``full``'s computed one; returns how
    many were looked up."""
    looked_up = 0
    for rules in rules_list:
        for cid in customers:
            for k in ks:
                a, b = full.recommend_one(cid, k, rules), candidate_cache.recommend(cached, cid, k, rules)
                assert b.source == a.source
                assert [(i[PRODUCT_ID], i[RANK], i["reason"]) for i in b.items] == \
                    [(i[PRODUCT_ID], i[RANK], i["reason"]) for i in a.items], (cid, rules, k)
                assert np.allclose([i[SCORE] for i in b.items], [i[SCORE] for i in a.items], atol=2e-6)
                looked_up += candidate_cache.lookup(cached, cid, k, rules) is not None
    return looked_up


# -- fast: the checker board --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def board_engines():
    data = checker_board()
    blend = BlendRecommender(BOARD_CFG).fit(data)
    trending = TrendingRecommender(BOARD_CFG).fit(data)
    return data, RecommendationEngine(blend, trending), RecommendationEngine(blend, trending).precompute(n=10)


def test_board_lookups_equal_the_computation(board_engines) -> None:
    data, full, cached = board_engines
    assert full.candidates_ is None and cached.candidates_ is not None
    assert cached.candidates_.items.shape == (len(data.users), 10)
    customers = data.users.ids[::2]
    n = assert_same_answers(full, cached, customers, rulesets(["a", "b"]), ks=(1, 10, 12))
    # the candidates really answer: the storefront's default request always, filtered ones often
    default = assert_same_answers(full, cached, customers, [BusinessRules()], ks=(1, 10))
    assert default == 2 * len(customers) and n > default


def test_board_requests_the_candidates_cannot_answer_are_computed(board_engines) -> None:
    data, full, cached = board_engines
    cid = data.users.ids[0]
    assert candidate_cache.lookup(cached, cid, 10) is not None
    assert candidate_cache.lookup(full, cid, 10) is None  # no candidates
    assert candidate_cache.lookup(cached, "never-seen", 10) is None  # unknown: the fallback is computed
    assert candidate_cache.lookup(cached, cid, 11) is None  # more than the 10 kept
    assert candidate_cache.lookup(cached, cid, 10, BusinessRules(exclude_returned=False)) is None  # relaxed
    session = [("p01", "view")]
    computed = full.recommend_one(cid, 5, session=session)
    assert candidate_cache.recommend(cached, cid, 5, session=session) == computed
    # a re-ranker or discovery weights rank discovery requests their own way: computed, and equal
    blend = cached.model
    ranked = RecommendationEngine(BlendRecommender(BOARD_CFG).fit(data).attach_reranker(
        board_reranker(blend, BOARD_CFG.seed)), cached.trending).precompute(n=10)
    weighted = RecommendationEngine(BlendRecommender(replace(
        BOARD_CFG, discovery_weights=(("ease", 1.0),))).fit(data), cached.trending).precompute(n=10)
    for engine in (ranked, weighted):
        assert candidate_cache.lookup(engine, cid, 5, DISCOVERY_RULES) is None
        assert candidate_cache.lookup(engine, cid, 5) is not None
        assert candidate_cache.recommend(engine, cid, 5, DISCOVERY_RULES) == \
            engine.recommend_one(cid, 5, DISCOVERY_RULES)


# -- the small shop -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_precomputed_candidates_answer_exactly_like_the_full_computation(small_shop) -> None:
    data = shop_data(small_shop)
    blend = BlendRecommender(CFG).fit(data)
    full = RecommendationEngine(blend, TrendingRecommender(CFG).fit(data))
    cached = RecommendationEngine(blend, full.trending).precompute(n=20)
    assert cached.candidates_ is not None and cached.candidates_.items.shape == (len(data.users), 20)
    cats = small_shop.products["category"].value_counts().index[:2].tolist()
    customers = data.users.ids[::9]
    served_from_cache = assert_same_answers(full, cached, customers, rulesets(cats))
    assert served_from_cache > 0.5 * 6 * len(customers)  # the cache really answers
    # a live session is never answered from the cache
    pid = data.items.ids[0]
    cid = data.users.ids[0]
    assert candidate_cache.recommend(cached, cid, 10, session=[(pid, "add_to_cart")]).items == \
        full.recommend_one(cid, 10, session=[(pid, "add_to_cart")]).items
    # discovery weights: the candidates hold the default ranking only, discovery requests are computed
    disc = (("buy_again", 1.0), ("item_knn", 0.0), ("als", 0.0), ("ease", 1.0), ("popularity", 0.0))
    m = BlendRecommender(replace(CFG, discovery_weights=disc)).fit(data)
    full = RecommendationEngine(m, TrendingRecommender(CFG).fit(data))
    cached = RecommendationEngine(m, full.trending).precompute(n=20)
    strict = BusinessRules(exclude_bought=True, allow_replenishable=False)
    for cid in data.users.ids[:15]:
        a, b = full.recommend_one(cid, 5, strict), candidate_cache.recommend(cached, cid, 5, strict)
        assert [i[PRODUCT_ID] for i in a.items] == [i[PRODUCT_ID] for i in b.items]
        assert candidate_cache.cached_items(cached, data.users.row(cid), 5, strict) is None


@pytest.mark.slow
def test_reranked_discovery_is_served_like_the_model(small_shop) -> None:
    data = shop_data(small_shop)
    rr = BlendRecommender(CFG).fit(data).attach_reranker(shop_reranker(small_shop))
    engine = RecommendationEngine(rr, TrendingRecommender(CFG).fit(data)).precompute(n=20)
    strict = BusinessRules(exclude_bought=True)
    want = rr.recommend(list(data.users.ids[:10]), k=8, rules=strict)
    for cid, g in want.groupby(CUSTOMER_ID, sort=False):
        got = candidate_cache.recommend(engine, cid, 8, strict)
        assert got.source == "model"
        assert [i[PRODUCT_ID] for i in got.items] == list(g[PRODUCT_ID])
        assert all(i["reason"] for i in got.items)
    pid, cid = want[PRODUCT_ID].iloc[0], want[CUSTOMER_ID].iloc[0]
    after = candidate_cache.recommend(engine, cid, 8, strict, session=[(pid, "purchase")])
    assert pid not in [i[PRODUCT_ID] for i in after.items]


def test_one_product_shop_an_empty_list_is_the_computed_fallback_in_both_paths() -> None:
    """One product, returned by ``u0``: nothing is left to recommend to them. The lookup must not answer
    that empty list as ``model`` while the computation marks the same case ``fallback``."""
    n = 6
    W = sp.csr_matrix(np.ones((n, 1)))
    returned = sp.csr_matrix(([1.0], ([0], [0])), shape=(n, 1))
    data = InteractionData(
        users=IdMap([f"u{x}" for x in range(n)]), items=IdMap(["only"]), weights=W, purchases=W.copy(),
        last_purchase_days=sp.csr_matrix(W * 8.0), returned=returned,
        item_category=np.array(["a"], dtype=object), item_ok=np.ones(1, bool),
        item_replenishable=np.zeros(1, bool), item_price=np.ones(1),
        user_region=np.array(["north"] * n, dtype=object), recent_item_weight=np.ones(1), region_recent={})
    cfg = replace(BOARD_CFG, blend_weights=(("buy_again", 1.0), ("popularity", 0.1)))
    blend = BlendRecommender(cfg).fit(data)
    full = RecommendationEngine(blend, TrendingRecommender(cfg).fit(data))
    cached = RecommendationEngine(blend, full.trending).precompute(n=10)
    computed, served = full.recommend_one("u0", 5), candidate_cache.recommend(cached, "u0", 5)
    assert computed.source == "fallback" and computed.items == []
    assert served == computed and candidate_cache.lookup(cached, "u0", 5) is None
    # a customer who kept it is still answered from the candidates, by the model
    kept = candidate_cache.lookup(cached, "u1", 5)
    assert kept is not None and kept.source == "model" and [i[PRODUCT_ID] for i in kept.items] == ["only"]
    assert kept == full.recommend_one("u1", 5)
