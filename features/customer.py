"""Customer features as of a cutoff, and the labels of the window after it.

Everything here reads only rows strictly before ``cutoff`` (labels read only ``[cutoff, cutoff+H)``).
Money follows one convention: a line's net amount is ``quantity * unit_price - sign(quantity) * discount``,
so a return (negative quantity) gives back what the customer actually paid for it.

Example
-------
>>> X = customer_features(shop, pd.Timestamp("2025-10-01"))         # doctest: +SKIP
>>> X.loc["C0000001", ["recency_days", "n_orders", "net_revenue"]]  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from features import schema
from features.aggregates import (
    DAY,
    Lines,
    Orders,
    abandoned_carts,
    counts,
    distinct_counts,
    group_sums,
    lines_between,
    order_rhythm,
    orders_of,
    preferred,
    top_by_sum,
)
from features.attributes import attribute_features, vocabularies
from features.codes import ShopCodes, shop_codes
from features.io import Shop
from features.schema import CUSTOMER_ID

CATEGORICAL = ["top_category", "preferred_channel", "acquisition_channel", "region"]


def order_lines(shop: Shop, cutoff: pd.Timestamp | None = None,
                start: pd.Timestamp | None = None) -> pd.DataFrame:
    """Customer order lines in ``[start, cutoff)`` with net amount, cost and product category attached."""
    o = _all_lines(shop)
    if cutoff is not None:
        o = o[o["ts"] < cutoff]
    if start is not None:
        o = o[o["ts"] >= start]
    return o


def _all_lines(shop: Shop) -> pd.DataFrame:
    """Every customer order line with its amounts, computed once per orders and products tables (training
    asks for the lines at a dozen cutoffs; a table replaced on the shop is seen)."""
    cached = shop.__dict__.get("_all_lines")
    if cached is not None and cached[0] is shop.orders and cached[1] is shop.products:
        return cached[2]
    o = shop.customer_orders()
    p = shop.products.set_index(schema.PRODUCT_ID)
    gross = o[schema.QUANTITY] * o["unit_price"]
    net = gross - np.sign(o[schema.QUANTITY]) * o["discount"]
    cost = o[schema.QUANTITY] * o[schema.PRODUCT_ID].map(p["unit_cost"]).astype(float)
    lines = o.assign(gross=gross, net=net, cost=cost, category=o[schema.PRODUCT_ID].map(p["category"]),
                     is_return=o[schema.QUANTITY] < 0)
    shop.__dict__["_all_lines"] = (shop.orders, shop.products, lines)
    return lines


def order_values(shop: Shop, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Every customer order before ``cutoff`` (returns included, as their own orders): customer_id, order_id,
    first time ``ts`` and net ``value``, in order of first appearance. What
    ``order_lines(shop, cutoff).groupby(["customer_id", "order_id"], sort=False)`` gives, on integer codes."""
    c = shop_codes(shop)
    L = lines_between(c, None, _dt64(pd.Timestamp(cutoff)))
    g = (
        pd.DataFrame({"cust": L.cust, "ts": L.ts.view(np.int64), "value": L.net})
        .groupby(L.order, sort=False)
        .agg(cust=("cust", "first"), ts=("ts", "min"), value=("value", "sum"))
    )
    return pd.DataFrame({schema.CUSTOMER_ID: pd.Series(c.customers[g["cust"].to_numpy()]),
                         schema.ORDER_ID: pd.Series(c.lines.order_ids[g.index.to_numpy()]),
                         "ts": g["ts"].to_numpy().view("datetime64[ns]"), "value": g["value"].to_numpy()})


def bought_between(shop: Shop, customers: Any, start: Any, end: Any) -> np.ndarray:
    """For each row (customer id, start, end): whether that customer has a purchase line (quantity > 0) with
    ``start <= ts < end``. One as-of join over all rows at once (e.g. "did they buy within an offer's
    window?" for every offer_log row); unknown customers have bought nothing."""
    c = shop_codes(shop)
    a = c.lines
    t0 = pd.to_datetime(pd.Series(np.asarray(start))).to_numpy("datetime64[ns]")
    t1 = pd.to_datetime(pd.Series(np.asarray(end))).to_numpy("datetime64[ns]")
    cust = c.customer_codes(pd.Index(np.asarray(customers, dtype=object)))
    q = pd.DataFrame({"cust": cust, "t": t0, "row": np.arange(len(cust))}).sort_values("t", kind="stable")
    buy = a.quantity > 0
    p = pd.DataFrame({"cust": a.cust[buy].astype(np.int64), "next": a.ts[buy]})
    p = p.sort_values("next", kind="stable")
    m = pd.merge_asof(q.astype({"cust": np.int64}), p, left_on="t", right_on="next", by="cust",
                      direction="forward", allow_exact_matches=True)
    out = np.zeros(len(cust), bool)
    out[m["row"].to_numpy()] = (m["next"].to_numpy() < t1[m["row"].to_numpy()]) & (m["cust"].to_numpy() >= 0)
    return out


