"""The BentoML service: recommendations, offers, customer profiles and live events (the HTTP layer only).

Configured by environment variables (set by ``personalise serve``, see :mod:`serving.launch`):
``PERSONALISE_DATA`` data directory (MLflow store, live.db, shop tables), ``PERSONALISE_BUNDLE`` optional
local bundle directory instead of the registry, ``PERSONALISE_DB`` event-store URL (SQLite by default,
``postgresql://...`` for PostgreSQL), ``PERSONALISE_API_KEYS`` / ``PERSONALISE_API_KEYS_FILE``,
``PERSONALISE_INSECURE_DEV=1`` to run without keys (local demo only), ``PERSONALISE_MAX_CONCURRENCY``
(API requests in progress, default 64, then 429), ``PERSONALISE_TIMEOUT`` (seconds before HTTP 504,
default 30), ``PERSONALISE_BODY_TIMEOUT`` (seconds to receive a request body, default 5, then 408),
``PERSONALISE_EVENT_MAX_AGE_DAYS`` / ``PERSONALISE_EVENT_MAX_AHEAD_SECONDS`` (event times accepted).

Every endpoint is async. Cached recommendation lookups are answered on the event loop; all other work runs
in worker threads in separate lanes, each with its own limit (see ``LANES``), so a CRM batch or a reload
never holds up the storefront's events or computed recommendations, and CPU-bound work (which holds the GIL)
does not thrash between threads.
"""

from __future__ import annotations

import functools
import os
from typing import Annotated, Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import anyio  # noqa: E402
import bentoml  # noqa: E402
from pydantic import Field  # noqa: E402
from starlette.responses import JSONResponse, Response  # noqa: E402

from serving.asgi import (  # noqa: E402
    OwnTrafficService,
    RestorePathMiddleware,
    SettleMiddleware,
    keep_api_methods,
)
from serving.errors import ErrorShapeMiddleware, error_body, invalid  # noqa: E402
from serving.events import EventWindow, event_rows  # noqa: E402
from serving.logs import install_log_policy  # noqa: E402
from serving.rendered_json import rendered_json  # noqa: E402
from serving.runtime import Personaliser, ReloadFailed  # noqa: E402
from serving.schemas import (  # noqa: E402
    DECISION_ID,
    ID,
    Campaign,
    Channel,
    CommitResult,
    DryRun,
    EchoResponse,
    EventsResponse,
    LiveEvent,
    OfferResponse,
    OrderLine,
    RecommendResponse,
    ReloadResponse,
    SessionEvent,
    SimilarResponse,
)
from serving.security import GuardMiddleware, insecure_dev, load_keys  # noqa: E402
from serving.timeout import DEFAULT_TIMEOUT_SECONDS, TimeoutMiddleware  # noqa: E402
from serving.traffic import BODY_TIMEOUT_SECONDS, BodyMiddleware, ConcurrencyMiddleware  # noqa: E402

REDACT = install_log_policy()
TIMEOUT = float(os.environ.get("PERSONALISE_TIMEOUT", DEFAULT_TIMEOUT_SECONDS))
LANES = {"compute": 1, "crm": 1, "feed": 1, "events": 2, "admin": 1}
"""Worker threads per lane. ``compute``: recommendations that are not cache lookups or session fold-ins
(relaxed rules, fallbacks) and similar items; ``crm``: offers, offers_batch, offers/commit (a profile, and an
offers preview the decision log in memory answers, are answered on the loop); ``feed``: the trigger feed's
reads, so a CRM engine's polls never wait behind an offers batch; ``events``: durable writes to the event
store (I/O); ``admin``: reload and the webhook outbox. CPU-bound lanes run one at a time: under the GIL more
threads add hand-offs, not throughput (on 2 cores, one thread served 87-99 computed recommendations/s against
73 with four)."""
K = Annotated[int, Field(ge=1, le=100)]


