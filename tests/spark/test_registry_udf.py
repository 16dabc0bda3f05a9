"""``mlflow.pyfunc.spark_udf`` on a registry URI: a registered model that takes the feature columns is called
from the registry itself; today's registered pyfuncs (a lookup by customer_id) are wrapped instead."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from pyspark.sql import functions as F

from features.customer import customer_features
from features.engine import feature_table, read_feature_table
from training.registry import download_champion
from training.scoring_models import MODEL_CODE, feature_signature, takes_features

pytestmark = pytest.mark.spark


def test_spark_udf_scores_with_the_registered_model_when_it_takes_features(
        spark: Any, trained_project: Any, small_shop: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    d, r = trained_project
    paths, versions = download_champion(d, dest=tmp_path / "champion")
    with open(paths["churn"], "rb") as f:
        churn = pickle.load(f)["churn"]
    assert not takes_features(f"models:/personalise-churn/{versions['churn']}", churn.columns_)
    table = feature_table(customer_features(small_shop, small_shop.end))
    buyers = table[table["n_orders"] > 0].reset_index(drop=True)
    # a store of its own, holding the churn model registered as a feature scorer with a feature signature
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment("scorers")
    art = tmp_path / "churn_model.pkl"
    art.write_bytes(pickle.dumps(churn))
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="churn", python_model=str(MODEL_CODE),
                                       artifacts={"model": str(art)}, signature=feature_signature(buyers),
                                       registered_model_name="personalise-churn",
                                       pip_requirements=["lightgbm"])
    MlflowClient().set_registered_model_alias("personalise-churn", "champion", info.registered_model_version)
    assert takes_features("models:/personalise-churn@champion", churn.columns_)
    udf = mlflow.pyfunc.spark_udf(spark, "models:/personalise-churn@champion", result_type="double",
                                  env_manager="local")
    got = (spark.createDataFrame(buyers).select("customer_id", udf(F.struct(*buyers.columns)).alias("churn"))
           .toPandas().set_index("customer_id")["churn"])
    expected = churn.predict(read_feature_table(buyers))
    assert len(got) == len(expected) > 1000
    np.testing.assert_allclose(got.reindex(expected.index).to_numpy(),
                               expected.to_numpy(), rtol=0, atol=1e-12)
    assert pd.Series(expected).between(0, 1).all()
