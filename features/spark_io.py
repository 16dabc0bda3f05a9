"""Spark sessions and the shop's tables on Spark: read from Parquet, typed and checked against the contract.

Tables are read from ``DATA/<table>.parquet`` (a file or a directory of part files) where ``DATA`` is a local
path or any Hadoop URI the cluster can read (``s3a://``, ``abfss://``, ``gs://``, ``hdfs://``, ``dbfs:/``).
They get the types and defaults :func:`features.io.load_shop` gives them; the checks that stop a job (missing
required columns, empty required values, unparseable or out-of-range values, duplicate ids, order lines naming
unknown products) raise :class:`~features.exceptions.DataValidationError` naming table, column and rows.

Example
-------
>>> spark = spark_session("local[2]")                      # doctest: +SKIP
>>> tables = read_tables(spark, "s3a://shop/2025-10-01")   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

from pyspark import SparkConf
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from features import schema
from features.attributes import vocabularies
from features.engine import JAVA_HELP, java_available
from features.exceptions import DataValidationError, PersonaliseError
from features.validation import ValidationReport, type_attributes

log = logging.getLogger(__name__)

PANDAS3_WARNING = "PySpark does not yet fully support pandas"
"""The start of pyspark 4.x's FutureWarning about pandas 3: the parity tests guard what it warns about."""
ROW = "_row"
"""Each table's rows numbered in the order they are read (the order pandas reads a single file in)."""
SQL_SETTINGS = {"spark.sql.session.timeZone": "UTC", "spark.sql.legacy.parquet.nanosAsLong": "true"}
"""Timestamps are naive UTC, as :func:`features.io.load_shop` reads them; Parquet nanosecond timestamps (what
pandas writes) are read as longs and converted, instead of refused."""
class SparkUnavailableError(PersonaliseError):
    """Spark cannot start here; the message says what to install."""


def silence_pandas3_warning() -> None:
    """Ignore pyspark's "does not yet fully support pandas >= 3" FutureWarning, matched by its message
    only."""
    warnings.filterwarnings("ignore", message=PANDAS3_WARNING, category=FutureWarning)


def spark_session(master: str | None = None, app_name: str = "personalise",
                  conf: dict[str, str] | None = None) -> SparkSession:
    """The running session (``spark-submit``, Databricks, a notebook) or a new one.

    ``master``: e.g. ``local[2]``, ``spark://host:7077``, ``yarn``; default: the one ``spark-submit`` was
    given, else ``local[*]``. Timestamps are read in UTC. In local mode the Python workers run this
    interpreter.
    """
    silence_pandas3_warning()
    active = SparkSession.getActiveSession()
    if active is not None and master is None:
        return active
    submitted = SparkConf().contains("spark.master")
    if not submitted and "PYSPARK_GATEWAY_PORT" not in os.environ and not java_available():
        raise SparkUnavailableError(JAVA_HELP)
    master = master or (None if submitted else "local[*]")
    b = SparkSession.builder.appName(app_name)
    if master:
        b = b.master(master)
        if master.startswith("local"):
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    settings = {**SQL_SETTINGS, "spark.sql.execution.arrow.pyspark.enabled": "true",
                "spark.executorEnv.PYTHONWARNINGS": f"ignore:{PANDAS3_WARNING}:FutureWarning",
                "spark.executorEnv.OPENBLAS_NUM_THREADS": "1", **(conf or {})}
    for k, v in settings.items():
        b = b.config(k, v)
    return b.getOrCreate()


@dataclass
class SparkTables:
    """The shop's tables as Spark DataFrames, typed; optional tables are None when absent."""

    orders: DataFrame
    customers: DataFrame
    products: DataFrame
    events: DataFrame | None
    offer_log: DataFrame | None
    attributes: dict[str, str] = field(default_factory=dict)
    """Kinds of the customer attributes (extra columns of customers, kept raw in ``customers``; typed in each
    bucket with these kinds), declared or inferred on the driver as :func:`features.io.load_shop` does."""
    vocabulary: dict[str, list[str]] = field(default_factory=dict)
    """The categorical attributes' values over the whole customers table."""

    def items(self) -> list[tuple[str, DataFrame]]:
        return [(n, t) for n in schema.TABLES if (t := getattr(self, n)) is not None]


def _exists(spark: SparkSession, uri: str) -> bool:
    jvm: Any = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return bool(path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).exists(path))


def write_text(uri: str, text: str) -> None:
    """Write a small text file to any Hadoop URI through the active session's file system."""
    spark = SparkSession.getActiveSession()
    assert spark is not None, "write_text needs an active Spark session"
    jvm: Any = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    stream = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).create(path, True)
    try:
        stream.write(bytearray(text.encode()))
    finally:
        stream.close()


