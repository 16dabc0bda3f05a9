"""Point-in-time customer features: nothing after the cutoff leaks in; net value is net."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from features.customer import customer_features
from features.customer_labels import future_labels


def test_rows_after_cutoff_change_nothing(small_shop) -> None:
    cutoff = pd.Timestamp("2025-09-01")
    before = customer_features(small_shop, cutoff)
    # plant a burst of orders, returns, events and offers after the cutoff
    cid = before.index[0]
    late = pd.DataFrame({"order_id": ["LATE1", "LATE2"], "customer_id": [cid, cid],
                         "product_id": small_shop.products["product_id"].iloc[:2].tolist(),
                         "ts": [cutoff, cutoff + pd.Timedelta(days=3)], "quantity": [50.0, -3.0],
                         "unit_price": [99.0, 99.0], "discount": [0.0, 0.0], "channel": ["web", "web"]})
    ev = small_shop.events.iloc[:3].assign(customer_id=cid, ts=cutoff + pd.Timedelta(hours=1))
    ol = small_shop.offer_log.iloc[:2].assign(customer_id=cid, sent_at=cutoff + pd.Timedelta(days=1))
    shop2 = dataclasses.replace(small_shop, orders=pd.concat([small_shop.orders, late], ignore_index=True),
                                events=pd.concat([small_shop.events, ev], ignore_index=True),
                                offer_log=pd.concat([small_shop.offer_log, ol], ignore_index=True))
    after = customer_features(shop2, cutoff)
    pd.testing.assert_frame_equal(before, after)
    # and the label window does see them
    y = future_labels(shop2, cutoff, 90, pd.Index([cid]))
    assert y.loc[cid, "churn"] == 0


def test_customer_who_returns_everything_has_no_value(small_shop, truth) -> None:
    X = customer_features(small_shop, small_shop.end)
    heavy = truth.index[truth["return_rate"] > 0.85].intersection(X.index[X["n_orders"] >= 2])
    normal = truth.index[truth["return_rate"] < 0.05].intersection(X.index[X["n_orders"] >= 2])
    assert len(heavy) >= 5
    # gross spend looks fine, net revenue is a small fraction of it
    assert (X.loc[heavy, "net_revenue"] / X.loc[heavy, "gross_spend"]).median() < 0.3
    assert (X.loc[normal, "net_revenue"] / X.loc[normal, "gross_spend"]).median() > 0.8
    assert X.loc[heavy, "return_rate"].median() > 0.6


def test_feature_values_on_a_known_history(small_shop) -> None:
    X = customer_features(small_shop, pd.Timestamp("2025-12-01"))
    b = X[X["n_orders"] >= 3]
    assert (b["recency_days"] >= 0).all()
    assert (b["ipt_mean"] > 0).all()
    assert np.allclose(b["overdue"], b["recency_days"] / b["ipt_mean"].clip(lower=1))
    assert ((b["discount_share"] >= 0) & (b["discount_share"] <= 1)).all()
    assert set(X["top_category"].dropna().unique()) <= set(small_shop.products["category"])
    assert X["top_category"].dtype == "category"  # LightGBM needs categories, not str
