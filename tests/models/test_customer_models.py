"""Churn, value, BG/NBD, segments, explanations and triggers on data with known answers."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pandas as pd
import pytest

from features.customer import customer_features, order_lines
from models.bgnbd import BetaGeoModel, GammaGammaModel
from models.customer import CustomerModelConfig
from models.metrics import auc, normalized_gini
from models.segments import rfm_scores, segment_customers, segment_summary
from models.triggers import TriggerConfig, detect_triggers
from training.customer_eval import evaluate_customer_models


def test_bgnbd_matches_published_cdnow_estimates() -> None:
    spec = importlib.util.find_spec("lifetimes")  # only for its bundled data file; never imported
    assert spec is not None and spec.submodule_search_locations, "dev dependency lifetimes missing"
    path = os.path.join(spec.submodule_search_locations[0], "datasets", "cdnow_customers_summary.csv")
    df = pd.read_csv(path)
    assert len(df) == 2357
    m = BetaGeoModel().fit(df["frequency"], df["recency"], df["T"])
    expected = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    for k, v in expected.items():
        assert m.params_[k] == pytest.approx(v, rel=0.01), k
    assert m.loglik_ == pytest.approx(-9582.4, abs=1.0)  # published log-likelihood


def test_gamma_gamma_recovers_spend_parameters() -> None:
    rng = np.random.default_rng(0)
    p, q, v = 6.0, 4.0, 15.0
    nu = rng.gamma(q, 1 / v, 4000)
    x = rng.integers(1, 10, 4000)
    m = np.array([rng.gamma(p * xi, 1 / (n * xi)) for xi, n in zip(x, nu, strict=True)])
    gg = GammaGammaModel().fit(x, m)
    assert gg.params_["p"] == pytest.approx(p, rel=0.25)
    assert gg.params_["q"] == pytest.approx(q, rel=0.25)
    est = gg.expected_spend(x, m)
    assert np.corrcoef(est, p / nu)[0, 1] > 0.8


@pytest.fixture(scope="module")
def evaluation(small_shop):
    return evaluate_customer_models(small_shop, pd.Timestamp("2025-10-01"),
                                    CustomerModelConfig(horizon_days=90, n_estimators=150, seed=1))


@pytest.mark.slow  # evaluates the customer models on the small simulated shop
def test_churn_model_beats_recency_and_recovers_truth(evaluation, truth) -> None:
    r = evaluation.report["churn"]
    assert r["production"]["auc"] > r["recency"]["auc"]
    assert r["production"]["auc"] > 0.7
    assert 0 <= r["production"]["brier"] < 0.25
    # against the planted truth: customers who had dropped out by the cutoff score higher
    s = evaluation.scores
    gone = (truth["dropout_at"] < pd.Timestamp("2025-10-01")).reindex(s.index)
    assert auc(gone.to_numpy(), s["churn_production"].to_numpy()) > 0.75


@pytest.mark.slow  # evaluates the customer models on the small simulated shop
def test_value_model_beats_last_period_and_tracks_true_rate(evaluation, truth) -> None:
    r = evaluation.report["value"]
    assert r["production"]["spearman"] > r["last_period"]["spearman"]
    assert r["production"]["normalized_gini"] > 0.4
    s = evaluation.scores
    t = truth.reindex(s.index)
    true_rate = t["orders_per_year"] * t["expected_basket"] * (1 - t["return_rate"]) * (
        t["dropout_at"] > pd.Timestamp("2025-10-01"))
    assert normalized_gini(true_rate.to_numpy(), s["value_production"].to_numpy()) > 0.5


@pytest.mark.slow  # evaluates the customer models on the small simulated shop
def test_explanations_name_features_and_sum_to_score(evaluation, small_shop) -> None:
    X = customer_features(small_shop, pd.Timestamp("2025-10-01"))
    X = X[X["n_orders"] > 0].head(5)
    ex = evaluation.models.churn.explain(X, top=3)
    assert set(ex) == set(X.index)
    for reasons in ex.values():
        assert len(reasons) == 3
        assert all(r["feature"] in X.columns and r["text"] for r in reasons)
        assert abs(reasons[0]["contribution"]) >= abs(reasons[-1]["contribution"])


def test_returner_is_not_high_value_and_segments_are_described(small_shop, truth) -> None:
    X = customer_features(small_shop, small_shop.end)
    b = X[X["n_orders"] > 0]
    churn = pd.Series(np.clip(b["recency_days"] / 365, 0, 1), index=b.index)
    seg = segment_customers(X, churn, b["net_90"].clip(lower=0))
    heavy = truth.index[truth["return_rate"] > 0.85].intersection(b.index[b["n_orders"] >= 2])
    assert not (seg.loc[heavy, "value_tier"] == "high").any()
    summary = segment_summary(seg, X)
    assert summary["customers"].sum() == len(X)
    assert summary["description"].str.len().min() > 10
    assert summary["share_of_revenue"].sum() == pytest.approx(
        X["net_revenue"].sum() / X["net_revenue"].clip(lower=0).sum(), rel=1e-6)
    assert summary.attrs["top10pct_revenue_share"] > 0.25  # the few who bring most are visible
    r = rfm_scores(X)
    assert r.min().min() == 1 and r.max().max() == 5


def lines_of(rows: list[tuple[str, str, float, float]]) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": "c", "order_id": [r[0] for r in rows],
                         "ts": pd.to_datetime([r[1] for r in rows]), "quantity": [r[2] for r in rows],
                         "net": [r[3] for r in rows]})


def test_dormancy_fires_exactly_once_across_windows() -> None:
    lines = lines_of([("o1", "2024-01-01", 1, 50), ("o2", "2024-01-11", 1, 50), ("o3", "2024-01-21", 1, 50)])
    # usual gap 10 days, factor 2.5 -> dormant on 2024-02-15
    fired = []
    t = pd.Timestamp("2024-01-01")
    while t < pd.Timestamp("2024-06-01"):
        nxt = t + pd.Timedelta(days=7)
        tr = detect_triggers(lines, t, nxt, TriggerConfig())
        fired += tr[tr["trigger"] == "dormancy"]["at"].tolist()
        t = nxt
    assert fired == [pd.Timestamp("2024-02-15")]


def test_spend_jump_first_purchase_and_high_value_return() -> None:
    lines = lines_of([("o1", "2024-01-01", 1, 40), ("o2", "2024-01-05", 1, 60), ("o3", "2024-01-09", 1, 70),
                      ("o4", "2024-01-12", 1, 500), ("r1", "2024-01-20", -1, -300)])
    tr = detect_triggers(lines, pd.Timestamp("2023-12-31"), pd.Timestamp("2024-01-31"))
    kinds = tr.groupby("trigger").size().to_dict()
    assert kinds["first_purchase"] == 1
    assert kinds["spend_jump"] == 1  # 70 is not > 1.5 * 50; 500 is > 1.5 * 56.7
    assert tr.loc[tr["trigger"] == "spend_jump", "detail"].item().startswith("order o4")
    assert kinds["high_value_return"] == 1
    churn_now = pd.Series({"c": 0.7, "d": 0.2})
    tr2 = detect_triggers(lines, pd.Timestamp("2024-02-01"), pd.Timestamp("2024-02-02"),
                          churn_before=pd.Series({"c": 0.5}), churn_now=churn_now)
    assert tr2.loc[tr2["trigger"] == "churn_risk", "customer_id"].tolist() == ["c"]


def test_order_lines_net_convention(small_shop) -> None:
    lines = order_lines(small_shop)
    r = lines[lines["is_return"]].iloc[0]
    assert r["net"] == pytest.approx(r["quantity"] * r["unit_price"] + r["discount"])


@pytest.mark.slow  # evaluates the customer models on the small simulated shop
def test_in_period_ceiling_learns_what_only_the_window_knows() -> None:
    """The bound sees the evaluated window's labels (other folds): a signal that holds only in that window is
    found by the ceiling and by nothing trained on the earlier rows."""
    from features.customer import CATEGORICAL
    from models.customer import ChurnModel
    from training.customer_eval import in_period_ceiling
    rng = np.random.default_rng(3)

    def frame(n: int) -> pd.DataFrame:
        X = pd.DataFrame({"recency_days": rng.uniform(0, 200, n), "signal": rng.uniform(0, 1, n)})
        for c in CATEGORICAL:
            X[c] = pd.Categorical(["x"] * n)
        return X

    Xtr, X = frame(3000), frame(1500)
    ytr = pd.DataFrame({"churn": rng.integers(0, 2, 3000), "future_net": rng.gamma(1.0, 50.0, 3000)})
    # only this window's churn follows signal
    churn = (X["signal"] + rng.normal(0, 0.15, 1500) > 0.5).astype(int)
    y = pd.DataFrame({"churn": churn, "future_net": np.where(churn == 1, 0.0, 100 * X["signal"])})
    cfg = CustomerModelConfig(n_estimators=100, learning_rate=0.1, min_child_samples=20, seed=1)
    bound = in_period_ceiling(X, y, cfg, Xtr, ytr)
    production = auc(y["churn"], ChurnModel(cfg).fit(Xtr, ytr["churn"]).predict(X))
    assert bound["churn"]["auc"] > 0.85 and bound["churn"]["auc"] > production + 0.2
    from models.customer import ValueModel
    from models.metrics import regression_report
    value = regression_report(y["future_net"].to_numpy(),
                              ValueModel(cfg).fit(Xtr, ytr["future_net"]).predict(X).to_numpy())
    assert bound["value"]["spearman"] > value["spearman"] + 0.15 and bound["churn"]["customers"] == 1500


def _trees(model: object) -> str:
    """A booster's trees (its text without the parameters section, which names the threads it ran on)."""
    text = model.booster_.model_to_string()  # type: ignore[attr-defined]
    return text[:text.index("parameters:")]


