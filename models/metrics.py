"""Metrics returned as flat dicts, ready for ``mlflow.log_metrics``."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr


def auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula (ties get average ranks)."""
    y, s = np.asarray(y).astype(bool), np.asarray(s, float)
    n1, n0 = y.sum(), (~y).sum()
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = pd.Series(s).rank().to_numpy()
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def pr_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision."""
    y, s = np.asarray(y).astype(bool), np.asarray(s, float)
    if y.sum() == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    hits = y[order]
    prec = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(prec[hits].sum() / hits.sum())


def brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((np.asarray(p, float) - np.asarray(y, float)) ** 2))


def classification_report(y: np.ndarray, score: np.ndarray, is_probability: bool = True) -> dict[str, float]:
    return {"auc": auc(y, score), "pr_auc": pr_auc(y, score),
            "brier": brier(y, score) if is_probability else float("nan"), "customers": int(len(y))}


def normalized_gini(actual: np.ndarray, pred: np.ndarray) -> float:
    def gini(a: np.ndarray, p: np.ndarray) -> float:
        order = np.lexsort((np.arange(len(a)), -p))
        a_sorted = a[order]
        cum = np.cumsum(a_sorted) / a_sorted.sum()
        return float(cum.sum() / len(a) - (len(a) + 1) / (2 * len(a)))

    a, p = np.asarray(actual, float), np.asarray(pred, float)
    if a.sum() <= 0:
        return float("nan")
    return gini(a, p) / gini(a, a)


def top_decile_capture(actual: np.ndarray, pred: np.ndarray) -> float:
    a, p = np.asarray(actual, float), np.asarray(pred, float)
    k = max(1, int(np.ceil(len(a) * 0.1)))
    top = np.argsort(-p, kind="stable")[:k]
    return float(a[top].sum() / a.sum()) if a.sum() > 0 else float("nan")


def regression_report(actual: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    a, p = np.asarray(actual, float), np.asarray(pred, float)
    return {"spearman": float(spearmanr(a, p).statistic), "normalized_gini": normalized_gini(a, p),
            "top_decile_capture": top_decile_capture(a, p), "mae": float(np.mean(np.abs(a - p))),
            "customers": int(len(a))}


def decile_lift(actual: np.ndarray, pred: np.ndarray) -> pd.DataFrame:
    """Customers cut into ten equal groups by prediction (1 = highest): mean actual, share of total, lift."""
    a, p = np.asarray(actual, float), np.asarray(pred, float)
    order = np.argsort(-p, kind="stable")
    dec = np.empty(len(a), int)
    dec[order] = np.arange(len(a)) * 10 // max(len(a), 1) + 1
    df = pd.DataFrame({"decile": dec, "actual": a, "pred": p}).groupby("decile").agg(
        customers=("actual", "size"), mean_pred=("pred", "mean"), mean_actual=("actual", "mean"),
        total_actual=("actual", "sum"))
    df["share_of_total"] = df["total_actual"] / a.sum() if a.sum() else np.nan
    df["lift"] = df["mean_actual"] / a.mean() if a.mean() else np.nan
    df["cumulative_share"] = df["share_of_total"].cumsum()
    return df.reset_index()


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Calibration table: mean predicted vs observed rate in equal-width probability bins."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    b = np.minimum((p * bins).astype(int), bins - 1)
    return pd.DataFrame({"bin": b, "y": y, "p": p}).groupby("bin").agg(
        customers=("y", "size"), mean_predicted=("p", "mean"), observed=("y", "mean")).reset_index()


# -- ranking -----------------------------------------------------------------------------------------
def ranking_report(recs: pd.DataFrame, truth: dict[str, set[str]], k: int = 10) -> dict[str, float]:
    """Precision, recall, NDCG, MAP and hit rate at k over the users in ``truth``.

    ``recs`` has columns customer_id, product_id, rank (1-based). Users without recommendations
    count as zeros.
    """
    nu = max(len(truth), 1)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    n_rel = pd.Series({u: len(rel) for u, rel in truth.items()}, dtype=np.float64)
    top = recs.loc[(recs["rank"] <= k) & recs["customer_id"].isin(n_rel.index), ["customer_id", "product_id", "rank"]]
    top = top.sort_values(["customer_id", "rank"], kind="stable")
    users = top["customer_id"].to_numpy(object)
    pos = top.groupby("customer_id", sort=False).cumcount().to_numpy()
    keep = pos < k
    users, pos = users[keep], pos[keep]
    hit = np.fromiter((i in truth[u] for u, i in zip(users, top["product_id"].to_numpy(object)[keep], strict=True)),
                      dtype=np.float64, count=len(users))
    if not len(users):
        zero = 0.0
        return {f"precision@{k}": zero, f"recall@{k}": zero, f"ndcg@{k}": zero, f"map@{k}": zero,
                f"hit_rate@{k}": zero, "users": len(truth)}
    codes, uniq = pd.factorize(users)
    nrel = n_rel.reindex(uniq).to_numpy()
    cap = np.minimum(nrel, k)
    nh = np.bincount(codes, weights=hit, minlength=len(uniq))
    dcg = np.bincount(codes, weights=hit * disc[pos], minlength=len(uniq))
    idcg = np.cumsum(disc)[cap.astype(int) - 1]
    cum = pd.Series(hit).groupby(codes).cumsum().to_numpy()
    ap = np.bincount(codes, weights=cum / (pos + 1) * hit, minlength=len(uniq)) / cap
    return {f"precision@{k}": float(nh.sum() / k / nu), f"recall@{k}": float((nh / nrel).sum() / nu),
            f"ndcg@{k}": float((dcg / idcg).sum() / nu), f"map@{k}": float(ap.sum() / nu),
            f"hit_rate@{k}": float((nh > 0).sum() / nu), "users": len(truth)}
