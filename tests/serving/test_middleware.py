"""The service's own ASGI middleware, in process: timeout, slow and large bodies, concurrency, keys and JSON,
error shape, route labels for the metrics."""

from __future__ import annotations

import asyncio
import gc
import threading
import time

import anyio
import pytest

from serving.asgi import UNKNOWN_ROUTE, RestorePathMiddleware, RouteLabelMiddleware, route_label
from serving.errors import ErrorShapeMiddleware
from serving.security import GuardMiddleware
from serving.timeout import TimeoutMiddleware
from serving.traffic import BodyMiddleware, ConcurrencyMiddleware
from tests.serving.asgi_client import call, json_app, scope


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)


def test_a_slow_handler_gets_504_in_the_shared_error_shape() -> None:
    a = run(call(TimeoutMiddleware(json_app(delay=1), timeout=0.2), scope()))
    assert a.status == 504
    assert set(a.json()) == {"error", "detail"} and "0.2 seconds" in a.json()["error"]


def test_a_timed_out_worker_thread_keeps_its_slot_until_it_ends() -> None:
    """The 504 goes out at the timeout, but the middleware returns only when the thread is done: a
    concurrency limit outside it cannot let a new request in while the old work still runs (BentoML's own
    timeout cancelled the request, and a new one started beside the abandoned thread)."""
    finished = threading.Event()

    def work() -> None:
        time.sleep(0.6)
        finished.set()

    async def app(sc, receive, send) -> None:  # noqa: ANN001
        await anyio.to_thread.run_sync(work)
        await json_app()(sc, receive, send)

    a = run(call(TimeoutMiddleware(app, timeout=0.1), scope()))
    assert a.status == 504 and finished.is_set()


def _live_timers() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, asyncio.TimerHandle) and not o.cancelled())


def _timers_left_by(middleware: type, n: int) -> tuple[int, int]:
    """Live timer handles and pending tasks left behind after ``n`` finished requests."""
    async def go() -> tuple[int, int]:
        app = middleware(json_app(), timeout=30)
        before, tasks = _live_timers(), len(asyncio.all_tasks())
        for _ in range(n):
            assert (await call(app, scope())).status == 200
        return _live_timers() - before, len(asyncio.all_tasks()) - tasks
    return run(go())


def test_finished_requests_free_their_timers() -> None:
    assert _timers_left_by(TimeoutMiddleware, 300) == (0, 0)


def test_bentomls_own_timeout_middleware_keeps_a_timer_per_request() -> None:
    """Why ours replaces BentoML's (and why the count above can fail): BentoML 1.4's keeps each request's
    timer, future and context alive for the whole timeout."""
    from bentoml._internal.server.http.traffic import TimeoutMiddleware as BentoTimeout
    left, _ = _timers_left_by(BentoTimeout, 300)
    assert left >= 300


def test_a_chunked_body_over_the_limit_gets_413() -> None:
    chunks = [b"x" * 100] * 20  # 2,000 bytes, no content-length
    a = run(call(BodyMiddleware(json_app(), max_body=1000), scope(), chunks))
    assert a.status == 413 and a.json()["detail"] == {"limit": 1000}


def test_a_body_that_does_not_arrive_in_time_gets_408() -> None:
    a = run(call(BodyMiddleware(json_app(), timeout=0.3), scope(), [b"{", b"}"], gap=5))
    assert a.status == 408 and a.headers.get("connection") == "close"


def test_a_body_read_in_full_reaches_the_app() -> None:
    a = run(call(BodyMiddleware(json_app()), scope(), [b'{"a": ', b"1}"], gap=0.01))
    assert a.status == 200 and a.json()["received"] == 8


def test_a_client_that_leaves_mid_body_is_logged_at_info_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    a = run(call(BodyMiddleware(json_app()), scope(), [b"{", b"}"], disconnect_after=1))
    assert a.status is None  # nobody to answer
    assert any("disconnected" in r.getMessage() and r.levelname == "INFO" for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= 40]


