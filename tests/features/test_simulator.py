"""The simulator is deterministic per seed and plants structure the models must recover."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from features.customer import order_lines
from features.simulate import simulate_shop


def digest(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(pd.read_parquet(p).to_csv(index=False).encode()).hexdigest()
            for p in sorted(d.glob("*.parquet"))}


def test_same_seed_same_shop_other_seed_other_shop(tmp_path: Path) -> None:
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        simulate_shop(tmp_path / name, customers=200, products=50, days=120, seed=seed)
    a, b, c = (digest(tmp_path / n) for n in "abc")
    assert a == b
    assert a["orders.parquet"] != c["orders.parquet"]


def test_heavy_returners_return_most_of_what_they_buy(small_shop, truth) -> None:
    lines = order_lines(small_shop)
    bought = lines[~lines["is_return"]].groupby("customer_id")["quantity"].sum()
    returned = -lines[lines["is_return"]].groupby("customer_id")["quantity"].sum()
    rate = (returned.reindex(bought.index).fillna(0) / bought)
    heavy = truth.index[truth["heavy_returner"]].intersection(rate.index)
    light = truth.index[truth["return_rate"] < 0.1].intersection(rate.index)
    assert len(heavy) >= 20
    assert rate[heavy].median() > 0.6
    assert rate[light].median() < 0.1


def test_control_groups_receive_nothing(small_shop) -> None:
    ol = small_shop.offer_log
    control = ol[ol["group"] == "control"]
    assert len(control) > 50
    assert control["redeemed_at"].isna().all()
    assert control["order_id"].isna().all()
    treated = ol[ol["group"] == "treatment"]
    assert treated["redeemed_at"].notna().mean() > 0.05
    share = len(control) / len(ol)
    assert 0.07 < share < 0.13


def test_offers_cause_purchases_in_the_treated_group(small_shop) -> None:
    from training.offer_eval import uplift_training_set
    _, y = uplift_training_set(small_shop)
    t = y.loc[y["treated"], "bought"].mean()
    c = y.loc[~y["treated"], "bought"].mean()
    assert t > c  # planted positive average uplift


def test_deal_seekers_buy_on_discount(small_shop, truth) -> None:
    lines = order_lines(small_shop)
    buys = lines[~lines["is_return"]]
    share = (buys["discount"] > 0).groupby(buys["customer_id"]).mean()
    deal = truth.index[truth["deal_seeker"]].intersection(share.index)
    other = truth.index[~truth["deal_seeker"]].intersection(share.index)
    assert share[deal].mean() > 0.8
    assert share[other].mean() < 0.5


def test_tastes_weekly_and_holiday_seasonality(small_shop, truth) -> None:
    lines = order_lines(small_shop)
    buys = lines[~lines["is_return"]]
    top = buys.groupby(["customer_id", "category"])["quantity"].sum().reset_index().sort_values("quantity")
    top = top.drop_duplicates("customer_id", keep="last").set_index("customer_id")["category"]
    agree = (top == truth["top_category"].reindex(top.index)).mean()
    assert agree > 0.5  # the planted favourite category dominates purchases
    per_day = buys.groupby(buys["ts"].dt.floor("D"))["order_id"].nunique()
    dec = per_day[(per_day.index.month == 12) & (per_day.index.day < 24)].mean()
    rest = per_day[per_day.index.month.isin([2, 3, 4, 5])].mean()
    assert dec > 1.3 * rest


def test_events_form_funnels(small_shop) -> None:
    ev = small_shop.events
    counts = ev["event_type"].value_counts()
    assert counts["view"] > counts["add_to_cart"] > counts["remove_from_cart"]
    o = small_shop.orders
    o = o[o["quantity"] > 0].head(200)
    viewed = set(zip(ev.loc[ev["event_type"] == "view", "customer_id"],
                     ev.loc[ev["event_type"] == "view", "product_id"], strict=True))
    assert np.mean([(c, p) in viewed for c, p in zip(o["customer_id"], o["product_id"], strict=True)]) > 0.95
