"""The request timeout: HTTP 504 when no answer has started within the limit.

It replaces BentoML's own ``TimeoutMiddleware`` (taken out of the app in :mod:`serving.asgi`), which starts a
timer per request and never cancels it: every request's future and context then stayed alive for the whole
timeout (30 s x 500 requests/s = 15,000 requests' objects), and the garbage collector's full passes stalled
the server for 100-300 ms every few seconds. Here the timer is cancelled as soon as the request ends.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from serving.errors import send_error

log = logging.getLogger(__name__)
DEFAULT_TIMEOUT_SECONDS = 30.0


class TimeoutMiddleware:
    """One timer per HTTP request: when the request has sent nothing after ``timeout`` seconds the client
    gets HTTP 504 at once (sent by a task of its own). The request's work is not interrupted (work in a
    worker thread cannot be, and cancelling the request would only abandon the thread and free its lane and
    concurrency slot while it still runs); what it sends afterwards is dropped, and the middleware returns
    when it ends, so the limits outside still count it."""

    def __init__(self, app: Any, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.app, self.timeout = app, timeout

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        started = timed_out = False
        reply: asyncio.Task[None] | None = None

        async def guarded_send(message: Any) -> None:
            nonlocal started
            if timed_out:
                return
            started = True
            await send(message)

        def expire() -> None:
            nonlocal timed_out, reply
            if not started:
                timed_out = True
                reply = loop.create_task(self._reply(scope, send))

        timer = loop.call_later(self.timeout, expire)  # one timer per request, cancelled when it ends
        try:
            await self.app(scope, receive, guarded_send)
        except Exception:
            if not timed_out:
                raise
            log.exception("%s: failed after its 504", scope.get("path"))
        finally:
            timer.cancel()
            if reply is not None:
                await reply

    async def _reply(self, scope: Any, send: Any) -> None:
        log.warning("%s: not answered within %g s: HTTP 504", scope.get("path"), self.timeout)
        await send_error(send, 504, f"not answered within {self.timeout:g} seconds",
                         {"timeout_seconds": self.timeout})
