"""Churn and value when the history is too short for stacked windows of the horizon: LightGBM on shorter label
windows scaled to the horizon, BG/NBD (+ Gamma-Gamma), a naive value baseline or a blend of the short-window
value model with both naive baselines (:data:`BLEND_WEIGHTS`), chosen on a validation window before the
cutoff.

The short-window models are trained on the longest label window of :data:`LABEL_WINDOWS` shorter than the
horizon H that has at least one stacked training cutoff (:func:`features.customer_labels.training_cutoffs`).
The choice is made on the validation window ``[cutoff - V, cutoff)``: every candidate is fitted again as of
``cutoff - V`` (the short-window models on V-day label windows ending by then) and scored for V days against
what happened in that window, which ends at the cutoff, so nothing after the cutoff is read. V is the longest
of :data:`LABEL_WINDOWS` (at most H) for which V-day models can be fitted as of ``cutoff - V`` (else the
longest with :data:`MIN_VALIDATION_HISTORY_DAYS` of history: then only BG/NBD and the baselines compete). So
the validated short-window model may use a shorter label window than the served one (the history before
``cutoff - V`` is shorter): it stands for its family, and the validation window is shorter than H.
Value candidates are ranked by validation Spearman + normalised Gini, churn candidates by AUC; on ties the
earlier of :data:`VALUE_CANDIDATES` / :data:`CHURN_CANDIDATES` wins. Without a validation window BG/NBD is
kept (the documented fallback).

Example
-------
>>> m = fit_short_history(shop, cutoff, config, bg, gg, why)           # doctest: +SKIP
>>> m.components["value"]                                              # doctest: +SKIP
'LightGBM (Tweedie) on 4 stacked 90-day windows, scaled to 180 days: chosen on ...'
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features import schema
from features.customer import customer_features
from features.customer_labels import future_labels, training_cutoffs
from features.io import Shop
from models.bgnbd import BetaGeoModel, BGNBDCustomerModel, GammaGammaModel
from models.customer import ChurnModel, CustomerModelConfig, ValueModel
from models.customer_scorers import BaselineValue, Blend, CustomerScorer, WindowScaled
from models.metrics import auc, regression_report
from training import frames
from training.bgnbd_fit import fit_bgnbd

log = logging.getLogger(__name__)

LABEL_WINDOWS = (180, 120, 90, 60, 30, 14, 7)
"""Label windows (days) the short-window models may be trained on, longest first."""
MIN_VALIDATION_HISTORY_DAYS = 30
"""History before a validation cutoff needed to compare BG/NBD and the baselines when the short-window models
cannot be fitted as of it."""
SHORT_WINDOW, BGNBD, LAST_PERIOD, HISTORICAL_RATE = "short_window", "bgnbd", "last_period", "historical_rate"
SHORT_BLEND = "short_window_blend"
VALUE_CANDIDATES = (SHORT_WINDOW, SHORT_BLEND, BGNBD, LAST_PERIOD, HISTORICAL_RATE)
CHURN_CANDIDATES = (SHORT_WINDOW, BGNBD)
BLEND_WEIGHTS = {SHORT_WINDOW: 0.5, LAST_PERIOD: 0.25, HISTORICAL_RATE: 0.25}
"""The value blend: the short-window model shrunk towards both naive baselines (fixed weights, not tuned)."""
_NAMES = {SHORT_WINDOW: "short-window LightGBM", BGNBD: "BG/NBD", LAST_PERIOD: "last-period spend",
          HISTORICAL_RATE: "historical rate", SHORT_BLEND: "blend"}


@dataclass
class ShortWindowModels:
    """LightGBM churn and value trained on ``label_days``-day windows, scored for the horizon."""

    churn: WindowScaled
    value: WindowScaled
    label_days: int
    windows: int


@dataclass
class ShortHistoryModels:
    churn: CustomerScorer
    value: CustomerScorer
    components: dict[str, str]
    selection: dict[str, Any] = field(default_factory=dict)
    """Per component: the candidate chosen, why, and the validation window's metrics of every candidate."""


