"""The service's live rows (event store and decision log), validated like any table before training uses them.

Rows training cannot use are counted and set aside with examples - never dropped silently, never a reason
for a retrain to stop: a timestamp that is missing or unparseable, earlier than the shop's first order or
later than now (and the shop's own data end, if that is later), a live ``purchase`` (orders come from the
shop's order system), a product or offer the shop does not know, an unknown group. Kept rows are appended
to the shop's events and offer log (decisions as offer-log rows, sent at their decision time).

Example
-------
>>> shop, report = merge_live_rows(shop, LiveStore(url))      # doctest: +SKIP
>>> report.to_dict()["set_aside"][0]                          # doctest: +SKIP
{'table': 'events', 'reason': 'after now (2026-12-01 10:05)', 'rows': 3, 'examples': [...]}
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from features import schema
from features.io import Shop
from features.live import DECISIONS, EVENTS, LiveStore

log = logging.getLogger(__name__)
MAX_EXAMPLES = 5
CLOCK_SKEW = pd.Timedelta(minutes=5)
"""Live rows up to this far past ``now`` are kept (the service's clock may run ahead of ours)."""
DECIDED_AT = DECISIONS.c.decided_at.name


@dataclass
class SetAside:
    """Live rows training did not use, and why."""

    table: str
    reason: str
    rows: int
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class LiveReport:
    """How many live rows were read and kept, and every group set aside."""

    read: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)
    set_aside: list[SetAside] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"read": self.read, "kept": self.kept,
                "set_aside": [dataclasses.asdict(s) for s in self.set_aside]}

    def metrics(self) -> dict[str, float]:
        out = {}
        for t in self.read:
            aside = sum(s.rows for s in self.set_aside if s.table == t)
            out.update({f"live.{t}.read": self.read[t], f"live.{t}.kept": self.kept.get(t, 0),
                        f"live.{t}.set_aside": aside})
        return {k: float(v) for k, v in out.items()}


def live_store_for(data_dir: Path, create: bool = False) -> LiveStore | None:
    """The service's store: ``PERSONALISE_DB``, else ``DATA/live.db`` when it exists or ``create`` is set
    (None: no live rows)."""
    url = os.environ.get("PERSONALISE_DB")
    if not url and not create and not (Path(data_dir) / "live.db").exists():
        return None
    return LiveStore(url or f"sqlite:///{(Path(data_dir) / 'live.db').resolve()}")


def _read(store: LiveStore, table: sa.Table, time_column: str) -> pd.DataFrame:
    """Every row, the time column as the text stored (a value the driver cannot parse must not stop us);
    other time columns (when the service received a row) are not read."""
    cols = [c if c.name != time_column else sa.cast(c, sa.String).label(time_column) for c in table.c
            if c.name == time_column or not isinstance(c.type, sa.DateTime)]
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(*cols)).mappings().all()
    return pd.DataFrame(rows, columns=[c.name for c in cols])


def _parse_times(raw: pd.Series) -> pd.Series:
    t = pd.to_datetime(raw, errors="coerce", utc=True, format="mixed")
    return t.dt.tz_localize(None)


class _Checker:
    """Sets aside the rows of one table that fail a check, recording them in the report."""

    def __init__(self, table: str, df: pd.DataFrame, report: LiveReport, show: list[str]) -> None:
        self.table, self.df, self.report, self.show = table, df, report, show
        report.read[table] = len(df)

    def drop(self, bad: pd.Series, reason: str) -> None:
        bad = bad.fillna(True).astype(bool)
        if bad.any():
            ex = self.df.loc[bad, self.show].head(MAX_EXAMPLES).astype(object)
            ex = ex.where(ex.notna(), None)
            self.report.set_aside.append(SetAside(self.table, reason, int(bad.sum()), ex.to_dict("records")))
            log.warning("live %s set aside: %d rows, %s, e.g. %s", self.table, int(bad.sum()), reason,
                        ex.head(2).to_dict("records"))
        self.df = self.df[~bad]

    def times(self, column: str, lo: pd.Timestamp, hi: pd.Timestamp) -> pd.Series:
        t = _parse_times(self.df[column])
        self.drop(t.isna(), f"{column}: missing or unparseable timestamp")
        self.drop(t[self.df.index] < lo, f"{column}: before the shop's first order ({lo})")
        self.drop(t[self.df.index] > hi, f"{column}: after now ({hi:%Y-%m-%d %H:%M})")
        return t[self.df.index].astype("datetime64[ns]")


