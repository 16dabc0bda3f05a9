"""What the server's log keeps: server faults at ERROR with their tracebacks, secrets redacted; client
mistakes (bad input, wrong keys, disconnects) at INFO in one line, so a bad client cannot flood the error
log."""

from __future__ import annotations

import logging
import re

from serving.security import load_keys

REQUEST_LOGGER = "bentoml._internal.server.http_app"
"""The logger BentoML reports every exception of an API call to (at ERROR, with the traceback)."""
_SECRET_PATTERNS = (
    (re.compile(r"(?i)(bearer\s+)[^\s'\"]+"), r"\1***"),
    (re.compile(r"(?i)(x-api-key['\"]?\s*[:=,]\s*['\"]?)[^\s'\"]+"), r"\1***"),
    (re.compile(r"(://[^/:@\s]+:)[^@\s/]+@"), r"\1***@"),  # passwords in URLs (database, MLflow server)
)


def is_client_error(exc: BaseException | None) -> bool:
    """Input the server rejected (HTTP 4xx) or a client that went away: not a fault of the server."""
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError
    from starlette.requests import ClientDisconnect
    if isinstance(exc, (ValidationError, ClientDisconnect)):
        return True
    return isinstance(exc, BentoMLException) and int(exc.error_code) < 500


def _summary(exc: BaseException) -> str:
    """One line about a client error, without the values the client sent."""
    from pydantic import ValidationError
    if isinstance(exc, ValidationError):
        locs = [".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors(include_input=False)]
        where = ", ".join(locs)
        return f"{exc.error_count()} invalid field(s): {where}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


class ClientErrorsAtInfo(logging.Filter):
    """On BentoML's request logger: client errors become one INFO line (no traceback); server faults pass
    unchanged, traceback included."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and is_client_error(exc):
            record.msg, record.args = f"client error: {record.getMessage()}: {_summary(exc)}", ()
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
        return True


class RedactSecrets(logging.Filter):
    """On the log handlers: API keys, bearer tokens and URL passwords are replaced by ``***`` in messages
    and tracebacks; the tracebacks themselves are kept."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        super().__init__()
        self.secrets = sorted((s for s in (secrets or []) if len(s) >= 8), key=len, reverse=True)
        self._formatter = logging.Formatter()

    def redact(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "***")
        for pattern, repl in _SECRET_PATTERNS:
            text = pattern.sub(repl, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_redacted", False):  # one record can pass several handlers
            return True
        record.msg, record.args = self.redact(record.getMessage()), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        record._redacted = True
        return True


def _secrets() -> list[str]:
    try:
        keys = list(load_keys())
    except Exception:  # noqa: BLE001 -- bad key configuration is reported where keys are loaded
        keys = []
    return keys


def install_log_policy(loggers: tuple[str, ...] = ("", "bentoml", "uvicorn", "uvicorn.error", "circus")
                       ) -> RedactSecrets:
    """Put the client-error filter on BentoML's request logger and the redaction on every handler of
    ``loggers`` (the server's logging is configured before the service module is imported)."""
    request_log = logging.getLogger(REQUEST_LOGGER)
    if not any(isinstance(f, ClientErrorsAtInfo) for f in request_log.filters):
        request_log.addFilter(ClientErrorsAtInfo())
    redact = RedactSecrets(_secrets())
    for name in loggers:
        for h in logging.getLogger(name).handlers:
            h.filters = [f for f in h.filters if not isinstance(f, RedactSecrets)]
            h.addFilter(redact)
    return redact
