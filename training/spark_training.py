"""``train --engine spark``: the train job's training frames built on Spark, sampled, collected to the driver.

The job fits on the driver as it does today (LightGBM and implicit are fast there); only the frames, whose
size grows with customers x cutoffs, come from Spark:

* churn and value: stacked features and labels at the training cutoffs (:func:`customer_training_frames`,
  equal to :func:`features.customer_labels.stacked_training_set` at
  :func:`features.customer_labels.training_cutoffs`);
* uplift: features at each send date and the outcome in the window (:func:`uplift_training_frames`, equal to
  :func:`training.offer_eval.uplift_training_set`).

A sample keeps a fraction of *customers* (a hash of the id, so all their rows at every cutoff): the frames of
a sample are the full frames restricted to those customers. :func:`sample_fraction` picks the fraction that
keeps the stacked rows under a limit; the job logs it to MLflow.

Example
-------
>>> eng = SparkEngine(spark_session(), "s3a://shop/2025-10-01")                       # doctest: +SKIP
>>> f = customer_training_frames(eng, pd.Timestamp("2025-07-01"), CustomerModelConfig()) # doctest: +SKIP
>>> ChurnModel(cfg).fit(f.X, f.y["churn"])                                           # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from features import schema
from features.customer_labels import training_cutoffs
from features.engine import (
    CUSTOMER_ID,
    ShopFacts,
    ddl,
    drop_context,
    feature_table,
    probe_shop,
    read_feature_table,
)
from features.io import Shop
from features.spark_engine import SparkEngine, sample_of
from features.spark_io import ROW
from models.customer import CustomerModelConfig
from training.offer_eval import uplift_training_set

log = logging.getLogger(__name__)

UPLIFT_LABELS = {schema.OFFER_ID: "string", schema.CAMPAIGN_ID: "string", "treated": "boolean",
                 "bought": "boolean", "redeemed": "boolean", schema.SENT_AT: "timestamp"}
"""The outcome columns of :func:`training.offer_eval.uplift_training_set` and their Spark types."""
ORDER = "_order"


@dataclass
class TrainingFrames:
    """Training rows collected to the driver, and what they are a sample of."""

    X: pd.DataFrame
    y: pd.DataFrame
    cutoffs: list[pd.Timestamp]
    sample: float
    customers: int
    """Distinct customers in the rows."""


def cutoffs_for(facts: ShopFacts, cutoff: pd.Timestamp, config: CustomerModelConfig) -> list[pd.Timestamp]:
    """:func:`features.customer_labels.training_cutoffs` from the shop-wide facts (it reads only the first
    order)."""
    first = Shop(orders=pd.DataFrame({"ts": [facts.first_order]}), customers=pd.DataFrame(),
                 products=pd.DataFrame())
    return training_cutoffs(first, pd.Timestamp(cutoff), config.horizon_days, config.n_cutoffs,
                            config.cutoff_step_days)


def sample_fraction(eng: SparkEngine, n_cutoffs: int, max_rows: int | None) -> float:
    """The share of customers whose stacked rows (customers with an order x cutoffs, an upper bound) stay
    under ``max_rows`` (1.0 when they already do, or when ``max_rows`` is None)."""
    if max_rows is None:
        return 1.0
    buyers = eng.tables.orders.filter(F.col(CUSTOMER_ID).isNotNull()).select(CUSTOMER_ID).distinct().count()
    rows = buyers * max(n_cutoffs, 1)
    return 1.0 if rows <= max_rows else max_rows / rows


def customer_training_frames(eng: SparkEngine, cutoff: pd.Timestamp, config: CustomerModelConfig,
                             sample: float = 1.0, seed: int = 0) -> TrainingFrames:
    """The churn/value training frames of the train job for models evaluated at ``cutoff``."""
    cutoffs = cutoffs_for(eng.facts(), cutoff, config)
    X, y = eng.stacked_training_set(cutoffs, config.horizon_days, sample, seed)
    n = int(X.index.nunique()) if len(X) else 0
    log.info("churn/value training set: %d rows of %d customers (sample %.3f) at %d cutoffs", len(X), n,
             sample, len(cutoffs))
    return TrainingFrames(X=X, y=y, cutoffs=cutoffs, sample=sample, customers=n)


def _bucket_uplift(shop: Shop, before: pd.Timestamp | None, start: pd.Timestamp | None,
                   window_days: int) -> pd.DataFrame:
    """One bucket's uplift rows, each with its offer_log row's read position (:data:`ORDER`, from the
    :data:`~features.spark_io.ROW` column the Spark engine keeps in every table)."""
    X, y = uplift_training_set(shop, before, start, window_days)
    if not len(y):
        return pd.DataFrame()
    ol = shop.offer_log
    assert ol is not None
    key = [schema.CUSTOMER_ID, schema.OFFER_ID, schema.SENT_AT]
    pos = ol[key].assign(**{ORDER: ol[ROW].to_numpy(), "_n": ol.groupby(key).cumcount()})
    y = y.assign(_n=y.groupby(key).cumcount()).merge(pos, on=[*key, "_n"], how="left")
    t = feature_table(X).assign(**{c: y[c].to_numpy() for c in UPLIFT_LABELS}, **{ORDER: y[ORDER].to_numpy()})
    return drop_context(t)


def uplift_training_frames(eng: SparkEngine, before: pd.Timestamp | None = None,
                           start: pd.Timestamp | None = None, window_days: int = 14,
                           sample: float = 1.0, seed: int = 0
                           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(X, y)`` as :func:`training.offer_eval.uplift_training_set` gives them (same rows, same order)."""
    if eng.tables.offer_log is None:
        return pd.DataFrame(), pd.DataFrame()
    probe = probe_shop(eng.facts())
    assert probe.offer_log is not None
    probe.offer_log[ROW] = np.arange(len(probe.offer_log), dtype=np.int64)
    out_schema = ddl(_bucket_uplift(probe, None, None, window_days))
    keep = sample_of(F.col(CUSTOMER_ID), sample, seed) if sample < 1.0 else None
    rows: pd.DataFrame = eng.map_buckets(lambda shop, _: _bucket_uplift(shop, before, start, window_days),
                                         out_schema, keep=keep).toPandas()
    if not len(rows):
        return pd.DataFrame(), pd.DataFrame()
    # the local order: send day by send day, each day's rows in offer_log order
    rows = rows.assign(_day=rows[schema.SENT_AT].dt.floor("D")).sort_values(["_day", ORDER], kind="stable")
    rows = rows.drop(columns="_day")
    y = rows[list(UPLIFT_LABELS)].assign(customer_id=rows[CUSTOMER_ID].to_numpy())
    X = read_feature_table(rows.drop(columns=[*UPLIFT_LABELS, ORDER]))
    return X, y[[schema.CUSTOMER_ID, *UPLIFT_LABELS]].reset_index(drop=True)

