"""The training configuration: everything that changes a training result.

Example
-------
>>> cfg = with_horizon(TrainConfig(), 60, seed=7)
>>> cfg.customer.horizon_days, cfg.recommender.seed
(60, 7)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pandas as pd

from features.interactions import InteractionConfig
from models.customer import CustomerModelConfig
from models.offers.uplift import LEARNERS, S_LEARNER
from models.recsys import RecommenderConfig
from training.gate import DEFAULT_GATE, Threshold


@dataclass(frozen=True)
class TrainConfig:
    """Everything that changes a training result. :func:`fingerprint` covers it, with the data hash."""

    horizon_days: int = 90
    cutoff: str | None = None
    """Evaluation cutoff (default: the shop's own data end minus the horizon; live rows never move it)."""
    seed: int = 42
    customer: CustomerModelConfig = field(default_factory=CustomerModelConfig)
    recommender: RecommenderConfig = field(default_factory=RecommenderConfig)
    interactions: InteractionConfig = field(default_factory=InteractionConfig)
    rec_baselines: tuple[str, ...] = ("popularity", "buy_again", "als", "item_knn", "ease", "tifu_knn")
    """Recommenders evaluated beside the production one in every run. BPR (the weakest, and no part of the
    blend: 5 of the 60 seconds on Online Retail) is left to the benchmark; add "bpr" to have it here too."""
    gate: tuple[Threshold, ...] = DEFAULT_GATE
    """The promotion gate: each metric's direction and largest tolerated worsening against the champion."""
    max_training_rows: int | None = 150_000
    """Stacked churn/value rows past which a seeded sample of customers is kept (all their rows at every
    cutoff); the share kept is logged to MLflow (``training.sample_share``, and each frame's rows in
    ``data/training_frames.json``). None: never sample. A 20,000-customer shop has about 100,000 rows (not
    sampled); at 100,000 customers (about 585,000 rows) the cost is in ``bench/SCALE.md`` (250,000 until
    session 21: 150,000 costs churn AUC -0.0007 and value Spearman -0.002 there, and 34 s of CPU less)."""
    uplift_max_rows: int | None = 120_000
    """Uplift training rows (offer_log sends before the cutoff) past which a seeded sample of customers is
    kept (all their sends), when smaller than ``max_training_rows``; logged with the other frames
    (``data/training_frames.json``: rows and customers' share of each). None: only ``max_training_rows``."""
    ceiling_max_rows: int | None = 300_000
    """The policy benchmark's feature ceiling (simulator truth only: LightGBM on the true incremental margin,
    out of fold) is fitted on the candidates of a seeded sample of customers past this many candidate rows
    (every row is still predicted); the rows fitted on are logged (``offers.feature_ceiling.fitted_rows``).
    About 2 candidates per buyer: no sample at 20,000 or 100,000 customers. None: never sampled."""
    uplift_learner: str = S_LEARNER
    """How the uplift model learns offer effects (``models.offers.uplift.LEARNERS``): the S-learner (on the
    simulator its uplift ranking agreed best with the true uplift) or ``two_models_ddr`` (chosen on the
    training halves of the Hillstrom e-mail test: bench/HILLSTROM_SELECT.md); ``dr_learner`` / ``r_learner``
    (pseudo-outcomes regressed on the features) are options, behind both on the simulator and on Hillstrom
    (bench/UPLIFT.md)."""
    concurrent_max_customers: int | None = 200_000
    """Up to this many customers, independent parts of the job run at the same time on two threads
    (:mod:`training.concurrency`): in the evaluation the recommenders beside churn and value then the offers
    (which need churn's scores), in the refit the recommenders and their candidate lists beside everything
    else. The results are the same either way (not a training parameter: not logged, not in the
    fingerprint); the wall time falls and the peak memory rises (both parts' working sets at once; at
    100,000 customers 186.6 s and 1,981 MB against 243 s and 1,735 MB one after the other:
    ``bench/SCALE.md``).
    Past it, or None, one after the other: the 1,000,000-customer shop keeps its measured peak (not measured
    with its parts at once)."""
    corrupt: bool = False
    """Test hook: shuffle evaluation features and item ids to produce a deliberately worse model."""

    def __post_init__(self) -> None:
        if self.uplift_learner not in LEARNERS:
            raise ValueError(f"uplift_learner {self.uplift_learner!r} is not one of {list(LEARNERS)}")

    def concurrent(self, customers: int) -> bool:
        """Whether a shop of ``customers`` customers runs its independent parts at the same time."""
        return self.concurrent_max_customers is not None and customers <= self.concurrent_max_customers

    def to_params(self) -> dict[str, Any]:
        p: dict[str, Any] = {"horizon_days": self.horizon_days, "cutoff": self.cutoff, "seed": self.seed,
                             "corrupt": self.corrupt, "max_training_rows": self.max_training_rows,
                             "uplift_max_rows": self.uplift_max_rows,
                             "ceiling_max_rows": self.ceiling_max_rows,
                             "rec_baselines": ",".join(self.rec_baselines),
                             "uplift_learner": self.uplift_learner}
        p.update(self.customer.to_params())
        p.update(self.recommender.to_params())
        p.update(self.interactions.to_params())
        return p


def with_horizon(cfg: TrainConfig, horizon: int, seed: int | None = None) -> TrainConfig:
    """``cfg`` with another horizon (the customer models' too) and, given, another seed everywhere."""
    s = cfg.seed if seed is None else seed
    return replace(cfg, horizon_days=horizon, seed=s,
                   customer=CustomerModelConfig(**{**asdict(cfg.customer), "horizon_days": horizon,
                                                   "seed": s}),
                   recommender=RecommenderConfig(**{**asdict(cfg.recommender), "seed": s}))


def default_cutoff(data_end: pd.Timestamp, horizon_days: int) -> pd.Timestamp:
    """The evaluation cutoff when none is given: the day ``horizon_days`` before the data end."""
    return (pd.Timestamp(data_end) - pd.Timedelta(days=horizon_days)).floor("D")


def fingerprint(data_fingerprint: str, config: TrainConfig) -> str:
    """Identifies a training result: the same data and config give the same run (reused unless forced)."""
    h = hashlib.sha256(data_fingerprint.encode())
    h.update(json.dumps(config.to_params(), sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]
