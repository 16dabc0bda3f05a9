"""Item-to-item recommenders: BM25 item-kNN (implicit) and EASE (a closed-form linear item model).

Example
-------
>>> ItemKNNRecommender().fit(data).similar_items(["P001"], k=5)    # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp

from features.exceptions import ModelFitError
from features.interactions import InteractionData
from models.recsys.base import NEG, Recommender
from models.recsys.context import UserContext


class ItemKNNRecommender(Recommender):
    """Item-to-item nearest neighbours with BM25 weighting (implicit's BM25Recommender)."""

    name = "item_knn"

    def _fit(self, data: InteractionData) -> None:
        from implicit.nearest_neighbours import BM25Recommender
        c = self.config
        self.model_ = BM25Recommender(K=c.knn_neighbours, K1=c.knn_k1, B=c.knn_b, num_threads=1)
        # implicit converts its own BM25 output (COO) to CSR and warns about it
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Method expects CSR input")
            self.model_.fit(data.weights.tocsr().astype(np.float64), show_progress=False)
        self.sim_ = sp.csr_matrix(self.model_.similarity, dtype=np.float64)

    def _score(self, ctx: UserContext) -> np.ndarray:
        s = (ctx.W @ self.sim_).toarray()
        return np.where(s > 0, s, NEG)

    def _item_similarity(self) -> Any:
        return lambda rows: self.sim_[rows].toarray()


class EASERecommender(Recommender):
    """EASE (Steck, 2019): a closed-form item-to-item linear model on binary interactions,
    ``B = I - P / diag(P)`` with ``P = (X'X + lambda I)^-1`` and a zero diagonal. Session items count
    like stored ones. Only the ``ease_max_items`` most interacted items are modelled."""

    name = "ease"

    def _fit(self, data: InteractionData) -> None:
        X = data.weights.tocsr().astype(np.float32)
        X.data = np.ones_like(X.data)
        cnt = np.asarray(X.sum(axis=0)).ravel()
        keep = np.flatnonzero(cnt > 0)
        if len(keep) > self.config.ease_max_items:
            keep = np.sort(keep[np.argsort(-cnt[keep], kind="stable")[:self.config.ease_max_items]])
        Xk = X[:, keep]
        G = (Xk.T @ Xk).toarray().astype(np.float32)
        G[np.diag_indices_from(G)] += self.config.ease_lambda
        P = _inverse_spd(G)
        B = -P / np.diag(P)
        np.fill_diagonal(B, 0.0)
        self.keep_ = keep.astype(np.int64)
        self.B_ = B.astype(np.float32)

    def _score(self, ctx: UserContext) -> np.ndarray:
        Wk = ctx.W.tocsr()[:, self.keep_]
        Wk.data = (Wk.data > 0).astype(np.float32)
        m = len(self._require().items)
        if len(self.keep_) == m:  # every item modelled (keep_ is sorted): no column to leave at -inf
            return np.asarray(Wk @ self.B_, dtype=np.float64)
        out = np.full((len(ctx.rows), m), NEG)
        out[:, self.keep_] = np.asarray(Wk @ self.B_, dtype=np.float64)
        return out

    def _item_similarity(self) -> Any:
        m = len(self._require().items)
        pos = np.full(m, -1)
        pos[self.keep_] = np.arange(len(self.keep_))

        def sim(rows: np.ndarray) -> np.ndarray:
            out = np.full((len(rows), m), NEG)
            ok = pos[rows] >= 0
            if ok.any():
                out[np.ix_(ok, self.keep_)] = self.B_[pos[rows[ok]]]
            return out
        return sim


def _inverse_spd(G: np.ndarray) -> np.ndarray:
    """The inverse of the symmetric positive definite ``G`` (overwritten), through its Cholesky factor.

    In float32: the penalty keeps it well conditioned; B agrees with float64 to ~1e-8 and takes under half
    the time. LAPACK may use both cores here: only implicit's fits need single-threaded BLAS."""
    from scipy.linalg import lapack
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=os.cpu_count() or 1, user_api="blas"):
        c, info = lapack.spotrf(G, lower=0, clean=0, overwrite_a=1)
        if info == 0:
            P, info = lapack.spotri(c, lower=0, overwrite_c=1)
    if info != 0:
        raise ModelFitError(f"EASE: the item Gram matrix is not positive definite (LAPACK info {info}); "
                            "raise ease_lambda")
    return np.where(np.tri(len(P), k=-1, dtype=bool), P.T, P)  # the upper triangle mirrored
