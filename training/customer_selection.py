"""Churn and value when the history is too short for stacked windows of the horizon: LightGBM on shorter label
windows scaled to the horizon, BG/NBD (+ Gamma-Gamma), calibrated recency (churn), a naive value baseline or a
blend of the short-window value model with both naive baselines (:data:`BLEND_WEIGHTS`), chosen on validation
windows before the cutoff.

The choice is made on validation windows ``[cutoff - V, cutoff)``: every candidate is fitted again as of
``cutoff - V``, predicts the H days it would be served for, and is scored against what happened in the V days
of the window, which ends at the cutoff, so nothing after the cutoff is read. Two windows, because the
candidates need different history:

- the baseline window (:func:`baseline_window`): the longest V of :data:`LABEL_WINDOWS` (at most H) with
  :data:`MIN_VALIDATION_HISTORY_DAYS` of history before ``cutoff - V``. BG/NBD, calibrated recency and the
  value baselines compete on it (the longer the window, the closer to H);
- the short-window window (:func:`short_window_validation`): the longest V for which V-day short-window models
  can be fitted as of ``cutoff - V``. The short-window family then competes against the baseline window's
  winner on it.

The short-window models served are the recipe validated: LightGBM on stacked V-day label windows (the
short-window window's V; :func:`features.customer_labels.training_cutoffs`) as of the cutoff, scaled to H.
Serving a longer label window than the one validated was a model nobody had scored: on the grid's young cells
it ranked below the V-day recipe (``bench/VALUE_GRID.md``).

When the short-window window is as long as the baseline window, all candidates compete on it alone. When it
is shorter than :data:`MIN_SHORT_VALIDATION_DAYS` and the baseline window is longer, the short-window family
is not a candidate (a week or two says little about a horizon of months).
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
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from features import schema
from features.customer_labels import stacked_training_set, training_cutoffs
from features.io import Shop
from models.bgnbd import BetaGeoModel, BGNBDCustomerModel, GammaGammaModel
from models.customer import ChurnModel, CustomerModelConfig, ValueModel, recency_baseline
from models.customer_scorers import BaselineValue, Blend, CustomerScorer, RecencyChurn, WindowScaled
from models.metrics import auc, regression_report
from training import frames
from training.bgnbd_fit import fit_bgnbd

log = logging.getLogger(__name__)

LABEL_WINDOWS = (180, 120, 90, 60, 30, 14, 7)
"""Label windows (days) the short-window models may be trained on, longest first."""
MIN_VALIDATION_HISTORY_DAYS = 30
"""History before a validation cutoff needed to compare BG/NBD and the baselines when the short-window models
cannot be fitted as of it (and before the label window the calibrated recency model is fitted on)."""
MIN_SHORT_VALIDATION_DAYS = 30
"""The shortest validation window the short-window family may be chosen on when the baseline window is longer:
the spend or purchases of a week or two say little about a horizon of months (on Online Retail with 102 days
of history, a 14-day window chose BG/NBD + Gamma-Gamma for 270 days, which then ranked far below last-period
spend)."""
SHORT_WINDOW, BGNBD, LAST_PERIOD, HISTORICAL_RATE = "short_window", "bgnbd", "last_period", "historical_rate"
SHORT_BLEND, RECENCY = "short_window_blend", "recency"
VALUE_CANDIDATES = (SHORT_WINDOW, SHORT_BLEND, BGNBD, LAST_PERIOD, HISTORICAL_RATE)
CHURN_CANDIDATES = (SHORT_WINDOW, BGNBD, RECENCY)
SHORT_FAMILY = (SHORT_WINDOW, SHORT_BLEND)
"""The candidates that need a short-window model (validated on their own window)."""
BLEND_WEIGHTS = {SHORT_WINDOW: 0.5, LAST_PERIOD: 0.25, HISTORICAL_RATE: 0.25}
"""The value blend: the short-window model shrunk towards both naive baselines (fixed weights, not tuned)."""
_NAMES = {SHORT_WINDOW: "short-window LightGBM", BGNBD: "BG/NBD", LAST_PERIOD: "last-period spend",
          HISTORICAL_RATE: "historical rate", SHORT_BLEND: "blend", RECENCY: "calibrated recency"}


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


def fit_recency(shop: Shop, cutoff: pd.Timestamp, horizon_days: int) -> WindowScaled | None:
    """The calibrated recency churn model (:class:`models.customer_scorers.RecencyChurn`) as of ``cutoff``:
    fitted on the label window ``[cutoff - w, cutoff)`` of the horizon itself, or else of the longest of
    :data:`LABEL_WINDOWS` shorter than it, that has :data:`MIN_VALIDATION_HISTORY_DAYS` of history before it,
    and scaled to the horizon; None when no window fits (or nobody bought, or everybody did, in it)."""
    first = shop.orders[schema.TS].min()
    for w in (horizon_days, *(w for w in LABEL_WINDOWS if w < horizon_days)):
        start = cutoff - pd.Timedelta(days=w)
        if start - first < pd.Timedelta(days=MIN_VALIDATION_HISTORY_DAYS):
            continue
        X, y = stacked_training_set(shop, [start], w)
        if len(X) == 0 or y["churn"].nunique() < 2:
            continue
        return WindowScaled(RecencyChurn().fit(X, y["churn"]), w, horizon_days)
    return None


def _candidates(shop: Shop, cutoff: pd.Timestamp, horizon_days: int, short: ShortWindowModels | None,
                bg: BetaGeoModel, gg: GammaGammaModel | None, why: str, recency: bool = True
                ) -> tuple[dict[str, CustomerScorer], dict[str, CustomerScorer]]:
    """The churn and value candidates as of ``cutoff`` for an ``horizon_days`` horizon (the calibrated
    recency model only with ``recency``)."""
    churn: dict[str, CustomerScorer] = {}
    value: dict[str, CustomerScorer] = {}
    if short is not None:
        churn[SHORT_WINDOW], value[SHORT_WINDOW] = short.churn, short.value
    churn[BGNBD] = BGNBDCustomerModel(bg, gg, horizon_days, "churn", why)
    rec = fit_recency(shop, cutoff, horizon_days) if recency else None
    if rec is not None:
        churn[RECENCY] = rec
    value[BGNBD] = BGNBDCustomerModel(bg, gg, horizon_days, "value", why)
    value[LAST_PERIOD] = BaselineValue(LAST_PERIOD, horizon_days)
    value[HISTORICAL_RATE] = BaselineValue(HISTORICAL_RATE, horizon_days)
    if short is not None:
        value[SHORT_BLEND] = blend(short.value, horizon_days)
    return churn, value


def blend(model: CustomerScorer, horizon_days: int) -> Blend:
    """``model`` (value over ``horizon_days``) shrunk towards both naive baselines over the same days, with
    the weights of :data:`BLEND_WEIGHTS` (the model's is :data:`SHORT_WINDOW`'s)."""
    parts = {SHORT_WINDOW: model, LAST_PERIOD: BaselineValue(LAST_PERIOD, horizon_days),
             HISTORICAL_RATE: BaselineValue(HISTORICAL_RATE, horizon_days)}
    return Blend([(parts[c], w) for c, w in BLEND_WEIGHTS.items()])


def baseline_window(shop: Shop, cutoff: pd.Timestamp, horizon_days: int) -> int | None:
    """The longest of :data:`LABEL_WINDOWS` (at most the horizon) with :data:`MIN_VALIDATION_HISTORY_DAYS` of
    history before ``cutoff`` minus it: the validation window of the candidates that need no short-window
    model (BG/NBD, calibrated recency, the value baselines); None when none fits."""
    first = shop.orders[schema.TS].min()
    for v in (v for v in LABEL_WINDOWS if v <= horizon_days):
        if cutoff - pd.Timedelta(days=v) - first >= pd.Timedelta(days=MIN_VALIDATION_HISTORY_DAYS):
            return v
    return None


def short_window_validation(shop: Shop, cutoff: pd.Timestamp, horizon_days: int, config: CustomerModelConfig
                            ) -> tuple[int, ShortWindowModels] | None:
    """The longest of :data:`LABEL_WINDOWS` (at most the horizon) V for which V-day short-window models can be
    fitted as of ``cutoff - V``, with those models; None when none fits."""
    for v in (v for v in LABEL_WINDOWS if v <= horizon_days):
        short = fit_short_window(shop, cutoff - pd.Timedelta(days=v), v, config, windows=(v,))
        if short is not None:
            return v, short
    return None


@dataclass
class ValidationWindows:
    """The validation windows' lengths (days; None: not used) and the short-window models of the second."""

    baseline: int | None
    short: int | None
    short_models: ShortWindowModels | None = None
    short_dropped: int | None = None
    """The short-window family's window when too short to choose on (:data:`MIN_SHORT_VALIDATION_DAYS`)."""


