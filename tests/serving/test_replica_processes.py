"""Two trigger engines in separate processes on one real PostgreSQL (no models: quick): the same orders sent
to both at once are stored and fired once, both scan for dormancy at once and fire it once, and their two
webhook senders, racing for the same outbox, deliver each trigger exactly once."""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp

import pytest

from tests.serving.webhook_receiver import Receiver, wait_until

SECRET = b"process-test-secret-0001"
N = 30


def _engine(url: str, hook: str, start: mp.Barrier, out: mp.Queue) -> None:  # type: ignore[type-arg]
    from features.live import LiveStore
    from serving.offer_desk import OfferDesk
    from serving.orders import OrderBook
    from serving.trigger_config import WebhookSettings
    from serving.trigger_scan import scan
    from serving.webhooks import WebhookSender
    store = LiveStore(url)
    urls = {"spend_jump": hook, "dormancy": hook}
    book = OrderBook(store, OfferDesk(store), webhook_urls=urls)
    sender = WebhookSender(store, WebhookSettings(urls=urls, backoff_seconds=0.05, timeout_seconds=2,
                                                  max_attempts=10), SECRET, poll_seconds=0.05).start()
    book.on_fired.append(sender.wake)
    t0 = dt.datetime(2026, 1, 1)
    start.wait()
    fired = []
    for i in range(N):  # both processes send every order: one stores it
        cid = f"P-{i}"
        for k, v in enumerate((50.0, 50.0, 200.0)):
            oid = f"{cid}-{k}"
            r = book.add_order(None, oid, cid, t0 + dt.timedelta(days=k),
                               [{"line_id": f"{oid}-1", "product_id": "P1", "quantity": 1, "unit_price": v}])
            fired += [t["trigger_id"] for t in r["triggers"]]
    start.wait()
    scanned = scan(book, None, t0 + dt.timedelta(days=125))  # both at once: lines crossed on day 122
    out.put({"fired": fired, "dormancy": scanned["dormancy"]})
    start.wait()  # until the parent saw every delivery
    sender.close()


@pytest.mark.slow  # starts two engine processes
def test_two_engine_processes_fire_once_and_deliver_once(postgres_server) -> None:
    url = postgres_server.new_database()
    receiver = Receiver(SECRET, fail_first=1)
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_engine, args=(url, f"{receiver.url}/hook", start, out)) for _ in range(2)]
    for p in procs:
        p.start()
    try:
        start.wait(timeout=120)  # both ready: go
        start.wait(timeout=300)  # both sent every order
        results = [out.get(timeout=120) for _ in procs]
        fired = [t for r in results for t in r["fired"]]
        jumps = {f"spend_jump:P-{i}:P-{i}-2" for i in range(N)}
        firsts = {f"first_purchase:P-{i}:P-{i}-0" for i in range(N)}
        assert sorted(fired) == sorted(jumps | firsts)  # each fired by one process only
        assert sum(r["dormancy"] for r in results) == N  # the two scans together fired each silence once
        hooked = jumps | {f"dormancy:P-{i}:2026-01-03T00:00:00" for i in range(N)}
        wait_until(lambda: hooked <= set(receiver.delivered()), 60, "every webhook delivered")
        assert receiver.delivered() == {t: 1 for t in hooked}
        assert all(r.signed for r in receiver.got)
        start.wait(timeout=60)
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        receiver.close()
