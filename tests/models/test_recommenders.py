"""One shared test class every recommender passes, ranking properties, quality, cold start, fold-in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.exceptions import NotFittedError
from features.importers import is_non_product
from features.interactions import build_interactions
from models.metrics import ranking_report
from models.recommenders import (
    MODELS,
    BlendRecommender,
    BusinessRules,
    RecommendationEngine,
    RecommenderConfig,
    TrendingRecommender,
    build_context,
    rules_mask,
)
from models.rerank import FEATURES, RerankConfig, Reranker
from training.rec_eval import fit_reranker, new_items_truth, purchase_truth

CUTOFF = pd.Timestamp("2025-11-15")
CFG = RecommenderConfig(factors=16, als_iterations=8, bpr_iterations=30, seed=7,
                        blend_weights=(("buy_again", 1.0), ("item_knn", 1.0), ("als", 0.5), ("popularity", 0.1)))


@pytest.fixture(scope="module")
def data(small_shop):
    return build_interactions(small_shop, CUTOFF, non_product=is_non_product)


def small_reranker(shop) -> Reranker:
    """A re-ranker learned on the 56 days before the cutoff (fewer customers allowed: the shop is small)."""
    start = CUTOFF - pd.Timedelta(days=56)
    d = build_interactions(shop, start, non_product=is_non_product)
    X, y, groups, _ = BlendRecommender(CFG).fit(d).rerank_rows(
        new_items_truth(d, purchase_truth(shop, start, CUTOFF)))
    return Reranker(RerankConfig(trees=30, min_customers=20, seed=CFG.seed)).fit(X, y, groups)


NAMES = [*MODELS, "reranked"]
"""Every recommender, and the production blend with a discovery re-ranker attached."""


def build(name: str, data, shop):
    if name == "reranked":
        return BlendRecommender(CFG).fit(data).attach_reranker(small_reranker(shop))
    return MODELS[name](CFG).fit(data)


@pytest.fixture(scope="module")
def fitted(data, small_shop):
    return {name: build(name, data, small_shop) for name in NAMES}


@pytest.fixture(scope="module")
def users(data):
    return list(data.users.ids[:60])


@pytest.mark.parametrize("name", NAMES)
class TestEveryRecommender:
    def test_k_and_columns_and_caller_ids(self, name, fitted, users, data) -> None:
        recs = fitted[name].recommend(users, k=7)
        assert list(recs.columns) == ["customer_id", "product_id", "score", "rank"]
        assert recs.groupby("customer_id").size().max() <= 7
        assert set(recs["customer_id"]) <= set(users)
        assert set(recs["product_id"]) <= set(data.items.ids)
        assert recs["product_id"].map(type).eq(str).all()

    def test_rules_are_respected(self, name, fitted, users, data, small_shop) -> None:
        recs = fitted[name].recommend(users, k=20, exclude_bought=True,
                                      rules=BusinessRules(allow_replenishable=False, exclude_categories=("toys",)))
        prod = small_shop.products.set_index("product_id")
        assert prod.loc[recs["product_id"], "in_stock"].all()
        assert not (prod.loc[recs["product_id"], "category"] == "toys").any()
        for cid, g in recs.groupby("customer_id"):
            r = data.users.rows([cid])[0]
            bought = set(data.items.ids[data.purchases[r].indices])
            returned = set(data.items.ids[data.returned[r].indices])
            assert not (set(g["product_id"]) & (bought | returned))

    def test_only_category_allow_list(self, name, fitted, users, small_shop) -> None:
        recs = fitted[name].recommend(users, k=5, rules=BusinessRules(categories=("grocery",)))
        cats = small_shop.products.set_index("product_id").loc[recs["product_id"], "category"]
        assert (cats == "grocery").all()

    def test_save_load_identical(self, name, fitted, users, tmp_path: Path) -> None:
        p = tmp_path / f"{name}.pkl"
        fitted[name].save(p)
        again = type(fitted[name]).load(p)
        pd.testing.assert_frame_equal(fitted[name].recommend(users, k=5), again.recommend(users, k=5))
        pd.testing.assert_frame_equal(fitted[name].recommend(users, k=5, exclude_bought=True),
                                      again.recommend(users, k=5, exclude_bought=True))

    def test_same_seed_same_result(self, name, fitted, users, data, small_shop) -> None:
        other = build(name, data, small_shop)
        pd.testing.assert_frame_equal(fitted[name].recommend(users, k=5), other.recommend(users, k=5))
        pd.testing.assert_frame_equal(fitted[name].recommend(users, k=5, exclude_bought=True),
                                      other.recommend(users, k=5, exclude_bought=True))

    def test_not_fitted_error(self, name) -> None:
        with pytest.raises(NotFittedError, match="call fit"):
            MODELS.get(name, BlendRecommender)(CFG).recommend(["x"], k=3)

    def test_unknown_customers_get_no_rows(self, name, fitted) -> None:
        assert len(fitted[name].recommend(["nobody-1", "nobody-2"], k=5)) == 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(k=st.integers(1, 40), n=st.integers(1, 30), name=st.sampled_from(["production", "reranked", "als", "item_knn", "buy_again"]),
       exclude=st.booleans())
def test_ranking_invariants(fitted, users, k, n, name, exclude) -> None:
    recs = fitted[name].recommend(users[:n], k=k, exclude_bought=exclude)
    for _, g in recs.groupby("customer_id"):
        assert len(g) <= k
        assert g["product_id"].is_unique
        assert list(g["rank"]) == list(range(1, len(g) + 1))
        assert (np.diff(g["score"].to_numpy()) <= 1e-12).all()


def test_quality_against_popularity_on_held_out_purchases(small_shop, fitted, data) -> None:
    truth = purchase_truth(small_shop, CUTOFF)
    truth = {u: s for u, s in truth.items() if u in data.users}
    pop = ranking_report(fitted["popularity"].recommend(list(truth), 10), truth)
    als = ranking_report(fitted["als"].recommend(list(truth), 10), truth)
    prod = ranking_report(fitted["production"].recommend(list(truth), 10), truth)
    assert als["ndcg@10"] > pop["ndcg@10"]
    assert prod["ndcg@10"] > 1.5 * pop["ndcg@10"]
    assert prod["hit_rate@10"] > pop["hit_rate@10"] + 0.1
    assert prod["ndcg@10"] > max(als["ndcg@10"], pop["ndcg@10"]) * 0.95


def test_recommendations_follow_planted_tastes(fitted, users, truth, small_shop) -> None:
    recs = fitted["production"].recommend(users, k=10, exclude_bought=True)
    cat = small_shop.products.set_index("product_id")["category"]
    share = (recs["product_id"].map(cat).to_numpy() == truth.loc[recs["customer_id"], "top_category"].to_numpy()).mean()
    pop = fitted["popularity"].recommend(users, k=10, exclude_bought=True)
    pshare = (pop["product_id"].map(cat).to_numpy() == truth.loc[pop["customer_id"], "top_category"].to_numpy()).mean()
    assert share > 2 * pshare


@pytest.fixture(scope="module")
def engine(fitted, data):
    return RecommendationEngine(fitted["production"], TrendingRecommender(CFG).fit(data))


def test_cold_start_is_trending_in_region_and_marked(engine, data) -> None:
    rec = engine.recommend_one("never-seen", k=5, region="london")
    assert rec.source == "fallback"
    assert len(rec.items) == 5
    assert all(i["reason"] == "popular in your region (london)" for i in rec.items)
    expected = np.argsort(-engine.trending.scores_for_region("london"))
    allowed = [data.items.ids[j] for j in expected if data.item_ok[j]][:5]
    assert [i["product_id"] for i in rec.items] == allowed
    assert engine.recommend_one("never-seen", k=3).items[0]["reason"] == "trending now"


def test_live_session_fold_in_moves_recommendations(engine, data, small_shop) -> None:
    prods = small_shop.products.set_index("product_id")
    pets = prods.index[(prods["category"] == "pet") & prods["in_stock"]][:3].tolist()
    rec = engine.recommend_one("brand-new", k=10, session=[(p, "view") for p in pets] + [(pets[0], "add_to_cart")])
    assert rec.source == "model"
    cats = prods.loc[[i["product_id"] for i in rec.items], "category"]
    assert (cats == "pet").mean() >= 0.5
    assert any(i["reason"].startswith("because you viewed") for i in rec.items)
    # an existing customer: session events change the list
    cid = data.users.ids[0]
    base = [i["product_id"] for i in engine.recommend_one(cid, k=10).items]
    live = [i["product_id"] for i in engine.recommend_one(cid, k=10, session=[(p, "add_to_cart") for p in pets]).items]
    assert base != live


def test_explanations(engine, data) -> None:
    counts = np.asarray(data.purchases.sum(axis=1)).ravel()
    cid = data.users.ids[int(np.argmax(counts))]
    rec = engine.recommend_one(cid, k=10)
    reasons = {i["reason"] for i in rec.items}
    assert reasons & {"you buy this regularly", "buy it again"}
    for i in rec.items:
        if i["reason"].startswith("because you"):
            assert i["product_id"] not in i["reason"]


def test_similar_items_excludes_itself_and_unknown_falls_back(engine, data) -> None:
    pid = data.items.ids[int(np.argmax(np.asarray(data.purchases.sum(axis=0)).ravel()))]
    src, items = engine.similar_items(pid, 5)
    assert src == "model" and len(items) == 5 and pid not in [i["product_id"] for i in items]
    src, items = engine.similar_items("no-such-product", 5)
    assert src == "fallback" and len(items) == 5


def test_precomputed_candidates_answer_exactly_like_the_full_computation(fitted, data, small_shop) -> None:
    full = RecommendationEngine(fitted["production"], TrendingRecommender(CFG).fit(data))
    cached = RecommendationEngine(fitted["production"], full.trending).precompute(n=20)
    assert cached.cache_ is not None and cached.cache_["items"].shape == (len(data.users), 20)
    cats = small_shop.products["category"].value_counts().index[:2].tolist()
    rulesets = [BusinessRules(), BusinessRules(exclude_bought=True),
                BusinessRules(exclude_bought=True, allow_replenishable=False),
                BusinessRules(categories=(cats[0],)), BusinessRules(exclude_categories=(cats[1],)),
                BusinessRules(exclude_returned=False)]
    served_from_cache = 0
    for rules in rulesets:
        for cid in data.users.ids[::9]:
            a, b = full.recommend_one(cid, 10, rules), cached.recommend_one(cid, 10, rules)
            assert b.source == a.source
            assert [(i["product_id"], i["rank"], i["reason"]) for i in b.items] == \
                [(i["product_id"], i["rank"], i["reason"]) for i in a.items], (cid, rules)
            assert np.allclose([i["score"] for i in b.items], [i["score"] for i in a.items], atol=2e-6)
            row = data.users.row(cid)
            served_from_cache += cached._cached(row, 10, rules) is not None
    assert served_from_cache > 0.5 * len(rulesets) * len(data.users.ids[::9])  # the cache really answers
    # a live session is never answered from the cache
    pid = data.items.ids[0]
    assert cached.recommend_one(data.users.ids[0], 10, session=[(pid, "add_to_cart")]).items == \
        full.recommend_one(data.users.ids[0], 10, session=[(pid, "add_to_cart")]).items


def test_discovery_weights_rank_requests_that_exclude_bought_products(data, users, small_shop) -> None:
    from dataclasses import replace
    disc = (("buy_again", 1.0), ("item_knn", 0.0), ("als", 0.0), ("ease", 1.0), ("popularity", 0.0))
    m = BlendRecommender(replace(CFG, discovery_weights=disc)).fit(data)
    assert "ease" in m.components_  # fitted because discovery uses it
    strict = BusinessRules(exclude_bought=True, allow_replenishable=False)
    ctx = build_context(data, users)
    ease = m.components_["ease"].score(ctx)
    got = m.recommend(users, k=5, rules=strict)
    # discovery requests are ranked by the discovery blend (here EASE alone), the default ones are not
    mask = rules_mask(data, ctx, strict)
    top_ease = {(u, data.items.ids[j]) for i, u in enumerate(users)
                for j in np.argsort(-np.where(mask[i], ease[i], -np.inf), kind="stable")[:5] if mask[i, j]}
    assert len({(r.customer_id, r.product_id) for r in got.itertuples()} & top_ease) >= 0.9 * len(got)
    assert not m.recommend(users, k=5).equals(m.recommend(users, k=5, rules=BusinessRules(exclude_bought=True)))
    # the serving cache holds the default ranking only: discovery requests are computed, and equal
    full = RecommendationEngine(m, TrendingRecommender(CFG).fit(data))
    cached = RecommendationEngine(m, full.trending).precompute(n=20)
    for cid in users[:15]:
        a, b = full.recommend_one(cid, 5, strict), cached.recommend_one(cid, 5, strict)
        assert [i["product_id"] for i in a.items] == [i["product_id"] for i in b.items]
        assert cached._cached(data.users.row(cid), 5, strict) is None
    # tuning learns them on products new to each customer
    truth = purchase_truth(small_shop, CUTOFF)
    tuned = BlendRecommender(replace(CFG, blend_weights=None)).fit(data)
    tuned.tune(truth)
    main = dict(tuned.weights_)
    tuned.tune_discovery({u: s for u, s in truth.items() if u in data.users})
    assert tuned.discovery_weights_ is not None and tuned.weights_ == main


def test_reranker_orders_the_blends_discovery_candidates_only(fitted, data, users) -> None:
    blend, rr = fitted["production"], fitted["reranked"]
    # default requests are the blend's, untouched
    pd.testing.assert_frame_equal(blend.recommend(users, k=10), rr.recommend(users, k=10))
    # discovery requests: the re-ranker's order of the blend's top candidates, and not the blend's order
    n = CFG.rerank_candidates
    strict = BusinessRules(exclude_bought=True, allow_replenishable=False)
    got = rr.recommend(users, k=10, rules=strict)
    cand = blend.recommend(users, k=n, rules=strict)
    assert set(zip(got["customer_id"], got["product_id"], strict=True)) <= \
        set(zip(cand["customer_id"], cand["product_id"], strict=True))
    mine = blend.recommend(users, k=10, rules=strict)
    assert not got[["customer_id", "product_id"]].equals(mine[["customer_id", "product_id"]])
    # a discovery list holds at most the candidates
    assert rr.recommend(users[:3], k=n + 20, rules=strict).groupby("customer_id").size().max() <= n
    assert rr.reranker_ is not None and set(rr.reranker_.importance()) == set(FEATURES)


def test_engine_serves_reranked_discovery_like_the_model(fitted, data, users) -> None:
    rr = fitted["reranked"]
    engine = RecommendationEngine(rr, TrendingRecommender(CFG).fit(data)).precompute(n=20)
    strict = BusinessRules(exclude_bought=True)
    want = rr.recommend(users[:10], k=8, rules=strict)
    for cid, g in want.groupby("customer_id", sort=False):
        got = engine.recommend_one(cid, 8, strict)
        assert got.source == "model"
        assert [i["product_id"] for i in got.items] == list(g["product_id"])
        assert all(i["reason"] for i in got.items)
    # a live session on a discovery request is re-ranked too: the session's product is excluded as bought
    pid = want["product_id"].iloc[0]
    cid = want["customer_id"].iloc[0]
    after = engine.recommend_one(cid, 8, strict, session=[(pid, "purchase")])
    assert pid not in [i["product_id"] for i in after.items]


def test_reranker_is_used_only_when_it_beats_the_blend_on_held_out_customers(small_shop) -> None:
    from dataclasses import replace
    cfg = replace(CFG, rerank_min_customers=20)
    ranker, v = fit_reranker(small_shop, CUTOFF, cfg)
    assert v["holdout_customers"] > 0 and v["customers"] > v["holdout_customers"]
    assert v["used"] == (v["holdout_ndcg@10_reranked"] > v["holdout_ndcg@10_blend"])
    assert (ranker is not None) == v["used"]
    if ranker is not None:
        assert ranker.validation_ == v
    # too little data: no ranker, and it says why (also when only the random split leaves too few to train)
    none, why = fit_reranker(small_shop, CUTOFF, replace(CFG, rerank_min_customers=10**6))
    assert none is None and why["used"] is False and "few" in why["why"]
    none, why = fit_reranker(small_shop, CUTOFF, replace(CFG, rerank_min_customers=20, rerank_max_customers=10))
    assert none is None and why["used"] is False and why["customers"] < 20 and "training or held-out" in why["why"]


def test_short_history_fits_with_default_weights_and_no_reranker(small_shop) -> None:
    from models.recommenders import DEFAULT_WEIGHTS
    from training.rec_eval import fit_production
    cutoff = small_shop.orders["ts"].min() + pd.Timedelta(days=40)  # less history than the 56-day tuning window
    m = fit_production(small_shop, cutoff, RecommenderConfig(factors=8, als_iterations=3, seed=7))
    assert m.weights_ == dict(DEFAULT_WEIGHTS) and m.reranker_ is None
    assert len(m.recommend(list(m._require().users.ids[:5]), 3, exclude_bought=True)) > 0


def test_the_three_ndcg_computations_agree(fitted, data, small_shop) -> None:
    """Blend tuning, the evaluation report and the re-ranker's holdout gate each compute NDCG@10 their own way
    (numpy over the score matrix, frames of recommendations, candidate groups); on one ranking they agree."""
    import copy

    from models.rerank import ndcg_by_group
    truth = {u: s for u, s in purchase_truth(small_shop, CUTOFF).items() if u in data.users}
    blend = fitted["production"]
    recs = blend.recommend(list(truth), 10)
    report = ranking_report(recs, truth)["ndcg@10"]
    probe = copy.deepcopy(blend).tune(truth, grid=[tuple(blend.weights_.items())])
    assert len(probe.tuning_) == 1 and probe.weights_ == blend.weights_
    assert probe.tuning_[0]["ndcg@10"] == pytest.approx(report, abs=1e-12)
    # the re-ranker's gate, given each customer's whole ranked list as its candidates (shuffled rows: it sorts)
    full = blend.recommend(list(truth), 200).sample(frac=1.0, random_state=1).sort_values("customer_id", kind="stable")
    users = full["customer_id"].drop_duplicates().tolist()
    groups = full.groupby("customer_id", sort=False).size().loc[users].to_numpy()
    y = np.array([p in truth[c] for c, p in zip(full["customer_id"], full["product_id"], strict=True)], float)
    n_rel = np.array([len(truth[u]) for u in users])
    gate = ndcg_by_group(full["score"].to_numpy(float), y, groups, n_rel) * len(users) / len(truth)
    assert gate == pytest.approx(report, abs=1e-12)
    assert 0.05 < report < 1.0  # a real ranking, not an all-zero agreement
