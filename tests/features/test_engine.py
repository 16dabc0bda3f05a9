"""The bucket principle behind the Spark engine, checked in pandas alone (no Java needed): the feature
functions run on a shop split into buckets of customers give the whole shop's frame, because the shop-wide
facts travel into every bucket."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from features.customer import customer_features
from features.customer_labels import stacked_training_set
from features.engine import (
    CONTEXT_ID,
    ShopFacts,
    bucket_features,
    bucket_shop,
    bucket_training_rows,
    feature_table,
    open_engine,
    read_feature_table,
    training_frames,
)
from features.io import Shop, load_shop

TABLES = ("orders", "customers", "events", "offer_log")


def buckets_of(shop: Shop, n: int) -> list[Shop]:
    """The shop split by a hash of the customer id, rows in their original order."""
    facts = ShopFacts.of(shop)
    out = []
    for b in range(n):
        tables = {}
        for name in TABLES:
            t = getattr(shop, name)
            if t is None:
                continue
            t = t[t["customer_id"].notna()]
            h = pd.util.hash_array(t["customer_id"].astype(str).to_numpy()) % n
            tables[name] = t[h == b].reset_index(drop=True)
        if any(len(t) for t in tables.values()):
            out.append(bucket_shop(tables, shop.products, facts))
    return out


def assert_same_table(a: pd.DataFrame, b: pd.DataFrame) -> None:
    a = a.sort_values("customer_id").reset_index(drop=True)
    b = b.sort_values("customer_id").reset_index(drop=True)
    assert list(a.columns) == list(b.columns)
    assert a["customer_id"].tolist() == b["customer_id"].tolist()
    for c in a.columns:
        if not pd.api.types.is_numeric_dtype(a[c]):
            assert (
                a[c].astype(object).fillna("<NA>").tolist() == b[c].astype(object).fillna("<NA>").tolist()
            ), c
        else:
            np.testing.assert_allclose(a[c].astype(float), b[c].astype(float), rtol=0, atol=1e-9, err_msg=c)


@pytest.fixture(scope="module")
def patchy_shop(small_shop: Shop) -> Shop:
    """40 customers of the small shop where half the products have no unit cost and only some customers
    have events or offers: single-customer buckets then lack what the whole shop has."""
    ids = small_shop.customers["customer_id"].iloc[:40]
    keep = {n: getattr(small_shop, n)[getattr(small_shop, n)["customer_id"].isin(ids)] for n in TABLES}
    keep["events"] = keep["events"][keep["events"]["customer_id"].isin(ids.iloc[::3])]
    keep["offer_log"] = keep["offer_log"][keep["offer_log"]["customer_id"].isin(ids.iloc[::4])]
    products = small_shop.products.copy()
    products.loc[products.index[::2], "unit_cost"] = np.nan
    return dataclasses.replace(small_shop, products=products,
                               **{k: v.reset_index(drop=True) for k, v in keep.items()})


def test_buckets_give_the_whole_shops_features(small_shop: Shop) -> None:
    cutoff = pd.Timestamp("2025-10-01")
    whole = feature_table(customer_features(small_shop, cutoff))
    parts = pd.concat([bucket_features(s, cutoff) for s in buckets_of(small_shop, 5)], ignore_index=True)
    assert len(whole) > 1000 and CONTEXT_ID not in set(parts["customer_id"])
    assert_same_table(whole, parts)


@pytest.mark.slow
def test_one_customer_per_bucket_still_sees_the_shop_wide_facts(patchy_shop: Shop) -> None:
    cutoff = pd.Timestamp("2025-11-01")
    whole = feature_table(customer_features(patchy_shop, cutoff))
    singles = buckets_of(patchy_shop, 400)  # nearly every customer alone in a bucket
    assert len(singles) > 35
    parts = pd.concat([bucket_features(s, cutoff) for s in singles], ignore_index=True)
    assert_same_table(whole, parts)
    # and the facts are what makes it so: a bucket without events, cut off from them, differs
    facts = ShopFacts.of(patchy_shop)
    assert facts.has_events and facts.first_costed_line is not None
    no_events = next(s for s in singles if len(s.customers) and s.events is not None
                     and s.events["customer_id"].notna().sum() == 0)
    blind = bucket_shop({n: getattr(no_events, n) for n in ("orders", "customers")},
                        patchy_shop.products, dataclasses.replace(facts, has_events=False))
    assert bucket_features(no_events, cutoff)["views_30"].eq(0).all()
    assert bucket_features(blind, cutoff)["views_30"].isna().all()


def test_buckets_give_the_whole_shops_training_set(patchy_shop: Shop) -> None:
    cutoffs = [pd.Timestamp("2025-09-01"), pd.Timestamp("2025-08-01")]
    X, y = stacked_training_set(patchy_shop, cutoffs, 60)
    rows = pd.concat(
        [bucket_training_rows(s, cutoffs, 60) for s in buckets_of(patchy_shop, 7)], ignore_index=True
    )
    X2, y2 = training_frames(rows)
    assert X2.index.tolist() == X.index.tolist() and len(set(X.index)) < len(X)  # customers at both cutoffs
    pd.testing.assert_frame_equal(y2.astype(float), y.astype(float), check_index_type=False)
    assert_same_table(feature_table(X), feature_table(X2))
    assert (X2.dtypes == "category").sum() == (X.dtypes == "category").sum() > 0


def test_local_engine_writes_the_feature_table(small_shop_dir, tmp_path) -> None:
    with open_engine("local", small_shop_dir) as eng:
        path = eng.write_features(pd.Timestamp("2025-10-01"), str(tmp_path / "f.parquet"))
        X = read_feature_table(pd.read_parquet(path))
        pd.testing.assert_frame_equal(
            X,
            customer_features(eng.shop, pd.Timestamp("2025-10-01")),  # type: ignore[attr-defined]
            check_dtype=False,
            check_categorical=False,
        )
    with pytest.raises(ValueError, match="unknown engine 'dask': choose one of local, spark"):
        with open_engine("dask", small_shop_dir):
            pass


@pytest.mark.slow  # about 3 s (make test-fast stays under a minute)
def test_buckets_give_the_whole_shops_customer_attributes(attributed_shop_dir) -> None:
    """Attribute columns are typed with the shop-wide kinds in every bucket and categories are coded over the
    whole table's values, so a bucket that lacks a value (the rare tier) gives the whole shop's columns."""
    shop = load_shop(attributed_shop_dir)
    assert shop.attributes == {"tier": "categorical", "age": "numeric", "newsletter": "boolean",
                               "loyalty_joined": "date"}
    cutoff = pd.Timestamp("2025-10-01")
    whole = feature_table(customer_features(shop, cutoff))
    assert {"attr_tier", "attr_age", "attr_newsletter", "attr_loyalty_joined"} <= set(whole.columns)
    assert whole["attr_loyalty_joined"].isna().any() and whole["attr_tier"].notna().any()
    parts = pd.concat([bucket_features(s, cutoff) for s in buckets_of(shop, 23)], ignore_index=True)
    assert_same_table(whole, parts)
    X, _ = stacked_training_set(shop, [cutoff], 60)
    rows = pd.concat([bucket_training_rows(s, [cutoff], 60) for s in buckets_of(shop, 5)], ignore_index=True)
    assert_same_table(feature_table(X), feature_table(training_frames(rows)[0]))
