"""User-item interaction data as of a cutoff: weighted by event type and recency, returns counted against."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features import schema
from features.codes import shop_codes
from features.io import Shop


@dataclass(frozen=True)
class InteractionConfig:
    view: float = 0.25
    wishlist: float = 0.5
    add_to_cart: float = 1.0
    remove_from_cart: float = -0.5
    purchase: float = 3.0
    return_: float = -3.0
    half_life_days: float = 120.0
    """Time decay: an interaction this many days before the cutoff counts half."""
    use_events: bool = True

    def to_params(self) -> dict[str, Any]:
        return {f"interactions.{k}": v for k, v in asdict(self).items()}


class IdMap:
    """Maps the caller's ids to matrix rows and back. Unknown ids map to -1."""

    def __init__(self, ids: Any) -> None:
        self.ids = np.asarray(pd.Index(ids).astype(object))
        self._pos = {v: i for i, v in enumerate(self.ids.tolist())}

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, ids: Any) -> np.ndarray:
        if isinstance(ids, (str, bytes)):
            ids = [ids]
        if len(ids) > 256:  # a table column: one vectorised lookup
            index = self.__dict__.get("_index")
            if index is None:
                index = self._index = pd.Index(self.ids)
            return np.asarray(index.get_indexer(pd.Index(np.asarray(ids, dtype=object))), dtype=np.int64)
        pos = self._pos
        return np.fromiter((pos.get(i, -1) for i in ids), dtype=np.int64)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_index"}

    def __setstate__(self, state: dict[str, Any]) -> None:  # models pickled before the dict lookup existed
        state.pop("_index", None)
        self.__dict__.update(state)
        if "_pos" not in state:
            self._pos = {v: i for i, v in enumerate(self.ids.tolist())}

    def row(self, id_: Any) -> int:
        return self._pos.get(id_, -1)

    def __contains__(self, item: object) -> bool:
        return item in self._pos


@dataclass
class InteractionData:
    """Everything a recommender learns from, aligned on one user and one item id map."""

    users: IdMap
    items: IdMap
    weights: sp.csr_matrix  # users x items, decayed and signed, clipped at 0
    purchases: sp.csr_matrix  # users x items, count of distinct purchase days (undecayed)
    last_purchase_days: sp.csr_matrix  # days before cutoff of the last purchase (+1 so zeros stay sparse)
    returned: sp.csr_matrix  # users x items, 1 where the user returned the item
    item_category: np.ndarray
    item_ok: np.ndarray  # in stock and a real product
    item_replenishable: np.ndarray
    item_price: np.ndarray
    user_region: np.ndarray
    recent_item_weight: np.ndarray  # purchases in the trending window, per item
    region_recent: dict[str, np.ndarray] = field(default_factory=dict)
    cutoff: pd.Timestamp | None = None
    prior_item_weight: np.ndarray | None = None
    """Purchases per item in the :data:`PRIOR_WINDOWS` trending windows before the trending window, divided
    by their number: the rate the trending window is compared against (None: not built)."""


PRIOR_WINDOWS = 3
"""Trending windows before the trending one whose mean purchases are an item's prior rate."""


def build_interactions(shop: Shop, cutoff: pd.Timestamp | None = None,
                       config: InteractionConfig | None = None, trending_days: int = 28,
                       non_product: Any = None) -> InteractionData:
    """Interactions strictly before ``cutoff`` (default: after the last row).

    Products whose ``is_product`` is False (the data contract's statement: postage, fees, vouchers) are never
    recommendable. ``non_product``: an extra predicate on product ids for research code; the model path
    passes none - which ids are products is the data's to say, not a rule in the models.
    Built from the shop's integer-coded arrays (:mod:`features.codes`): no id is hashed per call."""
    cfg = config or InteractionConfig()
    cutoff = pd.Timestamp(cutoff) if cutoff is not None else shop.end + pd.Timedelta(seconds=1)
    c = shop_codes(shop)
    end = np.datetime64(cutoff.as_unit("ns").asm8)
    a = c.lines
    mo = a.ts < end
    ocust, oprod, ots, oq = a.cust[mo], a.product[mo], a.ts[mo], a.quantity[mo]
    cust, prod, ts = [ocust], [oprod], [ots]
    w = [np.where(oq > 0, cfg.purchase, cfg.return_)]
    e = c.events
    if cfg.use_events and e is not None and len(shop.events):  # type: ignore[arg-type]
        me = e.ts < end
        wmap = np.array([cfg.view, cfg.add_to_cart, cfg.remove_from_cart, cfg.wishlist, np.nan])
        cust.append(e.cust[me])
        prod.append(e.product[me])
        ts.append(e.ts[me])
        w.append(wmap[e.kind[me]])
    ucodes = np.unique(np.concatenate(cust))
    users = IdMap(c.customers[ucodes])
    row = np.full(len(c.customers), -1, np.int64)
    row[ucodes] = np.arange(len(ucodes))
    items = IdMap(shop.products[schema.PRODUCT_ID].to_numpy())
    n_items = c.n_known_products
    shape = (len(users), n_items)
    r, col, t, wt = (np.concatenate(x) for x in (cust, prod, ts, w))
    known = col < n_items
    age = (end - t[known]) / np.timedelta64(1, "D")
    W = sp.csr_matrix((wt[known] * np.power(0.5, age / cfg.half_life_days), (row[r[known]], col[known])),
                      shape=shape, dtype=np.float64)
    W.data = np.clip(W.data, 0, None)
    W.eliminate_zeros()
    P, L, R = _purchase_matrices(ocust, oprod, ots, oq, row, len(c.products), shape, end)
    is_product = _is_product(shop, non_product)
    recent = (oq > 0) & (ots >= end - np.timedelta64(trending_days, "D"))
    rcust, rprod = ocust[recent], oprod[recent]
    rec_w = np.bincount(rprod[rprod < n_items], minlength=n_items)
    prior_w = _prior_item_weight(oprod, ots, oq, end, trending_days, n_items)
    products = shop.products
    return InteractionData(
        users=users, items=items, weights=W, purchases=P, last_purchase_days=L, returned=R,
        item_category=products["category"].astype(object).to_numpy(),
        item_ok=products["in_stock"].to_numpy(bool) & is_product,
        item_replenishable=products["replenishable"].to_numpy(bool),
        item_price=products["price"].to_numpy(float),
        user_region=np.asarray(c.customer_attrs["region"][ucodes] if "region" in shop.customers
                               else np.full(len(users), None), dtype=object),
        recent_item_weight=rec_w.astype(float),
        region_recent=_region_recent(shop, c, rcust, rprod, n_items), cutoff=cutoff,
        prior_item_weight=prior_w.astype(float))