def unify_categories(X: pd.DataFrame) -> pd.DataFrame:
    """The text columns of :data:`CATEGORICAL` as categories over the values present (in place, and returned):
    frames built at different cutoffs or send dates carry different category sets until re-unified."""
    for col in CATEGORICAL:
        if col in X:
            X[col] = X[col].astype("string").astype("category")
    return X


def customer_features(shop: Shop, cutoff: pd.Timestamp, customers: pd.Index | None = None,
                      codes: ShopCodes | None = None) -> pd.DataFrame:
    """One row per customer known before ``cutoff`` (index ``customer_id``), nothing after it leaks in.

    Columns: RFM (recency_days, n_orders, gross_spend), value net of returns, discounts and cost
    (returns_value, return_rate, discount_total, discount_share, net_revenue, net_margin), rhythm
    (tenure_days, ipt_mean, ipt_std, overdue), trends (net_30/90/180, trend_90), breadth and taste
    (n_categories, n_products, units, purchase_days, top_category, preferred_channel, holiday_share),
    acquisition channel and region,
    behaviour (views_30, carts_30, abandoned_carts_90, days_since_visit) and offer history
    (offers_received, offers_redeemed, redemption_rate, days_since_offer), then one ``attr_<name>`` column per
    customer attribute of the shop (:func:`features.attributes.attribute_features`: numbers, 0/1, categories
    over the whole table's values, dates as days before the cutoff; NaN for a customer the table lacks).

    Computed for all customers at once on integer-coded arrays (:mod:`features.codes`); with ``customers``,
    only their rows are read. ``codes``: a part of the shop's arrays (:func:`features.codes.restrict`) that
    holds every one of ``customers`` (the same frame, read from fewer rows: for many calls on a sample).
    Customers without a purchase have NaN where a value needs one, 0 for counts and amounts; a count column
    is ``int64`` when every row has it, else ``float64``.
    """
    cutoff = pd.Timestamp(cutoff)
    c = codes if codes is not None else shop_codes(shop)
    n, end = len(c.customers), _dt64(cutoff)
    keep = None
    if customers is not None:
        idx = pd.Index(customers)
        take = c.customer_codes(idx)
        keep = np.zeros(n + 1, bool)
        keep[take[take >= 0]] = True
        if c.part is not None and not c.part[take[take >= 0]].all():
            raise ValueError("customer_features: codes is a part of the shop without some of the customers")
    elif c.part is not None:
        raise ValueError("customer_features: codes is a part of the shop; name its customers")
    L = lines_between(c, None, end, keep)
    o = orders_of(L)
    buyer = np.zeros(n + 1, bool)
    buyer[o.buyers] = True
    if customers is None:
        known = buyer.copy()
        known[:n] |= c.signup < end
        if c.events is not None:
            known[c.events.cust[c.events.ts < end]] = True
        take = np.flatnonzero(known)
        idx = pd.Index(c.customers[take], dtype=object, name=schema.CUSTOMER_ID)
    take = np.where(take >= 0, take, n)
    cols = _purchase_columns(c, L, o, end, n + 1, buyer, take, keep)
    cols.update(_behaviour(c, end, n + 1, take, keep))
    cols.update(_offer_history(c, end, n + 1, take, keep))
    f = pd.DataFrame(cols, index=idx)
    f.index.name = CUSTOMER_ID
    f = unify_categories(f)
    if shop.attributes:
        A = attribute_features(shop.customers, shop.attributes, cutoff, attribute_vocabulary(shop))
        A = A[~A.index.duplicated()].reindex(f.index)
        f = pd.concat([f, A], axis=1)
    return f


def attribute_vocabulary(shop: Shop) -> dict[str, list[str]]:
    """The categorical attributes' values over the whole customers table, computed once per table (so a value
    has the same category at every cutoff)."""
    if shop.vocabulary is not None:  # a part of the shop: the whole shop's values
        return shop.vocabulary
    cached = shop.__dict__.get("_attr_vocabulary")
    if cached is not None and cached[0] is shop.customers:
        return cached[1]  # type: ignore[no-any-return]
    vocab = vocabularies(shop.customers, shop.attributes)
    shop.__dict__["_attr_vocabulary"] = (shop.customers, vocab)
    return vocab


def _dt64(t: pd.Timestamp) -> np.datetime64:
    return np.datetime64(t.as_unit("ns").asm8)


