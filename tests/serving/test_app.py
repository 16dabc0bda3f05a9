"""The whole ASGI app as ``bentoml serve`` builds it, in process (no models, no server): the imports, the
middleware order, the timers, the shutdown hook, a failed model load."""

from __future__ import annotations

import asyncio
import gc
import logging
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_serving_never_imports_training() -> None:
    code = ("import sys, serving.service, serving.runtime, serving.champion; "
            "print(sorted(m for m in sys.modules if m == 'training' or m.startswith('training.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """The service's app without models, in demo mode (no keys), through Starlette's test client; and the
    log records of its start. One app per process: BentoML registers its metrics once."""
    records = _Records()
    logging.getLogger().addHandler(records)
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        mp.setenv("PERSONALISE_DATA", str(tmp_path_factory.mktemp("no-models")))
        mp.setenv("PERSONALISE_INSECURE_DEV", "1")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

        from serving.service import PersonaliseService
        try:
            with TestClient(PersonaliseService.to_asgi()) as c:
                yield c, records.records
        finally:
            logging.getLogger().removeHandler(records)


@pytest.fixture()
def client(started: tuple):  # noqa: ANN201
    return started[0]


def test_a_failed_model_load_is_logged_with_its_traceback(started: tuple) -> None:
    client, records = started
    fail = [r for r in records if r.name == "serving.runtime" and "could not load models" in r.getMessage()]
    assert fail and fail[0].levelno == logging.ERROR and fail[0].exc_info is not None
    assert client.get("/readyz").status_code == 503
    r = client.post("/recommend", json={"customer_id": "C1"})
    assert r.status_code == 200 and r.json()["source"] == "fallback"


def test_bentomls_timeout_is_out_and_finished_requests_leave_no_timers(client) -> None:
    def live() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, asyncio.TimerHandle) and not o.cancelled())
    for _ in range(20):
        assert client.post("/echo", json={"customer_id": "C1"}).status_code == 200
    before = live()
    for _ in range(200):
        assert client.post("/echo", json={"customer_id": "C1"}).status_code == 200
    assert live() <= before  # BentoML's own timeout middleware left one live timer per request


def test_the_api_methods_are_made_once_not_per_request(client) -> None:
    from _bentoml_sdk.service import get_current_service

    service = get_current_service()
    kept = {n: getattr(service, n).local for n in ("echo", "recommend", "offers", "customer_profile")}
    assert client.post("/echo", json={"customer_id": "C1", "k": 3}).json() == {"customer_id": "C1", "k": 3}
    assert client.post("/recommend", json={"customer_id": "C1"}).json()["source"] == "fallback"
    # BentoML's own lookup builds a new function (signature and wrapper) on every request
    assert all(getattr(service, n).local is f for n, f in kept.items())


def test_demo_mode_takes_json_only(client) -> None:
    assert client.post("/recommend", content=b'{"customer_id": "C1"}',
                       headers={"content-type": "text/plain"}).status_code == 415
    assert client.post("/events", data={"events": "x"}).status_code == 415
    assert client.post("/recommend", json={"customer_id": "C1"}).status_code == 200


def test_the_shutdown_hook_closes_the_runtime(tmp_path: Path) -> None:
    """Leaving the app (the server stopping) runs the service's shutdown hook: the live-events watcher
    thread of the runtime ends."""
    code = f"""if True:
        import os, threading, warnings
        warnings.simplefilter("ignore")
        os.environ.update(PERSONALISE_DATA={str(tmp_path)!r}, PERSONALISE_INSECURE_DEV="1")
        from starlette.testclient import TestClient
        from serving.service import PersonaliseService
        def watchers():
            return sum(t.name == "live-events-watch" and t.is_alive() for t in threading.enumerate())
        with TestClient(PersonaliseService.to_asgi()):
            print("running", watchers())
        print("stopped", watchers())
        """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-4:] == ["running", "1", "stopped", "0"]