@pytest.mark.parametrize("threads", [1, 2])
def test_churn_and_value_fitted_on_one_binned_set_are_the_models_fitted_apart(threads: int) -> None:
    """fit_churn_and_value bins the rows once for both models: the boosters are those of two separate fits,
    whether fitted one after the other (one thread) or at the same time (two)."""
    from models.customer import ChurnModel, CustomerModelConfig, ValueModel, fit_churn_and_value
    rng = np.random.default_rng(3)
    n = 3000
    X = pd.DataFrame({"recency_days": rng.integers(0, 300, n).astype(float),
                      "n_orders": rng.integers(1, 9, n),
                      "net_revenue": rng.gamma(2.0, 50.0, n), "region": rng.choice(["n", "s", "e"], n)})
    churn = (rng.random(n) < 1 / (1 + np.exp(-(X["recency_days"] - 150) / 50))).astype(int)
    value = np.where(churn == 1, 0.0, rng.gamma(2.0, 30.0, n)) - (rng.random(n) < 0.05) * 20  # some < 0
    cfg = CustomerModelConfig(n_estimators=40, min_child_samples=20, num_threads=threads)
    c, v = fit_churn_and_value(cfg, X, pd.Series(churn), pd.Series(value))
    c0, v0 = ChurnModel(cfg).fit(X, pd.Series(churn)), ValueModel(cfg).fit(X, pd.Series(value))
    assert _trees(c) == _trees(c0) and "Tree=39" in _trees(c)
    assert _trees(v) == _trees(v0) and "objective=tweedie" in _trees(v)
    assert v.categories_ == v0.categories_ == {"region": ["e", "n", "s"]}
    np.testing.assert_array_equal(v.predict(X).to_numpy(), v0.predict(X).to_numpy())
    np.testing.assert_array_equal(c.predict(X).to_numpy(), c0.predict(X).to_numpy())


