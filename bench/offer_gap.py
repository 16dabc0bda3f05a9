"""Where the simulator's offer policy loses to the feature ceiling: uplift ranking, expected-value arithmetic
or the audience rule.

The production policy (``training.offer_eval.policy_benchmark``: the uplift model fitted on the sends before
the cutoff, ``OfferPolicy.score`` on one channel, ``choose_audience`` within the same budget) is rebuilt with
one piece at a time replaced by the simulator's truth or by a model fitted on the truth from the same
features, and each variant's realised value (true expected incremental margin of its choices) is reported as
a share of the oracle's:

- ``true_uplift``: the policy's arithmetic with the true uplift in place of the model's;
- ``true_uplift_redeem``: also the true P(redeem | offer);
- ``uplift_ceiling``: a LightGBM fitted on the true uplift from the same features (out of fold), in the
  policy's arithmetic: what a perfect uplift learner on these features could give the policy;
- ``feature_ceiling``: the benchmark's ceiling (LightGBM on the true expected incremental margin);
- ``oracle``: the truth itself.

    python bench/offer_gap.py --seeds 42,7          # simulates shops it does not have, prints a table
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from features.customer import customer_features  # noqa: E402
from features.io import load_shop  # noqa: E402
from features.schema import AVG_ORDER_VALUE, CUSTOMER_ID, N_ORDERS, OFFER_ID, RETURN_RATE  # noqa: E402
from features.sim_truth import redeem_prob  # noqa: E402
from features.simulate import simulate_shop  # noqa: E402
from models.customer import CustomerModelConfig  # noqa: E402
from models.offers import OfferPolicy, choose_audience, parse_catalogue  # noqa: E402
from models.offers.uplift import S_LEARNER, UpliftModel  # noqa: E402
from training.offer_eval import _feature_ceiling, fit_uplift  # noqa: E402

CUTOFF = pd.Timestamp("2025-09-01")
SCALES = (0.5, 1.5, 2.0)


def shop_dir(seed: int, customers: int) -> Path:
    d = ROOT / "var" / "bench" / (f"sim{customers}" if seed == 42 else f"sim{customers}_s{seed}")
    if not (d / "orders.parquet").exists():
        simulate_shop(d, customers=customers, seed=seed)
    return d


def _oof(F: pd.DataFrame, y: np.ndarray, ids: pd.Series, seed: int) -> np.ndarray:
    """Out-of-fold LightGBM regression of ``y`` on ``F`` (customers in two halves), as the feature ceiling."""
    import lightgbm as lgb
    half = pd.factorize(ids)[0] % 2
    pred = np.zeros(len(F))
    for f in (0, 1):
        m = lgb.LGBMRegressor(n_estimators=400, learning_rate=0.03, num_leaves=31, min_child_samples=50,
                              random_state=seed, verbose=-1, num_threads=1).fit(F[half != f], y[half != f])
        pred[half == f] = m.predict(F[half == f])
    return pred


def _value(up: np.ndarray, p_redeem: np.ndarray, k: dict[str, np.ndarray], margin_rate: float) -> np.ndarray:
    """The policy's expected incremental margin (``models.offers.policy``) from an uplift and a P(redeem)."""
    return up * k["basket"] * margin_rate * (1 - k["ret"]) - p_redeem * k["cost_red"] - k["send"]


