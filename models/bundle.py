"""The serving bundle: everything the service needs, fitted on all data, in one picklable object.

Saved as one pickle per component (so that each can be registered and versioned on its own), each stamped
with :data:`FORMAT_VERSION`. Loading a component saved in another format raises :class:`BundleFormatError`
instead of failing somewhere later with an attribute error.

Example
-------
>>> paths = bundle.save("/tmp/bundle")          # doctest: +SKIP
>>> ServingBundle.load(paths).as_of             # doctest: +SKIP
Timestamp('2025-12-31 23:59:59')
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from features.exceptions import PersonaliseError
from models.customer_scorers import CustomerScorer
from models.offers import OfferCatalogue, OfferPolicy
from models.recsys import RecommendationEngine

COMPONENTS = ("recommender", "churn", "value", "offers")
FORMAT_VERSION = 2
"""Bump whenever a component's pickled content changes shape (1: the unversioned pickles before it)."""
_FORMAT_KEY = "format_version"
CHURN, PREDICTED_VALUE, SEGMENT = "churn", "predicted_value", "segment"
"""Columns of :attr:`ServingBundle.scores` (with ``opted_out`` and the segment tiers)."""


class BundleFormatError(PersonaliseError):
    """A saved component was written in another bundle format than this code reads."""

    def __init__(self, path: Path, found: object) -> None:
        super().__init__(f"{path}: bundle format {found}, this code reads format {FORMAT_VERSION}; retrain "
                         f"(personalise train --force) or serve with the code version that wrote it")
        self.path, self.found = path, found


@dataclass
class ServingBundle:
    engine: RecommendationEngine
    churn: CustomerScorer
    value: CustomerScorer
    policy: OfferPolicy | None
    catalogue: OfferCatalogue | None
    features: pd.DataFrame  # customer features as of ``as_of``
    scores: pd.DataFrame  # churn, predicted value, segment tiers per customer
    triggers: pd.DataFrame  # active triggers (last 30 days) per customer
    as_of: pd.Timestamp
    meta: dict[str, Any] = field(default_factory=dict)

    def parts(self) -> dict[str, dict[str, Any]]:
        """What each component's pickle holds."""
        return {
            "recommender": {"engine": self.engine},
            "churn": {"churn": self.churn, "features": self.features, "scores": self.scores,
                      "triggers": self.triggers, "as_of": self.as_of},
            "value": {"value": self.value, PREDICTED_VALUE: self.scores[PREDICTED_VALUE]},
            "offers": {"policy": self.policy, "catalogue": self.catalogue},
        }

    def save(self, directory: str | Path) -> dict[str, Path]:
        """One pickle per component, each stamped with the format version; returns their paths."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, obj in self.parts().items():
            p = d / f"{name}.pkl"
            with open(p, "wb") as f:
                pickle.dump({**obj, "meta": self.meta, _FORMAT_KEY: FORMAT_VERSION}, f,
                            protocol=pickle.HIGHEST_PROTOCOL)
            paths[name] = p
        return paths

    @staticmethod
    def load(paths: dict[str, Path]) -> ServingBundle:
        """The bundle from the component pickles ``paths`` (by component name)."""
        parts: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        for name in COMPONENTS:
            obj = load_component(paths[name])
            meta[name] = obj.pop("meta", {})
            parts.update(obj)
        return ServingBundle(engine=parts["engine"], churn=parts["churn"], value=parts["value"],
                             policy=parts["policy"], catalogue=parts["catalogue"], features=parts["features"],
                             scores=parts["scores"], triggers=parts["triggers"], as_of=parts["as_of"],
                             meta=meta)


def load_component(path: str | Path) -> dict[str, Any]:
    """One component's pickle (without its format stamp). Raises :class:`BundleFormatError` when it was
    written in another format."""
    p = Path(path)
    with open(p, "rb") as f:
        obj = pickle.load(f)
    found = obj.pop(_FORMAT_KEY, 1) if isinstance(obj, dict) else None
    if found != FORMAT_VERSION:
        raise BundleFormatError(p, found)
    return obj  # type: ignore[no-any-return]
