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

import numpy as np
import pandas as pd

from features.io import Shop

CATEGORICAL = ["top_category", "preferred_channel", "acquisition_channel", "region"]
DAY = np.timedelta64(1, "D")


def order_lines(shop: Shop, cutoff: pd.Timestamp | None = None, start: pd.Timestamp | None = None) -> pd.DataFrame:
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
    p = shop.products.set_index("product_id")
    gross = o["quantity"] * o["unit_price"]
    net = gross - np.sign(o["quantity"]) * o["discount"]
    cost = o["quantity"] * o["product_id"].map(p["unit_cost"]).astype(float)
    lines = o.assign(gross=gross, net=net, cost=cost, category=o["product_id"].map(p["category"]),
                     is_return=o["quantity"] < 0)
    shop.__dict__["_all_lines"] = (shop.orders, shop.products, lines)
    return lines


def unify_categories(X: pd.DataFrame) -> pd.DataFrame:
    """The text columns of :data:`CATEGORICAL` as categories over the values present (in place, and returned):
    frames built at different cutoffs or send dates carry different category sets until re-unified."""
    for col in CATEGORICAL:
        if col in X:
            X[col] = X[col].astype("string").astype("category")
    return X


def customer_features(shop: Shop, cutoff: pd.Timestamp, customers: pd.Index | None = None) -> pd.DataFrame:
    """One row per customer known before ``cutoff`` (index ``customer_id``), nothing after it leaks in.

    Columns: RFM (recency_days, n_orders, gross_spend), value net of returns, discounts and cost
    (returns_value, return_rate, discount_total, discount_share, net_revenue, net_margin), rhythm
    (tenure_days, ipt_mean, ipt_std, overdue), trends (net_30/90/180, trend_90), breadth and taste
    (n_categories, n_products, units, purchase_days, top_category, preferred_channel, holiday_share), acquisition channel and region,
    behaviour (views_30, carts_30, abandoned_carts_90, days_since_visit) and offer history
    (offers_received, offers_redeemed, redemption_rate, days_since_offer).
    """
    cutoff = pd.Timestamp(cutoff)
    lines = order_lines(shop, cutoff)
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
    f["discount_share"] = buys["gross"].where(buys["discount"] > 0, 0.0).groupby(buys["customer_id"]).sum() / f[
        "gross_spend"].replace(0, np.nan)
    f["n_categories"] = bl["category"].nunique()
    # breadth and size where a shop has few categories (Online Retail has one): distinct products, units, and
    # distinct purchase days (several invoices on one day are one visit); churn AUC 0.743 -> 0.748 there
    f["n_products"] = bl["product_id"].nunique()
    f["units"] = bl["quantity"].sum()
    f["purchase_days"] = orders.assign(day=orders["ts"].dt.normalize()).drop_duplicates(["customer_id", "day"]).groupby(
        "customer_id").size()
    top = buys.dropna(subset=["category"]).groupby(["customer_id", "category"])["net"].sum()
    if len(top):
        f["top_category"] = top.reset_index().sort_values("net").drop_duplicates("customer_id", keep="last").set_index(
            "customer_id")["category"]
    else:
        f["top_category"] = None
    f["returns_value"] = -rets.groupby("customer_id")["net"].sum()
    f["returns_value"] = f["returns_value"].fillna(0.0)
    f["return_rate"] = (f["returns_value"] / (f["gross_spend"] - f["discount_total"]).replace(0, np.nan)).clip(0, 1.5)
    f["net_revenue"] = lines.groupby("customer_id")["net"].sum()
    has_cost = lines["cost"].notna().any()
    f["net_margin"] = (lines["net"] - lines["cost"]).groupby(lines["customer_id"]).sum() if has_cost else np.nan
    for days in (30, 90, 180):
        recent = lines[lines["ts"] >= cutoff - pd.Timedelta(days=days)]
        f[f"net_{days}"] = recent.groupby("customer_id")["net"].sum()
        f[f"net_{days}"] = f[f"net_{days}"].fillna(0.0)
        f[f"orders_{days}"] = orders[orders["ts"] >= cutoff - pd.Timedelta(days=days)].groupby("customer_id").size()
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
        known = known.union(pd.Index(shop.events.loc[shop.events["ts"] < cutoff, "customer_id"].dropna().unique()))
    idx = f.index.union(known) if customers is None else pd.Index(customers)
    f = f.reindex(idx)
    f.index.name = "customer_id"
    signup = c["signup_at"].reindex(idx) if "signup_at" in c else pd.Series(pd.NaT, index=idx)
    first_seen = pd.concat([signup, f["first_purchase"]], axis=1).min(axis=1)
    f["tenure_days"] = (cutoff - first_seen) / DAY
    for col in ("acquisition_channel", "region"):
        f[col] = c[col].reindex(idx) if col in c else None
    for col in ("n_orders", "gross_spend", "discount_total", "net_revenue", "n_categories", "n_products", "units",
                "purchase_days", "returns_value"):
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
    f["views_30"] = (last30["event_type"] == "view").groupby(last30["customer_id"]).sum().reindex(f.index).fillna(0)
    f["carts_30"] = (last30["event_type"] == "add_to_cart").groupby(last30["customer_id"]).sum().reindex(
        f.index).fillna(0)
    f["days_since_visit"] = (cutoff - e.groupby("customer_id")["ts"].max()) / DAY
    # abandoned carts: carted products not bought by that customer within 7 days, over the last 90 days
    carts = e[(e["event_type"] == "add_to_cart") & (e["ts"] >= cutoff - pd.Timedelta(days=90))]
    carts = carts[["customer_id", "product_id", "ts"]].drop_duplicates(["customer_id", "product_id"], keep="last")
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


def future_labels(shop: Shop, cutoff: pd.Timestamp, horizon_days: int, customers: pd.Index) -> pd.DataFrame:
    """What happened in ``[cutoff, cutoff + horizon)``: churn (no purchase), net revenue and net margin."""
    cutoff = pd.Timestamp(cutoff)
    lines = order_lines(shop, cutoff + pd.Timedelta(days=horizon_days), start=cutoff)
    buys = lines[~lines["is_return"]]
    n = buys.groupby("customer_id")["order_id"].nunique().reindex(customers).fillna(0)
    net = lines.groupby("customer_id")["net"].sum().reindex(customers).fillna(0.0)
    margin = (lines["net"] - lines["cost"]).groupby(lines["customer_id"]).sum(min_count=1).reindex(customers)
    return pd.DataFrame({"churn": (n == 0).astype(int), "future_orders": n, "future_net": net,
                         "future_margin": margin}, index=customers)


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


def stacked_training_set(shop: Shop, cutoffs: list[pd.Timestamp], horizon_days: int
                         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features and labels at several cutoffs, stacked (customers with a past purchase only)."""
    xs, ys = [], []
    for c in cutoffs:
        X = customer_features(shop, c)
        X = X[X["n_orders"] > 0]
        y = future_labels(shop, c, horizon_days, X.index)
        xs.append(X.assign(_cutoff=c))
        ys.append(y)
    if not xs:
        return pd.DataFrame(), pd.DataFrame()
    X = pd.concat(xs)
    return unify_categories(X.drop(columns="_cutoff")), pd.concat(ys)
