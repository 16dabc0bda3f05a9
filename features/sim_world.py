"""The simulated shop's world: catalogue categories and prices, regions, channels, the offer catalogue,
the calendar (weekday pattern, holiday peak, promotion days) and the simulator's settings.

Used by :mod:`features.simulate` (the entry point) and :mod:`features.sim_customers`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features import schema

CATEGORIES = ["grocery", "beauty", "baby", "pet", "health", "home", "kitchen", "garden", "toys", "books",
              "electronics", "fashion_women", "fashion_men", "shoes", "sports", "stationery"]
REPLENISHABLE_CATEGORIES = {"grocery", "beauty", "baby", "pet", "health"}
CATEGORY_PRICE = {"grocery": 6, "beauty": 18, "baby": 15, "pet": 14, "health": 12, "home": 35, "kitchen": 28,
                  "garden": 30, "toys": 22, "books": 14, "electronics": 90, "fashion_women": 45,
                  "fashion_men": 40, "shoes": 60, "sports": 38, "stationery": 8}
REGIONS = ["london", "north", "south", "east", "west"]
REGION_P = [0.25, 0.2, 0.2, 0.15, 0.2]
ACQ = ["organic", "paid_search", "social", "referral", "affiliate"]
CHANNELS = ["web", "app", "store"]
START = pd.Timestamp("2025-01-01")
FUTURE_DAYS = 120  # simulated past the end for ground truth only (never written to the tables)
WINDOW_DAYS = 14  # an offer's redemption window

OFFERS: list[dict[str, Any]] = [
    {"id": "pct10", "name": "10% off your next order", "kind": "percent_off", "value": 10,
     "channels": ["email", "sms"], "cost_per_send": {"email": 0.01, "sms": 0.05},
     "redemption_window_days": WINDOW_DAYS, "cooldown_days": 21, "max_per_customer": 6,
     "eligibility": {"min_orders": 1}},
    {"id": "winback20", "name": "We miss you: 20% off", "kind": "win_back", "value": 20,
     "channels": ["sms", "email"], "cost_per_send": {"email": 0.01, "sms": 0.05},
     "redemption_window_days": WINDOW_DAYS, "cooldown_days": 60, "max_per_customer": 2,
     "eligibility": {"min_orders": 1, "not_bought_in_days": 45}},
    {"id": "freeship", "name": "Free shipping this fortnight", "kind": "free_shipping", "value": 4.0,
     "channels": ["email", "app"], "cost_per_send": {"email": 0.01, "app": 0.0},
     "redemption_window_days": WINDOW_DAYS, "cooldown_days": 21, "max_per_customer": 6,
     "eligibility": {}},
    {"id": "points2x", "name": "Double loyalty points", "kind": "loyalty_points", "value": 3,
     "channels": ["app", "email"], "cost_per_send": {"email": 0.01, "app": 0.0},
     "redemption_window_days": WINDOW_DAYS, "cooldown_days": 14, "max_per_customer": 8,
     "eligibility": {"min_orders": 2}},
]


@dataclass(frozen=True)
class SimConfig:
    customers: int = 20_000
    products: int = 2_000
    days: int = 365
    seed: int = 42
    chunk: int = 50_000
    control_share: float = 0.1
    campaign_every_days: int = 30
    campaign_reach: float = 0.3
    events: bool = True


def day_weights(days: int) -> tuple[np.ndarray, np.ndarray]:
    """Relative buying intensity per day (weekday pattern, holiday peak, promotions) and promo flags."""
    dates = pd.date_range(START, periods=days + FUTURE_DAYS, freq="D")
    wd = np.array([0.95, 0.95, 1.0, 1.0, 1.1, 1.15, 1.05])[dates.day_of_week]
    md = dates.month * 100 + dates.day
    holiday = np.where((md >= 1120) & (md <= 1224), 1.8, 1.0)
    promo = np.zeros(len(dates), dtype=bool)
    for start in range(20, days + FUTURE_DAYS, 45):  # a 3-day sale every ~6 weeks
        promo[start:start + 3] = True
    promo |= (dates.month == 11) & (dates.day >= 27) & (dates.day <= 30)  # black friday weekend
    w = wd * holiday * np.where(promo, 1.5, 1.0)
    return w / w.mean(), promo


def sample_days(rng: np.random.Generator, cw: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling of a day in [a, b) for each row under cumulative weights cw (len days+1)."""
    ia = np.clip(a.astype(int), 0, len(cw) - 1)
    ib = np.clip(np.ceil(b).astype(int), 0, len(cw) - 1)
    lo, hi = cw[ia], cw[ib]
    u = lo + rng.random(len(a)) * np.maximum(hi - lo, 1e-12)
    d = np.searchsorted(cw, u, side="right") - 1
    return np.clip(d, ia, np.maximum(ib - 1, ia)).astype(float) + rng.random(len(a))


def make_catalogue(n: int, rng: np.random.Generator, days: int) -> pd.DataFrame:
    cat = rng.choice(len(CATEGORIES), size=n)
    cat[: min(n, len(CATEGORIES))] = np.arange(min(n, len(CATEGORIES)))  # every category has a product
    price = np.array([CATEGORY_PRICE[CATEGORIES[c]] for c in cat]) * rng.lognormal(0, 0.45, n)
    price = np.asarray(np.round(np.maximum(price, 0.5), 2), dtype=np.float64)
    repl = np.array([CATEGORIES[c] in REPLENISHABLE_CATEGORIES for c in cat]) & (rng.random(n) < 0.6)
    oos = rng.random(n) < 0.04
    oos_day = np.where(oos, rng.integers(max(days - 60, 1), days, n), 10**9)
    brands = np.array([f"brand_{i:02d}" for i in range(60)])
    return pd.DataFrame({
        schema.PRODUCT_ID: [f"P{i:05d}" for i in range(n)],
        "category": [CATEGORIES[c] for c in cat],
        "brand": brands[rng.integers(0, 60, n)],
        "price": price,
        "unit_cost": np.round(price * rng.uniform(0.35, 0.7, n), 2),
        "in_stock": ~oos,
        "replenishable": repl,
        "_cat": cat,
        "_pop": rng.pareto(1.2, n) + 0.05,
        "_oos_day": oos_day,
    })

