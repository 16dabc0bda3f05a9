"""What the TIFU-KNN benchmarks share (``bench/tifu_eval.py``, ``bench/tifu_blend.py``): the cutoffs, a shop's
interactions and purchase truth at a cutoff, the rounded ranking metrics, and the command line's logging and
JSON output."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pandas as pd

from features.importers import is_non_product
from features.interactions import InteractionData, build_interactions
from features.io import Shop
from models.metrics import ranking_report
from training.rec_eval import new_items_truth, purchase_truth

CUTOFFS = (("2011-06-01", "2011-09-01"), ("2011-09-01", None), ("2011-11-01", None))
"""(cutoff, end of the window): three months apart; the first window stops where the project's starts (no
overlap), the project's runs to the end of the data, the last is the five weeks before Christmas."""
METRICS = ("ndcg@10", "precision@10", "hit_rate@10")
"""The ranking metrics the TIFU benchmarks report (at 10)."""


def interactions(shop: Shop, cutoff: pd.Timestamp | None) -> InteractionData:
    """Interactions before ``cutoff`` (all with ``None``), the Online Retail fee codes left out."""
    return build_interactions(shop, cutoff, non_product=is_non_product)


def split(shop: Shop, cutoff: pd.Timestamp, end: pd.Timestamp | None
          ) -> tuple[InteractionData, dict[str, set[str]], dict[str, set[str]]]:
    """Interactions before ``cutoff``; purchases in the window of customers who bought before (all and
    new)."""
    data = interactions(shop, cutoff)
    buyers = set(data.users.ids[np.asarray(data.purchases.sum(axis=1)).ravel() > 0])
    truth = {u: s for u, s in purchase_truth(shop, cutoff, end).items() if u in buyers}
    return data, truth, new_items_truth(data, truth)


def ranking_metrics(recs: pd.DataFrame, truth: dict[str, set[str]]) -> dict[str, float]:
    """:data:`METRICS` of the top-10 ``recs`` against ``truth``, rounded to 4 decimals."""
    r = ranking_report(recs, truth, 10)
    return {k: round(r[k], 4) for k in METRICS}


def per_customer_ndcg(recs: pd.DataFrame, truth: dict[str, set[str]], k: int = 10) -> np.ndarray:
    """Each customer's NDCG@k (in ``truth``'s order; 0 without recommendations), as
    :func:`models.metrics.ranking_report` averages it."""
    from models.metrics import ndcg
    users = list(truth)
    row = pd.Series(np.arange(len(users)), index=pd.Index(users, dtype=object))
    top = recs[(recs["rank"] <= k) & recs["customer_id"].isin(row.index)]
    r = row.reindex(top["customer_id"].to_numpy(object)).to_numpy()
    hit = np.fromiter((p in truth[u] for u, p in zip(top["customer_id"], top["product_id"], strict=True)),
                      bool, count=len(top))
    hits = np.zeros((len(users), k))
    hits[r[hit], top["rank"].to_numpy()[hit] - 1] = 1.0
    return ndcg(hits, np.array([len(truth[u]) for u in users]), k)  # type: ignore[no-any-return]


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean of ``a - b`` (paired per customer), its 95% percentile interval over ``n`` resamples of the
    customers, and the share of resamples where the difference is positive."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    rng = np.random.default_rng(seed)
    means = np.concatenate([d[rng.integers(0, len(d), (min(200, n - i), len(d)))].mean(axis=1)
                            for i in range(0, n, 200)])
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"diff": round(float(d.mean()), 5), "ci95_low": round(float(lo), 5),
            "ci95_high": round(float(hi), 5), "share_positive": round(float((means > 0).mean()), 4),
            "customers": len(d)}


def start_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def emit(result: dict[str, Any], out: str | None) -> None:
    """Print ``result`` as JSON, and write it to ``out`` when given."""
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text)
