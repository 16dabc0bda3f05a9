"""The model registry: register a run's four models, gate them, promote a run's set, download the champion.

A training run registers one version of each component (``personalise-recommender``, ``-churn``,
``-value``, ``-offers``) and records their numbers as run tags (``version.<component>``). Version numbers
of the four models need not agree (a model registered alone shifts one of them), so promotion always works
on a run's set: by run id, or by the recommender's version, whose run names the others.

Example
-------
>>> promote("var/demo", recommender_version="3")        # doctest: +SKIP
Promotion(run_id='9f...', versions={'recommender': '3', 'churn': '4', ...}, previous={...})
"""

from __future__ import annotations

import getpass
import json
import logging
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd

from features import schema
from features.exceptions import ModelNotAvailableError
from models.bundle import COMPONENTS, ServingBundle
from training.gate import GateResult, Threshold, check_gate, component_of, unevaluated_decisions
from training.tracking import setup_mlflow

log = logging.getLogger(__name__)
MODEL_NAMES = {c: f"personalise-{c}" for c in COMPONENTS}
VERSION_TAG = "version."
"""Run tag prefix: ``version.churn = 4`` - the churn model version the run registered."""
CHAMPION, CHALLENGER = "champion", "challenger"
_ROOT = Path(__file__).resolve().parents[1]
PYFUNC_CODE = Path(__file__).resolve().parent / "pyfunc_models.py"
CODE_PATHS = [str(_ROOT / d) for d in ("features", "models", "training")]
REQUIREMENTS = ("implicit", "lightgbm", "pandas", "numpy", "scipy", "scikit-learn", "mlflow")


@dataclass(frozen=True)
class Promotion:
    run_id: str
    versions: dict[str, str]
    previous: dict[str, str]


def _requirements() -> list[str]:
    out = []
    for p in REQUIREMENTS:
        try:
            out.append(f"{p}=={version(p)}")
        except PackageNotFoundError:
            pass
    return out


def register_bundle(bundle: ServingBundle, run_id: str) -> dict[str, str]:
    """Log every component of ``bundle`` as a pyfunc model of the active run ``run_id`` and register it.
    Returns the registered version of each component (also set as the run's ``version.*`` tags)."""
    import mlflow

    from training.pyfunc_models import signature
    example = pd.DataFrame({schema.CUSTOMER_ID: [str(i) for i in bundle.features.index[:3]]})
    versions: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = bundle.save(tmp)
        for c, p in paths.items():
            artifacts = {c: str(p)}  # the key names the component
            if c == "offers":  # deciding needs the customers' features and scores (the churn component's)
                artifacts["customers"] = str(paths["churn"])
            info = mlflow.pyfunc.log_model(name=c, python_model=str(PYFUNC_CODE), artifacts=artifacts,
                                           signature=signature(c),
                                           input_example=example, pip_requirements=_requirements(),
                                           code_paths=CODE_PATHS, registered_model_name=MODEL_NAMES[c])
            versions[c] = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    for c, v in versions.items():
        client.set_tag(run_id, VERSION_TAG + c, v)
    return versions


