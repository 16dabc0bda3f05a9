"""Product recommendations: recommenders behind one interface, business rules, cold start and reasons.

Recommending is candidate scoring -> business rules -> ranking (:mod:`.context`, :mod:`.base`); the
components (:mod:`.popularity`, :mod:`.factors`, :mod:`.neighbours`) are blended (:mod:`.blend`), discovery
requests re-ranked (:mod:`.rerank`), explained (:mod:`.reasons`) and served one customer at a time by the
engine (:mod:`.engine`), whose candidates are ranked in advance (:mod:`.candidates`).

Example
-------
>>> from models.recsys import BlendRecommender, RecommenderConfig
>>> rec = BlendRecommender(RecommenderConfig(seed=1)).fit(data)       # doctest: +SKIP
>>> rec.recommend(["C0000001"], k=5)                                  # doctest: +SKIP
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit warns unless BLAS is single-threaded

from models.recsys.base import NEG, Recommender  # noqa: E402
from models.recsys.blend import (  # noqa: E402
    COMPONENTS,
    DEFAULT_WEIGHTS,
    BlendRecommender,
    blended,
    component_settings,
    normalise,
)
from models.recsys.candidates import Candidates, top_candidates  # noqa: E402
from models.recsys.context import (  # noqa: E402
    DISCOVERY_RULES,
    BusinessRules,
    RecommenderConfig,
    UserContext,
    build_context,
    rules_mask,
)
from models.recsys.engine import Recommendation, RecommendationEngine  # noqa: E402
from models.recsys.factors import ALSRecommender, BPRRecommender  # noqa: E402
from models.recsys.neighbours import EASERecommender, ItemKNNRecommender  # noqa: E402
from models.recsys.popularity import (  # noqa: E402
    BuyAgainRecommender,
    PopularityRecommender,
    RisingRecommender,
    TrendingRecommender,
)
from models.recsys.rerank import FEATURES, RANK_COMPONENTS, ItemStats, RerankConfig, Reranker  # noqa: E402
from models.recsys.tifu import Baskets, TifuConfig, TIFUKNNRecommender, build_baskets  # noqa: E402

MODELS: dict[str, type[Recommender]] = {
    "popularity": PopularityRecommender, "trending": TrendingRecommender, "rising": RisingRecommender,
    "buy_again": BuyAgainRecommender,
    "als": ALSRecommender, "bpr": BPRRecommender, "item_knn": ItemKNNRecommender, "ease": EASERecommender,
    "tifu_knn": TIFUKNNRecommender, "production": BlendRecommender,
}
"""Every recommender by the name evaluations and configs use."""

__all__ = [
    "COMPONENTS", "DEFAULT_WEIGHTS", "DISCOVERY_RULES", "FEATURES", "MODELS", "NEG", "RANK_COMPONENTS",
    "Baskets", "TIFUKNNRecommender", "TifuConfig", "build_baskets",
    "ALSRecommender", "BPRRecommender", "BlendRecommender", "BusinessRules", "BuyAgainRecommender",
    "Candidates",
    "EASERecommender", "ItemKNNRecommender", "ItemStats", "PopularityRecommender", "Recommendation",
    "RecommendationEngine", "Recommender", "RecommenderConfig", "RerankConfig", "Reranker",
    "RisingRecommender",
    "TrendingRecommender", "UserContext", "blended", "build_context", "component_settings", "normalise",
    "rules_mask", "top_candidates",
]
