"""Where the train job's training frames come from: built locally (the default), or by another engine.

The churn/value stacked rows and the uplift rows grow with customers x cutoffs (and sends): they are the
frames ``personalise train --engine spark`` builds on Spark (:class:`training.spark_frames.SparkFrames`),
while the models are fitted on the driver as always. The job selects the source for its duration with
:func:`using`; the fitting code asks :func:`stacked` and :func:`uplift` and does not know which engine
answered.

>>> with using(SparkFrames(engine, max_rows=5_000_000)):       # doctest: +SKIP
...     train(data_dir, config)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

import numpy as np
import pandas as pd

from features.customer_labels import customer_sample, stacked_training_set
from features.io import Shop
from features.schema import CUSTOMER_ID


class FrameSource(Protocol):
    """Builds the training frames the local functions would build from ``shop``, equal to them (rows, order,
    values), or, past ``max_rows`` stacked rows, the rows of a seeded sample of customers; each frame built is
    recorded in ``built`` (kind, rows, customers' share kept) for the run's log."""

    name: str
    max_rows: int | None
    built: list[dict[str, Any]]

    def stacked(self, shop: Shop, cutoffs: list[pd.Timestamp], horizon_days: int
                ) -> tuple[pd.DataFrame, pd.DataFrame]: ...

    def uplift(self, shop: Shop, before: pd.Timestamp | None, start: pd.Timestamp | None
               ) -> tuple[pd.DataFrame, pd.DataFrame]: ...


class LocalFrames:
    """The frames from the in-memory shop (pandas, vectorised over all customers). Past ``max_rows``, the
    stacked rows and the uplift training rows (not the held-out sends) are a seeded sample of customers;
    the uplift training rows past ``uplift_max_rows`` too, when that is smaller (:func:`uplift_limit`)."""

    name = "local"

    def __init__(self, max_rows: int | None = None, seed: int = 0, uplift_max_rows: int | None = None
                 ) -> None:
        self.max_rows, self.seed, self.uplift_max_rows = max_rows, seed, uplift_max_rows
        self.built: list[dict[str, Any]] = []

    def stacked(self, shop: Shop, cutoffs: list[pd.Timestamp], horizon_days: int
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
        X, y = stacked_training_set(shop, cutoffs, horizon_days, max_rows=self.max_rows, seed=self.seed)
        self.built.append(record("stacked", X, X.attrs.get("sample_share", 1.0), cutoffs))
        return X, y

    def uplift(self, shop: Shop, before: pd.Timestamp | None, start: pd.Timestamp | None
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
        from training.offer_eval import uplift_training_set
        # sampled as sample_uplift does, before the features of the sends left out are built
        limit = uplift_limit(self.max_rows, self.uplift_max_rows)
        X, y = uplift_training_set(shop, before, start, max_rows=limit, seed=self.seed)
        self.built.append(record("uplift", X, X.attrs.get("sample_share", 1.0)))
        return X, y


def uplift_limit(max_rows: int | None, uplift_max_rows: int | None) -> int | None:
    """The uplift training rows past which a sample of customers is kept: the smaller limit given (None:
    never sampled)."""
    given = [n for n in (max_rows, uplift_max_rows) if n is not None]
    return min(given) if given else None


def sample_uplift(X: pd.DataFrame, y: pd.DataFrame, start: pd.Timestamp | None, max_rows: int | None,
                  seed: int) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """The uplift training rows (``start`` None) past ``max_rows``: every row of a seeded sample of
    customers, and the customers' share kept. Held-out sends (``start`` given) are never sampled."""
    keep, share = uplift_sample(y[CUSTOMER_ID].to_numpy(), start, max_rows, seed)
    if keep is None:
        return X, y, 1.0
    return X[keep], y[keep].reset_index(drop=True), share


def uplift_sample(customers: np.ndarray, start: pd.Timestamp | None, max_rows: int | None, seed: int
                  ) -> tuple[np.ndarray | None, float]:
    """Which of the uplift rows of ``customers`` (one per row) :func:`sample_uplift` keeps, and the
    customers' share kept; (None, 1.0): every row."""
    if start is not None or max_rows is None or len(customers) <= max_rows:
        return None, 1.0
    share = max_rows / len(customers)
    return customer_sample(pd.Index(customers), share, seed), share


def record(kind: str, X: pd.DataFrame, share: float, cutoffs: list[pd.Timestamp] | None = None
           ) -> dict[str, Any]:
    """One line of a source's ``built`` log."""
    out: dict[str, Any] = {"frame": kind, "rows": len(X), "customers_share": float(share)}
    if cutoffs is not None:
        out["cutoffs"] = [str(pd.Timestamp(c).date()) for c in cutoffs]
    return out


def smallest_share(source: FrameSource) -> float:
    """The smallest customers' share kept in any frame ``source`` built (1.0: nothing was sampled)."""
    return min((b["customers_share"] for b in source.built), default=1.0)


_SOURCE: ContextVar[FrameSource | None] = ContextVar("training_frames", default=None)


@contextmanager
def using(source: FrameSource) -> Iterator[FrameSource]:
    """Build the training frames with ``source`` inside the block."""
    token = _SOURCE.set(source)
    try:
        yield source
    finally:
        _SOURCE.reset(token)


def current() -> FrameSource:
    """The source selected by :func:`using`, else the local one (unsampled)."""
    return _SOURCE.get() or LocalFrames()


def stacked(shop: Shop, cutoffs: list[pd.Timestamp], horizon_days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The churn/value training rows at ``cutoffs`` (:func:`features.customer.stacked_training_set`)."""
    return current().stacked(shop, cutoffs, horizon_days)


def uplift(shop: Shop, before: pd.Timestamp | None = None, start: pd.Timestamp | None = None
           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The uplift rows (:func:`training.offer_eval.uplift_training_set`)."""
    return current().uplift(shop, before, start)
