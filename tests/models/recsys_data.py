"""What the recommendation tests share: the checker board (tiny, with a known answer) and the small shop's
settings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.importers import is_non_product
from features.interactions import IdMap, InteractionData, build_interactions
from features.io import Shop
from models.recsys import Baskets, BlendRecommender, RecommenderConfig, RerankConfig, Reranker
from training.rec_truth import new_items_truth, purchase_truth
from training.rerank_training import rerank_rows

N = 50
"""Customers and products of the checker board."""
CUTOFF = pd.Timestamp("2025-11-15")
"""Where the small shop's tests cut its history."""
CFG = RecommenderConfig(
    factors=16, als_iterations=8, bpr_iterations=30, seed=7,
    blend_weights=(("buy_again", 1.0), ("item_knn", 1.0), ("als", 0.5), ("popularity", 0.1)))
"""Small, fast settings for the small shop."""


def checker_board(n: int = N) -> InteractionData:
    """After implicit's ``recommender_base_test``: customer ``u{i}`` bought product ``p{j}`` (once, 7 days
    ago) when ``i + j`` is even and ``i != j``, so everyone like customer ``i`` bought product ``i`` and
    they did not: a model of taste recommends it first. Categories a/b/c by ``j % 3``; all in stock."""
    i = np.arange(n)
    bought = ((i[:, None] + i[None, :]) % 2 == 0) & ~np.eye(n, dtype=bool)
    W = sp.csr_matrix(bought.astype(np.float64))
    return InteractionData(
        users=IdMap([f"u{x:02d}" for x in i]), items=IdMap([f"p{x:02d}" for x in i]), weights=W,
        purchases=W.copy(), last_purchase_days=sp.csr_matrix(W * 8.0), returned=sp.csr_matrix((n, n)),
        item_category=np.array(["abc"[x % 3] for x in i], dtype=object), item_ok=np.ones(n, bool),
        item_replenishable=np.zeros(n, bool), item_price=1.0 + i,
        user_region=np.array(["north", "south"] * (n // 2), dtype=object),
        recent_item_weight=np.asarray(W.sum(axis=0)).ravel(), region_recent={})


def board_baskets(data: InteractionData) -> Baskets:
    """The board's purchases as baskets: one per customer, holding everything they bought."""
    P = sp.csr_matrix(data.purchases > 0, dtype=np.float64)
    return Baskets(np.arange(P.shape[0], dtype=np.int64), P, P.shape[0], data.cutoff)


def board_reranker(blend: BlendRecommender, seed: int) -> Reranker:
    """A re-ranker taught, on the board, that each customer's withheld product is the new one they buy."""
    data = blend._require()
    truth = {u: {"p" + u[1:]} for u in data.users.ids}
    X, y, groups, _ = rerank_rows(blend, truth)
    return Reranker(RerankConfig(trees=5, min_customers=10, min_child_samples=5, seed=seed)).fit(X, y, groups)


def shop_data(shop: Shop) -> InteractionData:
    return build_interactions(shop, CUTOFF, non_product=is_non_product)


def shop_reranker(shop: Shop) -> Reranker:
    """A re-ranker learned on the 56 days before the cutoff (fewer customers allowed: the shop is small)."""
    start = CUTOFF - pd.Timedelta(days=56)
    d = build_interactions(shop, start, non_product=is_non_product)
    X, y, groups, _ = rerank_rows(BlendRecommender(CFG).fit(d),
                                  new_items_truth(d, purchase_truth(shop, start, CUTOFF)))
    return Reranker(RerankConfig(trees=30, min_customers=20, seed=CFG.seed)).fit(X, y, groups)
