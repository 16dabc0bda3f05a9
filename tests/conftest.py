"""Shared fixtures: a small simulated shop (seeded), real data paths, a trained project."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

pytest_plugins = ["tests.postgres_server"]  # postgres_server, store_url

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SEED = 1234


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not SHARED.is_dir():
        skip = pytest.mark.skip(reason=f"real data not found at {SHARED}")
        for item in items:
            if "realdata" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed() -> None:
    np.random.seed(SEED)


@pytest.fixture(scope="session")
def small_shop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from features.simulate import simulate_shop
    d = tmp_path_factory.mktemp("shop")
    simulate_shop(d, customers=1500, products=300, days=365, seed=SEED)
    return d


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
