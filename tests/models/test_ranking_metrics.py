"""The one top-k and the one NDCG (models.metrics), on hand-computed answers and hypothesis properties."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from features.schema import CUSTOMER_ID, PRODUCT_ID, RANK
from models.metrics import ndcg, ranking_report, top_k


def test_top_k_known_answers() -> None:
    assert top_k(np.array([0.5, 2.0, 0.5, 1.0]), 3).tolist() == [1, 3, 0]
    assert top_k(np.array([[1.0, 3.0, 2.0], [0.0, -np.inf, 1.0]]), 2).tolist() == [[1, 2], [2, 0]]
    assert top_k(np.array([3.0, -np.inf, 1.0]), 10).tolist() == [0, 2, 1]  # k past the end; -inf last
    assert top_k(np.zeros((2, 4)), 0).shape == (2, 0)


@settings(max_examples=200, deadline=None)
@given(scores=arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 30)),
                     elements=st.sampled_from([0.0, 0.5, 1.0, 2.0, -np.inf])),
       k=st.integers(1, 35))
def test_top_k_holds_the_best_scores_best_first(scores: np.ndarray, k: int) -> None:
    top = top_k(scores, k)
    assert top.shape == (len(scores), min(k, scores.shape[1]))
    for row, t in zip(scores, top, strict=True):
        got = row[t]
        assert len(set(t.tolist())) == len(t)
        assert np.array_equal(got, np.sort(row)[::-1][:len(t)])  # the k best scores, best first
        same = got[1:] == got[:-1]
        assert (np.diff(t)[same] > 0).all()  # equal scores in column order
        assert np.array_equal(top_k(row, k), t)  # one row alone ranks as in a matrix
    assert np.array_equal(top_k(-scores, k, lowest=True), top)  # negated scores, lowest first: the same


def test_ndcg_known_answers() -> None:
    d = 1 / np.log2(np.arange(2, 5))
    got = ndcg(np.array([[0, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0]]), np.array([1, 2, 5, 3]), k=3)
    want = [d[1] / d[0], d[0] / (d[0] + d[1]), 1.0, 0.0]  # n_relevant past k counts as k
    assert got == pytest.approx(want, abs=1e-15)
    assert ndcg(np.array([[0, 0, 1]]), np.array([1]), k=2)[0] == 0.0  # positions past k are ignored


def test_ranking_report_counts_customers_without_recommendations_as_zero() -> None:
    recs = pd.DataFrame({CUSTOMER_ID: ["a", "a", "a", "b", "x"], PRODUCT_ID: ["p1", "p2", "p3", "p9", "p1"],
                         RANK: [1, 2, 3, 1, 1]})
    truth = {"a": {"p2", "p7"}, "b": {"p9"}, "c": {"p1"}}  # c got nothing; x is not judged
    r = ranking_report(recs, truth, k=3)
    d = 1 / np.log2(np.arange(2, 5))
    assert r["ndcg@3"] == pytest.approx((d[1] / (d[0] + d[1]) + 1.0 + 0.0) / 3, abs=1e-15)
    assert r["hit_rate@3"] == pytest.approx(2 / 3) and r["users"] == 3
    assert r["recall@3"] == pytest.approx((0.5 + 1.0) / 3) and r["precision@3"] == pytest.approx(2 / 3 / 3)


def test_rounded_scores_are_numpys_round_to_six_decimals() -> None:
    """``round_scores`` gives ``np.round(s, 6)`` bit for bit: random scores of every size, values halfway
    between two 6-decimal numbers (round half to even), negative ones, the -inf of banned columns."""
    import numpy as np

    from models.recsys.base import round_scores

    rng = np.random.default_rng(5)
    halves = (np.arange(-2000, 2000) + 0.5) / 1e6
    s = np.concatenate([rng.random(20000), rng.normal(0, 50, 20000), rng.random(2000) * 1e-5, halves,
                        [0.0, -0.0, 1.0, -np.inf, np.inf, 0.1234565, 2.5e-6]])
    want = np.round(s, 6)
    got = np.array(round_scores(s))
    assert np.array_equal(got.view(np.int64), want.view(np.int64))  # the same bits, signs of zeros included
    m = s[:40000].reshape(200, 200)  # a batch of rows, as the candidate lists are rounded
    assert np.array_equal(np.array(round_scores(m)), np.round(m, 6))
