"""Dead letters over HTTP and from the CLI, against a real server (no models needed: triggers still fire and
their webhooks go out) and a real receiver on 127.0.0.1 that is down until the test fixes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.serving.conftest import Server
from tests.serving.webhook_receiver import Receiver, wait_until

pytestmark = [pytest.mark.server, pytest.mark.slow]
SECRET = "dead-letter-test-secret-01"


def _order(oid: str, cid: str) -> dict[str, object]:
    return {"order_id": oid, "customer_id": cid,
            "lines": [{"line_id": f"{oid}-1", "product_id": "P1", "quantity": 1, "unit_price": 80.0}]}


def test_an_operator_requeues_dead_letters_by_route_and_cli(postgres_server, tmp_path: Path,
                                                            monkeypatch) -> None:
    from typer.testing import CliRunner

    from personalise_cli import app
    receiver = Receiver(SECRET.encode())
    receiver.down = True
    config = tmp_path / "triggers.toml"
    config.write_text(f"""
[webhooks]
max_attempts = 2
backoff_seconds = 0.1
timeout_seconds = 2
[webhooks.urls]
first_purchase = "{receiver.url}/first"
""")
    url = postgres_server.new_database()
    server = Server(tmp_path, {"PERSONALISE_DB": url, "PERSONALISE_TRIGGERS_CONFIG": str(config),
                               "PERSONALISE_WEBHOOK_SECRET": SECRET}, wait_ready=False)
    monkeypatch.setenv("PERSONALISE_DB", url)

    def cli(*args: str) -> dict:
        res = CliRunner().invoke(app, ["triggers", "dead-letters", "--data", str(tmp_path), *args])
        assert res.exit_code == 0, res.output
        return json.loads(res.output)  # type: ignore[no-any-return]

    def dead() -> list[dict]:
        r = server.call("webhooks/dead_letters", {}, role="admin")
        assert r.status_code == 200, r.text
        return r.json()["dead_letters"]  # type: ignore[no-any-return]

    try:
        for cid in ("HD-1", "HD-2"):
            assert server.call("orders", _order(f"{cid}-o", cid)).status_code == 200
        wait_until(lambda: len(dead()) == 2, 60, "both webhooks dead")
        listed = dead()
        tids = [d["trigger_id"] for d in listed]
        assert tids == ["first_purchase:HD-1:HD-1-o", "first_purchase:HD-2:HD-2-o"]
        assert cli()["dead_letters"] == listed  # the CLI lists the same dead letters
        first, second = (d["id"] for d in listed)
        # only an admin key requeues, and it names what to requeue
        assert server.call("webhooks/requeue", {"all": True}, role="crm").status_code == 403
        assert server.call("webhooks/dead_letters", {}, role="crm").status_code == 403
        for body in ({}, {"all": True, "delivery_ids": [first]}):
            r = server.call("webhooks/requeue", body, role="admin")
            assert r.status_code == 400 and "delivery_ids" in r.text, r.text
        assert receiver.delivered() == {}

        receiver.down = False  # the receiver is fixed
        r = server.call("webhooks/requeue", {"delivery_ids": [first]}, role="admin")
        assert r.json() == {"requeued": [first], "not_dead": [], "delivering": True}
        wait_until(lambda: receiver.delivered().get(tids[0]), 30, "the requeued webhook")
        assert [d["id"] for d in dead()] == [second]
        assert cli("--all") == {"requeued": [second], "not_dead": []}  # the server's sender posts it
        wait_until(lambda: receiver.delivered().get(tids[1]), 30, "the one requeued from the CLI")
        assert cli("--requeue", str(first)) == {"requeued": [], "not_dead": [first]}
        assert dead() == [] and receiver.delivered() == {t: 1 for t in tids}
        assert all(a.signed for a in receiver.got)
        res = CliRunner().invoke(app, ["triggers", "dead-letters", "--data", str(tmp_path), "--all",
                                       "--requeue", "1"])
        assert res.exit_code != 0 and "not both" in res.output
    finally:
        server.stop()
        receiver.close()
