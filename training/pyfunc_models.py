"""The pyfunc view of each serving component, logged as an MLflow "model from code".

This file is what MLflow stores as each registered model's code and runs when the model is loaded
(``mlflow.pyfunc.load_model("models:/personalise-churn@champion")``); its last line hands MLflow the model
object. Every component takes a frame with a ``customer_id`` column and answers from what the bundle
fitted on all data, as of its data end (no live events, no contact history):

- ``recommender``: ``customer_id, product_id, score, rank`` - the top ``k`` (param, default 10) products
  per known customer; unknown customers get no rows.
- ``churn``: ``customer_id, churn`` - probability of no order within the horizon (NaN: no order yet, or
  unknown).
- ``value``: ``customer_id, predicted_value`` - expected net revenue within the horizon (NaN likewise).
- ``offers``: ``customer_id, offer_id, channel, expected_value, group, reason`` - the best offer or
  ``none`` (params: ``campaign`` for the control group, ``channel``, empty for any).
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from features import schema
from models.bundle import CHURN, PREDICTED_VALUE, SEGMENT, load_component

OUTPUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "recommender": ((schema.CUSTOMER_ID, "string"), (schema.PRODUCT_ID, "string"), ("score", "double"),
                    ("rank", "long")),
    "churn": ((schema.CUSTOMER_ID, "string"), (CHURN, "double")),
    "value": ((schema.CUSTOMER_ID, "string"), (PREDICTED_VALUE, "double")),
    "offers": ((schema.CUSTOMER_ID, "string"), (schema.OFFER_ID, "string"), (schema.CHANNEL, "string"),
               ("expected_value", "double"), (schema.GROUP, "string"), ("reason", "string")),
}
"""What each component's ``predict`` returns: column name and MLflow type (its signature's outputs)."""
PARAMS: dict[str, dict[str, Any]] = {"recommender": {"k": 10}, "churn": {}, "value": {},
                                     "offers": {"campaign": "default", "channel": ""}}
"""Each component's inference parameters and their defaults."""
NOT_A_BUYER = "unknown customer or no purchase yet"


def _ids(model_input: pd.DataFrame) -> list[str]:
    if schema.CUSTOMER_ID not in model_input.columns:
        raise KeyError(f"Missed column {schema.CUSTOMER_ID!r}: the input needs one customer id per row")
    return model_input[schema.CUSTOMER_ID].astype(str).tolist()


def _recommend(obj: dict[str, Any], ids: list[str], params: dict[str, Any]) -> pd.DataFrame:
    recs = obj["engine"].model.recommend(ids, k=int(params.get("k", 10)))
    return recs.astype({schema.CUSTOMER_ID: str, schema.PRODUCT_ID: str, "score": float, "rank": "int64"})


def _score(scores: pd.Series, column: str, ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame({schema.CUSTOMER_ID: ids, column: scores.reindex(ids).to_numpy(dtype=float)})


def _offers(obj: dict[str, Any], customers: dict[str, Any], ids: list[str], params: dict[str, Any]
            ) -> pd.DataFrame:
    cols = [c for c, _ in OUTPUTS["offers"]]
    X, scores, policy = customers["features"], customers["scores"], obj["policy"]
    known = [c for c in dict.fromkeys(ids) if c in X.index and X.at[c, "n_orders"] > 0]
    found = pd.DataFrame(columns=cols)
    if policy is not None and known:
        trig = customers["triggers"]
        dec = policy.decide(X.loc[known], scores[CHURN].reindex(known), customers["as_of"],
                            campaign=str(params.get("campaign") or "default"),
                            channel=params.get("channel") or None, segments=scores[SEGMENT].reindex(known),
                            triggers=trig[trig[schema.CUSTOMER_ID].isin(known)] if len(trig) else None,
                            opted_out=scores[schema.OPTED_OUT].reindex(known).fillna(False))
        found = dec[cols]
    why = "no offer policy in this model" if policy is None else NOT_A_BUYER
    rows = found.set_index(schema.CUSTOMER_ID).reindex(ids)
    none = rows[schema.OFFER_ID].isna().to_numpy()
    out = rows.reset_index()
    out.loc[none, [schema.OFFER_ID, "expected_value", "reason"]] = ["none", 0.0, why]
    for c in (schema.CHANNEL, schema.GROUP):
        out[c] = out[c].astype(object).where(out[c].notna(), None)
    return out.astype({"expected_value": float})[cols]


class ComponentModel(PythonModel):
    """Pyfunc of one serving component: the one its artifacts name (``{"churn": "churn.pkl"}``)."""

    def load_context(self, context: Any) -> None:
        self.component = next(c for c in OUTPUTS if c in context.artifacts)
        self.obj = load_component(context.artifacts[self.component])
        self.customers = (load_component(context.artifacts["customers"])
                          if "customers" in context.artifacts else None)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
                ) -> pd.DataFrame:
        ids = _ids(model_input)
        p = {**PARAMS[self.component], **(params or {})}
        if self.component == "recommender":
            return _recommend(self.obj, ids, p)
        if self.component == "churn":
            return _score(self.obj["scores"][CHURN], CHURN, ids)
        if self.component == "value":
            return _score(self.obj[PREDICTED_VALUE], PREDICTED_VALUE, ids)
        if self.component == "offers" and self.customers is not None:
            return _offers(self.obj, self.customers, ids, p)
        raise ValueError(f"unknown component {self.component!r} (or the offers model without its customers)")


def signature(component: str) -> Any:
    """The component's MLflow signature: a ``customer_id`` column in, its :data:`OUTPUTS` out (NaN/None
    allowed where a customer has no answer), its :data:`PARAMS`."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema
    kinds = {int: "long", str: "string"}
    outputs: list[Any] = [ColSpec(t, c, required=c in (schema.CUSTOMER_ID, schema.OFFER_ID))
                          for c, t in OUTPUTS[component]]
    inputs: list[Any] = [ColSpec("string", schema.CUSTOMER_ID)]
    params = [ParamSpec(k, kinds[type(v)], v) for k, v in PARAMS[component].items()]
    if not params:
        return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs), params=ParamSchema(params))


mlflow.models.set_model(ComponentModel())
