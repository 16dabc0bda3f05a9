"""The offer model the train job ships is the one the benchmark measures as ``production_all_campaigns``.

``bench/sections.py`` judges the shipped policy by refitting ``fit_uplift(shop, shop.end, seed)`` itself
(``bench/UPLIFT.md``, "The before-cutoff vs shipped gap"); that number describes the shipped model only as
long as the serving refit (``training.refit``, under the train job's frame source) fits the same rows with
the same seed as of the same date. If the refit's as-of date, seed, sampling or learner drifts from the
benchmark's, this fails.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.customer import customer_features
from features.io import load_shop
from features.schema import N_ORDERS
from tests.conftest import SEED, days_after_start
from training import frames
from training.config import TrainConfig
from training.offer_eval import fit_uplift
from training.refit import fit_serving_bundle

pytestmark = pytest.mark.slow  # the whole serving refit (recommenders too): about 10 s of CPU


def test_the_shipped_offer_model_is_the_benchmarks_refit_on_every_campaign(tiny_shop_dir) -> None:
    shop = load_shop(tiny_shop_dir)
    config = TrainConfig(seed=SEED)
    source = frames.LocalFrames(config.max_training_rows, config.seed, config.uplift_max_rows)
    with frames.using(source):  # the train job's local frame source (training.jobs._frame_source)
        bundle = fit_serving_bundle(shop, config, None)
    assert bundle.policy is not None
    uplift_frames = [b for b in source.built if b["frame"] == "uplift"]
    assert uplift_frames and all(b["customers_share"] == 1.0 for b in uplift_frames)

    X = customer_features(shop, shop.end)
    X = X[X[N_ORDERS] > 0]
    offers = np.resize(np.array(sorted(bundle.policy.uplift.offers_), dtype=object), len(X))
    shipped = bundle.policy.uplift.predict_pairs(X, offers)["uplift"].to_numpy()
    benchmark = fit_uplift(shop, shop.end, SEED)
    assert benchmark is not None
    np.testing.assert_allclose(benchmark.predict_pairs(X, offers)["uplift"].to_numpy(), shipped, rtol=0,
                               atol=1e-12)
    # the comparison tells models apart: fitted before a cutoff (fewer campaigns), the uplift differs
    before = fit_uplift(shop, days_after_start(shop, 240), SEED)
    assert before is not None
    assert np.abs(before.predict_pairs(X, offers)["uplift"].to_numpy() - shipped).max() > 1e-4
    assert bundle.as_of == shop.end + pd.Timedelta(seconds=1)
