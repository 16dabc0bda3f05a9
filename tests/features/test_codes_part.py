"""A part of the shop's coded arrays (:func:`features.codes.restrict`): the features and labels of its
customers read from it equal those read from the whole shop's arrays (issue #15: sampled stacked rows and
uplift rows no longer mask the whole shop's rows at every cutoff)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.codes import restrict, shop_codes
from features.customer import customer_features
from features.customer_labels import customer_sample, future_labels, stacked_training_set, training_cutoffs


def test_features_and_labels_read_from_a_part_equal_the_whole_shops(small_shop) -> None:
    c = shop_codes(small_shop)
    ids = pd.Index(c.customers, dtype=object)
    sampled = customer_sample(ids, 0.2, 3)
    part = restrict(c, sampled | customer_sample(ids, 0.1, 4))
    assert part.whole is c and len(part.lines.cust) < 0.5 * len(c.lines.cust)
    assert part.events is not None and c.events is not None and len(part.events.cust) < len(c.events.cust)
    assert np.array_equal(part.lines.order_ids, c.lines.order_ids)  # per order, not per line: kept whole
    for t in (small_shop.end - pd.Timedelta(days=200), small_shop.end - pd.Timedelta(days=20)):
        a = customer_features(small_shop, t, customers=ids[sampled])
        b = customer_features(small_shop, t, customers=ids[sampled], codes=part)
        assert len(a) > 100
        pd.testing.assert_frame_equal(a, b)
        pd.testing.assert_frame_equal(future_labels(small_shop, t, 90, a.index),
                                      future_labels(small_shop, t, 90, a.index, codes=part))
    # a part of a part keeps the first one's whole, and holds only customers of both
    inner = restrict(part, customer_sample(ids, 0.5, 5))
    assert inner.whole is c and inner.part is not None and not (inner.part & ~part.part).any()
    with pytest.raises(ValueError, match="without some of the customers"):
        customer_features(small_shop, small_shop.end, customers=ids[~part.part][:5], codes=part)
    with pytest.raises(ValueError, match="name its customers"):
        customer_features(small_shop, small_shop.end, codes=part)


def test_sampled_stacked_rows_equal_the_sampled_customers_rows_of_the_whole_shop(small_shop) -> None:
    cutoff = small_shop.end - pd.Timedelta(days=90)
    cuts = training_cutoffs(small_shop, cutoff, 90, 3, 30)
    X, y = stacked_training_set(small_shop, cuts, 90, max_rows=800, seed=2)
    share = X.attrs["sample_share"]
    assert share < 0.5
    xs = []
    for t in cuts:  # the former way: each cutoff's sampled buyers masked out of the whole shop's rows
        F = customer_features(small_shop, t)
        F = F[F["n_orders"] > 0]
        F = customer_features(small_shop, t, customers=F.index[customer_sample(F.index, share, 2)])
        xs.append(F[F["n_orders"] > 0])
    ref = pd.concat(xs)
    assert len(X) == len(ref) > 0
    pd.testing.assert_index_equal(X.index, ref.index)
    num = [col for col in X.columns if pd.api.types.is_numeric_dtype(X[col])]
    pd.testing.assert_frame_equal(X[num].astype(float), ref[num].astype(float))
