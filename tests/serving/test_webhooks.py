"""Webhooks from the outbox to a real receiver on 127.0.0.1: signed, retried with backoff, dead-lettered,
never holding up the order that fired them (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from features.live import LiveStore
from serving.offer_desk import OfferDesk
from serving.orders import OrderBook
from serving.trigger_config import WebhookSettings
from serving.webhooks import (
    DEAD,
    DELIVERED,
    PENDING,
    WebhookSender,
    backoff,
    dead_letters,
    deliveries,
    id_header,
    requeue,
    sign,
    verify,
)
from tests.serving.webhook_receiver import Receiver, wait_until

SECRET = b"test-webhook-secret-0001"


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver(SECRET, fail_first=2)
    yield r
    r.close()


def _order(book: OrderBook, oid: str, cid: str, value: float) -> dict:
    return book.add_order(None, oid, cid, None, [{"line_id": f"{oid}-1", "product_id": "P1", "quantity": 1,
                                                  "unit_price": value, "discount": 0.0}])


def test_signature_and_backoff() -> None:
    body = b'{"trigger_id": "x"}'
    header = sign(SECRET, body, int(time.time()))
    assert verify(SECRET, body, header)
    assert not verify(SECRET, body + b" ", header) and not verify(b"another-key-000000", body, header)
    assert not verify(SECRET, body, sign(SECRET, body, int(time.time()) - 3600))  # a replay: too old
    s = WebhookSettings(backoff_seconds=1.0, backoff_max_seconds=5.0)
    assert [backoff(n, s) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_trigger_id_header_is_ascii_and_gives_the_id_back() -> None:
    """httpx refuses a non-ASCII header value (the post failed before it was sent); the header is the id
    percent-encoded there, and an ASCII id is sent as it is."""
    from urllib.parse import unquote

    import httpx

    with pytest.raises(UnicodeEncodeError):
        httpx.Request("POST", "http://127.0.0.1:9/x", headers={"X-Personalise-Trigger-Id": "spend_jump:Zoë"})
    ids = ("spend_jump:Zoë:o-1", "first_purchase:客户7:o 2", "dormant:C%41:2026-01-01", "x:C1:o1")
    for tid in ids:
        header = id_header(tid)
        httpx.Request("POST", "http://127.0.0.1:9/x", headers={"X-Personalise-Trigger-Id": header})
        assert header.isascii() and unquote(header) == tid
    assert id_header("first_purchase:C1:o1#2") == "first_purchase:C1:o1#2"


def test_webhooks_retry_then_deliver_once_and_dead_letter(store_url: str, receiver: Receiver) -> None:
    store = LiveStore(store_url)
    urls = {"first_purchase": f"{receiver.url}/hooks/first", "spend_jump": f"{receiver.url}/hooks/jump",
            "high_value_return": f"{receiver.url}/fail/returns"}
    book = OrderBook(store, OfferDesk(store), webhook_urls=urls)
    settings = WebhookSettings(urls=urls, max_attempts=3, backoff_seconds=0.05, timeout_seconds=2)
    sender = WebhookSender(store, settings, SECRET, poll_seconds=0.05).start()
    book.on_fired.append(sender.wake)
    try:
        # the order returns while the receiver holds its first request: delivery never blocks the order
        receiver.gate.clear()
        r = _order(book, "W1", "C-W", 90.0)
        assert [t["kind"] for t in r["triggers"]] == ["first_purchase"] and receiver.delivered() == {}
        wait_until(lambda: receiver.arrived >= 1, what="the first attempt reaching the receiver")
        assert deliveries(store)["status"].tolist() == [PENDING]  # in flight, under the sender's lease
        receiver.gate.set()
        _order(book, "W2", "C-W", 100.0)
        _order(book, "W3", "C-W", 300.0)  # spend jump
        book.add_order(None, "R1", "C-W", None, [{"line_id": "R1-1", "product_id": "P1", "quantity": -1,
                                                  "unit_price": 150.0, "discount": 0.0}])
        tids = ["first_purchase:C-W:W1", "spend_jump:C-W:W3"]
        wait_until(lambda: all(receiver.delivered().get(t) for t in tids), what="both webhooks delivered")
        wait_until(lambda: len(deliveries(store, DEAD)), what="the return's dead letter")
        dead = deliveries(store, DEAD)
        # each trigger answered 200 exactly once, on its third attempt, every attempt signed
        assert receiver.delivered() == {t: 1 for t in tids}
        for t in tids:
            tries = receiver.attempts(t)
            assert [a.attempt for a in tries] == [1, 2, 3] and [a.status for a in tries] == [503, 503, 200]
            assert all(a.signed for a in tries)
            body = json.loads(tries[-1].body)
            assert body["trigger_id"] == t and body["decision"]["reason"] and body["customer_id"] == "C-W"
        assert receiver.attempts(tids[1])[0].path == "/hooks/jump"
        out = deliveries(store).set_index("trigger_id")
        assert out.loc[tids, "status"].tolist() == [DELIVERED, DELIVERED]
        assert out.loc[tids, "attempts"].tolist() == [3, 3]
        # the return's hook always fails: dead after max_attempts, with the last error, not retried again
        assert dead["trigger_id"].tolist() == ["high_value_return:C-W:R1"]
        assert dead["attempts"].tolist() == [3] and dead["last_error"].iloc[0].startswith("HTTP 500")
        assert len(receiver.attempts("high_value_return:C-W:R1")) == 3
    finally:
        sender.close()




def test_a_round_records_its_outcomes_in_one_transaction(store_url: str) -> None:
    """Eight deliveries claimed in one round (some 200, some 500) are recorded after they were posted in one
    write, not one per delivery: on SQLite every write waits behind the orders being stored, and a write per
    delivery let the outbox fall seconds behind under load."""
    import sqlalchemy as sa

    receiver = Receiver(SECRET)
    store = LiveStore(store_url)
    urls = {"first_purchase": f"{receiver.url}/hooks/first", "spend_jump": f"{receiver.url}/fail/jump"}
    book = OrderBook(store, OfferDesk(store), webhook_urls=urls)
    for i in range(4):
        for oid, value in ((f"T{i}a", 50.0), (f"T{i}b", 50.0), (f"T{i}c", 200.0)):
            _order(book, oid, f"C-T{i}", value)
    settings = WebhookSettings(urls=urls, max_attempts=3, backoff_seconds=60.0, timeout_seconds=2)
    sender = WebhookSender(store, settings, SECRET, batch=50)
    commits: list[int] = []
    sa.event.listen(store.engine, "commit", lambda conn: commits.append(1))
    try:
        assert sender.run_once() == 8
        assert len(commits) == 2  # the claim, then every outcome
        out = deliveries(store).set_index("trigger_id")
        jumps = [f"spend_jump:C-T{i}:T{i}c" for i in range(4)]
        firsts = [f"first_purchase:C-T{i}:T{i}a" for i in range(4)]
        assert out.loc[firsts, "status"].tolist() == [DELIVERED] * 4
        assert out.loc[jumps, "status"].tolist() == [PENDING] * 4  # failed once: due again in 60 s
        assert out.loc[jumps, "attempts"].tolist() == [1] * 4 and out.loc[jumps, "last_error"].str.startswith(
            "HTTP 500").all()
        assert out["lease_owner"].notna().all() and out["lease_until"].isna().all()  # every lease let go
        assert receiver.delivered() == {t: 1 for t in firsts} and sender.run_once() == 0
    finally:
        sender.close()
        receiver.close()


@pytest.mark.slow  # about 3 s (make test-fast stays under a minute)
def test_a_slow_receiver_never_gets_a_post_after_its_lease_ran_out(store_url: str) -> None:
    """Posts in a round start only while a post could still end within the claim's lease: against a receiver
    that takes 0.3 s an answer, with a 0.5 s margin, a round posts a few deliveries and releases the rest
    unposted (no attempt counted); the next rounds post them, each delivered once on its first attempt."""
    receiver = Receiver(SECRET, delay=0.3)
    store = LiveStore(store_url)
    urls = {"first_purchase": f"{receiver.url}/hooks/first"}
    book = OrderBook(store, OfferDesk(store), webhook_urls=urls)
    for i in range(6):
        _order(book, f"S{i}", f"C-S{i}", 80.0)
    settings = WebhookSettings(urls=urls, max_attempts=3, backoff_seconds=60.0, timeout_seconds=2)
    sender = WebhookSender(store, settings, SECRET, batch=50, lease_margin=0.5)
    try:
        assert sender.run_once() == 6  # all six claimed
        first = deliveries(store)
        posted = first[first["status"] == DELIVERED]
        released = first[first["status"] == PENDING]
        assert 1 <= len(posted) < 6 and len(posted) + len(released) == 6
        assert (released["attempts"] == 0).all() and released["lease_until"].isna().all()
        wait_until(lambda: sender.run_once() == 0 and len(deliveries(store, DELIVERED)) == 6,
                   what="every delivery posted in later rounds")
        assert receiver.delivered() == {f"first_purchase:C-S{i}:S{i}": 1 for i in range(6)}
        assert all(a.attempt == 1 for a in receiver.got)
    finally:
        sender.close()
        receiver.close()


def test_dead_letters_requeued_after_the_receiver_is_fixed_are_delivered_once(store_url: str) -> None:
    """A receiver that is down dead-letters every delivery; once it is up, requeueing one (by id) delivers it
    exactly once and leaves the other dead; requeueing the delivered one again does nothing; requeueing all
    delivers the rest, once. (The CLI and the admin route: ``test_dead_letters_http.py``.)"""
    receiver = Receiver(SECRET)
    receiver.down = True
    store = LiveStore(store_url)
    urls = {"first_purchase": f"{receiver.url}/hooks/first"}
    book = OrderBook(store, OfferDesk(store), webhook_urls=urls)
    settings = WebhookSettings(urls=urls, max_attempts=2, backoff_seconds=0.05, timeout_seconds=2)
    sender = WebhookSender(store, settings, SECRET, poll_seconds=0.05).start()
    book.on_fired.append(sender.wake)
    try:
        for cid in ("DL-1", "DL-2"):
            _order(book, f"{cid}-o", cid, 80.0)
        wait_until(lambda: len(deliveries(store, DEAD)) == 2, what="both deliveries dead")
        listed = dead_letters(store)
        assert [d["trigger_id"] for d in listed] == [f"first_purchase:{c}:{c}-o" for c in ("DL-1", "DL-2")]
        assert all(d["attempts"] == 2 and d["last_error"].startswith("HTTP 500") for d in listed)
        assert receiver.delivered() == {}
        first, second = (d["id"] for d in listed)

        receiver.down = False  # the receiver is fixed
        assert requeue(store, [first, 999]) == {"requeued": [first], "not_dead": [999]}
        wait_until(lambda: deliveries(store, DELIVERED)["id"].tolist() == [first], what="the requeued one")
        assert requeue(store, [first]) == {"requeued": [], "not_dead": [first]}  # delivered: left alone
        assert [d["id"] for d in dead_letters(store)] == [second]  # the other stays dead until asked

        assert requeue(store) == {"requeued": [second], "not_dead": []}
        wait_until(lambda: len(deliveries(store, DELIVERED)) == 2, what="every delivery delivered")
        assert receiver.delivered() == {d["trigger_id"]: 1 for d in listed}
        fresh = [a for a in receiver.got if a.status == 200]
        assert [a.attempt for a in fresh] == [1, 1] and all(a.signed for a in fresh)  # attempts start again
        assert dead_letters(store) == [] and requeue(store) == {"requeued": [], "not_dead": []}
    finally:
        sender.close()
        receiver.close()
