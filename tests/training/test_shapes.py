"""Shops of other shapes than the simulator's train what their data allows, and say what they skipped."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import SEED

pytestmark = pytest.mark.slow  # each test trains a project into a real MLflow store


def _shop(d: Path, days: int, products: int = 30, customers: int = 300) -> Path:
    from features.simulate import simulate_shop
    simulate_shop(d, customers=customers, products=products, days=days, seed=SEED, events=False)
    return d


@pytest.fixture(scope="module")
def one_product_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated shop post-processed so that every order line names the same single product (order totals
    exported from a CRM): the products table keeps that one product."""
    d = tmp_path_factory.mktemp("one_product")
    shop = _shop(d / "shop", days=365)
    orders, products = pd.read_parquet(shop / "orders.parquet"), pd.read_parquet(shop / "products.parquet")
    pid = products["product_id"].iloc[0]
    orders["product_id"] = pid
    orders.to_parquet(shop / "orders.parquet", index=False)
    products.iloc[:1].to_parquet(shop / "products.parquet", index=False)
    return d


def test_a_one_product_shop_trains_and_registers_the_customer_models(one_product_project: Path) -> None:
    """Blend tuning had an empty discovery truth here (IndexError before): now the blend keeps its default
    weights with the reason recorded, and churn and value are fitted, evaluated and registered as usual."""
    from mlflow import MlflowClient

    from training.config import TrainConfig
    from training.jobs import train
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    r = train(one_product_project, TrainConfig(seed=SEED))
    assert {"churn", "value", "recommender"} <= set(r.versions)
    client = MlflowClient()
    for c in ("churn", "value"):
        mv = client.get_model_version(f"personalise-{c}", r.versions[c])
        assert mv.run_id == r.run_id
    notes = r.report["recommend"]["notes"]
    assert any("default weights" in n and "product" in n for n in notes), notes
    assert any("new_items: not evaluated" in n for n in notes), notes
    # the customer models are evaluated as on any shop
    assert r.report["churn"]["production"]["auc"] is not None
    assert r.report["value"]["production"]["spearman"] is not None
    tags = client.get_run(r.run_id).data.tags
    assert "default weights" in tags["model.recommender"]


def test_a_120_day_shop_trains_with_the_bgnbd_fallback_and_says_why(tmp_path: Path) -> None:
    """120 days of orders, a 90-day horizon: too short for stacked label windows. Train exits without error,
    churn and value are BG/NBD (+ Gamma-Gamma) and are evaluated, and the report and MLflow tags say so."""
    from mlflow import MlflowClient

    from models.bgnbd import BGNBDCustomerModel
    from training.config import TrainConfig
    from training.jobs import train
    _shop(tmp_path / "shop", days=120)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    r = train(tmp_path, TrainConfig(seed=SEED, horizon_days=90))
    assert {"recommender", "churn", "value"} <= set(r.versions)
    comps = r.report["components"]
    assert comps["churn"].startswith("BG/NBD fallback") and "< the 90 + 60 days" in comps["churn"]
    assert comps["value"].startswith("BG/NBD + Gamma-Gamma fallback")
    assert comps["recommender"].startswith("blend")
    # evaluated: the fallback (BG/NBD on the customer features' RFM columns) ranks about as the BG/NBD
    # baseline (on the order table) does
    prod, base = r.report["churn"]["production"]["auc"], r.report["churn"]["bgnbd"]["auc"]
    assert abs(prod - base) < 0.05, (prod, base)
    # measured, not judged here: with 28 days before the evaluation cutoff BG/NBD churn ranked below chance
    # (AUC 0.366 on this shop, baseline the same) - a finding reported, not hidden
    assert 0.0 <= prod <= 1.0
    assert r.report["value"]["production"]["spearman"] is not None
    tags = MlflowClient().get_run(r.run_id).data.tags
    assert tags["model.churn"] == comps["churn"] and tags["model.value"] == comps["value"]
    import pickle
    mv = MlflowClient().get_model_version("personalise-churn", r.versions["churn"])
    assert mv.run_id == r.run_id
    assert isinstance(BGNBDCustomerModel, type) and pickle.dumps(BGNBDCustomerModel)
