"""The value model served when stacked windows of the horizon fit, chosen on a validation window that ends
at the cutoff among: the stacked LightGBM (Tweedie) alone, its blend with the naive baselines (the
short-history blend, :func:`training.customer_selection.blend`: the model 0.5, last-period spend and the
historical rate 0.25 each), BG/NBD + Gamma-Gamma, last-period spend and the historical rate.

The validation window ``[cutoff - V, cutoff)``: V is the horizon H itself when stacked H-day windows fit as of
``cutoff - H`` (the production recipe, fitted again V days earlier), else the longest of
:data:`training.customer_selection.LABEL_WINDOWS` shorter than H for which stacked V-day windows fit as of
``cutoff - V`` (its model, scaled to H, stands for the H-day one). BG/NBD + Gamma-Gamma is fitted again as of
``cutoff - V``. Every candidate predicts the H days it would be served for (the baselines and BG/NBD over H,
as served) and is scored by Spearman + normalised Gini against the spend in the V days (past the stacked
rows' cap, on a seeded sample of customers, as the training rows); ties go to the earlier of
:data:`CANDIDATES` (the model alone first). Nothing from the cutoff on is read. Without a validation window
the model alone is served (and the components say so).

Why: the stacked model's ranking can be below the historical rate at the top end (Online Retail, 90 days
from 2011-06-01: Gini 0.811 against 0.818), where its small, heavily regularised trees pool the largest
customers; half the weight on the naive baselines restores their order there. And a CRM team is promised a
value model at least as good as the naive ones it would otherwise use: where one of them (or BG/NBD + Gamma-
Gamma) ranked better before the cutoff, it is what is served, and the reason says so. None is the rule: where
the model alone ranks better before the cutoff it is kept.

Example
-------
>>> c = choose_stacked_value(shop, cutoff, config, value_model, bg, gg)      # doctest: +SKIP
>>> c.chosen, describe(c, "LightGBM (Tweedie) on 8 stacked windows")       # doctest: +SKIP
('stacked_blend', 'blend of LightGBM (Tweedie) on 8 stacked windows, ...: chosen on the validation ...')
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.customer_labels import training_cutoffs
from features.io import Shop
from models.bgnbd import BetaGeoModel, BGNBDCustomerModel, GammaGammaModel
from models.customer import CustomerModelConfig, ValueModel
from models.customer_scorers import BaselineValue, CustomerScorer, WindowScaled
from training import frames
from training.bgnbd_fit import fit_bgnbd
from training.customer_selection import (
    BGNBD,
    BLEND_WEIGHTS,
    HISTORICAL_RATE,
    LABEL_WINDOWS,
    LAST_PERIOD,
    blend,
    value_scores,
)

log = logging.getLogger(__name__)

STACKED, STACKED_BLEND = "stacked", "stacked_blend"
CANDIDATES = (STACKED, STACKED_BLEND, BGNBD, LAST_PERIOD, HISTORICAL_RATE)
"""The value candidates when stacked windows fit, in the order that wins ties."""
FAMILY = "stacked"
"""The selection's ``family``: a choice among :data:`CANDIDATES` (a short history's choice has none; its
candidates share some names but were not compared with the stacked model)."""
_NAMES = {STACKED: "stacked LightGBM", STACKED_BLEND: "blend", BGNBD: "BG/NBD + Gamma-Gamma",
          LAST_PERIOD: "last-period spend", HISTORICAL_RATE: "historical rate"}


@dataclass
class StackedValueChoice:
    value: CustomerScorer
    chosen: str
    reason: str
    validation: dict[str, Any] = field(default_factory=dict)
    """The validation window (cutoff, end, days: its model's label windows too) and each candidate's metrics
    there; empty without a window."""

    @property
    def selection(self) -> dict[str, Any]:
        """The choice as the run records it (``selection.value`` in MLflow, as for short histories)."""
        out: dict[str, Any] = {"value": {"chosen": self.chosen, "reason": self.reason, "family": FAMILY}}
        if self.validation:
            out["validation"] = self.validation
        return out


def validation_model(shop: Shop, cutoff: pd.Timestamp, config: CustomerModelConfig
                     ) -> tuple[int, ValueModel] | None:
    """The longest window V (the horizon, else the shorter :data:`LABEL_WINDOWS`) for which stacked V-day
    windows fit as of ``cutoff - V``, with the value model fitted on them; None when none fits."""
    H = config.horizon_days
    for v in (H, *(w for w in LABEL_WINDOWS if w < H)):
        start = pd.Timestamp(cutoff) - pd.Timedelta(days=v)
        cutoffs = training_cutoffs(shop, start, v, config.n_cutoffs, config.cutoff_step_days)
        if not cutoffs:
            continue
        X, y = frames.stacked(shop, cutoffs, v)
        if len(X) == 0 or not (y["future_net"] > 0).any():
            continue
        return v, ValueModel(config).fit(X, y["future_net"])
    return None


def validate_stacked(shop: Shop, cutoff: pd.Timestamp, config: CustomerModelConfig) -> dict[str, Any]:
    """Each candidate's validation Spearman and normalised Gini (see the module's docstring); empty when no
    window fits or nobody spent in it. Reads nothing from ``cutoff`` on."""
    found = validation_model(shop, cutoff, config)
    if found is None:
        return {}
    v, model = found
    H = config.horizon_days
    start = pd.Timestamp(cutoff) - pd.Timedelta(days=v)
    X, y = frames.stacked(shop, [start], v)  # a sample of customers past the training rows' cap, as those
    target = y["future_net"].clip(lower=0).to_numpy()
    if len(X) == 0 or target.sum() <= 0:
        return {}
    bg, gg = fit_bgnbd(shop, start)
    scorers = candidates(WindowScaled(model, v, H), bg, gg, H, "validation")
    return {"cutoff": str(start.date()), "end": str(pd.Timestamp(cutoff).date()), "horizon_days": v,
            "customers": int(len(X)), "value": value_scores(target, X, scorers)}


def _score(m: dict[str, float]) -> float:
    """Spearman + normalised Gini; a candidate whose ranking is undefined (constant scores) ranks last."""
    s = float(m["spearman"] + m["gini"])
    return s if np.isfinite(s) else -np.inf


def candidates(model: CustomerScorer, bg: BetaGeoModel, gg: GammaGammaModel | None, horizon_days: int,
               why: str) -> dict[str, CustomerScorer]:
    """Each of :data:`CANDIDATES` as a scorer over ``horizon_days``: the stacked ``model``, its blend,
    BG/NBD + Gamma-Gamma (``bg``, ``gg``; ``why``: its reason) and the naive baselines, all as of one cutoff
    (the validation window's start, or the cutoff served)."""
    return {STACKED: model, STACKED_BLEND: blend(model, horizon_days),
            BGNBD: BGNBDCustomerModel(bg, gg, horizon_days, "value", why),
            LAST_PERIOD: BaselineValue(LAST_PERIOD, horizon_days),
            HISTORICAL_RATE: BaselineValue(HISTORICAL_RATE, horizon_days)}


def choose_stacked_value(shop: Shop, cutoff: pd.Timestamp, config: CustomerModelConfig, model: ValueModel,
                         bg: BetaGeoModel, gg: GammaGammaModel | None) -> StackedValueChoice:
    """The candidate (the stacked value ``model``, its blend, BG/NBD + Gamma-Gamma ``bg``/``gg`` or a naive
    baseline, all as of ``cutoff``) that ranked best on a validation window before ``cutoff`` (see the
    module's docstring)."""
    H = config.horizon_days
    val = validate_stacked(shop, cutoff, config)
    scores = val.get("value", {})
    if not scores:
        why = "no validation window before the cutoff to choose on: the model alone is kept"
        return StackedValueChoice(model, STACKED, why, val)
    chosen = max(CANDIDATES, key=lambda c: (_score(scores[c]), -CANDIDATES.index(c)))
    table = ", ".join(f"{_NAMES[c]} {scores[c]['spearman']:.3f}/{scores[c]['gini']:.3f}"
                      for c in sorted(CANDIDATES, key=lambda c: -_score(scores[c])))
    v = val["horizon_days"]
    scaled = "" if v == H else f", its model on {v}-day windows scaled to {H} days"
    why = (f"chosen on the validation window {val['cutoff']} to {val['end']} ({v} days{scaled}), "
           f"Spearman/Gini: {table}")
    log.info("customer models: value: %s: %s", chosen, why)
    return StackedValueChoice(candidates(model, bg, gg, H, why)[chosen], chosen, why, val)


def evaluated_choice(selection: dict[str, Any] | None, model: ValueModel, horizon_days: int,
                     bg: BetaGeoModel, gg: GammaGammaModel | None) -> StackedValueChoice | None:
    """The choice an evaluation made among the stacked candidates (its ``selection``), applied to the
    refit's ``model`` and BG/NBD + Gamma-Gamma (``bg``, ``gg``) without validating again, as the evaluated
    blend weights are shipped: the served recipe is the evaluated one, and the refit fits no validation model.
    None when the evaluation made no such choice (no evaluation, or its history was too short for stacked
    windows: a short history's choice was not made against the stacked model)."""
    value = (selection or {}).get("value", {})
    if value.get("family") != FAMILY or value.get("chosen") not in CANDIDATES:
        return None
    why = f"as chosen in the evaluation ({value['reason']})"
    return StackedValueChoice(candidates(model, bg, gg, horizon_days, why)[value["chosen"]], value["chosen"],
                              why, dict((selection or {}).get("validation", {})))


def describe(choice: StackedValueChoice, described: str) -> str:
    """The served value model in words, with the reason for the choice."""
    if choice.chosen == STACKED_BLEND:
        weights = " / ".join(f"{w:.2f}" for w in BLEND_WEIGHTS.values())
        return (f"blend of {described}, last-period spend and the historical rate ({weights}): "
                f"{choice.reason}")
    if choice.chosen == BGNBD:
        return f"BG/NBD + Gamma-Gamma (ranked above {described}): {choice.reason}"
    if choice.chosen in (LAST_PERIOD, HISTORICAL_RATE):
        return f"{_NAMES[choice.chosen]} baseline (ranked above {described}): {choice.reason}"
    return f"{described}: {choice.reason}"
