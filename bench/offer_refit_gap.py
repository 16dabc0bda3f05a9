"""Why the offer model shipped after refitting on every campaign realises less of the oracle than the one
fitted before the evaluation cutoff (issue #20: 0.59 against 0.53 on ``bench/RESULTS.md``'s shop).

Both are judged by the same policy benchmark (``training.offer_eval.policy_benchmark``: customer features at
the data end, ``OfferPolicy.score`` on sms, ``choose_audience`` within 20% of customers, the simulator's true
expected incremental margin of the chosen pairs as a share of the oracle's). Every model here is fitted with
``fit_uplift``'s settings on a subset of the same uplift rows (one frame of every send, features at the send
date), so the variants differ only in the rows, the model seed, the per-offer scale or the outcomes:

- ``campaigns``: per campaign, rows, treated share (the 90/10 randomisation), the measured effect (treated
  minus control purchase rate in the window) against the true mean uplift of its sends (simulator truth),
  and the share of its customers alive at the send;
- ``seeds``: before the cutoff vs every campaign, over several model seeds (noise of the fit);
- ``shipped``: the model the train job ships (``training.refit._offers`` under the job's frame source,
  ``TrainConfig`` defaults: sampling cap, seed, as-of date) against ``fit_uplift(shop, shop.end)``;
- ``scale``: each model's outcome trees with the other's per-offer scale (``UpliftModel.scale_``);
- ``ranking``: Spearman of each model's uplift with the true uplift over the candidates at the data end (all,
  and per offer), and the mean predicted against the mean true uplift per offer;
- ``subsets``: the before-cutoff campaigns plus one later campaign at a time, and other sets of campaigns;
- ``redraw``: the outcomes redrawn from the simulator's truth several times (a base order with the true base
  P(order), an induced one with the true uplift when treated; ``--additive``: P = base + treated x uplift;
  ``--season``: each campaign's base rate as its control group's),
  both models fitted on each draw: is the refit worse on average, or on this draw?
- ``baseline``: the uplift model without and with each campaign's own purchase baseline
  (``UpliftModel(baseline=...)``, ``models.offers.campaign_baseline``), paired: before-cutoff and refit share
  of the oracle, Qini on the sends after the cutoff, the campaigns' offsets; with ``--draws`` the same pair
  on outcomes redrawn as in ``redraw`` (``--season``: with each campaign's base rate).

``--baseline campaign`` fits every model of the other parts with the campaign baseline.

Nothing here reads the held-out campaigns' outcomes to choose anything: it explains, it does not tune.

    python bench/offer_refit_gap.py --seeds 42,7                      # every part, prints tables
    python bench/offer_refit_gap.py --seeds 42,7 --parts seeds --model-seeds 42,43,44,45,46,47,48,49
"""

from __future__ import annotations

import argparse
import copy
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

from bench.offer_gap import CUTOFF, shop_dir  # noqa: E402
from features.customer import customer_features  # noqa: E402
from features.io import Shop, load_shop  # noqa: E402
from features.schema import CAMPAIGN_ID, CUSTOMER_ID, DISCOUNT_SHARE, N_ORDERS, OFFER_ID, SENT_AT  # noqa: E402
from models.customer import CustomerModelConfig  # noqa: E402
from models.offers import (  # noqa: E402
    OfferPolicy,
    choose_audience,
    parse_catalogue,
    qini,
    shared_control_weights,
)
from models.offers.campaign_baseline import campaign_offsets, row_offsets  # noqa: E402
from models.offers.reasons import DISCOUNT_RESPONSIVE  # noqa: E402
from models.offers.uplift import CAMPAIGN_BASELINE, NO_BASELINE, UpliftModel  # noqa: E402
from training import frames  # noqa: E402
from training.offer_eval import fit_uplift  # noqa: E402

WINDOW = pd.Timedelta(days=14)
RATE_BASELINE = "campaign_rate"
"""A bench-only baseline: :data:`CAMPAIGN_BASELINE`'s offsets from the control groups' raw purchase rates,
without taking the customer mix out (:class:`RateBaseline`)."""


