"""Fit and evaluate the churn and value models against their baselines on a time split."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features import schema
from features.customer import customer_features, order_values, unify_categories
from features.customer_labels import future_labels, training_cutoffs
from features.exceptions import ModelFitError
from features.io import Shop
from models.bgnbd import BetaGeoModel, GammaGammaModel, rfm_summary
from models.customer import (
    ChurnModel,
    CustomerModelConfig,
    ValueModel,
    fit_churn_and_value,
    historical_rate_baseline,
    last_period_baseline,
    recency_baseline,
)
from models.customer_scorers import CustomerScorer
from models.metrics import classification_report, decile_lift, regression_report, reliability
from training import frames
from training.bgnbd_fit import fit_bgnbd
from training.customer_selection import fit_short_history
from training.value_choice import choose_stacked_value, describe, evaluated_choice

log = logging.getLogger(__name__)


@dataclass
class CustomerModels:
    churn: CustomerScorer
    value: CustomerScorer
    bgnbd: BetaGeoModel | None = None
    gg: GammaGammaModel | None = None
    config: CustomerModelConfig = field(default_factory=CustomerModelConfig)
    cutoff: pd.Timestamp | None = None
    components: dict[str, str] = field(default_factory=dict)
    """Which model churn and value use, and why."""
    selection: dict[str, Any] = field(default_factory=dict)
    """The candidates' validation metrics and the choice: churn and value when the stacked windows do not fit
    (:mod:`training.customer_selection`), value only when they do (:mod:`training.value_choice`)."""


@dataclass
class CustomerEvaluation:
    report: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    models: CustomerModels
    scores: pd.DataFrame  # per customer at the evaluation cutoff: labels and every model's score


def bgnbd_scores(bg: BetaGeoModel, gg: GammaGammaModel | None, shop: Shop, cutoff: pd.Timestamp,
                 index: pd.Index, horizon_days: int) -> pd.DataFrame:
    rfm = rfm_summary(order_values(shop, cutoff), cutoff).reindex(index)
    rfm = rfm.fillna({"x": 0.0, "t_x": 0.0, "T": 0.0, "monetary": 0.0})
    p_alive = bg.p_alive(rfm["x"], rfm["t_x"], rfm["T"])
    n = bg.expected_purchases(horizon_days / 7.0, rfm["x"], rfm["t_x"], rfm["T"])
    spend = gg.expected_spend(rfm["x"], rfm["monetary"]) if gg is not None else np.full(len(rfm), np.nan)
    # P(no purchase in the window) = P(dead) + P(alive) * Poisson(0 | purchases expected while alive)
    p_none = (1 - p_alive) + p_alive * np.exp(-n / np.maximum(p_alive, 1e-9))
    return pd.DataFrame({"p_alive": p_alive, "p_no_purchase": p_none, "expected_purchases": n,
                         "expected_spend": spend, "expected_value": np.nan_to_num(n * spend)}, index=index)


def fit_customer_models(shop: Shop, cutoff: pd.Timestamp, config: CustomerModelConfig,
                        evaluated: dict[str, Any] | None = None) -> CustomerModels:
    """Fit churn and value on stacked earlier cutoffs whose label windows end by ``cutoff``; the value served
    is the stacked model, its blend with the naive baselines, BG/NBD + Gamma-Gamma or a naive baseline, as
    chosen on a validation window before ``cutoff`` (:func:`training.value_choice.choose_stacked_value`).
    When no stacked window fits: the models chosen on a validation window before ``cutoff`` among LightGBM
    on shorter label windows, BG/NBD (+ Gamma-Gamma) and the naive value baselines
    (:func:`training.customer_selection.fit_short_history`). ``evaluated``: an evaluation's ``selection``;
    its choice among the stacked candidates is applied without validating again
    (:func:`training.value_choice.evaluated_choice`)."""
    H = config.horizon_days
    cutoffs = training_cutoffs(shop, cutoff, H, config.n_cutoffs, config.cutoff_step_days)
    bg, gg = fit_bgnbd(shop, cutoff)
    if not cutoffs:
        first = shop.orders[schema.TS].min()
        days = (pd.Timestamp(cutoff) - first).days
        why = (f"{days} days of history before {cutoff.date()} < the {H} + 60 days the stacked model needs "
               f"for a {H}-day horizon")
        return _short_history(shop, cutoff, config, bg, gg, why)
    log.info("customer models: training cutoffs %s", [str(c.date()) for c in cutoffs])
    X, y = frames.stacked(shop, cutoffs, H)
    empty = _no_label_signal(y)
    if empty:  # e.g. orders that end long before the data (live events or orders after a gap)
        last = shop.orders[schema.TS].max()
        why = (f"the {len(cutoffs)} stacked {H}-day windows before {cutoff.date()} hold {empty} (the last "
               f"order is of {last.date()})")
        log.warning("customer models: %s: the short-history choice instead", why)
        del X, y
        return _short_history(shop, cutoff, config, bg, gg, why)
    churn, value = fit_churn_and_value(config, X, y["churn"], y["future_net"])
    del X, y
    choice = (evaluated_choice(evaluated, value, H, bg, gg)
              or choose_stacked_value(shop, cutoff, config, value, bg, gg))
    return CustomerModels(churn=churn, value=choice.value, bgnbd=bg, gg=gg, config=config, cutoff=cutoff,
                          components={"churn": f"LightGBM on {len(cutoffs)} stacked windows",
                                      "value": describe(choice, f"LightGBM (Tweedie) on {len(cutoffs)} "
                                                                "stacked windows")},
                          selection=choice.selection)


def _short_history(shop: Shop, cutoff: pd.Timestamp, config: CustomerModelConfig, bg: BetaGeoModel,
                   gg: GammaGammaModel | None, why: str) -> CustomerModels:
    """The models :func:`training.customer_selection.fit_short_history` chooses, for the reason ``why``."""
    short = fit_short_history(shop, cutoff, config, bg, gg, why)
    return CustomerModels(churn=short.churn, value=short.value, bgnbd=bg, gg=gg, config=config,
                          cutoff=cutoff, components=short.components, selection=short.selection)


def _no_label_signal(y: pd.DataFrame) -> str:
    """What the stacked labels lack for churn and value to be learned ("" when nothing): no spend at all, or
    only churned (or only retained) customers."""
    if not len(y) or not (y["future_net"] > 0).any():
        return "no spend"
    if y["churn"].nunique() < 2:
        return "only churned customers" if bool(y["churn"].iloc[0]) else "no churned customer"
    return ""


def in_period_ceiling(X: pd.DataFrame, y: pd.DataFrame, config: CustomerModelConfig, X_train: pd.DataFrame,
                      y_train: pd.DataFrame, folds: int = 5) -> dict[str, dict[str, float]]:
    """What these features can tell about this very window at best: the same models fitted on the production
    training rows *plus* the evaluated window's own labels, scored out of fold (customers split in ``folds``;
    each fold is predicted by models that saw the other folds' outcomes). Not a usable model (it learns from
    the future it predicts) but a bound: a target above it needs information the features do not hold."""
    fold = np.random.default_rng(config.seed).permutation(len(X)) % folds
    churn, value = np.zeros(len(X)), np.zeros(len(X))
    for k in range(folds):
        tr, te = fold != k, fold == k
        A, ya = unify_categories(pd.concat([X_train, X[tr]])), pd.concat([y_train, y[tr]])
        churn[te] = ChurnModel(config).fit(A, ya["churn"]).predict(X[te]).to_numpy()
        value[te] = ValueModel(config).fit(A, ya["future_net"]).predict(X[te]).to_numpy()
    return {"churn": classification_report(y["churn"], churn),
            "value": regression_report(y["future_net"].clip(lower=0).to_numpy(), value)}


def _report(scores: pd.DataFrame, target: np.ndarray) -> dict[str, Any]:
    """Each churn and value model's metrics against the holdout labels in ``scores``."""
    churn = scores["churn"]
    return {
        "churn": {
            "production": classification_report(churn, scores["churn_production"]),
            "recency": classification_report(churn, scores["churn_recency"], is_probability=False),
            "bgnbd": classification_report(churn, scores["churn_bgnbd"]),
        },
        "value": {
            "production": regression_report(target, scores["value_production"]),
            "last_period": regression_report(target, scores["value_last_period"]),
            "historical_rate": regression_report(target, scores["value_historical_rate"]),
            "bgnbd_gg": regression_report(target, scores["value_bgnbd_gg"]),
        },
    }


