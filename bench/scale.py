"""Scale benchmark: simulate a shop of N customers, run the train job, and record wall time and peak memory
(RSS) per stage, so the next bottleneck is visible.

    python bench/scale.py 100000                    # simulate (once, cached in var/scale/) and train
    python bench/scale.py 1000000 --part simulate   # the simulator alone, time and peak memory
    python bench/scale.py 100000 --part features    # load + the customer feature pieces only

The job's building blocks are timed from outside (:meth:`training.stages.StageTimer.wrap`): each is a stage,
nested stages are separated (``evaluation/customer models/stacked training sets/features``) and their own
time is counted once. Stages that name a function the code no longer has are listed as not instrumented.
Results: one JSON file per run in ``var/scale/`` and a Markdown table on stdout. Profile a run with
``py-spy record --format raw -o prof.txt -- python bench/scale.py 100000`` and
``bench/scale.py --top prof.txt``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORK = ROOT / "var" / "scale"

from training.stages import StageTimer, rss_mb, stage  # noqa: E402

# (module, attribute path, stage name, issue category). Methods are "Class.method".
TARGETS: list[tuple[str, str, str, str]] = [
    ("training.jobs", "train", "train", "registry"),
    ("features.io", "load_shop", "load", "load"),
    ("training.jobs", "merge_live_rows", "load", "load"),
    ("training.jobs", "evaluate", "evaluation", "evaluation"),
    ("training.rec_eval", "evaluate_recommenders", "recommenders", "recommenders"),
    ("training.rec_eval", "fit_production", "recommenders", "recommenders"),
    ("features.interactions", "build_interactions", "interactions", "recommenders"),
    ("training.rec_eval", "tune_blend", "blend tuning", "recommenders"),
    ("models.recsys.base", "Recommender.recommend", "top-k lists", "evaluation"),
    ("training.rec_eval", "fit_reranker", "re-ranker", "re-ranker"),
    ("training.customer_eval", "fit_customer_models", "customer models", "evaluation"),
    ("training.customer_eval", "fit_bgnbd", "bg/nbd", "evaluation"),
    ("features.customer_labels", "stacked_training_set", "stacked training sets", "stacked training sets"),
    ("features.customer", "customer_features", "features", "features"),
    ("features.customer_labels", "future_labels", "labels", "stacked training sets"),
    ("training.offer_eval", "evaluate_offers", "offers", "evaluation"),
    ("training.offer_eval", "fit_uplift", "uplift", "uplift"),
    ("training.offer_eval", "uplift_training_set", "uplift rows", "uplift"),
    ("training.offer_eval", "policy_benchmark", "policy benchmark", "evaluation"),
    ("training.jobs", "fit_serving_bundle", "refit", "refit"),
    ("models.triggers", "detect_triggers", "triggers", "refit"),
    ("models.recsys.engine", "RecommendationEngine.precompute", "candidate precompute",
     "candidate precompute"),
    ("training.jobs", "register_bundle", "registry", "registry"),
]
CATEGORIES = ("load", "features", "stacked training sets", "recommenders", "re-ranker",
              "uplift", "evaluation", "refit", "candidate precompute", "registry")


def instrument(timer: StageTimer) -> list[str]:
    """Wrap every target that exists; returns the ones that could not be found."""
    missing = []
    for mod_name, attr, name, _ in TARGETS:
        try:
            mod = importlib.import_module(mod_name)
            owner: Any = None
            obj: Any = mod
            for part in attr.split("."):
                owner, obj = obj, getattr(obj, part)
            timer.wrap(obj, name, owner=owner if isinstance(owner, type) else None)
        except (ImportError, AttributeError):
            missing.append(f"{mod_name}.{attr}")
    return missing


def shop_dir(customers: int, days: int, seed: int) -> Path:
    from features.simulate import simulate_shop
    d = WORK / f"sim{customers}_{days}d_s{seed}"
    if not (d / "orders.parquet").exists():
        simulate_shop(d, customers=customers, days=days, seed=seed)
    return d


def category_table(timer: StageTimer) -> list[dict[str, Any]]:
    """Own time and peak memory per category of the issue (every stage name maps to one)."""
    cat_of = {name: cat for _, _, name, cat in TARGETS}
    out: dict[str, dict[str, Any]] = {c: {"stage": c, "seconds": 0.0, "cpu_seconds": 0.0, "peak_rss_mb": 0.0}
                                      for c in CATEGORIES}
    for r in timer.records.values():
        d = out[cat_of.get(r.path[-1], "evaluation")]
        d["seconds"] += r.own_seconds
        d["cpu_seconds"] += r.own_cpu_seconds
        d["peak_rss_mb"] = max(d["peak_rss_mb"], r.peak_rss_mb)
    return [{**d, "seconds": round(d["seconds"], 1), "cpu_seconds": round(d["cpu_seconds"], 1),
             "peak_rss_mb": round(d["peak_rss_mb"])} for d in out.values()]


def with_settings(cfg: Any, settings: list[str]) -> Any:
    """``cfg`` (a :class:`~training.config.TrainConfig`) with ``KEY=VALUE`` settings: a field, or a field of
    its ``recommender`` / ``customer`` / ``interactions`` config (``recommender.tune_max_customers=10000``);
    the value as Python (``None``, numbers) or else text."""
    import ast
    from dataclasses import replace
    for item in settings:
        key, _, text = item.partition("=")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        part, _, field = key.rpartition(".")
        if part:
            cfg = replace(cfg, **{part: replace(getattr(cfg, part), **{field: value})})
        else:
            cfg = replace(cfg, **{field: value})
    return cfg


def run_train(src: Path, timer: StageTimer, max_rows: int | None = None, keep: Path | None = None,
              settings: list[str] | None = None) -> dict[str, Any]:
    """Train on ``src`` in a temporary project (deleted after), or in ``keep`` (kept: serve it with
    ``PERSONALISE_DATA=<keep> personalise serve``); ``settings``: see :func:`with_settings`."""
    from training.config import TrainConfig
    from training.jobs import train
    proj = keep or Path(tempfile.mkdtemp(prefix="scale-train-", dir=WORK))
    cfg = TrainConfig(horizon_days=90)
    if max_rows is not None:
        cfg = TrainConfig(horizon_days=90, max_training_rows=max_rows or None)
    cfg = with_settings(cfg, settings or [])
    try:
        r = train(proj, cfg, shop_dir=src)
        keys = ("recommend.all_items.production.ndcg@10", "recommend.new_items.production.ndcg@10",
                "churn.production.auc", "value.production.spearman")
        from mlflow import MlflowClient
        logged = MlflowClient().get_run(r.run_id).data.metrics
        share = logged.get("training.sample_share")
        more = ("offers.uplift_model.qini", "offers.production.incremental_margin",
                "offers.oracle.incremental_margin", "recommend.test_customers.scored",
                "recommend.samples.tuning_customers", "recommend.samples.tuning_screen_customers",
                "recommend.reranker.customers", "recommend.reranker.holdout_customers")
        return {"promoted": r.promoted, "max_training_rows": cfg.max_training_rows,
                "settings": settings or [], "metrics": dict(logged),
                "gate_metrics": {**{k: r.metrics.get(k) for k in keys}, "training.sample_share": share},
                "more_metrics": {k: logged.get(k) for k in more}}
    finally:
        if keep is None:
            shutil.rmtree(proj, ignore_errors=True)


def run_features(src: Path, timer: StageTimer) -> dict[str, Any]:
    """The pieces of the job that live in features/: load, features at the cutoff, stacked sets, uplift
    rows."""
    import pandas as pd

    from features.customer import customer_features
    from features.customer_labels import stacked_training_set, training_cutoffs
    from features.io import load_shop
    from models.customer import CustomerModelConfig
    from training.config import default_cutoff
    from training.offer_eval import uplift_training_set
    shop = load_shop(src)
    cutoff = default_cutoff(shop.end, 90)
    cfg = CustomerModelConfig()
    X = customer_features(shop, cutoff)
    cuts = training_cutoffs(shop, cutoff, 90, cfg.n_cutoffs, cfg.cutoff_step_days)
    Xs, _ = stacked_training_set(shop, cuts, 90)
    Xu, _ = uplift_training_set(shop, cutoff)
    X_end = customer_features(shop, shop.end + pd.Timedelta(seconds=1))
    return {"rows": {"features": len(X), "stacked": len(Xs), "uplift": len(Xu), "features_end": len(X_end)}}


def run_simulate(args: argparse.Namespace, timer: StageTimer) -> dict[str, Any]:
    from features.simulate import simulate_shop
    d = Path(tempfile.mkdtemp(prefix="scale-sim-", dir=WORK))
    try:
        with stage("simulate"):
            s = simulate_shop(d, customers=args.customers, days=args.days, seed=args.seed)
        size = sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
        return {"rows": s["rows"], "disk_mb": round(size / 2**20, 1)}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def top_frames(raw: Path, n: int = 25) -> list[tuple[str, float, float]]:
    """From a py-spy ``--format raw`` profile: (frame, share of samples inside it, share as the leaf),
    counting a frame once per stack."""
    incl: dict[str, int] = defaultdict(int)
    own: dict[str, int] = defaultdict(int)
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, cnt = line.rpartition(" ")
        if not stack:
            continue
        c = int(cnt)
        total += c
        frames = [f.replace(str(ROOT) + "/", "") for f in stack.split(";")]
        for f in set(frames):
            incl[f] += c
        own[frames[-1]] += c
    top = sorted(incl, key=lambda f: -incl[f])
    return [(f, incl[f] / total, own[f] / total) for f in top[:n]]


STAGE_COLUMNS = ["stage", "calls", "seconds", "own_seconds", "own_cpu_seconds", "peak_rss_mb", "start", "end"]
"""The every-stage table; ``start``/``end``: seconds from the job's start to a stage's first call and to the
end of its last (stages whose spans overlap ran at the same time)."""


def markdown(rows: list[dict[str, Any]], cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("customers", type=int, nargs="?", default=100_000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--part", choices=("train", "features", "simulate"), default="train")
    ap.add_argument("--data", type=Path, help="a shop directory to use instead of simulating one")
    ap.add_argument("--top", type=Path, help="print the top frames of a py-spy raw profile and exit")
    ap.add_argument("--md", type=Path, help="also write the tables into this Markdown file (one section per "
                                            "size and part, replaced on each run), e.g. bench/SCALE.md")
    ap.add_argument("--keep", type=Path, help="train into this project directory and keep it (to serve it)")
    ap.add_argument("--max-training-rows", type=int, default=None,
                    help="train: the stacked-rows limit (default: the job's own; 0 = never sample)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="train: a config setting, e.g. recommender.tune_max_customers=10000 or "
                         "concurrent_max_customers=None (one after the other: per-stage CPU seconds)")
    a = ap.parse_args()
    if a.top:
        for f, inc, own in top_frames(a.top):
            print(f"{inc:6.1%} {own:6.1%}  {f}")
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    WORK.mkdir(parents=True, exist_ok=True)
    src = None if a.part == "simulate" else (a.data or shop_dir(a.customers, a.days, a.seed))
    start_mb = rss_mb()
    with StageTimer() as timer:
        missing = instrument(timer)
        t0, c0 = time.perf_counter(), time.process_time()
        if a.part == "simulate":
            info = run_simulate(a, timer)
        else:
            info = (run_train(src, timer, a.max_training_rows, a.keep, a.set) if a.part == "train"  # type: ignore[arg-type]
                    else run_features(src, timer))  # type: ignore[arg-type]
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    res = {"customers": a.customers, "days": a.days, "seed": a.seed, "part": a.part, "data": str(src),
           "seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "peak_rss_mb": round(timer.peak_rss_mb),
           "start_rss_mb": round(start_mb),
           "not_instrumented": missing, **info, "categories": category_table(timer), "stages": timer.rows()}
    out = WORK / f"{a.part}_{a.customers}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(res, indent=1, default=str))
    print(f"\n{a.part} {a.customers} customers: {wall:.1f} s (CPU {cpu:.1f} s), "
          f"peak RSS {timer.peak_rss_mb:.0f} MB ({out})")
    if missing:
        print("not instrumented:", ", ".join(missing))
    print(markdown(res["categories"], ["stage", "seconds", "cpu_seconds", "peak_rss_mb"]))
    print()
    print(markdown(res["stages"], STAGE_COLUMNS))
    if a.md:
        write_section(a.md, res)


def write_section(path: Path, res: dict[str, Any]) -> None:
    """Replace (or add) this run's section of the Markdown file ``path``."""
    title = f"## {res['part']}, {res['customers']:,} customers"
    if res.get("max_training_rows") is not None and res["part"] == "train":
        title += f", max_training_rows {res['max_training_rows']:,}"
    body = [title, "",
            f"{res['seconds']} s wall, {res['cpu_seconds']} s CPU, peak RSS {res['peak_rss_mb']:,} MB "
            f"(run {time.strftime('%Y-%m-%d %H:%M')}, load average at the end {os.getloadavg()[0]:.1f}).", ""]
    if res.get("gate_metrics"):
        body += ["Quality: " + ", ".join(f"{k} {v:.4f}" for k, v in res["gate_metrics"].items()
                                         if isinstance(v, float)), ""]
    if res.get("more_metrics"):
        body += ["Also: " + ", ".join(f"{k} {v:,.4g}" for k, v in res["more_metrics"].items()
                                      if isinstance(v, float)), ""]
    body += [markdown(res["categories"], ["stage", "seconds", "cpu_seconds", "peak_rss_mb"]), "",
             "<details><summary>every stage</summary>", "",
             markdown(res["stages"], STAGE_COLUMNS), "", "</details>", ""]
    head = "# Scale: time and peak memory per stage (`bench/scale.py`)\n\n"
    old = path.read_text() if path.exists() else head
    parts = old.split("\n## ")
    kept = [parts[0]] + ["## " + p for p in parts[1:] if not ("## " + p).startswith(title + "\n")]
    path.write_text("\n".join(x.rstrip("\n") + "\n" for x in kept) + "\n" + "\n".join(body))


if __name__ == "__main__":
    main()
