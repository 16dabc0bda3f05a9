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
from tests.conftest import SEED, days_after_start, simulated_history

H, HISTORY = 150, 200
"""The horizon and the history before the cutoff: 200 < 150 + 60 days, so no stacked 150-day window fits."""
CFG = CustomerModelConfig(horizon_days=H, n_estimators=60, learning_rate=0.08, n_cutoffs=3,
                          min_child_samples=20, seed=SEED)


@pytest.fixture(scope="module")
def young_shop(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return simulated_history(tmp_path_factory, "young", 400, 40, HISTORY + H + 10)


def _cutoff(shop: Any) -> pd.Timestamp:
    return days_after_start(shop, HISTORY)


def _value_rank(m: dict[str, float]) -> float:
    return m["spearman"] + m["gini"]


@pytest.mark.slow
def test_a_horizon_without_stacked_windows_trains_short_windows_and_says_which_it_chose(young_shop) -> None:
    from training.customer_eval import evaluate_customer_models
    from training.customer_selection import BGNBD, RECENCY, SHORT_BLEND, SHORT_WINDOW
    cutoff = _cutoff(young_shop)
    ev = evaluate_customer_models(young_shop, cutoff, CFG)
    sel = ev.models.selection
    # the recipe validated is served: 60-day windows (the longest with a stacked cutoff 60 days before this
    # one: 140 - 60 >= 60), 3 of them as of the cutoff (200 - 60 - 14 k >= 60)
    assert sel["short_window"] == {"label_days": 60, "windows": 3}
    val, base = sel["validation"], sel["baseline_validation"]
    assert val["end"] == str(cutoff.date()) and val["horizon_days"] == 60 == val["short_window_label_days"]
    assert base["end"] == str(cutoff.date()) and base["horizon_days"] == 120  # 80 days of history before it
    assert set(val["value"]) == {SHORT_WINDOW, SHORT_BLEND, BGNBD, "last_period", "historical_rate"}
    assert set(val["churn"]) == {SHORT_WINDOW, BGNBD, RECENCY} and set(base["churn"]) == {BGNBD, RECENCY}
    assert set(base["value"]) == {BGNBD, "last_period", "historical_rate"}
    # the served candidate: the baseline window's best, then the best of it and the short-window family on
    # theirs; the report and components say so
    base_value = max(base["value"], key=lambda c: _value_rank(base["value"][c]))
    base_churn = max(base["churn"], key=lambda c: base["churn"][c]["auc"])
    best_value = max((SHORT_WINDOW, SHORT_BLEND, base_value), key=lambda c: _value_rank(val["value"][c]))
    best_churn = max((SHORT_WINDOW, base_churn), key=lambda c: val["churn"][c]["auc"])
    assert sel["value"]["chosen"] == best_value and sel["churn"]["chosen"] == best_churn
    assert ev.report["selection"]["value"]["chosen"] == best_value
    for c in ("churn", "value"):
        assert "chosen on the validation window" in ev.models.components[c]
        assert f"days of history before {cutoff.date()} < the {H} + 60 days" in ev.models.components[c]
    if best_churn == SHORT_WINDOW:
        m = ev.models.churn
        assert isinstance(m, WindowScaled) and isinstance(m.model, ChurnModel) and m.label_days == 60
        assert ev.models.components["churn"].startswith("LightGBM on 3 stacked 60-day windows, scaled to")
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
    assert "baseline_validation" in base.selection  # both windows were read
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


def _recency_frame(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Customers' recency and a churn label drawn with P(churn) = 1 - exp(-recency / 60)."""
    rng = np.random.default_rng(seed)
    r = rng.uniform(0, 300, n).round()
    p = 1 - np.exp(-r / 60)
    X = pd.DataFrame({"recency_days": r, "n_orders": rng.integers(1, 9, n)},
                     index=[f"c{i}" for i in range(n)])
    return X, (rng.uniform(size=n) < p).astype(int), p


def test_calibrated_recency_is_a_monotone_probability_that_ranks_as_recency() -> None:
    from features.exceptions import ModelFitError, NotFittedError
    from models.customer_scorers import RecencyChurn
    from models.metrics import auc
    X, y, p = _recency_frame(4000, SEED)
    with pytest.raises(NotFittedError):
        RecencyChurn().predict(X)
    m = RecencyChurn().fit(X, y)
    grid = pd.DataFrame({"recency_days": np.r_[np.arange(0, 400, 0.5), np.nan]})
    g = m.predict(grid).to_numpy()
    assert ((g >= 0) & (g <= 1)).all()
    assert (np.diff(g[:-1]) > 0).all()  # strictly increasing in recency (flat stretches keep recency's order)
    assert g[-1] == pytest.approx(m.predict(pd.DataFrame({"recency_days": [1e9]})).iloc[0], abs=1e-5)
    fitted = m.predict(X).to_numpy()
    inner = (X["recency_days"] > 30) & (X["recency_days"] < 270)
    assert np.abs(fitted[inner] - p[inner]).max() < 0.1  # calibrated: close to the true probability
    assert auc(y, fitted) == pytest.approx(auc(y, X["recency_days"].to_numpy()))
    # a label that falls with recency: pooled to a flat rate (non-decreasing), not inverted
    flat = RecencyChurn().fit(X, 1 - y).predict(grid.iloc[:-1]).to_numpy()
    assert flat.max() - flat.min() < 1e-5
    scaled = WindowScaled(m, 30, 90)
    np.testing.assert_allclose(scaled.predict(X), m.predict(X) ** 3)
    import pickle
    pd.testing.assert_series_equal(pickle.loads(pickle.dumps(scaled)).predict(X), scaled.predict(X))
    assert m.explain(X.iloc[:1])["c0"][0]["feature"] == "recency_days" == m.feature_names[0]
    with pytest.raises(ModelFitError):
        RecencyChurn().fit(X.iloc[:0], y[:0])


def test_pool_adjacent_violators_is_the_monotone_weighted_fit() -> None:
    from models.customer_scorers import _pool_adjacent_violators
    out = _pool_adjacent_violators(np.array([0.1, 0.5, 0.3, 0.2, 0.9]), np.array([1.0, 1.0, 2.0, 1.0, 1.0]))
    np.testing.assert_allclose(out, [0.1, 0.325, 0.325, 0.325, 0.9])  # (0.5 + 0.6 + 0.2) / 4


@pytest.fixture(scope="module")
def hundred_day_shop(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A shop with 102 days of orders before its cutoff (and a few after)."""
    from features.io import load_shop
    from features.simulate import simulate_shop
    d: Path = tmp_path_factory.mktemp("hundred")
    simulate_shop(d, customers=400, products=40, days=110, seed=SEED, events=False)
    shop = load_shop(d)
    return shop, shop.orders[schema.TS].min().normalize() + pd.Timedelta(days=102)


def test_recency_is_fitted_on_orders_before_the_cutoff_only(hundred_day_shop) -> None:
    from training.customer_selection import fit_recency
    shop, cutoff = hundred_day_shop
    m = fit_recency(shop, cutoff, 270)
    # 102 days: the longest label window with 30 days of history before it is 60 days, scaled to 270
    assert m is not None and (m.label_days, m.horizon_days) == (60, 270)
    rng = np.random.default_rng(SEED)

    def scrambled(when: pd.Series) -> Any:
        o = shop.orders.copy()
        o.loc[when, schema.CUSTOMER_ID] = rng.permutation(o.loc[when, schema.CUSTOMER_ID].to_numpy())
        return replace(shop, orders=o)

    ts = shop.orders[schema.TS]
    after = fit_recency(scrambled(ts >= cutoff), cutoff, 270)
    assert after is not None
    np.testing.assert_array_equal(after.model.rates_, m.model.rates_)  # type: ignore[union-attr]
    np.testing.assert_array_equal(after.model.knots_, m.model.knots_)  # type: ignore[union-attr]
    # the last week before the cutoff dropped: the labels change, so does the fit (the test can fail)
    week = (ts < cutoff) & (ts >= cutoff - pd.Timedelta(days=7))
    week = fit_recency(replace(shop, orders=shop.orders[~week]), cutoff, 270)
    assert week is not None and not np.array_equal(week.model.rates_, m.model.rates_)  # type: ignore


def test_a_hundred_day_shop_at_270_days_validates_on_a_month_or_more(hundred_day_shop) -> None:
    """The short-window models fit as of 14 days before the cutoff only: a 14-day window must not choose a
    270-day model when BG/NBD and the baselines can be compared on 60 days."""
    from training.bgnbd_fit import fit_bgnbd
    from training.customer_selection import (
        MIN_SHORT_VALIDATION_DAYS,
        SHORT_FAMILY,
        fit_short_history,
        validation_windows,
    )
    shop, cutoff = hundred_day_shop
    cfg = replace(CFG, horizon_days=270)
    w = validation_windows(shop, cutoff, 270, cfg, with_short=True)
    assert (w.baseline, w.short, w.short_dropped) == (60, None, 14)
    assert w.baseline >= MIN_SHORT_VALIDATION_DAYS
    bg, gg = fit_bgnbd(shop, cutoff)
    m = fit_short_history(shop, cutoff, cfg, bg, gg, "102 days")
    sel = m.selection
    assert "short_window" not in sel  # the short-window family is not a candidate: no model is trained
    assert sel["validation"]["horizon_days"] == 60 and "baseline_validation" not in sel
    assert sel["value"]["chosen"] not in SHORT_FAMILY and sel["churn"]["chosen"] not in SHORT_FAMILY
    assert set(sel["validation"]["churn"]) == {"bgnbd", "recency"}
    for c in ("churn", "value"):
        assert "could only be validated on 14 days < 30" in m.components[c]
    # the chosen churn candidate is the better on the 60-day window
    aucs = {k: v["auc"] for k, v in sel["validation"]["churn"].items()}
    assert sel["churn"]["chosen"] == max(aucs, key=lambda k: (aucs[k], k == "bgnbd"))


def test_a_short_window_validation_of_a_month_or_more_is_kept(young_shop) -> None:
    from training.customer_selection import validation_windows
    w = validation_windows(young_shop, _cutoff(young_shop), H, CFG, with_short=True)
    # 200 days: the short-window family on 60 days, BG/NBD and the baselines on 120
    assert (w.baseline, w.short, w.short_dropped) == (120, 60, None) and w.short_models is not None
