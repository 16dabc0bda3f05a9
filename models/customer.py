"""Churn and net-value models (LightGBM) with explanations, plus the baselines they must beat.

Plain classes, no I/O. Features come from :func:`features.customer.customer_features`.

Example
-------
>>> churn = ChurnModel(CustomerModelConfig(seed=1)).fit(X_train, y_train)   # doctest: +SKIP
>>> churn.predict(X_now).head()                                             # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Self

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.customer import CATEGORICAL
from features.exceptions import ModelFitError, NotFittedError
from features.schema import ATTRIBUTE_PREFIX
from models.cores import free_threads

EXCLUDE = {"purchase_age_days"}  # duplicates tenure for purchasers
READABLE = {
    "recency_days": "days since last purchase", "n_orders": "number of orders", "gross_spend": "gross spend",
    "net_revenue": "net revenue", "net_margin": "net margin", "returns_value": "value returned",
    "return_rate": "return rate", "discount_share": "share bought on discount",
    "discount_total": "discounts received", "ipt_mean": "usual gap between orders",
    "ipt_std": "irregularity of orders", "overdue": "how overdue the next order is",
    "trend_90": "spend trend (90 days vs own history)", "net_30": "net spend, last 30 days",
    "net_90": "net spend, last 90 days", "net_180": "net spend, last 180 days",
    "orders_30": "orders, last 30 days", "orders_90": "orders, last 90 days",
    "orders_180": "orders, last 180 days", "tenure_days": "tenure",
    "n_categories": "category breadth", "n_products": "distinct products bought", "units": "units bought",
    "purchase_days": "days with a purchase", "top_category": "favourite category",
    "preferred_channel": "preferred channel", "holiday_share": "holiday-only buying",
    "acquisition_channel": "acquisition channel", "region": "region",
    "views_30": "product views, last 30 days", "carts_30": "add-to-carts, last 30 days",
    "abandoned_carts_90": "abandoned carts", "days_since_visit": "days since last visit",
    "offers_received": "offers received", "offers_redeemed": "offers redeemed",
    "redemption_rate": "offer redemption rate", "days_since_offer": "days since last offer",
    "avg_order_value": "average order value", "max_order_value": "largest order",
}


@dataclass(frozen=True)
class CustomerModelConfig:
    """Settings of the churn and value models (per-run options such as the seed are kept here too,
    because they change the result)."""

    horizon_days: int = 90
    """Prediction window: churn = no purchase in the next H days; value = net revenue in the next H days."""
    n_cutoffs: int = 8
    """How many earlier cutoffs are stacked for training (rolling windows)."""
    cutoff_step_days: int = 14
    """Spacing between stacked training cutoffs."""
    n_estimators: int = 250
    learning_rate: float = 0.02
    """250 trees at 0.02 (500 at 0.01 until session 23): the same models at half the fitting time. Holdout
    churn AUC / value Spearman, 500 x 0.01 -> 250 x 0.02: Online Retail 0.7479 -> 0.7486 / 0.5329 -> 0.5323,
    simulator 20k 0.8459 -> 0.8456 / 0.6110 -> 0.6109, simulator 100k 0.8492 -> 0.8493 / 0.6192 -> 0.6188;
    CPU seconds of the evaluation's customer models at 100k 87 -> 52 (``bench/SCALE.md``)."""
    num_leaves: int = 7
    """Small trees: on Online Retail 7 leaves beat 15 and 31 (churn AUC 0.743 vs 0.734 / 0.732)."""
    min_child_samples: int = 100
    tweedie_variance_power: float = 1.3
    seed: int = 42
    num_threads: int = 2
    """LightGBM threads per fit; the result does not depend on it (``deterministic``), the speed does: on a
    shared, loaded machine one thread is much faster (OpenMP threads wait on each other)."""

    def to_params(self) -> dict[str, Any]:
        """The settings that change a result (not ``num_threads``), flat, for MLflow and the run
        fingerprint."""
        return {f"customer.{k}": v for k, v in asdict(self).items() if k != "num_threads"}


def _feature_columns(X: pd.DataFrame) -> list[str]:
    return [c for c in X.columns if c not in EXCLUDE]


def readable(column: str) -> str:
    """A feature's name in words: :data:`READABLE`, a customer attribute by its own name."""
    if column.startswith(ATTRIBUTE_PREFIX):
        return f"{column[len(ATTRIBUTE_PREFIX):]} (customer attribute)"
    return READABLE.get(column, column)


def _is_categorical(s: pd.Series) -> bool:
    """Text or category values (a customer attribute's categories, whatever the frame's dtype)."""
    return isinstance(s.dtype, pd.CategoricalDtype) or not (pd.api.types.is_numeric_dtype(s)
                                                            or pd.api.types.is_bool_dtype(s))


