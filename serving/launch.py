"""Starting the server: the command, its environment, and (for the demo) the example calls printed once it
answers.

Each server gets a BentoML home of its own, ``DATA/serve/<host>-<port>``: BentoML keeps its Prometheus
files in ``$BENTOML_HOME/prometheus_multiproc_dir`` and empties that folder at every start, so with the
shared default (``~/bentoml``) any other BentoML server the user started cleared our counters, and our
``/metrics`` then showed its.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import httpx

ROOT = Path(__file__).resolve().parents[1]


def server_home(data: Path, host: str, port: int) -> Path:
    """The server's own BentoML home (its Prometheus files live there)."""
    return data.resolve() / "serve" / f"{host}-{port}"


def server_env(data: Path, host: str = "127.0.0.1", port: int = 3000, bundle: Path | None = None,
               insecure_dev: bool = False, max_concurrency: int | None = None,
               base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment ``bentoml serve`` runs the service with."""
    env = dict(os.environ if base is None else base, PERSONALISE_DATA=str(data.resolve()),
               OPENBLAS_NUM_THREADS="1", BENTOML_HOME=str(server_home(data, host, port)))
    if max_concurrency is not None:
        env["PERSONALISE_MAX_CONCURRENCY"] = str(max_concurrency)
    if insecure_dev:
        env["PERSONALISE_INSECURE_DEV"] = "1"
    if bundle is not None:
        env["PERSONALISE_BUNDLE"] = str(bundle.resolve())
    return env


def server_command(host: str = "127.0.0.1", port: int = 3000) -> list[str]:
    return [sys.executable, "-m", "bentoml", "serve", "serving.service:PersonaliseService", "--host", host,
            "--port", str(port), "--working-dir", str(ROOT)]


def wait_ready(url: str, alive: Callable[[], bool], timeout: float = 600.0, poll: float = 0.5) -> bool:
    """Wait until ``url/readyz`` answers 200 (models loaded); False if the server exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(poll)
    return False


def serve_and_announce(cmd: list[str], env: dict[str, str], url: str, banner: str,
                       out: TextIO = sys.stdout, ready_timeout: float = 600.0) -> int:
    """Run the server; print ``banner`` once it is ready (not before: the calls would scroll away above the
    server's start-up log, and fail if tried at once). Returns the server's exit code (Ctrl+C stops it)."""
    proc = subprocess.Popen(cmd, env=env)
    try:
        if wait_ready(url, lambda: proc.poll() is None, ready_timeout):
            print(banner, file=out, flush=True)
        elif proc.poll() is None:
            print(f"the server at {url} is not ready yet (see its log above); /readyz says when",
                  file=out, flush=True)
        return proc.wait()
    except KeyboardInterrupt:  # Ctrl+C reaches the server too (same process group): let it stop
        try:
            return proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
