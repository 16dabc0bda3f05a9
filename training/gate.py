"""The promotion gate: thresholds as data, checked against the champion's metrics.

Like MLflow's ``MetricThreshold``, a threshold names a metric, the direction in which it is better and the
largest worsening tolerated against the champion. Unlike a check that skips what it cannot compare, the gate
FAILS when a gate metric is missing or not a finite number on the new run: a run whose churn AUC could not
be measured is never promoted.

Example
-------
>>> t = Threshold("churn.production.auc", tolerance=0.005)
>>> check_gate({"churn.production.auc": 0.71}, {"churn.production.auc": 0.72}, (t,)).ok
False
>>> check_gate({"churn.production.auc": float("nan")}, None, (t,)).reason
'churn.production.auc is NaN on the new run'

A component the evaluation could not run at all (``unevaluated``: component -> the reason, e.g. a young
shop whose history holds no holdout window for churn) is different: its gate metrics are not checked, and
:func:`unevaluated_decisions` says what promotion does with it. A champion that was evaluated is never
replaced by a version that was not: that component keeps the champion's version. Without an evaluated
champion of the component the new version is promoted, with the reason recorded.

>>> r = check_gate({}, {"churn.production.auc": 0.7}, (t,), unevaluated={"churn": "no holdout"})
>>> r.ok, r.unevaluated
(True, ('churn',))
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Direction = Literal["higher", "lower"]


@dataclass(frozen=True)
class Threshold:
    """One gate metric."""

    metric: str
    """Name as logged to MLflow (``@`` written ``_at_``)."""
    direction: Direction = "higher"
    """Which way is better."""
    tolerance: float = 0.0
    """Largest worsening tolerated against the champion (absolute, in the metric's units)."""

    def __post_init__(self) -> None:
        if self.direction not in ("higher", "lower"):
            raise ValueError(f"gate metric {self.metric}: direction must be 'higher' or 'lower', "
                             f"not {self.direction!r}")
        if not self.tolerance >= 0:
            raise ValueError(f"gate metric {self.metric}: tolerance must be >= 0, not {self.tolerance}")

    def to_dict(self) -> dict[str, object]:
        return {"metric": self.metric, "direction": self.direction, "tolerance": self.tolerance}


DEFAULT_GATE: tuple[Threshold, ...] = (
    Threshold("recommend.all_items.production.ndcg_at_10", "higher", 0.005),
    Threshold("churn.production.auc", "higher", 0.005),
    Threshold("value.production.spearman", "higher", 0.01),
)


COMPONENT_OF = {"recommend": "recommender", "churn": "churn", "value": "value", "offers": "offers"}
"""A gate metric's component, by the first part of its name."""


def component_of(metric: str) -> str:
    """The component a metric measures: ``"churn.production.auc"`` -> ``"churn"``."""
    head = metric.split(".", 1)[0]
    return COMPONENT_OF.get(head, head)


@dataclass(frozen=True)
class GateResult:
    ok: bool
    reason: str
    failures: tuple[str, ...] = ()
    unevaluated: tuple[str, ...] = ()
    """Components whose gate metrics were not checked: the evaluation could not run them."""


def _number(metrics: Mapping[str, float] | None, name: str) -> float | None:
    """The metric as a finite float, or None when it is missing, not a number, NaN or infinite."""
    if metrics is None or metrics.get(name) is None:
        return None
    try:
        v = float(metrics[name])
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _missing(metrics: Mapping[str, float], name: str) -> str:
    if name not in metrics or metrics[name] is None:
        return f"{name} is missing on the new run"
    v = metrics[name]
    return f"{name} is {'NaN' if isinstance(v, float) and math.isnan(v) else repr(v)} on the new run"


def check_gate(new: Mapping[str, float], champion: Mapping[str, float] | None,
               thresholds: tuple[Threshold, ...], unevaluated: Mapping[str, str] | None = None) -> GateResult:
    """Pass when every gate metric is a finite number on the new run and none is worse than the champion's
    by more than its tolerance. ``champion``: the champion run's metrics, or None when there is none yet.
    A champion lacking a metric cannot be compared on it (said in the reason); the new run can.
    ``unevaluated``: components the evaluation could not run (-> why); their metrics are not checked."""
    unevaluated = unevaluated or {}
    failures, notes = [], []
    skipped = sorted({component_of(t.metric) for t in thresholds} & set(unevaluated))
    if skipped:
        notes.append(f"{', '.join(skipped)} not evaluated")
    for t in thresholds:
        if component_of(t.metric) in unevaluated:
            continue
        v = _number(new, t.metric)
        if v is None:
            failures.append(_missing(new, t.metric))
            continue
        if champion is None:
            continue
        c = _number(champion, t.metric)
        if c is None:
            notes.append(f"champion has no {t.metric}")
            continue
        if t.direction == "higher" and v < c - t.tolerance:
            failures.append(f"{t.metric} {v:.4f} < champion {c:.4f} - {t.tolerance}")
        elif t.direction == "lower" and v > c + t.tolerance:
            failures.append(f"{t.metric} {v:.4f} > champion {c:.4f} + {t.tolerance}")
    if failures:
        return GateResult(False, "; ".join(failures), tuple(failures), tuple(skipped))
    checked = [t.metric for t in thresholds if component_of(t.metric) not in unevaluated]
    if champion is None:
        reason = "no champion yet"
    elif checked:
        reason = "not worse than the champion on " + ", ".join(checked)
    else:
        reason = "no gate metric could be evaluated"
    return GateResult(True, reason + (f" ({'; '.join(notes)})" if notes else ""), (), tuple(skipped))


def unevaluated_decisions(unevaluated: Mapping[str, str], thresholds: tuple[Threshold, ...],
                          champion: Mapping[str, float] | None, champion_versions: Mapping[str, str]
                          ) -> dict[str, tuple[bool, str]]:
    """For each component the new run could not evaluate: (promote it?, why). A component whose champion
    version was evaluated on a gate metric keeps that version (an unmeasured model never replaces a measured
    one); one whose champion was not evaluated either, or that has no champion, is promoted unevaluated."""
    out: dict[str, tuple[bool, str]] = {}
    for c, why in unevaluated.items():
        measured = {t.metric: v for t in thresholds if component_of(t.metric) == c
                    and (v := _number(champion, t.metric)) is not None}
        if c in champion_versions and measured:
            shown = ", ".join(f"{m} {v:.4f}" for m, v in measured.items())
            out[c] = (False, f"{c}: not evaluated on this run ({why}); kept the champion's version "
                             f"{champion_versions[c]}, which was evaluated ({shown})")
        else:
            had = "no champion" if c not in champion_versions else "a champion that was not evaluated either"
            out[c] = (True, f"{c}: promoted without evaluation ({why}); {had} to compare with")
    return out
