"""The evaluation's plots (PNG files, logged to MLflow): value lift and gains, churn calibration,
recommenders at k."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from training.evaluate import EvaluationResult


def _value_lift(d: Any, plt: Any) -> Any:
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].bar(d["decile"], d["lift"])
    ax[0].set(title="Value model: lift by predicted decile", xlabel="decile (1 = highest)", ylabel="lift")
    ax[1].plot(np.r_[0, d["decile"] * 10], np.r_[0, d["cumulative_share"]], marker="o", label="model")
    ax[1].plot([0, 100], [0, 1], "--", label="random")
    ax[1].set(title="Gains", xlabel="% customers", ylabel="share of holdout net revenue")
    ax[1].legend()
    return fig


def _churn_calibration(d: Any, plt: Any) -> Any:
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(d["mean_predicted"], d["observed"], marker="o", label="churn model")
    ax.plot([0, 1], [0, 1], "--", label="perfect")
    ax.set(title="Churn calibration", xlabel="predicted", ylabel="observed")
    ax.legend()
    return fig


def _recommenders(rec: dict[str, Any], plt: Any) -> Any:
    names = list(rec)
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(names))
    for i, m in enumerate(("precision@10", "recall@10", "ndcg@10")):
        ax.bar(x + i * 0.27, [rec[n][m] or 0 for n in names], 0.27, label=m)
    ax.set_xticks(x + 0.27, names)
    ax.set(title="Recommenders on the holdout (all items)")
    ax.legend()
    return fig


def plot_evaluation(ev: EvaluationResult, out: Path) -> list[Path]:
    """Write the plots the evaluation has data for into ``out``; returns their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    todo: list[tuple[str, Callable[[Any, Any], Any], Any]] = []
    if "value_decile_lift" in ev.tables:
        todo.append(("value_lift_gains.png", _value_lift, ev.tables["value_decile_lift"]))
    if "churn_reliability" in ev.tables:
        todo.append(("churn_calibration.png", _churn_calibration, ev.tables["churn_reliability"]))
    rec = ev.report.get("recommend", {}).get("all_items", {})
    if rec:
        todo.append(("recommenders_at_k.png", _recommenders, rec))
    paths = []
    for name, plot, data in todo:
        fig = plot(data, plt)
        fig.tight_layout()
        fig.savefig(out / name, dpi=80)
        plt.close(fig)
        paths.append(out / name)
    return paths
