"""The job's frame source: the local frames, sampled by customer past ``max_rows``, and selected per job."""

from __future__ import annotations

import pandas as pd
import pytest

from features import schema
from features.customer_labels import stacked_training_set, training_cutoffs
from training import frames
from training.offer_eval import uplift_training_set

pytestmark = pytest.mark.slow


def test_past_max_rows_the_frames_keep_every_row_of_a_sample_of_customers(small_shop) -> None:
    cutoff = small_shop.end - pd.Timedelta(days=90)
    X, y = uplift_training_set(small_shop, cutoff)
    src = frames.LocalFrames(max_rows=len(y) // 3, seed=1)
    Xs, ys = src.uplift(small_shop, cutoff, None)
    kept = set(ys[schema.CUSTOMER_ID])
    assert 0.2 < len(ys) / len(y) < 0.5 and len(ys) == int(y[schema.CUSTOMER_ID].isin(kept).sum())
    assert src.built[-1]["frame"] == "uplift"
    assert src.built[-1]["customers_share"] == pytest.approx(1 / 3, 0.01)
    held = src.uplift(small_shop, None, cutoff)[1]  # held-out sends are never sampled
    assert len(held) == len(uplift_training_set(small_shop, start=cutoff)[1])
    cuts = training_cutoffs(small_shop, cutoff, 90, 3, 14)
    full, _ = stacked_training_set(small_shop, cuts, 90)
    part, _ = src.stacked(small_shop, cuts, 90)
    assert set(part.index) < set(full.index) and frames.smallest_share(src) < 1.0


def test_a_sampled_stacked_set_is_the_full_sets_rows_of_its_customers(small_shop) -> None:
    """Past ``max_rows`` the features are computed for the sampled customers only: each of their rows, and
    its labels, equal the row of the set built for everybody (what the sample saves is time, not content)."""
    cutoff = small_shop.end - pd.Timedelta(days=90)
    cuts = training_cutoffs(small_shop, cutoff, 90, 3, 14)
    full, yf = stacked_training_set(small_shop, cuts, 90)
    part, yp = stacked_training_set(small_shop, cuts, 90, max_rows=len(full) // 3, seed=2)
    assert 0.2 < len(part) / len(full) < 0.5 and part.attrs["sample_share"] < 1.0
    keys = lambda X: list(zip(X.index, X["tenure_days"], strict=True))  # noqa: E731 (a row: customer, cutoff)
    rows = pd.MultiIndex.from_tuples(keys(full))
    assert not rows.duplicated().any()  # a customer's tenure tells its cutoffs apart
    where = pd.Series(range(len(full)), index=rows).loc[keys(part)].to_numpy()
    expected = full.iloc[where]
    assert list(part.columns) == list(expected.columns)
    for col in part.columns:
        a, b = part[col], expected[col]
        if isinstance(a.dtype, pd.CategoricalDtype) or a.dtype == object:
            assert a.astype(object).where(a.notna(), None).tolist() == b.astype(object).where(
                b.notna(), None).tolist(), col
        else:
            assert a.astype(float).to_numpy() == pytest.approx(b.astype(float).to_numpy(), nan_ok=True), col
    pd.testing.assert_frame_equal(yp.reset_index(drop=True), yf.iloc[where].reset_index(drop=True),
                                  check_dtype=False)


def test_the_job_selects_the_source_for_its_duration(small_shop) -> None:
    src = frames.LocalFrames(max_rows=10)
    cutoff = small_shop.end - pd.Timedelta(days=90)
    with frames.using(src):
        assert frames.current() is src
        frames.uplift(small_shop, cutoff)
    assert frames.current() is not src and len(src.built) == 1


def test_uplift_max_rows_samples_the_uplift_rows_only(small_shop) -> None:
    cutoff = small_shop.end - pd.Timedelta(days=90)
    _, y = uplift_training_set(small_shop, cutoff)
    src = frames.LocalFrames(max_rows=None, uplift_max_rows=len(y) // 2, seed=1)
    _, ys = src.uplift(small_shop, cutoff, None)
    assert 0.35 < len(ys) / len(y) < 0.65 and src.built[-1]["customers_share"] == pytest.approx(0.5, 0.01)
    cuts = training_cutoffs(small_shop, cutoff, 90, 3, 14)
    full, _ = stacked_training_set(small_shop, cuts, 90)
    assert len(src.stacked(small_shop, cuts, 90)[0]) == len(full)  # the stacked rows are not sampled
    assert frames.uplift_limit(None, None) is None and frames.uplift_limit(10, None) == 10
    assert frames.uplift_limit(10, 5) == 5 and frames.uplift_limit(None, 5) == 5
