"""The serving load benchmark: a real BentoML server on 127.0.0.1 loaded with wrk (echo, recommend, offers,
events). Called by the ``serve`` section of bench/sections.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "var" / "bench"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wrk_installed() -> bool:
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], capture_output=True)
        if shutil.which("wrk") is None:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], capture_output=True)
    return shutil.which("wrk") is not None


def _start_server(proj: Path, port: int, key: str) -> subprocess.Popen:
    env = dict(os.environ, PERSONALISE_DATA=str(proj),
               PERSONALISE_API_KEYS=f"storefront:{key},crm:bench-crm-key-1",
               PERSONALISE_DB=f"sqlite:///{WORK / 'bench_live.db'}", OPENBLAS_NUM_THREADS="1")
    (WORK / "bench_live.db").unlink(missing_ok=True)
    return subprocess.Popen([sys.executable, "-m", "bentoml", "serve",
                             "serving.service:PersonaliseService", "--host", "127.0.0.1", "--port", str(port),
                             "--working-dir", str(ROOT)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _wait_ready(url: str) -> None:
    import httpx
    for _ in range(240):
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)


def _lua_script(name: str, path: str, role_key: str, ids: list[Any]) -> Path:
    if name == "events":
        body_fn = ('function() local c = ids[math.random(#ids)]; return \'{"events": [\' .. '
                   'string.rep(\'{"customer_id": "\' .. c .. \'", "product_id": "P00010", '
                   '"event_type": "view"},\', 9) .. \'{"customer_id": "\' .. c .. \'", "product_id": '
                   '"P00011", "event_type": "view"}]}\' end')
    else:
        body_fn = (
            'function() return \'{"customer_id": "\' .. ids[math.random(#ids)] .. \'", "k": 10}\' end'
        )
    lua = WORK / f"bench_{name}.lua"
    lua.write_text(f"""
ids = {{{",".join(json.dumps(i) for i in ids)}}}
make_body = {body_fn}
request = function()
  return wrk.format("POST", "{path}",
    {{["content-type"]="application/json", ["Authorization"]="Bearer {role_key}"}}, make_body())
end
done = function(summary, latency, requests)
  io.write(string.format("JSON{{\\"requests\\": %d, \\"duration_us\\": %d, \\"p50_ms\\": %.2f, " ..
    "\\"p95_ms\\": %.2f, \\"p99_ms\\": %.2f, \\"non2xx\\": %d, \\"errors\\": %d}}\\n",
    summary.requests, summary.duration, latency:percentile(50)/1000, latency:percentile(95)/1000,
    latency:percentile(99)/1000, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
""")
    return lua


def _load(lua: Path, seconds: int, url: str) -> dict[str, Any]:
    out = subprocess.run(["wrk", "-t2", "-c8", f"-d{seconds}s", "--latency", "-s", str(lua), url],
                         capture_output=True, text=True)
    r = json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("JSON")][-1][4:])
    r["rps"] = round(r["requests"] / (r["duration_us"] / 1e6), 1)
    return r


def _alternating(scripts: dict[str, Path], url: str) -> dict[str, Any]:
    """echo and recommend alternate in short rounds, in turn first, so that a slower stretch of the shared
    machine (its speed varies by 30% from minute to minute) hits both alike."""
    results: dict[str, Any] = {}
    order = [("echo", "recommend"), ("recommend", "echo")]
    rounds = [{n: _load(scripts[n], 4, url) for n in order[i % 2]} for i in range(8)]
    for n in ("echo", "recommend"):
        rs = [r[n] for r in rounds]
        req, dur = sum(r["requests"] for r in rs), sum(r["duration_us"] for r in rs)
        results[n] = {"requests": req, "duration_us": dur, "rps": round(req / (dur / 1e6), 1),
                      "p50_ms": float(np.median([r["p50_ms"] for r in rs])),
                      "p95_ms": float(np.median([r["p95_ms"] for r in rs])),
                      "p99_ms": float(np.median([r["p99_ms"] for r in rs])),
                      "p99_ms_per_round": [r["p99_ms"] for r in rs],
                      "non2xx": sum(r["non2xx"] for r in rs), "errors": sum(r["errors"] for r in rs)}
    results["recommend_vs_echo_per_round"] = [round(r["recommend"]["rps"] / r["echo"]["rps"], 3)
                                              for r in rounds]
    return results


def _stored_events() -> int:
    import sqlalchemy as sa
    eng = sa.create_engine(f"sqlite:///{WORK / 'bench_live.db'}")
    with eng.connect() as c:
        return int(c.execute(sa.text("select count(*) from events")).scalar_one())


def _stop(proc: subprocess.Popen) -> None:
    import psutil
    kids = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)
    for k in psutil.wait_procs(kids, timeout=10)[1]:
        k.kill()


def serve_load(proj: Path, train: Callable[[], Any]) -> dict:
    """Start the server on the models of the project ``proj`` (``train()`` makes it when missing); load it
    with wrk at 8 connections."""
    if not _wrk_installed():
        return {"error": "wrk could not be installed (apt-get install wrk)"}
    if not (proj / "mlflow").exists():
        train()
    port = _free_port()
    key = "bench-storefront-key"
    proc = _start_server(proj, port, key)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url)
        ids = (
            pd.read_parquet(proj / "shop" / "orders.parquet")["customer_id"]
            .drop_duplicates()
            .head(2000)
            .tolist()
        )
        scripts = {"echo": _lua_script("echo", "/echo", key, ids),
                   "recommend": _lua_script("recommend", "/recommend", key, ids),
                   "offers": _lua_script("offers", "/offers", "bench-crm-key-1", ids),
                   "events": _lua_script("events", "/events", key, ids)}
        for n in ("echo", "recommend", "offers"):  # warm-up (events later: they change what recommend does)
            subprocess.run(["wrk", "-t2", "-c8", "-d3s", "-s", str(scripts[n]), url],
                           capture_output=True, text=True)
        results = _alternating(scripts, url)
        results["offers"] = _load(scripts["offers"], 15, url)
        subprocess.run(["wrk", "-t2", "-c8", "-d3s", "-s", str(scripts["events"]), url],
                       capture_output=True, text=True)
        results["events"] = _load(scripts["events"], 15, url)
        results["events"]["events_per_s"] = round(results["events"]["rps"] * 10, 1)
        # now most of the 2,000 customers have live events: their recommendations are folded in, not looked up
        results["recommend_after_events"] = _load(scripts["recommend"], 8, url)
        stored = _stored_events()
        acked = (results["events"]["requests"] - results["events"]["non2xx"]) * 10
        results["events"]["stored_events"] = int(stored)
        results["events"]["acknowledged_events_at_least"] = int(acked)
        results["recommend_vs_echo_throughput"] = round(
            results["recommend"]["rps"] / results["echo"]["rps"], 3
        )
        return results
    finally:
        _stop(proc)