def fit_short_window(shop: Shop, cutoff: pd.Timestamp, horizon_days: int, config: CustomerModelConfig,
                     windows: tuple[int, ...] = LABEL_WINDOWS) -> ShortWindowModels | None:
    """Churn and value LightGBM on the longest of ``windows`` shorter than the horizon, or equal to it, with
    stacked training cutoffs whose labels end by ``cutoff``; None when none fits."""
    for w in windows:
        if w > horizon_days:
            continue
        cutoffs = training_cutoffs(shop, cutoff, w, config.n_cutoffs, config.cutoff_step_days)
        if not cutoffs:
            continue
        X, y = frames.stacked(shop, cutoffs, w)
        if len(X) == 0 or y["churn"].nunique() < 2:
            continue
        churn = ChurnModel(config).fit(X, y["churn"])
        value = ValueModel(config).fit(X, y["future_net"])
        return ShortWindowModels(WindowScaled(churn, w, horizon_days), WindowScaled(value, w, horizon_days),
                                 w, len(cutoffs))
    return None


def _candidates(shop: Shop, cutoff: pd.Timestamp, horizon_days: int, short: ShortWindowModels | None,
                bg: BetaGeoModel, gg: GammaGammaModel | None, why: str
                ) -> tuple[dict[str, CustomerScorer], dict[str, CustomerScorer]]:
    """The churn and value candidates as of ``cutoff`` for an ``horizon_days`` horizon."""
    churn: dict[str, CustomerScorer] = {}
    value: dict[str, CustomerScorer] = {}
    if short is not None:
        churn[SHORT_WINDOW], value[SHORT_WINDOW] = short.churn, short.value
    churn[BGNBD] = BGNBDCustomerModel(bg, gg, horizon_days, "churn", why)
    value[BGNBD] = BGNBDCustomerModel(bg, gg, horizon_days, "value", why)
    value[LAST_PERIOD] = BaselineValue(LAST_PERIOD, horizon_days)
    value[HISTORICAL_RATE] = BaselineValue(HISTORICAL_RATE, horizon_days)
    if short is not None:
        value[SHORT_BLEND] = Blend([(value[c], w) for c, w in BLEND_WEIGHTS.items()])
    return churn, value


def validation_window(shop: Shop, cutoff: pd.Timestamp, horizon_days: int, config: CustomerModelConfig,
                      with_short: bool) -> tuple[int, ShortWindowModels | None] | None:
    """The validation window's length V and the short-window models fitted as of ``cutoff - V`` (None:
    BG/NBD and the baselines only); None when no window fits (see the module's docstring)."""
    first = shop.orders[schema.TS].min()
    lengths = [v for v in LABEL_WINDOWS if v <= horizon_days]
    if with_short:
        for v in lengths:
            short = fit_short_window(shop, cutoff - pd.Timedelta(days=v), v, config, windows=(v,))
            if short is not None:
                return v, short
    for v in lengths:
        if cutoff - pd.Timedelta(days=v) - first >= pd.Timedelta(days=MIN_VALIDATION_HISTORY_DAYS):
            return v, None
    return None


def validate(shop: Shop, cutoff: pd.Timestamp, horizon_days: int, config: CustomerModelConfig,
             with_short: bool) -> dict[str, Any] | None:
    """Every candidate fitted as of ``cutoff - V`` and scored on ``[cutoff - V, cutoff)``: value Spearman and
    normalised Gini, churn AUC, by candidate. Reads nothing from ``cutoff`` on. None: no validation window."""
    found = validation_window(shop, cutoff, horizon_days, config, with_short)
    if found is None:
        return None
    v, short = found
    start = cutoff - pd.Timedelta(days=v)
    X = customer_features(shop, start)
    X = X[X["n_orders"] > 0]
    y = future_labels(shop, start, v, X.index)
    bg, gg = fit_bgnbd(shop, start)
    churn, value = _candidates(shop, start, v, short, bg, gg, "validation")
    target = y["future_net"].clip(lower=0).to_numpy()
    out: dict[str, Any] = {"cutoff": str(start.date()), "end": str(pd.Timestamp(cutoff).date()),
                           "horizon_days": v, "customers": int(len(X)),
                           "short_window_label_days": short.label_days if short is not None else None,
                           "value": {}, "churn": {}}
    for name, m in value.items():
        r = regression_report(target, m.predict(X).to_numpy())
        out["value"][name] = {"spearman": r["spearman"], "gini": r["normalized_gini"]}
    for name, m in churn.items():
        out["churn"][name] = {"auc": auc(y["churn"].to_numpy(), m.predict(X).to_numpy())}
    return out


