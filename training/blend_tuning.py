"""Choosing the blend's weights on the weeks before the cutoff, and reusing components already fitted.

The weights maximise NDCG@k (:func:`models.metrics.ndcg`) of the blend's top k on what customers bought in
the tuning weeks: first over :data:`WEIGHT_GRID`, then EASE is added to the three best blends; the
discovery weights (requests that exclude bought products) are chosen over :data:`DISCOVERY_GRID` on the
products new to each customer.

Example
-------
>>> tuning = tune_weights(BlendRecommender(config).fit(data), truth)    # doctest: +SKIP
>>> tuning.weights, tuning.best                                          # doctest: +SKIP
({'buy_again': 1.0, 'item_knn': 0.5, 'als': 0.5, 'ease': 0.0, 'popularity': 0.1}, 0.3313)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from features.importers import is_non_product
from features.interactions import InteractionConfig, InteractionData, build_interactions
from features.io import Shop
from models.metrics import ndcg, top_k
from models.recsys import (
    COMPONENTS,
    DEFAULT_WEIGHTS,
    DISCOVERY_RULES,
    NEG,
    BlendRecommender,
    BusinessRules,
    Recommender,
    RecommenderConfig,
    blended,
    build_context,
    component_settings,
    rules_mask,
)
from training.rec_truth import new_items_truth, purchase_truth, sample_truth

log = logging.getLogger(__name__)
Grid = list[tuple[tuple[str, float], ...]]

_BASE_GRID = [
    (1.0, 1.0, 0.5, 0.1), (1.0, 0.5, 0.5, 0.1), (1.0, 1.5, 0.5, 0.05), (1.0, 1.0, 1.0, 0.1),
    (0.5, 1.0, 1.0, 0.1), (1.5, 1.0, 0.25, 0.1), (1.0, 1.0, 0.0, 0.2), (0.5, 0.5, 1.0, 0.05),
    (0.25, 0.25, 1.0, 0.0),
]
WEIGHT_GRID: Grid = [(("buy_again", b), ("item_knn", k), ("als", a), ("ease", 0.0), ("popularity", p))
                     for b, k, a, p in _BASE_GRID]
"""The blends tried first (buy-again, item-kNN, ALS and popularity; no EASE)."""
EASE_STEPS = (0.5, 1.0)
"""Tuning adds EASE at these weights to the best three blends of the grid (a second, smaller round)."""
DISCOVERY_GRID: Grid = [(("buy_again", 1.0), ("item_knn", kn), ("als", a), ("ease", e), ("popularity", 0.1))
                        for kn in (0.5, 1.0) for a in (0.5, 1.0) for e in (0.0, 1.0)]


@dataclass(frozen=True)
class BlendTuning:
    """The chosen weights and every trial: ``{"weights": ..., "ndcg@k": ...}`` in the order tried."""

    weights: dict[str, float]
    trials: list[dict[str, Any]]
    k: int

    @property
    def best(self) -> float:
        return max(t[f"ndcg@{self.k}"] for t in self.trials)


def tune_weights(model: BlendRecommender, truth: dict[str, set[str]], k: int = 10,
                 rules: BusinessRules | None = None, grid: Grid | None = None) -> BlendTuning:
    """The blend weights maximising NDCG@k on ``truth`` (purchases after ``model``'s cutoff), over ``grid``
    (default: :data:`WEIGHT_GRID`, then EASE added to its best three). The first of equals wins. ``model``
    must have all components fitted (a config without ``blend_weights``) and is not changed."""
    trial = _trial_scorer(model, truth, k, rules or BusinessRules())
    trials: list[dict[str, Any]] = []

    def run(w: dict[str, float]) -> None:
        trials.append({"weights": w, f"ndcg@{k}": trial(w)})

    for wt in grid or WEIGHT_GRID:
        run(dict(wt))
    if grid is None and "ease" in model.components_:
        for t in sorted(trials, key=lambda t: -t[f"ndcg@{k}"])[:3]:
            for e in EASE_STEPS:
                run({**t["weights"], "ease": e})
    best = max(trials, key=lambda t: t[f"ndcg@{k}"])  # the first of equals wins
    log.info("blend weights %s (validation ndcg@%d %.4f)", best["weights"], k, best[f"ndcg@{k}"])
    return BlendTuning(dict(best["weights"]), trials, k)


def tune_discovery(model: BlendRecommender, truth: dict[str, set[str]], k: int = 10) -> BlendTuning:
    """The discovery weights: NDCG@k on products new to each customer (``truth``), bought products
    excluded, over :data:`DISCOVERY_GRID`."""
    return tune_weights(model, truth, k, DISCOVERY_RULES, DISCOVERY_GRID)


def _trial_scorer(model: BlendRecommender, truth: dict[str, set[str]], k: int, rules: BusinessRules
                  ) -> Callable[[Mapping[str, float]], float]:
    """A function of blend weights giving their mean NDCG@k over the customers of ``truth`` the model knows
    (component scores computed once)."""
    data = model._require()
    users = [u for u in truth if u in data.users]
    ctx = build_context(data, users)
    comps = model.component_scores(ctx)
    allowed = ctx.known[:, None] & rules_mask(data, ctx, rules)
    rel = np.zeros((len(users), len(data.items)), bool)
    for i, u in enumerate(users):
        cols = data.items.rows(list(truth[u]))
        rel[i, cols[cols >= 0]] = True
    n_rel = np.array([len(truth[u]) for u in users], np.int64)

    def trial(w: Mapping[str, float]) -> float:
        if not users:
            return 0.0
        s = np.where(allowed, blended(comps, w), NEG)
        top = top_k(s, k)
        hits = np.take_along_axis(rel, top, axis=1) & np.isfinite(np.take_along_axis(s, top, axis=1))
        return float(np.mean(ndcg(hits, n_rel, k)))
    return trial


MIN_TUNING_PRODUCTS = 2
"""Fewer products bought before the tuning weeks than this: there is nothing to rank, the weights are not
tuned (the default weights are kept, and the reason recorded)."""


def tune_blend(shop: Shop, cutoff: pd.Timestamp, config: RecommenderConfig,
               icfg: InteractionConfig | None = None, tune_days: int = 56, notes: list[str] | None = None
               ) -> tuple[RecommenderConfig, BlendRecommender | None]:
    """``config`` with blend and discovery weights tuned on the ``tune_days`` before ``cutoff``, and the blend
    they were tuned with (fitted at the start of those days, the tuned weights set). Without history to tune
    on, or with fewer than :data:`MIN_TUNING_PRODUCTS` products bought: the default weights, and no blend.
    Without a product new to any customer in the tuning weeks: discovery uses the main weights. Each such
    decision is appended to ``notes`` (if given) as a sentence saying why."""
    notes = notes if notes is not None else []
    inner = pd.Timestamp(cutoff) - pd.Timedelta(days=tune_days)
    truth = sample_truth(purchase_truth(shop, inner, cutoff), config.tune_max_customers, config.seed)
    d_in = build_interactions(shop, inner, icfg, non_product=is_non_product)
    if d_in.weights.nnz == 0 or not any(u in d_in.users for u in truth):
        why = f"blend: default weights, no purchase history before {inner.date()} to tune them on"
        log.warning(why)
        notes.append(why)
        return replace(config, blend_weights=DEFAULT_WEIGHTS), None
    n_bought = int(np.count_nonzero(d_in.purchases.getnnz(axis=0)))
    if n_bought < MIN_TUNING_PRODUCTS:
        why = (f"blend: default weights, {n_bought} product(s) bought before {inner.date()}: fewer than the "
               f"{MIN_TUNING_PRODUCTS} a ranking needs to be tuned")
        log.warning(why)
        notes.append(why)
        return replace(config, blend_weights=DEFAULT_WEIGHTS), None
    tuned = BlendRecommender(config).fit(d_in)
    main = tune_weights(tuned, truth)
    # discovery: products new to each customer, bought in the tuning weeks
    new_truth = new_items_truth(d_in, truth)
    if not new_truth:
        why = (f"blend: discovery weights not tuned (no customer bought a product new to them between "
               f"{inner.date()} and {pd.Timestamp(cutoff).date()}): discovery uses the main weights")
        log.warning(why)
        notes.append(why)
        tuned.use_weights(main.weights, main.weights)
        return replace(config, blend_weights=tuple(main.weights.items()),
                       discovery_weights=tuple(main.weights.items())), tuned
    discovery = tune_discovery(tuned, new_truth)
    tuned.use_weights(main.weights, discovery.weights)
    return replace(config, blend_weights=tuple(main.weights.items()),
                   discovery_weights=tuple(discovery.weights.items())), tuned


def reusable_components(fitted: Mapping[str, Recommender], data: InteractionData, config: RecommenderConfig
                        ) -> dict[str, Recommender]:
    """The models of ``fitted`` a blend with ``config`` can take as its components (see
    :meth:`BlendRecommender.fit`): blend components fitted on this same ``data`` with the same settings."""
    want = component_settings(config)
    return {n: m for n, m in fitted.items()
            if n in COMPONENTS and m.data is data and component_settings(m.config) == want}
