"""Issue #16 over HTTP, against the shared real server: event times, client errors (status, log level, one
body shape), slow clients, offer previews and commits, unknown values, /metrics labels, JSON only, the
cart."""

from __future__ import annotations

import datetime as dt
import socket
import sqlite3
import time
import uuid

import httpx
import pandas as pd
import pytest

from serving.asgi import SYSTEM_ROUTES
from serving.security import ROUTE_ROLES
from tests.serving.conftest import KEYS, Server, customers

pytestmark = [pytest.mark.server, pytest.mark.slow]
SF = {"Authorization": f"Bearer {KEYS['storefront']}"}


def _stored_events(trained_project) -> int:
    d, _ = trained_project
    con = sqlite3.connect(d / "serving-test-live.db")
    try:
        return int(con.execute("select count(*) from events").fetchone()[0])
    finally:
        con.close()


_FORTY_DAYS_AGO = (dt.datetime.now(dt.UTC) - dt.timedelta(days=40)).isoformat()


# ids, not the values, name the cases: each worker of a parallel run must collect the same test names
@pytest.mark.parametrize("ts", ["2999-01-01", "9999-12-31", "0001-01-01", "NaT", "2200-06-01T00:00:00Z",
                                _FORTY_DAYS_AGO],
                         ids=["2999", "9999", "year-1", "NaT", "2200", "40-days-ago"])
def test_event_times_outside_the_window_are_refused_naming_the_field(server: Server, trained_project,
                                                                     ts: str) -> None:
    before = _stored_events(trained_project)
    ok = {"customer_id": "ts-test", "product_id": "P00001", "event_type": "view"}
    r = server.call("events", {"events": [ok, {**ok, "ts": ts}]})
    assert r.status_code == 400, r.text
    assert [p["loc"] for p in r.json()["detail"]] == [["events", 1, "ts"]]
    assert _stored_events(trained_project) == before  # nothing of the request is stored
    now = dt.datetime.now(dt.UTC).isoformat()
    assert server.call("events", {"events": [{**ok, "ts": now}]}).status_code == 200


def test_every_error_has_one_body_shape(server: Server) -> None:
    calls = [
        server.call("recommend", {"customer_id": "C1", "k": 0}),  # 400 from the schema
        server.call("recommend", {"customer_id": "C1", "category": "no-such"}),  # 400 from the service
        server.call("offers", {"customer_id": "C1"}, role="storefront"),  # 403
        server.call("recommend", {"customer_id": "C1"}, role=None),  # 401
        server.call("no-such-route", {}),  # 404
        httpx.get(f"{server.url}/recommend", headers=SF, timeout=10),  # 405
        httpx.post(f"{server.url}/recommend", content=b"customer_id=C1", headers=SF, timeout=10),  # 415
        httpx.post(f"{server.url}/events", content=b"x" * 1_000_001, timeout=10,
                   headers={**SF, "content-type": "application/json"}),  # 413
    ]
    assert [r.status_code for r in calls] == [400, 400, 403, 401, 404, 405, 415, 413]
    for r in calls:
        assert r.headers["content-type"].startswith("application/json")
        assert set(r.json()) == {"error", "detail"} and r.json()["error"], r.text


def test_client_errors_are_logged_at_info_without_tracebacks(server: Server) -> None:
    start = len(server.log_text())
    server.call("recommend", {"customer_id": "C1", "k": 0})
    server.call("offers", {"customer_id": "C1", "channel": "pigeon"}, role="crm")
    server.call("events", {"events": [{"customer_id": "C1", "product_id": "P1", "event_type": "view",
                                       "ts": "NaT"}]})
    httpx.post(f"{server.url}/recommend", content=b"{not json",
               headers={**SF, "content-type": "application/json"})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and server.log_text()[start:].count("client error") < 4:
        time.sleep(0.1)
    new = server.log_text()[start:]
    assert new.count("client error") == 4 and new.count("[INFO]") >= 4
    assert "[ERROR]" not in new and "Traceback" not in new


def _slow_client(port: int) -> socket.socket:
    """A valid request whose body never arrives in full."""
    s = socket.create_connection(("127.0.0.1", port))
    key = KEYS["storefront"].encode()
    s.sendall(b"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + key
              + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"customer_id\": ")
    return s


def test_honest_requests_are_answered_while_80_slow_clients_hold_connections(server: Server,
                                                                             trained_project) -> None:
    cid = customers(trained_project, 1)[0]
    slow = [_slow_client(server.port) for _ in range(80)]  # more than the 64 requests allowed at once
    try:
        codes = [server.call("recommend", {"customer_id": cid, "k": 5}).status_code for _ in range(20)]
        codes += [server.call("events", {"events": [{"customer_id": cid, "product_id": "P00001",
                                                     "event_type": "view"}]}).status_code for _ in range(5)]
        assert codes == [200] * 25
        answers = []
        for s in slow:  # then each slow client is told off: HTTP 408 once its time is up
            s.settimeout(30)
            answers.append(s.recv(64).split(b"\r\n")[0])
        assert set(answers) == {b"HTTP/1.1 408 Request Timeout"}
    finally:
        for s in slow:
            s.close()


