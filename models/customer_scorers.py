"""Churn and value scorers that are not a LightGBM model fitted to the horizon itself: a model trained on a
shorter label window, its scores scaled to the horizon, and the naive value baselines as models. Used when the
history is too short for stacked windows of the horizon (see :mod:`training.customer_selection`).

All have the scoring interface of :class:`models.customer.ChurnModel` (``predict``, ``explain``,
``feature_importance``, ``feature_names``), described by :class:`CustomerScorer`.

Example
-------
>>> v90 = ValueModel(cfg).fit(X90, y90["future_net"])                      # doctest: +SKIP
>>> WindowScaled(v90, label_days=90, horizon_days=180).predict(X_now)     # doctest: +SKIP
>>> RecencyChurn().fit(X60, y60["churn"]).predict(X_now)                  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Protocol, Self

import numpy as np
import pandas as pd

from features.exceptions import ModelFitError, NotFittedError
from models.customer import ChurnModel, ValueModel, historical_rate_baseline, last_period_baseline, readable


class CustomerScorer(Protocol):
    """What the service and the evaluation need of a churn or value model."""

    @property
    def feature_names(self) -> list[str]: ...

    def predict(self, X: pd.DataFrame) -> pd.Series: ...

    def explain(self, X: pd.DataFrame, top: int = 3) -> dict[str, list[dict[str, Any]]]: ...

    def feature_importance(self) -> pd.Series: ...


class WindowScaled:
    """A churn or value model trained on ``label_days``-day label windows, scored for ``horizon_days``.

    Value: the expected spend times ``horizon_days / label_days`` (a constant: the ranking is the model's).
    Churn: ``P(no purchase in label_days) ** (horizon_days / label_days)``, which is P(no purchase in the
    horizon) when a customer's purchases come at a steady rate; a monotone map, so the ranking (AUC) is the
    model's, only the probability's scale is an approximation.
    """

    def __init__(self, model: ChurnModel | ValueModel | RecencyChurn, label_days: int,
                 horizon_days: int) -> None:
        if label_days <= 0 or horizon_days <= 0:
            raise ValueError(f"label_days and horizon_days must be positive: {label_days}, {horizon_days}")
        self.model, self.label_days, self.horizon_days = model, label_days, horizon_days

    @property
    def ratio(self) -> float:
        return self.horizon_days / self.label_days

    @property
    def feature_names(self) -> list[str]:
        return self.model.feature_names

    def predict(self, X: pd.DataFrame) -> pd.Series:
        p = self.model.predict(X)
        if isinstance(self.model, ValueModel):
            return p * self.ratio
        return p.clip(0.0, 1.0) ** self.ratio

    def explain(self, X: pd.DataFrame, top: int = 3) -> dict[str, list[dict[str, Any]]]:
        """The underlying model's reasons (contributions in its own units, for its ``label_days`` window)."""
        return self.model.explain(X, top)

    def feature_importance(self) -> pd.Series:
        return self.model.feature_importance()


BASELINES = ("last_period", "historical_rate")
"""The naive value baselines :class:`BaselineValue` can serve."""
_INPUTS = {"last_period": ("net_30", "net_90", "net_180"),
           "historical_rate": ("net_revenue", "purchase_age_days")}


class BaselineValue:
    """Value as a naive baseline predicts it: ``last_period`` (net spend of the last period of the horizon's
    length, :func:`models.customer.last_period_baseline`) or ``historical_rate`` (average net spend per day
    since the first purchase, times the horizon, :func:`models.customer.historical_rate_baseline`). Served
    when it ranked customers better than the models on a validation window."""

    def __init__(self, name: str, horizon_days: int) -> None:
        if name not in BASELINES:
            raise ValueError(f"unknown value baseline {name!r}: choose one of {list(BASELINES)}")
        self.name, self.horizon_days = name, horizon_days

    @property
    def feature_names(self) -> list[str]:
        return list(_INPUTS[self.name])

    def predict(self, X: pd.DataFrame) -> pd.Series:
        f = last_period_baseline if self.name == "last_period" else historical_rate_baseline
        return f(X, self.horizon_days).fillna(0.0).rename("score")

    def explain(self, X: pd.DataFrame, top: int = 3) -> dict[str, list[dict[str, Any]]]:
        """The inputs of each customer's score (a formula: no per-feature contributions)."""
        cols = self.feature_names[:top]
        f = X.reindex(columns=cols)
        return {str(cid): [{"feature": c, "contribution": None,
                            "value": None if pd.isna(row[c]) else round(float(row[c]), 3),
                            "text": f"{readable(c)} ({self.name.replace('_', ' ')} baseline)"}
                           for c in cols] for cid, row in f.iterrows()}

    def feature_importance(self) -> pd.Series:
        """No gains: nothing is learned (zeros)."""
        return pd.Series(np.zeros(len(self.feature_names)), index=self.feature_names)


class Blend:
    """A weighted mean of value scorers (all in money over the same horizon): the short-window model shrunk
    towards the naive baselines. Explained by its first (largest-weight) part."""

    def __init__(self, parts: list[tuple[CustomerScorer, float]]) -> None:
        if not parts or any(w <= 0 for _, w in parts):
            raise ValueError("a blend needs at least one part, each with a positive weight")
        total = sum(w for _, w in parts)
        self.parts = [(m, w / total) for m, w in sorted(parts, key=lambda p: -p[1])]

    @property
    def feature_names(self) -> list[str]:
        return list(dict.fromkeys(c for m, _ in self.parts for c in m.feature_names))

    def predict(self, X: pd.DataFrame) -> pd.Series:
        out = sum(w * m.predict(X).to_numpy(dtype=float) for m, w in self.parts)
        return pd.Series(out, index=X.index, name="score")

    def explain(self, X: pd.DataFrame, top: int = 3) -> dict[str, list[dict[str, Any]]]:
        return self.parts[0][0].explain(X, top)

    def feature_importance(self) -> pd.Series:
        return self.parts[0][0].feature_importance()


class RecencyChurn:
    """P(no purchase in the label window) as a non-decreasing function of the days since the last purchase:
    the recency baseline made a probability. Fitted on a label window's outcomes: the customers binned by
    recency (:attr:`bins` quantile bins), each bin's churn rate, made monotone by pooling adjacent
    violators (weighted by the bins' sizes), interpolated linearly between the bins' mean recencies and flat
    beyond them.

    A tiny strictly increasing term (``TIE_BREAK * r / (r + 1)``) keeps the recency order where the fitted
    curve is flat, so its ranking (AUC) is recency's own. Serve it for a longer horizon with
    :class:`WindowScaled`, which keeps the ranking."""

    TIE_BREAK = 1e-6
    COLUMN = "recency_days"

    def __init__(self, bins: int = 20) -> None:
        if bins < 1:
            raise ValueError(f"bins must be positive: {bins}")
        self.bins = bins
        self.knots_: np.ndarray | None = None
        self.rates_: np.ndarray | None = None

    @property
    def feature_names(self) -> list[str]:
        return [self.COLUMN]

    def fit(self, X: pd.DataFrame, churn: Any) -> Self:
        """Learn P(churn | recency) from customers' recency at a cutoff and their label window's outcome."""
        r = pd.to_numeric(X[self.COLUMN], errors="coerce").to_numpy(float)
        y = np.asarray(churn, float)
        ok = np.isfinite(r) & np.isfinite(y)
        r, y = r[ok], y[ok]
        if len(r) == 0:
            raise ModelFitError("RecencyChurn: no training rows with a recency and a label")
        edges = np.unique(np.quantile(r, np.linspace(0, 1, self.bins + 1)))
        b = np.clip(np.searchsorted(edges, r, side="right") - 1, 0, max(len(edges) - 2, 0))
        n = np.bincount(b).astype(float)
        keep = n > 0
        mean_r = (np.bincount(b, weights=r)[keep] / n[keep])
        rate = (np.bincount(b, weights=y)[keep] / n[keep])
        self.knots_, self.rates_ = mean_r, _pool_adjacent_violators(rate, n[keep])
        return self

    def predict(self, X: pd.DataFrame) -> pd.Series:
        if self.knots_ is None or self.rates_ is None:
            raise NotFittedError(type(self).__name__)
        r = pd.to_numeric(X[self.COLUMN], errors="coerce").to_numpy(float)
        r = np.where(np.isfinite(r), np.maximum(r, 0.0), float(self.knots_[-1]))  # unknown: the oldest bin
        p = np.interp(r, self.knots_, self.rates_)
        out = (1 - self.TIE_BREAK) * p + self.TIE_BREAK * r / (r + 1)
        return pd.Series(np.clip(out, 0.0, 1.0), index=X.index, name="score")

    def explain(self, X: pd.DataFrame, top: int = 3) -> dict[str, list[dict[str, Any]]]:
        """Each customer's recency (the one input; no per-feature contributions)."""
        r = X.reindex(columns=[self.COLUMN])[self.COLUMN]
        return {str(cid): [{"feature": self.COLUMN, "contribution": None,
                            "value": None if pd.isna(v) else round(float(v), 3),
                            "text": f"{readable(self.COLUMN)} (calibrated recency baseline)"}]
                for cid, v in r.items()}

    def feature_importance(self) -> pd.Series:
        """One input, no gains learned (zero)."""
        return pd.Series([0.0], index=[self.COLUMN])


def _pool_adjacent_violators(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence closest to ``y`` in weighted least squares (weights ``w``)."""
    vals: list[float] = []
    wts: list[float] = []
    sizes: list[int] = []
    for v, wt in zip(y.tolist(), w.tolist(), strict=True):
        vals.append(v)
        wts.append(wt)
        sizes.append(1)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            wsum = wts[-2] + wts[-1]
            merged = (vals[-2] * wts[-2] + vals[-1] * wts[-1]) / wsum
            size = sizes[-2] + sizes[-1]
            del vals[-1], wts[-1], sizes[-1]
            vals[-1], wts[-1], sizes[-1] = merged, wsum, size
    return np.repeat(np.array(vals), sizes)
