"""Request input the schema cannot check: event times, the cart in a session, decision ids."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from serving.events import EventWindow, event_rows
from serving.offer_desk import DecisionRef
from serving.session import cart_reasons, in_cart

NOW = dt.datetime(2026, 6, 1, 12, 0, 0)


def ev(ts: str | None) -> dict:
    return {"customer_id": "C1", "product_id": "P1", "event_type": "view", "ts": ts}


@pytest.mark.parametrize("ts", ["2999-01-01", "9999-12-31", "0001-01-01", "NaT", "not a time",
                                "2200-01-01T00:00:00", "2026-06-01T12:06:00", "2026-04-01T00:00:00Z"])
def test_event_times_outside_the_window_are_400_naming_the_field(ts: str) -> None:
    with pytest.raises(ValidationError) as err:
        event_rows([ev(None), ev(ts)], EventWindow(), NOW)
    (problem,) = err.value.errors()
    assert problem["loc"] == ("events", 1, "ts") and repr(ts)[:20].strip("'") in problem["msg"]


@pytest.mark.parametrize("ts, stored", [
    (None, None),
    ("2026-06-01T12:04:00", dt.datetime(2026, 6, 1, 12, 4)),  # within 5 minutes ahead
    ("2026-05-05", dt.datetime(2026, 5, 5)),
    ("2026-06-01T14:00:00+02:00", dt.datetime(2026, 6, 1, 12, 0)),  # offsets become naive UTC
])
def test_event_times_within_the_window_are_stored_as_naive_utc(ts: str | None,
                                                               stored: dt.datetime | None) -> None:
    assert event_rows([ev(ts)], EventWindow(), NOW)[0]["ts"] == stored


def test_the_window_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSONALISE_EVENT_MAX_AGE_DAYS", "400")
    monkeypatch.setenv("PERSONALISE_EVENT_MAX_AHEAD_SECONDS", "0")
    w = EventWindow.from_env()
    assert event_rows([ev("2025-06-01")], w, NOW)[0]["ts"] == dt.datetime(2025, 6, 1)
    with pytest.raises(ValidationError):
        event_rows([ev("2026-06-01T12:00:01")], w, NOW)


def test_the_cart_follows_adds_removals_and_purchases() -> None:
    s = [("A", "add_to_cart"), ("B", "add_to_cart"), ("C", "view"), ("A", "remove_from_cart"),
         ("D", "add_to_cart"), ("D", "purchase"), ("E", "wishlist"), ("B", "add_to_cart")]
    assert in_cart(s) == ["B"]
    assert in_cart([("A", "remove_from_cart")]) == []


def test_reasons_name_the_cart_for_products_in_it() -> None:
    items = [{"product_id": "X", "reason": "because you viewed Red mug"},
             {"product_id": "Y", "reason": "because you viewed Blue cup"},
             {"product_id": "Z", "reason": "buy it again"}]
    names = {"A": "Red mug", "B": "Blue cup"}.__getitem__
    out = cart_reasons(items, ["A"], names)
    assert [i["reason"] for i in out] == ["because you added Red mug to your cart",
                                          "because you viewed Blue cup", "buy it again"]


def test_decision_ids_carry_the_decision_and_reject_anything_else() -> None:
    ref = DecisionRef("0" * 32, "C1", "spring", None, "pct10", "email", "treatment")
    assert DecisionRef.decode(ref.encode()) == ref
    for bad in ("", "nope", "0" * 32, "0" * 32 + ".!!", "0" * 32 + ".WzFd",
                ref.encode().replace("0", "g", 1)):
        with pytest.raises(ValueError):
            DecisionRef.decode(bad)
