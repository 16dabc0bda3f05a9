"""Labels of the window after a cutoff, and the stacked training sets built from features and labels at
several cutoffs (customers with a past purchase only, optionally a seeded sample of them).

Labels read only ``[cutoff, cutoff+H)``; the features are :func:`features.customer.customer_features`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.aggregates import counts, group_sums, lines_between
from features.codes import ShopCodes, restrict, shop_codes
from features.customer import _dt64, _present_count, customer_features, unify_categories
from features.io import Shop


def future_labels(shop: Shop, cutoff: pd.Timestamp, horizon_days: int, customers: pd.Index,
                  codes: ShopCodes | None = None) -> pd.DataFrame:
    """What happened in ``[cutoff, cutoff + horizon)``: churn (no purchase), net revenue and net margin.
    ``codes``: a part of the shop's arrays holding these customers (:func:`features.codes.restrict`)."""
    cutoff = pd.Timestamp(cutoff)
    c = codes if codes is not None else shop_codes(shop)
    n = len(c.customers)
    take = c.customer_codes(pd.Index(customers))
    take = np.where(take >= 0, take, n)
    keep = np.zeros(n + 1, bool)
    keep[take] = True
    L = lines_between(c, _dt64(cutoff), _dt64(cutoff + pd.Timedelta(days=horizon_days)), keep)
    buy = ~L.is_return
    orders = counts(L.cust[buy][np.unique(L.order[buy], return_index=True)[1]], n + 1)
    nrows = _present_count(orders, counts(L.cust[buy], n + 1) > 0, take)
    s = group_sums(L.cust, n + 1, {"net": L.net, "margin": L.net - L.cost})
    has_margin = counts(L.cust[~np.isnan(L.net - L.cost)], n + 1) > 0
    return pd.DataFrame({"churn": (nrows == 0).astype(int), "future_orders": nrows,
                         "future_net": np.where(counts(L.cust, n + 1)[take] > 0, s["net"][take], 0.0),
                         "future_margin": np.where(has_margin[take], s["margin"][take],
                                                   np.nan)}, index=customers)


def training_cutoffs(shop: Shop, cutoff: pd.Timestamp, horizon_days: int, n: int, step_days: int,
                     min_history_days: int = 60) -> list[pd.Timestamp]:
    """Earlier cutoffs whose label windows end on or before ``cutoff`` (so no label peeks past it)."""
    first = shop.orders["ts"].min()
    out = []
    for k in range(n):
        c = pd.Timestamp(cutoff) - pd.Timedelta(days=horizon_days + k * step_days)
        if c - first >= pd.Timedelta(days=min_history_days):
            out.append(c)
    return out


def stacked_training_set(shop: Shop, cutoffs: list[pd.Timestamp], horizon_days: int,
                         max_rows: int | None = None, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features and labels at several cutoffs, stacked (customers with a past purchase only).

    ``max_rows``: when the stacked rows would be more, only a share of the customers is kept (the same ones at
    every cutoff, chosen by a seeded hash of their id) so that about ``max_rows`` remain; the share kept is
    ``X.attrs["sample_share"]`` (1.0 when nothing was left out).
    """
    share = 1.0
    buyers: list[np.ndarray] = []
    if max_rows is not None:
        c = shop_codes(shop)
        a = c.lines
        buy = a.quantity >= 0
        buyers = [counts(a.cust[buy & (a.ts < _dt64(pd.Timestamp(t)))], len(c.customers)) > 0
                  for t in cutoffs]
        rows = sum(int(np.count_nonzero(b)) for b in buyers)
        share = min(1.0, max_rows / rows) if rows else 1.0
    part = None
    if share < 1.0:  # the sampled customers' rows, read once for every cutoff
        sampled = customer_sample(pd.Index(c.customers, dtype=object), share, seed)
        part = restrict(c, sampled)
    xs, ys = [], []
    for i, t in enumerate(cutoffs):
        if part is not None:  # the features of the sampled buyers only (each customer's row is the same)
            ids = pd.Index(c.customers[buyers[i] & sampled], dtype=object)
            X = customer_features(shop, t, customers=ids, codes=part)
        else:
            X = customer_features(shop, t)
        X = X[X["n_orders"] > 0]
        xs.append(X)
        ys.append(future_labels(shop, t, horizon_days, X.index, codes=part))
    if not xs:
        return pd.DataFrame(), pd.DataFrame()
    X = unify_categories(pd.concat(xs))
    X.attrs["sample_share"] = share
    return X, pd.concat(ys)


def customer_sample(ids: pd.Index, share: float, seed: int = 0) -> np.ndarray:
    """True for a ``share`` of the customers, chosen by a seeded hash of the id: the same customers whatever
    the frame, the cutoff or the machine."""
    h = pd.util.hash_array(np.asarray(ids, dtype=object), hash_key=f"{seed:016d}"[-16:])
    return np.asarray((h >> np.uint64(11)) < np.uint64(share * 2**53))
