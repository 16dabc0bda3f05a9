"""What reaches the server's log: client mistakes as one INFO line, server faults with their traceback and
without secrets."""

from __future__ import annotations

import logging
import sys

from pydantic import BaseModel, ValidationError

from serving.logs import ClientErrorsAtInfo, RedactSecrets


class _Body(BaseModel):
    k: int


def _record(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        info = sys.exc_info()
    return logging.LogRecord("bentoml._internal.server.http_app", logging.ERROR, __file__, 1,
                             "Exception on %s [%s]", ("/recommend", "POST"), info)


def test_validation_errors_become_one_info_line_without_the_values_sent() -> None:
    try:
        _Body(k="not a number secret-value")  # type: ignore[arg-type]
    except ValidationError as e:
        rec = _record(e)
    ClientErrorsAtInfo().filter(rec)
    assert rec.levelno == logging.INFO and rec.exc_info is None
    assert rec.getMessage() == "client error: Exception on /recommend [POST]: 1 invalid field(s): k"


def test_server_faults_keep_their_level_and_traceback() -> None:
    rec = _record(RuntimeError("the store is gone"))
    ClientErrorsAtInfo().filter(rec)
    assert rec.levelno == logging.ERROR and rec.exc_info is not None


def test_secrets_are_redacted_from_messages_and_tracebacks_which_stay() -> None:
    rec = _record(RuntimeError("cannot reach postgresql://shop:hunter2-pass@db/live with sf-secret-key-9"))
    rec.msg, rec.args = "call with Authorization: Bearer sf-secret-key-9 failed", ()
    RedactSecrets(["sf-secret-key-9"]).filter(rec)
    text = logging.Formatter().format(rec)
    assert "Traceback (most recent call last)" in text and "RuntimeError" in text
    assert "sf-secret-key-9" not in text and "hunter2-pass" not in text
    assert "postgresql://shop:***@db/live" in text
