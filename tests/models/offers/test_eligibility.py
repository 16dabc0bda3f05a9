"""Eligibility and contact rules name the rule that fails; caps and cooldowns match a plain reference; the
control group is persistent."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.offers import (
    ContactRules,
    contact_blocks,
    contact_history,
    customer_blocks,
    eligibility_failures,
    eligible,
    in_control_group,
    parse_catalogue,
)
from models.offers.eligibility import OK, contact_history_of


def test_control_group_is_deterministic_and_sized() -> None:
    ids = [f"C{i}" for i in range(20000)]
    a = in_control_group(ids, "spring", 0.1)
    assert np.array_equal(a, in_control_group(ids, "spring", 0.1))
    assert 0.09 < a.mean() < 0.11
    b = in_control_group(ids, "autumn", 0.1)
    assert (a != b).mean() > 0.1  # membership is per campaign


def test_each_failing_customer_is_told_the_first_rule_that_failed() -> None:
    cat = parse_catalogue({"offers": [{
        "id": "vip", "kind": "percent_off", "value": 10, "channels": ["email"],
        "cost_per_send": {"email": 0.01},
        "valid_from": "2025-01-01", "valid_to": "2025-12-31",
        "eligibility": {"min_orders": 2, "churn_risk": [0.5, 1.0], "regions": ["north"]}}]})
    o = cat.get("vip")
    X = pd.DataFrame({"n_orders": [1, 5, 5, 5, 1], "region": ["north", "north", "south", "north", "south"],
                      "recency_days": 10.0}, index=["few", "ok", "south", "calm", "few_calm_south"])
    churn = pd.Series([0.9, 0.9, 0.9, 0.1, 0.1], index=X.index)
    now = pd.Timestamp("2025-06-01")
    got = eligibility_failures(o, X, churn, None, now)
    assert got.tolist() == ["min_orders", OK, "regions", "churn_risk", "min_orders"]
    assert eligible(o, X, churn, None, now).tolist() == [False, True, False, False, False]
    assert set(eligibility_failures(o, X, churn, None, pd.Timestamp("2024-06-01"))) == {"valid_from"}
    assert set(eligibility_failures(o, X, churn, None, pd.Timestamp("2026-06-01"))) == {"valid_to"}


def test_opted_out_and_recent_buyers_are_blocked_by_name() -> None:
    X = pd.DataFrame({"recency_days": [1.0, 1.0, 30.0, np.nan]}, index=["a", "b", "c", "d"])
    opted = pd.Series([True, False], index=["a", "c"])
    got = customer_blocks(X, ContactRules(recent_purchase_days=3), opted)
    assert got.tolist() == ["opted_out", "recent_purchase", OK, OK]


@pytest.mark.slow  # the uplift model fitted on the small simulated shop
def test_contact_rules_caps_and_opt_out(policy_setup, small_shop) -> None:
    policy, X, churn = policy_setup
    now = small_shop.end
    cid = X.index[:20]
    hist = pd.DataFrame({"customer_id": np.repeat(cid, 2), "offer_id": "pct10", "channel": "email",
                         "group": "treatment", "sent_at": now - pd.Timedelta(days=2)})
    cand = policy.score(X.loc[cid], churn, now, history=hist)
    assert not (cand["channel"] == "email").any() or not (cand["offer_id"] == "pct10").any()
    opted = pd.Series(True, index=cid)
    assert len(policy.score(X.loc[cid], churn, now, opted_out=opted)) == 0


def _capped_reference(rules, o, index, now, history, channel) -> np.ndarray:
    """Caps and cooldowns written plainly with pandas (the earlier implementation), to check the fast one:
    the code of the rule that bars each row (per-customer maximum, then cooldown, then the contact cap)."""
    h = history[(history["sent_at"] <= now) & (history["group"] == "treatment")]
    same = h[h["offer_id"] == o.id]
    n_same = same.groupby("customer_id").size().reindex(index).fillna(0).to_numpy()
    last_same = same.groupby("customer_id")["sent_at"].max().reindex(index)
    cool = ((now - last_same) < pd.Timedelta(days=o.cooldown_days)).fillna(False).to_numpy(bool)
    recent = h[(h["sent_at"] > now - pd.Timedelta(days=rules.period_days)) & (h["channel"] == channel)]
    n_recent = recent.groupby("customer_id").size().reindex(index).fillna(0).to_numpy()
    return np.select([n_same >= o.max_per_customer, cool, n_recent >= rules.max_contacts],
                     ["max_per_customer", "cooldown", "contact_cap"], OK)


@pytest.mark.slow  # the uplift model fitted on the small simulated shop
@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.sampled_from(["pct10", "winback20", "other"]),
                          st.sampled_from(["email", "sms"]), st.sampled_from(["treatment", "control"]),
                          st.one_of(st.integers(-70, 5),  # and exactly on the cooldown and period lines:
                                    st.sampled_from([-60, -30, -21, -14, 0]))), max_size=30),
       st.lists(st.integers(0, 8), min_size=1, max_size=8))
def test_caps_and_cooldowns_match_a_plain_reference(policy_setup, rows, asked) -> None:
    """Per offer and channel, the vectorised caps agree with the plain pandas version on random contact
    histories (sends in the future, control sends, customers not asked about, repeated customers)."""
    policy, _, _ = policy_setup
    now = pd.Timestamp("2025-06-01")
    hist = pd.DataFrame(rows, columns=["c", "offer_id", "channel", "group", "days"])
    hist = pd.DataFrame({"customer_id": "C" + hist["c"].astype(str), "offer_id": hist["offer_id"],
                         "channel": hist["channel"], "group": hist["group"],
                         "sent_at": now + pd.to_timedelta(hist["days"], unit="D")})
    index = pd.Index([f"C{i}" for i in asked])
    contacts = contact_history(hist, index, now)
    plain = list(zip(hist["customer_id"], hist["offer_id"], hist["channel"], hist["group"],
                     [t.to_pydatetime() for t in hist["sent_at"]], strict=True))
    from_rows = contact_history_of(plain, index.tolist(), now)  # the decision log in memory's rows
    for o in policy.catalogue.offers:
        for ch in ("email", "sms"):
            got = contact_blocks(o, now, contacts, ch, policy.contact, len(index))
            want = (_capped_reference(policy.contact, o, index, now, hist, ch) if len(hist)
                    else np.full(len(index), OK))
            assert got.tolist() == want.tolist(), (o.id, ch)
            assert contact_blocks(o, now, from_rows, ch, policy.contact, len(index)).tolist() == got.tolist()
