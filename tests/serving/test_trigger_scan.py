"""The scheduled trigger scan: dormancy once per episode, churn-risk bands crossed (SQLite and PostgreSQL)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pandas as pd
import pytest

from features import schema
from features.live import LiveStore
from models.bundle import CHURN
from models.triggers import TriggerConfig
from serving.offer_desk import OfferDesk
from serving.orders import OrderBook
from serving.trigger_scan import scan

T0 = dt.datetime(2026, 1, 1)


def _order(book: OrderBook, oid: str, cid: str, when: dt.datetime, value: float = 80.0) -> None:
    book.add_order(None, oid, cid, when, [{"line_id": f"{oid}-1", "product_id": "P1", "quantity": 1,
                                           "unit_price": value, "discount": 0.0}])


def _days(n: float) -> dt.datetime:
    return T0 + dt.timedelta(days=n)


def test_dormancy_fires_once_per_episode_across_scans_and_replicas(store_url: str) -> None:
    store = LiveStore(store_url)
    book = OrderBook(store, OfferDesk(store), TriggerConfig(dormancy_days=120, dormancy_lookback_days=30))
    _order(book, "A1", "C-A", _days(0))
    _order(book, "B1", "C-B", _days(-60))  # its line (120 days) is crossed 60 days before the scan below
    assert scan(book, None, _days(100))["dormancy"] == 0  # C-A: 100 days quiet, line 120
    first = scan(book, None, _days(121))
    assert first["dormancy"] == 1 and first["customers"] == 2
    feed = [t for t in book.feed(None, 0, 100)["triggers"] if t["kind"] == "dormancy"]
    assert [t["customer_id"] for t in feed] == ["C-A"]  # C-B crossed outside the 30-day lookback
    t = feed[0]
    assert t["trigger_id"] == "dormancy:C-A:2026-01-01T00:00:00"
    assert t["at"] == _days(120).isoformat() and "line 120.0 days (no usual gap: fixed)" in t["detail"]
    assert t["decision"]["offer_id"] == "none" and t["decision"]["reason"] == "models not loaded"
    # later scans, and another replica's, do not fire the same silence again
    other = OrderBook(LiveStore(store_url), OfferDesk(store), book.config)
    assert scan(book, None, _days(125))["dormancy"] == 0
    assert scan(other, None, _days(140))["dormancy"] == 0
    # a new order ends the episode; the next silence is a new one, with its own id
    _order(book, "A2", "C-A", _days(130))
    assert scan(book, None, _days(200))["dormancy"] == 0
    assert scan(other, None, _days(251))["dormancy"] == 1
    ids = [t["trigger_id"] for t in book.feed(None, 0, 100)["triggers"] if t["kind"] == "dormancy"]
    assert ids == ["dormancy:C-A:2026-01-01T00:00:00", "dormancy:C-A:2026-05-11T00:00:00"]


@pytest.mark.slow  # loads the trained project
def test_dormancy_line_is_the_customers_own_and_churn_bands_fire_on_a_rise(personaliser) -> None:
    """On the trained bundle: the line is 2.5 x the customer's usual gap (ipt_mean); churn_risk fires when
    a customer's score rises into the high band between scans (here: scores of a later training)."""
    p = personaliser
    cur = p.current
    assert cur is not None
    f = cur.bundle.features
    regular = f[(f["n_orders"] >= 3) & (f["ipt_mean"] > 0)].sort_values("ipt_mean")
    cid = str(regular.index[len(regular) // 2])
    gap = float(regular.at[cid, "ipt_mean"])
    last = pd.Timestamp(cur.as_of) - pd.Timedelta(days=float(f.at[cid, "recency_days"]))
    cross = last.floor("s") + pd.Timedelta(days=2.5 * gap)
    when = (max(cross, pd.Timestamp(cur.as_of)) + pd.Timedelta(hours=1)).floor("s")
    assert cross > when - pd.Timedelta(days=30), "the chosen customer crosses within the lookback"
    first = scan(p.orders, cur, when.to_pydatetime())
    assert first["churn_risk"] == 0 and first["bands_recorded"] > 0  # the first scan is the baseline
    mine = [t for t in p.orders.feed(cur, 0, 1000)["triggers"] if t["customer_id"] == cid]
    assert [t["kind"] for t in mine] == ["dormancy"]
    assert f"line {2.5 * gap:.1f} days (2.5 x usual gap {gap:.1f} days)" in mine[0]["detail"]
    assert mine[0]["decision"]["reason"]
    # a later training scores one low-risk customer high: the next scan fires churn_risk for it alone, once
    scores = cur.bundle.scores.copy()
    low = scores[CHURN].dropna()
    riser = str(low[low < 0.3].index[0])
    scores.loc[riser, CHURN] = 0.9
    later = dataclasses.replace(cur, bundle=dataclasses.replace(cur.bundle, scores=scores))
    second = scan(p.orders, later, when.to_pydatetime())
    assert second["churn_risk"] == 1 and second["dormancy"] == 0 and second["bands_recorded"] == 1
    churn = [t for t in p.orders.feed(later, 0, 1000)["triggers"] if t["kind"] == "churn_risk"]
    assert [t["customer_id"] for t in churn] == [riser]
    assert "churn risk 0.90 rose to high (>= 0.6; band was below)" in churn[0]["detail"]
    d = churn[0]["decision"]
    if d["offer_id"] != "none":  # an offer decided for a trigger is in the decision log, under its campaign
        log = p.store.decisions(customer_ids=[riser])
        assert (log[schema.CAMPAIGN_ID] == "trigger_churn_risk").any()
    assert scan(p.orders, later, when.to_pydatetime())["churn_risk"] == 0
    # the customer orders: the band becomes "active" (a stale score), so no churn trigger until scores move
    p.orders.add_order(later, "LIVE-CH", riser, (when + pd.Timedelta(hours=1)).to_pydatetime(),
                       [{"line_id": "LIVE-CH-1", "product_id": "P1", "quantity": 1, "unit_price": 10.0}])
    third = scan(p.orders, later, (when + pd.Timedelta(hours=2)).to_pydatetime())
    assert third["churn_risk"] == 0 and third["bands_recorded"] == 1
