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
- buy-again: from the purchase counts and days of the customer's bought items; popularity and rising
  products: one row each, the same for everyone, normalised once;
- TIFU-KNN: its own score of the customer's stored row (it reads the purchase baskets, never the session).

Blending, business rules, the discovery re-ranker, the top k and the reasons are the model's own functions,
called on a one-customer context built from those arrays. Anything this module does not know how to fold in
(an unknown customer, a component of another kind, a non-canonical sparse matrix) returns None, and the caller
computes the answer in full; ``tests/serving/test_fold_in.py`` checks the answers are the same.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from features.schema import PRODUCT_ID, RANK, SCORE
from models.recsys import BusinessRules, Recommendation, RecommendationEngine
from models.recsys.base import NEG, round_scores, row_entries
from models.recsys.blend import normalise_by_max
from models.recsys.context import EVENT_WEIGHT, UserContext, rules_mask
from models.recsys.factors import ALSRecommender
from models.recsys.neighbours import EASERecommender, ItemKNNRecommender
from models.recsys.popularity import BuyAgainRecommender, PopularityRecommender, RisingRecommender
from models.recsys.reasons import _POPULAR, _SIMILAR, AGAIN, GENERIC, LEADS, POPULAR, REGULAR
from models.recsys.tifu import TIFUKNNRecommender
from serving import fold_in_kernels, fold_in_reasons
from serving.fold_in_reasons import KnnTerms

try:
    from implicit.cpu import _als as _implicit_als
except ImportError:  # another implicit build: recalculate_user is called
    _implicit_als = None

_KNOWN_KINDS = (
    ALSRecommender,
    ItemKNNRecommender,
    EASERecommender,
    BuyAgainRecommender,
    PopularityRecommender,
    RisingRecommender,
    TIFUKNNRecommender,
)
_LOCK = threading.Lock()
_SAME, _KNN, _EASE, _ALS, _BUY, _TIFU, _OTHER = (
    fold_in_kernels.SAME, fold_in_kernels.KNN, fold_in_kernels.EASE, fold_in_kernels.ALS, fold_in_kernels.BUY,
    fold_in_kernels.TIFU, fold_in_kernels.OTHER)
