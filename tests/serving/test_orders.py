"""Live orders and the trigger feed, on SQLite and on a real PostgreSQL (no HTTP: see
test_order_feed_http)."""

from __future__ import annotations

import datetime as dt

import pytest

from features.live import LiveStore
from serving.offer_desk import OfferDesk
from serving.orders import OrderBook


def _line(lid: str, qty: float, price: float, discount: float = 0.0) -> dict[str, object]:
    return {"line_id": lid, "product_id": "P1", "quantity": qty, "unit_price": price, "discount": discount}


def test_orders_move_the_running_state_fire_triggers_once_and_feed_them_in_order(store_url: str) -> None:
    store = LiveStore(store_url)
    book = OrderBook(store, OfferDesk(store))
    t0 = dt.datetime(2026, 11, 1)
    r = book.add_order(None, "O1", "C1", t0, [_line("O1-1", 2, 50.0, 10.0)])  # net 90
    assert r["stored"] == 1 and [t["kind"] for t in r["triggers"]] == ["first_purchase"]
    assert r["triggers"][0]["decision"]["offer_id"] == "none"  # no models: none, with the reason
    assert r["triggers"][0]["decision"]["reason"]
    book.add_order(None, "O2", "C1", t0 + dt.timedelta(days=1), [_line("O2-1", 1, 100.0)])
    assert book.state(None, "C1")["n_orders"] == 2 and book.state(None, "C1")["avg_order_value"] == 95.0
    # 240 > 1.5 x 95 with 2 past orders: spend jump; a retried call stores and fires nothing
    r = book.add_order(None, "O3", "C1", t0 + dt.timedelta(days=2), [_line("O3-1", 2, 120.0)])
    assert [t["kind"] for t in r["triggers"]] == ["spend_jump"]
    assert "value 240.00 vs average 95.00" in r["triggers"][0]["detail"]
    again = book.add_order(None, "O3", "C1", t0 + dt.timedelta(days=2), [_line("O3-1", 2, 120.0)])
    assert again["stored"] == 0 and again["already_stored"] == 1 and again["triggers"] == []
    r = book.add_order(None, "R1", "C1", t0 + dt.timedelta(days=3), [_line("R1-1", -1, 120.0)])
    assert [t["kind"] for t in r["triggers"]] == ["high_value_return"]
    s = book.state(None, "C1")
    assert s == {"n_orders": 3, "avg_order_value": round((90 + 100 + 240) / 3, 4), "net_spend": 310.0,
                 "last_purchase": (t0 + dt.timedelta(days=2)).isoformat()}
    # the feed: in firing order, paged by cursor, the same ids on every read
    page1 = book.feed(None, 0, 2)
    assert [t["kind"] for t in page1["triggers"]] == ["first_purchase", "spend_jump"]
    page2 = book.feed(None, page1["next_after"], 10)
    assert [t["trigger_id"] for t in page2["triggers"]] == ["high_value_return:C1:R1"]
    assert [t["trigger_id"] for t in book.feed(None, 0, 10)["triggers"]] == [
        "first_purchase:C1:O1", "spend_jump:C1:O3", "high_value_return:C1:R1"]
    # another replica on the same store sees the same state and feed
    other = OrderBook(LiveStore(store_url), OfferDesk(store))
    assert other.state(None, "C1") == s and other.feed(None, 0, 10) == book.feed(None, 0, 10)


@pytest.mark.slow  # the trained project
def test_state_starts_from_the_training_state(store_url: str, trained_project) -> None:
    """A customer the bundle knows: the first live order moves the bundle's own numbers on."""
    from serving.orders import baseline
    from serving.runtime import Personaliser
    p = Personaliser(trained_project[0], store_url=store_url)
    try:
        cur = p.current
        assert cur is not None
        f = cur.bundle.features
        cid = str(f.index[(f["n_orders"] >= 3).to_numpy()][0])
        _, base = baseline(cur, cid)
        assert base.n_orders == int(f.at[cid, "n_orders"])
        value = round(3 * base.avg_order_value, 2) + 1
        r = p.orders.add_order(cur, "LIVE1", cid, None, [_line("LIVE1-1", 1, value)])
        assert [t["kind"] for t in r["triggers"]] == ["spend_jump"]
        d = r["triggers"][0]["decision"]
        assert set(d) == {"offer_id", "reason", "control_group", "expected_value", "decision_id"}
        assert r["state"]["n_orders"] == base.n_orders + 1
        log = p.store.decisions(customer_ids=[cid])
        assert d["offer_id"] == "none" or len(log) == 1  # a decision naming an offer is in the decision log
    finally:
        p.close()


def test_late_triggers_are_read_through_the_undecided_index_which_older_stores_get(store_url: str) -> None:
    """The look for triggers still without a decision (every second, every replica) reads the partial index
    of undecided triggers, not the whole history; a store made before that index gets it on open."""
    import sqlalchemy as sa

    from features.live import UNDECIDED_INDEX
    from serving.orders import late_query
    store = LiveStore(store_url)
    with store.engine.begin() as conn:
        conn.execute(sa.text(f"DROP INDEX {UNDECIDED_INDEX.name}"))  # as a store made before it
    store = LiveStore(store_url)
    with store.engine.connect() as conn:
        names = {i["name"] for i in sa.inspect(conn).get_indexes("triggers")}
        assert UNDECIDED_INDEX.name in names
        if conn.dialect.name == "sqlite":
            q = late_query(dt.datetime(2026, 12, 1)).compile(conn, compile_kwargs={"literal_binds": True})
            plan = " ".join(str(r[-1]) for r in conn.execute(sa.text(f"EXPLAIN QUERY PLAN {q}")))
            assert f"USING INDEX {UNDECIDED_INDEX.name}" in plan, plan
        else:
            ddl = conn.execute(sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"),
                               {"n": UNDECIDED_INDEX.name}).scalar_one()
            assert "where (decided is false)" in ddl.lower(), ddl
