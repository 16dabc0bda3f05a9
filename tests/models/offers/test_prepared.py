"""Decisions from the prepared per-customer scores (:mod:`models.offers.prepared`) equal the policy's full
computation, value for value: offers, channels, expected values, groups, rules, details, reasons, triggers,
for one customer at a time and for batches, with contact history (cooldowns, caps, max per customer), capped
offers, opted-out customers, triggers, a channel asked for and an offer outside its validity window."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from features.schema import CHANNEL, CUSTOMER_ID, GROUP, OFFER_ID, SENT_AT
from models.offers import OfferPolicy, sends_to_record
from models.offers.prepared import PreparedPolicy


def full(policy: OfferPolicy, X, churn, seg, trig, opted, ids, now, **kw) -> list[dict]:
    dec = policy.decide(X.loc[ids], churn.reindex(ids), now, segments=seg.reindex(ids),
                        triggers=trig[trig[CUSTOMER_ID].isin(ids)], opted_out=opted.reindex(ids), **kw)
    return dec.to_dict("records")


def same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for k in x:
            vx, vy = x[k], y[k]
            if isinstance(vx, float) and np.isnan(vx):
                assert vy is None or (isinstance(vy, float) and np.isnan(vy)), (k, x, y)
            elif vx is None:
                assert vy is None or (isinstance(vy, float) and np.isnan(vy)), (k, x, y)
            else:
                assert vx == vy, (k, x, y)


@pytest.fixture(scope="module")
def setup(policy_setup, small_shop):
    policy, X, _ = policy_setup
    rng = np.random.default_rng(11)
    churn = pd.Series(rng.uniform(0, 1, len(X)), index=X.index)
    seg = pd.Series(rng.choice(["loyal", "at_risk", "new"], len(X)), index=X.index)
    opted = pd.Series(rng.random(len(X)) < 0.05, index=X.index)
    pick = X.index[rng.choice(len(X), 60, replace=False)]
    trig = pd.DataFrame({CUSTOMER_ID: np.repeat(pick, 2), "trigger": ["churn_risk", "dormancy"] * 60,
                         "at": small_shop.end, "detail": ""})
    return policy, X, churn, seg, trig, opted


def history(policy, X, ids, now, seed: int) -> pd.DataFrame:
    """Past sends of some customers: a policy decision committed at several times before ``now``."""
    rng = np.random.default_rng(seed)
    parts = []
    for days in (2, 10, 25):
        some = list(rng.choice(ids, max(1, len(ids) // 2), replace=False))
        dec = policy.decide(X.loc[some], pd.Series(0.5, index=some), now - pd.Timedelta(days=days),
                            campaign=f"past{days}")
        parts.append(sends_to_record(dec, f"past{days}", sent_at=now - pd.Timedelta(days=days)))
    h = pd.concat(parts, ignore_index=True)
    return h[[CUSTOMER_ID, OFFER_ID, SENT_AT, CHANNEL, GROUP]]


@pytest.mark.slow  # fits the uplift model on the small shop
def test_prepared_decisions_equal_the_policy(setup, small_shop) -> None:
    policy, X, churn, seg, trig, opted = setup
    prep = PreparedPolicy(policy, X, churn, seg, trig, opted)
    now = small_shop.end
    ids = list(X.index[:: max(1, len(X) // 300)][:300])
    hist = history(policy, X, ids, now, 3)
    caps = {policy.catalogue.offers[0].id: (None, 5), policy.catalogue.offers[1].id: (30.0, None)}
    for kw in ({}, {"history": hist}, {"campaign": "c7", "history": hist, "remaining": caps},
               {"channel": sorted({c for o in policy.catalogue.offers for c in o.channels})[0]}):
        same(full(policy, X, churn, seg, trig, opted, ids, now, **kw), prep.decide(ids, now, **kw))
        for cid in ids[:25]:  # one customer at a time, as the storefront asks
            same(full(policy, X, churn, seg, trig, opted, [cid], now, **kw), prep.decide([cid], now, **kw))
    # an offer outside its validity window, and a customer with no basket value (the batch's median fills it)
    o = policy.catalogue.offers[0]
    late = OfferPolicy(replace(policy.catalogue, offers=(replace(o, valid_to=now - pd.Timedelta(days=1)),
                                                         *policy.catalogue.offers[1:])), policy.uplift)
    X2 = X.copy()
    X2.loc[ids[0], "avg_order_value"] = np.nan
    prep2 = PreparedPolicy(late, X2, churn, seg, trig, opted)
    same(full(late, X2, churn, seg, trig, opted, ids[:50], now, history=hist), prep2.decide(ids[:50], now,
                                                                                           history=hist))
    dec = prep2.decide(ids[:50], now)
    assert any(d["rule"] == "not_eligible" or d["offer_id"] != "none" for d in dec)
