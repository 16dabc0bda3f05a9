"""Live rows merged into training are validated like any table: what cannot be used is counted and set aside
with examples, never a reason to stop, and never moves the shop's data end."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from features import schema
from features.io import Shop
from features.live import LiveStore
from training.live_data import merge_live_rows

OFFERS = {"pct10", "winback20", "freeship", "points2x"}
IMPOSSIBLE = [dt.datetime(2999, 1, 1), dt.datetime(9999, 12, 31), dt.datetime(1, 1, 1),
              dt.datetime(2200, 1, 1)]


def _store(tmp_path: Path, shop: Shop) -> tuple[LiveStore, str]:
    store = LiveStore(f"sqlite:///{tmp_path / 'live.db'}")
    pid = shop.products[schema.PRODUCT_ID].iloc[0]
    good = shop.end - pd.Timedelta(days=1)
    store.add_events([{"customer_id": "C0000001", "product_id": pid, "event_type": "view", "ts": t}
                      for t in IMPOSSIBLE])
    store.add_events([{"customer_id": "C0000001", "product_id": pid, "event_type": "view",
                       "ts": good.to_pydatetime()},
                      {"customer_id": "C0000002", "product_id": pid, "event_type": "purchase"},
                      {"customer_id": "C0000003", "product_id": "NO-SUCH", "event_type": "view"}])
    with store.engine.begin() as conn:  # written behind the API's back: text the driver cannot parse
        conn.execute(sa.text("INSERT INTO events (customer_id, product_id, event_type, ts, received_at) "
                             "VALUES ('C0000004', :p, 'view', 'not a time', 'not a time')"), {"p": pid})
    same = {"channel": "email", "campaign_id": "live", "expected_value": 1.0, "propensity": 0.2,
            "model_version": "x"}
    store.add_decisions([{"customer_id": "C0000001", "offer_id": "pct10", "group": "treatment", **same},
                         {"customer_id": "C0000002", "offer_id": "ghost", "group": "control", **same}])
    return store, pid


def test_impossible_live_rows_are_set_aside_with_examples(tmp_path: Path, small_shop: Shop) -> None:
    store, pid = _store(tmp_path, small_shop)
    merged, report = merge_live_rows(small_shop, store, OFFERS)
    assert merged.end == small_shop.end  # four impossible times and none of them moved the data end
    assert len(merged.events) == len(small_shop.events) + 1  # only the good view is kept
    assert merged.events[schema.TS].dtype == small_shop.events[schema.TS].dtype
    assert len(merged.offer_log) == len(small_shop.offer_log) + 1  # not the decision naming an unknown offer
    assert report.read == {"events": 8, "decisions": 2} and report.kept == {"events": 1, "decisions": 1}
    by_reason = {(s.table, s.reason.split(" (")[0]): s for s in report.set_aside}
    after = by_reason[("events", "ts: after now")]
    assert after.rows == 3 and {e["ts"][:10] for e in after.examples} == {"2999-01-01", "9999-12-31",
                                                                           "2200-01-01"}
    before = by_reason[("events", "ts: before the shop's first order")]
    assert before.rows == 1 and before.examples[0]["ts"].startswith("0001-01-01")
    assert by_reason[("events", "ts: missing or unparseable timestamp")].examples[0]["ts"] == "not a time"
    assert by_reason[("events", "purchase events")].rows == 1
    assert by_reason[("events", "product unknown to the shop")].examples[0]["product_id"] == "NO-SUCH"
    assert by_reason[("decisions", "offer missing from offers.yaml")].examples[0]["offer_id"] == "ghost"
    assert report.metrics()["live.events.set_aside"] == 7.0
    assert merged.fingerprint != small_shop.fingerprint


def test_the_same_live_rows_give_the_same_fingerprint(tmp_path: Path, small_shop: Shop) -> None:
    store, _ = _store(tmp_path, small_shop)
    a, _ = merge_live_rows(small_shop, store, OFFERS)
    b, _ = merge_live_rows(small_shop, store, OFFERS)
    assert a.fingerprint == b.fingerprint
    pid = small_shop.products[schema.PRODUCT_ID].iloc[1]
    store.add_events([{"customer_id": "C0000009", "product_id": pid, "event_type": "view",
                       "ts": small_shop.end.to_pydatetime()}])
    assert merge_live_rows(small_shop, store, OFFERS)[0].fingerprint != a.fingerprint


def test_an_empty_store_keeps_the_shops_fingerprint(tmp_path: Path, small_shop: Shop) -> None:
    """A server that started (and so created its store) but received nothing does not defeat run reuse."""
    store = LiveStore(f"sqlite:///{tmp_path / 'empty.db'}")
    merged, report = merge_live_rows(small_shop, store, OFFERS)
    assert merged.fingerprint == small_shop.fingerprint and report.kept == {"events": 0, "decisions": 0}
