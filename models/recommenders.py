"""Product recommenders behind one interface, business rules, cold start and explanations.

Every recommender is fitted on :class:`features.interactions.InteractionData` and speaks the caller's ids:
``recommend(customer_ids, k, ...)`` returns a DataFrame ``[customer_id, product_id, score, rank]``
and ``similar_items(product_ids, k)`` returns ``[product_id, similar_product_id, score, rank]``.
Matrix rows never cross this boundary.

Recommending is candidate scoring -> business rules -> ranking. Component models give ``-inf`` to
items they cannot score; customers a model does not know get no rows (the :class:`RecommendationEngine`
fills them with a marked fallback).

Example
-------
>>> rec = BlendRecommender(RecommenderConfig(seed=1)).fit(data)       # doctest: +SKIP
>>> rec.recommend(["C0000001"], k=5)                                  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Self

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from features.exceptions import ModelFitError, NotFittedError  # noqa: E402
from features.interactions import InteractionData  # noqa: E402
from models.rerank import FEATURES, RANK_COMPONENTS, ItemStats, RerankConfig, Reranker, candidate_features  # noqa: E402

log = logging.getLogger(__name__)
NEG = -np.inf
EVENT_WEIGHT = {"view": 0.25, "wishlist": 0.5, "add_to_cart": 1.0, "remove_from_cart": 0.0, "purchase": 3.0}
COLUMNS = ["customer_id", "product_id", "score", "rank"]


@dataclass(frozen=True)
class RecommenderConfig:
    """Model settings. ``seed`` makes ALS/BPR initialisation reproducible."""

    factors: int = 64
    """Latent factors of ALS and BPR."""
    als_iterations: int = 15
    als_regularization: float = 0.05
    bm25_k1: float = 100.0
    bm25_b: float = 0.8
    bpr_iterations: int = 100
    bpr_learning_rate: float = 0.05
    knn_neighbours: int = 50
    """Neighbours kept per item in the item-to-item (BM25) model."""
    knn_k1: float = 1.2
    knn_b: float = 0.75
    ease_lambda: float = 500.0
    """L2 penalty of EASE (item-to-item linear model)."""
    ease_max_items: int = 12000
    """EASE inverts an items x items matrix; larger catalogues use their most interacted items only."""
    replenish_boost: float = 1.5
    """Buy-again multiplier for replenishable products."""
    blend_weights: tuple[tuple[str, float], ...] | None = None
    """Fixed blend weights; None learns them on the last weeks before the cutoff."""
    discovery_weights: tuple[tuple[str, float], ...] | None = None
    """Blend weights for requests that exclude bought products (discovery); None uses ``blend_weights``
    unless tuning learns them too."""
    rerank: bool = True
    """Re-rank discovery requests (bought products excluded) with a LightGBM ranker, see :mod:`models.rerank`."""
    rerank_candidates: int = 100
    """Candidates the ranker orders per customer (discovery lists hold at most this many products)."""
    rerank_trees: int = 100
    rerank_windows: int = 2
    """Earlier windows before the cutoff the ranker learns from."""
    rerank_window_days: int = 56
    rerank_min_customers: int = 100
    rerank_max_customers: int = 3000
    """A random sample of this many training customers at most (the ranker's fit time grows with them)."""
    seed: int = 42

    def rerank_config(self) -> RerankConfig:
        return RerankConfig(candidates=self.rerank_candidates, trees=self.rerank_trees,
                            min_customers=self.rerank_min_customers, seed=self.seed)

    def to_params(self) -> dict[str, Any]:
        return {f"rec.{k}": (str(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class BusinessRules:
    """What may be shown. Applied after scoring, before ranking."""

    exclude_returned: bool = True
    exclude_out_of_stock: bool = True
    exclude_bought: bool = False
    allow_replenishable: bool = True
    """With exclude_bought, still allow products people reorder."""
    categories: tuple[str, ...] | None = None
    """Only these categories (allow list)."""
    exclude_categories: tuple[str, ...] = ()


@dataclass
class UserContext:
    """Interaction rows of a batch of customers, including live session events."""

    customer_ids: np.ndarray
    rows: np.ndarray  # training row or -1
    W: sp.csr_matrix
    P: sp.csr_matrix
    L: sp.csr_matrix
    R: sp.csr_matrix
    has_session: np.ndarray

    @property
    def known(self) -> np.ndarray:
        return (self.rows >= 0) | self.has_session


def build_context(data: InteractionData, customer_ids: Any,
                  session: dict[str, list[tuple[str, str]]] | None = None) -> UserContext:
    """Rows of ``data`` for ``customer_ids``; ``session`` adds live (product_id, event_type) pairs."""
    ids = np.asarray(pd.Index(customer_ids).astype(object))
    rows = data.users.rows(ids)
    n, m = len(ids), len(data.items)

    def take(M: sp.csr_matrix) -> sp.csr_matrix:
        if n == 1:  # the service's hot path: one customer, a cheap row slice (or an empty row)
            r = int(rows[0])
            return M[r:r + 1] if r >= 0 else sp.csr_matrix((1, M.shape[1]), dtype=M.dtype)
        safe = np.where(rows >= 0, rows, 0)
        out = M[safe]
        out = sp.diags((rows >= 0).astype(float)) @ out
        return sp.csr_matrix(out)

    W, P, L, R = take(data.weights), take(data.purchases), take(data.last_purchase_days), take(data.returned)
    has = np.zeros(n, bool)
    if session:
        r_, c_, v_, pr_, pc_ = [], [], [], [], []
        for i, cid in enumerate(ids):
            for pid, etype in session.get(str(cid), []):
                j = data.items.rows([pid])[0]
                if j < 0:
                    continue
                has[i] = True
                r_.append(i)
                c_.append(j)
                v_.append(EVENT_WEIGHT.get(etype, 0.25))
                if etype == "purchase":
                    pr_.append(i)
                    pc_.append(j)
        if r_:
            W = sp.csr_matrix(W + sp.csr_matrix((v_, (r_, c_)), shape=(n, m)))
        if pr_:
            P = sp.csr_matrix(P + sp.csr_matrix((np.ones(len(pr_)), (pr_, pc_)), shape=(n, m)))
            L = sp.csr_matrix(L.maximum(sp.csr_matrix((np.ones(len(pr_)), (pr_, pc_)), shape=(n, m))))
    return UserContext(ids, rows, W, P, L, R, has)


def rules_mask(data: InteractionData, ctx: UserContext, rules: BusinessRules) -> np.ndarray:
    """Boolean (customers x items): True where the item may be shown to the customer."""
    n, m = len(ctx.customer_ids), len(data.items)
    item_ok = np.ones(m, bool)
    if rules.exclude_out_of_stock:
        item_ok &= data.item_ok
    cats = data.item_category
    if rules.categories is not None:
        item_ok &= np.isin(cats, list(rules.categories))
    if rules.exclude_categories:
        item_ok &= ~np.isin(cats, list(rules.exclude_categories))
    mask = np.broadcast_to(item_ok, (n, m)).copy()
    if rules.exclude_returned:
        mask &= ~(ctx.R.toarray() > 0)
    if rules.exclude_bought:
        bought = ctx.P.toarray() > 0
        if rules.allow_replenishable:
            bought &= ~data.item_replenishable[None, :]
        mask &= ~bought
    return mask


def _topk_row(s: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best finite scores of one row, best first (ties broken by index)."""
    k = min(k, len(s))
    part = np.argpartition(-s, k - 1)[:k]
    part = part[np.lexsort((part, -s[part]))]
    return part[np.isfinite(s[part])]


def _round_scores(s: np.ndarray) -> list[float]:
    """Scores as the API shows them (6 decimals), the same in the cached and the computed path."""
    return np.round(np.asarray(s, dtype=np.float64), 6).tolist()


def _topk(scores: np.ndarray, k: int, ids: np.ndarray, items: np.ndarray) -> pd.DataFrame:
    k = min(k, scores.shape[1])
    if k <= 0 or scores.shape[0] == 0:
        return pd.DataFrame(columns=COLUMNS)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    ps = np.take_along_axis(scores, part, axis=1)
    # stable tie-break on item index makes output deterministic
    order = np.lexsort((part, -ps), axis=1)
    top = np.take_along_axis(part, order, axis=1)
    ts = np.take_along_axis(ps, order, axis=1)
    rows = np.repeat(np.arange(len(ids)), k)
    flat_s = ts.ravel()
    keep = np.isfinite(flat_s)
    df = pd.DataFrame({"customer_id": ids[rows][keep], "product_id": items[top.ravel()][keep],
                       "score": flat_s[keep].astype(float)})
    df["rank"] = df.groupby("customer_id", sort=False).cumcount() + 1
    return df


class Recommender:
    """Base class: ``fit`` -> ``self``; scoring is ``_score(ctx)``; rules and ranking are shared."""

    name = "base"

    def __init__(self, config: RecommenderConfig | None = None) -> None:
        self.config = config or RecommenderConfig()
        self.data: InteractionData | None = None

    # -- fitting --------------------------------------------------------------------------------
    def fit(self, data: InteractionData) -> Self:
        if data.weights.nnz == 0:
            raise ModelFitError(f"{self.name}: no interactions to learn from")
        self.data = data
        self._fit(data)
        return self

    def _fit(self, data: InteractionData) -> None:
        pass

    def _require(self) -> InteractionData:
        if self.data is None:
            raise NotFittedError(type(self).__name__)
        return self.data

    # -- scoring --------------------------------------------------------------------------------
    def _score(self, ctx: UserContext) -> np.ndarray:
        raise NotImplementedError

    def score(self, ctx: UserContext) -> np.ndarray:
        """Scores (customers x items); -inf where the model has nothing to say."""
        s = np.asarray(self._score(ctx), dtype=np.float64)
        s[~ctx.known] = NEG
        return s

    def score_for(self, ctx: UserContext, rules: BusinessRules) -> np.ndarray:
        """Scores for a request with these rules (the same for every rule set, except in the blend)."""
        return self.score(ctx)

    def recommend(self, customer_ids: Any, k: int = 10, rules: BusinessRules | None = None,
                  exclude_bought: bool | None = None, session: dict[str, list[tuple[str, str]]] | None = None,
                  batch: int = 1024) -> pd.DataFrame:
        """Top-k products per customer, ``[customer_id, product_id, score, rank]``.

        Parameters
        ----------
        customer_ids
            The caller's ids. Unknown customers without session events get no rows.
        k
            Maximum number of products per customer (>= 1).
        rules
            Business rules (defaults: no returned, no out-of-stock, no non-products).
        exclude_bought
            Shortcut that overrides ``rules.exclude_bought``.
        session
            Live events per customer id: ``{customer_id: [(product_id, event_type), ...]}``.
        """
        data = self._require()
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        rules = rules or BusinessRules()
        if exclude_bought is not None:
            rules = BusinessRules(**{**asdict(rules), "exclude_bought": exclude_bought})
        ids = np.asarray(pd.Index(customer_ids).astype(object))
        out = []
        for start in range(0, len(ids), batch):
            ctx = build_context(data, ids[start:start + batch], session)
            s = self.score_for(ctx, rules)
            s[~rules_mask(data, ctx, rules)] = NEG
            out.append(_topk(s, k, ctx.customer_ids, data.items.ids))
        if not out:
            return pd.DataFrame(columns=COLUMNS)
        return pd.concat(out, ignore_index=True)[COLUMNS]

    def similar_items(self, product_ids: Any, k: int = 10) -> pd.DataFrame:
        """Items most similar to each given product (cosine of item vectors), excluding itself."""
        data = self._require()
        sim = self._item_similarity()
        ids = np.asarray(pd.Index(product_ids).astype(object))
        rows = data.items.rows(ids)
        known = rows >= 0
        if not known.any():
            return pd.DataFrame(columns=["product_id", "similar_product_id", "score", "rank"])
        S = sim(rows[known])
        S[np.arange(len(S)), rows[known]] = NEG
        S[:, ~data.item_ok] = NEG
        df = _topk(S, k, ids[known], data.items.ids)
        return df.rename(columns={"customer_id": "product_id_", "product_id": "similar_product_id"}).rename(
            columns={"product_id_": "product_id"})[["product_id", "similar_product_id", "score", "rank"]]

    def _item_similarity(self) -> Any:
        data = self._require()
        X = sp.csr_matrix(data.weights.T.astype(np.float32))
        norms = np.sqrt(X.multiply(X).sum(axis=1)).A.ravel()
        norms[norms == 0] = 1
        Xn = sp.diags(1 / norms) @ X

        def sim(rows: np.ndarray) -> np.ndarray:
            return (Xn[rows] @ Xn.T).toarray().astype(np.float64)
        return sim

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        with open(path, "wb") as f:
            pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def load(path: str | Path) -> Recommender:
        with open(path, "rb") as f:
            obj = pickle.load(f)
        if not isinstance(obj, Recommender):
            raise TypeError(f"{path} does not hold a Recommender")
        return obj


class PopularityRecommender(Recommender):
    """Most bought products overall (the same list for everyone)."""

    name = "popularity"

    def _fit(self, data: InteractionData) -> None:
        self.pop_ = np.log1p(np.asarray(data.purchases.sum(axis=0)).ravel()) + 1e-6 * np.log1p(
            np.asarray(data.weights.sum(axis=0)).ravel())

    def _score(self, ctx: UserContext) -> np.ndarray:
        return np.broadcast_to(self.pop_, (len(ctx.customer_ids), len(self.pop_))).copy()


class TrendingRecommender(Recommender):
    """Most bought products in the recent window, overall or in the customer's region."""

    name = "trending"

    def _fit(self, data: InteractionData) -> None:
        pop = np.log1p(np.asarray(data.purchases.sum(axis=0)).ravel())
        self.overall_ = np.log1p(data.recent_item_weight) + 1e-3 * pop
        self.region_ = {r: np.log1p(v) + 1e-3 * self.overall_ for r, v in data.region_recent.items()}

    def scores_for_region(self, region: str | None) -> np.ndarray:
        return self.region_.get(str(region), self.overall_) if region is not None else self.overall_

    def _score(self, ctx: UserContext) -> np.ndarray:
        data = self._require()
        reg = [data.user_region[r] if r >= 0 else None for r in ctx.rows]
        return np.vstack([self.scores_for_region(g) for g in reg]) if len(reg) else np.zeros((0, len(self.overall_)))


class BuyAgainRecommender(Recommender):
    """The customer's own repeat purchases: how often, how recently, and whether it is replenishable."""

    name = "buy_again"

    def _score(self, ctx: UserContext) -> np.ndarray:
        data = self._require()
        boost = np.where(data.item_replenishable, self.config.replenish_boost, 1.0)
        out = np.full(ctx.P.shape, NEG)
        P = ctx.P.tocoo()  # only the items each customer bought
        rows, cols, cnt = P.row, P.col, P.data
        if not len(rows):
            return out
        last = np.asarray(ctx.L.tocsr()[rows, cols]).ravel().astype(float)
        rec = np.divide(1.0, np.log2(1 + last), out=np.zeros_like(last), where=last > 0)
        out[rows, cols] = (cnt + 0.5 * rec) * boost[cols]
        return out


class ALSRecommender(Recommender):
    """implicit's ALS on BM25-weighted interactions; live sessions are folded in with recalculate_user."""

    name = "als"

    def _fit(self, data: InteractionData) -> None:
        from implicit.als import AlternatingLeastSquares
        from implicit.nearest_neighbours import bm25_weight
        c = self.config
        X = bm25_weight(data.weights, K1=c.bm25_k1, B=c.bm25_b).tocsr().astype(np.float32)
        self.model_ = AlternatingLeastSquares(factors=c.factors, regularization=c.als_regularization,
                                              iterations=c.als_iterations, random_state=c.seed, num_threads=1)
        self.model_.fit(X, show_progress=False)
        uf, itf = np.asarray(self.model_.user_factors), np.asarray(self.model_.item_factors)
        if not (np.isfinite(uf).all() and np.isfinite(itf).all()):
            raise ModelFitError("ALS: NaN encountered in factors; lower the learning settings or check weights")
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
        return self._user_vectors(ctx) @ np.asarray(self.model_.item_factors).T

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
        return vec @ itf.T


class ItemKNNRecommender(Recommender):
    """Item-to-item nearest neighbours with BM25 weighting (implicit's BM25Recommender)."""

    name = "item_knn"

    def _fit(self, data: InteractionData) -> None:
        from implicit.nearest_neighbours import BM25Recommender
        c = self.config
        self.model_ = BM25Recommender(K=c.knn_neighbours, K1=c.knn_k1, B=c.knn_b, num_threads=1)
        import warnings
        with warnings.catch_warnings():  # implicit converts its own BM25 output (COO) to CSR and warns about it
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
        # G is symmetric positive definite: invert through its Cholesky factor, in float32 (the penalty keeps
        # it well conditioned; B agrees with float64 to ~1e-8 and takes under half the time)
        # (LAPACK may use both cores here: only implicit's fits need single-threaded BLAS)
        from scipy.linalg import lapack
        from threadpoolctl import threadpool_limits
        with threadpool_limits(limits=os.cpu_count() or 1, user_api="blas"):
            c, info = lapack.spotrf(G, lower=0, clean=0, overwrite_a=1)
            if info == 0:
                P, info = lapack.spotri(c, lower=0, overwrite_c=1)
        if info != 0:
            raise ModelFitError(f"EASE: the item Gram matrix is not positive definite (LAPACK info {info}); "
                                "raise ease_lambda")
        P = np.where(np.tri(len(P), k=-1, dtype=bool), P.T, P)  # the upper triangle mirrored
        B = -P / np.diag(P)
        np.fill_diagonal(B, 0.0)
        self.keep_ = keep.astype(np.int64)
        self.B_ = B.astype(np.float32)

    def _score(self, ctx: UserContext) -> np.ndarray:
        Wk = ctx.W.tocsr()[:, self.keep_]
        Wk.data = (Wk.data > 0).astype(np.float32)
        out = np.full((len(ctx.rows), len(self._require().items)), NEG)
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


COMPONENTS = ("buy_again", "item_knn", "als", "ease", "popularity")
DEFAULT_WEIGHTS = (("buy_again", 1.0), ("item_knn", 1.0), ("als", 0.5), ("ease", 0.5), ("popularity", 0.1))
_BASE_GRID = [
    (1.0, 1.0, 0.5, 0.1), (1.0, 0.5, 0.5, 0.1), (1.0, 1.5, 0.5, 0.05), (1.0, 1.0, 1.0, 0.1), (0.5, 1.0, 1.0, 0.1),
    (1.5, 1.0, 0.25, 0.1), (1.0, 1.0, 0.0, 0.2), (0.5, 0.5, 1.0, 0.05), (0.25, 0.25, 1.0, 0.0),
]
WEIGHT_GRID = [(("buy_again", b), ("item_knn", k), ("als", a), ("ease", 0.0), ("popularity", p))
               for b, k, a, p in _BASE_GRID]
EASE_STEPS = (0.5, 1.0)
"""Tuning adds EASE at these weights to the best three blends of the grid (a second, smaller round)."""
DISCOVERY_GRID: list[tuple[tuple[str, float], ...]] = [(("buy_again", 1.0), ("item_knn", kn), ("als", a), ("ease", e), ("popularity", 0.1))
                  for kn in (0.5, 1.0) for a in (0.5, 1.0) for e in (0.0, 1.0)]
DISCOVERY_RULES = BusinessRules(exclude_bought=True, allow_replenishable=False)


def blended(comps: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """Weighted sum of normalised component scores; components without weight, or not fitted, add nothing."""
    out = np.zeros(next(iter(comps.values())).shape)
    for n, w in weights.items():
        if w and n in comps:
            out += w * comps[n]
    return out


def _normalise(s: np.ndarray) -> np.ndarray:
    """Per-customer scaling to [0, 1] over finite scores; -inf (and any other non-finite score) becomes 0."""
    bad = ~np.isfinite(s)
    t = np.where(bad, np.inf, s)  # one buffer for both extremes (this runs on customers x items arrays)
    lo = t.min(axis=1, keepdims=True)
    np.copyto(t, -np.inf, where=bad)
    hi = t.max(axis=1, keepdims=True)
    span = hi - lo
    span = np.where(np.isfinite(span) & (span > 0), span, 1.0)
    lo = np.where(np.isfinite(lo), lo, 0.0)
    np.subtract(s, lo, out=t)
    t /= span
    t[bad] = 0.0
    return t


class BlendRecommender(Recommender):
    """The production recommender: a weighted blend of buy-again, item-to-item, ALS and popularity,
    each normalised per customer. Weights are chosen on the last weeks before the cutoff
    (``tune(...)``) unless fixed in the config."""

    name = "production"

    def __init__(self, config: RecommenderConfig | None = None) -> None:
        super().__init__(config)
        self.weights_: dict[str, float] = dict(self.config.blend_weights or DEFAULT_WEIGHTS)
        dw = self.config.discovery_weights
        self.discovery_weights_: dict[str, float] | None = dict(dw) if dw else None
        self.tuning_: list[dict[str, Any]] = []
        self.reranker_: Reranker | None = None
        self.item_stats_: ItemStats | None = None
        self.rerank_validation_: dict[str, Any] = {}
        """How the re-ranker did against the blend when it was learned (also when it was not used)."""

    def weights_for(self, rules: BusinessRules) -> dict[str, float]:
        """The discovery weights when bought products are excluded (if learned), else the main ones."""
        dw = getattr(self, "discovery_weights_", None)  # models pickled before discovery weights have none
        return dw if (dw and rules.exclude_bought) else self.weights_

    def score_for(self, ctx: UserContext, rules: BusinessRules) -> np.ndarray:
        return self.ranked_scores(ctx, rules)

    def reranker_for(self, rules: BusinessRules) -> Reranker | None:
        """The discovery re-ranker when bought products are excluded (if one is attached)."""
        rr: Reranker | None = getattr(self, "reranker_", None)  # models pickled before re-ranking have none
        return rr if rules.exclude_bought else None

    def ranked_scores(self, ctx: UserContext, rules: BusinessRules,
                      comps: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Final scores for a request with these rules: -inf where the rules forbid an item or the customer
        is unknown. Discovery requests with a re-ranker: its scores for the blend's best candidates, -inf
        for the rest. ``comps``: the normalised component scores, if already computed."""
        rr = self.reranker_for(rules)
        s, comps = self._blend_for(ctx, rules, comps)
        if rr is None or self.item_stats_ is None:
            return s
        cand, X = self._candidate_rows(ctx, rules, comps, s, self.item_stats_)
        out = np.full(s.shape, NEG)
        np.put_along_axis(out, cand, np.where(np.isfinite(np.take_along_axis(s, cand, 1)),
                                              rr.predict(X).reshape(cand.shape), NEG), 1)
        return out

    def _blend_for(self, ctx: UserContext, rules: BusinessRules, comps: dict[str, np.ndarray] | None = None
                   ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The blend's scores under these rules (-inf where not allowed), and the component scores used."""
        data = self._require()
        w = self.weights_for(rules)
        if comps is None:
            comps = self.component_scores(ctx, {n for n, v in w.items() if v} | {"item_knn"})
        s = blended(comps, w) if comps else np.zeros((len(ctx.rows), len(data.items)))
        return np.where(ctx.known[:, None] & rules_mask(data, ctx, rules), s, NEG), comps

    def _candidate_rows(self, ctx: UserContext, rules: BusinessRules, comps: dict[str, np.ndarray], s: np.ndarray,
                        stats: ItemStats) -> tuple[np.ndarray, np.ndarray]:
        """The blend's best candidates per customer and their re-ranker features."""
        cand = self._candidates(s)
        X = candidate_features(stats, ctx.P.tocsr(), ctx.W.tocsr(), ctx.L.tocsr(),
                               self._feature_components(comps, self.weights_for(rules)), s, cand)
        return cand, X

    @staticmethod
    def _feature_components(comps: dict[str, np.ndarray], weights: dict[str, float]) -> dict[str, np.ndarray]:
        """The component scores the re-ranker sees: those the blend weighs, and item-to-item (always fitted);
        the same whichever other components a model happens to have fitted (the rest are NaN features)."""
        return {n: comps[n] for n in RANK_COMPONENTS if n in comps and (weights.get(n, 0) or n == "item_knn")}

    def _candidates(self, s: np.ndarray) -> np.ndarray:
        c = min(self.config.rerank_candidates, s.shape[1])
        return np.argpartition(-s, c - 1, axis=1)[:, :c]

    def attach_reranker(self, reranker: Reranker | None) -> Self:
        """Use ``reranker`` for discovery requests (None: the blend ranks them)."""
        self.reranker_ = reranker
        self.item_stats_ = ItemStats(self._require()) if reranker is not None else None
        return self

    def rerank_rows(self, truth: dict[str, set[str]], rules: BusinessRules = DISCOVERY_RULES, batch: int = 1000
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Training rows for a re-ranker: features of each customer's candidates, labels (1 where the product
        is in ``truth``), group sizes, and each customer's number of relevant products. Customers with no
        relevant product among their candidates are left out (they teach a ranker nothing)."""
        data = self._require()
        stats = self.item_stats_ or ItemStats(data)
        users = [u for u in truth if u in data.users]
        Xs, ys, gs, ns = [], [], [], []
        for a in range(0, len(users), batch):
            part = users[a:a + batch]
            ctx = build_context(data, part)
            s, comps = self._blend_for(ctx, rules)
            cand, X = self._candidate_rows(ctx, rules, comps, s, stats)
            rel = np.zeros(s.shape, bool)
            nrel = np.zeros(len(part), np.int64)
            for i, u in enumerate(part):
                cols = data.items.rows(list(truth[u]))
                rel[i, cols[cols >= 0]] = True
                nrel[i] = int((cols >= 0).sum())
            y = np.take_along_axis(rel, cand, 1)
            ok = np.isfinite(np.take_along_axis(s, cand, 1))
            use = (y & ok).any(axis=1)
            X3 = X.reshape(len(part), cand.shape[1], -1)
            for g in np.flatnonzero(use).tolist():
                Xs.append(X3[g][ok[g]])
                ys.append(y[g][ok[g]].astype(np.int32))
                gs.append(int(ok[g].sum()))
                ns.append(int(nrel[g]))
        if not gs:
            return np.zeros((0, len(FEATURES)), np.float32), np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.vstack(Xs), np.concatenate(ys), np.array(gs, np.int64), np.array(ns, np.int64)

    def tune_discovery(self, truth: dict[str, set[str]], k: int = 10) -> Self:
        """Choose the discovery weights maximising NDCG@k on products new to each customer (``truth``)."""
        main, log_main = dict(self.weights_), self.tuning_
        self.tune(truth, k, DISCOVERY_RULES, DISCOVERY_GRID)
        self.discovery_weights_, self.discovery_tuning_ = dict(self.weights_), self.tuning_
        self.weights_, self.tuning_ = main, log_main
        return self

    def fit_reusing(self, data: InteractionData, fitted: dict[str, Recommender]) -> Self:
        """Like :meth:`fit`, taking components already fitted on this same ``data`` with this same config
        (the evaluation fits them as baselines anyway) instead of fitting them again."""
        def base(c: RecommenderConfig) -> RecommenderConfig:  # what components depend on: not the weights
            return replace(c, blend_weights=None, discovery_weights=None)
        self._reuse = {n: m for n, m in fitted.items()
                       if n in COMPONENTS and m.data is data and base(m.config) == base(self.config)}
        try:
            return self.fit(data)
        finally:
            del self._reuse

    def _fit(self, data: InteractionData) -> None:
        kinds: dict[str, type[Recommender]] = {
            "buy_again": BuyAgainRecommender, "item_knn": ItemKNNRecommender, "als": ALSRecommender,
            "ease": EASERecommender, "popularity": PopularityRecommender}
        reuse: dict[str, Recommender] = getattr(self, "_reuse", {})
        self.components_: dict[str, Recommender] = {}
        for n in COMPONENTS:
            # all of them while weights are still to be tuned; item_knn always (reasons, similar items)
            if (self.config.blend_weights is None or self.weights_.get(n, 0) > 0 or n == "item_knn"
                    or (self.discovery_weights_ or {}).get(n, 0) > 0):
                self.components_[n] = reuse[n] if n in reuse else kinds[n](self.config).fit(data)

    def _score(self, ctx: UserContext) -> np.ndarray:
        return self._weighted(ctx, self.weights_)

    def _weighted(self, ctx: UserContext, weights: dict[str, float]) -> np.ndarray:
        """The blend with these weights, scoring only the components that carry weight."""
        comps = self.component_scores(ctx, {n for n, w in weights.items() if w})
        return blended(comps, weights) if comps else np.zeros((len(ctx.rows), len(self._require().items)))

    def component_scores(self, ctx: UserContext, names: set[str] | None = None) -> dict[str, np.ndarray]:
        """Normalised scores of the fitted components (of ``names`` only, if given)."""
        return {n: _normalise(c.score(ctx)) for n, c in self.components_.items() if names is None or n in names}

    def tune(self, truth: dict[str, set[str]], k: int = 10, rules: BusinessRules | None = None,
             grid: list[tuple[tuple[str, float], ...]] | None = None) -> Self:
        """Choose the blend weights maximising NDCG@k on ``truth`` (purchases after this model's cutoff)."""
        data = self._require()
        users = [u for u in truth if u in data.users]
        ctx = build_context(data, users)
        comps = self.component_scores(ctx)
        mask = rules_mask(data, ctx, rules or BusinessRules())
        self.tuning_ = []
        # NDCG@k in numpy (the same numbers as metrics.ranking_report, without building frames per trial)
        rel = np.zeros((len(users), len(data.items)), bool)
        for i, u in enumerate(users):
            cols = data.items.rows(list(truth[u]))
            rel[i, cols[cols >= 0]] = True
        disc = 1.0 / np.log2(np.arange(2, k + 2))
        idcg = np.cumsum(disc)[np.minimum([len(truth[u]) for u in users], k) - 1]
        kk = min(k, len(data.items))

        def trial(w: dict[str, float]) -> float:
            s = np.where(ctx.known[:, None] & mask, blended(comps, w), NEG)
            part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
            ps = np.take_along_axis(s, part, axis=1)
            order = np.lexsort((part, -ps), axis=1)
            top, ts = np.take_along_axis(part, order, axis=1), np.take_along_axis(ps, order, axis=1)
            hits = np.take_along_axis(rel, top, axis=1) & np.isfinite(ts)
            ndcg = float(np.mean(hits @ disc[:kk] / idcg)) if len(users) else 0.0
            self.tuning_.append({"weights": w, f"ndcg@{k}": ndcg})
            return ndcg

        for wt in grid or WEIGHT_GRID:
            trial(dict(wt))
        if grid is None and "ease" in comps:
            top = sorted(self.tuning_, key=lambda t: -t[f"ndcg@{k}"])[:3]
            for t in top:
                for e in EASE_STEPS:
                    trial({**t["weights"], "ease": e})
        best_t = max(self.tuning_, key=lambda t: t[f"ndcg@{k}"])  # the first of equals wins
        best, best_w = best_t[f"ndcg@{k}"], best_t["weights"]
        self.weights_ = dict(best_w)
        log.info("blend weights %s (validation ndcg@%d %.4f)", self.weights_, k, best)
        return self

    def _item_similarity(self) -> Any:
        return self.components_["item_knn"]._item_similarity()


MODELS: dict[str, type[Recommender]] = {
    "popularity": PopularityRecommender, "trending": TrendingRecommender, "buy_again": BuyAgainRecommender,
    "als": ALSRecommender, "bpr": BPRRecommender, "item_knn": ItemKNNRecommender, "ease": EASERecommender,
    "production": BlendRecommender,
}


@dataclass
class Recommendation:
    customer_id: str
    source: str  # "model" or "fallback"
    items: list[dict[str, Any]] = field(default_factory=list)


class RecommendationEngine:
    """What the storefront calls: the production model, rules, cold-start fallbacks and reasons.

    Unknown customers with no session get trending products in their region (or overall), marked
    ``fallback``. Customers with live session events are folded in.
    """

    LEADS = COMPONENTS

    def __init__(self, model: BlendRecommender, trending: TrendingRecommender,
                 product_names: dict[str, str] | None = None) -> None:
        self.model, self.trending = model, trending
        self.names = product_names or {}
        self.cache_: dict[str, np.ndarray] | None = None

    def precompute(self, n: int = 50, batch: int = 500) -> Self:
        """Rank the top ``n`` candidates of every known customer once (default rules, no session).

        A storefront request for such a customer is then a lookup plus its own filters (category,
        exclude-bought), with exactly the items, scores and reasons of the full computation; requests the
        cache cannot answer exactly (a live session, relaxed rules, too few candidates left) are computed.
        Reasons are stored as codes into :meth:`reason_table` (4 bytes per candidate).
        """
        data = self.data
        nu = len(data.users)
        items = np.full((nu, n), -1, np.int32)
        scores = np.full((nu, n), NEG)
        reason = np.zeros((nu, n), np.int32)
        for a in range(0, nu, batch):
            ids = data.users.ids[a:a + batch]
            ctx = build_context(data, ids)
            comps = self.model.component_scores(ctx)
            s = np.where(rules_mask(data, ctx, BusinessRules()), blended(comps, self.model.weights_), NEG)
            P, W = ctx.P.tocsr(), ctx.W.tocsr()
            P.sort_indices()
            for i in range(len(ids)):
                top = _topk_row(s[i], n)
                items[a + i, :len(top)] = top
                scores[a + i, :len(top)] = _round_scores(s[i, top])
                reason[a + i, :len(top)] = self._reason_codes(P, W, i, {c: v[i] for c, v in comps.items()}, top)
        self.cache_ = {"items": items, "scores": scores, "reason": reason}
        for name in ("reason_table", "product_ids"):  # built now, not at the first request
            self.__dict__.pop(name, None)
            getattr(self, name)
        return self

    def recommend_cached(self, customer_id: str, k: int = 10, rules: BusinessRules | None = None
                         ) -> Recommendation | None:
        """The answer from the precomputed candidates (no live session), or None when it must be computed."""
        if self.cache_ is None:
            return None
        row = self.data.users.row(customer_id)
        items = self._cached(row, k, rules or BusinessRules()) if row >= 0 else None
        return Recommendation(customer_id, "model", items) if items is not None else None

    def _cached(self, row: int, k: int, rules: BusinessRules) -> list[dict[str, Any]] | None:
        """The top k from the precomputed candidates, or None when they cannot answer exactly."""
        c = self.cache_
        if c is None or "reason" not in c or not (rules.exclude_returned and rules.exclude_out_of_stock):
            return None
        if self.model.weights_for(rules) is not self.model.weights_ or self.model.reranker_for(rules) is not None:
            return None  # ranked with other weights, or re-ranked
        items = c["items"][row]  # ranked candidates, padded with -1 when the customer has fewer than n
        pos: Any
        if rules.categories is None and not rules.exclude_categories and not rules.exclude_bought:
            # the storefront default: the first k as ranked (the hot path: no numpy work beyond slicing)
            if k > len(items) and items[-1] >= 0:
                return None
            pos = slice(0, k)
        else:
            data = self.data
            complete = items[-1] < 0  # fewer than n scorable items: the list holds all of them
            cand = items[items >= 0]
            keep = np.ones(len(cand), bool)
            if rules.categories is not None:
                keep &= np.isin(data.item_category[cand], list(rules.categories))
            if rules.exclude_categories:
                keep &= ~np.isin(data.item_category[cand], list(rules.exclude_categories))
            if rules.exclude_bought:
                P = data.purchases
                hit = np.isin(cand, P.indices[P.indptr[row]:P.indptr[row + 1]])
                if rules.allow_replenishable:
                    hit &= ~data.item_replenishable[cand]
                keep &= ~hit
            pos = np.flatnonzero(keep)[:k]
            if len(pos) < k and not complete:
                return None
        pids, texts = self.product_ids, self.reason_table
        return [{"product_id": pids[j], "score": sc, "rank": r, "reason": texts[q]}
                for r, (j, sc, q) in enumerate(zip(items[pos].tolist(), c["scores"][row, pos].tolist(),
                                                   c["reason"][row, pos].tolist(), strict=True), 1) if j >= 0]

    @property
    def data(self) -> InteractionData:
        return self.model._require()

    def _name(self, pid: str) -> str:
        return self.names.get(pid, pid)

    def recommend_one(self, customer_id: str, k: int = 10, rules: BusinessRules | None = None,
                      session: list[tuple[str, str]] | None = None, region: str | None = None) -> Recommendation:
        data = self.data
        rules = rules or BusinessRules()
        sess = {customer_id: session} if session else None
        if sess is None:
            cached = self.recommend_cached(customer_id, k, rules)
            if cached is not None:
                return cached
        ctx = build_context(data, [customer_id], sess)
        if ctx.known[0]:
            comps = self.model.component_scores(ctx)
            weights = self.model.weights_for(rules)
            s = self.model.ranked_scores(ctx, rules, comps)[0]
            top = _topk_row(s, k)
            if len(top):
                reasons = self._reasons(ctx, comps, top, weights)
                items = [{"product_id": str(data.items.ids[j]), "score": sc, "rank": r + 1, "reason": reasons[r]}
                         for r, (j, sc) in enumerate(zip(top, _round_scores(s[top]), strict=True))]
                return Recommendation(customer_id, "model", items)
        # fallback: trending in the region, else overall
        reg = region
        if reg is None and ctx.rows[0] >= 0:
            reg = data.user_region[ctx.rows[0]]
        scores = self.trending.scores_for_region(reg)
        in_region = reg is not None and str(reg) in self.trending.region_
        s = np.where(rules_mask(data, ctx, rules)[0], scores, NEG)
        reason = f"popular in your region ({reg})" if in_region else "trending now"
        top = _topk_row(s, k)
        return Recommendation(customer_id, "fallback", [
            {"product_id": str(data.items.ids[j]), "score": sc, "rank": r + 1, "reason": reason}
            for r, (j, sc) in enumerate(zip(top, _round_scores(s[top]), strict=True))])

    _SIMILAR = [COMPONENTS.index(n) for n in ("item_knn", "als", "ease")]
    FIXED_REASONS = ("you buy this regularly", "buy it again", "popular right now", "recommended for you")
    _REGULAR, _AGAIN, _POPULAR, _GENERIC = range(4)  # codes of the fixed reasons; then 4 + 2 * product (+1: viewed)

    @functools.cached_property
    def reason_table(self) -> list[str]:
        """Every reason text, indexed by the codes of :meth:`_reason_codes`: the fixed ones, then for each
        product "because you bought X" and "because you viewed X"."""
        out = list(self.FIXED_REASONS)
        for pid in self.data.items.ids.tolist():
            name = self._name(str(pid))
            out += [f"because you bought {name}", f"because you viewed {name}"]
        return out

    @functools.cached_property
    def product_ids(self) -> list[str]:
        return [str(p) for p in self.data.items.ids.tolist()]

    def _reason_codes(self, P: sp.csr_matrix, W: sp.csr_matrix, i: int, comps: dict[str, np.ndarray],
                      top: np.ndarray, weights: dict[str, float] | None = None) -> np.ndarray:
        """Why each top item of customer ``i`` is shown, as codes into :attr:`reason_table`. ``P``: purchases,
        ``W``: interactions (CSR, one row per customer); ``comps``: that customer's component scores. In
        order: bought before ("you buy this regularly" when bought twice or replenishable, else "buy it
        again"); led by a similarity component and close to one of the customer's items ("because you
        bought/viewed X"); led by popularity; else "recommended for you"."""
        weights = self.model.weights_ if weights is None else weights
        w = np.array([weights.get(n, 0.0) for n in self.LEADS])
        contrib = np.vstack([w[c] * np.ravel(comps[n])[top] if n in comps else np.zeros(len(top))
                             for c, n in enumerate(self.LEADS)])
        lead = contrib.argmax(axis=0)  # the component that contributes most to each item's score
        # the customer's own item most similar to each top item (-1 if none)
        src = np.full(len(top), -1)
        knn = self.model.components_["item_knn"]
        assert isinstance(knn, ItemKNNRecommender)
        w_idx, w_val = W.indices[W.indptr[i]:W.indptr[i + 1]], W.data[W.indptr[i]:W.indptr[i + 1]]
        if len(w_idx) and len(top):
            S = knn.sim_[w_idx][:, top].toarray() * w_val[:, None]
            S[w_idx[:, None] == top[None, :]] = 0.0  # never "because you bought X" for X itself
            best = S.argmax(axis=0)
            src = np.where(S.max(axis=0) > 0, w_idx[best], -1)
        b_idx, b_val = P.indices[P.indptr[i]:P.indptr[i + 1]], P.data[P.indptr[i]:P.indptr[i + 1]]
        if not P.has_sorted_indices:
            order = np.argsort(b_idx, kind="stable")
            b_idx, b_val = b_idx[order], b_val[order]

        def bought(j: np.ndarray) -> np.ndarray:  # how much of products j the customer bought
            if not len(b_idx):
                return np.zeros(len(j))
            at = np.minimum(np.searchsorted(b_idx, j), len(b_idx) - 1)
            return np.where(b_idx[at] == j, b_val[at], 0.0)

        similar = np.isin(lead, self._SIMILAR)
        code = np.where(lead == self.LEADS.index("popularity"), self._POPULAR, self._GENERIC)
        s0 = np.maximum(src, 0)
        code = np.where(similar & (src >= 0), 4 + 2 * s0 + (bought(s0) <= 0), code)  # because you bought/viewed
        had = bought(top)
        code = np.where(had > 0, np.where((had >= 2) | self.data.item_replenishable[top], self._REGULAR,
                                          self._AGAIN), code)
        return code.astype(np.int32)

    def _reasons(self, ctx: UserContext, comps: dict[str, np.ndarray], top: np.ndarray,
                 weights: dict[str, float] | None = None) -> list[str]:
        """Why each of the top items is shown, computed for all of them at once."""
        codes = self._reason_codes(ctx.P.tocsr(), ctx.W.tocsr(), 0, {n: v[0] for n, v in comps.items()}, top, weights)
        return [self.reason_table[q] for q in codes.tolist()]

    def similar_items(self, product_id: str, k: int = 10) -> tuple[str, list[dict[str, Any]]]:
        df = self.model.similar_items([product_id], k)
        if len(df):
            return "model", [{"product_id": r.similar_product_id, "score": round(float(r.score), 6), "rank": int(r.rank)}
                             for r in df.itertuples()]
        top = _topk(np.where(self.data.item_ok, self.trending.overall_, NEG)[None, :], k,
                    np.array([product_id], dtype=object), self.data.items.ids)
        return "fallback", [{"product_id": r.product_id, "score": round(float(r.score), 6), "rank": int(r.rank)}
                            for r in top.itertuples()]


NON_PRODUCT_RE = re.compile(r"^(POST|DOT|M|C2|D|S|BANK CHARGES|AMAZONFEE|CRUK|B|PADS|gift_0001.*)$", re.I)