@pytest.mark.slow  # about 3 s (make test-fast stays under a minute)
def test_concurrency_counts_requests_once_their_body_has_arrived() -> None:
    app = BodyMiddleware(ConcurrencyMiddleware(json_app(delay=0.5), limit=1), timeout=10)

    async def go() -> tuple[int | None, int | None, int | None]:
        slow = asyncio.ensure_future(call(app, scope(), [b"{", b"}"], gap=3))  # still sending its body
        await asyncio.sleep(0)
        first = asyncio.ensure_future(call(app, scope()))
        while not first.done() and app.app.active == 0:  # wait until the honest one is in progress
            await asyncio.sleep(0.01)
        second = await call(app, scope())  # the one slot is taken by `first`, not by `slow`
        return (await first).status, second.status, (await slow).status
    assert run(go()) == (200, 429, 200)


@pytest.mark.parametrize("ctype, status", [("text/plain", 415), ("application/x-www-form-urlencoded", 415),
                                           (None, 415), ("application/json", 200),
                                           ("application/json; charset=utf-8", 200)])
def test_api_routes_take_json_only_even_in_demo_mode(ctype: str | None, status: int) -> None:
    a = run(call(GuardMiddleware(json_app(), keys={}, insecure=True), scope(content_type=ctype)))
    assert a.status == status
    if status == 415:
        assert "application/json" in a.json()["error"]


def test_keys_are_checked_before_anything_else() -> None:
    guard = GuardMiddleware(json_app(), keys={"storefront-key-1": "storefront"}, insecure=False)
    assert run(call(guard, scope(content_type="text/plain"))).status == 401
    ok = scope(headers={"authorization": "Bearer storefront-key-1"})
    assert run(call(guard, ok)).status == 200
    crm = scope(path="/offers", headers={"authorization": "Bearer storefront-key-1"})
    assert run(call(guard, crm)).json() == {"error": "role storefront may not call /offers (needs crm)",
                                             "detail": {"role": "storefront", "needs": "crm"}}


@pytest.mark.parametrize("status, body, ctype, expected", [
    (404, b"Not Found", "text/plain", {"error": "Not Found", "detail": None}),
    (400, b'[{"error": "bad thing"}]', "application/json", {"error": "bad thing", "detail": None}),
    (500, b'{"error": "An unexpected error"}', "application/json",
     {"error": "An unexpected error", "detail": None}),
    (400, b'{"error": "1 validation error", "detail": [1]}', "application/json",
     {"error": "1 validation error", "detail": [1]}),
])
def test_every_error_has_the_shared_shape(status: int, body: bytes, ctype: str, expected: dict) -> None:
    async def app(sc, receive, send) -> None:  # noqa: ANN001
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype.encode())]})
        await send({"type": "http.response.body", "body": body})
    a = run(call(ErrorShapeMiddleware(app), scope()))
    assert a.status == status and a.json() == expected
    assert int(a.headers["content-length"]) == len(a.body)


def test_answers_that_are_not_errors_pass_unchanged() -> None:
    a = run(call(ErrorShapeMiddleware(json_app(body=[1, 2])), scope()))
    assert a.status == 200 and a.json() == [1, 2]


def test_unknown_routes_are_one_label_for_the_metrics_and_routed_by_their_real_path() -> None:
    seen: dict[str, str] = {}

    def probe(inner):  # noqa: ANN001, ANN202 -- stands for BentoML's metrics middleware
        async def app(sc, receive, send) -> None:  # noqa: ANN001
            seen["metrics"] = sc["path"]
            await inner(sc, receive, send)
        return app

    async def router(sc, receive, send) -> None:  # noqa: ANN001
        seen["router"] = sc["path"]
        await json_app()(sc, receive, send)

    app = RouteLabelMiddleware(probe(RestorePathMiddleware(router)))
    run(call(app, scope(path="/wp-admin/x.php")))
    assert seen == {"metrics": UNKNOWN_ROUTE, "router": "/wp-admin/x.php"}
    run(call(app, scope(path="/recommend")))
    assert seen == {"metrics": "/recommend", "router": "/recommend"}
    assert route_label("/assets/app.js") == "/assets" and route_label("/metrics") == "/metrics"
