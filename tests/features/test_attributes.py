"""Customer attributes: declared or inferred kinds, validation naming table, column and rows, feature
columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.attributes import attribute_features, infer_kind, vocabularies
from features.exceptions import DataValidationError
from features.io import load_shop
from tests.features.test_contract import ORDERS, write

CUSTOMERS = """customer_id,region,tier,age,newsletter,joined
c1,north,gold,31,yes,2023-06-01
c2,south,silver,47,no,2023-12-20
c3,north,,,,
"""


def errors(d: Path) -> list[str]:
    with pytest.raises(DataValidationError) as e:
        load_shop(d)
    return [str(p) for p in e.value.report.errors]


def test_kinds_are_inferred_and_summarised_without_a_declaration(tmp_path: Path) -> None:
    shop = load_shop(write(tmp_path, orders=ORDERS, customers=CUSTOMERS))
    assert shop.attributes == {"tier": "categorical", "age": "numeric",
                               "newsletter": "boolean", "joined": "date"}
    text = str(shop.report)
    assert "customer attribute age: numeric (inferred), 2 values, 31 .. 47" in text
    assert "customer attribute newsletter: boolean (inferred), 2 values, 50.0% true" in text
    c = shop.customers.set_index("customer_id")
    assert c.loc["c2", "age"] == 47.0 and c.loc["c1", "newsletter"] == True  # noqa: E712 (pandas boolean)
    assert c.loc["c1", "joined"] == pd.Timestamp("2023-06-01")
    assert c.loc["c1", "region"] == "north"  # contract columns are not attributes


def test_declared_kinds_are_enforced_with_table_column_and_customer_named(tmp_path: Path) -> None:
    d = write(tmp_path, orders=ORDERS, customers=CUSTOMERS.replace("c2,south,silver,47,no",
                                                                   "c2,south,silver,old,maybe"))
    (d / "customers.attributes.yaml").write_text("tier: categorical\nage: numeric\nnewsletter: "
                                                 "boolean\njoined: date\n")
    assert errors(d) == ["[error] customers.age: not a numeric value (declared kind) (1 rows) e.g. [\"c2: "
                         "'old'\"]",
                         "[error] customers.newsletter: not a boolean value (declared kind) (1 rows) e.g. "
                         "[\"c2: 'maybe'\"]"]


def test_a_declared_date_out_of_range_is_a_named_error_not_a_crash(tmp_path: Path) -> None:
    d = write(tmp_path, orders=ORDERS, customers=CUSTOMERS.replace("2023-12-20", "1-2"))
    (d / "customers.attributes.yaml").write_text("joined: date\n")
    assert errors(d) == ["[error] customers.joined: not a date value (declared kind) (1 rows) e.g. [\"c2: "
                         "'1-2'\"]"]


def test_a_timestamp_out_of_range_in_orders_is_a_named_error(tmp_path: Path) -> None:
    # the contract's time columns share the attributes' parser: year 1 is unparseable, not a crash
    assert errors(write(tmp_path, orders=ORDERS.replace("2024-01-05 12:00:00", "0001-01-05"))) == [
        "[error] orders.ts: unparseable timestamp (1 rows) e.g. ['0001-01-05']"]


def test_declaration_problems_are_named(tmp_path: Path) -> None:
    d = write(tmp_path, orders=ORDERS, customers=CUSTOMERS)
    (d / "customers.attributes.yaml").write_text("tier: text\nregion: categorical\nshoe_size: numeric\nage: "
                                                 "numeric\n")
    errs = errors(d)
    assert "[error] customers.attributes.yaml.tier: kind 'text' is not one of " \
           "['numeric', 'categorical', 'boolean', 'date'] (0 rows)" in errs
    assert any(e.startswith("[error] customers.attributes.yaml.region: 'region' is a contract column")
               for e in errs)
    assert any(e.startswith("[error] customers.shoe_size: declared in customers.attributes.yaml but not a "
                            "column")
               for e in errs)
    assert len(errs) == 3


def test_undeclared_columns_are_kept_with_a_warning(tmp_path: Path) -> None:
    d = write(tmp_path, orders=ORDERS, customers=CUSTOMERS)
    (d / "customers.attributes.yaml").write_text("age: numeric\n")
    shop = load_shop(d)
    assert shop.attributes == {"age": "numeric"}
    warned = {p.column for p in shop.report.warnings}
    assert {"tier", "newsletter", "joined"} <= warned
    assert shop.customers["tier"].tolist()[:2] == ["gold", "silver"]  # untouched


def test_infer_kind_on_typed_and_text_columns() -> None:
    assert infer_kind(pd.Series([0, 1, 1])) == "boolean"
    assert infer_kind(pd.Series([0, 2, 1])) == "numeric"
    assert infer_kind(pd.Series(["1", "0", None])) == "boolean"
    assert infer_kind(pd.Series(["1.5", "2"])) == "numeric"
    assert infer_kind(pd.Series(["2024-01-01", "2024-02-03 10:00"])) == "date"
    assert infer_kind(pd.Series(["1) $0 - $100", "Urban"])) == "categorical"
    # ranges a date parser would accept
    assert infer_kind(pd.Series(["1-2", "19-24", "3-5"])) == "categorical"
    assert infer_kind(pd.Series(["Mar 2024", "01/02/2024"])) == "date"
    assert infer_kind(pd.Series([None, None], dtype=object)) == "categorical"


def test_feature_columns_have_model_ready_types_and_a_stable_vocabulary() -> None:
    c = pd.DataFrame({"customer_id": ["a", "b", "c"], "tier": ["silver", "gold", None],
                      "vip": pd.array([True, False, None], dtype="boolean"), "age": [30.0, np.nan, 50.0],
                      "joined": pd.to_datetime(["2024-01-01", "2024-03-01", None])})
    kinds = {"tier": "categorical", "vip": "boolean", "age": "numeric", "joined": "date"}
    F = attribute_features(c, kinds, cutoff=pd.Timestamp("2024-01-31"))
    assert F.index.tolist() == ["a", "b", "c"] and F.index.name == "customer_id"
    assert list(F.columns) == ["attr_tier", "attr_vip", "attr_age", "attr_joined"]
    assert list(F["attr_tier"].cat.categories) == ["gold", "silver"]
    np.testing.assert_array_equal(F["attr_vip"].to_numpy(), [1.0, 0.0, np.nan])
    # after the cutoff: unknown
    np.testing.assert_array_equal(F["attr_joined"].to_numpy(), [30.0, np.nan, np.nan])
    # a subset keeps the codes of the whole table when given its vocabulary; unknown values become NaN
    sub = attribute_features(c.iloc[[1]].assign(tier=["platinum"]), kinds, pd.Timestamp("2024-06-01"),
                             vocabulary=vocabularies(c, kinds))
    assert list(sub["attr_tier"].cat.categories) == ["gold", "silver"] and sub["attr_tier"].isna().all()
    with pytest.raises(ValueError, match="'joined' is a date: pass the cutoff"):
        attribute_features(c, kinds)
