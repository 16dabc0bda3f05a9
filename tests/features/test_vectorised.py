"""The vectorised feature code gives exactly what the string-keyed code gave (kept in reference_features.py):
same frames, same dtypes, same bits; same interaction matrices. On the simulated shop, on a hand-made shop
full of edge cases, and on Online Retail (realdata)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from features.customer import customer_features
from features.customer_labels import future_labels
from features.importers import is_non_product
from features.interactions import InteractionConfig, InteractionData, build_interactions
from features.io import Shop
from features.validation import _text
from tests.features.reference_features import (
    old_build_interactions,
    old_customer_features,
    old_future_labels,
)


def assert_same_features(shop: Shop, cutoff: pd.Timestamp) -> pd.DataFrame:
    old, new = old_customer_features(shop, cutoff), customer_features(shop, cutoff)
    # the one deliberate difference: the index is always object (the old one was pandas' str when no customer
    # was known from a signup or an event, e.g. Online Retail)
    assert new.index.dtype == object
    pd.testing.assert_frame_equal(old, new, check_exact=True, check_index_type=old.index.dtype == object)
    some = pd.Index(list(old.index[::7][:300]) + ["no-such-customer"], dtype=object)
    pd.testing.assert_frame_equal(old_customer_features(shop, cutoff, customers=some),
                                  customer_features(shop, cutoff, customers=some), check_exact=True)
    buyers = pd.Index(list(old.index[old["n_orders"] > 0]) + ["no-such-customer"], dtype=object)
    for h in (30, 90):
        pd.testing.assert_frame_equal(old_future_labels(shop, cutoff, h, buyers),
                                      future_labels(shop, cutoff, h, buyers), check_exact=True)
    return new


def assert_same_interactions(a: InteractionData, b: InteractionData) -> None:
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if hasattr(x, "indptr"):
            assert x.shape == y.shape and x.dtype == y.dtype, f.name
            for part in ("indptr", "indices", "data"):
                assert np.array_equal(getattr(x, part), getattr(y, part)), f"{f.name}.{part}"
        elif hasattr(x, "ids"):
            assert x.ids.dtype == y.ids.dtype and np.array_equal(x.ids, y.ids), f.name
        elif isinstance(x, dict):
            assert list(x) == list(y) and all(np.array_equal(x[k], y[k]) for k in x), f.name
        elif isinstance(x, np.ndarray):
            assert x.dtype == y.dtype, f.name
            assert pd.Series(x).equals(pd.Series(y)), f.name  # NaN == NaN, None == None
        else:
            assert x == y, f.name


@pytest.mark.parametrize("cutoff", ["2024-12-15", "2025-03-01", "2025-09-01", "2025-12-01", "2026-01-01"])
def test_features_and_labels_equal_the_reference(small_shop, cutoff) -> None:
    X = assert_same_features(small_shop, pd.Timestamp(cutoff))
    assert len(X) > 500


def test_features_before_any_order(small_shop) -> None:
    X = assert_same_features(small_shop, small_shop.orders["ts"].min())
    assert (X["n_orders"] == 0).all()


@pytest.mark.parametrize("cutoff", [None, "2025-09-01"])
@pytest.mark.parametrize("events", [True, False])
def test_interactions_equal_the_reference(small_shop, cutoff, events) -> None:
    cfg = InteractionConfig(use_events=events)
    c = pd.Timestamp(cutoff) if cutoff else None
    assert_same_interactions(old_build_interactions(small_shop, c, cfg, non_product=is_non_product),
                             build_interactions(small_shop, c, cfg, non_product=is_non_product))


def edge_shop() -> Shop:
    """Returns only, zero quantities, missing channels and categories, unknown products, an order that spans
    the cutoff, two categories with the same spend, events of customers with no order and without a customer,
    an offer log with redemptions before and after the cutoff, a customer the customers table lacks."""
    t = pd.Timestamp("2025-03-01")
    d = pd.Timedelta(days=1)
    rows = [  # order, customer, product, ts, qty, price, discount, channel
        ("o1", "a", "p1", t - 40 * d, 2, 10.0, 0.0, "web"), ("o1", "a", "p2", t - 40 * d, 1, 5.0, 1.0, "web"),
        ("o2", "a", "p3", t - 10 * d, 1, 20.0, 0.0, None), ("r1", "a", "p1", t - 5 * d, -1, 10.0, 0.0, "web"),
        ("o3", "b", "p2", t - 100 * d, 1, 5.0, 0.0, "app"), ("o3", "b", "p9", t - 100 * d,
                                                             3, 1.0, 0.0, "app"),
        ("o4", "b", "p1", t - 1 * d, 0, 10.0, 0.0, "app"), ("r2", "c", "p1", t - 3 * d, -2,
                                                            10.0, 0.0, "store"),
        ("o5", "d", "p1", t - 2 * d, 1, 10.0, 0.0, "web"), ("o5", "d", "p4", t - 2 * d, 1, 10.0, 0.0, "web"),
        ("o6", "e", "p2", t - d, 1, 5.0, 0.0, "web"), ("o6", "e", "p2", t + d, 1, 5.0, 0.0, "web"),
        ("o7", "f", "p3", t - 60 * d, 1, 20.0, 2.0, "web"), ("o8", "f", "p3", t - 60 * d,
                                                             1, 20.0, 0.0, "app"),
        ("o9", "f", "p1", t + 5 * d, 1, 10.0, 0.0, "app"), ("o10", None, "p1", t - 5 * d,
                                                            1, 10.0, 0.0, "web"),
    ]
    orders = pd.DataFrame(
        rows,
        columns=[
            "order_id",
            "customer_id",
            "product_id",
            "ts",
            "quantity",
            "unit_price",
            "discount",
            "channel",
        ],
    ).astype({"quantity": float, "customer_id": object})
    products = pd.DataFrame({"product_id": ["p1", "p2", "p3", "p4", "p5"],
                             "category": ["x", "y", None, "y", "x"], "brand": None,
                             "price": [10.0, 5.0, 20.0, 10.0, 1.0], "unit_cost": [4.0, np.nan, 9.0, 5.0, 0.5],
                             "in_stock": True, "replenishable": [True, False, False, False, False]})
    customers = pd.DataFrame({"customer_id": ["a", "b", "c", "d", "e", "g"],
                              "region": ["n", None, "s", "n", "s", "n"],
                              "acquisition_channel": "organic", "opted_out": False,
                              "signup_at": [t - 200 * d, pd.NaT, t - 50 * d, t - 300 * d,
                                            t + 3 * d, t - 9 * d]})
    ev = [("a", "p5", "add_to_cart", t - 20 * d), ("a", "p3", "add_to_cart", t - 12 * d),
          ("a", "p3", "view", t - 2 * d), ("h", "p1", "add_to_cart", t - 4 * d),
          (None, "p1", "view", t - 4 * d), ("g", "p2", "wishlist", t - 40 * d),
          ("a", "p1", "remove_from_cart", t + d), ("d", "pX", "view", t - d),
          ("a", "p5", "add_to_cart", t - 30 * d)]
    events = pd.DataFrame(ev, columns=["customer_id", "product_id", "event_type", "ts"]).astype(
        {"customer_id": object}
    )
    offer_log = pd.DataFrame({
        "customer_id": ["a", "a", "b", "g", "c"], "offer_id": "x", "channel": "email",
        "sent_at": [t - 30 * d, t - 3 * d, t - 20 * d, t - 5 * d, t + d],
        "group": ["treatment", "treatment", "control", "treatment", "treatment"],
        "redeemed_at": [t - 25 * d, t + d, pd.NaT, pd.NaT, pd.NaT]})
    ns = "datetime64[ns]"  # as load_shop types every time column
    return Shop(orders=orders.astype({"ts": ns}),
                customers=customers.astype({"signup_at": ns}), products=products,
                events=events.astype({"ts": ns}), offer_log=offer_log.astype({"sent_at": ns,
                                                                              "redeemed_at": ns}))


@pytest.mark.parametrize("days", [-200, -45, -8, 0, 2, 6, 30])
def test_edge_cases_equal_the_reference(days) -> None:
    shop = edge_shop()
    assert_same_features(shop, pd.Timestamp("2025-03-01") + pd.Timedelta(days=days))
    c = pd.Timestamp("2025-03-01") + pd.Timedelta(days=days)
    for cfg in (InteractionConfig(), InteractionConfig(use_events=False)):
        if (shop.orders["ts"] < c).any():
            assert_same_interactions(old_build_interactions(shop, c, cfg), build_interactions(shop, c, cfg))
    from features.customer import order_lines
    assert_same_triggers(order_lines(shop, c + pd.Timedelta(seconds=1)), c - pd.Timedelta(days=30), c)


def test_edge_shop_without_optional_tables() -> None:
    shop = dataclasses.replace(edge_shop(), events=None, offer_log=None)
    X = assert_same_features(shop, pd.Timestamp("2025-03-02"))
    assert X["views_30"].isna().all() and X["offers_received"].isna().all()


def test_a_replaced_table_is_seen(small_shop) -> None:
    shop = dataclasses.replace(small_shop)
    cutoff = pd.Timestamp("2025-09-01")
    before = customer_features(shop, cutoff)
    shop.orders = shop.orders.iloc[: len(shop.orders) // 2]
    after = customer_features(shop, cutoff)
    assert after["n_orders"].sum() < before["n_orders"].sum()
    pd.testing.assert_frame_equal(after, old_customer_features(shop, cutoff), check_exact=True)


def test_text_columns_hold_one_string_per_value() -> None:
    s = pd.Series([" C1", "C2 ", None, "", "C1", " C1"] * 1000).astype("string")
    out, missing, outside = _text(s.str.strip(), s.index, empty_is_null=True, allowed=("C1",))
    assert out.dtype == object
    assert out.iloc[:6].tolist() == ["C1", "C2", None, None, "C1", "C1"]
    assert missing[:6].tolist() == [False, False, True, True, False, False]
    assert outside[:6].tolist() == [False, True, False, False, False, False]
    assert len({id(v) for v in out if v is not None}) == 2  # not one object per row


@pytest.mark.realdata
@pytest.mark.slow
def test_online_retail_equals_the_reference(tmp_path) -> None:
    from features.importers import import_online_retail
    from features.io import load_shop
    from tests.conftest import SHARED
    import_online_retail(SHARED / "online_retail", tmp_path)
    shop = load_shop(tmp_path, strict=False)
    for cutoff in ("2011-03-01", "2011-09-01"):
        assert_same_features(shop, pd.Timestamp(cutoff))
    c = pd.Timestamp("2011-09-01")
    assert_same_interactions(old_build_interactions(shop, c, non_product=is_non_product),
                             build_interactions(shop, c, non_product=is_non_product))
    from features.customer import order_lines
    assert_same_triggers(order_lines(shop, c), c - pd.Timedelta(days=30), c)
    assert_same_order_values(shop, c)


def assert_same_triggers(lines: pd.DataFrame, since: pd.Timestamp, until: pd.Timestamp,
                         **kw: object) -> pd.DataFrame:
    from models.triggers import detect_triggers
    from tests.features.reference_features import old_detect_triggers
    old, new = old_detect_triggers(lines, since, until, **kw), detect_triggers(lines, since, until, **kw)
    pd.testing.assert_frame_equal(old, new, check_exact=True)
    return new


@pytest.mark.parametrize("end", ["2025-03-01", "2025-07-01", "2025-12-31"])
def test_triggers_equal_the_reference(small_shop, end) -> None:
    from features.customer import order_lines
    until = pd.Timestamp(end)
    lines = order_lines(small_shop, until + pd.Timedelta(seconds=1))
    churn = pd.Series(np.random.default_rng(0).random(300), index=lines["customer_id"].unique()[:300])
    tr = assert_same_triggers(lines, until - pd.Timedelta(days=30), until, churn_now=churn)
    assert set(tr["trigger"]) >= {"spend_jump", "dormancy", "first_purchase", "churn_risk"}


def test_mean_of_earlier_orders_matches_pandas() -> None:
    from models.triggers import _mean_of_earlier
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 40, 300)
    v = np.round(rng.choice([0.1, 0.7, 3.3, -2.0, 10.0], sizes.sum()) * rng.integers(1, 4, sizes.sum()), 2)
    v[rng.random(len(v)) < 0.3] = 0.1  # runs of equal values (pandas returns the value itself for them)
    key = np.repeat(np.arange(len(sizes)), sizes)
    expected = pd.Series(v).groupby(key).transform(lambda s: s.shift().expanding().mean()).to_numpy()
    got = _mean_of_earlier(v, np.r_[0, np.cumsum(sizes)[:-1]])
    assert np.array_equal(expected, got, equal_nan=True)


def assert_same_order_values(shop: Shop, cutoff: pd.Timestamp) -> None:
    from features.customer import order_values
    from models.bgnbd import rfm_summary
    from tests.features.reference_features import old_order_values, old_rfm_summary
    old, new = old_order_values(shop, cutoff), order_values(shop, cutoff)
    pd.testing.assert_frame_equal(old, new, check_exact=True)
    pd.testing.assert_frame_equal(old_rfm_summary(old, cutoff), rfm_summary(new, cutoff), check_exact=True)


@pytest.mark.parametrize("cutoff", ["2025-03-01", "2025-10-01", "2026-01-01"])
def test_order_values_and_rfm_equal_the_reference(small_shop, cutoff) -> None:
    assert_same_order_values(small_shop, pd.Timestamp(cutoff))
    assert_same_order_values(edge_shop(), pd.Timestamp("2025-03-01"))


def test_stacked_training_set_unchanged_and_sampled_by_customer(small_shop) -> None:
    from features.customer_labels import stacked_training_set, training_cutoffs
    from tests.features.reference_features import old_stacked_training_set
    cuts = training_cutoffs(small_shop, pd.Timestamp("2025-10-01"), 90, 4, 14)
    X, y = stacked_training_set(small_shop, cuts, 90)
    Xo, yo = old_stacked_training_set(small_shop, cuts, 90)
    pd.testing.assert_frame_equal(Xo, X, check_exact=True)
    pd.testing.assert_frame_equal(yo, y, check_exact=True)
    assert X.attrs["sample_share"] == 1.0
    Xs, ys = stacked_training_set(small_shop, cuts, 90, max_rows=len(X) // 4, seed=3)
    assert 0.2 < Xs.attrs["sample_share"] < 0.3
    assert abs(len(Xs) - len(X) / 4) < 0.1 * len(X)
    assert Xs.index.equals(ys.index)
    kept = set(Xs.index)
    # the same customers at every cutoff: every row of a kept customer is kept
    assert X.index.isin(list(kept)).sum() == len(Xs)
    # the sample's features are computed for its buyers only, so a count column is int64 where the full set
    # (non-buyers computed, then dropped) made it float64: the same values, exactly
    pd.testing.assert_frame_equal(Xs, X[X.index.isin(list(kept))], check_exact=True, check_categorical=False,
                                  check_dtype=False)


def test_bought_between_matches_a_merge(small_shop) -> None:
    from features.customer import bought_between
    ol = small_shop.offer_log
    start, end = ol["sent_at"], ol["sent_at"] + pd.Timedelta(days=14)
    got = bought_between(small_shop, ol["customer_id"], start, end)
    o = small_shop.customer_orders()
    buys = o[o["quantity"] > 0][["customer_id", "ts"]]
    m = ol.reset_index(drop=True).reset_index().merge(buys, on="customer_id", how="left")
    win = (m["ts"] >= m["sent_at"]) & (m["ts"] < m["sent_at"] + pd.Timedelta(days=14))
    expected = win.groupby(m["index"]).any().reindex(range(len(ol)), fill_value=False).to_numpy()
    assert np.array_equal(got, expected)
    assert 0.05 < got.mean() < 0.95
    # a purchase exactly at the start counts, one exactly at the end does not; unknown customers bought
    # nothing
    row = o[o["quantity"] > 0].iloc[0]
    assert bought_between(small_shop, [row["customer_id"]] * 2 + ["nobody"],
                          [row["ts"], row["ts"] - pd.Timedelta(days=1), row["ts"]],
                          [row["ts"] + pd.Timedelta(seconds=1), row["ts"],
                                       row["ts"] + pd.Timedelta(days=1)]
                          ).tolist() == [True, False, False]
