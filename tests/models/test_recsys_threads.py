"""Customer batches scored on two threads (``RecommenderConfig.score_threads``) give what one thread gives,
to the last bit: the candidate precompute and blend tuning's weight search."""

from __future__ import annotations

import platform
from dataclasses import replace

import numpy as np
import pytest

import training.blend_tuning as blend_tuning
from models.recsys import BlendRecommender, RecommenderConfig, top_candidates
from models.recsys.threads import in_threads, release_freed_memory
from tests.models.recsys_data import board_reranker, checker_board
from training.blend_tuning import WEIGHT_GRID, tune_weights

CFG = RecommenderConfig(factors=8, als_iterations=3, seed=3,
                        blend_weights=(("buy_again", 1.0), ("item_knn", 1.0), ("als", 0.5), ("ease", 0.5)))


def test_in_threads_keeps_the_order_and_raises_the_first_error() -> None:
    assert in_threads(lambda a: a * 10, range(7), threads=3) == [0, 10, 20, 30, 40, 50, 60]
    assert in_threads(lambda a: a, [], threads=2) == []

    def boom(a: int) -> int:
        if a == 2:
            raise ValueError("batch 2")
        return a
    with pytest.raises(ValueError, match="batch 2"):
        in_threads(boom, range(5), threads=2)


def test_score_threads_is_not_a_training_parameter() -> None:
    assert "rec.score_threads" not in RecommenderConfig().to_params()
    assert RecommenderConfig(score_threads=1).to_params() == RecommenderConfig().to_params()


def _blend(threads: int) -> BlendRecommender:
    data = checker_board()
    data.weights.data *= np.random.default_rng(0).uniform(0.2, 5.0, data.weights.nnz)
    m = BlendRecommender(replace(CFG, score_threads=threads)).fit(data)
    return m.attach_reranker(board_reranker(m, seed=3))


def test_candidates_on_two_threads_equal_one_thread() -> None:
    one, two = _blend(1), _blend(2)
    a, b = top_candidates(one, n=10, batch=7), top_candidates(two, n=10, batch=7)  # 8 batches
    for x, y in ((a.items, b.items), (a.scores, b.scores), (a.reason, b.reason)):
        assert x.tobytes() == y.tobytes()
    assert (a.items[:, 0] >= 0).all()


def test_weight_search_on_two_threads_equals_one_thread(monkeypatch) -> None:
    monkeypatch.setattr(blend_tuning, "TRIAL_BATCH", 9)  # the board's 50 customers in 6 batches
    tuned = []
    for threads in (1, 2):
        m = BlendRecommender(replace(CFG, blend_weights=None, score_threads=threads)).fit(_blend(1).data)
        truth = {u: {f"p{j:02d}" for j in np.random.default_rng(2).choice(50, 3, replace=False)}
                 for u in m.data.users.ids}
        tuned.append(tune_weights(m, truth, grid=WEIGHT_GRID))
    assert tuned[0].trials == tuned[1].trials
    assert len({t["ndcg@10"] for t in tuned[0].trials}) > 1



def test_freed_memory_is_handed_back_on_glibc() -> None:
    """On glibc (this machine, CI) the threads' freed memory can be handed back; the effect on the 100k job
    (about 200 MB less resident after the threaded stages) is in bench/SCALE.md, "Branch speed19"."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")
    assert release_freed_memory() is True
