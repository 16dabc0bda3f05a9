"""The production recommender: a weighted blend of normalised component scores, with an optional
discovery re-ranker.

The blend only scores. Choosing its weights is training's (:mod:`training.blend_tuning`), and so is
learning the re-ranker (:mod:`training.rerank_training`); the fitted ones are handed over explicitly
(``use_weights``, ``attach_reranker``, ``fit(data, components=...)``).

Example
-------
>>> blend = BlendRecommender(RecommenderConfig(blend_weights=DEFAULT_WEIGHTS)).fit(data)  # doctest: +SKIP
>>> blend.recommend(["C0000001"], k=5, rules=DISCOVERY_RULES)                             # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Self

import numpy as np

from features.exceptions import ModelFitError
from features.interactions import InteractionData
from models.compiled_trees import CodeStore
from models.recsys.base import NEG, Recommender
from models.recsys.context import BusinessRules, RecommenderConfig, UserContext, build_context, rules_mask
from models.recsys.factors import ALSRecommender
from models.recsys.neighbours import EASERecommender, ItemKNNRecommender
from models.recsys.popularity import BuyAgainRecommender, PopularityRecommender, RisingRecommender
from models.recsys.rerank import RANK_COMPONENTS, ItemStats, Reranker, candidate_features
from models.recsys.threads import in_threads
from models.recsys.tifu import Baskets, TIFUKNNRecommender

COMPONENT_MODELS: dict[str, type[Recommender]] = {
    "buy_again": BuyAgainRecommender, "item_knn": ItemKNNRecommender, "als": ALSRecommender,
    "ease": EASERecommender, "popularity": PopularityRecommender, "tifu": TIFUKNNRecommender,
    "rising": RisingRecommender}
COMPONENTS = tuple(COMPONENT_MODELS)
"""The blend's components, in the order they are fitted and weighed. ``tifu`` (TIFU-KNN) needs purchase
baskets: a blend fitted without them has no ``tifu`` component. ``rising`` (products selling faster than
they did) is only ever a small correction chosen by the tuning (issue #21)."""
DEFAULT_WEIGHTS = (("buy_again", 1.0), ("item_knn", 1.0), ("als", 0.5), ("ease", 0.5), ("popularity", 0.1))
Weights = dict[str, float]


def component_settings(config: RecommenderConfig, name: str | None = None) -> RecommenderConfig:
    """What a fitted component depends on: the config without the blend's weights, and (for a component
    ``name`` other than ``tifu``) without TIFU-KNN's settings, which only TIFU-KNN reads: an ALS fitted
    before TIFU-KNN's settings were tuned is the ALS the tuned blend would fit."""
    out = replace(config, blend_weights=None, discovery_weights=None)
    return out if name in (None, "tifu") else replace(out, tifu=None)


def blended(comps: dict[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Weighted sum of normalised component scores; components without weight, or not fitted, add nothing."""
    out = np.zeros(next(iter(comps.values())).shape)
    for n, w in weights.items():
        if w and n in comps:
            out += w * comps[n]
    return out


def normalise_by_max(s: np.ndarray) -> np.ndarray:
    """Per-customer scaling of non-negative scores by their largest: 0 stays 0, the smallest positive score
    stays above the unscored items (which :func:`normalise` would tie with it); -inf becomes 0."""
    t = np.where(np.isfinite(s), s, 0.0)
    hi = t.max(axis=1, keepdims=True) if t.size else np.ones((len(t), 1))
    return t / np.where(hi > 0, hi, 1.0)  # type: ignore[no-any-return]


def normalise(s: np.ndarray) -> np.ndarray:
    """Per-customer scaling to [0, 1] over finite scores; -inf (and any other non-finite score) becomes 0."""
    bad = ~np.isfinite(s)
    if not bad.any():  # dense scores (ALS, EASE, popularity): the same numbers in fewer passes
        lo = s.min(axis=1, keepdims=True)
        span = s.max(axis=1, keepdims=True) - lo
        t = np.subtract(s, lo)
        t /= np.where(np.isfinite(span) & (span > 0), span, 1.0)
        return t
    t = np.where(bad, np.inf, s)  # one buffer for both extremes (this runs on customers x items arrays)
    lo = t.min(axis=1, keepdims=True)
    np.copyto(t, -np.inf, where=bad)
    hi = t.max(axis=1, keepdims=True)
    span = hi - lo
    span = np.where(np.isfinite(span) & (span > 0), span, 1.0)
    lo = np.where(np.isfinite(lo), lo, 0.0)
    np.subtract(s, lo, out=t)
    t /= span
    t[bad] = 0.0
    return t


class BlendRecommender(Recommender):
    """The production recommender: a weighted blend of buy-again, item-to-item, ALS, EASE and popularity,
    each normalised per customer. Weights come from the config (``blend_weights``, ``discovery_weights``),
    or are set with :meth:`use_weights` once tuned; without either, :data:`DEFAULT_WEIGHTS`."""

    name = "production"

    def __init__(self, config: RecommenderConfig | None = None) -> None:
        super().__init__(config)
        self.weights_: Weights = dict(self.config.blend_weights or DEFAULT_WEIGHTS)
        dw = self.config.discovery_weights
        self.discovery_weights_: Weights | None = dict(dw) if dw else None
        self.reranker_: Reranker | None = None
        self.item_stats_: ItemStats | None = None
        self.rerank_validation_: dict[str, Any] = {}
        """How the re-ranker did against the blend when it was learned (also when it was not used)."""

    # -- fitting --------------------------------------------------------------------------------
    def fit(self, data: InteractionData, components: Mapping[str, Recommender] | None = None,
            baskets: Baskets | None = None) -> Self:
        """Fit the components on ``data``. ``components``: models already fitted on this same ``data`` with
        this config's component settings (an evaluation fits them as baselines anyway), used as they are
        instead of being fitted again. ``baskets``: the purchase baskets of ``data``
        (:func:`models.recsys.tifu.build_baskets`) for the components that need them (``tifu``); without
        them those are left out while weights are tuned, and a weight on them is an error."""
        given = dict(components or {})
        for n, m in given.items():
            if n not in COMPONENT_MODELS:
                raise ValueError(f"{n!r} is not a blend component; the components are {COMPONENTS}")
            if m.data is not data or component_settings(m.config, n) != component_settings(self.config, n):
                raise ValueError(f"component {n!r} was fitted on other data or with other settings: "
                                 "leave it out to have it fitted here")
        self._start_fit(data)
        self._fit_components(data, given, baskets)
        return self

    def _fit(self, data: InteractionData) -> None:
        self._fit_components(data, {}, None)

    def _fit_components(self, data: InteractionData, given: dict[str, Recommender], baskets: Baskets | None
                        ) -> None:
        self.components_: dict[str, Recommender] = {}
        for n, kind in COMPONENT_MODELS.items():
            # all of them while weights are still to be tuned; item_knn always (reasons, similar items)
            weighed = self.weights_.get(n, 0) > 0 or (self.discovery_weights_ or {}).get(n, 0) > 0
            if not (self.config.blend_weights is None or weighed or n == "item_knn"):
                continue
            if n in given:
                self.components_[n] = given[n]
            elif not kind.needs_baskets:
                self.components_[n] = kind(self.config).fit(data)
            elif baskets is not None:
                self.components_[n] = kind(self.config).fit(data, baskets=baskets)  # type: ignore[call-arg]
            elif weighed and self.config.blend_weights is not None:
                raise ModelFitError(f"production: the blend weighs {n!r}, which needs purchase baskets: "
                                    "fit(data, baskets=build_baskets(shop, data))")

    def use_weights(self, weights: Mapping[str, float], discovery: Mapping[str, float] | None = None) -> Self:
        """Blend with these weights (``discovery``: for requests that exclude bought products)."""
        self.weights_ = dict(weights)
        self.discovery_weights_ = dict(discovery) if discovery is not None else None
        return self

    def attach_reranker(self, reranker: Reranker | None) -> Self:
        """Use ``reranker`` for discovery requests (None: the blend ranks them)."""
        self.reranker_ = reranker
        self.item_stats_ = ItemStats(self._require()) if reranker is not None else None
        return self

    def compile_reranker(self, store: CodeStore | None = None, customers: int = 300) -> bool:
        """Have the discovery re-ranker predict with its booster compiled to machine code
        (:meth:`Reranker.compile`), checked against LightGBM on the candidates of ``customers`` of the model's
        own customers (spread evenly over them); returns whether it does (False without a re-ranker). For
        serving: it takes seconds, unless ``store`` already holds this model's code.

        Examples
        --------
        >>> blend.compile_reranker()   # doctest: +SKIP
        True
        """
        rules = BusinessRules(exclude_bought=True)  # the storefront's discovery request
        rr = self.reranker_for(rules)
        if rr is None or self.item_stats_ is None:
            return False
        data = self._require()
        ids = data.users.ids
        picked = ids[np.unique(np.linspace(0, len(ids) - 1, min(customers, len(ids))).astype(np.int64))]
        ctx = build_context(data, picked)
        s, comps = self.blend_scores(ctx, rules)
        _, X = self.candidate_rows(ctx, rules, comps, s, self.item_stats_)
        return rr.compile(X, store)

    # -- scoring --------------------------------------------------------------------------------
    def weights_for(self, rules: BusinessRules) -> Weights:
        """The discovery weights when bought products are excluded (if learned), else the main ones."""
        dw = getattr(self, "discovery_weights_", None)  # models pickled before discovery weights have none
        return dw if (dw and rules.exclude_bought) else self.weights_

    def reranker_for(self, rules: BusinessRules) -> Reranker | None:
        """The discovery re-ranker when bought products are excluded (if one is attached)."""
        rr: Reranker | None = getattr(self, "reranker_", None)  # models pickled before re-ranking have none
        return rr if rules.exclude_bought else None

    def score_for(self, ctx: UserContext, rules: BusinessRules) -> np.ndarray:
        return self.ranked_scores(ctx, rules)

    def ranked_scores(self, ctx: UserContext, rules: BusinessRules,
                      comps: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Final scores for a request with these rules: -inf where the rules forbid an item or the customer
        is unknown. Discovery requests with a re-ranker: its scores for the blend's best candidates, -inf
        for the rest. ``comps``: the normalised component scores, if already computed."""
        s, comps = self.blend_scores(ctx, rules, comps)
        return self.reranked(ctx, rules, comps, s)

    def reranked(self, ctx: UserContext, rules: BusinessRules, comps: dict[str, np.ndarray], s: np.ndarray
                 ) -> np.ndarray:
        """The blend's scores ``s`` (-inf where not allowed) as :meth:`ranked_scores` gives them: for a
        discovery request with a re-ranker, its scores for the blend's best candidates and -inf for the
        rest; otherwise ``s`` itself."""
        rr = self.reranker_for(rules)
        if rr is None or self.item_stats_ is None:
            return s
        cand, X = self.candidate_rows(ctx, rules, comps, s, self.item_stats_)
        out = np.full(s.shape, NEG)
        pred = rr.predict(X).reshape(cand.shape)
        if len(s) == 1:  # one customer (a live request): plain indexing, the same values
            c = cand[0]
            out[0, c] = np.where(np.isfinite(s[0, c]), pred[0], NEG)
        else:
            np.put_along_axis(out, cand, np.where(np.isfinite(np.take_along_axis(s, cand, 1)), pred, NEG), 1)
        return out

    def blend_scores(self, ctx: UserContext, rules: BusinessRules, comps: dict[str, np.ndarray] | None = None
                     ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The blend's scores under these rules (-inf where not allowed), and the component scores used."""
        data = self._require()
        w = self.weights_for(rules)
        if comps is None:
            comps = self.component_scores(ctx, {n for n, v in w.items() if v} | {"item_knn"})
        s = blended(comps, w) if comps else np.zeros((len(ctx.rows), len(data.items)))
        return np.where(ctx.known[:, None] & rules_mask(data, ctx, rules), s, NEG), comps

    def candidate_rows(self, ctx: UserContext, rules: BusinessRules, comps: dict[str, np.ndarray],
                       s: np.ndarray, stats: ItemStats) -> tuple[np.ndarray, np.ndarray]:
        """The blend's best candidates per customer (unordered) and their re-ranker features."""
        c = min(self.config.rerank_candidates, s.shape[1])
        cand = np.argpartition(-s, c - 1, axis=1)[:, :c]
        X = candidate_features(stats, ctx.P.tocsr(), ctx.W.tocsr(), ctx.L.tocsr(),
                               self._feature_components(comps, self.weights_for(rules)), s, cand)
        return cand, X

    @staticmethod
    def _feature_components(comps: dict[str, np.ndarray], weights: Weights) -> dict[str, np.ndarray]:
        """The component scores the re-ranker sees: those the blend weighs, and item-to-item (always fitted);
        the same whichever other components a model happens to have fitted (the rest are NaN features)."""
        return {n: comps[n] for n in RANK_COMPONENTS if n in comps and (weights.get(n, 0) or n == "item_knn")}

    def _score(self, ctx: UserContext) -> np.ndarray:
        comps = self.component_scores(ctx, {n for n, w in self.weights_.items() if w})
        if not comps:
            return np.zeros((len(ctx.rows), len(self._require().items)))
        return blended(comps, self.weights_)

    def component_scores(self, ctx: UserContext, names: set[str] | None = None, threads: int = 1
                         ) -> dict[str, np.ndarray]:
        """Normalised scores of the fitted components (of ``names`` only, if given): min-max per customer;
        TIFU-KNN's (frequencies, 0 where not bought by the customer or their neighbours) by the largest.
        ``threads``: components scored at once (each as alone: the same numbers)."""
        chosen = [(n, c) for n, c in self.components_.items() if names is None or n in names]

        def one(nc: tuple[str, Recommender]) -> np.ndarray:
            scale = normalise_by_max if isinstance(nc[1], TIFUKNNRecommender) else normalise
            return scale(nc[1].score(ctx))
        return dict(zip([n for n, _ in chosen], in_threads(one, chosen, threads), strict=True))

    def _item_similarity(self) -> Any:
        return self.components_["item_knn"]._item_similarity()
