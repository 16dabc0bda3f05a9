"""The feature code as it was before the scale work (commit 3a8f87c), kept verbatim as the reference the
vectorised code must match exactly (tests) and as the baseline of the speed comparison (bench/scale.py).
Not used by the product."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.customer import unify_categories
from features.interactions import IdMap, InteractionConfig, InteractionData
from features.io import Shop
from models.triggers import TriggerConfig

DAY = np.timedelta64(1, "D")


def old_order_lines(shop: Shop, cutoff: pd.Timestamp | None = None,
                    start: pd.Timestamp | None = None) -> pd.DataFrame:
    """Customer order lines in ``[start, cutoff)`` with net amount, cost and product category attached."""
    o = _old_all_lines(shop)
    if cutoff is not None:
        o = o[o["ts"] < cutoff]
    if start is not None:
        o = o[o["ts"] >= start]
    return o


def _old_all_lines(shop: Shop) -> pd.DataFrame:
    """Every customer order line with its amounts, computed once per orders and products tables (training
    asks for the lines at a dozen cutoffs; a table replaced on the shop is seen)."""
    cached = shop.__dict__.get("_old_all_lines")
    if cached is not None and cached[0] is shop.orders and cached[1] is shop.products:
        return cached[2]
    o = shop.customer_orders()
    p = shop.products.set_index("product_id")
    gross = o["quantity"] * o["unit_price"]
    net = gross - np.sign(o["quantity"]) * o["discount"]
    cost = o["quantity"] * o["product_id"].map(p["unit_cost"]).astype(float)
    lines = o.assign(gross=gross, net=net, cost=cost, category=o["product_id"].map(p["category"]),
                     is_return=o["quantity"] < 0)
    shop.__dict__["_old_all_lines"] = (shop.orders, shop.products, lines)
    return lines


def old_customer_features(shop: Shop, cutoff: pd.Timestamp,
                          customers: pd.Index | None = None) -> pd.DataFrame:
    """One row per customer known before ``cutoff`` (index ``customer_id``), nothing after it leaks in.

    Columns: RFM (recency_days, n_orders, gross_spend), value net of returns, discounts and cost
    (returns_value, return_rate, discount_total, discount_share, net_revenue, net_margin), rhythm
    (tenure_days, ipt_mean, ipt_std, overdue), trends (net_30/90/180, trend_90), breadth and taste
    (n_categories, n_products, units, purchase_days, top_category, preferred_channel, holiday_share),
    acquisition channel and region, behaviour (views_30, carts_30, abandoned_carts_90, days_since_visit) and
    offer history (offers_received, offers_redeemed, redemption_rate, days_since_offer).
    """
    cutoff = pd.Timestamp(cutoff)
    lines = old_order_lines(shop, cutoff)
    buys = lines[~lines["is_return"]]
    rets = lines[lines["is_return"]]
    orders = buys.groupby(["customer_id", "order_id"], sort=False).agg(
        ts=("ts", "min"), value=("net", "sum"), channel=("channel", "first")).reset_index()
    orders = orders.sort_values(["customer_id", "ts"], kind="stable")
    g = orders.groupby("customer_id", sort=True)
    f = pd.DataFrame({
        "n_orders": g.size(),
        "first_purchase": g["ts"].min(),
        "last_purchase": g["ts"].max(),
        "avg_order_value": g["value"].mean(),
        "max_order_value": g["value"].max(),
    })
    f["recency_days"] = (cutoff - f["last_purchase"]) / DAY
    f["purchase_age_days"] = (cutoff - f["first_purchase"]) / DAY
    gap = orders.groupby("customer_id")["ts"].diff() / DAY
    gaps = gap.groupby(orders["customer_id"])
    f["ipt_mean"] = gaps.mean()
    f["ipt_std"] = gaps.std()
    f["overdue"] = f["recency_days"] / np.maximum(f["ipt_mean"], 1.0)
    bl = buys.groupby("customer_id")
    f["gross_spend"] = bl["gross"].sum()
    f["discount_total"] = bl["discount"].sum()
    f["discount_share"] = buys["gross"].where(buys["discount"] > 0, 0.0).groupby(
        buys["customer_id"]
    ).sum() / f["gross_spend"].replace(0, np.nan)
    f["n_categories"] = bl["category"].nunique()
    # breadth and size where a shop has few categories (Online Retail has one): distinct products, units, and
    # distinct purchase days (several invoices on one day are one visit); churn AUC 0.743 -> 0.748 there
    f["n_products"] = bl["product_id"].nunique()
    f["units"] = bl["quantity"].sum()
    f["purchase_days"] = (
        orders.assign(day=orders["ts"].dt.normalize())
        .drop_duplicates(["customer_id", "day"])
        .groupby("customer_id")
        .size()
    )
    top = buys.dropna(subset=["category"]).groupby(["customer_id", "category"])["net"].sum()
    if len(top):
        f["top_category"] = (
            top.reset_index()
            .sort_values("net")
            .drop_duplicates("customer_id", keep="last")
            .set_index("customer_id")["category"]
        )
    else:
        f["top_category"] = None
    f["returns_value"] = -rets.groupby("customer_id")["net"].sum()
    f["returns_value"] = f["returns_value"].fillna(0.0)
    f["return_rate"] = (
        f["returns_value"] / (f["gross_spend"] - f["discount_total"]).replace(0, np.nan)
    ).clip(0, 1.5)
    f["net_revenue"] = lines.groupby("customer_id")["net"].sum()
    has_cost = lines["cost"].notna().any()
    f["net_margin"] = (
        (lines["net"] - lines["cost"]).groupby(lines["customer_id"]).sum() if has_cost else np.nan
    )
    for days in (30, 90, 180):
        recent = lines[lines["ts"] >= cutoff - pd.Timedelta(days=days)]
        f[f"net_{days}"] = recent.groupby("customer_id")["net"].sum()
        f[f"net_{days}"] = f[f"net_{days}"].fillna(0.0)
        f[f"orders_{days}"] = (
            orders[orders["ts"] >= cutoff - pd.Timedelta(days=days)].groupby("customer_id").size()
        )
        f[f"orders_{days}"] = f[f"orders_{days}"].fillna(0)
    # trend: spend of the last 90 days against the customer's own 90-day average over their history
    hist_rate = f["net_revenue"] / np.maximum(f["purchase_age_days"], 90) * 90
    f["trend_90"] = (f["net_90"] / hist_rate.where(hist_rate > 1.0)).clip(-5, 20)
    md = orders["ts"].dt.month
    f["holiday_share"] = (md >= 11).groupby(orders["customer_id"]).mean()
    chan = orders.dropna(subset=["channel"])
    if len(chan):
        cnt = chan.groupby(["customer_id", "channel"]).size().reset_index(name="n")
        cnt = cnt.sort_values(["customer_id", "n", "channel"], ascending=[True, False, True], kind="stable")
        f["preferred_channel"] = cnt.drop_duplicates("customer_id").set_index("customer_id")["channel"]
    else:
        f["preferred_channel"] = None
    # customers known before the cutoff
    c = shop.customers.set_index("customer_id")
    known = c.index[c["signup_at"] < cutoff] if "signup_at" in c else c.index[:0]
    if shop.events is not None:
        known = known.union(
            pd.Index(shop.events.loc[shop.events["ts"] < cutoff, "customer_id"].dropna().unique())
        )
    idx = f.index.union(known) if customers is None else pd.Index(customers)
    f = f.reindex(idx)
    f.index.name = "customer_id"
    signup = c["signup_at"].reindex(idx) if "signup_at" in c else pd.Series(pd.NaT, index=idx)
    first_seen = pd.concat([signup, f["first_purchase"]], axis=1).min(axis=1)
    f["tenure_days"] = (cutoff - first_seen) / DAY
    for col in ("acquisition_channel", "region"):
        f[col] = c[col].reindex(idx) if col in c else None
    for col in ("n_orders", "gross_spend", "discount_total", "net_revenue", "n_categories",
                "n_products", "units", "purchase_days", "returns_value"):
        f[col] = f[col].fillna(0.0)
    f["n_orders"] = f["n_orders"].astype(int)
    _behaviour(f, shop, cutoff)
    _offer_history(f, shop, cutoff)
    return unify_categories(f.drop(columns=["first_purchase", "last_purchase"]))


def _behaviour(f: pd.DataFrame, shop: Shop, cutoff: pd.Timestamp) -> None:
    ev = shop.events
    cols = ["views_30", "carts_30", "abandoned_carts_90", "days_since_visit"]
    if ev is None or not len(ev):
        for col in cols:
            f[col] = np.nan
        return
    e = ev[(ev["ts"] < cutoff) & ev["customer_id"].notna()]
    last30 = e[e["ts"] >= cutoff - pd.Timedelta(days=30)]
    f["views_30"] = (
        (last30["event_type"] == "view").groupby(last30["customer_id"]).sum().reindex(f.index).fillna(0)
    )
    f["carts_30"] = (last30["event_type"] == "add_to_cart").groupby(last30["customer_id"]).sum().reindex(
        f.index).fillna(0)
    f["days_since_visit"] = (cutoff - e.groupby("customer_id")["ts"].max()) / DAY
    # abandoned carts: carted products not bought by that customer within 7 days, over the last 90 days
    carts = e[(e["event_type"] == "add_to_cart") & (e["ts"] >= cutoff - pd.Timedelta(days=90))]
    carts = carts[["customer_id", "product_id", "ts"]].drop_duplicates(["customer_id",
                                                                        "product_id"], keep="last")
    o = shop.customer_orders()
    o = o[(o["ts"] < cutoff) & (o["quantity"] > 0)][["customer_id", "product_id", "ts"]]
    m = carts.merge(o, on=["customer_id", "product_id"], how="left", suffixes=("", "_o"))
    m["bought"] = (m["ts_o"] >= m["ts"]) & (m["ts_o"] < m["ts"] + pd.Timedelta(days=7))
    ab = ~m.groupby(["customer_id", "product_id", "ts"])["bought"].any()
    f["abandoned_carts_90"] = ab.groupby(level="customer_id").sum().reindex(f.index).fillna(0)


def _offer_history(f: pd.DataFrame, shop: Shop, cutoff: pd.Timestamp) -> None:
    ol = shop.offer_log
    if ol is None or not len(ol):
        for col in ("offers_received", "offers_redeemed", "redemption_rate", "days_since_offer"):
            f[col] = np.nan
        return
    t = ol[(ol["sent_at"] < cutoff) & (ol["group"] == "treatment")]
    g = t.groupby("customer_id")
    f["offers_received"] = g.size().reindex(f.index).fillna(0)
    red = t["redeemed_at"].notna() & (t["redeemed_at"] < cutoff)
    f["offers_redeemed"] = red.groupby(t["customer_id"]).sum().reindex(f.index).fillna(0)
    f["redemption_rate"] = f["offers_redeemed"] / f["offers_received"].replace(0, np.nan)
    f["days_since_offer"] = (cutoff - g["sent_at"].max()) / DAY


def old_future_labels(shop: Shop, cutoff: pd.Timestamp, horizon_days: int,
                      customers: pd.Index) -> pd.DataFrame:
    """What happened in ``[cutoff, cutoff + horizon)``: churn (no purchase), net revenue and net margin."""
    cutoff = pd.Timestamp(cutoff)
    lines = old_order_lines(shop, cutoff + pd.Timedelta(days=horizon_days), start=cutoff)
    buys = lines[~lines["is_return"]]
    n = buys.groupby("customer_id")["order_id"].nunique().reindex(customers).fillna(0)
    net = lines.groupby("customer_id")["net"].sum().reindex(customers).fillna(0.0)
    margin = (lines["net"] - lines["cost"]).groupby(lines["customer_id"]).sum(min_count=1).reindex(customers)
    return pd.DataFrame({"churn": (n == 0).astype(int), "future_orders": n, "future_net": net,
                         "future_margin": margin}, index=customers)



def old_build_interactions(shop: Shop, cutoff: pd.Timestamp | None = None,
                           config: InteractionConfig | None = None,
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
        parts.append(pd.DataFrame({"customer_id": e["customer_id"],
                                   "product_id": e["product_id"], "ts": e["ts"],
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
    L = sp.csr_matrix((((cutoff - last["ts"]) / pd.Timedelta(days=1)).to_numpy()[ok2] + 1,
                       (lr[ok2], lc[ok2])), shape=shape)
    rets = o[o["quantity"] < 0].drop_duplicates(["customer_id", "product_id"])
    rr, rc = users.rows(rets["customer_id"]), items.rows(rets["product_id"])
    ok3 = rc >= 0
    R = sp.csr_matrix((np.ones(ok3.sum()), (rr[ok3], rc[ok3])), shape=shape)
    pid = products["product_id"].astype(str)
    is_product = ~non_product(pid).to_numpy() if non_product is not None else np.ones(len(pid), bool)
    recent = buys[buys["ts"] >= cutoff - pd.Timedelta(days=trending_days)]
    rec_w = np.bincount(items.rows(recent["product_id"])[items.rows(recent["product_id"]) >= 0],
                        minlength=len(items))
    before = buys[(buys["ts"] < cutoff - pd.Timedelta(days=trending_days))
                  & (buys["ts"] >= cutoff - pd.Timedelta(days=4 * trending_days))]
    bix = items.rows(before["product_id"])
    prior_w = np.bincount(bix[bix >= 0], minlength=len(items)) / 3
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
        region_recent=region_recent, cutoff=cutoff, prior_item_weight=prior_w.astype(float))


def _old_trigger_orders(lines: pd.DataFrame) -> pd.DataFrame:
    buys = lines[lines["quantity"] > 0]
    o = (
        buys.groupby(["customer_id", "order_id"], sort=False)
        .agg(ts=("ts", "min"), value=("net", "sum"))
        .reset_index()
    )
    return o.sort_values(["customer_id", "ts", "order_id"], kind="stable").reset_index(drop=True)


def old_detect_triggers(lines: pd.DataFrame, since: pd.Timestamp, until: pd.Timestamp,
                    config: TriggerConfig | None = None, churn_before: pd.Series | None = None,
                    churn_now: pd.Series | None = None) -> pd.DataFrame:
    """Triggers whose occurrence falls in ``(since, until]``; only data up to ``until`` is read.

    Returns columns customer_id, trigger, at, detail (one row per occurrence).
    """
    cfg = config or TriggerConfig()
    since, until = pd.Timestamp(since), pd.Timestamp(until)
    lines = lines[lines["ts"] <= until]
    o = _old_trigger_orders(lines)
    rows: list[pd.DataFrame] = []
    in_win = (o["ts"] > since) & (o["ts"] <= until)
    g = o.groupby("customer_id")
    n_before = g.cumcount()
    prev_mean = g["value"].transform(lambda s: s.shift().expanding().mean())
    jump = in_win & (n_before >= cfg.spend_jump_min_orders) & (o["value"] > cfg.spend_jump_factor * prev_mean)
    rows.append(pd.DataFrame({"customer_id": o.loc[jump, "customer_id"], "trigger": "spend_jump",
                              "at": o.loc[jump, "ts"],
                              "detail": [f"order {oid} worth {v:.2f} vs average {m:.2f}" for oid, v, m in
                                         zip(o.loc[jump, "order_id"], o.loc[jump, "value"],
                                             prev_mean[jump], strict=True)]}))
    first = in_win & (n_before == 0)
    rows.append(pd.DataFrame({"customer_id": o.loc[first, "customer_id"], "trigger": "first_purchase",
                              "at": o.loc[first, "ts"],
                              "detail": "first order " + o.loc[first, "order_id"].astype(str)}))
    # dormancy: the moment the silence since the last order crosses the customer's line
    gap = g["ts"].diff() / pd.Timedelta(days=1)
    usual = gap.groupby(o["customer_id"]).mean()
    last = g["ts"].max()
    line_days = (usual * cfg.dormancy_factor).reindex(last.index)
    line_days = line_days.where(line_days.notna() & (line_days > 0), cfg.dormancy_days)
    cross = last + pd.to_timedelta(line_days, unit="D")
    dorm = (cross > since) & (cross <= until)
    rows.append(pd.DataFrame({"customer_id": cross.index[dorm], "trigger": "dormancy",
                              "at": cross[dorm].to_numpy(),
                              "detail": [f"no order for {d:.0f} days (line {d:.0f})"
                                         for d in line_days[dorm]]}))
    rets = lines[(lines["quantity"] < 0) & (lines["ts"] > since)]
    rv = (-rets.groupby(["customer_id", "order_id"])["net"].sum()).reset_index()
    rts = rets.groupby(["customer_id", "order_id"])["ts"].min().reset_index(drop=True)
    rv["at"] = rts.to_numpy()
    big = rv[rv["net"] >= cfg.high_value_return]
    rows.append(pd.DataFrame({"customer_id": big["customer_id"], "trigger": "high_value_return",
                              "at": big["at"],
                              "detail": [f"returned {v:.2f} in {oid}"
                                         for v, oid in zip(big["net"], big["order_id"], strict=True)]}))
    if churn_now is not None:
        before = (
            (churn_before if churn_before is not None else pd.Series(0.0, index=churn_now.index))
            .reindex(churn_now.index)
            .fillna(0.0)
        )
        up = (before < cfg.churn_threshold) & (churn_now >= cfg.churn_threshold)
        rows.append(pd.DataFrame({"customer_id": churn_now.index[up], "trigger": "churn_risk", "at": until,
                                  "detail": [f"churn risk {p:.2f} crossed {cfg.churn_threshold}"
                                             for p in churn_now[up]]}))
    out = (pd.concat([r for r in rows if len(r)], ignore_index=True) if any(len(r) for r in rows)
           else pd.DataFrame(columns=["customer_id", "trigger", "at", "detail"]))
    out["at"] = pd.to_datetime(out["at"])
    return out.sort_values(["at", "customer_id", "trigger"], kind="stable").reset_index(drop=True)



def old_order_values(shop: Shop, cutoff: pd.Timestamp) -> pd.DataFrame:
    """training.bgnbd_fit.order_values as it was."""
    lines = old_order_lines(shop, cutoff)
    return (
        lines.groupby(["customer_id", "order_id"], sort=False)
        .agg(ts=("ts", "min"), value=("net", "sum"))
        .reset_index()
    )


def old_rfm_summary(orders: pd.DataFrame, cutoff: pd.Timestamp, unit_days: float = 7.0) -> pd.DataFrame:
    """Per-customer (x, t_x, T, monetary) from orders with columns customer_id, ts, value.

    Purchases on the same day count once (the BG/NBD convention); ``monetary`` is the mean value of
    repeat purchase days.
    """
    d = (
        orders.assign(day=orders["ts"].dt.floor("D"))
        .groupby(["customer_id", "day"])["value"]
        .sum()
        .reset_index()
    )
    g = d.groupby("customer_id")
    first, last = g["day"].min(), g["day"].max()
    n = g.size()
    first_val = d.sort_values("day").groupby("customer_id")["value"].first()
    total = g["value"].sum()
    x = n - 1
    monetary = ((total - first_val) / x.replace(0, np.nan)).fillna(0.0)
    return pd.DataFrame({
        "x": x.astype(float),
        "t_x": (last - first) / pd.Timedelta(days=unit_days),
        "T": (pd.Timestamp(cutoff).floor("D") - first) / pd.Timedelta(days=unit_days),
        "monetary": monetary,
    })


def old_stacked_training_set(shop: Shop, cutoffs: list[pd.Timestamp], horizon_days: int
                         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features and labels at several cutoffs, stacked (customers with a past purchase only)."""
    xs, ys = [], []
    for c in cutoffs:
        X = old_customer_features(shop, c)
        X = X[X["n_orders"] > 0]
        y = old_future_labels(shop, c, horizon_days, X.index)
        xs.append(X.assign(_cutoff=c))
        ys.append(y)
    if not xs:
        return pd.DataFrame(), pd.DataFrame()
    X = pd.concat(xs)
    return unify_categories(X.drop(columns="_cutoff")), pd.concat(ys)
