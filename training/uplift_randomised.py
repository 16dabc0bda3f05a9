"""Uplift evaluation on a randomised campaign: held-out Qini and AUUC per offer, and the policy value of
e-mailing whom a model chooses, estimated by inverse probability weighting, with bootstrap intervals.

A randomised campaign in the data contract is one ``campaign_id`` of ``offer_log`` where each customer was put
at random in one arm: the treatment group of one offer, or the control group (of one or of every offer - a
shared control appears as one control row per offer). Customers are split at random, stratified by arm, into a
training and a held-out half, for several seeds; the learners are fitted on the first and judged on the
second.

Definitions: customers sorted by predicted uplift; ``Q(k) = Y_t(k) - Y_c(k) N_t(k) / N_c(k)`` (the incremental
outcome of the top ``k``). Qini = area between ``Q`` and the random line ``Q(n) k / n``, divided by ``n^2``:
incremental outcome per customer, averaged over targeting depths (random ~ 0). ``qini_norm`` divides the same
area by ``n |Q(n)|`` instead, as ``models.offers.qini`` does: within one held-out sample the denominator is
the same for every ranking, so it orders learners identically, but across resamples it divides by a noisy
total effect and its intervals explode. AUUC = mean over ``k`` of ``(Y_t/N_t - Y_c/N_c)(k) k / n`` (as
``models.offers.qini``; outcome units per customer; random ~ half the average effect). All weighted for the
bootstrap.
Policy value: the incremental margin per e-mail sent, ``margin_rate x (IPW incremental spend) / e-mails - send
cost``; the held-out arms are random, so with the arm shares as propensities the estimate is unbiased.
Intervals: Poisson bootstrap of held-out customers (the same resamples for every learner, so differences are
paired), averaged over seeds; the spread over seeds is reported beside them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features import schema
from features.attributes import attribute_features
from features.io import Shop
from models.offers import parse_catalogue
from training.uplift_learners import CONTROL

log = logging.getLogger(__name__)
OUTCOMES = ("conversion", "spend")


@dataclass
class Campaign:
    """One row per customer of a randomised campaign."""

    X: pd.DataFrame  # features at the send date, index customer_id
    arm: np.ndarray  # "control" or the offer id
    outcomes: dict[str, np.ndarray]  # conversion (0/1) and spend (net) in the window after the send
    offers: list[str]
    margin_rate: float
    send_cost: dict[str, float]  # per offer, on its cheapest channel


def campaign_from_shop(shop: Shop, campaign_id: str | None = None, window_days: int = 14) -> Campaign:
    """The customers of one randomised campaign with their arm, outcomes and attribute features.

    Raises ``ValueError`` when the campaign is not a one-arm-per-customer design (a customer treated with two
    offers, or in both a treatment and a control group).
    """
    ol = shop.offer_log
    if ol is None or not len(ol):
        raise ValueError("the shop has no offer_log: no campaign to evaluate")
    camp = ol[schema.CAMPAIGN_ID] if schema.CAMPAIGN_ID in ol else ol[schema.OFFER_ID]
    if campaign_id is None:
        if camp.nunique() != 1:
            raise ValueError(f"offer_log holds {camp.nunique()} campaigns: name one of "
                             f"{sorted(camp.unique())[:10]}")
        campaign_id = str(camp.iloc[0])
    rows = ol[camp == campaign_id]
    treated = rows[rows["group"] == "treatment"]
    n_offers = treated.groupby(schema.CUSTOMER_ID)[schema.OFFER_ID].nunique()
    if (n_offers > 1).any():
        raise ValueError(f"campaign {campaign_id}: {int((n_offers > 1).sum())} customers received more than "
                         f"one offer, e.g. {n_offers[n_offers > 1].index[:3].tolist()}: not one arm per "
                         "customer")
    both = set(treated[schema.CUSTOMER_ID]) & set(rows.loc[rows["group"] == "control", schema.CUSTOMER_ID])
    if both:
        raise ValueError(f"campaign {campaign_id}: {len(both)} customers are in a treatment and a control "
                         "group")
    per = rows.groupby(schema.CUSTOMER_ID, sort=True).agg(sent_at=(schema.SENT_AT, "min"))
    per["arm"] = (
        treated.groupby(schema.CUSTOMER_ID)[schema.OFFER_ID].first().reindex(per.index).fillna(CONTROL)
    )
    o = shop.customer_orders()
    o = o[o[schema.CUSTOMER_ID].isin(per.index)]
    start = o[schema.CUSTOMER_ID].map(per[schema.SENT_AT])
    win = o[(o["ts"] >= start) & (o["ts"] < start + pd.Timedelta(days=window_days))]
    net = win[schema.QUANTITY] * win["unit_price"] - np.sign(win[schema.QUANTITY]) * win["discount"]
    spend = net.groupby(win[schema.CUSTOMER_ID]).sum().reindex(per.index, fill_value=0.0)
    bought = (
        (win[schema.QUANTITY] > 0).groupby(win[schema.CUSTOMER_ID]).any().reindex(per.index, fill_value=False)
    )
    cutoff = per[schema.SENT_AT].min().floor("D")
    X = attribute_features(shop.customers, shop.attributes, cutoff).reindex(per.index)
    cat = parse_catalogue(shop.offers)
    offers = sorted(set(per["arm"]) - {CONTROL})
    cost = {oid: min(cat.get(oid).cost_per_send.values()) for oid in offers}
    return Campaign(X, per["arm"].to_numpy(dtype=object), {"conversion": bought.to_numpy(float),
                                                           "spend": spend.to_numpy(float)},
                    offers, cat.margin_rate, cost)


def stratified_halves(arm: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random (training, held-out) positions, half of each arm in each."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for a in sorted(set(arm)):
        idx = rng.permutation(np.flatnonzero(arm == a))
        train.append(idx[: len(idx) // 2])
        test.append(idx[len(idx) // 2:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def qini_auuc(score: np.ndarray, treated: np.ndarray, y: np.ndarray, W: np.ndarray | None = None,
              seed: int = 0) -> dict[str, np.ndarray]:
    """``qini``, ``qini_norm`` and ``auuc`` (module docstring) of a ranking, one value per row of the weights
    ``W`` (replicates x customers; ``None``: the sample itself). Ties are broken at random (``seed``)."""
    n = len(score)
    W = np.ones((1, n)) if W is None else W
    perm = np.random.default_rng(seed).permutation(n)
    order = perm[np.argsort(-np.asarray(score, float)[perm], kind="stable")]
    t = np.asarray(treated, bool)[order].astype(float)
    yv = np.asarray(y, float)[order]
    w = W[:, order]
    nt, nc = np.cumsum(w * t, 1), np.cumsum(w * (1 - t), 1)
    yt, yc = np.cumsum(w * yv * t, 1), np.cumsum(w * yv * (1 - t), 1)
    N = np.cumsum(w, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = yt - np.where(nc > 0, yc * nt / nc, 0.0)
        lift = np.where((nt > 0) & (nc > 0), yt / nt - yc / nc, 0.0)
    total, qn = N[:, -1:], q[:, -1:]
    area = (w * (q - qn * N / total)).sum(1) / total[:, 0]
    return {"qini": area / total[:, 0], "qini_norm": area / np.maximum(np.abs(qn[:, 0]), 1e-9),
            "auuc": (w * lift * N).sum(1) / total[:, 0] ** 2}


def policy_per_email(P: np.ndarray, arm: np.ndarray, spend: np.ndarray, offers: list[str], margin_rate: float,
                     cost: dict[str, float], W: np.ndarray | None = None) -> np.ndarray:
    """IPW incremental margin per e-mail of the policy ``P`` (customers x offers: the probability of sending
    each offer; a row summing to 0 sends nothing), one value per row of ``W``."""
    W = np.ones((1, len(arm))) if W is None else W
    total = W.sum(1)
    ctrl = (arm == CONTROL).astype(float)
    p_ctrl = W @ ctrl / total
    inc = np.zeros(len(W))
    for j, o in enumerate(offers):
        mine = (arm == o).astype(float)
        inc += (W @ (P[:, j] * mine * spend)) / (W @ mine / total) - (W @ (P[:, j] * ctrl * spend)) / p_ctrl
    sends = W @ P.sum(1)
    costs = W @ (P @ np.array([cost[o] for o in offers]))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sends > 0, (margin_rate * inc - costs) / sends, np.nan)


def budget_policy(value: np.ndarray, share: float | None) -> np.ndarray:
    """Each customer's best offer by predicted incremental margin ``value`` (customers x offers) for the top
    ``share`` of customers by that margin; ``None``: every customer whose best margin is positive (the
    production rule: an offer only when it is worth its cost)."""
    best = value.argmax(1)
    top = value.max(1)
    if share is None:
        chosen = top > 0
    else:
        chosen = np.zeros(len(value), bool)
        chosen[np.argsort(-top, kind="stable")[: int(round(share * len(value)))]] = True
    P = np.zeros_like(value)
    P[np.flatnonzero(chosen), best[chosen]] = 1.0
    return P


Learner = Callable[[int], Any]
"""seed -> an unfitted learner with fit(X, arm, y) and predict(X) -> DataFrame of uplift per offer."""


Key = tuple[str, str, str, str]  # (outcome the learner was fitted on, learner, metric, offer or budget)


@dataclass
class RandomisedResult:
    """``table``: one row per key with the mean over seeds of the held-out estimate, its 95% bootstrap
    interval and the lowest and highest seed. ``replicates``: the seed mean per bootstrap replicate, for
    paired comparisons (:meth:`paired`)."""

    table: pd.DataFrame
    replicates: dict[Key, np.ndarray]

    def paired(self, a: Key, b: Key) -> tuple[float, float, float]:
        """Difference a - b: estimate and 95% interval over the same bootstrap resamples."""
        d = self.replicates[a] - self.replicates[b]
        est = self.table.set_index(["outcome", "learner", "metric", "target"])["estimate"]
        lo, hi = np.nanpercentile(d, [2.5, 97.5])
        return float(est[a] - est[b]), float(lo), float(hi)


class _Recorder:
    def __init__(self) -> None:
        self.points: dict[Key, list[float]] = {}
        self.boots: dict[Key, list[np.ndarray]] = {}

    def add(self, key: Key, point: np.ndarray, boot: np.ndarray) -> None:
        self.points.setdefault(key, []).append(float(point[0]))
        self.boots.setdefault(key, []).append(boot)

    def result(self) -> RandomisedResult:
        rows, reps = [], {}
        for key, pts in self.points.items():
            rep = np.mean(self.boots[key], axis=0)
            lo, hi = np.nanpercentile(rep, [2.5, 97.5])
            reps[key] = rep
            rows.append({"outcome": key[0], "learner": key[1], "metric": key[2], "target": key[3],
                         "estimate": float(np.mean(pts)), "ci_low": float(lo), "ci_high": float(hi),
                         "seed_min": float(np.min(pts)), "seed_max": float(np.max(pts)), "seeds": len(pts)})
        return RandomisedResult(pd.DataFrame(rows), reps)


@dataclass
class _Split:
    """One seed's halves, its bootstrap weights of the held-out customers, and what is judged on them."""

    c: Campaign
    seed: int
    train: np.ndarray
    test: np.ndarray
    W: np.ndarray

    @classmethod
    def make(cls, c: Campaign, seed: int, n_boot: int) -> _Split:
        tr, te = stratified_halves(c.arm, seed)
        return cls(c, seed, tr, te,
                   np.random.default_rng(10_000 + seed).poisson(1.0, (n_boot, len(te))).astype(float))

    def policy(self, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        args = (self.c.arm[self.test], self.c.outcomes["spend"][self.test], self.c.offers, self.c.margin_rate,
                self.c.send_cost)
        return policy_per_email(P, *args), policy_per_email(P, *args, W=self.W)

    def baselines(self, rec: _Recorder) -> None:
        c, n, k = self.c, len(self.test), len(self.c.offers)
        rec.add(("baseline", "everyone", "policy", "100%"), *self.policy(np.full((n, k), 1 / k)))
        spend, arm = c.outcomes["spend"][self.train], c.arm[self.train]
        ate = [spend[arm == o].mean() - spend[arm == CONTROL].mean() for o in c.offers]
        one = np.zeros((n, k))
        one[:, int(np.argmax(ate))] = 1.0
        rec.add(("baseline", "best_single", "policy", "100%"), *self.policy(one))

    def judge(self, rec: _Recorder, outcome: str, name: str, U: np.ndarray,
              budgets: tuple[float, ...]) -> None:
        """Record the Qini and AUUC per offer and the policy values of the held-out uplift ``U`` (customers x
        offers)."""
        c, arm = self.c, self.c.arm[self.test]
        # a conversion model is also a ranking of spend uplift
        for judged in dict.fromkeys([outcome, "spend"]):
            y = c.outcomes[judged][self.test]
            for j, o in enumerate(c.offers):
                m = (arm == o) | (arm == CONTROL)
                pt = qini_auuc(U[m, j], arm[m] == o, y[m], None, seed=self.seed)
                bt = qini_auuc(U[m, j], arm[m] == o, y[m], self.W[:, m], seed=self.seed)
                for metric in pt:
                    rec.add((outcome, name, f"{metric}_{judged}", o), pt[metric], bt[metric])
        spend = c.outcomes["spend"][self.train]
        basket = spend[spend > 0].mean() if outcome == "conversion" else 1.0
        value = c.margin_rate * U * basket - np.array([c.send_cost[o] for o in c.offers])
        for b in (*budgets, None):
            P = budget_policy(value, b)
            target = "own choice" if b is None else f"{b:.0%}"
            rec.add((outcome, name, "policy", target), *self.policy(P))
            if b is None:
                share = np.array([P.sum() / len(P)])
                rec.add((outcome, name, "share_emailed", target), share, np.repeat(share, len(self.W)))


def evaluate_randomised(c: Campaign, learners: dict[str, Learner], seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
                        budgets: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75), n_boot: int = 200,
                        outcomes: tuple[str, ...] = OUTCOMES) -> RandomisedResult:
    """Fit every learner on the training half of each seed's split, on each outcome, and judge it on the
    held-out half: Qini and AUUC per offer and their mean over offers (``qini_spend``: judged on spend; a
    model
fitted on conversion is judged on both), the policy value at each budget (share
    of customers e-mailed, each with the offer of highest predicted margin) and at the model's own choice
    (positive predicted margin), beside the baselines ``everyone`` (every customer e-mailed, the offers mixed
    as in the test) and ``best_single`` (every customer sent the offer with the best incremental spend on the
    training half). A model fitted on conversion values a sale at the training half's mean spend per buyer
    (production: uplift x basket).

    Example
    -------
    >>> c = campaign_from_shop(load_shop("var/hillstrom"))                                # doctest: +SKIP
    >>> r = evaluate_randomised(c, {"s_learner": lambda s: SLearner(Base(seed=s))})      # doctest: +SKIP
    >>> r.table.query("metric == 'qini_conversion' and target == 'mean'")                # doctest: +SKIP
    """
    rec = _Recorder()
    for s in seeds:
        split = _Split.make(c, s, n_boot)
        split.baselines(rec)
        X_tr, X_te = c.X.iloc[split.train], c.X.iloc[split.test]
        for outcome in outcomes:
            y = c.outcomes[outcome][split.train]
            for name, make in learners.items():
                learner = make(s)
                if getattr(learner, "binary_only", False) and not np.isin(y, [0.0, 1.0]).all():
                    continue  # a model of P(order) (production's) is not fitted on amounts
                log.info("seed %s, %s: fitting %s", s, outcome, name)
                U = learner.fit(X_tr, c.arm[split.train], y).predict(X_te)[c.offers].to_numpy(float)
                split.judge(rec, outcome, name, U, budgets)
    for key in [k for k in rec.points if k[2].startswith(("qini", "auuc")) and k[3] == c.offers[0]]:
        ks = [(key[0], key[1], key[2], o) for o in c.offers]
        rec.points[(*key[:3], "mean")] = list(np.mean([rec.points[k] for k in ks], axis=0))
        rec.boots[(*key[:3], "mean")] = list(np.mean([rec.boots[k] for k in ks], axis=0))
    return rec.result()
