"""What customers really bought after a cutoff: the ground truth recommendations are judged and tuned on.

Example
-------
>>> truth = purchase_truth(shop, pd.Timestamp("2011-09-01"))      # doctest: +SKIP
>>> new_items_truth(data, truth)["12347"]                         # doctest: +SKIP
{'22725', '84997B'}
"""

from __future__ import annotations

import pandas as pd

from features.customer_labels import customer_sample
from features.interactions import InteractionData
from features.io import Shop
from features.schema import CUSTOMER_ID, PRODUCT_ID, QUANTITY, TS


def purchase_truth(shop: Shop, start: pd.Timestamp, end: pd.Timestamp | None = None) -> dict[str, set[str]]:
    """The products each customer bought from ``start`` (until ``end``, if given); returns are left out."""
    o = shop.customer_orders()
    o = o[(o[TS] >= start) & (o[QUANTITY] > 0)]
    if end is not None:
        o = o[o[TS] < end]
    return {str(c): set(g) for c, g in o.groupby(CUSTOMER_ID)[PRODUCT_ID]}


def sample_truth(truth: dict[str, set[str]], max_customers: int, seed: int = 0) -> dict[str, set[str]]:
    """``truth`` for about ``max_customers`` of its customers (a seeded hash of the id, so the same
    customers on every machine and run); ``truth`` itself when it has no more than that."""
    if len(truth) <= max_customers:
        return truth
    ids = pd.Index(list(truth))
    keep = ids[customer_sample(ids, max_customers / len(truth), seed)]
    return {u: truth[u] for u in keep}


def new_items_truth(data: InteractionData, truth: dict[str, set[str]]) -> dict[str, set[str]]:
    """For each customer of ``data`` in ``truth``: the products they had not bought before (if any)."""
    users = [u for u in truth if u in data.users]
    out = {}
    for u, r in zip(users, data.users.rows(users), strict=True):
        new = truth[u] - set(data.items.ids[data.purchases[r].indices])
        if new:
            out[u] = new
    return out
