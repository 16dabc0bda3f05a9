"""Which ids are products is the data's statement (``products.is_product``), never a rule in the models:
a shop whose products are called "B", "D", "M" (Online Retail's fee codes) gets them recommended."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features import schema
from features.io import load_shop
from tests.conftest import SEED

IDS = ["B", "D", "M", "S", "POST", "p1", "p2", "p3"]


def _shop(d: Path, not_products: tuple[str, ...] = ()) -> Path:
    """60 customers over 120 days; each buys two or three of the products, the fee-like ids most."""
    rng = np.random.default_rng(SEED)
    start = pd.Timestamp("2025-01-01")
    rows = []
    for c in range(60):
        for o in range(4):
            ts = start + pd.Timedelta(days=int(rng.integers(0, 120)))
            for p in rng.choice(IDS, size=2, replace=False, p=[.2, .2, .2, .1, .1, .1, .05, .05]):
                rows.append({schema.ORDER_ID: f"o{c}-{o}", schema.CUSTOMER_ID: f"c{c}", schema.PRODUCT_ID: p,
                             schema.TS: ts, schema.QUANTITY: 1.0, "unit_price": 5.0})
    d.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(d / "orders.parquet", index=False)
    products = pd.DataFrame({schema.PRODUCT_ID: IDS, schema.IS_PRODUCT: [p not in not_products for p in IDS]})
    products.to_parquet(d / "products.parquet", index=False)
    return d


def _recommended(d: Path) -> set[str]:
    from training.rec_eval import evaluate_recommenders
    shop = load_shop(d)
    ev = evaluate_recommenders(shop, pd.Timestamp("2025-04-01"), models=("popularity",))
    recs = ev.production.recommend([f"c{i}" for i in range(60)], k=5)
    return set(recs[schema.PRODUCT_ID])


def test_products_named_like_online_retail_fees_are_recommended(tmp_path: Path) -> None:
    assert {"B", "D", "M"} <= _recommended(_shop(tmp_path / "shop"))


def test_what_the_products_table_says_is_no_product_is_never_recommended(tmp_path: Path) -> None:
    got = _recommended(_shop(tmp_path / "shop", not_products=("B", "POST")))
    assert {"D", "M"} <= got and not {"B", "POST"} & got


def test_the_online_retail_importer_writes_the_column(tmp_path: Path) -> None:
    from features.importers import import_online_retail
    raw = pd.DataFrame({"InvoiceNo": ["1", "1", "2"], "StockCode": ["85123A", "POST", "22423"],
                        "Quantity": ["2", "1", "1"], "InvoiceDate": ["2011-01-01 10:00"] * 3,
                        "UnitPrice": ["2.5", "18", "12.75"], "CustomerID": ["17850.0"] * 3,
                        "Country": ["United Kingdom"] * 3})
    raw.to_csv(tmp_path / "online_retail.csv.gz", index=False)
    import_online_retail(tmp_path, tmp_path / "shop")
    products = load_shop(tmp_path / "shop").products.set_index(schema.PRODUCT_ID)
    assert products[schema.IS_PRODUCT].to_dict() == {"22423": True, "85123A": True}  # POST's line dropped
