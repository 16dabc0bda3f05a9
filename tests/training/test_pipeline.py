"""The training pipeline against a real SQLite MLflow store: train, reuse, gate, bad data, evaluate."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from features.exceptions import DataValidationError
from tests.conftest import SEED
from training.config import TrainConfig
from training.evaluate import evaluate
from training.jobs import train
from training.registry import MODEL_NAMES
from training.tracking import setup_mlflow

pytestmark = pytest.mark.slow


def client_for(d: Path) -> MlflowClient:
    setup_mlflow(d)
    return MlflowClient()


def test_first_train_registers_and_promotes(trained_project) -> None:
    d, r = trained_project
    assert not r.reused and r.promoted and r.reason == "no champion yet"
    assert (d / "mlflow" / "mlflow.db").exists()  # inside the data directory, not the CWD
    c = client_for(d)
    for comp, name in MODEL_NAMES.items():
        mv = c.get_model_version_by_alias(name, "champion")
        assert str(mv.version) == r.versions[comp]
        assert mv.tags["promoted_by"] and mv.tags["promoted_at"]
        assert c.get_model_version_by_alias(name, "challenger").version == mv.version
    run = c.get_run(r.run_id)
    m = run.data.metrics
    assert m["recommend.all_items.production.ndcg_at_10"] > m["recommend.all_items.popularity.ndcg_at_10"]
    assert m["churn.production.auc"] > 0.6
    arts = {a.path for a in c.list_artifacts(r.run_id)} | {a.path for a in c.list_artifacts(r.run_id,
                                                                                            "plots")}
    assert {"plots/value_lift_gains.png", "plots/churn_calibration.png", "plots/recommenders_at_k.png",
            "promotion.json"} <= arts
    assert run.data.tags["data_fingerprint"] and run.data.params["seed"] == str(SEED)


def train_steps(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The train job's progress lines (:class:`training.progress.Steps`), the times of finished steps cut."""
    return [r.getMessage().split(": done in ")[0] + (": done" if ": done in " in r.getMessage() else "")
            for r in caplog.records if r.name == "training.jobs" and r.getMessage().startswith("[train ")]


def test_second_run_on_same_data_is_reused(trained_project, caplog: pytest.LogCaptureFixture) -> None:
    d, r = trained_project
    with caplog.at_level(logging.INFO, logger="training.jobs"):
        again = train(d, TrainConfig(seed=SEED))
    assert again.reused and again.run_id == r.run_id
    assert train_steps(caplog) == ["[train 1/5] validate data", "[train 1/5] validate data: done"]
    c = client_for(d)
    assert len(c.search_model_versions(f"name='{MODEL_NAMES['churn']}'")) == 1