def _tracing() -> dict[str, Any]:
    """OpenTelemetry tracing. By default no traces are collected (sample rate 0, BentoML's default), and then
    the API paths skip the tracing middleware altogether: it built a span for every request anyway, about a
    fifth of the event loop's time under load. ``PERSONALISE_TRACE_SAMPLE_RATE`` above 0 traces again (with
    BentoML's ``tracing`` settings for the exporter)."""
    rate = float(os.environ.get("PERSONALISE_TRACE_SAMPLE_RATE", "0"))
    return {"sample_rate": rate} if rate > 0 else {"sample_rate": 0.0, "excluded_urls": [".*"]}


def _config() -> dict[str, Any]:
    """BentoML's own timeout is set beyond ours (and its middleware taken out: :mod:`serving.asgi`); its
    ``max_concurrency`` is off (:class:`serving.traffic.ConcurrencyMiddleware` counts instead)."""
    return {"traffic": {"timeout": TIMEOUT + 60, "max_concurrency": None},
            "threads": 1, "workers": 1, "tracing": _tracing(),
            "logging": {"access": {"enabled": os.environ.get("PERSONALISE_ACCESS_LOG", "0") == "1",
                                   "request_content_length": False, "response_content_length": False}}}


@bentoml.service(name="personalise", service_class=OwnTrafficService, **_config())
class PersonaliseService:
    """Personalisation for the storefront (recommend, similar_items, events) and the CRM engine
    (offers, offers_batch, offers/commit, customer_profile)."""

    def __init__(self) -> None:
        if not load_keys() and not insecure_dev():
            raise RuntimeError("no API keys configured: set PERSONALISE_API_KEYS or "
                               "PERSONALISE_API_KEYS_FILE (or --insecure-dev for a local demo)")
        data = os.environ.get("PERSONALISE_DATA", "var/demo")
        self.p = Personaliser(data, os.environ.get("PERSONALISE_BUNDLE") or None, render=_render_recommend)
        self.window = EventWindow.from_env()
        self._lanes: dict[str, anyio.CapacityLimiter] = {}
        keep_api_methods(self)  # BentoML's server looks them up per request: made once, not each time

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        """Stop the live-events watcher and close the store's connections."""
        self.p.close()

    async def _run(self, lane: str, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` in a worker thread of ``lane`` (at most ``LANES[lane]`` at a time)."""
        if lane not in self._lanes:  # created on the event loop, at first use
            self._lanes[lane] = anyio.CapacityLimiter(LANES[lane])
        return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=self._lanes[lane])

    def __is_ready__(self) -> bool:
        return self.p.ready

    @bentoml.api
    async def recommend(self, customer_id: ID, k: K = 10,
                        category: Annotated[str | None, Field(max_length=64)] = None,
                        exclude_bought: bool = False,
                        session_events: Annotated[list[SessionEvent], Field(max_length=50)] = []  # noqa: B006
                        ) -> RecommendResponse:
        """Products customer C should see, with score, rank and reason.

        A known customer without live events is a lookup in candidates ranked at training time, answered
        on the event loop; the answer to the default request (no filter, no session) is rendered once per
        customer and k and reused until the models change or the customer sends events. A known customer's
        live session is folded into the stored scores with numpy (about a millisecond), also on the event
        loop, and sent as JSON rendered with the response model (as the default answers); without session
        events in the request, that answer is kept until the customer's live events change. Everything else
        (fallbacks, unknown customers, events only in the store) is computed in a worker thread. Products in
        the customer's cart
        (added and not removed or bought since) are not recommended; see the README.
        """
        if not session_events:
            body = None
            if category is None and not exclude_bought:  # the storefront's usual request
                body = self.p.default_answer(customer_id, k, _render_recommend)
            if body is None:  # live events in memory: folded in, or kept since they last changed
                body = self.p.live_answer(customer_id, k, category, exclude_bought, _render_recommend)
            if body is not None:  # the JSON of a RecommendResponse, validated when it was rendered
                return Response(body, media_type="application/json")  # type: ignore[return-value]
        sess: list[tuple[str, str]] = [(e.product_id, str(e.event_type)) for e in session_events]
        fast = self.p.recommend_fast(customer_id, k, category, exclude_bought, sess)
        if fast is None:  # a live session the fold-in answers: about a millisecond, also on the loop
            fast = self.p.recommend_folded(customer_id, k, category, exclude_bought, sess)
        if fast is not None:  # rendered here (validated by the response model), not by BentoML's serialiser
            return Response(_render_recommend(fast), media_type="application/json")  # type: ignore[return-value]
        return RecommendResponse(**await self._run("compute", self.p.recommend, customer_id, k, category,
                                                   exclude_bought, sess))

    @bentoml.api
    async def similar_items(self, product_id: ID, k: K = 10) -> SimilarResponse:
        """Products similar to one product."""
        return SimilarResponse(**await self._run("compute", self.p.similar_items, product_id, k))

    @bentoml.api
    async def offers(self, customer_id: ID, channel: Channel = None, campaign: Campaign = "default",
                     dry_run: DryRun = True) -> OfferResponse:
        """Best offer for one customer, or "none". A preview by default (``dry_run``): nothing is recorded
        until the decision is committed (offers/commit) or asked with ``dry_run: false``. A preview from the
        prepared scores and the decision log in memory (about 0.3 ms, no I/O) is answered on the
        event loop, without the crm lane's hand-offs (:meth:`OfferDesk.preview`)."""
        answer = self.p.offer_preview(customer_id, channel, campaign) if dry_run else None
        if answer is None:  # a commit, or a preview that reads the store: in the crm lane
            answer = (await self._run("crm", self.p.offers, [customer_id], channel, campaign, dry_run))[0]
        # validated by the response model and rendered here: BentoML's serialiser cost more than the decision
        return Response(OfferResponse(**answer).model_dump_json().encode(),  # type: ignore[return-value]
                        media_type="application/json")

    @bentoml.api
    async def offers_batch(self, customer_ids: Annotated[list[ID], Field(min_length=1, max_length=1000)],
                           channel: Channel = None, campaign: Campaign = "default", dry_run: DryRun = True
                           ) -> list[OfferResponse]:
        """Best offer for up to 1,000 customers (a preview by default, as ``offers``)."""
        answers = await self._run("crm", self.p.offers, customer_ids, channel, campaign, dry_run)
        return [OfferResponse(**o) for o in answers]

    @bentoml.api(route="/offers/commit")
    async def offers_commit(
            self, decision_ids: Annotated[list[DECISION_ID], Field(min_length=1, max_length=1000)]
    ) -> list[CommitResult]:
        """Record previewed decisions: each is decided again now and recorded only if it still holds (caps,
        budgets and cooldowns as of now; never past an offer's budget), and at most once."""
        return [CommitResult(**r) for r in await self._run("crm", self.p.commit_offers, decision_ids)]

    @bentoml.api
    async def customer_profile(self, customer_id: ID) -> dict[str, Any]:
        """RFM, net value, churn risk, predicted value, segment, active triggers and top reasons. Read from
        arrays prepared at load (about 1.5 ms, no I/O), rendered as JSON (:mod:`serving.rendered_json`) once
        per customer and load, then reused (see :meth:`Personaliser.profile_body`); answered on the event
        loop."""
        return Response(self.p.profile_body(customer_id),  # type: ignore[return-value]
                        media_type="application/json")

    @bentoml.api
    async def events(self, events: Annotated[list[LiveEvent], Field(min_length=1, max_length=1000)]
                     ) -> EventsResponse:
        """Store storefront events durably; the next recommend for those customers reflects them. Event
        times must lie within the accepted window (400 naming each bad ``events.N.ts``)."""
        rows = event_rows([e.model_dump() for e in events], self.window)
        n = await self._run("events", self.p.add_events, rows)
        cur = self.p.current
        return EventsResponse(accepted=n, model_version=cur.version if cur else "none")

    @bentoml.api
    async def orders(self, order_id: ID, customer_id: ID,
                     lines: Annotated[list[OrderLine], Field(min_length=1, max_length=500)],
                     ts: Annotated[str | None, Field(max_length=40)] = None) -> dict[str, Any]:
        """Store one live order (returns as negative quantities) durably before answering, once per line id;
        the customer's running state moves on and the triggers it fires (spend jump, first purchase,
        high-value return) come back with the next-best-offer decision taken for them. Sent as JSON rendered
        here (:mod:`serving.rendered_json`)."""
        when = None
        if ts is not None:
            when = event_rows([{"ts": ts}], self.window)[0]["ts"]
        answer = await self._run("events", self.p.add_order, order_id, customer_id, when,
                                 [ln.model_dump() for ln in lines])
        return rendered_json(answer)  # type: ignore[return-value]

    @bentoml.api
    async def triggers(self, after: Annotated[int, Field(ge=0)] = 0,
                       limit: Annotated[int, Field(ge=1, le=1000)] = 100) -> dict[str, Any]:
        """Triggers fired after cursor ``after`` (pass back ``next_after``), each with a stable
        ``trigger_id`` (delivery is at least once: deduplicate on it) and its decision. Read in the
        ``feed`` lane; sent as JSON rendered here (:mod:`serving.rendered_json`): a CRM engine polls this
        continuously, mostly for empty or short pages."""
        page = await self._run("feed", self.p.triggers, after, limit)
        return rendered_json(page)  # type: ignore[return-value]

    @bentoml.api(route="/webhooks/dead_letters")
    async def webhooks_dead_letters(self, limit: Annotated[int, Field(ge=1, le=1000)] = 100
                                    ) -> dict[str, Any]:
        """The webhook deliveries that failed every attempt, oldest first, with their last error (admin)."""
        rows = await self._run("admin", self.p.dead_letters, limit)
        return rendered_json({"dead_letters": rows})  # type: ignore[return-value]

    @bentoml.api(route="/webhooks/requeue")
    async def webhooks_requeue(
            self, delivery_ids: Annotated[list[int] | None, Field(max_length=10_000, description=(
                "dead letters to requeue (their id from webhooks/dead_letters)"))] = None,
            all: Annotated[bool, Field(description="requeue every dead letter")] = False,  # noqa: A002
    ) -> dict[str, Any]:
        """Put dead letters back in the outbox once the receiver is fixed (admin): the replicas' senders
        post each once more, with a fresh ``max_attempts``. Answers ``requeued`` and ``not_dead`` (ids left
        alone: unknown, pending or delivered already)."""
        if (delivery_ids is None) == (not all):
            raise invalid([(("delivery_ids",), "give delivery_ids or all: true, one of them")],
                          "webhooks/requeue")
        return rendered_json(await self._run(  # type: ignore[return-value]
            "admin", self.p.requeue_dead_letters, None if all else delivery_ids))

    @bentoml.api
    async def reload(self) -> ReloadResponse:
        """Load the current champion beside the old one and swap atomically (admin). A failure is HTTP 500
        with its reason (the traceback is in the server's log); the previous models keep serving."""
        try:
            new = await self._run("admin", self.p.reload)
        except ReloadFailed as e:
            return JSONResponse(error_body("reload failed: still serving the previous models",  # type: ignore
                                           REDACT.redact(str(e))), status_code=500)
        return ReloadResponse(model_version=new.version, versions=new.versions)

    @bentoml.api
    async def echo(self, customer_id: ID, k: K = 10) -> EchoResponse:
        """Returns its input (used by the benchmark to measure the server's own overhead: it takes the
        same request as recommend and is answered on the event loop like recommend's lookups)."""
        return EchoResponse(customer_id=customer_id, k=k)


def _render_recommend(answer: dict[str, Any]) -> bytes:
    """An answer as the JSON BentoML would send for it (validated by the response model on the way)."""
    return RecommendResponse(**answer).model_dump_json().encode()


# outermost first: the real path back (serving.asgi), keys and JSON, the body, concurrency, the timeout
for _middleware, _options in (
        (RestorePathMiddleware, {}), (GuardMiddleware, {}),
        (BodyMiddleware, {"timeout": float(os.environ.get("PERSONALISE_BODY_TIMEOUT",
                                                            BODY_TIMEOUT_SECONDS))}),
        (ConcurrencyMiddleware, {"limit": int(os.environ.get("PERSONALISE_MAX_CONCURRENCY", "64"))}),
        (TimeoutMiddleware, {"timeout": TIMEOUT}), (SettleMiddleware, {}), (ErrorShapeMiddleware, {})):
    PersonaliseService.add_asgi_middleware(_middleware, **_options)  # type: ignore[attr-defined]
