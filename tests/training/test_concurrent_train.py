"""The train job's independent parts run at the same time (the default on a small shop) or one after the
other: the evaluation and the served bundle are the same."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.io import load_shop
from training import frames
from training.config import TrainConfig
from training.evaluate import evaluate
from training.refit import fit_serving_bundle

pytestmark = pytest.mark.slow  # two evaluations and refits


def _without_seconds(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: _without_seconds(v) for k, v in o.items() if "seconds" not in str(k)}
    return o


def test_concurrent_parts_give_the_same_evaluation_and_bundle(small_shop_dir: Path) -> None:
    base = TrainConfig(seed=5)
    assert base.concurrent(1500)  # the default runs this shop's parts at the same time
    out = []
    for cfg in (base, replace(base, concurrent_max_customers=None)):
        shop = load_shop(small_shop_dir)
        src = frames.LocalFrames(cfg.max_training_rows, cfg.seed, cfg.uplift_max_rows)
        with frames.using(src):
            ev = evaluate(shop, cfg, small_shop_dir / "truth")
            bundle = fit_serving_bundle(shop, cfg, ev)
        out.append((ev, bundle, src.built))
    (ev1, b1, built1), (ev2, b2, built2) = out
    assert "offers" in ev1.report and "churn" in ev1.report and "recommend" in ev1.report
    assert _without_seconds(ev1.report) == _without_seconds(ev2.report)
    assert ev1.blend_weights == ev2.blend_weights
    # the frames' source was the job's in the threads too (samples, records; in the threads' order)
    assert sorted(map(repr, built1)) == sorted(map(repr, built2)) and len(built1) > 2
    pd.testing.assert_frame_equal(b1.scores, b2.scores)
    pd.testing.assert_frame_equal(b1.triggers, b2.triggers)
    c1, c2 = b1.engine.candidates_, b2.engine.candidates_
    assert c1 is not None and c2 is not None
    np.testing.assert_array_equal(c1.items, c2.items)
    np.testing.assert_array_equal(c1.scores, c2.scores)
    assert b1.policy is not None and b2.policy is not None
    X = b1.features[b1.features["n_orders"] > 0].head(300)
    pd.testing.assert_frame_equal(b1.policy.uplift.predict_pairs(X, np.full(len(X), "pct10")),
                                  b2.policy.uplift.predict_pairs(X, np.full(len(X), "pct10")))
