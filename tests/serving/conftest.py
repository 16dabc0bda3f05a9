"""A real `bentoml serve` on 127.0.0.1, started by the tests and called over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from serving.launch import server_command, server_env
from serving.runtime import Personaliser

KEYS = {"storefront": "sf-test-key-0001", "crm": "crm-test-key-0001", "admin": "admin-test-key-0001"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``bentoml serve`` as ``personalise serve`` starts it (:mod:`serving.launch`), with test keys."""

    def __init__(self, data: Path, extra_env: dict[str, str] | None = None, wait_ready: bool = True,
                 base_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = server_env(data, port=self.port, base=dict(os.environ if base_env is None else base_env))
        env.update(PERSONALISE_API_KEYS=",".join(f"{r}:{k}" for r, k in KEYS.items()), **(extra_env or {}))
        env.pop("MLFLOW_TRACKING_URI", None)
        self.log_path = data / f"server-{self.port}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(server_command(port=self.port), env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                r = httpx.get(f"{self.url}/livez", timeout=1)
                ready = not wait_ready or httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
                if r.status_code == 200 and ready:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)  # a short poll: a start is seconds, a check is a refused connect
        self.stop()
        raise RuntimeError("server did not become ready")

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

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


def customers(trained_project, n: int) -> list[str]:
    """The ``n`` customers with the most orders in the trained project's shop."""
    d, _ = trained_project
    o = pd.read_parquet(d / "shop" / "orders.parquet")
    return [str(c) for c in o["customer_id"].value_counts().index[:n]]


@pytest.fixture()
def personaliser(trained_project, tmp_path: Path) -> Iterator[Personaliser]:
    """The runtime on the trained project's champion, with a live store of its own."""
    d, _ = trained_project
    p = Personaliser(d, store_url=f"sqlite:///{tmp_path / 'live.db'}")
    assert p.current is not None, p.load_error
    yield p
    p.close()


@pytest.fixture(scope="session")
def server(trained_project) -> Iterator[Server]:
    d, _ = trained_project
    # a store of its own, so the training tests' reuse check is not affected by live data
    s = Server(d, {"PERSONALISE_DB": f"sqlite:///{d / 'serving-test-live.db'}"})
    yield s
    s.stop()
