"""What the storefront calls: the production model, rules, cold-start fallbacks and reasons.

Example
-------
>>> engine = RecommendationEngine(blend, TrendingRecommender().fit(data)).precompute()   # doctest: +SKIP
>>> engine.recommend_one("C0000001", k=5).items[0]                                       # doctest: +SKIP
{'product_id': 'P017', 'score': 0.912, 'rank': 1, 'reason': 'buy it again'}
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np

from features.interactions import InteractionData
from features.schema import PRODUCT_ID, RANK, SCORE
from models.metrics import top_k
from models.recsys.base import NEG, ranked_frame, round_scores
from models.recsys.blend import BlendRecommender, Weights
from models.recsys.candidates import Candidates, top_candidates
from models.recsys.context import BusinessRules, UserContext, build_context, rules_mask
from models.recsys.popularity import TrendingRecommender
from models.recsys.reasons import reason_codes, reason_table


@dataclass
class Recommendation:
    customer_id: str
    source: str  # "model" or "fallback"
    items: list[dict[str, Any]] = field(default_factory=list)


class RecommendationEngine:
    """The production model, rules, cold-start fallbacks and reasons, for one customer at a time.

    Unknown customers with no session get trending products in their region (or overall), marked
    ``fallback``. Customers with live session events are folded in. :meth:`precompute` keeps every known
    customer's ranked candidates (``candidates_``) for :mod:`serving.candidate_cache` to answer from.
    """

    def __init__(self, model: BlendRecommender, trending: TrendingRecommender,
                 product_names: dict[str, str] | None = None) -> None:
        self.model, self.trending = model, trending
        self.names = product_names or {}
        self.candidates_: Candidates | None = None

    def precompute(self, n: int = 50, batch: int = 500) -> Self:
        """Rank the top ``n`` candidates of every known customer once (see :func:`top_candidates`) and keep
        them with the engine, with the reason texts and product ids the answers are built from."""
        self.candidates_ = top_candidates(self.model, n, batch)
        for name in ("reason_table", "product_ids"):  # built now, not at the first request
            self.__dict__.pop(name, None)
            getattr(self, name)
        return self

    @property
    def data(self) -> InteractionData:
        return self.model._require()

    @functools.cached_property
    def reason_table(self) -> list[str]:
        """Every reason text, indexed by reason code (see :mod:`models.recsys.reasons`)."""
        return reason_table(self.product_ids, self.names)

    @functools.cached_property
    def product_ids(self) -> list[str]:
        return [str(p) for p in self.data.items.ids.tolist()]

    def recommend_one(self, customer_id: str, k: int = 10, rules: BusinessRules | None = None,
                      session: list[tuple[str, str]] | None = None, region: str | None = None
                      ) -> Recommendation:
        """The top ``k`` products for one customer, computed (``session``: live (product_id, event_type)
        events; ``region``: where an unknown customer is, for the fallback)."""
        rules = rules or BusinessRules()
        ctx = build_context(self.data, [customer_id], {customer_id: session} if session else None)
        if ctx.known[0]:
            rec = self._from_model(ctx, customer_id, k, rules)
            if rec is not None:
                return rec
        return self._fallback(ctx, customer_id, k, rules, region)

    def _from_model(self, ctx: UserContext, customer_id: str, k: int, rules: BusinessRules
                    ) -> Recommendation | None:
        comps = self.model.component_scores(ctx)
        weights = self.model.weights_for(rules)
        s = self.model.ranked_scores(ctx, rules, comps)[0]
        top = _finite_top(s, k)
        if not len(top):
            return None
        reasons = self._reasons(ctx, comps, top, weights)
        ids = self.data.items.ids
        return Recommendation(customer_id, "model", [
            {PRODUCT_ID: str(ids[j]), SCORE: sc, RANK: r + 1, "reason": reasons[r]}
            for r, (j, sc) in enumerate(zip(top, round_scores(s[top]), strict=True))])

    def _fallback(self, ctx: UserContext, customer_id: str, k: int, rules: BusinessRules,
                  region: str | None) -> Recommendation:
        """Trending in the customer's region (given, or known from the data), else overall."""
        data = self.data
        reg = region
        if reg is None and ctx.rows[0] >= 0:
            reg = data.user_region[ctx.rows[0]]
        in_region = reg is not None and str(reg) in self.trending.region_
        s = np.where(rules_mask(data, ctx, rules)[0], self.trending.scores_for_region(reg), NEG)
        reason = f"popular in your region ({reg})" if in_region else "trending now"
        top = _finite_top(s, k)
        return Recommendation(customer_id, "fallback", [
            {PRODUCT_ID: str(data.items.ids[j]), SCORE: sc, RANK: r + 1, "reason": reason}
            for r, (j, sc) in enumerate(zip(top, round_scores(s[top]), strict=True))])

    def _reasons(self, ctx: UserContext, comps: dict[str, np.ndarray], top: np.ndarray,
                 weights: Weights | None = None) -> list[str]:
        """Why each of the top items is shown, computed for all of them at once."""
        codes = reason_codes(self.model, ctx.P.tocsr(), ctx.W.tocsr(), 0, {n: v[0] for n, v in comps.items()},
                             top, weights)
        return [self.reason_table[q] for q in codes.tolist()]

    def similar_items(self, product_id: str, k: int = 10) -> tuple[str, list[dict[str, Any]]]:
        """Products similar to ``product_id`` ("model"), or trending ones for an unknown product
        ("fallback")."""
        df = self.model.similar_items([product_id], k)
        if len(df):
            return "model", [
                {PRODUCT_ID: r.similar_product_id, SCORE: round(float(r.score), 6), RANK: int(r.rank)}
                for r in df.itertuples()]
        top = ranked_frame(np.where(self.data.item_ok, self.trending.overall_, NEG)[None, :], k,
                           np.array([product_id], dtype=object), self.data.items.ids)
        return "fallback", [{PRODUCT_ID: r.product_id, SCORE: round(float(r.score), 6), RANK: int(r.rank)}
                            for r in top.itertuples()]


def _finite_top(s: np.ndarray, k: int) -> np.ndarray:
    """Columns of the k best finite scores of one row, best first."""
    top = top_k(s, k)
    return top[np.isfinite(s[top])]
