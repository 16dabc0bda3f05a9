"""Blend tuning's weight search scores many weightings at once (training.blend_tuning._Judge): the same
per-customer NDCG@k as ranking each weighting's blend on its own, to the last bit."""

from __future__ import annotations

import numpy as np
import pytest

from models.recsys import DISCOVERY_RULES, BlendRecommender, BusinessRules, RecommenderConfig
from models.recsys.blend import blended, normalise
from tests.models.recsys_data import checker_board
from training.blend_tuning import TIFU_WEIGHT_GRID, WEIGHT_GRID, _Judge

WEIGHTINGS = [dict(w) for w in (*WEIGHT_GRID, *TIFU_WEIGHT_GRID)] + [
    {"als": 0.5, "item_knn": 1.0},            # a prefix of nothing above (another order of terms)
    {"buy_again": 1.0, "item_knn": 1.0},      # a prefix of a longer weighting
    {"buy_again": 1.0, "item_knn": 1.0, "als": 0.5, "ease": 0.5, "popularity": 0.1},
    {"buy_again": 1.0, "item_knn": 1.0},      # the same twice
    {"als": 0.0, "ease": 0.0},                # no term: all zeros
    {"tifu": 2.0},                            # a component the blend has not fitted: no term either
    {"als": 1.0, "popularity": -0.5},         # a negative weight: scored on its own
]


@pytest.mark.parametrize("rules", [BusinessRules(), DISCOVERY_RULES], ids=["all items", "discovery"])
def test_many_weightings_at_once_give_each_ones_own_ndcg_exactly(rules: BusinessRules) -> None:
    data = checker_board()
    data.item_ok[::7] = False  # out of stock: not shown under either rules
    rng = np.random.default_rng(0)
    data.weights.data *= rng.uniform(0.2, 5.0, data.weights.nnz)  # uneven tastes: the components disagree
    model = BlendRecommender(RecommenderConfig(factors=8, als_iterations=3, seed=3)).fit(data)
    assert "tifu" not in model.components_ and {"als", "ease", "popularity"} <= set(model.components_)
    truth = {u: {f"p{j:02d}" for j in rng.choice(50, size=rng.integers(1, 6), replace=False)}
             for u in data.users.ids[::2]}
    judge = _Judge(data, truth, 10, rules)
    assert (~judge.allowed).any()  # the rules forbid something: the mask matters
    comps = model.component_scores(judge.ctx)
    alone = np.array([judge.per_customer(blended(comps, w)) for w in WEIGHTINGS])
    for threads in (1, 2, 3):
        together = judge.per_customer_blends(model.component_scores(judge.ctx, threads=threads), WEIGHTINGS,
                                             threads)
        assert together.shape == (len(WEIGHTINGS), len(judge.users))
        assert together.tobytes() == alone.tobytes()
    assert len({tuple(r) for r in alone.round(12).tolist()}) > 5  # the weightings do rank differently


def test_normalise_of_finite_scores_equals_the_general_path() -> None:
    """All-finite scores take a shorter path; a -inf column (which changes no row's range) forces the
    general one: the other columns are the same to the last bit."""
    s = np.random.default_rng(1).normal(size=(40, 30)) * 100
    s[3] = 7.0  # a constant row: no range
    general = normalise(np.c_[s, np.full(len(s), -np.inf)])
    assert general[:, -1].tolist() == [0.0] * len(s)
    assert normalise(s).tobytes() == np.ascontiguousarray(general[:, :-1]).tobytes()
