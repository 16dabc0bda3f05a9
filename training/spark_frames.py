"""The training frames of ``personalise train --engine spark``: built by the Spark engine, collected to the
driver (a sample of customers past ``max_rows``, for the stacked and the uplift training rows alike),
where the models are fitted as with the local engine.

The Spark engine reads the shop's own tables; live rows merged into the in-memory shop (events and decisions
posted to the service) are not in its frames, so the job warns when it kept any.
"""

from __future__ import annotations

import logging

import pandas as pd

from features.io import Shop
from features.spark_engine import SparkEngine
from training.frames import record, sample_uplift, uplift_limit
from training.spark_training import sample_fraction, uplift_training_frames

log = logging.getLogger(__name__)


class SparkFrames:
    """:class:`training.frames.FrameSource` on a :class:`~features.spark_engine.SparkEngine`."""

    name = "spark"

    def __init__(self, engine: SparkEngine, max_rows: int | None = None, seed: int = 0,
                 uplift_max_rows: int | None = None) -> None:
        self.engine, self.max_rows, self.seed, self.uplift_max_rows = engine, max_rows, seed, uplift_max_rows
        self.built: list[dict] = []

    def stacked(self, shop: Shop, cutoffs: list[pd.Timestamp], horizon_days: int
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
        share = sample_fraction(self.engine, len(cutoffs), self.max_rows)
        X, y = self.engine.stacked_training_set(cutoffs, horizon_days, share, self.seed)
        log.info("spark: stacked training set of %d rows at %d cutoffs (customers' share %.3f)", len(X),
                 len(cutoffs), share)
        self.built.append(record("stacked", X, share, cutoffs))
        return X, y

    def uplift(self, shop: Shop, before: pd.Timestamp | None, start: pd.Timestamp | None
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
        X, y = uplift_training_frames(self.engine, before, start)
        X, y, share = sample_uplift(X, y, start, uplift_limit(self.max_rows, self.uplift_max_rows), self.seed)
        log.info("spark: uplift training set of %d rows (customers' share %.3f)", len(X), share)
        self.built.append(record("uplift", X, share))
        return X, y