def champion_versions(client: Any, alias: str = CHAMPION) -> dict[str, str]:
    """The version each component's ``alias`` points at (components without it are left out)."""
    from mlflow.exceptions import MlflowException
    out = {}
    for c, name in MODEL_NAMES.items():
        try:
            out[c] = str(client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            pass
    return out


def champion_metrics(client: Any) -> tuple[dict[str, float] | None, dict[str, str]]:
    """Metrics of the runs that produced the champion (None without a champion), and the champion version
    of every component. A component's metrics come from the run of its own champion version (the versions
    come from different runs when a component kept its champion; other metrics: the recommender's run)."""
    versions = champion_versions(client)
    if "recommender" not in versions:
        return None, versions
    runs = {c: client.get_model_version(MODEL_NAMES[c], v).run_id for c, v in versions.items()}
    metrics = {rid: dict(client.get_run(rid).data.metrics) for rid in set(runs.values())}
    out = dict(metrics[runs["recommender"]])
    for c, rid in runs.items():
        out = {k: v for k, v in out.items() if component_of(k) != c}
        out.update({k: v for k, v in metrics[rid].items() if component_of(k) == c})
    return out, versions


def run_versions(client: Any, run_id: str) -> dict[str, str]:
    """The versions run ``run_id`` registered, one per component, read from its tags (or, for runs
    without them, found by run id). Raises :class:`ModelNotAvailableError` unless all four are there."""
    tags = client.get_run(run_id).data.tags
    out = {}
    for c, name in MODEL_NAMES.items():
        v = tags.get(VERSION_TAG + c)
        if v is None:
            found = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
            if len(found) != 1:
                raise ModelNotAvailableError(f"run {run_id} registered {len(found)} versions of {name}, "
                                             f"not one: promote a run that registered all four models")
            v = found[0].version
        mv = client.get_model_version(name, str(v))
        if mv.run_id != run_id:
            raise ModelNotAvailableError(f"{name} version {v} comes from run {mv.run_id}, not {run_id}")
        out[c] = str(v)
    return out


def set_alias(client: Any, versions: dict[str, str], alias: str, tags: dict[str, str] | None = None) -> None:
    """Point every component's ``alias`` at its version in ``versions``; ``tags``: set on each version."""
    for c, v in versions.items():
        client.set_registered_model_alias(MODEL_NAMES[c], alias, v)
        for k, val in (tags or {}).items():
            client.set_model_version_tag(MODEL_NAMES[c], v, k, val)


def _promotion_tags(**extra: str) -> dict[str, str]:
    return {"promoted_by": getpass.getuser(), "promoted_at": pd.Timestamp.now(tz="UTC").isoformat(), **extra}


def gate_and_promote(client: Any, run_id: str, versions: dict[str, str], new: dict[str, float],
                     thresholds: tuple[Threshold, ...], unevaluated: dict[str, str] | None = None
                     ) -> GateResult:
    """Make the run's versions the challenger, and the champion too if they pass the gate against the current
    champion (``new``: the run's gate metrics by MLflow name). Logs ``promotion.json`` to the active run.

    ``unevaluated``: components the evaluation could not run (-> why). Their metrics are not gated; a
    component whose champion was evaluated keeps the champion's version, any other is promoted unevaluated
    (:func:`~training.gate.unevaluated_decisions`; each decision is in the reason and ``promotion.json``)."""
    import mlflow
    champ, champ_versions = champion_metrics(client)
    result = check_gate(new, champ, thresholds, unevaluated)
    set_alias(client, versions, CHALLENGER)
    record: dict[str, Any] = {"promoted": result.ok, "reason": result.reason, "metrics": new,
                              "thresholds": [t.to_dict() for t in thresholds]}
    if result.ok:
        decided = unevaluated_decisions(unevaluated or {}, thresholds, champ, champ_versions)
        if decided:
            why = "; ".join(w for _, w in decided.values())
            result = GateResult(True, f"{result.reason}; {why}", (), result.unevaluated)
            record.update(reason=result.reason, unevaluated={c: w for c, (_, w) in decided.items()})
        kept = {c for c, (go, _) in decided.items() if not go}
        promoted = {c: v for c, v in versions.items() if c not in kept}
        tags = _promotion_tags(gate=json.dumps(new))
        set_alias(client, promoted, CHAMPION, tags)
        record.update(by=tags["promoted_by"], at=tags["promoted_at"], previous=champ_versions,
                      kept={c: champ_versions[c] for c in kept})
    else:
        record["champion"] = champ_versions
    mlflow.log_dict(record, "promotion.json")
    mlflow.set_tags({"promoted": "true" if result.ok else "false", "gate_reason": result.reason})
    what = "promoted to champion" if result.ok else "kept the champion"
    log.info("promotion: %s (%s)", what, result.reason)
    return result


def promote(data_dir: str | Path, run_id: str | None = None, recommender_version: str | None = None
            ) -> Promotion:
    """Make a run's four models the champion (a manual promotion or a rollback), recorded on each version.

    Give the run id, or the recommender's version (its run names the other three). Nothing changes unless
    all four versions of that run are found.
    """
    from mlflow import MlflowClient
    if (run_id is None) == (recommender_version is None):
        raise ValueError("promote: give either a run id or the recommender's version")
    setup_mlflow(Path(data_dir))
    client = MlflowClient()
    if run_id is None:
        run_id = client.get_model_version(MODEL_NAMES["recommender"], str(recommender_version)).run_id
    versions = run_versions(client, str(run_id))
    previous = champion_versions(client)
    set_alias(client, versions, CHAMPION, _promotion_tags(promotion="manual (personalise promote)"))
    log.info("champion -> run %s: %s (was %s)", run_id, versions, previous)
    return Promotion(str(run_id), versions, previous)


def download_champion(data_dir: str | Path, alias: str = CHAMPION, dest: str | Path | None = None
                      ) -> tuple[dict[str, Path], dict[str, str]]:
    """Download the aliased version of every component; returns local pickle paths and the pinned versions."""
    import mlflow
    from mlflow import MlflowClient
    setup_mlflow(Path(data_dir))
    client = MlflowClient()
    dest = Path(dest or tempfile.mkdtemp(prefix="personalise-models-"))
    paths, versions, runs = {}, {}, set()
    for c, name in MODEL_NAMES.items():
        mv = client.get_model_version_by_alias(name, alias)
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{mv.version}",
                                                    dst_path=str(dest / c))
        found = list(Path(local).rglob(f"{c}.pkl"))
        if not found:
            raise FileNotFoundError(f"{name} v{mv.version}: no {c}.pkl in its artifacts")
        paths[c], versions[c] = found[0], str(mv.version)
        runs.add(mv.run_id)
    if len(runs) > 1:
        log.warning("the %s versions %s come from %d different runs", alias, versions, len(runs))
    return paths, versions
