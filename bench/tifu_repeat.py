"""Issue #21, a time-boxed search: do trending / rising products or repeat timing ("how due is this product
for this customer") add to production's TIFU-KNN-dominated blend? Measured on the 56 tuning days before each
cutoff (where a weight would be chosen) and on the test window after it, with the same judge.

    python bench/tifu_repeat.py --shop DIR --cutoff 2011-06-01 [--out FILE.json]

For one cutoff C: the base is production's blend at C (TIFU-KNN with the settings its tuning chose at C, plus
the small corrections it chose; :data:`CHOSEN`), each candidate component is added at several weights, and
NDCG@10 (all items, default business rules) is measured (a) with data before C - 56 days against purchases in
the 56 days (the tuning weeks: what production's tuning sees) and (b) with data before C against the test
window. Per-customer paired bootstraps (test) of the base + the tuning-chosen weight against the base and
against TIFU-KNN alone.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import numpy as np
import pandas as pd

from bench.tifu_common import CUTOFFS, emit, interactions, paired_bootstrap, start_logging
from features.interactions import InteractionData
from features.io import Shop, load_shop
from models.recsys import MODELS, BusinessRules, RecommenderConfig
from models.recsys.blend import normalise, normalise_by_max
from models.recsys.popularity import TrendingRecommender
from models.recsys.tifu import TifuConfig, TIFUKNNRecommender, build_baskets
from training.blend_tuning import _Judge
from training.rec_truth import purchase_truth

log = logging.getLogger("bench.tifu_repeat")
TUNE_DAYS = 56
CHOSEN: dict[str, tuple[dict[str, Any], dict[str, float]]] = {
    "2011-06-01": ({"within_decay": 0.9, "group_decay": 0.7, "groups": 7, "alpha": 0.3, "neighbours": 100},
                   {"item_knn": 0.05, "als": 0.1, "popularity": 0.02}),
    "2011-09-01": ({"within_decay": 1.0, "group_decay": 0.9, "groups": 28, "alpha": 0.3, "neighbours": 300},
                   {"item_knn": 0.1, "als": 0.05}),
    "2011-11-01": ({"within_decay": 1.0, "group_decay": 0.9, "groups": 28, "alpha": 0.5, "neighbours": 100},
                   {"popularity": 0.02}),
}
"""Production's tuned TIFU-KNN settings and blend corrections at each cutoff (bench/TIFU.md)."""
STEPS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
RISING_ROUND = (0.1, 0.2, 0.5)
"""The rising weights of the run above (production now tries 0.2 and 0.5: 0.1 was never chosen)."""
DUE_ROUND = (0.05, 0.1, 0.2)
"""A repeat-timing round after the rising one (not in production)."""


