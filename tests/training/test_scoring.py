"""Batch scoring with the local engine: every customer, scored by the champion models exactly as the training
refit scored them, recommended and offered exactly as the service answers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.exceptions import DataValidationError
from models.bundle import ServingBundle
from training.registry import download_champion
from training.scoring import CUSTOMER_COLUMNS, OFFER_COLUMNS, RECOMMENDATION_COLUMNS, ScoreConfig, score

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scored(trained_project, tmp_path_factory: pytest.TempPathFactory):
    d, trained = trained_project
    out = tmp_path_factory.mktemp("scores")
    result = score(d, str(out), config=ScoreConfig(k=5, chunk=400))  # several chunks
    paths, _ = download_champion(d, dest=tmp_path_factory.mktemp("champion"))
    return result, trained, ServingBundle.load(paths), out


def test_every_customer_gets_the_refits_scores_segment_and_triggers(scored) -> None:
    result, trained, bundle, out = scored
    assert result.versions == trained.versions and result.as_of == bundle.as_of
    c = pd.read_parquet(out / "customers.parquet")
    assert list(c.columns) == CUSTOMER_COLUMNS and c["customer_id"].is_unique
    assert set(c["customer_id"]) == set(bundle.features.index)
    c = c.set_index("customer_id").reindex(bundle.scores.index)
    for col in ("churn", "predicted_value"):
        np.testing.assert_allclose(c[col], bundle.scores[col], rtol=0, atol=1e-12, err_msg=col)
    assert c["churn"].notna().sum() == (bundle.features["n_orders"] > 0).sum() > 1000
    for col in ("segment", "value_tier", "attrition_tier", "potential"):
        assert c[col].tolist() == bundle.scores[col].tolist(), col
    trig = (
        bundle.triggers.drop_duplicates(["customer_id", "trigger"])
        .groupby("customer_id")["trigger"]
        .agg(list)
    )
    assert len(trig) > 10
    assert {k: list(v) for k, v in c["triggers"].items() if len(v)} == trig.to_dict()
    buyers = c[c["n_orders"] > 0]
    assert buyers[["R", "F", "M"]].notna().all().all() and c.loc[c["n_orders"] == 0, "R"].isna().all()
    assert buyers.groupby("R")["recency_days"].mean().is_monotonic_decreasing  # R = 5: the most recent


def test_recommendations_are_the_services_default_answers(scored) -> None:
    result, _, bundle, out = scored
    recs = pd.read_parquet(out / "recommendations.parquet")
    assert list(recs.columns) == RECOMMENDATION_COLUMNS and len(recs) == result.rows["recommendations"]
    assert recs.groupby("customer_id").size().max() == 5
    assert (
        recs.groupby("customer_id")["rank"].apply(lambda r: r.tolist() == list(range(1, len(r) + 1)))
    ).all()
    for cid in recs["customer_id"].drop_duplicates().sample(20, random_state=1):
        region = bundle.features.at[cid, "region"]
        rec = bundle.engine.recommend_one(cid, k=5, region=None if pd.isna(region) else str(region))
        mine = recs[recs["customer_id"] == cid]
        assert mine["product_id"].tolist() == [i["product_id"] for i in rec.items]
        assert mine["reason"].tolist() == [i["reason"]
                                           for i in rec.items] and set(mine["source"]) == {rec.source}


def test_offers_go_to_buyers_only_with_a_control_group(scored) -> None:
    result, _, bundle, out = scored
    offers = pd.read_parquet(out / "offers.parquet")
    assert list(offers.columns) == OFFER_COLUMNS and len(offers) == len(bundle.features)
    buyer = offers["customer_id"].map(bundle.features["n_orders"] > 0)
    assert (offers.loc[~buyer, "offer_id"] == "none").all() and offers.loc[~buyer, "group"].isna().all()
    decided = offers[buyer]
    assert decided["group"].isin(["treatment", "control"]).all()
    assert 0.05 < (decided["group"] == "control").mean() < 0.15  # the catalogue's 10% control share
    made = decided[decided["offer_id"] != "none"]
    assert len(made) > 100 and (made["expected_value"] > 0).all() and made["channel"].notna().all()
    assert (decided["send"] == ((decided["offer_id"] != "none") & (decided["group"] == "treatment"))).all()
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["versions"] == result.versions and manifest["rows"]["offers"] == len(offers)


def test_bad_data_stops_before_any_model_is_loaded(trained_project, tmp_path: Path) -> None:
    d, _ = trained_project
    bad = tmp_path / "shop"
    shutil.copytree(d / "shop", bad)
    orders = pd.read_parquet(bad / "orders.parquet").astype({"ts": str})
    orders.loc[orders.index[:2], "ts"] = "not a date"
    (bad / "orders.parquet").unlink()
    orders.to_csv(bad / "orders.csv", index=False)
    with pytest.raises(DataValidationError, match=r"orders.ts: unparseable timestamp \(2 rows\)"):
        score(d, str(tmp_path / "out"), tables=str(bad))
    assert not (tmp_path / "out").exists()


def test_a_served_value_blend_or_baseline_is_batch_scored(tiny_shop_dir: Path, tmp_path: Path) -> None:
    """A value model that cannot split (one score for all) loses its validation to another candidate (on this
    shop last-period spend; the blend with the naive baselines or BG/NBD elsewhere): the champion serves it,
    and batch scoring scores it as the refit did."""
    import os
    from dataclasses import replace

    from models.customer import ValueModel
    from training.config import TrainConfig
    from training.jobs import train
    shutil.copytree(tiny_shop_dir, tmp_path / "shop")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    cfg = TrainConfig(seed=3)
    r = train(tmp_path, replace(cfg, customer=replace(cfg.customer, n_estimators=1, min_child_samples=10**6)))
    served = r.report["components"]["value"]
    assert "ranked above LightGBM" in served or served.startswith("blend of LightGBM"), served
    out = tmp_path / "scores"
    score(tmp_path, str(out), config=ScoreConfig(k=3))
    paths, _ = download_champion(tmp_path, dest=tmp_path / "champion")
    bundle = ServingBundle.load(paths)
    assert not isinstance(bundle.value, ValueModel)
    c = pd.read_parquet(out / "customers.parquet").set_index("customer_id").reindex(bundle.scores.index)
    np.testing.assert_allclose(c["predicted_value"], bundle.scores["predicted_value"], rtol=0, atol=1e-12)
    assert c["predicted_value"].nunique() > 10  # ranked by the baselines, not one score for all