def validation_windows(shop: Shop, cutoff: pd.Timestamp, horizon_days: int, config: CustomerModelConfig,
                       with_short: bool) -> ValidationWindows:
    """The baseline window (:func:`baseline_window`) and the short-window family's validation window with its
    models (:func:`short_window_validation`). The short-window one is dropped when it is shorter than
    :data:`MIN_SHORT_VALIDATION_DAYS` and the baseline window is longer; the baseline window is dropped when
    the short-window one is at least as long (all candidates are then compared on it)."""
    base = baseline_window(shop, cutoff, horizon_days)
    found = short_window_validation(shop, cutoff, horizon_days, config) if with_short else None
    if found is None:
        return ValidationWindows(base, None)
    if base is not None and found[0] < MIN_SHORT_VALIDATION_DAYS and base > found[0]:
        return ValidationWindows(base, None, short_dropped=found[0])
    return ValidationWindows(base if base is not None and base > found[0] else None, found[0], found[1])


def _validate_on(shop: Shop, cutoff: pd.Timestamp, v: int, short: ShortWindowModels | None,
                 horizon_days: int) -> dict[str, Any]:
    """Every candidate fitted as of ``cutoff - v`` (the short-window family: ``short``, if given) and scored
    on ``[cutoff - v, cutoff)``: value Spearman and normalised Gini, churn AUC. Each scores the
    ``horizon_days`` it would be served for (last-period spend over 180 days is not over 60; BG/NBD's
    expected spend in 270 days does not rank as in 60), its V-day outcome standing for the H days'. The
    calibrated recency model is scored by recency itself (it ranks as recency does, so its AUC is recency's,
    whether or not a label window fits before ``cutoff - v`` to fit it on)."""
    start = cutoff - pd.Timedelta(days=v)
    X, y = stacked_training_set(shop, [start], v)
    bg, gg = fit_bgnbd(shop, start)
    if short is not None:  # scaled to the horizon as served (the blend adds it to the baselines' money)
        short = replace(short, churn=WindowScaled(short.churn.model, short.label_days, horizon_days),
                        value=WindowScaled(short.value.model, short.label_days, horizon_days))
    churn, value = _candidates(shop, start, horizon_days, short, bg, gg, "validation", recency=False)
    target = y["future_net"].clip(lower=0).to_numpy()
    out: dict[str, Any] = {"cutoff": str(start.date()), "end": str(pd.Timestamp(cutoff).date()),
                           "horizon_days": v, "customers": int(len(X)),
                           "short_window_label_days": short.label_days if short is not None else None,
                           "value": {}, "churn": {}}
    out["value"] = value_scores(target, X, value)
    for name, m in churn.items():
        out["churn"][name] = {"auc": auc(y["churn"].to_numpy(), m.predict(X).to_numpy())}
    out["churn"][RECENCY] = {"auc": auc(y["churn"].to_numpy(), recency_baseline(X).to_numpy())}
    return out


