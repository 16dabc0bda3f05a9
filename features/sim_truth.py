"""Ground truth of the simulated offers: the true uplift of each offer, redemption chances, the cost of a
redeemed coupon, and the expected incremental margin per customer and offer (written to ``truth/uplift``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features import schema
from features.sim_world import OFFERS, WINDOW_DAYS

# how strongly each offer moves a fully price-sensitive customer (ground truth, not visible to models)
OFFER_EFFECT = {"pct10": 0.55, "winback20": 0.9, "freeship": 0.35, "points2x": 0.12}


def true_uplift(offer_id: str, sens: np.ndarray, base_p: np.ndarray, alive: np.ndarray,
                rate: np.ndarray) -> np.ndarray:
    """True increase in the chance of an order within the redemption window caused by an offer."""
    eff = OFFER_EFFECT[offer_id]
    if offer_id == "points2x":  # loyalty points nudge frequent buyers, regardless of price sensitivity
        resp = 0.3 + 0.7 * np.clip(rate / 12.0, 0, 1)
    else:
        resp = 0.02 + 0.5 * sens**1.5
    up = np.where(alive, eff * resp * (1 - base_p), 0.0)
    if offer_id == "winback20":  # brings a few lapsed customers back
        up = np.where(alive, up, 0.15 * sens**2)
    return np.clip(up, 0, 0.6)


def redeem_prob(sens: np.ndarray) -> np.ndarray:
    """Chance that a customer who buys anyway inside the window uses the coupon."""
    return 0.25 + 0.6 * sens


def offer_cost_on_order(offer_id: str, basket: np.ndarray) -> np.ndarray:
    return {"pct10": 0.10 * basket, "winback20": 0.20 * basket, "freeship": np.minimum(4.0, 0.5 * basket),
            "points2x": 0.03 * basket}[offer_id]


def uplift_truth(ids: np.ndarray, sens: np.ndarray, rate: np.ndarray, alive: np.ndarray, basket: np.ndarray,
                 ret: np.ndarray) -> pd.DataFrame:
    """Expected incremental margin of each offer for each customer, for a campaign sent at the end."""
    base_p = np.where(alive, 1 - np.exp(-rate * WINDOW_DAYS / 365.0), 0.0)
    margin_rate = 0.45 * (1 - ret)  # returns eat the margin of an induced order
    frames = []
    for o in OFFERS:
        up = true_uplift(o["id"], sens, base_p, alive, rate)
        cost = offer_cost_on_order(o["id"], basket)
        send = min(o["cost_per_send"].values())
        eim = up * (basket * margin_rate - cost) - base_p * redeem_prob(sens) * cost - send
        frames.append(pd.DataFrame({schema.CUSTOMER_ID: ids, schema.OFFER_ID: o["id"],
                                    "base_p": base_p, "uplift_p": up, "expected_incremental_margin": eim}))
    return pd.concat(frames, ignore_index=True)
