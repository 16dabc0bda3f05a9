"""Prototype: what TIFU-KNN adds to the production blend, tuned on the weeks before each cutoff only.

    python bench/tifu_blend.py --shop DIR [--out FILE.json] [--variants NAME ...] [--tifu-from RUN.json]

For each cutoff of ``bench/tifu_eval.py``: the blend's components and TIFU-KNN's parts (``tifu``: its
score; ``tifu_own``: the customer's time-decayed frequencies, a decayed buy-again; ``tifu_nbr``: the
neighbours' mean) are fitted on the data before ``cutoff - 56 days``; TIFU's settings and then each
variant's blend weights are chosen by NDCG@10 on the purchases of those 56 days (as the blend's own
tuning does); the chosen setting is refitted at the cutoff and measured on the window after it.
Scores are normalised per customer as the blend does, and every ranking (TIFU-KNN alone too) obeys the
default business rules (returned and out-of-stock products excluded): an earlier version ranked TIFU-KNN
alone without them and so found it above every blend (2011-06-01: 0.4222 without, 0.4165 with).
The shipped tuning is :func:`training.blend_tuning.tune_blend`; ``bench/tifu_eval.py compare`` measures it.
Only all-items requests are affected: discovery (bought products excluded) keeps production's own weights
and re-ranker.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from bench.tifu_common import CUTOFFS, emit, interactions, ranking_metrics, split, start_logging
from features.interactions import InteractionData
from features.io import Shop, load_shop
from models.recsys import (
    NEG,
    BlendRecommender,
    BusinessRules,
    RecommenderConfig,
    build_context,
    rules_mask,
)
from models.recsys.base import ranked_frame as topk
from models.recsys.blend import normalise  # the blend's per-customer scaling
from models.recsys.tifu import TifuConfig, TIFUKNNRecommender, build_baskets
from training.rec_eval import purchase_truth

log = logging.getLogger("bench.tifu_blend")
TUNE_DAYS = 56
TIFU_GRID = [
    dict(within_decay=rb, group_decay=rg, groups=m)
    for rb, rg in ((0.9, 0.7), (1.0, 0.9), (0.8, 0.6))
    for m in (3, 7, 14)
]
"""TIFU settings tried on the tuning window (alpha and k are tried on each without refitting)."""
LESS_DECAY_GRID = [dict(within_decay=1.0, group_decay=rg, groups=m) for rg in (0.9, 1.0) for m in (14, 28)]
"""A second round: the first one chose its least decay at every cutoff."""
ALPHAS, KS = (0.3, 0.5, 0.7, 0.9), (50, 100, 300)
W = {"buy_again": (0.0, 0.5, 1.0), "item_knn": (0.25, 0.5, 1.0), "als": (0.0, 0.25, 0.5), "ease": (0.0, 0.5),
     "popularity": (0.0, 0.1)}
"""Around production's grid (its weights are always among these)."""
VARIANTS: dict[str, dict[str, tuple[float, ...]]] = {
    "blend (today's components)": W,
    "blend + tifu": {**W, "tifu": (0.5, 1.0, 2.0, 4.0, 8.0)},
    "tifu + popularity + als": {"tifu": (1.0,), "popularity": (0.0, 0.05, 0.1), "als": (0.0, 0.1, 0.25),
                                "item_knn": (0.0, 0.1, 0.25)},
    "decayed buy-again (tifu_own for buy_again)": {**{k: v for k, v in W.items() if k != "buy_again"},
                                                  "tifu_own": (0.5, 1.0, 2.0)},
    "blend + tifu_own + tifu_nbr": {**W, "buy_again": (0.0, 1.0), "tifu_own": (0.5, 1.0, 2.0),
                                    "tifu_nbr": (0.25, 0.5, 1.0)},
}


class Scorer:
    """Normalised component scores and a fast NDCG@10 of any weighted sum, for one set of customers."""

    def __init__(self, data: InteractionData, truth: dict[str, set[str]], blend: BlendRecommender) -> None:
        self.users = [u for u in truth if u in data.users]
        self.data, self.truth = data, truth
        self.ctx = build_context(data, self.users)
        self.comps = blend.component_scores(self.ctx)
        self.allowed = self.ctx.known[:, None] & rules_mask(data, self.ctx, BusinessRules())
        self.rel = np.zeros(self.allowed.shape, bool)
        for i, u in enumerate(self.users):
            cols = data.items.rows(list(truth[u]))
            self.rel[i, cols[cols >= 0]] = True
        disc = 1.0 / np.log2(np.arange(2, 12))
        self.disc, self.idcg = disc, np.cumsum(disc)[np.minimum([len(truth[u]) for u in self.users], 10) - 1]

    def add_tifu(self, model: TIFUKNNRecommender, alpha: float, k: int) -> None:
        own, nbr = parts(model, self.ctx, k)
        self.comps["tifu_own"], self.comps["tifu_nbr"] = normalise(pos(own)), normalise(pos(nbr))
        self.comps["tifu"] = normalise(pos(alpha * own + (1 - alpha) * nbr))

    def scores(self, w: dict[str, float]) -> np.ndarray:
        s = np.zeros(self.allowed.shape)
        for n, v in w.items():
            if v:
                s += v * self.comps[n]
        return np.where(self.allowed, s, NEG)

    def ndcg(self, s: np.ndarray) -> float:
        part = np.argpartition(-s, 9, axis=1)[:, :10]
        ps = np.take_along_axis(s, part, axis=1)
        top = np.take_along_axis(part, np.lexsort((part, -ps), axis=1), axis=1)
        hits = np.take_along_axis(self.rel, top, axis=1) & np.isfinite(np.take_along_axis(s, top, axis=1))
        return float(np.mean(hits @ self.disc / self.idcg)) if self.users else 0.0

    def report(self, s: np.ndarray, truth: dict[str, set[str]]) -> dict[str, float]:
        return ranking_metrics(topk(s, 10, self.ctx.customer_ids, self.data.items.ids), truth)


