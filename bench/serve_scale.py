"""Serving a large shop: time to ready, memory, and what a known customer's recommendation costs.

Starts the real server (``bentoml serve``, one worker, 127.0.0.1) on a trained project kept by
``bench/scale.py N --keep DIR``, waits for ``/readyz``, then asks ``/recommend`` for a random sample of the
shop's customers one request at a time (the lookup path: precomputed candidates, answered on the event loop)
and twice for the same customers (the second time a rendered answer, kept up to ``MAX_ANSWERS``). Records the
time to ready, the server's resident memory (all its processes) after loading and after the requests, the
latency percentiles and the share of answers from the model. Prints one JSON line.

    python bench/serve_scale.py var/scale/proj1m --shop var/scale/sim1000000_365d_s42 [--requests 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int) -> float:
    import psutil

    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return round(sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20, 1)


def _ms(times: list[float]) -> dict[str, float]:
    import numpy as np

    t = np.array(times) * 1e3
    return {"p50_ms": round(float(np.median(t)), 2), "p99_ms": round(float(np.percentile(t, 99)), 2),
            "mean_ms": round(float(t.mean()), 2)}


def measure(project: Path, shop: Path, requests: int, seed: int = 3) -> dict[str, Any]:
    import httpx
    import numpy as np
    import pandas as pd

    ids = pd.read_parquet(shop / "customers.parquet", columns=["customer_id"])["customer_id"].astype(str)
    who = ids.sample(n=min(requests, len(ids)), random_state=seed).tolist()
    port, key = _port(), "bench-serve-scale-key"
    env = dict(os.environ, PERSONALISE_DATA=str(project), PERSONALISE_API_KEYS=f"storefront:{key}",
               PERSONALISE_DB=f"sqlite:///{project}/serve_scale_live.db", OPENBLAS_NUM_THREADS="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", "serving.service:PersonaliseService",
                             "--host", "127.0.0.1", "--port", str(port), "--working-dir", str(ROOT)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        ready = None
        while time.perf_counter() - t0 < 1800 and proc.poll() is None:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    ready = time.perf_counter() - t0
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        if ready is None:
            return {"error": "not ready", "seconds": round(time.perf_counter() - t0, 1)}
        out: dict[str, Any] = {"customers": len(ids), "ready_seconds": round(ready, 1),
                               "rss_mb_ready": _rss_mb(proc.pid)}
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
            for rnd in ("first", "again"):
                times, sources = [], []
                for cid in who:
                    t = time.perf_counter()
                    r = c.post(f"{url}/recommend", json={"customer_id": cid, "k": 10})
                    times.append(time.perf_counter() - t)
                    assert r.status_code == 200, r.text[:300]
                    sources.append(r.json()["source"])
                out[rnd] = {**_ms(times), "requests": len(who),
                            "model_share": round(float(np.mean([s == "model" for s in sources])), 4)}
        out["rss_mb_after"] = _rss_mb(proc.pid)
        return out
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("project", type=Path)
    ap.add_argument("--shop", type=Path, required=True)
    ap.add_argument("--requests", type=int, default=2000)
    a = ap.parse_args()
    print(json.dumps(measure(a.project.resolve(), a.shop.resolve(), a.requests)))
