"""Temporal evaluation of the recommenders (all-items and new-items protocols)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from features.importers import is_non_product
from features.interactions import InteractionConfig, InteractionData, build_interactions
from features.io import Shop
from models.metrics import ranking_report
from models.recommenders import (
    DEFAULT_WEIGHTS,
    MODELS,
    BlendRecommender,
    BusinessRules,
    Recommender,
    RecommenderConfig,
)
from models.rerank import Reranker, ndcg_by_group

log = logging.getLogger(__name__)
BASELINES = ("popularity", "buy_again", "als", "bpr", "item_knn", "ease")


@dataclass
class RecEvaluation:
    report: dict[str, Any]
    fit_seconds: dict[str, float]
    production: BlendRecommender


def purchase_truth(shop: Shop, start: pd.Timestamp, end: pd.Timestamp | None = None) -> dict[str, set[str]]:
    o = shop.customer_orders()
    o = o[(o["ts"] >= start) & (o["quantity"] > 0)]
    if end is not None:
        o = o[o["ts"] < end]
    return {str(c): set(g) for c, g in o.groupby("customer_id")["product_id"]}


def new_items_truth(data: InteractionData, truth: dict[str, set[str]]) -> dict[str, set[str]]:
    """For each customer of ``data`` in ``truth``: the products they had not bought before (if any)."""
    users = [u for u in truth if u in data.users]
    out = {}
    for u, r in zip(users, data.users.rows(users), strict=True):
        new = truth[u] - set(data.items.ids[data.purchases[r].indices])
        if new:
            out[u] = new
    return out


def fit_reranker(shop: Shop, cutoff: pd.Timestamp, config: RecommenderConfig,
                 icfg: InteractionConfig | None = None, holdout: float = 0.2,
                 latest: BlendRecommender | None = None) -> tuple[Reranker | None, dict[str, Any]]:
    """The discovery re-ranker, learned on ``config.rerank_windows`` windows of ``rerank_window_days``
    before ``cutoff`` (``config`` must carry fixed blend weights). A share ``holdout`` of the customers of the
    latest window is kept out: the ranker is used only if it beats the blend's own order on them (NDCG@10).
    ``latest``: a blend already fitted at the start of the latest window, with the same weights (the tuning
    one), used instead of fitting it again. Returns the ranker (None when it loses or there is too little
    data) and what was measured."""
    days = pd.Timedelta(days=config.rerank_window_days)
    parts = []
    for w in range(config.rerank_windows):
        end = pd.Timestamp(cutoff) - w * days
        start = end - days
        log.info("re-ranker window %d/%d: %s to %s", w + 1, config.rerank_windows, start.date(), end.date())
        if w == 0 and latest is not None:
            m = latest
        else:
            d = build_interactions(shop, start, icfg, non_product=is_non_product)
            if d.weights.nnz == 0:
                break
            m = BlendRecommender(config).fit(d)
        parts.append(m.rerank_rows(new_items_truth(m._require(), purchase_truth(shop, start, end))))
    rcfg = config.rerank_config()
    n_groups = sum(len(p[2]) for p in parts)
    if n_groups < rcfg.min_customers / (1 - holdout):
        log.info("re-ranker: %d training customers, fewer than %d; discovery stays with the blend",
                 n_groups, rcfg.min_customers)
        return None, {"customers": n_groups, "used": False, "why": "too few training customers"}
    X = np.vstack([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    groups = np.concatenate([p[2] for p in parts])
    nrel = np.concatenate([p[3] for p in parts])
    rng = np.random.default_rng(config.seed)
    held = np.zeros(len(groups), bool)  # the latest window's customers, a random share of them
    n0 = len(parts[0][2])
    held[:n0] = rng.random(n0) < holdout
    share = config.rerank_max_customers / len(groups)
    train = ~held & (rng.random(len(groups)) < share)  # at most about rerank_max_customers of them
    rows_held, rows_train = np.repeat(held, groups), np.repeat(train, groups)
    counts = {"customers": int(train.sum()), "holdout_customers": int(held.sum()), "used": False}
    if counts["customers"] < rcfg.min_customers or counts["holdout_customers"] == 0:
        log.info("re-ranker: %(customers)d training and %(holdout_customers)d held-out customers, too few; "
                 "discovery stays with the blend", counts)
        return None, {**counts, "why": "too few training or held-out customers"}
    trial = Reranker(rcfg).fit(X[rows_train], y[rows_train], groups[train])
    Xh, yh, gh, nh = X[rows_held], y[rows_held], groups[held], nrel[held]
    ndcg_rr = ndcg_by_group(trial.predict(Xh), yh, gh, nh)
    ndcg_blend = ndcg_by_group(Xh[:, 0].astype(np.float64), yh, gh, nh)
    validation = {"customers": counts["customers"], "rows": int(rows_train.sum()),
                  "holdout_customers": counts["holdout_customers"], "holdout_ndcg@10_blend": round(ndcg_blend, 4),
                  "holdout_ndcg@10_reranked": round(ndcg_rr, 4), "used": bool(ndcg_rr > ndcg_blend)}
    if not validation["used"]:
        log.warning("re-ranker not used: holdout NDCG@10 %.4f, the blend's %.4f", ndcg_rr, ndcg_blend)
        return None, {**validation, "why": "no better than the blend on the holdout"}
    log.info("re-ranker: holdout NDCG@10 %.4f against the blend's %.4f (%d customers)", ndcg_rr, ndcg_blend,
             counts["customers"])
    trial.validation_ = validation  # the ranker that was checked is the one used (no refit with the holdout)
    return trial, validation


def fit_production(shop: Shop, cutoff: pd.Timestamp, config: RecommenderConfig,
                   icfg: InteractionConfig | None = None, tune_days: int | None = None,
                   data: InteractionData | None = None, fitted: dict[str, Recommender] | None = None,
                   reranker: Reranker | None = None) -> BlendRecommender:
    """Fit the blend at ``cutoff``; its weights are tuned on the ``tune_days`` before the cutoff (default:
    the re-ranker's window, whose latest one then reuses the tuning blend).
    ``data``: the interactions at ``cutoff`` if already built; ``fitted``: models already fitted on them
    (reused as components when their config matches the blend's). With ``config.rerank``, discovery requests
    are re-ranked by ``reranker``, or by one learned before ``cutoff`` when it is None."""
    tune_days = tune_days or config.rerank_window_days
    tuned: BlendRecommender | None = None
    if config.blend_weights is None:
        inner = pd.Timestamp(cutoff) - pd.Timedelta(days=tune_days)
        truth = purchase_truth(shop, inner, cutoff)
        d_in = build_interactions(shop, inner, icfg, non_product=is_non_product)
        if d_in.weights.nnz == 0 or not any(u in d_in.users for u in truth):
            log.warning("no history before %s to tune the blend on: default weights", inner.date())
            config = replace(config, blend_weights=DEFAULT_WEIGHTS)
        else:
            tuned = BlendRecommender(config).fit(d_in)
            tuned.tune(truth)
            # discovery: products new to each customer, bought in the tuning weeks
            tuned.tune_discovery(new_items_truth(d_in, truth))
            dw = tuned.discovery_weights_ or tuned.weights_
            config = replace(config, blend_weights=tuple(tuned.weights_.items()),
                             discovery_weights=tuple(dw.items()))
    validation: dict[str, Any] = {}
    if config.rerank and reranker is None:
        same = tuned is not None and tune_days == config.rerank_window_days
        reranker, validation = fit_reranker(shop, cutoff, config, icfg, latest=tuned if same else None)
    if data is None:
        data = build_interactions(shop, cutoff, icfg, non_product=is_non_product)
    model = BlendRecommender(config).fit_reusing(data, fitted or {})
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
    prod = (fit_production(shop, cutoff, config, icfg) if corrupt
            else fit_production(shop, cutoff, config, icfg, data=data, fitted=fitted))
    secs["production"] = time.perf_counter() - t0
    fitted["production"] = prod
    if corrupt:  # a deliberately broken model: shuffled item ids
        import numpy as np
        prod.data.items.ids = np.random.default_rng(0).permutation(prod.data.items.ids)  # type: ignore[union-attr]
    for name, m in fitted.items():
        recs = m.recommend(users, k=k)
        report["all_items"][name] = ranking_report(recs, truth_all, k)
        report["coverage"][name] = float(recs["product_id"].nunique() / max(int(data.item_ok.sum()), 1))
        if name != "buy_again":
            recs_new = m.recommend(list(truth_new), k=k, rules=BusinessRules(exclude_bought=True,
                                                                           allow_replenishable=False))
            report["new_items"][name] = ranking_report(recs_new, truth_new, k)
        log.info("%s: ndcg@%d all %.4f", name, k, report["all_items"][name][f"ndcg@{k}"])
    report["fit_seconds"] = {n: round(s, 2) for n, s in secs.items()}
    return RecEvaluation(report=report, fit_seconds=secs, production=prod)