_SIMILAR_MASK = np.array([i in _SIMILAR for i in range(len(LEADS))])
_POPULAR_MASK = np.array([i in _POPULAR for i in range(len(LEADS))])
_FIXED = np.array([REGULAR, AGAIN, POPULAR, GENERIC], np.int64)
_NONE_BOOL = np.zeros(0, bool)
_NO_MATRIX = np.zeros((0, 0), np.float32)
_NO_SCORES = np.zeros(0, np.float32)
_NUMPY = object()
""":meth:`FoldIn._compiled`'s answer when the numpy code must compute this one."""
log = logging.getLogger(__name__)
Part = tuple[np.ndarray | None, np.ndarray]
"""A component's normalised scores for one customer: (columns, scores there; 0 elsewhere), or (None, the
whole row)."""


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
        self.names = set(self.components)
        self.replenishable = np.asarray(data.item_replenishable, dtype=bool)
        knn = self.components.get("item_knn")
        self.terms_reasons = isinstance(knn, ItemKNNRecommender) and knn.sim_.has_canonical_format
        """Whether the reasons are found from the item-to-item terms (:mod:`serving.fold_in_reasons`): a
        similarity matrix without duplicate entries (the model's reasons would sum them)."""
        self.boost = None
        self._banned_items: dict[tuple[Any, ...], np.ndarray] = {}
        """The columns forbidden to everyone, by (exclude_out_of_stock, categories, exclude_categories)."""
        self.same_for_all: dict[str, np.ndarray] = {}
        """The normalised row of each component that scores every customer alike (popularity, rising)."""
        for n, c in self.components.items():
            if isinstance(c, PopularityRecommender | RisingRecommender):
                from models.recsys.blend import normalise

                row = c.pop_ if isinstance(c, PopularityRecommender) else c.rise_
                self.same_for_all[n] = normalise(np.asarray(row, dtype=np.float64)[None, :].copy())
            elif isinstance(c, EASERecommender):
                pos = np.full(self.m, -1, np.int64)
                pos[c.keep_] = np.arange(len(c.keep_))
                self.ease_pos = pos
            elif isinstance(c, ALSRecommender):
                self.item_factors = np.asarray(c.model_.item_factors)
                self.item_factors_t = self.item_factors.T
                self.user_factors = np.asarray(c.model_.user_factors)
                self.direct_als: bool | None = None  # decided at the first session
            elif isinstance(c, BuyAgainRecommender):
                self.boost = np.where(data.item_replenishable, c.config.replenish_boost, 1.0)
        self.order = [n for n in self.components if n in self.names]
        """The components in the order the model scores them: row ``i`` of a compiled fold-in's scores."""
        self.kinds: list[tuple[str, int, Any]] = [
            (n, _kind(n, self.components[n], self.same_for_all), self.components[n]) for n in self.order]
        """Each scored component's name, how it is scored (``_KNN``, ...) and the component."""
        self._kernel_inputs()
        self.compiled = fold_in_kernels.AVAILABLE and self.usable
        """Whether :meth:`_compiled` answers (numba is there): else the numpy code below."""
        self.als_compiled = False
        """Whether ALS's least-squares step is :func:`fold_in_kernels.als_solve` (checked at the first session
        against implicit's own step on real rows: :meth:`_check_als`), else implicit's."""
        self.als_checked = False
        self.als_A0: np.ndarray | None = None
        self.als_fma = 0
        """How many of each ``saxpy``'s elements OpenBLAS fuses (:func:`fold_in_kernels.fma_splits`)."""
        self._plans: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    def _kernel_inputs(self) -> None:
        """What the compiled kernels read besides the customer's rows, arranged once."""
        kinds = [kind for _, kind, _ in self.kinds]
        self.kind_codes = np.array(kinds, np.int64)
        self.other_kind = _OTHER in kinds or any(kinds.count(x) > 1 for x in (_KNN, _EASE, _ALS, _BUY))
        """A component the compiled kernels do not score, or two of one kind: the numpy code answers."""
        self.filled = [(i, n, kind, c) for i, (n, kind, c) in enumerate(self.kinds) if kind in (_SAME, _TIFU)]
        """The rows of the compiled scores filled before the kernels run (the same for all; TIFU-KNN's)."""
        by_kind = {kind: c for _, kind, c in self.kinds}
        self.als: ALSRecommender | None = by_kind.get(_ALS)
        knn, ease = by_kind.get(_KNN), by_kind.get(_EASE)
        self.knn_arrays = ((knn.sim_.indptr, knn.sim_.indices, knn.sim_.data) if knn is not None
                           else (np.zeros(1, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float64)))
        self.ease_arrays = ((self.ease_pos, ease.B_, ease.keep_) if ease is not None
                            else (np.zeros(0, np.int64), _NO_MATRIX, np.zeros(0, np.int64)))
        self.boost_or_none = self.boost if self.boost is not None else np.zeros(0)

    # -- the customer's rows, session included ---------------------------------------------------
    def context(self, row: int, session: Sequence[tuple[str, str]]) -> tuple[UserContext, dict[str, Any]]:
        """A one-customer context equal to ``build_context(data, [customer], {customer: session})``, and the
        dense rows the component scores are computed from."""
        data = self.engine.data
        W, P, L, R = (
            _row(M, row) for M in (data.weights, data.purchases, data.last_purchase_days, data.returned)
        )
        add, bought = self._session_items(session)
        has_session = bool(add)  # a product the models know
        if add:
            W = _plus(W, add, self.m)
        if bought:
            P = _plus(P, bought, self.m)
            L = _maximum(L, bought, self.m)
        ids = np.array([data.users.ids[row]], dtype=object)
        ctx = UserContext(ids, np.array([row]), W, P, L, R, np.array([has_session]))
        return ctx, {"has_session": has_session}

    def _session_items(self, session: Sequence[tuple[str, str]]) -> tuple[dict[int, float], dict[int, float]]:
        """The session's weight per known product's column (its events' weights added in order) and its
        purchases per column."""
        add: dict[int, float] = {}
        bought: dict[int, float] = {}
        for pid, etype in session:
            j = self.item_rows.get(pid, -1)
            if j < 0:
                continue
            add[j] = add.get(j, 0.0) + EVENT_WEIGHT.get(etype, 0.25)
            if etype == "purchase":
                bought[j] = bought.get(j, 0.0) + 1.0
        return add, bought

    # -- component scores ------------------------------------------------------------------------
    def component_scores(self, ctx: UserContext, names: set[str]) -> dict[str, np.ndarray] | None:
        """Normalised scores (1 x items) of the fitted components among ``names``, as
        :meth:`BlendRecommender.component_scores` gives them; None when one cannot be folded in here."""
        got = self._scored(ctx, names)
        return None if got is None else {n: self._full(p) for n, p in got[0].items()}

    def _scored(self, ctx: UserContext, names: set[str]) -> tuple[dict[str, Part], KnnTerms | None] | None:
        """The normalised scores of the fitted components among ``names`` as :data:`Part` (the columns a
        component scores and its scores there, 0 elsewhere; or None and the whole row), and the terms of the
        item-to-item score (for the reasons; None without it)."""
        out: dict[str, Part] = {}
        terms = None
        for n, c in self.components.items():
            if n not in names:
                continue
            if n in self.same_for_all:
                out[n] = (None, self.same_for_all[n][0])
                continue
            if isinstance(c, ItemKNNRecommender):
                t = self._knn_terms(c, ctx.W)
                if n == "item_knn":
                    terms = t
                # bincount adds in input order, item after item, as scipy's sparse product does
                acc = np.bincount(t.cols, weights=t.prod, minlength=self.m)
                cols = np.flatnonzero(acc > 0)
                part = _normalised(cols, acc[cols], self.m)
            elif isinstance(c, EASERecommender):
                part = _normalised(c.keep_, self._ease_acc(c, ctx.W), self.m)
            elif isinstance(c, ALSRecommender):
                part = _normalised(None, self._als(c, ctx)[0], self.m)
            elif isinstance(c, BuyAgainRecommender):
                cols, v = self._buy_again_part(ctx)
                part = _normalised(cols, v, self.m)
            elif isinstance(c, TIFUKNNRecommender):
                # TIFU-KNN scores the stored baskets only (a session changes nothing): the model's own
                # score of the customer's row, scaled by its largest as the blend does
                part = (None, normalise_by_max(c.score(ctx))[0])
            else:
                return None
            out[n] = part
        return out, terms

    def _full(self, part: Part) -> np.ndarray:
        """A :data:`Part` as the row (1 x items) the model's ``component_scores`` gives."""
        cols, v = part
        if cols is None:
            return v[None, :]
        out = np.zeros((1, self.m))
        out[0, cols] = v
        return out

    def _knn_terms(self, c: ItemKNNRecommender, W: sp.csr_matrix) -> KnnTerms:
        """The terms of the sparse product ``W @ sim`` (one customer), in the order it adds them."""
        sim = c.sim_
        at, lengths = row_entries(sim, W.indices)  # the rows' entries, in order
        return KnnTerms(sim.indices[at], np.repeat(W.data, lengths) * sim.data[at],
                        np.repeat(W.indices, lengths))

    def _ease_acc(self, c: EASERecommender, W: sp.csr_matrix) -> np.ndarray:
        """EASE's scores of its kept items (float64 of the model's float32 sums)."""
        p = self.ease_pos[W.indices]
        p = p[(p >= 0) & (W.data > 0)]
        # the rows of B added one after the other in W's order, in float32 (a sum over axis 0 adds row by
        # row, as the model's product does)
        acc = c.B_[p].sum(axis=0, dtype=np.float32) if len(p) else np.zeros(len(c.keep_), np.float32)
        return acc.astype(np.float64)

    def _als(self, c: ALSRecommender, ctx: UserContext) -> np.ndarray:
        W = ctx.W
        return self._als_scores(c, int(ctx.rows[0]), W.indices, W.data, bool(ctx.has_session[0]))[None, :]

    def _recalculate_user(self, c: ALSRecommender, row: sp.csr_matrix) -> np.ndarray:
        """``c.model_.recalculate_user(0, row)``: implicit's own least-squares step called directly, on one
        thread, when the model is implicit's CPU ALS with ``alpha`` 1 (checked against ``recalculate_user``
        once per engine); its checks and set-up cost as much as the solve."""
        m = c.model_
        if self.direct_als is None:
            self.direct_als = _direct_als_ok(m, row)
        if not self.direct_als:
            return np.asarray(m.recalculate_user(0, row)).ravel()
        return _least_squares(m, row)

    def _buy_again_part(self, ctx: UserContext) -> tuple[np.ndarray, np.ndarray]:
        """The columns buy-again scores (the customer's bought items) and its scores there."""
        P, L = ctx.P, ctx.L
        cols, cnt = P.indices, P.data
        if not len(cols):
            return cols, np.zeros(0)
        last = np.zeros(self.m)
        last[L.indices] = L.data
        last = last[cols].astype(float)
        rec = np.divide(1.0, np.log2(1 + last), out=np.zeros_like(last), where=last > 0)
        assert self.boost is not None
        return cols, (cnt + 0.5 * rec) * self.boost[cols]

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
        if self.compiled:
            add, bought = self._session_items(session)
            got = _NUMPY if bought else self._compiled(row, k, rules, add)  # purchases: the numpy code
            if got is not _NUMPY:
                return None if got is None else self._answer(customer_id, *got)  # type: ignore[misc]
        ctx, _ = self.context(row, session)
        weights = model.weights_for(rules)
        scored = self._scored(ctx, self.names)  # engine.recommend_one scores every fitted component
        if scored is None:
            return None
        parts, terms = scored
        comps = {n: self._full(p) for n, p in parts.items()}
        s = self._blend(parts, weights)
        s[self._banned(ctx, rules)] = NEG
        s = model.reranked(ctx, rules, comps, s[None, :])[0]  # the re-ranker's step of ranked_scores
        top = _top_k(s, k)
        top = top[np.isfinite(s[top])]
        if not len(top):
            return None
        if terms is not None and self.terms_reasons:
            P = ctx.P
            codes = fold_in_reasons.reason_codes(weights, comps, top, terms,
                                                 dict(zip(P.indices.tolist(), P.data.tolist(), strict=True)),
                                                 self.replenishable, self.m)
            table = engine.reason_table
            reasons = [table[q] for q in codes]
        else:
            reasons = engine._reasons(ctx, comps, top, weights)
        return self._answer(customer_id, top, s, reasons)

    def _answer(self, customer_id: str, top: np.ndarray, s: np.ndarray, reasons: list[str]) -> Recommendation:
        ids = self.engine.product_ids
        return Recommendation(
            customer_id,
            "model",
            [
                {PRODUCT_ID: ids[j], SCORE: sc, RANK: r + 1, "reason": reasons[r]}
                for r, (j, sc) in enumerate(zip(top.tolist(), round_scores(s[top]), strict=True))
            ],
        )

    # -- the same answer, compiled (:mod:`serving.fold_in_kernels`) ---------------------------------------
    def _compiled(self, row: int, k: int, rules: BusinessRules, add: dict[int, float]
                  ) -> tuple[np.ndarray, np.ndarray, list[str]] | None | object:
        """:meth:`recommend`'s top items, scores and reasons computed by the compiled kernels for a session
        without purchases (``add``: its weight per known product's column) in three calls
        (:func:`fold_in_kernels.fold_prepare`, ``fold_scores``, ``fold_pick``), ALS's product with the item
        factors and any re-ranking between them; None: no finite score; ``_NUMPY``: a case the numpy code
        handles (a non-finite component score, a component of another kind)."""
        K = fold_in_kernels
        if self.other_kind:
            return _NUMPY
        engine, model, data = self.engine, self.engine.model, self.engine.data
        P, R = data.purchases, data.returned
        has_session = bool(add)
        w_idx, w_data, last, als = self._prepared(row, add)
        D, ctx = self._filled_rows(row, w_idx, w_data, has_session)
        weights = model.weights_for(rules)
        rows, wv, lead_rows, lead_w = self._plan(weights)
        knn, ease = self.knn_arrays, self.ease_arrays
        s, ok = K.fold_scores(self.kind_codes, D, w_idx, w_data, *knn, *ease, als, row, P.indptr, P.indices,
                              P.data, last, np.log2(1 + last) if len(last) else last, self.boost_or_none,
                              rows, wv, self._banned_for_all(rules), R.indptr, R.indices, R.data,
                              rules.exclude_returned, rules.exclude_bought,
                              self.replenishable if rules.allow_replenishable else _NONE_BOOL, NEG)
        if not ok:
            return _NUMPY
        if model.reranker_for(rules) is not None:
            ctx = ctx or self._context_of(row, w_idx, w_data, has_session)
            comps = {n: D[i:i + 1] for i, n in enumerate(self.order)}
            s = model.reranked(ctx, rules, comps, s[None, :])[0]
        top, exact, codes = K.fold_pick(s, min(k, self.m), self.terms_reasons, D, lead_rows, lead_w, w_idx,
                                        w_data, *knn, row, P.indptr, P.indices, P.data, self.replenishable,
                                        _SIMILAR_MASK, _POPULAR_MASK, _FIXED)
        if not exact:  # a tie at the k-th score: np.argpartition's pick, as the model's top_k
            top = _top_k(s, k)
            top = top[np.isfinite(s[top])]
            if self.terms_reasons and len(top):
                codes = K.reason_codes(D, lead_rows, lead_w, top, w_idx, w_data, *knn, *_slice(P, row),
                                       self.replenishable, _SIMILAR_MASK, _POPULAR_MASK, _FIXED)
        if not len(top):
            return None
        if self.terms_reasons:
            table = engine.reason_table
            reasons = [table[q] for q in codes.tolist()]
        else:
            ctx = ctx or self._context_of(row, w_idx, w_data, has_session)
            reasons = engine._reasons(ctx, {n: D[i:i + 1] for i, n in enumerate(self.order)}, top, weights)
        return top, s, reasons

    def _prepared(self, row: int, add: dict[int, float]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:func:`fold_in_kernels.fold_prepare` for the customer's ``row`` and the session's weights ``add``
        (the weights row with the session, the days since each bought item), and ALS's scores of every
        item in float32, as the product with the item factors gives them (empty without ALS)."""
        data, c = self.engine.data, self.als
        W, P, L = data.weights, data.purchases, data.last_purchase_days
        step = c is not None and bool(add) and self.als_checked and self.als_compiled
        w_idx, w_data, last, vec = fold_in_kernels.fold_prepare(
            row, W.indptr, W.indices, W.data, np.fromiter(add.keys(), np.int64, len(add)),
            np.fromiter(add.values(), np.float64, len(add)), P.indptr, P.indices, L.indptr, L.indices, L.data,
            step, c.idf_scale_ if c is not None else 1.0, self.als_A0 if step else _NO_MATRIX,
            self.item_factors if step else _NO_MATRIX, self.als_fma)
        if c is None:
            return w_idx, w_data, last, _NO_SCORES
        # the numpy path's float64 scores hold the same float32 values
        als = ((vec[None, :] @ self.item_factors_t)[0] if len(vec)
               else self._als_scores(c, row, w_idx, w_data, bool(add)).astype(np.float32))
        return w_idx, w_data, last, als

    def _filled_rows(self, row: int, w_idx: np.ndarray, w_data: np.ndarray, has_session: bool
                     ) -> tuple[np.ndarray, UserContext | None]:
        """The compiled scores' rows (zeros) with those the kernels do not compute filled: the components
        that score everyone alike, TIFU-KNN's own score of the customer's stored rows (and the context it was
        computed from, None without TIFU-KNN)."""
        ctx: UserContext | None = None
        D = np.zeros((len(self.order), self.m))
        for i, n, kind, comp in self.filled:
            if kind == _SAME:
                D[i] = self.same_for_all[n][0]
            else:
                ctx = ctx or self._context_of(row, w_idx, w_data, has_session)
                D[i] = normalise_by_max(comp.score(ctx))[0]
        return D, ctx

    def _context_of(self, row: int, w_idx: np.ndarray, w_data: np.ndarray, has_session: bool) -> UserContext:
        """:meth:`context` of a session without purchases whose weights row (session added) is already
        known: the same matrices, without adding the session again."""
        data = self.engine.data
        W = _csr(w_data, w_idx, self.m) if has_session else _row(data.weights, row)
        P, L, R = (_row(M, row) for M in (data.purchases, data.last_purchase_days, data.returned))
        return UserContext(np.array([data.users.ids[row]], dtype=object), np.array([row]), W, P, L, R,
                           np.array([has_session]))

    def _plan(self, weights: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For these weights: the rows of the blended components and their weights, in the weights' order
        (as :meth:`_blend` adds them), and for each of ``reasons.LEADS`` its row (-1: not fitted) and
        weight."""
        key = tuple(weights.items())
        plan = self._plans.get(key)
        if plan is None:
            at = {n: i for i, n in enumerate(self.order)}
            used = [(at[n], w) for n, w in weights.items() if w and n in at]
            plan = self._plans[key] = (
                np.array([i for i, _ in used], np.int64), np.array([w for _, w in used], np.float64),
                np.array([at.get(n, -1) for n in LEADS], np.int64),
                np.array([weights.get(n, 0.0) for n in LEADS], np.float64))
        return plan

    def _als_scores(self, c: ALSRecommender, row: int, w_idx: np.ndarray, w_data: np.ndarray,
                    has_session: bool) -> np.ndarray:
        """ALS's scores of every item (float64) for the customer's row with the session (:meth:`_als`)."""
        if has_session:
            data32 = (w_data * c.idf_scale_).astype(np.float32)
            vec = None
            if self._check_als(c, w_idx, data32):
                vec = fold_in_kernels.als_solve(self.als_A0, self.item_factors, w_idx, data32, self.als_fma)
                if not len(vec):
                    vec = None
            if vec is None:
                vec = self._recalculate_user(c, _one_row(data32, w_idx, self.m))
            v = vec[None, :]
        else:
            v = self.user_factors[row][None, :]
        return np.asarray(v @ self.item_factors_t, dtype=np.float64)[0]

    def _check_als(self, c: ALSRecommender, w_idx: np.ndarray, data32: np.ndarray) -> bool:
        """Whether :func:`fold_in_kernels.als_solve` gives implicit's factors: decided once, at the first
        session, on up to 64 stored customers' rows and this one (bit for bit), for implicit's CPU model in
        float32 whose direct step is used (:func:`_direct_als_ok`)."""
        if self.direct_als is None:
            self.direct_als = _direct_als_ok(c.model_, _one_row(data32, w_idx, self.m))
        if not self.direct_als:
            return False
        if self.als_checked:
            return self.als_compiled
        m = c.model_
        ok = fold_in_kernels.AVAILABLE and m.dtype == np.float32 and self.item_factors.flags.c_contiguous
        if ok:
            self.als_A0 = np.ascontiguousarray(m.YtY + m.regularization * np.eye(m.factors, dtype=m.dtype))
            W = self.engine.data.weights
            stored = [_slice(W, r) for r in np.flatnonzero(np.diff(W.indptr))[:64]]
            rows = [(w_idx, data32)] + [(i, (d * c.idf_scale_).astype(np.float32)) for i, d in stored]
            want = [_least_squares(m, _one_row(d, i, self.m)) for i, d in rows]
            ok = False
            try:
                solve = fold_in_kernels.als_solve
                for split in fold_in_kernels.fma_splits(m.factors):
                    if all(np.array_equal(solve(self.als_A0, self.item_factors, i, d, split), w)
                           for (i, d), w in zip(rows, want, strict=True)):
                        ok, self.als_fma = True, split
                        break
            except Exception:
                log.exception("the compiled ALS step failed: implicit's own step is used")
        self.als_compiled, self.als_checked = ok, True
        log.info("ALS fold-in step: %s", "compiled" if ok else "implicit's")
        return ok

    def _blend(self, parts: dict[str, Part], weights: Mapping[str, float]) -> np.ndarray:
        """:func:`models.recsys.blend.blended` of the parts (1-D): the same additions in the same order, a
        sparse part's only where it scores (elsewhere it adds ``w * 0.0``, which changes no sum)."""
        out = np.zeros(self.m)
        for n, w in weights.items():
            if w and n in parts:
                cols, v = parts[n]
                if cols is None:
                    out += w * v
                else:
                    out[cols] += w * v
        return out

    def _banned(self, ctx: UserContext, rules: BusinessRules) -> np.ndarray:
        """The columns :func:`models.recsys.context.rules_mask` forbids the customer of ``ctx``
        (:func:`fold_in_kernels.blend` bans the same in the compiled path)."""
        items = self._banned_for_all(rules)
        out = [items]
        if rules.exclude_returned:
            R = ctx.R
            out.append(R.indices[R.data > 0])
        if rules.exclude_bought:
            P = ctx.P
            bought = P.indices[P.data > 0]
            if rules.allow_replenishable:
                bought = bought[~self.engine.data.item_replenishable[bought]]
            out.append(bought)
        return np.concatenate(out) if len(out) > 1 else items

    def _banned_for_all(self, rules: BusinessRules) -> np.ndarray:
        """The columns the rules forbid to everyone (out of stock, categories), kept per rule set."""
        key = (rules.exclude_out_of_stock, rules.categories, rules.exclude_categories)
        items = self._banned_items.get(key)
        if items is None:
            no_one = sp.csr_matrix((1, self.m))
            ctx1 = UserContext(np.array([""], dtype=object), np.array([-1]), no_one, no_one, no_one, no_one,
                               np.zeros(1, bool))
            items = self._banned_items[key] = np.flatnonzero(~rules_mask(
                self.engine.data, ctx1, BusinessRules(exclude_returned=False, exclude_bought=False,
                                                         exclude_out_of_stock=rules.exclude_out_of_stock,
                                                         categories=rules.categories,
                                                         exclude_categories=rules.exclude_categories))[0])
        return items


def for_engine(engine: RecommendationEngine) -> FoldIn:
    """The engine's :class:`FoldIn`, prepared at the first call and kept with the engine."""
    f = engine.__dict__.get("_fold_in")
    if f is None:
        with _LOCK:
            f = engine.__dict__.get("_fold_in")
            if f is None:
                f = engine.__dict__["_fold_in"] = FoldIn(engine)
    return f  # type: ignore[no-any-return]


def warm(engine: RecommendationEngine) -> None:
    """Prepare the engine's fold-in and fold one session in with the storefront's and the discovery rules,
    so that what the first live request would otherwise pay happens at load: the compiled kernels read from
    numba's cache (or compiled, the first time on a machine) and ALS's step checked against implicit's."""
    f = for_engine(engine)
    data = engine.data
    if not f.usable or not len(data.users.ids) or not f.m:
        return
    session = [(str(data.items.ids[0]), "view")]
    bought = np.flatnonzero(np.diff(data.purchases.indptr))  # a customer with purchases: every kernel runs
    customer = str(data.users.ids[bought[0] if len(bought) else 0])
    for rules in (BusinessRules(), BusinessRules(exclude_bought=True)):
        f.recommend(customer, 10, rules, session)


def recommend(
    engine: RecommendationEngine,
    customer_id: str,
    k: int,
    rules: BusinessRules,
    session: Sequence[tuple[str, str]],
) -> Recommendation | None:
    """:meth:`FoldIn.recommend` of the engine's prepared fold-in."""
    return for_engine(engine).recommend(customer_id, k, rules, session)


def _normalised(cols: np.ndarray | None, v: np.ndarray, m: int) -> Part:
    """``normalise`` (:func:`models.recsys.blend.normalise`) of the row (1 x ``m``) holding the scores ``v``
    at columns ``cols`` (None: ``v`` is the whole row) and -inf elsewhere, as a :data:`Part`: over the
    finite scores, ``(v - lo) / span``, the same two operations per score, and 0 elsewhere. A row with a
    non-finite score among ``v`` is normalised by the model's function itself."""
    if not len(v):
        return (cols, v) if cols is not None else (None, np.zeros(m))
    lo, hi = _MIN(v), _MAX(v)  # np.float64, a float: math's checks are cheaper than numpy's on a scalar
    if not (math.isfinite(lo) and math.isfinite(hi)):  # NaN or infinite scores: the model's own handling
        from models.recsys.blend import normalise

        row = v[None, :] if cols is None else np.full((1, m), NEG)
        if cols is not None:
            row[0, cols] = v
        return None, normalise(row)[0]
    span = hi - lo
    return cols, (v - lo) / (span if math.isfinite(span) and span > 0 else 1.0)


_MIN, _MAX = np.minimum.reduce, np.maximum.reduce
"""``v.min()`` and ``v.max()`` (the same reductions) without the method's Python wrapper."""


def _top_k(s: np.ndarray, k: int) -> np.ndarray:
    """:func:`models.metrics.top_k` of one row (1-D): the same partition of the row, the same order (score,
    then column), without its handling of many rows."""
    k = min(k, len(s))
    if k <= 0:
        return np.zeros(0, np.intp)
    low = -s
    part = np.argpartition(low[None, :], k - 1, axis=1)[0, :k]
    return part[np.lexsort((part, low[part]))]  # type: ignore[no-any-return]


def _direct_als_ok(m: Any, row: sp.csr_matrix) -> bool:
    """Whether :meth:`FoldIn._recalculate_user` may call implicit's step directly for model ``m``: implicit's
    CPU model, ``alpha`` 1, and the same factors as ``recalculate_user`` for ``row``."""
    if _implicit_als is None or type(m).__module__ != "implicit.cpu.als" or getattr(m, "alpha", None) != 1.0:
        return False
    try:
        direct = _least_squares(m, row)
    except Exception:
        return False
    return bool(np.array_equal(direct, np.asarray(m.recalculate_user(0, row)).ravel()))


def _least_squares(m: Any, row: sp.csr_matrix) -> np.ndarray:
    """The factors of the one customer ``row`` by implicit's CPU least-squares step, on one thread."""
    assert _implicit_als is not None
    out = np.zeros((1, m.factors), dtype=m.dtype)
    _implicit_als._least_squares(m.YtY, row.indptr, row.indices, row.data.astype("float32"), out,
                                 m.item_factors, m.regularization, num_threads=1)
    return out[0]


def _row(M: sp.csr_matrix, r: int) -> sp.csr_matrix:
    """Row ``r`` of ``M`` as a one-row CSR matrix sharing its arrays (no copy, no checks)."""
    a, b = M.indptr[r], M.indptr[r + 1]
    return _bare(M.data[a:b], M.indices[a:b], np.array([0, b - a], dtype=M.indptr.dtype), M.shape[1])


def _one_row(data: np.ndarray, indices: np.ndarray, m: int) -> sp.csr_matrix:
    """The one-row CSR matrix of ``data`` at columns ``indices`` (valid, sorted)."""
    return _bare(data, indices, np.array([0, len(indices)], np.int32), m)


def _bare(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, m: int) -> sp.csr_matrix:
    """A one-row CSR matrix of arrays known to be valid, built without scipy's checks: its constructor
    checked the arrays, their dtypes and the shape on every call, about a fifth of a fold-in (under load,
    70 us each against 8). The same object as the constructor builds (``_BARE_OK`` says whether this scipy's
    matrices still are these attributes; if not, the constructor is used)."""
    if not _BARE_OK:
        return sp.csr_matrix((data, indices, indptr), shape=(1, m), copy=False)
    return _unchecked(data, indices, indptr, m)


def _unchecked(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, m: int) -> sp.csr_matrix:
    out = sp.csr_matrix.__new__(sp.csr_matrix)
    out.data, out.indices, out.indptr = data, indices, indptr
    out._shape = (1, m)
    out.maxprint = _MAXPRINT
    return out


def _bare_ok() -> bool:
    """Whether a matrix built by :func:`_bare` has exactly the attributes scipy's constructor gives one."""
    data, indices, indptr = np.array([1.0, 2.0]), np.array([0, 2], np.int32), np.array([0, 2], np.int32)
    ref = sp.csr_matrix((data, indices, indptr), shape=(1, 3), copy=False)
    out = _unchecked(data, indices, indptr, 3)
    return (set(vars(out)) == set(vars(ref)) and out.maxprint == ref.maxprint
            and bool((out @ out.T).toarray()[0, 0] == 5.0))


_MAXPRINT = sp.csr_matrix((1, 1)).maxprint
_BARE_OK = _bare_ok()


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
    out = _bare(data, cols.astype(np.int32), np.array([0, len(cols)], np.int32), m)
    out.has_canonical_format = True
    return out


def _slice(M: sp.csr_matrix, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Row ``r`` of ``M``: its columns and values (views)."""
    a, b = M.indptr[r], M.indptr[r + 1]
    return M.indices[a:b], M.data[a:b]


def _kind(name: str, c: Any, same_for_all: Mapping[str, np.ndarray]) -> int:
    """How :meth:`FoldIn._compiled` scores component ``c``."""
    if name in same_for_all:
        return _SAME
    for cls, kind in ((ItemKNNRecommender, _KNN), (EASERecommender, _EASE), (ALSRecommender, _ALS),
                      (BuyAgainRecommender, _BUY), (TIFUKNNRecommender, _TIFU)):
        if isinstance(c, cls):
            return kind
    return _OTHER
