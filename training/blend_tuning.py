"""Choosing the blend's weights on the weeks before the cutoff, and reusing components already fitted.

The weights maximise NDCG@k (:func:`models.metrics.ndcg`) of the blend's top k on what customers bought in
the tuning weeks: first over :data:`WEIGHT_GRID`, then EASE is added to the three best blends, then rising
products (:data:`RISING_STEPS`) to the three best of all; the
discovery weights (requests that exclude bought products) are chosen over :data:`DISCOVERY_GRID` on the
products new to each customer.

Example
-------
>>> tuning = tune_weights(BlendRecommender(config).fit(data), truth)    # doctest: +SKIP
>>> tuning.weights, tuning.best                                          # doctest: +SKIP
({'buy_again': 1.0, 'item_knn': 0.5, 'als': 0.5, 'ease': 0.0, 'popularity': 0.1}, 0.3313)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.interactions import InteractionConfig, InteractionData, build_interactions
from features.io import Shop
from models.cores import free_threads
from models.metrics import ndcg, top_k
from models.recsys import (
    COMPONENTS,
    DEFAULT_WEIGHTS,
    DISCOVERY_RULES,
    NEG,
    Baskets,
    BlendRecommender,
    BusinessRules,
    Recommender,
    RecommenderConfig,
    TifuConfig,
    TIFUKNNRecommender,
    blended,
    build_baskets,
    build_context,
    component_settings,
    rules_mask,
)
from models.recsys.blend import COMPONENT_MODELS
from models.recsys.threads import in_threads
from training.rec_truth import new_items_truth, purchase_truth, sample_truth

log = logging.getLogger(__name__)
Grid = list[tuple[tuple[str, float], ...]]

_BASE_GRID = [
    (1.0, 1.0, 0.5, 0.1), (1.0, 0.5, 0.5, 0.1), (1.0, 1.5, 0.5, 0.05), (1.0, 1.0, 1.0, 0.1),
    (0.5, 1.0, 1.0, 0.1), (1.5, 1.0, 0.25, 0.1), (1.0, 1.0, 0.0, 0.2), (0.5, 0.5, 1.0, 0.05),
    (0.25, 0.25, 1.0, 0.0),
]
WEIGHT_GRID: Grid = [(("buy_again", b), ("item_knn", k), ("als", a), ("ease", 0.0), ("popularity", p))
                     for b, k, a, p in _BASE_GRID]
"""The blends tried first (buy-again, item-kNN, ALS and popularity; no EASE)."""
TIFU_WEIGHT_GRID: Grid = [(("tifu", 1.0), ("buy_again", b), ("item_knn", k), ("als", a), ("ease", 0.0),
                           ("popularity", p))
                          for b in (0.0, 0.1) for k in (0.0, 0.05, 0.1) for a in (0.0, 0.05, 0.1)
                          for p in (0.0, 0.02)]
"""Tried too when the blend has TIFU-KNN: TIFU-KNN alone, and with the others as small corrections of its
order (TIFU-KNN already holds the repeat purchases and the neighbours' ones)."""
EASE_STEPS = (0.5, 1.0)
"""Tuning adds EASE at these weights to the best three blends of the grid (a second, smaller round)."""
RISING_STEPS = (0.2, 0.5)
"""Then the rising component (products selling faster than they did) at these weights is added to the best
three blends so far (a third small round, about 1 s of CPU on Online Retail). On Online Retail's weeks before
three cutoffs, among 0.02-1.0, the tuning chose 0.2 or 0.5 (``bench/tifu_repeat.py``, bench/TIFU.md)."""
DISCOVERY_GRID: Grid = [(("buy_again", 1.0), ("item_knn", kn), ("als", a), ("ease", e), ("popularity", 0.1))
                        for kn in (0.5, 1.0) for a in (0.5, 1.0) for e in (0.0, 1.0)]


@dataclass(frozen=True)
class BlendTuning:
    """The chosen weights and every trial: ``{"weights": ..., "ndcg@k": ...}`` in the order tried."""

    weights: dict[str, float]
    trials: list[dict[str, Any]]
    k: int
    customers: int = 0
    """Customers the chosen weights were scored on."""
    screened_on: int = 0
    """Customers every weighting was scored on (fewer than :attr:`customers` when screened)."""

    @property
    def best(self) -> float:
        return max(t[f"ndcg@{self.k}"] for t in self.trials if f"ndcg@{self.k}" in t)


TUNE_FINALISTS = 4
"""Weightings of a screened round (see :func:`tune_weights`) scored on all tuning customers."""


def tune_weights(model: BlendRecommender, truth: dict[str, set[str]], k: int = 10,
                 rules: BusinessRules | None = None, grid: Grid | None = None, screen: int | None = None,
                 seed: int = 0) -> BlendTuning:
    """The blend weights maximising NDCG@k on ``truth`` (purchases after ``model``'s cutoff), over ``grid``
    (default: :data:`WEIGHT_GRID` and, if the blend has TIFU-KNN, :data:`TIFU_WEIGHT_GRID`; then EASE added
    to the best three, then rising to the best three). The first of equals wins. ``model``
    must have all components fitted (a config without ``blend_weights``) and is not changed.

    ``screen``: with more customers than this, every weighting of a round is first scored on a seeded sample
    of ``screen`` of them (trial key ``screen_ndcg@k``) and only the best :data:`TUNE_FINALISTS` on all
    (``ndcg@k``); the weights are chosen among those. None, or no more customers: all on all."""
    data = model._require()
    rules = rules or BusinessRules()
    score = _trial_scorer(model, truth, k, rules)
    known = {u: truth[u] for u in truth if u in data.users}
    sample = sample_truth(known, screen, seed) if screen is not None else known
    screen_score = _trial_scorer(model, sample, k, rules) if len(sample) < len(known) else None
    key, skey = f"ndcg@{k}", f"screen_ndcg@{k}"
    trials: list[dict[str, Any]] = []

    def run(ws: list[dict[str, float]]) -> None:
        if screen_score is None:
            trials.extend({"weights": w, key: v} for w, v in zip(ws, score(ws), strict=True))
            return
        part: list[dict[str, Any]] = [{"weights": w, skey: v}
                                      for w, v in zip(ws, screen_score(ws), strict=True)]
        finalists = sorted(range(len(part)), key=lambda i: -part[i][skey])[:TUNE_FINALISTS]  # stable
        for i, v in zip(finalists, score([ws[i] for i in finalists]), strict=True):
            part[i][key] = v
        trials.extend(part)

    def scored() -> list[dict[str, Any]]:
        return [t for t in trials if key in t]

    tifu = TIFU_WEIGHT_GRID if "tifu" in model.components_ else []
    run([dict(wt) for wt in grid or [*WEIGHT_GRID, *tifu]])
    for name, steps in (("ease", EASE_STEPS), ("rising", RISING_STEPS)):
        if grid is None and name in model.components_:
            run([{**t["weights"], name: v} for t in sorted(scored(), key=lambda t: -t[key])[:3]
                 for v in steps])
    best = max(scored(), key=lambda t: t[key])  # the first of equals wins
    if screen_score is not None:
        log.info("blend weightings screened on %d of %d customers, the best %d of each round on all",
                 len(sample), len(known), TUNE_FINALISTS)
    log.info("blend weights %s (validation ndcg@%d %.4f)", best["weights"], k, best[key])
    return BlendTuning(dict(best["weights"]), trials, k, len(known), len(sample))


def tune_discovery(model: BlendRecommender, truth: dict[str, set[str]], k: int = 10,
                   screen: int | None = None, seed: int = 0) -> BlendTuning:
    """The discovery weights: NDCG@k on products new to each customer (``truth``), bought products
    excluded, over :data:`DISCOVERY_GRID` (``screen``, ``seed``: see :func:`tune_weights`)."""
    return tune_weights(model, truth, k, DISCOVERY_RULES, DISCOVERY_GRID, screen, seed)


class _Judge:
    """Mean NDCG@k of any scores of the customers of ``truth`` that ``data`` knows, under ``rules`` (the
    same rules a request has: an unfair judge would let a component look better alone than blended)."""

    def __init__(self, data: InteractionData, truth: dict[str, set[str]], k: int, rules: BusinessRules
                 ) -> None:
        self.users = [u for u in truth if u in data.users]
        self.ctx = build_context(data, self.users)
        self.allowed = self.ctx.known[:, None] & rules_mask(data, self.ctx, rules)
        self.rel = np.zeros((len(self.users), len(data.items)), bool)
        for i, u in enumerate(self.users):
            cols = data.items.rows(list(truth[u]))
            self.rel[i, cols[cols >= 0]] = True
        self.n_rel = np.array([len(truth[u]) for u in self.users], np.int64)
        self.k = k

    def __call__(self, scores: np.ndarray) -> float:
        return float(np.mean(self.per_customer(scores))) if self.users else 0.0

    def per_customer(self, scores: np.ndarray) -> np.ndarray:
        """Each customer's NDCG@k of ``scores`` (one row per customer, in :attr:`users` order)."""
        s = np.where(self.allowed, scores, NEG)
        top = top_k(s, self.k)
        hits = np.take_along_axis(self.rel, top, axis=1) & np.isfinite(np.take_along_axis(s, top, axis=1))
        return ndcg(hits, self.n_rel, self.k)

    def per_customer_blends(self, comps: dict[str, np.ndarray], weightings: Sequence[Mapping[str, float]],
                            threads: int = 1) -> np.ndarray:
        """``per_customer(blended(comps, w))`` of each weighting ``w`` (weightings x customers): the same
        numbers for less work. A blend is summed term by term in its weights' order, so weightings that
        share their leading terms share that partial sum (exact); sums are kept negated, ranked lowest
        first (no negated copy); and the rules' mask goes into ``comps`` once, which are overwritten: -inf
        where an item is not allowed makes every sum of positive terms +inf there (negated), as masking
        each sum would. Weightings with no term or a weight that is not positive are scored one by one.
        ``threads``: that many runs of the (sorted) weightings at once, each with its own partial sums."""
        out = np.empty((len(weightings), len(self.users)))
        terms = [tuple((n, float(v)) for n, v in w.items() if v and n in comps) for w in weightings]
        plain = [i for i, t in enumerate(terms) if not t or not all(v > 0 and np.isfinite(v) for _, v in t)]
        for i in plain:
            out[i] = self.per_customer(blended(comps, weightings[i]) if comps else np.zeros(self.rel.shape))
        # sorted by their terms, weightings with shared leading terms come one after the other
        rest = sorted(set(range(len(weightings))) - set(plain), key=lambda i: terms[i])
        if not rest:
            return out
        for c in comps.values():
            np.copyto(c, NEG, where=~self.allowed)
        runs = [r for r in np.array_split(np.array(rest), max(1, min(threads, len(rest)))) if len(r)]
        # each run's partial sums, allocated here (not in the threads, whose freed memory glibc keeps)
        sums = [[np.empty(self.rel.shape) for _ in range(max(len(terms[i]) for i in r))] for r in runs]
        in_threads(lambda j: self._score_run(comps, terms, runs[j].tolist(), sums[j], out), range(len(runs)),
                   threads)
        return out

    def _score_run(self, comps: dict[str, np.ndarray], terms: list[tuple[tuple[str, float], ...]],
                   run: list[int], sums: list[np.ndarray], out: np.ndarray) -> None:
        """Rows ``run`` of ``out`` (see :meth:`per_customer_blends`); ``sums[d]`` holds the negated sum of
        the first ``d + 1`` terms of the current weighting (``path``)."""
        path: list[tuple[str, float]] = []
        for i in run:
            t = terms[i]
            shared = min(len(t), len(path))
            d = next((q for q in range(shared) if path[q] != t[q]), shared)
            del path[d:]
            for q in range(d, len(t)):
                np.multiply(comps[t[q][0]], -t[q][1], out=sums[q])
                if q:
                    sums[q] += sums[q - 1]
                path.append(t[q])
            s = sums[len(t) - 1]
            top = top_k(s, self.k, lowest=True)
            hits = np.take_along_axis(self.rel, top, axis=1) & np.isfinite(np.take_along_axis(s, top, axis=1))
            out[i] = ndcg(hits, self.n_rel, self.k)


TRIAL_BATCH = 1000
"""Customers scored at a time by the trials (memory: this many x products x components)."""


def _trial_scorer(model: BlendRecommender, truth: dict[str, set[str]], k: int, rules: BusinessRules
                  ) -> Callable[[Sequence[Mapping[str, float]]], list[float]]:
    """A function of several blend weightings giving each one's mean NDCG@k over the customers of ``truth``
    the model knows; customers are scored :data:`TRIAL_BATCH` at a time, their component scores computed
    once per batch for all the weightings (on ``score_threads`` threads: components, then runs of
    weightings, at once; one batch in memory)."""
    data = model._require()
    users = [u for u in truth if u in data.users]

    def batch(a: int, ws: Sequence[Mapping[str, float]]) -> np.ndarray:
        judge = _Judge(data, {u: truth[u] for u in users[a:a + TRIAL_BATCH]}, k, rules)
        threads = free_threads(model.config.score_threads)  # the runs' partial sums are allocated per thread
        comps = model.component_scores(judge.ctx, {n for w in ws for n, v in w.items() if v}, threads)
        return judge.per_customer_blends(comps, ws, threads)

    def trials(ws: Sequence[Mapping[str, float]]) -> list[float]:
        if not users:
            return [0.0] * len(ws)
        per_user = np.concatenate([batch(a, ws) for a in range(0, len(users), TRIAL_BATCH)], axis=1)
        return [float(np.mean(v)) for v in per_user]
    return trials


TIFU_GRID: tuple[dict[str, Any], ...] = ({"within_decay": 1.0, "group_decay": 0.9, "groups": 14},
             {"within_decay": 1.0, "group_decay": 0.9, "groups": 28},
             {"within_decay": 0.9, "group_decay": 0.7, "groups": 7})
"""TIFU-KNN decay settings tried (each fitted once): the paper's Dunnhumby ones and the two with less decay
that won on Online Retail's weeks before three cutoffs in a wider search (``bench/tifu_blend.py``)."""
TIFU_ALPHAS = (0.3, 0.5, 0.7)
TIFU_NEIGHBOURS = (50, 100, 300)
"""Own-vector weights and neighbour counts tried on each fitted setting (no refit: neighbours are kept best
first, fewer are a prefix)."""


@dataclass(frozen=True)
class TifuTuning:
    """The chosen TIFU-KNN settings (:class:`~models.recsys.TifuConfig` fields) and every trial;
    ``fitted``: the model fitted with the chosen decay settings (more neighbours), see :meth:`component`."""

    params: dict[str, Any]
    trials: list[dict[str, Any]]
    k: int
    fitted: TIFUKNNRecommender | None = field(default=None, repr=False, compare=False)

    @property
    def best(self) -> float:
        return max(t[f"ndcg@{self.k}"] for t in self.trials)

    def component(self, config: RecommenderConfig) -> TIFUKNNRecommender | None:
        """The tuning's model as the ``tifu`` component of a blend with ``config`` (which carries the chosen
        settings) fitted on the same data: the same model a fit would give, without fitting it again. None
        when it is not (see :meth:`TIFUKNNRecommender.narrowed`)."""
        if self.fitted is None or config.tifu is None:
            return None
        return self.fitted.narrowed(config, TifuConfig(**dict(config.tifu)))


def tune_tifu(data: InteractionData, baskets: Baskets, truth: dict[str, set[str]], config: RecommenderConfig,
              k: int = 10, batch: int = TRIAL_BATCH) -> TifuTuning:
    """TIFU-KNN's settings maximising NDCG@k of its own top k on ``truth`` (purchases after ``data``'s
    cutoff), under the default business rules, over :data:`TIFU_GRID` x :data:`TIFU_ALPHAS` x
    :data:`TIFU_NEIGHBOURS`. The first of equals wins. Shops too large for the exact neighbour search try
    the first setting of the grid only (each setting is a fit: about 150 s of CPU at a million customers).
    Customers are scored ``batch`` at a time, ``config.score_threads`` batches at once (memory: that many x
    products each)."""
    users = [u for u in truth if u in data.users]
    trials: list[dict[str, Any]] = []
    fitted: list[TIFUKNNRecommender] = []
    large = len(np.unique(baskets.user)) > TifuConfig().exact_max_customers
    settings = [(nk, a) for nk in TIFU_NEIGHBOURS for a in TIFU_ALPHAS]
    for g in TIFU_GRID[:1] if large else TIFU_GRID:
        m = TIFUKNNRecommender(config, TifuConfig(**g, neighbours=max(TIFU_NEIGHBOURS)))
        m.fit(data, baskets=baskets)
        fitted.append(m)
        per_user = (np.concatenate(in_threads(
            lambda a: _tifu_trials(m, data, {u: truth[u] for u in users[a:a + batch]}, k, settings),  # noqa: B023
            range(0, len(users), batch), config.score_threads), axis=1) if users else None)
        for i, (nk, a) in enumerate(settings):
            v = float(np.mean(per_user[i])) if per_user is not None else 0.0
            trials.append({"params": {**g, "alpha": a, "neighbours": nk}, f"ndcg@{k}": v})
    best = max(trials, key=lambda t: t[f"ndcg@{k}"])
    log.info("tifu settings %s (validation ndcg@%d %.4f)", best["params"], k, best[f"ndcg@{k}"])
    chosen = next(m for m, g in zip(fitted, TIFU_GRID, strict=False)
                  if all(best["params"][n] == v for n, v in g.items()))
    return TifuTuning(dict(best["params"]), trials, k, chosen)


def _tifu_trials(m: TIFUKNNRecommender, data: InteractionData, truth: dict[str, set[str]], k: int,
                 settings: list[tuple[int, float]]) -> np.ndarray:
    """Per-customer NDCG@k (settings x customers of ``truth``) of ``m`` with each (neighbours, alpha)."""
    judge = _Judge(data, truth, k, BusinessRules())
    out = np.zeros((len(settings), len(judge.users)))
    parts: dict[int, tuple[sp.csr_matrix, sp.csr_matrix]] = {}
    for i, (nk, a) in enumerate(settings):
        if nk not in parts:
            parts = {nk: m.parts(judge.ctx, nk)}  # one neighbour count's parts at a time
        own, nbr = parts[nk]
        s = (a * own + (1 - a) * nbr).toarray()
        out[i] = judge.per_customer(np.where(s > 0, s, NEG))
    return out


def blend_baskets(shop: Shop, data: InteractionData, config: RecommenderConfig) -> Baskets | None:
    """The purchase baskets a blend with ``config`` fitted on ``data`` needs: those of ``data`` when weights
    are still to be tuned or a weighed component needs them (and there are any), else None."""
    w = {**dict(config.blend_weights or ()), **dict(config.discovery_weights or ())}
    need = config.blend_weights is None or any(
        w.get(n, 0) > 0 for n, kind in COMPONENT_MODELS.items() if kind.needs_baskets)
    b = build_baskets(shop, data) if need else None
    return b if b is not None and len(b.user) else None


MIN_TUNING_PRODUCTS = 2
"""Fewer products bought before the tuning weeks than this: there is nothing to rank, the weights are not
tuned (the default weights are kept, and the reason recorded)."""


def tune_blend(shop: Shop, cutoff: pd.Timestamp, config: RecommenderConfig,
               icfg: InteractionConfig | None = None, tune_days: int = 56, notes: list[str] | None = None,
               samples: dict[str, int] | None = None) -> tuple[RecommenderConfig, BlendRecommender | None]:
    """``config`` with blend and discovery weights (and TIFU-KNN's settings unless ``config`` has them, see
    :func:`tune_tifu`) tuned on the ``tune_days`` before ``cutoff``, and the blend they were tuned with
    (fitted at the start of those days, the tuned weights set). Without history to tune on, or with fewer
    than :data:`MIN_TUNING_PRODUCTS` products bought: the default weights, and no blend. Without a product
    new to any customer in the tuning weeks: discovery uses the main weights. Each such decision is appended
    to ``notes`` (if given) as a sentence saying why; ``samples`` (if given) gets the numbers of customers
    the weights were tuned on (``tuning_customers``) and every weighting was scored on
    (``tuning_screen_customers``, fewer past ``config.tune_screen_customers``)."""
    notes = notes if notes is not None else []
    samples = samples if samples is not None else {}
    inner = pd.Timestamp(cutoff) - pd.Timedelta(days=tune_days)
    truth = sample_truth(purchase_truth(shop, inner, cutoff), config.tune_max_customers, config.seed)
    d_in = build_interactions(shop, inner, icfg)
    if d_in.weights.nnz == 0 or not any(u in d_in.users for u in truth):
        why = f"blend: default weights, no purchase history before {inner.date()} to tune them on"
        log.warning(why)
        notes.append(why)
        return replace(config, blend_weights=DEFAULT_WEIGHTS), None
    n_bought = int(np.count_nonzero(d_in.purchases.getnnz(axis=0)))
    if n_bought < MIN_TUNING_PRODUCTS:
        why = (f"blend: default weights, {n_bought} product(s) bought before {inner.date()}: fewer than the "
               f"{MIN_TUNING_PRODUCTS} a ranking needs to be tuned")
        log.warning(why)
        notes.append(why)
        return replace(config, blend_weights=DEFAULT_WEIGHTS), None
    baskets = blend_baskets(shop, d_in, config)
    reuse: dict[str, Recommender] = {}
    if baskets is not None and config.tifu is None:
        tifu = tune_tifu(d_in, baskets, truth, config)
        config = replace(config, tifu=tuple(tifu.params.items()))
        if (same := tifu.component(config)) is not None:  # the tuning's fit, not a second one
            reuse["tifu"] = same
    tuned = BlendRecommender(config).fit(d_in, components=reuse, baskets=baskets)
    # the screening sample's seed differs from the tuning sample's: with the same hash it would keep a share
    # of a share (6,000 of 18,137 tuning customers became 8,681 at 100,000 customers)
    screen, seed = config.tune_screen_customers, config.seed + 1
    main = tune_weights(tuned, truth, screen=screen, seed=seed)
    samples["tuning_customers"] = main.customers
    samples["tuning_screen_customers"] = main.screened_on
    if main.screened_on < main.customers:
        notes.append(f"blend: weightings screened on a seeded sample of {main.screened_on} of the "
                     f"{main.customers} tuning customers, the best {TUNE_FINALISTS} of each round scored "
                     f"on all (tune_screen_customers)")
    # discovery: products new to each customer, bought in the tuning weeks
    new_truth = new_items_truth(d_in, truth)
    if not new_truth:
        why = (f"blend: discovery weights not tuned (no customer bought a product new to them between "
               f"{inner.date()} and {pd.Timestamp(cutoff).date()}): discovery uses the main weights")
        log.warning(why)
        notes.append(why)
        tuned.use_weights(main.weights, main.weights)
        return replace(config, blend_weights=tuple(main.weights.items()),
                       discovery_weights=tuple(main.weights.items())), tuned
    discovery = tune_discovery(tuned, new_truth, screen=screen, seed=seed)
    tuned.use_weights(main.weights, discovery.weights)
    return replace(config, blend_weights=tuple(main.weights.items()),
                   discovery_weights=tuple(discovery.weights.items())), tuned


def reusable_components(fitted: Mapping[str, Recommender], data: InteractionData, config: RecommenderConfig
                        ) -> dict[str, Recommender]:
    """The models of ``fitted`` a blend with ``config`` can take as its components (see
    :meth:`BlendRecommender.fit`): blend components fitted on this same ``data`` with the same settings."""
    return {n: m for n, m in fitted.items() if n in COMPONENTS and m.data is data
            and component_settings(m.config, n) == component_settings(config, n)}
