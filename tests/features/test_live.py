"""The live store: durable writes, and training reads events and decisions back."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.live import LiveStore, merge_live


def test_store_roundtrip_and_merge(store_url: str, small_shop) -> None:
    store = LiveStore(store_url)
    pid = small_shop.products["product_id"].iloc[0]
    assert store.add_events([{"customer_id": "C0000001", "product_id": pid, "event_type": "view"},
                             {"customer_id": "C0000001", "product_id": pid, "event_type": "purchase"},
                             {"customer_id": "C0000002", "product_id": "unknown", "event_type": "view"}]) == 3
    common = {"channel": "email", "campaign_id": "live", "expected_value": 1.0, "propensity": 0.2,
              "model_version": "x"}
    store.add_decisions([{"customer_id": "C0000001", "offer_id": "pct10", "group": "treatment", **common},
                         {"customer_id": "C0000003", "offer_id": "ghost", "group": "control", **common}])
    assert store.count_events() == 3
    assert store.recent_events("C0000001", small_shop.end.to_pydatetime())[0][1] == "purchase"
    merged = merge_live(small_shop, store, {"pct10", "winback20", "freeship", "points2x"})
    assert len(merged.events) == len(small_shop.events) + 1  # purchase and unknown product skipped
    assert len(merged.offer_log) == len(small_shop.offer_log) + 1  # unknown offer skipped
    assert merged.offer_log.iloc[-1]["campaign_id"] == "live"
    assert merged.fingerprint != small_shop.fingerprint


def test_customers_with_events_reads_only_new_rows(store_url: str) -> None:
    import datetime as dt
    store = LiveStore(store_url)
    since = dt.datetime(2026, 1, 1)
    assert store.customers_with_events(since) == (set(), 0)
    store.add_events([{"customer_id": "A", "product_id": "p", "event_type": "view"},
                      {"customer_id": "B", "product_id": "p", "event_type": "view",
                       "ts": dt.datetime(2020, 1, 1)}])
    who, last = store.customers_with_events(since)
    assert who == {"A"} and last == 2  # B's event is older than `since`
    other = LiveStore(store.url)  # another process writing to the same store
    other.add_events([{"customer_id": "C", "product_id": "p", "event_type": "view"}])
    assert store.customers_with_events(since, last) == ({"C"}, 3)


def test_a_poll_on_a_kept_connection_sees_later_writes(store_url: str) -> None:
    """The serving watcher keeps one connection open between polls: later writes of other processes must
    still show, and a poll with nothing new must not move the last id read."""
    import datetime as dt
    store = LiveStore(store_url)
    since = dt.datetime(2026, 1, 1)
    other = LiveStore(store.url)
    with store.engine.connect() as conn:
        assert store.customers_with_events(since, 0, conn) == (set(), 0)
        other.add_events([{"customer_id": "A", "product_id": "p", "event_type": "view"}])
        who, last = store.customers_with_events(since, 0, conn)
        assert who == {"A"} and last == 1
        assert store.customers_with_events(since, last, conn) == (set(), 1)  # nothing new: nothing read
        other.add_events([{"customer_id": "B", "product_id": "p", "event_type": "view"}])
        assert store.customers_with_events(since, last, conn) == ({"B"}, 2)


def test_a_store_made_before_decision_ids_gets_them_and_records_each_once(tmp_path: Path) -> None:
    import sqlite3

    import pytest
    import sqlalchemy as sa
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)  # the decisions table as earlier versions created it
    con.execute("create table decisions (id integer primary key, customer_id varchar(64) not null, "
                "offer_id varchar(64) not null, channel varchar(32), `group` varchar(16) not null, "
                "campaign_id varchar(64), expected_value float, propensity float, model_version varchar(64), "
                "decided_at datetime not null)")
    con.execute("insert into decisions (customer_id, offer_id, `group`, decided_at) "
                "values ('C1', 'pct10', 'treatment', '2026-01-01')")
    con.commit()
    con.close()
    store = LiveStore(f"sqlite:///{db}")
    row = {"customer_id": "C2", "offer_id": "pct10", "channel": "email", "group": "treatment",
           "campaign_id": "x", "expected_value": 1.0, "propensity": 0.2, "model_version": "v",
           "decision_id": "d1"}
    store.add_decisions([row])
    with pytest.raises(sa.exc.IntegrityError):
        store.add_decisions([{**row, "customer_id": "C3"}])
    assert store.recorded(["d1", "d2"]) == {"d1"}
    d = store.decisions()
    assert list(d["customer_id"]) == ["C1", "C2"] and d["decision_id"].isna().tolist() == [True, False]


def test_postgres_urls_use_psycopg3_and_two_stores_create_the_schema_once(store_url: str) -> None:
    """Two replicas start against one database at the same time: both come up, the schema exists once."""
    import threading

    import sqlalchemy as sa
    stores: list[LiveStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            stores.append(LiveStore(store_url))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    if store_url.startswith("postgresql"):
        assert stores[0].engine.dialect.driver == "psycopg"
    tables = set(sa.inspect(stores[0].engine).get_table_names())
    assert {"events", "decisions"} <= tables
    stores[0].add_events([{"customer_id": "A", "product_id": "p", "event_type": "view"}])
    assert stores[1].count_events() == 1


def test_offer_commits_exclude_each_other_across_stores(store_url: str) -> None:
    """Two stores on one database (two replicas' connection pools), three threads each, every one reading the
    decision log and recording what it read under :meth:`LiveStore.offer_commits`: a read-then-write that
    overlapped another would record a decision id twice (the unique index refuses it); none overlaps, so the
    ids are 0..n-1, each once."""
    import threading

    import sqlalchemy as sa

    from features.live import DECISIONS
    stores = [LiveStore(store_url), LiveStore(store_url)]
    per_thread, errors = 5, []

    def commit_many(store: LiveStore) -> None:
        try:
            for _ in range(per_thread):
                with store.offer_commits() as conn:
                    n = conn.execute(sa.select(sa.func.count()).select_from(DECISIONS)).scalar_one()
                    store.add_decisions([{"customer_id": "C", "offer_id": "o", "group": "treatment",
                                          "decision_id": f"{n:040d}"}], conn)
        except Exception as e:  # a duplicate id: two commits overlapped
            errors.append(e)

    threads = [threading.Thread(target=commit_many, args=(s,)) for s in stores for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    got = sorted(int(x) for x in stores[0].decisions()["decision_id"])
    assert got == list(range(6 * per_thread))


def _count_and_record(url: str, n: int, start) -> None:  # type: ignore[no-untyped-def]
    import sqlalchemy as sa

    from features.live import DECISIONS
    store = LiveStore(url)
    start.wait(60)
    for _ in range(n):
        with store.offer_commits() as conn:
            k = conn.execute(sa.select(sa.func.count()).select_from(DECISIONS)).scalar_one()
            store.add_decisions([{"customer_id": "C", "offer_id": "o", "group": "treatment",
                                  "decision_id": f"{k:040d}"}], conn)


@pytest.mark.slow  # starts two processes
def test_offer_commits_exclude_each_other_across_processes(store_url: str) -> None:
    """As above, from two processes at once (as two replicas): every read-then-record is alone."""
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    LiveStore(store_url)  # the schema, before both start
    start, n = ctx.Barrier(2), 40
    procs = [ctx.Process(target=_count_and_record, args=(store_url, n, start)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]  # a duplicate id (an overlap) would have failed one
    got = sorted(int(x) for x in LiveStore(store_url).decisions()["decision_id"])
    assert got == list(range(2 * n))