class RateBaseline(UpliftModel):
    """The campaign-baseline S-learner with each campaign's offset from its control group's raw rate (every
    row's P(order) from the mix taken as the overall rate), shrunk and centred alike."""

    def _campaign_offsets(self, X: pd.DataFrame, t: np.ndarray, y: np.ndarray, campaigns: Any
                          ) -> np.ndarray | None:
        camp = np.asarray(campaigns, dtype=object)
        offsets = campaign_offsets(np.full(len(y), y.mean()), camp, t, y)
        if not offsets:
            return None
        self.offsets_ = offsets
        return row_offsets(offsets, camp)
PARTS = ("campaigns", "seeds", "shipped", "scale", "ranking", "subsets", "redraw", "baseline")


class Bench:
    """One simulated shop: its uplift rows (every send), the candidates at the data end and the truth."""

    def __init__(self, seed: int, customers: int, baseline: str = NO_BASELINE) -> None:
        self.seed = seed
        self.baseline = baseline
        self.dir = shop_dir(seed, customers)
        self.shop: Shop = load_shop(self.dir)
        self.X, self.y = frames.uplift(self.shop, self.shop.end + pd.Timedelta(seconds=1))
        self.sent = pd.to_datetime(self.y[SENT_AT])
        self.before = (self.sent + WINDOW <= CUTOFF).to_numpy()
        self.camps = self.y[CAMPAIGN_ID].to_numpy()
        self.cat = parse_catalogue(self.shop.offers)
        X = customer_features(self.shop, self.shop.end)
        self.Xend = X[X[N_ORDERS] > 0]
        self.truth = pd.read_parquet(self.dir / "truth" / "uplift.parquet").set_index([CUSTOMER_ID, OFFER_ID])
        self.oracle_value: float | None = None

    def fit(self, rows: np.ndarray, seed: int = 42, bought: np.ndarray | None = None,
            baseline: str | None = None) -> UpliftModel:
        """``fit_uplift``'s model on the rows where ``rows`` (outcomes ``bought`` in place of the
        observed; ``baseline``: the model's, default the bench's)."""
        cfg = CustomerModelConfig(n_estimators=100, learning_rate=0.03, num_leaves=7, min_child_samples=200,
                                  seed=seed)
        y = self.y[rows]
        b = (self.y["bought"].to_numpy() if bought is None else bought)[rows]
        kind = baseline or self.baseline
        model = (RateBaseline(cfg, baseline=CAMPAIGN_BASELINE) if kind == RATE_BASELINE
                 else UpliftModel(cfg, baseline=kind))
        return model.fit(self.X[rows], y[OFFER_ID], y["treated"], b, y["redeemed"],
                         campaigns=self.camps[rows])

    def qini(self, model: UpliftModel, bought: np.ndarray | None = None) -> float:
        """``evaluate_offers``' Qini of ``model``'s uplift on the sends at or after the cutoff (the held-out
        campaigns of ``bench/RESULTS.md``), on the observed outcomes or ``bought``."""
        held = (self.sent >= CUTOFF).to_numpy()
        yh = self.y[held].reset_index(drop=True)
        u = model.predict_pairs(self.X[held], yh[OFFER_ID].to_numpy())["uplift"].to_numpy()
        b = (self.y["bought"].to_numpy() if bought is None else bought)[held]
        return float(qini(u, yh["treated"].to_numpy(), b, shared_control_weights(yh, CUSTOMER_ID, SENT_AT))
                     ["qini"])

    def share(self, model: UpliftModel, channel: str = "sms", budget_share: float = 0.2) -> float:
        """``policy_benchmark``'s production value of ``model`` as a share of the oracle's."""
        churn = pd.Series(0.5, index=self.Xend.index)
        cand = OfferPolicy(self.cat, model).score(self.Xend, churn, self.shop.end, channel=channel)
        send = float(cand["send_cost"].median())
        budget = max(budget_share * len(self.Xend) * send, send)
        tv = self.truth["expected_incremental_margin"]

        def value(sel: pd.DataFrame) -> float:
            keys = list(zip(sel[CUSTOMER_ID], sel[OFFER_ID], strict=True))
            return float(tv.reindex(keys).fillna(0.0).sum())

        if self.oracle_value is None:
            orc = cand.assign(expected_value=tv.reindex(list(zip(cand[CUSTOMER_ID], cand[OFFER_ID],
                                                                 strict=True))).fillna(0.0).to_numpy())
            self.oracle_value = value(choose_audience(orc, budget))
        return value(choose_audience(cand, budget)) / self.oracle_value

    def campaigns(self) -> pd.DataFrame:
        """Per campaign: rows, treated share, measured effect and its standard error, the true mean uplift of
        its sends and the z of the measured effect against it (``z``), or against the effect on P(any order)
        the simulator's mechanism gives, uplift x (1 - base) (``z_mech``: an induced order of a customer who
        buys anyway does not change the 0/1 outcome), the share alive at the send (true base P(order) > 0),
        and whether it is before the cutoff."""
        t = pd.read_parquet(self.dir / "truth" / "offer_log.parquet")
        rows = []
        for c in pd.unique(self.camps):
            m = self.camps == c
            tr, b = self.y["treated"].to_numpy()[m], self.y["bought"].to_numpy()[m].astype(float)
            p1, p0 = b[tr].mean(), b[~tr].mean()
            se = np.sqrt(p1 * (1 - p1) / tr.sum() + p0 * (1 - p0) / (~tr).sum())
            tc = t[t[CAMPAIGN_ID] == c]
            rows.append({"campaign": c, "rows": int(m.sum()), "treated_share": tr.mean(),
                         "measured": p1 - p0, "se": se, "true": tc["true_uplift"].mean(),
                         "z": (p1 - p0 - tc["true_uplift"].mean()) / se,
                         "z_mech": (p1 - p0 - (tc["true_uplift"] * (1 - tc["true_base_p"])).mean()) / se,
                         "alive": (tc["true_base_p"] > 0).mean(),
                         "before_cutoff": bool(self.before[m].all())})
        return pd.DataFrame(rows)

    def alive_at_end(self) -> float:
        """Share of the candidates' customers (bought at least once, at the data end) alive at the end."""
        base = self.truth["base_p"].groupby(level=0).first().reindex(self.Xend.index)
        return float((base > 0).mean())


