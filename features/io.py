"""Loading a shop directory into typed tables, with validation against the contract.

A shop is a directory of tables (``orders`` required; ``customers``, ``products``, ``events`` and
``offer_log`` optional), each ``.parquet``, ``.csv.gz`` or ``.csv``, plus an optional ``offers.yaml``.

Example
-------
>>> shop = load_shop("var/demo/shop")          # doctest: +SKIP
>>> shop.orders.columns.tolist()[:3]           # doctest: +SKIP
['order_id', 'customer_id', 'product_id']
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from features import schema
from features.exceptions import DataValidationError
from features.validation import ValidationReport, validate_tables

log = logging.getLogger(__name__)


@dataclass
class Shop:
    """Typed tables of one shop. Optional tables are ``None`` when absent."""

    orders: pd.DataFrame
    customers: pd.DataFrame
    products: pd.DataFrame
    events: pd.DataFrame | None = None
    offer_log: pd.DataFrame | None = None
    offers: dict[str, Any] | None = None  # raw offers.yaml; validated by models.offers.catalogue
    report: ValidationReport = field(default_factory=ValidationReport)
    fingerprint: str = ""
    vocabulary: dict[str, list[str]] | None = None
    """The categorical attributes' values when ``customers`` is a part of the shop's (a bucket of the
    feature engines); None: computed from ``customers``."""

    @property
    def end(self) -> pd.Timestamp:
        """The last timestamp seen in orders or events."""
        end = self.orders["ts"].max()
        if self.events is not None and len(self.events):
            end = max(end, self.events["ts"].max())
        return pd.Timestamp(end)

    @property
    def attributes(self) -> dict[str, str]:
        """Kinds of the customer attributes (extra columns of customers), declared or inferred."""
        return {a["name"]: a["kind"] for a in self.report.attributes}

    def customer_orders(self) -> pd.DataFrame:
        """Order lines with a customer id (rows without one are excluded, and counted in the report)."""
        return self.orders[self.orders[schema.CUSTOMER_ID].notna()]


def find_table(directory: Path, name: str) -> Path | None:
    for ext in schema.TABLE_EXTENSIONS:
        p = directory / f"{name}{ext}"
        if p.exists():
            return p
    return None


def read_raw(path: Path) -> pd.DataFrame:
    if path.name.endswith(".parquet"):
        return pd.read_parquet(path)
    # read everything as text: the contract decides types, not pandas' guesses
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


def _products_from_orders(orders: pd.DataFrame) -> pd.DataFrame:
    g = orders[orders[schema.QUANTITY] > 0].groupby(schema.PRODUCT_ID, sort=True)["unit_price"].median()
    ids = pd.Index(orders[schema.PRODUCT_ID].dropna().unique(), name=schema.PRODUCT_ID)
    price = g.reindex(ids)
    return pd.DataFrame({schema.PRODUCT_ID: ids.astype(object), "category": None, "price": price.to_numpy(),
                         "in_stock": True})


def fingerprint_paths(paths: list[Path]) -> str:
    """sha256 over the bytes of the input files (names included), stable across machines."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def load_shop(directory: str | Path, strict: bool = True) -> Shop:
    """Load and validate a shop directory.

    Parameters
    ----------
    directory
        Folder holding ``orders.*`` and optional tables.
    strict
        Raise :class:`DataValidationError` when the report has errors (the default, used by jobs).

    Returns
    -------
    Shop
        Typed tables; ``products`` and ``customers`` are derived from orders when absent.
    """
    d = Path(directory)
    if not d.is_dir():
        report = ValidationReport()
        report.add("shop", None, 0, f"data directory {d} does not exist")
        raise DataValidationError(report)
    raw, offers, attributes, paths = _read_directory(d)
    typed, report = validate_tables(raw, offers, attributes)
    if strict and not report.ok:
        raise DataValidationError(report)
    for warning in report.warnings:
        log.warning("%s", warning)
    orders = _with_order_defaults(typed.get("orders", pd.DataFrame(columns=schema.ORDERS.names)))
    products = _with_product_defaults(typed.get("products"), orders)
    customers = _with_customer_defaults(typed.get("customers"), orders)
    return Shop(orders=orders.reset_index(drop=True), customers=customers.reset_index(drop=True),
                products=products.reset_index(drop=True), events=typed.get("events"),
                offer_log=typed.get("offer_log"), offers=offers, report=report,
                fingerprint=fingerprint_paths(paths))


def _read_directory(d: Path) -> tuple[dict[str, pd.DataFrame], Any, Any, list[Path]]:
    """The raw tables found in ``d``, its ``offers.yaml`` and ``customers.attributes.yaml`` (``None`` when
    absent) and the paths read, for the fingerprint."""
    raw: dict[str, pd.DataFrame] = {}
    paths: list[Path] = []
    for name in schema.TABLES:
        p = find_table(d, name)
        if p is not None:
            log.info("reading %s", p)
            raw[name] = read_raw(p)
            paths.append(p)
    offers = None
    op = d / schema.OFFERS_FILE
    if op.exists():
        paths.append(op)
        offers = yaml.safe_load(op.read_text()) or {}
    attributes = None
    ap = d / schema.ATTRIBUTES_FILE
    if ap.exists():
        paths.append(ap)
        attributes = yaml.safe_load(ap.read_text()) or {}
    return raw, offers, attributes, paths


def _with_order_defaults(orders: pd.DataFrame) -> pd.DataFrame:
    """Orders with the optional columns filled: no discount, no channel."""
    if "discount" not in orders.columns:
        orders["discount"] = 0.0
    orders["discount"] = orders["discount"].fillna(0.0)
    if "channel" not in orders.columns:
        orders["channel"] = None
    return orders


def _with_product_defaults(products: pd.DataFrame | None, orders: pd.DataFrame) -> pd.DataFrame:
    """Products (derived from the orders when the shop has no table) with the optional columns filled."""
    if products is None:
        products = _products_from_orders(orders)
    for c, default in (("category", None), ("in_stock", True), ("replenishable", False), ("price", np.nan),
                       ("unit_cost", np.nan), ("brand", None), (schema.IS_PRODUCT, True)):
        if c not in products.columns:
            products[c] = default
    products["in_stock"] = products["in_stock"].fillna(True).astype(bool)
    products["replenishable"] = products["replenishable"].fillna(False).astype(bool)
    products[schema.IS_PRODUCT] = products[schema.IS_PRODUCT].fillna(True).astype(bool)
    return products


def _with_customer_defaults(customers: pd.DataFrame | None, orders: pd.DataFrame) -> pd.DataFrame:
    """Customers (the ordering ids when the shop has no table) with the optional columns filled."""
    if customers is None:
        ids = pd.Index(orders[schema.CUSTOMER_ID].dropna().unique())
        customers = pd.DataFrame({schema.CUSTOMER_ID: ids.astype(object)})
    for c, default in (("region", None), ("acquisition_channel", None), ("signup_at", pd.NaT),
                       (schema.OPTED_OUT, False)):
        if c not in customers.columns:
            customers[c] = default
    customers[schema.OPTED_OUT] = customers[schema.OPTED_OUT].fillna(False).astype(bool)
    return customers


def write_table(df: pd.DataFrame, directory: Path, name: str, fmt: str = "parquet") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        p = directory / f"{name}.parquet"
        df.to_parquet(p, index=False)
    else:
        p = directory / f"{name}.{fmt}"
        df.to_csv(p, index=False)
    return p
