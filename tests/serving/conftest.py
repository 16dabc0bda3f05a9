"""A real `bentoml serve` on 127.0.0.1, started by the tests and called over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"storefront": "sf-test-key-0001", "crm": "crm-test-key-0001", "admin": "admin-test-key-0001"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, data: Path, extra_env: dict[str, str] | None = None, wait_ready: bool = True) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PERSONALISE_DATA=str(data), OPENBLAS_NUM_THREADS="1",
                   PERSONALISE_API_KEYS=",".join(f"{r}:{k}" for r, k in KEYS.items()), **(extra_env or {}))
        env.pop("MLFLOW_TRACKING_URI", None)
        self.log = open(data / f"server-{self.port}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", "serving.service:PersonaliseService", "--host", "127.0.0.1",
             "--port", str(self.port), "--working-dir", str(ROOT)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {(data / f'server-{self.port}.log').read_text()[-3000:]}")
            try:
                r = httpx.get(f"{self.url}/livez", timeout=1)
                if r.status_code == 200 and (not wait_ready or httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError("server did not become ready")

    def call(self, path: str, body: object, role: str | None = "storefront", **kw: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {KEYS[role]}"} if role else {}
        return httpx.post(f"{self.url}/{path}", json=body, headers=headers, timeout=30, **kw)  # type: ignore[arg-type]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_tree(self.proc, sig)
        self.log.close()


def stop_tree(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop the server and every worker it started (BentoML's workers would otherwise outlive it)."""
    import psutil
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        kids = []
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    for k in kids:
        try:
            k.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(kids, timeout=10)
    for k in alive:
        k.kill()


@pytest.fixture(scope="session")
def server(trained_project) -> Iterator[Server]:
    d, _ = trained_project
    # a store of its own, so the training tests' reuse check is not affected by live data
    s = Server(d, {"PERSONALISE_DB": f"sqlite:///{d / 'serving-test-live.db'}"})
    yield s
    s.stop()
