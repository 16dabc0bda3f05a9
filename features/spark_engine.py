"""The feature functions on Spark: ``groupBy(hash bucket of customer_id).applyInPandas``, never by customer.

Every table's rows (orders, customers, events, offer_log, plus any per-customer frame a job adds) are tagged
with their table and unioned, so that one shuffle brings each bucket all its customers' rows; the bucket
function builds a Shop of them (:func:`features.engine.bucket_shop`, with the broadcast product table and
:class:`~features.engine.ShopFacts`) and calls the same function the local engine calls.

Example
-------
>>> eng = SparkEngine(spark_session(), "s3a://shop/2025-10-01")            # doctest: +SKIP
>>> eng.write_features(pd.Timestamp("2025-10-01"), "s3a://shop/features/2025-10-01")
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from features import schema
from features.engine import (
    CUSTOMER_ID,
    ShopFacts,
    bucket_features,
    bucket_shop,
    bucket_training_rows,
    ddl,
    probe_shop,
    training_frames,
)
from features.io import Shop
from features.spark_io import ROW, SparkTables, read_tables

log = logging.getLogger(__name__)

BUCKET, TABLE = "_bucket", "_table"
ROWS_PER_BUCKET = 1_000_000
"""Default bucket size in input rows: a bucket is one pandas frame in one Python worker (about 1 GB)."""
PROBE_CUTOFF = pd.Timestamp("2020-03-01")

BucketFn = Callable[[Shop, dict[str, pd.DataFrame]], pd.DataFrame]
"""A bucket's work: its Shop and its rows of the extra frames (by name) -> output rows."""


def bucket_of(customer_id: Any, buckets: int) -> Any:
    """The bucket of a customer id column: a 64-bit hash modulo the number of buckets."""
    return F.pmod(F.xxhash64(customer_id), F.lit(buckets))


def sample_of(customer_id: Any, fraction: float, seed: int) -> Any:
    """A condition keeping a deterministic ``fraction`` of customers (all their rows, at every cutoff)."""
    h = F.pmod(F.xxhash64(F.concat(F.lit(f"{seed}:"), customer_id)), F.lit(1_000_000))
    return h < F.lit(int(round(fraction * 1_000_000)))


