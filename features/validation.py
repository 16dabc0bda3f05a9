"""Validation of raw shop tables against the contract: each column cast to its kind, every problem recorded.

:func:`validate_tables` returns the typed tables and a :class:`ValidationReport` (errors stop every job,
warnings are counted and reported); :func:`features.io.load_shop` reads a shop directory and calls it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features import schema
from features.attributes import parse_declaration, parse_timestamps, validate_attributes

MAX_EXAMPLES = 5


@dataclass
class Problem:
    """One problem found in the data."""

    table: str
    column: str | None
    rows: int
    message: str
    examples: list[Any] = field(default_factory=list)
    severity: str = "error"  # "error" stops every job; "warning" is counted and reported

    def __str__(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        ex = f" e.g. {self.examples[:MAX_EXAMPLES]}" if self.examples else ""
        return f"[{self.severity}] {where}: {self.message} ({self.rows} rows){ex}"


@dataclass
class ValidationReport:
    """Every problem found, plus row counts per table."""

    problems: list[Problem] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    attributes: list[dict[str, Any]] = field(default_factory=list)
    """Customer attributes found: name, kind, declared or inferred, a summary (features.attributes)."""

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, *args: Any, **kwargs: Any) -> None:
        self.problems.append(Problem(*args, **kwargs))

    def __str__(self) -> str:
        head = f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)"
        attrs = [f"customer attribute {a['name']}: {a['kind']} ({a['source']}), {a['non_null']} values, "
                 f"{a['summary']}"
                 for a in self.attributes]
        return "\n".join([head, *[str(p) for p in self.problems], *attrs])

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "problems": [
                {"severity": p.severity, "table": p.table, "column": p.column, "rows": p.rows,
                 "message": p.message, "examples": [str(e) for e in p.examples[:MAX_EXAMPLES]]}
                for p in self.problems
            ],
            "attributes": self.attributes,
        }


def _examples(values: pd.Series) -> list[Any]:
    return values.head(MAX_EXAMPLES).tolist()


def _text(s: pd.Series, index: pd.Index, empty_is_null: bool = False,
          allowed: tuple[str, ...] | None = None) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Text as an object column of Python strings (None when missing) holding one string object per distinct
    value: a million rows naming a thousand customers keep a thousand strings, not a million. Also returns
    which rows are missing and which hold a value outside ``allowed`` (checked once per distinct value)."""
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    values = np.concatenate([np.asarray(uniques, dtype=object), np.array([None], dtype=object)])
    if empty_is_null:
        values[values == ""] = None
    missing = np.array([v is None for v in values.tolist()])
    outside = ~missing & ~np.isin(values,
                                  list(allowed)) if allowed is not None else np.zeros(len(values), bool)
    return pd.Series(values[codes], index=index, dtype=object), missing[codes], outside[codes]


def _coerce_table(df: pd.DataFrame, spec: schema.TableSpec, report: ValidationReport) -> pd.DataFrame:
    """Check columns and cast each to its kind, recording problems. Returns the typed table."""
    missing = [c for c in spec.required if c not in df.columns]
    if missing:
        report.add(spec.name, ",".join(missing), len(df), f"missing required column(s) {missing}; "
                   f"found {list(df.columns)}")
        return df
    out: dict[str, pd.Series] = {}
    for col in spec.columns:
        if col.name not in df.columns:
            continue
        s = df[col.name]
        typed, typed_null, outside = _cast(s, col, spec.name, report)
        _check_values(s, typed, typed_null, outside, col, spec.name, report)
        out[col.name] = typed
    extra = [c for c in df.columns if c not in spec.names]
    for c in extra:  # keep unknown columns untouched; they are the shop's business
        out[c] = df[c]
    return pd.DataFrame(out, index=df.index)


def _cast(s: pd.Series, col: schema.Column, table: str,
          report: ValidationReport) -> tuple[pd.Series, Any, Any]:
    """The column cast to its kind, with which rows are missing and which hold a value outside the allowed
    ones when the cast knows them (``None`` otherwise: computed from the typed column). Values that are not
    booleans are recorded here; the other problems by :func:`_check_values`."""
    if col.kind == schema.ID:
        if pd.api.types.is_float_dtype(s):  # 17850.0 -> "17850"
            s = s.astype("Int64")
        return _text(s.astype("string").str.strip(), s.index, True, col.allowed)
    if col.kind == schema.TIME:
        return parse_timestamps(s), None, None
    if col.kind in (schema.FLOAT, schema.INT):
        return pd.to_numeric(s, errors="coerce").astype(float), None, None
    if col.kind == schema.BOOL:
        return _boolean(s, col, table, report), None, None
    return _text(s.astype("string"), s.index, False, col.allowed)


