"""A customer's profile for the CRM: RFM, net value, churn risk, predicted value, segment, triggers and
reasons."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from features import schema
from models.customer import READABLE

if TYPE_CHECKING:
    from serving.runtime import Loaded


def _num(v: Any) -> float | None:
    return None if v is None or pd.isna(v) else round(float(v), 4)


def _text(v: Any) -> str | None:
    return None if v is None or pd.isna(v) else str(v)


def profile(cur: Loaded | None, customer_id: str) -> dict[str, Any]:
    """The profile of ``customer_id`` under the loaded models (``known: false`` when they do not know it)."""
    if cur is None:
        return {"customer_id": customer_id, "known": False, "source": "fallback", "model_version": "none"}
    b = cur.bundle
    if customer_id not in b.features.index:
        return {"customer_id": customer_id, "known": False, "source": "fallback",
                "model_version": cur.version}
    X = b.features.loc[[customer_id]]
    row = X.iloc[0]
    s = b.scores.loc[customer_id]
    reasons: dict[str, Any] = {}
    if row["n_orders"] > 0:
        reasons["churn"] = b.churn.explain(X)[customer_id]
        reasons["value"] = b.value.explain(X)[customer_id]
    trig = b.triggers[b.triggers[schema.CUSTOMER_ID] == customer_id] if len(b.triggers) else pd.DataFrame()
    return {
        "customer_id": customer_id, "known": True, "source": "model", "model_version": cur.version,
        "as_of": str(b.as_of),
        "rfm": {"recency_days": _num(row["recency_days"]), "orders": int(row["n_orders"]),
                "gross_spend": _num(row["gross_spend"])},
        "net_value": {k: _num(row[k]) for k in ("net_revenue", "net_margin", "returns_value", "return_rate",
                                                 "discount_share")},
        "churn_risk": _num(s.get("churn")), "predicted_value": _num(s.get("predicted_value")),
        "segment": _text(s.get("segment")),
        "tiers": {k: _text(s.get(k)) for k in ("value_tier", "attrition_tier", "potential")},
        "triggers": [{"trigger": r.trigger, "at": str(r.at), "detail": r.detail} for r in trig.itertuples()],
        "reasons": reasons,
        "glossary": {k: READABLE[k] for k in ("recency_days", "net_revenue") if k in READABLE},
    }