def part_seeds(b: Bench, seeds: list[int]) -> dict[str, Any]:
    every = np.ones(len(b.y), bool)
    before = [b.share(b.fit(b.before, s)) for s in seeds]
    after = [b.share(b.fit(every, s)) for s in seeds]
    d = np.subtract(after, before)
    return {"model_seeds": seeds, "before": before, "all": after,
            "before_mean": float(np.mean(before)), "before_sd": float(np.std(before, ddof=1)),
            "all_mean": float(np.mean(after)), "all_sd": float(np.std(after, ddof=1)),
            "diff_mean": float(d.mean()), "diff_se": float(d.std(ddof=1) / np.sqrt(len(d))),
            "all_worse": int((d < 0).sum())}


def part_shipped(b: Bench) -> dict[str, Any]:
    """The train job's refit (``training.refit._offers`` under ``training.jobs``' frame source) against the
    benchmark's ``fit_uplift(shop, shop.end)`` and this script's all-rows fit: same predictions?"""
    from training.config import TrainConfig
    from training.refit import _offers
    cfg = TrainConfig()
    source = frames.LocalFrames(cfg.max_training_rows, cfg.seed, cfg.uplift_max_rows)
    with frames.using(source):
        policy, _ = _offers(b.shop, b.shop.end + pd.Timedelta(seconds=1), cfg.seed, cfg.uplift_learner)
    assert policy is not None
    shipped = policy.uplift
    bench = fit_uplift(b.shop, b.shop.end, 42)
    mine = b.fit(np.ones(len(b.y), bool), 42)
    before = fit_uplift(b.shop, CUTOFF, 42)
    assert bench is not None and before is not None
    offers = np.array([o.id for o in b.cat.offers], dtype=object)
    Xr = b.Xend.iloc[:2000]
    ids = np.resize(offers, len(Xr))

    def diff(m: UpliftModel) -> float:
        gap = m.predict_pairs(Xr, ids)["uplift"] - shipped.predict_pairs(Xr, ids)["uplift"]
        return float(np.abs(gap).max())

    return {"frames_built": source.built, "uplift_max_rows": cfg.uplift_max_rows,
            "max_training_rows": cfg.max_training_rows, "seed": cfg.seed,
            "learner": cfg.uplift_learner, "rows_all": int(len(b.y)), "rows_before": int(b.before.sum()),
            "max_abs_diff_shipped_vs_benchmark_refit": diff(bench),
            "max_abs_diff_shipped_vs_subset_fit": diff(mine),
            "max_abs_diff_before_vs_subset_fit": float(np.abs(
                before.predict_pairs(Xr, ids)["uplift"]
                - b.fit(b.before, 42).predict_pairs(Xr, ids)["uplift"]).max()),
            "shipped": b.share(shipped), "benchmark_refit": b.share(bench), "before": b.share(before)}