def _boolean(s: pd.Series, col: schema.Column, table: str, report: ValidationReport) -> pd.Series:
    """A boolean column from booleans or text (true/false, 1/0, yes/no), recording what is neither."""
    if pd.api.types.is_bool_dtype(s):
        return s
    m = s.astype("string").str.strip().str.lower()
    mapping = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False,
               "1.0": True, "0.0": False}
    typed = m.map(mapping)
    bad = typed.isna() & m.notna()
    if bad.any():
        report.add(table, col.name, int(bad.sum()), "not a boolean (true/false/1/0)", _examples(s[bad]))
    return typed.astype("boolean")


def _check_values(s: pd.Series, typed: pd.Series, typed_null: Any, outside: Any, col: schema.Column,
                  table: str, report: ValidationReport) -> None:
    """Record the typed column's problems: unparseable values, empty required values, values outside the
    allowed ones or below the minimum (``s`` is the raw column)."""
    raw_null = s.isna()
    if col.kind in (schema.TIME, schema.FLOAT, schema.INT):
        bad = typed.isna() & ~raw_null
        if bad.any():
            what = "unparseable timestamp" if col.kind == schema.TIME else "not a number"
            report.add(table, col.name, int(bad.sum()), what, _examples(s[bad]))
    if not col.nullable:
        nulls = (typed.isna() if typed_null is None else typed_null) & raw_null
        if nulls.any():
            report.add(table, col.name, int(nulls.sum()), "empty value in a required column",
                       _examples(s.index[nulls].to_series()))
    if col.allowed is not None:
        bad = (typed.notna() & ~typed.isin(col.allowed) if outside is None
               else pd.Series(outside, index=s.index))
        if bad.any():
            report.add(table, col.name, int(bad.sum()), f"value not in {list(col.allowed)}",
                       _examples(typed[bad]))
    if col.min_value is not None and col.kind in (schema.FLOAT, schema.INT):
        bad = typed < col.min_value
        if bad.any():
            report.add(table, col.name, int(bad.sum()), f"value below {col.min_value}", _examples(typed[bad]))


def _check_unique(df: pd.DataFrame, spec: schema.TableSpec, report: ValidationReport) -> None:
    if not spec.unique or any(c not in df.columns for c in spec.unique):
        return
    dup = df.duplicated(list(spec.unique), keep=False) & df[list(spec.unique)].notna().all(axis=1)
    if dup.any():
        report.add(spec.name, ",".join(spec.unique), int(dup.sum()), "duplicate id",
                   _examples(df.loc[dup, spec.unique[0]].drop_duplicates()))


def validate_tables(raw: dict[str, pd.DataFrame], offers: dict[str, Any] | None = None,
                    attributes: Any = None) -> tuple[dict[str, pd.DataFrame], ValidationReport]:
    """Validate raw tables against the contract and return typed tables plus the report.

    Errors: missing required columns, unparseable values, empty required values, values outside the
    allowed set, negative prices, duplicate ids, empty orders, order lines naming unknown products,
    offer_log rows naming offers missing from the catalogue.
    Warnings (counted, never silently dropped): order lines without a customer id, exact duplicate
    order lines, zero quantities, events naming unknown products or customers.
    Customer attributes (extra columns of customers) are typed by :mod:`features.attributes`: ``attributes``
    is the parsed ``customers.attributes.yaml`` (``None``: no file, kinds inferred).
    """
    report = ValidationReport()
    typed: dict[str, pd.DataFrame] = {}
    if "orders" not in raw:
        report.add("orders", None, 0,
                   "the orders table is required (orders.parquet, orders.csv.gz or orders.csv)")
        return typed, report
    for name, df in raw.items():
        spec = schema.TABLES[name]
        report.rows[name] = len(df)
        if len(df) == 0 and spec.required_table:
            report.add(name, None, 0, "table is empty")
            continue
        t = _coerce_table(df, spec, report)
        _check_unique(t, spec, report)
        typed[name] = t
    _validate_attributes(typed, attributes, report)
    _check_orders(typed, report)
    _check_events(typed, report)
    _check_offer_log(typed, offers, report)
    return typed, report