SMALL_PREDICT = 2_000
"""Rows up to which a prediction runs on one thread: OpenMP's start and spin-wait cost more than one row's
trees (the service's one-customer calls; under load they took about a millisecond each with two threads)."""


def _threads(rows: int) -> int:
    """LightGBM's ``num_threads`` for predicting ``rows`` rows (the free cores past :data:`SMALL_PREDICT`)."""
    return 1 if rows <= SMALL_PREDICT else free_threads(0)


class _LGBMBase:
    objective: str = "binary"

    def __init__(self, config: CustomerModelConfig | None = None,
                 categorical: list[str] | None = None) -> None:
        self.config = config or CustomerModelConfig()
        self.categorical = list(categorical or CATEGORICAL)
        self.booster_: lgb.Booster | None = None
        self.columns_: list[str] = []
        self.categories_: dict[str, list[str]] = {}

    def _prepare(self, X: pd.DataFrame) -> pd.DataFrame:
        X = X.reindex(columns=self.columns_)
        out = {}
        for c in self.columns_:
            if c in self.categories_:
                out[c] = pd.Categorical(X[c].astype("string").astype(object), categories=self.categories_[c])
            else:
                out[c] = pd.to_numeric(X[c], errors="coerce").astype(float)
        return pd.DataFrame(out, index=X.index)

    @property
    def feature_names(self) -> list[str]:
        """The columns of :meth:`design_matrix`, in order (empty before fit)."""
        return list(self.columns_)

    def design_matrix(self, X: pd.DataFrame | Mapping[str, np.ndarray]) -> np.ndarray:
        """The float matrix the booster reads: one row per row of ``X``, one column per name of
        :attr:`feature_names`. Categories become the codes LightGBM saw at fit (unknown -> NaN), missing
        columns NaN. Column by column from numpy: much faster than a pandas frame for the one-customer calls
        of the service. ``X`` may also be a mapping of column name to equally long arrays (the service reads
        one customer's row out of column arrays it keeps, without building a frame).

        For callers that change a column of the prepared rows before predicting (the uplift model sets its
        ``treated`` flag to 0 for the counterfactual) and then call :meth:`predict_matrix`.

        Example
        -------
        >>> M = churn.design_matrix(X)                                   # doctest: +SKIP
        >>> M[:, churn.feature_names.index("recency_days")] = 400.0      # doctest: +SKIP
        >>> churn.predict_matrix(M)                                      # doctest: +SKIP
        """
        maps = getattr(self, "_codes", None)
        if maps is None:
            maps = self._codes = {c: {v: float(i) for i, v in enumerate(cats)}
                                  for c, cats in self.categories_.items()}
        if isinstance(X, pd.DataFrame):
            n = len(X)
        else:
            n = len(next(iter(X.values()))) if X else 0
        out = np.full((n, len(self.columns_)), np.nan)
        have = set(X.keys())
        for j, c in enumerate(self.columns_):
            if c not in have:
                continue
            col = X[c]
            if c in maps:
                m = maps[c]
                out[:, j] = [m.get(v, np.nan) if isinstance(v, str) else np.nan
                             for v in col.astype(object).tolist()]
            elif col.dtype.kind in "fiub":
                out[:, j] = (np.asarray(col, dtype=float) if isinstance(col, np.ndarray)
                             else col.to_numpy(dtype=float, na_value=np.nan))
            else:
                out[:, j] = pd.to_numeric(pd.Series(col), errors="coerce").to_numpy(dtype=float,
                                                                                     na_value=np.nan)
        return out

    def _params(self, threads: int | None = None) -> dict[str, Any]:
        c = self.config
        p = {"objective": self.objective, "learning_rate": c.learning_rate, "num_leaves": c.num_leaves,
             "min_child_samples": c.min_child_samples, "seed": c.seed, "deterministic": True,
             "num_threads": free_threads(c.num_threads) if threads is None else threads, "verbose": -1,
             "feature_fraction": 0.8, "bagging_fraction": 0.8,
             "bagging_freq": 1, "lambda_l2": 1.0}
        if self.objective == "tweedie":
            p["tweedie_variance_power"] = c.tweedie_variance_power
        return p

    def fit(self, X: pd.DataFrame, y: pd.Series, init_score: np.ndarray | None = None) -> Self:
        """``init_score``: a per-row offset in raw units (log-odds for a classifier) the trees start from
        instead of the label's average; :meth:`predict_matrix` then leaves it out (add it to
        :meth:`raw_matrix`)."""
        self._train(self.dataset(X, y, init_score))
        return self

    def _target(self, y: Any) -> np.ndarray:
        return np.asarray(y, float)

    def dataset(self, X: pd.DataFrame, y: Any, init_score: np.ndarray | None = None) -> lgb.Dataset:
        """Check the rows, learn the columns and categories of ``X`` and bin them for LightGBM (with this
        model's target of ``y``). The binned rows do not depend on the objective: :func:`fit_churn_and_value`
        bins once for both models."""
        if len(X) == 0:
            raise ModelFitError(f"{type(self).__name__}: no training rows")
        label = self._checked_target(y)
        self.columns_ = _feature_columns(X)
        self.categories_ = {c: sorted(X[c].dropna().astype(str).unique().tolist()) for c in self.columns_
                            if c in self.categorical or _is_categorical(X[c])}
        return lgb.Dataset(self._prepare(X), label=label, categorical_feature=list(self.categories_),
                           free_raw_data=True, params=self._params(),
                           init_score=None if init_score is None else np.asarray(init_score, float))

    def _checked_target(self, y: Any) -> np.ndarray:
        """This model's target of ``y``, refused when any value is NaN or infinite."""
        if not np.isfinite(np.asarray(y, float)).all():
            raise ModelFitError(f"{type(self).__name__}: the target has NaN or infinite values")
        return self._target(y)

    def _train(self, data: lgb.Dataset, threads: int | None = None) -> None:
        """Fit on ``data`` (``threads``: LightGBM's threads, default the config's; the model is the same)."""
        self.booster_ = lgb.train(self._params(threads), data, num_boost_round=self.config.n_estimators)

    def predict_matrix(self, M: np.ndarray) -> np.ndarray:
        """Scores (probabilities for churn, expected value for value) of the rows of a
        :meth:`design_matrix`; ``predict(X)`` is ``predict_matrix(design_matrix(X))`` indexed by customer."""
        if self.booster_ is None:
            raise NotFittedError(type(self).__name__)
        if M.ndim != 2 or M.shape[1] != len(self.columns_):
            raise ValueError(f"{type(self).__name__}: expected a design matrix with {len(self.columns_)} "
                             f"columns (feature_names), got shape {M.shape}")
        return np.asarray(self.booster_.predict(M, num_threads=_threads(len(M))))

    def raw_matrix(self, M: np.ndarray) -> np.ndarray:
        """The trees' raw scores (log-odds for churn) of the rows of a :meth:`design_matrix`, without the
        link function: for a model fitted with an ``init_score``, add the offset before the link."""
        if self.booster_ is None:
            raise NotFittedError(type(self).__name__)
        return np.asarray(self.booster_.predict(M, raw_score=True, num_threads=_threads(len(M))))

    def _raw(self, X: pd.DataFrame) -> np.ndarray:
        if self.booster_ is None:
            raise NotFittedError(type(self).__name__)
        return self.predict_matrix(self.design_matrix(X))

    def predict(self, X: pd.DataFrame) -> pd.Series:
        return pd.Series(self._raw(X), index=X.index, name="score")

    def explain(self, X: pd.DataFrame, top: int = 3) -> dict[str, list[dict[str, Any]]]:
        """Top reasons per customer: the features with the largest contributions (LightGBM pred_contrib).

        Contributions are in the model's raw units (log-odds for churn, log-spend for value); the sign says
        whether the feature pushed the score up or down.
        """
        return self.explain_matrix(self.design_matrix(X), X.index, top)

    def explain_matrix(self, M: np.ndarray, ids: Iterable[Any], top: int = 3
                       ) -> dict[str, list[dict[str, Any]]]:
        """:meth:`explain` of the rows of a :meth:`design_matrix` (one id per row): the service's
        one-customer path, which builds the row from column arrays instead of a frame."""
        if self.booster_ is None:
            raise NotFittedError(type(self).__name__)
        contrib = np.asarray(self.booster_.predict(M, pred_contrib=True,
                                                   num_threads=_threads(len(M))))[:, :-1]
        out: dict[str, list[dict[str, Any]]] = {}
        for i, cid in enumerate(ids):
            order = np.argsort(-np.abs(contrib[i]))[:top]
            out[str(cid)] = [{
                "feature": self.columns_[j], "contribution": round(float(contrib[i, j]), 4),
                "value": self._shown(M[i, j], self.columns_[j]),
                "text": f"{readable(self.columns_[j])} "
                        f"{'raises' if contrib[i, j] > 0 else 'lowers'} the score",
            } for j in order]
        return out

    def _shown(self, v: float, column: str) -> str | float | None:
        """A design-matrix value as an explanation shows it: the category's text for categories (their
        codes), rounded numbers, None if missing or an unknown category."""
        if np.isnan(v):
            return None
        return self.categories_[column][int(v)] if column in self.categories_ else round(float(v), 3)

    def feature_importance(self) -> pd.Series:
        if self.booster_ is None:
            raise NotFittedError(type(self).__name__)
        gain = pd.Series(self.booster_.feature_importance("gain"), index=self.columns_)
        return gain.sort_values(ascending=False)


