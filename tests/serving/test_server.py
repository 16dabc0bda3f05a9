"""Every endpoint over HTTP against a real server: answers, bad input, auth, fallbacks, live data, reload."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from serving.service import RecommendResponse
from tests.serving.conftest import KEYS, Server

pytestmark = [pytest.mark.server, pytest.mark.slow]
JSON_SF = {"Authorization": f"Bearer {KEYS['storefront']}", "content-type": "application/json"}


def known_customer(trained_project) -> str:
    d, _ = trained_project
    o = pd.read_parquet(d / "shop" / "orders.parquet")
    return str(o["customer_id"].value_counts().index[0])


def test_probes_are_open(server: Server) -> None:
    for p in ("livez", "readyz", "metrics"):
        assert httpx.get(f"{server.url}/{p}", timeout=5).status_code == 200


def test_recommend_known_and_unknown(server: Server, trained_project) -> None:
    cid = known_customer(trained_project)
    r = server.call("recommend", {"customer_id": cid, "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"] == "model" and len(body["items"]) == 5
    assert body["model_version"].startswith("recommender:1")
    assert [i["rank"] for i in body["items"]] == [1, 2, 3, 4, 5]
    assert all(i["reason"] for i in body["items"])
    assert r.headers["content-type"].startswith("application/json")
    assert RecommendResponse.model_validate_json(r.content).customer_id == cid
    again = server.call("recommend", {"customer_id": cid, "k": 5})  # the rendered answer, reused
    assert again.status_code == 200 and again.content == r.content
    r = server.call("recommend", {"customer_id": "never-seen-1", "k": 3})
    assert r.status_code == 200 and r.json()["source"] == "fallback" and len(r.json()["items"]) == 3
    r = server.call("recommend", {"customer_id": cid, "k": 5, "category": "grocery", "exclude_bought": True})
    assert r.status_code == 200


@pytest.mark.parametrize("body, field", [
    ({"customer_id": "C1", "k": 0}, "k"),
    ({"customer_id": "C1", "k": 101}, "k"),
    ({"customer_id": "x" * 65}, "customer_id"),
    ({"customer_id": "bad id!"}, "customer_id"),
    ({"k": 3}, "customer_id"),
    ({"customer_id": "C1", "session_events": [{"product_id": "P1", "event_type": "view"}] * 51},
     "session_events"),
    ({"customer_id": "C1", "session_events": [{"product_id": "P1", "event_type": "teleport"}]}, "event_type"),
])
def test_bad_requests_get_400_naming_the_field(server: Server, body: dict, field: str) -> None:
    r = server.call("recommend", body)
    assert r.status_code == 400, r.text
    assert field in r.text and set(r.json()) == {"error", "detail"}


def test_malformed_json_and_oversized_body(server: Server) -> None:
    r = httpx.post(f"{server.url}/recommend", content=b"{not json", timeout=10,
                   headers=JSON_SF)
    assert r.status_code == 400
    big = {"events": [{"customer_id": "C1", "product_id": "P" * 60, "event_type": "view"}] * 20000}
    r = server.call("events", big)
    assert r.status_code == 413

    def chunks():  # over 1 MB without a content length (chunked)
        yield b'{"events": ['
        for _ in range(300):
            yield b'{"customer_id": "C1", "product_id": "P1", "event_type": "view"},' * 100
    r = httpx.post(f"{server.url}/events", content=chunks(), timeout=30,
                   headers=JSON_SF)
    assert r.status_code == 413 and r.json()["detail"] == {"limit": 1_000_000}


def test_auth_roles(server: Server) -> None:
    assert server.call("recommend", {"customer_id": "C1"}, role=None).status_code == 401
    r = httpx.post(f"{server.url}/recommend", json={"customer_id": "C1"},
                   headers={"Authorization": "Bearer nope-nope-nope"})
    assert r.status_code == 401
    assert server.call("offers", {"customer_id": "C1"}, role="storefront").status_code == 403
    assert server.call("recommend", {"customer_id": "C1"}, role="crm").status_code == 403
    assert server.call("reload", {}, role="crm").status_code == 403
    assert server.call("recommend", {"customer_id": "C1"}, role="admin").status_code == 200


def test_similar_items(server: Server, trained_project) -> None:
    d, _ = trained_project
    pid = str(pd.read_parquet(d / "shop" / "orders.parquet")["product_id"].value_counts().index[0])
    r = server.call("similar_items", {"product_id": pid, "k": 4})
    assert r.status_code == 200 and r.json()["source"] == "model" and len(r.json()["items"]) == 4
    assert pid not in [i["product_id"] for i in r.json()["items"]]
    assert server.call("similar_items", {"product_id": "nope", "k": 4}).json()["source"] == "fallback"


def test_offers_single_batch_and_decision_log(server: Server, trained_project) -> None:
    d, _ = trained_project
    ids = pd.read_parquet(d / "shop" / "orders.parquet")["customer_id"].drop_duplicates().head(300).tolist()
    r = server.call("offers", {"customer_id": ids[0]}, role="crm")
    assert r.status_code == 200, r.text
    o = r.json()
    assert set(o) >= {"offer_id", "expected_value", "reason", "control_group", "model_version"}
    body = {"customer_ids": ids + ["unknown-x"], "campaign": "test", "dry_run": False}
    r = server.call("offers_batch", body, role="crm")
    assert r.status_code == 200, r.text
    res = r.json()
    assert len(res) == len(ids) + 1
    assert res[-1]["offer_id"] == "none" and res[-1]["source"] == "fallback"
    control = [x for x in res if x["control_group"]]
    assert control and all(x["offer_id"] == "none" for x in control)
    assert any(x["offer_id"] != "none" for x in res)
    assert server.call("offers_batch", {"customer_ids": ["c"] * 1001}, role="crm").status_code == 400
    con = sqlite3.connect(d / "serving-test-live.db")
    groups = dict(con.execute("select `group`, count(*) from decisions where campaign_id='test' group by 1")
                  .fetchall())
    con.close()
    assert (groups.get("control", 0) == len([x for x in control if x.get("expected_value", 0) > 0])
            or groups.get("control", 0) >= 1)
    assert groups.get("treatment", 0) == len([x for x in res if x["offer_id"] != "none"])


def test_customer_profile(server: Server, trained_project) -> None:
    cid = known_customer(trained_project)
    r = server.call("customer_profile", {"customer_id": cid}, role="crm")
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["known"] and p["rfm"]["orders"] > 0 and 0 <= p["churn_risk"] <= 1
    assert p["segment"] and len(p["reasons"]["churn"]) == 3 and p["model_version"]
    assert server.call("customer_profile", {"customer_id": "nobody"}, role="crm").json()["known"] is False


def test_events_are_stored_and_folded_in(server: Server, trained_project) -> None:
    d, _ = trained_project
    prods = pd.read_parquet(d / "shop" / "products.parquet")
    pets = prods[(prods["category"] == "pet") & prods["in_stock"]]["product_id"].head(4).tolist()
    before = server.call("recommend", {"customer_id": "live-visitor-1", "k": 5}).json()
    assert before["source"] == "fallback"
    ev = [{"customer_id": "live-visitor-1", "product_id": p, "event_type": "view"} for p in pets]
    r = server.call("events", {"events": ev})
    assert r.status_code == 200 and r.json()["accepted"] == 4
    after = server.call("recommend", {"customer_id": "live-visitor-1", "k": 5}).json()
    assert after["source"] == "model"
    cats = prods.set_index("product_id").loc[[i["product_id"] for i in after["items"]], "category"]
    assert (cats == "pet").mean() >= 0.6


def test_events_written_by_another_process_reach_a_known_customer(server: Server, trained_project) -> None:
    from features.live import LiveStore
    d, _ = trained_project
    cid = known_customer(trained_project)
    before = server.call("recommend", {"customer_id": cid, "k": 10}).json()
    prods = pd.read_parquet(d / "shop" / "products.parquet")
    shown = {i["product_id"] for i in before["items"]}
    pick = prods[prods["in_stock"] & ~prods["product_id"].isin(shown)]
    cat = pick["category"].value_counts().index[-1]  # a category this customer is not shown now
    new = pick[pick["category"] == cat]["product_id"].head(5).tolist()
    LiveStore(f"sqlite:///{d / 'serving-test-live.db'}").add_events(  # not through the server
        [{"customer_id": cid, "product_id": p, "event_type": "add_to_cart"} for p in new for _ in range(3)])
    # the server polls the store for other writers every 0.2 s: wait for the change, with a deadline
    before_ids = [i["product_id"] for i in before["items"]]
    deadline, after = time.monotonic() + 30, before
    while time.monotonic() < deadline:
        after = server.call("recommend", {"customer_id": cid, "k": 10}).json()
        if [i["product_id"] for i in after["items"]] != before_ids:
            break
        time.sleep(0.05)
    assert after["source"] == "model"
    assert [i["product_id"] for i in after["items"]] != before_ids


def test_a_kept_live_answer_never_outlives_the_customers_next_event(server: Server, trained_project) -> None:
    """A live customer's answer is kept between their events; the request right after an event (its 200)
    already reflects it: the product just put in the cart is gone, each time."""
    d, _ = trained_project
    cid = str(pd.read_parquet(d / "shop" / "orders.parquet")["customer_id"].value_counts().index[1])
    carted: list[str] = []
    for _ in range(3):
        top = server.call("recommend", {"customer_id": cid, "k": 10}).json()["items"][0]["product_id"]
        r = server.call("events", {"events": [{"customer_id": cid, "product_id": top,
                                               "event_type": "add_to_cart"}]})
        assert r.status_code == 200
        carted.append(top)
        answers = [server.call("recommend", {"customer_id": cid, "k": 10}).json() for _ in range(5)]
        for a in answers:  # at once, and later (read by the watcher, then kept)
            assert a["source"] == "model" and not set(carted) & {i["product_id"] for i in a["items"]}
        assert answers[-1]["items"] == answers[-2]["items"]


def test_reload_under_load_has_no_failed_request(server: Server, trained_project) -> None:
    cid = known_customer(trained_project)
    failures, done = [], threading.Event()
    codes: list[int] = []

    def hammer() -> None:
        with httpx.Client(timeout=30) as c:
            while not done.is_set():
                try:
                    r = c.post(f"{server.url}/recommend", json={"customer_id": cid, "k": 5},
                               headers={"Authorization": f"Bearer {KEYS['storefront']}"})
                    codes.append(r.status_code)
                    if r.status_code != 200:
                        failures.append(r.text)
                except httpx.HTTPError as e:
                    failures.append(str(e))
    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    r = server.call("reload", {}, role="admin")
    done.set()
    for t in threads:
        t.join()
    assert r.status_code == 200, r.text
    assert r.json()["versions"]["recommender"] == "1"
    assert len(codes) > 5 and not failures


def test_storefront_calls_do_not_wait_behind_crm_batches(server: Server, trained_project) -> None:
    """Offers batches run in the crm lane; recommend lookups (event loop) and events (their own lane) keep
    being answered while batches are in flight."""
    d, _ = trained_project
    ids = pd.read_parquet(d / "shop" / "orders.parquet")["customer_id"].drop_duplicates().head(1000).tolist()
    cid = known_customer(trained_project)
    busy, enough, batch_codes = threading.Event(), threading.Event(), []

    def crm() -> None:  # batches until the storefront was answered 3 times during them (offers are fast)
        busy.set()
        for _ in range(30):
            batch_codes.append(server.call("offers_batch", {"customer_ids": ids}, role="crm").status_code)
            if enough.is_set() and len(batch_codes) >= 3:
                break
        busy.clear()
    t = threading.Thread(target=crm)
    t.start()
    busy.wait(5)
    answered_while_busy = 0
    while busy.is_set():
        r = server.call("recommend", {"customer_id": cid, "k": 5})
        e = server.call("events", {"events": [{"customer_id": "lane-test", "product_id": "P00001",
                                              "event_type": "view"}]})
        assert r.status_code == 200 and e.status_code == 200
        answered_while_busy += busy.is_set()
        if answered_while_busy >= 3:
            enough.set()
    t.join()
    assert len(batch_codes) >= 3 and set(batch_codes) == {200}
    assert answered_while_busy >= 3


def test_cli_offers_audience_respects_budget_and_records_control(trained_project, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from personalise_cli import app
    d, _ = trained_project
    out = tmp_path / "audience.csv"
    res = CliRunner().invoke(app, ["offers", "audience", "--data", str(d), "--budget", "5", "--channel",
                                   "sms", "--campaign", "spring", "--out", str(out)])
    assert res.exit_code == 0, res.output
    a = pd.read_csv(out)
    t = a[a["group"] == "treatment"]
    assert len(t) > 0 and t["send_cost"].sum() <= 5 + 1e-9
    assert t["customer_id"].is_unique and (t["channel"] == "sms").all()
    assert (a["group"] == "control").any()  # control customers are recorded, not dropped
    assert set(a.columns) >= {"customer_id", "offer_id", "channel", "group", "expected_value", "reason"}
