"""Matrix factorisation recommenders, wrapping implicit's ALS and BPR (their row numbers stay inside).

implicit warns unless BLAS is single-threaded: :mod:`models.recsys` sets ``OPENBLAS_NUM_THREADS=1`` unless
the environment says otherwise.

Example
-------
>>> als = ALSRecommender(RecommenderConfig(factors=32, seed=1)).fit(data)    # doctest: +SKIP
>>> als.recommend(["C0000001"], k=5)                                        # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from features.exceptions import ModelFitError
from features.interactions import InteractionData
from models.cores import free_threads
from models.recsys.base import Recommender
from models.recsys.context import UserContext

ALS_PARALLEL_USERS = 50_000
"""ALS fits on more customers than this use every core: each customer's (and each product's) least-squares
solve is independent of the others', so the factors are the same as on one thread (tested), in less wall
time (measured alone on 2 cores, one fit of production's settings: 869,635 customers 247 -> 146 s, 86,941
customers 13.2 -> 9.0 s). Smaller fits (the 20,000-customer shop, the tests, which run in parallel workers)
stay on one thread."""


def als_threads(n_users: int) -> int:
    """implicit's ``num_threads`` for an ALS fit on ``n_users`` customers: every free core
    (:func:`models.cores.free_threads`) past :data:`ALS_PARALLEL_USERS`, else one."""
    return free_threads(0) if n_users > ALS_PARALLEL_USERS else 1


class ALSRecommender(Recommender):
    """implicit's ALS on BM25-weighted interactions; live sessions are folded in with recalculate_user."""

    name = "als"

    def _fit(self, data: InteractionData) -> None:
        from implicit.als import AlternatingLeastSquares
        from implicit.nearest_neighbours import bm25_weight
        c = self.config
        X = bm25_weight(data.weights, K1=c.bm25_k1, B=c.bm25_b).tocsr().astype(np.float32)
        self.model_ = AlternatingLeastSquares(factors=c.factors, regularization=c.als_regularization,
                                              iterations=c.als_iterations, random_state=c.seed,
                                              num_threads=als_threads(X.shape[0]))
        self.model_.fit(X, show_progress=False)
        self.model_.num_threads = 1  # a live session's one-customer solve gains nothing from threads
        uf, itf = np.asarray(self.model_.user_factors), np.asarray(self.model_.item_factors)
        if not (np.isfinite(uf).all() and np.isfinite(itf).all()):
            raise ModelFitError("ALS: NaN encountered in factors; lower the learning settings or check "
                                "weights")
        self.idf_scale_ = float(X.data.mean() / max(data.weights.data.mean(), 1e-9))

    def _user_vectors(self, ctx: UserContext) -> np.ndarray:
        uf = np.asarray(self.model_.user_factors)
        vec = np.zeros((len(ctx.rows), uf.shape[1]), dtype=np.float32)
        stored = (ctx.rows >= 0) & ~ctx.has_session
        vec[stored] = uf[ctx.rows[stored]]
        for i in np.flatnonzero(ctx.has_session):
            row = sp.csr_matrix(ctx.W[i] * self.idf_scale_, dtype=np.float32)
            vec[i] = np.asarray(self.model_.recalculate_user(0, row)).ravel()
        return vec

    def _score(self, ctx: UserContext) -> np.ndarray:
        return self._user_vectors(ctx) @ np.asarray(self.model_.item_factors).T  # type: ignore[no-any-return]

    def _item_similarity(self) -> Any:
        itf = np.asarray(self.model_.item_factors, dtype=np.float64)
        n = np.linalg.norm(itf, axis=1)
        n[n == 0] = 1
        v = itf / n[:, None]
        return lambda rows: v[rows] @ v.T


class BPRRecommender(Recommender):
    """implicit's Bayesian Personalised Ranking; sessions use the mean of the session items' vectors."""

    name = "bpr"

    def _fit(self, data: InteractionData) -> None:
        from implicit.bpr import BayesianPersonalizedRanking
        c = self.config
        X = data.weights.copy().tocsr().astype(np.float32)
        X.data = np.ones_like(X.data)
        self.model_ = BayesianPersonalizedRanking(factors=c.factors, iterations=c.bpr_iterations,
                                                  learning_rate=c.bpr_learning_rate, random_state=c.seed,
                                                  num_threads=1)
        self.model_.fit(X, show_progress=False)

    def _score(self, ctx: UserContext) -> np.ndarray:
        uf, itf = np.asarray(self.model_.user_factors), np.asarray(self.model_.item_factors)
        vec = np.zeros((len(ctx.rows), uf.shape[1]), dtype=np.float32)
        stored = (ctx.rows >= 0) & ~ctx.has_session
        vec[stored] = uf[ctx.rows[stored]]
        for i in np.flatnonzero(ctx.has_session):
            idx = ctx.W[i].indices
            if len(idx):
                vec[i] = itf[idx].mean(axis=0)
        return vec @ itf.T  # type: ignore[no-any-return]
