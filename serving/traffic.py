"""Slow and greedy clients: bodies must arrive within a few seconds and under the size limit, and only
requests whose body has arrived count against the concurrency limit (so connections that trickle a body in
cannot make everyone else's requests 429)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from serving.errors import send_error
from serving.security import MAX_BODY_BYTES, ROUTE_ROLES

log = logging.getLogger(__name__)
BODY_TIMEOUT_SECONDS = 5.0
CLOSE = ((b"connection", b"close"),)


class _TooLarge(Exception):
    pass


class _Gone(Exception):
    pass


def _is_api(scope: Any) -> bool:
    return scope["type"] == "http" and scope.get("path") in ROUTE_ROLES


class BodyMiddleware:
    """Reads an API request's whole body before the app runs: within ``timeout`` seconds (else 408) and at
    most ``max_body`` bytes, declared or not, chunked included (else 413). The app then reads it from memory.
    A client that goes away while sending is logged at INFO."""

    def __init__(self, app: Any, timeout: float = BODY_TIMEOUT_SECONDS,
                 max_body: int = MAX_BODY_BYTES) -> None:
        self.app, self.timeout, self.max_body = app, timeout, max_body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not _is_api(scope):
            return await self.app(scope, receive, send)
        try:
            refusal, body = await self._receive_body(receive)
        except _Gone:
            log.info("%s: client disconnected before sending its whole body", scope["path"])
            return None
        if refusal == 408:
            log.info("%s: request body not received within %g s", scope["path"], self.timeout)
            return await send_error(send, 408, f"request body not received within {self.timeout:g} seconds",
                                    {"timeout_seconds": self.timeout}, CLOSE)
        if refusal == 413:
            return await send_error(send, 413, f"request body over {self.max_body} bytes",
                                    {"limit": self.max_body}, CLOSE)
        await self.app(scope, _replay(body, receive), send)

    async def _receive_body(self, receive: Any) -> tuple[int | None, bytes]:
        """(None, the body), or (408 or 413, b"") when it is late or too large. A deadline of one timer,
        cancelled when the body is in (``asyncio.timeout`` costs twice as much per request)."""
        task, loop = asyncio.current_task(), asyncio.get_running_loop()
        assert task is not None
        expired = too_large = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = loop.call_later(self.timeout, expire)
        try:
            try:
                return None, await self._read(receive)
            except _TooLarge:
                too_large = True
                await self._drain(receive)  # so that the client is reading when the 413 comes
                return 413, b""
        except asyncio.CancelledError:
            if not expired:
                raise
            task.uncancel()
            return (413 if too_large else 408), b""
        finally:
            timer.cancel()

    async def _read(self, receive: Any) -> bytes:
        chunks, seen = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise _Gone
            chunk = msg.get("body", b"")
            seen += len(chunk)
            if seen > self.max_body:
                raise _TooLarge
            chunks.append(chunk)
            if not msg.get("more_body"):
                return b"".join(chunks)

    @staticmethod
    async def _drain(receive: Any) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect" or not msg.get("more_body"):
                return


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that gives the body read already, then waits on the client (for its disconnect)."""
    given = False

    async def replay() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # type: ignore[no-any-return]
    return replay


class ConcurrencyMiddleware:
    """At most ``limit`` API requests in progress (body received); past it, HTTP 429 at once. Replaces
    BentoML's ``max_concurrency``, which counted requests from their first byte, slow bodies included."""

    def __init__(self, app: Any, limit: int = 64) -> None:
        self.app, self.limit, self.active = app, limit, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not _is_api(scope):
            return await self.app(scope, receive, send)
        if self.active >= self.limit:
            return await send_error(send, 429, "too many requests in progress: retry shortly",
                                    {"limit": self.limit}, ((b"retry-after", b"1"),))
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
