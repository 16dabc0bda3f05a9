"""The shape matrix: shops of other shapes than the simulator's train what their data allows, say what they
skipped, and serve.

Each shape is a small simulated shop cut to that shape (no truth directory: a real shop has none), trained
with a light config (few trees, no baseline recommenders) so that the matrix stays quick; the code paths are
the production ones. Every shape: ``train`` returns (the CLI's exit 0), registers and promotes all four
components (a first run: nothing to compare with), the report and MLflow tags say which model each component
serves and what was not evaluated, and :class:`serving.runtime.Personaliser` answers on the trained project
with fallbacks marked. One shape is also served by a real HTTP server (``/readyz`` 200).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from features import schema
from tests.conftest import SEED

pytestmark = pytest.mark.slow
OFFER_LOG, EVENTS, PRODUCTS = "offer_log.parquet", "events.parquet", "products.parquet"


def _shop(d: Path, days: int, events: bool = False, customers: int = 150, products: int = 25) -> Path:
    from features.simulate import simulate_shop
    simulate_shop(d, customers=customers, products=products, days=days, seed=SEED, events=events)
    shutil.rmtree(d / "truth")
    return d


def _young(days: int) -> Callable[[Path], None]:
    def build(d: Path) -> None:
        _shop(d, days)
    return build


def _one_product(d: Path) -> None:
    """Every order line names the same product (order totals exported from a CRM)."""
    _shop(d, 365)
    orders, products = pd.read_parquet(d / "orders.parquet"), pd.read_parquet(d / PRODUCTS)
    orders[schema.PRODUCT_ID] = products[schema.PRODUCT_ID].iloc[0]
    orders.to_parquet(d / "orders.parquet", index=False)
    products.iloc[:1].to_parquet(d / PRODUCTS, index=False)


def _without(table: str, days: int = 365) -> Callable[[Path], None]:
    def build(d: Path) -> None:
        _shop(d, days)
        (d / table).unlink(missing_ok=True)
    return build


def _events_few_days(d: Path) -> None:
    """Nine days of a shop with rich behaviour events (views, carts, wishlists, purchases)."""
    _shop(d, 9, events=True, customers=400)


def _one_customer_one_order(d: Path) -> None:
    _shop(d, 120)
    orders = pd.read_parquet(d / "orders.parquet")
    first = orders.iloc[0]
    orders[orders[schema.ORDER_ID] == first[schema.ORDER_ID]].to_parquet(d / "orders.parquet", index=False)
    customers = pd.read_parquet(d / "customers.parquet")
    customers = customers[customers[schema.CUSTOMER_ID] == first[schema.CUSTOMER_ID]]
    customers.to_parquet(d / "customers.parquet", index=False)
    for t in (EVENTS, OFFER_LOG):
        (d / t).unlink(missing_ok=True)


def _late_live_event(d: Path) -> None:
    """A year of orders, then, 300 days after the last one, a storefront event in the live store (as a shop
    whose order export stopped while its storefront kept sending events; or a demo run again later): the
    refit's label windows lie in the gap."""
    from features.live import LiveStore, default_url
    _shop(d, 365)
    last = pd.read_parquet(d / "orders.parquet")[schema.TS].max()
    store = LiveStore(default_url(d.parent))
    store.add_events([{"customer_id": "C0000001", "product_id": "P00001", "event_type": "view",
                       "ts": (last + pd.Timedelta(days=300)).to_pydatetime()}])
    store.engine.dispose()


SHAPES: dict[str, tuple[Callable[[Path], None], int]] = {
    "young_60_days": (_young(60), 90),
    "young_120_days": (_young(120), 90),
    "one_product": (_one_product, 90),
    "no_events": (_without(EVENTS), 90),
    "events_for_nine_days": (_events_few_days, 90),
    "no_products_table": (_without(PRODUCTS), 90),
    "no_offer_log": (_without(OFFER_LOG), 90),
    "one_customer_one_order": (_one_customer_one_order, 90),
    "horizon_longer_than_history": (_young(200), 273),
    "late_live_event": (_late_live_event, 90),
}
"""Shape -> (builder of its shop directory, horizon in days)."""
SHORT_HISTORY = ("young_60_days", "young_120_days", "events_for_nine_days", "horizon_longer_than_history")
"""Shapes whose data end lacks the history for stacked windows of the horizon."""


