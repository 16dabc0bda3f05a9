"""The offer catalogue: ``offers.yaml`` validated into :class:`Offer` and :class:`OfferCatalogue`.

Example
-------
>>> cat = parse_catalogue({"offers": [{"id": "pct10", "kind": "percent_off", "value": 10,
...                                    "channels": ["email"], "cost_per_send": {"email": 0.01}}]})
>>> cat.get("pct10").cost_on_redemption(np.array([50.0]))
array([5.])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.exceptions import CatalogueError
from features.schema import CHANNEL, OFFER_ID

KINDS = ("percent_off", "amount_off", "free_shipping", "loyalty_points", "product_promotion",
         "category_promotion", "win_back", "coupon")
ELIGIBILITY_KEYS = {"min_orders", "min_net_value", "max_net_value", "churn_risk", "segments",
                    "has_bought_category", "not_bought_in_days", "bought_within_days", "regions",
                    "attributes"}
ATTRIBUTE_RULES = "attributes"
"""The eligibility key of rules on customer attributes (extra columns of the customers table)::

    eligibility:
      attributes:
        loyalty_tier: [gold, silver]   # categorical: one of these values
        newsletter: true               # boolean: this value
        age: {min: 18, max: 65}        # numeric: within the bounds (either may be left out)
        loyalty_joined: {min: 30}      # date: joined at least 30 days before now

A customer whose attribute is missing fails the rule. Which kinds the attributes have is known only with the
shop's data: :func:`check_attribute_rules` checks the rules against it (the train job does, before
fitting)."""
RANGE_KEYS = ("min", "max")

Caps = dict[str, tuple[float | None, int | None]]
"""Offer id -> (total budget, volume) of offers capped in total (``None``: no limit of that kind)."""


@dataclass(frozen=True)
class Offer:
    """One offer of the catalogue: its kind and value, channels with their cost per send, validity window,
    eligibility rules (keys of :data:`ELIGIBILITY_KEYS`), per-customer limits and total budget/volume."""

    id: str
    name: str
    kind: str
    value: float
    channels: tuple[str, ...]
    cost_per_send: dict[str, float]
    valid_from: pd.Timestamp | None = None
    valid_to: pd.Timestamp | None = None
    eligibility: dict[str, Any] = field(default_factory=dict)
    max_per_customer: int = 10**6
    cooldown_days: int = 0
    redemption_window_days: int = 14
    budget: float | None = None
    max_volume: int | None = None

    def cost_on_redemption(self, basket: np.ndarray) -> np.ndarray:
        """What a redemption costs the shop for each basket value."""
        b = np.asarray(basket, float)
        if self.kind in ("percent_off", "win_back", "category_promotion", "product_promotion"):
            return b * self.value / 100.0
        if self.kind == "amount_off":
            return np.minimum(b, self.value)
        if self.kind == "free_shipping":
            return np.minimum(self.value, 0.5 * b)
        if self.kind == "loyalty_points":
            return b * self.value / 100.0
        return np.full_like(b, float(self.value))


@dataclass(frozen=True)
class OfferCatalogue:
    """Every offer, the control group share and the shop's margin rate."""

    offers: tuple[Offer, ...]
    control_share: float = 0.1
    margin_rate: float = 0.45

    def get(self, offer_id: str) -> Offer:
        for o in self.offers:
            if o.id == offer_id:
                return o
        raise KeyError(offer_id)

    def caps(self) -> Caps:
        """Each capped offer's (total budget, volume), for :func:`choose_audience`."""
        return {o.id: (o.budget, o.max_volume) for o in self.offers
                if o.budget is not None or o.max_volume is not None}

    def remaining(self, sends: pd.DataFrame) -> Caps:
        """What is left of each capped offer's budget and volume after ``sends`` (offer_id, channel, n: how
        many were sent to treatment groups on each channel)."""
        out: Caps = {}
        for oid, (money, volume) in self.caps().items():
            mine = sends[sends[OFFER_ID] == oid]
            n = int(mine["n"].sum())
            cost = mine[CHANNEL].map(self.get(oid).cost_per_send).astype(float).fillna(0.0)  # typed if empty
            spent = float((cost * mine["n"].astype(float)).sum())
            out[oid] = (None if money is None else max(money - spent, 0.0),
                        None if volume is None else max(volume - n, 0))
        return out

    @property
    def ids(self) -> list[str]:
        return [o.id for o in self.offers]


