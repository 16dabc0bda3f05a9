"""Shared fixtures: a small simulated shop (seeded), real data paths, a trained project."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

pytest_plugins = ["tests.postgres_server"]  # postgres_server, store_url

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SEED = 1234


def pytest_configure(config: pytest.Config) -> None:
    """In the run's first process, before xdist's workers start: the live fold-in's compiled kernels
    (:mod:`serving.fold_in_kernels`) built once into numba's cache, so that the workers and the servers the
    tests start read them instead of each compiling them at once (6-9 s apiece on a fresh clone)."""
    if hasattr(config, "workerinput"):  # a worker: the controller has done it
        return
    from models.recsys import BlendRecommender, RecommendationEngine, TrendingRecommender
    from serving import fold_in
    from tests.models.recsys_data import checker_board
    from tests.serving.test_candidate_cache import BOARD_CFG

    data = checker_board()
    fold_in.warm(RecommendationEngine(BlendRecommender(BOARD_CFG).fit(data),
                                      TrendingRecommender(BOARD_CFG).fit(data)))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not SHARED.is_dir():
        skip = pytest.mark.skip(reason=f"real data not found at {SHARED}")
        for item in items:
            if "realdata" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed() -> None:
    np.random.seed(SEED)


@pytest.fixture(autouse=True)
def _own_tracking_uri() -> Iterator[None]:
    """``mlflow.set_tracking_uri`` (every train) also writes ``MLFLOW_TRACKING_URI`` into the environment,
    where serving reads a user's choice: restored after each test, so that a project trained by one test
    (say a shape of the matrix) is not the store another test's runtime loads its champion from (the
    trained project's offers came back as the shape's "unknown customer" when a worker ran the shape matrix
    first)."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture(scope="session")
def small_shop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from features.simulate import simulate_shop
    d = tmp_path_factory.mktemp("shop")
    simulate_shop(d, customers=1500, products=300, days=365, seed=SEED)
    return d


@pytest.fixture(scope="session")
def tiny_shop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smaller simulated shop (400 customers, 120 products, a year): for tests whose assertions do not
    depend on the shop's size (a CLI passing its options through, two engines giving the same rows)."""
    from features.simulate import simulate_shop
    d = tmp_path_factory.mktemp("tiny-shop")
    simulate_shop(d, customers=400, products=120, days=365, seed=SEED)
    return d


def simulated_history(tmp_path_factory: pytest.TempPathFactory, name: str, customers: int, products: int,
                      days: int):
    """A simulated shop of ``days`` days without events, loaded (for the customer models' history tests)."""
    from features.io import load_shop
    from features.simulate import simulate_shop
    d = tmp_path_factory.mktemp(name)
    simulate_shop(d, customers=customers, products=products, days=days, seed=SEED, events=False)
    return load_shop(d)


def days_after_start(shop, days: int) -> pd.Timestamp:
    """The day ``days`` after the shop's first order (its midnight)."""
    from features import schema
    return shop.orders[schema.TS].min().normalize() + pd.Timedelta(days=days)


@pytest.fixture(scope="session")
def small_shop(small_shop_dir: Path):
    from features.io import load_shop
    return load_shop(small_shop_dir)


@pytest.fixture(scope="session")
def truth(small_shop_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(small_shop_dir / "truth" / "customers.parquet").set_index("customer_id")


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory: pytest.TempPathFactory, small_shop_dir: Path):
    """A project directory with the small shop trained once into a real SQLite MLflow store."""
    import shutil

    from training.config import TrainConfig
    from training.jobs import train
    d = tmp_path_factory.mktemp("project")
    shutil.copytree(small_shop_dir, d / "shop")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    result = train(d, TrainConfig(seed=SEED))
    return d, result


@pytest.fixture(scope="session")
def attributed_shop_dir(tmp_path_factory: pytest.TempPathFactory, small_shop_dir: Path) -> Path:
    """The small shop with four customer attributes of every kind (kinds inferred: no declaration file),
    some values missing, a date after the cutoffs the tests use."""
    import shutil

    import numpy as np
    import pandas as pd
    d = tmp_path_factory.mktemp("attributed-shop")
    for f in small_shop_dir.glob("*.parquet"):
        shutil.copy(f, d / f.name)
    c = pd.read_parquet(d / "customers.parquet")
    rng = np.random.default_rng(SEED)
    n = len(c)
    c["tier"] = np.where(rng.random(n) < 0.1, None, rng.choice(["gold", "silver", "bronze", "rare"], n,
                                                                 p=[0.2, 0.3, 0.49, 0.01]))
    c["age"] = np.where(rng.random(n) < 0.05, np.nan, rng.integers(18, 80, n).astype(float))
    c["newsletter"] = rng.choice(["yes", "no"], n)
    c["loyalty_joined"] = pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.integers(0, 360, n), unit="D")
    c.to_parquet(d / "customers.parquet", index=False)
    return d
