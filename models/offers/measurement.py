"""Off-policy evaluation of a new offer/item policy from logs with known propensities (IPS and DR)."""

from __future__ import annotations

import numpy as np


def ips(reward: np.ndarray, match: np.ndarray, propensity: np.ndarray) -> np.ndarray:
    """Per-row inverse-propensity terms for a deterministic target policy (``match``: it picks the logged action)."""
    return np.asarray(match, float) * np.asarray(reward, float) / np.asarray(propensity, float)


def doubly_robust(reward: np.ndarray, weight: np.ndarray, propensity: np.ndarray | float, q_logged: np.ndarray,
                  q_target: np.ndarray) -> np.ndarray:
    """Per-row DR terms: the reward model's value of the target policy plus the importance-weighted residual
    of the logged action. ``weight`` is pi(a|x) (or a 0/1 match for a deterministic policy)."""
    w = np.asarray(weight, float) / np.asarray(propensity, float)
    return np.asarray(q_target, float) + w * (np.asarray(reward, float) - np.asarray(q_logged, float))


def mean_ci(terms: np.ndarray, n_boot: int = 500, seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """Mean with a bootstrap percentile interval."""
    t = np.asarray(terms, float)
    rng = np.random.default_rng(seed)
    boots = np.array([t[rng.integers(0, len(t), len(t))].mean() for _ in range(n_boot)])
    a = (1 - level) / 2
    return {"estimate": float(t.mean()), "ci_low": float(np.quantile(boots, a)), "ci_high": float(np.quantile(boots, 1 - a))}