def value_scores(target: np.ndarray, X: pd.DataFrame, scorers: dict[str, CustomerScorer]
                 ) -> dict[str, dict[str, float]]:
    """Each value scorer's Spearman and normalised Gini on ``X`` against ``target`` (the window's spend)."""
    out = {}
    for name, m in scorers.items():
        r = regression_report(target, m.predict(X).to_numpy())
        out[name] = {"spearman": r["spearman"], "gini": r["normalized_gini"]}
    return out


def validate(shop: Shop, cutoff: pd.Timestamp, horizon_days: int, config: CustomerModelConfig,
             with_short: bool) -> dict[str, Any]:
    """The candidates' metrics on each validation window of :func:`validation_windows`: ``"baseline"`` and
    ``"short"`` (absent when not used), and ``"short_dropped"`` (days) when the short-window family's window
    was too short. Reads nothing from ``cutoff`` on."""
    w = validation_windows(shop, cutoff, horizon_days, config, with_short)
    out: dict[str, Any] = {}
    if w.baseline is not None:
        out["baseline"] = _validate_on(shop, cutoff, w.baseline, None, horizon_days)
    if w.short is not None:
        out["short"] = _validate_on(shop, cutoff, w.short, w.short_models, horizon_days)
    if w.short_dropped is not None:
        out["short_dropped"] = w.short_dropped
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


def _usable(val: dict[str, Any] | None, comp: str) -> dict[str, dict[str, float]]:
    scores = val[comp] if val is not None else {}
    return scores if any(np.isfinite(_score(m)) for m in scores.values()) else {}


