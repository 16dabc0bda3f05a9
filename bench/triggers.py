"""Benchmark: live orders -> triggers -> the feed and webhooks, on SQLite and on PostgreSQL, side by side.

One real server per backend (``bentoml serve`` on 127.0.0.1, a trained project's champion), loaded for
``seconds`` by one client process with two kinds of traffic at once:

- ``orders``: ``concurrency`` connections sending orders back to back (the stress run), or at
  ``orders_per_s`` in all (a shop's day: ``--orders-per-s``); every customer gets two orders of 50 then one
  of 200 (a spend jump: 200 > 1.5 x 50), so every third order fires a spend_jump (and every first a
  first_purchase), each decided at once;
- ``events``: storefront events in batches of 10, at most ``events_per_s`` (the issue's target: 1,000/s),
  sent by :data:`EVENT_LANES` connections of their own;

while the CRM engine, a process of its own (``bench/triggers_crm.py``), polls ``/triggers`` with its cursor
and receives the spend jumps' webhooks on 127.0.0.1.

Measured: orders/s and triggers/s sustained, events/s stored, and for every spend jump the time from its
order's acknowledgement (the 200) to the consumer seeing it in the feed, and to its webhook reaching the
receiver: p50, p99, max. The feed latency is split into where it went (``feed_where``): ``wait``, from the
200 to the consumer's next poll being sent (the poll in flight, or its pause after an empty page);
``behind``, from that poll to the poll that returned it (polls that came back without it: it was held back
behind a trigger still being decided); ``answer``, that poll's round trip. The client, the CRM and the
server share the (shared, 2-core) machine with the database, so the numbers are lower bounds on what the
server alone does.

Usage: ``python bench/triggers.py --data PROJECT [--bundle DIR] [--seconds 20] [--events-per-s 1000]
[--backends sqlite,postgresql] [--orders-per-s 20]``; ``--events-per-s 0,300,600,1000`` loads one server
at each rate in turn (the knee).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.triggers_crm import crm  # noqa: E402
from serving.launch import server_command, server_env  # noqa: E402
from tests.postgres_server import PostgresUnavailable, running_postgres  # noqa: E402

KEYS = {"storefront": "bench-sf-key-0001", "crm": "bench-crm-key-0001"}
SECRET = "bench-webhook-secret-0001"
EVENT_LANES = 8
"""Connections sending events, each paced to its share of the rate: enough that a lane's round trips under
load (up to 80 ms at 1,000 events/s) do not cap the rate asked."""


def _pct(xs: list[float]) -> dict[str, float | int | None]:
    if not xs:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    a = np.asarray(xs) * 1000
    return {"n": len(xs), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p99_ms": round(float(np.percentile(a, 99)), 1), "max_ms": round(float(a.max()), 1)}


def _start(data: Path, db: str, config: Path, port: int, log: Path, bundle: Path | None = None
           ) -> subprocess.Popen:
    env = server_env(data, port=port, bundle=bundle)
    env.update(PERSONALISE_API_KEYS=",".join(f"{r}:{k}" for r, k in KEYS.items()), PERSONALISE_DB=db,
               PERSONALISE_TRIGGERS_CONFIG=str(config), PERSONALISE_WEBHOOK_SECRET=SECRET)
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(server_command(port=port), env=env, stdout=open(log, "w"),  # noqa: SIM115
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server not ready in 300 s")


def _stop(proc: subprocess.Popen) -> None:
    import psutil
    kids = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)
    for k in psutil.wait_procs(kids, timeout=10)[1]:
        k.kill()


async def _load(url: str, seconds: float, concurrency: int, events_per_s: float, tag: str,
                orders_per_s: float = 0.0) -> dict[str, Any]:
    """Orders (back to back, or ``orders_per_s`` in all) and events for ``seconds`` (after 5 s of echo, the
    server's own overhead)."""
    sf = {"Authorization": f"Bearer {KEYS['storefront']}"}
    acked: dict[str, float] = {}  # spend_jump trigger id -> when its order was acknowledged
    counts = {"orders": 0, "order_errors": 0, "events": 0, "event_errors": 0}
    end = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency + EVENT_LANES)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        async def orders(worker: int) -> None:
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() < end:
                cid = f"B{tag}-{worker}-{n}"
                for step, value in (("a", 50.0), ("b", 50.0), ("c", 200.0)):
                    oid = f"{cid}{step}"
                    body = {"order_id": oid, "customer_id": cid, "ts": None, "lines": [
                        {"line_id": f"{oid}-1", "product_id": "P00010", "quantity": 1, "unit_price": value}]}
                    r = await client.post("/orders", json=body, headers=sf)
                    if r.status_code != 200:
                        counts["order_errors"] += 1
                        continue
                    counts["orders"] += 1
                    if step == "c":
                        acked[f"spend_jump:{cid}:{oid}"] = time.perf_counter()
                    if orders_per_s > 0:  # this worker's share of the rate
                        ahead = t0 + (3 * n + "abc".index(step) + 1) * concurrency / orders_per_s
                        if ahead - time.perf_counter() > 0:
                            await asyncio.sleep(ahead - time.perf_counter())
                n += 1

        async def events(lane: int, lanes: int) -> None:
            if events_per_s <= 0:
                return
            i, t0 = 0, time.perf_counter()
            while time.perf_counter() < end:
                body = {"events": [{"customer_id": f"C{(i * 10 + j + lane) % 1500 + 1:07d}",
                                    "product_id": "P00010", "event_type": "view"} for j in range(10)]}
                r = await client.post("/events", json=body, headers=sf)
                counts["events" if r.status_code == 200 else "event_errors"] += 10
                i += 1
                ahead = t0 + i * 10 * lanes / events_per_s - time.perf_counter()
                if ahead > 0:
                    await asyncio.sleep(ahead)

        echo_n, echo_end = 0, time.perf_counter() + 5

        async def echo() -> None:  # the baseline: the server's own overhead, same connections, same moment
            nonlocal echo_n
            while time.perf_counter() < echo_end:
                if (await client.post("/echo", json={"customer_id": "C0000001", "k": 10}, headers=sf)
                        ).status_code == 200:
                    echo_n += 1
        await asyncio.gather(*(echo() for _ in range(concurrency)))
        end = time.perf_counter() + seconds
        t0 = time.perf_counter()
        await asyncio.gather(*(orders(w) for w in range(concurrency)),
                             *(events(k, EVENT_LANES) for k in range(EVENT_LANES)))
        wall = min(time.perf_counter(), end) - t0
    return {"seconds": round(wall, 1), "echo_per_s_baseline": round(echo_n / 5, 1),
            "orders_per_s": round(counts["orders"] / seconds, 1),
            "orders_vs_echo": round(counts["orders"] / seconds / max(echo_n / 5, 1e-9), 3),
            "events_per_s": round(counts["events"] / seconds, 1), **counts,
            "spend_jumps_acked": len(acked), "_acked": acked, "_t0": t0}


