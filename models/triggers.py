"""Triggers the CRM engine can act on, computed for a time interval ``(since, until]``.

Every trigger has an occurrence time; it fires in the one interval that contains that time, so running
the detector over consecutive intervals fires each occurrence exactly once.

Input ``lines`` are customer order lines with columns customer_id, order_id, ts, quantity, net
(see :func:`features.customer.order_lines`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class TriggerConfig:
    spend_jump_factor: float = 1.5
    """An order above this multiple of the customer's average of earlier orders fires spend_jump."""
    spend_jump_min_orders: int = 2
    dormancy_factor: float = 2.5
    """Dormancy line: this multiple of the customer's usual gap between orders ..."""
    dormancy_days: float = 120.0
    """... or this fixed line for customers without a usual gap (a single order)."""
    churn_threshold: float = 0.6
    high_value_return: float = 100.0
    """A return worth at least this much fires high_value_return."""
    dormancy_lookback_days: float = 30.0
    """The live scan fires dormancy only for lines crossed within this many days before the scan: a customer
    who went quiet years ago is not news (the batch triggers of training cover the past)."""

    def to_params(self) -> dict[str, Any]:
        return {f"triggers.{k}": v for k, v in asdict(self).items()}


def _orders(lines: pd.DataFrame) -> pd.DataFrame:
    """Purchase orders (lines with quantity > 0): first time and net value, sorted by customer, time and order
    id. Grouped on integer codes of the ids (hashed once), not on the strings."""
    buys = lines[lines["quantity"] > 0]
    cust, cu = pd.factorize(buys["customer_id"])
    order, ou = pd.factorize(buys["order_id"])
    ok = (cust >= 0) & (order >= 0)
    pair = cust[ok].astype(np.int64) * max(len(ou), 1) + order[ok]
    when = buys["ts"].to_numpy()
    g = pd.DataFrame({"ts": when[ok].view(np.int64),
                      "value": buys["net"].to_numpy(float)[ok]}).groupby(pair, sort=False).agg(
        ts=("ts", "min"), value=("value", "sum"))
    c, k = np.divmod(g.index.to_numpy(), max(len(ou), 1))
    cu, ou = np.asarray(cu, dtype=object), np.asarray(ou, dtype=object)
    rank_c, rank_o = _ranks(cu), _ranks(ou)
    ts = g["ts"].to_numpy()
    srt = np.lexsort((rank_o[k], ts, rank_c[c]))
    return pd.DataFrame({"customer_id": cu[c[srt]], "order_id": ou[k[srt]], "ts": ts[srt].view(when.dtype),
                         "value": g["value"].to_numpy()[srt]})


def _ranks(values: np.ndarray) -> np.ndarray:
    r = np.empty(len(values), np.int64)
    r[np.argsort(values, kind="stable")] = np.arange(len(values))
    return r


