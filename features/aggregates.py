"""Per-customer aggregates over the coded arrays of :mod:`features.codes`: the vectorised kernels behind
:func:`features.customer.customer_features` and :func:`features.customer_labels.future_labels`.

Every function works on all customers at once and returns dense arrays indexed by customer code (length
``n``), with a ``present`` mask saying which customers had rows. Sums go through one pandas groupby on the
integer codes, so they are the compensated sums pandas computes (the numbers the string-keyed code gave,
to the last bit); counts, minima and maxima are plain numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.codes import ShopCodes

DAY = np.timedelta64(1, "D")


@dataclass(frozen=True)
class Lines:
    """Order lines of a time window (and of some customers), with their amounts."""

    cust: np.ndarray
    order: np.ndarray
    ts: np.ndarray
    quantity: np.ndarray
    discount: np.ndarray
    gross: np.ndarray
    net: np.ndarray
    cost: np.ndarray
    product: np.ndarray
    category: np.ndarray
    channel: np.ndarray

    @property
    def is_return(self) -> np.ndarray:
        return self.quantity < 0


def lines_between(c: ShopCodes, start: np.datetime64 | None, end: np.datetime64,
                  keep: np.ndarray | None = None) -> Lines:
    """Lines with ``start <= ts < end`` (of the customers where ``keep`` is True, if given)."""
    a = c.lines
    m = a.ts < end
    if start is not None:
        m &= a.ts >= start
    if keep is not None:
        m &= keep[a.cust]
    q, prod = a.quantity[m], a.product[m]
    gross = q * a.unit_price[m]
    disc = a.discount[m]
    return Lines(cust=a.cust[m], order=a.order[m], ts=a.ts[m], quantity=q, discount=disc, gross=gross,
                 net=gross - np.sign(q) * disc, cost=q * c.product_cost[prod], product=prod,
                 category=c.product_category[prod], channel=a.channel[m])


def group_sums(key: np.ndarray, n: int, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-key sums of each column (pandas' compensated sum; NaN skipped), dense over ``0..n-1``, 0 where a
    key has no rows."""
    out = {c: np.zeros(n) for c in cols}
    if len(key):
        g = pd.DataFrame(cols, copy=False).groupby(key, sort=False).sum()
        at = g.index.to_numpy()
        for c in cols:
            out[c][at] = g[c].to_numpy()
    return out


