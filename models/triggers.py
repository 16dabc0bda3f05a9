"""Triggers the CRM engine can act on, computed for a time interval ``(since, until]``.

Every trigger has an occurrence time; it fires in the one interval that contains that time, so running
the detector over consecutive intervals fires each occurrence exactly once.

Input ``lines`` are customer order lines with columns customer_id, order_id, ts, quantity, net
(see :func:`features.customer.order_lines`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

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

    def to_params(self) -> dict[str, Any]:
        return {f"triggers.{k}": v for k, v in asdict(self).items()}


def _orders(lines: pd.DataFrame) -> pd.DataFrame:
    buys = lines[lines["quantity"] > 0]
    o = buys.groupby(["customer_id", "order_id"], sort=False).agg(ts=("ts", "min"), value=("net", "sum")).reset_index()
    return o.sort_values(["customer_id", "ts", "order_id"], kind="stable").reset_index(drop=True)


def detect_triggers(lines: pd.DataFrame, since: pd.Timestamp, until: pd.Timestamp,
                    config: TriggerConfig | None = None, churn_before: pd.Series | None = None,
                    churn_now: pd.Series | None = None) -> pd.DataFrame:
    """Triggers whose occurrence falls in ``(since, until]``; only data up to ``until`` is read.

    Returns columns customer_id, trigger, at, detail (one row per occurrence).
    """
    cfg = config or TriggerConfig()
    since, until = pd.Timestamp(since), pd.Timestamp(until)
    lines = lines[lines["ts"] <= until]
    o = _orders(lines)
    rows: list[pd.DataFrame] = []
    in_win = (o["ts"] > since) & (o["ts"] <= until)
    g = o.groupby("customer_id")
    n_before = g.cumcount()
    prev_mean = g["value"].transform(lambda s: s.shift().expanding().mean())
    jump = in_win & (n_before >= cfg.spend_jump_min_orders) & (o["value"] > cfg.spend_jump_factor * prev_mean)
    rows.append(pd.DataFrame({"customer_id": o.loc[jump, "customer_id"], "trigger": "spend_jump", "at": o.loc[jump, "ts"],
                              "detail": [f"order {oid} worth {v:.2f} vs average {m:.2f}" for oid, v, m in
                                         zip(o.loc[jump, "order_id"], o.loc[jump, "value"], prev_mean[jump], strict=True)]}))
    first = in_win & (n_before == 0)
    rows.append(pd.DataFrame({"customer_id": o.loc[first, "customer_id"], "trigger": "first_purchase",
                              "at": o.loc[first, "ts"], "detail": "first order " + o.loc[first, "order_id"].astype(str)}))
    # dormancy: the moment the silence since the last order crosses the customer's line
    gap = g["ts"].diff() / pd.Timedelta(days=1)
    usual = gap.groupby(o["customer_id"]).mean()
    last = g["ts"].max()
    line_days = (usual * cfg.dormancy_factor).reindex(last.index)
    line_days = line_days.where(line_days.notna() & (line_days > 0), cfg.dormancy_days)
    cross = last + pd.to_timedelta(line_days, unit="D")
    dorm = (cross > since) & (cross <= until)
    rows.append(pd.DataFrame({"customer_id": cross.index[dorm], "trigger": "dormancy", "at": cross[dorm].to_numpy(),
                              "detail": [f"no order for {d:.0f} days (line {d:.0f})" for d in line_days[dorm]]}))
    rets = lines[(lines["quantity"] < 0) & (lines["ts"] > since)]
    rv = (-rets.groupby(["customer_id", "order_id"])["net"].sum()).reset_index()
    rts = rets.groupby(["customer_id", "order_id"])["ts"].min().reset_index(drop=True)
    rv["at"] = rts.to_numpy()
    big = rv[rv["net"] >= cfg.high_value_return]
    rows.append(pd.DataFrame({"customer_id": big["customer_id"], "trigger": "high_value_return", "at": big["at"],
                              "detail": [f"returned {v:.2f} in {oid}" for v, oid in zip(big["net"], big["order_id"], strict=True)]}))
    if churn_now is not None:
        before = (churn_before if churn_before is not None else pd.Series(0.0, index=churn_now.index)).reindex(
            churn_now.index).fillna(0.0)
        up = (before < cfg.churn_threshold) & (churn_now >= cfg.churn_threshold)
        rows.append(pd.DataFrame({"customer_id": churn_now.index[up], "trigger": "churn_risk", "at": until,
                                  "detail": [f"churn risk {p:.2f} crossed {cfg.churn_threshold}" for p in churn_now[up]]}))
    out = pd.concat([r for r in rows if len(r)], ignore_index=True) if any(len(r) for r in rows) else pd.DataFrame(
        columns=["customer_id", "trigger", "at", "detail"])
    out["at"] = pd.to_datetime(out["at"])
    return out.sort_values(["at", "customer_id", "trigger"], kind="stable").reset_index(drop=True)