def _mean_of_earlier(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per row, the mean of the earlier rows of its group (NaN for a group's first row): exactly what
    ``groupby(...).transform(lambda s: s.shift().expanding().mean())`` gives (pandas' compensated running sum
    and its rule for runs of equal values), computed for all groups at once, one position at a time."""
    n = len(values)
    lengths = np.diff(np.r_[starts, n])
    by_len = np.argsort(-lengths, kind="stable")  # the groups still running at position k are a prefix
    first, lens = starts[by_len], lengths[by_len]
    G = len(starts)
    nobs, neg, consec = np.zeros(G, np.int64), np.zeros(G, np.int64), np.zeros(G, np.int64)
    total, comp, prev = np.zeros(G), np.zeros(G), np.full(G, np.nan)
    out = np.full(n, np.nan)
    for k in range(int(lens.max(initial=0))):
        a = int(np.searchsorted(-lens, -k, side="left"))  # groups longer than k
        nb, t = nobs[:a], total[:a]
        with np.errstate(invalid="ignore", divide="ignore"):
            res = t / nb
        res = np.where(consec[:a] >= nb, prev[:a], np.where(
            (neg[:a] == 0) & (res < 0), 0.0, np.where((neg[:a] == nb) & (res > 0), 0.0, res)))
        out[first[:a] + k] = np.where(nb > 0, res, np.nan)
        v = values[first[:a] + k]
        ok = ~np.isnan(v)
        y = v - comp[:a]
        s = t + y
        comp[:a] = np.where(ok, (s - t) - y, comp[:a])
        total[:a] = np.where(ok, s, t)
        neg[:a] += ok & (v < 0)
        consec[:a] = np.where(ok, np.where(v == prev[:a], consec[:a] + 1, 1), consec[:a])
        prev[:a] = np.where(ok, v, prev[:a])
        nobs[:a] += ok
    return out


def detect_triggers(lines: pd.DataFrame, since: pd.Timestamp, until: pd.Timestamp,
                    config: TriggerConfig | None = None, churn_before: pd.Series | None = None,
                    churn_now: pd.Series | None = None) -> pd.DataFrame:
    """Triggers whose occurrence falls in ``(since, until]``; only data up to ``until`` is read.

    Returns columns customer_id, trigger, at, detail (one row per occurrence).
    """
    cfg = config or TriggerConfig()
    since, until = pd.Timestamp(since), pd.Timestamp(until)
    lines = lines.loc[lines["ts"] <= until, ["customer_id", "order_id", "ts", "quantity", "net"]]
    o = _orders(lines)
    cust = o["customer_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, cust[1:] != cust[:-1]]) if len(o) else np.zeros(0, np.int64)
    rows = [*_order_triggers(o, starts, since, until, cfg), _dormancy(o, starts, since, until, cfg),
            _high_value_returns(lines, since, cfg)]
    if churn_now is not None:
        rows.append(_churn_crossings(churn_before, churn_now, until, cfg))
    out = (pd.concat([r for r in rows if len(r)], ignore_index=True) if any(len(r) for r in rows)
           else pd.DataFrame(columns=["customer_id", "trigger", "at", "detail"]))
    out["at"] = pd.to_datetime(out["at"])
    return out.sort_values(["at", "customer_id", "trigger"], kind="stable").reset_index(drop=True)


def _order_triggers(o: pd.DataFrame, starts: np.ndarray, since: pd.Timestamp, until: pd.Timestamp,
                    cfg: TriggerConfig) -> list[pd.DataFrame]:
    """spend_jump and first_purchase for the orders ``o`` (:func:`_orders`; ``starts``: each customer's first
    row) placed in ``(since, until]``."""
    in_win = (o["ts"] > since) & (o["ts"] <= until)
    n_before = pd.Series(np.arange(len(o)) - np.repeat(starts, np.diff(np.r_[starts, len(o)])), index=o.index)
    prev_mean = pd.Series(_mean_of_earlier(o["value"].to_numpy(float), starts), index=o.index)
    jump = in_win & (n_before >= cfg.spend_jump_min_orders) & (o["value"] > cfg.spend_jump_factor * prev_mean)
    first = in_win & (n_before == 0)
    return [pd.DataFrame({"customer_id": o.loc[jump, "customer_id"], "trigger": "spend_jump",
                          "at": o.loc[jump, "ts"],
                          "detail": [f"order {oid} worth {v:.2f} vs average {m:.2f}" for oid, v, m in
                                     zip(o.loc[jump, "order_id"], o.loc[jump, "value"],
                                         prev_mean[jump], strict=True)]}),
            pd.DataFrame({"customer_id": o.loc[first, "customer_id"], "trigger": "first_purchase",
                          "at": o.loc[first, "ts"],
                          "detail": "first order " + o.loc[first, "order_id"].astype(str)})]


def _dormancy(o: pd.DataFrame, starts: np.ndarray, since: pd.Timestamp, until: pd.Timestamp,
              cfg: TriggerConfig) -> pd.DataFrame:
    """dormancy: the moment the silence since a customer's last order crosses the customer's line, when
    that moment is in ``(since, until]``."""
    cust = o["customer_id"].to_numpy()
    ts = o["ts"].to_numpy()
    gap = np.full(len(o), np.nan)
    if len(o):
        gap[1:] = (ts[1:] - ts[:-1]) / np.timedelta64(1, "D")
        gap[starts] = np.nan
    who = pd.Index(cust[starts])  # sorted customer ids
    usual = pd.Series(pd.Series(gap).groupby(np.repeat(np.arange(len(starts)),
                                                       np.diff(np.r_[starts, len(o)])),
                                             sort=False).mean().to_numpy(), index=who)
    last = pd.Series(ts[np.r_[starts[1:], len(o)] - 1] if len(o) else ts, index=who)
    line_days = (usual * cfg.dormancy_factor).reindex(last.index)
    line_days = line_days.where(line_days.notna() & (line_days > 0), cfg.dormancy_days)
    cross = last + pd.to_timedelta(line_days, unit="D")
    dorm = (cross > since) & (cross <= until)
    return pd.DataFrame({"customer_id": cross.index[dorm], "trigger": "dormancy",
                         "at": cross[dorm].to_numpy(),
                         "detail": [f"no order for {d:.0f} days (line {d:.0f})" for d in line_days[dorm]]})


def _high_value_returns(lines: pd.DataFrame, since: pd.Timestamp, cfg: TriggerConfig) -> pd.DataFrame:
    """high_value_return: returns after ``since`` worth at least the threshold, one per order."""
    rets = lines[(lines["quantity"] < 0) & (lines["ts"] > since)]
    rv = (-rets.groupby(["customer_id", "order_id"])["net"].sum()).reset_index()
    rts = rets.groupby(["customer_id", "order_id"])["ts"].min().reset_index(drop=True)
    rv["at"] = rts.to_numpy()
    big = rv[rv["net"] >= cfg.high_value_return]
    return pd.DataFrame({"customer_id": big["customer_id"], "trigger": "high_value_return",
                         "at": big["at"],
                         "detail": [f"returned {v:.2f} in {oid}"
                                    for v, oid in zip(big["net"], big["order_id"], strict=True)]})


def _churn_crossings(churn_before: pd.Series | None, churn_now: pd.Series, until: pd.Timestamp,
                     cfg: TriggerConfig) -> pd.DataFrame:
    """churn_risk: customers whose churn probability crossed the threshold upwards, dated ``until``."""
    before = (
        (churn_before if churn_before is not None else pd.Series(0.0, index=churn_now.index))
        .reindex(churn_now.index)
        .fillna(0.0)
    )
    up = (before < cfg.churn_threshold) & (churn_now >= cfg.churn_threshold)
    return pd.DataFrame({"customer_id": churn_now.index[up], "trigger": "churn_risk", "at": until,
                         "detail": [f"churn risk {p:.2f} crossed {cfg.churn_threshold}"
                                    for p in churn_now[up]]})


@dataclass(frozen=True)
class RunningState:
    """A customer's running order state: what the last training computed, moved on by live orders."""

    n_orders: int = 0
    avg_order_value: float = 0.0
    """Mean net value of the customer's orders (0 without orders)."""
    net_spend: float = 0.0
    last_purchase: pd.Timestamp | None = None


def order_triggers(before: RunningState, order_id: str, order_value: float, new_order: bool,
                   returned_value: float, config: TriggerConfig | None = None) -> list[tuple[str, str]]:
    """Triggers one live order fires, as (kind, detail): the event-time twin of :func:`detect_triggers`.

    ``order_value``: net value of the order's purchase lines (quantity > 0); ``new_order``: the order was not
    seen before (more lines of a known order fire nothing new); ``returned_value``: net value of its return
    lines (negative quantities), a positive number.

    >>> order_triggers(RunningState(3, 95.0), "O1", 240.0, True, 0.0)
    [('spend_jump', 'order O1 value 240.00 vs average 95.00 over 3 orders')]
    """
    cfg = config or TriggerConfig()
    out: list[tuple[str, str]] = []
    if new_order and order_value > 0:
        if before.n_orders == 0:
            out.append(("first_purchase", f"first order {order_id} value {order_value:.2f}"))
        elif (before.n_orders >= cfg.spend_jump_min_orders
              and order_value > cfg.spend_jump_factor * before.avg_order_value):
            out.append(("spend_jump", f"order {order_id} value {order_value:.2f} vs average "
                                      f"{before.avg_order_value:.2f} over {before.n_orders} orders"))
    if returned_value >= cfg.high_value_return:
        out.append(("high_value_return", f"return on order {order_id} worth {returned_value:.2f} "
                                         f"(threshold {cfg.high_value_return:.2f})"))
    return out


DORMANCY, CHURN_RISK = "dormancy", "churn_risk"
HIGH, BELOW, ACTIVE = "high", "below", "active"
"""Churn bands: ``high`` (score at or above ``churn_threshold``), ``below``, and ``active`` (ordered since the
scores were computed, so the score is stale)."""


def dormancy_due(last_purchase: pd.Series, usual_gap_days: pd.Series, now: pd.Timestamp,
                 config: TriggerConfig | None = None) -> pd.DataFrame:
    """Customers whose silence since their last purchase crossed their own dormancy line in
    ``(now - dormancy_lookback_days, now]``.

    The line is ``dormancy_factor`` x the customer's usual gap between orders (``usual_gap_days``, the mean
    inter-purchase time the last training computed), or ``dormancy_days`` where there is no usual gap (one
    order, or a customer the training did not see). ``last_purchase``: per customer (index), its time.
    Returns columns customer_id, last_purchase, line_days, gap_days, at (when the line was crossed), detail.

    >>> due = dormancy_due(pd.Series({"C1": pd.Timestamp("2026-01-01")}), pd.Series({"C1": 20.0}),
    ...                    pd.Timestamp("2026-02-20"))
    >>> str(due.loc[0, "at"]), float(due.loc[0, "line_days"])
    ('2026-02-20 00:00:00', 50.0)
    """
    cfg = config or TriggerConfig()
    now = pd.Timestamp(now)
    last = pd.to_datetime(last_purchase.dropna())
    gap = pd.to_numeric(usual_gap_days.reindex(last.index), errors="coerce").astype(float)
    line = (gap * cfg.dormancy_factor).where(gap.notna() & (gap > 0), cfg.dormancy_days)
    at = last + pd.to_timedelta(line.to_numpy(), unit="D")
    due = (at <= now) & (at > now - pd.Timedelta(days=cfg.dormancy_lookback_days))
    last, line, gap, at = last[due], line[due], gap[due], at[due]
    usual = [f"{cfg.dormancy_factor:g} x usual gap {g:.1f} days" if g == g and g > 0
             else "no usual gap: fixed" for g in gap]
    detail = [f"no order since {lp:%Y-%m-%d} ({(now - lp).days} days): line {ld:.1f} days ({u})"
              for lp, ld, u in zip(last, line, usual, strict=True)]
    return pd.DataFrame({"customer_id": last.index.astype(str), "last_purchase": last.to_numpy(),
                         "line_days": line.to_numpy(), "gap_days": gap.to_numpy(), "at": at.to_numpy(),
                         "detail": detail})


def churn_bands(score: pd.Series, active: pd.Series, config: TriggerConfig | None = None) -> pd.Series:
    """Each customer's churn band: ``active`` where ``active`` (ordered since the scores), else ``high`` at or
    above ``churn_threshold``, else ``below``."""
    cfg = config or TriggerConfig()
    band = pd.Series(np.where(score.to_numpy(float) >= cfg.churn_threshold, HIGH, BELOW), index=score.index)
    return band.where(~active.reindex(score.index).fillna(False).astype(bool), ACTIVE)


def churn_band_rises(before: pd.Series, now: pd.Series) -> pd.Index:
    """Customers whose band rose into ``high``: recorded before in another band (a customer without a
    record has no "before": the first scan records a baseline and fires nothing)."""
    prev = before.reindex(now.index)
    return now.index[(now == HIGH).to_numpy() & prev.notna().to_numpy() & (prev != HIGH).to_numpy()]
