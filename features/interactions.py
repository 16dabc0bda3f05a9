"""User-item interaction data as of a cutoff: weighted by event type and recency, returns counted against."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

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


def build_interactions(shop: Shop, cutoff: pd.Timestamp | None = None, config: InteractionConfig | None = None,
                       trending_days: int = 28, non_product: Any = None) -> InteractionData:
    """Interactions strictly before ``cutoff`` (default: after the last row)."""
    cfg = config or InteractionConfig()
    cutoff = pd.Timestamp(cutoff) if cutoff is not None else shop.end + pd.Timedelta(seconds=1)
    o = shop.customer_orders()
    o = o[o["ts"] < cutoff]
    parts = [pd.DataFrame({"customer_id": o["customer_id"], "product_id": o["product_id"], "ts": o["ts"],
                           "w": np.where(o["quantity"] > 0, cfg.purchase, cfg.return_)})]
    if cfg.use_events and shop.events is not None and len(shop.events):
        e = shop.events[(shop.events["ts"] < cutoff) & shop.events["customer_id"].notna()]
        wmap = {"view": cfg.view, "wishlist": cfg.wishlist, "add_to_cart": cfg.add_to_cart,
                "remove_from_cart": cfg.remove_from_cart}
        parts.append(pd.DataFrame({"customer_id": e["customer_id"], "product_id": e["product_id"], "ts": e["ts"],
                                   "w": e["event_type"].map(wmap).astype(float)}))
    allx = pd.concat(parts, ignore_index=True)
    products = shop.products
    users = IdMap(np.sort(allx["customer_id"].unique()))
    items = IdMap(products["product_id"].to_numpy())
    allx = allx[items.rows(allx["product_id"]) >= 0]
    age = (cutoff - allx["ts"]) / pd.Timedelta(days=1)
    decay = np.power(0.5, age.to_numpy() / cfg.half_life_days)
    r, c = users.rows(allx["customer_id"]), items.rows(allx["product_id"])
    shape = (len(users), len(items))
    W = sp.csr_matrix((allx["w"].to_numpy() * decay, (r, c)), shape=shape, dtype=np.float64)
    W.data = np.clip(W.data, 0, None)
    W.eliminate_zeros()
    buys = o[o["quantity"] > 0].assign(day=lambda d: d["ts"].dt.floor("D"))
    bd = buys.drop_duplicates(["customer_id", "product_id", "day"])
    br, bc = users.rows(bd["customer_id"]), items.rows(bd["product_id"])
    ok = bc >= 0
    P = sp.csr_matrix((np.ones(ok.sum()), (br[ok], bc[ok])), shape=shape)
    last = bd.groupby(["customer_id", "product_id"])["ts"].max().reset_index()
    lr, lc = users.rows(last["customer_id"]), items.rows(last["product_id"])
    ok2 = lc >= 0
    L = sp.csr_matrix((((cutoff - last["ts"]) / pd.Timedelta(days=1)).to_numpy()[ok2] + 1, (lr[ok2], lc[ok2])), shape=shape)
    rets = o[o["quantity"] < 0].drop_duplicates(["customer_id", "product_id"])
    rr, rc = users.rows(rets["customer_id"]), items.rows(rets["product_id"])
    ok3 = rc >= 0
    R = sp.csr_matrix((np.ones(ok3.sum()), (rr[ok3], rc[ok3])), shape=shape)
    pid = products["product_id"].astype(str)
    is_product = ~non_product(pid).to_numpy() if non_product is not None else np.ones(len(pid), bool)
    recent = buys[buys["ts"] >= cutoff - pd.Timedelta(days=trending_days)]
    rec_w = np.bincount(items.rows(recent["product_id"])[items.rows(recent["product_id"]) >= 0], minlength=len(items))
    cust = shop.customers.set_index("customer_id")
    region = cust["region"].reindex(users.ids).to_numpy() if "region" in cust else np.full(len(users), None)
    region_recent: dict[str, np.ndarray] = {}
    if "region" in cust and cust["region"].notna().any():
        rr_reg = recent["customer_id"].map(cust["region"])
        for reg, grp in recent.groupby(rr_reg):
            ix = items.rows(grp["product_id"])
            region_recent[str(reg)] = np.bincount(ix[ix >= 0], minlength=len(items)).astype(float)
    return InteractionData(
        users=users, items=items, weights=W, purchases=P, last_purchase_days=L, returned=R,
        item_category=products["category"].astype(object).to_numpy(),
        item_ok=products["in_stock"].to_numpy(bool) & is_product,
        item_replenishable=products["replenishable"].to_numpy(bool),
        item_price=products["price"].to_numpy(float),
        user_region=np.asarray(region, dtype=object), recent_item_weight=rec_w.astype(float),
        region_recent=region_recent, cutoff=cutoff)
