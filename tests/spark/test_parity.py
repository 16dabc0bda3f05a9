"""Spark gives what the local engine gives: the same feature frame, the same training frames, the same scores
and recommendation lists (same customers, numbers within 1e-9), on the small simulated shop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from batch_cli import register
from features.customer_labels import stacked_training_set, training_cutoffs
from features.engine import feature_table
from models.customer import CustomerModelConfig
from tests.features.test_engine import assert_same_table
from training.offer_eval import uplift_training_set
from training.spark_training import customer_training_frames, uplift_training_frames

pytestmark = pytest.mark.spark
CUTOFF = pd.Timestamp("2025-10-01")


def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_features_command_writes_the_same_frame_on_both_engines(spark: Any, attributed_shop_dir: Path,
                                                                 tmp_path: Path) -> None:
    for engine in ("local", "spark"):
        r = CliRunner().invoke(cli(), ["features", "--data", str(attributed_shop_dir),
                                       "--cutoff", str(CUTOFF.date()), "--out", str(tmp_path / engine),
                                       "--engine", engine, "--buckets", "3"])
        assert r.exit_code == 0, r.output
    local, remote = pd.read_parquet(tmp_path / "local"), pd.read_parquet(tmp_path / "spark")
    assert (tmp_path / "spark").is_dir() and len(list((tmp_path / "spark").glob("part-*"))) >= 1
    assert len(local) > 1000 and local["customer_id"].is_unique
    # the shop carries customer attributes of every kind: the same attr_* columns on both engines
    assert {"attr_tier", "attr_age", "attr_newsletter", "attr_loyalty_joined"} <= set(local.columns)
    assert_same_table(local, remote)
    assert dict(local.dtypes.astype(str)) == dict(remote.dtypes.astype(str))


def test_training_frames_are_the_train_jobs_and_a_sample_is_a_subset(spark_shop: Any,
                                                                     small_shop: Any) -> None:
    cfg = CustomerModelConfig(n_cutoffs=3)
    cutoffs = training_cutoffs(small_shop, CUTOFF, cfg.horizon_days, cfg.n_cutoffs, cfg.cutoff_step_days)
    X, y = stacked_training_set(small_shop, cutoffs, cfg.horizon_days)
    full = customer_training_frames(spark_shop, CUTOFF, cfg)
    assert full.cutoffs == cutoffs and len(cutoffs) == 3 and full.sample == 1.0
    assert full.X.index.tolist() == X.index.tolist()  # same rows in the same order: the same fitted models
    pd.testing.assert_frame_equal(full.y.astype(float), y.astype(float), check_index_type=False)
    assert_same_table(feature_table(full.X), feature_table(X))
    part = customer_training_frames(spark_shop, CUTOFF, cfg, sample=0.3, seed=7)
    assert 0.2 < part.customers / full.customers < 0.4
    keep = X.index.isin(part.X.index)
    # every row of a sampled customer, none of the others
    assert part.X.index.tolist() == X.index[keep].tolist()
    assert_same_table(feature_table(part.X), feature_table(X[keep]))


def test_uplift_frames_are_the_train_jobs(spark_shop: Any, small_shop: Any) -> None:
    X, y = uplift_training_set(small_shop, CUTOFF)
    Xs, ys = uplift_training_frames(spark_shop, before=CUTOFF)
    assert len(y) > 500
    assert ys["customer_id"].tolist() == y["customer_id"].tolist() and Xs.index.tolist() == X.index.tolist()
    for c in ("offer_id", "campaign_id", "treated", "bought", "redeemed"):
        assert ys[c].tolist() == y[c].tolist(), c
    assert (pd.to_datetime(ys["sent_at"]).to_numpy() == pd.to_datetime(y["sent_at"]).to_numpy()).all()
    assert_same_table(feature_table(Xs).reset_index(drop=True), feature_table(X).reset_index(drop=True))


def _same(a: pd.DataFrame, b: pd.DataFrame, keys: list[str]) -> None:
    a = a.sort_values(keys).reset_index(drop=True)
    b = b.sort_values(keys).reset_index(drop=True)[a.columns]
    assert a[keys].equals(b[keys])
    for c in a.columns:
        x, y = a[c], b[c]
        if c == "triggers":
            assert [list(v) for v in x] == [list(v) for v in y]
        elif pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x):
            np.testing.assert_allclose(x.astype(float), y.astype(float), rtol=0, atol=1e-9, err_msg=c)
        else:
            assert (
                x.astype(object).where(x.notna(), None).tolist()
                == y.astype(object).where(y.notna(), None).tolist()
            ), c


def test_scores_and_recommendations_are_the_same_on_both_engines(spark: Any, trained_project: Any,
                                                                 tmp_path: Path) -> None:
    d, _ = trained_project
    outs = {}
    for engine in ("local", "spark"):
        r = CliRunner().invoke(cli(), ["score", "--data", str(d), "--out",
                                       str(tmp_path / engine), "--engine", engine,
                                       "--buckets", "3", "--k", "5"])
        assert r.exit_code == 0, r.output
        outs[engine] = json.loads(r.output[r.output.rindex('{"out"'):])  # after MLflow's download progress
    assert (
        outs["local"]["versions"] == outs["spark"]["versions"]
        and outs["local"]["rows"] == outs["spark"]["rows"]
    )
    for name, keys in (("customers", ["customer_id"]), ("offers", ["customer_id"]),
                       ("recommendations", ["customer_id", "rank"])):
        local = pd.read_parquet(tmp_path / "local" / f"{name}.parquet")
        remote = pd.read_parquet(tmp_path / "spark" / f"{name}.parquet")
        assert len(local) == outs["local"]["rows"][name] > 0
        _same(local, remote, keys)
    manifest = json.loads((tmp_path / "spark" / "_manifest.json").read_text())
    assert manifest["engine"] == "spark" and manifest["versions"] == outs["local"]["versions"]
