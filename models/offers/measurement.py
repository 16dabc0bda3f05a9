"""Measurement of offers: measured uplift (treatment vs control, with an interval), the Qini/AUUC of an
uplift ranking, and off-policy estimates of a new policy from logs with known propensities (IPS and doubly
robust, with bootstrap intervals).

Example
-------
>>> log = pd.DataFrame({"campaign_id": "a", "group": ["treatment", "control"] * 50,
...                     "converted": [1, 0, 0, 0] * 25})
>>> measure_uplift(log)[["campaign_id", "treated", "control", "uplift"]].values.tolist()
[['a', 50, 50, 0.5]]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.schema import CAMPAIGN_ID, CUSTOMER_ID, GROUP, SENT_AT


def measure_uplift(log: pd.DataFrame, by: list[str] | None = None, z: float = 1.96) -> pd.DataFrame:
    """Treatment vs control outcome rates with a normal-approximation confidence interval.

    ``log`` needs ``group`` and ``converted`` (0/1) plus the ``by`` columns (e.g. campaign_id, segment).
    With ``customer_id`` in ``log``, a customer's control rows of one send (same ``sent_at``, when given)
    within one ``by`` group count as one control observation with their mean outcome: a shared control (one
    control group for several offers of a campaign, written as one control row per offer) is counted once per
    customer, not once per offer, which would halve the control variance and narrow the interval. Treatment
    rows are each their own observation.
    """
    by = by or [CAMPAIGN_ID]
    ctrl_rows = log[GROUP] == "control"
    same = [c for c in (CUSTOMER_ID, SENT_AT) if c in log.columns]
    if CUSTOMER_ID in same and ctrl_rows.any():
        per = log[ctrl_rows].groupby([*by, *same], dropna=False, observed=True, sort=False)["converted"]
        once = per.mean().reset_index().assign(**{GROUP: "control"})
        log = pd.concat([log.loc[~ctrl_rows, [*by, GROUP, "converted"]], once[[*by, GROUP, "converted"]]],
                        ignore_index=True)
    rows = []
    for key, g in log.groupby(by):
        t = g.loc[g[GROUP] == "treatment", "converted"].astype(float)
        c = g.loc[g[GROUP] == "control", "converted"].astype(float)
        if not len(t) or not len(c):
            continue
        d = t.mean() - c.mean()
        se = np.sqrt(t.mean() * (1 - t.mean()) / len(t) + c.mean() * (1 - c.mean()) / len(c))
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key, strict=True)), "treated": len(t), "control": len(c),
                     "rate_treated": t.mean(), "rate_control": c.mean(), "uplift": d,
                     "ci_low": d - z * se, "ci_high": d + z * se})
    return pd.DataFrame(rows)


def qini(uplift_score: np.ndarray, treated: np.ndarray, converted: np.ndarray,
         weight: np.ndarray | None = None) -> dict[str, float]:
    """Qini coefficient and AUUC of an uplift ranking (higher is better; random ~ 0 for Qini).

    ``weight`` (default 1 per row) lets one observation appear in several rows: a shared control customer
    is a control row of every offer, each weighted by one over the number of its rows
    (:func:`shared_control_weights`), so the pooled curve counts that customer once."""
    s, t, y = np.asarray(uplift_score, float), np.asarray(treated, bool), np.asarray(converted, float)
    w = np.ones(len(s)) if weight is None else np.asarray(weight, float)
    order = np.argsort(-s, kind="stable")
    t, y, w = t[order], y[order], w[order]
    nt, nc = np.cumsum(w * t), np.cumsum(w * ~t)
    yt, yc = np.cumsum(w * y * t), np.cumsum(w * y * ~t)
    seen = np.cumsum(w)
    total = seen[-1] if len(seen) else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        q = yt - np.where(nc > 0, yc * nt / nc, 0)
        uplift_curve = np.where((nt > 0) & (nc > 0), yt / nt - yc / nc, 0) * seen
    random_line = q[-1] * seen / total
    return {"qini": float(((q - random_line) * w).sum() / total / max(abs(q[-1]), 1e-9)),
            "auuc": float((uplift_curve * w).sum() / total / total)}


def shared_control_weights(sends: pd.DataFrame, customer: str, sent_at: str, treated: str = "treated"
                           ) -> np.ndarray:
    """One over the number of control rows a customer has at one send time (a shared control is a control
    row of each offer it is the control of); treated rows weigh 1."""
    t = sends[treated].to_numpy(bool)
    keys = [sends[customer].to_numpy(), sends[sent_at].to_numpy()]
    n = pd.Series((~t).astype(float)).groupby(keys, sort=False).transform("sum").to_numpy()
    return np.where(t, 1.0, 1.0 / np.maximum(n, 1.0))


def ips(reward: np.ndarray, match: np.ndarray, propensity: np.ndarray) -> np.ndarray:
    """Per-row inverse-propensity terms for a deterministic target policy (``match``: it picks the logged
    action)."""
    return np.asarray(match, float) * np.asarray(reward, float) / np.asarray(propensity, float)


def doubly_robust(reward: np.ndarray, weight: np.ndarray, propensity: np.ndarray | float,
                  q_logged: np.ndarray, q_target: np.ndarray) -> np.ndarray:
    """Per-row DR terms: the reward model's value of the target policy plus the importance-weighted residual
    of the logged action. ``weight`` is pi(a|x) (or a 0/1 match for a deterministic policy)."""
    w = np.asarray(weight, float) / np.asarray(propensity, float)
    return np.asarray(q_target, float) + w * (np.asarray(reward, float) - np.asarray(q_logged, float))


def mean_ci(terms: np.ndarray, n_boot: int = 500, seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """Mean with a bootstrap percentile interval."""
    t = np.asarray(terms, float)
    rng = np.random.default_rng(seed)
    boots = np.array([t[rng.integers(0, len(t), len(t))].mean() for _ in range(n_boot)])
    a = (1 - level) / 2
    return {"estimate": float(t.mean()), "ci_low": float(np.quantile(boots, a)),
            "ci_high": float(np.quantile(boots, 1 - a))}
