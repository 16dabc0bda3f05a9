"""One Spark session in local mode for every Spark test (local[2], two shuffle partitions, no UI).

Spark tests carry the ``spark`` marker. Where Java is missing they are skipped with a message saying how to
install it; nothing else is skipped (``make test`` installs pyspark with the ``[spark]`` extra).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

SPARK_CONF = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
              "spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2",
              "spark.driver.memory": "1g"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from features.engine import JAVA_HELP, java_available
    if java_available():
        return
    skip = pytest.mark.skip(reason=f"Java not found. {JAVA_HELP}")
    for item in items:
        if "spark" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    from features.spark_io import spark_session
    session = spark_session("local[2]", app_name="personalise-tests", conf=SPARK_CONF)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def spark_shop(spark: Any, small_shop_dir: Any) -> Any:
    """The small simulated shop read by the Spark engine once (4 buckets)."""
    from features.spark_engine import SparkEngine
    return SparkEngine(spark, str(small_shop_dir), buckets=4)
