"""A minimal ASGI caller for testing middleware in process: no server, no models."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


@dataclass
class Answer:
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


def scope(path: str = "/recommend", method: str = "POST", content_type: str | None = "application/json",
          headers: dict[str, str] | None = None) -> dict[str, Any]:
    h = dict(headers or {})
    if content_type:
        h["content-type"] = content_type
    return {"type": "http", "path": path, "method": method, "raw_path": path.encode(), "query_string": b"",
            "headers": [(k.lower().encode(), v.encode()) for k, v in h.items()]}


async def call(app: App, sc: dict[str, Any], chunks: list[bytes] | None = None, gap: float = 0.0,
               disconnect_after: int | None = None) -> Answer:
    """Send ``chunks`` as the body (``gap`` seconds apart; a disconnect after ``disconnect_after`` of them)
    and collect the response."""
    chunks = [b"{}"] if chunks is None else chunks
    sent = 0
    answer = Answer()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if disconnect_after is not None and sent >= disconnect_after:
            return {"type": "http.disconnect"}
        if sent >= len(chunks):
            await asyncio.sleep(3600)  # a client that has sent everything and waits for the answer
        if gap and sent:
            await asyncio.sleep(gap)
        sent += 1
        return {"type": "http.request", "body": chunks[sent - 1], "more_body": sent < len(chunks)}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = {k.decode(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            answer.body += message.get("body", b"")

    await app(sc, receive, send)
    return answer


def json_app(status: int = 200, body: Any = None, delay: float = 0.0, read_body: bool = True) -> App:
    """An app that reads the body, waits ``delay`` seconds and answers ``body`` (default: what it read)."""
    async def app(sc: dict[str, Any], receive: Any, send: Any) -> None:
        got = b""
        if read_body:
            while True:
                m = await receive()
                got += m.get("body", b"")
                if not m.get("more_body"):
                    break
        if delay:
            await asyncio.sleep(delay)
        data = json.dumps({"path": sc["path"], "received": len(got)} if body is None else body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": data})
    return app
