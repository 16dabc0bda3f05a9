"""Why a decision came out as it did: the rule code every decision carries, its readable text, and the
customer facts that explain an offer's value.

Every decision of :meth:`OfferPolicy.decide` has ``rule`` (a :class:`Rule` value), ``rule_detail`` (a dict of
strings, keys per rule below) and ``reason`` (readable text that starts with what the rule says).

Example
-------
>>> reason_text(Rule.COOLDOWN, {"offer_id": "pct10"}, [])
'cooldown: offer pct10 was sent recently and is in its cooldown'
"""

from __future__ import annotations

from enum import StrEnum

import pandas as pd

from features.schema import DISCOUNT_SHARE, OFFER_ID, ORDERS_90, RETURN_RATE

DISCOUNT_RESPONSIVE = 0.3
"""Share of spend bought on discount from which a customer counts as discount-responsive (reasons, and the
segments of measured uplift)."""

TRIGGER_PREFERENCE = {"dormancy": ("win_back",), "churn_risk": ("win_back", "percent_off"),
                      "spend_jump": ("loyalty_points",),
                      "first_purchase": ("free_shipping", "loyalty_points"), "high_value_return": ()}
"""Offer kinds that answer each trigger: a trigger breaks ties towards them, it adds no value."""


class Rule(StrEnum):
    """The rule that decided. ``rule_detail`` keys are given per rule; ``offer_id`` names the offer the rule
    concerns."""

    BEST_VALUE = "best_value"
    """An offer: the highest expected incremental margin among the offers allowed. Detail: {}."""
    NEXT_BEST = "next_best"
    """An offer, but a better one was barred. Detail: offer_id (the better one), blocked_by (its rule), and
    channel when that rule is the contact cap."""
    CONTROL_GROUP = "control_group"
    """Held out for measurement: nothing is sent. Detail: campaign, would_offer (offer id or "none"),
    otherwise (the rule that would have decided in the treatment group)."""
    OPTED_OUT = "opted_out"
    """The customer opted out of offers. Detail: {}."""
    RECENT_PURCHASE = "recent_purchase"
    """No offer right after a purchase (``ContactRules.recent_purchase_days``). Detail: {}."""
    NOT_ELIGIBLE = "not_eligible"
    """No offer's eligibility holds. Detail: offer id -> the first rule that failed: a key of the offer's
    ``eligibility``, ``valid_from`` (not valid yet), ``valid_to`` (expired) or ``channel`` (not sent on the
    channel asked for)."""
    MAX_PER_CUSTOMER = "max_per_customer"
    """The best offer was already sent its maximum number of times to the customer. Detail: offer_id."""
    COOLDOWN = "cooldown"
    """The best offer was sent to the customer within its ``cooldown_days``. Detail: offer_id."""
    CONTACT_CAP = "contact_cap"
    """The channel the best offer goes out on reached ``ContactRules.max_contacts`` in the period. Detail:
    offer_id, channel."""
    BUDGET_EXHAUSTED = "budget_exhausted"
    """The best offer's total budget is used up. Detail: offer_id."""
    VOLUME_EXHAUSTED = "volume_exhausted"
    """The best offer's total volume is used up. Detail: offer_id."""
    NOT_WORTH_COST = "not_worth_cost"
    """Eligible offers exist but none has a positive expected incremental margin. Detail: {}."""


def reason_text(rule: str, detail: dict[str, str], facts: list[str]) -> str:
    """Readable text of a decision: what the rule says, then the customer facts (churn risk, triggers)."""
    why = f" ({', '.join(facts)})" if facts else ""
    if rule == Rule.NEXT_BEST:
        barred = _rule_text(detail.get("blocked_by", ""), detail)
        return f"best expected incremental margin of the offers allowed{why}; barred: {barred}"
    return _rule_text(rule, detail) + why


def _rule_text(rule: str, detail: dict[str, str]) -> str:
    oid = detail.get(OFFER_ID, "")
    if rule == Rule.NOT_ELIGIBLE:
        if not detail:
            return "not eligible: the catalogue has no offer"
        return "not eligible for any offer: " + ", ".join(f"{o} ({r})" for o, r in detail.items())
    texts: dict[str, str] = {
        Rule.BEST_VALUE: "best expected incremental margin",
        Rule.NOT_WORTH_COST: "no offer is worth its cost",
        Rule.OPTED_OUT: "opted out of offers",
        Rule.RECENT_PURCHASE: "recent purchase: no offer in the days right after a purchase",
        Rule.MAX_PER_CUSTOMER: f"max per customer: offer {oid} was already sent its maximum number of times",
        Rule.COOLDOWN: f"cooldown: offer {oid} was sent recently and is in its cooldown",
        Rule.CONTACT_CAP: f"contact cap: the {detail.get('channel')} channel reached its limit of offers "
                          f"for this customer in the period (offer {oid})",
        Rule.BUDGET_EXHAUSTED: f"budget exhausted: offer {oid}'s total budget is used up",
        Rule.VOLUME_EXHAUSTED: f"volume exhausted: offer {oid}'s total volume is used up",
    }
    return texts.get(rule, str(rule))  # a Rule is a str: plain codes look up the same entries


def control_text(campaign: str, would_offer: str, otherwise: str) -> str:
    """Text of a control-group decision: held out, and what the customer would have got otherwise."""
    return (f"control group of campaign {campaign}: held out for measurement; "
            f"otherwise {would_offer}: {otherwise}")


def reasons_for(row: pd.Series, churn: float | None) -> list[str]:
    """Customer facts that explain an offer's value (churn risk, discount affinity, frequency, returns)."""
    out = []
    if churn is not None and churn >= 0.6:
        out.append("churn risk high")
    elif churn is not None and churn >= 0.3:
        out.append("churn risk medium")
    if float(row.get(DISCOUNT_SHARE, 0) or 0) >= DISCOUNT_RESPONSIVE:
        out.append("discount-responsive")
    if float(row.get(ORDERS_90, 0) or 0) >= 3:
        out.append("frequent buyer")
    if float(row.get(RETURN_RATE, 0) or 0) >= 0.4:
        out.append("returns a lot")
    return out
