"""Every recommender on the small simulated shop: rules on real catalogue data, ranking properties, quality,
cold start, fold-in, reasons, discovery weights and the re-ranker. (The contract on tiny known-answer data
is :mod:`tests.models.test_recommender_contract`.)"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.exceptions import NotFittedError
from features.schema import CUSTOMER_ID, PRODUCT_ID, RANK, SCORE
from models.metrics import ranking_report
from models.recsys import (
    FEATURES,
    MODELS,
    BlendRecommender,
    BusinessRules,
    RecommendationEngine,
    TrendingRecommender,
    build_baskets,
    build_context,
    rules_mask,
)
from tests.models.recsys_data import CFG, CUTOFF, shop_data, shop_reranker
from training.rec_truth import purchase_truth

pytestmark = pytest.mark.slow  # fits every model on a simulated shop; the fast tier has the checker board

NAMES = [*MODELS, "reranked"]
"""Every recommender, and the production blend with a discovery re-ranker attached."""
STRICT = BusinessRules(exclude_bought=True, allow_replenishable=False)


@pytest.fixture(scope="module")
def data(small_shop):
    return shop_data(small_shop)


def build(name: str, data, shop):
    if name == "reranked":
        return BlendRecommender(CFG).fit(data).attach_reranker(shop_reranker(shop))
    if MODELS[name].needs_baskets:
        return MODELS[name](CFG).fit(data, baskets=build_baskets(shop, data))  # type: ignore[call-arg]
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
        assert list(recs.columns) == [CUSTOMER_ID, PRODUCT_ID, SCORE, RANK]
        assert recs.groupby(CUSTOMER_ID).size().max() <= 7
        assert set(recs[CUSTOMER_ID]) <= set(users)
        assert set(recs[PRODUCT_ID]) <= set(data.items.ids)
        assert recs[PRODUCT_ID].map(type).eq(str).all()

    def test_rules_are_respected(self, name, fitted, users, data, small_shop) -> None:
        rules = BusinessRules(allow_replenishable=False, exclude_categories=("toys",))
        recs = fitted[name].recommend(users, k=20, exclude_bought=True, rules=rules)
        prod = small_shop.products.set_index(PRODUCT_ID)
        assert prod.loc[recs[PRODUCT_ID], "in_stock"].all()
        assert not (prod.loc[recs[PRODUCT_ID], "category"] == "toys").any()
        for cid, g in recs.groupby(CUSTOMER_ID):
            r = data.users.rows([cid])[0]
            bought = set(data.items.ids[data.purchases[r].indices])
            returned = set(data.items.ids[data.returned[r].indices])
            assert not (set(g[PRODUCT_ID]) & (bought | returned))

    def test_only_category_allow_list(self, name, fitted, users, small_shop) -> None:
        recs = fitted[name].recommend(users, k=5, rules=BusinessRules(categories=("grocery",)))
        cats = small_shop.products.set_index(PRODUCT_ID).loc[recs[PRODUCT_ID], "category"]
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
@given(k=st.integers(1, 40), n=st.integers(1, 30), exclude=st.booleans(),
       name=st.sampled_from(["production", "reranked", "als", "item_knn", "buy_again"]))
def test_ranking_invariants(fitted, users, k, n, name, exclude) -> None:
    recs = fitted[name].recommend(users[:n], k=k, exclude_bought=exclude)
    for _, g in recs.groupby(CUSTOMER_ID):
        assert len(g) <= k
        assert g[PRODUCT_ID].is_unique
        assert list(g[RANK]) == list(range(1, len(g) + 1))
        assert (np.diff(g[SCORE].to_numpy()) <= 1e-12).all()


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
    cat = small_shop.products.set_index(PRODUCT_ID)["category"]

    def share(recs: pd.DataFrame) -> float:
        planted = truth.loc[recs[CUSTOMER_ID], "top_category"].to_numpy()
        return float((recs[PRODUCT_ID].map(cat).to_numpy() == planted).mean())
    recs = fitted["production"].recommend(users, k=10, exclude_bought=True)
    pop = fitted["popularity"].recommend(users, k=10, exclude_bought=True)
    assert share(recs) > 2 * share(pop)


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
    assert [i[PRODUCT_ID] for i in rec.items] == allowed
    assert engine.recommend_one("never-seen", k=3).items[0]["reason"] == "trending now"


def test_live_session_fold_in_moves_recommendations(engine, data, small_shop) -> None:
    prods = small_shop.products.set_index(PRODUCT_ID)
    pets = prods.index[(prods["category"] == "pet") & prods["in_stock"]][:3].tolist()
    session = [(p, "view") for p in pets] + [(pets[0], "add_to_cart")]
    rec = engine.recommend_one("brand-new", k=10, session=session)
    assert rec.source == "model"
    cats = prods.loc[[i[PRODUCT_ID] for i in rec.items], "category"]
    assert (cats == "pet").mean() >= 0.5
    assert any(i["reason"].startswith("because you viewed") for i in rec.items)
    # an existing customer: session events change the list
    cid = data.users.ids[0]
    base = [i[PRODUCT_ID] for i in engine.recommend_one(cid, k=10).items]
    moved = engine.recommend_one(cid, k=10, session=[(p, "add_to_cart") for p in pets])
    live = [i[PRODUCT_ID] for i in moved.items]
    assert base != live


def test_explanations(engine, data) -> None:
    counts = np.asarray(data.purchases.sum(axis=1)).ravel()
    cid = data.users.ids[int(np.argmax(counts))]
    rec = engine.recommend_one(cid, k=10)
    reasons = {i["reason"] for i in rec.items}
    assert reasons & {"you buy this regularly", "buy it again"}
    for i in rec.items:
        if i["reason"].startswith("because you"):
            assert i[PRODUCT_ID] not in i["reason"]


def test_similar_items_excludes_itself_and_unknown_falls_back(engine, data) -> None:
    pid = data.items.ids[int(np.argmax(np.asarray(data.purchases.sum(axis=0)).ravel()))]
    src, items = engine.similar_items(pid, 5)
    assert src == "model" and len(items) == 5 and pid not in [i[PRODUCT_ID] for i in items]
    src, items = engine.similar_items("no-such-product", 5)
    assert src == "fallback" and len(items) == 5


def test_discovery_weights_rank_requests_that_exclude_bought_products(data, users) -> None:
    disc = (("buy_again", 1.0), ("item_knn", 0.0), ("als", 0.0), ("ease", 1.0), ("popularity", 0.0))
    m = BlendRecommender(replace(CFG, discovery_weights=disc)).fit(data)
    assert "ease" in m.components_  # fitted because discovery uses it
    ctx = build_context(data, users)
    ease = m.components_["ease"].score(ctx)
    got = m.recommend(users, k=5, rules=STRICT)
    # discovery requests are ranked by the discovery blend (here EASE alone), the default ones are not
    mask = rules_mask(data, ctx, STRICT)
    top_ease = {(u, data.items.ids[j]) for i, u in enumerate(users)
                for j in np.argsort(-np.where(mask[i], ease[i], -np.inf), kind="stable")[:5] if mask[i, j]}
    assert len({(r.customer_id, r.product_id) for r in got.itertuples()} & top_ease) >= 0.9 * len(got)
    assert not m.recommend(users, k=5).equals(m.recommend(users, k=5, exclude_bought=True))
    # the engine answers discovery requests like the model
    engine = RecommendationEngine(m, TrendingRecommender(CFG).fit(data))
    for cid, g in got.groupby(CUSTOMER_ID, sort=False):
        assert [i[PRODUCT_ID] for i in engine.recommend_one(cid, 5, STRICT).items] == list(g[PRODUCT_ID])


def test_reranker_orders_the_blends_discovery_candidates_only(fitted, data, users) -> None:
    blend, rr = fitted["production"], fitted["reranked"]
    # default requests are the blend's, untouched
    pd.testing.assert_frame_equal(blend.recommend(users, k=10), rr.recommend(users, k=10))
    # discovery requests: the re-ranker's order of the blend's top candidates, and not the blend's order
    n = CFG.rerank_candidates
    got = rr.recommend(users, k=10, rules=STRICT)
    cand = blend.recommend(users, k=n, rules=STRICT)
    assert set(zip(got[CUSTOMER_ID], got[PRODUCT_ID], strict=True)) <= \
        set(zip(cand[CUSTOMER_ID], cand[PRODUCT_ID], strict=True))
    mine = blend.recommend(users, k=10, rules=STRICT)
    assert not got[[CUSTOMER_ID, PRODUCT_ID]].equals(mine[[CUSTOMER_ID, PRODUCT_ID]])
    # a discovery list holds at most the candidates
    assert rr.recommend(users[:3], k=n + 20, rules=STRICT).groupby(CUSTOMER_ID).size().max() <= n
    assert rr.reranker_ is not None and set(rr.reranker_.importance()) == set(FEATURES)


def test_engine_serves_reranked_discovery_like_the_model(fitted, data, users) -> None:
    rr = fitted["reranked"]
    engine = RecommendationEngine(rr, TrendingRecommender(CFG).fit(data))
    strict = BusinessRules(exclude_bought=True)
    want = rr.recommend(users[:10], k=8, rules=strict)
    for cid, g in want.groupby(CUSTOMER_ID, sort=False):
        got = engine.recommend_one(cid, 8, strict)
        assert got.source == "model"
        assert [i[PRODUCT_ID] for i in got.items] == list(g[PRODUCT_ID])
        assert all(i["reason"] for i in got.items)
    # a live session on a discovery request is re-ranked too: the session's product is excluded as bought
    pid = want[PRODUCT_ID].iloc[0]
    cid = want[CUSTOMER_ID].iloc[0]
    after = engine.recommend_one(cid, 8, strict, session=[(pid, "purchase")])
    assert pid not in [i[PRODUCT_ID] for i in after.items]


def test_reason_similarities_read_from_csr_equal_scipys_indexing() -> None:
    """The reasons' similarity block (read from the CSR arrays for speed) is scipy's ``sim[rows][:, cols]``,
    on random canonical matrices and on one with duplicate entries (which scipy sums)."""
    import scipy.sparse as sp

    from models.recsys.reasons import _similarities

    rng = np.random.default_rng(0)
    for trial in range(100):
        m = int(rng.integers(5, 200))
        sim = sp.random(m, m, density=float(rng.uniform(0.005, 0.3)), format="csr", dtype=np.float32,
                        random_state=int(rng.integers(1 << 30)))
        rows = rng.choice(m, size=int(rng.integers(1, min(m, 20) + 1)), replace=False)
        cols = rng.choice(m, size=int(rng.integers(1, min(m, 15) + 1)), replace=False)
        got, want = _similarities(sim, rows, cols), sim[rows][:, cols].toarray()
        assert got.dtype == want.dtype and np.array_equal(got, want), trial
    dup = sp.csr_matrix((np.array([1.0, 2.0, 5.0]), np.array([1, 1, 0]), np.array([0, 2, 3])), shape=(2, 2))
    assert not dup.has_canonical_format
    assert np.array_equal(_similarities(dup, np.array([0, 1]), np.array([1, 0])), [[3.0, 0.0], [0.0, 5.0]])


def test_precomputed_candidates_equal_every_component_scored_with_the_sparse_similarities(
        data, small_shop, monkeypatch) -> None:
    """The precompute scores only the weighed components and reads the reasons' similarities from a dense
    copy: the same items, scores and reasons as scoring every fitted component with the sparse matrix,
    with a blend that has fitted components of zero weight (TIFU-KNN, EASE, item-to-item)."""
    from models.recsys import candidates as cand_mod
    from models.recsys import reasons

    baskets = build_baskets(small_shop, data)
    blend = BlendRecommender(replace(CFG, blend_weights=None)).fit(data, baskets=baskets)
    blend.use_weights({"buy_again": 1.0, "item_knn": 0.0, "als": 0.5, "ease": 0.0, "popularity": 0.1,
                       "tifu": 0.0, "rising": 0.2})
    assert {"tifu", "ease", "item_knn", "rising"} <= set(blend.components_)
    assert reasons.dense_similarity(blend) is not None
    got = cand_mod.top_candidates(blend, n=15, batch=37)
    every = BlendRecommender.component_scores
    monkeypatch.setattr(BlendRecommender, "component_scores", lambda self, ctx, names=None: every(self, ctx))
    monkeypatch.setattr(reasons, "DENSE_SIMILARITY_ITEMS", 0)
    assert reasons.dense_similarity(blend) is None
    want = cand_mod.top_candidates(blend, n=15, batch=37)
    assert (want.reason >= 4).any() and (want.items >= 0).all()  # "because you ..." reasons are compared too
    for a, b in ((got.items, want.items), (got.scores, want.scores), (got.reason, want.reason)):
        np.testing.assert_array_equal(a, b)


def test_als_factors_do_not_depend_on_the_threads_of_the_fit(data, monkeypatch) -> None:
    """Fits past ``ALS_PARALLEL_USERS`` customers use every core: the same factors as one thread, and the
    fitted model solves live sessions on one thread."""
    from models.recsys import factors

    one = factors.ALSRecommender(CFG).fit(data)
    monkeypatch.setattr(factors, "ALS_PARALLEL_USERS", 10)
    from models.cores import cores
    assert factors.als_threads(len(data.users)) == cores()  # every core the process may use
    every = factors.ALSRecommender(CFG).fit(data)
    assert every.model_.num_threads == 1
    np.testing.assert_array_equal(np.asarray(one.model_.user_factors), np.asarray(every.model_.user_factors))
    np.testing.assert_array_equal(np.asarray(one.model_.item_factors), np.asarray(every.model_.item_factors))
