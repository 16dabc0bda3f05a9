"""Each campaign's purchase baseline (models.offers.campaign_baseline) on planted seasons, and the uplift
model's S-learner with it (real LightGBM): seasons are not learnt as offer effects, one campaign or one
shared control group changes nothing. An option, not the default: on the simulator it lowered the shipped
policy's value (bench/UPLIFT.md, "Each campaign's own baseline")."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.customer import CustomerModelConfig
from models.offers import UpliftModel
from models.offers.campaign_baseline import campaign_offsets, logit, sigmoid
from models.offers.uplift import (
    BASELINE_COLUMN,
    CAMPAIGN_BASELINE,
    CAMPAIGN_FEATURE,
    CAMPAIGN_SEGMENT_BASELINE,
    NO_BASELINE,
)


def test_offsets_measure_each_campaigns_season_net_of_its_customers() -> None:
    rng = np.random.default_rng(0)
    n = 30_000
    season = {"spring": -0.6, "summer": 0.0, "holiday": 0.6}
    camps, p_mix, t, y = [], [], [], []
    for c, s in season.items():
        # summer's customers are mostly lapsed (low P(order)): its rate is the lowest, its season average
        p = rng.uniform(0.01, 0.1, n) if c == "summer" else rng.uniform(0.05, 0.4, n)
        treated = rng.random(n) < 0.9
        bought = rng.random(n) < sigmoid(logit(p) + s)
        bought[treated] = True  # a huge offer effect: only the control rows may set the baseline
        camps += [c] * n
        p_mix.append(p), t.append(treated), y.append(bought)
    camp = np.array(camps, dtype=object)
    off = campaign_offsets(np.concatenate(p_mix), camp, np.concatenate(t), np.concatenate(y))
    assert set(off) == set(season)
    assert off["holiday"] - off["spring"] == pytest.approx(1.2, abs=0.15)
    assert off["summer"] == pytest.approx(0.0, abs=0.1)  # its low rate is its customers, not its season
    assert sum(off.values()) == pytest.approx(0.0, abs=1e-9)  # centred (equal rows per campaign)
    rate = {c: np.concatenate(y)[(camp == c) & ~np.concatenate(t)].mean() for c in season}
    assert rate["summer"] < rate["spring"]


def test_one_campaign_or_one_shared_control_group_gives_no_offsets() -> None:
    rng = np.random.default_rng(1)
    n = 2000
    p = rng.uniform(0.05, 0.3, n)
    t = rng.random(n) < 0.5
    y = rng.random(n) < p
    assert campaign_offsets(p, np.full(n, "only"), t, y) == {}
    assert campaign_offsets(p, np.full(n, "only"), t, y, segments=np.where(p > 0.2, "a", "b")) == {}
    # a shared control group: the same control customers are a control row of both e-mails' campaigns
    both = np.concatenate
    camp = both([np.full(n, "mens"), np.full(n, "womens")])
    t2 = both([t, t])
    y2 = both([np.where(t, rng.random(n) < p + 0.05, y), np.where(t, rng.random(n) < p + 0.02, y)])
    assert campaign_offsets(both([p, p]), camp, t2, y2) == {}


def test_small_noisy_control_groups_are_shrunk_towards_their_mean() -> None:
    rng = np.random.default_rng(2)
    camps, t, y, raw = [], [], [], {}
    for k in range(8):  # one true baseline, control groups of 60 rows: the rates differ by noise alone
        c = f"c{k}"
        treated = np.r_[np.zeros(60, bool), np.ones(540, bool)]
        bought = rng.random(600) < 0.15
        camps += [c] * 600
        t.append(treated), y.append(bought)
        raw[c] = logit(np.array([bought[~treated].mean()]))[0]
    off = campaign_offsets(np.full(4800, 0.15), np.array(camps, dtype=object), np.concatenate(t),
                           np.concatenate(y))
    spread = np.ptp(list(raw.values()))
    assert spread > 0.5  # the noise the shrinkage has to remove
    assert (np.ptp(list(off.values())) if off else 0.0) < 0.5 * spread


def _two_seasons(seed: int = 0, n: int = 6000) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray,
                                                         np.ndarray, np.ndarray]:
    """The same kind of customers sent ``pct10`` in a quiet spring and ``points`` at the holiday peak; both
    offers have one effect (+1.5 log-odds for deal seekers, none for the others), the seasons shift every
    customer's log-odds by -0.8 / +0.8."""
    rng = np.random.default_rng(seed)
    parts = []
    for camp, offer, shift in (("spring", "pct10", -0.8), ("holiday", "points", 0.8)):
        deal = rng.random(n) < 0.5
        X = pd.DataFrame({
            "n_orders": np.where(deal, rng.integers(1, 4, n), rng.integers(8, 20, n)),
            "discount_share": np.where(deal, rng.uniform(0.6, 1.0, n), rng.uniform(0, 0.05, n)),
            "recency_days": rng.uniform(1, 120, n),
        }, index=[f"{camp}{i}" for i in range(n)])
        t = rng.random(n) < 0.8
        z = np.where(deal, -2.0, -1.0) + shift + np.where(deal & t, 1.5, 0.0)
        bought = rng.random(n) < sigmoid(z)
        parts.append((X, np.full(n, offer, dtype=object), t, bought, np.full(n, camp, dtype=object), deal))
    X = pd.concat([p[0] for p in parts])
    offer, t, bought, camp, deal = (np.concatenate([p[k] for p in parts]) for k in range(1, 6))
    return X, offer, t, bought, camp, deal


