"""The train job: validate, evaluate, refit on all data, log to MLflow, register, gate and promote.

``train`` only orchestrates; each step lives in its own module (:mod:`training.evaluate`,
:mod:`training.refit`, :mod:`training.registry`, :mod:`training.gate`, :mod:`training.plots`,
:mod:`training.live_data`). It returns a :class:`TrainResult`; the CLI is a thin layer over it.

Example
-------
>>> r = train("var/demo", TrainConfig(seed=7))      # doctest: +SKIP
>>> r.promoted, r.reason                            # doctest: +SKIP
(True, 'no champion yet')
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from features import schema
from features.io import Shop, load_shop
from models.bundle import SEGMENT, ServingBundle
from models.segments import segment_summary
from training import frames
from training.config import TrainConfig, fingerprint
from training.evaluate import EvaluationResult, evaluate, flat_metrics, mlflow_name
from training.gate import Threshold
from training.live_data import LiveReport, live_store_for, merge_live_rows
from training.plots import plot_evaluation
from training.progress import Steps
from training.refit import fit_serving_bundle
from training.registry import gate_and_promote, register_bundle
from training.tracking import setup_mlflow

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_id: str
    reused: bool
    promoted: bool
    versions: dict[str, str]
    metrics: dict[str, float]
    reason: str
    report: dict[str, Any] = field(default_factory=dict)
    live: dict[str, Any] = field(default_factory=dict)
    """Live rows read, kept and set aside (:class:`~training.live_data.LiveReport`)."""


@dataclass
class _Data:
    shop: Shop
    own_end: pd.Timestamp
    """The end of the shop's own tables: the default cutoff counts from it, whatever live rows say."""
    live: LiveReport
    shop_dir: Path
    truth_dir: Path | None


def _load(data_dir: Path, shop_dir: str | Path | None, truth_dir: str | Path | None) -> _Data:
    sdir = Path(shop_dir) if shop_dir else (data_dir / "shop" if (data_dir / "shop").is_dir() else data_dir)
    shop = load_shop(sdir)  # raises before any MLflow call
    own_end = shop.end
    store = live_store_for(data_dir)
    live = LiveReport()
    if store is not None:
        known = {str(o.get("id")) for o in (shop.offers or {}).get("offers", [])}
        shop, live = merge_live_rows(shop, store, known)
    if truth_dir is None and (sdir / "truth").is_dir():
        truth_dir = sdir / "truth"
    return _Data(shop, own_end, live, sdir, Path(truth_dir) if truth_dir else None)


def _reused(fp: str) -> TrainResult | None:
    import mlflow
    prev = mlflow.search_runs(filter_string=f"tags.fingerprint = '{fp}' and attributes.status = 'FINISHED'",
                              output_format="list", max_results=1)
    if not prev:
        return None
    r = prev[0]
    log.info("same data and config as run %s: reusing it (use --force to retrain)", r.info.run_id)
    return TrainResult(r.info.run_id, True, r.data.tags.get("promoted") == "true", {}, dict(r.data.metrics),
                       "reused")


def _json(o: Any) -> Any:
    return json.loads(json.dumps(o, default=str))


def gate_values(report: dict[str, Any], thresholds: tuple[Threshold, ...]) -> dict[str, float]:
    """The gate metrics of an evaluation report by MLflow name; one it could not measure is NaN (and fails
    the gate), one it lacks is left out (and fails it too)."""
    every = {mlflow_name(k): v for k, v in flat_metrics(report, missing_as_nan=True).items()}
    return {t.metric: every[t.metric] for t in thresholds if t.metric in every}


def _log_data(d: _Data, fp: str, config: TrainConfig) -> None:
    import mlflow
    shop = d.shop
    mlflow.set_tags({"fingerprint": fp, "data_fingerprint": shop.fingerprint,
                     "data_dir": str(d.shop_dir.resolve())})
    mlflow.log_params(config.to_params())
    mlflow.log_dict(shop.report.to_dict(), "data/validation.json")
    summary = {"rows": shop.report.rows, "customers": int(shop.customers.shape[0]),
               "products": int(shop.products.shape[0]), "start": str(shop.orders[schema.TS].min()),
               "end": str(d.own_end), "end_with_live_rows": str(shop.end)}
    mlflow.log_dict(summary, "data/summary.json")
    mlflow.log_dict(_json(d.live.to_dict()), "data/live_rows.json")
    if d.live.read:
        mlflow.log_metrics(d.live.metrics())


def _log_evaluation(ev: EvaluationResult) -> dict[str, float]:
    import mlflow
    metrics = flat_metrics(ev.report)
    mlflow.log_metrics({mlflow_name(k): v for k, v in metrics.items()})
    mlflow.log_dict(ev.report, "evaluation/report.json")
    with tempfile.TemporaryDirectory() as tmp:
        tdir = Path(tmp)
        for name, t in ev.tables.items():
            t.to_csv(tdir / f"{name}.csv", index=False)
        for p in plot_evaluation(ev, tdir):
            mlflow.log_artifact(str(p), "plots")
        mlflow.log_artifacts(str(tdir), "evaluation")
    mlflow.log_dict(_json(ev.blend), "recommend/blend_weights.json")
    mlflow.log_metrics({f"recommend.reranker.{mlflow_name(k)}": float(v)
                        for k, v in ev.reranker_validation.items() if not isinstance(v, str)})
    return metrics


