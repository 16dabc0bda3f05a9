"""Importer of the UCI Online Retail file (one row per invoice line) into the shop data contract."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from features import schema
from features.importers.report import ImportReport, read_text_csv, write_shop
from features.schema import IS_PRODUCT

log = logging.getLogger(__name__)

# Online Retail stock codes that are not products (postage, fees, adjustments, samples, vouchers, charity)
NON_PRODUCT_CODES = frozenset({"POST", "DOT", "M", "m", "C2", "D", "S", "BANK CHARGES", "AMAZONFEE", "CRUK",
                               "B", "PADS"})
NON_PRODUCT_PREFIXES = ("gift_0001",)


def is_non_product(codes: pd.Series) -> pd.Series:
    """True for stock codes that are fees, postage, adjustments or vouchers rather than products."""
    c = codes.astype(str)
    return c.isin(NON_PRODUCT_CODES) | c.str.startswith(NON_PRODUCT_PREFIXES)


def import_online_retail(src: str | Path, out: str | Path) -> ImportReport:
    """Convert the UCI Online Retail CSV (``online_retail.csv.gz``) into a shop directory.

    Cancellations (``C`` invoices) and negative quantities become returns; rows without a CustomerID are
    dropped and counted (they are sales but cannot feed per-customer models); non-product stock codes and
    bad-debt adjustments (``A`` invoices) are dropped and counted; Country becomes region.
    """
    src, out = Path(src), Path(out)
    if src.is_dir():
        src = src / "online_retail.csv.gz"
    df = read_text_csv(src)
    rep = ImportReport(source=str(src), input_rows=len(df))
    missing = {"InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID",
               "Country"} - set(df)
    if missing:
        raise ValueError(f"{src}: not the Online Retail file, missing columns {sorted(missing)}")
    drop_masks = {
        "no_customer_id": df["CustomerID"].isna(),
        "bad_debt_adjustment": df["InvoiceNo"].str.startswith("A"),
        "non_product_code": is_non_product(df["StockCode"]),
    }
    keep = pd.Series(True, index=df.index)
    for reason, m in drop_masks.items():
        rep.dropped[reason] = int((m & keep).sum())  # each row counted once, under its first reason
        keep &= ~m
    d = df[keep]
    qty = pd.to_numeric(d["Quantity"], errors="raise")
    is_return = d["InvoiceNo"].str.startswith("C") | (qty < 0)
    qty = np.where(is_return, -qty.abs(), qty)
    orders = pd.DataFrame({
        schema.ORDER_ID: d["InvoiceNo"].to_numpy(),
        schema.CUSTOMER_ID: d["CustomerID"].str.replace(r"\.0$", "", regex=True).to_numpy(),
        schema.PRODUCT_ID: d["StockCode"].str.upper().to_numpy(),
        "ts": pd.to_datetime(d["InvoiceDate"]).to_numpy(),
        schema.QUANTITY: qty.astype(float),
        "unit_price": pd.to_numeric(d["UnitPrice"]).to_numpy(),
        "discount": 0.0,
        "channel": "web",
    })
    rep.kept_rows, rep.returns = len(orders), int(is_return.sum())
    pos = orders[orders[schema.QUANTITY] > 0]
    price = pos.groupby(schema.PRODUCT_ID)["unit_price"].median()
    products = pd.DataFrame({schema.PRODUCT_ID: sorted(orders[schema.PRODUCT_ID].unique())})
    products["price"] = products[schema.PRODUCT_ID].map(price)
    products["in_stock"] = True
    # the data contract's column (the fee lines above are dropped, so every product kept is one; written
    # here so that what is not a product is the data's statement, never a rule in the models)
    products[IS_PRODUCT] = ~is_non_product(products["product_id"])
    country = d.assign(cid=orders["customer_id"].to_numpy()).groupby("cid")["Country"].agg(
        lambda s: s.value_counts().index[0])
    customers = pd.DataFrame({schema.CUSTOMER_ID: country.index.to_numpy(), "region": country.to_numpy()})
    write_shop(out, rep, {"orders": orders, "products": products, "customers": customers})
    log.info("online retail: %s", rep.to_dict())
    return rep