def pos(x: Any) -> np.ndarray:
    a = x.toarray()
    return np.where(a > 0, a, NEG)


def parts(model: TIFUKNNRecommender, ctx: Any, k: int) -> tuple[Any, Any]:
    """Own and neighbour parts with only the ``k`` nearest neighbours (they are stored best first)."""
    full = model.neighbours_
    model.neighbours_ = full[:, :k]
    try:
        return model.parts(ctx)
    finally:
        model.neighbours_ = full


def fit_all(shop: Shop, cutoff: pd.Timestamp,
            config: RecommenderConfig) -> tuple[InteractionData, BlendRecommender]:
    data = interactions(shop, cutoff)
    return data, BlendRecommender(replace(config, blend_weights=None)).fit(data)


def tune(shop: Shop, cutoff: pd.Timestamp, config: RecommenderConfig, variants: list[str],
         tifu_settings: dict[str, Any] | None = None, grid: list[dict[str,
                                                                      Any]] = TIFU_GRID) -> dict[str, Any]:
    """TIFU settings (unless given: ones tuned before, on this same window), then each variant's weights, by
    NDCG@10 on the ``TUNE_DAYS`` before ``cutoff``."""
    inner = cutoff - pd.Timedelta(days=TUNE_DAYS)
    data, blend = fit_all(shop, inner, config)
    sc = Scorer(data, purchase_truth(shop, inner, cutoff), blend)
    baskets = build_baskets(shop, data)
    best: tuple[float, dict[str, Any]] = (-1.0, tifu_settings or {})
    for g in [] if tifu_settings else grid:
        m = TIFUKNNRecommender(config, TifuConfig(**g)).fit(data, baskets=baskets)  # type: ignore[arg-type]
        for a, k in itertools.product(ALPHAS, KS):
            sc.add_tifu(m, a, k)
            v = sc.ndcg(sc.scores({"tifu": 1.0}))  # under the business rules, as the blends
            if v > best[0]:
                best = (v, {**g, "alpha": a, "neighbours": k})
    tifu = TifuConfig(**best[1])
    sc.add_tifu(TIFUKNNRecommender(config, tifu).fit(data, baskets=baskets), tifu.alpha, tifu.neighbours)
    out: dict[str, Any] = {"tifu": best[1], "tifu_tuning_ndcg@10": round(best[0], 4), "variants": {}}
    for name in variants:
        vgrid = VARIANTS[name]
        keys = list(vgrid)
        trials = [(sc.ndcg(sc.scores(dict(zip(keys, ws, strict=True)))),
                   ws) for ws in itertools.product(*vgrid.values())]
        v, ws = max(trials, key=lambda t: t[0])  # the first of equals wins
        out["variants"][name] = {"weights": dict(zip(keys, ws, strict=True)), "tuning_ndcg@10": round(v, 4)}
    return out


def run(shop: Shop, variants: list[str], tifu_from: dict[str, Any] | None = None,
        grid: list[dict[str, Any]] = TIFU_GRID) -> dict[str, Any]:
    config = RecommenderConfig()
    res: dict[str, Any] = {}
    for c, e in CUTOFFS:
        cutoff = pd.Timestamp(c)
        tuned = tune(shop, cutoff, config, variants, tifu_from[c]["tuned_tifu"] if tifu_from else None, grid)
        log.info("%s tuned: %s", c, tuned)
        _, truth, _ = split(shop, cutoff, pd.Timestamp(e) if e else None)
        data, blend = fit_all(shop, cutoff, config)
        sc = Scorer(data, truth, blend)
        tifu = TifuConfig(**tuned["tifu"])
        sc.add_tifu(TIFUKNNRecommender(config, tifu).fit(data, baskets=build_baskets(shop, data)), tifu.alpha,
                    tifu.neighbours)
        row = {"tuned_tifu": tuned["tifu"], "tifu (tuned) alone": sc.report(sc.scores({"tifu": 1.0}), truth)}
        for name, t in tuned["variants"].items():
            row[name] = {**sc.report(sc.scores(t["weights"]), truth), "weights": t["weights"],
                         "tuning_ndcg@10": t["tuning_ndcg@10"]}
        log.info("%s: %s", c, row)
        res[c] = row
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shop", required=True)
    ap.add_argument("--out")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--tifu-from",
                    help="a previous run's JSON: reuse its TIFU settings (tuned before each cutoff)")
    ap.add_argument("--less-decay", action="store_true", help="try LESS_DECAY_GRID instead of TIFU_GRID")
    a = ap.parse_args()
    start_logging()
    tifu_from = json.loads(open(a.tifu_from).read()) if a.tifu_from else None
    grid = LESS_DECAY_GRID if a.less_decay else TIFU_GRID
    emit(run(load_shop(a.shop), a.variants, tifu_from, grid), a.out)


if __name__ == "__main__":
    main()
