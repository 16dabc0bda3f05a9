"""A shop's tables as integer-coded numpy arrays, built once per shop, for the feature builders.

Customer ids become codes into one sorted vocabulary of every customer any table names (so sorting codes
sorts ids); product ids become codes into the products table's own order (code = row of the products
table), followed by ids only the orders or events name. Text attributes become codes into their sorted
values, with -1 for missing. Rows keep their table's order (features that take "the first" or sum in
order depend on it). Nothing here knows about cutoffs: the feature builders select rows by time.

The arrays are cached on the shop and rebuilt when one of its tables is replaced.

Example
-------
>>> c = shop_codes(shop)                                    # doctest: +SKIP
>>> c.customers[c.lines.cust[:3]]                          # the first order lines' customer ids
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features import schema
from features.io import Shop

EVENT_KINDS = ("view", "add_to_cart", "remove_from_cart", "wishlist")
"""Event types as codes 0..3 (schema.EVENT_TYPES order); anything else is -1."""


@dataclass(frozen=True)
class LineArrays:
    """Order lines with a customer id, in the orders table's order."""

    cust: np.ndarray  # int32 customer code
    order: np.ndarray  # int32 code of the (customer, order_id) pair, numbered by first appearance
    order_ids: np.ndarray  # the order_id of each order code (object)
    ts: np.ndarray  # datetime64[ns]
    quantity: np.ndarray
    unit_price: np.ndarray
    discount: np.ndarray
    product: np.ndarray  # int32 product code
    channel: np.ndarray  # int32 code into ShopCodes.channels, -1 for none


@dataclass(frozen=True)
class EventArrays:
    """Events with a customer id, in the events table's order."""

    cust: np.ndarray
    ts: np.ndarray  # datetime64[ns]
    kind: np.ndarray  # int8 code into EVENT_KINDS
    product: np.ndarray


@dataclass(frozen=True)
class OfferArrays:
    """The offer log, in its order."""

    cust: np.ndarray
    sent: np.ndarray  # datetime64[ns]
    treated: np.ndarray  # bool
    redeemed: np.ndarray  # datetime64[ns], NaT when not redeemed


@dataclass(frozen=True)
class ShopCodes:
    customers: np.ndarray  # sorted customer ids (object)
    products: np.ndarray  # product ids: the products table's, then unknown ones (object)
    n_known_products: int
    categories: np.ndarray  # sorted category values (object)
    channels: np.ndarray  # sorted order channel values (object)
    product_category: np.ndarray  # int32 category code per product code, -1 for none
    product_cost: np.ndarray  # float unit cost per product code, NaN for none
    lines: LineArrays
    events: EventArrays | None
    offers: OfferArrays | None
    signup: np.ndarray  # datetime64[ns] per customer code, NaT when not in the customers table or unknown
    customer_attrs: dict[str, np.ndarray]
    """region, acquisition_channel per customer code (object; NaN for customers the customers table lacks, as
    a reindex gives)."""
    whole: ShopCodes | None = None
    """For a part (:func:`restrict`): the shop's codes it was taken from; None: these are the whole shop's."""
    part: np.ndarray | None = None
    """For a part: True for the customer codes whose rows it holds."""

    @functools.cached_property
    def _customer_index(self) -> pd.Index:
        return pd.Index(self.customers)

    def customer_codes(self, ids: pd.Index) -> np.ndarray:
        """Codes of ``ids`` (-1 for ids no table names)."""
        return np.asarray(self._customer_index.get_indexer(pd.Index(ids)), dtype=np.int64)


def restrict(c: ShopCodes, keep: np.ndarray) -> ShopCodes:
    """The order lines, events and offer_log rows of the customers whose code is True in ``keep`` (one per
    customer code), in their tables' order, with every code and vocabulary as in ``c``: a feature builder
    asked for some of these customers reads only their rows, instead of masking the whole shop's at every
    cutoff."""
    whole = c.whole or c
    keep = np.asarray(keep, bool)[: len(c.customers)]
    if c.part is not None:
        keep = keep & c.part

    def rows(arrays: Any) -> Any:
        if arrays is None:
            return None
        m = keep[np.maximum(arrays.cust, 0)] & (arrays.cust >= 0)
        return type(arrays)(**{k: (v if k == "order_ids" else v[m]) for k, v in arrays.__dict__.items()})

    return dataclasses.replace(c, lines=rows(c.lines), events=rows(c.events), offers=rows(c.offers),
                               whole=whole, part=keep)


def shop_codes(shop: Shop) -> ShopCodes:
    """The coded arrays of ``shop``: computed once, and again when a table on it is replaced."""
    tables = (shop.orders, shop.products, shop.customers, shop.events, shop.offer_log)
    cached = shop.__dict__.get("_codes")
    if cached is not None and all(a is b for a, b in zip(cached[0], tables, strict=True)):
        return cached[1]  # type: ignore[no-any-return]
    codes = _build(shop)
    shop.__dict__["_codes"] = (tables, codes)
    return codes


def _factorize(values: pd.Series | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codes, uniques = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=True)
    return codes, np.asarray(uniques, dtype=object)


