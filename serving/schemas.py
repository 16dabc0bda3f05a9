"""The API's request and response types (pydantic: validated before a handler runs; HTTP 400 naming the
field)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field
from typing_extensions import TypedDict

ID = Annotated[str, Field(
    min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$",
    description="An id as the shop knows it (1-64 characters: letters, digits, _ . : -)")]
EventType = Literal["view", "add_to_cart", "remove_from_cart", "wishlist", "purchase"]
Channel = Annotated[str | None, Field(max_length=32, description="Only offers on this channel (one of the "
                                                                  "catalogue's channels); default: any")]
Campaign = Annotated[str, Field(min_length=1, max_length=64,
                                description="Campaign id: it decides the control group and is stored with "
                                            "each send")]
DryRun = Annotated[bool, Field(description="true (default): decide and record nothing (a preview: asking "
                                           "again gives the same answer); commit a decision later with "
                                           "offers/commit and its decision_id. false: decide and record the "
                                           "send at once (the same as a preview and its commit).")]
DECISION_ID = Annotated[str, Field(min_length=1, max_length=600, pattern=r"^[A-Za-z0-9_.\-]+$",
                                   description="A decision_id given by /offers or /offers_batch")]


class SessionEvent(BaseModel):
    product_id: ID
    event_type: EventType = "view"


class LiveEvent(BaseModel):
    customer_id: ID
    product_id: ID
    event_type: EventType
    ts: Annotated[str | None, Field(default=None, max_length=40, description=(
        "ISO 8601 time (UTC unless it has an offset); default: now. Accepted from 30 days ago to 5 minutes "
        "ahead of the server's clock (PERSONALISE_EVENT_MAX_AGE_DAYS, "
        "PERSONALISE_EVENT_MAX_AHEAD_SECONDS)"))] = None
    session_id: Annotated[str | None, Field(default=None, max_length=64)] = None
    channel: Annotated[str | None, Field(default=None, max_length=32)] = None
    quantity: Annotated[float | None, Field(default=None, ge=-1000, le=1000)] = None
    unit_price: Annotated[float | None, Field(default=None, ge=0, le=1e7)] = None


class RecItem(TypedDict):
    """One recommended product (a TypedDict, not a model: the same schema and JSON, validated in half the
    time of ten nested models, on the storefront's hot path)."""

    product_id: str
    score: float
    rank: int
    reason: str


class RecommendResponse(BaseModel):
    customer_id: str
    source: Literal["model", "fallback"] = Field(
        description="model, or fallback for unknown customers / no model")
    model_version: str
    items: list[RecItem]


class SimilarResponse(BaseModel):
    product_id: str
    source: str
    model_version: str
    items: list[dict[str, Any]]


class OfferResponse(BaseModel):
    customer_id: str
    offer_id: str = Field(description='the best offer, or "none"')
    channel: str | None
    expected_value: float = Field(description="expected incremental margin of the offer")
    reason: str = Field(description="why: the facts behind the offer, or the rule that decided none")
    control_group: bool = Field(description="held out for measurement: receives nothing")
    trigger: str | None = None
    source: str
    model_version: str
    decision_id: str | None = Field(description="commit it with offers/commit to record the send (or the "
                                                "control-group hold); null when there is nothing to record")
    dry_run: bool = Field(description="true: a preview, nothing was recorded")
    recorded: bool = Field(description="true when this call recorded the decision (dry_run false)")


class CommitResult(BaseModel):
    decision_id: str
    customer_id: str
    offer_id: str
    channel: str | None
    group: Literal["treatment", "control"]
    committed: bool = Field(description="true: recorded now; false: see reason (already committed, or the "
                                        "decision changed since the preview: cap, budget, cooldown, models)")
    reason: str


class EchoResponse(BaseModel):
    """A model, like every answer the benchmark compares it with (BentoML builds a JSON schema on every
    response whose type is not a model, which would make echo slower than the real endpoints)."""

    customer_id: str
    k: int


class EventsResponse(BaseModel):
    accepted: int
    model_version: str


class ReloadResponse(BaseModel):
    model_version: str
    versions: dict[str, str]


class OrderLine(BaseModel):
    line_id: ID = Field(description="The order line's id: a line id already stored is not stored again")
    product_id: ID
    quantity: float = Field(description="Units; negative for a return", allow_inf_nan=False)
    unit_price: float = Field(ge=0, allow_inf_nan=False)
    discount: float = Field(default=0.0, ge=0, allow_inf_nan=False,
                            description="Discount on the whole line, in money")
