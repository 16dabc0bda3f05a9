"""BG/NBD and Gamma-Gamma fitted on the orders before a cutoff (the fallback churn and value models and their
baselines)."""

from __future__ import annotations

import pandas as pd

from features.customer import order_values
from features.exceptions import ModelFitError
from features.io import Shop
from models.bgnbd import BetaGeoModel, GammaGammaModel, rfm_summary


def fit_bgnbd(shop: Shop, cutoff: pd.Timestamp) -> tuple[BetaGeoModel, GammaGammaModel | None]:
    """BG/NBD and Gamma-Gamma (None when it cannot be fitted) on the orders before ``cutoff``."""
    rfm = rfm_summary(order_values(shop, cutoff), cutoff)
    bg = BetaGeoModel(penalizer=0.001).fit(rfm["x"], rfm["t_x"], rfm["T"])
    try:
        gg: GammaGammaModel | None = GammaGammaModel(penalizer=0.001).fit(rfm["x"], rfm["monetary"])
    except ModelFitError:
        gg = None
    return bg, gg