class ChurnModel(_LGBMBase):
    """P(no purchase in the next H days) for customers with at least one past purchase."""

    objective = "binary"


class ValueModel(_LGBMBase):
    """Expected net revenue in the next H days (Tweedie objective: many zeros, a long tail)."""

    objective = "tweedie"

    def _target(self, y: Any) -> np.ndarray:
        return np.clip(np.asarray(y, float), 0, None)


def fit_churn_and_value(config: CustomerModelConfig, X: pd.DataFrame, churn: Any, value: Any
                        ) -> tuple[ChurnModel, ValueModel]:
    """``ChurnModel(config).fit(X, churn)`` and ``ValueModel(config).fit(X, value)``, with the rows prepared
    and binned once for both (the same models: only the label and the objective differ; on a few hundred
    thousand stacked rows the preparing and binning is seconds). With ``config.num_threads`` of 2 or more
    the two fits run at the same time, each on half the threads (the binned rows copied for the second):
    the same models (``deterministic``), in about half the time, as small trees keep two threads of one fit
    waiting on each other."""
    c, v = ChurnModel(config), ValueModel(config)
    data = c.dataset(X, churn)
    value_label = v._checked_target(value)
    v.columns_, v.categories_ = list(c.columns_), dict(c.categories_)
    if config.num_threads < 2:
        c._train(data)
        data.set_label(value_label)
        v._train(data)
        return c, v
    twin = _binned_copy(data.construct())
    twin.set_label(value_label)
    _train_each([c, v], [data, twin], config.num_threads)
    return c, v


