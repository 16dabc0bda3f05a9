"""API keys per caller role, body-size limits: plain ASGI middleware (BentoML 1.4 has no built-in auth)."""

from __future__ import annotations

import hmac
import json
import os
from pathlib import Path
from typing import Any

ROLES = ("storefront", "crm", "admin")
ROUTE_ROLES = {
    "/recommend": "storefront", "/similar_items": "storefront", "/events": "storefront", "/echo": "storefront",
    "/offers": "crm", "/offers_batch": "crm", "/customer_profile": "crm",
    "/reload": "admin",
}
OPEN_PATHS = {"/livez", "/readyz", "/healthz", "/metrics", "/docs.json", "/", "/docs"}
MAX_BODY_BYTES = 1_000_000


class ConfigError(Exception):
    pass


def parse_keys(text: str, source: str) -> dict[str, str]:
    """``role:key`` pairs separated by commas (or newlines) -> {key: role}."""
    keys: dict[str, str] = {}
    for part in text.replace("\n", ",").split(","):
        part = part.strip()
        if not part or part.startswith("#"):
            continue
        role, sep, key = part.partition(":")
        role, key = role.strip(), key.strip()
        if not sep or role not in ROLES or len(key) < 8:
            raise ConfigError(f"{source}: each entry must be role:key with role in {list(ROLES)} and a key of "
                              f"at least 8 characters; got {part.split(':')[0]!r}")
        keys[key] = role
    return keys


def load_keys() -> dict[str, str]:
    keys: dict[str, str] = {}
    if os.environ.get("PERSONALISE_API_KEYS"):
        keys.update(parse_keys(os.environ["PERSONALISE_API_KEYS"], "PERSONALISE_API_KEYS"))
    if os.environ.get("PERSONALISE_API_KEYS_FILE"):
        p = Path(os.environ["PERSONALISE_API_KEYS_FILE"])
        keys.update(parse_keys(p.read_text(), str(p)))
    return keys


def role_for(keys: dict[str, str], presented: str) -> str | None:
    """Constant-time comparison against every configured key."""
    found = None
    for k, role in keys.items():
        if hmac.compare_digest(k.encode(), presented.encode()):
            found = role
    return found


async def send_json(send: Any, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


class GuardMiddleware:
    """Rejects oversized bodies (413) and checks API keys per route role (401 / 403)."""

    def __init__(self, app: Any, keys: dict[str, str] | None = None, insecure: bool = False,
                 max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.keys = load_keys() if keys is None else keys
        self.insecure = insecure
        self.max_body = max_body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        headers = {k.decode().lower(): v.decode(errors="replace") for k, v in scope.get("headers", [])}
        try:
            length = int(headers.get("content-length", "0") or 0)
        except ValueError:
            return await send_json(send, 400, {"error": "invalid content-length header"})
        if length > self.max_body:
            return await send_json(send, 413, {"error": f"request body over {self.max_body} bytes"})
        need = ROUTE_ROLES.get(path)
        if need is not None and not self.insecure:
            auth = headers.get("authorization", "")
            key = auth[7:].strip() if auth.lower().startswith("bearer ") else headers.get("x-api-key", "")
            if not key:
                return await send_json(send, 401, {"error": "missing API key (Authorization: Bearer KEY)"})
            role = role_for(self.keys, key)
            if role is None:
                return await send_json(send, 401, {"error": "unknown API key"})
            if role != need and role != "admin":
                return await send_json(send, 403, {"error": f"role {role} may not call {path} (needs {need})"})
        seen = 0

        async def limited_receive() -> Any:
            nonlocal seen
            msg = await receive()
            if msg.get("type") == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_body:
                    raise _TooLarge()
            return msg

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await send_json(send, 413, {"error": f"request body over {self.max_body} bytes"})


class _TooLarge(Exception):
    pass


class RedactTracebacks:
    """Logging filter: keep the one-line error, drop tracebacks (they can quote request bodies)."""

    def filter(self, record: Any) -> bool:
        if record.exc_info:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(exc).__name__} (details returned to the caller, not logged)"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def install_log_redaction() -> None:
    import logging
    for name in ("bentoml._internal.server.http_app", "bentoml.serve", "bentoml", "_bentoml_impl"):
        lg = logging.getLogger(name)
        if not any(isinstance(f, RedactTracebacks) for f in lg.filters):
            lg.addFilter(RedactTracebacks())
