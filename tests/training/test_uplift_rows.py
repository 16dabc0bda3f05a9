"""The uplift rows built with one as-of join for the outcomes and features per send date built only for the
sends asked (issue #15): the same rows as the former per-date build, sampled or not."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from features.customer import customer_features, unify_categories
from features.schema import CAMPAIGN_ID, CUSTOMER_ID, GROUP, OFFER_ID, QUANTITY, REDEEMED_AT, SENT_AT
from training import frames
from training.offer_eval import uplift_training_set


def _reference(shop, window_days: int = 14) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The former build: per send date, the features of its customers and a merge of their purchases."""
    ol = shop.offer_log
    o = shop.customer_orders()
    buys = o[o[QUANTITY] > 0][[CUSTOMER_ID, "ts"]]
    xs, ys = [], []
    for day, g in ol.groupby(ol[SENT_AT].dt.floor("D")):
        X = customer_features(shop, day, customers=pd.Index(g[CUSTOMER_ID].unique()))
        xs.append(X.loc[g[CUSTOMER_ID].to_numpy()].reset_index())
        m = g.merge(buys, on=CUSTOMER_ID, how="left")
        win = (m["ts"] >= m[SENT_AT]) & (m["ts"] < m[SENT_AT] + pd.Timedelta(days=window_days))
        bought = win.groupby([m[CUSTOMER_ID], m[OFFER_ID]]).any()
        pairs = zip(g[CUSTOMER_ID], g[OFFER_ID], strict=True)
        ys.append(pd.DataFrame({
            CUSTOMER_ID: g[CUSTOMER_ID].to_numpy(), OFFER_ID: g[OFFER_ID].to_numpy(),
            CAMPAIGN_ID: g[CAMPAIGN_ID].to_numpy() if CAMPAIGN_ID in g else g[OFFER_ID].to_numpy(),
            "treated": (g[GROUP] == "treatment").to_numpy(),
            "bought": [bool(bought.get((c, of), False)) for c, of in pairs],
            "redeemed": g[REDEEMED_AT].notna().to_numpy() if REDEEMED_AT in g else False,
            SENT_AT: g[SENT_AT].to_numpy()}))
    return (unify_categories(pd.concat(xs, ignore_index=True)).set_index(CUSTOMER_ID),
            pd.concat(ys, ignore_index=True))


def _fresh(shop):
    s = replace(shop)
    for k in ("_uplift_rows", "_uplift_features"):
        s.__dict__.pop(k, None)
    return s


def _values(X: pd.DataFrame) -> pd.DataFrame:
    """The values a model reads (counts may be integers in one frame and floats in the other; categories
    over different sets of present values)."""
    return pd.DataFrame({c: (X[c].astype(object) if not pd.api.types.is_numeric_dtype(X[c])
                             else X[c].astype(float)) for c in X.columns}, index=X.index)


@pytest.mark.slow  # builds the rows three times on the small simulated shop
def test_the_uplift_rows_equal_the_former_per_date_build(small_shop) -> None:
    ref_X, ref_y = _reference(small_shop)
    cut = small_shop.end - pd.Timedelta(days=90)
    sent = pd.to_datetime(ref_y[SENT_AT])
    shop = _fresh(small_shop)
    for before, start in ((cut, None), (None, cut), (None, None)):  # the job's order: cached dates reused
        m = np.ones(len(ref_y), bool)
        if before is not None:
            m &= (sent + pd.Timedelta(days=14) <= before).to_numpy()
        if start is not None:
            m &= (sent >= start).to_numpy()
        X, y = uplift_training_set(shop, before, start)
        pd.testing.assert_frame_equal(y, ref_y[m].reset_index(drop=True))
        pd.testing.assert_frame_equal(X, ref_X[m])  # the same dtypes too: nothing sampled
        assert X.attrs["sample_share"] == 1.0
    # a customer sent the same offer twice on one date: bought after both when either window has a purchase
    ol = small_shop.offer_log
    twice = pd.concat([ol, ol.head(50).assign(**{SENT_AT: ol[SENT_AT].head(50) + pd.Timedelta(hours=1)})],
                      ignore_index=True)
    dup = _fresh(replace(small_shop, offer_log=twice))
    dup.__dict__.pop("_codes", None)
    r_X, r_y = _reference(dup)
    X, y = uplift_training_set(dup)
    pd.testing.assert_frame_equal(y, r_y)
    assert y["bought"].sum() == r_y["bought"].sum() > 0


@pytest.mark.slow
def test_sampled_uplift_rows_build_only_the_sampled_sends(small_shop) -> None:
    cut = small_shop.end - pd.Timedelta(days=90)
    X_all, y_all = uplift_training_set(_fresh(small_shop), cut)
    limit = len(y_all) // 3
    Xs, ys, share = frames.sample_uplift(X_all, y_all, None, limit, 7)  # the former way: build, then sample
    shop = _fresh(small_shop)
    X, y = uplift_training_set(shop, cut, max_rows=limit, seed=7)
    assert X.attrs["sample_share"] == share < 0.5
    pd.testing.assert_frame_equal(y, ys)
    a, b = _values(X), _values(Xs)
    # top_category breaks ties between equal sums by a sort over the customers in the frame
    tops = a["top_category"].fillna("-"), b["top_category"].fillna("-")
    assert (tops[0] != tops[1]).mean() < 0.01
    pd.testing.assert_frame_equal(a.drop(columns="top_category"), b.drop(columns="top_category"))
    built = shop.__dict__["_uplift_features"][1]
    assert sum(len(f) for f in built.values()) < len(y_all)  # the features of the others were never built
    src = frames.LocalFrames(uplift_max_rows=limit, seed=7)
    _, y2 = src.uplift(_fresh(small_shop), cut, None)
    pd.testing.assert_frame_equal(y2, ys)
    assert src.built[-1]["customers_share"] == share
