"""Servers of their own: killed, started without models or keys, overloaded, a failed reload, and metrics
that another BentoML start cannot clear."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from models.bundle import COMPONENTS
from serving.champion import fetch_champion
from tests.serving.conftest import Server, customers

pytestmark = [pytest.mark.server, pytest.mark.slow]


def test_overload_gets_429_never_500_and_no_acknowledged_event_is_lost_when_killed(trained_project,
                                                                                    tmp_path: Path) -> None:
    """One server of its own for both (a start costs seconds): one request at a time, so that eight CRM
    batches at once get 429s, never a 500; then 1,000 events acknowledged one request after another are all
    in the store after a SIGKILL (no graceful shutdown)."""
    d, _ = trained_project
    s = Server(d, {"PERSONALISE_MAX_CONCURRENCY": "1", "PERSONALISE_DB": f"sqlite:///{tmp_path / 'kill.db'}"})
    ids = pd.read_parquet(d / "shop" / "orders.parquet")["customer_id"].drop_duplicates().head(1000).tolist()
    codes: list[int] = []
    acked = 0

    def one() -> None:
        codes.append(s.call("offers_batch", {"customer_ids": ids}, role="crm").status_code)
    try:
        threads = [threading.Thread(target=one) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert 429 in codes and 200 in codes
        assert set(codes) <= {200, 429}
        for i in range(20):
            ev = [{"customer_id": f"k{i}", "product_id": f"P{j:05d}", "event_type": "view"}
                  for j in range(50)]
            r = s.call("events", {"events": ev})
            assert r.status_code == 200
            acked += r.json()["accepted"]
    finally:
        s.stop(signal.SIGKILL)  # no graceful shutdown
    con = sqlite3.connect(tmp_path / "kill.db")
    stored = con.execute("select count(*) from events").fetchone()[0]
    con.close()
    assert stored == acked == 1000


def test_model_missing_gives_fallbacks_and_honest_readiness(tmp_path: Path, small_shop_dir: Path) -> None:
    import shutil
    shutil.copytree(small_shop_dir, tmp_path / "shop")  # data, but no trained models
    s = Server(tmp_path, wait_ready=False)
    try:
        assert httpx.get(f"{s.url}/readyz", timeout=5).status_code == 503
        r = s.call("recommend", {"customer_id": "C0000001", "k": 3})
        assert r.status_code == 200 and r.json()["source"] == "fallback" and len(r.json()["items"]) == 3
        o = s.call("offers", {"customer_id": "C0000001"}, role="crm").json()
        assert o["offer_id"] == "none"
    finally:
        s.stop()


def test_refuses_to_start_without_keys(tmp_path: Path) -> None:
    import os

    from typer.testing import CliRunner

    from personalise_cli import app
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSONALISE_API_KEYS")}
    res = CliRunner().invoke(app, ["serve", "--data", str(tmp_path)], env={**env, "PERSONALISE_API_KEYS": ""})
    assert res.exit_code == 2
    assert "no API keys configured" in res.output


@pytest.fixture(scope="module")
def bundle_server(trained_project, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[tuple[Server, Path]]:
    """A server on a local bundle (the champion's files), started by a user whose BENTOML_HOME is shared."""
    d, _ = trained_project
    tmp = tmp_path_factory.mktemp("bundle-server")
    paths, _ = fetch_champion(d, dest=tmp / "download")
    bundle = tmp / "bundle"
    bundle.mkdir()
    for c in COMPONENTS:
        shutil.copy(paths[c], bundle / f"{c}.pkl")
    user = dict(os.environ, BENTOML_HOME=str(tmp / "user-bentoml-home"))
    s = Server(d, {"PERSONALISE_BUNDLE": str(bundle), "PERSONALISE_DB": f"sqlite:///{tmp / 'live.db'}"},
               base_env=user)
    yield s, tmp
    s.stop()


def _recommend_count(server: Server) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    pattern = r'^bentoml_service_request_total\{[^}]*endpoint="/recommend"[^}]*\} ([0-9.e+]+)$'
    found = re.findall(pattern, text, re.M)
    return sum(float(v) for v in found)


def test_metrics_live_in_the_servers_own_folder(bundle_server, trained_project) -> None:
    """Another BentoML start empties $BENTOML_HOME/prometheus_multiproc_dir; ours is elsewhere."""
    s, tmp = bundle_server
    cid = customers(trained_project, 1)[0]
    for _ in range(5):
        assert s.call("recommend", {"customer_id": cid, "k": 3}).status_code == 200
    before = _recommend_count(s)
    assert before >= 5
    d, _ = trained_project
    own = d / "serve" / f"127.0.0.1-{s.port}" / "prometheus_multiproc_dir"
    assert own.is_dir() and any(own.iterdir())
    shared = tmp / "user-bentoml-home" / "prometheus_multiproc_dir"
    shutil.rmtree(shared, ignore_errors=True)  # what another BentoML server of this user does at its start
    shared.mkdir(parents=True)
    assert _recommend_count(s) >= before


def test_a_failed_reload_is_a_500_with_its_reason_and_a_traceback_in_the_log(bundle_server,
                                                                             trained_project) -> None:
    s, tmp = bundle_server
    pkl = tmp / "bundle" / "recommender.pkl"
    good = pkl.read_bytes()
    cid = customers(trained_project, 1)[0]
    before = s.call("recommend", {"customer_id": cid, "k": 3}).json()
    pkl.write_bytes(b"not a pickle")
    try:
        r = s.call("reload", {}, role="admin")
    finally:
        pkl.write_bytes(good)
    assert r.status_code == 500, r.text
    assert r.json()["error"] == "reload failed: still serving the previous models"
    assert "UnpicklingError" in r.json()["detail"]
    log = s.log_text()
    assert "reload failed" in log and "Traceback (most recent call last)" in log and "UnpicklingError" in log
    after = s.call("recommend", {"customer_id": cid, "k": 3})
    assert after.status_code == 200 and after.json() == before  # the previous models keep serving
    assert s.call("reload", {}, role="admin").status_code == 200  # and a good reload works again