def served_components(evaluated: dict[str, str], served: dict[str, str]) -> dict[str, str]:
    """Which model each component serves, and why: the evaluated description, or the served one when the
    refit on all data chose another (a young shop's evaluation cutoff may lack the history the data end has)
    or nothing was evaluated."""
    out = dict(evaluated)
    for c, why in served.items():
        if c not in evaluated:
            out[c] = why
        elif evaluated[c] != why and evaluated[c].split(",")[0] != why.split(",")[0]:
            out[c] = f"{why} (evaluated: {evaluated[c]})"
    return out


def _log_components(ev: EvaluationResult, bundle: ServingBundle) -> None:
    import mlflow
    comps = served_components(ev.components, bundle.meta.get("components", {}))
    ev.components.update(comps)
    ev.report["components"] = dict(ev.components)
    for c, why in ev.report.get("not_evaluated", {}).items():
        ev.report["components"].setdefault(c, f"not evaluated: {why}")
    mlflow.set_tags({f"model.{c}": why[:5000] for c, why in ev.report["components"].items()})
    mlflow.log_dict(ev.report["components"], "evaluation/components.json")
    # churn/value chosen on a validation window (a history too short for stacked windows): which candidate
    for when, sel in (("evaluated", ev.report.get("selection", {})),
                      ("served", bundle.meta.get("selection", {}))):
        mlflow.log_params({f"selection.{c}.{when}": sel[c]["chosen"] for c in ("churn", "value") if c in sel})
    if bundle.meta.get("selection"):
        mlflow.log_dict(bundle.meta["selection"], "evaluation/served_selection.json")
    for c, why in ev.report["components"].items():
        log.info("%s: %s", c, why)


def _log_segments(bundle: ServingBundle) -> None:
    import mlflow
    seg = segment_summary(bundle.scores[[SEGMENT]].dropna(), bundle.features)
    mlflow.log_table(seg, "segments/summary.json")
    share = seg.attrs.get("top10pct_revenue_share", float("nan"))
    mlflow.log_metric("segments.top10pct_revenue_share", share)


def _frame_source(engine: str, d: _Data, config: TrainConfig, spark_master: str | None
                  ) -> AbstractContextManager[frames.FrameSource]:
    """The training frames' source for ``engine``, opened for the job's duration."""
    if engine == "local":
        return frames.using(frames.LocalFrames(config.max_training_rows, config.seed, config.uplift_max_rows))
    if engine != "spark":
        raise ValueError(f"unknown engine {engine!r}: choose local or spark")
    if sum(d.live.kept.values()):
        log.warning("--engine spark builds the training frames from the shop's own tables: the %s live rows "
                    "kept are used by the recommenders and the evaluation only", sum(d.live.kept.values()))

    @contextmanager
    def spark() -> Iterator[frames.FrameSource]:
        from features.engine import open_engine
        from training.spark_frames import SparkFrames
        with open_engine("spark", d.shop_dir, master=spark_master) as eng:
            source = SparkFrames(eng, config.max_training_rows, config.seed,  # type: ignore[arg-type]
                                 config.uplift_max_rows)
            with frames.using(source) as src:
                yield src
    return spark()


def _log_frames(src: frames.FrameSource) -> None:
    import mlflow
    mlflow.set_tag("training.engine", src.name)
    mlflow.log_dict({"engine": src.name, "max_rows": src.max_rows, "frames": src.built},
                    "data/training_frames.json")
    mlflow.log_metric("training.sample_share", frames.smallest_share(src))


def train(data_dir: str | Path, config: TrainConfig | None = None, force: bool = False,
          truth_dir: str | Path | None = None, shop_dir: str | Path | None = None, engine: str = "local",
          spark_master: str | None = None) -> TrainResult:
    """Validate, evaluate, refit on all data, log to MLflow, register every model and promote safely.

    ``data_dir`` is the project data directory (holds ``mlflow/`` and the service's ``live.db``); the shop
    tables are read from ``shop_dir`` (default ``data_dir/shop`` if it exists, else ``data_dir``). Bad data
    raises :class:`DataValidationError` before anything is logged or registered; live rows that cannot be
    used are set aside and reported (``data/live_rows.json``), never a reason to stop. ``engine``: where the
    churn/value and uplift training frames are built (``local`` or ``spark``, on ``spark_master``); the
    models are fitted here either way.
    """
    import mlflow
    from mlflow import MlflowClient

    config = config or TrainConfig()
    data_dir = Path(data_dir)
    with Steps("train", 5, log) as steps:
        steps.next("validate data")
        d = _load(data_dir, shop_dir, truth_dir)
        setup_mlflow(data_dir)
        fp = fingerprint(d.shop.fingerprint + ("" if engine == "local" else f"+engine:{engine}"), config)
        if not force and (prev := _reused(fp)) is not None:
            return prev
        with mlflow.start_run(run_name=f"train-{time.strftime('%Y%m%d-%H%M%S')}") as run, \
                _frame_source(engine, d, config, spark_master) as src:
            _log_data(d, fp, config)
            steps.next("evaluate on the holdout")
            ev = evaluate(d.shop, config, d.truth_dir, data_end=d.own_end)
            metrics = _log_evaluation(ev)
            steps.next("refit on all data")
            bundle = fit_serving_bundle(d.shop, config, ev)
            _log_components(ev, bundle)
            _log_segments(bundle)
            _log_frames(src)
            steps.next("register models")
            versions = register_bundle(bundle, run.info.run_id)
            steps.next("promotion gate")
            new = gate_values(ev.report, config.gate)
            result = gate_and_promote(MlflowClient(), run.info.run_id, versions, new, config.gate,
                                      unevaluated=ev.report.get("not_evaluated"))
            return TrainResult(run.info.run_id, False, result.ok, versions, metrics, result.reason, ev.report,
                               d.live.to_dict())
