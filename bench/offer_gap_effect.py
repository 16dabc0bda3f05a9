"""Variants of the DR/R-learner's effect regression on the simulator, in ``bench/offer_gap.py``'s arithmetic:
does a learner aimed at the uplift itself rank better than production's S-learner with other settings?

The outcome models are fitted once per shop (``UpliftModel(learner="dr_learner")``: the S-learner on half
the customers predicting the other half), then only the regression of the effect changes:

- ``dr_t<trees>_l<leaves>_m<rows per leaf>`` / ``r_...``: the DR / R pseudo-outcome with other tree settings;
- ``init_only`` / ``init_scaled_only``: the out-of-fold S-learner uplift alone (as is / scaled to the DR
  average effect); ``init_dr_...``: that uplift as the start, trees fitted on the DR pseudo-outcome's rest;
- ``x_...``: Künzel's X-learner (``y - mu0`` on treated rows, ``mu1 - y`` on control rows, combined with the
  treated share as weight; ``_t1only``: the treated rows' regression alone).

    python bench/offer_gap_effect.py --seeds 42,7          # prints one json line per seed (shares of oracle)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import bench.offer_gap as og  # noqa: E402
from features.customer import CATEGORICAL  # noqa: E402
from features.io import load_shop  # noqa: E402
from features.schema import OFFER_ID  # noqa: E402
from models.customer import CustomerModelConfig  # noqa: E402
from models.offers.effect_regression import (  # noqa: E402
    EffectRegressor,
    customer_folds,
    propensity,
    pseudo_outcomes,
)
from models.offers.uplift import DR_LEARNER, UpliftModel  # noqa: E402
from training import frames  # noqa: E402


def _average(models: list[EffectRegressor], G: pd.DataFrame) -> np.ndarray:
    M = models[0].design_matrix(G)
    return np.mean([m.predict_matrix(M) for m in models], axis=0)  # type: ignore[no-any-return]


class _Variant(UpliftModel):
    """The fitted DR model with another effect: ``init`` x the out-of-fold S-learner uplift, plus ``effect_``
    trees, or the X-learner's ``tau0``/``tau1`` combined with weight ``g``."""

    init: float = 0.0
    tau0: list[EffectRegressor] | None = None
    tau1: list[EffectRegressor] | None = None
    g: float = 0.9

    def _effect_probabilities(self, X: pd.DataFrame, offer_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        F = self._frame(X, offer_ids, 1.0)
        pr = [self._probabilities(F, m) for m in self.nuisance_]
        p0 = np.mean([p[1] for p in pr], axis=0)
        G = X.assign(**{OFFER_ID: pd.Categorical(offer_ids)})
        if self.tau0 is not None and self.tau1 is not None:
            return p0 + self.g * _average(self.tau0, G) + (1 - self.g) * _average(self.tau1, G), p0
        tau = self.init * np.mean([p[0] - p[1] for p in pr], axis=0)
        if self.effect_:
            tau = tau + _average(self.effect_, G)
        return p0 + tau, p0


def variants(seed: int, customers: int) -> dict[str, UpliftModel]:
    shop = load_shop(og.shop_dir(seed, customers))
    X, y = frames.uplift(shop, og.CUTOFF)
    cfg = CustomerModelConfig(n_estimators=100, learning_rate=0.03, num_leaves=7, min_child_samples=200,
                              seed=42)
    oid, t = y[OFFER_ID].astype(object).to_numpy(), y["treated"].to_numpy(bool)
    yb = y["bought"].to_numpy(float)
    base = UpliftModel(cfg, learner=DR_LEARNER).fit(X, oid, t, yb, y["redeemed"])
    fold = customer_folds(X.index, 2, cfg.seed)
    mu1, mu0 = np.zeros(len(yb)), np.zeros(len(yb))
    for f in (0, 1):
        h = fold == f
        mu1[h], mu0[h] = base._probabilities(base._frame(X[h], oid[h], 1.0), base.nuisance_[f])
    e = propensity(oid, t)
    G = X.assign(**{OFFER_ID: pd.Categorical(oid)})

    def reg(target: np.ndarray, rows: np.ndarray, trees: int, leaves: int, leaf: int,
            weight: np.ndarray | None = None) -> list[EffectRegressor]:
        c = CustomerModelConfig(n_estimators=trees, learning_rate=0.03, num_leaves=leaves,
                                min_child_samples=leaf, seed=42)
        w = None if weight is None else weight[rows]
        return [EffectRegressor(replace(c, seed=42 + i), [*CATEGORICAL, OFFER_ID])
                .fit_weighted(G[rows], target[rows], w) for i in range(5)]

    def variant(**kw: Any) -> UpliftModel:
        v = copy.copy(base)
        v.__class__ = _Variant
        for k, val in kw.items():
            setattr(v, k, val)
        return v

    out: dict[str, UpliftModel] = {DR_LEARNER: base}
    everyone = np.ones(len(yb), bool)
    for kind in ("dr", "r"):
        target, weight = pseudo_outcomes(kind, t, yb, e, mu1, mu0)
        for trees, leaves, leaf in ((300, 3, 2000), (300, 7, 1000)):
            out[f"{kind}_t{trees}_l{leaves}_m{leaf}"] = variant(
                effect_=reg(target, weight > 0, trees, leaves, leaf, None if kind == "dr" else weight))
    s_oof = mu1 - mu0
    target, _ = pseudo_outcomes("dr", t, yb, e, mu1, mu0)
    scale = float(np.clip(target.mean() / s_oof.mean(), 0, 10))
    out["init_only"] = variant(init=1.0, effect_=[])
    out["init_scaled_only"] = variant(init=scale, effect_=[])
    out["init_dr_t100_l3_m2000"] = variant(init=1.0, effect_=reg(target - s_oof, everyone, 100, 3, 2000))
    out["init_dr_t100_l3_m2000_scaled"] = variant(init=scale,
                                                  effect_=reg(target - scale * s_oof, everyone, 100, 3, 2000))
    for trees, leaves, leaf in ((100, 7, 200), (300, 3, 2000)):
        tau1, tau0 = reg(yb - mu0, t, trees, leaves, leaf), reg(mu1 - yb, ~t, trees, leaves, leaf)
        name = f"x_t{trees}_l{leaves}_m{leaf}"
        out[name] = variant(tau0=tau0, tau1=tau1, g=float(e[t].mean()))
        out[f"{name}_t1only"] = variant(tau0=tau0, tau1=tau1, g=0.0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="42,7")
    ap.add_argument("--customers", type=int, default=20000)
    a = ap.parse_args()
    for seed in (int(s) for s in a.seeds.split(",")):
        vs = variants(seed, a.customers)
        og.fit_variant = lambda shop, spec, vs=vs: vs[spec]  # type: ignore[assignment]
        r = og.gap(seed, a.customers, tuple(vs))
        share = {k: (v if k == "seed" or k.startswith("spearman") else round(v / r["oracle"], 4))
                 for k, v in r.items() if "_uplift_x" not in k and "true_redeem" not in k}
        print(json.dumps(share), flush=True)


if __name__ == "__main__":
    main()
