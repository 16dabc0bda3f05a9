"""Importers: exact row accounting on excerpts the tests write, and on the real files when present."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from features.importers import import_complete_journey, import_online_retail
from features.io import load_shop
from tests.conftest import SHARED

OR_EXCERPT = """InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
536365,85123A,WHITE HANGING HEART,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom
536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom
536366,POST,POSTAGE,1,2010-12-01 08:28:00,18.0,17850.0,United Kingdom
536367,22633,HAND WARMER,6,2010-12-01 08:34:00,1.85,,United Kingdom
C536379,85123A,WHITE HANGING HEART,-2,2010-12-02 09:41:00,2.55,17850.0,United Kingdom
536380,gift_0001_20,VOUCHER,1,2010-12-02 10:00:00,20.0,12583.0,France
A563185,B,Adjust bad debt,1,2011-08-12 14:50:00,11062.06,,United Kingdom
536381,22633,HAND WARMER,12,2010-12-03 10:00:00,1.85,12583.0,France
"""


def test_online_retail_excerpt_accounting(tmp_path: Path) -> None:
    src = tmp_path / "online_retail.csv.gz"
    with gzip.open(src, "wt") as f:
        f.write(OR_EXCERPT)
    r = import_online_retail(src, tmp_path / "out")
    assert r.input_rows == 8
    assert r.dropped == {"no_customer_id": 2, "bad_debt_adjustment": 0, "non_product_code": 2}
    assert r.kept_rows == 4 and r.returns == 1
    shop = load_shop(tmp_path / "out")
    assert set(shop.products["product_id"]) == {"85123A", "71053", "22633"}  # no POST, no voucher
    assert shop.orders.loc[shop.orders["order_id"] == "C536379", "quantity"].item() == -2
    assert dict(zip(shop.customers["customer_id"], shop.customers["region"],
                    strict=True)) == {"17850": "United Kingdom",
                                                                                 "12583": "France"}


@pytest.mark.realdata
@pytest.mark.slow
def test_online_retail_real_file(tmp_path: Path) -> None:
    r = import_online_retail(SHARED / "online_retail", tmp_path)
    assert r.input_rows == 541_909
    assert r.dropped["no_customer_id"] == 135_080  # the published figure
    assert r.input_rows == r.kept_rows + sum(r.dropped.values())
    assert r.returns == 8_539
    shop = load_shop(tmp_path)
    assert shop.report.ok
    assert shop.orders["customer_id"].nunique() == 4_363
    assert not shop.products["product_id"].isin(["POST", "DOT", "M", "BANK CHARGES", "AMAZONFEE"]).any()


@pytest.mark.realdata
def test_complete_journey_real_files(tmp_path: Path) -> None:
    r = import_complete_journey(SHARED / "complete_journey", tmp_path)
    assert r.input_rows == 75_000
    assert r.dropped == {"non_positive_quantity": 416}
    assert r.kept_rows == 74_584
    shop = load_shop(tmp_path)
    assert shop.report.ok
    assert len(shop.offer_log) == 6_589  # one row per household per campaign
    red = pd.read_csv(SHARED / "complete_journey" / "coupon_redemptions.csv.gz", dtype=str)
    pairs = red[["household_id", "campaign_id"]].drop_duplicates()
    assert shop.offer_log["redeemed_at"].notna().sum() <= len(pairs)
    assert len(shop.offers["offers"]) == 27
