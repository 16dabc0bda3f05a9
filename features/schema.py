"""The data contract: every table, its columns, their kinds, and which are required.

This is the one place that names columns. Builders and loaders import the constants from here.
"""

from __future__ import annotations

from dataclasses import dataclass

# column kinds
ID = "id"  # string identifier
TIME = "time"  # timestamp (naive, UTC if the source had an offset)
FLOAT = "float"
INT = "int"
BOOL = "bool"
TEXT = "text"  # free or categorical text

# column names: code refers to a column through these, never through its literal name
CUSTOMER_ID = "customer_id"
PRODUCT_ID = "product_id"
ORDER_ID = "order_id"
OFFER_ID = "offer_id"
TS = "ts"
EVENT_TYPE = "event_type"
SESSION_ID = "session_id"
CHANNEL = "channel"
SENT_AT = "sent_at"
GROUP = "group"
REDEEMED_AT = "redeemed_at"
PROPENSITY = "propensity"
CAMPAIGN_ID = "campaign_id"
OPTED_OUT = "opted_out"
QUANTITY = "quantity"
SCORE = "score"
RANK = "rank"
SIMILAR_PRODUCT_ID = "similar_product_id"
IS_PRODUCT = "is_product"
"""products: False for a line that is no product (postage, a fee, a voucher): never recommended.
Default True."""
RECOMMENDATION_COLUMNS = (CUSTOMER_ID, PRODUCT_ID, SCORE, RANK)
"""What every recommender's ``recommend`` returns, in this order."""
SIMILAR_ITEMS_COLUMNS = (PRODUCT_ID, SIMILAR_PRODUCT_ID, SCORE, RANK)
"""What ``similar_items`` returns, in this order."""

EVENT_TYPES = ("view", "add_to_cart", "remove_from_cart", "wishlist")
OFFER_GROUPS = ("treatment", "control")
TABLE_EXTENSIONS = (".parquet", ".csv.gz", ".csv")


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    required: bool = False
    nullable: bool = True
    allowed: tuple[str, ...] | None = None
    min_value: float | None = None


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[Column, ...]
    unique: tuple[str, ...] = ()  # columns whose combination must be unique
    required_table: bool = False

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


CUSTOMERS = TableSpec(
    "customers",
    (
        Column("customer_id", ID, required=True, nullable=False),
        Column("signup_at", TIME),
        Column("region", TEXT),
        Column("acquisition_channel", TEXT),
        Column("opted_out", BOOL),
    ),
    unique=("customer_id",),
)

PRODUCTS = TableSpec(
    "products",
    (
        Column("product_id", ID, required=True, nullable=False),
        Column("category", TEXT),
        Column("brand", TEXT),
        Column("price", FLOAT, min_value=0.0),
        Column("unit_cost", FLOAT, min_value=0.0),
        Column("in_stock", BOOL),
        Column("replenishable", BOOL),
        Column(IS_PRODUCT, BOOL),
    ),
    unique=("product_id",),
)

ORDERS = TableSpec(
    "orders",
    (
        Column("order_id", ID, required=True, nullable=False),
        Column("customer_id", ID, required=True),  # missing ids are tolerated, counted, excluded
        Column("product_id", ID, required=True, nullable=False),
        Column("ts", TIME, required=True, nullable=False),
        Column("quantity", FLOAT, required=True, nullable=False),
        Column("unit_price", FLOAT, required=True, nullable=False, min_value=0.0),
        Column("discount", FLOAT, min_value=0.0),
        Column("channel", TEXT),
    ),
    required_table=True,
)

EVENTS = TableSpec(
    "events",
    (
        Column("customer_id", ID, required=True),
        Column("product_id", ID, required=True, nullable=False),
        Column("event_type", TEXT, required=True, nullable=False, allowed=EVENT_TYPES),
        Column("ts", TIME, required=True, nullable=False),
        Column("session_id", ID),
        Column("channel", TEXT),
    ),
)

OFFER_LOG = TableSpec(
    "offer_log",
    (
        Column("customer_id", ID, required=True, nullable=False),
        Column("offer_id", ID, required=True, nullable=False),
        Column("sent_at", TIME, required=True, nullable=False),
        Column("channel", TEXT, required=True, nullable=False),
        Column("group", TEXT, required=True, nullable=False, allowed=OFFER_GROUPS),
        Column("redeemed_at", TIME),
        Column("order_id", ID),
        Column("propensity", FLOAT, min_value=0.0),
        Column("campaign_id", ID),
    ),
)

TABLES: dict[str, TableSpec] = {t.name: t for t in (CUSTOMERS, PRODUCTS, ORDERS, EVENTS, OFFER_LOG)}
OFFERS_FILE = "offers.yaml"

# customer feature columns (built by features.customer) that offer rules and reasons read
N_ORDERS = "n_orders"
NET_REVENUE = "net_revenue"
RECENCY_DAYS = "recency_days"
REGION = "region"
AVG_ORDER_VALUE = "avg_order_value"
RETURN_RATE = "return_rate"
DISCOUNT_SHARE = "discount_share"
ORDERS_90 = "orders_90"

# --- customer attributes: extra columns of the customers table (features/attributes.py) ---
ATTRIBUTES_FILE = "customers.attributes.yaml"
"""Beside the tables: ``name: kind`` per extra column of ``customers``; without it the kinds are inferred."""
NUMERIC, CATEGORICAL, BOOLEAN, DATE = "numeric", "categorical", "boolean", "date"
ATTRIBUTE_KINDS = (NUMERIC, CATEGORICAL, BOOLEAN, DATE)
ATTRIBUTE_PREFIX = "attr_"
"""Feature columns made from attributes are named ``attr_<name>``: they never collide with derived
features."""
