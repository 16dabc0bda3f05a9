"""Known-answer data for the offer tests: a one-offer catalogue and campaigns with planted uplift."""

from __future__ import annotations

import numpy as np
import pandas as pd

GOOD = {"offers": [{"id": "pct10", "name": "10% off", "kind": "percent_off", "value": 10,
                    "channels": ["email", "sms"], "cost_per_send": {"email": 0.01, "sms": 0.05},
                    "eligibility": {"min_orders": 1}}]}


def synthetic_campaigns(n: int = 8000, seed: int = 0):
    """Two kinds of customer with a known answer: sure things buy anyway (uplift 0), deal seekers respond."""
    rng = np.random.default_rng(seed)
    deal = rng.random(n) < 0.5
    X = pd.DataFrame({
        "n_orders": np.where(deal, rng.integers(1, 4, n), rng.integers(8, 20, n)),
        "orders_90": np.where(deal, rng.integers(0, 2, n), rng.integers(3, 8, n)),
        "discount_share": np.where(deal, rng.uniform(0.6, 1.0, n), rng.uniform(0, 0.05, n)),
        "recency_days": np.where(deal, rng.uniform(20, 120, n), rng.uniform(1, 20, n)) + 5,
        "avg_order_value": rng.uniform(40, 60, n), "return_rate": 0.0,
        "net_revenue": rng.uniform(100, 900, n),
    }, index=[f"c{i}" for i in range(n)])
    t = rng.random(n) < 0.7
    p = np.where(deal, np.where(t, 0.45, 0.10), 0.80)  # sure things: 0.8 with or without the offer
    bought = rng.random(n) < p
    redeemed = t & bought & (rng.random(n) < 0.8)
    return X, t, bought, redeemed, deal
