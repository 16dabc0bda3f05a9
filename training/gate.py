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


@dataclass(frozen=True)
class GateResult:
    ok: bool
    reason: str
    failures: tuple[str, ...] = ()


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
               thresholds: tuple[Threshold, ...]) -> GateResult:
    """Pass when every gate metric is a finite number on the new run and none is worse than the champion's
    by more than its tolerance. ``champion``: the champion run's metrics, or None when there is none yet.
    A champion lacking a metric cannot be compared on it (said in the reason); the new run can."""
    failures, notes = [], []
    for t in thresholds:
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
        return GateResult(False, "; ".join(failures), tuple(failures))
    if champion is None:
        return GateResult(True, "no champion yet")
    reason = "not worse than the champion on " + ", ".join(t.metric for t in thresholds)
    return GateResult(True, reason + (f" ({'; '.join(notes)})" if notes else ""))
