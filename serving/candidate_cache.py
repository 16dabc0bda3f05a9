"""Answers from the candidates ranked when the model was built: a lookup plus the request's own filters.

The engine keeps every known customer's top candidates under the default rules
(:mod:`models.recsys.candidates`). A request of such a customer without live events is answered from them
when they can answer it exactly (the same items, scores and reasons as the full computation): its category
filters and exclude-bought are applied to the ranked list. Requests they cannot answer (a live session,
relaxed rules, discovery weights or a re-ranker, too few candidates left) are computed by the engine.

Example
-------
>>> rec = recommend(engine, "C0000001", k=10)               # doctest: +SKIP
>>> lookup(engine, "C0000001", k=10) == rec                  # doctest: +SKIP
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from features.schema import PRODUCT_ID, RANK, SCORE
from models.recsys import BusinessRules, Recommendation, RecommendationEngine

_DEFAULT = BusinessRules()


def recommend(engine: RecommendationEngine, customer_id: str, k: int = 10, rules: BusinessRules | None = None,
              session: list[tuple[str, str]] | None = None, region: str | None = None) -> Recommendation:
    """The engine's answer: looked up in the candidates when they can answer it (no session events), else
    computed by :meth:`RecommendationEngine.recommend_one`."""
    rules = rules or _DEFAULT
    if not session:
        cached = lookup(engine, customer_id, k, rules)
        if cached is not None:
            return cached
    return engine.recommend_one(customer_id, k, rules, session=session, region=region)


def lookup(engine: RecommendationEngine, customer_id: str, k: int = 10, rules: BusinessRules | None = None
           ) -> Recommendation | None:
    """The answer from the candidates (no live session), or None when it must be computed."""
    if engine.candidates_ is None:
        return None
    row = engine.data.users.row(customer_id)
    items = cached_items(engine, row, k, rules or _DEFAULT) if row >= 0 else None
    # no candidate left (a one-product shop's customer who returned it): the computation answers it, with
    # the fallback it marks as such
    return Recommendation(customer_id, "model", items) if items else None


def cached_items(engine: RecommendationEngine, row: int, k: int, rules: BusinessRules
                 ) -> list[dict[str, Any]] | None:
    """The top k of customer ``row`` from the candidates, or None when they cannot answer exactly."""
    c, model = engine.candidates_, engine.model
    if c is None or not (rules.exclude_returned and rules.exclude_out_of_stock):
        return None
    if model.weights_for(rules) is not model.weights_ or model.reranker_for(rules) is not None:
        return None  # ranked with other weights, or re-ranked
    items = c.items[row]  # ranked candidates, padded with -1 when the customer has fewer than n
    pos: Any
    if rules.categories is None and not rules.exclude_categories and not rules.exclude_bought:
        # the storefront default: the first k as ranked (the hot path: no numpy work beyond slicing)
        if k > len(items) and items[-1] >= 0:
            return None
        pos = slice(0, k)
    else:
        pos = _filtered(engine, row, items, k, rules)
        if pos is None:
            return None
    pids, texts = engine.product_ids, engine.reason_table
    return [{PRODUCT_ID: pids[j], SCORE: sc, RANK: r, "reason": texts[q]}
            for r, (j, sc, q) in enumerate(zip(items[pos].tolist(), c.scores[row, pos].tolist(),
                                               c.reason[row, pos].tolist(), strict=True), 1) if j >= 0]


def _filtered(engine: RecommendationEngine, row: int, items: np.ndarray, k: int, rules: BusinessRules
              ) -> np.ndarray | None:
    """Positions of the first k candidates the request's filters keep, or None when too few are left of a
    list that was cut at n (the computation could find others)."""
    data = engine.data
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
    return None if len(pos) < k and not complete else pos