def feed_where(acked: dict[str, float], seen: dict[str, int], polls: list[tuple[float, float, int]],
               since: float = 0.0) -> dict[str, Any]:
    """Where each acknowledged spend jump's feed latency went: ``wait`` (200 -> the next poll sent),
    ``behind`` (that poll -> the poll that returned it) and ``answer`` (that poll's round trip); with the
    polls' own round trips (those sent from ``since`` on) and how many jumps a poll sent after their 200 did
    not return."""
    sends = [p[0] for p in polls]
    wait, behind, answer = [], [], []
    for tid, a in acked.items():
        if tid not in seen:
            continue
        sent, got, _ = polls[seen[tid]]
        start = max(sent, a)  # sent <= a: the poll in flight at the 200 returned it
        first = sends[bisect.bisect_left(sends, a)] if sent > a else a
        for xs, x in ((wait, first - a), (behind, start - first), (answer, got - start)):
            xs.append(x)
    mine = [p for p in polls if p[0] >= since]
    rtt = [p[1] - p[0] for p in mine]
    span = mine[-1][1] - mine[0][0] if mine else 0.0
    return {"wait": _pct(wait), "behind": _pct(behind), "answer": _pct(answer),
            "held_back": sum(1 for x in behind if x > 0), "poll_rtt": _pct(rtt),
            "polls_per_s": round(len(mine) / span, 1) if span else None,
            "triggers_per_poll_max": max((p[2] for p in mine), default=0)}