def _check_orders(typed: dict[str, pd.DataFrame], report: ValidationReport) -> None:
    """Order lines without a customer, duplicated, of zero quantity, or naming unknown products."""
    orders = typed.get("orders")
    if orders is not None and all(c in orders.columns for c in schema.ORDERS.required):
        no_cust = orders[schema.CUSTOMER_ID].isna()
        if no_cust.any():
            report.add("orders", schema.CUSTOMER_ID, int(no_cust.sum()),
                       "order lines without a customer id: kept as sales, excluded from per-customer models",
                       _examples(orders.loc[no_cust, schema.ORDER_ID]), severity="warning")
        dups = orders.duplicated(keep="first")
        if dups.any():
            report.add("orders", None, int(dups.sum()), "exact duplicate order lines (kept as in the source)",
                       _examples(orders.loc[dups, schema.ORDER_ID]), severity="warning")
        zero = orders[schema.QUANTITY] == 0
        if zero.any():
            report.add("orders", schema.QUANTITY, int(zero.sum()), "zero quantity",
                       _examples(orders.loc[zero, schema.ORDER_ID]), severity="warning")
        products = typed.get("products")
        if products is not None and schema.PRODUCT_ID in products.columns:
            unknown = (
                ~orders[schema.PRODUCT_ID].isin(products[schema.PRODUCT_ID])
                & orders[schema.PRODUCT_ID].notna()
            )
            if unknown.any():
                report.add("orders", schema.PRODUCT_ID, int(unknown.sum()),
                           "order lines naming unknown products",
                           _examples(orders.loc[unknown, schema.PRODUCT_ID].drop_duplicates()))


def _check_events(typed: dict[str, pd.DataFrame], report: ValidationReport) -> None:
    events = typed.get("events")
    if events is not None and schema.PRODUCT_ID in events.columns and "products" in typed:
        unknown = ~events[schema.PRODUCT_ID].isin(typed["products"][schema.PRODUCT_ID])
        if unknown.any():
            report.add("events", schema.PRODUCT_ID, int(unknown.sum()),
                       "events naming unknown products (ignored)",
                       _examples(events.loc[unknown, schema.PRODUCT_ID].drop_duplicates()),
                       severity="warning")


def _check_offer_log(typed: dict[str, pd.DataFrame], offers: dict[str, Any] | None,
                     report: ValidationReport) -> None:
    olog = typed.get("offer_log")
    if olog is not None and offers is not None and schema.OFFER_ID in olog.columns:
        known = {str(o.get("id")) for o in offers.get("offers", []) if isinstance(o, dict)}
        unknown = ~olog[schema.OFFER_ID].isin(known)
        if unknown.any():
            report.add("offer_log", schema.OFFER_ID, int(unknown.sum()), "offers missing from offers.yaml",
                       _examples(olog.loc[unknown, schema.OFFER_ID].drop_duplicates()))


def _validate_attributes(typed: dict[str, pd.DataFrame], attributes: Any, report: ValidationReport) -> None:
    customers, _ = type_attributes(typed.get("customers"), attributes, report)
    if customers is not None:
        typed["customers"] = customers


def type_attributes(customers: pd.DataFrame | None, attributes: Any, report: ValidationReport
                    ) -> tuple[pd.DataFrame | None, dict[str, str]]:
    """The customers with their attribute columns typed, and the attributes' kinds; ``attributes`` is the
    parsed ``customers.attributes.yaml`` (None: no file, kinds inferred). Every problem goes into ``report``.
    The one check of both feature engines (the Spark engine passes the customers' attribute columns)."""
    declared = None if attributes is None else parse_declaration(attributes, report)
    if customers is None:
        if declared:
            report.add(schema.ATTRIBUTES_FILE, None, 0,
                       "declares customer attributes but there is no customers table")
        return None, {}
    if schema.CUSTOMER_ID not in customers.columns:
        return customers, {}
    return validate_attributes(customers, declared, report)