def parse_catalogue(raw: dict[str, Any] | None) -> OfferCatalogue:
    """Validate ``offers.yaml`` content. Raises :class:`CatalogueError` naming the offer and the reason."""
    if not raw or not isinstance(raw.get("offers"), list):
        raise CatalogueError("offers.yaml: expected a top-level 'offers:' list")
    seen: set[str] = set()
    offers = []
    for i, o in enumerate(raw["offers"]):
        oid = str(o.get("id", f"#{i}")) if isinstance(o, dict) else f"#{i}"
        if not isinstance(o, dict):
            raise CatalogueError(f"offer {oid}: each offer must be a mapping")
        if "id" not in o:
            raise CatalogueError(f"offer {oid}: missing 'id'")
        if oid in seen:
            raise CatalogueError(f"offer {oid}: duplicate id")
        seen.add(oid)
        offers.append(_parse_offer(oid, o))
    d = raw.get("defaults") or {}
    share = float(d.get("control_share", 0.1))
    if not 0 <= share < 1:
        raise CatalogueError(f"defaults.control_share {share} must be in [0, 1)")
    return OfferCatalogue(tuple(offers), control_share=share, margin_rate=float(d.get("margin_rate", 0.45)))


def _parse_offer(oid: str, o: dict[str, Any]) -> Offer:
    def bad(reason: str) -> CatalogueError:
        return CatalogueError(f"offer {oid}: {reason}")
    kind = o.get("kind")
    if kind not in KINDS:
        raise bad(f"kind {kind!r} is not one of {list(KINDS)}")
    chans = o.get("channels") or []
    if not chans:
        raise bad("no channels")
    cps = o.get("cost_per_send") or {}
    missing = [c for c in chans if c not in cps]
    if missing:
        raise bad(f"no cost_per_send for channel(s) {missing}")
    if any(float(v) < 0 for v in cps.values()):
        raise bad("negative cost_per_send")
    value = float(o.get("value", 0))
    if value < 0 or (kind in ("percent_off", "win_back") and value > 100):
        raise bad(f"value {value} out of range for kind {kind}")
    for key in ("budget", "max_volume"):
        v = o.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or v < 0
                              or (key == "max_volume" and v != int(v))):
            raise bad(f"{key} must be a {'whole ' if key == 'max_volume' else ''}number >= 0, got {v!r}")
    elig = _parse_eligibility(o.get("eligibility") or {}, bad)
    vf = pd.Timestamp(o["valid_from"]) if o.get("valid_from") else None
    vt = pd.Timestamp(o["valid_to"]) if o.get("valid_to") else None
    if vf is not None and vt is not None and vt < vf:
        raise bad("valid_to is before valid_from")
    return Offer(
        id=oid, name=str(o.get("name", oid)), kind=kind, value=value, channels=tuple(chans),
        cost_per_send={k: float(v) for k, v in cps.items()}, valid_from=vf, valid_to=vt, eligibility=elig,
        max_per_customer=int(o.get("max_per_customer", 10**6)), cooldown_days=int(o.get("cooldown_days", 0)),
        redemption_window_days=int(o.get("redemption_window_days", 14)),
        budget=float(o["budget"]) if o.get("budget") is not None else None,
        max_volume=int(o["max_volume"]) if o.get("max_volume") is not None else None)


