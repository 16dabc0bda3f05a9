"""TIFU-KNN benchmarks: quality on Online Retail at three cutoffs against production and item-kNN, and fit /
scoring time and memory on simulated shops.

    python bench/tifu_eval.py quality --shop DIR [--out FILE.json]
    python bench/tifu_eval.py compare --shop DIR --cutoff 2011-06-01 [--old] [--out FILE.json]
    python bench/tifu_eval.py simulated --shop DIR [--cutoff 2025-11-01] [--out FILE.json]
    python bench/tifu_eval.py scale --shop DIR [--out FILE.json] [--exact-sample 2000]
    python bench/tifu_eval.py approx --shop DIR [--out FILE.json]

``--shop`` for ``quality`` is an imported Online Retail directory
(``features.importers.import_online_retail``); for ``scale`` and ``approx`` (exact against approximate
neighbours), a ``personalise simulate`` directory. Results are printed as JSON (and written to ``--out``).
"""

from __future__ import annotations

import argparse
import logging
import resource
import time
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from bench.tifu_common import (
    CUTOFFS,
    emit,
    interactions,
    paired_bootstrap,
    per_customer_ndcg,
    ranking_metrics,
    split,
    start_logging,
)
from features.io import Shop, load_shop
from models.metrics import ranking_report
from models.recsys import MODELS, BusinessRules, Recommender, RecommenderConfig
from models.recsys.tifu import TifuConfig, TIFUKNNRecommender, _normalised, build_baskets
from training.rec_eval import fit_production

log = logging.getLogger("bench.tifu_eval")
NEW_RULES = BusinessRules(exclude_bought=True, allow_replenishable=False)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(model: Recommender, truth: dict[str, set[str]], truth_new: dict[str, set[str]] | None
           ) -> dict[str, float]:
    out = ranking_metrics(model.recommend(list(truth), k=10), truth)
    if truth_new is not None:
        out["ndcg@10_new"] = round(ranking_report(model.recommend(list(truth_new), k=10, rules=NEW_RULES),
                                                  truth_new, 10)["ndcg@10"], 4)
    return out