def _cast(df: DataFrame, col: schema.Column) -> Column:
    c, t = F.col(col.name), df.schema[col.name].dataType.typeName()
    if col.kind == schema.ID:
        if t in ("double", "float"):
            c = c.cast("long")
        s = F.trim(c.cast("string"))
        return F.when(s == "", None).otherwise(s)
    if col.kind == schema.TIME:
        if t == "long":  # nanoseconds (pandas writes them; Spark reads them as longs, see spark_session)
            return F.timestamp_micros(F.floor(c / 1000))
        return F.to_timestamp(c) if t == "string" else c.cast("timestamp")
    if col.kind in (schema.FLOAT, schema.INT):
        return c.cast("double")
    if col.kind == schema.BOOL:
        if t == "boolean":
            return c
        s = F.lower(F.trim(c.cast("string")))
        return (F.when(s.isin("true", "1", "yes", "1.0"), True)
                .when(s.isin("false", "0", "no", "0.0"), False))
    return c.cast("string")


def _typed(df: DataFrame, spec: schema.TableSpec, report: ValidationReport, keep: tuple[str, ...] = ()
           ) -> DataFrame:
    """Contract columns cast to their kinds, and the columns ``keep`` as they are (other columns are dropped:
    no feature reads them); every check (duplicate ids included) counted in one pass and added to
    ``report``."""
    cols = [c for c in spec.columns if c.name in df.columns]
    typed = df.select(*[_cast(df, c).alias(c.name) for c in cols], *[F.col(k) for k in keep],
                      *[F.col(c.name).isNull().alias(f"_raw_null_{c.name}") for c in cols])
    checks: dict[tuple[str, str], Column] = {}
    for c in cols:
        v, raw_null = F.col(c.name), F.col(f"_raw_null_{c.name}")
        if c.kind in (schema.TIME, schema.FLOAT, schema.INT, schema.BOOL):
            what = {schema.TIME: "unparseable timestamp", schema.BOOL: "not a boolean (true/false/1/0)"}
            checks[(c.name, what.get(c.kind, "not a number"))] = v.isNull() & ~raw_null
        if not c.nullable:
            checks[(c.name, "empty value in a required column")] = raw_null
        if c.allowed is not None:
            checks[(c.name, f"value not in {list(c.allowed)}")] = v.isNotNull() & ~v.isin(*c.allowed)
        if c.min_value is not None:
            checks[(c.name, f"value below {c.min_value}")] = v < c.min_value
    key = list(spec.unique)
    aggs = [F.sum(F.when(cond, 1).otherwise(0)).alias(str(i)) for i, cond in enumerate(checks.values())]
    if key:  # duplicates counted in the same pass: rows with an id minus distinct ids
        complete = F.lit(True)
        for k in key:
            complete = complete & F.col(k).isNotNull()
        aggs += [F.count(F.when(complete, 1)).alias("ids"), F.count_distinct(*key).alias("distinct")]
    row = typed.agg(*aggs).first()
    assert row is not None
    for i, (col, msg) in enumerate(checks):
        if row[str(i)]:
            report.add(spec.name, col, int(row[str(i)]), msg)
    if key and row["ids"] != row["distinct"]:
        dup = typed.dropna(subset=key).groupBy(*key).count().filter("count > 1")
        rows = dup.agg(F.sum("count")).first()
        report.add(spec.name, ",".join(key), int(rows[0]) if rows else 0, "duplicate id",
                   [r[key[0]] for r in dup.limit(5).collect()])
    return typed.select(*[c.name for c in cols], *keep)


def _read(spark: SparkSession, data: str, name: str, report: ValidationReport) -> DataFrame | None:
    uri = f"{data.rstrip('/')}/{name}.parquet"
    if not _exists(spark, uri):
        if any(_exists(spark, f"{data.rstrip('/')}/{name}{ext}") for ext in (".csv", ".csv.gz")):
            report.add(name, None, 0, f"the Spark engine reads Parquet: write {name} as {uri} "
                                      "(personalise import writes Parquet)")
        return None
    raw = spark.read.parquet(uri)
    spec = schema.TABLES[name]
    missing = [c for c in spec.required if c not in raw.columns]
    if missing:
        report.add(name, ",".join(missing), 0, f"missing required column(s) {missing}; found {raw.columns}")
        return None
    # customers' attribute columns ride along as they are: typed in each bucket with the driver's kinds
    keep = tuple(c for c in raw.columns if c not in spec.names) if name == "customers" else ()
    return _typed(raw, spec, report, keep).withColumn(ROW, F.monotonically_increasing_id())


