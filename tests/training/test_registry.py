"""The registry against a real SQLite MLflow store: every registered model loads back as a pyfunc and
predicts what its signature says; a NaN gate metric is never promoted; promotion moves a run's whole set."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from features import schema
from features.exceptions import ModelNotAvailableError
from training.gate import DEFAULT_GATE
from training.jobs import TrainResult
from training.registry import (
    MODEL_NAMES,
    VERSION_TAG,
    champion_metrics,
    champion_versions,
    gate_and_promote,
    promote,
)
from training.tracking import setup_mlflow

pytestmark = pytest.mark.slow
AUC = "churn.production.auc"


@pytest.fixture
def project(trained_project: tuple[Path, TrainResult], tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the trained project: its registry is changed here, the shared one is not."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    copy = tmp_path / "project"
    shutil.copytree(trained_project[0], copy)
    return copy


def client_for(d: Path) -> MlflowClient:
    setup_mlflow(d)
    return MlflowClient()


def register_copies(c: MlflowClient, versions: dict[str, str]) -> tuple[str, dict[str, str]]:
    """A new run registering a copy of each given version (as a retrain with the same models would)."""
    run = c.create_run(c.get_experiment_by_name("personalise").experiment_id)
    rid = run.info.run_id
    out = {}
    for comp, name in MODEL_NAMES.items():
        src = c.get_model_version(name, versions[comp])
        out[comp] = str(c.create_model_version(name, src.source, run_id=rid).version)
        c.set_tag(rid, VERSION_TAG + comp, out[comp])
    return rid, out


def customers(d: Path, n: int = 4) -> list[str]:
    orders = pd.read_parquet(d / "shop" / "orders.parquet")
    return [str(x) for x in orders[schema.CUSTOMER_ID].dropna().unique()[:n]]


def test_every_registered_model_loads_back_and_predicts_its_signature(
        trained_project: tuple[Path, TrainResult]) -> None:
    d, r = trained_project
    setup_mlflow(d)
    ids = [*customers(d), "NOBODY"]
    x = pd.DataFrame({schema.CUSTOMER_ID: ids})
    out = {}
    for comp, name in MODEL_NAMES.items():
        model = mlflow.pyfunc.load_model(f"models:/{name}/{r.versions[comp]}")
        out[comp] = model.predict(x)
        assert list(out[comp].columns) == model.metadata.get_output_schema().input_names(), comp
    recs = out["recommender"]
    assert set(recs[schema.CUSTOMER_ID]) <= set(ids[:-1]) and len(recs)
    ranks = recs.groupby(schema.CUSTOMER_ID)["rank"].agg(list)
    assert ranks.map(lambda r: r == list(range(1, len(r) + 1))).all()
    assert recs.groupby(schema.CUSTOMER_ID).size().max() <= 10
    rec = mlflow.pyfunc.load_model(f"models:/{MODEL_NAMES['recommender']}/{r.versions['recommender']}")
    assert rec.predict(x, params={"k": 3}).groupby(schema.CUSTOMER_ID).size().max() <= 3
    churn = out["churn"].set_index(schema.CUSTOMER_ID)["churn"]
    assert math.isnan(churn["NOBODY"]) and churn.drop("NOBODY").between(0, 1).all()
    value = out["value"].set_index(schema.CUSTOMER_ID)["predicted_value"]
    assert math.isnan(value["NOBODY"]) and value.drop("NOBODY").notna().all()
    offers = out["offers"].set_index(schema.CUSTOMER_ID)
    assert offers.loc["NOBODY", schema.OFFER_ID] == "none"
    assert offers.loc["NOBODY", "reason"] == "unknown customer or no purchase yet"
    known = offers.drop("NOBODY")
    assert known[schema.GROUP].isin(["treatment", "control"]).all()
    assert set(known[schema.OFFER_ID]) <= {"pct10", "winback20", "freeship", "points2x", "none"}


def test_a_run_whose_churn_auc_is_nan_is_never_promoted(project: Path) -> None:
    c = client_for(project)
    before = champion_versions(c)
    champ, _ = champion_metrics(c)
    assert champ is not None
    better = {t.metric: champ[t.metric] + 0.1 for t in DEFAULT_GATE}  # better than the champion on all...
    rid, versions = register_copies(c, before)
    with mlflow.start_run(run_id=rid):
        result = gate_and_promote(c, rid, versions, {**better, AUC: math.nan}, DEFAULT_GATE)  # ...but one
    assert not result.ok and result.reason == f"{AUC} is NaN on the new run"
    assert champion_versions(c) == before
    assert champion_versions(c, "challenger") == versions
    record = json.loads(Path(c.download_artifacts(rid, "promotion.json")).read_text())
    assert record["promoted"] is False and record["thresholds"][1] == {"metric": AUC, "direction": "higher",
                                                                        "tolerance": 0.005}
    rid2, versions2 = register_copies(c, before)  # the same run with its AUC measured is promoted
    with mlflow.start_run(run_id=rid2):
        assert gate_and_promote(c, rid2, versions2, better, DEFAULT_GATE).ok
    assert champion_versions(c) == versions2


def test_a_component_the_run_could_not_evaluate_keeps_the_evaluated_champion(project: Path) -> None:
    """The new run could not evaluate churn (no holdout in its history): churn is not gated, the champion's
    evaluated churn version stays, the other components are promoted, and the record says so. The next
    gate compares churn with the run that produced the kept version."""
    c = client_for(project)
    before = champion_versions(c)
    champ, _ = champion_metrics(c)
    assert champ is not None
    new = {t.metric: champ[t.metric] for t in DEFAULT_GATE if t.metric != AUC}
    rid, versions = register_copies(c, before)
    with mlflow.start_run(run_id=rid):
        result = gate_and_promote(c, rid, versions, new, DEFAULT_GATE, unevaluated={"churn": "no holdout"})
    assert result.ok and result.unevaluated == ("churn",)
    assert f"kept the champion's version {before['churn']}" in result.reason
    after = champion_versions(c)
    assert after["churn"] == before["churn"]
    assert {k: v for k, v in after.items() if k != "churn"} == {k: v for k, v in versions.items()
                                                                 if k != "churn"}
    record = json.loads(Path(c.download_artifacts(rid, "promotion.json")).read_text())
    assert record["kept"] == {"churn": before["churn"]} and "no holdout" in record["unevaluated"]["churn"]
    mixed, _ = champion_metrics(c)  # churn's metric from the run of the kept version, not the new run's
    assert mixed is not None and mixed[AUC] == champ[AUC]


def test_promote_moves_a_runs_whole_set_whatever_its_version_numbers(project: Path) -> None:
    from typer.testing import CliRunner

    from personalise_cli import app
    c = client_for(project)
    first = champion_versions(c)
    first_run = c.get_model_version(MODEL_NAMES["recommender"], first["recommender"]).run_id
    register_copies(c, first)  # another run: every model gets a version
    lone = c.create_run(c.get_experiment_by_name("personalise").experiment_id).info.run_id
    churn_source = c.get_model_version(MODEL_NAMES["churn"], first["churn"]).source
    c.create_model_version(MODEL_NAMES["churn"], churn_source, run_id=lone)  # churn's numbers run ahead
    rid, versions = register_copies(c, first)
    assert versions["churn"] == str(int(versions["recommender"]) + 1)
    p = promote(project, recommender_version=versions["recommender"])
    assert p.run_id == rid and p.versions == versions and p.previous == first
    assert champion_versions(c) == versions  # churn's version of this run, not the recommender's number
    mv = c.get_model_version(MODEL_NAMES["churn"], versions["churn"])
    assert mv.tags["promotion"] == "manual (personalise promote)" and mv.tags["promoted_by"]
    with pytest.raises(ModelNotAvailableError, match="registered 0 versions of personalise-recommender"):
        promote(project, run_id=lone)
    assert champion_versions(c) == versions  # nothing changed
    res = CliRunner().invoke(app, ["promote", "--data", str(project), "--run", first_run])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["champion"] == first and champion_versions(client_for(project)) == first
    res = CliRunner().invoke(app, ["promote", "--data", str(project)])
    assert res.exit_code == 2 and "either a run id or the recommender's version" in res.output
