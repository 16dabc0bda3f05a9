"""Choosing production's uplift learner for the Hillstrom benchmark on training halves only.

For each seed of ``bench/hillstrom.py``, its training half (the same arm-stratified split) is split again at
random into an inner training and an inner held-out half (two inner seeds); the candidates are fitted on the
first and judged on the second. The held-out halves of ``bench/hillstrom.py`` are never read, so the learner
chosen here can be judged there without tuning on the evaluation.

    python bench/hillstrom_select.py          # writes bench/HILLSTROM_SELECT.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from bench.hillstrom_common import add_campaign_arguments, load_campaign, production  # noqa: E402
from models.offers.uplift import S_LEARNER, TWO_MODELS_DDR  # noqa: E402
from training.uplift_randomised import Campaign, evaluate_randomised, stratified_halves  # noqa: E402

CANDIDATES = {f"production_{learner}": production(learner) for learner in (S_LEARNER, TWO_MODELS_DDR)}
"""Production's two learners."""


def markdown(df: pd.DataFrame) -> list[str]:
    """A frame as a markdown table (index first), numbers to 5 decimals."""
    cols = [" ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in df.columns]
    lines = ["| " + " | ".join([str(df.index.name or ""), *cols]) + " |", "|" + " --- |" * (len(cols) + 1)]
    for i, row in df.iterrows():
        lines.append("| " + " | ".join([str(i), *(f"{v:.5f}" for v in row)]) + " |")
    return lines


def training_half(c: Campaign, seed: int) -> Campaign:
    train, _ = stratified_halves(c.arm, seed)
    return Campaign(c.X.iloc[train], c.arm[train], {k: v[train] for k, v in c.outcomes.items()}, c.offers,
                    c.margin_rate, c.send_cost)


def main() -> None:
    ap = argparse.ArgumentParser()
    add_campaign_arguments(ap, "HILLSTROM_SELECT.md")
    ap.add_argument("--inner", type=int, default=1)
    a = ap.parse_args()
    c = load_campaign(a.src, a.work)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for s in range(a.seeds):
        inner = tuple(1000 + 10 * s + i for i in range(a.inner))
        r = evaluate_randomised(training_half(c, s), CANDIDATES, seeds=inner, n_boot=2,
                                outcomes=("conversion",))
        t = r.table
        t = t[(t["outcome"] == "conversion") & (t["target"].isin(["mean", "25%", "50%"]))]
        recs = t[["learner", "metric", "target", "estimate"]].to_dict("records")
        rows += [{"seed": s, **rec} for rec in recs]
    df = pd.DataFrame(rows)
    keep = df["metric"].isin(["qini_conversion", "qini_spend", "policy"])
    summary = df[keep].pivot_table(index="learner", columns=["metric", "target"], values="estimate",
                                   aggfunc="mean")
    wins = df[df["metric"] == "qini_conversion"].pivot_table(index="seed", columns="learner",
                                                            values="estimate")
    secs = time.perf_counter() - t0
    prod = [n for n in CANDIDATES if n.startswith("production_")]
    chosen = max(prod, key=lambda n: summary.loc[n, ("qini_conversion", "mean")])
    md = ["# Choosing production's uplift learner on the Hillstrom training halves", "",
          f"{a.seeds} training halves of bench/hillstrom.py (its seeds), each split again {a.inner} times at "
          f"random (stratified by arm) into inner training and held-out halves; mean over all "
          f"{a.seeds * a.inner} inner splits. Qini of the model fitted on conversion, judged on conversion "
          f"(per customer) and on spend ($ per customer); policy value $ per e-mail. "
          f"{secs:.0f} s on a shared, loaded machine.", "",
          *markdown(summary), "",
          "Qini on conversion per training half (mean of its inner splits):", "",
          *markdown(wins), "",
          f"Chosen as production's learner by the inner Qini on conversion: **{chosen}**.", ""]
    Path(a.out).write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
