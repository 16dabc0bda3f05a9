"""Answers rendered by :func:`serving.rendered_json.rendered_json` are the bytes BentoML sends for the same
answer through the route's own output type (the trigger feed, orders, dead letters, requeue, profile):
real answers from an order book and a webhook outbox on SQLite, no server."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

from _bentoml_impl.serde import JSONSerde

from features.live import LiveStore
from serving.offer_desk import OfferDesk
from serving.orders import OrderBook
from serving.rendered_json import rendered_json
from serving.service import PersonaliseService
from serving.webhooks import DEAD, WebhookSender, WebhookSettings, dead_letters, deliveries, requeue
from tests.serving.webhook_receiver import Receiver, wait_until


def _bentoml_body(route: str, answer: Any) -> bytes:
    """What BentoML sends for ``answer`` returned by the API ``route`` (its output descriptor, its serde)."""
    spec = PersonaliseService.apis[route].output_spec  # type: ignore[attr-defined]
    response = asyncio.run(spec.to_http_response(answer, JSONSerde()))
    if hasattr(response, "body"):
        return bytes(response.body)
    return b"".join(c if isinstance(c, bytes) else c.encode() for c in response.body_iterator)


def _same(route: str, answer: Any) -> bytes:
    ours = rendered_json(answer)
    assert ours.media_type == "application/json"
    assert bytes(ours.body) == _bentoml_body(route, answer), route
    return bytes(ours.body)


def _line(lid: str, price: float, qty: float = 1.0) -> dict[str, object]:
    return {"line_id": lid, "product_id": "P1", "quantity": qty, "unit_price": price, "discount": 0.0}


def test_feed_orders_and_dead_letters_render_as_bentoml_sends_them(tmp_path: Path) -> None:
    store = LiveStore(f"sqlite:///{tmp_path / 'live.db'}")
    receiver = Receiver(b"rendered-secret")
    receiver.down = True  # every delivery fails: dead letters to list
    urls = {"spend_jump": f"{receiver.url}/jump"}
    book = OrderBook(store, OfferDesk(store), webhook_urls=urls)
    sender = WebhookSender(store, WebhookSettings(urls=urls, max_attempts=1, backoff_seconds=0.05,
                                                  timeout_seconds=2), b"rendered-secret", poll_seconds=0.05)
    book.on_fired.append(sender.wake)
    t0 = dt.datetime(2026, 11, 1, 9, 30)
    try:
        sender.start()
        answers = []
        for i, (oid, price) in enumerate((("A1", 50.0), ("A2", 60.0), ("A3", 240.5), ("R1", -240.5))):
            qty, value = (-1.0, -price) if price < 0 else (1.0, price)
            when = t0 + dt.timedelta(hours=i)
            answers.append(book.add_order(None, oid, "C-1", when, [_line(oid, value, qty)]))
        kinds = [t["kind"] for a in answers for t in a["triggers"]]
        assert kinds == ["first_purchase", "spend_jump", "high_value_return"]
        for a in answers:  # the order route's answers: with and without triggers, running state
            _same("orders", a)

        page = book.feed(None, 0, 100)
        assert len(page["triggers"]) == 3
        body = _same("triggers", page)
        assert json.loads(body) == page  # the feed's answer, value for value
        _same("triggers", book.feed(None, 1, 1))  # a page in the middle
        _same("triggers", book.feed(None, page["next_after"], 100))  # caught up: an empty page

        wait_until(lambda: len(deliveries(store, DEAD)) == 1, what="the spend jump's dead letter")
        listed = dead_letters(store)
        assert [d["trigger_id"] for d in listed] == ["spend_jump:C-1:A3"]
        _same("webhooks_dead_letters", {"dead_letters": listed})
        _same("webhooks_dead_letters", {"dead_letters": []})
        _same("webhooks_requeue", {**requeue(store, [listed[0]["id"], 999]), "delivering": True})
    finally:
        sender.close()
        receiver.close()


def test_non_finite_numbers_are_null_as_bentoml_sends_them() -> None:
    answer = {"customer_id": "C1", "segment": "Zoë's \"best\"", "churn_risk": math.nan,
              "rfm": {"gross_spend": math.inf},
              "reasons": {"churn": [{"feature": "x", "value": -math.inf}, {"feature": "y", "value": 0.25}]},
              "triggers": [], "known": True, "tiers": {"value_tier": None}}
    body = _same("customer_profile", answer)
    assert json.loads(body)["reasons"]["churn"][0]["value"] is None and b"NaN" not in body
    assert answer["churn_risk"] is not None and math.isnan(answer["churn_risk"])  # the answer is not changed
