"""Learners aimed at the uplift itself: pseudo-outcomes of a randomised campaign regressed on the features.

:class:`~models.offers.uplift.UpliftModel`'s :data:`~models.offers.uplift.DR_LEARNER` and
:data:`~models.offers.uplift.R_LEARNER` fit outcome models out of fold (:func:`customer_folds`), turn each
send into a pseudo-outcome whose expectation given the features is the offer's effect
(:func:`pseudo_outcomes`) and regress it on the features and the offer id (:class:`EffectRegressor`).

- DR-learner (Kennedy 2020): ``mu1 - mu0 + t (y - mu1) / e - (1 - t) (y - mu0) / (1 - e)``, unweighted.
- R-learner (Nie & Wager 2021): ``(y - m) / (t - e)`` with weight ``(t - e)^2``, ``m = e mu1 + (1 - e) mu0``.

``e`` is the propensity: in a randomised campaign the share of that offer's rows that were treated (the
simulator's 90/10 split, Hillstrom's shared control), known by design rather than estimated from features.

Example
-------
>>> target, weight = pseudo_outcomes("dr", t, y, e, mu1, mu0)                 # doctest: +SKIP
>>> EffectRegressor(config, ["offer_id"]).fit_weighted(F, target, weight)     # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from features.exceptions import ModelFitError
from models.customer import _LGBMBase

KINDS = ("dr", "r")


class EffectRegressor(_LGBMBase):
    """A LightGBM regression (squared error) of a pseudo-outcome on the features, with row weights."""

    objective = "regression"

    def fit_weighted(self, X: pd.DataFrame, y: Any, weight: np.ndarray | None = None) -> EffectRegressor:
        data = self.dataset(X, y)
        if weight is not None:
            data.set_weight(np.asarray(weight, float))
        self._train(data)
        return self


def propensity(offer_ids: np.ndarray, treated: np.ndarray) -> np.ndarray:
    """Per row, the treated share of the rows of its offer (the randomised assignment rate)."""
    oid = pd.Series(np.asarray(offer_ids, dtype=object)).astype(str)
    return pd.Series(np.asarray(treated, float)).groupby(oid.to_numpy()).transform("mean").to_numpy(float)


def customer_folds(index: pd.Index, k: int, seed: int) -> np.ndarray:
    """A fold number in ``0..k-1`` per row, the same for every row of one customer (a customer sent several
    campaigns is in one fold only, so no outcome model has seen the customer it predicts)."""
    codes, uniques = pd.factorize(pd.Index(index))
    return np.random.default_rng(seed).integers(0, k, len(uniques))[codes]  # type: ignore[no-any-return]


def pseudo_outcomes(kind: str, t: np.ndarray, y: np.ndarray, e: np.ndarray, mu1: np.ndarray, mu0: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(target, weight) per row (module docstring). Rows of an offer with no contrast (``e`` 0 or 1) get
    weight 0."""
    if kind not in KINDS:
        raise ValueError(f"pseudo-outcome {kind!r} is not one of {list(KINDS)}")
    t, y = np.asarray(t, float), np.asarray(y, float)
    ok = (e > 0) & (e < 1)
    es = np.where(ok, e, 0.5)
    if kind == "dr":
        target = mu1 - mu0 + t * (y - mu1) / es - (1 - t) * (y - mu0) / (1 - es)
        weight = ok.astype(float)
    else:
        m = es * mu1 + (1 - es) * mu0
        target = (y - m) / (t - es)
        weight = np.where(ok, (t - es) ** 2, 0.0)
    if not ok.any():
        raise ModelFitError("no offer has both treated and control rows: no effect to learn")
    return np.where(ok, target, 0.0), weight