class SparkEngine:
    """The shop's tables on Spark and the feature functions run bucket by bucket over them."""

    name = "spark"

    def __init__(self, spark: SparkSession, data: str, buckets: int | None = None) -> None:
        self.spark, self.data = spark, data
        self.tables: SparkTables = read_tables(spark, data)
        self._facts: ShopFacts | None = None
        self._buckets = buckets
        self._products: Any = None

    # -- shop-wide values, computed once ---------------------------------------------------------
    def facts(self) -> ShopFacts:
        if self._facts is None:
            t = self.tables
            costed = t.products.select(schema.PRODUCT_ID, F.col("unit_cost").isNotNull().alias("_costed"))
            o = (
                t.orders.join(F.broadcast(costed), schema.PRODUCT_ID, "left")
                .agg(
                    F.min("ts").alias("first"),
                    F.max("ts").alias("last"),
                    F.min(F.when(F.col("_costed") & F.col(CUSTOMER_ID).isNotNull(), F.col("ts"))).alias(
                        "costed"
                    ),
                )
                .first()
            )
            assert o is not None
            end = pd.Timestamp(o["last"])
            has_events = False
            if t.events is not None:
                e = t.events.agg(F.max("ts").alias("last"), F.count(F.lit(1)).alias("n")).first()
                has_events = bool(e is not None and e["n"])
                if has_events and e is not None and e["last"] is not None:
                    end = max(end, pd.Timestamp(e["last"]))
            self._facts = ShopFacts(
                first_order=pd.Timestamp(o["first"]), end=end, has_events=has_events,
                has_offer_log=t.offer_log is not None and bool(t.offer_log.limit(1).count()),
                first_costed_line=None if o["costed"] is None else pd.Timestamp(o["costed"]),
                attributes=t.attributes, vocabulary=t.vocabulary)
        return self._facts

    def buckets(self) -> int:
        """Number of buckets: set, or enough for about :data:`ROWS_PER_BUCKET` input rows each and at least
        twice the cluster's parallelism."""
        if self._buckets is None:
            rows = sum(t.count() for _, t in self.tables.items())
            self._buckets = max(2 * self.spark.sparkContext.defaultParallelism,
                                math.ceil(rows / ROWS_PER_BUCKET))
            log.info("spark engine: %d input rows in %d buckets", rows, self._buckets)
        return self._buckets

    def products(self) -> Any:
        """The product table, broadcast once to every executor."""
        if self._products is None:
            self._products = self.spark.sparkContext.broadcast(self.tables.products.toPandas())
        return self._products

    # -- the bucket pass -------------------------------------------------------------------------
    def tagged(self, extra: dict[str, DataFrame] | None = None, keep: Any = None) -> DataFrame:
        """Every customer row of every table (and of ``extra``), tagged with its table and bucket.
        Rows without a customer id are left out: no per-customer feature reads them. ``keep``: a
        condition on ``customer_id`` (e.g. :func:`sample_of`)."""
        parts = []
        for name, t in [*self.tables.items(), *(extra or {}).items()]:
            if name == "products":
                continue
            cols = [F.col(c).alias(f"{name}__{c}") for c in t.columns if c != CUSTOMER_ID]
            parts.append(t.filter(F.col(CUSTOMER_ID).isNotNull())
                         .select(F.col(CUSTOMER_ID), F.lit(name).alias(TABLE), *cols))
        out = parts[0]
        for p in parts[1:]:
            out = out.unionByName(p, allowMissingColumns=True)
        if keep is not None:
            out = out.filter(keep)
        return out.withColumn(BUCKET, bucket_of(F.col(CUSTOMER_ID), self.buckets()))

    def map_buckets(self, fn: BucketFn, out_schema: str, extra: dict[str, DataFrame] | None = None,
                    keep: Any = None) -> DataFrame:
        """``fn`` on the Shop of every bucket (and the bucket's rows of each ``extra`` frame)."""
        columns = {name: list(t.columns) for name, t in [*self.tables.items(), *(extra or {}).items()]}
        contract = set(schema.TABLES)
        products, facts = self.products(), self.facts()

        def run(pdf: pd.DataFrame) -> pd.DataFrame:
            frames: dict[str, pd.DataFrame] = {}
            for name, cols in columns.items():
                if name == "products":
                    continue
                rows = pdf[pdf[TABLE] == name]
                f = pd.DataFrame({c: rows[CUSTOMER_ID if c == CUSTOMER_ID else f"{name}__{c}"].to_numpy()
                                  for c in cols})
                if ROW in f.columns:  # kept: the rows' read order (the feature functions ignore the column)
                    f = f.sort_values(ROW, kind="stable").reset_index(drop=True)
                frames[name] = f
            shop = bucket_shop({n: f for n, f in frames.items() if n in contract}, products.value, facts)
            return fn(shop, {n: f for n, f in frames.items() if n not in contract})

        return self.tagged(extra, keep).groupBy(BUCKET).applyInPandas(run, out_schema)

    # -- jobs ------------------------------------------------------------------------------------
    def features_frame(self, cutoff: pd.Timestamp) -> DataFrame:
        """:func:`features.customer.customer_features` at ``cutoff`` for every customer, as a Spark
        DataFrame."""
        cutoff = pd.Timestamp(cutoff)
        out_schema = ddl(bucket_features(probe_shop(self.facts()), PROBE_CUTOFF))
        return self.map_buckets(lambda shop, _: bucket_features(shop, cutoff), out_schema)

    def write_features(self, cutoff: pd.Timestamp, out: str) -> str:
        self.features_frame(cutoff).write.mode("overwrite").parquet(out)
        return out

    def training_rows(self, cutoffs: list[pd.Timestamp], horizon_days: int, sample: float = 1.0,
                      seed: int = 0) -> DataFrame:
        """The stacked training rows (features, labels, cutoff rank) of a ``sample`` of customers."""
        out_schema = ddl(bucket_training_rows(probe_shop(self.facts()), [PROBE_CUTOFF], 1))
        keep = sample_of(F.col(CUSTOMER_ID), sample, seed) if sample < 1.0 else None
        return self.map_buckets(lambda shop, _: bucket_training_rows(shop, cutoffs, horizon_days), out_schema,
                                keep=keep)

    def stacked_training_set(self, cutoffs: list[pd.Timestamp], horizon_days: int, sample: float = 1.0,
                             seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(X, y)`` as :func:`features.customer_labels.stacked_training_set` gives them, for a ``sample`` of
        customers, collected to the driver."""
        rows: pd.DataFrame = self.training_rows(cutoffs, horizon_days, sample, seed).toPandas()
        if not len(rows):
            return pd.DataFrame(), pd.DataFrame()
        return training_frames(rows)
