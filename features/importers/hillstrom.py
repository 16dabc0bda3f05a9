"""Importer of the MineThatData e-mail test (Hillstrom 2008), a randomised campaign with a control arm."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features import schema
from features.importers.report import ImportReport, read_text_csv, write_shop

log = logging.getLogger(__name__)

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
      (nominal, the file is from March 2008) and every purchase is dated 7 days later, the middle of the
      two-week window. ``visit`` has no place in the contract (an event needs a product) and is not written;
      it is counted in the report.
    """
    src, out = Path(src), Path(out)
    if src.is_dir():
        src = src / "hillstrom.csv.gz"
    df = _read(src)
    rep = ImportReport(source=str(src), input_rows=len(df), kept_rows=len(df))
    ids = pd.Series([f"H{i:05d}" for i in range(1, len(df) + 1)], index=df.index)
    sent = pd.Timestamp(sent_at)
    offer_log, arm_rows = _offer_log(df, ids, sent)
    spend = pd.to_numeric(df["spend"], errors="raise")
    products = pd.DataFrame({schema.PRODUCT_ID: [HILLSTROM_PRODUCT], "category": [None], "price": [np.nan],
                             "in_stock": [True]})
    rep.details = _details(df, spend, arm_rows, {schema.SENT_AT: str(sent.date()),
                                                 "purchase_dated": "sent_at + 7 days",
                                                 "send_cost": send_cost, "margin_rate": margin_rate})
    write_shop(out, rep, {"customers": _customers(df, ids), "orders": _orders(ids, spend, sent),
                          "products": products, "offer_log": offer_log},
               {schema.OFFERS_FILE: _offers(sent, send_cost, margin_rate),
                schema.ATTRIBUTES_FILE: HILLSTROM_ATTRIBUTES})
    log.info("hillstrom: %s", rep.to_dict())
    return rep


def _read(src: Path) -> pd.DataFrame:
    """The file as text, checked to be the Hillstrom file with known arms."""
    df = read_text_csv(src)
    missing = set(HILLSTROM_COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"{src}: not the Hillstrom file, missing columns {sorted(missing)}")
    unknown = ~df["segment"].isin(list(HILLSTROM_ARMS))
    if unknown.any():
        raise ValueError(f"{src}: {int(unknown.sum())} rows have an arm outside {list(HILLSTROM_ARMS)}, e.g. "
                         f"{df.loc[unknown, 'segment'].head(3).tolist()}")
    return df


def _customers(df: pd.DataFrame, ids: pd.Series) -> pd.DataFrame:
    """One customer per row with the file's pre-period facts as typed attributes."""
    return pd.DataFrame({schema.CUSTOMER_ID: ids, "history_segment": df["history_segment"],
                         "history": pd.to_numeric(df["history"], errors="raise"),
                         "recency": pd.to_numeric(df["recency"], errors="raise").astype(int),
                         **{c: df[c].astype(int).astype(bool) for c in ("mens", "womens", "newbie")},
                         "zip_code": df["zip_code"], "channel": df["channel"]})


def _offer_log(df: pd.DataFrame, ids: pd.Series, sent: pd.Timestamp) -> tuple[pd.DataFrame, dict[str, int]]:
    """The campaign's offer log (a treatment row per e-mailed customer, a control row per e-mail for each
    control customer, in file order) and its row counts by group for the report."""
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
    return offer_log, {"treatment": len(treated_log), "control (one per e-mail)": len(control_log)}


def _orders(ids: pd.Series, spend: pd.Series, sent: pd.Timestamp) -> pd.DataFrame:
    """One order line per customer who spent, dated 7 days after the send."""
    buyer = spend > 0
    return pd.DataFrame({schema.ORDER_ID: [f"HO{i[1:]}" for i in ids[buyer]],
                         schema.CUSTOMER_ID: ids[buyer].to_numpy(), schema.PRODUCT_ID: HILLSTROM_PRODUCT,
                         "ts": sent + pd.Timedelta(days=7), schema.QUANTITY: 1.0,
                         "unit_price": spend[buyer].to_numpy(), "discount": 0.0, "channel": None})


def _offers(sent: pd.Timestamp, send_cost: float, margin_rate: float) -> dict[str, Any]:
    """``offers.yaml``: the two e-mails, valid for the two weeks from the send."""
    until = str((sent + pd.Timedelta(days=13)).date())
    return {"defaults": {"margin_rate": margin_rate}, "offers": [
        {"id": oid, "name": arm, "kind": "category_promotion", "value": 0, "channels": ["email"],
         "cost_per_send": {"email": send_cost}, "valid_from": str(sent.date()), "valid_to": until,
         "redemption_window_days": 14, "eligibility": {}}
        for arm, oid in HILLSTROM_ARMS.items() if oid is not None]}


def _details(df: pd.DataFrame, spend: pd.Series, arm_rows: dict[str, int],
             assumed: dict[str, Any]) -> dict[str, Any]:
    """The report's accounting by arm, the file's inconsistencies and what the import assumed."""
    buyer = spend > 0
    conversion = df["conversion"].astype(int) == 1
    return {
        "arms": {arm: int((df["segment"] == arm).sum()) for arm in HILLSTROM_ARMS},
        "buyers": {arm: int((buyer & (df["segment"] == arm)).sum()) for arm in HILLSTROM_ARMS},
        "spend": {arm: round(float(spend[df["segment"] == arm].sum()), 2) for arm in HILLSTROM_ARMS},
        "offer_log": arm_rows,
        "conversion_without_spend": int((conversion & ~buyer).sum()),
        "spend_without_conversion": int((buyer & ~conversion).sum()),
        "visits_not_written": int((df["visit"].astype(int) == 1).sum()),
        "assumed": assumed,
    }
