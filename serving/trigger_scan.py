"""The scheduled trigger scan: dormancy lines crossed and churn-risk bands entered, once per episode.

Dormancy: each customer's own line is ``dormancy_factor`` x their usual gap between orders (the mean
inter-purchase time ``ipt_mean`` the last training computed), or ``dormancy_days`` without one
(:func:`models.triggers.dormancy_due`). The silence is counted from the last purchase: the training's
(``as_of - recency_days``) or a later live order's (``customer_state``). The trigger id names the last
purchase (``dormancy:<customer>:<last purchase>``), so a silence fires once however many scans see it, on
every replica, and a new order starts a new episode.

Churn risk: each customer's band from the current bundle's churn score (``high`` at or above
``churn_threshold``, else ``below``; ``active`` when the customer ordered since the scores were computed) is
recorded in ``churn_bands``; a rise into ``high`` since the last scan (after a reload brought new scores,
or a customer's live orders stopped counting as the newer training took them in) fires ``churn_risk`` once,
with the scores' ``as_of`` in its id. The first scan records the bands and fires nothing: a crossing needs
a before.

:func:`scan` runs once (``personalise triggers scan``); :class:`ScanLoop` runs it in the service every
``scan_interval_seconds``.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa

from features import schema
from features.live import CHURN_BANDS, CUSTOMER_STATE
from models.bundle import CHURN
from models.triggers import CHURN_RISK, DORMANCY, HIGH, churn_band_rises, churn_bands, dormancy_due
from serving.orders import ORDER_LOCK, OrderBook, _insert, _now

if TYPE_CHECKING:
    from serving.runtime import Loaded

log = logging.getLogger(__name__)
LAST_PURCHASE = "last_purchase"


def _stamp(t: Any) -> str:
    return pd.Timestamp(t).strftime("%Y-%m-%dT%H:%M:%S")


def last_purchases(book: OrderBook, cur: Loaded | None) -> tuple[pd.Series, pd.Series]:
    """Each customer's last purchase (the training's, or a later live order's) and the live ones alone."""
    with book.store.engine.connect() as conn:
        q = sa.select(CUSTOMER_STATE.c.customer_id, CUSTOMER_STATE.c.last_purchase)
        live = pd.DataFrame(conn.execute(q).all(), columns=[schema.CUSTOMER_ID, LAST_PURCHASE])
    live_last = pd.to_datetime(live.set_index(schema.CUSTOMER_ID)[LAST_PURCHASE]).dropna()
    if cur is None:
        return live_last, live_last
    f = cur.bundle.features
    buyers = f[f["n_orders"] > 0]
    recency = pd.to_timedelta(buyers["recency_days"].astype(float).to_numpy(), unit="D")
    base = pd.Timestamp(cur.as_of) - recency
    base_last = pd.Series(base, index=buyers.index.astype(str))
    both = pd.concat([base_last, live_last], axis=1)
    return both.max(axis=1).dropna(), live_last


def scan(book: OrderBook, cur: Loaded | None, now: dt.datetime | None = None) -> dict[str, int]:
    """Fire the dormancy and churn-risk triggers due at ``now`` (default: the clock), each with its decision.
    Returns counts: customers scanned, triggers fired per kind, churn bands recorded, late decisions taken."""
    now = pd.Timestamp(now or _now()).floor("us").to_pydatetime()
    cfg = book.config
    last, live_last = last_purchases(book, cur)
    gap = pd.Series(dtype=float)
    if cur is not None and "ipt_mean" in cur.bundle.features:
        gap = cur.bundle.features["ipt_mean"].astype(float)
        gap.index = gap.index.astype(str)
    due = dormancy_due(last.dt.floor("s"), gap, pd.Timestamp(now), cfg)
    fire = [{"trigger_id": f"{DORMANCY}:{c}:{_stamp(lp)}", "kind": DORMANCY, "customer_id": c,
             "order_id": None, "at": pd.Timestamp(at).floor("us").to_pydatetime(), "detail": d}
            for c, lp, at, d in zip(due[schema.CUSTOMER_ID], due[LAST_PURCHASE], due["at"], due["detail"],
                                    strict=True)]
    bands, bands_score = pd.Series(dtype=object), pd.Series(dtype=float)
    as_of = cur.as_of if cur is not None else None
    if cur is not None and CHURN in cur.bundle.scores:
        score = cur.bundle.scores[CHURN].dropna().astype(float)
        score.index = score.index.astype(str)
        with book.store.engine.connect() as conn:
            q = sa.select(CHURN_BANDS.c[schema.CUSTOMER_ID], CHURN_BANDS.c.band)
            before = pd.Series(dict(conn.execute(q).all()), dtype=object)
        active = live_last.reindex(score.index) > pd.Timestamp(cur.as_of)
        now_band = churn_bands(score, active, cfg)
        for c in churn_band_rises(before, now_band):
            fire.append({"trigger_id": f"{CHURN_RISK}:{c}:{_stamp(cur.as_of)}", "kind": CHURN_RISK,
                         "customer_id": c, "order_id": None, "at": now,
                         "detail": f"churn risk {score[c]:.2f} rose to {HIGH} (>= {cfg.churn_threshold:g}; "
                                   f"band was {before[c]})"})
        bands = now_band[(now_band != before.reindex(now_band.index)).to_numpy()]
        bands_score = score.reindex(bands.index)
    with book.store.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": ORDER_LOCK})
        fired = book.fire(conn, fire, now)
        if len(bands):
            ins = _insert(conn, CHURN_BANDS)
            conn.execute(ins.on_conflict_do_update(
                index_elements=[schema.CUSTOMER_ID],
                set_={k: ins.excluded[k] for k in ("band", schema.SCORE, "as_of", "updated_at")}),
                [{schema.CUSTOMER_ID: c, "band": b, schema.SCORE: float(s), "as_of": as_of, "updated_at": now}
                 for c, b, s in zip(bands.index, bands.to_numpy(), bands_score.to_numpy(), strict=True)])
    book.decide_many(cur, fired)
    late = book.decide_late(cur)
    kinds = [t["kind"] for t in fired]
    return {"customers": len(last), DORMANCY: kinds.count(DORMANCY), CHURN_RISK: kinds.count(CHURN_RISK),
            "bands_recorded": len(bands), "late_decisions": late}


class ScanLoop:
    """Runs :func:`scan` every ``interval`` seconds in a daemon thread (the first one after one interval);
    a failed scan is logged and the next one runs on time."""

    def __init__(self, book: OrderBook, current: Callable[[], Loaded | None], interval: float) -> None:
        self.book, self.current, self.interval = book, current, interval
        self.last: dict[str, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trigger-scan", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            t0 = time.perf_counter()
            try:
                self.last = scan(self.book, self.current())
                log.info("trigger scan: %s in %.2f s", self.last, time.perf_counter() - t0)
            except Exception:
                log.exception("trigger scan failed; the next runs in %.0f s", self.interval)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
