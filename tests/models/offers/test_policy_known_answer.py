"""The offer policy on a known answer: a few customers and two offers whose decisions are computed by hand.

Both offers are new (the uplift model was fitted on another offer's history), so each gets the documented
prior: uplift :data:`PRIOR_UPLIFT` = 0.01, P(redeem) :data:`PRIOR_REDEEM` = 0.05. With margin rate 0.5 and
no returns, for a customer whose basket is ``b``::

    amount5 (5 off, min 2 orders, 7-day cooldown; email 0.01, sms 0.05):
        EV = 0.01 * b * 0.5 - 0.05 * min(b, 5) - send    -> email: b=2000 9.74, b=1000 4.74, b=100 0.24
    points (2% loyalty points, min 1 order; email 0.01):
        EV = 0.01 * b * 0.5 - 0.05 * 0.02 * b - 0.01     ->        b=2000 7.99, b=1000 3.99, b=100 0.39

so the bigger baskets take amount5, the small one points, a 1-unit basket nothing (both negative). Every
test runs on :meth:`OfferPolicy.decide` and on :class:`PreparedPolicy` (the serving path), which must agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.schema import (
    AVG_ORDER_VALUE,
    CHANNEL,
    CUSTOMER_ID,
    GROUP,
    N_ORDERS,
    OFFER_ID,
    RECENCY_DAYS,
    RETURN_RATE,
    SENT_AT,
)
from models.customer import CustomerModelConfig
from models.offers import OfferPolicy, in_control_group, parse_catalogue
from models.offers.prepared import PreparedPolicy
from models.offers.uplift import PRIOR_REDEEM, PRIOR_UPLIFT, UpliftModel

NOW = pd.Timestamp("2025-06-01")
CATALOGUE = {"defaults": {"margin_rate": 0.5, "control_share": 0.0}, "offers": [
    {"id": "amount5", "kind": "amount_off", "value": 5, "channels": ["email", "sms"],
     "cost_per_send": {"email": 0.01, "sms": 0.05}, "cooldown_days": 7, "eligibility": {"min_orders": 2}},
    {"id": "points", "kind": "loyalty_points", "value": 2, "channels": ["email"],
     "cost_per_send": {"email": 0.01}, "eligibility": {"min_orders": 1}}]}
# customer: (basket, orders, days since the last purchase)
CUSTOMERS = {"big2": (2000.0, 5, 30.0), "big": (1000.0, 5, 30.0), "small": (100.0, 5, 30.0),
             "tiny": (1.0, 5, 30.0), "one": (1000.0, 1, 30.0), "never": (1000.0, 0, 30.0),
             "recent": (1000.0, 5, 1.0), "opted": (1000.0, 5, 30.0)}
OPTED_OUT = pd.Series(True, index=["opted"])
# customer -> (offer, rule, expected value), by hand (module docstring)
EXPECTED = {"big2": ("amount5", "best_value", 9.74), "big": ("amount5", "best_value", 4.74),
            "small": ("points", "best_value", 0.39), "tiny": ("none", "not_worth_cost", 0.0),
            "one": ("points", "best_value", 3.99), "never": ("none", "not_eligible", 0.0),
            "recent": ("none", "recent_purchase", 0.0), "opted": ("none", "opted_out", 0.0)}


@pytest.fixture(scope="module")
def policy() -> OfferPolicy:
    """The catalogue above with a real uplift model that has seen neither of its offers (tiny, one tree)."""
    rng = np.random.default_rng(0)
    n = 200
    X = pd.DataFrame({AVG_ORDER_VALUE: rng.uniform(10, 100, n), N_ORDERS: 3},
                     index=[f"h{i}" for i in range(n)])
    treated = np.arange(n) % 2 == 0
    config = CustomerModelConfig(n_estimators=2, min_child_samples=5, num_threads=1)
    model = UpliftModel(config, moderators=(), n_models=1).fit(
        X, np.full(n, "last_year_mailing", dtype=object), treated, rng.random(n) < 0.3,
        treated & (rng.random(n) < 0.2))
    return OfferPolicy(parse_catalogue(CATALOGUE), model)


def customers(names: list[str] | None = None) -> pd.DataFrame:
    rows = {c: CUSTOMERS[c] for c in (names or list(CUSTOMERS))}
    basket, orders, days = zip(*rows.values(), strict=True)
    return pd.DataFrame({AVG_ORDER_VALUE: basket, N_ORDERS: orders, RECENCY_DAYS: days, RETURN_RATE: 0.0},
                        index=list(rows))


def decide(how: str, policy: OfferPolicy, X: pd.DataFrame, now: pd.Timestamp = NOW,
           **kw: Any) -> pd.DataFrame:
    """The decisions (indexed by customer) of ``OfferPolicy.decide`` (``how="policy"``) or of a
    :class:`PreparedPolicy` prepared for ``X`` (``how="prepared"``)."""
    churn = pd.Series(0.5, index=X.index)
    if how == "policy":
        dec = policy.decide(X, churn, now, opted_out=OPTED_OUT, **kw)
    else:
        prep = PreparedPolicy(policy, X, churn, None, None, OPTED_OUT)
        dec = pd.DataFrame(prep.decide(list(X.index), now, **kw))
    return dec.set_index(CUSTOMER_ID)


HOW = pytest.mark.parametrize("how", ["policy", "prepared"])


def test_new_offers_get_the_documented_prior(policy: OfferPolicy) -> None:
    u = policy.uplift.predict(customers(["big"]), "amount5")
    assert u["prior"].all()
    assert u["uplift"].tolist() == [PRIOR_UPLIFT] and u["p_redeem"].tolist() == [PRIOR_REDEEM]


def test_candidates_are_valued_by_hand(policy: OfferPolicy) -> None:
    X = customers(["big", "small", "tiny", "one"])
    cand = policy.score(X, pd.Series(0.5, index=X.index), NOW).set_index([CUSTOMER_ID, OFFER_ID])
    ev = cand["expected_value"].round(6).to_dict()
    assert ev == {("big", "amount5"): 4.74, ("small", "amount5"): 0.24, ("tiny", "amount5"): -0.055,
                  ("big", "points"): 3.99, ("small", "points"): 0.39, ("tiny", "points"): -0.006,
                  ("one", "points"): 3.99}  # "one" has too few orders for amount5
    assert set(cand[CHANNEL]) == {"email"}  # the cheaper channel of amount5
    sms = policy.score(X, pd.Series(0.5, index=X.index), NOW, channel="sms").set_index(CUSTOMER_ID)
    assert set(sms[OFFER_ID]) == {"amount5"} and sms.loc["big", "expected_value"] == pytest.approx(4.70)


@HOW
def test_each_customer_gets_the_offer_of_highest_expected_value(how: str, policy: OfferPolicy) -> None:
    dec = decide(how, policy, customers(), campaign="c1")
    got = {c: (dec.at[c, OFFER_ID], dec.at[c, "rule"], round(float(dec.at[c, "expected_value"]), 6))
           for c in dec.index}
    assert got == EXPECTED
    assert (dec[GROUP] == "treatment").all() and dec["send"].tolist() == [o != "none" for o, *_ in
                                                                          EXPECTED.values()]
    assert dec.at["never", "rule_detail"] == {"amount5": "min_orders", "points": "min_orders"}
    assert dec.at["small", "uplift"] == PRIOR_UPLIFT and dec.at["small", "propensity"] == PRIOR_REDEEM
    sms = decide(how, policy, customers(["big", "small"]), channel="sms")
    assert sms[OFFER_ID].tolist() == ["amount5", "amount5"] and set(sms[CHANNEL]) == {"sms"}
    assert sms["expected_value"].round(6).tolist() == [4.70, 0.20]  # 0.04 more per send than by email


def sent(names: list[str], offer: str, days_ago: float, channel: str = "email") -> pd.DataFrame:
    return pd.DataFrame({CUSTOMER_ID: names, OFFER_ID: offer, CHANNEL: channel, GROUP: "treatment",
                         SENT_AT: NOW - pd.Timedelta(days=days_ago)})


@HOW
def test_a_cooldown_moves_a_customer_to_the_next_best_offer_until_it_ends(how: str,
                                                                          policy: OfferPolicy) -> None:
    X = customers(["big2", "big", "small"])
    dec = decide(how, policy, X, history=sent(["big"], "amount5", days_ago=2))
    assert dec.at["big", OFFER_ID] == "points" and dec.at["big", "rule"] == "next_best"
    assert dec.at["big", "rule_detail"] == {OFFER_ID: "amount5", "blocked_by": "cooldown"}
    assert dec.at["big", "expected_value"] == pytest.approx(3.99)
    assert dec.at["big2", OFFER_ID] == "amount5" and dec.at["small", OFFER_ID] == "points"  # not theirs
    later = decide(how, policy, X, history=sent(["big"], "amount5", days_ago=8))  # the 7 days are over
    assert later.at["big", OFFER_ID] == "amount5" and later.at["big", "rule"] == "best_value"
    sent_by_control = sent(["big"], "amount5", days_ago=2).assign(**{GROUP: "control"})
    # a control send was never sent: no cooldown
    assert decide(how, policy, X, history=sent_by_control).at["big", OFFER_ID] == "amount5"


@HOW
def test_the_contact_cap_of_a_channel_stops_every_offer_on_it(how: str, policy: OfferPolicy) -> None:
    X = customers(["big", "small"])
    two = sent(["big", "big"], "other", days_ago=5)  # ContactRules: at most 2 per 30 days and channel
    dec = decide(how, policy, X, history=two)
    assert dec.at["big", OFFER_ID] == "none" and dec.at["big", "rule"] == "contact_cap"
    assert dec.at["big", "rule_detail"] == {OFFER_ID: "amount5", CHANNEL: "email"}
    assert dec.at["small", OFFER_ID] == "points"
    assert decide(how, policy, X, history=two, channel="sms").at["big", OFFER_ID] == "amount5"  # sms is free
    old = sent(["big", "big"], "other", days_ago=40)
    assert decide(how, policy, X, history=old).at["big", OFFER_ID] == "amount5"


@HOW
def test_capped_offers_go_to_the_highest_expected_values_first(how: str, policy: OfferPolicy) -> None:
    X = customers(["big", "big2", "small"])
    one_left = decide(how, policy, X, remaining={"amount5": (None, 1)})
    assert one_left.at["big2", OFFER_ID] == "amount5"  # 9.74 beats 4.74
    assert one_left.at["big", OFFER_ID] == "points" and one_left.at["big", "rule"] == "next_best"
    assert one_left.at["big", "rule_detail"] == {OFFER_ID: "amount5", "blocked_by": "volume_exhausted"}
    one_send = decide(how, policy, X, remaining={"amount5": (0.01, None)})  # money for one e-mail
    assert one_send[OFFER_ID].to_dict() == {"big": "points", "big2": "amount5", "small": "points"}
    assert one_send.at["big", "rule_detail"] == {OFFER_ID: "amount5", "blocked_by": "budget_exhausted"}
    broke = decide(how, policy, X, remaining={"amount5": (0.005, None)})
    assert broke[OFFER_ID].tolist() == ["points", "points", "points"]
    assert broke.loc[["big", "big2"], "rule_detail"].tolist() == [
        {OFFER_ID: "amount5", "blocked_by": "budget_exhausted"}] * 2
    no_points = decide(how, policy, X, remaining={"amount5": (None, 0), "points": (None, 1)})
    assert no_points[OFFER_ID].to_dict() == {"big": "none", "big2": "points", "small": "none"}
    assert no_points.at["big", "rule"] == "volume_exhausted"


def test_the_control_group_is_sent_nothing_and_uses_none_of_a_cap(policy: OfferPolicy) -> None:
    from dataclasses import replace

    half = OfferPolicy(replace(policy.catalogue, control_share=0.5), policy.uplift)
    X = customers()
    # a campaign whose control group holds big2 but not big (membership is a hash of campaign and customer)
    campaign = next(c for c in (f"c{i}" for i in range(200))
                    if list(in_control_group(["big2", "big"], c, 0.5)) == [True, False])
    control = pd.Series(in_control_group(list(X.index), campaign, 0.5), index=X.index)
    for how in ("policy", "prepared"):
        dec = decide(how, half, X, campaign=campaign, remaining={"amount5": (None, 1)})
        assert (dec[GROUP] == np.where(control, "control", "treatment")).all()
        ctrl = dec[control]
        assert (ctrl["rule"] == "control_group").all() and not ctrl["send"].any()
        would = [EXPECTED[c][0] for c in ctrl.index]
        assert ctrl[OFFER_ID].tolist() == would and [d["would_offer"] for d in ctrl["rule_detail"]] == would
        treat = dec[~control]
        assert {c: treat.at[c, OFFER_ID] for c in treat.index} == {c: EXPECTED[c][0] for c in treat.index}
        assert treat.at["big", OFFER_ID] == "amount5"  # the one amount5 left is not used up by big2 (control)
