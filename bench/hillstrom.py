"""Uplift on a real randomised campaign: the Hillstrom e-mail test (64,000 customers; Mens e-mail, Womens
e-mail or none, at random).

The file is imported into the data contract (``features.importers.import_hillstrom``), loaded and validated
like any shop, and judged by ``training.uplift_randomised``: random halves stratified by arm, several seeds,
Qini / AUUC per e-mail and the IPW policy value per e-mail at several budgets, with bootstrap intervals.

    python bench/hillstrom.py --seeds 5 --boot 200       # writes bench/HILLSTROM.md and bench/hillstrom.json
"""

from __future__ import annotations

import argparse
import json
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
from training.uplift_learners import Base, peers  # noqa: E402
from training.uplift_randomised import RandomisedResult, evaluate_randomised  # noqa: E402

PRODUCTION = "production"
CHOSEN = TWO_MODELS_DDR
"""Production's uplift learner for this benchmark (``UpliftModel(learner=...)``), chosen on the training
halves only by ``bench/hillstrom_select.py`` (bench/HILLSTROM_SELECT.md)."""
OTHER = S_LEARNER if CHOSEN == TWO_MODELS_DDR else TWO_MODELS_DDR
PEERS = ("sklift_solo", "sklift_two_models", "sklift_two_models_ddr", "sklift_class_transformation",
         "x_learner")


def learners(chosen_peers: tuple[str, ...] = PEERS) -> dict[str, Any]:
    """Production (the shipped ``models.offers.UpliftModel`` with the chosen learner, on every attribute), its
    other learner (the S-learner: production's learner before), the peers and random (seed -> unfitted)."""
    out: dict[str, Any] = {PRODUCTION: production(CHOSEN), f"{PRODUCTION}_{OTHER}": production(OTHER)}
    for name in (*chosen_peers, "random"):
        out[name] = lambda s, name=name: peers(Base(seed=s), s)[name]
    return out


def _peers(r: RandomisedResult) -> list[str]:
    """The peers this run fitted."""
    return [p for p in PEERS if p in set(r.table["learner"])]


def fmt(row: pd.Series, scale: float = 1.0, digits: int = 3) -> str:
    return (f"{row['estimate'] * scale:.{digits}f} [{row['ci_low'] * scale:.{digits}f}, "
            f"{row['ci_high'] * scale:.{digits}f}]")