def quality(shop: Shop, tifu: TifuConfig) -> dict[str, Any]:
    """TIFU-KNN (untuned), production (as trained today), item-kNN and buy-again at each cutoff."""
    config = RecommenderConfig()
    out: dict[str, Any] = {}
    for c, e in CUTOFFS:
        cutoff, end = pd.Timestamp(c), (pd.Timestamp(e) if e else None)
        data, truth, truth_new = split(shop, cutoff, end)
        row: dict[str, Any] = {"customers": len(truth),
                               "new_items_customers": len(truth_new), "window_end": e}
        secs: dict[str, float] = {}
        fitted: dict[str, Recommender] = {}
        for name in ("buy_again", "item_knn", "als", "ease", "popularity"):
            t0 = time.perf_counter()
            fitted[name] = MODELS[name](config).fit(data)
            secs[name] = time.perf_counter() - t0
        t0 = time.perf_counter()
        fitted["tifu_knn"] = TIFUKNNRecommender(config, tifu).fit(data, baskets=build_baskets(shop, data))
        secs["tifu_knn"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        fitted["production"] = fit_production(shop, cutoff, config, data=data, fitted=fitted)
        secs["production"] = time.perf_counter() - t0
        for name in ("tifu_knn", "production", "item_knn", "buy_again"):
            row[name] = report(fitted[name], truth, None if name == "buy_again" else truth_new)
            row[name]["fit_s"] = round(secs[name], 2)
        row["production_weights"] = fitted["production"].weights_  # type: ignore[attr-defined]
        log.info("%s: %s", c, row)
        out[c] = row
    return out


def compare(shop: Shop, cutoff: pd.Timestamp, end: pd.Timestamp | None, old: bool) -> dict[str, Any]:
    """Production as trained today (TIFU-KNN a blend component, its settings tuned on the weeks before the
    cutoff) against TIFU-KNN with those same tuned settings, TIFU-KNN with the paper's, item-kNN and
    buy-again; ``old``: the production of before (no TIFU-KNN component: the blend is never given baskets),
    alone. Every model is measured through ``recommend`` under the same business rules."""
    import training.blend_tuning as bt
    import training.rec_eval as re_
    import training.rerank_training as rt
    if old:
        for mod in (bt, re_, rt):
            mod.blend_baskets = lambda *a, **k: None  # type: ignore[attr-defined, assignment]
    config = RecommenderConfig()
    data, truth, truth_new = split(shop, cutoff, end)
    row: dict[str, Any] = {"customers": len(truth), "new_items_customers": len(truth_new),
                           "window_end": None if end is None else str(end.date())}
    fitted: dict[str, Recommender] = {}
    secs: dict[str, float] = {}
    for name in (("buy_again", "item_knn", "als", "ease", "popularity") if not old else
                 ("item_knn", "als", "ease", "popularity")):
        fitted[name] = MODELS[name](config).fit(data)
    clock = Clock()
    name = "old production" if old else "production"
    fitted[name] = clock(name, fit_production, shop, cutoff, config, data=data, fitted=fitted)
    secs[name] = clock.out[name]["wall_s"]
    if not old:
        tuned = fitted[name].config.tifu
        b = build_baskets(shop, data)
        tifu = TIFUKNNRecommender(replace(config, tifu=tuned))
        fitted["tifu_knn (tuned)"] = clock("tifu_knn (tuned)", tifu.fit, data, baskets=b)
        fitted["tifu_knn (paper)"] = TIFUKNNRecommender(config).fit(data, baskets=b)
        row["tifu_settings"] = dict(tuned or ())
    row["production_weights"] = fitted[name].weights_  # type: ignore[attr-defined]
    row["discovery_weights"] = fitted[name].discovery_weights_  # type: ignore[attr-defined]
    for n in ([name] if old else [name, "tifu_knn (tuned)", "tifu_knn (paper)", "item_knn", "buy_again"]):
        row[n] = report(fitted[n], truth, None if n == "buy_again" else truth_new)
    if not old:
        row["bootstrap"] = {
            f"production - tifu_knn (tuned), {key}": paired_bootstrap(
                per_customer_ndcg(fitted[name].recommend(list(t), k=10, rules=rules), t),
                per_customer_ndcg(fitted["tifu_knn (tuned)"].recommend(list(t), k=10, rules=rules), t))
            for t, rules, key in ((truth, BusinessRules(), "all"), (truth_new, NEW_RULES, "new"))}
    row["seconds"] = clock.out
    row["peak_mb"] = round(peak_mb(), 0)
    log.info("%s: %s", cutoff.date(), row)
    return row


def simulated(shop: Shop, cutoff: pd.Timestamp) -> dict[str, Any]:
    """Every baseline of the recommendation report (TIFU-KNN among them) and production on a simulated shop,
    as ``bench/sections.py`` evaluates it, with fit seconds and peak memory."""
    from training.rec_eval import evaluate_recommenders
    ev = evaluate_recommenders(shop, cutoff)
    keep = ("all_items", "new_items", "fit_seconds")
    return {"cutoff": str(cutoff.date()), **{k: ev.report[k] for k in keep},
            "blend_weights": ev.production.weights_, "tifu_settings": dict(ev.production.config.tifu or ()),
            "peak_mb": round(peak_mb(), 0)}


class Clock:
    """Wall and CPU seconds of each stage (CPU time is what a loaded machine distorts least)."""

    def __init__(self) -> None:
        self.out: dict[str, dict[str, float]] = {}

    def __call__(self, name: str, fn: Any, *args: Any, **kw: Any) -> Any:
        w, c = time.perf_counter(), time.process_time()
        res = fn(*args, **kw)
        self.out[name] = {"wall_s": round(time.perf_counter() - w, 2),
                          "cpu_s": round(time.process_time() - c, 2)}
        log.info("%s: %s (peak %.0f MB)", name, self.out[name], peak_mb())
        return res


def scale(shop: Shop, tifu: TifuConfig, exact_sample: int, score_sample: int = 20_000) -> dict[str, Any]:
    """Fit and scoring time and peak memory; neighbour recall of the approximate search on a sample."""
    clock = Clock()
    data = clock("interactions", interactions, shop, None)
    b = clock("baskets", build_baskets, shop, data)
    res: dict[str, Any] = {"customers": len(data.users), "items": len(data.items), "baskets": len(b.user),
                           "lines": int(b.items.nnz)}
    del shop
    model = TIFUKNNRecommender(RecommenderConfig(), replace(tifu, search="approximate"))
    clock("fit", model.fit, data, baskets=b)
    res["model_mb"] = round((model.neighbours_.nbytes + model.vectors_.data.nbytes
                             + model.vectors_.indices.nbytes) / 2**20, 1)
    rng = np.random.default_rng(0)
    ids = data.users.ids[rng.choice(len(data.users), min(score_sample, len(data.users)), replace=False)]
    clock("score_sample", model.recommend, ids, k=10, batch=1000)
    res["score_all_extrapolated"] = {k: round(v / len(ids) * len(data.users), 1)
                                     for k, v in clock.out["score_sample"].items()}
    one = ids[:200]
    clock("one_customer_x200", lambda: [model.recommend([c], k=10) for c in one])
    Un, ok = _normalised(model.vectors_)
    rows = np.flatnonzero(ok)[np.random.default_rng(1).choice(int(ok.sum()), exact_sample, replace=False)]
    k = model.neighbours_.shape[1]
    exact = clock("exact_sample", exact_neighbours_of, Un, ok, rows, k)
    res["exact_search_extrapolated"] = {kk: round(v / exact_sample * ok.sum(), 1)
                                        for kk, v in clock.out["exact_sample"].items()}
    res["approx_recall@k"] = round(float(np.mean([len(np.intersect1d(exact[i], model.neighbours_[r])) / k
                                                  for i, r in enumerate(rows)])), 4)
    res["stages"] = clock.out
    res["peak_mb"] = round(peak_mb(), 0)
    return res


def approx_quality(shop: Shop, tifu: TifuConfig, days: int = 28) -> dict[str, Any]:
    """NDCG@10 on the last ``days`` of a (simulated) shop: exact against approximate neighbour search, with
    the neighbour recall of each approximate setting."""
    cutoff = shop.end - pd.Timedelta(days=days)
    data, truth, _ = split(shop, cutoff, None)
    b = build_baskets(shop, data)
    out: dict[str, Any] = {"customers": len(truth)}
    t0 = time.perf_counter()
    exact = TIFUKNNRecommender(RecommenderConfig(), replace(tifu, search="exact")).fit(data, baskets=b)
    out["exact"] = {**report(exact, truth, None), "fit_s": round(time.perf_counter() - t0, 1)}
    for size, probe, dim in ((1000, 6, 64), (250, 6, 64), (250, 6, 128), (250, 12, 64)):
        t0 = time.perf_counter()
        cfg = replace(tifu, search="approximate", cluster_size=size, probe=probe, embedding_dim=dim)
        m = TIFUKNNRecommender(RecommenderConfig(), cfg).fit(data, baskets=b)
        recall = np.mean(
            [
                len(np.intersect1d(x, y)) / len(x)
                for x, y in zip(exact.neighbours_, m.neighbours_, strict=True)
                if x[0] >= 0
            ]
        )
        out[f"approximate cluster_size={size} probe={probe} dim={dim}"] = {
            **report(m, truth, None), "neighbour_recall": round(float(recall), 4),
            "fit_s": round(time.perf_counter() - t0, 1)}
        log.info("%s", out)
    return out


def exact_neighbours_of(Un: Any, ok: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """The exact neighbours of ``rows`` only (the search of ``models.recsys.tifu.exact_neighbours`` for a
    sample of rows: its time extrapolates to the full search)."""
    cand = np.flatnonzero(ok)
    C = sp.csr_matrix(Un[cand].T)
    out = []
    step = max(1, 64_000_000 // len(cand))
    for a in range(0, len(rows), step):
        r = rows[a:a + step]
        S = (Un[r] @ C).toarray()
        S[cand[None, :] == r[:, None]] = -np.inf
        part = np.argpartition(-S, k - 1, axis=1)[:, :k]
        out.append(cand[part])
    return np.vstack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["quality", "compare", "simulated", "scale", "approx"])
    ap.add_argument("--cutoff", help="compare: one of CUTOFFS")
    ap.add_argument("--old", action="store_true", help="compare: the production of before (no TIFU-KNN)")
    ap.add_argument("--shop", required=True)
    ap.add_argument("--out")
    ap.add_argument("--exact-sample", type=int, default=2000)
    a = ap.parse_args()
    start_logging()
    shop = load_shop(a.shop)
    cfg = TifuConfig()
    res: dict[str, Any]
    if a.what == "quality":
        res = quality(shop, cfg)
    elif a.what == "compare":
        end = dict(CUTOFFS)[a.cutoff]
        res = compare(shop, pd.Timestamp(a.cutoff), pd.Timestamp(end) if end else None, a.old)
    elif a.what == "simulated":
        res = simulated(shop, pd.Timestamp(a.cutoff or "2025-11-01"))
    else:
        res = scale(shop, cfg, a.exact_sample) if a.what == "scale" else approx_quality(shop, cfg)
    emit(res, a.out)


if __name__ == "__main__":
    main()
