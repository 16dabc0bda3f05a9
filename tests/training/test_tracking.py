"""The MLflow store stays in DATA/mlflow whatever the working directory, and survives moving DATA."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from mlflow.pyfunc import PythonModel

from training.tracking import artifact_root, setup_mlflow

pytestmark = pytest.mark.slow  # a real MLflow store each (about 5 s on an idle machine)


class Doubler(PythonModel):
    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        return model_input * 2


def strings_naming(db: Path, text: str) -> list[tuple[str, str, str]]:
    """Every (table, column, value) of the SQLite store at ``db`` whose text contains ``text``."""
    con = sqlite3.connect(db)
    out = []
    try:
        for (table,) in con.execute("select name from sqlite_master where type='table'").fetchall():
            cols = [c[1] for c in con.execute(f"pragma table_info('{table}')")]
            for row in con.execute(f"select * from '{table}'"):
                out += [(table, c, v) for c, v in zip(cols, row, strict=True)
                        if isinstance(v, str) and text in v]
    finally:
        con.close()
    return out


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory that is not the data folder's, and no tracking URI from the environment."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return cwd


def test_models_land_in_the_data_folder_and_load_after_it_moved(tmp_path: Path, elsewhere: Path) -> None:
    old = tmp_path / "project"
    setup_mlflow(old)
    assert os.environ.get("MLFLOW_TRACKING_URI")  # MLflow 3 sets it: the next setup must not take it as ours
    with mlflow.start_run():
        mlflow.pyfunc.log_model(name="m", python_model=Doubler(), registered_model_name="doubler")
    setup_mlflow(old)  # again, with the variable set by MLflow: still the intended artifact root
    assert list(elsewhere.iterdir()) == []  # nothing in the working directory (it was <cwd>/mlruns)
    assert any((old / "mlflow" / "artifacts").iterdir())
    new = tmp_path / "moved" / "project"
    new.parent.mkdir()
    shutil.move(old, new)
    setup_mlflow(new)
    assert mlflow.get_experiment_by_name("personalise").artifact_location == artifact_root(new)
    assert strings_naming(new / "mlflow" / "mlflow.db", str(old) + "/") == []
    model = mlflow.pyfunc.load_model("models:/doubler/1")
    assert model.predict(pd.DataFrame({"x": [1, 2]}))["x"].tolist() == [2, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "moved"] and list(elsewhere.iterdir()) == []


def test_a_second_data_folder_gets_its_own_store(tmp_path: Path, elsewhere: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    uri_a = setup_mlflow(a)
    uri_b = setup_mlflow(b)  # MLFLOW_TRACKING_URI names a's store now: it is not the user's choice
    assert uri_a != uri_b and str(b.resolve()) in uri_b
    assert (b / "mlflow" / "mlflow.db").exists()


def test_a_tracking_uri_the_user_set_is_respected(tmp_path: Path, elsewhere: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    theirs = f"sqlite:///{tmp_path / 'theirs.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", theirs)
    assert setup_mlflow(tmp_path / "project") == theirs
