"""Each campaign's own purchase baseline, as a log-odds offset for the uplift model's outcome trees.

A campaign's outcome is "bought in the window after the send". Campaigns go out in different seasons (a
holiday peak, a quiet month), so the same customer's P(order) differs from one campaign to the next for
reasons no customer feature records, and a model fitted on several campaigns mixes that into what it learns
about customers and about the offer's effect. Every randomised campaign measures its own baseline: its
control group's purchase rate. :func:`campaign_offsets` turns it into a per-campaign shift in log-odds:

1. the customer mix is taken out: a model of P(order) from the customer features alone (no campaign, no
   offer, no treatment: fitted by the caller) predicts each control row; the campaign's shift ``d`` is what
   makes those predictions average the control group's observed rate, ``mean(sigmoid(logit p_i + d)) =
   rate`` (a campaign whose customers are mostly lapsed is not given a low season for it);
2. each shift is shrunk towards their mean by its sampling error (a control group of a few hundred rows
   measures its rate to a tenth or so): ``d_c <- mean + (d_c - mean) tau^2 / (tau^2 + se_c^2)``, with the
   between-campaign variance ``tau^2`` estimated from the shifts themselves (method of moments);
3. the shifts are centred on the rows (the average training row's shift is 0), so a prediction without a
   shift is one for a campaign of average season.

``segments`` (optional, one label per row): a season need not move every customer alike (a promotion
weekend brings back the discount-responsive customers more than the others); with segments the shifts are
measured, shrunk and centred per campaign within each segment, each segment on its own.

Only control rows are read, so a campaign's offer effect never moves its baseline. A single campaign, or
campaigns sharing one control group (the same rate), give no shifts at all (an empty dict): nothing to
separate.

Example
-------
>>> campaign_offsets(p_mix, campaign_ids, treated, bought)       # doctest: +SKIP
{'camp00': -0.21, 'camp01': 0.05, ...}
"""

from __future__ import annotations

from typing import Any

import numpy as np

EPS = 1e-6
TOL = 1e-9
"""Shifts all within this of 0 are none: the campaigns' baselines are the same."""


def logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, float), EPS, 1 - EPS)
    return np.log(q / (1 - q))  # type: ignore[no-any-return]


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, float)))  # type: ignore[no-any-return]


def _shift(z: np.ndarray, rate: float) -> tuple[float, float]:
    """The log-odds shift ``d`` with ``mean(sigmoid(z + d)) = rate`` (Newton), and its sampling variance
    ``1 / sum(q (1 - q))`` (the inverse Fisher information of a common shift)."""
    d = 0.0
    for _ in range(100):
        q = sigmoid(z + d)
        h = float((q * (1 - q)).mean())
        step = (float(q.mean()) - rate) / max(h, EPS)
        d = float(np.clip(d - step, -10.0, 10.0))
        if abs(step) < 1e-12:
            break
    q = sigmoid(z + d)
    return d, 1.0 / max(float((q * (1 - q)).sum()), EPS)


def campaign_offsets(p_mix: np.ndarray, campaigns: Any, treated: Any, bought: Any, segments: Any = None
                     ) -> dict[str, float]:
    """Per campaign with a control group, its baseline shift in log-odds (module docstring); empty when
    fewer than two campaigns have one or their shifts do not differ beyond their sampling error.

    ``p_mix``: each row's P(order) from the customer features alone; ``campaigns``, ``treated``,
    ``bought``: each row's campaign, group and outcome; ``segments``: each row's segment, the shifts then
    keyed ``campaign|segment`` (:func:`segment_key`)."""
    camp = np.asarray(campaigns, dtype=object).astype(str)
    t = np.asarray(treated, bool)
    y = np.asarray(bought, float)
    z = logit(p_mix)
    if segments is None:
        return _offsets(z, camp, t, y)
    seg = np.asarray(segments, dtype=object).astype(str)
    out: dict[str, float] = {}
    for g in sorted(set(seg.tolist())):
        m = seg == g
        out.update({segment_key(c, g): d for c, d in _offsets(z[m], camp[m], t[m], y[m]).items()})
    return out


def segment_key(campaign: Any, segment: Any) -> str:
    return f"{campaign}|{segment}"


def _offsets(z: np.ndarray, camp: np.ndarray, t: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """:func:`campaign_offsets` of one set of rows (``z``: the mix's log-odds)."""
    names, est, var, rows = [], [], [], []
    for c in sorted(set(camp[~t].tolist())):
        m = (camp == c) & ~t
        n = int(m.sum())
        rate = float(np.clip(y[m].mean(), 0.5 / n, 1 - 0.5 / n))  # half a buyer: never an infinite shift
        d, v = _shift(z[m], rate)
        names.append(c)
        est.append(d)
        var.append(v)
        rows.append(int((camp == c).sum()))
    if len(names) < 2:
        return {}
    d_arr, v_arr, n_arr = np.array(est), np.array(var), np.array(rows, float)
    mean = float(d_arr.mean())
    tau2 = max(0.0, float(d_arr.var(ddof=1)) - float(v_arr.mean()))
    shrunk = mean + (d_arr - mean) * (tau2 / (tau2 + v_arr))
    shrunk -= float((shrunk * n_arr).sum() / n_arr.sum())
    if np.abs(shrunk).max() < TOL:
        return {}
    return {c: float(s) for c, s in zip(names, shrunk, strict=True)}


def row_offsets(offsets: dict[str, float], campaigns: Any, segments: Any = None) -> np.ndarray:
    """Each row's shift (0 for a campaign without one)."""
    camp = np.asarray(campaigns, dtype=object).astype(str)
    if segments is not None:
        seg = np.asarray(segments, dtype=object).astype(str)
        camp = np.array([segment_key(c, g) for c, g in zip(camp.tolist(), seg.tolist(), strict=True)],
                        dtype=object)
    return np.array([offsets.get(c, 0.0) for c in camp.tolist()], float)
