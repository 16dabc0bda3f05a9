"""Measured uplift with an interval, uplift by segment, Qini, and off-policy estimators on known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.offers import doubly_robust, ips, mean_ci, measure_uplift, qini, shared_control_weights


def test_measured_uplift_interval_covers_the_planted_effect() -> None:
    rng = np.random.default_rng(1)
    n = 20000
    t = rng.random(n) < 0.9
    y = rng.random(n) < np.where(t, 0.25, 0.20)
    m = measure_uplift(pd.DataFrame({"campaign_id": "a", "group": np.where(t, "treatment", "control"),
                                     "converted": y}))
    r = m.iloc[0]
    assert r["ci_low"] < 0.05 < r["ci_high"]
    assert r["ci_low"] > 0


def test_uplift_by_segment_finds_an_effect_planted_in_one_value_tier() -> None:
    from training.offer_eval import measure_uplift_by_segment
    rng = np.random.default_rng(5)
    n = 20000
    net = rng.gamma(1.0, 100.0, n)
    X = pd.DataFrame({"n_orders": 3, "net_revenue": net, "net_margin": np.nan, "discount_share": 0.0},
                     index=[f"C{i}" for i in range(n)])
    treated = rng.random(n) < 0.7
    high = net >= np.quantile(net, 0.8)
    p = 0.1 + np.where(treated & high, 0.15, 0.0)  # the offer works on the top value tier only
    y = pd.DataFrame({"campaign_id": "spring", "sent_at": pd.Timestamp("2025-03-01"), "treated": treated,
                      "group": np.where(treated, "treatment", "control"),
                      "converted": (rng.random(n) < p).astype(int)})
    res = measure_uplift_by_segment(X, y).set_index(["segment_kind", "segment"])
    hi, lo = res.loc[("value_tier", "high")], res.loc[("value_tier", "low")]
    assert hi["ci_low"] <= 0.15 <= hi["ci_high"] and hi["ci_low"] > 0.08
    assert lo["ci_low"] <= 0.0 <= lo["ci_high"]
    assert res.loc[("all", "all"), "uplift"] == pytest.approx(0.03, abs=0.015)
    assert hi["treated"] + hi["control"] == high.sum()


def test_qini_prefers_the_true_uplift_ranking() -> None:
    rng = np.random.default_rng(2)
    n = 20000
    u = rng.random(n) * 0.3
    t = rng.random(n) < 0.5
    y = rng.random(n) < 0.1 + t * u
    good = qini(u, t, y)["qini"]
    rand = qini(rng.random(n), t, y)["qini"]
    assert good > rand + 0.05


def test_a_shared_control_counts_once_in_the_pooled_qini() -> None:
    """Two offers share one control group: each control customer is a row of both offers. Weighted by
    ``shared_control_weights`` (1/2 each), the pooled Qini is the Qini of the table with each control
    customer once, up to the half-steps between the two copies (they carry the same score, so they sit side
    by side); unweighted, the duplicated controls give another value."""
    rng = np.random.default_rng(4)
    n = 3000
    arm = rng.integers(0, 3, n)  # 0: control of both offers, 1: offer A, 2: offer B
    u = rng.random(n)
    y = rng.random(n) < 0.05 + 0.2 * u * (arm > 0)
    once = qini(u, arm > 0, y)
    ctrl = np.flatnonzero(arm == 0)
    rows = np.concatenate([np.arange(n), ctrl])  # each control customer again, as the other offer's control
    sends = pd.DataFrame({"customer_id": rows, "sent_at": pd.Timestamp("2025-01-01"),
                          "treated": arm[rows] > 0, "offer_id": np.r_[np.where(arm == 2, "B", "A"),
                                                                      np.full(len(ctrl), "B")]})
    w = shared_control_weights(sends, "customer_id", "sent_at")
    assert set(np.unique(w[~sends["treated"].to_numpy()])) == {0.5}
    assert (w[sends["treated"].to_numpy()] == 1.0).all()
    pooled = qini(u[rows], arm[rows] > 0, y[rows], w)
    assert pooled["qini"] == pytest.approx(once["qini"], rel=1e-3)
    assert pooled["auuc"] == pytest.approx(once["auuc"], rel=1e-3)
    unweighted = qini(u[rows], arm[rows] > 0, y[rows])
    assert abs(unweighted["qini"] - once["qini"]) > 10 * abs(pooled["qini"] - once["qini"])


def test_off_policy_estimates_recover_a_known_policy_value() -> None:
    rng = np.random.default_rng(3)
    n, k = 40000, 5
    ctr = np.array([0.01, 0.02, 0.03, 0.04, 0.10])
    a = rng.integers(0, k, n)  # uniform logging policy
    r = (rng.random(n) < ctr[a]).astype(float)
    p = np.full(n, 1 / k)
    match = a == 4  # target: always the best arm, true value 0.10
    est_ips = mean_ci(ips(r, match, p))
    est_dr = mean_ci(doubly_robust(r, match.astype(float), p, ctr[a] * 0.9, np.full(n, 0.09)))
    for e in (est_ips, est_dr):
        assert e["ci_low"] < 0.10 < e["ci_high"]
    assert (est_dr["ci_high"] - est_dr["ci_low"]) <= (est_ips["ci_high"] - est_ips["ci_low"]) + 1e-9


def test_a_shared_control_is_counted_once_per_customer() -> None:
    # one campaign, two offers, one control arm written as one control row per offer (as the Hillstrom import)
    rng = np.random.default_rng(7)
    n = 3000
    arm = rng.integers(0, 3, n)  # 0: control, 1: offer a, 2: offer b
    y = (rng.random(n) < np.where(arm == 0, 0.10, 0.14)).astype(int)
    ids = np.array([f"C{i}" for i in range(n)])
    treated = pd.DataFrame({"customer_id": ids[arm > 0], "offer_id": np.where(arm[arm > 0] == 1, "a", "b"),
                            "group": "treatment", "converted": y[arm > 0]})
    ctrl = pd.DataFrame({"customer_id": ids[arm == 0], "group": "control", "converted": y[arm == 0]})
    shared = pd.concat([treated, ctrl.assign(offer_id="a"), ctrl.assign(offer_id="b")], ignore_index=True)
    shared = shared.assign(campaign_id="spring", sent_at=pd.Timestamp("2025-03-01"))
    once = pd.concat([treated, ctrl.assign(offer_id="none")]).assign(campaign_id="spring")
    m, ref = measure_uplift(shared).iloc[0], measure_uplift(once).iloc[0]
    assert m["control"] == (arm == 0).sum() == ref["control"]  # not twice the control arm
    assert m["treated"] == (arm > 0).sum()
    for col in ("uplift", "ci_low", "ci_high"):
        assert m[col] == pytest.approx(ref[col])
    # without the ids the duplicated rows count twice and the interval is too narrow: what the fix prevents
    blind = measure_uplift(shared.drop(columns=["customer_id"])).iloc[0]
    assert blind["control"] == 2 * m["control"]
    assert blind["ci_high"] - blind["ci_low"] < 0.9 * (m["ci_high"] - m["ci_low"])
    # per offer, each e-mail against the whole control arm, once
    per = measure_uplift(shared, ["campaign_id", "offer_id"]).set_index("offer_id")
    assert per["control"].tolist() == [(arm == 0).sum()] * 2
    assert per.loc["a", "treated"] == (arm == 1).sum()
