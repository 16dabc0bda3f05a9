"""Two service replicas on one real PostgreSQL, over HTTP: orders sent to either are seen by both, a trigger
fires once, the feed is the same from both, webhooks are delivered once; the background scan fires dormancy
once; a replica killed with SIGKILL right after acknowledging an order loses neither the order nor its
trigger, and its restart delivers the webhook."""

from __future__ import annotations

import datetime as dt
import json
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.serving.conftest import Server
from tests.serving.webhook_receiver import Receiver, wait_until

pytestmark = [pytest.mark.server, pytest.mark.slow]
SECRET = "replica-test-secret-0001"


def _order(oid: str, cid: str, value: float, ts: str | None = None) -> dict[str, object]:
    return {"order_id": oid, "customer_id": cid, "ts": ts,
            "lines": [{"line_id": f"{oid}-1", "product_id": "P1", "quantity": 1, "unit_price": value}]}


def _feed(server: Server) -> list[dict]:
    out, after = [], 0
    while True:
        page = server.call("triggers", {"after": after, "limit": 1000}, role="crm").json()
        out += page["triggers"]
        if not page["triggers"]:
            return out
        after = page["next_after"]


def test_two_replicas_one_postgres_fire_once_and_survive_sigkill(trained_project, postgres_server,
                                                                 tmp_path: Path) -> None:
    d, _ = trained_project
    receiver = Receiver(SECRET.encode(), fail_first=2)
    config = tmp_path / "triggers.toml"
    config.write_text(f"""
[triggers]
scan_interval_seconds = 1
[webhooks]
max_attempts = 10
backoff_seconds = 0.2
backoff_max_seconds = 1
timeout_seconds = 2
[webhooks.urls]
spend_jump = "{receiver.url}/jump"
dormancy = "{receiver.url}/dormant"
""")
    env = {"PERSONALISE_DB": postgres_server.new_database(), "PERSONALISE_TRIGGERS_CONFIG": str(config),
           "PERSONALISE_WEBHOOK_SECRET": SECRET, "PERSONALISE_EVENT_MAX_AGE_DAYS": "400"}
    a = Server(d, env)
    servers = [a]
    try:
        b = Server(d, env)
        servers.append(b)
        # each customer's orders go to alternate replicas; the jump is sent to both at once (a retry that
        # reached the other replica): stored once, fired once
        n = 8
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: a.call("orders", _order(f"R{i}a", f"REP-{i}", 50.0)), range(n)))
            list(pool.map(lambda i: b.call("orders", _order(f"R{i}b", f"REP-{i}", 50.0)), range(n)))
            jumps = list(pool.map(lambda x: x[0].call("orders", _order(f"R{x[1]}c", f"REP-{x[1]}", 200.0)),
                                  [(s, i) for i in range(n) for s in (a, b)]))
        assert all(r.status_code == 200 for r in jumps), [r.text for r in jumps if r.status_code != 200]
        for i in range(n):
            pair = [r.json() for r in jumps[2 * i:2 * i + 2]]
            assert sorted(p["stored"] for p in pair) == [0, 1]  # one replica stored the line, one skipped
            assert sum(len(p["triggers"]) for p in pair) == 1
        # a live customer quiet for 125 days (no usual gap: line 120 days): the replicas' scans fire it once
        old = (dt.datetime.now(dt.UTC) - dt.timedelta(days=125)).replace(tzinfo=None).isoformat()
        assert b.call("orders", _order("QUIET1", "REP-QUIET", 60.0, old)).status_code == 200
        quiet = "dormancy:REP-QUIET:" + old[:19]
        wait_until(lambda: any(t["trigger_id"] == quiet for t in _feed(a)), 30, "the dormancy trigger")
        expected = {f"spend_jump:REP-{i}:R{i}c" for i in range(n)} | {quiet}
        wait_until(lambda: expected <= set(receiver.delivered()), 60, "every webhook delivered")
        fa, fb = _feed(a), _feed(b)
        assert fa == fb  # the same feed, in the same order, from either replica
        ids = [t["trigger_id"] for t in fa]
        assert len(ids) == len(set(ids)) and expected <= set(ids)
        assert [t for t in ids if t.startswith("dormancy:REP-")] == [quiet]
        assert all(t["decision"]["reason"] for t in fa)
        hooked = {t["trigger_id"] for t in fa if t["kind"] in ("spend_jump", "dormancy")}
        wait_until(lambda: hooked <= set(receiver.delivered()), 60, "the bundle's dormancy webhooks too")
        assert all(c == 1 for c in receiver.delivered().values()), receiver.delivered()
        assert all(r.signed for r in receiver.got)
        assert json.loads(receiver.attempts(quiet)[-1].body)["kind"] == "dormancy"

        # SIGKILL: B stops; A acknowledges a jump and is killed at once, before its webhook can get through
        b.stop()
        servers.remove(b)
        receiver.gate.clear()  # hold every post: nothing is delivered before the kill
        for oid, v in (("K1", 50.0), ("K2", 50.0)):
            assert a.call("orders", _order(oid, "REP-KILL", v)).status_code == 200
        r = a.call("orders", _order("K3", "REP-KILL", 300.0))
        assert r.status_code == 200 and [t["kind"] for t in r.json()["triggers"]] == ["spend_jump"]
        a.stop(signal.SIGKILL)
        servers.remove(a)
        receiver.gate.set()
        assert "spend_jump:REP-KILL:K3" not in receiver.delivered()
        a2 = Server(d, env)
        servers.append(a2)
        again = a2.call("orders", _order("K3", "REP-KILL", 300.0)).json()
        assert again["stored"] == 0 and again["already_stored"] == 1 and again["triggers"] == []
        assert again["state"]["n_orders"] == 3
        kill = [t for t in _feed(a2) if t["trigger_id"] == "spend_jump:REP-KILL:K3"]
        assert len(kill) == 1 and kill[0]["decision"]["reason"]
        wait_until(lambda: receiver.delivered().get("spend_jump:REP-KILL:K3"), 60,
                   "the killed replica's webhook, delivered after its restart")
        assert receiver.delivered()["spend_jump:REP-KILL:K3"] == 1
    finally:
        for s in servers:
            s.stop()
        receiver.close()