def light_config(horizon: int) -> Any:
    from models.customer import CustomerModelConfig
    from models.recsys import RecommenderConfig
    from training.config import TrainConfig
    return TrainConfig(horizon_days=horizon, seed=SEED, rec_baselines=(),
                       customer=CustomerModelConfig(horizon_days=horizon, n_estimators=60, learning_rate=0.08,
                                                    n_cutoffs=3, min_child_samples=20, seed=SEED),
                       recommender=RecommenderConfig(factors=16, als_iterations=5, rerank_trees=20,
                                                     rerank_min_customers=50, seed=SEED))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], tuple[Path, Any]]]:
    """Trains a shape once (the HTTP check reuses one of the matrix's projects)."""
    from training.jobs import train
    done: dict[str, tuple[Path, Any]] = {}

    def get(shape: str) -> tuple[Path, Any]:
        if shape not in done:
            build, horizon = SHAPES[shape]
            d = tmp_path_factory.mktemp(shape)
            build(d / "shop")
            os.environ.pop("MLFLOW_TRACKING_URI", None)
            done[shape] = (d, train(d, light_config(horizon)))
        return done[shape]
    yield get


def _expected_skips(shape: str, report: dict[str, Any]) -> None:
    """What each shape must say it skipped or fell back on."""
    comps, skipped = report["components"], report.get("not_evaluated", {})
    if shape in ("young_60_days", "horizon_longer_than_history", "events_for_nine_days"):
        assert set(skipped) == {"churn", "value"}, skipped
        assert "holdout" in skipped["churn"] and "does not fit" in skipped["churn"]
        for c in ("churn", "value"):  # served: chosen on a validation window before the data end, if any
            assert "the stacked model needs" in comps[c], comps[c]
            validated = "chosen on the validation window" in comps[c]
            assert validated == (shape != "events_for_nine_days"), comps[c]
        if shape == "events_for_nine_days":  # nine days: nothing to validate on, the BG/NBD fallback stays
            assert comps["churn"].startswith("BG/NBD fallback")
            assert comps["value"].startswith("BG/NBD + Gamma")
        if shape == "young_60_days":  # no 7-day window fits after 60 days of warm-up: BG/NBD or a baseline
            assert comps["churn"].startswith("BG/NBD fallback") and "short-window" not in comps["value"]
        assert report["recommend"]["all_items"]["production"]["ndcg@10"] is not None  # a shorter holdout
    elif shape == "young_120_days":  # the 90-day holdout fits, stacked windows do not: evaluated fallback
        assert not skipped
        sel = report["selection"]  # 30 days before the holdout: no validation window, BG/NBD kept
        assert sel["churn"]["chosen"] == sel["value"]["chosen"] == "bgnbd" and "validation" not in sel
        assert "(evaluated: BG/NBD fallback" in comps["churn"] or comps["churn"].startswith("BG/NBD fallback")
        assert "< the 90 + 60 days" in comps["churn"]
        prod, base = report["churn"]["production"]["auc"], report["churn"]["bgnbd"]["auc"]
        assert abs(prod - base) < 0.05, (prod, base)  # the fallback ranks as the BG/NBD baseline does
    elif shape == "one_customer_one_order":
        assert set(skipped) == {"churn", "value", "recommender", "offers"}, skipped
        assert "no day splits the customer orders" in skipped["recommender"]
        assert report["cutoff"] is None
    else:
        assert not skipped, skipped
        assert report["churn"]["production"]["auc"] is not None
        assert report["value"]["production"]["spearman"] is not None
    if shape == "late_live_event":  # evaluated on the shop's own data; refitted where no spend is: fallback
        for c in ("churn", "value"):
            assert "hold no spend (the last order is of" in comps[c], comps[c]
    if shape == "one_product":
        notes = report["recommend"]["notes"]
        assert any("default weights" in n and "product" in n for n in notes), notes
        assert any("new_items: not evaluated" in n for n in notes), notes
        assert "default weights" in comps["recommender"]
    if shape in ("no_offer_log", "one_customer_one_order"):
        assert report.get("offers", {}).get("skipped", "no offer_log").startswith("no offer_log")


def _buyer(orders: pd.DataFrame) -> str:
    """The customer with most order lines among those who returned nothing (a returned product is never
    recommended: in a one-product shop a customer who returned it rightly gets nothing)."""
    returned = set(orders.loc[orders[schema.QUANTITY] < 0, schema.CUSTOMER_ID])
    counts = orders[schema.CUSTOMER_ID].value_counts()
    return str(next(c for c in counts.index if c not in returned))


