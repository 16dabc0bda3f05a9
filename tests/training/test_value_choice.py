"""When stacked windows fit, the value model served is the stacked model alone or its blend with the naive
baselines, whichever ranked better on a validation window that ends at the cutoff (never after it)."""

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


def _buyers(shop: Any, cutoff: pd.Timestamp) -> pd.DataFrame:
    from features.customer import customer_features
    X = customer_features(shop, cutoff)
    return X[X["n_orders"] > 0]


@pytest.mark.filterwarnings("ignore:An input array is constant")  # the blind model's Spearman
def test_the_choice_is_the_better_candidate_on_the_validation_window(shop) -> None:
    from training.value_choice import STACKED, STACKED_BLEND, choose_stacked_value
    cutoff = _cutoff(shop)
    X = _buyers(shop, cutoff)
    blended = {}
    for name, cfg in (("trained", CFG), ("blind", BLIND)):
        model = _fitted(shop, cutoff, cfg)
        c = choose_stacked_value(shop, cutoff, cfg, model)
        val = c.validation
        assert val["end"] == str(cutoff.date()) and val["horizon_days"] == H  # the horizon itself fits
        assert val["cutoff"] == str((cutoff - pd.Timedelta(days=H)).date())
        score = {k: m["spearman"] + m["gini"] for k, m in val["value"].items()}
        score = {k: (s if np.isfinite(s) else -np.inf) for k, s in score.items()}
        best = STACKED if score[STACKED] >= score[STACKED_BLEND] else STACKED_BLEND
        assert c.chosen == best and c.selection["value"]["chosen"] == best, (name, score)
        assert "chosen on the validation window" in c.reason
        if best == STACKED:
            assert c.value is model
        else:  # the model fitted as of the cutoff, half, and each naive baseline a quarter
            assert isinstance(c.value, Blend)
            want = (0.5 * model.predict(X) + 0.25 * last_period_baseline(X, H)
                    + 0.25 * historical_rate_baseline(X, H))
            np.testing.assert_allclose(c.value.predict(X).to_numpy(), want.to_numpy())
        blended[name] = c.chosen
    # a model that ranks nobody (one score for all) loses to the blend, which ranks by the baselines
    assert blended["blind"] == STACKED_BLEND


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
    base = choose_stacked_value(shop, cutoff, CFG, model)
    after = choose_stacked_value(scrambled(ts >= cutoff), cutoff, CFG, model)
    assert after.validation == base.validation and after.chosen == base.chosen and after.reason == base.reason
    X = _buyers(shop, cutoff)
    pd.testing.assert_series_equal(after.value.predict(X), base.value.predict(X))
    late = (ts < cutoff) & (ts >= cutoff - pd.Timedelta(days=14))
    before = choose_stacked_value(scrambled(late), cutoff, CFG, model)
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
    or the model), with the evaluation's reason; a short-history selection or none leaves the refit to
    validate itself."""
    from training.customer_selection import SHORT_BLEND
    from training.value_choice import STACKED, STACKED_BLEND, evaluated_choice

    class Model:  # stands for the refit's fitted value model
        pass

    m = Model()
    sel = {"value": {"chosen": STACKED_BLEND, "reason": "chosen on the validation window a to b"},
           "validation": {"horizon_days": 90}}
    got = evaluated_choice(sel, m, 90)  # type: ignore[arg-type]
    assert got is not None and got.chosen == STACKED_BLEND and got.value is not m
    assert "as chosen in the evaluation (chosen on the validation window a to b)" == got.reason
    assert got.selection["validation"] == {"horizon_days": 90}
    alone = evaluated_choice({"value": {"chosen": STACKED, "reason": "r"}}, m, 90)  # type: ignore[arg-type]
    assert alone is not None and alone.value is m
    assert evaluated_choice({"value": {"chosen": SHORT_BLEND, "reason": "r"}}, m, 90) is None  # type: ignore
    assert evaluated_choice(None, m, 90) is None  # type: ignore[arg-type]
