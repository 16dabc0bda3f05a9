"""How errors leave the service: one body shape, ``{"error": ..., "detail": ...}``, for every status >= 400.

``error`` is one readable sentence; ``detail`` is ``null`` or structured: for HTTP 400 the list of problems,
each ``{"type", "loc", "msg"}`` with ``loc`` the path of the field (``["events", 3, "ts"]``), whether pydantic
found the problem or the service did (:func:`invalid`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

Scope = dict[str, Any]


def error_body(error: str, detail: Any = None) -> dict[str, Any]:
    return {"error": error, "detail": detail}


async def send_error(send: Any, status: int, error: str, detail: Any = None,
                     headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """Send a whole error response (from ASGI middleware, before the app has answered)."""
    data = json.dumps(error_body(error, detail)).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": data})


def invalid(problems: Sequence[tuple[tuple[str | int, ...], str]], title: str = "request") -> ValidationError:
    """A validation error (HTTP 400, in the same shape as pydantic's own) for problems the schema cannot
    see, such as an unknown channel: each problem is (location of the field, message)."""
    details = [InitErrorDetails(type=PydanticCustomError("invalid_value", "{msg}", {"msg": msg}), loc=loc,
                                input=None) for loc, msg in problems]
    return ValidationError.from_exception_data(title, details)


def _reshaped(status: int, body: bytes, content_type: str) -> bytes | None:
    """``body`` in the shared error shape, or None when it already is."""
    data: Any = None
    if "json" in content_type:
        try:
            data = json.loads(body or b"null")
        except ValueError:
            data = None
    if isinstance(data, dict) and "error" in data:
        if "detail" in data:
            return None
        return json.dumps(error_body(str(data["error"]), None)).encode()
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict) and "error" in data[0]:
        return json.dumps(error_body(str(data[0]["error"]), None)).encode()  # BentoML's 4xx from exceptions
    if isinstance(data, (dict, list)):
        return json.dumps(error_body(f"HTTP {status}", data)).encode()
    text = body.decode(errors="replace").strip()
    return json.dumps(error_body(text or f"HTTP {status}", None)).encode()


class ErrorShapeMiddleware:
    """Rewrites error responses that BentoML or Starlette produce in other shapes (a plain-text 404, a
    list for exceptions mapped to 4xx, a 500 without ``detail``) into the shared one."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start: dict[str, Any] | None = None
        chunks: list[bytes] = []

        async def shaping_send(message: dict[str, Any]) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            await self._flush(send, start, b"".join(chunks))

        await self.app(scope, receive, shaping_send)

    @staticmethod
    async def _flush(send: Any, start: dict[str, Any], body: bytes) -> None:
        headers = [(k, v) for k, v in start.get("headers", [])
                   if k.lower() not in (b"content-length", b"content-type")]
        ctype = next((v.decode() for k, v in start.get("headers", []) if k.lower() == b"content-type"), "")
        new = _reshaped(start["status"], body, ctype)
        if new is None:
            new, ctype = body, ctype or "application/json"
        else:
            ctype = "application/json"
        headers += [(b"content-type", ctype.encode()), (b"content-length", str(len(new)).encode())]
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": new})