@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_shape_trains_says_what_it_skipped_and_serves(shape: str, trained: Callable[[str], Any],
                                                            tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from serving.runtime import Personaliser
    d, r = trained(shape)
    assert set(r.versions) == {"recommender", "churn", "value", "offers"} and r.promoted, r.reason
    for c in r.report.get("not_evaluated", {}):
        if c in ("churn", "value", "recommender"):
            assert f"{c}: promoted without evaluation" in r.reason
    _expected_skips(shape, r.report)
    run = MlflowClient().get_run(r.run_id).data
    tags = run.tags
    assert {tags[f"model.{c}"] for c in r.report["components"]} == set(r.report["components"].values())
    if shape in SHORT_HISTORY:  # the served churn/value choice is a run parameter too
        from training.customer_selection import CHURN_CANDIDATES, VALUE_CANDIDATES
        assert run.params["selection.churn.served"] in CHURN_CANDIDATES
        assert run.params["selection.value.served"] in VALUE_CANDIDATES
        if shape == "horizon_longer_than_history":  # 200 days: a model trained on the windows validated
            import mlflow
            sel = mlflow.artifacts.load_dict(f"runs:/{r.run_id}/evaluation/served_selection.json")
            assert sel["short_window"]["label_days"] == sel["validation"]["horizon_days"]
            assert "short_window" in sel["validation"]["value"]
    elif shape in ("one_product", "no_events", "no_products_table", "no_offer_log"):  # stacked windows fit:
        from training.value_choice import CANDIDATES  # value alone or blended, chosen on a validation window
        assert run.params["selection.value.served"] in CANDIDATES
        assert "selection.churn.served" not in run.params
        assert "chosen on the validation window" in r.report["components"]["value"]
        # the refit serves the evaluation's choice (as its blend weights), fitting no validation model
        assert run.params["selection.value.served"] == run.params["selection.value.evaluated"]
        import mlflow
        served = mlflow.artifacts.load_dict(f"runs:/{r.run_id}/evaluation/served_selection.json")
        assert served["value"]["reason"].startswith("as chosen in the evaluation"), served
    orders = pd.read_parquet(d / "shop" / "orders.parquet")
    buyer = _buyer(orders)
    p = Personaliser(d, store_url=f"sqlite:///{tmp_path / 'live.db'}")
    try:
        assert p.current is not None, p.load_error
        known = p.recommend(buyer, 5, None, False, [])
        assert known["source"] in ("model", "fallback") and known["model_version"] != "none"
        catalogue = set(orders[schema.PRODUCT_ID])
        if (d / "shop" / PRODUCTS).exists():
            catalogue |= set(pd.read_parquet(d / "shop" / PRODUCTS)[schema.PRODUCT_ID])
        ids = [i[schema.PRODUCT_ID] for i in known["items"]]
        assert 1 <= len(ids) <= min(5, len(catalogue)) and len(set(ids)) == len(ids) and set(ids) <= catalogue
        assert [i[schema.RANK] for i in known["items"]] == list(range(1, len(ids) + 1))
        stranger = p.recommend("nobody-at-all", 5, None, False, [])
        assert stranger["source"] == "fallback" and len(stranger["items"]) >= 1
        prof = p.profile(buyer)
        assert prof["known"] and 0.0 <= prof["churn_risk"] <= 1.0 and prof["predicted_value"] >= 0
        assert p.profile("nobody-at-all")["source"] == "fallback"
        offers = {o[schema.CUSTOMER_ID]: o for o in p.offers([buyer, "nobody-at-all"], None, "shape-test")}
        assert offers["nobody-at-all"][schema.OFFER_ID] == "none" and offers["nobody-at-all"]["reason"]
        assert offers[buyer][schema.OFFER_ID] and offers[buyer]["reason"]
    finally:
        p.close()


def test_a_young_shop_is_ready_over_http(trained: Callable[[str], Any]) -> None:
    """A real server on the 60-day shop's project: ready, and a known customer gets recommendations."""
    from tests.serving.conftest import Server
    d, _ = trained("young_60_days")
    s = Server(d, {"PERSONALISE_DB": f"sqlite:///{d / 'http-live.db'}"})
    try:
        import httpx
        assert httpx.get(f"{s.url}/readyz", timeout=10).status_code == 200
        buyer = _buyer(pd.read_parquet(d / "shop" / "orders.parquet"))
        r = s.call("recommend", {"customer_id": buyer, "k": 3})
        assert r.status_code == 200 and len(r.json()["items"]) == 3, r.text
    finally:
        s.stop()
