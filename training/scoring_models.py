"""The registered champion models, resolved once for a batch scoring run and loadable by pandas and by Spark.

Every alias is resolved to a version at the start (a promotion during the run changes nothing). Churn and
value score a frame of customer features through a pyfunc: the registered model itself when its signature
takes the feature columns (``models:/personalise-churn/<version>``), else a :class:`FeatureScorer` saved next
to the run around the registered version's fitted model (today's registered pyfuncs look up the scores stored
at training time by ``customer_id``; a batch run needs scores of today's features). The same pyfunc is called
by the local engine (``predict`` on pandas chunks) and by Spark (``mlflow.pyfunc.spark_udf``).

Example
-------
>>> champ = resolve_champion("var/demo", "var/score-tmp")              # doctest: +SKIP
>>> champ.versions                                                      # doctest: +SKIP
{'recommender': '3', 'churn': '3', 'value': '3', 'offers': '3'}
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

from features.engine import CUSTOMER_ID, read_feature_table, spark_type
from training.registry import MODEL_NAMES, download_champion

log = logging.getLogger(__name__)

SCORED = ("churn", "value")
"""Components scored from features through a pyfunc; the column each writes: churn, predicted_value."""
SCORE_COLUMN = {"churn": "churn", "value": "predicted_value"}
PIP_REQUIREMENTS = ["lightgbm", "pandas", "numpy"]
MODEL_CODE = Path(__file__).with_name("feature_scorer_model.py")
"""The models-from-code file MLflow saves with a :class:`FeatureScorer` (no pickled class)."""


class FeatureScorer(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
    """A churn or value model as a pyfunc over customer features: input ``customer_id`` and the feature
    columns (text as strings, numbers as floats, missing as null); output one score per row."""

    def load_context(self, context: Any) -> None:
        with open(context.artifacts["model"], "rb") as f:
            self.model = pickle.load(f)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str,
                                                                            Any] | None = None) -> pd.Series:
        X = read_feature_table(model_input.reset_index(drop=True))
        return pd.Series(self.model.predict(X).to_numpy(dtype=float), name="score")


def save_feature_scorer(model: Any, path: str | Path) -> str:
    """Save a fitted churn/value model as a :class:`FeatureScorer` pyfunc at ``path``; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    art = path.parent / f"{path.name}.pkl"
    with open(art, "wb") as f:
        pickle.dump(model, f, protocol=pickle.HIGHEST_PROTOCOL)
    mlflow.pyfunc.save_model(str(path), python_model=str(MODEL_CODE), artifacts={"model": str(art)},
                             pip_requirements=PIP_REQUIREMENTS)
    return str(path)


def feature_signature(table: pd.DataFrame) -> Any:
    """An MLflow signature over a :func:`~features.engine.feature_table` (every feature optional): register a
    churn/value pyfunc with it and batch scoring calls the registered model itself
    (:func:`takes_features`)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    kinds = {"string": "string", "long": "long", "double": "double", "boolean": "boolean"}
    cols: list[Any] = [ColSpec(kinds[spark_type(table[c])], c,
                               required=c == CUSTOMER_ID) for c in table.columns]
    return ModelSignature(inputs=Schema(cols))


def takes_features(model_uri: str, columns: list[str]) -> bool:
    """Whether the pyfunc at ``model_uri`` scores feature frames: its signature names the model's columns."""
    from mlflow.models import get_model_info
    sig = get_model_info(model_uri).signature
    if sig is None or sig.inputs is None:
        return False
    return set(columns) <= set(sig.inputs.input_names())


@dataclass
class Champion:
    """The pinned champion versions of one scoring run and what each engine needs of them."""

    versions: dict[str, str]
    paths: dict[str, Path]
    """The component pickles (recommender.pkl, offers.pkl, ...) downloaded from the registry."""
    scorer_uris: dict[str, str]
    """churn / value -> pyfunc URI over feature frames (registry URI, or a local FeatureScorer)."""
    horizon_days: int

    def component(self, name: str) -> dict[str, Any]:
        with open(self.paths[name], "rb") as f:
            obj: dict[str, Any] = pickle.load(f)
        return obj


def resolve_champion(data_dir: str | Path, work_dir: str | Path, alias: str = "champion") -> Champion:
    """Download the ``alias`` version of every component into ``work_dir`` and pick the churn/value
    scorers."""
    work = Path(work_dir)
    paths, versions = download_champion(data_dir, alias, dest=work / "registry")
    uris: dict[str, str] = {}
    horizon = 90
    for comp in SCORED:
        with open(paths[comp], "rb") as f:
            obj = pickle.load(f)
        model = obj[comp]
        horizon = int(obj.get("meta", {}).get("params", {}).get("horizon_days", horizon))
        registered = f"models:/{MODEL_NAMES[comp]}/{versions[comp]}"
        if takes_features(registered, list(model.feature_names)):  # any scorer: a blend, a baseline
            uris[comp] = registered
        else:
            uris[comp] = save_feature_scorer(model, work / "scorers" / comp)
        log.info("%s v%s scores features through %s", comp, versions[comp], uris[comp])
    return Champion(versions=versions, paths=paths, scorer_uris=uris, horizon_days=horizon)


def scoring_input(features: pd.DataFrame) -> pd.DataFrame:
    """What a scorer pyfunc is given: ``customer_id`` and the feature columns, as a flat table."""
    return features if CUSTOMER_ID in features.columns else features.reset_index()