def part_scale(b: Bench) -> dict[str, Any]:
    before, after = b.fit(b.before), b.fit(np.ones(len(b.y), bool))
    out: dict[str, Any] = {"scale_before": before.scale_, "scale_all": after.scale_}
    for name, model, scale in (("before", before, before.scale_), ("all", after, after.scale_),
                               ("before_with_all_scale", before, after.scale_),
                               ("all_with_before_scale", after, before.scale_),
                               ("before_unscaled", before, {}), ("all_unscaled", after, {})):
        m = copy.copy(model)
        m.scale_ = dict(scale)
        out[name] = b.share(m)
    return out


def part_ranking(b: Bench) -> dict[str, Any]:
    churn = pd.Series(0.5, index=b.Xend.index)
    out: dict[str, Any] = {}
    for name, rows in (("before", b.before), ("all", np.ones(len(b.y), bool))):
        cand = OfferPolicy(b.cat, b.fit(rows)).score(b.Xend, churn, b.shop.end, channel="sms")
        true = b.truth["uplift_p"].reindex(list(zip(cand[CUSTOMER_ID], cand[OFFER_ID], strict=True)))
        cand = cand.assign(true=true.fillna(0.0).to_numpy())
        out[f"{name}_spearman"] = float(cand["uplift"].corr(cand["true"], method="spearman"))
        for o, g in cand.groupby(OFFER_ID):
            out[f"{name}_spearman_{o}"] = float(g["uplift"].corr(g["true"], method="spearman"))
            out[f"{name}_mean_{o}"] = float(g["uplift"].mean())
            out[f"true_mean_{o}"] = float(g["true"].mean())
    return out


def subsets(b: Bench) -> dict[str, np.ndarray]:
    """Sets of campaigns to fit on: the before-cutoff ones, each later campaign added alone, all, all but
    each later one, and the latest campaigns as many as before the cutoff."""
    camps = list(pd.unique(b.camps))
    early = [c for c in camps if b.before[b.camps == c].all()]
    late = [c for c in camps if c not in early]
    out = {"before": np.isin(b.camps, early)}
    for c in late:
        out[f"before+{c}"] = np.isin(b.camps, [*early, c])
    out["all"] = np.ones(len(b.y), bool)
    for c in late:
        out[f"all-{c}"] = b.camps != c
    out[f"latest{len(early)}"] = np.isin(b.camps, camps[-len(early):])
    return out


def part_subsets(b: Bench, seeds: list[int]) -> dict[str, float]:
    return {name: float(np.mean([b.share(b.fit(rows, s)) for s in seeds]))
            for name, rows in subsets(b).items()}