def gap(seed: int, customers: int, learners: tuple[str, ...], budget_share: float = 0.2,
        channel: str = "sms") -> dict[str, Any]:
    """Realised value of every variant (module docstring) on the simulated shop of ``seed``; the candidates
    are those of the production policy (eligible on ``channel``), the budget ``budget_share`` of customers."""
    d = shop_dir(seed, customers)
    shop = load_shop(d)
    t = pd.read_parquet(d / "truth" / "uplift.parquet").set_index([CUSTOMER_ID, OFFER_ID])
    sens_all = pd.read_parquet(d / "truth" / "customers.parquet").set_index(CUSTOMER_ID)["price_sensitivity"]
    cat = parse_catalogue(shop.offers)
    X = customer_features(shop, shop.end)
    X = X[X[N_ORDERS] > 0]
    churn = pd.Series(0.5, index=X.index)
    out: dict[str, Any] = {"seed": seed}
    cands = {spec: OfferPolicy(cat, fit_variant(shop, spec)).score(X, churn, shop.end, channel=channel)
             for spec in learners}
    base = next(iter(cands.values()))  # the candidates do not depend on the model, only their values do
    send = float(base["send_cost"].median())
    budget = max(budget_share * len(X) * send, send)

    def realised(values: np.ndarray) -> float:
        sel = choose_audience(base.assign(expected_value=values), budget)
        keys = list(zip(sel[CUSTOMER_ID], sel[OFFER_ID], strict=True))
        return float(t["expected_incremental_margin"].reindex(keys).fillna(0.0).sum())

    tv = t.reindex(list(zip(base[CUSTOMER_ID], base[OFFER_ID], strict=True)))
    true_value = tv["expected_incremental_margin"].fillna(0).to_numpy()
    out["oracle"] = realised(true_value)
    out["feature_ceiling"] = realised(_feature_ceiling(base.assign(expected_value=true_value), X, 42))
    Xc = X.loc[base[CUSTOMER_ID].to_numpy()]
    b = Xc[AVG_ORDER_VALUE].fillna(X[AVG_ORDER_VALUE].median()).clip(lower=0).to_numpy(float)
    k = {"basket": b, "ret": Xc[RETURN_RATE].fillna(0).clip(0, 1).to_numpy(float),
         "send": base["send_cost"].to_numpy(float),
         "cost_red": np.array([cat.get(o).cost_on_redemption(np.array([bb]))[0]
                               for o, bb in zip(base[OFFER_ID], b, strict=True)])}
    up_true = tv["uplift_p"].fillna(0).to_numpy()
    true_red = up_true + tv["base_p"].fillna(0).to_numpy() * redeem_prob(
        sens_all.reindex(base[CUSTOMER_ID]).to_numpy(float))
    up_ceiling = _oof(_ceiling_frame(base, X), up_true, base[CUSTOMER_ID], 42)
    out["true_uplift"] = realised(_value(up_true, base["p_redeem"].to_numpy(), k, cat.margin_rate))
    out["true_uplift_redeem"] = realised(_value(up_true, true_red, k, cat.margin_rate))
    out["uplift_ceiling"] = realised(_value(up_ceiling, base["p_redeem"].to_numpy(), k, cat.margin_rate))
    out["spearman_uplift_ceiling"] = float(pd.Series(up_ceiling).corr(pd.Series(up_true), method="spearman"))
    for spec, cand in cands.items():
        u, pr = cand["uplift"].to_numpy(), cand["p_redeem"].to_numpy()
        out[f"production_{spec}"] = realised(cand["expected_value"].to_numpy())
        out[f"spearman_{spec}"] = float(pd.Series(u).corr(pd.Series(up_true), method="spearman"))
        for x in SCALES:  # the model's uplift times x in the same arithmetic: is its size right?
            out[f"production_{spec}_uplift_x{x}"] = realised(_value(u * x, pr, k, cat.margin_rate))
        out[f"production_{spec}_true_redeem_model"] = realised(_value(u, _redeem_of(u, true_red, up_true), k,
                                                                      cat.margin_rate))
    return out


def _redeem_of(u: np.ndarray, true_red: np.ndarray, up_true: np.ndarray) -> np.ndarray:
    """The true P(redeem) with the model's uplift in place of the true one (the orders the model believes the
    offer causes redeem it): the model's own arithmetic with only the sure-thing redemptions true."""
    return np.clip(true_red - up_true + u, 0, 1)


def fit_variant(shop: Any, spec: str) -> UpliftModel:
    """``learner[:t<trees>_l<leaves>_m<rows per leaf>_n<models>_noscale]``: the uplift model fitted like the
    train job's (``fit_uplift``) on the sends before the cutoff, with the settings the spec changes."""
    learner, _, rest = spec.partition(":")
    if not rest:
        model = fit_uplift(shop, CUTOFF, 42, learner)
        assert model is not None
        return model
    from training import frames
    kw = {"t": 100, "l": 7, "m": 200, "n": 5, "r": 30}
    for part in rest.split("_"):
        if part[0] in kw and part[1:].isdigit():
            kw[part[0]] = int(part[1:])
    cfg = CustomerModelConfig(n_estimators=kw["t"], learning_rate=kw["r"] / 1000, num_leaves=kw["l"],
                              min_child_samples=kw["m"], seed=42)
    X, y = frames.uplift(shop, CUTOFF)
    model = UpliftModel(cfg, learner=learner, n_models=kw["n"]).fit(X, y[OFFER_ID], y["treated"], y["bought"],
                                                                   y["redeemed"])
    if "noscale" in rest:
        model.scale_ = {}
    return model


def _ceiling_frame(cand: pd.DataFrame, X: pd.DataFrame) -> pd.DataFrame:
    from features.customer import CATEGORICAL
    F = X.loc[cand[CUSTOMER_ID].to_numpy()].reset_index(drop=True)
    for c in F.columns:
        if c in CATEGORICAL or not pd.api.types.is_numeric_dtype(F[c]):
            F[c] = F[c].astype("string").astype("category")
    F[OFFER_ID] = pd.Categorical(cand[OFFER_ID].astype(object).to_numpy())
    return F


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="42,7")
    ap.add_argument("--customers", type=int, default=20000)
    ap.add_argument("--learners", default=S_LEARNER)
    a = ap.parse_args()
    rows = []
    for s in (int(x) for x in a.seeds.split(",")):
        r = gap(s, a.customers, tuple(x for x in a.learners.split(",") if x))
        rows.append(r)
        print(json.dumps(r), flush=True)
    df = pd.DataFrame(rows).set_index("seed")
    share = df[[c for c in df.columns if not c.startswith("spearman")]].div(df["oracle"], axis=0)
    print(share.T.round(3).to_string())


if __name__ == "__main__":
    main()
