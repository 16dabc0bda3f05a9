"""Training the production recommender on the small shop: blend weights tuned (main and discovery), the
re-ranker's holdout gate, short histories, components reused, and one NDCG wherever it is computed."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from features.exceptions import ModelFitError
from features.interactions import build_interactions
from features.schema import CUSTOMER_ID, PRODUCT_ID, RANK, SCORE
from models.metrics import ranking_report
from models.recsys import DEFAULT_WEIGHTS, MODELS, BlendRecommender, RecommenderConfig, build_baskets
from tests.models.recsys_data import CFG, CUTOFF, shop_data
from training.blend_tuning import (
    DISCOVERY_GRID,
    EASE_STEPS,
    RISING_STEPS,
    TIFU_ALPHAS,
    TIFU_GRID,
    TIFU_NEIGHBOURS,
    TIFU_WEIGHT_GRID,
    TUNE_FINALISTS,
    WEIGHT_GRID,
    reusable_components,
    tune_discovery,
    tune_tifu,
    tune_weights,
)
from training.rec_eval import fit_production
from training.rec_truth import new_items_truth, purchase_truth
from training.rerank_training import _window_rows, fit_reranker, ndcg_by_group

pytestmark = pytest.mark.slow  # fits blends and re-rankers on a simulated shop


@pytest.fixture(scope="module")
def data(small_shop):
    return shop_data(small_shop)


@pytest.fixture(scope="module")
def truth(small_shop, data):
    return {u: s for u, s in purchase_truth(small_shop, CUTOFF).items() if u in data.users}


def test_tuning_chooses_main_and_discovery_weights_without_changing_the_model(data, truth) -> None:
    tuned = BlendRecommender(replace(CFG, blend_weights=None)).fit(data)
    before = dict(tuned.weights_)
    main = tune_weights(tuned, truth)
    assert tuned.weights_ == before  # tuning only measures
    # the grid, then EASE added to the three best blends at two weights, then rising to the best three
    assert len(main.trials) == len(WEIGHT_GRID) + 3 * len(EASE_STEPS) + 3 * len(RISING_STEPS)
    rising = main.trials[-3 * len(RISING_STEPS):]
    assert sorted({t["weights"]["rising"] for t in rising}) == sorted(RISING_STEPS)
    assert all("rising" not in t["weights"] for t in main.trials[:-3 * len(RISING_STEPS)])
    assert main.weights in [t["weights"] for t in main.trials] and main.best == max(
        t["ndcg@10"] for t in main.trials)
    best = [t for t in main.trials if t["weights"] == main.weights][0]
    assert best["ndcg@10"] == main.best and 0.05 < main.best < 1.0
    discovery = tune_discovery(tuned, new_items_truth(data, truth))
    assert len(discovery.trials) == len(DISCOVERY_GRID)
    assert discovery.weights in [dict(g) for g in DISCOVERY_GRID]
    tuned.use_weights(main.weights, discovery.weights)
    assert tuned.weights_ == main.weights and tuned.discovery_weights_ == discovery.weights


def test_screened_tuning_scores_every_weighting_on_a_sample_and_the_best_on_all(data, truth) -> None:
    """Past ``screen`` customers, each round's weightings are scored on a seeded sample and only the best
    TUNE_FINALISTS on all; the weights are chosen among those. At or under it: the unscreened tuning."""
    tuned = BlendRecommender(replace(CFG, blend_weights=None)).fit(data)
    full = tune_weights(tuned, truth)
    assert full.customers == full.screened_on == len(truth)
    assert tune_weights(tuned, truth, screen=len(truth)).trials == full.trials
    screened = tune_weights(tuned, truth, screen=len(truth) // 4, seed=3)
    assert screened.customers == len(truth) and 0.15 < screened.screened_on / len(truth) < 0.35
    assert len(screened.trials) == len(full.trials)
    assert all("screen_ndcg@10" in t for t in screened.trials)
    on_all = [t for t in screened.trials if "ndcg@10" in t]
    assert len(on_all) == 3 * TUNE_FINALISTS  # the grid's round, EASE's and rising's
    for t in on_all:  # scored on all customers: the unscreened tuning's value of the same weights
        assert t["ndcg@10"] == pytest.approx(next(f["ndcg@10"] for f in full.trials
                                                  if f["weights"] == t["weights"]), abs=1e-12)
    grid_round = screened.trials[:len(WEIGHT_GRID)]
    best_screen = sorted(t["screen_ndcg@10"] for t in grid_round)[-TUNE_FINALISTS:]
    assert sorted(t["screen_ndcg@10"] for t in grid_round if "ndcg@10" in t) == best_screen
    assert screened.best == max(t["ndcg@10"] for t in on_all)
    assert screened.weights == max(on_all, key=lambda t: t["ndcg@10"])["weights"]


def test_reranker_rows_are_built_for_a_sample_of_each_window(small_shop) -> None:
    one = replace(CFG, rerank_windows=1)
    buyers = len(purchase_truth(small_shop, CUTOFF - pd.Timedelta(days=one.rerank_window_days), CUTOFF))
    every = _window_rows(small_shop, CUTOFF, one, None, None)[0][2]  # one group per customer with a hit
    few = _window_rows(small_shop, CUTOFF, replace(one, rerank_row_customers=buyers // 3), None, None)[0][2]
    assert len(every) > 60 and 0.15 < len(few) / len(every) < 0.55


def test_reranker_learns_from_the_latest_window_only_past_a_size_threshold(small_shop) -> None:
    """``rerank_one_window_customers``: a latest window with more customers than that is the only one (the
    same rows as its part of all windows); with as many or fewer, or None, every window; logged."""
    every = _window_rows(small_shop, CUTOFF, replace(CFG, rerank_one_window_customers=None), None, None)
    assert len(every) == CFG.rerank_windows == 2
    n_latest = len(build_interactions(small_shop, CUTOFF - pd.Timedelta(days=CFG.rerank_window_days)).users)
    at = _window_rows(small_shop, CUTOFF, replace(CFG, rerank_one_window_customers=n_latest), None, None)
    assert len(at) == 2
    for a, b in zip(at[0], every[0], strict=True):
        np.testing.assert_array_equal(a, b)
    below = replace(CFG, rerank_one_window_customers=n_latest - 1)
    only = _window_rows(small_shop, CUTOFF, below, None, None)
    assert len(only) == 1
    for a, b in zip(only[0], every[0], strict=True):
        np.testing.assert_array_equal(a, b)
    _, v = fit_reranker(small_shop, CUTOFF, replace(below, rerank_min_customers=20))
    assert v["windows"] == 1
    assert "rec.rerank_one_window_customers" in below.to_params()


def test_reranker_is_used_only_when_it_beats_the_blend_on_held_out_customers(small_shop) -> None:
    cfg = replace(CFG, rerank_min_customers=20)
    ranker, v = fit_reranker(small_shop, CUTOFF, cfg)
    assert v["holdout_customers"] > 0 and v["customers"] > v["holdout_customers"]
    assert v["used"] == (v["holdout_ndcg@10_reranked"] > v["holdout_ndcg@10_blend"])
    assert (ranker is not None) == v["used"]
    if ranker is not None:
        assert ranker.validation_ == v
    # too little data: no ranker, and it says why (also when only the random split leaves too few to train)
    none, why = fit_reranker(small_shop, CUTOFF, replace(CFG, rerank_min_customers=10**6))
    assert none is None and why["used"] is False and "few" in why["why"]
    few = replace(CFG, rerank_min_customers=20, rerank_max_customers=10)
    none, why = fit_reranker(small_shop, CUTOFF, few)
    assert none is None and why["used"] is False and why["customers"] < 20
    assert "training or held-out" in why["why"]


def test_short_history_fits_with_default_weights_and_no_reranker(small_shop) -> None:
    cutoff = small_shop.orders["ts"].min() + pd.Timedelta(days=40)  # less history than the 56-day window
    m = fit_production(small_shop, cutoff, RecommenderConfig(factors=8, als_iterations=3, seed=7))
    assert m.weights_ == dict(DEFAULT_WEIGHTS) and m.reranker_ is None
    assert len(m.recommend(list(m._require().users.ids[:5]), 3, exclude_bought=True)) > 0


def test_components_fitted_on_the_same_data_with_the_same_settings_are_reused(data) -> None:
    fitted = {n: MODELS[n](CFG).fit(data) for n in ("als", "item_knn", "bpr")}
    fitted["popularity"] = MODELS["popularity"](replace(CFG, factors=4)).fit(data)  # other settings
    reuse = reusable_components(fitted, data, CFG)
    assert set(reuse) == {"als", "item_knn"}  # bpr is no blend component
    assert reusable_components(fitted, replace(data), CFG) == {}  # an equal copy is other data
    blend = BlendRecommender(replace(CFG, blend_weights=(("als", 1.0),))).fit(data, components=reuse)
    assert blend.components_["als"] is fitted["als"] and blend.components_["item_knn"] is fitted["item_knn"]


def test_the_three_ndcg_computations_agree(data, truth) -> None:
    """Blend tuning, the evaluation report and the re-ranker's holdout gate each compute NDCG@10 from their
    own form (the score matrix, frames of recommendations, candidate groups) with the one metrics.ndcg; on
    one ranking they agree."""
    blend = BlendRecommender(CFG).fit(data)
    recs = blend.recommend(list(truth), 10)
    report = ranking_report(recs, truth)["ndcg@10"]
    probe = tune_weights(blend, truth, grid=[tuple(blend.weights_.items())])
    assert len(probe.trials) == 1 and probe.weights == blend.weights_
    assert probe.trials[0]["ndcg@10"] == pytest.approx(report, abs=1e-12)
    # the re-ranker's gate, each customer's whole ranked list as its candidates (rows shuffled: it sorts)
    full = blend.recommend(list(truth), 200).sample(frac=1.0, random_state=1)
    full = full.sort_values(CUSTOMER_ID, kind="stable")
    users = full[CUSTOMER_ID].drop_duplicates().tolist()
    groups = full.groupby(CUSTOMER_ID, sort=False).size().loc[users].to_numpy()
    y = np.array([p in truth[c] for c, p in zip(full[CUSTOMER_ID], full[PRODUCT_ID], strict=True)], float)
    n_rel = np.array([len(truth[u]) for u in users])
    gate = ndcg_by_group(full[SCORE].to_numpy(float), y, groups, n_rel) * len(users) / len(truth)
    assert gate == pytest.approx(report, abs=1e-12)
    assert 0.05 < report < 1.0  # a real ranking, not an all-zero agreement


def test_tifu_settings_are_tuned_and_the_blend_weighs_tifu_when_fitted_with_baskets(small_shop, data, truth
                                                                                     ) -> None:
    baskets = build_baskets(small_shop, data)
    tt = tune_tifu(data, baskets, truth, CFG)
    assert len(tt.trials) == len(TIFU_GRID) * len(TIFU_ALPHAS) * len(TIFU_NEIGHBOURS)
    best = [t for t in tt.trials if t["params"] == tt.params][0]
    assert best["ndcg@10"] == tt.best
    # the tuning judge measures what recommending with those settings gives (the same rules applied)
    cfg = replace(CFG, tifu=tuple(tt.params.items()))
    tifu = MODELS["tifu_knn"](cfg).fit(data, baskets=baskets)  # type: ignore[call-arg]
    assert tifu.tifu.alpha == tt.params["alpha"]
    report = ranking_report(tifu.recommend(list(truth), 10), truth)["ndcg@10"]
    assert tt.best == pytest.approx(report, abs=1e-12)
    tuned = BlendRecommender(replace(cfg, blend_weights=None)).fit(data, baskets=baskets)
    assert "tifu" in tuned.components_
    main = tune_weights(tuned, truth)
    assert len(main.trials) == (len(WEIGHT_GRID) + len(TIFU_WEIGHT_GRID) + 3 * len(EASE_STEPS)
                                + 3 * len(RISING_STEPS))
    alone = [t for t in main.trials if t["weights"].get("tifu") == 1.0 and sum(t["weights"].values()) == 1.0]
    assert len(alone) == 1 and main.best >= alone[0]["ndcg@10"]
    # a blend weighing TIFU-KNN cannot be fitted without baskets; it says how to
    with pytest.raises(ModelFitError, match="build_baskets"):
        BlendRecommender(replace(cfg, blend_weights=(("tifu", 1.0),))).fit(data)
    fixed = BlendRecommender(replace(cfg, blend_weights=(("tifu", 1.0),))).fit(data, baskets=baskets)
    recs = fixed.recommend(list(truth), 10)
    assert ranking_report(recs, truth)["ndcg@10"] == pytest.approx(alone[0]["ndcg@10"], abs=1e-12)
    # TIFU-KNN's own products in its order come first (the blend fills the rest of a list, TIFU-KNN leaves it)
    own = tifu.recommend(list(truth), 10)
    head = recs.merge(own[[CUSTOMER_ID, RANK]].groupby(CUSTOMER_ID).size().rename("n").reset_index())
    head = head[head[RANK] <= head["n"]]
    pd.testing.assert_frame_equal(head[[CUSTOMER_ID, PRODUCT_ID]].reset_index(drop=True),
                                  own[[CUSTOMER_ID, PRODUCT_ID]].reset_index(drop=True))


def test_tifu_tuning_in_customer_batches_gives_the_trials_of_one_batch(small_shop) -> None:
    """tune_tifu scores customers in batches (memory); the trials equal those of scoring all at once, and
    the blend's TIFU-KNN component taken from the tuning is the one a fit with the chosen settings gives."""
    from models.recsys import TIFUKNNRecommender, build_baskets
    from training.blend_tuning import tune_tifu
    cutoff = pd.Timestamp("2025-10-01")
    data = build_interactions(small_shop, cutoff)
    baskets = build_baskets(small_shop, data)
    truth = purchase_truth(small_shop, cutoff, cutoff + pd.Timedelta(days=56))
    small = tune_tifu(data, baskets, truth, CFG, batch=97)
    one = tune_tifu(data, baskets, truth, CFG, batch=10**9)
    assert len(small.trials) == 27 and small.trials == one.trials and small.params == one.params
    cfg = replace(CFG, tifu=tuple(small.params.items()))
    comp = small.component(cfg)
    fresh = TIFUKNNRecommender(cfg).fit(data, baskets=baskets)
    assert comp is not None
    np.testing.assert_array_equal(comp.neighbours_, fresh.neighbours_)
    users = list(data.users.ids[:200])
    pd.testing.assert_frame_equal(comp.recommend(users, k=10), fresh.recommend(users, k=10), check_exact=True)


