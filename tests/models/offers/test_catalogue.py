"""Catalogue validation names the offer and the reason; what is left of capped offers."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from features.exceptions import CatalogueError
from models.offers import parse_catalogue
from tests.models.offers.data import GOOD


def bad(**change):
    o = {**GOOD["offers"][0], **change}
    return {"offers": [o]}


@pytest.mark.parametrize("raw, message", [
    (bad(kind="magic"), "offer pct10: kind 'magic' is not one of"),
    (bad(channels=[]), "offer pct10: no channels"),
    (bad(cost_per_send={"email": 0.01}), "offer pct10: no cost_per_send for channel(s) ['sms']"),
    (bad(value=150), "offer pct10: value 150.0 out of range for kind percent_off"),
    (bad(eligibility={"min_ordrs": 1}), "offer pct10: unknown eligibility rule(s) ['min_ordrs']"),
    (bad(eligibility={"churn_risk": [0.8, 0.2]}), "offer pct10: churn_risk must be [low, high]"),
    (bad(valid_from="2025-02-01", valid_to="2025-01-01"), "offer pct10: valid_to is before valid_from"),
    ({"offers": [GOOD["offers"][0], GOOD["offers"][0]]}, "offer pct10: duplicate id"),
    ({}, "expected a top-level 'offers:' list"),
    (bad(budget=-5), "offer pct10: budget must be a number >= 0, got -5"),
    (bad(max_volume=2.5), "offer pct10: max_volume must be a whole number >= 0, got 2.5"),
    (bad(budget="lots"), "offer pct10: budget must be a number >= 0, got 'lots'"),
    ({"offers": ["pct10"]}, "offer #0: each offer must be a mapping"),
    ({"offers": [{"kind": "coupon"}]}, "offer #0: missing 'id'"),
    ({**GOOD, "defaults": {"control_share": 1.0}}, "defaults.control_share 1.0 must be in [0, 1)"),
])
def test_bad_catalogue_names_offer_and_reason(raw, message) -> None:
    with pytest.raises(CatalogueError) as e:
        parse_catalogue(raw)
    assert message in str(e.value)


def test_a_good_catalogue_keeps_its_values() -> None:
    cat = parse_catalogue({**GOOD, "defaults": {"control_share": 0.2, "margin_rate": 0.3}})
    o = cat.get("pct10")
    assert (o.kind, o.value, o.channels) == ("percent_off", 10.0, ("email", "sms"))
    assert o.cost_per_send == {"email": 0.01, "sms": 0.05} and o.eligibility == {"min_orders": 1}
    assert (cat.control_share, cat.margin_rate, cat.ids, cat.caps()) == (0.2, 0.3, ["pct10"], {})
    with pytest.raises(KeyError):
        cat.get("nope")


def test_what_is_left_of_capped_offers() -> None:
    cat = parse_catalogue(GOOD)
    cat = replace(cat, offers=tuple(replace(o, max_volume=7, budget=100.0) for o in cat.offers))
    sends = pd.DataFrame({"offer_id": ["pct10", "pct10", "other"], "channel": "sms", "n": [4, 1, 9]})
    assert cat.remaining(sends) == {"pct10": (pytest.approx(100.0 - 5 * 0.05), 2)}
    assert cat.remaining(sends.iloc[:0]) == {"pct10": (100.0, 7)}
