"""``personalise train --engine spark``: the training frames come from Spark, the models are the local
engine's (same rows, so the same LightGBM models and metrics), and they are registered and load back."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from features import schema
from tests.conftest import SEED
from training.config import TrainConfig
from training.jobs import train
from training.registry import MODEL_NAMES
from training.tracking import setup_mlflow

pytestmark = [pytest.mark.spark, pytest.mark.slow]


@pytest.fixture(scope="module")
def shop_dir(tiny_shop_dir: Path) -> Path:
    return tiny_shop_dir  # 400 customers, 120 products, a year (tests/conftest.py)


def _train(root: Path, shop_dir: Path, engine: str) -> tuple[Any, MlflowClient]:
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    r = train(root, TrainConfig(seed=SEED), shop_dir=shop_dir, engine=engine)
    return r, MlflowClient(tracking_uri=setup_mlflow(root))


def test_train_on_spark_fits_the_local_models_and_registers_them(spark: Any, shop_dir: Path,
                                                                   tmp_path: Path) -> None:
    local, lc = _train(tmp_path / "local", shop_dir, "local")
    remote, rc = _train(tmp_path / "spark", shop_dir, "spark")
    assert remote.promoted and set(remote.versions) == set(MODEL_NAMES)
    run = rc.get_run(remote.run_id)
    assert run.data.tags["training.engine"] == "spark" and run.data.metrics["training.sample_share"] == 1.0
    built = json.loads(Path(rc.download_artifacts(remote.run_id, "data/training_frames.json")).read_text())
    kinds = [b["frame"] for b in built["frames"]]
    # stacked: evaluation (with the value choice's validation model's frame and the frame it is scored on,
    # training.value_choice) and refit (which serves the evaluated choice); uplift: evaluation (before and
    # after the cutoff) and refit
    assert built["engine"] == "spark" and kinds.count("stacked") == 4 and "uplift" in kinds
    ours = json.loads(Path(lc.download_artifacts(local.run_id, "data/training_frames.json")).read_text())
    assert [b["rows"] for b in built["frames"]] == [b["rows"] for b in ours["frames"]]
    for k in ("churn.production.auc", "value.production.spearman", "offers.uplift_model.qini"):
        if k in local.metrics:
            assert remote.metrics[k] == pytest.approx(local.metrics[k], abs=1e-12), k
    assert "churn.production.auc" in remote.metrics
    mlflow.set_tracking_uri(setup_mlflow(tmp_path / "spark"))
    churn = mlflow.pyfunc.load_model(f"models:/{MODEL_NAMES['churn']}@champion")
    ids = pd.read_parquet(shop_dir / "orders.parquet")[schema.CUSTOMER_ID].dropna().unique()[:20]
    assert churn.predict(pd.DataFrame({schema.CUSTOMER_ID: ids}))["churn"].between(0, 1).all()


def test_an_unknown_engine_is_named(tmp_path: Path, shop_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown engine 'dask'"):
        train(tmp_path, TrainConfig(seed=SEED), shop_dir=shop_dir, engine="dask")


def test_past_max_rows_spark_samples_the_uplift_rows_as_the_local_engine_does(spark_shop: Any,
                                                                              small_shop: Any) -> None:
    """The same seeded customers are kept on both engines (a hash of the id), so the sampled uplift rows
    are the same rows; held-out sends are never sampled."""
    from training.frames import LocalFrames
    from training.spark_frames import SparkFrames

    cutoff = small_shop.end - pd.Timedelta(days=90)
    local, remote = LocalFrames(max_rows=200, seed=3), SparkFrames(spark_shop, max_rows=200, seed=3)
    _, yl = local.uplift(small_shop, cutoff, None)
    _, yr = remote.uplift(small_shop, cutoff, None)
    assert local.built[-1]["customers_share"] < 1.0
    assert remote.built[-1]["customers_share"] == pytest.approx(local.built[-1]["customers_share"])
    key = [schema.CUSTOMER_ID, "offer_id"]
    assert len(yr) == len(yl) and sorted(map(tuple, yr[key].astype(str).to_numpy())) == sorted(
        map(tuple, yl[key].astype(str).to_numpy()))
    _, held = remote.uplift(small_shop, None, cutoff)
    assert remote.built[-1]["customers_share"] == 1.0 and len(held) == len(local.uplift(small_shop, None,
                                                                                          cutoff)[1])
