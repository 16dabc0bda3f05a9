"""A horizon longer than the history allows stacked windows for: churn and value train on shorter label
windows, and the served model is chosen on a validation window that ends at the cutoff (never after it)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features import schema
from models.customer import ChurnModel, CustomerModelConfig, ValueModel
from models.customer_scorers import BaselineValue, Blend, WindowScaled
from tests.conftest import SEED

H, HISTORY = 150, 200
"""The horizon and the history before the cutoff: 200 < 150 + 60 days, so no stacked 150-day window fits."""
CFG = CustomerModelConfig(horizon_days=H, n_estimators=60, learning_rate=0.08, n_cutoffs=3,
                          min_child_samples=20, seed=SEED)


@pytest.fixture(scope="module")
def young_shop(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from features.io import load_shop
    from features.simulate import simulate_shop
    d: Path = tmp_path_factory.mktemp("young")
    simulate_shop(d, customers=400, products=40, days=HISTORY + H + 10, seed=SEED, events=False)
    return load_shop(d)


def _cutoff(shop: Any) -> pd.Timestamp:
    return shop.orders[schema.TS].min().normalize() + pd.Timedelta(days=HISTORY)


def _value_rank(m: dict[str, float]) -> float:
    return m["spearman"] + m["gini"]


@pytest.mark.slow
def test_a_horizon_without_stacked_windows_trains_short_windows_and_says_which_it_chose(young_shop) -> None:
    from training.customer_eval import evaluate_customer_models
    from training.customer_selection import BGNBD, SHORT_BLEND, SHORT_WINDOW
    cutoff = _cutoff(young_shop)
    ev = evaluate_customer_models(young_shop, cutoff, CFG)
    sel = ev.models.selection
    # the longest label window with a stacked cutoff before this one: 120 days (200 - 120 >= 60)
    assert sel["short_window"] == {"label_days": 120, "windows": 2}
    val = sel["validation"]
    assert val["end"] == str(cutoff.date()) and val["horizon_days"] == 60 == val["short_window_label_days"]
    assert set(val["value"]) == {SHORT_WINDOW, SHORT_BLEND, BGNBD, "last_period", "historical_rate"}
    assert set(val["churn"]) == {SHORT_WINDOW, BGNBD}
    # the served candidate is the validation's best, and the report and components say so
    best_value = max(val["value"], key=lambda c: _value_rank(val["value"][c]))
    best_churn = max(val["churn"], key=lambda c: val["churn"][c]["auc"])
    assert sel["value"]["chosen"] == best_value and sel["churn"]["chosen"] == best_churn
    assert ev.report["selection"]["value"]["chosen"] == best_value
    for c in ("churn", "value"):
        assert "chosen on the validation window" in ev.models.components[c]
        assert f"days of history before {cutoff.date()} < the {H} + 60 days" in ev.models.components[c]
    if best_churn == SHORT_WINDOW:
        m = ev.models.churn
        assert isinstance(m, WindowScaled) and isinstance(m.model, ChurnModel) and m.label_days == 120
        assert ev.models.components["churn"].startswith("LightGBM on 2 stacked 120-day windows, scaled to")
    # served scores are the chosen candidate's: production's test metrics equal that candidate's column
    if best_value in ("last_period", "historical_rate"):
        assert isinstance(ev.models.value, BaselineValue)
        assert ev.report["value"]["production"]["spearman"] == pytest.approx(
            ev.report["value"][best_value]["spearman"])
    elif best_value == SHORT_WINDOW:
        assert isinstance(ev.models.value, WindowScaled) and isinstance(ev.models.value.model, ValueModel)
    elif best_value == SHORT_BLEND:
        assert isinstance(ev.models.value, Blend) and ev.models.components["value"].startswith("blend of")


@pytest.mark.slow
def test_the_choice_reads_nothing_from_the_cutoff_on(young_shop) -> None:
    """Orders from the cutoff on scrambled (other customers, other amounts): the same validation metrics,
    choice and scores. Orders just before it changed: the validation metrics change (the test can fail)."""
    from training.customer_eval import fit_customer_models
    cutoff = _cutoff(young_shop)
    rng = np.random.default_rng(SEED)

    def scrambled(when: pd.Series) -> Any:
        o = young_shop.orders.copy()
        o.loc[when, schema.CUSTOMER_ID] = rng.permutation(o.loc[when, schema.CUSTOMER_ID].to_numpy())
        o.loc[when, "unit_price"] = o.loc[when, "unit_price"] * rng.uniform(0.1, 10, when.sum())
        return replace(young_shop, orders=o)

    ts = young_shop.orders[schema.TS]
    base = fit_customer_models(young_shop, cutoff, CFG)
    after = fit_customer_models(scrambled(ts >= cutoff), cutoff, CFG)
    assert after.selection == base.selection and after.components == base.components
    from features.customer import customer_features
    X = customer_features(young_shop, cutoff)
    X = X[X["n_orders"] > 0]
    pd.testing.assert_series_equal(after.value.predict(X), base.value.predict(X))
    pd.testing.assert_series_equal(after.churn.predict(X), base.churn.predict(X))
    last_month = (ts < cutoff) & (ts >= cutoff - pd.Timedelta(days=30))
    before = fit_customer_models(scrambled(last_month), cutoff, CFG)
    assert before.selection["validation"]["value"] != base.selection["validation"]["value"]


def test_window_scaled_scores_keep_the_ranking_and_reach_the_horizon() -> None:
    rng = np.random.default_rng(SEED)
    X = pd.DataFrame({"recency_days": rng.uniform(0, 200, 400), "n_orders": rng.integers(1, 9, 400)},
                     index=[f"c{i}" for i in range(400)])
    cfg = CustomerModelConfig(n_estimators=20, min_child_samples=10, seed=SEED)
    churn = ChurnModel(cfg).fit(X, (X["recency_days"] > 100).astype(int))
    value = ValueModel(cfg).fit(X, X["n_orders"] * 10.0)
    c, v = WindowScaled(churn, 30, 90), WindowScaled(value, 30, 90)
    np.testing.assert_allclose(v.predict(X), value.predict(X) * 3)
    np.testing.assert_allclose(c.predict(X), churn.predict(X) ** 3)  # no purchase in three 30-day windows
    assert (c.predict(X) <= churn.predict(X)).all() and c.feature_names == churn.feature_names
    assert c.explain(X.iloc[:1]) == churn.explain(X.iloc[:1])


def test_baseline_value_is_the_baseline_and_explains_its_inputs() -> None:
    from models.customer import historical_rate_baseline, last_period_baseline
    X = pd.DataFrame({"net_30": [5.0, 0.0], "net_90": [30.0, 90.0], "net_180": [30.0, 200.0],
                      "net_revenue": [300.0, 200.0], "purchase_age_days": [600.0, 100.0]}, index=["a", "b"])
    last, rate = BaselineValue("last_period", 90), BaselineValue("historical_rate", 90)
    pd.testing.assert_series_equal(last.predict(X), last_period_baseline(X, 90).rename("score"))
    pd.testing.assert_series_equal(rate.predict(X), historical_rate_baseline(X, 90).rename("score"))
    assert list(rate.predict(X)) == [45.0, 180.0]
    why = rate.explain(X)["b"][0]
    assert why["feature"] == "net_revenue" and "baseline" in why["text"]
    assert (rate.feature_importance() == 0).all()
    with pytest.raises(ValueError, match="unknown value baseline"):
        BaselineValue("median", 90)


def test_blend_is_the_weighted_mean_of_its_parts() -> None:
    X = pd.DataFrame({"net_30": [5.0, 0.0], "net_90": [30.0, 90.0], "net_180": [30.0, 200.0],
                      "net_revenue": [300.0, 200.0], "purchase_age_days": [600.0, 100.0]}, index=["a", "b"])
    last, rate = BaselineValue("last_period", 90), BaselineValue("historical_rate", 90)
    b = Blend([(last, 1.0), (rate, 3.0)])
    np.testing.assert_allclose(b.predict(X), 0.25 * last.predict(X) + 0.75 * rate.predict(X))
    assert b.explain(X) == rate.explain(X)  # explained by its largest part
    with pytest.raises(ValueError, match="positive weight"):
        Blend([(last, 0.0)])
