"""A live session folded into one known customer's scores with numpy: the same answer as
:meth:`RecommendationEngine.recommend_one`, without its general (batch, pandas, sparse-matrix) machinery.

The engine builds a context of sparse rows for a batch of customers, adds the session with sparse additions,
and asks each blend component to score the batch. For one customer with a few session items that costs tens
of milliseconds. Here the customer's stored rows are read once as arrays, the session's items are added to
them, and each component's score row is computed directly:

- item-to-item (BM25 kNN): the sum of the similarity rows of the customer's items, in the order the sparse
  product adds them (so the floats are the same);
- EASE: the sum of the rows of ``B`` of the customer's (kept) items, in float32 as the model does;
- ALS: the stored user vector, or implicit's ``recalculate_user`` on the session-updated row (about 1 ms);
- buy-again: from the purchase counts and days of the customer's bought items; popularity: one row, the same
  for everyone, normalised once.

Blending, business rules, the discovery re-ranker, the top k and the reasons are the model's own functions,
called on a one-customer context built from those arrays. Anything this module does not know how to fold in
(an unknown customer, a component of another kind, a non-canonical sparse matrix) returns None, and the caller
computes the answer in full; ``tests/serving/test_fold_in.py`` checks the answers are the same.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from features.schema import PRODUCT_ID, RANK, SCORE
from models.metrics import top_k
from models.recsys import BusinessRules, Recommendation, RecommendationEngine
from models.recsys.base import NEG, round_scores, row_entries
from models.recsys.context import EVENT_WEIGHT, UserContext
from models.recsys.factors import ALSRecommender
from models.recsys.neighbours import EASERecommender, ItemKNNRecommender
from models.recsys.popularity import BuyAgainRecommender, PopularityRecommender

_KNOWN_KINDS = (
    ALSRecommender,
    ItemKNNRecommender,
    EASERecommender,
    BuyAgainRecommender,
    PopularityRecommender,
)
_LOCK = threading.Lock()


class FoldIn:
    """What one engine's answers are folded from: the components' arrays, prepared once per engine."""

    def __init__(self, engine: RecommendationEngine) -> None:
        self.engine = engine
        model = engine.model
        data = engine.data
        self.m = len(data.items)
        self.components = dict(model.components_)
        self.usable = all(isinstance(c, _KNOWN_KINDS) for c in self.components.values()) and all(
            M.has_canonical_format for M in (data.weights, data.purchases, data.last_purchase_days)
        )
        self.item_rows = {str(p): j for j, p in enumerate(data.items.ids.tolist())}
        self.boost = None
        for c in self.components.values():
            if isinstance(c, PopularityRecommender):
                from models.recsys.blend import normalise

                self.popularity = normalise(np.asarray(c.pop_, dtype=np.float64)[None, :].copy())
            elif isinstance(c, EASERecommender):
                pos = np.full(self.m, -1, np.int64)
                pos[c.keep_] = np.arange(len(c.keep_))
                self.ease_pos = pos
            elif isinstance(c, ALSRecommender):
                self.item_factors = np.asarray(c.model_.item_factors)
                self.item_factors_t = self.item_factors.T
                self.user_factors = np.asarray(c.model_.user_factors)
            elif isinstance(c, BuyAgainRecommender):
                self.boost = np.where(data.item_replenishable, c.config.replenish_boost, 1.0)

    # -- the customer's rows, session included ---------------------------------------------------
    def context(self, row: int, session: Sequence[tuple[str, str]]) -> tuple[UserContext, dict[str, Any]]:
        """A one-customer context equal to ``build_context(data, [customer], {customer: session})``, and the
        dense rows the component scores are computed from."""
        data = self.engine.data
        W, P, L, R = (
            _row(M, row) for M in (data.weights, data.purchases, data.last_purchase_days, data.returned)
        )
        add: dict[int, float] = {}
        bought: dict[int, float] = {}
        has_session = False
        for pid, etype in session:
            j = self.item_rows.get(pid, -1)
            if j < 0:
                continue
            has_session = True
            add[j] = add.get(j, 0.0) + EVENT_WEIGHT.get(etype, 0.25)
            if etype == "purchase":
                bought[j] = bought.get(j, 0.0) + 1.0
        if add:
            W = _plus(W, add, self.m)
        if bought:
            P = _plus(P, bought, self.m)
            L = _maximum(L, bought, self.m)
        ids = np.array([data.users.ids[row]], dtype=object)
        ctx = UserContext(ids, np.array([row]), W, P, L, R, np.array([has_session]))
        return ctx, {"has_session": has_session}

    # -- component scores ------------------------------------------------------------------------
    def component_scores(self, ctx: UserContext, names: set[str]) -> dict[str, np.ndarray] | None:
        """Normalised scores (1 x items) of the fitted components among ``names``, as
        :meth:`BlendRecommender.component_scores` gives them; None when one cannot be folded in here."""
        from models.recsys.blend import normalise

        out = {}
        for n, c in self.components.items():
            if n not in names:
                continue
            if isinstance(c, PopularityRecommender):
                out[n] = self.popularity.copy()
                continue
            if isinstance(c, ItemKNNRecommender):
                s = self._knn(c, ctx.W)
            elif isinstance(c, EASERecommender):
                s = self._ease(c, ctx.W)
            elif isinstance(c, ALSRecommender):
                s = self._als(c, ctx)
            elif isinstance(c, BuyAgainRecommender):
                s = self._buy_again(ctx)
            else:
                return None
            out[n] = normalise(s)
        return out

    def _knn(self, c: ItemKNNRecommender, W: sp.csr_matrix) -> np.ndarray:
        sim = c.sim_
        at, lengths = row_entries(sim, W.indices)  # the rows' entries, in order
        # bincount adds in input order, item after item, as scipy's sparse product does: the same floats
        acc = np.bincount(
            sim.indices[at], weights=np.repeat(W.data, lengths) * sim.data[at], minlength=self.m
        )
        return np.where(acc > 0, acc, NEG)[None, :]

    def _ease(self, c: EASERecommender, W: sp.csr_matrix) -> np.ndarray:
        acc = np.zeros(len(c.keep_), np.float32)
        for j, v in zip(W.indices.tolist(), W.data.tolist(), strict=True):
            p = self.ease_pos[j]
            if p >= 0 and v > 0:
                acc += c.B_[p]
        out = np.full((1, self.m), NEG)
        out[0, c.keep_] = acc.astype(np.float64)
        return out

    def _als(self, c: ALSRecommender, ctx: UserContext) -> np.ndarray:
        if ctx.has_session[0]:
            W = ctx.W
            row = sp.csr_matrix(
                ((W.data * c.idf_scale_).astype(np.float32), W.indices, W.indptr), shape=W.shape
            )
            vec = np.asarray(c.model_.recalculate_user(0, row)).ravel()[None, :]
        else:
            vec = self.user_factors[ctx.rows[0]][None, :]
        return np.asarray(vec @ self.item_factors_t, dtype=np.float64)

    def _buy_again(self, ctx: UserContext) -> np.ndarray:
        out = np.full((1, self.m), NEG)
        P, L = ctx.P, ctx.L
        cols, cnt = P.indices, P.data
        if not len(cols):
            return out
        last = np.zeros(self.m)
        last[L.indices] = L.data
        last = last[cols].astype(float)
        rec = np.divide(1.0, np.log2(1 + last), out=np.zeros_like(last), where=last > 0)
        assert self.boost is not None
        out[0, cols] = (cnt + 0.5 * rec) * self.boost[cols]
        return out

    # -- the answer --------------------------------------------------------------------------------
    def recommend(
        self, customer_id: str, k: int, rules: BusinessRules, session: Sequence[tuple[str, str]]
    ) -> Recommendation | None:
        """The engine's answer to ``recommend_one(customer_id, k, rules, session)`` for a known customer, or
        None when it must be computed in full (unknown customer, no finite score, unknown components)."""
        if not self.usable:
            return None
        engine, model = self.engine, self.engine.model
        row = int(engine.data.users.row(customer_id))
        if row < 0:
            return None
        ctx, _ = self.context(row, session)
        weights = model.weights_for(rules)
        names = set(self.components)  # engine.recommend_one scores every fitted component
        comps = self.component_scores(ctx, names)
        if comps is None:
            return None
        s = model.ranked_scores(ctx, rules, comps)[0]
        top = top_k(s, k)
        top = top[np.isfinite(s[top])]
        if not len(top):
            return None
        reasons = engine._reasons(ctx, comps, top, weights)
        ids = engine.product_ids
        return Recommendation(
            customer_id,
            "model",
            [
                {PRODUCT_ID: ids[j], SCORE: sc, RANK: r + 1, "reason": reasons[r]}
                for r, (j, sc) in enumerate(zip(top.tolist(), round_scores(s[top]), strict=True))
            ],
        )


def for_engine(engine: RecommendationEngine) -> FoldIn:
    """The engine's :class:`FoldIn`, prepared at the first call and kept with the engine."""
    f = engine.__dict__.get("_fold_in")
    if f is None:
        with _LOCK:
            f = engine.__dict__.get("_fold_in")
            if f is None:
                f = engine.__dict__["_fold_in"] = FoldIn(engine)
    return f  # type: ignore[no-any-return]


