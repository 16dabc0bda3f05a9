"""Importer of the 84.51 / dunnhumby Complete Journey tables into the shop data contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from features import schema
from features.importers.report import ImportReport, read_text_csv, write_shop

DISCOUNT_COLUMNS = ("retail_disc", "coupon_disc", "coupon_match_disc")


def import_complete_journey(src: str | Path, out: str | Path) -> ImportReport:
    """Convert the Complete Journey tables into a shop directory.

    transactions -> orders (discount = loyalty + coupon + coupon-match discounts; unit price is what the
    customer would have paid undiscounted); products -> products (category = department); campaigns and
    coupon redemptions -> offer_log and ``offers.yaml`` (one offer per campaign). The data has no control
    group, so every offer_log row is ``treatment``: uplift cannot be measured on it, redemption can.
    """
    src, out = Path(src), Path(out)

    def rd(name: str) -> pd.DataFrame:
        return read_text_csv(src / f"{name}.csv.gz")

    tx = rd("transactions_sample")
    rep = ImportReport(source=str(src), input_rows=len(tx))
    orders = _orders(tx, rep)
    rep.kept_rows = len(orders)
    products = _products(rd("products"), orders)
    camp, desc = rd("campaigns"), _dated(rd("campaign_descriptions"))
    customers = _customers(orders, rd("demographics"), camp)
    offer_log = _offer_log(camp, desc, rd("coupon_redemptions"))
    write_shop(out, rep, {"orders": orders, "products": products, "customers": customers,
                          "offer_log": offer_log}, {schema.OFFERS_FILE: _offers(desc)})
    return rep


def _orders(tx: pd.DataFrame, rep: ImportReport) -> pd.DataFrame:
    """Order lines of the transactions with a positive quantity (the others are counted in ``rep``); the
    unit price is the undiscounted one, the discount the sum of the three discounts."""
    q = pd.to_numeric(tx[schema.QUANTITY])
    sales = pd.to_numeric(tx["sales_value"])
    disc = sum(pd.to_numeric(tx[c]).fillna(0.0) for c in DISCOUNT_COLUMNS)
    bad = q <= 0
    rep.dropped["non_positive_quantity"] = int(bad.sum())
    keep = ~bad
    return pd.DataFrame({
        schema.ORDER_ID: tx.loc[keep, "basket_id"].to_numpy(),
        schema.CUSTOMER_ID: tx.loc[keep, "household_id"].to_numpy(),
        schema.PRODUCT_ID: tx.loc[keep, schema.PRODUCT_ID].to_numpy(),
        "ts": pd.to_datetime(tx.loc[keep, "transaction_timestamp"], utc=True).dt.tz_localize(None).to_numpy(),
        schema.QUANTITY: q[keep].to_numpy(),
        "unit_price": ((sales + disc)[keep] / q[keep]).round(4).to_numpy(),
        "discount": disc[keep].round(4).to_numpy(),
        "channel": "store",
    })


def _products(prods: pd.DataFrame, orders: pd.DataFrame) -> pd.DataFrame:
    """The products the orders name (department as category), plus bare rows for ordered ids the product
    table lacks."""
    used = prods[prods[schema.PRODUCT_ID].isin(orders[schema.PRODUCT_ID])]
    products = pd.DataFrame({schema.PRODUCT_ID: used[schema.PRODUCT_ID].to_numpy(),
                             "category": used["department"].str.lower().to_numpy(),
                             "brand": used["brand"].to_numpy(), "in_stock": True})
    missing = sorted(set(orders[schema.PRODUCT_ID]) - set(products[schema.PRODUCT_ID]))
    if missing:
        products = pd.concat([products, pd.DataFrame({schema.PRODUCT_ID: missing,
                                                      "in_stock": True})], ignore_index=True)
    return products


def _customers(orders: pd.DataFrame, demo: pd.DataFrame, camp: pd.DataFrame) -> pd.DataFrame:
    """Every household that ordered or was in a campaign, with its income band where known."""
    hh = sorted(set(orders[schema.CUSTOMER_ID]) | set(camp["household_id"]))
    return pd.DataFrame({schema.CUSTOMER_ID: hh}).merge(
        demo[["household_id", "income"]].rename(columns={"household_id": schema.CUSTOMER_ID,
                                                         "income": "income_band"}),
        on=schema.CUSTOMER_ID, how="left")


def _dated(desc: pd.DataFrame) -> pd.DataFrame:
    """The campaign descriptions with their start and end dates parsed."""
    desc["start_date"] = pd.to_datetime(desc["start_date"])
    desc["end_date"] = pd.to_datetime(desc["end_date"])
    return desc


def _offer_log(camp: pd.DataFrame, desc: pd.DataFrame, red: pd.DataFrame) -> pd.DataFrame:
    """One ``treatment`` row per household and campaign, sent at the campaign's start, redeemed at the
    household's first coupon redemption of that campaign."""
    ol = camp.merge(desc, on=schema.CAMPAIGN_ID, how="left")
    first_red = (red.assign(redemption_date=pd.to_datetime(red["redemption_date"]))
                 .groupby(["household_id", schema.CAMPAIGN_ID])["redemption_date"].min().reset_index())
    ol = ol.merge(first_red, on=["household_id", schema.CAMPAIGN_ID], how="left")
    return pd.DataFrame({
        schema.CUSTOMER_ID: ol["household_id"].to_numpy(),
        schema.OFFER_ID: ("cj_campaign_" + ol[schema.CAMPAIGN_ID].str.zfill(2)).to_numpy(),
        schema.CAMPAIGN_ID: ol[schema.CAMPAIGN_ID].to_numpy(),
        schema.SENT_AT: ol["start_date"].to_numpy(),
        "channel": "mail",
        "group": "treatment",
        schema.REDEEMED_AT: ol["redemption_date"].to_numpy(),
    })


def _offers(desc: pd.DataFrame) -> dict[str, Any]:
    """``offers.yaml``: one mail coupon per campaign, valid over the campaign's dates."""
    return {"offers": [
        {"id": f"cj_campaign_{r.campaign_id.zfill(2)}",
         "name": f"Campaign {r.campaign_id} ({r.campaign_type})", "kind": "coupon", "value": 0,
         "channels": ["mail"], "cost_per_send": {"mail": 0.5}, "valid_from": str(r.start_date.date()),
         "valid_to": str(r.end_date.date()), "eligibility": {}}
        for r in desc.itertuples()]}