def _score(metrics: dict[str, float]) -> float:
    s = float(np.nansum([metrics.get(k, np.nan) for k in ("spearman", "gini", "auc")]))
    return s if any(np.isfinite(v) for v in metrics.values()) else -np.inf


def _choose(scores: dict[str, dict[str, float]], order: tuple[str, ...]) -> str:
    """The candidate with the best score; ties go to the earlier of ``order``."""
    return max((c for c in order if c in scores), key=lambda c: (_score(scores[c]), -order.index(c)))


def _table(scores: dict[str, dict[str, float]]) -> str:
    return ", ".join(f"{_NAMES[c]} " + "/".join(f"{v:.3f}" for v in m.values())
                     for c, m in sorted(scores.items(), key=lambda kv: -_score(kv[1])))


def fit_short_history(shop: Shop, cutoff: pd.Timestamp, config: CustomerModelConfig, bg: BetaGeoModel,
                      gg: GammaGammaModel | None, why: str) -> ShortHistoryModels:
    """Churn and value for a horizon whose stacked windows do not fit before ``cutoff`` (``why``): the
    candidates chosen on a validation window before ``cutoff`` (see the module's docstring)."""
    H = config.horizon_days
    short = fit_short_window(shop, cutoff, H, config, tuple(w for w in LABEL_WINDOWS if w < H))
    churn, value = _candidates(shop, cutoff, H, short, bg, gg, why)
    val = validate(shop, cutoff, H, config, with_short=short is not None)
    chosen: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for comp, order in (("churn", CHURN_CANDIDATES), ("value", VALUE_CANDIDATES)):
        scores = val[comp] if val is not None else {}
        if scores and any(np.isfinite(_score(m)) for m in scores.values()):
            assert val is not None
            chosen[comp] = _choose(scores, order)
            metric = "AUC" if comp == "churn" else "Spearman/Gini"
            reasons[comp] = (f"chosen on the validation window {val['cutoff']} to {val['end']} "
                             f"({val['horizon_days']} days, {metric}: {_table(scores)})")
        else:
            chosen[comp] = BGNBD
            reasons[comp] = ("no validation window before the cutoff to choose on" if val is None else
                             f"nothing to choose on in the validation window {val['cutoff']} to {val['end']}")
            reasons[comp] += ": the BG/NBD fallback is kept"
    components = {"churn": _describe("churn", chosen["churn"], short, H), "value": _describe(
        "value", chosen["value"], short, H)}
    components = {c: f"{d}: {reasons[c]}; {why}" for c, d in components.items()}
    for c, d in components.items():
        log.info("customer models: %s: %s", c, d)
    selection: dict[str, Any] = {c: {"chosen": chosen[c], "reason": reasons[c]} for c in ("churn", "value")}
    if short is not None:
        selection["short_window"] = {"label_days": short.label_days, "windows": short.windows}
    if val is not None:
        selection["validation"] = val
    return ShortHistoryModels(churn=churn[chosen["churn"]], value=value[chosen["value"]],
                              components=components, selection=selection)


def _describe(component: str, chosen: str, short: ShortWindowModels | None, horizon_days: int) -> str:
    H = horizon_days
    if chosen == SHORT_WINDOW:
        assert short is not None
        what = "LightGBM" if component == "churn" else "LightGBM (Tweedie)"
        return (f"{what} on {short.windows} stacked {short.label_days}-day windows, scaled to {H} days "
                f"(short-window model)")
    if chosen == SHORT_BLEND:
        assert short is not None
        return (f"blend of LightGBM (Tweedie) on {short.windows} stacked {short.label_days}-day windows "
                f"scaled to {H} days, last-period spend and the historical rate ("
                + " / ".join(f"{w:.2f}" for w in BLEND_WEIGHTS.values()) + ")")
    if chosen == BGNBD:
        return (f"BG/NBD fallback (P(no purchase in {H} days))" if component == "churn"
                else "BG/NBD + Gamma-Gamma fallback")
    return f"{_NAMES[chosen]} baseline over {H} days"
