"""The data contract: malformed inputs give exact, named errors; tolerable problems are counted."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.exceptions import DataValidationError
from features.io import load_shop


def write(d: Path, **tables: pd.DataFrame | str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, t in tables.items():
        if isinstance(t, str):
            (d / f"{name}.csv").write_text(t)
        else:
            t.to_csv(d / f"{name}.csv", index=False)
    return d


ORDERS = """order_id,customer_id,product_id,ts,quantity,unit_price
o1,c1,p1,2024-01-01 10:00:00,1,9.5
o1,c1,p2,2024-01-01 10:00:00,2,3.0
o2,c2,p1,2024-01-05 12:00:00,-1,9.5
"""


def errors(d: Path) -> list[str]:
    with pytest.raises(DataValidationError) as e:
        load_shop(d)
    return [str(p) for p in e.value.report.errors]


def test_valid_minimal_shop_loads_with_derived_tables(tmp_path: Path) -> None:
    shop = load_shop(write(tmp_path, orders=ORDERS))
    assert shop.report.ok
    assert sorted(shop.products["product_id"]) == ["p1", "p2"]
    assert sorted(shop.customers["customer_id"]) == ["c1", "c2"]
    assert shop.orders["ts"].dtype.kind == "M"
    assert (shop.orders["quantity"] < 0).sum() == 1  # a return


def test_missing_required_column_is_named(tmp_path: Path) -> None:
    errs = errors(write(tmp_path, orders=ORDERS.replace("unit_price", "price")))
    assert len(errs) == 1
    assert "orders.unit_price: missing required column(s) ['unit_price']" in errs[0]


def test_bad_timestamp_counts_rows_and_shows_examples(tmp_path: Path) -> None:
    bad = ORDERS.replace("2024-01-05 12:00:00", "yesterday").replace("2024-01-01 10:00:00", "2024-13-45", 1)
    errs = errors(write(tmp_path, orders=bad))
    assert errs == ["[error] orders.ts: unparseable timestamp (2 rows) e.g. ['2024-13-45', 'yesterday']"]


def test_wrong_types_are_rejected(tmp_path: Path) -> None:
    errs = errors(write(tmp_path, orders=ORDERS.replace(",2,3.0", ",two,3.0")))
    assert errs == ["[error] orders.quantity: not a number (1 rows) e.g. ['two']"]


def test_unknown_product_in_orders(tmp_path: Path) -> None:
    products = "product_id,category\np1,toys\n"
    errs = errors(write(tmp_path, orders=ORDERS, products=products))
    assert errs == ["[error] orders.product_id: order lines naming unknown products (1 rows) e.g. ['p2']"]


def test_empty_orders_table(tmp_path: Path) -> None:
    errs = errors(write(tmp_path, orders="order_id,customer_id,product_id,ts,quantity,unit_price\n"))
    assert errs == ["[error] orders: table is empty (0 rows)"]


def test_missing_orders_table(tmp_path: Path) -> None:
    errs = errors(write(tmp_path, products="product_id\np1\n"))
    assert "orders table is required" in errs[0]


def test_duplicate_ids(tmp_path: Path) -> None:
    errs = errors(write(tmp_path, orders=ORDERS, products="product_id\np1\np2\np1\n"))
    assert errs == ["[error] products.product_id: duplicate id (2 rows) e.g. ['p1']"]


def test_negative_price_and_bad_event_type(tmp_path: Path) -> None:
    events = "customer_id,product_id,event_type,ts\nc1,p1,view,2024-01-01\nc1,p1,purchase,2024-01-01\n"
    errs = errors(write(tmp_path, orders=ORDERS.replace(",9.5\no1", ",-9.5\no1"), events=events))
    assert "[error] orders.unit_price: value below 0.0 (1 rows) e.g. [-9.5]" in errs
    assert ("[error] events.event_type: value not in ['view', 'add_to_cart', 'remove_from_cart', 'wishlist'] "
            "(1 rows) e.g. ['purchase']") in errs


def test_rows_without_customer_are_counted_not_dropped(tmp_path: Path) -> None:
    shop = load_shop(write(tmp_path, orders=ORDERS + "o3,,p2,2024-01-06,1,3.0\n"))
    warn = [p for p in shop.report.warnings if p.column == "customer_id"]
    assert len(warn) == 1 and warn[0].rows == 1
    assert len(shop.orders) == 4  # kept as a sale
    assert len(shop.customer_orders()) == 3  # excluded from per-customer models


def test_offer_log_must_name_catalogue_offers(tmp_path: Path) -> None:
    d = write(tmp_path, orders=ORDERS,
              offer_log="customer_id,offer_id,sent_at,channel,group\nc1,ghost,2024-01-01,email,treatment\n")
    (d / "offers.yaml").write_text("offers:\n  - {id: real, kind: percent_off, value: 10, channels: [email], "
                                   "cost_per_send: {email: 0.01}}\n")
    assert errors(d) == [
        "[error] offer_log.offer_id: offers missing from offers.yaml (1 rows) e.g. ['ghost']"
    ]


def test_cli_validate_exit_codes(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from personalise_cli import app
    good = write(tmp_path / "good", orders=ORDERS)
    bad = write(tmp_path / "bad", orders=ORDERS.replace("unit_price", "price"))
    r = CliRunner().invoke(app, ["validate", "--data", str(good)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["validate", "--data", str(bad)])
    assert r.exit_code == 2
    assert "missing required column" in r.output
