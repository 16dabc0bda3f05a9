"""Batch scoring on Spark: the rows of :mod:`training.scoring`, computed bucket by bucket on a cluster.

Features are computed per bucket of customers (:mod:`features.spark_engine`). Churn and value are scored by
``mlflow.pyfunc.spark_udf(spark, <pinned model>, env_manager="local")`` (executors use the packages already
installed on them). Segments and RFM quintiles are shop-wide ranks: a narrow frame (one row and seven numbers
per customer) is collected to the driver for them. Triggers and next-best offers run per bucket with the offer
policy, and recommendations with ``mapInPandas``; both models are shipped once per executor with
``SparkContext.addFile`` and loaded once per Python worker.
"""

from __future__ import annotations

import logging
import os
import pickle
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark import SparkFiles
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from features import schema
from features.engine import CUSTOMER_ID
from features.io import Shop
from features.spark_engine import SparkEngine
from features.spark_io import spark_session
from training.scoring import (
    CUSTOMER_COLUMNS,
    OFFER_COLUMNS,
    SEGMENT_INPUTS,
    ScoreConfig,
    active_triggers,
    offer_rows,
    recommendation_rows,
    segments_frame,
    trigger_lists,
)
from training.scoring_models import SCORE_COLUMN, Champion, resolve_champion

log = logging.getLogger(__name__)

DECISIONS = ("customer_id string, offer_id string, channel string, expected_value double, `group` string, "
             "send boolean, reason string, `trigger` string, uplift double, propensity double, "
             "triggers array<string>")
SEGMENTS = ("customer_id string, R long, F long, M long, value_tier string, attrition_tier string, "
            "potential string, segment string")
RECOMMENDATIONS = (
    "customer_id string, product_id string, score double, rank long, reason string, source string"
)

_loaded: dict[str, tuple[str, Any]] = {}
"""Per Python worker: component -> (shipped file, its unpickled object); a new run's file replaces it."""


def shipped(component: str, name: str) -> Any:
    """The object of a file added with ``SparkContext.addFile``, unpickled once per Python worker."""
    hit = _loaded.get(component)
    if hit is None or hit[0] != name:
        with open(SparkFiles.get(name), "rb") as f:
            _loaded[component] = (name, pickle.load(f))
    return _loaded[component][1]


def _ship(spark: Any, champ: Champion, component: str, work: str) -> str:
    """Add a component pickle to the job's files under a name of its own (a file name is added once)."""
    name = f"{component}-v{champ.versions[component]}-{uuid.uuid4().hex[:8]}.pkl"
    os.link(champ.paths[component], Path(work) / name)
    spark.sparkContext.addFile(str(Path(work) / name))
    return name


def _scores(spark: Any, feats: DataFrame, champ: Champion) -> DataFrame:
    import mlflow.pyfunc
    row = F.struct(*[F.col(c) for c in feats.columns])
    udfs = {comp: mlflow.pyfunc.spark_udf(spark, champ.scorer_uris[comp], result_type="double",
                                          env_manager="local") for comp in SCORE_COLUMN}
    return feats.filter(F.col("n_orders") > 0).select(
        CUSTOMER_ID, *[udfs[comp](row).alias(col) for comp, col in SCORE_COLUMN.items()])


def _decisions(eng: SparkEngine, scored: DataFrame, offers_file: str, as_of: pd.Timestamp,
               campaign: str) -> DataFrame:
    def run(shop: Shop, extra: dict[str, pd.DataFrame]) -> pd.DataFrame:
        table = extra["scored"].sort_values(CUSTOMER_ID, kind="stable").reset_index(drop=True)
        churn = table.set_index(CUSTOMER_ID)["churn"]
        trig = active_triggers(shop, as_of, churn)
        policy = shipped("offers", offers_file)["policy"]
        opted = shop.customers.set_index(schema.CUSTOMER_ID)[schema.OPTED_OUT]
        out = offer_rows(policy, table, trig, shop.offer_log, opted, as_of, campaign)
        out["triggers"] = trigger_lists(trig, pd.Index(out[CUSTOMER_ID])).to_numpy()
        return out

    return eng.map_buckets(run, DECISIONS, extra={"scored": scored})


def _recommendations(feats: DataFrame, rec_file: str, k: int) -> DataFrame:
    def run(batches: Any) -> Any:
        engine = shipped("recommender", rec_file)["engine"]
        for b in batches:
            yield recommendation_rows(engine, b[CUSTOMER_ID].tolist(), b["region"].tolist(), k)

    return feats.select(CUSTOMER_ID, "region").mapInPandas(run, RECOMMENDATIONS)


def score_spark(data_dir: str | Path, tables: str, out: str, cfg: ScoreConfig, work: str,
                master: str | None = None,
                spark: Any = None) -> tuple[pd.Timestamp, dict[str, int], Champion]:
    """Write the three tables of :mod:`training.scoring` to ``out`` (a local path or Hadoop URI) with
    Spark."""
    spark = spark or spark_session(master)
    eng = SparkEngine(spark, tables, buckets=cfg.buckets)  # reads and validates before the registry
    champ = resolve_champion(data_dir, work, cfg.alias)
    as_of = pd.Timestamp(cfg.as_of) if cfg.as_of else eng.facts().default_cutoff()
    log.info("[1/5] features as of %s in %d buckets", as_of, eng.buckets())
    feats = eng.features_frame(as_of).persist()
    log.info("[2/5] churn and value (spark_udf), segments on the driver")
    scores = _scores(spark, feats, champ).persist()
    narrow: pd.DataFrame = (
        feats.select(CUSTOMER_ID, *SEGMENT_INPUTS).join(scores, CUSTOMER_ID, "left").toPandas()
    )
    segs = segments_frame(narrow.set_index(CUSTOMER_ID), champ.horizon_days).reset_index()
    segs_df = spark.createDataFrame(segs.astype(object).where(segs.notna(), None), SEGMENTS)
    scored = feats.join(scores, CUSTOMER_ID, "left").join(
        segs_df.select(CUSTOMER_ID, "segment"), CUSTOMER_ID, "left"
    )
    log.info("[3/5] triggers and offers")
    decisions = _decisions(eng, scored, _ship(spark, champ, "offers", work), as_of, cfg.campaign).persist()
    base = out.rstrip("/")
    decisions.select(*OFFER_COLUMNS).write.mode("overwrite").parquet(f"{base}/offers.parquet")
    log.info("[4/5] customers")
    customers = (
        feats.join(scores, CUSTOMER_ID, "left")
        .join(segs_df, CUSTOMER_ID, "left")
        .join(decisions.select(CUSTOMER_ID, "triggers"), CUSTOMER_ID, "left")
        .select(*CUSTOMER_COLUMNS)
    )
    customers.write.mode("overwrite").parquet(f"{base}/customers.parquet")
    log.info("[5/5] recommendations")
    _recommendations(feats, _ship(spark, champ, "recommender", work), cfg.k).write.mode("overwrite").parquet(
        f"{base}/recommendations.parquet")
    n = decisions.count()  # one row per customer, as in customers.parquet
    rows = {"customers": n, "recommendations": spark.read.parquet(f"{base}/recommendations.parquet").count(),
            "offers": n}
    for df in (decisions, scores, feats):
        df.unpersist()
    return as_of, rows, champ
