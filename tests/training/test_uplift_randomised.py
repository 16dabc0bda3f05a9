"""Randomised-campaign uplift evaluation: metrics against scikit-uplift and exact identities, learners on a
campaign with a planted effect, the campaign read from the data contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.io import load_shop
from training.uplift_learners import CONTROL, Base, SLearner, peers
from training.uplift_randomised import (
    Campaign,
    budget_policy,
    campaign_from_shop,
    evaluate_randomised,
    policy_per_email,
    qini_auuc,
    stratified_halves,
)

OFFERS = ["a", "b"]


def planted(n: int = 9000, seed: int = 0) -> Campaign:
    """Offer a works only for segment 'x', offer b only for flagged customers; spend 100 per sale."""
    rng = np.random.default_rng(seed)
    seg = rng.choice(["x", "y", "z"], n)
    flag = rng.random(n) < 0.3
    arm = rng.choice([CONTROL, *OFFERS], n)
    p = 0.05 + 0.15 * ((arm == "a") & (seg == "x")) + 0.15 * ((arm == "b") & flag)
    conv = (rng.random(n) < p).astype(float)
    X = pd.DataFrame(
        {"attr_seg": pd.Categorical(seg), "attr_flag": flag.astype(float), "attr_noise": rng.normal(size=n)},
        index=pd.Index([f"c{i}" for i in range(n)], name="customer_id"),
    )
    return Campaign(X, arm.astype(object), {"conversion": conv, "spend": conv * 100.0}, OFFERS, 0.5,
                    {"a": 0.1, "b": 0.1})


# inside scikit-uplift
@pytest.mark.filterwarnings("ignore:Function stable_cumsum is deprecated:FutureWarning")
def test_qini_matches_scikit_uplift_curve_and_weights_of_one_change_nothing() -> None:
    from sklift.metrics import qini_curve
    rng = np.random.default_rng(1)
    n = 500
    score, t, y = rng.normal(size=n), rng.random(n) < 0.5, (rng.random(n) < 0.2).astype(float)
    k, q = qini_curve(y, score, t.astype(int))
    assert (k == np.arange(n + 1)).all()  # distinct scores: a point per customer
    expected = (q[1:] - q[-1] * k[1:] / n).sum() / n / n
    got = qini_auuc(score, t, y)
    assert got["qini"][0] == pytest.approx(expected)
    assert got["qini_norm"][0] == pytest.approx(expected * n / abs(q[-1]))
    again = qini_auuc(score, t, y, np.ones((3, n)))
    np.testing.assert_allclose(again["qini"], got["qini"][0])
    np.testing.assert_allclose(again["auuc"], got["auuc"][0])


def test_qini_of_the_true_effect_beats_random() -> None:
    c = planted()
    m = (c.arm == "a") | (c.arm == CONTROL)
    truth = (c.X["attr_seg"] == "x").to_numpy(float)[m] + np.random.default_rng(0).normal(0, 0.01, m.sum())
    noise = np.random.default_rng(1).normal(size=m.sum())
    y, t = c.outcomes["conversion"][m], c.arm[m] == "a"
    # perfect: Q per customer rises to 0.5 * 1/3 * 0.15 = 0.025 over the first third, then stays: area 0.025 *
    # (1/6 + 2/3)
    # minus the diagonal 0.025 / 2 = 0.0083
    assert qini_auuc(truth, t, y)["qini"][0] > 0.006 > 0.003 > abs(qini_auuc(noise, t, y)["qini"][0])


def test_everyone_policy_equals_the_difference_of_arm_means() -> None:
    c = planted()
    spend, arm = c.outcomes["spend"], c.arm
    P = np.full((len(arm), 2), 0.5)
    got = policy_per_email(P, arm, spend, OFFERS, 0.5, {"a": 0.1, "b": 0.3})[0]
    ctrl = spend[arm == CONTROL].mean()
    expected = 0.5 * np.mean([spend[arm == o].mean() - ctrl for o in OFFERS]) - 0.2
    assert got == pytest.approx(expected)
    assert np.isnan(
        policy_per_email(np.zeros((len(arm), 2)), arm, spend, OFFERS, 0.5, {"a": 0.1, "b": 0.1})[0]
    )


def test_budget_policy_sends_the_best_offer_to_the_top_share() -> None:
    value = np.array([[1.0, 2.0], [-1.0, -2.0], [0.5, 0.1], [3.0, 0.0]])
    P = budget_policy(value, 0.5)
    np.testing.assert_array_equal(P, [[0, 1], [0, 0], [0, 0], [1, 0]])
    np.testing.assert_array_equal(budget_policy(value, None).sum(1), [1, 0, 1, 1])  # positive margin only


def test_stratified_halves_split_each_arm_in_two() -> None:
    arm = np.array([CONTROL] * 11 + ["a"] * 20 + ["b"] * 7, dtype=object)
    tr, te = stratified_halves(arm, 3)
    assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == len(arm)
    assert [int((arm[tr] == a).sum()) for a in (CONTROL, "a", "b")] == [5, 10, 3]
    assert not np.array_equal(tr, stratified_halves(arm, 4)[0])


@pytest.mark.parametrize("treatment", ["offer_id", "flags"])
def test_s_learner_finds_who_each_offer_works_for_and_is_calibrated(treatment: str) -> None:
    c = planted(12000)
    tr, te = stratified_halves(c.arm, 0)
    y = c.outcomes["conversion"]
    s = SLearner(Base(seed=1), n_models=2, treatment=treatment).fit(c.X.iloc[tr], c.arm[tr], y[tr])
    U = s.predict(c.X.iloc[te])
    seg_x = (c.X["attr_seg"].iloc[te] == "x").to_numpy()
    flag = c.X["attr_flag"].iloc[te].to_numpy() > 0
    assert U.loc[seg_x, "a"].mean() > 2 * U.loc[~seg_x, "a"].mean()
    assert U.loc[flag, "b"].mean() > 2 * U.loc[~flag, "b"].mean()
    for o in OFFERS:  # the mean predicted effect is scaled to the measured one
        m = (c.arm[tr] == o) | (c.arm[tr] == CONTROL)
        ate = y[tr][c.arm[tr] == o].mean() - y[tr][c.arm[tr] == CONTROL].mean()
        assert s.predict(c.X.iloc[tr][m])[o].mean() == pytest.approx(ate, rel=1e-6)


@pytest.mark.slow
def test_evaluation_ranks_planted_effects_above_random_with_intervals() -> None:
    c = planted(9000)
    learners = {"s_learner": lambda s: SLearner(Base(seed=s), n_models=1),
                "sklift_two_models": lambda s: peers(Base(seed=s), s)["sklift_two_models"],
                "random": lambda s: peers(Base(seed=s), s)["random"]}
    r = evaluate_randomised(c, learners, seeds=(0, 1), budgets=(0.25,), n_boot=50, outcomes=("conversion",))
    t = r.table.set_index(["outcome", "learner", "metric", "target"])
    for name in ("s_learner", "sklift_two_models"):
        row = t.loc[("conversion", name, "qini_conversion", "mean")]
        assert row["ci_low"] <= row["estimate"] <= row["ci_high"] and row["seeds"] == 2
        d, lo, hi = r.paired(("conversion", name, "policy", "25%"), ("baseline",
                                                                     "everyone", "policy", "100%"))
        assert lo > 0  # targeting the planted segments beats e-mailing everyone
        assert row["estimate"] > t.loc[("conversion", "random", "qini_conversion",
                                        "mean"), "estimate"] + 0.005


def test_campaign_from_the_contract_with_a_shared_control(tmp_path: Path) -> None:
    import gzip

    from features.importers import import_hillstrom
    from tests.features.test_import_hillstrom import EXCERPT
    src = tmp_path / "hillstrom.csv.gz"
    with gzip.open(src, "wt", newline="") as f:
        f.write(EXCERPT)
    import_hillstrom(src, tmp_path / "shop")
    c = campaign_from_shop(load_shop(tmp_path / "shop"))
    assert c.X.index.tolist() == ["H00001", "H00002", "H00003", "H00004", "H00005"]
    assert c.arm.tolist() == ["hillstrom_womens", CONTROL, "hillstrom_womens",
                              "hillstrom_mens", "hillstrom_mens"]
    assert c.outcomes["spend"].tolist() == [0.0, 29.99, 120.5, 0.0, 0.0]
    assert c.outcomes["conversion"].tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]
    assert c.X.loc["H00002", "attr_mens"] == 1.0 and c.X.loc["H00005", "attr_recency"] == 1.0
    assert c.send_cost == {"hillstrom_mens": 0.01, "hillstrom_womens": 0.01} and c.margin_rate == 0.45
    log = pd.read_parquet(tmp_path / "shop" / "offer_log.parquet")
    two = pd.concat([log, log.iloc[[0]].assign(offer_id="hillstrom_mens")])  # H00001 sent both e-mails
    two.to_parquet(tmp_path / "shop" / "offer_log.parquet")
    with pytest.raises(ValueError, match="1 customers received more than one offer"):
        campaign_from_shop(load_shop(tmp_path / "shop"))
    both = pd.concat([log, log.iloc[[0]].assign(group="control")])  # H00001 treated and in the control group
    both.to_parquet(tmp_path / "shop" / "offer_log.parquet")
    with pytest.raises(ValueError, match="1 customers are in a treatment and a control group"):
        campaign_from_shop(load_shop(tmp_path / "shop"))


@pytest.mark.parametrize("learner", ["s_learner", "two_models_ddr", "dr_learner", "r_learner"])
def test_production_uplift_model_finds_the_planted_effects_and_is_not_fitted_on_spend(learner: str) -> None:
    from training.uplift_learners import Production
    c = planted()
    tr, te = stratified_halves(c.arm, 0)
    m = Production(Base(seed=1), learner, n_models=1)
    m.fit(c.X.iloc[tr], c.arm[tr], c.outcomes["conversion"][tr])
    U = m.predict(c.X.iloc[te])
    seg, flag = c.X["attr_seg"].iloc[te].astype(str), c.X["attr_flag"].iloc[te] == 1.0
    assert U.loc[seg == "x", "a"].mean() > U.loc[seg != "x", "a"].mean() + 0.08  # the categorical attribute
    assert U.loc[flag, "b"].mean() > U.loc[~flag, "b"].mean() + 0.08
    with pytest.raises(ValueError, match="0/1 outcome"):
        Production(Base(seed=1), learner, n_models=1).fit(c.X.iloc[tr], c.arm[tr], c.outcomes["spend"][tr])
    r = evaluate_randomised(c, {"production": lambda s: Production(Base(seed=s), learner, n_models=1)},
                            seeds=(0,), budgets=(0.5,), n_boot=5)
    fitted_on = set(r.table.loc[r.table["learner"] == "production", "outcome"])
    assert fitted_on == {"conversion"}  # skipped on spend


def test_the_train_config_names_the_uplift_learner() -> None:
    from training.config import TrainConfig, fingerprint, with_horizon
    cfg = with_horizon(TrainConfig(uplift_learner="two_models_ddr"), 60, 3)
    assert cfg.uplift_learner == "two_models_ddr" == cfg.to_params()["uplift_learner"]
    assert fingerprint("data", cfg) != fingerprint("data", with_horizon(TrainConfig(), 60, 3))
    with pytest.raises(ValueError, match="uplift_learner 't' is not one of"):
        TrainConfig(uplift_learner="t")
