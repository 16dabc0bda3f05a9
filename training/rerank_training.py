"""Learning the discovery re-ranker: training rows from earlier windows, and a holdout gate against the blend.

The ranker (:class:`models.recsys.Reranker`) learns from ``rerank_windows`` windows of
``rerank_window_days`` before the cutoff: in each, a blend fitted at the window's start ranks candidates,
and a customer's purchases of products new to them in the window are the labels. A share of the latest
window's customers is held out; the ranker is used only if it beats the blend's own order on them.

Example
-------
>>> ranker, validation = fit_reranker(shop, cutoff, config)     # doctest: +SKIP
>>> validation["used"], validation["holdout_ndcg@10_reranked"]  # doctest: +SKIP
(True, 0.1763)
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from features.interactions import InteractionConfig, InteractionData, build_interactions
from features.io import Shop
from models.metrics import ndcg, top_k
from models.recsys import (
    DISCOVERY_RULES,
    FEATURES,
    BlendRecommender,
    BusinessRules,
    ItemStats,
    RecommenderConfig,
    Reranker,
    build_context,
)
from training.blend_tuning import blend_baskets
from training.rec_truth import new_items_truth, purchase_truth, sample_truth

log = logging.getLogger(__name__)
Rows = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""Feature rows, labels, group sizes (consecutive rows of one customer) and each customer's relevant count."""


def rerank_rows(model: BlendRecommender, truth: dict[str, set[str]], rules: BusinessRules = DISCOVERY_RULES,
                batch: int = 1000) -> Rows:
    """Training rows for a re-ranker from ``model``'s candidates: features of each customer's candidates,
    labels (1 where the product is in ``truth``), group sizes, and each customer's number of relevant
    products. Customers with no relevant product among their candidates are left out (they teach a
    ranker nothing)."""
    data = model._require()
    stats = model.item_stats_ or ItemStats(data)
    users = [u for u in truth if u in data.users]
    parts: list[Rows] = []
    for a in range(0, len(users), batch):
        part = users[a:a + batch]
        ctx = build_context(data, part)
        s, comps = model.blend_scores(ctx, rules)
        cand, X = model.candidate_rows(ctx, rules, comps, s, stats)
        rel, nrel = _relevant(data, part, truth)
        y = np.take_along_axis(rel, cand, 1)
        ok = np.isfinite(np.take_along_axis(s, cand, 1))
        X3 = X.reshape(len(part), cand.shape[1], -1)
        use = np.flatnonzero((y & ok).any(axis=1))
        parts += [(X3[g][ok[g]], y[g][ok[g]].astype(np.int32), np.array([ok[g].sum()], np.int64),
                   np.array([nrel[g]], np.int64)) for g in use.tolist()]
    if not parts:
        return (np.zeros((0, len(FEATURES)), np.float32), np.zeros(0, np.int32), np.zeros(0, np.int64),
                np.zeros(0, np.int64))
    return (np.vstack([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts]))


def _relevant(data: InteractionData, users: list[str], truth: dict[str, set[str]]
              ) -> tuple[np.ndarray, np.ndarray]:
    """(customers x items) True where the product is in the customer's truth, and how many of them are
    known products."""
    rel = np.zeros((len(users), len(data.items)), bool)
    nrel = np.zeros(len(users), np.int64)
    for i, u in enumerate(users):
        cols = data.items.rows(list(truth[u]))
        rel[i, cols[cols >= 0]] = True
        nrel[i] = int((cols >= 0).sum())
    return rel, nrel


def ndcg_by_group(score: np.ndarray, y: np.ndarray, groups: np.ndarray, n_relevant: np.ndarray,
                  k: int = 10) -> float:
    """Mean NDCG@k over groups of candidate rows ranked by ``score`` (:func:`models.metrics.ndcg`);
    ``n_relevant``: each customer's number of relevant products in all (found among the candidates or
    not), for the ideal DCG."""
    if not len(groups):
        return 0.0
    g = np.repeat(np.arange(len(groups)), groups)
    col = np.arange(len(score)) - np.repeat(np.cumsum(groups) - groups, groups)
    S = np.full((len(groups), int(np.max(groups))), -np.inf)
    S[g, col] = score
    Y = np.zeros(S.shape)
    Y[g, col] = y
    return float(np.mean(ndcg(np.take_along_axis(Y, top_k(S, k), axis=1), n_relevant, k)))


