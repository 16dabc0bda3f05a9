"""The recommender interface: ``fit`` -> ``self``, ``recommend`` and ``similar_items`` in the caller's ids.

Every recommender is fitted on :class:`features.interactions.InteractionData` and speaks the caller's ids:
``recommend(customer_ids, k, ...)`` returns a DataFrame ``[customer_id, product_id, score, rank]``
and ``similar_items(product_ids, k)`` returns ``[product_id, similar_product_id, score, rank]``.
Matrix rows never cross this boundary. A subclass implements ``_fit`` and ``_score``: component models
give ``-inf`` to items they cannot score; customers a model does not know get no rows.

Example
-------
>>> rec = ItemKNNRecommender(RecommenderConfig(seed=1)).fit(data)     # doctest: +SKIP
>>> rec.recommend(["C0000001"], k=5)                                  # doctest: +SKIP
"""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.exceptions import ModelFitError, NotFittedError
from features.interactions import InteractionData
from features.schema import (
    CUSTOMER_ID,
    PRODUCT_ID,
    RANK,
    RECOMMENDATION_COLUMNS,
    SCORE,
    SIMILAR_ITEMS_COLUMNS,
    SIMILAR_PRODUCT_ID,
)
from models.metrics import top_k
from models.recsys.context import (
    BusinessRules,
    RecommenderConfig,
    Session,
    UserContext,
    build_context,
    rules_mask,
)

NEG = -np.inf
"""The score of an item a model cannot (or may not) recommend."""
COLUMNS = list(RECOMMENDATION_COLUMNS)


def row_entries(M: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the entries of ``rows`` of ``M`` are in ``M.indices`` / ``M.data`` (row after row, each in its
    stored order), and how many each row has: a gather of sparse rows without scipy's indexing."""
    starts, ends = M.indptr[rows], M.indptr[rows + 1]
    lengths = ends - starts
    return np.repeat(ends - lengths.cumsum(), lengths) + np.arange(lengths.sum()), lengths


def round_scores(s: np.ndarray) -> list[float]:
    """Scores as the API shows them (6 decimals), the same in the cached and the computed path: ``np.round(s,
    6)``, computed as numpy computes it (times 1e6, ``rint``, divided by 1e6) without its Python wrappers
    (5 us of a 10-item answer's 7)."""
    return (np.rint(np.asarray(s, dtype=np.float64) * 1e6) / 1e6).tolist()  # type: ignore[no-any-return]


def ranked_frame(scores: np.ndarray, k: int, ids: np.ndarray, items: np.ndarray) -> pd.DataFrame:
    """The top ``k`` finite scores of each row as ``[customer_id, product_id, score, rank]``; row ``i`` is
    customer ``ids[i]``, column ``j`` product ``items[j]``."""
    k = min(k, scores.shape[1])
    if k <= 0 or scores.shape[0] == 0:
        return pd.DataFrame(columns=COLUMNS)
    top = top_k(scores, k)
    flat_s = np.take_along_axis(scores, top, axis=1).ravel()
    rows = np.repeat(np.arange(len(ids)), k)
    keep = np.isfinite(flat_s)
    df = pd.DataFrame({CUSTOMER_ID: ids[rows][keep], PRODUCT_ID: items[top.ravel()][keep],
                       SCORE: flat_s[keep].astype(float)})
    df[RANK] = df.groupby(CUSTOMER_ID, sort=False).cumcount() + 1
    return df


class Recommender:
    """Base class: ``fit`` -> ``self``; scoring is ``_score(ctx)``; rules and ranking are shared."""

    name = "base"
    needs_baskets = False
    """True: fitted with ``fit(data, baskets=...)``, purchase baskets the interactions do not hold
    (:func:`models.recsys.tifu.build_baskets`)."""

    def __init__(self, config: RecommenderConfig | None = None) -> None:
        self.config = config or RecommenderConfig()
        self.data: InteractionData | None = None

    # -- fitting --------------------------------------------------------------------------------
    def fit(self, data: InteractionData) -> Self:
        self._start_fit(data)
        self._fit(data)
        return self

    def _start_fit(self, data: InteractionData) -> None:
        if data.weights.nnz == 0:
            raise ModelFitError(f"{self.name}: no interactions to learn from")
        self.data = data

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
                  exclude_bought: bool | None = None, session: Session | None = None,
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

        Examples
        --------
        >>> model.recommend(["C0000001"], k=2, exclude_bought=True)       # doctest: +SKIP
          customer_id product_id  score  rank
        0    C0000001       P017  0.912     1
        1    C0000001       P203  0.884     2
        """
        data = self._require()
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        rules = rules or BusinessRules()
        if exclude_bought is not None:
            rules = replace(rules, exclude_bought=exclude_bought)
        ids = np.asarray(pd.Index(customer_ids).astype(object))
        out = []
        for start in range(0, len(ids), batch):
            ctx = build_context(data, ids[start:start + batch], session)
            s = self.score_for(ctx, rules)
            s[~rules_mask(data, ctx, rules)] = NEG
            out.append(ranked_frame(s, k, ctx.customer_ids, data.items.ids))
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
            return pd.DataFrame(columns=list(SIMILAR_ITEMS_COLUMNS))
        S = sim(rows[known])
        S[np.arange(len(S)), rows[known]] = NEG
        S[:, ~data.item_ok] = NEG
        df = ranked_frame(S, k, ids[known], data.items.ids)
        df.columns = [PRODUCT_ID, SIMILAR_PRODUCT_ID, SCORE, RANK]
        return df[list(SIMILAR_ITEMS_COLUMNS)]

    def _item_similarity(self) -> Any:
        data = self._require()
        X = sp.csr_matrix(data.weights.T.astype(np.float32))
        norms = np.sqrt(X.multiply(X).sum(axis=1)).A.ravel()
        norms[norms == 0] = 1
        Xn = sp.diags(1 / norms) @ X

        def sim(rows: np.ndarray) -> np.ndarray:
            return (Xn[rows] @ Xn.T).toarray().astype(np.float64)  # type: ignore[no-any-return]
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
