"""One uplift model fitted on the small simulated shop, shared by the offer tests of this package."""

from __future__ import annotations

import pandas as pd
import pytest

from features.customer import customer_features
from models.offers import OfferPolicy, parse_catalogue
from training.offer_eval import fit_uplift


@pytest.fixture(scope="package")
def policy_setup(small_shop):
    cat = parse_catalogue(small_shop.offers)
    model = fit_uplift(small_shop, seed=3)
    assert model is not None
    X = customer_features(small_shop, small_shop.end)
    X = X[X["n_orders"] > 0]
    churn = pd.Series(0.5, index=X.index)
    return OfferPolicy(cat, model), X, churn