def redrawn_p(b: Bench, mechanism: bool = True, season: bool = False, by_affinity: bool = False
              ) -> tuple[np.ndarray, np.ndarray]:
    """Each send's P(order) as :func:`part_redraw` draws it, and the effect on it. ``by_affinity``: the
    season's factor per campaign within each discount-affinity segment (the simulator's promotion days bring
    back its discount-responsive customers far more than the others)."""
    t = pd.read_parquet(b.dir / "truth" / "offer_log.parquet").drop_duplicates([CUSTOMER_ID, CAMPAIGN_ID])
    t = t.set_index([CUSTOMER_ID, CAMPAIGN_ID]).reindex(list(zip(b.y[CUSTOMER_ID], b.camps, strict=True)))
    base, up = t["true_base_p"].to_numpy(copy=True), t["true_uplift"].to_numpy()
    tr = b.y["treated"].to_numpy()
    if season:
        seen = b.y["bought"].to_numpy(float)
        share = b.X[DISCOUNT_SHARE].fillna(0).to_numpy(float)
        responsive = share >= DISCOUNT_RESPONSIVE
        groups = [responsive, ~responsive] if by_affinity else [np.ones(len(share), bool)]
        for c in pd.unique(b.camps):
            for g in groups:
                m = (b.camps == c) & g
                base[m] = np.clip(base[m] * seen[m & ~tr].mean() / max(base[m & ~tr].mean(), 1e-9), 0, 1)
    p = 1 - (1 - base) * (1 - tr * up) if mechanism else np.clip(base + tr * up, 0, 1)
    return p, up * (1 - base) if mechanism else up


def part_baseline(b: Bench, draws: int, mechanism: bool = True, season: bool = False,
                  variants: tuple[str, ...] = (CAMPAIGN_BASELINE,), by_affinity: bool = False
                  ) -> dict[str, Any]:
    """Without and with each campaign baseline of ``variants``, paired: before-cutoff and refit shares, the
    Qini on the sends after the cutoff (of the before-cutoff model), on the observed outcomes and on
    ``draws`` redraws."""
    every = np.ones(len(b.y), bool)
    kinds = (NO_BASELINE, *variants)

    def one(bought: np.ndarray | None) -> dict[str, float]:
        r: dict[str, float] = {}
        for k in kinds:
            before = b.fit(b.before, 42, bought, k)
            r[f"before_{k}"] = b.share(before)
            r[f"qini_{k}"] = b.qini(before, bought)
            r[f"all_{k}"] = b.share(b.fit(every, 42, bought, k))
        return r

    out: dict[str, Any] = {"observed": one(None)}
    out["offsets_all"] = b.fit(every, 42, None, CAMPAIGN_BASELINE).offsets_
    if draws:
        p, _ = redrawn_p(b, mechanism, season, by_affinity)
        rng = np.random.default_rng(b.seed)
        rows = [one(rng.random(len(p)) < p) for _ in range(draws)]
        df = pd.DataFrame(rows)
        out["draws"] = rows
        summary: dict[str, float] = {}
        for what in ("before", "qini", "all"):
            a = df[f"{what}_{NO_BASELINE}"]
            summary.update({f"{what}_none_mean": float(a.mean()), f"{what}_none_sd": float(a.std())})
            for k in variants:
                c = df[f"{what}_{k}"]
                d = c - a
                summary.update({f"{what}_{k}_mean": float(c.mean()), f"{what}_{k}_sd": float(c.std()),
                                f"{what}_{k}_diff_mean": float(d.mean()),
                                f"{what}_{k}_diff_se": float(d.std() / np.sqrt(len(d))),
                                f"{what}_{k}_wins": int((d > 0).sum())})
        out["summary"] = summary
        out["season"], out["mechanism"], out["by_affinity"] = season, mechanism, by_affinity
    return out