def _purchase_columns(c: ShopCodes, L: Lines, o: Orders, end: np.datetime64, n: int, buyer: np.ndarray,
                      take: np.ndarray, keep: np.ndarray | None) -> dict[str, np.ndarray]:
    """The columns read from order lines, in the order of the frame, taken at ``take``."""
    r = order_rhythm(o, end, n)
    buy = ~L.is_return
    nan = np.full(len(L.cust), np.nan)
    windows = {f"net_{d}": np.where(L.ts >= end - np.timedelta64(d, "D"), L.net, nan) for d in (30, 90, 180)}
    s = group_sums(L.cust, n, {
        "gross_spend": np.where(buy, L.gross, nan), "discount_total": np.where(buy, L.discount, nan),
        "discounted": np.where(buy, np.where(L.discount > 0, L.gross, 0.0), nan),
        "units": np.where(buy, L.quantity, nan), "returns": np.where(buy, nan, L.net),
        "net_revenue": L.net, "net_margin": L.net - L.cost, **windows})
    b, all_b = buyer[take], bool(buyer[take].all())

    def on_buyers(v: np.ndarray, fill: float = np.nan) -> np.ndarray:
        return np.where(b, v[take], fill)

    def count(v: np.ndarray, fill: float, int_ok: bool = True) -> np.ndarray:
        return v[take].astype(np.int64) if all_b and int_ok else np.where(b, v[take], fill).astype(float)

    recency = on_buyers(_days(end, r["last_purchase"]))
    age = on_buyers(_days(end, r["first_purchase"]))
    ipt = on_buyers(r["ipt_mean"])
    gross, disc = on_buyers(s["gross_spend"], 0.0), on_buyers(s["discount_total"], 0.0)
    ret = np.where(b & (counts(L.cust[~buy], n)[take] > 0), -s["returns"][take], 0.0)
    net = on_buyers(s["net_revenue"], 0.0)
    net90 = on_buyers(s["net_90"])
    hist = net / np.maximum(age, 90) * 90
    out = {"n_orders": np.where(b, r["n_orders"][take], 0).astype(np.int64),
           "avg_order_value": on_buyers(r["avg_order_value"]),
           "max_order_value": on_buyers(r["max_order_value"]), "recency_days": recency,
           "purchase_age_days": age, "ipt_mean": ipt, "ipt_std": on_buyers(r["ipt_std"]),
           "overdue": recency / np.maximum(ipt, 1.0), "gross_spend": gross, "discount_total": disc,
           "discount_share": on_buyers(s["discounted"]) / _nan0(gross),
           "n_categories": count(distinct_counts(L.cust[buy], L.category[buy], n), 0.0),
           "n_products": count(distinct_counts(L.cust[buy], L.product[buy], n), 0.0),
           "units": on_buyers(s["units"], 0.0), "purchase_days": count(r["purchase_days"], 0.0),
           "top_category": _names(c.categories,
                                  top_by_sum(L.cust[buy], L.net[buy], L.category[buy], n), take),
           "returns_value": ret, "return_rate": _clip(ret / _nan0(gross - disc), 0, 1.5), "net_revenue": net,
           "net_margin": (on_buyers(s["net_margin"]) if _has_cost(c, L, end, keep)
                          else np.full(len(take), np.nan))}
    for d in (30, 90, 180):
        out[f"net_{d}"] = on_buyers(s[f"net_{d}"])
        int_ok = all_b and _all_buyers_ordered(c, end, d, keep, r, buyer)
        out[f"orders_{d}"] = count(r[f"orders_{d}"], np.nan, int_ok)
    out["trend_90"] = _clip(net90 / np.where(hist > 1.0, hist, np.nan), -5, 20)
    out["holiday_share"] = on_buyers(r["holiday_orders"] / np.maximum(r["n_orders"], 1))
    chan = np.nan_to_num(o.channel, nan=-1).astype(np.int64)
    out["preferred_channel"] = _names(c.channels, preferred(o.cust, chan, n), take)
    first = r["first_purchase"][take]
    signup = np.r_[c.signup, np.datetime64("NaT")][take]
    seen = np.where(np.isnat(signup), first, np.where(np.isnat(first), signup, np.minimum(signup, first)))
    out["tenure_days"] = _days(end, seen)
    for col in ("acquisition_channel", "region"):
        out[col] = np.r_[c.customer_attrs[col], [np.nan]][take]
    return out


def _nan0(x: np.ndarray) -> np.ndarray:
    return np.where(x == 0, np.nan, x)