def _parse_eligibility(elig: dict[str, Any], bad: Callable[[str], CatalogueError]) -> dict[str, Any]:
    unknown = set(elig) - ELIGIBILITY_KEYS
    if unknown:
        raise bad(f"unknown eligibility rule(s) {sorted(unknown)}; known: {sorted(ELIGIBILITY_KEYS)}")
    if "churn_risk" in elig:
        cr = elig["churn_risk"]
        if not (isinstance(cr, list) and len(cr) == 2 and 0 <= cr[0] <= cr[1] <= 1):
            raise bad("churn_risk must be [low, high] with 0 <= low <= high <= 1")
    out = dict(elig)
    if ATTRIBUTE_RULES in elig:
        out[ATTRIBUTE_RULES] = _parse_attribute_rules(elig[ATTRIBUTE_RULES], bad)
    return out


def _parse_attribute_rules(rules: Any, bad: Callable[[str], CatalogueError]) -> dict[str, Any]:
    """``name -> rule``: a list of allowed values (a single value is a list of one), or a ``{min, max}``
    range of numbers."""
    if not isinstance(rules, dict) or not rules:
        raise bad("eligibility.attributes must be a mapping 'attribute: rule' (a value, a list of values, "
                  "or {min: .., max: ..})")
    out: dict[str, Any] = {}
    for name, rule in rules.items():
        if isinstance(rule, dict):
            extra = set(rule) - set(RANGE_KEYS)
            if extra or not rule:
                raise bad(f"eligibility.attributes.{name}: a range has only {list(RANGE_KEYS)}, "
                          f"got {sorted(rule)}")
            for k, v in rule.items():
                if isinstance(v, bool) or not isinstance(v, int | float):
                    raise bad(f"eligibility.attributes.{name}.{k} must be a number, got {v!r}")
            if "min" in rule and "max" in rule and rule["min"] > rule["max"]:
                raise bad(f"eligibility.attributes.{name}: min {rule['min']} is above max {rule['max']}")
            out[str(name)] = {k: float(v) for k, v in rule.items()}
        else:
            values = rule if isinstance(rule, list) else [rule]
            if not values or any(isinstance(v, dict | list) or v is None for v in values):
                raise bad(f"eligibility.attributes.{name}: expected a value or a list of values, "
                          f"got {rule!r}")
            out[str(name)] = list(values)
    return out


def check_attribute_rules(catalogue: OfferCatalogue, kinds: dict[str, str]) -> None:
    """Raise :class:`CatalogueError` when an offer's attribute rule names an attribute the shop does not have,
    gives a range for a categorical or boolean attribute, values for a numeric or date one, or a value that is
    not true/false for a boolean one. ``kinds``: ``Shop.attributes``."""
    from features.attributes import BOOL_WORDS
    from features.schema import BOOLEAN, CATEGORICAL
    for o in catalogue.offers:
        for name, rule in o.eligibility.get(ATTRIBUTE_RULES, {}).items():
            where = f"offer {o.id}: eligibility.attributes.{name}"
            if name not in kinds:
                raise CatalogueError(f"{where}: the customers table has no attribute {name!r} "
                                     f"(its attributes: {sorted(kinds)})")
            ranged = isinstance(rule, dict)
            if kinds[name] in (CATEGORICAL, BOOLEAN) and ranged:
                raise CatalogueError(f"{where}: {name} is {kinds[name]}: list the allowed values, "
                                     "not a range")
            if kinds[name] not in (CATEGORICAL, BOOLEAN) and not ranged:
                raise CatalogueError(f"{where}: {name} is {kinds[name]}: give a range {{min: .., max: ..}}"
                                     + (" in days before now" if kinds[name] != "numeric" else ""))
            if kinds[name] == BOOLEAN and any(str(v).strip().lower() not in BOOL_WORDS for v in rule):
                raise CatalogueError(f"{where}: {name} is boolean: the values must be true or false, "
                                     f"got {rule}")
