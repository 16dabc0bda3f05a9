"""Benchmarks: quality against baselines on real and simulated data, speed and peak memory.

Run with ``make bench``; results go to ``bench/RESULTS.md`` (and ``bench/results.json``). Each section runs
in its own process so its peak memory (max RSS) is measured on its own. Sections can be chosen with
``--only simulate,recommend,...``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
WORK = ROOT / "var" / "bench"
PY = sys.executable


def run_section(name: str, *args: str, env: dict[str, str] | None = None) -> dict:
    """Run ``bench/sections.py NAME`` in a child process; return its JSON plus wall time and peak memory."""
    t0 = time.perf_counter()
    out = subprocess.run([PY, str(ROOT / "bench" / "sections.py"), name, *args],
                         capture_output=True, text=True, env=dict(os.environ, OPENBLAS_NUM_THREADS="1",
                                                                  **(env or {})), cwd=ROOT)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        return {"error": out.stderr[-3000:], "wall_seconds": round(wall, 1)}
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["wall_seconds"] = round(wall, 1)
    res["peak_rss_mb"] = res.pop("peak_rss_mb_self", None)
    return res


def run_scale(customers: str) -> dict:
    """``bench/scale.py`` on a simulated shop of ``customers``: the train job's time and peak memory per
    stage,
    written to ``bench/SCALE.md`` (its own process, so its memory is its own)."""
    t0 = time.perf_counter()
    cmd = [PY, str(ROOT / "bench" / "scale.py"), customers, "--md", str(ROOT / "bench" / "SCALE.md")]
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OPENBLAS_NUM_THREADS="1"),
                         cwd=ROOT)
    res = {"wall_seconds": round(time.perf_counter() - t0, 1)}
    if out.returncode != 0:
        return {**res, "error": out.stderr[-3000:]}
    runs = sorted((ROOT / "var" / "scale").glob(f"train_{customers}_*.json"))
    return {**res, **json.loads(runs[-1].read_text())} if runs else res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"))
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    only = set(filter(None, a.only.split(",")))
    WORK.mkdir(parents=True, exist_ok=True)
    jpath = ROOT / "bench" / "results.json"
    results = json.loads(jpath.read_text()) if jpath.exists() and only else {}
    plan: list[tuple] = [
        ("simulate_20k", ("simulate", "20000")),
        ("simulate_100k", ("simulate", "100000")),
        ("simulate_1m", ("simulate", "1000000")),
        ("import_online_retail", ("import_or",)),
        ("recommend_online_retail", ("recommend", "or")),
        ("customer_online_retail", ("customer", "or")),
        ("customer_simulated", ("customer", "sim")),
        ("offers_simulated", ("offers", "sim")),
        ("offers_complete_journey", ("redemption_cj",)),
        ("ope_open_bandit", ("ope",)),
        ("train_online_retail", ("train", "or")),
        ("train_sim_20k", ("train", "sim20k")),
        ("train_sim_100k", ("train", "sim100k")),
        ("serve_load", ("serve",)),
        ("triggers_load", ("triggers",)),
        ("scale_100k", ("scale", "100000")),
        ("scale_1m", ("scale", "1000000")),
        ("live_path", ("live_path",)),
    ]
    for key, args, *env in plan:  # type: ignore[misc]
        if only and key not in only and args[0] not in only:
            continue
        print(f"== {key}", flush=True)
        results[key] = (run_scale(args[1]) if args[0] == "scale"
                        else run_section(*args, env=env[0] if env else None))
        print(json.dumps(results[key])[:400], flush=True)
        jpath.write_text(json.dumps(results, indent=1, default=str))
    from bench.report import write_markdown
    write_markdown(results, Path(a.out))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
