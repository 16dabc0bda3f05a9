"""Temporal evaluation of the recommenders (all-items and new-items protocols)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.importers import is_non_product
from features.interactions import InteractionConfig, InteractionData, build_interactions
from features.io import Shop
from features.schema import PRODUCT_ID
from models.metrics import ranking_report
from models.recsys import DISCOVERY_RULES, MODELS, BlendRecommender, Recommender, RecommenderConfig, Reranker
from training.blend_tuning import reusable_components, tune_blend
from training.rec_truth import new_items_truth, purchase_truth, sample_truth
from training.rerank_training import fit_reranker

log = logging.getLogger(__name__)
BASELINES = ("popularity", "buy_again", "als", "bpr", "item_knn", "ease")
__all__ = ["BASELINES", "RecEvaluation", "evaluate_recommenders", "fit_production", "new_items_truth",
           "purchase_truth"]


@dataclass
class RecEvaluation:
    report: dict[str, Any]
    fit_seconds: dict[str, float]
    production: BlendRecommender


def fit_production(shop: Shop, cutoff: pd.Timestamp, config: RecommenderConfig,
                   icfg: InteractionConfig | None = None, tune_days: int | None = None,
                   data: InteractionData | None = None, fitted: dict[str, Recommender] | None = None,
                   reranker: Reranker | None = None, notes: list[str] | None = None) -> BlendRecommender:
    """Fit the blend at ``cutoff``; its weights are tuned on the ``tune_days`` before the cutoff (default:
    the re-ranker's window, whose latest one then reuses the tuning blend).
    ``data``: the interactions at ``cutoff`` if already built; ``fitted``: models already fitted on them
    (reused as components when their config matches the blend's). With ``config.rerank``, discovery requests
    are re-ranked by ``reranker``, or by one learned before ``cutoff`` when it is None. ``notes``: the
    reasons for what was not tuned are appended to it (see :func:`~training.blend_tuning.tune_blend`)."""
    tune_days = tune_days or config.rerank_window_days
    tuned: BlendRecommender | None = None
    if config.blend_weights is None:
        config, tuned = tune_blend(shop, cutoff, config, icfg, tune_days, notes=notes)
    validation: dict[str, Any] = {}
    if config.rerank and reranker is None:
        same = tuned is not None and tune_days == config.rerank_window_days
        reranker, validation = fit_reranker(shop, cutoff, config, icfg, latest=tuned if same else None)
    if data is None:
        data = build_interactions(shop, cutoff, icfg, non_product=is_non_product)
    model = BlendRecommender(config).fit(data, components=reusable_components(fitted or {}, data, config))
    model.attach_reranker(reranker if config.rerank else None)
    model.rerank_validation_ = validation or (reranker.validation_ if reranker is not None else {})
    return model


def evaluate_recommenders(shop: Shop, cutoff: pd.Timestamp, config: RecommenderConfig | None = None,
                          icfg: InteractionConfig | None = None, k: int = 10,
                          models: tuple[str, ...] = BASELINES, corrupt: bool = False) -> RecEvaluation:
    """Fit on everything before ``cutoff``; score top-k for customers who bought before and after it."""
    config = config or RecommenderConfig()
    cutoff = pd.Timestamp(cutoff)
    data = build_interactions(shop, cutoff, icfg, non_product=is_non_product)
    truth_all = purchase_truth(shop, cutoff)
    before = data.purchases.sum(axis=1).A.ravel() > 0
    buyers = set(data.users.ids[before])
    truth_all = {u: s for u, s in truth_all.items() if u in buyers}
    n_test = len(truth_all)
    truth_all = sample_truth(truth_all, config.eval_max_customers, config.seed)
    truth_new = new_items_truth(data, truth_all)
    users = list(truth_all)
    report: dict[str, Any] = {"all_items": {}, "new_items": {}, "coverage": {}}
    secs: dict[str, float] = {}
    fitted: dict[str, Recommender] = {}
    for name in models:
        t0 = time.perf_counter()
        fitted[name] = MODELS[name](config).fit(data)
        secs[name] = time.perf_counter() - t0
    t0 = time.perf_counter()
    # the blend reuses the baselines fitted above as its components (unless it is to be corrupted: then it
    # gets data of its own, so that the baselines stay intact)
    notes: list[str] = []
    prod = (fit_production(shop, cutoff, config, icfg, notes=notes) if corrupt
            else fit_production(shop, cutoff, config, icfg, data=data, fitted=fitted, notes=notes))
    secs["production"] = time.perf_counter() - t0
    fitted["production"] = prod
    if corrupt:  # a deliberately broken model: shuffled item ids
        prod.data.items.ids = np.random.default_rng(0).permutation(prod.data.items.ids)  # type: ignore[union-attr]
    for name, m in fitted.items():
        recs = m.recommend(users, k=k)
        report["all_items"][name] = ranking_report(recs, truth_all, k)
        report["coverage"][name] = float(recs[PRODUCT_ID].nunique() / max(int(data.item_ok.sum()), 1))
        if name != "buy_again":
            recs_new = m.recommend(list(truth_new), k=k, rules=DISCOVERY_RULES)
            report["new_items"][name] = ranking_report(recs_new, truth_new, k)
        log.info("%s: ndcg@%d all %.4f", name, k, report["all_items"][name][f"ndcg@{k}"])
    report["fit_seconds"] = {n: round(s, 2) for n, s in secs.items()}
    n_products = int(np.count_nonzero(data.purchases.getnnz(axis=0)))
    if n_products < 2:
        notes.append(f"{n_products} product(s) bought before {cutoff.date()}: recommendations reduce to "
                     "buy-again and popularity; nothing new to recommend")
    if not truth_new:
        notes.append("new_items: not evaluated, no customer bought a product new to them after the cutoff")
    if len(truth_all) < n_test:
        notes.append(f"scored on a seeded sample of {len(truth_all)} of the {n_test} test customers "
                     f"(eval_max_customers)")
    report["test_customers"] = {"all": n_test, "scored": len(truth_all)}
    report["notes"] = notes
    return RecEvaluation(report=report, fit_seconds=secs, production=prod)
