"""The train job's sampling knobs for large shops, set low on the small shop: each bites, and the sample
sizes it leaves are logged to MLflow with the knob itself (``bench/SCALE.md``: their cost at 100k)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from models.recsys import RecommenderConfig
from training.config import TrainConfig

pytestmark = pytest.mark.slow  # one train job


def test_sampling_knobs_set_low_bite_and_their_sample_sizes_are_logged(tmp_path: Path, small_shop_dir: Path
                                                                       ) -> None:
    from mlflow import MlflowClient

    from training.jobs import train
    shutil.copytree(small_shop_dir, tmp_path / "shop")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    rec = replace(RecommenderConfig(seed=3), tune_screen_customers=80, eval_max_customers=150,
                  rerank_row_customers=250, rerank_min_customers=10, tune_max_customers=300)
    cfg = TrainConfig(seed=3, recommender=rec, uplift_max_rows=2000, max_training_rows=3000,
                      ceiling_max_rows=400)
    r = train(tmp_path, cfg)
    client = MlflowClient()
    run = client.get_run(r.run_id)
    p, m = run.data.params, run.data.metrics
    assert (p["rec.tune_screen_customers"], p["rec.eval_max_customers"], p["rec.rerank_row_customers"],
            p["uplift_max_rows"], p["max_training_rows"], p["ceiling_max_rows"]
            ) == ("80", "150", "250", "2000", "3000", "400")
    # the policy benchmark's feature ceiling: fitted on the candidates of a sample of customers
    assert 250 <= m["offers.feature_ceiling.fitted_rows"] <= 550 < m["offers.candidates"]
    # blend tuning: every weighting on about 80 customers (a sample of the ~300 tuning customers, not a
    # share of that share), the finalists on all
    screen, tuning = m["recommend.samples.tuning_screen_customers"], m["recommend.samples.tuning_customers"]
    assert 60 <= screen <= 100 < tuning
    # the recommender evaluation: about 150 of the test customers
    assert 110 <= m["recommend.test_customers.scored"] <= 190 < m["recommend.test_customers.all"]
    notes = r.report["recommend"]["notes"]
    assert any("tune_screen_customers" in n for n in notes) and any("eval_max_customers" in n for n in notes)
    # the re-ranker's latest window: rows for about 250 customers, a fifth of them held out
    assert 0 < m["recommend.reranker.holdout_customers"] <= 0.3 * 250
    # churn/value and uplift training rows: a sample of customers, the share logged
    built = client.download_artifacts(r.run_id, "data/training_frames.json", str(tmp_path / "dl"))
    frames = json.loads(Path(built).read_text())["frames"]
    trained = [f for f in frames if f["frame"] == "uplift" and f["customers_share"] < 1.0]
    assert trained and all(f["rows"] <= 2000 * 1.2 for f in trained)
    stacked = [f for f in frames if f["frame"] == "stacked"]
    assert stacked and all(f["rows"] <= 3000 * 1.2 for f in stacked)
    # sampled exactly when all the customers' rows would be more than the cap (the value choice's validation
    # frame, three earlier cutoffs, may fit whole)
    assert all((f["customers_share"] < 1.0) == (f["rows"] / f["customers_share"] > 3000) for f in stacked)
    assert sum(f["customers_share"] < 1.0 for f in stacked) >= 2  # production's churn/value rows at least
    assert m["training.sample_share"] < 1.0
