"""The serving bundle: everything the service needs, fitted on all data, in one picklable object."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from models.customer import ChurnModel, ValueModel
from models.offers import OfferCatalogue, OfferPolicy
from models.recommenders import RecommendationEngine

COMPONENTS = ("recommender", "churn", "value", "offers")


@dataclass
class ServingBundle:
    engine: RecommendationEngine
    churn: ChurnModel
    value: ValueModel
    policy: OfferPolicy | None
    catalogue: OfferCatalogue | None
    features: pd.DataFrame  # customer features as of ``as_of``
    scores: pd.DataFrame  # churn, predicted value, segment tiers per customer
    triggers: pd.DataFrame  # active triggers (last 30 days) per customer
    as_of: pd.Timestamp
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, directory: str | Path) -> dict[str, Path]:
        """One pickle per component, so each can be registered and versioned on its own."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        parts = {
            "recommender": {"engine": self.engine},
            "churn": {"churn": self.churn, "features": self.features, "scores": self.scores,
                      "triggers": self.triggers, "as_of": self.as_of},
            "value": {"value": self.value, "predicted_value": self.scores["predicted_value"]},
            "offers": {"policy": self.policy, "catalogue": self.catalogue},
        }
        paths = {}
        for name, obj in parts.items():
            p = d / f"{name}.pkl"
            with open(p, "wb") as f:
                pickle.dump({**obj, "meta": self.meta}, f, protocol=pickle.HIGHEST_PROTOCOL)
            paths[name] = p
        return paths

    @staticmethod
    def load(paths: dict[str, Path]) -> ServingBundle:
        parts: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        for name in COMPONENTS:
            with open(paths[name], "rb") as f:
                obj = pickle.load(f)
            meta[name] = obj.pop("meta", {})
            parts.update(obj)
        return ServingBundle(engine=parts["engine"], churn=parts["churn"], value=parts["value"],
                             policy=parts["policy"], catalogue=parts["catalogue"], features=parts["features"],
                             scores=parts["scores"], triggers=parts["triggers"], as_of=parts["as_of"],
                             meta=meta)