def ranking_table(r: RandomisedResult, fitted: str, judged: str, names: list[str]) -> list[str]:
    t = r.table.set_index(["outcome", "learner", "metric", "target"])
    scale = 1000.0 if judged == "conversion" else 1.0
    unit = "per 1,000 customers" if judged == "conversion" else "$ per customer"
    lines = [f"| learner (fitted on {fitted}) | Qini mean of e-mails ({unit}) | Qini Mens | Qini Womens | "
             f"AUUC mean ({unit}) | normalised Qini (production's definition) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for n in names:
        k = (fitted, n)
        if (*k, f"qini_{judged}", "mean") not in t.index:
            continue
        cells = [fmt(t.loc[(*k, f"qini_{judged}", target)], scale) for target in ("mean", "hillstrom_mens",
                                                                              "hillstrom_womens")]
        lines.append(f"| {n} | " + " | ".join([*cells, fmt(t.loc[(*k, f"auuc_{judged}", "mean")], scale),
                                               fmt(t.loc[(*k, f"qini_norm_{judged}", "mean")])]) + " |")
    return lines


def policy_table(r: RandomisedResult, names: list[str], budgets: list[str]) -> list[str]:
    t = r.table.set_index(["outcome", "learner", "metric", "target"])
    lines = ["| policy | fitted on | " + " | ".join(budgets) + " | own choice (share e-mailed) |",
             "| --- | --- |" + " --- |" * (len(budgets) + 1)]
    for b in ("everyone", "best_single"):
        row = fmt(t.loc[("baseline", b, "policy", "100%")])
        lines.append(f"| {b} | - | " + " | ".join([row] * len(budgets)) + " | - |")
    for fitted in ("conversion", "spend"):
        for n in names:
            k = (fitted, n, "policy")
            if (*k, budgets[0]) not in t.index:
                continue
            share = t.loc[(fitted, n, "share_emailed", "own choice")]["estimate"]
            own = f"{fmt(t.loc[(*k, 'own choice')])} ({share:.0%})"
            cells = " | ".join(fmt(t.loc[(*k, b)]) for b in budgets)
            lines.append(f"| {n} | {fitted} | {cells} | {own} |")
    return lines


def comparisons(r: RandomisedResult, budgets: list[str]) -> list[str]:
    t = r.table.set_index(["outcome", "learner", "metric", "target"])
    lines = ["| comparison | difference [95% paired interval] |", "| --- | --- |"]
    for fitted, judged in (("conversion", "conversion"), ("conversion", "spend"), ("spend", "spend")):
        metric = f"qini_{judged}"
        peer = max(_peers(r), key=lambda p: t.loc[(fitted, p, metric, "mean"), "estimate"])
        for name in [n for n in r.table["learner"].unique() if n.startswith(PRODUCTION)]:
            if (fitted, name, metric, "mean") not in t.index:
                continue
            d, lo, hi = r.paired((fitted, name, metric, "mean"), (fitted, peer, metric, "mean"))
            scale = 1000.0 if judged == "conversion" else 1.0
            lines.append(f"| Qini on {judged} (fitted on {fitted}): {name} - best peer {peer} | "
                         f"{d * scale:.3f} [{lo * scale:.3f}, {hi * scale:.3f}] |")
    for judged in ("conversion", "spend"):
        key = ("conversion", PRODUCTION, f"qini_{judged}", "mean")
        d, lo, hi = r.paired(key, ("conversion", f"{PRODUCTION}_{OTHER}", f"qini_{judged}", "mean"))
        scale = 1000.0 if judged == "conversion" else 1.0
        lines.append(f"| Qini on {judged} (fitted on conversion): {PRODUCTION} - {PRODUCTION}_{OTHER} | "
                     f"{d * scale:.3f} [{lo * scale:.3f}, {hi * scale:.3f}] |")
    for fitted in ("conversion",):  # production models P(order): it is not fitted on spend
        for b in budgets:
            d, lo, hi = r.paired((fitted, PRODUCTION, "policy", b), ("baseline",
                                                                     "everyone", "policy", "100%"))
            lines.append(f"| policy {b} ({PRODUCTION} fitted on {fitted}) - everyone | {d:.3f} [{lo:.3f}, "
                         f"{hi:.3f}] |")
    return lines


def targets(r: RandomisedResult, budgets: list[str]) -> list[str]:
    """The issue's targets, read off the table: production's Qini at least the best peer's; its policy above
    e-mailing everyone at every budget (production's policy: the model fitted on conversion, x basket)."""
    t = r.table.set_index(["outcome", "learner", "metric", "target"])["estimate"]
    lines = []
    for fitted, judged in (("conversion", "conversion"), ("conversion", "spend")):
        mine = t[(fitted, PRODUCTION, f"qini_{judged}", "mean")]
        peer = max(_peers(r), key=lambda p: t[(fitted, p, f"qini_{judged}", "mean")])
        best = t[(fitted, peer, f"qini_{judged}", "mean")]
        lines.append(f"- Qini on {judged} (fitted on {fitted}): production {mine:.5f}, best peer {peer} "
                     f"{best:.5f}: {'met' if mine >= best else 'NOT met'} on the point estimate.")
    everyone = t[("baseline", "everyone", "policy", "100%")]
    for fitted in ("conversion",):
        ok = [b for b in budgets if t[(fitted, PRODUCTION, "policy", b)] > everyone]
        lines.append(f"- Policy above e-mailing everyone (fitted on {fitted}): at {len(ok)} of "
                     f"{len(budgets)} budgets ({', '.join(ok) or 'none'}) on the point estimate; see the "
                     "paired intervals below.")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    add_campaign_arguments(ap, "HILLSTROM.md")
    ap.add_argument("--boot", type=int, default=200)
    ap.add_argument("--peers", default=",".join(PEERS),
                    help="the peers to fit (comma-separated; default all)")
    a = ap.parse_args()
    c = load_campaign(a.src, a.work)
    t0 = time.perf_counter()
    budgets = (0.1, 0.25, 0.5, 0.75)
    chosen_peers = tuple(p for p in a.peers.split(",") if p)
    r = evaluate_randomised(c, learners(chosen_peers), seeds=tuple(range(a.seeds)), budgets=budgets,
                            n_boot=a.boot)
    secs = time.perf_counter() - t0
    names = list(learners(chosen_peers))
    blabels = [f"{b:.0%}" for b in budgets]
    md = [
        "# Uplift on the Hillstrom e-mail test", "",
        f"{len(c.arm):,} customers "
        f"({', '.join(f'{o}: {(c.arm == o).sum():,}' for o in sorted(set(c.arm)))}), features: the 8 "
        f"customer attributes of the file. {a.seeds} random halves stratified by arm; models fitted on one "
        "half, judged on the other; estimates are means over the seeds, intervals 95% Poisson bootstrap of "
        f"the held-out customers ({a.boot} resamples, the same for every learner) of that mean. Margin rate "
        f"{c.margin_rate}, send cost ${c.send_cost[c.offers[0]]} per e-mail (offers.yaml). {secs:.0f} s on a "
        "shared, loaded 2-core machine.", "",
        "## Ranking: conversion", "", *ranking_table(r, "conversion", "conversion", names), "",
        "## Ranking: spend", "", *ranking_table(r, "spend", "spend", names), "",
        *ranking_table(r, "conversion", "spend", names), "",
        "## Policy value: incremental margin per e-mail ($, IPW on the held-out half)", "",
        "Each customer gets the e-mail with the higher predicted margin; a budget is the share of customers "
        "e-mailed (those with the highest predicted margin). A model fitted on conversion values a sale at "
        "the mean spend per buyer (production: uplift x basket).", "",
        *policy_table(r, names, blabels), "",
        "## Targets", "", *targets(r, blabels), "",
        "## Paired comparisons", "", *comparisons(r, blabels), "",
    ]
    Path(a.out).write_text("\n".join(md))
    Path(a.out).with_suffix(".json").write_text(json.dumps(r.table.to_dict("records"), indent=1))
    print("\n".join(md))


if __name__ == "__main__":
    main()