def _attributes(spark: SparkSession, data: str, customers: DataFrame | None, report: ValidationReport
                ) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Kinds and categorical vocabularies of the customer attributes, checked by the local engine's check
    (:func:`features.validation.type_attributes`; problems named with customer ids go into ``report``). The
    customers' attribute columns are collected to the driver: one row per customer, a few columns."""
    extra = [] if customers is None else [c for c in customers.columns
                                          if c not in schema.CUSTOMERS.names and c != ROW]
    uri = f"{data.rstrip('/')}/{schema.ATTRIBUTES_FILE}"
    declared_raw = None
    if _exists(spark, uri):
        import yaml
        text = "\n".join(r.value for r in spark.read.text(uri, wholetext=True).collect())
        declared_raw = yaml.safe_load(text) or {}
    if not extra and declared_raw is None:
        return {}, {}
    pdf = None if customers is None else customers.select(schema.CUSTOMER_ID, *extra).toPandas()
    typed, kinds = type_attributes(pdf, declared_raw, report)
    return kinds, ({} if typed is None else vocabularies(typed, kinds))


def _defaults(t: dict[str, DataFrame | None]) -> tuple[DataFrame, DataFrame, DataFrame]:
    """The defaults of :func:`features.io.load_shop`: optional columns filled, and products and customers
    derived from the orders when their tables are absent."""
    orders = t["orders"]
    assert orders is not None
    orders = orders.withColumn("discount", F.coalesce(F.col("discount"),
                                                      F.lit(0.0)) if "discount" in orders.columns
                               else F.lit(0.0))
    if "channel" not in orders.columns:
        orders = orders.withColumn("channel", F.lit(None).cast("string"))
    products = t["products"]
    if products is None:
        price = (
            orders.filter("quantity > 0")
            .groupBy(schema.PRODUCT_ID)
            .agg(F.median("unit_price").alias("price"))
        )
        products = (
            orders.select(schema.PRODUCT_ID)
            .dropna()
            .distinct()
            .join(price, schema.PRODUCT_ID, "left")
            .withColumn("in_stock", F.lit(True))
        )
    for c, kind, default in (("category", "string", None), ("in_stock", "boolean", True),
                             ("replenishable", "boolean", False), ("price", "double", None),
                             ("unit_cost", "double", None), ("brand", "string", None),
                             (schema.IS_PRODUCT, "boolean", True)):
        if c not in products.columns:
            products = products.withColumn(c, F.lit(default).cast(kind))
        elif default is not None:
            products = products.withColumn(c, F.coalesce(F.col(c), F.lit(default)))
    customers = t["customers"]
    if customers is None:
        customers = (
            orders.select(schema.CUSTOMER_ID).dropna().distinct().withColumn(ROW,
                                                                             F.monotonically_increasing_id())
        )
    for c, kind, default in (("region", "string", None), ("acquisition_channel", "string", None),
                             ("signup_at", "timestamp", None), (schema.OPTED_OUT, "boolean", False)):
        if c not in customers.columns:
            customers = customers.withColumn(c, F.lit(default).cast(kind))
    customers = customers.withColumn(schema.OPTED_OUT, F.coalesce(F.col(schema.OPTED_OUT), F.lit(False)))
    return orders, products.drop(ROW) if ROW in products.columns else products, customers


def read_tables(spark: SparkSession, data: str) -> SparkTables:
    """The shop at ``data`` (local path or Hadoop URI), typed and checked; raises
    :class:`DataValidationError` on the problems that stop a job."""
    for k, v in SQL_SETTINGS.items():
        spark.conf.set(k, v)
    report = ValidationReport()
    t = {name: _read(spark, data, name, report) for name in schema.TABLES}
    if t["orders"] is None and not report.errors:
        report.add("orders", None, 0, f"the orders table is required: {data.rstrip('/')}/orders.parquet")
    if t["orders"] is not None and t["products"] is not None:
        unknown = t["orders"].join(t["products"].select(schema.PRODUCT_ID), schema.PRODUCT_ID, "left_anti")
        n = unknown.count()
        if n:
            examples = [r.product_id for r in unknown.select(schema.PRODUCT_ID).distinct().limit(5).collect()]
            report.add("orders", schema.PRODUCT_ID, n, "order lines naming unknown products", examples)
    kinds, vocabulary = _attributes(spark, data, t["customers"], report)
    if not report.ok:
        raise DataValidationError(report)
    orders, products, customers = _defaults(t)
    return SparkTables(orders=orders, customers=customers, products=products, events=t["events"],
                       offer_log=t["offer_log"], attributes=kinds, vocabulary=vocabulary)