def recommend(
    engine: RecommendationEngine,
    customer_id: str,
    k: int,
    rules: BusinessRules,
    session: Sequence[tuple[str, str]],
) -> Recommendation | None:
    """:meth:`FoldIn.recommend` of the engine's prepared fold-in."""
    return for_engine(engine).recommend(customer_id, k, rules, session)


def _row(M: sp.csr_matrix, r: int) -> sp.csr_matrix:
    """Row ``r`` of ``M`` as a one-row CSR matrix sharing its arrays (no copy, no checks)."""
    a, b = M.indptr[r], M.indptr[r + 1]
    return sp.csr_matrix(
        (M.data[a:b], M.indices[a:b], np.array([0, b - a], dtype=M.indptr.dtype)),
        shape=(1, M.shape[1]),
        copy=False,
    )


def _plus(M: sp.csr_matrix, add: dict[int, float], m: int) -> sp.csr_matrix:
    """``M + S`` for a one-row ``M`` and the row ``S`` holding ``add``, as scipy's canonical sum gives it
    (sorted columns, zero results dropped)."""
    dense = np.zeros(m, dtype=np.result_type(M.dtype, np.float64))
    present = np.zeros(m, bool)
    dense[M.indices] = M.data
    present[M.indices] = True
    cols = np.fromiter(add.keys(), np.int64, len(add))
    dense[cols] = dense[cols] + np.fromiter(add.values(), np.float64, len(add))
    present[cols] = True
    keep = np.flatnonzero(present & (dense != 0))
    return _csr(dense[keep], keep, m)


def _maximum(M: sp.csr_matrix, other: dict[int, float], m: int) -> sp.csr_matrix:
    """Element-wise maximum of a one-row ``M`` and the row holding ``other`` (zero results dropped)."""
    dense = np.zeros(m, dtype=np.result_type(M.dtype, np.float64))
    dense[M.indices] = M.data
    cols = np.fromiter(other.keys(), np.int64, len(other))
    dense[cols] = np.maximum(dense[cols], np.fromiter(other.values(), np.float64, len(other)))
    keep = np.flatnonzero(dense != 0)
    return _csr(dense[keep], keep, m)


def _csr(data: np.ndarray, cols: np.ndarray, m: int) -> sp.csr_matrix:
    out = sp.csr_matrix((data, cols.astype(np.int32), np.array([0, len(cols)], np.int32)), shape=(1, m))
    out.has_canonical_format = True
    return out
