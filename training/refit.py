"""The serving refit: every model fitted again on all data (as of the data end), into one bundle.

It takes the :class:`~training.evaluate.EvaluationResult` explicitly: the blend weights and the discovery
re-ranker that were evaluated are the ones shipped.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import pandas as pd

from features import schema
from features.customer import customer_features, order_lines
from features.io import Shop
from models.bundle import CHURN, PREDICTED_VALUE, ServingBundle
from models.offers import OfferCatalogue, OfferPolicy, check_attribute_rules, parse_catalogue
from models.offers.uplift import S_LEARNER
from models.recsys import RecommendationEngine, RecommenderConfig, TrendingRecommender
from models.segments import segment_customers
from models.triggers import detect_triggers
from training.concurrency import together
from training.config import TrainConfig
from training.customer_eval import CustomerModels, fit_customer_models
from training.evaluate import EvaluationResult
from training.offer_eval import fit_uplift
from training.progress import Steps
from training.rec_eval import fit_production

log = logging.getLogger(__name__)
TRIGGER_DAYS = 30
"""Triggers (dormancy, spend jump, ...) of the last this many days are shipped with the bundle."""


def serving_recommender(base: RecommenderConfig, evaluation: EvaluationResult | None) -> RecommenderConfig:
    """The recommender config the service gets: ``base`` with the evaluated blend and discovery weights
    (unless ``base`` fixes its own), ranking discovery by the blend when the evaluation had no re-ranker."""
    if evaluation is None:
        return base
    cfg = base
    if base.blend_weights is None and evaluation.blend_weights:
        cfg = replace(cfg, blend_weights=tuple(evaluation.blend_weights.items()),
                      discovery_weights=tuple(evaluation.discovery_weights.items()))
    if evaluation.reranker is None:
        cfg = replace(cfg, rerank=False)
    return cfg


def _engine(shop: Shop, end: pd.Timestamp, config: TrainConfig, rec_cfg: RecommenderConfig,
            evaluation: EvaluationResult | None) -> RecommendationEngine:
    reranker = evaluation.reranker if evaluation is not None else None
    rec = fit_production(shop, end, rec_cfg, config.interactions, reranker=reranker)
    trending = TrendingRecommender(rec_cfg).fit(rec._require())
    engine = RecommendationEngine(rec, trending)
    log.info("precomputing recommendation candidates for %d customers", len(rec._require().users))
    engine.precompute()
    return engine


def _offers(shop: Shop, end: pd.Timestamp, seed: int,
            learner: str = S_LEARNER) -> tuple[OfferPolicy | None, OfferCatalogue | None]:
    if shop.offers is None:
        return None, None
    catalogue = parse_catalogue(shop.offers)
    check_attribute_rules(catalogue, shop.attributes)
    uplift = fit_uplift(shop, end, seed, learner)
    return (OfferPolicy(catalogue, uplift) if uplift is not None else None), catalogue


def fit_serving_bundle(shop: Shop, config: TrainConfig, evaluation: EvaluationResult | None) -> ServingBundle:
    """Refit everything on all data (as of the data end) for the service.

    ``evaluation``: the evaluation of the same config, whose blend weights and re-ranker are shipped
    (None: tune the weights and learn a re-ranker before the data end, as the config asks).
    """
    end = shop.end + pd.Timedelta(seconds=1)
    return _refit(shop, end, config, evaluation)


def _refit(shop: Shop, end: pd.Timestamp, config: TrainConfig, evaluation: EvaluationResult | None
           ) -> ServingBundle:
    rec_cfg = serving_recommender(config.recommender, evaluation)

    def customers(steps: Steps) -> tuple[CustomerModels, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        steps.next("churn and value models")
        cm = fit_customer_models(shop, end, config.customer,  # the evaluated value choice, if it made one
                                 evaluation.report.get("selection") if evaluation is not None else None)
        steps.next("customer scores and segments")
        X = customer_features(shop, end)
        buyers = X[X["n_orders"] > 0]
        churn = cm.churn.predict(buyers)
        value = cm.value.predict(buyers)
        seg = segment_customers(X, churn, value, config.horizon_days)
        scores = pd.DataFrame({CHURN: churn, PREDICTED_VALUE: value}).reindex(X.index).join(seg)
        opted = shop.customers.set_index(schema.CUSTOMER_ID)[schema.OPTED_OUT]
        scores[schema.OPTED_OUT] = opted.reindex(X.index).fillna(False).astype(bool)
        steps.next("triggers")
        since = end - pd.Timedelta(days=TRIGGER_DAYS)
        trig = detect_triggers(order_lines(shop, end), since, end, churn_now=churn)
        return cm, X, scores, trig

    def recommenders() -> RecommendationEngine:
        with Steps("refit", 1, log) as steps:
            steps.next("recommenders and their candidate lists")
            return _engine(shop, end, config, rec_cfg, evaluation)

    def rest() -> tuple[tuple[CustomerModels, pd.DataFrame, pd.DataFrame, pd.DataFrame],
                        tuple[OfferPolicy | None, OfferCatalogue | None]]:
        with Steps("refit", 4, log) as steps:
            fitted = customers(steps)
            steps.next("offer policy")
            return fitted, _offers(shop, end, config.seed, config.uplift_learner)

    # independent: the recommenders and their candidate lists beside the rest (training.concurrency)
    engine, ((cm, X, scores, trig), (policy, catalogue)) = together(
        [recommenders, rest], concurrent=config.concurrent(len(shop.customers)))
    params = {**config.to_params(), **rec_cfg.to_params()}
    return ServingBundle(engine=engine, churn=cm.churn, value=cm.value, policy=policy,
                         catalogue=catalogue, features=X, scores=scores, triggers=trig, as_of=end,
                         meta={"fingerprint": shop.fingerprint, "params": params,
                               "components": cm.components, "selection": cm.selection})
