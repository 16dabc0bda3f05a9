"""Customer attributes as model features and in offer rules: a small simulated shop whose customers table
carries two declared attributes taken from the simulator's hidden truth (price sensitivity as a band, the
deal-seeker flag). They drive who responds to offers, so the uplift model must use them; churn and value see
them too, and an eligibility rule on one filters the customers an offer may go to."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features import schema
from features.customer import customer_features
from features.customer_labels import stacked_training_set, training_cutoffs
from features.exceptions import CatalogueError
from features.io import Shop, load_shop
from models.customer import ChurnModel, CustomerModelConfig, ValueModel
from models.offers import (
    OfferPolicy,
    UpliftModel,
    check_attribute_rules,
    eligibility_failures,
    parse_catalogue,
)
from training.offer_eval import measure_uplift_by_segment, uplift_training_set

BAND, DEAL = "price_band", "deal_seeker"
A_BAND, A_DEAL = f"{schema.ATTRIBUTE_PREFIX}{BAND}", f"{schema.ATTRIBUTE_PREFIX}{DEAL}"


@pytest.fixture(scope="module")
def attr_shop(small_shop_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Shop:
    d = tmp_path_factory.mktemp("attr_shop")
    shutil.copytree(small_shop_dir, d, dirs_exist_ok=True)
    truth = pd.read_parquet(small_shop_dir / "truth" / "customers.parquet").set_index(schema.CUSTOMER_ID)
    c = pd.read_parquet(d / "customers.parquet")
    t = truth.reindex(c[schema.CUSTOMER_ID])
    sens = t["price_sensitivity"].to_numpy()
    c[BAND] = np.select([sens < 0.33, sens < 0.66], ["low", "mid"], "high")
    c[DEAL] = t["deal_seeker"].to_numpy()
    c.to_parquet(d / "customers.parquet")
    (d / schema.ATTRIBUTES_FILE).write_text(f"{BAND}: categorical\n{DEAL}: boolean\n")
    shop = load_shop(d)
    assert shop.attributes == {BAND: "categorical", DEAL: "boolean"}
    return shop


@pytest.fixture(scope="module")
def uplift(attr_shop: Shop) -> UpliftModel:
    Xu, yu = uplift_training_set(attr_shop)
    up = UpliftModel(CustomerModelConfig(n_estimators=100, learning_rate=0.03, num_leaves=7,
                                         min_child_samples=200, seed=3), n_models=1)
    return up.fit(Xu, yu[schema.OFFER_ID], yu["treated"], yu["bought"], yu["redeemed"])


def test_customer_features_carry_the_attributes(attr_shop: Shop) -> None:
    X = customer_features(attr_shop, attr_shop.end)
    assert isinstance(X[A_BAND].dtype, pd.CategoricalDtype)
    assert list(X[A_BAND].cat.categories) == ["high", "low", "mid"]
    c = attr_shop.customers.set_index(schema.CUSTOMER_ID)
    assert (X[A_BAND].astype(str) == c[BAND].reindex(X.index)).all()
    assert (X[A_DEAL] == c[DEAL].reindex(X.index).astype(float)).all()
    some = X.index[:7]  # a subset of customers gets the same rows
    sub = customer_features(attr_shop, attr_shop.end, customers=some)
    pd.testing.assert_frame_equal(sub[[A_BAND, A_DEAL]], X.loc[some, [A_BAND, A_DEAL]])


def test_churn_value_and_uplift_models_use_the_attributes(attr_shop: Shop, uplift: UpliftModel) -> None:
    cfg = CustomerModelConfig(n_estimators=150, learning_rate=0.05, seed=3)
    cuts = training_cutoffs(attr_shop, attr_shop.end, cfg.horizon_days, 3, 30)
    X, y = stacked_training_set(attr_shop, cuts, cfg.horizon_days)
    churn = ChurnModel(cfg).fit(X, y["churn"])
    value = ValueModel(cfg).fit(X, y["future_net"])
    for m in (churn, value):
        assert A_BAND in m.categories_  # a category, not a number read as NaN
        assert m.feature_importance()[[A_BAND, A_DEAL]].sum() > 0
    # serving's path for a known customer: the features at the data end, one customer at a time
    now = customer_features(attr_shop, attr_shop.end)
    one = now[now["n_orders"] > 0].iloc[[0]]
    assert churn.explain(one, top=len(churn.feature_names))[str(one.index[0])]  # explains with the attributes
    M = churn.design_matrix(one)
    code = churn.categories_[A_BAND].index(str(one[A_BAND].iloc[0]))
    assert M[0, churn.feature_names.index(A_BAND)] == code

    up = uplift
    assert up.outcome_ is not None
    gain = up.outcome_.feature_importance()
    assert gain[[A_BAND, A_DEAL]].sum() > 0, gain.head(15)
    # price-sensitive customers respond more to a discount in the simulator: the model ranks them higher
    offers = attr_shop.offers["offers"]  # type: ignore[index]
    pct = next(o["id"] for o in offers if o["kind"] == "percent_off")
    u = up.predict(now[now["n_orders"] > 0], pct)["uplift"]
    band = now.loc[u.index, A_BAND].astype(str)
    assert u[band == "high"].mean() > u[band == "low"].mean()


def _catalogue(rule: dict[str, object]) -> dict[str, object]:
    return {"offers": [{"id": "band_offer", "kind": "percent_off", "value": 10, "channels": ["email"],
                        "cost_per_send": {"email": 0.01}, "eligibility": {"attributes": rule}}]}


def test_an_eligibility_rule_on_an_attribute_filters(attr_shop: Shop, uplift: UpliftModel) -> None:
    X = customer_features(attr_shop, attr_shop.end)
    X = X[X["n_orders"] > 0]
    churn = pd.Series(0.5, index=X.index)
    now = attr_shop.end
    for rule, expect in (({BAND: ["high", "mid"]}, X[A_BAND].astype(str).isin(["high", "mid"])),
                         ({DEAL: True}, X[A_DEAL] == 1.0), ({DEAL: "no"}, X[A_DEAL] == 0.0),
                         ({BAND: "low", DEAL: False}, (X[A_BAND].astype(str) == "low") & (X[A_DEAL] == 0.0))):
        cat = parse_catalogue(_catalogue(rule))
        check_attribute_rules(cat, attr_shop.attributes)
        fails = eligibility_failures(cat.offers[0], X, churn, None, now)
        assert 0 < expect.sum() < len(X)
        np.testing.assert_array_equal(fails == "", expect.to_numpy(), err_msg=str(rule))
        assert set(fails[~expect.to_numpy()]) <= {f"attributes.{k}" for k in rule}
    # a decision names the attribute rule that barred the offer
    cat = parse_catalogue(_catalogue({BAND: ["high"]}))
    dec = OfferPolicy(cat, uplift).decide(X, churn, now, channel="email").set_index(schema.CUSTOMER_ID)
    low = dec.loc[X.index[X[A_BAND].astype(str) != "high"]]
    assert (low[schema.OFFER_ID] == "none").all()
    barred = low.loc[low["rule"] == "not_eligible", "rule_detail"]
    assert len(barred) > len(low) / 2 and all(d == {"band_offer": "attributes.price_band"} for d in barred)
    high = dec.loc[X.index[X[A_BAND].astype(str) == "high"]]
    assert len(high) and not any("attributes." in str(d) for d in high["rule_detail"])


def test_attribute_rules_are_checked_against_the_shop(attr_shop: Shop) -> None:
    kinds = {**attr_shop.attributes, "age": "numeric", "joined": "date"}
    ranges = {"age": {"min": 18, "max": 65}, "joined": {"min": 30}}
    check_attribute_rules(parse_catalogue(_catalogue(ranges)), kinds)
    for rule, words in (({"tier": ["gold"]}, "has no attribute 'tier'"),
                        ({BAND: {"min": 1}}, "list the allowed values, not a range"),
                        ({"age": [30]}, "give a range"), ({DEAL: ["maybe"]}, "must be true or false")):
        with pytest.raises(CatalogueError, match=words):
            check_attribute_rules(parse_catalogue(_catalogue(rule)), kinds)
    for rule, words in (({"age": {"min": 5, "max": 1}}, "above max"),
                        ({"age": {"least": 1}}, "a range has only"),
                        ({BAND: []}, "a value or a list"), ([BAND], "must be a mapping")):
        with pytest.raises(CatalogueError, match=words):
            parse_catalogue(_catalogue(rule))  # type: ignore[arg-type]


def test_measured_uplift_per_attribute_segment(attr_shop: Shop) -> None:
    X, y = uplift_training_set(attr_shop)
    conv = y.assign(converted=y["bought"].astype(int), group=np.where(y["treated"], "treatment", "control"))
    res = measure_uplift_by_segment(X, conv)
    band = res[res["segment_kind"] == f"attribute:{BAND}"]
    assert set(band["segment"]) == {"low", "mid", "high"}
    assert set(res.loc[res["segment_kind"] == f"attribute:{DEAL}", "segment"]) == {"true", "false"}
    # each campaign's band segments split its customers
    for cid, g in band.groupby(schema.CAMPAIGN_ID):
        whole = res[(res["segment_kind"] == "all") & (res[schema.CAMPAIGN_ID] == cid)]
        assert g["treated"].sum() == whole["treated"].sum()