def test_worse_model_is_registered_as_challenger_but_not_promoted(trained_project,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    d, r = trained_project
    with caplog.at_level(logging.INFO, logger="training.jobs"):
        worse = train(d, TrainConfig(seed=SEED, corrupt=True))
    steps = ["validate data", "evaluate on the holdout", "refit on all data", "register models",
             "promotion gate"]
    assert train_steps(caplog) == [line for i, s in enumerate(steps, 1)
                                   for line in (f"[train {i}/5] {s}", f"[train {i}/5] {s}: done")]
    assert not worse.reused and not worse.promoted
    assert "< champion" in worse.reason
    c = client_for(d)
    for comp, name in MODEL_NAMES.items():
        assert str(c.get_model_version_by_alias(name, "champion").version) == r.versions[comp]
        assert str(c.get_model_version_by_alias(name, "challenger").version) == worse.versions[comp]
    assert (
        json.loads(Path(c.download_artifacts(worse.run_id, "promotion.json")).read_text())["promoted"]
        is False
    )


def test_bad_data_stops_before_any_registry_change(trained_project, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    d, _ = trained_project
    c = client_for(d)
    before_runs = len(c.search_runs([c.get_experiment_by_name("personalise").experiment_id]))
    before_versions = len(c.search_model_versions(f"name='{MODEL_NAMES['recommender']}'"))
    bad = tmp_path / "bad"
    shutil.copytree(d / "shop", bad)
    orders = pd.read_parquet(bad / "orders.parquet")
    orders.loc[orders.index[:3], "product_id"] = "NO-SUCH-PRODUCT"
    orders.to_parquet(bad / "orders.parquet", index=False)
    with caplog.at_level(logging.INFO, logger="training.jobs"), pytest.raises(DataValidationError) as e:
        train(d, TrainConfig(seed=SEED), shop_dir=bad, force=True)
    assert train_steps(caplog) == ["[train 1/5] validate data"]  # a failed step is not reported done
    assert "orders.product_id: order lines naming unknown products (3 rows)" in str(e.value)
    assert len(c.search_runs([c.get_experiment_by_name("personalise").experiment_id])) == before_runs
    assert len(c.search_model_versions(f"name='{MODEL_NAMES['recommender']}'")) == before_versions


def test_evaluate_report_has_every_model_and_baseline(trained_project) -> None:
    """The report of :func:`training.evaluate.evaluate` on the small shop with its truth: the one the first
    train made (``train`` calls ``evaluate(shop, config, truth_dir)`` on the shop's own ``truth`` folder, the
    same call as evaluating here again, which would take as long as a train's evaluation)."""
    _, result = trained_project
    r = result.report
    for proto in ("all_items", "new_items"):
        assert {"popularity", "als", "item_knn", "ease", "tifu_knn",
                "production"} <= set(r["recommend"][proto])
        assert set(r["recommend"][proto]["production"]) >= {"ndcg@10", "precision@10", "recall@10", "map@10",
                                                            "hit_rate@10", "users"}
    assert "buy_again" in r["recommend"]["all_items"]
    assert set(r["churn"]) == {"production", "recency", "bgnbd"}
    assert set(r["churn"]["production"]) == {"auc", "pr_auc", "brier", "customers"}
    assert set(r["value"]) == {"production", "last_period", "historical_rate", "bgnbd_gg"}
    assert set(r["value"]["production"]) == {"spearman", "normalized_gini",
                                             "top_decile_capture", "mae", "customers"}
    assert {"random", "propensity", "blanket", "production", "oracle"} <= set(r["offers"])
    assert set(r["offers"]["production"]) == {"incremental_margin", "cost", "contacts"}
    assert r["offers"]["production"]["cost"] <= r["offers"]["budget"] + 1e-9
    json.dumps(r)  # plain JSON


def test_cli_evaluate_writes_json(tiny_shop_dir, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from personalise_cli import app
    out = tmp_path / "report.json"
    res = CliRunner().invoke(app, ["evaluate", "--data", str(tiny_shop_dir), "--cutoff", "2025-10-01",
                                   "--horizon-days", "60", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())
    assert rep["cutoff"] == "2025-10-01" and rep["horizon_days"] == 60


def test_a_shop_shorter_than_the_horizon_evaluates_what_it_can(tmp_path: Path) -> None:
    """A 40-day simulated shop (too short for any campaign, a typed empty offer log) with a 90-day horizon:
    the evaluation no longer stops (issue #17): churn and value are reported as not evaluated, with the
    reason; an explicit cutoff outside the orders still stops, saying what to change."""
    from features.exceptions import ModelFitError
    from features.io import load_shop
    from features.simulate import simulate_shop
    summary = simulate_shop(tmp_path / "shop", customers=300, days=40, seed=SEED)
    assert summary["rows"]["offer_log"] == 0 and summary["rows"]["orders"] > 0
    shop = load_shop(tmp_path / "shop")
    assert shop.offer_log is None or len(shop.offer_log) == 0
    ev = evaluate(shop, TrainConfig())
    assert {"churn", "value"} <= set(ev.report["not_evaluated"])
    assert "90-day holdout" in ev.report["not_evaluated"]["churn"]
    with pytest.raises(ModelFitError, match=r"needs customer orders before and after it"):
        evaluate(shop, TrainConfig(cutoff="2000-01-01"))
