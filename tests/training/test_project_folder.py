"""A project folder trained from elsewhere holds everything, survives being moved, and live rows with
impossible times (as a storefront key could post them) neither stop the retrain nor move its cutoff."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from features import schema
from features.io import load_shop
from features.live import LiveStore, default_url
from models.bundle import ServingBundle
from tests.conftest import SEED
from tests.training.test_tracking import strings_naming
from training.config import default_cutoff
from training.registry import MODEL_NAMES, download_champion
from training.tracking import setup_mlflow

pytestmark = pytest.mark.slow
IMPOSSIBLE = [dt.datetime(2999, 1, 1), dt.datetime(9999, 12, 31), dt.datetime(1, 1, 1),
              dt.datetime(2200, 1, 1)]


@dataclass
class Trained:
    root: Path
    data: Path
    cwd: Path
    exit_code: int
    output: str
    own_end: pd.Timestamp


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """``personalise train --data ROOT/project`` run from ROOT/cwd, after four events with impossible times
    were written into the project's live store directly."""
    from typer.testing import CliRunner

    from features.simulate import simulate_shop
    from personalise_cli import app
    root = tmp_path_factory.mktemp("folder")
    data, cwd = root / "project", root / "cwd"
    cwd.mkdir()
    simulate_shop(data / "shop", customers=400, products=120, days=365, seed=SEED)
    pid = load_shop(data / "shop").products[schema.PRODUCT_ID].iloc[0]
    LiveStore(default_url(data)).add_events([{"customer_id": "C0000001", "product_id": pid,
                                              "event_type": "view", "ts": t} for t in IMPOSSIBLE])
    own_end = load_shop(data / "shop").end
    before, env = os.getcwd(), os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.chdir(cwd)
    try:
        res = CliRunner().invoke(app, ["train", "--data", str(data)])
    finally:
        os.chdir(before)
        if env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env
    yield Trained(root, data, cwd, res.exit_code, res.output, own_end)


def test_impossible_live_times_neither_stop_the_retrain_nor_move_its_cutoff(trained: Trained) -> None:
    assert trained.exit_code == 0, trained.output
    text = trained.output
    out, _ = json.JSONDecoder().raw_decode(text[text.rindex('{\n "run_id"'):])  # between log lines
    assert out["cutoff"] == str(default_cutoff(trained.own_end, 90).date())  # the shop's own end decides
    assert out["live_rows_set_aside"] == 4 and out["promoted"]
    c = MlflowClient(tracking_uri=setup_mlflow(trained.data))
    live = json.loads(Path(c.download_artifacts(out["run_id"], "data/live_rows.json")).read_text())
    assert live["read"] == {"events": 4, "decisions": 0} and live["kept"]["events"] == 0
    shown = {e["ts"][:10] for s in live["set_aside"] for e in s["examples"]}
    assert shown == {"2999-01-01", "9999-12-31", "0001-01-01", "2200-01-01"}
    assert c.get_run(out["run_id"]).data.metrics["live.events.set_aside"] == 4


def test_nothing_is_written_outside_the_data_folder(trained: Trained) -> None:
    assert trained.exit_code == 0, trained.output
    assert list(trained.cwd.iterdir()) == []  # it was <cwd>/mlruns
    assert sorted(p.name for p in trained.root.iterdir()) == ["cwd", "project"]
    assert any((trained.data / "mlflow" / "artifacts").iterdir())


def test_the_champion_loads_after_the_folder_moved(trained: Trained, tmp_path: Path) -> None:
    assert trained.exit_code == 0, trained.output
    moved = trained.root / "moved" / "project"
    moved.parent.mkdir()
    shutil.move(trained.data, moved)
    try:
        paths, versions = download_champion(moved, dest=tmp_path / "models")
        bundle = ServingBundle.load(paths)
        assert len(bundle.engine.model.recommend(["C0000001"], k=5)) == 5
        churn = mlflow.pyfunc.load_model(f"models:/{MODEL_NAMES['churn']}@champion")
        assert churn.predict(pd.DataFrame({schema.CUSTOMER_ID: ["C0000001"]}))["churn"].between(0, 1).all()
        left = [s for s in strings_naming(moved / "mlflow" / "mlflow.db", str(trained.data) + "/")
                if s[:2] != ("tags", "value")]  # the run's data_dir tag records where the shop was read
        assert left == []
    finally:
        shutil.move(moved, trained.data)
        moved.parent.rmdir()
        setup_mlflow(trained.data)
