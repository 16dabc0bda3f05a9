"""Budgeted audiences: one offer per customer maximising expected incremental margin within a budget, a
contact volume and each offer's own total budget and volume (greedy by value per cost), and the exact
optimum to check the greedy against.

Example
-------
>>> cand = pd.DataFrame({"customer_id": [1, 1, 2], "offer_id": ["gold", "silver", "gold"],
...                      "expected_value": [5.0, 3.0, 4.0], "send_cost": [0.1, 0.1, 0.1]})
>>> choose_audience(cand, 1.0, offer_caps={"gold": (None, 1)})[["customer_id", "offer_id"]].values.tolist()
[[1, 'gold']]
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from features.schema import CUSTOMER_ID, OFFER_ID
from models.offers.catalogue import Caps
from models.offers.reasons import Rule


def choose_audience(candidates: pd.DataFrame, budget: float, max_volume: int | None = None,
                    offer_caps: Caps | None = None) -> pd.DataFrame:
    """One offer per customer maximising expected incremental margin within ``budget`` (greedy by value per
    cost). Without offer caps: each customer's densest offer, customers in order of density, taken while the
    running cost stays within the budget (it stops at the first that does not fit). With caps: candidates in
    order of density, each taken if its customer has nothing yet and it still fits, so a cheaper one after an
    overflow can still be taken.

    ``candidates`` needs customer_id, offer_id, expected_value, send_cost. Only positive values are taken.
    ``max_volume`` caps the number of contacts; ``offer_caps`` maps an offer id to its own (total budget,
    volume) from the catalogue (``OfferCatalogue.caps()``): when an offer is used up, its customers fall back
    to their next best offer. The budget and every cap are never exceeded.
    """
    c = candidates[candidates["expected_value"] > 0].copy()
    c["density"] = c["expected_value"] / c["send_cost"].clip(lower=1e-9)
    c = c.sort_values(["density", "expected_value"], ascending=False, kind="stable")
    caps = {o: cap for o, cap in (offer_caps or {}).items() if cap != (None, None)}
    if not caps:  # the common case, vectorised: each customer's densest offer, then a prefix within budget
        c = c.drop_duplicates(CUSTOMER_ID)
        spent = np.cumsum(c["send_cost"].to_numpy())
        keep = spent <= budget + 1e-9
        if max_volume is not None:
            keep &= np.arange(len(c)) < max_volume
        return c[keep].drop(columns="density").reset_index(drop=True)
    return c.iloc[greedy(c, budget, max_volume, caps).taken].drop(columns="density").reset_index(drop=True)


class GreedyResult(NamedTuple):
    taken: list[int]
    """Positions of the rows taken, in order."""
    barred: dict[int, str]
    """Positions of rows passed over because their offer's own total volume or budget was used up:
    ``volume_exhausted`` or ``budget_exhausted`` (the volume is checked first)."""


def greedy(c: pd.DataFrame, budget: float, max_volume: int | None, caps: Caps) -> GreedyResult:
    """The rows of ``c`` (in its order) taken one by one when the row's customer has nothing yet, its send
    cost fits the budget, and its offer's own budget and volume are not used up."""
    cost = c["send_cost"].to_numpy(float)
    left_money = {o: (b if b is not None else np.inf) for o, (b, _) in caps.items()}
    left_count = {o: (v if v is not None else np.inf) for o, (_, v) in caps.items()}
    taken: set[Any] = set()
    out = GreedyResult([], {})
    remaining = budget + 1e-9
    for i, (cid, oid) in enumerate(zip(c[CUSTOMER_ID].tolist(), c[OFFER_ID].tolist(), strict=True)):
        if max_volume is not None and len(out.taken) >= max_volume:
            break
        if cid in taken or cost[i] > remaining:
            continue
        if oid in caps and left_count[oid] < 1:
            out.barred[i] = Rule.VOLUME_EXHAUSTED.value
            continue
        if oid in caps and cost[i] > left_money[oid] + 1e-9:
            out.barred[i] = Rule.BUDGET_EXHAUSTED.value
            continue
        taken.add(cid)
        out.taken.append(i)
        remaining -= cost[i]
        if oid in caps:
            left_count[oid] -= 1
            left_money[oid] -= cost[i]
    return out


def optimal_audience_value(candidates: pd.DataFrame, budget: float, offer_caps: Caps | None = None) -> float:
    """The exact optimum (scipy milp) of the same problem, for checking the greedy on small cases."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    c = candidates[candidates["expected_value"] > 0].reset_index(drop=True)
    if not len(c):
        return 0.0
    cust = pd.factorize(c[CUSTOMER_ID])[0]
    A_one = np.zeros((cust.max() + 1, len(c)))
    A_one[cust, np.arange(len(c))] = 1
    cost = c["send_cost"].to_numpy(float)
    cons = [LinearConstraint(A_one, 0, 1), LinearConstraint(cost[None, :], 0, budget)]
    for o, (money, volume) in (offer_caps or {}).items():
        row = (c[OFFER_ID] == o).to_numpy(float)
        if money is not None:
            cons.append(LinearConstraint((row * cost)[None, :], 0, money))
        if volume is not None:
            cons.append(LinearConstraint(row[None, :], 0, volume))
    res = milp(-c["expected_value"].to_numpy(), constraints=cons, integrality=np.ones(len(c)),
               bounds=Bounds(0, 1))
    return float(-res.fun) if res.success else float("nan")