def part_redraw(b: Bench, draws: int, mechanism: bool = True, season: bool = False) -> dict[str, Any]:
    """Outcomes drawn again from the truth of each send (the simulator's truth offer_log joined on customer
    and campaign), both models fitted on each draw. ``mechanism``: as the simulator makes them, a base order
    with the true base P(order) or, when treated, an induced one with the true uplift (P = 1 - (1 - base)
    (1 - treated x uplift)); else P = base + treated x uplift. Per draw also the mean z of the later
    campaigns' measured effect against the effect expected under the same draw's mechanism. ``season``: each
    campaign's true base P(order) times its control group's purchase rate over their mean true base (the
    calendar's promotions and holiday peak, which the truth's base P(order) leaves out)."""
    p, effect = redrawn_p(b, mechanism, season)
    tr = b.y["treated"].to_numpy()
    rng = np.random.default_rng(b.seed)
    every = np.ones(len(b.y), bool)
    before, after, zs = [], [], []
    for _ in range(draws):
        bought = rng.random(len(p)) < p
        z = []
        for c in pd.unique(b.camps[~b.before]):
            m = b.camps == c
            y1, y0 = bought[m & tr], bought[m & ~tr]
            se = np.sqrt(y1.var() / len(y1) + y0.var() / len(y0))
            z.append((y1.mean() - y0.mean() - effect[m & tr].mean()) / se)
        zs.append(float(np.mean(z)))
        before.append(b.share(b.fit(b.before, 42, bought)))
        after.append(b.share(b.fit(every, 42, bought)))
    d = np.subtract(after, before)
    return {"mechanism": mechanism, "season": season, "before": before, "all": after, "later_z": zs,
            "before_mean": float(np.mean(before)), "all_mean": float(np.mean(after)),
            "diff_mean": float(d.mean()), "diff_se": float(d.std(ddof=1) / np.sqrt(len(d))),
            "all_worse": int((d < 0).sum()), "corr_diff_later_z": float(np.corrcoef(d, zs)[0, 1])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="42,7")
    ap.add_argument("--customers", type=int, default=20000)
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--model-seeds", default="42,43,44,45,46")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--additive", action="store_true", help="redraw with P = base + treated x uplift")
    ap.add_argument("--season", action="store_true", help="redraw with each campaign's own base rate")
    ap.add_argument("--baseline", default=NO_BASELINE, help="the uplift model's baseline in the other parts")
    ap.add_argument("--season-by-affinity", action="store_true",
                    help="with --season: the base rate per campaign and discount-affinity segment")
    ap.add_argument("--variants", default=CAMPAIGN_BASELINE,
                    help="the baselines the baseline part compares with none (and campaign_rate)")
    a = ap.parse_args()
    parts = a.parts.split(",")
    mseeds = [int(s) for s in a.model_seeds.split(",")]
    pd.set_option("display.width", 160)
    for s in (int(x) for x in a.seeds.split(",")):
        b = Bench(s, a.customers, a.baseline)
        out: dict[str, Any] = {"seed": s}
        if "campaigns" in parts:
            print(f"seed {s}: alive share of the candidates at the data end {b.alive_at_end():.3f}")
            print(b.campaigns().round(4).to_string(index=False), flush=True)
        if "seeds" in parts:
            out["seeds"] = part_seeds(b, mseeds)
        if "shipped" in parts:
            out["shipped"] = part_shipped(b)
        if "scale" in parts:
            out["scale"] = part_scale(b)
        if "ranking" in parts:
            out["ranking"] = part_ranking(b)
        if "subsets" in parts:
            out["subsets"] = part_subsets(b, mseeds[:1])
        if "redraw" in parts:
            out["redraw"] = part_redraw(b, a.draws, not a.additive, a.season)
        if "baseline" in parts:
            out["baseline"] = part_baseline(b, a.draws, not a.additive, a.season,
                                            tuple(a.variants.split(",")), a.season_by_affinity)
        print(json.dumps(out, default=float), flush=True)


if __name__ == "__main__":
    main()
