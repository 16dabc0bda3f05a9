"""The recommendation report measures what behaviour events add: ``production_purchases_only`` is the
production model fitted without them, and on a shop whose views plant the next purchase, production wins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features import schema
from features.io import load_shop
from tests.conftest import SEED

CUTOFF = pd.Timestamp("2025-03-01")


def _shop(d: Path, customers: int = 200, products: int = 40) -> Path:
    """Before the cutoff each customer buys three random products and, in its last week, views and carts
    two others; after it, the customer buys one of those two. Purchases alone cannot tell which."""
    rng = np.random.default_rng(SEED)
    pids = [f"p{i:02d}" for i in range(products)]
    start = CUTOFF - pd.Timedelta(days=60)
    orders, events = [], []
    for c in range(customers):
        cid = f"c{c:03d}"
        picks = rng.choice(products, size=5, replace=False)
        for j, p in enumerate(picks[:3]):
            orders.append((f"{cid}-o{j}", cid, pids[p], start + pd.Timedelta(days=int(rng.integers(0, 50)))))
        for p in picks[3:]:
            for kind in ("view", "view", "add_to_cart"):
                ts = CUTOFF - pd.Timedelta(hours=int(rng.integers(1, 24 * 7)))
                events.append((cid, pids[p], kind, ts))
        later = CUTOFF + pd.Timedelta(days=int(rng.integers(1, 20)))
        orders.append((f"{cid}-next", cid, pids[picks[3]], later))
    d.mkdir(parents=True, exist_ok=True)
    o = pd.DataFrame(orders, columns=[schema.ORDER_ID, schema.CUSTOMER_ID, schema.PRODUCT_ID, schema.TS])
    o[schema.QUANTITY], o["unit_price"] = 1.0, 10.0
    o.to_parquet(d / "orders.parquet", index=False)
    e = pd.DataFrame(events, columns=[schema.CUSTOMER_ID, schema.PRODUCT_ID, schema.EVENT_TYPE, schema.TS])
    e.to_parquet(d / "events.parquet", index=False)
    return d


def test_production_beats_its_purchases_only_twin_when_views_plant_the_next_purchase(tmp_path: Path) -> None:
    from training.rec_eval import PURCHASES_ONLY, evaluate_recommenders
    shop = load_shop(_shop(tmp_path / "shop"))
    report = evaluate_recommenders(shop, CUTOFF, models=("popularity",)).report
    ndcg = {m: report["all_items"][m]["ndcg@10"] for m in ("production", PURCHASES_ONLY, "popularity")}
    assert ndcg["production"] > ndcg[PURCHASES_ONLY] + 0.05, ndcg
    assert PURCHASES_ONLY in report["new_items"] and PURCHASES_ONLY in report["fit_seconds"]


def test_a_shop_without_events_has_no_twin(tmp_path: Path) -> None:
    from training.rec_eval import PURCHASES_ONLY, evaluate_recommenders
    d = _shop(tmp_path / "shop")
    (d / "events.parquet").unlink()
    report = evaluate_recommenders(load_shop(d), CUTOFF, models=("popularity",)).report
    assert PURCHASES_ONLY not in report["all_items"] and "production" in report["all_items"]


def test_scoring_on_two_threads_gives_the_report_of_one(tmp_path: Path) -> None:
    """The evaluation's lists are scored several models at a time (the twin fitted in one of them): the same
    report, in the same order, as one model at a time."""
    from training.rec_eval import PURCHASES_ONLY, fit_recommenders, score_recommenders
    shop = load_shop(_shop(tmp_path / "shop"))
    models = ("popularity", "item_knn", "ease")
    reports = []
    for threads in (1, 2):
        report = score_recommenders(fit_recommenders(shop, CUTOFF, models=models), threads=threads).report
        reports.append({k: v for k, v in report.items() if k != "fit_seconds"})
        assert list(report["all_items"]) == [*models, "production", PURCHASES_ONLY]
        assert set(report["fit_seconds"]) == {*models, "production", PURCHASES_ONLY}
    assert reports[0] == reports[1]
