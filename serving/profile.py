"""A customer's profile for the CRM: RFM, net value, churn risk, predicted value, segment, triggers and
reasons.

The first call on a load builds a :class:`ProfileIndex` (row positions, the columns the answer and the two
models read as arrays, triggers by customer), so one answer reads a row out of arrays instead of slicing
frames: the answers are the frame path's, value for value (``tests/serving/test_profile.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features import schema
from models.bundle import CHURN, PREDICTED_VALUE, SEGMENT
from models.customer import READABLE, ChurnModel, ValueModel
from models.customer_scorers import Blend

if TYPE_CHECKING:
    from serving.runtime import Loaded

RFM = ("recency_days", "n_orders", "gross_spend")
NET_VALUE = ("net_revenue", "net_margin", "returns_value", "return_rate", "discount_share")
TIERS = ("value_tier", "attrition_tier", "potential")
SCORES = (CHURN, PREDICTED_VALUE, SEGMENT, *TIERS)


def _num(v: Any) -> float | None:
    return None if v is None or pd.isna(v) else round(float(v), 4)


def _text(v: Any) -> str | None:
    return None if v is None or pd.isna(v) else str(v)


@dataclass(frozen=True)
class ProfileIndex:
    """What one profile answer reads, prepared once per model load."""

    features_pos: pd.Index
    """The features' customer ids; a customer's position is its row in ``columns``."""
    columns: Mapping[str, np.ndarray]
    """Feature columns the answer or the models read, as arrays (numeric ones are views, no copy)."""
    scores_pos: pd.Index
    scores: Mapping[str, np.ndarray]
    triggers: Mapping[str, list[dict[str, Any]]]

    @classmethod
    def build(cls, features: pd.DataFrame, scores: pd.DataFrame, triggers: pd.DataFrame,
              models: tuple[Any, ...]) -> ProfileIndex:
        wanted = set(RFM) | set(NET_VALUE)
        for m in models:
            wanted |= set(getattr(m, "feature_names", []))
        cols = {c: features[c].to_numpy() for c in features.columns if c in wanted}
        sc = {c: scores[c].to_numpy() for c in SCORES if c in scores.columns}
        by_customer: dict[str, list[dict[str, Any]]] = {}
        if len(triggers):
            for r in triggers.itertuples():
                by_customer.setdefault(str(getattr(r, schema.CUSTOMER_ID)), []).append(
                    {"trigger": r.trigger, "at": str(r.at), "detail": r.detail})
        return cls(features.index, cols, scores.index, sc, by_customer)

    def row(self, i: int) -> dict[str, np.ndarray]:
        """Customer ``i``'s feature row as one-element arrays (what :meth:`CustomerModel.design_matrix`
        reads)."""
        return {c: a[i:i + 1] for c, a in self.columns.items()}


def _position(index: pd.Index, customer_id: str) -> int:
    """The row of ``customer_id`` in a unique index, -1 if absent (a hash lookup, no array built)."""
    try:
        return int(index.get_loc(customer_id))
    except KeyError:
        return -1


def _reasons(model: Any, ix: ProfileIndex, i: int, customer_id: str,
             features: pd.DataFrame) -> list[dict[str, Any]]:
    if isinstance(model, Blend):  # explained by its largest part (Blend.explain), the model: its fast path
        model = model.parts[0][0]
    if isinstance(model, ChurnModel | ValueModel):
        return model.explain_matrix(model.design_matrix(ix.row(i)), [customer_id])[customer_id]
    return model.explain(features.iloc[[i]])[customer_id]  # type: ignore[no-any-return]  # BG/NBD fallback


def profile(cur: Loaded | None, customer_id: str) -> dict[str, Any]:
    """The profile of ``customer_id`` under the loaded models (``known: false`` when they do not know it)."""
    if cur is None:
        return {"customer_id": customer_id, "known": False, "source": "fallback", "model_version": "none"}
    ix = cur.profile_index
    i = _position(ix.features_pos, customer_id)
    if i < 0:
        return {"customer_id": customer_id, "known": False, "source": "fallback",
                "model_version": cur.version}
    col = ix.columns
    j = _position(ix.scores_pos, customer_id)

    def score(c: str) -> Any:
        return ix.scores[c][j] if j >= 0 and c in ix.scores else None

    reasons: dict[str, Any] = {}
    if col["n_orders"][i] > 0:
        b = cur.bundle
        reasons["churn"] = _reasons(b.churn, ix, i, customer_id, b.features)
        reasons["value"] = _reasons(b.value, ix, i, customer_id, b.features)
    return {
        "customer_id": customer_id, "known": True, "source": "model", "model_version": cur.version,
        "as_of": str(cur.bundle.as_of),
        "rfm": {"recency_days": _num(col["recency_days"][i]), "orders": int(col["n_orders"][i]),
                "gross_spend": _num(col["gross_spend"][i])},
        "net_value": {k: _num(col[k][i]) for k in NET_VALUE},
        "churn_risk": _num(score(CHURN)), "predicted_value": _num(score(PREDICTED_VALUE)),
        "segment": _text(score(SEGMENT)),
        "tiers": {k: _text(score(k)) for k in TIERS},
        "triggers": list(ix.triggers.get(customer_id, [])),
        "reasons": reasons,
        "glossary": {k: READABLE[k] for k in ("recency_days", "net_revenue") if k in READABLE},
    }
