"""BG/NBD (Fader, Hardie and Lee 2005) and Gamma-Gamma spend models, fitted with scipy in log space.

Written here rather than taken from ``lifetimes``: that package fails to converge on Online Retail and
breaks on pandas 3. Parameters are optimised on their logarithms (so they stay positive) within bounds.

Example
-------
>>> m = BetaGeoModel().fit(x, t_x, T)          # doctest: +SKIP
>>> m.params_                                   # doctest: +SKIP
{'r': 0.243, 'alpha': 4.414, 'a': 0.793, 'b': 2.426}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1

from features import schema
from features.exceptions import ModelFitError, NotFittedError

LOG_BOUNDS = (-12.0, 12.0)


@dataclass
class BetaGeoModel:
    """BG/NBD: purchases while alive are Poisson (rate ~ Gamma(r, alpha)); after each purchase the
    customer drops out with probability p ~ Beta(a, b).

    Inputs are per customer: ``x`` repeat purchases, ``t_x`` time of the last purchase and ``T`` age,
    both measured from the first purchase, in any one time unit.
    """

    penalizer: float = 0.0
    params_: dict[str, float] | None = None

    @staticmethod
    def _negll(logp: np.ndarray, x: np.ndarray, tx: np.ndarray, T: np.ndarray, pen: float,
               inv: np.ndarray | None = None) -> float:
        """The penalised mean negative log-likelihood. ``inv``: ``x, tx, T`` are the distinct customers' rows
        and ``inv`` maps each customer to its row (each customer's term is the same number, summed in the
        customers' order as without it)."""
        r, alpha, a, b = np.exp(logp)
        a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
        a2 = betaln(a, b + x) - betaln(a, b)
        a3 = -(r + x) * np.log(alpha + T)
        with np.errstate(divide="ignore", invalid="ignore"):
            a4 = np.where(x > 0, np.log(a) - np.log(np.maximum(b + x - 1,
                                                               1e-12)) - (r + x) * np.log(alpha + tx),
                          -np.inf)
        ll = a1 + a2 + np.logaddexp(a3, a4)
        if inv is not None:
            ll = ll[inv]
        return float(-ll.sum() / len(ll) + pen * np.sum(np.exp(logp) ** 2))

    def fit(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> BetaGeoModel:
        x, tx, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
        if len(x) == 0:
            raise ModelFitError("BG/NBD needs at least one customer")
        best = None
        # customers share (x, t_x, T) rows (whole days, few purchases): each distinct row's term computed once
        rows = np.ascontiguousarray(np.stack([x, tx, T], 1)).view(np.dtype((np.void, 24))).ravel()
        _, first, inv = np.unique(rows, return_index=True, return_inverse=True)
        args = (x[first], tx[first], T[first], self.penalizer, inv.ravel())
        for start in (np.log([0.5, max(T.mean(), 1e-3), 1.0, 1.0]), np.zeros(4)):
            res = minimize(self._negll, start, args=args, method="L-BFGS-B", bounds=[LOG_BOUNDS] * 4)
            if best is None or res.fun < best.fun:
                best = res
        assert best is not None
        if not np.all(np.isfinite(best.x)):
            raise ModelFitError("BG/NBD: non-finite parameters")
        self.params_ = dict(zip(("r", "alpha", "a", "b"), map(float, np.exp(best.x)), strict=True))
        self.loglik_ = -best.fun * len(x)
        return self

    def _p(self) -> tuple[float, float, float, float]:
        if self.params_ is None:
            raise NotFittedError("BetaGeoModel")
        p = self.params_
        return p["r"], p["alpha"], p["a"], p["b"]

    def p_alive(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        r, alpha, a, b = self._p()
        x, tx, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
        with np.errstate(divide="ignore", over="ignore"):
            log_term = (
                np.log(a)
                - np.log(np.maximum(b + x - 1, 1e-12))
                + (r + x) * (np.log(alpha + T) - np.log(alpha + tx))
            )
        return np.where(x > 0, 1.0 / (1.0 + np.exp(np.minimum(log_term, 700))), 1.0)

    def expected_purchases(self, t: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """Expected number of purchases in the next ``t`` time units, given the history."""
        r, alpha, a, b = self._p()
        x, tx, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
        hyp = hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t))
        first = (a + b + x - 1) / (a - 1) if abs(a - 1) > 1e-9 else np.full_like(x, 1e6)
        num = first * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp)
        with np.errstate(divide="ignore", over="ignore"):
            odds = np.where(x > 0,
                            (a / np.maximum(b + x - 1, 1e-12)) * ((alpha + T) / (alpha + tx)) ** (r + x), 0.0)
        out = num / (1 + odds)
        return np.nan_to_num(np.clip(out, 0, None), nan=0.0, posinf=0.0)


@dataclass
class GammaGammaModel:
    """Gamma-Gamma model of average spend per transaction (Fader, Hardie and Lee 2005)."""

    penalizer: float = 0.0
    params_: dict[str, float] | None = None

    @staticmethod
    def _negll(logp: np.ndarray, x: np.ndarray, m: np.ndarray, pen: float) -> float:
        p, q, v = np.exp(logp)
        ll = (gammaln(p * x + q) - gammaln(p * x) - gammaln(q) + q * np.log(v) + (p * x - 1) * np.log(m)
              + (p * x) * np.log(x) - (p * x + q) * np.log(x * m + v))
        return float(-ll.sum() / len(x) + pen * np.sum(np.exp(logp) ** 2))

    def fit(self, x: np.ndarray, monetary: np.ndarray) -> GammaGammaModel:
        x, m = np.asarray(x, float), np.asarray(monetary, float)
        keep = (x > 0) & (m > 0)
        if keep.sum() < 3:
            raise ModelFitError("Gamma-Gamma needs at least 3 repeat customers with positive spend")
        res = minimize(self._negll, np.log([1.0, 1.0, max(m[keep].mean(), 1.0)]),
                       args=(x[keep], m[keep], self.penalizer), method="L-BFGS-B",
                       bounds=[LOG_BOUNDS, LOG_BOUNDS, (-12.0, 20.0)])
        self.params_ = dict(zip(("p", "q", "v"), map(float, np.exp(res.x)), strict=True))
        return self

    def expected_spend(self, x: np.ndarray, monetary: np.ndarray) -> np.ndarray:
        if self.params_ is None:
            raise NotFittedError("GammaGammaModel")
        p, q, v = self.params_["p"], self.params_["q"], self.params_["v"]
        x, m = np.asarray(x, float), np.nan_to_num(np.asarray(monetary, float))
        pop_mean = p * v / (q - 1) if q > 1 else np.nan
        est = (v + x * np.maximum(m, 0)) * p / (p * x + q - 1)
        return np.where(x > 0, est, pop_mean)


def rfm_summary(orders: pd.DataFrame, cutoff: pd.Timestamp, unit_days: float = 7.0) -> pd.DataFrame:
    """Per-customer (x, t_x, T, monetary) from orders with columns customer_id, ts, value.

    Purchases on the same day count once (the BG/NBD convention); ``monetary`` is the mean value of
    repeat purchase days. Grouped on integer codes of the customer ids and days (ids are hashed once).
    """
    cust, uniq = pd.factorize(orders[schema.CUSTOMER_ID])
    uniq = np.asarray(uniq, dtype=object)
    rank = np.empty(len(uniq), np.int64)
    rank[np.argsort(uniq, kind="stable")] = np.arange(len(uniq))
    day = orders["ts"].dt.floor("D")
    ok = (cust >= 0) & day.notna().to_numpy()
    dayv = day.to_numpy()[ok]
    dnum = dayv.view(np.int64) // (86_400 * 10**9) if dayv.dtype == "datetime64[ns]" else (
        dayv.astype("datetime64[D]").view(np.int64))
    lo = int(dnum.min(initial=0))
    width = int(dnum.max(initial=0)) - lo + 1
    per_day = (
        pd.Series(orders["value"].to_numpy(float)[ok]).groupby(rank[cust[ok]] * width + (dnum - lo)).sum()
    )
    c, d = np.divmod(per_day.index.to_numpy(), width)  # sorted by customer, then day
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]]) if len(c) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(c)] - 1
    values = per_day.to_numpy()
    days = (d + lo).astype("datetime64[D]").astype(dayv.dtype)
    index = pd.Index(uniq[np.argsort(uniq, kind="stable")][c[starts]], name=schema.CUSTOMER_ID)
    first, last = pd.Series(days[starts], index=index), pd.Series(days[ends], index=index)
    n = pd.Series(ends - starts + 1, index=index)
    total = pd.Series(pd.Series(values).groupby(np.repeat(np.arange(len(starts)),
                                                          ends - starts + 1), sort=False)
                      .sum().to_numpy(), index=index)
    first_val = pd.Series(values[starts], index=index)
    x = n - 1
    monetary = ((total - first_val) / x.replace(0, np.nan)).fillna(0.0)
    return pd.DataFrame({
        "x": x.astype(float),
        "t_x": (last - first) / pd.Timedelta(days=unit_days),
        "T": (pd.Timestamp(cutoff).floor("D") - first) / pd.Timedelta(days=unit_days),
        "monetary": monetary,
    })