def _window(val: dict[str, Any]) -> str:
    return f"the validation window {val['cutoff']} to {val['end']} ({val['horizon_days']} days"


def _pick(comp: str, val: dict[str, Any]) -> tuple[str, str]:
    """The candidate chosen for ``comp`` and why: the best on the baseline window among the candidates that
    need no short-window model, then the short-window family against it on their own window."""
    order = CHURN_CANDIDATES if comp == "churn" else VALUE_CANDIDATES
    metric = "AUC" if comp == "churn" else "Spearman/Gini"
    base, short = _usable(val.get("baseline"), comp), _usable(val.get("short"), comp)
    if not base and not short:
        validated = "baseline" in val or "short" in val
        why = ("nothing to choose on in the validation window" if validated else
               "no validation window before the cutoff to choose on")
        return BGNBD, why + ": the BG/NBD fallback is kept"
    reasons = []
    if base:
        chosen = _choose(base, order)
        reasons.append(f"chosen on {_window(val['baseline'])}, {metric}: {_table(base)})")
        if "short_dropped" in val:
            reasons.append(f"the short-window model could only be validated on {val['short_dropped']} days "
                           f"< {MIN_SHORT_VALIDATION_DAYS}: not a candidate")
    if short:
        if base:
            if chosen not in short:  # cannot be compared with the short-window family: it stays
                return chosen, "; ".join(reasons)
            short = {c: m for c, m in short.items() if c in SHORT_FAMILY or c == chosen}
        chosen = _choose(short, order)
        then = "then " if base else ""
        reasons.append(f"{then}chosen on {_window(val['short'])}, {metric}: {_table(short)})")
    return chosen, "; ".join(reasons)


def fit_short_history(shop: Shop, cutoff: pd.Timestamp, config: CustomerModelConfig, bg: BetaGeoModel,
                      gg: GammaGammaModel | None, why: str) -> ShortHistoryModels:
    """Churn and value for a horizon whose stacked windows do not fit before ``cutoff`` (``why``): the
    candidates chosen on validation windows before ``cutoff`` (see the module's docstring)."""
    H = config.horizon_days
    val = validate(shop, cutoff, H, config, with_short=True)
    # the recipe validated (V-day windows), as of the cutoff; none when the family had no window to choose on
    short = (fit_short_window(shop, cutoff, H, config, (val["short"]["horizon_days"],)) if "short" in val
             else None)
    churn, value = _candidates(shop, cutoff, H, short, bg, gg, why)
    chosen: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for comp in ("churn", "value"):
        chosen[comp], reasons[comp] = _pick(comp, val)
    served = {"churn": churn, "value": value}
    for comp in ("churn", "value"):
        if chosen[comp] not in served[comp]:  # validated, but not fittable as of the cutoff: keep BG/NBD
            reasons[comp] += f"; {_NAMES[chosen[comp]]} could not be fitted as of the cutoff: BG/NBD kept"
            chosen[comp] = BGNBD
    components = {"churn": _describe("churn", chosen["churn"], short, H, churn),
                  "value": _describe("value", chosen["value"], short, H, value)}
    components = {c: f"{d}: {reasons[c]}; {why}" for c, d in components.items()}
    for c, d in components.items():
        log.info("customer models: %s: %s", c, d)
    selection: dict[str, Any] = {c: {"chosen": chosen[c], "reason": reasons[c]} for c in ("churn", "value")}
    if short is not None:
        selection["short_window"] = {"label_days": short.label_days, "windows": short.windows}
    if "short" in val or "baseline" in val:  # the short-window family's window if used, else the baseline
        selection["validation"] = val.get("short", val.get("baseline"))
        if "short" in val and "baseline" in val:
            selection["baseline_validation"] = val["baseline"]
    return ShortHistoryModels(churn=churn[chosen["churn"]], value=value[chosen["value"]],
                              components=components, selection=selection)


def _describe(component: str, chosen: str, short: ShortWindowModels | None, horizon_days: int,
              candidates: dict[str, CustomerScorer]) -> str:
    H = horizon_days
    if chosen == RECENCY:
        m = candidates[RECENCY]
        assert isinstance(m, WindowScaled)
        scaled = f", scaled to {H} days" if m.label_days != H else ""
        return (f"calibrated recency (P(no purchase) by days since the last purchase, fitted on a "
                f"{m.label_days}-day window{scaled})")
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
