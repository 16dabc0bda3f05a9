"""Budgeted audiences: budget, volume and every offer's own caps are never exceeded; the greedy stays near the
exact optimum; a used-up offer falls back to the next best."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from models.offers import choose_audience, greedy, optimal_audience_value


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 15), st.integers(0, 3), st.floats(-5, 20),
                          st.sampled_from([0.01, 0.05, 0.2])), min_size=1, max_size=40), st.floats(0, 2))
def test_budget_never_exceeded_and_one_offer_each(rows, budget) -> None:
    c = pd.DataFrame(rows, columns=["customer_id", "offer_id", "expected_value", "send_cost"])
    c = c.drop_duplicates(["customer_id", "offer_id"])
    a = choose_audience(c, budget)
    assert a["send_cost"].sum() <= budget + 1e-9
    assert a["customer_id"].is_unique
    assert (a["expected_value"] > 0).all()


def test_greedy_is_close_to_the_optimum_on_small_cases() -> None:
    rng = np.random.default_rng(0)
    ratios = []
    for _ in range(20):
        n = 30
        c = pd.DataFrame({"customer_id": rng.integers(0, 12, n), "offer_id": rng.integers(0, 3, n),
                          "expected_value": rng.gamma(2, 2, n) - 1,
                          "send_cost": rng.choice([0.05, 0.1, 0.3], n)})
        c = c.drop_duplicates(["customer_id", "offer_id"])
        budget = 0.6
        g = choose_audience(c, budget)["expected_value"].sum()
        opt = optimal_audience_value(c, budget)
        assert g <= opt + 1e-6
        ratios.append(g / opt if opt > 0 else 1.0)
    assert np.mean(ratios) > 0.85


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 15), st.sampled_from(["a", "b", "c"]), st.floats(-1, 10),
                          st.sampled_from([0.05, 0.1, 0.3])), min_size=1, max_size=50),
       st.floats(0, 3), st.one_of(st.none(), st.floats(0, 1)), st.one_of(st.none(), st.integers(0, 4)),
       st.one_of(st.none(), st.integers(0, 10)))
def test_offer_caps_are_never_exceeded(rows, budget, a_money, a_volume, max_volume) -> None:
    c = pd.DataFrame(rows, columns=["customer_id", "offer_id", "expected_value", "send_cost"])
    c = c.drop_duplicates(["customer_id", "offer_id"])
    caps = {"a": (a_money, a_volume), "b": (None, 1)}
    a = choose_audience(c, budget, max_volume, offer_caps=caps)
    assert a["send_cost"].sum() <= budget + 1e-9 and a["customer_id"].is_unique
    assert (a["expected_value"] > 0).all()
    used = a[a["offer_id"] == "a"]
    assert a_money is None or used["send_cost"].sum() <= a_money + 1e-9
    assert a_volume is None or len(used) <= a_volume
    assert (a["offer_id"] == "b").sum() <= 1
    assert max_volume is None or len(a) <= max_volume
    assert a.merge(c, on=["customer_id", "offer_id"]).shape[0] == len(a)  # only real candidates


def test_used_up_offer_falls_back_to_the_next_best_and_stays_near_the_optimum() -> None:
    c = pd.DataFrame({"customer_id": [1, 1, 2, 2, 3],
                      "offer_id": ["gold", "silver", "gold", "silver", "gold"],
                      "expected_value": [5.0, 3.0, 4.0, 1.0, 2.0], "send_cost": [0.1] * 5})
    a = choose_audience(c, 1.0, offer_caps={"gold": (None, 1)})
    assert dict(zip(a["customer_id"], a["offer_id"], strict=True)) == {1: "gold", 2: "silver"}
    assert choose_audience(c, 1.0)["offer_id"].tolist() == ["gold", "gold", "gold"]  # no cap: gold for all
    rng = np.random.default_rng(1)
    ratios = []
    for _ in range(20):
        n = 30
        c = pd.DataFrame({"customer_id": rng.integers(0, 12, n), "offer_id": rng.choice(["x", "y", "z"], n),
                          "expected_value": rng.gamma(2, 2, n) - 1,
                          "send_cost": rng.choice([0.05, 0.1, 0.3], n)})
        c = c.drop_duplicates(["customer_id", "offer_id"])
        caps = {"x": (0.2, None), "y": (None, 2)}
        g = choose_audience(c, 0.8, offer_caps=caps)["expected_value"].sum()
        opt = optimal_audience_value(c, 0.8, offer_caps=caps)
        assert g <= opt + 1e-6
        ratios.append(g / opt if opt > 0 else 1.0)
    assert np.mean(ratios) > 0.85


def test_greedy_says_which_cap_passed_a_row_over() -> None:
    c = pd.DataFrame({"customer_id": [1, 2, 3, 4, 4],
                      "offer_id": ["gold", "gold", "silver", "silver", "gold"],
                      "send_cost": [0.1, 0.1, 0.3, 0.3, 0.1]})
    g = greedy(c, np.inf, None, {"gold": (None, 1), "silver": (0.4, None)})
    assert g.taken == [0, 2]  # customer 4's gold and silver are both used up
    assert g.barred == {1: "volume_exhausted", 3: "budget_exhausted", 4: "volume_exhausted"}