def test_gini_counts_tied_predictions_as_their_expected_order() -> None:
    """Equal predictions give the mean Gini over every order of the tied customers (brute force on a small
    case), so the rows' order cannot move it; without ties it is the plain Gini of the ranking."""
    import itertools

    rng = np.random.default_rng(3)
    actual = rng.gamma(0.5, 100.0, 8) * (rng.random(8) < 0.7)
    pred = np.array([0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 5.0, 1.0])  # two tied groups
    tied = [np.flatnonzero(pred == v) for v in (0.0, 2.0)]

    def row_order_gini(a: np.ndarray, p: np.ndarray) -> float:  # ties in row order: the old definition
        def g(x: np.ndarray, q: np.ndarray) -> float:
            c = np.cumsum(x[np.lexsort((np.arange(len(x)), -q))]) / x.sum()
            return float(c.sum() / len(x) - (len(x) + 1) / (2 * len(x)))
        return g(a, p) / g(a, a)

    values = []
    for perm0 in itertools.permutations(tied[0]):
        for perm1 in itertools.permutations(tied[1]):
            order = np.arange(8)
            order[tied[0]], order[tied[1]] = perm0, perm1
            values.append(row_order_gini(actual[order], pred[order]))
            assert normalized_gini(actual[order], pred[order]) == pytest.approx(normalized_gini(actual, pred))
    assert len(set(np.round(values, 9))) > 1  # the row order did move the old definition
    assert normalized_gini(actual, pred) == pytest.approx(np.mean(values))
    distinct = rng.random(8)
    assert normalized_gini(actual, distinct) == pytest.approx(row_order_gini(actual, distinct))


@pytest.mark.parametrize("threads", [1, 2])
def test_seeded_models_fitted_on_one_binned_set_are_the_models_fitted_apart(threads: int) -> None:
    """fit_seeded bins the rows once for models that differ in their seed (the uplift model's bagged
    outcome models): each booster is that of its own fit, one after the other or two at a time."""
    from dataclasses import replace

    from models.customer import ChurnModel, CustomerModelConfig, fit_seeded
    rng = np.random.default_rng(4)
    n = 2500
    X = pd.DataFrame({"recency_days": rng.integers(0, 300, n).astype(float),
                      "n_orders": rng.integers(1, 9, n), "offer_id": rng.choice(["a", "b"], n)})
    y = (rng.random(n) < 1 / (1 + np.exp(-(X["recency_days"] - 150) / 50))).astype(float)
    cfg = CustomerModelConfig(n_estimators=30, min_child_samples=20, num_threads=threads)
    cats = ["offer_id"]
    models = [ChurnModel(replace(cfg, seed=cfg.seed + i), cats) for i in range(3)]
    fit_seeded(models, X, y)
    apart = [ChurnModel(replace(cfg, seed=cfg.seed + i), cats).fit(X, y) for i in range(3)]
    assert [_trees(m) for m in models] == [_trees(m) for m in apart]
    assert len({_trees(m) for m in models}) == 3  # the seeds made three different models
    assert models[2].categories_ == {"offer_id": ["a", "b"]}
