"""The DR- and R-learner of :class:`UpliftModel` (pseudo-outcomes regressed on the features) on a known
answer: a randomised campaign (80% treated, as a campaign with a 20% control group) whose offer adds a
purchase probability that grows with one feature. They must fit, predict finite uplift at the measured level,
and rank held-out customers by the planted effect much better than random; and the pseudo-outcomes must be
unbiased."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from models.offers import UpliftModel
from models.offers.effect_regression import customer_folds, propensity, pseudo_outcomes
from models.offers.uplift import DR_LEARNER, R_LEARNER


def planted_campaign(n: int = 12_000, seed: int = 0
                     ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Features, treated flag (80% at random), bought, and the true effect of the offer: ``0.2 * affinity``
    (0 to 20 points), with a base rate of 10-30% driven by another feature."""
    rng = np.random.default_rng(seed)
    affinity, activity = rng.random(n), rng.random(n)
    X = pd.DataFrame({"affinity": affinity, "frequency": activity,
                      "noise": rng.normal(size=n)}, index=[f"c{i}" for i in range(n)])
    effect = 0.2 * affinity
    t = rng.random(n) < 0.8
    bought = rng.random(n) < 0.1 + 0.2 * activity + np.where(t, effect, 0.0)
    return X, t, bought, effect


@pytest.mark.parametrize("learner", [DR_LEARNER, R_LEARNER])
def test_effect_learner_ranks_customers_by_the_planted_effect(learner: str) -> None:
    X, t, bought, effect = planted_campaign()
    train = np.arange(len(X)) % 2 == 0
    test = ~train
    ids = np.full(train.sum(), "pct10", dtype=object)
    model = UpliftModel(n_models=2, learner=learner).fit(X[train], ids, t[train], bought[train],
                                                         np.zeros(train.sum()))
    out = model.predict(X[test], "pct10")
    up = out["uplift"].to_numpy()
    assert np.isfinite(up).all() and np.isfinite(out["p_control"]).all()
    assert np.allclose(out["p_treated"], out["p_control"] + out["uplift"])
    assert up.mean() == pytest.approx(effect[test].mean(), abs=0.03)  # the level is the measured effect
    rho = pd.Series(up).corr(pd.Series(effect[test]), method="spearman")
    rng = np.random.default_rng(1)
    random = [pd.Series(rng.random(test.sum())).corr(pd.Series(effect[test]), method="spearman")
              for _ in range(20)]
    assert max(abs(r) for r in random) < 0.05  # random rankings fail the bound below
    assert rho > 0.3  # seeds 0-2: 0.42-0.63
    top = up >= np.quantile(up, 0.8)  # the fifth it would send to gains far more than the average customer
    assert effect[test][top].mean() > 1.25 * effect[test].mean()  # seeds 0-2: 1.38-1.52; random 1.0
    again = pickle.loads(pickle.dumps(model)).predict(X[test], "pct10")  # the bundle's format
    assert np.array_equal(again["uplift"].to_numpy(), up)


def test_pseudo_outcomes_average_to_the_effect_and_refuse_a_campaign_without_control() -> None:
    rng = np.random.default_rng(3)
    n = 200_000
    t = rng.random(n) < 0.9
    y = (rng.random(n) < np.where(t, 0.25, 0.15)).astype(float)
    e = propensity(np.full(n, "a", dtype=object), t)
    assert e[0] == pytest.approx(0.9, abs=0.01)
    wrong = np.full(n, 0.2)  # outcome models that are wrong: the DR pseudo-outcome is still unbiased
    target, weight = pseudo_outcomes("dr", t, y, e, wrong, wrong)
    assert np.average(target, weights=weight) == pytest.approx(0.10, abs=0.01)
    target, weight = pseudo_outcomes("r", t, y, e, np.full(n, 0.25), np.full(n, 0.15))
    assert np.average(target, weights=weight) == pytest.approx(0.10, abs=0.01)
    with pytest.raises(Exception, match="no offer has both"):
        pseudo_outcomes("dr", np.ones(10), np.ones(10), np.ones(10), np.ones(10), np.ones(10))


def test_customer_folds_keep_a_customer_in_one_fold() -> None:
    index = pd.Index(["a", "b", "a", "c", "b", "a"] * 50)
    folds = customer_folds(index, 2, seed=0)
    per_customer = pd.Series(folds, index=index).groupby(level=0).nunique()
    assert (per_customer == 1).all()
