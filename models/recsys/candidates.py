"""The serving candidates: every known customer's top ``n`` products under the default rules, ranked once
when the model is built and kept with it as plain arrays.

A storefront request for such a customer is then a lookup plus its own filters (category, exclude-bought),
done by :mod:`serving.candidate_cache`, with exactly the items, scores and reasons of the full computation.

Example
-------
>>> cand = top_candidates(blend, n=50)             # doctest: +SKIP
>>> cand.items.shape == (len(blend.data.users), 50)  # doctest: +SKIP
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.metrics import top_k
from models.recsys.base import NEG, round_scores
from models.recsys.blend import BlendRecommender, blended
from models.recsys.context import BusinessRules, build_context, rules_mask
from models.recsys.reasons import batch_reason_codes, dense_similarity
from models.recsys.threads import in_threads


@dataclass(frozen=True)
class Candidates:
    """Ranked candidates per known customer (rows in the order of the model's user id map)."""

    items: np.ndarray
    """customers x n item columns, best first; -1 pads customers with fewer than n scorable items."""
    scores: np.ndarray
    """Their scores as served (6 decimals); -inf where padded."""
    reason: np.ndarray
    """Their reason codes (see :mod:`models.recsys.reasons`)."""


def top_candidates(model: BlendRecommender, n: int = 50, batch: int = 500) -> Candidates:
    """Rank the top ``n`` candidates of every customer ``model`` knows, ``batch`` customers at a time (the
    config's ``score_threads`` batches at once), with the default rules, no session and the main weights
    (the re-ranker does not take part: discovery requests are computed). Reasons are computed with the main
    weights too."""
    data = model._require()
    nu = len(data.users)
    items = np.full((nu, n), -1, np.int32)
    scores = np.full((nu, n), NEG)
    reason = np.zeros((nu, n), np.int32)
    # only the weighed components: one without weight adds nothing to the blend or to a reason's lead
    weighed: set[str] | None = {c for c, w in model.weights_.items() if w} & set(model.components_)
    weighed = weighed or None
    sim = dense_similarity(model)

    def rank(a: int) -> None:  # writes the rows of customers a..a + batch (each batch its own rows)
        ctx = build_context(data, data.users.ids[a:a + batch])
        comps = model.component_scores(ctx, weighed)
        s = np.where(rules_mask(data, ctx, BusinessRules()), blended(comps, model.weights_), NEG)
        P, W = ctx.P.tocsr(), ctx.W.tocsr()
        P.sum_duplicates()
        ranked = top_k(s, n)
        best = np.take_along_axis(s, ranked, 1)
        ok = np.isfinite(best)  # -inf sorts last: the finite ones are a prefix of each row
        b, m = slice(a, a + len(ranked)), ranked.shape[1]  # fewer than n columns in a small catalogue
        items[b, :m] = np.where(ok, ranked, -1)
        scores[b, :m] = np.where(ok, round_scores(best), NEG)
        reason[b, :m] = np.where(ok, batch_reason_codes(model, P, W, comps, ranked, dense_sim=sim), 0)

    in_threads(rank, range(0, nu, batch), getattr(model.config, "score_threads", 1))
    return Candidates(items, scores, reason)