def _clip(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """As ``Series.clip``: NaN stays NaN."""
    x = np.where(x < lo, lo, x)
    return np.where(x > hi, hi, x)


def _days(end: np.datetime64, ts: np.ndarray) -> np.ndarray:
    """Days from ``ts`` to ``end`` (NaN for NaT)."""
    return np.asarray(end - ts, dtype="timedelta64[ns]") / DAY  # type: ignore[no-any-return]


def _names(vocab: np.ndarray, codes: np.ndarray, take: np.ndarray) -> np.ndarray:
    k = codes[take]
    out = np.full(len(k), None, dtype=object)
    if len(vocab):
        out[k >= 0] = vocab[k[k >= 0]]
    return out


def _has_cost(c: ShopCodes, L: Lines, end: np.datetime64, keep: np.ndarray | None) -> bool:
    """Whether any line before ``end`` (of any customer) has a unit cost."""
    if keep is None:
        return bool(np.isfinite(L.cost).any() or (~np.isnan(L.cost)).any())
    c = c.whole or c  # any customer's line: the whole shop's
    a = c.lines
    return bool((~np.isnan(a.quantity * c.product_cost[a.product]) & (a.ts < end)).any())


def _all_buyers_ordered(c: ShopCodes, end: np.datetime64, days: int, keep: np.ndarray | None,
                        r: dict[str, np.ndarray], buyer: np.ndarray) -> bool:
    """Whether every customer with a purchase before ``end`` (all of them, whatever ``keep`` says) ordered
    in the ``days`` before it: then the frame's order counts keep their integer type."""
    if keep is None:
        return bool((r[f"orders_{days}"][buyer] > 0).all())
    c = c.whole or c  # every buyer: the whole shop's
    a = c.lines
    before = (a.ts < end) & (a.quantity >= 0)
    n = len(c.customers)
    recent = counts(a.cust[before & (a.ts >= end - np.timedelta64(days, "D"))], n) > 0
    return bool(recent[counts(a.cust[before], n) > 0].all())


def _behaviour(c: ShopCodes, end: np.datetime64, n: int, take: np.ndarray,
               keep: np.ndarray | None) -> dict[str, np.ndarray]:
    e = c.events
    if e is None:
        return {col: np.full(len(take), np.nan) for col in
                ("views_30", "carts_30", "abandoned_carts_90", "days_since_visit")}
    m = e.ts < end
    if keep is not None:
        m &= keep[e.cust]
    cust, ts, kind, product = e.cust[m], e.ts[m], e.kind[m], e.product[m]
    last30 = ts >= end - np.timedelta64(30, "D")
    seen30 = counts(cust[last30], n) > 0
    out = {"views_30": _present_count(counts(cust[last30 & (kind == 0)], n), seen30, take),
           "carts_30": _present_count(counts(cust[last30 & (kind == 1)], n), seen30, take)}
    last = np.full(n, np.datetime64("NaT"), "datetime64[ns]")
    if len(cust):
        mx = pd.Series(ts.view(np.int64)).groupby(cust, sort=False).max()
        last[mx.index.to_numpy()] = mx.to_numpy().view("datetime64[ns]")
    out["days_since_visit"] = _days(end, last[take])
    carts = (kind == 1) & (ts >= end - np.timedelta64(90, "D"))
    ab, has = abandoned_carts(c, cust[carts], product[carts], ts[carts], end, n, keep)
    out["abandoned_carts_90"] = _present_count(ab, has, take)
    return out


def _present_count(v: np.ndarray, present: np.ndarray, take: np.ndarray) -> np.ndarray:
    """A count per customer: integers when every row has one, else floats with 0 for the others."""
    p = present[take]
    return v[take].astype(np.int64) if p.all() else np.where(p, v[take], 0).astype(float)


def _offer_history(c: ShopCodes, end: np.datetime64, n: int, take: np.ndarray,
                   keep: np.ndarray | None) -> dict[str, np.ndarray]:
    ol = c.offers
    names = ("offers_received", "offers_redeemed", "redemption_rate", "days_since_offer")
    if ol is None:
        return {col: np.full(len(take), np.nan) for col in names}
    m = (ol.sent < end) & ol.treated
    if keep is not None:
        m &= keep[ol.cust]
    cust, sent = ol.cust[m], ol.sent[m]
    received = counts(cust, n)
    has = received > 0
    rec = _present_count(received, has, take)
    red = _present_count(counts(cust[ol.redeemed[m] < end], n), has, take)
    last = np.full(n, np.datetime64("NaT"), "datetime64[ns]")
    if len(cust):
        mx = pd.Series(sent.view(np.int64)).groupby(cust, sort=False).max()
        last[mx.index.to_numpy()] = mx.to_numpy().view("datetime64[ns]")
    return dict(zip(names, (rec, red, red / _nan0(rec.astype(float)), _days(end, last[take])), strict=True))
