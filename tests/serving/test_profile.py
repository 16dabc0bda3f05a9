"""The CRM's customer profile read from prepared arrays (:class:`serving.profile.ProfileIndex`) equals the
frame path it replaced, value for value, for the first customers of the trained project (with and without
orders, with triggers; at least 250) and an unknown one (in process, real models)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from models.customer import READABLE, readable
from serving.rendered_json import rendered_bytes
from serving.runtime import Personaliser

pytestmark = pytest.mark.slow  # the trained project


def _frame_explain(model: Any, X: pd.DataFrame, top: int = 3) -> dict[str, list[dict[str, Any]]]:
    """The explanation as it was computed before the array path: values shown from the prepared frame (a
    blend's: its largest part's)."""
    from models.customer_scorers import Blend
    model = model.parts[0][0] if isinstance(model, Blend) else model
    Xp = model._prepare(X)
    contrib = np.asarray(model.booster_.predict(model.design_matrix(X), pred_contrib=True))[:, :-1]
    out = {}
    for i, cid in enumerate(X.index):
        order = np.argsort(-np.abs(contrib[i]))[:top]
        out[str(cid)] = [{
            "feature": model.columns_[j], "contribution": round(float(contrib[i, j]), 4),
            "value": None if pd.isna(v := Xp.iat[i, j]) else (
                str(v) if model.columns_[j] in model.categories_ else round(float(v), 3)),
            "text": f"{readable(model.columns_[j])} {'raises' if contrib[i, j] > 0 else 'lowers'} the score",
        } for j in order]
    return out


def _num(v: Any) -> float | None:
    return None if v is None or pd.isna(v) else round(float(v), 4)


def _frame_profile(p: Personaliser, customer_id: str) -> dict[str, Any]:
    """The profile as the frame path computed it (``.loc`` slices, a mask over all triggers)."""
    cur = p.current
    b = cur.bundle
    if customer_id not in b.features.index:
        return {"customer_id": customer_id, "known": False, "source": "fallback",
                "model_version": cur.version}
    X = b.features.loc[[customer_id]]
    row, s = X.iloc[0], b.scores.loc[customer_id]
    reasons = {}
    if row["n_orders"] > 0:
        reasons = {"churn": _frame_explain(b.churn, X)[customer_id],
                   "value": _frame_explain(b.value, X)[customer_id]}
    trig = b.triggers[b.triggers["customer_id"] == customer_id] if len(b.triggers) else pd.DataFrame()
    return {
        "customer_id": customer_id, "known": True, "source": "model", "model_version": cur.version,
        "as_of": str(b.as_of),
        "rfm": {"recency_days": _num(row["recency_days"]), "orders": int(row["n_orders"]),
                "gross_spend": _num(row["gross_spend"])},
        "net_value": {k: _num(row[k]) for k in ("net_revenue", "net_margin", "returns_value", "return_rate",
                                                 "discount_share")},
        "churn_risk": _num(s.get("churn")), "predicted_value": _num(s.get("predicted_value")),
        "segment": None if pd.isna(s.get("segment")) else str(s.get("segment")),
        "tiers": {k: None if pd.isna(s.get(k)) else str(s.get(k))
                  for k in ("value_tier", "attrition_tier", "potential")},
        "triggers": [{"trigger": r.trigger, "at": str(r.at), "detail": r.detail} for r in trig.itertuples()],
        "reasons": reasons,
        "glossary": {k: READABLE[k] for k in ("recency_days", "net_revenue") if k in READABLE},
    }


def test_profile_from_arrays_equals_the_frame_path(personaliser: Personaliser) -> None:
    p = personaliser
    b = p.current.bundle
    everyone = [str(c) for c in b.features.index]
    with_triggers = sorted(set(b.triggers["customer_id"].astype(str))) if len(b.triggers) else []
    no_orders = [c for c in everyone if b.features.at[c, "n_orders"] == 0]
    assert with_triggers and no_orders  # the cases the comparison must cover
    ids = list(dict.fromkeys([*everyone[:250], *with_triggers[:25], *no_orders[:25]]))
    assert len(ids) >= 250 and set(with_triggers[:25]) <= set(ids) and set(no_orders[:25]) <= set(ids)
    for c in [*ids, "never-seen-customer"]:
        assert p.profile(c) == _frame_profile(p, c), c
    some = with_triggers[0]
    assert p.profile(some)["triggers"]  # and they are shown


def test_profile_body_is_the_answer_rendered_once_per_load(personaliser: Personaliser) -> None:
    """The bytes the service sends are the profile's JSON; a known customer's are kept for the load and
    reused (the same object), an unknown customer's are not kept."""
    p = personaliser
    cur = p.current
    c = str(cur.bundle.features.index[0])
    body = p.profile_body(c)
    assert json.loads(body) == json.loads(rendered_bytes(p.profile(c))) and json.loads(body)["known"]
    assert cur.profiles[c] is body and p.profile_body(c) is body
    assert json.loads(p.profile_body("never-seen-customer"))["known"] is False
    assert "never-seen-customer" not in cur.profiles
