"""The BentoML service: recommendations, offers, customer profiles and live events.

Configured by environment variables (set by ``personalise serve``):
``PERSONALISE_DATA`` data directory (MLflow store, live.db, shop tables), ``PERSONALISE_BUNDLE`` optional
local bundle directory instead of the registry, ``PERSONALISE_DB`` event-store URL (SQLite by default,
``postgresql://...`` for PostgreSQL), ``PERSONALISE_API_KEYS`` / ``PERSONALISE_API_KEYS_FILE``,
``PERSONALISE_INSECURE_DEV=1`` to run without keys (local demo only), ``PERSONALISE_MAX_CONCURRENCY``,
``PERSONALISE_TIMEOUT`` (seconds before HTTP 504, default 30).

Every endpoint is async. Cached recommendation lookups are answered on the event loop; all other work runs in
worker threads in separate lanes, each with its own limit (see ``LANES``), so a CRM batch or a reload never
holds up the storefront's events or computed recommendations, and CPU-bound work (which holds the GIL) does not
thrash between threads.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
from typing import Annotated, Any, Literal

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import anyio  # noqa: E402
import bentoml  # noqa: E402
import pandas as pd  # noqa: E402
from bentoml.exceptions import InvalidArgument  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402
from starlette.responses import Response  # noqa: E402
from typing_extensions import TypedDict  # noqa: E402

from serving.logic import Personaliser  # noqa: E402
from serving.security import GuardMiddleware, install_log_redaction, load_keys, send_json  # noqa: E402

install_log_redaction()


def _fix_bentoml_timeout() -> None:
    """BentoML 1.4's TimeoutMiddleware never cancels its per-request timer, so every request's future,
    context and tracing span stay alive for the whole timeout (30 s x 500 req/s = 15,000 requests' objects):
    the garbage collector's full passes then stall the server for 100-300 ms every few seconds. Same
    behaviour (HTTP 504 when no answer has started in time), with the timer cancelled when the request ends."""
    try:
        from bentoml._internal.server.http import traffic
    except ImportError:  # a BentoML without this module: nothing to fix
        return

    async def __call__(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        started = False

        async def _send(message: Any) -> None:
            nonlocal started
            started = True
            await send(message)
        try:
            await asyncio.wait_for(self.app(scope, receive, _send), self.timeout)
        except TimeoutError:
            if not started:
                await send_json(send, 504, {"error": f"not answered within {self.timeout:g} seconds"})

    traffic.TimeoutMiddleware.__call__ = __call__  # type: ignore[method-assign]


_fix_bentoml_timeout()

log = logging.getLogger(__name__)
ID = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$",
                          description="An id as the shop knows it (1-64 characters: letters, digits, _ . : -)")]


class SessionEvent(BaseModel):
    product_id: ID
    event_type: Literal["view", "add_to_cart", "remove_from_cart", "wishlist", "purchase"] = "view"


class LiveEvent(BaseModel):
    customer_id: ID
    product_id: ID
    event_type: Literal["view", "add_to_cart", "remove_from_cart", "wishlist", "purchase"]
    ts: Annotated[str | None, Field(default=None, max_length=40, description="ISO time; default: now")] = None
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
    source: Literal["model", "fallback"] = Field(description="model, or fallback for unknown customers / no model")
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
    reason: str
    control_group: bool = Field(description="held out for measurement: receives nothing")
    trigger: str | None = None
    source: str
    model_version: str


class EchoResponse(BaseModel):
    """A model, like every answer the benchmark compares it with (BentoML builds a JSON schema on every
    response whose type is not a model, which would make echo slower than the real endpoints)."""

    customer_id: str
    k: int


class EventsResponse(BaseModel):
    accepted: int
    model_version: str


LANES = {"compute": 1, "crm": 1, "events": 2, "admin": 1}
"""Worker threads per lane. ``compute``: recommendations that are not cache lookups (live sessions, relaxed
rules, fallbacks) and similar items; ``crm``: offers, offers_batch, customer_profile; ``events``: durable
writes to the event store (I/O); ``admin``: reload. CPU-bound lanes run one at a time: under the GIL more
threads add hand-offs, not throughput (on 2 cores, one thread served 87-99 computed recommendations/s against
73 with four)."""


def _tracing() -> dict[str, Any]:
    """OpenTelemetry tracing. By default no traces are collected (sample rate 0, BentoML's default), and then
    the API paths skip the tracing middleware altogether: it built a span for every request anyway, about a
    fifth of the event loop's time under load. ``PERSONALISE_TRACE_SAMPLE_RATE`` above 0 traces again (with
    BentoML's ``tracing`` settings for the exporter)."""
    rate = float(os.environ.get("PERSONALISE_TRACE_SAMPLE_RATE", "0"))
    return {"sample_rate": rate} if rate > 0 else {"sample_rate": 0.0, "excluded_urls": [".*"]}


def _config() -> dict[str, Any]:
    return {"traffic": {"timeout": float(os.environ.get("PERSONALISE_TIMEOUT", "30")), "max_concurrency": int(os.environ.get("PERSONALISE_MAX_CONCURRENCY", "64"))},
            "threads": 1, "workers": 1, "tracing": _tracing(),
            "logging": {"access": {"enabled": os.environ.get("PERSONALISE_ACCESS_LOG", "0") == "1",
                                   "request_content_length": False, "response_content_length": False}}}


@bentoml.service(name="personalise", **_config())
class PersonaliseService:
    """Personalisation for the storefront (recommend, similar_items, events) and the CRM engine
    (offers, offers_batch, customer_profile)."""

    def __init__(self) -> None:
        insecure = os.environ.get("PERSONALISE_INSECURE_DEV") == "1"
        if not load_keys() and not insecure:
            raise RuntimeError("no API keys configured: set PERSONALISE_API_KEYS or PERSONALISE_API_KEYS_FILE "
                               "(or --insecure-dev for a local demo)")
        data = os.environ.get("PERSONALISE_DATA", "var/demo")
        self.p = Personaliser(data, os.environ.get("PERSONALISE_BUNDLE") or None, render=_render_recommend)
        self._lanes: dict[str, anyio.CapacityLimiter] = {}

    async def _run(self, lane: str, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` in a worker thread of ``lane`` (at most ``LANES[lane]`` at a time)."""
        if lane not in self._lanes:  # created on the event loop, at first use
            self._lanes[lane] = anyio.CapacityLimiter(LANES[lane])
        return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=self._lanes[lane])

    def __is_ready__(self) -> bool:
        return self.p.ready

    @bentoml.api
    async def recommend(self, customer_id: ID, k: Annotated[int, Field(ge=1, le=100)] = 10,
                        category: Annotated[str | None, Field(max_length=64)] = None, exclude_bought: bool = False,
                        session_events: Annotated[list[SessionEvent], Field(max_length=50)] = []  # noqa: B006
                        ) -> RecommendResponse:
        """Products customer C should see, with score, rank and reason.

        A known customer without live events is a lookup in candidates ranked at training time, answered
        on the event loop; the answer to the default request (no filter, no session) is rendered once per
        customer and k and reused until the models change or the customer sends events. Everything else
        (sessions, fold-in, fallbacks) is computed in a worker thread, one at a time (CPU-bound work gains
        nothing from more threads under the GIL, and loses to hand-offs).
        """
        if not session_events and category is None and not exclude_bought:  # the storefront's usual request
            body = self.p.default_answer(customer_id, k, _render_recommend)
            if body is not None:  # the JSON of a RecommendResponse, validated when it was rendered
                return Response(body, media_type="application/json")  # type: ignore[return-value]
        sess: list[tuple[str, str]] = [(e.product_id, str(e.event_type)) for e in session_events]
        fast = self.p.recommend_fast(customer_id, k, category, exclude_bought, sess)
        if fast is not None:
            return RecommendResponse(**fast)
        return RecommendResponse(**await self._run("compute", self.p.recommend, customer_id, k, category,
                                                   exclude_bought, sess))

    @bentoml.api
    async def similar_items(self, product_id: ID, k: Annotated[int, Field(ge=1, le=100)] = 10) -> SimilarResponse:
        """Products similar to one product."""
        return SimilarResponse(**await self._run("compute", self.p.similar_items, product_id, k))

    @bentoml.api
    async def offers(self, customer_id: ID, channel: Annotated[str | None, Field(max_length=32)] = None,
                     campaign: Annotated[str, Field(min_length=1, max_length=64)] = "default") -> OfferResponse:
        """Best offer for one customer, or "none"."""
        return OfferResponse(**(await self._run("crm", self.p.offers, [customer_id], channel, campaign))[0])

    @bentoml.api
    async def offers_batch(self, customer_ids: Annotated[list[ID], Field(min_length=1, max_length=1000)],
                           channel: Annotated[str | None, Field(max_length=32)] = None,
                           campaign: Annotated[str, Field(min_length=1, max_length=64)] = "default"
                           ) -> list[OfferResponse]:
        """Best offer for up to 1,000 customers."""
        return [OfferResponse(**o) for o in await self._run("crm", self.p.offers, customer_ids, channel, campaign)]

    @bentoml.api
    async def customer_profile(self, customer_id: ID) -> dict[str, Any]:
        """RFM, net value, churn risk, predicted value, segment, active triggers and top reasons."""
        return await self._run("crm", self.p.profile, customer_id)  # type: ignore[no-any-return]

    @bentoml.api
    async def events(self, events: Annotated[list[LiveEvent], Field(min_length=1, max_length=1000)]
                     ) -> EventsResponse:
        """Store storefront events durably; the next recommend for those customers reflects them."""
        n = await self._run("events", lambda: self.p.add_events(_event_rows(events)))
        cur = self.p.current
        return EventsResponse(accepted=n, model_version=cur.version if cur else "none")

    @bentoml.api
    async def reload(self) -> dict[str, Any]:
        """Load the current champion beside the old one and swap atomically (admin)."""
        try:
            new = await self._run("admin", self.p.reload)
        except Exception as e:  # the old model keeps serving
            raise InvalidArgument(f"reload failed, still serving the previous models: {type(e).__name__}: {e}") from e
        return {"model_version": new.version, "versions": new.versions}

    @bentoml.api
    async def echo(self, customer_id: ID, k: Annotated[int, Field(ge=1, le=100)] = 10) -> EchoResponse:
        """Returns its input (used by the benchmark to measure the server's own overhead: it takes the
        same request as recommend and is answered on the event loop like recommend's lookups)."""
        return EchoResponse(customer_id=customer_id, k=k)


def _render_recommend(answer: dict[str, Any]) -> bytes:
    """An answer as the JSON BentoML would send for it (validated by the response model on the way)."""
    return RecommendResponse(**answer).model_dump_json().encode()


def _event_rows(events: list[LiveEvent]) -> list[dict[str, Any]]:
    """Request events as store rows, times as naive UTC (InvalidArgument, i.e. HTTP 400, naming a bad one)."""
    rows = []
    for e in events:
        d = e.model_dump()
        if d["ts"]:
            try:
                ts = pd.Timestamp(d["ts"])
                d["ts"] = (ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo else ts).to_pydatetime()
            except (ValueError, TypeError) as err:
                raise InvalidArgument(f"events.ts: not an ISO timestamp: {d['ts'][:40]!r}") from err
        rows.append(d)
    return rows


class SettleMiddleware:
    """At the first request, when the models and the server's own app are built, move every object alive
    into the garbage collector's permanent generation (``gc.freeze``): full collections then scan only
    what requests allocate, instead of stalling every request for 50-300 ms every few seconds."""

    def __init__(self, app: Any) -> None:
        self.app, self.settled = app, False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not self.settled and scope.get("type") == "http":
            self.settled = True
            gc.freeze()
        await self.app(scope, receive, send)


PersonaliseService.add_asgi_middleware(  # type: ignore[attr-defined]
    GuardMiddleware, insecure=os.environ.get("PERSONALISE_INSECURE_DEV") == "1")
PersonaliseService.add_asgi_middleware(SettleMiddleware)  # type: ignore[attr-defined]
