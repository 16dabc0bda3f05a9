"""Answers sent as JSON rendered here instead of by BentoML.

For an endpoint annotated ``-> dict[str, Any]`` BentoML validates the answer against a model built for the
annotation and dumps it with ``json.dumps(model_dump(mode="json"))``: about 1.8 ms of the event loop per call
even for an empty answer (most of it rebuilding what it needs for the ``dict[str, Any]`` type), against
microseconds for ``json.dumps`` itself. The CRM engine polls the trigger feed continuously, mostly getting
empty or short pages, so that fixed cost is most of what a poll costs the server.

:func:`rendered_json` sends the same bytes BentoML sends for plain data (dicts, lists, strings, numbers,
booleans, None): ``json.dumps`` with its default separators, a non-finite float as ``null``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.responses import Response


def _finite(v: Any) -> Any:
    """``v`` with every NaN or infinity (at any depth) replaced by None, as BentoML's JSON mode sends them."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


def rendered_bytes(answer: Any) -> bytes:
    """``answer`` (plain data) as the JSON bytes BentoML would send for it."""
    try:
        body = json.dumps(answer, allow_nan=False)
    except ValueError:  # a NaN or an infinity somewhere: the rare case pays for the copy
        body = json.dumps(_finite(answer), allow_nan=False)
    return body.encode()


def rendered_json(answer: Any) -> Response:
    """``answer`` (plain data) as an ``application/json`` response, the bytes BentoML would send for it."""
    return Response(rendered_bytes(answer), media_type="application/json")
