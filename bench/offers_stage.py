"""The train job's offers/uplift and customer-model stages alone on a cached shop, with CPU seconds per stage
and the quality numbers they produce (to compare code versions without a full train run).

    python bench/offers_stage.py var/scale/sim100000_365d_s42 --part offers --out before.json
    python bench/offers_stage.py DIR --part customer      # evaluation + refit churn/value models
    python bench/offers_stage.py DIR --part refit-uplift  # the refit's uplift model

``offers``: :func:`training.offer_eval.evaluate_offers` at the job's evaluation cutoff (churn scores: none,
so the policies use 0.5) with the job's frame source (``TrainConfig``'s sampling knobs), the truth of the
simulator for the policy benchmark. Stage names as in ``bench/scale.py``; ``load`` includes the shop's coded
arrays (:func:`features.codes.shop_codes`), built in the job before these stages.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.scale import instrument, markdown  # noqa: E402
from training.stages import StageTimer, stage  # noqa: E402


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--part", choices=("offers", "customer", "refit-uplift", "uplift-rows"), default="offers")
    ap.add_argument("--uplift-max-rows", type=int, default=-1, help="-1: the config's default; 0: None")
    ap.add_argument("--ceiling-max-rows", type=int, default=-1, help="-1: the config's default; 0: None")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import pandas as pd

    from features.codes import shop_codes
    from features.io import load_shop
    from training import frames
    from training.config import TrainConfig
    from training.evaluate import _windows
    cfg = TrainConfig(horizon_days=90)
    ceiling = cfg.ceiling_max_rows if args.ceiling_max_rows < 0 else (args.ceiling_max_rows or None)
    limit = cfg.uplift_max_rows if args.uplift_max_rows < 0 else (args.uplift_max_rows or None)
    out: dict[str, Any] = {"data": str(args.data), "part": args.part, "uplift_max_rows": limit,
                           "ceiling_max_rows": ceiling}
    t0, c0 = time.perf_counter(), _cpu()
    with StageTimer() as timer:
        instrument(timer)
        with stage("load"):  # and the coded arrays, which the job has built before these stages
            shop = load_shop(args.data)
            shop_codes(shop)
        cutoff = _windows(shop, cfg, None).cutoff
        assert cutoff is not None
        out["cutoff"] = str(cutoff.date())
        src = frames.LocalFrames(cfg.max_training_rows, cfg.seed, limit)
        with frames.using(src):
            if args.part == "offers":
                from training.offer_eval import evaluate_offers
                ev = evaluate_offers(shop, cutoff, None, cfg.seed, args.data / "truth",
                                     learner=cfg.uplift_learner, ceiling_max_rows=ceiling)
                rep = ev.report
                out["qini"] = rep.get("uplift_model")
                out["redemption"] = rep.get("redemption")
                out["policies"] = rep.get("policies")
                out["measured_uplift_rows"] = int(len(ev.tables.get("measured_uplift_by_segment", [])))
                mu = ev.tables.get("measured_uplift_by_segment")
                if mu is not None:
                    out["measured_uplift_sum"] = float(mu.select_dtypes("number").abs().sum().sum())
            elif args.part == "uplift-rows":
                from training.offer_eval import uplift_training_set
                X, y = uplift_training_set(shop, cutoff)
                out["rows"] = len(y)
                out["bought"] = int(y["bought"].sum())
            elif args.part == "refit-uplift":
                from training.offer_eval import fit_uplift
                m = fit_uplift(shop, shop.end + pd.Timedelta(seconds=1), cfg.seed, cfg.uplift_learner)
                out["fitted"] = m is not None
            else:
                from training.customer_eval import evaluate_customer_models, fit_customer_models
                cust = evaluate_customer_models(shop, cutoff, cfg.customer)
                out["churn_auc"] = cust.report["churn"]["production"].get("auc")
                out["value_spearman"] = cust.report["value"]["production"].get("spearman")
                cm = fit_customer_models(shop, shop.end + pd.Timedelta(seconds=1), cfg.customer)
                out["refit_components"] = cm.components
        out["frames"] = src.built
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["cpu_seconds"] = round(_cpu() - c0, 1)
    rows = [{"stage": "/".join(r.path), "calls": r.calls, "own_cpu_seconds": round(r.own_cpu_seconds, 2),
             "seconds": round(r.seconds, 2), "peak_rss_mb": round(r.peak_rss_mb)}
            for r in timer.records.values()]
    out["stages"] = rows
    print(markdown(rows, ["stage", "calls", "seconds", "own_cpu_seconds", "peak_rss_mb"]))
    print(json.dumps({k: v for k, v in out.items() if k != "stages"}, indent=1, default=str))
    if args.out:
        args.out.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
