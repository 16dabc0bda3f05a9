"""Importers that turn public datasets into the shop data contract, with honest row accounting.

* ``import_online_retail``: the UCI Online Retail file (one row per invoice line).
* ``import_complete_journey``: the 84.51 / dunnhumby Complete Journey tables.
* ``import_hillstrom``: the MineThatData e-mail test (Hillstrom 2008), a randomised campaign with a control
arm.

Each returns an :class:`ImportReport` of what was kept, dropped (and why) and turned into returns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from features import schema
from features.io import write_table
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


@dataclass
class ImportReport:
    source: str
    input_rows: int = 0
    kept_rows: int = 0
    returns: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    tables: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    """Importer-specific accounting (e.g. rows per arm of a randomised campaign)."""

    def to_dict(self) -> dict[str, Any]:
        out = {"source": self.source, "input_rows": self.input_rows, "kept_rows": self.kept_rows,
               "returns": self.returns, "dropped": self.dropped, "tables": self.tables}
        return {**out, "details": self.details} if self.details else out


def import_online_retail(src: str | Path, out: str | Path) -> ImportReport:
    """Convert the UCI Online Retail CSV (``online_retail.csv.gz``) into a shop directory.

    Cancellations (``C`` invoices) and negative quantities become returns; rows without a CustomerID are
    dropped and counted (they are sales but cannot feed per-customer models); non-product stock codes and
    bad-debt adjustments (``A`` invoices) are dropped and counted; Country becomes region.
    """
    src, out = Path(src), Path(out)
    if src.is_dir():
        src = src / "online_retail.csv.gz"
    df = pd.read_csv(src, dtype=str, keep_default_na=False, na_values=[""])
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
    for name, t in (("orders", orders), ("products", products), ("customers", customers)):
        write_table(t, out, name)
        rep.tables[name] = len(t)
    (out / "import_report.yaml").write_text(yaml.safe_dump(rep.to_dict(), sort_keys=False))
    log.info("online retail: %s", rep.to_dict())
    return rep


def import_complete_journey(src: str | Path, out: str | Path) -> ImportReport:
    """Convert the Complete Journey tables into a shop directory.

    transactions -> orders (discount = loyalty + coupon + coupon-match discounts; unit price is what the
    customer would have paid undiscounted); products -> products (category = department); campaigns and
    coupon redemptions -> offer_log and ``offers.yaml`` (one offer per campaign). The data has no control
    group, so every offer_log row is ``treatment``: uplift cannot be measured on it, redemption can.
    """
    src, out = Path(src), Path(out)
    rd = lambda name: pd.read_csv(  # noqa: E731
        src / f"{name}.csv.gz", dtype=str, keep_default_na=False, na_values=[""])
    tx = rd("transactions_sample")
    rep = ImportReport(source=str(src), input_rows=len(tx))
    q = pd.to_numeric(tx[schema.QUANTITY])
    sales = pd.to_numeric(tx["sales_value"])
    disc = sum(pd.to_numeric(tx[c]).fillna(0.0) for c in ("retail_disc", "coupon_disc", "coupon_match_disc"))
    bad = q <= 0
    rep.dropped["non_positive_quantity"] = int(bad.sum())
    keep = ~bad
    orders = pd.DataFrame({
        schema.ORDER_ID: tx.loc[keep, "basket_id"].to_numpy(),
        schema.CUSTOMER_ID: tx.loc[keep, "household_id"].to_numpy(),
        schema.PRODUCT_ID: tx.loc[keep, schema.PRODUCT_ID].to_numpy(),
        "ts": pd.to_datetime(tx.loc[keep, "transaction_timestamp"], utc=True).dt.tz_localize(None).to_numpy(),
        schema.QUANTITY: q[keep].to_numpy(),
        "unit_price": ((sales + disc)[keep] / q[keep]).round(4).to_numpy(),
        "discount": disc[keep].round(4).to_numpy(),
        "channel": "store",
    })
    rep.kept_rows = len(orders)
    prods = rd("products")
    used = prods[prods[schema.PRODUCT_ID].isin(orders[schema.PRODUCT_ID])]
    products = pd.DataFrame({schema.PRODUCT_ID: used[schema.PRODUCT_ID].to_numpy(),
                             "category": used["department"].str.lower().to_numpy(),
                             "brand": used["brand"].to_numpy(), "in_stock": True})
    missing = sorted(set(orders[schema.PRODUCT_ID]) - set(products[schema.PRODUCT_ID]))
    if missing:
        products = pd.concat([products, pd.DataFrame({schema.PRODUCT_ID: missing,
                                                      "in_stock": True})], ignore_index=True)
    demo = rd("demographics")
    hh = sorted(set(orders[schema.CUSTOMER_ID]) | set(rd("campaigns")["household_id"]))
    customers = pd.DataFrame({schema.CUSTOMER_ID: hh}).merge(
        demo[["household_id", "income"]].rename(columns={"household_id": schema.CUSTOMER_ID,
                                                         "income": "income_band"}),
        on=schema.CUSTOMER_ID, how="left")
    camp, desc, red = rd("campaigns"), rd("campaign_descriptions"), rd("coupon_redemptions")
    desc["start_date"] = pd.to_datetime(desc["start_date"])
    desc["end_date"] = pd.to_datetime(desc["end_date"])
    ol = camp.merge(desc, on=schema.CAMPAIGN_ID, how="left")
    first_red = (red.assign(redemption_date=pd.to_datetime(red["redemption_date"]))
                 .groupby(["household_id", schema.CAMPAIGN_ID])["redemption_date"].min().reset_index())
    ol = ol.merge(first_red, on=["household_id", schema.CAMPAIGN_ID], how="left")
    offer_log = pd.DataFrame({
        schema.CUSTOMER_ID: ol["household_id"].to_numpy(),
        schema.OFFER_ID: ("cj_campaign_" + ol[schema.CAMPAIGN_ID].str.zfill(2)).to_numpy(),
        schema.CAMPAIGN_ID: ol[schema.CAMPAIGN_ID].to_numpy(),
        schema.SENT_AT: ol["start_date"].to_numpy(),
        "channel": "mail",
        "group": "treatment",
        schema.REDEEMED_AT: ol["redemption_date"].to_numpy(),
    })
    offers = {"offers": [
        {"id": f"cj_campaign_{r.campaign_id.zfill(2)}",
         "name": f"Campaign {r.campaign_id} ({r.campaign_type})", "kind": "coupon", "value": 0,
         "channels": ["mail"], "cost_per_send": {"mail": 0.5}, "valid_from": str(r.start_date.date()),
         "valid_to": str(r.end_date.date()), "eligibility": {}}
        for r in desc.itertuples()]}
    for name, t in (("orders", orders), ("products", products), ("customers", customers),
                    ("offer_log", offer_log)):
        write_table(t, out, name)
        rep.tables[name] = len(t)
    (out / "offers.yaml").write_text(yaml.safe_dump(offers, sort_keys=False))
    (out / "import_report.yaml").write_text(yaml.safe_dump(rep.to_dict(), sort_keys=False))
    return rep


HILLSTROM_COLUMNS = ("recency", "history_segment", "history", "mens", "womens", "zip_code",
                     "newbie", "channel", "segment", "visit", "conversion", "spend")
HILLSTROM_ATTRIBUTES = {"history_segment": "categorical", "history": "numeric", "recency": "numeric",
                        "mens": "boolean", "womens": "boolean", "zip_code": "categorical",
                        "newbie": "boolean", "channel": "categorical"}
HILLSTROM_ARMS = {"Mens E-Mail": "hillstrom_mens", "Womens E-Mail": "hillstrom_womens", "No E-Mail": None}
HILLSTROM_CAMPAIGN = "hillstrom_2008_03"
HILLSTROM_PRODUCT = "hillstrom_unspecified"
"""The file does not say what was bought: every outcome order names this one placeholder product."""


def import_hillstrom(src: str | Path, out: str | Path, sent_at: str = "2008-03-01", send_cost: float = 0.01,
                     margin_rate: float = 0.45) -> ImportReport:
    """Convert the Hillstrom MineThatData e-mail test (``hillstrom.csv.gz``) into a shop directory.

    * customers: one per row, ``H00001`` .. in file order (the file has no id; its row order is the key), with
      the pre-period facts the file gives as customer attributes declared in ``customers.attributes.yaml``:
      ``history_segment``, ``history`` (dollars, past year), ``recency`` (months since last purchase),
      ``mens``, ``womens``, ``zip_code``, ``newbie``, ``channel``. No order lines are invented for the past
      year.
    * offers.yaml: the two e-mails, ``hillstrom_mens`` and ``hillstrom_womens`` (kind ``category_promotion``,
      value 0: a merchandise e-mail without a discount; channel email at ``send_cost`` per send, by default
      $0.01 as the simulator's e-mails; ``defaults.margin_rate`` 0.45, the project's default - the source
      publishes neither).
    * offer_log, campaign ``hillstrom_2008_03``, ``propensity`` 1/3 (the design's equal thirds): a customer of
      an e-mail arm has one ``treatment`` row for that e-mail; the shared control ("No E-Mail") is the control
      group of *both* e-mails, so each control customer has one ``control`` row per e-mail (two rows, same
      customer and send). Per-offer measurement then compares each e-mail with the whole control arm; count
      control customers with distinct ids.
    * orders: one order line per customer who spent in the two weeks after the send (``spend > 0``, which in
      this file is exactly ``conversion == 1``): quantity 1, unit price = spend, product
      ``hillstrom_unspecified``. The file does not date the send or the purchase: the send is ``sent_at``
      (nominal, the file is from
      March
      2008) and every purchase is dated 7 days later, the middle of the two-week window. ``visit`` has no
      place in the contract (an event needs a product) and is not written; it is counted in the report.
    """
    src, out = Path(src), Path(out)
    if src.is_dir():
        src = src / "hillstrom.csv.gz"
    df = pd.read_csv(src, dtype=str, keep_default_na=False, na_values=[""])
    missing = set(HILLSTROM_COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"{src}: not the Hillstrom file, missing columns {sorted(missing)}")
    unknown = ~df["segment"].isin(list(HILLSTROM_ARMS))
    if unknown.any():
        raise ValueError(f"{src}: {int(unknown.sum())} rows have an arm outside {list(HILLSTROM_ARMS)}, e.g. "
                         f"{df.loc[unknown, 'segment'].head(3).tolist()}")
    rep = ImportReport(source=str(src), input_rows=len(df), kept_rows=len(df))
    ids = pd.Series([f"H{i:05d}" for i in range(1, len(df) + 1)], index=df.index)
    customers = pd.DataFrame({schema.CUSTOMER_ID: ids, "history_segment": df["history_segment"],
                              "history": pd.to_numeric(df["history"], errors="raise"),
                              "recency": pd.to_numeric(df["recency"], errors="raise").astype(int),
                              **{c: df[c].astype(int).astype(bool) for c in ("mens", "womens", "newbie")},
                              "zip_code": df["zip_code"], "channel": df["channel"]})
    sent = pd.Timestamp(sent_at)
    offer_id = df["segment"].map(HILLSTROM_ARMS)
    control = offer_id.isna()
    treated_log = pd.DataFrame({schema.CUSTOMER_ID: ids[~control], schema.OFFER_ID: offer_id[~control],
                                "group": "treatment"})
    control_log = pd.concat([pd.DataFrame({schema.CUSTOMER_ID: ids[control], schema.OFFER_ID: o,
                                           "group": "control"})
                             for o in HILLSTROM_ARMS.values() if o is not None])
    offer_log = pd.concat([treated_log, control_log]).sort_index(kind="stable").reset_index(drop=True)
    offer_log = offer_log.assign(sent_at=sent, channel="email", redeemed_at=pd.NaT, order_id=None,
                                 propensity=1 / 3, campaign_id=HILLSTROM_CAMPAIGN)
    spend = pd.to_numeric(df["spend"], errors="raise")
    buyer = spend > 0
    orders = pd.DataFrame({schema.ORDER_ID: [f"HO{i[1:]}" for i in ids[buyer]],
                           schema.CUSTOMER_ID: ids[buyer].to_numpy(), schema.PRODUCT_ID: HILLSTROM_PRODUCT,
                           "ts": sent + pd.Timedelta(days=7), schema.QUANTITY: 1.0,
                           "unit_price": spend[buyer].to_numpy(), "discount": 0.0, "channel": None})
    products = pd.DataFrame({schema.PRODUCT_ID: [HILLSTROM_PRODUCT], "category": [None], "price": [np.nan],
                             "in_stock": [True]})
    until = str((sent + pd.Timedelta(days=13)).date())
    offers = {"defaults": {"margin_rate": margin_rate}, "offers": [
        {"id": oid, "name": arm, "kind": "category_promotion", "value": 0, "channels": ["email"],
         "cost_per_send": {"email": send_cost}, "valid_from": str(sent.date()), "valid_to": until,
         "redemption_window_days": 14, "eligibility": {}}
        for arm, oid in HILLSTROM_ARMS.items() if oid is not None]}
    conversion = df["conversion"].astype(int) == 1
    rep.details = {
        "arms": {arm: int((df["segment"] == arm).sum()) for arm in HILLSTROM_ARMS},
        "buyers": {arm: int((buyer & (df["segment"] == arm)).sum()) for arm in HILLSTROM_ARMS},
        "spend": {arm: round(float(spend[df["segment"] == arm].sum()), 2) for arm in HILLSTROM_ARMS},
        "offer_log": {"treatment": len(treated_log), "control (one per e-mail)": len(control_log)},
        "conversion_without_spend": int((conversion & ~buyer).sum()),
        "spend_without_conversion": int((buyer & ~conversion).sum()),
        "visits_not_written": int((df["visit"].astype(int) == 1).sum()),
        "assumed": {schema.SENT_AT: str(sent.date()), "purchase_dated": "sent_at + 7 days",
                    "send_cost": send_cost, "margin_rate": margin_rate},
    }
    for name, t in (("customers", customers), ("orders", orders), ("products", products),
                    ("offer_log", offer_log)):
        write_table(t, out, name)
        rep.tables[name] = len(t)
    (out / "offers.yaml").write_text(yaml.safe_dump(offers, sort_keys=False))
    (out / "customers.attributes.yaml").write_text(yaml.safe_dump(HILLSTROM_ATTRIBUTES, sort_keys=False))
    (out / "import_report.yaml").write_text(yaml.safe_dump(rep.to_dict(), sort_keys=False))
    log.info("hillstrom: %s", rep.to_dict())
    return rep
