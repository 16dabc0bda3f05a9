"""Shops of other shapes than the simulator's train what their data allows, and say what they skipped."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import SEED


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
