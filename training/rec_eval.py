"""Temporal evaluation of the recommenders (all-items and new-items protocols)."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from features.interactions import InteractionConfig, InteractionData, build_interactions
from features.io import Shop
from features.schema import PRODUCT_ID
from models.metrics import ranking_report
from models.recsys import (
    DISCOVERY_RULES,
    MODELS,
    NEG,
    BlendRecommender,
    BusinessRules,
    Recommender,
    RecommenderConfig,
    Reranker,
    build_baskets,
    build_context,
    rules_mask,
)
from models.recsys.base import COLUMNS, ranked_frame
from models.recsys.threads import in_threads
from training.blend_tuning import blend_baskets, reusable_components, tune_blend
from training.rec_truth import new_items_truth, purchase_truth, sample_truth
from training.rerank_training import fit_reranker

log = logging.getLogger(__name__)
BASELINES = ("popularity", "buy_again", "als", "bpr", "item_knn", "ease", "tifu_knn")
PURCHASES_ONLY = "production_purchases_only"
"""The production model fitted without events, reported beside it when the shop has events."""
__all__ = ["BASELINES", "FittedRecommenders", "RecEvaluation", "evaluate_recommenders", "fit_baseline",
           "fit_production", "fit_recommenders", "new_items_truth", "purchase_truth", "score_recommenders"]


@dataclass
class RecEvaluation:
    report: dict[str, Any]
    fit_seconds: dict[str, float]
    production: BlendRecommender


def fit_production(shop: Shop, cutoff: pd.Timestamp, config: RecommenderConfig,
                   icfg: InteractionConfig | None = None, tune_days: int | None = None,
                   data: InteractionData | None = None, fitted: dict[str, Recommender] | None = None,
                   reranker: Reranker | None = None, notes: list[str] | None = None,
                   samples: dict[str, int] | None = None) -> BlendRecommender:
    """Fit the blend at ``cutoff``; its weights are tuned on the ``tune_days`` before the cutoff (default:
    the re-ranker's window, whose latest one then reuses the tuning blend).
    ``data``: the interactions at ``cutoff`` if already built; ``fitted``: models already fitted on them
    (reused as components when their config matches the blend's). With ``config.rerank``, discovery requests
    are re-ranked by ``reranker``, or by one learned before ``cutoff`` when it is None. ``notes``: the
    reasons for what was not tuned are appended to it, and ``samples`` gets the tuning's sample sizes (see
    :func:`~training.blend_tuning.tune_blend`)."""
    tune_days = tune_days or config.rerank_window_days
    tuned: BlendRecommender | None = None
    if config.blend_weights is None:
        config, tuned = tune_blend(shop, cutoff, config, icfg, tune_days, notes=notes, samples=samples)
    validation: dict[str, Any] = {}
    if config.rerank and reranker is None:
        same = tuned is not None and tune_days == config.rerank_window_days
        reranker, validation = fit_reranker(shop, cutoff, config, icfg, latest=tuned if same else None)
    if data is None:
        data = build_interactions(shop, cutoff, icfg)
    model = BlendRecommender(config).fit(data, components=reusable_components(fitted or {}, data, config),
                                         baskets=blend_baskets(shop, data, config))
    model.attach_reranker(reranker if config.rerank else None)
    model.rerank_validation_ = validation or (reranker.validation_ if reranker is not None else {})
    return model


def fit_baseline(shop: Shop, data: InteractionData, name: str, config: RecommenderConfig) -> Recommender:
    """The recommender ``name`` of :data:`~models.recsys.MODELS` fitted on ``data`` (with the shop's purchase
    baskets if it needs them: TIFU-KNN, with ``config.tifu`` or the paper's settings)."""
    kind = MODELS[name]
    if kind.needs_baskets:
        return kind(config).fit(data, baskets=build_baskets(shop, data))  # type: ignore[call-arg]
    return kind(config).fit(data)


def blend_lists(model: BlendRecommender, users: list[str], new: set[str], k: int = 10, batch: int = 1024
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``model.recommend(users, k)`` and ``model.recommend(<users in new>, k, rules=DISCOVERY_RULES)`` (in
    ``users``' order), the component scores of each customer computed once for both lists."""
    data = model._require()
    names = {n for w in (model.weights_, model.weights_for(DISCOVERY_RULES)) for n, v in w.items() if v}
    out: tuple[list[pd.DataFrame], list[pd.DataFrame]] = ([], [])
    for a in range(0, len(users), batch):
        ids = np.asarray(pd.Index(users[a:a + batch]).astype(object))
        ctx = build_context(data, ids)
        comps = model.component_scores(ctx, names | {"item_knn"})
        sub = np.flatnonzero([u in new for u in ids.tolist()])
        for rules, c, cc, part in ((BusinessRules(), ctx, comps, out[0]),
                                   (DISCOVERY_RULES, build_context(data, ids[sub]),
                                    {n: v[sub] for n, v in comps.items()}, out[1])):
            if len(c.customer_ids):
                s = model.ranked_scores(c, rules, cc)
                s[~rules_mask(data, c, rules)] = NEG
                part.append(ranked_frame(s, k, c.customer_ids, data.items.ids))
    return tuple(pd.concat(p, ignore_index=True)[COLUMNS] if p else pd.DataFrame(columns=COLUMNS)
                 for p in out)  # type: ignore[return-value]


@dataclass
class FittedRecommenders:
    """Every recommender of an evaluation fitted before its cutoff, and what they are scored on:
    :func:`fit_recommenders`' result, for :func:`score_recommenders`."""

    shop: Shop
    cutoff: pd.Timestamp
    config: RecommenderConfig
    icfg: InteractionConfig
    data: InteractionData
    truth_all: dict[str, set[str]]
    truth_new: dict[str, set[str]]
    n_test: int
    fitted: dict[str, Recommender]
    secs: dict[str, float]
    notes: list[str]
    samples: dict[str, int]
    later: dict[str, Callable[[], Recommender]] = field(default_factory=dict)
    """Models fitted when they are scored: the baselines production does not use (see :func:`_fit_models`)
    and, when the shop has events, production's twin without them (:data:`PURCHASES_ONLY`)."""


def evaluate_recommenders(shop: Shop, cutoff: pd.Timestamp, config: RecommenderConfig | None = None,
                          icfg: InteractionConfig | None = None, k: int = 10,
                          models: tuple[str, ...] = BASELINES, corrupt: bool = False) -> RecEvaluation:
    """Fit on everything before ``cutoff``; score top-k for customers who bought before and after it.
    When the shop has events, ``production_purchases_only`` (the production model fitted without them, with
    production's weights and re-ranker) is reported beside production: the gain from behaviour."""
    config = config or RecommenderConfig()
    return score_recommenders(fit_recommenders(shop, cutoff, config, icfg, models, corrupt), k,
                              config.score_threads)


def fit_recommenders(shop: Shop, cutoff: pd.Timestamp, config: RecommenderConfig | None = None,
                     icfg: InteractionConfig | None = None, models: tuple[str, ...] = BASELINES,
                     corrupt: bool = False) -> FittedRecommenders:
    """:func:`evaluate_recommenders`' first half: the baselines and production fitted before ``cutoff``,
    and the test customers' truth."""
    config = config or RecommenderConfig()
    icfg = icfg or InteractionConfig()
    cutoff = pd.Timestamp(cutoff)
    data = build_interactions(shop, cutoff, icfg)
    truth_all, n_test = _test_truth(shop, data, cutoff, config)
    notes: list[str] = []
    samples: dict[str, int] = {}
    fitted, later, secs = _fit_models(shop, data, cutoff, config, icfg, models, corrupt, notes, samples)
    prod = fitted["production"]
    assert isinstance(prod, BlendRecommender)
    if corrupt:  # a deliberately broken model: shuffled item ids
        prod.data.items.ids = np.random.default_rng(0).permutation(prod.data.items.ids)  # type: ignore[union-attr]
    if icfg.use_events and shop.events is not None and len(shop.events) > 0 and not corrupt:
        # production's twin without events: fitted when scored, beside the other lists
        later[PURCHASES_ONLY] = functools.partial(_purchases_only, shop, cutoff, config, icfg, prod)
    return FittedRecommenders(shop, cutoff, config, icfg, data, truth_all, new_items_truth(data, truth_all),
                              n_test, fitted, secs, notes, samples, later)


def score_recommenders(f: FittedRecommenders, k: int = 10, threads: int = 1) -> RecEvaluation:
    """:func:`evaluate_recommenders`' second half: the models still to be fitted (``f.later``: production's
    twin without events, baselines production does not use) fitted, and every model's top-k scored,
    ``threads`` models at a time (each list is computed as alone: scoring reads the fitted models and changes
    nothing)."""
    prod = f.fitted["production"]
    assert isinstance(prod, BlendRecommender)

    def timed(name: str, fit: Callable[[], Recommender]) -> Callable[[], Recommender]:
        def make() -> Recommender:
            t0 = time.perf_counter()
            model = fit()
            f.secs[name] = time.perf_counter() - t0
            return model
        return make

    makers: dict[str, Callable[[], Recommender]] = {n: functools.partial(_same, m)
                                                    for n, m in f.fitted.items()}
    makers.update({n: timed(n, fit) for n, fit in f.later.items()})
    report = _score(makers, f.data, f.truth_all, f.truth_new, k, threads, first=("production", *f.later))
    report["fit_seconds"] = {n: round(s, 2) for n, s in f.secs.items()}
    notes = f.notes + _coverage_notes(f.data, f.cutoff, f.truth_all, f.truth_new, f.n_test)
    report["test_customers"] = {"all": f.n_test, "scored": len(f.truth_all)}
    report["samples"] = f.samples
    report["notes"] = notes
    return RecEvaluation(report=report, fit_seconds=f.secs, production=prod)


def _same(model: Recommender) -> Recommender:
    return model


def _test_truth(shop: Shop, data: InteractionData, cutoff: pd.Timestamp,
                config: RecommenderConfig) -> tuple[dict[str, set[str]], int]:
    """What the customers who bought before ``cutoff`` bought after it (a seeded sample of at most
    ``config.eval_max_customers`` of them), and how many such customers there are."""
    before = data.purchases.sum(axis=1).A.ravel() > 0
    buyers = set(data.users.ids[before])
    truth_all = {u: s for u, s in purchase_truth(shop, cutoff).items() if u in buyers}
    return sample_truth(truth_all, config.eval_max_customers, config.seed), len(truth_all)


def _fit_models(shop: Shop, data: InteractionData, cutoff: pd.Timestamp, config: RecommenderConfig,
                icfg: InteractionConfig | None, models: tuple[str, ...], corrupt: bool,
                notes: list[str], samples: dict[str, int]
                ) -> tuple[dict[str, Recommender], dict[str, Callable[[], Recommender]], dict[str, float]]:
    """The baselines and production (key ``production``) fitted on ``data``, with each one's fit seconds;
    and the baselines that production does not use (those that need baskets, unless production has the same
    component), to be fitted when scored (beside the other lists, off the fits' path)."""
    secs: dict[str, float] = {}
    fitted: dict[str, Recommender] = {}
    baskets = [n for n in models if MODELS[n].needs_baskets]
    for name in (n for n in models if n not in baskets):
        t0 = time.perf_counter()
        fitted[name] = fit_baseline(shop, data, name, config)
        secs[name] = time.perf_counter() - t0
    t0 = time.perf_counter()
    # the blend reuses the baselines fitted above as its components (unless it is to be corrupted: then it
    # gets data of its own, so that the baselines stay intact)
    prod = (fit_production(shop, cutoff, config, icfg, notes=notes, samples=samples) if corrupt
            else fit_production(shop, cutoff, config, icfg, data=data, fitted=fitted, notes=notes,
                                samples=samples))
    secs["production"] = time.perf_counter() - t0
    fitted["production"] = prod
    later: dict[str, Callable[[], Recommender]] = {}
    for name in baskets:  # TIFU-KNN with the settings tuned for production's component (the paper's if none)
        same = prod.components_.get("tifu")  # the component itself, when production has one on these data
        if same is not None and same.data is data:
            fitted[name], secs[name] = same, 0.0
            continue
        own = replace(config, tifu=config.tifu or prod.config.tifu)
        later[name] = functools.partial(fit_baseline, shop, data, name, own)
    return fitted, later, secs


def _purchases_only(shop: Shop, cutoff: pd.Timestamp, config: RecommenderConfig, icfg: InteractionConfig,
                    prod: BlendRecommender) -> BlendRecommender:
    """Production's twin fitted without events: what the behaviour adds is measured, not assumed. The twin
    takes production's tuned weights and re-ranker (tuning them again would double the evaluation's cost)."""
    w = tuple(prod.weights_.items())
    dw = tuple(prod.discovery_weights_.items()) if prod.discovery_weights_ else w
    twin = replace(config, blend_weights=w, rerank=prod.reranker_ is not None, discovery_weights=dw)
    return fit_production(shop, cutoff, twin, replace(icfg, use_events=False), reranker=prod.reranker_)


def _score(makers: dict[str, Callable[[], Recommender]], data: InteractionData,
           truth_all: dict[str, set[str]], truth_new: dict[str, set[str]], k: int,
           threads: int = 1, first: tuple[str, ...] = ()) -> dict[str, Any]:
    """Each model's ranking report on all items and on items new to the customer (buy-again aside), and
    the share of the catalogue its top-k covers. ``makers`` give the models (a model still to be fitted is
    fitted by its maker); ``threads`` models are made and scored at a time, ``first`` first (the longest:
    the blends and the models still to be fitted)."""
    users = list(truth_all)

    def lists(name: str) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        m = makers[name]()
        if isinstance(m, BlendRecommender):  # smaller batches when several are in memory at once
            return blend_lists(m, users, set(truth_new), k, batch=1024 // max(threads, 1))
        return m.recommend(users, k=k), (m.recommend(list(truth_new), k=k, rules=DISCOVERY_RULES)
                                         if name != "buy_again" else None)

    order = sorted(makers, key=lambda n: n not in first)
    done = dict(zip(order, in_threads(lists, order, threads), strict=True))
    report: dict[str, Any] = {"all_items": {}, "new_items": {}, "coverage": {}}
    for name in makers:
        recs, recs_new = done[name]
        report["all_items"][name] = ranking_report(recs, truth_all, k)
        report["coverage"][name] = float(recs[PRODUCT_ID].nunique() / max(int(data.item_ok.sum()), 1))
        if recs_new is not None:
            report["new_items"][name] = ranking_report(recs_new, truth_new, k)
        log.info("%s: ndcg@%d all %.4f", name, k, report["all_items"][name][f"ndcg@{k}"])
    return report


def _coverage_notes(data: InteractionData, cutoff: pd.Timestamp, truth_all: dict[str, set[str]],
                    truth_new: dict[str, set[str]], n_test: int) -> list[str]:
    """What the evaluation could not measure, or measured on a sample only."""
    notes = []
    n_products = int(np.count_nonzero(data.purchases.getnnz(axis=0)))
    if n_products < 2:
        notes.append(f"{n_products} product(s) bought before {cutoff.date()}: recommendations reduce to "
                     "buy-again and popularity; nothing new to recommend")
    if not truth_new:
        notes.append("new_items: not evaluated, no customer bought a product new to them after the cutoff")
    if len(truth_all) < n_test:
        notes.append(f"scored on a seeded sample of {len(truth_all)} of the {n_test} test customers "
                     f"(eval_max_customers)")
    return notes