def _bounds(shop: Shop, now: pd.Timestamp | None) -> tuple[pd.Timestamp, pd.Timestamp]:
    now = pd.Timestamp(now) if now is not None else pd.Timestamp(dt.datetime.now(dt.UTC).replace(tzinfo=None))
    return pd.Timestamp(shop.orders[schema.TS].min()), max(now, shop.end) + CLOCK_SKEW


def _events(raw: pd.DataFrame, shop: Shop, lo: pd.Timestamp, hi: pd.Timestamp, report: LiveReport
            ) -> pd.DataFrame:
    c = _Checker("events", raw, report, ["id", schema.CUSTOMER_ID, schema.PRODUCT_ID, schema.EVENT_TYPE,
                                         schema.TS])
    c.drop(c.df[schema.EVENT_TYPE] == "purchase", "purchase events (orders come from the order system)")
    c.drop(~c.df[schema.EVENT_TYPE].isin(schema.EVENT_TYPES), f"event_type not in {list(schema.EVENT_TYPES)}")
    c.drop(~c.df[schema.PRODUCT_ID].isin(shop.products[schema.PRODUCT_ID]), "product unknown to the shop")
    ts = c.times(schema.TS, lo, hi)
    out = c.df.assign(**{schema.TS: ts})[schema.EVENTS.names]
    report.kept["events"] = len(out)
    return out.astype({schema.CUSTOMER_ID: object, schema.PRODUCT_ID: object})


def _decisions(raw: pd.DataFrame, known_offers: set[str] | None, lo: pd.Timestamp, hi: pd.Timestamp,
               report: LiveReport) -> pd.DataFrame:
    c = _Checker("decisions", raw, report,
                 ["id", schema.CUSTOMER_ID, schema.OFFER_ID, schema.GROUP, DECIDED_AT])
    if known_offers is not None:
        c.drop(~c.df[schema.OFFER_ID].isin(known_offers), "offer missing from offers.yaml")
    c.drop(~c.df[schema.GROUP].isin(schema.OFFER_GROUPS), f"group not in {list(schema.OFFER_GROUPS)}")
    sent = c.times(DECIDED_AT, lo, hi)
    d = c.df
    same = [schema.CUSTOMER_ID, schema.OFFER_ID, schema.CHANNEL, schema.GROUP, schema.PROPENSITY,
            schema.CAMPAIGN_ID]
    out = d[same].assign(**{schema.SENT_AT: sent, schema.REDEEMED_AT: pd.NaT, schema.ORDER_ID: None})
    out = out[schema.OFFER_LOG.names]
    report.kept["decisions"] = len(out)
    return out.reset_index(drop=True)


def _append(table: pd.DataFrame | None, rows: pd.DataFrame) -> pd.DataFrame | None:
    if not len(rows):
        return table
    return rows.reset_index(drop=True) if table is None else pd.concat([table, rows], ignore_index=True)


def merge_live_rows(shop: Shop, store: LiveStore, known_offers: set[str] | None = None,
                    now: pd.Timestamp | None = None) -> tuple[Shop, LiveReport]:
    """The shop with the store's usable live events and decisions appended, and what was set aside.

    ``known_offers``: the catalogue's offer ids (decisions naming others are set aside); ``now``: the
    upper time bound (default: the clock).
    """
    report = LiveReport()
    lo, hi = _bounds(shop, now)
    ev = _events(_read(store, EVENTS, schema.TS), shop, lo, hi, report)
    dec = _decisions(_read(store, DECISIONS, DECIDED_AT), known_offers, lo, hi, report)
    if not len(ev) and not len(dec):  # an empty store is the same data as no store: the same run is reused
        return shop, report
    h = hashlib.sha256()
    for part in (ev, dec):
        h.update(pd.util.hash_pandas_object(part.astype(str), index=False).to_numpy().tobytes())
    fp = f"{shop.fingerprint}+live{len(ev)}.{len(dec)}.{h.hexdigest()[:8]}"
    merged = dataclasses.replace(shop, events=_append(shop.events, ev),
                                 offer_log=_append(shop.offer_log, dec), fingerprint=fp)
    return merged, report
