"""When stacked windows fit, the value model served is the stacked model alone, its blend with the naive
baselines, BG/NBD + Gamma-Gamma or a naive baseline, whichever ranked best on a validation window that ends at
the cutoff (never after it)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features import schema
from models.customer import CustomerModelConfig, ValueModel, historical_rate_baseline, last_period_baseline
from models.customer_scorers import Blend
from tests.conftest import SEED, days_after_start, simulated_history

H, HISTORY = 30, 170
"""The horizon and the history before the cutoff: stacked 30-day windows fit as of the cutoff and as of
30 days before it (the validation window is the horizon itself)."""
CFG = CustomerModelConfig(horizon_days=H, n_estimators=40, learning_rate=0.1, n_cutoffs=3,
                          min_child_samples=20, seed=SEED, num_threads=1)
BLIND = replace(CFG, n_estimators=1, min_child_samples=100_000)
"""A value model that cannot split (fewer rows than a leaf needs): the same score for everyone."""


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return simulated_history(tmp_path_factory, "stacked_value", 300, 30, HISTORY + H + 5)


def _cutoff(shop: Any) -> pd.Timestamp:
    return days_after_start(shop, HISTORY)


def _fitted(shop: Any, cutoff: pd.Timestamp, cfg: CustomerModelConfig) -> ValueModel:
    from features.customer_labels import stacked_training_set, training_cutoffs
    cutoffs = training_cutoffs(shop, cutoff, H, cfg.n_cutoffs, cfg.cutoff_step_days)
    X, y = stacked_training_set(shop, cutoffs, H)
    return ValueModel(cfg).fit(X, y["future_net"])


def _bgnbd(shop: Any, cutoff: pd.Timestamp) -> Any:
    from training.bgnbd_fit import fit_bgnbd
    return fit_bgnbd(shop, cutoff)


def _buyers(shop: Any, cutoff: pd.Timestamp) -> pd.DataFrame:
    from features.customer import customer_features
    X = customer_features(shop, cutoff)
    return X[X["n_orders"] > 0]


@pytest.mark.filterwarnings("ignore:An input array is constant")  # the blind model's Spearman
def test_the_choice_is_the_best_candidate_on_the_validation_window(shop) -> None:
    from models.bgnbd import BGNBDCustomerModel
    from models.customer_scorers import BaselineValue
    from training.customer_selection import BGNBD
    from training.value_choice import CANDIDATES, STACKED, STACKED_BLEND, choose_stacked_value
    cutoff = _cutoff(shop)
    X = _buyers(shop, cutoff)
    bg, gg = _bgnbd(shop, cutoff)
    chosen = {}
    for name, cfg in (("trained", CFG), ("blind", BLIND)):
        model = _fitted(shop, cutoff, cfg)
        c = choose_stacked_value(shop, cutoff, cfg, model, bg, gg)
        val = c.validation
        assert val["end"] == str(cutoff.date()) and val["horizon_days"] == H  # the horizon itself fits
        assert val["cutoff"] == str((cutoff - pd.Timedelta(days=H)).date())
        assert set(val["value"]) == set(CANDIDATES)
        score = {k: m["spearman"] + m["gini"] for k, m in val["value"].items()}
        score = {k: (s if np.isfinite(s) else -np.inf) for k, s in score.items()}
        best = max(CANDIDATES, key=lambda k: (score[k], -CANDIDATES.index(k)))
        assert c.chosen == best and c.selection["value"]["chosen"] == best, (name, score)
        assert "chosen on the validation window" in c.reason
        if best == STACKED:
            assert c.value is model
        elif best == STACKED_BLEND:  # the model as of the cutoff, half, and each naive baseline a quarter
            assert isinstance(c.value, Blend)
            want = (0.5 * model.predict(X) + 0.25 * last_period_baseline(X, H)
                    + 0.25 * historical_rate_baseline(X, H))
            np.testing.assert_allclose(c.value.predict(X).to_numpy(), want.to_numpy())
        elif best == BGNBD:  # as of the cutoff, not the validation window's start
            assert isinstance(c.value, BGNBDCustomerModel) and c.value.bg is bg
        else:
            assert isinstance(c.value, BaselineValue) and c.value.name == best
        chosen[name] = c.chosen
    # a model that ranks nobody (one score for all) is never served alone
    assert chosen["blind"] != STACKED


@pytest.mark.filterwarnings("ignore:An input array is constant")  # the blind model's Spearman
def test_a_naive_baseline_that_ranked_better_before_the_cutoff_is_served(shop) -> None:
    """On this small shop a blind model's blend ranks below the historical rate on the validation window: the
    baseline is served over the horizon, and the components say why and what it beat."""
    from models.customer_scorers import BaselineValue
    from training.customer_selection import BGNBD, HISTORICAL_RATE, LAST_PERIOD
    from training.value_choice import STACKED, STACKED_BLEND, choose_stacked_value, describe
    cutoff = _cutoff(shop)
    bg, gg = _bgnbd(shop, cutoff)
    c = choose_stacked_value(shop, cutoff, BLIND, _fitted(shop, cutoff, BLIND), bg, gg)
    scores = {k: m["spearman"] + m["gini"] for k, m in c.validation["value"].items()}
    naive = max((BGNBD, LAST_PERIOD, HISTORICAL_RATE), key=lambda k: scores[k])
    assert naive == HISTORICAL_RATE and scores[naive] > scores[STACKED_BLEND], scores  # what this shop shows
    assert not scores[STACKED] == scores[STACKED]  # NaN: the blind model ranks nobody
    assert c.chosen == HISTORICAL_RATE
    assert isinstance(c.value, BaselineValue) and c.value.horizon_days == H
    X = _buyers(shop, cutoff)
    want = historical_rate_baseline(X, H).fillna(0.0).rename("score")
    pd.testing.assert_series_equal(c.value.predict(X), want)
    text = describe(c, "LightGBM (Tweedie) on 3 stacked windows")
    assert text.startswith("historical rate baseline (ranked above LightGBM (Tweedie) on 3 stacked windows)")
    assert c.reason in text and c.reason.index("historical rate") < c.reason.index("blend")  # best first


def test_the_choice_reads_nothing_from_the_cutoff_on(shop) -> None:
    """Orders from the cutoff on scrambled (other customers, other amounts): the same validation metrics,
    choice and served scores. Orders in the last two weeks before it changed: the metrics change (the test
    can fail)."""
    from training.value_choice import choose_stacked_value
    cutoff = _cutoff(shop)
    rng = np.random.default_rng(SEED)
    ts = shop.orders[schema.TS]

    def scrambled(when: pd.Series) -> Any:
        o = shop.orders.copy()
        o.loc[when, schema.CUSTOMER_ID] = rng.permutation(o.loc[when, schema.CUSTOMER_ID].to_numpy())
        o.loc[when, "unit_price"] = o.loc[when, "unit_price"] * rng.uniform(0.1, 10, when.sum())
        return replace(shop, orders=o)

    model = _fitted(shop, cutoff, CFG)
    bg, gg = _bgnbd(shop, cutoff)
    base = choose_stacked_value(shop, cutoff, CFG, model, bg, gg)
    after = choose_stacked_value(scrambled(ts >= cutoff), cutoff, CFG, model, bg, gg)
    assert after.validation == base.validation and after.chosen == base.chosen and after.reason == base.reason
    X = _buyers(shop, cutoff)
    pd.testing.assert_series_equal(after.value.predict(X), base.value.predict(X))
    late = (ts < cutoff) & (ts >= cutoff - pd.Timedelta(days=14))
    before = choose_stacked_value(scrambled(late), cutoff, CFG, model, bg, gg)
    assert before.validation["value"] != base.validation["value"]



def test_a_served_blend_is_explained_by_its_model_on_the_fast_path(shop) -> None:
    """The CRM profile explains a blended value by the model's contributions, read from the prepared arrays as
    for the model alone (not the frame path), the same answer as :meth:`Blend.explain`."""
    from serving.profile import ProfileIndex, _reasons
    from training.customer_selection import blend
    cutoff = _cutoff(shop)
    X = _buyers(shop, cutoff)
    model = _fitted(shop, cutoff, CFG)
    b = blend(model, H)
    ix = ProfileIndex.build(X, pd.DataFrame(index=X.index), pd.DataFrame(), (b,))
    for i in (0, 7, len(X) - 1):
        cid = str(X.index[i])
        got = _reasons(b, ix, i, cid, X.iloc[::-1])  # the frame path would read another customer's row
        assert got == b.explain(X.iloc[[i]])[cid] == model.explain(X.iloc[[i]])[cid]
        assert got[0]["contribution"] is not None  # the model's, not a baseline's formula


def test_the_refit_applies_an_evaluated_choice_and_only_a_stacked_one() -> None:
    """``evaluated_choice``: an evaluation's stacked choice is served as made (the blend of the refit's model,
    the model, the refit's BG/NBD + Gamma-Gamma or a baseline), with the evaluation's reason; a short-history
    selection (no ``family``, even where its candidate has a stacked candidate's name) or none leaves the
    refit to validate itself."""
    from models.bgnbd import BGNBDCustomerModel
    from models.customer_scorers import BaselineValue
    from training.customer_selection import BGNBD, HISTORICAL_RATE, SHORT_BLEND
    from training.value_choice import FAMILY, STACKED, STACKED_BLEND, evaluated_choice

    class Model:  # stands for the refit's fitted value model (and its BG/NBD)
        pass

    m, bg = Model(), Model()

    def sel(chosen: str, family: str | None = FAMILY) -> dict[str, Any]:
        v = {"chosen": chosen, "reason": "chosen on the validation window a to b"}
        return {"value": v if family is None else {**v, "family": family},
                "validation": {"horizon_days": 90}}

    got = evaluated_choice(sel(STACKED_BLEND), m, 90, bg, None)  # type: ignore[arg-type]
    assert got is not None and got.chosen == STACKED_BLEND and got.value is not m
    assert "as chosen in the evaluation (chosen on the validation window a to b)" == got.reason
    assert got.selection["validation"] == {"horizon_days": 90}
    assert got.selection["value"]["family"] == FAMILY  # a refit's choice is one again for the next
    alone = evaluated_choice(sel(STACKED), m, 90, bg, None)  # type: ignore[arg-type]
    assert alone is not None and alone.value is m
    fallback = evaluated_choice(sel(BGNBD), m, 90, bg, None)  # type: ignore[arg-type]
    assert fallback is not None and isinstance(fallback.value, BGNBDCustomerModel) and fallback.value.bg is bg
    rate = evaluated_choice(sel(HISTORICAL_RATE), m, 90, bg, None)  # type: ignore[arg-type]
    assert rate is not None and isinstance(rate.value, BaselineValue) and rate.value.name == HISTORICAL_RATE
    assert evaluated_choice(sel(HISTORICAL_RATE, family=None), m, 90, bg, None) is None  # type: ignore
    assert evaluated_choice(sel(SHORT_BLEND), m, 90, bg, None) is None  # type: ignore[arg-type]
    assert evaluated_choice(None, m, 90, bg, None) is None  # type: ignore[arg-type]