def run_backend(data: Path, backend: str, db: str, seconds: float, concurrency: int, rates: list[float],
                work: Path, bundle: Path | None = None, orders_per_s: float = 0.0) -> dict[str, Any]:
    """One server on ``db``, loaded at each events rate in turn (new customers each time); the result at the
    last rate, with every rate's under ``knee`` when there are several."""
    ctx = multiprocessing.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    crm_proc = ctx.Process(target=crm, args=(child_conn, SECRET.encode(), KEYS["crm"]), daemon=True)
    crm_proc.start()
    proc = None
    try:
        receiver_url = conn.recv()
        config = work / f"triggers-{backend}.toml"
        config.write_text("[triggers]\nscan_interval_seconds = 0\n"
                          f'[webhooks.urls]\nspend_jump = "{receiver_url}/jump"\n')
        port = _free_port()
        proc = _start(data, db, config, port, work / f"server-{backend}.log", bundle)
        url = f"http://127.0.0.1:{port}"
        conn.send(("feed", url))
        results = []
        for i, rate in enumerate(rates):
            res = asyncio.run(_load(url, seconds, concurrency, rate, f"{backend[:2]}{i}", orders_per_s))
            acked, t0 = res.pop("_acked"), res.pop("_t0")
            conn.send(("acked", list(acked)))
            got = conn.recv()
            seen, arrived, polls = got["seen"], got["arrived"], got["polls"]
            res["events_per_s_asked"], res["orders_per_s_asked"] = rate, orders_per_s or None
            res["triggers_per_s"] = round(sum(p[2] for p in polls if p[0] >= t0) / seconds, 1)
            res["spend_jumps_missing_from_feed"] = len(set(acked) - set(seen))
            res["ack_to_feed"] = _pct([polls[seen[t]][1] - a for t, a in acked.items() if t in seen])
            res["feed_where"] = feed_where(acked, seen, polls, since=t0)
            res["ack_to_webhook"] = _pct([arrived[t] - a for t, a in acked.items() if t in arrived])
            res["webhooks_missing"] = len(set(acked) - set(arrived))
            print(json.dumps({backend: res}), file=sys.stderr, flush=True)
            results.append(res)
        conn.send(("stop", None))
        return {**results[-1], "knee": results} if len(results) > 1 else results[0]
    finally:
        if proc is not None:
            _stop(proc)
        crm_proc.join(60)
        if crm_proc.is_alive():
            crm_proc.kill()


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--events-per-s", default="1000", help="Events per second; several, comma-separated "
                                                            "(e.g. 0,300,600,1000): one load after another "
                                                            "on the same server.")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--orders-per-s", type=float, default=0.0, help="Orders per second in all (0: each "
                                                                     "connection back to back, the stress).")
    ap.add_argument("--bundle", type=Path, default=None, help="Serve a local bundle directory instead of the "
                                                               "registry's champion.")
    a = ap.parse_args()
    rates = [float(x) for x in str(a.events_per_s).split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-triggers-"))
    out: dict[str, Any] = {"machine": "shared 2-core machine: load client, CRM process, server and database "
                                      "on it at once"}
    for backend in a.backends.split(","):
        if backend == "sqlite":
            out[backend] = run_backend(a.data, backend, f"sqlite:///{work / 'live.db'}", a.seconds,
                                       a.concurrency, rates, work, a.bundle, a.orders_per_s)
        else:
            try:
                with running_postgres() as pg:
                    out[backend] = run_backend(a.data, backend, pg.new_database(), a.seconds, a.concurrency,
                                               rates, work, a.bundle, a.orders_per_s)
            except PostgresUnavailable as e:
                out[backend] = {"skipped": str(e)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
