"""The uplift model on a known answer (sure things vs deal seekers), bagging over seeds, the prior for new
offers, and the uplift training rows built from the offer log."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from models.customer import CustomerModelConfig
from models.metrics import auc
from models.offers import OfferPolicy, UpliftModel, parse_catalogue
from tests.models.offers.data import GOOD, synthetic_campaigns
from training.offer_eval import fit_uplift, uplift_training_set


@pytest.mark.slow  # fits uplift models on a simulated shop
def test_sure_things_get_no_discount() -> None:
    X, t, bought, redeemed, deal = synthetic_campaigns()
    cat = parse_catalogue(GOOD)
    model = UpliftModel().fit(X, ["pct10"] * len(X), t, bought, redeemed)
    up = model.predict(X, "pct10")
    assert up.loc[~deal, "uplift"].abs().median() < 0.05
    assert up.loc[deal, "uplift"].median() == pytest.approx(0.35, abs=0.08)
    policy = OfferPolicy(cat, model)
    churn = pd.Series(0.2, index=X.index)
    dec = policy.decide(X, churn, pd.Timestamp("2025-06-01"), campaign="known-answer")
    treated = dec[dec["group"] == "treatment"].set_index("customer_id")
    sure_ids = X.index[~deal].intersection(treated.index)
    deal_ids = X.index[deal].intersection(treated.index)
    assert (treated.loc[sure_ids, "offer_id"] == "none").mean() > 0.95  # would buy anyway: no discount
    assert (treated.loc[deal_ids, "offer_id"] == "pct10").mean() > 0.95
    assert "discount-responsive" in treated.loc[deal_ids[0], "reason"]
    assert (treated.loc[sure_ids, "rule"] == "not_worth_cost").mean() > 0.95  # it is really the reason


@pytest.mark.slow  # fits uplift models on a simulated shop
def test_bagged_uplift_averages_its_seeds_and_ranks_better_than_its_worst() -> None:
    X, t, bought, redeemed, deal = synthetic_campaigns()
    cfg = CustomerModelConfig(n_estimators=100, learning_rate=0.03, num_leaves=7, min_child_samples=200,
                              seed=7)
    ids = ["pct10"] * len(X)
    bag = UpliftModel(cfg, n_models=3).fit(X, ids, t, bought, redeemed)
    singles = [UpliftModel(replace(cfg, seed=7 + i), n_models=1).fit(X, ids, t, bought, redeemed)
               for i in range(3)]
    F = bag._frame(X, ids, 1.0)
    p1, p0 = bag._probabilities(F)
    parts = [s._probabilities(F) for s in singles]
    assert np.allclose(p1, np.mean([p[0] for p in parts], axis=0))
    assert np.allclose(p0, np.mean([p[1] for p in parts], axis=0))
    assert not np.allclose(parts[0][0], parts[1][0])  # the seeds do differ
    # the averaged uplift separates responsive from sure-thing customers at least as well as the worst fit
    sep = [auc(deal, m.predict(X, "pct10")["uplift"]) for m in singles]
    assert auc(deal, bag.predict(X, "pct10")["uplift"]) >= min(sep) - 1e-9
    with pytest.raises(ValueError, match="n_models must be at least 1"):
        UpliftModel(cfg, n_models=0).fit(X, ids, t, bought, redeemed)


def test_the_public_design_matrix_predicts_like_the_model() -> None:
    """UpliftModel reads the outcome model through ChurnModel's public design_matrix / predict_matrix."""
    X, t, bought, redeemed, _ = synthetic_campaigns(n=2000)
    model = UpliftModel(n_models=1).fit(X, ["pct10"] * len(X), t, bought, redeemed)
    F = model._frame(X, ["pct10"] * len(X), 1.0)
    m = model.outcome_
    assert m is not None and m.feature_names == m.columns_ and "treated" in m.feature_names
    M = m.design_matrix(F)
    assert M.shape == (len(X), len(m.feature_names))
    assert np.array_equal(m.predict_matrix(M), m.predict(F).to_numpy())
    with pytest.raises(ValueError, match="expected a design matrix with"):
        m.predict_matrix(M[:, 1:])


def test_uplift_rows_are_built_once_and_filtered_like_a_fresh_build(small_shop) -> None:
    first = small_shop.offer_log["sent_at"].min()
    cut = first + (small_shop.offer_log["sent_at"].max() - first) / 2
    Xb, yb = uplift_training_set(small_shop, before=cut)
    Xa, ya = uplift_training_set(small_shop, start=cut)
    Xall, yall = uplift_training_set(small_shop)
    assert len(yb) and len(ya) and len(yb) + len(ya) <= len(yall)
    assert (pd.to_datetime(yb["sent_at"]) + pd.Timedelta(days=14) <= cut).all()
    assert (ya["sent_at"] >= cut).all()
    cached = small_shop.__dict__["_uplift_rows"][14]
    uplift_training_set(small_shop, before=cut)
    assert small_shop.__dict__["_uplift_rows"][14] is cached and len(cached[2]) == len(yall)  # built once
    # the same rows as a build over a shop holding only the offer_log rows before the cut
    ol = small_shop.offer_log
    part = replace(small_shop, offer_log=ol[ol["sent_at"] + pd.Timedelta(days=14) <= cut])
    part.__dict__.pop("_uplift_rows", None)
    Xp, yp = uplift_training_set(part)
    key = ["sent_at", "customer_id", "offer_id"]
    pd.testing.assert_frame_equal(yp.sort_values(key).reset_index(drop=True),
                                  yb.sort_values(key).reset_index(drop=True))
    # a cutoff before any campaign's window has ended: no rows (it raised 'No objects to concatenate'), no
    # model
    X0, y0 = uplift_training_set(small_shop, before=first)
    assert len(y0) == 0 and fit_uplift(small_shop, first) is None


@pytest.mark.slow  # the uplift model fitted on the small simulated shop (policy_setup)
def test_offer_without_history_uses_the_prior(policy_setup) -> None:
    policy, X, _ = policy_setup
    p = policy.uplift.predict(X.head(3), "brand-new-offer")
    assert p["prior"].all() and (p["uplift"] == 0.01).all() and (p["p_redeem"] == 0.05).all()


def test_two_models_ddr_learner_on_the_known_answer() -> None:
    X, t, bought, redeemed, deal = synthetic_campaigns()
    model = UpliftModel(learner="two_models_ddr", n_models=2).fit(X, ["pct10"] * len(X), t, bought, redeemed)
    assert model.scale_ == {} and set(model.treated_) == {"pct10"} and len(model.control_) == 2
    up = model.predict(X, "pct10")
    assert up.loc[~deal, "uplift"].abs().median() < 0.05
    assert up.loc[deal, "uplift"].median() == pytest.approx(0.35, abs=0.08)
    assert auc(deal, up["uplift"].to_numpy()) > 0.9
    np.testing.assert_allclose(up["p_treated"] - up["p_control"], up["uplift"])
    assert up["prior"].sum() == 0 and model.predict(X, "new_offer")["prior"].all()
    with pytest.raises(ValueError, match="learner 't' is not one of"):
        UpliftModel(learner="t")
