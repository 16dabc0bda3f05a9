"""Trying uplift learners and their settings on the Hillstrom e-mail test, paired on the same splits.

Every candidate is fitted on conversion on the same random arm-stratified halves and judged on the same
held-out halves: Qini on conversion and on spend (mean of the two e-mails), and the IPW policy value per
e-mail at 25% and 50% of customers. ``--mode select`` splits each training half of ``bench/hillstrom.py``'s
seeds again (inner halves: the held-out halves of the benchmark are never read, so a setting chosen there can
be judged by ``bench/hillstrom.py`` without tuning on its evaluation); ``--mode outer`` uses the benchmark's
own halves (for reading a chosen setting across more seeds, not for choosing).

Each number is the mean over splits with the standard error over splits; ``vs ref`` is the paired
difference to ``--ref`` per split (mean, and how many splits it wins).

    python bench/hillstrom_tune.py --mode select --seeds 5 --inner 2 --only prod_s,prod_ddr,...
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.hillstrom_common import add_campaign_arguments, load_campaign  # noqa: E402
from models.offers.uplift import LEARNERS  # noqa: E402
from training.uplift_learners import Base, Production, SLearner, peers  # noqa: E402
from training.uplift_randomised import (  # noqa: E402
    Campaign,
    budget_policy,
    policy_per_email,
    qini_auuc,
    stratified_halves,
)


def candidates() -> dict[str, Callable[[int], Any]]:
    """name -> (seed -> unfitted learner)."""
    out: dict[str, Callable[[int], Any]] = {}
    for learner in LEARNERS:
        out[f"prod_{learner}"] = lambda s, lr=learner: Production(Base(seed=s), lr)
    out["sklift_two_models_ddr"] = lambda s: peers(Base(seed=s), s)["sklift_two_models_ddr"]
    out["sklift_class_transformation"] = lambda s: peers(Base(seed=s), s)["sklift_class_transformation"]
    out["s_flags"] = lambda s: SLearner(Base(seed=s), treatment="flags")
    # production's learners with other tree settings: (trees, leaves, rows per leaf)
    for trees, leaves, leaf in ((100, 3, 200), (100, 7, 1000), (100, 3, 1000), (300, 3, 1000),
                                (200, 7, 500), (100, 15, 200), (50, 7, 200), (300, 7, 200), (100, 3, 2000),
                                (200, 3, 1000), (100, 5, 1000), (100, 2, 1000)):
        for learner in LEARNERS:
            name = f"prod_{learner}_t{trees}_l{leaves}_m{leaf}"
            out[name] = lambda s, lr=learner, t=trees, lv=leaves, m=leaf: Production(
                Base(seed=s, n_estimators=t, num_leaves=lv, min_child_samples=m), lr)
    return out


def per_split(c: Campaign, train: np.ndarray, test: np.ndarray, make: Callable[[int], Any], seed: int
              ) -> dict[str, float]:
    """Held-out Qini (conversion, spend; mean of the offers) and policy value at 25/50% of one learner."""
    arm, yc, ys = c.arm[test], c.outcomes["conversion"][test], c.outcomes["spend"][test]
    U = make(seed).fit(c.X.iloc[train], c.arm[train], c.outcomes["conversion"][train]).predict(
        c.X.iloc[test])[c.offers].to_numpy(float)
    out: dict[str, float] = {}
    for judged, y in (("conversion", yc), ("spend", ys)):
        q = []
        for j, o in enumerate(c.offers):
            m = (arm == o) | (arm == "control")
            q.append(float(qini_auuc(U[m, j], arm[m] == o, y[m], seed=seed)["qini"][0]))
        out[f"qini_{judged}"] = float(np.mean(q))
        out[f"qini_{judged}_{c.offers[0]}"] = q[0]
        out[f"qini_{judged}_{c.offers[1]}"] = q[1]
    spend = c.outcomes["spend"][train]
    value = c.margin_rate * U * spend[spend > 0].mean() - np.array([c.send_cost[o] for o in c.offers])
    for b in (0.25, 0.5):
        P = budget_policy(value, b)
        out[f"policy_{b:.0%}"] = float(policy_per_email(P, arm, ys, c.offers, c.margin_rate, c.send_cost)[0])
    return out


def splits(c: Campaign, mode: str, seeds: int, inner: int) -> list[tuple[str, np.ndarray, np.ndarray, int]]:
    """(label, training positions, held-out positions, seed) of every split."""
    out = []
    for s in range(seeds):
        tr, te = stratified_halves(c.arm, s)
        if mode == "outer":
            out.append((f"{s}", tr, te, s))
            continue
        for i in range(inner):
            seed = 1000 + 10 * s + i
            a, b = stratified_halves(c.arm[tr], seed)
            out.append((f"{s}.{i}", tr[a], tr[b], seed))
    return out


def cached_campaign(src: str, work: str) -> Campaign:
    p = Path(work) / "campaign.pkl"
    if p.exists():
        return pickle.loads(p.read_bytes())  # type: ignore[no-any-return]
    c = load_campaign(src, work)
    p.write_bytes(pickle.dumps(c))
    return c


def summary(df: pd.DataFrame, ref: str) -> pd.DataFrame:
    """Mean and standard error over splits per learner and metric; paired mean difference to ``ref`` and
    the share of splits above it."""
    rows = []
    metrics = [m for m in df.columns if m not in ("learner", "split", "seconds")]
    base = df[df["learner"] == ref].set_index("split")
    for name, g in df.groupby("learner", sort=False):
        g = g.set_index("split")
        row: dict[str, Any] = {"learner": name, "splits": len(g), "seconds": g["seconds"].mean()}
        for m in metrics:
            row[m] = g[m].mean()
            row[f"{m}_se"] = g[m].std(ddof=1) / np.sqrt(len(g)) if len(g) > 1 else np.nan
            if len(base):
                d = (g[m] - base[m]).dropna()
                row[f"{m}_vs_ref"] = d.mean()
                row[f"{m}_vs_ref_se"] = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else np.nan
                row[f"{m}_wins"] = f"{int((d > 0).sum())}/{len(d)}"
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    add_campaign_arguments(ap, "HILLSTROM_TUNE.md")
    ap.add_argument("--mode", choices=("select", "outer"), default="select")
    ap.add_argument("--inner", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated candidate names (default: all)")
    ap.add_argument("--ref", default="prod_two_models_ddr")
    ap.add_argument("--raw", default="", help="append per-split rows to this csv (and reuse them)")
    a = ap.parse_args()
    c = cached_campaign(a.src, a.work)
    cands = candidates()
    names = [n for n in a.only.split(",") if n] or list(cands)
    raw = Path(a.raw) if a.raw else None
    done = pd.read_csv(raw, dtype={"split": str}) if raw is not None and raw.exists() else pd.DataFrame()
    rows = done.to_dict("records")
    for label, tr, te, seed in splits(c, a.mode, a.seeds, a.inner):
        for n in names:
            if len(done) and ((done["learner"] == n) & (done["split"] == label)).any():
                continue
            t0 = time.process_time()
            r = per_split(c, tr, te, cands[n], seed)
            rows.append({"learner": n, "split": label, "seconds": time.process_time() - t0, **r})
            print(n, label, {k: round(v, 5) for k, v in r.items()}, flush=True)
            if raw is not None:
                pd.DataFrame(rows).to_csv(raw, index=False)
    df = pd.DataFrame(rows)
    df = df[df["learner"].isin(names)]
    s = summary(df, a.ref)
    pd.set_option("display.width", 250)
    cols = ["learner", "splits", "seconds", "qini_conversion", "qini_conversion_se", "qini_conversion_vs_ref",
            "qini_conversion_vs_ref_se", "qini_conversion_wins", "qini_spend", "qini_spend_vs_ref",
            "qini_spend_wins", "policy_25%", "policy_50%"]
    print(s[[col for col in cols if col in s.columns]].to_string(index=False))


if __name__ == "__main__":
    main()
