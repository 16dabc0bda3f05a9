"""The contract every recommender keeps, on a checker board with a known answer (fast: no shop, no training).

The board (:func:`tests.models.recsys_data.checker_board`): 50 customers and 50 products, even customers
bought every even product and odd customers every odd one, except the diagonal: customer ``i`` never bought
product ``i``. Everyone like customer ``i`` bought it, so a model of taste recommends it first.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.exceptions import NotFittedError
from features.interactions import InteractionData
from features.schema import CUSTOMER_ID, PRODUCT_ID, RANK, SCORE, SIMILAR_PRODUCT_ID
from models.recsys import (
    DEFAULT_WEIGHTS,
    DISCOVERY_RULES,
    MODELS,
    BlendRecommender,
    BusinessRules,
    Recommender,
    RecommenderConfig,
)
from tests.models.recsys_data import N, board_baskets, board_reranker, checker_board

CFG = RecommenderConfig(factors=8, seed=3, blend_weights=DEFAULT_WEIGHTS, rerank_candidates=30)
NAMES = [*MODELS, "reranked"]
"""Every recommender, and the production blend with a discovery re-ranker attached."""
TASTE = {"als", "bpr", "item_knn", "ease", "production", "reranked"}
"""The models of taste: they recommend the withheld product first (popularity, trending and buy-again
cannot: every product is as popular, and buy-again knows bought products only)."""


def build(name: str, data: InteractionData) -> Recommender:
    if name != "reranked" and MODELS[name].needs_baskets:  # TIFU-KNN: one basket per customer
        return MODELS[name](CFG).fit(data, baskets=board_baskets(data))  # type: ignore[call-arg]
    if name != "reranked":
        return MODELS[name](CFG).fit(data)
    blend = BlendRecommender(CFG).fit(data)
    return blend.attach_reranker(board_reranker(blend, CFG.seed))


@pytest.fixture(scope="module")
def board() -> InteractionData:
    return checker_board()


@pytest.fixture(scope="module")
def fitted(board: InteractionData) -> dict[str, Recommender]:
    return {name: build(name, board) for name in NAMES}


def bought_by(data: InteractionData, cid: str) -> set[str]:
    return set(data.items.ids[data.purchases[data.users.row(cid)].indices])


@pytest.mark.parametrize("name", NAMES)
class TestEveryRecommender:
    def test_k_respected_in_the_callers_ids(self, name: str, fitted, board) -> None:
        for k in (1, 7, 200):
            recs = fitted[name].recommend(board.users.ids, k=k)
            assert list(recs.columns) == [CUSTOMER_ID, PRODUCT_ID, SCORE, RANK]
            assert len(recs) and recs.groupby(CUSTOMER_ID).size().max() <= k
            assert set(recs[CUSTOMER_ID]) <= set(board.users.ids)
            assert set(recs[PRODUCT_ID]) <= set(board.items.ids)

    def test_no_bought_products_unless_asked(self, name: str, fitted, board) -> None:
        recs = fitted[name].recommend(board.users.ids, k=10, exclude_bought=True)
        for cid, g in recs.groupby(CUSTOMER_ID):
            assert not set(g[PRODUCT_ID]) & bought_by(board, cid)
        if name in ("buy_again", "popularity", "production"):  # asked: bought products come back
            asked = fitted[name].recommend(board.users.ids, k=10)
            assert any(set(g[PRODUCT_ID]) & bought_by(board, cid) for cid, g in asked.groupby(CUSTOMER_ID))

    def test_similar_items_share_parity_and_exclude_themselves(self, name: str, fitted, board) -> None:
        sim = fitted[name].similar_items(board.items.ids, k=10)
        assert len(sim) == N * 10
        assert (sim[PRODUCT_ID] != sim[SIMILAR_PRODUCT_ID]).all()
        parity = sim[PRODUCT_ID].str[1:].astype(int) % 2 == sim[SIMILAR_PRODUCT_ID].str[1:].astype(int) % 2
        assert parity.all()

    def test_save_load_gives_identical_output(self, name: str, fitted, board, tmp_path: Path) -> None:
        p = tmp_path / f"{name}.pkl"
        fitted[name].save(p)
        again = Recommender.load(p)
        for rules in (BusinessRules(), DISCOVERY_RULES):
            pd.testing.assert_frame_equal(fitted[name].recommend(board.users.ids, k=5, rules=rules),
                                          again.recommend(board.users.ids, k=5, rules=rules))

    def test_same_seed_same_result(self, name: str, fitted, board) -> None:
        other = build(name, board)
        for rules in (BusinessRules(), DISCOVERY_RULES):
            pd.testing.assert_frame_equal(fitted[name].recommend(board.users.ids, k=5, rules=rules),
                                          other.recommend(board.users.ids, k=5, rules=rules))

    def test_not_fitted_error_says_what_to_do(self, name: str) -> None:
        with pytest.raises(NotFittedError, match="call fit"):
            MODELS.get(name, BlendRecommender)(CFG).recommend(["u00"], k=3)

    def test_unknown_customers_get_no_rows(self, name: str, fitted) -> None:
        assert len(fitted[name].recommend(["nobody-1", "nobody-2"], k=5)) == 0


@pytest.mark.parametrize("name", sorted(TASTE | {"tifu_knn"}))  # TIFU-KNN folds in no live session
def test_the_withheld_product_comes_first(name: str, fitted, board) -> None:
    recs = fitted[name].recommend(board.users.ids, k=1, rules=DISCOVERY_RULES)
    assert len(recs) == N
    assert (recs[PRODUCT_ID].str[1:] == recs[CUSTOMER_ID].str[1:]).all()


@pytest.mark.parametrize("name", sorted(TASTE))
def test_a_new_customers_session_is_folded_in(name: str, fitted) -> None:
    session = {"new": [("p02", "view"), ("p04", "add_to_cart"), ("p06", "view")]}
    recs = fitted[name].recommend(["new"], k=5, session=session)
    assert len(recs) == 5 and (recs[PRODUCT_ID].str[1:].astype(int) % 2 == 0).all()

def test_bad_k_and_foreign_components_are_refused(fitted, board) -> None:
    with pytest.raises(ValueError, match="k must be >= 1"):
        fitted["als"].recommend(["u00"], k=0)
    with pytest.raises(ValueError, match="not a blend component"):
        BlendRecommender(CFG).fit(board, components={"bpr": fitted["bpr"]})
    with pytest.raises(ValueError, match="other data or with other settings"):
        BlendRecommender(replace(CFG, factors=4)).fit(board, components={"als": fitted["als"]})


def test_given_components_are_used_as_they_are(fitted, board) -> None:
    als = fitted["als"]
    blend = BlendRecommender(CFG).fit(board, components={"als": als})
    assert blend.components_["als"] is als
    pd.testing.assert_frame_equal(blend.recommend(board.users.ids, k=5), fitted["production"].recommend(
        board.users.ids, k=5))


rules_strategy = st.builds(
    BusinessRules, exclude_bought=st.booleans(), allow_replenishable=st.booleans(),
    categories=st.one_of(st.none(), st.sets(st.sampled_from("abc"), min_size=1).map(tuple)),
    exclude_categories=st.sets(st.sampled_from("abc"), max_size=2).map(tuple))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(NAMES), k=st.integers(1, 60), n=st.integers(1, N), rules=rules_strategy)
def test_ranking_invariants(fitted, board, name: str, k: int, n: int, rules: BusinessRules) -> None:
    """Whatever the model, k and rules: at most k unique allowed products per customer, ranked 1..n by
    non-increasing finite scores."""
    recs = fitted[name].recommend(board.users.ids[:n], k=k, rules=rules)
    cust, prod = recs[CUSTOMER_ID].to_numpy(), recs[PRODUCT_ID].to_numpy()
    assert (recs.groupby(CUSTOMER_ID).size() <= k).all()
    assert not recs.duplicated([CUSTOMER_ID, PRODUCT_ID]).any()
    assert (recs[RANK] == recs.groupby(CUSTOMER_ID).cumcount() + 1).all()
    same = cust[1:] == cust[:-1]  # each customer's rows are together, best first
    scores = recs[SCORE].to_numpy(float)
    assert np.isfinite(scores).all() and (np.diff(scores)[same] <= 0).all()
    cats = board.item_category[board.items.rows(prod)]
    if rules.categories is not None:
        assert np.isin(cats, rules.categories).all()
    assert not np.isin(cats, rules.exclude_categories).any()
    if rules.exclude_bought:
        assert not board.purchases.toarray()[board.users.rows(cust), board.items.rows(prod)].any()