@pytest.mark.slow  # fits S-learners with real LightGBM
def test_a_season_is_not_learnt_as_an_offers_effect() -> None:
    X, offer, t, bought, camp, deal = _two_seasons()
    cfg = CustomerModelConfig(n_estimators=100, learning_rate=0.03, num_leaves=7, min_child_samples=200,
                              seed=5)
    redeemed = t & bought
    plain = UpliftModel(cfg, n_models=2).fit(X, offer, t, bought, redeemed, campaigns=camp)
    based = UpliftModel(cfg, n_models=2, baseline=CAMPAIGN_BASELINE).fit(X, offer, t, bought, redeemed,
                                                                         campaigns=camp)
    assert plain.offsets_ == {} and plain.base_score_ is None
    assert based.offsets_["holiday"] - based.offsets_["spring"] == pytest.approx(1.6, abs=0.4)
    Xd = X[deal]

    def ratio(m: UpliftModel) -> float:  # the holiday offer's uplift over the spring one's, same customers
        return float(m.predict(Xd, "points")["uplift"].mean() / m.predict(Xd, "pct10")["uplift"].mean())

    # both offers work alike; without the baseline the holiday offer looks about twice as good
    assert ratio(plain) > 1.8  # 2.3-2.5 on data seeds 0-2
    assert 0.75 < ratio(based) < 1.4  # 1.04, 1.02, 1.27
    # predictions are for an average season: the deal seekers' P(order) without an offer near sigmoid(-2)
    p0 = based.predict(Xd, "pct10")["p_control"].mean()
    assert p0 == pytest.approx(float(sigmoid(np.array([-2.0]))[0]), abs=0.04)
    # and the uplift still tells deal seekers from the others
    up = based.predict(X, "pct10")["uplift"]
    assert up[deal].median() > 0.1 > up[~deal].abs().median()


@pytest.mark.slow  # fits S-learners with real LightGBM
def test_without_campaigns_or_with_one_the_baseline_changes_nothing() -> None:
    X, offer, t, bought, camp, _ = _two_seasons(seed=1, n=3000)
    cfg = CustomerModelConfig(n_estimators=40, learning_rate=0.05, num_leaves=7, min_child_samples=100,
                              seed=1)
    args = (X, offer, t, bought, t & bought)
    ref = UpliftModel(cfg, n_models=2, baseline=NO_BASELINE).fit(*args).predict_pairs(X, offer)
    for baseline in (CAMPAIGN_BASELINE, CAMPAIGN_FEATURE, CAMPAIGN_SEGMENT_BASELINE):
        for campaigns in (None, np.full(len(X), "one")):
            m = UpliftModel(cfg, n_models=2, baseline=baseline).fit(*args, campaigns=campaigns)
            assert m.offsets_ == {} and m.base_score_ is None
            pd.testing.assert_frame_equal(m.predict_pairs(X, offer), ref)
    # two campaigns: the feature variant sees the offset as a column, fitted on each row's, predicted at 0
    m = UpliftModel(cfg, n_models=2, baseline=CAMPAIGN_FEATURE).fit(*args, campaigns=camp)
    assert set(m.offsets_) == {"spring", "holiday"} and m.base_score_ is None
    assert BASELINE_COLUMN in m.outcome_.feature_names and BASELINE_COLUMN not in m.redeem_.feature_names
    assert (m._frame(X.head(3), offer[:3], 1.0)[BASELINE_COLUMN] == 0.0).all()
    # per discount-affinity segment: a shift per campaign and segment, the seasons alike in both here
    m = UpliftModel(cfg, n_models=1, baseline=CAMPAIGN_SEGMENT_BASELINE).fit(*args, campaigns=camp)
    segments = ("discount-responsive", "other")
    assert set(m.offsets_) == {f"{c}|{g}" for c in ("spring", "holiday") for g in segments}
    for g in segments:
        assert m.offsets_[f"holiday|{g}"] - m.offsets_[f"spring|{g}"] == pytest.approx(1.6, abs=0.5)
    with pytest.raises(ValueError, match="baseline 'season' is not one of"):
        UpliftModel(baseline="season")
    with pytest.raises(ValueError, match="campaigns has 3 rows"):
        UpliftModel(cfg, n_models=1, baseline=CAMPAIGN_BASELINE).fit(*args, campaigns=camp[:3])