def _decisions(trained_project, campaign: str) -> int:
    d, _ = trained_project
    con = sqlite3.connect(d / "serving-test-live.db")
    try:
        q = "select count(*) from decisions where campaign_id = ?"
        return int(con.execute(q, (campaign,)).fetchone()[0])
    finally:
        con.close()


def test_offers_are_previews_until_committed(server: Server, trained_project) -> None:
    campaign = f"preview-{uuid.uuid4().hex[:8]}"
    ids = customers(trained_project, 100)
    body = {"customer_ids": ids, "campaign": campaign}
    first = server.call("offers_batch", body, role="crm").json()
    again = server.call("offers_batch", body, role="crm").json()
    assert [(a["offer_id"], a["reason"]) for a in again] == [(a["offer_id"], a["reason"]) for a in first]
    assert all(a["dry_run"] and not a["recorded"] for a in first)
    assert _decisions(trained_project, campaign) == 0
    chosen = [a for a in first if a["decision_id"]][:3]
    one = server.call("offers", {"customer_id": chosen[0]["customer_id"], "campaign": campaign},
                      role="crm").json()
    assert one["offer_id"] == chosen[0]["offer_id"] and one["dry_run"] is True
    r = server.call("offers/commit", {"decision_ids": [a["decision_id"] for a in chosen]}, role="crm")
    assert r.status_code == 200, r.text
    assert [x["committed"] for x in r.json()] == [True, True, True]
    assert _decisions(trained_project, campaign) == 3
    r = server.call("offers/commit", {"decision_ids": [chosen[0]["decision_id"]]}, role="crm")
    assert r.json()[0]["committed"] is False and r.json()[0]["reason"] == "already committed"
    assert server.call("offers/commit", {"decision_ids": ["forged"]}, role="crm").status_code == 400
    assert server.call("offers/commit", {"decision_ids": [chosen[0]["decision_id"]]}).status_code == 403
    assert _decisions(trained_project, campaign) == 3


def test_unknown_channel_or_category_is_400_naming_the_value_and_the_allowed_ones(server: Server) -> None:
    r = server.call("offers", {"customer_id": "C1", "channel": "pigeon"}, role="crm")
    assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["channel"]
    assert "'pigeon'" in r.json()["detail"][0]["msg"] and "email" in r.json()["detail"][0]["msg"]
    r = server.call("offers_batch", {"customer_ids": ["C1"], "channel": "pigeon"}, role="crm")
    assert r.status_code == 400
    r = server.call("recommend", {"customer_id": "C1", "category": "teleporters"})
    assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["category"]
    assert "'teleporters'" in r.json()["detail"][0]["msg"] and "pet" in r.json()["detail"][0]["msg"]


def test_metrics_count_unknown_routes_under_one_label(server: Server) -> None:
    random_paths = [f"/probe-{uuid.uuid4().hex[:10]}" for _ in range(25)]
    for p in random_paths:
        httpx.get(f"{server.url}{p}", timeout=10)
        httpx.post(f"{server.url}{p}/x", json={}, timeout=10)
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    labels = set(pd.Series(text.splitlines()).str.extract(r'endpoint="([^"]*)"')[0].dropna())
    assert "/unknown" in labels and not any(p in text for p in random_paths)
    assert labels <= set(ROUTE_ROLES) | SYSTEM_ROUTES | {"/unknown", "/assets", "/static_content"}
    assert {"/recommend", "/offers", "/orders", "/triggers"} <= set(ROUTE_ROLES)  # the API is in the list


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_api_routes_take_json_only(server: Server, ctype: str) -> None:
    r = httpx.post(f"{server.url}/recommend", content=b'{"customer_id": "C1"}',
                   headers={**SF, "content-type": ctype}, timeout=10)
    assert r.status_code == 415 and "application/json" in r.json()["error"]


def test_the_product_added_to_the_cart_through_events_is_not_recommended(server: Server,
                                                                         trained_project) -> None:
    d, _ = trained_project
    visitor = f"cart-visitor-{uuid.uuid4().hex[:8]}"
    pid = str(pd.read_parquet(d / "shop" / "orders.parquet")["product_id"].value_counts().index[0])
    added = {"customer_id": visitor, "product_id": pid, "event_type": "add_to_cart"}
    r = server.call("events", {"events": [added]})
    assert r.status_code == 200
    items = server.call("recommend", {"customer_id": visitor, "k": 10}).json()["items"]
    assert len(items) == 10 and pid not in [i["product_id"] for i in items]
    assert not any(i["reason"].startswith("because you viewed") for i in items)
    assert any(i["reason"].endswith("to your cart") for i in items)
    r = server.call("events", {"events": [{"customer_id": visitor, "product_id": pid,
                                           "event_type": "remove_from_cart"}]})
    assert r.status_code == 200
    again = server.call("recommend", {"customer_id": visitor, "k": 10}).json()["items"]
    assert len(again) == 10  # out of the cart: it may come back, and nothing says "cart"
    assert not any(i["reason"].endswith("to your cart") for i in again)