def _binned_copy(data: lgb.Dataset) -> lgb.Dataset:
    """A copy of the constructed ``data``'s binned rows (every row), for a second model fitted at the same
    time (a LightGBM dataset is not shared by two fits)."""
    return data.subset(list(range(data.num_data()))).construct()


def _train_each(models: Sequence[_LGBMBase], datasets: Sequence[lgb.Dataset], threads: int) -> None:
    """Each model fitted on its dataset: one after the other on ``threads``, or, with 2 or more, two at a
    time on half of them each (the same models: ``deterministic``)."""
    if threads < 2:
        for m, d in zip(models, datasets, strict=True):
            m._train(d)
        return
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="lgbm-fit") as pool:
        list(pool.map(lambda md: md[0]._train(md[1], threads // 2), zip(models, datasets, strict=True)))


BIN_SAMPLE_ROWS = 200_000
"""LightGBM's ``bin_construct_sample_cnt``: up to this many rows, every row makes the bins, whatever the
seed (past it, a sample drawn with the seed does)."""


def fit_seeded(models: Sequence[ChurnModel], X: pd.DataFrame, y: Any, init_score: np.ndarray | None = None
               ) -> None:
    """``m.fit(X, y)`` for each of ``models``, which differ in their seed only (the uplift model's bagged
    outcome models). Up to :data:`BIN_SAMPLE_ROWS` rows the bins do not depend on the seed, so the rows
    are prepared and binned once (a copy of the binned rows for each model) and, with ``num_threads`` of 2
    or more, two fits run at a time on half the threads each: the same models (``deterministic``). Past
    it, each model bins its own rows, one after the other, as alone. ``init_score``: every model's per-row
    offset (:meth:`_LGBMBase.fit`)."""
    if not models:
        return
    first = models[0]
    threads = first.config.num_threads
    if len(X) > BIN_SAMPLE_ROWS or len(models) == 1:
        for m in models:
            m.fit(X, y, init_score)
        return
    data = first.dataset(X, y, init_score).construct()
    for m in models[1:]:
        m.columns_, m.categories_ = list(first.columns_), dict(first.categories_)
    copies = [_binned_copy(data) for _ in models[1:]]
    if init_score is not None:
        for d in copies:
            d.set_init_score(np.asarray(init_score, float))
    _train_each(models, [data, *copies], threads)


def recency_baseline(X: pd.DataFrame) -> pd.Series:
    """Churn score from recency alone (more days since the last purchase -> more likely gone)."""
    return X["recency_days"].astype(float)


def last_period_baseline(X: pd.DataFrame, horizon_days: int) -> pd.Series:
    """Value baseline: net spend of the last period of the same length (scaled from the nearest window)."""
    for w in (30, 90, 180):
        if horizon_days <= w:
            return (X[f"net_{w}"].astype(float) * horizon_days / w).clip(lower=0)
    return (X["net_180"].astype(float) * horizon_days / 180).clip(lower=0)


def historical_rate_baseline(X: pd.DataFrame, horizon_days: int) -> pd.Series:
    """Value baseline: the customer's average net spend per day over their whole history, times the horizon
    (history counted from the first purchase, at least one horizon long)."""
    days = np.maximum(X["purchase_age_days"].astype(float).fillna(0.0), horizon_days)
    return (X["net_revenue"].astype(float) / days * horizon_days).clip(lower=0)
