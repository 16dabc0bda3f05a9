"""What one request costs the server's event loop, without sockets: CPU ms per request of the whole ASGI app.

The service's app (every middleware, BentoML's request parsing and endpoint, the handler, the response) is
built in this process as ``bentoml serve`` builds it, on the 20,000-customer shop's models
(``bench/sections.py train sim20k``), and called directly in an asyncio loop, one request at a time. The
cost per request is this process's CPU time (``time.process_time``: the event loop and the worker thread
that decides an offer) over a block of requests: unlike wrk's throughput on the shared 2-core machine, it
hardly moves with what else runs (another process takes the core, not this process's CPU time). What it
leaves out is about the same for every endpoint: HTTP parsing (h11) and the socket writes.

Requests are the serve bench's (``bench/sections.py serve``): ``echo``; ``session``, a customer of the
2,000 with five viewed products in the request (a fresh fold-in); ``session_excl``, the same with
``exclude_bought``; ``offers`` (a CRM preview). With ``--compare-lookup``, the blocks alternate between the
service's API methods kept per instance (:func:`serving.asgi.keep_api_methods`) and BentoML's lookup per
request, and the paired differences are printed. Prints one JSON line.

    python bench/asgi_cost.py [--requests 300] [--rounds 10] [--compare-lookup]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROJECT = Path(os.environ.get("ASGI_COST_PROJECT", ROOT / "var" / "bench" / "train_sim20k"))
KINDS = ("echo", "session", "session_excl", "offers")
PATHS = {"echo": "/echo", "session": "/recommend", "session_excl": "/recommend", "offers": "/offers"}
KEYS = {"storefront": "bench-storefront-key", "crm": "bench-crm-key-1"}


def _bodies(ids: list[str], n: int, seed: int = 3) -> dict[str, list[bytes]]:
    """``n`` request bodies of each kind, as the serve bench's wrk scripts make them."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out: dict[str, list[bytes]] = {k: [] for k in KINDS}
    for _ in range(n):
        c = ids[int(rng.integers(len(ids)))]
        views = [{"product_id": f"P{int(rng.integers(0, 2000)):05d}", "event_type": "view"} for _ in range(5)]
        out["echo"].append(json.dumps({"customer_id": c, "k": 10}).encode())
        out["session"].append(json.dumps({"customer_id": c, "k": 10, "session_events": views}).encode())
        out["session_excl"].append(json.dumps({"customer_id": c, "k": 10, "exclude_bought": True,
                                               "session_events": views}).encode())
        out["offers"].append(json.dumps({"customer_id": c}).encode())
    return out


async def _call(app: Any, path: str, key: str, body: bytes) -> int:
    """One POST through the ASGI app; its status."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 3000), "state": {},
             "headers": [(b"host", b"bench"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode()),
                         (b"authorization", f"Bearer {key}".encode())]}
    given, status = False, 0

    async def receive() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # the client waits for its answer
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def measure(requests: int, rounds: int, compare_lookup: bool) -> dict[str, Any]:
    import numpy as np
    import pandas as pd
    from _bentoml_sdk.service import get_current_service

    from serving.asgi import KeptAPIMethod
    from serving.service import PersonaliseService

    ids = (pd.read_parquet(PROJECT / "shop" / "orders.parquet", columns=["customer_id"])["customer_id"]
           .drop_duplicates().head(2000).astype(str).tolist())
    bodies = _bodies(ids, requests)
    app = PersonaliseService.to_asgi()
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    started = asyncio.Event()
    await events.put({"type": "lifespan.startup"})

    async def lifespan_send(message: dict[str, Any]) -> None:
        if message["type"].startswith("lifespan.startup"):
            started.set()

    life = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                   events.get, lifespan_send))
    await started.wait()
    service = get_current_service()
    kept = {n: v for n, v in vars(service).items() if isinstance(v, KeptAPIMethod)}

    async def block(kind: str) -> float:
        role = "crm" if kind == "offers" else "storefront"
        t0 = time.process_time()
        for body in bodies[kind]:
            status = await _call(app, PATHS[kind], KEYS[role], body)
            assert status == 200, (kind, status)
        return (time.process_time() - t0) / len(bodies[kind]) * 1e3

    for kind in KINDS:  # warm-up: every path once through
        await block(kind)
    modes = ("kept", "lookup") if compare_lookup else ("kept",)
    ms: dict[str, dict[str, list[float]]] = {m: {k: [] for k in KINDS} for m in modes}
    for r in range(rounds):
        for mode in (modes if r % 2 == 0 else modes[::-1]):
            if mode == "kept":
                vars(service).update(kept)
            else:  # BentoML's APIMethod.__get__ on every request, as without keep_api_methods
                for n in kept:
                    vars(service).pop(n, None)
            for kind in KINDS:
                ms[mode][kind].append(await block(kind))
    vars(service).update(kept)
    await events.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(life, 60)
    out: dict[str, Any] = {"requests_per_block": requests, "rounds": rounds}
    for mode in modes:
        out[mode] = {k: {"median_cpu_ms": round(float(np.median(v)), 3), "rounds": [round(x, 3) for x in v]}
                     for k, v in ms[mode].items()}
        echo = out[mode]["echo"]["median_cpu_ms"]
        out[mode]["echo_cost_over"] = {k: round(echo / out[mode][k]["median_cpu_ms"], 3) for k in KINDS[1:]}
    if compare_lookup:
        out["lookup_minus_kept_ms"] = {
            k: {"median": round(float(np.median(d)), 3), "positive_rounds": int((d > 0).sum())}
            for k in KINDS for d in [np.array(ms["lookup"][k]) - np.array(ms["kept"][k])]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--compare-lookup", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(PERSONALISE_DATA=str(PROJECT), PERSONALISE_DB=f"sqlite:///{tmp}/live.db",
                          PERSONALISE_API_KEYS=",".join(f"{r}:{k}" for r, k in KEYS.items()))
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BentoML's and pydantic's deprecation notes, per request
            print(json.dumps(asyncio.run(measure(a.requests, a.rounds, a.compare_lookup))))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
