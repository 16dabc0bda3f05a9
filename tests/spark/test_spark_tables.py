"""Tables read by the Spark engine: the contract's checks stop a job naming table, column and rows; a shop of
orders alone gets the same derived products and customers, and so the same features, as the local engine."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.engine import LocalEngine
from features.exceptions import DataValidationError
from features.spark_engine import SparkEngine
from features.spark_io import read_tables
from tests.features.test_engine import assert_same_table

pytestmark = pytest.mark.spark


def test_bad_tables_stop_with_every_problem_named(spark: Any, small_shop_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(small_shop_dir, bad)
    orders = pd.read_parquet(bad / "orders.parquet")
    orders.loc[orders.index[:3], "product_id"] = "NO-SUCH-PRODUCT"
    orders.loc[orders.index[3:5], "quantity"] = np.nan
    orders.to_parquet(bad / "orders.parquet", index=False)
    pd.read_parquet(bad / "events.parquet").drop(columns="event_type").to_parquet(bad / "events.parquet")
    customers = pd.read_parquet(bad / "customers.parquet")
    pd.concat([customers, customers.iloc[:2]]).to_parquet(bad / "customers.parquet", index=False)
    with pytest.raises(DataValidationError) as e:
        read_tables(spark, str(bad))
    msg = str(e.value)
    assert "orders.product_id: order lines naming unknown products (3 rows) e.g. ['NO-SUCH-PRODUCT']" in msg
    assert "orders.quantity: empty value in a required column (2 rows)" in msg
    assert "events.event_type: missing required column(s) ['event_type']" in msg
    assert "customers.customer_id: duplicate id (4 rows)" in msg


def test_bad_customer_attributes_stop_naming_the_column_as_the_local_engine_does(
        spark: Any, attributed_shop_dir: Path, tmp_path: Path) -> None:
    from features.io import load_shop

    bad = tmp_path / "bad-attributes"
    shutil.copytree(attributed_shop_dir, bad)
    (bad / "customers.attributes.yaml").write_text("tier: categorical\nage: boolean\nnewsletter: boolean\n")
    with pytest.raises(DataValidationError) as local:
        load_shop(bad)
    with pytest.raises(DataValidationError) as remote:
        read_tables(spark, str(bad))
    line = next(ln for ln in str(local.value).splitlines() if "customers.age" in ln)
    assert line in str(remote.value)  # the same problem, the same rows named
    assert "loyalty_joined" in str(remote.value)  # undeclared: kept, not used (a warning)


def test_a_shop_of_orders_alone_gets_the_local_defaults(spark: Any, small_shop_dir: Path,
                                                        tmp_path: Path) -> None:
    only = tmp_path / "orders-only"
    only.mkdir()
    orders = pd.read_parquet(small_shop_dir / "orders.parquet")
    orders = orders[orders["customer_id"].isin(orders["customer_id"].unique()[:300])]
    orders.drop(columns=["discount", "channel"]).to_parquet(only / "orders.parquet", index=False)
    cutoff = pd.Timestamp("2025-09-15")
    local = LocalEngine(only).features(cutoff)
    remote = SparkEngine(spark, str(only), buckets=2).features_frame(cutoff).toPandas()
    assert len(local) == 300 and local["top_category"].isna().all()  # no products table: no categories
    assert_same_table(local, remote)
