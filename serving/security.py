"""API keys per caller role and the JSON-only rule: plain ASGI middleware (BentoML 1.4 has no built-in
auth)."""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Any

from serving.errors import send_error

ROLES = ("storefront", "crm", "admin")
ROUTE_ROLES = {
    "/recommend": "storefront", "/similar_items": "storefront", "/events": "storefront",
    "/orders": "storefront", "/triggers": "crm",
    "/echo": "storefront",
    "/offers": "crm", "/offers_batch": "crm", "/offers/commit": "crm", "/customer_profile": "crm",
    "/reload": "admin", "/webhooks/dead_letters": "admin", "/webhooks/requeue": "admin",
}
"""The API routes and the role each needs (an admin key may call every route)."""
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
            raise ConfigError(f"{source}: each entry must be role:key with role in {list(ROLES)} and a key "
                              f"of at least 8 characters; got {part.split(':')[0]!r}")
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


def insecure_dev() -> bool:
    """``PERSONALISE_INSECURE_DEV=1``: no keys are checked (local demo only)."""
    return os.environ.get("PERSONALISE_INSECURE_DEV") == "1"


def role_for(keys: dict[str, str], presented: str) -> str | None:
    """Constant-time comparison against every configured key."""
    found = None
    for k, role in keys.items():
        if hmac.compare_digest(k.encode(), presented.encode()):
            found = role
    return found


def media_type(headers: dict[str, str]) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


class GuardMiddleware:
    """On the API routes: JSON bodies only (415), a declared body over the limit (413), API keys per route
    role (401 / 403). Requiring ``application/json`` also means a web page cannot post to the service from
    the user's browser without a CORS preflight, which the service does not grant (demo mode included)."""

    def __init__(self, app: Any, keys: dict[str, str] | None = None, insecure: bool | None = None,
                 max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.keys = load_keys() if keys is None else keys
        self.insecure = insecure_dev() if insecure is None else insecure
        self.max_body = max_body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        need = ROUTE_ROLES.get(scope.get("path", "")) if scope["type"] == "http" else None
        if need is None:
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self._refusal(scope, headers, need)
        if refusal is not None:
            return await send_error(send, *refusal)
        await self.app(scope, receive, send)

    def _refusal(self, scope: Any, headers: dict[str, str], need: str) -> tuple[int, str, Any] | None:
        """(status, error, detail) when the request must be refused before its body is read."""
        path = scope["path"]
        try:
            length = int(headers.get("content-length", "0") or 0)
        except ValueError:
            return 400, "invalid content-length header", None
        if length > self.max_body:
            return 413, f"request body over {self.max_body} bytes", {"limit": self.max_body}
        if not self.insecure:
            auth = headers.get("authorization", "")
            key = auth[7:].strip() if auth.lower().startswith("bearer ") else headers.get("x-api-key", "")
            if not key:
                return 401, "missing API key (Authorization: Bearer KEY)", None
            role = role_for(self.keys, key)
            if role is None:
                return 401, "unknown API key", None
            if role != need and role != "admin":
                return 403, f"role {role} may not call {path} (needs {need})", {"role": role, "needs": need}
        if scope.get("method") == "POST" and media_type(headers) != "application/json":
            return (415, f"{path} takes JSON: send the header 'Content-Type: application/json'",
                    {"content_type": media_type(headers) or None})
        return None