def counts(key: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(key, minlength=n)


def distinct_counts(cust: np.ndarray, other: np.ndarray, n: int) -> np.ndarray:
    """Distinct values of ``other`` (>= 0) per customer."""
    ok = other >= 0
    pair = pd.unique(cust[ok].astype(np.int64) * (int(other.max(initial=0)) + 1) + other[ok])
    return counts((pair // (int(other.max(initial=0)) + 1)).astype(np.int64), n)


@dataclass(frozen=True)
class Orders:
    """Purchase orders (return lines excluded), sorted by customer then time (ties: first seen first)."""

    cust: np.ndarray
    ts: np.ndarray
    value: np.ndarray
    channel: np.ndarray  # float code, NaN for none
    starts: np.ndarray  # first order of each customer
    buyers: np.ndarray  # customer code of each run


def orders_of(L: Lines) -> Orders:
    buy = ~L.is_return
    chan = L.channel[buy].astype(float)
    chan[chan < 0] = np.nan
    df = pd.DataFrame({"cust": L.cust[buy], "ts": L.ts[buy].view(np.int64),
                       "value": L.net[buy], "channel": chan})
    g = df.groupby(L.order[buy], sort=False).agg(cust=("cust", "first"), ts=("ts", "min"),
                                                 value=("value", "sum"),
                                                channel=("channel", "first"))
    cust, ts = g["cust"].to_numpy(), g["ts"].to_numpy()
    order = np.lexsort((ts, cust))
    cust, ts = cust[order], ts[order].view("datetime64[ns]")
    starts = np.flatnonzero(np.r_[True, cust[1:] != cust[:-1]]) if len(cust) else np.zeros(0, np.int64)
    return Orders(cust=cust, ts=ts, value=g["value"].to_numpy()[order],
                  channel=g["channel"].to_numpy()[order], starts=starts, buyers=cust[starts])


def order_rhythm(o: Orders, cutoff: np.datetime64, n: int) -> dict[str, np.ndarray]:
    """Order counts, first and last purchase, order values and the gaps between orders, per customer."""
    out: dict[str, np.ndarray] = {}
    nb = len(o.starts)
    ends = np.r_[o.starts[1:], len(o.cust)] if nb else o.starts
    b = o.buyers
    dense = np.full(n, np.nan)
    out["n_orders"] = np.zeros(n, np.int64)
    out["n_orders"][b] = ends - o.starts
    for col, at in (("first_purchase", o.starts), ("last_purchase", ends - 1)):
        out[col] = np.full(n, np.datetime64("NaT"), "datetime64[ns]")
        out[col][b] = o.ts[at]
    key = pd.Series(o.cust)
    gap = np.full(len(o.cust), np.nan)
    if len(o.cust) > 1:
        gap[1:] = (o.ts[1:] - o.ts[:-1]) / DAY
        gap[o.starts] = np.nan
    stats = pd.DataFrame({"value": o.value, "gap": gap}).groupby(key, sort=False).agg(
        avg_order_value=("value", "mean"), ipt_mean=("gap", "mean"), ipt_std=("gap", "std"))
    for col in ("avg_order_value", "ipt_mean", "ipt_std"):
        out[col] = dense.copy()
        out[col][stats.index.to_numpy()] = stats[col].to_numpy()
    out["max_order_value"] = dense.copy()
    if nb:
        out["max_order_value"][b] = np.maximum.reduceat(o.value, o.starts)
    day = o.ts.astype("datetime64[D]")
    new_day = np.r_[True,
                    (day[1:] != day[:-1]) | (o.cust[1:] != o.cust[:-1])] if len(day) else np.zeros(0, bool)
    out["purchase_days"] = counts(o.cust[new_day], n)
    month = o.ts.astype("datetime64[M]").astype(np.int64) % 12 + 1
    out["holiday_orders"] = counts(o.cust[month >= 11], n)
    for days in (30, 90, 180):
        out[f"orders_{days}"] = counts(o.cust[o.ts >= cutoff - np.timedelta64(days, "D")], n)
    return out


def preferred(cust: np.ndarray, value: np.ndarray, n: int) -> np.ndarray:
    """Per customer the value (code >= 0) seen most often; ties go to the smallest code; -1 for none."""
    ok = value >= 0
    out = np.full(n, -1, np.int64)
    if not ok.any():
        return out
    width = int(value.max()) + 1
    pair, cnt = np.unique(cust[ok].astype(np.int64) * width + value[ok].astype(np.int64), return_counts=True)
    pc, pv = pair // width, pair % width
    order = np.lexsort((pv, -cnt, pc))
    pc, pv = pc[order], pv[order]
    first = np.r_[True, pc[1:] != pc[:-1]]
    out[pc[first]] = pv[first]
    return out


def top_by_sum(cust: np.ndarray, value: np.ndarray, code: np.ndarray, n: int) -> np.ndarray:
    """Per customer the code (>= 0) with the largest sum of ``value``, -1 for none. Ties are broken as
    ``DataFrame.sort_values`` (quicksort) then ``drop_duplicates(keep="last")`` break them on the
    (customer, code)-sorted sums (the definition this feature has always had)."""
    ok = code >= 0
    out = np.full(n, -1, np.int64)
    if not ok.any():
        return out
    width = int(code.max()) + 1
    s = pd.Series(value[ok]).groupby(cust[ok].astype(np.int64) * width + code[ok], sort=True).sum()
    pair, sums = s.index.to_numpy(), s.to_numpy()
    order = np.argsort(sums, kind="quicksort")
    pc = (pair // width)[order][::-1]
    _, last = np.unique(pc, return_index=True)
    out[pc[last]] = (pair % width)[order][::-1][last]
    return out


def abandoned_carts(c: ShopCodes, cust: np.ndarray, product: np.ndarray, ts: np.ndarray, end: np.datetime64,
                    n: int, keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Carts (the last one per customer and product, in table order) the customer did not follow with a
    purchase of that product within 7 days (purchases before ``end``). Returns the count per customer and
    whether the customer carted anything."""
    width = np.int64(len(c.products) + 1)
    key = cust.astype(np.int64) * width + product
    _, first_from_end = np.unique(key[::-1], return_index=True)
    last = len(key) - 1 - first_from_end
    carts = pd.DataFrame({"key": key[last], "ts": ts[last].view(np.int64)})
    a = c.lines
    m = (a.ts < end) & (a.quantity > 0)
    if keep is not None:
        m &= keep[a.cust]
    buys = pd.DataFrame({"key": a.cust[m].astype(np.int64) * width + a.product[m],
                         "ts_o": a.ts[m].view(np.int64)})
    buys = buys[buys["key"].isin(carts["key"])]
    pairs = carts.reset_index().merge(buys, on="key", how="inner")
    week = 7 * 86_400 * 10**9  # ns
    hit = (pairs["ts_o"] >= pairs["ts"]) & (pairs["ts_o"] < pairs["ts"] + week)
    bought = np.zeros(len(carts), bool)
    bought[pairs.loc[hit, "index"].to_numpy()] = True
    cc = cust[last]
    return counts(cc[~bought], n), counts(cc, n) > 0
