"""The evaluation job: every model and baseline on the holdout window after the cutoff.

Returns an :class:`EvaluationResult`; the serving refit takes it explicitly (the blend weights and the
discovery re-ranker that were evaluated are the ones shipped). Nothing is registered.

Example
-------
>>> ev = evaluate(load_shop("var/demo/shop"), TrainConfig())      # doctest: +SKIP
>>> ev.report["churn"]["production"]["auc"]                       # doctest: +SKIP
0.78
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features import schema
from features.exceptions import ModelFitError
from features.io import Shop
from models.recsys import Reranker
from training.concurrency import together
from training.config import TrainConfig, default_cutoff
from training.customer_eval import CustomerEvaluation, evaluate_customer_models
from training.offer_eval import OfferEvaluation, evaluate_offers
from training.progress import Steps
from training.rec_eval import FittedRecommenders, RecEvaluation, fit_recommenders, score_recommenders

log = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    """What an evaluation measured, and what of it the serving refit reuses."""

    report: dict[str, Any]
    """Every metric, as plain JSON (NaN written as None)."""
    tables: dict[str, pd.DataFrame]
    cutoff: pd.Timestamp | None
    """None: no holdout in the history, nothing evaluated (``report["not_evaluated"]`` says why)."""
    seconds: dict[str, float]
    blend_weights: dict[str, float] = field(default_factory=dict)
    """The evaluated recommender's blend weights."""
    discovery_weights: dict[str, float] = field(default_factory=dict)
    """Its weights for discovery requests (the blend weights when it has none of its own)."""
    reranker: Reranker | None = None
    """The evaluated discovery re-ranker (None: discovery was ranked by the blend)."""
    reranker_validation: dict[str, Any] = field(default_factory=dict)
    components: dict[str, str] = field(default_factory=dict)
    """Which model each component uses, and why (``{"recommender": "blend; default weights, ..."}``)."""

    @property
    def blend(self) -> dict[str, Any]:
        """The weights and the re-ranker's validation and gains, as logged to MLflow."""
        gain = self.reranker.importance() if self.reranker is not None else {}
        return {"blend_weights": self.blend_weights, "discovery_weights": self.discovery_weights,
                "reranker": {"validation": self.reranker_validation, "gain": gain}}


def evaluation_cutoff(shop: Shop, config: TrainConfig, data_end: pd.Timestamp | None = None) -> pd.Timestamp:
    """``config.cutoff``, else ``data_end`` (default: the shop's end) minus the horizon. Raises
    :class:`ModelFitError` unless there are customer orders on both sides of it."""
    H = config.horizon_days
    end = shop.end if data_end is None else pd.Timestamp(data_end)
    cutoff = pd.Timestamp(config.cutoff) if config.cutoff else default_cutoff(end, H)
    ts = shop.customer_orders()[schema.TS]
    if not _both_sides(ts, cutoff):
        first = ts.min().date() if len(ts) else None
        raise ModelFitError(f"the evaluation cutoff {cutoff.date()} needs customer orders before and after "
                            f"it; the orders run from {first} to {end.date()}: choose a --cutoff inside them "
                            f"or a shorter --horizon-days (now {H})")
    return cutoff


def _both_sides(ts: pd.Series, cutoff: pd.Timestamp) -> bool:
    return bool((ts < cutoff).any() and (ts >= cutoff).any())