def _remap(codes: np.ndarray, uniques: np.ndarray, vocab: pd.Index) -> np.ndarray:
    m = np.asarray(vocab.get_indexer(uniques), dtype=np.int32)
    return np.where(codes >= 0, m[np.maximum(codes, 0)] if len(m) else -1, -1).astype(np.int32)


def _sorted_codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes into the sorted distinct non-null values (-1 for null), and those values."""
    codes, uniques = _factorize(values)
    vocab = np.sort(uniques) if len(uniques) else uniques
    return _remap(codes, uniques, pd.Index(vocab)), vocab


def _build(shop: Shop) -> ShopCodes:
    o = shop.orders
    has_cust = o[schema.CUSTOMER_ID].notna().to_numpy()
    ev = shop.events
    ev = ev[ev[schema.CUSTOMER_ID].notna()] if ev is not None and len(ev) else None
    ol = shop.offer_log if shop.offer_log is not None and len(shop.offer_log) else None
    # customers: one sorted vocabulary over every table
    parts = {"orders": _factorize(o[schema.CUSTOMER_ID].to_numpy()[has_cust]),
             "customers": _factorize(shop.customers[schema.CUSTOMER_ID])}
    if ev is not None:
        parts["events"] = _factorize(ev[schema.CUSTOMER_ID])
    if ol is not None:
        parts["offers"] = _factorize(ol[schema.CUSTOMER_ID])
    customers = np.sort(pd.unique(np.concatenate([u for _, u in parts.values()])))
    cindex = pd.Index(customers)
    cust = {k: _remap(c, u, cindex) for k, (c, u) in parts.items()}
    # products: the products table's order, then ids only orders or events name
    p = shop.products
    known = pd.Index(p[schema.PRODUCT_ID].to_numpy(dtype=object))
    pc_o, pu_o = _factorize(o[schema.PRODUCT_ID].to_numpy()[has_cust])
    pc_e, pu_e = (
        _factorize(ev[schema.PRODUCT_ID]) if ev is not None else (np.zeros(0, np.int64), np.zeros(0, object))
    )
    extra = np.setdiff1d(np.concatenate([pu_o, pu_e]), known.to_numpy(), assume_unique=False)
    products = np.concatenate([known.to_numpy(), np.sort(extra)])
    pindex = pd.Index(products)
    cat_codes, categories = _sorted_codes(p["category"])
    n_extra = len(products) - len(known)
    lines = _lines(o[has_cust], cust["orders"], _remap(pc_o, pu_o, pindex))
    signup, attrs = _customer_table(shop.customers, cust["customers"], len(customers))
    chan, channels = _sorted_codes(o["channel"][has_cust])
    lines = LineArrays(**{**lines.__dict__, "channel": chan})
    return ShopCodes(
        customers=customers, products=products, n_known_products=len(known), categories=categories,
        channels=channels, product_category=np.concatenate([cat_codes, np.full(n_extra, -1, np.int32)]),
        product_cost=np.concatenate([p["unit_cost"].to_numpy(dtype=float, na_value=np.nan),
                                     np.full(n_extra, np.nan)]),
        lines=lines,
        events=None if ev is None else EventArrays(
            cust=cust["events"], ts=ev["ts"].to_numpy("datetime64[ns]"),
            kind=_kinds(ev[schema.EVENT_TYPE]), product=_remap(pc_e, pu_e, pindex)),
        offers=None if ol is None else OfferArrays(
            cust=cust["offers"], sent=ol[schema.SENT_AT].to_numpy("datetime64[ns]"),
            treated=(ol["group"] == "treatment").to_numpy(bool),
            redeemed=(ol[schema.REDEEMED_AT] if schema.REDEEMED_AT in ol
                      else pd.Series(pd.NaT, index=ol.index)).to_numpy("datetime64[ns]")),
        signup=signup, customer_attrs=attrs)


def _lines(o: pd.DataFrame, cust: np.ndarray, product: np.ndarray) -> LineArrays:
    ocode, ouniq = _factorize(o[schema.ORDER_ID])
    pair = cust.astype(np.int64) * max(len(ouniq), 1) + ocode
    order, pairs = pd.factorize(pair)  # numbered by first appearance
    return LineArrays(cust=cust, order=order.astype(np.int32), order_ids=ouniq[pairs % max(len(ouniq), 1)],
                      ts=o["ts"].to_numpy("datetime64[ns]"),
                      quantity=o[schema.QUANTITY].to_numpy(float), unit_price=o["unit_price"].to_numpy(float),
                      discount=o["discount"].to_numpy(float), product=product,
                      channel=np.zeros(0, np.int32))


def _kinds(event_type: pd.Series) -> np.ndarray:
    codes, uniques = _factorize(event_type)
    return _remap(codes, uniques, pd.Index(np.array(EVENT_KINDS, dtype=object))).astype(np.int8)


def _customer_table(c: pd.DataFrame, codes: np.ndarray, n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    signup = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    if "signup_at" in c:
        signup[codes] = c["signup_at"].to_numpy("datetime64[ns]")
    attrs = {}
    for col in ("acquisition_channel", "region"):
        a = np.full(n, np.nan, dtype=object)
        a[codes] = c[col].to_numpy(dtype=object) if col in c else None
        attrs[col] = a
    return signup, attrs