def evaluate_customer_models(shop: Shop, cutoff: pd.Timestamp, config: CustomerModelConfig,
                             corrupt_features: bool = False, ceiling: bool = False) -> CustomerEvaluation:
    """Train on cutoffs before ``cutoff``; evaluate on customers with a past purchase at ``cutoff``.

    ``corrupt_features`` shuffles the evaluation features (used to prove the promotion gate works);
    ``ceiling`` adds :func:`in_period_ceiling` to the report (benchmarks).
    """
    cutoff = pd.Timestamp(cutoff)
    H = config.horizon_days
    if cutoff + pd.Timedelta(days=H) > shop.end + pd.Timedelta(days=1):
        raise ModelFitError(f"the holdout window {cutoff.date()} + {H} days runs past the data end "
                            f"{shop.end.date()}: choose an earlier --cutoff")
    models = fit_customer_models(shop, cutoff, config)
    X = customer_features(shop, cutoff)
    X = X[X["n_orders"] > 0]
    if corrupt_features:
        rng = np.random.default_rng(config.seed)
        X = X.apply(lambda s: pd.Series(rng.permutation(s.to_numpy()), index=s.index, dtype=s.dtype))
    y = future_labels(shop, cutoff, H, X.index)
    bgs = bgnbd_scores(models.bgnbd, models.gg, shop, cutoff, X.index, H)  # type: ignore[arg-type]
    churn_p = models.churn.predict(X)
    value_p = models.value.predict(X)
    scores = pd.DataFrame({
        "churn": y["churn"], "future_net": y["future_net"], "churn_production": churn_p,
        "churn_recency": recency_baseline(X), "churn_bgnbd": bgs["p_no_purchase"],
        "value_production": value_p, "value_last_period": last_period_baseline(X, H),
        "value_historical_rate": historical_rate_baseline(X, H),
        "value_bgnbd_gg": bgs["expected_value"],
    })
    target = y["future_net"].clip(lower=0).to_numpy()
    report = _report(scores, target)
    if models.selection:
        report["selection"] = models.selection
    if ceiling and isinstance(models.churn, ChurnModel):
        cutoffs = training_cutoffs(shop, cutoff, H, config.n_cutoffs, config.cutoff_step_days)
        Xtr, ytr = frames.stacked(shop, cutoffs, H)
        bound = in_period_ceiling(X, y, config, Xtr, ytr)
        report["churn"]["in_period_ceiling"] = bound["churn"]
        report["value"]["in_period_ceiling"] = bound["value"]
    tables = {"churn_reliability": reliability(y["churn"], churn_p),
              "value_decile_lift": decile_lift(target, value_p),
              "churn_feature_importance": models.churn.feature_importance().rename("gain").reset_index(),
              "value_feature_importance": models.value.feature_importance().rename("gain").reset_index()}
    return CustomerEvaluation(report=report, tables=tables, models=models, scores=scores)