def fit_reranker(shop: Shop, cutoff: pd.Timestamp, config: RecommenderConfig,
                 icfg: InteractionConfig | None = None, holdout: float = 0.2,
                 latest: BlendRecommender | None = None) -> tuple[Reranker | None, dict[str, Any]]:
    """The discovery re-ranker, learned on ``config.rerank_windows`` windows of ``rerank_window_days``
    before ``cutoff`` (``config`` must carry fixed blend weights). A share ``holdout`` of the customers of
    the latest window is kept out: the ranker is used only if it beats the blend's own order on them
    (NDCG@10). ``latest``: a blend already fitted at the start of the latest window, with the same weights
    (the tuning one), used instead of fitting it again. Returns the ranker (None when it loses or there is
    too little data) and what was measured."""
    parts = _window_rows(shop, cutoff, config, icfg, latest)
    rcfg = config.rerank_config()
    n_groups = sum(len(p[2]) for p in parts)
    if n_groups < rcfg.min_customers / (1 - holdout):
        log.info("re-ranker: %d training customers, fewer than %d; discovery stays with the blend",
                 n_groups, rcfg.min_customers)
        return None, {"customers": n_groups, "windows": len(parts), "used": False,
                      "why": "too few training customers"}
    X, y, groups, nrel = (np.concatenate([p[i] for p in parts]) for i in range(4))
    held, train = _split(len(groups), len(parts[0][2]), config, holdout)
    rows_held, rows_train = np.repeat(held, groups), np.repeat(train, groups)
    counts = {"customers": int(train.sum()), "holdout_customers": int(held.sum()), "windows": len(parts),
              "used": False}
    if counts["customers"] < rcfg.min_customers or counts["holdout_customers"] == 0:
        log.info("re-ranker: %(customers)d training and %(holdout_customers)d held-out customers, too few; "
                 "discovery stays with the blend", counts)
        return None, {**counts, "why": "too few training or held-out customers"}
    trial = Reranker(rcfg).fit(X[rows_train], y[rows_train], groups[train])
    Xh, yh, gh, nh = X[rows_held], y[rows_held], groups[held], nrel[held]
    ndcg_rr = ndcg_by_group(trial.predict(Xh), yh, gh, nh)
    ndcg_blend = ndcg_by_group(Xh[:, 0].astype(np.float64), yh, gh, nh)
    validation = {"customers": counts["customers"], "rows": int(rows_train.sum()), "windows": len(parts),
                  "holdout_customers": counts["holdout_customers"],
                  "holdout_ndcg@10_blend": round(ndcg_blend, 4),
                  "holdout_ndcg@10_reranked": round(ndcg_rr, 4), "used": bool(ndcg_rr > ndcg_blend)}
    if not validation["used"]:
        log.warning("re-ranker not used: holdout NDCG@10 %.4f, the blend's %.4f", ndcg_rr, ndcg_blend)
        return None, {**validation, "why": "no better than the blend on the holdout"}
    log.info("re-ranker: holdout NDCG@10 %.4f against the blend's %.4f (%d customers)", ndcg_rr, ndcg_blend,
             counts["customers"])
    trial.validation_ = validation  # the ranker that was checked is the one used (no refit with the holdout)
    return trial, validation


def _window_rows(shop: Shop, cutoff: pd.Timestamp, config: RecommenderConfig, icfg: InteractionConfig | None,
                 latest: BlendRecommender | None) -> list[Rows]:
    """Training rows of each window before ``cutoff``, the latest first (stops at a window with no data, and
    after the latest one when it holds more than ``config.rerank_one_window_customers`` customers)."""
    days = pd.Timedelta(days=config.rerank_window_days)
    parts: list[Rows] = []
    n_latest = 0  # customers the latest window's blend knows
    for w in range(config.rerank_windows):
        large = config.rerank_one_window_customers
        if w == 1 and large is not None and n_latest > large:
            log.info("re-ranker: the latest window's %d customers are more than %d: it alone is learned from "
                     "(rerank_one_window_customers)", n_latest, large)
            break
        end = pd.Timestamp(cutoff) - w * days
        start = end - days
        log.info("re-ranker window %d/%d: %s to %s", w + 1, config.rerank_windows, start.date(), end.date())
        if w == 0 and latest is not None:
            m = latest
        else:
            d = build_interactions(shop, start, icfg)
            if d.weights.nnz == 0:
                break
            # the rows need the discovery blend's components only (TIFU-KNN weighed for all items: not fitted)
            only = replace(config, blend_weights=config.discovery_weights or config.blend_weights)
            m = BlendRecommender(only).fit(d, baskets=blend_baskets(shop, d, only))
        most = min(config.tune_max_customers, config.rerank_row_customers)
        truth = sample_truth(purchase_truth(shop, start, end), most, config.seed + w)
        parts.append(rerank_rows(m, new_items_truth(m._require(), truth)))
        if w == 0:
            n_latest = len(m._require().users)
    return parts


def _split(n: int, n_latest: int, config: RecommenderConfig, holdout: float) -> tuple[np.ndarray, np.ndarray]:
    """Held-out customers (a random share ``holdout`` of the latest window's ``n_latest``) and training ones
    (the others, a random sample of about ``rerank_max_customers``)."""
    rng = np.random.default_rng(config.seed)
    held = np.zeros(n, bool)
    held[:n_latest] = rng.random(n_latest) < holdout
    share = config.rerank_max_customers / n
    train = ~held & (rng.random(n) < share)
    return held, train