def short_holdout_cutoff(shop: Shop, data_end: pd.Timestamp | None = None) -> pd.Timestamp | None:
    """When the horizon's holdout does not fit in the history: a cutoff leaving the last third of the days
    with orders (at least one) as a holdout for the recommenders, which need no label window. None when
    even that has no customer orders on both sides (e.g. all orders on one day)."""
    ts = shop.customer_orders()[schema.TS]
    if ts.empty:
        return None
    end = shop.end if data_end is None else pd.Timestamp(data_end)
    days = max((end - ts.min()).days // 3, 1)
    cutoff = (end - pd.Timedelta(days=days)).floor("D")
    return cutoff if _both_sides(ts, cutoff) else None


@dataclass
class _Windows:
    cutoff: pd.Timestamp | None
    """Where the recommenders (and offers) are evaluated; None: nowhere."""
    customer: bool
    """Whether churn and value are evaluated there (their H-day holdout fits)."""
    skipped: dict[str, str]
    """Component -> why it is not evaluated."""


def _windows(shop: Shop, config: TrainConfig, data_end: pd.Timestamp | None) -> _Windows:
    """The horizon's holdout when it fits (an explicit ``config.cutoff`` must); otherwise a shorter one
    for the recommenders, and churn and value not evaluated, with the reason."""
    try:
        return _Windows(evaluation_cutoff(shop, config, data_end), True, {})
    except ModelFitError:
        if config.cutoff:
            raise
    H = config.horizon_days
    ts = shop.customer_orders()[schema.TS]
    end = shop.end if data_end is None else pd.Timestamp(data_end)
    span = (f"{(end - ts.min()).days} days of orders ({ts.min().date()} to {end.date()})" if len(ts)
            else "none")
    why = f"a {H}-day holdout after some history does not fit in {span}"
    skipped = {"churn": why, "value": why}
    cutoff = short_holdout_cutoff(shop, data_end)
    if cutoff is None:
        why_rec = f"no day splits the customer orders into a history and a holdout: {span}"
        skipped.update(recommender=why_rec, offers=why_rec)
    else:
        log.warning("churn and value not evaluated (%s); recommenders evaluated on a shorter holdout from %s",
                    why, cutoff.date())
    return _Windows(cutoff, False, skipped)


def evaluate(shop: Shop, config: TrainConfig, truth_dir: str | Path | None = None,
             data_end: pd.Timestamp | None = None) -> EvaluationResult:
    """Every model and baseline on the holdout window after the cutoff. Nothing is registered.

    ``data_end``: the end of the shop's own data, from which the default cutoff is counted (default:
    ``shop.end``; the train job passes the end before live rows were merged, so they never move it).
    Components whose holdout does not fit the history are not evaluated: the report's ``not_evaluated``
    names each with the reason (the recommenders then use a shorter holdout when one exists, see
    :func:`short_holdout_cutoff`), and the others are evaluated all the same.
    """
    w = _windows(shop, config, data_end)
    parts = _Parts(shop, config, w, truth_dir)
    report: dict[str, Any] = {"cutoff": str(w.cutoff.date()) if w.cutoff is not None else None,
                              "horizon_days": config.horizon_days}
    # independent (training.concurrency): the recommenders' fits beside churn and value then the offers
    # (which need churn's scores); the recommenders' lists after both, on every core. While both parts run
    # the recommenders score one batch at a time (models.cores: the other core is taken, and two batches'
    # scores next to the customer models' rows would cost memory).
    fitted, customers_offers = together([parts.recommenders, parts.customers_then_offers],
                                        concurrent=config.concurrent(len(shop.customers)))
    return _result(report, parts.components, parts.secs, w, parts.scored(fitted), customers_offers)


@dataclass
class _Parts:
    """The evaluation's parts; each one records its seconds and the components it evaluated."""

    shop: Shop
    config: TrainConfig
    w: _Windows
    truth_dir: str | Path | None
    secs: dict[str, float] = field(default_factory=dict)
    components: dict[str, str] = field(default_factory=dict)

    def recommenders(self) -> FittedRecommenders | None:
        w, config = self.w, self.config
        if w.cutoff is None:
            self.components["recommender"] = f"blend; not evaluated: {w.skipped['recommender']}"
            return None
        t0 = time.perf_counter()
        with Steps("evaluation", 1, log) as steps:
            steps.next("recommenders")
            fitted = fit_recommenders(self.shop, w.cutoff, config.recommender, config.interactions,
                                      models=config.rec_baselines, corrupt=config.corrupt)
        self.secs["recommend"] = time.perf_counter() - t0
        return fitted

    def scored(self, fitted: FittedRecommenders | None) -> RecEvaluation | None:
        """The recommenders' lists, once the other part has ended: on every scoring thread."""
        if fitted is None:
            return None
        t0 = time.perf_counter()
        with Steps("evaluation", 1, log) as steps:
            steps.next("recommenders' top-k lists")
            rec = score_recommenders(fitted, threads=self.config.recommender.score_threads)
        self.components["recommender"] = "; ".join(["blend", *rec.report.get("notes", [])])
        self.secs["recommend"] += time.perf_counter() - t0
        return rec

    def customers(self) -> CustomerEvaluation | None:
        w = self.w
        if not (w.customer and w.cutoff is not None):
            return None
        t0 = time.perf_counter()
        with Steps("evaluation", 1, log) as steps:
            steps.next("churn and value")
            cust = evaluate_customer_models(self.shop, w.cutoff, self.config.customer,
                                            corrupt_features=self.config.corrupt)
        self.secs["customer"] = time.perf_counter() - t0
        return cust

    def offers_after(self, cust: CustomerEvaluation | None) -> OfferEvaluation | None:
        if self.w.cutoff is None:
            return None
        t0 = time.perf_counter()
        churn = cust.scores["churn_production"] if cust is not None else None
        c = self.config
        out = evaluate_offers(self.shop, self.w.cutoff, churn, c.seed, self.truth_dir,
                              learner=c.uplift_learner, ceiling_max_rows=c.ceiling_max_rows)
        self.secs["offers"] = time.perf_counter() - t0
        return out

    def customers_then_offers(self) -> tuple[CustomerEvaluation | None, OfferEvaluation | None]:
        return (cust := self.customers()), self.offers_after(cust)


def _result(report: dict[str, Any], components: dict[str, str], secs: dict[str, float], w: _Windows,
            rec: RecEvaluation | None,
            customers_offers: tuple[CustomerEvaluation | None, OfferEvaluation | None]) -> EvaluationResult:
    """The evaluation's report, tables and the recommenders' choices, from each part's result."""
    cust, offers = customers_offers
    if rec is not None:
        report["recommend"] = rec.report
    if cust is not None:
        report.update(cust.report)
        components.update(cust.models.components)
    tables = dict(cust.tables) if cust is not None else {}
    if offers is not None:
        report["offers"] = {**offers.report.get("policies", {}),
                            **{k: v for k, v in offers.report.items() if k != "policies"}}
        tables.update(offers.tables)
    if w.skipped:
        report["not_evaluated"] = w.skipped
    report["components"] = components
    prod = rec.production if rec is not None else None
    weights = dict(prod.weights_) if prod is not None else {}
    return EvaluationResult(report=_clean(report), tables=tables, cutoff=w.cutoff,
                            seconds=secs, blend_weights=weights,
                            discovery_weights=dict((prod.discovery_weights_ if prod else None) or weights),
                            reranker=prod.reranker_ if prod else None,
                            reranker_validation=prod.rerank_validation_ if prod else {},
                            components=components)


def _clean(o: Any) -> Any:
    """Plain JSON: string keys, lists, rounded finite floats and None for NaN or infinity."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (np.floating, float)):
        return None if not np.isfinite(o) else round(float(o), 6)
    if isinstance(o, np.integer):
        return int(o)
    return o


def flat_metrics(report: dict[str, Any], prefix: str = "", missing_as_nan: bool = False) -> dict[str, float]:
    """The numbers of a nested report as ``{"a.b.c": value}``. A metric that could not be measured (None
    in the report) is left out, or given as NaN with ``missing_as_nan``."""
    out: dict[str, float] = {}
    for k, v in report.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_metrics(v, key + ".", missing_as_nan))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
        elif v is None and missing_as_nan:
            out[key] = math.nan
    return out


def mlflow_name(metric: str) -> str:
    """A metric's name as MLflow stores it (``@`` is not allowed there)."""
    return metric.replace("@", "_at_")
