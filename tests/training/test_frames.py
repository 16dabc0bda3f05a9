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
