"""EASE's scores: with every product modelled they are the sparse product itself (no -inf columns to fill),
the same numbers as placing that product into a -inf matrix (which a capped catalogue still does)."""

from __future__ import annotations

import numpy as np

from models.recsys import EASERecommender, RecommenderConfig, build_context
from tests.models.recsys_data import checker_board


def _placed(model: EASERecommender, ctx, m: int) -> np.ndarray:
    """The general computation: the modelled columns' product placed into a -inf matrix."""
    Wk = ctx.W.tocsr()[:, model.keep_]
    Wk.data = (Wk.data > 0).astype(np.float32)
    out = np.full((len(ctx.rows), m), -np.inf)
    out[:, model.keep_] = np.asarray(Wk @ model.B_, dtype=np.float64)
    return out


def test_ease_scores_with_every_item_and_with_a_capped_catalogue() -> None:
    data = checker_board()
    data.weights.data *= np.random.default_rng(0).uniform(0.2, 5.0, data.weights.nnz)
    ctx = build_context(data, list(data.users.ids[:9]))
    m = len(data.items)
    full = EASERecommender(RecommenderConfig()).fit(data)
    assert len(full.keep_) == m
    assert full.score(ctx).tobytes() == _placed(full, ctx, m).tobytes()
    capped = EASERecommender(RecommenderConfig(ease_max_items=10)).fit(data)
    s = capped.score(ctx)
    assert len(capped.keep_) == 10 and np.isneginf(s).sum() == 9 * (m - 10)
    assert s.tobytes() == _placed(capped, ctx, m).tobytes()
