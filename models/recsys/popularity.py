"""Recommenders without personal taste: popularity, trending (overall or by region), rising and buy-again.

Example
-------
>>> TrendingRecommender().fit(data).scores_for_region("london")    # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from features.interactions import InteractionData
from models.recsys.base import NEG, Recommender
from models.recsys.context import UserContext


class PopularityRecommender(Recommender):
    """Most bought products overall (the same list for everyone)."""

    name = "popularity"

    def _fit(self, data: InteractionData) -> None:
        self.pop_ = np.log1p(np.asarray(data.purchases.sum(axis=0)).ravel()) + 1e-6 * np.log1p(
            np.asarray(data.weights.sum(axis=0)).ravel())

    def _score(self, ctx: UserContext) -> np.ndarray:
        return np.broadcast_to(self.pop_, (len(ctx.customer_ids), len(self.pop_))).copy()


class TrendingRecommender(Recommender):
    """Most bought products in the recent window, overall or in the customer's region."""

    name = "trending"

    def _fit(self, data: InteractionData) -> None:
        pop = np.log1p(np.asarray(data.purchases.sum(axis=0)).ravel())
        self.overall_ = np.log1p(data.recent_item_weight) + 1e-3 * pop
        self.region_ = {r: np.log1p(v) + 1e-3 * self.overall_ for r, v in data.region_recent.items()}

    def scores_for_region(self, region: str | None) -> np.ndarray:
        return self.region_.get(str(region), self.overall_) if region is not None else self.overall_

    def _score(self, ctx: UserContext) -> np.ndarray:
        data = self._require()
        reg = [data.user_region[r] if r >= 0 else None for r in ctx.rows]
        if not reg:
            return np.zeros((0, len(self.overall_)))
        return np.vstack([self.scores_for_region(g) for g in reg])


class RisingRecommender(Recommender):
    """Products selling faster than they did (the same list for everyone): the log of their purchases in the
    trending window against the log of their mean over the windows before it
    (:attr:`features.interactions.InteractionData.prior_item_weight`); with no prior rate, trending."""

    name = "rising"

    def _fit(self, data: InteractionData) -> None:
        recent = np.asarray(data.recent_item_weight, dtype=float)
        prior = getattr(data, "prior_item_weight", None)  # data pickled before it was built have none
        self.rise_ = np.log1p(recent) - (np.log1p(prior) if prior is not None else 0.0)

    def _score(self, ctx: UserContext) -> np.ndarray:
        return np.broadcast_to(self.rise_, (len(ctx.customer_ids), len(self.rise_))).copy()


class BuyAgainRecommender(Recommender):
    """The customer's own repeat purchases: how often, how recently, and whether it is replenishable."""

    name = "buy_again"

    def _score(self, ctx: UserContext) -> np.ndarray:
        data = self._require()
        boost = np.where(data.item_replenishable, self.config.replenish_boost, 1.0)
        out = np.full(ctx.P.shape, NEG)
        P = ctx.P.tocoo()  # only the items each customer bought
        rows, cols, cnt = P.row, P.col, P.data
        if not len(rows):
            return out
        last = np.asarray(ctx.L.tocsr()[rows, cols]).ravel().astype(float)
        rec = np.divide(1.0, np.log2(1 + last), out=np.zeros_like(last), where=last > 0)
        out[rows, cols] = (cnt + 0.5 * rec) * boost[cols]
        return out