def _is_product(shop: Shop, non_product: Any) -> np.ndarray:
    """The products that are products (the contract's ``is_product``, true where not said), and not
    ``non_product`` (research code's predicate on product ids)."""
    pid = shop.products["product_id"].astype(str)
    is_product = (shop.products[schema.IS_PRODUCT].fillna(True).to_numpy(bool) if schema.IS_PRODUCT
                  in shop.products else np.ones(len(pid), bool))
    if non_product is not None:
        is_product = is_product & ~non_product(pid).to_numpy()
    return is_product  # type: ignore[no-any-return]


def _prior_item_weight(prod: np.ndarray, ts: np.ndarray, q: np.ndarray, end: np.datetime64,
                       trending_days: int, n_items: int) -> np.ndarray:
    """Purchases per known product in the :data:`PRIOR_WINDOWS` windows of ``trending_days`` before the
    trending window (which ends at ``end``), per window."""
    prior = ((q > 0) & (ts < end - np.timedelta64(trending_days, "D"))
             & (ts >= end - np.timedelta64((1 + PRIOR_WINDOWS) * trending_days, "D")))
    pprod = prod[prior]
    return np.bincount(pprod[pprod < n_items], minlength=n_items) / PRIOR_WINDOWS  # type: ignore[no-any-return]


def _purchase_matrices(cust: np.ndarray, prod: np.ndarray, ts: np.ndarray, q: np.ndarray, row: np.ndarray,
                       width: int, shape: tuple[int, int], end: np.datetime64
                       ) -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]:
    """Distinct purchase days, days since the last purchase (+1) and returns, per customer and product
    (``width``: the number of product codes; codes from ``shape[1]`` on are not in the catalogue)."""
    n_items = shape[1]
    b = q > 0
    bc, bp, bt = cust[b], prod[b], ts[b]
    first = (
        ~pd.DataFrame({"c": bc, "p": bp, "d": bt.astype("datetime64[D]").view(np.int64)})
        .duplicated()
        .to_numpy()
    )
    bc, bp, bt = bc[first], bp[first], bt[first]
    ok = bp < n_items
    P = sp.csr_matrix((np.ones(int(ok.sum())), (row[bc[ok]], bp[ok])), shape=shape)
    last = pd.Series(bt.view(np.int64)).groupby(bc.astype(np.int64) * width + bp, sort=False).max()
    lc, lp = np.divmod(last.index.to_numpy(), width)
    ok = lp < n_items
    days = (end - last.to_numpy().view("datetime64[ns]")) / np.timedelta64(1, "D")
    L = sp.csr_matrix((days[ok] + 1, (row[lc[ok]], lp[ok])), shape=shape)
    rc, rp = cust[q < 0], prod[q < 0]
    first = ~pd.DataFrame({"c": rc, "p": rp}).duplicated().to_numpy() & (rp < n_items)
    R = sp.csr_matrix((np.ones(int(first.sum())), (row[rc[first]], rp[first])), shape=shape)
    return P, L, R


def _region_recent(shop: Shop, c: Any, cust: np.ndarray, prod: np.ndarray,
                   n_items: int) -> dict[str, np.ndarray]:
    """Purchase lines of the trending window per item, by the buyer's region (sorted by region)."""
    cust_tab = shop.customers
    if "region" not in cust_tab or not cust_tab["region"].notna().any():
        return {}
    reg = c.customer_attrs["region"][cust]
    codes, uniques = pd.factorize(reg, use_na_sentinel=True)
    out: dict[str, np.ndarray] = {}
    for k in np.argsort(uniques.astype(str)) if len(uniques) else []:
        m = (codes == k) & (prod < n_items)
        out[str(uniques[k])] = np.bincount(prod[m], minlength=n_items).astype(float)
    return out
