"""Second stage for discovery requests: a LightGBM LambdaRank model re-orders the blend's top candidates.

Recommending "something new" (bought products excluded) is candidate selection -> re-ranking: the blend
picks the ``candidates`` best products for a customer, and the ranker orders them using what the blend
cannot weigh per customer: each component's score, the product's popularity and trend, its price against
the customer's usual price, and how much and how recently the customer buys.

The ranker learns from earlier windows before the model's cutoff (a customer's purchases of products new
to them in the weeks after each window's start are the labels), so nothing after the cutoff is used.

Example
-------
>>> X, y, groups, _ = rerank_rows(blend, truth)             # doctest: +SKIP
>>> ranker = Reranker(RerankConfig()).fit(X, y, groups)    # doctest: +SKIP

The training rows and the re-ranker's holdout gate are training's: see :mod:`training.rerank_training`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import lightgbm as lgb
import numpy as np
import scipy.sparse as sp

from features.exceptions import ModelFitError, NotFittedError
from models.compiled_trees import CodeStore, CompiledTrees, exact_compiled
from models.cores import free_threads
from models.customer import SMALL_PREDICT

if TYPE_CHECKING:
    from features.interactions import InteractionData

RANK_COMPONENTS = ("item_knn", "als", "ease", "popularity")
"""Components whose normalised scores are features (missing ones are NaN)."""
FEATURES = ("blend", *RANK_COMPONENTS, "item_purchases", "item_recent", "item_trend", "item_weight", "price",
            "price_ratio", "category_share", "customer_items", "customer_purchase_days", "customer_recency",
            "customer_weight")


@dataclass(frozen=True)
class RerankConfig:
    """Settings of the discovery re-ranker."""

    candidates: int = 100
    """Products re-ranked per customer (the blend's best ones). Discovery lists hold at most this many."""
    trees: int = 100
    learning_rate: float = 0.05
    leaves: int = 31
    min_child_samples: int = 50
    min_customers: int = 100
    """Fewer training customers with a purchase among their candidates: no re-ranker (the blend ranks)."""
    seed: int = 42


class ItemStats:
    """Per-product features of one training set, computed once."""

    def __init__(self, data: InteractionData) -> None:
        buys = np.asarray(data.purchases.sum(axis=0)).ravel()
        self.purchases = np.log1p(buys)
        self.recent = np.log1p(data.recent_item_weight)
        self.weight = np.log1p(np.asarray(data.weights.sum(axis=0)).ravel())
        self.price = np.asarray(data.item_price, dtype=np.float64)
        cats, codes = np.unique(np.asarray(data.item_category).astype(str), return_inverse=True)
        self.category = codes
        m = len(codes)
        self.item_category = sp.csr_matrix((np.ones(m), (np.arange(m), codes)), shape=(m, len(cats)))


def candidate_features(stats: ItemStats, P: sp.csr_matrix, W: sp.csr_matrix, L: sp.csr_matrix,
                       comps: dict[str, np.ndarray], blend: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Feature rows (customers x candidates, flattened row-major) in the order of :data:`FEATURES`.

    ``P``/``W``/``L``: the customers' purchases, interactions and days since last purchase (CSR, live
    session included); ``comps``: normalised component scores; ``blend``: the blend's scores;
    ``cand``: candidate product columns per customer."""
    n, c = cand.shape
    rows = np.repeat(np.arange(n), c)
    cols = cand.ravel()
    out = np.full((n * c, len(FEATURES)), np.nan, dtype=np.float32)
    out[:, 0] = blend[rows, cols]
    for f, name in enumerate(RANK_COMPONENTS, 1):
        if name in comps:
            out[:, f] = comps[name][rows, cols]
    f = 1 + len(RANK_COMPONENTS)
    out[:, f] = stats.purchases[cols]
    out[:, f + 1] = stats.recent[cols]
    out[:, f + 2] = stats.recent[cols] - stats.purchases[cols]
    out[:, f + 3] = stats.weight[cols]
    out[:, f + 4] = stats.price[cols]
    out[:, f + 5:] = _customer_features(stats, P, W, L, rows, cols)
    return out


def _customer_features(stats: ItemStats, P: sp.csr_matrix, W: sp.csr_matrix, L: sp.csr_matrix,
                       rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The features that involve the customer, from ``price_ratio`` to ``customer_weight`` in the order of
    :data:`FEATURES`; ``rows``/``cols``: each feature row's customer and product."""
    out = np.full((len(rows), 6), np.nan, dtype=np.float32)
    bought = np.diff(P.indptr)  # distinct products bought
    if P.shape[0] == 1:  # one customer (a live request): the sparse products' sums below, in their order
        idx = P.indices[P.indptr[0]:P.indptr[1]]
        spent = np.cumsum(stats.price[idx])[-1:] if len(idx) else np.zeros(1)
        per_cat = np.bincount(stats.category[idx], weights=P.data[P.indptr[0]:P.indptr[1]],
                              minlength=stats.item_category.shape[1])[None, :].astype(np.float64)
    else:
        distinct = sp.csr_matrix((np.ones(P.nnz), P.indices, P.indptr), shape=P.shape)
        spent = distinct @ stats.price
        per_cat = (P @ stats.item_category).toarray()
    mean_price = np.where(bought > 0, spent / np.maximum(bought, 1), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[:, 0] = stats.price[cols] / mean_price[rows]
    per_cat /= np.maximum(per_cat.sum(axis=1, keepdims=True), 1.0)
    out[:, 1] = per_cat[rows, stats.category[cols]]
    out[:, 2] = bought[rows]
    out[:, 3] = _row_sums(P)[rows]
    recency = np.full(P.shape[0], np.nan)
    has = np.diff(L.indptr) > 0
    if L.nnz:
        mins = np.minimum.reduceat(L.data, L.indptr[:-1][has]) if has.any() else np.array([])
        recency[has] = mins
    out[:, 4] = recency[rows]
    out[:, 5] = _row_sums(W)[rows]
    return out


def _row_sums(M: sp.csr_matrix) -> np.ndarray:
    """``M.sum(axis=1)`` as a flat float64 array; for one row, the same ``np.add.reduceat`` scipy calls,
    without its checks and matrix wrapping (a live request's features)."""
    if M.shape[0] == 1 and M.dtype == np.float64:
        out = np.zeros(1)
        if M.indptr[1] > M.indptr[0]:
            out[0] = np.add.reduceat(M.data, M.indptr[:1])[0]
        return out
    return np.asarray(M.sum(axis=1)).ravel()


class Reranker:
    """LightGBM LambdaRank over candidate features; higher is better. Once :meth:`compile` has succeeded
    (serving does it when it loads the model), the booster compiled to machine code predicts, with the same
    floats."""

    def __init__(self, config: RerankConfig | None = None) -> None:
        self.config = config or RerankConfig()
        self.booster_: lgb.Booster | None = None
        self.validation_: dict[str, Any] = {}
        self.compiled_: CompiledTrees | None = None
        """The booster as machine code, checked to predict its floats (:mod:`models.compiled_trees`); never
        pickled."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("compiled_", None)  # machine code for this process only: a loaded model compiles again
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.compiled_ = None

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> Self:
        """``X``: candidate features; ``y``: 1 where the customer bought the product; ``groups``: the number
        of consecutive rows of each customer."""
        cfg = self.config
        if len(groups) < cfg.min_customers:
            raise ModelFitError(f"re-ranker: {len(groups)} customers with a purchase among their candidates, "
                                f"fewer than min_customers={cfg.min_customers}")
        if X.shape[1] != len(FEATURES) or int(np.sum(groups)) != len(X) or len(y) != len(X):
            raise ValueError(f"re-ranker: X has shape {X.shape}, y {len(y)} rows, groups sum to "
                             f"{int(np.sum(groups))}; expected {len(FEATURES)} columns and equal rows")
        params = {"objective": "lambdarank", "learning_rate": cfg.learning_rate, "num_leaves": cfg.leaves,
                  "min_child_samples": cfg.min_child_samples, "bagging_fraction": 0.8, "bagging_freq": 1,
                  "feature_fraction": 0.8, "seed": cfg.seed, "deterministic": True,
                  "num_threads": free_threads(2),
                  "verbose": -1, "eval_at": [10]}
        ds = lgb.Dataset(X, label=y, group=groups, feature_name=list(FEATURES), free_raw_data=True)
        self.booster_ = lgb.train(params, ds, num_boost_round=cfg.trees)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.booster_ is None:
            raise NotFittedError("Reranker")
        if self.compiled_ is not None:  # the same floats as the booster's, about 7 times sooner
            return self.compiled_.predict(X)
        # one thread for a request's candidates; the evaluation's batches (~100,000 rows) on all cores
        threads = 1 if len(X) <= SMALL_PREDICT else free_threads(0)
        return np.asarray(self.booster_.predict(X, num_threads=threads), dtype=np.float64)

    def compile(self, sample: np.ndarray, store: CodeStore | None = None) -> bool:
        """Predict with the booster compiled to machine code from now on, if it gives exactly the booster's
        predictions on ``sample`` (feature rows of real candidates) and on the rows at the trees' split
        thresholds (:func:`models.compiled_trees.exact_compiled`); returns whether it does (if not, or if
        compiling fails, LightGBM goes on predicting). ``store``: where compiled models are kept between
        loads (this one is then compiled once per machine). Takes seconds: for serving, not training.

        Examples
        --------
        >>> ranker.compile(X[:30_000])   # doctest: +SKIP
        True
        """
        if self.booster_ is None:
            raise NotFittedError("Reranker")
        self.compiled_ = exact_compiled(self.booster_, sample, store)
        return self.compiled_ is not None

    def importance(self) -> dict[str, float]:
        """Total gain of each feature."""
        if self.booster_ is None:
            raise NotFittedError("Reranker")
        gain = self.booster_.feature_importance("gain")
        return {n: round(float(g), 3) for n, g in zip(FEATURES, gain, strict=True)}

