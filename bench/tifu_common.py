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


def start_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def emit(result: dict[str, Any], out: str | None) -> None:
    """Print ``result`` as JSON, and write it to ``out`` when given."""
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text)