def test_components_do_not_depend_on_tifu_settings_except_tifu_itself(data) -> None:
    """The evaluation's baselines are fitted before TIFU-KNN's settings are tuned; the production blend (with
    the tuned settings) takes them all the same: only TIFU-KNN reads its settings."""
    fitted = {n: MODELS[n](CFG).fit(data) for n in ("als", "item_knn", "ease")}
    tuned = replace(CFG, tifu=(("alpha", 0.3), ("neighbours", 50)))
    assert set(reusable_components(fitted, data, tuned)) == {"als", "item_knn", "ease"}


def test_blend_lists_are_the_blends_own_recommendations(data, truth) -> None:
    """The evaluation computes a blend's all-items and discovery lists from one pass of component scores
    (blend_lists); they are the lists recommend() gives, re-ranker included."""
    from models.recsys import DISCOVERY_RULES, Reranker
    from models.recsys.rerank import RerankConfig
    from training.rec_eval import blend_lists
    from training.rerank_training import rerank_rows
    cfg = replace(CFG, blend_weights=(("buy_again", 1.0), ("item_knn", 0.5), ("als", 0.5),
                                      ("popularity", 0.1)),
                  discovery_weights=(("item_knn", 1.0), ("ease", 1.0), ("popularity", 0.1)))
    m = BlendRecommender(cfg).fit(data)
    new = new_items_truth(data, truth)
    X, y, g, _ = rerank_rows(m, new)
    m.attach_reranker(Reranker(RerankConfig(min_customers=5, trees=10)).fit(X, y, g))
    users = [u for u in truth if u in data.users]
    some = set(list(new)[::2])
    got_all, got_new = blend_lists(m, users, some, k=10, batch=37)
    want_new = m.recommend([u for u in users if u in some], k=10, rules=DISCOVERY_RULES)
    for got, want in ((got_all, m.recommend(users, k=10)), (got_new, want_new)):
        # the same products in the same ranks; the scores to float32's rounding: ALS's factors are float32,
        # and OpenBLAS multiplies a batch of 37 customers with other kernels than one of all of them on some
        # CPUs (AMD EPYC with AVX-512: up to 8e-8 apart, the last rows of a batch); on CPUs where the kernels
        # are the same, the scores are equal to the last bit
        pd.testing.assert_frame_equal(got.drop(columns=SCORE), want.drop(columns=SCORE), check_exact=True)
        np.testing.assert_allclose(got[SCORE].to_numpy(), want[SCORE].to_numpy(), rtol=1e-6, atol=0)
    assert len(got_new) and set(got_new[CUSTOMER_ID]) <= some