RFM_FEATURES = ("purchase_days", "recency_days", "purchase_age_days", "avg_order_value")
"""The customer-feature columns :class:`BGNBDCustomerModel` reads (days with a purchase, days since the last
and the first purchase, mean order value)."""


def p_no_purchase(bg: BetaGeoModel, horizon_days: int, x: Any, t_x: Any,
                  T: Any) -> tuple[np.ndarray, np.ndarray]:
    """P(no purchase in the next ``horizon_days``) and the purchases expected in them:
    P(dead) + P(alive) * Poisson(0 | purchases expected while alive)."""
    p_alive = np.asarray(bg.p_alive(x, t_x, T), float)
    n = np.asarray(bg.expected_purchases(horizon_days / 7.0, x, t_x, T), float)
    return (1 - p_alive) + p_alive * np.exp(-n / np.maximum(p_alive, 1e-9)), n


class BGNBDCustomerModel:
    """Churn (P(no purchase in H)) or value (expected purchases x Gamma-Gamma spend) from BG/NBD on the RFM
    columns of customer features: the fallback when the history is too short for the stacked LightGBM
    models. Same scoring interface as they have (``predict``, ``explain``, ``feature_importance``)."""

    def __init__(self, bg: BetaGeoModel, gg: GammaGammaModel | None, horizon_days: int, kind: str,
                 reason: str = "") -> None:
        if kind not in ("churn", "value"):
            raise ValueError(f"kind must be 'churn' or 'value', not {kind!r}")
        self.bg, self.gg, self.horizon_days, self.kind, self.reason = bg, gg, horizon_days, kind, reason

    @property
    def feature_names(self) -> list[str]:
        return list(RFM_FEATURES)

    def _rfm(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        f = X.reindex(columns=list(RFM_FEATURES)).apply(pd.to_numeric, errors="coerce").fillna(0.0)
        age = f["purchase_age_days"].to_numpy(float)
        x = np.maximum(f["purchase_days"].to_numpy(float) - 1, 0)
        t_x = np.clip(age - f["recency_days"].to_numpy(float), 0, None) / 7.0
        return x, t_x, age / 7.0, np.maximum(f["avg_order_value"].to_numpy(float), 0)

    def predict(self, X: pd.DataFrame) -> pd.Series:
        x, t_x, T, m = self._rfm(X)
        p_none, n = p_no_purchase(self.bg, self.horizon_days, x, t_x, T)
        if self.kind == "churn":
            out = p_none
        else:
            spend = np.asarray(self.gg.expected_spend(x, m), float) if self.gg is not None else m
            out = np.nan_to_num(n * spend)
        return pd.Series(out, index=X.index, name="score")

    def explain(self, X: pd.DataFrame, top: int = 3) -> dict[str, list[dict[str, Any]]]:
        """The RFM inputs of each customer's score (BG/NBD has no per-feature contributions)."""
        f = X.reindex(columns=list(RFM_FEATURES))
        return {str(cid): [{"feature": c, "contribution": None,
                            "value": None if pd.isna(row[c]) else round(float(row[c]), 3),
                            "text": f"{c} (BG/NBD fallback: {self.reason or 'short history'})"}
                           for c in list(RFM_FEATURES)[:top]] for cid, row in f.iterrows()}

    def feature_importance(self) -> pd.Series:
        """No gains: every RFM input is used, none is learned from (zeros)."""
        return pd.Series(0.0, index=list(RFM_FEATURES))