def repeat_timing(shop: Shop, data: InteractionData, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Repeat-timing scores (customers ``rows`` x items, 0 where the customer never bought the item).

    Per customer and product, from the distinct purchase days before the cutoff: ``n`` days, ``t`` days since
    the last, personal gap ``g = (last - first) / (n - 1)`` (n >= 2), the product's typical gap (median of
    personal gaps, >= 3 customers; else the overall median). ``due_personal``: closeness of ``t`` to the
    personal gap (the product's gap when n == 1), ``exp(-|log(t / g)|)``; ``due_item``: the same against the
    product's gap; ``overdue``: ``min(t / g, 3) / 3`` (how far past the gap); ``fresh``: 1 / (1 + t / g)."""
    o = shop.customer_orders()
    o = o[(o["quantity"] > 0) & (o["ts"] < data.cutoff)]
    u, j = data.users.rows(o["customer_id"]), data.items.rows(o["product_id"])
    ok = (u >= 0) & (j >= 0)
    day = (o["ts"].to_numpy()[ok].astype("datetime64[D]").astype(np.int64))
    df = pd.DataFrame({"u": u[ok], "j": j[ok], "d": day}).drop_duplicates()
    g = df.groupby(["u", "j"])["d"].agg(["min", "max", "count"]).reset_index()
    end = np.datetime64(data.cutoff.as_unit("ns").asm8).astype("datetime64[D]").astype(np.int64)
    t = (end - g["max"].to_numpy()).astype(float)
    n = g["count"].to_numpy()
    gap = np.where(n >= 2, (g["max"] - g["min"]).to_numpy() / np.maximum(n - 1, 1), np.nan)
    item_gap_s = pd.Series(gap).groupby(g["j"].to_numpy()).agg(["median", "count"])
    overall = float(np.nanmedian(gap)) if np.isfinite(gap).any() else 30.0
    item_gap = np.full(len(data.items), overall)
    good = item_gap_s["count"] >= 3
    item_gap[item_gap_s.index[good]] = item_gap_s["median"][good].to_numpy()
    ig = np.maximum(item_gap[g["j"].to_numpy()], 1.0)
    pg = np.where(np.isfinite(gap), np.maximum(gap, 1.0), ig)
    tt = np.maximum(t, 1.0)
    scores = {"due_personal": np.exp(-np.abs(np.log(tt / pg))), "due_item": np.exp(-np.abs(np.log(tt / ig))),
              "overdue": np.minimum(tt / pg, 3) / 3, "fresh": 1 / (1 + tt / pg)}
    pos = np.full(len(data.users), -1, np.int64)
    pos[rows[rows >= 0]] = np.flatnonzero(rows >= 0)
    r = pos[g["u"].to_numpy()]
    keep = r >= 0
    out = {}
    for k, v in scores.items():
        m = np.zeros((len(rows), len(data.items)))
        m[r[keep], g["j"].to_numpy()[keep]] = v[keep]
        out[k] = m
    return out


def rising(shop: Shop, data: InteractionData, recent: int = 28, before: int = 84) -> np.ndarray:
    """Per product: log of (purchase days in the last ``recent`` days + 1) over (its rate in the ``before``
    days ahead of them, scaled to ``recent`` days, + 1): products selling faster than they did."""
    o = shop.customer_orders()
    o = o[(o["quantity"] > 0) & (o["ts"] < data.cutoff)]
    j = data.items.rows(o["product_id"])
    age = (data.cutoff - o["ts"]).dt.days.to_numpy()
    ok = j >= 0
    a = np.bincount(j[ok & (age < recent)], minlength=len(data.items)).astype(float)
    b = np.bincount(j[ok & (age >= recent) & (age < recent + before)],
                    minlength=len(data.items)) * recent / before
    return np.log1p(a) - np.log1p(b)  # type: ignore[no-any-return]


RISING = {"rising": (28, 84), "rising14": (14, 56), "rising_all": (28, 10_000), "rising56": (56, 112)}
"""Rising variants: (recent days, days before them compared against)."""


def rising_from_data(data: InteractionData) -> np.ndarray:
    """Rising from what :class:`InteractionData` holds: purchase lines in the trending window (28 days)
    against the product's purchase days over the whole history at the same rate (365 days assumed)."""
    total = np.asarray(data.purchases.sum(axis=0)).ravel()
    return np.log1p(data.recent_item_weight) - np.log1p(total * 28 / 365)  # type: ignore[no-any-return]


def window(shop: Shop, cutoff: pd.Timestamp, end: pd.Timestamp | None, tifu_cfg: dict[str, Any],
           corrections: dict[str, float]) -> tuple[_Judge, dict[str, np.ndarray]]:
    """The judge of one window and the normalised component scores of its customers."""
    data = interactions(shop, cutoff)
    buyers = set(data.users.ids[np.asarray(data.purchases.sum(axis=1)).ravel() > 0])
    truth = {u: s for u, s in purchase_truth(shop, cutoff, end).items() if u in buyers}
    judge = _Judge(data, truth, 10, BusinessRules())
    config = RecommenderConfig()
    ctx = judge.ctx
    tifu = TIFUKNNRecommender(config, TifuConfig(**tifu_cfg)).fit(data, baskets=build_baskets(shop, data))
    comps: dict[str, np.ndarray] = {"tifu": normalise_by_max(tifu.score(ctx))}
    for n in corrections:
        comps[n] = normalise(MODELS[n](config).fit(data).score(ctx))
    comps["trending"] = normalise(TrendingRecommender(config).fit(data).score(ctx))
    for name, (rc, bf) in RISING.items():
        r = rising(shop, data, rc, bf)
        comps[name] = normalise(np.broadcast_to(r, (len(ctx.rows), len(r))).copy())
    r = rising_from_data(data)
    comps["rising_data"] = normalise(np.broadcast_to(r, (len(ctx.rows), len(r))).copy())
    comps.update(repeat_timing(shop, data, ctx.rows))
    log.info("%s: %d customers, components %s", cutoff.date(), len(judge.users), list(comps))
    return judge, comps


def measure(judge: _Judge, comps: dict[str, np.ndarray], corrections: dict[str, float]
            ) -> dict[str, np.ndarray]:
    """Per-customer NDCG@10 of TIFU-KNN alone, the base blend, and the base with each candidate at each step
    (keys ``name@w``); ``tifu*X`` candidates multiply TIFU-KNN's score by ``1 + w * X``."""
    base = comps["tifu"] + sum(w * comps[n] for n, w in corrections.items())
    out = {"tifu": judge.per_customer(np.where(comps["tifu"] > 0, comps["tifu"], -np.inf)),
           "base": judge.per_customer(base)}
    for n in ("trending", *RISING, "rising_data", "popularity", "due_personal", "due_item", "overdue",
              "fresh"):
        if n not in comps:
            continue
        for w in STEPS:
            out[f"{n}@{w}"] = judge.per_customer(base + w * comps[n])
    for w in STEPS:
        out[f"rising+due_personal0.1@{w}"] = judge.per_customer(base + w * comps["rising"]
                                                                + 0.1 * comps["due_personal"])
        out[f"rising+trending@{w}"] = judge.per_customer(base + w * (comps["rising"] + comps["trending"]) / 2)
    for wr in RISING_ROUND:  # production's rising round, then a repeat-timing round on top of it
        for n in ("due_personal", "tifu*due_personal"):
            for w in DUE_ROUND:
                extra = comps["due_personal"] * (comps["tifu"] if n.startswith("tifu*") else 1.0)
                out[f"rising{wr}+{n}@{w}"] = judge.per_customer(base + wr * comps["rising"] + w * extra)
    for n in ("due_personal", "due_item", "overdue", "fresh"):
        for w in STEPS:
            out[f"tifu*{n}@{w}"] = judge.per_customer(base + comps["tifu"] * w * comps[n])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shop", required=True)
    ap.add_argument("--cutoff", required=True, choices=[c for c, _ in CUTOFFS])
    ap.add_argument("--out")
    a = ap.parse_args()
    start_logging()
    shop = load_shop(a.shop)
    cutoff = pd.Timestamp(a.cutoff)
    end = dict(CUTOFFS)[a.cutoff]
    tifu_cfg, corr = CHOSEN[a.cutoff]
    res: dict[str, Any] = {"cutoff": a.cutoff}
    per: dict[str, dict[str, np.ndarray]] = {}
    for key, (c, e) in (("tuning", (cutoff - pd.Timedelta(days=TUNE_DAYS), cutoff)),
                        ("test", (cutoff, pd.Timestamp(end) if end else None))):
        judge, comps = window(shop, c, e, tifu_cfg, corr)
        per[key] = measure(judge, comps, corr)
        del comps
        res[key] = {n: round(float(v.mean()), 4) for n, v in per[key].items()}
        res[f"{key}_customers"] = len(judge.users)
    tune = res["tuning"]
    families = sorted({n.split("@")[0] for n in tune if "@" in n})
    res["chosen"] = {}
    for f in families:
        best = max((n for n in tune if n.startswith(f + "@")), key=lambda n: tune[n])
        if tune[best] <= tune["base"]:
            continue
        res["chosen"][f] = {"name": best, "tuning_gain": round(tune[best] - tune["base"], 4),
                            "test": res["test"][best],
                            "vs_base": paired_bootstrap(per["test"][best], per["test"]["base"]),
                            "vs_tifu": paired_bootstrap(per["test"][best], per["test"]["tifu"])}
    res["base_vs_tifu"] = paired_bootstrap(per["test"]["base"], per["test"]["tifu"])
    wr = max(RISING_ROUND, key=lambda w: tune[f"rising@{w}"])
    res["rounds"] = {"rising": wr, "rising_tuning_gain": round(tune[f"rising@{wr}"] - tune["base"], 4)}
    for n in ("due_personal", "tifu*due_personal"):
        best = max((f"rising{wr}+{n}@{w}" for w in DUE_ROUND), key=lambda k: tune[k])
        gain = round(tune[best] - tune[f"rising@{wr}"], 4)
        res["rounds"][n] = {"name": best, "tuning_gain_over_rising": gain,
                            "test": res["test"][best],
                            "vs_rising": paired_bootstrap(per["test"][best], per["test"][f"rising@{wr}"])}
    emit(res, a.out)


if __name__ == "__main__":
    main()
