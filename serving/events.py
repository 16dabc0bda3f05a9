"""Storefront events as the live store keeps them: times as naive UTC, and only times a shop can have sent.

An event time must lie within a window around the server's clock: at most
``PERSONALISE_EVENT_MAX_AHEAD_SECONDS`` ahead (default 300: clocks differ a little) and at most
``PERSONALISE_EVENT_MAX_AGE_DAYS`` old (default 30).
Live events are merged into training, so a time like 2999-01-01 would otherwise stop the next retrain, and
a plausible future time would silently move the shop's end date and every cutoff with it.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import Any

import pandas as pd

from serving.errors import invalid


@dataclass(frozen=True)
class EventWindow:
    max_ahead: dt.timedelta = dt.timedelta(minutes=5)
    max_age: dt.timedelta = dt.timedelta(days=30)

    @staticmethod
    def from_env() -> EventWindow:
        ahead = float(os.environ.get("PERSONALISE_EVENT_MAX_AHEAD_SECONDS", "300"))
        age = float(os.environ.get("PERSONALISE_EVENT_MAX_AGE_DAYS", "30"))
        return EventWindow(dt.timedelta(seconds=ahead), dt.timedelta(days=age))

    def problem(self, ts: dt.datetime, now: dt.datetime) -> str | None:
        """Why ``ts`` (naive UTC) is refused at ``now``, or None."""
        if ts > now + self.max_ahead:
            return (f"{ts.isoformat()} is in the future (server time {now.isoformat(timespec='seconds')} "
                    f"UTC; at most {self.max_ahead.total_seconds():g} s ahead accepted)")
        if ts < now - self.max_age:
            return f"{ts.isoformat()} is older than {self.max_age.days} days (server time {now.date()} UTC)"
        return None


def _utc(text: str) -> dt.datetime | None:
    """An ISO time as naive UTC, or None when it is not one (NaT and out-of-range years included)."""
    try:
        ts = pd.Timestamp(text)
    except (ValueError, TypeError, OverflowError):
        return None
    if pd.isna(ts):
        return None
    ts = ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo else ts
    return ts.to_pydatetime()  # type: ignore[no-any-return]


def event_rows(events: list[dict[str, Any]], window: EventWindow, now: dt.datetime | None = None
               ) -> list[dict[str, Any]]:
    """Request events as store rows. Raises a validation error (HTTP 400) naming every bad ``events.N.ts``."""
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows, problems = [], []
    for i, e in enumerate(events):
        d = dict(e)
        if d.get("ts"):
            ts = _utc(d["ts"])
            why = "not an ISO 8601 time" if ts is None else window.problem(ts, now)
            if why is not None:
                problems.append((("events", i, "ts"), f"event time {str(d['ts'])[:40]!r}: {why}"))
            d["ts"] = ts
        rows.append(d)
    if problems:
        raise invalid(problems, "events")
    return rows
